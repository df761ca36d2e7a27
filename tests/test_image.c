/* test_image.c — src/io/image.c: PNG of every colour type and depth (tiny files written by an independent
 * numpy + zlib encoder, tests/data/images/make_images.py, with their expected pixels), PNG text chunks and
 * writing, JPEG with every EXIF orientation in both byte orders, CMYK and gray JPEG, WebP (lossless with
 * alpha, lossy, animated refused), every truncation of small files and corrupt bytes (errors, never a
 * crash), resizing against Pillow's float resampling, fit/crop, and the tensor conversions. */
#include "test.h"
#include "base/base.h"
#include "io/image.h"
#include "io/safetensors.h"

#include <stdlib.h>
#include <string.h>
#include <stdio.h>
#include <jpeglib.h>
#include <webp/decode.h>
#include <webp/encode.h>

#define IMG "tests/data/images"

static float *golden(const char *file, const char *name, int *h, int *w) {
    zl_st *st;
    if (zl_st_open(file, &st)) return NULL;
    const zl_tensor_info *t = zl_st_find(st, name);
    float *v = NULL;
    if (t && t->ndim == 3 && t->shape[2] == 3) {
        *h = (int)t->shape[0];
        *w = (int)t->shape[1];
        v = zl_st_read_f32(st, t);
    }
    zl_st_close(st);
    return v;
}

static double maxdiff(const float *a, const float *b, size_t n) {
    double m = 0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - b[i]);
        if (!(d <= m)) m = d;
    }
    return m;
}

/* ------------------------------------------------------------------ PNG */

TEST(image_png_every_kind) {
    const char *names[] = {"gray8", "gray16", "gray1", "ga8", "rgba16", "pal4_trns", "rgb8_adam7_text", "rgb16"};
    const int alpha[] = {0, 0, 0, 1, 1, 1, 0, 0};
    for (int i = 0; i < 8; i++) {
        char p[256];
        snprintf(p, sizeof p, IMG "/%s.png", names[i]);
        zl_image im;
        CHECK_MSG(zl_image_read(p, NULL, &im) == 0, "%s", zl_last_error());
        int h, w;
        float *g = golden(IMG "/expected.safetensors", names[i], &h, &w);
        CHECK(g && im.w == w && im.h == h && !strcmp(im.format, "PNG") && im.had_alpha == alpha[i] && im.orientation == 1);
        double d = maxdiff(im.px, g, (size_t)w * h * 3);
        free(g);
        zl_image_free(&im);
        CHECK_MSG(d < 1e-6, "%s: max diff %.3g", names[i], d);
    }
    /* text chunks: tEXt, zTXt, iTXt (UTF-8) */
    zl_image im;
    CHECK(zl_image_read(IMG "/rgb8_adam7_text.png", NULL, &im) == 0);
    CHECK(im.ntext == 3);
    CHECK(!strcmp(zl_image_text(&im, "parameters"), "a photo of a cat\nNegative prompt: blurry\nSteps: 8, Sampler: Euler, CFG scale: 1, Seed: 42"));
    CHECK(!strncmp(zl_image_text(&im, "comment"), "compressed text compressed", 26));
    CHECK(!strcmp(zl_image_text(&im, "Title"), "caf\xc3\xa9 \xe7\x8c\xab"));
    CHECK(zl_image_text(&im, "nothing") == NULL);
    zl_image_free(&im);
    /* another background: black */
    zl_image_opts o;
    zl_image_default_opts(&o);
    o.bg[0] = o.bg[1] = o.bg[2] = 0.0f;
    CHECK(zl_image_read(IMG "/ga8.png", &o, &im) == 0);
    int h, w;
    float *g = golden(IMG "/expected.safetensors", "ga8", &h, &w);
    /* pixel (0,0) has alpha 0: background; (1,0) alpha 1: the gray value, on either background */
    CHECK(im.px[0] == 0.0f && g[0] == 1.0f && im.px[3] == g[3]);
    free(g);
    zl_image_free(&im);
}

TEST(image_png_write_roundtrip) {
    zl_rng r = {3};
    int w = 13, h = 7;
    uint8_t *rgb = malloc((size_t)w * h * 3);
    for (int i = 0; i < w * h * 3; i++) rgb[i] = (uint8_t)(zl_rng_next(&r) & 255);
    rgb[0] = 0;
    rgb[1] = 255;
    zl_image im, back;
    CHECK(zl_image_from_rgb8(&im, rgb, w, h) == 0);
    char p[512];
    snprintf(p, sizeof p, "%s/out.png", zl_test_dir());
    const char *params = "portrait, soft light\nNegative prompt: lowres\nSteps: 8, Sampler: Euler, Seed: 1234, Size: 13x7, Model: z_image_turbo";
    const char *keys[] = {"parameters", "Software", "Comment"}, *vals[] = {params, "zlora", "\xe7\x8c\xab and caf\xc3\xa9"};
    CHECK_MSG(zl_image_write_png(p, &im, keys, vals, 3) == 0, "%s", zl_last_error());
    CHECK(zl_image_read(p, NULL, &back) == 0);
    CHECK(back.w == w && back.h == h && back.ntext == 3 && !back.had_alpha);
    CHECK(!strcmp(zl_image_text(&back, "parameters"), params));
    CHECK(!strcmp(zl_image_text(&back, "Comment"), vals[2]));
    uint8_t *rgb2 = zl_image_to_rgb8(&back);
    CHECK(memcmp(rgb, rgb2, (size_t)w * h * 3) == 0);
    free(rgb2);
    zl_image_free(&back);
    /* bad keys and text */
    const char *bad[] = {"", " lead", "trail ", "dou  ble", "0123456789012345678901234567890123456789012345678901234567890123456789012345678901", "tab\t"};
    for (int i = 0; i < 6; i++) {
        const char *v[] = {"x"};
        CHECK(zl_image_write_png(p, &im, &bad[i], v, 1) != 0);
        CHECK(strstr(zl_last_error(), "text key"));
    }
    const char *k1[] = {"parameters"}, *v1[] = {"\xff\xfe not utf-8"};
    CHECK(zl_image_write_png(p, &im, k1, v1, 1) != 0);
    snprintf(p, sizeof p, "%s/no/such/dir/out.png", zl_test_dir());
    CHECK(zl_image_write_png(p, &im, NULL, NULL, 0) != 0);
    zl_image_free(&im);
    free(rgb);
}

/* ------------------------------------------------------------------ JPEG */

/* A JPEG of px [h][w][comps] in colour space cs, with an optional APP1 payload. malloc'd. */
static uint8_t *jpeg_make(const uint8_t *px, int w, int h, int comps, J_COLOR_SPACE cs, const uint8_t *app1, unsigned n1,
                          unsigned long *outn) {
    struct jpeg_compress_struct c;
    struct jpeg_error_mgr e;
    c.err = jpeg_std_error(&e);
    jpeg_create_compress(&c);
    unsigned char *mem = NULL;
    *outn = 0;
    jpeg_mem_dest(&c, &mem, outn);
    c.image_width = (JDIMENSION)w;
    c.image_height = (JDIMENSION)h;
    c.input_components = comps;
    c.in_color_space = cs;
    jpeg_set_defaults(&c);
    jpeg_set_quality(&c, 95, TRUE);
    for (int i = 0; i < c.num_components; i++) c.comp_info[i].h_samp_factor = c.comp_info[i].v_samp_factor = 1;
    jpeg_start_compress(&c, TRUE);
    if (app1) jpeg_write_marker(&c, JPEG_APP0 + 1, app1, n1);
    while (c.next_scanline < c.image_height) {
        JSAMPROW row = (JSAMPROW)(px + (size_t)c.next_scanline * w * comps);
        jpeg_write_scanlines(&c, &row, 1);
    }
    jpeg_finish_compress(&c);
    jpeg_destroy_compress(&c);
    return mem;
}

/* APP1 "Exif" payload with IFD0 holding one SHORT entry (tag, value); le: Intel byte order. */
static unsigned exif_app1(uint8_t *b, int le, unsigned tag, unsigned type, unsigned value) {
    memcpy(b, "Exif\0\0", 6);
    uint8_t *t = b + 6;
    memset(t, 0, 26);
#define P16(p, v) do { if (le) { (p)[0] = (uint8_t)(v); (p)[1] = (uint8_t)((v) >> 8); } else { (p)[0] = (uint8_t)((v) >> 8); (p)[1] = (uint8_t)(v); } } while (0)
#define P32(p, v) do { if (le) { P16(p, (v) & 0xffff); P16((p) + 2, (v) >> 16); } else { P16(p, (v) >> 16); P16((p) + 2, (v) & 0xffff); } } while (0)
    t[0] = t[1] = le ? 'I' : 'M';
    P16(t + 2, 42u);
    P32(t + 4, 8u);
    P16(t + 8, 1u);            /* one entry */
    P16(t + 10, tag);
    P16(t + 12, type);
    P32(t + 14, 1u);
    P16(t + 18, value);        /* SHORT value, left-justified in the 4-byte field */
    P32(t + 22, 0u);           /* next IFD */
#undef P16
#undef P32
    return 6 + 26;
}

static const uint8_t block_rgb[6][3] = {{230, 20, 20}, {20, 230, 20}, {20, 20, 230}, {230, 230, 20}, {20, 230, 230}, {230, 20, 230}};

/* Index of the block colour nearest to pixel (x, y) of img. */
static int color_at(const zl_image *im, int x, int y) {
    const float *p = im->px + ((size_t)y * im->w + x) * 3;
    int best = -1;
    double bd = 1e9;
    for (int k = 0; k < 6; k++) {
        double d = 0;
        for (int c = 0; c < 3; c++) d += fabs(p[c] - block_rgb[k][c] / 255.0);
        if (d < bd) { bd = d; best = k; }
    }
    return bd < 0.2 ? best : -1;
}

TEST(image_jpeg_exif_orientation) {
    /* 24x16: blocks of 8x8, colour index by*3 + bx; corners TL 0, TR 2, BL 3, BR 5 */
    int W = 24, H = 16;
    uint8_t *px = malloc((size_t)W * H * 3);
    for (int y = 0; y < H; y++)
        for (int x = 0; x < W; x++) memcpy(px + ((size_t)y * W + x) * 3, block_rgb[(y / 8) * 3 + x / 8], 3);
    /* expected source corner (TL, TR, BL, BR of the output) for orientations 1..8, from the EXIF definitions:
     * 2 mirror, 3 rotate 180, 4 flip, 5 mirror + rotate 270 CW, 6 rotate 90 CW, 7 mirror + rotate 90 CW,
     * 8 rotate 270 CW */
    static const int want[9][4] = {{0}, {0, 2, 3, 5}, {2, 0, 5, 3}, {5, 3, 2, 0}, {3, 5, 0, 2},
                                   {0, 3, 2, 5}, {3, 0, 5, 2}, {5, 2, 3, 0}, {2, 5, 0, 3}};
    for (int le = 0; le < 2; le++)
        for (int o = 1; o <= 8; o++) {
            uint8_t app1[64];
            unsigned n1 = exif_app1(app1, le, 0x0112, 3, (unsigned)o);
            CHECK(zl_jpeg_exif_orientation(app1, n1) == o);
            unsigned long n;
            uint8_t *j = jpeg_make(px, W, H, 3, JCS_RGB, app1, n1, &n);
            zl_image im;
            CHECK_MSG(zl_image_read_mem(j, n, "exif.jpg", NULL, &im) == 0, "%s", zl_last_error());
            int sw = o >= 5;
            CHECK(im.w == (sw ? H : W) && im.h == (sw ? W : H) && im.orientation == o && !strcmp(im.format, "JPEG"));
            int got[4] = {color_at(&im, 3, 3), color_at(&im, im.w - 4, 3), color_at(&im, 3, im.h - 4), color_at(&im, im.w - 4, im.h - 4)};
            zl_image_free(&im);
            CHECK_MSG(!memcmp(got, want[o], sizeof got), "orientation %d (%s): corners %d %d %d %d", o, le ? "II" : "MM", got[0], got[1], got[2], got[3]);
            /* keep_orientation: the stored pixels */
            zl_image_opts op;
            zl_image_default_opts(&op);
            op.keep_orientation = 1;
            CHECK(zl_image_read_mem(j, n, "exif.jpg", &op, &im) == 0);
            CHECK(im.w == W && im.h == H && im.orientation == 1 && color_at(&im, W - 4, 3) == 2);
            zl_image_free(&im);
            free(j);
        }
    /* invalid EXIF is ignored: wrong type, value 9, truncated IFD, bad byte order */
    uint8_t app1[64];
    unsigned n1 = exif_app1(app1, 1, 0x0112, 4, 6);
    CHECK(zl_jpeg_exif_orientation(app1, n1) == 0);
    n1 = exif_app1(app1, 0, 0x0112, 3, 9);
    CHECK(zl_jpeg_exif_orientation(app1, n1) == 0);
    n1 = exif_app1(app1, 1, 0x0112, 3, 6);
    CHECK(zl_jpeg_exif_orientation(app1, n1 - 10) == 0);
    CHECK(zl_jpeg_exif_orientation(app1, 10) == 0);
    app1[6] = 'X';
    CHECK(zl_jpeg_exif_orientation(app1, n1) == 0);
    n1 = exif_app1(app1, 1, 0x0110, 3, 6); /* another tag */
    CHECK(zl_jpeg_exif_orientation(app1, n1) == 0);
    unsigned long n;
    uint8_t *j = jpeg_make(px, W, H, 3, JCS_RGB, app1, n1, &n);
    zl_image im;
    CHECK(zl_image_read_mem(j, n, "x.jpg", NULL, &im) == 0 && im.w == W && im.orientation == 1);
    zl_image_free(&im);
    free(j);
    free(px);
}

TEST(image_jpeg_cmyk_and_gray) {
    /* CMYK as Adobe stores it (inverted): stored (255, 0, 255, 255) = C 0, M 1, Y 0, K 0: magenta */
    int W = 16, H = 16;
    uint8_t *cmyk = malloc((size_t)W * H * 4), *gray = malloc((size_t)W * H);
    for (int i = 0; i < W * H; i++) {
        uint8_t v[4] = {255, 0, 255, 255}, u[4] = {255, 255, 0, 127}; /* right: C 0, M 0, Y 1, K 0.5: dark yellow */
        memcpy(cmyk + 4 * i, (i % W) < 8 ? v : u, 4);
        gray[i] = (uint8_t)(i % W * 16);
    }
    unsigned long n;
    uint8_t *j = jpeg_make(cmyk, W, H, 4, JCS_CMYK, NULL, 0, &n);
    zl_image im;
    CHECK_MSG(zl_image_read_mem(j, n, "cmyk.jpg", NULL, &im) == 0, "%s", zl_last_error());
    const float *l = im.px + (4 * W + 3) * 3, *r = im.px + (4 * W + 12) * 3;
    CHECK_MSG(fabsf(l[0] - 1) < 0.03f && l[1] < 0.03f && fabsf(l[2] - 1) < 0.03f, "left %g %g %g", l[0], l[1], l[2]);
    CHECK_MSG(fabsf(r[0] - 0.5f) < 0.03f && fabsf(r[1] - 0.5f) < 0.03f && r[2] < 0.03f, "right %g %g %g", r[0], r[1], r[2]);
    zl_image_free(&im);
    free(j);
    j = jpeg_make(gray, W, H, 1, JCS_GRAYSCALE, NULL, 0, &n);
    CHECK(zl_image_read_mem(j, n, "gray.jpg", NULL, &im) == 0);
    for (int x = 0; x < W; x++) {
        const float *p = im.px + (8 * W + x) * 3;
        CHECK(p[0] == p[1] && p[1] == p[2] && fabsf(p[0] - x * 16 / 255.0f) < 0.03f);
    }
    zl_image_free(&im);
    free(j);
    free(cmyk);
    free(gray);
}

/* ------------------------------------------------------------------ WebP */

TEST(image_webp) {
    int W = 9, H = 5;
    uint8_t *rgba = malloc((size_t)W * H * 4);
    zl_rng r = {8};
    for (int i = 0; i < W * H * 4; i++) rgba[i] = (uint8_t)(zl_rng_next(&r) & 255);
    rgba[3] = 0;
    rgba[7] = 255;
    uint8_t *out = NULL;
    size_t n = WebPEncodeLosslessRGBA(rgba, W, H, W * 4, &out);
    CHECK(n > 0);
    zl_image_opts o;
    zl_image_default_opts(&o);
    o.bg[0] = 0.25f; o.bg[1] = 0.5f; o.bg[2] = 1.0f;
    zl_image im;
    CHECK_MSG(zl_image_read_mem(out, n, "a.webp", &o, &im) == 0, "%s", zl_last_error());
    CHECK(im.w == W && im.h == H && im.had_alpha && !strcmp(im.format, "WebP"));
    double worst = 0;
    for (int i = 0; i < W * H; i++) {
        float a = rgba[4 * i + 3] / 255.0f;
        for (int c = 0; c < 3; c++) {
            /* lossless WebP may change the colour of fully transparent pixels: those must give bg */
            double want = a == 0 ? o.bg[c] : rgba[4 * i + c] / 255.0f * a + o.bg[c] * (1 - a);
            double d = fabs(im.px[3 * i + c] - want);
            if (d > worst) worst = d;
        }
    }
    CHECK_MSG(worst < 1e-6, "lossless WebP with alpha: %.3g", worst);
    zl_image_free(&im);
    /* truncations: every prefix fails cleanly */
    for (size_t k = 0; k < n; k++) {
        CHECK(zl_image_read_mem(out, k, "t.webp", NULL, &im) != 0);
        CHECK(strstr(zl_last_error(), "t.webp: "));
    }
    WebPFree(out);
    /* lossy RGB */
    uint8_t *rgb = malloc((size_t)16 * 16 * 3);
    for (int i = 0; i < 256; i++) { rgb[3 * i] = (uint8_t)(i % 16 * 16); rgb[3 * i + 1] = 128; rgb[3 * i + 2] = (uint8_t)(i / 16 * 16); }
    n = WebPEncodeRGB(rgb, 16, 16, 48, 90, &out);
    CHECK(n > 0 && zl_image_read_mem(out, n, "b.webp", NULL, &im) == 0);
    CHECK(!im.had_alpha && fabsf(im.px[3 * 100 + 1] - 128 / 255.0f) < 0.05f);
    zl_image_free(&im);
    WebPFree(out);
    /* an animated WebP (VP8X with the animation flag + ANIM) is refused */
    uint8_t anim[] = {'R', 'I', 'F', 'F', 30, 0, 0, 0, 'W', 'E', 'B', 'P', 'V', 'P', '8', 'X', 10, 0, 0, 0, 0x02, 0, 0, 0, 7, 0, 0, 3, 0, 0,
                      'A', 'N', 'I', 'M', 6, 0, 0, 0, 0, 0, 0, 0, 0, 0};
    CHECK(zl_image_read_mem(anim, sizeof anim, "anim.webp", NULL, &im) != 0);
    CHECK_MSG(strstr(zl_last_error(), "anim.webp: animated WebP"), "%s", zl_last_error());
    free(rgba);
    free(rgb);
}

/* ------------------------------------------------------------------ errors */

static uint8_t *slurp(const char *p, size_t *n) {
    FILE *f = fopen(p, "rb");
    if (!f) return NULL;
    uint8_t *b = malloc(1 << 20);
    *n = fread(b, 1, 1 << 20, f);
    fclose(f);
    return b;
}

TEST(image_corrupt_and_truncated) {
    zl_image im;
    /* every proper prefix of a PNG (text chunks, Adam7) and of a JPEG (EXIF) fails with a message */
    size_t n;
    uint8_t *png = slurp(IMG "/rgb8_adam7_text.png", &n);
    CHECK(png && n > 100);
    for (size_t k = 0; k < n; k++) {
        CHECK_MSG(zl_image_read_mem(png, k, "t.png", NULL, &im) != 0, "prefix %zu of %zu decoded", k, n);
        CHECK(zl_last_error()[0] == 't' && strstr(zl_last_error(), "t.png: "));
    }
    CHECK(zl_image_read_mem(png, n - 20, "t.png", NULL, &im) != 0 && strstr(zl_last_error(), "truncated PNG"));
    /* a flipped bit in the image data: CRC error */
    size_t idat = 8;
    while (idat + 8 < n && memcmp(png + idat + 4, "IDAT", 4)) idat += 12 + ((size_t)png[idat] << 24 | (size_t)png[idat + 1] << 16 | (size_t)png[idat + 2] << 8 | png[idat + 3]);
    CHECK(idat + 20 < n);
    png[idat + 12] ^= 0x10;
    CHECK(zl_image_read_mem(png, n, "c.png", NULL, &im) != 0);
    CHECK_MSG(strstr(zl_last_error(), "c.png: corrupt PNG"), "%s", zl_last_error());
    free(png);
    uint8_t px[16 * 8 * 3];
    for (int i = 0; i < (int)sizeof px; i++) px[i] = (uint8_t)(i * 7);
    uint8_t app1[64];
    unsigned n1 = exif_app1(app1, 1, 0x0112, 3, 6);
    unsigned long jn;
    uint8_t *j = jpeg_make(px, 16, 8, 3, JCS_RGB, app1, n1, &jn);
    CHECK(zl_image_read_mem(j, jn, "ok.jpg", NULL, &im) == 0);
    zl_image_free(&im);
    for (size_t k = 0; k < jn; k++) {
        CHECK_MSG(zl_image_read_mem(j, k, "t.jpg", NULL, &im) != 0, "prefix %zu of %lu decoded", k, jn);
        CHECK(strstr(zl_last_error(), "t.jpg: "));
    }
    CHECK(zl_image_read_mem(j, jn - 40, "t.jpg", NULL, &im) != 0);
    CHECK_MSG(strstr(zl_last_error(), "truncated JPEG"), "%s", zl_last_error());
    /* corrupt bytes inside the entropy-coded data: an error or an image, never a crash */
    for (size_t k = jn / 2; k < jn - 2; k += 7) {
        uint8_t *c = malloc(jn);
        memcpy(c, j, jn);
        c[k] ^= 0xA5;
        if (zl_image_read_mem(c, jn, "c.jpg", NULL, &im) == 0) zl_image_free(&im);
        free(c);
    }
    /* a corrupt header */
    j[3] ^= 0xFF;
    j[4] = 0xFF;
    CHECK(zl_image_read_mem(j, jn, "h.jpg", NULL, &im) != 0 && strstr(zl_last_error(), "h.jpg: "));
    free(j);
    /* not an image, empty, missing, too large */
    CHECK(zl_image_read_mem("GIF89a....", 10, "x.gif", NULL, &im) != 0 && strstr(zl_last_error(), "x.gif: not a PNG, JPEG or WebP image"));
    CHECK(zl_image_read_mem("", 0, "e.png", NULL, &im) != 0 && strstr(zl_last_error(), "e.png: empty file"));
    CHECK(zl_image_read(IMG "/nope.png", NULL, &im) != 0 && strstr(zl_last_error(), IMG "/nope.png: cannot open"));
    zl_image_opts o;
    zl_image_default_opts(&o);
    o.max_pixels = 100;
    CHECK(zl_image_read(IMG "/rgb16.png", &o, &im) != 0);
    CHECK_MSG(strstr(zl_last_error(), "rgb16.png: image 16x12 is larger than the limit of 100 pixels"), "%s", zl_last_error());
    o.max_pixels = 192;
    CHECK(zl_image_read(IMG "/rgb16.png", &o, &im) == 0);
    zl_image_free(&im);
}

/* ------------------------------------------------------------------ resizing */

TEST(image_resize_vs_pillow) {
    zl_image src;
    CHECK(zl_image_read(IMG "/rgb16.png", NULL, &src) == 0);
    struct { const char *name; int w, h, filter; double x0, y0, x1, y1; int fit; } cases[] = {
        {"lanczos_7x5", 7, 5, ZL_RESIZE_LANCZOS3, 0, 0, 16, 12, 0},
        {"lanczos_37x29", 37, 29, ZL_RESIZE_LANCZOS3, 0, 0, 16, 12, 0},
        {"area_8x6", 8, 6, ZL_RESIZE_AREA, 0, 0, 16, 12, 0},
        {"area_5x7", 5, 7, ZL_RESIZE_AREA, 0, 0, 16, 12, 0},
        {"bilinear_9x9", 9, 9, ZL_RESIZE_BILINEAR, 0, 0, 16, 12, 0},
        {"lanczos_box", 6, 6, ZL_RESIZE_LANCZOS3, 2.5, 1.0, 14.5, 11.0, 0},
        {"fit_8x8", 8, 8, ZL_RESIZE_LANCZOS3, 0, 0, 0, 0, 1},
        {"fit_10x4", 10, 4, ZL_RESIZE_LANCZOS3, 0, 0, 0, 0, 1},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        zl_image d;
        int rc = cases[i].fit ? zl_image_fit(&src, cases[i].w, cases[i].h, cases[i].filter, &d)
                              : zl_image_resize_box(&src, cases[i].x0, cases[i].y0, cases[i].x1 - cases[i].x0, cases[i].y1 - cases[i].y0,
                                                    cases[i].w, cases[i].h, cases[i].filter, &d);
        CHECK_MSG(rc == 0, "%s: %s", cases[i].name, zl_last_error());
        int h, w;
        float *g = golden(IMG "/resize.safetensors", cases[i].name, &h, &w);
        CHECK(g && h == d.h && w == d.w);
        double e = maxdiff(d.px, g, (size_t)w * h * 3);
        free(g);
        zl_image_free(&d);
        CHECK_MSG(e < 2e-6, "%s: max diff from Pillow %.3g", cases[i].name, e);
    }
    /* area averaging by 2: the mean of each 2x2 block, computed here */
    zl_image d;
    CHECK(zl_image_resize(&src, 8, 6, ZL_RESIZE_AREA, &d) == 0);
    for (int y = 0; y < 6; y++)
        for (int x = 0; x < 8; x++)
            for (int c = 0; c < 3; c++) {
                double m = 0;
                for (int k = 0; k < 4; k++) m += src.px[((size_t)(2 * y + k / 2) * 16 + 2 * x + k % 2) * 3 + c] / 4.0;
                CHECK_NEAR(d.px[((size_t)y * 8 + x) * 3 + c], m, 1e-6);
            }
    zl_image_free(&d);
    /* same size: identity (Lanczos weights at integer offsets are 0) */
    CHECK(zl_image_resize(&src, 16, 12, ZL_RESIZE_LANCZOS3, &d) == 0);
    CHECK(maxdiff(d.px, src.px, 16 * 12 * 3) < 1e-6);
    zl_image_free(&d);
    /* a constant image stays constant */
    zl_image k;
    CHECK(zl_image_alloc(&k, 31, 17) == 0);
    for (int i = 0; i < 31 * 17 * 3; i++) k.px[i] = 0.3f;
    int sizes[][2] = {{7, 3}, {64, 40}, {31, 1}};
    for (int s = 0; s < 3; s++)
        for (int f = 0; f < 3; f++) {
            CHECK(zl_image_resize(&k, sizes[s][0], sizes[s][1], f, &d) == 0);
            for (int i = 0; i < d.w * d.h * 3; i++) CHECK_NEAR(d.px[i], 0.3, 1e-6);
            zl_image_free(&d);
        }
    zl_image_free(&k);
    /* crop */
    CHECK(zl_image_crop(&src, 3, 2, 5, 4, &d) == 0);
    CHECK(d.w == 5 && d.h == 4 && !memcmp(d.px + 3, src.px + ((size_t)2 * 16 + 4) * 3, 12));
    zl_image_free(&d);
    CHECK(zl_image_crop(&src, 12, 0, 5, 4, &d) != 0);
    CHECK(zl_image_resize_box(&src, 1, 1, 16, 4, 4, 4, 0, &d) != 0);
    CHECK(zl_image_resize(&src, 0, 4, 0, &d) != 0);
    zl_image_free(&src);
}

/* ------------------------------------------------------------------ tensors */

TEST(image_tensor_roundtrip) {
    int w = 256, h = 2;
    uint8_t *rgb = malloc((size_t)w * h * 3);
    for (int i = 0; i < w * h * 3; i++) rgb[i] = (uint8_t)(i / 3 % 256);
    zl_image a, b;
    CHECK(zl_image_from_rgb8(&a, rgb, w, h) == 0);
    float *t = malloc(sizeof(float) * 3 * w * h);
    zl_image_to_tensor(&a, t);
    CHECK(t[0] == -1.0f && t[255] == 1.0f && t[(size_t)w * h] == -1.0f); /* channel-major [3, H, W] */
    CHECK_NEAR(t[1], 2.0 / 255 - 1, 1e-7);
    CHECK(zl_image_from_tensor(&b, t, w, h) == 0);
    uint8_t *back = zl_image_to_rgb8(&b);
    CHECK(memcmp(back, rgb, (size_t)w * h * 3) == 0);
    free(back);
    zl_image_free(&b);
    /* model-space values: clamp, then round(x/2 + 0.5)·255: 0 -> 127.5 -> 128; out of range clamps */
    float v[3 * 4] = {0.0f, -3.0f, 7.0f, NAN, 0.0f, 0, 0, 0, 0, 0, 0, 0};
    CHECK(zl_image_from_tensor(&b, v, 4, 1) == 0);
    back = zl_image_to_rgb8(&b);
    CHECK(back[0] == 128 && back[3] == 0 && back[6] == 255 && back[9] == 0);
    free(back);
    zl_image_free(&b);
    zl_image_free(&a);
    free(t);
    free(rgb);
}
