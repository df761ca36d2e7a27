/* lora_init.c — see lora_init.h. */
#include "train/lora_init.h"
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "base/base.h"

static int wanted(const char *name, int t) {
    int refiner = zl_starts_with(name, "noise_refiner.") || zl_starts_with(name, "context_refiner.");
    if (!refiner && !zl_starts_with(name, "layers.")) return 0;
    if (refiner && !(t & ZL_T_REFINERS)) return 0;
    const char *dot = strchr(name, '.');
    dot = dot ? strchr(dot + 1, '.') : NULL; /* after "<block>.<i>." */
    if (!dot) return 0;
    const char *s = dot + 1;
    if (!strcmp(s, "attention.to_q") || !strcmp(s, "attention.to_k") || !strcmp(s, "attention.to_v") || !strcmp(s, "attention.to_out.0"))
        return t & ZL_T_ATTN;
    if (!strcmp(s, "feed_forward.w1") || !strcmp(s, "feed_forward.w2") || !strcmp(s, "feed_forward.w3")) return t & ZL_T_FFN;
    if (!strcmp(s, "adaLN_modulation.0")) return t & ZL_T_ADALN;
    return 0;
}

int zl_lora_targets_parse(const char *s, int *flags) {
    *flags = 0;
    char buf[256];
    snprintf(buf, sizeof buf, "%s", s);
    for (char *tok = strtok(buf, ","); tok; tok = strtok(NULL, ",")) {
        if (!strcmp(tok, "attn") || !strcmp(tok, "attention")) *flags |= ZL_T_ATTN;
        else if (!strcmp(tok, "ffn") || !strcmp(tok, "mlp")) *flags |= ZL_T_FFN;
        else if (!strcmp(tok, "adaln")) *flags |= ZL_T_ADALN;
        else if (!strcmp(tok, "refiners")) *flags |= ZL_T_REFINERS;
        else if (!strcmp(tok, "default")) *flags |= ZL_T_ATTN | ZL_T_FFN;
        else if (!strcmp(tok, "all")) *flags |= ZL_T_ATTN | ZL_T_FFN | ZL_T_ADALN | ZL_T_REFINERS;
        else return zl_err("unknown LoRA target '%s' (choices: attn, ffn, adaln, refiners, default, all)", tok);
    }
    if (!(*flags & (ZL_T_ATTN | ZL_T_FFN | ZL_T_ADALN))) return zl_err("LoRA targets '%s' select no linear layer", s);
    return 0;
}

int zl_lora_new_trainable(const zl_zimage_config *c, const zl_lora_init_opts *o, zl_lora **out) {
    *out = NULL;
    if (o->rank < 1 || o->rank > 4096) return zl_err("rank must be between 1 and 4096 (got %d)", o->rank);
    int t = o->targets ? o->targets : ZL_T_ATTN | ZL_T_FFN;
    zl_zimage_module *mods;
    int nm = zl_zimage_modules(c, &mods);
    zl_lora *l = zl_xcalloc(1, sizeof *l);
    l->m = zl_xcalloc((size_t)nm, sizeof(zl_lora_module));
    l->path = zl_xstrdup("(new)");
    l->format = ZL_FMT_AITOOLKIT;
    l->family = "z-image";
    l->qkv = "split";
    l->dtype = ZL_F32;
    float alpha = o->alpha > 0 ? o->alpha : (float)o->rank;
    int r = o->rank;
    for (int i = 0; i < nm; i++) {
        if (mods[i].type != ZL_MOD_LINEAR || !wanted(mods[i].name, t)) continue;
        zl_lora_module *m = &l->m[l->n++];
        m->key = zl_xstrdup(mods[i].name);
        m->target = zl_xstrdup(mods[i].name);
        m->kind = ZL_AD_LORA;
        m->has_alpha = 1;
        m->alpha = alpha;
        m->out = mods[i].out;
        m->in = mods[i].in;
        m->rank = r;
        m->dtype = ZL_F32;
        zl_mat *a = &m->p[ZL_P_DOWN], *b = &m->p[ZL_P_UP];
        a->ndim = b->ndim = 2;
        a->shape[0] = r; a->shape[1] = m->in;
        b->shape[0] = m->out; b->shape[1] = r;
        a->data = zl_xmalloc(sizeof(float) * (size_t)r * (size_t)m->in);
        b->data = zl_xcalloc((size_t)m->out * (size_t)r, sizeof(float));
        zl_rng rng = {o->seed ^ zl_hash64(m->key, strlen(m->key), 0x6c6f7261)};
        float bound = 1.0f / sqrtf((float)m->in), std = 1.0f / (float)r;
        for (size_t k = 0; k < (size_t)r * (size_t)m->in; k++)
            a->data[k] = o->gaussian ? std * zl_rng_normal(&rng) : bound * (2.0f * zl_rng_uniform(&rng) - 1.0f);
    }
    free(mods);
    if (l->n == 0) { zl_lora_free(l); return zl_err("no linear layer matches the LoRA targets"); }
    *out = l;
    return 0;
}
