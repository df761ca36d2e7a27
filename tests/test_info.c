/* test_info.c — `zlora info` on tiny synthetic files: model recognition (Z-Image transformer in both
 * namings, Lumina-2 look-alike, Qwen3 text encoder, FLUX.1 / SD VAEs, LoRA, unknown), JSON output,
 * text listing limits, sharded folders, and errors on broken files. */
#include "test.h"
#include "base/base.h"
#include "io/safetensors.h"

#include <cjson/cJSON.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/* Adds a zero tensor: add(w, name, ndim, d0, d1, ...). */
static void add(zl_st_writer *w, const char *name, int ndim, ...) {
    int64_t shape[8];
    size_t n = 1;
    va_list ap;
    va_start(ap, ndim);
    for (int i = 0; i < ndim; i++) { shape[i] = va_arg(ap, int); n *= (size_t)shape[i]; }
    va_end(ap);
    float *z = zl_xcalloc(n ? n : 1, sizeof(float));
    if (zl_stw_add_f32(w, name, ndim, shape, z, ZL_BF16)) fprintf(stderr, "add %s: %s\n", name, zl_last_error());
    free(z);
}

static char *write_file(const char *name, zl_st_writer *w) {
    char *p = zl_xasprintf("%s/%s", zl_test_dir(), name);
    if (zl_stw_write(w, p)) fprintf(stderr, "write %s: %s\n", p, zl_last_error());
    zl_stw_free(w);
    return p;
}

/* Tiny Z-Image transformer, diffusers naming: dim 64, head dim 32, cap feat 32, `layers` main blocks,
 * one noise and one context refiner. */
static void zimage_diffusers(zl_st_writer *w, int layers) {
    add(w, "all_x_embedder.2-1.weight", 2, 64, 64);
    add(w, "all_x_embedder.2-1.bias", 1, 64);
    add(w, "cap_embedder.0.weight", 1, 32);
    add(w, "cap_embedder.1.weight", 2, 64, 32);
    add(w, "cap_embedder.1.bias", 1, 64);
    add(w, "x_pad_token", 2, 1, 64);
    add(w, "cap_pad_token", 2, 1, 64);
    add(w, "t_embedder.mlp.0.weight", 2, 16, 64);
    add(w, "all_final_layer.2-1.linear.weight", 2, 64, 64);
    char n[128];
    const char *blocks[] = {"layers", "noise_refiner", "context_refiner"};
    for (int b = 0; b < 3; b++) {
        int count = b == 0 ? layers : 1;
        for (int i = 0; i < count; i++) {
            const char *lin[] = {"attention.to_q", "attention.to_k", "attention.to_v", "attention.to_out.0"};
            for (int k = 0; k < 4; k++) {
                snprintf(n, sizeof n, "%s.%d.%s.weight", blocks[b], i, lin[k]);
                add(w, n, 2, 64, 64);
            }
            snprintf(n, sizeof n, "%s.%d.attention.norm_q.weight", blocks[b], i);
            add(w, n, 1, 32);
            snprintf(n, sizeof n, "%s.%d.attention.norm_k.weight", blocks[b], i);
            add(w, n, 1, 32);
            snprintf(n, sizeof n, "%s.%d.feed_forward.w1.weight", blocks[b], i);
            add(w, n, 2, 160, 64);
        }
    }
}

/* Tiny ComfyUI-style transformer: `dim`, head dim `hd`, kv width `kvw` (== dim for Z-Image). */
static void comfy_dit(zl_st_writer *w, const char *prefix, int dim, int hd, int kvw, int layers) {
    char n[160];
    snprintf(n, sizeof n, "%sx_embedder.weight", prefix);
    add(w, n, 2, dim, 64);
    snprintf(n, sizeof n, "%scap_embedder.1.weight", prefix);
    add(w, n, 2, dim, 32);
    snprintf(n, sizeof n, "%sfinal_layer.linear.weight", prefix);
    add(w, n, 2, 64, dim);
    for (int i = 0; i < layers; i++) {
        snprintf(n, sizeof n, "%slayers.%d.attention.qkv.weight", prefix, i);
        add(w, n, 2, dim + 2 * kvw, dim);
        snprintf(n, sizeof n, "%slayers.%d.attention.out.weight", prefix, i);
        add(w, n, 2, dim, dim);
        snprintf(n, sizeof n, "%slayers.%d.attention.q_norm.weight", prefix, i);
        add(w, n, 1, hd);
    }
    snprintf(n, sizeof n, "%snoise_refiner.0.attention.qkv.weight", prefix);
    add(w, n, 2, dim + 2 * kvw, dim);
    snprintf(n, sizeof n, "%scontext_refiner.0.attention.qkv.weight", prefix);
    add(w, n, 2, dim + 2 * kvw, dim);
    snprintf(n, sizeof n, "%scontext_refiner.1.attention.qkv.weight", prefix);
    add(w, n, 2, dim + 2 * kvw, dim);
}

static void qwen3(zl_st_writer *w, const char *prefix, int with_qnorm) {
    char n[160];
    snprintf(n, sizeof n, "%sembed_tokens.weight", prefix);
    add(w, n, 2, 100, 64);
    snprintf(n, sizeof n, "%snorm.weight", prefix);
    add(w, n, 1, 64);
    for (int i = 0; i < 3; i++) {
        const struct { const char *s; int o, in; } m[] = {
            {"self_attn.q_proj", 64, 64}, {"self_attn.k_proj", 32, 64}, {"self_attn.v_proj", 32, 64},
            {"self_attn.o_proj", 64, 64}, {"mlp.gate_proj", 96, 64}, {"mlp.up_proj", 96, 64}, {"mlp.down_proj", 64, 96}};
        for (int k = 0; k < 7; k++) {
            snprintf(n, sizeof n, "%slayers.%d.%s.weight", prefix, i, m[k].s);
            add(w, n, 2, m[k].o, m[k].in);
        }
        if (with_qnorm) {
            snprintf(n, sizeof n, "%slayers.%d.self_attn.q_norm.weight", prefix, i);
            add(w, n, 1, 16);
            snprintf(n, sizeof n, "%slayers.%d.self_attn.k_norm.weight", prefix, i);
            add(w, n, 1, 16);
        }
        snprintf(n, sizeof n, "%slayers.%d.input_layernorm.weight", prefix, i);
        add(w, n, 1, 64);
    }
}

/* Runs `zlora info --json PATH`, parses the output. Returns the exit code; *root is NULL unless it parsed. */
static int info_json(const char *path, cJSON **root) {
    char *cmd = zl_xasprintf("%s info --json '%s'", zl_test_bin(), path), *out = NULL;
    int rc = zl_test_run(cmd, &out);
    *root = out ? cJSON_Parse(out) : NULL;
    if (!*root) fprintf(stderr, "  output of %s was not JSON:\n%s\n", cmd, out ? out : "(none)");
    free(out);
    free(cmd);
    return rc;
}

static const char *jstr(const cJSON *o, const char *k) {
    const cJSON *j = cJSON_GetObjectItemCaseSensitive(o, k);
    return cJSON_IsString(j) ? j->valuestring : "";
}
static long long jint(const cJSON *o, const char *k) {
    const cJSON *j = cJSON_GetObjectItemCaseSensitive(o, k);
    return cJSON_IsNumber(j) ? (long long)j->valuedouble : -1;
}
static const cJSON *jmodel(const cJSON *root) { return cJSON_GetObjectItemCaseSensitive(root, "model"); }

TEST(info_zimage_diffusers) {
    zl_st_writer *w = zl_stw_new();
    zimage_diffusers(w, 2);
    zl_stw_meta(w, "format", "pt");
    int count = zl_stw_count(w);
    char *p = write_file("zimage-diffusers.safetensors", w);
    cJSON *root;
    CHECK(info_json(p, &root) == 0 && root);
    CHECK_MSG(strcmp(jstr(root, "kind"), "zimage-transformer") == 0, "kind %s", jstr(root, "kind"));
    const cJSON *m = jmodel(root);
    CHECK(strcmp(jstr(m, "naming"), "diffusers") == 0 && strcmp(jstr(m, "prefix"), "") == 0);
    CHECK(jint(m, "dim") == 64 && jint(m, "layers") == 2 && jint(m, "noise_refiner") == 1 &&
          jint(m, "context_refiner") == 1 && jint(m, "heads") == 2 && jint(m, "head_dim") == 32 &&
          jint(m, "cap_feat_dim") == 32);
    CHECK(strstr(jstr(root, "description"), "not the released 6B size"));
    CHECK(strcmp(jstr(root, "path"), p) == 0);
    const cJSON *t = cJSON_GetObjectItemCaseSensitive(root, "tensors");
    CHECK(cJSON_GetArraySize(t) == count && jint(root, "tensor_count") == count);
    const cJSON *t0 = cJSON_GetArrayItem(t, 0);
    CHECK(strcmp(jstr(t0, "name"), "all_final_layer.2-1.linear.weight") == 0 && strcmp(jstr(t0, "dtype"), "BF16") == 0);
    const cJSON *sh = cJSON_GetObjectItemCaseSensitive(t0, "shape");
    CHECK(cJSON_GetArraySize(sh) == 2 && cJSON_GetArrayItem(sh, 0)->valuedouble == 64);
    CHECK(strcmp(jstr(cJSON_GetObjectItemCaseSensitive(root, "metadata"), "format"), "pt") == 0);
    CHECK(cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(root, "shards")) == 1);
    CHECK(jint(cJSON_GetObjectItemCaseSensitive(root, "dtypes"), "BF16") == count);
    cJSON_Delete(root);
    free(p);
}

TEST(info_zimage_comfyui) {
    const char *prefixes[] = {"", "model.diffusion_model."};
    for (int k = 0; k < 2; k++) {
        zl_st_writer *w = zl_stw_new();
        comfy_dit(w, prefixes[k], 64, 32, 64, 3);
        char name[64];
        snprintf(name, sizeof name, "zimage-comfy-%d.safetensors", k);
        char *p = write_file(name, w);
        cJSON *root;
        CHECK(info_json(p, &root) == 0 && root);
        CHECK_MSG(strcmp(jstr(root, "kind"), "zimage-transformer") == 0, "kind %s", jstr(root, "kind"));
        const cJSON *m = jmodel(root);
        CHECK(strcmp(jstr(m, "naming"), "comfyui") == 0 && strcmp(jstr(m, "prefix"), prefixes[k]) == 0);
        CHECK(jint(m, "dim") == 64 && jint(m, "layers") == 3 && jint(m, "noise_refiner") == 1 &&
              jint(m, "context_refiner") == 2 && jint(m, "heads") == 2 && jint(m, "kv_heads") == 2);
        cJSON_Delete(root);
        free(p);
    }
}

TEST(info_lumina2_is_not_zimage) {
    /* ComfyUI naming like Z-Image, but grouped-query attention: q 48, k 16, v 16 */
    zl_st_writer *w = zl_stw_new();
    comfy_dit(w, "", 48, 16, 16, 2);
    char *p = write_file("lumina-gqa.safetensors", w);
    cJSON *root;
    CHECK(info_json(p, &root) == 0 && root);
    CHECK_MSG(strcmp(jstr(root, "kind"), "lumina2-transformer") == 0, "kind %s", jstr(root, "kind"));
    CHECK(strstr(jstr(root, "description"), "Lumina-Image-2.0") && strstr(jstr(root, "description"), "not Z-Image"));
    CHECK(jint(jmodel(root), "dim") == 48 && jint(jmodel(root), "kv_heads") == 1 && jint(jmodel(root), "heads") == 3);
    cJSON_Delete(root);
    free(p);

    /* same width as Z-Image's tiny test but with Lumina's norm_final */
    w = zl_stw_new();
    comfy_dit(w, "", 64, 32, 64, 1);
    add(w, "norm_final.weight", 1, 64);
    p = write_file("lumina-normfinal.safetensors", w);
    CHECK(info_json(p, &root) == 0 && root);
    CHECK(strcmp(jstr(root, "kind"), "lumina2-transformer") == 0);
    cJSON_Delete(root);
    free(p);
}

TEST(info_qwen3_text_encoder) {
    const char *prefixes[] = {"model.", ""};
    for (int k = 0; k < 2; k++) {
        zl_st_writer *w = zl_stw_new();
        qwen3(w, prefixes[k], 1);
        char name[64];
        snprintf(name, sizeof name, "qwen3-%d.safetensors", k);
        char *p = write_file(name, w);
        cJSON *root;
        CHECK(info_json(p, &root) == 0 && root);
        CHECK_MSG(strcmp(jstr(root, "kind"), "qwen3-text-encoder") == 0, "kind %s", jstr(root, "kind"));
        const cJSON *m = jmodel(root);
        CHECK(jint(m, "hidden") == 64 && jint(m, "layers") == 3 && jint(m, "heads") == 4 && jint(m, "kv_heads") == 2 &&
              jint(m, "head_dim") == 16 && jint(m, "vocab") == 100 && jint(m, "intermediate") == 96);
        CHECK(strstr(jstr(root, "description"), "not Qwen3-4B"));
        cJSON_Delete(root);
        free(p);
    }
    /* without q_norm it is some other LM */
    zl_st_writer *w = zl_stw_new();
    qwen3(w, "model.", 0);
    char *p = write_file("qwen2-like.safetensors", w);
    cJSON *root;
    CHECK(info_json(p, &root) == 0 && root);
    CHECK(strcmp(jstr(root, "kind"), "unknown") == 0 && strstr(jstr(root, "description"), "not Qwen3"));
    cJSON_Delete(root);
    free(p);
}

TEST(info_vae) {
    /* FLUX-like, diffusers naming: conv_out 2 x 16 channels */
    zl_st_writer *w = zl_stw_new();
    add(w, "encoder.conv_in.weight", 4, 8, 3, 3, 3);
    add(w, "encoder.down_blocks.0.resnets.0.conv1.weight", 4, 8, 8, 3, 3);
    add(w, "encoder.conv_out.weight", 4, 32, 8, 3, 3);
    add(w, "decoder.conv_in.weight", 4, 8, 16, 3, 3);
    add(w, "decoder.up_blocks.0.resnets.0.conv1.weight", 4, 8, 8, 3, 3);
    char *p = write_file("vae-flux.safetensors", w);
    cJSON *root;
    CHECK(info_json(p, &root) == 0 && root);
    CHECK_MSG(strcmp(jstr(root, "kind"), "flux-vae") == 0, "kind %s", jstr(root, "kind"));
    CHECK(jint(jmodel(root), "latent_channels") == 16 && strcmp(jstr(jmodel(root), "naming"), "diffusers") == 0);
    CHECK(jint(jmodel(root), "base_channels") == 8);
    cJSON_Delete(root);
    free(p);

    /* BFL naming, decoder only */
    w = zl_stw_new();
    add(w, "decoder.conv_in.weight", 4, 8, 16, 3, 3);
    add(w, "decoder.up.0.block.0.conv1.weight", 4, 8, 8, 3, 3);
    p = write_file("vae-flux-bfl-dec.safetensors", w);
    CHECK(info_json(p, &root) == 0 && root);
    CHECK(strcmp(jstr(root, "kind"), "flux-vae") == 0 && strcmp(jstr(jmodel(root), "naming"), "bfl") == 0);
    CHECK(strstr(jstr(root, "description"), "decoder only"));
    cJSON_Delete(root);
    free(p);

    /* SD VAE, BFL/ldm naming with quant_conv: 4 latent channels */
    w = zl_stw_new();
    add(w, "encoder.conv_in.weight", 4, 8, 3, 3, 3);
    add(w, "encoder.down.0.block.0.conv1.weight", 4, 8, 8, 3, 3);
    add(w, "encoder.conv_out.weight", 4, 8, 8, 3, 3);
    add(w, "quant_conv.weight", 4, 8, 8, 1, 1);
    add(w, "decoder.conv_in.weight", 4, 8, 4, 3, 3);
    p = write_file("vae-sd.safetensors", w);
    CHECK(info_json(p, &root) == 0 && root);
    CHECK_MSG(strcmp(jstr(root, "kind"), "sd-vae") == 0, "kind %s", jstr(root, "kind"));
    CHECK(jint(jmodel(root), "latent_channels") == 4 && strstr(jstr(root, "description"), "not usable"));
    cJSON_Delete(root);
    free(p);
}

TEST(info_lora_and_unknown) {
    zl_st_writer *w = zl_stw_new();
    add(w, "diffusion_model.layers.0.attention.to_q.lora_A.weight", 2, 4, 64);
    add(w, "diffusion_model.layers.0.attention.to_q.lora_B.weight", 2, 64, 4);
    char *p = write_file("lora.safetensors", w);
    cJSON *root;
    CHECK(info_json(p, &root) == 0 && root);
    CHECK_MSG(strcmp(jstr(root, "kind"), "lora") == 0, "kind %s", jstr(root, "kind"));
    CHECK(strstr(jstr(root, "description"), "zlora lora inspect"));
    cJSON_Delete(root);
    free(p);

    w = zl_stw_new();
    add(w, "lora_unet_layers_0_attention_to_q.lora_down.weight", 2, 4, 64);
    p = write_file("lora-kohya.safetensors", w);
    CHECK(info_json(p, &root) == 0 && root);
    CHECK(strcmp(jstr(root, "kind"), "lora") == 0 && strstr(jstr(root, "description"), "kohya"));
    cJSON_Delete(root);
    free(p);

    w = zl_stw_new();
    add(w, "foo.weight", 2, 3, 3);
    add(w, "bar.bias", 1, 3);
    p = write_file("unknown.safetensors", w);
    CHECK(info_json(p, &root) == 0 && root);
    CHECK(strcmp(jstr(root, "kind"), "unknown") == 0);
    cJSON_Delete(root);
    free(p);
}

TEST(info_full_checkpoint_lists_parts) {
    /* a ComfyUI all-in-one file: transformer + VAE under their usual prefixes */
    zl_st_writer *w = zl_stw_new();
    comfy_dit(w, "model.diffusion_model.", 64, 32, 64, 1);
    add(w, "first_stage_model.encoder.down.0.block.0.conv1.weight", 4, 8, 8, 3, 3);
    add(w, "first_stage_model.encoder.conv_out.weight", 4, 32, 8, 3, 3);
    char *p = write_file("all-in-one.safetensors", w);
    cJSON *root;
    CHECK(info_json(p, &root) == 0 && root);
    CHECK(strcmp(jstr(root, "kind"), "zimage-transformer") == 0);
    const cJSON *also = cJSON_GetObjectItemCaseSensitive(root, "also");
    CHECK(cJSON_GetArraySize(also) == 1);
    CHECK(strcmp(jstr(cJSON_GetArrayItem(also, 0), "kind"), "flux-vae") == 0);
    CHECK(strcmp(jstr(cJSON_GetArrayItem(also, 0), "prefix"), "first_stage_model.") == 0);
    cJSON_Delete(root);
    free(p);
}

TEST(info_sharded_folder) {
    char *dir = zl_xasprintf("%s/info-sharded", zl_test_dir());
    mkdir(dir, 0755);
    /* split the tiny diffusers transformer over two shards, with a diffusers index */
    zl_st_writer *all = zl_stw_new();
    zimage_diffusers(all, 2);
    char *tmp = zl_xasprintf("%s/all.tmp-src", zl_test_dir());
    CHECK(zl_stw_write(all, tmp) == 0);
    zl_stw_free(all);
    zl_st *src;
    CHECK(zl_st_open(tmp, &src) == 0);
    zl_st_writer *w[2] = {zl_stw_new(), zl_stw_new()};
    zl_buf idx = {0};
    zl_buf_puts(&idx, "{\"metadata\":{},\"weight_map\":{");
    for (int i = 0; i < zl_st_count(src); i++) {
        const zl_tensor_info *t = zl_st_tensor(src, i);
        int s = i % 2;
        CHECK(zl_stw_add(w[s], t->name, t->dtype, t->ndim, t->shape, t->data) == 0);
        zl_buf_printf(&idx, "%s\"%s\":\"diffusion_pytorch_model-0000%d-of-00002.safetensors\"", i ? "," : "", t->name, s + 1);
    }
    zl_buf_puts(&idx, "}}");
    int count = zl_st_count(src);
    zl_st_close(src);
    for (int s = 0; s < 2; s++) {
        char *sp = zl_xasprintf("%s/diffusion_pytorch_model-0000%d-of-00002.safetensors", dir, s + 1);
        CHECK(zl_stw_write(w[s], sp) == 0);
        zl_stw_free(w[s]);
        free(sp);
    }
    char *ip = zl_xasprintf("%s/diffusion_pytorch_model.safetensors.index.json", dir);
    FILE *f = fopen(ip, "w");
    CHECK(f);
    fwrite(idx.s, 1, idx.len, f);
    fclose(f);
    zl_buf_free(&idx);

    cJSON *root;
    CHECK(info_json(dir, &root) == 0 && root);
    CHECK(strcmp(jstr(root, "kind"), "zimage-transformer") == 0);
    CHECK(cJSON_GetArraySize(cJSON_GetObjectItemCaseSensitive(root, "shards")) == 2);
    CHECK(jint(root, "tensor_count") == count);
    CHECK(jint(cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(root, "tensors"), 1), "shard") == 1);
    cJSON_Delete(root);

    char *cmd = zl_xasprintf("%s info '%s'", zl_test_bin(), dir), *out = NULL;
    CHECK(zl_test_run(cmd, &out) == 0 && out);
    CHECK_MSG(strstr(out, "shards:    2") && strstr(out, "diffusion_pytorch_model-00002-of-00002.safetensors"), "%s", out);
    free(out);
    free(cmd);
    free(ip);
    free(tmp);
    free(dir);
}

TEST(info_text_listing) {
    zl_st_writer *w = zl_stw_new();
    zimage_diffusers(w, 3); /* well over 20 tensors */
    int count = zl_stw_count(w);
    char longv[501];
    memset(longv, 'x', 500);
    longv[500] = 0;
    longv[499] = 'Z';
    zl_stw_meta(w, "long", longv);
    zl_stw_meta(w, "multi", "line one\nline two");
    char *p = write_file("listing.safetensors", w);

    char *cmd = zl_xasprintf("%s info '%s'", zl_test_bin(), p), *out = NULL;
    CHECK(zl_test_run(cmd, &out) == 0 && out);
    char more[64];
    snprintf(more, sizeof more, "… %d more", count - 20);
    CHECK_MSG(strstr(out, more), "no \"%s\" in:\n%s", more, out);
    CHECK(strstr(out, "kind:      zimage-transformer"));
    CHECK(strstr(out, "dtypes:    BF16 x "));
    CHECK(strstr(out, "… (500 bytes") && !strstr(out, "xZ"));
    CHECK(strstr(out, "line one\\nline two"));
    CHECK(strstr(out, "[64, 64]"));
    free(out);
    free(cmd);

    cmd = zl_xasprintf("%s info --tensors --all '%s'", zl_test_bin(), p);
    CHECK(zl_test_run(cmd, &out) == 0 && out);
    CHECK(!strstr(out, " more (--tensors"));
    CHECK(strstr(out, "xxxZ\n"));
    CHECK(strstr(out, "layers.2.feed_forward.w1.weight") && strstr(out, "x_pad_token"));
    free(out);
    free(cmd);
    free(p);
}

TEST(info_errors_and_help) {
    /* a truncated file */
    zl_st_writer *w = zl_stw_new();
    zimage_diffusers(w, 1);
    char *p = write_file("to-truncate.safetensors", w);
    FILE *f = fopen(p, "rb");
    CHECK(f);
    char buf[4096];
    size_t n = fread(buf, 1, sizeof buf, f);
    fclose(f);
    CHECK(n == sizeof buf);
    char *tp = zl_xasprintf("%s/truncated.safetensors", zl_test_dir());
    f = fopen(tp, "wb");
    fwrite(buf, 1, n, f);
    fclose(f);

    const char *modes[] = {"", "--json "};
    for (int k = 0; k < 2; k++) {
        char *cmd = zl_xasprintf("%s info %s'%s' 2>&1", zl_test_bin(), modes[k], tp), *out = NULL;
        CHECK(zl_test_run(cmd, &out) == 1 && out);
        CHECK_MSG(strncmp(out, "error: ", 7) == 0 && strstr(out, tp) && strstr(out, "truncated"), "%s", out);
        free(out);
        free(cmd);
    }
    /* missing file, empty file */
    char *cmd = zl_xasprintf("%s info '%s/nope.safetensors' 2>&1", zl_test_bin(), zl_test_dir()), *out = NULL;
    CHECK(zl_test_run(cmd, &out) == 1 && out && strncmp(out, "error: ", 7) == 0 && strstr(out, "cannot open"));
    free(out);
    free(cmd);
    char *ep = zl_xasprintf("%s/empty.safetensors", zl_test_dir());
    f = fopen(ep, "wb");
    fclose(f);
    cmd = zl_xasprintf("%s info '%s' 2>&1", zl_test_bin(), ep);
    CHECK(zl_test_run(cmd, &out) == 1 && out && strncmp(out, "error: ", 7) == 0 && strstr(out, "empty"));
    free(out);
    free(cmd);

    cmd = zl_xasprintf("%s info --help", zl_test_bin());
    CHECK(zl_test_run(cmd, &out) == 0 && out && strstr(out, "usage: zlora info") && strstr(out, "--json"));
    free(out);
    free(cmd);
    cmd = zl_xasprintf("%s info --bogus '%s' 2>&1", zl_test_bin(), p);
    CHECK(zl_test_run(cmd, &out) == 2 && out && strstr(out, "unknown option"));
    free(out);
    free(cmd);
    cmd = zl_xasprintf("%s info 2>&1", zl_test_bin());
    CHECK(zl_test_run(cmd, &out) == 2 && out && strstr(out, "usage"));
    free(out);
    free(cmd);
    free(ep);
    free(tp);
    free(p);
}
