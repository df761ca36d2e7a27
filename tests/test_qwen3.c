/* test_qwen3.c — the Qwen3 text encoder against the independent PyTorch reference
 * (tests/ref/qwen3_ref.py; goldens in tests/data/qwen3, see its README): every checkpoint layout and
 * prefix, both tiny configs, F32 and BF16 weights (zero copy), the batched helper, causality, layers that
 * must never be read, refusals of wrong files and bad ids, and `debug te --ids`.
 * Tolerance: relative L2 <= 1e-4 (the reference's float64 loop implementation agrees to 3e-7). */
#include "test.h"
#include "base/base.h"
#include "cli/cmd_te.h"
#include "io/safetensors.h"
#include "model/qwen3.h"

#include <fcntl.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define DATA "tests/data/qwen3"
#define TOL 1e-4

/* The weight files are git-ignored; recreate them (numpy only, < 1 s) when one is missing. */
static int weights_ready(void) {
    static const char *files[] = {
        DATA "/tiny_a/text_encoder/model-00001-of-00002.safetensors", DATA "/tiny_a/text_encoder/model-00002-of-00002.safetensors",
        DATA "/tiny_a/qwen_3_4b.safetensors", DATA "/tiny_b/text_encoder/model-00001-of-00002.safetensors",
        DATA "/tiny_b/text_encoder/model-00002-of-00002.safetensors", DATA "/tiny_b/model_bare.safetensors",
        DATA "/tiny_b/comfy_bf16.safetensors"};
    int have = 1;
    for (size_t i = 0; i < sizeof files / sizeof *files; i++) have &= zl_file_exists(files[i]);
    if (have) return 1;
    const char *py = getenv("PYTHON");
    char cmd[512];
    snprintf(cmd, sizeof cmd, "%s tests/ref/qwen3_ref.py --out " DATA " --weights-only 2>&1",
             py && *py ? py : zl_file_exists("/usr/bin/python3") ? "/usr/bin/python3" : "python3");
    char *txt = NULL;
    int rc = zl_test_run(cmd, &txt);
    if (rc) fprintf(stderr, "    %s: %s\n", cmd, txt ? txt : "");
    free(txt);
    return rc == 0;
}

static int32_t *load_ids(const char *cfg, int c, int *n) {
    char p[256];
    snprintf(p, sizeof p, DATA "/%s/in_case%d.safetensors", cfg, c);
    zl_st *st;
    if (zl_st_open(p, &st)) return NULL;
    const zl_tensor_info *t = zl_st_find(st, "ids");
    int32_t *ids = NULL;
    if (t && t->dtype == ZL_I32 && t->ndim == 1) {
        *n = (int)t->shape[0];
        ids = malloc(sizeof(int32_t) * (size_t)*n);
        memcpy(ids, t->data, sizeof(int32_t) * (size_t)*n);
    }
    zl_st_close(st);
    return ids;
}

/* Relative L2 distance between y [n] and golden `name` (tensor "out") of cfg. */
static double rel_err(const float *y, const char *cfg, const char *name, size_t n) {
    char p[256];
    snprintf(p, sizeof p, DATA "/%s/%s.safetensors", cfg, name);
    return zl_test_golden_rel_l2(y, p, "out", n);
}

/* Worst relative error of the 3 cases of cfg on a loaded model against golden prefix gold. */
static double run_model(zl_qwen3 *m, const char *cfg, const char *gold) {
    double worst = 0;
    for (int c = 0; c < 3; c++) {
        int n;
        int32_t *ids = load_ids(cfg, c, &n);
        if (!ids) return 1e9;
        float *y = malloc(sizeof(float) * (size_t)n * m->cfg.hidden);
        char g[64];
        snprintf(g, sizeof g, "%s_case%d", gold, c);
        double e = zl_qwen3_encode(m, ids, n, y) ? 1e9 : rel_err(y, cfg, g, (size_t)n * m->cfg.hidden);
        if (e > worst) worst = e;
        free(y);
        free(ids);
    }
    return worst;
}

static double run_path(const char *cfg, const char *path, zl_dtype wd, const char *gold) {
    zl_qwen3_opts o = {.weight_dtype = wd};
    zl_qwen3 *m;
    if (zl_qwen3_load(path, &o, &m)) { fprintf(stderr, "    load %s: %s\n", path, zl_last_error()); return 1e9; }
    double e = run_model(m, cfg, gold);
    zl_qwen3_free(m);
    return e;
}

TEST(qwen3_parity_every_layout_f32) {
    CHECK_MSG(weights_ready(), "tiny encoder weights missing: run tests/ref/qwen3_ref.py --weights-only");
    struct { const char *cfg, *path, *gold; } cases[] = {
        {"tiny_a", DATA "/tiny_a", "out"},                       /* model folder holding text_encoder/ */
        {"tiny_a", DATA "/tiny_a/text_encoder", "out"},          /* HF folder: config.json + 2 shards + index */
        {"tiny_a", DATA "/tiny_a/text_encoder/model.safetensors.index.json", "out"},
        {"tiny_a", DATA "/tiny_a/qwen_3_4b.safetensors", "out_default"}, /* ComfyUI-style prefix, no config */
        {"tiny_b", DATA "/tiny_b", "out"},
        {"tiny_b", DATA "/tiny_b/text_encoder", "out"},
        {"tiny_b", DATA "/tiny_b/model_bare.safetensors", "out"},  /* no prefix, config from shapes */
        {"tiny_b", DATA "/tiny_b/comfy_bf16.safetensors", "out_bf16"}, /* bf16 file widened to F32 */
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        double e = run_path(cases[i].cfg, cases[i].path, ZL_F32, cases[i].gold);
        CHECK_MSG(e <= TOL, "%s: rel err %.3g", cases[i].path, e);
    }
    /* what the loader found */
    zl_qwen3_opts o = {.weight_dtype = ZL_F32};
    zl_qwen3 *m;
    CHECK(zl_qwen3_load(DATA "/tiny_a", &o, &m) == 0);
    CHECK(!strcmp(m->prefix, "model.") && m->have_config_json && m->cfg.hidden == 64 && m->cfg.n_layers == 4 && m->n_run == 3);
    CHECK(m->cfg.n_heads == 4 && m->cfg.n_kv_heads == 2 && m->cfg.head_dim == 16 && m->cfg.ffn == 96 && m->cfg.vocab == 1000);
    CHECK(m->cfg.rope_theta == 10000.0 && m->cfg.eps == 1e-5f);
    zl_qwen3_free(m);
    CHECK(zl_qwen3_load(DATA "/tiny_a/qwen_3_4b.safetensors", &o, &m) == 0);
    CHECK(!strcmp(m->prefix, "text_encoders.qwen3_4b.transformer.model.") && !m->have_config_json && m->cfg.n_layers == 4);
    CHECK(m->cfg.rope_theta == 1e6 && m->cfg.eps == 1e-6f);
    zl_qwen3_free(m);
    CHECK(zl_qwen3_load(DATA "/tiny_b/comfy_bf16.safetensors", &o, &m) == 0);
    CHECK(!strcmp(m->prefix, "transformer.model.") && m->cfg.hidden == 96 && m->cfg.n_heads == 4 && m->cfg.n_kv_heads == 1);
    CHECK(m->cfg.head_dim == 32 && m->cfg.ffn == 160 && m->cfg.n_layers == 3 && m->n_run == 2);
    CHECK(m->layers[0].q.dtype == ZL_F32 && m->embed_dtype == ZL_BF16); /* bf16 table kept, rows widened exactly */
    zl_qwen3_free(m);
}

TEST(qwen3_parity_bf16_weights) {
    CHECK_MSG(weights_ready(), "tiny encoder weights missing");
    /* a BF16 file kept as BF16: zero copy, against the golden computed from bf16-rounded weights */
    zl_qwen3 *b, *a;
    zl_qwen3_opts o16 = {.weight_dtype = ZL_BF16};
    CHECK(zl_qwen3_load(DATA "/tiny_b/comfy_bf16.safetensors", &o16, &b) == 0);
    CHECK(b->layers[0].q.dtype == ZL_BF16 && b->embed_dtype == ZL_BF16);
    CHECK(b->layers[0].q.w == zl_st_find(b->st, "transformer.model.layers.0.self_attn.q_proj.weight")->data);
    CHECK(b->layers[1].down.w == zl_st_find(b->st, "transformer.model.layers.1.mlp.down_proj.weight")->data);
    CHECK(b->embed == zl_st_find(b->st, "transformer.model.embed_tokens.weight")->data);
    double e = run_model(b, "tiny_b", "out_bf16");
    CHECK_MSG(e <= TOL, "bf16 file, bf16 weights: %.3g", e);
    /* an F32 file converted to BF16 while loading holds bitwise the reference's bf16 values, and its
     * output differs from the f32 golden by bf16 rounding (its norm weights stay f32: not the bf16 golden) */
    CHECK(zl_qwen3_load(DATA "/tiny_b/text_encoder", &o16, &a) == 0);
    const zl_linear *la[] = {&a->layers[0].q, &a->layers[0].k, &a->layers[1].o, &a->layers[1].up, &a->layers[0].down};
    const zl_linear *lb[] = {&b->layers[0].q, &b->layers[0].k, &b->layers[1].o, &b->layers[1].up, &b->layers[0].down};
    for (int i = 0; i < 5; i++) {
        CHECK(la[i]->dtype == ZL_BF16 && la[i]->out == lb[i]->out && la[i]->in == lb[i]->in);
        CHECK_MSG(memcmp(la[i]->w, lb[i]->w, (size_t)la[i]->out * la[i]->in * 2) == 0, "weight %d differs", i);
    }
    CHECK(a->embed_dtype == ZL_BF16 && memcmp(a->embed, b->embed, (size_t)1000 * 96 * 2) == 0);
    e = run_model(a, "tiny_b", "out");
    CHECK_MSG(e > 1e-4 && e < 3e-2, "f32 file as bf16 vs the f32 golden: %.3g", e);
    zl_qwen3_free(a);
    zl_qwen3_free(b);
}

TEST(qwen3_batch_and_causal) {
    CHECK_MSG(weights_ready(), "tiny encoder weights missing");
    zl_qwen3_opts o = {.weight_dtype = ZL_F32};
    zl_qwen3 *m;
    CHECK(zl_qwen3_load(DATA "/tiny_a/text_encoder", &o, &m) == 0);
    int32_t *ids[3];
    int lens[3];
    float *out[3];
    for (int c = 0; c < 3; c++) {
        /* longest first, so the scratch sized for 37 tokens is reused for shorter prompts */
        ids[c] = load_ids("tiny_a", 2 - c, &lens[c]);
        CHECK(ids[c]);
        out[c] = malloc(sizeof(float) * (size_t)lens[c] * 64);
    }
    CHECK(lens[0] == 37 && lens[1] == 13 && lens[2] == 8);
    CHECK(zl_qwen3_encode_batch(m, (const int32_t *const *)ids, lens, 3, out) == 0);
    for (int c = 0; c < 3; c++) {
        char g[32];
        snprintf(g, sizeof g, "out_case%d", 2 - c);
        double e = rel_err(out[c], "tiny_a", g, (size_t)lens[c] * 64);
        CHECK_MSG(e <= TOL, "batch item %d: %.3g", c, e);
    }
    /* causal: a prefix gives the first rows; a token changes nothing before it */
    float *p = malloc(sizeof(float) * 10 * 64);
    CHECK(zl_qwen3_encode(m, ids[0], 10, p) == 0);
    double md = 0;
    for (int i = 0; i < 10 * 64; i++) md = fmax(md, fabs(p[i] - out[0][i]));
    CHECK_MSG(md < 1e-4, "prefix max |diff| %.3g", md);
    ids[0][10] = (ids[0][10] + 1) % 1000;
    float *q = malloc(sizeof(float) * 37 * 64);
    CHECK(zl_qwen3_encode(m, ids[0], 37, q) == 0);
    md = 0;
    double later = 0;
    for (int i = 0; i < 37 * 64; i++) {
        if (i < 10 * 64) md = fmax(md, fabs(q[i] - out[0][i]));
        else later = fmax(later, fabs(q[i] - out[0][i]));
    }
    CHECK_MSG(md < 1e-4 && later > 1e-2, "changed token 10: before %.3g, after %.3g", md, later);
    /* bad input in any prompt fails the batch with a message naming it */
    ids[2][3] = 1000;
    CHECK(zl_qwen3_encode_batch(m, (const int32_t *const *)ids, lens, 3, out) != 0);
    CHECK_MSG(strstr(zl_last_error(), "prompt 3") && strstr(zl_last_error(), "vocabulary"), "%s", zl_last_error());
    CHECK(zl_qwen3_encode(m, ids[2], 8, out[2]) != 0);
    CHECK(zl_qwen3_encode(m, ids[1], 0, out[1]) != 0 && strstr(zl_last_error(), "no tokens"));
    ids[2][3] = -1;
    CHECK(zl_qwen3_encode(m, ids[2], 8, out[2]) != 0);
    free(p); free(q);
    for (int c = 0; c < 3; c++) { free(ids[c]); free(out[c]); }
    zl_qwen3_free(m);
}

/* Copies src's tensors except those whose name starts with one of skip[] into path. */
static int copy_without(const char *src, const char *path, const char *const *skip, int nskip) {
    zl_st *st;
    if (zl_st_open(src, &st)) return -1;
    zl_st_writer *w = zl_stw_new();
    for (int i = 0; i < zl_st_count(st); i++) {
        const zl_tensor_info *t = zl_st_tensor(st, i);
        int drop = 0;
        for (int k = 0; k < nskip; k++) drop |= zl_starts_with(t->name, skip[k]);
        if (!drop) zl_stw_add(w, t->name, t->dtype, t->ndim, t->shape, t->data);
    }
    zl_st_close(st);
    int rc = zl_stw_write(w, path);
    zl_stw_free(w);
    return rc;
}

static int write_text(const char *path, const char *text) {
    FILE *f = fopen(path, "wb");
    if (!f) return -1;
    fputs(text, f);
    return fclose(f);
}

/* The last layer, the final norm and lm_head are never read: a text_encoder folder without them
 * (config.json still says 3 layers) gives the same output. */
TEST(qwen3_last_layer_never_read) {
    CHECK_MSG(weights_ready(), "tiny encoder weights missing");
    char dir[512], p[600], cmd[1200];
    snprintf(dir, sizeof dir, "%s/te_trim", zl_test_dir());
    snprintf(cmd, sizeof cmd, "mkdir -p %s && cp " DATA "/tiny_b/text_encoder/config.json %s/", dir, dir);
    CHECK(system(cmd) == 0);
    snprintf(p, sizeof p, "%s/model.safetensors", dir);
    const char *skip[] = {"layers.2.", "norm.weight"};
    CHECK(copy_without(DATA "/tiny_b/model_bare.safetensors", p, skip, 2) == 0);
    zl_st *st;
    CHECK(zl_st_open(p, &st) == 0);
    CHECK(zl_st_find(st, "layers.1.post_attention_layernorm.weight") && !zl_st_find(st, "norm.weight") &&
          !zl_st_find(st, "layers.2.input_layernorm.weight"));
    zl_st_close(st);
    double e = run_path("tiny_b", dir, ZL_F32, "out");
    CHECK_MSG(e <= TOL, "trimmed: %.3g", e);
}

TEST(qwen3_refuses_wrong_files) {
    zl_qwen3 *m = NULL;
    char p[600], dir[512], cmd[1200];
    /* a Z-Image LoRA (committed) */
    CHECK(zl_qwen3_load("tests/data/zimage/tiny_a/lora/lora_aitk.safetensors", NULL, &m) != 0);
    CHECK_MSG(strstr(zl_last_error(), "not a Qwen3 text encoder") && strstr(zl_last_error(), "LoRA"), "%s", zl_last_error());
    /* a Qwen3 LoRA (PEFT names on the encoder) */
    snprintf(p, sizeof p, "%s/te_lora.safetensors", zl_test_dir());
    float v[64] = {0};
    int64_t s2[2] = {4, 16}, s1[1] = {16};
    zl_st_writer *w = zl_stw_new();
    zl_stw_add_f32(w, "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight", 2, s2, v, ZL_F32);
    zl_stw_add_f32(w, "base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight", 2, s2, v, ZL_F32);
    CHECK(zl_stw_write(w, p) == 0);
    zl_stw_free(w);
    CHECK(zl_qwen3_load(p, NULL, &m) != 0);
    CHECK_MSG(strstr(zl_last_error(), "LoRA"), "%s", zl_last_error());
    /* a DiT and a VAE (names only) */
    const char *dit[] = {"cap_embedder.1.weight", "layers.0.attention.qkv.weight", "x_embedder.weight"};
    const char *vae[] = {"encoder.down.0.block.0.conv1.weight", "decoder.up.0.block.0.conv1.weight", "decoder.mid.attn_1.k.weight"};
    for (int k = 0; k < 2; k++) {
        w = zl_stw_new();
        for (int i = 0; i < 3; i++) zl_stw_add_f32(w, (k ? vae : dit)[i], 1, s1, v, ZL_F32);
        CHECK(zl_stw_write(w, p) == 0);
        zl_stw_free(w);
        CHECK(zl_qwen3_load(p, NULL, &m) != 0);
        CHECK_MSG(strstr(zl_last_error(), k ? "VAE" : "DiT"), "%s", zl_last_error());
    }
    /* a Qwen2-style model: embed_tokens and attention biases, no q_norm */
    w = zl_stw_new();
    zl_stw_add_f32(w, "model.embed_tokens.weight", 2, s2, v, ZL_F32);
    zl_stw_add_f32(w, "model.layers.0.self_attn.q_proj.weight", 2, s2, v, ZL_F32);
    zl_stw_add_f32(w, "model.layers.0.self_attn.q_proj.bias", 1, s1, v, ZL_F32);
    CHECK(zl_stw_write(w, p) == 0);
    zl_stw_free(w);
    CHECK(zl_qwen3_load(p, NULL, &m) != 0);
    CHECK_MSG(strstr(zl_last_error(), "q_norm") && strstr(zl_last_error(), "Qwen2"), "%s", zl_last_error());
    if (weights_ready()) {
        /* a tensor missing from a middle layer */
        const char *skip[] = {"layers.1.mlp.down_proj", "layers.0.self_attn.k_norm"};
        CHECK(copy_without(DATA "/tiny_b/model_bare.safetensors", p, skip, 2) == 0);
        CHECK(zl_qwen3_load(p, NULL, &m) != 0);
        CHECK_MSG(strstr(zl_last_error(), "2 tensor(s) missing") && strstr(zl_last_error(), "layers.1.mlp.down_proj.weight") &&
                  strstr(zl_last_error(), "layers.0.self_attn.k_norm.weight"), "%s", zl_last_error());
        /* one shard of two, without its index: the second has no embedding, the first no last layer or norm */
        CHECK(zl_qwen3_load(DATA "/tiny_b/text_encoder/model-00002-of-00002.safetensors", NULL, &m) != 0);
        CHECK_MSG(strstr(zl_last_error(), "not a Qwen3 text encoder"), "%s", zl_last_error());
        CHECK(zl_qwen3_load(DATA "/tiny_b/text_encoder/model-00001-of-00002.safetensors", NULL, &m) != 0);
        CHECK_MSG(strstr(zl_last_error(), "one shard of several"), "%s", zl_last_error());
        /* a config.json that disagrees with the tensors */
        snprintf(dir, sizeof dir, "%s/te_badcfg", zl_test_dir());
        snprintf(cmd, sizeof cmd, "mkdir -p %s && ln -sf $(pwd)/" DATA "/tiny_b/model_bare.safetensors %s/model.safetensors", dir, dir);
        CHECK(system(cmd) == 0);
        snprintf(p, sizeof p, "%s/config.json", dir);
        CHECK(write_text(p, "{\"hidden_size\": 96, \"num_hidden_layers\": 3, \"num_attention_heads\": 4, \"num_key_value_heads\": 1,"
                            " \"head_dim\": 32, \"intermediate_size\": 128}") == 0);
        CHECK(zl_qwen3_load(dir, NULL, &m) != 0);
        CHECK_MSG(strstr(zl_last_error(), "gate_proj.weight has shape [160,96], expected [128,96]"), "%s", zl_last_error());
        CHECK(write_text(p, "{\"hidden_size\": 96, \"num_attention_heads\": 3}") == 0);
        CHECK(zl_qwen3_load(dir, NULL, &m) != 0); /* head_dim 32 from hidden/heads, but q_proj has 4 heads */
        CHECK_MSG(strstr(zl_last_error(), "q_proj.weight has shape [128,96], expected [96,96]"), "%s", zl_last_error());
        CHECK(write_text(p, "{\"num_hidden_layers\": 5}") == 0);
        CHECK(zl_qwen3_load(dir, NULL, &m) != 0);
        CHECK_MSG(strstr(zl_last_error(), "says 5 layers, but the checkpoint has 3"), "%s", zl_last_error());
        CHECK(write_text(p, "{\"num_hidden_layers\": 4}") == 0); /* layer 3 is the last one: never read, may be absent */
        CHECK_MSG(zl_qwen3_load(dir, NULL, &m) == 0, "%s", zl_last_error());
        CHECK(m->n_run == 3 && m->cfg.n_layers == 4);
        zl_qwen3_free(m);
        m = NULL;
        CHECK(write_text(p, "{\"num_attention_heads\": 16777216, \"head_dim\": 16777216}") == 0);
        CHECK(zl_qwen3_load(dir, NULL, &m) != 0);
        CHECK_MSG(strstr(zl_last_error(), "unusable config"), "%s", zl_last_error());
        CHECK(write_text(p, "{\"hidden_size\": 96, \"num_hidden_layers\": -2}") == 0);
        CHECK(zl_qwen3_load(dir, NULL, &m) != 0);
        CHECK_MSG(strstr(zl_last_error(), "num_hidden_layers"), "%s", zl_last_error());
        CHECK(write_text(p, "{\"hidden_size\": 96,") == 0);
        CHECK(zl_qwen3_load(dir, NULL, &m) != 0);
        CHECK_MSG(strstr(zl_last_error(), "JSON"), "%s", zl_last_error());
        /* a Z-Image DiT folder given as the encoder */
        if (zl_file_exists("tests/data/zimage/tiny_a/comfy.safetensors")) {
            CHECK(zl_qwen3_load("tests/data/zimage/tiny_a/comfy.safetensors", NULL, &m) != 0);
            CHECK_MSG(strstr(zl_last_error(), "DiT"), "%s", zl_last_error());
        }
    }
    /* a Z-Image model folder without text_encoder/ */
    CHECK(zl_qwen3_load("tests/data/zimage/tiny_a/diffusers", NULL, &m) != 0);
    CHECK_MSG(strstr(zl_last_error(), "without text_encoder/"), "%s", zl_last_error());
    zl_qwen3_opts bad = {.weight_dtype = ZL_F16};
    CHECK(zl_qwen3_load(DATA "/tiny_b", &bad, &m) != 0);
    CHECK(m == NULL);
}

/* `debug te --ids` (called in-process: the library holds the command) */
TEST(qwen3_cli_debug_te_ids) {
    CHECK_MSG(weights_ready(), "tiny encoder weights missing");
    int n;
    int32_t *ids = load_ids("tiny_b", 1, &n);
    CHECK(ids && n == 13);
    char list[256] = "", out[512];
    for (int i = 0; i < n; i++) snprintf(list + strlen(list), sizeof list - strlen(list), "%s%d", i ? (i % 2 ? ", " : ",") : "", (int)ids[i]);
    snprintf(out, sizeof out, "%s/te_out.safetensors", zl_test_dir());
    char *argv[] = {"te", "--model", DATA "/tiny_b", "--weights", "f32", "--ids", list, "--out", out, NULL};
    int level = zl_log_level;
    zl_log_level = 0; /* as `zlora -q` */
    int rc = zl_cmd_debug_te(9, argv);
    zl_log_level = level;
    CHECK(rc == 0);
    zl_st *st;
    CHECK(zl_st_open(out, &st) == 0);
    const zl_tensor_info *cap = zl_st_find(st, "cap"), *ti = zl_st_find(st, "ids");
    CHECK(cap && cap->dtype == ZL_F32 && cap->ndim == 2 && cap->shape[0] == 13 && cap->shape[1] == 96);
    CHECK(ti && ti->dtype == ZL_I32 && ti->ndim == 1 && ti->shape[0] == 13 && memcmp(ti->data, ids, 13 * 4) == 0);
    double e = rel_err((const float *)cap->data, "tiny_b", "out_case1", 13 * 96);
    zl_st_close(st);
    CHECK_MSG(e <= TOL, "cli: %.3g", e);
    /* default bf16 weights on the bf16 file */
    char *argv2[] = {"te", "--model", DATA "/tiny_b/comfy_bf16.safetensors", "--ids", list, "--out", out, NULL};
    zl_log_level = 0;
    rc = zl_cmd_debug_te(7, argv2);
    zl_log_level = level;
    CHECK(rc == 0);
    CHECK(zl_st_open(out, &st) == 0);
    cap = zl_st_find(st, "cap");
    CHECK(cap && cap->nelem == 13 * 96);
    e = rel_err((const float *)cap->data, "tiny_b", "out_bf16_case1", 13 * 96);
    zl_st_close(st);
    CHECK_MSG(e <= TOL, "cli bf16: %.3g", e);
    free(ids);
    /* usage errors (2) and failures (1) */
    char *u1[] = {"te", "--model", DATA "/tiny_b", "--out", out, NULL};                              /* neither --ids nor --prompt */
    char *u2[] = {"te", "--model", DATA "/tiny_b", "--ids", "1", "--prompt", "x", "--out", out, NULL}; /* both */
    char *u3[] = {"te", "--model", DATA "/tiny_b", "--ids", "1", "--out", out, "--bogus", NULL};
    char *f1[] = {"te", "--model", DATA "/tiny_b", "--ids", "1,x", "--out", out, NULL};
    char *f2[] = {"te", "--model", DATA "/tiny_b", "--ids", "1,1000", "--out", out, NULL};
    char *f3[] = {"te", "--model", DATA "/tiny_b", "--prompt", "a cat", "--out", out, NULL}; /* no tokenizer/ here */
    char **calls[] = {u1, u2, u3, f1, f2, f3};
    int argcs[] = {5, 9, 8, 7, 7, 7}, want[] = {2, 2, 2, 1, 1, 1}, got[6];
    fflush(stderr);
    int saved = dup(2), null = open("/dev/null", O_WRONLY); /* the messages are expected: keep them out of the log */
    if (null >= 0) dup2(null, 2);
    zl_log_level = 0;
    for (int i = 0; i < 6; i++) got[i] = zl_cmd_debug_te(argcs[i], calls[i]);
    zl_log_level = level;
    fflush(stderr);
    if (saved >= 0) { dup2(saved, 2); close(saved); }
    if (null >= 0) close(null);
    for (int i = 0; i < 6; i++) CHECK_MSG(got[i] == want[i], "call %d: exit %d, expected %d", i, got[i], want[i]);
    CHECK(strstr(zl_last_error(), "tokenizer")); /* --prompt on a folder without tokenizer/ */
}

#if defined(__has_include)
#if __has_include("model/tokenizer.h") && __has_include("model/tokenizer.c")
#define QWEN3_TEST_TOKENIZER 1
#endif
#endif

#ifdef QWEN3_TEST_TOKENIZER
/* GPT-2's byte -> code point map (printable bytes map to themselves, the rest to 256 + their rank). */
static unsigned byte_cp(unsigned b) {
    int printable = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || b >= 174;
    if (printable) return b;
    unsigned r = 0;
    for (unsigned i = 0; i < b; i++) r += !((i >= 33 && i <= 126) || (i >= 161 && i <= 172) || i >= 174);
    return 256 + r;
}

/* Writes a byte-level tokenizer.json without merges (id = byte) whose template tokens <|im_start|> and
 * <|im_end|> have ids 900 and 901. */
static int write_byte_tokenizer(const char *path) {
    zl_buf b = {0};
    zl_buf_puts(&b, "{\"version\":\"1.0\",\"added_tokens\":[{\"id\":900,\"content\":\"<|im_start|>\",\"special\":true},"
                    "{\"id\":901,\"content\":\"<|im_end|>\",\"special\":true}],\"normalizer\":null,"
                    "\"pre_tokenizer\":{\"type\":\"ByteLevel\",\"add_prefix_space\":false,\"trim_offsets\":false,\"use_regex\":true},"
                    "\"model\":{\"type\":\"BPE\",\"vocab\":{");
    for (unsigned i = 0; i < 256; i++) {
        unsigned cp = byte_cp(i);
        char u[8];
        if (cp == '"' || cp == '\\') snprintf(u, sizeof u, "\\%c", (char)cp);
        else if (cp < 0x80) snprintf(u, sizeof u, "%c", (char)cp);
        else snprintf(u, sizeof u, "%c%c", (char)(0xC0 | (cp >> 6)), (char)(0x80 | (cp & 63)));
        zl_buf_printf(&b, "%s\"%s\":%u", i ? "," : "", u, i);
    }
    zl_buf_puts(&b, ",\"<|im_start|>\":900,\"<|im_end|>\":901},\"merges\":[]}}");
    int wr = write_text(path, b.s);
    zl_buf_free(&b);
    return wr;
}

/* `debug te --prompt` on a model folder: text_encoder/ (tiny_b) and tokenizer/tokenizer.json, a
 * byte-level tokenizer without merges (id = byte) whose template tokens have ids 900 and 901. */
TEST(qwen3_cli_debug_te_prompt) {
    CHECK_MSG(weights_ready(), "tiny encoder weights missing");
    char dir[512], p[700], cmd[1600], out[600];
    snprintf(dir, sizeof dir, "%s/te_model", zl_test_dir());
    snprintf(cmd, sizeof cmd, "mkdir -p %s/tokenizer && ln -sfn \"$(pwd)/" DATA "/tiny_b/text_encoder\" %s/text_encoder", dir, dir);
    CHECK(system(cmd) == 0);
    snprintf(p, sizeof p, "%s/tokenizer/tokenizer.json", dir);
    CHECK(write_byte_tokenizer(p) == 0);
    snprintf(out, sizeof out, "%s/te_prompt.safetensors", zl_test_dir());
    char *argv[] = {"te", "--model", dir, "--weights", "f32", "--prompt", "a cat", "--out", out, NULL};
    int level = zl_log_level;
    zl_log_level = 0;
    int rc = zl_cmd_debug_te(9, argv);
    zl_log_level = level;
    CHECK_MSG(rc == 0, "%s", zl_last_error());
    const char *text = "<|im_start|>user\na cat<|im_end|>\n<|im_start|>assistant\n";
    int32_t want[64];
    int nw = 0;
    for (const char *s = text; *s;) {
        if (!strncmp(s, "<|im_start|>", 12)) { want[nw++] = 900; s += 12; }
        else if (!strncmp(s, "<|im_end|>", 10)) { want[nw++] = 901; s += 10; }
        else want[nw++] = (unsigned char)*s++;
    }
    zl_st *st;
    CHECK(zl_st_open(out, &st) == 0);
    const zl_tensor_info *cap = zl_st_find(st, "cap"), *ti = zl_st_find(st, "ids");
    CHECK(ti && ti->ndim == 1 && ti->shape[0] == nw && memcmp(ti->data, want, sizeof(int32_t) * (size_t)nw) == 0);
    CHECK(cap && cap->ndim == 2 && cap->shape[0] == nw && cap->shape[1] == 96);
    zl_qwen3_opts o = {.weight_dtype = ZL_F32};
    zl_qwen3 *m;
    CHECK(zl_qwen3_load(DATA "/tiny_b", &o, &m) == 0);
    float *y = malloc(sizeof(float) * (size_t)nw * 96);
    CHECK(zl_qwen3_encode(m, want, nw, y) == 0);
    CHECK(memcmp(y, cap->data, sizeof(float) * (size_t)nw * 96) == 0);
    free(y);
    zl_qwen3_free(m);
    zl_st_close(st);
}
/* `debug random-te` (the writer of the full-size benchmark's encoder) at tiny sizes: the HF layout
 * (config.json, shards named as the release's, an index naming all 35 tensors with the `model.` prefix),
 * loads with zl_qwen3_load (config from config.json), encodes finite values in F32 and BF16 alike, and
 * the copied tokenizer makes `debug te --prompt` work on the folder. */
TEST(qwen3_random_te) {
    char dir[512], dir16[512], tok[600], cmd[3000], out[600];
    snprintf(dir, sizeof dir, "%s/rand_te", zl_test_dir());
    snprintf(dir16, sizeof dir16, "%s/rand_te16", zl_test_dir());
    snprintf(tok, sizeof tok, "%s/byte_tokenizer.json", zl_test_dir());
    CHECK(write_byte_tokenizer(tok) == 0);
    const char *sizes = "--hidden 64 --layers 3 --heads 4 --kv-heads 2 --head-dim 16 --inter 96 --vocab 1000";
    snprintf(cmd, sizeof cmd, "%s -q debug random-te %s %s --dtype f32 --shards 3 --seed 7 --tokenizer %s 2>&1 && "
             "%s -q debug random-te %s %s --shards 1 --seed 7 2>&1", zl_test_bin(), dir, sizes, tok, zl_test_bin(), dir16, sizes);
    char *txt = NULL;
    CHECK_MSG(zl_test_run(cmd, &txt) == 0, "%s", txt ? txt : "");
    free(txt);
    char p[700];
    snprintf(p, sizeof p, "%s/text_encoder/model-00003-of-00003.safetensors", dir);
    CHECK(zl_file_exists(p));
    snprintf(p, sizeof p, "%s/text_encoder/model.safetensors", dir16);
    CHECK(zl_file_exists(p));
    snprintf(p, sizeof p, "%s/text_encoder/model.safetensors.index.json", dir);
    zl_st *st;
    CHECK_MSG(zl_st_open(p, &st) == 0, "%s", zl_last_error());
    if (st) {
        CHECK(zl_st_count(st) == 1 + 3 * 11 + 1);
        CHECK(zl_st_find(st, "model.embed_tokens.weight") && zl_st_find(st, "model.norm.weight") &&
              zl_st_find(st, "model.layers.2.self_attn.k_norm.weight") && zl_st_find(st, "model.layers.0.mlp.down_proj.weight"));
        const zl_tensor_info *e = zl_st_find(st, "model.embed_tokens.weight");
        CHECK(e && e->dtype == ZL_F32 && e->shape[0] == 1000 && e->shape[1] == 64);
        zl_st_close(st);
    }
    zl_qwen3_opts o32 = {.weight_dtype = ZL_F32}, o16 = {.weight_dtype = ZL_BF16};
    zl_qwen3 *a = NULL, *b = NULL;
    CHECK_MSG(zl_qwen3_load(dir, &o32, &a) == 0, "%s", zl_last_error());
    CHECK_MSG(zl_qwen3_load(dir16, &o16, &b) == 0, "%s", zl_last_error());
    if (!a || !b) { zl_qwen3_free(a); zl_qwen3_free(b); return; }
    CHECK(a->have_config_json && !strcmp(a->prefix, "model."));
    CHECK(a->cfg.hidden == 64 && a->cfg.n_layers == 3 && a->cfg.n_heads == 4 && a->cfg.n_kv_heads == 2 && a->cfg.head_dim == 16 &&
          a->cfg.ffn == 96 && a->cfg.vocab == 1000 && a->cfg.eps == 1e-6f && a->cfg.rope_theta == 1e6);
    int32_t ids[20];
    for (int i = 0; i < 20; i++) ids[i] = (int32_t)((i * 397 + 11) % 1000);
    float ya[20 * 64], yb[20 * 64];
    CHECK(zl_qwen3_encode(a, ids, 20, ya) == 0);
    CHECK(zl_qwen3_encode(b, ids, 20, yb) == 0);
    /* the same seed gives the same values (bf16-rounded in the second folder) */
    double num = 0, den = 0;
    int finite = 1;
    for (int i = 0; i < 20 * 64; i++) {
        finite &= isfinite(ya[i]) && isfinite(yb[i]);
        num += ((double)ya[i] - yb[i]) * ((double)ya[i] - yb[i]);
        den += (double)ya[i] * ya[i];
    }
    CHECK(finite && den > 0);
    CHECK_MSG(sqrt(num / den) < 2e-2, "f32 vs bf16 folder: rel %.3g", sqrt(num / den));
    zl_qwen3_free(a);
    zl_qwen3_free(b);
    /* the copied tokenizer: a prompt on the folder */
    snprintf(out, sizeof out, "%s/rand_te_out.safetensors", zl_test_dir());
    char *argv[] = {"te", "--model", dir, "--prompt", "a cat", "--out", out, NULL};
    int level = zl_log_level;
    zl_log_level = 0;
    int rc = zl_cmd_debug_te(7, argv);
    zl_log_level = level;
    CHECK_MSG(rc == 0, "%s", zl_last_error());
    /* usage: help, and errors with exit code 2 */
    snprintf(cmd, sizeof cmd, "%s debug random-te --help", zl_test_bin());
    CHECK(zl_test_run(cmd, &txt) == 0 && txt && strstr(txt, "random-te DIR") && strstr(txt, "--tokenizer"));
    free(txt);
    const char *bad[] = {"", "--heads 5 --kv-heads 2", "--shards 0", "--dtype f16", "--bogus"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        snprintf(cmd, sizeof cmd, "%s debug random-te %s %s 2>&1", zl_test_bin(), i ? dir : "", bad[i]);
        txt = NULL;
        int r = zl_test_run(cmd, &txt);
        CHECK_MSG(r == 2, "'%s': exit %d: %s", bad[i], r, txt ? txt : "");
        free(txt);
    }
}
#endif
