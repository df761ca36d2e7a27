/* lora_report.c — what a LoRA file is (inspect) and whether it applies to a model (check).
 * See lora.h. */
#include "lora.h"
#include "../base/base.h"
#include "../io/safetensors.h"
#include "../model/zimage_names.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------------ module tables */

static void table_add(zl_module_table *t, const char *name, int out, int in) {
    t->name = zl_xrealloc(t->name, sizeof(char *) * (size_t)(t->n + 1));
    t->out = zl_xrealloc(t->out, sizeof(int) * (size_t)(t->n + 1));
    t->in = zl_xrealloc(t->in, sizeof(int) * (size_t)(t->n + 1));
    t->name[t->n] = zl_xstrdup(name);
    t->out[t->n] = out;
    t->in[t->n] = in;
    t->n++;
}

void zl_module_table_default(zl_module_table *t) {
    memset(t, 0, sizeof *t);
    zl_zimage_config c;
    zl_zimage_default_config(&c);
    zl_zimage_module *m;
    int n = zl_zimage_modules(&c, &m);
    for (int i = 0; i < n; i++) table_add(t, m[i].name, m[i].out, m[i].type == ZL_MOD_LINEAR ? m[i].in : 0);
    free(m);
    t->dim = c.dim;
}

void zl_module_table_free(zl_module_table *t) {
    for (int i = 0; i < t->n; i++) free(t->name[i]);
    free(t->name); free(t->out); free(t->in);
    memset(t, 0, sizeof *t);
}

int zl_module_table_find(const zl_module_table *t, const char *name) {
    for (int i = 0; i < t->n; i++)
        if (strcmp(t->name[i], name) == 0) return i;
    return -1;
}

int zl_module_table_from_checkpoint(const char *path, zl_module_table *t) {
    memset(t, 0, sizeof *t);
    zl_st *st;
    char p[1024];
    /* a diffusers model folder: use its transformer/ */
    snprintf(p, sizeof p, "%s/transformer", path);
    if (zl_is_dir(path) && zl_is_dir(p)) path = p;
    if (zl_st_open(path, &st)) return -1;
    int found = 0;
    for (int i = 0; i < zl_st_count(st); i++) {
        const zl_tensor_info *ti = zl_st_tensor(st, i);
        const char *n = ti->name;
        if (zl_starts_with(n, "model.diffusion_model.")) n += strlen("model.diffusion_model.");
        else if (zl_starts_with(n, "diffusion_model.")) n += strlen("diffusion_model.");
        if (!zl_ends_with(n, ".weight")) continue;
        char mod[256], canon[128];
        snprintf(mod, sizeof mod, "%.*s", (int)(strlen(n) - strlen(".weight")), n);
        int r = zl_zimage_canonical(mod, canon);
        if (r < 0) continue;
        int out = (int)ti->shape[0], in = ti->ndim >= 2 ? (int)ti->shape[1] : 0;
        found++;
        if (r == 1) { /* fused qkv: register the three projections */
            char q[160];
            const char *k[3] = {"to_q", "to_k", "to_v"};
            for (int j = 0; j < 3; j++) {
                snprintf(q, sizeof q, "%.*s%s", (int)(strlen(canon) - 3), canon, k[j]);
                table_add(t, q, out / 3, in);
            }
            if (!t->dim) t->dim = in;
        } else {
            table_add(t, canon, out, in);
            if (!t->dim && strstr(canon, ".attention.to_q")) t->dim = in;
        }
    }
    zl_st_close(st);
    if (!found) {
        zl_module_table_free(t);
        return zl_err("%s: no Z-Image transformer tensors found (is this the transformer checkpoint?)", path);
    }
    return 0;
}

/* ------------------------------------------------------------------ check */

const char *zl_lora_check_module(const zl_lora *l, int i, const zl_module_table *t, char *buf, int bs) {
    const zl_lora_module *m = &l->m[i];
    if (strcmp(l->family, "z-image") != 0) {
        snprintf(buf, (size_t)bs, "foreign model (%s LoRA)", l->family);
        return buf;
    }
    if (m->kind == ZL_AD_UNSUPPORTED) {
        snprintf(buf, (size_t)bs, "unsupported adapter: %s", m->unsupported ? m->unsupported : "?");
        return buf;
    }
    if (!m->target) { snprintf(buf, (size_t)bs, "unknown module: not a Z-Image layer"); return buf; }
    int out = m->out, in = m->in;
    char name[160];
    snprintf(name, sizeof name, "%s", m->target);
    if (m->fused_qkv) { /* check against to_q; rows must be 3x */
        snprintf(name, sizeof name, "%.*sto_q", (int)(strlen(m->target) - 3), m->target);
        if (out % 3) { snprintf(buf, (size_t)bs, "fused qkv with %d rows (not 3 x width)", out); return buf; }
        out /= 3;
    }
    int j = zl_module_table_find(t, name);
    if (j < 0) {
        snprintf(buf, (size_t)bs, "no such module in the model (%s)", m->target);
        return buf;
    }
    if (in == -1) in = t->in[j]; /* bias-only diff */
    if (t->in[j] == 0 && in > 0) { snprintf(buf, (size_t)bs, "shape mismatch: LoRA is [%d,%d], model has a vector [%d]", out, in, t->out[j]); return buf; }
    if (out != t->out[j] || in != t->in[j]) {
        if (t->in[j]) snprintf(buf, (size_t)bs, "shape mismatch: LoRA changes [%d,%d], model has [%d,%d]", m->fused_qkv ? 3 * out : out, in,
                               m->fused_qkv ? 3 * t->out[j] : t->out[j], t->in[j]);
        else snprintf(buf, (size_t)bs, "shape mismatch: LoRA changes [%d], model has [%d]", out, t->out[j]);
        return buf;
    }
    return NULL;
}

/* ------------------------------------------------------------------ inspect */

typedef struct {
    int adapters[ZL_AD_COUNT + 1]; /* +1: dora */
    int rank, rank_min, rank_max, nrank;
    int alpha_set, alpha_uniform;
    float alpha;
    int blocks[3][1000]; /* layers, noise_refiner, context_refiner */
    int nblk[3];
    char targets[32][48];
    int ntargets;
    char top[16][64];
    int ntop;
} summary;

static const char *blk_names[3] = {"layers", "noise_refiner", "context_refiner"};

static void summarise(const zl_lora *l, summary *s) {
    memset(s, 0, sizeof *s);
    s->alpha_uniform = 1;
    int hist_r[4097] = {0};
    for (int i = 0; i < l->n; i++) {
        const zl_lora_module *m = &l->m[i];
        s->adapters[m->kind]++;
        if (m->dora) s->adapters[ZL_AD_COUNT]++;
        if ((m->kind == ZL_AD_LORA || m->kind == ZL_AD_LOHA || (m->kind == ZL_AD_LOKR && m->rank)) && m->rank > 0) {
            if (!s->nrank || m->rank < s->rank_min) s->rank_min = m->rank;
            if (m->rank > s->rank_max) s->rank_max = m->rank;
            s->nrank++;
            if (m->rank <= 4096) hist_r[m->rank]++;
        }
        if (m->has_alpha) {
            if (s->alpha_set && m->alpha != s->alpha) s->alpha_uniform = 0;
            s->alpha = m->alpha;
            s->alpha_set++;
        }
        if (!m->target) continue;
        const char *t = m->target, *rest = NULL;
        for (int b = 0; b < 3; b++) {
            size_t n = strlen(blk_names[b]);
            if (strncmp(t, blk_names[b], n) == 0 && t[n] == '.') {
                int idx = atoi(t + n + 1);
                int seen = 0;
                for (int k = 0; k < s->nblk[b]; k++) seen |= s->blocks[b][k] == idx;
                if (!seen && s->nblk[b] < 1000) s->blocks[b][s->nblk[b]++] = idx;
                rest = strchr(t + n + 1, '.');
                if (rest) rest++;
            }
        }
        if (rest) {
            const char *short_name = rest;
            if (zl_starts_with(rest, "attention.")) short_name = rest + strlen("attention.");
            else if (zl_starts_with(rest, "feed_forward.")) short_name = rest + strlen("feed_forward.");
            int seen = 0;
            for (int k = 0; k < s->ntargets; k++) seen |= strcmp(s->targets[k], short_name) == 0;
            if (!seen && s->ntargets < 32) snprintf(s->targets[s->ntargets++], 48, "%s", short_name);
        } else {
            int seen = 0;
            for (int k = 0; k < s->ntop; k++) seen |= strcmp(s->top[k], t) == 0;
            if (!seen && s->ntop < 16) snprintf(s->top[s->ntop++], 64, "%s", t);
        }
    }
    int best = 0;
    for (int r = 1; r <= 4096; r++) if (hist_r[r] > hist_r[best]) best = r;
    s->rank = best;
    for (int b = 0; b < 3; b++) /* sort block indices */
        for (int i = 1; i < s->nblk[b]; i++)
            for (int j = i; j > 0 && s->blocks[b][j - 1] > s->blocks[b][j]; j--) {
                int x = s->blocks[b][j]; s->blocks[b][j] = s->blocks[b][j - 1]; s->blocks[b][j - 1] = x;
            }
}

static const char *target_order[] = {"to_q", "to_k", "to_v", "qkv", "to_out.0", "norm_q", "norm_k", "w1", "w2", "w3",
                                     "adaLN_modulation.0", "attention_norm1", "attention_norm2", "ffn_norm1", "ffn_norm2", NULL};
static int target_rank(const char *t) {
    for (int i = 0; target_order[i]; i++) if (strcmp(target_order[i], t) == 0) return i;
    return 100;
}
static void sort_targets(summary *s) {
    for (int i = 1; i < s->ntargets; i++)
        for (int j = i; j > 0 && target_rank(s->targets[j - 1]) > target_rank(s->targets[j]); j--) {
            char x[48];
            memcpy(x, s->targets[j], 48); memcpy(s->targets[j], s->targets[j - 1], 48); memcpy(s->targets[j - 1], x, 48);
        }
}

char *zl_lora_inspect_json(const zl_lora *l) {
    summary s;
    summarise(l, &s);
    sort_targets(&s);
    zl_buf b = {0};
    zl_buf_puts(&b, "{\"file\":");
    zl_buf_json_string(&b, l->path);
    zl_buf_printf(&b, ",\"family\":\"%s\",\"format\":\"%s\",\"qkv\":\"%s\",\"adapters\":{", l->family,
                  zl_format_name(l->format), l->qkv);
    int first = 1;
    for (int a = 0; a <= ZL_AD_COUNT; a++) {
        if (!s.adapters[a]) continue;
        zl_buf_printf(&b, "%s\"%s\":%d", first ? "" : ",", a == ZL_AD_COUNT ? "dora" : zl_adapter_name((zl_adapter)a), s.adapters[a]);
        first = 0;
    }
    zl_buf_printf(&b, "},\"modules\":%d,\"tensors\":%d,", l->n, l->nkeys);
    if (s.nrank) zl_buf_printf(&b, "\"rank\":%d,\"rank_min\":%d,\"rank_max\":%d,", s.rank, s.rank_min, s.rank_max);
    else zl_buf_puts(&b, "\"rank\":null,");
    if (s.alpha_set && s.alpha_uniform) zl_buf_printf(&b, "\"alpha\":%.9g,", (double)s.alpha);
    else zl_buf_puts(&b, "\"alpha\":null,");
    if (s.alpha_set && s.alpha_uniform && s.nrank && s.rank_min == s.rank_max)
        zl_buf_printf(&b, "\"scale\":%.9g,", s.alpha != 0 ? (double)s.alpha / s.rank : 1.0);
    else if (!s.alpha_set) zl_buf_puts(&b, "\"scale\":1,");
    else zl_buf_puts(&b, "\"scale\":null,");
    zl_buf_printf(&b, "\"dtype\":\"%s\",\"blocks\":{", zl_dtype_name(l->dtype));
    for (int k = 0; k < 3; k++) {
        zl_buf_printf(&b, "%s\"%s\":[", k ? "," : "", blk_names[k]);
        for (int i = 0; i < s.nblk[k]; i++) zl_buf_printf(&b, "%s%d", i ? "," : "", s.blocks[k][i]);
        zl_buf_puts(&b, "]");
    }
    zl_buf_puts(&b, ",\"other\":[");
    for (int i = 0; i < s.ntop; i++) { if (i) zl_buf_puts(&b, ","); zl_buf_json_string(&b, s.top[i]); }
    zl_buf_puts(&b, "]},\"targets\":[");
    for (int i = 0; i < s.ntargets; i++) { if (i) zl_buf_puts(&b, ","); zl_buf_json_string(&b, s.targets[i]); }
    zl_buf_puts(&b, "],\"unknown_modules\":[");
    int nu = 0;
    for (int i = 0; i < l->n; i++)
        if (!l->m[i].target && nu < 50) { if (nu++) zl_buf_puts(&b, ","); zl_buf_json_string(&b, l->m[i].key); }
    zl_buf_puts(&b, "],\"metadata\":{");
    for (int i = 0; i < l->nmeta; i++) {
        if (i) zl_buf_puts(&b, ",");
        zl_buf_json_string(&b, l->mkeys[i]);
        zl_buf_puts(&b, ":");
        zl_buf_json_string(&b, l->mvals[i]);
    }
    zl_buf_puts(&b, "}");
    if (l->reason) { zl_buf_puts(&b, ",\"reason\":"); zl_buf_json_string(&b, l->reason); }
    zl_buf_puts(&b, "}");
    return b.s;
}

static void list_blocks(zl_buf *b, const int *idx, int n) {
    /* ranges: 0-29 */
    for (int i = 0; i < n;) {
        int j = i;
        while (j + 1 < n && idx[j + 1] == idx[j] + 1) j++;
        zl_buf_printf(b, "%s%d", i ? "," : "", idx[i]);
        if (j > i) zl_buf_printf(b, "-%d", idx[j]);
        i = j + 1;
    }
}

char *zl_lora_inspect_text(const zl_lora *l) {
    summary s;
    summarise(l, &s);
    sort_targets(&s);
    zl_buf b = {0};
    zl_buf_printf(&b, "file:      %s\n", l->path);
    zl_buf_printf(&b, "family:    %s%s%s\n", l->family, l->reason ? " — " : "", l->reason ? l->reason : "");
    zl_buf_printf(&b, "format:    %s (qkv %s), %d tensors, %s\n", zl_format_name(l->format), l->qkv, l->nkeys, zl_dtype_name(l->dtype));
    zl_buf_puts(&b, "adapters:  ");
    int first = 1;
    for (int a = 0; a <= ZL_AD_COUNT; a++) {
        if (!s.adapters[a]) continue;
        zl_buf_printf(&b, "%s%d %s", first ? "" : ", ", s.adapters[a], a == ZL_AD_COUNT ? "with DoRA" : zl_adapter_name((zl_adapter)a));
        first = 0;
    }
    zl_buf_puts(&b, "\n");
    if (s.nrank) {
        if (s.rank_min == s.rank_max) zl_buf_printf(&b, "rank:      %d", s.rank);
        else zl_buf_printf(&b, "rank:      %d (from %d to %d)", s.rank, s.rank_min, s.rank_max);
        if (s.alpha_set && s.alpha_uniform) zl_buf_printf(&b, ", alpha %g (scale %g)", (double)s.alpha, s.rank_min == s.rank_max && s.alpha != 0 ? (double)s.alpha / s.rank : 1.0);
        else if (s.alpha_set) zl_buf_puts(&b, ", alpha varies by module");
        else zl_buf_puts(&b, ", no alpha (scale 1)");
        zl_buf_puts(&b, "\n");
    }
    for (int k = 0; k < 3; k++) {
        if (!s.nblk[k]) continue;
        zl_buf_printf(&b, "%-10s %d block%s: ", blk_names[k], s.nblk[k], s.nblk[k] == 1 ? "" : "s");
        list_blocks(&b, s.blocks[k], s.nblk[k]);
        zl_buf_puts(&b, "\n");
    }
    if (s.ntargets) {
        zl_buf_puts(&b, "targets:   ");
        for (int i = 0; i < s.ntargets; i++) zl_buf_printf(&b, "%s%s", i ? ", " : "", s.targets[i]);
        zl_buf_puts(&b, "\n");
    }
    if (s.ntop) {
        zl_buf_puts(&b, "other:     ");
        for (int i = 0; i < s.ntop; i++) zl_buf_printf(&b, "%s%s", i ? ", " : "", s.top[i]);
        zl_buf_puts(&b, "\n");
    }
    int nu = 0;
    for (int i = 0; i < l->n; i++) nu += !l->m[i].target;
    if (nu && strcmp(l->family, "z-image") == 0) zl_buf_printf(&b, "unknown:   %d module(s) with no Z-Image name (see `zlora lora check`)\n", nu);
    if (l->nmeta) {
        zl_buf_printf(&b, "metadata:  %d key(s)\n", l->nmeta);
        for (int i = 0; i < l->nmeta; i++) {
            const char *v = l->mvals[i];
            size_t n = strlen(v);
            zl_buf_printf(&b, "  %s = %.*s%s\n", l->mkeys[i], (int)(n > 120 ? 120 : n), v, n > 120 ? "…" : "");
        }
    }
    return b.s;
}
