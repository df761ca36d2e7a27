/* cmd_debug.c — `zlora debug ...`: tools for tests, parity checks, demos and bug reports.
 *   sample-loras DIR   writes a few small LoRA files (several formats, adapters and model families)
 *   dit                runs the Z-Image transformer on tensors from a file (parity checks, bug reports)
 *   random-dit, random-te  random checkpoints (cmd_random.c); tokenize, te, vae (their own files)
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "base/base.h"
#include "cli/cli.h"
#include "cli/cmd_random.h"
#include "cli/cmd_te.h"
#include "cli/cmd_tokenize.h"
#include "cli/cmd_vae.h"
#include "io/safetensors.h"
#include "lora/lora.h"
#include "model/zimage.h"

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

static void print_line(const char *line) { zl_info("%s", line); }

/* Reads float tensor `name` of st into a new buffer, checking its rank; dims receive the shape. */
static float *read_input(zl_st *st, const char *file, const char *name, int ndim, int64_t *dims) {
    const zl_tensor_info *t = zl_st_find(st, name);
    if (!t) { zl_err("%s: no tensor \"%s\"", file, name); return NULL; }
    if (t->ndim != ndim) { zl_err("%s: tensor \"%s\" has %d dimensions, expected %d", file, name, t->ndim, ndim); return NULL; }
    for (int i = 0; i < ndim; i++) dims[i] = t->shape[i];
    return zl_st_read_f32(st, t);
}

static int cmd_dit(int argc, char **argv) {
    const char *model = NULL, *in = NULL, *out = NULL;
    const char *usage = "usage: zlora debug dit --model PATH [--lora FILE[:STRENGTH]]... [--lora-mode merge|runtime]\n"
                        "                       [--weights bf16|f32] [--bf16-gemm] [--force] --in IN.safetensors --out OUT.safetensors\n"
                        "  --bf16-gemm: bf16 compute mode: GEMM inputs and attention operands rounded to bf16, fp32 sums\n"
                        "               (fast on AVX512_BF16; not exact)\n"
                        "  IN holds x [16,H,W] (latent), t [1] (model time t = 1 - sigma), cap [L,cap_feat_dim] (float32)\n"
                        "  OUT receives out [16,H,W], the raw model output (about x0 - noise; not negated)\n";
    zl_zimage_opts o;
    zl_zimage_default_opts(&o);
    int merge = 1, force = 0, nl = 0;
    zl_lora **loras = zl_xcalloc((size_t)argc + 1, sizeof(zl_lora *));
    float *str = zl_xcalloc((size_t)argc + 1, sizeof(float));
    int rc = 0;
    for (int i = 1; i < argc && rc == 0; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) { fputs(usage, stdout); goto done; }
        else if (!strcmp(a, "--model") && i + 1 < argc) model = argv[++i];
        else if (!strcmp(a, "--in") && i + 1 < argc) in = argv[++i];
        else if (!strcmp(a, "--out") && i + 1 < argc) out = argv[++i];
        else if (!strcmp(a, "--force")) force = 1;
        else if (!strcmp(a, "--bf16-gemm")) zl_ops_set_bf16_gemm(1);
        else if (!strcmp(a, "--lora-mode") && i + 1 < argc) {
            const char *v = argv[++i];
            if (!strcmp(v, "merge")) merge = 1;
            else if (!strcmp(v, "runtime")) merge = 0;
            else rc = zl_err("--lora-mode must be merge or runtime");
        } else if (!strcmp(a, "--weights") && i + 1 < argc) {
            const char *v = argv[++i];
            if (!strcmp(v, "bf16")) o.weight_dtype = ZL_BF16;
            else if (!strcmp(v, "f32") || !strcmp(v, "fp32")) o.weight_dtype = ZL_F32;
            else rc = zl_err("--weights must be bf16 or f32");
        } else if (!strcmp(a, "--lora") && i + 1 < argc) {
            char path[4096];
            zl_cli_split_strength(argv[++i], path, sizeof path, &str[nl]);
            if (zl_lora_load(path, &loras[nl]) == 0) nl++;
            else rc = -1;
        } else rc = zl_err("debug dit: unexpected argument '%s'\n%s", a, usage);
    }
    if (rc == 0 && (!model || !in || !out)) rc = zl_err("debug dit: --model, --in and --out are required\n%s", usage);
    zl_zimage *m = NULL;
    zl_st *st = NULL;
    float *x = NULL, *t = NULL, *cap = NULL, *y = NULL;
    int64_t xd[3], td[1], cd[2];
    if (rc == 0) rc = zl_st_open(in, &st);
    if (rc == 0 && (!(x = read_input(st, in, "x", 3, xd)) || !(t = read_input(st, in, "t", 1, td)) ||
                    !(cap = read_input(st, in, "cap", 2, cd)))) rc = -1;
    double t0 = zl_now();
    if (rc == 0) rc = zl_zimage_load(model, &o, &m);
    if (rc == 0) {
        zl_info("loaded in %.1f s", zl_now() - t0);
        zl_info("model: %s (%s naming, dim %d, %d layers, %d+%d refiners, cap %d, weights %s)", m->path, m->naming,
                m->cfg.dim, m->cfg.n_layers, m->cfg.n_refiner, m->cfg.n_refiner, m->cfg.cap_feat_dim, zl_dtype_name(m->weight_dtype));
        if (xd[0] != m->cfg.in_channels) rc = zl_err("%s: x has %lld channels, the model takes %d", in, (long long)xd[0], m->cfg.in_channels);
        else if (cd[1] != m->cfg.cap_feat_dim) rc = zl_err("%s: cap is %lld wide, the model takes %d (is it the right text encoder?)", in, (long long)cd[1], m->cfg.cap_feat_dim);
        else if (td[0] != 1) rc = zl_err("%s: t must hold one value", in);
    }
    if (rc == 0 && nl) rc = zl_zimage_apply_loras(m, loras, str, nl, merge, force, print_line);
    if (rc == 0) {
        y = zl_try_malloc(sizeof(float) * (size_t)(xd[0] * xd[1] * xd[2]));
        t0 = zl_now();
        rc = y ? zl_zimage_forward(m, x, (int)xd[1], (int)xd[2], t[0], cap, (int)cd[0], y) : -1;
        if (rc == 0) zl_info("forward (%lldx%lld latent, %lld caption tokens) in %.2f s", (long long)xd[1], (long long)xd[2],
                             (long long)cd[0], zl_now() - t0);
    }
    if (rc == 0) {
        zl_st_writer *w = zl_stw_new();
        zl_stw_meta(w, "zlora.model", model);
        rc = zl_stw_add_f32(w, "out", 3, xd, y, ZL_F32);
        if (rc == 0) rc = zl_stw_write(w, out);
        zl_stw_free(w);
    }
    free(x); free(t); free(cap); free(y);
    zl_st_close(st);
    zl_zimage_free(m);
done:
    for (int i = 0; i < nl; i++) zl_lora_free(loras[i]);
    free(loras); free(str);
    return rc ? zl_cli_fail() : 0;
}

int zl_cmd_debug(int argc, char **argv) {
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
        printf("usage: zlora debug <tool> ...\n"
               "  sample-loras DIR   write small sample LoRA files (formats, adapters, a FLUX one, a broken one)\n"
               "  dit                run the Z-Image transformer on tensors from a file (see debug dit --help)\n"
               "  random-dit DIR     write a random Z-Image transformer (diffusers layout, streaming; full size by default)\n"
               "  random-te DIR      write a random Qwen3 text encoder (HF layout, streaming; Qwen3-4B by default)\n"
               "  tokenize           token ids of prompts (see debug tokenize --help)\n"
               "  te                 prompt -> Qwen3 caption features, hidden_states[-2] (see debug te --help)\n"
               "  vae                FLUX.1 VAE encode / decode of tensors (see debug vae --help)\n"
               "  noise              torch-compatible initial noise for a seed (see debug noise --help)\n"
               "  dit-grad           one training loss and the gradients of a LoRA's tensors (see debug dit-grad --help)\n"
               "  sigmas             the sampling schedule: --steps N [--shift S] -> JSON array\n"
               "  nano-data          procedural shape scenes with captions for the nano models (see debug nano-data --help)\n");
        return argc < 2 ? 2 : 0;
    }
    if (!strcmp(argv[1], "sample-loras")) {
        if (argc < 3) return zl_err("debug sample-loras: which folder?"), zl_cli_fail();
        if (!zl_is_dir(argv[2])) return zl_err("debug sample-loras: %s is not a folder", argv[2]), zl_cli_fail();
        if (sample_loras(argv[2])) return zl_cli_fail();
        zl_info("wrote sample LoRA files to %s", argv[2]);
        return 0;
    }
    if (!strcmp(argv[1], "dit")) return cmd_dit(argc - 1, argv + 1);
    if (!strcmp(argv[1], "tokenize")) return zl_cmd_debug_tokenize(argc - 1, argv + 1);
    if (!strcmp(argv[1], "te")) return zl_cmd_debug_te(argc - 1, argv + 1);
    if (!strcmp(argv[1], "vae")) return zl_cmd_debug_vae(argc - 1, argv + 1);
    if (!strcmp(argv[1], "random-dit")) return zl_cmd_debug_random_dit(argc - 1, argv + 1);
    if (!strcmp(argv[1], "random-te")) return zl_cmd_debug_random_te(argc - 1, argv + 1);
    if (!strcmp(argv[1], "noise")) return zl_cmd_debug_noise(argc - 1, argv + 1);
    if (!strcmp(argv[1], "dit-grad")) return zl_cmd_debug_dit_grad(argc - 1, argv + 1);
    if (!strcmp(argv[1], "sigmas")) return zl_cmd_debug_sigmas(argc - 1, argv + 1);
    if (!strcmp(argv[1], "nano-data")) return zl_cmd_debug_nano_data(argc - 1, argv + 1);
    fprintf(stderr, "error: unknown debug tool '%s'\n", argv[1]);
    return 2;
}
