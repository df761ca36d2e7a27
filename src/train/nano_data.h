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
 * The character "zxq": a diamond in three diagonal bands, magenta, lime, magenta, with a dark navy
 * outline (no diamond, band or outline is ever in a base scene; the bands are wide enough for the nano
 * VAE to carry them), radius 0.20 ±8%, at a different grid place in each of the
 * first nine images, on varied backgrounds, a quarter of them with a second (base) object:
 *   "a photo of [trigger] at the left on a green background"
 *
 * The "wide" set (for training the VAE, never the DiT): the base scenes say little about what a VAE
 * must carry (the character's bands, for one), so the VAE also learns from 1–4 objects of any of the
 * shapes plus diamonds, anywhere, any size (radius 0.05–0.32), rotated, overlapping, filled plain (50%),
 * with stripes of any direction and period (30%) or a checker (20%), a quarter of them outlined, in
 * random RGB or palette colours, on plain / two-tone / gradient backgrounds split either way. Their
 * captions only list the objects ("wide: a striped diamond, a ring").
 *
 * Rendering: every pixel averages ss×ss samples (anti-aliased edges), in sRGB, rounded to 8 bits.
 */
#ifndef ZL_NANO_DATA_H
#define ZL_NANO_DATA_H
#include <stddef.h>
#include <stdint.h>

enum { ZL_NANO_CIRCLE, ZL_NANO_SQUARE, ZL_NANO_TRIANGLE, ZL_NANO_STAR, ZL_NANO_RING, ZL_NANO_CROSS,
       ZL_NANO_NSHAPES, ZL_NANO_ZXQ = ZL_NANO_NSHAPES, ZL_NANO_DIAMOND /* wide scenes only */ };
enum { ZL_NANO_BG_PLAIN, ZL_NANO_BG_SPLIT, ZL_NANO_BG_GRADIENT };
enum { ZL_NANO_FILL_SOLID, ZL_NANO_FILL_STRIPES, ZL_NANO_FILL_CHECKER };
/* scene sets (zl_nano_scene_make's `set`) */
enum { ZL_NANO_SET_BASE = 0, ZL_NANO_SET_CHARACTER = 1, ZL_NANO_SET_WIDE = 2 };
#define ZL_NANO_NCOLORS 12

typedef struct {
    int shape;        /* ZL_NANO_* (ZL_NANO_ZXQ: the character) */
    int color;        /* palette index (-1 for the character) */
    int size;         /* 0 small, 1 medium, 2 large (1 for the character) */
    int pos;          /* 0..8 = row·3 + column, top left .. bottom right */
    float cx, cy, r;  /* centre and radius as fractions of the side (x right, y down) */
    uint8_t rgb[3];   /* the colour drawn (palette colour + jitter) */
    /* wide scenes only (wide == 0 elsewhere): the shape turned by the unit vector (ux, uy), filled with
     * stripes along (dx, dy) of the given period or a checker of that cell size (in radii) in rgb / rgb2,
     * and an outline of width line (radii; 0: none) in line_rgb */
    int wide, fill;
    float ux, uy, dx, dy, period, line;
    uint8_t rgb2[3], line_rgb[3];
} zl_nano_object;

typedef struct {
    int bg_kind;      /* ZL_NANO_BG_* */
    int bg[2];        /* palette indices: plain uses bg[0]; split: left, right; gradient: top, bottom */
    uint8_t bg_rgb[2][3];
    int nobj;         /* 1 or 2 (wide: up to 4), drawn in order */
    zl_nano_object obj[4];
    int bg_vertical;  /* wide scenes: split top | bottom, gradient left to right */
    int photo;        /* the caption starts with "a photo of" */
    int character;    /* obj[0] is the character */
    int wide;         /* a wide (VAE) scene */
} zl_nano_scene;

const char *zl_nano_color_name(int c);              /* "red", ... (NULL out of range) */
void zl_nano_color_rgb(int c, uint8_t rgb[3]);       /* the palette value */
const char *zl_nano_shape_name(int s);              /* "circle", ..., "zxq", "diamond" */
const char *zl_nano_pos_phrase(int pos);             /* "at the top left", ..., "in the centre", ... */
const char *zl_nano_size_word(int size);             /* "small", "" (medium), "large" */

/* Scene `index` of a set (ZL_NANO_SET_*: 0 base, 1 character, 2 wide). */
void zl_nano_scene_make(uint64_t seed, int index, int set, zl_nano_scene *s);
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
    int wide;               /* 1: the wide set (for the VAE; not with character) */
} zl_nano_data_opts;

void zl_nano_data_default_opts(zl_nano_data_opts *o);
/* Writes NAME.png + NAME.txt for each scene: base NAME = %05d (index), character NAME = zxq_%03d,
 * wide NAME = wide_%05d.
 * Errors: bad options (count 1..10^7, size 8..4096, ss 1..16, unknown character), unwritable folder. */
int zl_nano_data_write(const zl_nano_data_opts *o);

#endif
