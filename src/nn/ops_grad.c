/* ops_grad.c — the backward of the norms, elementwise ops, RoPE, patchify and the MSE loss (see ops.h,
 * "backward"). zl_op_linear_backward lives in linear.c, zl_op_attention_backward in attention_grad.c.
 *
 * Row-wise work (dx) runs OpenMP over rows; per-column sums over rows (dw, dscale, dgate) run OpenMP over
 * blocks of COLS columns, each thread summing every row of its columns in double, so the result does not
 * depend on the number of threads.
 */
#include "nn/ops.h"
#include "nn/ops_internal.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define PAR_MIN 32768 /* elementwise work below this many elements runs on the calling thread */
#define COLS 64       /* columns per block of a column sum */

/* acc[j] += f(j) · Σ_r a[r][j]·b[r][j]·(rs ? rs[r] : 1) over rows r < n of a, b [n, d]; f(j) = colw ? colw[j] : 1. */
static void colsum(float *acc, const float *a, const float *b, const float *rs, const float *colw, int n, int d) {
    int nblk = (d + COLS - 1) / COLS;
#pragma omp parallel for schedule(static) if ((size_t)n * (size_t)d >= PAR_MIN)
    for (int blk = 0; blk < nblk; blk++) {
        int j0 = blk * COLS, nj = d - j0 < COLS ? d - j0 : COLS;
        double s[COLS] = {0};
        for (int r = 0; r < n; r++) {
            const float *ar = a + (size_t)r * d + j0, *br = b + (size_t)r * d + j0;
            double w = rs ? (double)rs[r] : 1.0;
            for (int j = 0; j < nj; j++) s[j] += (double)ar[j] * br[j] * w;
        }
        for (int j = 0; j < nj; j++) acc[j0 + j] += (float)(s[j] * (colw ? (double)colw[j0 + j] : 1.0));
    }
}

/* ------------------------------------------------------------------ norms */

/* r = rsqrt(mean(x²) + eps) of one row, the sum of squares in double as the forward computes it. */
static float rms_inv(const float *x, int d, float eps) {
    double s0 = 0, s1 = 0, s2 = 0, s3 = 0;
    int i = 0;
    for (; i + 4 <= d; i += 4) {
        s0 += (double)x[i] * x[i];
        s1 += (double)x[i + 1] * x[i + 1];
        s2 += (double)x[i + 2] * x[i + 2];
        s3 += (double)x[i + 3] * x[i + 3];
    }
    for (; i < d; i++) s0 += (double)x[i] * x[i];
    return (float)(1.0 / sqrt((s0 + s1 + s2 + s3) / d + (double)eps));
}

/* dx of one row (dx may alias dy). */
static void rms_row_dx(float *dx, const float *dy, const float *x, const float *w, int d, float r) {
    double dot = 0;
    for (int i = 0; i < d; i++) dot += (double)dy[i] * (w ? w[i] : 1.0f) * x[i];
    float c = (float)((double)r * r * r * dot / d);
    if (w)
        for (int i = 0; i < d; i++) dx[i] = r * w[i] * dy[i] - c * x[i];
    else
        for (int i = 0; i < d; i++) dx[i] = r * dy[i] - c * x[i];
}

void zl_op_rmsnorm_backward(float *dx, float *dw, const float *dy, const float *x, const float *w, int n, int d, float eps) {
    if (n <= 0 || d <= 0) return;
    int par = (size_t)n * (size_t)d >= PAR_MIN;
    float *rs = malloc(sizeof(float) * (size_t)n);
    if (!rs) { /* no memory: serially, dw from each row before its dx overwrites a shared dy */
        for (int r = 0; r < n; r++) {
            const float *xr = x + (size_t)r * d, *gr = dy + (size_t)r * d;
            float ri = rms_inv(xr, d, eps);
            if (w && dw)
                for (int i = 0; i < d; i++) dw[i] += gr[i] * xr[i] * ri;
            if (dx) rms_row_dx(dx + (size_t)r * d, gr, xr, w, d, ri);
        }
        return;
    }
#pragma omp parallel for schedule(static) if (par)
    for (int r = 0; r < n; r++) rs[r] = rms_inv(x + (size_t)r * d, d, eps);
    if (w && dw) colsum(dw, dy, x, rs, NULL, n, d); /* before dx, which may overwrite dy */
    if (dx) {
#pragma omp parallel for schedule(static) if (par)
        for (int r = 0; r < n; r++)
            rms_row_dx(dx + (size_t)r * d, dy + (size_t)r * d, x + (size_t)r * d, w, d, rs[r]);
    }
    free(rs);
}

void zl_op_layernorm_backward(float *dx, const float *dy, const float *x, int n, int d, float eps) {
    if (n <= 0 || d <= 0) return;
#pragma omp parallel for schedule(static) if ((size_t)n * (size_t)d >= PAR_MIN)
    for (int r = 0; r < n; r++) {
        const float *xr = x + (size_t)r * d, *gr = dy + (size_t)r * d;
        float *dr = dx + (size_t)r * d;
        double s = 0;
        for (int i = 0; i < d; i++) s += xr[i];
        double mean = s / d, v = 0;
        for (int i = 0; i < d; i++) { double t = xr[i] - mean; v += t * t; }
        double ri = 1.0 / sqrt(v / d + (double)eps), sg = 0, sgy = 0;
        for (int i = 0; i < d; i++) {
            double y = (xr[i] - mean) * ri;
            sg += gr[i];
            sgy += gr[i] * y;
        }
        float mg = (float)(sg / d), mgy = (float)(sgy / d), m = (float)mean, rf = (float)ri;
        for (int i = 0; i < d; i++) dr[i] = rf * (gr[i] - mg - (xr[i] - m) * rf * mgy);
    }
}

/* ------------------------------------------------------------------ modulation, gated residual */

void zl_op_modulate_backward(float *dx, float *dscale, const float *dy, const float *x, const float *scale, int n, int d) {
    if (n <= 0 || d <= 0) return;
    if (dscale) colsum(dscale, dy, x, NULL, NULL, n, d); /* before dx, which may overwrite dy */
    if (!dx) return;
#pragma omp parallel for schedule(static) if ((size_t)n * (size_t)d >= PAR_MIN)
    for (int r = 0; r < n; r++) {
        const float *gr = dy + (size_t)r * d;
        float *dr = dx + (size_t)r * d;
        for (int i = 0; i < d; i++) dr[i] = gr[i] * (1.0f + scale[i]);
    }
}

#define GCHUNK 1024
void zl_op_gated_residual_backward(float *dy, float *dgate, const float *dx, const float *y, const float *gate, int n, int d) {
    if (n <= 0 || d <= 0) return;
    if (!gate) {
        if (dy != dx) memmove(dy, dx, sizeof(float) * (size_t)n * (size_t)d);
        return;
    }
    if (dgate) { /* (1 − tanh²)·Σ dx∘y, before dy (which may overwrite y) */
        float *dt = malloc(sizeof(float) * (size_t)d);
        if (dt) {
            for (int j = 0; j < d; j++) { float t = tanhf(gate[j]); dt[j] = 1.0f - t * t; }
            colsum(dgate, dx, y, NULL, dt, n, d);
            free(dt);
        } else {
            for (int j = 0; j < d; j++) {
                double s = 0;
                for (int r = 0; r < n; r++) s += (double)dx[(size_t)r * d + j] * y[(size_t)r * d + j];
                float t = tanhf(gate[j]);
                dgate[j] += (float)(s * (1.0 - (double)t * t));
            }
        }
    }
#pragma omp parallel if ((size_t)n * (size_t)d >= PAR_MIN)
    {
        float tg[GCHUNK];
        for (int c0 = 0; c0 < d; c0 += GCHUNK) {
            int nc = d - c0 < GCHUNK ? d - c0 : GCHUNK;
            for (int c = 0; c < nc; c++) tg[c] = tanhf(gate[c0 + c]);
#pragma omp for schedule(static) nowait
            for (int r = 0; r < n; r++) {
                const float *gr = dx + (size_t)r * d + c0;
                float *yr = dy + (size_t)r * d + c0;
                for (int c = 0; c < nc; c++) yr[c] = tg[c] * gr[c];
            }
        }
    }
}

/* ------------------------------------------------------------------ SiLU, SwiGLU */

/* σ(a), silu(a) and silu'(a) = σ(a)·(1 + a·(1 − σ(a))) of one element; e^−a may overflow to inf (σ = 0). */
static inline void silu_parts(float a, float *s, float *d) {
    float sg = 1.0f / (1.0f + expf(-a));
    *s = a * sg;
    *d = sg * (1.0f + a * (1.0f - sg));
}

void zl_op_silu_mul_backward(float *da, float *db, const float *dy, const float *a, const float *b, size_t n) {
#pragma omp parallel for schedule(static) if (n >= PAR_MIN / 4)
    for (size_t i = 0; i < n; i++) {
        float s, ds, g = dy[i], bi = b[i];
        silu_parts(a[i], &s, &ds);
        if (da) da[i] = g * bi * ds;
        if (db) db[i] = g * s;
    }
}

void zl_op_silu_backward(float *dx, const float *dy, const float *x, size_t n) {
#pragma omp parallel for schedule(static) if (n >= PAR_MIN / 4)
    for (size_t i = 0; i < n; i++) {
        float s, ds;
        silu_parts(x[i], &s, &ds);
        dx[i] = dy[i] * ds;
    }
}

/* ------------------------------------------------------------------ RoPE */

/* The inverse rotation: the forward's formulas with sin negated. */
void zl_op_rope_backward(float *x, const float *cs, int n, int heads, int hd, int interleaved) {
    int np = hd / 2;
    if (n <= 0 || heads <= 0 || np <= 0) return;
#pragma omp parallel for schedule(static) if ((size_t)n * (size_t)heads * (size_t)hd >= PAR_MIN)
    for (int t = 0; t < n; t++) {
        const float *c = cs + (size_t)t * np * 2;
        for (int h = 0; h < heads; h++) {
            float *v = x + ((size_t)t * heads + h) * hd;
            for (int j = 0; j < np; j++) {
                int i0 = interleaved ? 2 * j : j, i1 = interleaved ? 2 * j + 1 : j + np;
                float x0 = v[i0], x1 = v[i1], co = c[2 * j], si = c[2 * j + 1];
                v[i0] = x0 * co + x1 * si;
                v[i1] = x1 * co - x0 * si;
            }
        }
    }
}

/* ------------------------------------------------------------------ patchify, loss */

void zl_op_patchify_backward(float *dx, const float *dtok, int C, int H, int W, int p) {
    zl_op_unpatchify(dx, dtok, C, H, W, p);
}

void zl_op_unpatchify_backward(float *dtok, const float *dx, int C, int H, int W, int p) {
    zl_op_patchify(dtok, dx, C, H, W, p);
}

double zl_op_mse_loss(float *dy, const float *y, const float *target, size_t n, float gscale) {
    if (n == 0) return 0.0;
    double s = 0;
    for (size_t i = 0; i < n; i++) {
        double e = (double)y[i] - target[i];
        s += e * e;
    }
    if (dy) {
        float c = (float)(2.0 * gscale / (double)n);
#pragma omp parallel for schedule(static) if (n >= PAR_MIN)
        for (size_t i = 0; i < n; i++) dy[i] = c * (y[i] - target[i]);
    }
    return s / (double)n;
}
