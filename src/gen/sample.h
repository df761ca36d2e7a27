/* sample.h — the pieces of flow-matching sampling that do not touch a model: the sigma schedule, the
 * initial noise (bit-identical to torch.randn on the CPU), classifier-free guidance in both conventions, and
 * the sampler update rules (Euler, ComfyUI's res_multistep).
 *
 * Conventions (../shared/spec/zimage.md §6): σ runs from 1 (noise) to 0 (image); the DiT takes t = 1 − σ
 * and its output is the negated velocity, v = −DiT(x, 1 − σ) = dx/dσ; the denoised estimate is x − σ·v.
 */
#ifndef ZL_SAMPLE_H
#define ZL_SAMPLE_H
#include <stddef.h>
#include <stdint.h>

/* sig[0..steps]: σ_i = shift·s_i / (1 + (shift − 1)·s_i), s_i = linspace(1, 1/steps, steps), σ_steps = 0
 * (the official pipeline, current diffusers and ComfyUI's "simple" schedule with AuraFlow shift agree). */
void zl_sigmas(int steps, double shift, float *sig);

/* out[0..n) = torch.randn(n, generator=torch.manual_seed(seed)) in float32 on the CPU, bit for bit:
 * mt19937 seeded with the low 32 bits of seed, 24-bit uniforms, and torch's Box–Muller in blocks of 16
 * (tensors of 16 or more elements; the last block is redrawn when n is not a multiple of 16). For n < 16
 * torch uses a per-element path in double precision; that is reproduced too. Any shape with n elements
 * gives the same values as torch for that shape, since torch fills contiguous memory.
 * The blocks of 16 come in two variants that differ in the last bit of about a third of the values:
 * ZL_NOISE_TORCH is torch's AVX2 kernel, which x86-64 PyTorch uses (ComfyUI and diffusers on a CPU
 * generator); ZL_NOISE_TORCH_SCALAR is its portable kernel (ATEN_CPU_CAPABILITY=default, non-x86). */
typedef enum { ZL_NOISE_TORCH = 0, ZL_NOISE_TORCH_SCALAR } zl_noise_kind;
void zl_torch_randn(uint64_t seed, float *out, size_t n);
void zl_torch_randn_ex(uint64_t seed, float *out, size_t n, zl_noise_kind kind);


/* Guidance. `g` is in the diffusers form (0 = off): pred = pos + g·(pos − neg). The standard form of
 * ComfyUI, A1111, sd.cpp and DiffSynth is cfg = g + 1 (1 = off): pred = neg + cfg·(pos − neg).
 * norm > 0 (the reference pipeline's cfg_normalization): if ‖pred‖ > norm·‖pos‖ (L2 over the whole
 * sample), pred is scaled down to norm·‖pos‖. pred may alias pos. */
void zl_cfg_combine(float *pred, const float *pos, const float *neg, size_t n, float g, float norm);
/* Whether guidance applies at σ: g ≠ 0 and not truncated (trunc ≤ 1 and 1 − σ > trunc turns it off). */
int zl_cfg_active(float g, float trunc, float sigma);

typedef enum { ZL_SAMPLER_EULER = 0, ZL_SAMPLER_RES_MULTISTEP, ZL_SAMPLER_COUNT } zl_sampler_kind;
const char *zl_sampler_name(zl_sampler_kind k);        /* "euler", "res_multistep" */
const char *zl_sampler_display(zl_sampler_kind k);     /* "Euler", "res_multistep" (A1111 style) */
int zl_sampler_parse(const char *s, zl_sampler_kind *k); /* 0, or -1 with a message listing the choices */

/* Sampler state over one trajectory: holds the previous denoised estimate for multistep methods. */
typedef struct {
    zl_sampler_kind kind;
    size_t n;
    float *old_denoised;  /* [n], res_multistep */
    int have_old;
    float old_sigma_down;
} zl_sampler;
int zl_sampler_init(zl_sampler *s, zl_sampler_kind kind, size_t n);
void zl_sampler_free(zl_sampler *s);
/* One step from sig[i] to sig[i+1] given the velocity v (= −DiT output, guidance applied): updates x.
 * v is used as scratch (its contents are undefined afterwards). */
void zl_sampler_step(zl_sampler *s, float *x, float *v, const float *sig, int i);

#endif
