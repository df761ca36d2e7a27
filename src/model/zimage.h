/* zimage.h — the Z-Image transformer (S3-DiT): loading every checkpoint layout, LoRA stacks (merged or
 * as runtime side branches), and the exact forward pass (see ../shared/spec/zimage.md §1–3, §10).
 *
 * Loading accepts a diffusers folder (a model folder holding transformer/, or the transformer/ folder:
 * config.json + shards + index), a diffusers-named single file, or a ComfyUI single file (fused
 * attention.qkv, attention.out, q_norm/k_norm, x_embedder, final_layer; with or without the
 * `model.diffusion_model.` prefix). Stored dtypes F32, BF16, F16, F8 (upcast). The config comes from
 * config.json when present, else from tensor shapes; nothing about the 6B sizes is hard-coded.
 *
 * Weights of the linears are kept as `weight_dtype` (BF16 by default, F32 for exact parity work):
 * a file already in that dtype stays mmapped (zero copy); other files are converted tensor by tensor
 * while the source pages are released, so peak memory is about the converted size plus one tensor.
 */
#ifndef ZL_ZIMAGE_H
#define ZL_ZIMAGE_H
#include "zimage_names.h"
#include "../nn/ops.h"
#include "../lora/lora.h"

typedef struct {
    zl_linear q, k, v, o, w1, w2, w3, ada; /* ada: adaLN_modulation.0, modulated blocks only */
    float *norm_q, *norm_k, *attn_norm1, *attn_norm2, *ffn_norm1, *ffn_norm2;
    int modulated;
} zl_zblock;

typedef struct zl_zimage {
    zl_zimage_config cfg;
    zl_linear x_emb, t_mlp0, t_mlp2, cap_emb, final_ada, final_lin;
    float *cap_norm, *x_pad, *cap_pad;
    zl_zblock *noise_ref, *ctx_ref, *layers;
    zl_dtype weight_dtype;
    const char *naming;       /* "diffusers" or "comfyui" */
    char *path;
    struct zl_st *st;         /* kept open while weights point into it */
    void **owned;             /* buffers to free */
    int nowned, capowned;
    int nowned_loaded;        /* how many of them the load made (the rest belong to applied LoRAs) */
    int lora_merged;          /* some LoRA was merged into the weights (zl_zimage_remove_loras cannot undo it) */
    struct zl_zundo *undo;    /* norm vectors and biases that applied LoRAs changed, with their old values */
    int nundo;
} zl_zimage;

typedef struct {
    zl_dtype weight_dtype;    /* ZL_BF16 (default when 0 is passed as ZL_F64... use zl_zimage_default_opts) */
} zl_zimage_opts;

void zl_zimage_default_opts(zl_zimage_opts *o);
int zl_zimage_load(const char *path, const zl_zimage_opts *o, zl_zimage **out);
void zl_zimage_free(zl_zimage *m);

/* Applies a stack of LoRAs at the given strengths. merge = 1: added into the weights (weights that
 * point into the file are copied first); merge = 0: runtime side branches (exact; LoRA factors are
 * used as they are, LoHa/LoKr/diff as a dense f32 delta). Modules that do not apply make it fail
 * unless `force`; `report` (may be NULL) receives "applied n/m tensors" per file. */
int zl_zimage_apply_loras(zl_zimage *m, zl_lora **loras, const float *strengths, int n, int merge, int force,
                          void (*report)(const char *line));

/* Removes every LoRA applied with merge = 0 (runtime branches, dense deltas, diff_b biases, diffs on norm
 * vectors) and frees what they used, so the model computes exactly what it did when loaded: one load can
 * serve several LoRA stacks in turn (compare). Fails, changing nothing, when a LoRA was merged (merge = 1
 * or DoRA): merged weights cannot be restored bit for bit. */
int zl_zimage_remove_loras(zl_zimage *m);

/* out [16, H, W] = DiT(x [16, H, W], t, cap [L, cap_feat_dim]); t is the model time (1 − σ).
 * H and W must be even. Returns -1 with a message on bad shapes. */
int zl_zimage_forward(zl_zimage *m, const float *x, int H, int W, float t, const float *cap, int L, float *out);

/* One transformer block on x [n, dim] in place (for benchmarks and tests): cs is the RoPE table
 * [n, head_dim/2, 2], cond the adaLN input [adaln] (ignored for unmodulated blocks). ws: scratch for
 * up to ws_tokens tokens from zl_zblock_ws_new, reused across calls (NULL: allocated per call). */
typedef struct zl_zblock_ws zl_zblock_ws;
zl_zblock_ws *zl_zblock_ws_new(const zl_zimage_config *c, int ws_tokens);
void zl_zblock_ws_free(zl_zblock_ws *ws);
int zl_zblock_forward(const zl_zimage_config *c, const zl_zblock *b, float *x, int n, const float *cs, const float *cond,
                      zl_zblock_ws *ws);

#endif
