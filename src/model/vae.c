/* vae.c — the FLUX.1 AutoencoderKL: loading, encode, decode, tiles. See vae.h.
 * Model code: data movement and calls into nn/ops.h and nn/ops_conv.h only. */
#include "vae.h"
#include "../base/base.h"
#include "../io/safetensors.h"

#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

/* ------------------------------------------------------------------ ownership */

static void *own(zl_vae *m, void *p) {
    if (m->nowned == m->capowned) {
        m->capowned = m->capowned ? 2 * m->capowned : 256;
        m->owned = zl_xrealloc(m->owned, sizeof(void *) * (size_t)m->capowned);
    }
    m->owned[m->nowned++] = p;
    return p;
}

void zl_vae_default_opts(zl_vae_opts *o) {
    o->weight_dtype = ZL_F32;
    o->groups = 0;
}

void zl_vae_free(zl_vae *m) {
    if (!m) return;
    for (int i = 0; i < m->nowned; i++) free(m->owned[i]);
    free(m->owned);
    free(m->enc.res); free(m->enc.down);
    free(m->dec.res); free(m->dec.down);
    zl_st_close(m->st);
    free(m->path);
    free(m);
}

int zl_vae_factor(const zl_vae *m) { return 1 << (m->cfg.levels - 1); }

/* ------------------------------------------------------------------ names */

enum { NAME_DIFFUSERS, NAME_LEGACY, NAME_BFL };

typedef struct {
    zl_vae *m;
    const char *prefix;
    int naming;
    int missing;
    zl_buf missing_list;
} loader;

static const zl_tensor_info *raw(loader *L, const char *name) {
    char k[400];
    snprintf(k, sizeof k, "%s%s", L->prefix, name);
    return zl_st_find(L->m->st, k);
}

static const zl_tensor_info *get(loader *L, const char *name, const char *suffix) {
    char k[400];
    snprintf(k, sizeof k, "%s%s", name, suffix);
    const zl_tensor_info *t = raw(L, k);
    if (!t) {
        if (L->missing < 6) zl_buf_printf(&L->missing_list, "%s%s%s", L->missing ? ", " : "", L->prefix, k);
        L->missing++;
    }
    return t;
}

/* Native name of ResBlock j of encoder level / decoder up block `blk` (blk −1: mid block, j = 0 or 1). */
static void name_res(const loader *L, char *o, size_t n, int enc, int blk, int j) {
    const char *side = enc ? "encoder" : "decoder";
    if (L->naming == NAME_BFL) {
        if (blk < 0) snprintf(o, n, "%s.mid.block_%d", side, j + 1);
        else if (enc) snprintf(o, n, "encoder.down.%d.block.%d", blk, j);
        else snprintf(o, n, "decoder.up.%d.block.%d", L->m->cfg.levels - 1 - blk, j);
    } else {
        if (blk < 0) snprintf(o, n, "%s.mid_block.resnets.%d", side, j);
        else if (enc) snprintf(o, n, "encoder.down_blocks.%d.resnets.%d", blk, j);
        else snprintf(o, n, "decoder.up_blocks.%d.resnets.%d", blk, j);
    }
}

/* Native name of the down/upsample conv after encoder level / decoder up block `blk`. */
static void name_resample(const loader *L, char *o, size_t n, int enc, int blk) {
    if (L->naming == NAME_BFL) {
        if (enc) snprintf(o, n, "encoder.down.%d.downsample.conv", blk);
        else snprintf(o, n, "decoder.up.%d.upsample.conv", L->m->cfg.levels - 1 - blk);
    } else {
        if (enc) snprintf(o, n, "encoder.down_blocks.%d.downsamplers.0.conv", blk);
        else snprintf(o, n, "decoder.up_blocks.%d.upsamplers.0.conv", blk);
    }
}

/* Native name of part p (0 norm, 1 q, 2 k, 3 v, 4 out) of the mid-block attention. */
static void name_attn(const loader *L, char *o, size_t n, int enc, int p) {
    static const char *dif[] = {"group_norm", "to_q", "to_k", "to_v", "to_out.0"};
    static const char *leg[] = {"group_norm", "query", "key", "value", "proj_attn"};
    static const char *bfl[] = {"norm", "q", "k", "v", "proj_out"};
    const char *side = enc ? "encoder" : "decoder";
    if (L->naming == NAME_BFL) snprintf(o, n, "%s.mid.attn_1.%s", side, bfl[p]);
    else snprintf(o, n, "%s.mid_block.attentions.0.%s", side, L->naming == NAME_LEGACY ? leg[p] : dif[p]);
}

static const char *name_norm_out(const loader *L, int enc) {
    if (L->naming == NAME_BFL) return enc ? "encoder.norm_out" : "decoder.norm_out";
    return enc ? "encoder.conv_norm_out" : "decoder.conv_norm_out";
}

/* ------------------------------------------------------------------ tensors */

static void release(const void *p, size_t n) {
    long pg = sysconf(_SC_PAGESIZE);
    uintptr_t a = ((uintptr_t)p + (uintptr_t)pg - 1) & ~(uintptr_t)(pg - 1);
    uintptr_t e = ((uintptr_t)p + n) & ~(uintptr_t)(pg - 1);
    if (e > a) madvise((void *)a, e - a, MADV_DONTNEED);
}

/* A weight of n elements from t, as the model's weight dtype (zero copy when it already is, aligned). */
static int store_weight(loader *L, const zl_tensor_info *t, const char *name, size_t n, zl_dtype *dt, const void **w) {
    zl_vae *m = L->m;
    if (t->dtype != ZL_F32 && t->dtype != ZL_BF16 && t->dtype != ZL_F16)
        return zl_err("%s: %s%s.weight has dtype %s (F32, BF16 or F16 expected)", m->path, L->prefix, name, zl_dtype_name(t->dtype));
    size_t es = zl_dtype_size(t->dtype);
    *dt = m->weight_dtype;
    if (t->dtype == m->weight_dtype && (uintptr_t)t->data % es == 0) {
        *w = t->data;
        return 0;
    }
    void *d = zl_try_malloc(n * zl_dtype_size(m->weight_dtype));
    if (!d) return zl_err_prefix("%s: loading %s", m->path, name);
    if (t->dtype == m->weight_dtype) memcpy(d, t->data, n * es);
    else if (m->weight_dtype == ZL_BF16) zl_to_bf16(d, t->data, t->dtype, n);
    else zl_to_f32(d, t->data, t->dtype, n);
    release(t->data, n * es);
    *w = own(m, d);
    return 0;
}

/* An owned f32 vector [n] (bias, norm weight); a missing one is noted and left NULL. */
static int load_vec(loader *L, float **v, const char *name, const char *suffix, int n) {
    *v = NULL;
    const zl_tensor_info *t = get(L, name, suffix);
    if (!t) return 0;
    if (t->nelem != (uint64_t)n || t->ndim != 1)
        return zl_err("%s: %s%s%s has %llu entries, expected %d", L->m->path, L->prefix, name, suffix, (unsigned long long)t->nelem, n);
    if (!zl_dtype_is_float(t->dtype)) return zl_err("%s: %s%s%s has dtype %s", L->m->path, L->prefix, name, suffix, zl_dtype_name(t->dtype));
    float *d = zl_xmalloc(sizeof(float) * (size_t)n);
    zl_to_f32(d, t->data, t->dtype, (size_t)n);
    *v = own(L->m, d);
    return 0;
}

static int shape_is(const zl_tensor_info *t, int nd, const int64_t *s) {
    if (t->ndim != nd) return 0;
    for (int i = 0; i < nd; i++)
        if (t->shape[i] != s[i]) return 0;
    return 1;
}

static const char *shape_str(const zl_tensor_info *t, char *b, size_t n) {
    size_t o = (size_t)snprintf(b, n, "[");
    for (int i = 0; i < t->ndim && o < n; i++) o += (size_t)snprintf(b + o, n - o, "%s%lld", i ? "," : "", (long long)t->shape[i]);
    if (o < n) snprintf(b + o, n - o, "]");
    return b;
}

/* A convolution weight [cout, cin, k, k] (a 1×1 one may be stored [cout, cin]) + bias [cout]. */
static int load_conv(loader *L, zl_conv2d *c, const char *name, int cout, int cin, int k) {
    memset(c, 0, sizeof *c);
    c->cout = cout;
    c->cin = cin;
    c->k = k;
    const zl_tensor_info *t = get(L, name, ".weight");
    if (t) {
        int64_t s4[4] = {cout, cin, k, k}, s2[2] = {cout, cin};
        char b[96];
        if (!shape_is(t, 4, s4) && !(k == 1 && shape_is(t, 2, s2))) {
            if (t->ndim == 5) return zl_err("%s: %s%s.weight has 5 dimensions: a video VAE (3-D convolutions), which zlora does not run", L->m->path, L->prefix, name);
            return zl_err("%s: %s%s.weight has shape %s, expected [%d,%d,%d,%d]", L->m->path, L->prefix, name, shape_str(t, b, sizeof b), cout, cin, k, k);
        }
        if (store_weight(L, t, name, (size_t)cout * cin * k * k, &c->dtype, &c->w)) return -1;
    }
    return load_vec(L, (float **)&c->bias, name, ".bias", cout);
}

/* An attention projection: Linear [C, C] or 1×1 conv [C, C, 1, 1] (BFL), + bias. */
static int load_lin(loader *L, zl_linear *l, const char *name, int C) {
    memset(l, 0, sizeof *l);
    l->out = l->in = C;
    const zl_tensor_info *t = get(L, name, ".weight");
    if (t) {
        int64_t s4[4] = {C, C, 1, 1}, s2[2] = {C, C};
        char b[96];
        if (!shape_is(t, 2, s2) && !shape_is(t, 4, s4))
            return zl_err("%s: %s%s.weight has shape %s, expected [%d,%d]", L->m->path, L->prefix, name, shape_str(t, b, sizeof b), C, C);
        if (store_weight(L, t, name, (size_t)C * C, &l->dtype, &l->w)) return -1;
    }
    return load_vec(L, (float **)&l->bias, name, ".bias", C);
}

static int load_norm(loader *L, float **w, float **b, const char *name, int C) {
    if (load_vec(L, w, name, ".weight", C)) return -1;
    return load_vec(L, b, name, ".bias", C);
}

static int load_res(loader *L, zl_vae_res *r, int enc, int blk, int j, int cin, int cout) {
    char p[200], n[240];
    name_res(L, p, sizeof p, enc, blk, j);
    memset(r, 0, sizeof *r);
    r->cin = cin;
    r->cout = cout;
    snprintf(n, sizeof n, "%s.norm1", p);
    if (load_norm(L, &r->n1w, &r->n1b, n, cin)) return -1;
    snprintf(n, sizeof n, "%s.conv1", p);
    if (load_conv(L, &r->c1, n, cout, cin, 3)) return -1;
    snprintf(n, sizeof n, "%s.norm2", p);
    if (load_norm(L, &r->n2w, &r->n2b, n, cout)) return -1;
    snprintf(n, sizeof n, "%s.conv2", p);
    if (load_conv(L, &r->c2, n, cout, cout, 3)) return -1;
    snprintf(n, sizeof n, "%s.%s", p, L->naming == NAME_BFL ? "nin_shortcut" : "conv_shortcut");
    if (cin != cout) return load_conv(L, &r->sc, n, cout, cin, 1);
    char w[260];
    snprintf(w, sizeof w, "%s.weight", n);
    if (raw(L, w)) return zl_err("%s: %s%s exists but ResBlock %s keeps %d channels", L->m->path, L->prefix, w, p, cin);
    return 0;
}

static int load_attn(loader *L, zl_vae_attn *a, int enc, int C) {
    char n[200];
    name_attn(L, n, sizeof n, enc, 0);
    if (load_norm(L, &a->nw, &a->nb, n, C)) return -1;
    zl_linear *ls[4] = {&a->q, &a->k, &a->v, &a->o};
    for (int p = 0; p < 4; p++) {
        name_attn(L, n, sizeof n, enc, p + 1);
        if (load_lin(L, ls[p], n, C)) return -1;
    }
    return 0;
}

/* ------------------------------------------------------------------ recognising the file */

/* Says what a checkpoint that is not an AutoencoderKL is, for the error message. */
static const char *foreign_kind(const zl_st *st) {
    for (int i = 0; i < zl_st_count(st); i++) {
        const zl_tensor_info *t = zl_st_tensor(st, i);
        const char *n = t->name;
        if (strstr(n, "lora_A") || strstr(n, "lora_down") || strstr(n, "lokr_") || strstr(n, "hada_") || strstr(n, "lora_up"))
            return "a LoRA file";
    }
    for (int i = 0; i < zl_st_count(st); i++) {
        const zl_tensor_info *t = zl_st_tensor(st, i);
        const char *n = t->name;
        if (strstr(n, "cap_embedder") || strstr(n, "noise_refiner") || strstr(n, "all_x_embedder")) return "a Z-Image transformer (DiT) checkpoint";
        if (strstr(n, "double_blocks") || strstr(n, "single_blocks") || strstr(n, "single_transformer_blocks")) return "a FLUX transformer checkpoint";
        if (strstr(n, "model.layers.") && strstr(n, "self_attn")) return "a text encoder (Qwen3/LLM) checkpoint";
        if (strstr(n, "decoder.layers.") || strstr(n, "encoder.layers.")) return "a tiny autoencoder (TAESD), which is not an AutoencoderKL";
        if ((strstr(n, "encoder.") || strstr(n, "decoder.")) && t->ndim == 5) return "a video VAE (3-D convolutions)";
        if (strstr(n, "input_blocks") || strstr(n, "time_embedding") || strstr(n, "time_embed.")) return "a UNet (Stable Diffusion) checkpoint";
        if (strstr(n, "layers.0.attention") || strstr(n, "transformer_blocks")) return "a transformer checkpoint";
    }
    return NULL;
}

/* config.json values (−1 / NAN: absent). */
typedef struct {
    int present;
    char cls[64];
    int nch, ch[ZL_VAE_MAX_LEVELS + 1], layers, latent, groups, in_ch, out_ch;
    int have_scaling, have_shift;
    float scaling, shift;
} json_cfg;

static int read_config_json(const char *p, json_cfg *j) {
    memset(j, 0, sizeof *j);
    j->nch = j->layers = j->latent = j->groups = j->in_ch = j->out_ch = -1;
    FILE *f = fopen(p, "rb");
    if (!f) return 0;
    char *buf = zl_xmalloc(1 << 20);
    size_t n = fread(buf, 1, (1 << 20) - 1, f);
    fclose(f);
    buf[n] = 0;
    cJSON *r = cJSON_Parse(buf);
    free(buf);
    if (!r || !cJSON_IsObject(r)) { cJSON_Delete(r); return zl_err("%s: not a JSON object", p); }
    j->present = 1;
    const cJSON *v;
    if ((v = cJSON_GetObjectItemCaseSensitive(r, "_class_name")) && cJSON_IsString(v)) snprintf(j->cls, sizeof j->cls, "%s", v->valuestring);
#define GETI(key, field) if ((v = cJSON_GetObjectItemCaseSensitive(r, key)) && cJSON_IsNumber(v)) j->field = v->valueint
    GETI("layers_per_block", layers); GETI("latent_channels", latent); GETI("norm_num_groups", groups);
    GETI("in_channels", in_ch); GETI("out_channels", out_ch);
#undef GETI
    if ((v = cJSON_GetObjectItemCaseSensitive(r, "scaling_factor")) && cJSON_IsNumber(v)) { j->have_scaling = 1; j->scaling = (float)v->valuedouble; }
    if ((v = cJSON_GetObjectItemCaseSensitive(r, "shift_factor"))) {
        if (cJSON_IsNumber(v)) { j->have_shift = 1; j->shift = (float)v->valuedouble; }
        else if (cJSON_IsNull(v)) { j->have_shift = 1; j->shift = 0; }
    }
    const cJSON *b = cJSON_GetObjectItemCaseSensitive(r, "block_out_channels");
    if (cJSON_IsArray(b)) {
        j->nch = cJSON_GetArraySize(b);
        if (j->nch > ZL_VAE_MAX_LEVELS) j->nch = ZL_VAE_MAX_LEVELS + 1;
        for (int i = 0; i < j->nch && i <= ZL_VAE_MAX_LEVELS; i++) {
            const cJSON *e = cJSON_GetArrayItem(b, i);
            j->ch[i] = cJSON_IsNumber(e) ? e->valueint : -1;
        }
    }
    cJSON_Delete(r);
    return 1;
}

/* ------------------------------------------------------------------ load */

static int count_res(loader *L, int enc, int blk) {
    int n = 0;
    char p[200], w[240];
    for (;; n++) {
        name_res(L, p, sizeof p, enc, blk, n);
        snprintf(w, sizeof w, "%s.conv1.weight", p);
        if (!raw(L, w) || n > 64) break;
    }
    return n;
}

static int infer_config(loader *L, const json_cfg *j, int groups_opt) {
    zl_vae *m = L->m;
    zl_vae_config *c = &m->cfg;
    char p[200], w[240], b[96];
    /* levels and channels from the encoder's first ResBlock of each level */
    int L0 = 0;
    for (;; L0++) {
        if (L0 > ZL_VAE_MAX_LEVELS) return zl_err("%s: more than %d encoder levels", m->path, ZL_VAE_MAX_LEVELS);
        name_res(L, p, sizeof p, 1, L0, 0);
        snprintf(w, sizeof w, "%s.conv1.weight", p);
        const zl_tensor_info *t = raw(L, w);
        if (!t) break;
        if (t->ndim != 4) return zl_err("%s: %s%s has shape %s, expected a 2-D convolution [out,in,3,3]%s", m->path, L->prefix, w,
                                        shape_str(t, b, sizeof b), t->ndim == 5 ? " (this is a video VAE)" : "");
        c->ch[L0] = (int)t->shape[0];
        if (c->ch[L0] <= 0) return zl_err("%s: %s%s has no output channels", m->path, L->prefix, w);
    }
    if (L0 > ZL_VAE_MAX_LEVELS) return zl_err("%s: more than %d encoder levels", m->path, ZL_VAE_MAX_LEVELS);
    c->levels = L0;
    c->enc_layers = count_res(L, 1, 0);
    c->dec_layers = count_res(L, 0, 0);
    const zl_tensor_info *ci = raw(L, "encoder.conv_in.weight"), *co = raw(L, "encoder.conv_out.weight"),
                         *di = raw(L, "decoder.conv_in.weight"), *dout = raw(L, "decoder.conv_out.weight");
    if (!L0 || !ci || !co || !di || !dout || !c->dec_layers) {
        const char *miss = !L0 ? "encoder ResBlocks" : !ci ? "encoder.conv_in" : !co ? "encoder.conv_out" : !di ? "decoder.conv_in"
                         : !dout ? "decoder.conv_out" : "decoder ResBlocks";
        return zl_err("%s: incomplete VAE checkpoint: no %s%s (an AutoencoderKL needs both the encoder and the decoder)", m->path,
                      L->prefix, miss);
    }
    if (ci->ndim != 4 || co->ndim != 4 || di->ndim != 4 || dout->ndim != 4)
        return zl_err("%s: conv_in/conv_out weights must be 4-D [out,in,k,k]", m->path);
    c->in_channels = (int)ci->shape[1];
    c->latent_channels = (int)di->shape[1];
    c->out_channels = (int)dout->shape[0];
    if (co->shape[0] != 2 * c->latent_channels)
        return zl_err("%s: encoder.conv_out has %lld output channels, expected 2 x %d latent channels (mean and log-variance)", m->path,
                      (long long)co->shape[0], c->latent_channels);
    for (int k = 0; k < L0; k++) { /* decoder blocks mirror the encoder */
        int cnt = count_res(L, 0, k);
        if (cnt != c->dec_layers)
            return zl_err("%s: decoder up block %d has %d ResBlocks, block 0 has %d", m->path, k, cnt, c->dec_layers);
        if (count_res(L, 1, k) != c->enc_layers)
            return zl_err("%s: encoder level %d has %d ResBlocks, level 0 has %d", m->path, k, count_res(L, 1, k), c->enc_layers);
    }
    char an[200], aw[240];
    name_attn(L, an, sizeof an, 1, 1);
    snprintf(aw, sizeof aw, "%s.weight", an);
    c->mid_attention = raw(L, aw) != NULL;
    c->quant_conv = raw(L, "quant_conv.weight") != NULL;
    c->post_quant_conv = raw(L, "post_quant_conv.weight") != NULL;
    c->eps = 1e-6f;
    /* groups */
    const char *mg = zl_st_meta_get(m->st, "norm_num_groups");
    c->groups = 32;
    if (groups_opt > 0) c->groups = groups_opt;
    else if (j->groups > 0) c->groups = j->groups;
    else if (mg) {
        char *end;
        long g = strtol(mg, &end, 10);
        if (*end || g <= 0 || g > 1 << 20) return zl_err("%s: metadata norm_num_groups \"%s\" is not a positive integer", m->path, mg);
        c->groups = (int)g;
    }
    for (int k = 0; k < L0; k++)
        if (c->ch[k] % c->groups)
            return zl_err("%s: GroupNorm with %d groups does not divide %d channels (block %d); the group count is not in the "
                          "tensor shapes: give it (config.json norm_num_groups, or the groups option)", m->path, c->groups, c->ch[k], k);
    /* scaling */
    if (c->latent_channels == 16) { c->scaling_factor = 0.3611f; c->shift_factor = 0.1159f; }
    else if (c->latent_channels == 4) { c->scaling_factor = 0.18215f; c->shift_factor = 0.0f; }
    else { c->scaling_factor = 1.0f; c->shift_factor = 0.0f; }
    if (j->have_scaling) c->scaling_factor = j->scaling;
    if (j->have_shift) c->shift_factor = j->shift;
    if (!(c->scaling_factor != 0.0f)) return zl_err("%s: scaling_factor must not be 0", m->path);
    /* config.json must agree with the shapes */
    if (j->present) {
        if (j->cls[0] && strcmp(j->cls, "AutoencoderKL"))
            return zl_err("%s: config.json describes a %s, not an AutoencoderKL", m->path, j->cls);
        int bad = j->nch >= 0 && j->nch != L0;
        for (int k = 0; k < L0 && !bad && j->nch >= 0; k++) bad = j->ch[k] != c->ch[k];
        if (bad) return zl_err("%s: config.json block_out_channels do not match the weights (%d levels, first %d channels)", m->path, L0, c->ch[0]);
        if (j->layers >= 0 && (j->layers != c->enc_layers || j->layers + 1 != c->dec_layers))
            return zl_err("%s: config.json says layers_per_block %d, the weights have %d per encoder level and %d per decoder block", m->path,
                          j->layers, c->enc_layers, c->dec_layers);
        if (j->latent >= 0 && j->latent != c->latent_channels)
            return zl_err("%s: config.json says latent_channels %d, the weights have %d", m->path, j->latent, c->latent_channels);
        if ((j->in_ch >= 0 && j->in_ch != c->in_channels) || (j->out_ch >= 0 && j->out_ch != c->out_channels))
            return zl_err("%s: config.json in/out_channels do not match the weights (%d/%d)", m->path, c->in_channels, c->out_channels);
    }
    return 0;
}

static int load_half(loader *L, int enc) {
    zl_vae *m = L->m;
    const zl_vae_config *c = &m->cfg;
    zl_vae_half *h = enc ? &m->enc : &m->dec;
    int Lv = c->levels, lay = enc ? c->enc_layers : c->dec_layers, top = c->ch[Lv - 1];
    char n[200];
    h->res = zl_xcalloc((size_t)Lv * (size_t)lay, sizeof(zl_vae_res));
    h->down = zl_xcalloc((size_t)Lv, sizeof(zl_conv2d));
    if (enc) {
        if (load_conv(L, &h->conv_in, "encoder.conv_in", c->ch[0], c->in_channels, 3)) return -1;
        int cin = c->ch[0];
        for (int i = 0; i < Lv; i++) {
            for (int j = 0; j < lay; j++) {
                if (load_res(L, &h->res[i * lay + j], 1, i, j, cin, c->ch[i])) return -1;
                cin = c->ch[i];
            }
            if (i < Lv - 1) {
                name_resample(L, n, sizeof n, 1, i);
                if (load_conv(L, &h->down[i], n, c->ch[i], c->ch[i], 3)) return -1;
            }
        }
    } else {
        if (load_conv(L, &h->conv_in, "decoder.conv_in", top, c->latent_channels, 3)) return -1;
        int cin = top;
        for (int k = 0; k < Lv; k++) {
            int cout = c->ch[Lv - 1 - k];
            for (int j = 0; j < lay; j++) {
                if (load_res(L, &h->res[k * lay + j], 0, k, j, cin, cout)) return -1;
                cin = cout;
            }
            if (k < Lv - 1) {
                name_resample(L, n, sizeof n, 0, k);
                if (load_conv(L, &h->down[k], n, cout, cout, 3)) return -1;
            }
        }
    }
    for (int j = 0; j < 2; j++)
        if (load_res(L, &h->mid[j], enc, -1, j, top, top)) return -1;
    if (c->mid_attention && load_attn(L, &h->attn, enc, top)) return -1;
    if (load_norm(L, &h->norm_w, &h->norm_b, name_norm_out(L, enc), enc ? top : c->ch[0])) return -1;
    if (enc) return load_conv(L, &h->conv_out, "encoder.conv_out", 2 * c->latent_channels, top, 3);
    return load_conv(L, &h->conv_out, "decoder.conv_out", c->out_channels, c->ch[0], 3);
}

int zl_vae_load(const char *path, const zl_vae_opts *o, zl_vae **out) {
    *out = NULL;
    zl_vae_opts def;
    if (!o) { zl_vae_default_opts(&def); o = &def; }
    if (o->weight_dtype != ZL_F32 && o->weight_dtype != ZL_BF16) return zl_err("VAE weights can be kept as F32 or BF16 only");
    zl_vae *m = zl_xcalloc(1, sizeof *m);
    m->weight_dtype = o->weight_dtype;
    m->global_mid_max_bytes = (size_t)512 << 20;
    char dir[4096], file[4200], cfgp[4200];
    const char *open_path = path;
    cfgp[0] = 0;
    if (zl_is_dir(path)) {
        snprintf(dir, sizeof dir, "%s/vae", path);
        if (!zl_is_dir(dir)) snprintf(dir, sizeof dir, "%s", path);
        snprintf(file, sizeof file, "%s/diffusion_pytorch_model.safetensors", dir);
        open_path = zl_file_exists(file) ? file : dir;
        snprintf(cfgp, sizeof cfgp, "%s/config.json", dir);
    } else {
        /* a file inside a diffusers vae/ folder: use its config.json (only an AutoencoderKL's) */
        const char *sl = strrchr(path, '/');
        snprintf(cfgp, sizeof cfgp, "%.*s/config.json", sl ? (int)(sl - path) : 1, sl ? path : ".");
    }
    m->path = zl_xstrdup(open_path);
    json_cfg j;
    int jr = read_config_json(cfgp, &j);
    if (jr < 0) {
        if (zl_is_dir(path)) { zl_vae_free(m); return -1; }
        memset(&j, 0, sizeof j); /* a stray file beside a single checkpoint: ignore */
        j.nch = j.layers = j.latent = j.groups = j.in_ch = j.out_ch = -1;
    } else if (!zl_is_dir(path) && j.present && strcmp(j.cls, "AutoencoderKL")) {
        memset(&j, 0, sizeof j);
        j.nch = j.layers = j.latent = j.groups = j.in_ch = j.out_ch = -1;
    }
    if (zl_st_open(open_path, &m->st)) { zl_vae_free(m); return -1; }
    loader L = {.m = m, .prefix = ""};
    const char *prefixes[] = {"", "first_stage_model.", "vae."};
    int found = 0;
    for (int p = 0; p < 3 && !found; p++) {
        L.prefix = prefixes[p];
        if (raw(&L, "encoder.down_blocks.0.resnets.0.conv1.weight") || raw(&L, "decoder.up_blocks.0.resnets.0.conv1.weight")) {
            found = 1;
            L.naming = raw(&L, "encoder.mid_block.attentions.0.query.weight") || raw(&L, "decoder.mid_block.attentions.0.query.weight")
                           ? NAME_LEGACY : NAME_DIFFUSERS;
        } else if (raw(&L, "encoder.down.0.block.0.conv1.weight") || raw(&L, "decoder.up.0.block.0.conv1.weight")) {
            found = 1;
            L.naming = NAME_BFL;
        }
    }
    int rc = 0;
    if (!found) {
        const char *what = foreign_kind(m->st);
        rc = zl_err("%s: not a VAE (AutoencoderKL) checkpoint%s%s (no encoder.down_blocks.* or encoder.down.* tensors)", m->path,
                    what ? ": it looks like " : "", what ? what : "");
    }
    m->naming = L.naming == NAME_BFL ? "bfl" : L.naming == NAME_LEGACY ? "diffusers-legacy" : "diffusers";
    if (rc == 0) rc = infer_config(&L, &j, o->groups);
    if (rc == 0) rc = load_half(&L, 1);
    if (rc == 0) rc = load_half(&L, 0);
    const zl_vae_config *c = &m->cfg;
    if (rc == 0 && c->quant_conv) rc = load_conv(&L, &m->quant, "quant_conv", 2 * c->latent_channels, 2 * c->latent_channels, 1);
    if (rc == 0 && c->post_quant_conv) rc = load_conv(&L, &m->post_quant, "post_quant_conv", c->latent_channels, c->latent_channels, 1);
    if (rc == 0 && L.missing)
        rc = zl_err("%s: incomplete VAE checkpoint (%s naming): %d tensor%s missing: %s%s", m->path, m->naming, L.missing,
                    L.missing > 1 ? "s" : "", L.missing_list.s, L.missing > 6 ? ", ..." : "");
    zl_buf_free(&L.missing_list);
    if (rc) { zl_vae_free(m); return -1; }
    *out = m;
    return 0;
}

/* ------------------------------------------------------------------ forward */

static float *talloc(size_t n, int C, int H, int W) {
    float *p = zl_try_malloc(sizeof(float) * (n ? n : 1));
    if (!p) zl_err("out of memory for a VAE activation [%d,%d,%d]", C, H, W);
    return p;
}

static void conv_same(float *y, const float *x, const zl_conv2d *c, int H, int W) {
    int p = c->k / 2;
    zl_op_conv2d(y, x, c, H, W, 1, p, p, p, p);
}

/* y = ResBlock(x) for x [cin, H, W]; a new buffer [cout, H, W] (x is kept). */
static float *res_fwd(const zl_vae_config *cf, const zl_vae_res *r, const float *x, int H, int W) {
    size_t hw = (size_t)H * W;
    float *a = talloc((size_t)r->cin * hw, r->cin, H, W), *b = NULL, *y = NULL;
    if (!a) return NULL;
    zl_op_groupnorm(a, x, r->n1w, r->n1b, r->cin, hw, cf->groups, cf->eps);
    zl_op_silu(a, a, (size_t)r->cin * hw);
    if (!(b = talloc((size_t)r->cout * hw, r->cout, H, W))) { free(a); return NULL; }
    conv_same(b, a, &r->c1, H, W);
    free(a);
    zl_op_groupnorm(b, b, r->n2w, r->n2b, r->cout, hw, cf->groups, cf->eps);
    zl_op_silu(b, b, (size_t)r->cout * hw);
    if (!(y = talloc((size_t)r->cout * hw, r->cout, H, W))) { free(b); return NULL; }
    conv_same(y, b, &r->c2, H, W);
    if (r->sc.w) {
        conv_same(b, x, &r->sc, H, W);
        zl_op_add(y, y, b, (size_t)r->cout * hw);
    } else {
        zl_op_add(y, y, x, (size_t)r->cout * hw);
    }
    free(b);
    return y;
}

/* x [C, H, W] += Attention(GroupNorm(x)): one head over the H·W tokens. */
static int attn_fwd(const zl_vae_config *cf, const zl_vae_attn *at, float *x, int C, int H, int W) {
    int n = H * W;
    size_t sz = (size_t)C * n;
    float *h = talloc(sz, C, H, W), *t = talloc(sz, C, H, W), *q = talloc(sz, C, H, W), *k = talloc(sz, C, H, W),
          *v = talloc(sz, C, H, W);
    int rc = h && t && q && k && v ? 0 : -1;
    if (rc == 0) {
        zl_op_groupnorm(h, x, at->nw, at->nb, C, (size_t)n, cf->groups, cf->eps);
        zl_op_transpose(t, h, C, n); /* tokens [n, C] */
        zl_op_linear(q, t, &at->q, n);
        zl_op_linear(k, t, &at->k, n);
        zl_op_linear(v, t, &at->v, n);
        zl_op_attention(h, q, k, v, n, n, 1, 1, C, 0, NULL);
        zl_op_linear(t, h, &at->o, n);
        zl_op_transpose(h, t, n, C);
        zl_op_add(x, x, h, sz);
    }
    free(h); free(t); free(q); free(k); free(v);
    return rc;
}

/* Replaces *x by f(*x) (a new buffer); -1 on failure (the old buffer freed). */
static int step_res(const zl_vae_config *cf, const zl_vae_res *r, float **x, int H, int W) {
    float *y = res_fwd(cf, r, *x, H, W);
    free(*x);
    *x = y;
    return y ? 0 : -1;
}

static int mid_fwd(const zl_vae_config *cf, const zl_vae_half *h, float **x, int H, int W) {
    if (step_res(cf, &h->mid[0], x, H, W)) return -1;
    if (cf->mid_attention && attn_fwd(cf, &h->attn, *x, cf->ch[cf->levels - 1], H, W)) { free(*x); *x = NULL; return -1; }
    return step_res(cf, &h->mid[1], x, H, W);
}

/* GroupNorm, SiLU (in place on x [C, H, W]), then conv_out into a new buffer. */
static float *out_fwd(const zl_vae_config *cf, const zl_vae_half *h, float *x, int C, int H, int W) {
    size_t hw = (size_t)H * W;
    zl_op_groupnorm(x, x, h->norm_w, h->norm_b, C, hw, cf->groups, cf->eps);
    zl_op_silu(x, x, (size_t)C * hw);
    float *y = talloc((size_t)h->conv_out.cout * hw, h->conv_out.cout, H, W);
    if (y) conv_same(y, x, &h->conv_out, H, W);
    return y;
}

/* The two stages of each half: the high-resolution part (tiled by the tiled calls) and the part at latent
 * resolution with the mid block (whole when it fits). feat is [ch[L−1], h, w] at latent resolution. */

/* Encoder stage 1: conv_in and the down levels; img [in, H, W] -> *feat [ch[L−1], H/f, W/f] (new). */
static int enc_head(const zl_vae *m, const float *img, int H, int W, float **feat) {
    const zl_vae_config *c = &m->cfg;
    const zl_vae_half *e = &m->enc;
    float *x = talloc((size_t)c->ch[0] * H * W, c->ch[0], H, W);
    *feat = NULL;
    if (!x) return -1;
    conv_same(x, img, &e->conv_in, H, W);
    for (int i = 0; i < c->levels; i++) {
        for (int j = 0; j < c->enc_layers; j++)
            if (step_res(c, &e->res[i * c->enc_layers + j], &x, H, W)) return -1;
        if (i < c->levels - 1) { /* pad right and bottom by one, conv3x3 stride 2 */
            int Ho = zl_conv2d_out_size(H, 3, 2, 0, 1), Wo = zl_conv2d_out_size(W, 3, 2, 0, 1);
            float *d = talloc((size_t)c->ch[i] * Ho * Wo, c->ch[i], Ho, Wo);
            if (!d) { free(x); return -1; }
            zl_op_conv2d(d, x, &e->down[i], H, W, 2, 0, 1, 0, 1);
            free(x);
            x = d;
            H = Ho;
            W = Wo;
        }
    }
    *feat = x;
    return 0;
}

/* Encoder stage 2: mid block, norm_out, conv_out (quant_conv); feat [ch[L−1], h, w] is consumed (freed);
 * mean [latent, h, w]. */
static int enc_tail(const zl_vae *m, float *feat, int h, int w, float *mean) {
    const zl_vae_config *c = &m->cfg;
    if (mid_fwd(c, &m->enc, &feat, h, w)) return -1;
    float *o = out_fwd(c, &m->enc, feat, c->ch[c->levels - 1], h, w);
    free(feat);
    if (!o) return -1;
    size_t lat = (size_t)c->latent_channels * h * w;
    if (m->quant.w) {
        float *q = talloc(2 * lat, 2 * c->latent_channels, h, w);
        if (!q) { free(o); return -1; }
        zl_op_conv2d(q, o, &m->quant, h, w, 1, 0, 0, 0, 0);
        free(o);
        o = q;
    }
    memcpy(mean, o, sizeof(float) * lat); /* the mean: first half of the channels */
    free(o);
    return 0;
}

/* Decoder stage 1: post_quant_conv, conv_in, mid block; z [latent, h, w] -> *feat [ch[L−1], h, w] (new). */
static int dec_head(const zl_vae *m, const float *z, int h, int w, float **feat) {
    const zl_vae_config *c = &m->cfg;
    int top = c->ch[c->levels - 1];
    const float *zin = z;
    float *pq = NULL;
    *feat = NULL;
    if (m->post_quant.w) {
        if (!(pq = talloc((size_t)c->latent_channels * h * w, c->latent_channels, h, w))) return -1;
        zl_op_conv2d(pq, z, &m->post_quant, h, w, 1, 0, 0, 0, 0);
        zin = pq;
    }
    float *x = talloc((size_t)top * h * w, top, h, w);
    if (!x) { free(pq); return -1; }
    conv_same(x, zin, &m->dec.conv_in, h, w);
    free(pq);
    if (mid_fwd(c, &m->dec, &x, h, w)) return -1;
    *feat = x;
    return 0;
}

/* Decoder stage 2: up blocks, norm_out, conv_out; feat [ch[L−1], h, w] (kept) -> img [out, h·f, w·f]. */
static int dec_tail(const zl_vae *m, const float *feat, int h, int w, float *img) {
    const zl_vae_config *c = &m->cfg;
    const zl_vae_half *d = &m->dec;
    int Lv = c->levels, H = h, W = w;
    float *x = NULL;
    for (int k = 0; k < Lv; k++) {
        int C = c->ch[Lv - 1 - k];
        for (int j = 0; j < c->dec_layers; j++) {
            float *y = res_fwd(c, &d->res[k * c->dec_layers + j], x ? x : feat, H, W);
            free(x);
            if (!(x = y)) return -1;
        }
        if (k < Lv - 1) { /* nearest ×2, conv3x3 */
            float *u = talloc((size_t)C * 4 * H * W, C, 2 * H, 2 * W);
            if (!u) { free(x); return -1; }
            zl_op_upsample2x(u, x, C, H, W);
            free(x);
            H *= 2;
            W *= 2;
            if (!(x = talloc((size_t)C * H * W, C, H, W))) { free(u); return -1; }
            conv_same(x, u, &d->down[k], H, W);
            free(u);
        }
    }
    if (!x) return zl_err("the decoder has no ResBlocks");
    float *o = out_fwd(c, d, x, c->ch[0], H, W);
    free(x);
    if (!o) return -1;
    memcpy(img, o, sizeof(float) * (size_t)c->out_channels * H * W);
    free(o);
    return 0;
}

static int check_image(const zl_vae *m, int H, int W) {
    int f = zl_vae_factor(m);
    if (H <= 0 || W <= 0 || H % f || W % f)
        return zl_err("image %dx%d: both sides must be positive multiples of %d to encode", W, H, f);
    if ((size_t)H * (size_t)W > ((size_t)1 << 30)) return zl_err("image %dx%d is too large (at most 2^30 pixels)", W, H);
    return 0;
}

static int check_latent(const zl_vae *m, int h, int w) {
    if (h <= 0 || w <= 0) return zl_err("latent %dx%d: both sides must be positive", w, h);
    if ((size_t)h * (size_t)w * ((size_t)1 << (2 * (m->cfg.levels - 1))) > ((size_t)1 << 30))
        return zl_err("latent %dx%d is too large (at most 2^30 image pixels)", w, h);
    return 0;
}

int zl_vae_encode(const zl_vae *m, const float *img, int H, int W, float *mean) {
    float *feat;
    if (check_image(m, H, W) || enc_head(m, img, H, W, &feat)) return -1;
    int f = zl_vae_factor(m);
    return enc_tail(m, feat, H / f, W / f, mean);
}

int zl_vae_decode(const zl_vae *m, const float *z, int h, int w, float *img) {
    float *feat;
    if (check_latent(m, h, w) || dec_head(m, z, h, w, &feat)) return -1;
    int rc = dec_tail(m, feat, h, w, img);
    free(feat);
    return rc;
}

/* ------------------------------------------------------------------ tiles */

/* Tile starts along an axis of n units: k = ceil((n − o) / (t − o)) tiles of t units (one of n when
 * n <= t), start_i = floor(i·(n − t) / (k − 1)): neighbours share at least o units and the last tile ends
 * at n. Returns k (starts malloc'd). */
static int tile_starts(int n, int t, int o, int **starts) {
    if (n <= t) {
        *starts = zl_xmalloc(sizeof(int));
        (*starts)[0] = 0;
        return 1;
    }
    int step = t - o, k = (n - o + step - 1) / step;
    if (k < 2) k = 2;
    *starts = zl_xmalloc(sizeof(int) * (size_t)k);
    for (int i = 0; i < k; i++) (*starts)[i] = (int)((long long)i * (n - t) / (k - 1));
    return k;
}

/* One tile: src [Cs, sh, sw] -> dst. */
typedef int (*tile_fn)(const zl_vae *m, const float *src, int sh, int sw, float *dst);

static int t_encode(const zl_vae *m, const float *s, int sh, int sw, float *d) { return zl_vae_encode(m, s, sh, sw, d); }
static int t_decode(const zl_vae *m, const float *s, int sh, int sw, float *d) { return zl_vae_decode(m, s, sh, sw, d); }
static int t_dec_tail(const zl_vae *m, const float *s, int sh, int sw, float *d) { return dec_tail(m, s, sh, sw, d); }
static int t_enc_head(const zl_vae *m, const float *s, int sh, int sw, float *d) {
    float *feat;
    if (enc_head(m, s, sh, sw, &feat)) return -1;
    int f = zl_vae_factor(m);
    memcpy(d, feat, sizeof(float) * (size_t)m->cfg.ch[m->cfg.levels - 1] * (size_t)(sh / f) * (size_t)(sw / f));
    free(feat);
    return 0;
}

/* Runs fn over overlapping tiles of src [Cs, ny·su, nx·su] (su source pixels per unit) into out
 * [Cd, ny·du, nx·du] (du per unit), blending with linear ramps across the overlaps. */
static int run_tiles(const zl_vae *m, tile_fn fn, const float *src, int Cs, int su, int Cd, int du, int ny, int nx, int tile,
                     int overlap, float *out) {
    int *ys = NULL, *xs = NULL;
    int ky = tile_starts(ny, tile, overlap, &ys), kx = tile_starts(nx, tile, overlap, &xs);
    int th = ny < tile ? ny : tile, tw = nx < tile ? nx : tile;
    int Hs = ny * su, Ws = nx * su, Hd = ny * du, Wd = nx * du;
    int sth = th * su, stw = tw * su, dth = th * du, dtw = tw * du;
    float *st = talloc((size_t)Cs * sth * stw, Cs, sth, stw), *dt = talloc((size_t)Cd * dth * dtw, Cd, dth, dtw);
    float *ws = zl_try_calloc((size_t)Hd * Wd, sizeof(float));
    if (!ws) zl_err("out of memory for the tile weights [%d,%d]", Hd, Wd);
    int rc = st && dt && ws ? 0 : -1;
    if (rc == 0) memset(out, 0, sizeof(float) * (size_t)Cd * Hd * Wd);
    for (int a = 0; a < ky && rc == 0; a++)
        for (int b = 0; b < kx && rc == 0; b++) {
            int y0 = ys[a] * su, x0 = xs[b] * su;
            for (int c = 0; c < Cs; c++)
                for (int i = 0; i < sth; i++)
                    memcpy(st + ((size_t)c * sth + i) * stw, src + ((size_t)c * Hs + y0 + i) * Ws + x0, sizeof(float) * (size_t)stw);
            if ((rc = fn(m, st, sth, stw, dt))) break;
            int ot = a > 0 ? (ys[a - 1] + th - ys[a]) * du : 0, ob = a < ky - 1 ? (ys[a] + th - ys[a + 1]) * du : 0;
            int ol = b > 0 ? (xs[b - 1] + tw - xs[b]) * du : 0, orr = b < kx - 1 ? (xs[b] + tw - xs[b + 1]) * du : 0;
            zl_op_tile_blend(out, ws, dt, Cd, Hd, Wd, ys[a] * du, xs[b] * du, dth, dtw, ot, ob, ol, orr);
        }
    if (rc == 0) zl_op_tile_finish(out, out, ws, Cd, Hd, Wd);
    free(st); free(dt); free(ws); free(ys); free(xs);
    return rc;
}

/* The mid block runs on the whole latent when its activations (about 6 buffers of ch[L−1]·h·w floats)
 * fit the budget. */
static int mid_whole(const zl_vae *m, int h, int w) {
    double bytes = 6.0 * 4.0 * m->cfg.ch[m->cfg.levels - 1] * (double)h * (double)w;
    return bytes <= (double)m->global_mid_max_bytes;
}

int zl_vae_encode_tiled(const zl_vae *m, const float *img, int H, int W, int tile, int overlap, float *mean) {
    int f = zl_vae_factor(m), top = m->cfg.ch[m->cfg.levels - 1];
    if (tile <= 0 || overlap < 0 || overlap >= tile) return zl_err("tiles: need 0 <= overlap (%d) < tile (%d)", overlap, tile);
    if (check_image(m, H, W)) return -1;
    int h = H / f, w = W / f;
    if (h <= tile && w <= tile) return zl_vae_encode(m, img, H, W, mean);
    if (!mid_whole(m, h, w))
        return run_tiles(m, t_encode, img, m->cfg.in_channels, f, m->cfg.latent_channels, 1, h, w, tile, overlap, mean);
    float *feat = talloc((size_t)top * h * w, top, h, w);
    if (!feat) return -1;
    if (run_tiles(m, t_enc_head, img, m->cfg.in_channels, f, top, 1, h, w, tile, overlap, feat)) { free(feat); return -1; }
    return enc_tail(m, feat, h, w, mean);
}

int zl_vae_decode_tiled(const zl_vae *m, const float *z, int h, int w, int tile, int overlap, float *img) {
    int f = zl_vae_factor(m), top = m->cfg.ch[m->cfg.levels - 1];
    if (tile <= 0 || overlap < 0 || overlap >= tile) return zl_err("tiles: need 0 <= overlap (%d) < tile (%d)", overlap, tile);
    if (check_latent(m, h, w)) return -1;
    if (h <= tile && w <= tile) return zl_vae_decode(m, z, h, w, img);
    if (!mid_whole(m, h, w))
        return run_tiles(m, t_decode, z, m->cfg.latent_channels, 1, m->cfg.out_channels, f, h, w, tile, overlap, img);
    float *feat;
    if (dec_head(m, z, h, w, &feat)) return -1;
    int rc = run_tiles(m, t_dec_tail, feat, top, 1, m->cfg.out_channels, f, h, w, tile, overlap, img);
    free(feat);
    return rc;
}

/* ------------------------------------------------------------------ latent normalisation */

void zl_vae_normalize(const zl_vae *m, float *z, size_t n) {
    zl_op_affine(z, z, n, m->cfg.scaling_factor, -m->cfg.shift_factor * m->cfg.scaling_factor);
}

void zl_vae_denormalize(const zl_vae *m, float *z, size_t n) {
    zl_op_affine(z, z, n, 1.0f / m->cfg.scaling_factor, m->cfg.shift_factor);
}
