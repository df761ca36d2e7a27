/* nano_data.c — procedural scenes and captions for the nano model family (see nano_data.h). */
#include "train/nano_data.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "base/base.h"
#include "base/progress.h"
#include "io/image.h"

static const struct { const char *name; uint8_t rgb[3]; } palette[ZL_NANO_NCOLORS] = {
    {"red", {215, 40, 40}},     {"green", {40, 160, 60}},   {"blue", {45, 85, 215}},    {"yellow", {240, 210, 45}},
    {"orange", {245, 135, 30}}, {"purple", {135, 60, 180}}, {"pink", {245, 150, 195}},  {"cyan", {70, 200, 220}},
    {"white", {245, 245, 245}}, {"black", {25, 25, 25}},    {"gray", {128, 128, 128}},  {"brown", {125, 80, 40}},
};
static const char *shape_names[] = {"circle", "square", "triangle", "star", "ring", "cross", "zxq", "diamond"};
static const char *pos_phrases[9] = {"at the top left",    "at the top",    "at the top right",
                                     "at the left",        "in the centre", "at the right",
                                     "at the bottom left", "at the bottom", "at the bottom right"};
static const char *size_words[3] = {"small", "", "large"};
static const float size_radius[3] = {0.09f, 0.14f, 0.20f};
static const float grid[3] = {0.22f, 0.5f, 0.78f};
#define CHAR_RADIUS 0.20f
/* the character's colours: bands magenta / lime, outline navy */
static const uint8_t zxq_a[3] = {225, 30, 150}, zxq_b[3] = {160, 230, 40}, zxq_line[3] = {25, 25, 90};
#define MIN_CONTRAST 150

const char *zl_nano_color_name(int c) { return c >= 0 && c < ZL_NANO_NCOLORS ? palette[c].name : NULL; }
void zl_nano_color_rgb(int c, uint8_t rgb[3]) { memcpy(rgb, palette[c].rgb, 3); }
const char *zl_nano_shape_name(int s) { return s >= 0 && s <= ZL_NANO_DIAMOND ? shape_names[s] : NULL; }
const char *zl_nano_pos_phrase(int p) { return p >= 0 && p < 9 ? pos_phrases[p] : NULL; }
const char *zl_nano_size_word(int s) { return s >= 0 && s < 3 ? size_words[s] : NULL; }

/* ---------------------------------------------------------------- random draws (integer only) */

static int pick(zl_rng *r, int n) { return (int)(((zl_rng_next(r) >> 32) * (uint64_t)n) >> 32); }
static float unif(zl_rng *r) { return zl_rng_uniform(r); }
static float jitter(zl_rng *r, float a) { return (2.0f * unif(r) - 1.0f) * a; }

static int dist(int a, int b) {
    int d = 0;
    for (int k = 0; k < 3; k++) d += abs((int)palette[a].rgb[k] - (int)palette[b].rgb[k]);
    return d;
}

static void jittered(zl_rng *r, const uint8_t in[3], uint8_t out[3]) {
    for (int k = 0; k < 3; k++) {
        int v = (int)in[k] + pick(r, 25) - 12;
        out[k] = (uint8_t)(v < 0 ? 0 : v > 255 ? 255 : v);
    }
}

/* A colour that stands out from the background colours in use. */
static int pick_color(zl_rng *r, const zl_nano_scene *s) {
    int ok[ZL_NANO_NCOLORS], n = 0;
    for (int c = 0; c < ZL_NANO_NCOLORS; c++) {
        int good = dist(c, s->bg[0]) > MIN_CONTRAST;
        if (s->bg_kind != ZL_NANO_BG_PLAIN) good = good && dist(c, s->bg[1]) > MIN_CONTRAST;
        if (good) ok[n++] = c;
    }
    return n ? ok[pick(r, n)] : (s->bg[0] + 6) % ZL_NANO_NCOLORS; /* never empty for this palette */
}

static void place(zl_rng *r, zl_nano_object *o, float radius) {
    o->r = radius * (1.0f + jitter(r, 0.08f));
    float lo = o->r + 0.02f, hi = 1.0f - o->r - 0.02f;
    o->cx = grid[o->pos % 3] + jitter(r, 0.03f);
    o->cy = grid[o->pos / 3] + jitter(r, 0.03f);
    o->cx = o->cx < lo ? lo : o->cx > hi ? hi : o->cx;
    o->cy = o->cy < lo ? lo : o->cy > hi ? hi : o->cy;
}

static int apart(const zl_nano_object *a, const zl_nano_object *b) {
    float dx = a->cx - b->cx, dy = a->cy - b->cy, m = a->r + b->r + 0.03f;
    return dx * dx + dy * dy > m * m;
}

static void base_object(zl_rng *r, const zl_nano_scene *s, zl_nano_object *o, int avoid_pos) {
    o->shape = pick(r, ZL_NANO_NSHAPES);
    o->size = pick(r, 3);
    do o->pos = pick(r, 9); while (o->pos == avoid_pos);
    o->color = pick_color(r, s);
    jittered(r, palette[o->color].rgb, o->rgb);
    place(r, o, size_radius[o->size]);
}

/* A second object that does not touch the first (a few tries; none if nothing fits). */
static void second_object(zl_rng *r, zl_nano_scene *s) {
    for (int t = 0; t < 32; t++) {
        base_object(r, s, &s->obj[1], s->obj[0].pos);
        if (apart(&s->obj[0], &s->obj[1])) { s->nobj = 2; return; }
    }
    s->nobj = 1;
}

static void wide_scene(zl_rng *r, zl_nano_scene *s);

void zl_nano_scene_make(uint64_t seed, int index, int set, zl_nano_scene *s) {
    memset(s, 0, sizeof *s);
    int character = set == ZL_NANO_SET_CHARACTER;
    zl_rng r = {seed * 0x9E3779B97F4A7C15ull ^ ((uint64_t)(uint32_t)index * 2 + character) * 0xD1B54A32D192ED03ull};
    if (set == ZL_NANO_SET_WIDE) r.s ^= 0x3C6EF372FE94F82Bull;
    zl_rng_next(&r);
    if (set == ZL_NANO_SET_WIDE) { wide_scene(&r, s); return; }
    s->character = character;
    float k = unif(&r);
    s->bg_kind = k < 0.6f ? ZL_NANO_BG_PLAIN : k < 0.8f ? ZL_NANO_BG_SPLIT : ZL_NANO_BG_GRADIENT;
    s->bg[0] = pick(&r, ZL_NANO_NCOLORS);
    s->bg[1] = s->bg[0];
    if (s->bg_kind != ZL_NANO_BG_PLAIN)
        do s->bg[1] = pick(&r, ZL_NANO_NCOLORS); while (dist(s->bg[0], s->bg[1]) <= MIN_CONTRAST);
    for (int i = 0; i < 2; i++) jittered(&r, palette[s->bg[i]].rgb, s->bg_rgb[i]);
    if (!s->character) {
        s->photo = unif(&r) < 0.2f;
        base_object(&r, s, &s->obj[0], -1);
        s->nobj = 1;
        if (unif(&r) < 0.3f) second_object(&r, s);
        return;
    }
    /* the character: the first nine images take the nine grid places in a seeded order */
    s->photo = 1;
    zl_nano_object *o = &s->obj[0];
    o->shape = ZL_NANO_ZXQ;
    o->color = -1;
    o->size = 1;
    memcpy(o->rgb, zxq_a, 3);
    if (index < 9) {
        int perm[9];
        zl_rng pr = {seed ^ 0x5A5A5A5A5A5A5A5Aull};
        for (int i = 0; i < 9; i++) perm[i] = i;
        for (int i = 8; i > 0; i--) { int j = pick(&pr, i + 1), t = perm[i]; perm[i] = perm[j]; perm[j] = t; }
        o->pos = perm[index];
    } else o->pos = pick(&r, 9);
    place(&r, o, CHAR_RADIUS);
    s->nobj = 1;
    if (unif(&r) < 0.25f) second_object(&r, s);
}

/* ---------------------------------------------------------------- wide scenes (for the VAE) */

/* a random RGB colour (half the time) or a jittered palette one */
static void any_color(zl_rng *r, uint8_t rgb[3]) {
    if (unif(r) < 0.5f)
        for (int k = 0; k < 3; k++) rgb[k] = (uint8_t)pick(r, 256);
    else jittered(r, palette[pick(r, ZL_NANO_NCOLORS)].rgb, rgb);
}

/* a random direction (rejection sampling in the unit disc; sqrtf is exact, so this is deterministic) */
static void unit(zl_rng *r, float *x, float *y) {
    for (;;) {
        float a = 2.0f * unif(r) - 1.0f, b = 2.0f * unif(r) - 1.0f, n2 = a * a + b * b;
        if (n2 > 0.01f && n2 <= 1.0f) { float n = sqrtf(n2); *x = a / n; *y = b / n; return; }
    }
}

static void wide_scene(zl_rng *r, zl_nano_scene *s) {
    s->wide = 1;
    float k = unif(r);
    s->bg_kind = k < 0.4f ? ZL_NANO_BG_PLAIN : k < 0.7f ? ZL_NANO_BG_SPLIT : ZL_NANO_BG_GRADIENT;
    s->bg_vertical = unif(r) < 0.5f;
    for (int i = 0; i < 2; i++) any_color(r, s->bg_rgb[i]);
    s->nobj = 1 + pick(r, 4);
    for (int i = 0; i < s->nobj; i++) {
        zl_nano_object *o = &s->obj[i];
        o->wide = 1;
        o->shape = pick(r, ZL_NANO_NSHAPES + 1);
        if (o->shape == ZL_NANO_NSHAPES) o->shape = ZL_NANO_DIAMOND;
        o->color = -1;
        o->size = -1;
        o->r = 0.05f + 0.27f * unif(r);
        o->cx = 0.05f + 0.9f * unif(r);
        o->cy = 0.05f + 0.9f * unif(r);
        o->pos = (o->cy < 1.0f / 3 ? 0 : o->cy < 2.0f / 3 ? 3 : 6) + (o->cx < 1.0f / 3 ? 0 : o->cx < 2.0f / 3 ? 1 : 2);
        unit(r, &o->ux, &o->uy);
        float f = unif(r);
        o->fill = f < 0.5f ? ZL_NANO_FILL_SOLID : f < 0.8f ? ZL_NANO_FILL_STRIPES : ZL_NANO_FILL_CHECKER;
        unit(r, &o->dx, &o->dy);
        o->period = 0.25f + 0.6f * unif(r);
        o->line = unif(r) < 0.25f ? 0.08f + 0.17f * unif(r) : 0.0f;
        any_color(r, o->rgb);
        any_color(r, o->rgb2);
        any_color(r, o->line_rgb);
    }
}

/* ---------------------------------------------------------------- captions */

static int vowel(const char *w) { return w && strchr("aeiou", w[0]) != NULL; }

static void object_phrase(zl_buf *b, const zl_nano_object *o) {
    if (o->shape == ZL_NANO_ZXQ) {
        zl_buf_printf(b, "[trigger] %s", pos_phrases[o->pos]);
        return;
    }
    const char *first = o->size != 1 ? size_words[o->size] : palette[o->color].name;
    zl_buf_printf(b, "%s ", vowel(first) ? "an" : "a");
    if (o->size != 1) zl_buf_printf(b, "%s ", size_words[o->size]);
    zl_buf_printf(b, "%s %s %s", palette[o->color].name, shape_names[o->shape], pos_phrases[o->pos]);
}

char *zl_nano_caption(const zl_nano_scene *s) {
    zl_buf b = {0};
    if (s->wide) { /* not for the DiT: only what is there */
        static const char *fills[] = {"", "striped ", "checkered "};
        zl_buf_puts(&b, "wide:");
        for (int i = 0; i < s->nobj; i++)
            zl_buf_printf(&b, "%s %s%s%s", i ? "," : "", s->obj[i].line > 0 ? "outlined " : "", fills[s->obj[i].fill],
                          shape_names[s->obj[i].shape]);
        return b.s;
    }
    if (s->photo) zl_buf_puts(&b, "a photo of ");
    for (int i = 0; i < s->nobj; i++) {
        if (i) zl_buf_puts(&b, " and ");
        object_phrase(&b, &s->obj[i]);
    }
    const char *c0 = palette[s->bg[0]].name, *c1 = palette[s->bg[1]].name;
    const char *art = vowel(c0) ? "an" : "a";
    if (s->bg_kind == ZL_NANO_BG_PLAIN) zl_buf_printf(&b, " on %s %s background", art, c0);
    else if (s->bg_kind == ZL_NANO_BG_SPLIT) zl_buf_printf(&b, " on %s %s and %s background", art, c0, c1);
    else zl_buf_printf(&b, " on %s %s to %s gradient", art, c0, c1);
    return b.s;
}

/* ---------------------------------------------------------------- rendering */

/* A five-pointed star pointing up, outer radius 1, inner 0.45: vertices at multiples of 36 degrees
 * (sin, -cos of the angle, so y points down), written out so no libm call is involved. */
static const float star_sin[10] = {0.0f, 0.58778525f, 0.95105652f, 0.95105652f, 0.58778525f,
                                   0.0f, -0.58778525f, -0.95105652f, -0.95105652f, -0.58778525f};
static const float star_cos[10] = {1.0f, 0.80901699f, 0.30901699f, -0.30901699f, -0.80901699f,
                                   -1.0f, -0.80901699f, -0.30901699f, 0.30901699f, 0.80901699f};

static int in_star(float x, float y) {
    int in = 0;
    for (int i = 0, j = 9; i < 10; j = i++) {
        float ri = i % 2 ? 0.45f : 1.0f, rj = j % 2 ? 0.45f : 1.0f;
        float xi = ri * star_sin[i], yi = -ri * star_cos[i], xj = rj * star_sin[j], yj = -rj * star_cos[j];
        if ((yi > y) != (yj > y) && x < (xj - xi) * (y - yi) / (yj - yi) + xi) in = !in;
    }
    return in;
}

static float fabs_(float a) { return a < 0 ? -a : a; }

static int inside_shape(int shape, float x, float y) {
    float d2 = x * x + y * y, ax = fabs_(x), ay = fabs_(y);
    switch (shape) {
    case ZL_NANO_CIRCLE: return d2 < 1.0f;
    case ZL_NANO_SQUARE: return ax < 0.82f && ay < 0.82f;
    case ZL_NANO_TRIANGLE: return y < 0.5f && ax < (y + 1.0f) * (0.8660254f / 1.5f); /* apex (0,-1), base y = 0.5 */
    case ZL_NANO_STAR: return d2 < 1.0f && in_star(x, y);
    case ZL_NANO_RING: return d2 < 1.0f && d2 > 0.55f * 0.55f;
    case ZL_NANO_CROSS: return (ax < 0.3f && ay < 0.95f) || (ay < 0.3f && ax < 0.95f);
    case ZL_NANO_ZXQ:
    case ZL_NANO_DIAMOND: return ax + ay < 1.0f;
    }
    return 0;
}

/* the object's own coordinates of (u, v): radii from its centre, turned for wide objects */
static void local(const zl_nano_object *o, float u, float v, float *x, float *y) {
    float a = (u - o->cx) / o->r, b = (v - o->cy) / o->r;
    if (o->wide) { *x = o->ux * a + o->uy * b; *y = o->ux * b - o->uy * a; }
    else { *x = a; *y = b; }
}

int zl_nano_inside(const zl_nano_object *o, float u, float v) {
    float x, y;
    local(o, u, v, &x, &y);
    return inside_shape(o->shape, x, y);
}

static const uint8_t *wide_color(const zl_nano_object *o, float u, float v) {
    float x, y;
    local(o, u, v, &x, &y);
    if (o->line > 0 && !inside_shape(o->shape, x / (1.0f - o->line), y / (1.0f - o->line))) return o->line_rgb;
    if (o->fill == ZL_NANO_FILL_STRIPES) return (int)floorf((x * o->dx + y * o->dy) / o->period + 64.0f) % 2 ? o->rgb2 : o->rgb;
    if (o->fill == ZL_NANO_FILL_CHECKER)
        return ((int)floorf(x / o->period + 64.0f) + (int)floorf(y / o->period + 64.0f)) % 2 ? o->rgb2 : o->rgb;
    return o->rgb;
}

static const uint8_t *zxq_color(const zl_nano_object *o, float u, float v) {
    float x = (u - o->cx) / o->r, y = (v - o->cy) / o->r;
    if (fabs_(x) + fabs_(y) > 0.84f) return zxq_line;
    return ((int)((x + y) * 1.5f + 10.5f)) % 2 ? zxq_a : zxq_b; /* three diagonal bands: magenta, lime, magenta */
}

void zl_nano_render(const zl_nano_scene *s, int size, int ss, uint8_t *rgb) {
    float inv = 1.0f / (float)size;
    for (int py = 0; py < size; py++)
        for (int px = 0; px < size; px++) {
            int acc[3] = {0, 0, 0};
            for (int sy = 0; sy < ss; sy++)
                for (int sx = 0; sx < ss; sx++) {
                    float u = ((float)px + ((float)sx + 0.5f) / (float)ss) * inv;
                    float v = ((float)py + ((float)sy + 0.5f) / (float)ss) * inv;
                    uint8_t bg[3];
                    const uint8_t *c = bg;
                    float along = s->bg_vertical ? u : v, across = s->bg_vertical ? v : u; /* wide: the other way */
                    if (s->bg_kind == ZL_NANO_BG_SPLIT) c = across < 0.5f ? s->bg_rgb[0] : s->bg_rgb[1];
                    else if (s->bg_kind == ZL_NANO_BG_GRADIENT)
                        for (int k = 0; k < 3; k++)
                            bg[k] = (uint8_t)((float)s->bg_rgb[0][k] * (1.0f - along) + (float)s->bg_rgb[1][k] * along + 0.5f);
                    else c = s->bg_rgb[0];
                    for (int i = 0; i < s->nobj; i++)
                        if (zl_nano_inside(&s->obj[i], u, v))
                            c = s->obj[i].wide ? wide_color(&s->obj[i], u, v)
                                : s->obj[i].shape == ZL_NANO_ZXQ ? zxq_color(&s->obj[i], u, v) : s->obj[i].rgb;
                    for (int k = 0; k < 3; k++) acc[k] += c[k];
                }
            int n = ss * ss;
            for (int k = 0; k < 3; k++) rgb[((size_t)py * size + px) * 3 + k] = (uint8_t)((acc[k] + n / 2) / n);
        }
}

/* ---------------------------------------------------------------- files */

void zl_nano_data_default_opts(zl_nano_data_opts *o) {
    memset(o, 0, sizeof *o);
    o->count = 1000;
    o->size = 64;
    o->ss = 4;
}

static int mkdirs(const char *dir) {
    char *p = zl_xstrdup(dir);
    for (char *s = p + 1; *s; s++)
        if (*s == '/') { *s = 0; mkdir(p, 0755); *s = '/'; }
    int rc = mkdir(p, 0755) && errno != EEXIST ? zl_err("cannot create %s: %s", dir, strerror(errno)) : 0;
    if (rc == 0 && !zl_is_dir(p)) rc = zl_err("%s is not a folder", dir);
    free(p);
    return rc;
}

int zl_nano_data_write(const zl_nano_data_opts *o) {
    if (!o->out || !*o->out) return zl_err("nano-data: no output folder");
    if (o->count < 1 || o->count > 10000000) return zl_err("nano-data: count must be 1..10000000 (got %d)", o->count);
    if (o->size < 8 || o->size > 4096) return zl_err("nano-data: size must be 8..4096 (got %d)", o->size);
    if (o->ss < 1 || o->ss > 16) return zl_err("nano-data: samples per side must be 1..16 (got %d)", o->ss);
    if (o->character && strcmp(o->character, "zxq"))
        return zl_err("nano-data: unknown character '%s' (there is one: zxq)", o->character);
    if (o->character && o->wide) return zl_err("nano-data: the wide set has no character");
    if (mkdirs(o->out)) return -1;
    size_t npx = (size_t)o->size * o->size * 3;
    uint8_t *rgb = zl_try_malloc(npx);
    if (!rgb) return -1;
    zl_progress pr;
    zl_progress_start(&pr, "nano-data", o->count, "img");
    int rc = 0;
    for (int i = 0; i < o->count && rc == 0; i++) {
        zl_nano_scene s;
        zl_nano_scene_make(o->seed, i, o->wide ? ZL_NANO_SET_WIDE : o->character ? ZL_NANO_SET_CHARACTER : ZL_NANO_SET_BASE, &s);
        zl_nano_render(&s, o->size, o->ss, rgb);
        char *cap = zl_nano_caption(&s);
        char *png = o->character ? zl_xasprintf("%s/%s_%03d.png", o->out, o->character, i)
                    : zl_xasprintf(o->wide ? "%s/wide_%05d.png" : "%s/%05d.png", o->out, i);
        char *txt = zl_xstrdup(png);
        strcpy(txt + strlen(txt) - 3, "txt");
        uint8_t *enc = NULL;
        size_t nenc = 0;
        rc = zl_png_encode_rgb8(rgb, o->size, o->size, NULL, NULL, 0, &enc, &nenc);
        if (rc == 0) {
            const void *parts[1] = {enc};
            rc = zl_write_atomic(png, parts, &nenc, 1);
        }
        if (rc == 0) {
            const void *parts[2] = {cap, "\n"};
            size_t sizes[2] = {strlen(cap), 1};
            rc = zl_write_atomic(txt, parts, sizes, 2);
        }
        free(enc);
        free(cap);
        free(png);
        free(txt);
        zl_progress_update(&pr, i + 1);
    }
    zl_progress_end(&pr, o->count);
    free(rgb);
    return rc;
}
