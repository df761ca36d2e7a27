/* image.c — PNG/JPEG/WebP reading, PNG writing, resizing, tensors. See image.h.
 *
 * Error handling: libpng and libjpeg report errors through callbacks that must not return; ours record
 * the message and longjmp back to the decoder function. Everything that must be freed afterwards lives in
 * a context struct reached through a pointer (never in locals changed after setjmp), so the cleanup path
 * sees the current values.
 */
#include "io/image.h"
#include "base/base.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <png.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <jpeglib.h> /* needs stdio.h first */
#include <jerror.h>
#include <webp/decode.h>

#define MAX_SIDE (1 << 24)
#define MAX_FILE_BYTES ((size_t)1 << 31)
#define JPEG_MAX_SCANS 1000

void zl_image_default_opts(zl_image_opts *o) {
    o->bg[0] = o->bg[1] = o->bg[2] = 1.0f;
    o->max_pixels = (uint64_t)1 << 28;
    o->keep_orientation = 0;
}

void zl_image_free(zl_image *img) {
    if (!img) return;
    free(img->px);
    for (int i = 0; i < img->ntext; i++) { free(img->text_key[i]); free(img->text_val[i]); }
    free(img->text_key);
    free(img->text_val);
    memset(img, 0, sizeof *img);
}

int zl_image_alloc(zl_image *img, int w, int h) {
    memset(img, 0, sizeof *img);
    if (w <= 0 || h <= 0 || w > MAX_SIDE || h > MAX_SIDE) return zl_err("bad image size %dx%d", w, h);
    size_t n;
    if (zl_mul_size((size_t)w * 3, (size_t)h, &n) || zl_mul_size(n, sizeof(float), &n)) return zl_err("image %dx%d is too large", w, h);
    img->px = zl_try_calloc(n / sizeof(float), sizeof(float));
    if (!img->px) return zl_err_prefix("image %dx%d", w, h);
    img->w = w;
    img->h = h;
    img->orientation = 1;
    return 0;
}

const char *zl_image_text(const zl_image *img, const char *key) {
    for (int i = 0; i < img->ntext; i++)
        if (!strcmp(img->text_key[i], key)) return img->text_val[i];
    return NULL;
}

static void add_text(zl_image *img, const char *k, const char *v, size_t vlen) {
    img->text_key = zl_xrealloc(img->text_key, sizeof(char *) * (size_t)(img->ntext + 1));
    img->text_val = zl_xrealloc(img->text_val, sizeof(char *) * (size_t)(img->ntext + 1));
    img->text_key[img->ntext] = zl_xstrdup(k);
    char *s = zl_xmalloc(vlen + 1);
    memcpy(s, v, vlen);
    s[vlen] = 0;
    img->text_val[img->ntext] = s;
    img->ntext++;
}

/* Checks w×h against the limits; message into msg. */
static int size_ok(uint64_t w, uint64_t h, const zl_image_opts *o, char *msg, size_t n) {
    if (w == 0 || h == 0) { snprintf(msg, n, "empty image (%llux%llu)", (unsigned long long)w, (unsigned long long)h); return 0; }
    if (w > MAX_SIDE || h > MAX_SIDE || w * h > o->max_pixels) {
        snprintf(msg, n, "image %llux%llu is larger than the limit of %llu pixels", (unsigned long long)w, (unsigned long long)h,
                 (unsigned long long)o->max_pixels);
        return 0;
    }
    return 1;
}

/* ------------------------------------------------------------------ PNG */

typedef struct {
    const uint8_t *buf;
    size_t n, off;
    char msg[256];
    int plain; /* msg is not about corruption (limits, memory): no "corrupt PNG" prefix */
    png_structp png;
    png_infop info, end;
    uint8_t *data;
    png_bytep *rows;
    const zl_image_opts *o;
    zl_image *img;
} png_rd;

static void png_error_cb(png_structp png, png_const_charp msg) {
    png_rd *r = png_get_error_ptr(png);
    if (!r->msg[0]) snprintf(r->msg, sizeof r->msg, "%s", msg);
    png_longjmp(png, 1);
}
static void png_warn_cb(png_structp png, png_const_charp msg) { (void)png; (void)msg; }

static void png_read_cb(png_structp png, png_bytep out, size_t len) {
    png_rd *r = png_get_io_ptr(png);
    if (len > r->n - r->off) {
        snprintf(r->msg, sizeof r->msg, "truncated PNG (the file ends inside a chunk)");
        png_error(png, r->msg);
    }
    memcpy(out, r->buf + r->off, len);
    r->off += len;
}

static void png_texts(png_rd *r, png_infop info) {
    png_textp t;
    int nt = 0;
    if (png_get_text(r->png, info, &t, &nt) <= 0) return;
    for (int i = 0; i < nt; i++) {
        size_t len = t[i].compression > 0 ? t[i].itxt_length : t[i].text_length;
        if (t[i].key && t[i].text) add_text(r->img, t[i].key, t[i].text, len);
    }
}

/* Decodes; on error returns -1 with r->msg set (resources in r freed by the caller). */
static int png_decode(png_rd *r) {
    if (setjmp(png_jmpbuf(r->png))) return -1;
    png_structp png = r->png;
    png_set_read_fn(png, r, png_read_cb);
    png_set_user_limits(png, MAX_SIDE, MAX_SIDE);
    png_set_chunk_malloc_max(png, (png_alloc_size_t)1 << 20); /* ancillary chunks (text, ICC): 1 MiB each */
    png_set_chunk_cache_max(png, 256);                          /* and at most 256 of them */
    png_read_info(png, r->info);
    png_uint_32 w = png_get_image_width(png, r->info), h = png_get_image_height(png, r->info);
    int ct = png_get_color_type(png, r->info);
    if (!size_ok(w, h, r->o, r->msg, sizeof r->msg)) { r->plain = 1; png_error(png, r->msg); }
    int alpha = (ct & PNG_COLOR_MASK_ALPHA) || png_get_valid(png, r->info, PNG_INFO_tRNS);
    png_set_expand(png); /* palette -> RGB(A), gray < 8 bits -> 8, tRNS -> alpha */
    png_set_gray_to_rgb(png);
    png_set_interlace_handling(png);
    png_read_update_info(png, r->info);
    int ch = png_get_channels(png, r->info), bd = png_get_bit_depth(png, r->info);
    size_t rb = png_get_rowbytes(png, r->info), tot;
    if ((ch != 3 && ch != 4) || (bd != 8 && bd != 16) || rb < (size_t)w * ch * (bd / 8))
        png_error(png, "unsupported PNG layout after expansion");
    if (zl_mul_size(rb, h, &tot) || !(r->data = malloc(tot)) || !(r->rows = malloc(sizeof(png_bytep) * h))) {
        snprintf(r->msg, sizeof r->msg, "out of memory for a %ux%u PNG", (unsigned)w, (unsigned)h);
        r->plain = 1;
        png_error(png, r->msg);
    }
    for (png_uint_32 y = 0; y < h; y++) r->rows[y] = r->data + (size_t)y * rb;
    png_read_image(png, r->rows);
    png_read_end(png, r->end);
    zl_image *img = r->img;
    if (zl_image_alloc(img, (int)w, (int)h)) { r->plain = 1; png_error(png, "out of memory"); }
    img->had_alpha = alpha;
    png_texts(r, r->info);
    png_texts(r, r->end);
    const float *bg = r->o->bg;
    for (png_uint_32 y = 0; y < h; y++) {
        const uint8_t *s = r->rows[y];
        float *d = img->px + (size_t)y * w * 3;
        for (png_uint_32 x = 0; x < w; x++) {
            float v[4];
            for (int c = 0; c < ch; c++)
                v[c] = bd == 16 ? (float)((s[(x * ch + c) * 2] << 8) | s[(x * ch + c) * 2 + 1]) / 65535.0f : (float)s[x * ch + c] / 255.0f;
            if (ch == 4)
                for (int c = 0; c < 3; c++) v[c] = v[c] * v[3] + bg[c] * (1.0f - v[3]);
            d[3 * x] = v[0];
            d[3 * x + 1] = v[1];
            d[3 * x + 2] = v[2];
        }
    }
    img->format = "PNG";
    return 0;
}

/* Walks the chunk headers (the whole file is in memory): a declared length past the end of the data is
 * reported here, because libpng would first allocate that many bytes (its "chunk data is too large" check
 * is only a benign warning on read). */
static int png_prescan(const uint8_t *b, size_t n, char *msg, size_t mn) {
    size_t off = 8;
    while (off < n) {
        if (n - off < 12) { snprintf(msg, mn, "truncated PNG (the file ends inside a chunk header)"); return -1; }
        uint32_t len = (uint32_t)b[off] << 24 | (uint32_t)b[off + 1] << 16 | (uint32_t)b[off + 2] << 8 | b[off + 3];
        if (len > 0x7fffffffu) { snprintf(msg, mn, "corrupt PNG: chunk length %u at byte %zu", len, off); return -1; }
        if ((size_t)len > n - off - 12) {
            snprintf(msg, mn, "truncated PNG (chunk \"%c%c%c%c\" at byte %zu declares %u bytes, %zu remain)", isprint(b[off + 4]) ? b[off + 4] : '?',
                     isprint(b[off + 5]) ? b[off + 5] : '?', isprint(b[off + 6]) ? b[off + 6] : '?', isprint(b[off + 7]) ? b[off + 7] : '?', off, len,
                     n - off - 12);
            return -1;
        }
        if (!memcmp(b + off + 4, "IEND", 4)) break;
        off += 12 + (size_t)len;
    }
    return 0;
}

static int read_png(const uint8_t *buf, size_t n, const char *label, const zl_image_opts *o, zl_image *img) {
    char pm[200];
    if (png_prescan(buf, n, pm, sizeof pm)) return zl_err("%s: %s", label, pm);
    png_rd r;
    memset(&r, 0, sizeof r);
    r.buf = buf;
    r.n = n;
    r.o = o;
    r.img = img;
    r.png = png_create_read_struct(PNG_LIBPNG_VER_STRING, &r, png_error_cb, png_warn_cb);
    if (!r.png) return zl_err("%s: cannot start libpng", label);
    r.info = png_create_info_struct(r.png);
    r.end = png_create_info_struct(r.png);
    int rc = r.info && r.end ? png_decode(&r) : (snprintf(r.msg, sizeof r.msg, "out of memory"), -1);
    png_destroy_read_struct(&r.png, r.info ? &r.info : NULL, r.end ? &r.end : NULL);
    free(r.data);
    free(r.rows);
    if (rc) {
        zl_image_free(img);
        return zl_err("%s: %s%s", label, r.plain || strstr(r.msg, "PNG") ? "" : "corrupt PNG: ", r.msg[0] ? r.msg : "unknown error");
    }
    return 0;
}

/* ------------------------------------------------------------------ PNG writing */

typedef struct {
    uint8_t *p;
    size_t n, cap;
    int oom;
    char msg[256];
    png_structp png;
    png_infop info;
    png_bytep *rows;
    png_text *text;
} png_wr;

static void png_write_cb(png_structp png, png_bytep data, size_t len) {
    png_wr *w = png_get_io_ptr(png);
    if (w->n + len > w->cap) {
        size_t c = w->cap ? w->cap : 65536;
        while (c < w->n + len) c *= 2;
        uint8_t *q = realloc(w->p, c);
        if (!q) { snprintf(w->msg, sizeof w->msg, "out of memory"); png_error(png, w->msg); }
        w->p = q;
        w->cap = c;
    }
    memcpy(w->p + w->n, data, len);
    w->n += len;
}
static void png_flush_cb(png_structp png) { (void)png; }
static void png_werror_cb(png_structp png, png_const_charp msg) {
    png_wr *w = png_get_error_ptr(png);
    if (!w->msg[0]) snprintf(w->msg, sizeof w->msg, "%s", msg);
    png_longjmp(png, 1);
}

static int key_ok(const char *k) {
    size_t n = strlen(k);
    if (n < 1 || n > 79 || k[0] == ' ' || k[n - 1] == ' ') return 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)k[i];
        if (c < 32 || (c > 126 && c < 161)) return 0;
        if (c == ' ' && k[i + 1] == ' ') return 0;
    }
    return 1;
}

static int png_encode(png_wr *w, const uint8_t *rgb, int wd, int h, const char *const *keys, const char *const *vals, int nt) {
    if (setjmp(png_jmpbuf(w->png))) return -1;
    png_set_write_fn(w->png, w, png_write_cb, png_flush_cb);
    png_set_IHDR(w->png, w->info, (png_uint_32)wd, (png_uint_32)h, 8, PNG_COLOR_TYPE_RGB, PNG_INTERLACE_NONE, PNG_COMPRESSION_TYPE_DEFAULT,
                 PNG_FILTER_TYPE_DEFAULT);
    if (nt > 0) {
        for (int i = 0; i < nt; i++) {
            int ascii = 1;
            for (const char *c = vals[i]; *c; c++) ascii &= (unsigned char)*c < 128;
            w->text[i].compression = ascii ? PNG_TEXT_COMPRESSION_NONE : PNG_ITXT_COMPRESSION_NONE;
            w->text[i].key = (char *)keys[i];
            w->text[i].text = (char *)vals[i];
            w->text[i].text_length = ascii ? strlen(vals[i]) : 0;
            w->text[i].itxt_length = ascii ? 0 : strlen(vals[i]);
        }
        png_set_text(w->png, w->info, w->text, nt);
    }
    png_write_info(w->png, w->info);
    for (int y = 0; y < h; y++) w->rows[y] = (png_bytep)(rgb + (size_t)y * wd * 3);
    png_write_image(w->png, w->rows);
    png_write_end(w->png, w->info);
    return 0;
}

int zl_png_encode_rgb8(const uint8_t *rgb, int wd, int h, const char *const *keys, const char *const *vals, int ntext,
                       uint8_t **out, size_t *n) {
    *out = NULL;
    *n = 0;
    if (wd <= 0 || h <= 0 || wd > MAX_SIDE || h > MAX_SIDE) return zl_err("PNG: bad image size %dx%d", wd, h);
    for (int i = 0; i < ntext; i++) {
        if (!keys[i] || !key_ok(keys[i])) return zl_err("PNG: text key \"%s\" is not 1-79 Latin-1 characters without leading, trailing or double spaces", keys[i] ? keys[i] : "(null)");
        if (!vals[i] || !zl_utf8_valid(vals[i], strlen(vals[i]))) return zl_err("PNG: the text of \"%s\" is not valid UTF-8", keys[i]);
    }
    png_wr w;
    memset(&w, 0, sizeof w);
    w.png = png_create_write_struct(PNG_LIBPNG_VER_STRING, &w, png_werror_cb, png_warn_cb);
    if (!w.png) return zl_err("PNG: cannot start libpng");
    w.info = png_create_info_struct(w.png);
    w.rows = malloc(sizeof(png_bytep) * (size_t)h);
    w.text = calloc((size_t)(ntext > 0 ? ntext : 1), sizeof(png_text));
    int rc = w.info && w.rows && w.text ? png_encode(&w, rgb, wd, h, keys, vals, ntext) : (snprintf(w.msg, sizeof w.msg, "out of memory"), -1);
    png_destroy_write_struct(&w.png, w.info ? &w.info : NULL);
    free(w.rows);
    free(w.text);
    if (rc) { free(w.p); return zl_err("PNG: %s", w.msg[0] ? w.msg : "write error"); }
    *out = w.p;
    *n = w.n;
    return 0;
}

int zl_image_write_png(const char *path, const zl_image *img, const char *const *keys, const char *const *vals, int ntext) {
    uint8_t *rgb = zl_image_to_rgb8(img), *png = NULL;
    size_t n = 0;
    if (!rgb) return zl_err_prefix("%s", path);
    int rc = zl_png_encode_rgb8(rgb, img->w, img->h, keys, vals, ntext, &png, &n);
    free(rgb);
    if (rc) return zl_err_prefix("%s", path);
    const void *parts[1] = {png};
    size_t sizes[1] = {n};
    rc = zl_write_atomic(path, parts, sizes, 1);
    free(png);
    return rc;
}

/* ------------------------------------------------------------------ JPEG */

int zl_jpeg_exif_orientation(const uint8_t *d, size_t n) {
    if (n < 6 + 8 || memcmp(d, "Exif\0\0", 6)) return 0;
    const uint8_t *t = d + 6;
    size_t tn = n - 6;
    int le;
    if (t[0] == 'I' && t[1] == 'I') le = 1;
    else if (t[0] == 'M' && t[1] == 'M') le = 0;
    else return 0;
#define U16(p) (le ? (unsigned)((p)[0] | (p)[1] << 8) : (unsigned)((p)[0] << 8 | (p)[1]))
#define U32(p) (le ? ((uint32_t)(p)[0] | (uint32_t)(p)[1] << 8 | (uint32_t)(p)[2] << 16 | (uint32_t)(p)[3] << 24) \
                   : ((uint32_t)(p)[0] << 24 | (uint32_t)(p)[1] << 16 | (uint32_t)(p)[2] << 8 | (uint32_t)(p)[3]))
    if (U16(t + 2) != 42) return 0;
    uint32_t ifd = U32(t + 4);
    if (ifd > tn || tn - ifd < 2) return 0;
    unsigned cnt = U16(t + ifd);
    for (unsigned i = 0; i < cnt; i++) {
        size_t e = (size_t)ifd + 2 + (size_t)i * 12;
        if (e > tn || tn - e < 12) return 0;
        if (U16(t + e) == 0x0112) {
            unsigned type = U16(t + e + 2);
            uint32_t c = U32(t + e + 4);
            if (type != 3 || c < 1) return 0;
            unsigned v = U16(t + e + 8);
            return v >= 1 && v <= 8 ? (int)v : 0;
        }
    }
    return 0;
#undef U16
#undef U32
}

typedef struct {
    struct jpeg_error_mgr pub;
    jmp_buf jb;
    char msg[JMSG_LENGTH_MAX + 64];
    int truncated;
} jerr_t;

typedef struct {
    struct jpeg_decompress_struct ci;
    jerr_t err;
    struct jpeg_progress_mgr prog;
    int created;
    uint8_t *row;
    const zl_image_opts *o;
    zl_image *img;
} jpeg_rd;

static void jpeg_error_exit_cb(j_common_ptr c) {
    jerr_t *e = (jerr_t *)c->err;
    if (!e->msg[0]) (*c->err->format_message)(c, e->msg);
    longjmp(e->jb, 1);
}
static void jpeg_emit_cb(j_common_ptr c, int level) {
    jerr_t *e = (jerr_t *)c->err;
    if (level < 0) {
        if (c->err->msg_code == JWRN_JPEG_EOF) e->truncated = 1;
        c->err->num_warnings++;
    }
}
static void jpeg_output_cb(j_common_ptr c) { (void)c; }
static void jpeg_progress_cb(j_common_ptr c) {
    j_decompress_ptr d = (j_decompress_ptr)c;
    jerr_t *e = (jerr_t *)c->err;
    if (d->input_scan_number > JPEG_MAX_SCANS) {
        snprintf(e->msg, sizeof e->msg, "corrupt JPEG: more than %d scans", JPEG_MAX_SCANS);
        longjmp(e->jb, 1);
    }
}

static int jpeg_decode(jpeg_rd *r, const uint8_t *buf, size_t n) {
    struct jpeg_decompress_struct *ci = &r->ci;
    ci->err = jpeg_std_error(&r->err.pub);
    r->err.pub.error_exit = jpeg_error_exit_cb;
    r->err.pub.emit_message = jpeg_emit_cb;
    r->err.pub.output_message = jpeg_output_cb;
    if (setjmp(r->err.jb)) return -1;
    jpeg_create_decompress(ci);
    r->created = 1;
    r->prog.progress_monitor = jpeg_progress_cb;
    ci->progress = &r->prog;
    jpeg_mem_src(ci, buf, (unsigned long)n);
    jpeg_save_markers(ci, JPEG_APP0 + 1, 0xFFFF);
    jpeg_read_header(ci, TRUE);
    int orient = 1;
    for (jpeg_saved_marker_ptr mk = ci->marker_list; mk; mk = mk->next)
        if (mk->marker == JPEG_APP0 + 1) {
            int v = zl_jpeg_exif_orientation(mk->data, mk->data_length);
            if (v) { orient = v; break; }
        }
    if (!size_ok(ci->image_width, ci->image_height, r->o, r->err.msg, sizeof r->err.msg)) longjmp(r->err.jb, 1);
    int cmyk = ci->jpeg_color_space == JCS_CMYK || ci->jpeg_color_space == JCS_YCCK;
    ci->out_color_space = cmyk ? JCS_CMYK : JCS_RGB;
    jpeg_start_decompress(ci);
    int w = (int)ci->output_width, h = (int)ci->output_height, nc = ci->output_components;
    if ((cmyk && nc != 4) || (!cmyk && nc != 3)) {
        snprintf(r->err.msg, sizeof r->err.msg, "unsupported JPEG colour layout (%d components)", nc);
        longjmp(r->err.jb, 1);
    }
    if (zl_image_alloc(r->img, w, h) || !(r->row = malloc((size_t)w * nc))) {
        snprintf(r->err.msg, sizeof r->err.msg, "out of memory for a %dx%d JPEG", w, h);
        longjmp(r->err.jb, 1);
    }
    int inverted = ci->saw_Adobe_marker; /* Adobe writes CMYK inverted */
    while (ci->output_scanline < ci->output_height) {
        int y = (int)ci->output_scanline;
        JSAMPROW rp = r->row;
        if (jpeg_read_scanlines(ci, &rp, 1) != 1) break;
        float *d = r->img->px + (size_t)y * w * 3;
        if (!cmyk) {
            for (int i = 0; i < 3 * w; i++) d[i] = (float)r->row[i] / 255.0f;
        } else {
            for (int x = 0; x < w; x++) {
                const uint8_t *s = r->row + 4 * x;
                float k = (float)s[3] / 255.0f;
                for (int c = 0; c < 3; c++) {
                    float v = (float)s[c] / 255.0f;
                    d[3 * x + c] = inverted ? v * k : (1.0f - v) * (1.0f - k);
                }
            }
        }
        if (r->err.truncated) break;
    }
    if (r->err.truncated || ci->output_scanline < ci->output_height) {
        snprintf(r->err.msg, sizeof r->err.msg, "truncated JPEG (the data ends at row %u of %u)", ci->output_scanline, ci->output_height);
        return -1;
    }
    jpeg_finish_decompress(ci);
    if (r->err.truncated) {
        snprintf(r->err.msg, sizeof r->err.msg, "truncated JPEG (premature end of data)");
        return -1;
    }
    r->img->format = "JPEG";
    if (!r->o->keep_orientation && orient != 1 && zl_image_orient(r->img, orient)) {
        snprintf(r->err.msg, sizeof r->err.msg, "out of memory rotating the image");
        return -1;
    }
    r->img->orientation = r->o->keep_orientation ? 1 : orient;
    return 0;
}

static int read_jpeg(const uint8_t *buf, size_t n, const char *label, const zl_image_opts *o, zl_image *img) {
    jpeg_rd *r = zl_xcalloc(1, sizeof *r);
    r->o = o;
    r->img = img;
    int rc = jpeg_decode(r, buf, n);
    if (r->created) jpeg_destroy_decompress(&r->ci);
    free(r->row);
    if (rc) {
        zl_image_free(img);
        const char *m = r->err.msg[0] ? r->err.msg : "unknown error";
        rc = zl_err("%s: %s%s", label, strstr(m, "JPEG") || strstr(m, "limit") || strstr(m, "memory") ? "" : "corrupt JPEG: ", m);
    }
    free(r);
    return rc;
}

/* ------------------------------------------------------------------ WebP */

static int read_webp(const uint8_t *buf, size_t n, const char *label, const zl_image_opts *o, zl_image *img) {
    WebPBitstreamFeatures f;
    VP8StatusCode st = WebPGetFeatures(buf, n, &f);
    if (st == VP8_STATUS_NOT_ENOUGH_DATA) return zl_err("%s: truncated WebP", label);
    if (st != VP8_STATUS_OK) return zl_err("%s: corrupt WebP (header status %d)", label, (int)st);
    if (f.has_animation) return zl_err("%s: animated WebP is not supported", label);
    char msg[160];
    if (!size_ok((uint64_t)(f.width > 0 ? f.width : 0), (uint64_t)(f.height > 0 ? f.height : 0), o, msg, sizeof msg))
        return zl_err("%s: %s", label, msg);
    int w = 0, h = 0;
    uint8_t *rgba = WebPDecodeRGBA(buf, n, &w, &h);
    if (!rgba) return zl_err("%s: corrupt or truncated WebP (the image data does not decode)", label);
    if (w != f.width || h != f.height || zl_image_alloc(img, w, h)) {
        WebPFree(rgba);
        return zl_err("%s: cannot decode the WebP (%dx%d)", label, w, h);
    }
    for (size_t i = 0; i < (size_t)w * h; i++) {
        const uint8_t *s = rgba + 4 * i;
        float a = (float)s[3] / 255.0f;
        for (int c = 0; c < 3; c++) img->px[3 * i + c] = (float)s[c] / 255.0f * a + o->bg[c] * (1.0f - a);
    }
    WebPFree(rgba);
    img->had_alpha = f.has_alpha;
    img->format = "WebP";
    return 0;
}

/* ------------------------------------------------------------------ entry points */

int zl_image_read_mem(const void *data, size_t n, const char *label, const zl_image_opts *o, zl_image *img) {
    zl_image_opts def;
    if (!o) { zl_image_default_opts(&def); o = &def; }
    memset(img, 0, sizeof *img);
    const uint8_t *b = data;
    if (n >= 8 && !memcmp(b, "\x89PNG\r\n\x1a\n", 8)) return read_png(b, n, label, o, img);
    if (n >= 3 && b[0] == 0xFF && b[1] == 0xD8 && b[2] == 0xFF) return read_jpeg(b, n, label, o, img);
    if (n >= 12 && !memcmp(b, "RIFF", 4) && !memcmp(b + 8, "WEBP", 4)) return read_webp(b, n, label, o, img);
    if (n == 0) return zl_err("%s: empty file", label);
    return zl_err("%s: not a PNG, JPEG or WebP image", label);
}

int zl_image_read(const char *path, const zl_image_opts *o, zl_image *img) {
    memset(img, 0, sizeof *img);
    FILE *f = fopen(path, "rb");
    if (!f) return zl_err("%s: cannot open: %s", path, strerror(errno));
    uint8_t *buf = NULL;
    size_t n = 0, cap = 0;
    for (;;) {
        if (n == cap) {
            if (cap >= MAX_FILE_BYTES) { fclose(f); free(buf); return zl_err("%s: file larger than 2 GiB", path); }
            cap = cap ? 2 * cap : 1 << 16;
            uint8_t *q = realloc(buf, cap);
            if (!q) { fclose(f); free(buf); return zl_err("%s: out of memory reading the file", path); }
            buf = q;
        }
        size_t r = fread(buf + n, 1, cap - n, f);
        n += r;
        if (r == 0) break;
    }
    int bad = ferror(f);
    fclose(f);
    if (bad) { free(buf); return zl_err("%s: read error", path); }
    int rc = zl_image_read_mem(buf, n, path, o, img);
    free(buf);
    return rc;
}

/* ------------------------------------------------------------------ orientation */

int zl_image_orient(zl_image *img, int o) {
    if (o < 1 || o > 8) return zl_err("EXIF orientation %d is not 1-8", o);
    if (o == 1) return 0;
    int W = img->w, H = img->h, swap = o >= 5;
    int ow = swap ? H : W, oh = swap ? W : H;
    float *d = zl_try_malloc(sizeof(float) * 3 * (size_t)W * H);
    if (!d) return -1;
    for (int y = 0; y < oh; y++)
        for (int x = 0; x < ow; x++) {
            int sx, sy;
            switch (o) {
            case 2: sx = W - 1 - x; sy = y; break;              /* mirror horizontally */
            case 3: sx = W - 1 - x; sy = H - 1 - y; break;      /* rotate 180 */
            case 4: sx = x; sy = H - 1 - y; break;              /* mirror vertically */
            case 5: sx = y; sy = x; break;                      /* transpose */
            case 6: sx = y; sy = H - 1 - x; break;              /* rotate 90 clockwise */
            case 7: sx = W - 1 - y; sy = H - 1 - x; break;      /* transverse */
            default: sx = W - 1 - y; sy = x; break;             /* 8: rotate 90 counter-clockwise */
            }
            memcpy(d + ((size_t)y * ow + x) * 3, img->px + ((size_t)sy * W + sx) * 3, sizeof(float) * 3);
        }
    free(img->px);
    img->px = d;
    img->w = ow;
    img->h = oh;
    return 0;
}

/* ------------------------------------------------------------------ 8-bit and tensors */

static float clamp01(float v) { return v > 0.0f ? (v < 1.0f ? v : 1.0f) : 0.0f; } /* NaN -> 0 */

uint8_t *zl_image_to_rgb8(const zl_image *img) {
    size_t n = (size_t)img->w * img->h * 3;
    uint8_t *o = zl_try_malloc(n ? n : 1);
    if (!o) return NULL;
    for (size_t i = 0; i < n; i++) o[i] = (uint8_t)(clamp01(img->px[i]) * 255.0f + 0.5f);
    return o;
}

int zl_image_from_rgb8(zl_image *img, const uint8_t *rgb, int w, int h) {
    if (zl_image_alloc(img, w, h)) return -1;
    for (size_t i = 0; i < (size_t)w * h * 3; i++) img->px[i] = (float)rgb[i] / 255.0f;
    return 0;
}

void zl_image_to_tensor(const zl_image *img, float *t) {
    size_t hw = (size_t)img->w * img->h;
    for (size_t i = 0; i < hw; i++)
        for (int c = 0; c < 3; c++) t[(size_t)c * hw + i] = clamp01(img->px[3 * i + c]) * 2.0f - 1.0f;
}

int zl_image_from_tensor(zl_image *img, const float *t, int w, int h) {
    if (zl_image_alloc(img, w, h)) return -1;
    size_t hw = (size_t)w * h;
    for (size_t i = 0; i < hw; i++)
        for (int c = 0; c < 3; c++) img->px[3 * i + c] = clamp01(t[(size_t)c * hw + i] * 0.5f + 0.5f);
    return 0;
}

/* ------------------------------------------------------------------ resizing */

static double sinc(double x) {
    if (x == 0.0) return 1.0;
    x *= M_PI;
    return sin(x) / x;
}
static double f_lanczos(double x) { return x > -3.0 && x < 3.0 ? sinc(x) * sinc(x / 3.0) : 0.0; }
static double f_box(double x) { return x > -0.5 && x <= 0.5 ? 1.0 : 0.0; }
static double f_tri(double x) { x = fabs(x); return x < 1.0 ? 1.0 - x : 0.0; }

typedef struct {
    int *lo, *cnt, ksize;
    double *k;
} coeffs;

/* Pillow's precompute_coeffs: out_n output samples from the source range [in0, in1) of an axis of in_n. */
static int make_coeffs(int in_n, double in0, double in1, int out_n, int filter, coeffs *c) {
    double (*fn)(double) = filter == ZL_RESIZE_AREA ? f_box : filter == ZL_RESIZE_BILINEAR ? f_tri : f_lanczos;
    double support = filter == ZL_RESIZE_AREA ? 0.5 : filter == ZL_RESIZE_BILINEAR ? 1.0 : 3.0;
    double scale = (in1 - in0) / out_n, fs = scale < 1.0 ? 1.0 : scale;
    support *= fs;
    c->ksize = (int)ceil(support) * 2 + 1;
    c->lo = malloc(sizeof(int) * (size_t)out_n);
    c->cnt = malloc(sizeof(int) * (size_t)out_n);
    c->k = malloc(sizeof(double) * (size_t)out_n * (size_t)c->ksize);
    if (!c->lo || !c->cnt || !c->k) return zl_err("out of memory for resampling coefficients");
    for (int o = 0; o < out_n; o++) {
        double center = in0 + (o + 0.5) * scale, ww = 0.0, ss = 1.0 / fs;
        int xmin = (int)floor(center - support + 0.5), xmax = (int)floor(center + support + 0.5);
        if (xmin < 0) xmin = 0;
        if (xmax > in_n) xmax = in_n;
        if (xmax - xmin > c->ksize) xmax = xmin + c->ksize;
        if (xmax < xmin) xmax = xmin;
        double *k = c->k + (size_t)o * c->ksize;
        for (int x = 0; x < xmax - xmin; x++) {
            double wv = fn((x + xmin - center + 0.5) * ss);
            k[x] = wv;
            ww += wv;
        }
        for (int x = 0; x < xmax - xmin; x++) k[x] = ww != 0.0 ? k[x] / ww : 0.0;
        c->lo[o] = xmin;
        c->cnt[o] = xmax - xmin;
    }
    return 0;
}

static void free_coeffs(coeffs *c) { free(c->lo); free(c->cnt); free(c->k); }

int zl_image_resize_box(const zl_image *src, double x0, double y0, double bw, double bh, int w, int h, int filter, zl_image *dst) {
    memset(dst, 0, sizeof *dst);
    if (!src->px || src->w <= 0 || src->h <= 0) return zl_err("resize: empty source image");
    if (filter < 0 || filter > 2) return zl_err("resize: unknown filter %d", filter);
    if (w <= 0 || h <= 0 || w > MAX_SIDE || h > MAX_SIDE) return zl_err("resize: bad target size %dx%d", w, h);
    if (!(bw > 0) || !(bh > 0) || !(x0 >= 0) || !(y0 >= 0) || x0 + bw > src->w + 1e-9 || y0 + bh > src->h + 1e-9)
        return zl_err("resize: box %gx%g at (%g,%g) is not inside the %dx%d image", bw, bh, x0, y0, src->w, src->h);
    coeffs cx = {0}, cy = {0};
    zl_image tmp = {0};
    int rc = make_coeffs(src->w, x0, x0 + bw, w, filter, &cx);
    if (rc == 0) rc = make_coeffs(src->h, y0, y0 + bh, h, filter, &cy);
    /* only the source rows the vertical pass reads go through the horizontal pass */
    int r0 = cy.lo ? cy.lo[0] : 0, r1 = r0;
    for (int o = 0; rc == 0 && o < h; o++) {
        if (cy.lo[o] < r0) r0 = cy.lo[o];
        if (cy.lo[o] + cy.cnt[o] > r1) r1 = cy.lo[o] + cy.cnt[o];
    }
    if (rc == 0 && r1 <= r0) r1 = r0 + 1;
    if (rc == 0) rc = zl_image_alloc(&tmp, w, r1 - r0);
    if (rc == 0) rc = zl_image_alloc(dst, w, h);
    if (rc) { free_coeffs(&cx); free_coeffs(&cy); zl_image_free(&tmp); zl_image_free(dst); return -1; }
#pragma omp parallel for schedule(static) if ((size_t)w * (r1 - r0) > 65536)
    for (int y = r0; y < r1; y++) {
        const float *s = src->px + (size_t)y * src->w * 3;
        float *d = tmp.px + (size_t)(y - r0) * w * 3;
        for (int x = 0; x < w; x++) {
            const double *k = cx.k + (size_t)x * cx.ksize;
            double a0 = 0, a1 = 0, a2 = 0;
            for (int i = 0; i < cx.cnt[x]; i++) {
                const float *p = s + (size_t)(cx.lo[x] + i) * 3;
                a0 += p[0] * k[i];
                a1 += p[1] * k[i];
                a2 += p[2] * k[i];
            }
            d[3 * x] = (float)a0;
            d[3 * x + 1] = (float)a1;
            d[3 * x + 2] = (float)a2;
        }
    }
#pragma omp parallel for schedule(static) if ((size_t)w * h > 65536)
    for (int y = 0; y < h; y++) {
        const double *k = cy.k + (size_t)y * cy.ksize;
        float *d = dst->px + (size_t)y * w * 3;
        for (int i = 0; i < 3 * w; i++) {
            double a = 0;
            for (int j = 0; j < cy.cnt[y]; j++) a += tmp.px[(size_t)(cy.lo[y] - r0 + j) * w * 3 + i] * k[j];
            d[i] = (float)a;
        }
    }
    free_coeffs(&cx);
    free_coeffs(&cy);
    zl_image_free(&tmp);
    return 0;
}

int zl_image_resize(const zl_image *src, int w, int h, int filter, zl_image *dst) {
    return zl_image_resize_box(src, 0, 0, src->w, src->h, w, h, filter, dst);
}

int zl_image_crop(const zl_image *src, int x, int y, int w, int h, zl_image *dst) {
    memset(dst, 0, sizeof *dst);
    if (x < 0 || y < 0 || w <= 0 || h <= 0 || x > src->w - w || y > src->h - h)
        return zl_err("crop %dx%d at (%d,%d) is not inside the %dx%d image", w, h, x, y, src->w, src->h);
    if (zl_image_alloc(dst, w, h)) return -1;
    for (int r = 0; r < h; r++) memcpy(dst->px + (size_t)r * w * 3, src->px + ((size_t)(y + r) * src->w + x) * 3, sizeof(float) * 3 * (size_t)w);
    return 0;
}

int zl_image_fit(const zl_image *src, int w, int h, int filter, zl_image *dst) {
    memset(dst, 0, sizeof *dst);
    if (w <= 0 || h <= 0 || src->w <= 0 || src->h <= 0) return zl_err("fit: bad size %dx%d", w, h);
    double sx = (double)w / src->w, sy = (double)h / src->h, s = sx > sy ? sx : sy;
    double bw = w / s, bh = h / s;
    if (bw > src->w) bw = src->w;
    if (bh > src->h) bh = src->h;
    return zl_image_resize_box(src, (src->w - bw) / 2.0, (src->h - bh) / 2.0, bw, bh, w, h, filter, dst);
}
