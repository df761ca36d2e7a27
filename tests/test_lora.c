/* test_lora.c — unit tests of the LoRA library against plain-loop references (double precision):
 * key parsing, ΔW of each adapter type, DoRA, exact split/fuse of qkv, LoKr as LoRA, merge, resize,
 * checks against a checkpoint, and every kind of broken module. Real-shape, every-format parity against
 * an independent Python writer lives in test_lora_ref.c. */
#include "test.h"
#include "base/base.h"
#include "io/safetensors.h"
#include "lora/lora.h"
#include "model/zimage_names.h"

#include <stdlib.h>
#include <string.h>

static float frand(zl_rng *r) { return zl_rng_normal(r) * 0.1f; }

static void addm(zl_st_writer *w, const char *key, int r, int c, zl_rng *g) {
    int n = r * (c ? c : 1); /* c == 0: a vector of r entries */
    float *v = malloc(sizeof(float) * (size_t)n);
    for (int i = 0; i < n; i++) v[i] = frand(g);
    int64_t s[2] = {r, c};
    zl_stw_add_f32(w, key, c ? 2 : 1, s, v, ZL_F32);
    free(v);
}
static void adds(zl_st_writer *w, const char *key, float a) { zl_stw_add_f32(w, key, 0, NULL, &a, ZL_F32); }

static char *write_file(zl_st_writer *w, const char *name) {
    char *p = zl_xasprintf("%s/%s", zl_test_dir(), name);
    if (zl_stw_write(w, p)) { free(p); p = NULL; }
    zl_stw_free(w);
    return p;
}

static const zl_lora_module *find(const zl_lora *l, const char *target) {
    for (int i = 0; i < l->n; i++)
        if (l->m[i].target && strcmp(l->m[i].target, target) == 0) return &l->m[i];
    return NULL;
}

static double *dense(const zl_lora_module *m, float s) {
    size_t n = (size_t)m->out * (size_t)m->in;
    float *f = malloc(sizeof(float) * n);
    double *d = malloc(sizeof(double) * n);
    if (zl_lora_delta(m, s, f)) { free(f); free(d); return NULL; }
    for (size_t i = 0; i < n; i++) d[i] = f[i];
    free(f);
    return d;
}

static double maxdiff(const double *a, const double *b, size_t n) {
    double m = 0;
    for (size_t i = 0; i < n; i++) { double d = fabs(a[i] - b[i]); if (d > m) m = d; }
    return m;
}

/* ------------------------------------------------------------------ key parsing */

TEST(lora_parse_key_formats) {
    struct { const char *key, *module; int part; zl_format fmt; } c[] = {
        {"transformer.layers.0.attention.to_q.lora_A.weight", "transformer.layers.0.attention.to_q", ZL_P_DOWN, ZL_FMT_DIFFUSERS},
        {"diffusion_model.layers.3.feed_forward.w2.lora_B.weight", "diffusion_model.layers.3.feed_forward.w2", ZL_P_UP, ZL_FMT_AITOOLKIT},
        {"lora_unet_layers_0_attention_to_out_0.lora_down.weight", "lora_unet_layers_0_attention_to_out_0", ZL_P_DOWN, ZL_FMT_KOHYA},
        {"layers.0.attention.to_k.lora_B.default.weight", "layers.0.attention.to_k", ZL_P_UP, ZL_FMT_DIFFSYNTH},
        {"lycoris_layers_1_attention_to_v.lokr_w2_b", "lycoris_layers_1_attention_to_v", ZL_P_K2B, ZL_FMT_LYCORIS},
        {"base_model.model.layers.0.attention.to_q.lora_A.weight", "base_model.model.layers.0.attention.to_q", ZL_P_DOWN, ZL_FMT_DIFFUSERS},
        {"layers.2.feed_forward.w1.hada_w1_a", "layers.2.feed_forward.w1", ZL_P_W1A, ZL_FMT_BARE},
        {"diffusion_model.layers.0.adaLN_modulation.0.diff_b", "diffusion_model.layers.0.adaLN_modulation.0", ZL_P_DIFF_B, ZL_FMT_AITOOLKIT},
        {"diffusion_model.layers.0.attention.to_q.magnitude", "diffusion_model.layers.0.attention.to_q", ZL_P_DORA, ZL_FMT_AITOOLKIT},
        {"layers.N.attention.qkv.lora.down.weight", "layers.N.attention.qkv", ZL_P_DOWN, ZL_FMT_BARE},
    };
    for (size_t i = 0; i < sizeof c / sizeof *c; i++) {
        char mod[256];
        zl_part p;
        zl_format f;
        const char *u;
        CHECK_MSG(zl_lora_parse_key(c[i].key, mod, sizeof mod, &p, &f, &u) == 0, "%s", c[i].key);
        CHECK_MSG(strcmp(mod, c[i].module) == 0, "%s -> %s", c[i].key, mod);
        CHECK_MSG((int)p == c[i].part, "%s part %d", c[i].key, (int)p);
        CHECK_MSG(f == c[i].fmt, "%s fmt %s", c[i].key, zl_format_name(f));
    }
    char mod[64];
    zl_part p;
    zl_format f;
    const char *u;
    CHECK(zl_lora_parse_key("layers.0.attention.to_q.weight", mod, sizeof mod, &p, &f, &u) != 0);
    CHECK(zl_lora_parse_key("x.oft_blocks", mod, sizeof mod, &p, &f, &u) == 0 && u && strstr(u, "OFT"));
}

TEST(zimage_names_underscored_and_native) {
    char out[128], canon[128];
    struct { const char *us, *canon; int fused; } c[] = {
        {"layers_12_attention_to_out_0", "layers.12.attention.to_out.0", 0},
        {"layers_0_attention_qkv", "layers.0.attention.qkv", 1},
        {"layers_0_attention_out", "layers.0.attention.to_out.0", 0},
        {"noise_refiner_1_adaLN_modulation_0", "noise_refiner.1.adaLN_modulation.0", 0},
        {"context_refiner_0_feed_forward_w3", "context_refiner.0.feed_forward.w3", 0},
        {"all_x_embedder_2-1", "all_x_embedder.2-1", 0},
        {"x_embedder", "all_x_embedder.2-1", 0},
        {"final_layer_adaLN_modulation_1", "all_final_layer.2-1.adaLN_modulation.1", 0},
        {"layers_0_attention_q_norm", "layers.0.attention.norm_q", 0},
        {"t_embedder_mlp_2", "t_embedder.mlp.2", 0},
    };
    for (size_t i = 0; i < sizeof c / sizeof *c; i++) {
        CHECK_MSG(zl_zimage_from_underscored(c[i].us, out) == 0, "%s", c[i].us);
        CHECK_MSG(zl_zimage_canonical(out, canon) == c[i].fused, "%s", out);
        CHECK_MSG(strcmp(canon, c[i].canon) == 0, "%s -> %s", c[i].us, canon);
    }
    CHECK(zl_zimage_from_underscored("double_blocks_0_img_attn_qkv", out) != 0);
    CHECK(zl_zimage_from_underscored("layers_x_attention_to_q", out) != 0);
    zl_zimage_native("layers.3.attention.to_out.0", out);
    CHECK(strcmp(out, "layers.3.attention.out") == 0);
    zl_zimage_native("all_final_layer.2-1.linear", out);
    CHECK(strcmp(out, "final_layer.linear") == 0);
    /* the default module set has the parameter count of the spec (6,154,908,736 incl. biases/pads) */
    zl_zimage_config cfg;
    zl_zimage_default_config(&cfg);
    zl_zimage_module *m;
    int n = zl_zimage_modules(&cfg, &m);
    long long params = 2 * 3840; /* x_pad_token, cap_pad_token */
    for (int i = 0; i < n; i++) params += (long long)m[i].out * (m[i].in ? m[i].in : 1) + (m[i].has_bias ? m[i].out : 0);
    free(m);
    CHECK_MSG(params == 6154908736LL, "params %lld", params);
}

/* ------------------------------------------------------------------ ΔW against plain loops */

TEST(lora_delta_each_adapter_vs_loops) {
    zl_rng g = {1};
    zl_st_writer *w = zl_stw_new();
    /* LoRA 12x10 rank 3 alpha 1.5 */
    addm(w, "lora_unet_layers_0_attention_to_q.lora_down.weight", 3, 10, &g);
    addm(w, "lora_unet_layers_0_attention_to_q.lora_up.weight", 12, 3, &g);
    adds(w, "lora_unet_layers_0_attention_to_q.alpha", 1.5f);
    /* LoHa 12x10 ranks 2 and 4, alpha 3 */
    addm(w, "lora_unet_layers_0_attention_to_k.hada_w1_a", 12, 2, &g);
    addm(w, "lora_unet_layers_0_attention_to_k.hada_w1_b", 2, 10, &g);
    addm(w, "lora_unet_layers_0_attention_to_k.hada_w2_a", 12, 4, &g);
    addm(w, "lora_unet_layers_0_attention_to_k.hada_w2_b", 4, 10, &g);
    adds(w, "lora_unet_layers_0_attention_to_k.alpha", 3.0f);
    /* LoKr: w1 [3,2] full, w2 = w2a [4,2] @ w2b [2,5] -> [12,10], alpha 4 -> scale 4/2 */
    addm(w, "lora_unet_layers_0_attention_to_v.lokr_w1", 3, 2, &g);
    addm(w, "lora_unet_layers_0_attention_to_v.lokr_w2_a", 4, 2, &g);
    addm(w, "lora_unet_layers_0_attention_to_v.lokr_w2_b", 2, 5, &g);
    adds(w, "lora_unet_layers_0_attention_to_v.alpha", 4.0f);
    /* LoKr with full factors: alpha must be ignored */
    addm(w, "lora_unet_layers_0_feed_forward_w1.lokr_w1", 2, 2, &g);
    addm(w, "lora_unet_layers_0_feed_forward_w1.lokr_w2", 6, 5, &g);
    adds(w, "lora_unet_layers_0_feed_forward_w1.alpha", 1e10f);
    char *path = write_file(w, "adapters.safetensors");
    CHECK(path);
    zl_lora *l;
    CHECK_MSG(zl_lora_load(path, &l) == 0, "%s", zl_last_error());
    zl_st *st;
    CHECK(zl_st_open(path, &st) == 0);
#define T(name) zl_st_read_f32(st, zl_st_find(st, name))
    float *d = T("lora_unet_layers_0_attention_to_q.lora_down.weight"), *u = T("lora_unet_layers_0_attention_to_q.lora_up.weight");
    double ref[200], *got;
    for (int i = 0; i < 12; i++)
        for (int j = 0; j < 10; j++) {
            double s = 0;
            for (int k = 0; k < 3; k++) s += (double)u[i * 3 + k] * d[k * 10 + j];
            ref[i * 10 + j] = 0.7 * (1.5 / 3) * s;
        }
    free(d); free(u);
    got = dense(find(l, "layers.0.attention.to_q"), 0.7f);
    CHECK(got && maxdiff(got, ref, 120) < 1e-6);
    free(got);
    float *a1 = T("lora_unet_layers_0_attention_to_k.hada_w1_a"), *b1 = T("lora_unet_layers_0_attention_to_k.hada_w1_b");
    float *a2 = T("lora_unet_layers_0_attention_to_k.hada_w2_a"), *b2 = T("lora_unet_layers_0_attention_to_k.hada_w2_b");
    for (int i = 0; i < 12; i++)
        for (int j = 0; j < 10; j++) {
            double x = 0, y = 0;
            for (int k = 0; k < 2; k++) x += (double)a1[i * 2 + k] * b1[k * 10 + j];
            for (int k = 0; k < 4; k++) y += (double)a2[i * 4 + k] * b2[k * 10 + j];
            ref[i * 10 + j] = (3.0 / 2) * x * y;
        }
    free(a1); free(b1); free(a2); free(b2);
    got = dense(find(l, "layers.0.attention.to_k"), 1.0f);
    CHECK(got && maxdiff(got, ref, 120) < 1e-6);
    free(got);
    float *k1 = T("lora_unet_layers_0_attention_to_v.lokr_w1"), *k2a = T("lora_unet_layers_0_attention_to_v.lokr_w2_a"),
          *k2b = T("lora_unet_layers_0_attention_to_v.lokr_w2_b");
    for (int i = 0; i < 3; i++)
        for (int j = 0; j < 2; j++)
            for (int k = 0; k < 4; k++)
                for (int m = 0; m < 5; m++) {
                    double w2 = 0;
                    for (int r = 0; r < 2; r++) w2 += (double)k2a[k * 2 + r] * k2b[r * 5 + m];
                    ref[(i * 4 + k) * 10 + j * 5 + m] = (4.0 / 2) * k1[i * 2 + j] * w2;
                }
    free(k1); free(k2a); free(k2b);
    got = dense(find(l, "layers.0.attention.to_v"), 1.0f);
    CHECK(got && maxdiff(got, ref, 120) < 1e-6);
    free(got);
    float *f1 = T("lora_unet_layers_0_feed_forward_w1.lokr_w1"), *f2 = T("lora_unet_layers_0_feed_forward_w1.lokr_w2");
    for (int i = 0; i < 2; i++)
        for (int j = 0; j < 2; j++)
            for (int k = 0; k < 6; k++)
                for (int m = 0; m < 5; m++) ref[(i * 6 + k) * 10 + j * 5 + m] = (double)f1[i * 2 + j] * f2[k * 5 + m];
    free(f1); free(f2);
    got = dense(find(l, "layers.0.feed_forward.w1"), 1.0f);
    CHECK(got && maxdiff(got, ref, 120) < 1e-6);
    free(got);
#undef T
    zl_st_close(st);
    zl_lora_free(l);
    free(path);
}

TEST(lora_dora_vs_formula) {
    zl_rng g = {2};
    zl_st_writer *w = zl_stw_new();
    addm(w, "diffusion_model.layers.0.attention.to_q.lora_A.weight", 2, 6, &g);
    addm(w, "diffusion_model.layers.0.attention.to_q.lora_B.weight", 5, 2, &g);
    addm(w, "diffusion_model.layers.0.attention.to_q.magnitude", 5, 0, &g);     /* per row */
    addm(w, "diffusion_model.layers.0.attention.to_k.lora_A.weight", 2, 6, &g);
    addm(w, "diffusion_model.layers.0.attention.to_k.lora_B.weight", 5, 2, &g);
    addm(w, "diffusion_model.layers.0.attention.to_k.dora_scale", 1, 6, &g);   /* per column */
    char *path = write_file(w, "dora.safetensors");
    zl_lora *l;
    CHECK_MSG(zl_lora_load(path, &l) == 0, "%s", zl_last_error());
    for (int which = 0; which < 2; which++) {
        const zl_lora_module *m = find(l, which ? "layers.0.attention.to_k" : "layers.0.attention.to_q");
        CHECK(m && m->dora);
        float W[30], W0[30];
        for (int i = 0; i < 30; i++) W[i] = W0[i] = frand(&g) * 5;
        const float *A = m->p[ZL_P_DOWN].data, *B = m->p[ZL_P_UP].data, *mag = m->p[ZL_P_DORA].data;
        double Wc[30];
        for (int i = 0; i < 5; i++)
            for (int j = 0; j < 6; j++) {
                double s = 0;
                for (int k = 0; k < 2; k++) s += (double)B[i * 2 + k] * A[k * 6 + j];
                Wc[i * 6 + j] = W0[i * 6 + j] + s;
            }
        double ref[30];
        for (int i = 0; i < 5; i++)
            for (int j = 0; j < 6; j++) {
                double nrm = 0;
                if (!which) for (int c = 0; c < 6; c++) nrm += Wc[i * 6 + c] * Wc[i * 6 + c];
                else for (int r = 0; r < 5; r++) nrm += Wc[r * 6 + j] * Wc[r * 6 + j];
                double dora = Wc[i * 6 + j] * (which ? mag[j] : mag[i]) / sqrt(nrm);
                ref[i * 6 + j] = W0[i * 6 + j] + 0.6 * (dora - W0[i * 6 + j]);
            }
        CHECK(zl_lora_apply_dora(m, 0.6f, W) == 0);
        for (int i = 0; i < 30; i++) CHECK_NEAR(W[i], ref[i], 1e-5 * (1 + fabs(ref[i])));
        float tmp[30];
        CHECK(zl_lora_delta(m, 1.0f, tmp) != 0); /* DoRA needs the base weight */
    }
    zl_lora_free(l);
    free(path);
}

/* ------------------------------------------------------------------ exact split / fuse */

/* ΔW of the three q/k/v targets of block 0, stacked [3*d, in], from split or fused modules. */
static double *qkv_delta(const zl_lora *l, int d, int in) {
    double *out = calloc((size_t)3 * d * in, sizeof(double));
    const zl_lora_module *f = find(l, "layers.0.attention.qkv");
    if (f) {
        double *x = dense(f, 1.0f);
        if (!x) { free(out); return NULL; }
        memcpy(out, x, sizeof(double) * 3 * d * in);
        free(x);
        return out;
    }
    const char *n[3] = {"layers.0.attention.to_q", "layers.0.attention.to_k", "layers.0.attention.to_v"};
    for (int k = 0; k < 3; k++) {
        const zl_lora_module *m = find(l, n[k]);
        if (!m) continue;
        double *x = dense(m, 1.0f);
        if (!x) { free(out); return NULL; }
        memcpy(out + (size_t)k * d * in, x, sizeof(double) * d * in);
        free(x);
    }
    return out;
}

static void qkv_file(const char *kind, zl_rng *g, zl_st_writer *w, int d, int in, int skip) {
    const char *n[3] = {"to_q", "to_k", "to_v"};
    char k[200];
    for (int i = 0; i < 3; i++) {
        if (i == skip) continue;
        const char *b = "lora_unet_layers_0_attention_";
        if (!strcmp(kind, "lora")) {
            snprintf(k, sizeof k, "%s%s.lora_down.weight", b, n[i]); addm(w, k, 2 + i, in, g);
            snprintf(k, sizeof k, "%s%s.lora_up.weight", b, n[i]); addm(w, k, d, 2 + i, g);
            snprintf(k, sizeof k, "%s%s.alpha", b, n[i]); adds(w, k, 1.0f + (float)i);
        } else if (!strcmp(kind, "loha")) {
            snprintf(k, sizeof k, "%s%s.hada_w1_a", b, n[i]); addm(w, k, d, 2, g);
            snprintf(k, sizeof k, "%s%s.hada_w1_b", b, n[i]); addm(w, k, 2, in, g);
            snprintf(k, sizeof k, "%s%s.hada_w2_a", b, n[i]); addm(w, k, d, 3, g);
            snprintf(k, sizeof k, "%s%s.hada_w2_b", b, n[i]); addm(w, k, 3, in, g);
            snprintf(k, sizeof k, "%s%s.alpha", b, n[i]); adds(w, k, 0.5f * (float)(i + 1));
        } else if (!strcmp(kind, "diff")) {
            snprintf(k, sizeof k, "%s%s.diff", b, n[i]); addm(w, k, d, in, g);
        } else { /* lokr, factored: kron rank 2*2 */
            snprintf(k, sizeof k, "%s%s.lokr_w1_a", b, n[i]); addm(w, k, 2, 2, g);
            snprintf(k, sizeof k, "%s%s.lokr_w1_b", b, n[i]); addm(w, k, 2, 2, g);
            snprintf(k, sizeof k, "%s%s.lokr_w2_a", b, n[i]); addm(w, k, d / 2, 2, g);
            snprintf(k, sizeof k, "%s%s.lokr_w2_b", b, n[i]); addm(w, k, 2, in / 2, g);
            snprintf(k, sizeof k, "%s%s.alpha", b, n[i]); adds(w, k, 3.0f);
        }
    }
}

TEST(lora_fuse_split_qkv_exact) {
    const char *kinds[] = {"lora", "loha", "diff", "lokr"};
    int d = 8, in = 6;
    for (int t = 0; t < 4; t++)
        for (int skip = -1; skip < 3; skip += 2) { /* all three, and q/v missing k (skip=1) */
            zl_rng g = {10u + (unsigned)t};
            zl_st_writer *w = zl_stw_new();
            qkv_file(kinds[t], &g, w, d, in, skip);
            char name[64];
            snprintf(name, sizeof name, "qkv_%s_%d.safetensors", kinds[t], skip);
            char *path = write_file(w, name);
            zl_lora *l;
            CHECK_MSG(zl_lora_load(path, &l) == 0, "%s", zl_last_error());
            double *ref = qkv_delta(l, d, in);
            CHECK(ref);
            double e;
            CHECK_MSG(zl_lora_fuse_qkv(l, 0, &e) == 0, "%s: %s", kinds[t], zl_last_error());
            CHECK(strcmp(l->qkv, "fused") == 0 && find(l, "layers.0.attention.qkv"));
            double *fz = qkv_delta(l, d, in);
            CHECK(fz);
            CHECK_MSG(maxdiff(fz, ref, (size_t)3 * d * in) < 1e-6, "%s fused", kinds[t]);
            CHECK(zl_lora_split_qkv(l, 0, &e) == 0);
            CHECK(!find(l, "layers.0.attention.qkv"));
            double *sp = qkv_delta(l, d, in);
            CHECK(sp);
            CHECK_MSG(maxdiff(sp, ref, (size_t)3 * d * in) < 1e-6, "%s split back", kinds[t]);
            /* a fused LoRA splits back to the original per-projection ranks */
            if (t == 0 && skip < 0) CHECK(find(l, "layers.0.attention.to_v")->rank == 4);
            free(ref); free(fz); free(sp);
            zl_lora_free(l);
            free(path);
        }
}

TEST(lora_full_lokr_needs_lossy) {
    zl_rng g = {5};
    zl_st_writer *w = zl_stw_new();
    const char *n[3] = {"to_q", "to_k", "to_v"};
    char k[128];
    for (int i = 0; i < 3; i++) { /* full factors 8x8 and 6x6 -> LoRA rank 48 would be needed; allowed up to 1024... */
        snprintf(k, sizeof k, "layers.0.attention.%s.lokr_w1", n[i]); addm(w, k, 40, 40, &g);
        snprintf(k, sizeof k, "layers.0.attention.%s.lokr_w2", n[i]); addm(w, k, 30, 30, &g);
    }
    char *path = write_file(w, "lokr_full.safetensors");
    zl_lora *l;
    CHECK(zl_lora_load(path, &l) == 0);
    double e;
    CHECK(zl_lora_fuse_qkv(l, 0, &e) != 0); /* 40*30 = 1200 > 1024: no exact fused form */
    CHECK(strstr(zl_last_error(), "--lossy"));
    CHECK(zl_lora_fuse_qkv(l, 1, &e) == 0);
    CHECK(e > 0 && e < 1);
    zl_lora_free(l);
    free(path);
}

/* ------------------------------------------------------------------ merge, resize */

TEST(lora_merge_exact_and_mixed) {
    zl_rng g = {3};
    zl_st_writer *w = zl_stw_new();
    qkv_file("lora", &g, w, 8, 6, -1);
    char *pa = write_file(w, "merge_a.safetensors");
    w = zl_stw_new();
    qkv_file("loha", &g, w, 8, 6, 2); /* q and k only */
    char *pb = write_file(w, "merge_b.safetensors");
    zl_lora *a, *b, *m;
    CHECK(zl_lora_load(pa, &a) == 0 && zl_lora_load(pb, &b) == 0);
    double *da = qkv_delta(a, 8, 6), *db = qkv_delta(b, 8, 6);
    zl_lora *in[2] = {a, b};
    float s[2] = {0.5f, -1.5f};
    CHECK_MSG(zl_lora_merge(in, s, 2, &m) == 0, "%s", zl_last_error());
    double *dm = qkv_delta(m, 8, 6);
    for (int i = 0; i < 3 * 8 * 6; i++) CHECK_NEAR(dm[i], 0.5 * da[i] - 1.5 * db[i], 1e-6);
    CHECK(find(m, "layers.0.attention.to_v")->kind == ZL_AD_LORA);  /* alone: kept as LoRA */
    CHECK(find(m, "layers.0.attention.to_q")->kind == ZL_AD_DIFF);  /* LoRA + LoHa: exact diff */
    free(da); free(db); free(dm);
    /* merging two LoRAs concatenates ranks */
    zl_lora *m2;
    zl_lora *in2[2] = {a, a};
    float s2[2] = {1.0f, 2.0f};
    CHECK(zl_lora_merge(in2, s2, 2, &m2) == 0);
    CHECK(find(m2, "layers.0.attention.to_q")->rank == 4 && find(m2, "layers.0.attention.to_q")->kind == ZL_AD_LORA);
    double *d1 = dense(find(a, "layers.0.attention.to_q"), 3.0f), *d2 = dense(find(m2, "layers.0.attention.to_q"), 1.0f);
    CHECK(maxdiff(d1, d2, 48) < 1e-6);
    free(d1); free(d2);
    zl_lora_free(m2);
    zl_lora_free(a); zl_lora_free(b); zl_lora_free(m);
    free(pa); free(pb);
}

TEST(lora_resize_energy) {
    zl_rng g = {4};
    zl_st_writer *w = zl_stw_new();
    qkv_file("lora", &g, w, 8, 6, -1);
    char *p = write_file(w, "resize.safetensors");
    zl_lora *l;
    CHECK(zl_lora_load(p, &l) == 0);
    double *before = dense(find(l, "layers.0.attention.to_v"), 1.0f); /* rank 4 */
    double emin, emean;
    CHECK(zl_lora_resize(l, 2, &emin, &emean) == 0);
    const zl_lora_module *v = find(l, "layers.0.attention.to_v");
    CHECK(v->rank == 2 && emin > 0 && emin <= emean && emean <= 1);
    double *after = dense(v, 1.0f);
    double err = 0, tot = 0;
    for (int i = 0; i < 48; i++) { err += (before[i] - after[i]) * (before[i] - after[i]); tot += before[i] * before[i]; }
    CHECK(err > 0 && err < tot);                       /* truncated, not exact, not garbage */
    CHECK(zl_lora_resize(l, 0, &emin, &emean) != 0);
    free(before); free(after);
    zl_lora_free(l);
    free(p);
}

/* ------------------------------------------------------------------ broken modules */

TEST(lora_broken_files_fail_clearly) {
    struct { const char *name, *msg; int kind; } c[] = {
        {"missing_up", "half is missing", 0}, {"rank_mismatch", "rank mismatch", 1}, {"nan_alpha", "non-finite alpha", 2},
        {"inf_alpha", "non-finite alpha", 3}, {"alpha_only", "only an alpha", 4}, {"mixed", "mixes adapter types", 5},
        {"int_tensor", "expected a float type", 6}, {"not_lora", "not a LoRA tensor", 7}, {"loha_missing", "LoHa is missing", 8},
        {"empty", "no tensors", 9},
    };
    for (size_t i = 0; i < sizeof c / sizeof *c; i++) {
        zl_rng g = {7};
        zl_st_writer *w = zl_stw_new();
        const char *b = "diffusion_model.layers.0.attention.to_q";
        char k[128];
        snprintf(k, sizeof k, "%s.lora_A.weight", b);
        if (c[i].kind != 4 && c[i].kind != 8 && c[i].kind != 9) addm(w, k, 2, 6, &g);
        snprintf(k, sizeof k, "%s.lora_B.weight", b);
        if (c[i].kind != 0 && c[i].kind != 4 && c[i].kind != 8 && c[i].kind != 9) addm(w, k, 5, c[i].kind == 1 ? 3 : 2, &g);
        snprintf(k, sizeof k, "%s.alpha", b);
        if (c[i].kind == 2) adds(w, k, NAN);
        if (c[i].kind == 3) adds(w, k, INFINITY);
        if (c[i].kind == 4) adds(w, k, 1);
        snprintf(k, sizeof k, "%s.hada_w1_a", b);
        if (c[i].kind == 5 || c[i].kind == 8) addm(w, k, 5, 2, &g);
        if (c[i].kind == 6) { int32_t v[2] = {1, 2}; int64_t s = 2; zl_stw_add(w, "diffusion_model.layers.1.attention.to_q.lora_A.weight", ZL_I32, 1, &s, v); }
        if (c[i].kind == 7) addm(w, "diffusion_model.layers.0.attention.to_q.weight", 2, 2, &g);
        char *p = write_file(w, c[i].name);
        zl_lora *l = NULL;
        CHECK_MSG(zl_lora_load(p, &l) != 0, "%s loaded", c[i].name);
        CHECK_MSG(strstr(zl_last_error(), p) && strstr(zl_last_error(), c[i].msg), "%s: %s", c[i].name, zl_last_error());
        CHECK(l == NULL);
        free(p);
    }
}

/* ------------------------------------------------------------------ check against a checkpoint */

TEST(lora_check_against_comfy_checkpoint) {
    zl_rng g = {8};
    /* a tiny ComfyUI-named checkpoint: dim 16, fused qkv, prefix model.diffusion_model. */
    zl_st_writer *w = zl_stw_new();
    addm(w, "model.diffusion_model.layers.0.attention.qkv.weight", 48, 16, &g);
    addm(w, "model.diffusion_model.layers.0.attention.out.weight", 16, 16, &g);
    addm(w, "model.diffusion_model.layers.0.feed_forward.w2.weight", 16, 42, &g);
    addm(w, "model.diffusion_model.layers.0.attention.q_norm.weight", 8, 0, &g);
    char *ck = write_file(w, "ckpt.safetensors");
    zl_module_table t;
    CHECK_MSG(zl_module_table_from_checkpoint(ck, &t) == 0, "%s", zl_last_error());
    CHECK(t.dim == 16 && zl_module_table_find(&t, "layers.0.attention.to_k") >= 0 && zl_module_table_find(&t, "layers.0.attention.to_out.0") >= 0);
    w = zl_stw_new();
    addm(w, "transformer.layers.0.attention.to_k.lora_A.weight", 2, 16, &g);
    addm(w, "transformer.layers.0.attention.to_k.lora_B.weight", 16, 2, &g);
    addm(w, "transformer.layers.0.feed_forward.w2.lora_A.weight", 2, 40, &g);   /* wrong width */
    addm(w, "transformer.layers.0.feed_forward.w2.lora_B.weight", 16, 2, &g);
    addm(w, "transformer.layers.1.attention.to_q.lora_A.weight", 2, 16, &g);    /* layer not in the model */
    addm(w, "transformer.layers.1.attention.to_q.lora_B.weight", 16, 2, &g);
    addm(w, "transformer.text_encoder_thing.lora_A.weight", 2, 16, &g);         /* not a Z-Image module */
    addm(w, "transformer.text_encoder_thing.lora_B.weight", 16, 2, &g);
    char *lp = write_file(w, "check.safetensors");
    zl_lora *l;
    CHECK(zl_lora_load(lp, &l) == 0);
    CHECK(strcmp(l->family, "z-image") == 0);
    char buf[256];
    int ok = 0, mism = 0, missing = 0, unknown = 0;
    for (int i = 0; i < l->n; i++) {
        const char *why = zl_lora_check_module(l, i, &t, buf, sizeof buf);
        if (!why) ok++;
        else if (strstr(why, "shape mismatch")) mism++;
        else if (strstr(why, "no such module")) missing++;
        else if (strstr(why, "unknown module")) unknown++;
    }
    CHECK(ok == 1 && mism == 1 && missing == 1 && unknown == 1);
    /* the CLI prints applied n/m and fails */
    char cmd[1024], *out = NULL;
    snprintf(cmd, sizeof cmd, "%s lora check %s --model %s", zl_test_bin(), lp, ck);
    CHECK(zl_test_run(cmd, &out) == 1);
    CHECK_MSG(out && strstr(out, "applied 2/8 tensors"), "%s", out ? out : "");
    free(out);
    zl_lora_free(l);
    zl_module_table_free(&t);
    free(ck); free(lp);
}

TEST(lora_family_by_width_not_name) {
    zl_rng g = {9};
    /* Lumina-2: Z-Image names, width 2304 */
    zl_st_writer *w = zl_stw_new();
    addm(w, "diffusion_model.layers.0.attention.qkv.lora_A.weight", 2, 2304, &g);
    addm(w, "diffusion_model.layers.0.attention.qkv.lora_B.weight", 3840, 2, &g);
    char *p = write_file(w, "lumina.safetensors");
    zl_lora *l;
    CHECK(zl_lora_load(p, &l) == 0);
    CHECK_MSG(strcmp(l->family, "lumina2") == 0, "%s", l->family);
    CHECK(l->reason && strstr(l->reason, "2304"));
    zl_lora_free(l);
    free(p);
    /* the same names at 3840 are Z-Image */
    w = zl_stw_new();
    addm(w, "diffusion_model.layers.0.attention.qkv.lora_A.weight", 2, 3840, &g);
    addm(w, "diffusion_model.layers.0.attention.qkv.lora_B.weight", 11520, 2, &g);
    p = write_file(w, "zfused.safetensors");
    CHECK(zl_lora_load(p, &l) == 0);
    CHECK(strcmp(l->family, "z-image") == 0 && strcmp(l->qkv, "fused") == 0);
    zl_lora_free(l);
    free(p);
}
