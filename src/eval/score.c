/* score.c — sharpness, high-frequency ratio, mean absolute difference and SSIM (see score.h for the
 * definitions). Planes are double; filters are separable passes over rows, parallel over rows, with
 * `omp simd` on the element-wise inner loops (gcc's -O2 cost model leaves them scalar otherwise; lanes do
 * not change the order of any sum, so results stay bit-identical). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "base/base.h"
#include "eval/score.h"

#define PAR_MIN 16384 /* pixels below which a pass stays on one thread */

/* Mirrors index p into [0, n) without repeating the edge (BORDER_REFLECT_101), as often as needed. */
static int reflect101(int p, int n) {
    if (n == 1) return 0;
    while (p < 0 || p >= n) {
        if (p < 0) p = -p;
        if (p >= n) p = 2 * n - 2 - p;
    }
    return p;
}

static int check_size(int w, int h) {
    if (w <= 0 || h <= 0) return zl_err("bad image size %dx%d", w, h);
    if ((size_t)w * (size_t)h > ((size_t)1 << 40)) return zl_err("image %dx%d is too large", w, h);
    return 0;
}

static int check_finite(const float *rgb, int w, int h, const char *what) {
    size_t n = (size_t)w * h * 3;
    for (size_t i = 0; i < n; i++)
        if (!isfinite(rgb[i]))
            return zl_err("%s has a non-finite value at pixel (%zu, %zu)", what, i / 3 % (size_t)w, i / 3 / (size_t)w);
    return 0;
}

static double *alloc_planes(size_t npix, int nplanes) {
    size_t n;
    if (zl_mul_size(npix, (size_t)nplanes * sizeof(double), &n)) {
        zl_err("image of %zu pixels is too large", npix);
        return NULL;
    }
    double *p = zl_try_malloc(n);
    if (!p) zl_err_prefix("scoring an image of %zu pixels", npix);
    return p;
}

void zl_score_luma(const float *rgb, size_t n, double *y) {
#pragma omp parallel for schedule(static) if (n >= PAR_MIN)
    for (size_t i = 0; i < n; i++)
        y[i] = 0.299 * rgb[3 * i] + 0.587 * rgb[3 * i + 1] + 0.114 * rgb[3 * i + 2];
}

/* Sum of v[0..n) in order. */
static double sum_rows(const double *v, int n) {
    double s = 0;
    for (int i = 0; i < n; i++) s += v[i];
    return s;
}

/* ------------------------------------------------------------------ Gaussian blur */

/* taps k[0..2r] = exp(−(i−r)²/(2σ²)) normalised to sum 1; returns r = ceil(3σ). k must hold 2r+1. */
static int gauss_radius(double sigma) { return (int)ceil(3.0 * sigma); }
static void gauss_taps(double sigma, int r, double *k) {
    double s = 0;
    for (int i = -r; i <= r; i++) s += k[i + r] = exp(-(double)i * i / (2.0 * sigma * sigma));
    for (int i = 0; i <= 2 * r; i++) k[i] /= s;
}

/* out = G∗in on one double plane [h][w]; tmp [h][w] scratch; k [2r+1]. */
static void blur_plane(const double *in, int w, int h, const double *k, int r, double *tmp, double *out) {
    int *ix = zl_xmalloc(sizeof(int) * ((size_t)w + 2 * (size_t)r));
    int *iy = zl_xmalloc(sizeof(int) * ((size_t)h + 2 * (size_t)r));
    for (int i = 0; i < w + 2 * r; i++) ix[i] = reflect101(i - r, w);
    for (int i = 0; i < h + 2 * r; i++) iy[i] = reflect101(i - r, h);
    size_t npix = (size_t)w * h;
#pragma omp parallel for schedule(static) if (npix >= PAR_MIN)
    for (int y = 0; y < h; y++) {
        const double *row = in + (size_t)y * w;
        double *o = tmp + (size_t)y * w;
        for (int x = 0; x < w; x++) {
            double s = 0;
            for (int j = 0; j <= 2 * r; j++) s += k[j] * row[ix[x + j]];
            o[x] = s;
        }
    }
#pragma omp parallel for schedule(static) if (npix >= PAR_MIN)
    for (int y = 0; y < h; y++) {
        double *restrict o = out + (size_t)y * w;
        for (int x = 0; x < w; x++) o[x] = 0;
        for (int j = 0; j <= 2 * r; j++) {
            const double *restrict src = tmp + (size_t)iy[y + j] * w, kj = k[j];
#pragma omp simd
            for (int x = 0; x < w; x++) o[x] += kj * src[x];
        }
    }
    free(ix);
    free(iy);
}

int zl_score_blur(const float *in, int w, int h, int channels, double sigma, float *out) {
    if (check_size(w, h)) return -1;
    if (channels <= 0 || channels > 64) return zl_err("blur: bad channel count %d", channels);
    if (!(sigma > 0 && sigma <= 1000)) return zl_err("blur: sigma %g is not in (0, 1000]", sigma);
    size_t npix = (size_t)w * h;
    double *p = alloc_planes(npix, 3);
    if (!p) return -1;
    int r = gauss_radius(sigma);
    double *k = zl_xmalloc(sizeof(double) * (2 * (size_t)r + 1));
    gauss_taps(sigma, r, k);
    for (int c = 0; c < channels; c++) {
        for (size_t i = 0; i < npix; i++) p[i] = in[i * channels + c];
        blur_plane(p, w, h, k, r, p + npix, p + 2 * npix);
        for (size_t i = 0; i < npix; i++) out[i * channels + c] = (float)p[2 * npix + i];
    }
    free(k);
    free(p);
    return 0;
}

/* ------------------------------------------------------------------ sharpness */

int zl_score_sharpness(const float *rgb, int w, int h, zl_sharp_score *out) {
    memset(out, 0, sizeof *out);
    if (check_size(w, h) || check_finite(rgb, w, h, "image")) return -1;
    size_t npix = (size_t)w * h;
    double *Y = alloc_planes(npix, 3);
    if (!Y) return -1;
    double *tmp = Y + npix, *B = Y + 2 * npix;
    double *rs = zl_xmalloc(sizeof(double) * 3 * (size_t)h), *rs2 = rs + h, *rs3 = rs + 2 * h;
    zl_score_luma(rgb, npix, Y);

    /* variance of the Laplacian: per-row sums of L and L² */
#pragma omp parallel for schedule(static) if (npix >= PAR_MIN)
    for (int y = 0; y < h; y++) {
        const double *row = Y + (size_t)y * w;
        const double *up = Y + (size_t)reflect101(y - 1, h) * w, *dn = Y + (size_t)reflect101(y + 1, h) * w;
        double s = 0, s2 = 0;
        for (int x = 0; x < w; x++) {
            int xl = x > 0 ? x - 1 : reflect101(-1, w), xr = x < w - 1 ? x + 1 : reflect101(w, w);
            double l = row[xl] + row[xr] + up[x] + dn[x] - 4.0 * row[x];
            s += l;
            s2 += l * l;
        }
        rs[y] = s;
        rs2[y] = s2;
    }
    double ml = sum_rows(rs, h) / (double)npix;
    out->sharpness = fmax(0.0, sum_rows(rs2, h) / (double)npix - ml * ml);

    /* hf_ratio: mean((Y − G∗Y)²) / var(Y), both over all pixels; var(Y) in two passes */
    for (int y = 0; y < h; y++) rs[y] = sum_rows(Y + (size_t)y * w, w);
    double mean = sum_rows(rs, h) / (double)npix;
    int r = gauss_radius(ZL_SCORE_HF_SIGMA);
    double k[2 * 8 + 1]; /* r = ceil(3σ) ≤ 8 for ZL_SCORE_HF_SIGMA ≤ 8/3 */
    gauss_taps(ZL_SCORE_HF_SIGMA, r, k);
    blur_plane(Y, w, h, k, r, tmp, B);
#pragma omp parallel for schedule(static) if (npix >= PAR_MIN)
    for (int y = 0; y < h; y++) {
        const double *row = Y + (size_t)y * w, *b = B + (size_t)y * w;
        double v = 0, e = 0;
        for (int x = 0; x < w; x++) {
            double d = row[x] - mean, f = row[x] - b[x];
            v += d * d;
            e += f * f;
        }
        rs2[y] = v;
        rs3[y] = e;
    }
    double var = sum_rows(rs2, h) / (double)npix, hf = sum_rows(rs3, h) / (double)npix;
    out->hf_ratio = var < 1e-14 ? 0.0 : hf / var;
    free(rs);
    free(Y);
    return 0;
}

/* ------------------------------------------------------------------ difference */

int zl_score_difference(const float *a, const float *b, int w, int h, zl_diff_score *out) {
    memset(out, 0, sizeof *out);
    if (check_size(w, h) || check_finite(a, w, h, "image") || check_finite(b, w, h, "reference")) return -1;
    if (w < ZL_SSIM_WIN || h < ZL_SSIM_WIN)
        return zl_err("image %dx%d is smaller than the %dx%d SSIM window", w, h, ZL_SSIM_WIN, ZL_SSIM_WIN);
    size_t npix = (size_t)w * h;
    const int R = ZL_SSIM_WIN / 2, ow = w - 2 * R, oh = h - 2 * R;
    /* X, Y lumas; then 5 horizontally filtered planes [h][ow]: x, y, xx, yy, xy */
    double *X = alloc_planes(npix, 7);
    if (!X) return -1;
    double *Y = X + npix, *H = Y + npix;
    size_t hp = (size_t)h * ow; /* one filtered plane */
    double *rs = zl_xmalloc(sizeof(double) * (size_t)h);

    /* mean absolute difference, per row */
#pragma omp parallel for schedule(static) if (npix >= PAR_MIN)
    for (int y = 0; y < h; y++) {
        const float *pa = a + (size_t)y * w * 3, *pb = b + (size_t)y * w * 3;
        double s = 0;
        for (int i = 0; i < 3 * w; i++) s += fabs((double)pa[i] - (double)pb[i]);
        rs[y] = s;
    }
    out->difference = sum_rows(rs, h) / (3.0 * (double)npix);

    zl_score_luma(a, npix, X);
    zl_score_luma(b, npix, Y);
    double g[ZL_SSIM_WIN];
    gauss_taps(ZL_SSIM_SIGMA, R, g);
    /* horizontal pass over every row, vertical pass per valid output row; x innermost (vectorises) */
#pragma omp parallel for schedule(static) if (npix >= PAR_MIN)
    for (int y = 0; y < h; y++) {
        const double *px = X + (size_t)y * w, *py = Y + (size_t)y * w;
        double *restrict hx = H + (size_t)y * ow, *restrict hy = hx + hp, *restrict hxx = hy + hp, *restrict hyy = hxx + hp,
               *restrict hxy = hyy + hp;
        for (int x = 0; x < ow; x++) hx[x] = hy[x] = hxx[x] = hyy[x] = hxy[x] = 0;
        for (int j = 0; j < ZL_SSIM_WIN; j++) {
            const double gj = g[j], *restrict u = px + j, *restrict v = py + j;
#pragma omp simd
            for (int x = 0; x < ow; x++) {
                hx[x] += gj * u[x];
                hy[x] += gj * v[x];
                hxx[x] += gj * (u[x] * u[x]);
                hyy[x] += gj * (v[x] * v[x]);
                hxy[x] += gj * (u[x] * v[x]);
            }
        }
    }
    const double C1 = 0.01 * 0.01, C2 = 0.03 * 0.03;
#pragma omp parallel if (npix >= PAR_MIN)
    {
        double *m = zl_xmalloc(sizeof(double) * 5 * (size_t)ow);
#pragma omp for schedule(static)
        for (int y = 0; y < oh; y++) {
            for (size_t i = 0; i < 5 * (size_t)ow; i++) m[i] = 0;
            for (int j = 0; j < ZL_SSIM_WIN; j++)
                for (int q = 0; q < 5; q++) {
                    const double gj = g[j], *restrict src = H + q * hp + (size_t)(y + j) * ow;
                    double *restrict d = m + (size_t)q * ow;
#pragma omp simd
                    for (int x = 0; x < ow; x++) d[x] += gj * src[x];
                }
            double s = 0;
            for (int x = 0; x < ow; x++) {
                double mx = m[x], my = m[ow + x];
                double vx = m[2 * ow + x] - mx * mx, vy = m[3 * ow + x] - my * my, cxy = m[4 * ow + x] - mx * my;
                s += ((2 * mx * my + C1) * (2 * cxy + C2)) / ((mx * mx + my * my + C1) * (vx + vy + C2));
            }
            rs[y] = s;
        }
        free(m);
    }
    out->ssim = sum_rows(rs, oh) / ((double)ow * oh);
    free(rs);
    free(X);
    return 0;
}

/* ------------------------------------------------------------------ both */

int zl_score_image(const zl_image *img, const zl_image *ref, zl_score *out) {
    memset(out, 0, sizeof *out);
    out->w = img->w;
    out->h = img->h;
    if (ref && (ref->w != img->w || ref->h != img->h))
        return zl_err("image is %dx%d but the reference is %dx%d (they must be the same size)", img->w, img->h,
                      ref->w, ref->h);
    if (zl_score_sharpness(img->px, img->w, img->h, &out->sharp)) return -1;
    if (ref) {
        if (zl_score_difference(img->px, ref->px, img->w, img->h, &out->diff)) return -1;
        out->has_ref = 1;
    }
    return 0;
}
