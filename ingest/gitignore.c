/*
 * gitignore rules: git's wildmatch and the pattern list of one ignore file.
 *
 * The rules are git's (gitignore(5)), in the order git applies them when reading a line:
 *   - lines end at '\n' (a '\r' before it is dropped); blank lines and lines starting with '#'
 *     are skipped; trailing spaces are dropped unless escaped with a backslash;
 *   - a leading '!' negates (re-includes); "\!" and "\#" are literal;
 *   - a trailing '/' makes the pattern match directories only (and is removed);
 *   - a pattern with no other '/' matches the entry's name at any depth below the file's
 *     directory; otherwise it is anchored to that directory (a leading '/' only anchors) and
 *     matched against the whole relative path with '*' and '?' not crossing '/';
 *   - "**" at a segment edge crosses directories: "** /x" (no space) anywhere, "x/ **" everything
 *     inside, "a/ ** /b" zero or more directories between;
 *   - the LAST matching pattern of a file decides. Across files the walker asks the deepest
 *     directory first, and a file under an excluded directory is never reached, which is how git
 *     makes "a file cannot be re-included if a parent directory is excluded" hold.
 */
#include "ingest/ing_impl.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- wildmatch --------------------------------------------------------------------------- */

enum { WM_MATCH = 0, WM_NOMATCH = 1, WM_ABORT_ALL = -1, WM_ABORT_TO_STARSTAR = -2 };

static bool class_has(const char *name, size_t n, unsigned char c)
{
#define IS(s) (n == sizeof(s) - 1 && !memcmp(name, s, n))
    if (IS("alnum")) return isalnum(c);
    if (IS("alpha")) return isalpha(c);
    if (IS("blank")) return c == ' ' || c == '\t';
    if (IS("cntrl")) return iscntrl(c);
    if (IS("digit")) return isdigit(c);
    if (IS("graph")) return isgraph(c);
    if (IS("lower")) return islower(c);
    if (IS("print")) return isprint(c);
    if (IS("punct")) return ispunct(c);
    if (IS("space")) return isspace(c);
    if (IS("upper")) return isupper(c);
    if (IS("xdigit")) return isxdigit(c);
#undef IS
    return false;
}

/* Matches the bracket expression starting after '[' at *pp against c; advances *pp past ']'.
 * Returns 1 match, 0 no match, -1 malformed (no closing bracket: the whole match fails). */
static int match_class(const unsigned char **pp, unsigned char c)
{
    const unsigned char *p = *pp;
    bool negated = false, matched = false;
    if (*p == '!' || *p == '^') {
        negated = true;
        p++;
    }
    unsigned char prev = 0;
    bool first = true;
    for (;; first = false) {
        unsigned char pc = *p;
        if (!pc)
            return -1;
        if (pc == ']' && !first)
            break;
        if (pc == '\\') {
            pc = *++p;
            if (!pc)
                return -1;
            if (pc == c)
                matched = true;
        } else if (pc == '-' && prev && p[1] && p[1] != ']') {
            unsigned char hi = *++p;
            if (hi == '\\') {
                hi = *++p;
                if (!hi)
                    return -1;
            }
            if (c >= prev && c <= hi)
                matched = true;
            pc = 0; /* a range cannot start another range */
        } else if (pc == '[' && p[1] == ':') {
            const unsigned char *end = (const unsigned char *)strstr((const char *)p + 2, ":]");
            if (!end)
                return -1;
            if (class_has((const char *)p + 2, (size_t)(end - p - 2), c))
                matched = true;
            p = end + 1;
            pc = 0;
        } else if (pc == c) {
            matched = true;
        }
        prev = pc;
        p++;
    }
    *pp = p + 1;
    return matched != negated;
}

static int dowild(const unsigned char *p, const unsigned char *text, const unsigned char *start,
                  bool pathname)
{
    for (; *p; text++, p++) {
        unsigned char pc = *p, tc = *text;
        if (!tc && pc != '*')
            return WM_ABORT_ALL;
        switch (pc) {
        case '\\':
            pc = *++p;
            if (!pc)
                return WM_NOMATCH; /* a trailing backslash matches nothing */
            if (tc != pc)
                return WM_NOMATCH;
            continue;
        case '?':
            if (pathname && tc == '/')
                return WM_NOMATCH;
            continue;
        case '[': {
            if (pathname && tc == '/')
                return WM_NOMATCH;
            const unsigned char *q = p + 1;
            int m = match_class(&q, tc);
            if (m < 0)
                return WM_ABORT_ALL;
            if (!m)
                return WM_NOMATCH;
            p = q - 1;
            continue;
        }
        case '*': {
            bool match_slash;
            if (*++p == '*') {
                const unsigned char *before = p - 2;
                while (*++p == '*')
                    ;
                if ((before < start || *before == '/') &&
                    (*p == '\0' || *p == '/' || (p[0] == '\\' && p[1] == '/'))) {
                    /* "**" as a whole segment: may cross '/', and "**" + "/" may match nothing */
                    if (*p == '/' && dowild(p + 1, text, start, pathname) == WM_MATCH)
                        return WM_MATCH;
                    match_slash = true;
                } else {
                    match_slash = !pathname; /* "**" inside a segment is a plain '*' */
                }
            } else {
                match_slash = !pathname;
            }
            if (!*p) {
                if (!match_slash && strchr((const char *)text, '/'))
                    return WM_ABORT_TO_STARSTAR;
                return WM_MATCH;
            }
            if (!match_slash && *p == '/') {
                const char *slash = strchr((const char *)text, '/');
                if (!slash)
                    return WM_ABORT_ALL;
                text = (const unsigned char *)slash;
                break; /* the loop's p++/text++ consume the '/' pair */
            }
            for (; *text; text++) {
                int m = dowild(p, text, start, pathname);
                if (m != WM_NOMATCH) {
                    if (!match_slash || m != WM_ABORT_TO_STARSTAR)
                        return m;
                } else if (!match_slash && *text == '/') {
                    return WM_ABORT_TO_STARSTAR;
                }
            }
            return WM_ABORT_ALL;
        }
        default:
            if (tc != pc)
                return WM_NOMATCH;
            continue;
        }
    }
    return *text ? WM_NOMATCH : WM_MATCH;
}

static bool wild(const char *pattern, const char *text, bool pathname)
{
    const unsigned char *p = (const unsigned char *)pattern;
    return dowild(p, (const unsigned char *)text, p, pathname) == WM_MATCH;
}

bool ing_wildmatch(const char *pattern, const char *text)
{
    return wild(pattern, text, true);
}

/* ---- Pattern lists ----------------------------------------------------------------------- */

typedef struct {
    char *pat;      /* as written, minus '!', a leading '/' and a trailing '/' */
    char *line_txt; /* the line as written (for reasons) */
    int line;
    bool negate;
    bool dir_only;
    bool basename;  /* no '/' in the pattern: match the entry's name */
} ing_pattern;

struct ing_ignore {
    char *origin;
    ing_pattern *v; /* (n) */
    size_t n;
};

void ing_ignore_destroy(ing_ignore *ig)
{
    if (!ig)
        return;
    for (size_t i = 0; i < ig->n; i++) {
        free(ig->v[i].pat);
        free(ig->v[i].line_txt);
    }
    free(ig->v);
    free(ig->origin);
    free(ig);
}

static loupe_status add_line(ing_ignore *ig, const char *s, size_t n, int line, loupe_err *err)
{
    if (n && s[n - 1] == '\r')
        n--;
    if (!n || s[0] == '#')
        return LOUPE_OK;
    /* Trailing spaces go unless escaped: count the backslashes before each space. */
    while (n && s[n - 1] == ' ') {
        size_t k = 0;
        while (k + 1 < n && s[n - 2 - k] == '\\')
            k++;
        if (k % 2)
            break; /* "\ " keeps this space (and the rest before it) */
        n--;
    }
    if (!n)
        return LOUPE_OK;
    ing_pattern pt = {0};
    pt.line = line;
    pt.line_txt = strndup(s, n);
    if (s[0] == '!') {
        pt.negate = true;
        s++;
        n--;
    }
    if (n && s[n - 1] == '/') {
        pt.dir_only = true;
        n--;
    }
    pt.basename = memchr(s, '/', n) == NULL;
    if (n && s[0] == '/') {
        s++;
        n--;
    }
    pt.pat = strndup(s, n);
    if (!pt.pat || !pt.line_txt) {
        free(pt.pat);
        free(pt.line_txt);
        return loupe_fail(err, LOUPE_ERR_NOMEM, "%s: out of memory", ig->origin);
    }
    if (!n) { /* "/" or "!" alone: git ignores it */
        free(pt.pat);
        free(pt.line_txt);
        return LOUPE_OK;
    }
    if (ig->n % 16 == 0) {
        ing_pattern *v = realloc(ig->v, (ig->n + 16) * sizeof *v);
        if (!v) {
            free(pt.pat);
            free(pt.line_txt);
            return loupe_fail(err, LOUPE_ERR_NOMEM, "%s: out of memory", ig->origin);
        }
        ig->v = v;
    }
    ig->v[ig->n++] = pt;
    return LOUPE_OK;
}

loupe_status ing_ignore_parse(const char *text, size_t len, const char *origin, ing_ignore **out,
                              loupe_err *err)
{
    loupe_status rc = LOUPE_OK;
    *out = NULL;
    ing_ignore *ig = calloc(1, sizeof *ig);
    if (!ig || !(ig->origin = strdup(origin ? origin : "patterns"))) {
        rc = loupe_fail(err, LOUPE_ERR_NOMEM, "out of memory reading %s", origin);
        goto done;
    }
    size_t start = 0;
    int line = 1;
    for (size_t i = 0; i <= len; i++) {
        if (i == len || text[i] == '\n') {
            if ((rc = add_line(ig, text + start, i - start, line, err)))
                goto done;
            start = i + 1;
            line++;
        }
    }
    *out = ig;
    ig = NULL;
done:
    ing_ignore_destroy(ig);
    return rc;
}

int ing_ignore_match(const ing_ignore *ig, const char *rel, bool is_dir, char *why, size_t cap)
{
    if (!ig)
        return 0;
    const char *base = strrchr(rel, '/');
    base = base ? base + 1 : rel;
    for (size_t i = ig->n; i-- > 0;) {
        const ing_pattern *pt = &ig->v[i];
        if (pt->dir_only && !is_dir)
            continue;
        bool m = pt->basename ? wild(pt->pat, base, false) : wild(pt->pat, rel, true);
        if (!m)
            continue;
        if (why && cap)
            snprintf(why, cap, "%s:%d: %s", ig->origin, pt->line, pt->line_txt);
        return pt->negate ? -1 : 1;
    }
    return 0;
}
