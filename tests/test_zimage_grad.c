/* test_zimage_grad.c — the Z-Image backward: zl_zblock_backward against directional finite differences of
 * the shipped fp32 block forward (zl_zblock_forward), and zl_zimage_forward_backward against the PyTorch
 * autograd reference (tests/ref/zimage_grad_ref.py; goldens in tests/data/zimage/<cfg>/grad/, see the README
 * there), plus the API contract: accumulation, gscale, the output equal to zl_zimage_forward, and the blocks
 * skipped when nothing trainable lies below them giving the same gradients bit for bit.
 * The tests fail when the backward is wrong: storing d(scale_mlp) in the wrong slot, skipping the inverse
 * RoPE of dk, the SiLU of the final layer's conditioning, or one row of the caption embedder's gradient
 * each gave rel L2 errors of 0.26-1.8 (verified by breaking src/model/zimage_grad.c on purpose). */
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
            *l = (zl_linear){ZL_BF16, wb, out, in, NULL, NULL, 0, NULL, NULL, NULL};
        } else {
            *l = (zl_linear){ZL_F32, w, out, in, NULL, NULL, 0, NULL, NULL, NULL};
        }
        if (i == 7) { /* adaLN bias: gates around +0.6, as the tiny models */
            float *bias = keep(t, randf(g, out, 0.2f));
            for (int j = 48; j < 96; j++) bias[j] += 0.6f;
            for (int j = 144; j < 192; j++) bias[j] += 0.6f;
            l->bias = bias;
        }
        float *dn = keep(t, randf(g, (size_t)r * in, 0.3f / sqrtf((float)in) * 3)), *up = keep(t, randf(g, (size_t)out * r, 0.3f));
        float *gd = keep(t, calloc((size_t)r * in, sizeof(float))), *gu = keep(t, calloc((size_t)out * r, sizeof(float)));
        t->br[i] = (zl_branch){dn, up, r, 0.75f, gd, gu, 0.0f, 0};
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

/* ------------------------------------------------------------------ the whole model against PyTorch autograd */

#define GTOL 1e-4 /* relative L2, loss, output and every gradient */

static int weights_present(void) {
    return zl_file_exists(DATA "/tiny_a/diffusers_single.safetensors") &&
           zl_file_exists(DATA "/tiny_a/comfy_prefixed_bf16.safetensors") &&
           zl_file_exists(DATA "/tiny_b/diffusers_single.safetensors");
}

/* The norm weight gradient slot of model m named "<block>.<norm>" (e.g. "layers.1.attention.norm_k"). */
static float **norm_grad_slot(zl_zimage *m, const char *name, int *len) {
    struct { const char *p; zl_zblock *b; int n; } blks[] = {
        {"layers.", m->layers, m->cfg.n_layers}, {"noise_refiner.", m->noise_ref, m->cfg.n_refiner},
        {"context_refiner.", m->ctx_ref, m->cfg.n_refiner}};
    for (int k = 0; k < 3; k++) {
        size_t pl = strlen(blks[k].p);
        if (strncmp(name, blks[k].p, pl)) continue;
        char *end;
        long i = strtol(name + pl, &end, 10);
        if (*end != '.' || i < 0 || i >= blks[k].n) return NULL;
        zl_zblock_grads *g = &blks[k].b[i].grad;
        struct { const char *n; float **s; int len; } ns[] = {
            {"attention.norm_q", &g->norm_q, m->cfg.head_dim}, {"attention.norm_k", &g->norm_k, m->cfg.head_dim},
            {"attention_norm1", &g->attn_norm1, m->cfg.dim}, {"attention_norm2", &g->attn_norm2, m->cfg.dim},
            {"ffn_norm1", &g->ffn_norm1, m->cfg.dim}, {"ffn_norm2", &g->ffn_norm2, m->cfg.dim}};
        for (int j = 0; j < 6; j++)
            if (!strcmp(end + 1, ns[j].n)) { *len = ns[j].len; return ns[j].s; }
    }
    return NULL;
}

/* A model with the golden's trainable LoRA at runtime, zeroed gradient buffers attached, and the norm
 * gradients the golden holds. */
typedef struct {
    zl_zimage *m;
    zl_lora *l, *g;
    zl_st *gold;
    float *norm_bufs[64];
    char *norm_names[64];
    int nnorm, attached;
    float *x, *t, *cap, *target;
    int H, W, L;
} gsetup;

static void gsetup_free(gsetup *s) {
    zl_zimage_free(s->m);
    zl_lora_free(s->l);
    zl_lora_free(s->g);
    zl_st_close(s->gold);
    for (int i = 0; i < s->nnorm; i++) { free(s->norm_bufs[i]); free(s->norm_names[i]); }
    free(s->x); free(s->t); free(s->cap); free(s->target);
}

static void zero_grads(gsetup *s) {
    for (int i = 0; i < s->g->n; i++)
        for (int p = ZL_P_DOWN; p <= ZL_P_UP; p++) {
            zl_mat *mt = &s->g->m[i].p[p];
            if (mt->data) memset(mt->data, 0, sizeof(float) * (size_t)mt->shape[0] * (size_t)(mt->ndim > 1 ? mt->shape[1] : 1));
        }
    for (int i = 0; i < s->nnorm; i++) {
        int len;
        norm_grad_slot(s->m, s->norm_names[i], &len);
        memset(s->norm_bufs[i], 0, sizeof(float) * (size_t)len);
    }
}

static int gsetup_make(gsetup *s, const char *cfg, const char *model, zl_dtype wd, const char *gold) {
    memset(s, 0, sizeof *s);
    char p[256];
    zl_zimage_opts o = {.weight_dtype = wd};
    snprintf(p, sizeof p, DATA "/%s/%s", cfg, model);
    if (zl_zimage_load(p, &o, &s->m)) return -1;
    snprintf(p, sizeof p, DATA "/%s/grad/%s.safetensors", cfg, gold);
    if (zl_st_open(p, &s->gold)) return -1;
    const char *sv = zl_st_meta_get(s->gold, "strength");
    float strength = sv ? (float)atof(sv) : 0.0f;
    snprintf(p, sizeof p, DATA "/%s/grad/lora_train.safetensors", cfg);
    if (!sv || zl_lora_load(p, &s->l) || zl_lora_load(p, &s->g)) return -1;
    if (zl_zimage_apply_loras(s->m, &s->l, &strength, 1, 0, 0, NULL)) return -1;
    s->attached = zl_zimage_lora_grads(s->m, s->l, s->g);
    /* norm gradients named in the golden file */
    for (int i = 0; i < zl_st_count(s->gold) && s->nnorm < 64; i++) {
        const char *n = zl_st_tensor(s->gold, i)->name;
        size_t ln = strlen(n);
        if (strncmp(n, "grad.", 5) || ln < 12 || strcmp(n + ln - 7, ".weight")) continue;
        char nm[160];
        snprintf(nm, sizeof nm, "%.*s", (int)(ln - 12), n + 5);
        int len;
        float **slot = norm_grad_slot(s->m, nm, &len);
        if (!slot) return zl_err("%s: no norm weight %s", gold, nm);
        s->norm_bufs[s->nnorm] = *slot = calloc((size_t)len, sizeof(float));
        s->norm_names[s->nnorm++] = zl_xstrdup(nm);
    }
    zero_grads(s);
    const zl_tensor_info *x = zl_st_find(s->gold, "x"), *t = zl_st_find(s->gold, "t"), *cap = zl_st_find(s->gold, "cap"),
                         *tg = zl_st_find(s->gold, "target");
    if (!x) { /* the bf16 golden shares golden.safetensors' inputs */
        zl_st *in;
        snprintf(p, sizeof p, DATA "/%s/grad/golden.safetensors", cfg);
        if (zl_st_open(p, &in)) return -1;
        x = zl_st_find(in, "x"); t = zl_st_find(in, "t"); cap = zl_st_find(in, "cap"); tg = zl_st_find(in, "target");
        s->x = zl_st_read_f32(in, x); s->t = zl_st_read_f32(in, t); s->cap = zl_st_read_f32(in, cap);
        s->target = zl_st_read_f32(in, tg);
        s->H = (int)x->shape[1]; s->W = (int)x->shape[2]; s->L = (int)cap->shape[0];
        zl_st_close(in);
        return 0;
    }
    s->x = zl_st_read_f32(s->gold, x); s->t = zl_st_read_f32(s->gold, t); s->cap = zl_st_read_f32(s->gold, cap);
    s->target = zl_st_read_f32(s->gold, tg);
    s->H = (int)x->shape[1]; s->W = (int)x->shape[2]; s->L = (int)cap->shape[0];
    return 0;
}

/* rel L2 of y [n] against golden tensor `name` of s (1e9 when missing or of another size). */
static double gold_rel(gsetup *s, const float *y, const char *name, size_t n) {
    return zl_test_golden_rel_l2(y, zl_st_path(s->gold), name, n);
}

/* Compares loss, out and every gradient in the golden file; returns the worst rel error, names it. */
static double compare_golden(gsetup *s, float loss, const float *out, char *what, int *ncompared) {
    size_t nout = (size_t)16 * s->H * s->W;
    double worst = 0;
    int nc = 0;
#define TAKE(e, ...) do { double e_ = (e); nc++; if (!(e_ <= worst)) { worst = e_; snprintf(what, 200, __VA_ARGS__); } } while (0)
    TAKE(gold_rel(s, &loss, "loss", 1), "loss %.7g", (double)loss);
    TAKE(gold_rel(s, out, "out", nout), "out");
    int gl = 0;
    for (int i = 0; i < zl_st_count(s->gold); i++)
        if (!strncmp(zl_st_tensor(s->gold, i)->name, "grad.", 5)) gl++;
    int matched = 0;
    for (int i = 0; i < s->g->n; i++) {
        const zl_lora_module *mo = &s->g->m[i];
        char nm[200];
        const char *part[2] = {"lora_A", "lora_B"};
        for (int p = 0; p < 2; p++) {
            snprintf(nm, sizeof nm, "grad.%s.%s", mo->target, part[p]);
            if (!zl_st_find(s->gold, nm)) continue; /* the bf16 golden holds a subset */
            const zl_mat *mt = &mo->p[ZL_P_DOWN + p];
            matched++;
            TAKE(gold_rel(s, mt->data, nm, (size_t)mt->shape[0] * (size_t)mt->shape[1]), "%s", nm);
        }
    }
    for (int i = 0; i < s->nnorm; i++) {
        char nm[200];
        int len;
        norm_grad_slot(s->m, s->norm_names[i], &len);
        snprintf(nm, sizeof nm, "grad.%s.weight", s->norm_names[i]);
        matched++;
        TAKE(gold_rel(s, s->norm_bufs[i], nm, (size_t)len), "%s", nm);
    }
#undef TAKE
    if (matched != gl) { snprintf(what, 200, "%d of the golden's %d gradients matched", matched, gl); worst = 1e9; }
    *ncompared = nc;
    return worst;
}

static void golden_case(int *zl_failed_, const char *cfg, const char *model, zl_dtype wd, const char *gold, int expect_branches) {
    gsetup s;
    int rc = gsetup_make(&s, cfg, model, wd, gold);
    CHECK_MSG(rc == 0, "%s/%s: %s", cfg, gold, zl_last_error());
    CHECK_MSG(s.attached == expect_branches, "%d trainable branches, expected %d", s.attached, expect_branches);
    size_t nout = (size_t)16 * s.H * s.W;
    float *out = malloc(sizeof(float) * nout), loss = 0;
    CHECK(zl_zimage_forward_backward(s.m, s.x, s.H, s.W, s.t[0], s.cap, s.L, s.target, 1.0f, &loss, out) == 0);
    char what[200] = "";
    int nc = 0;
    double e = compare_golden(&s, loss, out, what, &nc);
    if (getenv("ZL_TEST_VERBOSE"))
        fprintf(stderr, "\n    %s %s (%s weights): %d tensors compared, worst rel L2 %.2e (%s)", cfg, gold,
                wd == ZL_F32 ? "f32" : "bf16", nc, e, what);
    free(out);
    gsetup_free(&s);
    CHECK_MSG(e <= GTOL, "%s %s: worst rel L2 %.3g at %s", cfg, gold, e, what);
}

TEST(zgrad_model_golden_tiny_a) {
    CHECK_MSG(weights_present(), "tiny model weights missing: run `make zimage-weights`");
    golden_case(zl_failed_, "tiny_a", "diffusers_single.safetensors", ZL_F32, "golden", 22);
}

TEST(zgrad_model_golden_tiny_b) {
    CHECK_MSG(weights_present(), "run `make zimage-weights`");
    golden_case(zl_failed_, "tiny_b", "diffusers/transformer", ZL_F32, "golden", 5);
}

/* BF16 base weights kept as BF16 (dx = dy·W through the bf16 tiles), against the reference run on the same
 * bf16-rounded weights. */
TEST(zgrad_model_golden_bf16_weights) {
    CHECK_MSG(weights_present(), "run `make zimage-weights`");
    golden_case(zl_failed_, "tiny_a", "comfy_prefixed_bf16.safetensors", ZL_BF16, "golden_bf16", 22);
}

/* ------------------------------------------------------------------ the API contract */

/* Freezes every branch and norm weight of the model whose module name does not start with `keep`. */
static void freeze_except(gsetup *s, const char *keep) {
    zl_zimage *m = s->m;
    struct { const char *n; zl_linear *l; } top[] = {
        {"all_x_embedder.2-1", &m->x_emb}, {"t_embedder.mlp.0", &m->t_mlp0}, {"t_embedder.mlp.2", &m->t_mlp2},
        {"cap_embedder.1", &m->cap_emb}, {"all_final_layer.2-1.adaLN_modulation.1", &m->final_ada},
        {"all_final_layer.2-1.linear", &m->final_lin}};
    zl_linear *lins[256];
    char names[256][96];
    int nl = 0;
    for (int i = 0; i < 6; i++) { lins[nl] = top[i].l; snprintf(names[nl++], 96, "%s", top[i].n); }
    struct { const char *p; zl_zblock *b; int n; } blks[] = {
        {"layers", m->layers, m->cfg.n_layers}, {"noise_refiner", m->noise_ref, m->cfg.n_refiner},
        {"context_refiner", m->ctx_ref, m->cfg.n_refiner}};
    for (int k = 0; k < 3; k++)
        for (int i = 0; i < blks[k].n; i++) {
            zl_zblock *b = &blks[k].b[i];
            zl_linear *ls[] = {&b->q, &b->k, &b->v, &b->o, &b->w1, &b->w2, &b->w3, &b->ada};
            for (int j = 0; j < 8; j++) { lins[nl] = ls[j]; snprintf(names[nl++], 96, "%s.%d.%d", blks[k].p, i, j); }
        }
    for (int i = 0; i < nl; i++)
        if (strncmp(names[i], keep, strlen(keep)))
            for (int j = 0; j < lins[i]->nbranch; j++) {
                zl_branch *br = (zl_branch *)&lins[i]->branch[j]; /* test code: the model's own array */
                br->d_down = br->d_up = NULL;
            }
    for (int i = 0; i < s->nnorm; i++)
        if (strncmp(s->norm_names[i], keep, strlen(keep))) {
            int len;
            *norm_grad_slot(m, s->norm_names[i], &len) = NULL;
        }
}

/* Copies of every gradient buffer (LoRA factors then norms), concatenated. */
static float *snapshot(gsetup *s, size_t *n) {
    size_t tot = 0;
    for (int i = 0; i < s->g->n; i++)
        for (int p = ZL_P_DOWN; p <= ZL_P_UP; p++) tot += (size_t)s->g->m[i].p[p].shape[0] * s->g->m[i].p[p].shape[1];
    for (int i = 0; i < s->nnorm; i++) { int len; norm_grad_slot(s->m, s->norm_names[i], &len); tot += (size_t)len; }
    float *v = malloc(sizeof(float) * tot), *q = v;
    for (int i = 0; i < s->g->n; i++)
        for (int p = ZL_P_DOWN; p <= ZL_P_UP; p++) {
            size_t k = (size_t)s->g->m[i].p[p].shape[0] * s->g->m[i].p[p].shape[1];
            memcpy(q, s->g->m[i].p[p].data, sizeof(float) * k);
            q += k;
        }
    for (int i = 0; i < s->nnorm; i++) {
        int len;
        norm_grad_slot(s->m, s->norm_names[i], &len);
        memcpy(q, s->norm_bufs[i], sizeof(float) * (size_t)len);
        q += len;
    }
    *n = tot;
    return v;
}

/* The same entries of a and b, for the LoRA modules whose target starts with keep: bit for bit? */
static int same_for(gsetup *s, const float *a, const float *b, const char *keep, int *count) {
    size_t off = 0;
    *count = 0;
    for (int i = 0; i < s->g->n; i++)
        for (int p = ZL_P_DOWN; p <= ZL_P_UP; p++) {
            size_t k = (size_t)s->g->m[i].p[p].shape[0] * s->g->m[i].p[p].shape[1];
            if (!strncmp(s->g->m[i].target, keep, strlen(keep))) {
                if (memcmp(a + off, b + off, sizeof(float) * k)) return 0;
                ++*count;
            }
            off += k;
        }
    return 1;
}

TEST(zgrad_model_contract) {
    CHECK_MSG(weights_present(), "run `make zimage-weights`");
    gsetup s;
    CHECK_MSG(gsetup_make(&s, "tiny_a", "diffusers_single.safetensors", ZL_F32, "golden") == 0, "%s", zl_last_error());
    size_t nout = (size_t)16 * s.H * s.W, ng;
    float *out = malloc(sizeof(float) * nout), *ref = malloc(sizeof(float) * nout), loss, loss2;
    /* the output is exactly zl_zimage_forward's */
    CHECK(zl_zimage_forward_backward(s.m, s.x, s.H, s.W, s.t[0], s.cap, s.L, s.target, 1.0f, &loss, out) == 0);
    CHECK(zl_zimage_forward(s.m, s.x, s.H, s.W, s.t[0], s.cap, s.L, ref) == 0);
    CHECK_MSG(memcmp(out, ref, sizeof(float) * nout) == 0, "forward_backward's output differs from zl_zimage_forward");
    float *g1 = snapshot(&s, &ng);
    /* accumulation: a second call with gscale 0.5 adds half of it (loss itself is not scaled) */
    CHECK(zl_zimage_forward_backward(s.m, s.x, s.H, s.W, s.t[0], s.cap, s.L, s.target, 0.5f, &loss2, NULL) == 0);
    CHECK(loss2 == loss);
    float *g2 = snapshot(&s, &ng);
    double e2 = 0, n2 = 0;
    for (size_t i = 0; i < ng; i++) { double d = g2[i] - 1.5 * g1[i]; e2 += d * d; n2 += 1.5 * g1[i] * 1.5 * g1[i]; }
    CHECK_MSG(sqrt(e2 / n2) < 1e-6, "accumulation: rel %.3g", sqrt(e2 / n2));
    /* blocks below the lowest trainable parameter are skipped: the same gradients, bit for bit */
    const char *keeps[] = {"layers.1", "all_final_layer.2-1.adaLN_modulation.1", "all_final_layer.2-1.linear",
                           "all_x_embedder", "context_refiner.0", "cap_embedder"};
    for (size_t k = 0; k < sizeof keeps / sizeof *keeps; k++) {
        gsetup t;
        CHECK(gsetup_make(&t, "tiny_a", "diffusers_single.safetensors", ZL_F32, "golden") == 0);
        freeze_except(&t, keeps[k]);
        CHECK(zl_zimage_forward_backward(t.m, t.x, t.H, t.W, t.t[0], t.cap, t.L, t.target, 1.0f, &loss2, NULL) == 0);
        float *g3 = snapshot(&t, &ng);
        int cnt;
        int same = same_for(&t, g1, g3, keeps[k], &cnt);
        free(g3);
        gsetup_free(&t);
        CHECK_MSG(same && cnt > 0, "only %s trainable: gradients differ (%d tensors)", keeps[k], cnt);
    }
    /* nothing trainable: loss only */
    gsetup t;
    CHECK(gsetup_make(&t, "tiny_a", "diffusers_single.safetensors", ZL_F32, "golden") == 0);
    freeze_except(&t, "nothing");
    CHECK(zl_zimage_forward_backward(t.m, t.x, t.H, t.W, t.t[0], t.cap, t.L, t.target, 1.0f, &loss2, NULL) == 0);
    CHECK(loss2 == loss);
    gsetup_free(&t);
    /* bad shapes are refused with a message */
    CHECK(zl_zimage_forward_backward(s.m, s.x, s.H + 1, s.W, s.t[0], s.cap, s.L, s.target, 1.0f, &loss2, NULL) != 0);
    CHECK(strstr(zl_last_error(), "multiples"));
    free(g1); free(g2); free(out); free(ref);
    gsetup_free(&s);
}

/* A fused-qkv LoRA (ComfyUI: one down [12, dim] shared by three branches, block-diagonal up [3·dim, 12])
 * trains as its exact split form: the fused down's q/k/v rows get the split downs' gradients and the
 * up's diagonal blocks the split ups' (its off-diagonal zeros get gradients too: that is the fused
 * parametrisation). zl_lora_split_qkv folds the fused scale s into the split ups (scale 1 after), so
 * there d up = (fused d up block) / s while d down is the same. */
static zl_zimage *fused_model(const char *path, int split, zl_lora **l, zl_lora **g, int *attached) {
    zl_zimage_opts o = {.weight_dtype = ZL_F32};
    zl_zimage *m;
    float s = 1.0f;
    if (zl_zimage_load(DATA "/tiny_a/diffusers_single.safetensors", &o, &m) || zl_lora_load(path, l) || zl_lora_load(path, g))
        return NULL;
    if (split && (zl_lora_split_qkv(*l, 0, NULL) || zl_lora_split_qkv(*g, 0, NULL))) return NULL;
    for (int i = 0; i < (*g)->n; i++)
        for (int p = ZL_P_DOWN; p <= ZL_P_UP; p++)
            memset((*g)->m[i].p[p].data, 0, sizeof(float) * (size_t)(*g)->m[i].p[p].shape[0] * (*g)->m[i].p[p].shape[1]);
    if (zl_zimage_apply_loras(m, l, &s, 1, 0, 0, NULL)) return NULL;
    *attached = zl_zimage_lora_grads(m, *l, *g);
    return m;
}

static const zl_lora_module *find_mod(const zl_lora *l, const char *target) {
    for (int i = 0; i < l->n; i++)
        if (!strcmp(l->m[i].target, target)) return &l->m[i];
    return NULL;
}

TEST(zgrad_fused_qkv_lora) {
    CHECK_MSG(weights_present(), "run `make zimage-weights`");
    zl_lora *lf, *gf, *ls, *gs;
    int af, as;
    zl_zimage *mf = fused_model(DATA "/tiny_a/lora/lora_comfy_qkv.safetensors", 0, &lf, &gf, &af);
    zl_zimage *ms = fused_model(DATA "/tiny_a/lora/lora_comfy_qkv.safetensors", 1, &ls, &gs, &as);
    CHECK_MSG(mf && ms, "%s", zl_last_error());
    CHECK_MSG(af == 3 * 3 + 1 && as == 3 * 3 + 1, "branches: fused %d, split %d", af, as); /* 3 blocks × q,k,v + out */
    gsetup in; /* the golden's inputs and target */
    CHECK(gsetup_make(&in, "tiny_a", "diffusers_single.safetensors", ZL_F32, "golden") == 0);
    float lf_, ls_;
    CHECK(zl_zimage_forward_backward(mf, in.x, in.H, in.W, in.t[0], in.cap, in.L, in.target, 1.0f, &lf_, NULL) == 0);
    CHECK(zl_zimage_forward_backward(ms, in.x, in.H, in.W, in.t[0], in.cap, in.L, in.target, 1.0f, &ls_, NULL) == 0);
    CHECK_NEAR(lf_, ls_, 1e-5 * ls_);
    const char *blks[] = {"layers.0", "layers.1", "context_refiner.0"};
    double worst = 0, nz = 0;
    int dim = mf->cfg.dim;
    for (int b = 0; b < 3; b++) {
        char t[128];
        snprintf(t, sizeof t, "%s.attention.qkv", blks[b]);
        const zl_lora_module *F = find_mod(gf, t), *F0 = find_mod(lf, t);
        CHECK_MSG(F && F0 && F->rank == 12, "%s", t);
        double sF = zl_lora_module_scale(F0);
        CHECK(sF == 0.5);
        for (int k = 0; k < 3; k++) {
            snprintf(t, sizeof t, "%s.attention.to_%c", blks[b], "qkv"[k]);
            const zl_lora_module *S = find_mod(gs, t);
            CHECK_MSG(S && S->rank == 4, "%s", t);
            double e2 = 0, n2 = 0;
            for (int r = 0; r < 4; r++)     /* down rows 4k.. of the fused = the split down */
                for (int i = 0; i < dim; i++) {
                    double a = F->p[ZL_P_DOWN].data[(size_t)(4 * k + r) * dim + i], s = S->p[ZL_P_DOWN].data[(size_t)r * dim + i];
                    e2 += (a - s) * (a - s); n2 += s * s;
                }
            for (int o = 0; o < dim; o++)   /* up block (rows k·dim.., columns 4k..) = the split up */
                for (int r = 0; r < 4; r++) {
                    double a = F->p[ZL_P_UP].data[(size_t)(k * dim + o) * 12 + 4 * k + r] / sF, s = S->p[ZL_P_UP].data[(size_t)o * 4 + r];
                    e2 += (a - s) * (a - s); n2 += s * s;
                }
            double e = sqrt(e2 / n2);
            if (e > worst) worst = e;
            nz += n2;
        }
    }
    if (getenv("ZL_TEST_VERBOSE")) fprintf(stderr, "\n    fused vs split qkv LoRA gradients: worst rel L2 %.2e", worst);
    CHECK_MSG(nz > 0 && worst < 1e-5, "fused vs split gradients: rel L2 %.3g", worst);
    gsetup_free(&in);
    zl_zimage_free(mf); zl_zimage_free(ms);
    zl_lora_free(lf); zl_lora_free(gf); zl_lora_free(ls); zl_lora_free(gs);
}
