/* grid.c — see grid.h. */
#include "eval/grid.h"
#include <cairo.h>
#include <fontconfig/fontconfig.h>
#include <pango/pangocairo.h>
#include <stdlib.h>
#include <string.h>
#include "base/base.h"

#define MARGIN 8
#define GAP 4
#define LABEL_W 240
#define MIN_W 480
#define FONT "Sans 10"
#define TITLE_FONT "Sans 11"

/* A layout of text in font, wrapped at width px (0: no wrapping), cut after max_lines (0: no limit);
 * bold_first: the first line in bold. */
static PangoLayout *layout(cairo_t *cr, const char *text, const char *font, int width, int max_lines, int bold_first) {
    PangoLayout *l = pango_cairo_create_layout(cr);
    PangoFontDescription *fd = pango_font_description_from_string(font);
    pango_layout_set_font_description(l, fd);
    pango_font_description_free(fd);
    if (width > 0) {
        pango_layout_set_width(l, width * PANGO_SCALE);
        pango_layout_set_wrap(l, PANGO_WRAP_WORD_CHAR);
    }
    if (max_lines > 0) {
        pango_layout_set_height(l, -max_lines);
        pango_layout_set_ellipsize(l, PANGO_ELLIPSIZE_END);
    }
    pango_layout_set_text(l, text, -1);
    if (bold_first) {
        const char *nl = strchr(text, '\n');
        PangoAttrList *al = pango_attr_list_new();
        PangoAttribute *a = pango_attr_weight_new(PANGO_WEIGHT_BOLD);
        a->start_index = 0;
        a->end_index = nl ? (guint)(nl - text) : (guint)strlen(text);
        pango_attr_list_insert(al, a);
        pango_layout_set_attributes(l, al);
        pango_attr_list_unref(al);
    }
    return l;
}

static void size_of(PangoLayout *l, int *w, int *h) { pango_layout_get_pixel_size(l, w, h); }

static void draw(cairo_t *cr, PangoLayout *l, int x, int y) {
    cairo_set_source_rgb(cr, 0.13, 0.13, 0.13);
    cairo_move_to(cr, x, y);
    pango_cairo_show_layout(cr, l);
}

int zl_grid_render(const zl_grid *g, uint8_t **rgb, int *w_out, int *h_out) {
    *rgb = NULL;
    if (g->rows < 1 || g->cols < 1 || g->cell_w < 1 || g->cell_h < 1 || g->rows > 4096 || g->cols > 4096 ||
        g->cell_w > 16384 || g->cell_h > 16384)
        return zl_err("grid: %d x %d cells of %dx%d is not a grid that can be drawn", g->rows, g->cols, g->cell_w, g->cell_h);
    for (int i = 0; i < g->rows + g->cols + 1; i++) {
        const char *t = i == 0 ? g->title : i <= g->rows ? g->row_labels[i - 1] : g->col_labels[i - 1 - g->rows];
        if (t && !zl_utf8_valid(t, strlen(t))) return zl_err("grid: a label is not valid UTF-8");
    }
    /* measure on a scratch surface */
    cairo_surface_t *ms = cairo_image_surface_create(CAIRO_FORMAT_RGB24, 1, 1);
    cairo_t *mc = cairo_create(ms);
    int label_w = 0, head_h = 0;
    int *row_h = zl_xcalloc((size_t)g->rows, sizeof(int));
    for (int r = 0; r < g->rows; r++) {
        PangoLayout *l = layout(mc, g->row_labels[r], FONT, LABEL_W, 0, 1);
        int lw, lh;
        size_of(l, &lw, &lh);
        g_object_unref(l);
        if (lw > label_w) label_w = lw;
        row_h[r] = lh > g->cell_h ? lh : g->cell_h;
    }
    for (int c = 0; c < g->cols; c++) {
        PangoLayout *l = layout(mc, g->col_labels[c], FONT, g->cell_w > 40 ? g->cell_w : 0, 2, 0);
        int lw, lh;
        size_of(l, &lw, &lh);
        g_object_unref(l);
        if (lh > head_h) head_h = lh;
    }
    /* columns as wide as their cells or their labels */
    int col_w = g->cell_w;
    for (int c = 0; c < g->cols; c++) {
        PangoLayout *l = layout(mc, g->col_labels[c], FONT, g->cell_w > 40 ? g->cell_w : 0, 2, 0);
        int lw, lh;
        size_of(l, &lw, &lh);
        g_object_unref(l);
        if (lw > col_w) col_w = lw;
    }
    int content_w = label_w + GAP + g->cols * col_w + (g->cols - 1) * GAP;
    int inner_w = content_w > MIN_W ? content_w : MIN_W;
    int title_h = 0;
    if (g->title) {
        PangoLayout *l = layout(mc, g->title, TITLE_FONT, inner_w, 3, 0);
        int lw;
        size_of(l, &lw, &title_h);
        g_object_unref(l);
        title_h += GAP * 2;
    }
    cairo_destroy(mc);
    cairo_surface_destroy(ms);
    long long total_h = 2LL * MARGIN + title_h + head_h + GAP;
    for (int r = 0; r < g->rows; r++) total_h += row_h[r] + (r ? GAP : 0);
    long long W = inner_w + 2LL * MARGIN;
    if (W > 32767 || total_h > 32767) { free(row_h); return zl_err("grid: %lldx%lld pixels is too large to draw", W, total_h); }
    cairo_surface_t *s = cairo_image_surface_create(CAIRO_FORMAT_RGB24, (int)W, (int)total_h);
    if (cairo_surface_status(s) != CAIRO_STATUS_SUCCESS) {
        cairo_surface_destroy(s);
        free(row_h);
        return zl_err("grid: cairo could not make a %lldx%lld surface", W, total_h);
    }
    cairo_t *cr = cairo_create(s);
    cairo_set_source_rgb(cr, 1, 1, 1);
    cairo_paint(cr);
    int y = MARGIN;
    if (g->title) {
        PangoLayout *l = layout(cr, g->title, TITLE_FONT, inner_w, 3, 0);
        draw(cr, l, MARGIN, y);
        g_object_unref(l);
        y += title_h;
    }
    int x0 = MARGIN + label_w + GAP;
    for (int c = 0; c < g->cols; c++) {
        PangoLayout *l = layout(cr, g->col_labels[c], FONT, g->cell_w > 40 ? g->cell_w : 0, 2, 0);
        draw(cr, l, x0 + c * (col_w + GAP), y);
        g_object_unref(l);
    }
    y += head_h + GAP;
    int *row_y = zl_xmalloc(sizeof(int) * (size_t)g->rows);
    for (int r = 0; r < g->rows; r++) {
        row_y[r] = y;
        PangoLayout *l = layout(cr, g->row_labels[r], FONT, LABEL_W, 0, 1);
        draw(cr, l, MARGIN, y);
        g_object_unref(l);
        /* an empty cell is a light grey box */
        for (int c = 0; c < g->cols; c++)
            if (!g->cells[(size_t)r * g->cols + c]) {
                cairo_set_source_rgb(cr, 0.9, 0.9, 0.9);
                cairo_rectangle(cr, x0 + c * (col_w + GAP), y, g->cell_w, g->cell_h);
                cairo_fill(cr);
            }
        y += row_h[r] + GAP;
    }
    cairo_destroy(cr);
    cairo_surface_flush(s);
    uint8_t *data = cairo_image_surface_get_data(s);
    int stride = cairo_image_surface_get_stride(s);
    for (int r = 0; r < g->rows; r++)
        for (int c = 0; c < g->cols; c++) {
            const uint8_t *cell = g->cells[(size_t)r * g->cols + c];
            if (!cell) continue;
            int cx = x0 + c * (col_w + GAP);
            for (int yy = 0; yy < g->cell_h; yy++) {
                uint32_t *row = (uint32_t *)(data + (size_t)(row_y[r] + yy) * stride) + cx;
                const uint8_t *p = cell + (size_t)yy * g->cell_w * 3;
                for (int xx = 0; xx < g->cell_w; xx++)
                    row[xx] = (uint32_t)p[3 * xx] << 16 | (uint32_t)p[3 * xx + 1] << 8 | p[3 * xx + 2];
            }
        }
    cairo_surface_mark_dirty(s);
    size_t npix = (size_t)W * (size_t)total_h;
    uint8_t *out = zl_try_malloc(npix * 3);
    int rc = out ? 0 : -1;
    for (long long yy = 0; out && yy < total_h; yy++) {
        const uint32_t *row = (const uint32_t *)(data + (size_t)yy * stride);
        uint8_t *o = out + (size_t)yy * (size_t)W * 3;
        for (long long xx = 0; xx < W; xx++) {
            o[3 * xx] = (uint8_t)(row[xx] >> 16);
            o[3 * xx + 1] = (uint8_t)(row[xx] >> 8);
            o[3 * xx + 2] = (uint8_t)row[xx];
        }
    }
    cairo_surface_destroy(s);
    free(row_h);
    free(row_y);
    if (rc) return -1;
    *rgb = out;
    *w_out = (int)W;
    *h_out = (int)total_h;
    return 0;
}

void zl_grid_cleanup(void) {
    /* Only the font map: cairo_debug_reset_static_data() and FcFini() abort when a cache entry is still
     * alive (seen intermittently in tests); the libraries' static caches are suppressed for LeakSanitizer
     * instead (tests/lsan.supp). */
    pango_cairo_font_map_set_default(NULL);
}
