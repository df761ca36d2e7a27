/* fuzz_image.c — libFuzzer target for the image readers (src/io/image.c).
 *
 * The input is decoded from memory as PNG, JPEG or WebP (chosen by its magic bytes, as for files), with a
 * pixel limit of 2^20 so that huge declared sizes are refused instead of allocated. Every input must
 * either decode or fail with a "fuzz: ..." message; a decoded image is then resized (Lanczos and area),
 * centre-cropped, converted to a tensor and back, and re-encoded as PNG with a text chunk. The first byte
 * also picks the background and whether the EXIF orientation is applied. ASan/UBSan reports, aborts,
 * leaks and timeouts are crashes.
 *
 * Seeds: with ZL_FUZZ_WRITE_SEEDS=<dir> the binary writes small PNG (with text), JPEG (with EXIF
 * orientation 6, and CMYK), gray JPEG and WebP (lossless with alpha, lossy) files and exits.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <jpeglib.h>
#include <webp/encode.h>

#include "base/base.h"
#include "io/image.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv);

static volatile float sink;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    zl_image_opts o;
    zl_image_default_opts(&o);
    o.max_pixels = (uint64_t)1 << 20;
    if (size > 0) {
        o.keep_orientation = data[0] & 1;
        o.bg[0] = o.bg[1] = o.bg[2] = (data[0] & 2) ? 0.0f : 1.0f;
    }
    zl_image im;
    zl_clear_error();
    if (zl_image_read_mem(data, size, "fuzz", &o, &im)) {
        if (strncmp(zl_last_error(), "fuzz: ", 6)) abort();
        return 0;
    }
    if (im.w <= 0 || im.h <= 0 || !im.px || im.orientation < 1 || im.orientation > 8) abort();
    zl_image a, b;
    if (zl_image_resize(&im, 7, 5, ZL_RESIZE_LANCZOS3, &a) == 0) {
        for (int i = 0; i < 7 * 5 * 3; i++) sink += a.px[i];
        zl_image_free(&a);
    }
    if (zl_image_resize(&im, im.w > 1 ? im.w / 2 : 1, im.h > 1 ? im.h / 2 : 1, ZL_RESIZE_AREA, &a) == 0) zl_image_free(&a);
    if (zl_image_fit(&im, 8, 3, ZL_RESIZE_LANCZOS3, &a) == 0) {
        float t[3 * 8 * 3];
        zl_image_to_tensor(&a, t);
        if (zl_image_from_tensor(&b, t, 8, 3) == 0) {
            uint8_t *rgb = zl_image_to_rgb8(&b), *png = NULL;
            size_t n = 0;
            const char *k[] = {"parameters"}, *v[] = {"fuzz"};
            if (rgb && zl_png_encode_rgb8(rgb, 8, 3, k, v, 1, &png, &n) == 0) free(png);
            free(rgb);
            zl_image_free(&b);
        }
        zl_image_free(&a);
    }
    for (int i = 0; i < im.ntext; i++) sink += (float)strlen(im.text_val[i]);
    zl_image_free(&im);
    return 0;
}

/* ------------------------------------------------------------------ seeds */

static void put(const char *dir, const char *name, const void *d, size_t n) {
    char p[4096];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    FILE *f = fopen(p, "wb");
    if (!f) return;
    fwrite(d, 1, n, f);
    fclose(f);
}

static void jpeg_seed(const char *dir, const char *name, int comps, J_COLOR_SPACE cs, int progressive, const uint8_t *app1, unsigned n1) {
    struct jpeg_compress_struct c;
    struct jpeg_error_mgr e;
    c.err = jpeg_std_error(&e);
    jpeg_create_compress(&c);
    unsigned char *mem = NULL;
    unsigned long n = 0;
    jpeg_mem_dest(&c, &mem, &n);
    c.image_width = 12;
    c.image_height = 9;
    c.input_components = comps;
    c.in_color_space = cs;
    jpeg_set_defaults(&c);
    if (progressive) jpeg_simple_progression(&c);
    jpeg_start_compress(&c, TRUE);
    if (app1) jpeg_write_marker(&c, JPEG_APP0 + 1, app1, n1);
    uint8_t row[12 * 4];
    while (c.next_scanline < c.image_height) {
        for (int i = 0; i < 12 * comps; i++) row[i] = (uint8_t)(i * 23 + c.next_scanline * 41);
        JSAMPROW r = row;
        jpeg_write_scanlines(&c, &r, 1);
    }
    jpeg_finish_compress(&c);
    jpeg_destroy_compress(&c);
    put(dir, name, mem, n);
    free(mem);
}

static void write_seeds(const char *dir) {
    uint8_t rgb[10 * 6 * 3], rgba[10 * 6 * 4];
    for (int i = 0; i < (int)sizeof rgb; i++) rgb[i] = (uint8_t)(i * 13);
    for (int i = 0; i < (int)sizeof rgba; i++) rgba[i] = (uint8_t)(i * 29);
    uint8_t *png = NULL;
    size_t n = 0;
    const char *k[] = {"parameters", "Comment"}, *v[] = {"a cat\nSteps: 8", "caf\xc3\xa9"};
    if (zl_png_encode_rgb8(rgb, 10, 6, k, v, 2, &png, &n) == 0) { put(dir, "seed.png", png, n); free(png); }
    static const uint8_t app1[] = {'E', 'x', 'i', 'f', 0, 0, 'I', 'I', 42, 0, 8, 0, 0, 0, 1, 0, 0x12, 0x01, 3, 0, 1, 0, 0, 0, 6, 0, 0, 0, 0, 0, 0, 0};
    jpeg_seed(dir, "seed_exif6.jpg", 3, JCS_RGB, 0, app1, sizeof app1);
    jpeg_seed(dir, "seed_progressive.jpg", 3, JCS_RGB, 1, NULL, 0);
    jpeg_seed(dir, "seed_gray.jpg", 1, JCS_GRAYSCALE, 0, NULL, 0);
    jpeg_seed(dir, "seed_cmyk.jpg", 4, JCS_CMYK, 0, NULL, 0);
    uint8_t *w = NULL;
    n = WebPEncodeLosslessRGBA(rgba, 10, 6, 40, &w);
    if (n) { put(dir, "seed_lossless.webp", w, n); WebPFree(w); }
    n = WebPEncodeRGB(rgb, 10, 6, 30, 75, &w);
    if (n) { put(dir, "seed_lossy.webp", w, n); WebPFree(w); }
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc;
    (void)argv;
    zl_log_level = 0;
    const char *d = getenv("ZL_FUZZ_WRITE_SEEDS");
    if (d && *d) {
        write_seeds(d);
        exit(0);
    }
    return 0;
}
