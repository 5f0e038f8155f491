/*
 * The script the CPU retrieval tests run (test_retrieval.c, test_retrieval_group.c): a context
 * prefill of N0 random tokens, an extension of EXT tokens in one batch, then DEC tokens one by
 * one (teacher-forced ids), on a runner whose small static tail (STATIC_MAX) makes the static set
 * move to the host set, and into the indexes, several times.
 */
#ifndef LOUPE_TEST_RETRIEVAL_SCRIPT_H
#define LOUPE_TEST_RETRIEVAL_SCRIPT_H

#include "runtime/runtime.h"

enum { N0 = 300, EXT = 20, DEC = 90, SINKS = 4, WINDOW = 24, STATIC_MAX = 64 };
enum { SCRIPT_ROWS = 1 + EXT + DEC, SCRIPT_IDS = N0 + EXT + DEC };

/* Loads the model argv[1] (its file in *g: close it after destroying the model) and draws the
 * script's random ids (SCRIPT_IDS, seeded by test_seed()) into *ids (caller frees). Prints the
 * usage or the load error and returns NULL on failure. */
rt_model *script_setup(int argc, char **argv, const char *name, rt_gguf **g, int32_t **ids);
/* The CPU backend in `mode` with the script's static set, topk, 2 threads, 128 build queries. */
void script_params(rt_runner_params *p, rt_attn_mode mode, uint32_t topk);
/* Runs the script over ids (SCRIPT_IDS); out receives the logits of the context's last token,
 * every extension row and every decode step: (SCRIPT_ROWS, n_vocab); st (if non-NULL) the
 * runner's statistics at the end. */
loupe_status script_run(const rt_model *m, const rt_runner_params *p, const int32_t *ids,
                        float *out, rt_runner_stats *st, loupe_err *err);
/* The largest relative error of a row of a against b ((SCRIPT_ROWS, nv) each); *worst (if
 * non-NULL) its row. */
double script_max_row_diff(const float *a, const float *b, uint32_t nv, int *worst);

#endif /* LOUPE_TEST_RETRIEVAL_SCRIPT_H */
