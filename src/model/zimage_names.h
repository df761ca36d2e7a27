/* zimage_names.h — the Z-Image (S3-DiT) module set: configuration, canonical (diffusers) module names
 * with their weight shapes, and the renames between diffusers and ComfyUI/"native" checkpoint naming.
 *
 * Canonical names are diffusers' without a prefix: "layers.3.attention.to_q", "all_x_embedder.2-1",
 * "noise_refiner.0.feed_forward.w2". The ComfyUI fused projection is named "<block>.attention.qkv"
 * (rows q | k | v, each `dim`). Nothing here assumes the 6B sizes: a config describes any width.
 */
#ifndef ZL_ZIMAGE_NAMES_H
#define ZL_ZIMAGE_NAMES_H
#include <stdint.h>

typedef struct {
    int dim;            /* hidden width (3840) */
    int n_layers;       /* main blocks (30) */
    int n_refiner;      /* noise_refiner and context_refiner blocks each (2) */
    int n_heads;        /* dim / head_dim (30) */
    int head_dim;       /* sum(axes_dims) (128) */
    int ffn;            /* int(dim / 3 * 8) (10240) */
    int cap_feat_dim;   /* caption feature width (2560) */
    int adaln;          /* min(dim, 256) */
    int t_mid;          /* t-embedder hidden width (1024) */
    int patch_dim;      /* patch*patch*in_channels (64) */
    int in_channels;    /* 16 */
    int patch;          /* 2 */
    int axes_dims[3];   /* RoPE axes (32, 48, 48) */
    int axes_lens[3];   /* (1536, 512, 512) */
    float rope_theta;   /* 256 */
    float norm_eps;     /* 1e-5 */
    float t_scale;      /* 1000 */
} zl_zimage_config;

void zl_zimage_default_config(zl_zimage_config *c);

typedef enum { ZL_MOD_LINEAR, ZL_MOD_VECTOR } zl_module_type;

typedef struct {
    char name[96];      /* canonical module name, without ".weight" */
    zl_module_type type;
    int out, in;        /* linear: weight [out, in]; vector: [out], in = 0 */
    int has_bias;
} zl_zimage_module;

/* Enumerates the module set of a config (linears and norm/pad vectors). Returns the count and a
 * malloc'd array in *out. */
int zl_zimage_modules(const zl_zimage_config *c, zl_zimage_module **out);

/* Maps a module name in any Z-Image naming (dotted: diffusers or ComfyUI/native, with the prefix
 * already removed) to canonical form written into `canon` (size >= 128). Returns 1 when the name is the
 * fused "<block>.attention.qkv" (canon holds that fused name), 0 for a plain module, -1 when the name
 * has no Z-Image form. Renames: attention.out→attention.to_out.0, q_norm→norm_q, k_norm→norm_k,
 * x_embedder→all_x_embedder.2-1, final_layer.→all_final_layer.2-1. */
int zl_zimage_canonical(const char *name, char *canon);

/* The ComfyUI/native spelling of a canonical (or fused) name, written into `out` (size >= 128). */
void zl_zimage_native(const char *canon, char *out);

#endif

/* Converts a kohya/LyCORIS underscored module name ("layers_0_attention_to_q", "all_x_embedder_2-1",
 * "final_layer_linear") to its dotted form in `out` (size >= 128). Returns 0 on success, -1 when the
 * name is not a Z-Image module in underscored form. The result may still need zl_zimage_canonical. */
int zl_zimage_from_underscored(const char *name, char *out);
