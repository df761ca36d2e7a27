/* trainer.h — LoRA training for Z-Image by three routes (see README "Train" and
 * ../shared/spec/training-recipes.md):
 *   base           train on Z-Image (Base); samples at Base settings (30 steps, CFG 4, negative prompt)
 *   turbo-adapter  train on Turbo with a de-distill training adapter added at +1 for every step (as exact
 *                  runtime branches); samples at Turbo settings with the adapter at 0, as the user will run
 *                  the LoRA; the adapter is never saved
 *   turbo-direct   train on Turbo plainly (the control); samples at Turbo settings and at 30 steps
 *   custom         everything explicit
 *
 * Determinism and resume: every random choice of step s (data order, flip, caption dropout, σ, noise) is
 * a function of (seed, s), not of a running RNG, so a run resumed from a checkpoint takes exactly the
 * steps an uninterrupted run takes. A checkpoint holds the LoRA, the AdamW moments and the step; it is
 * written to a temporary folder and renamed into place, so a crash leaves the previous one intact.
 *
 * Files in out/: <name>.safetensors (the final LoRA, F32, ai-toolkit naming, the only .safetensors at the
 * top), train.json (every option, for --resume), loss.csv, loss.png, samples/, checkpoints/step_NNNNNN/
 * (lora.safetensors, state.safetensors, state.json) and checkpoints/latest.
 */
#ifndef ZL_TRAINER_H
#define ZL_TRAINER_H
#include <stdint.h>
#include "gen/sample.h"
#include "train/optim.h"

typedef enum { ZL_ROUTE_BASE = 0, ZL_ROUTE_TURBO_ADAPTER, ZL_ROUTE_TURBO_DIRECT, ZL_ROUTE_CUSTOM, ZL_ROUTE_COUNT } zl_route;
const char *zl_route_name(zl_route r);
int zl_route_parse(const char *s, zl_route *r);

#define ZL_TRAIN_MAX_PROMPTS 16

typedef struct {
    int steps, cfg_on;   /* one validation setting: steps and guidance (diffusers form) */
    float guidance;
    const char *label;
} zl_val_setting;

typedef struct {
    /* what */
    char *model, *data, *out, *adapter, *name, *trigger, *default_caption, *cache;
    zl_route route;
    /* full-parameter training (every weight; the output is a whole transformer) and distillation */
    int full;
    char *teacher, *teacher_lora;   /* teacher model folder (default: --model) and a LoRA merged into it */
    int distill_steps;              /* > 0: trajectory distillation to this many student steps */
    int teacher_substeps;           /* teacher Euler steps per student step (default 4) */
    float teacher_guidance;         /* the teacher's guidance, diffusers form (0: none) */
    /* LoRA */
    int rank, targets, gaussian_init;
    float alpha;
    float lora_dropout;             /* dropout on each LoRA branch's input while training (PEFT semantics); 0: none */
    /* optimisation */
    float lr, min_lr, weight_decay, max_grad_norm, beta1, beta2;
    zl_lr_kind sched;
    int warmup, steps, batch, grad_accum;
    zl_sigma_opts sigma;
    uint64_t seed;
    /* data */
    int resolution, bucket_step, repeats, flip, allow_upscale;
    float caption_dropout;
    /* bookkeeping */
    int save_every, sample_every, keep;
    /* validation */
    char *prompts[ZL_TRAIN_MAX_PROMPTS];
    int nprompts;
    int sample_size;          /* validation image side (default: the resolution) */
    int sample_seed;          /* prompt i uses seed sample_seed + i */
    int sample_steps;         /* > 0: sample at these steps ... */
    float sample_guidance;    /* ... and this guidance (diffusers form) instead of the route's settings */
    char *turbo_model;        /* base route: also sample the LoRA on this Turbo model at 8 steps */
    char *negative;
} zl_train_opts;

void zl_train_default_opts(zl_train_opts *o);
void zl_train_opts_free(zl_train_opts *o);
/* Route defaults (σ sampling, validation settings) filled in where the user gave nothing. */
void zl_train_route_defaults(zl_train_opts *o);
/* train.json <-> options */
char *zl_train_opts_json(const zl_train_opts *o);
int zl_train_opts_from_json(const char *json, zl_train_opts *o);

/* Runs (or, with resume, continues) a training run. Returns 0, 130 when interrupted (checkpoint saved),
 * or -1 with a message. */
int zl_train_run(zl_train_opts *o, int resume);

/* Per-step randomness, stateless: a 64-bit stream for (seed, step, micro, purpose). */
uint64_t zl_train_key(uint64_t seed, int64_t step, int micro, int purpose);

#endif
