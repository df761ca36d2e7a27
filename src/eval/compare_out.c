/* compare_out.c — what `zlora compare` leaves behind (see compare.h): per-configuration summaries and
 * flags, the labelled grids (one per prompt), metrics.json and metrics.csv (one row per cell), report.html
 * (a static page: grids, tables, flags; every image by a relative path that exists), and the short table
 * printed at the end. */
#include "eval/compare.h"
#include <cjson/cJSON.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include "base/base.h"
#include "eval/grid.h"
#include "io/image.h"

const char *zl_cmp_flag_name(unsigned flag) {
    switch (flag) {
    case ZL_CMP_BLURRY: return "blurry_at_8";
    case ZL_CMP_NOT_LEARNING: return "not_learning";
    case ZL_CMP_BLEEDING: return "bleeding";
    case ZL_CMP_LOW_RETENTION: return "low_retention";
    default: return "?";
    }
}

static const unsigned all_flags[4] = {ZL_CMP_BLURRY, ZL_CMP_NOT_LEARNING, ZL_CMP_BLEEDING, ZL_CMP_LOW_RETENTION};

/* ---- summaries ------------------------------------------------------------------------------------ */

static double mean(double sum, int n) { return n ? sum / n : NAN; }

void zl_cmp_summarize(const zl_cmp_spec *s, zl_cmp_result *r) {
    int np = s->nprompt, ns = s->nseed;
    for (int c = 0; c < s->ncfg; c++) {
        zl_cmp_summary *u = &r->sum[c];
        double sh = 0, hf = 0, d = 0, dt = 0, dn = 0, ss = 0;
        int n = 0, nd = 0, nt = 0, nn = 0;
        for (int p = 0; p < np; p++)
            for (int k = 0; k < ns; k++) {
                const zl_cmp_cell *cl = &r->cells[(c * np + p) * ns + k];
                sh += cl->sharpness;
                hf += cl->hf_ratio;
                n++;
                if (isnan(cl->difference)) continue;
                d += cl->difference;
                ss += 1 - cl->ssim;
                nd++;
                if (r->trigger_prompt[p]) { dt += cl->difference; nt++; }
                else { dn += cl->difference; nn++; }
            }
        u->sharpness = mean(sh, n);
        u->hf_ratio = mean(hf, n);
        u->effect = mean(d, nd);
        u->one_minus_ssim = mean(ss, nd);
        u->effect_trigger = mean(dt, nt);
        u->effect_other = mean(dn, nn);
    }
    const zl_cmp_thresholds *th = &s->th;
    for (int c = 0; c < s->ncfg; c++) {
        zl_cmp_summary *u = &r->sum[c];
        u->sharp_ratio = u->retention = u->sharp_retention = NAN;
        if (u->sharp_vs >= 0 && r->sum[u->sharp_vs].sharpness > 0) u->sharp_ratio = u->sharpness / r->sum[u->sharp_vs].sharpness;
        if (u->retention_vs >= 0) {
            const zl_cmp_summary *v = &r->sum[u->retention_vs];
            if (v->effect_trigger > 0 && !isnan(u->effect_trigger)) u->retention = u->effect_trigger / v->effect_trigger;
            if (v->sharpness > 0) u->sharp_retention = u->sharpness / v->sharpness;
        }
        int has_lora = s->cfg[c].nlora > 0;
        u->flags = 0;
        if (!isnan(u->sharp_ratio) && u->sharp_ratio < th->blurry) u->flags |= ZL_CMP_BLURRY;
        if (has_lora && !isnan(u->effect_trigger) && u->effect_trigger < th->not_learning) u->flags |= ZL_CMP_NOT_LEARNING;
        if (has_lora && r->trigger && !isnan(u->effect_other) && !isnan(u->effect_trigger) && u->effect_other >= th->not_learning &&
            u->effect_other > th->bleeding * u->effect_trigger)
            u->flags |= ZL_CMP_BLEEDING;
        if (!isnan(u->retention) && u->retention < th->retention) u->flags |= ZL_CMP_LOW_RETENTION;
    }
}

/* ---- labels --------------------------------------------------------------------------------------- */

/* "8 steps · CFG 1 · euler" (+ shift when set, + the model when there are several) */
static void settings_line(const zl_cmp_spec *s, const zl_cmp_result *r, int c, zl_buf *b) {
    const zl_cmp_config *cf = &s->cfg[c];
    zl_buf_printf(b, "%d steps · CFG %g · %s · shift %g", cf->p.steps, (double)cf->p.guidance + 1, zl_sampler_name(cf->p.sampler),
                  cf->shift_set ? cf->p.shift : r->model_shift[cf->model]);
    if (s->nmodel > 1) {
        char dn[256];
        zl_buf_printf(b, " · %s", zl_gen_display_name(s->models[cf->model], dn, sizeof dn));
    }
}

static void lora_line(const zl_cmp_config *cf, zl_buf *b) {
    if (!cf->nlora) { zl_buf_puts(b, "no LoRA"); return; }
    for (int k = 0; k < cf->nlora; k++) {
        char dn[256];
        zl_buf_printf(b, "%s%s:%g", k ? " + " : "", zl_gen_display_name(cf->loras[k].path, dn, sizeof dn), (double)cf->loras[k].strength);
    }
}

/* ---- grids ---------------------------------------------------------------------------------------- */

int zl_cmp_write_grids(const zl_cmp_spec *s, zl_cmp_result *r, const char *out_dir) {
    int np = s->nprompt, ns = s->nseed, nc = s->ncfg;
    int cw = s->width, ch = s->height;
    if (s->grid_cell > 0 && (cw > s->grid_cell || ch > s->grid_cell)) {
        double f = (double)s->grid_cell / (cw > ch ? cw : ch);
        cw = (int)lround(cw * f);
        ch = (int)lround(ch * f);
        if (cw < 1) cw = 1;
        if (ch < 1) ch = 1;
    }
    char **rows = zl_xcalloc((size_t)nc, sizeof(char *)), **cols = zl_xcalloc((size_t)ns, sizeof(char *));
    for (int c = 0; c < nc; c++) {
        zl_buf b = {0};
        zl_buf_printf(&b, "%s\n", s->cfg[c].name);
        settings_line(s, r, c, &b);
        zl_buf_puts(&b, "\n");
        lora_line(&s->cfg[c], &b);
        rows[c] = b.s;
    }
    for (int k = 0; k < ns; k++) cols[k] = zl_xasprintf("seed %llu", (unsigned long long)s->seeds[k]);
    r->grids = zl_xcalloc((size_t)np, sizeof(char *));
    uint8_t **cells = zl_xcalloc((size_t)nc * ns, sizeof(uint8_t *));
    int rc = 0;
    for (int p = 0; p < np && rc == 0; p++) {
        for (int c = 0; c < nc && rc == 0; c++)
            for (int k = 0; k < ns && rc == 0; k++) {
                char *path = zl_xasprintf("%s/%s", out_dir, r->cells[(c * np + p) * ns + k].file);
                zl_image img, sm;
                rc = zl_image_read(path, NULL, &img);
                free(path);
                if (rc) break;
                if (img.w != cw || img.h != ch) {
                    rc = zl_image_resize(&img, cw, ch, ZL_RESIZE_AREA, &sm);
                    zl_image_free(&img);
                    if (rc) break;
                    img = sm;
                }
                cells[c * ns + k] = zl_image_to_rgb8(&img);
                zl_image_free(&img);
            }
        char *title = zl_xasprintf("prompt %d%s: %s", p + 1, r->trigger && r->trigger_prompt[p] ? " (trigger)" : "", r->prompt_text[p]);
        zl_grid g = {.title = title, .rows = nc, .cols = ns, .row_labels = (const char *const *)rows, .col_labels = (const char *const *)cols,
                     .cells = (const uint8_t *const *)cells, .cell_w = cw, .cell_h = ch};
        uint8_t *rgb = NULL;
        int w = 0, h = 0;
        if (rc == 0) rc = zl_grid_render(&g, &rgb, &w, &h);
        r->grids[p] = zl_xasprintf("grid_p%02d.png", p + 1);
        if (rc == 0) {
            zl_buf par = {0};
            zl_buf_printf(&par, "%s\nzlora compare grid: rows = configurations (", r->prompt_text[p]);
            for (int c = 0; c < nc; c++) zl_buf_printf(&par, "%s%s", c ? " | " : "", s->cfg[c].name);
            zl_buf_puts(&par, "), columns = seeds (");
            for (int k = 0; k < ns; k++) zl_buf_printf(&par, "%s%llu", k ? ", " : "", (unsigned long long)s->seeds[k]);
            zl_buf_printf(&par, "), Size: %dx%d, Cell size: %dx%d, Version: zlora %s", s->width, s->height, cw, ch, ZL_VERSION);
            const char *keys[1] = {"parameters"}, *vals[1] = {par.s};
            uint8_t *png = NULL;
            size_t npng = 0;
            rc = zl_png_encode_rgb8(rgb, w, h, keys, vals, 1, &png, &npng);
            char *path = zl_xasprintf("%s/%s", out_dir, r->grids[p]);
            if (rc == 0) {
                const void *parts[1] = {png};
                rc = zl_write_atomic(path, parts, &npng, 1);
            }
            free(path);
            free(png);
            zl_buf_free(&par);
        }
        free(rgb);
        free(title);
        for (int i = 0; i < nc * ns; i++) { free(cells[i]); cells[i] = NULL; }
    }
    free(cells);
    for (int c = 0; c < nc; c++) free(rows[c]);
    for (int k = 0; k < ns; k++) free(cols[k]);
    free(rows);
    free(cols);
    return rc;
}

/* ---- metrics.json and metrics.csv ----------------------------------------------------------------- */

/* The shortest of %.15g, %.16g, %.17g that reads back as exactly v (cJSON's own printing may be 1 ulp off). */
static const char *exact(char *b, size_t n, double v) {
    for (int prec = 15; prec <= 17; prec++) {
        snprintf(b, n, "%.*g", prec, v);
        if (strtod(b, NULL) == v) break;
    }
    return b;
}

static void add_num(cJSON *o, const char *k, double v) {
    char b[40];
    if (isfinite(v)) cJSON_AddRawToObject(o, k, exact(b, sizeof b, v));
    else cJSON_AddNullToObject(o, k);
}

static void add_seed(cJSON *o, const char *k, uint64_t seed) {
    char b[32];
    snprintf(b, sizeof b, "%llu", (unsigned long long)seed);
    cJSON_AddRawToObject(o, k, b); /* exact, even above 2^53 */
}

static const char *cfg_name_or_null(const zl_cmp_spec *s, int i) { return i >= 0 ? s->cfg[i].name : NULL; }

static void add_name(cJSON *o, const char *k, const char *v) {
    if (v) cJSON_AddStringToObject(o, k, v);
    else cJSON_AddNullToObject(o, k);
}

static int write_text(const char *path, const char *text) {
    const void *parts[1] = {text};
    size_t n = strlen(text);
    return zl_write_atomic(path, parts, &n, 1);
}

static void csv_field(zl_buf *b, const char *v) {
    if (!strpbrk(v, ",\"\r\n")) { zl_buf_puts(b, v); return; }
    zl_buf_puts(b, "\"");
    for (const char *p = v; *p; p++) {
        if (*p == '"') zl_buf_puts(b, "\"\"");
        else zl_buf_printf(b, "%c", *p);
    }
    zl_buf_puts(b, "\"");
}

static void csv_num(zl_buf *b, double v) {
    char t[40];
    if (isfinite(v)) zl_buf_printf(b, ",%s", exact(t, sizeof t, v));
    else zl_buf_puts(b, ",");
}

int zl_cmp_write_metrics(const zl_cmp_spec *s, const zl_cmp_result *r, const char *out_dir) {
    int np = s->nprompt;
    cJSON *j = cJSON_CreateObject();
    cJSON_AddStringToObject(j, "zlora_version", ZL_VERSION);
    cJSON_AddStringToObject(j, "experiment", s->experiment ? s->experiment : "");
    cJSON_AddNumberToObject(j, "width", s->width);
    cJSON_AddNumberToObject(j, "height", s->height);
    add_name(j, "trigger", r->trigger);
    add_name(j, "trigger_from", r->trigger ? r->trigger_from : NULL);
    cJSON *th = cJSON_AddObjectToObject(j, "thresholds");
    cJSON_AddNumberToObject(th, "blurry_at_8", s->th.blurry);
    cJSON_AddNumberToObject(th, "not_learning", s->th.not_learning);
    cJSON_AddNumberToObject(th, "bleeding", s->th.bleeding);
    cJSON_AddNumberToObject(th, "low_retention", s->th.retention);
    cJSON *ms = cJSON_AddArrayToObject(j, "models");
    for (int m = 0; m < s->nmodel; m++) {
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "path", s->models[m]);
        cJSON_AddNumberToObject(o, "shift", r->model_shift[m]);
        cJSON_AddItemToArray(ms, o);
    }
    cJSON *seeds = cJSON_AddArrayToObject(j, "seeds");
    for (int k = 0; k < s->nseed; k++) {
        char b[32];
        snprintf(b, sizeof b, "%llu", (unsigned long long)s->seeds[k]);
        cJSON_AddItemToArray(seeds, cJSON_CreateRaw(b));
    }
    cJSON *ps = cJSON_AddArrayToObject(j, "prompts");
    for (int p = 0; p < np; p++) {
        cJSON *o = cJSON_CreateObject();
        cJSON_AddNumberToObject(o, "index", p + 1);
        cJSON_AddStringToObject(o, "text", r->prompt_text[p]);
        cJSON_AddBoolToObject(o, "trigger_prompt", r->trigger_prompt[p]);
        cJSON_AddStringToObject(o, "grid", r->grids[p]);
        cJSON_AddItemToArray(ps, o);
    }
    cJSON *cs = cJSON_AddArrayToObject(j, "configs");
    for (int c = 0; c < s->ncfg; c++) {
        const zl_cmp_config *cf = &s->cfg[c];
        const zl_cmp_summary *u = &r->sum[c];
        cJSON *o = cJSON_CreateObject();
        cJSON_AddNumberToObject(o, "index", c + 1);
        cJSON_AddStringToObject(o, "name", cf->name);
        cJSON_AddStringToObject(o, "model", s->models[cf->model]);
        cJSON *ls = cJSON_AddArrayToObject(o, "loras");
        for (int k = 0; k < cf->nlora; k++) {
            cJSON *l = cJSON_CreateObject();
            cJSON_AddStringToObject(l, "path", cf->loras[k].path);
            cJSON_AddNumberToObject(l, "strength", cf->loras[k].strength);
            cJSON_AddStringToObject(l, "hash", u->hash ? u->hash[k] : "");
            cJSON_AddItemToArray(ls, l);
        }
        cJSON_AddNumberToObject(o, "steps", cf->p.steps);
        cJSON_AddNumberToObject(o, "cfg", (double)cf->p.guidance + 1);
        cJSON_AddNumberToObject(o, "guidance", cf->p.guidance);
        if (cf->p.guidance != 0.0f) cJSON_AddStringToObject(o, "negative", cf->negative);
        cJSON_AddNumberToObject(o, "shift", cf->shift_set ? cf->p.shift : r->model_shift[cf->model]);
        cJSON_AddStringToObject(o, "sampler", zl_sampler_name(cf->p.sampler));
        cJSON_AddStringToObject(o, "noise", cf->p.noise == ZL_NOISE_TORCH ? "torch" : "torch-scalar");
        cJSON_AddNumberToObject(o, "cfg_norm", cf->p.cfg_norm);
        cJSON_AddNumberToObject(o, "cfg_trunc", cf->p.cfg_trunc);
        add_name(o, "baseline", cfg_name_or_null(s, u->baseline));
        add_name(o, "sharpness_vs", cfg_name_or_null(s, u->sharp_vs));
        add_name(o, "retention_vs", cfg_name_or_null(s, u->retention_vs));
        cJSON *sm = cJSON_AddObjectToObject(o, "summary");
        add_num(sm, "sharpness", u->sharpness);
        add_num(sm, "hf_ratio", u->hf_ratio);
        add_num(sm, "effect", u->effect);
        add_num(sm, "effect_trigger", u->effect_trigger);
        add_num(sm, "effect_other", u->effect_other);
        add_num(sm, "one_minus_ssim", u->one_minus_ssim);
        add_num(sm, "sharp_ratio", u->sharp_ratio);
        add_num(sm, "retention", u->retention);
        add_num(sm, "sharp_retention", u->sharp_retention);
        cJSON *fl = cJSON_AddArrayToObject(sm, "flags");
        for (int f = 0; f < 4; f++)
            if (u->flags & all_flags[f]) cJSON_AddItemToArray(fl, cJSON_CreateString(zl_cmp_flag_name(all_flags[f])));
        cJSON_AddItemToArray(cs, o);
    }
    zl_buf csv = {0};
    zl_buf_puts(&csv, "config_index,config,prompt_index,prompt,trigger_prompt,seed,file,sharpness,hf_ratio,baseline_file,difference,ssim,seconds\n");
    cJSON *cells = cJSON_AddArrayToObject(j, "cells");
    for (int i = 0; i < r->ncell; i++) {
        const zl_cmp_cell *cl = &r->cells[i];
        cJSON *o = cJSON_CreateObject();
        cJSON_AddNumberToObject(o, "config_index", cl->config + 1);
        cJSON_AddStringToObject(o, "config", s->cfg[cl->config].name);
        cJSON_AddNumberToObject(o, "prompt_index", cl->prompt + 1);
        cJSON_AddBoolToObject(o, "trigger_prompt", r->trigger_prompt[cl->prompt]);
        add_seed(o, "seed", cl->seed);
        cJSON_AddStringToObject(o, "file", cl->file);
        add_num(o, "sharpness", cl->sharpness);
        add_num(o, "hf_ratio", cl->hf_ratio);
        add_name(o, "baseline_file", cl->baseline_cell >= 0 ? r->cells[cl->baseline_cell].file : NULL);
        add_num(o, "difference", cl->difference);
        add_num(o, "ssim", cl->ssim);
        add_num(o, "seconds", cl->seconds);
        cJSON_AddItemToArray(cells, o);
        zl_buf_printf(&csv, "%d,", cl->config + 1);
        csv_field(&csv, s->cfg[cl->config].name);
        zl_buf_printf(&csv, ",%d,", cl->prompt + 1);
        csv_field(&csv, r->prompt_text[cl->prompt]);
        zl_buf_printf(&csv, ",%d,%llu,", r->trigger_prompt[cl->prompt], (unsigned long long)cl->seed);
        csv_field(&csv, cl->file);
        csv_num(&csv, cl->sharpness);
        csv_num(&csv, cl->hf_ratio);
        zl_buf_puts(&csv, ",");
        if (cl->baseline_cell >= 0) csv_field(&csv, r->cells[cl->baseline_cell].file);
        csv_num(&csv, cl->difference);
        csv_num(&csv, cl->ssim);
        csv_num(&csv, cl->seconds);
        zl_buf_puts(&csv, "\n");
    }
    add_num(j, "seconds", r->seconds);
    char *js = cJSON_Print(j);
    cJSON_Delete(j);
    /* summary.json: one object per configuration, keyed by its name, with the numbers people quote */
    cJSON *sj = cJSON_CreateObject();
    for (int c = 0; c < s->ncfg; c++) {
        const zl_cmp_summary *u = &r->sum[c];
        cJSON *o = cJSON_AddObjectToObject(sj, s->cfg[c].name);
        cJSON_AddNumberToObject(o, "steps", s->cfg[c].p.steps);
        cJSON_AddNumberToObject(o, "cfg", (double)s->cfg[c].p.guidance + 1);
        cJSON_AddNumberToObject(o, "loras", s->cfg[c].nlora);
        add_num(o, "sharpness", u->sharpness);
        add_num(o, "sharp_ratio", u->sharp_ratio);
        add_name(o, "sharpness_vs", cfg_name_or_null(s, u->sharp_vs));
        add_num(o, "effect", u->effect_trigger);
        add_num(o, "effect_other", u->effect_other);
        add_name(o, "baseline", cfg_name_or_null(s, u->baseline));
        add_num(o, "retention", u->retention);
        cJSON *fl = cJSON_AddArrayToObject(o, "flags");
        for (int f = 0; f < 4; f++)
            if (u->flags & all_flags[f]) cJSON_AddItemToArray(fl, cJSON_CreateString(zl_cmp_flag_name(all_flags[f])));
    }
    char *ss = cJSON_Print(sj);
    cJSON_Delete(sj);
    char *pj = zl_xasprintf("%s/metrics.json", out_dir), *pc = zl_xasprintf("%s/metrics.csv", out_dir);
    char *psum = zl_xasprintf("%s/summary.json", out_dir);
    int rc = write_text(pj, js);
    if (rc == 0) rc = write_text(pc, csv.s);
    if (rc == 0) rc = write_text(psum, ss);
    free(pj);
    free(pc);
    free(psum);
    free(ss);
    free(js);
    zl_buf_free(&csv);
    return rc;
}

/* ---- report.html ---------------------------------------------------------------------------------- */

static void esc(zl_buf *b, const char *s) {
    for (const char *p = s; *p; p++) {
        switch (*p) {
        case '&': zl_buf_puts(b, "&amp;"); break;
        case '<': zl_buf_puts(b, "&lt;"); break;
        case '>': zl_buf_puts(b, "&gt;"); break;
        case '"': zl_buf_puts(b, "&quot;"); break;
        case '\'': zl_buf_puts(b, "&#39;"); break;
        default: zl_buf_printf(b, "%c", *p);
        }
    }
}

static void td_num(zl_buf *b, double v, const char *fmt) {
    zl_buf_puts(b, "<td class=n>");
    if (isfinite(v)) zl_buf_printf(b, fmt, v);
    else zl_buf_puts(b, "–");
    zl_buf_puts(b, "</td>");
}

static void flag_sentence(const zl_cmp_spec *s, const zl_cmp_result *r, int c, unsigned f, zl_buf *b) {
    const zl_cmp_summary *u = &r->sum[c];
    const zl_cmp_thresholds *th = &s->th;
    zl_buf_printf(b, "<li><b>");
    esc(b, s->cfg[c].name);
    zl_buf_printf(b, "</b>: <span class=flag>%s</span> — ", zl_cmp_flag_name(f));
    if (f == ZL_CMP_BLURRY) {
        zl_buf_printf(b, "its sharpness is %.3g of that of “", u->sharp_ratio);
        esc(b, s->cfg[u->sharp_vs].name);
        zl_buf_printf(b, "”, below %g: the images at these settings are softer than at the slower ones (distillation drift; try the DistillPatch LoRA).", th->blurry);
    } else if (f == ZL_CMP_NOT_LEARNING) {
        zl_buf_printf(b, "on trigger prompts it differs from “");
        esc(b, s->cfg[u->baseline].name);
        zl_buf_printf(b, "” by %.3g on average, below %g: the LoRA barely changes the images.", u->effect_trigger, th->not_learning);
    } else if (f == ZL_CMP_BLEEDING) {
        zl_buf_printf(b, "on prompts without the trigger it changes the images by %.3g, more than %g × its effect on trigger prompts (%.3g): the LoRA bleeds into every prompt (overfitting).",
                      u->effect_other, th->bleeding, u->effect_trigger);
    } else if (f == ZL_CMP_LOW_RETENTION) {
        zl_buf_printf(b, "it keeps %.0f%% of the effect that its stack has in “", 100 * u->retention);
        esc(b, s->cfg[u->retention_vs].name);
        zl_buf_printf(b, "”, below %.0f%%.", 100 * th->retention);
    }
    zl_buf_puts(b, "</li>\n");
}

int zl_cmp_write_report(const zl_cmp_spec *s, const zl_cmp_result *r, const char *out_dir) {
    int np = s->nprompt, ns = s->nseed;
    zl_buf b = {0};
    zl_buf_puts(&b, "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<title>zlora compare: ");
    esc(&b, s->experiment ? s->experiment : "");
    zl_buf_puts(&b, "</title>\n<style>\n"
                    "body{font-family:system-ui,sans-serif;margin:1.5em;color:#222;max-width:110em}\n"
                    "table{border-collapse:collapse;margin:.5em 0 1.5em}td,th{border:1px solid #ccc;padding:.25em .5em;vertical-align:top}\n"
                    "th{background:#f3f3f3;text-align:left}td.n{text-align:right;font-variant-numeric:tabular-nums}\n"
                    ".flag{background:#fde2e1;color:#9b1c1c;border-radius:.3em;padding:0 .35em;font-family:monospace}\n"
                    ".ok{color:#2f6f3e}.prompt{font-size:1.1em;background:#f7f7f7;padding:.4em .6em;border-left:4px solid #888}\n"
                    "img.grid{max-width:100%;border:1px solid #ddd}img.thumb{max-height:64px;image-rendering:auto}\n"
                    "dt{font-weight:bold;margin-top:.4em}small{color:#666}\n"
                    "</style>\n</head>\n<body>\n<h1>zlora compare: ");
    esc(&b, s->experiment ? s->experiment : "");
    zl_buf_puts(&b, "</h1>\n<p>");
    zl_buf_printf(&b, "%d configuration%s × %d prompt%s × %d seed%s = %d cells at %d×%d, made in %.1f s by zlora %s.", s->ncfg,
                  s->ncfg == 1 ? "" : "s", np, np == 1 ? "" : "s", ns, ns == 1 ? "" : "s", r->ncell, s->width, s->height, r->seconds,
                  ZL_VERSION);
    time_t now = time(NULL);
    struct tm tmv;
    char date[64] = "";
    if (localtime_r(&now, &tmv)) strftime(date, sizeof date, "%Y-%m-%d %H:%M", &tmv);
    zl_buf_printf(&b, " <small>%s</small></p>\n<ul>\n", date);
    for (int m = 0; m < s->nmodel; m++) {
        zl_buf_puts(&b, "<li>model: <code>");
        esc(&b, s->models[m]);
        zl_buf_printf(&b, "</code> (scheduler shift %g)</li>\n", r->model_shift[m]);
    }
    if (r->trigger) {
        zl_buf_puts(&b, "<li>trigger: <b>");
        esc(&b, r->trigger);
        zl_buf_puts(&b, "</b> (from <code>");
        esc(&b, r->trigger_from);
        zl_buf_puts(&b, "</code>); a prompt that contains it is a trigger prompt</li>\n");
    } else {
        zl_buf_puts(&b, "<li>no trigger word (<code>--trigger</code> or LoRA metadata): every prompt counts as a trigger prompt, and bleeding is not judged</li>\n");
    }
    zl_buf_puts(&b, "<li>seeds:");
    for (int k = 0; k < ns; k++) zl_buf_printf(&b, " %llu", (unsigned long long)s->seeds[k]);
    zl_buf_puts(&b, "</li>\n</ul>\n<h2>Flags</h2>\n");
    int nflags = 0;
    for (int c = 0; c < s->ncfg; c++)
        for (int f = 0; f < 4; f++)
            if (r->sum[c].flags & all_flags[f]) {
                if (!nflags++) zl_buf_puts(&b, "<ul>\n");
                flag_sentence(s, r, c, all_flags[f], &b);
            }
    if (nflags) zl_buf_puts(&b, "</ul>\n");
    else zl_buf_puts(&b, "<p class=ok>No flags were raised.</p>\n");
    /* the configurations */
    zl_buf_puts(&b, "<h2>Configurations</h2>\n<table>\n<tr><th>#</th><th>configuration</th><th>settings</th><th>LoRAs</th>"
                    "<th>sharpness</th><th>hf_ratio</th><th>sharpness ratio</th><th>effect (trigger)</th><th>effect (other)</th>"
                    "<th>1 − SSIM</th><th>retention</th><th>flags</th></tr>\n");
    for (int c = 0; c < s->ncfg; c++) {
        const zl_cmp_config *cf = &s->cfg[c];
        const zl_cmp_summary *u = &r->sum[c];
        zl_buf t = {0};
        zl_buf_printf(&b, "<tr><td class=n>%d</td><td><b>", c + 1);
        esc(&b, cf->name);
        zl_buf_puts(&b, "</b>");
        if (u->baseline >= 0) {
            zl_buf_puts(&b, "<br><small>baseline: ");
            esc(&b, s->cfg[u->baseline].name);
            zl_buf_puts(&b, "</small>");
        }
        zl_buf_puts(&b, "</td><td>");
        settings_line(s, r, c, &t);
        esc(&b, t.s);
        if (cf->p.guidance != 0.0f) {
            zl_buf_puts(&b, "<br><small>negative: “");
            esc(&b, cf->negative);
            zl_buf_puts(&b, "”</small>");
        }
        zl_buf_puts(&b, "</td><td>");
        for (int k = 0; k < cf->nlora; k++) {
            char dn[256];
            zl_buf_printf(&b, "%s<code>", k ? "<br>" : "");
            esc(&b, zl_gen_display_name(cf->loras[k].path, dn, sizeof dn));
            zl_buf_printf(&b, "</code>:%g <small>%s</small>", (double)cf->loras[k].strength, u->hash ? u->hash[k] : "");
        }
        if (!cf->nlora) zl_buf_puts(&b, "–");
        zl_buf_puts(&b, "</td>");
        td_num(&b, u->sharpness, "%.4g");
        td_num(&b, u->hf_ratio, "%.3f");
        td_num(&b, u->sharp_ratio, "%.3f");
        td_num(&b, u->effect_trigger, "%.4f");
        td_num(&b, u->effect_other, "%.4f");
        td_num(&b, u->one_minus_ssim, "%.4f");
        td_num(&b, u->retention, "%.3f");
        zl_buf_puts(&b, "<td>");
        for (int f = 0; f < 4; f++)
            if (u->flags & all_flags[f]) zl_buf_printf(&b, "<span class=flag>%s</span> ", zl_cmp_flag_name(all_flags[f]));
        zl_buf_puts(&b, "</td></tr>\n");
        zl_buf_free(&t);
    }
    zl_buf_puts(&b, "</table>\n");
    zl_buf_printf(&b, "<details><summary>What the numbers mean</summary>\n<dl>\n"
                      "<dt>sharpness</dt><dd>variance of the Laplacian of the luma (0..1 scale), mean over the configuration's cells; falls when images are blurred.</dd>\n"
                      "<dt>hf_ratio</dt><dd>share of the luma variance above a σ = 1 px Gaussian blur (0..1).</dd>\n"
                      "<dt>sharpness ratio</dt><dd>this configuration's sharpness divided by that of its partner (e.g. 8 steps against 30): "
                      "below %g raises <span class=flag>blurry_at_8</span>.</dd>\n"
                      "<dt>effect</dt><dd>mean absolute RGB difference (0..1) from the baseline cell of the same prompt and seed, over trigger prompts "
                      "and over the others: the LoRA's effect. Below %g on trigger prompts raises <span class=flag>not_learning</span>; on other prompts above "
                      "%g × the trigger-prompt effect (and above %g) raises <span class=flag>bleeding</span>.</dd>\n"
                      "<dt>1 − SSIM</dt><dd>structural difference from the baseline cell (0 for identical images).</dd>\n"
                      "<dt>retention</dt><dd>trigger-prompt effect divided by that of the partner configuration (e.g. the same LoRA on Base): the share of the "
                      "LoRA's effect that survives; below %g raises <span class=flag>low_retention</span>.</dd>\n</dl>\n</details>\n",
                  s->th.blurry, s->th.not_learning, s->th.bleeding, s->th.not_learning, s->th.retention);
    /* per prompt: the grid and the cells */
    for (int p = 0; p < np; p++) {
        zl_buf_printf(&b, "<h2 id=\"p%d\">Prompt %d%s</h2>\n<p class=prompt>", p + 1, p + 1, r->trigger && r->trigger_prompt[p] ? " (trigger prompt)" : "");
        esc(&b, r->prompt_text[p]);
        zl_buf_puts(&b, "</p>\n<p><a href=\"");
        esc(&b, r->grids[p]);
        zl_buf_puts(&b, "\"><img class=grid src=\"");
        esc(&b, r->grids[p]);
        zl_buf_printf(&b, "\" alt=\"grid of prompt %d: rows are configurations, columns are seeds\"></a></p>\n", p + 1);
        zl_buf_puts(&b, "<table>\n<tr><th>configuration</th><th>seed</th><th>image</th><th>sharpness</th><th>hf_ratio</th>"
                        "<th>difference</th><th>1 − SSIM</th><th>seconds</th></tr>\n");
        for (int c = 0; c < s->ncfg; c++)
            for (int k = 0; k < ns; k++) {
                const zl_cmp_cell *cl = &r->cells[(c * np + p) * ns + k];
                zl_buf_puts(&b, "<tr><td>");
                esc(&b, s->cfg[c].name);
                zl_buf_printf(&b, "</td><td class=n>%llu</td><td><a href=\"", (unsigned long long)cl->seed);
                esc(&b, cl->file);
                zl_buf_puts(&b, "\"><img class=thumb src=\"");
                esc(&b, cl->file);
                zl_buf_puts(&b, "\" alt=\"");
                esc(&b, cl->file);
                zl_buf_puts(&b, "\"></a></td>");
                td_num(&b, cl->sharpness, "%.4g");
                td_num(&b, cl->hf_ratio, "%.3f");
                td_num(&b, cl->difference, "%.4f");
                td_num(&b, isnan(cl->ssim) ? NAN : 1 - cl->ssim, "%.4f");
                td_num(&b, cl->seconds, "%.1f");
                zl_buf_puts(&b, "</tr>\n");
            }
        zl_buf_puts(&b, "</table>\n");
    }
    zl_buf_puts(&b, "<p>Data: <a href=\"metrics.json\">metrics.json</a> (settings, summaries, every cell), "
                    "<a href=\"metrics.csv\">metrics.csv</a> (one row per cell). Every cell PNG carries its settings: "
                    "<code>zlora generate --from CELL.png</code> remakes it.</p>\n</body>\n</html>\n");
    char *path = zl_xasprintf("%s/report.html", out_dir);
    int rc = write_text(path, b.s);
    free(path);
    zl_buf_free(&b);
    return rc;
}

/* ---- the table on stdout -------------------------------------------------------------------------- */

static void col(FILE *f, double v, const char *fmt) {
    fputc(' ', f);
    if (isfinite(v)) fprintf(f, fmt, v);
    else fprintf(f, "%10s", "-");
}

void zl_cmp_print_table(const zl_cmp_spec *s, const zl_cmp_result *r, FILE *f) {
    int w = 13;
    for (int c = 0; c < s->ncfg; c++) {
        int n = (int)strlen(s->cfg[c].name);
        if (n > w) w = n;
    }
    if (w > 48) w = 48;
    fprintf(f, "%-*s %10s %10s %10s %10s %10s %10s  %s\n", w, "configuration", "sharpness", "sharp/ref", "effect", "eff.other", "1-ssim",
            "retention", "flags");
    for (int c = 0; c < s->ncfg; c++) {
        const zl_cmp_summary *u = &r->sum[c];
        fprintf(f, "%-*.*s", w, w, s->cfg[c].name);
        col(f, u->sharpness, "%10.4g");
        col(f, u->sharp_ratio, "%10.3f");
        col(f, u->effect_trigger, "%10.4f");
        col(f, u->effect_other, "%10.4f");
        col(f, u->one_minus_ssim, "%10.4f");
        col(f, u->retention, "%10.3f");
        fprintf(f, " ");
        int any = 0;
        for (int k = 0; k < 4; k++)
            if (u->flags & all_flags[k]) fprintf(f, "%s%s", any++ ? "," : " ", zl_cmp_flag_name(all_flags[k]));
        fprintf(f, "\n");
    }
}
