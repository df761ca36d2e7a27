/* ops_conv.h — the image ops (convolution autoencoders such as the FLUX.1 VAE), in the same contract as
 * ops.h: model code calls only these, the ops in ops.h and memcpy. Activations are fp32, channel-major
 * [C, H, W] (a channel's plane is H·W contiguous floats), batch 1. Each op has a plain double-loop
 * reference in tests/test_ops_conv.c.
 *
 * Other image work the VAE needs comes from ops.h: SiLU (zl_op_silu), residual add (zl_op_add), the
 * mid-block attention (zl_op_attention with 1 head and hd = C, zl_op_linear for q/k/v/out on [H·W, C]
 * token rows, which zl_op_transpose makes from [C, H·W]).
 */
#ifndef ZL_OPS_CONV_H
#define ZL_OPS_CONV_H
#include <stddef.h>
#include "../base/dtype.h"

/* A 2-D convolution: weight [cout, cin, k, k] stored F32, BF16 or F16 (owned or pointing into an
 * mmapped file), optional f32 bias [cout]. */
typedef struct {
    zl_dtype dtype;
    const void *w;
    const float *bias; /* NULL: none */
    int cout, cin, k;
} zl_conv2d;

/* Output size of a convolution along one axis: (n + pad0 + pad1 − k) / stride + 1, or 0 when the padded
 * input is smaller than the kernel. */
int zl_conv2d_out_size(int n, int k, int stride, int pad0, int pad1);

/* y [cout, Ho, Wo] = conv(x [cin, H, W]) + bias, with zero padding pt/pb (top/bottom rows) and pl/pr
 * (left/right columns), which may differ (the FLUX VAE downsample pads only right and bottom by 1), and
 * stride `stride` in both directions. Ho/Wo from zl_conv2d_out_size. y and x must not alias.
 * Implementation: im2col over bands of output pixels (bounded scratch, 32 MiB) and one multi-threaded
 * sgemm per band; BF16/F16 weights are converted to f32 once per call (or in bounded row tiles); a direct
 * no-scratch loop runs when no scratch can be allocated. A 1×1 stride-1 unpadded convolution needs no
 * im2col. */
void zl_op_conv2d(float *y, const float *x, const zl_conv2d *c, int H, int W, int stride, int pt, int pb, int pl,
                  int pr);

/* GroupNorm over x [C, HW]: channels split into `groups` consecutive groups of C/groups channels; each
 * group is normalised with its own mean and biased variance (two passes, double accumulation) and
 * eps; then y = x̂ · w[c] + b[c] (w, b may be NULL: 1 and 0). C must be a multiple of groups.
 * y may alias x. */
void zl_op_groupnorm(float *y, const float *x, const float *w, const float *b, int C, size_t HW, int groups,
                     float eps);

/* Nearest-neighbour upsampling ×2: y [C, 2H, 2W], y[c][2i+a][2j+b] = x[c][i][j]. y and x must not alias. */
void zl_op_upsample2x(float *y, const float *x, int C, int H, int W);

/* y [cols, rows] = xᵀ for x [rows, cols] (e.g. [C, H·W] <-> [H·W, C]). y and x must not alias. */
void zl_op_transpose(float *y, const float *x, int rows, int cols);

/* y = a·x + b, n elements (latent normalisation). y may alias x. */
void zl_op_affine(float *y, const float *x, size_t n, float a, float b);

/* Tiled processing with linear-ramp blending.
 * zl_op_tile_blend adds tile t [C, th, tw] into acc [C, H, W] at (y0, x0), weighted by
 * ry(i)·rx(j), and the weights into wsum [H, W]. The ramps are linear over the overlaps with the
 * neighbouring tiles: on the top edge, r(i) = (i + 0.5) / ov_top for i < ov_top, else 1; likewise from the
 * bottom, left and right edges (an overlap of 0 means no ramp: an image border). Adjacent tiles whose
 * overlap regions match give weights that sum to 1 there.
 * zl_op_tile_finish: out [C, H, W] = acc / wsum (0 where wsum is 0). out may alias acc. */
void zl_op_tile_blend(float *acc, float *wsum, const float *t, int C, int H, int W, int y0, int x0, int th, int tw,
                      int ov_top, int ov_bottom, int ov_left, int ov_right);
void zl_op_tile_finish(float *out, const float *acc, const float *wsum, int C, int H, int W);

/* For tests and benchmarks: the im2col scratch per band and the converted-weight scratch, in bytes
 * (0 = the defaults, 32 MiB and 64 MiB). Not thread-safe against concurrent op calls. */
void zl_ops_conv_set_scratch(size_t band_bytes, size_t weight_bytes);

#endif
