/* grid.h — labelled image grids: cells in rows and columns, a label for each row (left) and column
 * (top) and a title above, drawn with Pango on a cairo image surface (real text layout: UTF-8, font
 * fallback through fontconfig, word wrapping, ellipsis), returned as 8-bit RGB for zlora's PNG writer.
 *
 * Layout (pixels): an 8 px margin; the title wraps to the grid's width (at least 480 px) and is cut after
 * 3 lines with "…"; row labels wrap at 240 px (their first line bold, the rest regular); each row is as
 * tall as its cells or its label, whichever is taller; 4 px between cells; white background, dark text.
 * Fonts: "Sans" as fontconfig resolves it (DejaVu Sans on Debian), 10 pt at 96 dpi, title 11 pt.
 */
#ifndef ZL_GRID_H
#define ZL_GRID_H
#include <stdint.h>

typedef struct {
    const char *title;               /* NULL: none */
    int rows, cols;
    const char *const *row_labels;   /* [rows]; '\n' separates lines, the first is bold */
    const char *const *col_labels;   /* [cols] */
    const uint8_t *const *cells;     /* [rows·cols] row-major, each RGB8 [cell_h][cell_w][3]; NULL: an empty grey cell */
    int cell_w, cell_h;
} zl_grid;

/* Renders g into *rgb (malloc'd, [*h][*w][3]). Labels must be valid UTF-8. */
int zl_grid_render(const zl_grid *g, uint8_t **rgb, int *w, int *h);

/* Releases the text library's font caches (fontconfig, Pango's font map, cairo's static data), so leak
 * checkers see a clean exit; call once, when no more grids will be drawn in this process. */
void zl_grid_cleanup(void);

#endif
