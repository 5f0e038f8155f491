/*
 * Needle-in-a-haystack cases (see niah.h for the task formats and why they are held out).
 *
 * A filler document keeps its text split into lines with a running token count per line (each
 * line tokenized on its own: the Llama-3 pre-tokenizer splits after a newline followed by a
 * non-space, so the sum is the document's count up to rare blank-line joins). A case is built in
 * three steps: pick documents until the token budget is spent (long ones cut at a line boundary
 * with LAYOUT.md's truncation line, as training cut them), choose the line boundary nearest the
 * depth from those counts, then render the text and tokenize it exactly as `loupe ask` would
 * (rt_chat_render). Estimates only steer: the needle's position and the prompt's length are
 * measured on the final ids, and an over-long prompt is rebuilt with a smaller budget.
 */
#include "app/niah.h"

#include <ctype.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ==== Small helpers ======================================================================= */

typedef struct {
    char *p; /* (len) bytes, NUL-terminated */
    size_t len, cap;
} nbuf;

static loupe_status nb_add(nbuf *b, const char *s, size_t n, loupe_err *err)
{
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 1024;
        while (cap < b->len + n + 1)
            cap *= 2;
        char *p = realloc(b->p, cap);
        if (!p)
            return loupe_fail(err, LOUPE_ERR_NOMEM, "out of memory building a %zu-byte text", cap);
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
    return LOUPE_OK;
}

static loupe_status nb_str(nbuf *b, const char *s, loupe_err *err)
{
    return nb_add(b, s, strlen(s), err);
}

static loupe_status nb_fmt(nbuf *b, loupe_err *err, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static loupe_status nb_fmt(nbuf *b, loupe_err *err, const char *fmt, ...)
{
    char tmp[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= sizeof tmp)
        return loupe_fail(err, LOUPE_ERR_INTERNAL, "a needle line is longer than %zu bytes",
                          sizeof tmp);
    return nb_add(b, tmp, (size_t)n, err);
}

/* An attribute value with & " < > escaped (LAYOUT.md). */
static loupe_status nb_attr(nbuf *b, const char *s, loupe_err *err)
{
    loupe_status st = LOUPE_OK;
    for (; *s && !st; s++) {
        switch (*s) {
        case '&': st = nb_str(b, "&amp;", err); break;
        case '"': st = nb_str(b, "&quot;", err); break;
        case '<': st = nb_str(b, "&lt;", err); break;
        case '>': st = nb_str(b, "&gt;", err); break;
        default: st = nb_add(b, s, 1, err);
        }
    }
    return st;
}

static char *dup_n(const char *s, size_t n)
{
    char *p = malloc(n + 1);
    if (p) {
        memcpy(p, s, n);
        p[n] = '\0';
    }
    return p;
}

/* splitmix64: this file's own stream, unrelated to the training generator. */
typedef struct {
    uint64_t s;
} nrng;

static uint64_t nr_next(nrng *r)
{
    uint64_t z = (r->s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static uint64_t nr_below(nrng *r, uint64_t n) /* [0, n), n > 0 */
{
    return nr_next(r) % n;
}

static double nr_unit(nrng *r) { return (double)(nr_next(r) >> 11) * 0x1.0p-53; }

static void nr_mix(nrng *r, uint64_t v)
{
    r->s ^= v + 0x6A09E667F3BCC909ull + (r->s << 6) + (r->s >> 2);
    nr_next(r);
}

/* Tokens of s[0..n) (scratch is reused). */
static loupe_status count_tokens(const rt_tokenizer *t, const char *s, size_t n, rt_ids *scratch,
                                 size_t *out, loupe_err *err)
{
    scratch->n = 0;
    loupe_status st = rt_tokenize(t, s, n, scratch, err);
    *out = scratch->n;
    return st;
}

static loupe_status count_str(const rt_tokenizer *t, const char *s, rt_ids *scratch, size_t *out,
                              loupe_err *err)
{
    return count_tokens(t, s, strlen(s), scratch, out, err);
}

/* ==== Tasks =============================================================================== */

static const char *const task_names[NIAH_N_TASKS] = {"passkey", "needles", "kv", "whichfile"};

const char *niah_task_name(niah_task t)
{
    return (unsigned)t < NIAH_N_TASKS ? task_names[t] : "?";
}

bool niah_task_parse(const char *s, niah_task *out)
{
    for (int i = 0; i < NIAH_N_TASKS; i++)
        if (!strcmp(s, task_names[i])) {
            *out = (niah_task)i;
            return true;
        }
    return false;
}

/* ==== Filler ============================================================================== */

typedef struct {
    uint32_t line;    /* the line that starts with the definition */
    char name[64];
    char kw[16];      /* "def", "class", "async def" */
} niah_def;

typedef struct {
    char *path;
    char *text;         /* (len) ends with '\n' */
    size_t len;
    uint32_t n_lines;
    uint32_t *line_off; /* (n_lines + 1) byte offset of each line; the last is len */
    uint32_t *line_tok; /* (n_lines + 1) tokens before each line; the last is the total */
    niah_def *defs;     /* (n_defs) top-level Python definitions, .py files only */
    uint32_t n_defs;
    bool is_py;
} niah_doc;

struct niah_filler {
    niah_doc *docs;  /* (n_docs) */
    size_t n_docs;
    size_t n_tokens;
    char **words;    /* (n_words) distinct [a-z]{4,9} words of the text, for needle names */
    size_t n_words;
};

static void doc_free(niah_doc *d)
{
    free(d->path);
    free(d->text);
    free(d->line_off);
    free(d->line_tok);
    free(d->defs);
    memset(d, 0, sizeof *d);
}

void niah_filler_destroy(niah_filler *f)
{
    if (!f)
        return;
    for (size_t i = 0; i < f->n_docs; i++)
        doc_free(&f->docs[i]);
    free(f->docs);
    for (size_t i = 0; i < f->n_words; i++)
        free(f->words[i]);
    free(f->words);
    free(f);
}

size_t niah_filler_n_docs(const niah_filler *f) { return f->n_docs; }
size_t niah_filler_n_tokens(const niah_filler *f) { return f->n_tokens; }

bool niah_filler_has_python(const niah_filler *f)
{
    for (size_t i = 0; i < f->n_docs; i++)
        if (f->docs[i].is_py && f->docs[i].n_defs > 0)
            return true;
    return false;
}

static bool ends_with(const char *s, const char *suf)
{
    size_t n = strlen(s), k = strlen(suf);
    return n >= k && !memcmp(s + n - k, suf, k);
}

/* A top-level `def NAME`, `async def NAME` or `class NAME` at the start of line [p, e). */
static bool parse_def(const char *p, const char *e, niah_def *d)
{
    static const char *const kws[] = {"async def ", "def ", "class "};
    for (size_t k = 0; k < 3; k++) {
        size_t n = strlen(kws[k]);
        if ((size_t)(e - p) <= n || memcmp(p, kws[k], n) != 0)
            continue;
        const char *s = p + n, *q = s;
        if (!isalpha((unsigned char)*q))
            return false;
        while (q < e && (isalnum((unsigned char)*q) || *q == '_'))
            q++;
        if ((size_t)(q - s) >= sizeof d->name)
            return false;
        memcpy(d->name, s, (size_t)(q - s));
        d->name[q - s] = '\0';
        memcpy(d->kw, kws[k], n - 1);
        d->kw[n - 1] = '\0';
        return true;
    }
    return false;
}

/* Copies one document and measures its lines. */
static loupe_status doc_init(niah_doc *d, const rt_tokenizer *t, const char *path,
                             const char *text, size_t len, rt_ids *scratch, loupe_err *err)
{
    memset(d, 0, sizeof *d);
    bool nl = len > 0 && text[len - 1] == '\n';
    d->path = dup_n(path, strlen(path));
    d->text = malloc(len + 2);
    if (!d->path || !d->text)
        return loupe_fail(err, LOUPE_ERR_NOMEM, "out of memory copying %s", path);
    memcpy(d->text, text, len);
    if (!nl) /* LAYOUT.md: a final newline is added when missing */
        d->text[len++] = '\n';
    d->text[len] = '\0';
    d->len = len;
    uint32_t n = 0;
    for (size_t i = 0; i < len; i++)
        n += d->text[i] == '\n';
    d->n_lines = n;
    d->line_off = malloc((n + 1) * sizeof *d->line_off);
    d->line_tok = malloc((n + 1) * sizeof *d->line_tok);
    d->is_py = ends_with(path, ".py");
    if (d->is_py)
        d->defs = malloc(n * sizeof *d->defs);
    if (!d->line_off || !d->line_tok || (d->is_py && !d->defs))
        return loupe_fail(err, LOUPE_ERR_NOMEM, "out of memory indexing %s", path);
    size_t off = 0, tok = 0;
    for (uint32_t l = 0; l < n; l++) {
        const char *e = memchr(d->text + off, '\n', len - off);
        size_t end = (size_t)(e - d->text) + 1, k = 0;
        d->line_off[l] = (uint32_t)off;
        d->line_tok[l] = (uint32_t)tok;
        loupe_status st = count_tokens(t, d->text + off, end - off, scratch, &k, err);
        if (st)
            return st;
        if (d->is_py && parse_def(d->text + off, d->text + end - 1, &d->defs[d->n_defs]))
            d->defs[d->n_defs++].line = l;
        tok += k;
        off = end;
    }
    d->line_off[n] = (uint32_t)len;
    d->line_tok[n] = (uint32_t)tok;
    /* Lines tokenized alone over-count where whitespace joins across a newline (indented code,
     * blank lines): scale the running counts to the whole text's count. */
    size_t whole = 0;
    loupe_status st = count_tokens(t, d->text, len, scratch, &whole, err);
    if (st || tok == 0)
        return st;
    for (uint32_t l = 0; l <= n; l++)
        d->line_tok[l] = (uint32_t)(((uint64_t)d->line_tok[l] * whole + tok / 2) / tok);
    return LOUPE_OK;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Distinct lower-case words of 4..9 letters (as training's word list), at most 4096. */
static loupe_status collect_words(niah_filler *f, loupe_err *err)
{
    size_t cap = 1 << 14, n = 0;
    char **w = malloc(cap * sizeof *w);
    if (!w)
        return loupe_fail(err, LOUPE_ERR_NOMEM, "out of memory collecting words");
    for (size_t i = 0; i < f->n_docs && n < cap; i++) {
        const char *s = f->docs[i].text;
        size_t len = f->docs[i].len;
        for (size_t j = 0; j < len && n < cap;) {
            if (!islower((unsigned char)s[j])) {
                j++;
                continue;
            }
            size_t k = j;
            while (k < len && islower((unsigned char)s[k]))
                k++;
            bool bounded = (j == 0 || !isalnum((unsigned char)s[j - 1])) &&
                           (k == len || !isalnum((unsigned char)s[k]));
            if (bounded && k - j >= 4 && k - j <= 9) {
                if (!(w[n] = dup_n(s + j, k - j)))
                    break;
                n++;
            }
            j = k;
        }
    }
    qsort(w, n, sizeof *w, cmp_str);
    size_t u = 0;
    for (size_t i = 0; i < n; i++) {
        if (u > 0 && !strcmp(w[u - 1], w[i]))
            free(w[i]);
        else
            w[u++] = w[i];
    }
    /* Keep an even spread of at most 4096, so the list does not favour words early in the
     * alphabet. */
    size_t keep = u < 4096 ? u : 4096;
    for (size_t i = 0; i < keep; i++) {
        size_t src = i * u / keep;
        char *tmp = w[i];
        w[i] = w[src];
        w[src] = tmp;
    }
    for (size_t i = keep; i < u; i++)
        free(w[i]);
    f->words = w;
    f->n_words = keep;
    return LOUPE_OK;
}

static const char *const fallback_words[] = {
    "amber", "basil", "cedar", "delta", "ember", "fjord", "garnet", "harbor", "indigo", "juniper",
    "kestrel", "lantern", "meadow", "nectar", "orchid", "pepper", "quartz", "raven", "saffron",
    "thistle", "umber", "velvet", "willow", "yarrow", "zephyr", "anchor", "bramble", "copper"};

static loupe_status filler_finish(niah_filler *f, const char *what, loupe_err *err)
{
    if (f->n_docs == 0)
        return loupe_fail(err, LOUPE_ERR_INVALID, "%s: no usable text (empty or binary)", what);
    f->n_tokens = 0;
    for (size_t i = 0; i < f->n_docs; i++)
        f->n_tokens += f->docs[i].line_tok[f->docs[i].n_lines];
    loupe_status st = collect_words(f, err);
    if (st || f->n_words >= 64)
        return st;
    for (size_t i = 0; i < f->n_words; i++)
        free(f->words[i]);
    size_t n = sizeof fallback_words / sizeof fallback_words[0];
    char **w = realloc(f->words, n * sizeof *w);
    if (!w)
        return loupe_fail(err, LOUPE_ERR_NOMEM, "out of memory collecting words");
    f->words = w;
    f->n_words = 0;
    for (size_t i = 0; i < n; i++) {
        if (!(w[i] = dup_n(fallback_words[i], strlen(fallback_words[i]))))
            return loupe_fail(err, LOUPE_ERR_NOMEM, "out of memory collecting words");
        f->n_words++;
    }
    return LOUPE_OK;
}

loupe_status niah_filler_from_texts(const rt_tokenizer *t, const char *const *paths,
                                    const char *const *texts, const size_t *lens, size_t n,
                                    const char *what, niah_filler **out, loupe_err *err)
{
    *out = NULL;
    loupe_status st = LOUPE_OK;
    rt_ids scratch;
    rt_ids_init(&scratch);
    niah_filler *f = calloc(1, sizeof *f);
    if (!f || !(f->docs = calloc(n ? n : 1, sizeof *f->docs))) {
        st = loupe_fail(err, LOUPE_ERR_NOMEM, "out of memory for %zu documents", n);
        goto done;
    }
    for (size_t i = 0; i < n; i++) {
        if (!texts[i] || lens[i] == 0 || memchr(texts[i], '\0', lens[i]))
            continue;
        st = doc_init(&f->docs[f->n_docs], t, paths[i], texts[i], lens[i], &scratch, err);
        f->n_docs++;
        if (st)
            goto done;
    }
    st = filler_finish(f, what, err);
done:
    rt_ids_free(&scratch);
    if (st) {
        niah_filler_destroy(f);
        return st;
    }
    *out = f;
    return LOUPE_OK;
}

/* ==== Built-in filler: generated notes and Python modules ================================= */

static const char *const g_nouns[] = {
    "river", "engine", "garden", "signal", "market", "bridge", "window", "ledger", "harvest",
    "circuit", "library", "valley", "compass", "furnace", "orchard", "tunnel", "beacon", "archive",
    "meadow", "station", "reactor", "canvas", "harbour", "kernel", "glacier", "turbine", "quarry",
    "lattice", "pantry", "vessel", "charter", "gallery", "spindle", "thicket", "mirror", "parcel"};
static const char *const g_verbs[] = {
    "build", "measure", "carry", "follow", "gather", "inspect", "repair", "sort", "index",
    "record", "merge", "split", "balance", "render", "encode", "filter", "schedule", "observe",
    "prepare", "collect", "compare", "deliver", "release", "restore"};
static const char *const g_adjs[] = {
    "quiet", "narrow", "bright", "ancient", "steady", "hollow", "gentle", "crowded", "distant",
    "careful", "silver", "plain", "rapid", "modest", "sturdy", "tidy", "humble", "vivid", "early",
    "patient"};
#define G_N(a) (sizeof(a) / sizeof((a)[0]))

static const char *pick(nrng *r, const char *const *a, size_t n) { return a[nr_below(r, n)]; }

/* One prose sentence. */
static loupe_status gen_sentence(nbuf *b, nrng *r, loupe_err *err)
{
    const char *n1 = pick(r, g_nouns, G_N(g_nouns)), *n2 = pick(r, g_nouns, G_N(g_nouns));
    const char *v = pick(r, g_verbs, G_N(g_verbs)), *a = pick(r, g_adjs, G_N(g_adjs));
    switch (nr_below(r, 5)) {
    case 0: return nb_fmt(b, err, "The %s %s can %s the %s before noon.", a, n1, v, n2);
    case 1: return nb_fmt(b, err, "Every %s near the %s needs someone to %s it.", n1, n2, v);
    case 2: return nb_fmt(b, err, "We %s the %s %s and write down what changed.", v, a, n1);
    case 3: return nb_fmt(b, err, "A %s %s is easier to %s than a %s.", a, n1, v, n2);
    default: return nb_fmt(b, err, "After the %s, the team will %s each %s again.", n1, v, n2);
    }
}

/* Notes: a title and paragraphs wrapped at about 90 columns. */
static loupe_status gen_notes(nbuf *b, nrng *r, size_t paragraphs, loupe_err *err)
{
    const char *a = pick(r, g_adjs, G_N(g_adjs)), *n = pick(r, g_nouns, G_N(g_nouns));
    loupe_status st = nb_fmt(b, err, "# Notes on the %s %s\n\n", a, n);
    nbuf s = {0};
    for (size_t p = 0; p < paragraphs && !st; p++) {
        size_t col = 0, k = 3 + nr_below(r, 5);
        for (size_t i = 0; i < k && !st; i++) {
            s.len = 0;
            if ((st = gen_sentence(&s, r, err)))
                break;
            if (col > 0 && col + 1 + s.len > 90) {
                st = nb_str(b, "\n", err);
                col = 0;
            } else if (col > 0) {
                st = nb_str(b, " ", err);
                col++;
            }
            if (!st)
                st = nb_add(b, s.p, s.len, err);
            col += s.len;
        }
        if (!st)
            st = nb_str(b, "\n\n", err);
    }
    free(s.p);
    return st;
}

/* A Python module of top-level functions and classes. */
static loupe_status gen_python(nbuf *b, nrng *r, size_t n_defs, loupe_err *err)
{
    loupe_status st = nb_fmt(b, err, "\"\"\"Helpers to %s the %s.\"\"\"\nimport os\n\n",
                             pick(r, g_verbs, G_N(g_verbs)), pick(r, g_nouns, G_N(g_nouns)));
    for (size_t i = 0; i < n_defs && !st; i++) {
        const char *v = pick(r, g_verbs, G_N(g_verbs)), *n = pick(r, g_nouns, G_N(g_nouns));
        const char *n2 = pick(r, g_nouns, G_N(g_nouns)), *a = pick(r, g_adjs, G_N(g_adjs));
        unsigned k = (unsigned)nr_below(r, 90) + 10;
        if (nr_below(r, 3) == 0) {
            char cls[64];
            snprintf(cls, sizeof cls, "%c%s%c%s", toupper((unsigned char)a[0]), a + 1,
                     toupper((unsigned char)n[0]), n + 1);
            st = nb_fmt(b, err, "\nclass %s%u:\n    \"\"\"A %s %s.\"\"\"\n\n"
                                "    def __init__(self, %s):\n        self.%s = %s\n"
                                "        self.limit = %u\n\n"
                                "    def %s(self):\n        return self.%s[: self.limit]\n\n",
                        cls, k, a, n, n2, n2, n2, k, v, n2);
        } else {
            st = nb_fmt(b, err, "\ndef %s_%s_%u(%s_list, %s=None):\n    \"\"\"%s the %s %s.\"\"\"\n"
                                "    if %s is None:\n        %s = os.environ.get(\"%s\", \"\")\n"
                                "    return [x for x in %s_list if x != %s][:%u]\n\n",
                        v, n, k, n2, n, v, a, n, n, n, n2, n2, n, k);
        }
    }
    return st;
}

loupe_status niah_filler_builtin(const rt_tokenizer *t, uint64_t seed, size_t min_tokens,
                                 niah_filler **out, loupe_err *err)
{
    *out = NULL;
    loupe_status st = LOUPE_OK;
    rt_ids scratch;
    rt_ids_init(&scratch);
    nbuf text = {0};
    size_t cap = 64;
    niah_filler *f = calloc(1, sizeof *f);
    if (!f || !(f->docs = calloc(cap, sizeof *f->docs))) {
        st = loupe_fail(err, LOUPE_ERR_NOMEM, "out of memory generating filler");
        goto done;
    }
    nrng r = {seed ^ 0x4E494148ull};
    nr_next(&r);
    size_t total = 0;
    while (total < min_tokens || f->n_docs < 24) {
        if (f->n_docs == cap) {
            niah_doc *d = realloc(f->docs, 2 * cap * sizeof *d);
            if (!d) {
                st = loupe_fail(err, LOUPE_ERR_NOMEM, "out of memory generating filler");
                goto done;
            }
            memset(d + cap, 0, cap * sizeof *d);
            f->docs = d;
            cap *= 2;
        }
        bool py = f->n_docs % 3 == 1;
        char path[128];
        text.len = 0;
        if (py) {
            snprintf(path, sizeof path, "src/%s/%s_%s_%zu.py", pick(&r, g_nouns, G_N(g_nouns)),
                     pick(&r, g_verbs, G_N(g_verbs)), pick(&r, g_nouns, G_N(g_nouns)), f->n_docs);
            st = gen_python(&text, &r, 2 + nr_below(&r, 10), err);
        } else {
            snprintf(path, sizeof path, "notes/%s-%s-%zu.md", pick(&r, g_adjs, G_N(g_adjs)),
                     pick(&r, g_nouns, G_N(g_nouns)), f->n_docs);
            st = gen_notes(&text, &r, 2 + nr_below(&r, 14), err);
        }
        if (!st)
            st = doc_init(&f->docs[f->n_docs], t, path, text.p, text.len, &scratch, err);
        if (f->docs[f->n_docs].line_tok)
            total += f->docs[f->n_docs].line_tok[f->docs[f->n_docs].n_lines];
        f->n_docs++;
        if (st)
            goto done;
    }
    st = filler_finish(f, "built-in filler", err);
done:
    free(text.p);
    rt_ids_free(&scratch);
    if (st) {
        niah_filler_destroy(f);
        return st;
    }
    *out = f;
    return LOUPE_OK;
}

/* ==== Case construction =================================================================== */

typedef struct {
    const niah_doc *d;
    uint32_t kept;       /* lines kept */
    bool truncated;      /* followed by the truncation line */
    size_t pos;          /* estimated context token where the body starts */
} niah_pick;

typedef struct {
    size_t pick, line;   /* inserted before this line of that pick's body */
    char *text;          /* the needle line, ending in '\n' */
    size_t tokens;       /* its token count */
} niah_insert;

typedef struct {
    niah_pick *picks;    /* (n_picks) documents in layout order */
    size_t n_picks, cap_picks;
    niah_insert ins[16]; /* (n_ins) needles */
    size_t n_ins;
    size_t ctx_tokens;   /* estimated context tokens (before the needles) */
} niah_layout;

static void layout_clear(niah_layout *L)
{
    for (size_t i = 0; i < L->n_ins; i++)
        free(L->ins[i].text);
    L->n_ins = 0;
    L->n_picks = 0;
}

static loupe_status layout_push(niah_layout *L, niah_pick p, loupe_err *err)
{
    if (L->n_picks == L->cap_picks) {
        size_t cap = L->cap_picks ? 2 * L->cap_picks : 32;
        niah_pick *q = realloc(L->picks, cap * sizeof *q);
        if (!q)
            return loupe_fail(err, LOUPE_ERR_NOMEM, "out of memory laying out a case");
        L->picks = q;
        L->cap_picks = cap;
    }
    L->picks[L->n_picks++] = p;
    return LOUPE_OK;
}

static const char trunc_fmt[] = "[... truncated: %u of %u tokens kept ...]\n";

/* Tokens of a truncation line (measured on a typical one, plus two for longer numbers). */
static size_t trunc_tokens(const rt_tokenizer *t, rt_ids *scratch)
{
    loupe_err ignore;
    size_t n = 18;
    if (count_str(t, "[... truncated: 1234 of 5678 tokens kept ...]\n", scratch, &n, &ignore))
        n = 18;
    return n + 2;
}

/* Tokens of a document's <document> open tag, measured on the text render_user writes. */
static loupe_status open_tag_tokens(const rt_tokenizer *t, const niah_doc *d, rt_ids *scratch,
                                    size_t *out, loupe_err *err)
{
    nbuf b = {0};
    loupe_status st = nb_str(&b, "<document path=\"", err);
    if (!st && !(st = nb_attr(&b, d->path, err)) && !(st = nb_str(&b, "\">\n", err)))
        st = count_tokens(t, b.p, b.len, scratch, out, err);
    free(b.p);
    return st;
}

/* Tokens a document adds besides its body: its <sources> line and its <document> tags. */
static loupe_status doc_overhead(const rt_tokenizer *t, const niah_doc *d, rt_ids *scratch,
                                 size_t *out, loupe_err *err)
{
    size_t a = 0, b = 0, c = 0;
    loupe_status st = count_str(t, d->path, scratch, &a, err);
    if (!st)
        st = open_tag_tokens(t, d, scratch, &b, err);
    if (!st)
        st = count_str(t, "</document>\n", scratch, &c, err);
    *out = a + 1 + b + c;
    return st;
}

/* Lines of d whose tokens fit in `room`. */
static uint32_t lines_within(const niah_doc *d, size_t room)
{
    uint32_t k = 0;
    while (k < d->n_lines && d->line_tok[k + 1] <= room)
        k++;
    return k;
}

/* Picks filler documents (from `py_only` ones when asked) for `budget` tokens. */
static loupe_status fill(const niah_filler *f, const rt_tokenizer *t, nrng *r, size_t budget,
                         bool py_only, niah_layout *L, rt_ids *scratch, loupe_err *err)
{
    static const size_t caps[] = {600, 1500, 4000, 20000};
    size_t cap = caps[nr_below(r, 4)], used = 0;
    const size_t trunc_tok = trunc_tokens(t, scratch);
    size_t n_pool = 0;
    for (size_t i = 0; i < f->n_docs; i++)
        n_pool += !py_only || (f->docs[i].is_py && f->docs[i].n_defs > 0);
    if (n_pool == 0)
        return loupe_fail(err, LOUPE_ERR_INVALID, "the haystack has no Python files with top-level "
                          "definitions (whichfile needs some)");
    for (int guard = 0; guard < 20000 && used < budget; guard++) {
        size_t k = nr_below(r, n_pool), i = 0;
        for (;; i++)
            if ((!py_only || (f->docs[i].is_py && f->docs[i].n_defs > 0)) && k-- == 0)
                break;
        const niah_doc *d = &f->docs[i];
        size_t ovh = 0, body = d->line_tok[d->n_lines];
        loupe_status st = doc_overhead(t, d, scratch, &ovh, err);
        if (st)
            return st;
        niah_pick p = {d, d->n_lines, false, 0};
        if (body > cap) { /* long files are cut as training cut them */
            size_t keep = cap / 2 + nr_below(r, cap / 2 + 1);
            p.kept = lines_within(d, keep > trunc_tok ? keep - trunc_tok : 0);
            p.truncated = true;
            body = d->line_tok[p.kept] + trunc_tok;
        }
        if (used + ovh + body > budget) {
            size_t room = budget - used;
            if (room < ovh + trunc_tok + 48)
                break;
            p.kept = lines_within(d, room - ovh - trunc_tok);
            if (p.kept == 0)
                break;
            p.truncated = p.kept < d->n_lines || p.truncated;
            body = d->line_tok[p.kept] + (p.truncated ? trunc_tok : 0);
        }
        if (p.kept == 0)
            continue;
        if ((st = layout_push(L, p, err)))
            return st;
        used += ovh + body;
    }
    return LOUPE_OK;
}

/* Estimated body positions (exact tag counts, bodies from their line counts). */
static loupe_status estimate_positions(niah_layout *L, const rt_tokenizer *t, rt_ids *scratch,
                                       loupe_err *err)
{
    size_t pos = 0, a = 0, close = 0;
    const size_t trunc_tok = trunc_tokens(t, scratch);
    loupe_status st = count_str(t, "<context>\n<sources>\n", scratch, &a, err);
    if (!st)
        st = count_str(t, "</document>\n", scratch, &close, err);
    pos += a;
    for (size_t i = 0; i < L->n_picks && !st; i++) {
        st = count_str(t, L->picks[i].d->path, scratch, &a, err);
        pos += a + 1;
    }
    if (!st)
        st = count_str(t, "</sources>\n", scratch, &a, err);
    pos += a;
    for (size_t i = 0; i < L->n_picks && !st; i++) {
        niah_pick *p = &L->picks[i];
        st = open_tag_tokens(t, p->d, scratch, &a, err);
        pos += a;
        p->pos = pos;
        pos += p->d->line_tok[p->kept] + (p->truncated ? trunc_tok : 0) + close;
    }
    L->ctx_tokens = pos;
    return st;
}

/* Tokens of the needles already placed at or before boundary (pick, line). */
static size_t inserted_before(const niah_layout *L, size_t pick, size_t line)
{
    size_t n = 0;
    for (size_t j = 0; j < L->n_ins; j++)
        if (L->ins[j].pick < pick || (L->ins[j].pick == pick && L->ins[j].line <= line))
            n += L->ins[j].tokens;
    return n;
}

/* The line boundary at or before `depth` of a context of `total` tokens (needles included):
 * inside a body, never after a whole body's last line (as training's insert_at). Positions count
 * the needles already placed. */
static void boundary_at(const niah_layout *L, double depth, size_t total, size_t *pick,
                        size_t *line)
{
    double target = depth * (double)total;
    *pick = 0;
    *line = 0;
    for (size_t i = 0; i < L->n_picks; i++) {
        const niah_pick *p = &L->picks[i];
        uint32_t last = p->truncated ? p->kept : p->kept - 1;
        if ((double)(p->pos + inserted_before(L, i, 0)) > target)
            break;
        *pick = i;
        *line = 0;
        for (uint32_t k = 0; k <= last; k++) {
            if ((double)(p->pos + p->d->line_tok[k] + inserted_before(L, i, k)) > target)
                break;
            *line = k;
        }
    }
}

static loupe_status add_insert(niah_layout *L, size_t pick, size_t line, const char *text,
                               size_t tokens, loupe_err *err)
{
    if (L->n_ins == sizeof L->ins / sizeof L->ins[0])
        return loupe_fail(err, LOUPE_ERR_INTERNAL, "too many needles");
    char *s = dup_n(text, strlen(text));
    if (!s)
        return loupe_fail(err, LOUPE_ERR_NOMEM, "out of memory for a needle");
    L->ins[L->n_ins++] = (niah_insert){pick, line, s, tokens};
    return LOUPE_OK;
}

/* LAYOUT.md text of the picks with the needles in place, then the question. */
static loupe_status render_user(const niah_layout *L, const char *question, nbuf *b,
                                loupe_err *err)
{
    loupe_status st = nb_str(b, "<context>\n<sources>\n", err);
    for (size_t i = 0; i < L->n_picks && !st; i++)
        if (!(st = nb_str(b, L->picks[i].d->path, err)))
            st = nb_str(b, "\n", err);
    if (!st)
        st = nb_str(b, "</sources>\n", err);
    for (size_t i = 0; i < L->n_picks && !st; i++) {
        const niah_pick *p = &L->picks[i];
        const niah_doc *d = p->d;
        if ((st = nb_str(b, "<document path=\"", err)) || (st = nb_attr(b, d->path, err)) ||
            (st = nb_str(b, "\">\n", err)))
            break;
        for (uint32_t k = 0; k <= p->kept && !st; k++) {
            for (size_t j = 0; j < L->n_ins && !st; j++)
                if (L->ins[j].pick == i && L->ins[j].line == k)
                    st = nb_str(b, L->ins[j].text, err);
            if (!st && k < p->kept)
                st = nb_add(b, d->text + d->line_off[k], d->line_off[k + 1] - d->line_off[k], err);
        }
        if (!st && p->truncated)
            st = nb_fmt(b, err, trunc_fmt, d->line_tok[p->kept], d->line_tok[d->n_lines]);
        if (!st)
            st = nb_str(b, "</document>\n", err);
    }
    if (!st)
        st = nb_str(b, "</context>\n\n", err);
    if (!st)
        st = nb_str(b, question, err);
    return st;
}

/* Start of the occurrence of pat[0..m) in ids nearest `near` (first/last when near is 0/SIZE_MAX);
 * SIZE_MAX if none. */
static size_t find_seq(const rt_ids *ids, const rt_ids *pat, size_t near)
{
    size_t best = SIZE_MAX, best_d = SIZE_MAX;
    if (pat->n == 0 || pat->n > ids->n)
        return SIZE_MAX;
    for (size_t i = 0; i + pat->n <= ids->n; i++) {
        if (memcmp(ids->ids + i, pat->ids, pat->n * sizeof *pat->ids) != 0)
            continue;
        size_t d = i > near ? i - near : near - i;
        if (d <= best_d) {
            best = i;
            best_d = d;
        }
        if (near == 0)
            break;
    }
    return best;
}

/* Tokens of a needle line without its trailing punctuation and newline, whose pre-tokens then
 * do not depend on what follows it in the context. */
static loupe_status needle_pattern(const rt_tokenizer *t, const char *line, rt_ids *out,
                                   loupe_err *err)
{
    size_t n = strlen(line);
    while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '.' || line[n - 1] == ' '))
        n--;
    out->n = 0;
    return rt_tokenize(t, line, n, out, err);
}

static void hexid(nrng *r, char out[9])
{
    static const char hex[] = "0123456789abcdef";
    out[0] = (char)('0' + nr_below(r, 10)); /* a digit first, as training's keys */
    for (int i = 1; i < 8; i++)
        out[i] = hex[nr_below(r, 16)];
    out[8] = '\0';
}

/* The key/value document filling `budget` tokens; the pair asked is the line nearest depth. */
static loupe_status make_kv_doc(const niah_filler *f, const rt_tokenizer *t, nrng *r,
                                size_t budget, niah_doc *kv, rt_ids *scratch, loupe_err *err)
{
    char path[96];
    snprintf(path, sizeof path, "data/%s.txt", f->words[nr_below(r, f->n_words)]);
    size_t per = 9; /* fewest tokens a line takes (BPE); lines past the budget are dropped */
    size_t n = budget / per + 8;
    nbuf b = {0};
    loupe_status st = LOUPE_OK;
    char k[9], v[9];
    for (size_t i = 0; i < n && !st; i++) {
        hexid(r, k);
        hexid(r, v);
        st = nb_fmt(&b, err, "%s: %s\n", k, v);
    }
    if (!st)
        st = doc_init(kv, t, path, b.p, b.len, scratch, err);
    free(b.p);
    return st;
}

static loupe_status set_str(char **dst, const char *s, loupe_err *err)
{
    free(*dst);
    if (!(*dst = dup_n(s, strlen(s))))
        return loupe_fail(err, LOUPE_ERR_NOMEM, "out of memory");
    return LOUPE_OK;
}

void niah_case_free(niah_case *c)
{
    if (!c)
        return;
    free(c->user);
    free(c->question);
    free(c->answer);
    rt_ids_free(&c->ids);
    memset(c, 0, sizeof *c);
    rt_ids_init(&c->ids);
}

/* One attempt at `budget` context tokens; the RNG is re-seeded by the caller, so attempts differ
 * only in how much filler they take. */
static loupe_status build_once(const niah_filler *f, const rt_tokenizer *t, rt_chat_format fmt,
                               const niah_spec *s, nrng *r, size_t budget, niah_layout *L,
                               niah_doc *kv, niah_case *c, rt_ids *scratch, loupe_err *err)
{
    loupe_status st = LOUPE_OK;
    char line[256], q[256], ans[256];
    const char *pat_text = line;
    nbuf user = {0};
    layout_clear(L);
    doc_free(kv);

    if (s->task == NIAH_KV) {
        if ((st = make_kv_doc(f, t, r, budget, kv, scratch, err)))
            goto done;
        niah_pick p = {kv, 0, false, 0};
        size_t ovh = 0;
        if ((st = doc_overhead(t, kv, scratch, &ovh, err)))
            goto done;
        p.kept = lines_within(kv, budget > ovh ? budget - ovh : 0);
        if (p.kept < 2) {
            st = loupe_fail(err, LOUPE_ERR_TOO_LONG, "%u tokens leave no room for key/value pairs",
                            s->length);
            goto done;
        }
        if ((st = layout_push(L, p, err)) || (st = estimate_positions(L, t, scratch, err)))
            goto done;
        size_t pk, ln;
        boundary_at(L, s->depth, L->ctx_tokens, &pk, &ln);
        const char *l0 = kv->text + kv->line_off[ln];
        memcpy(ans, l0 + 10, 8);
        ans[8] = '\0';
        char key[9];
        memcpy(key, l0, 8);
        key[8] = '\0';
        snprintf(q, sizeof q, "What is the value for the key %s?", key);
        snprintf(line, sizeof line, "%.18s", l0); /* "key: value" locates it */
    } else if (s->task == NIAH_WHICHFILE) {
        if ((st = fill(f, t, r, budget, true, L, scratch, err)) ||
            (st = estimate_positions(L, t, scratch, err)))
            goto done;
        /* Names defined in exactly one document of the context (in the lines kept, away from a
         * cut); the one nearest the depth is asked. */
        double target = s->depth * (double)L->ctx_tokens, best_d = INFINITY;
        const niah_def *best = NULL;
        size_t best_pick = 0;
        for (size_t i = 0; i < L->n_picks; i++) {
            const niah_pick *p = &L->picks[i];
            for (uint32_t j = 0; j < p->d->n_defs; j++) {
                const niah_def *df = &p->d->defs[j];
                if (df->line + (p->truncated ? 2u : 0u) >= p->kept)
                    continue;
                bool unique = true;
                for (size_t i2 = 0; i2 < L->n_picks && unique; i2++) {
                    const niah_pick *p2 = &L->picks[i2];
                    if (!strcmp(p2->d->path, p->d->path))
                        continue;
                    for (uint32_t j2 = 0; j2 < p2->d->n_defs && unique; j2++)
                        unique = strcmp(p2->d->defs[j2].name, df->name) != 0 ||
                                 p2->d->defs[j2].line >= p2->kept;
                }
                if (!unique)
                    continue;
                double d = fabs((double)(p->pos + p->d->line_tok[df->line]) - target);
                if (d < best_d) {
                    best_d = d;
                    best = df;
                    best_pick = i;
                }
            }
        }
        if (!best) {
            st = loupe_fail(err, LOUPE_ERR_INVALID, "no top-level Python name is defined in exactly "
                            "one document of a %u-token haystack", s->length);
            goto done;
        }
        snprintf(q, sizeof q, "Which file defines %s?", best->name);
        snprintf(ans, sizeof ans, "%s", L->picks[best_pick].d->path);
        snprintf(line, sizeof line, "%s %s", best->kw, best->name);
    } else {
        /* passkey / needles: the needle lines come out of the budget first. */
        char lines[9][160];
        size_t n_needles = 1, asked = 0, needle_tokens = 0;
        if (s->task == NIAH_PASSKEY) {
            unsigned key = 10000u + (unsigned)nr_below(r, 90000);
            snprintf(lines[0], sizeof lines[0], "The pass key is %u. Remember it.\n", key);
            snprintf(q, sizeof q, "What is the pass key?");
            snprintf(ans, sizeof ans, "%u", key);
        } else {
            size_t hi = 3 + s->length / 512;
            n_needles = 2 + nr_below(r, (hi < 9 ? hi : 9) - 2);
            asked = nr_below(r, n_needles);
            size_t used_w[9];
            for (size_t i = 0; i < n_needles; i++) {
                size_t w;
                bool dup;
                do { /* distinct words (the list has at least 28) */
                    w = nr_below(r, f->n_words);
                    dup = false;
                    for (size_t j = 0; j < i; j++)
                        dup |= used_w[j] == w;
                } while (dup);
                used_w[i] = w;
                unsigned num = 1000000u + (unsigned)nr_below(r, 9000000);
                snprintf(lines[i], sizeof lines[i], "The special magic number for %s is: %u.\n",
                         f->words[w], num);
                if (i == asked) {
                    snprintf(q, sizeof q, "What is the special magic number for %s?", f->words[w]);
                    snprintf(ans, sizeof ans, "%u", num);
                }
            }
        }
        size_t line_tokens[9];
        for (size_t i = 0; i < n_needles; i++) {
            if ((st = count_str(t, lines[i], scratch, &line_tokens[i], err)))
                goto done;
            needle_tokens += line_tokens[i];
        }
        if (budget <= needle_tokens + 64) {
            st = loupe_fail(err, LOUPE_ERR_TOO_LONG, "%u tokens leave no room for a haystack",
                            s->length);
            goto done;
        }
        if ((st = fill(f, t, r, budget - needle_tokens, false, L, scratch, err)) ||
            (st = estimate_positions(L, t, scratch, err)))
            goto done;
        if (L->n_picks == 0) {
            st = loupe_fail(err, LOUPE_ERR_TOO_LONG, "%u tokens leave no room for a haystack",
                            s->length);
            goto done;
        }
        /* The others first, so that the asked one's depth counts them. */
        size_t total = L->ctx_tokens + needle_tokens;
        for (size_t i = 0; i < n_needles && !st; i++) {
            size_t pk, ln;
            if (i == asked)
                continue;
            boundary_at(L, nr_unit(r), total, &pk, &ln);
            st = add_insert(L, pk, ln, lines[i], line_tokens[i], err);
        }
        if (!st) {
            size_t pk, ln;
            boundary_at(L, s->depth, total, &pk, &ln);
            st = add_insert(L, pk, ln, lines[asked], line_tokens[asked], err);
        }
        if (st)
            goto done;
        snprintf(line, sizeof line, "%s", lines[asked]);
    }
    if (L->n_picks == 0) {
        st = loupe_fail(err, LOUPE_ERR_TOO_LONG, "%u tokens leave no room for a haystack",
                        s->length);
        goto done;
    }

    /* Render and measure. */
    if ((st = render_user(L, q, &user, err)) || (st = set_str(&c->question, q, err)) ||
        (st = set_str(&c->answer, ans, err)))
        goto done;
    free(c->user);
    c->user = user.p;
    user.p = NULL;
    rt_chat_msg msg = {RT_ROLE_USER, c->user, strlen(c->user)};
    c->ids.n = 0;
    if ((st = rt_chat_render(t, fmt, &msg, 1, true, &c->ids, err)))
        goto done;
    if ((st = needle_pattern(t, "<context", scratch, err)))
        goto done;
    c->ctx_start = find_seq(&c->ids, scratch, 0);
    if ((st = needle_pattern(t, "</context", scratch, err)))
        goto done;
    c->ctx_end = find_seq(&c->ids, scratch, SIZE_MAX);
    if ((st = needle_pattern(t, pat_text, scratch, err)))
        goto done;
    if (c->ctx_start == SIZE_MAX || c->ctx_end == SIZE_MAX || c->ctx_end <= c->ctx_start) {
        st = loupe_fail(err, LOUPE_ERR_INTERNAL, "the rendered case lost its <context> tags");
        goto done;
    }
    size_t span = c->ctx_end - c->ctx_start;
    size_t near = c->ctx_start + (size_t)(s->depth * (double)span);
    c->needle_pos = find_seq(&c->ids, scratch, near);
    if (c->needle_pos == SIZE_MAX) {
        st = loupe_fail(err, LOUPE_ERR_INTERNAL, "the needle \"%s\" is not found in the rendered "
                        "case's tokens", pat_text);
        goto done;
    }
    c->depth = (double)(c->needle_pos - c->ctx_start) / (double)span;
done:
    free(user.p);
    return st;
}

loupe_status niah_case_build(const niah_filler *f, const rt_tokenizer *t, rt_chat_format fmt,
                             const niah_spec *s, niah_case *out, loupe_err *err)
{
    memset(out, 0, sizeof *out);
    rt_ids_init(&out->ids);
    if (s->depth < 0 || s->depth > 1 || !(s->depth == s->depth))
        return loupe_fail(err, LOUPE_ERR_RANGE, "needle depth %g is outside 0..1", s->depth);
    loupe_status st = LOUPE_OK;
    rt_ids scratch;
    rt_ids_init(&scratch);
    niah_layout L = {0};
    niah_doc kv = {0};
    /* Fixed cost: chat headers, the question and the generation prompt. */
    size_t fixed = 40, budget;
    budget = s->length > fixed ? s->length - fixed : 0;
    for (int attempt = 0; attempt < 8; attempt++) {
        nrng r = {0x6E696168ull}; /* "niah" */
        nr_mix(&r, s->seed);
        nr_mix(&r, (uint64_t)s->task);
        nr_mix(&r, s->length);
        nr_mix(&r, (uint64_t)llround(s->depth * 1e6));
        nr_mix(&r, s->index);
        if (budget < 64) {
            st = loupe_fail(err, LOUPE_ERR_TOO_LONG, "a %u-token prompt leaves no room for a "
                            "haystack", s->length);
            break;
        }
        st = build_once(f, t, fmt, s, &r, budget, &L, &kv, out, &scratch, err);
        if (st || out->ids.n <= s->length)
            break;
        size_t over = out->ids.n - s->length;
        budget = budget > over + 8 + (size_t)attempt * 16 ? budget - over - 8 - (size_t)attempt * 16
                                                          : 0;
        if (budget == 0) {
            st = loupe_fail(err, LOUPE_ERR_TOO_LONG, "a %u-token prompt leaves no room for a "
                            "haystack", s->length);
            break;
        }
    }
    if (!st && out->ids.n > s->length)
        st = loupe_fail(err, LOUPE_ERR_INTERNAL, "could not fit the case in %u tokens", s->length);
    layout_clear(&L);
    free(L.picks);
    doc_free(&kv);
    rt_ids_free(&scratch);
    return st;
}

/* ==== Answers ============================================================================= */

bool niah_answer_match(const char *generated, size_t len, const char *answer)
{
    size_t a = 0, b = len;
    while (a < b && isspace((unsigned char)generated[a]))
        a++;
    while (b > a && isspace((unsigned char)generated[b - 1]))
        b--;
    size_t n = strlen(answer);
    return b - a == n && memcmp(generated + a, answer, n) == 0;
}
