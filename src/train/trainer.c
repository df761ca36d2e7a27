/* trainer.c — see trainer.h. */
#include "train/trainer.h"
#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>
#include "base/base.h"
#include "base/progress.h"
#include "gen/generate.h"
#include "eval/grid.h"
#include "io/image.h"
#include "io/safetensors.h"
#include "lora/lora.h"
#include "model/te_cache.h"
#include "model/vae.h"
#include "model/zimage.h"
#include "nn/ops.h"
#include "train/dataset.h"
#include "train/latent_cache.h"
#include "train/lora_init.h"

static const char *route_names[ZL_ROUTE_COUNT] = {"base", "turbo-adapter", "turbo-direct", "custom"};
const char *zl_route_name(zl_route r) { return r < ZL_ROUTE_COUNT ? route_names[r] : "?"; }
int zl_route_parse(const char *s, zl_route *r) {
    for (int i = 0; i < ZL_ROUTE_COUNT; i++)
        if (!strcmp(s, route_names[i])) { *r = (zl_route)i; return 0; }
    return zl_err("unknown route '%s' (choices: base, turbo-adapter, turbo-direct, custom)", s);
}

void zl_train_default_opts(zl_train_opts *o) {
    memset(o, 0, sizeof *o);
    o->route = ZL_ROUTE_COUNT; /* unset */
    o->rank = 16;
    o->lr = 1e-4f;
    o->weight_decay = 0.01f;
    o->max_grad_norm = 1.0f;
    o->beta1 = 0.9f;
    o->beta2 = 0.999f;
    o->sched = ZL_LR_CONSTANT;
    o->steps = 3000;
    o->batch = 1;
    o->grad_accum = 1;
    zl_sigma_default_opts(&o->sigma);
    o->sigma.kind = ZL_SIGMA_COUNT; /* unset: the route decides */
    o->seed = 42;
    o->resolution = 1024;
    o->bucket_step = 64;
    o->repeats = 1;
    o->save_every = 250;
    o->sample_every = 250;
    o->keep = 3;
    o->sample_seed = 42;
}

void zl_train_opts_free(zl_train_opts *o) {
    free(o->model); free(o->data); free(o->out); free(o->adapter); free(o->name); free(o->trigger);
    free(o->default_caption); free(o->cache); free(o->negative); free(o->teacher); free(o->teacher_lora); free(o->turbo_model);
    for (int i = 0; i < o->nprompts; i++) free(o->prompts[i]);
    memset(o, 0, sizeof *o);
}

void zl_train_route_defaults(zl_train_opts *o) {
    if (o->route == ZL_ROUTE_COUNT) o->route = ZL_ROUTE_BASE;
    if (o->sigma.kind == ZL_SIGMA_COUNT) {
        /* the Z-Image scheduler's shift 3 over sigmoid(N(0,1)) (SimpleTuner's default; close to DiffSynth's
         * shift-3 grid): it spends more steps at high noise, where composition and identity form */
        o->sigma.kind = ZL_SIGMA_SHIFT;
        o->sigma.shift = 3.0f;
    }
    if (!o->name) o->name = zl_xstrdup("lora");
    if (!o->sample_size) o->sample_size = o->resolution;
    if (!o->negative) o->negative = zl_xstrdup("");
}

/* ---- options as JSON -------------------------------------------------------------------------------- */

char *zl_train_opts_json(const zl_train_opts *o) {
    cJSON *j = cJSON_CreateObject();
#define S(k) if (o->k) cJSON_AddStringToObject(j, #k, o->k)
#define N(k) cJSON_AddNumberToObject(j, #k, (double)o->k)
    S(model); S(data); S(out); S(adapter); S(name); S(trigger); S(default_caption); S(cache); S(negative);
    S(teacher); S(teacher_lora); S(turbo_model);
    N(sample_steps); N(sample_guidance);
    N(full); N(distill_steps); N(teacher_substeps); N(teacher_guidance);
    cJSON_AddStringToObject(j, "route", zl_route_name(o->route));
    N(rank); N(targets); N(gaussian_init); N(alpha); N(lora_dropout); N(lr); N(min_lr); N(weight_decay); N(max_grad_norm); N(beta1); N(beta2);
    cJSON_AddStringToObject(j, "sched", zl_lr_name(o->sched));
    N(warmup); N(steps); N(batch); N(grad_accum);
    cJSON_AddStringToObject(j, "sigma", zl_sigma_name(o->sigma.kind));
    cJSON_AddNumberToObject(j, "sigma_mean", o->sigma.mean);
    cJSON_AddNumberToObject(j, "sigma_std", o->sigma.std);
    cJSON_AddNumberToObject(j, "sigma_shift", o->sigma.shift);
    char sb[32];
    snprintf(sb, sizeof sb, "%llu", (unsigned long long)o->seed);
    cJSON_AddStringToObject(j, "seed", sb);
    N(resolution); N(bucket_step); N(repeats); N(flip); N(allow_upscale); N(caption_dropout);
    N(save_every); N(sample_every); N(keep); N(sample_size); N(sample_seed);
    cJSON *p = cJSON_AddArrayToObject(j, "prompts");
    for (int i = 0; i < o->nprompts; i++) cJSON_AddItemToArray(p, cJSON_CreateString(o->prompts[i]));
#undef S
#undef N
    char *s = cJSON_Print(j);
    cJSON_Delete(j);
    return s;
}

int zl_train_opts_from_json(const char *json, zl_train_opts *o) {
    cJSON *j = cJSON_Parse(json);
    if (!j) return zl_err("train.json is not valid JSON");
    const cJSON *it;
    int rc = 0;
#define S(k) if (cJSON_IsString(it = cJSON_GetObjectItemCaseSensitive(j, #k))) { free(o->k); o->k = zl_xstrdup(it->valuestring); }
#define NI(k) if (cJSON_IsNumber(it = cJSON_GetObjectItemCaseSensitive(j, #k))) o->k = it->valueint
#define NF(k) if (cJSON_IsNumber(it = cJSON_GetObjectItemCaseSensitive(j, #k))) o->k = (float)it->valuedouble
    S(model); S(data); S(out); S(adapter); S(name); S(trigger); S(default_caption); S(cache); S(negative);
    S(teacher); S(teacher_lora); S(turbo_model);
    NI(sample_steps); NF(sample_guidance);
    NI(full); NI(distill_steps); NI(teacher_substeps); NF(teacher_guidance);
    if (cJSON_IsString(it = cJSON_GetObjectItemCaseSensitive(j, "route"))) rc |= zl_route_parse(it->valuestring, &o->route);
    NI(rank); NI(targets); NI(gaussian_init); NF(alpha); NF(lora_dropout); NF(lr); NF(min_lr); NF(weight_decay); NF(max_grad_norm); NF(beta1); NF(beta2);
    if (cJSON_IsString(it = cJSON_GetObjectItemCaseSensitive(j, "sched"))) rc |= zl_lr_parse(it->valuestring, &o->sched);
    NI(warmup); NI(steps); NI(batch); NI(grad_accum);
    if (cJSON_IsString(it = cJSON_GetObjectItemCaseSensitive(j, "sigma"))) rc |= zl_sigma_parse(it->valuestring, &o->sigma.kind);
    if (cJSON_IsNumber(it = cJSON_GetObjectItemCaseSensitive(j, "sigma_mean"))) o->sigma.mean = (float)it->valuedouble;
    if (cJSON_IsNumber(it = cJSON_GetObjectItemCaseSensitive(j, "sigma_std"))) o->sigma.std = (float)it->valuedouble;
    if (cJSON_IsNumber(it = cJSON_GetObjectItemCaseSensitive(j, "sigma_shift"))) o->sigma.shift = (float)it->valuedouble;
    if (cJSON_IsString(it = cJSON_GetObjectItemCaseSensitive(j, "seed"))) o->seed = strtoull(it->valuestring, NULL, 10);
    NI(resolution); NI(bucket_step); NI(repeats); NI(flip); NI(allow_upscale); NF(caption_dropout);
    NI(save_every); NI(sample_every); NI(keep); NI(sample_size); NI(sample_seed);
    const cJSON *p = cJSON_GetObjectItemCaseSensitive(j, "prompts"), *e;
    cJSON_ArrayForEach(e, p) if (cJSON_IsString(e) && o->nprompts < ZL_TRAIN_MAX_PROMPTS) o->prompts[o->nprompts++] = zl_xstrdup(e->valuestring);
#undef S
#undef NI
#undef NF
    cJSON_Delete(j);
    return rc ? -1 : 0;
}

/* ---- deterministic per-step randomness ------------------------------------------------------------ */

uint64_t zl_train_key(uint64_t seed, int64_t step, int micro, int purpose) {
    uint64_t k[4] = {seed, (uint64_t)step, (uint64_t)micro, (uint64_t)purpose};
    return zl_hash64(k, sizeof k, 0x7a6c6f7261ull);
}

/* ---- the data plan: batches within buckets, reshuffled every epoch ---------------------------------- */

typedef struct {
    int *idx;      /* [nchunks * batch] item indices, -1 padding when a bucket's last chunk is short */
    int nchunks, batch;
} plan;

static void shuffle(int *a, int n, uint64_t key) {
    zl_rng r = {key};
    for (int i = n - 1; i > 0; i--) {
        int j = (int)(zl_rng_next(&r) % (uint64_t)(i + 1)), t = a[i];
        a[i] = a[j];
        a[j] = t;
    }
}

/* The chunks of one epoch: every item `repeats` times, shuffled, grouped by bucket into chunks of `batch`,
 * the chunks shuffled. Its size does not depend on the epoch. */
static void make_plan(const zl_dataset *ds, int repeats, int batch, uint64_t seed, int epoch, plan *p) {
    int n = ds->n * repeats;
    int *perm = zl_xmalloc(sizeof(int) * (size_t)n);
    for (int i = 0; i < n; i++) perm[i] = i % ds->n;
    shuffle(perm, n, zl_train_key(seed, epoch, 0, 1));
    int maxchunks = n + ds->nbuckets;
    p->idx = zl_xmalloc(sizeof(int) * (size_t)maxchunks * (size_t)batch);
    p->batch = batch;
    p->nchunks = 0;
    for (int b = 0; b < ds->nbuckets; b++) {
        int fill = 0;
        for (int i = 0; i < n; i++) {
            const zl_item *it = &ds->items[perm[i]];
            if (it->bw != ds->buckets[b].w || it->bh != ds->buckets[b].h) continue;
            if (fill == 0) p->nchunks++;
            p->idx[(p->nchunks - 1) * batch + fill] = perm[i];
            fill = (fill + 1) % batch;
        }
        if (fill) for (; fill < batch; fill++) p->idx[(p->nchunks - 1) * batch + fill] = -1;
    }
    int *order = zl_xmalloc(sizeof(int) * (size_t)p->nchunks), *tmp = zl_xmalloc(sizeof(int) * (size_t)p->nchunks * (size_t)batch);
    for (int i = 0; i < p->nchunks; i++) order[i] = i;
    shuffle(order, p->nchunks, zl_train_key(seed, epoch, 0, 2));
    for (int i = 0; i < p->nchunks; i++) memcpy(tmp + i * batch, p->idx + order[i] * batch, sizeof(int) * (size_t)batch);
    memcpy(p->idx, tmp, sizeof(int) * (size_t)p->nchunks * (size_t)batch);
    free(order);
    free(tmp);
    free(perm);
}

/* ---- signals ---------------------------------------------------------------------------------------- */

static volatile sig_atomic_t g_stop = 0;
static void on_signal(int s) { g_stop = s; }

/* ---- files ------------------------------------------------------------------------------------------ */

static int mkdir_p(const char *dir) {
    char *p = zl_xstrdup(dir);
    for (char *s = p + 1; *s; s++)
        if (*s == '/') { *s = 0; mkdir(p, 0755); *s = '/'; }
    int rc = (mkdir(p, 0755) && errno != EEXIST) ? zl_err("cannot create %s: %s", dir, strerror(errno)) : 0;
    free(p);
    return rc;
}

static char *slurp(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    zl_buf b = {0};
    char chunk[4096];
    size_t k;
    while ((k = fread(chunk, 1, sizeof chunk, f)) > 0) {
        if (!b.s) zl_buf_puts(&b, "");
        for (size_t i = 0; i < k; i++) zl_buf_printf(&b, "%c", chunk[i]);
    }
    fclose(f);
    return b.s ? b.s : zl_xstrdup("");
}

static int write_text(const char *path, const char *s) {
    const void *parts[1] = {s};
    size_t n = strlen(s);
    return zl_write_atomic(path, parts, &n, 1);
}

static int rm_rf(const char *path) {
    char *cmd = zl_xasprintf("rm -rf '%s'", path); /* paths made by us: digits and our own names */
    int rc = system(cmd);
    free(cmd);
    return rc;
}

/* ---- the run ------------------------------------------------------------------------------------------ */

typedef struct {
    zl_train_opts *o;
    zl_model_parts mp;
    zl_dataset ds;
    char *latent_dir, *feat_dir, *vae_id;
    /* features: one per unique caption, plus "" (dropout) and the validation prompts + negative */
    char **texts;
    zl_feat *feats;
    int ntexts;
    int *item_text;   /* [ds.n] -> text index */
    int empty_text, neg_text, *prompt_text;
    zl_zimage *m;
    zl_vae *vae;
    zl_lora *lora, *grad, *adapter;
    zl_param *params;     /* what trains: LoRA factors (<module>.down/.up) or every weight (full) */
    int np;
    float **mom1, **mom2; /* [np] AdamW moments */
    zl_zimage *teacher;   /* distillation */
    int fac;              /* VAE factor */
    zl_adamw adam;
    int step;             /* optimizer steps done */
    FILE *loss_csv;
} run_t;

static int text_index(run_t *r, const char *t) {
    for (int i = 0; i < r->ntexts; i++) if (!strcmp(r->texts[i], t)) return i;
    r->texts = zl_xrealloc(r->texts, sizeof(char *) * (size_t)(r->ntexts + 1));
    r->texts[r->ntexts] = zl_xstrdup(t);
    return r->ntexts++;
}

static size_t part_n(const zl_lora_module *m, int up) {
    const zl_mat *p = &m->p[up ? ZL_P_UP : ZL_P_DOWN];
    return (size_t)p->shape[0] * (size_t)p->shape[1];
}

static void report_line(const char *s) { zl_info("%s", s); }

/* LoRA dropout for the next forward + backward (key: one per sample and step, from zl_train_key), or off
 * (key ignored) for everything else: samples never see it. */
static void lora_dropout(run_t *r, int on, uint64_t key) {
    if (r->lora && r->o->lora_dropout > 0.0f) zl_zimage_lora_set_dropout(r->m, r->lora, on ? r->o->lora_dropout : 0.0f, key);
}

/* checkpoint: step, LoRA factors, moments */
static int save_checkpoint(run_t *r) {
    zl_train_opts *o = r->o;
    char *final = zl_xasprintf("%s/checkpoints/step_%06d", o->out, r->step);
    char *tmp = zl_xasprintf("%s/checkpoints/.tmp_step_%06d", o->out, r->step);
    rm_rf(tmp);
    int rc = mkdir_p(tmp);
    zl_st_writer *w = rc ? NULL : zl_stw_new();
    for (int i = 0; w && i < r->np && rc == 0; i++) {
        int64_t sh[1] = {(int64_t)r->params[i].n};
        char k[200];
        rc = zl_stw_add_f32(w, r->params[i].name, 1, sh, r->params[i].p, ZL_F32);
        snprintf(k, sizeof k, "%s.adam_m", r->params[i].name);
        if (rc == 0) rc = zl_stw_add_f32(w, k, 1, sh, r->mom1[i], ZL_F32);
        snprintf(k, sizeof k, "%s.adam_v", r->params[i].name);
        if (rc == 0) rc = zl_stw_add_f32(w, k, 1, sh, r->mom2[i], ZL_F32);
    }
    char *st = zl_xasprintf("%s/state.safetensors", tmp);
    if (rc == 0) {
        char sb[32];
        snprintf(sb, sizeof sb, "%d", r->step);
        zl_stw_meta(w, "zlora.step", sb);
        snprintf(sb, sizeof sb, "%lld", (long long)r->adam.t);
        zl_stw_meta(w, "zlora.adam_t", sb);
        rc = zl_stw_write(w, st);
    }
    zl_stw_free(w);
    free(st);
    if (rc == 0 && r->lora) {
        char *lp = zl_xasprintf("%s/lora.safetensors", tmp);
        zl_write_opts wo = {.to = ZL_FMT_AITOOLKIT, .dtype = ZL_F32};
        rc = zl_lora_write(r->lora, lp, &wo);
        free(lp);
    }
    if (rc == 0) {
        rm_rf(final);
        if (rename(tmp, final)) rc = zl_err("cannot rename %s to %s: %s", tmp, final, strerror(errno));
    }
    if (rc == 0) {
        char *lt = zl_xasprintf("%s/checkpoints/latest", o->out), *v = zl_xasprintf("step_%06d\n", r->step);
        rc = write_text(lt, v);
        free(lt);
        free(v);
    }
    if (rc == 0 && o->keep > 0) { /* keep the newest `keep` checkpoints */
        int kept = 1;
        for (int st = r->step - 1; st >= 0; st--) {
            char *p = zl_xasprintf("%s/checkpoints/step_%06d", o->out, st);
            if (zl_is_dir(p)) { if (kept >= o->keep) rm_rf(p); else kept++; }
            free(p);
        }
    }
    if (rc) zl_err_prefix("checkpoint at step %d (the previous checkpoint is intact)", r->step);
    else zl_info("checkpoint: %s", final);
    free(final);
    free(tmp);
    return rc;
}

static int load_checkpoint(run_t *r) {
    zl_train_opts *o = r->o;
    char *lt = zl_xasprintf("%s/checkpoints/latest", o->out);
    char *name = slurp(lt);
    free(lt);
    if (!name) return zl_err("%s has no checkpoint to resume from (checkpoints/latest is missing)", o->out);
    name[strcspn(name, "\r\n")] = 0;
    char *p = zl_xasprintf("%s/checkpoints/%s/state.safetensors", o->out, name);
    free(name);
    zl_st *st;
    int rc = zl_st_open(p, &st);
    if (rc == 0) {
        const char *s = zl_st_meta_get(st, "zlora.step"), *t = zl_st_meta_get(st, "zlora.adam_t");
        if (!s || !t) rc = zl_err("%s: no step in the checkpoint", p);
        else { r->step = atoi(s); r->adam.t = atoll(t); }
        for (int i = 0; i < r->np && rc == 0; i++) {
            float *dst[3] = {r->params[i].p, r->mom1[i], r->mom2[i]};
            const char *suf[3] = {"", ".adam_m", ".adam_v"};
            for (int k = 0; k < 3 && rc == 0; k++) {
                char key[200];
                snprintf(key, sizeof key, "%s%s", r->params[i].name, suf[k]);
                const zl_tensor_info *ti = zl_st_find(st, key);
                if (!ti || ti->ndim != 1 || (size_t)ti->shape[0] != r->params[i].n) {
                    rc = zl_err("%s: %s is missing or has another size (was the run started with other options?)", p, key);
                    break;
                }
                float *v = zl_st_read_f32(st, ti);
                if (!v) { rc = -1; break; }
                memcpy(dst[k], v, sizeof(float) * r->params[i].n);
                free(v);
            }
        }
        zl_st_close(st);
    }
    if (rc == 0) zl_info("resumed from %s at step %d", p, r->step);
    free(p);
    return rc;
}

/* validation samples at the route's settings; the adapter (if any) is switched off meanwhile */
/* The validation images of one model at one setting: prompt i with seed sample_seed + i. */
static int sample_with(run_t *r, zl_zimage *m, const zl_val_setting *vs, double shift, const char *tag, const char *dir, uint8_t **keep) {
    zl_train_opts *o = r->o;
    int f = zl_vae_factor(r->vae), h = o->sample_size / f, w = h, rc = 0;
    size_t n = (size_t)m->cfg.in_channels * (size_t)h * (size_t)w;
    float *x = zl_try_malloc(sizeof(float) * n);
    uint8_t *rgb = zl_try_malloc((size_t)o->sample_size * (size_t)o->sample_size * 3);
    if (!x || !rgb) rc = -1;
    for (int i = 0; i < o->nprompts && rc == 0; i++) {
        zl_gen_params gp;
        zl_gen_default_params(&gp);
        gp.steps = vs->steps;
        gp.guidance = vs->cfg_on ? vs->guidance : 0.0f;
        gp.shift = shift;
        zl_torch_randn(o->sample_seed + (uint64_t)i, x, n);
        rc = zl_gen_sample(m, &gp, &r->feats[r->prompt_text[i]], &r->feats[r->neg_text], x, h, w, NULL, NULL);
        if (rc == 0) rc = zl_gen_decode(r->vae, x, h, w, 0, rgb);
        if (rc == 0) {
            char *path = zl_xasprintf("%s/%s_%s_p%02d.png", dir, tag, vs->label, i);
            char *par = zl_xasprintf("%s\nSteps: %d, Sampler: Euler, CFG scale: %g, Seed: %d, Size: %dx%d, Shift: %g, Training step: %d, Route: %s",
                                     o->prompts[i], gp.steps, (double)gp.guidance + 1, o->sample_seed + i, o->sample_size, o->sample_size,
                                     gp.shift, r->step, zl_route_name(o->route));
            const char *keys[1] = {"parameters"}, *vals[1] = {par};
            uint8_t *png = NULL;
            size_t np = 0;
            rc = zl_png_encode_rgb8(rgb, o->sample_size, o->sample_size, keys, vals, 1, &png, &np);
            if (rc == 0) { const void *parts[1] = {png}; rc = zl_write_atomic(path, parts, &np, 1); }
            free(png); free(par); free(path);
            if (rc == 0 && keep) {
                size_t nb = (size_t)o->sample_size * (size_t)o->sample_size * 3;
                keep[i] = zl_xmalloc(nb);
                memcpy(keep[i], rgb, nb);
            }
        }
    }
    free(x);
    free(rgb);
    return rc;
}

/* Validation samples at the route's settings (the adapter, if any, switched off meanwhile); with
 * --turbo-model, the LoRA on Turbo at 8 steps too (loaded for the occasion, as runtime branches on the
 * same factors). */
static int sample_all(run_t *r, const char *tag) {
    zl_train_opts *o = r->o;
    if (!o->nprompts || !r->vae) return 0;
    lora_dropout(r, 0, 0);
    zl_val_setting vs[3];
    int nv = 0;
    if (o->sample_steps > 0) vs[nv++] = (zl_val_setting){o->sample_steps, o->sample_guidance != 0.0f, o->sample_guidance, "custom"};
    else if (o->route == ZL_ROUTE_BASE) vs[nv++] = (zl_val_setting){30, 1, 3.0f, "base30"};
    else vs[nv++] = (zl_val_setting){8, 0, 0.0f, "turbo8"};
    if (o->route == ZL_ROUTE_TURBO_DIRECT && o->sample_steps <= 0) vs[nv++] = (zl_val_setting){30, 1, 1.0f, "30steps"};
    int np = o->nprompts, rows = nv + (o->turbo_model && r->lora ? 1 : 0);
    uint8_t **cells = zl_xcalloc((size_t)rows * (size_t)np, sizeof(uint8_t *));
    char *dir = zl_xasprintf("%s/samples", o->out);
    int rc = mkdir_p(dir);
    if (r->adapter) zl_zimage_lora_set_strength(r->m, r->adapter, 0.0f);
    for (int v = 0; v < nv && rc == 0; v++) rc = sample_with(r, r->m, &vs[v], r->mp.shift, tag, dir, cells + (size_t)v * np);
    if (r->adapter) zl_zimage_lora_set_strength(r->m, r->adapter, 1.0f);
    zl_val_setting tv = {8, 0, 0.0f, "on-turbo8"};
    if (rc == 0 && o->turbo_model && r->lora) {
        zl_model_parts tp;
        zl_zimage *t = NULL;
        float one = 1.0f;
        rc = zl_model_parts_resolve(o->turbo_model, NULL, NULL, NULL, NULL, &tp);
        if (rc == 0 && !tp.dit) rc = zl_err("--turbo-model %s: no transformer/", o->turbo_model);
        if (rc == 0) rc = zl_zimage_load(tp.dit, NULL, &t);
        if (rc == 0) rc = zl_zimage_apply_loras(t, &r->lora, &one, 1, 0, 0, NULL);
        if (rc == 0) rc = sample_with(r, t, &tv, tp.shift, tag, dir, cells + (size_t)nv * np);
        zl_zimage_free(t);
        zl_model_parts_free(&tp);
    }
    if (rc == 0) { /* one grid per sampling: rows = settings, columns = prompts */
        const char **rl = zl_xcalloc((size_t)rows, sizeof(char *)), **cl = zl_xcalloc((size_t)np, sizeof(char *));
        char **own_l = zl_xcalloc((size_t)rows + (size_t)np, sizeof(char *));
        for (int v = 0; v < rows; v++) {
            const zl_val_setting *sv = v < nv ? &vs[v] : &tv;
            own_l[v] = zl_xasprintf("%s\n%d steps, CFG %g%s", sv->label, sv->steps, sv->cfg_on ? (double)sv->guidance + 1 : 1.0,
                                    v < nv && r->adapter ? ", adapter off" : "");
            rl[v] = own_l[v];
        }
        for (int i = 0; i < np; i++) {
            own_l[rows + i] = zl_utf8_valid(o->prompts[i], strlen(o->prompts[i])) ? zl_xstrdup(o->prompts[i]) : zl_xasprintf("prompt %d", i);
            cl[i] = own_l[rows + i];
        }
        char *title = zl_xasprintf("%s, %s route, seeds %d..%d", tag, zl_route_name(o->route), o->sample_seed, o->sample_seed + np - 1);
        zl_grid g = {title, rows, np, rl, cl, (const uint8_t *const *)cells, o->sample_size, o->sample_size};
        uint8_t *rgb = NULL, *png = NULL;
        int gw, gh;
        size_t npng = 0;
        if (zl_grid_render(&g, &rgb, &gw, &gh) == 0 && zl_png_encode_rgb8(rgb, gw, gh, NULL, NULL, 0, &png, &npng) == 0) {
            char *path = zl_xasprintf("%s/%s_grid.png", dir, tag);
            const void *parts[1] = {png};
            if (zl_write_atomic(path, parts, &npng, 1)) zl_warn("%s", zl_last_error());
            free(path);
        } else {
            zl_warn("sample grid: %s", zl_last_error());
        }
        free(rgb); free(png); free(title);
        for (int k = 0; k < rows + np; k++) free(own_l[k]);
        free(own_l); free(rl); free(cl);
    }
    for (int k = 0; k < rows * np; k++) free(cells[k]);
    free(cells);
    free(dir);
    return rc;
}

/* loss.png: the loss per step (light) and its moving average (dark), log-free, autoscaled */
static void plot_loss(const char *out, const float *loss, int n) {
    if (n < 2) return;
    int W = 640, H = 320, pad = 20;
    uint8_t *img = zl_xmalloc((size_t)W * H * 3);
    memset(img, 255, (size_t)W * H * 3);
    float lo = loss[0], hi = loss[0];
    for (int i = 0; i < n; i++) { lo = fminf(lo, loss[i]); hi = fmaxf(hi, loss[i]); }
    if (hi - lo < 1e-12f) hi = lo + 1e-6f;
    for (int x = pad; x < W - pad; x++) { uint8_t *p = img + ((size_t)(H - pad) * W + x) * 3; p[0] = p[1] = p[2] = 0; }
    for (int y = pad; y < H - pad; y++) { uint8_t *p = img + ((size_t)y * W + pad) * 3; p[0] = p[1] = p[2] = 0; }
    double ema = loss[0];
    for (int pass = 0; pass < 2; pass++)
        for (int i = 0; i < n; i++) {
            ema = i ? 0.95 * ema + 0.05 * loss[i] : loss[0];
            float v = pass ? (float)ema : loss[i];
            int x = pad + 1 + (int)((double)i / (n - 1) * (W - 2 * pad - 2));
            int y = H - pad - 1 - (int)((v - lo) / (hi - lo) * (H - 2 * pad - 2));
            uint8_t *p = img + ((size_t)y * W + x) * 3;
            if (pass) { p[0] = 200; p[1] = 30; p[2] = 30; }
            else { p[0] = 150; p[1] = 170; p[2] = 230; }
        }
    char *par = zl_xasprintf("zlora training loss: %d steps, min %g, max %g (light: per step; red: moving average)", n, (double)lo, (double)hi);
    const char *keys[1] = {"parameters"}, *vals[1] = {par};
    uint8_t *png = NULL;
    size_t np = 0;
    if (zl_png_encode_rgb8(img, W, H, keys, vals, 1, &png, &np) == 0) {
        char *path = zl_xasprintf("%s/loss.png", out);
        const void *parts[1] = {png};
        if (zl_write_atomic(path, parts, &np, 1)) zl_warn("%s", zl_last_error());
        free(path);
    }
    free(png);
    free(par);
    free(img);
}

static int save_final(run_t *r) {
    zl_train_opts *o = r->o;
    if (o->full) { /* the whole transformer */
        char *path = zl_xasprintf("%s/%s.safetensors", o->out, o->name);
        int rc = zl_zimage_save(r->m, path, ZL_F32);
        if (rc == 0) zl_info("saved %s (the whole transformer, F32)", path);
        free(path);
        return rc;
    }
    char *path = zl_xasprintf("%s/%s.safetensors", o->out, o->name);
    char buf[64];
    zl_lora_meta_set(r->lora, "ss_network_module", "networks.lora");
    snprintf(buf, sizeof buf, "%d", o->rank);
    zl_lora_meta_set(r->lora, "ss_network_dim", buf);
    snprintf(buf, sizeof buf, "%g", (double)(o->alpha > 0 ? o->alpha : (float)o->rank));
    zl_lora_meta_set(r->lora, "ss_network_alpha", buf);
    snprintf(buf, sizeof buf, "%g", (double)o->lr);
    zl_lora_meta_set(r->lora, "ss_learning_rate", buf);
    snprintf(buf, sizeof buf, "%d", r->step);
    zl_lora_meta_set(r->lora, "ss_steps", buf);
    zl_lora_meta_set(r->lora, "ss_base_model_version", "z-image");
    zl_lora_meta_set(r->lora, "modelspec.architecture", "z-image/lora");
    zl_lora_meta_set(r->lora, "modelspec.implementation", "https://github.com/Tongyi-MAI/Z-Image");
    zl_lora_meta_set(r->lora, "modelspec.title", o->name);
    zl_lora_meta_set(r->lora, "zlora.route", zl_route_name(o->route));
    if (o->trigger) zl_lora_meta_set(r->lora, "zlora.trigger", o->trigger);
    char *hp = zl_train_opts_json(o);
    zl_lora_meta_set(r->lora, "zlora.training", hp);
    free(hp);
    char *id = zl_weights_identity(r->mp.dit, NULL, "dit");
    if (id) { zl_lora_meta_set(r->lora, "zlora.base_model", id); free(id); }
    snprintf(buf, sizeof buf, "%d images, %d buckets", r->ds.n, r->ds.nbuckets);
    zl_lora_meta_set(r->lora, "zlora.dataset", buf);
    zl_write_opts wo = {.to = ZL_FMT_AITOOLKIT, .dtype = ZL_F32};
    int rc = zl_lora_write(r->lora, path, &wo);
    /* read it back and check that every tensor applies to this model */
    zl_lora *back = NULL;
    if (rc == 0) rc = zl_lora_load(path, &back);
    if (rc == 0) {
        zl_module_table t;
        if (zl_module_table_from_checkpoint(r->mp.dit, &t) == 0) {
            char b2[256];
            int ok = 0;
            for (int i = 0; i < back->n; i++) ok += zl_lora_check_module(back, i, &t, b2, sizeof b2) == NULL;
            zl_module_table_free(&t);
            if (ok != back->n) rc = zl_err("%s: only %d of %d modules apply to the model after saving", path, ok, back->n);
            else zl_info("saved %s (%d modules, rank %d; re-read: applied %d/%d)", path, back->n, o->rank, ok, back->n);
        }
    }
    zl_lora_free(back);
    free(path);
    return rc;
}

/* Trajectory distillation, one sample: the teacher samples from noise with `teacher_substeps` Euler steps
 * (and guidance) between each pair of the student's sigmas; at each student sigma the student learns the
 * teacher's average velocity over the interval, so that one student step lands where the teacher's
 * substeps land: target = −(X_{i+1} − X_i)/(σ_{i+1} − σ_i) for the raw DiT output (which is −v). */
static int distill_sample(run_t *r, const zl_item *it, const zl_feat *f, uint64_t noise_key, float gscale, float *loss_out) {
    zl_train_opts *o = r->o;
    int S = o->distill_steps, K = o->teacher_substeps > 0 ? o->teacher_substeps : 4;
    int C = r->m->cfg.in_channels, h = it->bh / r->fac, w = it->bw / r->fac;
    size_t n = (size_t)C * h * w;
    float *sig = zl_xmalloc(sizeof(float) * (size_t)(S + 1));
    zl_sigmas(S, r->mp.shift, sig);
    float *X = zl_try_malloc(sizeof(float) * n * (size_t)(S + 1)), *v = zl_try_malloc(sizeof(float) * n), *vn = zl_try_malloc(sizeof(float) * n);
    int rc = (!X || !v || !vn) ? -1 : 0;
    if (rc == 0) zl_torch_randn(noise_key, X, n);
    const zl_feat *neg = &r->feats[r->empty_text];
    for (int i = 0; i < S && rc == 0; i++) {
        float *x = X + (size_t)(i + 1) * n;
        memcpy(x, X + (size_t)i * n, sizeof(float) * n);
        for (int k = 0; k < K && rc == 0; k++) {
            float s0 = sig[i] + (sig[i + 1] - sig[i]) * (float)k / K, s1 = sig[i] + (sig[i + 1] - sig[i]) * (float)(k + 1) / K;
            rc = zl_zimage_forward(r->teacher, x, h, w, 1.0f - s0, f->cap, f->L, v);
            if (rc == 0 && o->teacher_guidance != 0.0f) {
                rc = zl_zimage_forward(r->teacher, x, h, w, 1.0f - s0, neg->cap, neg->L, vn);
                if (rc == 0) zl_cfg_combine(v, v, vn, n, o->teacher_guidance, 0.0f);
            }
            if (rc == 0) zl_op_axpy(x, -(s1 - s0), v, n); /* x += (s1 − s0)·(−out) */
        }
    }
    double lsum = 0;
    for (int i = 0; i < S && rc == 0; i++) {
        float inv = 1.0f / (sig[i + 1] - sig[i]);
        const float *x0 = X + (size_t)i * n, *x1 = X + (size_t)(i + 1) * n;
        for (size_t q = 0; q < n; q++) v[q] = -(x1[q] - x0[q]) * inv; /* the raw output the student should give */
        float l = 0;
        lora_dropout(r, 1, zl_train_key(noise_key, i, 0, 6)); /* a mask per student step */
        rc = zl_zimage_forward_backward(r->m, x0, h, w, 1.0f - sig[i], f->cap, f->L, v, gscale / (float)S, &l, NULL);
        lsum += l;
    }
    *loss_out = (float)(lsum / S);
    free(sig); free(X); free(v); free(vn);
    return rc;
}

int zl_train_run(zl_train_opts *o, int resume) {
    run_t R;
    memset(&R, 0, sizeof R);
    run_t *r = &R;
    r->o = o;
    zl_train_route_defaults(o);
    int rc = 0;
    if (!o->model || !o->data || !o->out) return zl_err("train: --model, --data and --out are required");
    if (o->route == ZL_ROUTE_TURBO_ADAPTER && !o->adapter) return zl_err("train: --route turbo-adapter needs --adapter FILE (the de-distill training adapter)");
    if (o->route != ZL_ROUTE_TURBO_ADAPTER && o->route != ZL_ROUTE_CUSTOM && o->adapter)
        return zl_err("train: --adapter is for --route turbo-adapter (or custom)");
    if (o->batch < 1 || o->grad_accum < 1 || o->steps < 1) return zl_err("train: steps, batch and grad-accum must be at least 1");
    if (!(o->lora_dropout >= 0.0f && o->lora_dropout < 1.0f)) return zl_err("train: --lora-dropout must be in [0, 1)");
    if (o->full && o->lora_dropout > 0.0f) return zl_err("train: --lora-dropout is for LoRA training, not --full");
    if (mkdir_p(o->out)) return -1;
    /* options: train.json */
    char *tj = zl_xasprintf("%s/train.json", o->out), *js = zl_train_opts_json(o);
    rc = write_text(tj, js);
    free(tj);
    free(js);
    if (rc) return -1;
    if (zl_model_parts_resolve(o->model, NULL, NULL, NULL, NULL, &r->mp)) return -1;
    if (!r->mp.dit || !r->mp.vae || !r->mp.te) { zl_model_parts_free(&r->mp); return zl_err("train: %s must hold transformer/, text_encoder/, tokenizer/ and vae/", o->model); }
    /* the data, checked before any model loads */
    zl_vae *probe = NULL;
    if (zl_vae_load(r->mp.vae, NULL, &probe)) { zl_model_parts_free(&r->mp); return -1; }
    int fac = zl_vae_factor(probe);
    zl_vae_free(probe);
    r->fac = fac;
    zl_dataset_opts dop;
    zl_dataset_default_opts(&dop);
    dop.trigger = o->trigger;
    dop.default_caption = o->default_caption;
    dop.resolution = o->resolution;
    dop.mult = fac * 2;
    dop.step = o->bucket_step % dop.mult ? dop.mult * (o->bucket_step / dop.mult + 1) : o->bucket_step;
    if (dop.step > o->resolution / 2) dop.step = dop.mult; /* small training sizes: fine buckets */
    dop.allow_upscale = o->allow_upscale;
    if (zl_dataset_scan(o->data, &dop, &r->ds)) { zl_model_parts_free(&r->mp); return -1; }
    if (zl_log_level > 0) zl_dataset_print_summary(&r->ds, stderr);
    /* caches */
    char *cache = o->cache ? zl_xstrdup(o->cache) : NULL;
    if (!cache) {
        char *te = zl_gen_default_cache(); /* .../te */
        cache = te ? zl_xasprintf("%s/..", te) : zl_xasprintf("%s/cache", o->out);
        free(te);
    }
    r->latent_dir = zl_xasprintf("%s/latents", cache);
    r->feat_dir = zl_xasprintf("%s/te", cache);
    free(cache);
    r->vae_id = zl_weights_identity(r->mp.vae, "vae", "vae");
    if (!r->vae_id) rc = -1;
    if (rc == 0) rc = zl_latent_cache_fill(&r->ds, r->mp.vae, r->latent_dir, o->flip, NULL);
    /* caption features (one encoder load, freed before the DiT) */
    if (rc == 0) {
        r->item_text = zl_xmalloc(sizeof(int) * (size_t)r->ds.n);
        for (int i = 0; i < r->ds.n; i++) r->item_text[i] = text_index(r, r->ds.items[i].caption);
        r->empty_text = text_index(r, "");
        r->neg_text = text_index(r, o->negative);
        if (!o->nprompts) { /* default validation prompts: the first caption, and the trigger in a new scene */
            o->prompts[o->nprompts++] = zl_xstrdup(r->ds.items[0].caption);
            if (o->trigger) o->prompts[o->nprompts++] = zl_xasprintf("%s, standing in a sunlit park", o->trigger);
        }
        r->prompt_text = zl_xmalloc(sizeof(int) * (size_t)o->nprompts);
        for (int i = 0; i < o->nprompts; i++) r->prompt_text[i] = text_index(r, o->prompts[i]);
        r->feats = zl_xcalloc((size_t)r->ntexts, sizeof(zl_feat));
        rc = zl_gen_features(&r->mp, r->feat_dir, (const char *const *)r->texts, r->ntexts, r->feats);
    }
    /* the transformer, the adapter, what trains */
    if (rc == 0) {
        double t0 = zl_now();
        zl_zimage_opts zo;
        zl_zimage_default_opts(&zo);
        if (o->full) zo.weight_dtype = ZL_F32; /* every weight trains in f32 */
        rc = zl_zimage_load(r->mp.dit, &zo, &r->m);
        if (rc == 0) zl_info("transformer: %s (dim %d, %d layers) in %.1f s", r->m->path, r->m->cfg.dim, r->m->cfg.n_layers, zl_now() - t0);
        if (rc == 0) zl_ops_auto_threads(r->m->cfg.dim);
        if (rc == 0 && r->m->cfg.patch * fac != dop.mult) rc = zl_err("the DiT's patch size %d does not match the bucket multiple", r->m->cfg.patch);
        if (rc == 0 && r->feats[0].hidden != r->m->cfg.cap_feat_dim)
            rc = zl_err("the text encoder gives %d-wide features but the DiT expects %d", r->feats[0].hidden, r->m->cfg.cap_feat_dim);
    }
    if (rc == 0 && o->distill_steps > 0) { /* the teacher: its own DiT (default: the model itself), frozen */
        zl_model_parts tp;
        rc = zl_model_parts_resolve(o->teacher ? o->teacher : o->model, NULL, NULL, NULL, NULL, &tp);
        if (rc == 0) rc = zl_zimage_load(tp.dit, NULL, &r->teacher);
        zl_model_parts_free(&tp);
        if (rc == 0 && o->teacher_lora) {
            char path[4096];
            float st;
            zl_lora *tl = NULL;
            snprintf(path, sizeof path, "%s", o->teacher_lora);
            char *c = strrchr(path, ':');
            st = 1.0f;
            if (c && c[1] && strspn(c + 1, "0123456789.-e") == strlen(c + 1)) { st = (float)atof(c + 1); *c = 0; }
            rc = zl_lora_load(path, &tl);
            if (rc == 0) rc = zl_zimage_apply_loras(r->teacher, &tl, &st, 1, 1, 0, report_line);
            zl_lora_free(tl);
        }
        if (rc == 0) zl_info("distillation: teacher %s, %d teacher steps per student step, guidance %g", o->teacher ? o->teacher : o->model,
                             o->teacher_substeps, (double)o->teacher_guidance);
    }
    if (rc == 0 && o->adapter) {
        rc = zl_lora_load(o->adapter, &r->adapter);
        float one = 1.0f;
        if (rc == 0) rc = zl_zimage_apply_loras(r->m, &r->adapter, &one, 1, 0, 0, report_line);
        if (rc == 0) zl_info("frozen LoRA %s: +1 during training, off for samples, never saved", o->adapter);
        if (rc == 0 && o->full) rc = zl_err("--full trains every weight: it cannot be combined with --adapter");
    }
    if (rc == 0 && o->full) {
        r->np = zl_zimage_full_params(r->m, &r->params);
        if (r->np < 0) rc = -1;
        else {
            size_t tot = 0;
            for (int i = 0; i < r->np; i++) tot += r->params[i].n;
            zl_info("full-parameter training: %d tensors, %.2fM parameters", r->np, (double)tot / 1e6);
        }
    } else if (rc == 0) {
        zl_lora_init_opts lo = {.rank = o->rank, .alpha = o->alpha, .targets = o->targets, .gaussian = o->gaussian_init, .seed = o->seed};
        rc = zl_lora_new_trainable(&r->m->cfg, &lo, &r->lora);
        if (rc == 0) rc = zl_lora_new_trainable(&r->m->cfg, &lo, &r->grad);
        if (rc == 0 && (o->targets & ZL_T_REFINERS))
            zl_warn("LoRA on the refiners: most loaders (ComfyUI, diffusers) ignore refiner keys");
        if (rc == 0) {
            r->np = 2 * r->lora->n;
            r->params = zl_xcalloc((size_t)r->np, sizeof(zl_param));
            for (int i = 0; i < r->lora->n; i++)
                for (int up = 0; up < 2; up++) {
                    zl_param *q = &r->params[2 * i + up];
                    snprintf(q->name, sizeof q->name, "%s.%s", r->lora->m[i].target, up ? "up" : "down");
                    q->p = r->lora->m[i].p[up ? ZL_P_UP : ZL_P_DOWN].data;
                    q->g = r->grad->m[i].p[up ? ZL_P_UP : ZL_P_DOWN].data;
                    q->n = part_n(&r->lora->m[i], up);
                }
        }
    }
    if (rc == 0) {
        r->mom1 = zl_xcalloc((size_t)r->np, sizeof(float *));
        r->mom2 = zl_xcalloc((size_t)r->np, sizeof(float *));
        for (int i = 0; i < r->np && rc == 0; i++) {
            r->mom1[i] = zl_try_calloc(r->params[i].n, sizeof(float));
            r->mom2[i] = zl_try_calloc(r->params[i].n, sizeof(float));
            if (!r->mom1[i] || !r->mom2[i]) rc = -1;
        }
        zl_adamw_default(&r->adam);
        r->adam.beta1 = o->beta1;
        r->adam.beta2 = o->beta2;
        r->adam.weight_decay = o->weight_decay;
        if (rc == 0 && resume) rc = load_checkpoint(r);
        float one = 1.0f;
        if (rc == 0 && r->lora) rc = zl_zimage_apply_loras(r->m, &r->lora, &one, 1, 0, 0, NULL);
        if (rc == 0 && r->lora && zl_zimage_lora_grads(r->m, r->lora, r->grad) != r->lora->n)
            rc = zl_err("train: not every LoRA module got a gradient buffer");
    }
    if (rc == 0 && o->sample_every > 0) {
        rc = zl_vae_load(r->mp.vae, NULL, &r->vae);
    }
    /* the loop */
    plan pl = {0};
    make_plan(&r->ds, o->repeats, o->batch, o->seed, 0, &pl); /* every epoch has this many chunks */
    int chunks_per_epoch = pl.nchunks, plan_epoch = 0;
    char *csv = zl_xasprintf("%s/loss.csv", o->out);
    if (rc == 0) {
        if (!resume || !zl_file_exists(csv)) {
            r->loss_csv = fopen(csv, "w");
            if (r->loss_csv) fprintf(r->loss_csv, "step,loss,lr,grad_norm,sigma_mean,seconds\n");
        } else r->loss_csv = fopen(csv, "a");
        if (!r->loss_csv) rc = zl_err("cannot write %s: %s", csv, strerror(errno));
    }
    struct sigaction sa, old_int, old_term;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigaction(SIGINT, &sa, &old_int);
    sigaction(SIGTERM, &sa, &old_term);
    g_stop = 0;
    if (rc == 0 && r->step == 0 && o->sample_every > 0) rc = sample_all(r, "step_000000");
    zl_lr_sched sched = {o->sched, o->lr, o->warmup, o->steps, o->min_lr};
    float *losses = zl_xcalloc((size_t)o->steps + 1, sizeof(float));
    zl_progress pr;
    zl_progress_start(&pr, "training", o->steps, "steps");
    double t_start = zl_now();
    int first_step = r->step;
    float *x0 = NULL, *xs = NULL, *tgt = NULL;
    size_t xcap = 0;
    int stopped = 0;
    while (rc == 0 && r->step < o->steps) {
        int s = r->step;
        for (int i = 0; i < r->np; i++) memset(r->params[i].g, 0, sizeof(float) * r->params[i].n);
        double lsum = 0, ssum = 0;
        int nsamp = 0;
        for (int k = 0; k < o->grad_accum && rc == 0; k++) {
            int64_t micro = (int64_t)s * o->grad_accum + k;
            int epoch = (int)(micro / chunks_per_epoch), pos = (int)(micro % chunks_per_epoch);
            if (epoch != plan_epoch) { free(pl.idx); make_plan(&r->ds, o->repeats, o->batch, o->seed, epoch, &pl); plan_epoch = epoch; }
            int real = 0;
            for (int b = 0; b < o->batch; b++) real += pl.idx[pos * o->batch + b] >= 0;
            for (int b = 0; b < o->batch && rc == 0; b++) {
                int ii = pl.idx[pos * o->batch + b];
                if (ii < 0) continue;
                const zl_item *it = &r->ds.items[ii];
                zl_rng rr = {zl_train_key(o->seed, micro, b, 3)};
                int flip = o->flip && (zl_rng_next(&rr) & 1);
                int drop = o->caption_dropout > 0 && zl_rng_uniform(&rr) < o->caption_dropout;
                float wgt;
                float sigma = zl_sigma_sample(&o->sigma, &rr, &wgt);
                const zl_feat *f = &r->feats[drop ? r->empty_text : r->item_text[ii]];
                float loss = 0;
                if (o->distill_steps > 0) {
                    rc = distill_sample(r, it, f, zl_train_key(o->seed, micro, b, 4), wgt / (float)(real * o->grad_accum), &loss);
                    sigma = 0.5f;
                } else {
                    int C, h, w;
                    float *lat = NULL;
                    int hit = zl_latent_cache_load(r->latent_dir, r->vae_id, it, flip, &lat, &C, &h, &w);
                    if (hit <= 0) { rc = hit < 0 ? -1 : zl_err("%s: its latent is missing from the cache %s", it->image, r->latent_dir); free(lat); break; }
                    size_t n = (size_t)C * h * w;
                    if (n > xcap) {
                        free(xs); free(tgt);
                        xs = zl_try_malloc(sizeof(float) * n); tgt = zl_try_malloc(sizeof(float) * n);
                        xcap = n;
                        if (!xs || !tgt) { rc = -1; free(lat); break; }
                    }
                    x0 = lat;
                    zl_torch_randn(zl_train_key(o->seed, micro, b, 4), xs, n); /* ε */
                    for (size_t q = 0; q < n; q++) {
                        float e = xs[q];
                        tgt[q] = x0[q] - e;                              /* target = x0 − ε */
                        xs[q] = (1.0f - sigma) * x0[q] + sigma * e;      /* x_σ */
                    }
                    free(lat);
                    lora_dropout(r, 1, zl_train_key(o->seed, micro, b, 5));
                    rc = zl_zimage_forward_backward(r->m, xs, h, w, 1.0f - sigma, f->cap, f->L, tgt,
                                                    wgt / (float)(real * o->grad_accum), &loss, NULL);
                }
                if (rc == 0 && !isfinite(loss)) rc = zl_err("the loss is %g at step %d (%s): stopping; the last checkpoint is intact", (double)loss, s + 1, it->image);
                lsum += loss;
                ssum += sigma;
                nsamp++;
            }
        }
        lora_dropout(r, 0, 0);
        if (rc) break;
        /* clip, AdamW */
        float **gp = zl_xmalloc(sizeof(float *) * (size_t)r->np);
        size_t *gn = zl_xmalloc(sizeof(size_t) * (size_t)r->np);
        for (int i = 0; i < r->np; i++) { gp[i] = r->params[i].g; gn[i] = r->params[i].n; }
        double gnorm = zl_clip_grad_norm(gp, gn, r->np, o->max_grad_norm);
        float lr = zl_lr_at(&sched, s);
        zl_adamw_begin(&r->adam);
        for (int i = 0; i < r->np; i++) zl_adamw_update(&r->adam, lr, r->params[i].p, gp[i], r->mom1[i], r->mom2[i], gn[i]);
        free(gp);
        free(gn);
        r->step = s + 1;
        float l = (float)(lsum / (nsamp ? nsamp : 1));
        losses[s] = l;
        fprintf(r->loss_csv, "%d,%.6g,%.6g,%.6g,%.4f,%.2f\n", r->step, (double)l, (double)lr, gnorm, ssum / (nsamp ? nsamp : 1), zl_now() - t_start);
        fflush(r->loss_csv);
        zl_progress_update(&pr, r->step);
        if (pr.tty) fprintf(stderr, " loss %.4f ", (double)l);
        else if (zl_log_level > 0 && (r->step % 10 == 0 || r->step == o->steps))
            fprintf(stderr, "step %d/%d  loss %.4f  lr %.3g  %.2f s/step\n", r->step, o->steps, (double)l, (double)lr,
                    (zl_now() - t_start) / (r->step - first_step));
        int last = r->step == o->steps;
        if (o->save_every > 0 && (r->step % o->save_every == 0) && !last) rc = save_checkpoint(r);
        if (rc == 0 && o->sample_every > 0 && (r->step % o->sample_every == 0 || last)) {
            char tag[32];
            snprintf(tag, sizeof tag, "step_%06d", r->step);
            rc = sample_all(r, tag);
        }
        if (rc == 0 && g_stop) {
            zl_info("\n%s: saving a checkpoint at step %d", g_stop == SIGINT ? "interrupted" : "terminated", r->step);
            rc = save_checkpoint(r);
            stopped = 1;
            break;
        }
    }
    if (rc == 0 && !stopped) zl_progress_end(&pr, r->step);
    sigaction(SIGINT, &old_int, NULL);
    sigaction(SIGTERM, &old_term, NULL);
    free(xs);
    free(tgt);
    free(pl.idx);
    if (r->loss_csv) fclose(r->loss_csv);
    /* loss.png from the whole loss.csv (a resumed run included) */
    char *all = slurp(csv);
    if (all) {
        int n = 0, cap = 1024;
        float *v = zl_xmalloc(sizeof(float) * (size_t)cap);
        for (char *line = strchr(all, '\n'); line && line[1]; line = strchr(line + 1, '\n')) {
            int st;
            float lv;
            if (sscanf(line + 1, "%d,%f", &st, &lv) == 2) {
                if (n == cap) v = zl_xrealloc(v, sizeof(float) * (size_t)(cap *= 2));
                v[n++] = lv;
            }
        }
        plot_loss(o->out, v, n);
        free(v);
        free(all);
    }
    free(csv);
    free(losses);
    if (rc == 0 && !stopped) {
        rc = save_final(r);
        if (rc == 0) rc = save_checkpoint(r); /* the final state too, so --resume --steps N can continue */
    }
    if (rc == 0) {
        struct rusage ru;
        getrusage(RUSAGE_SELF, &ru);
        zl_info("%s at step %d in %.1f s, peak memory %.0f MB", stopped ? "stopped" : "done", r->step, zl_now() - t_start, (double)ru.ru_maxrss / 1024.0);
        if (stopped) zl_info("resume with: zlora train --resume %s", o->out);
    }
    /* cleanup */
    for (int i = 0; i < r->np; i++) { if (r->mom1) free(r->mom1[i]); if (r->mom2) free(r->mom2[i]); }
    free(r->params);
    zl_zimage_free(r->teacher);
    free(r->mom1);
    free(r->mom2);
    zl_zimage_free(r->m);
    zl_lora_free(r->lora);
    zl_lora_free(r->grad);
    zl_lora_free(r->adapter);
    zl_vae_free(r->vae);
    for (int i = 0; i < r->ntexts; i++) { free(r->texts[i]); if (r->feats) zl_feat_free(&r->feats[i]); }
    free(r->texts);
    free(r->feats);
    free(r->item_text);
    free(r->prompt_text);
    free(r->latent_dir);
    free(r->feat_dir);
    free(r->vae_id);
    zl_dataset_free(&r->ds);
    zl_model_parts_free(&r->mp);
    if (rc) return -1;
    return stopped ? 130 : 0;
}
