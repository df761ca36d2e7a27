/* test_lora_ref.c — zlora's LoRA reader, delta math and `zlora lora` commands against an independent
 * numpy reference (tests/ref/lora_ref.py, generated once per run into <test dir>/loraref).
 *
 * The reference writes Z-Image LoRA files at the real shapes in every naming scheme and adapter type
 * (fp32, bf16, fp16), foreign LoRAs (SD1.5, SDXL, FLUX.1, Lumina-2, Qwen-Image, Wan), broken files,
 * expected.json (family, format, qkv, adapters, rank, alpha, per-module facts) and, per Z-Image file,
 * probes: x [in,3] and y = ΔW @ x computed in float64 from the stored values.
 *
 *   lora_ref_load          zl_lora_load of every file vs expected.json (broken ones fail, naming the file)
 *   lora_ref_probes        zl_lora_delta(m, 1) @ x vs y for every probed module; the test's own factor
 *                          math (used by the later tests) vs y as well
 *   lora_ref_dora          zl_lora_apply_dora on a base weight vs the reference (strength 1 and 0.5)
 *   lora_ref_cli_inspect   `zlora lora inspect FILE --json` for every valid file
 *   lora_ref_cli_check     `zlora lora check FILE`: exit 0 only for Z-Image; "applied n/m"
 *   lora_ref_cli_broken    broken files: exit != 0 and an `error:` line naming the file
 *   lora_ref_roundtrip     `convert --to F` for every exact-convertible file and F, ΔW per target kept
 *   lora_ref_lokr_comfyui  LoKr into fused qkv: refused without --lossy, approximated with it
 *   lora_ref_merge         `merge OUT A:s B:t` == s·ΔW_A + t·ΔW_B
 *   lora_ref_resize        `resize --rank 1` == the reference rank-1 SVD; energy reported in (0,1]
 *
 * A target asked in split form (…attention.to_k) of a file holding a fused module is answered with the
 * fused module's row block, and a fused target (…attention.qkv) of a split file stacks the three.
 */
#include "test.h"
#include "base/base.h"
#include "base/dtype.h"
#include "io/safetensors.h"
#include "lora/lora.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/* ------------------------------------------------------------------ setup */

static char g_dir[1024];
static cJSON *g_exp;
static char g_err[4096];

static char *slurp(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *b = malloc((size_t)n + 1);
    if (b && fread(b, 1, (size_t)n, f) != (size_t)n) { free(b); b = NULL; }
    if (b) b[n] = 0;
    fclose(f);
    return b;
}

/* Generates the reference files once per run; 0, or -1 with g_err set. */
static int ref_setup(void) {
    if (g_exp) return 0;
    if (g_err[0]) return -1;
    snprintf(g_dir, sizeof g_dir, "%s/loraref", zl_test_dir());
    char ej[1200];
    snprintf(ej, sizeof ej, "%s/expected.json", g_dir);
    if (!zl_file_exists(ej)) {
        const char *script = "tests/ref/lora_ref.py";
        if (!zl_file_exists(script)) {
            snprintf(g_err, sizeof g_err, "%s not found: run the tests from the repository root", script);
            return -1;
        }
        /* python3 on PATH may be a pyenv/venv interpreter without numpy: fall back to the system one */
        const char *cands[] = {getenv("PYTHON"), "python3", "/usr/bin/python3"};
        const char *py = NULL;
        for (int i = 0; i < 3 && !py; i++) {
            if (!cands[i] || !*cands[i]) continue;
            char cmd[600];
            snprintf(cmd, sizeof cmd, "%s -c 'import numpy' >/dev/null 2>&1", cands[i]);
            if (zl_test_run(cmd, NULL) == 0) py = cands[i];
        }
        if (!py) {
            snprintf(g_err, sizeof g_err, "python3 with numpy is needed to generate the LoRA reference "
                     "(%s); `make deps` installs python3-numpy", script);
            return -1;
        }
        char cmd[2400], *out = NULL;
        snprintf(cmd, sizeof cmd, "%s %s '%s' 2>&1", py, script, g_dir);
        int rc = zl_test_run(cmd, &out);
        if (rc != 0) {
            snprintf(g_err, sizeof g_err, "%s failed (exit %d): %s", cmd, rc, out ? out : "");
            free(out);
            return -1;
        }
        free(out);
    }
    char *s = slurp(ej);
    g_exp = s ? cJSON_Parse(s) : NULL;
    free(s);
    if (!g_exp) { snprintf(g_err, sizeof g_err, "cannot read or parse %s", ej); return -1; }
    return 0;
}

#define SETUP() CHECK_MSG(ref_setup() == 0, "%s", g_err)

/* Non-fatal check: reports and counts, so one run lists every mismatch. */
#define EXPECT(cond, ...)                                                                  \
    do {                                                                                   \
        if (!(cond)) {                                                                     \
            fprintf(stderr, "\n    ");                                                      \
            fprintf(stderr, __VA_ARGS__);                                                  \
            nbad++;                                                                        \
        }                                                                                  \
    } while (0)
#define END() do { if (nbad) fputc('\n', stderr); CHECK_MSG(nbad == 0, "%d mismatch(es) listed above", nbad); } while (0)

static const char *jstr(const cJSON *o, const char *k) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}
static double jnum(const cJSON *o, const char *k, double dflt) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    return cJSON_IsNumber(v) ? v->valuedouble : dflt;
}
static int jtrue(const cJSON *o, const char *k) { return cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(o, k)); }
static int is_zimage(const cJSON *e) { const char *f = jstr(e, "family"); return f && !strcmp(f, "z-image"); }
static double tol_of(const cJSON *e) { const char *p = jstr(e, "precision"); return p && !strcmp(p, "fp32") ? 1e-5 : 1e-3; }

static void path_of(char *buf, size_t n, const char *name) { snprintf(buf, n, "%s/%s", g_dir, name); }

/* Runs a zlora command line (printf-style, without the binary), stdout into *out, stderr into *err. */
static int cli(char **out, char **err, const char *fmt, ...) ZL_PRINTF(3, 4);
static int cli(char **out, char **err, const char *fmt, ...) {
    char args[3000], cmd[4200], ef[1100];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(args, sizeof args, fmt, ap);
    va_end(ap);
    snprintf(ef, sizeof ef, "%s/cli-stderr.txt", g_dir);
    snprintf(cmd, sizeof cmd, "%s %s 2>'%s'", zl_test_bin(), args, ef);
    char *o = NULL;
    int rc = zl_test_run(cmd, &o);
    if (out) *out = o; else free(o);
    if (err) { *err = slurp(ef); if (!*err) *err = zl_xstrdup(""); }
    return rc;
}

/* ------------------------------------------------------------------ probes */

typedef struct {
    zl_st *st;
} probes;

static int probes_open(const cJSON *e, probes *p) {
    const char *pn = jstr(e, "probes");
    p->st = NULL;
    if (!pn) return -1;
    char path[1200];
    path_of(path, sizeof path, pn);
    return zl_st_open(path, &p->st);
}
static void probes_close(probes *p) { if (p->st) zl_st_close(p->st); p->st = NULL; }

/* Tensor `<target><suffix>` as f32 (malloc'd) with its shape; NULL when absent. */
static float *probe_get(const probes *p, const char *target, const char *suffix, int64_t *rows, int64_t *cols) {
    char name[300];
    snprintf(name, sizeof name, "%s%s", target, suffix);
    const zl_tensor_info *t = zl_st_find(p->st, name);
    if (!t) return NULL;
    if (rows) *rows = t->shape[0];
    if (cols) *cols = t->ndim > 1 ? t->shape[1] : 1;
    return zl_st_read_f32(p->st, t);
}

/* The i-th probe target (names of the `.y` tensors), or NULL past the end. */
static const char *probe_target(const probes *p, int i, char *buf, size_t n) {
    int k = 0;
    for (int j = 0; j < zl_st_count(p->st); j++) {
        const char *nm = zl_st_tensor(p->st, j)->name;
        if (!zl_ends_with(nm, ".y")) continue;
        if (k++ == i) {
            snprintf(buf, n, "%.*s", (int)(strlen(nm) - 2), nm);
            return buf;
        }
    }
    return NULL;
}

static double rel_err(const double *a, const float *ref, size_t n) {
    double d = 0, r = 0;
    for (size_t i = 0; i < n; i++) {
        double e = a[i] - (double)ref[i];
        d += e * e;
        r += (double)ref[i] * ref[i];
    }
    return r > 0 ? sqrt(d / r) : sqrt(d);
}
static double rel_err_d(const double *a, const double *ref, size_t n) {
    double d = 0, r = 0;
    for (size_t i = 0; i < n; i++) { d += (a[i] - ref[i]) * (a[i] - ref[i]); r += ref[i] * ref[i]; }
    return r > 0 ? sqrt(d / r) : sqrt(d);
}

/* ------------------------------------------------------------------ applying modules */

static int has(const zl_lora_module *m, zl_part p) { return m->p[p].data != NULL; }

/* The scale rules of the spec (§2, §5), from the module's own tensors. */
static double ref_scale(const zl_lora_module *m) {
    int64_t dim = 0;
    switch (m->kind) {
    case ZL_AD_LORA: dim = m->p[ZL_P_DOWN].shape[0]; break;
    case ZL_AD_LOHA: dim = m->p[ZL_P_W1B].shape[0]; break;
    case ZL_AD_LOKR:
        dim = has(m, ZL_P_K2B) ? m->p[ZL_P_K2B].shape[0] : has(m, ZL_P_K1B) ? m->p[ZL_P_K1B].shape[0] : 0;
        break;
    default: return 1.0;
    }
    /* alpha 0 means alpha = dim (kohya/musubi convention, spec §2) */
    return m->has_alpha && m->alpha != 0 && dim > 0 ? (double)m->alpha / (double)dim : 1.0;
}

static int is_vector(const zl_lora_module *m) { return m->in <= 0; }

/* y [out, nc] += ΔW(m) @ x [in, nc] (vector modules: y [out] += Δv). materialise: through
 * zl_lora_delta; else the test's own factor math (never forms ΔW for LoRA/LoHa/LoKr). */
static int mod_apply(const zl_lora_module *m, const float *x, int nc, double *y, int materialise, char *err, size_t en) {
    const int out = m->out, in = m->in;
    if (m->dora) { snprintf(err, en, "%s: DoRA module", m->key); return -1; }
    if (m->kind == ZL_AD_LORA && has(m, ZL_P_MID)) materialise = 1;
    if (m->kind == ZL_AD_LOHA && (has(m, ZL_P_T1) || has(m, ZL_P_T2))) materialise = 1;
    if (m->kind == ZL_AD_LOKR && has(m, ZL_P_KT2)) materialise = 1;
    if (m->kind == ZL_AD_UNSUPPORTED) { snprintf(err, en, "%s: unsupported adapter", m->key); return -1; }
    if (materialise) {
        /* one grow-only scratch buffer: fresh 150 MB mallocs per module cost more in page faults than
         * the arithmetic (it stays reachable through the static, so LeakSanitizer does not count it) */
        static float *dw;
        static size_t dw_cap;
        size_t n = (size_t)out * (size_t)(in > 0 ? in : 1);
        if (n > dw_cap) {
            free(dw);
            dw = zl_try_malloc(sizeof(float) * n);
            dw_cap = dw ? n : 0;
            if (!dw) { snprintf(err, en, "out of memory"); return -1; }
        }
        if (zl_lora_delta(m, 1.0f, dw)) {
            snprintf(err, en, "zl_lora_delta(%s): %s", m->key, zl_last_error());
            return -1;
        }
        if (in <= 0) {
            for (int i = 0; i < out; i++) y[i] += dw[i];
        } else if (nc == 3) {
            /* x transposed to three contiguous columns so the row loop vectorises */
            double *xt = malloc(sizeof(double) * 3 * (size_t)in);
            for (int j = 0; j < in; j++)
                for (int c = 0; c < 3; c++) xt[(size_t)c * in + j] = x[(size_t)j * 3 + c];
#pragma omp parallel for schedule(static)
            for (int i = 0; i < out; i++) {
                const float *row = dw + (size_t)i * in;
                double a0 = 0, a1 = 0, a2 = 0;
                for (int j = 0; j < in; j++) {
                    double r = row[j];
                    a0 += r * xt[j];
                    a1 += r * xt[(size_t)in + j];
                    a2 += r * xt[2 * (size_t)in + j];
                }
                y[(size_t)i * 3] += a0; y[(size_t)i * 3 + 1] += a1; y[(size_t)i * 3 + 2] += a2;
            }
            free(xt);
        } else {
            for (int i = 0; i < out; i++)
                for (int j = 0; j < in; j++)
                    for (int c = 0; c < nc; c++) y[(size_t)i * nc + c] += (double)dw[(size_t)i * in + j] * x[(size_t)j * nc + c];
        }
        return 0;
    }
    const double s = ref_scale(m);
    switch (m->kind) {
    case ZL_AD_LORA: {
        const zl_mat *dn = &m->p[ZL_P_DOWN], *up = &m->p[ZL_P_UP];
        int r = (int)dn->shape[0];
        double *t = calloc((size_t)r * nc, sizeof(double));
        for (int k = 0; k < r; k++)
            for (int j = 0; j < in; j++)
                for (int c = 0; c < nc; c++) t[k * nc + c] += (double)dn->data[(size_t)k * in + j] * x[(size_t)j * nc + c];
        for (int i = 0; i < out; i++)
            for (int k = 0; k < r; k++)
                for (int c = 0; c < nc; c++) y[(size_t)i * nc + c] += s * up->data[(size_t)i * r + k] * t[k * nc + c];
        free(t);
        return 0;
    }
    case ZL_AD_LOHA: {
        /* ((w1a@w1b) ⊙ (w2a@w2b)) @ x = Σ_jk (w1a[:,j] ⊙ w2a[:,k]) ((w1b[j] ⊙ w2b[k]) @ x) */
        const float *w1a = m->p[ZL_P_W1A].data, *w1b = m->p[ZL_P_W1B].data;
        const float *w2a = m->p[ZL_P_W2A].data, *w2b = m->p[ZL_P_W2B].data;
        int r1 = (int)m->p[ZL_P_W1B].shape[0], r2 = (int)m->p[ZL_P_W2B].shape[0];
        double *v = calloc((size_t)r1 * r2 * nc, sizeof(double));
        for (int j = 0; j < r1; j++)
            for (int k = 0; k < r2; k++)
                for (int l = 0; l < in; l++) {
                    double w = (double)w1b[(size_t)j * in + l] * w2b[(size_t)k * in + l];
                    for (int c = 0; c < nc; c++) v[(j * r2 + k) * nc + c] += w * x[(size_t)l * nc + c];
                }
        for (int i = 0; i < out; i++)
            for (int j = 0; j < r1; j++)
                for (int k = 0; k < r2; k++) {
                    double w = s * w1a[(size_t)i * r1 + j] * w2a[(size_t)i * r2 + k];
                    for (int c = 0; c < nc; c++) y[(size_t)i * nc + c] += w * v[(j * r2 + k) * nc + c];
                }
        free(v);
        return 0;
    }
    case ZL_AD_LOKR: {
        /* kron(W1 [a,b], W2 [c,d]) @ x: y[i*c+k] = Σ_j W1[i,j] Σ_l W2[k,l] x[j*d+l] */
        int64_t a = 0, b = 0, c = 0, d = 0;
        double *W1 = NULL, *W2 = NULL;
        for (int f = 0; f < 2; f++) {
            zl_part full = f ? ZL_P_K2 : ZL_P_K1, pa = f ? ZL_P_K2A : ZL_P_K1A, pb = f ? ZL_P_K2B : ZL_P_K1B;
            int64_t R, C;
            double *W;
            if (has(m, full)) {
                R = m->p[full].shape[0]; C = m->p[full].ndim > 1 ? m->p[full].shape[1] : 1;
                W = malloc(sizeof(double) * (size_t)(R * C));
                for (int64_t i = 0; i < R * C; i++) W[i] = m->p[full].data[i];
            } else {
                R = m->p[pa].shape[0]; C = m->p[pb].shape[1];
                int64_t r = m->p[pa].shape[1];
                W = calloc((size_t)(R * C), sizeof(double));
                for (int64_t i = 0; i < R; i++)
                    for (int64_t k = 0; k < r; k++)
                        for (int64_t j = 0; j < C; j++) W[i * C + j] += (double)m->p[pa].data[i * r + k] * m->p[pb].data[k * C + j];
            }
            if (f) { W2 = W; c = R; d = C; } else { W1 = W; a = R; b = C; }
        }
        if (a * c != out || b * d != in) {
            snprintf(err, en, "%s: kron of [%lld,%lld] and [%lld,%lld] is not [%d,%d]", m->key, (long long)a,
                     (long long)b, (long long)c, (long long)d, out, in);
            free(W1); free(W2);
            return -1;
        }
        double *Z = malloc(sizeof(double) * (size_t)(b * c));
        for (int col = 0; col < nc; col++) {
            for (int64_t j = 0; j < b; j++)
                for (int64_t k = 0; k < c; k++) {
                    double acc = 0;
                    for (int64_t l = 0; l < d; l++) acc += W2[k * d + l] * x[(size_t)(j * d + l) * nc + col];
                    Z[j * c + k] = acc;
                }
            for (int64_t i = 0; i < a; i++)
                for (int64_t k = 0; k < c; k++) {
                    double acc = 0;
                    for (int64_t j = 0; j < b; j++) acc += W1[i * b + j] * Z[j * c + k];
                    y[(size_t)(i * c + k) * nc + col] += s * acc;
                }
        }
        free(Z); free(W1); free(W2);
        return 0;
    }
    case ZL_AD_DIFF: {
        if (!has(m, ZL_P_DIFF)) return 0; /* bias only */
        const float *dfd = m->p[ZL_P_DIFF].data;
        if (in <= 0) { for (int i = 0; i < out; i++) y[i] += dfd[i]; return 0; }
        for (int i = 0; i < out; i++)
            for (int j = 0; j < in; j++)
                for (int c = 0; c < nc; c++) y[(size_t)i * nc + c] += (double)dfd[(size_t)i * in + j] * x[(size_t)j * nc + c];
        return 0;
    }
    default:
        snprintf(err, en, "%s: adapter %d", m->key, (int)m->kind);
        return -1;
    }
}

/* "<blk>.attention.to_q|to_k|to_v" -> 0|1|2, "<blk>.attention.qkv" -> 3, else -1; blk filled. */
static int qkv_parse(const char *t, char *blk, size_t n) {
    const char *a = t ? strstr(t, ".attention.") : NULL;
    if (!a) return -1;
    const char *tail = a + strlen(".attention.");
    int p = !strcmp(tail, "to_q") ? 0 : !strcmp(tail, "to_k") ? 1 : !strcmp(tail, "to_v") ? 2 : !strcmp(tail, "qkv") ? 3 : -1;
    if (p >= 0) snprintf(blk, n, "%.*s", (int)(a - t), t);
    return p;
}

/* y [out, nc] = Σ ΔW of every (non-DoRA) module of l on target T, applied to x; fused and split qkv
 * are translated (row block / stacking). Returns the number of modules used, or -1 (err set). */
static int target_apply(const zl_lora *l, const char *T, const float *x, int out, int nc, double *y,
                        int materialise, char *err, size_t en) {
    char blk[160], mblk[160];
    int p = qkv_parse(T, blk, sizeof blk), used = 0;
    memset(y, 0, sizeof(double) * (size_t)out * nc);
    for (int i = 0; i < l->n; i++) {
        const zl_lora_module *m = &l->m[i];
        if (!m->target || m->dora) continue;
        int mp = qkv_parse(m->target, mblk, sizeof mblk);
        int vec = is_vector(m);
        int mnc = vec ? 1 : nc;
        if (!strcmp(m->target, T)) {
            if (m->out != out) { snprintf(err, en, "%s: %s has %d rows, expected %d", l->path, m->key, m->out, out); return -1; }
            if (mod_apply(m, x, mnc, y, materialise, err, en)) return -1;
            used++;
        } else if (p >= 0 && p < 3 && mp == 3 && !strcmp(blk, mblk)) {
            int dim = m->out / 3;
            if (dim != out) { snprintf(err, en, "%s: fused %s has %d rows, expected 3×%d", l->path, m->key, m->out, out); return -1; }
            double *t = calloc((size_t)m->out * mnc, sizeof(double));
            if (mod_apply(m, x, mnc, t, materialise, err, en)) { free(t); return -1; }
            for (size_t k = 0; k < (size_t)dim * mnc; k++) y[k] += t[(size_t)p * dim * mnc + k];
            free(t);
            used++;
        } else if (p == 3 && mp >= 0 && mp < 3 && !strcmp(blk, mblk)) {
            int dim = out / 3;
            if (m->out != dim) { snprintf(err, en, "%s: %s has %d rows, expected %d", l->path, m->key, m->out, dim); return -1; }
            double *t = calloc((size_t)dim * mnc, sizeof(double));
            if (mod_apply(m, x, mnc, t, materialise, err, en)) { free(t); return -1; }
            for (size_t k = 0; k < (size_t)dim * mnc; k++) y[(size_t)mp * dim * mnc + k] += t[k];
            free(t);
            used++;
        }
    }
    return used;
}

/* ------------------------------------------------------------------ target sets */

typedef struct { char name[256][128]; int n; } strset;
static void set_add(strset *s, const char *t) {
    for (int i = 0; i < s->n; i++) if (!strcmp(s->name[i], t)) return;
    if (s->n < 256) snprintf(s->name[s->n++], 128, "%s", t);
}
/* Adds a target in split form (a fused qkv counts as its three projections). */
static void set_add_split(strset *s, const char *t) {
    char blk[160], b[200];
    if (qkv_parse(t, blk, sizeof blk) == 3) {
        const char *pr[] = {"to_q", "to_k", "to_v"};
        for (int i = 0; i < 3; i++) { snprintf(b, sizeof b, "%s.attention.%s", blk, pr[i]); set_add(s, b); }
    } else set_add(s, t);
}
static int set_has(const strset *s, const char *t) {
    for (int i = 0; i < s->n; i++) if (!strcmp(s->name[i], t)) return 1;
    return 0;
}
/* First element of a not in b, or NULL. */
static const char *set_minus(const strset *a, const strset *b) {
    for (int i = 0; i < a->n; i++) if (!set_has(b, a->name[i])) return a->name[i];
    return NULL;
}

/* ------------------------------------------------------------------ (a) loading */

static int adapter_count(const zl_lora *l, const char *kind) {
    int n = 0;
    for (int i = 0; i < l->n; i++) n += !strcmp(zl_adapter_name(l->m[i].kind), kind);
    return n;
}

static const zl_lora_module *find_module(const zl_lora *l, const char *target, int fused) {
    for (int i = 0; i < l->n; i++)
        if (l->m[i].target && !strcmp(l->m[i].target, target) && !!l->m[i].fused_qkv == !!fused) return &l->m[i];
    return NULL;
}

/* Checks one loaded file against its expected entry; returns the number of mismatches (printed). */
static int check_loaded(const char *name, const cJSON *e, const zl_lora *l) {
    int nbad = 0;
    const char *fam = jstr(e, "family"), *fmt = jstr(e, "format"), *qkv = jstr(e, "qkv"), *dt = jstr(e, "dtype");
    EXPECT(l->family && !strcmp(l->family, fam), "%s: family %s, expected %s", name, l->family, fam);
    EXPECT(!strcmp(zl_format_name(l->format), fmt), "%s: format %s, expected %s", name, zl_format_name(l->format), fmt);
    EXPECT(l->qkv && !strcmp(l->qkv, qkv), "%s: qkv %s, expected %s", name, l->qkv, qkv);
    EXPECT(l->n == (int)jnum(e, "modules", -1), "%s: %d modules, expected %d", name, l->n, (int)jnum(e, "modules", -1));
    EXPECT(l->nkeys == (int)jnum(e, "nkeys", -1), "%s: %d tensors, expected %d", name, l->nkeys, (int)jnum(e, "nkeys", -1));
    EXPECT(!strcmp(zl_dtype_name(l->dtype), dt), "%s: dtype %s, expected %s", name, zl_dtype_name(l->dtype), dt);
    const cJSON *ad = cJSON_GetObjectItemCaseSensitive(e, "adapters"), *it;
    int nexp = 0;
    cJSON_ArrayForEach(it, ad) {
        int got = adapter_count(l, it->string);
        nexp += it->valueint;
        EXPECT(got == it->valueint, "%s: %d %s adapters, expected %d", name, got, it->string, it->valueint);
    }
    EXPECT(nexp == l->n, "%s: adapters of unexpected kinds (%d modules, %d expected)", name, l->n, nexp);
    int ndora = 0;
    for (int i = 0; i < l->n; i++) ndora += !!l->m[i].dora;
    EXPECT(ndora == (int)jnum(e, "dora", 0), "%s: %d DoRA modules, expected %d", name, ndora, (int)jnum(e, "dora", 0));
    /* ranks: the set of module ranks */
    const cJSON *ranks = cJSON_GetObjectItemCaseSensitive(e, "ranks");
    for (int i = 0; i < l->n; i++) {
        int ok = 0;
        cJSON_ArrayForEach(it, ranks) ok |= it->valueint == l->m[i].rank;
        EXPECT(ok, "%s: module %s has rank %d, not one of the expected ranks", name, l->m[i].key, l->m[i].rank);
    }
    /* alpha */
    const cJSON *ja = cJSON_GetObjectItemCaseSensitive(e, "alpha");
    for (int i = 0; i < l->n; i++) {
        const zl_lora_module *m = &l->m[i];
        if (m->kind == ZL_AD_DIFF) continue;
        if (cJSON_IsNull(ja)) EXPECT(!m->has_alpha, "%s: module %s has alpha %g, expected none", name, m->key, (double)m->alpha);
        else EXPECT(m->has_alpha && fabs(m->alpha - ja->valuedouble) <= 1e-6 * fabs(ja->valuedouble),
                    "%s: module %s alpha %s%g, expected %.9g", name, m->key, m->has_alpha ? "" : "(none) ",
                    (double)m->alpha, ja->valuedouble);
    }
    if (!is_zimage(e)) {
        EXPECT(l->reason && l->reason[0], "%s: foreign family %s but no reason given", name, l->family);
        return nbad;
    }
    /* per-module facts */
    const cJSON *mods = cJSON_GetObjectItemCaseSensitive(e, "mods"), *em;
    for (int i = 0; i < l->n; i++) EXPECT(l->m[i].target, "%s: module %s has no Z-Image target", name, l->m[i].key);
    cJSON_ArrayForEach(em, mods) {
        const char *t = jstr(em, "target");
        int fused = jtrue(em, "fused");
        const zl_lora_module *m = find_module(l, t, fused);
        EXPECT(m, "%s: no module with target %s%s", name, t, fused ? " (fused)" : "");
        if (!m) continue;
        const char *kind = jstr(em, "kind");
        EXPECT(!strcmp(zl_adapter_name(m->kind), kind), "%s: %s is %s, expected %s", name, t, zl_adapter_name(m->kind), kind);
        EXPECT(m->rank == (int)jnum(em, "rank", -1), "%s: %s rank %d, expected %d", name, t, m->rank, (int)jnum(em, "rank", -1));
        EXPECT(!!m->dora == jtrue(em, "dora"), "%s: %s dora %d, expected %d", name, t, m->dora, jtrue(em, "dora"));
        EXPECT(m->out == (int)jnum(em, "out", -1), "%s: %s out %d, expected %d", name, t, m->out, (int)jnum(em, "out", -1));
        int ein = (int)jnum(em, "in", -1);
        EXPECT(m->in == ein || (ein == 0 && m->in <= 1), "%s: %s in %d, expected %d", name, t, m->in, ein);
        double es = jnum(em, "scale", NAN), gs = zl_lora_module_scale(m);
        EXPECT(fabs(gs - es) <= 1e-6 * fabs(es), "%s: %s zl_lora_module_scale %.9g, expected %.9g", name, t, gs, es);
        EXPECT(fabs(ref_scale(m) - es) <= 1e-6 * fabs(es), "%s: %s scale from its tensors %.9g, expected %.9g (test bug?)", name, t, ref_scale(m), es);
    }
    return nbad;
}

TEST(lora_ref_load) {
    SETUP();
    int nbad = 0, nfiles = 0;
    const cJSON *e;
    cJSON_ArrayForEach(e, g_exp) {
        const char *name = e->string;
        char path[1200];
        path_of(path, sizeof path, name);
        zl_lora *l = NULL;
        zl_clear_error();
        int rc = zl_lora_load(path, &l);
        nfiles++;
        if (jtrue(e, "broken")) {
            EXPECT(rc != 0, "%s (%s): loaded, expected a failure", name, jstr(e, "why"));
            if (rc != 0) EXPECT(strstr(zl_last_error(), name), "%s: error message does not name the file: %s", name, zl_last_error());
            if (rc == 0) zl_lora_free(l);
            continue;
        }
        EXPECT(rc == 0, "%s: zl_lora_load failed: %s", name, zl_last_error());
        if (rc) continue;
        nbad += check_loaded(name, e, l);
        zl_lora_free(l);
    }
    CHECK(nfiles >= 29);
    END();
}

/* ------------------------------------------------------------------ (b) probes */

TEST(lora_ref_probes) {
    SETUP();
    int nbad = 0, nprobes = 0;
    char err[512];
    const cJSON *e;
    cJSON_ArrayForEach(e, g_exp) {
        const char *name = e->string;
        if (!is_zimage(e) || jnum(e, "dora", 0) > 0) continue;
        char path[1200];
        path_of(path, sizeof path, name);
        zl_lora *l;
        if (zl_lora_load(path, &l)) { EXPECT(0, "%s: %s", name, zl_last_error()); continue; }
        probes p;
        CHECK_MSG(probes_open(e, &p) == 0, "%s: probes: %s", name, zl_last_error());
        double tol = tol_of(e);
        char T[200];
        int nt = 0;
        /* zl_lora_delta for the first module of each (adapter, shape, fused) class — every module
         * through the factor math, which needs no 150 MB ΔW (keeps the ASan run short) */
        int classes[64][4], ncls = 0;
        for (int i = 0; probe_target(&p, i, T, sizeof T); i++, nt++) {
            int64_t out, nc, in = 0, xc;
            float *y = probe_get(&p, T, ".y", &out, &nc);
            float *x = probe_get(&p, T, ".x", &in, &xc);
            double *got = calloc((size_t)(out * nc), sizeof(double));
            const zl_lora_module *pm = NULL;
            char blk[160];
            int isq = qkv_parse(T, blk, sizeof blk);
            for (int k = 0; k < l->n && !pm; k++)
                if (l->m[k].target && (!strcmp(l->m[k].target, T) || (isq >= 0 && isq < 3 && l->m[k].fused_qkv &&
                                                                       !strncmp(l->m[k].target, blk, strlen(blk)))))
                    pm = &l->m[k];
            int cls[4] = {pm ? (int)pm->kind : -1, (int)out, (int)in, pm ? pm->fused_qkv : 0}, seen = 0;
            for (int k = 0; k < ncls; k++) seen |= !memcmp(classes[k], cls, sizeof cls);
            if (!seen && ncls < 64) memcpy(classes[ncls++], cls, sizeof cls);
            for (int mat = seen ? 0 : 1; mat >= 0; mat--) {
                int used = target_apply(l, T, x, (int)out, (int)nc, got, mat, err, sizeof err);
                EXPECT(used >= 0, "%s: %s: %s", name, T, err);
                EXPECT(used != 0, "%s: no module for target %s", name, T);
                if (used <= 0) break;
                double re = rel_err(got, y, (size_t)(out * nc));
                EXPECT(re < tol, "%s: %s: %s ΔW@x relative error %.3g (tol %g)", name, T,
                       mat ? "zl_lora_delta" : "factor-math (test helper)", re, tol);
                nprobes++;
            }
            /* bias deltas: .b is diff_b */
            int64_t bn;
            float *b = probe_get(&p, T, ".b", &bn, NULL);
            if (b) {
                const zl_lora_module *m = find_module(l, T, 0);
                EXPECT(m && m->p[ZL_P_DIFF_B].data, "%s: %s has no diff_b", name, T);
                if (m && m->p[ZL_P_DIFF_B].data) {
                    double d = 0;
                    for (int64_t k = 0; k < bn; k++) d = fmax(d, fabs(m->p[ZL_P_DIFF_B].data[k] - b[k]));
                    EXPECT(d == 0, "%s: %s diff_b differs by up to %g", name, T, d);
                }
                free(b);
            }
            free(got); free(x); free(y);
        }
        EXPECT(nt == l->n, "%s: %d probes for %d modules", name, nt, l->n);
        probes_close(&p);
        zl_lora_free(l);
    }
    CHECK(nprobes > 100);
    END();
}

/* ------------------------------------------------------------------ DoRA */

TEST(lora_ref_dora) {
    SETUP();
    int nbad = 0, nchecked = 0;
    const cJSON *e;
    cJSON_ArrayForEach(e, g_exp) {
        const char *name = e->string;
        if (!is_zimage(e) || jnum(e, "dora", 0) == 0) continue;
        char path[1200];
        path_of(path, sizeof path, name);
        zl_lora *l;
        if (zl_lora_load(path, &l)) { EXPECT(0, "%s: %s", name, zl_last_error()); continue; }
        probes p;
        CHECK_MSG(probes_open(e, &p) == 0, "%s: probes: %s", name, zl_last_error());
        for (int j = 0; j < zl_st_count(p.st); j++) {
            const char *nm = zl_st_tensor(p.st, j)->name;
            if (!zl_ends_with(nm, ".base")) continue;
            char T[200];
            snprintf(T, sizeof T, "%.*s", (int)(strlen(nm) - 5), nm);
            int64_t out, in, nc, r;
            float *W = probe_get(&p, T, ".base", &out, &in);
            float *x = probe_get(&p, T, ".x", &r, &nc);
            const zl_lora_module *m = find_module(l, T, 0);
            EXPECT(m && m->dora, "%s: no DoRA module for %s", name, T);
            if (m && m->dora) {
                /* zl_lora_delta must refuse DoRA (it needs the base weight) */
                float *dw = malloc(sizeof(float) * (size_t)(out * in));
                EXPECT(zl_lora_delta(m, 1.0f, dw) != 0, "%s: zl_lora_delta accepted DoRA module %s", name, T);
                free(dw);
                const char *tags[] = {".y1", ".y05"};
                const float strengths[] = {1.0f, 0.5f};
                for (int s = 0; s < 2; s++) {
                    float *yref = probe_get(&p, T, tags[s], NULL, NULL);
                    float *w = malloc(sizeof(float) * (size_t)(out * in));
                    memcpy(w, W, sizeof(float) * (size_t)(out * in));
                    int rc = zl_lora_apply_dora(m, strengths[s], w);
                    EXPECT(rc == 0, "%s: zl_lora_apply_dora(%s): %s", name, T, zl_last_error());
                    if (rc == 0) {
                        /* compare the change (W_new − W) @ x with (y − W @ x) */
                        double *got = calloc((size_t)(out * nc), sizeof(double)), *want = calloc((size_t)(out * nc), sizeof(double));
                        for (int64_t i = 0; i < out; i++)
                            for (int64_t k = 0; k < in; k++)
                                for (int64_t c = 0; c < nc; c++) {
                                    got[i * nc + c] += ((double)w[i * in + k] - W[i * in + k]) * x[k * nc + c];
                                    want[i * nc + c] -= (double)W[i * in + k] * x[k * nc + c];
                                }
                        for (int64_t i = 0; i < out * nc; i++) want[i] += yref[i];
                        double re = rel_err_d(got, want, (size_t)(out * nc));
                        EXPECT(re < 1e-4, "%s: %s DoRA at strength %g: relative error %.3g of the change", name, T,
                               (double)strengths[s], re);
                        nchecked++;
                        free(got); free(want);
                    }
                    free(w); free(yref);
                }
            }
            free(W); free(x);
        }
        probes_close(&p);
        zl_lora_free(l);
    }
    CHECK(nchecked >= 6);
    END();
}

/* ------------------------------------------------------------------ (c) CLI */

TEST(lora_ref_cli_inspect) {
    SETUP();
    int nbad = 0;
    const cJSON *e;
    cJSON_ArrayForEach(e, g_exp) {
        const char *name = e->string;
        if (jtrue(e, "broken")) continue;
        char path[1200], *out, *err;
        path_of(path, sizeof path, name);
        int rc = cli(&out, &err, "lora inspect '%s' --json", path);
        EXPECT(rc == 0, "%s: inspect --json exit %d: %s", name, rc, err);
        cJSON *j = rc == 0 ? cJSON_Parse(out) : NULL;
        EXPECT(rc != 0 || j, "%s: inspect --json printed no JSON: %.200s", name, out);
        if (j) {
            const char *keys[] = {"family", "format", "qkv"};
            for (int k = 0; k < 3; k++) {
                const char *g = jstr(j, keys[k]), *w = jstr(e, keys[k]);
                EXPECT(g && !strcmp(g, w), "%s: inspect %s = %s, expected %s", name, keys[k], g ? g : "(missing)", w);
            }
            const cJSON *ga = cJSON_GetObjectItemCaseSensitive(j, "adapters"), *ea = cJSON_GetObjectItemCaseSensitive(e, "adapters"), *it;
            cJSON_ArrayForEach(it, ea) {
                double g = jnum(ga, it->string, 0);
                EXPECT(g == it->valuedouble, "%s: inspect adapters.%s = %g, expected %d", name, it->string, g, it->valueint);
            }
            cJSON_ArrayForEach(it, ga) {
                if (!strcmp(it->string, "dora")) {
                    EXPECT(it->valueint == (int)jnum(e, "dora", 0), "%s: inspect adapters.dora = %d, expected %d", name,
                           it->valueint, (int)jnum(e, "dora", 0));
                    continue;
                }
                EXPECT(cJSON_GetObjectItemCaseSensitive(ea, it->string), "%s: inspect reports unexpected adapters.%s = %d",
                       name, it->string, it->valueint);
            }
            const cJSON *gr = cJSON_GetObjectItemCaseSensitive(j, "rank");
            int er = (int)jnum(e, "rank", -1);
            if (er == 0) EXPECT(!gr || cJSON_IsNull(gr) || (cJSON_IsNumber(gr) && gr->valueint == 0),
                                "%s: inspect rank should be null/0 (no decomposed rank)", name);
            else EXPECT(cJSON_IsNumber(gr) && gr->valueint == er, "%s: inspect rank %s, expected %d", name,
                        cJSON_IsNumber(gr) ? "wrong" : "missing", er);
            EXPECT((int)jnum(j, "modules", -1) == (int)jnum(e, "modules", -2), "%s: inspect modules %g, expected %g", name,
                   jnum(j, "modules", -1), jnum(e, "modules", -2));
            cJSON_Delete(j);
        }
        free(out); free(err);
    }
    END();
}

TEST(lora_ref_cli_check) {
    SETUP();
    int nbad = 0;
    const cJSON *e;
    cJSON_ArrayForEach(e, g_exp) {
        const char *name = e->string;
        if (jtrue(e, "broken")) continue;
        char path[1200], *out, *err;
        path_of(path, sizeof path, name);
        int rc = cli(&out, &err, "lora check '%s'", path);
        const char *a = strstr(out, "applied ");
        int n = -1, m = -1;
        EXPECT(a && sscanf(a, "applied %d/%d", &n, &m) == 2, "%s: check printed no 'applied n/m': %.300s %s", name, out, err);
        if (is_zimage(e)) {
            EXPECT(rc == 0, "%s: check exit %d for a Z-Image LoRA: %.400s", name, rc, out);
            EXPECT(n == m && m > 0, "%s: check applied %d/%d", name, n, m);
        } else {
            EXPECT(rc != 0, "%s: check exit 0 for a %s LoRA", name, jstr(e, "family"));
            EXPECT(n < m, "%s: check applied %d/%d for a %s LoRA", name, n, m, jstr(e, "family"));
        }
        free(out); free(err);
    }
    END();
}

/* An "error:" line on stderr that names the file. */
static int error_names(const char *err, const char *name) {
    for (const char *s = err; s && *s;) {
        const char *nl = strchr(s, '\n');
        size_t len = nl ? (size_t)(nl - s) : strlen(s);
        if (!strncmp(s, "error:", 6)) {
            char *line = strndup(s, len);
            int ok = strstr(line, name) != NULL;
            free(line);
            if (ok) return 1;
        }
        s = nl ? nl + 1 : NULL;
    }
    return 0;
}

TEST(lora_ref_cli_broken) {
    SETUP();
    int nbad = 0, nb = 0;
    const cJSON *e;
    cJSON_ArrayForEach(e, g_exp) {
        const char *name = e->string;
        if (!jtrue(e, "broken")) continue;
        nb++;
        char path[1200], outp[1300];
        path_of(path, sizeof path, name);
        snprintf(outp, sizeof outp, "%s/never-written.safetensors", g_dir);
        const char *cmds[] = {"lora inspect '%s' --json", "lora check '%s'", "lora convert '%s' '%s' --to kohya"};
        for (int c = 0; c < 3; c++) {
            char *out, *err;
            int rc = cli(&out, &err, cmds[c], path, outp);
            EXPECT(rc != 0, "%s (%s): `%.14s` exit 0", name, jstr(e, "why"), cmds[c]);
            EXPECT(error_names(err, name), "%s: `%.14s` printed no error: line naming the file: %s", name, cmds[c], err);
            free(out); free(err);
        }
        EXPECT(!zl_file_exists(outp), "%s: convert wrote an output for a broken file", name);
        remove(outp);
    }
    CHECK(nb == 6);
    END();
}

/* ------------------------------------------------------------------ (d) round trips */

/* Compares every probed target of the reference file `e` against lora l (ΔW through the test's factor
 * math; one target, the smallest, also through zl_lora_delta; `materialise_also` names one more).
 * Checks that l covers exactly the same targets. Returns the number of mismatches. */
static int compare_to_probes(const char *label, const cJSON *e, const zl_lora *l, double tol, const char *materialise_also,
                             const char *skip_block_qkv, double *worst_skipped) {
    int nbad = 0;
    char err[512], T[200];
    probes p;
    if (probes_open(e, &p)) { EXPECT(0, "%s: probes: %s", label, zl_last_error()); return nbad; }
    strset want = {0}, got = {0};
    char smallest[200] = "";
    int64_t smallest_n = -1;
    for (int i = 0; probe_target(&p, i, T, sizeof T); i++) {
        set_add_split(&want, T);
        int64_t out, nc, in = 0, xc;
        float *y = probe_get(&p, T, ".y", &out, &nc);
        float *x = probe_get(&p, T, ".x", &in, &xc);
        char blk[160];
        int skip = skip_block_qkv && qkv_parse(T, blk, sizeof blk) >= 0 && qkv_parse(T, blk, sizeof blk) <= 3;
        if (x && (smallest_n < 0 || out * in < smallest_n) && !skip) { smallest_n = out * in; snprintf(smallest, sizeof smallest, "%s", T); }
        double *yy = calloc((size_t)(out * nc), sizeof(double));
        int mats[2] = {0, materialise_also && !strcmp(materialise_also, T)};
        for (int k = 0; k < 1 + mats[1]; k++) {
            int used = target_apply(l, T, x, (int)out, (int)nc, yy, mats[k], err, sizeof err);
            EXPECT(used >= 0, "%s: %s: %s", label, T, err);
            EXPECT(used != 0, "%s: target %s missing", label, T);
            if (used > 0) {
                double re = rel_err(yy, y, (size_t)(out * nc));
                if (skip) { if (worst_skipped && re > *worst_skipped) *worst_skipped = re; }
                else EXPECT(re < tol, "%s: %s ΔW@x relative error %.3g%s (tol %g)", label, T, re,
                            mats[k] ? " via zl_lora_delta" : "", tol);
            }
        }
        free(yy); free(x); free(y);
    }
    if (smallest[0]) { /* the smallest target again, through zl_lora_delta */
        int64_t out, nc, in, xc;
        float *y = probe_get(&p, smallest, ".y", &out, &nc), *x = probe_get(&p, smallest, ".x", &in, &xc);
        double *yy = calloc((size_t)(out * nc), sizeof(double));
        int used = target_apply(l, smallest, x, (int)out, (int)nc, yy, 1, err, sizeof err);
        if (used > 0) {
            double re = rel_err(yy, y, (size_t)(out * nc));
            EXPECT(re < tol, "%s: %s ΔW@x relative error %.3g via zl_lora_delta (tol %g)", label, smallest, re, tol);
        }
        free(yy); free(x); free(y);
    }
    for (int i = 0; i < l->n; i++)
        if (l->m[i].target) set_add_split(&got, l->m[i].target);
        else EXPECT(0, "%s: module %s has no Z-Image target", label, l->m[i].key);
    const char *s;
    EXPECT(!(s = set_minus(&want, &got)), "%s: target %s lost", label, s);
    EXPECT(!(s = set_minus(&got, &want)), "%s: target %s appeared", label, s);
    probes_close(&p);
    return nbad;
}

static const char *to_formats[] = {"diffusers", "ai-toolkit", "kohya", "comfyui", "diffsynth"};

TEST(lora_ref_roundtrip) {
    SETUP();
    int nbad = 0, nconv = 0;
    char rt[1200];
    snprintf(rt, sizeof rt, "%s/rt", g_dir);
    mkdir(rt, 0755);
    const cJSON *e;
    cJSON_ArrayForEach(e, g_exp) {
        const char *name = e->string;
        if (!is_zimage(e) || !jtrue(e, "roundtrip")) continue;
        char in[1200];
        path_of(in, sizeof in, name);
        for (int f = 0; f < 5; f++) {
            const char *F = to_formats[f];
            char outp[1400], label[400], *out, *err;
            snprintf(outp, sizeof outp, "%s/%.*s.%s.safetensors", rt, (int)(strlen(name) - 12), name, F);
            snprintf(label, sizeof label, "%s --to %s", name, F);
            int rc = cli(&out, &err, "lora convert '%s' '%s' --to %s", in, outp, F);
            EXPECT(rc == 0, "%s: exit %d: %s", label, rc, err);
            free(out); free(err);
            if (rc) continue;
            nconv++;
            zl_lora *l;
            if (zl_lora_load(outp, &l)) { EXPECT(0, "%s: output does not load: %s", label, zl_last_error()); continue; }
            EXPECT(!strcmp(l->family, "z-image"), "%s: output family %s", label, l->family);
            if (f == 3) {
                const char *fn = zl_format_name(l->format);
                EXPECT(!strcmp(fn, "ai-toolkit") || !strcmp(fn, "kohya") || !strcmp(fn, "comfyui"), "%s: output format %s", label, fn);
                EXPECT(!strcmp(l->qkv, "fused"), "%s: output qkv %s, expected fused", label, l->qkv);
            } else if (f == 4 && !cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(e, "adapters"), "lora")) {
                /* DiffSynth only spells LoRA (`.lora_A.default.weight`); other adapters come out bare */
                const char *fn = zl_format_name(l->format);
                EXPECT(!strcmp(fn, "diffsynth") || !strcmp(fn, "bare"), "%s: output reads back as format %s", label, fn);
                EXPECT(!strcmp(l->qkv, "split"), "%s: output qkv %s, expected split", label, l->qkv);
            } else {
                EXPECT(!strcmp(zl_format_name(l->format), F), "%s: output reads back as format %s", label, zl_format_name(l->format));
                EXPECT(!strcmp(l->qkv, "split"), "%s: output qkv %s, expected split", label, l->qkv);
            }
            const cJSON *ad = cJSON_GetObjectItemCaseSensitive(e, "adapters");
            for (int i = 0; i < l->n; i++)
                EXPECT(cJSON_GetObjectItemCaseSensitive(ad, zl_adapter_name(l->m[i].kind)), "%s: output module %s is %s",
                       label, l->m[i].key, zl_adapter_name(l->m[i].kind));
            /* for fused outputs, also run one fused module through zl_lora_delta (row block extraction) */
            const char *also = f == 3 && (!strcmp(name, "zi_diffusers.safetensors") || !strcmp(name, "zi_loha.safetensors"))
                                   ? "layers.0.attention.to_k" : NULL;
            nbad += compare_to_probes(label, e, l, tol_of(e), also, NULL, NULL);
            zl_lora_free(l);
        }
    }
    CHECK(nconv > 0);
    END();
}

TEST(lora_ref_lokr_comfyui) {
    SETUP();
    int nbad = 0, nl = 0;
    const cJSON *e;
    cJSON_ArrayForEach(e, g_exp) {
        const char *name = e->string;
        if (!is_zimage(e) || !jtrue(e, "lokr")) continue;
        nl++;
        char in[1200], outp[1400], label[300], *out, *err;
        path_of(in, sizeof in, name);
        snprintf(outp, sizeof outp, "%s/%.*s.comfyui.safetensors", g_dir, (int)(strlen(name) - 12), name);
        const char *mode = jstr(e, "lokr_comfyui");
        int rc = cli(&out, &err, "lora convert '%s' '%s' --to comfyui", in, outp);
        if (mode && !strcmp(mode, "refuse"))
            EXPECT(rc != 0, "%s --to comfyui without --lossy: exit 0 (full-rank LoKr q/k/v cannot be fused exactly)", name);
        EXPECT(rc == 0 || strstr(err, "error:"), "%s --to comfyui: no error: line: %s", name, err);
        EXPECT(rc == 0 || !zl_file_exists(outp), "%s --to comfyui: failed but wrote %s", name, outp);
        free(out); free(err);
        if (rc == 0) { /* accepted without --lossy: then it must be exact */
            zl_lora *l;
            snprintf(label, sizeof label, "%s --to comfyui (exact)", name);
            if (zl_lora_load(outp, &l)) EXPECT(0, "%s: output does not load: %s", label, zl_last_error());
            else {
                EXPECT(!strcmp(l->qkv, "fused"), "%s: qkv %s, expected fused", label, l->qkv);
                nbad += compare_to_probes(label, e, l, tol_of(e), "layers.0.attention.to_v", NULL, NULL);
                zl_lora_free(l);
            }
        }
        remove(outp);
        rc = cli(&out, &err, "lora convert '%s' '%s' --to comfyui --lossy", in, outp);
        EXPECT(rc == 0, "%s --to comfyui --lossy: exit %d: %s", name, rc, err);
        free(out); free(err);
        if (rc) continue;
        zl_lora *l;
        if (zl_lora_load(outp, &l)) { EXPECT(0, "%s lossy output does not load: %s", name, zl_last_error()); continue; }
        EXPECT(!strcmp(l->qkv, "fused"), "%s --lossy: qkv %s, expected fused", name, l->qkv);
        snprintf(label, sizeof label, "%s --to comfyui --lossy", name);
        double worst = 0;
        /* q/k/v are approximated: only bounded (an optimal truncation never does worse than zero);
         * every other target must stay exact */
        nbad += compare_to_probes(label, e, l, tol_of(e), NULL, "qkv", &worst);
        EXPECT(worst < 1.0, "%s: q/k/v approximation relative error %.3g ≥ 1", label, worst);
        zl_lora_free(l);
    }
    CHECK(nl >= 2);
    END();
}

/* ------------------------------------------------------------------ (e) merge */

static const cJSON *exp_of(const char *name) { return cJSON_GetObjectItemCaseSensitive(g_exp, name); }

/* Runs merge of a:sa b:sb and compares every target of either input: against the reference probes
 * (when `pure`, both inputs probed with the same x) or against the loaded inputs otherwise. */
static int merge_case(const char *a, float sa, const char *b, float sb, int check_rank_concat) {
    int nbad = 0;
    char pa[1200], pb[1200], po[1400], label[300], err[512], *out, *errs;
    path_of(pa, sizeof pa, a);
    path_of(pb, sizeof pb, b);
    snprintf(po, sizeof po, "%s/merge-%.*s-%.*s.safetensors", g_dir, (int)(strlen(a) - 12), a, (int)(strlen(b) - 12), b);
    snprintf(label, sizeof label, "merge %s:%g %s:%g", a, (double)sa, b, (double)sb);
    int rc = cli(&out, &errs, "lora merge '%s' '%s:%g' '%s:%g'", po, pa, (double)sa, pb, (double)sb);
    EXPECT(rc == 0, "%s: exit %d: %s", label, rc, errs);
    free(out); free(errs);
    if (rc) return nbad;
    zl_lora *lm, *la, *lb;
    if (zl_lora_load(po, &lm)) { EXPECT(0, "%s: output does not load: %s", label, zl_last_error()); return nbad; }
    if (zl_lora_load(pa, &la) || zl_lora_load(pb, &lb)) { EXPECT(0, "%s: inputs: %s", label, zl_last_error()); zl_lora_free(lm); return nbad; }
    probes PA, PB;
    if (probes_open(exp_of(a), &PA) || probes_open(exp_of(b), &PB)) { EXPECT(0, "%s: probes", label); return nbad; }
    strset targets = {0};
    char T[200];
    for (int i = 0; probe_target(&PA, i, T, sizeof T); i++) set_add(&targets, T);
    for (int i = 0; probe_target(&PB, i, T, sizeof T); i++) set_add(&targets, T);
    for (int t = 0; t < targets.n; t++) {
        const char *tg = targets.name[t];
        int64_t out_a = 0, nc = 3, in = 0, xc, out_b = 0;
        float *xa = probe_get(&PA, tg, ".x", &in, &xc), *xb = probe_get(&PB, tg, ".x", &in, &xc);
        float *ya = probe_get(&PA, tg, ".y", &out_a, &nc), *yb = probe_get(&PB, tg, ".y", &out_b, &nc);
        int64_t out = out_a ? out_a : out_b;
        const float *x = xa ? xa : xb;
        if (xa && xb) EXPECT(!memcmp(xa, xb, sizeof(float) * (size_t)(in * 3)), "%s: probe x of %s differs between files (test bug)", label, tg);
        double *want = calloc((size_t)(out * nc), sizeof(double)), *got = calloc((size_t)(out * nc), sizeof(double));
        double *tmp = calloc((size_t)(out * nc), sizeof(double));
        /* reference: s·y where the file has this probe, else the loaded input's ΔW (checked by lora_ref_probes) */
        const zl_lora *ls[2] = {la, lb};
        float *ys[2] = {ya, yb};
        float ss[2] = {sa, sb};
        for (int k = 0; k < 2; k++) {
            if (ys[k]) { for (int64_t i = 0; i < out * nc; i++) want[i] += ss[k] * (double)ys[k][i]; continue; }
            int used = target_apply(ls[k], tg, x, (int)out, (int)nc, tmp, 0, err, sizeof err);
            EXPECT(used >= 0, "%s: input %d: %s", label, k, err);
            if (used > 0) for (int64_t i = 0; i < out * nc; i++) want[i] += ss[k] * tmp[i];
        }
        int used = target_apply(lm, tg, x, (int)out, (int)nc, got, 0, err, sizeof err);
        EXPECT(used >= 0, "%s: %s: %s", label, tg, err);
        EXPECT(used != 0, "%s: target %s missing in the output", label, tg);
        if (used > 0) {
            double re = rel_err_d(got, want, (size_t)(out * nc));
            EXPECT(re < 1e-5, "%s: %s relative error %.3g", label, tg, re);
        }
        if (check_rank_concat && ya && yb) {
            const zl_lora_module *m = find_module(lm, tg, 0);
            const zl_lora_module *ma = find_module(la, tg, 0), *mb = find_module(lb, tg, 0);
            EXPECT(m && ma && mb && m->kind == ZL_AD_LORA && m->rank == ma->rank + mb->rank,
                   "%s: %s merged rank %d, expected %d + %d (ranks concatenated)", label, tg, m ? m->rank : -1,
                   ma ? ma->rank : -1, mb ? mb->rank : -1);
        }
        free(want); free(got); free(tmp); free(xa); free(xb); free(ya); free(yb);
    }
    probes_close(&PA); probes_close(&PB);
    zl_lora_free(lm); zl_lora_free(la); zl_lora_free(lb);
    return nbad;
}

TEST(lora_ref_merge) {
    SETUP();
    int nbad = 0;
    /* same naming family, overlapping targets (layers.0 attention + FFN) and disjoint ones */
    nbad += merge_case("zi_diffusers.safetensors", 0.5f, "zi_kohya.safetensors", 1.5f, 1);
    /* fused qkv with split qkv on the same block, a negative strength */
    nbad += merge_case("zi_comfy_fused.safetensors", 1.0f, "zi_diffusers.safetensors", -0.5f, 0);
    END();
}

/* ------------------------------------------------------------------ (f) resize */

TEST(lora_ref_resize) {
    SETUP();
    int nbad = 0;
    const char *name = "zi_diffusers.safetensors";
    const cJSON *e = exp_of(name), *rz = cJSON_GetObjectItemCaseSensitive(e, "resize1");
    CHECK(rz);
    char in[1200], po[1300], *out, *err, errb[512];
    path_of(in, sizeof in, name);
    snprintf(po, sizeof po, "%s/resized-r1.safetensors", g_dir);
    int rc = cli(&out, &err, "lora resize '%s' '%s' --rank 1", in, po);
    CHECK_MSG(rc == 0, "resize exit %d: %s", rc, err);
    /* every percentage on the line that mentions energy */
    const char *line = strstr(out, "energy");
    int nvals = 0;
    double vals[4];
    if (line) {
        while (line > out && line[-1] != '\n') line--;
        for (const char *s = line; *s && *s != '\n' && nvals < 4; s++) {
            char *end;
            if (*s < '0' || *s > '9' || (s > line && ((s[-1] >= '0' && s[-1] <= '9') || s[-1] == '.'))) continue;
            double v = strtod(s, &end);
            if (*end == '%') { vals[nvals++] = v / 100.0; s = end; }
        }
    }
    EXPECT(nvals >= 1, "resize printed no energy percentage: %s", out);
    for (int i = 0; i < nvals; i++) EXPECT(vals[i] > 0 && vals[i] <= 1.0, "resize energy %g not in (0,1]", vals[i]);
    double emin = jnum(rz, "energy_min", -1), emean = jnum(rz, "energy_mean", -1);
    if (nvals >= 2) { /* "… X% on average, Y% at worst" */
        EXPECT(fabs(vals[0] - emean) < 1e-4, "resize mean energy %.6f, reference %.6f", vals[0], emean);
        EXPECT(fabs(vals[1] - emin) < 1e-4, "resize worst energy %.6f, reference %.6f", vals[1], emin);
    }
    free(out); free(err);
    zl_lora *l;
    CHECK_MSG(zl_lora_load(po, &l) == 0, "resized file: %s", zl_last_error());
    EXPECT(l->n == (int)jnum(e, "modules", -1), "resized: %d modules, expected %d", l->n, (int)jnum(e, "modules", -1));
    for (int i = 0; i < l->n; i++)
        EXPECT(l->m[i].kind == ZL_AD_LORA && l->m[i].rank == 1, "resized: %s is %s rank %d", l->m[i].key,
               zl_adapter_name(l->m[i].kind), l->m[i].rank);
    probes p;
    CHECK(probes_open(e, &p) == 0);
    char T[200];
    for (int i = 0; probe_target(&p, i, T, sizeof T); i++) {
        int64_t o, nc, inn, xc;
        float *y1 = probe_get(&p, T, ".y_r1", &o, &nc), *x = probe_get(&p, T, ".x", &inn, &xc);
        EXPECT(y1, "reference has no rank-1 probe for %s (test bug)", T);
        if (y1) {
            double *got = calloc((size_t)(o * nc), sizeof(double));
            int used = target_apply(l, T, x, (int)o, (int)nc, got, i == 0, errb, sizeof errb);
            EXPECT(used > 0, "resized: %s: %s", T, used < 0 ? errb : "missing");
            if (used > 0) {
                double re = rel_err(got, y1, (size_t)(o * nc));
                EXPECT(re < 1e-4, "resized: %s differs from the best rank-1 approximation: relative error %.3g", T, re);
            }
            free(got);
        }
        free(y1); free(x);
    }
    probes_close(&p);
    zl_lora_free(l);
    END();
}
