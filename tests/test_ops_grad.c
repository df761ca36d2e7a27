/* test_ops_grad.c — every backward op of src/nn/ops.h against central finite differences.
 *
 * Method, per op: a scalar loss L = Σ w∘y over the op's output y with fixed random weights w (so dy = w).
 *   1. Finite differences in double: the test holds its own double-precision forward of the op (plain
 *      loops, never the implementation) and double copies of the inputs; each checked input entry is
 *      moved by ±h (h = 1e-5·max(1, |v|)), giving numeric gradients good to ~1e-9. The backward kernel's
 *      fp32 gradients must match them within a relative L2 error of FD_TOL = 1e-4 (they land at ~1e-7).
 *   2. "Double-checked" against the fp32 op itself: the directional derivative of L computed with the real
 *      fp32 forward kernel, (L(x+εv) − L(x−εv))/2ε along a random direction v of all inputs at once, must
 *      match Σ grad·v within DIR_TOL = 2e-3, so the backward agrees with the forward that ships (not only
 *      with the test's own idea of it).
 * Sizes are odd and not multiples of any tile (64-row attention blocks, 16-wide vectors, 1024-column
 * gate chunks); attention covers GQA, causal with nq < nk and nq > nk, and several blocks of keys and
 * queries; RoPE both layouts; linear F32 and BF16 weights, every kernel family, bounded tiles, the
 * direct path, frozen and trainable branches and a dense delta.
 *
 * The tests really fail when a term is wrong. Each kernel was broken on purpose and this file run (the
 * FD check's rel L2 error in brackets; correct kernels give 3e-8 to 6e-7): rmsnorm without the
 * −(r³/d)·x·Σ term (0.15) or dw without r (1.2); layernorm without −mean(dy) (0.13); modulate's dx without
 * (1 + scale) (0.75); dgate without (1 − tanh²) (0.79); silu' without a·(1 − σ) (0.22); the inverse RoPE
 * rotated the wrong way (0.88); attention's dS without −D (0.48), dk without the scale (2.6), dv halved
 * (0.5); linear's dx without the branch term (0.76), d_up without the branch scale (19). All failed.
 */
#include "test.h"
#include "base/base.h"
#include "base/dtype.h"
#include "nn/ops.h"
#include "nn/ops_internal.h"

#include <stdlib.h>
#include <string.h>

#define FD_TOL 1e-4
#define DIR_TOL 2e-3

static const int kmodes[3] = {ZL_KERNELS_AUTO, ZL_KERNELS_GENERIC, ZL_KERNELS_FALLBACK};
static const char *kname[3] = {"auto", "generic", "fallback"};

static float *randf(zl_rng *g, size_t n, float s) {
    float *v = malloc(sizeof(float) * (n ? n : 1));
    for (size_t i = 0; i < n; i++) v[i] = zl_rng_normal(g) * s;
    return v;
}
static double *dcopy(const float *f, size_t n) {
    double *d = malloc(sizeof(double) * (n ? n : 1));
    for (size_t i = 0; i < n; i++) d[i] = f[i];
    return d;
}
static float *fzeros(size_t n) { return calloc(n ? n : 1, sizeof(float)); }

/* ------------------------------------------------------------------ the harness */

/* One differentiable input: f the fp32 values the kernels read (moved by the directional check), d the
 * same values in double (moved by the finite differences), g the analytic gradient under test. */
typedef struct {
    const char *name;
    float *f;
    double *d;
    size_t n;
    const float *g;
} gparam;

typedef struct {
    gparam p[8];
    int np;
    double (*loss64)(void *ctx); /* Σ w∘y from the d arrays, the test's double forward */
    double (*loss32)(void *ctx); /* Σ w∘y from the f arrays, the fp32 forward op (summed in double) */
    void *ctx;
} gcase;

/* Numeric gradients of up to maxcheck entries of each input (all of them when there are fewer). */
typedef struct {
    size_t idx[8][512];
    double num[8][512];
    size_t m[8];
} fdset;

static void fd_compute(gcase *c, size_t maxcheck, zl_rng *g, fdset *fs) {
    if (maxcheck > 512) maxcheck = 512;
    for (int p = 0; p < c->np; p++) {
        gparam *q = &c->p[p];
        size_t m = q->n <= maxcheck ? q->n : maxcheck;
        fs->m[p] = m;
        for (size_t k = 0; k < m; k++) {
            size_t i = q->n <= maxcheck ? k : (size_t)(zl_rng_next(g) % q->n);
            double v = q->d[i], h = 1e-5 * (fabs(v) > 1 ? fabs(v) : 1.0);
            q->d[i] = v + h;
            double lp = c->loss64(c->ctx);
            q->d[i] = v - h;
            double lm = c->loss64(c->ctx);
            q->d[i] = v;
            fs->idx[p][k] = i;
            fs->num[p][k] = (lp - lm) / (2 * h);
        }
    }
}

/* Worst relative L2 error of the analytic gradients against fs over the inputs; names the worst. */
static double fd_compare(const gcase *c, const fdset *fs, char *what) {
    double worst = 0;
    for (int p = 0; p < c->np; p++) {
        double e2 = 0, n2 = 0;
        for (size_t k = 0; k < fs->m[p]; k++) {
            double a = c->p[p].g[fs->idx[p][k]], b = fs->num[p][k];
            e2 += (a - b) * (a - b);
            n2 += b * b;
        }
        double e = n2 > 0 ? sqrt(e2 / n2) : sqrt(e2);
        if (!(e <= worst)) {
            worst = e;
            sprintf(what, "d%s (rel L2 %.3g over %zu entries)", c->p[p].name, e, fs->m[p]);
        }
    }
    return worst;
}

/* Directional derivative through the fp32 forward along one random direction of all inputs, relative to
 * the analytic Σ g·v (normalised by |Σ g·v| + 1e-3·‖g‖‖v‖ against an unlucky near-zero product). */
static double dir_check(gcase *c, float eps, zl_rng *g) {
    float *v[8], *f0[8];
    double dd = 0, gn = 0, vn = 0;
    for (int p = 0; p < c->np; p++) {
        gparam *q = &c->p[p];
        double rms = 0;
        for (size_t i = 0; i < q->n; i++) rms += (double)q->f[i] * q->f[i];
        rms = q->n ? sqrt(rms / q->n) : 1;
        if (rms < 1e-3) rms = 1;
        v[p] = randf(g, q->n, (float)rms);
        f0[p] = malloc(sizeof(float) * (q->n ? q->n : 1));
        memcpy(f0[p], q->f, sizeof(float) * q->n);
        for (size_t i = 0; i < q->n; i++) {
            dd += (double)q->g[i] * v[p][i];
            gn += (double)q->g[i] * q->g[i];
            vn += (double)v[p][i] * v[p][i];
        }
    }
    double l[2];
    for (int s = 0; s < 2; s++) {
        for (int p = 0; p < c->np; p++)
            for (size_t i = 0; i < c->p[p].n; i++) c->p[p].f[i] = f0[p][i] + (s ? -eps : eps) * v[p][i];
        l[s] = c->loss32(c->ctx);
    }
    for (int p = 0; p < c->np; p++) {
        memcpy(c->p[p].f, f0[p], sizeof(float) * c->p[p].n);
        free(v[p]);
        free(f0[p]);
    }
    double fd = (l[0] - l[1]) / (2.0 * eps);
    return fabs(fd - dd) / (fabs(dd) + 1e-3 * sqrt(gn * vn));
}

/* ZL_TEST_VERBOSE=1 prints every measured error (for reports). */
static void note(const char *label, double fd, double dir) {
    if (getenv("ZL_TEST_VERBOSE")) fprintf(stderr, "\n    %-44s fd rel L2 %.2e   directional %.2e", label, fd, dir);
}

static double dot_wd(const float *w, const double *y, size_t n) {
    double s = 0;
    for (size_t i = 0; i < n; i++) s += (double)w[i] * y[i];
    return s;
}
static double dot_wf(const float *w, const float *y, size_t n) {
    double s = 0;
    for (size_t i = 0; i < n; i++) s += (double)w[i] * y[i];
    return s;
}

/* ------------------------------------------------------------------ linear */

typedef struct {
    int n, in, out, nbr;
    float *x, *wv, *bias, *delta, *dy, *y; /* wv: the weight values (bf16-rounded for BF16) */
    double *xd;
    zl_linear L;
    zl_branch br[3];
    float *down[3], *up[3];
    double *downd[3], *upd[3];
} lin_ctx;

static double lin_loss64(void *p) {
    lin_ctx *c = p;
    double *y = calloc((size_t)c->n * c->out, sizeof(double));
    for (int r = 0; r < c->n; r++) {
        const double *xr = c->xd + (size_t)r * c->in;
        for (int o = 0; o < c->out; o++) {
            double s = c->bias ? c->bias[o] : 0.0;
            for (int i = 0; i < c->in; i++) s += xr[i] * (c->wv[(size_t)o * c->in + i] + (c->delta ? c->delta[(size_t)o * c->in + i] : 0.0));
            y[(size_t)r * c->out + o] = s;
        }
        for (int b = 0; b < c->nbr; b++) {
            int rk = c->br[b].r;
            for (int k = 0; k < rk; k++) {
                double t = 0;
                for (int i = 0; i < c->in; i++) t += xr[i] * c->downd[b][(size_t)k * c->in + i];
                for (int o = 0; o < c->out; o++) y[(size_t)r * c->out + o] += c->br[b].scale * t * c->upd[b][(size_t)o * rk + k];
            }
        }
    }
    double l = dot_wd(c->dy, y, (size_t)c->n * c->out);
    free(y);
    return l;
}

static double lin_loss32(void *p) {
    lin_ctx *c = p;
    zl_op_linear(c->y, c->x, &c->L, c->n);
    return dot_wf(c->dy, c->y, (size_t)c->n * c->out);
}

/* Runs the linear backward in every kernel family and variant and checks it against fd; frees nothing. */
static double lin_all_modes(lin_ctx *c, gcase *gc, const fdset *fs, float *dx, float **dd, float **du, char *what) {
    double worst = 0;
    char w1[200];
    size_t nx = (size_t)c->n * c->in;
    for (int m = 0; m < 3; m++)
        for (int v = 0; v < (c->L.dtype == ZL_F32 ? 1 : 3); v++)
            for (int acc = 0; acc < 2; acc++) {
                zl_ops_set_kernels(kmodes[m]);
                zl_ops_set_bf16_tile_rows(v == 1 ? 16 : 0);
                zl_ops_set_bf16_direct_max_n(v == 2 ? 1 << 30 : -1);
                for (int b = 0; b < c->nbr; b++) {
                    if (dd[b]) memset(dd[b], 0, sizeof(float) * (size_t)c->br[b].r * c->in);
                    if (du[b]) memset(du[b], 0, sizeof(float) * (size_t)c->out * c->br[b].r);
                }
                /* accumulate: dx starts at 1 and 1 is taken off again; else it starts as NaN (must be overwritten) */
                for (size_t i = 0; i < nx; i++) dx[i] = acc ? 1.0f : NAN;
                zl_op_linear_backward(dx, c->dy, c->x, &c->L, c->n, acc);
                if (acc)
                    for (size_t i = 0; i < nx; i++) dx[i] -= 1.0f;
                double e = fd_compare(gc, fs, w1);
                if (!(e <= worst)) {
                    worst = e;
                    sprintf(what, "%s, mode %s variant %d accumulate %d", w1, kname[m], v, acc);
                }
            }
    zl_ops_set_kernels(ZL_KERNELS_AUTO);
    zl_ops_set_bf16_tile_rows(0);
    zl_ops_set_bf16_direct_max_n(-1);
    return worst;
}

static void lin_case(int *zl_failed_, zl_dtype dt, int n, uint64_t seed) {
    zl_rng g = {seed};
    lin_ctx c = {.n = n, .in = 70, .out = 45, .nbr = 3};
    int ranks[3] = {3, 5, 120}; /* 2·n·120 floats > the 4096-float stack: the fallback chunks rows */
    float scales[3] = {0.7f, -1.3f, 0.05f};
    c.x = randf(&g, (size_t)n * c.in, 1);
    c.wv = randf(&g, (size_t)c.out * c.in, 0.2f);
    c.bias = randf(&g, c.out, 1);
    c.delta = randf(&g, (size_t)c.out * c.in, 0.1f);
    c.dy = randf(&g, (size_t)n * c.out, 1);
    c.y = fzeros((size_t)n * c.out);
    c.xd = dcopy(c.x, (size_t)n * c.in);
    uint16_t *wb = malloc(sizeof(uint16_t) * (size_t)c.out * c.in);
    for (int i = 0; i < c.out * c.in; i++) { wb[i] = zl_f32_to_bf16(c.wv[i]); if (dt == ZL_BF16) c.wv[i] = zl_bf16_to_f32(wb[i]); }
    float *dd[3] = {0}, *du[3] = {0};
    for (int b = 0; b < 3; b++) {
        c.down[b] = randf(&g, (size_t)ranks[b] * c.in, 0.3f);
        c.up[b] = randf(&g, (size_t)c.out * ranks[b], 0.3f);
        c.downd[b] = dcopy(c.down[b], (size_t)ranks[b] * c.in);
        c.upd[b] = dcopy(c.up[b], (size_t)c.out * ranks[b]);
        if (b > 0) { /* branch 0 frozen; 1 and 2 trainable */
            dd[b] = fzeros((size_t)ranks[b] * c.in);
            du[b] = fzeros((size_t)c.out * ranks[b]);
        }
        c.br[b] = (zl_branch){c.down[b], c.up[b], ranks[b], scales[b], dd[b], du[b], 0.0f, 0};
    }
    c.L = (zl_linear){dt, dt == ZL_F32 ? (const void *)c.wv : (const void *)wb, c.out, c.in, c.bias, c.br, 3, c.delta, NULL, NULL};
    float *dx = fzeros((size_t)n * c.in);
    gcase gc = {.np = 0, .loss64 = lin_loss64, .loss32 = lin_loss32, .ctx = &c};
    gc.p[gc.np++] = (gparam){"x", c.x, c.xd, (size_t)n * c.in, dx};
    for (int b = 1; b < 3; b++) {
        gc.p[gc.np++] = (gparam){"down", c.down[b], c.downd[b], (size_t)ranks[b] * c.in, dd[b]};
        gc.p[gc.np++] = (gparam){"up", c.up[b], c.upd[b], (size_t)c.out * ranks[b], du[b]};
    }
    static fdset fs;
    fd_compute(&gc, 120, &g, &fs);
    char what[300] = "";
    double e = lin_all_modes(&c, &gc, &fs, dx, dd, du, what);
    CHECK_MSG(e < FD_TOL, "%s n %d: %s", dt == ZL_F32 ? "f32" : "bf16", n, what);
    double de = dir_check(&gc, 1e-2f, &g);
    char lb[64];
    snprintf(lb, sizeof lb, "linear %s n %d", dt == ZL_F32 ? "f32" : "bf16", n);
    note(lb, e, de);
    CHECK_MSG(de < DIR_TOL, "%s n %d: directional %.3g", dt == ZL_F32 ? "f32" : "bf16", n, de);
    /* dx NULL: only the branch gradients, bit for bit those of a call with dx */
    float *dd2 = fzeros((size_t)ranks[2] * c.in), *du2 = fzeros((size_t)c.out * ranks[2]);
    for (int pass = 0; pass < 2; pass++) {
        for (int b = 1; b < 3; b++) {
            memset(dd[b], 0, sizeof(float) * (size_t)ranks[b] * c.in);
            memset(du[b], 0, sizeof(float) * (size_t)c.out * ranks[b]);
        }
        zl_op_linear_backward(pass ? NULL : dx, c.dy, c.x, &c.L, n, 0);
        if (pass) break;
        memcpy(dd2, dd[2], sizeof(float) * (size_t)ranks[2] * c.in);
        memcpy(du2, du[2], sizeof(float) * (size_t)c.out * ranks[2]);
    }
    CHECK_MSG(memcmp(dd2, dd[2], sizeof(float) * (size_t)ranks[2] * c.in) == 0 &&
              memcmp(du2, du[2], sizeof(float) * (size_t)c.out * ranks[2]) == 0, "dx NULL changes the branch gradients");
    double m;
    /* dx aliasing x: the same dx */
    float *xa = malloc(sizeof(float) * (size_t)n * c.in);
    memcpy(xa, c.x, sizeof(float) * (size_t)n * c.in);
    zl_op_linear_backward(dx, c.dy, c.x, &c.L, n, 0);
    zl_op_linear_backward(xa, c.dy, xa, &c.L, n, 0);
    m = 0;
    for (int i = 0; i < n * c.in; i++) m = fmax(m, fabs(xa[i] - dx[i]));
    CHECK_MSG(m == 0, "dx aliasing x differs by %g", m);
    free(xa); free(dd2); free(du2);
    free(c.x); free(c.wv); free(c.bias); free(c.delta); free(c.dy); free(c.y); free(c.xd); free(wb); free(dx);
    for (int b = 0; b < 3; b++) { free(c.down[b]); free(c.up[b]); free(c.downd[b]); free(c.upd[b]); free(dd[b]); free(du[b]); }
}

TEST(grad_linear_f32) {
    lin_case(zl_failed_, ZL_F32, 37, 101);
    if (*zl_failed_) return;
    lin_case(zl_failed_, ZL_F32, 1, 102);
}

TEST(grad_linear_bf16) {
    lin_case(zl_failed_, ZL_BF16, 37, 103); /* tiles (and the direct path as a variant) */
    if (*zl_failed_) return;
    lin_case(zl_failed_, ZL_BF16, 5, 104); /* n <= 16: the direct path */
}

/* ------------------------------------------------------------------ norms */

typedef struct {
    int n, d, usew, layer;
    float eps;
    float *x, *w, *dy, *y;
    double *xd, *wd;
} norm_ctx;

static double norm_loss64(void *p) {
    norm_ctx *c = p;
    double l = 0;
    for (int r = 0; r < c->n; r++) {
        const double *xr = c->xd + (size_t)r * c->d;
        double s = 0, ss = 0;
        for (int i = 0; i < c->d; i++) { s += xr[i]; ss += xr[i] * xr[i]; }
        double mean = s / c->d, var = 0;
        for (int i = 0; i < c->d; i++) var += (xr[i] - mean) * (xr[i] - mean);
        double rs = c->layer ? 1.0 / sqrt(var / c->d + c->eps) : 1.0 / sqrt(ss / c->d + c->eps);
        for (int i = 0; i < c->d; i++) {
            double y = c->layer ? (xr[i] - mean) * rs : xr[i] * rs * (c->usew ? c->wd[i] : 1.0);
            l += c->dy[(size_t)r * c->d + i] * y;
        }
    }
    return l;
}

static double norm_loss32(void *p) {
    norm_ctx *c = p;
    if (c->layer) zl_op_layernorm(c->y, c->x, c->n, c->d, c->eps);
    else zl_op_rmsnorm(c->y, c->x, c->usew ? c->w : NULL, c->n, c->d, c->eps);
    return dot_wf(c->dy, c->y, (size_t)c->n * c->d);
}

static void norm_case(int *zl_failed_, int n, int d, int layer, int usew, uint64_t seed) {
    zl_rng g = {seed};
    size_t N = (size_t)n * d;
    norm_ctx c = {n, d, usew, layer, 1e-5f, randf(&g, N, 2), randf(&g, d, 0.5f), randf(&g, N, 1), fzeros(N), NULL, NULL};
    for (int i = 0; i < d; i++) c.w[i] += 1.0f;
    c.xd = dcopy(c.x, N);
    c.wd = dcopy(c.w, d);
    float *dx = fzeros(N), *dw = fzeros(d);
    for (int i = 0; i < d; i++) dw[i] = 0.5f; /* accumulates: 0.5 is taken off below */
    if (layer) zl_op_layernorm_backward(dx, c.dy, c.x, n, d, c.eps);
    else zl_op_rmsnorm_backward(dx, dw, c.dy, c.x, usew ? c.w : NULL, n, d, c.eps);
    for (int i = 0; i < d; i++) dw[i] -= 0.5f;
    gcase gc = {.loss64 = norm_loss64, .loss32 = norm_loss32, .ctx = &c};
    gc.p[gc.np++] = (gparam){"x", c.x, c.xd, N, dx};
    if (!layer && usew) gc.p[gc.np++] = (gparam){"w", c.w, c.wd, (size_t)d, dw};
    static fdset fs;
    fd_compute(&gc, 300, &g, &fs);
    char what[200] = "";
    double e = fd_compare(&gc, &fs, what);
    const char *nm = layer ? "layernorm" : usew ? "rmsnorm" : "rmsnorm (no w)";
    CHECK_MSG(e < FD_TOL, "%s %dx%d: %s", nm, n, d, what);
    double de = dir_check(&gc, 1e-2f, &g);
    char lb[64];
    snprintf(lb, sizeof lb, "%s %dx%d", nm, n, d);
    note(lb, e, de);
    CHECK_MSG(de < DIR_TOL, "%s %dx%d: directional %.3g", nm, n, d, de);
    /* dx may alias dy */
    float *g2 = malloc(sizeof(float) * N);
    memcpy(g2, c.dy, sizeof(float) * N);
    if (layer) zl_op_layernorm_backward(g2, g2, c.x, n, d, c.eps);
    else zl_op_rmsnorm_backward(g2, NULL, g2, c.x, usew ? c.w : NULL, n, d, c.eps);
    CHECK_MSG(memcmp(g2, dx, sizeof(float) * N) == 0, "%s: dx aliasing dy differs", nm);
    free(g2); free(c.x); free(c.w); free(c.dy); free(c.y); free(c.xd); free(c.wd); free(dx); free(dw);
}

TEST(grad_rmsnorm_layernorm) {
    norm_case(zl_failed_, 7, 37, 0, 1, 201);
    if (*zl_failed_) return;
    norm_case(zl_failed_, 7, 37, 0, 0, 202);
    if (*zl_failed_) return;
    norm_case(zl_failed_, 301, 131, 0, 1, 203); /* big enough for the threaded paths */
    if (*zl_failed_) return;
    norm_case(zl_failed_, 7, 37, 1, 0, 204);
    if (*zl_failed_) return;
    norm_case(zl_failed_, 301, 131, 1, 0, 205);
}

/* ------------------------------------------------------------------ modulate, gated residual */

typedef struct {
    int n, d, gated;
    float *x, *s, *dy, *y; /* gated: x is the residual's y, s the gate */
    double *xd, *sd;
} mod_ctx;

static double mod_loss64(void *p) {
    mod_ctx *c = p;
    double l = 0;
    for (int r = 0; r < c->n; r++)
        for (int i = 0; i < c->d; i++) {
            size_t k = (size_t)r * c->d + i;
            double y = c->gated ? tanh(c->sd[i]) * c->xd[k] : c->xd[k] * (1.0 + c->sd[i]);
            l += c->dy[k] * y;
        }
    return l;
}

static double mod_loss32(void *p) {
    mod_ctx *c = p;
    size_t N = (size_t)c->n * c->d;
    if (c->gated) {
        memset(c->y, 0, sizeof(float) * N); /* residual x = 0: x_out = tanh(gate)·y */
        zl_op_gated_residual(c->y, c->x, c->s, c->n, c->d);
    } else {
        zl_op_modulate(c->y, c->x, c->s, c->n, c->d);
    }
    return dot_wf(c->dy, c->y, N);
}

static void mod_case(int *zl_failed_, int n, int d, int gated, uint64_t seed) {
    zl_rng g = {seed};
    size_t N = (size_t)n * d;
    mod_ctx c = {n, d, gated, randf(&g, N, 1), randf(&g, d, 0.8f), randf(&g, N, 1), fzeros(N), NULL, NULL};
    c.xd = dcopy(c.x, N);
    c.sd = dcopy(c.s, d);
    float *dx = fzeros(N), *ds = fzeros(d);
    if (gated) zl_op_gated_residual_backward(dx, ds, c.dy, c.x, c.s, n, d);
    else zl_op_modulate_backward(dx, ds, c.dy, c.x, c.s, n, d);
    gcase gc = {.loss64 = mod_loss64, .loss32 = mod_loss32, .ctx = &c};
    gc.p[gc.np++] = (gparam){gated ? "y" : "x", c.x, c.xd, N, dx};
    gc.p[gc.np++] = (gparam){gated ? "gate" : "scale", c.s, c.sd, (size_t)d, ds};
    static fdset fs;
    fd_compute(&gc, 300, &g, &fs);
    char what[200] = "";
    double e = fd_compare(&gc, &fs, what);
    CHECK_MSG(e < FD_TOL, "%s %dx%d: %s", gated ? "gated residual" : "modulate", n, d, what);
    double de = dir_check(&gc, 1e-2f, &g);
    char lb[64];
    snprintf(lb, sizeof lb, "%s %dx%d", gated ? "gated residual" : "modulate", n, d);
    note(lb, e, de);
    CHECK_MSG(de < DIR_TOL, "%s %dx%d: directional %.3g", gated ? "gated residual" : "modulate", n, d, de);
    /* in place: dx may alias dy (modulate), dy may alias y (gated) */
    float *t = malloc(sizeof(float) * N);
    memcpy(t, gated ? c.x : c.dy, sizeof(float) * N);
    if (gated) zl_op_gated_residual_backward(t, NULL, c.dy, t, c.s, n, d);
    else zl_op_modulate_backward(t, NULL, t, c.x, c.s, n, d);
    CHECK_MSG(memcmp(t, dx, sizeof(float) * N) == 0, "in place differs");
    if (gated) { /* no gate: dy = dx */
        zl_op_gated_residual_backward(t, NULL, c.dy, c.x, NULL, n, d);
        CHECK(memcmp(t, c.dy, sizeof(float) * N) == 0);
    }
    free(t); free(c.x); free(c.s); free(c.dy); free(c.y); free(c.xd); free(c.sd); free(dx); free(ds);
}

TEST(grad_modulate_gated_residual) {
    mod_case(zl_failed_, 9, 37, 0, 301);
    if (*zl_failed_) return;
    mod_case(zl_failed_, 31, 1100, 0, 302); /* threaded column sums */
    if (*zl_failed_) return;
    mod_case(zl_failed_, 9, 37, 1, 303);
    if (*zl_failed_) return;
    mod_case(zl_failed_, 31, 1100, 1, 304); /* d > the 1024-column tanh chunk */
}

/* ------------------------------------------------------------------ SiLU, SwiGLU */

typedef struct {
    size_t n;
    int mul;
    float *a, *b, *dy, *y;
    double *ad, *bd;
} silu_ctx;

static double silu_loss64(void *p) {
    silu_ctx *c = p;
    double l = 0;
    for (size_t i = 0; i < c->n; i++) {
        double s = c->ad[i] / (1.0 + exp(-c->ad[i]));
        l += c->dy[i] * s * (c->mul ? c->bd[i] : 1.0);
    }
    return l;
}

static double silu_loss32(void *p) {
    silu_ctx *c = p;
    if (c->mul) zl_op_silu_mul(c->y, c->a, c->b, c->n);
    else zl_op_silu(c->y, c->a, c->n);
    return dot_wf(c->dy, c->y, c->n);
}

static void silu_case(int *zl_failed_, size_t n, int mul, uint64_t seed) {
    zl_rng g = {seed};
    silu_ctx c = {n, mul, randf(&g, n, 3), randf(&g, n, 1), randf(&g, n, 1), fzeros(n), NULL, NULL};
    float special[] = {0.0f, 1e-3f, -1e-3f, 9.5f, -9.5f, 30, -30, 95, -95};
    for (size_t i = 0; i < sizeof special / sizeof *special; i++) c.a[i * 5] = special[i];
    c.ad = dcopy(c.a, n);
    c.bd = dcopy(c.b, n);
    float *da = fzeros(n), *db = fzeros(n);
    if (mul) zl_op_silu_mul_backward(da, db, c.dy, c.a, c.b, n);
    else zl_op_silu_backward(da, c.dy, c.a, n);
    gcase gc = {.loss64 = silu_loss64, .loss32 = silu_loss32, .ctx = &c};
    gc.p[gc.np++] = (gparam){"a", c.a, c.ad, n, da};
    if (mul) gc.p[gc.np++] = (gparam){"b", c.b, c.bd, n, db};
    static fdset fs;
    fd_compute(&gc, 512, &g, &fs);
    char what[200] = "";
    double e = fd_compare(&gc, &fs, what);
    CHECK_MSG(e < FD_TOL, "%s n %zu: %s", mul ? "silu_mul" : "silu", n, what);
    double de = dir_check(&gc, 1e-2f, &g);
    char lb[64];
    snprintf(lb, sizeof lb, "%s n %zu", mul ? "silu_mul" : "silu", n);
    note(lb, e, de);
    CHECK_MSG(de < DIR_TOL, "%s: directional %.3g", mul ? "silu_mul" : "silu", de);
    /* in place: da over a, db over b */
    float *a2 = malloc(sizeof(float) * n), *b2 = malloc(sizeof(float) * n);
    memcpy(a2, c.a, sizeof(float) * n);
    memcpy(b2, c.b, sizeof(float) * n);
    if (mul) zl_op_silu_mul_backward(a2, b2, c.dy, a2, b2, n);
    else zl_op_silu_backward(a2, c.dy, a2, n);
    CHECK(memcmp(a2, da, sizeof(float) * n) == 0);
    if (mul) CHECK(memcmp(b2, db, sizeof(float) * n) == 0);
    free(a2); free(b2); free(c.a); free(c.b); free(c.dy); free(c.y); free(c.ad); free(c.bd); free(da); free(db);
}

TEST(grad_silu_swiglu) {
    silu_case(zl_failed_, 1037, 0, 401);
    if (*zl_failed_) return;
    silu_case(zl_failed_, 1037, 1, 402);
    if (*zl_failed_) return;
    silu_case(zl_failed_, 40001, 1, 403); /* threaded */
}

/* ------------------------------------------------------------------ RoPE */

typedef struct {
    int n, heads, hd, il;
    float *x, *cs, *dy, *y;
    double *xd;
} rope_ctx;

static double rope_loss64(void *p) {
    rope_ctx *c = p;
    int np = c->hd / 2;
    double l = 0;
    for (int t = 0; t < c->n; t++)
        for (int h = 0; h < c->heads; h++)
            for (int j = 0; j < np; j++) {
                size_t base = ((size_t)t * c->heads + h) * c->hd;
                size_t i0 = base + (c->il ? 2 * j : j), i1 = base + (c->il ? 2 * j + 1 : j + np);
                double co = c->cs[((size_t)t * np + j) * 2], si = c->cs[((size_t)t * np + j) * 2 + 1];
                l += c->dy[i0] * (c->xd[i0] * co - c->xd[i1] * si) + c->dy[i1] * (c->xd[i0] * si + c->xd[i1] * co);
            }
    return l;
}

static double rope_loss32(void *p) {
    rope_ctx *c = p;
    size_t N = (size_t)c->n * c->heads * c->hd;
    memcpy(c->y, c->x, sizeof(float) * N);
    zl_op_rope(c->y, c->cs, c->n, c->heads, c->hd, c->il);
    return dot_wf(c->dy, c->y, N);
}

TEST(grad_rope_both_layouts) {
    for (int il = 0; il < 2; il++) {
        zl_rng g = {500 + (uint64_t)il};
        int n = 7, heads = 3, hd = 10;
        size_t N = (size_t)n * heads * hd;
        rope_ctx c = {n, heads, hd, il, randf(&g, N, 1), malloc(sizeof(float) * n * hd), randf(&g, N, 1), fzeros(N), NULL};
        for (int i = 0; i < n * hd / 2; i++) {
            double a = zl_rng_uniform(&g) * 20 - 10;
            c.cs[2 * i] = (float)cos(a);
            c.cs[2 * i + 1] = (float)sin(a);
        }
        c.xd = dcopy(c.x, N);
        float *dx = malloc(sizeof(float) * N);
        memcpy(dx, c.dy, sizeof(float) * N);
        zl_op_rope_backward(dx, c.cs, n, heads, hd, il);
        gcase gc = {.loss64 = rope_loss64, .loss32 = rope_loss32, .ctx = &c};
        gc.p[gc.np++] = (gparam){"x", c.x, c.xd, N, dx};
        static fdset fs;
        fd_compute(&gc, 512, &g, &fs);
        char what[200] = "";
        double e = fd_compare(&gc, &fs, what);
        CHECK_MSG(e < FD_TOL, "interleaved %d: %s", il, what);
        double de = dir_check(&gc, 1e-2f, &g);
        note(il ? "rope interleaved" : "rope half-split", e, de);
        CHECK_MSG(de < DIR_TOL, "interleaved %d: directional %.3g", il, de);
        free(c.x); free(c.cs); free(c.dy); free(c.y); free(c.xd); free(dx);
    }
}

/* ------------------------------------------------------------------ attention */

typedef struct {
    int nq, nk, hq, hkv, hd, causal;
    float *q, *k, *v, *dy, *o;
    double *qd, *kd, *vd;
} att_ctx;

static double att_loss64(void *p) {
    att_ctx *c = p;
    int hd = c->hd, group = c->hq / c->hkv;
    double *s = malloc(sizeof(double) * (c->nk ? c->nk : 1)), l = 0;
    for (int h = 0; h < c->hq; h++) {
        int kh = h / group;
        for (int i = 0; i < c->nq; i++) {
            int lim = c->causal ? i + c->nk - c->nq : c->nk - 1;
            if (lim > c->nk - 1) lim = c->nk - 1;
            if (lim < 0) continue;
            const double *qi = c->qd + ((size_t)i * c->hq + h) * hd;
            double m = -INFINITY;
            for (int j = 0; j <= lim; j++) {
                const double *kj = c->kd + ((size_t)j * c->hkv + kh) * hd;
                double d = 0;
                for (int e = 0; e < hd; e++) d += qi[e] * kj[e];
                s[j] = d / sqrt((double)hd);
                if (s[j] > m) m = s[j];
            }
            double z = 0;
            for (int j = 0; j <= lim; j++) z += (s[j] = exp(s[j] - m));
            const float *gi = c->dy + ((size_t)i * c->hq + h) * hd;
            for (int j = 0; j <= lim; j++) {
                const double *vj = c->vd + ((size_t)j * c->hkv + kh) * hd;
                double t = 0;
                for (int e = 0; e < hd; e++) t += gi[e] * vj[e];
                l += s[j] / z * t;
            }
        }
    }
    free(s);
    return l;
}

static double att_loss32(void *p) {
    att_ctx *c = p;
    zl_op_attention(c->o, c->q, c->k, c->v, c->nq, c->nk, c->hq, c->hkv, c->hd, c->causal, NULL);
    return dot_wf(c->dy, c->o, (size_t)c->nq * c->hq * c->hd);
}

TEST(grad_attention) {
    struct { int nq, nk, hq, hkv, hd, causal; } cs[] = {
        {37, 45, 4, 2, 13, 0},   {37, 45, 4, 2, 13, 1},  /* GQA 2, odd head dim */
        {70, 131, 3, 1, 16, 1},  {70, 131, 3, 1, 16, 0}, /* GQA 3, two query and three key blocks */
        {45, 37, 2, 2, 8, 1},                            /* nq > nk: 8 query rows see no key */
        {65, 65, 2, 2, 7, 0},
    };
    for (size_t t = 0; t < sizeof cs / sizeof *cs; t++) {
        zl_rng g = {600 + t};
        att_ctx c = {cs[t].nq, cs[t].nk, cs[t].hq, cs[t].hkv, cs[t].hd, cs[t].causal, 0, 0, 0, 0, 0, 0, 0, 0};
        size_t no = (size_t)c.nq * c.hq * c.hd, nkv = (size_t)c.nk * c.hkv * c.hd;
        c.q = randf(&g, no, 1.2f);
        c.k = randf(&g, nkv, 1.2f);
        c.v = randf(&g, nkv, 1);
        c.dy = randf(&g, no, 1);
        c.o = fzeros(no);
        c.qd = dcopy(c.q, no);
        c.kd = dcopy(c.k, nkv);
        c.vd = dcopy(c.v, nkv);
        float *lse = malloc(sizeof(float) * c.hq * c.nq);
        float *dq = fzeros(no), *dk = fzeros(nkv), *dv = fzeros(nkv);
        gcase gc = {.loss64 = att_loss64, .loss32 = att_loss32, .ctx = &c};
        gc.p[gc.np++] = (gparam){"q", c.q, c.qd, no, dq};
        gc.p[gc.np++] = (gparam){"k", c.k, c.kd, nkv, dk};
        gc.p[gc.np++] = (gparam){"v", c.v, c.vd, nkv, dv};
        static fdset fs;
        fd_compute(&gc, 150, &g, &fs);
        float *o = fzeros(no);
        double worst = 0;
        char what[300] = "";
        for (int m = 0; m < 3; m++) {
            zl_ops_set_kernels(kmodes[m]);
            zl_op_attention(o, c.q, c.k, c.v, c.nq, c.nk, c.hq, c.hkv, c.hd, c.causal, lse);
            for (size_t i = 0; i < no; i++) dq[i] = NAN;
            for (size_t i = 0; i < nkv; i++) dk[i] = dv[i] = NAN;
            zl_op_attention_backward(dq, dk, dv, c.dy, c.q, c.k, c.v, o, lse, c.nq, c.nk, c.hq, c.hkv, c.hd, c.causal);
            char w1[200];
            double e = fd_compare(&gc, &fs, w1);
            if (!(e <= worst)) { worst = e; sprintf(what, "%s (mode %s)", w1, kname[m]); }
        }
        zl_ops_set_kernels(ZL_KERNELS_AUTO);
        CHECK_MSG(worst < FD_TOL, "case %zu (%d,%d,%d,%d,%d,causal %d): %s", t, c.nq, c.nk, c.hq, c.hkv, c.hd, c.causal, what);
        double de = dir_check(&gc, 1e-2f, &g);
        char lb[80];
        snprintf(lb, sizeof lb, "attention (%d,%d,%d,%d,%d,causal %d)", c.nq, c.nk, c.hq, c.hkv, c.hd, c.causal);
        note(lb, worst, de);
        CHECK_MSG(de < DIR_TOL, "case %zu: directional %.3g", t, de);
        free(c.q); free(c.k); free(c.v); free(c.dy); free(c.o); free(c.qd); free(c.kd); free(c.vd);
        free(lse); free(dq); free(dk); free(dv); free(o);
    }
}

/* bf16 compute (zl_ops_set_bf16_gemm) in the attention backward: q, k, v, dO rounded to bf16 for every
 * product, P and dS rounded before theirs, D = Σ dO∘O from the unrounded dO. Checked against a double
 * reference that rounds q, k, v, dO but not P and dS (their rounding is what the tolerance covers), across
 * kernel families and both backends (the AVX512_BF16 kernel and the emulation on the fp32 kernels must
 * agree up to fp32 summation order), against the fp32 mode (measurably different) and mode off afterwards
 * (bit for bit the fp32 result). */
static double rel2(const float *a, const double *b, size_t n) {
    double num = 0, den = 0;
    for (size_t i = 0; i < n; i++) {
        num += ((double)a[i] - b[i]) * ((double)a[i] - b[i]);
        den += b[i] * b[i];
    }
    return den > 0 ? sqrt(num / den) : sqrt(num);
}

static double rel2f(const float *a, const float *b, size_t n) {
    double num = 0, den = 0;
    for (size_t i = 0; i < n; i++) {
        num += ((double)a[i] - b[i]) * ((double)a[i] - b[i]);
        den += (double)b[i] * b[i];
    }
    return den > 0 ? sqrt(num / den) : sqrt(num);
}

static float r16(float x) { return zl_bf16_to_f32(zl_f32_to_bf16(x)); }

static void att_bwd_ref_bf16(double *dq, double *dk, double *dv, const float *q, const float *k, const float *v,
                             const float *g, const float *o, const float *lse, int nq, int nk, int hq, int hkv, int hd,
                             int causal) {
    size_t qs = (size_t)hq * hd, ks = (size_t)hkv * hd;
    double scale = 1.0 / sqrt((double)hd);
    memset(dq, 0, sizeof(double) * nq * qs);
    memset(dk, 0, sizeof(double) * nk * ks);
    memset(dv, 0, sizeof(double) * nk * ks);
    for (int h = 0; h < hq; h++) {
        int kvh = h / (hq / hkv);
        for (int i = 0; i < nq; i++) {
            float l = lse[(size_t)h * nq + i];
            if (isinf(l)) continue;
            const float *qi = q + i * qs + h * hd, *gi = g + i * qs + h * hd, *oi = o + i * qs + h * hd;
            double D = 0;
            for (int d = 0; d < hd; d++) D += (double)gi[d] * oi[d];
            for (int j = 0; j < nk; j++) {
                if (causal && j > i + (nk - nq)) break;
                const float *kj = k + j * ks + kvh * hd, *vj = v + j * ks + kvh * hd;
                double sc = 0, dp = 0;
                for (int d = 0; d < hd; d++) {
                    sc += (double)r16(qi[d]) * r16(kj[d]);
                    dp += (double)r16(gi[d]) * r16(vj[d]);
                }
                double p = exp(sc * scale - l), ds = p * (dp - D);
                for (int d = 0; d < hd; d++) {
                    dq[i * qs + h * hd + d] += scale * ds * r16(kj[d]);
                    dk[j * ks + kvh * hd + d] += scale * ds * r16(qi[d]);
                    dv[j * ks + kvh * hd + d] += p * r16(gi[d]);
                }
            }
        }
    }
}

TEST(grad_attention_bf16) {
    struct { int nq, nk, hq, hkv, hd, causal; } cs[] = {
        {37, 45, 4, 2, 13, 0},  {37, 45, 4, 2, 13, 1},   {70, 131, 3, 1, 16, 1}, {70, 131, 3, 1, 16, 0},
        {45, 37, 2, 2, 8, 1},   {65, 65, 2, 2, 7, 0},    {131, 257, 2, 2, 128, 0}, {130, 301, 2, 1, 128, 1},
    };
    const int backends[2] = {ZL_BF16_GEMM_AUTO, ZL_BF16_GEMM_EMULATE};
    long fast0 = zl_ops_attention_backward_bf16_fast_calls();
    for (size_t t = 0; t < sizeof cs / sizeof *cs; t++) {
        int nq = cs[t].nq, nk = cs[t].nk, hq = cs[t].hq, hkv = cs[t].hkv, hd = cs[t].hd, causal = cs[t].causal;
        zl_rng g = {660 + t};
        size_t no = (size_t)nq * hq * hd, nkv = (size_t)nk * hkv * hd, n[3] = {no, nkv, nkv};
        float *q = randf(&g, no, 1.2f), *k = randf(&g, nkv, 1.2f), *v = randf(&g, nkv, 1), *dy = randf(&g, no, 1);
        float *o = fzeros(no), *lse = fzeros((size_t)hq * nq);
        float *r[3], *f32[3], *b[3], *ref[3];
        double *dref[3];
        for (int i = 0; i < 3; i++) {
            r[i] = fzeros(n[i]); f32[i] = fzeros(n[i]); b[i] = fzeros(n[i]); ref[i] = fzeros(n[i]);
            dref[i] = malloc(sizeof(double) * n[i]);
        }
        zl_ops_set_bf16_gemm(1);
        zl_op_attention(o, q, k, v, nq, nk, hq, hkv, hd, causal, lse); /* as a block's recompute in bf16 mode */
        zl_ops_set_bf16_gemm(0);
        zl_op_attention_backward(f32[0], f32[1], f32[2], dy, q, k, v, o, lse, nq, nk, hq, hkv, hd, causal);
        att_bwd_ref_bf16(dref[0], dref[1], dref[2], q, k, v, dy, o, lse, nq, nk, hq, hkv, hd, causal);
        double worst_ref = 0, worst_same = 0, min_f32 = 1;
        char what[200] = "", what2[200] = "";
        zl_ops_set_bf16_gemm(1);
        for (int m = 0; m < 3; m++)
            for (int be = 0; be < 2; be++) {
                zl_ops_set_kernels(kmodes[m]);
                zl_ops_set_attention_bf16_backend(backends[be]);
                for (int i = 0; i < 3; i++)
                    for (size_t j = 0; j < n[i]; j++) b[i][j] = NAN;
                zl_op_attention_backward(b[0], b[1], b[2], dy, q, k, v, o, lse, nq, nk, hq, hkv, hd, causal);
                if (m == 0 && be == 0)
                    for (int i = 0; i < 3; i++) memcpy(ref[i], b[i], sizeof(float) * n[i]);
                for (int i = 0; i < 3; i++) {
                    double e = rel2(b[i], dref[i], n[i]), s = rel2f(b[i], ref[i], n[i]), f = rel2f(b[i], f32[i], n[i]);
                    if (!(e <= worst_ref)) {
                        worst_ref = e;
                        sprintf(what, "output %d mode %s backend %d: %g", i, kname[m], be, e);
                    }
                    if (!(s <= worst_same)) {
                        worst_same = s;
                        sprintf(what2, "output %d mode %s backend %d: %g", i, kname[m], be, s);
                    }
                    if (f < min_f32) min_f32 = f;
                }
            }
        zl_ops_set_bf16_gemm(0);
        zl_ops_set_attention_bf16_backend(ZL_BF16_GEMM_AUTO);
        zl_ops_set_kernels(ZL_KERNELS_AUTO);
        if (getenv("ZL_TEST_VERBOSE"))
            fprintf(stderr, "case %zu: vs ref %g (%s), variants %g (%s), min vs f32 %g\n", t, worst_ref, what, worst_same, what2,
                    min_f32);
        CHECK_MSG(worst_ref < 8e-3, "case %zu (%d,%d,%d,%d,%d,causal %d): vs the reference %s", t, nq, nk, hq, hkv, hd,
                  causal, what);
        CHECK_MSG(worst_same < 3e-4, "case %zu: the kernels disagree: %s", t, what2);
        CHECK_MSG(min_f32 > 1e-4, "case %zu: bf16 mode = fp32 mode (rel L2 %g)", t, min_f32);
        /* off again: bit for bit the fp32 result */
        zl_op_attention_backward(b[0], b[1], b[2], dy, q, k, v, o, lse, nq, nk, hq, hkv, hd, causal);
        for (int i = 0; i < 3; i++) CHECK_MSG(memcmp(b[i], f32[i], sizeof(float) * n[i]) == 0, "case %zu: mode off changed %d", t, i);
        free(q); free(k); free(v); free(dy); free(o); free(lse);
        for (int i = 0; i < 3; i++) { free(r[i]); free(f32[i]); free(b[i]); free(ref[i]); free(dref[i]); }
    }
    if (zl_ops_have_simd() && zl_ops_have_avx512bf16()) CHECK(zl_ops_attention_backward_bf16_fast_calls() > fast0);
}

/* The blocked (threaded) and the serial row version agree closely at a size where every task runs on
 * several threads and many blocks: a determinism and race check more than an accuracy one. */
TEST(grad_attention_blocked_vs_serial) {
    zl_rng g = {650};
    int nq = 300, nk = 300, hq = 4, hkv = 2, hd = 32;
    size_t no = (size_t)nq * hq * hd, nkv = (size_t)nk * hkv * hd;
    float *q = randf(&g, no, 1), *k = randf(&g, nkv, 1), *v = randf(&g, nkv, 1), *dy = randf(&g, no, 1);
    float *o = fzeros(no), *lse = fzeros((size_t)hq * nq);
    float *a[3], *b[3];
    size_t sz[3] = {no, nkv, nkv};
    for (int i = 0; i < 3; i++) { a[i] = fzeros(sz[i]); b[i] = fzeros(sz[i]); }
    zl_op_attention(o, q, k, v, nq, nk, hq, hkv, hd, 0, lse);
    zl_op_attention_backward(a[0], a[1], a[2], dy, q, k, v, o, lse, nq, nk, hq, hkv, hd, 0);
    zl_ops_set_kernels(ZL_KERNELS_FALLBACK);
    zl_op_attention_backward(b[0], b[1], b[2], dy, q, k, v, o, lse, nq, nk, hq, hkv, hd, 0);
    zl_ops_set_kernels(ZL_KERNELS_AUTO);
    for (int i = 0; i < 3; i++) {
        double e2 = 0, n2 = 0;
        for (size_t j = 0; j < sz[i]; j++) { e2 += (a[i][j] - b[i][j]) * (double)(a[i][j] - b[i][j]); n2 += (double)b[i][j] * b[i][j]; }
        CHECK_MSG(n2 > 0 && sqrt(e2 / n2) < 1e-5, "output %d: rel %g", i, sqrt(e2 / (n2 > 0 ? n2 : 1)));
    }
    /* the threaded version is deterministic */
    float *c0 = fzeros(no);
    zl_op_attention_backward(c0, b[1], b[2], dy, q, k, v, o, lse, nq, nk, hq, hkv, hd, 0);
    CHECK(memcmp(c0, a[0], sizeof(float) * no) == 0);
    CHECK(memcmp(b[1], a[1], sizeof(float) * nkv) == 0);
    free(c0); free(q); free(k); free(v); free(dy); free(o); free(lse);
    for (int i = 0; i < 3; i++) { free(a[i]); free(b[i]); }
}

/* ------------------------------------------------------------------ patchify, MSE loss */

TEST(grad_patchify_mse) {
    zl_rng g = {700};
    int C = 3, H = 6, W = 10, p = 2;
    size_t N = (size_t)C * H * W;
    /* patchify is a permutation: the gradient of Σ w∘patchify(x) is unpatchify(w), entry for entry */
    float *w = randf(&g, N, 1), *x = randf(&g, N, 1), *t = fzeros(N), *dx = fzeros(N), *dt = fzeros(N);
    zl_op_patchify(t, x, C, H, W, p);
    zl_op_patchify_backward(dx, w, C, H, W, p);
    double l0 = dot_wf(w, t, N);
    for (size_t i = 0; i < N; i += 7) {
        float keep = x[i];
        x[i] += 1.0f;
        zl_op_patchify(t, x, C, H, W, p);
        double d = dot_wf(w, t, N) - l0; /* linear: exact up to rounding */
        x[i] = keep;
        CHECK_NEAR(d, dx[i], 1e-5);
    }
    zl_op_unpatchify(t, x, C, H, W, p);
    zl_op_unpatchify_backward(dt, w, C, H, W, p);
    l0 = dot_wf(w, t, N);
    for (size_t i = 0; i < N; i += 5) {
        float keep = x[i];
        x[i] += 1.0f;
        zl_op_unpatchify(t, x, C, H, W, p);
        double d = dot_wf(w, t, N) - l0;
        x[i] = keep;
        CHECK_NEAR(d, dt[i], 1e-5);
    }
    /* MSE: loss and gradient of gscale·mean((y − target)²) */
    float *y = randf(&g, N, 1), *tg = randf(&g, N, 1), *dy = fzeros(N);
    double loss = zl_op_mse_loss(dy, y, tg, N, 0.25f), ref = 0;
    for (size_t i = 0; i < N; i++) ref += ((double)y[i] - tg[i]) * ((double)y[i] - tg[i]);
    CHECK_NEAR(loss, ref / N, 1e-12 * ref);
    for (size_t i = 0; i < N; i += 3) {
        double h = 1e-3;
        float keep = y[i];
        double yd = keep, lp = ref - (yd - tg[i]) * (yd - tg[i]), lm = lp;
        lp += (yd + h - tg[i]) * (yd + h - tg[i]);
        lm += (yd - h - tg[i]) * (yd - h - tg[i]);
        CHECK_NEAR(dy[i], 0.25 * (lp - lm) / (2 * h) / N, 1e-6);
    }
    CHECK(zl_op_mse_loss(NULL, y, tg, N, 1.0f) == loss);
    free(w); free(x); free(t); free(dx); free(dt); free(y); free(tg); free(dy);
}

/* ------------------------------------------------------------------ the timestep MLP as linears */

/* cond = mlp2(silu(mlp0(e))) with trainable branches on both linears (as a LoRA on the t-embedder would
 * have), backward through linear → silu → linear, against finite differences of the chain in double. */
typedef struct {
    int d0, d1, d2;
    float *e, *w0, *b0, *w2, *b2, *dy, *h, *hs, *y;
    zl_branch br[2];
    float *dn[2], *up[2];
    double *dnd[2], *upd[2];
    zl_linear L0, L2;
} mlp_ctx;

static double mlp_loss64(void *p) {
    mlp_ctx *c = p;
    double *h = malloc(sizeof(double) * c->d1), l = 0;
    for (int o = 0; o < c->d1; o++) {
        double s = c->b0[o];
        for (int i = 0; i < c->d0; i++) s += (double)c->e[i] * c->w0[(size_t)o * c->d0 + i];
        h[o] = s;
    }
    for (int k = 0; k < c->br[0].r; k++) {
        double t = 0;
        for (int i = 0; i < c->d0; i++) t += (double)c->e[i] * c->dnd[0][(size_t)k * c->d0 + i];
        for (int o = 0; o < c->d1; o++) h[o] += c->br[0].scale * t * c->upd[0][(size_t)o * c->br[0].r + k];
    }
    for (int o = 0; o < c->d1; o++) h[o] = h[o] / (1.0 + exp(-h[o]));
    for (int o = 0; o < c->d2; o++) {
        double s = c->b2[o];
        for (int i = 0; i < c->d1; i++) s += h[i] * c->w2[(size_t)o * c->d1 + i];
        l += c->dy[o] * s;
    }
    for (int k = 0; k < c->br[1].r; k++) {
        double t = 0;
        for (int i = 0; i < c->d1; i++) t += h[i] * c->dnd[1][(size_t)k * c->d1 + i];
        for (int o = 0; o < c->d2; o++) l += c->dy[o] * c->br[1].scale * t * c->upd[1][(size_t)o * c->br[1].r + k];
    }
    free(h);
    return l;
}

static double mlp_loss32(void *p) {
    mlp_ctx *c = p;
    zl_op_linear(c->h, c->e, &c->L0, 1);
    zl_op_silu(c->hs, c->h, (size_t)c->d1);
    zl_op_linear(c->y, c->hs, &c->L2, 1);
    return dot_wf(c->dy, c->y, (size_t)c->d2);
}

TEST(grad_timestep_mlp_chain) {
    zl_rng g = {800};
    mlp_ctx c = {.d0 = 64, .d1 = 203, .d2 = 48};
    c.e = randf(&g, c.d0, 1);
    c.w0 = randf(&g, (size_t)c.d1 * c.d0, 0.2f);
    c.b0 = randf(&g, c.d1, 0.3f);
    c.w2 = randf(&g, (size_t)c.d2 * c.d1, 0.1f);
    c.b2 = randf(&g, c.d2, 0.1f);
    c.dy = randf(&g, c.d2, 1);
    c.h = fzeros(c.d1); c.hs = fzeros(c.d1); c.y = fzeros(c.d2);
    int ins[2] = {c.d0, c.d1}, outs[2] = {c.d1, c.d2};
    float *gd[2], *gu[2];
    for (int b = 0; b < 2; b++) {
        c.dn[b] = randf(&g, (size_t)4 * ins[b], 0.3f);
        c.up[b] = randf(&g, (size_t)outs[b] * 4, 0.3f);
        c.dnd[b] = dcopy(c.dn[b], (size_t)4 * ins[b]);
        c.upd[b] = dcopy(c.up[b], (size_t)outs[b] * 4);
        gd[b] = fzeros((size_t)4 * ins[b]);
        gu[b] = fzeros((size_t)outs[b] * 4);
        c.br[b] = (zl_branch){c.dn[b], c.up[b], 4, b ? 0.5f : 2.0f, gd[b], gu[b], 0.0f, 0};
    }
    c.L0 = (zl_linear){ZL_F32, c.w0, c.d1, c.d0, c.b0, &c.br[0], 1, NULL, NULL, NULL};
    c.L2 = (zl_linear){ZL_F32, c.w2, c.d2, c.d1, c.b2, &c.br[1], 1, NULL, NULL, NULL};
    /* forward with saves, then backward */
    float *h = fzeros(c.d1), *hs = fzeros(c.d1), *dh = fzeros(c.d1);
    zl_op_linear(h, c.e, &c.L0, 1);
    zl_op_silu(hs, h, (size_t)c.d1);
    zl_op_linear_backward(dh, c.dy, hs, &c.L2, 1, 0);
    zl_op_silu_backward(dh, dh, h, (size_t)c.d1);
    zl_op_linear_backward(NULL, dh, c.e, &c.L0, 1, 0);
    gcase gc = {.loss64 = mlp_loss64, .loss32 = mlp_loss32, .ctx = &c};
    const char *nm[4] = {"down0", "up0", "down1", "up1"};
    for (int b = 0; b < 2; b++) {
        gc.p[gc.np] = (gparam){nm[2 * b], c.dn[b], c.dnd[b], (size_t)4 * ins[b], gd[b]};
        gc.np++;
        gc.p[gc.np] = (gparam){nm[2 * b + 1], c.up[b], c.upd[b], (size_t)outs[b] * 4, gu[b]};
        gc.np++;
    }
    static fdset fs;
    fd_compute(&gc, 300, &g, &fs);
    char what[200] = "";
    double e = fd_compare(&gc, &fs, what);
    CHECK_MSG(e < FD_TOL, "%s", what);
    double de = dir_check(&gc, 1e-2f, &g);
    note("timestep mlp chain", e, de);
    CHECK_MSG(de < DIR_TOL, "directional %.3g", de);
    free(h); free(hs); free(dh);
    free(c.e); free(c.w0); free(c.b0); free(c.w2); free(c.b2); free(c.dy); free(c.h); free(c.hs); free(c.y);
    for (int b = 0; b < 2; b++) { free(c.dn[b]); free(c.up[b]); free(c.dnd[b]); free(c.upd[b]); free(gd[b]); free(gu[b]); }
}
