/* attention.c — zl_op_attention (see ops.h): tiled attention with online softmax, never an nq×nk matrix.
 *
 * Work is split OpenMP-dynamic over tasks (head h, block of BQ = 64 queries). A task keeps, in per-thread
 * scratch of O(hd·BQ + BK·BQ) floats, everything TRANSPOSED so that the 64 queries lie along the vector
 * lanes:
 *   Qt [hd][BQ]  the task's queries, pre-scaled by log2(e)/sqrt(hd) (so softmax uses exp2);
 *   St [BK][BQ]  scores of BK keys against the 64 queries, then their probabilities;
 *   Ot [hd][BQ]  the unnormalised output;  m, l [BQ]  running max (log2 units) and sum per query.
 * For each block of BK keys: St = K_blk · Qt (a key broadcast times a row of Qt), causal mask, then per
 * lane m' = max(m, max_j St), α = 2^(m−m'), P = 2^(St−m'), l = α·l + Σ_j P, and Ot = α·Ot + V_blkᵀ · P (a
 * V element broadcast times a row of P). The softmax bookkeeping is thus fully vectorised, and K and V are
 * read in place (row stride hkv·hd) with no transposition. At the end o = Otᵀ / l and lse = ln2·(m + log2 l).
 *
 * A query row with no visible key (causal with nq > nk) gets o = 0 and lse = −inf.
 *
 * Three versions (ops_internal.h): AVX-512 intrinsics (register-blocked: 6 keys × 64 queries for QK, 6 dims ×
 * 64 queries for PV); the same algorithm in portable C; and a row-at-a-time version with no scratch at all
 * (accumulating in the output row) used when scratch cannot be allocated.
 */
#include "nn/ops.h"
#include "nn/ops_internal.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define BQ 64  /* queries per task (4 vectors of 16) */
#define BK 128 /* keys per block */
#define JR 6   /* keys per register block (QK) */
#define DR 6   /* output dims per register block (PV) */

#define LOG2E 1.44269504088896340736
#define LN2 0.69314718055994530942

typedef struct {
    const float *q, *k, *v;
    float *o, *lse;
    int nq, nk, hq, hkv, hd, causal, group, off;
    size_t qs, ks; /* row strides of q/o and k/v */
    float qscale;  /* log2(e) / sqrt(hd) */
} att_t;

typedef struct {
    float *Qt, *Ot, *St, *m, *l, *al;
} att_scr;

/* Number of keys a task sees: all, or up to the causal limit of its last query. */
static long task_kend(const att_t *a, int i0, int bq) {
    if (!a->causal) return a->nk;
    long e = (long)i0 + bq + a->off;
    return e < a->nk ? e : a->nk;
}

/* o rows and lse for query rows with no visible keys. */
static void write_empty(const att_t *a, int h, int i) {
    memset(a->o + (size_t)i * a->qs + (size_t)h * a->hd, 0, sizeof(float) * (size_t)a->hd);
    if (a->lse) a->lse[(size_t)h * a->nq + i] = -INFINITY;
}

static void load_qt(const att_t *a, const att_scr *s, int h, int i0, int bq, int width) {
    for (int c = 0; c < width; c++) {
        const float *qr = a->q + (size_t)(i0 + c) * a->qs + (size_t)h * a->hd;
        for (int d = 0; d < a->hd; d++) s->Qt[(size_t)d * BQ + c] = c < bq ? qr[d] * a->qscale : 0.0f;
    }
    for (int d = 0; d < a->hd; d++)
        for (int c = 0; c < width; c++) s->Ot[(size_t)d * BQ + c] = 0.0f;
    for (int c = 0; c < width; c++) {
        s->m[c] = -INFINITY;
        s->l[c] = 0.0f;
    }
}

static void store_out(const att_t *a, const att_scr *s, int h, int i0, int bq) {
    for (int c = 0; c < bq; c++) {
        int i = i0 + c;
        if (s->m[c] == -INFINITY) { write_empty(a, h, i); continue; }
        float *orow = a->o + (size_t)i * a->qs + (size_t)h * a->hd;
        float inv = 1.0f / s->l[c];
        for (int d = 0; d < a->hd; d++) orow[d] = s->Ot[(size_t)d * BQ + c] * inv;
        if (a->lse) a->lse[(size_t)h * a->nq + i] = (float)(LN2 * ((double)s->m[c] + log2((double)s->l[c])));
    }
}

/* ------------------------------------------------------------------ portable C version */

static void task_generic(const att_t *a, const att_scr *s, int h, int i0, int bq) {
    int hd = a->hd, kvh = h / a->group;
    long kend = task_kend(a, i0, bq);
    load_qt(a, s, h, i0, bq, BQ);
    for (long j0 = 0; j0 < kend; j0 += BK) {
        int nkb = (int)(kend - j0 < BK ? kend - j0 : BK);
        const float *K = a->k + (size_t)j0 * a->ks + (size_t)kvh * hd;
        const float *V = a->v + (size_t)j0 * a->ks + (size_t)kvh * hd;
        for (int j = 0; j < nkb; j++) {
            float *sr = s->St + (size_t)j * BQ, acc[BQ]; /* a local accumulator: no aliasing, so it vectorises */
            const float *kr = K + (size_t)j * a->ks;
            for (int c = 0; c < BQ; c++) acc[c] = 0.0f;
            for (int d = 0; d < hd; d++) {
                const float *qt = s->Qt + (size_t)d * BQ;
                float kv = kr[d];
                for (int c = 0; c < BQ; c++) acc[c] += kv * qt[c];
            }
            memcpy(sr, acc, sizeof acc);
            if (a->causal) {
                long thr = j0 + j - a->off - i0; /* lanes c < thr cannot see key j0+j */
                for (int c = 0; c < BQ && c < thr; c++) sr[c] = -INFINITY;
            }
        }
        for (int c = 0; c < BQ; c++) {
            float mx = s->m[c];
            for (int j = 0; j < nkb; j++) mx = fmaxf(mx, s->St[(size_t)j * BQ + c]);
            float mu = mx == -INFINITY ? 0.0f : mx;
            float sum = 0.0f;
            for (int j = 0; j < nkb; j++) {
                float *p = &s->St[(size_t)j * BQ + c];
                *p = exp2f(*p - mu);
                sum += *p;
            }
            s->al[c] = exp2f(s->m[c] - mu);
            s->l[c] = s->l[c] * s->al[c] + sum;
            s->m[c] = mx;
        }
        for (int d = 0; d < hd; d++) {
            float *ot = s->Ot + (size_t)d * BQ, acc[BQ];
            for (int c = 0; c < BQ; c++) acc[c] = ot[c] * s->al[c];
            for (int j = 0; j < nkb; j++) {
                float vv = V[(size_t)j * a->ks + d];
                const float *p = s->St + (size_t)j * BQ;
                for (int c = 0; c < BQ; c++) acc[c] += vv * p[c];
            }
            memcpy(ot, acc, sizeof acc);
        }
    }
    store_out(a, s, h, i0, bq);
}

/* ------------------------------------------------------------------ row-at-a-time version (no scratch) */

/* One query row, accumulating straight into its output row; natural-log units. */
static void row_fallback(const att_t *a, int h, int i) {
    int hd = a->hd, kvh = h / a->group;
    long kend = a->causal ? (long)i + a->off + 1 : a->nk;
    if (kend > a->nk) kend = a->nk;
    if (kend <= 0) { write_empty(a, h, i); return; }
    const float *qr = a->q + (size_t)i * a->qs + (size_t)h * hd;
    float *orow = a->o + (size_t)i * a->qs + (size_t)h * hd;
    float scale = 1.0f / sqrtf((float)hd), m = -INFINITY, l = 0.0f;
    memset(orow, 0, sizeof(float) * (size_t)hd);
    for (long j = 0; j < kend; j++) {
        const float *kr = a->k + (size_t)j * a->ks + (size_t)kvh * hd;
        const float *vr = a->v + (size_t)j * a->ks + (size_t)kvh * hd;
        float sc = 0.0f;
        for (int d = 0; d < hd; d++) sc += qr[d] * kr[d];
        sc *= scale;
        if (sc > m) {
            float al = expf(m - sc); /* m = −inf: 0 */
            l *= al;
            for (int d = 0; d < hd; d++) orow[d] *= al;
            m = sc;
        }
        float p = expf(sc - m);
        l += p;
        for (int d = 0; d < hd; d++) orow[d] += p * vr[d];
    }
    for (int d = 0; d < hd; d++) orow[d] /= l;
    if (a->lse) a->lse[(size_t)h * a->nq + i] = (float)((double)m + log((double)l));
}

/* ------------------------------------------------------------------ AVX-512 version */

#ifdef ZL_X86_SIMD
/* The register blocks are written with one named accumulator per (row, vector), a<row><vector>, and
 * constant guards (JN/DN rows, NV vectors are compile-time constants after inlining), because both gcc and
 * clang then keep them all in registers; arrays of __m512 are not reliably promoted by clang. */
#define GRID(M) M(0, 0) M(0, 1) M(0, 2) M(0, 3) M(1, 0) M(1, 1) M(1, 2) M(1, 3) M(2, 0) M(2, 1) M(2, 2) M(2, 3) \
                M(3, 0) M(3, 1) M(3, 2) M(3, 3) M(4, 0) M(4, 1) M(4, 2) M(4, 3) M(5, 0) M(5, 1) M(5, 2) M(5, 3)
#define DECL(r, v) __m512 a##r##v = _mm512_setzero_ps();
#define FMA4(r, b)                                                     \
    do {                                                               \
        a##r##0 = _mm512_fmadd_ps(b, x0, a##r##0);                     \
        if (NV > 1) a##r##1 = _mm512_fmadd_ps(b, x1, a##r##1);         \
        if (NV > 2) a##r##2 = _mm512_fmadd_ps(b, x2, a##r##2);         \
        if (NV > 3) a##r##3 = _mm512_fmadd_ps(b, x3, a##r##3);         \
    } while (0)

/* St[j..j+JN) = K rows j.. · Qt, NV vectors of queries (JN <= JR). */
ZL_AVX512_INLINE void qk_rows(float *St, const float *Qt, const float *K, size_t ks, int j, int hd, const int NV,
                              const int JN) {
    GRID(DECL)
    const float *k0 = K + (size_t)j * ks;
    for (int d = 0; d < hd; d++) {
        const float *qt = Qt + (size_t)d * BQ;
        __m512 x0 = _mm512_load_ps(qt), x1 = _mm512_load_ps(qt + 16), x2 = _mm512_load_ps(qt + 32),
               x3 = _mm512_load_ps(qt + 48);
#define QKROW(r) if (JN > r) FMA4(r, _mm512_set1_ps(k0[(size_t)(r) * ks + d]));
        QKROW(0) QKROW(1) QKROW(2) QKROW(3) QKROW(4) QKROW(5)
#undef QKROW
    }
#define QKST(r, v) if (JN > r && NV > v) _mm512_store_ps(St + (size_t)(j + r) * BQ + 16 * v, a##r##v);
    GRID(QKST)
#undef QKST
}

/* Ot[d..d+DN) = α·Ot + Σ_j V[j][d..] · P[j], NV vectors of queries (DN <= DR). */
ZL_AVX512_INLINE void pv_rows(float *Ot, const float *P, const float *V, size_t ks, const float *al, int d,
                              int nkb, const int NV, const int DN) {
    GRID(DECL)
    {
        __m512 x0 = _mm512_load_ps(al), x1 = _mm512_load_ps(al + 16), x2 = _mm512_load_ps(al + 32),
               x3 = _mm512_load_ps(al + 48);
#define PVLD(r, v) \
    if (DN > r && NV > v) a##r##v = _mm512_mul_ps(x##v, _mm512_load_ps(Ot + (size_t)(d + r) * BQ + 16 * v));
        GRID(PVLD)
#undef PVLD
    }
    const float *v0 = V + d;
    for (int j = 0; j < nkb; j++) {
        const float *p = P + (size_t)j * BQ;
        __m512 x0 = _mm512_load_ps(p), x1 = _mm512_load_ps(p + 16), x2 = _mm512_load_ps(p + 32),
               x3 = _mm512_load_ps(p + 48);
        const float *vr = v0 + (size_t)j * ks;
#define PVROW(r) if (DN > r) FMA4(r, _mm512_set1_ps(vr[r]));
        PVROW(0) PVROW(1) PVROW(2) PVROW(3) PVROW(4) PVROW(5)
#undef PVROW
    }
#define PVST(r, v) if (DN > r && NV > v) _mm512_store_ps(Ot + (size_t)(d + r) * BQ + 16 * v, a##r##v);
    GRID(PVST)
#undef PVST
}

ZL_AVX512_INLINE void task_simd_nv(const att_t *a, const att_scr *s, int h, int i0, int bq, const int NV) {
    int hd = a->hd, kvh = h / a->group;
    long kend = task_kend(a, i0, bq);
    load_qt(a, s, h, i0, bq, 16 * NV);
    const __m512 ninf = _mm512_set1_ps(-INFINITY), zero = _mm512_setzero_ps();
    const __m512i lane = _mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0);
    for (long j0 = 0; j0 < kend; j0 += BK) {
        int nkb = (int)(kend - j0 < BK ? kend - j0 : BK);
        const float *K = a->k + (size_t)j0 * a->ks + (size_t)kvh * hd;
        const float *V = a->v + (size_t)j0 * a->ks + (size_t)kvh * hd;
        int j = 0;
        for (; j + JR <= nkb; j += JR) qk_rows(s->St, s->Qt, K, a->ks, j, hd, NV, JR);
        for (; j < nkb; j++) qk_rows(s->St, s->Qt, K, a->ks, j, hd, NV, 1);
        if (a->causal && j0 + nkb - 1 - a->off - i0 > 0) {
            for (j = 0; j < nkb; j++) {
                long thr = j0 + j - a->off - i0; /* lanes c < thr cannot see key j0+j */
                if (thr <= 0) continue;
                for (int v = 0; v < NV; v++) {
                    long t = thr - 16 * v;
                    if (t <= 0) break;
                    __mmask16 mk = t >= 16 ? (__mmask16)0xffff
                                           : _mm512_cmplt_epi32_mask(lane, _mm512_set1_epi32((int)t));
                    float *p = s->St + (size_t)j * BQ + 16 * v;
                    _mm512_store_ps(p, _mm512_mask_blend_ps(mk, _mm512_load_ps(p), ninf));
                }
            }
        }
        for (int v = 0; v < NV; v++) {
            __m512 mo = _mm512_load_ps(s->m + 16 * v), mx = mo;
            for (j = 0; j < nkb; j++) mx = _mm512_max_ps(mx, _mm512_load_ps(s->St + (size_t)j * BQ + 16 * v));
            __m512 mu = _mm512_mask_blend_ps(_mm512_cmp_ps_mask(mx, ninf, _CMP_EQ_OQ), mx, zero);
            __m512 sum = zero;
            for (j = 0; j < nkb; j++) {
                float *p = s->St + (size_t)j * BQ + 16 * v;
                __m512 e = zl_exp2_ps(_mm512_sub_ps(_mm512_load_ps(p), mu));
                _mm512_store_ps(p, e);
                sum = _mm512_add_ps(sum, e);
            }
            __m512 al = zl_exp2_ps(_mm512_sub_ps(mo, mu));
            _mm512_store_ps(s->al + 16 * v, al);
            _mm512_store_ps(s->l + 16 * v, _mm512_fmadd_ps(_mm512_load_ps(s->l + 16 * v), al, sum));
            _mm512_store_ps(s->m + 16 * v, mx);
        }
        int d = 0;
        for (; d + DR <= hd; d += DR) pv_rows(s->Ot, s->St, V, a->ks, s->al, d, nkb, NV, DR);
        for (; d + 2 <= hd; d += 2) pv_rows(s->Ot, s->St, V, a->ks, s->al, d, nkb, NV, 2);
        for (; d < hd; d++) pv_rows(s->Ot, s->St, V, a->ks, s->al, d, nkb, NV, 1);
    }
    store_out(a, s, h, i0, bq);
}

ZL_AVX512 static void task_simd1(const att_t *a, const att_scr *s, int h, int i0, int bq) {
    task_simd_nv(a, s, h, i0, bq, 1);
}
ZL_AVX512 static void task_simd2(const att_t *a, const att_scr *s, int h, int i0, int bq) {
    task_simd_nv(a, s, h, i0, bq, 2);
}
ZL_AVX512 static void task_simd3(const att_t *a, const att_scr *s, int h, int i0, int bq) {
    task_simd_nv(a, s, h, i0, bq, 3);
}
ZL_AVX512 static void task_simd4(const att_t *a, const att_scr *s, int h, int i0, int bq) {
    task_simd_nv(a, s, h, i0, bq, 4);
}

static void task_simd(const att_t *a, const att_scr *s, int h, int i0, int bq) {
    switch ((bq + 15) / 16) {
    case 1: task_simd1(a, s, h, i0, bq); break;
    case 2: task_simd2(a, s, h, i0, bq); break;
    case 3: task_simd3(a, s, h, i0, bq); break;
    default: task_simd4(a, s, h, i0, bq); break;
    }
}
#endif

/* ------------------------------------------------------------------ driver */

void zl_op_attention(float *o, const float *q, const float *k, const float *v, int nq, int nk, int hq, int hkv,
                     int hd, int causal, float *lse) {
    if (nq <= 0 || hq <= 0 || hd <= 0) return;
    att_t a = {q, k, v, o, lse, nq, nk < 0 ? 0 : nk, hq, hkv, hd, causal, hkv > 0 ? hq / hkv : 1, 0,
               (size_t)hq * hd, (size_t)hkv * hd, (float)(LOG2E / sqrt((double)hd))};
    if (a.group < 1) a.group = 1;
    a.off = a.nk - nq;
    int kern = zl_ops_kernels_();
    int nqb = (nq + BQ - 1) / BQ;
    long ntask = (long)hq * nqb;
    size_t qbytes = sizeof(float) * (size_t)hd * BQ, sbytes = sizeof(float) * BK * BQ, vbytes = sizeof(float) * BQ;
    size_t total = 2 * qbytes + sbytes + 3 * vbytes;
#pragma omp parallel if (ntask > 1 && (double)nq * a.nk * hq * hd > 1e5)
    {
        float *buf = kern == ZL_KERNELS_FALLBACK ? NULL : aligned_alloc(64, (total + 63) / 64 * 64);
        att_scr s = {0};
        if (buf) {
            s.Qt = buf;
            s.Ot = s.Qt + (size_t)hd * BQ;
            s.St = s.Ot + (size_t)hd * BQ;
            s.m = s.St + BK * BQ;
            s.l = s.m + BQ;
            s.al = s.l + BQ;
        }
#pragma omp for schedule(dynamic, 1)
        for (long t = 0; t < ntask; t++) {
            int h = (int)(t / nqb), i0 = (int)(t % nqb) * BQ;
            int bq = nq - i0 < BQ ? nq - i0 : BQ;
            if (task_kend(&a, i0, bq) <= 0) {
                for (int c = 0; c < bq; c++) write_empty(&a, h, i0 + c);
            } else if (!buf) {
                for (int c = 0; c < bq; c++) row_fallback(&a, h, i0 + c);
            } else {
#ifdef ZL_X86_SIMD
                if (kern == ZL_KERNELS_SIMD) { task_simd(&a, &s, h, i0, bq); continue; }
#endif
                task_generic(&a, &s, h, i0, bq);
            }
        }
        free(buf);
    }
}
