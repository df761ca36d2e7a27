/* latent_cache.h — VAE latents of a dataset on disk, so the training loop never holds the VAE encoder.
 *
 * An entry is <dir>/<key>.safetensors with `x0` [C, h, w] F32: the normalised latent mean
 * ((mean − shift)·scale, what the DiT trains on) of one item at its bucket size, mirrored or not. The key
 * hashes (VAE identity, image content hash, bucket w×h, flip); the metadata repeats them and a hit
 * requires them to match. Entries are written atomically, so an interrupted fill leaves no half entry.
 */
#ifndef ZL_LATENT_CACHE_H
#define ZL_LATENT_CACHE_H
#include "train/dataset.h"

/* Encodes the items (and their mirrored versions when `flips`) that are not cached yet; the VAE at
 * vae_path is loaded only when something is missing, and freed before returning. Prints a progress bar.
 * *encoded receives how many entries were made (may be NULL). */
int zl_latent_cache_fill(const zl_dataset *ds, const char *vae_path, const char *dir, int flips, int *encoded);
/* x0 [C, h, w] of an item (malloc'd); h, w = bucket / VAE factor. 1 hit, 0 miss, −1 error. */
int zl_latent_cache_load(const char *dir, const char *vae_identity, const zl_item *it, int flip, float **x0, int *C,
                         int *h, int *w);

#endif
