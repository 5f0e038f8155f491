/*
 * URLs and PDFs end to end: PDFs made here with cairo (known words on several pages) come out in
 * page order with page markers; a loopback server (http_server.py, started and stopped here)
 * serves HTML, text, JSON, a PDF, redirects, a 404, a slow body, oversized bodies, a binary and a
 * non-http redirect — each must end in text or a clear error, quickly. An alarm turns any hang
 * into a failure.
 *
 * usage: test_ingest_net [PATH/TO/http_server.py]  (default: the one in the source tree)
 */
#include <cairo-pdf.h>
#include <cairo.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "common/test_util.h"
#include "ingest/ingest.h"

static test_rng rng;

/* fontconfig (pulled in by cairo's text) keeps process-lifetime caches that LeakSanitizer
 * reports in sanitizer builds; they are not ingest's. */
const char *__lsan_default_suppressions(void);
const char *__lsan_default_suppressions(void)
{
    return "leak:libfontconfig\n";
}

static const char *const WORDS[] = {"lantern", "harbor", "quartz", "meadow", "falcon", "ember",
                                    "glacier", "orchid", "tundra", "violet", "walnut", "zephyr"};

/* Writes a PDF with `pages` pages; page p gets one line "pageP w1 w2 w3" into lines[p]. */
static void make_pdf(const char *path, int pages, char lines[][128])
{
    cairo_surface_t *s = cairo_pdf_surface_create(path, 595, 842);
    cairo_t *cr = cairo_create(s);
    cairo_select_font_face(cr, "sans-serif", CAIRO_FONT_SLANT_NORMAL, CAIRO_FONT_WEIGHT_NORMAL);
    cairo_set_font_size(cr, 14);
    for (int p = 0; p < pages; p++) {
        int n = snprintf(lines[p], 128, "page%d", p + 1);
        for (int w = 0; w < 3; w++)
            n += snprintf(lines[p] + n, (size_t)(128 - n), " %s",
                          WORDS[test_rng_u64(&rng) % (sizeof WORDS / sizeof WORDS[0])]);
        cairo_move_to(cr, 72, 100);
        cairo_show_text(cr, lines[p]);
        cairo_show_page(cr);
    }
    cairo_destroy(cr);
    cairo_surface_destroy(s);
}

static char *read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *p = malloc((size_t)n + 1);
    *len = fread(p, 1, (size_t)n, f);
    fclose(f);
    return p;
}

static void test_pdf(const char *dir)
{
    char path[1024], lines[5][128];
    snprintf(path, sizeof path, "%s/doc.pdf", dir);
    make_pdf(path, 5, lines);
    size_t len = 0;
    char *data = read_file(path, &len);
    CHECK(data && len > 100);
    loupe_err err = {0};
    size_t tl = 0;
    int pages = 0;
    char *text = ing_pdf_to_text(data, len, "doc.pdf", &tl, &pages, &err);
    CHECK_MSG(text, "%s", err.msg);
    CHECK(pages == 5);
    if (text) {
        const char *at = text;
        for (int p = 0; p < 5; p++) {
            char marker[32];
            snprintf(marker, sizeof marker, "<page n=\"%d\">\n", p + 1);
            const char *m = strstr(at, marker);
            CHECK_MSG(m, "page marker %d missing", p + 1);
            if (!m)
                break;
            const char *l = strstr(m, lines[p]);
            const char *end = strstr(m, "</page>\n");
            CHECK_MSG(l && end && l < end, "page %d text '%s' not inside its markers:\n%s", p + 1,
                      lines[p], text);
            at = end ? end + 1 : m + 1;
        }
        CHECK(tl == strlen(text));
    }
    free(text);
    /* Corrupt: the header, then garbage; and a truncated file. */
    const char junk[] = "%PDF-1.7\nthis is not a pdf at all\n";
    loupe_err_clear(&err);
    text = ing_pdf_to_text(junk, sizeof junk - 1, "junk.pdf", &tl, &pages, &err);
    CHECK(!text && err.status == LOUPE_ERR_FORMAT && strstr(err.msg, "PDF"));
    loupe_err_clear(&err);
    text = ing_pdf_to_text(data, len / 3, "cut.pdf", &tl, &pages, &err);
    CHECK(!text || pages >= 0); /* poppler may recover some pages; it must not crash */
    free(text);
    free(data);

    /* Through ing_ingest: a PDF named on the command line is laid out page by page. */
    ing_opts o;
    ing_opts_init(&o);
    ing_result *r = NULL;
    const char *src[] = {path};
    loupe_err_clear(&err);
    CHECK_MSG(ing_ingest(src, 1, &o, &r, &err) == LOUPE_OK, "%s", err.msg);
    if (r) {
        CHECK(r->n_docs == 1 && r->docs[0].format == ING_FMT_PDF && r->docs[0].pages == 5);
        CHECK(strstr(r->text, "\">\n<page n=\"1\">\n") != NULL);
        CHECK(strstr(r->text, "</page>\n</document>\n</context>\n") != NULL);
    }
    ing_result_destroy(r);
}

/* ---- HTTP -------------------------------------------------------------------------------- */

typedef struct {
    pid_t pid;
    int in_fd; /* the server's stdin: closing it stops the server */
    int port;
} server;

static int server_start(server *s, const char *script, const char *dir)
{
    int in[2], out[2];
    if (pipe(in) || pipe(out))
        return -1;
    s->pid = fork();
    if (s->pid == 0) {
        dup2(in[0], 0);
        dup2(out[1], 1);
        close(in[1]);
        close(out[0]);
        execlp("python3", "python3", script, dir, (char *)NULL);
        _exit(127);
    }
    close(in[0]);
    close(out[1]);
    s->in_fd = in[1];
    FILE *f = fdopen(out[0], "r");
    char line[64] = "";
    if (!f || !fgets(line, sizeof line, f) || sscanf(line, "PORT %d", &s->port) != 1) {
        if (f)
            fclose(f);
        return -1;
    }
    fclose(f);
    return 0;
}

static void server_stop(server *s)
{
    close(s->in_fd);
    for (int i = 0; i < 50; i++) {
        if (waitpid(s->pid, NULL, WNOHANG) == s->pid)
            return;
        usleep(20000);
    }
    kill(s->pid, SIGKILL);
    waitpid(s->pid, NULL, 0);
}

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* Ingests one URL; returns the status, the record's text in *text (malloc'd) and err. */
static loupe_status fetch(const server *s, const char *path, const ing_opts *o, char **text,
                          char **final_url, loupe_err *err)
{
    char url[256];
    snprintf(url, sizeof url, "http://127.0.0.1:%d%s", s->port, path);
    const char *src[] = {url};
    ing_result *r = NULL;
    loupe_err_clear(err);
    loupe_status st = ing_ingest(src, 1, o, &r, err);
    *text = NULL;
    if (final_url)
        *final_url = NULL;
    if (r && r->n_docs == 1 && r->docs[0].text) {
        *text = strdup(r->docs[0].text);
        if (final_url)
            *final_url = strdup(r->docs[0].path);
    }
    ing_result_destroy(r);
    return st;
}

static void test_http(const char *script, const char *dir)
{
    FILE *f;
    char path[1024];
    snprintf(path, sizeof path, "%s/page.html", dir);
    f = fopen(path, "w");
    fputs("<!DOCTYPE html><html><head><title>Known  Title</title><style>p{color:red}</style>"
          "<script>var hidden = 1;</script></head><body><noscript>enable js</noscript>"
          "<h1>Heading</h1><p>First   para\n graph.</p><ul><li>one</li><li>two</li></ul>"
          "<pre>  keep   this\n    verbatim</pre><template><p>tmpl</p></template>"
          "<p>caf&eacute; &amp; more</p></body></html>", f);
    fclose(f);
    snprintf(path, sizeof path, "%s/plain.txt", dir);
    f = fopen(path, "w");
    fputs("plain text body\nline two\n", f);
    fclose(f);

    server s = {0};
    if (server_start(&s, script, dir) != 0) {
        fprintf(stderr, "could not start the loopback server (python3 %s)\n", script);
        test_failures++;
        return;
    }
    ing_opts o;
    ing_opts_init(&o);
    o.timeout_ms = 1500;
    o.connect_timeout_ms = 1000;
    char *t = NULL, *final = NULL;
    loupe_err err = {0};

    CHECK_MSG(fetch(&s, "/page.html", &o, &t, NULL, &err) == LOUPE_OK, "%s", err.msg);
    if (t) {
        CHECK_MSG(!strncmp(t, "Known Title\n\nHeading\n\nFirst para graph.\n\n- one\n- two\n\n"
                              "  keep   this\n    verbatim\n\ncafé & more\n", 200),
                  "html text was:\n%s", t);
        CHECK(!strstr(t, "hidden") && !strstr(t, "color") && !strstr(t, "enable js") &&
              !strstr(t, "tmpl"));
    }
    free(t);

    CHECK_MSG(fetch(&s, "/plain.txt", &o, &t, NULL, &err) == LOUPE_OK, "%s", err.msg);
    CHECK(t && !strcmp(t, "plain text body\nline two\n"));
    free(t);

    CHECK_MSG(fetch(&s, "/latin1.html", &o, &t, NULL, &err) == LOUPE_OK, "%s", err.msg);
    CHECK_MSG(t && !strcmp(t, "Café\n\nnaïve\n"), "latin1 page: %s", t ? t : "(null)");
    free(t);

    CHECK_MSG(fetch(&s, "/json", &o, &t, NULL, &err) == LOUPE_OK, "%s", err.msg);
    CHECK(t && !strcmp(t, "{\"answer\": 42}\n"));
    free(t);

    CHECK_MSG(fetch(&s, "/doc.pdf", &o, &t, NULL, &err) == LOUPE_OK, "%s", err.msg);
    CHECK(t && !strncmp(t, "<page n=\"1\">\npage1 ", 19));
    free(t);

    CHECK_MSG(fetch(&s, "/redirect", &o, &t, &final, &err) == LOUPE_OK, "%s", err.msg);
    CHECK(t && !strcmp(t, "plain text body\nline two\n"));
    CHECK_MSG(final && strstr(final, "/plain.txt"), "final URL %s", final ? final : "(null)");
    free(t);
    free(final);

    CHECK(fetch(&s, "/redirect-chain/4", &o, &t, NULL, &err) == LOUPE_OK);
    free(t);
    CHECK(fetch(&s, "/redirect-chain/6", &o, &t, NULL, &err) == LOUPE_ERR_NETWORK);
    CHECK_MSG(strstr(err.msg, "more than 5 redirects"), "%s", err.msg);
    CHECK(fetch(&s, "/loop", &o, &t, NULL, &err) == LOUPE_ERR_NETWORK);

    CHECK(fetch(&s, "/missing", &o, &t, NULL, &err) == LOUPE_ERR_NETWORK);
    CHECK_MSG(strstr(err.msg, "HTTP 404 Not Found") && strstr(err.msg, "/missing"), "%s",
              err.msg);

    CHECK(fetch(&s, "/to-ftp", &o, &t, NULL, &err) == LOUPE_ERR_UNSUPPORTED);
    CHECK_MSG(strstr(err.msg, "not http"), "%s", err.msg);

    double t0 = now();
    CHECK(fetch(&s, "/slow", &o, &t, NULL, &err) == LOUPE_ERR_TIMEOUT);
    double dt = now() - t0;
    CHECK_MSG(dt < 4.0, "the slow response took %.1f s against a 1.5 s timeout", dt);
    CHECK_MSG(strstr(err.msg, "timed out"), "%s", err.msg);

    o.max_url_size = 64 * 1024;
    CHECK(fetch(&s, "/big/1000000", &o, &t, NULL, &err) == LOUPE_ERR_RANGE);
    CHECK_MSG(strstr(err.msg, "--max-size limit of 64 KiB"), "%s", err.msg);
    CHECK(fetch(&s, "/big-chunked/1000000", &o, &t, NULL, &err) == LOUPE_ERR_RANGE);
    CHECK_MSG(strstr(err.msg, "aborted"), "%s", err.msg);
    CHECK(fetch(&s, "/big/65536", &o, &t, NULL, &err) == LOUPE_OK); /* exactly the limit */
    CHECK(t && strlen(t) == 65536);
    free(t);
    o.max_url_size = ING_DEFAULT_MAX_URL_SIZE;

    CHECK(fetch(&s, "/binary", &o, &t, NULL, &err) == LOUPE_ERR_UNSUPPORTED);
    CHECK_MSG(strstr(err.msg, "image/png"), "%s", err.msg);

    /* Nothing listens on the port after stop: a clear connection error, quickly. */
    int port = s.port;
    server_stop(&s);
    s.port = port;
    t0 = now();
    CHECK(fetch(&s, "/plain.txt", &o, &t, NULL, &err) == LOUPE_ERR_NETWORK);
    CHECK(now() - t0 < 3.0);
}

static void on_alarm(int sig)
{
    (void)sig;
    static const char msg[] = "test_ingest_net: hung for 90 s\n";
    if (write(2, msg, sizeof msg - 1) < 0)
        _exit(1);
    _exit(1);
}

int main(int argc, char **argv)
{
    signal(SIGALRM, on_alarm);
    alarm(90);
    signal(SIGPIPE, SIG_IGN);
    test_rng_seed(&rng, test_seed());
    char dir[512];
    snprintf(dir, sizeof dir, "%s/net.%d", test_tmpdir(), (int)getpid());
    mkdir(dir, 0755);
    test_pdf(dir);
    test_http(argc > 1 ? argv[1] : ING_SERVER_SCRIPT, dir);
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0)
        fprintf(stderr, "could not remove %s\n", dir);
    return test_summary("test_ingest_net");
}
