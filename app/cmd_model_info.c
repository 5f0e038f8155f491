/*
 * `loupe model-info FILE`: what a GGUF model file holds — architecture, name, hyperparameters,
 * GGUF version and alignment, metadata count, tensors by type with their bytes, parameter count.
 * The file is fully validated (reader + hyperparameters + tensor shapes) before anything is
 * printed, so a bad file prints only `loupe: model-info: <file>: <problem>` and exits 1.
 */
#include "app/app.h"
#include "runtime/runtime.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

static void usage(FILE *f)
{
    fprintf(f, "usage: loupe model-info FILE\n"
               "Prints a GGUF model's architecture, hyperparameters and tensors by type.\n");
}

/* "1.23 GiB" style. */
static void fmt_bytes(uint64_t n, char *out, size_t cap)
{
    static const char *const unit[] = {"B", "KiB", "MiB", "GiB", "TiB"};
    double v = (double)n;
    int u = 0;
    while (v >= 1024 && u < 4) {
        v /= 1024;
        u++;
    }
    if (u == 0)
        snprintf(out, cap, "%" PRIu64 " B", n);
    else
        snprintf(out, cap, "%.2f %s", v, unit[u]);
}

static void fmt_count(uint64_t n, char *out, size_t cap)
{
    if (n >= 1000000000ull)
        snprintf(out, cap, "%.2f B", (double)n / 1e9);
    else if (n >= 1000000ull)
        snprintf(out, cap, "%.2f M", (double)n / 1e6);
    else if (n >= 1000ull)
        snprintf(out, cap, "%.2f K", (double)n / 1e3);
    else
        snprintf(out, cap, "%" PRIu64, n);
}

static const char *scaling_name(rt_rope_scaling s)
{
    return s == RT_ROPE_SCALING_LINEAR ? "linear" : s == RT_ROPE_SCALING_YARN ? "yarn" : "none";
}

static void print_info(const rt_gguf *g, const rt_hparams *hp)
{
    char b1[32], b2[32];
    printf("file:            %s\n", rt_gguf_path(g));
    fmt_bytes(rt_gguf_file_size(g), b1, sizeof b1);
    printf("file size:       %s (%" PRIu64 " bytes)\n", b1, rt_gguf_file_size(g));
    printf("GGUF version:    %" PRIu32 "\n", rt_gguf_version(g));
    printf("alignment:       %" PRIu32 "\n", rt_gguf_alignment(g));
    printf("metadata keys:   %" PRId64 "\n", rt_gguf_n_kv(g));
    printf("architecture:    %s\n", hp->arch_name);
    printf("name:            %s\n", hp->name[0] ? hp->name : "(none)");
    printf("layers:          %" PRIu32 "\n", hp->n_layer);
    printf("embedding:       %" PRIu32 "\n", hp->n_embd);
    printf("heads:           %" PRIu32 " query, %" PRIu32 " key/value, head dim %" PRIu32 "\n",
           hp->n_head, hp->n_head_kv, hp->head_dim);
    printf("feed-forward:    %" PRIu32 "\n", hp->n_ff);
    printf("vocabulary:      %" PRIu32 "\n", hp->n_vocab);
    printf("context (train): %" PRIu32 "\n", hp->n_ctx_train);
    printf("rms norm eps:    %g\n", (double)hp->norm_eps);
    printf("rope:            %s, base %.10g, %" PRIu32 " dims, scaling %s",
           hp->rope_style == RT_ROPE_NEOX ? "neox" : "norm", (double)hp->rope_freq_base,
           hp->rope_dim, scaling_name(hp->rope_scaling));
    if (hp->rope_scaling != RT_ROPE_SCALING_NONE)
        printf(" x%g (original context %" PRIu32 ")", (double)hp->rope_scale_factor,
               hp->rope_orig_ctx);
    printf("%s\n", hp->has_rope_freqs ? ", rope_freqs factors" : "");
    printf("output:          %s\n", hp->tied_output ? "tied to the token embedding" : "separate");
    printf("qkv bias:        %s\n", hp->has_qkv_bias ? "yes" : "no");

    uint64_t count[RT_TYPE_COUNT_] = {0}, bytes[RT_TYPE_COUNT_] = {0}, params = 0, total = 0;
    int64_t n = rt_gguf_n_tensors(g);
    for (int64_t i = 0; i < n; i++) {
        const rt_gguf_tensor *t = rt_gguf_tensor_at(g, i);
        count[t->type]++;
        bytes[t->type] += t->n_bytes;
        params += t->n_elems;
        total += t->n_bytes;
    }
    fmt_bytes(total, b1, sizeof b1);
    printf("tensors:         %" PRId64 ", %s (%" PRIu64 " bytes)\n", n, b1, total);
    for (int t = 0; t < RT_TYPE_COUNT_; t++) {
        if (!count[t])
            continue;
        fmt_bytes(bytes[t], b1, sizeof b1);
        printf("  %-6s %6" PRIu64 " tensors  %12s\n", rt_type_name((rt_type)t), count[t], b1);
    }
    fmt_count(params, b2, sizeof b2);
    printf("parameters:      %s (%" PRIu64 ")\n", b2, params);
}

int cmd_model_info(int argc, char **argv)
{
    const char *path = NULL;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
            usage(stdout);
            return APP_EXIT_OK;
        }
        if (argv[i][0] == '-' && argv[i][1] != '\0')
            return app_usage("model-info", "unknown option '%s'", argv[i]);
        if (path)
            return app_usage("model-info", "expects one FILE, got '%s' and '%s'", path, argv[i]);
        path = argv[i];
    }
    if (!path)
        return app_usage("model-info", "expects a GGUF FILE");

    loupe_err err = {0};
    rt_gguf *g = NULL;
    rt_hparams hp;
    int rc = APP_EXIT_OK;
    if (rt_gguf_open(path, &g, &err) || rt_hparams_load(g, &hp, &err)) {
        rc = app_fail("model-info", &err);
        goto done;
    }
    print_info(g, &hp);
    if (fflush(stdout) != 0) {
        loupe_fail(&err, LOUPE_ERR_IO, "cannot write to standard output");
        rc = app_fail("model-info", &err);
    }
done:
    rt_gguf_close(g);
    return rc;
}
