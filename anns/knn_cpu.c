/*
 * Exact query→key top-k on the CPU: the default kNN step of the graph build (ann_knn_fn).
 *
 * Blocked so that no nq × n score matrix exists: keys are widened once to f32 and transposed into
 * tiles of ANN_KT keys, (tile, dim, ANN_KT); each thread takes a block of queries, walks every key
 * tile, computes an ANN_QG × ANN_KT block of scores in registers and offers them to the queries'
 * bounded min-heaps (most scores fail the heap-threshold test and cost one compare). Each thread
 * also tracks, for every key, its best-scoring query in a thread-private array; the arrays are
 * merged at the end. Memory: n·dim floats for the tiles, plus n·8 bytes per thread.
 */
#include "anns/ann_impl.h"

#include <omp.h>
#include <stdlib.h>

enum { ANN_KT = 32, ANN_QG = 8, ANN_QBLOCK = 64 };

/* One block of queries [q0, q1) against all key tiles. heaps (q1-q0, k); best_s/best_q (n). */
ANN_CLONES static void knn_block(const float *kt, int64_t n, int d, const float *queries,
                                 int64_t q0, int64_t q1, int k, ann_cand *heaps, int *hn,
                                 float *best_s, int32_t *best_q)
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
        int hn[ANN_QBLOCK];
#pragma omp for schedule(dynamic, 1)
        for (int64_t b = 0; b < nblocks; b++) {
            if (!heaps)
                continue;
            int64_t q0 = b * ANN_QBLOCK, q1 = q0 + ANN_QBLOCK < nq ? q0 + ANN_QBLOCK : nq;
            memset(hn, 0, sizeof hn);
            knn_block(kt, n, d, queries, q0, q1, keff, heaps, hn, bs + (int64_t)tid * n,
                      bq + (int64_t)tid * n);
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
