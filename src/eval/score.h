/* score.h — numbers for judging generated images: how sharp one image is, and how far it is from a
 * reference of the same size. They work on RGB float images in memory ([h][w][3], row-major,
 * interleaved, as zl_image holds them; values normally in [0, 1]), so `zlora score` scores files and
 * `compare` can score the images it generates without writing them.
 *
 * Definitions (tests/ref/score_ref.py implements the same from scratch in numpy):
 *   luma       Y = 0.299 R + 0.587 G + 0.114 B (Rec.601 weights) on the stored (gamma-encoded) values,
 *              0..1 scale, computed in double.
 *   borders    where a filter reaches outside the image, indices are mirrored without repeating the edge
 *              pixel (…, 2, 1 | 0, 1, 2, … | n−2, n−3, …), i.e. OpenCV's BORDER_REFLECT_101 and numpy's
 *              pad mode "reflect", repeated as often as needed for tiny images.
 *   sharpness  the variance (over all pixels, population) of the 4-neighbour Laplacian of Y,
 *              L = Y(x−1,y) + Y(x+1,y) + Y(x,y−1) + Y(x,y+1) − 4·Y(x,y); the kernel and border of OpenCV's
 *              cv2.Laplacian(ksize=1), so it is the usual "variance of the Laplacian" blur measure with
 *              luma on 0..1 (OpenCV's figure on 0..255 gray is 255² times larger). Falls when an image is
 *              blurred, rises with noise and with contrast.
 *   hf_ratio   mean((Y − G₁∗Y)²) / var(Y): the share of the luma's variance above the pass band of a
 *              Gaussian blur G₁ of σ = 1 px (ZL_SCORE_HF_SIGMA); 0..~1 and independent of contrast.
 *              0 for a flat image (var(Y) < 1e-14).
 *   Gaussian   blur: separable, taps exp(−k²/(2σ²)) for |k| ≤ ceil(3σ), normalised to sum 1, borders as
 *              above (zl_score_blur).
 *   difference the mean absolute difference |a − b| over every pixel and the three channels (0..1 scale);
 *              0 only for identical images.
 *   ssim       the mean SSIM of the two lumas (Wang et al. 2004): 11×11 Gaussian window of σ = 1.5
 *              (normalised to sum 1), C1 = 0.01², C2 = 0.03² (dynamic range 1), population (co)variances
 *              σ² = E[x²] − μ², averaged over the "valid" positions where the window lies inside the
 *              image ((w−10)·(h−10) of them), as Wang's ssim_index.m and skimage's structural_similarity
 *              (gaussian_weights=True, use_sample_covariance=False, data_range=1) compute it. 1 for
 *              identical images; `1 − ssim` is reported as the second difference measure. Needs w, h ≥ 11.
 *
 * All sums are in double, per row, then added in row order: results do not depend on the thread count.
 * Memory: sharpness uses 3 double planes (24 bytes/pixel), difference 7 (56 bytes/pixel).
 * Errors (-1 and zl_last_error): sizes ≤ 0 or too large, non-finite pixels, no memory, an image smaller than
 * the SSIM window, a size mismatch (zl_score_image).
 */
#ifndef ZL_SCORE_H
#define ZL_SCORE_H
#include <stddef.h>
#include "io/image.h"

#define ZL_SCORE_HF_SIGMA 1.0   /* the blur that separates "high frequencies" for hf_ratio */
#define ZL_SSIM_WIN 11          /* SSIM window side */
#define ZL_SSIM_SIGMA 1.5

typedef struct {
    double sharpness;  /* variance of the Laplacian of the luma */
    double hf_ratio;   /* high-frequency share of the luma variance */
} zl_sharp_score;

typedef struct {
    double difference; /* mean absolute RGB difference */
    double ssim;       /* mean SSIM of the lumas (1: identical) */
} zl_diff_score;

/* Y [n] from rgb [n][3] (no checks). */
void zl_score_luma(const float *rgb, size_t n, double *y);

/* rgb [h][w][3]. */
int zl_score_sharpness(const float *rgb, int w, int h, zl_sharp_score *out);
/* a, b [h][w][3], the same size. */
int zl_score_difference(const float *a, const float *b, int w, int h, zl_diff_score *out);

/* The documented Gaussian blur of an image with `channels` interleaved channels: in, out [h][w][channels]
 * (out may not alias in). sigma > 0 and ≤ 1000. */
int zl_score_blur(const float *in, int w, int h, int channels, double sigma, float *out);

/* Everything for one image: sharpness always, and against ref (NULL: none) difference and ssim, after
 * checking that ref has the same size ("image is 64x48 but the reference is 32x32"). */
typedef struct {
    int w, h;
    zl_sharp_score sharp;
    int has_ref;
    zl_diff_score diff;
} zl_score;
int zl_score_image(const zl_image *img, const zl_image *ref, zl_score *out);

#endif
