/* cmd_generate.c — `zlora generate`: text to image with Z-Image (Turbo or Base), LoRA stacks, PNGs that
 * carry everything needed to remake them. See README.md "Generate" and src/gen/generate.h. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <cjson/cJSON.h>
#include "base/base.h"
#include "base/progress.h"
#include "cli/cli.h"
#include "gen/generate.h"
#include "io/image.h"
#include "io/safetensors.h"
#include "lora/lora.h"

static const char *usage =
    "usage: zlora generate -p PROMPT [options]\n"
    "model (a diffusers-layout folder, or ComfyUI's separate files; a flag overrides the folder's part):\n"
    "  --model DIR           transformer/, text_encoder/, tokenizer/, vae/, scheduler/ (+ model_index.json)\n"
    "  --dit F  --te P  --vae P  --tokenizer P\n"
    "sampling (--preset sets the defaults; any flag overrides them):\n"
    "  --preset turbo|base   turbo (default): 8 steps, no CFG, no negative prompt\n"
    "                        base: 30 steps, --cfg 4, negative prompt (default \"\")\n"
    "  -n, --negative TEXT   negative prompt (used when guidance is on)\n"
    "  --steps N             sampling steps (DiT evaluations per image; x2 with guidance)\n"
    "  --cfg G               guidance, standard form (ComfyUI, A1111, sd.cpp, DiffSynth): neg + G(pos - neg);\n"
    "                        1 = off\n"
    "  --guidance g          the same in the diffusers/musubi form: pos + g(pos - neg); 0 = off  (g = G - 1)\n"
    "  --cfg-norm C          cap |pred| at C x |pos| (reference pipeline's cfg_normalization; 0 = off)\n"
    "  --cfg-trunc T         no guidance once t = 1 - sigma > T (cfg_truncation; 1 = never, the default)\n"
    "  --shift S             sigma shift (default: scheduler/scheduler_config.json, else 3.0)\n"
    "  --sampler NAME        euler (the reference) | res_multistep (ComfyUI's Turbo template)\n"
    "  --seed S              noise = torch.randn(16, H/8, W/8, generator=torch.manual_seed(S)) on the CPU\n"
    "                        (default: random, printed and stored in the PNG)\n"
    "  --noise torch|torch-scalar  torch's x86 AVX2 kernel (default; ComfyUI/diffusers on x86) or its portable one\n"
    "  -W, --width N  -H, --height N   image size (default 1024x1024; multiples of 16)\n"
    "  --batch N             N images with seeds S, S+1, ...\n"
    "LoRA stack:\n"
    "  --lora FILE[:S]       repeatable, strength S (default 1, negative allowed); any format zlora reads\n"
    "  --lora-mode merge|runtime   merged into the weights (default) or as exact side branches\n"
    "  --force               apply a LoRA even where some keys do not fit this model (they are skipped)\n"
    "output and misc:\n"
    "  -o FILE               PNG path (default out.png); with --batch, FILE may hold a printf pattern such as\n"
    "                        name_%03d.png, else _001, _002... are added\n"
    "  --from IMAGE.png      take every setting from an image zlora made (flags given too override them)\n"
    "  --cache DIR | --no-cache   caption feature cache (default ~/.cache/zlora/te, or $ZLORA_CACHE/te)\n"
    "  --vae-tile N          decode in tiles of N latent pixels (lower memory at large sizes; default off)\n"
    "  --bf16-gemm           bf16 matrix products in the DiT (faster on CPUs with AVX512-BF16; not exact; default fp32)\n";

#define MAX_LORAS 32

typedef struct {
    const char *prompt, *negative, *model, *dit, *te, *vae, *tok, *out, *cache, *from;
    char *from_buf[64];  /* strings owned by --from */
    int nfrom;
    const char *preset;
    int steps, batch, W, H, vae_tile, no_cache, force, merge, bf16;
    int have_steps, have_cfg, have_shift, have_seed, have_sampler, have_neg;
    float guidance, cfg_norm, cfg_trunc;
    double shift;
    uint64_t seed;
    zl_sampler_kind sampler;
    zl_noise_kind noise;
    const char *lora_path[MAX_LORAS];
    float lora_s[MAX_LORAS];
    int nlora;
} gen_args;

static char *keep(gen_args *a, const char *s) {
    if (a->nfrom == 64) return (char *)s;
    return a->from_buf[a->nfrom++] = zl_xstrdup(s);
}

static int parse_num(const char *flag, const char *v, double lo, double hi, double *out) {
    char *end;
    errno = 0;
    double x = strtod(v, &end);
    if (end == v || *end || errno || !(x >= lo && x <= hi)) return zl_err("%s: '%s' is not a number in [%g, %g]", flag, v, lo, hi);
    *out = x;
    return 0;
}

/* Settings from the `zlora` chunk of an image made by zlora. */
static int load_from(gen_args *a, const char *png) {
    zl_image img;
    if (zl_image_read(png, NULL, &img)) return -1;
    const char *js = zl_image_text(&img, "zlora");
    if (!js) { zl_image_free(&img); return zl_err("%s: no zlora settings in this image (it was not made by zlora generate)", png); }
    cJSON *j = cJSON_Parse(js);
    zl_image_free(&img);
    if (!j) return zl_err("%s: the zlora settings chunk is not valid JSON", png);
    const cJSON *it;
#define STR(k, dst) if (cJSON_IsString(it = cJSON_GetObjectItemCaseSensitive(j, k))) dst = keep(a, it->valuestring)
#define NUM(k) (cJSON_IsNumber(it = cJSON_GetObjectItemCaseSensitive(j, k)))
    STR("prompt", a->prompt);
    STR("negative", a->negative);
    if (cJSON_IsString(cJSON_GetObjectItemCaseSensitive(j, "negative"))) a->have_neg = 1;
    STR("model", a->model);
    STR("dit", a->dit);
    STR("te", a->te);
    STR("vae", a->vae);
    STR("tokenizer", a->tok);
    if (NUM("steps")) { a->steps = it->valueint; a->have_steps = 1; }
    if (NUM("guidance")) { a->guidance = (float)it->valuedouble; a->have_cfg = 1; }
    if (NUM("cfg_norm")) a->cfg_norm = (float)it->valuedouble;
    if (NUM("cfg_trunc")) a->cfg_trunc = (float)it->valuedouble;
    if (NUM("shift")) { a->shift = it->valuedouble; a->have_shift = 1; }
    if (NUM("width")) a->W = it->valueint;
    if (NUM("height")) a->H = it->valueint;
    if (cJSON_IsString(it = cJSON_GetObjectItemCaseSensitive(j, "seed"))) { a->seed = strtoull(it->valuestring, NULL, 10); a->have_seed = 1; }
    if (cJSON_IsString(it = cJSON_GetObjectItemCaseSensitive(j, "sampler")) && zl_sampler_parse(it->valuestring, &a->sampler) == 0) a->have_sampler = 1;
    if (cJSON_IsString(it = cJSON_GetObjectItemCaseSensitive(j, "noise"))) a->noise = strcmp(it->valuestring, "torch-scalar") ? ZL_NOISE_TORCH : ZL_NOISE_TORCH_SCALAR;
    if (cJSON_IsString(it = cJSON_GetObjectItemCaseSensitive(j, "lora_mode"))) a->merge = strcmp(it->valuestring, "runtime") != 0;
    const cJSON *ls = cJSON_GetObjectItemCaseSensitive(j, "loras"), *l;
    cJSON_ArrayForEach(l, ls) {
        const cJSON *p = cJSON_GetObjectItemCaseSensitive(l, "path"), *s = cJSON_GetObjectItemCaseSensitive(l, "strength"),
                    *h = cJSON_GetObjectItemCaseSensitive(l, "hash");
        if (!cJSON_IsString(p) || !cJSON_IsNumber(s) || a->nlora == MAX_LORAS) continue;
        a->lora_path[a->nlora] = keep(a, p->valuestring);
        a->lora_s[a->nlora] = (float)s->valuedouble;
        char got[11];
        if (cJSON_IsString(h) && zl_file_autov2(p->valuestring, got) == 0 && strcmp(got, h->valuestring))
            zl_warn("%s has changed since %s was made (hash %s, then %s)", p->valuestring, png, got, h->valuestring);
        zl_clear_error();
        a->nlora++;
    }
    cJSON_Delete(j);
#undef STR
#undef NUM
    return 0;
}

static char *out_name(const char *pat, int i, int batch) {
    if (batch == 1) return zl_xstrdup(pat);
    if (strchr(pat, '%')) return zl_xasprintf(pat, i + 1);
    const char *dot = strrchr(pat, '.');
    if (!dot || strchr(dot, '/')) return zl_xasprintf("%s_%03d", pat, i + 1);
    return zl_xasprintf("%.*s_%03d%s", (int)(dot - pat), pat, i + 1, dot);
}

/* Only %d-style patterns (with flags and width) are accepted, so the name cannot be a format attack. */
static int check_pattern(const char *pat) {
    int conv = 0;
    for (const char *p = pat; *p; p++) {
        if (*p != '%') continue;
        if (p[1] == '%') { p++; continue; }
        p++;
        while (*p == '0' || *p == '-' || *p == ' ') p++;
        while (*p >= '0' && *p <= '9') p++;
        if (*p != 'd' || ++conv > 1) return zl_err("-o %s: only one %%d-style pattern (e.g. name_%%03d.png) is allowed", pat);
    }
    return 0;
}

typedef struct { zl_progress pr; double t_last; } step_ud;
static void on_step(void *ud, int i, int n) {
    step_ud *u = ud;
    double now = zl_now();
    if (zl_log_level >= 2 && u->pr.tty) fputc('\n', stderr); /* not on the progress bar's line */
    zl_debug("step %d/%d in %.2f s", i, n, now - u->t_last); /* -v: the time of each step (bench/generate.sh) */
    u->t_last = now;
    zl_progress_update(&u->pr, i);
}

static void print_line(const char *s) { zl_info("%s", s); }

int zl_cmd_generate(int argc, char **argv) {
    gen_args a;
    memset(&a, 0, sizeof a);
    a.W = a.H = 1024;
    a.batch = 1;
    a.cfg_trunc = 1.0f;
    a.merge = 1;
    a.out = "out.png";
    for (int i = 1; i < argc; i++) /* --from first: the other flags override it */
        if (!strcmp(argv[i], "--from") && i + 1 < argc && load_from(&a, argv[i + 1])) return zl_cli_fail();
    int rc = 0;
    double v;
    for (int i = 1; i < argc && rc == 0; i++) {
        const char *f = argv[i], *x = i + 1 < argc ? argv[i + 1] : NULL;
#define ARG(name) (!strcmp(f, name) && x && ++i)
        if (!strcmp(f, "--help") || !strcmp(f, "-h")) { fputs(usage, stdout); return 0; }
        else if (ARG("--from")) {}
        else if (ARG("-p") || ARG("--prompt")) a.prompt = x;
        else if (ARG("-n") || ARG("--negative")) { a.negative = x; a.have_neg = 1; }
        else if (ARG("--model")) a.model = x;
        else if (ARG("--dit")) a.dit = x;
        else if (ARG("--te")) a.te = x;
        else if (ARG("--vae")) a.vae = x;
        else if (ARG("--tokenizer")) a.tok = x;
        else if (ARG("--preset")) {
            if (strcmp(x, "turbo") && strcmp(x, "base")) rc = zl_err("--preset must be turbo or base");
            a.preset = x;
        } else if (ARG("--steps")) { rc = parse_num(f, x, 1, 10000, &v); a.steps = (int)v; a.have_steps = 1; }
        else if (ARG("--cfg")) { rc = parse_num(f, x, -100, 100, &v); a.guidance = (float)(v - 1); a.have_cfg = 1; }
        else if (ARG("--guidance")) { rc = parse_num(f, x, -100, 100, &v); a.guidance = (float)v; a.have_cfg = 1; }
        else if (ARG("--cfg-norm")) { rc = parse_num(f, x, 0, 100, &v); a.cfg_norm = (float)v; }
        else if (ARG("--cfg-trunc")) { rc = parse_num(f, x, 0, 100, &v); a.cfg_trunc = (float)v; }
        else if (ARG("--shift")) { rc = parse_num(f, x, 1e-3, 1e3, &v); a.shift = v; a.have_shift = 1; }
        else if (ARG("--sampler")) { rc = zl_sampler_parse(x, &a.sampler); a.have_sampler = 1; }
        else if (ARG("--seed")) {
            char *end;
            errno = 0;
            unsigned long long s = strtoull(x, &end, 10);
            if (end == x || *end || errno || x[0] == '-') rc = zl_err("--seed: '%s' is not a non-negative integer", x);
            a.seed = s;
            a.have_seed = 1;
        } else if (ARG("--noise")) {
            if (!strcmp(x, "torch")) a.noise = ZL_NOISE_TORCH;
            else if (!strcmp(x, "torch-scalar")) a.noise = ZL_NOISE_TORCH_SCALAR;
            else rc = zl_err("--noise must be torch or torch-scalar");
        } else if (ARG("-W") || ARG("--width")) { rc = parse_num(f, x, 1, 16384, &v); a.W = (int)v; }
        else if (ARG("-H") || ARG("--height")) { rc = parse_num(f, x, 1, 16384, &v); a.H = (int)v; }
        else if (ARG("--batch")) { rc = parse_num(f, x, 1, 10000, &v); a.batch = (int)v; }
        else if (ARG("--lora")) {
            if (a.nlora == MAX_LORAS) { rc = zl_err("at most %d LoRAs", MAX_LORAS); break; }
            char path[4096];
            zl_cli_split_strength(x, path, sizeof path, &a.lora_s[a.nlora]);
            a.lora_path[a.nlora++] = keep(&a, path);
        } else if (ARG("--lora-mode")) {
            if (!strcmp(x, "merge")) a.merge = 1;
            else if (!strcmp(x, "runtime")) a.merge = 0;
            else rc = zl_err("--lora-mode must be merge or runtime");
        } else if (!strcmp(f, "--force")) a.force = 1;
        else if (ARG("-o") || ARG("--out")) a.out = x;
        else if (ARG("--cache")) a.cache = x;
        else if (!strcmp(f, "--no-cache")) a.no_cache = 1;
        else if (ARG("--vae-tile")) { rc = parse_num(f, x, 8, 4096, &v); a.vae_tile = (int)v; }
        else if (!strcmp(f, "--bf16-gemm")) a.bf16 = 1;
        else rc = zl_err("generate: unexpected argument '%s' (see zlora generate --help)", f);
#undef ARG
    }
    if (rc == 0 && !a.prompt) rc = zl_err("generate: a prompt is required (-p TEXT); see zlora generate --help");
    if (rc == 0 && !a.model && !a.dit) rc = zl_err("generate: give --model DIR (or --dit/--te/--vae/--tokenizer)");
    if (rc == 0) rc = check_pattern(a.out);
    zl_model_parts mp;
    memset(&mp, 0, sizeof mp);
    if (rc == 0) rc = zl_model_parts_resolve(a.model, a.dit, a.te, a.tok, a.vae, &mp);
    if (rc == 0 && !mp.dit) rc = zl_err("%s has no transformer/ folder: give the DiT with --dit", a.model);
    if (rc == 0 && !mp.vae) rc = zl_err("%s: no VAE: give --vae", a.model ? a.model : "generate");
    /* preset, then flags */
    int base = a.preset && !strcmp(a.preset, "base");
    zl_gen_params p;
    zl_gen_default_params(&p);
    p.steps = a.have_steps ? a.steps : base ? 30 : 8;
    p.guidance = a.have_cfg ? a.guidance : base ? 3.0f : 0.0f;
    p.shift = a.have_shift ? a.shift : mp.shift;
    p.cfg_norm = a.cfg_norm;
    p.cfg_trunc = a.cfg_trunc;
    p.sampler = a.sampler;
    p.noise = a.noise;
    const char *negative = a.have_neg ? a.negative : "";
    if (rc == 0 && !base && a.have_neg && p.guidance == 0.0f)
        zl_warn("a negative prompt does nothing without guidance (turbo preset: add --cfg G > 1, or use --preset base)");
    if (!a.have_seed) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        a.seed = ((uint64_t)ts.tv_nsec ^ ((uint64_t)ts.tv_sec << 20)) % 4294967296ull;
    }
    if (a.bf16) zl_ops_set_bf16_gemm(1);
    double t_start = zl_now();
    zl_feat feats[2];
    memset(feats, 0, sizeof feats);
    char *cache = NULL;
    if (rc == 0) {
        cache = a.no_cache ? NULL : a.cache ? zl_xstrdup(a.cache) : zl_gen_default_cache();
        const char *prompts[2] = {a.prompt, negative};
        rc = zl_gen_features(&mp, cache, prompts, p.guidance != 0.0f ? 2 : 1, feats);
    }
    zl_zimage *m = NULL;
    zl_vae *vae = NULL;
    zl_lora *loras[MAX_LORAS] = {0};
    char hashes[MAX_LORAS][11];
    if (rc == 0) {
        double t0 = zl_now();
        zl_zimage_opts o;
        zl_zimage_default_opts(&o);
        rc = zl_zimage_load(mp.dit, &o, &m);
        if (rc == 0) zl_info("transformer: %s (%s naming, dim %d, %d layers) loaded in %.1f s", m->path, m->naming, m->cfg.dim, m->cfg.n_layers,
                             zl_now() - t0);
        if (rc == 0) zl_cli_auto_threads(m->cfg.dim);
    }
    for (int i = 0; i < a.nlora && rc == 0; i++) {
        rc = zl_lora_load(a.lora_path[i], &loras[i]);
        if (rc == 0) rc = zl_file_autov2(a.lora_path[i], hashes[i]);
    }
    if (rc == 0 && a.nlora) rc = zl_zimage_apply_loras(m, loras, a.lora_s, a.nlora, a.merge, a.force, print_line);
    if (rc == 0) {
        zl_vae_opts vo;
        zl_vae_default_opts(&vo);
        rc = zl_vae_load(mp.vae, &vo, &vae);
        if (rc == 0 && vae->cfg.latent_channels != m->cfg.in_channels)
            rc = zl_err("the VAE %s has %d latent channels but the DiT takes %d: not a Z-Image (FLUX.1) VAE", mp.vae,
                        vae->cfg.latent_channels, m->cfg.in_channels);
    }
    int f = vae ? zl_vae_factor(vae) : 8;
    if (rc == 0) rc = zl_gen_check_size(a.W, a.H, f * m->cfg.patch);
    /* the parameters text (A1111 style) and the machine-readable settings */
    char model_name[256] = "";
    if (rc == 0) zl_gen_display_name(mp.dir ? mp.dir : mp.dit, model_name, sizeof model_name);
    int h = a.H / f, w = a.W / f;
    size_t n = (size_t)(m ? m->cfg.in_channels : 16) * (size_t)h * (size_t)w;
    float *x = rc == 0 ? zl_try_malloc(sizeof(float) * n) : NULL;
    uint8_t *rgb = rc == 0 ? zl_try_malloc((size_t)a.W * (size_t)a.H * 3) : NULL;
    if (rc == 0 && (!x || !rgb)) rc = -1;
    if (rc == 0)
        zl_info("%d image%s %dx%d, %s %d steps, shift %g, cfg %g (guidance %g)%s, seed %llu", a.batch, a.batch == 1 ? "" : "s", a.W, a.H,
                zl_sampler_name(p.sampler), p.steps, p.shift, (double)p.guidance + 1, (double)p.guidance,
                p.guidance != 0.0f ? "" : " (off)", (unsigned long long)a.seed);
    for (int b = 0; b < a.batch && rc == 0; b++) {
        uint64_t seed = a.seed + (uint64_t)b;
        zl_torch_randn_ex(seed, x, n, p.noise);
        step_ud ud;
        char label[64];
        snprintf(label, sizeof label, a.batch > 1 ? "image %d/%d" : "sampling", b + 1, a.batch);
        zl_progress_start(&ud.pr, label, p.steps, "steps");
        ud.t_last = zl_now();
        rc = zl_gen_sample(m, &p, &feats[0], p.guidance != 0.0f ? &feats[1] : NULL, x, h, w, on_step, &ud);
        if (rc) break;
        zl_progress_end(&ud.pr, p.steps);
        rc = zl_gen_decode(vae, x, h, w, a.vae_tile, rgb);
        if (rc) break;
        zl_gen_meta meta = {.prompt = a.prompt, .negative = negative, .store_negative = a.have_neg, .p = p, .seed = seed,
                            .width = a.W, .height = a.H, .model_name = model_name, .model = mp.dir,
                            .dit = a.dit ? mp.dit : NULL, .te = a.te ? mp.te : NULL, .vae = a.vae ? mp.vae : NULL,
                            .tok = a.tok ? mp.tok : NULL, .nlora = a.nlora, .lora_path = a.lora_path, .lora_s = a.lora_s,
                            .lora_hash = (const char (*)[11])hashes, .merge = a.merge};
        char *path = out_name(a.out, b, a.batch);
        rc = zl_gen_write_png(path, rgb, &meta);
        if (rc == 0) zl_info("wrote %s (seed %llu)", path, (unsigned long long)seed);
        free(path);
    }
    if (rc == 0) {
        struct rusage ru;
        getrusage(RUSAGE_SELF, &ru);
        zl_info("done in %.1f s, peak memory %.0f MB", zl_now() - t_start, (double)ru.ru_maxrss / 1024.0);
    }
    free(x);
    free(rgb);
    for (int i = 0; i < 2; i++) zl_feat_free(&feats[i]);
    for (int i = 0; i < a.nlora; i++) zl_lora_free(loras[i]);
    zl_vae_free(vae);
    zl_zimage_free(m);
    zl_model_parts_free(&mp);
    free(cache);
    for (int i = 0; i < a.nfrom; i++) free(a.from_buf[i]);
    return rc ? zl_cli_fail() : 0;
}

/* `zlora debug noise --seed S --shape C,H,W --out OUT [--variant torch|torch-scalar]` */
int zl_cmd_debug_noise(int argc, char **argv) {
    const char *usage_n = "usage: zlora debug noise --seed S --shape D0[,D1...] --out OUT.safetensors [--noise torch|torch-scalar]\n"
                          "  OUT holds `noise`: torch.randn(shape, generator=torch.manual_seed(S)) on the CPU, float32\n";
    const char *out = NULL, *shape = NULL;
    uint64_t seed = 0;
    int have_seed = 0;
    zl_noise_kind kind = ZL_NOISE_TORCH;
    for (int i = 1; i < argc; i++) {
        const char *f = argv[i], *x = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(f, "--help") || !strcmp(f, "-h")) { fputs(usage_n, stdout); return 0; }
        else if (!strcmp(f, "--seed") && x) {
            char *end;
            errno = 0;
            seed = strtoull(x, &end, 10);
            if (end == x || *end || errno || x[0] == '-') return zl_err("--seed: '%s' is not a non-negative integer", x), zl_cli_fail();
            have_seed = 1;
            i++;
        } else if (!strcmp(f, "--shape") && x) { shape = x; i++; }
        else if (!strcmp(f, "--out") && x) { out = x; i++; }
        else if (!strcmp(f, "--noise") && x) {
            if (!strcmp(x, "torch")) kind = ZL_NOISE_TORCH;
            else if (!strcmp(x, "torch-scalar")) kind = ZL_NOISE_TORCH_SCALAR;
            else return zl_err("--noise must be torch or torch-scalar"), zl_cli_fail();
            i++;
        } else { fprintf(stderr, "error: debug noise: unexpected argument '%s'\n%s", f, usage_n); return 2; }
    }
    if (!have_seed || !shape || !out) { fprintf(stderr, "error: debug noise: --seed, --shape and --out are required\n%s", usage_n); return 2; }
    int64_t dims[8];
    int nd = 0;
    size_t n = 1;
    for (const char *p = shape; *p;) {
        char *end;
        errno = 0;
        long long d = strtoll(p, &end, 10);
        if (end == p || errno || d <= 0 || d > (1ll << 31) || nd == 8) return zl_err("--shape: '%s' is not a list of up to 8 positive sizes", shape), zl_cli_fail();
        dims[nd++] = d;
        if (zl_mul_size(n, (size_t)d, &n) || n > ((size_t)1 << 32)) return zl_err("--shape %s: too large", shape), zl_cli_fail();
        p = *end == ',' ? end + 1 : end;
        if (*end && *end != ',') return zl_err("--shape: unexpected '%c' in '%s'", *end, shape), zl_cli_fail();
    }
    float *v = zl_try_malloc(sizeof(float) * n);
    if (!v) return zl_cli_fail();
    zl_torch_randn_ex(seed, v, n, kind);
    zl_st_writer *w = zl_stw_new();
    char sb[32];
    snprintf(sb, sizeof sb, "%llu", (unsigned long long)seed);
    zl_stw_meta(w, "seed", sb);
    int rc = zl_stw_add_f32(w, "noise", nd, dims, v, ZL_F32);
    if (rc == 0) rc = zl_stw_write(w, out);
    zl_stw_free(w);
    free(v);
    return rc ? zl_cli_fail() : 0;
}

/* `zlora debug sigmas --steps N [--shift S]`: the N+1 sigmas as a JSON array. */
int zl_cmd_debug_sigmas(int argc, char **argv) {
    const char *usage_s = "usage: zlora debug sigmas --steps N [--shift S]   (prints the N+1 sigmas as a JSON array; shift default 3)\n";
    double steps = 0, shift = 3.0;
    for (int i = 1; i < argc; i++) {
        const char *f = argv[i], *x = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(f, "--help") || !strcmp(f, "-h")) { fputs(usage_s, stdout); return 0; }
        else if (!strcmp(f, "--steps") && x) { if (parse_num(f, x, 1, 10000, &steps)) return zl_cli_fail(); i++; }
        else if (!strcmp(f, "--shift") && x) { if (parse_num(f, x, 1e-3, 1e3, &shift)) return zl_cli_fail(); i++; }
        else { fprintf(stderr, "error: debug sigmas: unexpected argument '%s'\n%s", f, usage_s); return 2; }
    }
    if (steps < 1) { fprintf(stderr, "error: debug sigmas: --steps is required\n%s", usage_s); return 2; }
    int n = (int)steps;
    float *sig = zl_xmalloc(sizeof(float) * (size_t)(n + 1));
    zl_sigmas(n, shift, sig);
    printf("[");
    for (int i = 0; i <= n; i++) printf("%s%.9g", i ? ", " : "", (double)sig[i]);
    printf("]\n");
    free(sig);
    return 0;
}
