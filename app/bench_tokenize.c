/* `loupe bench tokenize`: tokenizer throughput, MB/s (10^6 bytes) and tokens/s, on one core
 * (rt_tokenize) and with N threads (rt_tokenize_parallel), over a file or a generated mixed
 * text (English prose, code, CJK and other scripts, emoji, digit and whitespace runs). Each row
 * is the best of --reps runs. */
#include "app/app.h"
#include "runtime/runtime.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#ifdef _OPENMP
#include <omp.h>
#endif

static const char usage[] =
    "usage: loupe bench tokenize [--model FILE] [--file F] [--size MB] [--threads N] [--reps N]\n"
    "                            [--csv]\n"
    "Tokenizer throughput on one core and on N threads (default: all cores), over F or a\n"
    "generated mixed text of --size MB (default 16).\n";

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* ---- A deterministic mixed text ---------------------------------------------------------- */

static const char *const pieces[] = {
    "the", "of", "and", "retrieval", "attention", "document", "context", "tokenizer", "I'M",
    "don't", "You'Re", "they'll", "internationalization", "Zürich", "naïve", "café",
    "for (int i = 0; i < n; i++) {\n\t\tsum += x[i] * w[i];\n\t}\n",
    "def f(xs):\n    return {k: v for k, v in xs.items() if v}\n",
    "SELECT id, name FROM users WHERE created_at > '2024-01-01';\n",
    "\xE4\xB8\xAD\xE6\x96\x87\xE7\x9A\x84\xE5\x88\x86\xE8\xAF\x8D\xE5\x99\xA8",
    "\xD0\xA0\xD1\x83\xD1\x81\xD1\x81\xD0\xBA\xD0\xB8\xD0\xB9 \xD1\x82\xD0\xB5\xD0\xBA\xD1\x81\xD1\x82",
    "\xE3\x81\xB2\xE3\x82\x89\xE3\x81\x8C\xE3\x81\xAA\xE3\x82\xAB\xE3\x82\xBF\xE3\x82\xAB\xE3\x83\x8A",
    "\xF0\x9F\x98\x80", "\xF0\x9F\x9A\x80\xF0\x9F\x94\xA5", "1234567890", "3.14159", "2024-06-01",
    "    ", "\t", "\n\n", "\r\n", "  \n", "...", "!?", "(see [1])", "->", "==",
};

static char *make_text(size_t len)
{
    char *s = malloc(len);
    if (!s)
        return NULL;
    uint64_t x = 0x9E3779B97F4A7C15ull;
    size_t n = 0, np = sizeof pieces / sizeof pieces[0];
    while (n < len) {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        uint64_t r = x * 0x2545F4914F6CDD1Dull;
        /* mostly prose: a common word (first 16 pieces) three times in four */
        const char *p = (r & 3) ? pieces[(r >> 8) % 16] : pieces[(r >> 8) % np];
        size_t k = strlen(p);
        if (n + k + 1 > len)
            break;
        memcpy(s + n, p, k);
        n += k;
        s[n++] = (r >> 40) % 13 ? ' ' : (r >> 40) % 2 ? '\n' : '.';
    }
    memset(s + n, ' ', len - n);
    return s;
}

static char *read_file(const char *path, size_t *len, loupe_err *err)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        loupe_fail(err, LOUPE_ERR_IO, "cannot open %s", path);
        return NULL;
    }
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *s = n >= 0 ? malloc((size_t)n + 1) : NULL;
    if (s && fread(s, 1, (size_t)n, f) != (size_t)n) {
        free(s);
        s = NULL;
    }
    fclose(f);
    if (!s)
        loupe_fail(err, LOUPE_ERR_IO, "cannot read %s", path);
    *len = s ? (size_t)n : 0;
    return s;
}

/* ---- The benchmark ------------------------------------------------------------------------ */

typedef struct {
    double seconds;
    size_t tokens;
} bench_row;

static loupe_status run(const rt_tokenizer *t, const char *text, size_t len, int threads,
                        int reps, bench_row *row, loupe_err *err)
{
    row->seconds = 1e30;
    for (int r = 0; r < reps; r++) {
        rt_ids ids;
        rt_ids_init(&ids);
        double t0 = now_s();
        loupe_status st = threads == 1 ? rt_tokenize(t, text, len, &ids, err)
                                       : rt_tokenize_parallel(t, text, len, threads, &ids, err);
        double dt = now_s() - t0;
        row->tokens = ids.n;
        rt_ids_free(&ids);
        if (st)
            return st;
        if (dt < row->seconds)
            row->seconds = dt;
    }
    return LOUPE_OK;
}

int bench_tokenize(int argc, char **argv)
{
    app_opts o;
    app_opts_init(&o);
    const char *file = NULL, *v = NULL;
    bool csv = false;
    int64_t size_mb = 16, reps = 3;
    for (int i = 1; i < argc; i++) {
        int r;
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            fputs(usage, stdout);
            return APP_EXIT_OK;
        }
        if (!strcmp(argv[i], "--csv")) {
            csv = true;
            continue;
        }
        if ((r = app_opt_value("bench tokenize", "--file", argc, argv, &i, &file))) {
            if (r > 1)
                return r;
            continue;
        }
        if ((r = app_opt_value("bench tokenize", "--size", argc, argv, &i, &v))) {
            if (r > 1 || (r = app_parse_i64("bench tokenize", "--size", v, 1, 4096, &size_mb)))
                return r;
            continue;
        }
        if ((r = app_opt_value("bench tokenize", "--reps", argc, argv, &i, &v))) {
            if (r > 1 || (r = app_parse_i64("bench tokenize", "--reps", v, 1, 100, &reps)))
                return r;
            continue;
        }
        r = app_opts_parse(&o, "bench tokenize", argc, argv, &i);
        if (r > 1)
            return r;
        if (r == 0)
            return app_usage("bench tokenize", "unknown argument '%s'", argv[i]);
    }
    int threads = o.threads;
#ifdef _OPENMP
    if (threads <= 0)
        threads = omp_get_max_threads();
#else
    threads = 1;
#endif

    const char *path = app_model_path(&o);
    loupe_err err = {0};
    rt_gguf *g = NULL;
    rt_tokenizer *t = NULL;
    char *text = NULL;
    size_t len = 0;
    int rc = APP_EXIT_OK;
    if (rt_gguf_open(path, &g, &err) || rt_tokenizer_load(g, &t, &err)) {
        rc = app_fail("bench tokenize", &err);
        goto done;
    }
    text = file ? read_file(file, &len, &err) : make_text((size_t)size_mb * 1000000);
    if (!file)
        len = (size_t)size_mb * 1000000;
    if (!text) {
        if (!file)
            loupe_fail(&err, LOUPE_ERR_NOMEM, "out of memory for %lld MB of text",
                       (long long)size_mb);
        rc = app_fail("bench tokenize", &err);
        goto done;
    }

    int rows[2] = {1, threads};
    int n_rows = threads > 1 ? 2 : 1;
    if (csv)
        printf("bench,input,bytes,threads,tokens,seconds,mb_per_s,tokens_per_s\n");
    else
        printf("tokenize: %s (%s), %.1f MB, best of %lld\n%8s %10s %14s %12s %10s\n",
               file ? file : "generated mixed text", rt_tokenizer_pre_name(t), (double)len / 1e6,
               (long long)reps, "threads", "MB/s", "tokens/s", "tokens", "seconds");
    for (int r = 0; r < n_rows; r++) {
        bench_row row = {0, 0};
        if (run(t, text, len, rows[r], (int)reps, &row, &err)) {
            rc = app_fail("bench tokenize", &err);
            goto done;
        }
        double mbs = (double)len / 1e6 / row.seconds, tps = (double)row.tokens / row.seconds;
        if (csv)
            printf("tokenize,%s,%zu,%d,%zu,%.4f,%.2f,%.0f\n", file ? file : "generated", len,
                   rows[r], row.tokens, row.seconds, mbs, tps);
        else
            printf("%8d %10.2f %14.0f %12zu %10.3f\n", rows[r], mbs, tps, row.tokens,
                   row.seconds);
    }
done:
    free(text);
    rt_tokenizer_destroy(t);
    rt_gguf_close(g);
    return rc;
}
