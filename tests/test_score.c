/* test_score.c — src/eval/score.c and `zlora score`: values against an independent numpy reference
 * (tests/ref/score_ref.py → tests/data/score/golden.json, 1e-5 relative), identical images (difference 0,
 * SSIM 1), blur lowering sharpness monotonically with σ, noise raising it, a one-pixel shift giving a small
 * but nonzero difference, results independent of the thread count, bad input, and the command line (JSON
 * parsed back, the table, --reference IMG and DIR, error exits). */
#include "test.h"
#include "base/base.h"
#include "eval/score.h"
#include "io/image.h"

#include <cjson/cJSON.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#define SD "tests/data/score"

static int rel_ok(double got, double want, double tol) {
    return fabs(got - want) <= tol * fabs(want) || fabs(got - want) <= 1e-12;
}

static cJSON *load_golden(void) {
    FILE *f = fopen(SD "/golden.json", "rb");
    if (!f) return NULL;
    char *b = malloc(1 << 16);
    size_t n = fread(b, 1, (1 << 16) - 1, f);
    fclose(f);
    b[n] = 0;
    cJSON *j = cJSON_Parse(b);
    free(b);
    return j;
}

static double num(const cJSON *o, const char *k) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    return cJSON_IsNumber(v) ? v->valuedouble : NAN;
}

/* The texture image (96x64), or a failed CHECK in the caller when absent. */
static int read_img(const char *name, zl_image *im) {
    char p[256];
    snprintf(p, sizeof p, SD "/%s", name);
    return zl_image_read(p, NULL, im);
}

TEST(score_matches_numpy_reference) {
    cJSON *g = load_golden();
    CHECK_MSG(g, "cannot read " SD "/golden.json");
    int count = 0;
    const cJSON *e;
    cJSON_ArrayForEach(e, cJSON_GetObjectItemCaseSensitive(g, "images")) {
        zl_image im;
        char p[256];
        snprintf(p, sizeof p, SD "/%s", e->string);
        CHECK_MSG(zl_image_read(p, NULL, &im) == 0, "%s", zl_last_error());
        zl_sharp_score s;
        CHECK(zl_score_sharpness(im.px, im.w, im.h, &s) == 0);
        zl_image_free(&im);
        CHECK_MSG(rel_ok(s.sharpness, num(e, "sharpness"), 1e-5), "%s: sharpness %.9g, numpy %.9g", e->string, s.sharpness,
                  num(e, "sharpness"));
        CHECK_MSG(rel_ok(s.hf_ratio, num(e, "hf_ratio"), 1e-5), "%s: hf_ratio %.9g, numpy %.9g", e->string, s.hf_ratio,
                  num(e, "hf_ratio"));
        count++;
    }
    CHECK(count == 7);
    count = 0;
    cJSON_ArrayForEach(e, cJSON_GetObjectItemCaseSensitive(g, "pairs")) {
        const char *a = cJSON_GetObjectItemCaseSensitive(e, "image")->valuestring;
        const char *b = cJSON_GetObjectItemCaseSensitive(e, "reference")->valuestring;
        zl_image ia, ib;
        CHECK(read_img(a, &ia) == 0 && read_img(b, &ib) == 0);
        zl_diff_score d;
        CHECK_MSG(zl_score_difference(ia.px, ib.px, ia.w, ia.h, &d) == 0, "%s", zl_last_error());
        zl_image_free(&ia);
        zl_image_free(&ib);
        CHECK_MSG(rel_ok(d.difference, num(e, "difference"), 1e-5), "%s vs %s: difference %.9g, numpy %.9g", a, b,
                  d.difference, num(e, "difference"));
        CHECK_MSG(rel_ok(d.ssim, num(e, "ssim"), 1e-5), "%s vs %s: ssim %.9g, numpy %.9g", a, b, d.ssim, num(e, "ssim"));
        CHECK_MSG(rel_ok(1 - d.ssim, 1 - num(e, "ssim"), 1e-5), "%s vs %s: 1-ssim %.9g, numpy %.9g", a, b, 1 - d.ssim,
                  1 - num(e, "ssim"));
        count++;
    }
    CHECK(count == 5);
    /* the blur: sharpness of the texture blurred by zl_score_blur (float pixels) */
    zl_image t;
    CHECK(read_img("texture.png", &t) == 0);
    float *bl = malloc(sizeof(float) * 3 * t.w * t.h);
    count = 0;
    cJSON_ArrayForEach(e, cJSON_GetObjectItemCaseSensitive(g, "blurred")) {
        double sigma = num(e, "sigma");
        CHECK(zl_score_blur(t.px, t.w, t.h, 3, sigma, bl) == 0);
        zl_sharp_score s;
        CHECK(zl_score_sharpness(bl, t.w, t.h, &s) == 0);
        CHECK_MSG(rel_ok(s.sharpness, num(e, "sharpness"), 1e-5), "sigma %g: sharpness %.9g, numpy %.9g", sigma, s.sharpness,
                  num(e, "sharpness"));
        CHECK_MSG(rel_ok(s.hf_ratio, num(e, "hf_ratio"), 1e-5), "sigma %g: hf_ratio %.9g, numpy %.9g", sigma, s.hf_ratio,
                  num(e, "hf_ratio"));
        count++;
    }
    CHECK(count == 4);
    /* and the blurred pixels themselves: texture_blur.png is numpy's σ = 1.5 blur rounded to 8 bits */
    zl_image tb;
    CHECK(read_img("texture_blur.png", &tb) == 0);
    CHECK(zl_score_blur(t.px, t.w, t.h, 3, 1.5, bl) == 0);
    int off = 0;
    for (int i = 0; i < 3 * t.w * t.h; i++) {
        double v = floor(bl[i] * 255.0 + 0.5), want = floor(tb.px[i] * 255.0 + 0.5);
        CHECK_MSG(fabs(v - want) <= 1, "blurred pixel %d: %g vs numpy %g", i, v, want);
        off += v != want;
    }
    CHECK_MSG(off <= 3, "%d blurred pixels round differently from numpy's", off); /* only .5 ties may */
    zl_image_free(&tb);
    free(bl);
    zl_image_free(&t);
    cJSON_Delete(g);
}

TEST(score_identical_images) {
    zl_image t;
    CHECK(read_img("texture.png", &t) == 0);
    zl_diff_score d;
    CHECK(zl_score_difference(t.px, t.px, t.w, t.h, &d) == 0);
    CHECK(d.difference == 0.0 && d.ssim == 1.0);
    /* a copy in another buffer, and random pixels */
    zl_image c;
    CHECK(zl_image_alloc(&c, t.w, t.h) == 0);
    memcpy(c.px, t.px, sizeof(float) * 3 * t.w * t.h);
    zl_score s;
    CHECK(zl_score_image(&c, &t, &s) == 0);
    CHECK(s.has_ref && s.diff.difference == 0.0 && s.diff.ssim == 1.0 && s.w == 96 && s.h == 64);
    zl_rng r = {11};
    for (int i = 0; i < 3 * t.w * t.h; i++) c.px[i] = zl_rng_uniform(&r);
    memcpy(t.px, c.px, sizeof(float) * 3 * t.w * t.h);
    CHECK(zl_score_difference(c.px, t.px, t.w, t.h, &d) == 0);
    CHECK(d.difference == 0.0 && d.ssim == 1.0);
    /* and unrelated random images are far apart */
    for (int i = 0; i < 3 * t.w * t.h; i++) c.px[i] = zl_rng_uniform(&r);
    CHECK(zl_score_difference(c.px, t.px, t.w, t.h, &d) == 0);
    CHECK_MSG(d.difference > 0.3 && d.ssim < 0.1, "random pair: difference %g, ssim %g", d.difference, d.ssim);
    /* symmetry */
    zl_diff_score d2;
    CHECK(zl_score_difference(t.px, c.px, t.w, t.h, &d2) == 0);
    CHECK_NEAR(d.difference, d2.difference, 1e-15);
    CHECK_NEAR(d.ssim, d2.ssim, 1e-12);
    zl_image_free(&c);
    zl_image_free(&t);
}

TEST(score_blur_lowers_sharpness) {
    static const double sig[] = {0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 4.0};
    const char *names[] = {"texture.png", "texture_noise.png"};
    for (int f = 0; f < 2; f++) {
        zl_image t;
        CHECK(read_img(names[f], &t) == 0);
        float *b = malloc(sizeof(float) * 3 * t.w * t.h);
        zl_sharp_score prev;
        CHECK(zl_score_sharpness(t.px, t.w, t.h, &prev) == 0);
        for (size_t i = 0; i < sizeof sig / sizeof *sig; i++) {
            CHECK(zl_score_blur(t.px, t.w, t.h, 3, sig[i], b) == 0);
            zl_sharp_score s;
            CHECK(zl_score_sharpness(b, t.w, t.h, &s) == 0);
            CHECK_MSG(s.sharpness < prev.sharpness && s.hf_ratio < prev.hf_ratio,
                      "%s blurred by %g: sharpness %g hf_ratio %g, not below %g %g", names[f], sig[i], s.sharpness, s.hf_ratio,
                      prev.sharpness, prev.hf_ratio);
            prev = s;
        }
        /* "clearly": at σ = 1 the variance of the Laplacian drops by more than 5x */
        zl_sharp_score s0, s1;
        CHECK(zl_score_blur(t.px, t.w, t.h, 3, 1.0, b) == 0);
        CHECK(zl_score_sharpness(t.px, t.w, t.h, &s0) == 0 && zl_score_sharpness(b, t.w, t.h, &s1) == 0);
        CHECK_MSG(s1.sharpness < s0.sharpness / 5, "%s: %g -> %g", names[f], s0.sharpness, s1.sharpness);
        free(b);
        zl_image_free(&t);
    }
    /* a constant image: the blur keeps it, its sharpness and hf_ratio are 0 */
    zl_image k;
    CHECK(zl_image_alloc(&k, 7, 3) == 0);
    for (int i = 0; i < 7 * 3 * 3; i++) k.px[i] = 0.25f;
    float out[7 * 3 * 3];
    CHECK(zl_score_blur(k.px, 7, 3, 3, 2.5, out) == 0);
    for (int i = 0; i < 7 * 3 * 3; i++) CHECK_NEAR(out[i], 0.25, 1e-7);
    zl_sharp_score s;
    CHECK(zl_score_sharpness(k.px, 7, 3, &s) == 0);
    CHECK(s.sharpness < 1e-20 && s.hf_ratio == 0.0);
    zl_image_free(&k);
}

TEST(score_noise_raises_sharpness) {
    const char *names[] = {"texture.png", "texture_blur.png"};
    for (int f = 0; f < 2; f++) {
        zl_image t;
        CHECK(read_img(names[f], &t) == 0);
        zl_sharp_score s0;
        CHECK(zl_score_sharpness(t.px, t.w, t.h, &s0) == 0);
        zl_rng r = {5};
        double prev = s0.sharpness;
        for (int level = 1; level <= 3; level++) { /* noise of std 0.01, 0.02, 0.03 */
            zl_image n;
            CHECK(zl_image_alloc(&n, t.w, t.h) == 0);
            for (int i = 0; i < 3 * t.w * t.h; i++) n.px[i] = t.px[i] + 0.01f * level * zl_rng_normal(&r);
            zl_sharp_score s;
            CHECK(zl_score_sharpness(n.px, n.w, n.h, &s) == 0);
            zl_image_free(&n);
            CHECK_MSG(s.sharpness > prev && s.hf_ratio > s0.hf_ratio, "%s + noise %d: %g (before %g), hf %g (before %g)",
                      names[f], level, s.sharpness, prev, s.hf_ratio, s0.hf_ratio);
            prev = s.sharpness;
        }
        zl_image_free(&t);
    }
}

TEST(score_one_pixel_shift) {
    const char *names[] = {"texture_blur.png", "texture.png"};
    for (int f = 0; f < 2; f++) {
        zl_image t, sh, mir;
        CHECK(read_img(names[f], &t) == 0);
        CHECK(zl_image_alloc(&sh, t.w, t.h) == 0 && zl_image_alloc(&mir, t.w, t.h) == 0);
        for (int y = 0; y < t.h; y++)
            for (int x = 0; x < t.w; x++)
                for (int c = 0; c < 3; c++) {
                    size_t o = ((size_t)y * t.w + x) * 3 + c;
                    sh.px[o] = t.px[((size_t)y * t.w + (x ? x - 1 : 0)) * 3 + c];
                    mir.px[o] = t.px[((size_t)(t.h - 1 - y) * t.w + (t.w - 1 - x)) * 3 + c]; /* rotated 180°: unrelated */
                }
        zl_diff_score ds, dm;
        CHECK(zl_score_difference(sh.px, t.px, t.w, t.h, &ds) == 0);
        CHECK(zl_score_difference(mir.px, t.px, t.w, t.h, &dm) == 0);
        CHECK_MSG(ds.difference > 0 && ds.ssim < 1, "%s", names[f]);
        CHECK_MSG(ds.difference < 0.6 * dm.difference && 1 - ds.ssim < 0.6 * (1 - dm.ssim),
                  "%s: shift %g / %g, unrelated %g / %g", names[f], ds.difference, 1 - ds.ssim, dm.difference, 1 - dm.ssim);
        if (f == 0) /* a smooth image moved by one pixel is close */
            CHECK_MSG(ds.difference < 0.05 && 1 - ds.ssim < 0.2, "smooth shift: %g, 1-ssim %g", ds.difference, 1 - ds.ssim);
        zl_image_free(&sh);
        zl_image_free(&mir);
        zl_image_free(&t);
    }
}

TEST(score_thread_count_independent) {
    /* large enough for the parallel paths; bit-identical results on 1 and 2 threads */
    int w = 300, h = 230;
    float *a = malloc(sizeof(float) * 3 * w * h), *b = malloc(sizeof(float) * 3 * w * h);
    zl_rng r = {2};
    for (int i = 0; i < 3 * w * h; i++) {
        a[i] = 0.5f + 0.4f * sinf((float)(i % (3 * w)) * 0.05f) * cosf((float)(i / (3 * w)) * 0.07f) + 0.05f * zl_rng_uniform(&r);
        b[i] = a[i] + 0.02f * zl_rng_normal(&r);
    }
    int nt = omp_get_max_threads();
    zl_sharp_score s1, s2;
    zl_diff_score d1, d2;
    omp_set_num_threads(1);
    CHECK(zl_score_sharpness(a, w, h, &s1) == 0 && zl_score_difference(a, b, w, h, &d1) == 0);
    omp_set_num_threads(nt > 1 ? nt : 2);
    CHECK(zl_score_sharpness(a, w, h, &s2) == 0 && zl_score_difference(a, b, w, h, &d2) == 0);
    omp_set_num_threads(nt);
    CHECK(s1.sharpness == s2.sharpness && s1.hf_ratio == s2.hf_ratio);
    CHECK(d1.difference == d2.difference && d1.ssim == d2.ssim);
    free(a);
    free(b);
}

TEST(score_bad_input) {
    float px[12 * 12 * 3];
    for (int i = 0; i < 12 * 12 * 3; i++) px[i] = 0.5f;
    zl_sharp_score s;
    zl_diff_score d;
    CHECK(zl_score_sharpness(px, 0, 4, &s) != 0 && strstr(zl_last_error(), "bad image size"));
    CHECK(zl_score_sharpness(px, 4, -1, &s) != 0);
    CHECK(zl_score_difference(px, px, 10, 12, &d) != 0);
    CHECK_MSG(strstr(zl_last_error(), "smaller than the 11x11 SSIM window"), "%s", zl_last_error());
    CHECK(zl_score_difference(px, px, 12, 12, &d) == 0 && d.ssim == 1.0);
    px[40] = NAN;
    CHECK(zl_score_sharpness(px, 12, 12, &s) != 0);
    CHECK_MSG(strstr(zl_last_error(), "non-finite value at pixel (1, 1)"), "%s", zl_last_error());
    px[40] = INFINITY;
    float q[12 * 12 * 3];
    for (int i = 0; i < 12 * 12 * 3; i++) q[i] = 0.5f;
    CHECK(zl_score_difference(px, q, 12, 12, &d) != 0 && strstr(zl_last_error(), "image has a non-finite"));
    CHECK(zl_score_difference(q, px, 12, 12, &d) != 0 && strstr(zl_last_error(), "reference has a non-finite"));
    float o[12 * 12 * 3];
    CHECK(zl_score_blur(px, 12, 12, 3, 0.0, o) != 0 && zl_score_blur(px, 12, 12, 3, NAN, o) != 0);
    CHECK(zl_score_blur(px, 12, 12, 0, 1.0, o) != 0);
    /* tiny images: sharpness is defined (mirrored borders) down to 1x1 */
    px[40] = 0.5f;
    CHECK(zl_score_sharpness(px, 1, 1, &s) == 0 && s.sharpness == 0 && s.hf_ratio == 0);
    CHECK(zl_score_sharpness(px, 2, 1, &s) == 0);
    CHECK(zl_score_blur(px, 1, 2, 3, 3.0, o) == 0 && o[0] == 0.5f);
    /* size mismatch */
    zl_image a, b;
    CHECK(zl_image_alloc(&a, 12, 12) == 0 && zl_image_alloc(&b, 12, 13) == 0);
    zl_score sc;
    CHECK(zl_score_image(&a, &b, &sc) != 0);
    CHECK_MSG(strstr(zl_last_error(), "image is 12x12 but the reference is 12x13"), "%s", zl_last_error());
    CHECK(zl_score_image(&a, NULL, &sc) == 0 && !sc.has_ref);
    zl_image_free(&a);
    zl_image_free(&b);
}

/* ------------------------------------------------------------------ the command */

TEST(score_cli) {
    char cmd[2048], *out = NULL;
    /* --json on two images against one reference, parsed back and checked against the library */
    snprintf(cmd, sizeof cmd, "%s score --json " SD "/texture_shift.png " SD "/texture_noise.png --reference " SD "/texture.png",
             zl_test_bin());
    int rc = zl_test_run(cmd, &out);
    CHECK_MSG(rc == 0, "rc %d: %s", rc, out);
    cJSON *j = cJSON_Parse(out);
    free(out);
    CHECK(cJSON_IsArray(j) && cJSON_GetArraySize(j) == 2);
    zl_image ref;
    CHECK(read_img("texture.png", &ref) == 0);
    const char *names[] = {"texture_shift.png", "texture_noise.png"};
    for (int i = 0; i < 2; i++) {
        const cJSON *o = cJSON_GetArrayItem(j, i);
        const cJSON *im = cJSON_GetObjectItemCaseSensitive(o, "image"), *rf = cJSON_GetObjectItemCaseSensitive(o, "reference");
        CHECK(cJSON_IsString(im) && strstr(im->valuestring, names[i]) && cJSON_IsString(rf) && strstr(rf->valuestring, "texture.png"));
        zl_image a;
        CHECK(read_img(names[i], &a) == 0);
        zl_score s;
        CHECK(zl_score_image(&a, &ref, &s) == 0);
        zl_image_free(&a);
        CHECK(num(o, "width") == 96 && num(o, "height") == 64);
        CHECK_NEAR(num(o, "sharpness"), s.sharp.sharpness, 1e-15);
        CHECK_NEAR(num(o, "hf_ratio"), s.sharp.hf_ratio, 1e-15);
        CHECK_NEAR(num(o, "difference"), s.diff.difference, 1e-15);
        CHECK_NEAR(num(o, "ssim"), s.diff.ssim, 1e-15);
        CHECK_NEAR(num(o, "ssim_difference"), 1 - s.diff.ssim, 1e-15);
    }
    cJSON_Delete(j);
    zl_image_free(&ref);
    /* without a reference: no difference fields */
    snprintf(cmd, sizeof cmd, "%s score --json " SD "/texture.png", zl_test_bin());
    CHECK(zl_test_run(cmd, &out) == 0);
    j = cJSON_Parse(out);
    free(out);
    CHECK(cJSON_IsArray(j) && cJSON_GetArraySize(j) == 1);
    CHECK(!cJSON_GetObjectItemCaseSensitive(cJSON_GetArrayItem(j, 0), "difference"));
    CHECK(num(cJSON_GetArrayItem(j, 0), "sharpness") > 0.05);
    cJSON_Delete(j);
    /* --reference DIR: the file of the same name (here a copy of texture.png named texture_shift.png) */
    snprintf(cmd, sizeof cmd, "mkdir -p '%s/refs' && cp " SD "/texture.png '%s/refs/texture_shift.png' && "
             "%s score " SD "/texture_shift.png --reference='%s/refs'", zl_test_dir(), zl_test_dir(), zl_test_bin(), zl_test_dir());
    rc = zl_test_run(cmd, &out);
    CHECK_MSG(rc == 0, "rc %d: %s", rc, out);
    /* the table: header, one row with the golden numbers (0.073165, 0.133531, 1-ssim 0.479516) */
    CHECK_MSG(strstr(out, "sharpness") && strstr(out, "difference") && strstr(out, "1-ssim") && strstr(out, "96x64"), "%s", out);
    CHECK_MSG(strstr(out, "0.073165") && strstr(out, "0.133531") && strstr(out, "0.479516"), "%s", out);
    free(out);
    /* errors: a message and a nonzero exit, never a crash */
    struct { const char *args, *msg; int rc; } bad[] = {
        {SD "/nope.png", "nope.png: cannot open", 1},
        {SD "/texture.png --reference tests/data/images/rgb16.png", "must be the same size", 1},
        {SD "/texture.png --reference " SD "/nope.png", "the reference: " SD "/nope.png: cannot open", 1},
        {SD "/texture.png --reference tests/data/images", "the reference for " SD "/texture.png: tests/data/images/texture.png", 1},
        {"tests/data/images/gray8.png --reference tests/data/images/gray8.png", "SSIM window", 1},
        {"Makefile", "Makefile: not a PNG, JPEG or WebP image", 1},
        {SD, "is a folder", 1},
        {SD "/texture.png --bogus", "unknown option", 2},
        {"--json", "usage: zlora score", 2},
        {SD "/texture.png --reference", "--reference needs", 2},
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        snprintf(cmd, sizeof cmd, "%s score %s 2>&1", zl_test_bin(), bad[i].args);
        rc = zl_test_run(cmd, &out);
        CHECK_MSG(rc == bad[i].rc && strstr(out, bad[i].msg), "'%s': rc %d, output: %s", bad[i].args, rc, out);
        CHECK_MSG(bad[i].rc == 2 || (strncmp(out, "error: score: ", 14) == 0 && !strchr(out, '{')), "%s", out);
        free(out);
    }
    /* help */
    snprintf(cmd, sizeof cmd, "%s help score", zl_test_bin());
    CHECK(zl_test_run(cmd, &out) == 0 && strstr(out, "--reference IMG|DIR") && strstr(out, "Laplacian"));
    free(out);
}
