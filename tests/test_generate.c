/* test_generate.c — sampling and `zlora generate`: the sigma schedule against the spec's numbers, the
 * noise bit for bit against Debian's torch (tests/data/gen/noise.safetensors), the samplers against a
 * numpy implementation (tests/ref/sample_ref.py → sampler.json), guidance, and end-to-end runs on a tiny
 * model folder assembled from the test models (tests/tiny_model.c): determinism, LoRA strength 0 and ±s,
 * presets, PNG metadata and --from, refusals. */
#include "test.h"
#include "base/base.h"
#include "gen/generate.h"
#include "gen/sample.h"
#include "io/image.h"
#include "io/safetensors.h"

#include <cjson/cJSON.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

TEST(gen_sigmas_match_the_spec) {
    float s[9];
    zl_sigmas(8, 3.0, s);
    /* spec §6: Turbo, N=8, shift=3 */
    const double want[9] = {1.0, 0.954545, 0.9, 0.833333, 0.75, 0.642857, 0.5, 0.3, 0.0};
    for (int i = 0; i < 9; i++) CHECK_NEAR(s[i], want[i], 1e-6);
    float l[4];
    zl_sigmas(3, 1.0, l); /* shift 1: plain linspace(1, 1/3, 3) */
    CHECK_NEAR(l[0], 1.0, 1e-7); CHECK_NEAR(l[1], 2.0 / 3, 1e-7); CHECK_NEAR(l[2], 1.0 / 3, 1e-7); CHECK(l[3] == 0);
    float one[2];
    zl_sigmas(1, 6.0, one);
    CHECK(one[0] == 1.0f && one[1] == 0.0f);
    char *out = NULL, cmd[512];
    snprintf(cmd, sizeof cmd, "%s debug sigmas --steps 8 --shift 3", zl_test_bin());
    CHECK(zl_test_run(cmd, &out) == 0 && out);
    cJSON *j = cJSON_Parse(out);
    free(out);
    CHECK(cJSON_IsArray(j) && cJSON_GetArraySize(j) == 9);
    for (int i = 0; i < 9; i++) CHECK_NEAR(cJSON_GetArrayItem(j, i)->valuedouble, want[i], 1e-6);
    cJSON_Delete(j);
}

TEST(gen_noise_is_torch_randn_bit_for_bit) {
    zl_st *st;
    CHECK(zl_st_open("tests/data/gen/noise.safetensors", &st) == 0);
    int n_checked = 0;
    for (int i = 0; i < zl_st_count(st); i++) {
        const zl_tensor_info *t = zl_st_tensor(st, i);
        char variant[16];
        unsigned long long seed;
        size_t n;
        CHECK(sscanf(t->name, "%15[a-z]_%llu_%zu", variant, &seed, &n) == 3);
        float *want = zl_st_read_f32(st, t), *got = malloc(sizeof(float) * n);
        CHECK(want && got && (size_t)t->shape[0] == n);
        zl_torch_randn_ex(seed, got, n, strcmp(variant, "scalar") ? ZL_NOISE_TORCH : ZL_NOISE_TORCH_SCALAR);
        size_t bad = 0;
        for (size_t k = 0; k < n; k++) bad += memcmp(&want[k], &got[k], 4) != 0;
        free(want);
        free(got);
        CHECK_MSG(bad == 0, "%s: %zu of %zu values differ from torch", t->name, bad, n);
        n_checked++;
    }
    zl_st_close(st);
    CHECK(n_checked == 12);
    /* the two kernels really differ, so the golden tells them apart */
    float a[1008], b[1008];
    zl_torch_randn_ex(7, a, 1008, ZL_NOISE_TORCH);
    zl_torch_randn_ex(7, b, 1008, ZL_NOISE_TORCH_SCALAR);
    CHECK(memcmp(a, b, sizeof a) != 0);
}

TEST(gen_debug_noise_cli) {
    char cmd[1024], path[512];
    snprintf(path, sizeof path, "%s/noise.safetensors", zl_test_dir());
    snprintf(cmd, sizeof cmd, "%s debug noise --seed 42 --shape 37 --out %s", zl_test_bin(), path);
    CHECK(zl_test_run(cmd, NULL) == 0);
    zl_st *st, *g;
    CHECK(zl_st_open(path, &st) == 0);
    CHECK(zl_st_open("tests/data/gen/noise.safetensors", &g) == 0);
    float *a = zl_st_read_f32(st, zl_st_find(st, "noise")), *b = zl_st_read_f32(g, zl_st_find(g, "torch_42_37"));
    CHECK(a && b && memcmp(a, b, 37 * sizeof(float)) == 0);
    free(a); free(b);
    zl_st_close(st);
    zl_st_close(g);
    snprintf(cmd, sizeof cmd, "%s debug noise --seed -1 --shape 3 --out %s 2>&1", zl_test_bin(), path);
    CHECK(zl_test_run(cmd, NULL) != 0);
    snprintf(cmd, sizeof cmd, "%s debug noise --seed 1 --shape 3,x --out %s 2>&1", zl_test_bin(), path);
    CHECK(zl_test_run(cmd, NULL) != 0);
}

static void toy_velocity(const float *x, float sig, float *v, int n) {
    for (int k = 0; k < n; k++) v[k] = tanhf(x[k]) * (0.5f + sig) - 0.3f * cosf(3 * sig) * x[k] + 0.2f;
}

TEST(gen_samplers_match_numpy) {
    FILE *f = fopen("tests/data/gen/sampler.json", "rb");
    CHECK(f);
    char *buf = malloc(1 << 20);
    size_t nb = fread(buf, 1, (1 << 20) - 1, f);
    fclose(f);
    buf[nb] = 0;
    cJSON *j = cJSON_Parse(buf);
    free(buf);
    CHECK(j);
    const cJSON *x0 = cJSON_GetObjectItem(j, "x0"), *c;
    int n = cJSON_GetArraySize(x0), ncase = 0;
    cJSON_ArrayForEach(c, cJSON_GetObjectItem(j, "cases")) {
        int steps = cJSON_GetObjectItem(c, "steps")->valueint;
        double shift = cJSON_GetObjectItem(c, "shift")->valuedouble;
        float sig[64];
        zl_sigmas(steps, shift, sig);
        const cJSON *ws = cJSON_GetObjectItem(c, "sigmas");
        for (int i = 0; i <= steps; i++) CHECK_NEAR(sig[i], cJSON_GetArrayItem(ws, i)->valuedouble, 1e-7);
        for (int kind = 0; kind < ZL_SAMPLER_COUNT; kind++) {
            float x[64], v[64];
            for (int k = 0; k < n; k++) x[k] = (float)cJSON_GetArrayItem(x0, k)->valuedouble;
            zl_sampler s;
            CHECK(zl_sampler_init(&s, (zl_sampler_kind)kind, (size_t)n) == 0);
            for (int i = 0; i < steps; i++) {
                toy_velocity(x, sig[i], v, n);
                zl_sampler_step(&s, x, v, sig, i);
            }
            zl_sampler_free(&s);
            const cJSON *want = cJSON_GetObjectItem(c, zl_sampler_name((zl_sampler_kind)kind));
            double maxd = 0;
            for (int k = 0; k < n; k++) maxd = fmax(maxd, fabs(x[k] - cJSON_GetArrayItem(want, k)->valuedouble));
            CHECK_MSG(maxd < 2e-5, "%s, %d steps, shift %g: max |C - numpy| = %g", zl_sampler_name((zl_sampler_kind)kind), steps, shift, maxd);
        }
        ncase++;
    }
    cJSON_Delete(j);
    CHECK(ncase == 4);
    /* the two samplers differ beyond the first step (the golden can tell them apart) */
    float sig[9], xa[8] = {1, -1, 2, 0.5f, -0.3f, 0, 3, -2}, xb[8], v[8];
    memcpy(xb, xa, sizeof xa);
    zl_sigmas(8, 3.0, sig);
    zl_sampler sa, sb;
    zl_sampler_init(&sa, ZL_SAMPLER_EULER, 8);
    zl_sampler_init(&sb, ZL_SAMPLER_RES_MULTISTEP, 8);
    for (int i = 0; i < 8; i++) {
        toy_velocity(xa, sig[i], v, 8); zl_sampler_step(&sa, xa, v, sig, i);
        toy_velocity(xb, sig[i], v, 8); zl_sampler_step(&sb, xb, v, sig, i);
    }
    zl_sampler_free(&sa);
    zl_sampler_free(&sb);
    CHECK(fabsf(xa[0] - xb[0]) > 1e-4f);
}

TEST(gen_cfg_forms) {
    float pos[4] = {1, 2, 3, 4}, neg[4] = {0, 1, 0, 1}, pred[4];
    zl_cfg_combine(pred, pos, neg, 4, 0.0f, 0.0f);
    CHECK(memcmp(pred, pos, sizeof pos) == 0);
    zl_cfg_combine(pred, pos, neg, 4, 3.0f, 0.0f); /* diffusers g = 3 ⇔ standard cfg 4: neg + 4(pos − neg) */
    for (int i = 0; i < 4; i++) CHECK_NEAR(pred[i], neg[i] + 4.0f * (pos[i] - neg[i]), 1e-6);
    zl_cfg_combine(pred, pos, neg, 4, 3.0f, 1.0f); /* normalisation: ‖pred‖ capped at ‖pos‖ */
    double np = 0, nq = 0;
    for (int i = 0; i < 4; i++) { np += pos[i] * pos[i]; nq += pred[i] * pred[i]; }
    CHECK_NEAR(sqrt(nq), sqrt(np), 1e-5);
    CHECK(zl_cfg_active(3.0f, 1.0f, 0.2f) && !zl_cfg_active(0.0f, 1.0f, 0.5f));
    CHECK(zl_cfg_active(3.0f, 0.5f, 0.6f) && !zl_cfg_active(3.0f, 0.5f, 0.4f)); /* truncation: off once 1 − σ > 0.5 */
    zl_sampler_kind k;
    CHECK(zl_sampler_parse("res_multistep", &k) == 0 && k == ZL_SAMPLER_RES_MULTISTEP);
    CHECK(zl_sampler_parse("dpm++", &k) != 0 && strstr(zl_last_error(), "euler"));
}

/* ---- end to end on a tiny model folder ----------------------------------------------------------- */

/* Runs `zlora generate --model <tiny> -W 24 -H 16 --no-cache <args> -o <dir>/<name>`; exit code. */
static int gen(const char *name, const char *args) {
    char cmd[4096];
    snprintf(cmd, sizeof cmd, "%s -q generate --model %s -p 'a red cube on a blue floor' -W 24 -H 16 --no-cache %s -o %s/%s 2>&1",
             zl_test_bin(), zl_test_tiny_model(), args, zl_test_dir(), name);
    return zl_test_run(cmd, NULL);
}

static uint8_t *pixels(const char *name, int *w, int *h) {
    char p[600];
    snprintf(p, sizeof p, "%s/%s", zl_test_dir(), name);
    zl_image img;
    if (zl_image_read(p, NULL, &img)) return NULL;
    uint8_t *rgb = zl_image_to_rgb8(&img);
    *w = img.w;
    *h = img.h;
    zl_image_free(&img);
    return rgb;
}

/* max |a − b| over the pixels of two images of the same size; −1 when they cannot be compared */
static int max_diff(const char *a, const char *b) {
    int wa, ha, wb, hb;
    uint8_t *pa = pixels(a, &wa, &ha), *pb = pixels(b, &wb, &hb);
    int d = -1;
    if (pa && pb && wa == wb && ha == hb) {
        d = 0;
        for (int i = 0; i < wa * ha * 3; i++) d = abs(pa[i] - pb[i]) > d ? abs(pa[i] - pb[i]) : d;
    }
    free(pa);
    free(pb);
    return d;
}

static int same_file(const char *a, const char *b) {
    char cmd[1400];
    snprintf(cmd, sizeof cmd, "cmp -s %s/%s %s/%s", zl_test_dir(), a, zl_test_dir(), b);
    return zl_test_run(cmd, NULL) == 0;
}

TEST(gen_tiny_model_deterministic) {
    CHECK(zl_test_tiny_model());
    CHECK(gen("a1.png", "--seed 7") == 0);
    CHECK(gen("a2.png", "--seed 7") == 0);
    CHECK(same_file("a1.png", "a2.png"));
    CHECK(gen("b.png", "--seed 8") == 0);
    CHECK(max_diff("a1.png", "b.png") > 10); /* another seed, another image */
    int w, h;
    uint8_t *p = pixels("a1.png", &w, &h);
    CHECK(p && w == 24 && h == 16);
    free(p);
    /* the batch uses seeds s, s+1: its second image is the seed-8 image */
    CHECK(gen("batch_%02d.png", "--seed 7 --batch 2") == 0);
    CHECK(same_file("batch_02.png", "b.png"));
    CHECK(max_diff("batch_01.png", "a1.png") == 0);
}

TEST(gen_tiny_model_presets_and_samplers) {
    CHECK(zl_test_tiny_model());
    CHECK(gen("turbo.png", "--seed 3") == 0);
    CHECK(gen("base.png", "--seed 3 --preset base --steps 8") == 0);
    CHECK(max_diff("turbo.png", "base.png") > 0);
    /* --cfg G (standard) ⇔ --guidance G − 1 (diffusers): the same image */
    CHECK(gen("cfg.png", "--seed 3 --cfg 2.5 -n 'blurry' --steps 4") == 0);
    CHECK(gen("guid.png", "--seed 3 --guidance 1.5 -n 'blurry' --steps 4") == 0);
    CHECK(max_diff("cfg.png", "guid.png") == 0);
    CHECK(gen("cfg1.png", "--seed 3 --cfg 1 -n 'blurry' --steps 4") == 0); /* cfg 1 = off = no negative */
    CHECK(gen("plain4.png", "--seed 3 --steps 4") == 0);
    CHECK(max_diff("cfg1.png", "plain4.png") == 0);
    CHECK(gen("res.png", "--seed 3 --sampler res_multistep") == 0);
    CHECK(max_diff("res.png", "turbo.png") > 0);
    CHECK(gen("shift.png", "--seed 3 --shift 6") == 0);
    CHECK(max_diff("shift.png", "turbo.png") > 0);
}

TEST(gen_tiny_model_lora_strengths) {
    CHECK(zl_test_tiny_model());
    const char *lora = "tests/data/zimage/tiny_a/lora/lora_peft.safetensors";
    char args[600];
    CHECK(gen("nolora.png", "--seed 5") == 0);
    snprintf(args, sizeof args, "--seed 5 --lora %s:0", lora);
    CHECK(gen("zero.png", args) == 0);
    CHECK(same_file("zero.png", "nolora.png") || max_diff("zero.png", "nolora.png") == 0);
    snprintf(args, sizeof args, "--seed 5 --lora %s:1.5", lora);
    CHECK(gen("with.png", args) == 0);
    CHECK(max_diff("with.png", "nolora.png") > 0);
    /* +s then −s cancels (runtime branches: exact up to float rounding; merged: up to bf16 rounding) */
    snprintf(args, sizeof args, "--seed 5 --lora %s:1.5 --lora %s:-1.5 --lora-mode runtime", lora, lora);
    CHECK(gen("cancel_rt.png", args) == 0);
    CHECK(max_diff("cancel_rt.png", "nolora.png") <= 1);
    snprintf(args, sizeof args, "--seed 5 --lora %s:1.5 --lora %s:-1.5", lora, lora);
    CHECK(gen("cancel_m.png", args) == 0);
    CHECK(max_diff("cancel_m.png", "nolora.png") <= 2);
    /* merged and runtime agree */
    snprintf(args, sizeof args, "--seed 5 --lora %s:1.5 --lora-mode runtime", lora);
    CHECK(gen("with_rt.png", args) == 0);
    CHECK(max_diff("with_rt.png", "with.png") <= 2);
    /* a LoRA for another model is refused, naming what it is; --force skips what does not fit */
    char cmd[1400], *out = NULL;
    snprintf(cmd, sizeof cmd, "mkdir -p %s/sl && %s -q debug sample-loras %s/sl", zl_test_dir(), zl_test_bin(), zl_test_dir());
    CHECK(zl_test_run(cmd, NULL) == 0);
    snprintf(cmd, sizeof cmd, "%s generate --model %s -p x -W 16 -H 16 --no-cache --lora %s/sl/flux_lora.safetensors -o %s/bad.png 2>&1",
             zl_test_bin(), zl_test_tiny_model(), zl_test_dir(), zl_test_dir());
    CHECK(zl_test_run(cmd, &out) != 0 && out && strstr(out, "flux1"));
    free(out);
}

TEST(gen_png_metadata_roundtrip) {
    CHECK(zl_test_tiny_model());
    const char *lora = "tests/data/zimage/tiny_a/lora/lora_kohya.safetensors";
    char args[600];
    snprintf(args, sizeof args, "--seed 11 --preset base --steps 3 -n 'low quality' --sampler res_multistep --lora %s:0.7", lora);
    CHECK(gen("meta.png", args) == 0);
    char p[600];
    snprintf(p, sizeof p, "%s/meta.png", zl_test_dir());
    zl_image img;
    CHECK(zl_image_read(p, NULL, &img) == 0);
    const char *par = zl_image_text(&img, "parameters"), *js = zl_image_text(&img, "zlora");
    CHECK(par && js);
    CHECK(!strncmp(par, "a red cube on a blue floor\nNegative prompt: low quality\nSteps: 3, Sampler: res_multistep", 80));
    CHECK(strstr(par, "CFG scale: 4, Guidance (diffusers): 3, Seed: 11, Size: 24x16, Shift: 3"));
    CHECK(strstr(par, "Lora hashes: \"lora_kohya: ") && strstr(par, "Lora strengths: \"lora_kohya: 0.7\""));
    cJSON *j = cJSON_Parse(js);
    CHECK(j);
    CHECK(!strcmp(cJSON_GetObjectItem(j, "seed")->valuestring, "11"));
    CHECK(cJSON_GetObjectItem(j, "steps")->valueint == 3);
    CHECK(cJSON_GetArraySize(cJSON_GetObjectItem(j, "loras")) == 1);
    cJSON_Delete(j);
    zl_image_free(&img);
    /* --from remakes the same image; a flag overrides the stored setting */
    char cmd[2000];
    snprintf(cmd, sizeof cmd, "%s -q generate --from %s/meta.png --no-cache -o %s/remade.png 2>&1", zl_test_bin(), zl_test_dir(), zl_test_dir());
    CHECK(zl_test_run(cmd, NULL) == 0);
    CHECK(same_file("meta.png", "remade.png"));
    snprintf(cmd, sizeof cmd, "%s -q generate --from %s/meta.png --seed 12 --no-cache -o %s/remade12.png 2>&1", zl_test_bin(), zl_test_dir(), zl_test_dir());
    CHECK(zl_test_run(cmd, NULL) == 0);
    CHECK(max_diff("meta.png", "remade12.png") > 0);
    /* zlora info shows an image's generation settings */
    char *out = NULL;
    snprintf(cmd, sizeof cmd, "%s info %s/meta.png", zl_test_bin(), zl_test_dir());
    CHECK(zl_test_run(cmd, &out) == 0 && out && strstr(out, "PNG image, 24x16") && strstr(out, "Seed: 11") && strstr(out, "generate --from"));
    free(out);
}

TEST(gen_feature_cache) {
    CHECK(zl_test_tiny_model());
    char cmd[2000], *out = NULL;
    snprintf(cmd, sizeof cmd, "%s generate --model %s -p 'cached prompt' -W 16 -H 16 --seed 1 --cache %s/tecache -o %s/c1.png 2>&1",
             zl_test_bin(), zl_test_tiny_model(), zl_test_dir(), zl_test_dir());
    CHECK(zl_test_run(cmd, &out) == 0 && out && strstr(out, "text encoder:"));
    free(out);
    out = NULL;
    snprintf(cmd, sizeof cmd, "%s generate --model %s -p 'cached prompt' -W 16 -H 16 --seed 1 --cache %s/tecache -o %s/c2.png 2>&1",
             zl_test_bin(), zl_test_tiny_model(), zl_test_dir(), zl_test_dir());
    CHECK(zl_test_run(cmd, &out) == 0 && out && strstr(out, "not loaded") && !strstr(out, "text encoder:"));
    free(out);
    CHECK(same_file("c1.png", "c2.png"));
}

TEST(gen_refusals) {
    CHECK(zl_test_tiny_model());
    char cmd[2000], *out = NULL;
    /* a size that is not a multiple of factor × patch (here 2 × 2) names the nearest valid sizes */
    snprintf(cmd, sizeof cmd, "%s generate --model %s -p x -W 30 -H 16 --no-cache -o %s/x.png 2>&1", zl_test_bin(), zl_test_tiny_model(), zl_test_dir());
    CHECK(zl_test_run(cmd, &out) != 0 && out && strstr(out, "multiples of 4") && strstr(out, "28x16 or 32x16"));
    free(out);
    out = NULL;
    /* a DiT whose caption width does not match the encoder (tiny_b DiT, cap 96 vs 64) */
    snprintf(cmd, sizeof cmd, "%s generate --model %s --dit tests/data/zimage/tiny_b/diffusers_single.safetensors -p x -W 16 -H 16 --no-cache -o %s/x.png 2>&1",
             zl_test_bin(), zl_test_tiny_model(), zl_test_dir());
    CHECK(zl_test_run(cmd, &out) != 0 && out && strstr(out, "cap_feat_dim"));
    free(out);
    out = NULL;
    /* a folder for another pipeline */
    char dir[700];
    snprintf(dir, sizeof dir, "%s/flux_model", zl_test_dir());
    snprintf(cmd, sizeof cmd, "mkdir -p %s && echo '{\"_class_name\": \"FluxPipeline\"}' > %s/model_index.json", dir, dir);
    CHECK(system(cmd) == 0);
    snprintf(cmd, sizeof cmd, "%s generate --model %s -p x --no-cache -o %s/x.png 2>&1", zl_test_bin(), dir, zl_test_dir());
    CHECK(zl_test_run(cmd, &out) != 0 && out && strstr(out, "FluxPipeline"));
    free(out);
    out = NULL;
    /* no prompt; bad numbers; a pattern that is not %d */
    snprintf(cmd, sizeof cmd, "%s generate --model %s --no-cache 2>&1", zl_test_bin(), zl_test_tiny_model());
    CHECK(zl_test_run(cmd, NULL) != 0);
    snprintf(cmd, sizeof cmd, "%s generate --model %s -p x --steps 0 --no-cache 2>&1", zl_test_bin(), zl_test_tiny_model());
    CHECK(zl_test_run(cmd, NULL) != 0);
    snprintf(cmd, sizeof cmd, "%s generate --model %s -p x --batch 2 -o '%s/%%s.png' --no-cache 2>&1", zl_test_bin(), zl_test_tiny_model(), zl_test_dir());
    CHECK(zl_test_run(cmd, NULL) != 0);
    snprintf(cmd, sizeof cmd, "%s generate --from %s/nonexistent.png 2>&1", zl_test_bin(), zl_test_dir());
    CHECK(zl_test_run(cmd, NULL) != 0);
}
