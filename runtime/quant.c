/*
 * Tensor types: the table of block sizes for every ggml type loupe knows, f16/bf16 conversions,
 * and dequantisation + quantisation for the types loupe computes with (F32, F16, BF16, Q8_0, Q4_K,
 * Q6_K).
 *
 * Block layouts follow ggml's ggml-common.h (all little-endian, fp16 scales):
 *   Q8_0  (32 elems, 34 bytes):  d; int8 qs[32]                       x = d * q
 *   Q4_K  (256 elems, 144 bytes): d; dmin; u8 scales[12]; u8 qs[128]
 *         8 sub-blocks of 32, each with a 6-bit scale sc and 6-bit min m packed into scales[]:
 *         x = d * sc * q - dmin * m, q in 0..15; bytes qs[32c + l] hold sub-block 2c (low nibble)
 *         and 2c+1 (high nibble) of 64-element chunk c.
 *   Q6_K  (256 elems, 210 bytes): u8 ql[128]; u8 qh[64]; int8 scales[16]; d
 *         16 sub-blocks of 16 with an 8-bit signed scale: x = d * sc * (q - 32), q in 0..63, the
 *         low 4 bits in ql and the high 2 bits in qh (layout in q6k_pack / dequant_q6_k).
 * Blocks are read and written byte by byte (no struct overlays), so any alignment of the source
 * pointer is fine. The quantisers are simple min/max ones: valid blocks, close but not optimal.
 */
#include "runtime/runtime.h"

#include <ctype.h>
#include <math.h>
#include <string.h>

/* ==== Type table ============================================================================ */

typedef struct {
    const char *name;
    size_t block_elems;
    size_t block_bytes;
} type_info;

static type_info type_lookup(rt_type t)
{
    switch (t) {
    case RT_TYPE_F32: return (type_info){"F32", 1, 4};
    case RT_TYPE_F16: return (type_info){"F16", 1, 2};
    case RT_TYPE_BF16: return (type_info){"BF16", 1, 2};
    case RT_TYPE_Q4_0: return (type_info){"Q4_0", 32, 18};
    case RT_TYPE_Q4_1: return (type_info){"Q4_1", 32, 20};
    case RT_TYPE_Q5_0: return (type_info){"Q5_0", 32, 22};
    case RT_TYPE_Q5_1: return (type_info){"Q5_1", 32, 24};
    case RT_TYPE_Q8_0: return (type_info){"Q8_0", 32, 34};
    case RT_TYPE_Q8_1: return (type_info){"Q8_1", 32, 36};
    case RT_TYPE_Q2_K: return (type_info){"Q2_K", 256, 84};
    case RT_TYPE_Q3_K: return (type_info){"Q3_K", 256, 110};
    case RT_TYPE_Q4_K: return (type_info){"Q4_K", 256, 144};
    case RT_TYPE_Q5_K: return (type_info){"Q5_K", 256, 176};
    case RT_TYPE_Q6_K: return (type_info){"Q6_K", 256, 210};
    case RT_TYPE_Q8_K: return (type_info){"Q8_K", 256, 292};
    case RT_TYPE_COUNT_: break;
    }
    return (type_info){"unknown", 0, 0};
}

const char *rt_type_name(rt_type t) { return type_lookup(t).name; }
size_t rt_type_block_elems(rt_type t) { return type_lookup(t).block_elems; }
size_t rt_type_block_bytes(rt_type t) { return type_lookup(t).block_bytes; }

size_t rt_type_row_bytes(rt_type t, size_t n)
{
    type_info ti = type_lookup(t);
    return ti.block_elems ? n / ti.block_elems * ti.block_bytes : 0;
}

bool rt_type_supported(rt_type t)
{
    return t == RT_TYPE_F32 || t == RT_TYPE_F16 || t == RT_TYPE_BF16 || t == RT_TYPE_Q8_0 ||
           t == RT_TYPE_Q4_K || t == RT_TYPE_Q6_K;
}

bool rt_type_parse(const char *name, rt_type *out)
{
    static const rt_type all[] = {RT_TYPE_F32,  RT_TYPE_F16,  RT_TYPE_BF16, RT_TYPE_Q4_0,
                                  RT_TYPE_Q4_1, RT_TYPE_Q5_0, RT_TYPE_Q5_1, RT_TYPE_Q8_0,
                                  RT_TYPE_Q8_1, RT_TYPE_Q2_K, RT_TYPE_Q3_K, RT_TYPE_Q4_K,
                                  RT_TYPE_Q5_K, RT_TYPE_Q6_K, RT_TYPE_Q8_K};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) {
        const char *n = rt_type_name(all[i]);
        size_t k = 0;
        while (n[k] && name[k] && toupper((unsigned char)name[k]) == n[k])
            k++;
        if (!n[k] && !name[k]) {
            *out = all[i];
            return true;
        }
    }
    return false;
}

/* ==== Scalar conversions ==================================================================== */

static uint32_t f32_bits(float f)
{
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u;
}

static float bits_f32(uint32_t u)
{
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

float rt_f16_to_f32(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000) << 16;
    uint32_t exp = (h >> 10) & 0x1f;
    uint32_t man = h & 0x3ff;
    if (exp == 0x1f) /* inf / nan, keeping the payload */
        return bits_f32(sign | 0x7f800000 | (man << 13));
    if (exp == 0) { /* zero or subnormal: man * 2^-24, exact in f32 */
        float v = (float)man * 5.9604644775390625e-8f;
        return sign ? -v : v;
    }
    return bits_f32(sign | ((exp + 112) << 23) | (man << 13));
}

/* Round-to-nearest-even of the low `shift` bits of v away. */
static uint32_t round_shift(uint32_t v, unsigned shift)
{
    uint32_t r = v >> shift;
    uint32_t rem = v & ((1u << shift) - 1);
    uint32_t half = 1u << (shift - 1);
    if (rem > half || (rem == half && (r & 1)))
        r++;
    return r;
}

uint16_t rt_f32_to_f16(float f)
{
    uint32_t x = f32_bits(f);
    uint16_t sign = (uint16_t)((x >> 16) & 0x8000);
    x &= 0x7fffffff;
    if (x >= 0x7f800000) /* inf stays inf, nan stays a (quiet) nan */
        return sign | (x > 0x7f800000 ? 0x7e00 : 0x7c00);
    if (x >= 0x477ff000) /* >= 65520 rounds past the largest half */
        return sign | 0x7c00;
    if (x < 0x38800000) { /* below 2^-14: a half subnormal (or zero) */
        if (x < 0x33000000) /* <= 2^-25 rounds to zero (the tie goes to the even 0) */
            return sign;
        uint32_t e = x >> 23;
        uint32_t man = (x & 0x7fffff) | 0x800000;
        return sign | (uint16_t)round_shift(man, 126 - e);
    }
    /* Normal: rebias the exponent, round the mantissa; a carry bumps the exponent, as it should. */
    return sign | (uint16_t)round_shift(x - (112u << 23), 13);
}

float rt_bf16_to_f32(uint16_t h) { return bits_f32((uint32_t)h << 16); }

uint16_t rt_f32_to_bf16(float f)
{
    uint32_t x = f32_bits(f);
    if ((x & 0x7fffffff) > 0x7f800000)
        return (uint16_t)((x >> 16) | 0x40); /* keep nan a nan */
    return (uint16_t)((x + 0x7fff + ((x >> 16) & 1)) >> 16);
}

static uint16_t rd_u16(const uint8_t *p) { return (uint16_t)(p[0] | (p[1] << 8)); }

static void wr_u16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)(v & 0xff);
    p[1] = (uint8_t)(v >> 8);
}

/* ==== Dequantisation ======================================================================== */

static void dequant_q8_0(const uint8_t *b, float *y, size_t nb)
{
    for (size_t i = 0; i < nb; i++, b += 34, y += 32) {
        float d = rt_f16_to_f32(rd_u16(b));
        for (int j = 0; j < 32; j++)
            y[j] = d * (float)(int8_t)b[2 + j];
    }
}

/* The 6-bit scale and min of sub-block j (0..7) from the 12 packed bytes: j < 4 sit in the low 6
 * bits of bytes j / j+4; j >= 4 take 4 bits from byte j+4 and their top 2 bits from the spare top
 * bits of bytes j-4 (scale) and j (min). */
static void q4k_scale_min(const uint8_t *s, int j, int *sc, int *m)
{
    if (j < 4) {
        *sc = s[j] & 63;
        *m = s[j + 4] & 63;
    } else {
        *sc = (s[j + 4] & 0xf) | ((s[j - 4] >> 6) << 4);
        *m = (s[j + 4] >> 4) | ((s[j] >> 6) << 4);
    }
}

static void dequant_q4_k(const uint8_t *b, float *y, size_t nb)
{
    for (size_t i = 0; i < nb; i++, b += 144, y += 256) {
        float d = rt_f16_to_f32(rd_u16(b));
        float dmin = rt_f16_to_f32(rd_u16(b + 2));
        const uint8_t *scales = b + 4, *qs = b + 16;
        for (int c = 0; c < 4; c++) {
            int sc0, m0, sc1, m1;
            q4k_scale_min(scales, 2 * c, &sc0, &m0);
            q4k_scale_min(scales, 2 * c + 1, &sc1, &m1);
            float d0 = d * (float)sc0, o0 = dmin * (float)m0;
            float d1 = d * (float)sc1, o1 = dmin * (float)m1;
            for (int l = 0; l < 32; l++) {
                y[64 * c + l] = d0 * (float)(qs[32 * c + l] & 0xf) - o0;
                y[64 * c + 32 + l] = d1 * (float)(qs[32 * c + l] >> 4) - o1;
            }
        }
    }
}

/* Q6_K: each 128-element half h uses ql[64h..], qh[32h..], scales[8h..]. For l in 0..31 the four
 * elements l, l+32, l+64, l+96 of the half take their low nibbles from ql[l] (low, high) and
 * ql[l+32] (low, high) as (l, l+64) and (l+32, l+96), and their top 2 bits from qh[l] bits 0-1,
 * 2-3, 4-5, 6-7 in the order l, l+32, l+64, l+96. Element e of the block uses scales[e / 16]. */
static void dequant_q6_k(const uint8_t *b, float *y, size_t nb)
{
    for (size_t i = 0; i < nb; i++, b += 210, y += 256) {
        float d = rt_f16_to_f32(rd_u16(b + 208));
        for (int h = 0; h < 2; h++) {
            const uint8_t *ql = b + 64 * h, *qh = b + 128 + 32 * h;
            const int8_t *sc = (const int8_t *)(b + 192 + 8 * h);
            float *o = y + 128 * h;
            for (int l = 0; l < 32; l++) {
                int q1 = ((ql[l] & 0xf) | (((qh[l] >> 0) & 3) << 4)) - 32;
                int q2 = ((ql[l + 32] & 0xf) | (((qh[l] >> 2) & 3) << 4)) - 32;
                int q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
                int q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
                int s = l / 16;
                o[l] = d * (float)sc[s] * (float)q1;
                o[l + 32] = d * (float)sc[s + 2] * (float)q2;
                o[l + 64] = d * (float)sc[s + 4] * (float)q3;
                o[l + 96] = d * (float)sc[s + 6] * (float)q4;
            }
        }
    }
}

void rt_dequantize(rt_type t, const void *src, float *dst, size_t n)
{
    const uint8_t *s = src;
    switch (t) {
    case RT_TYPE_F32:
        memcpy(dst, s, n * sizeof(float));
        return;
    case RT_TYPE_F16:
        for (size_t i = 0; i < n; i++)
            dst[i] = rt_f16_to_f32(rd_u16(s + 2 * i));
        return;
    case RT_TYPE_BF16:
        for (size_t i = 0; i < n; i++)
            dst[i] = rt_bf16_to_f32(rd_u16(s + 2 * i));
        return;
    case RT_TYPE_Q8_0: dequant_q8_0(s, dst, n / 32); return;
    case RT_TYPE_Q4_K: dequant_q4_k(s, dst, n / 256); return;
    case RT_TYPE_Q6_K: dequant_q6_k(s, dst, n / 256); return;
    default:
        /* Callers check rt_type_supported(); zeros beat reading garbage if one forgets. */
        memset(dst, 0, n * sizeof(float));
        return;
    }
}

/* ==== Quantisation ========================================================================== */

static int clampi(int v, int lo, int hi) { return v < lo ? lo : v > hi ? hi : v; }
static float max_f(float a, float b) { return a > b ? a : b; }
static float min_f(float a, float b) { return a < b ? a : b; }

/* Round to nearest (ties to even) without a libm call: adding 1.5 * 2^23 leaves the integer in
 * the low mantissa bits. Inputs are clamped far outside every quant range first, so the trick's
 * |v| < 2^22 limit holds. (fminf/fmaxf/lrintf are library calls without -ffast-math; these
 * loops run over billions of weights in mkmodel.) */
static int round_int(float v)
{
    v = v < -1e6f ? -1e6f : v > 1e6f ? 1e6f : v; /* NaN passes through: clampi() bounds it */
    float t = v + 12582912.0f;
    int32_t i;
    memcpy(&i, &t, sizeof i);
    return (i & 0x007fffff) - 0x00400000;
}

static void quant_q8_0(const float *x, uint8_t *b, size_t nb)
{
    for (size_t i = 0; i < nb; i++, b += 34, x += 32) {
        float amax = 0;
        for (int j = 0; j < 32; j++)
            amax = max_f(amax, fabsf(x[j]));
        uint16_t dh = rt_f32_to_f16(amax / 127.0f);
        float d = rt_f16_to_f32(dh);
        float id = d > 0 ? 1.0f / d : 0.0f;
        wr_u16(b, dh);
        for (int j = 0; j < 32; j++)
            b[2 + j] = (uint8_t)(int8_t)clampi(round_int(x[j] * id), -127, 127);
    }
}

/* Q4_K: per sub-block of 32, scale = (max - min) / 15 and offset = -min (min clamped to <= 0 so
 * the offset is non-negative, as the format needs). The super-block scales d and dmin map the
 * largest scale / offset to 63; the quants are then rounded against the *stored* (fp16, 6-bit)
 * scale and offset so rounding of the scales does not add to the error. */
static void quant_q4_k(const float *x, uint8_t *b, size_t nb)
{
    for (size_t i = 0; i < nb; i++, b += 144, x += 256) {
        float scale[8], offs[8], max_scale = 0, max_offs = 0;
        for (int j = 0; j < 8; j++) {
            float lo = 0, hi = -INFINITY;
            for (int l = 0; l < 32; l++) {
                lo = min_f(lo, x[32 * j + l]);
                hi = max_f(hi, x[32 * j + l]);
            }
            scale[j] = (hi - lo) / 15.0f;
            offs[j] = -lo;
            max_scale = max_f(max_scale, scale[j]);
            max_offs = max_f(max_offs, offs[j]);
        }
        uint16_t dh = rt_f32_to_f16(max_scale / 63.0f), mh = rt_f32_to_f16(max_offs / 63.0f);
        float d = rt_f16_to_f32(dh), dmin = rt_f16_to_f32(mh);
        int sc[8], m[8];
        for (int j = 0; j < 8; j++) {
            /* Round the scale up, so the sub-block's range still fits in 0..15. */
            sc[j] = d > 0 ? clampi((int)ceilf(scale[j] / d - 1e-4f), 0, 63) : 0;
            m[j] = dmin > 0 ? clampi(round_int(offs[j] / dmin), 0, 63) : 0;
        }
        wr_u16(b, dh);
        wr_u16(b + 2, mh);
        uint8_t *s = b + 4, *qs = b + 16;
        for (int j = 0; j < 4; j++) {
            s[j] = (uint8_t)((sc[j] & 63) | ((sc[j + 4] >> 4) << 6));
            s[j + 4] = (uint8_t)((m[j] & 63) | ((m[j + 4] >> 4) << 6));
            s[j + 8] = (uint8_t)((sc[j + 4] & 0xf) | ((m[j + 4] & 0xf) << 4));
        }
        uint8_t q[256];
        for (int j = 0; j < 8; j++) {
            float ds = d * (float)sc[j], dm = dmin * (float)m[j];
            float ids = ds > 0 ? 1.0f / ds : 0.0f;
            for (int l = 0; l < 32; l++)
                q[32 * j + l] = (uint8_t)clampi(round_int((x[32 * j + l] + dm) * ids), 0, 15);
        }
        for (int c = 0; c < 4; c++)
            for (int l = 0; l < 32; l++)
                qs[32 * c + l] = (uint8_t)(q[64 * c + l] | (q[64 * c + 32 + l] << 4));
    }
}

/* Q6_K: per sub-block of 16, scale = amax / 31 (symmetric, q - 32 in -31..31); d maps the largest
 * scale to 127; quants are rounded against the stored scale. */
static void quant_q6_k(const float *x, uint8_t *b, size_t nb)
{
    for (size_t i = 0; i < nb; i++, b += 210, x += 256) {
        float scale[16], max_scale = 0;
        for (int j = 0; j < 16; j++) {
            float amax = 0;
            for (int l = 0; l < 16; l++)
                amax = max_f(amax, fabsf(x[16 * j + l]));
            scale[j] = amax / 31.0f;
            max_scale = max_f(max_scale, scale[j]);
        }
        uint16_t dh = rt_f32_to_f16(max_scale / 127.0f);
        float d = rt_f16_to_f32(dh);
        uint8_t q[256];
        int8_t sc[16];
        for (int j = 0; j < 16; j++) {
            sc[j] = (int8_t)(d > 0 ? clampi((int)ceilf(scale[j] / d - 1e-4f), 0, 127) : 0);
            float ds = d * (float)sc[j];
            float ids = ds > 0 ? 1.0f / ds : 0.0f;
            for (int l = 0; l < 16; l++)
                q[16 * j + l] = (uint8_t)(clampi(round_int(x[16 * j + l] * ids), -32, 31) + 32);
        }
        for (int h = 0; h < 2; h++) {
            uint8_t *ql = b + 64 * h, *qh = b + 128 + 32 * h;
            const uint8_t *e = q + 128 * h;
            for (int l = 0; l < 32; l++) {
                ql[l] = (uint8_t)((e[l] & 0xf) | ((e[l + 64] & 0xf) << 4));
                ql[l + 32] = (uint8_t)((e[l + 32] & 0xf) | ((e[l + 96] & 0xf) << 4));
                qh[l] = (uint8_t)((e[l] >> 4) | ((e[l + 32] >> 4) << 2) | ((e[l + 64] >> 4) << 4) |
                                  ((e[l + 96] >> 4) << 6));
            }
        }
        memcpy(b + 192, sc, 16);
        wr_u16(b + 208, dh);
    }
}

loupe_status rt_quantize(rt_type t, const float *src, void *dst, size_t n)
{
    uint8_t *d = dst;
    switch (t) {
    case RT_TYPE_F32:
        memcpy(d, src, n * sizeof(float));
        return LOUPE_OK;
    case RT_TYPE_F16:
        for (size_t i = 0; i < n; i++)
            wr_u16(d + 2 * i, rt_f32_to_f16(src[i]));
        return LOUPE_OK;
    case RT_TYPE_BF16:
        for (size_t i = 0; i < n; i++)
            wr_u16(d + 2 * i, rt_f32_to_bf16(src[i]));
        return LOUPE_OK;
    case RT_TYPE_Q8_0: quant_q8_0(src, d, n / 32); return LOUPE_OK;
    case RT_TYPE_Q4_K: quant_q4_k(src, d, n / 256); return LOUPE_OK;
    case RT_TYPE_Q6_K: quant_q6_k(src, d, n / 256); return LOUPE_OK;
    default: return LOUPE_ERR_UNSUPPORTED;
    }
}
