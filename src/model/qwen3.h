/* qwen3.h — the Qwen3 text encoder as Z-Image uses it (../shared/spec/zimage.md §4): token ids ->
 * hidden_states[-2], the residual stream after decoder layer L−2 (0-based) of L, WITHOUT the final norm.
 *
 * Model: token embedding; per layer h = x + o(Attn(RMSNorm(x))), x' = h + down(SiLU(gate(n)) · up(n)) with
 * n = RMSNorm(h); attention with q_norm/k_norm (RMSNorm over each head) before RoPE, half-split RoPE
 * (rotate_half) at positions 0..n−1, causal, grouped-query (head h uses kv head h / (heads/kv_heads)),
 * scale 1/sqrt(head_dim), no biases.
 *
 * Loading accepts the HF `text_encoder/` folder (config.json + shards + *.index.json), a model folder
 * holding `text_encoder/`, an index file, or one .safetensors file (ComfyUI's `qwen_3_4b.safetensors`).
 * The tensor-name prefix is found from the `embed_tokens.weight` tensor (none, `model.`,
 * `transformer.model.`, `text_encoders.qwen3_4b.transformer.model.`, ...). The config comes from
 * config.json when there is one (hidden_size, num_hidden_layers, num_attention_heads,
 * num_key_value_heads, head_dim, intermediate_size, rms_norm_eps, rope_theta, vocab_size), else from the
 * tensor shapes (layers = the number of `layers.{i}` blocks in the file; rms_norm_eps 1e-6 and rope_theta
 * 1e6, the Qwen3 defaults). Nothing about the 4B sizes is hard-coded.
 *
 * Only the layers that hidden_states[-2] needs (0..L−2) are looked at: layer L−1, `norm` and `lm_head`
 * are never read (they may be absent). Linear weights are kept as `weight_dtype` (BF16 by default,
 * F32 for parity work): a file already in that dtype stays mmapped (zero copy); otherwise each tensor is
 * converted and its source pages released. The embedding table follows the same rule, except that a
 * BF16/F16 table with F32 weights requested stays in the file (rows are widened exactly when looked up).
 */
#ifndef ZL_QWEN3_H
#define ZL_QWEN3_H
#include <stdint.h>
#include "../nn/ops.h"

typedef struct {
    int hidden, n_layers, n_heads, n_kv_heads, head_dim, ffn, vocab;
    float eps;
    double rope_theta;
} zl_qwen3_config;

typedef struct {
    zl_linear q, k, v, o, gate, up, down;
    float *in_norm, *post_norm, *q_norm, *k_norm; /* [hidden], [hidden], [head_dim], [head_dim] */
} zl_qwen3_layer;

typedef struct zl_qwen3 {
    zl_qwen3_config cfg;
    int n_run;                /* layers run: n_layers − 1 (the output is hidden_states[-2]) */
    zl_qwen3_layer *layers;   /* n_run entries */
    const void *embed;        /* [vocab, hidden] in embed_dtype */
    zl_dtype embed_dtype;
    zl_dtype weight_dtype;
    char *prefix;             /* tensor-name prefix found in the file */
    char *path;               /* what was opened */
    int have_config_json;
    struct zl_st *st;         /* kept open while weights point into it */
    void **owned;
    int nowned, capowned;
} zl_qwen3;

typedef struct {
    zl_dtype weight_dtype;    /* ZL_BF16 (default) or ZL_F32 */
} zl_qwen3_opts;

void zl_qwen3_default_opts(zl_qwen3_opts *o);
/* Loads the encoder (see above). o NULL: defaults. Refuses other checkpoints (a DiT, a VAE, a LoRA),
 * missing tensors and shapes that disagree with the config, with a message naming the file. */
int zl_qwen3_load(const char *path, const zl_qwen3_opts *o, zl_qwen3 **out);
void zl_qwen3_free(zl_qwen3 *m);

/* out [n, hidden] = hidden_states[-2] for one prompt (batch 1, positions 0..n−1, causal; no padding:
 * pass only the real tokens). ids must lie in [0, vocab). Returns -1 with a message on bad input. */
int zl_qwen3_encode(zl_qwen3 *m, const int32_t *ids, int n, float *out);

/* Several prompts of different lengths, each encoded on its own (what HF computes for a right-padded
 * batch with its attention mask, keeping only the real tokens): out[i] [lens[i], hidden]. */
int zl_qwen3_encode_batch(zl_qwen3 *m, const int32_t *const *ids, const int *lens, int count, float *const *out);

#endif
