/* test_nano_data.c — the procedural data of the nano models (train/nano_data.h): the same seed gives the
 * same bytes, scene i does not depend on the count, and each caption says what the pixels show (colour
 * names against the drawn colours, places against the object centres, backgrounds against far pixels);
 * the character set; the CLI. */
#include "test.h"
#include "base/base.h"
#include "io/image.h"
#include "train/dataset.h"
#include "train/nano_data.h"

#include <stdlib.h>
#include <string.h>

static char *slurp(const char *path, size_t *n) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long len = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *b = malloc((size_t)len + 1);
    *n = fread(b, 1, (size_t)len, f);
    b[*n] = 0;
    fclose(f);
    return b;
}

static int same_file(const char *a, const char *b) {
    size_t na, nb;
    char *x = slurp(a, &na), *y = slurp(b, &nb);
    int same = x && y && na == nb && memcmp(x, y, na) == 0;
    free(x);
    free(y);
    return same;
}

TEST(nano_data_deterministic) {
    char d1[600], d2[600], d3[600], d4[600], a[700], b[700];
    snprintf(d1, sizeof d1, "%s/nano1", zl_test_dir());
    snprintf(d2, sizeof d2, "%s/nano2", zl_test_dir());
    snprintf(d3, sizeof d3, "%s/nano3", zl_test_dir());
    snprintf(d4, sizeof d4, "%s/nano4/deeper", zl_test_dir());
    zl_nano_data_opts o;
    zl_nano_data_default_opts(&o);
    CHECK(o.count == 1000 && o.size == 64 && o.ss == 4 && o.seed == 0 && !o.character);
    o.count = 12;
    o.seed = 7;
    o.out = d1;
    int level = zl_log_level;
    zl_log_level = 0; /* no progress lines */
    CHECK(zl_nano_data_write(&o) == 0);
    o.out = d2;
    CHECK(zl_nano_data_write(&o) == 0);
    o.out = d4; /* a prefix of the same set, in a folder made with its parents */
    o.count = 5;
    CHECK(zl_nano_data_write(&o) == 0);
    o.out = d3;
    o.count = 12;
    o.seed = 8;
    CHECK(zl_nano_data_write(&o) == 0);
    int differ = 0;
    for (int i = 0; i < 12; i++)
        for (int t = 0; t < 2; t++) {
            const char *ext = t ? "txt" : "png";
            snprintf(a, sizeof a, "%s/%05d.%s", d1, i, ext);
            snprintf(b, sizeof b, "%s/%05d.%s", d2, i, ext);
            CHECK_MSG(same_file(a, b), "%s differs between two runs with the same seed", a);
            if (i < 5) {
                snprintf(b, sizeof b, "%s/%05d.%s", d4, i, ext);
                CHECK_MSG(same_file(a, b), "%s depends on the count", a);
            }
            snprintf(b, sizeof b, "%s/%05d.%s", d3, i, ext);
            differ += !same_file(a, b);
        }
    zl_log_level = level;
    CHECK(differ >= 20); /* another seed, other scenes */
    /* the files read back as a training set, sized as asked */
    zl_dataset_opts dopt;
    zl_dataset_default_opts(&dopt);
    dopt.resolution = 64;
    zl_dataset ds;
    CHECK(zl_dataset_scan(d1, &dopt, &ds) == 0);
    CHECK(ds.n == 12 && ds.nskipped == 0);
    CHECK(ds.items[0].w == 64 && ds.items[0].h == 64 && ds.items[0].bw == 64 && ds.items[0].bh == 64);
    zl_nano_scene s;
    zl_nano_scene_make(7, 3, 0, &s);
    char *cap = zl_nano_caption(&s);
    CHECK(strcmp(ds.items[3].caption, cap) == 0);
    free(cap);
    zl_dataset_free(&ds);
    /* bad options */
    o.size = 4;
    CHECK(zl_nano_data_write(&o) < 0);
    o.size = 64;
    o.character = "abc";
    CHECK(zl_nano_data_write(&o) < 0 && strstr(zl_last_error(), "zxq"));
}

/* the place words for a centre, from the thirds of the image (independent of the generator's grid) */
static const char *place_of(float cx, float cy) {
    static const char *names[9] = {"at the top left",    "at the top",    "at the top right",
                                   "at the left",        "in the centre", "at the right",
                                   "at the bottom left", "at the bottom", "at the bottom right"};
    int col = cx < 1.0f / 3 ? 0 : cx < 2.0f / 3 ? 1 : 2, row = cy < 1.0f / 3 ? 0 : cy < 2.0f / 3 ? 1 : 2;
    return names[row * 3 + col];
}

static const uint8_t *px_at(const uint8_t *rgb, int size, float u, float v) {
    int x = (int)(u * size), y = (int)(v * size);
    return rgb + ((size_t)y * size + x) * 3;
}

static int near_rgb(const uint8_t *a, const uint8_t *b, int tol) {
    for (int k = 0; k < 3; k++) if (abs((int)a[k] - (int)b[k]) > tol) return 0;
    return 1;
}

/* A point well inside the drawn part of an object (the centre, or inside the ring's band). */
static void solid_point(const zl_nano_object *o, float *u, float *v) {
    *u = o->cx + (o->shape == ZL_NANO_RING ? 0.775f * o->r : 0.0f);
    *v = o->cy;
}

TEST(nano_data_captions_match_pixels) {
    const int size = 256; /* fine enough that a small object's middle is a few uniform pixels */
    uint8_t *rgb = malloc((size_t)size * size * 3);
    int seen_shape[ZL_NANO_NSHAPES] = {0}, seen_kind[3] = {0}, seen_two = 0, seen_photo = 0, seen_size[3] = {0};
    for (int i = 0; i < 150; i++) {
        zl_nano_scene s;
        zl_nano_scene_make(11, i, 0, &s);
        zl_nano_render(&s, size, 2, rgb);
        char *cap = zl_nano_caption(&s);
        CHECK_MSG(s.nobj >= 1 && s.nobj <= 2, "scene %d: %d objects", i, s.nobj);
        seen_kind[s.bg_kind]++;
        seen_two += s.nobj == 2;
        seen_photo += s.photo;
        CHECK(!!s.photo == !strncmp(cap, "a photo of ", 11));
        const char *rest = cap;
        for (int k = 0; k < s.nobj; k++) {
            const zl_nano_object *o = &s.obj[k];
            seen_shape[o->shape]++;
            seen_size[o->size]++;
            /* "[a|an] [small|large] COLOUR SHAPE PLACE", in order */
            char want[200];
            const char *sz = zl_nano_size_word(o->size), *col = zl_nano_color_name(o->color);
            snprintf(want, sizeof want, "%s%s%s %s %s", sz, *sz ? " " : "", col, zl_nano_shape_name(o->shape), place_of(o->cx, o->cy));
            const char *at = strstr(rest, want);
            CHECK_MSG(at, "scene %d: caption \"%s\" lacks \"%s\"", i, cap, want);
            CHECK(at - rest >= 2 && (!strncmp(at - 2, "a ", 2) || !strncmp(at - 3, "an ", 3)));
            CHECK_MSG((at[-2] == 'n') == (strchr("aeiou", want[0]) != NULL), "scene %d: article in \"%s\"", i, cap);
            rest = at + strlen(want);
            /* the colour named is the colour drawn, and the object lies inside the image */
            uint8_t pal[3];
            zl_nano_color_rgb(o->color, pal);
            CHECK(near_rgb(o->rgb, pal, 12));
            float u, v;
            solid_point(o, &u, &v);
            CHECK_MSG(near_rgb(px_at(rgb, size, u, v), o->rgb, 1), "scene %d (%s): object %d not drawn where it is said", i, cap, k);
            CHECK(o->cx - o->r > 0 && o->cx + o->r < 1 && o->cy - o->r > 0 && o->cy + o->r < 1);
        }
        if (s.nobj == 2) {
            float dx = s.obj[0].cx - s.obj[1].cx, dy = s.obj[0].cy - s.obj[1].cy, m = s.obj[0].r + s.obj[1].r;
            CHECK_MSG(dx * dx + dy * dy > m * m, "scene %d: the objects touch", i);
            CHECK(strstr(cap, " and "));
        }
        /* the background: words and a pixel far from every object (the corners first) */
        const char *c0 = zl_nano_color_name(s.bg[0]), *c1 = zl_nano_color_name(s.bg[1]);
        char want[200];
        if (s.bg_kind == ZL_NANO_BG_PLAIN) snprintf(want, sizeof want, " %s background", c0);
        else if (s.bg_kind == ZL_NANO_BG_SPLIT) snprintf(want, sizeof want, " %s and %s background", c0, c1);
        else snprintf(want, sizeof want, " %s to %s gradient", c0, c1);
        size_t lc = strlen(cap), lw = strlen(want);
        CHECK_MSG(lc > lw && !strcmp(cap + lc - lw, want), "scene %d: \"%s\" should end with \"%s\"", i, cap, want);
        for (int k = 0; k < 2; k++) {
            uint8_t pal[3];
            zl_nano_color_rgb(s.bg[k], pal);
            CHECK(near_rgb(s.bg_rgb[k], pal, 12));
        }
        const float probes[8][2] = {{0.02f, 0.02f}, {0.98f, 0.02f}, {0.02f, 0.98f}, {0.98f, 0.98f},
                                    {0.02f, 0.5f},  {0.98f, 0.5f},  {0.5f, 0.02f},  {0.5f, 0.98f}};
        int checked = 0;
        for (int p = 0; p < 8; p++) {
            float u = probes[p][0], v = probes[p][1];
            int clear = 1;
            for (int k = 0; k < s.nobj; k++) {
                float dx = u - s.obj[k].cx, dy = v - s.obj[k].cy, m = s.obj[k].r + 0.02f;
                clear = clear && dx * dx + dy * dy > m * m;
            }
            if (!clear) continue;
            const uint8_t *got = px_at(rgb, size, u, v);
            uint8_t want_rgb[3];
            int tol = 0;
            if (s.bg_kind == ZL_NANO_BG_PLAIN) memcpy(want_rgb, s.bg_rgb[0], 3);
            else if (s.bg_kind == ZL_NANO_BG_SPLIT) memcpy(want_rgb, s.bg_rgb[u < 0.5f ? 0 : 1], 3);
            else {
                for (int c = 0; c < 3; c++) want_rgb[c] = (uint8_t)(s.bg_rgb[0][c] * (1 - v) + s.bg_rgb[1][c] * v + 0.5f);
                tol = 2;
            }
            CHECK_MSG(near_rgb(got, want_rgb, tol), "scene %d (%s): background pixel at %.2f,%.2f is %d,%d,%d", i, cap, u, v,
                      got[0], got[1], got[2]);
            checked++;
        }
        CHECK_MSG(checked > 0, "scene %d: no background pixel probed", i);
        free(cap);
    }
    free(rgb);
    /* the set is varied: every shape, size and background kind, pairs, "a photo of" */
    for (int k = 0; k < ZL_NANO_NSHAPES; k++) CHECK(seen_shape[k] > 5);
    for (int k = 0; k < 3; k++) CHECK(seen_kind[k] > 10 && seen_size[k] > 20);
    CHECK(seen_two > 20 && seen_photo > 10);
}

TEST(nano_data_character) {
    const int size = 128;
    uint8_t *rgb = malloc((size_t)size * size * 3);
    int pos_seen[9] = {0};
    const uint8_t magenta[3] = {225, 30, 150}, lime[3] = {160, 230, 40};
    for (int i = 0; i < 9; i++) {
        zl_nano_scene s;
        zl_nano_scene_make(0, i, 1, &s);
        char *cap = zl_nano_caption(&s);
        CHECK_MSG(!strncmp(cap, "a photo of [trigger] ", 21), "\"%s\"", cap);
        CHECK(s.obj[0].shape == ZL_NANO_ZXQ && strstr(cap, place_of(s.obj[0].cx, s.obj[0].cy)) == cap + 21);
        pos_seen[s.obj[0].pos]++;
        /* across the diamond's bands (along x = y): magenta, lime, magenta, nothing else */
        zl_nano_render(&s, size, 1, rgb);
        int a = 0, b = 0;
        for (int d = -4; d <= 4; d++) {
            const uint8_t *p = px_at(rgb, size, s.obj[0].cx + d * 0.1f * s.obj[0].r, s.obj[0].cy + d * 0.1f * s.obj[0].r);
            a += near_rgb(p, magenta, 0);
            b += near_rgb(p, lime, 0);
        }
        CHECK_MSG(a + b == 9 && a >= 2 && b >= 2, "character %d: bands %d + %d", i, a, b);
        /* a base scene never has it */
        zl_nano_scene base;
        zl_nano_scene_make(0, i, 0, &base);
        for (int k = 0; k < base.nobj; k++) CHECK(base.obj[k].shape < ZL_NANO_NSHAPES);
        free(cap);
    }
    for (int k = 0; k < 9; k++) CHECK(pos_seen[k] == 1); /* nine images, nine places */
    free(rgb);
}

TEST(nano_data_cli) {
    char dir[600], cmd[1400], *out = NULL;
    snprintf(dir, sizeof dir, "%s/nano_cli", zl_test_dir());
    snprintf(cmd, sizeof cmd, "%s -q debug nano-data --out '%s' --character zxq --seed 3 --size 32 2>&1", zl_test_bin(), dir);
    CHECK(zl_test_run(cmd, &out) == 0);
    free(out);
    char p[700];
    snprintf(p, sizeof p, "%s/zxq_007.txt", dir);
    size_t n;
    char *t = slurp(p, &n);
    CHECK(t && strstr(t, "[trigger]") && n > 0 && t[n - 1] == '\n');
    free(t);
    snprintf(p, sizeof p, "%s/zxq_008.png", dir);
    CHECK(!zl_file_exists(p)); /* 8 by default */
    snprintf(p, sizeof p, "%s/zxq_000.png", dir);
    zl_image img;
    CHECK(zl_image_read(p, NULL, &img) == 0);
    CHECK(img.w == 32 && img.h == 32);
    zl_image_free(&img);
    snprintf(cmd, sizeof cmd, "%s debug nano-data --out '%s' --count 0 2>&1", zl_test_bin(), dir);
    CHECK(zl_test_run(cmd, &out) == 1 && strstr(out, "--count"));
    free(out);
    snprintf(cmd, sizeof cmd, "%s debug nano-data --count 3 2>&1", zl_test_bin());
    CHECK(zl_test_run(cmd, &out) == 2 && strstr(out, "--out"));
    free(out);
}

TEST(nano_data_wide) {
    /* the VAE's extra set: every shape, diamonds, all fills and outlines, turned, up to four objects;
     * deterministic, and apart from the base and character sets */
    int shapes[ZL_NANO_DIAMOND + 1] = {0}, fills[3] = {0}, lined = 0, turned = 0, four = 0;
    uint8_t *a = malloc(32 * 32 * 3), *b = malloc(32 * 32 * 3);
    for (int i = 0; i < 200; i++) {
        zl_nano_scene s, t, base;
        zl_nano_scene_make(5, i, ZL_NANO_SET_WIDE, &s);
        zl_nano_scene_make(5, i, ZL_NANO_SET_WIDE, &t);
        zl_nano_scene_make(5, i, ZL_NANO_SET_BASE, &base);
        CHECK(s.wide && !base.wide && s.nobj >= 1 && s.nobj <= 4);
        CHECK(memcmp(&s, &t, sizeof s) == 0);
        if (i < 10) {
            zl_nano_render(&s, 32, 2, a);
            zl_nano_render(&t, 32, 2, b);
            CHECK(memcmp(a, b, 32 * 32 * 3) == 0);
        }
        four += s.nobj == 4;
        for (int k = 0; k < s.nobj; k++) {
            const zl_nano_object *o = &s.obj[k];
            CHECK(o->wide && o->shape != ZL_NANO_ZXQ && o->shape >= 0 && o->shape <= ZL_NANO_DIAMOND);
            CHECK(fabsf(o->ux * o->ux + o->uy * o->uy - 1) < 1e-5f && o->r >= 0.05f && o->r <= 0.32f);
            shapes[o->shape]++;
            fills[o->fill]++;
            lined += o->line > 0;
            turned += fabsf(o->uy) > 0.3f;
        }
        char *cap = zl_nano_caption(&s);
        CHECK(!strncmp(cap, "wide: ", 6) && !strstr(cap, "[trigger]"));
        free(cap);
        for (int k = 0; k < base.nobj; k++) CHECK(!base.obj[k].wide && base.obj[k].fill == ZL_NANO_FILL_SOLID);
    }
    free(a);
    free(b);
    for (int k = 0; k <= ZL_NANO_DIAMOND; k++) CHECK(k == ZL_NANO_ZXQ || shapes[k] > 10);
    CHECK(fills[0] > 50 && fills[1] > 50 && fills[2] > 20 && lined > 50 && turned > 100 && four > 20);
    /* a striped object shows both of its colours */
    zl_nano_scene s;
    int found = 0;
    for (int i = 0; i < 200 && !found; i++) {
        zl_nano_scene_make(5, i, ZL_NANO_SET_WIDE, &s);
        if (s.nobj == 1 && s.obj[0].fill == ZL_NANO_FILL_STRIPES && s.obj[0].line == 0 && s.obj[0].r > 0.2f &&
            s.obj[0].shape != ZL_NANO_RING && s.obj[0].cx > 0.3f && s.obj[0].cx < 0.7f && s.obj[0].cy > 0.3f && s.obj[0].cy < 0.7f &&
            memcmp(s.obj[0].rgb, s.obj[0].rgb2, 3))
            found = 1;
    }
    CHECK(found);
    uint8_t *px = malloc(128 * 128 * 3);
    zl_nano_render(&s, 128, 1, px);
    int c1 = 0, c2 = 0;
    for (int y = 0; y < 128; y++)
        for (int x = 0; x < 128; x++) {
            const uint8_t *p = px + ((size_t)y * 128 + x) * 3;
            c1 += !memcmp(p, s.obj[0].rgb, 3);
            c2 += !memcmp(p, s.obj[0].rgb2, 3);
        }
    free(px);
    CHECK(c1 > 20 && c2 > 20);
    zl_nano_data_opts o;
    zl_nano_data_default_opts(&o);
    o.out = zl_test_dir();
    o.wide = 1;
    o.character = "zxq";
    CHECK(zl_nano_data_write(&o) < 0);
}
