/*
 * Hostile input through the C API: a directory of 100,000 files, a sparse 2 GiB file (inside a
 * walk and named), NUL bytes, invalid UTF-8, a symbolic link loop, a broken link, a FIFO, a
 * non-http URL scheme, a missing file, oversized stdin. Each ends in a record with a reason or a
 * clear error; the walk stays fast and its memory bounded (checked with getrusage).
 */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "common/test_util.h"
#include "ingest/ingest.h"

#define N_MANY 100000

static test_rng rng;
static char tmp[512];

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void put(const char *rel, const void *data, size_t n)
{
    char path[1024];
    snprintf(path, sizeof path, "%s/%s", tmp, rel);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0 || write(fd, data, n) != (ssize_t)n) {
        fprintf(stderr, "cannot write %s\n", path);
        test_failures++;
    }
    if (fd >= 0)
        close(fd);
}

static const ing_doc *find(const ing_result *r, const char *suffix)
{
    size_t k = strlen(suffix);
    for (size_t i = 0; i < r->n_docs; i++) {
        size_t n = strlen(r->docs[i].path);
        if (n >= k && !strcmp(r->docs[i].path + n - k, suffix))
            return &r->docs[i];
    }
    return NULL;
}

static bool valid_utf8(const char *s, size_t n)
{
    const unsigned char *u = (const unsigned char *)s;
    for (size_t i = 0; i < n;) {
        unsigned c = u[i];
        size_t k = c < 0x80 ? 1 : c >= 0xC2 && c <= 0xDF ? 2 : c >= 0xE0 && c <= 0xEF ? 3
                 : c >= 0xF0 && c <= 0xF4 ? 4 : 0;
        if (!k || !c || i + k > n)
            return false;
        for (size_t j = 1; j < k; j++)
            if ((u[i + j] & 0xC0) != 0x80)
                return false;
        i += k;
    }
    return true;
}

int main(void)
{
    test_rng_seed(&rng, test_seed());
    snprintf(tmp, sizeof tmp, "%s/hostile.%d", test_tmpdir(), (int)getpid());
    char path[1024];
    mkdir(tmp, 0755);
    snprintf(path, sizeof path, "%s/H", tmp);
    mkdir(path, 0755);
    snprintf(path, sizeof path, "%s/H/many", tmp);
    mkdir(path, 0755);

    double t0 = now();
    for (int i = 0; i < N_MANY; i++) {
        char rel[64], body[32];
        snprintf(rel, sizeof rel, "H/many/f%06d.txt", i);
        int n = snprintf(body, sizeof body, "%d\n", i);
        put(rel, body, (size_t)n);
    }
    fprintf(stderr, "made %d files in %.2f s\n", N_MANY, now() - t0);

    snprintf(path, sizeof path, "%s/H/big.bin", tmp);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    CHECK(fd >= 0 && ftruncate(fd, 2ll << 30) == 0); /* sparse: no disk used */
    if (fd >= 0)
        close(fd);
    put("H/nul.txt", "abc\0def", 7);
    put("H/latin.txt", "caf\xE9\n", 5);
    unsigned char junk[4096];
    for (size_t i = 0; i < sizeof junk; i++) {
        junk[i] = (unsigned char)(0x20 + test_rng_u64(&rng) % 0xE0); /* no controls, no NUL */
    }
    put("H/junk.txt", junk, sizeof junk);
    char target[1024];
    snprintf(path, sizeof path, "%s/H/loop", tmp);
    CHECK(symlink(".", path) == 0);
    snprintf(path, sizeof path, "%s/H/up", tmp);
    CHECK(symlink("..", path) == 0);
    snprintf(path, sizeof path, "%s/H/broken", tmp);
    CHECK(symlink("nowhere", path) == 0);
    snprintf(path, sizeof path, "%s/H/fifo", tmp);
    CHECK(mkfifo(path, 0644) == 0);
    snprintf(target, sizeof target, "%s/H", tmp);

    /* The walk. */
    struct rusage ru0, ru1;
    getrusage(RUSAGE_SELF, &ru0);
    ing_opts o;
    ing_opts_init(&o);
    const char *src[] = {target};
    ing_result *r = NULL;
    loupe_err err = {0};
    t0 = now();
    CHECK_MSG(ing_ingest(src, 1, &o, &r, &err) == LOUPE_OK, "%s", err.msg);
    double dt = now() - t0;
    getrusage(RUSAGE_SELF, &ru1);
    fprintf(stderr, "walked %zu entries in %.2f s, max RSS %ld MiB\n", r ? r->n_docs : 0, dt,
            ru1.ru_maxrss / 1024);
    CHECK_MSG(dt < 20, "walking 100k files took %.1f s", dt);
    CHECK_MSG(ru1.ru_maxrss < 400 * 1024, "max RSS %ld KiB", ru1.ru_maxrss);
    if (r) {
        CHECK(r->n_included == N_MANY + 2); /* many's files, latin.txt, junk.txt */
        const ing_doc *d;
        d = find(r, "/H/many/f000000.txt");
        CHECK(d && d->status == ING_DOC_INCLUDED && !strcmp(d->text, "0\n"));
        d = find(r, "/H/many/f099999.txt");
        CHECK(d && d->status == ING_DOC_INCLUDED && !strcmp(d->text, "99999\n"));
        d = find(r, "/H/big.bin");
        CHECK(d && d->status == ING_DOC_SKIPPED && d->bytes == (2ull << 30));
        CHECK_MSG(d && d->reason && strstr(d->reason, "2 GiB is over the --max-file-size limit "
                                                       "of 10 MiB"), "%s", d ? d->reason : "");
        d = find(r, "/H/nul.txt");
        CHECK(d && d->status == ING_DOC_SKIPPED && strstr(d->reason, "binary"));
        d = find(r, "/H/latin.txt");
        CHECK(d && d->status == ING_DOC_INCLUDED && !strcmp(d->text, "caf\xC3\xA9\n"));
        d = find(r, "/H/junk.txt");
        CHECK(d && d->status == ING_DOC_INCLUDED && valid_utf8(d->text, d->text_bytes));
        d = find(r, "/H/loop");
        CHECK(d && d->status == ING_DOC_SKIPPED && strstr(d->reason, "loop"));
        d = find(r, "/H/up/H"); /* up leads to the parent, whose H is the walk's root */
        CHECK(d && d->status == ING_DOC_SKIPPED && strstr(d->reason, "loop"));
        d = find(r, "/H/broken");
        CHECK(d && d->status == ING_DOC_SKIPPED && strstr(d->reason, "symbolic link"));
        d = find(r, "/H/fifo");
        CHECK(d && d->status == ING_DOC_SKIPPED && strstr(d->reason, "not a regular file"));
        /* Sorted, depth-first: big.bin < broken < fifo < junk.txt < latin.txt < loop < many/ */
        CHECK(find(r, "/H/big.bin") < find(r, "/H/broken"));
        CHECK(find(r, "/H/loop") < find(r, "/H/many/f000000.txt"));
        CHECK(find(r, "/H/many/f099999.txt") < find(r, "/H/nul.txt"));
        CHECK(r->text && strstr(r->text, "<tree>\n"));
    }
    ing_result_destroy(r);
    (void)ru0;

    /* Named sources: each failure is an error naming the source. */
    char big[1100];
    snprintf(big, sizeof big, "%s/H/big.bin", tmp);
    const char *s1[] = {big};
    CHECK(ing_ingest(s1, 1, &o, &r, &err) == LOUPE_ERR_RANGE && !r);
    CHECK_MSG(strstr(err.msg, "big.bin: 2 GiB is over the --max-file-size limit of 10 MiB"),
              "%s", err.msg);
    const char *s2[] = {"ftp://example.com/file.txt"};
    CHECK(ing_ingest(s2, 1, &o, &r, &err) == LOUPE_ERR_UNSUPPORTED);
    CHECK_MSG(strstr(err.msg, "unsupported URL scheme 'ftp'"), "%s", err.msg);
    const char *s3[] = {"file:///etc/passwd"};
    CHECK(ing_ingest(s3, 1, &o, &r, &err) == LOUPE_ERR_UNSUPPORTED);
    snprintf(big, sizeof big, "%s/H/does-not-exist", tmp);
    const char *s4[] = {big};
    CHECK(ing_ingest(s4, 1, &o, &r, &err) == LOUPE_ERR_NOT_FOUND);
    CHECK(strstr(err.msg, "does-not-exist: no such file or directory"));
    snprintf(big, sizeof big, "%s/H/nul.txt", tmp);
    const char *s5[] = {big};
    CHECK(ing_ingest(s5, 1, &o, &r, &err) == LOUPE_ERR_UNSUPPORTED);
    CHECK(strstr(err.msg, "nul.txt: binary file"));

    /* stdin over the limit: refused after limit + 1 bytes, not read to the end. */
    int fds[2];
    CHECK(pipe(fds) == 0);
    char chunk[5000];
    memset(chunk, 'z', sizeof chunk);
    CHECK(write(fds[1], chunk, sizeof chunk) == (ssize_t)sizeof chunk);
    close(fds[1]);
    o.stdin_fd = fds[0];
    o.max_file_size = 1000;
    const char *s6[] = {"-"};
    CHECK(ing_ingest(s6, 1, &o, &r, &err) == LOUPE_ERR_RANGE);
    CHECK_MSG(strstr(err.msg, "<stdin>: more than 1000 bytes is over the --max-file-size"),
              "%s", err.msg);
    close(fds[0]);

    snprintf(path, sizeof path, "rm -rf '%s'", tmp);
    if (system(path) != 0)
        fprintf(stderr, "could not remove %s\n", tmp);
    return test_summary("test_ingest_hostile");
}
