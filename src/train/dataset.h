/* dataset.h — a training dataset: a folder of images with same-name .txt captions, trigger words,
 * aspect-ratio buckets, and the VAE-latent cache that keeps the VAE out of memory during training.
 *
 * Captions: NAME.txt beside NAME.png/.jpg/.jpeg/.webp (UTF-8; surrounding whitespace trimmed; line breaks
 * become spaces). "[trigger]" anywhere in a caption is replaced by the trigger word; otherwise the
 * trigger, when given, is prepended as "TRIGGER, caption". An image without a .txt uses the default
 * caption (same trigger rules), else the trigger alone, else it is skipped. Unreadable images and
 * captions are skipped and listed with the reason; a dataset with no usable item is an error.
 *
 * Buckets: the base set holds every (w, h) with sides multiples of `step` (default 64, itself a multiple of
 * `mult` = VAE factor × patch, 16 for Z-Image), area ≤ resolution² and as close to it as the step allows
 * (h = the largest multiple of step with w·h ≤ resolution²), aspect ratio between 1:4 and 4:1. An image goes
 * to the bucket nearest its aspect ratio (in log space; ties to the larger area). Without allow_upscale,
 * an image smaller than its bucket gets a bucket shrunk to fit it (same aspect, sides rounded down to
 * multiples of `mult`), so pixels are never invented; with it, upscaling is allowed up to max_upscale×.
 * Pixels: scaled to cover the bucket (Lanczos) and centre-cropped (zl_image_fit).
 */
#ifndef ZL_DATASET_H
#define ZL_DATASET_H
#include <stdint.h>
#include <stdio.h>

typedef struct {
    char *image;      /* path */
    char *caption;    /* the caption used for training (trigger applied) */
    int w, h;         /* source size (after EXIF orientation) */
    int bw, bh;       /* bucket (training size) */
    uint64_t hash;    /* content hash of the image file */
} zl_item;

typedef struct {
    int w, h, count;
} zl_bucket;

typedef struct {
    zl_item *items;
    int n;
    char **skipped, **why; /* files left out and the reason */
    int nskipped;
    zl_bucket *buckets;    /* the buckets in use, with their image counts */
    int nbuckets;
} zl_dataset;

typedef struct {
    const char *trigger;          /* NULL: none */
    const char *default_caption;  /* NULL: none */
    int resolution;               /* target side: buckets have about resolution² pixels (default 1024) */
    int mult;                     /* sides are multiples of this (VAE factor × patch; default 16) */
    int step;                     /* base bucket granularity (default 64; a multiple of mult) */
    int allow_upscale;            /* 0 (default): never enlarge an image */
    float max_upscale;            /* with allow_upscale: at most this factor (default 2) */
} zl_dataset_opts;

void zl_dataset_default_opts(zl_dataset_opts *o);
/* Scans dir (not recursive; files in name order). Errors: not a folder, bad options, nothing usable. */
int zl_dataset_scan(const char *dir, const zl_dataset_opts *o, zl_dataset *ds);
void zl_dataset_free(zl_dataset *ds);
/* The base bucket set for the options (malloc'd, sorted by width); returns the count or -1. */
int zl_dataset_bucket_set(const zl_dataset_opts *o, zl_bucket **out);
/* Prints the summary: images, skipped files with reasons, the bucket table. */
void zl_dataset_print_summary(const zl_dataset *ds, FILE *f);
/* pixels [3, bh, bw] in [−1, 1] of item it (flip: mirrored left-right). */
int zl_dataset_load_pixels(const zl_item *it, int flip, float *chw);

#endif
