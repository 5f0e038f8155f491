/* `loupe bench <name>`: benchmarks print a readable table, or with --csv one header line and one
 * comma-separated row per measurement. Each lives in its own bench_<name>.c. */
#include "app/app.h"

#include <stdio.h>
#include <string.h>

typedef struct {
    const char *name;
    int (*run)(int argc, char **argv);
    const char *summary;
} bench_entry;

static const bench_entry benches[] = {
    {"tokenize", bench_tokenize, "tokenizer throughput (MB/s), one core and all cores"},
    {"decode", bench_decode, "prefill and decode tokens/s at given context lengths"},
    {"ingest", bench_ingest, "ingest + layout + tokenize a source tree"},
    {"niah", bench_niah, "needle-in-a-haystack accuracy per length and depth"},
    {"anns", bench_anns, "vector index recall / keys scanned / searches per second"},
    {"retrieval", bench_retrieval, "decode ms/token per context and attention mode, breakdown"},
};

int cmd_bench(int argc, char **argv)
{
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
        FILE *f = argc < 2 ? stderr : stdout;
        fprintf(f, "usage: loupe bench <name> [OPTIONS] [--csv]\n\nbenchmarks:\n");
        for (size_t i = 0; i < sizeof benches / sizeof benches[0]; i++)
            fprintf(f, "  %-9s %s\n", benches[i].name, benches[i].summary);
        return argc < 2 ? APP_EXIT_USAGE : APP_EXIT_OK;
    }
    for (size_t i = 0; i < sizeof benches / sizeof benches[0]; i++)
        if (!strcmp(argv[1], benches[i].name))
            return benches[i].run(argc - 1, argv + 1);
    return app_usage("bench", "unknown benchmark '%s'", argv[1]);
}
