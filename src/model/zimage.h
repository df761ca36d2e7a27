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

/* Gradients of a block's norm weights, accumulated by the backward (+=); each NULL: that weight is frozen. */
typedef struct {
    float *norm_q, *norm_k, *attn_norm1, *attn_norm2, *ffn_norm1, *ffn_norm2; /* [head_dim] ×2, [dim] ×4 */
} zl_zblock_grads;

typedef struct {
    zl_linear q, k, v, o, w1, w2, w3, ada; /* ada: adaLN_modulation.0, modulated blocks only */
    float *norm_q, *norm_k, *attn_norm1, *attn_norm2, *ffn_norm1, *ffn_norm2;
    int modulated;
    zl_zblock_grads grad;                  /* all NULL after loading (nothing trainable) */
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

/* ------------------------------------------------------------------ training (zimage_grad.c)
 *
 * What is trained is marked in the model itself: a runtime LoRA branch (zl_branch, nn/ops.h) is trainable
 * when its d_down / d_up are set, a block's norm weight when the matching pointer of its `grad` is set.
 * Any linear of the model may carry trainable branches (blocks, embedders, t-embedder, final layer).
 * Gradients always accumulate (+=): the trainer zeroes them before each batch. Base weights stay frozen
 * (and may be BF16: dx = dy·W runs through bounded f32 tiles, never a full f32 copy).
 */

/* Gives the runtime branches that zl_zimage_apply_loras (merge = 0) made from LoRA l their gradient
 * buffers in g, a LoRA of the same shape as l (for example the same file loaded again, data zeroed):
 * the branch from module i gets d_down = g's lora_down of module i and d_up = g's lora_up at the same row
 * offset (fused qkv modules make three branches sharing one down: their gradients add up there).
 * Gradients are those of the stored factors (the branch scale, strength·alpha/rank, included).
 * Returns the number of branches given buffers, or -1 when g does not match l. */
int zl_zimage_lora_grads(zl_zimage *m, const zl_lora *l, zl_lora *g);
/* Sets the strength of the runtime branches made from LoRA l (merge = 0; LoRA modules): 0 switches them
 * off exactly, 1 is full strength (training's adapter is off while sampling). Returns the number of
 * branches changed. */
int zl_zimage_lora_set_strength(zl_zimage *m, const zl_lora *l, float strength);
/* LoRA dropout (training only) on the runtime branches made from LoRA l: p > 0 masks each branch's input
 * (zl_op_dropout_mask) with a key derived from (key, module): one key per sample and step gives every
 * module its own mask, the same in the forward, the recomputation and the backward; the branches of one
 * fused qkv module share theirs (PEFT's dropout on the fused linear's input). p = 0 switches it off exactly
 * (sampling and inference never run with it). Returns the number of branches changed. */
int zl_zimage_lora_set_dropout(zl_zimage *m, const zl_lora *l, float p, uint64_t key);

/* Full-parameter training: every linear weight and bias becomes a writable F32 copy with a gradient
 * buffer (zl_linear.dw/db), and every block norm weight gets one (zl_zblock.grad); the caption norm and
 * the pad tokens stay frozen. Returns the parameter count and a malloc'd list (name in diffusers naming,
 * values, gradients: both owned by the model), or -1. The model must have no LoRA branches. */
typedef struct {
    char name[144];
    float *p, *g;
    size_t n;
} zl_param;
int zl_zimage_full_params(zl_zimage *m, zl_param **out);
/* Writes the model as one diffusers-named safetensors file (F32 or BF16), every tensor. */
int zl_zimage_save(zl_zimage *m, const char *path, zl_dtype dtype);

/* The backward of zl_zblock_forward, by recomputation (gradient checkpointing at block granularity):
 * re-runs the block's forward from its saved input x [n, dim] (read only), keeping what the backward
 * needs, then backpropagates:
 *   dx [n, dim]    in: the gradient of the block's output; out: the gradient of its input (in place);
 *   dcond [adaln]  += the gradient of cond (modulated blocks; NULL: not wanted);
 * and accumulates the gradients of every trainable branch of the block's linears and of the norm
 * weights in b->grad. cs, cond as for zl_zblock_forward. ws: from zl_zblock_bws_new for at least n
 * tokens, reused across calls and blocks (NULL: allocated per call). Memory: 11·n·dim + 3·n·ffn floats,
 * about one block's activations (1.2 GB at 4160 tokens of the 6B model). Returns -1 when out of memory. */
typedef struct zl_zblock_bws zl_zblock_bws;
zl_zblock_bws *zl_zblock_bws_new(const zl_zimage_config *c, int ws_tokens);
void zl_zblock_bws_free(zl_zblock_bws *ws);
int zl_zblock_backward(const zl_zimage_config *c, const zl_zblock *b, const float *x, float *dx, int n,
                       const float *cs, const float *cond, float *dcond, zl_zblock_bws *ws);
/* The two halves of zl_zblock_backward, for callers that can keep one block's activations (ws required,
 * for at least n tokens). zl_zblock_forward_save runs the block's forward from x [n, dim] (read only)
 * into ws, keeping what the backward needs, and writes the block's output to y [n, dim] (NULL: not
 * formed; y must not alias x). zl_zblock_backward_saved then does what zl_zblock_backward does after its
 * recomputation, reading ws as zl_zblock_forward_save left it (same b, x, n, cs, cond; ws untouched in
 * between). zl_zblock_backward = zl_zblock_forward_save (y NULL) + zl_zblock_backward_saved; the pair
 * without a separate forward is a block's training step without recomputation (what autograd does by
 * keeping the activations). Return -1 when ws is missing or too small. */
int zl_zblock_forward_save(const zl_zimage_config *c, const zl_zblock *b, const float *x, float *y, int n,
                           const float *cs, const float *cond, zl_zblock_bws *ws);
int zl_zblock_backward_saved(const zl_zimage_config *c, const zl_zblock *b, const float *x, float *dx, int n,
                             const float *cs, const float *cond, float *dcond, zl_zblock_bws *ws);

/* One sample's forward and backward for training: out = DiT(x [16, H, W], t, cap [L, cap_feat_dim]) exactly
 * as zl_zimage_forward computes it, *loss = mean((out − target)²) over the 16·H·W elements (flow matching:
 * target = x0 − noise, t = 1 − σ), and the gradients of gscale·loss accumulated into every trainable
 * parameter of the model. A batch is a sum of calls, one per sample, with gscale = 1/batch.
 * Memory stays bounded: the forward stores only the input of each block that the backward will visit
 * ([n, dim] each) and one block's activations are recomputed at a time in the backward. Blocks are
 * visited only when something trainable lies at or before them (LoRA on the main layers only: the
 * refiners are never backpropagated). out (may be NULL) receives the model output. */
int zl_zimage_forward_backward(zl_zimage *m, const float *x, int H, int W, float t, const float *cap, int L,
                               const float *target, float gscale, float *loss, float *out);

#endif
