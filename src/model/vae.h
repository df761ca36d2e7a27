/* vae.h — the FLUX.1 autoencoder (AutoencoderKL) that Z-Image uses: loading, encode (to the latent
 * mean), decode, tiled encode/decode in bounded memory, latent normalisation
 * (see ../shared/spec/zimage.md §5).
 *
 * Loading accepts a diffusers `vae/` folder (config.json + diffusion_pytorch_model.safetensors, or
 * shards), a model folder holding `vae/`, a diffusers-named single file, or the BFL/ComfyUI
 * `ae.safetensors` naming (encoder.down.{i}.block.{j}, mid.attn_1.{q,k,v,proj_out} as 1×1 convs,
 * decoder.up.{L−1−k} for diffusers up_blocks[k]); with or without a `first_stage_model.` or `vae.` prefix;
 * the legacy diffusers attention names (query/key/value/proj_attn) too. Stored dtypes F32, BF16, F16.
 *
 * The architecture comes from the tensor shapes: levels (= encoder down blocks), block channels, ResBlocks
 * per encoder level and per decoder block, latent channels, image channels, whether the mid blocks have
 * attention, and the optional 1×1 quant_conv / post_quant_conv (Stable-Diffusion-style VAEs, which are
 * the same architecture with 4 latent channels, so they load too; Z-Image callers must check
 * cfg.latent_channels == 16). The spatial factor is 2^(levels−1). The GroupNorm group count is not in the
 * shapes: it comes from opts.groups, else config.json `norm_num_groups`, else the safetensors metadata key
 * `norm_num_groups` (written by zlora's test models), else 32 (every published AutoencoderKL). The latent
 * scaling/shift come from config.json, else 0.3611 / 0.1159 for 16 latent channels (FLUX.1), 0.18215 / 0
 * for 4 (SD 1.x), 1 / 0 otherwise. A config.json that disagrees with the shapes is an error.
 *
 * Refused with a message: files that are not an AutoencoderKL (a DiT, a UNet, a text encoder, a LoRA,
 * TAESD, a video VAE with 3-D convolutions), missing tensors (the first few are named), wrong shapes.
 *
 * Weights of convolutions and linears are kept as `weight_dtype` (F32 by default, as the official
 * pipeline runs the VAE in fp32; or BF16): a file already in that dtype stays mmapped (zero copy), others
 * are converted while loading. Activations are fp32.
 */
#ifndef ZL_VAE_H
#define ZL_VAE_H
#include "../nn/ops.h"
#include "../nn/ops_conv.h"

#define ZL_VAE_MAX_LEVELS 8

typedef struct {
    int in_channels, out_channels, latent_channels;
    int levels;                      /* spatial factor 2^(levels−1) */
    int ch[ZL_VAE_MAX_LEVELS];       /* block_out_channels */
    int enc_layers, dec_layers;      /* ResBlocks per encoder level / decoder block (diffusers: L, L+1) */
    int groups;
    float eps;                       /* GroupNorm eps, 1e-6 */
    int mid_attention, quant_conv, post_quant_conv;
    float scaling_factor, shift_factor;
} zl_vae_config;

typedef struct {
    float *n1w, *n1b, *n2w, *n2b;
    zl_conv2d c1, c2, sc; /* sc.w NULL: identity shortcut */
    int cin, cout;
} zl_vae_res;

typedef struct {
    float *nw, *nb;
    zl_linear q, k, v, o;
} zl_vae_attn;

typedef struct {
    zl_conv2d conv_in, conv_out, *down;  /* down[levels−1] (encoder) or up[levels−1] (decoder, by up_blocks k) */
    zl_vae_res *res;                     /* [levels][layers] */
    zl_vae_res mid[2];
    zl_vae_attn attn;
    float *norm_w, *norm_b;
} zl_vae_half;

typedef struct zl_vae {
    zl_vae_config cfg;
    zl_vae_half enc, dec;
    zl_conv2d quant, post_quant;         /* w NULL when absent */
    zl_dtype weight_dtype;
    size_t global_mid_max_bytes;         /* tiled calls: see below (default 512 MiB; 0: always tile it) */
    const char *naming;                  /* "diffusers", "diffusers-legacy" or "bfl" */
    char *path;
    struct zl_st *st;
    void **owned;
    int nowned, capowned;
} zl_vae;

typedef struct {
    zl_dtype weight_dtype; /* ZL_F32 (default) or ZL_BF16 */
    int groups;            /* 0: from config.json / metadata / 32 */
} zl_vae_opts;

void zl_vae_default_opts(zl_vae_opts *o);
int zl_vae_load(const char *path, const zl_vae_opts *o, zl_vae **out);
void zl_vae_free(zl_vae *m);

/* 2^(levels−1): image side = latent side × factor. */
int zl_vae_factor(const zl_vae *m);

/* mean [latent_channels, H/f, W/f] = the mean half of the encoder output (raw, not normalised) for
 * img [in_channels, H, W] in [−1, 1]. H and W must be positive multiples of the factor f. */
int zl_vae_encode(const zl_vae *m, const float *img, int H, int W, float *mean);
/* img [out_channels, h·f, w·f] (model space, about [−1, 1], not clamped) from a raw latent
 * z [latent_channels, h, w]. */
int zl_vae_decode(const zl_vae *m, const float *z, int h, int w, float *img);

/* The same in overlapping tiles of tile×tile latent pixels (tile·f image pixels), blended with linear
 * ramps across each overlap, so the high-resolution activations are bounded by the tile size, not the
 * image. Along each axis of n latent pixels there are k = ceil((n − overlap) / (tile − overlap)) tiles,
 * starting at floor(i·(n − tile) / (k − 1)): neighbours share at least `overlap` latent pixels and the last
 * tile ends at the border. An image no larger than one tile is processed whole (identical to the untiled
 * call). Requires 0 <= overlap < tile.
 * The mid block (with its attention over all positions) works at latent resolution, where memory is
 * small: when its activations (about 6·ch[L−1]·h·w floats) fit m->global_mid_max_bytes it runs once on
 * the whole latent (decode: conv_in + mid whole, then the up blocks in tiles; encode: the down levels in
 * tiles, their features blended, then mid + conv_out whole), so attention stays exact; otherwise each tile
 * runs the whole network. GroupNorm statistics of the tiled stages are per tile, so the result differs
 * from the untiled one a little (measured in tests/test_vae.c). Output memory plus one H·W float plane
 * of blend weights are needed in addition. */
int zl_vae_encode_tiled(const zl_vae *m, const float *img, int H, int W, int tile, int overlap, float *mean);
int zl_vae_decode_tiled(const zl_vae *m, const float *z, int h, int w, int tile, int overlap, float *img);

/* Latent normalisation, n values in place: normalize z = (z − shift)·scale (what the DiT sees);
 * denormalize z = z / scale + shift (what the decoder takes). */
void zl_vae_normalize(const zl_vae *m, float *z, size_t n);
void zl_vae_denormalize(const zl_vae *m, float *z, size_t n);

#endif
