/* test_zimage.c — the Z-Image transformer against the independent PyTorch reference
 * (tests/ref/zimage_ref.py; goldens in tests/data/zimage, see its README): every checkpoint layout,
 * both tiny configs, F32 and BF16 weights, LoRA files in several formats merged and as runtime
 * branches, a stack with a negative strength, the debug CLI, and refusals of wrong files.
 * Tolerance: relative L2 <= 1e-4 (the reference's own float64 cross-check agrees to 2e-5). */
#include "test.h"
#include "base/base.h"
#include "io/safetensors.h"
#include "lora/lora.h"
#include "model/zimage.h"

#include <stdlib.h>
#include <string.h>

#define DATA "tests/data/zimage"
#define TOL 1e-4

typedef struct { float *x, *t, *cap; int H, W, L; } zcase;

static int load_case(const char *cfg, int c, zcase *z) {
    char p[256];
    snprintf(p, sizeof p, DATA "/%s/in_case%d.safetensors", cfg, c);
    zl_st *st;
    if (zl_st_open(p, &st)) return -1;
    const zl_tensor_info *x = zl_st_find(st, "x"), *t = zl_st_find(st, "t"), *cap = zl_st_find(st, "cap");
    if (!x || !t || !cap) { zl_st_close(st); return -1; }
    z->x = zl_st_read_f32(st, x); z->t = zl_st_read_f32(st, t); z->cap = zl_st_read_f32(st, cap);
    z->H = (int)x->shape[1]; z->W = (int)x->shape[2]; z->L = (int)cap->shape[0];
    zl_st_close(st);
    return 0;
}
static void free_case(zcase *z) { free(z->x); free(z->t); free(z->cap); }

/* Relative L2 distance between the model output and golden file `name` (tensor "out"). */
static double rel_err(const float *y, const char *cfg, const char *name, size_t n) {
    char p[256];
    snprintf(p, sizeof p, DATA "/%s/%s.safetensors", cfg, name);
    return zl_test_golden_rel_l2(y, p, "out", n);
}

static int weights_present(void) {
    return zl_file_exists(DATA "/tiny_a/comfy.safetensors") && zl_file_exists(DATA "/tiny_b/diffusers_single.safetensors");
}

/* Runs the 3 cases of cfg on model path with weight dtype wd, comparing to golden prefix gold. */
static int run_cases(const char *cfg, const char *path, zl_dtype wd, const char *gold, double *worst) {
    zl_zimage_opts o = {.weight_dtype = wd};
    zl_zimage *m;
    if (zl_zimage_load(path, &o, &m)) { fprintf(stderr, "    load %s: %s\n", path, zl_last_error()); return -1; }
    *worst = 0;
    for (int c = 0; c < 3; c++) {
        zcase z;
        if (load_case(cfg, c, &z)) { zl_zimage_free(m); return -1; }
        size_t n = (size_t)16 * z.H * z.W;
        float *y = malloc(sizeof(float) * n);
        int rc = zl_zimage_forward(m, z.x, z.H, z.W, z.t[0], z.cap, z.L, y);
        char g[64];
        snprintf(g, sizeof g, "%s_case%d", gold, c);
        double e = rc ? 1e9 : rel_err(y, cfg, g, n);
        if (e > *worst) *worst = e;
        free(y);
        free_case(&z);
    }
    zl_zimage_free(m);
    return 0;
}

TEST(zimage_parity_every_layout_f32) {
    CHECK_MSG(weights_present(), "tiny model weights missing: run `make zimage-weights`");
    const char *cfgs[] = {"tiny_a", "tiny_b"};
    const char *layouts[] = {"diffusers", "diffusers/transformer", "diffusers_single.safetensors", "comfy.safetensors",
                             "diffusers/transformer/diffusion_pytorch_model.safetensors.index.json"};
    for (int c = 0; c < 2; c++)
        for (int l = 0; l < 5; l++) {
            char p[256];
            snprintf(p, sizeof p, DATA "/%s/%s", cfgs[c], layouts[l]);
            double worst;
            CHECK_MSG(run_cases(cfgs[c], p, ZL_F32, "out", &worst) == 0, "%s", p);
            CHECK_MSG(worst <= TOL, "%s: rel err %.3g", p, worst);
        }
}

TEST(zimage_parity_bf16_weights) {
    CHECK_MSG(weights_present(), "run `make zimage-weights`");
    double worst;
    /* a BF16 file with the model.diffusion_model. prefix, kept as BF16 (zero copy) or upcast to F32 */
    CHECK(run_cases("tiny_a", DATA "/tiny_a/comfy_prefixed_bf16.safetensors", ZL_BF16, "out_bf16", &worst) == 0);
    CHECK_MSG(worst <= TOL, "bf16 file, bf16 weights: %.3g", worst);
    CHECK(run_cases("tiny_a", DATA "/tiny_a/comfy_prefixed_bf16.safetensors", ZL_F32, "out_bf16", &worst) == 0);
    CHECK_MSG(worst <= TOL, "bf16 file, f32 weights: %.3g", worst);
    /* an F32 file converted to BF16 while loading holds bitwise the reference's bf16 values (round to
     * nearest even), and its output differs from the f32 golden by bf16 rounding (the test can fail) */
    zl_zimage_opts o = {.weight_dtype = ZL_BF16};
    zl_zimage *a, *b;
    CHECK(zl_zimage_load(DATA "/tiny_a/diffusers", &o, &a) == 0);
    CHECK(zl_zimage_load(DATA "/tiny_a/comfy_prefixed_bf16.safetensors", &o, &b) == 0);
    const zl_linear *la[] = {&a->layers[1].k, &a->layers[0].w2, &a->ctx_ref[0].v, &a->final_lin};
    const zl_linear *lb[] = {&b->layers[1].k, &b->layers[0].w2, &b->ctx_ref[0].v, &b->final_lin};
    for (int i = 0; i < 4; i++) {
        CHECK(la[i]->dtype == ZL_BF16 && lb[i]->dtype == ZL_BF16 && la[i]->out == lb[i]->out && la[i]->in == lb[i]->in);
        CHECK_MSG(memcmp(la[i]->w, lb[i]->w, (size_t)la[i]->out * la[i]->in * 2) == 0, "weight %d differs", i);
    }
    zl_zimage_free(a);
    zl_zimage_free(b);
    CHECK(run_cases("tiny_a", DATA "/tiny_a/diffusers", ZL_BF16, "out", &worst) == 0);
    CHECK_MSG(worst > 1e-3 && worst < 3e-2, "bf16 weights vs the f32 golden: %.3g", worst);
}

/* LoRA parity: each file at its golden's strength, merged and runtime. */
TEST(zimage_parity_loras_merged_and_runtime) {
    CHECK_MSG(weights_present(), "run `make zimage-weights`");
    struct { const char *name; float s; } ls[] = {{"aitk", 1.0f}, {"kohya", 0.8f}, {"comfy_qkv", 1.0f}, {"lokr", 1.0f},
                                                  {"loha", 1.0f}, {"peft", 1.0f}};
    for (size_t i = 0; i < sizeof ls / sizeof *ls; i++)
        for (int merge = 0; merge < 2; merge++) {
            char p[256];
            snprintf(p, sizeof p, DATA "/tiny_a/lora/lora_%s.safetensors", ls[i].name);
            zl_lora *l;
            CHECK_MSG(zl_lora_load(p, &l) == 0, "%s", zl_last_error());
            zl_zimage_opts o = {.weight_dtype = ZL_F32};
            zl_zimage *m;
            CHECK(zl_zimage_load(DATA "/tiny_a/comfy.safetensors", &o, &m) == 0);
            int rc = zl_zimage_apply_loras(m, &l, &ls[i].s, 1, merge, 0, NULL);
            CHECK_MSG(rc == 0, "%s: %s", ls[i].name, zl_last_error());
            double worst = 0;
            for (int c = 0; c < 3; c++) {
                zcase z;
                CHECK(load_case("tiny_a", c, &z) == 0);
                size_t n = (size_t)16 * z.H * z.W;
                float *y = malloc(sizeof(float) * n);
                CHECK(zl_zimage_forward(m, z.x, z.H, z.W, z.t[0], z.cap, z.L, y) == 0);
                char g[64];
                snprintf(g, sizeof g, "out_lora_%s_case%d", ls[i].name, c);
                double e = rel_err(y, "tiny_a", g, n);
                if (e > worst) worst = e;
                free(y);
                free_case(&z);
            }
            zl_zimage_free(m);
            zl_lora_free(l);
            CHECK_MSG(worst <= TOL, "%s %s: rel err %.3g", ls[i].name, merge ? "merged" : "runtime", worst);
        }
}

TEST(zimage_parity_lora_stack_negative) {
    CHECK_MSG(weights_present(), "run `make zimage-weights`");
    for (int merge = 0; merge < 2; merge++) {
        zl_lora *l[2];
        CHECK(zl_lora_load(DATA "/tiny_a/lora/lora_aitk.safetensors", &l[0]) == 0);
        CHECK(zl_lora_load(DATA "/tiny_a/lora/lora_comfy_qkv.safetensors", &l[1]) == 0);
        float s[2] = {1.0f, -0.5f};
        zl_zimage_opts o = {.weight_dtype = ZL_F32};
        zl_zimage *m;
        CHECK(zl_zimage_load(DATA "/tiny_a/diffusers", &o, &m) == 0);
        CHECK(zl_zimage_apply_loras(m, l, s, 2, merge, 0, NULL) == 0);
        zcase z;
        CHECK(load_case("tiny_a", 1, &z) == 0);
        size_t n = (size_t)16 * z.H * z.W;
        float *y = malloc(sizeof(float) * n);
        CHECK(zl_zimage_forward(m, z.x, z.H, z.W, z.t[0], z.cap, z.L, y) == 0);
        double e = rel_err(y, "tiny_a", "out_lora_stack_case1", n);
        free(y); free_case(&z);
        zl_zimage_free(m);
        zl_lora_free(l[0]); zl_lora_free(l[1]);
        CHECK_MSG(e <= TOL, "stack %s: %.3g", merge ? "merged" : "runtime", e);
    }
}

TEST(zimage_cli_debug_dit) {
    CHECK_MSG(weights_present(), "run `make zimage-weights`");
    char cmd[1024], out[512];
    snprintf(out, sizeof out, "%s/dit_out.safetensors", zl_test_dir());
    snprintf(cmd, sizeof cmd, "%s -q debug dit --model " DATA "/tiny_b/diffusers --weights f32 --in " DATA "/tiny_b/in_case1.safetensors --out %s 2>&1",
             zl_test_bin(), out);
    char *txt = NULL;
    int rc = zl_test_run(cmd, &txt);
    CHECK_MSG(rc == 0, "%s", txt ? txt : "");
    free(txt);
    zl_st *st;
    CHECK(zl_st_open(out, &st) == 0);
    const zl_tensor_info *t = zl_st_find(st, "out");
    CHECK(t && t->ndim == 3 && t->shape[0] == 16);
    float *y = zl_st_read_f32(st, t);
    double e = rel_err(y, "tiny_b", "out_case1", (size_t)t->nelem);
    free(y);
    zl_st_close(st);
    CHECK_MSG(e <= TOL, "cli: %.3g", e);
    /* with a LoRA at runtime, through the CLI */
    snprintf(cmd, sizeof cmd, "%s -q debug dit --model " DATA "/tiny_a/comfy.safetensors --weights f32 --lora " DATA
             "/tiny_a/lora/lora_kohya.safetensors:0.8 --lora-mode runtime --in " DATA "/tiny_a/in_case0.safetensors --out %s 2>&1",
             zl_test_bin(), out);
    rc = zl_test_run(cmd, &txt);
    CHECK_MSG(rc == 0, "%s", txt ? txt : "");
    free(txt);
    CHECK(zl_st_open(out, &st) == 0);
    t = zl_st_find(st, "out");
    y = zl_st_read_f32(st, t);
    e = rel_err(y, "tiny_a", "out_lora_kohya_case0", (size_t)t->nelem);
    free(y);
    zl_st_close(st);
    CHECK_MSG(e <= TOL, "cli lora: %.3g", e);
}

TEST(zimage_refuses_wrong_files) {
    zl_zimage *m = NULL;
    /* a LoRA file */
    CHECK(zl_zimage_load(DATA "/tiny_a/lora/lora_aitk.safetensors", NULL, &m) != 0);
    CHECK_MSG(strstr(zl_last_error(), "LoRA"), "%s", zl_last_error());
    /* a partial checkpoint: one shard of two, without its index */
    if (weights_present()) {
        char p[512];
        snprintf(p, sizeof p, "%s/partial.safetensors", zl_test_dir());
        zl_st *st;
        CHECK(zl_st_open(DATA "/tiny_a/diffusers_single.safetensors", &st) == 0);
        zl_st_writer *w = zl_stw_new();
        for (int i = 0; i < zl_st_count(st); i++) {
            const zl_tensor_info *t = zl_st_tensor(st, i);
            if (strstr(t->name, "layers.1.feed_forward.w2") || strstr(t->name, "ffn_norm2")) continue;
            zl_stw_add(w, t->name, t->dtype, t->ndim, t->shape, t->data);
        }
        zl_st_close(st);
        CHECK(zl_stw_write(w, p) == 0);
        zl_stw_free(w);
        CHECK(zl_zimage_load(p, NULL, &m) != 0);
        CHECK_MSG(strstr(zl_last_error(), "missing") && strstr(zl_last_error(), "layers.1.feed_forward.w2"), "%s", zl_last_error());
        /* a Lumina-2-like file: Z-Image names at another width with norm_final */
        w = zl_stw_new();
        float v[8] = {0};
        int64_t s1[1] = {8};
        zl_stw_add_f32(w, "norm_final.weight", 1, s1, v, ZL_F32);
        zl_stw_add_f32(w, "layers.0.adaLN_modulation.1.bias", 1, s1, v, ZL_F32);
        CHECK(zl_stw_write(w, p) == 0);
        zl_stw_free(w);
        CHECK(zl_zimage_load(p, NULL, &m) != 0);
        CHECK_MSG(strstr(zl_last_error(), "Lumina"), "%s", zl_last_error());
    }
    CHECK(m == NULL);
}

/* The streaming writers: a random checkpoint in the diffusers layout (as the full-size benchmark makes
 * it), converted to one bf16 file by convert-model, both load and give close outputs. */
TEST(zimage_random_checkpoint_and_convert_model) {
    char dir[512], bf[512], cmd[2048];
    snprintf(dir, sizeof dir, "%s/rand", zl_test_dir());
    snprintf(bf, sizeof bf, "%s/rand_bf16.safetensors", zl_test_dir());
    snprintf(cmd, sizeof cmd, "%s -q debug random-dit %s --dim 64 --head 32 --layers 2 --refiners 1 --cap 32 --shards 3 --dtype f32 2>&1 && "
             "%s -q convert-model %s %s --dtype bf16 2>&1", zl_test_bin(), dir, zl_test_bin(), dir, bf);
    char *txt = NULL;
    CHECK_MSG(zl_test_run(cmd, &txt) == 0, "%s", txt ? txt : "");
    free(txt);
    zl_zimage_opts o32 = {.weight_dtype = ZL_F32}, o16 = {.weight_dtype = ZL_BF16};
    zl_zimage *a, *b;
    CHECK_MSG(zl_zimage_load(dir, &o32, &a) == 0, "%s", zl_last_error());
    CHECK_MSG(zl_zimage_load(bf, &o16, &b) == 0, "%s", zl_last_error());
    CHECK(a->cfg.dim == 64 && a->cfg.n_layers == 2 && a->cfg.head_dim == 32 && a->cfg.cap_feat_dim == 32);
    CHECK(b->cfg.dim == 64 && b->cfg.n_heads == 2 && b->cfg.axes_dims[0] == 8 && b->cfg.axes_dims[1] == 12);
    zl_rng r = {5};
    int H = 8, W = 6, L = 5;
    float x[16 * 8 * 6], cap[5 * 32], ya[16 * 8 * 6], yb[16 * 8 * 6];
    for (int i = 0; i < 16 * H * W; i++) x[i] = zl_rng_normal(&r);
    for (int i = 0; i < L * 32; i++) cap[i] = zl_rng_normal(&r);
    CHECK(zl_zimage_forward(a, x, H, W, 0.4f, cap, L, ya) == 0);
    CHECK(zl_zimage_forward(b, x, H, W, 0.4f, cap, L, yb) == 0);
    double num = 0, den = 0;
    for (int i = 0; i < 16 * H * W; i++) { CHECK(isfinite(yb[i])); num += (ya[i] - yb[i]) * (ya[i] - yb[i]); den += ya[i] * ya[i]; }
    CHECK_MSG(den > 0 && sqrt(num / den) < 3e-2 && num > 0, "rel %.3g", sqrt(num / (den > 0 ? den : 1)));
    zl_zimage_free(a);
    zl_zimage_free(b);
}

/* A LoRA file of full diffs: a norm vector, a linear with its bias (diff + diff_b), for removal tests. */
static int write_diff_lora(const char *path, int dim, int cap) {
    zl_st_writer *w = zl_stw_new();
    float *v = malloc(sizeof(float) * (size_t)dim * cap);
    for (int i = 0; i < dim * cap; i++) v[i] = 0.01f * (float)((i * 37) % 11 - 5);
    int64_t s1[1] = {dim}, s2[2] = {dim, cap};
    int rc = zl_stw_add_f32(w, "diffusion_model.layers.0.attention_norm1.diff", 1, s1, v, ZL_F32);
    if (!rc) rc = zl_stw_add_f32(w, "diffusion_model.cap_embedder.1.diff", 2, s2, v, ZL_F32);
    if (!rc) rc = zl_stw_add_f32(w, "diffusion_model.cap_embedder.1.diff_b", 1, s1, v, ZL_F32);
    if (!rc) rc = zl_stw_write(w, path);
    zl_stw_free(w);
    free(v);
    return rc;
}

TEST(zimage_remove_loras_restores_the_model_exactly) {
    CHECK_MSG(weights_present(), "run `make zimage-weights`");
    char diff[600];
    snprintf(diff, sizeof diff, "%s/diff_lora.safetensors", zl_test_dir());
    zl_zimage *m;
    CHECK(zl_zimage_load(DATA "/tiny_a/diffusers", NULL, &m) == 0); /* bf16 weights, as generate and compare use */
    CHECK(write_diff_lora(diff, m->cfg.dim, m->cfg.cap_feat_dim) == 0);
    zl_lora *l[3];
    CHECK(zl_lora_load(DATA "/tiny_a/lora/lora_peft.safetensors", &l[0]) == 0);
    CHECK(zl_lora_load(DATA "/tiny_a/lora/lora_loha.safetensors", &l[1]) == 0); /* a dense runtime delta */
    CHECK(zl_lora_load(diff, &l[2]) == 0);
    float s[3] = {1.3f, 0.7f, 0.5f};
    zcase z;
    CHECK(load_case("tiny_a", 0, &z) == 0);
    size_t n = (size_t)16 * z.H * z.W;
    float *y0 = malloc(sizeof(float) * n), *y1 = malloc(sizeof(float) * n), *y = malloc(sizeof(float) * n);
    CHECK(zl_zimage_forward(m, z.x, z.H, z.W, z.t[0], z.cap, z.L, y0) == 0);
    int nowned = m->nowned;
    for (int round = 0; round < 2; round++) {
        CHECK(zl_zimage_apply_loras(m, l, s, 3, 0, 0, NULL) == 0);
        CHECK(m->nundo == 2); /* the norm vector and the bias */
        CHECK(zl_zimage_forward(m, z.x, z.H, z.W, z.t[0], z.cap, z.L, round ? y : y1) == 0);
        if (round) CHECK(memcmp(y, y1, sizeof(float) * n) == 0); /* applied again: the same result */
        CHECK(zl_zimage_remove_loras(m) == 0);
        CHECK(m->nowned == nowned && m->nundo == 0);
        CHECK(zl_zimage_forward(m, z.x, z.H, z.W, z.t[0], z.cap, z.L, y) == 0);
        CHECK_MSG(memcmp(y, y0, sizeof(float) * n) == 0, "round %d: not the model as loaded", round);
    }
    CHECK(memcmp(y1, y0, sizeof(float) * n) != 0);
    /* merged LoRAs cannot be removed exactly: refused */
    CHECK(zl_zimage_apply_loras(m, l, s, 1, 1, 0, NULL) == 0);
    CHECK(zl_zimage_remove_loras(m) != 0 && strstr(zl_last_error(), "merged"));
    free(y0); free(y1); free(y); free_case(&z);
    zl_zimage_free(m);
    for (int i = 0; i < 3; i++) zl_lora_free(l[i]);
}
