/* generate.c — see generate.h. */
#include "gen/generate.h"
#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "base/base.h"
#include "base/progress.h"
#include "base/sha256.h"
#include "io/image.h"
#include "model/qwen3.h"
#include "model/te_cache.h"
#include "model/tokenizer.h"
#include "nn/ops.h"

/* ---- model parts ---------------------------------------------------------------------------------- */

static char *read_text(const char *path, size_t max) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    char *b = zl_xmalloc(max + 1);
    size_t n = fread(b, 1, max, f);
    fclose(f);
    b[n] = 0;
    return b;
}

static char *sub(const char *dir, const char *name) { return zl_xasprintf("%s/%s", dir, name); }

int zl_model_parts_resolve(const char *dir, const char *dit, const char *te, const char *tok, const char *vae,
                           zl_model_parts *p) {
    memset(p, 0, sizeof *p);
    p->shift = 3.0;
    if (dir) {
        if (!zl_is_dir(dir)) return zl_err("--model %s: not a folder (give a diffusers-layout model folder, or the parts with --dit/--te/--vae/--tokenizer)", dir);
        p->dir = zl_xstrdup(dir);
        char *mi = sub(dir, "model_index.json");
        char *txt = read_text(mi, 1 << 20);
        if (txt) {
            cJSON *j = cJSON_Parse(txt);
            const cJSON *cls = j ? cJSON_GetObjectItemCaseSensitive(j, "_class_name") : NULL;
            if (cJSON_IsString(cls)) {
                p->pipeline = zl_xstrdup(cls->valuestring);
                if (!strstr(cls->valuestring, "ZImage")) {
                    zl_err("%s: this folder holds a %s, not Z-Image (expected ZImagePipeline)", mi, cls->valuestring);
                    cJSON_Delete(j); free(txt); free(mi); zl_model_parts_free(p);
                    return -1;
                }
            }
            cJSON_Delete(j);
            free(txt);
        }
        free(mi);
        char *sc = sub(dir, "scheduler/scheduler_config.json");
        txt = read_text(sc, 1 << 16);
        if (txt) {
            cJSON *j = cJSON_Parse(txt);
            const cJSON *s = j ? cJSON_GetObjectItemCaseSensitive(j, "shift") : NULL;
            if (!j) zl_warn("%s: not valid JSON; using shift 3.0", sc);
            else if (cJSON_IsNumber(s) && s->valuedouble > 0) { p->shift = s->valuedouble; p->shift_from_config = 1; }
            const cJSON *dyn = j ? cJSON_GetObjectItemCaseSensitive(j, "use_dynamic_shifting") : NULL;
            if (cJSON_IsTrue(dyn)) zl_warn("%s: use_dynamic_shifting is true; zlora uses the fixed shift %g (as Z-Image does)", sc, p->shift);
            cJSON_Delete(j);
            free(txt);
        }
        free(sc);
    }
    const char *names[4] = {"transformer", "text_encoder", "tokenizer", "vae"};
    const char *given[4] = {dit, te, tok, vae};
    const char *flags[4] = {"--dit", "--te", "--tokenizer", "--vae"};
    char **outs[4] = {&p->dit, &p->te, &p->tok, &p->vae};
    for (int i = 0; i < 4; i++) {
        if (given[i]) {
            if (!zl_file_exists(given[i]) && !zl_is_dir(given[i])) {
                zl_err("%s %s: no such file or folder", flags[i], given[i]);
                zl_model_parts_free(p);
                return -1;
            }
            *outs[i] = zl_xstrdup(given[i]);
        } else if (dir) {
            char *d = sub(dir, names[i]);
            if (zl_is_dir(d)) *outs[i] = d;
            else free(d);
        }
    }
    if (!p->tok && p->te && zl_is_dir(p->te)) { /* a model folder given as --te carries its tokenizer */
        char *d = sub(p->te, "tokenizer");
        if (zl_is_dir(d)) p->tok = d;
        else free(d);
    }
    return 0;
}

void zl_model_parts_free(zl_model_parts *p) {
    free(p->dir); free(p->dit); free(p->te); free(p->tok); free(p->vae); free(p->pipeline);
    memset(p, 0, sizeof *p);
}

static int need_part(const zl_model_parts *p, const char *part, const char *what, const char *flag) {
    if (part) return 0;
    if (p->dir) return zl_err("%s has no %s/ folder: give the %s with %s", p->dir, what, what, flag);
    return zl_err("no %s: give --model DIR or %s", what, flag);
}

/* ---- features ------------------------------------------------------------------------------------- */

void zl_feat_free(zl_feat *f) {
    free(f->cap);
    memset(f, 0, sizeof *f);
}

char *zl_gen_default_cache(void) {
    const char *z = getenv("ZLORA_CACHE"), *x = getenv("XDG_CACHE_HOME"), *h = getenv("HOME");
    if (z && *z) return zl_xasprintf("%s/te", z);
    if (x && *x) return zl_xasprintf("%s/zlora/te", x);
    if (h && *h) return zl_xasprintf("%s/.cache/zlora/te", h);
    return NULL;
}

int zl_gen_features(const zl_model_parts *mp, const char *cache_dir, const char *const *prompts, int n, zl_feat *out) {
    memset(out, 0, sizeof *out * (size_t)n);
    if (need_part(mp, mp->te, "text encoder", "--te")) return -1;
    char *identity = cache_dir ? zl_te_identity(mp->te) : NULL;
    if (cache_dir && !identity) return -1;
    int missing = 0, rc = 0;
    for (int i = 0; i < n && rc == 0; i++) {
        int32_t *ids = NULL;
        int hit = identity ? zl_te_cache_load(cache_dir, identity, prompts[i], &out[i].cap, &ids, &out[i].L, &out[i].hidden) : 0;
        free(ids);
        if (hit < 0) rc = -1;
        else if (!hit) missing++;
    }
    if (rc == 0 && missing) {
        zl_tokenizer *tok = NULL;
        zl_qwen3 *m = NULL;
        if (need_part(mp, mp->tok, "tokenizer", "--tokenizer") || zl_tok_load(mp->tok, &tok)) rc = -1;
        zl_qwen3_opts o;
        zl_qwen3_default_opts(&o);
        double t0 = zl_now();
        if (rc == 0 && zl_qwen3_load(mp->te, &o, &m)) rc = -1;
        if (rc == 0) zl_info("text encoder: %s (hidden %d, %d layers) loaded in %.1f s", m->path, m->cfg.hidden, m->cfg.n_layers, zl_now() - t0);
        /* a bar while encoding (a training set can have thousands of captions) and one summary line */
        zl_progress pr;
        zl_progress_start(&pr, "encoding prompts", missing, "prompts");
        int done = 0, maxL = 0;
        double t1 = zl_now();
        for (int i = 0; i < n && rc == 0; i++) {
            if (out[i].cap) continue;
            int32_t *ids = NULL;
            int L = 0;
            if (zl_tok_encode_prompt(tok, prompts[i], ZL_TOK_MAX_LEN, &ids, &L)) { rc = -1; break; }
            for (int k = 0; k < L && rc == 0; k++)
                if (ids[k] < 0 || ids[k] >= m->cfg.vocab)
                    rc = zl_err("token id %d is outside the text encoder's vocabulary (%d): the tokenizer %s does not belong to the encoder %s",
                                ids[k], m->cfg.vocab, mp->tok, mp->te);
            out[i].hidden = m->cfg.hidden;
            out[i].L = L;
            out[i].cap = rc ? NULL : zl_try_malloc(sizeof(float) * (size_t)L * (size_t)m->cfg.hidden);
            if (!rc && !out[i].cap) rc = -1;
            if (rc == 0) rc = zl_qwen3_encode(m, ids, L, out[i].cap);
            if (rc == 0) { maxL = L > maxL ? L : maxL; zl_progress_update(&pr, ++done); }
            if (rc == 0 && identity && zl_te_cache_store(cache_dir, identity, prompts[i], out[i].cap, ids, L, m->cfg.hidden)) {
                zl_warn("feature cache: %s (continuing without storing)", zl_last_error());
                zl_clear_error();
            }
            free(ids);
        }
        if (pr.tty) fputc('\n', stderr);
        if (rc == 0) {
            double el = zl_now() - t1;
            zl_info("encoded %d prompt%s (up to %d tokens) in %.2f s (%.3f s each)%s", done, done == 1 ? "" : "s", maxL, el,
                    done ? el / done : 0.0, n > done ? "; the others from the cache" : "");
        }
        zl_qwen3_free(m); /* before the DiT loads */
        zl_tok_free(tok);
    } else if (rc == 0) {
        zl_info("caption features from the cache (%d prompt%s); the text encoder was not loaded", n, n == 1 ? "" : "s");
    }
    free(identity);
    if (rc) for (int i = 0; i < n; i++) zl_feat_free(&out[i]);
    return rc;
}

/* ---- sampling ------------------------------------------------------------------------------------- */

void zl_gen_default_params(zl_gen_params *p) {
    memset(p, 0, sizeof *p);
    p->steps = 8;
    p->shift = 3.0;
    p->guidance = 0.0f;
    p->cfg_norm = 0.0f;
    p->cfg_trunc = 1.0f;
    p->sampler = ZL_SAMPLER_EULER;
    p->noise = ZL_NOISE_TORCH;
}

int zl_gen_sample(zl_zimage *m, const zl_gen_params *p, const zl_feat *pos, const zl_feat *neg, float *x, int h, int w,
                  zl_gen_step_fn cb, void *ud) {
    const zl_zimage_config *c = &m->cfg;
    if (p->steps < 1 || p->steps > 10000) return zl_err("steps must be between 1 and 10000 (got %d)", p->steps);
    if (!(p->shift > 0)) return zl_err("shift must be positive (got %g)", p->shift);
    if (h % c->patch || w % c->patch) return zl_err("latent %dx%d is not a multiple of the patch size %d", h, w, c->patch);
    if (pos->hidden != c->cap_feat_dim)
        return zl_err("the text encoder gives %d-wide features but the DiT expects cap_feat_dim %d: these parts are not one model",
                      pos->hidden, c->cap_feat_dim);
    int cfg_any = p->guidance != 0.0f;
    if (cfg_any && (!neg || neg->hidden != pos->hidden)) return zl_err("guidance needs negative-prompt features of the same width");
    size_t n = (size_t)c->in_channels * (size_t)h * (size_t)w;
    float *sig = zl_xmalloc(sizeof(float) * (size_t)(p->steps + 1));
    zl_sigmas(p->steps, p->shift, sig);
    float *v = zl_try_malloc(sizeof(float) * n), *vn = cfg_any ? zl_try_malloc(sizeof(float) * n) : NULL;
    zl_sampler s;
    int rc = (!v || (cfg_any && !vn)) ? -1 : zl_sampler_init(&s, p->sampler, n);
    for (int i = 0; i < p->steps && rc == 0; i++) {
        float t = 1.0f - sig[i];
        rc = zl_zimage_forward(m, x, h, w, t, pos->cap, pos->L, v);
        if (rc == 0 && zl_cfg_active(p->guidance, p->cfg_trunc, sig[i])) {
            rc = zl_zimage_forward(m, x, h, w, t, neg->cap, neg->L, vn);
            if (rc == 0) zl_cfg_combine(v, v, vn, n, p->guidance, p->cfg_norm);
        }
        if (rc) break;
        for (size_t k = 0; k < n; k++) v[k] = -v[k]; /* v = −DiT(x, 1 − σ) = dx/dσ */
        zl_sampler_step(&s, x, v, sig, i);
        if (cb) cb(ud, i + 1, p->steps);
    }
    if (v) zl_sampler_free(&s);
    free(v);
    free(vn);
    free(sig);
    return rc;
}

int zl_gen_decode(const zl_vae *vae, float *z, int h, int w, int tile, uint8_t *rgb) {
    int f = zl_vae_factor(vae), H = h * f, W = w * f, C = vae->cfg.out_channels;
    if (C != 3) return zl_err("the VAE has %d output channels, not 3 (RGB)", C);
    zl_vae_denormalize(vae, z, (size_t)vae->cfg.latent_channels * (size_t)h * (size_t)w);
    float *img = zl_try_malloc(sizeof(float) * 3 * (size_t)H * (size_t)W);
    if (!img) return -1;
    int rc = tile > 0 ? zl_vae_decode_tiled(vae, z, h, w, tile, tile / 4, img) : zl_vae_decode(vae, z, h, w, img);
    if (rc == 0) {
        size_t plane = (size_t)H * (size_t)W;
        for (size_t i = 0; i < plane; i++)
            for (int ch = 0; ch < 3; ch++) {
                float v = img[ch * plane + i] * 0.5f + 0.5f;
                v = v < 0 ? 0 : v > 1 ? 1 : v;
                rgb[3 * i + ch] = (uint8_t)lrintf(v * 255.0f);
            }
    }
    free(img);
    return rc;
}

int zl_gen_check_size(int W, int H, int mult) {
    if (W > 0 && H > 0 && W % mult == 0 && H % mult == 0) return 0;
    char a[64] = "", b[64] = "";
    if (W <= 0 || H <= 0) return zl_err("width and height must be positive (got %dx%d)", W, H);
    int wl = W / mult * mult, hl = H / mult * mult, wu = wl + (W % mult ? mult : 0), hu = hl + (H % mult ? mult : 0);
    if (wl < mult) wl = mult;
    if (hl < mult) hl = mult;
    snprintf(a, sizeof a, "%dx%d", wl, hl);
    snprintf(b, sizeof b, "%dx%d", wu, hu);
    return zl_err("size %dx%d: width and height must be multiples of %d (VAE factor x patch size); nearest valid: %s or %s", W, H,
                  mult, a, b);
}

int zl_file_autov2(const char *path, char out[11]) {
    char hex[65];
    if (zl_sha256_file(path, hex)) return -1;
    memcpy(out, hex, 10);
    out[10] = 0;
    return 0;
}

/* ---- PNG metadata --------------------------------------------------------------------------------- */

const char *zl_gen_display_name(const char *p, char *buf, size_t n) {
    size_t len = strlen(p);
    while (len > 1 && p[len - 1] == '/') len--;
    const char *s = p;
    for (size_t i = 0; i < len; i++) if (p[i] == '/') s = p + i + 1;
    size_t k = (size_t)(p + len - s);
    if (k > 12 && !strncmp(s + k - 12, ".safetensors", 12)) k -= 12;
    snprintf(buf, n, "%.*s", (int)k, s);
    return buf;
}

void zl_gen_meta_text(const zl_gen_meta *m, char **parameters, char **json) {
    const zl_gen_params *p = &m->p;
    zl_buf par = {0};
    zl_buf_printf(&par, "%s\n", m->prompt);
    if (p->guidance != 0.0f) zl_buf_printf(&par, "Negative prompt: %s\n", m->negative);
    zl_buf_printf(&par, "Steps: %d, Sampler: %s, Schedule type: Simple, CFG scale: %g, Guidance (diffusers): %g, Seed: %llu, Size: %dx%d, Shift: %g, Model: %s",
                  p->steps, zl_sampler_display(p->sampler), (double)p->guidance + 1, (double)p->guidance, (unsigned long long)m->seed,
                  m->width, m->height, p->shift, m->model_name);
    if (p->cfg_norm > 0) zl_buf_printf(&par, ", CFG normalization: %g", (double)p->cfg_norm);
    if (p->cfg_trunc < 1.0f) zl_buf_printf(&par, ", CFG truncation: %g", (double)p->cfg_trunc);
    if (m->nlora) {
        char nb[256];
        zl_buf_puts(&par, ", Lora hashes: \"");
        for (int i = 0; i < m->nlora; i++)
            zl_buf_printf(&par, "%s%s: %s", i ? ", " : "", zl_gen_display_name(m->lora_path[i], nb, sizeof nb), m->lora_hash[i]);
        zl_buf_puts(&par, "\", Lora strengths: \"");
        for (int i = 0; i < m->nlora; i++)
            zl_buf_printf(&par, "%s%s: %g", i ? ", " : "", zl_gen_display_name(m->lora_path[i], nb, sizeof nb), (double)m->lora_s[i]);
        zl_buf_puts(&par, "\"");
    }
    zl_buf_printf(&par, ", Noise: %s, Version: zlora %s", p->noise == ZL_NOISE_TORCH ? "torch-cpu" : "torch-cpu-scalar", ZL_VERSION);
    cJSON *j = cJSON_CreateObject();
    cJSON_AddStringToObject(j, "prompt", m->prompt);
    if (p->guidance != 0.0f || m->store_negative) cJSON_AddStringToObject(j, "negative", m->negative);
    if (m->model) cJSON_AddStringToObject(j, "model", m->model);
    if (m->dit) cJSON_AddStringToObject(j, "dit", m->dit);
    if (m->te) cJSON_AddStringToObject(j, "te", m->te);
    if (m->vae) cJSON_AddStringToObject(j, "vae", m->vae);
    if (m->tok) cJSON_AddStringToObject(j, "tokenizer", m->tok);
    cJSON_AddNumberToObject(j, "steps", p->steps);
    cJSON_AddNumberToObject(j, "guidance", p->guidance);
    cJSON_AddNumberToObject(j, "cfg", (double)p->guidance + 1);
    cJSON_AddNumberToObject(j, "cfg_norm", p->cfg_norm);
    cJSON_AddNumberToObject(j, "cfg_trunc", p->cfg_trunc);
    cJSON_AddNumberToObject(j, "shift", p->shift);
    cJSON_AddStringToObject(j, "sampler", zl_sampler_name(p->sampler));
    char sb[32];
    snprintf(sb, sizeof sb, "%llu", (unsigned long long)m->seed);
    cJSON_AddStringToObject(j, "seed", sb);
    cJSON_AddStringToObject(j, "noise", p->noise == ZL_NOISE_TORCH ? "torch" : "torch-scalar");
    cJSON_AddNumberToObject(j, "width", m->width);
    cJSON_AddNumberToObject(j, "height", m->height);
    cJSON_AddStringToObject(j, "lora_mode", m->merge ? "merge" : "runtime");
    cJSON *ls = cJSON_AddArrayToObject(j, "loras");
    for (int i = 0; i < m->nlora; i++) {
        cJSON *l = cJSON_CreateObject();
        cJSON_AddStringToObject(l, "path", m->lora_path[i]);
        cJSON_AddNumberToObject(l, "strength", m->lora_s[i]);
        cJSON_AddStringToObject(l, "hash", m->lora_hash[i]);
        cJSON_AddItemToArray(ls, l);
    }
    cJSON_AddStringToObject(j, "version", ZL_VERSION);
    *json = cJSON_PrintUnformatted(j);
    cJSON_Delete(j);
    *parameters = par.s ? par.s : zl_xstrdup("");
}

int zl_gen_write_png(const char *path, const uint8_t *rgb, const zl_gen_meta *m) {
    char *par, *js;
    zl_gen_meta_text(m, &par, &js);
    const char *keys[2] = {"parameters", "zlora"}, *vals[2] = {par, js};
    uint8_t *png = NULL;
    size_t npng = 0;
    int rc = zl_png_encode_rgb8(rgb, m->width, m->height, keys, vals, 2, &png, &npng);
    if (rc == 0) {
        const void *parts[1] = {png};
        rc = zl_write_atomic(path, parts, &npng, 1);
    }
    free(png);
    free(par);
    free(js);
    return rc;
}
