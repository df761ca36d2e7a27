/* optim.c — see optim.h. */
#include "train/optim.h"
#include <math.h>
#include <string.h>

void zl_sigma_default_opts(zl_sigma_opts *o) {
    memset(o, 0, sizeof *o);
    o->kind = ZL_SIGMA_SHIFT;
    o->mean = 0.0f;
    o->std = 1.0f;
    o->shift = 3.0f;
    o->sigma_min = 0.001f;
    o->sigma_max = 1.0f;
}

static const char *sigma_names[ZL_SIGMA_COUNT] = {"uniform", "logit-normal", "shift", "weighted"};
const char *zl_sigma_name(zl_sigma_kind k) { return k < ZL_SIGMA_COUNT ? sigma_names[k] : "?"; }
int zl_sigma_parse(const char *name, zl_sigma_kind *k) {
    for (int i = 0; i < ZL_SIGMA_COUNT; i++)
        if (!strcmp(name, sigma_names[i])) { *k = (zl_sigma_kind)i; return 0; }
    if (!strcmp(name, "sigmoid")) { *k = ZL_SIGMA_LOGIT_NORMAL; return 0; }
    return zl_err("unknown sigma sampling '%s' (choices: uniform, logit-normal, shift, weighted)", name);
}

/* the ai-toolkit-like weight curve: points (σ, w), linear in between */
static const float wpts[][2] = {{0.0f, 0.45f}, {0.05f, 0.58f}, {0.2f, 0.72f}, {0.5f, 0.93f}, {0.8f, 1.44f}, {0.876f, 1.52f}, {1.0f, 0.91f}};
#define NWP ((int)(sizeof wpts / sizeof wpts[0]))

static float raw_weight(float s) {
    if (s <= wpts[0][0]) return wpts[0][1];
    for (int i = 1; i < NWP; i++)
        if (s <= wpts[i][0]) {
            float f = (s - wpts[i - 1][0]) / (wpts[i][0] - wpts[i - 1][0]);
            return wpts[i - 1][1] + f * (wpts[i][1] - wpts[i - 1][1]);
        }
    return wpts[NWP - 1][1];
}

float zl_sigma_weight(float sigma) {
    static float mean = 0;
    if (mean == 0) { /* the integral of the piecewise-linear curve over [0, 1] (trapezoids are exact) */
        double a = 0;
        for (int i = 1; i < NWP; i++) a += 0.5 * (wpts[i][1] + wpts[i - 1][1]) * (wpts[i][0] - wpts[i - 1][0]);
        mean = (float)a;
    }
    return raw_weight(sigma) / mean;
}

static float sigmoidf_(float x) { return 1.0f / (1.0f + expf(-x)); }

float zl_sigma_sample(const zl_sigma_opts *o, zl_rng *rng, float *weight) {
    float s;
    *weight = 1.0f;
    switch (o->kind) {
    case ZL_SIGMA_LOGIT_NORMAL: s = sigmoidf_(o->mean + o->std * zl_rng_normal(rng)); break;
    case ZL_SIGMA_SHIFT: {
        float u = sigmoidf_(zl_rng_normal(rng));
        s = o->shift * u / (1.0f + (o->shift - 1.0f) * u);
        break;
    }
    case ZL_SIGMA_WEIGHTED:
        s = zl_rng_uniform(rng);
        *weight = zl_sigma_weight(s);
        break;
    default: s = zl_rng_uniform(rng); break;
    }
    if (s < o->sigma_min) s = o->sigma_min;
    if (s > o->sigma_max) s = o->sigma_max;
    return s;
}

static const char *lr_names[ZL_LR_COUNT] = {"constant", "warmup", "cosine"};
const char *zl_lr_name(zl_lr_kind k) { return k < ZL_LR_COUNT ? lr_names[k] : "?"; }
int zl_lr_parse(const char *name, zl_lr_kind *k) {
    for (int i = 0; i < ZL_LR_COUNT; i++)
        if (!strcmp(name, lr_names[i])) { *k = (zl_lr_kind)i; return 0; }
    return zl_err("unknown LR schedule '%s' (choices: constant, warmup, cosine)", name);
}

float zl_lr_at(const zl_lr_sched *s, int step) {
    if (s->kind == ZL_LR_CONSTANT) return s->lr;
    if (s->warmup > 0 && step < s->warmup) return s->lr * (float)(step + 1) / (float)s->warmup;
    if (s->kind == ZL_LR_WARMUP) return s->lr;
    int span = s->total - s->warmup;
    if (span <= 0) return s->lr;
    double f = (double)(step - s->warmup) / span;
    if (f > 1) f = 1;
    return (float)(s->min_lr + 0.5 * (s->lr - s->min_lr) * (1.0 + cos(3.14159265358979323846 * f)));
}

void zl_adamw_default(zl_adamw *o) {
    o->beta1 = 0.9f;
    o->beta2 = 0.999f;
    o->eps = 1e-8f;
    o->weight_decay = 0.01f;
    o->t = 0;
}

void zl_adamw_update(const zl_adamw *o, float lr, float *p, const float *g, float *m, float *v, size_t n) {
    double bc1 = 1.0 - pow(o->beta1, (double)o->t), bc2 = 1.0 - pow(o->beta2, (double)o->t);
    float a = (float)(lr / bc1), rb2 = (float)(1.0 / sqrt(bc2)), decay = 1.0f - lr * o->weight_decay;
    for (size_t i = 0; i < n; i++) {
        m[i] = o->beta1 * m[i] + (1.0f - o->beta1) * g[i];
        v[i] = o->beta2 * v[i] + (1.0f - o->beta2) * g[i] * g[i];
        p[i] = p[i] * decay - a * m[i] / (sqrtf(v[i]) * rb2 + o->eps);
    }
}

double zl_clip_grad_norm(float *const *g, const size_t *n, int count, double max_norm) {
    double ss = 0;
    for (int k = 0; k < count; k++)
        for (size_t i = 0; i < n[k]; i++) ss += (double)g[k][i] * g[k][i];
    double norm = sqrt(ss);
    if (max_norm > 0 && norm > max_norm) {
        float s = (float)(max_norm / (norm + 1e-6));
        for (int k = 0; k < count; k++)
            for (size_t i = 0; i < n[k]; i++) g[k][i] *= s;
    }
    return norm;
}
