/* image.h — reading PNG, JPEG and WebP into RGB, writing PNG with text chunks, high-quality resizing and
 * centre cropping, and conversion to and from the [3, H, W] float tensors in [−1, 1] the VAE takes.
 *
 * Reading (from a file or a memory buffer; the format comes from the magic bytes, not the name):
 *   PNG   (libpng) 1/2/4/8/16-bit gray, gray+alpha, palette (with tRNS transparency), RGB, RGBA,
 *         interlaced or not; 16-bit samples keep their precision. tEXt/zTXt/iTXt chunks are returned.
 *         Gamma and ICC chunks are ignored (the samples are taken as sRGB, as trainers do).
 *   JPEG  (libjpeg-turbo) gray, YCbCr, RGB; CMYK and YCCK converted to RGB (Adobe files store inverted
 *         CMYK; both conventions handled, without colour management). The EXIF orientation (APP1 "Exif",
 *         TIFF IFD0 tag 0x0112, values 1–8) is applied, so the pixels come out upright.
 *   WebP  (libwebp) lossy or lossless, with or without alpha; animated WebP is refused.
 * Pixels come out as RGB float in [0, 1] (8-bit v/255, 16-bit v/65535), row-major, interleaved. Alpha is
 * composited on opts.bg (default white) in the stored sRGB values: rgb·a + bg·(1 − a).
 * A corrupt, truncated or unsupported file gives -1 and "<file>: <problem>" (libpng and libjpeg errors
 * are caught with longjmp; libjpeg's exit() on error is replaced; a JPEG that ends early is an error, not
 * a grey bottom half). Images larger than opts.max_pixels are refused before decoding.
 */
#ifndef ZL_IMAGE_H
#define ZL_IMAGE_H
#include <stddef.h>
#include <stdint.h>

typedef struct {
    int w, h;
    float *px;          /* [h][w][3] RGB in [0, 1] (resizing may overshoot slightly; conversions clamp) */
    int ntext;          /* PNG text chunks, in file order (keys Latin-1, values UTF-8 for iTXt) */
    char **text_key, **text_val;
    const char *format; /* "PNG", "JPEG", "WebP" or NULL (made in memory) */
    int had_alpha;      /* the file had an alpha channel or transparency (composited on bg) */
    int orientation;    /* the EXIF orientation that was applied (1: none) */
} zl_image;

typedef struct {
    float bg[3];          /* background for alpha, in [0, 1]; default 1, 1, 1 (white) */
    uint64_t max_pixels;  /* refuse larger images; default 2^28 */
    int keep_orientation; /* 1: do not apply the EXIF orientation */
} zl_image_opts;

void zl_image_default_opts(zl_image_opts *o);
/* o may be NULL (defaults). img is overwritten; free it with zl_image_free. */
int zl_image_read(const char *path, const zl_image_opts *o, zl_image *img);
int zl_image_read_mem(const void *buf, size_t n, const char *label, const zl_image_opts *o, zl_image *img);
void zl_image_free(zl_image *img);
/* A new w×h image (pixels zero); -1 on bad sizes or no memory. */
int zl_image_alloc(zl_image *img, int w, int h);
/* Value of text chunk `key` (NULL: none). */
const char *zl_image_text(const zl_image *img, const char *key);

/* 8-bit: rgb [h][w][3] = round(clamp(px, 0, 1)·255) (malloc'd; NULL on no memory), and back (v/255). */
uint8_t *zl_image_to_rgb8(const zl_image *img);
int zl_image_from_rgb8(zl_image *img, const uint8_t *rgb, int w, int h);

/* PNG writing: 8-bit RGB, with text chunks (ASCII values as tEXt, e.g. key "parameters" with A1111-style
 * generation text; other UTF-8 values as iTXt). Keys: 1–79 Latin-1 characters, no leading, trailing or
 * double spaces. The file is written atomically. */
int zl_image_write_png(const char *path, const zl_image *img, const char *const *keys, const char *const *vals, int ntext);
/* The same PNG into a malloc'd buffer. */
int zl_png_encode_rgb8(const uint8_t *rgb, int w, int h, const char *const *keys, const char *const *vals, int ntext,
                       uint8_t **out, size_t *n);

/* Resizing, separable, as Pillow does it: each output pixel's centre maps to the source, the filter is
 * stretched by the scale factor when shrinking (antialiasing), taps outside the image are dropped and the
 * weights renormalised. LANCZOS3: sinc(x)·sinc(x/3), |x| < 3 (high quality either way; may overshoot);
 * AREA: a box filter, i.e. exact area averaging when shrinking (for integer factors, the mean of each
 * block); BILINEAR: a triangle. */
enum { ZL_RESIZE_LANCZOS3 = 0, ZL_RESIZE_AREA = 1, ZL_RESIZE_BILINEAR = 2 };
int zl_image_resize(const zl_image *src, int w, int h, int filter, zl_image *dst);
/* Resizes the source region [x0, x0+bw) × [y0, y0+bh) (fractional allowed) to w×h. */
int zl_image_resize_box(const zl_image *src, double x0, double y0, double bw, double bh, int w, int h, int filter,
                        zl_image *dst);
int zl_image_crop(const zl_image *src, int x, int y, int w, int h, zl_image *dst);
/* Scales to cover w×h (the larger of the two scale factors) and crops the centre: one resampling of the
 * centred source region with the target aspect ratio. */
int zl_image_fit(const zl_image *src, int w, int h, int filter, zl_image *dst);

/* Tensors: t [3, h, w] = clamp(px, 0, 1)·2 − 1, and back px = clamp(t/2 + 0.5, 0, 1) (then
 * zl_image_to_rgb8 rounds: the spec's image = round(clamp(x/2 + 0.5, 0, 1)·255)). */
void zl_image_to_tensor(const zl_image *img, float *t);
int zl_image_from_tensor(zl_image *img, const float *t, int w, int h);

/* Applies EXIF orientation o (1–8) to img in place (exposed for tests). */
int zl_image_orient(zl_image *img, int o);
/* The EXIF orientation (1–8) in a JPEG's APP1 segment, 0 when there is none or it is invalid. */
int zl_jpeg_exif_orientation(const uint8_t *app1, size_t n);

#endif
