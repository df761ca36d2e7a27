/* compare.h — the validation lab behind `zlora compare`: a matrix of seeds × prompts × configurations
 * (a configuration = a model, a LoRA stack with strengths, and sampling settings), generated with the
 * generate API, scored with score.h, and written as cell PNGs, labelled grids, metrics.json/.csv and
 * report.html. See README.md "Compare" for the experiments, the metrics and the flags.
 *
 * Efficiency: the caption features of every prompt (and negative prompt) are computed once per text
 * encoder, through the feature cache (the encoder is loaded at most once and freed before any DiT);
 * configurations that share a model share one loaded DiT and VAE; LoRA stacks are applied as runtime
 * branches and removed exactly afterwards (zl_zimage_remove_loras), so one load serves every stack; the
 * noise of a cell is torch.randn of its seed, so cells of one seed and prompt differ only by configuration.
 * A cell is therefore bit-identical to `zlora generate --lora-mode runtime` with the same settings (and to
 * `zlora generate --from` the cell), and a no-LoRA cell to plain `zlora generate`.
 *
 * Metrics (per cell, from the PNGs as `zlora score` reads them): sharpness and hf_ratio; against the
 * configuration's baseline cell of the same prompt and seed, difference and SSIM. Per configuration:
 * means, the LoRA's effect (mean difference from the baseline, on trigger and other prompts), the
 * sharpness ratio against another configuration (e.g. 8 against 30 steps: distillation drift), and the
 * retention against another configuration (e.g. Turbo against Base: the share of the effect that
 * survives). Flags compare these with thresholds (zl_cmp_thresholds).
 */
#ifndef ZL_COMPARE_H
#define ZL_COMPARE_H
#include <stdint.h>
#include <stdio.h>
#include "gen/generate.h"

typedef struct {
    char *path;
    float strength;
} zl_cmp_lora;

typedef struct {
    char *name;          /* unique; the grids' row label and the tables' first column */
    int model;           /* index into zl_cmp_spec.models */
    zl_cmp_lora *loras;  /* the stack, applied in this order */
    int nlora;
    zl_gen_params p;     /* steps, guidance (diffusers form: standard cfg − 1), cfg_norm, cfg_trunc, sampler, noise */
    int shift_set;       /* p.shift was given; else the model's scheduler shift */
    char *negative;      /* used when guidance is on */
    char *baseline;      /* NULL: automatic (see zl_cmp_resolve); "": none; else a configuration's name */
    char *sharpness_vs;  /* NULL or a name: sharp_ratio = mean sharpness / that configuration's */
    char *retention_vs;  /* NULL or a name: retention = trigger-prompt effect / that configuration's */
} zl_cmp_config;

typedef struct {
    double blurry;       /* blurry_at_8: sharp_ratio < blurry                                   (0.7)  */
    double not_learning; /* not_learning: a LoRA's effect on trigger prompts < not_learning      (0.02) */
    double bleeding;     /* bleeding: effect on other prompts > bleeding × trigger-prompt effect (0.5)  */
    double retention;    /* low_retention: retention < retention                                 (0.5)  */
} zl_cmp_thresholds;

enum { ZL_CMP_BLURRY = 1, ZL_CMP_NOT_LEARNING = 2, ZL_CMP_BLEEDING = 4, ZL_CMP_LOW_RETENTION = 8 };

typedef struct {
    char *experiment;    /* its name, for the report */
    char **models;       /* model folders (diffusers layout), distinct */
    int nmodel;
    zl_cmp_config *cfg;
    int ncfg;
    char **prompts;      /* as given; "[trigger]" is replaced by the trigger word when there is one */
    int nprompt;
    uint64_t *seeds;
    int nseed;
    int width, height;
    char *trigger;       /* NULL: taken from the LoRAs' metadata (modelspec.trigger_phrase, ...) if any */
    zl_cmp_thresholds th;
    char *cache_dir;     /* caption feature cache; NULL: none */
    int force;           /* apply LoRAs whose keys do not all fit (skipping those) */
    int vae_tile;        /* > 0: tiled VAE decode */
    int grid_cell;       /* the longer side of a cell in the grids, at most (0: full size) */
} zl_cmp_spec;

void zl_cmp_default_thresholds(zl_cmp_thresholds *t);
/* "blurry_at_8=0.6,not_learning=0.01,bleeding=0.4,low_retention=0.3" (any subset) into t. */
int zl_cmp_parse_thresholds(const char *s, zl_cmp_thresholds *t);
/* The prompts of a file: one per line; blank lines and lines starting with # (after leading spaces) are
 * ignored; surrounding whitespace trimmed; UTF-8. Fails on a missing file or when no prompt is left. */
int zl_cmp_read_prompts(const char *path, char ***prompts, int *n);
/* "1,2,3" or ranges "10-13" (inclusive), comma separated, non-negative, no repeats; at most 1000. */
int zl_cmp_parse_seeds(const char *s, uint64_t **seeds, int *n);

/* What builds a spec's models and configurations: a built-in experiment or a --config file. */
typedef struct {
    const char *experiment;       /* turbo-check (default) | base-vs-turbo | routes | strength */
    const char *config_file;      /* a JSON list of configurations instead of an experiment */
    const char *model, *base_model;
    const zl_cmp_lora *loras;     /* --lora, in order */
    int nlora;
    const zl_cmp_lora *patch;     /* --patch or NULL */
    const double *strengths;      /* strength: the sweep (default 0, 0.25, 0.5, 0.75, 1) */
    int nstrength;
    int steps, slow_steps, base_steps; /* 8, 30, 30 */
    double slow_cfg, base_cfg;    /* standard form: 2, 4 */
    const char *negative;         /* for configurations with guidance (default "") */
    zl_sampler_kind sampler;
    zl_noise_kind noise;
} zl_cmp_plan;
void zl_cmp_default_plan(zl_cmp_plan *p);
/* Fills s->experiment, models and cfg from the plan (s's other fields are left alone). */
int zl_cmp_build(const zl_cmp_plan *p, zl_cmp_spec *s);
void zl_cmp_spec_free(zl_cmp_spec *s);

/* ---- results ---- */
typedef struct {
    int config, prompt, seed_index;
    uint64_t seed;
    char *file;              /* relative to the output folder: cells/... */
    double seconds;          /* sampling and decoding */
    double sharpness, hf_ratio;
    int baseline_cell;       /* index of the baseline cell, -1: none */
    double difference, ssim; /* NAN without a baseline cell */
} zl_cmp_cell;

typedef struct {
    int baseline, sharp_vs, retention_vs; /* configuration indices, -1: none */
    double sharpness, hf_ratio;           /* means over the cells */
    double effect, effect_trigger, effect_other, one_minus_ssim; /* means of difference (and 1 − SSIM); NAN: undefined */
    double sharp_ratio, retention, sharp_retention;              /* NAN: undefined */
    unsigned flags;                       /* ZL_CMP_* */
    char (*hash)[11];                     /* AutoV2 of each LoRA of the stack */
} zl_cmp_summary;

typedef struct {
    zl_cmp_cell *cells;      /* ncfg · nprompt · nseed, index (config · nprompt + prompt) · nseed + seed */
    int ncell;
    zl_cmp_summary *sum;     /* [ncfg] */
    char **prompt_text;      /* [nprompt] the prompts used ([trigger] replaced) */
    int *trigger_prompt;     /* [nprompt] 1: contains the trigger (every prompt when there is no trigger) */
    char *trigger;           /* the trigger used, NULL: none */
    char *trigger_from;      /* "--trigger", or the LoRA file it was read from */
    char **grids;            /* [nprompt] file names in the output folder */
    double *model_shift;     /* [nmodel] the scheduler shift of each model */
    double seconds;
} zl_cmp_result;

/* Generates every cell into out_dir (created), scores, and writes the grids, metrics.json, metrics.csv and
 * report.html. Progress on stderr; r is filled for zl_cmp_print_table. */
int zl_cmp_run(const zl_cmp_spec *s, const char *out_dir, zl_cmp_result *r);
void zl_cmp_result_free(const zl_cmp_spec *s, zl_cmp_result *r);
/* The short per-configuration table (compare_out.c). */
void zl_cmp_print_table(const zl_cmp_spec *s, const zl_cmp_result *r, FILE *f);
/* Summaries and flags from the cells (compare_out.c; zl_cmp_run calls it). */
void zl_cmp_summarize(const zl_cmp_spec *s, zl_cmp_result *r);
/* The outputs (compare_out.c; zl_cmp_run calls them). */
int zl_cmp_write_grids(const zl_cmp_spec *s, zl_cmp_result *r, const char *out_dir);
int zl_cmp_write_metrics(const zl_cmp_spec *s, const zl_cmp_result *r, const char *out_dir);
int zl_cmp_write_report(const zl_cmp_spec *s, const zl_cmp_result *r, const char *out_dir);
/* The name a flag has in the tables and JSON ("blurry_at_8", ...). */
const char *zl_cmp_flag_name(unsigned flag);

#endif
