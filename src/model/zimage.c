/* zimage.c — the Z-Image transformer: loading, LoRA stacks, forward. See zimage.h.
 * Model code: data movement and calls into nn/ops.h only. */
#include "zimage.h"
#include "zimage_internal.h"
#include "../base/base.h"
#include "../io/safetensors.h"

#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* ------------------------------------------------------------------ ownership */

static void *own(zl_zimage *m, void *p) {
    if (m->nowned == m->capowned) {
        m->capowned = m->capowned ? 2 * m->capowned : 256;
        m->owned = zl_xrealloc(m->owned, sizeof(void *) * (size_t)m->capowned);
    }
    m->owned[m->nowned++] = p;
    return p;
}

void zl_zimage_default_opts(zl_zimage_opts *o) { o->weight_dtype = ZL_BF16; }

/* A value an applied LoRA changed in place: a norm vector (its old contents) or a linear's bias pointer. */
struct zl_zundo {
    float *vec, *old_vec;
    int n;
    zl_linear *lin;
    const float *old_bias;
};

void zl_zimage_free(zl_zimage *m) {
    if (!m) return;
    for (int i = 0; i < m->nundo; i++) free(m->undo[i].old_vec);
    free(m->undo);
    for (int i = 0; i < m->nowned; i++) free(m->owned[i]);
    free(m->owned);
    free(m->noise_ref); free(m->ctx_ref); free(m->layers);
    zl_st_close(m->st);
    free(m->path);
    free(m);
}

/* ------------------------------------------------------------------ name lookup */

/* A canonical weight name -> tensor (+ row slice for fused qkv). */
typedef struct {
    const zl_tensor_info *t;
    int64_t row0, rows;
} src_tensor;

typedef struct {
    zl_zimage *m;
    const char *prefix;  /* "", "model.diffusion_model.", "diffusion_model." */
    int comfy;
    int missing;
    zl_buf missing_list;
} loader;

static const zl_tensor_info *raw(loader *L, const char *name) {
    char k[300];
    snprintf(k, sizeof k, "%s%s", L->prefix, name);
    return zl_st_find(L->m->st, k);
}

/* Finds the tensor for canonical name `canon` + suffix (".weight"/".bias" or "" for pad tokens). */
static int find_src(loader *L, const char *canon, const char *suffix, src_tensor *s) {
    char name[300], nat[128];
    s->row0 = 0;
    s->rows = -1;
    if (L->comfy) {
        const char *at = strstr(canon, ".attention.to_");
        if (at && (!strcmp(at, ".attention.to_q") || !strcmp(at, ".attention.to_k") || !strcmp(at, ".attention.to_v"))) {
            int k = at[strlen(".attention.to_")] == 'q' ? 0 : at[strlen(".attention.to_")] == 'k' ? 1 : 2;
            snprintf(name, sizeof name, "%.*s.attention.qkv%s", (int)(at - canon), canon, suffix);
            s->t = raw(L, name);
            if (s->t && s->t->ndim >= 1) {
                if (s->t->shape[0] % 3) return zl_err("%s: %s has %lld rows, not 3 x width", L->m->path, name, (long long)s->t->shape[0]);
                s->rows = s->t->shape[0] / 3;
                s->row0 = k * s->rows;
            }
            return s->t ? 0 : -1;
        }
        zl_zimage_native(canon, nat);
        canon = nat;
    }
    snprintf(name, sizeof name, "%s%s", canon, suffix);
    s->t = raw(L, name);
    if (s->t) s->rows = s->t->ndim ? s->t->shape[0] : 1;
    return s->t ? 0 : -1;
}

static void note_missing(loader *L, const char *canon, const char *suffix) {
    if (L->missing < 8) zl_buf_printf(&L->missing_list, "%s%s%s", L->missing ? ", " : "", canon, suffix);
    L->missing++;
}

/* Loads a linear weight [out, in] (+ bias when has_bias). */
static int load_linear(loader *L, zl_linear *lin, const char *canon, int out, int in, int has_bias) {
    src_tensor s;
    memset(lin, 0, sizeof *lin);
    lin->out = out;
    lin->in = in;
    if (find_src(L, canon, ".weight", &s)) { note_missing(L, canon, ".weight"); return 0; }
    const zl_tensor_info *t = s.t;
    if (t->ndim != 2 || s.rows != out || t->shape[1] != in)
        return zl_err("%s: %s.weight has shape [%lld,%lld]%s, expected [%d,%d]", L->m->path, canon,
                      (long long)(t->ndim ? t->shape[0] : 0), (long long)(t->ndim > 1 ? t->shape[1] : 0),
                      s.row0 || s.rows != (t->ndim ? t->shape[0] : 0) ? " (fused qkv)" : "", out, in);
    if (!zl_dtype_is_float(t->dtype)) return zl_err("%s: %s.weight has dtype %s", L->m->path, canon, zl_dtype_name(t->dtype));
    size_t es = zl_dtype_size(t->dtype), n = (size_t)out * (size_t)in;
    const char *src = (const char *)t->data + (size_t)s.row0 * (size_t)in * es;
    lin->dtype = L->m->weight_dtype;
    if (t->dtype == lin->dtype && (uintptr_t)src % es == 0) {
        lin->w = src; /* zero copy; ask for the pages ahead of the first forward */
        zl_pages_willneed(src, n * es);
    } else if (t->dtype == lin->dtype) { /* unaligned in the file: copy */
        void *d = zl_try_malloc(n * es);
        if (!d) return zl_err_prefix("%s: loading %s", L->m->path, canon);
        memcpy(d, src, n * es);
        lin->w = own(L->m, d);
    } else if (lin->dtype == ZL_BF16) {
        uint16_t *d = zl_try_malloc(n * 2);
        if (!d) return zl_err_prefix("%s: loading %s", L->m->path, canon);
        zl_to_bf16(d, src, t->dtype, n);
        zl_pages_release(src, n * es);
        lin->w = own(L->m, d);
    } else {
        float *d = zl_try_malloc(n * 4);
        if (!d) return zl_err_prefix("%s: loading %s", L->m->path, canon);
        zl_to_f32(d, src, t->dtype, n);
        zl_pages_release(src, n * es);
        lin->w = own(L->m, d);
    }
    if (has_bias) {
        if (find_src(L, canon, ".bias", &s)) { note_missing(L, canon, ".bias"); return 0; }
        if (s.t->ndim != 1 || s.rows != out) return zl_err("%s: %s.bias has %lld entries, expected %d", L->m->path, canon, (long long)s.rows, out);
        float *b = zl_try_malloc(sizeof(float) * (size_t)out);
        if (!b) return -1;
        zl_to_f32(b, (const char *)s.t->data + (size_t)s.row0 * zl_dtype_size(s.t->dtype), s.t->dtype, (size_t)out);
        lin->bias = own(L->m, b);
    }
    return 0;
}

/* Loads a vector [n] (norm weight, pad token [1,n]) as owned f32. */
static int load_vec(loader *L, float **v, const char *canon, const char *suffix, int n) {
    src_tensor s;
    *v = NULL;
    if (find_src(L, canon, suffix, &s)) { note_missing(L, canon, suffix); return 0; }
    if ((int64_t)s.t->nelem != n) return zl_err("%s: %s%s has %llu entries, expected %d", L->m->path, canon, suffix, (unsigned long long)s.t->nelem, n);
    if (!zl_dtype_is_float(s.t->dtype)) return zl_err("%s: %s%s has dtype %s", L->m->path, canon, suffix, zl_dtype_name(s.t->dtype));
    float *d = zl_xmalloc(sizeof(float) * (size_t)n);
    zl_to_f32(d, s.t->data, s.t->dtype, (size_t)n);
    *v = own(L->m, d);
    return 0;
}

/* ------------------------------------------------------------------ config */

static int count_blocks(loader *L, const char *blk) {
    int n = 0;
    char name[128];
    for (;; n++) {
        snprintf(name, sizeof name, "%s.%d.attention_norm1.weight", blk, n);
        if (!raw(L, name)) break;
    }
    return n;
}

static const zl_tensor_info *find_any(loader *L, const char *canon_w) {
    src_tensor s;
    char canon[128];
    snprintf(canon, sizeof canon, "%.*s", (int)(strlen(canon_w) - strlen(".weight")), canon_w);
    return find_src(L, canon, ".weight", &s) ? NULL : s.t;
}

static int read_config_json(const char *dir, zl_zimage_config *c, int *have_axes) {
    char p[4200];
    snprintf(p, sizeof p, "%s/config.json", dir);
    FILE *f = fopen(p, "rb");
    if (!f) return 0;
    char *buf = zl_xmalloc(1 << 20);
    size_t n = fread(buf, 1, (1 << 20) - 1, f);
    fclose(f);
    buf[n] = 0;
    cJSON *j = cJSON_Parse(buf);
    free(buf);
    if (!j) return zl_err("%s: not valid JSON", p);
    const cJSON *v;
#define GETI(key, field) if ((v = cJSON_GetObjectItemCaseSensitive(j, key)) && cJSON_IsNumber(v)) c->field = v->valueint
#define GETF(key, field) if ((v = cJSON_GetObjectItemCaseSensitive(j, key)) && cJSON_IsNumber(v)) c->field = (float)v->valuedouble
    GETI("dim", dim); GETI("n_layers", n_layers); GETI("n_refiner_layers", n_refiner); GETI("n_heads", n_heads);
    GETI("cap_feat_dim", cap_feat_dim); GETI("in_channels", in_channels);
    GETF("rope_theta", rope_theta); GETF("norm_eps", norm_eps); GETF("t_scale", t_scale);
#undef GETI
#undef GETF
    const cJSON *ax = cJSON_GetObjectItemCaseSensitive(j, "axes_dims");
    if (cJSON_IsArray(ax) && cJSON_GetArraySize(ax) == 3) {
        for (int i = 0; i < 3; i++) c->axes_dims[i] = cJSON_GetArrayItem(ax, i)->valueint;
        *have_axes = 1;
    }
    const cJSON *al = cJSON_GetObjectItemCaseSensitive(j, "axes_lens");
    if (cJSON_IsArray(al) && cJSON_GetArraySize(al) == 3)
        for (int i = 0; i < 3; i++) c->axes_lens[i] = cJSON_GetArrayItem(al, i)->valueint;
    const cJSON *ps = cJSON_GetObjectItemCaseSensitive(j, "all_patch_size");
    if (cJSON_IsArray(ps) && cJSON_GetArraySize(ps) >= 1) c->patch = cJSON_GetArrayItem(ps, 0)->valueint;
    cJSON_Delete(j);
    return 1;
}

/* Says what a checkpoint that is not Z-Image is, for the error message. */
static const char *foreign_kind(const zl_st *st) {
    for (int i = 0; i < zl_st_count(st); i++) {
        const char *n = zl_st_tensor(st, i)->name;
        if (strstr(n, "double_blocks") || strstr(n, "single_blocks") || strstr(n, "single_transformer_blocks")) return "a FLUX checkpoint";
        if (strstr(n, "norm_final.weight") || strstr(n, "adaLN_modulation.1")) {
            if (!strstr(n, "final_layer")) return "a Lumina-Image-2.0 checkpoint (same NextDiT names as Z-Image)";
        }
        if (strstr(n, "model.layers.") && strstr(n, "self_attn")) return "a text encoder (Qwen3/LLM) checkpoint";
        if (strstr(n, "encoder.down") || strstr(n, "decoder.up")) return "a VAE checkpoint";
        if (strstr(n, "lora_A") || strstr(n, "lora_down") || strstr(n, "lokr_") || strstr(n, "hada_")) return "a LoRA file";
        if (strstr(n, "down_blocks") || strstr(n, "input_blocks")) return "a UNet (Stable Diffusion) checkpoint";
    }
    return NULL;
}

/* ------------------------------------------------------------------ load */

static int load_block(loader *L, zl_zblock *b, const char *blk, int i, int modulated) {
    const zl_zimage_config *c = &L->m->cfg;
    char p[128], n[160];
    snprintf(p, sizeof p, "%s.%d", blk, i);
    b->modulated = modulated;
    struct { zl_linear *l; const char *name; int out, in; } lin[] = {
        {&b->q, "attention.to_q", c->dim, c->dim}, {&b->k, "attention.to_k", c->dim, c->dim},
        {&b->v, "attention.to_v", c->dim, c->dim}, {&b->o, "attention.to_out.0", c->dim, c->dim},
        {&b->w1, "feed_forward.w1", c->ffn, c->dim}, {&b->w2, "feed_forward.w2", c->dim, c->ffn},
        {&b->w3, "feed_forward.w3", c->ffn, c->dim},
    };
    for (size_t k = 0; k < sizeof lin / sizeof *lin; k++) {
        snprintf(n, sizeof n, "%s.%s", p, lin[k].name);
        if (load_linear(L, lin[k].l, n, lin[k].out, lin[k].in, 0)) return -1;
    }
    if (modulated) {
        snprintf(n, sizeof n, "%s.adaLN_modulation.0", p);
        if (load_linear(L, &b->ada, n, 4 * c->dim, c->adaln, 1)) return -1;
    }
    struct { float **v; const char *name; int len; } vec[] = {
        {&b->norm_q, "attention.norm_q", c->head_dim}, {&b->norm_k, "attention.norm_k", c->head_dim},
        {&b->attn_norm1, "attention_norm1", c->dim}, {&b->attn_norm2, "attention_norm2", c->dim},
        {&b->ffn_norm1, "ffn_norm1", c->dim}, {&b->ffn_norm2, "ffn_norm2", c->dim},
    };
    for (size_t k = 0; k < sizeof vec / sizeof *vec; k++) {
        snprintf(n, sizeof n, "%s.%s", p, vec[k].name);
        if (load_vec(L, vec[k].v, n, ".weight", vec[k].len)) return -1;
    }
    return 0;
}

int zl_zimage_load(const char *path, const zl_zimage_opts *o, zl_zimage **out) {
    *out = NULL;
    zl_zimage_opts def;
    if (!o) { zl_zimage_default_opts(&def); o = &def; }
    if (o->weight_dtype != ZL_F32 && o->weight_dtype != ZL_BF16) return zl_err("weights can be kept as F32 or BF16 only");
    zl_zimage *m = zl_xcalloc(1, sizeof *m);
    m->weight_dtype = o->weight_dtype;
    char dir[4096];
    const char *open_path = path;
    snprintf(dir, sizeof dir, "%s/transformer", path);
    if (zl_is_dir(path) && zl_is_dir(dir)) open_path = dir;
    m->path = zl_xstrdup(open_path);
    loader L = {.m = m, .prefix = ""};
    if (zl_st_open(open_path, &m->st)) { zl_zimage_free(m); return -1; }
    /* naming and prefix */
    const char *prefixes[] = {"", "model.diffusion_model.", "diffusion_model."};
    int found = 0;
    for (int p = 0; p < 3 && !found; p++) {
        L.prefix = prefixes[p];
        if (raw(&L, "cap_embedder.1.weight") || raw(&L, "layers.0.attention_norm1.weight")) found = 1;
    }
    if (!found) {
        const char *what = foreign_kind(m->st);
        zl_err("%s: not a Z-Image transformer checkpoint%s%s (no cap_embedder.1.weight or layers.0.* tensors)", open_path,
               what ? ": it looks like " : "", what ? what : "");
        zl_zimage_free(m);
        return -1;
    }
    L.comfy = raw(&L, "layers.0.attention.qkv.weight") != NULL || raw(&L, "x_embedder.weight") != NULL;
    m->naming = L.comfy ? "comfyui" : "diffusers";
    /* config: defaults, then shapes, then config.json */
    zl_zimage_config *c = &m->cfg;
    zl_zimage_default_config(c);
    const zl_tensor_info *xe = find_any(&L, "all_x_embedder.2-1.weight"), *ce = find_any(&L, "cap_embedder.1.weight"),
                         *nq = find_any(&L, "layers.0.attention.norm_q.weight"), *w1 = find_any(&L, "layers.0.feed_forward.w1.weight"),
                         *t0 = find_any(&L, "t_embedder.mlp.0.weight"), *t2 = find_any(&L, "t_embedder.mlp.2.weight");
    if (!xe || !ce || !nq || !w1 || !t0 || !t2 || xe->ndim != 2 || ce->ndim != 2 || w1->ndim != 2 || t0->ndim != 2 || t2->ndim != 2) {
        const char *what = foreign_kind(m->st);
        zl_err("%s: incomplete Z-Image checkpoint: missing or malformed %s%s%s", open_path,
               !xe ? "all_x_embedder.2-1 (x_embedder)" : !ce ? "cap_embedder.1" : !nq ? "layers.0.attention.norm_q" : !w1 ? "layers.0.feed_forward.w1" : "t_embedder",
               what ? "; it looks like " : "", what ? what : "");
        zl_zimage_free(m);
        return -1;
    }
    c->dim = (int)xe->shape[0];
    c->patch_dim = (int)xe->shape[1];
    c->cap_feat_dim = (int)ce->shape[1];
    c->head_dim = (int)nq->nelem;
    c->ffn = (int)w1->shape[0];
    c->t_mid = (int)t0->shape[0];
    c->adaln = (int)t2->shape[0];
    c->n_layers = count_blocks(&L, "layers");
    c->n_refiner = count_blocks(&L, "noise_refiner");
    int have_axes = 0;
    if (zl_is_dir(open_path) && read_config_json(open_path, c, &have_axes) < 0) { zl_zimage_free(m); return -1; }
    if (c->head_dim <= 0 || c->dim % c->head_dim) {
        zl_err("%s: width %d is not a multiple of the head size %d", open_path, c->dim, c->head_dim);
        zl_zimage_free(m);
        return -1;
    }
    c->n_heads = c->dim / c->head_dim;
    if (!have_axes) {
        if (c->head_dim == 128) { c->axes_dims[0] = 32; c->axes_dims[1] = c->axes_dims[2] = 48; }
        else { c->axes_dims[0] = c->head_dim / 4; c->axes_dims[1] = c->axes_dims[2] = (c->head_dim - c->head_dim / 4) / 2; }
    }
    if (c->axes_dims[0] + c->axes_dims[1] + c->axes_dims[2] != c->head_dim || (c->axes_dims[0] | c->axes_dims[1] | c->axes_dims[2]) & 1) {
        zl_err("%s: RoPE axes_dims %d+%d+%d must be even and sum to the head size %d", open_path, c->axes_dims[0], c->axes_dims[1], c->axes_dims[2], c->head_dim);
        zl_zimage_free(m);
        return -1;
    }
    c->in_channels = c->patch_dim / (c->patch * c->patch);
    if (c->in_channels * c->patch * c->patch != c->patch_dim) {
        zl_err("%s: x_embedder input %d is not patch² × channels", open_path, c->patch_dim);
        zl_zimage_free(m);
        return -1;
    }
    if (c->n_layers < 1) { zl_err("%s: no transformer layers found", open_path); zl_zimage_free(m); return -1; }
    /* weights */
    int rc = load_linear(&L, &m->x_emb, "all_x_embedder.2-1", c->dim, c->patch_dim, 1);
    if (!rc) rc = load_linear(&L, &m->t_mlp0, "t_embedder.mlp.0", c->t_mid, 256, 1);
    if (!rc) rc = load_linear(&L, &m->t_mlp2, "t_embedder.mlp.2", c->adaln, c->t_mid, 1);
    if (!rc) rc = load_vec(&L, &m->cap_norm, "cap_embedder.0", ".weight", c->cap_feat_dim);
    if (!rc) rc = load_linear(&L, &m->cap_emb, "cap_embedder.1", c->dim, c->cap_feat_dim, 1);
    if (!rc) rc = load_linear(&L, &m->final_ada, "all_final_layer.2-1.adaLN_modulation.1", c->dim, c->adaln, 1);
    if (!rc) rc = load_linear(&L, &m->final_lin, "all_final_layer.2-1.linear", c->patch_dim, c->dim, 1);
    if (!rc) rc = load_vec(&L, &m->x_pad, "x_pad_token", "", c->dim);
    if (!rc) rc = load_vec(&L, &m->cap_pad, "cap_pad_token", "", c->dim);
    m->noise_ref = zl_xcalloc((size_t)c->n_refiner + 1, sizeof(zl_zblock));
    m->ctx_ref = zl_xcalloc((size_t)c->n_refiner + 1, sizeof(zl_zblock));
    m->layers = zl_xcalloc((size_t)c->n_layers, sizeof(zl_zblock));
    for (int i = 0; i < c->n_refiner && !rc; i++) rc = load_block(&L, &m->noise_ref[i], "noise_refiner", i, 1);
    for (int i = 0; i < c->n_refiner && !rc; i++) rc = load_block(&L, &m->ctx_ref[i], "context_refiner", i, 0);
    for (int i = 0; i < c->n_layers && !rc; i++) rc = load_block(&L, &m->layers[i], "layers", i, 1);
    if (!rc && L.missing) {
        zl_err("%s: incomplete Z-Image checkpoint: %d tensor(s) missing: %s%s", open_path, L.missing, L.missing_list.s,
               L.missing > 8 ? ", …" : "");
        rc = -1;
    }
    zl_buf_free(&L.missing_list);
    if (rc) { zl_zimage_free(m); return -1; }
    m->nowned_loaded = m->nowned;
    *out = m;
    return 0;
}

/* ------------------------------------------------------------------ module table (for LoRA) */

typedef struct { zl_linear *lin; float *vec; int n; } target_ref;

static void block_ref(zl_zblock *b, const char *rest, target_ref *r) {
    struct { const char *n; zl_linear *l; } ls[] = {{"attention.to_q", &b->q}, {"attention.to_k", &b->k}, {"attention.to_v", &b->v},
                                                   {"attention.to_out.0", &b->o}, {"feed_forward.w1", &b->w1}, {"feed_forward.w2", &b->w2},
                                                   {"feed_forward.w3", &b->w3}, {"adaLN_modulation.0", b->modulated ? &b->ada : NULL}};
    for (size_t i = 0; i < sizeof ls / sizeof *ls; i++)
        if (!strcmp(rest, ls[i].n)) { r->lin = ls[i].l; return; }
    struct { const char *n; float *v; } vs[] = {{"attention.norm_q", b->norm_q}, {"attention.norm_k", b->norm_k},
                                                {"attention_norm1", b->attn_norm1}, {"attention_norm2", b->attn_norm2},
                                                {"ffn_norm1", b->ffn_norm1}, {"ffn_norm2", b->ffn_norm2}};
    for (size_t i = 0; i < sizeof vs / sizeof *vs; i++)
        if (!strcmp(rest, vs[i].n)) { r->vec = vs[i].v; return; }
}

/* Resolves a canonical (split) target name to the model's linear or vector. */
static target_ref resolve(zl_zimage *m, const char *canon) {
    target_ref r = {0};
    const zl_zimage_config *c = &m->cfg;
    struct { const char *n; zl_linear *l; } top[] = {
        {"all_x_embedder.2-1", &m->x_emb}, {"t_embedder.mlp.0", &m->t_mlp0}, {"t_embedder.mlp.2", &m->t_mlp2},
        {"cap_embedder.1", &m->cap_emb}, {"all_final_layer.2-1.adaLN_modulation.1", &m->final_ada},
        {"all_final_layer.2-1.linear", &m->final_lin}};
    for (size_t i = 0; i < sizeof top / sizeof *top; i++)
        if (!strcmp(canon, top[i].n)) { r.lin = top[i].l; return r; }
    if (!strcmp(canon, "cap_embedder.0")) { r.vec = m->cap_norm; r.n = c->cap_feat_dim; return r; }
    struct { const char *n; zl_zblock *b; int count; } blks[] = {
        {"layers.", m->layers, c->n_layers}, {"noise_refiner.", m->noise_ref, c->n_refiner}, {"context_refiner.", m->ctx_ref, c->n_refiner}};
    for (size_t i = 0; i < 3; i++) {
        size_t n = strlen(blks[i].n);
        if (strncmp(canon, blks[i].n, n)) continue;
        char *end;
        long idx = strtol(canon + n, &end, 10);
        if (end == canon + n || *end != '.' || idx < 0 || idx >= blks[i].count) return r;
        block_ref(&blks[i].b[idx], end + 1, &r);
        if (r.vec) r.n = strstr(end + 1, "norm_q") || strstr(end + 1, "norm_k") ? c->head_dim : c->dim;
        return r;
    }
    return r;
}

/* Makes a linear's weight writable and owned (copy out of the mmapped file). */
static int own_weight(zl_zimage *m, zl_linear *l) {
    for (int i = 0; i < m->nowned; i++)
        if (m->owned[i] == l->w) return 0;
    size_t n = (size_t)l->out * l->in * zl_dtype_size(l->dtype);
    void *d = zl_try_malloc(n);
    if (!d) return -1;
    memcpy(d, l->w, n);
    l->w = own(m, d);
    return 0;
}

/* Adds rows [row0, row0+l->out) of dw [*, in] into l's weight. */
static int merge_into(zl_zimage *m, zl_linear *l, const float *dw) {
    m->lora_merged = 1;
    if (own_weight(m, l)) return -1;
    size_t n = (size_t)l->out * l->in;
    if (l->dtype == ZL_F32) zl_op_add((float *)l->w, l->w, dw, n);
    else {
        float *tmp = zl_try_malloc(n * sizeof(float));
        if (!tmp) return -1;
        zl_to_f32(tmp, l->w, ZL_BF16, n);
        zl_op_add(tmp, tmp, dw, n);
        zl_from_f32((void *)l->w, tmp, ZL_BF16, n);
        free(tmp);
    }
    return 0;
}

/* Remembers a norm vector's contents (vec) or a linear's bias (lin) before the first change by a LoRA. */
static void note_undo(zl_zimage *m, float *vec, int n, zl_linear *lin) {
    for (int i = 0; i < m->nundo; i++)
        if ((vec && m->undo[i].vec == vec) || (lin && m->undo[i].lin == lin)) return;
    m->undo = zl_xrealloc(m->undo, sizeof(struct zl_zundo) * (size_t)(m->nundo + 1));
    struct zl_zundo *u = &m->undo[m->nundo++];
    memset(u, 0, sizeof *u);
    if (vec) {
        u->vec = vec;
        u->n = n;
        u->old_vec = zl_xmalloc(sizeof(float) * (size_t)n);
        memcpy(u->old_vec, vec, sizeof(float) * (size_t)n);
    } else {
        u->lin = lin;
        u->old_bias = lin->bias;
    }
}

static void add_branch(zl_zimage *m, zl_linear *l, const float *down, const float *up, int r, float scale) {
    zl_branch *nb = zl_xmalloc(sizeof(zl_branch) * (size_t)(l->nbranch + 1));
    if (l->nbranch) memcpy(nb, l->branch, sizeof(zl_branch) * (size_t)l->nbranch);
    nb[l->nbranch] = (zl_branch){down, up, r, scale, NULL, NULL, 0.0f, 0};
    l->branch = own(m, nb); /* the old array stays owned too: small */
    l->nbranch++;
}

static int add_delta(zl_zimage *m, zl_linear *l, const float *dw) {
    size_t n = (size_t)l->out * l->in;
    if (!l->delta) {
        float *d = zl_try_calloc(n, sizeof(float));
        if (!d) return -1;
        l->delta = own(m, d);
    }
    zl_op_add((float *)l->delta, l->delta, dw, n);
    return 0;
}

int zl_zimage_apply_loras(zl_zimage *m, zl_lora **loras, const float *strengths, int n, int merge, int force,
                          void (*report)(const char *line)) {
    zl_module_table t = {0};
    /* the model's own module table, for zl_lora_check_module */
    zl_zimage_module *mods;
    int nm = zl_zimage_modules(&m->cfg, &mods);
    t.name = zl_xcalloc((size_t)nm, sizeof(char *));
    t.out = zl_xcalloc((size_t)nm, sizeof(int));
    t.in = zl_xcalloc((size_t)nm, sizeof(int));
    for (int i = 0; i < nm; i++) {
        t.name[i] = zl_xstrdup(mods[i].name);
        t.out[i] = mods[i].out;
        t.in[i] = mods[i].type == ZL_MOD_LINEAR ? mods[i].in : 0;
    }
    t.n = nm;
    t.dim = m->cfg.dim;
    free(mods);
    int rc = 0;
    char buf[512];
    for (int f = 0; f < n && rc == 0; f++) {
        zl_lora *l = loras[f];
        int applied = 0, total = 0, bad = 0;
        for (int i = 0; i < l->n; i++) {
            int nt = l->m[i].has_alpha;
            for (int p = 0; p < ZL_P_COUNT; p++) nt += l->m[i].p[p].data != NULL;
            total += nt;
            const char *why = zl_lora_check_module(l, i, &t, buf, sizeof buf);
            if (why) {
                bad++;
                if (!force) { rc = zl_err("%s: %s does not apply: %s (see `zlora lora check`, or force it)", l->path, l->m[i].key, why); break; }
                zl_warn("%s: skipping %s: %s", l->path, l->m[i].key, why);
                continue;
            }
            applied += nt;
        }
        if (rc) break;
        char line[600];
        snprintf(line, sizeof line, "%s: applied %d/%d tensors at strength %g (%s)", l->path, applied, total,
                 (double)strengths[f], merge ? "merged" : "runtime");
        if (report) report(line);
        for (int i = 0; i < l->n && rc == 0; i++) {
            zl_lora_module *mo = &l->m[i];
            if (zl_lora_check_module(l, i, &t, buf, sizeof buf)) continue;
            float s = strengths[f];
            int parts = mo->fused_qkv ? 3 : 1;
            int rows = mo->out / parts;
            target_ref tr[3];
            for (int k = 0; k < parts; k++) {
                char name[160];
                if (mo->fused_qkv) snprintf(name, sizeof name, "%.*sto_%c", (int)(strlen(mo->target) - 3), mo->target, "qkv"[k]);
                else snprintf(name, sizeof name, "%s", mo->target);
                tr[k] = resolve(m, name);
                if (!tr[k].lin && !tr[k].vec) { rc = zl_err("%s: %s: no such module in this model", l->path, name); break; }
            }
            if (rc) break;
            if (tr[0].vec) { /* diff on a norm vector */
                if (mo->kind != ZL_AD_DIFF || !mo->p[ZL_P_DIFF].data) { rc = zl_err("%s: %s: only a diff can change a norm weight", l->path, mo->key); break; }
                note_undo(m, tr[0].vec, tr[0].n, NULL);
                zl_op_axpy(tr[0].vec, s, mo->p[ZL_P_DIFF].data, (size_t)tr[0].n);
                continue;
            }
            if (mo->kind == ZL_AD_DIFF && mo->p[ZL_P_DIFF_B].data) {
                for (int k = 0; k < parts; k++) {
                    if (!tr[k].lin->bias) { rc = zl_err("%s: %s: diff_b for a layer without bias", l->path, mo->key); break; }
                    float *nb = zl_xmalloc(sizeof(float) * (size_t)rows);
                    memcpy(nb, tr[k].lin->bias, sizeof(float) * (size_t)rows);
                    zl_op_axpy(nb, s, mo->p[ZL_P_DIFF_B].data + (size_t)k * rows, (size_t)rows);
                    note_undo(m, NULL, 0, tr[k].lin);
                    tr[k].lin->bias = own(m, nb);
                }
                if (rc) break;
                if (!mo->p[ZL_P_DIFF].data) continue;
            }
            if (!merge && mo->kind == ZL_AD_LORA && !mo->dora) {
                float sc = s * zl_lora_module_scale(mo);
                for (int k = 0; k < parts; k++)
                    add_branch(m, tr[k].lin, mo->p[ZL_P_DOWN].data, mo->p[ZL_P_UP].data + (size_t)k * rows * mo->rank, mo->rank, sc);
                continue;
            }
            if (mo->dora) {
                if (!merge) { rc = zl_err("%s: %s is DoRA, which needs merged mode", l->path, mo->key); break; }
                m->lora_merged = 1;
                if (parts != 1) { rc = zl_err("%s: %s: DoRA on fused qkv is not supported", l->path, mo->key); break; }
                zl_linear *lin = tr[0].lin;
                size_t ne = (size_t)lin->out * lin->in;
                float *w = zl_try_malloc(ne * sizeof(float));
                if (!w) { rc = -1; break; }
                zl_to_f32(w, lin->w, lin->dtype, ne);
                if (zl_lora_apply_dora(mo, s, w) || own_weight(m, lin)) { free(w); rc = -1; break; }
                zl_from_f32((void *)lin->w, w, lin->dtype, ne);
                free(w);
                continue;
            }
            size_t ne = (size_t)mo->out * (size_t)mo->in;
            float *dw = zl_try_malloc(ne * sizeof(float));
            if (!dw || zl_lora_delta(mo, s, dw)) { free(dw); rc = zl_err_prefix("%s", l->path); break; }
            for (int k = 0; k < parts && rc == 0; k++) {
                const float *blk = dw + (size_t)k * rows * mo->in;
                rc = merge ? merge_into(m, tr[k].lin, blk) : add_delta(m, tr[k].lin, blk);
            }
            free(dw);
        }
    }
    zl_module_table_free(&t);
    return rc;
}

/* Every linear of the model, in a fixed order (top-level first, then noise refiners, context refiners,
 * layers); returns the count (at most cap). */
static int all_linears(zl_zimage *m, zl_linear **out, int cap) {
    int n = 0;
    zl_linear *top[] = {&m->x_emb, &m->t_mlp0, &m->t_mlp2, &m->cap_emb, &m->final_ada, &m->final_lin};
    for (size_t i = 0; i < sizeof top / sizeof *top; i++)
        if (n < cap) out[n++] = top[i];
    struct { zl_zblock *b; int count; } blks[] = {{m->noise_ref, m->cfg.n_refiner}, {m->ctx_ref, m->cfg.n_refiner},
                                                  {m->layers, m->cfg.n_layers}};
    for (size_t k = 0; k < 3; k++)
        for (int i = 0; i < blks[k].count; i++) {
            zl_zblock *b = &blks[k].b[i];
            zl_linear *ls[] = {&b->q, &b->k, &b->v, &b->o, &b->w1, &b->w2, &b->w3, &b->ada};
            for (size_t j = 0; j < 8; j++)
                if (n < cap && (j < 7 || b->modulated)) out[n++] = ls[j];
        }
    return n;
}

/* Calls fn(branch, i, ctx) for each runtime branch of the model that belongs to LoRA module i of l (its
 * down factor is the module's), every linear in all_linears' order; fn returns 1 when it took the branch,
 * 0 to look further among l's modules. Returns how many branches were taken. */
typedef int (*branch_fn)(zl_branch *br, const zl_lora *l, int i, void *ctx);
static int each_lora_branch(zl_zimage *m, const zl_lora *l, branch_fn fn, void *ctx) {
    int cap = 6 + 8 * (2 * m->cfg.n_refiner + m->cfg.n_layers), taken = 0;
    zl_linear **lins = zl_xmalloc(sizeof(zl_linear *) * (size_t)cap);
    int nl = all_linears(m, lins, cap);
    for (int k = 0; k < nl; k++)
        for (int j = 0; j < lins[k]->nbranch; j++) {
            zl_branch *br = (zl_branch *)&lins[k]->branch[j]; /* the model's own array (add_branch) */
            for (int i = 0; i < l->n; i++) {
                const zl_lora_module *a = &l->m[i];
                if (a->kind != ZL_AD_LORA || a->p[ZL_P_DOWN].data != br->down || !fn(br, l, i, ctx)) continue;
                taken++;
                break;
            }
        }
    free(lins);
    return taken;
}

static int set_strength(zl_branch *br, const zl_lora *l, int i, void *ctx) {
    br->scale = *(const float *)ctx * zl_lora_module_scale(&l->m[i]);
    return 1;
}

int zl_zimage_lora_set_strength(zl_zimage *m, const zl_lora *l, float strength) {
    return each_lora_branch(m, l, set_strength, &strength);
}

typedef struct {
    float p;
    uint64_t key;
} dropout_ctx;

static int set_dropout(zl_branch *br, const zl_lora *l, int i, void *ctx) {
    (void)l;
    const dropout_ctx *d = ctx;
    uint64_t km[2] = {d->key, (uint64_t)i}; /* per module: the branches of a fused qkv share a mask */
    br->dropout = d->p > 0.0f ? d->p : 0.0f;
    br->drop_key = d->p > 0.0f ? zl_hash64(km, sizeof km, 0x64726f70ull) : 0;
    return 1;
}

int zl_zimage_lora_set_dropout(zl_zimage *m, const zl_lora *l, float p, uint64_t key) {
    dropout_ctx d = {p, key};
    return each_lora_branch(m, l, set_dropout, &d);
}

/* The gradient buffers of module i of g on the branch: a fused module's branches share down and take
 * their rows of up (the branch must point into this module's up). */
static int attach_grads(zl_branch *br, const zl_lora *l, int i, void *ctx) {
    const zl_lora_module *a = &l->m[i];
    const zl_lora *g = ctx;
    size_t nup = (size_t)a->p[ZL_P_UP].shape[0] * (size_t)a->rank;
    if (br->up < a->p[ZL_P_UP].data || br->up >= a->p[ZL_P_UP].data + nup) return 0;
    br->d_down = g->m[i].p[ZL_P_DOWN].data;
    br->d_up = g->m[i].p[ZL_P_UP].data + (br->up - a->p[ZL_P_UP].data);
    return 1;
}

int zl_zimage_lora_grads(zl_zimage *m, const zl_lora *l, zl_lora *g) {
    if (!l || !g || l->n != g->n) return zl_err("LoRA gradients: the gradient LoRA does not match the LoRA");
    for (int i = 0; i < l->n; i++) {
        const zl_lora_module *a = &l->m[i], *b = &g->m[i];
        if (a->kind != ZL_AD_LORA) continue;
        for (int p = ZL_P_DOWN; p <= ZL_P_UP; p++)
            if (!a->p[p].data || !b->p[p].data || a->p[p].ndim != b->p[p].ndim ||
                memcmp(a->p[p].shape, b->p[p].shape, sizeof a->p[p].shape))
                return zl_err("LoRA gradients: module %s has another shape in the gradient LoRA", a->key);
    }
    return each_lora_branch(m, l, attach_grads, g);
}

int zl_zimage_remove_loras(zl_zimage *m) {
    if (m->lora_merged)
        return zl_err("%s: a LoRA was merged into the weights, which cannot be undone exactly (apply LoRAs as runtime branches to remove them)",
                      m->path);
    int cap = 6 + 8 * (2 * m->cfg.n_refiner + m->cfg.n_layers);
    zl_linear **lins = zl_xmalloc(sizeof(zl_linear *) * (size_t)cap);
    int nl = all_linears(m, lins, cap);
    for (int k = 0; k < nl; k++) {
        lins[k]->branch = NULL;
        lins[k]->nbranch = 0;
        lins[k]->delta = NULL;
    }
    free(lins);
    for (int i = 0; i < m->nundo; i++) {
        struct zl_zundo *u = &m->undo[i];
        if (u->vec) memcpy(u->vec, u->old_vec, sizeof(float) * (size_t)u->n);
        else u->lin->bias = u->old_bias;
        free(u->old_vec);
    }
    free(m->undo);
    m->undo = NULL;
    m->nundo = 0;
    for (int i = m->nowned_loaded; i < m->nowned; i++) free(m->owned[i]);
    m->nowned = m->nowned_loaded;
    return 0;
}

/* ------------------------------------------------------------------ forward */

typedef struct {
    float *a, *q, *k, *v, *o, *h1, *h3, *mod;
} scratch;

/* One transformer block on x [n, dim] with RoPE table cs and conditioning c (NULL: unmodulated). */
static void block_forward(const zl_zimage_config *cf, const zl_zblock *b, float *x, int n, const float *cs, const float *c, scratch *s) {
    int d = cf->dim, H = cf->n_heads, hd = cf->head_dim;
    const float *scale_msa = NULL, *gate_msa = NULL, *scale_mlp = NULL, *gate_mlp = NULL;
    if (b->modulated) {
        zl_op_linear(s->mod, c, &b->ada, 1);
        scale_msa = s->mod; gate_msa = s->mod + d; scale_mlp = s->mod + 2 * d; gate_mlp = s->mod + 3 * d;
    }
    zl_op_rmsnorm(s->a, x, b->attn_norm1, n, d, cf->norm_eps);
    if (scale_msa) zl_op_modulate(s->a, s->a, scale_msa, n, d);
    zl_op_linear(s->q, s->a, &b->q, n);
    zl_op_linear(s->k, s->a, &b->k, n);
    zl_op_linear(s->v, s->a, &b->v, n);
    zl_op_rmsnorm(s->q, s->q, b->norm_q, n * H, hd, cf->norm_eps);
    zl_op_rmsnorm(s->k, s->k, b->norm_k, n * H, hd, cf->norm_eps);
    zl_op_rope(s->q, cs, n, H, hd, 1);
    zl_op_rope(s->k, cs, n, H, hd, 1);
    zl_op_attention(s->o, s->q, s->k, s->v, n, n, H, H, hd, 0, NULL);
    zl_op_linear(s->a, s->o, &b->o, n);
    zl_op_rmsnorm(s->a, s->a, b->attn_norm2, n, d, cf->norm_eps);
    zl_op_gated_residual(x, s->a, gate_msa, n, d);
    zl_op_rmsnorm(s->a, x, b->ffn_norm1, n, d, cf->norm_eps);
    if (scale_mlp) zl_op_modulate(s->a, s->a, scale_mlp, n, d);
    zl_op_linear(s->h1, s->a, &b->w1, n);
    zl_op_linear(s->h3, s->a, &b->w3, n);
    zl_op_silu_mul(s->h1, s->h1, s->h3, (size_t)n * cf->ffn);
    zl_op_linear(s->a, s->h1, &b->w2, n);
    zl_op_rmsnorm(s->a, s->a, b->ffn_norm2, n, d, cf->norm_eps);
    zl_op_gated_residual(x, s->a, gate_mlp, n, d);
}

static void scratch_free(scratch *s) {
    free(s->a); free(s->q); free(s->k); free(s->v); free(s->o); free(s->h1); free(s->h3); free(s->mod);
}

static int scratch_alloc(scratch *s, const zl_zimage_config *c, int n) {
    size_t dn = (size_t)n * c->dim, fn = (size_t)n * c->ffn;
    s->a = zl_try_malloc(sizeof(float) * dn); s->q = zl_try_malloc(sizeof(float) * dn); s->k = zl_try_malloc(sizeof(float) * dn);
    s->v = zl_try_malloc(sizeof(float) * dn); s->o = zl_try_malloc(sizeof(float) * dn);
    s->h1 = zl_try_malloc(sizeof(float) * fn); s->h3 = zl_try_malloc(sizeof(float) * fn);
    s->mod = zl_try_malloc(sizeof(float) * 4 * (size_t)c->dim);
    if (s->a && s->q && s->k && s->v && s->o && s->h1 && s->h3 && s->mod) return 0;
    scratch_free(s);
    return zl_err("out of memory for %d tokens", n);
}

struct zl_zblock_ws { scratch s; int n; };

zl_zblock_ws *zl_zblock_ws_new(const zl_zimage_config *c, int n) {
    zl_zblock_ws *w = zl_xcalloc(1, sizeof *w);
    if (scratch_alloc(&w->s, c, n)) { free(w); return NULL; }
    w->n = n;
    return w;
}

void zl_zblock_ws_free(zl_zblock_ws *w) {
    if (!w) return;
    scratch_free(&w->s);
    free(w);
}

int zl_zblock_forward(const zl_zimage_config *c, const zl_zblock *b, float *x, int n, const float *cs, const float *cond,
                      zl_zblock_ws *ws) {
    if (ws && ws->n >= n) {
        block_forward(c, b, x, n, cs, b->modulated ? cond : NULL, &ws->s);
        return 0;
    }
    scratch s;
    if (scratch_alloc(&s, c, n)) return -1;
    block_forward(c, b, x, n, cs, b->modulated ? cond : NULL, &s);
    scratch_free(&s);
    return 0;
}

static int pad32(int n) { return n + ((32 - n % 32) % 32); }

int zl_zimage_layout_(const zl_zimage_config *c, int H, int W, int L, zl_zimage_layout *g) {
    int p = c->patch;
    if (H <= 0 || W <= 0 || H % p || W % p) return zl_err("latent %dx%d: both sides must be positive multiples of %d", H, W, p);
    if (L < 1) return zl_err("the caption has no tokens");
    g->Ht = H / p; g->Wt = W / p; g->Ni = g->Ht * g->Wt; g->Np = pad32(g->Ni); g->L = L; g->Lc = pad32(L);
    g->N = g->Np + g->Lc;
    if (g->Lc + 1 >= c->axes_lens[0] || g->Ht >= c->axes_lens[1] || g->Wt >= c->axes_lens[2])
        return zl_err("positions out of range: caption %d (max %d), latent %dx%d tokens (max %dx%d)", L, c->axes_lens[0] - 2,
                      g->Ht, g->Wt, c->axes_lens[1] - 1, c->axes_lens[2] - 1);
    return 0;
}

/* position ids: image (Lc+1, h, w), image pads (0,0,0), caption (1+j, 0, 0) */
void zl_zimage_rope_table_(const zl_zimage_config *c, const zl_zimage_layout *g, int32_t *ids, float *cs) {
    memset(ids, 0, sizeof(int32_t) * 3 * (size_t)g->N);
    for (int i = 0; i < g->Ni; i++) { ids[3 * i] = g->Lc + 1; ids[3 * i + 1] = i / g->Wt; ids[3 * i + 2] = i % g->Wt; }
    for (int j = 0; j < g->Lc; j++) ids[3 * (g->Np + j)] = 1 + j;
    zl_rope_table_3axis(cs, ids, g->N, c->axes_dims, c->rope_theta);
}

int zl_zimage_forward(zl_zimage *m, const float *x, int H, int W, float t, const float *cap, int L, float *out) {
    const zl_zimage_config *c = &m->cfg;
    int p = c->patch, d = c->dim;
    zl_zimage_layout g;
    if (zl_zimage_layout_(c, H, W, L, &g)) return -1;
    int Ni = g.Ni, Np = g.Np, Lc = g.Lc, N = g.N;
    size_t dn = (size_t)N * d;
    scratch s;
    if (scratch_alloc(&s, c, N)) return -1;
    float *u = zl_try_malloc(sizeof(float) * dn), *tok = zl_try_malloc(sizeof(float) * (size_t)Np * c->patch_dim);
    float *capn = zl_try_malloc(sizeof(float) * (size_t)L * c->cap_feat_dim);
    float *cs = zl_try_malloc(sizeof(float) * (size_t)N * c->head_dim);
    int32_t *ids = zl_try_malloc(sizeof(int32_t) * 3 * (size_t)N);
    float emb[256], h[4096 * 2], cond[1024];
    int rc = 0;
    if (!u || !tok || !capn || !cs || !ids) { rc = -1; goto out; }
    if (c->t_mid > (int)(sizeof h / sizeof *h) || c->adaln > 1024) { rc = zl_err("t-embedder widths too large"); goto out; }
    /* timestep -> conditioning c [adaln] */
    zl_op_timestep_embedding(emb, t * c->t_scale, 256, 10000.0f);
    zl_op_linear(h, emb, &m->t_mlp0, 1);
    zl_op_silu(h, h, (size_t)c->t_mid);
    zl_op_linear(cond, h, &m->t_mlp2, 1);
    /* image tokens -> u[0:Np] */
    zl_op_patchify(tok, x, c->in_channels, H, W, p);
    zl_op_linear(u, tok, &m->x_emb, Ni);
    zl_op_fill_rows(u, m->x_pad, Ni, Np, d);
    zl_zimage_rope_table_(c, &g, ids, cs);
    for (int i = 0; i < c->n_refiner; i++) block_forward(&m->cfg, &m->noise_ref[i], u, Np, cs, cond, &s);
    /* caption tokens -> u[Np:N] */
    float *ci = u + (size_t)Np * d;
    zl_op_rmsnorm(capn, cap, m->cap_norm, L, c->cap_feat_dim, c->norm_eps);
    zl_op_linear(ci, capn, &m->cap_emb, L);
    zl_op_fill_rows(ci, m->cap_pad, L, Lc, d);
    const float *ccs = cs + (size_t)Np * c->head_dim;
    for (int i = 0; i < c->n_refiner; i++) block_forward(&m->cfg, &m->ctx_ref[i], ci, Lc, ccs, NULL, &s);
    /* main layers over [image | caption] */
    for (int i = 0; i < c->n_layers; i++) block_forward(&m->cfg, &m->layers[i], u, N, cs, cond, &s);
    /* final layer on the real image tokens */
    zl_op_silu(h, cond, (size_t)c->adaln);
    zl_op_linear(s.mod, h, &m->final_ada, 1);
    zl_op_layernorm(s.a, u, Ni, d, 1e-6f);
    zl_op_modulate(s.a, s.a, s.mod, Ni, d);
    zl_op_linear(tok, s.a, &m->final_lin, Ni);
    zl_op_unpatchify(out, tok, c->in_channels, H, W, p);
out:
    free(u); free(tok);
    scratch_free(&s);
    free(capn); free(cs); free(ids);
    return rc;
}

/* ------------------------------------------------------------------ full-parameter training and saving */

typedef struct {
    char name[128];
    zl_linear *lin;   /* a linear (weight + optional bias) ... */
    float **vec;      /* ... or a vector slot */
    float **grad;     /* the vector's gradient slot (block norms), else NULL */
    int n;            /* vector length */
    int64_t rows;     /* pad tokens are stored [1, dim] */
} tensor_slot;

/* Every tensor of the model in diffusers naming (the order of a checkpoint does not matter). */
static int all_slots(zl_zimage *m, tensor_slot **out) {
    const zl_zimage_config *c = &m->cfg;
    int cap = 16 + 14 * (2 * c->n_refiner + c->n_layers), n = 0;
    tensor_slot *s = zl_xcalloc((size_t)cap, sizeof *s);
#define LIN(l, ...) do { snprintf(s[n].name, sizeof s[n].name, __VA_ARGS__); s[n++].lin = (l); } while (0)
#define VEC(v, g, len, ...) do { snprintf(s[n].name, sizeof s[n].name, __VA_ARGS__); s[n].vec = (v); s[n].grad = (g); s[n].n = (len); n++; } while (0)
    LIN(&m->x_emb, "all_x_embedder.2-1");
    LIN(&m->t_mlp0, "t_embedder.mlp.0");
    LIN(&m->t_mlp2, "t_embedder.mlp.2");
    LIN(&m->cap_emb, "cap_embedder.1");
    LIN(&m->final_ada, "all_final_layer.2-1.adaLN_modulation.1");
    LIN(&m->final_lin, "all_final_layer.2-1.linear");
    VEC(&m->cap_norm, NULL, c->cap_feat_dim, "cap_embedder.0");
    VEC(&m->x_pad, NULL, c->dim, "x_pad_token"); s[n - 1].rows = 1;
    VEC(&m->cap_pad, NULL, c->dim, "cap_pad_token"); s[n - 1].rows = 1;
    struct { const char *p; zl_zblock *b; int count; } blks[] = {
        {"noise_refiner", m->noise_ref, c->n_refiner}, {"context_refiner", m->ctx_ref, c->n_refiner}, {"layers", m->layers, c->n_layers}};
    for (int k = 0; k < 3; k++)
        for (int i = 0; i < blks[k].count; i++) {
            zl_zblock *b = &blks[k].b[i];
            const char *p = blks[k].p;
            LIN(&b->q, "%s.%d.attention.to_q", p, i);
            LIN(&b->k, "%s.%d.attention.to_k", p, i);
            LIN(&b->v, "%s.%d.attention.to_v", p, i);
            LIN(&b->o, "%s.%d.attention.to_out.0", p, i);
            LIN(&b->w1, "%s.%d.feed_forward.w1", p, i);
            LIN(&b->w2, "%s.%d.feed_forward.w2", p, i);
            LIN(&b->w3, "%s.%d.feed_forward.w3", p, i);
            if (b->modulated) LIN(&b->ada, "%s.%d.adaLN_modulation.0", p, i);
            VEC(&b->norm_q, &b->grad.norm_q, c->head_dim, "%s.%d.attention.norm_q", p, i);
            VEC(&b->norm_k, &b->grad.norm_k, c->head_dim, "%s.%d.attention.norm_k", p, i);
            VEC(&b->attn_norm1, &b->grad.attn_norm1, c->dim, "%s.%d.attention_norm1", p, i);
            VEC(&b->attn_norm2, &b->grad.attn_norm2, c->dim, "%s.%d.attention_norm2", p, i);
            VEC(&b->ffn_norm1, &b->grad.ffn_norm1, c->dim, "%s.%d.ffn_norm1", p, i);
            VEC(&b->ffn_norm2, &b->grad.ffn_norm2, c->dim, "%s.%d.ffn_norm2", p, i);
        }
#undef LIN
#undef VEC
    *out = s;
    return n;
}

int zl_zimage_full_params(zl_zimage *m, zl_param **out) {
    *out = NULL;
    tensor_slot *s;
    int ns = all_slots(m, &s), np = 0;
    zl_param *p = zl_xcalloc((size_t)2 * ns, sizeof *p);
    int rc = 0;
    for (int i = 0; i < ns && rc == 0; i++) {
        if (s[i].lin) {
            zl_linear *l = s[i].lin;
            if (l->nbranch || l->delta) { rc = zl_err("full-parameter training needs a model without LoRA branches (%s has one)", s[i].name); break; }
            size_t nw = (size_t)l->out * (size_t)l->in;
            float *w = zl_try_malloc(sizeof(float) * nw), *dw = zl_try_calloc(nw, sizeof(float));
            if (!w || !dw) { free(w); free(dw); rc = -1; break; }
            zl_to_f32(w, l->w, l->dtype, nw); /* a writable f32 copy (the file may be mmapped, or bf16) */
            l->w = own(m, w);
            l->dtype = ZL_F32;
            l->dw = own(m, dw);
            p[np++] = (zl_param){.p = w, .g = dw, .n = nw};
            snprintf(p[np - 1].name, sizeof p[np - 1].name, "%s.weight", s[i].name);
            if (l->bias) {
                float *b = zl_xmalloc(sizeof(float) * (size_t)l->out), *db = zl_xcalloc((size_t)l->out, sizeof(float));
                memcpy(b, l->bias, sizeof(float) * (size_t)l->out);
                l->bias = own(m, b);
                l->db = own(m, db);
                p[np++] = (zl_param){.p = b, .g = db, .n = (size_t)l->out};
                snprintf(p[np - 1].name, sizeof p[np - 1].name, "%s.bias", s[i].name);
            }
        } else {
            float *v = zl_xmalloc(sizeof(float) * (size_t)s[i].n);
            memcpy(v, *s[i].vec, sizeof(float) * (size_t)s[i].n);
            *s[i].vec = own(m, v);
            if (s[i].grad) { /* block norms train; the caption norm and the pad tokens stay frozen */
                float *g = zl_xcalloc((size_t)s[i].n, sizeof(float));
                *s[i].grad = own(m, g);
                p[np++] = (zl_param){.p = v, .g = g, .n = (size_t)s[i].n};
                snprintf(p[np - 1].name, sizeof p[np - 1].name, "%s.weight", s[i].name);
            }
        }
    }
    free(s);
    if (rc) { free(p); return -1; }
    m->nowned_loaded = m->nowned; /* the trainable copies are the model now: zl_zimage_remove_loras keeps them */
    *out = p;
    return np;
}

int zl_zimage_save(zl_zimage *m, const char *path, zl_dtype dtype) {
    if (dtype != ZL_F32 && dtype != ZL_BF16) return zl_err("the transformer can be saved as F32 or BF16");
    tensor_slot *s;
    int ns = all_slots(m, &s), rc = 0;
    zl_st_writer *w = zl_stw_new();
    zl_stw_meta(w, "format", "pt");
    for (int i = 0; i < ns && rc == 0; i++) {
        char name[160];
        if (s[i].lin) {
            zl_linear *l = s[i].lin;
            size_t nw = (size_t)l->out * (size_t)l->in;
            float *f = zl_try_malloc(sizeof(float) * nw);
            if (!f) { rc = -1; break; }
            zl_to_f32(f, l->w, l->dtype, nw);
            int64_t sh[2] = {l->out, l->in};
            snprintf(name, sizeof name, "%s.weight", s[i].name);
            rc = zl_stw_add_f32(w, name, 2, sh, f, dtype);
            free(f);
            if (rc == 0 && l->bias) {
                int64_t sb[1] = {l->out};
                snprintf(name, sizeof name, "%s.bias", s[i].name);
                rc = zl_stw_add_f32(w, name, 1, sb, l->bias, dtype);
            }
        } else {
            int64_t sh[2] = {s[i].rows ? s[i].rows : s[i].n, s[i].n};
            snprintf(name, sizeof name, s[i].rows ? "%s" : "%s.weight", s[i].name);
            rc = zl_stw_add_f32(w, name, s[i].rows ? 2 : 1, s[i].rows ? sh : sh + 1, *s[i].vec, dtype);
        }
    }
    if (rc == 0) rc = zl_stw_write(w, path);
    zl_stw_free(w);
    free(s);
    return rc;
}
