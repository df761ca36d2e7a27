/* fuzz_lorakeys.c — libFuzzer target for the LoRA key parser and module validation.
 *
 * The input is parsed as a safetensors file; when that succeeds, its tensors are read as a LoRA
 * (zl_lora_from_st: key normalisation, grouping, validation, family recognition), then reported
 * (inspect JSON/text, check against the Z-Image module set) and, for small modules, their ΔW is
 * computed. Every path must either succeed or fail with a message; the first bytes are also fed to
 * zl_lora_parse_key as a raw key. ASan/UBSan reports and aborts are crashes.
 *
 * Seeds: with ZL_FUZZ_WRITE_SEEDS=<dir> the binary writes small LoRA files in several formats and exits.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/base.h"
#include "io/safetensors.h"
#include "lora/lora.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv);

static volatile float sink;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char key[256], module[256];
    size_t kn = size < sizeof key - 1 ? size : sizeof key - 1;
    memcpy(key, data, kn);
    key[kn] = 0;
    zl_part part;
    zl_format fmt;
    const char *unsup;
    if (zl_lora_parse_key(key, module, sizeof module, &part, &fmt, &unsup) == 0)
        if (strlen(module) >= strlen(key)) abort();

    zl_st *st = NULL;
    if (zl_st_open_buffer(data, size, "fuzz", &st)) return 0;
    zl_lora *l = NULL;
    zl_clear_error();
    if (zl_lora_from_st(st, "fuzz", &l) == 0) {
        free(zl_lora_inspect_json(l));
        free(zl_lora_inspect_text(l));
        zl_module_table t;
        zl_module_table_default(&t);
        char buf[512];
        for (int i = 0; i < l->n; i++) {
            zl_lora_check_module(l, i, &t, buf, sizeof buf);
            zl_lora_module *m = &l->m[i];
            size_t n = (size_t)m->out * (size_t)(m->in > 0 ? m->in : 1);
            if (m->kind != ZL_AD_UNSUPPORTED && !m->dora && m->out > 0 && n <= (1u << 20)) {
                float *dw = malloc(n * sizeof(float));
                if (zl_lora_delta(m, 0.5f, dw) == 0) sink = dw[0];
                free(dw);
            }
        }
        zl_module_table_free(&t);
        zl_lora_free(l);
    } else if (!zl_last_error()[0]) {
        abort(); /* failure without a message */
    }
    zl_st_close(st);
    return 0;
}

/* ---------------------------------------------------------------- seeds */

static int add_lora(zl_st_writer *w, const char *mod, const char *dn, const char *up, int out, int in, int r) {
    float *a = calloc((size_t)r * in, sizeof(float)), *b = calloc((size_t)out * r, sizeof(float));
    for (int i = 0; i < r * in; i++) a[i] = 0.01f * (float)(i % 7);
    for (int i = 0; i < out * r; i++) b[i] = 0.02f * (float)(i % 5);
    char k[300];
    int64_t sa[2] = {r, in}, sb[2] = {out, r};
    snprintf(k, sizeof k, "%s%s", mod, dn);
    int rc = zl_stw_add_f32(w, k, 2, sa, a, ZL_F32);
    snprintf(k, sizeof k, "%s%s", mod, up);
    rc |= zl_stw_add_f32(w, k, 2, sb, b, ZL_BF16);
    free(a); free(b);
    return rc;
}

static int write_seeds(const char *dir) {
    struct { const char *mod, *dn, *up; int out, in; } s[] = {
        {"transformer.layers.0.attention.to_q", ".lora_A.weight", ".lora_B.weight", 16, 16},
        {"diffusion_model.layers.1.attention.qkv", ".lora_A.weight", ".lora_B.weight", 48, 16},
        {"lora_unet_layers_0_feed_forward_w2", ".lora_down.weight", ".lora_up.weight", 16, 40},
        {"layers.0.adaLN_modulation.0", ".lora_A.default.weight", ".lora_B.default.weight", 64, 8},
        {"lora_unet_double_blocks_0_img_attn_qkv", ".lora_down.weight", ".lora_up.weight", 24, 8},
    };
    for (size_t i = 0; i < sizeof s / sizeof *s; i++) {
        zl_st_writer *w = zl_stw_new();
        zl_stw_meta(w, "ss_network_dim", "2");
        int rc = add_lora(w, s[i].mod, s[i].dn, s[i].up, s[i].out, s[i].in, 2);
        if (strstr(s[i].mod, "lora_unet")) {
            float a = 1.0f;
            char k[300];
            snprintf(k, sizeof k, "%s.alpha", s[i].mod);
            rc |= zl_stw_add_f32(w, k, 0, NULL, &a, ZL_F32);
        }
        char path[1024];
        snprintf(path, sizeof path, "%s/seed%zu.safetensors", dir, i);
        rc |= zl_stw_write(w, path);
        zl_stw_free(w);
        if (rc) { fprintf(stderr, "seed: %s\n", zl_last_error()); return -1; }
    }
    /* a LoKr seed and a LoHa seed */
    zl_st_writer *w = zl_stw_new();
    float v[64];
    for (int i = 0; i < 64; i++) v[i] = 0.1f * (float)(i % 9) - 0.3f;
    int64_t s1[2] = {4, 4}, s2[2] = {4, 4};
    int rc = zl_stw_add_f32(w, "lycoris_layers_0_attention_to_k.lokr_w1", 2, s1, v, ZL_F32);
    rc |= zl_stw_add_f32(w, "lycoris_layers_0_attention_to_k.lokr_w2", 2, s2, v + 16, ZL_F32);
    int64_t h1[2] = {16, 2}, h2[2] = {2, 16};
    rc |= zl_stw_add_f32(w, "lycoris_layers_0_attention_to_v.hada_w1_a", 2, h1, v, ZL_F16);
    rc |= zl_stw_add_f32(w, "lycoris_layers_0_attention_to_v.hada_w1_b", 2, h2, v, ZL_F16);
    rc |= zl_stw_add_f32(w, "lycoris_layers_0_attention_to_v.hada_w2_a", 2, h1, v + 8, ZL_F16);
    rc |= zl_stw_add_f32(w, "lycoris_layers_0_attention_to_v.hada_w2_b", 2, h2, v + 8, ZL_F16);
    char path[1024];
    snprintf(path, sizeof path, "%s/seed_lyco.safetensors", dir);
    rc |= zl_stw_write(w, path);
    zl_stw_free(w);
    return rc;
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc; (void)argv;
    const char *dir = getenv("ZL_FUZZ_WRITE_SEEDS");
    if (dir && *dir) exit(write_seeds(dir) ? 1 : 0);
    return 0;
}
