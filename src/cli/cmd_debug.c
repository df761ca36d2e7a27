/* cmd_debug.c — `zlora debug ...`: tools for tests, parity checks, demos and bug reports.
 *   sample-loras DIR   writes a few small LoRA files (several formats, adapters and model families)
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "base/base.h"
#include "cli/cli.h"
#include "io/safetensors.h"

static void fill(float *v, size_t n, zl_rng *r, float s) { for (size_t i = 0; i < n; i++) v[i] = s * zl_rng_normal(r); }

static int add_pair(zl_st_writer *w, const char *mod, const char *dn, const char *up, int out, int in, int rank, zl_rng *r, zl_dtype dt) {
    float *a = zl_xmalloc(sizeof(float) * (size_t)rank * in), *b = zl_xmalloc(sizeof(float) * (size_t)out * rank);
    fill(a, (size_t)rank * in, r, 0.02f);
    fill(b, (size_t)out * rank, r, 0.02f);
    char k[256];
    int64_t sa[2] = {rank, in}, sb[2] = {out, rank};
    snprintf(k, sizeof k, "%s%s", mod, dn);
    int rc = zl_stw_add_f32(w, k, 2, sa, a, dt);
    snprintf(k, sizeof k, "%s%s", mod, up);
    rc |= zl_stw_add_f32(w, k, 2, sb, b, dt);
    free(a); free(b);
    return rc;
}

static int sample_loras(const char *dir) {
    zl_rng r = {42};
    char path[4096];
    int rc = 0;
    static const char *att[] = {"to_q", "to_k", "to_v", "to_out.0"};
    /* 1. a musubi/kohya character LoRA: attention + FFN in layers 0-3, rank 8, alpha 4 */
    zl_st_writer *w = zl_stw_new();
    zl_stw_meta(w, "ss_network_module", "networks.lora_zimage");
    zl_stw_meta(w, "ss_network_dim", "8");
    zl_stw_meta(w, "ss_network_alpha", "4");
    zl_stw_meta(w, "ss_output_name", "demo_character");
    for (int l = 0; l < 4 && !rc; l++) {
        char mod[128];
        for (int a = 0; a < 4 && !rc; a++) {
            snprintf(mod, sizeof mod, "lora_unet_layers_%d_attention_%s", l, att[a]);
            for (char *p = mod; *p; p++) if (*p == '.') *p = '_';
            rc = add_pair(w, mod, ".lora_down.weight", ".lora_up.weight", 3840, 3840, 8, &r, ZL_F32);
            float alpha = 4;
            char k[160];
            snprintf(k, sizeof k, "%s.alpha", mod);
            rc |= zl_stw_add_f32(w, k, 0, NULL, &alpha, ZL_F32);
        }
        const char *ff[] = {"w1", "w2", "w3"};
        for (int f = 0; f < 3 && !rc; f++) {
            snprintf(mod, sizeof mod, "lora_unet_layers_%d_feed_forward_%s", l, ff[f]);
            rc = add_pair(w, mod, ".lora_down.weight", ".lora_up.weight", f == 1 ? 3840 : 10240, f == 1 ? 10240 : 3840, 8, &r, ZL_F32);
            float alpha = 4;
            char k[160];
            snprintf(k, sizeof k, "%s.alpha", mod);
            rc |= zl_stw_add_f32(w, k, 0, NULL, &alpha, ZL_F32);
        }
    }
    snprintf(path, sizeof path, "%s/character_kohya.safetensors", dir);
    if (!rc) rc = zl_stw_write(w, path);
    zl_stw_free(w);
    /* 2. a DistillPatch-like DiffSynth file: bare keys with .default, attention of layers 0-3 and a refiner */
    w = zl_stw_new();
    const char *blocks[] = {"layers.0", "layers.1", "layers.2", "layers.3", "noise_refiner.0"};
    for (int b = 0; b < 5 && !rc; b++)
        for (int a = 0; a < 4 && !rc; a++) {
            char mod[128];
            snprintf(mod, sizeof mod, "%s.attention.%s", blocks[b], att[a]);
            rc = add_pair(w, mod, ".lora_A.default.weight", ".lora_B.default.weight", 3840, 3840, 4, &r, ZL_BF16);
        }
    snprintf(path, sizeof path, "%s/patch_diffsynth.safetensors", dir);
    if (!rc) rc = zl_stw_write(w, path);
    zl_stw_free(w);
    /* 3. LoKr, two kinds: layer 0 with full factors (w1 16x16, w2 240x240: ai-toolkit's default, alpha
     *    ignored by the LoKr rule), layer 1 with w2 factored at rank 4 (LyCORIS style: kron rank 64) */
    w = zl_stw_new();
    for (int l = 0; l < 2 && !rc; l++)
        for (int a = 0; a < 3 && !rc; a++) {
            char k[160];
            float w1[16 * 16], *w2 = zl_xmalloc(sizeof(float) * 240 * 240), w2a[240 * 4], w2b[4 * 240];
            fill(w1, 256, &r, 0.1f);
            fill(w2, 240 * 240, &r, 0.01f);
            fill(w2a, 960, &r, 0.05f);
            fill(w2b, 960, &r, 0.05f);
            int64_t s1[2] = {16, 16}, s2[2] = {240, 240}, sa2[2] = {240, 4}, sb2[2] = {4, 240};
            snprintf(k, sizeof k, "diffusion_model.layers.%d.attention.%s.lokr_w1", l, att[a]);
            rc = zl_stw_add_f32(w, k, 2, s1, w1, ZL_BF16);
            if (l == 0) {
                snprintf(k, sizeof k, "diffusion_model.layers.%d.attention.%s.lokr_w2", l, att[a]);
                rc |= zl_stw_add_f32(w, k, 2, s2, w2, ZL_BF16);
            } else {
                snprintf(k, sizeof k, "diffusion_model.layers.%d.attention.%s.lokr_w2_a", l, att[a]);
                rc |= zl_stw_add_f32(w, k, 2, sa2, w2a, ZL_BF16);
                snprintf(k, sizeof k, "diffusion_model.layers.%d.attention.%s.lokr_w2_b", l, att[a]);
                rc |= zl_stw_add_f32(w, k, 2, sb2, w2b, ZL_BF16);
            }
            float alpha = l == 0 ? 1e10f : 4.0f;
            snprintf(k, sizeof k, "diffusion_model.layers.%d.attention.%s.alpha", l, att[a]);
            rc |= zl_stw_add_f32(w, k, 0, NULL, &alpha, ZL_F32);
            free(w2);
        }
    snprintf(path, sizeof path, "%s/style_lokr_aitoolkit.safetensors", dir);
    if (!rc) rc = zl_stw_write(w, path);
    zl_stw_free(w);
    /* 4. a FLUX.1 LoRA (kohya names), the kind of file people load by mistake */
    w = zl_stw_new();
    for (int b = 0; b < 2 && !rc; b++) {
        char mod[128];
        snprintf(mod, sizeof mod, "lora_unet_double_blocks_%d_img_attn_qkv", b);
        rc = add_pair(w, mod, ".lora_down.weight", ".lora_up.weight", 9216, 3072, 4, &r, ZL_F16);
        snprintf(mod, sizeof mod, "lora_unet_single_blocks_%d_linear2", b);
        rc |= add_pair(w, mod, ".lora_down.weight", ".lora_up.weight", 3072, 15360, 4, &r, ZL_F16);
    }
    snprintf(path, sizeof path, "%s/flux_lora.safetensors", dir);
    if (!rc) rc = zl_stw_write(w, path);
    zl_stw_free(w);
    /* 5. a broken file: lora_up missing for one module */
    w = zl_stw_new();
    if (!rc) rc = add_pair(w, "diffusion_model.layers.0.attention.to_q", ".lora_A.weight", ".lora_B.weight", 3840, 3840, 4, &r, ZL_F32);
    float *a = zl_xcalloc(4 * 3840, sizeof(float));
    int64_t sa[2] = {4, 3840};
    if (!rc) rc = zl_stw_add_f32(w, "diffusion_model.layers.0.attention.to_k.lora_A.weight", 2, sa, a, ZL_F32);
    free(a);
    snprintf(path, sizeof path, "%s/broken_half.safetensors", dir);
    if (!rc) rc = zl_stw_write(w, path);
    zl_stw_free(w);
    return rc;
}

int zl_cmd_debug(int argc, char **argv) {
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
        printf("usage: zlora debug <tool> ...\n  sample-loras DIR   write small sample LoRA files (formats, adapters, a FLUX one, a broken one)\n");
        return argc < 2 ? 2 : 0;
    }
    if (!strcmp(argv[1], "sample-loras")) {
        if (argc < 3) return zl_err("debug sample-loras: which folder?"), zl_cli_fail();
        if (!zl_is_dir(argv[2])) return zl_err("debug sample-loras: %s is not a folder", argv[2]), zl_cli_fail();
        if (sample_loras(argv[2])) return zl_cli_fail();
        zl_info("wrote sample LoRA files to %s", argv[2]);
        return 0;
    }
    fprintf(stderr, "error: unknown debug tool '%s'\n", argv[1]);
    return 2;
}
