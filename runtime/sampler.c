/*
 * Sampling: logits row → token id. Chain: repetition penalty → temperature → top-k → top-p →
 * min-p → draw from the renormalised survivors with a seeded RNG (splitmix64). temp = 0 is greedy.
 *
 * Invariants: every buffer (candidates, penalty history) is sized at creation for n_vocab and
 * repeat_last_n, so sampling never allocates; the same seed and inputs give the same tokens.
 */
#include "runtime/model_impl.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    float logit; /* after penalty and temperature; then the probability */
    int32_t id;
} rt_cand;

struct rt_sampler {
    rt_sampler_params p;
    uint32_t n_vocab;
    uint64_t rng;
    rt_cand *cand;   /* (n_vocab) */
    int32_t *hist;   /* (repeat_last_n) ring buffer of recent tokens */
    uint32_t n_hist, hist_pos;
};

void rt_sampler_params_init(rt_sampler_params *p)
{
    p->temp = 0.8f;
    p->top_k = 40;
    p->top_p = 0.95f;
    p->min_p = 0.05f;
    p->repeat_penalty = 1.0f;
    p->repeat_last_n = 64;
    p->seed = 0;
}

loupe_status rt_sampler_create(const rt_sampler_params *p, uint32_t n_vocab, rt_sampler **out,
                               loupe_err *err)
{
    *out = NULL;
    if (n_vocab == 0)
        return loupe_fail(err, LOUPE_ERR_INVALID, "a sampler needs a vocabulary");
    rt_sampler *s = calloc(1, sizeof *s);
    if (!s)
        return loupe_fail(err, LOUPE_ERR_NOMEM, "out of memory creating a sampler");
    s->p = *p;
    s->n_vocab = n_vocab;
    s->rng = p->seed;
    s->cand = malloc((size_t)n_vocab * sizeof *s->cand);
    s->hist = malloc(((size_t)p->repeat_last_n + 1) * sizeof *s->hist);
    if (!s->cand || !s->hist) {
        rt_sampler_destroy(s);
        return loupe_fail(err, LOUPE_ERR_NOMEM, "out of memory creating a sampler of %u tokens",
                          n_vocab);
    }
    *out = s;
    return LOUPE_OK;
}

void rt_sampler_destroy(rt_sampler *s)
{
    if (!s)
        return;
    free(s->cand);
    free(s->hist);
    free(s);
}

void rt_sampler_accept(rt_sampler *s, int32_t id)
{
    uint32_t cap = s->p.repeat_last_n;
    if (cap == 0)
        return;
    s->hist[s->hist_pos] = id;
    s->hist_pos = (s->hist_pos + 1) % cap;
    if (s->n_hist < cap)
        s->n_hist++;
}

void rt_sampler_reset(rt_sampler *s)
{
    s->n_hist = 0;
    s->hist_pos = 0;
}

static uint64_t splitmix64(uint64_t *state)
{
    uint64_t z = (*state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static int cand_desc(const void *a, const void *b)
{
    const rt_cand *x = a, *y = b;
    if (x->logit != y->logit)
        return x->logit < y->logit ? 1 : -1;
    return (x->id > y->id) - (x->id < y->id); /* ties: lower id first, deterministic */
}

/* Moves the k best candidates of c[0..n) to the front (quickselect, three-way). */
static void cand_select(rt_cand *c, size_t n, size_t k)
{
    size_t lo = 0, hi = n;
    while (hi - lo > 1) {
        rt_cand pivot = c[lo + (hi - lo) / 2];
        size_t gt = lo, i = lo, lt = hi;
        while (i < lt) {
            int r = cand_desc(&c[i], &pivot);
            rt_cand tmp = c[i];
            if (r < 0) {
                c[i++] = c[gt];
                c[gt++] = tmp;
            } else if (r > 0) {
                c[i] = c[--lt];
                c[lt] = tmp;
            } else {
                i++;
            }
        }
        if (k < gt)
            hi = gt;
        else if (k > lt)
            lo = lt;
        else
            return;
    }
}

/* Fills s->cand with penalised logits (by id). */
static void load_logits(rt_sampler *s, const float *logits)
{
    for (uint32_t i = 0; i < s->n_vocab; i++) {
        s->cand[i].logit = logits[i];
        s->cand[i].id = (int32_t)i;
    }
    float r = s->p.repeat_penalty;
    if (r == 1.0f || r <= 0)
        return;
    for (uint32_t j = 0; j < s->n_hist; j++) {
        int32_t id = s->hist[j];
        if (id < 0 || (uint32_t)id >= s->n_vocab)
            continue;
        bool seen = false; /* penalise each distinct token once */
        for (uint32_t e = 0; e < j && !seen; e++)
            seen = s->hist[e] == id;
        if (seen)
            continue;
        float *l = &s->cand[id].logit;
        *l = *l > 0 ? *l / r : *l * r;
    }
}

static size_t filter(rt_sampler *s, const float *logits)
{
    const rt_sampler_params *p = &s->p;
    rt_cand *c = s->cand;
    size_t n = s->n_vocab;
    load_logits(s, logits);
    if (p->temp <= 0) { /* greedy: the argmax alone */
        size_t best = 0;
        for (size_t i = 1; i < n; i++)
            if (c[i].logit > c[best].logit)
                best = i;
        c[0] = c[best];
        c[0].logit = 1.0f;
        return 1;
    }
    for (size_t i = 0; i < n; i++)
        c[i].logit /= p->temp;
    if (p->top_k > 0 && (size_t)p->top_k < n) {
        cand_select(c, n, (size_t)p->top_k);
        n = (size_t)p->top_k;
    }
    qsort(c, n, sizeof *c, cand_desc);
    /* Softmax over the survivors, most probable first. */
    float mx = c[0].logit;
    double sum = 0;
    for (size_t i = 0; i < n; i++) {
        c[i].logit = expf(c[i].logit - mx);
        sum += c[i].logit;
    }
    for (size_t i = 0; i < n; i++)
        c[i].logit = (float)(c[i].logit / sum);
    if (p->top_p < 1.0f) { /* smallest prefix whose mass reaches top_p */
        double cum = 0;
        size_t keep = n;
        for (size_t i = 0; i < n; i++) {
            cum += c[i].logit;
            if (cum >= p->top_p) {
                keep = i + 1;
                break;
            }
        }
        n = keep;
    }
    if (p->min_p > 0) { /* p ≥ min_p · p_max, p_max = c[0] */
        float thr = p->min_p * c[0].logit;
        size_t keep = 1;
        while (keep < n && c[keep].logit >= thr)
            keep++;
        n = keep;
    }
    sum = 0;
    for (size_t i = 0; i < n; i++)
        sum += c[i].logit;
    for (size_t i = 0; i < n; i++)
        c[i].logit = (float)(c[i].logit / sum);
    return n;
}

size_t rt_sampler_candidates(rt_sampler *s, const float *logits, int32_t *ids, float *probs)
{
    size_t n = filter(s, logits);
    for (size_t i = 0; i < n; i++) {
        ids[i] = s->cand[i].id;
        probs[i] = s->cand[i].logit;
    }
    return n;
}

int32_t rt_sampler_sample(rt_sampler *s, const float *logits)
{
    size_t n = filter(s, logits);
    if (n == 1)
        return s->cand[0].id;
    double u = (double)(splitmix64(&s->rng) >> 11) * (1.0 / 9007199254740992.0); /* [0,1) */
    double cum = 0;
    for (size_t i = 0; i < n; i++) {
        cum += s->cand[i].logit;
        if (u < cum)
            return s->cand[i].id;
    }
    return s->cand[n - 1].id; /* rounding left u past the last sum */
}
