/* zimage_names.c — see zimage_names.h. */
#include "zimage_names.h"
#include "../base/base.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void zl_zimage_default_config(zl_zimage_config *c) {
    memset(c, 0, sizeof *c);
    c->dim = 3840; c->n_layers = 30; c->n_refiner = 2; c->head_dim = 128; c->n_heads = 30;
    c->ffn = 10240; c->cap_feat_dim = 2560; c->adaln = 256; c->t_mid = 1024;
    c->in_channels = 16; c->patch = 2; c->patch_dim = 64;
    c->axes_dims[0] = 32; c->axes_dims[1] = 48; c->axes_dims[2] = 48;
    c->axes_lens[0] = 1536; c->axes_lens[1] = 512; c->axes_lens[2] = 512;
    c->rope_theta = 256.0f; c->norm_eps = 1e-5f; c->t_scale = 1000.0f;
}

typedef struct { zl_zimage_module *m; int n, cap; } modlist;

static void add(modlist *l, zl_module_type type, int out, int in, int bias, const char *fmt, ...) ZL_PRINTF(6, 7);
static void add(modlist *l, zl_module_type type, int out, int in, int bias, const char *fmt, ...) {
    if (l->n == l->cap) {
        l->cap = l->cap ? 2 * l->cap : 128;
        l->m = zl_xrealloc(l->m, sizeof(zl_zimage_module) * (size_t)l->cap);
    }
    zl_zimage_module *m = &l->m[l->n++];
    memset(m, 0, sizeof *m);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(m->name, sizeof m->name, fmt, ap);
    va_end(ap);
    m->type = type; m->out = out; m->in = in; m->has_bias = bias;
}

static void add_block(modlist *l, const zl_zimage_config *c, const char *blk, int i, int modulated) {
    const char *att[] = {"to_q", "to_k", "to_v", "to_out.0"};
    for (int k = 0; k < 4; k++) add(l, ZL_MOD_LINEAR, c->dim, c->dim, 0, "%s.%d.attention.%s", blk, i, att[k]);
    add(l, ZL_MOD_VECTOR, c->head_dim, 0, 0, "%s.%d.attention.norm_q", blk, i);
    add(l, ZL_MOD_VECTOR, c->head_dim, 0, 0, "%s.%d.attention.norm_k", blk, i);
    add(l, ZL_MOD_LINEAR, c->ffn, c->dim, 0, "%s.%d.feed_forward.w1", blk, i);
    add(l, ZL_MOD_LINEAR, c->dim, c->ffn, 0, "%s.%d.feed_forward.w2", blk, i);
    add(l, ZL_MOD_LINEAR, c->ffn, c->dim, 0, "%s.%d.feed_forward.w3", blk, i);
    const char *norms[] = {"attention_norm1", "attention_norm2", "ffn_norm1", "ffn_norm2"};
    for (int k = 0; k < 4; k++) add(l, ZL_MOD_VECTOR, c->dim, 0, 0, "%s.%d.%s", blk, i, norms[k]);
    if (modulated) add(l, ZL_MOD_LINEAR, 4 * c->dim, c->adaln, 1, "%s.%d.adaLN_modulation.0", blk, i);
}

int zl_zimage_modules(const zl_zimage_config *c, zl_zimage_module **out) {
    modlist l = {0};
    add(&l, ZL_MOD_LINEAR, c->dim, c->patch_dim, 1, "all_x_embedder.2-1");
    add(&l, ZL_MOD_LINEAR, c->t_mid, 256, 1, "t_embedder.mlp.0");
    add(&l, ZL_MOD_LINEAR, c->adaln, c->t_mid, 1, "t_embedder.mlp.2");
    add(&l, ZL_MOD_VECTOR, c->cap_feat_dim, 0, 0, "cap_embedder.0");
    add(&l, ZL_MOD_LINEAR, c->dim, c->cap_feat_dim, 1, "cap_embedder.1");
    add(&l, ZL_MOD_LINEAR, c->dim, c->adaln, 1, "all_final_layer.2-1.adaLN_modulation.1");
    add(&l, ZL_MOD_LINEAR, c->patch_dim, c->dim, 1, "all_final_layer.2-1.linear");
    for (int i = 0; i < c->n_refiner; i++) add_block(&l, c, "noise_refiner", i, 1);
    for (int i = 0; i < c->n_refiner; i++) add_block(&l, c, "context_refiner", i, 0);
    for (int i = 0; i < c->n_layers; i++) add_block(&l, c, "layers", i, 1);
    *out = l.m;
    return l.n;
}

/* Block prefix "layers.N." / "noise_refiner.N." / "context_refiner.N."; returns its length or 0. */
static size_t block_prefix(const char *s) {
    const char *blks[] = {"layers.", "noise_refiner.", "context_refiner."};
    for (int b = 0; b < 3; b++) {
        size_t n = strlen(blks[b]);
        if (strncmp(s, blks[b], n) != 0) continue;
        const char *p = s + n;
        if (*p < '0' || *p > '9') return 0;
        while (*p >= '0' && *p <= '9') p++;
        if (p - (s + n) > 4 || *p != '.') return 0;
        return (size_t)(p + 1 - s);
    }
    return 0;
}

/* In-block module names (canonical) and their native aliases. */
static const char *blk_canon[] = {"attention.to_q", "attention.to_k", "attention.to_v", "attention.to_out.0",
                                  "attention.norm_q", "attention.norm_k", "feed_forward.w1", "feed_forward.w2",
                                  "feed_forward.w3", "attention_norm1", "attention_norm2", "ffn_norm1", "ffn_norm2",
                                  "adaLN_modulation.0", NULL};
static const char *blk_alias[][2] = {{"attention.out", "attention.to_out.0"},
                                     {"attention.q_norm", "attention.norm_q"},
                                     {"attention.k_norm", "attention.norm_k"},
                                     {NULL, NULL}};
static const char *top_canon[] = {"all_x_embedder.2-1", "t_embedder.mlp.0", "t_embedder.mlp.2", "cap_embedder.0",
                                  "cap_embedder.1", "all_final_layer.2-1.adaLN_modulation.1",
                                  "all_final_layer.2-1.linear", "x_pad_token", "cap_pad_token", NULL};
static const char *top_alias[][2] = {{"x_embedder", "all_x_embedder.2-1"},
                                     {"final_layer.adaLN_modulation.1", "all_final_layer.2-1.adaLN_modulation.1"},
                                     {"final_layer.linear", "all_final_layer.2-1.linear"},
                                     {NULL, NULL}};

int zl_zimage_canonical(const char *name, char *canon) {
    size_t bp = block_prefix(name);
    if (bp) {
        const char *rest = name + bp;
        if (bp >= 96) return -1;
        if (strcmp(rest, "attention.qkv") == 0) { snprintf(canon, 128, "%s", name); return 1; }
        for (int i = 0; blk_canon[i]; i++)
            if (strcmp(rest, blk_canon[i]) == 0) { snprintf(canon, 128, "%s", name); return 0; }
        for (int i = 0; blk_alias[i][0]; i++)
            if (strcmp(rest, blk_alias[i][0]) == 0) {
                snprintf(canon, 128, "%.*s%s", (int)bp, name, blk_alias[i][1]);
                return 0;
            }
        return -1;
    }
    for (int i = 0; top_canon[i]; i++)
        if (strcmp(name, top_canon[i]) == 0) { snprintf(canon, 128, "%s", name); return 0; }
    for (int i = 0; top_alias[i][0]; i++)
        if (strcmp(name, top_alias[i][0]) == 0) { snprintf(canon, 128, "%s", top_alias[i][1]); return 0; }
    return -1;
}

void zl_zimage_native(const char *canon, char *out) {
    size_t bp = block_prefix(canon);
    if (bp) {
        for (int i = 0; blk_alias[i][0]; i++)
            if (strcmp(canon + bp, blk_alias[i][1]) == 0) {
                snprintf(out, 128, "%.*s%s", (int)bp, canon, blk_alias[i][0]);
                return;
            }
    } else {
        for (int i = 0; top_alias[i][0]; i++)
            if (strcmp(canon, top_alias[i][1]) == 0) { snprintf(out, 128, "%s", top_alias[i][0]); return; }
    }
    snprintf(out, 128, "%s", canon);
}

/* Underscored forms: replace '.' by '_' in every known name (canonical and alias) and compare. */
static int match_us(const char *us, const char *dotted) {
    for (; *dotted; dotted++, us++) {
        char c = *dotted == '.' ? '_' : *dotted;
        if (*us != c) return 0;
    }
    return *us == 0;
}

int zl_zimage_from_underscored(const char *name, char *out) {
    const char *blks[] = {"layers_", "noise_refiner_", "context_refiner_"};
    for (int b = 0; b < 3; b++) {
        size_t n = strlen(blks[b]);
        if (strncmp(name, blks[b], n) != 0) continue;
        const char *p = name + n, *d = p;
        while (*p >= '0' && *p <= '9') p++;
        if (p == d || p - d > 4 || *p != '_') return -1;
        const char *rest = p + 1;
        char blk[64];
        snprintf(blk, sizeof blk, "%.*s.%.*s.", (int)(n - 1), blks[b], (int)(p - d), d);
        for (int i = 0; blk_canon[i]; i++)
            if (match_us(rest, blk_canon[i])) { snprintf(out, 128, "%s%s", blk, blk_canon[i]); return 0; }
        for (int i = 0; blk_alias[i][0]; i++)
            if (match_us(rest, blk_alias[i][0])) { snprintf(out, 128, "%s%s", blk, blk_alias[i][0]); return 0; }
        if (match_us(rest, "attention.qkv")) { snprintf(out, 128, "%sattention.qkv", blk); return 0; }
        return -1;
    }
    for (int i = 0; top_canon[i]; i++)
        if (match_us(name, top_canon[i])) { snprintf(out, 128, "%s", top_canon[i]); return 0; }
    for (int i = 0; top_alias[i][0]; i++)
        if (match_us(name, top_alias[i][0])) { snprintf(out, 128, "%s", top_alias[i][0]); return 0; }
    return -1;
}
