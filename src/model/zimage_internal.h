/* zimage_internal.h — what zimage.c shares with zimage_grad.c (not a public API). */
#ifndef ZL_ZIMAGE_INTERNAL_H
#define ZL_ZIMAGE_INTERNAL_H
#include "zimage.h"

/* The token layout of one sample: latent tokens Ht×Wt = Ni padded to Np, caption L padded to Lc, N = Np + Lc. */
typedef struct { int Ht, Wt, Ni, Np, L, Lc, N; } zl_zimage_layout;

/* Checks the shapes (H, W multiples of the patch, L >= 1, positions inside axes_lens) and fills g; -1 with a
 * message otherwise. */
int zl_zimage_layout_(const zl_zimage_config *c, int H, int W, int L, zl_zimage_layout *g);
/* Position ids [N, 3] (image (Lc+1, h, w), image pads (0,0,0), caption (1+j, 0, 0)) and the RoPE table
 * cs [N, head_dim/2, 2] of the sequence [image | caption]. */
void zl_zimage_rope_table_(const zl_zimage_config *c, const zl_zimage_layout *g, int32_t *ids, float *cs);

#endif
