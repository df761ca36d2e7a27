/* compare.c — see compare.h: inputs (prompts, seeds, thresholds), the built-in experiments and --config
 * files, and the run (features once, one DiT per model, runtime LoRA stacks, cells, scores). The outputs
 * (grids, metrics, report, table) are in compare_out.c. */
#include "eval/compare.h"
#include <cjson/cJSON.h>
#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include "base/base.h"
#include "base/progress.h"
#include "eval/score.h"
#include "io/image.h"
#include "lora/lora.h"
#include "model/te_cache.h"
#include "nn/ops.h"

#define MAX_PROMPTS 1000
#define MAX_SEEDS 1000
#define MAX_CONFIGS 256

/* ---- inputs ---------------------------------------------------------------------------------------- */

void zl_cmp_default_thresholds(zl_cmp_thresholds *t) {
    t->blurry = 0.7;
    t->not_learning = 0.02;
    t->bleeding = 0.5;
    t->retention = 0.5;
}

int zl_cmp_parse_thresholds(const char *s, zl_cmp_thresholds *t) {
    const char *p = s;
    while (*p) {
        const char *eq = strchr(p, '='), *comma = strchr(p, ',');
        if (!eq || (comma && comma < eq))
            return zl_err("--thresholds %s: expected NAME=VALUE[,NAME=VALUE...] with NAME blurry_at_8, not_learning, bleeding or low_retention", s);
        char name[32];
        snprintf(name, sizeof name, "%.*s", (int)(eq - p) < 31 ? (int)(eq - p) : 31, p);
        char *end;
        errno = 0;
        double v = strtod(eq + 1, &end);
        if (end == eq + 1 || errno || !isfinite(v) || v < 0 || (*end && *end != ','))
            return zl_err("--thresholds %s: the value of %s is not a non-negative number", s, name);
        if (!strcmp(name, "blurry_at_8")) t->blurry = v;
        else if (!strcmp(name, "not_learning")) t->not_learning = v;
        else if (!strcmp(name, "bleeding")) t->bleeding = v;
        else if (!strcmp(name, "low_retention")) t->retention = v;
        else return zl_err("--thresholds: unknown flag '%s' (blurry_at_8, not_learning, bleeding, low_retention)", name);
        p = *end ? end + 1 : end;
    }
    return 0;
}

int zl_cmp_read_prompts(const char *path, char ***out, int *n) {
    *out = NULL;
    *n = 0;
    FILE *f = fopen(path, "rb");
    if (!f) return zl_err("--prompts %s: %s", path, strerror(errno));
    char *line = NULL;
    size_t cap = 0;
    ssize_t len;
    int lineno = 0, rc = 0;
    char **ps = NULL;
    int np = 0;
    while (rc == 0 && (len = getline(&line, &cap, f)) >= 0) {
        lineno++;
        if (!zl_utf8_valid(line, (size_t)len) || memchr(line, 0, (size_t)len)) { rc = zl_err("%s:%d: not valid UTF-8 text", path, lineno); break; }
        char *b = line, *e = line + len;
        if (lineno == 1 && len >= 3 && !memcmp(b, "\xef\xbb\xbf", 3)) b += 3; /* a BOM */
        while (b < e && isspace((unsigned char)*b)) b++;
        while (e > b && isspace((unsigned char)e[-1])) e--;
        if (b == e || *b == '#') continue;
        if (np == MAX_PROMPTS) { rc = zl_err("%s: more than %d prompts", path, MAX_PROMPTS); break; }
        ps = zl_xrealloc(ps, sizeof(char *) * (size_t)(np + 1));
        ps[np++] = zl_xasprintf("%.*s", (int)(e - b), b);
    }
    free(line);
    fclose(f);
    if (rc == 0 && np == 0) rc = zl_err("--prompts %s: no prompts (one per line; blank lines and lines starting with # are ignored)", path);
    if (rc) {
        for (int i = 0; i < np; i++) free(ps[i]);
        free(ps);
        return -1;
    }
    *out = ps;
    *n = np;
    return 0;
}

static int parse_u64(const char *b, const char *e, uint64_t *v) {
    if (b == e || e - b > 20) return -1;
    uint64_t x = 0;
    for (const char *p = b; p < e; p++) {
        if (*p < '0' || *p > '9') return -1;
        unsigned d = (unsigned)(*p - '0');
        if (x > (UINT64_MAX - d) / 10) return -1;
        x = x * 10 + d;
    }
    *v = x;
    return 0;
}

int zl_cmp_parse_seeds(const char *s, uint64_t **out, int *n) {
    *out = NULL;
    *n = 0;
    uint64_t *v = NULL;
    int nv = 0;
    const char *p = s;
    for (;;) {
        const char *e = strchr(p, ',');
        if (!e) e = p + strlen(p);
        const char *b = p, *q = e;
        while (b < q && *b == ' ') b++;
        while (q > b && q[-1] == ' ') q--;
        const char *dash = memchr(b, '-', (size_t)(q - b));
        uint64_t lo, hi;
        if (dash ? parse_u64(b, dash, &lo) || parse_u64(dash + 1, q, &hi) || hi < lo : parse_u64(b, q, &lo)) {
            free(v);
            return zl_err("--seeds %s: '%.*s' is not a seed (a non-negative integer) or a range A-B", s, (int)(e - p), p);
        }
        if (!dash) hi = lo;
        if (hi - lo >= MAX_SEEDS || nv + (int)(hi - lo) + 1 > MAX_SEEDS) { free(v); return zl_err("--seeds %s: more than %d seeds", s, MAX_SEEDS); }
        for (uint64_t x = lo;; x++) {
            for (int i = 0; i < nv; i++)
                if (v[i] == x) { free(v); return zl_err("--seeds %s: seed %llu is listed twice", s, (unsigned long long)x); }
            v = zl_xrealloc(v, sizeof(uint64_t) * (size_t)(nv + 1));
            v[nv++] = x;
            if (x == hi) break;
        }
        if (!*e) break;
        p = e + 1;
    }
    *out = v;
    *n = nv;
    return 0;
}

/* ---- building the matrix --------------------------------------------------------------------------- */

void zl_cmp_default_plan(zl_cmp_plan *p) {
    memset(p, 0, sizeof *p);
    p->experiment = "turbo-check";
    p->steps = 8;
    p->slow_steps = 30;
    p->base_steps = 30;
    p->slow_cfg = 2.0;
    p->base_cfg = 4.0;
    p->negative = "";
    p->sampler = ZL_SAMPLER_EULER;
    p->noise = ZL_NOISE_TORCH;
}

void zl_cmp_spec_free(zl_cmp_spec *s) {
    for (int i = 0; i < s->ncfg; i++) {
        zl_cmp_config *c = &s->cfg[i];
        free(c->name);
        for (int k = 0; k < c->nlora; k++) free(c->loras[k].path);
        free(c->loras);
        free(c->negative);
        free(c->baseline);
        free(c->sharpness_vs);
        free(c->retention_vs);
    }
    free(s->cfg);
    for (int i = 0; i < s->nmodel; i++) free(s->models[i]);
    free(s->models);
    for (int i = 0; i < s->nprompt; i++) free(s->prompts[i]);
    free(s->prompts);
    free(s->seeds);
    free(s->experiment);
    free(s->trigger);
    free(s->cache_dir);
    memset(s, 0, sizeof *s);
}

/* The index of model folder `path`, added when new; folders are the same when their real paths are. */
static int add_model(zl_cmp_spec *s, const char *path, const char *flag) {
    char real[PATH_MAX];
    if (!zl_is_dir(path) || !realpath(path, real)) return zl_err("%s %s: not a model folder", flag, path);
    for (int i = 0; i < s->nmodel; i++) {
        char other[PATH_MAX];
        if (realpath(s->models[i], other) && !strcmp(other, real)) return i;
    }
    s->models = zl_xrealloc(s->models, sizeof(char *) * (size_t)(s->nmodel + 1));
    s->models[s->nmodel] = zl_xstrdup(path);
    return s->nmodel++;
}

static zl_cmp_config *add_cfg(zl_cmp_spec *s, const char *name, int model, const zl_cmp_plan *p) {
    s->cfg = zl_xrealloc(s->cfg, sizeof(zl_cmp_config) * (size_t)(s->ncfg + 1));
    zl_cmp_config *c = &s->cfg[s->ncfg++];
    memset(c, 0, sizeof *c);
    c->name = zl_xstrdup(name);
    c->model = model;
    zl_gen_default_params(&c->p);
    c->p.steps = p->steps;
    c->p.sampler = p->sampler;
    c->p.noise = p->noise;
    c->negative = zl_xstrdup(p->negative ? p->negative : "");
    return c;
}

static void cfg_lora(zl_cmp_config *c, const char *path, float strength) {
    c->loras = zl_xrealloc(c->loras, sizeof(zl_cmp_lora) * (size_t)(c->nlora + 1));
    c->loras[c->nlora].path = zl_xstrdup(path);
    c->loras[c->nlora++].strength = strength;
}

static void cfg_stack(zl_cmp_config *c, const zl_cmp_plan *p, double scale, int with_patch) {
    for (int i = 0; i < p->nlora; i++) cfg_lora(c, p->loras[i].path, (float)(p->loras[i].strength * scale));
    if (with_patch && p->patch) cfg_lora(c, p->patch->path, p->patch->strength);
}

static void set_cfg_scale(zl_cmp_config *c, double standard) { c->p.guidance = (float)(standard - 1.0); }

/* "path[:strength]": the strength is what follows the last ':' when it is a number. */
static void split_strength(const char *arg, char **path, float *s) {
    const char *c = strrchr(arg, ':');
    *s = 1.0f;
    if (c && c[1]) {
        char *end;
        double v = strtod(c + 1, &end);
        if (*end == 0) {
            *s = (float)v;
            *path = zl_xasprintf("%.*s", (int)(c - arg), arg);
            return;
        }
    }
    *path = zl_xstrdup(arg);
}

static const char *fmt_g(char *b, size_t n, double v) {
    snprintf(b, n, "%g", v);
    return b;
}

static int build_experiment(const zl_cmp_plan *p, zl_cmp_spec *s) {
    const char *ex = p->experiment ? p->experiment : "turbo-check";
    int turbo = add_model(s, p->model, "--model");
    if (turbo < 0) return -1;
    char name[512], a[32], b[32];
    if (!strcmp(ex, "turbo-check")) {
        if (p->nlora < 1) return zl_err("--experiment turbo-check needs a LoRA (--lora FILE)");
        add_cfg(s, "no LoRA", turbo, p);
        snprintf(name, sizeof name, "LoRA, %d steps", p->steps);
        zl_cmp_config *fast = add_cfg(s, name, turbo, p);
        cfg_stack(fast, p, 1.0, 0);
        char slow_name[512];
        snprintf(slow_name, sizeof slow_name, "LoRA, %d steps CFG %s", p->slow_steps, fmt_g(a, sizeof a, p->slow_cfg));
        zl_cmp_config *slow = add_cfg(s, slow_name, turbo, p);
        cfg_stack(slow, p, 1.0, 0);
        slow->p.steps = p->slow_steps;
        set_cfg_scale(slow, p->slow_cfg);
        slow->baseline = zl_xstrdup(""); /* the baseline is at the fast settings: a difference would mix in the steps */
        s->cfg[1].sharpness_vs = zl_xstrdup(slow_name);
        if (p->patch) {
            snprintf(name, sizeof name, "LoRA + patch, %d steps", p->steps);
            zl_cmp_config *pc = add_cfg(s, name, turbo, p);
            cfg_stack(pc, p, 1.0, 1);
            pc->sharpness_vs = zl_xstrdup(slow_name);
        }
    } else if (!strcmp(ex, "base-vs-turbo")) {
        if (!p->base_model) return zl_err("--experiment base-vs-turbo needs the Base model too (--base-model DIR)");
        if (p->nlora < 1) return zl_err("--experiment base-vs-turbo needs a LoRA (--lora FILE)");
        int base = add_model(s, p->base_model, "--base-model");
        if (base < 0) return -1;
        snprintf(name, sizeof name, "Base, no LoRA (%d steps CFG %s)", p->base_steps, fmt_g(a, sizeof a, p->base_cfg));
        zl_cmp_config *c = add_cfg(s, name, base, p);
        c->p.steps = p->base_steps;
        set_cfg_scale(c, p->base_cfg);
        char base_lora[512];
        snprintf(base_lora, sizeof base_lora, "Base + LoRA (%d steps CFG %s)", p->base_steps, fmt_g(b, sizeof b, p->base_cfg));
        c = add_cfg(s, base_lora, base, p);
        c->p.steps = p->base_steps;
        set_cfg_scale(c, p->base_cfg);
        cfg_stack(c, p, 1.0, 0);
        snprintf(name, sizeof name, "Turbo, no LoRA (%d steps)", p->steps);
        add_cfg(s, name, turbo, p);
        snprintf(name, sizeof name, "Turbo + LoRA (%d steps)", p->steps);
        c = add_cfg(s, name, turbo, p);
        cfg_stack(c, p, 1.0, 0);
        c->retention_vs = zl_xstrdup(base_lora);
        if (p->patch) {
            snprintf(name, sizeof name, "Turbo + LoRA + patch (%d steps)", p->steps);
            c = add_cfg(s, name, turbo, p);
            cfg_stack(c, p, 1.0, 1);
            c->retention_vs = zl_xstrdup(base_lora);
        }
    } else if (!strcmp(ex, "routes")) {
        if (p->nlora < 1) return zl_err("--experiment routes needs the LoRAs to compare (--lora FILE, repeated)");
        add_cfg(s, "no LoRA", turbo, p);
        for (int i = 0; i < p->nlora; i++) {
            char dn[256];
            zl_gen_display_name(p->loras[i].path, dn, sizeof dn);
            int clash = 0;
            for (int k = 0; k < p->nlora; k++) {
                char o[256];
                if (k != i && !strcmp(zl_gen_display_name(p->loras[k].path, o, sizeof o), dn)) clash = 1;
            }
            snprintf(name, sizeof name, "%s%s%s%s", clash ? p->loras[i].path : dn, p->loras[i].strength != 1.0f ? ":" : "",
                     p->loras[i].strength != 1.0f ? fmt_g(a, sizeof a, p->loras[i].strength) : "", p->patch ? " + patch" : "");
            for (int k = 0; k < s->ncfg; k++)
                if (!strcmp(s->cfg[k].name, name)) return zl_err("--experiment routes: '%s' is given twice", p->loras[i].path);
            zl_cmp_config *c = add_cfg(s, name, turbo, p);
            cfg_lora(c, p->loras[i].path, p->loras[i].strength);
            if (p->patch) cfg_lora(c, p->patch->path, p->patch->strength);
        }
    } else if (!strcmp(ex, "strength")) {
        if (p->nlora < 1) return zl_err("--experiment strength needs a LoRA (--lora FILE)");
        static const double def[5] = {0, 0.25, 0.5, 0.75, 1};
        const double *st = p->nstrength ? p->strengths : def;
        int ns = p->nstrength ? p->nstrength : 5;
        add_cfg(s, "no LoRA", turbo, p);
        for (int i = 0; i < ns; i++) {
            snprintf(name, sizeof name, "strength %s", fmt_g(a, sizeof a, st[i]));
            for (int k = 0; k < s->ncfg; k++)
                if (!strcmp(s->cfg[k].name, name)) return zl_err("--strengths: %g is listed twice", st[i]);
            cfg_stack(add_cfg(s, name, turbo, p), p, st[i], 1);
        }
    } else {
        return zl_err("--experiment %s: unknown (turbo-check, base-vs-turbo, routes, strength; or --config FILE)", ex);
    }
    s->experiment = zl_xstrdup(ex);
    return 0;
}

/* ---- --config FILE: a JSON list of configurations ------------------------------------------------- */

static int json_num(const cJSON *v, const char *where, const char *key, double lo, double hi, double *out) {
    if (!cJSON_IsNumber(v) || !(v->valuedouble >= lo && v->valuedouble <= hi))
        return zl_err("%s: \"%s\" must be a number in [%g, %g]", where, key, lo, hi);
    *out = v->valuedouble;
    return 0;
}

static int json_name_ref(const cJSON *v, const char *where, const char *key, char **out, int null_is_none) {
    if (cJSON_IsNull(v) && null_is_none) { *out = zl_xstrdup(""); return 0; }
    if (!cJSON_IsString(v)) return zl_err("%s: \"%s\" must be the name of a configuration%s", where, key, null_is_none ? " or null" : "");
    *out = zl_xstrdup(v->valuestring);
    return 0;
}

static int json_lora(const cJSON *it, const zl_cmp_plan *p, zl_cmp_config *c, const char *where) {
    if (cJSON_IsString(it)) {
        const char *v = it->valuestring;
        if (!strncmp(v, "@lora", 5) || !strncmp(v, "@patch", 6)) {
            int patch = v[1] == 'p';
            const char *rest = v + (patch ? 6 : 5);
            double mult = 1.0;
            if (*rest == ':') {
                char *end;
                mult = strtod(rest + 1, &end);
                if (end == rest + 1 || *end || !isfinite(mult)) return zl_err("%s: \"%s\": expected %s or %s:MULTIPLIER", where, v, patch ? "@patch" : "@lora", patch ? "@patch" : "@lora");
            } else if (*rest) {
                return zl_err("%s: \"%s\": expected @lora, @patch, or a LoRA file", where, v);
            }
            if (patch && !p->patch) return zl_err("%s: \"%s\" refers to --patch, which was not given", where, v);
            if (!patch && p->nlora == 0) return zl_err("%s: \"%s\" refers to --lora, which was not given", where, v);
            if (patch) cfg_lora(c, p->patch->path, (float)(p->patch->strength * mult));
            else for (int i = 0; i < p->nlora; i++) cfg_lora(c, p->loras[i].path, (float)(p->loras[i].strength * mult));
            return 0;
        }
        char *path;
        float s;
        split_strength(v, &path, &s);
        cfg_lora(c, path, s);
        free(path);
        return 0;
    }
    if (cJSON_IsObject(it)) {
        const cJSON *pa = cJSON_GetObjectItemCaseSensitive(it, "path"), *st = cJSON_GetObjectItemCaseSensitive(it, "strength");
        if (!cJSON_IsString(pa)) return zl_err("%s: a LoRA object needs \"path\"", where);
        double s = 1.0;
        if (st && json_num(st, where, "strength", -100, 100, &s)) return -1;
        cfg_lora(c, pa->valuestring, (float)s);
        return 0;
    }
    return zl_err("%s: a LoRA is \"FILE[:STRENGTH]\", \"@lora\", \"@patch\" or {\"path\": FILE, \"strength\": S}", where);
}

static int build_config_file(const zl_cmp_plan *p, zl_cmp_spec *s) {
    FILE *f = fopen(p->config_file, "rb");
    if (!f) return zl_err("--config %s: %s", p->config_file, strerror(errno));
    char *text = zl_try_malloc((1u << 22) + 1);
    size_t n = text ? fread(text, 1, 1u << 22, f) : 0;
    int too_big = text && n == (1u << 22) && fgetc(f) != EOF;
    fclose(f);
    if (!text) return -1;
    text[n] = 0;
    cJSON *j = too_big ? NULL : cJSON_Parse(text);
    free(text);
    if (too_big) return zl_err("--config %s: larger than 4 MB", p->config_file);
    if (!j) return zl_err("--config %s: not valid JSON", p->config_file);
    int rc = 0;
    if (!cJSON_IsArray(j) || cJSON_GetArraySize(j) < 1)
        rc = zl_err("--config %s: expected a JSON list of configurations ([{\"name\": ..., ...}, ...])", p->config_file);
    int main_model = -1, base_model = -1;
    if (rc == 0 && p->model && (main_model = add_model(s, p->model, "--model")) < 0) rc = -1;
    if (rc == 0 && p->base_model && (base_model = add_model(s, p->base_model, "--base-model")) < 0) rc = -1;
    int idx = 0;
    const cJSON *e;
    cJSON_ArrayForEach(e, j) {
        if (rc) break;
        idx++;
        char where[600];
        snprintf(where, sizeof where, "--config %s: configuration %d", p->config_file, idx);
        if (!cJSON_IsObject(e)) { rc = zl_err("%s is not an object", where); break; }
        const cJSON *nm = cJSON_GetObjectItemCaseSensitive(e, "name");
        if (!cJSON_IsString(nm) || !nm->valuestring[0] || !zl_utf8_valid(nm->valuestring, strlen(nm->valuestring))) {
            rc = zl_err("%s needs a \"name\" (a non-empty string)", where);
            break;
        }
        snprintf(where, sizeof where, "--config %s: \"%s\"", p->config_file, nm->valuestring);
        for (int k = 0; k < s->ncfg; k++)
            if (!strcmp(s->cfg[k].name, nm->valuestring)) rc = zl_err("%s: the name is used twice", where);
        if (rc) break;
        /* the model first: it decides nothing else, but an unknown model is the likeliest mistake */
        const cJSON *mo = cJSON_GetObjectItemCaseSensitive(e, "model");
        int model = main_model;
        if (mo) {
            if (!cJSON_IsString(mo)) { rc = zl_err("%s: \"model\" is \"model\", \"base\" or a model folder", where); break; }
            if (!strcmp(mo->valuestring, "model")) model = main_model;
            else if (!strcmp(mo->valuestring, "base")) {
                if (base_model < 0) { rc = zl_err("%s uses the Base model: give --base-model DIR", where); break; }
                model = base_model;
            } else if ((model = add_model(s, mo->valuestring, where)) < 0) { rc = -1; break; }
        }
        if (model < 0) { rc = zl_err("%s: no model (give --model DIR, or \"model\" in the configuration)", where); break; }
        zl_cmp_plan q = *p;
        const cJSON *pr = cJSON_GetObjectItemCaseSensitive(e, "preset");
        int base = 0;
        if (pr) {
            if (!cJSON_IsString(pr) || (strcmp(pr->valuestring, "turbo") && strcmp(pr->valuestring, "base"))) {
                rc = zl_err("%s: \"preset\" must be \"turbo\" or \"base\"", where);
                break;
            }
            base = !strcmp(pr->valuestring, "base");
        }
        if (base) q.steps = p->base_steps;
        zl_cmp_config *c = add_cfg(s, nm->valuestring, model, &q);
        if (base) set_cfg_scale(c, p->base_cfg);
        const cJSON *it;
        cJSON_ArrayForEach(it, e) {
            const char *k = it->string;
            double v = 0;
            if (!strcmp(k, "name") || !strcmp(k, "model") || !strcmp(k, "preset")) continue;
            else if (!strcmp(k, "steps")) { if ((rc = json_num(it, where, k, 1, 10000, &v)) == 0) c->p.steps = (int)v; }
            else if (!strcmp(k, "cfg")) { if ((rc = json_num(it, where, k, -100, 100, &v)) == 0) set_cfg_scale(c, v); }
            else if (!strcmp(k, "guidance")) { if ((rc = json_num(it, where, k, -100, 100, &v)) == 0) c->p.guidance = (float)v; }
            else if (!strcmp(k, "cfg_norm")) { if ((rc = json_num(it, where, k, 0, 100, &v)) == 0) c->p.cfg_norm = (float)v; }
            else if (!strcmp(k, "cfg_trunc")) { if ((rc = json_num(it, where, k, 0, 100, &v)) == 0) c->p.cfg_trunc = (float)v; }
            else if (!strcmp(k, "shift")) { if ((rc = json_num(it, where, k, 1e-3, 1e3, &v)) == 0) { c->p.shift = v; c->shift_set = 1; } }
            else if (!strcmp(k, "sampler")) {
                if (!cJSON_IsString(it)) rc = zl_err("%s: \"sampler\" must be a string", where);
                else if (zl_sampler_parse(it->valuestring, &c->p.sampler)) rc = zl_err_prefix("%s", where);
            } else if (!strcmp(k, "noise")) {
                if (cJSON_IsString(it) && !strcmp(it->valuestring, "torch")) c->p.noise = ZL_NOISE_TORCH;
                else if (cJSON_IsString(it) && !strcmp(it->valuestring, "torch-scalar")) c->p.noise = ZL_NOISE_TORCH_SCALAR;
                else rc = zl_err("%s: \"noise\" must be \"torch\" or \"torch-scalar\"", where);
            } else if (!strcmp(k, "negative")) {
                if (!cJSON_IsString(it)) rc = zl_err("%s: \"negative\" must be a string", where);
                else { free(c->negative); c->negative = zl_xstrdup(it->valuestring); }
            } else if (!strcmp(k, "loras")) {
                if (!cJSON_IsArray(it)) rc = zl_err("%s: \"loras\" must be a list", where);
                const cJSON *l;
                cJSON_ArrayForEach(l, it) if (rc == 0) rc = json_lora(l, p, c, where);
            } else if (!strcmp(k, "baseline")) rc = json_name_ref(it, where, k, &c->baseline, 1);
            else if (!strcmp(k, "sharpness_vs")) rc = json_name_ref(it, where, k, &c->sharpness_vs, 0);
            else if (!strcmp(k, "retention_vs")) rc = json_name_ref(it, where, k, &c->retention_vs, 0);
            else rc = zl_err("%s: unknown key \"%s\" (name, model, preset, loras, steps, cfg, guidance, negative, shift, sampler, "
                             "cfg_norm, cfg_trunc, noise, baseline, sharpness_vs, retention_vs)", where, k);
            if (rc) break;
        }
        if (s->ncfg > MAX_CONFIGS) rc = zl_err("--config %s: more than %d configurations", p->config_file, MAX_CONFIGS);
    }
    cJSON_Delete(j);
    if (rc == 0) {
        char *slash = strrchr(p->config_file, '/');
        s->experiment = zl_xstrdup(slash ? slash + 1 : p->config_file);
    }
    return rc;
}

int zl_cmp_build(const zl_cmp_plan *p, zl_cmp_spec *s) {
    if (!p->model && !p->config_file) return zl_err("compare: give the model (--model DIR)");
    return p->config_file ? build_config_file(p, s) : build_experiment(p, s);
}

/* ---- the run -------------------------------------------------------------------------------------- */

static int find_cfg(const zl_cmp_spec *s, const char *name, const char *who, const char *key, int *out) {
    for (int i = 0; i < s->ncfg; i++)
        if (!strcmp(s->cfg[i].name, name)) { *out = i; return 0; }
    return zl_err("configuration \"%s\": %s \"%s\" is not a configuration", who, key, name);
}

static int same_sampling(const zl_cmp_config *a, const zl_cmp_config *b) {
    return a->p.steps == b->p.steps && a->p.guidance == b->p.guidance && a->p.sampler == b->p.sampler && a->p.cfg_norm == b->p.cfg_norm &&
           a->p.cfg_trunc == b->p.cfg_trunc && a->shift_set == b->shift_set && (!a->shift_set || a->p.shift == b->p.shift) &&
           a->p.noise == b->p.noise && (a->p.guidance == 0.0f || !strcmp(a->negative, b->negative));
}

/* Baselines, sharpness and retention partners as indices. Automatic baseline of a configuration with
 * LoRAs: the no-LoRA configuration of the same model with the same sampling settings, else the first
 * no-LoRA configuration of the same model, else none. */
static int resolve(const zl_cmp_spec *s, zl_cmp_result *r) {
    for (int i = 0; i < s->ncfg; i++) {
        const zl_cmp_config *c = &s->cfg[i];
        zl_cmp_summary *u = &r->sum[i];
        u->baseline = u->sharp_vs = u->retention_vs = -1;
        if (c->baseline && *c->baseline) {
            if (find_cfg(s, c->baseline, c->name, "baseline", &u->baseline)) return -1;
            if (u->baseline == i) u->baseline = -1;
        } else if (!c->baseline && c->nlora > 0) {
            for (int k = 0; k < s->ncfg && u->baseline < 0; k++)
                if (s->cfg[k].nlora == 0 && s->cfg[k].model == c->model && same_sampling(&s->cfg[k], c)) u->baseline = k;
            for (int k = 0; k < s->ncfg && u->baseline < 0; k++)
                if (s->cfg[k].nlora == 0 && s->cfg[k].model == c->model) u->baseline = k;
        }
        if (c->sharpness_vs && find_cfg(s, c->sharpness_vs, c->name, "sharpness_vs", &u->sharp_vs)) return -1;
        if (c->retention_vs && find_cfg(s, c->retention_vs, c->name, "retention_vs", &u->retention_vs)) return -1;
    }
    return 0;
}

static int mkdir_p(const char *path) {
    char buf[PATH_MAX];
    if (snprintf(buf, sizeof buf, "%s", path) >= (int)sizeof buf) return zl_err("%s: path too long", path);
    for (char *p = buf + 1;; p++) {
        if (*p == '/' || !*p) {
            char c = *p;
            *p = 0;
            if (mkdir(buf, 0777) && errno != EEXIST) return zl_err("%s: cannot create the folder: %s", buf, strerror(errno));
            *p = c;
            if (!c) break;
        }
    }
    if (!zl_is_dir(path)) return zl_err("%s: exists and is not a folder", path);
    return 0;
}

/* A file-name fragment from a configuration's name: lowercase letters, digits and '-' (at most 40). */
static void slug(const char *name, char *out, size_t n) {
    size_t k = 0;
    int dash = 0;
    for (const char *p = name; *p && k + 1 < n && k < 40; p++) {
        unsigned char ch = (unsigned char)*p;
        if (isalnum(ch) && ch < 128) {
            if (dash && k) out[k++] = '-';
            dash = 0;
            if (k + 1 < n) out[k++] = (char)tolower(ch);
        } else {
            dash = 1;
        }
    }
    out[k] = 0;
}

/* The trigger word: --trigger, else the first LoRA metadata entry that names one. */
static const char *const trigger_keys[] = {"modelspec.trigger_phrase", "trigger_phrase", "trigger_word", "zlora.trigger", "ss_trigger_word"};

static int contains_ci(const char *hay, const char *needle) {
    size_t n = strlen(needle);
    if (!n) return 0;
    for (const char *p = hay; *p; p++)
        if (!strncasecmp(p, needle, n)) return 1;
    return 0;
}

/* 1 when the prompt holds the trigger (or, for a comma-separated trigger phrase, any of its parts). */
static int has_trigger(const char *prompt, const char *trigger) {
    char *t = zl_xstrdup(trigger), *save = NULL;
    int hit = 0;
    for (char *tok = strtok_r(t, ",", &save); tok && !hit; tok = strtok_r(NULL, ",", &save)) {
        while (*tok == ' ') tok++;
        size_t n = strlen(tok);
        while (n && tok[n - 1] == ' ') tok[--n] = 0;
        hit = contains_ci(prompt, tok);
    }
    free(t);
    return hit;
}

static char *replace_tag(const char *prompt, const char *trigger) {
    zl_buf b = {0};
    for (const char *p = prompt; *p;) {
        if (!strncmp(p, "[trigger]", 9)) { zl_buf_puts(&b, trigger); p += 9; }
        else { zl_buf_printf(&b, "%c", *p); p++; }
    }
    return b.s ? b.s : zl_xstrdup("");
}

typedef struct {
    zl_progress pr;
    int done;       /* cells finished */
} run_progress;

static void on_step(void *ud, int i, int n) {
    run_progress *rp = ud;
    zl_progress_update(&rp->pr, rp->done + (double)i / n);
}

static void print_line(const char *s) { zl_info("%s", s); }

void zl_cmp_result_free(const zl_cmp_spec *s, zl_cmp_result *r) {
    for (int i = 0; i < r->ncell; i++) free(r->cells[i].file);
    free(r->cells);
    if (r->sum)
        for (int i = 0; i < s->ncfg; i++) free(r->sum[i].hash);
    free(r->sum);
    for (int i = 0; r->prompt_text && i < s->nprompt; i++) free(r->prompt_text[i]);
    free(r->prompt_text);
    free(r->trigger_prompt);
    for (int i = 0; r->grids && i < s->nprompt; i++) free(r->grids[i]);
    free(r->grids);
    free(r->trigger);
    free(r->trigger_from);
    free(r->model_shift);
    memset(r, 0, sizeof *r);
}

int zl_cmp_run(const zl_cmp_spec *s, const char *out_dir, zl_cmp_result *r) {
    memset(r, 0, sizeof *r);
    double t_start = zl_now();
    if (s->ncfg < 1 || s->nprompt < 1 || s->nseed < 1) return zl_err("compare: nothing to do (no configurations, prompts or seeds)");
    if ((double)s->ncfg * s->nprompt * s->nseed > 100000) return zl_err("compare: %d x %d x %d cells is too many", s->ncfg, s->nprompt, s->nseed);
    r->sum = zl_xcalloc((size_t)s->ncfg, sizeof(zl_cmp_summary));
    r->model_shift = zl_xcalloc((size_t)s->nmodel, sizeof(double));
    if (resolve(s, r)) return -1;
    for (int i = 0; i < s->ncfg; i++)
        if (s->cfg[i].model < 0 || s->cfg[i].model >= s->nmodel) return zl_err("configuration \"%s\": no model", s->cfg[i].name);
    int rc = 0;
    /* the models' parts, before anything heavy */
    zl_model_parts *mp = zl_xcalloc((size_t)s->nmodel, sizeof(zl_model_parts));
    for (int m = 0; m < s->nmodel && rc == 0; m++) {
        rc = zl_model_parts_resolve(s->models[m], NULL, NULL, NULL, NULL, &mp[m]);
        if (rc == 0 && !mp[m].dit) rc = zl_err("%s has no transformer/ folder", s->models[m]);
        if (rc == 0 && !mp[m].vae) rc = zl_err("%s has no vae/ folder", s->models[m]);
        if (rc == 0 && !mp[m].te) rc = zl_err("%s has no text_encoder/ folder", s->models[m]);
        if (rc == 0) r->model_shift[m] = mp[m].shift;
    }
    /* every LoRA file once: loaded (runtime branches point into it), hashed, checked for its model family */
    char **lpath = NULL;
    zl_lora **lora = NULL;
    char (*lhash)[11] = NULL;
    int nl = 0;
    for (int i = 0; i < s->ncfg && rc == 0; i++) {
        const zl_cmp_config *c = &s->cfg[i];
        r->sum[i].hash = zl_xcalloc((size_t)(c->nlora ? c->nlora : 1), 11);
        for (int k = 0; k < c->nlora && rc == 0; k++) {
            int f = -1;
            for (int j = 0; j < nl; j++)
                if (!strcmp(lpath[j], c->loras[k].path)) f = j;
            if (f < 0) {
                lpath = zl_xrealloc(lpath, sizeof(char *) * (size_t)(nl + 1));
                lora = zl_xrealloc(lora, sizeof(zl_lora *) * (size_t)(nl + 1));
                lhash = zl_xrealloc(lhash, 11 * (size_t)(nl + 1));
                lpath[nl] = c->loras[k].path;
                lora[nl] = NULL;
                if (zl_lora_load(c->loras[k].path, &lora[nl])) { rc = -1; break; }
                f = nl++;
                if (zl_file_autov2(c->loras[k].path, lhash[f])) { rc = -1; break; }
                const zl_lora *l = lora[f];
                if (strcmp(l->family, "z-image") && strcmp(l->family, "unknown") && !s->force)
                    rc = zl_err("%s is a %s LoRA, not one for Z-Image%s%s (--force applies what fits)", l->path, l->family,
                                l->reason ? ": " : "", l->reason ? l->reason : "");
            }
            memcpy(r->sum[i].hash[k], lhash[f], 11);
        }
    }
    /* the trigger and the prompts */
    if (rc == 0) {
        if (s->trigger && *s->trigger) {
            r->trigger = zl_xstrdup(s->trigger);
            r->trigger_from = zl_xstrdup("--trigger");
        }
        for (int j = 0; j < nl && !r->trigger; j++)
            for (size_t k = 0; k < sizeof trigger_keys / sizeof *trigger_keys && !r->trigger; k++) {
                const char *v = zl_lora_meta_get(lora[j], trigger_keys[k]);
                if (v && *v && zl_utf8_valid(v, strlen(v))) {
                    r->trigger = zl_xstrdup(v);
                    r->trigger_from = zl_xstrdup(lora[j]->path);
                }
            }
        if (r->trigger) zl_info("trigger: \"%s\" (from %s)", r->trigger, r->trigger_from);
        r->prompt_text = zl_xcalloc((size_t)s->nprompt, sizeof(char *));
        r->trigger_prompt = zl_xcalloc((size_t)s->nprompt, sizeof(int));
        for (int i = 0; i < s->nprompt; i++) {
            if (strstr(s->prompts[i], "[trigger]") && !r->trigger)
                zl_warn("prompt %d uses [trigger] but there is no trigger word (give --trigger WORD)", i + 1);
            r->prompt_text[i] = r->trigger ? replace_tag(s->prompts[i], r->trigger) : zl_xstrdup(s->prompts[i]);
            r->trigger_prompt[i] = r->trigger ? has_trigger(r->prompt_text[i], r->trigger) : 1;
        }
    }
    if (rc == 0) rc = mkdir_p(out_dir);
    char *cells_dir = zl_xasprintf("%s/cells", out_dir);
    if (rc == 0) rc = mkdir_p(cells_dir);
    /* caption features: the prompts, and the negatives of configurations with guidance; once per text encoder */
    int ntext = s->nprompt;
    const char **texts = zl_xcalloc((size_t)(s->nprompt + s->ncfg), sizeof(char *));
    for (int i = 0; r->prompt_text && i < s->nprompt; i++) texts[i] = r->prompt_text[i];
    int *neg_index = zl_xcalloc((size_t)s->ncfg, sizeof(int));
    for (int i = 0; i < s->ncfg; i++) {
        neg_index[i] = -1;
        if (s->cfg[i].p.guidance == 0.0f) continue;
        for (int k = s->nprompt; k < ntext; k++)
            if (!strcmp(texts[k], s->cfg[i].negative)) neg_index[i] = k;
        if (neg_index[i] < 0) { texts[ntext] = s->cfg[i].negative; neg_index[i] = ntext++; }
    }
    zl_feat **feat = zl_xcalloc((size_t)s->nmodel, sizeof(zl_feat *));
    char **ident = zl_xcalloc((size_t)s->nmodel, sizeof(char *));
    int *owner = zl_xcalloc((size_t)s->nmodel, sizeof(int));
    for (int m = 0; m < s->nmodel && rc == 0; m++) {
        int used = 0;
        for (int i = 0; i < s->ncfg; i++) used |= s->cfg[i].model == m;
        if (!used) continue;
        ident[m] = zl_te_identity(mp[m].te);
        if (!ident[m]) { rc = -1; break; }
        for (int k = 0; k < m && !feat[m]; k++)
            if (feat[k] && !strcmp(ident[k], ident[m])) feat[m] = feat[k];
        if (feat[m]) continue;
        feat[m] = zl_xcalloc((size_t)ntext, sizeof(zl_feat));
        owner[m] = 1;
        rc = zl_gen_features(&mp[m], s->cache_dir, texts, ntext, feat[m]);
    }
    /* the cells, model by model */
    int np = s->nprompt, ns = s->nseed;
    r->ncell = s->ncfg * np * ns;
    r->cells = zl_xcalloc((size_t)r->ncell, sizeof(zl_cmp_cell));
    for (int c = 0; c < s->ncfg; c++)
        for (int p = 0; p < np; p++)
            for (int k = 0; k < ns; k++) {
                zl_cmp_cell *cl = &r->cells[(c * np + p) * ns + k];
                cl->config = c;
                cl->prompt = p;
                cl->seed_index = k;
                cl->seed = s->seeds[k];
                cl->baseline_cell = r->sum[c].baseline >= 0 ? (r->sum[c].baseline * np + p) * ns + k : -1;
                cl->difference = cl->ssim = NAN;
            }
    run_progress rp;
    memset(&rp, 0, sizeof rp);
    if (rc == 0) {
        zl_info("%d configuration%s x %d prompt%s x %d seed%s = %d cells, %dx%d, on %d model%s", s->ncfg, s->ncfg == 1 ? "" : "s", np,
                np == 1 ? "" : "s", ns, ns == 1 ? "" : "s", r->ncell, s->width, s->height, s->nmodel, s->nmodel == 1 ? "" : "s");
        zl_progress_start(&rp.pr, "compare", r->ncell, "cells");
    }
    uint8_t *rgb = NULL;
    float *x = NULL;
    for (int m = 0; m < s->nmodel && rc == 0; m++) {
        int used = 0;
        for (int i = 0; i < s->ncfg; i++) used |= s->cfg[i].model == m;
        if (!used) continue;
        zl_zimage *dit = NULL;
        zl_vae *vae = NULL;
        double t0 = zl_now();
        rc = zl_zimage_load(mp[m].dit, NULL, &dit);
        if (rc == 0) zl_info("transformer: %s (%s naming, dim %d, %d layers) loaded in %.1f s", dit->path, dit->naming, dit->cfg.dim,
                             dit->cfg.n_layers, zl_now() - t0);
        if (rc == 0) zl_ops_auto_threads(dit->cfg.dim); /* small models on one thread, as generate does */
        if (rc == 0) {
            zl_vae_opts vo;
            zl_vae_default_opts(&vo);
            rc = zl_vae_load(mp[m].vae, &vo, &vae);
            if (rc == 0 && vae->cfg.latent_channels != dit->cfg.in_channels)
                rc = zl_err("the VAE %s has %d latent channels but the DiT takes %d: not a Z-Image (FLUX.1) VAE", mp[m].vae,
                            vae->cfg.latent_channels, dit->cfg.in_channels);
        }
        int f = vae ? zl_vae_factor(vae) : 8;
        if (rc == 0) rc = zl_gen_check_size(s->width, s->height, f * dit->cfg.patch);
        int h = s->height / f, w = s->width / f;
        size_t n = rc == 0 ? (size_t)dit->cfg.in_channels * (size_t)h * (size_t)w : 0;
        if (rc == 0) {
            free(x);
            free(rgb);
            x = zl_try_malloc(sizeof(float) * n);
            rgb = zl_try_malloc((size_t)s->width * (size_t)s->height * 3);
            if (!x || !rgb) rc = -1;
        }
        char model_name[256] = "";
        zl_gen_display_name(s->models[m], model_name, sizeof model_name);
        for (int c = 0; c < s->ncfg && rc == 0; c++) {
            const zl_cmp_config *cf = &s->cfg[c];
            if (cf->model != m) continue;
            zl_lora **stack = zl_xcalloc((size_t)(cf->nlora + 1), sizeof(zl_lora *));
            float *str = zl_xcalloc((size_t)(cf->nlora + 1), sizeof(float));
            const char **paths = zl_xcalloc((size_t)(cf->nlora + 1), sizeof(char *));
            for (int k = 0; k < cf->nlora; k++) {
                for (int j = 0; j < nl; j++)
                    if (!strcmp(lpath[j], cf->loras[k].path)) stack[k] = lora[j];
                str[k] = cf->loras[k].strength;
                paths[k] = cf->loras[k].path;
            }
            if (cf->nlora) {
                zl_info("configuration \"%s\":", cf->name);
                rc = zl_zimage_apply_loras(dit, stack, str, cf->nlora, 0, s->force, print_line);
            }
            zl_gen_params p = cf->p;
            if (!cf->shift_set) p.shift = mp[m].shift;
            char sl[48];
            slug(cf->name, sl, sizeof sl);
            for (int pi = 0; pi < np && rc == 0; pi++)
                for (int k = 0; k < ns && rc == 0; k++) {
                    zl_cmp_cell *cl = &r->cells[(c * np + pi) * ns + k];
                    double tc = zl_now();
                    zl_torch_randn_ex(cl->seed, x, n, p.noise);
                    rc = zl_gen_sample(dit, &p, &feat[m][pi], p.guidance != 0.0f ? &feat[m][neg_index[c]] : NULL, x, h, w, on_step, &rp);
                    if (rc == 0) rc = zl_gen_decode(vae, x, h, w, s->vae_tile, rgb);
                    cl->seconds = zl_now() - tc;
                    cl->file = zl_xasprintf("cells/c%02d-%s_p%02d_s%llu.png", c + 1, sl, pi + 1, (unsigned long long)cl->seed);
                    zl_gen_meta meta = {.prompt = r->prompt_text[pi], .negative = cf->negative, .p = p, .seed = cl->seed, .width = s->width,
                                        .height = s->height, .model_name = model_name, .model = s->models[m], .nlora = cf->nlora,
                                        .lora_path = paths, .lora_s = str, .lora_hash = (const char (*)[11])r->sum[c].hash, .merge = 0};
                    char *path = zl_xasprintf("%s/%s", out_dir, cl->file);
                    if (rc == 0) rc = zl_gen_write_png(path, rgb, &meta);
                    free(path);
                    rp.done++;
                    zl_progress_update(&rp.pr, rp.done);
                }
            if (cf->nlora && zl_zimage_remove_loras(dit) && rc == 0) rc = -1;
            free(stack);
            free(str);
            free(paths);
        }
        zl_vae_free(vae);
        zl_zimage_free(dit);
    }
    free(x);
    free(rgb);
    if (rc == 0) zl_progress_end(&rp.pr, rp.done);
    for (int m = 0; m < s->nmodel; m++) {
        if (owner[m]) {
            for (int i = 0; i < ntext; i++) zl_feat_free(&feat[m][i]);
            free(feat[m]);
        }
        free(ident[m]);
        zl_model_parts_free(&mp[m]);
    }
    free(feat);
    free(ident);
    free(owner);
    free(mp);
    free(texts);
    free(neg_index);
    for (int j = 0; j < nl; j++) zl_lora_free(lora[j]);
    free(lora);
    free(lpath);
    free(lhash);
    free(cells_dir);
    /* scores, from the files as `zlora score` reads them */
    for (int i = 0; i < r->ncell && rc == 0; i++) {
        zl_cmp_cell *cl = &r->cells[i];
        char *pa = zl_xasprintf("%s/%s", out_dir, cl->file);
        char *pb = cl->baseline_cell >= 0 ? zl_xasprintf("%s/%s", out_dir, r->cells[cl->baseline_cell].file) : NULL;
        zl_image a, b;
        memset(&b, 0, sizeof b);
        rc = zl_image_read(pa, NULL, &a);
        if (rc == 0 && pb && zl_image_read(pb, NULL, &b)) { zl_image_free(&a); rc = -1; }
        if (rc == 0) {
            zl_score sc;
            rc = zl_score_image(&a, pb ? &b : NULL, &sc);
            if (rc == 0) {
                cl->sharpness = sc.sharp.sharpness;
                cl->hf_ratio = sc.sharp.hf_ratio;
                if (sc.has_ref) { cl->difference = sc.diff.difference; cl->ssim = sc.diff.ssim; }
            }
            zl_image_free(&a);
            if (pb) zl_image_free(&b);
        }
        free(pa);
        free(pb);
    }
    if (rc == 0) {
        zl_cmp_summarize(s, r);
        rc = zl_cmp_write_grids(s, r, out_dir);
    }
    r->seconds = zl_now() - t_start;
    if (rc == 0) rc = zl_cmp_write_metrics(s, r, out_dir);
    if (rc == 0) rc = zl_cmp_write_report(s, r, out_dir);
    return rc;
}
