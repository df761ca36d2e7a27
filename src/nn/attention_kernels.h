/* attention_kernels.h — the register-blocked AVX-512 products shared by the attention forward
 * (attention.c) and backward (attention_grad.c). Internal to src/nn; the includer defines BQ, the number of
 * lanes (64: four vectors of 16) of the transposed blocks these kernels read and write:
 *   qk_rows  St[j][lanes] = Σ_d K[j][d] · Qt[d][lanes]           rows of a matrix times a transposed block
 *   pv_rows  Ot[d][lanes] = α[lanes]·Ot[d][lanes] + Σ_j V[j][d] · P[j][lanes]
 * The forward uses them as S = K·Qᵀ and O = α·O + Vᵀ·P with queries along the lanes; the backward also
 * with keys along the lanes. The bf16 versions (qk_rows_bf16, pv_rows_bf16: vdpbf16ps on pairs of bf16
 * values, the reduced dimension paired) serve the forward's and the backward's bf16 compute mode, with
 * zl_bf16_round_bits and pack_pairs, which produce their operands. */
#ifndef ZL_ATTENTION_KERNELS_H
#define ZL_ATTENTION_KERNELS_H
#include "nn/ops_internal.h"

#ifdef ZL_X86_SIMD
/* The register blocks are written with one named accumulator per (row, vector), a<row><vector>, and
 * constant guards (JN/DN rows, NV vectors are compile-time constants after inlining), because both gcc and
 * clang then keep them all in registers; arrays of __m512 are not reliably promoted by clang. */
#define GRID(M) M(0, 0) M(0, 1) M(0, 2) M(0, 3) M(1, 0) M(1, 1) M(1, 2) M(1, 3) M(2, 0) M(2, 1) M(2, 2) M(2, 3) \
                M(3, 0) M(3, 1) M(3, 2) M(3, 3) M(4, 0) M(4, 1) M(4, 2) M(4, 3) M(5, 0) M(5, 1) M(5, 2) M(5, 3)
#define DECL(r, v) __m512 a##r##v = _mm512_setzero_ps();
#define FMA4(r, b)                                                     \
    do {                                                               \
        a##r##0 = _mm512_fmadd_ps(b, x0, a##r##0);                     \
        if (NV > 1) a##r##1 = _mm512_fmadd_ps(b, x1, a##r##1);         \
        if (NV > 2) a##r##2 = _mm512_fmadd_ps(b, x2, a##r##2);         \
        if (NV > 3) a##r##3 = _mm512_fmadd_ps(b, x3, a##r##3);         \
    } while (0)

/* St[j..j+JN) = K rows j.. · Qt, NV vectors of queries (JN <= JR). */
ZL_AVX512_INLINE void qk_rows(float *St, const float *Qt, const float *K, size_t ks, int j, int hd, const int NV,
                              const int JN) {
    GRID(DECL)
    const float *k0 = K + (size_t)j * ks;
    for (int d = 0; d < hd; d++) {
        const float *qt = Qt + (size_t)d * BQ;
        __m512 x0 = _mm512_load_ps(qt), x1 = _mm512_load_ps(qt + 16), x2 = _mm512_load_ps(qt + 32),
               x3 = _mm512_load_ps(qt + 48);
#define QKROW(r) if (JN > r) FMA4(r, _mm512_set1_ps(k0[(size_t)(r) * ks + d]));
        QKROW(0) QKROW(1) QKROW(2) QKROW(3) QKROW(4) QKROW(5)
#undef QKROW
    }
#define QKST(r, v) if (JN > r && NV > v) _mm512_store_ps(St + (size_t)(j + r) * BQ + 16 * v, a##r##v);
    GRID(QKST)
#undef QKST
}

/* Ot[d..d+DN) = α·Ot + Σ_j V[j][d..] · P[j], NV vectors of queries (DN <= DR). */
ZL_AVX512_INLINE void pv_rows(float *Ot, const float *P, const float *V, size_t ks, const float *al, int d,
                              int nkb, const int NV, const int DN) {
    GRID(DECL)
    {
        __m512 x0 = _mm512_load_ps(al), x1 = _mm512_load_ps(al + 16), x2 = _mm512_load_ps(al + 32),
               x3 = _mm512_load_ps(al + 48);
#define PVLD(r, v) \
    if (DN > r && NV > v) a##r##v = _mm512_mul_ps(x##v, _mm512_load_ps(Ot + (size_t)(d + r) * BQ + 16 * v));
        GRID(PVLD)
#undef PVLD
    }
    const float *v0 = V + d;
    for (int j = 0; j < nkb; j++) {
        const float *p = P + (size_t)j * BQ;
        __m512 x0 = _mm512_load_ps(p), x1 = _mm512_load_ps(p + 16), x2 = _mm512_load_ps(p + 32),
               x3 = _mm512_load_ps(p + 48);
        const float *vr = v0 + (size_t)j * ks;
#define PVROW(r) if (DN > r) FMA4(r, _mm512_set1_ps(vr[r]));
        PVROW(0) PVROW(1) PVROW(2) PVROW(3) PVROW(4) PVROW(5)
#undef PVROW
    }
#define PVST(r, v) if (DN > r && NV > v) _mm512_store_ps(Ot + (size_t)(d + r) * BQ + 16 * v, a##r##v);
    GRID(PVST)
#undef PVST
}

/* ------------------------------------------------------------------ bf16 (AVX512_BF16) */

#define ZL_BF16K __attribute__((target("avx512bf16,avx512f,avx512bw,avx512vl")))
#define ZL_BF16K_INLINE static inline __attribute__((always_inline, target("avx512bf16,avx512f,avx512bw,avx512vl")))

/* dst [t·stride] = src [n] as bf16 pairs, t < ⌈n/2⌉ (dims 2t, 2t+1 in one uint32, low half first; odd n
 * padded with 0). stride 1: contiguous stores, else scattered. */
ZL_BF16K_INLINE void pack_pairs(uint32_t *dst, size_t stride, const float *src, int n) {
    const __m512i sidx = _mm512_mullo_epi32(_mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0),
                                            _mm512_set1_epi32((int)stride));
    for (int d = 0; d < n; d += 32) {
        int m = n - d < 32 ? n - d : 32, m0 = m < 16 ? m : 16, m1 = m - m0;
        __m512 x0 = _mm512_maskz_loadu_ps((__mmask16)((1u << m0) - 1), src + d);
        __m512 x1 = _mm512_maskz_loadu_ps((__mmask16)((1u << m1) - 1), src + d + 16);
        __m256i b0 = _mm512_cvtepi32_epi16(_mm512_srli_epi32(zl_bf16_round_bits(x0), 16));
        __m256i b1 = _mm512_cvtepi32_epi16(_mm512_srli_epi32(zl_bf16_round_bits(x1), 16));
        __m512i pr = _mm512_inserti64x4(_mm512_castsi256_si512(b0), b1, 1);
        __mmask16 mk = (__mmask16)((1u << ((m + 1) / 2)) - 1);
        if (stride == 1) _mm512_mask_storeu_epi32(dst + d / 2, mk, pr);
        else _mm512_mask_i32scatter_epi32(dst + (size_t)(d / 2) * stride, mk, sidx, pr, 4);
    }
}

#define DP4(r, b)                                                                      \
    do {                                                                               \
        a##r##0 = _mm512_dpbf16_ps(a##r##0, x0, b);                                    \
        if (NV > 1) a##r##1 = _mm512_dpbf16_ps(a##r##1, x1, b);                        \
        if (NV > 2) a##r##2 = _mm512_dpbf16_ps(a##r##2, x2, b);                        \
        if (NV > 3) a##r##3 = _mm512_dpbf16_ps(a##r##3, x3, b);                        \
    } while (0)
#define LDBH(p) ((__m512bh)_mm512_load_si512((const void *)(p)))
#define SETBH(u) ((__m512bh)_mm512_set1_epi32((int)(u)))

/* St[j..j+JN) = qscale · (Kb rows j.. · Qp), NV vectors of queries (JN <= JR); K holds rows of hd2 pairs. */
ZL_BF16K_INLINE void qk_rows_bf16(float *St, const uint32_t *Qp, const uint32_t *K, int j, int hd2, float qscale,
                                  const int NV, const int JN) {
    GRID(DECL)
    const uint32_t *k0 = K + (size_t)j * hd2;
    for (int t = 0; t < hd2; t++) {
        const uint32_t *qp = Qp + (size_t)t * BQ;
        __m512bh x0 = LDBH(qp), x1 = NV > 1 ? LDBH(qp + 16) : x0, x2 = NV > 2 ? LDBH(qp + 32) : x0,
                 x3 = NV > 3 ? LDBH(qp + 48) : x0;
#define QKROW(r) if (JN > r) DP4(r, SETBH(k0[(size_t)(r) * hd2 + t]));
        QKROW(0) QKROW(1) QKROW(2) QKROW(3) QKROW(4) QKROW(5)
#undef QKROW
    }
    const __m512 qs = _mm512_set1_ps(qscale);
#define QKST(r, v) \
    if (JN > r && NV > v) _mm512_store_ps(St + (size_t)(j + r) * BQ + 16 * v, _mm512_mul_ps(a##r##v, qs));
    GRID(QKST)
#undef QKST
}

/* Ot[d..d+DN) = α·Ot + Σ_t Vb[t][d..] · Pp[t] over np key pairs, NV vectors of queries (DN <= DR). */
ZL_BF16K_INLINE void pv_rows_bf16(float *Ot, const uint32_t *Pp, const uint32_t *V, int hd, const float *al, int d,
                                  int np, const int NV, const int DN) {
    GRID(DECL)
    {
        __m512 x0 = _mm512_load_ps(al), x1 = _mm512_load_ps(al + 16), x2 = _mm512_load_ps(al + 32),
               x3 = _mm512_load_ps(al + 48);
#define PVLD(r, v) \
    if (DN > r && NV > v) a##r##v = _mm512_mul_ps(x##v, _mm512_load_ps(Ot + (size_t)(d + r) * BQ + 16 * v));
        GRID(PVLD)
#undef PVLD
    }
    const uint32_t *v0 = V + d;
    for (int t = 0; t < np; t++) {
        const uint32_t *p = Pp + (size_t)t * BQ;
        __m512bh x0 = LDBH(p), x1 = NV > 1 ? LDBH(p + 16) : x0, x2 = NV > 2 ? LDBH(p + 32) : x0,
                 x3 = NV > 3 ? LDBH(p + 48) : x0;
        const uint32_t *vr = v0 + (size_t)t * hd;
#define PVROW(r) if (DN > r) DP4(r, SETBH(vr[r]));
        PVROW(0) PVROW(1) PVROW(2) PVROW(3) PVROW(4) PVROW(5)
#undef PVROW
    }
#define PVST(r, v) if (DN > r && NV > v) _mm512_store_ps(Ot + (size_t)(d + r) * BQ + 16 * v, a##r##v);
    GRID(PVST)
#undef PVST
}

#endif
#endif
