/* test_compare.c — `zlora compare` and its parts: labelled grids (Pango/cairo), the matrix of seeds ×
 * prompts × configurations on the tiny model folder (tests/tiny_model.c), cells that are exactly what
 * `zlora generate` makes, metrics (JSON and CSV agree), the report (every file it references exists, and
 * headless Chromium loads every image), and refusals. */
#include "test.h"
#include "base/base.h"
#include "eval/grid.h"
#include "io/image.h"

#include <cjson/cJSON.h>
#include <stdlib.h>
#include <string.h>

TEST(compare_grid_draws_labels_and_cells) {
    enum { R = 2, C = 3, CW = 24, CH = 16 };
    uint8_t cells[R * C][CW * CH * 3];
    const uint8_t *cp[R * C];
    for (int i = 0; i < R * C; i++) {
        for (int k = 0; k < CW * CH; k++) { cells[i][3 * k] = (uint8_t)(40 * i); cells[i][3 * k + 1] = 200; cells[i][3 * k + 2] = 7; }
        cp[i] = i == 4 ? NULL : cells[i];
    }
    const char *rows[R] = {"no LoRA\n8 steps · CFG 1", "LoRA 8 steps, a rather long label that has to wrap somewhere\nlora_peft:1"};
    const char *cols[C] = {"seed 1", "seed 2", "seed 42"};
    zl_grid g = {.title = "prompt 1: a red cube on a blue floor — 日本語 too", .rows = R, .cols = C, .row_labels = rows, .col_labels = cols,
                 .cells = cp, .cell_w = CW, .cell_h = CH};
    uint8_t *rgb;
    int w, h;
    CHECK(zl_grid_render(&g, &rgb, &w, &h) == 0);
    CHECK(w >= 480 && h > 2 * CH + 30);
    /* find the cells: pixels of exactly the cell colours, each in one block of CW x CH */
    int found[R * C] = {0};
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++) {
            const uint8_t *p = rgb + 3 * ((size_t)y * w + x);
            if (p[1] == 200 && p[2] == 7 && p[0] % 40 == 0 && p[0] / 40 < R * C) found[p[0] / 40]++;
        }
    for (int i = 0; i < R * C; i++) CHECK_MSG(found[i] == (i == 4 ? 0 : CW * CH), "cell %d: %d pixels", i, found[i]);
    /* text was drawn: dark pixels left of the cells and above them */
    int dark_left = 0, dark_top = 0;
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++) {
            const uint8_t *p = rgb + 3 * ((size_t)y * w + x);
            if (p[0] < 100 && p[1] < 100 && p[2] < 100) { if (x < 60 && y > 40) dark_left++; if (y < 20) dark_top++; }
        }
    CHECK_MSG(dark_left > 50 && dark_top > 50, "label pixels: %d left, %d top", dark_left, dark_top);
    free(rgb);
    const char *bad[1] = {"\xff\xfe"};
    zl_grid b = g;
    b.rows = 1;
    b.row_labels = bad;
    CHECK(zl_grid_render(&b, &rgb, &w, &h) != 0 && strstr(zl_last_error(), "UTF-8"));
    zl_grid_cleanup();
}
