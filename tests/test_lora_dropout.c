/* test_lora_dropout.c — LoRA dropout in the linear op (zl_branch.dropout, zl_op_dropout_mask): the mask's
 * rate, values and determinism; p = 0 exactly the op without dropout; the forward against a plain
 * double-precision reference on x∘M; the backward (d_down, d_up, dx) against central finite differences of
 * that reference with the mask fixed by its key; every kernel family, and inputs wider than the masked-block
 * scratch (column blocks). The trainer's use of it (resume, samples) is in test_train.c. */
#include "test.h"
#include "nn/ops.h"
#include "nn/ops_internal.h"
#include "base/base.h"

#include <stdlib.h>
#include <string.h>

static float *randv(zl_rng *g, size_t n, float s) {
    float *v = malloc(sizeof(float) * n);
    for (size_t i = 0; i < n; i++) v[i] = s * (2 * zl_rng_uniform(g) - 1);
    return v;
}

TEST(lora_dropout_mask_rate_values_and_determinism) {
    int n = 300, c = 257;
    float p = 0.3f, inv = 1.0f / (1.0f - p);
    float *m = malloc(sizeof(float) * (size_t)n * c), *m2 = malloc(sizeof(float) * (size_t)n * c);
    zl_op_dropout_mask(m, 77, p, 0, n, c);
    size_t zeros = 0;
    for (size_t i = 0; i < (size_t)n * c; i++) {
        CHECK(m[i] == 0.0f || m[i] == inv);
        zeros += m[i] == 0.0f;
    }
    double rate = (double)zeros / ((double)n * c); /* 77 100 draws: sd 0.0017 */
    CHECK_MSG(fabs(rate - p) < 0.01, "dropped fraction %g, expected %g", rate, (double)p);
    /* rows counted from the call's first row: a window equals the same rows of the whole */
    zl_op_dropout_mask(m2, 77, p, 10, 5, c);
    CHECK(!memcmp(m2, m + (size_t)10 * c, sizeof(float) * 5 * (size_t)c));
    /* another key, another mask; p = 0 keeps everything at scale 1 */
    zl_op_dropout_mask(m2, 78, p, 0, n, c);
    CHECK(memcmp(m2, m, sizeof(float) * (size_t)n * c) != 0);
    zl_op_dropout_mask(m2, 78, 0.0f, 0, n, c);
    for (size_t i = 0; i < (size_t)n * c; i++) CHECK(m2[i] == 1.0f);
    free(m);
    free(m2);
}

/* A linear with two branches: branch 0 with dropout p (key 1234), branch 1 without. */
typedef struct {
    int n, in, out;
    float *x, *w, *bias, *dn[2], *up[2], *gd[2], *gu[2];
    zl_branch br[2];
    zl_linear L;
} lcase;

static void lcase_make(lcase *c, int n, int in, int out, float p, uint64_t seed) {
    zl_rng g = {seed};
    memset(c, 0, sizeof *c);
    c->n = n; c->in = in; c->out = out;
    c->x = randv(&g, (size_t)n * in, 1.0f);
    c->w = randv(&g, (size_t)out * in, 0.2f);
    c->bias = randv(&g, (size_t)out, 0.1f);
    int ranks[2] = {3, 2}; /* the larger rank first: caught the kept dy·up being overwritten */
    for (int b = 0; b < 2; b++) {
        c->dn[b] = randv(&g, (size_t)ranks[b] * in, 0.3f);
        c->up[b] = randv(&g, (size_t)out * ranks[b], 0.3f);
        c->gd[b] = calloc((size_t)ranks[b] * in, sizeof(float));
        c->gu[b] = calloc((size_t)out * ranks[b], sizeof(float));
        c->br[b] = (zl_branch){c->dn[b], c->up[b], ranks[b], b ? 0.5f : 1.5f, c->gd[b], c->gu[b], b ? 0.0f : p, b ? 0 : 1234};
    }
    c->L = (zl_linear){.dtype = ZL_F32, .w = c->w, .out = out, .in = in, .bias = c->bias, .branch = c->br, .nbranch = 2};
}

static void lcase_free(lcase *c) {
    free(c->x); free(c->w); free(c->bias);
    for (int b = 0; b < 2; b++) { free(c->dn[b]); free(c->up[b]); free(c->gd[b]); free(c->gu[b]); }
}

/* The plain reference in double: y = x·Wᵀ + bias + Σ_b scale_b·((x∘M_b)·down_bᵀ)·up_bᵀ, M_b from
 * zl_op_dropout_mask (all ones without dropout). Optional overrides of x, down[0], up[0] (for differences). */
static void ref_forward(const lcase *c, const float *mask0, const double *x, const double *dn0, const double *up0, double *y) {
    int n = c->n, in = c->in, out = c->out;
    for (int i = 0; i < n; i++)
        for (int o = 0; o < out; o++) {
            double s = c->bias[o];
            for (int j = 0; j < in; j++) s += x[(size_t)i * in + j] * c->w[(size_t)o * in + j];
            y[(size_t)i * out + o] = s;
        }
    for (int b = 0; b < 2; b++) {
        int r = c->br[b].r;
        for (int i = 0; i < n; i++) {
            double t[8] = {0};
            for (int k = 0; k < r; k++)
                for (int j = 0; j < in; j++) {
                    double d = b == 0 ? dn0[(size_t)k * in + j] : c->dn[b][(size_t)k * in + j];
                    double xm = x[(size_t)i * in + j] * (b == 0 ? mask0[(size_t)i * in + j] : 1.0);
                    t[k] += xm * d;
                }
            for (int o = 0; o < out; o++) {
                double s = 0;
                for (int k = 0; k < r; k++) s += t[k] * (b == 0 ? up0[(size_t)o * r + k] : c->up[b][(size_t)o * r + k]);
                y[(size_t)i * out + o] += c->br[b].scale * s;
            }
        }
    }
}

static double *to_d(const float *v, size_t n) {
    double *d = malloc(sizeof(double) * n);
    for (size_t i = 0; i < n; i++) d[i] = v[i];
    return d;
}

/* loss = Σ y∘G; its gradient at element k of v by central differences of the reference. */
static double fd(const lcase *c, const float *mask0, double *x, double *dn0, double *up0, double *v, size_t k, const float *G) {
    size_t ny = (size_t)c->n * c->out;
    double *y = malloc(sizeof(double) * ny), h = 1e-3, keep = v[k], lp = 0, lm = 0;
    v[k] = keep + h;
    ref_forward(c, mask0, x, dn0, up0, y);
    for (size_t i = 0; i < ny; i++) lp += y[i] * G[i];
    v[k] = keep - h;
    ref_forward(c, mask0, x, dn0, up0, y);
    for (size_t i = 0; i < ny; i++) lm += y[i] * G[i];
    v[k] = keep;
    free(y);
    return (lp - lm) / (2 * h);
}

/* Forward against the reference and backward against finite differences, one shape, one kernel family. */
static int check_case(int n, int in, int out, float p, int kern, double *worst_fwd, double *worst_grad) {
    lcase c;
    lcase_make(&c, n, in, out, p, 99 + (uint64_t)in);
    size_t ny = (size_t)n * out, nx = (size_t)n * in;
    float *mask0 = malloc(sizeof(float) * nx);
    zl_op_dropout_mask(mask0, c.br[0].drop_key, p > 0 ? p : 0.0f, 0, n, in);
    double *x = to_d(c.x, nx), *dn0 = to_d(c.dn[0], (size_t)c.br[0].r * in), *up0 = to_d(c.up[0], (size_t)out * c.br[0].r);
    double *yr = malloc(sizeof(double) * ny);
    float *y = malloc(sizeof(float) * ny), *dx = malloc(sizeof(float) * nx);
    zl_ops_set_kernels(kern);
    zl_op_linear(y, c.x, &c.L, n);
    ref_forward(&c, mask0, x, dn0, up0, yr);
    double e = 0, sc = 0;
    for (size_t i = 0; i < ny; i++) { e = fmax(e, fabs(y[i] - yr[i])); sc = fmax(sc, fabs(yr[i])); }
    *worst_fwd = fmax(*worst_fwd, e / sc);
    /* backward of loss = Σ y∘G */
    zl_rng g = {5};
    float *G = randv(&g, ny, 1.0f);
    zl_op_linear_backward(dx, G, c.x, &c.L, n, 0);
    zl_ops_set_kernels(ZL_KERNELS_AUTO);
    /* a sample of elements of each gradient */
    double wg = 0;
    int r0 = c.br[0].r;
    for (int s = 0; s < 12; s++) {
        size_t kd = ((size_t)s * 7919) % ((size_t)r0 * in), ku = ((size_t)s * 104729) % ((size_t)out * r0), kx = ((size_t)s * 15485863) % nx;
        double a = fd(&c, mask0, x, dn0, up0, dn0, kd, G), b = c.gd[0][kd];
        wg = fmax(wg, fabs(a - b) / (1e-3 + fabs(a)));
        a = fd(&c, mask0, x, dn0, up0, up0, ku, G); b = c.gu[0][ku];
        wg = fmax(wg, fabs(a - b) / (1e-3 + fabs(a)));
        a = fd(&c, mask0, x, dn0, up0, x, kx, G); b = dx[kx];
        wg = fmax(wg, fabs(a - b) / (1e-3 + fabs(a)));
    }
    *worst_grad = fmax(*worst_grad, wg);
    free(mask0); free(x); free(dn0); free(up0); free(yr); free(y); free(dx); free(G);
    lcase_free(&c);
    return 0;
}

TEST(lora_dropout_forward_and_gradients_match_references) {
    int kmodes[3] = {ZL_KERNELS_AUTO, ZL_KERNELS_GENERIC, ZL_KERNELS_FALLBACK};
    /* narrow (whole rows per masked block) and wider than the stack scratch of 4096 floats (column blocks) */
    int shapes[2][3] = {{37, 24, 11}, {3, 5000, 4}};
    for (int k = 0; k < 3; k++)
        for (int s = 0; s < 2; s++) {
            double wf = 0, wg = 0;
            check_case(shapes[s][0], shapes[s][1], shapes[s][2], 0.4f, kmodes[k], &wf, &wg);
            CHECK_MSG(wf < 1e-5, "kernels %d, in %d: forward rel. error %g", kmodes[k], shapes[s][1], wf);
            CHECK_MSG(wg < 2e-3, "kernels %d, in %d: gradient vs finite differences %g", kmodes[k], shapes[s][1], wg);
        }
}

TEST(lora_dropout_zero_is_the_op_without_dropout) {
    /* p = 0 with a key set: bit for bit the branch as it was before dropout existed */
    for (int pass = 0; pass < 2; pass++) {
        lcase a, b;
        lcase_make(&a, 29, 40, 13, 0.0f, 3);
        lcase_make(&b, 29, 40, 13, 0.0f, 3);
        b.br[0].drop_key = 0; a.br[0].drop_key = 987654321;
        size_t ny = (size_t)29 * 13, nx = (size_t)29 * 40;
        float *ya = malloc(sizeof(float) * ny), *yb = malloc(sizeof(float) * ny), *da = malloc(sizeof(float) * nx), *db = malloc(sizeof(float) * nx);
        zl_ops_set_kernels(pass ? ZL_KERNELS_FALLBACK : ZL_KERNELS_AUTO);
        zl_op_linear(ya, a.x, &a.L, 29);
        zl_op_linear(yb, b.x, &b.L, 29);
        zl_op_linear_backward(da, ya, a.x, &a.L, 29, 0);
        zl_op_linear_backward(db, yb, b.x, &b.L, 29, 0);
        zl_ops_set_kernels(ZL_KERNELS_AUTO);
        int same = !memcmp(ya, yb, sizeof(float) * ny) && !memcmp(da, db, sizeof(float) * nx) &&
                   !memcmp(a.gd[0], b.gd[0], sizeof(float) * 3 * 40) && !memcmp(a.gu[0], b.gu[0], sizeof(float) * 13 * 3);
        free(ya); free(yb); free(da); free(db);
        lcase_free(&a);
        lcase_free(&b);
        CHECK(same);
    }
    /* and p > 0 changes the output (the test above would pass if dropout did nothing) */
    lcase a, b;
    lcase_make(&a, 8, 40, 5, 0.5f, 4);
    lcase_make(&b, 8, 40, 5, 0.0f, 4);
    float ya[40], yb[40];
    zl_op_linear(ya, a.x, &a.L, 8);
    zl_op_linear(yb, b.x, &b.L, 8);
    CHECK(memcmp(ya, yb, sizeof ya) != 0);
    lcase_free(&a);
    lcase_free(&b);
}
