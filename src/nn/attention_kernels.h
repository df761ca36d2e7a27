/* attention_kernels.h — the register-blocked AVX-512 products shared by the attention forward
 * (attention.c) and backward (attention_grad.c). Internal to src/nn; the includer defines BQ, the number of
 * lanes (64: four vectors of 16) of the transposed blocks these kernels read and write:
 *   qk_rows  St[j][lanes] = Σ_d K[j][d] · Qt[d][lanes]           rows of a matrix times a transposed block
 *   pv_rows  Ot[d][lanes] = α[lanes]·Ot[d][lanes] + Σ_j V[j][d] · P[j][lanes]
 * The forward uses them as S = K·Qᵀ and O = α·O + Vᵀ·P with queries along the lanes; the backward also
 * with keys along the lanes. */
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

#endif
#endif
