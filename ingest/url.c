/*
 * URLs → document text with libcurl: http and https only (also across redirects, at most
 * opts.max_redirects), connect and total timeouts, and a body cap enforced while receiving (the
 * transfer is aborted past it, whatever Content-Length said). The content type decides the reader:
 * HTML → readable text (html.c), PDF → pages (pdf.c), text/JSON/XML → decoded as is; anything else
 * is sniffed (PDF magic, then binary) so an unlabelled text file still comes through.
 */
#include "ingest/ing_impl.h"

#include <ctype.h>
#include <curl/curl.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

typedef struct {
    ing_buf body;
    uint64_t max;
    bool too_big;
    char status_line[160]; /* the last "HTTP/1.1 404 Not Found" seen (after redirects) */
} fetch_state;

static size_t on_body(char *ptr, size_t size, size_t nmemb, void *ud)
{
    fetch_state *s = ud;
    size_t n = size * nmemb;
    if ((uint64_t)s->body.n + n > s->max) {
        s->too_big = true;
        return 0; /* aborts the transfer: CURLE_WRITE_ERROR */
    }
    ing_buf_put(&s->body, ptr, n);
    return s->body.oom ? 0 : n;
}

static size_t on_header(char *ptr, size_t size, size_t nmemb, void *ud)
{
    fetch_state *s = ud;
    size_t n = size * nmemb;
    if (n > 5 && !memcmp(ptr, "HTTP/", 5)) {
        size_t k = n < sizeof s->status_line - 1 ? n : sizeof s->status_line - 1;
        memcpy(s->status_line, ptr, k);
        while (k && (s->status_line[k - 1] == '\r' || s->status_line[k - 1] == '\n'))
            k--;
        s->status_line[k] = '\0';
    }
    return n;
}

bool ing_is_url(const char *s)
{
    if (!isalpha((unsigned char)s[0]))
        return false;
    size_t i = 1;
    while (isalnum((unsigned char)s[i]) || s[i] == '+' || s[i] == '-' || s[i] == '.')
        i++;
    return !strncmp(s + i, "://", 3);
}

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
static CURLcode curl_init_rc = CURLE_OK;
static void curl_init(void)
{
    curl_init_rc = curl_global_init(CURL_GLOBAL_DEFAULT);
}

/* "text/html; charset=ISO-8859-1" → mime "text/html", charset "ISO-8859-1". */
static void split_content_type(const char *ct, char *mime, size_t mcap, char *cs, size_t ccap)
{
    mime[0] = cs[0] = '\0';
    if (!ct)
        return;
    size_t i = 0, o = 0;
    while (ct[i] == ' ')
        i++;
    while (ct[i] && ct[i] != ';' && ct[i] != ' ' && o + 1 < mcap)
        mime[o++] = (char)tolower((unsigned char)ct[i++]);
    mime[o] = '\0';
    const char *p = NULL;
    for (const char *q = ct; *q && !p; q++)
        if (!strncasecmp(q, "charset=", 8))
            p = q;
    if (p) {
        p += 8;
        if (*p == '"')
            p++;
        o = 0;
        while (*p && *p != '"' && *p != ';' && *p != ' ' && o + 1 < ccap)
            cs[o++] = *p++;
        cs[o] = '\0';
    }
}

static bool is_texty(const char *mime)
{
    size_t n = strlen(mime);
    return !strncmp(mime, "text/", 5) || !strcmp(mime, "application/json") ||
           !strcmp(mime, "application/xml") || !strcmp(mime, "application/javascript") ||
           !strcmp(mime, "application/x-ndjson") || !strcmp(mime, "application/yaml") ||
           (n > 5 && !strcmp(mime + n - 5, "+json")) || (n > 4 && !strcmp(mime + n - 4, "+xml"));
}

static bool looks_html(const char *p, size_t n)
{
    size_t i = 0;
    while (i < n && i < 512 && isspace((unsigned char)p[i]))
        i++;
    if (n - i >= 3 && (unsigned char)p[i] == 0xEF) /* UTF-8 BOM */
        i += 3;
    return (n - i >= 9 && !strncasecmp(p + i, "<!doctype", 9)) ||
           (n - i >= 5 && !strncasecmp(p + i, "<html", 5));
}

loupe_status ing_url_load(const ing_opts *o, const char *url, ing_doc *d, loupe_err *why)
{
    loupe_status rc = LOUPE_OK;
    fetch_state s = {0};
    CURL *h = NULL;
    char ebuf[CURL_ERROR_SIZE] = "";
    d->kind = ING_SRC_URL;
    if (strncasecmp(url, "http://", 7) && strncasecmp(url, "https://", 8)) {
        size_t k = (size_t)(strstr(url, "://") - url);
        return loupe_fail(why, LOUPE_ERR_UNSUPPORTED,
                          "unsupported URL scheme '%.*s' (only http and https are fetched)",
                          (int)(k < 32 ? k : 32), url);
    }
    pthread_once(&curl_once, curl_init);
    if (curl_init_rc != CURLE_OK)
        return loupe_fail(why, LOUPE_ERR_NETWORK, "libcurl failed to start: %s",
                          curl_easy_strerror(curl_init_rc));
    if (!(h = curl_easy_init()))
        return loupe_fail(why, LOUPE_ERR_NOMEM, "libcurl could not create a transfer");
    s.max = o->max_url_size;
    curl_easy_setopt(h, CURLOPT_URL, url);
    curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(h, CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(h, CURLOPT_FOLLOWLOCATION, 1L);
    curl_easy_setopt(h, CURLOPT_MAXREDIRS, (long)o->max_redirects);
    curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, o->connect_timeout_ms);
    curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, o->timeout_ms);
    curl_easy_setopt(h, CURLOPT_MAXFILESIZE_LARGE, (curl_off_t)o->max_url_size);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L); /* timeouts without SIGALRM: thread-safe */
    curl_easy_setopt(h, CURLOPT_ACCEPT_ENCODING, "");
    curl_easy_setopt(h, CURLOPT_USERAGENT, "loupe/0.1");
    curl_easy_setopt(h, CURLOPT_ERRORBUFFER, ebuf);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, &s);
    curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(h, CURLOPT_HEADERDATA, &s);
    CURLcode cc = curl_easy_perform(h);
    char *final_url = NULL;
    curl_easy_getinfo(h, CURLINFO_EFFECTIVE_URL, &final_url);
    d->bytes = s.body.n;
    if (cc != CURLE_OK) {
        char lim[32];
        ing_fmt_size(o->max_url_size, lim, sizeof lim);
        if (s.too_big || cc == CURLE_FILESIZE_EXCEEDED)
            rc = loupe_fail(why, LOUPE_ERR_RANGE,
                            "the response is larger than the --max-size limit of %s "
                            "(transfer aborted)", lim);
        else if (cc == CURLE_OPERATION_TIMEDOUT)
            rc = loupe_fail(why, LOUPE_ERR_TIMEOUT, "timed out (%s)",
                            ebuf[0] ? ebuf : curl_easy_strerror(cc));
        else if (cc == CURLE_TOO_MANY_REDIRECTS)
            rc = loupe_fail(why, LOUPE_ERR_NETWORK, "more than %d redirects", o->max_redirects);
        else if (cc == CURLE_UNSUPPORTED_PROTOCOL)
            rc = loupe_fail(why, LOUPE_ERR_UNSUPPORTED,
                            "redirected to a URL that is not http or https (%s)",
                            ebuf[0] ? ebuf : curl_easy_strerror(cc));
        else if (s.body.oom)
            rc = loupe_fail(why, LOUPE_ERR_NOMEM, "out of memory receiving the response");
        else
            rc = loupe_fail(why, LOUPE_ERR_NETWORK, "%s", ebuf[0] ? ebuf : curl_easy_strerror(cc));
        goto done;
    }
    long code = 0;
    curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &code);
    if (code >= 400 || (code && code < 200)) {
        const char *st = s.status_line;
        const char *sp = strchr(st, ' '); /* "HTTP/1.1 404 Not Found" → "404 Not Found" */
        if (sp)
            rc = loupe_fail(why, LOUPE_ERR_NETWORK, "HTTP %s", sp + 1);
        else
            rc = loupe_fail(why, LOUPE_ERR_NETWORK, "HTTP error %ld", code);
        goto done;
    }
    if (code >= 300) {
        rc = loupe_fail(why, LOUPE_ERR_NETWORK, "HTTP %ld redirect without a usable Location",
                        code);
        goto done;
    }
    if (final_url) {
        char *p = strdup(final_url);
        if (!p) {
            rc = loupe_fail(why, LOUPE_ERR_NOMEM, "out of memory");
            goto done;
        }
        free(d->path);
        d->path = p;
    }
    char *ct = NULL;
    curl_easy_getinfo(h, CURLINFO_CONTENT_TYPE, &ct);
    char mime[96], charset[64];
    split_content_type(ct, mime, sizeof mime, charset, sizeof charset);
    const char *body = s.body.p ? s.body.p : "";
    size_t n = s.body.n;
    bool pdf = n >= 5 && !memcmp(body, "%PDF-", 5);
    if (!pdf && (!strcmp(mime, "text/html") || !strcmp(mime, "application/xhtml+xml") ||
                 (!mime[0] && looks_html(body, n)))) {
        loupe_err e = {0};
        size_t tl = 0;
        char *t = ing_html_to_text(body, n, charset[0] ? charset : NULL, &tl, &e);
        if (!t) {
            rc = loupe_fail(why, e.status ? e.status : LOUPE_ERR_FORMAT, "%s", e.msg);
            goto done;
        }
        d->text = t;
        d->text_bytes = tl;
        d->format = ING_FMT_HTML;
        goto done;
    }
    if (!strcmp(mime, "application/pdf") && !pdf) {
        rc = loupe_fail(why, LOUPE_ERR_FORMAT, "served as application/pdf but is not a PDF");
        goto done;
    }
    if ((rc = ing_doc_set_bytes(d, body, n, why)) && rc == LOUPE_ERR_UNSUPPORTED && mime[0] &&
        !is_texty(mime)) {
        char phrase[LOUPE_ERR_MSG_MAX];
        memcpy(phrase, why->msg, sizeof phrase);
        rc = loupe_fail(why, LOUPE_ERR_UNSUPPORTED, "%s content is not text (%s)", mime, phrase);
    }
done:
    ing_buf_free(&s.body);
    curl_easy_cleanup(h);
    return rc;
}
