/* ops_conv.c — see ops_conv.h: convolution (im2col + sgemm), GroupNorm, nearest upsampling, transpose,
 * affine, tile blending.
 *
 * zl_op_conv2d: the output pixels are processed in bands of at most COL_MAX_BYTES of im2col scratch
 * (col [cin·k·k, band]); each band is one sgemm y[:, band] = W [cout, cin·k·k] · col, written straight
 * into its columns of y (ldc = Ho·Wo), with the bias pre-filled (beta = 1). BF16/F16 weights are
 * converted to f32 once per call when that is at most WCONV_MAX_BYTES, else in tiles of output channels
 * converted per band.
 * im2col runs on the calling thread and OpenBLAS threads each sgemm: im2col is memory-bound and about 1 %
 * of the time (perf, full-size VAE decode). Spreading the bands over OpenMP threads instead, each with a
 * single-threaded sgemm, measured the same (interleaved runs on 2 cores: 3.4 vs 3.4 s for a 128×128
 * decode, 9.5 vs 9.5 s for 256×256), so the simpler form stays.
 * When no scratch can be allocated (or the FALLBACK kernels are forced, ops_internal.h), a direct loop
 * accumulates into the output planes, converting weights one element at a time, with no heap use.
 */
#include "nn/ops_conv.h"
#include "nn/ops_internal.h"

#include <cblas.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#define COL_MAX_BYTES (32u << 20)   /* im2col scratch per band */
#define WCONV_MAX_BYTES (64u << 20) /* converted-weight scratch */
#define PAR_MIN 32768               /* elementwise work below this runs on the calling thread */

static size_t col_max_bytes = COL_MAX_BYTES, wconv_max_bytes = WCONV_MAX_BYTES;
void zl_ops_conv_set_scratch(size_t band_bytes, size_t weight_bytes) {
    col_max_bytes = band_bytes ? band_bytes : COL_MAX_BYTES;
    wconv_max_bytes = weight_bytes ? weight_bytes : WCONV_MAX_BYTES;
}

int zl_conv2d_out_size(int n, int k, int stride, int pad0, int pad1) {
    long t = (long)n + pad0 + pad1 - k;
    if (n <= 0 || k <= 0 || stride <= 0 || t < 0) return 0;
    return (int)(t / stride + 1);
}

static float wval(const zl_conv2d *c, size_t i) {
    switch (c->dtype) {
    case ZL_F32: return ((const float *)c->w)[i];
    case ZL_BF16: return zl_bf16_to_f32(((const uint16_t *)c->w)[i]);
    case ZL_F16: return zl_f16_to_f32(((const uint16_t *)c->w)[i]);
    default: {
        float f = 0;
        zl_to_f32(&f, (const char *)c->w + i * zl_dtype_size(c->dtype), c->dtype, 1);
        return f;
    }
    }
}

/* ------------------------------------------------------------------ direct path (no scratch) */

static void conv_direct(float *y, const float *x, const zl_conv2d *c, int H, int W, int s, int pt, int pl, int Ho,
                        int Wo) {
    int k = c->k, cin = c->cin;
    size_t P = (size_t)Ho * Wo;
#pragma omp parallel for schedule(dynamic, 1)
    for (int co = 0; co < c->cout; co++) {
        float *yp = y + (size_t)co * P;
        float b = c->bias ? c->bias[co] : 0.0f;
        for (size_t p = 0; p < P; p++) yp[p] = b;
        for (int ci = 0; ci < cin; ci++) {
            const float *xp = x + (size_t)ci * H * W;
            for (int ky = 0; ky < k; ky++)
                for (int kx = 0; kx < k; kx++) {
                    float w = wval(c, (((size_t)co * cin + ci) * k + ky) * k + kx);
                    for (int oy = 0; oy < Ho; oy++) {
                        int iy = oy * s + ky - pt;
                        if (iy < 0 || iy >= H) continue;
                        const float *xr = xp + (size_t)iy * W;
                        float *yr = yp + (size_t)oy * Wo;
                        for (int ox = 0; ox < Wo; ox++) {
                            int ix = ox * s + kx - pl;
                            if (ix >= 0 && ix < W) yr[ox] += w * xr[ix];
                        }
                    }
                }
        }
    }
}

/* ------------------------------------------------------------------ im2col */

/* col [cin·k·k, np]: row r = (ci·k + ky)·k + kx holds x[ci][oy·s + ky − pt][ox·s + kx − pl] (0 outside)
 * for the output pixels p0 .. p0+np−1 (p = oy·Wo + ox). */
static void im2col(float *col, const float *x, int cin, int H, int W, int k, int s, int pt, int pl, int Wo, size_t p0,
                   size_t np) {
    int K = cin * k * k;
    for (int r = 0; r < K; r++) {
        int ci = r / (k * k), ky = (r / k) % k, kx = r % k;
        float *dst = col + (size_t)r * np;
        const float *xc = x + (size_t)ci * H * W;
        size_t p = p0, end = p0 + np;
        while (p < end) {
            int oy = (int)(p / (size_t)Wo), ox0 = (int)(p % (size_t)Wo);
            int ox1 = (size_t)(Wo - ox0) < end - p ? Wo : ox0 + (int)(end - p);
            int n = ox1 - ox0;
            int iy = oy * s + ky - pt;
            if (iy < 0 || iy >= H) {
                memset(dst, 0, sizeof(float) * (size_t)n);
            } else {
                const float *xr = xc + (size_t)iy * W;
                if (s == 1) {
                    int a = pl - kx > ox0 ? pl - kx : ox0, b = W + pl - kx < ox1 ? W + pl - kx : ox1;
                    if (b < a) b = a;
                    if (a > ox1) a = b = ox1;
                    if (a > ox0) memset(dst, 0, sizeof(float) * (size_t)(a - ox0));
                    if (b > a) memcpy(dst + (a - ox0), xr + (a + kx - pl), sizeof(float) * (size_t)(b - a));
                    if (ox1 > b) memset(dst + (b - ox0), 0, sizeof(float) * (size_t)(ox1 - b));
                } else {
                    for (int ox = ox0; ox < ox1; ox++) {
                        int ix = ox * s + kx - pl;
                        dst[ox - ox0] = ix >= 0 && ix < W ? xr[ix] : 0.0f;
                    }
                }
            }
            dst += n;
            p += (size_t)n;
        }
    }
}

/* ------------------------------------------------------------------ conv2d */

void zl_op_conv2d(float *y, const float *x, const zl_conv2d *c, int H, int W, int s, int pt, int pb, int pl,
                  int pr) {
    int k = c->k, cout = c->cout, cin = c->cin;
    int Ho = zl_conv2d_out_size(H, k, s, pt, pb), Wo = zl_conv2d_out_size(W, k, s, pl, pr);
    if (Ho <= 0 || Wo <= 0 || cout <= 0) return;
    size_t P = (size_t)Ho * Wo, K = (size_t)cin * k * k;
    if (K == 0) {
        for (int co = 0; co < cout; co++)
            for (size_t p = 0; p < P; p++) y[(size_t)co * P + p] = c->bias ? c->bias[co] : 0.0f;
        return;
    }
    if (zl_ops_kernels_() == ZL_KERNELS_FALLBACK) { conv_direct(y, x, c, H, W, s, pt, pl, Ho, Wo); return; }
    int pointwise = k == 1 && s == 1 && pt == 0 && pb == 0 && pl == 0 && pr == 0;
    /* weights as f32: in place, converted once, or converted in tiles of tr output channels per band */
    const float *wf = c->dtype == ZL_F32 ? (const float *)c->w : NULL;
    float *wbuf = NULL;
    size_t tr = (size_t)cout;
    if (!wf) {
        size_t maxr = wconv_max_bytes / (sizeof(float) * K);
        if (tr > maxr) tr = maxr ? maxr : 1;
        for (;;) {
            wbuf = malloc(sizeof(float) * tr * K);
            if (wbuf || tr == 1) break;
            tr /= 2;
        }
        if (!wbuf) { conv_direct(y, x, c, H, W, s, pt, pl, Ho, Wo); return; }
        if (tr == (size_t)cout) {
            zl_to_f32(wbuf, c->w, c->dtype, (size_t)cout * K);
            wf = wbuf;
        }
    }
    /* band of output pixels: at most col_max_bytes of im2col (none for a pointwise convolution) */
    float *col = NULL;
    size_t nb = P;
    if (!pointwise) {
        size_t m = col_max_bytes / (sizeof(float) * K);
        if (m < 1) m = 1;
        if (nb > m) nb = m;
        for (;;) {
            col = malloc(sizeof(float) * nb * K);
            if (col || nb == 1) break;
            nb /= 2;
        }
        if (!col) { free(wbuf); conv_direct(y, x, c, H, W, s, pt, pl, Ho, Wo); return; }
    }
    float beta = c->bias ? 1.0f : 0.0f;
    for (size_t p0 = 0; p0 < P; p0 += nb) {
        size_t np = P - p0 < nb ? P - p0 : nb;
        const float *B;
        size_t ldb;
        if (pointwise) { B = x + p0; ldb = P; }
        else { im2col(col, x, cin, H, W, k, s, pt, pl, Wo, p0, np); B = col; ldb = np; }
        if (c->bias)
            for (int co = 0; co < cout; co++) {
                float *yr = y + (size_t)co * P + p0, b = c->bias[co];
                for (size_t i = 0; i < np; i++) yr[i] = b;
            }
        for (size_t r0 = 0; r0 < (size_t)cout; r0 += tr) {
            size_t nr = (size_t)cout - r0 < tr ? (size_t)cout - r0 : tr;
            const float *A;
            if (wf) A = wf + r0 * K;
            else {
                zl_to_f32(wbuf, (const char *)c->w + r0 * K * zl_dtype_size(c->dtype), c->dtype, nr * K);
                A = wbuf;
            }
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)nr, (int)np, (int)K, 1.0f, A, (int)K, B,
                        (int)ldb, beta, y + r0 * P + p0, (int)P);
        }
    }
    free(col);
    free(wbuf);
}

/* ------------------------------------------------------------------ group norm */

void zl_op_groupnorm(float *y, const float *x, const float *w, const float *b, int C, size_t HW, int groups,
                     float eps) {
    if (C <= 0 || groups <= 0 || C % groups || HW == 0) return;
    int cpg = C / groups;
    double stackbuf[2 * 512];
    double *cs = (size_t)C <= 512 ? stackbuf : malloc(sizeof(double) * 2 * (size_t)C);
    double *gm = NULL;
    int par = (size_t)C * HW >= PAR_MIN;
    if (!cs) { /* no scratch: one group at a time on this thread */
        for (int g = 0; g < groups; g++) {
            const float *xg = x + (size_t)g * cpg * HW;
            size_t n = (size_t)cpg * HW;
            double s = 0, v = 0;
            for (size_t i = 0; i < n; i++) s += xg[i];
            double mean = s / (double)n;
            for (size_t i = 0; i < n; i++) { double d = xg[i] - mean; v += d * d; }
            double rs = 1.0 / sqrt(v / (double)n + (double)eps);
            for (int cc = 0; cc < cpg; cc++) {
                int ch = g * cpg + cc;
                float a = (float)(rs * (w ? w[ch] : 1.0f)), bb = (float)((b ? b[ch] : 0.0f) - mean * rs * (w ? w[ch] : 1.0f));
                const float *xr = x + (size_t)ch * HW;
                float *yr = y + (size_t)ch * HW;
                for (size_t i = 0; i < HW; i++) yr[i] = xr[i] * a + bb;
            }
        }
        return;
    }
    gm = cs + C; /* per channel: sum, then sum of squared deviations; gm[ch] the group mean of ch */
#pragma omp parallel for schedule(static) if (par)
    for (int ch = 0; ch < C; ch++) {
        const float *xr = x + (size_t)ch * HW;
        double s0 = 0, s1 = 0, s2 = 0, s3 = 0;
        size_t i = 0;
        for (; i + 4 <= HW; i += 4) { s0 += xr[i]; s1 += xr[i + 1]; s2 += xr[i + 2]; s3 += xr[i + 3]; }
        for (; i < HW; i++) s0 += xr[i];
        cs[ch] = s0 + s1 + s2 + s3;
    }
    for (int g = 0; g < groups; g++) {
        double s = 0;
        for (int cc = 0; cc < cpg; cc++) s += cs[g * cpg + cc];
        for (int cc = 0; cc < cpg; cc++) gm[g * cpg + cc] = s / ((double)cpg * (double)HW);
    }
#pragma omp parallel for schedule(static) if (par)
    for (int ch = 0; ch < C; ch++) {
        const float *xr = x + (size_t)ch * HW;
        double m = gm[ch], s0 = 0, s1 = 0;
        size_t i = 0;
        for (; i + 2 <= HW; i += 2) {
            double d0 = xr[i] - m, d1 = xr[i + 1] - m;
            s0 += d0 * d0;
            s1 += d1 * d1;
        }
        for (; i < HW; i++) { double d = xr[i] - m; s0 += d * d; }
        cs[ch] = s0 + s1;
    }
    for (int g = 0; g < groups; g++) {
        double v = 0;
        for (int cc = 0; cc < cpg; cc++) v += cs[g * cpg + cc];
        double rs = 1.0 / sqrt(v / ((double)cpg * (double)HW) + (double)eps);
        for (int cc = 0; cc < cpg; cc++) cs[g * cpg + cc] = rs; /* cs now holds rstd per channel */
    }
#pragma omp parallel for schedule(static) if (par)
    for (int ch = 0; ch < C; ch++) {
        double sc = cs[ch] * (w ? w[ch] : 1.0f);
        float a = (float)sc, bb = (float)((b ? b[ch] : 0.0f) - gm[ch] * sc);
        const float *xr = x + (size_t)ch * HW;
        float *yr = y + (size_t)ch * HW;
        for (size_t i = 0; i < HW; i++) yr[i] = xr[i] * a + bb;
    }
    if (cs != stackbuf) free(cs);
}

/* ------------------------------------------------------------------ layout */

void zl_op_upsample2x(float *y, const float *x, int C, int H, int W) {
    if (C <= 0 || H <= 0 || W <= 0) return;
    long rows = (long)C * H;
#pragma omp parallel for schedule(static) if ((size_t)rows * W >= PAR_MIN)
    for (long r = 0; r < rows; r++) {
        const float *xr = x + (size_t)r * W;
        float *y0 = y + (size_t)r * 4 * W; /* row 2i of channel c is row 2r of the flat [C·2H, 2W] array */
        for (int j = 0; j < W; j++) y0[2 * j] = y0[2 * j + 1] = xr[j];
        memcpy(y0 + 2 * W, y0, sizeof(float) * 2 * (size_t)W);
    }
}

#define TB 32
void zl_op_transpose(float *y, const float *x, int rows, int cols) {
    if (rows <= 0 || cols <= 0) return;
    int nbc = (cols + TB - 1) / TB;
#pragma omp parallel for schedule(static) if ((size_t)rows * cols >= PAR_MIN)
    for (int bc = 0; bc < nbc; bc++) {
        int c0 = bc * TB, c1 = c0 + TB < cols ? c0 + TB : cols;
        for (int r0 = 0; r0 < rows; r0 += TB) {
            int r1 = r0 + TB < rows ? r0 + TB : rows;
            for (int c = c0; c < c1; c++) {
                float *yr = y + (size_t)c * rows;
                for (int r = r0; r < r1; r++) yr[r] = x[(size_t)r * cols + c];
            }
        }
    }
}

void zl_op_affine(float *y, const float *x, size_t n, float a, float b) {
#pragma omp parallel for schedule(static) if (n >= PAR_MIN)
    for (size_t i = 0; i < n; i++) y[i] = x[i] * a + b;
}

/* ------------------------------------------------------------------ tiles */

static float ramp(int i, int n, int o0, int o1) {
    float r = 1.0f;
    if (o0 > 0 && i < o0) r *= ((float)i + 0.5f) / (float)o0;
    if (o1 > 0 && n - 1 - i < o1) r *= ((float)(n - 1 - i) + 0.5f) / (float)o1;
    return r;
}

void zl_op_tile_blend(float *acc, float *wsum, const float *t, int C, int H, int W, int y0, int x0, int th, int tw,
                      int ov_top, int ov_bottom, int ov_left, int ov_right) {
    if (C <= 0 || th <= 0 || tw <= 0) return;
    (void)H;
#pragma omp parallel for schedule(static) if ((size_t)C * th * tw >= PAR_MIN)
    for (int c = 0; c < C; c++)
        for (int i = 0; i < th; i++) {
            float ry = ramp(i, th, ov_top, ov_bottom);
            float *ar = acc + ((size_t)c * H + (size_t)(y0 + i)) * W + x0;
            const float *tr = t + ((size_t)c * th + i) * tw;
            for (int j = 0; j < tw; j++) ar[j] += tr[j] * (ry * ramp(j, tw, ov_left, ov_right));
        }
    for (int i = 0; i < th; i++) {
        float ry = ramp(i, th, ov_top, ov_bottom);
        float *wr = wsum + (size_t)(y0 + i) * W + x0;
        for (int j = 0; j < tw; j++) wr[j] += ry * ramp(j, tw, ov_left, ov_right);
    }
}

void zl_op_tile_finish(float *out, const float *acc, const float *wsum, int C, int H, int W) {
    size_t hw = (size_t)H * W;
    if (C <= 0 || hw == 0) return;
#pragma omp parallel for schedule(static) if ((size_t)C * hw >= PAR_MIN)
    for (int c = 0; c < C; c++)
        for (size_t i = 0; i < hw; i++) out[(size_t)c * hw + i] = wsum[i] != 0.0f ? acc[(size_t)c * hw + i] / wsum[i] : 0.0f;
}
