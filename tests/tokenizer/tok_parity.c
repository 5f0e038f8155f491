/* Tokenizer parity checker (driven by parity.sh).
 *
 *   tok_parity MODEL.gguf CORPUS.bin REF_IDS.txt CHAT_REF.json llama3|chatml
 *   tok_parity --mkgguf TOKENIZER.json TOKENIZER_CONFIG.json OUT.gguf
 *
 * For every document of the corpus (gen_corpus.js format) compares loupe's ids with the
 * reference's line (ref_tokenize.js), and checks detokenize(tokenize(doc)) == doc byte for byte.
 * On the whole corpus it checks that tokenizing between every documented split point, and
 * rt_tokenize_parallel with several thread counts, give the serial ids. It checks the chat
 * format detected from the model and that rt_chat_render_text reproduces the reference's
 * apply_chat_template output, and that the chat ids equal tokenize-with-specials of that text.
 * Prints a summary line with the counts; exits 0 only if every id and byte matched. */
#include "common/test_util.h"
#include "runtime/runtime.h"

#include <json-c/json.h>
#include <stdlib.h>
#include <string.h>

static char *read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = malloc((size_t)n + 1);
    if (buf && fread(buf, 1, (size_t)n, f) != (size_t)n) {
        free(buf);
        buf = NULL;
    }
    fclose(f);
    if (buf) {
        buf[n] = '\0';
        *len = (size_t)n;
    }
    return buf;
}

/* Prints a token as escaped text, for mismatch reports. */
static void show_token(const rt_tokenizer *t, int32_t id)
{
    size_t n;
    const char *b = rt_token_bytes(t, id, &n);
    fprintf(stderr, " %d:'", id);
    for (size_t i = 0; b && i < n; i++) {
        unsigned char c = (unsigned char)b[i];
        if (c >= 0x20 && c != '\'' && c != '\\' && c != 0x7F)
            fputc(c, stderr);
        else
            fprintf(stderr, "\\x%02X", c);
    }
    fputc('\'', stderr);
}

static void show_ids(const rt_tokenizer *t, const char *what, const int32_t *ids, size_t n,
                     size_t at)
{
    fprintf(stderr, "  %s:", what);
    size_t from = at > 4 ? at - 4 : 0;
    for (size_t i = from; i < n && i < at + 6; i++) {
        if (i == at)
            fprintf(stderr, " >>");
        show_token(t, ids[i]);
    }
    fputc('\n', stderr);
}

static bool is_split(const char *p, size_t len, size_t i)
{
    const uint8_t *u = (const uint8_t *)p;
    bool l = ((u[i - 1] | 0x20) >= 'a') && ((u[i - 1] | 0x20) <= 'z');
    bool r = i + 1 < len && ((u[i + 1] | 0x20) >= 'a') && ((u[i + 1] | 0x20) <= 'z');
    return (u[i - 1] == '\n' && u[i] > 0x20 && u[i] < 0x7F) || (u[i] == ' ' && l && r);
}

static const char *const chat_specials[] = {"<|begin_of_text|>", "<|start_header_id|>",
                                            "<|end_header_id|>", "<|eot_id|>", "<|im_start|>",
                                            "<|im_end|>"};

static void check_chat(const rt_gguf *g, const rt_tokenizer *t, const char *path,
                       rt_chat_format want_f)
{
    rt_chat_format f = want_f;
    loupe_err err = {0};
    CHECK_MSG(rt_chat_format_detect(g, t, &f, &err) == LOUPE_OK && f == want_f,
              "chat format detected: %s, expected %s (%s)", rt_chat_format_name(f),
              rt_chat_format_name(want_f), loupe_err_message(&err));
    json_object *root = json_object_from_file(path);
    CHECK_MSG(root && json_object_is_type(root, json_type_array), "%s: not a JSON array", path);
    size_t n_cases = root ? json_object_array_length(root) : 0, n_ok = 0;
    for (size_t c = 0; c < n_cases; c++) {
        json_object *cs = json_object_array_get_idx(root, c), *msgs, *text;
        json_object_object_get_ex(cs, "messages", &msgs);
        json_object_object_get_ex(cs, "text", &text);
        size_t n = json_object_array_length(msgs);
        rt_chat_msg m[16];
        for (size_t i = 0; i < n && i < 16; i++) {
            json_object *mi = json_object_array_get_idx(msgs, i), *role, *content;
            json_object_object_get_ex(mi, "role", &role);
            json_object_object_get_ex(mi, "content", &content);
            const char *r = json_object_get_string(role);
            m[i].role = !strcmp(r, "system") ? RT_ROLE_SYSTEM
                        : !strcmp(r, "user") ? RT_ROLE_USER : RT_ROLE_ASSISTANT;
            m[i].text = json_object_get_string(content);
            m[i].len = (size_t)json_object_get_string_len(content);
        }
        char *s = NULL;
        CHECK(rt_chat_render_text(f, m, n, true, &s, &err) == LOUPE_OK);
        const char *want = json_object_get_string(text);
        bool same = s && !strcmp(s, want);
        CHECK_MSG(same, "chat case %zu: loupe renders\n%s\nthe template renders\n%s", c,
                  s ? s : "(null)", want);
        /* ids == tokenize-with-specials(text) */
        rt_ids a, b;
        rt_ids_init(&a);
        rt_ids_init(&b);
        CHECK(rt_chat_render(t, f, m, n, true, &a, &err) == LOUPE_OK);
        for (const char *p = want; *p;) {
            const char *next = NULL;
            size_t which = 0;
            for (size_t i = 0; i < sizeof chat_specials / sizeof chat_specials[0]; i++) {
                const char *q = strstr(p, chat_specials[i]);
                if (q && (!next || q < next)) {
                    next = q;
                    which = i;
                }
            }
            size_t plain = next ? (size_t)(next - p) : strlen(p);
            CHECK(rt_tokenize(t, p, plain, &b, &err) == LOUPE_OK);
            p += plain;
            if (next) {
                rt_ids_push(&b, rt_tokenizer_find_special(t, chat_specials[which]), &err);
                p += strlen(chat_specials[which]);
            }
        }
        bool ids_same = a.n == b.n && !memcmp(a.ids, b.ids, a.n * sizeof *a.ids);
        CHECK_MSG(ids_same, "chat case %zu: ids differ from tokenize-with-specials", c);
        n_ok += same && ids_same;
        rt_ids_free(&a);
        rt_ids_free(&b);
        free(s);
    }
    fprintf(stderr, "chat: %zu of %zu conversations render exactly as the template\n", n_ok,
            n_cases);
    CHECK(n_cases >= 3);
    json_object_put(root);
}

/* A tokenizer-only GGUF straight from tokenizer.json (used while `loupe mkmodel` is missing). */
static int make_gguf(const char *json, const char *config, const char *out)
{
    loupe_err err = {0};
    rt_gguf_writer *w = NULL;
    uint32_t n_vocab = 0;
    loupe_status st = rt_gguf_writer_create(out, &w, &err);
    if (!st)
        st = rt_gguf_writer_set_str(w, "general.architecture", "llama", &err);
    if (!st)
        st = rt_tokenizer_json_to_gguf(json, config, w, &n_vocab, &err);
    if (!st)
        st = rt_gguf_writer_finish(w, &err);
    rt_gguf_writer_destroy(w);
    if (st) {
        fprintf(stderr, "tok_parity: %s\n", loupe_err_message(&err));
        return 1;
    }
    fprintf(stderr, "tok_parity: wrote %s (%u tokens)\n", out, n_vocab);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc == 5 && !strcmp(argv[1], "--mkgguf"))
        return make_gguf(argv[2], argv[3], argv[4]);
    rt_chat_format want_f;
    if (argc != 6 || !rt_chat_format_parse(argv[5], &want_f)) {
        fprintf(stderr, "usage: tok_parity MODEL.gguf CORPUS.bin REF_IDS.txt CHAT_REF.json "
                        "llama3|chatml\n");
        return 2;
    }
    loupe_err err = {0};
    rt_gguf *g = NULL;
    rt_tokenizer *t = NULL;
    if (rt_gguf_open(argv[1], &g, &err) || rt_tokenizer_load(g, &t, &err)) {
        fprintf(stderr, "tok_parity: %s\n", loupe_err_message(&err));
        return 1;
    }
    size_t corpus_len, ref_len;
    char *corpus = read_file(argv[2], &corpus_len), *ref = read_file(argv[3], &ref_len);
    if (!corpus || !ref) {
        fprintf(stderr, "tok_parity: cannot read %s\n", corpus ? argv[3] : argv[2]);
        return 1;
    }
    char *all = malloc(corpus_len); /* the documents back to back */
    size_t all_len = 0, n_docs = 0, n_bytes = 0, n_ids = 0, n_bad_docs = 0, n_bad_ids = 0;
    size_t n_bad_trip = 0, reports = 0;
    char *line = ref;
    rt_ids ids;
    rt_ids_init(&ids);
    for (size_t off = 0; off + 4 <= corpus_len;) {
        uint32_t n;
        memcpy(&n, corpus + off, 4);
        const char *doc = corpus + off + 4;
        off += 4 + n;
        memcpy(all + all_len, doc, n);
        all_len += n;

        /* the reference's ids for this document */
        char *eol = strchr(line, '\n');
        if (!eol) {
            fprintf(stderr, "tok_parity: the reference has fewer lines than the corpus has "
                            "documents\n");
            return 1;
        }
        *eol = '\0';
        size_t n_ref = 0, cap = 1024;
        int32_t *want = malloc(cap * sizeof *want);
        for (char *p = line, *end; *p; p = end) {
            long v = strtol(p, &end, 10);
            if (end == p)
                break;
            if (n_ref == cap)
                want = realloc(want, (cap *= 2) * sizeof *want);
            want[n_ref++] = (int32_t)v;
        }
        line = eol + 1;

        ids.n = 0;
        CHECK(rt_tokenize(t, doc, n, &ids, &err) == LOUPE_OK);
        size_t k = 0;
        while (k < ids.n && k < n_ref && ids.ids[k] == want[k])
            k++;
        n_docs++;
        n_bytes += n;
        n_ids += n_ref;
        if (k != ids.n || k != n_ref) {
            n_bad_docs++;
            size_t bad = 0;
            for (size_t i = 0; i < ids.n && i < n_ref; i++)
                bad += ids.ids[i] != want[i];
            n_bad_ids += bad + (ids.n > n_ref ? ids.n - n_ref : n_ref - ids.n);
            if (reports++ < 5) {
                fprintf(stderr, "document %zu: first difference at id %zu (loupe %zu ids, "
                                "reference %zu)\n", n_docs - 1, k, ids.n, n_ref);
                show_ids(t, "loupe    ", ids.ids, ids.n, k);
                show_ids(t, "reference", want, n_ref, k);
            }
        }
        free(want);

        /* round trip */
        size_t m = 0;
        bool same = true;
        for (size_t i = 0; i < ids.n && same; i++) {
            size_t tl;
            const char *tb = rt_token_bytes(t, ids.ids[i], &tl);
            same = m + tl <= n && !memcmp(doc + m, tb, tl);
            m += tl;
        }
        if (!same || m != n) {
            n_bad_trip++;
            fprintf(stderr, "document %zu: detokenize(tokenize(doc)) != doc\n", n_docs - 1);
        }
    }
    fprintf(stderr, "parity (%s): %zu documents, %zu bytes, %zu ids compared, %zu ids mismatched in "
                    "%zu documents; round trip failed in %zu\n",
            rt_tokenizer_pre_name(t), n_docs, n_bytes, n_ids, n_bad_ids, n_bad_docs, n_bad_trip);
    CHECK(n_bad_docs == 0 && n_bad_trip == 0);
    CHECK_MSG(n_bytes >= 1000000, "the corpus has only %zu bytes", n_bytes);

    /* whole corpus: every split point, and the parallel tokenizer */
    rt_ids serial, pieces, par;
    rt_ids_init(&serial);
    rt_ids_init(&pieces);
    CHECK(rt_tokenize(t, all, all_len, &serial, &err) == LOUPE_OK);
    size_t start = 0, n_cuts = 0;
    for (size_t i = 1; i <= all_len; i++)
        if (i == all_len || is_split(all, all_len, i)) {
            CHECK(rt_tokenize(t, all + start, i - start, &pieces, &err) == LOUPE_OK);
            start = i;
            n_cuts++;
        }
    CHECK_MSG(pieces.n == serial.n && !memcmp(pieces.ids, serial.ids, serial.n * 4),
              "tokenizing between the %zu split points differs from the whole corpus", n_cuts);
    /* four copies, so that the parallel tokenizer makes many chunks */
    size_t big_len = all_len * 4;
    char *big = malloc(big_len);
    for (int i = 0; i < 4; i++)
        memcpy(big + (size_t)i * all_len, all, all_len);
    rt_ids big_serial;
    rt_ids_init(&big_serial);
    CHECK(rt_tokenize(t, big, big_len, &big_serial, &err) == LOUPE_OK);
    int threads[] = {2, 3, 7};
    for (int i = 0; i < 3; i++) {
        rt_ids_init(&par);
        CHECK(rt_tokenize_parallel(t, big, big_len, threads[i], &par, &err) == LOUPE_OK);
        CHECK_MSG(par.n == big_serial.n && !memcmp(par.ids, big_serial.ids, par.n * 4),
                  "rt_tokenize_parallel with %d threads differs from serial", threads[i]);
        rt_ids_free(&par);
    }
    fprintf(stderr, "split points: %zu cuts, parallel == serial on %zu bytes\n", n_cuts, big_len);

    check_chat(g, t, argv[4], want_f);

    rt_ids_free(&ids);
    rt_ids_free(&serial);
    rt_ids_free(&pieces);
    rt_ids_free(&big_serial);
    free(big);
    free(all);
    free(corpus);
    free(ref);
    rt_tokenizer_destroy(t);
    rt_gguf_close(g);
    return test_summary("tok_parity");
}
