/* test_dataset.c — training data: captions and triggers, skipped files with reasons, the bucket set,
 * bucket assignment (aspect, no upscaling), pixels (cover-crop, flip). */
#include "test.h"
#include "base/base.h"
#include "io/image.h"
#include "train/dataset.h"

#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static int write_png(const char *dir, const char *name, int w, int h) {
    zl_image img;
    if (zl_image_alloc(&img, w, h)) return -1;
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++) {
            float *p = img.px + ((size_t)y * w + x) * 3;
            p[0] = (float)x / w; p[1] = (float)y / h; p[2] = x < w / 2 ? 1.0f : 0.0f;
        }
    char p[1400];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    int rc = zl_image_write_png(p, &img, NULL, NULL, 0);
    zl_image_free(&img);
    return rc;
}

static int write_text(const char *dir, const char *name, const char *s, size_t n) {
    char p[1400];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    FILE *f = fopen(p, "wb");
    if (!f) return -1;
    fwrite(s, 1, n, f);
    fclose(f);
    return 0;
}

static const zl_item *find(const zl_dataset *ds, const char *name) {
    for (int i = 0; i < ds->n; i++) if (strstr(ds->items[i].image, name)) return &ds->items[i];
    return NULL;
}

TEST(dataset_bucket_set) {
    zl_dataset_opts o;
    zl_dataset_default_opts(&o);
    zl_bucket *b;
    int n = zl_dataset_bucket_set(&o, &b);
    CHECK(n > 10);
    int square = 0;
    for (int i = 0; i < n; i++) {
        CHECK(b[i].w % 64 == 0 && b[i].h % 64 == 0);
        CHECK((long)b[i].w * b[i].h <= 1024L * 1024);
        CHECK((long)b[i].w * (b[i].h + 64) > 1024L * 1024); /* as large as the step allows */
        CHECK(b[i].w <= 4 * b[i].h && b[i].h <= 4 * b[i].w);
        square += b[i].w == 1024 && b[i].h == 1024;
    }
    CHECK(square == 1);
    free(b);
    o.step = 24; /* not a multiple of 16 */
    CHECK(zl_dataset_bucket_set(&o, &b) < 0);
}

TEST(dataset_scan_captions_and_buckets) {
    char dir[600];
    snprintf(dir, sizeof dir, "%s/ds1", zl_test_dir());
    mkdir(dir, 0755);
    CHECK(write_png(dir, "a_wide.png", 1600, 900) == 0);
    CHECK(write_text(dir, "a_wide.txt", "  a photo of [trigger]\r\non a beach \n", 36) == 0);
    CHECK(write_png(dir, "b_small.png", 300, 300) == 0);
    CHECK(write_text(dir, "b_small.txt", "1girl, red hair", 15) == 0);
    CHECK(write_png(dir, "c_nocap.png", 512, 768) == 0);
    CHECK(write_png(dir, "d_badcap.png", 64, 64) == 0);
    CHECK(write_text(dir, "d_badcap.txt", "caf\xc3", 4) == 0); /* truncated UTF-8 */
    CHECK(write_text(dir, "e_broken.png", "\x89PNG\r\n\x1a\nnot really", 18) == 0);
    CHECK(write_text(dir, "notes.md", "ignored", 7) == 0);
    zl_dataset_opts o;
    zl_dataset_default_opts(&o);
    o.trigger = "zxq";
    zl_dataset ds;
    CHECK(zl_dataset_scan(dir, &o, &ds) == 0);
    CHECK(ds.n == 3 && ds.nskipped == 2);
    const zl_item *a = find(&ds, "a_wide"), *b = find(&ds, "b_small"), *c = find(&ds, "c_nocap");
    CHECK(a && b && c);
    CHECK(!strcmp(a->caption, "a photo of zxq on a beach"));
    CHECK(!strcmp(b->caption, "zxq, 1girl, red hair"));
    CHECK(!strcmp(c->caption, "zxq")); /* no caption file: the trigger alone */
    CHECK(a->bw == 1344 && a->bh == 768); /* 16:9 -> the nearest aspect, 1.75 */
    CHECK(b->bw == 288 && b->bh == 288);  /* 300² is never upscaled: the bucket shrinks to fit */
    CHECK(c->bw % 16 == 0 && c->bh % 16 == 0 && c->bw < c->bh);
    CHECK(a->hash && a->hash != b->hash);
    int found_bad = 0;
    for (int i = 0; i < ds.nskipped; i++) {
        if (strstr(ds.skipped[i], "d_badcap")) found_bad += !!strstr(ds.why[i], "UTF-8");
        if (strstr(ds.skipped[i], "e_broken")) found_bad += 1;
    }
    CHECK(found_bad == 2);
    char *buf = NULL;
    size_t len = 0;
    FILE *mf = open_memstream(&buf, &len);
    zl_dataset_print_summary(&ds, mf);
    fclose(mf);
    CHECK(strstr(buf, "3 images, 2 skipped") && strstr(buf, "1344x768") && strstr(buf, "288x288"));
    free(buf);
    /* pixels: the bucket size, and flip mirrors left and right */
    float *p = malloc(sizeof(float) * 3 * 288 * 288), *q = malloc(sizeof(float) * 3 * 288 * 288);
    CHECK(zl_dataset_load_pixels(b, 0, p) == 0 && zl_dataset_load_pixels(b, 1, q) == 0);
    CHECK(p[2 * 288 * 288 + 5] > 0.9f && q[2 * 288 * 288 + 5] < -0.9f); /* blue channel: left half on */
    CHECK(fabsf(p[0 * 288 * 288 + 10] - q[0 * 288 * 288 + 277]) < 1e-6f);
    free(p);
    free(q);
    zl_dataset_free(&ds);
    /* upscaling allowed up to 2x */
    o.allow_upscale = 1;
    CHECK(zl_dataset_scan(dir, &o, &ds) == 0);
    b = find(&ds, "b_small");
    CHECK(b && b->bw == 592 && b->bh == 592);
    zl_dataset_free(&ds);
    /* without a trigger: [trigger] in a caption is an error; the caption-less image is skipped */
    o.trigger = NULL;
    CHECK(zl_dataset_scan(dir, &o, &ds) != 0 && strstr(zl_last_error(), "--trigger"));
    o.default_caption = "a picture";
}

TEST(dataset_refusals) {
    char dir[600];
    snprintf(dir, sizeof dir, "%s/ds_empty", zl_test_dir());
    mkdir(dir, 0755);
    zl_dataset ds;
    CHECK(zl_dataset_scan(dir, NULL, &ds) != 0 && strstr(zl_last_error(), "no usable image"));
    CHECK(write_png(dir, "x.png", 32, 32) == 0); /* an image without any caption and no trigger */
    CHECK(zl_dataset_scan(dir, NULL, &ds) != 0 && strstr(zl_last_error(), "no caption"));
    zl_dataset_opts o;
    zl_dataset_default_opts(&o);
    o.default_caption = "a small square";
    CHECK(zl_dataset_scan(dir, &o, &ds) == 0 && ds.n == 1 && !strcmp(ds.items[0].caption, "a small square"));
    CHECK(ds.items[0].bw == 32 && ds.items[0].bh == 32);
    zl_dataset_free(&ds);
    char missing[700];
    snprintf(missing, sizeof missing, "%s/nope", zl_test_dir());
    CHECK(zl_dataset_scan(missing, NULL, &ds) != 0);
}

#include "model/te_cache.h"
#include "model/vae.h"
#include "train/latent_cache.h"

TEST(dataset_latent_cache) {
    char dir[600], cache[700];
    snprintf(dir, sizeof dir, "%s/ds_lat", zl_test_dir());
    snprintf(cache, sizeof cache, "%s/latents", zl_test_dir());
    mkdir(dir, 0755);
    CHECK(write_png(dir, "one.png", 40, 24) == 0);
    CHECK(write_png(dir, "two.png", 20, 20) == 0);
    const char *vae_path = "tests/data/vae/tiny_a/diffusers/vae"; /* factor 2, 16 latent channels */
    zl_dataset_opts o;
    zl_dataset_default_opts(&o);
    o.trigger = "zxq";
    o.resolution = 32;
    o.mult = 4;
    o.step = 8;
    zl_dataset ds;
    CHECK(zl_dataset_scan(dir, &o, &ds) == 0 && ds.n == 2);
    int enc = -1;
    CHECK(zl_latent_cache_fill(&ds, vae_path, cache, 1, &enc) == 0 && enc == 4);
    CHECK(zl_latent_cache_fill(&ds, vae_path, cache, 1, &enc) == 0 && enc == 0); /* all cached: no VAE */
    char *vid = zl_weights_identity(vae_path, "vae", "vae");
    CHECK(vid);
    const zl_item *it = &ds.items[0];
    float *x0 = NULL, *xf = NULL;
    int C, h, w, C2, h2, w2;
    CHECK(zl_latent_cache_load(cache, vid, it, 0, &x0, &C, &h, &w) == 1);
    CHECK(zl_latent_cache_load(cache, vid, it, 1, &xf, &C2, &h2, &w2) == 1);
    CHECK(C == 16 && h == it->bh / 2 && w == it->bw / 2 && C2 == C && h2 == h && w2 == w);
    /* the entry is the normalised mean of the bucket-sized pixels */
    zl_vae *vae;
    CHECK(zl_vae_load(vae_path, NULL, &vae) == 0);
    float *px = malloc(sizeof(float) * 3 * it->bw * it->bh), *z = malloc(sizeof(float) * C * h * w);
    CHECK(zl_dataset_load_pixels(it, 0, px) == 0 && zl_vae_encode(vae, px, it->bh, it->bw, z) == 0);
    zl_vae_normalize(vae, z, (size_t)C * h * w);
    double d = 0, df = 0;
    for (int i = 0; i < C * h * w; i++) { d = fmax(d, fabs(z[i] - x0[i])); df = fmax(df, fabs(xf[i] - x0[i])); }
    CHECK_MSG(d < 1e-5, "cached latent differs from a direct encode by %g", d);
    CHECK(df > 1e-3); /* the mirrored entry is another latent */
    zl_vae_free(vae);
    free(px); free(z); free(x0); free(xf);
    /* another VAE identity: a miss, not another VAE's latents */
    float *none = NULL;
    CHECK(zl_latent_cache_load(cache, "vae:other", it, 0, &none, &C, &h, &w) == 0 && !none);
    free(vid);
    zl_dataset_free(&ds);
}
