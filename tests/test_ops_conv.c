/* test_ops_conv.c — every op of src/nn/ops_conv.h against a plain double-precision loop written here
 * (never the implementation): convolutions with odd sizes, strides, symmetric and asymmetric padding,
 * F32/BF16/F16 weights, one band or many (partial rows), weights converted at once or in row tiles, and
 * the no-scratch fallback; GroupNorm; nearest upsampling; transpose; affine; tile blending. */
#include "test.h"
#include "base/base.h"
#include "base/dtype.h"
#include "nn/ops.h"
#include "nn/ops_conv.h"
#include "nn/ops_internal.h"

#include <stdlib.h>
#include <string.h>

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
        if (!(d <= m)) m = d;
    }
    return m;
}

/* ------------------------------------------------------------------ conv2d */

static double *conv_ref(const float *x, const float *w, const float *bias, int cout, int cin, int k, int H, int W,
                        int s, int pt, int pb, int pl, int pr, int *Ho, int *Wo) {
    *Ho = (H + pt + pb - k) / s + 1;
    *Wo = (W + pl + pr - k) / s + 1;
    double *y = malloc(sizeof(double) * (size_t)cout * *Ho * *Wo);
    for (int co = 0; co < cout; co++)
        for (int oy = 0; oy < *Ho; oy++)
            for (int ox = 0; ox < *Wo; ox++) {
                double acc = bias ? bias[co] : 0.0;
                for (int ci = 0; ci < cin; ci++)
                    for (int ky = 0; ky < k; ky++)
                        for (int kx = 0; kx < k; kx++) {
                            int iy = oy * s + ky - pt, ix = ox * s + kx - pl;
                            if (iy < 0 || iy >= H || ix < 0 || ix >= W) continue;
                            acc += (double)w[((co * cin + ci) * k + ky) * k + kx] * x[(ci * H + iy) * W + ix];
                        }
                y[(co * *Ho + oy) * *Wo + ox] = acc;
            }
    return y;
}

typedef struct { int cout, cin, k, H, W, s, pt, pb, pl, pr, bias; } conv_case;

/* Runs one case with weights stored as dt; band/wconv scratch limits in bytes (0: default); kernels. */
static double run_conv(const conv_case *cc, zl_dtype dt, size_t band, size_t wconv, int kernels, zl_rng *g) {
    size_t nw = (size_t)cc->cout * cc->cin * cc->k * cc->k, nx = (size_t)cc->cin * cc->H * cc->W;
    float *x = randv(g, nx, 1.0f), *w = randv(g, nw, 0.3f), *b = cc->bias ? randv(g, (size_t)cc->cout, 0.5f) : NULL;
    void *ws = w;
    if (dt != ZL_F32) { /* the reference sees the rounded weights */
        ws = malloc(2 * nw);
        zl_from_f32(ws, w, dt, nw);
        zl_to_f32(w, ws, dt, nw);
    }
    int Ho, Wo;
    double *ref = conv_ref(x, w, b, cc->cout, cc->cin, cc->k, cc->H, cc->W, cc->s, cc->pt, cc->pb, cc->pl, cc->pr, &Ho, &Wo);
    if (zl_conv2d_out_size(cc->H, cc->k, cc->s, cc->pt, cc->pb) != Ho || zl_conv2d_out_size(cc->W, cc->k, cc->s, cc->pl, cc->pr) != Wo) return 1e9;
    size_t ny = (size_t)cc->cout * Ho * Wo;
    float *y = malloc(sizeof(float) * ny);
    for (size_t i = 0; i < ny; i++) y[i] = NAN;
    zl_conv2d c = {dt, ws, b, cc->cout, cc->cin, cc->k};
    zl_ops_set_kernels(kernels);
    zl_ops_conv_set_scratch(band, wconv);
    zl_op_conv2d(y, x, &c, cc->H, cc->W, cc->s, cc->pt, cc->pb, cc->pl, cc->pr);
    zl_ops_set_kernels(ZL_KERNELS_AUTO);
    zl_ops_conv_set_scratch(0, 0);
    double e = maxerr(y, ref, ny);
    free(x); free(w); free(b); free(ref); free(y);
    if (ws != w) free(ws);
    return e;
}

TEST(ops_conv2d_vs_loops) {
    zl_rng g = {7};
    const conv_case cases[] = {
        {5, 3, 3, 7, 9, 1, 1, 1, 1, 1, 1},   /* 3×3 same padding, bias */
        {6, 4, 3, 9, 8, 2, 0, 1, 0, 1, 1},   /* the VAE downsample: pad right/bottom by 1, stride 2 */
        {4, 5, 3, 8, 11, 2, 0, 1, 0, 1, 0},  /* odd width, no bias */
        {7, 6, 1, 5, 13, 1, 0, 0, 0, 0, 1},  /* pointwise (shortcut) */
        {3, 2, 5, 10, 7, 3, 2, 1, 0, 3, 1},  /* 5×5, stride 3, all pads different */
        {2, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1},   /* 1×1 image */
        {3, 2, 3, 4, 6, 1, 0, 0, 0, 0, 0},   /* valid convolution */
        {9, 17, 3, 13, 6, 1, 1, 1, 1, 1, 1}, /* more channels */
    };
    const zl_dtype dts[] = {ZL_F32, ZL_BF16, ZL_F16};
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++)
        for (int d = 0; d < 3; d++) {
            const conv_case *cc = &cases[i];
            size_t K = (size_t)cc->cin * cc->k * cc->k * sizeof(float);
            struct { size_t band, wconv; int kern; const char *what; } runs[] = {
                {0, 0, ZL_KERNELS_AUTO, "one band"},
                {K * 5, 0, ZL_KERNELS_AUTO, "bands of 5 pixels"},         /* bands end mid-row */
                {1, K * 2, ZL_KERNELS_AUTO, "1-pixel bands, 2-row weight tiles"},
                {0, K * 3, ZL_KERNELS_GENERIC, "3-row weight tiles"},
                {0, 0, ZL_KERNELS_FALLBACK, "no-scratch fallback"},
            };
            for (size_t r = 0; r < sizeof runs / sizeof *runs; r++) {
                double e = run_conv(cc, dts[d], runs[r].band, runs[r].wconv, runs[r].kern, &g);
                CHECK_MSG(e < 2e-5, "case %zu, %s weights, %s: max err %.3g", i, zl_dtype_name(dts[d]), runs[r].what, e);
            }
        }
}

TEST(ops_conv2d_sizes) {
    CHECK(zl_conv2d_out_size(8, 3, 2, 0, 1) == 4);   /* VAE downsample halves even sides */
    CHECK(zl_conv2d_out_size(7, 3, 2, 0, 1) == 3);
    CHECK(zl_conv2d_out_size(5, 3, 1, 1, 1) == 5);
    CHECK(zl_conv2d_out_size(2, 5, 1, 1, 1) == 0);
    CHECK(zl_conv2d_out_size(0, 1, 1, 0, 0) == 0);
    CHECK(zl_conv2d_out_size(4, 3, 0, 1, 1) == 0);
}

/* ------------------------------------------------------------------ group norm */

TEST(ops_groupnorm_vs_loops) {
    zl_rng g = {11};
    const int shapes[][3] = {{8, 37, 4}, {32, 5, 32}, {12, 1, 3}, {6, 4099, 2}, {64, 300, 8}};
    for (size_t s = 0; s < sizeof shapes / sizeof *shapes; s++) {
        int C = shapes[s][0], HW = shapes[s][1], G = shapes[s][2], cpg = C / G;
        size_t n = (size_t)C * HW;
        float *x = randv(&g, n, 2.0f), *w = randv(&g, (size_t)C, 1.0f), *b = randv(&g, (size_t)C, 1.0f);
        for (size_t i = 0; i < n; i++) x[i] += 3.0f + (float)(i / (size_t)HW % 5); /* channel offsets */
        double *ref = malloc(sizeof(double) * n);
        for (int aff = 0; aff < 2; aff++) {
            for (int gi = 0; gi < G; gi++) {
                double m = 0, v = 0;
                for (int c = gi * cpg; c < (gi + 1) * cpg; c++)
                    for (int i = 0; i < HW; i++) m += x[(size_t)c * HW + i];
                m /= (double)cpg * HW;
                for (int c = gi * cpg; c < (gi + 1) * cpg; c++)
                    for (int i = 0; i < HW; i++) v += (x[(size_t)c * HW + i] - m) * (x[(size_t)c * HW + i] - m);
                v /= (double)cpg * HW;
                for (int c = gi * cpg; c < (gi + 1) * cpg; c++)
                    for (int i = 0; i < HW; i++) {
                        double t = (x[(size_t)c * HW + i] - m) / sqrt(v + 1e-6);
                        ref[(size_t)c * HW + i] = aff ? t * w[c] + b[c] : t;
                    }
            }
            float *y = malloc(sizeof(float) * n);
            zl_op_groupnorm(y, x, aff ? w : NULL, aff ? b : NULL, C, (size_t)HW, G, 1e-6f);
            double e = maxerr(y, ref, n);
            CHECK_MSG(e < 1e-5, "C %d HW %d G %d affine %d: %.3g", C, HW, G, aff, e);
            memcpy(y, x, sizeof(float) * n); /* in place */
            zl_op_groupnorm(y, y, aff ? w : NULL, aff ? b : NULL, C, (size_t)HW, G, 1e-6f);
            CHECK(maxerr(y, ref, n) < 1e-5);
            free(y);
        }
        free(x); free(w); free(b); free(ref);
    }
    /* a constant group: variance 0, output = bias (eps keeps it finite) */
    float x[8] = {5, 5, 5, 5, 1, 2, 3, 4}, y[8], b[2] = {0.25f, 0};
    zl_op_groupnorm(y, x, NULL, b, 2, 4, 2, 1e-6f);
    for (int i = 0; i < 4; i++) CHECK(y[i] == 0.25f);
    CHECK(fabsf(y[4] + y[7]) < 1e-6f && y[4] < -1.3f);
}

/* ------------------------------------------------------------------ layout ops */

TEST(ops_upsample_transpose_affine) {
    zl_rng g = {3};
    int C = 3, H = 5, W = 7;
    float *x = randv(&g, (size_t)C * H * W, 1.0f), *y = malloc(sizeof(float) * 4 * C * H * W);
    zl_op_upsample2x(y, x, C, H, W);
    for (int c = 0; c < C; c++)
        for (int i = 0; i < 2 * H; i++)
            for (int j = 0; j < 2 * W; j++) CHECK(y[(c * 2 * H + i) * 2 * W + j] == x[(c * H + i / 2) * W + j / 2]);
    free(x); free(y);
    const int tr[][2] = {{1, 1}, {3, 70}, {65, 33}, {512, 300}};
    for (size_t t = 0; t < 4; t++) {
        int R = tr[t][0], Cc = tr[t][1];
        float *a = randv(&g, (size_t)R * Cc, 1.0f), *b = malloc(sizeof(float) * R * Cc), *c2 = malloc(sizeof(float) * R * Cc);
        zl_op_transpose(b, a, R, Cc);
        for (int r = 0; r < R; r++)
            for (int c = 0; c < Cc; c++) CHECK(b[(size_t)c * R + r] == a[(size_t)r * Cc + c]);
        zl_op_transpose(c2, b, Cc, R);
        CHECK(memcmp(c2, a, sizeof(float) * R * Cc) == 0);
        free(a); free(b); free(c2);
    }
    float v[5] = {1, -2, 0.5f, 0, 100}, o[5];
    zl_op_affine(o, v, 5, 0.3611f, -0.1159f * 0.3611f);
    for (int i = 0; i < 5; i++) CHECK_NEAR(o[i], ((double)v[i] - 0.1159) * 0.3611, 1e-5);
    zl_op_affine(o, o, 5, 1.0f / 0.3611f, 0.1159f);
    for (int i = 0; i < 5; i++) CHECK_NEAR(o[i], v[i], 1e-4);
}

/* ------------------------------------------------------------------ tiles */

static double rampd(int i, int n, int o0, int o1) {
    double r = 1;
    if (o0 > 0 && i < o0) r *= (i + 0.5) / o0;
    if (o1 > 0 && n - 1 - i < o1) r *= (n - 1 - i + 0.5) / o1;
    return r;
}

TEST(ops_tile_blend) {
    zl_rng g = {5};
    int C = 2, H = 9, W = 11;
    /* tiles: a 2×2 grid of 6×7 tiles at y {0,3}, x {0,4}: overlaps 3 rows, 3 columns */
    const int ty[2] = {0, 3}, tx[2] = {0, 4}, th = 6, tw = 7;
    float *acc = calloc((size_t)C * H * W, sizeof(float)), *ws = calloc((size_t)H * W, sizeof(float));
    double *racc = calloc((size_t)C * H * W, sizeof(double)), *rws = calloc((size_t)H * W, sizeof(double));
    for (int a = 0; a < 2; a++)
        for (int b = 0; b < 2; b++) {
            float *t = randv(&g, (size_t)C * th * tw, 1.0f);
            int ot = a ? 3 : 0, ob = a ? 0 : 3, ol = b ? 3 : 0, orr = b ? 0 : 3;
            zl_op_tile_blend(acc, ws, t, C, H, W, ty[a], tx[b], th, tw, ot, ob, ol, orr);
            for (int c = 0; c < C; c++)
                for (int i = 0; i < th; i++)
                    for (int j = 0; j < tw; j++) {
                        double wgt = rampd(i, th, ot, ob) * rampd(j, tw, ol, orr);
                        racc[((size_t)c * H + ty[a] + i) * W + tx[b] + j] += wgt * t[(c * th + i) * tw + j];
                        if (c == 0) rws[(size_t)(ty[a] + i) * W + tx[b] + j] += wgt;
                    }
            free(t);
        }
    /* matched linear ramps sum to one everywhere */
    for (int i = 0; i < H * W; i++) CHECK_NEAR(ws[i], 1.0, 1e-6);
    for (int i = 0; i < H * W; i++) CHECK_NEAR(ws[i], rws[i], 1e-6);
    float *out = malloc(sizeof(float) * C * H * W);
    zl_op_tile_finish(out, acc, ws, C, H, W);
    for (int i = 0; i < C * H * W; i++) CHECK_NEAR(out[i], racc[i] / rws[i % (H * W)], 1e-5);
    zl_op_tile_finish(acc, acc, ws, C, H, W); /* in place */
    CHECK(memcmp(acc, out, sizeof(float) * C * H * W) == 0);
    /* constant tiles blend to the constant, whatever the overlaps; an uncovered pixel gives 0 */
    memset(acc, 0, sizeof(float) * C * H * W);
    memset(ws, 0, sizeof(float) * H * W);
    float *t = malloc(sizeof(float) * C * 8 * 8);
    for (int i = 0; i < C * 64; i++) t[i] = 2.5f;
    zl_op_tile_blend(acc, ws, t, C, H, W, 0, 0, 8, 8, 0, 5, 0, 6);
    zl_op_tile_blend(acc, ws, t, C, H, W, 1, 3, 8, 8, 7, 0, 5, 0);
    zl_op_tile_finish(out, acc, ws, C, H, W);
    for (int c = 0; c < C; c++)
        for (int i = 0; i < H; i++)
            for (int j = 0; j < W; j++) {
                int cov = (i < 8 && j < 8) || (i >= 1 && j >= 3);
                CHECK_NEAR(out[(c * H + i) * W + j], cov ? 2.5 : 0.0, 1e-5);
            }
    free(t); free(out); free(acc); free(ws); free(racc); free(rws);
}
