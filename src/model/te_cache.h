/* te_cache.h — caption features cached on disk, so generate, train and compare reuse them and never load
 * the 8 GB text encoder when every prompt is cached.
 *
 * An entry is <dir>/<key>.safetensors holding `cap` [L, hidden] F32 and `ids` [L] I32, with metadata
 * `zlora.encoder` (identity), `zlora.template` and `zlora.prompt` (the full text). The key is a 64-bit
 * hash of (encoder identity, template version, prompt); a hit also requires the stored identity and
 * prompt to be equal, so a hash collision can never return another prompt's features.
 *
 * The encoder identity is computed from the checkpoint's headers (tensor names, dtypes, shapes and
 * offsets of every shard) and a sample of its embedding bytes: cheap (no weights are loaded) and it
 * changes when the weights do.
 */
#ifndef ZL_TE_CACHE_H
#define ZL_TE_CACHE_H
#include <stdint.h>

#define ZL_TE_TEMPLATE_VERSION "zimage-chat-v1-512"

/* Identity string of the text encoder at `path` (file, text_encoder/ folder or model folder). malloc'd. */
char *zl_te_identity(const char *path);
/* The same for any checkpoint: `path` a file or folder, or a model folder holding `subdir`; the string
 * starts with `label`. */
char *zl_weights_identity(const char *path, const char *subdir, const char *label);
/* 1 on a hit (outputs malloc'd), 0 on a miss, -1 on error (a corrupt entry is an error naming the file). */
int zl_te_cache_load(const char *dir, const char *identity, const char *prompt, float **cap, int32_t **ids, int *L,
                     int *hidden);
int zl_te_cache_store(const char *dir, const char *identity, const char *prompt, const float *cap, const int32_t *ids,
                      int L, int hidden);

#endif
