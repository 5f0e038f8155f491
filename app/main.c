/* main(): finds the subcommand and runs it. The only place in loupe that exits. */
#include "app/app.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

typedef struct {
    const char *name;
    int (*run)(int argc, char **argv);
    const char *summary;
} app_command;

static const app_command commands[] = {
    {"ask", cmd_ask, "answer a question about the sources: loupe ask [OPTIONS] SOURCE... -q Q"},
    {"layout", cmd_layout, "print the text exactly as it would enter the context"},
    {"tokenize", cmd_tokenize, "stdin text -> token ids (special-token text stays plain)"},
    {"detokenize", cmd_detokenize, "stdin token ids -> text"},
    {"logits", cmd_logits, "logits after the last token: --tokens \"ID ID ...\" [--all]"},
    {"model-info", cmd_model_info, "print a GGUF model's hyperparameters and tensors"},
    {"mkmodel", cmd_mkmodel, "write a GGUF model with random weights of a given shape"},
    {"dump-qk", cmd_dump_qk, "write one layer's post-RoPE query and key vectors as .fbin files"},
    {"bench", cmd_bench, "benchmarks: tokenize, decode, ingest, niah, anns, retrieval"},
};

static void print_help(FILE *f)
{
    fprintf(f, "loupe — talk to a whole codebase, PDF or set of web pages with one GPU\n\n"
               "usage: loupe <command> [OPTIONS] ...\n\ncommands:\n");
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        fprintf(f, "  %-11s %s\n", commands[i].name, commands[i].summary);
    fprintf(f, "\ncommon options: --model FILE (default $LOUPE_MODEL, else the bundled model),\n"
               "  --backend auto|cpu|cuda, --gpu-mem SIZE, --ctx N, --threads N, --seed N,\n"
               "  --attention auto|full|retrieval|flat|ivf, --topk N, --sinks N, --window N,\n"
               "  --ef N, --expand N, --margin X, --seed-lags N, --interleave N,\n"
               "  --index-per kv|q, --search-group N, --degree M, --build-k N, --prune l2|ip,\n"
               "  --prune-nearest N, --prune-on cpu|gpu, --host-kv f32|bf16|int8,\n"
               "  --search-keys host|int8c,\n"
               "  --temp T, --top-k N, --top-p P, --min-p P, --max-tokens N\n"
               "exit codes: 0 ok, 1 failure, 2 usage error\n");
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        print_help(stderr);
        return APP_EXIT_USAGE;
    }
    const char *name = argv[1];
    if (!strcmp(name, "-h") || !strcmp(name, "--help") || !strcmp(name, "help")) {
        print_help(stdout);
        return APP_EXIT_OK;
    }
    if (!strcmp(name, "--version")) {
        printf("loupe 0.1.0\n");
        return APP_EXIT_OK;
    }
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        if (!strcmp(name, commands[i].name))
            return commands[i].run(argc - 1, argv + 1);
    fprintf(stderr, "loupe: unknown command '%s' (run `loupe --help` for the list)\n", name);
    return APP_EXIT_USAGE;
}
