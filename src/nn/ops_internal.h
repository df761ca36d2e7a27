/* ops_internal.h — what the src/nn sources share, and the knobs tests and benchmarks use to run each kernel
 * variant (model code never includes this). Every op has up to three implementations:
 *   SIMD      hand-vectorised AVX-512 (x86-64, chosen at run time when the CPU has avx512f);
 *   GENERIC   the same algorithm in portable C;
 *   FALLBACK  the path taken when scratch memory cannot be allocated (no heap use at all): BF16 linear
 *             as per-row dot products, branches through a small stack buffer, attention row by row.
 * AUTO picks SIMD where the CPU allows it, else GENERIC; FALLBACK is only used on allocation failure.
 */
#ifndef ZL_OPS_INTERNAL_H
#define ZL_OPS_INTERNAL_H
#include <stddef.h>
#include <stdint.h>
#include <string.h>

enum { ZL_KERNELS_AUTO = 0, ZL_KERNELS_GENERIC = 1, ZL_KERNELS_FALLBACK = 2 };

/* Forces a kernel family for every later op call (process-wide; for tests and benchmarks only, not
 * thread-safe against concurrent op calls). */
void zl_ops_set_kernels(int kernels);
/* 1 when the SIMD kernels can run on this CPU. */
int zl_ops_have_simd(void);
/* Rows of W converted per tile on the BF16 linear path (0 = automatic, by size). For tests. */
void zl_ops_set_bf16_tile_rows(int rows);
/* Largest n for which BF16 linear uses direct dot products instead of tile conversion + sgemm
 * (-1 = automatic). For tests and benchmarks. */
void zl_ops_set_bf16_direct_max_n(int n);

/* bf16 compute (zl_ops_set_bf16_gemm in ops.h): which kernel multiplies. AUTO: oneDNN's matmul
 * (linear_dnnl.c) when it is built in, the kernels are SIMD and the CPU has AVX512_BF16, else EMULATE.
 * EMULATE: x rounded to bf16 (into an f32 copy, or on the fly on the direct path), then the fp32 path:
 * the same numbers up to fp32 summation order, without the speed. For tests and benchmarks. */
enum { ZL_BF16_GEMM_AUTO = 0, ZL_BF16_GEMM_EMULATE = 1 };
void zl_ops_set_bf16_gemm_backend(int backend);
/* How many zl_op_linear calls so far ran on a bf16 kernel (for tests; not atomic). */
long zl_ops_bf16_fast_calls(void);
/* 1 when the CPU has AVX512F and AVX512_BF16 (vdpbf16ps). */
int zl_ops_have_avx512bf16(void);
/* Attention in bf16 compute (attention.c): AUTO runs the AVX512_BF16 kernel where the CPU has it and the
 * kernels are SIMD; EMULATE the fp32 kernels with the same roundings. Separate from the linear backend.
 * For tests and benchmarks. */
void zl_ops_set_attention_bf16_backend(int backend);
/* How many zl_op_attention calls so far ran on the AVX512_BF16 kernel (for tests; not atomic). The backend
 * applies to zl_op_attention_backward too; its count is zl_ops_attention_backward_bf16_fast_calls. */
long zl_ops_attention_bf16_fast_calls(void);
long zl_ops_attention_backward_bf16_fast_calls(void);
int zl_ops_attention_bf16_backend_(void);

/* ---- shared between ops.c, linear.c and attention.c ---- */
/* The family to run now: ZL_KERNELS_SIMD (internal value 3), GENERIC or FALLBACK. */
#define ZL_KERNELS_SIMD 3
int zl_ops_kernels_(void);
int zl_ops_bf16_tile_rows_(void);
int zl_ops_bf16_direct_max_n_(void);
/* linear_dnnl.c: y [n, out] = bf16(x) [n, in] · wᵀ (+ bias [out]), w [out, in] bf16, fp32 accumulation
 * and output, with oneDNN. Returns -1 (y undefined) when oneDNN is not built in, fails, or only offers
 * a kernel without bf16 instructions. _available_: 1 when built with oneDNN. */
int zl_bf16_gemm_dnnl_(float *y, const float *x, const uint16_t *w, const float *bias, int n, int out, int in);
/* linear_dnnl.c: dx [n, in] = bf16(dy) [n, out] · w [out, in] (accumulate: dx += ...), fp32 accumulation and
 * output: the input gradient of the bf16-compute linear. -1 when it cannot run as above; dx is untouched
 * then, unless oneDNN failed while executing (never seen; dx undefined). */
int zl_bf16_gemm_dx_dnnl_(float *dx, const float *dy, const uint16_t *w, int n, int out, int in, int accumulate);
int zl_bf16_gemm_dnnl_available_(void);
/* linear.c: dst [cnt] = bf16(src) (nearest even), OpenMP over blocks when big. */
void zl_f32_to_bf16_par_(uint16_t *dst, const float *src, size_t cnt);
/* linear_lowrank.c: one pass over A [n, m] (row stride lda) for the rank side of a low-rank branch, c columns:
 *   R [n, c] (row stride ldr) = A · P, P(j, k) = P[j·ldp + k], or P[k·ldp + j] when p_t   (P or R NULL: not formed)
 *   G += alpha · Aᵀ · Q, Q [n, c] (row stride ldq), G(j, k) = G[j·ldg + k], or G[k·ldg + j] when g_t
 *                                                                                      (Q or G NULL: not formed)
 * AVX-512; returns -1 (nothing written) on a CPU without it or when its scratch cannot be allocated. The
 * result does not depend on thread timing. */
int zl_lowrank_pass_(const float *A, int n, int m, size_t lda, const float *P, size_t ldp, int p_t, float *R,
                     size_t ldr, const float *Q, size_t ldq, float *G, size_t ldg, int g_t, float alpha, int c);

/* x rounded to the nearest bf16 (ties to even), as f32; NaN stays NaN (quieted), as zl_f32_to_bf16. */
static inline float zl_bf16_round(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u) u |= 0x400000u;
    else u += 0x7fffu + ((u >> 16) & 1u);
    u &= 0xffff0000u;
    memcpy(&f, &u, 4);
    return f;
}

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define ZL_X86_SIMD 1
#include <immintrin.h>
#define ZL_AVX512 __attribute__((target("avx512f")))
#define ZL_AVX512_INLINE static inline __attribute__((always_inline, target("avx512f")))

/* 2^x for x <= 0 (or small positive), ~1 ulp: x = n + r, |r| <= 1/2, 2^r by a degree-7 Taylor
 * polynomial, then scaled by 2^n. x below -150 (and -inf) gives 0; NaN stays NaN. */
ZL_AVX512_INLINE __m512 zl_exp2_ps(__m512 x) {
    x = _mm512_max_ps(_mm512_set1_ps(-150.0f), x); /* NaN in x is returned (second operand) */
    x = _mm512_min_ps(_mm512_set1_ps(128.0f), x);
    __m512 n = _mm512_roundscale_ps(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_sub_ps(x, n);
    /* coefficients ln2^k / k! */
    __m512 p = _mm512_set1_ps(1.5252733804059841e-05f);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.5403530393381606e-04f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.3333558146428443e-03f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(9.6181291076284772e-03f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.5504108664821580e-02f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(2.4022650695910071e-01f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(6.9314718055994531e-01f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
    return _mm512_scalef_ps(p, n);
}

/* e^x, ~2 ulp over the whole float range (Cody–Waite reduction x = n·ln2 + r, |r| <= ln2/2, degree-7
 * Taylor polynomial of e^r). Overflow gives inf, underflow 0. */
ZL_AVX512_INLINE __m512 zl_exp_ps(__m512 x) {
    x = _mm512_max_ps(_mm512_set1_ps(-104.0f), x);
    x = _mm512_min_ps(_mm512_set1_ps(89.0f), x);
    __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                    _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693145751953125f), x);   /* ln2 hi (exact n·hi) */
    r = _mm512_fnmadd_ps(n, _mm512_set1_ps(1.428606765330187e-06f), r);      /* ln2 lo */
    __m512 p = _mm512_set1_ps(1.0f / 5040.0f);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 720.0f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 120.0f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 24.0f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 6.0f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.5f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
    return _mm512_scalef_ps(p, n);
}
/* The same rounding, 16 lanes: the bits of the rounded value (low 16 bits zero). */
ZL_AVX512_INLINE __m512i zl_bf16_round_bits(__m512 v) {
    __m512i u = _mm512_castps_si512(v);
    __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(1));
    __m512i r = _mm512_add_epi32(u, _mm512_add_epi32(lsb, _mm512_set1_epi32(0x7fff)));
    __mmask16 nan = _mm512_cmpgt_epu32_mask(_mm512_and_si512(u, _mm512_set1_epi32(0x7fffffff)),
                                            _mm512_set1_epi32(0x7f800000));
    r = _mm512_mask_or_epi32(r, nan, u, _mm512_set1_epi32(0x400000));
    return _mm512_and_si512(r, _mm512_set1_epi32((int)0xffff0000u));
}

#endif

#endif
