/* test_optim.c — AdamW + clipping against torch.optim.AdamW (tests/ref/optim_ref.py → tests/data/train/
 * adamw.json), LR schedules, and the σ samplers' distributions (the spec's Monte-Carlo figures). */
#include "test.h"
#include "base/base.h"
#include "train/optim.h"

#include <cjson/cJSON.h>
#include <stdlib.h>
#include <string.h>

static cJSON *load_json(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    char *b = malloc(1 << 20);
    size_t n = fread(b, 1, (1 << 20) - 1, f);
    fclose(f);
    b[n] = 0;
    cJSON *j = cJSON_Parse(b);
    free(b);
    return j;
}

static void fill(float *dst, const cJSON *arr) {
    int i = 0;
    const cJSON *v;
    cJSON_ArrayForEach(v, arr) dst[i++] = (float)v->valuedouble;
}

TEST(optim_adamw_matches_torch) {
    cJSON *j = load_json("tests/data/train/adamw.json");
    CHECK(j);
    int np = cJSON_GetArraySize(cJSON_GetObjectItem(j, "params"));
    CHECK(np == 3);
    float *p[3], *g[3], *m[3], *v[3];
    size_t n[3];
    for (int k = 0; k < np; k++) {
        const cJSON *pa = cJSON_GetArrayItem(cJSON_GetObjectItem(j, "params"), k);
        n[k] = (size_t)cJSON_GetArraySize(pa);
        p[k] = malloc(sizeof(float) * n[k]); g[k] = malloc(sizeof(float) * n[k]);
        m[k] = calloc(n[k], sizeof(float)); v[k] = calloc(n[k], sizeof(float));
        fill(p[k], pa);
    }
    zl_adamw o;
    zl_adamw_default(&o);
    o.beta1 = 0.9f; o.beta2 = 0.99f; o.eps = 1e-8f; o.weight_decay = 0.05f;
    const cJSON *grads = cJSON_GetObjectItem(j, "grads"), *lrs = cJSON_GetObjectItem(j, "lrs"), *norms = cJSON_GetObjectItem(j, "norms");
    int steps = cJSON_GetArraySize(grads);
    for (int s = 0; s < steps; s++) {
        for (int k = 0; k < np; k++) fill(g[k], cJSON_GetArrayItem(cJSON_GetArrayItem(grads, s), k));
        double norm = zl_clip_grad_norm(g, n, np, 1.0);
        CHECK_NEAR(norm, cJSON_GetArrayItem(norms, s)->valuedouble, 1e-5 * norm);
        zl_adamw_begin(&o);
        for (int k = 0; k < np; k++) zl_adamw_update(&o, (float)cJSON_GetArrayItem(lrs, s)->valuedouble, p[k], g[k], m[k], v[k], n[k]);
    }
    double maxd = 0;
    for (int k = 0; k < np; k++) {
        float *want = malloc(sizeof(float) * n[k]);
        fill(want, cJSON_GetArrayItem(cJSON_GetObjectItem(j, "final"), k));
        for (size_t i = 0; i < n[k]; i++) maxd = fmax(maxd, fabs(want[i] - p[k][i]));
        free(want);
        free(p[k]); free(g[k]); free(m[k]); free(v[k]);
    }
    cJSON_Delete(j);
    CHECK_MSG(maxd < 2e-6, "max |zlora - torch| after %d AdamW steps = %g", steps, maxd);
}

TEST(optim_lr_schedules) {
    zl_lr_sched s = {ZL_LR_CONSTANT, 1e-4f, 10, 100, 0};
    CHECK(zl_lr_at(&s, 0) == 1e-4f && zl_lr_at(&s, 99) == 1e-4f);
    s.kind = ZL_LR_WARMUP;
    CHECK_NEAR(zl_lr_at(&s, 0), 1e-5, 1e-10);
    CHECK_NEAR(zl_lr_at(&s, 9), 1e-4, 1e-10);
    CHECK_NEAR(zl_lr_at(&s, 50), 1e-4, 1e-10);
    s.kind = ZL_LR_COSINE;
    s.min_lr = 1e-6f;
    CHECK_NEAR(zl_lr_at(&s, 10), 1e-4, 1e-10);
    CHECK_NEAR(zl_lr_at(&s, 55), (1e-4 + 1e-6) / 2, 1e-9);
    CHECK_NEAR(zl_lr_at(&s, 100), 1e-6, 1e-10);
    zl_lr_kind k;
    CHECK(zl_lr_parse("cosine", &k) == 0 && k == ZL_LR_COSINE);
    CHECK(zl_lr_parse("linear-ish", &k) != 0);
}

TEST(optim_sigma_samplers) {
    zl_sigma_opts o;
    zl_sigma_default_opts(&o);
    zl_rng r = {42};
    const int N = 200000;
    /* shift 3 over sigmoid(N(0,1)): spec's Monte-Carlo figures mean 0.72, P(σ > 0.8) = 0.39 */
    double mean = 0, above = 0, w;
    float wt;
    for (int i = 0; i < N; i++) { float s = zl_sigma_sample(&o, &r, &wt); mean += s; above += s > 0.8f; CHECK(wt == 1.0f && s >= 0.001f && s <= 1); }
    CHECK_NEAR(mean / N, 0.72, 0.01);
    CHECK_NEAR(above / N, 0.39, 0.01);
    /* logit-normal(0, 1): mean 0.5, P(σ > 0.8) = 0.08 (ai-toolkit's "sigmoid") */
    o.kind = ZL_SIGMA_LOGIT_NORMAL;
    mean = above = 0;
    for (int i = 0; i < N; i++) { float s = zl_sigma_sample(&o, &r, &wt); mean += s; above += s > 0.8f; }
    CHECK_NEAR(mean / N, 0.5, 0.01);
    CHECK_NEAR(above / N, 0.08, 0.01);
    /* weighted: uniform σ, weights with mean 1 that favour high noise */
    o.kind = ZL_SIGMA_WEIGHTED;
    mean = w = 0;
    for (int i = 0; i < N; i++) { float s = zl_sigma_sample(&o, &r, &wt); mean += s; w += wt; }
    CHECK_NEAR(mean / N, 0.5, 0.01);
    CHECK_NEAR(w / N, 1.0, 0.01);
    CHECK(zl_sigma_weight(0.876f) > 1.4f && zl_sigma_weight(0.05f) < 0.7f);
    o.kind = ZL_SIGMA_UNIFORM;
    mean = 0;
    for (int i = 0; i < N; i++) mean += zl_sigma_sample(&o, &r, &wt);
    CHECK_NEAR(mean / N, 0.5, 0.01);
    zl_sigma_kind k;
    CHECK(zl_sigma_parse("sigmoid", &k) == 0 && k == ZL_SIGMA_LOGIT_NORMAL);
    CHECK(zl_sigma_parse("flux_shift", &k) != 0);
}
