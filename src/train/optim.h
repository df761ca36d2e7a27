/* optim.h — the optimisation side of training: σ (noise level) sampling with its loss weight, AdamW with
 * fp32 moments, global-norm gradient clipping and learning-rate schedules. Everything is deterministic
 * given the RNG state, which checkpoints save (see ../shared/spec/training-recipes.md §2–3).
 *
 * σ sampling (x_σ = (1 − σ)·x0 + σ·ε, model time t = 1 − σ):
 *   uniform       σ ~ U(0, 1)                                   (musubi's argparse default)
 *   logit-normal  σ = sigmoid(mean + std·N(0,1))                (ai-toolkit "sigmoid", SD3's logit_normal)
 *   shift         σ = s·u / (1 + (s − 1)·u), u = sigmoid(N(0,1)) (musubi "shift", SimpleTuner's default with s 3)
 *   weighted      σ ~ U(0, 1), loss × w(σ): a bell over high noise in the manner of ai-toolkit's "weighted"
 *                 table (interpolated through the values the spec lists: 0.45 at σ 0, 0.58 at 0.05, 0.72 at
 *                 0.2, 0.93 at 0.5, 1.44 at 0.8, 1.52 at 0.876, 0.91 at 1; renormalised to mean 1)
 * σ is kept inside [sigma_min, sigma_max] (default [0.001, 1]) by clamping.
 */
#ifndef ZL_OPTIM_H
#define ZL_OPTIM_H
#include <stddef.h>
#include <stdint.h>
#include "base/base.h"

typedef enum { ZL_SIGMA_UNIFORM = 0, ZL_SIGMA_LOGIT_NORMAL, ZL_SIGMA_SHIFT, ZL_SIGMA_WEIGHTED, ZL_SIGMA_COUNT } zl_sigma_kind;

typedef struct {
    zl_sigma_kind kind;
    float mean, std;   /* logit-normal */
    float shift;       /* shift */
    float sigma_min, sigma_max;
} zl_sigma_opts;

void zl_sigma_default_opts(zl_sigma_opts *o); /* shift 3 (the Z-Image scheduler's), mean 0, std 1 */
int zl_sigma_parse(const char *name, zl_sigma_kind *k);
const char *zl_sigma_name(zl_sigma_kind k);
/* Draws σ and its loss weight (1 except for `weighted`). */
float zl_sigma_sample(const zl_sigma_opts *o, zl_rng *rng, float *weight);
/* The `weighted` scheme's loss weight at σ (mean 1 over U(0, 1)). */
float zl_sigma_weight(float sigma);

typedef enum { ZL_LR_CONSTANT = 0, ZL_LR_WARMUP, ZL_LR_COSINE, ZL_LR_COUNT } zl_lr_kind;
typedef struct {
    zl_lr_kind kind;
    float lr;          /* peak */
    int warmup;        /* linear warmup steps (warmup, cosine) */
    int total;         /* steps (cosine decays to min_lr at `total`) */
    float min_lr;
} zl_lr_sched;
int zl_lr_parse(const char *name, zl_lr_kind *k);
const char *zl_lr_name(zl_lr_kind k);
/* The learning rate for step `step` (0-based). */
float zl_lr_at(const zl_lr_sched *s, int step);

/* AdamW over a set of parameter tensors (decoupled weight decay, bias-corrected moments in fp32). */
typedef struct {
    float beta1, beta2, eps, weight_decay;
    int64_t t;      /* steps taken */
} zl_adamw;
void zl_adamw_default(zl_adamw *o); /* 0.9, 0.999, 1e-8, wd 0.01 */
/* One update of p [n] with gradient g [n] and moments m, v [n] at learning rate lr; t must already count
 * this step (call zl_adamw_begin first). */
void zl_adamw_update(const zl_adamw *o, float lr, float *p, const float *g, float *m, float *v, size_t n);
static inline void zl_adamw_begin(zl_adamw *o) { o->t++; }

/* Global L2 norm of several gradient tensors; scales them all to max_norm when above (max_norm > 0).
 * Returns the norm before clipping. */
double zl_clip_grad_norm(float *const *g, const size_t *n, int count, double max_norm);

#endif
