/*
 * HTML → readable text with libxml2's HTML parser (recovering, no network, no error output).
 *
 * Output rules: the <title> first, then a blank line, then the body. script, style, noscript,
 * template (and other non-content elements) are dropped with their contents; block elements start
 * and end lines (paragraph-like ones leave a blank line); <br> breaks a line; list items start
 * with "- "; table cells are separated by " | "; runs of whitespace collapse to one space and lines
 * are trimmed, except inside <pre>, whose text is kept verbatim. At most one blank line in a row.
 *
 * The emitter keeps "pending" separators (a space, 1 or 2 newlines) and writes them only before
 * the next visible character, which makes trimming and collapsing fall out naturally.
 */
#include "ingest/ing_impl.h"

#include <libxml/HTMLparser.h>
#include <libxml/parser.h>
#include <libxml/tree.h>
#include <pthread.h>
#include <string.h>
#include <strings.h>

typedef struct {
    ing_buf out;
    int pending_nl;     /* 0, 1 or 2 newlines owed before the next text */
    bool pending_space;
    bool at_line_start;
} emitter;

static void em_break(emitter *e, int n)
{
    if (e->out.n == 0)
        return; /* no leading blank lines */
    if (n > e->pending_nl)
        e->pending_nl = n;
    e->pending_space = false;
}

static void em_flush(emitter *e)
{
    if (e->pending_nl) {
        /* Newlines already written (a <pre> ending in one) count toward those owed. */
        int have = 0;
        while (have < e->pending_nl && (size_t)have < e->out.n &&
               e->out.p[e->out.n - 1 - (size_t)have] == '\n')
            have++;
        for (int i = have; i < e->pending_nl; i++)
            ing_buf_putc(&e->out, '\n');
        e->pending_nl = 0;
        e->pending_space = false;
        e->at_line_start = true;
    } else if (e->pending_space && !e->at_line_start) {
        ing_buf_putc(&e->out, ' ');
    }
    e->pending_space = false;
}

static void em_text(emitter *e, const char *s)
{
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v') {
            if (e->out.n)
                e->pending_space = true;
            continue;
        }
        em_flush(e);
        ing_buf_putc(&e->out, (char)c);
        e->at_line_start = false;
    }
}

static void em_verbatim(emitter *e, const char *s)
{
    if (!*s)
        return;
    em_flush(e);
    if (*s == '\n') /* HTML drops a newline right after <pre> */
        s++;
    ing_buf_puts(&e->out, s);
    size_t n = strlen(s);
    e->at_line_start = n && s[n - 1] == '\n';
}

static bool name_in(const char *name, const char *const *list)
{
    for (; *list; list++)
        if (!strcasecmp(name, *list))
            return true;
    return false;
}

static const char *const DROPPED[] = {"script", "style", "noscript", "template", "head", "svg",
                                      "math", "iframe", "object", "embed", "canvas", "select",
                                      "button", NULL};
static const char *const PARAGRAPHS[] = {"p", "h1", "h2", "h3", "h4", "h5", "h6", "ul", "ol",
                                         "dl", "table", "blockquote", "pre", "figure", "hr",
                                         "section", "article", "aside", "header", "footer",
                                         "nav", "main", "form", "fieldset", "details", NULL};
static const char *const BLOCKS[] = {"div", "li", "tr", "dt", "dd", "caption", "address",
                                     "figcaption", "summary", "legend", "body", "center",
                                     "option", "thead", "tbody", "tfoot", NULL};

static void walk(emitter *e, xmlNode *node)
{
    for (xmlNode *n = node; n; n = n->next) {
        if (n->type == XML_TEXT_NODE || n->type == XML_CDATA_SECTION_NODE) {
            if (n->content)
                em_text(e, (const char *)n->content);
            continue;
        }
        if (n->type != XML_ELEMENT_NODE || !n->name)
            continue;
        const char *name = (const char *)n->name;
        if (name_in(name, DROPPED) || !strcasecmp(name, "title"))
            continue;
        if (!strcasecmp(name, "br")) {
            em_break(e, 1);
            continue;
        }
        if (!strcasecmp(name, "pre")) {
            em_break(e, 2);
            xmlChar *t = xmlNodeGetContent(n);
            if (t) {
                em_verbatim(e, (const char *)t);
                xmlFree(t);
            }
            em_break(e, 2);
            continue;
        }
        int brk = name_in(name, PARAGRAPHS) ? 2 : name_in(name, BLOCKS) ? 1 : 0;
        if (brk)
            em_break(e, brk);
        if (!strcasecmp(name, "li")) {
            em_flush(e);
            ing_buf_puts(&e->out, "- ");
            e->at_line_start = true; /* no extra space after the bullet */
        }
        if ((!strcasecmp(name, "td") || !strcasecmp(name, "th")) && !e->pending_nl &&
            !e->at_line_start) {
            e->pending_space = false;
            ing_buf_puts(&e->out, " | ");
            e->at_line_start = true; /* the separator carries its own spaces */
        }
        walk(e, n->children);
        if (brk)
            em_break(e, brk);
    }
}

static xmlNode *find_elem(xmlNode *n, const char *name)
{
    for (; n; n = n->next) {
        if (n->type == XML_ELEMENT_NODE && n->name && !strcasecmp((const char *)n->name, name))
            return n;
        xmlNode *f = find_elem(n->children, name);
        if (f)
            return f;
    }
    return NULL;
}

static pthread_once_t xml_once = PTHREAD_ONCE_INIT;
static void xml_init(void)
{
    xmlInitParser();
}

char *ing_html_to_text(const char *html, size_t len, const char *charset, size_t *out_len,
                       loupe_err *err)
{
    pthread_once(&xml_once, xml_init);
    if (len > INT32_MAX) {
        loupe_fail(err, LOUPE_ERR_RANGE, "HTML page of %zu bytes is too large to parse", len);
        return NULL;
    }
    const int flags = HTML_PARSE_RECOVER | HTML_PARSE_NOERROR | HTML_PARSE_NOWARNING |
                      HTML_PARSE_NONET | HTML_PARSE_COMPACT;
    htmlDocPtr doc = htmlReadMemory(html, (int)len, NULL, charset, flags);
    if (!doc && charset) /* an unknown charset name: let libxml2 detect it */
        doc = htmlReadMemory(html, (int)len, NULL, NULL, flags);
    emitter e = {0};
    e.at_line_start = true;
    if (doc) {
        xmlNode *root = xmlDocGetRootElement(doc);
        xmlNode *title = find_elem(root, "title");
        if (title) {
            xmlChar *t = xmlNodeGetContent(title);
            if (t) {
                em_text(&e, (const char *)t);
                xmlFree(t);
                em_break(&e, 2);
            }
        }
        xmlNode *body = find_elem(root, "body");
        walk(&e, body ? body->children : root);
        xmlFreeDoc(doc);
    }
    if (e.out.n && e.out.p[e.out.n - 1] != '\n')
        ing_buf_putc(&e.out, '\n');
    char *text = ing_buf_take(&e.out, out_len);
    if (!text) {
        loupe_fail(err, LOUPE_ERR_NOMEM, "out of memory converting HTML to text");
        return NULL;
    }
    /* libxml2 output is UTF-8 already; run it through the decoder anyway so the invariant
     * "document text is valid UTF-8 without NULs" holds whatever the page contained. */
    size_t n2 = 0;
    char *clean = ing_decode_text(text, *out_len, &n2);
    free(text);
    if (!clean) {
        loupe_fail(err, LOUPE_ERR_NOMEM, "out of memory converting HTML to text");
        return NULL;
    }
    *out_len = n2;
    return clean;
}
