/* test_ops.c — every op of src/nn/ops.h against a plain double-precision loop written here (never the
 * implementation), on odd sizes that are not multiples of any tile or vector width. Ops with several
 * kernels (AVX-512, portable C, no-scratch fallback; see src/nn/ops_internal.h) are run in each one. */
#include "test.h"
#include "base/base.h"
#include "base/dtype.h"
#include "nn/ops.h"
#include "nn/ops_internal.h"

#include <stdlib.h>
#include <string.h>

static const int modes[3] = {ZL_KERNELS_AUTO, ZL_KERNELS_GENERIC, ZL_KERNELS_FALLBACK};
static const char *mode_name[3] = {"auto", "generic", "fallback"};

static float *randv(zl_rng *g, size_t n, float s) {
    float *v = malloc(sizeof(float) * (n ? n : 1));
    for (size_t i = 0; i < n; i++) v[i] = zl_rng_normal(g) * s;
    return v;
}

/* max |a − b| / (1 + |b|) */
static double maxerr(const float *a, const double *b, size_t n) {
    double m = 0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - b[i]) / (1.0 + fabs(b[i]));
        if (!(d <= m)) m = d; /* NaN wins */
    }
    return m;
}

static void reset_kernels(void) {
    zl_ops_set_kernels(ZL_KERNELS_AUTO);
    zl_ops_set_bf16_tile_rows(0);
    zl_ops_set_bf16_direct_max_n(-1);
}

/* ------------------------------------------------------------------ linear */

/* y = x·Wᵀ + bias + Σ scale·(x·downᵀ)·upᵀ + x·deltaᵀ in double, W given as f32 values. */
static double *linear_ref(const float *x, const float *w, const float *bias, const zl_branch *br, int nbr,
                          const float *delta, int n, int in, int out) {
    double *y = malloc(sizeof(double) * (size_t)n * out);
    for (int r = 0; r < n; r++)
        for (int o = 0; o < out; o++) {
            double s = bias ? bias[o] : 0.0;
            for (int i = 0; i < in; i++) s += (double)x[r * in + i] * w[o * in + i];
            if (delta)
                for (int i = 0; i < in; i++) s += (double)x[r * in + i] * delta[o * in + i];
            for (int b = 0; b < nbr; b++)
                for (int k = 0; k < br[b].r; k++) {
                    double t = 0;
                    for (int i = 0; i < in; i++) t += (double)x[r * in + i] * br[b].down[k * in + i];
                    s += br[b].scale * t * br[b].up[o * br[b].r + k];
                }
            y[r * out + o] = s;
        }
    return y;
}

/* Runs L on x in every kernel mode (and, for non-F32, tiles of 16 rows and the direct path for all n)
 * and returns the worst error against ref. */
static double linear_all_modes(const zl_linear *L, const float *x, const double *ref, int n, char *what) {
    double worst = 0;
    float *y = malloc(sizeof(float) * (size_t)n * L->out);
    for (int m = 0; m < 3; m++)
        for (int v = 0; v < (L->dtype == ZL_F32 ? 1 : 3); v++) {
            zl_ops_set_kernels(modes[m]);
            zl_ops_set_bf16_tile_rows(v == 1 ? 16 : 0);
            zl_ops_set_bf16_direct_max_n(v == 2 ? 1 << 30 : -1);
            for (size_t i = 0; i < (size_t)n * L->out; i++) y[i] = NAN;
            zl_op_linear(y, x, L, n);
            double e = maxerr(y, ref, (size_t)n * L->out);
            if (!(e <= worst)) {
                worst = e;
                sprintf(what, "mode %s variant %d n %d", mode_name[m], v, n);
            }
        }
    reset_kernels();
    free(y);
    return worst;
}

TEST(ops_linear_f32) {
    zl_rng g = {1};
    int n = 37, in = 70, out = 45;
    float *x = randv(&g, (size_t)n * in, 1), *w = randv(&g, (size_t)out * in, 0.2f), *b = randv(&g, out, 1);
    zl_linear L = {ZL_F32, w, out, in, b, NULL, 0, NULL, NULL, NULL};
    double *ref = linear_ref(x, w, b, NULL, 0, NULL, n, in, out);
    char what[128] = "";
    double e = linear_all_modes(&L, x, ref, n, what);
    CHECK_MSG(e < 2e-6, "%g (%s)", e, what);
    /* no bias, one row */
    L.bias = NULL;
    double *ref1 = linear_ref(x, w, NULL, NULL, 0, NULL, 1, in, out);
    e = linear_all_modes(&L, x, ref1, 1, what);
    CHECK_MSG(e < 2e-6, "%g (%s)", e, what);
    free(x); free(w); free(b); free(ref); free(ref1);
}

TEST(ops_linear_bf16) {
    zl_rng g = {2};
    int in = 70, out = 45;
    int ns[] = {37, 1, 3, 4, 5, 9};
    float *x = randv(&g, (size_t)37 * in, 1), *w = randv(&g, (size_t)out * in, 0.2f), *b = randv(&g, out, 1);
    uint16_t *wb = malloc(sizeof(uint16_t) * out * in);
    for (int i = 0; i < out * in; i++) {
        wb[i] = zl_f32_to_bf16(w[i]);
        w[i] = zl_bf16_to_f32(wb[i]); /* the reference sees the same rounded values */
    }
    zl_linear L = {ZL_BF16, wb, out, in, b, NULL, 0, NULL, NULL, NULL};
    for (size_t k = 0; k < sizeof ns / sizeof *ns; k++) {
        double *ref = linear_ref(x, w, b, NULL, 0, NULL, ns[k], in, out);
        char what[128] = "";
        double e = linear_all_modes(&L, x, ref, ns[k], what);
        free(ref);
        CHECK_MSG(e < 2e-6, "%g (%s)", e, what);
    }
    /* F16 weights go through the same tiles */
    uint16_t *wh = malloc(sizeof(uint16_t) * out * in);
    for (int i = 0; i < out * in; i++) { wh[i] = zl_f32_to_f16(w[i]); w[i] = zl_f16_to_f32(wh[i]); }
    zl_linear H = {ZL_F16, wh, out, in, NULL, NULL, 0, NULL, NULL, NULL};
    double *ref = linear_ref(x, w, NULL, NULL, 0, NULL, 37, in, out);
    char what[128] = "";
    double e = linear_all_modes(&H, x, ref, 37, what);
    CHECK_MSG(e < 2e-6, "%g (%s)", e, what);
    free(ref); free(x); free(w); free(b); free(wb); free(wh);
}

TEST(ops_linear_branches_delta) {
    zl_rng g = {3};
    int n = 37, in = 70, out = 45;
    int ranks[3] = {3, 5, 120}; /* n·120 > the 4096-float stack buffer: the fallback chunks rows */
    float scales[3] = {0.7f, -1.3f, 0.05f};
    float *x = randv(&g, (size_t)n * in, 1), *w = randv(&g, (size_t)out * in, 0.2f), *b = randv(&g, out, 1);
    float *delta = randv(&g, (size_t)out * in, 0.1f);
    zl_branch br[3];
    for (int k = 0; k < 3; k++)
        br[k] = (zl_branch){randv(&g, (size_t)ranks[k] * in, 0.3f), randv(&g, (size_t)out * ranks[k], 0.3f),
                            ranks[k], scales[k], NULL, NULL, 0.0f, 0};
    uint16_t *wb = malloc(sizeof(uint16_t) * out * in);
    for (int i = 0; i < out * in; i++) { wb[i] = zl_f32_to_bf16(w[i]); w[i] = zl_bf16_to_f32(wb[i]); }
    double *ref = linear_ref(x, w, b, br, 3, delta, n, in, out);
    char what[128] = "";
    zl_linear L = {ZL_F32, w, out, in, b, br, 3, delta, NULL, NULL};
    double e = linear_all_modes(&L, x, ref, n, what);
    CHECK_MSG(e < 5e-6, "f32: %g (%s)", e, what);
    L.dtype = ZL_BF16;
    L.w = wb;
    e = linear_all_modes(&L, x, ref, n, what);
    CHECK_MSG(e < 5e-6, "bf16: %g (%s)", e, what);
    /* n == 0 writes nothing */
    float sentinel = 123.0f;
    zl_op_linear(&sentinel, x, &L, 0);
    CHECK(sentinel == 123.0f);
    free(ref); free(x); free(w); free(b); free(delta); free(wb);
    for (int k = 0; k < 3; k++) { free((void *)br[k].down); free((void *)br[k].up); }
}

/* bf16 compute (zl_ops_set_bf16_gemm): the product uses x rounded to bf16, the adapters the exact x. */
static const int bf16_backends[2] = {ZL_BF16_GEMM_AUTO, ZL_BF16_GEMM_EMULATE};

static double bf16_gemm_case(zl_rng *g, int n, int in, int out, int adapters, int all_modes, char *what) {
    float *x = randv(g, (size_t)n * in, 1), *w = randv(g, (size_t)out * in, 1.0f / sqrtf((float)in));
    float *b = randv(g, out, 1), *delta = adapters ? randv(g, (size_t)out * in, 0.1f) : NULL;
    float *xr = malloc(sizeof(float) * (size_t)n * in), *w0 = calloc((size_t)out * in, sizeof(float));
    uint16_t *wb = malloc(sizeof(uint16_t) * (size_t)out * in);
    for (size_t i = 0; i < (size_t)out * in; i++) { wb[i] = zl_f32_to_bf16(w[i]); w[i] = zl_bf16_to_f32(wb[i]); }
    for (size_t i = 0; i < (size_t)n * in; i++) xr[i] = zl_bf16_to_f32(zl_f32_to_bf16(x[i]));
    int ranks[2] = {3, 120};
    float scales[2] = {0.7f, -0.05f};
    zl_branch br[2];
    for (int k = 0; k < 2; k++)
        br[k] = (zl_branch){randv(g, (size_t)ranks[k] * in, 0.3f), randv(g, (size_t)out * ranks[k], 0.3f), ranks[k],
                            scales[k], NULL, NULL, 0.0f, 0};
    int nbr = adapters ? 2 : 0;
    double *ref = linear_ref(xr, w, b, NULL, 0, NULL, n, in, out);
    double *exact = linear_ref(x, w, b, NULL, 0, NULL, n, in, out);
    if (adapters) {
        double *ad = linear_ref(x, w0, NULL, br, nbr, delta, n, in, out);
        for (size_t i = 0; i < (size_t)n * out; i++) { ref[i] += ad[i]; exact[i] += ad[i]; }
        free(ad);
    }
    zl_linear L = {ZL_BF16, wb, out, in, b, br, nbr, delta, NULL, NULL};
    float *y = malloc(sizeof(float) * (size_t)n * out);
    double worst = 0;
    zl_ops_set_bf16_gemm(1);
    for (int m = 0; m < (all_modes ? 3 : 1); m++)
        for (int v = 0; v < (all_modes ? 3 : 1); v++)
            for (int be = 0; be < 2; be++) {
                zl_ops_set_kernels(modes[m]);
                zl_ops_set_bf16_tile_rows(v == 1 ? 16 : 0);
                zl_ops_set_bf16_direct_max_n(v == 2 ? 1 << 30 : -1);
                zl_ops_set_bf16_gemm_backend(bf16_backends[be]);
                for (size_t i = 0; i < (size_t)n * out; i++) y[i] = NAN;
                zl_op_linear(y, x, &L, n);
                double e = maxerr(y, ref, (size_t)n * out);
                if (!(e <= worst)) {
                    worst = e;
                    sprintf(what, "n %d in %d out %d: mode %s variant %d backend %d", n, in, out, mode_name[m], v,
                            bf16_backends[be]);
                }
            }
    /* the rounding is real: the result is measurably off the exact product */
    zl_ops_set_kernels(ZL_KERNELS_AUTO);
    zl_ops_set_bf16_gemm_backend(ZL_BF16_GEMM_AUTO);
    zl_op_linear(y, x, &L, n);
    if (maxerr(y, exact, (size_t)n * out) < 1e-4) {
        worst = 1;
        sprintf(what, "n %d in %d out %d: x was not rounded", n, in, out);
    }
    zl_ops_set_bf16_gemm(0);
    reset_kernels();
    zl_ops_set_bf16_gemm_backend(ZL_BF16_GEMM_AUTO);
    /* off again: the exact product */
    zl_op_linear(y, x, &L, n);
    double e = maxerr(y, exact, (size_t)n * out);
    if (!(e < 5e-6) && !(worst > e)) {
        worst = e;
        sprintf(what, "n %d in %d out %d: mode off is not exact", n, in, out);
    }
    free(x); free(w); free(b); free(delta); free(xr); free(w0); free(wb); free(ref); free(exact); free(y);
    for (int k = 0; k < 2; k++) { free((void *)br[k].down); free((void *)br[k].up); }
    return worst;
}

TEST(ops_linear_bf16_gemm) {
    CHECK(zl_ops_bf16_gemm() == 0); /* the default */
    zl_rng g = {41};
    long fast0 = zl_ops_bf16_fast_calls();
    char what[160] = "";
    int ns[] = {37, 16, 5, 1};
    for (size_t k = 0; k < sizeof ns / sizeof *ns; k++) {
        double e = bf16_gemm_case(&g, ns[k], 70, 45, 1, 1, what);
        CHECK(zl_ops_bf16_gemm() == 0);
        CHECK_MSG(e < 1e-5, "%g (%s)", e, what);
    }
    double e = bf16_gemm_case(&g, 300, 3840, 1000, 0, 0, what);
    CHECK(zl_ops_bf16_gemm() == 0);
    CHECK_MSG(e < 1e-5, "%g (%s)", e, what);
    /* on an AVX512_BF16 CPU with oneDNN built in, the bf16 kernel really ran */
    if (zl_ops_have_avx512bf16() && zl_bf16_gemm_dnnl_available_()) CHECK(zl_ops_bf16_fast_calls() > fast0);
}

/* The backward in the bf16 mode: dx = bf16(dy)·W (+ acc), the adapters' terms with the exact dy. */
static double *linear_dx_ref(const float *dy, const float *w, const zl_branch *br, int nbr, const float *delta, int n,
                             int in, int out, int round_dy) {
    double *dx = calloc((size_t)n * in, sizeof(double));
    for (int r = 0; r < n; r++)
        for (int o = 0; o < out; o++) {
            double g = dy[(size_t)r * out + o], gr = round_dy ? zl_bf16_to_f32(zl_f32_to_bf16((float)g)) : g;
            for (int i = 0; i < in; i++) {
                double s = gr * w[(size_t)o * in + i];
                if (delta) s += g * delta[(size_t)o * in + i];
                dx[(size_t)r * in + i] += s;
            }
        }
    for (int b = 0; b < nbr; b++)
        for (int r = 0; r < n; r++)
            for (int k = 0; k < br[b].r; k++) {
                double t = 0;
                for (int o = 0; o < out; o++) t += (double)dy[(size_t)r * out + o] * br[b].up[(size_t)o * br[b].r + k];
                for (int i = 0; i < in; i++) dx[(size_t)r * in + i] += br[b].scale * t * br[b].down[(size_t)k * in + i];
            }
    return dx;
}

static double bf16_dx_case(zl_rng *g, int n, int in, int out, int adapters, int all_modes, char *what) {
    float *dy = randv(g, (size_t)n * out, 1), *w = randv(g, (size_t)out * in, 1.0f / sqrtf((float)in));
    float *delta = adapters ? randv(g, (size_t)out * in, 0.1f) : NULL;
    uint16_t *wb = malloc(sizeof(uint16_t) * (size_t)out * in);
    for (size_t i = 0; i < (size_t)out * in; i++) { wb[i] = zl_f32_to_bf16(w[i]); w[i] = zl_bf16_to_f32(wb[i]); }
    int ranks[2] = {3, 120};
    float scales[2] = {0.7f, -0.05f};
    zl_branch br[2];
    for (int k = 0; k < 2; k++)
        br[k] = (zl_branch){randv(g, (size_t)ranks[k] * in, 0.3f), randv(g, (size_t)out * ranks[k], 0.3f), ranks[k],
                            scales[k], NULL, NULL, 0.0f, 0};
    int nbr = adapters ? 2 : 0;
    double *ref = linear_dx_ref(dy, w, br, nbr, delta, n, in, out, 1);
    double *exact = linear_dx_ref(dy, w, br, nbr, delta, n, in, out, 0);
    zl_linear L = {ZL_BF16, wb, out, in, NULL, br, nbr, delta, NULL, NULL};
    size_t nx = (size_t)n * in;
    float *dx = malloc(sizeof(float) * nx);
    double worst = 0;
    zl_ops_set_bf16_gemm(1);
    for (int m = 0; m < (all_modes ? 3 : 1); m++)
        for (int v = 0; v < (all_modes ? 3 : 1); v++)
            for (int be = 0; be < 2; be++)
                for (int acc = 0; acc < 2; acc++) {
                    zl_ops_set_kernels(modes[m]);
                    zl_ops_set_bf16_tile_rows(v == 1 ? 16 : 0);
                    zl_ops_set_bf16_direct_max_n(v == 2 ? 1 << 30 : -1);
                    zl_ops_set_bf16_gemm_backend(bf16_backends[be]);
                    /* accumulate: dx starts at 1 and 1 is taken off again; else NaN (must be overwritten) */
                    for (size_t i = 0; i < nx; i++) dx[i] = acc ? 1.0f : NAN;
                    zl_op_linear_backward(dx, dy, NULL, &L, n, acc);
                    if (acc)
                        for (size_t i = 0; i < nx; i++) dx[i] -= 1.0f;
                    double e = maxerr(dx, ref, nx);
                    if (!(e <= worst)) {
                        worst = e;
                        sprintf(what, "dx n %d in %d out %d: mode %s variant %d backend %d accumulate %d", n, in, out,
                                mode_name[m], v, bf16_backends[be], acc);
                    }
                }
    /* the rounding is real: the result is measurably off the exact product */
    zl_ops_set_kernels(ZL_KERNELS_AUTO);
    zl_ops_set_bf16_gemm_backend(ZL_BF16_GEMM_AUTO);
    zl_op_linear_backward(dx, dy, NULL, &L, n, 0);
    if (maxerr(dx, exact, nx) < 1e-4) {
        worst = 1;
        sprintf(what, "dx n %d in %d out %d: dy was not rounded", n, in, out);
    }
    zl_ops_set_bf16_gemm(0);
    reset_kernels();
    zl_op_linear_backward(dx, dy, NULL, &L, n, 0); /* off again: the exact product */
    double e = maxerr(dx, exact, nx);
    if (!(e < 5e-6) && !(worst > e)) {
        worst = e;
        sprintf(what, "dx n %d in %d out %d: mode off is not exact", n, in, out);
    }
    free(dy); free(w); free(delta); free(wb); free(ref); free(exact); free(dx);
    for (int k = 0; k < 2; k++) { free((void *)br[k].down); free((void *)br[k].up); }
    return worst;
}

TEST(ops_linear_backward_bf16_gemm) {
    zl_rng g = {43};
    long fast0 = zl_ops_bf16_fast_calls();
    char what[200] = "";
    int ns[] = {37, 16, 5, 1};
    for (size_t k = 0; k < sizeof ns / sizeof *ns; k++) {
        double e = bf16_dx_case(&g, ns[k], 70, 45, 1, 1, what);
        CHECK(zl_ops_bf16_gemm() == 0);
        CHECK_MSG(e < 1e-5, "%g (%s)", e, what);
    }
    double e = bf16_dx_case(&g, 300, 1000, 3840, 0, 0, what);
    CHECK_MSG(e < 1e-5, "%g (%s)", e, what);
    if (zl_ops_have_avx512bf16() && zl_bf16_gemm_dnnl_available_()) CHECK(zl_ops_bf16_fast_calls() > fast0);
}

/* ------------------------------------------------------------------ norms and elementwise */

TEST(ops_rmsnorm_layernorm) {
    zl_rng g = {4};
    int n = 7, d = 37;
    float eps = 1e-5f;
    float *x = randv(&g, (size_t)n * d, 3), *w = randv(&g, d, 1), *y = malloc(sizeof(float) * n * d);
    double *ref = malloc(sizeof(double) * n * d), *refn = malloc(sizeof(double) * n * d),
           *refl = malloc(sizeof(double) * n * d);
    for (int r = 0; r < n; r++) {
        double ss = 0, s = 0;
        for (int i = 0; i < d; i++) { ss += (double)x[r * d + i] * x[r * d + i]; s += x[r * d + i]; }
        double rs = 1.0 / sqrt(ss / d + eps), mean = s / d, v = 0;
        for (int i = 0; i < d; i++) v += (x[r * d + i] - mean) * (x[r * d + i] - mean);
        double rl = 1.0 / sqrt(v / d + eps);
        for (int i = 0; i < d; i++) {
            ref[r * d + i] = x[r * d + i] * rs * w[i];
            refn[r * d + i] = x[r * d + i] * rs;
            refl[r * d + i] = (x[r * d + i] - mean) * rl;
        }
    }
    zl_op_rmsnorm(y, x, w, n, d, eps);
    CHECK(maxerr(y, ref, (size_t)n * d) < 1e-6);
    zl_op_rmsnorm(y, x, NULL, n, d, eps);
    CHECK(maxerr(y, refn, (size_t)n * d) < 1e-6);
    zl_op_layernorm(y, x, n, d, eps);
    CHECK(maxerr(y, refl, (size_t)n * d) < 1e-6);
    memcpy(y, x, sizeof(float) * n * d); /* in place */
    zl_op_rmsnorm(y, y, w, n, d, eps);
    CHECK(maxerr(y, ref, (size_t)n * d) < 1e-6);
    memcpy(y, x, sizeof(float) * n * d);
    zl_op_layernorm(y, y, n, d, eps);
    CHECK(maxerr(y, refl, (size_t)n * d) < 1e-6);
    free(x); free(w); free(y); free(ref); free(refn); free(refl);
}

TEST(ops_modulate_gate_add) {
    zl_rng g = {5};
    int n = 9, d = 1100; /* d > the 1024-column tanh chunk */
    size_t N = (size_t)n * d;
    float *x = randv(&g, N, 1), *y = randv(&g, N, 1), *sc = randv(&g, d, 1), *gate = randv(&g, d, 2);
    float *out = malloc(sizeof(float) * N);
    double *ref = malloc(sizeof(double) * N);
    for (size_t i = 0; i < N; i++) ref[i] = x[i] * (1.0 + sc[i % d]);
    zl_op_modulate(out, x, sc, n, d);
    CHECK(maxerr(out, ref, N) < 1e-7);
    memcpy(out, x, sizeof(float) * N);
    zl_op_modulate(out, out, sc, n, d);
    CHECK(maxerr(out, ref, N) < 1e-7);
    for (size_t i = 0; i < N; i++) ref[i] = x[i] + tanh((double)gate[i % d]) * y[i];
    memcpy(out, x, sizeof(float) * N);
    zl_op_gated_residual(out, y, gate, n, d);
    CHECK(maxerr(out, ref, N) < 1e-6);
    for (size_t i = 0; i < N; i++) ref[i] = (double)x[i] + y[i];
    memcpy(out, x, sizeof(float) * N);
    zl_op_gated_residual(out, y, NULL, n, d);
    CHECK(maxerr(out, ref, N) < 1e-7);
    zl_op_add(out, x, y, N);
    CHECK(maxerr(out, ref, N) < 1e-7);
    free(x); free(y); free(sc); free(gate); free(out); free(ref);
}

TEST(ops_silu) {
    zl_rng g = {6};
    size_t n = 1037;
    float *a = randv(&g, n, 4), *b = randv(&g, n, 1), *y = malloc(sizeof(float) * n);
    float special[] = {0.0f, -0.0f, 1e-3f, -1e-3f, 20, -20, 87, -87, 90, -90, 104, -104, 200, -200, 1e30f, -1e30f};
    for (size_t i = 0; i < sizeof special / sizeof *special; i++) a[i * 7] = special[i];
    double *rs = malloc(sizeof(double) * n), *rm = malloc(sizeof(double) * n);
    for (size_t i = 0; i < n; i++) {
        rs[i] = a[i] / (1.0 + exp(-(double)a[i]));
        rm[i] = rs[i] * b[i];
    }
    for (int m = 0; m < 2; m++) {
        zl_ops_set_kernels(modes[m]);
        zl_op_silu(y, a, n);
        double e1 = maxerr(y, rs, n);
        zl_op_silu_mul(y, a, b, n);
        double e2 = maxerr(y, rm, n);
        memcpy(y, a, sizeof(float) * n);
        zl_op_silu_mul(y, y, b, n); /* y aliases a */
        double e3 = maxerr(y, rm, n);
        memcpy(y, b, sizeof(float) * n);
        zl_op_silu_mul(y, a, y, n); /* y aliases b */
        double e4 = maxerr(y, rm, n);
        reset_kernels();
        CHECK_MSG(e1 < 1e-6 && e2 < 1e-6 && e3 < 1e-6 && e4 < 1e-6, "%s: %g %g %g %g", mode_name[m], e1, e2, e3, e4);
    }
    free(a); free(b); free(y); free(rs); free(rm);
}

/* ------------------------------------------------------------------ timestep embedding */

TEST(ops_timestep_embedding) {
    int dim = 256, half = 128;
    float t = 0.37f * 1000.0f, e[257];
    zl_op_timestep_embedding(e, t, dim, 10000.0f);
    float a = (float)(-log(10000.0)); /* as torch: float32 arange times the (float) scalar, / half */
    for (int k = 0; k < half; k++) {
        float f = expf(a * (float)k / (float)half);
        double arg = (double)(t * f);
        CHECK_NEAR(e[k], cos(arg), 2e-6);
        CHECK_NEAR(e[half + k], sin(arg), 2e-6);
        CHECK_NEAR(f, exp(-log(10000.0) * k / half), 2e-6 * f); /* the formula itself */
    }
    CHECK_NEAR(e[0], cos(370.0), 1e-6); /* f_0 = 1: [cos | sin] order */
    CHECK_NEAR(e[half], sin(370.0), 1e-6);
    CHECK_NEAR(e[64], cos(3.7), 1e-5); /* f_64 = 10000^-0.5 = 0.01 */
    e[6] = 99;
    zl_op_timestep_embedding(e, 2.0f, 7, 10000.0f); /* odd dim: zero pad at the end */
    CHECK(e[6] == 0.0f);
    CHECK_NEAR(e[0], cos(2.0), 1e-6);
    CHECK_NEAR(e[3], sin(2.0), 1e-6);
}

/* ------------------------------------------------------------------ RoPE */

TEST(ops_rope_tables) {
    int axes[3] = {32, 48, 48}, np = 64;
    int32_t ids[9] = {1, 0, 0, 7, 5, 3, 1234, 300, 511};
    float *cs = malloc(sizeof(float) * 3 * np * 2);
    zl_rope_table_3axis(cs, ids, 3, axes, 256.0);
    const float *t1 = cs + np * 2;
    CHECK_NEAR(t1[2 * 16], cos(5.0), 1e-7); /* pair 0 of axis 1, position 5: angle 5 */
    CHECK_NEAR(t1[2 * 16 + 1], sin(5.0), 1e-7);
    CHECK_NEAR(t1[0], cos(7.0), 1e-7);      /* pair 0 of axis 0, position 7 */
    CHECK_NEAR(t1[2 * 40 + 1], sin(3.0), 1e-7); /* pair 0 of axis 2, position 3 */
    CHECK_NEAR(t1[2 * 17], cos(5.0 / pow(256.0, 2.0 / 48)), 1e-6); /* pair 1 of axis 1 */
    CHECK_NEAR(cs[2 * 16], 1.0, 0); /* token 0, axis 1 at position 0 */
    CHECK_NEAR(cs[2 * 16 + 1], 0.0, 0);
    /* every entry: the angle is rounded to float before cos/sin (matters at large positions) */
    for (int t = 0; t < 3; t++)
        for (int a = 0, p = 0; a < 3; a++)
            for (int k = 0; k < axes[a] / 2; k++, p++) {
                double ang = (float)(ids[3 * t + a] / pow(256.0, 2.0 * k / axes[a]));
                CHECK_NEAR(cs[(t * np + p) * 2], cos(ang), 1e-7);
                CHECK_NEAR(cs[(t * np + p) * 2 + 1], sin(ang), 1e-7);
            }
    float c1[4 * 8 * 2];
    zl_rope_table_1d(c1, 3, 4, 16, 1e6);
    CHECK_NEAR(c1[2 * 8 * 2], cos(5.0), 1e-7); /* token 2 = position 5, pair 0 */
    CHECK_NEAR(c1[2 * 8 * 2 + 1], sin(5.0), 1e-7);
    CHECK_NEAR(c1[(3 * 8 + 1) * 2], cos((float)(6.0 / pow(1e6, 2.0 / 16))), 1e-7); /* position 6, pair 1 */
    free(cs);
}

TEST(ops_rope_apply) {
    zl_rng g = {7};
    int n = 5, heads = 3, hd = 10, np = hd / 2;
    size_t N = (size_t)n * heads * hd;
    float *x = randv(&g, N, 1), *cs = malloc(sizeof(float) * n * np * 2), *y = malloc(sizeof(float) * N);
    for (int i = 0; i < n * np; i++) {
        double ang = zl_rng_uniform(&g) * 20 - 10;
        cs[2 * i] = (float)cos(ang);
        cs[2 * i + 1] = (float)sin(ang);
    }
    double *ref = malloc(sizeof(double) * N);
    for (int il = 0; il < 2; il++) {
        for (int t = 0; t < n; t++)
            for (int h = 0; h < heads; h++)
                for (int j = 0; j < np; j++) {
                    size_t base = ((size_t)t * heads + h) * hd;
                    size_t i0 = base + (il ? 2 * j : j), i1 = base + (il ? 2 * j + 1 : j + np);
                    double c = cs[(t * np + j) * 2], s = cs[(t * np + j) * 2 + 1];
                    ref[i0] = x[i0] * c - x[i1] * s;
                    ref[i1] = x[i0] * s + x[i1] * c;
                }
        memcpy(y, x, sizeof(float) * N);
        zl_op_rope(y, cs, n, heads, hd, il);
        CHECK_MSG(maxerr(y, ref, N) < 1e-6, "interleaved=%d", il);
    }
    free(x); free(cs); free(y); free(ref);
}

/* ------------------------------------------------------------------ patchify, fill */

TEST(ops_patchify) {
    int C = 3, H = 6, W = 4, p = 2;
    size_t N = (size_t)C * H * W;
    float *x = malloc(sizeof(float) * N), *tok = malloc(sizeof(float) * N), *back = malloc(sizeof(float) * N);
    for (size_t i = 0; i < N; i++) x[i] = (float)i;
    zl_op_patchify(tok, x, C, H, W, p);
    /* x[c=2][h=3][w=1] = 2·24 + 3·4 + 1 = 61 -> token (3/2)·(4/2) + 1/2 = 2, feature (1·2 + 1)·3 + 2 = 11 */
    CHECK(tok[2 * 12 + 11] == 61.0f);
    /* x[0][0][3] = 3 -> token 1, feature (0·2 + 1)·3 + 0 = 3 */
    CHECK(tok[1 * 12 + 3] == 3.0f);
    zl_op_unpatchify(back, tok, C, H, W, p);
    CHECK(memcmp(back, x, sizeof(float) * N) == 0);
    int seen[72] = {0}; /* a permutation */
    for (size_t i = 0; i < N; i++) seen[(int)tok[i]]++;
    for (size_t i = 0; i < N; i++) CHECK(seen[i] == 1);
    free(x); free(tok); free(back);
}

TEST(ops_fill_rows) {
    float x[6 * 5];
    for (int i = 0; i < 30; i++) x[i] = (float)i;
    zl_op_fill_rows(x, x + 5, 2, 5, 5); /* copies row 1 into rows 2..4 */
    for (int r = 2; r < 5; r++)
        for (int c = 0; c < 5; c++) CHECK(x[r * 5 + c] == (float)(5 + c));
    CHECK(x[25] == 25.0f && x[9] == 9.0f);
    zl_op_fill_rows(x, x + 10, 2, 4, 5); /* source is one of the rows */
    CHECK(x[15] == 5.0f && x[10] == 5.0f);
}

/* ------------------------------------------------------------------ attention */

static void attention_ref(double *o, double *lse, const float *q, const float *k, const float *v, int nq, int nk,
                          int hq, int hkv, int hd, int causal) {
    double *s = malloc(sizeof(double) * (nk ? nk : 1));
    for (int h = 0; h < hq; h++) {
        int kh = h / (hq / hkv);
        for (int i = 0; i < nq; i++) {
            int lim = causal ? i + nk - nq : nk - 1; /* last visible key */
            if (lim > nk - 1) lim = nk - 1;
            double m = -INFINITY;
            for (int j = 0; j <= lim; j++) {
                double d = 0;
                const float *qi = q + (size_t)i * hq * hd + h * hd, *kj = k + (size_t)j * hkv * hd + kh * hd;
                for (int c = 0; c < hd; c++) d += (double)qi[c] * kj[c];
                s[j] = d / sqrt((double)hd);
                if (s[j] > m) m = s[j];
            }
            double l = 0;
            for (int j = 0; j <= lim; j++) l += exp(s[j] - m);
            for (int c = 0; c < hd; c++) {
                double acc = 0;
                for (int j = 0; j <= lim; j++) acc += exp(s[j] - m) * v[(size_t)j * hkv * hd + kh * hd + c];
                o[(size_t)i * hq * hd + h * hd + c] = lim >= 0 ? acc / l : 0.0;
            }
            lse[(size_t)h * nq + i] = lim >= 0 ? m + log(l) : -INFINITY;
        }
    }
    free(s);
}

TEST(ops_attention) {
    struct { int nq, nk, hq, hkv, hd, causal; } c[] = {
        {53, 71, 4, 2, 16, 0}, {53, 71, 4, 2, 16, 1}, {71, 53, 4, 2, 16, 1}, /* nq > nk: 18 rows see nothing */
        {20, 33, 2, 1, 13, 1}, {40, 40, 3, 3, 7, 0},  {130, 300, 2, 1, 128, 1}, {1, 5, 2, 2, 8, 1},
        {3, 0, 1, 1, 4, 0},    {64, 129, 2, 2, 6, 0},
    };
    zl_rng g = {8};
    for (size_t t = 0; t < sizeof c / sizeof *c; t++) {
        int nq = c[t].nq, nk = c[t].nk, hq = c[t].hq, hkv = c[t].hkv, hd = c[t].hd;
        size_t no = (size_t)nq * hq * hd, nkv = (size_t)nk * hkv * hd;
        float *q = randv(&g, no, 1.5f), *k = randv(&g, nkv, 1.5f), *v = randv(&g, nkv, 1);
        float *o = malloc(sizeof(float) * no), *lse = malloc(sizeof(float) * hq * nq);
        double *ro = malloc(sizeof(double) * no), *rl = malloc(sizeof(double) * hq * nq);
        attention_ref(ro, rl, q, k, v, nq, nk, hq, hkv, hd, c[t].causal);
        double eo[3], el[3];
        for (int m = 0; m < 3; m++) {
            zl_ops_set_kernels(modes[m]);
            for (size_t i = 0; i < no; i++) o[i] = NAN;
            zl_op_attention(o, q, k, v, nq, nk, hq, hkv, hd, c[t].causal, lse);
            eo[m] = maxerr(o, ro, no);
            el[m] = 0;
            for (int i = 0; i < hq * nq; i++) {
                double d = isinf(rl[i]) ? (lse[i] == rl[i] ? 0 : 1) : fabs(lse[i] - rl[i]) / (1 + fabs(rl[i]));
                if (!(d <= el[m])) el[m] = d;
            }
            zl_op_attention(o, q, k, v, nq, nk, hq, hkv, hd, c[t].causal, NULL); /* lse optional */
            double e2 = maxerr(o, ro, no);
            if (e2 > eo[m]) eo[m] = e2;
        }
        reset_kernels();
        for (int m = 0; m < 3; m++)
            CHECK_MSG(eo[m] < 2e-6 && el[m] < 2e-6, "case %zu (%d,%d,%d,%d,%d,causal %d) %s: o %g lse %g", t, nq, nk,
                      hq, hkv, hd, c[t].causal, mode_name[m], eo[m], el[m]);
        free(q); free(k); free(v); free(o); free(lse); free(ro); free(rl);
    }
}

TEST(ops_set_threads) {
    zl_rng g = {9};
    int n = 300, d = 200;
    float *x = randv(&g, (size_t)n * d, 1), *a = malloc(sizeof(float) * n * d), *b = malloc(sizeof(float) * n * d);
    zl_ops_set_threads(1);
    zl_op_rmsnorm(a, x, NULL, n, d, 1e-6f);
    zl_ops_set_threads(0);
    zl_op_rmsnorm(b, x, NULL, n, d, 1e-6f);
    CHECK(memcmp(a, b, sizeof(float) * n * d) == 0);
    free(x); free(a); free(b);
}

/* bf16 compute (zl_ops_set_bf16_gemm) in attention: q, k, v and the probabilities P rounded to bf16. The
 * reference rounds q, k and v but not P; the P rounding (~2^-9 relative per term) is what the relative L2
 * tolerance covers, while lse (the unrounded P's sum) stays within fp32 error of it. */
static double rel_l2(const float *a, const double *b, size_t n) {
    double num = 0, den = 0;
    for (size_t i = 0; i < n; i++) {
        num += ((double)a[i] - b[i]) * ((double)a[i] - b[i]);
        den += b[i] * b[i];
    }
    return den > 0 ? sqrt(num / den) : sqrt(num);
}

static double lse_err(const float *lse, const double *ref, size_t n) {
    double worst = 0;
    for (size_t i = 0; i < n; i++) {
        double d = isinf(ref[i]) ? (lse[i] == ref[i] ? 0 : 1) : fabs(lse[i] - ref[i]) / (1 + fabs(ref[i]));
        if (!(d <= worst)) worst = d;
    }
    return worst;
}

TEST(ops_attention_bf16) {
    struct { int nq, nk, hq, hkv, hd, causal; } c[] = {
        {53, 71, 4, 2, 16, 0},  {53, 71, 4, 2, 16, 1},   {71, 53, 4, 2, 16, 1}, /* nq > nk: 18 rows see nothing */
        {53, 71, 4, 2, 13, 1},  {53, 71, 4, 2, 7, 0},    {130, 300, 2, 1, 128, 1}, {130, 257, 2, 1, 128, 0},
        {1, 5, 2, 2, 8, 1},     {3, 0, 1, 1, 4, 0},      {64, 129, 2, 2, 6, 0},
    };
    const int backends[2] = {ZL_BF16_GEMM_AUTO, ZL_BF16_GEMM_EMULATE};
    CHECK(zl_ops_bf16_gemm() == 0); /* the default */
    long fast0 = zl_ops_attention_bf16_fast_calls();
    zl_rng g = {42};
    for (size_t t = 0; t < sizeof c / sizeof *c; t++) {
        int nq = c[t].nq, nk = c[t].nk, hq = c[t].hq, hkv = c[t].hkv, hd = c[t].hd, causal = c[t].causal;
        size_t no = (size_t)nq * hq * hd, nkv = (size_t)nk * hkv * hd, nl = (size_t)hq * nq;
        float *q = randv(&g, no, 1.5f), *k = randv(&g, nkv, 1.5f), *v = randv(&g, nkv, 1);
        float *qr = malloc(sizeof(float) * no), *kr = malloc(sizeof(float) * (nkv ? nkv : 1)),
              *vr = malloc(sizeof(float) * (nkv ? nkv : 1));
        for (size_t i = 0; i < no; i++) qr[i] = zl_bf16_to_f32(zl_f32_to_bf16(q[i]));
        for (size_t i = 0; i < nkv; i++) {
            kr[i] = zl_bf16_to_f32(zl_f32_to_bf16(k[i]));
            vr[i] = zl_bf16_to_f32(zl_f32_to_bf16(v[i]));
        }
        float *o = malloc(sizeof(float) * no), *o32 = malloc(sizeof(float) * no), *lse = malloc(sizeof(float) * nl);
        double *ro = malloc(sizeof(double) * no), *rl = malloc(sizeof(double) * nl);
        double *eo = malloc(sizeof(double) * no), *el = malloc(sizeof(double) * nl);
        attention_ref(ro, rl, qr, kr, vr, nq, nk, hq, hkv, hd, causal); /* q, k, v rounded, P exact */
        attention_ref(eo, el, q, k, v, nq, nk, hq, hkv, hd, causal);    /* nothing rounded */
        zl_op_attention(o32, q, k, v, nq, nk, hq, hkv, hd, causal, NULL); /* fp32 mode */
        double lo = 1, hi = 0, hil = 0, dmin = 1, same = 0;
        float *ob = malloc(sizeof(float) * no);
        char what[160] = "";
        zl_ops_set_bf16_gemm(1);
        for (int m = 0; m < 3; m++)
            for (int be = 0; be < 2; be++) {
                zl_ops_set_kernels(modes[m]);
                zl_ops_set_attention_bf16_backend(backends[be]);
                for (int pass = 0; pass < 2; pass++) { /* with lse, then without */
                    for (size_t i = 0; i < no; i++) o[i] = NAN;
                    for (size_t i = 0; i < nl; i++) lse[i] = NAN;
                    zl_op_attention(o, q, k, v, nq, nk, hq, hkv, hd, causal, pass ? NULL : lse);
                    double e = rel_l2(o, ro, no), el_ = pass ? 0 : lse_err(lse, rl, nl);
                    for (int h = 0; h < hq; h++) /* rows that see no key: exactly 0 */
                        for (int i = 0; i < nq; i++)
                            if (isinf(rl[(size_t)h * nq + i]))
                                for (int d = 0; d < hd; d++)
                                    if (o[((size_t)i * hq + h) * hd + d] != 0.0f) el_ = 1;
                    if (!(e <= hi) || !(el_ <= hil))
                        sprintf(what, "mode %s backend %d pass %d: o %g lse %g", mode_name[m], backends[be], pass, e,
                                el_);
                    if (!(e <= hi)) hi = e;
                    if (!(el_ <= hil)) hil = el_;
                    if (e < lo) lo = e;
                }
                /* the blocked versions round P against the same block maxima: the same numbers up to fp32
                 * summation order, whichever kernel ran (the row version rounds against running maxima) */
                if (m == 0 && be == 0) memcpy(ob, o, sizeof(float) * no);
                else if (modes[m] != ZL_KERNELS_FALLBACK) {
                    double d = 0, n2 = 0;
                    for (size_t i = 0; i < no; i++) {
                        d += ((double)o[i] - ob[i]) * ((double)o[i] - ob[i]);
                        n2 += (double)ob[i] * ob[i];
                    }
                    if (n2 > 0 && sqrt(d / n2) > same) same = sqrt(d / n2);
                }
                /* the rounding really happens: bf16 mode is measurably off the fp32 mode */
                double d = 0, n2 = 0;
                for (size_t i = 0; i < no; i++) {
                    d += ((double)o[i] - o32[i]) * ((double)o[i] - o32[i]);
                    n2 += (double)o32[i] * o32[i];
                }
                if (n2 > 0 && sqrt(d / n2) < dmin) dmin = sqrt(d / n2);
            }
        zl_ops_set_bf16_gemm(0);
        zl_ops_set_attention_bf16_backend(ZL_BF16_GEMM_AUTO);
        reset_kernels();
        CHECK_MSG(hi < 4e-3 && hil < 1e-5, "case %zu (%d,%d,%d,%d,%d,causal %d): worst %s", t, nq, nk, hq, hkv, hd,
                  causal, what);
        CHECK_MSG(same < 1.5e-4, "case %zu: blocked versions differ by %g", t, same);
        if (nk > 0) CHECK_MSG(dmin > 1e-4, "case %zu: bf16 mode = fp32 mode (rel L2 %g)", t, dmin);
        /* P is rounded too (the reference's q, k, v are the rounded ones): more than fp32 error off it */
        if (nk >= 50) CHECK_MSG(lo > 1e-5, "case %zu: P not rounded? rel L2 %g", t, lo);
        /* off again: the fp32 result, bit for bit what it was before bf16 mode */
        zl_op_attention(o, q, k, v, nq, nk, hq, hkv, hd, causal, NULL);
        CHECK_MSG(memcmp(o, o32, sizeof(float) * no) == 0, "case %zu: mode off changed", t);
        zl_op_attention(o, q, k, v, nq, nk, hq, hkv, hd, causal, lse);
        CHECK_MSG(maxerr(o, eo, no) < 1e-5 && lse_err(lse, el, nl) < 2e-6, "case %zu: mode off is not fp32 (%g %g)", t,
                  maxerr(o, eo, no), lse_err(lse, el, nl));
        free(q); free(ob); free(k); free(v); free(qr); free(kr); free(vr); free(o); free(o32); free(lse);
        free(ro); free(rl); free(eo); free(el);
    }
    CHECK(zl_ops_bf16_gemm() == 0);
    /* on an AVX512_BF16 CPU the bf16 kernel really ran */
    if (zl_ops_have_simd() && zl_ops_have_avx512bf16()) CHECK(zl_ops_attention_bf16_fast_calls() > fast0);
}
