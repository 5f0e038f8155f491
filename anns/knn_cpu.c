/*
 * Exact query→key top-k on the CPU: the default kNN step of the graph build (ann_knn_fn).
 *
 * Blocked so that no nq × n score matrix exists: keys are widened once to f32 and transposed into
 * tiles of ANN_KT keys, (tile, dim, ANN_KT); each thread takes a block of queries, walks every key
 * tile, computes an ANN_QG × ANN_KT block of scores in registers and offers them to the queries'
 * bounded min-heaps (most scores fail the heap-threshold test and cost one compare). Each thread
 * also tracks, for every key, its best-scoring query in a thread-private array; the arrays are
 * merged at the end. Memory: n·dim floats for the tiles, plus n·8 bytes per thread.
 *
 * A large k against the keys (the graph build's top-512/1024 lists over a short context's few
 * thousand keys) made the heaps the cost: each of the ~k·(1 + ln(n/k)) entries a query's heap
 * takes costs log k of scattered compares (one thread over 7,500 keys: 13 GFLOP/s with k =
 * 512, 55 with k = 8; at 8K the kNN was 78% of the build). There, when a block's scores fit
 * SCORE_BUF_MAX, the block's queries' score rows are written whole and each row's top k is
 * taken from the keys at or above a threshold read off a sample of the row (select_row), sorted
 * by a stable radix sort: the same set (scores tied at the k-th go to the lower ids, as the
 * heaps keep the first they see) and the same order (score, then id). One thread, 1,024
 * queries (dev-2c, 2026-12-07): 7,500 keys top-256 0.113 → 0.080 s, top-512 0.155 → 0.094 s;
 * 15,000 keys top-1,024 0.382 → 0.143 s; 30,000 keys top-1,024 (512 queries) 0.278 → 0.140 s.
 */
#include "anns/ann_impl.h"

#include <omp.h>
#include <stdint.h>
#include <stdlib.h>

enum { ANN_KT = 32, ANN_QG = 8, ANN_QBLOCK = 64 };

/* The score rows of a block when k is large (see the header): k at least ROWS_MIN_K (below, the
 * heaps were as fast or faster: 64 and 128 over 7,500 keys) and a block's rows within
 * SCORE_BUF_MAX bytes (a thread's buffer; 64 queries × 32K keys at 8 MiB). */
enum { ROWS_MIN_K = 256 };
#define SCORE_BUF_MAX ((size_t)8 << 20)

/* A score as a word whose unsigned order is the scores' (ann_float_order; NaN below all). */
static inline uint32_t score_word(float f)
{
    return f != f ? 0 : ann_float_order(f);
}

/* Sorts n 64-bit words descending by their upper 32 bits, stably (LSD radix, a byte a pass; a
 * byte all words share is skipped); tmp: n words. */
static void sort_desc_u64(uint64_t *w, uint64_t *tmp, int64_t n)
{
    for (int sh = 32; sh < 64; sh += 8) {
        int64_t cnt[257] = {0};
        for (int64_t i = 0; i < n; i++)
            cnt[255 - ((w[i] >> sh) & 255) + 1]++;
        if (n == 0 || cnt[255 - ((w[0] >> sh) & 255) + 1] == n)
            continue;
        for (int b = 0; b < 256; b++)
            cnt[b + 1] += cnt[b];
        for (int64_t i = 0; i < n; i++)
            tmp[cnt[255 - ((w[i] >> sh) & 255)]++] = w[i];
        memcpy(w, tmp, (size_t)n * sizeof *w);
    }
}

/* The score-row path's sample: about 48 n / k scores (so ~72 of them lie above the threshold,
 * which then lets 1.5 k ± 12% of the row pass), within SAMPLES_MIN..SAMPLES_MAX. */
enum { SAMPLES_MIN = 256, SAMPLES_MAX = 4096 };

/* The row's k best keys (k <= n), best first, ties to the lower id, and their scores when sc is
 * given. A threshold T0 from evenly spaced sampled scores (the sample's rank that 1.5 k of the
 * row should reach) keeps every key at or above it as a candidate; when at least k pass, the
 * k best candidates are the row's k best (all of the row's k best are at or above the k-th
 * candidate, which is at or above T0), sorted by (score, id). Otherwise (rarely) the threshold
 * is dropped and every key is a candidate. cand and tmp: max(n, SAMPLES_MAX) words each. */
static void select_row(const float *row, int64_t n, int k, int32_t *ids, float *sc,
                       uint64_t *cand, uint64_t *tmp)
{
    int64_t want = 48 * n / k;
    want = want < SAMPLES_MIN ? SAMPLES_MIN : want > SAMPLES_MAX ? SAMPLES_MAX : want;
    const int64_t step = n > want ? n / want : 1;
    int64_t ns = 0;
    for (int64_t j = 0; j < n && ns < want; j += step)
        tmp[ns++] = (uint64_t)score_word(row[j]) << 32;
    sort_desc_u64(tmp, cand, ns);
    const int64_t r = (int64_t)(1.5 * (double)k * (double)ns / (double)n) + 1;
    uint32_t t0 = r < ns ? (uint32_t)(tmp[r - 1] >> 32) : 0;
    int64_t m = 0;
    for (int pass = 0; pass < 2; pass++, t0 = 0) {
        m = 0;
        for (int64_t j = 0; j < n; j++) {
            const uint32_t u = score_word(row[j]);
            if (u >= t0) /* taken for about 1.5 k of n: predicted well */
                cand[m++] = (uint64_t)u << 32 | (uint32_t)(UINT32_MAX - (uint32_t)j);
        }
        if (m >= k)
            break;
    }
    sort_desc_u64(cand, tmp, m); /* stable: the candidates came in id order, ties stay so */
    for (int x = 0; x < k; x++) {
        const int32_t id = (int32_t)(UINT32_MAX - (uint32_t)(cand[x] & UINT32_MAX));
        ids[x] = id;
        if (sc)
            sc[x] = row[id];
    }
}

/* One block of queries [q0, q1) against all key tiles. heaps (q1-q0, k); best_s/best_q (n).
 * With rows (q1-q0, n) the scores are written there instead of offered to the heaps. */
ANN_CLONES static void knn_block(const float *kt, int64_t n, int d, const float *queries,
                                 int64_t q0, int64_t q1, int k, ann_cand *heaps, int *hn,
                                 float *best_s, int32_t *best_q, float *rows)
{
    int64_t ntiles = (n + ANN_KT - 1) / ANN_KT;
    const float *qz[ANN_QG];
    for (int64_t t = 0; t < ntiles; t++) {
        const float *tile = kt + t * (int64_t)d * ANN_KT;
        for (int64_t g = q0; g < q1; g += ANN_QG) {
            int ng = (int)(q1 - g < ANN_QG ? q1 - g : ANN_QG);
            for (int i = 0; i < ANN_QG; i++)
                qz[i] = queries + (g + (i < ng ? i : 0)) * d;
            float acc[ANN_QG][ANN_KT] = {{0}};
            for (int c = 0; c < d; c++) {
                const float *row = tile + (int64_t)c * ANN_KT;
                for (int i = 0; i < ANN_QG; i++) {
                    float qv = qz[i][c];
                    for (int j = 0; j < ANN_KT; j++)
                        acc[i][j] += qv * row[j];
                }
            }
            int64_t kbase = t * ANN_KT;
            int nk = (int)(n - kbase < ANN_KT ? n - kbase : ANN_KT);
            /* Per key, the best of these queries: one vector compare against best_s before any
             * scalar work (later blocks rarely beat a key's best so far). */
            float colmax[ANN_KT];
            for (int j = 0; j < ANN_KT; j++) {
                float m = acc[0][j];
                for (int i = 1; i < ng; i++)
                    m = acc[i][j] > m ? acc[i][j] : m;
                colmax[j] = m;
            }
            int anyk = 0;
            for (int j = 0; j < nk; j++)
                anyk |= colmax[j] > best_s[kbase + j];
            if (anyk)
                for (int j = 0; j < nk; j++)
                    if (colmax[j] > best_s[kbase + j]) {
                        int arg = 0;
                        while (acc[arg][j] != colmax[j])
                            arg++;
                        best_s[kbase + j] = colmax[j];
                        best_q[kbase + j] = (int32_t)(g + arg);
                    }
            if (rows) {
                for (int i = 0; i < ng; i++)
                    memcpy(rows + (g + i - q0) * n + kbase, acc[i], (size_t)nk * sizeof(float));
                continue;
            }
            for (int i = 0; i < ng; i++) {
                int64_t qi = g + i - q0;
                ann_cand *h = heaps + qi * k;
                float thr = hn[qi] < k ? -INFINITY : h[0].s;
                int any = 0;
                for (int j = 0; j < nk; j++)
                    any |= acc[i][j] > thr;
                if (!any)
                    continue;
                for (int j = 0; j < nk; j++)
                    if (hn[qi] < k || acc[i][j] > h[0].s)
                        ann_heap_push(h, &hn[qi], k, acc[i][j], (int32_t)(kbase + j));
            }
        }
    }
}

loupe_status ann_knn_cpu(void *user, const ann_keys *keys, const float *queries, int64_t nq,
                         int k, int threads, int32_t *ids, float *scores, int32_t *key_best_query,
                         loupe_err *err)
{
    (void)user;
    loupe_status rc = LOUPE_OK;
    int64_t n = keys->n;
    int d = keys->dim;
    int nth = threads > 0 ? threads : omp_get_max_threads();
    int keff = k < n ? k : (int)n;
    int64_t ntiles = (n + ANN_KT - 1) / ANN_KT;
    float *kt = NULL, *bs = NULL;
    int32_t *bq = NULL;
    if (k <= 0)
        return loupe_fail(err, LOUPE_ERR_INVALID, "kNN: k must be positive, got %d", k);
    kt = calloc((size_t)ntiles * ANN_KT * (size_t)d, sizeof(float));
    bs = malloc((size_t)nth * (size_t)n * sizeof(float));
    bq = malloc((size_t)nth * (size_t)n * sizeof(int32_t));
    if (!kt || !bs || !bq) {
        rc = loupe_fail(err, LOUPE_ERR_NOMEM, "kNN: no memory for %lld keys of dimension %d",
                        (long long)n, d);
        goto done;
    }
#pragma omp parallel num_threads(nth)
    {
        float *row = malloc((size_t)d * sizeof(float));
#pragma omp for schedule(static)
        for (int64_t r = 0; r < n; r++) {
            if (!row)
                continue;
            ann_keys_row(keys, r, row);
            float *dst = kt + (r / ANN_KT) * (int64_t)d * ANN_KT + r % ANN_KT;
            for (int c = 0; c < d; c++)
                dst[(int64_t)c * ANN_KT] = row[c];
        }
        if (!row)
#pragma omp atomic write
            rc = LOUPE_ERR_NOMEM;
        free(row);
    }
    if (rc != LOUPE_OK) {
        rc = loupe_fail(err, rc, "kNN: no memory for a key row");
        goto done;
    }
    for (int64_t i = 0; i < (int64_t)nth * n; i++) {
        bs[i] = -INFINITY;
        bq[i] = -1;
    }
    int64_t nblocks = (nq + ANN_QBLOCK - 1) / ANN_QBLOCK;
#pragma omp parallel num_threads(nth)
    {
        int tid = omp_get_thread_num();
        ann_cand *heaps = malloc((size_t)ANN_QBLOCK * (size_t)keff * sizeof *heaps);
        float *rows = NULL;
        uint64_t *cand = NULL, *tmp = NULL;
        /* candidates: the whole row fits (the threshold's fallback), and so does the sample */
        const int64_t cap = n > SAMPLES_MAX ? n : SAMPLES_MAX;
        if (keff >= ROWS_MIN_K && (size_t)ANN_QBLOCK * (size_t)n * sizeof *rows <= SCORE_BUF_MAX) {
            rows = malloc((size_t)ANN_QBLOCK * (size_t)n * sizeof *rows);
            cand = malloc((size_t)cap * sizeof *cand);
            tmp = malloc((size_t)cap * sizeof *tmp);
            if (!rows || !cand || !tmp) { /* the heaps then */
                free(rows);
                free(cand);
                free(tmp);
                rows = NULL;
            }
        }
        int hn[ANN_QBLOCK];
#pragma omp for schedule(dynamic, 1)
        for (int64_t b = 0; b < nblocks; b++) {
            if (!heaps)
                continue;
            int64_t q0 = b * ANN_QBLOCK, q1 = q0 + ANN_QBLOCK < nq ? q0 + ANN_QBLOCK : nq;
            memset(hn, 0, sizeof hn);
            knn_block(kt, n, d, queries, q0, q1, keff, heaps, hn, bs + (int64_t)tid * n,
                      bq + (int64_t)tid * n, rows);
            if (rows) {
                for (int64_t q = q0; q < q1; q++) {
                    select_row(rows + (q - q0) * n, n, keff, ids + q * k,
                               scores ? scores + q * k : NULL, cand, tmp);
                    for (int j = keff; j < k; j++) {
                        ids[q * k + j] = -1;
                        if (scores)
                            scores[q * k + j] = -INFINITY;
                    }
                }
                continue;
            }
            for (int64_t q = q0; q < q1; q++) {
                ann_cand *h = heaps + (q - q0) * keff;
                int m = hn[q - q0];
                ann_heap_sort_desc(h, m);
                for (int j = 0; j < k; j++) {
                    ids[q * k + j] = j < m ? h[j].id : -1;
                    if (scores)
                        scores[q * k + j] = j < m ? h[j].s : -INFINITY;
                }
            }
        }
        if (!heaps)
#pragma omp atomic write
            rc = LOUPE_ERR_NOMEM;
        free(heaps);
        if (rows) {
            free(rows);
            free(cand);
            free(tmp);
        }
    }
    if (rc != LOUPE_OK) {
        rc = loupe_fail(err, rc, "kNN: no memory for the top-%d heaps", k);
        goto done;
    }
    if (key_best_query) {
#pragma omp parallel for num_threads(nth) schedule(static)
        for (int64_t r = 0; r < n; r++) {
            float best = -INFINITY;
            int32_t arg = -1;
            for (int t = 0; t < nth; t++)
                if (bq[(int64_t)t * n + r] >= 0 && bs[(int64_t)t * n + r] > best) {
                    best = bs[(int64_t)t * n + r];
                    arg = bq[(int64_t)t * n + r];
                }
            key_best_query[r] = arg;
        }
    }
done:
    free(kt);
    free(bs);
    free(bq);
    return rc;
}
