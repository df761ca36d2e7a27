/* ops.h — the op interface every model is written against. Model code (src/model/) calls only these
 * functions and memcpy; it contains no arithmetic loops, so that a CUDA backend can later supply the
 * same ops. Activations are fp32, row-major; accumulation is fp32 (or wider). Each op has a plain,
 * obviously-correct reference in tests/test_ops.c; the implementations here are the fast ones
 * (OpenMP over rows, BLAS for the matrix products).
 *
 * Shapes are given in comments as [rows, cols]. "n" is a number of tokens (rows).
 */
#ifndef ZL_OPS_H
#define ZL_OPS_H
#include <stddef.h>
#include <stdint.h>
#include "../base/dtype.h"

/* A low-rank runtime side branch on a linear layer: y += scale · (x downᵀ) upᵀ.
 * A branch is trainable when its gradient buffers are set: zl_op_linear_backward then accumulates
 * (+=) the gradients of down and up into d_down [r, in] and d_up [out, r] (NULL: that factor is frozen). */
typedef struct {
    const float *down; /* [r, in] */
    const float *up;   /* [out, r] */
    int r;
    float scale;
    float *d_down;     /* [r, in] gradient of down, accumulated; NULL: frozen */
    float *d_up;       /* [out, r] gradient of up, accumulated; NULL: frozen */
    float dropout;     /* LoRA dropout on the branch input (training only; PEFT's lora_dropout): 0 = none */
    uint64_t drop_key; /* the dropout mask's key (zl_op_dropout_mask); ignored when dropout is 0 */
} zl_branch;

/* The LoRA dropout mask (PEFT's lora_dropout: dropout on the branch's input x before down, inverted
 * scaling; the frozen path never sees it): element (i, j) of an op call's input x [n, cols] is kept and
 * scaled by 1/(1 − p) when u(key, i·cols + j) >= p, else zeroed, with u a 16-bit uniform from a hash (four per 64-bit hash of (key, e/4), e = i·cols + j; so P counts
 * in steps of 1/65536).
 * The mask is a pure function of (key, i, j) and is never stored: the forward, the backward's
 * recomputation and the backward draw the same one as long as they pass the same key and the same rows
 * (i counts from the first row of the call). A branch with dropout > 0 computes
 *   y += scale · ((x∘M) downᵀ) upᵀ
 * and its backward uses x∘M for d_up and d_down and masks its dx term. Writes rows [i0, i0 + rows) of
 * M (values 0 or 1/(1 − p)) into m [rows, cols]; p in [0, 1). For tests and plain references. */
void zl_op_dropout_mask(float *m, uint64_t key, float p, int i0, int rows, int cols);

/* A linear layer's weight W [out, in] stored F32 or BF16 (F16 works too) (owned or pointing into an mmapped file),
 * optional bias [out] (f32), and runtime adapters: low-rank branches and/or one dense f32 delta
 * [out, in] (for LoHa/LoKr/diff kept unmerged). */
typedef struct {
    zl_dtype dtype;          /* ZL_F32 or ZL_BF16 */
    const void *w;
    int out, in;
    const float *bias;       /* NULL: none */
    const zl_branch *branch; /* nbranch entries */
    int nbranch;
    const float *delta;      /* NULL: none; scaled already */
    float *dw;               /* [out, in] gradient of W (F32 weights only), accumulated; NULL: W frozen */
    float *db;               /* [out] gradient of the bias, accumulated; NULL: frozen */
} zl_linear;

/* y [n, out] = x [n, in] · Wᵀ + bias + Σ branches + x·deltaᵀ. y and x must not alias.
 * BF16 weights are converted in bounded tiles (never a full f32 copy of W). */
void zl_op_linear(float *y, const float *x, const zl_linear *L, int n);

/* y [n, d] = x · rsqrt(mean(x²) + eps) · w   (w may be NULL: no weight). y may alias x. */
void zl_op_rmsnorm(float *y, const float *x, const float *w, int n, int d, float eps);
/* y [n, d] = (x − mean) · rsqrt(var + eps)   (LayerNorm without affine; biased variance). y may alias x. */
void zl_op_layernorm(float *y, const float *x, int n, int d, float eps);

/* y [n, d] = x · (1 + scale[d]). y may alias x. */
void zl_op_modulate(float *y, const float *x, const float *scale, int n, int d);
/* x [n, d] += tanh(gate[d]) · y   (gate NULL: x += y). */
void zl_op_gated_residual(float *x, const float *y, const float *gate, int n, int d);
/* y = silu(a) · b, n elements. y may alias a or b. */
void zl_op_silu_mul(float *y, const float *a, const float *b, size_t n);
/* y = silu(x), n elements. y may alias x. */
void zl_op_silu(float *y, const float *x, size_t n);
/* y = a + b, n elements. */
void zl_op_add(float *y, const float *a, const float *b, size_t n);
/* y += alpha · x, n elements (src/nn/ops_axpy.c). */
void zl_op_axpy(float *y, float alpha, const float *x, size_t n);

/* Sinusoidal timestep embedding, [cos | sin] order: e[k] = cos(t·f_k), e[half+k] = sin(t·f_k),
 * f_k = exp(−ln(max_period)·k/half), half = dim/2, computed in float32 as PyTorch does; an odd dim gets a
 * trailing 0. */
void zl_op_timestep_embedding(float *e, float t, int dim, float max_period);

/* RoPE tables. cs [n, hd/2, 2] holds (cos, sin) per token and pair.
 * 3-axis (Z-Image): ids [n, 3]; axis a covers axes_dims[a] dims (axes_dims[a]/2 pairs) with
 * freq_k = theta^(−2k/axes_dims[a]); angles computed in double and rounded to float before cos/sin
 * (as the reference's .float() before torch.polar). */
void zl_rope_table_3axis(float *cs, const int32_t *ids, int n, const int *axes_dims, double theta);
/* 1-axis (Qwen3): positions pos0..pos0+n−1, freq_k = theta^(−2k/hd). (HF computes these frequencies
 * in float32; the angles differ by ~3e-5 rad at position 512.) */
void zl_rope_table_1d(float *cs, int pos0, int n, int hd, double theta);
/* Applies RoPE in place to x [n, heads, hd] using cs [n, hd/2, 2].
 * interleaved: pairs (2j, 2j+1)  (Z-Image DiT);  half-split: pairs (j, j + hd/2)  (Qwen3, rotate_half). */
void zl_op_rope(float *x, const float *cs, int n, int heads, int hd, int interleaved);

/* Attention without a T×T matrix in memory (tiled, online softmax).
 * q [nq, hq·hd], k/v [nk, hkv·hd], o [nq, hq·hd]; head h uses kv head h / (hq/hkv) (GQA).
 * scale 1/sqrt(hd); causal: query i sees keys j <= i + (nk − nq).
 * lse (optional, [hq, nq]) receives the log-sum-exp of each query row's scaled scores (for backward).
 * A query row that sees no key (causal with nq > nk) gets o = 0 and lse = −inf. */
void zl_op_attention(float *o, const float *q, const float *k, const float *v, int nq, int nk, int hq, int hkv,
                     int hd, int causal, float *lse);

/* Z-Image patchify: x [C, H, W] -> tokens [(H/p)·(W/p), p·p·C], feature index (ph·p + pw)·C + c,
 * token index h·(W/p) + w. unpatchify is the exact inverse. */
void zl_op_patchify(float *tok, const float *x, int C, int H, int W, int p);
void zl_op_unpatchify(float *x, const float *tok, int C, int H, int W, int p);

/* Copies row `src` [d] into rows [from, to) of x [*, d] (pad-token fill). */
void zl_op_fill_rows(float *x, const float *src, int from, int to, int d);

/* bf16 compute for BF16-weight linears (process-wide; default off; set it before running a model, not
 * while op calls run on other threads). When on, zl_op_linear with L->dtype == ZL_BF16 rounds x to bf16
 * (nearest even) before the product x·Wᵀ, which then runs on bf16 dot-product hardware (AVX512_BF16,
 * through oneDNN) with fp32 accumulation and fp32 output: about twice the fp32 speed, at a relative
 * error of about 2^-9 per element of x (subnormal bf16 values may count as 0). Bias, branches and the
 * delta stay fp32 (with the unrounded x). Off: the exact fp32 product of x and the bf16 weights.
 * Where no bf16 kernel can run (no AVX512_BF16, zlora built without oneDNN), x is still rounded, so
 * results do not depend on the machine beyond fp32 summation order. F32/F16 weights are never affected.
 * The mode also applies to zl_op_attention: S = q·kᵀ with q and k rounded to bf16, and P·v with the
 * probabilities P (after exp, fp32) and v rounded to bf16, both with fp32 accumulation (vdpbf16ps where
 * the CPU has AVX512_BF16, ~2× the fp32 speed at 4096 tokens; else the same roundings on the fp32 path);
 * the running max and sum, lse and the output accumulation stay fp32. Output error against fp32 attention
 * is a few 1e-3 relative (mostly the rounding of q and k). Off: attention is bit for bit the fp32 op.
 * In the backward the mode applies to the input gradient of BF16 linears (zl_op_linear_backward:
 * dx = bf16(dy)·W) and to zl_op_attention_backward (bf16 operands, fp32 accumulation; see there). */
void zl_ops_set_bf16_gemm(int on);
int zl_ops_bf16_gemm(void);

/* Threads used by the ops (OpenMP and OpenBLAS); 0 = OpenMP default. */
void zl_ops_set_threads(int n);
/* Small models (width < 1024) on one thread unless zl_ops_set_threads(n > 0) or OMP_NUM_THREADS chose a
 * count: their ops are too short for a parallel region to pay, and on a busy machine each region can cost
 * a scheduler time slice (measured: a dim-256 DiT, 32 steps, 2 cores under load: 8.3 s on two threads,
 * 0.5 s on one). */
void zl_ops_auto_threads(int width);

/* ================================================================== backward
 * The backward of every op above that a trainable model needs. Each takes dy, the gradient of a scalar
 * loss with respect to the op's output, and what the forward read, and produces the gradients of the
 * forward's inputs. Conventions:
 *   - activation gradients (dx, dq, ...) are written (overwritten), unless the op says otherwise;
 *   - parameter gradients (dw, dscale, dgate, a branch's d_down / d_up) are accumulated (+=), so that a
 *     trainer sums over samples by calling again, and zeroes them itself; NULL means "not wanted";
 *   - everything runs in fp32, except the input gradient of a BF16-weight linear and the attention
 *     backward when the bf16 compute mode of zl_ops_set_bf16_gemm is on; per-column sums over rows (dw,
 *     dscale, dgate) are accumulated in double.
 * Ops whose backward is not listed: zl_op_add (dy flows unchanged to both inputs), zl_op_axpy
 * (y += αx: dx += α·dy, i.e. zl_op_axpy again), zl_op_fill_rows (the filled rows' gradient belongs
 * to the frozen pad token: dropped), zl_op_timestep_embedding and the RoPE tables (t and positions
 * are not trained). The timestep MLP is two linears and a SiLU.
 * Each backward is checked against central finite differences of a double-precision forward (and of
 * the fp32 op itself) in tests/test_ops_grad.c. */

/* Linear (W, bias and delta frozen; W may be BF16): with g = dy [n, out],
 *   dx [n, in] = g·W + Σ_b scale_b·(g·up_b)·down_b + g·delta     (accumulate: dx += ...; dx NULL: skipped)
 *   every branch b with d_up:   d_up   [out, r] += scale_b · gᵀ·(x·down_bᵀ)
 *   every branch b with d_down: d_down [r, in]  += scale_b · (g·up_b)ᵀ·x
 * (a branch with dropout uses x∘M for x above and adds (scale_b·(g·up_b)·down_b)∘M to dx; M as in the forward)
 * BF16 W is converted in bounded tiles as in the forward (never a full f32 copy); for n <= 16 rows of W
 * are read directly. In the bf16 compute mode (BF16 W only) the product g·W uses g rounded to bf16, on
 * bf16 dot-product hardware through oneDNN where it can run (≈ 2× the fp32 speed; as PyTorch's bf16
 * backward, whose gradients are bf16), else the same rounding and the fp32 path; the adapters' terms and
 * the parameter gradients use the unrounded g. x is read only for the branch gradients and only before dx is written, so dx
 * may alias x (never dy). x may be NULL when no branch is trainable. */
void zl_op_linear_backward(float *dx, const float *dy, const float *x, const zl_linear *L, int n, int accumulate);

/* RMSNorm y = x·r·w, r = rsqrt(mean(x²) + eps), per row of x [n, d]:
 *   dx = r·(w∘dy) − (r³/d)·x·Σ_j(w∘dy∘x)_j      dw [d] += Σ_rows dy∘x·r   (w NULL: no weight, dw ignored)
 * dx may alias dy. */
void zl_op_rmsnorm_backward(float *dx, float *dw, const float *dy, const float *x, const float *w, int n, int d, float eps);
/* LayerNorm without affine, y = (x − mean)·r:  dx = r·(dy − mean(dy) − y·mean(dy∘y)). dx may alias dy. */
void zl_op_layernorm_backward(float *dx, const float *dy, const float *x, int n, int d, float eps);

/* Modulation y = x·(1 + scale):  dx = dy·(1 + scale) (dx NULL: skipped), dscale [d] += Σ_rows dy∘x
 * (NULL: skipped). dx may alias dy. */
void zl_op_modulate_backward(float *dx, float *dscale, const float *dy, const float *x, const float *scale, int n, int d);
/* Gated residual x_out = x + tanh(gate)·y. Given dx = the gradient of x_out (which is also the gradient of x:
 * the caller keeps it): dy = tanh(gate)·dx (gate NULL: dy = dx), dgate [d] += (1 − tanh²(gate))·Σ_rows dx∘y
 * (NULL: skipped). dy may alias y (not dx). */
void zl_op_gated_residual_backward(float *dy, float *dgate, const float *dx, const float *y, const float *gate, int n, int d);
/* SwiGLU y = silu(a)·b, silu(a) = a·σ(a):  da = dy·b·σ(a)·(1 + a·(1 − σ(a))), db = dy·silu(a).
 * Either output may be NULL; any of da, db, dy, a, b may alias each other (elementwise). */
void zl_op_silu_mul_backward(float *da, float *db, const float *dy, const float *a, const float *b, size_t n);
/* y = silu(x): dx = dy·σ(x)·(1 + x·(1 − σ(x))). dx may alias dy or x. */
void zl_op_silu_backward(float *dx, const float *dy, const float *x, size_t n);

/* RoPE is a rotation per pair, so its backward is the inverse rotation (angle −θ): applied in place to
 * dx [n, heads, hd] with the forward's table cs and layout. */
void zl_op_rope_backward(float *dx, const float *cs, int n, int heads, int hd, int interleaved);

/* Attention backward, flash-style (FlashAttention-2's algorithm): the probabilities are recomputed block
 * by block from q, k and the forward's lse [hq, nq] (P = exp(scale·q·kᵀ − lse)), never a T×T matrix:
 *   D_i = Σ dO_i∘O_i,  dS = P∘(dO·vᵀ − D),  dq = scale·dS·k,  dk = scale·dSᵀ·q,  dv = Pᵀ·dO
 * q, o, dout, dq [nq, hq·hd]; k, v, dk, dv [nk, hkv·hd] (written; GQA: a kv head sums over its query
 * heads, a kv head no query head uses gets 0). Same causal rule and scale as the forward; rows with
 * lse = −inf (no visible key) contribute nothing. Keys are split over threads for dk, dv and queries
 * for dq (two passes, no atomics, deterministic); scratch is O(threads·(hd + 64)·64) floats, and
 * without it a serial row-at-a-time version runs. In the bf16 compute mode (zl_ops_set_bf16_gemm) every
 * product takes bf16 operands with fp32 accumulation, as the forward's: q, k, v and dO rounded to bf16,
 * P and dS rounded before the products they enter (dv = Pᵀ·dO, dq and dk); lse, D (from the unrounded
 * dO and o) and the exponentials stay fp32. On an AVX512_BF16 CPU this runs on vdpbf16ps (≈ 2× the fp32
 * kernel), elsewhere as the same roundings on the fp32 kernels; gradients are off the fp32 mode's by a
 * few 1e-3 relative. */
void zl_op_attention_backward(float *dq, float *dk, float *dv, const float *dout, const float *q, const float *k,
                              const float *v, const float *o, const float *lse, int nq, int nk, int hq, int hkv,
                              int hd, int causal);

/* Patchify and unpatchify are permutations: each one's backward is the other (names for clarity). */
void zl_op_patchify_backward(float *dx, const float *dtok, int C, int H, int W, int p);
void zl_op_unpatchify_backward(float *dtok, const float *dx, int C, int H, int W, int p);

/* Flow-matching loss: returns mean((y − target)²) over n elements (summed in double) and, when dy is not
 * NULL, writes dy = gscale · 2(y − target)/n, the gradient of gscale·loss (dy may alias y or target). */
double zl_op_mse_loss(float *dy, const float *y, const float *target, size_t n, float gscale);

#endif
