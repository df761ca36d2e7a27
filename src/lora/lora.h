/* lora.h — LoRA files of every format in the ecosystem: parse, recognise, compute deltas, write.
 *
 * A file is read into a zl_lora: a list of modules, each one adapter on one target weight, with all its
 * tensors converted to owned f32 matrices. Key names are normalised on the way in (prefixes
 * `transformer.`, `diffusion_model.`, `model.diffusion_model.`, `base_model.model.`, `lora_unet_`,
 * `lycoris_`, bare; suffixes of PEFT, kohya, LyCORIS, DoRA and full diffs) to canonical Z-Image module
 * names (see model/zimage_names.h). Modules that are not Z-Image modules keep target == NULL and are
 * reported, not dropped. The family of the file (z-image, sdxl, flux1, lumina2, ...) is recognised from
 * names *and* shapes.
 *
 * Math (W is [out, in]; strength s):
 *   lora: ΔW = s · scale · up @ down,   up [out,r], down [r,in], scale = alpha/r (1 without alpha)
 *   loha: ΔW = s · scale · (w1a@w1b) ⊙ (w2a@w2b),  scale = alpha / w1b.rows (1 without alpha)
 *   lokr: ΔW = s · scale · kron(w1, w2), w1 = w1a@w1b when factored; scale = alpha/dim only when a
 *         factor is decomposed (dim = w1b.rows or w2b.rows), else 1
 *   diff: ΔW = s · diff (and Δb = s · diff_b)
 *   dora (any of the above + dora_scale/magnitude): W' = (W+ΔW)·m/‖W+ΔW‖ per output row (m [out]) or
 *         per input column (m [1,in]); needs the base weight, so zl_lora_delta refuses it.
 */
#ifndef ZL_LORA_H
#define ZL_LORA_H
#include <stdint.h>
#include "../base/dtype.h"

typedef enum { ZL_AD_LORA, ZL_AD_LOHA, ZL_AD_LOKR, ZL_AD_DIFF, ZL_AD_UNSUPPORTED, ZL_AD_COUNT } zl_adapter;
const char *zl_adapter_name(zl_adapter a); /* "lora", "loha", "lokr", "diff", "unsupported" */

/* Tensor roles inside one module. */
typedef enum {
    ZL_P_DOWN, ZL_P_UP, ZL_P_MID,
    ZL_P_W1A, ZL_P_W1B, ZL_P_W2A, ZL_P_W2B, ZL_P_T1, ZL_P_T2,   /* LoHa hada_* */
    ZL_P_K1, ZL_P_K1A, ZL_P_K1B, ZL_P_K2, ZL_P_K2A, ZL_P_K2B, ZL_P_KT2, /* LoKr lokr_* */
    ZL_P_DORA,                                                   /* dora_scale / magnitude */
    ZL_P_DIFF, ZL_P_DIFF_B,
    ZL_P_COUNT
} zl_part;

typedef struct {
    float *data;      /* owned, row-major; NULL when absent */
    int ndim;
    int64_t shape[4];
} zl_mat;

typedef enum { ZL_FMT_DIFFUSERS, ZL_FMT_AITOOLKIT, ZL_FMT_KOHYA, ZL_FMT_DIFFSYNTH, ZL_FMT_LYCORIS, ZL_FMT_BARE,
               ZL_FMT_COMFYUI, ZL_FMT_COUNT } zl_format;
const char *zl_format_name(zl_format f);
int zl_format_from_name(const char *s); /* also accepts "comfyui"; -1 if unknown */

typedef struct {
    char *key;          /* module key as in the file (prefix and suffix removed), for messages */
    char *target;       /* canonical Z-Image name (or "<block>.attention.qkv" when fused); NULL if none */
    int fused_qkv;      /* target is a fused qkv projection */
    zl_adapter kind;
    int dora;           /* has a DoRA magnitude */
    char *unsupported;  /* for ZL_AD_UNSUPPORTED: what it is ("OFT", "GLoRA", "lora_mid (conv Tucker)") */
    int has_alpha;
    float alpha;
    zl_mat p[ZL_P_COUNT];
    int out, in;        /* the shape of the weight this module changes (from its tensors) */
    int rank;           /* lora: r; loha: w1b rows; lokr: decomposed dim or 0; diff: 0 */
    zl_dtype dtype;     /* stored dtype of its tensors (the first one seen) */
} zl_lora_module;

typedef struct {
    char *path;
    zl_lora_module *m;
    int n;
    int nkeys;          /* tensors in the file */
    zl_format format;
    const char *family; /* "z-image", "sd1", "sdxl", "flux1", "lumina2", "qwen-image", "wan", "unknown" */
    char *reason;       /* for a foreign or unknown family: a sentence a person understands */
    const char *qkv;    /* "split", "fused", "none" */
    zl_dtype dtype;     /* the most common stored dtype */
    char **mkeys, **mvals;
    int nmeta;
} zl_lora;

/* Reads a LoRA file. Fails (with "<path>: <problem>") on a broken file, a module whose halves are
 * missing or whose ranks disagree, or a NaN/inf alpha. Unknown modules and unsupported adapter types are
 * kept and flagged. */
int zl_lora_load(const char *path, zl_lora **out);
/* The same from an already-open safetensors set (used by the fuzzer on in-memory files). */
struct zl_st;
int zl_lora_from_st(const struct zl_st *st, const char *label, zl_lora **out);
void zl_lora_free(zl_lora *l);
const char *zl_lora_meta_get(const zl_lora *l, const char *key);
void zl_lora_meta_set(zl_lora *l, const char *key, const char *value);

/* The multiplier applied to the module's product (alpha/rank rule above); strength not included. */
float zl_lora_module_scale(const zl_lora_module *m);
/* ΔW [out, in] (row-major, caller-allocated out*in floats) = strength · scale · product. Fails for DoRA
 * (needs the base weight), unsupported types. For fused modules it is the [3·dim, in] block. */
int zl_lora_delta(const zl_lora_module *m, float strength, float *dw);
/* DoRA: applies the module to a base weight W [out, in] in place: W ← W + s·(W' − W). */
int zl_lora_apply_dora(const zl_lora_module *m, float strength, float *w);
/* Parses the key of one tensor: fills the module key (prefix/suffix removed, underscores kept),
 * the part and the detected format. Returns 0, or -1 when the suffix is not an adapter suffix. For the
 * fuzzer and for tests. */
int zl_lora_parse_key(const char *key, char *module, int module_size, zl_part *part, zl_format *fmt,
                      const char **unsupported);

/* --- checking against a model ------------------------------------------------------------------- */
/* A model's module table: canonical name -> weight shape (out, in; in = 0 for vectors). */
typedef struct {
    char **name;
    int *out, *in;
    int n;
    int dim;            /* attention width, used to split fused qkv */
} zl_module_table;
/* The default Z-Image module set (6B config). */
void zl_module_table_default(zl_module_table *t);
/* From a checkpoint (file or folder, diffusers or ComfyUI naming). */
int zl_module_table_from_checkpoint(const char *path, zl_module_table *t);
void zl_module_table_free(zl_module_table *t);
int zl_module_table_find(const zl_module_table *t, const char *name);

/* Why module i would not apply (NULL when it applies), as a static or malloc'd-into-buf string. */
const char *zl_lora_check_module(const zl_lora *l, int i, const zl_module_table *t, char *buf, int bufsize);

/* --- writing -------------------------------------------------------------------------------------- */
typedef struct {
    zl_format to;       /* target naming; ZL_FMT_COMFYUI writes fused qkv */
    zl_dtype dtype;     /* F32, BF16 or F16 */
    int lossy;          /* allow SVD for LoKr into fused qkv */
    int lossy_rank;     /* rank of those SVD approximations (0: 64) */
    double energy_min;  /* out: lowest energy kept over lossy modules (1 when none) */
    int nlossy;         /* out: modules converted lossily */
} zl_write_opts;

/* Writes l in the target format (metadata carried plus provenance). Exact where the math allows:
 * split↔fused qkv for LoRA/LoHa/diff by stacking and block-diagonals; alpha folded into the up factor
 * for PEFT-style names, written as .alpha for kohya. */
int zl_lora_write(zl_lora *l, const char *path, zl_write_opts *o);

/* Re-expresses every fused-qkv module of l as split to_q/to_k/to_v modules (exact for LoRA, LoHa, diff;
 * LoKr when its first factor splits in three, else SVD when lossy is set). */
int zl_lora_split_qkv(zl_lora *l, int lossy, double *energy_min);
/* Rank used by lossy SVD approximations in split/fuse (default 64). */
extern int zl_lora_lossy_rank;
/* The reverse: groups to_q/to_k/to_v modules of each block into one fused module. */
int zl_lora_fuse_qkv(zl_lora *l, int lossy, double *energy_min);

/* Merge: one LoRA holding sum_i s_i · ΔW_i, by concatenating ranks (exact). Non-LoRA modules are carried
 * when alone on their target, else materialised as diffs. */
int zl_lora_merge(zl_lora **in, const float *strengths, int n, zl_lora **out);
/* Resize to rank r by truncated SVD (exact SVD of the low-rank product for LoRA; randomized range
 * finder for LoHa/LoKr/diff). energy = kept / total squared singular values, min over modules. */
int zl_lora_resize(zl_lora *l, int rank, double *energy_min, double *energy_mean);

/* One-line-per-fact summaries used by the CLI. */
struct zl_buf_s;
char *zl_lora_inspect_json(const zl_lora *l);   /* malloc'd */
char *zl_lora_inspect_text(const zl_lora *l);   /* malloc'd */

#endif
