/* lora_read.c — parsing LoRA files: key normalisation, grouping into modules, validation, and
 * recognising the format and the model family. See lora.h. */
#include "lora.h"
#include "../base/base.h"
#include "../io/safetensors.h"
#include "../model/zimage_names.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PART_ALPHA ((zl_part)ZL_P_COUNT)
#define PART_UNSUP ((zl_part)(ZL_P_COUNT + 1))

static const char *adapter_names[ZL_AD_COUNT] = {"lora", "loha", "lokr", "diff", "unsupported"};
const char *zl_adapter_name(zl_adapter a) { return (unsigned)a < ZL_AD_COUNT ? adapter_names[a] : "?"; }

static const char *format_names[ZL_FMT_COUNT] = {"diffusers", "ai-toolkit", "kohya", "diffsynth", "lycoris", "bare", "comfyui"};
const char *zl_format_name(zl_format f) { return (unsigned)f < ZL_FMT_COUNT ? format_names[f] : "?"; }
int zl_format_from_name(const char *s) {
    for (int i = 0; i < ZL_FMT_COUNT; i++)
        if (strcmp(s, format_names[i]) == 0) return i;
    if (strcmp(s, "aitoolkit") == 0 || strcmp(s, "ai_toolkit") == 0) return ZL_FMT_AITOOLKIT;
    if (strcmp(s, "peft") == 0) return ZL_FMT_DIFFUSERS;
    if (strcmp(s, "musubi") == 0) return ZL_FMT_KOHYA;
    return -1;
}

/* ------------------------------------------------------------------ key parsing */

typedef struct { const char *suffix; int part; const char *unsup; } suffix_rule;

/* Longest and most specific first. */
static const suffix_rule suffixes[] = {
    {".lora_A.default.weight", ZL_P_DOWN, NULL},
    {".lora_B.default.weight", ZL_P_UP, NULL},
    {".lora_linear_layer.down.weight", ZL_P_DOWN, NULL},
    {".lora_linear_layer.up.weight", ZL_P_UP, NULL},
    {".lora_magnitude_vector.default.weight", ZL_P_DORA, NULL},
    {".lora_magnitude_vector.weight", ZL_P_DORA, NULL},
    {".lora_magnitude_vector", ZL_P_DORA, NULL},
    {".lora_down.weight", ZL_P_DOWN, NULL},
    {".lora_up.weight", ZL_P_UP, NULL},
    {".lora_mid.weight", ZL_P_MID, NULL},
    {".lora_A.weight", ZL_P_DOWN, NULL},
    {".lora_B.weight", ZL_P_UP, NULL},
    {".lora.down.weight", ZL_P_DOWN, NULL},
    {".lora.up.weight", ZL_P_UP, NULL},
    {"_lora.down.weight", ZL_P_DOWN, NULL},
    {"_lora.up.weight", ZL_P_UP, NULL},
    {".lora_A", ZL_P_DOWN, NULL},
    {".lora_B", ZL_P_UP, NULL},
    {".hada_w1_a", ZL_P_W1A, NULL},
    {".hada_w1_b", ZL_P_W1B, NULL},
    {".hada_w2_a", ZL_P_W2A, NULL},
    {".hada_w2_b", ZL_P_W2B, NULL},
    {".hada_t1", ZL_P_T1, NULL},
    {".hada_t2", ZL_P_T2, NULL},
    {".lokr_w1_a", ZL_P_K1A, NULL},
    {".lokr_w1_b", ZL_P_K1B, NULL},
    {".lokr_w2_a", ZL_P_K2A, NULL},
    {".lokr_w2_b", ZL_P_K2B, NULL},
    {".lokr_w1", ZL_P_K1, NULL},
    {".lokr_w2", ZL_P_K2, NULL},
    {".lokr_t2", ZL_P_KT2, NULL},
    {".dora_scale", ZL_P_DORA, NULL},
    {".magnitude", ZL_P_DORA, NULL},
    {".diff_b", ZL_P_DIFF_B, NULL},
    {".diff", ZL_P_DIFF, NULL},
    {".alpha", PART_ALPHA, NULL},
    {".oft_blocks", PART_UNSUP, "OFT"},
    {".oft_diag", PART_UNSUP, "OFT"},
    {".rescale", PART_UNSUP, "OFT/BOFT"},
    {".a1.weight", PART_UNSUP, "GLoRA"},
    {".a2.weight", PART_UNSUP, "GLoRA"},
    {".b1.weight", PART_UNSUP, "GLoRA"},
    {".b2.weight", PART_UNSUP, "GLoRA"},
    {".set_weight", PART_UNSUP, "set_weight (weight replacement)"},
    {".w_norm", PART_UNSUP, "legacy norm weights (w_norm)"},
    {".b_norm", PART_UNSUP, "legacy norm bias (b_norm)"},
    {".reshape_weight", PART_UNSUP, "reshape_weight (ComfyUI padding hint)"},
    {NULL, 0, NULL},
};

typedef struct { const char *prefix; zl_format fmt; int underscored; } prefix_rule;
static const prefix_rule prefixes[] = {
    {"model.diffusion_model.", ZL_FMT_AITOOLKIT, 0},
    {"diffusion_model.", ZL_FMT_AITOOLKIT, 0},
    {"base_model.model.", ZL_FMT_DIFFUSERS, 0},
    {"transformer.", ZL_FMT_DIFFUSERS, 0},
    {"lora_unet_", ZL_FMT_KOHYA, 1},
    {"lycoris_", ZL_FMT_LYCORIS, 1},
    {NULL, ZL_FMT_BARE, 0},
};

int zl_lora_parse_key(const char *key, char *module, int module_size, zl_part *part, zl_format *fmt,
                      const char **unsupported) {
    size_t kl = strlen(key);
    *unsupported = NULL;
    for (const suffix_rule *r = suffixes; r->suffix; r++) {
        size_t sl = strlen(r->suffix);
        if (kl <= sl || memcmp(key + kl - sl, r->suffix, sl) != 0) continue;
        size_t ml = kl - sl;
        if ((int)ml >= module_size) return -1;
        memcpy(module, key, ml);
        module[ml] = 0;
        *part = (zl_part)r->part;
        *unsupported = r->unsup;
        *fmt = ZL_FMT_BARE;
        for (const prefix_rule *p = prefixes; p->prefix; p++)
            if (zl_starts_with(module, p->prefix)) { *fmt = p->fmt; break; }
        if (*fmt == ZL_FMT_BARE && strstr(r->suffix, ".default.")) *fmt = ZL_FMT_DIFFSYNTH;
        return 0;
    }
    return -1;
}

/* Resolves a module key (prefix included) to a canonical Z-Image target; returns -1 if none,
 * else 0 (plain) or 1 (fused qkv). */
static int resolve_target(const char *module, char *canon) {
    const char *rest = module;
    int us = 0;
    for (const prefix_rule *p = prefixes; p->prefix; p++)
        if (zl_starts_with(module, p->prefix)) { rest = module + strlen(p->prefix); us = p->underscored; break; }
    char dotted[128];
    if (us) {
        if (zl_zimage_from_underscored(rest, dotted)) return -1;
        rest = dotted;
    }
    return zl_zimage_canonical(rest, canon);
}

/* ------------------------------------------------------------------ loading */

static void mat_free(zl_mat *m) { free(m->data); memset(m, 0, sizeof *m); }

void zl_lora_free(zl_lora *l) {
    if (!l) return;
    for (int i = 0; i < l->n; i++) {
        zl_lora_module *m = &l->m[i];
        free(m->key); free(m->target); free(m->unsupported);
        for (int p = 0; p < ZL_P_COUNT; p++) mat_free(&m->p[p]);
    }
    free(l->m);
    for (int i = 0; i < l->nmeta; i++) { free(l->mkeys[i]); free(l->mvals[i]); }
    free(l->mkeys); free(l->mvals);
    free(l->path); free(l->reason);
    free(l);
}

const char *zl_lora_meta_get(const zl_lora *l, const char *key) {
    for (int i = 0; i < l->nmeta; i++)
        if (strcmp(l->mkeys[i], key) == 0) return l->mvals[i];
    return NULL;
}

void zl_lora_meta_set(zl_lora *l, const char *key, const char *value) {
    for (int i = 0; i < l->nmeta; i++)
        if (strcmp(l->mkeys[i], key) == 0) { free(l->mvals[i]); l->mvals[i] = zl_xstrdup(value); return; }
    l->mkeys = zl_xrealloc(l->mkeys, sizeof(char *) * (size_t)(l->nmeta + 1));
    l->mvals = zl_xrealloc(l->mvals, sizeof(char *) * (size_t)(l->nmeta + 1));
    l->mkeys[l->nmeta] = zl_xstrdup(key);
    l->mvals[l->nmeta] = zl_xstrdup(value);
    l->nmeta++;
}

/* Simple string -> index hash map for grouping keys into modules. */
typedef struct { char **k; int *v; int cap; } strmap;
static uint64_t strhash(const char *s) { return zl_hash64(s, strlen(s), 0); }
static int map_get(strmap *m, const char *k) {
    if (!m->cap) return -1;
    for (uint64_t h = strhash(k) & (uint64_t)(m->cap - 1);; h = (h + 1) & (uint64_t)(m->cap - 1)) {
        if (!m->k[h]) return -1;
        if (strcmp(m->k[h], k) == 0) return m->v[h];
    }
}
static void map_put(strmap *m, const char *k, int v, int nitems) {
    if ((nitems + 1) * 2 > m->cap) {
        strmap n = {0};
        n.cap = m->cap ? m->cap * 2 : 64;
        while ((nitems + 1) * 2 > n.cap) n.cap *= 2;
        n.k = zl_xcalloc((size_t)n.cap, sizeof(char *));
        n.v = zl_xcalloc((size_t)n.cap, sizeof(int));
        for (int i = 0; i < m->cap; i++)
            if (m->k[i]) {
                uint64_t h = strhash(m->k[i]) & (uint64_t)(n.cap - 1);
                while (n.k[h]) h = (h + 1) & (uint64_t)(n.cap - 1);
                n.k[h] = m->k[i]; n.v[h] = m->v[i];
            }
        free(m->k); free(m->v);
        *m = n;
    }
    uint64_t h = strhash(k) & (uint64_t)(m->cap - 1);
    while (m->k[h]) h = (h + 1) & (uint64_t)(m->cap - 1);
    m->k[h] = zl_xstrdup(k);
    m->v[h] = v;
}
static void map_free(strmap *m) {
    for (int i = 0; i < m->cap; i++) free(m->k[i]);
    free(m->k); free(m->v);
}

static const char *part_suffix(int p) {
    static const char *n[] = {"lora_down", "lora_up", "lora_mid", "hada_w1_a", "hada_w1_b", "hada_w2_a", "hada_w2_b",
                              "hada_t1", "hada_t2", "lokr_w1", "lokr_w1_a", "lokr_w1_b", "lokr_w2", "lokr_w2_a",
                              "lokr_w2_b", "lokr_t2", "dora_scale", "diff", "diff_b"};
    return p >= 0 && p < ZL_P_COUNT ? n[p] : "?";
}

/* 2-D view of a matrix: conv weights [o,i,1,1] count as linear; other 4-D shapes are not. */
static int mat2(const zl_mat *m, int64_t *r, int64_t *c) {
    if (m->ndim == 2) { *r = m->shape[0]; *c = m->shape[1]; return 0; }
    if (m->ndim == 4 && m->shape[2] == 1 && m->shape[3] == 1) { *r = m->shape[0]; *c = m->shape[1]; return 0; }
    return -1;
}

#define HAS(m, part) ((m)->p[part].data != NULL)

/* Validates a module and fills kind, out, in, rank. Unsupported-but-valid structures set kind
 * ZL_AD_UNSUPPORTED; broken ones return -1 with a message. */
static int finish_module(zl_lora_module *m, const char *label) {
    int lora = HAS(m, ZL_P_DOWN) || HAS(m, ZL_P_UP) || HAS(m, ZL_P_MID);
    int loha = HAS(m, ZL_P_W1A) || HAS(m, ZL_P_W1B) || HAS(m, ZL_P_W2A) || HAS(m, ZL_P_W2B) || HAS(m, ZL_P_T1) || HAS(m, ZL_P_T2);
    int lokr = HAS(m, ZL_P_K1) || HAS(m, ZL_P_K1A) || HAS(m, ZL_P_K1B) || HAS(m, ZL_P_K2) || HAS(m, ZL_P_K2A) ||
               HAS(m, ZL_P_K2B) || HAS(m, ZL_P_KT2);
    int diff = HAS(m, ZL_P_DIFF) || HAS(m, ZL_P_DIFF_B);
    m->dora = HAS(m, ZL_P_DORA);
    if (m->has_alpha && !isfinite(m->alpha))
        return zl_err("%s: module %s has a non-finite alpha (%g)", label, m->key, (double)m->alpha);
    if (m->kind == ZL_AD_UNSUPPORTED) return 0; /* set while reading keys */
    if (lora + loha + lokr + diff == 0) {
        if (m->dora) return zl_err("%s: module %s has a DoRA magnitude but no adapter weights", label, m->key);
        return zl_err("%s: module %s has only an alpha, no adapter weights (incomplete LoRA)", label, m->key);
    }
    if (lora + loha + lokr + diff > 1)
        return zl_err("%s: module %s mixes adapter types (%s%s%s%s)", label, m->key, lora ? "lora " : "",
                      loha ? "loha " : "", lokr ? "lokr " : "", diff ? "diff" : "");
    int64_t r1, c1, r2, c2;
    if (lora) {
        m->kind = ZL_AD_LORA;
        if (!HAS(m, ZL_P_DOWN) || !HAS(m, ZL_P_UP))
            return zl_err("%s: module %s has %s but no %s (incomplete LoRA: a half is missing)", label, m->key,
                          HAS(m, ZL_P_UP) ? "lora_up/lora_B" : "lora_down/lora_A",
                          HAS(m, ZL_P_UP) ? "lora_down/lora_A" : "lora_up/lora_B");
        if (HAS(m, ZL_P_MID)) { m->kind = ZL_AD_UNSUPPORTED; m->unsupported = zl_xstrdup("LoCon with lora_mid (Tucker, convolutions only)"); return 0; }
        if (mat2(&m->p[ZL_P_DOWN], &r1, &c1) || mat2(&m->p[ZL_P_UP], &r2, &c2)) {
            m->kind = ZL_AD_UNSUPPORTED; m->unsupported = zl_xstrdup("convolution LoRA (LoCon)"); return 0;
        }
        if (c2 != r1)
            return zl_err("%s: module %s: rank mismatch: lora_down has rank %lld but lora_up expects %lld", label,
                          m->key, (long long)r1, (long long)c2);
        m->rank = (int)r1; m->out = (int)r2; m->in = (int)c1;
    } else if (loha) {
        m->kind = ZL_AD_LOHA;
        if (HAS(m, ZL_P_T1) || HAS(m, ZL_P_T2)) { m->kind = ZL_AD_UNSUPPORTED; m->unsupported = zl_xstrdup("LoHa with Tucker factors (hada_t1/t2, convolutions only)"); return 0; }
        for (int p = ZL_P_W1A; p <= ZL_P_W2B; p++)
            if (!m->p[p].data) return zl_err("%s: module %s: LoHa is missing %s", label, m->key, part_suffix(p));
        int64_t a1r, a1c, b1r, b1c, a2r, a2c, b2r, b2c;
        if (mat2(&m->p[ZL_P_W1A], &a1r, &a1c) || mat2(&m->p[ZL_P_W1B], &b1r, &b1c) ||
            mat2(&m->p[ZL_P_W2A], &a2r, &a2c) || mat2(&m->p[ZL_P_W2B], &b2r, &b2c)) {
            m->kind = ZL_AD_UNSUPPORTED; m->unsupported = zl_xstrdup("convolution LoHa"); return 0;
        }
        if (a1c != b1r || a2c != b2r) return zl_err("%s: module %s: LoHa rank mismatch (w1_a %lldx%lld, w1_b %lldx%lld, w2_a %lldx%lld, w2_b %lldx%lld)", label, m->key,
                                                    (long long)a1r, (long long)a1c, (long long)b1r, (long long)b1c, (long long)a2r, (long long)a2c, (long long)b2r, (long long)b2c);
        if (a1r != a2r || b1c != b2c) return zl_err("%s: module %s: LoHa halves change different shapes (%lldx%lld vs %lldx%lld)", label, m->key,
                                                    (long long)a1r, (long long)b1c, (long long)a2r, (long long)b2c);
        m->rank = (int)b1r; m->out = (int)a1r; m->in = (int)b1c;
    } else if (lokr) {
        m->kind = ZL_AD_LOKR;
        if (HAS(m, ZL_P_KT2)) { m->kind = ZL_AD_UNSUPPORTED; m->unsupported = zl_xstrdup("LoKr with a Tucker factor (lokr_t2, convolutions only)"); return 0; }
        int64_t w1r, w1c, w2r, w2c, x, y;
        if (HAS(m, ZL_P_K1)) {
            if (HAS(m, ZL_P_K1A) || HAS(m, ZL_P_K1B)) return zl_err("%s: module %s: LoKr has both lokr_w1 and lokr_w1_a/b", label, m->key);
            if (mat2(&m->p[ZL_P_K1], &w1r, &w1c)) goto conv;
        } else {
            if (!HAS(m, ZL_P_K1A) || !HAS(m, ZL_P_K1B)) return zl_err("%s: module %s: LoKr is missing lokr_w1 (or lokr_w1_a and lokr_w1_b)", label, m->key);
            if (mat2(&m->p[ZL_P_K1A], &w1r, &x) || mat2(&m->p[ZL_P_K1B], &y, &w1c)) goto conv;
            if (x != y) return zl_err("%s: module %s: LoKr rank mismatch between lokr_w1_a (%lld) and lokr_w1_b (%lld)", label, m->key, (long long)x, (long long)y);
            m->rank = (int)x;
        }
        if (HAS(m, ZL_P_K2)) {
            if (HAS(m, ZL_P_K2A) || HAS(m, ZL_P_K2B)) return zl_err("%s: module %s: LoKr has both lokr_w2 and lokr_w2_a/b", label, m->key);
            if (mat2(&m->p[ZL_P_K2], &w2r, &w2c)) goto conv;
        } else {
            if (!HAS(m, ZL_P_K2A) || !HAS(m, ZL_P_K2B)) return zl_err("%s: module %s: LoKr is missing lokr_w2 (or lokr_w2_a and lokr_w2_b)", label, m->key);
            if (mat2(&m->p[ZL_P_K2A], &w2r, &x) || mat2(&m->p[ZL_P_K2B], &y, &w2c)) goto conv;
            if (x != y) return zl_err("%s: module %s: LoKr rank mismatch between lokr_w2_a (%lld) and lokr_w2_b (%lld)", label, m->key, (long long)x, (long long)y);
            if (!m->rank) m->rank = (int)x;
        }
        if (w1r * w2r > INT32_MAX || w1c * w2c > INT32_MAX) return zl_err("%s: module %s: LoKr shape too large", label, m->key);
        m->out = (int)(w1r * w2r); m->in = (int)(w1c * w2c);
    } else {
        m->kind = ZL_AD_DIFF;
        if (HAS(m, ZL_P_DIFF)) {
            zl_mat *d = &m->p[ZL_P_DIFF];
            if (d->ndim == 1) { m->out = (int)d->shape[0]; m->in = 0; }
            else if (mat2(d, &r1, &c1) == 0) { m->out = (int)r1; m->in = (int)c1; }
            else { m->kind = ZL_AD_UNSUPPORTED; m->unsupported = zl_xstrdup("convolution diff"); return 0; }
        } else {
            m->out = (int)m->p[ZL_P_DIFF_B].shape[0]; m->in = -1; /* bias only */
        }
        if (HAS(m, ZL_P_DIFF_B) && (m->p[ZL_P_DIFF_B].ndim != 1 || m->p[ZL_P_DIFF_B].shape[0] != m->out))
            return zl_err("%s: module %s: diff_b has %lld entries, expected %d", label, m->key,
                          (long long)m->p[ZL_P_DIFF_B].shape[0], m->out);
    }
    if (m->dora) {
        zl_mat *d = &m->p[ZL_P_DORA];
        int64_t n = 1;
        for (int i = 0; i < d->ndim; i++) n *= d->shape[i];
        if (n != m->out && n != m->in)
            return zl_err("%s: module %s: DoRA magnitude has %lld entries, expected %d (rows) or %d (columns)", label, m->key, (long long)n, m->out, m->in);
    }
    return 0;
conv:
    m->kind = ZL_AD_UNSUPPORTED;
    m->unsupported = zl_xstrdup("convolution LoKr");
    return 0;
}

/* ------------------------------------------------------------------ family recognition */

static int any_key(const zl_st *st, const char *needle) {
    for (int i = 0; i < zl_st_count(st); i++)
        if (strstr(zl_st_tensor(st, i)->name, needle)) return 1;
    return 0;
}

/* The input width of the first module whose key contains `needle` (0 if none). */
static int width_of(const zl_lora *l, const char *needle) {
    for (int i = 0; i < l->n; i++)
        if (strstr(l->m[i].key, needle) && l->m[i].in > 0) return l->m[i].in;
    return 0;
}

static void set_family(zl_lora *l, const char *fam, const char *fmt, ...) ZL_PRINTF(3, 4);
static void set_family(zl_lora *l, const char *fam, const char *fmt, ...) {
    l->family = fam;
    free(l->reason);
    l->reason = NULL;
    if (fmt) {
        char buf[512];
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(buf, sizeof buf, fmt, ap);
        va_end(ap);
        l->reason = zl_xstrdup(buf);
    }
}

static void detect_family(zl_lora *l, const zl_st *st) {
    int zi = 0, total = 0;
    for (int i = 0; i < l->n; i++) { total++; if (l->m[i].target) zi++; }
    /* FLUX.1 */
    if (any_key(st, "double_blocks") || any_key(st, "single_blocks") || any_key(st, "single_transformer_blocks")) {
        int w = width_of(l, "double_blocks");
        if (!w) w = width_of(l, "single_transformer_blocks");
        if (!w) w = width_of(l, "single_blocks");
        set_family(l, "flux1", "FLUX.1 LoRA: double_blocks/single_blocks keys, width %d; it cannot be applied to Z-Image", w);
        return;
    }
    /* Qwen-Image */
    if (any_key(st, "img_mlp") || any_key(st, "txt_mlp") || any_key(st, "img_mod") || any_key(st, "txt_mod")) {
        set_family(l, "qwen-image", "Qwen-Image LoRA: transformer_blocks with img_mlp/txt_mlp/img_mod keys, width %d; it cannot be applied to Z-Image",
                   width_of(l, "transformer_blocks"));
        return;
    }
    /* Wan */
    if (any_key(st, "self_attn") && (any_key(st, "cross_attn") || any_key(st, "ffn")) && any_key(st, "blocks")) {
        set_family(l, "wan", "Wan 2.x video LoRA: blocks.N.self_attn/cross_attn/ffn keys, width %d; it cannot be applied to Z-Image",
                   width_of(l, "self_attn"));
        return;
    }
    /* SD1.x / SDXL (UNet) */
    if (any_key(st, "down_blocks") || any_key(st, "up_blocks") || any_key(st, "input_blocks") ||
        any_key(st, "output_blocks") || any_key(st, "mid_block") || any_key(st, "middle_block") ||
        any_key(st, "lora_te_") || any_key(st, "lora_te1_") || any_key(st, "text_model")) {
        int xl = any_key(st, "lora_te1_") || any_key(st, "lora_te2_") || any_key(st, "text_encoder_2");
        int kw = width_of(l, "attn2_to_k");
        if (!kw) kw = width_of(l, "attn2.to_k");
        if (kw == 2048) xl = 1;
        if (xl) set_family(l, "sdxl", "SDXL LoRA: UNet down/up block keys%s; it cannot be applied to Z-Image",
                           kw ? " with 2048-wide cross-attention" : " and two text encoders (te1/te2)");
        else set_family(l, "sd1", "Stable Diffusion 1.x LoRA: UNet down/up block keys%s; it cannot be applied to Z-Image",
                        kw == 768 ? " with 768-wide cross-attention" : "");
        return;
    }
    /* Lumina-Image-2.0: the same NextDiT names; tell by width (2304) and its adaLN_modulation.1 */
    int attw = 0;
    for (int i = 0; i < l->n && !attw; i++)
        if (l->m[i].target && (strstr(l->m[i].target, ".attention.") || strstr(l->m[i].target, "feed_forward.w1")) && l->m[i].in > 0)
            attw = l->m[i].in;
    int lumina_names = any_key(st, ".attn.to_q") || any_key(st, "feed_forward.linear_1") ||
                       any_key(st, "adaLN_modulation.1") || any_key(st, "adaLN_modulation_1") || any_key(st, "norm1.linear");
    if ((zi > 0 && attw == 2304) || (lumina_names && (any_key(st, "layers.") || any_key(st, "layers_")) && !any_key(st, "final_layer"))) {
        if (attw == 2304 || lumina_names) {
            set_family(l, "lumina2", "Lumina-Image-2.0 LoRA: NextDiT layer names like Z-Image's but width %d (Z-Image: 3840)%s; it cannot be applied to Z-Image",
                       attw ? attw : width_of(l, "layers"), any_key(st, "adaLN_modulation.1") || any_key(st, "adaLN_modulation_1") ? " and adaLN_modulation.1 keys" : "");
            return;
        }
    }
    if (zi > 0 && zi * 2 >= total) {
        set_family(l, "z-image", NULL);
        if (attw && attw != 3840) {
            char buf[160];
            snprintf(buf, sizeof buf, "Z-Image module names at width %d (the 6B model is 3840: a small or test model)", attw);
            l->reason = zl_xstrdup(buf);
        }
        return;
    }
    if (zi > 0) {
        set_family(l, "z-image", "mostly not Z-Image: only %d of %d modules have Z-Image names", zi, total);
        return;
    }
    set_family(l, "unknown", "no known model's module names (first key: %s)", zl_st_count(st) ? zl_st_tensor(st, 0)->name : "none");
}

/* ------------------------------------------------------------------ main loader */

int zl_lora_from_st(const zl_st *st, const char *label, zl_lora **out) {
    *out = NULL;
    zl_lora *l = zl_xcalloc(1, sizeof *l);
    l->path = zl_xstrdup(label);
    l->nkeys = zl_st_count(st);
    strmap map = {0};
    int cap = 0, fmt_votes[ZL_FMT_COUNT] = {0}, dt_votes[ZL_DTYPE_COUNT] = {0};
    char module[512];
    for (int i = 0; i < zl_st_count(st); i++) {
        const zl_tensor_info *t = zl_st_tensor(st, i);
        zl_part part;
        zl_format fmt;
        const char *unsup;
        if (zl_lora_parse_key(t->name, module, sizeof module, &part, &fmt, &unsup)) {
            zl_err("%s: tensor \"%s\" is not a LoRA tensor (no known adapter suffix)", label, t->name);
            goto fail;
        }
        fmt_votes[fmt]++;
        int mi = map_get(&map, module);
        if (mi < 0) {
            if (l->n == cap) { cap = cap ? cap * 2 : 64; l->m = zl_xrealloc(l->m, sizeof(zl_lora_module) * (size_t)cap); }
            mi = l->n++;
            zl_lora_module *m = &l->m[mi];
            memset(m, 0, sizeof *m);
            m->key = zl_xstrdup(module);
            m->dtype = t->dtype;
            char canon[128];
            int r = resolve_target(module, canon);
            if (r >= 0) { m->target = zl_xstrdup(canon); m->fused_qkv = r == 1; }
            map_put(&map, module, mi, l->n);
        }
        zl_lora_module *m = &l->m[mi];
        if (!zl_dtype_is_float(t->dtype) && part != PART_ALPHA) {
            zl_err("%s: tensor \"%s\" has dtype %s, expected a float type", label, t->name, zl_dtype_name(t->dtype));
            goto fail;
        }
        if (part == PART_UNSUP) {
            m->kind = ZL_AD_UNSUPPORTED;
            if (!m->unsupported) m->unsupported = zl_xstrdup(unsup);
            continue;
        }
        if (part == PART_ALPHA) {
            if (t->nelem != 1) { zl_err("%s: tensor \"%s\": alpha must hold one value, has %llu", label, t->name, (unsigned long long)t->nelem); goto fail; }
            double a;
            switch (t->dtype) {
            case ZL_I64: { int64_t v; memcpy(&v, t->data, 8); a = (double)v; break; }
            case ZL_I32: { int32_t v; memcpy(&v, t->data, 4); a = v; break; }
            case ZL_I16: { int16_t v; memcpy(&v, t->data, 2); a = v; break; }
            case ZL_I8: a = *(const int8_t *)t->data; break;
            case ZL_U8: case ZL_BOOL: a = *(const uint8_t *)t->data; break;
            default: { float f; zl_to_f32(&f, t->data, t->dtype, 1); a = f; }
            }
            m->has_alpha = 1;
            m->alpha = (float)a;
            continue;
        }
        dt_votes[t->dtype]++;
        zl_mat *mt = &m->p[part];
        if (mt->data) { zl_err("%s: module %s has two %s tensors (e.g. lora_A and lora_down)", label, m->key, part_suffix(part)); goto fail; }
        if (t->ndim > 4 || t->ndim < 1) {
            if (t->ndim == 0 && part == ZL_P_DORA) { /* scalar magnitude: nonsense */ }
            zl_err("%s: tensor \"%s\" has %d dimensions", label, t->name, t->ndim);
            goto fail;
        }
        for (int d = 0; d < t->ndim; d++)
            if (t->shape[d] <= 0 || t->shape[d] > INT32_MAX) { zl_err("%s: tensor \"%s\" has an empty or huge dimension", label, t->name); goto fail; }
        mt->data = zl_st_read_f32(st, t);
        if (!mt->data) { zl_err_prefix("%s", label); goto fail; }
        mt->ndim = t->ndim;
        for (int d = 0; d < t->ndim; d++) mt->shape[d] = t->shape[d];
    }
    map_free(&map);
    map = (strmap){0};
    if (l->n == 0) { zl_err("%s: contains no tensors: not a LoRA file", label); goto fail; }
    for (int i = 0; i < l->n; i++)
        if (finish_module(&l->m[i], label)) goto fail;
    /* format: majority of prefixes */
    int best = 0;
    for (int f = 1; f < ZL_FMT_COUNT; f++) if (fmt_votes[f] > fmt_votes[best]) best = f;
    l->format = (zl_format)best;
    int bestd = ZL_F32, nd = 0;
    for (int d = 0; d < ZL_DTYPE_COUNT; d++) if (dt_votes[d] > nd) { nd = dt_votes[d]; bestd = d; }
    l->dtype = (zl_dtype)bestd;
    /* qkv layout */
    int split = 0, fused = 0;
    for (int i = 0; i < l->n; i++) {
        if (!l->m[i].target) continue;
        if (l->m[i].fused_qkv) fused = 1;
        else if (strstr(l->m[i].target, ".attention.to_q") || strstr(l->m[i].target, ".attention.to_k") ||
                 strstr(l->m[i].target, ".attention.to_v")) split = 1;
    }
    l->qkv = fused && !split ? "fused" : split ? "split" : "none";
    /* metadata */
    l->nmeta = zl_st_meta_count(st);
    l->mkeys = zl_xcalloc((size_t)l->nmeta + 1, sizeof(char *));
    l->mvals = zl_xcalloc((size_t)l->nmeta + 1, sizeof(char *));
    for (int i = 0; i < l->nmeta; i++) {
        l->mkeys[i] = zl_xstrdup(zl_st_meta_key(st, i));
        l->mvals[i] = zl_xstrdup(zl_st_meta_value(st, i));
    }
    detect_family(l, st);
    if (strcmp(l->family, "z-image") != 0) l->qkv = "none"; /* the q/k/v layout is a Z-Image notion */
    *out = l;
    return 0;
fail:
    map_free(&map);
    zl_lora_free(l);
    return -1;
}

int zl_lora_load(const char *path, zl_lora **out) {
    zl_st *st;
    *out = NULL;
    if (zl_st_open(path, &st)) return -1;
    int rc = zl_lora_from_st(st, path, out);
    zl_st_close(st);
    return rc;
}
