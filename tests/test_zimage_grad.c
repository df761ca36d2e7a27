/* test_zimage_grad.c — the Z-Image backward: zl_zblock_backward against directional finite differences of
 * the shipped fp32 block forward (zl_zblock_forward), modulated and not, F32 and BF16 base weights. */
#include "test.h"
#include "base/base.h"
#include "io/safetensors.h"
#include "lora/lora.h"
#include "model/zimage.h"

#include <stdlib.h>
#include <string.h>

#define DATA "tests/data/zimage"

static float *randf(zl_rng *g, size_t n, float s) {
    float *v = malloc(sizeof(float) * (n ? n : 1));
    for (size_t i = 0; i < n; i++) v[i] = zl_rng_normal(g) * s;
    return v;
}

/* ------------------------------------------------------------------ one block against finite differences */

/* A random block with a trainable rank-3 branch on every linear and trainable norm weights; F32 or
 * BF16 base weights. Everything it allocates is listed in `mem` for freeing. */
typedef struct {
    zl_zimage_config c;
    zl_zblock b;
    zl_branch br[8];
    void *mem[128];
    int nmem;
    float *params[32], *grads[32]; /* every trainable parameter and its gradient */
    size_t plen[32];
    const char *pname[32];
    int np;
} tblock;

static void *keep(tblock *t, void *p) { t->mem[t->nmem++] = p; return p; }

static void add_param(tblock *t, const char *name, float *p, float *g, size_t n) {
    t->params[t->np] = p; t->grads[t->np] = g; t->plen[t->np] = n; t->pname[t->np] = name; t->np++;
}

static void tblock_make(tblock *t, zl_rng *g, int modulated, zl_dtype dt) {
    memset(t, 0, sizeof *t);
    zl_zimage_config *c = &t->c;
    c->dim = 48; c->n_heads = 3; c->head_dim = 16; c->ffn = 128; c->adaln = 40; c->norm_eps = 1e-5f;
    zl_zblock *b = &t->b;
    b->modulated = modulated;
    struct { zl_linear *l; const char *n; int out, in; } ls[] = {
        {&b->q, "q", 48, 48}, {&b->k, "k", 48, 48}, {&b->v, "v", 48, 48}, {&b->o, "o", 48, 48},
        {&b->w1, "w1", 128, 48}, {&b->w2, "w2", 48, 128}, {&b->w3, "w3", 128, 48}, {&b->ada, "ada", 4 * 48, 40}};
    for (int i = 0; i < (modulated ? 8 : 7); i++) {
        zl_linear *l = ls[i].l;
        int out = ls[i].out, in = ls[i].in, r = 3;
        float *w = keep(t, randf(g, (size_t)out * in, 1.0f / sqrtf((float)in)));
        if (dt == ZL_BF16) {
            uint16_t *wb = keep(t, malloc(sizeof(uint16_t) * (size_t)out * in));
            zl_from_f32(wb, w, ZL_BF16, (size_t)out * in);
            *l = (zl_linear){ZL_BF16, wb, out, in, NULL, NULL, 0, NULL};
        } else {
            *l = (zl_linear){ZL_F32, w, out, in, NULL, NULL, 0, NULL};
        }
        if (i == 7) { /* adaLN bias: gates around +0.6, as the tiny models */
            float *bias = keep(t, randf(g, out, 0.2f));
            for (int j = 48; j < 96; j++) bias[j] += 0.6f;
            for (int j = 144; j < 192; j++) bias[j] += 0.6f;
            l->bias = bias;
        }
        float *dn = keep(t, randf(g, (size_t)r * in, 0.3f / sqrtf((float)in) * 3)), *up = keep(t, randf(g, (size_t)out * r, 0.3f));
        float *gd = keep(t, calloc((size_t)r * in, sizeof(float))), *gu = keep(t, calloc((size_t)out * r, sizeof(float)));
        t->br[i] = (zl_branch){dn, up, r, 0.75f, gd, gu};
        l->branch = &t->br[i];
        l->nbranch = 1;
        add_param(t, ls[i].n, dn, gd, (size_t)r * in);
        add_param(t, ls[i].n, up, gu, (size_t)out * r);
    }
    struct { float **v, **gv; const char *n; int len; } vs[] = {
        {&b->norm_q, &b->grad.norm_q, "norm_q", 16}, {&b->norm_k, &b->grad.norm_k, "norm_k", 16},
        {&b->attn_norm1, &b->grad.attn_norm1, "attn_norm1", 48}, {&b->attn_norm2, &b->grad.attn_norm2, "attn_norm2", 48},
        {&b->ffn_norm1, &b->grad.ffn_norm1, "ffn_norm1", 48}, {&b->ffn_norm2, &b->grad.ffn_norm2, "ffn_norm2", 48}};
    for (int i = 0; i < 6; i++) {
        float *v = keep(t, randf(g, vs[i].len, 0.1f));
        for (int j = 0; j < vs[i].len; j++) v[j] += 1.0f;
        *vs[i].v = v;
        *vs[i].gv = keep(t, calloc((size_t)vs[i].len, sizeof(float)));
        add_param(t, vs[i].n, v, *vs[i].gv, (size_t)vs[i].len);
    }
}

static void tblock_free(tblock *t) {
    for (int i = 0; i < t->nmem; i++) free(t->mem[i]);
}

/* Σ w∘block(x) through the fp32 forward, summed in double. */
static double block_loss(tblock *t, const float *x, int n, const float *cs, const float *cond, const float *w) {
    size_t N = (size_t)n * t->c.dim;
    float *y = malloc(sizeof(float) * N);
    memcpy(y, x, sizeof(float) * N);
    zl_zblock_forward(&t->c, &t->b, y, n, cs, cond, NULL);
    double l = 0;
    for (size_t i = 0; i < N; i++) l += (double)w[i] * y[i];
    free(y);
    return l;
}

/* Directional derivative of the loss along v (one input or parameter group), Richardson-extrapolated
 * central differences (error O(ε⁴)) through the fp32 forward. */
static double block_dirderiv(tblock *t, float *arr, const float *v, size_t len, float eps, const float *x, int n,
                             const float *cs, const float *cond, const float *w) {
    float *keep0 = malloc(sizeof(float) * len);
    memcpy(keep0, arr, sizeof(float) * len);
    double D[2];
    for (int k = 0; k < 2; k++) {
        float e = k ? eps / 2 : eps;
        for (size_t i = 0; i < len; i++) arr[i] = keep0[i] + e * v[i];
        double lp = block_loss(t, x, n, cs, cond, w);
        for (size_t i = 0; i < len; i++) arr[i] = keep0[i] - e * v[i];
        double lm = block_loss(t, x, n, cs, cond, w);
        D[k] = (lp - lm) / (2.0 * e);
    }
    memcpy(arr, keep0, sizeof(float) * len);
    free(keep0);
    return (4 * D[1] - D[0]) / 3;
}

static void block_fd_case(int *zl_failed_, int modulated, zl_dtype dt, uint64_t seed) {
    zl_rng g = {seed};
    tblock t;
    tblock_make(&t, &g, modulated, dt);
    int n = 37, d = t.c.dim, np = t.c.head_dim / 2;
    size_t N = (size_t)n * d;
    float *x = randf(&g, N, 1), *w = randf(&g, N, 1), *cond = randf(&g, t.c.adaln, 1);
    float *cs = malloc(sizeof(float) * n * np * 2);
    for (int i = 0; i < n * np; i++) {
        double a = zl_rng_uniform(&g) * 40 - 20;
        cs[2 * i] = (float)cos(a);
        cs[2 * i + 1] = (float)sin(a);
    }
    float *dx = malloc(sizeof(float) * N), *dcond = calloc((size_t)t.c.adaln, sizeof(float));
    memcpy(dx, w, sizeof(float) * N);
    zl_zblock_bws *ws = zl_zblock_bws_new(&t.c, n + 5); /* a workspace larger than needed */
    CHECK(ws != NULL);
    CHECK(zl_zblock_backward(&t.c, &t.b, x, dx, n, cs, cond, dcond, ws) == 0);
    /* each group: the analytic Σ g∘v against the directional derivative */
    typedef struct { const char *name; float *arr; const float *grad; size_t len; } group;
    group grp[40];
    int ng = 0;
    grp[ng++] = (group){"x", x, dx, N};
    if (modulated) grp[ng++] = (group){"cond", cond, dcond, (size_t)t.c.adaln};
    for (int i = 0; i < t.np; i++) grp[ng++] = (group){t.pname[i], t.params[i], t.grads[i], t.plen[i]};
    double worst = 0;
    char what[160] = "";
    for (int k = 0; k < ng; k++) {
        float *v = randf(&g, grp[k].len, 1);
        double rms = 0, an = 0, gn = 0, vn = 0;
        for (size_t i = 0; i < grp[k].len; i++) rms += (double)grp[k].arr[i] * grp[k].arr[i];
        rms = sqrt(rms / grp[k].len);
        for (size_t i = 0; i < grp[k].len; i++) {
            v[i] *= (float)rms;
            an += (double)grp[k].grad[i] * v[i];
            gn += (double)grp[k].grad[i] * grp[k].grad[i];
            vn += (double)v[i] * v[i];
        }
        double fd = block_dirderiv(&t, grp[k].arr, v, grp[k].len, 2e-2f, x, n, cs, cond, w);
        double e = fabs(fd - an) / (fabs(an) + 1e-2 * sqrt(gn * vn));
        if (getenv("ZL_TEST_VERBOSE"))
            fprintf(stderr, "\n    %s %s %-10s analytic %12.5g  fd %12.5g  rel %.2e", modulated ? "mod" : "ctx",
                    dt == ZL_F32 ? "f32" : "bf16", grp[k].name, an, fd, e);
        if (!(e <= worst)) { worst = e; snprintf(what, sizeof what, "%s: analytic %g fd %g", grp[k].name, an, fd); }
        free(v);
    }
    CHECK_MSG(worst < 2e-3, "%s %s block: worst %.3g (%s)", modulated ? "modulated" : "unmodulated",
              dt == ZL_F32 ? "f32" : "bf16", worst, what);
    /* the workspace is optional and changes nothing */
    for (int i = 0; i < t.np; i++) memset(t.grads[i], 0, sizeof(float) * t.plen[i]);
    float *dx2 = malloc(sizeof(float) * N), *dc2 = calloc((size_t)t.c.adaln, sizeof(float));
    memcpy(dx2, w, sizeof(float) * N);
    CHECK(zl_zblock_backward(&t.c, &t.b, x, dx2, n, cs, cond, dc2, NULL) == 0);
    CHECK(memcmp(dx2, dx, sizeof(float) * N) == 0);
    CHECK(memcmp(dc2, dcond, sizeof(float) * t.c.adaln) == 0);
    zl_zblock_bws_free(ws);
    free(dx2); free(dc2); free(x); free(w); free(cond); free(cs); free(dx); free(dcond);
    tblock_free(&t);
}

TEST(zgrad_block_fd) {
    block_fd_case(zl_failed_, 1, ZL_F32, 11);
    if (*zl_failed_) return;
    block_fd_case(zl_failed_, 0, ZL_F32, 12);
    if (*zl_failed_) return;
    block_fd_case(zl_failed_, 1, ZL_BF16, 13);
}
