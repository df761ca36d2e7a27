/* lora_math.c — what a LoRA module does to a weight: scale rules, ΔW, DoRA, and the exact
 * re-expressions between split and fused qkv. See lora.h. */
#include "lora.h"
#include "lowrank.h"
#include "../base/base.h"

#include <cblas.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int zl_lora_lossy_rank = 64;

#define HASP(m, part) ((m)->p[part].data != NULL)

static int64_t rows(const zl_mat *m) { return m->shape[0]; }
static int64_t cols(const zl_mat *m) { return m->ndim >= 2 ? m->shape[1] : 1; }

float zl_lora_module_scale(const zl_lora_module *m) {
    switch (m->kind) {
    case ZL_AD_LORA:
        /* kohya convention: alpha 0 (or absent) means alpha = rank */
        return m->has_alpha && m->alpha != 0 && m->rank ? m->alpha / (float)m->rank : 1.0f;
    case ZL_AD_LOHA:
        return m->has_alpha && m->alpha != 0 ? m->alpha / (float)rows(&m->p[ZL_P_W1B]) : 1.0f;
    case ZL_AD_LOKR: {
        /* alpha/dim only when a factor is decomposed (w2_b's rows take precedence, as in ComfyUI) */
        int64_t dim = HASP(m, ZL_P_K2B) ? rows(&m->p[ZL_P_K2B]) : HASP(m, ZL_P_K1B) ? rows(&m->p[ZL_P_K1B]) : 0;
        return dim && m->has_alpha && m->alpha != 0 ? m->alpha / (float)dim : 1.0f;
    }
    default:
        return 1.0f;
    }
}

/* C [m,n] = alpha · A [m,k] @ B [k,n] */
static void mm(float *c, const float *a, const float *b, int m, int k, int n, float alpha) {
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, m, n, k, alpha, a, k, b, n, 0.0f, c, n);
}

/* The full first (or second) LoKr factor, materialised if decomposed. Caller frees. */
static float *lokr_factor(const zl_lora_module *m, int second, int64_t *r, int64_t *c) {
    int full = second ? ZL_P_K2 : ZL_P_K1, a = second ? ZL_P_K2A : ZL_P_K1A, b = second ? ZL_P_K2B : ZL_P_K1B;
    if (HASP(m, full)) {
        *r = rows(&m->p[full]); *c = cols(&m->p[full]);
        float *f = zl_xmalloc(sizeof(float) * (size_t)(*r * *c));
        memcpy(f, m->p[full].data, sizeof(float) * (size_t)(*r * *c));
        return f;
    }
    *r = rows(&m->p[a]); *c = cols(&m->p[b]);
    float *f = zl_xmalloc(sizeof(float) * (size_t)(*r * *c));
    mm(f, m->p[a].data, m->p[b].data, (int)*r, (int)cols(&m->p[a]), (int)*c, 1.0f);
    return f;
}

int zl_lora_delta(const zl_lora_module *m, float strength, float *dw) {
    if (m->dora) return zl_err("module %s is DoRA: its change depends on the base weight", m->key);
    float s = strength * zl_lora_module_scale(m);
    size_t n = (size_t)m->out * (size_t)(m->in > 0 ? m->in : 1);
    switch (m->kind) {
    case ZL_AD_LORA:
        mm(dw, m->p[ZL_P_UP].data, m->p[ZL_P_DOWN].data, m->out, m->rank, m->in, s);
        return 0;
    case ZL_AD_LOHA: {
        float *t = zl_try_malloc(sizeof(float) * n);
        if (!t) return -1;
        mm(dw, m->p[ZL_P_W1A].data, m->p[ZL_P_W1B].data, m->out, (int)cols(&m->p[ZL_P_W1A]), m->in, s);
        mm(t, m->p[ZL_P_W2A].data, m->p[ZL_P_W2B].data, m->out, (int)cols(&m->p[ZL_P_W2A]), m->in, 1.0f);
        for (size_t i = 0; i < n; i++) dw[i] *= t[i];
        free(t);
        return 0;
    }
    case ZL_AD_LOKR: {
        int64_t a, c, b, d;
        float *w1 = lokr_factor(m, 0, &a, &c), *w2 = lokr_factor(m, 1, &b, &d);
        for (int64_t i = 0; i < a; i++)
            for (int64_t j = 0; j < c; j++) {
                float v = s * w1[i * c + j];
                for (int64_t k = 0; k < b; k++) {
                    float *row = dw + (size_t)((i * b + k) * (c * d) + j * d);
                    const float *w2r = w2 + k * d;
                    for (int64_t l = 0; l < d; l++) row[l] = v * w2r[l];
                }
            }
        free(w1); free(w2);
        return 0;
    }
    case ZL_AD_DIFF:
        if (HASP(m, ZL_P_DIFF)) for (size_t i = 0; i < n; i++) dw[i] = s * m->p[ZL_P_DIFF].data[i];
        else memset(dw, 0, sizeof(float) * n);
        return 0;
    default:
        return zl_err("module %s uses an unsupported adapter (%s)", m->key, m->unsupported ? m->unsupported : "?");
    }
}

int zl_lora_apply_dora(const zl_lora_module *m, float strength, float *w) {
    if (!m->dora || m->in <= 0) return zl_err("module %s is not a DoRA linear module", m->key);
    zl_lora_module plain = *m;
    plain.dora = 0;
    size_t n = (size_t)m->out * (size_t)m->in;
    float *wc = zl_try_malloc(sizeof(float) * n);
    if (!wc) return -1;
    if (zl_lora_delta(&plain, 1.0f, wc)) { free(wc); return -1; }
    for (size_t i = 0; i < n; i++) wc[i] += w[i];
    const float *mag = m->p[ZL_P_DORA].data;
    int64_t nm = 1;
    for (int i = 0; i < m->p[ZL_P_DORA].ndim; i++) nm *= m->p[ZL_P_DORA].shape[i];
    const float eps = 1.1920929e-07f;
    if (nm == m->out) { /* per output row */
        for (int r = 0; r < m->out; r++) {
            double ss = 0;
            for (int c = 0; c < m->in; c++) ss += (double)wc[(size_t)r * m->in + c] * wc[(size_t)r * m->in + c];
            float f = mag[r] / ((float)sqrt(ss) + eps);
            for (int c = 0; c < m->in; c++) wc[(size_t)r * m->in + c] *= f;
        }
    } else { /* per input column */
        for (int c = 0; c < m->in; c++) {
            double ss = 0;
            for (int r = 0; r < m->out; r++) ss += (double)wc[(size_t)r * m->in + c] * wc[(size_t)r * m->in + c];
            float f = mag[c] / ((float)sqrt(ss) + eps);
            for (int r = 0; r < m->out; r++) wc[(size_t)r * m->in + c] *= f;
        }
    }
    for (size_t i = 0; i < n; i++) w[i] += strength * (wc[i] - w[i]);
    free(wc);
    return 0;
}

/* ------------------------------------------------------------------ helpers for building modules */

static void mat_set(zl_mat *m, float *data, int64_t r, int64_t c) {
    free(m->data);
    m->data = data;
    m->ndim = 2;
    m->shape[0] = r; m->shape[1] = c; m->shape[2] = m->shape[3] = 0;
}
static void mat_set1(zl_mat *m, float *data, int64_t n) {
    free(m->data);
    m->data = data;
    m->ndim = 1;
    m->shape[0] = n; m->shape[1] = m->shape[2] = m->shape[3] = 0;
}
static float *fdup(const float *s, size_t n) {
    float *d = zl_xmalloc(sizeof(float) * (n ? n : 1));
    memcpy(d, s, sizeof(float) * n);
    return d;
}
static void module_clear(zl_lora_module *m) {
    free(m->key); free(m->target); free(m->unsupported);
    for (int p = 0; p < ZL_P_COUNT; p++) free(m->p[p].data);
    memset(m, 0, sizeof *m);
}
static size_t matn(const zl_mat *m) {
    size_t n = 1;
    for (int i = 0; i < m->ndim; i++) n *= (size_t)m->shape[i];
    return m->ndim ? n : 0;
}
/* Deep copy. */
static void module_copy(zl_lora_module *d, const zl_lora_module *s) {
    *d = *s;
    d->key = zl_xstrdup(s->key);
    d->target = s->target ? zl_xstrdup(s->target) : NULL;
    d->unsupported = s->unsupported ? zl_xstrdup(s->unsupported) : NULL;
    for (int p = 0; p < ZL_P_COUNT; p++)
        if (s->p[p].data) d->p[p].data = fdup(s->p[p].data, matn(&s->p[p]));
}

/* Multiplies the module's change by f exactly (folds into one factor) and drops alpha (scale 1). */
static void fold_scale(zl_lora_module *m, float f) {
    f *= zl_lora_module_scale(m);
    m->has_alpha = 0;
    m->alpha = 0;
    int part = -1;
    switch (m->kind) {
    case ZL_AD_LORA: part = ZL_P_UP; break;
    case ZL_AD_LOHA: part = ZL_P_W1A; break;
    case ZL_AD_LOKR: part = HASP(m, ZL_P_K1) ? ZL_P_K1 : ZL_P_K1A; break;
    case ZL_AD_DIFF:
        if (f != 1.0f && HASP(m, ZL_P_DIFF_B)) for (size_t i = 0; i < matn(&m->p[ZL_P_DIFF_B]); i++) m->p[ZL_P_DIFF_B].data[i] *= f;
        part = ZL_P_DIFF;
        break;
    default: return;
    }
    if (f != 1.0f && HASP(m, part))
        for (size_t i = 0; i < matn(&m->p[part]); i++) m->p[part].data[i] *= f;
}

void zl_lora_module_fold(zl_lora_module *m, float f);
void zl_lora_module_fold(zl_lora_module *m, float f) { fold_scale(m, f); }

/* Replaces module m (any linear kind, no DoRA) by a rank-r LoRA approximation. */
static int to_lowrank(zl_lora_module *m, int r, double *energy) {
    int out = m->out, in = m->in;
    float *up = zl_try_calloc((size_t)out * (size_t)r, sizeof(float));
    float *down = zl_try_calloc((size_t)r * (size_t)in, sizeof(float));
    if (!up || !down) { free(up); free(down); return -1; }
    int rc;
    if (m->kind == ZL_AD_LORA) {
        float s = zl_lora_module_scale(m);
        float *u = fdup(m->p[ZL_P_UP].data, (size_t)out * (size_t)m->rank);
        for (size_t i = 0; i < (size_t)out * (size_t)m->rank; i++) u[i] *= s;
        rc = zl_lowrank_factored(u, m->p[ZL_P_DOWN].data, out, m->rank, in, r, up, down, energy);
        free(u);
    } else {
        float *dw = zl_try_malloc(sizeof(float) * (size_t)out * (size_t)in);
        if (!dw) { free(up); free(down); return -1; }
        rc = zl_lora_delta(m, 1.0f, dw);
        if (rc == 0) rc = zl_lowrank_dense(dw, out, in, r, zl_hash64(m->key, strlen(m->key), 0), up, down, energy);
        free(dw);
    }
    if (rc) { free(up); free(down); return zl_err_prefix("module %s", m->key); }
    zl_lora_module nm = {0};
    nm.key = m->key; nm.target = m->target; nm.unsupported = NULL; nm.fused_qkv = m->fused_qkv;
    nm.kind = ZL_AD_LORA; nm.out = out; nm.in = in; nm.rank = r; nm.dtype = m->dtype;
    mat_set(&nm.p[ZL_P_UP], up, out, r);
    mat_set(&nm.p[ZL_P_DOWN], down, r, in);
    m->key = NULL; m->target = NULL;
    module_clear(m);
    *m = nm;
    return 0;
}

/* LoKr as an exact LoRA. With w1 = U1 V1 (rank r1) and w2 = U2 V2 (rank r2), the mixed-product
 * property gives kron(w1, w2) = kron(U1, U2) · kron(V1, V2): a LoRA of rank r1·r2. A full factor is
 * written as w·I or I·w, whichever is narrower. Returns 0 and replaces m, or 1 (m untouched) when the
 * rank would exceed max_rank. */
static int lokr_as_lora(zl_lora_module *m, int max_rank) {
    const float *u[2], *v[2];
    float *own[2] = {NULL, NULL};
    int64_t ur[2], rk[2], vc[2];
    for (int f = 0; f < 2; f++) {
        int full = f ? ZL_P_K2 : ZL_P_K1, pa = f ? ZL_P_K2A : ZL_P_K1A, pb = f ? ZL_P_K2B : ZL_P_K1B;
        if (HASP(m, full)) {
            int64_t r = rows(&m->p[full]), c = cols(&m->p[full]);
            int64_t k = r < c ? r : c;
            float *eye = zl_xcalloc((size_t)(k * k), sizeof(float));
            for (int64_t i = 0; i < k; i++) eye[i * k + i] = 1.0f;
            own[f] = eye;
            if (c <= r) { u[f] = m->p[full].data; v[f] = eye; } /* w · I_c */
            else { u[f] = eye; v[f] = m->p[full].data; }       /* I_r · w */
            ur[f] = r; rk[f] = k; vc[f] = c;
        } else {
            u[f] = m->p[pa].data; v[f] = m->p[pb].data;
            ur[f] = rows(&m->p[pa]); rk[f] = cols(&m->p[pa]); vc[f] = cols(&m->p[pb]);
        }
    }
    int64_t R = rk[0] * rk[1];
    if (R > max_rank) { free(own[0]); free(own[1]); return 1; }
    int64_t out = ur[0] * ur[1], in = vc[0] * vc[1];
    float s = zl_lora_module_scale(m);
    float *up = zl_xmalloc(sizeof(float) * (size_t)(out * R)), *dn = zl_xmalloc(sizeof(float) * (size_t)(R * in));
    for (int64_t i = 0; i < ur[0]; i++)          /* up = kron(U1, U2) */
        for (int64_t k = 0; k < ur[1]; k++)
            for (int64_t a = 0; a < rk[0]; a++)
                for (int64_t b = 0; b < rk[1]; b++)
                    up[(i * ur[1] + k) * R + a * rk[1] + b] = s * u[0][i * rk[0] + a] * u[1][k * rk[1] + b];
    for (int64_t a = 0; a < rk[0]; a++)          /* down = kron(V1, V2) */
        for (int64_t b = 0; b < rk[1]; b++)
            for (int64_t j = 0; j < vc[0]; j++)
                for (int64_t l = 0; l < vc[1]; l++)
                    dn[(a * rk[1] + b) * in + j * vc[1] + l] = v[0][a * vc[0] + j] * v[1][b * vc[1] + l];
    free(own[0]); free(own[1]);
    for (int p = ZL_P_K1; p <= ZL_P_KT2; p++) { free(m->p[p].data); memset(&m->p[p], 0, sizeof m->p[p]); }
    m->kind = ZL_AD_LORA;
    m->rank = (int)R;
    m->has_alpha = 0;
    m->alpha = 0;
    mat_set(&m->p[ZL_P_UP], up, out, R);
    mat_set(&m->p[ZL_P_DOWN], dn, R, in);
    return 0;
}

/* ------------------------------------------------------------------ split / fuse qkv */

static void push_module(zl_lora *l, const zl_lora_module *m) {
    l->m = zl_xrealloc(l->m, sizeof(zl_lora_module) * (size_t)(l->n + 1));
    l->m[l->n++] = *m;
}

static const char *qkv_names[3] = {"to_q", "to_k", "to_v"};

/* Splits fused module f (out = 3d) into three modules appended to dst. */
static int split_one(zl_lora *dst, zl_lora_module *f, int lossy, double *emin) {
    int d = f->out / 3, in = f->in;
    if (f->out % 3) return zl_err("module %s: fused qkv with %d rows is not divisible by 3", f->key, f->out);
    char base[160];
    snprintf(base, sizeof base, "%.*s", (int)(strlen(f->target) - strlen("qkv")), f->target); /* "<blk>.attention." */
    if (f->dora && cols(&f->p[ZL_P_DORA]) * rows(&f->p[ZL_P_DORA]) != f->out)
        return zl_err("module %s: a DoRA magnitude over the columns of fused qkv cannot be split exactly", f->key);
    int lokr_rows_split = 0;
    int64_t a = 0, c = 0;
    if (f->kind == ZL_AD_LOKR) {
        a = HASP(f, ZL_P_K1) ? rows(&f->p[ZL_P_K1]) : rows(&f->p[ZL_P_K1A]);
        lokr_rows_split = a % 3 == 0;
        if (!lokr_rows_split && !lossy)
            return zl_err("module %s: this LoKr's first factor has %lld rows, not divisible by 3, so q/k/v cannot be split exactly (use --lossy for an SVD approximation)", f->key, (long long)a);
    }
    (void)c;
    for (int k = 0; k < 3; k++) {
        zl_lora_module m = {0};
        m.target = zl_xasprintf("%s%s", base, qkv_names[k]);
        m.key = zl_xasprintf("%s[%s]", f->key, qkv_names[k]);
        m.kind = f->kind; m.dtype = f->dtype; m.out = d; m.in = in; m.dora = f->dora;
        m.has_alpha = f->has_alpha; m.alpha = f->alpha;
        float sc = zl_lora_module_scale(f);
        switch (f->kind) {
        case ZL_AD_LORA: {
            /* rows k of up, keep only the columns that are non-zero in this block */
            int R = f->rank;
            const float *up = f->p[ZL_P_UP].data + (size_t)k * d * R;
            int *keep = zl_xmalloc(sizeof(int) * (size_t)R), nk = 0;
            for (int j = 0; j < R; j++) {
                int nz = 0;
                for (int i = 0; i < d && !nz; i++) nz = up[(size_t)i * R + j] != 0.0f;
                if (nz) keep[nk++] = j;
            }
            if (nk == 0) keep[nk++] = 0; /* an all-zero block: keep one (zero) column */
            float *nu = zl_xmalloc(sizeof(float) * (size_t)d * nk), *nd = zl_xmalloc(sizeof(float) * (size_t)nk * in);
            for (int i = 0; i < d; i++)
                for (int j = 0; j < nk; j++) nu[(size_t)i * nk + j] = sc * up[(size_t)i * R + keep[j]];
            for (int j = 0; j < nk; j++) memcpy(nd + (size_t)j * in, f->p[ZL_P_DOWN].data + (size_t)keep[j] * in, sizeof(float) * (size_t)in);
            free(keep);
            mat_set(&m.p[ZL_P_UP], nu, d, nk);
            mat_set(&m.p[ZL_P_DOWN], nd, nk, in);
            m.rank = nk; m.has_alpha = 0;
            break;
        }
        case ZL_AD_LOHA: {
            int64_t r1 = cols(&f->p[ZL_P_W1A]), r2 = cols(&f->p[ZL_P_W2A]);
            float *w1a = fdup(f->p[ZL_P_W1A].data + (size_t)k * d * r1, (size_t)d * r1);
            for (size_t i = 0; i < (size_t)d * r1; i++) w1a[i] *= sc;
            mat_set(&m.p[ZL_P_W1A], w1a, d, r1);
            mat_set(&m.p[ZL_P_W1B], fdup(f->p[ZL_P_W1B].data, matn(&f->p[ZL_P_W1B])), r1, in);
            mat_set(&m.p[ZL_P_W2A], fdup(f->p[ZL_P_W2A].data + (size_t)k * d * r2, (size_t)d * r2), d, r2);
            mat_set(&m.p[ZL_P_W2B], fdup(f->p[ZL_P_W2B].data, matn(&f->p[ZL_P_W2B])), r2, in);
            m.rank = (int)r1; m.has_alpha = 0;
            break;
        }
        case ZL_AD_LOKR:
            if (lokr_rows_split) {
                int full = HASP(f, ZL_P_K1);
                const zl_mat *w = full ? &f->p[ZL_P_K1] : &f->p[ZL_P_K1A];
                int64_t ar = rows(w) / 3, wc = cols(w);
                float *part = fdup(w->data + (size_t)(k * ar * wc), (size_t)(ar * wc));
                for (size_t i = 0; i < (size_t)(ar * wc); i++) part[i] *= sc;
                mat_set(&m.p[full ? ZL_P_K1 : ZL_P_K1A], part, ar, wc);
                if (!full) mat_set(&m.p[ZL_P_K1B], fdup(f->p[ZL_P_K1B].data, matn(&f->p[ZL_P_K1B])), rows(&f->p[ZL_P_K1B]), cols(&f->p[ZL_P_K1B]));
                for (int p = ZL_P_K2; p <= ZL_P_K2B; p++)
                    if (HASP(f, p)) mat_set(&m.p[p], fdup(f->p[p].data, matn(&f->p[p])), rows(&f->p[p]), cols(&f->p[p]));
                m.has_alpha = 0; m.rank = f->rank;
            } else {
                /* lossy: materialise the block's rows and take a low-rank approximation */
                float *dw = zl_try_malloc(sizeof(float) * (size_t)f->out * in);
                if (!dw || zl_lora_delta(f, 1.0f, dw)) { free(dw); module_clear(&m); return -1; }
                int r = zl_lora_lossy_rank;
                float *up = zl_xcalloc((size_t)d * r, sizeof(float)), *dn = zl_xcalloc((size_t)r * in, sizeof(float));
                double e;
                int rc = zl_lowrank_dense(dw + (size_t)k * d * in, d, in, r, 7 + (uint64_t)k, up, dn, &e);
                free(dw);
                if (rc) { free(up); free(dn); module_clear(&m); return -1; }
                if (e < *emin) *emin = e;
                m.kind = ZL_AD_LORA; m.rank = r; m.has_alpha = 0;
                mat_set(&m.p[ZL_P_UP], up, d, r);
                mat_set(&m.p[ZL_P_DOWN], dn, r, in);
            }
            break;
        case ZL_AD_DIFF:
            if (HASP(f, ZL_P_DIFF)) mat_set(&m.p[ZL_P_DIFF], fdup(f->p[ZL_P_DIFF].data + (size_t)k * d * in, (size_t)d * in), d, in);
            if (HASP(f, ZL_P_DIFF_B)) mat_set1(&m.p[ZL_P_DIFF_B], fdup(f->p[ZL_P_DIFF_B].data + (size_t)k * d, (size_t)d), d);
            break;
        default:
            module_clear(&m);
            return zl_err("module %s: unsupported adapter cannot be split", f->key);
        }
        if (f->dora) mat_set1(&m.p[ZL_P_DORA], fdup(f->p[ZL_P_DORA].data + (size_t)k * d, (size_t)d), d);
        push_module(dst, &m);
    }
    return 0;
}

int zl_lora_split_qkv(zl_lora *l, int lossy, double *energy_min) {
    double emin = 1.0;
    zl_lora tmp = {0};
    for (int i = 0; i < l->n; i++) {
        zl_lora_module *m = &l->m[i];
        if (m->fused_qkv && m->kind != ZL_AD_UNSUPPORTED) {
            if (split_one(&tmp, m, lossy, &emin)) {
                for (int j = 0; j < tmp.n; j++) module_clear(&tmp.m[j]);
                free(tmp.m);
                return -1;
            }
        } else {
            zl_lora_module c;
            module_copy(&c, m);
            push_module(&tmp, &c);
        }
    }
    for (int i = 0; i < l->n; i++) module_clear(&l->m[i]);
    free(l->m);
    l->m = tmp.m;
    l->n = tmp.n;
    if (energy_min) *energy_min = emin;
    int split = 0;
    for (int i = 0; i < l->n; i++) if (l->m[i].target && strstr(l->m[i].target, ".attention.to_")) split = 1;
    if (split && strcmp(l->qkv, "fused") == 0) l->qkv = "split";
    return 0;
}

static int find_target(const zl_lora *l, const char *t) {
    for (int i = 0; i < l->n; i++)
        if (l->m[i].target && strcmp(l->m[i].target, t) == 0) return i;
    return -1;
}

/* Fuses the (up to) three modules idx[k] (-1 when absent) of one block into *f. */
static int fuse_one(zl_lora_module *f, zl_lora *l, const int idx[3], const char *fused_target, int lossy, double *emin) {
    zl_lora_module *g[3] = {0};
    int d = 0, in = 0, kind = -1, mixed = 0, dora = 0, ndora = 0, n = 0;
    for (int k = 0; k < 3; k++) {
        if (idx[k] < 0) continue;
        g[k] = &l->m[idx[k]];
        n++;
        if (g[k]->in <= 0) return zl_err("module %s is not a linear adapter", g[k]->key);
        if (d && (g[k]->out != d || g[k]->in != in)) return zl_err("modules of %s disagree in shape", fused_target);
        d = g[k]->out; in = g[k]->in;
        if (kind >= 0 && kind != (int)g[k]->kind) mixed = 1;
        kind = g[k]->kind;
        if (g[k]->dora) { dora = 1; ndora++; }
    }
    memset(f, 0, sizeof *f);
    f->target = zl_xstrdup(fused_target);
    f->key = zl_xstrdup(fused_target);
    f->fused_qkv = 1;
    f->out = 3 * d; f->in = in;
    f->dtype = g[0] ? g[0]->dtype : g[1] ? g[1]->dtype : g[2]->dtype;
    if (dora) {
        if (ndora != n || n != 3) { module_clear(f); return zl_err("%s: DoRA on only some of q/k/v cannot be fused", fused_target); }
        for (int k = 0; k < 3; k++)
            if (matn(&g[k]->p[ZL_P_DORA]) != (size_t)d || (g[k]->p[ZL_P_DORA].ndim == 2 && rows(&g[k]->p[ZL_P_DORA]) == 1 && d != 1)) {
                module_clear(f);
                return zl_err("%s: column-wise DoRA magnitudes cannot be fused exactly", fused_target);
            }
        float *mag = zl_xmalloc(sizeof(float) * 3 * (size_t)d);
        for (int k = 0; k < 3; k++) memcpy(mag + (size_t)k * d, g[k]->p[ZL_P_DORA].data, sizeof(float) * (size_t)d);
        mat_set1(&f->p[ZL_P_DORA], mag, 3 * (int64_t)d);
        f->dora = 1;
    }
    if (kind == ZL_AD_LOKR || mixed) {
        /* LoKr members whose Kronecker rank is small become exact LoRAs; then all-LoRA fuses exactly */
        int all_lora = 1;
        for (int k = 0; k < 3; k++) {
            if (!g[k]) continue;
            if (g[k]->kind == ZL_AD_LOKR && !g[k]->dora) lokr_as_lora(g[k], 1024);
            if (g[k]->kind != ZL_AD_LORA) all_lora = 0;
        }
        if (all_lora) { mixed = 0; kind = ZL_AD_LORA; }
    }
    if (!mixed && kind == ZL_AD_LORA) {
        int R = 0;
        for (int k = 0; k < 3; k++) if (g[k]) R += g[k]->rank;
        float *up = zl_xcalloc((size_t)3 * d * R, sizeof(float)), *dn = zl_xmalloc(sizeof(float) * (size_t)R * in);
        int off = 0;
        for (int k = 0; k < 3; k++) {
            if (!g[k]) continue;
            int r = g[k]->rank;
            float s = zl_lora_module_scale(g[k]);
            for (int i = 0; i < d; i++)
                for (int j = 0; j < r; j++) up[((size_t)k * d + i) * R + off + j] = s * g[k]->p[ZL_P_UP].data[(size_t)i * r + j];
            memcpy(dn + (size_t)off * in, g[k]->p[ZL_P_DOWN].data, sizeof(float) * (size_t)r * in);
            off += r;
        }
        f->kind = ZL_AD_LORA; f->rank = R;
        mat_set(&f->p[ZL_P_UP], up, 3 * (int64_t)d, R);
        mat_set(&f->p[ZL_P_DOWN], dn, R, in);
        return 0;
    }
    if (!mixed && kind == ZL_AD_LOHA) {
        int R1 = 0, R2 = 0;
        for (int k = 0; k < 3; k++) if (g[k]) { R1 += (int)cols(&g[k]->p[ZL_P_W1A]); R2 += (int)cols(&g[k]->p[ZL_P_W2A]); }
        float *w1a = zl_xcalloc((size_t)3 * d * R1, sizeof(float)), *w1b = zl_xmalloc(sizeof(float) * (size_t)R1 * in);
        float *w2a = zl_xcalloc((size_t)3 * d * R2, sizeof(float)), *w2b = zl_xmalloc(sizeof(float) * (size_t)R2 * in);
        int o1 = 0, o2 = 0;
        for (int k = 0; k < 3; k++) {
            if (!g[k]) continue;
            int r1 = (int)cols(&g[k]->p[ZL_P_W1A]), r2 = (int)cols(&g[k]->p[ZL_P_W2A]);
            float s = zl_lora_module_scale(g[k]);
            for (int i = 0; i < d; i++) {
                for (int j = 0; j < r1; j++) w1a[((size_t)k * d + i) * R1 + o1 + j] = s * g[k]->p[ZL_P_W1A].data[(size_t)i * r1 + j];
                for (int j = 0; j < r2; j++) w2a[((size_t)k * d + i) * R2 + o2 + j] = g[k]->p[ZL_P_W2A].data[(size_t)i * r2 + j];
            }
            memcpy(w1b + (size_t)o1 * in, g[k]->p[ZL_P_W1B].data, sizeof(float) * (size_t)r1 * in);
            memcpy(w2b + (size_t)o2 * in, g[k]->p[ZL_P_W2B].data, sizeof(float) * (size_t)r2 * in);
            o1 += r1; o2 += r2;
        }
        f->kind = ZL_AD_LOHA; f->rank = R1;
        mat_set(&f->p[ZL_P_W1A], w1a, 3 * (int64_t)d, R1);
        mat_set(&f->p[ZL_P_W1B], w1b, R1, in);
        mat_set(&f->p[ZL_P_W2A], w2a, 3 * (int64_t)d, R2);
        mat_set(&f->p[ZL_P_W2B], w2b, R2, in);
        return 0;
    }
    if (!mixed && kind == ZL_AD_DIFF) {
        float *df = zl_xcalloc((size_t)3 * d * in, sizeof(float));
        float *db = NULL;
        for (int k = 0; k < 3; k++) {
            if (!g[k]) continue;
            if (HASP(g[k], ZL_P_DIFF)) memcpy(df + (size_t)k * d * in, g[k]->p[ZL_P_DIFF].data, sizeof(float) * (size_t)d * in);
            if (HASP(g[k], ZL_P_DIFF_B)) {
                if (!db) db = zl_xcalloc((size_t)3 * d, sizeof(float));
                memcpy(db + (size_t)k * d, g[k]->p[ZL_P_DIFF_B].data, sizeof(float) * (size_t)d);
            }
        }
        f->kind = ZL_AD_DIFF;
        mat_set(&f->p[ZL_P_DIFF], df, 3 * (int64_t)d, in);
        if (db) mat_set1(&f->p[ZL_P_DIFF_B], db, 3 * (int64_t)d);
        return 0;
    }
    /* LoKr or mixed types: no exact fused form */
    if (!lossy || dora) {
        module_clear(f);
        return zl_err("%s: %s cannot be fused into qkv exactly (the Kronecker structure does not survive "
                      "concatenation, and its rank as a LoRA is above 1024); pass --lossy to approximate it by SVD",
                      fused_target, mixed ? "q/k/v with different adapter types" : "a full-factor LoKr");
    }
    int r = zl_lora_lossy_rank;
    float *up = zl_xcalloc((size_t)3 * d * r, sizeof(float)), *dn = zl_xcalloc((size_t)r * in, sizeof(float));
    float *dw = zl_try_calloc((size_t)3 * d * in, sizeof(float));
    if (!dw) { free(up); free(dn); module_clear(f); return -1; }
    for (int k = 0; k < 3; k++)
        if (g[k] && zl_lora_delta(g[k], 1.0f, dw + (size_t)k * d * in)) { free(up); free(dn); free(dw); module_clear(f); return -1; }
    double e;
    int rc = zl_lowrank_dense(dw, 3 * d, in, r, 11, up, dn, &e);
    free(dw);
    if (rc) { free(up); free(dn); module_clear(f); return -1; }
    if (e < *emin) *emin = e;
    f->kind = ZL_AD_LORA; f->rank = r;
    mat_set(&f->p[ZL_P_UP], up, 3 * (int64_t)d, r);
    mat_set(&f->p[ZL_P_DOWN], dn, r, in);
    return 1; /* lossy */
}

int zl_lora_fuse_qkv_n(zl_lora *l, int lossy, double *energy_min, int *nlossy);
int zl_lora_fuse_qkv_n(zl_lora *l, int lossy, double *energy_min, int *nlossy) {
    double emin = 1.0;
    int nl = 0;
    zl_lora tmp = {0};
    char *used = zl_xcalloc((size_t)l->n + 1, 1);
    for (int i = 0; i < l->n; i++) {
        if (used[i]) continue;
        zl_lora_module *m = &l->m[i];
        const char *t = m->target;
        const char *at = t ? strstr(t, ".attention.to_") : NULL;
        int which = -1;
        if (at && m->kind != ZL_AD_UNSUPPORTED)
            for (int k = 0; k < 3; k++) if (strcmp(at + strlen(".attention."), qkv_names[k]) == 0) which = k;
        if (which < 0) {
            zl_lora_module c;
            module_copy(&c, m);
            push_module(&tmp, &c);
            used[i] = 1;
            continue;
        }
        char blk[128], name[160];
        snprintf(blk, sizeof blk, "%.*s", (int)(at - t), t);
        int idx[3];
        for (int k = 0; k < 3; k++) {
            snprintf(name, sizeof name, "%s.attention.%s", blk, qkv_names[k]);
            idx[k] = find_target(l, name);
            if (idx[k] >= 0) used[idx[k]] = 1;
        }
        snprintf(name, sizeof name, "%s.attention.qkv", blk);
        zl_lora_module f;
        int rc = fuse_one(&f, l, idx, name, lossy, &emin);
        if (rc < 0) {
            for (int j = 0; j < tmp.n; j++) module_clear(&tmp.m[j]);
            free(tmp.m); free(used);
            return -1;
        }
        nl += rc;
        push_module(&tmp, &f);
    }
    free(used);
    for (int i = 0; i < l->n; i++) module_clear(&l->m[i]);
    free(l->m);
    l->m = tmp.m;
    l->n = tmp.n;
    if (energy_min) *energy_min = emin;
    if (nlossy) *nlossy = nl;
    for (int i = 0; i < l->n; i++) if (l->m[i].fused_qkv) { l->qkv = "fused"; break; }
    return 0;
}

int zl_lora_fuse_qkv(zl_lora *l, int lossy, double *energy_min) { return zl_lora_fuse_qkv_n(l, lossy, energy_min, NULL); }

/* ------------------------------------------------------------------ merge and resize */

int zl_lora_merge(zl_lora **in, const float *strengths, int n, zl_lora **out) {
    *out = NULL;
    if (n < 1) return zl_err("merge needs at least one LoRA");
    /* work on split-qkv copies so that targets line up */
    zl_lora *res = zl_xcalloc(1, sizeof *res);
    res->path = zl_xstrdup("merged");
    res->format = in[0]->format;
    res->family = in[0]->family;
    res->qkv = "split";
    res->dtype = in[0]->dtype;
    res->nmeta = in[0]->nmeta;
    res->mkeys = zl_xcalloc((size_t)res->nmeta + 1, sizeof(char *));
    res->mvals = zl_xcalloc((size_t)res->nmeta + 1, sizeof(char *));
    for (int i = 0; i < res->nmeta; i++) { res->mkeys[i] = zl_xstrdup(in[0]->mkeys[i]); res->mvals[i] = zl_xstrdup(in[0]->mvals[i]); }
    zl_lora all = {0};
    int *src = NULL;
    for (int f = 0; f < n; f++) {
        if (strcmp(in[f]->family, in[0]->family) != 0) {
            zl_lora_free(res);
            for (int j = 0; j < all.n; j++) module_clear(&all.m[j]);
            free(all.m); free(src);
            return zl_err("cannot merge a %s LoRA (%s) with a %s LoRA (%s)", in[0]->family, in[0]->path, in[f]->family, in[f]->path);
        }
        zl_lora tmp = {0};
        tmp.m = zl_xcalloc((size_t)in[f]->n + 1, sizeof(zl_lora_module));
        for (int i = 0; i < in[f]->n; i++) module_copy(&tmp.m[i], &in[f]->m[i]);
        tmp.n = in[f]->n;
        tmp.qkv = in[f]->qkv;
        if (zl_lora_split_qkv(&tmp, 0, NULL)) {
            zl_err_prefix("%s", in[f]->path);
            for (int j = 0; j < tmp.n; j++) module_clear(&tmp.m[j]);
            free(tmp.m);
            zl_lora_free(res);
            for (int j = 0; j < all.n; j++) module_clear(&all.m[j]);
            free(all.m); free(src);
            return -1;
        }
        for (int i = 0; i < tmp.n; i++) {
            push_module(&all, &tmp.m[i]);
            src = zl_xrealloc(src, sizeof(int) * (size_t)all.n);
            src[all.n - 1] = f;
        }
        free(tmp.m);
    }
    char *used = zl_xcalloc((size_t)all.n + 1, 1);
    int *grp = zl_xcalloc((size_t)all.n + 1, sizeof(int));
    int rc = 0;
    for (int i = 0; i < all.n && rc == 0; i++) {
        if (used[i]) continue;
        const char *id = all.m[i].target ? all.m[i].target : all.m[i].key;
        int ng = 0;
        for (int j = i; j < all.n; j++) {
            const char *jd = all.m[j].target ? all.m[j].target : all.m[j].key;
            if (!used[j] && strcmp(id, jd) == 0) { grp[ng++] = j; used[j] = 1; }
        }
        int all_lora = 1, any_dora = 0, any_unsup = 0;
        for (int g = 0; g < ng; g++) {
            zl_lora_module *m = &all.m[grp[g]];
            if (m->kind != ZL_AD_LORA) all_lora = 0;
            if (m->dora) any_dora = 1;
            if (m->kind == ZL_AD_UNSUPPORTED) any_unsup = 1;
        }
        if (any_unsup) { rc = zl_err("module %s uses an unsupported adapter type and cannot be merged", id); break; }
        if (any_dora && (ng > 1 || strengths[src[grp[0]]] != 1.0f)) {
            rc = zl_err("module %s is DoRA: it cannot be merged with other adapters or rescaled", id);
            break;
        }
        zl_lora_module nm;
        if (ng == 1) {
            module_copy(&nm, &all.m[grp[0]]);
            if (!nm.dora) fold_scale(&nm, strengths[src[grp[0]]]);
        } else if (all_lora) {
            zl_lora_module *m0 = &all.m[grp[0]];
            int R = 0, out = m0->out, inn = m0->in;
            for (int g = 0; g < ng; g++) {
                if (all.m[grp[g]].out != out || all.m[grp[g]].in != inn) { rc = zl_err("module %s has different shapes in the inputs", id); break; }
                R += all.m[grp[g]].rank;
            }
            if (rc) break;
            float *up = zl_xmalloc(sizeof(float) * (size_t)out * R), *dn = zl_xmalloc(sizeof(float) * (size_t)R * inn);
            int off = 0;
            for (int g = 0; g < ng; g++) {
                zl_lora_module *m = &all.m[grp[g]];
                float s = strengths[src[grp[g]]] * zl_lora_module_scale(m);
                for (int r = 0; r < out; r++)
                    for (int j = 0; j < m->rank; j++) up[(size_t)r * R + off + j] = s * m->p[ZL_P_UP].data[(size_t)r * m->rank + j];
                memcpy(dn + (size_t)off * inn, m->p[ZL_P_DOWN].data, sizeof(float) * (size_t)m->rank * inn);
                off += m->rank;
            }
            memset(&nm, 0, sizeof nm);
            nm.key = zl_xstrdup(m0->key);
            nm.target = m0->target ? zl_xstrdup(m0->target) : NULL;
            nm.kind = ZL_AD_LORA; nm.out = out; nm.in = inn; nm.rank = R; nm.dtype = m0->dtype;
            mat_set(&nm.p[ZL_P_UP], up, out, R);
            mat_set(&nm.p[ZL_P_DOWN], dn, R, inn);
        } else {
            /* different adapter types on one weight: the exact sum as a full diff */
            zl_lora_module *m0 = &all.m[grp[0]];
            int out = m0->out, inn = m0->in > 0 ? m0->in : 1;
            size_t ne = (size_t)out * inn;
            float *acc = zl_try_calloc(ne, sizeof(float)), *t = zl_try_malloc(sizeof(float) * ne);
            float *accb = NULL;
            if (!acc || !t) { free(acc); free(t); rc = -1; break; }
            for (int g = 0; g < ng && rc == 0; g++) {
                zl_lora_module *m = &all.m[grp[g]];
                if (m->out != out || (m->in > 0 ? m->in : 1) != inn) { rc = zl_err("module %s has different shapes in the inputs", id); break; }
                float s = strengths[src[grp[g]]];
                if (zl_lora_delta(m, s, t)) { rc = -1; break; }
                for (size_t k = 0; k < ne; k++) acc[k] += t[k];
                if (m->kind == ZL_AD_DIFF && HASP(m, ZL_P_DIFF_B)) {
                    if (!accb) accb = zl_xcalloc((size_t)out, sizeof(float));
                    for (int k = 0; k < out; k++) accb[k] += s * m->p[ZL_P_DIFF_B].data[k];
                }
            }
            free(t);
            if (rc) { free(acc); free(accb); break; }
            zl_warn("merge: %s combines different adapter types; written as an exact full diff", id);
            memset(&nm, 0, sizeof nm);
            nm.key = zl_xstrdup(m0->key);
            nm.target = m0->target ? zl_xstrdup(m0->target) : NULL;
            nm.kind = ZL_AD_DIFF; nm.out = out; nm.in = m0->in; nm.dtype = m0->dtype;
            if (m0->in > 0) mat_set(&nm.p[ZL_P_DIFF], acc, out, inn); else mat_set1(&nm.p[ZL_P_DIFF], acc, out);
            if (accb) mat_set1(&nm.p[ZL_P_DIFF_B], accb, out);
        }
        push_module(res, &nm);
    }
    free(used);
    free(grp);
    for (int j = 0; j < all.n; j++) module_clear(&all.m[j]);
    free(all.m);
    free(src);
    if (rc) { zl_lora_free(res); return -1; }
    *out = res;
    return 0;
}

int zl_lora_resize(zl_lora *l, int rank, double *energy_min, double *energy_mean) {
    if (rank < 1) return zl_err("rank must be at least 1");
    double emin = 1.0, esum = 0;
    int ne = 0;
    for (int i = 0; i < l->n; i++) {
        zl_lora_module *m = &l->m[i];
        if (m->kind == ZL_AD_UNSUPPORTED) return zl_err("module %s uses an unsupported adapter (%s)", m->key, m->unsupported);
        if (m->in <= 0) continue; /* vector or bias-only diffs stay as they are */
        if (m->dora) return zl_err("module %s is DoRA: resizing it would change its normalisation; not supported", m->key);
        if (m->kind == ZL_AD_LORA && m->rank <= rank) { fold_scale(m, 1.0f); esum += 1; ne++; continue; }
        double e = 1;
        if (to_lowrank(m, rank, &e)) return -1;
        if (e < emin) emin = e;
        esum += e;
        ne++;
    }
    if (energy_min) *energy_min = emin;
    if (energy_mean) *energy_mean = ne ? esum / ne : 1.0;
    return 0;
}
