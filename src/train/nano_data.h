/* nano_data.h — the procedural scenes of the nano Z-Image family (models/nano/): simple shapes on plain,
 * two-tone or gradient backgrounds, each with a sentence caption that says what is there; and a small
 * "character" set of one concept the base scenes never show, captioned with [trigger].
 *
 * Deterministic by (seed, index): scene i depends only on the seed and i (never on the count, the size
 * or the machine: integer RNG, no transcendental functions), so `--count 100` is a prefix of
 * `--count 5000`, and `--size 128` draws the same scenes as `--size 64` at twice the resolution.
 *
 * A base scene: one object (70%) or two that do not touch (30%); each a shape (circle, square,
 * triangle, star, ring, cross), a colour (12 named colours, ±12 levels of jitter per channel), a size
 * (small / medium / large: radius 0.09 / 0.14 / 0.20 of the side, ±8%) and a place on a 3×3 grid
 * (column centres 0.22 / 0.5 / 0.78 of the side, ±0.03 jitter, kept inside the image); a background
 * plain (60%), two-tone (20%: left half, right half) or a vertical gradient (20%: top to bottom); object
 * colours stand out from the background colours (palette L1 distance > 150). Captions, e.g.
 *   "a small red circle at the top left on a blue background"
 *   "a photo of a large yellow star in the centre and a green ring at the bottom right on a purple and
 *    white background"      (20% start with "a photo of"; no size word for medium)
 *   "an orange cross at the right on a black to gray gradient"
 * The character "zxq": a diamond striped in magenta and lime with a dark navy outline (no diamond,
 * stripe or outline is ever in a base scene), radius 0.20 ±8%, at a different grid place in each of the
 * first nine images, on varied backgrounds, a quarter of them with a second (base) object:
 *   "a photo of [trigger] at the left on a green background"
 *
 * Rendering: every pixel averages ss×ss samples (anti-aliased edges), in sRGB, rounded to 8 bits.
 */
#ifndef ZL_NANO_DATA_H
#define ZL_NANO_DATA_H
#include <stddef.h>
#include <stdint.h>

enum { ZL_NANO_CIRCLE, ZL_NANO_SQUARE, ZL_NANO_TRIANGLE, ZL_NANO_STAR, ZL_NANO_RING, ZL_NANO_CROSS,
       ZL_NANO_NSHAPES, ZL_NANO_ZXQ = ZL_NANO_NSHAPES };
enum { ZL_NANO_BG_PLAIN, ZL_NANO_BG_SPLIT, ZL_NANO_BG_GRADIENT };
#define ZL_NANO_NCOLORS 12

typedef struct {
    int shape;        /* ZL_NANO_* (ZL_NANO_ZXQ: the character) */
    int color;        /* palette index (-1 for the character) */
    int size;         /* 0 small, 1 medium, 2 large (1 for the character) */
    int pos;          /* 0..8 = row·3 + column, top left .. bottom right */
    float cx, cy, r;  /* centre and radius as fractions of the side (x right, y down) */
    uint8_t rgb[3];   /* the colour drawn (palette colour + jitter) */
} zl_nano_object;

typedef struct {
    int bg_kind;      /* ZL_NANO_BG_* */
    int bg[2];        /* palette indices: plain uses bg[0]; split: left, right; gradient: top, bottom */
    uint8_t bg_rgb[2][3];
    int nobj;         /* 1 or 2, drawn in order */
    zl_nano_object obj[2];
    int photo;        /* the caption starts with "a photo of" */
    int character;    /* obj[0] is the character */
} zl_nano_scene;

const char *zl_nano_color_name(int c);              /* "red", ... (NULL out of range) */
void zl_nano_color_rgb(int c, uint8_t rgb[3]);       /* the palette value */
const char *zl_nano_shape_name(int s);              /* "circle", ..., "zxq" */
const char *zl_nano_pos_phrase(int pos);             /* "at the top left", ..., "in the centre", ... */
const char *zl_nano_size_word(int size);             /* "small", "" (medium), "large" */

/* Scene `index` of the base set (character 0) or of the character set (character 1). */
void zl_nano_scene_make(uint64_t seed, int index, int character, zl_nano_scene *s);
/* The caption (malloc'd). */
char *zl_nano_caption(const zl_nano_scene *s);
/* rgb [size][size][3], ss×ss samples per pixel (ss >= 1; 4 is what the data sets use). */
void zl_nano_render(const zl_nano_scene *s, int size, int ss, uint8_t *rgb);
/* 1 when the point (u, v) (fractions of the side) lies inside object o. */
int zl_nano_inside(const zl_nano_object *o, float u, float v);

typedef struct {
    const char *out;        /* folder (created if missing) */
    int count;              /* images (default 1000; the character set: 8) */
    int size;               /* side in pixels (default 64) */
    int ss;                 /* samples per pixel side (default 4) */
    uint64_t seed;          /* default 0 */
    const char *character;  /* NULL: the base set; "zxq": the character set */
} zl_nano_data_opts;

void zl_nano_data_default_opts(zl_nano_data_opts *o);
/* Writes NAME.png + NAME.txt for each scene: base NAME = %05d (index), character NAME = zxq_%03d.
 * Errors: bad options (count 1..10^7, size 8..4096, ss 1..16, unknown character), unwritable folder. */
int zl_nano_data_write(const zl_nano_data_opts *o);

#endif
