/* qwen3.c — the Qwen3 text encoder: loading and the forward pass to hidden_states[-2]. See qwen3.h.
 * Model code: data movement and calls into nn/ops.h only. */
#include "qwen3.h"
#include "../base/base.h"
#include "../io/safetensors.h"

#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------------ ownership */

static void *own(zl_qwen3 *m, void *p) {
    if (m->nowned == m->capowned) {
        m->capowned = m->capowned ? 2 * m->capowned : 64;
        m->owned = zl_xrealloc(m->owned, sizeof(void *) * (size_t)m->capowned);
    }
    m->owned[m->nowned++] = p;
    return p;
}

void zl_qwen3_default_opts(zl_qwen3_opts *o) { o->weight_dtype = ZL_BF16; }

void zl_qwen3_free(zl_qwen3 *m) {
    if (!m) return;
    for (int i = 0; i < m->nowned; i++) free(m->owned[i]);
    free(m->owned);
    free(m->layers);
    zl_st_close(m->st);
    free(m->prefix);
    free(m->path);
    free(m);
}

/* ------------------------------------------------------------------ tensors */

typedef struct {
    zl_qwen3 *m;
    int missing;
    zl_buf missing_list;
} loader;

static const zl_tensor_info *raw(const zl_qwen3 *m, const char *name) {
    char k[512];
    snprintf(k, sizeof k, "%s%s", m->prefix, name);
    return zl_st_find(m->st, k);
}

static void note_missing(loader *L, const char *name) {
    if (L->missing < 8) zl_buf_printf(&L->missing_list, "%s%s%s", L->missing ? ", " : "", L->m->prefix, name);
    L->missing++;
}

/* Keeps the n elements of t as dtype `want`: a pointer into the mmap when the dtypes agree and the data
 * is aligned (its pages asked for ahead of the first forward when `ahead`), else an owned (converted)
 * copy, the source pages released. */
static int keep(zl_qwen3 *m, const zl_tensor_info *t, zl_dtype want, const void **dst, const char *name, int ahead) {
    size_t n = (size_t)t->nelem, es = zl_dtype_size(t->dtype);
    if (t->dtype == want && (uintptr_t)t->data % es == 0) {
        *dst = t->data; /* zero copy */
        if (ahead) zl_pages_willneed(t->data, n * es);
        return 0;
    }
    void *d = zl_try_malloc(n * zl_dtype_size(want));
    if (!d) return zl_err_prefix("%s: loading %s%s", m->path, m->prefix, name);
    if (t->dtype == want) memcpy(d, t->data, n * es);
    else if (want == ZL_BF16) zl_to_bf16(d, t->data, t->dtype, n);
    else zl_to_f32(d, t->data, t->dtype, n);
    zl_pages_release(t->data, n * es);
    *dst = own(m, d);
    return 0;
}

/* Loads the weight [out, in] of linear `name` (without ".weight"). Missing: noted, not an error yet. */
static int load_linear(loader *L, zl_linear *lin, const char *name, int out, int in) {
    zl_qwen3 *m = L->m;
    char k[300];
    memset(lin, 0, sizeof *lin);
    lin->out = out;
    lin->in = in;
    snprintf(k, sizeof k, "%s.weight", name);
    const zl_tensor_info *t = raw(m, k);
    if (!t) { note_missing(L, k); return 0; }
    if (t->ndim != 2 || t->shape[0] != out || t->shape[1] != in)
        return zl_err("%s: %s%s has shape [%lld,%lld], expected [%d,%d] from the config", m->path, m->prefix, k,
                      (long long)(t->ndim ? t->shape[0] : 0), (long long)(t->ndim > 1 ? t->shape[1] : 0), out, in);
    if (!zl_dtype_is_float(t->dtype)) return zl_err("%s: %s%s has dtype %s", m->path, m->prefix, k, zl_dtype_name(t->dtype));
    lin->dtype = m->weight_dtype;
    return keep(m, t, m->weight_dtype, &lin->w, k, 1);
}

/* Loads vector `name` [n] as owned f32. */
static int load_vec(loader *L, float **v, const char *name, int n) {
    zl_qwen3 *m = L->m;
    *v = NULL;
    const zl_tensor_info *t = raw(m, name);
    if (!t) { note_missing(L, name); return 0; }
    if (t->ndim != 1 || t->shape[0] != n)
        return zl_err("%s: %s%s has %llu entries (%d dims), expected [%d] from the config", m->path, m->prefix, name,
                      (unsigned long long)t->nelem, t->ndim, n);
    if (!zl_dtype_is_float(t->dtype)) return zl_err("%s: %s%s has dtype %s", m->path, m->prefix, name, zl_dtype_name(t->dtype));
    float *d = zl_xmalloc(sizeof(float) * (size_t)n);
    zl_to_f32(d, t->data, t->dtype, (size_t)n);
    *v = own(m, d);
    return 0;
}

/* ------------------------------------------------------------------ recognising the file */

/* Says what a checkpoint that is not a Qwen3 text encoder is, for the error message. */
static const char *foreign_kind(const zl_st *st) {
    for (int i = 0; i < zl_st_count(st); i++) {
        const char *n = zl_st_tensor(st, i)->name;
        if (strstr(n, "lora_A") || strstr(n, "lora_B") || strstr(n, "lora_down") || strstr(n, "lora_up") ||
            strstr(n, "lokr_") || strstr(n, "hada_") || zl_ends_with(n, ".alpha"))
            return "a LoRA file";
    }
    for (int i = 0; i < zl_st_count(st); i++) {
        const char *n = zl_st_tensor(st, i)->name;
        if (strstr(n, "cap_embedder") || strstr(n, "x_embedder") || strstr(n, "noise_refiner") || strstr(n, "context_refiner") ||
            strstr(n, "attention.qkv") || strstr(n, "attention.to_q") || strstr(n, "adaLN_modulation"))
            return "a Z-Image/NextDiT transformer (DiT) checkpoint";
        if (strstr(n, "double_blocks") || strstr(n, "single_blocks") || strstr(n, "transformer_blocks")) return "a FLUX-style DiT checkpoint";
        if (strstr(n, "encoder.down") || strstr(n, "decoder.up") || strstr(n, "post_quant_conv") || strstr(n, "decoder.mid"))
            return "a VAE checkpoint";
        if (strstr(n, "down_blocks") || strstr(n, "input_blocks")) return "a UNet (Stable Diffusion) checkpoint";
        if (strstr(n, "text_model.encoder.layers")) return "a CLIP text encoder";
        if (strstr(n, "encoder.block.") && strstr(n, "SelfAttention")) return "a T5 text encoder";
    }
    return NULL;
}

/* Finds the prefix P such that P"embed_tokens.weight" and P"layers.0.self_attn.q_proj.weight" exist
 * (the first such in name order). Returns 0 and sets m->prefix, or -1. */
static int find_prefix(zl_qwen3 *m) {
    const char *suffix = "embed_tokens.weight";
    size_t ls = strlen(suffix);
    for (int i = 0; i < zl_st_count(m->st); i++) {
        const char *n = zl_st_tensor(m->st, i)->name;
        size_t ln = strlen(n);
        if (ln < ls || strcmp(n + ln - ls, suffix)) continue;
        if (ln > ls && n[ln - ls - 1] != '.') continue; /* "xembed_tokens.weight" */
        if (ln - ls >= 256) continue;
        free(m->prefix);
        m->prefix = zl_xasprintf("%.*s", (int)(ln - ls), n);
        if (raw(m, "layers.0.self_attn.q_proj.weight") || raw(m, "layers.0.input_layernorm.weight")) return 0;
    }
    free(m->prefix);
    m->prefix = zl_xstrdup("");
    return -1;
}

/* Reads config.json in dir (absent: 0; read: 1; bad: -1). */
static int read_config_json(const char *dir, zl_qwen3_config *c) {
    char *p = zl_xasprintf("%s/config.json", dir);
    FILE *f = fopen(p, "rb");
    if (!f) { free(p); return 0; }
    size_t cap = 1 << 20;
    char *buf = zl_xmalloc(cap);
    size_t n = fread(buf, 1, cap - 1, f);
    fclose(f);
    buf[n] = 0;
    cJSON *j = cJSON_Parse(buf);
    free(buf);
    if (!j || !cJSON_IsObject(j)) {
        cJSON_Delete(j);
        zl_err("%s: not a valid JSON object", p);
        free(p);
        return -1;
    }
    const cJSON *v;
    int rc = 1;
#define GETI(key, field)                                                                              \
    if ((v = cJSON_GetObjectItemCaseSensitive(j, key)) && cJSON_IsNumber(v)) {                          \
        if (v->valuedouble < 1 || v->valuedouble > (1 << 24) || v->valuedouble != (double)(int)v->valuedouble) \
            rc = zl_err("%s: %s = %g is not a sensible size", p, key, v->valuedouble);                  \
        else c->field = (int)v->valuedouble;                                                           \
    }
    GETI("hidden_size", hidden);
    GETI("num_hidden_layers", n_layers);
    GETI("num_attention_heads", n_heads);
    GETI("num_key_value_heads", n_kv_heads);
    GETI("head_dim", head_dim);
    GETI("intermediate_size", ffn);
#undef GETI
    if ((v = cJSON_GetObjectItemCaseSensitive(j, "rms_norm_eps")) && cJSON_IsNumber(v)) {
        if (!(v->valuedouble > 0 && v->valuedouble < 1)) rc = zl_err("%s: rms_norm_eps = %g", p, v->valuedouble);
        else c->eps = (float)v->valuedouble;
    }
    if ((v = cJSON_GetObjectItemCaseSensitive(j, "rope_theta")) && cJSON_IsNumber(v)) {
        if (!(v->valuedouble > 1)) rc = zl_err("%s: rope_theta = %g", p, v->valuedouble);
        else c->rope_theta = v->valuedouble;
    }
    /* head_dim absent: HF's default, hidden_size / num_attention_heads */
    if (!cJSON_GetObjectItemCaseSensitive(j, "head_dim") && cJSON_GetObjectItemCaseSensitive(j, "num_attention_heads") && c->n_heads > 0)
        c->head_dim = c->hidden / c->n_heads;
    cJSON_Delete(j);
    free(p);
    return rc;
}

/* ------------------------------------------------------------------ load */

static int load_layer(loader *L, zl_qwen3_layer *b, int i) {
    const zl_qwen3_config *c = &L->m->cfg;
    char n[160];
    int qd = c->n_heads * c->head_dim, kvd = c->n_kv_heads * c->head_dim;
    struct { zl_linear *l; const char *name; int out, in; } lin[] = {
        {&b->q, "self_attn.q_proj", qd, c->hidden},    {&b->k, "self_attn.k_proj", kvd, c->hidden},
        {&b->v, "self_attn.v_proj", kvd, c->hidden},   {&b->o, "self_attn.o_proj", c->hidden, qd},
        {&b->gate, "mlp.gate_proj", c->ffn, c->hidden}, {&b->up, "mlp.up_proj", c->ffn, c->hidden},
        {&b->down, "mlp.down_proj", c->hidden, c->ffn},
    };
    for (size_t k = 0; k < sizeof lin / sizeof *lin; k++) {
        snprintf(n, sizeof n, "layers.%d.%s", i, lin[k].name);
        if (load_linear(L, lin[k].l, n, lin[k].out, lin[k].in)) return -1;
    }
    struct { float **v; const char *name; int len; } vec[] = {
        {&b->in_norm, "input_layernorm.weight", c->hidden}, {&b->post_norm, "post_attention_layernorm.weight", c->hidden},
        {&b->q_norm, "self_attn.q_norm.weight", c->head_dim}, {&b->k_norm, "self_attn.k_norm.weight", c->head_dim},
    };
    for (size_t k = 0; k < sizeof vec / sizeof *vec; k++) {
        snprintf(n, sizeof n, "layers.%d.%s", i, vec[k].name);
        if (load_vec(L, vec[k].v, n, vec[k].len)) return -1;
    }
    return 0;
}

/* The number of consecutive blocks layers.0, layers.1, ... with at least one tensor in the file. */
static int count_layers(const zl_qwen3 *m) {
    int n = 0;
    for (;;) {
        char key[300];
        int found = 0;
        snprintf(key, sizeof key, "%slayers.%d.", m->prefix, n);
        size_t lk = strlen(key);
        for (int i = 0; i < zl_st_count(m->st) && !found; i++) {
            const char *name = zl_st_tensor(m->st, i)->name;
            found = strncmp(name, key, lk) == 0;
        }
        if (!found) return n;
        n++;
    }
}

static int fail(zl_qwen3 *m) {
    zl_qwen3_free(m);
    return -1;
}

int zl_qwen3_load(const char *path, const zl_qwen3_opts *o, zl_qwen3 **out) {
    *out = NULL;
    zl_qwen3_opts def;
    if (!o) { zl_qwen3_default_opts(&def); o = &def; }
    if (o->weight_dtype != ZL_F32 && o->weight_dtype != ZL_BF16) return zl_err("text encoder weights can be kept as F32 or BF16 only");
    zl_qwen3 *m = zl_xcalloc(1, sizeof *m);
    m->weight_dtype = o->weight_dtype;
    m->prefix = zl_xstrdup("");
    /* what to open, and where config.json may be */
    char sub[4200], cdir[4200] = "";
    const char *open_path = path;
    snprintf(sub, sizeof sub, "%s/text_encoder", path);
    if (zl_is_dir(path) && zl_is_dir(sub)) open_path = sub;
    else if (zl_is_dir(path)) {
        char t[4200], mi[4200];
        snprintf(t, sizeof t, "%s/transformer", path);
        snprintf(mi, sizeof mi, "%s/model_index.json", path);
        if (zl_is_dir(t) || zl_file_exists(mi)) {
            zl_err("%s: a model folder without text_encoder/ (pass the text encoder's folder or file)", path);
            return fail(m);
        }
    }
    if (zl_is_dir(open_path)) snprintf(cdir, sizeof cdir, "%s", open_path);
    else if (zl_ends_with(open_path, ".json")) {
        const char *sl = strrchr(open_path, '/');
        snprintf(cdir, sizeof cdir, "%.*s", sl ? (int)(sl - open_path) : 1, sl ? open_path : ".");
    }
    m->path = zl_xstrdup(open_path);
    if (zl_st_open(open_path, &m->st)) return fail(m);
    if (find_prefix(m)) {
        const char *what = foreign_kind(m->st);
        zl_err("%s: not a Qwen3 text encoder%s%s (no embed_tokens.weight with layers.0.* beside it)", open_path,
               what ? ": it looks like " : "", what ? what : "");
        return fail(m);
    }
    /* config: shapes, then config.json */
    zl_qwen3_config *c = &m->cfg;
    const zl_tensor_info *emb = raw(m, "embed_tokens.weight"), *qn = raw(m, "layers.0.self_attn.q_norm.weight"),
                         *qp = raw(m, "layers.0.self_attn.q_proj.weight"), *kp = raw(m, "layers.0.self_attn.k_proj.weight"),
                         *gp = raw(m, "layers.0.mlp.gate_proj.weight");
    if (emb->ndim != 2 || emb->shape[0] < 1 || emb->shape[1] < 1 || emb->shape[0] > (1 << 24) || emb->shape[1] > (1 << 20) ||
        !zl_dtype_is_float(emb->dtype)) {
        zl_err("%s: %sembed_tokens.weight is not a float [vocab, hidden] matrix", open_path, m->prefix);
        return fail(m);
    }
    if (!qn || !qp || !kp || !gp || qp->ndim != 2 || kp->ndim != 2 || gp->ndim != 2 || qn->ndim != 1 || qn->nelem < 2 ||
        qn->nelem > (1 << 16) || qp->shape[0] > (1 << 24) || kp->shape[0] > (1 << 24) || gp->shape[0] > (1 << 24)) {
        const char *why = !qn && raw(m, "layers.0.self_attn.q_proj.bias") ? " (attention biases and no q_norm: a Qwen2-style model, not Qwen3)" : "";
        zl_err("%s: incomplete or malformed Qwen3 text encoder: %s%s missing or malformed%s", open_path, m->prefix,
               !qn ? "layers.0.self_attn.q_norm.weight" : !qp ? "layers.0.self_attn.q_proj.weight" :
               !kp ? "layers.0.self_attn.k_proj.weight" : !gp ? "layers.0.mlp.gate_proj.weight" : "layers.0.*", why);
        return fail(m);
    }
    c->vocab = (int)emb->shape[0];
    c->hidden = (int)emb->shape[1];
    c->head_dim = (int)qn->nelem;
    c->n_heads = (int)(qp->shape[0] / c->head_dim);
    c->n_kv_heads = (int)(kp->shape[0] / c->head_dim);
    c->ffn = (int)gp->shape[0];
    int in_file = count_layers(m);
    c->n_layers = in_file;
    c->eps = 1e-6f;
    c->rope_theta = 1e6;
    if (cdir[0]) {
        int r = read_config_json(cdir, c);
        if (r < 0) return fail(m);
        m->have_config_json = r;
    }
    if (c->hidden != emb->shape[1])
        { zl_err("%s: hidden_size %d in config.json, but embed_tokens is %lld wide", open_path, c->hidden, (long long)emb->shape[1]); return fail(m); }
    if (c->head_dim < 2 || c->head_dim % 2 || c->n_heads < 1 || c->n_kv_heads < 1 || c->n_heads % c->n_kv_heads || c->ffn < 1 ||
        c->n_layers < 1 || (int64_t)c->n_heads * c->head_dim > (1 << 24)) {
        zl_err("%s: unusable config: %d heads, %d kv heads, head_dim %d, intermediate %d, %d layers", open_path, c->n_heads,
               c->n_kv_heads, c->head_dim, c->ffn, c->n_layers);
        return fail(m);
    }
    if (c->n_layers > in_file + 1) { /* the last layer may be absent: it is never read */
        zl_err("%s: config.json says %d layers, but the checkpoint has %d (%slayers.0-%d)", open_path, c->n_layers, in_file,
               m->prefix, in_file - 1);
        return fail(m);
    }
    if (!m->have_config_json) { /* the layer count came from the file: it must hold the whole model */
        static const char *const parts[] = {"input_layernorm.weight", "post_attention_layernorm.weight", "self_attn.q_proj.weight",
                                             "self_attn.k_proj.weight", "self_attn.v_proj.weight", "self_attn.o_proj.weight",
                                             "self_attn.q_norm.weight", "self_attn.k_norm.weight", "mlp.gate_proj.weight",
                                             "mlp.up_proj.weight", "mlp.down_proj.weight"};
        char name[160];
        const char *gone = raw(m, "norm.weight") ? NULL : "norm.weight";
        for (size_t k = 0; k < sizeof parts / sizeof *parts && !gone; k++) {
            snprintf(name, sizeof name, "layers.%d.%s", c->n_layers - 1, parts[k]);
            if (!raw(m, name)) gone = name;
        }
        if (gone) {
            zl_err("%s: no config.json, and the checkpoint looks incomplete (%s%s missing), so its number of layers is "
                   "unknown: is it one shard of several? Pass the folder or its index", open_path, m->prefix, gone);
            return fail(m);
        }
    }
    /* weights: the embedding, then layers 0..L-2 */
    loader L = {.m = m};
    int rc = 0;
    m->embed_dtype = m->weight_dtype;
    if (m->weight_dtype == ZL_F32 && (emb->dtype == ZL_BF16 || emb->dtype == ZL_F16) && (uintptr_t)emb->data % 2 == 0) {
        m->embed = emb->data; /* widened exactly row by row when looked up */
        m->embed_dtype = emb->dtype;
    } else rc = keep(m, emb, m->weight_dtype, &m->embed, "embed_tokens.weight", 0); /* only a few rows are read */
    m->n_run = c->n_layers - 1;
    m->layers = zl_xcalloc((size_t)m->n_run + 1, sizeof(zl_qwen3_layer));
    for (int i = 0; i < m->n_run && !rc; i++) rc = load_layer(&L, &m->layers[i], i);
    if (!rc && L.missing) {
        const char *what = foreign_kind(m->st);
        zl_err("%s: incomplete Qwen3 text encoder (%d layers): %d tensor(s) missing: %s%s%s%s", open_path, c->n_layers, L.missing,
               L.missing_list.s, L.missing > 8 ? ", …" : "", what ? "; it looks like " : "", what ? what : "");
        rc = -1;
    }
    zl_buf_free(&L.missing_list);
    if (rc) return fail(m);
    *out = m;
    return 0;
}

/* ------------------------------------------------------------------ forward */

typedef struct {
    float *a, *q, *k, *v, *o, *g, *u, *cs;
} scratch;

static void scratch_free(scratch *s) {
    free(s->a); free(s->q); free(s->k); free(s->v); free(s->o); free(s->g); free(s->u); free(s->cs);
    memset(s, 0, sizeof *s);
}

static int scratch_alloc(scratch *s, const zl_qwen3_config *c, int n) {
    size_t N = (size_t)n, qd = (size_t)c->n_heads * c->head_dim, kvd = (size_t)c->n_kv_heads * c->head_dim;
    s->a = zl_try_malloc(sizeof(float) * N * c->hidden);
    s->q = zl_try_malloc(sizeof(float) * N * qd);
    s->k = zl_try_malloc(sizeof(float) * N * kvd);
    s->v = zl_try_malloc(sizeof(float) * N * kvd);
    s->o = zl_try_malloc(sizeof(float) * N * qd);
    s->g = zl_try_malloc(sizeof(float) * N * c->ffn);
    s->u = zl_try_malloc(sizeof(float) * N * c->ffn);
    s->cs = zl_try_malloc(sizeof(float) * N * c->head_dim);
    if (s->a && s->q && s->k && s->v && s->o && s->g && s->u && s->cs) return 0;
    scratch_free(s);
    return zl_err("text encoder: out of memory for %d tokens", n);
}

/* One decoder layer on x [n, hidden] in place. */
static void layer_forward(const zl_qwen3_config *c, const zl_qwen3_layer *b, float *x, int n, scratch *s) {
    int d = c->hidden, H = c->n_heads, Hkv = c->n_kv_heads, hd = c->head_dim;
    zl_op_rmsnorm(s->a, x, b->in_norm, n, d, c->eps);
    zl_op_linear(s->q, s->a, &b->q, n);
    zl_op_linear(s->k, s->a, &b->k, n);
    zl_op_linear(s->v, s->a, &b->v, n);
    zl_op_rmsnorm(s->q, s->q, b->q_norm, n * H, hd, c->eps);
    zl_op_rmsnorm(s->k, s->k, b->k_norm, n * Hkv, hd, c->eps);
    zl_op_rope(s->q, s->cs, n, H, hd, 0);
    zl_op_rope(s->k, s->cs, n, Hkv, hd, 0);
    zl_op_attention(s->o, s->q, s->k, s->v, n, n, H, Hkv, hd, 1, NULL);
    zl_op_linear(s->a, s->o, &b->o, n);
    zl_op_axpy(x, 1.0f, s->a, (size_t)n * d);
    zl_op_rmsnorm(s->a, x, b->post_norm, n, d, c->eps);
    zl_op_linear(s->g, s->a, &b->gate, n);
    zl_op_linear(s->u, s->a, &b->up, n);
    zl_op_silu_mul(s->g, s->g, s->u, (size_t)n * c->ffn);
    zl_op_linear(s->a, s->g, &b->down, n);
    zl_op_axpy(x, 1.0f, s->a, (size_t)n * d);
}

static int check_ids(const zl_qwen3 *m, const int32_t *ids, int n) {
    if (n < 1) return zl_err("text encoder: the prompt has no tokens");
    for (int i = 0; i < n; i++)
        if (ids[i] < 0 || ids[i] >= m->cfg.vocab)
            return zl_err("text encoder: token id %d at position %d is outside the vocabulary [0, %d)", (int)ids[i], i, m->cfg.vocab);
    return 0;
}

static void run(zl_qwen3 *m, const int32_t *ids, int n, float *x, scratch *s) {
    const zl_qwen3_config *c = &m->cfg;
    size_t d = (size_t)c->hidden, row = d * zl_dtype_size(m->embed_dtype);
    for (int i = 0; i < n; i++) {
        const char *src = (const char *)m->embed + (size_t)ids[i] * row;
        if (m->embed_dtype == ZL_F32) memcpy(x + (size_t)i * d, src, row);
        else zl_to_f32(x + (size_t)i * d, src, m->embed_dtype, d);
    }
    zl_rope_table_1d(s->cs, 0, n, c->head_dim, c->rope_theta);
    for (int l = 0; l < m->n_run; l++) layer_forward(c, &m->layers[l], x, n, s);
}

int zl_qwen3_encode(zl_qwen3 *m, const int32_t *ids, int n, float *out) {
    if (check_ids(m, ids, n)) return -1;
    scratch s;
    if (scratch_alloc(&s, &m->cfg, n)) return -1;
    run(m, ids, n, out, &s);
    scratch_free(&s);
    return 0;
}

int zl_qwen3_encode_batch(zl_qwen3 *m, const int32_t *const *ids, const int *lens, int count, float *const *out) {
    int nmax = 0;
    for (int i = 0; i < count; i++) {
        if (check_ids(m, ids[i], lens[i])) return zl_err_prefix("prompt %d of %d", i + 1, count);
        if (lens[i] > nmax) nmax = lens[i];
    }
    if (count < 1) return 0;
    scratch s;
    if (scratch_alloc(&s, &m->cfg, nmax)) return -1;
    for (int i = 0; i < count; i++) run(m, ids[i], lens[i], out[i], &s);
    scratch_free(&s);
    return 0;
}
