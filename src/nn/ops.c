/* ops.c — see ops.h: the elementwise ops, norms, RoPE, timestep embedding, patchify, thread control and
 * kernel selection (ops_internal.h). zl_op_linear lives in linear.c, zl_op_attention in attention.c.
 *
 * Elementwise ops run OpenMP over rows once the work is big enough to pay for waking the threads;
 * SiLU has an AVX-512 path (the only one of these that is compute-bound, because of exp).
 */
#include "nn/ops.h"
#include "nn/ops_internal.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <omp.h>
#include <cblas.h>

/* Elementwise work below this many elements runs on the calling thread. */
#define PAR_MIN 32768

/* ------------------------------------------------------------------ kernel selection */

static int forced_kernels = ZL_KERNELS_AUTO;
static int bf16_tile_rows = 0;
static int bf16_direct_max_n = -1;

void zl_ops_set_kernels(int kernels) { forced_kernels = kernels; }
void zl_ops_set_bf16_tile_rows(int rows) { bf16_tile_rows = rows > 0 ? rows : 0; }
void zl_ops_set_bf16_direct_max_n(int n) { bf16_direct_max_n = n; }
int zl_ops_bf16_tile_rows_(void) { return bf16_tile_rows; }
int zl_ops_bf16_direct_max_n_(void) { return bf16_direct_max_n; }

int zl_ops_have_simd(void) {
#ifdef ZL_X86_SIMD
    __builtin_cpu_init(); /* cheap and idempotent; needed if called from a constructor */
    return __builtin_cpu_supports("avx512f") ? 1 : 0;
#else
    return 0;
#endif
}

int zl_ops_kernels_(void) {
    if (forced_kernels == ZL_KERNELS_GENERIC || forced_kernels == ZL_KERNELS_FALLBACK) return forced_kernels;
    return zl_ops_have_simd() ? ZL_KERNELS_SIMD : ZL_KERNELS_GENERIC;
}

static int threads_explicit = 0;

void zl_ops_auto_threads(int width) {
    if (threads_explicit || getenv("OMP_NUM_THREADS") || width >= 1024) return;
    omp_set_num_threads(1);
#ifdef OPENBLAS_VERSION
    openblas_set_num_threads(1);
#endif
}

void zl_ops_set_threads(int n) {
    static int default_threads = 0;
    if (!default_threads) default_threads = omp_get_max_threads();
    if (n > 0) threads_explicit = 1;
    int t = n > 0 ? n : default_threads;
    omp_set_num_threads(t);
#ifdef OPENBLAS_VERSION
    openblas_set_num_threads(t);
#endif
}

/* ------------------------------------------------------------------ norms */

/* y [n, d] = x · rsqrt(mean(x²) + eps) · w. Sum of squares in double (4 partial sums). */
void zl_op_rmsnorm(float *y, const float *x, const float *w, int n, int d, float eps) {
    if (n <= 0 || d <= 0) return;
#pragma omp parallel for schedule(static) if ((size_t)n * (size_t)d >= PAR_MIN)
    for (int r = 0; r < n; r++) {
        const float *xr = x + (size_t)r * d;
        float *yr = y + (size_t)r * d;
        double s0 = 0, s1 = 0, s2 = 0, s3 = 0;
        int i = 0;
        for (; i + 4 <= d; i += 4) {
            s0 += (double)xr[i] * xr[i];
            s1 += (double)xr[i + 1] * xr[i + 1];
            s2 += (double)xr[i + 2] * xr[i + 2];
            s3 += (double)xr[i + 3] * xr[i + 3];
        }
        for (; i < d; i++) s0 += (double)xr[i] * xr[i];
        float rs = (float)(1.0 / sqrt((s0 + s1 + s2 + s3) / d + (double)eps));
        if (w)
            for (i = 0; i < d; i++) yr[i] = xr[i] * rs * w[i];
        else
            for (i = 0; i < d; i++) yr[i] = xr[i] * rs;
    }
}

/* y [n, d] = (x − mean) · rsqrt(var + eps), biased variance, two passes in double. */
void zl_op_layernorm(float *y, const float *x, int n, int d, float eps) {
    if (n <= 0 || d <= 0) return;
#pragma omp parallel for schedule(static) if ((size_t)n * (size_t)d >= PAR_MIN)
    for (int r = 0; r < n; r++) {
        const float *xr = x + (size_t)r * d;
        float *yr = y + (size_t)r * d;
        double s = 0;
        for (int i = 0; i < d; i++) s += xr[i];
        double mean = s / d, v = 0;
        for (int i = 0; i < d; i++) { double t = xr[i] - mean; v += t * t; }
        float rs = (float)(1.0 / sqrt(v / d + (double)eps));
        float m = (float)mean;
        for (int i = 0; i < d; i++) yr[i] = (xr[i] - m) * rs;
    }
}

/* ------------------------------------------------------------------ elementwise */

void zl_op_modulate(float *y, const float *x, const float *scale, int n, int d) {
    if (n <= 0 || d <= 0) return;
#pragma omp parallel for schedule(static) if ((size_t)n * (size_t)d >= PAR_MIN)
    for (int r = 0; r < n; r++) {
        const float *xr = x + (size_t)r * d;
        float *yr = y + (size_t)r * d;
        for (int i = 0; i < d; i++) yr[i] = xr[i] * (1.0f + scale[i]);
    }
}

/* x += tanh(gate) · y. tanh is taken once per column per thread, in chunks of GCHUNK columns. */
#define GCHUNK 1024
void zl_op_gated_residual(float *x, const float *y, const float *gate, int n, int d) {
    if (n <= 0 || d <= 0) return;
    if (!gate) {
        zl_op_add(x, x, y, (size_t)n * (size_t)d);
        return;
    }
#pragma omp parallel if ((size_t)n * (size_t)d >= PAR_MIN)
    {
        float tg[GCHUNK];
        for (int c0 = 0; c0 < d; c0 += GCHUNK) {
            int nc = d - c0 < GCHUNK ? d - c0 : GCHUNK;
            for (int c = 0; c < nc; c++) tg[c] = tanhf(gate[c0 + c]);
#pragma omp for schedule(static) nowait
            for (int r = 0; r < n; r++) {
                float *xr = x + (size_t)r * d + c0;
                const float *yr = y + (size_t)r * d + c0;
                for (int c = 0; c < nc; c++) xr[c] += tg[c] * yr[c];
            }
        }
    }
}

void zl_op_add(float *y, const float *a, const float *b, size_t n) {
#pragma omp parallel for schedule(static) if (n >= PAR_MIN)
    for (size_t i = 0; i < n; i++) y[i] = a[i] + b[i];
}

/* silu(a)·b over [i0, i1): b NULL means ·1. Scalar reference form: a / (1 + e^−a). */
static void silu_generic(float *y, const float *a, const float *b, size_t i0, size_t i1) {
    if (b)
        for (size_t i = i0; i < i1; i++) y[i] = a[i] / (1.0f + expf(-a[i])) * b[i];
    else
        for (size_t i = i0; i < i1; i++) y[i] = a[i] / (1.0f + expf(-a[i]));
}

#ifdef ZL_X86_SIMD
ZL_AVX512 static void silu_avx512(float *y, const float *a, const float *b, size_t i0, size_t i1) {
    const __m512 one = _mm512_set1_ps(1.0f);
    size_t i = i0;
    for (; i + 16 <= i1; i += 16) {
        __m512 av = _mm512_loadu_ps(a + i);
        __m512 e = zl_exp_ps(_mm512_sub_ps(_mm512_setzero_ps(), av));
        __m512 s = _mm512_div_ps(av, _mm512_add_ps(one, e));
        if (b) s = _mm512_mul_ps(s, _mm512_loadu_ps(b + i));
        _mm512_storeu_ps(y + i, s);
    }
    if (i < i1) {
        __mmask16 m = (__mmask16)((1u << (i1 - i)) - 1u);
        __m512 av = _mm512_maskz_loadu_ps(m, a + i);
        __m512 e = zl_exp_ps(_mm512_sub_ps(_mm512_setzero_ps(), av));
        __m512 s = _mm512_div_ps(av, _mm512_add_ps(one, e));
        if (b) s = _mm512_mul_ps(s, _mm512_maskz_loadu_ps(m, b + i));
        _mm512_mask_storeu_ps(y + i, m, s);
    }
}
#endif

static void silu_any(float *y, const float *a, const float *b, size_t n) {
    int simd = zl_ops_kernels_() == ZL_KERNELS_SIMD;
    (void)simd;
    size_t chunk = 4096, nchunk = (n + chunk - 1) / chunk;
#pragma omp parallel for schedule(static) if (n >= PAR_MIN / 4)
    for (size_t c = 0; c < nchunk; c++) {
        size_t i0 = c * chunk, i1 = i0 + chunk < n ? i0 + chunk : n;
#ifdef ZL_X86_SIMD
        if (simd) { silu_avx512(y, a, b, i0, i1); continue; }
#endif
        silu_generic(y, a, b, i0, i1);
    }
}

void zl_op_silu_mul(float *y, const float *a, const float *b, size_t n) { silu_any(y, a, b, n); }
void zl_op_silu(float *y, const float *x, size_t n) { silu_any(y, x, NULL, n); }

/* ------------------------------------------------------------------ timestep embedding */

/* As PyTorch computes it in float32: f_k = exp(float(−ln(max_period)) · k / half), arg = t·f_k. An odd dim
 * gets a trailing 0 (the reference pads with a zero column). */
void zl_op_timestep_embedding(float *e, float t, int dim, float max_period) {
    int half = dim / 2;
    float a = (float)(-log((double)max_period));
    for (int k = 0; k < half; k++) {
        float f = expf(a * (float)k / (float)half);
        float arg = t * f;
        e[k] = cosf(arg);
        e[half + k] = sinf(arg);
    }
    if (dim % 2) e[dim - 1] = 0.0f;
}

/* ------------------------------------------------------------------ RoPE */

/* One (cos, sin) entry: the angle is formed in double, rounded to float (as the references do with
 * `.float()` before torch.polar / cos), then cos and sin of that float angle, rounded to float. */
static inline void rope_entry(float *cs, double pos, double freq) {
    float ang = (float)(pos * freq);
    cs[0] = (float)cos((double)ang);
    cs[1] = (float)sin((double)ang);
}

/* Pair p of the concatenated axes: its axis a and index k inside it. */
#define ROPE_MAXPAIRS 1024
void zl_rope_table_3axis(float *cs, const int32_t *ids, int n, const int *axes_dims, double theta) {
    int np = (axes_dims[0] / 2) + (axes_dims[1] / 2) + (axes_dims[2] / 2);
    if (n <= 0 || np <= 0) return;
    double freq[ROPE_MAXPAIRS]; /* tables beyond ROPE_MAXPAIRS pairs compute each freq in place */
    int cached = np <= ROPE_MAXPAIRS;
    if (cached)
        for (int a = 0, p = 0; a < 3; a++)
            for (int k = 0; k < axes_dims[a] / 2; k++, p++)
                freq[p] = 1.0 / pow(theta, (double)(2 * k) / (double)axes_dims[a]);
#pragma omp parallel for schedule(static) if ((size_t)n * (size_t)np >= PAR_MIN / 8)
    for (int t = 0; t < n; t++) {
        float *row = cs + (size_t)t * np * 2;
        for (int a = 0, p = 0; a < 3; a++)
            for (int k = 0; k < axes_dims[a] / 2; k++, p++) {
                double f = cached ? freq[p] : 1.0 / pow(theta, (double)(2 * k) / (double)axes_dims[a]);
                rope_entry(row + 2 * p, (double)ids[3 * t + a], f);
            }
    }
}

void zl_rope_table_1d(float *cs, int pos0, int n, int hd, double theta) {
    int nf = hd / 2;
#pragma omp parallel for schedule(static) if ((size_t)n * (size_t)nf >= PAR_MIN / 8)
    for (int t = 0; t < n; t++) {
        float *row = cs + (size_t)t * nf * 2;
        for (int k = 0; k < nf; k++)
            rope_entry(row + 2 * k, (double)pos0 + t, 1.0 / pow(theta, (double)(2 * k) / (double)hd));
    }
}

void zl_op_rope(float *x, const float *cs, int n, int heads, int hd, int interleaved) {
    int np = hd / 2;
    if (n <= 0 || heads <= 0 || np <= 0) return;
#pragma omp parallel for schedule(static) if ((size_t)n * (size_t)heads * (size_t)hd >= PAR_MIN)
    for (int t = 0; t < n; t++) {
        const float *c = cs + (size_t)t * np * 2;
        for (int h = 0; h < heads; h++) {
            float *v = x + ((size_t)t * heads + h) * hd;
            if (interleaved) {
                for (int j = 0; j < np; j++) {
                    float x0 = v[2 * j], x1 = v[2 * j + 1], co = c[2 * j], si = c[2 * j + 1];
                    v[2 * j] = x0 * co - x1 * si;
                    v[2 * j + 1] = x0 * si + x1 * co;
                }
            } else {
                for (int j = 0; j < np; j++) {
                    float x0 = v[j], x1 = v[j + np], co = c[2 * j], si = c[2 * j + 1];
                    v[j] = x0 * co - x1 * si;
                    v[j + np] = x0 * si + x1 * co;
                }
            }
        }
    }
}

/* ------------------------------------------------------------------ patchify */

/* tok [(H/p)(W/p), p·p·C]: tok[h·(W/p)+w][(ph·p+pw)·C + c] = x[c][h·p+ph][w·p+pw]. */
void zl_op_patchify(float *tok, const float *x, int C, int H, int W, int p) {
    int Hp = H / p, Wp = W / p, f = p * p * C;
#pragma omp parallel for schedule(static) if ((size_t)C * H * W >= PAR_MIN)
    for (int h = 0; h < Hp; h++)
        for (int w = 0; w < Wp; w++) {
            float *t = tok + ((size_t)h * Wp + w) * f;
            for (int ph = 0; ph < p; ph++)
                for (int pw = 0; pw < p; pw++)
                    for (int c = 0; c < C; c++)
                        t[(ph * p + pw) * C + c] = x[((size_t)c * H + (size_t)h * p + ph) * W + (size_t)w * p + pw];
        }
}

void zl_op_unpatchify(float *x, const float *tok, int C, int H, int W, int p) {
    int Hp = H / p, Wp = W / p, f = p * p * C;
#pragma omp parallel for schedule(static) if ((size_t)C * H * W >= PAR_MIN)
    for (int h = 0; h < Hp; h++)
        for (int w = 0; w < Wp; w++) {
            const float *t = tok + ((size_t)h * Wp + w) * f;
            for (int ph = 0; ph < p; ph++)
                for (int pw = 0; pw < p; pw++)
                    for (int c = 0; c < C; c++)
                        x[((size_t)c * H + (size_t)h * p + ph) * W + (size_t)w * p + pw] = t[(ph * p + pw) * C + c];
        }
}

/* memmove: src may be one of the rows being filled. */
void zl_op_fill_rows(float *x, const float *src, int from, int to, int d) {
    for (int r = from; r < to; r++) memmove(x + (size_t)r * d, src, sizeof(float) * (size_t)d);
}
