/* test_full_grad.c — full-parameter training: the weight and bias gradients of a linear against finite
 * differences, the model's parameter gradients (every kind: top-level linears, block linears, biases, norm
 * weights) against finite differences of the loss, and saving a model that reloads to the same forward. */
#include "test.h"
#include "base/base.h"
#include "io/safetensors.h"
#include "model/zimage.h"
#include "nn/ops.h"

#include <stdlib.h>
#include <string.h>

TEST(full_grad_linear_dw_db) {
    int n = 5, in = 7, out = 6;
    float w[42], b[6], x[35], dy[30], dw[42] = {0}, db[6] = {0};
    zl_rng r = {3};
    for (int i = 0; i < 42; i++) w[i] = zl_rng_normal(&r);
    for (int i = 0; i < 6; i++) b[i] = zl_rng_normal(&r);
    for (int i = 0; i < 35; i++) x[i] = zl_rng_normal(&r);
    for (int i = 0; i < 30; i++) dy[i] = zl_rng_normal(&r);
    zl_linear L = {.dtype = ZL_F32, .w = w, .out = out, .in = in, .bias = b, .dw = dw, .db = db};
    zl_op_linear_backward(NULL, dy, x, &L, n, 0);
    /* loss = Σ dy ⊙ y: dL/dW[o][i] = Σ_r dy[r][o] x[r][i], dL/db[o] = Σ_r dy[r][o]; by central differences */
    for (int k = 0; k < 42 + 6; k++) {
        float *p = k < 42 ? &w[k] : &b[k - 42], keep = *p;
        double lp, lm, h = 1e-2;
        float y[30];
        *p = keep + (float)h;
        zl_op_linear(y, x, &L, n);
        lp = 0;
        for (int i = 0; i < 30; i++) lp += (double)dy[i] * y[i];
        *p = keep - (float)h;
        zl_op_linear(y, x, &L, n);
        lm = 0;
        for (int i = 0; i < 30; i++) lm += (double)dy[i] * y[i];
        *p = keep;
        double fd = (lp - lm) / (2 * h), an = k < 42 ? dw[k] : db[k - 42];
        CHECK_MSG(fabs(fd - an) <= 1e-3 * (1 + fabs(fd)), "param %d: finite differences %g, backward %g", k, fd, an);
    }
    /* accumulation: a second call doubles them */
    float dw1 = dw[10], db1 = db[2];
    zl_op_linear_backward(NULL, dy, x, &L, n, 0);
    CHECK_NEAR(dw[10], 2 * dw1, 1e-5 * fabs(dw1) + 1e-6);
    CHECK_NEAR(db[2], 2 * db1, 1e-5 * fabs(db1) + 1e-6);
}

typedef struct { float *x, *t, *cap; int H, W, L; } fcase;

static int load_in(fcase *c) {
    zl_st *st;
    if (zl_st_open("tests/data/zimage/tiny_a/in_case0.safetensors", &st)) return -1;
    const zl_tensor_info *x = zl_st_find(st, "x"), *t = zl_st_find(st, "t"), *cap = zl_st_find(st, "cap");
    c->x = zl_st_read_f32(st, x); c->t = zl_st_read_f32(st, t); c->cap = zl_st_read_f32(st, cap);
    c->H = (int)x->shape[1]; c->W = (int)x->shape[2]; c->L = (int)cap->shape[0];
    zl_st_close(st);
    return 0;
}

static double loss_of(zl_zimage *m, const fcase *c, const float *target) {
    size_t n = (size_t)16 * c->H * c->W;
    float *out = malloc(sizeof(float) * n);
    zl_zimage_forward(m, c->x, c->H, c->W, c->t[0], c->cap, c->L, out);
    double s = 0;
    for (size_t i = 0; i < n; i++) s += ((double)out[i] - target[i]) * ((double)out[i] - target[i]);
    free(out);
    return s / (double)n;
}

TEST(full_grad_model_against_finite_differences) {
    zl_zimage_opts o = {.weight_dtype = ZL_F32};
    zl_zimage *m;
    CHECK(zl_zimage_load("tests/data/zimage/tiny_a/diffusers_single.safetensors", &o, &m) == 0);
    zl_param *p;
    int np = zl_zimage_full_params(m, &p);
    CHECK(np > 50);
    fcase c;
    CHECK(load_in(&c) == 0);
    size_t n = (size_t)16 * c.H * c.W;
    float *target = malloc(sizeof(float) * n);
    zl_rng r = {11};
    for (size_t i = 0; i < n; i++) target[i] = zl_rng_normal(&r);
    float loss = 0;
    CHECK(zl_zimage_forward_backward(m, c.x, c.H, c.W, c.t[0], c.cap, c.L, target, 1.0f, &loss, NULL) == 0);
    CHECK_NEAR(loss, loss_of(m, &c, target), 1e-5 * loss);
    /* one entry of several kinds of parameter, the largest-gradient entry of each */
    const char *probe[] = {"t_embedder.mlp.0.weight", "all_x_embedder.2-1.bias", "cap_embedder.1.weight", "noise_refiner.0.attention.to_k.weight",
                           "context_refiner.0.feed_forward.w2.weight", "layers.1.attention.to_out.0.weight", "layers.0.adaLN_modulation.0.bias",
                           "layers.1.ffn_norm2.weight", "layers.0.attention.norm_q.weight", "all_final_layer.2-1.linear.weight"};
    int found = 0;
    for (size_t q = 0; q < sizeof probe / sizeof *probe; q++) {
        zl_param *pp = NULL;
        for (int i = 0; i < np; i++) if (!strcmp(p[i].name, probe[q])) pp = &p[i];
        CHECK_MSG(pp, "no parameter %s", probe[q]);
        size_t k = 0;
        for (size_t i = 1; i < pp->n; i++) if (fabsf(pp->g[i]) > fabsf(pp->g[k])) k = i;
        float keep = pp->p[k];
        double h = 1e-2 * fmax(1.0, fabs(keep));
        pp->p[k] = keep + (float)h;
        double lp = loss_of(m, &c, target);
        pp->p[k] = keep - (float)h;
        double lm = loss_of(m, &c, target);
        pp->p[k] = keep;
        double fd = (lp - lm) / (2 * h), an = pp->g[k];
        CHECK_MSG(an != 0 && fabs(fd - an) <= 2e-2 * fabs(an) + 1e-6, "%s[%zu]: finite differences %g, backward %g", probe[q], k, fd, an);
        found++;
    }
    CHECK(found == 10);
    /* saving: the file reloads to the same forward, bit for bit at F32 */
    char path[600];
    snprintf(path, sizeof path, "%s/full_saved.safetensors", zl_test_dir());
    p[0].p[0] += 0.5f; /* a trained value */
    CHECK(zl_zimage_save(m, path, ZL_F32) == 0);
    zl_zimage *m2;
    CHECK(zl_zimage_load(path, &o, &m2) == 0);
    float *o1 = malloc(sizeof(float) * n), *o2 = malloc(sizeof(float) * n);
    CHECK(zl_zimage_forward(m, c.x, c.H, c.W, c.t[0], c.cap, c.L, o1) == 0 && zl_zimage_forward(m2, c.x, c.H, c.W, c.t[0], c.cap, c.L, o2) == 0);
    CHECK(memcmp(o1, o2, sizeof(float) * n) == 0);
    free(o1); free(o2);
    zl_zimage_free(m2);
    free(p);
    free(target);
    free(c.x); free(c.t); free(c.cap);
    zl_zimage_free(m);
}
