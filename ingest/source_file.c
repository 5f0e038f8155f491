/*
 * Files and stdin → document text. Memory stays bounded by --max-file-size: a regular file whose
 * size is over the limit is refused from its stat alone (a sparse 2 GiB file costs nothing), and
 * streams (stdin, FIFOs, files that grow while read) are read at most limit + 1 bytes.
 */
#include "ingest/ing_impl.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static loupe_status over_limit(const ing_opts *o, uint64_t size, bool at_least, loupe_err *why)
{
    char have[32], lim[32];
    ing_fmt_size(size, have, sizeof have);
    ing_fmt_size(o->max_file_size, lim, sizeof lim);
    return loupe_fail(why, LOUPE_ERR_RANGE, "%s%s is over the --max-file-size limit of %s",
                      at_least ? "more than " : "", at_least ? lim : have, lim);
}

/* Reads fd to the end, at most max + 1 bytes (so "over the limit" is detectable). */
static loupe_status read_all(int fd, uint64_t size_hint, uint64_t max, char **out, size_t *len,
                             loupe_err *why)
{
    size_t cap = size_hint && size_hint <= max ? (size_t)size_hint + 1 : 65536;
    size_t n = 0;
    char *p = malloc(cap);
    if (!p)
        return loupe_fail(why, LOUPE_ERR_NOMEM, "out of memory");
    for (;;) {
        if (n == cap) {
            if ((uint64_t)n > max) /* read max + 1 already */
                break;
            size_t ncap = cap * 2;
            if ((uint64_t)ncap > max + 1)
                ncap = (size_t)max + 1;
            if (ncap <= cap)
                ncap = cap + 1;
            char *np = realloc(p, ncap);
            if (!np) {
                free(p);
                return loupe_fail(why, LOUPE_ERR_NOMEM, "out of memory");
            }
            p = np;
            cap = ncap;
        }
        ssize_t r = read(fd, p + n, cap - n);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            int e = errno;
            free(p);
            return loupe_fail(why, LOUPE_ERR_IO, "read failed: %s", strerror(e));
        }
        if (r == 0)
            break;
        n += (size_t)r;
    }
    *out = p;
    *len = n;
    return LOUPE_OK;
}

loupe_status ing_file_load(const ing_opts *o, const char *fs_path, ing_doc *d, loupe_err *why)
{
    loupe_status rc = LOUPE_OK;
    char *data = NULL;
    size_t len = 0;
    int fd = open(fs_path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
    if (fd < 0)
        return loupe_fail(why, errno == ENOENT ? LOUPE_ERR_NOT_FOUND : LOUPE_ERR_IO,
                          "cannot open: %s", strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0) {
        rc = loupe_fail(why, LOUPE_ERR_IO, "cannot stat: %s", strerror(errno));
        goto done;
    }
    if (S_ISDIR(st.st_mode)) {
        rc = loupe_fail(why, LOUPE_ERR_INVALID, "is a directory");
        goto done;
    }
    bool regular = S_ISREG(st.st_mode);
    if (regular && (uint64_t)st.st_size > o->max_file_size) {
        d->bytes = (uint64_t)st.st_size;
        rc = over_limit(o, (uint64_t)st.st_size, false, why);
        goto done;
    }
    if ((rc = read_all(fd, regular ? (uint64_t)st.st_size : 0, o->max_file_size, &data, &len,
                       why)))
        goto done;
    d->bytes = len;
    if ((uint64_t)len > o->max_file_size) {
        rc = over_limit(o, len, true, why);
        goto done;
    }
    rc = ing_doc_set_bytes(d, data, len, why);
done:
    free(data);
    close(fd);
    return rc;
}

loupe_status ing_stdin_load(const ing_opts *o, ing_doc *d, loupe_err *why)
{
    char *data = NULL;
    size_t len = 0;
    d->kind = ING_SRC_STDIN;
    loupe_status rc = read_all(o->stdin_fd, 0, o->max_file_size, &data, &len, why);
    if (rc)
        return rc;
    d->bytes = len;
    if ((uint64_t)len > o->max_file_size)
        rc = over_limit(o, len, true, why);
    else
        rc = ing_doc_set_bytes(d, data, len, why);
    free(data);
    return rc;
}
