/* Tensor types: the size table, f16/bf16 conversions against known bit patterns, dequantisation
 * of hand-built blocks (bytes laid out by hand from the block layouts, expected floats worked out
 * by hand), and quantise→dequantise error bounds on random data of several shapes. */
#include <math.h>
#include <string.h>

#include "common/test_util.h"
#include "runtime/runtime.h"

static void test_type_table(void)
{
    CHECK(rt_type_block_elems(RT_TYPE_F32) == 1 && rt_type_block_bytes(RT_TYPE_F32) == 4);
    CHECK(rt_type_block_elems(RT_TYPE_BF16) == 1 && rt_type_block_bytes(RT_TYPE_BF16) == 2);
    CHECK(rt_type_block_elems(RT_TYPE_Q8_0) == 32 && rt_type_block_bytes(RT_TYPE_Q8_0) == 34);
    CHECK(rt_type_block_elems(RT_TYPE_Q4_K) == 256 && rt_type_block_bytes(RT_TYPE_Q4_K) == 144);
    CHECK(rt_type_block_elems(RT_TYPE_Q6_K) == 256 && rt_type_block_bytes(RT_TYPE_Q6_K) == 210);
    CHECK(rt_type_block_bytes(RT_TYPE_Q4_0) == 18 && rt_type_block_bytes(RT_TYPE_Q5_K) == 176);
    CHECK(rt_type_block_bytes((rt_type)4) == 0 && rt_type_block_elems((rt_type)39) == 0);
    CHECK(strcmp(rt_type_name((rt_type)4), "unknown") == 0);
    CHECK(rt_type_row_bytes(RT_TYPE_Q4_K, 4096) == 16 * 144);
    CHECK(rt_type_row_bytes(RT_TYPE_Q8_0, 64) == 68);
    rt_type t;
    CHECK(rt_type_parse("q4_k", &t) && t == RT_TYPE_Q4_K);
    CHECK(rt_type_parse("BF16", &t) && t == RT_TYPE_BF16);
    CHECK(rt_type_parse("Q6_K", &t) && t == RT_TYPE_Q6_K);
    CHECK(!rt_type_parse("q4", &t) && !rt_type_parse("q4_kx", &t) && !rt_type_parse("", &t));
    CHECK(rt_type_supported(RT_TYPE_Q6_K) && !rt_type_supported(RT_TYPE_Q4_0));
}

static void test_half(void)
{
    CHECK(rt_f16_to_f32(0x3c00) == 1.0f);
    CHECK(rt_f16_to_f32(0xc000) == -2.0f);
    CHECK(rt_f16_to_f32(0x7bff) == 65504.0f);
    CHECK(rt_f16_to_f32(0x0001) == ldexpf(1.0f, -24));
    CHECK(rt_f16_to_f32(0x0400) == ldexpf(1.0f, -14));
    CHECK(rt_f16_to_f32(0x3555) == 0.333251953125f);
    CHECK(isinf(rt_f16_to_f32(0x7c00)) && isnan(rt_f16_to_f32(0x7e00)));
    CHECK(signbit(rt_f16_to_f32(0x8000)) && rt_f16_to_f32(0x8000) == 0.0f);
    CHECK(rt_f32_to_f16(1.0f / 3.0f) == 0x3555);
    CHECK(rt_f32_to_f16(0.1f) == 0x2e66);
    CHECK(rt_f32_to_f16(-2.0f) == 0xc000);
    CHECK(rt_f32_to_f16(65519.0f) == 0x7bff);
    CHECK(rt_f32_to_f16(65520.0f) == 0x7c00); /* ties to even: up to infinity */
    CHECK(rt_f32_to_f16(1e9f) == 0x7c00 && rt_f32_to_f16(-INFINITY) == 0xfc00);
    CHECK((rt_f32_to_f16(NAN) & 0x7c00) == 0x7c00 && (rt_f32_to_f16(NAN) & 0x3ff));
    CHECK(rt_f32_to_f16(ldexpf(1.0f, -25)) == 0x0000);                   /* tie to even 0 */
    CHECK(rt_f32_to_f16(ldexpf(1.0f, -25) * 1.0001f) == 0x0001);
    CHECK(rt_f32_to_f16(ldexpf(3.0f, -25)) == 0x0002);                   /* 1.5 ulp: tie to 2 */
    CHECK(rt_f32_to_f16(ldexpf(1023.0f, -24)) == 0x03ff);                /* largest subnormal */
    CHECK(rt_f32_to_f16(1.0f + ldexpf(1.0f, -11)) == 0x3c00);            /* tie to even */
    CHECK(rt_f32_to_f16(1.0f + ldexpf(3.0f, -11)) == 0x3c02);            /* tie to even, up */
    /* Every half survives the round trip. */
    int bad = 0;
    for (uint32_t h = 0; h < 0x10000; h++) {
        if ((h & 0x7c00) == 0x7c00 && (h & 0x3ff))
            continue; /* nan payloads */
        if (rt_f32_to_f16(rt_f16_to_f32((uint16_t)h)) != h)
            bad++;
    }
    CHECK_MSG(bad == 0, "%d halves do not round-trip", bad);

    CHECK(rt_bf16_to_f32(0x3f80) == 1.0f && rt_bf16_to_f32(0xc0a0) == -5.0f);
    CHECK(rt_f32_to_bf16(1.0f) == 0x3f80);
    uint32_t u = 0x3f808000; /* exactly between 0x3f80 and 0x3f81: to even */
    float f;
    memcpy(&f, &u, 4);
    CHECK(rt_f32_to_bf16(f) == 0x3f80);
    u = 0x3f818000; /* between 0x3f81 and 0x3f82: to even, up */
    memcpy(&f, &u, 4);
    CHECK(rt_f32_to_bf16(f) == 0x3f82);
    u = 0x3f808001;
    memcpy(&f, &u, 4);
    CHECK(rt_f32_to_bf16(f) == 0x3f81);
    CHECK(isnan(rt_bf16_to_f32(rt_f32_to_bf16(NAN))));
}

static void test_plain_types(void)
{
    /* F16: 1.0, -2.0, 0.5, 65504 little-endian. BF16: 1.0, -5.0. F32: 3.5. */
    const uint8_t f16[] = {0x00, 0x3c, 0x00, 0xc0, 0x00, 0x38, 0xff, 0x7b};
    const uint8_t bf16[] = {0x80, 0x3f, 0xa0, 0xc0};
    const uint8_t f32[] = {0x00, 0x00, 0x60, 0x40};
    float y[4];
    rt_dequantize(RT_TYPE_F16, f16, y, 4);
    CHECK(y[0] == 1.0f && y[1] == -2.0f && y[2] == 0.5f && y[3] == 65504.0f);
    rt_dequantize(RT_TYPE_BF16, bf16, y, 2);
    CHECK(y[0] == 1.0f && y[1] == -5.0f);
    rt_dequantize(RT_TYPE_F32, f32, y, 1);
    CHECK(y[0] == 3.5f);
}

static void test_q8_0_block(void)
{
    /* Two blocks: d = 0.5 (0x3800) with qs[j] = j - 16, and d = -0.25 (0xb400) with qs = 127 /
     * -128 alternating. */
    uint8_t b[68];
    b[0] = 0x00;
    b[1] = 0x38;
    for (int j = 0; j < 32; j++)
        b[2 + j] = (uint8_t)(int8_t)(j - 16);
    b[34] = 0x00;
    b[35] = 0xb4;
    for (int j = 0; j < 32; j++)
        b[36 + j] = (uint8_t)(j % 2 ? 0x80 : 0x7f);
    float y[64];
    rt_dequantize(RT_TYPE_Q8_0, b, y, 64);
    CHECK(y[0] == -8.0f && y[16] == 0.0f && y[31] == 7.5f && y[5] == -5.5f);
    for (int j = 0; j < 32; j++)
        CHECK(y[j] == 0.5f * (float)(j - 16));
    CHECK(y[32] == -31.75f && y[33] == 32.0f && y[63] == 32.0f);
}

static void test_q4_k_block(void)
{
    /* d = 1.0, dmin = 0.5; sub-block scales sc = {1,2,3,4,17,33,50,63} and mins
     * m = {0,1,2,3,16,20,40,63}. Packed by hand (see the layout in quant.c):
     *   bytes 0-3:  sc[j] | (sc[j+4] >> 4) << 6  = 1|64, 2|128, 3|192, 4|192
     *   bytes 4-7:  m[j]  | (m[j+4] >> 4) << 6   = 0|64, 1|64, 2|128, 3|192
     *   bytes 8-11: (sc[j+4] & 15) | (m[j+4] & 15) << 4 = 1|0, 1|64, 2|128, 15|240 */
    static const uint8_t scales[12] = {65, 130, 195, 196, 64, 65, 130, 195, 1, 65, 130, 255};
    static const int sc[8] = {1, 2, 3, 4, 17, 33, 50, 63}, m[8] = {0, 1, 2, 3, 16, 20, 40, 63};
    uint8_t b[144];
    b[0] = 0x00, b[1] = 0x3c, b[2] = 0x00, b[3] = 0x38;
    memcpy(b + 4, scales, 12);
    /* Chunk c's byte l holds element 64c+l (low nibble, q = l & 15) and 64c+32+l (high nibble,
     * q = (l + c) & 15). */
    for (int c = 0; c < 4; c++)
        for (int l = 0; l < 32; l++)
            b[16 + 32 * c + l] = (uint8_t)((l & 15) | (((l + c) & 15) << 4));
    float y[256];
    rt_dequantize(RT_TYPE_Q4_K, b, y, 256);
    for (int c = 0; c < 4; c++)
        for (int l = 0; l < 32; l++) {
            int j0 = 2 * c, j1 = 2 * c + 1;
            CHECK(y[64 * c + l] == (float)(sc[j0] * (l & 15)) - 0.5f * (float)m[j0]);
            CHECK(y[64 * c + 32 + l] == (float)(sc[j1] * ((l + c) & 15)) - 0.5f * (float)m[j1]);
        }
    /* Worked by hand: sub-block 7, q = (5+3)&15 = 8: 63*8 - 63/2; sub-block 4, q = 7: 17*7 - 8;
     * sub-block 0, l = 3: 1*3 - 0; sub-block 1, c = 0, l = 15: 2*15 - 0.5. */
    CHECK(y[64 * 3 + 32 + 5] == 472.5f);
    CHECK(y[64 * 2 + 7] == 111.0f);
    CHECK(y[3] == 3.0f);
    CHECK(y[32 + 15] == 29.5f);
}

static void test_q6_k_block(void)
{
    /* ql[i] = i, qh[i] = 3i mod 256, scales as below, d = 0.25 (0x3400). */
    static const int8_t sc[16] = {1, -2, 3, -4, 5, -6, 7, -8, 9, -10, 11, -12, 13, -14, 15, -128};
    uint8_t b[210];
    for (int i = 0; i < 128; i++)
        b[i] = (uint8_t)i;
    for (int i = 0; i < 64; i++)
        b[128 + i] = (uint8_t)(3 * i);
    memcpy(b + 192, sc, 16);
    b[208] = 0x00;
    b[209] = 0x34;
    float y[256];
    rt_dequantize(RT_TYPE_Q6_K, b, y, 256);
    /* Element 5: low nibble of ql[5] = 5, bits 0-1 of qh[5] = 15 -> 3: q = 53 - 32 = 21, sc[0]. */
    CHECK(y[5] == 0.25f * 1 * 21);
    /* Element 37: low nibble of ql[37] = 5, bits 2-3 of qh[5] = 3: q = 21, sc[2] = 3. */
    CHECK(y[37] == 15.75f);
    /* Element 69: high nibble of ql[5] = 0, bits 4-5 of qh[5] = 0: q = -32, sc[4] = 5. */
    CHECK(y[69] == -40.0f);
    /* Element 101: high nibble of ql[37] = 2, bits 6-7 of qh[5] = 0: q = -30, sc[6] = 7. */
    CHECK(y[101] == -52.5f);
    /* Element 148 (second half, l = 20): ql[84] low = 4, qh[52] = 156 bits 0-1 = 0: q = -28,
     * sc[8 + 1] = -10. */
    CHECK(y[148] == 70.0f);
    /* Element 244 (second half, l = 20 + 96): ql[116] high = 7, qh[52] bits 6-7 = 2: q = 39 - 32
     * = 7, sc[15] = -128. */
    CHECK(y[244] == -224.0f);
    /* Element 0: ql[0] = 0, qh[0] = 0: q = -32, sc[0] = 1. */
    CHECK(y[0] == -8.0f);
}

/* Random data with varied block statistics: a different scale per 32 values, outliers,
 * all-negative stretches and a constant stretch. */
static void fill_random(test_rng *rng, float *x, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        size_t blk = i / 32;
        float scale = 0.01f + (float)(blk % 7) * 0.3f;
        x[i] = test_rng_normal(rng) * scale;
        if (blk % 5 == 3)
            x[i] = -fabsf(x[i]) - 0.1f;
        if (blk % 11 == 4)
            x[i] = 0.75f;
        if (test_rng_uniform(rng) < 0.002f)
            x[i] *= 40.0f;
    }
}

/* Quantises and dequantises x; checks rms(error)/rms(x) and the worst |error| relative to the
 * largest |x| in the element's block (32 values, or the 256-value super-block of the K-quants,
 * whose sub-block scales are quantised against it). */
static void check_round_trip(rt_type t, const float *x, size_t n, float rel_rms, float rel_max,
                             const char *data_name)
{
    static float y[256 * 64];
    static uint8_t q[256 * 64 * 4];
    memset(q, 0xa5, sizeof q);
    CHECK(rt_quantize(t, x, q, n) == LOUPE_OK);
    rt_dequantize(t, q, y, n);
    size_t blk = rt_type_block_elems(t) < 32 ? 32 : rt_type_block_elems(t);
    double se = 0, sx = 0, worst = 0;
    for (size_t b = 0; b < n; b += blk) {
        float amax = 0;
        for (size_t i = b; i < b + blk; i++)
            amax = fmaxf(amax, fabsf(x[i]));
        for (size_t i = b; i < b + blk; i++) {
            double e = (double)y[i] - (double)x[i];
            se += e * e;
            sx += (double)x[i] * x[i];
            double rel = amax > 0 ? fabs(e) / amax : fabs(e);
            worst = rel > worst ? rel : worst;
        }
    }
    double rr = sqrt(se / sx);
    fprintf(stderr, "  %-5s %-8s rms error %.5f of rms, worst %.5f of block amax\n",
            rt_type_name(t), data_name, rr, worst);
    CHECK_MSG(rr <= rel_rms, "%s on %s: rms error %g", rt_type_name(t), data_name, rr);
    CHECK_MSG(worst <= rel_max, "%s on %s: worst error %g", rt_type_name(t), data_name, worst);
}

static void test_round_trip(test_rng *rng)
{
    enum { N = 256 * 64 };
    static float x[N], g[N];
    static uint8_t q[N * 4];
    const struct {
        rt_type t;
        float rms_varied, max_varied, rms_normal, max_normal;
    } cases[] = {
        {RT_TYPE_F32, 0, 0, 0, 0},
        {RT_TYPE_F16, 1e-3f, 1e-3f, 1e-3f, 1e-3f},
        {RT_TYPE_BF16, 5e-3f, 8e-3f, 5e-3f, 8e-3f},
        {RT_TYPE_Q8_0, 0.02f, 0.0045f, 0.01f, 0.0045f},
        {RT_TYPE_Q6_K, 0.05f, 0.025f, 0.03f, 0.025f},
        {RT_TYPE_Q4_K, 0.15f, 0.12f, 0.15f, 0.12f},
    };
    fill_random(rng, x, N);
    for (size_t i = 0; i < N; i++)
        g[i] = 0.02f * test_rng_normal(rng);
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        check_round_trip(cases[c].t, x, N, cases[c].rms_varied, cases[c].max_varied, "varied");
        check_round_trip(cases[c].t, g, N, cases[c].rms_normal, cases[c].max_normal, "normal");
    }
    CHECK(rt_quantize(RT_TYPE_Q4_0, x, q, 32) == LOUPE_ERR_UNSUPPORTED);
    /* All-zero input gives all-zero output, not NaN. */
    float z[256] = {0}, zo[256];
    for (int t = 0; t < 3; t++) {
        rt_type ty = t == 0 ? RT_TYPE_Q8_0 : t == 1 ? RT_TYPE_Q4_K : RT_TYPE_Q6_K;
        rt_quantize(ty, z, q, 256);
        rt_dequantize(ty, q, zo, 256);
        for (int i = 0; i < 256; i++)
            CHECK(zo[i] == 0.0f);
    }
}

int main(void)
{
    test_rng rng;
    test_rng_seed(&rng, test_seed());
    test_type_table();
    test_half();
    test_plain_types();
    test_q8_0_block();
    test_q4_k_block();
    test_q6_k_block();
    test_round_trip(&rng);
    return test_summary("test_gguf_quant");
}
