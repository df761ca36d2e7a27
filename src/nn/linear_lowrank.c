/* linear_lowrank.c — the rank side of the low-rank branches (linear.c): the products of an activation matrix
 * [n, m] (x or dy) with a factor that is only r (typically 4–64) columns wide. BLAS runs them far below
 * its peak (a [1024, 10240] · [10240, 16] product took OpenBLAS 11.7 ms on 2 cores, 19 MFLOP per ms, where
 * reading the matrix once takes ≈ 2 ms), and the backward needs two of them over the same dy. Here one
 * pass over the matrix does both, with the ranks in the lanes of one AVX-512 vector (16 at a time):
 *   R = A · P           each row of A against P [m, c]: broadcast A[i][j], fma with P's row j
 *   G += alpha · Aᵀ · Q  each element of A scattered into G's row j with Q's row i
 * Rows of A are split between threads; each thread sums its G in a private [m, 16] buffer, added in a
 * fixed order at the end (the result does not depend on timing). AVX-512 only; linear.c keeps its BLAS
 * path for the GENERIC and FALLBACK kernels and when this returns -1.
 */
#include "nn/ops_internal.h"

#include <omp.h>
#include <stdlib.h>
#include <string.h>

#define RB 8 /* rows of A per block: 8 accumulators of R + 8 rows of Q + 4 of P + 4 of G in registers */

#ifdef ZL_X86_SIMD

/* One block of nb (RB or 1) rows of A [nb, m] (row stride lda): R [nb, 16] = A · pb [m, 16] when dop,
 * g [m, 16] += Aᵀ · Q when dog (Q [nb, 16] rows with stride ldq, masked to mk). R stored masked to mk. */
ZL_AVX512_INLINE void lr_rows(int nb, const float *A, size_t lda, int m, const float *pb, float *R, size_t ldr,
                              const float *Q, size_t ldq, float *g, __mmask16 mk, int dop, int dog) {
    __m512 acc[RB], q[RB];
#pragma GCC unroll 8
    for (int k = 0; k < nb; k++) {
        acc[k] = _mm512_setzero_ps();
        q[k] = dog ? _mm512_maskz_loadu_ps(mk, Q + (size_t)k * ldq) : _mm512_setzero_ps();
    }
    int j = 0;
    for (; j + 4 <= m; j += 4) {
        __m512 p0 = _mm512_setzero_ps(), p1 = p0, p2 = p0, p3 = p0, g0 = p0, g1 = p0, g2 = p0, g3 = p0;
        if (dop) {
            p0 = _mm512_loadu_ps(pb + (size_t)j * 16);
            p1 = _mm512_loadu_ps(pb + (size_t)j * 16 + 16);
            p2 = _mm512_loadu_ps(pb + (size_t)j * 16 + 32);
            p3 = _mm512_loadu_ps(pb + (size_t)j * 16 + 48);
        }
        if (dog) {
            g0 = _mm512_loadu_ps(g + (size_t)j * 16);
            g1 = _mm512_loadu_ps(g + (size_t)j * 16 + 16);
            g2 = _mm512_loadu_ps(g + (size_t)j * 16 + 32);
            g3 = _mm512_loadu_ps(g + (size_t)j * 16 + 48);
        }
#pragma GCC unroll 8
        for (int k = 0; k < nb; k++) {
            const float *a = A + (size_t)k * lda + j;
            __m512 a0 = _mm512_set1_ps(a[0]), a1 = _mm512_set1_ps(a[1]), a2 = _mm512_set1_ps(a[2]),
                   a3 = _mm512_set1_ps(a[3]);
            if (dop) {
                acc[k] = _mm512_fmadd_ps(a0, p0, acc[k]);
                acc[k] = _mm512_fmadd_ps(a1, p1, acc[k]);
                acc[k] = _mm512_fmadd_ps(a2, p2, acc[k]);
                acc[k] = _mm512_fmadd_ps(a3, p3, acc[k]);
            }
            if (dog) {
                g0 = _mm512_fmadd_ps(a0, q[k], g0);
                g1 = _mm512_fmadd_ps(a1, q[k], g1);
                g2 = _mm512_fmadd_ps(a2, q[k], g2);
                g3 = _mm512_fmadd_ps(a3, q[k], g3);
            }
        }
        if (dog) {
            _mm512_storeu_ps(g + (size_t)j * 16, g0);
            _mm512_storeu_ps(g + (size_t)j * 16 + 16, g1);
            _mm512_storeu_ps(g + (size_t)j * 16 + 32, g2);
            _mm512_storeu_ps(g + (size_t)j * 16 + 48, g3);
        }
    }
    for (; j < m; j++) {
        __m512 p = dop ? _mm512_loadu_ps(pb + (size_t)j * 16) : _mm512_setzero_ps();
        __m512 gj = dog ? _mm512_loadu_ps(g + (size_t)j * 16) : _mm512_setzero_ps();
        for (int k = 0; k < nb; k++) {
            __m512 a = _mm512_set1_ps(A[(size_t)k * lda + j]);
            if (dop) acc[k] = _mm512_fmadd_ps(a, p, acc[k]);
            if (dog) gj = _mm512_fmadd_ps(a, q[k], gj);
        }
        if (dog) _mm512_storeu_ps(g + (size_t)j * 16, gj);
    }
    if (dop)
        for (int k = 0; k < nb; k++) _mm512_mask_storeu_ps(R + (size_t)k * ldr, mk, acc[k]);
}

/* Rows [i0, i1) of A in blocks of RB, then one at a time; each (rows, R, G) case a specialisation the
 * compiler unrolls. */
#define LR_CASE(NB)                                                                                           \
    do {                                                                                                      \
        const float *Ai = A + (size_t)i * lda, *Qi = dog ? Q + (size_t)i * ldq : NULL;                        \
        float *Ri = dop ? R + (size_t)i * ldr : NULL;                                                         \
        if (dop && dog) lr_rows(NB, Ai, lda, m, pb, Ri, ldr, Qi, ldq, g, mk, 1, 1);                           \
        else if (dop) lr_rows(NB, Ai, lda, m, pb, Ri, ldr, NULL, 0, NULL, mk, 1, 0);                          \
        else lr_rows(NB, Ai, lda, m, NULL, NULL, 0, Qi, ldq, g, mk, 0, 1);                                    \
    } while (0)
ZL_AVX512 static void lr_range(int i0, int i1, const float *A, size_t lda, int m, const float *pb, float *R,
                               size_t ldr, const float *Q, size_t ldq, float *g, __mmask16 mk, int dop, int dog) {
    int i = i0;
    for (; i + RB <= i1; i += RB) LR_CASE(RB);
    for (; i < i1; i++) LR_CASE(1);
}
#undef LR_CASE

int zl_lowrank_pass_(const float *A, int n, int m, size_t lda, const float *P, size_t ldp, int p_t, float *R,
                     size_t ldr, const float *Q, size_t ldq, float *G, size_t ldg, int g_t, float alpha, int c) {
    int dop = P && R, dog = Q && G;
    if (n <= 0 || m <= 0 || c <= 0 || (!dop && !dog)) return 0;
    if (!zl_ops_have_simd()) return -1;
    int par = (size_t)n * (size_t)m >= (1u << 16), nt = par ? omp_get_max_threads() : 1;
    if (nt > n) nt = n;
    if (nt < 1) nt = 1;
    float *pb = dop ? malloc(sizeof(float) * 16 * (size_t)m) : NULL;
    float *gp = dog ? malloc(sizeof(float) * 16 * (size_t)m * (size_t)nt) : NULL;
    if ((dop && !pb) || (dog && !gp)) {
        free(pb);
        free(gp);
        return -1;
    }
    for (int k0 = 0; k0 < c; k0 += 16) {
        int kc = c - k0 < 16 ? c - k0 : 16;
        __mmask16 mk = (__mmask16)((1u << kc) - 1u);
        if (dop) /* P's columns k0 .. k0 + kc as rows of 16 (zero padded) */
            for (int j = 0; j < m; j++)
                for (int k = 0; k < 16; k++)
                    pb[(size_t)j * 16 + k] = k >= kc ? 0.0f : p_t ? P[(size_t)(k0 + k) * ldp + j] : P[(size_t)j * ldp + k0 + k];
        int used = nt;
#pragma omp parallel num_threads(nt) if (nt > 1)
        {
            int id = omp_get_thread_num(), th = omp_get_num_threads();
            if (id == 0) used = th;
            int i0 = (int)((long long)n * id / th), i1 = (int)((long long)n * (id + 1) / th);
            float *g = dog ? gp + (size_t)id * 16 * (size_t)m : NULL;
            if (g) memset(g, 0, sizeof(float) * 16 * (size_t)m);
            lr_range(i0, i1, A, lda, m, pb, dop ? R + k0 : NULL, ldr, dog ? Q + k0 : NULL, ldq, g, mk, dop, dog);
        }
        if (dog) /* G (j, k0 + k) += alpha · Σ_threads, threads in order */
#pragma omp parallel for schedule(static) if (par)
            for (int j = 0; j < m; j++)
                for (int k = 0; k < kc; k++) {
                    float s = 0.0f;
                    for (int t = 0; t < used; t++) s += gp[((size_t)t * m + j) * 16 + k];
                    float *dst = g_t ? &G[(size_t)(k0 + k) * ldg + j] : &G[(size_t)j * ldg + k0 + k];
                    *dst += alpha * s;
                }
    }
    free(pb);
    free(gp);
    return 0;
}

#else

int zl_lowrank_pass_(const float *A, int n, int m, size_t lda, const float *P, size_t ldp, int p_t, float *R,
                     size_t ldr, const float *Q, size_t ldq, float *G, size_t ldg, int g_t, float alpha, int c) {
    (void)A; (void)n; (void)m; (void)lda; (void)P; (void)ldp; (void)p_t; (void)R; (void)ldr; (void)Q; (void)ldq;
    (void)G; (void)ldg; (void)g_t; (void)alpha; (void)c;
    return -1;
}

#endif
