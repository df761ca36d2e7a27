/* lora_init.h — a new LoRA to train on a Z-Image transformer: which linears it adapts and how its factors
 * start (see ../shared/spec/training-recipes.md §3).
 *
 * Targets (flags): attention to_q/to_k/to_v/to_out.0 and feed-forward w1/w2/w3 of the main layers by default
 * (musubi's and DiffSynth's choice; ai-toolkit adds adaLN_modulation.0); optionally adaLN_modulation.0 and
 * the refiners' linears (most loaders ignore refiner keys: the command warns).
 * Init: down (A) Kaiming-uniform with bound 1/√in (PEFT's default) or Gaussian with std 1/rank (PEFT's
 * "gaussian"); up (B) zero, so the LoRA starts as the identity. Each module draws from its own stream
 * (seed and module name), so the values do not depend on which other modules are trained.
 * The result is an ordinary zl_lora in ai-toolkit naming (diffusion_model.<module>.lora_A/B), F32, with
 * alpha on every module: scale = alpha/rank.
 */
#ifndef ZL_LORA_INIT_H
#define ZL_LORA_INIT_H
#include <stdint.h>
#include "lora/lora.h"
#include "model/zimage_names.h"

enum { ZL_T_ATTN = 1, ZL_T_FFN = 2, ZL_T_ADALN = 4, ZL_T_REFINERS = 8 };

typedef struct {
    int rank;
    float alpha;       /* 0: = rank */
    int targets;       /* ZL_T_* flags; 0: attention + FFN */
    int gaussian;      /* 1: Gaussian A, else Kaiming-uniform */
    uint64_t seed;
} zl_lora_init_opts;

int zl_lora_new_trainable(const zl_zimage_config *c, const zl_lora_init_opts *o, zl_lora **out);
/* Parses "attn,ffn,adaln,refiners" (also "all", "default") into ZL_T_* flags. */
int zl_lora_targets_parse(const char *s, int *flags);

#endif
