/* generate.h — text to image with Z-Image: resolving a model's parts, caption features (through the
 * feature cache, loading the encoder only for prompts it lacks), the sampling loop with guidance, and
 * decoding. `zlora generate`, and later compare and training's validation samples, are built from these.
 *
 * Memory order (what keeps the peak at the largest part rather than the sum): the text encoder runs first
 * and is freed before the DiT loads; the VAE is loaded after the DiT and is small (about 170 MB bf16,
 * 335 MB fp32).
 */
#ifndef ZL_GENERATE_H
#define ZL_GENERATE_H
#include <stdint.h>
#include "gen/sample.h"
#include "model/vae.h"
#include "model/zimage.h"

/* The parts of a model. From a diffusers-layout folder (model_index.json, transformer/, text_encoder/,
 * tokenizer/, vae/, scheduler/scheduler_config.json) and/or separate files (ComfyUI's split files); an
 * explicit file wins over the folder's part. */
typedef struct {
    char *dir;         /* the model folder or NULL */
    char *dit, *te, *tok, *vae;
    double shift;      /* scheduler_config.json "shift", else 3.0 */
    int shift_from_config;
    char *pipeline;    /* model_index.json _class_name, or NULL */
} zl_model_parts;

/* Any of dir/dit/te/tok/vae may be NULL; every part must be found (need_te: the encoder and the tokenizer
 * are needed, i.e. some prompt is not cached). A folder for another pipeline (model_index.json naming a
 * FLUX, Lumina 2, SD... pipeline) is refused with its name. */
int zl_model_parts_resolve(const char *dir, const char *dit, const char *te, const char *tok, const char *vae,
                           zl_model_parts *out);
void zl_model_parts_free(zl_model_parts *p);

/* Caption features of one prompt: cap [L, hidden]. */
typedef struct {
    float *cap;
    int L, hidden;
} zl_feat;
void zl_feat_free(zl_feat *f);

/* Features of n prompts: from the cache at cache_dir (NULL: no cache) where present; the tokenizer and
 * the encoder are loaded only when some prompt is missing, and freed before returning. */
int zl_gen_features(const zl_model_parts *mp, const char *cache_dir, const char *const *prompts, int n, zl_feat *out);

/* The default feature cache folder: $ZLORA_CACHE/te, else $XDG_CACHE_HOME/zlora/te, else
 * ~/.cache/zlora/te (malloc'd; NULL when there is no home). */
char *zl_gen_default_cache(void);

typedef struct {
    int steps;
    double shift;
    float guidance;    /* diffusers form: pred = pos + g·(pos − neg); 0 = off (standard cfg = g + 1) */
    float cfg_norm;    /* > 0: cap ‖pred‖ at cfg_norm·‖pos‖ (the reference pipeline's cfg_normalization) */
    float cfg_trunc;   /* ≤ 1: no guidance once 1 − σ > cfg_trunc (the reference pipeline's cfg_truncation) */
    zl_sampler_kind sampler;
    zl_noise_kind noise;
} zl_gen_params;
void zl_gen_default_params(zl_gen_params *p); /* turbo: 8 steps, shift 3, no guidance, Euler */

/* Called after each step (i = 1..steps). */
typedef void (*zl_gen_step_fn)(void *ud, int i, int steps);

/* x [C, h, w] holds the initial noise on entry and the final (normalised) latent on return. neg may be
 * NULL when guidance is 0. The DiT's caption width must equal the features'. */
int zl_gen_sample(zl_zimage *m, const zl_gen_params *p, const zl_feat *pos, const zl_feat *neg, float *x, int h,
                  int w, zl_gen_step_fn cb, void *ud);

/* rgb [H·W·3] 8-bit from a normalised latent z [C, h, w] (z is overwritten): x = VAE.decode(z/scale +
 * shift), pixel = round(clamp(x/2 + 0.5, 0, 1)·255). tile > 0: tiled decode with that latent tile size. */
int zl_gen_decode(const zl_vae *v, float *z, int h, int w, int tile, uint8_t *rgb);

/* A size check with a helpful message: W and H positive multiples of `mult` (VAE factor × patch size),
 * else an error naming the nearest valid sizes. */
int zl_gen_check_size(int W, int H, int mult);

/* What the PNG of a generated image records, so that `zlora generate --from IMAGE` remakes it. */
typedef struct {
    const char *prompt;
    const char *negative;      /* the negative prompt (used when guidance is on) */
    int store_negative;        /* store it in the settings even when guidance is off (it was given) */
    zl_gen_params p;
    uint64_t seed;
    int width, height;
    const char *model_name;    /* "Model:" in the parameters text */
    const char *model, *dit, *te, *vae, *tok; /* paths stored for --from (NULL: not stored) */
    int nlora;
    const char *const *lora_path;
    const float *lora_s;
    const char (*lora_hash)[11]; /* AutoV2 of each LoRA */
    int merge;                 /* LoRAs merged (1) or runtime branches (0) */
} zl_gen_meta;

/* The A1111-style `parameters` text (prompt, negative, steps, sampler, CFG in both forms, seed, size,
 * shift, model, LoRA hashes and strengths, noise, version) and the `zlora` JSON settings; both malloc'd. */
void zl_gen_meta_text(const zl_gen_meta *m, char **parameters, char **json);
/* rgb [H·W·3] to a PNG at path (atomically) with both chunks. */
int zl_gen_write_png(const char *path, const uint8_t *rgb, const zl_gen_meta *m);
/* How a model or LoRA is named in the parameters: the last path component without ".safetensors". */
const char *zl_gen_display_name(const char *path, char *buf, size_t n);

/* Short content hash of a file as the Civitai/A1111 "AutoV2" (the first 10 hex digits of the SHA-256 of
 * the whole file), into out[11]. */
int zl_file_autov2(const char *path, char out[11]);

#endif
