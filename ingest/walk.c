/*
 * Directory walks: depth-first, entries sorted bytewise (strcmp), directories and files
 * interleaved in that order — the document order LAYOUT.md fixes.
 *
 * What is skipped, each with a record and its reason (nothing silently):
 *   - `.git` entries (the repository's own data);
 *   - entries matched by ignore rules: per directory `.gitignore` and `.ignore` (`.ignore` wins
 *     within a directory), the enclosing repository's ancestors' files and `.git/info/exclude`
 *     (lowest), deepest directory first — git's order (see gitignore.c). An excluded directory is
 *     one record; its contents are never read, so nothing below it can be re-included;
 *   - `--exclude` globs, then files not matching any `--include` glob (both relative to the walked
 *     source, gitignore syntax);
 *   - symbolic links that lead back to a directory being walked (a loop: dev/inode of every
 *     directory on the current path are kept) or to one already walked (dev/inode of every
 *     directory entered are kept), broken links, and things that are not regular files;
 *   - files that are binary, over --max-file-size, or unreadable (ing_file_load's reasons).
 * Symbolic links are followed otherwise (git records them as links instead; documented skip).
 */
#include "ingest/ing_impl.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define MAX_DEPTH 256
#define MAX_IGNORE_FILE (1u << 20)

typedef struct {
    ing_ignore *gitignore;
    ing_ignore *ignore;   /* `.ignore`: higher priority than .gitignore in the same directory */
    size_t base_len;      /* its directory = the first base_len bytes of the canonical path */
} walk_level;

typedef struct {
    dev_t dev;
    ino_t ino;
} dir_id;

typedef struct {
    ing_ctx *c;
    const ing_opts *o;
    int source;
    ing_buf fs;            /* path to open: the source as given + "/" + rel */
    ing_buf disp;          /* path as laid out */
    ing_buf canon;         /* canonical root + "/" + rel: ignore rules match against this */
    size_t root_canon_len;
    walk_level *levels;    /* (n_levels) from the repository root down to the current dir */
    size_t n_levels, cap_levels;
    ing_ignore *info_exclude; /* .git/info/exclude of the enclosing repository */
    size_t info_base_len;
    ing_ignore *exclude, *include;
    dir_id *stack;         /* (depth) directories on the current path */
    size_t depth;
    dir_id *seen;          /* (cap_seen) open-addressing set of directories entered */
    size_t n_seen, cap_seen;
} walker;

/* ---- Small helpers ----------------------------------------------------------------------- */

static bool seen_insert(walker *w, dir_id id, bool *was_there)
{
    if ((w->n_seen + 1) * 2 > w->cap_seen) {
        size_t cap = w->cap_seen ? w->cap_seen * 2 : 256;
        dir_id *v = calloc(cap, sizeof *v);
        if (!v)
            return false;
        for (size_t i = 0; i < w->cap_seen; i++) {
            dir_id e = w->seen[i];
            if (!e.dev && !e.ino)
                continue;
            size_t h = ((size_t)e.ino * 0x9E3779B97F4A7C15ull ^ (size_t)e.dev) & (cap - 1);
            while (v[h].dev || v[h].ino)
                h = (h + 1) & (cap - 1);
            v[h] = e;
        }
        free(w->seen);
        w->seen = v;
        w->cap_seen = cap;
    }
    size_t h = ((size_t)id.ino * 0x9E3779B97F4A7C15ull ^ (size_t)id.dev) & (w->cap_seen - 1);
    while (w->seen[h].dev || w->seen[h].ino) {
        if (w->seen[h].dev == id.dev && w->seen[h].ino == id.ino) {
            *was_there = true;
            return true;
        }
        h = (h + 1) & (w->cap_seen - 1);
    }
    w->seen[h] = id;
    w->n_seen++;
    *was_there = false;
    return true;
}

static void buf_cut(ing_buf *b, size_t n)
{
    b->n = n;
    if (b->p)
        b->p[n] = '\0';
}

/* Reads a small ignore file if present; NULL when absent or unreadable (not an error: git too
 * ignores what it cannot read). */
static loupe_status load_ignore(const char *path, const char *origin, ing_ignore **out,
                                loupe_err *err)
{
    *out = NULL;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return LOUPE_OK;
    struct stat st;
    loupe_status rc = LOUPE_OK;
    char *text = NULL;
    if (fstat(fd, &st) || !S_ISREG(st.st_mode) || (uint64_t)st.st_size > MAX_IGNORE_FILE)
        goto done;
    text = malloc((size_t)st.st_size + 1);
    if (!text) {
        rc = loupe_fail(err, LOUPE_ERR_NOMEM, "out of memory reading %s", path);
        goto done;
    }
    size_t got = 0;
    while (got < (size_t)st.st_size) {
        ssize_t r = read(fd, text + got, (size_t)st.st_size - got);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            break;
        got += (size_t)r;
    }
    rc = ing_ignore_parse(text, got, origin, out, err);
done:
    free(text);
    close(fd);
    return rc;
}

static void pop_level(walker *w);

static loupe_status push_level(walker *w, const char *dir_fs, const char *dir_disp,
                               size_t base_len)
{
    loupe_status rc = LOUPE_OK;
    if (w->n_levels == w->cap_levels) {
        size_t cap = w->cap_levels ? w->cap_levels * 2 : 16;
        walk_level *v = realloc(w->levels, cap * sizeof *v);
        if (!v)
            return loupe_fail(w->c->err, LOUPE_ERR_NOMEM, "out of memory walking %s", dir_disp);
        w->levels = v;
        w->cap_levels = cap;
    }
    walk_level *l = &w->levels[w->n_levels++];
    memset(l, 0, sizeof *l);
    l->base_len = base_len;
    if (w->o->no_ignore)
        return LOUPE_OK;
    ing_buf p = {0}, origin = {0};
    const char *names[2] = {".gitignore", ".ignore"};
    for (int k = 0; k < 2; k++) {
        buf_cut(&p, 0);
        buf_cut(&origin, 0);
        ing_buf_printf(&p, "%s/%s", dir_fs, names[k]);
        if (*dir_disp)
            ing_buf_printf(&origin, "%s/%s", dir_disp, names[k]);
        else
            ing_buf_puts(&origin, names[k]);
        if (p.oom || origin.oom) {
            rc = loupe_fail(w->c->err, LOUPE_ERR_NOMEM, "out of memory walking %s", dir_disp);
            break;
        }
        if ((rc = load_ignore(p.p, origin.p, k ? &l->ignore : &l->gitignore, w->c->err)))
            break;
    }
    ing_buf_free(&p);
    ing_buf_free(&origin);
    if (rc)
        pop_level(w);
    return rc;
}

static void pop_level(walker *w)
{
    walk_level *l = &w->levels[--w->n_levels];
    ing_ignore_destroy(l->gitignore);
    ing_ignore_destroy(l->ignore);
}

/* 1 = ignored (reason in why), 0 = not. */
static int ignored(walker *w, bool is_dir, char *why, size_t cap)
{
    const char *canon = w->canon.p;
    for (size_t i = w->n_levels; i-- > 0;) {
        const walk_level *l = &w->levels[i];
        const char *rel = canon + l->base_len + 1;
        int m = ing_ignore_match(l->ignore, rel, is_dir, why, cap);
        if (!m)
            m = ing_ignore_match(l->gitignore, rel, is_dir, why, cap);
        if (m)
            return m > 0;
    }
    if (w->info_exclude)
        return ing_ignore_match(w->info_exclude, canon + w->info_base_len + 1, is_dir, why,
                                cap) > 0;
    return 0;
}

/* Finds the enclosing repository of the canonical root (an ancestor holding `.git`), loads its
 * info/exclude and the ignore files of the directories strictly between it and the root. */
static loupe_status load_ancestors(walker *w)
{
    if (w->o->no_ignore)
        return LOUPE_OK;
    const char *root = w->canon.p;
    size_t n = w->root_canon_len;
    loupe_status rc = LOUPE_OK;
    ing_buf p = {0};
    size_t repo_len = SIZE_MAX;
    /* Candidate prefixes end before a '/', plus the root itself; "" stands for "/". */
    for (size_t k = n + 1; k-- > 0;) {
        if (k != n && root[k] != '/')
            continue;
        buf_cut(&p, 0);
        ing_buf_put(&p, root, k);
        ing_buf_puts(&p, "/.git");
        struct stat st;
        if (!p.oom && lstat(p.p, &st) == 0) {
            repo_len = k;
            break;
        }
        if (k == 0)
            break;
    }
    if (repo_len == SIZE_MAX)
        goto done;
    buf_cut(&p, 0);
    ing_buf_put(&p, root, repo_len);
    ing_buf_puts(&p, "/.git/info/exclude");
    if (p.oom || (rc = load_ignore(p.p, ".git/info/exclude", &w->info_exclude, w->c->err)))
        goto done;
    w->info_base_len = repo_len;
    for (size_t k = repo_len; k < n; k++) {
        if (k != repo_len && root[k] != '/')
            continue;
        buf_cut(&p, 0);
        ing_buf_put(&p, root, k);
        if (p.oom) {
            rc = loupe_fail(w->c->err, LOUPE_ERR_NOMEM, "out of memory");
            goto done;
        }
        if ((rc = push_level(w, k ? p.p : "/", p.p, k)))
            goto done;
    }
done:
    ing_buf_free(&p);
    return rc;
}

static int cmp_names(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Reads the names in `fs_path` (minus . and ..), sorted bytewise. */
static loupe_status list_dir(DIR *dir, char ***out, size_t *n_out, loupe_err *err,
                             const char *disp)
{
    char **v = NULL;
    size_t n = 0, cap = 0;
    struct dirent *e;
    errno = 0;
    while ((e = readdir(dir))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
            continue;
        if (n == cap) {
            cap = cap ? cap * 2 : 64;
            char **nv = realloc(v, cap * sizeof *nv);
            if (!nv)
                goto oom;
            v = nv;
        }
        if (!(v[n] = strdup(e->d_name)))
            goto oom;
        n++;
    }
    qsort(v, n, sizeof *v, cmp_names);
    *out = v;
    *n_out = n;
    return LOUPE_OK;
oom:
    for (size_t i = 0; i < n; i++)
        free(v[i]);
    free(v);
    return loupe_fail(err, LOUPE_ERR_NOMEM, "out of memory listing %s", disp);
}

/* ---- The walk ---------------------------------------------------------------------------- */

static loupe_status walk_dir(walker *w, dir_id id);

/* A skip record for the current entry; `fmt` has exactly one %s, filled by `detail`. */
static loupe_status skip_entry(walker *w, const char *fmt, const char *detail)
{
    ing_doc *d = NULL;
    loupe_status rc = ing_doc_add(w->c, w->disp.p, w->source, &d);
    if (rc)
        return rc;
    char msg[1024];
    const char *pct = strstr(fmt, "%s");
    if (pct)
        snprintf(msg, sizeof msg, "%.*s%s%s", (int)(pct - fmt), fmt, detail, pct + 2);
    else
        snprintf(msg, sizeof msg, "%s", fmt);
    return ing_doc_skip(w->c, d, "%s", msg);
}

static loupe_status visit(walker *w, const char *name)
{
    loupe_status rc = LOUPE_OK;
    size_t fs_n = w->fs.n, disp_n = w->disp.n, canon_n = w->canon.n;
    ing_buf_putc(&w->fs, '/');
    ing_buf_puts(&w->fs, name);
    if (w->disp.n)
        ing_buf_putc(&w->disp, '/');
    ing_buf_puts(&w->disp, name);
    ing_buf_putc(&w->canon, '/');
    ing_buf_puts(&w->canon, name);
    if (w->fs.oom || w->disp.oom || w->canon.oom) {
        rc = loupe_fail(w->c->err, LOUPE_ERR_NOMEM, "out of memory walking %s", name);
        goto done;
    }
    if ((rc = ing_progress_tick(w->c, w->disp.p)))
        goto done;

    struct stat st;
    bool link = false;
    if (lstat(w->fs.p, &st) != 0) {
        rc = skip_entry(w, "cannot read: %s", strerror(errno));
        goto done;
    }
    if (S_ISLNK(st.st_mode)) {
        link = true;
        if (stat(w->fs.p, &st) != 0) {
            rc = skip_entry(w, "symbolic link to nothing readable (%s)", strerror(errno));
            goto done;
        }
    }
    bool is_dir = S_ISDIR(st.st_mode);
    if (!strcmp(name, ".git")) {
        rc = skip_entry(w, "%s", "version-control data (.git)");
        goto done;
    }
    char why[600];
    if (ignored(w, is_dir, why, sizeof why)) {
        rc = skip_entry(w, "ignored by %s", why);
        goto done;
    }
    const char *rel = w->canon.p + w->root_canon_len + 1;
    if (w->exclude && ing_ignore_match(w->exclude, rel, is_dir, why, sizeof why) > 0) {
        rc = skip_entry(w, "excluded by %s", why);
        goto done;
    }
    if (is_dir) {
        dir_id id = {st.st_dev, st.st_ino};
        for (size_t i = 0; i < w->depth; i++)
            if (w->stack[i].dev == id.dev && w->stack[i].ino == id.ino) {
                rc = skip_entry(w, "%s", "symbolic link loop (leads back to a directory above it)");
                goto done;
            }
        if (w->depth >= MAX_DEPTH) {
            rc = skip_entry(w, "%s", "directory nested deeper than 256 levels");
            goto done;
        }
        bool was = false;
        if (!seen_insert(w, id, &was)) {
            rc = loupe_fail(w->c->err, LOUPE_ERR_NOMEM, "out of memory walking %s", w->disp.p);
            goto done;
        }
        if (was) {
            rc = skip_entry(w, "%s", link ? "symbolic link to a directory already walked"
                                          : "directory already walked (bind mount or link)");
            goto done;
        }
        rc = walk_dir(w, id);
        goto done;
    }
    if (w->include && ing_ignore_match(w->include, rel, false, NULL, 0) <= 0) {
        rc = skip_entry(w, "%s", "not matched by any --include pattern");
        goto done;
    }
    if (!S_ISREG(st.st_mode)) {
        rc = skip_entry(w, "%s", "not a regular file (device, FIFO or socket)");
        goto done;
    }
    ing_doc *d = NULL;
    if ((rc = ing_doc_add(w->c, w->disp.p, w->source, &d)))
        goto done;
    loupe_err why_err = {0};
    d->bytes = (uint64_t)st.st_size;
    if (ing_file_load(w->o, w->fs.p, d, &why_err) != LOUPE_OK) {
        if (why_err.status == LOUPE_ERR_NOMEM) {
            rc = loupe_fail(w->c->err, LOUPE_ERR_NOMEM, "%s: %s", w->disp.p, why_err.msg);
            goto done;
        }
        rc = ing_doc_skip(w->c, d, "%s", why_err.msg);
        goto done;
    }
    w->c->prog.docs++;
    w->c->prog.bytes += d->text_bytes;
done:
    buf_cut(&w->fs, fs_n);
    buf_cut(&w->disp, disp_n);
    buf_cut(&w->canon, canon_n);
    return rc;
}

static loupe_status walk_dir(walker *w, dir_id id)
{
    loupe_status rc = LOUPE_OK;
    char **names = NULL;
    size_t n = 0;
    bool entered = false;
    DIR *dir = opendir(w->fs.p);
    if (!dir) {
        rc = skip_entry(w, "cannot open directory: %s", strerror(errno));
        goto done;
    }
    rc = list_dir(dir, &names, &n, w->c->err, w->disp.p);
    closedir(dir);
    if (rc || (rc = push_level(w, w->fs.p, w->disp.p, w->canon.n)))
        goto done;
    entered = true;
    w->stack[w->depth++] = id;
    for (size_t i = 0; i < n && !rc; i++)
        rc = visit(w, names[i]);
done:
    if (entered) {
        w->depth--;
        pop_level(w);
    }
    for (size_t i = 0; i < n; i++)
        free(names[i]);
    free(names);
    return rc;
}

static loupe_status parse_globs(const char *const *globs, size_t n, const char *flag,
                                ing_ignore **out, loupe_err *err)
{
    *out = NULL;
    if (!n)
        return LOUPE_OK;
    ing_buf b = {0};
    for (size_t i = 0; i < n; i++) {
        ing_buf_puts(&b, globs[i]);
        ing_buf_putc(&b, '\n');
    }
    if (b.oom) {
        ing_buf_free(&b);
        return loupe_fail(err, LOUPE_ERR_NOMEM, "out of memory");
    }
    loupe_status rc = ing_ignore_parse(b.p, b.n, flag, out, err);
    ing_buf_free(&b);
    return rc;
}

loupe_status ing_walk(ing_ctx *c, const char *fs_root, const char *disp_root, int source)
{
    loupe_status rc = LOUPE_OK;
    walker w = {0};
    w.c = c;
    w.o = c->o;
    w.source = source;
    char *canon = realpath(fs_root, NULL);
    if (!canon) {
        rc = loupe_fail(c->err, LOUPE_ERR_IO, "%s: cannot resolve the directory: %s", disp_root,
                        strerror(errno));
        goto done;
    }
    ing_buf_puts(&w.fs, fs_root);
    ing_buf_puts(&w.disp, disp_root);
    ing_buf_puts(&w.canon, strcmp(canon, "/") ? canon : "");
    w.root_canon_len = w.canon.n;
    w.stack = calloc(MAX_DEPTH + 1, sizeof *w.stack);
    if (w.fs.oom || w.disp.oom || w.canon.oom || !w.stack) {
        rc = loupe_fail(c->err, LOUPE_ERR_NOMEM, "out of memory walking %s", disp_root);
        goto done;
    }
    if ((rc = parse_globs(w.o->exclude, w.o->n_exclude, "--exclude", &w.exclude, c->err)) ||
        (rc = parse_globs(w.o->include, w.o->n_include, "--include", &w.include, c->err)) ||
        (rc = load_ancestors(&w)))
        goto done;
    struct stat st;
    if (stat(fs_root, &st) != 0) {
        rc = loupe_fail(c->err, LOUPE_ERR_IO, "%s: %s", disp_root, strerror(errno));
        goto done;
    }
    dir_id id = {st.st_dev, st.st_ino};
    bool was = false;
    if (!seen_insert(&w, id, &was)) {
        rc = loupe_fail(c->err, LOUPE_ERR_NOMEM, "out of memory walking %s", disp_root);
        goto done;
    }
    rc = walk_dir(&w, id);
done:
    while (w.n_levels)
        pop_level(&w);
    free(w.levels);
    ing_ignore_destroy(w.info_exclude);
    ing_ignore_destroy(w.exclude);
    ing_ignore_destroy(w.include);
    free(w.stack);
    free(w.seen);
    ing_buf_free(&w.fs);
    ing_buf_free(&w.disp);
    ing_buf_free(&w.canon);
    free(canon);
    return rc;
}
