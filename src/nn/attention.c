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
 *
 * bf16 compute (zl_ops_set_bf16_gemm on): both products take bf16 operands with fp32 accumulation. S = Q·Kᵀ
 * uses q and k rounded to bf16 (nearest even, as zl_f32_to_bf16); O += P·V uses the probabilities P (fp32
 * after exp2) and v rounded to bf16. m, l (summed from the unrounded P), α, lse and Ot stay fp32. On an
 * AVX512_BF16 CPU with SIMD kernels a fourth version runs on vdpbf16ps (each 32-bit lane multiplies a pair
 * of bf16 values and adds both products). Once per call, for all heads, q, k and v are converted into
 *   Qb [hq][nqb][hd2][BQ] uint32  dims (2t, 2t+1) of query c of a block in lane c (hd2 = ⌈hd/2⌉; odd hd and
 *                                 lanes past nq padded with 0), i.e. Qt's layout with pairs of dims;
 *   Kb [hkv][nk][hd2] uint32      key j's dims (2t, 2t+1) as one bf16 pair;
 *   Vb [hkv][nk2][hd] uint32      keys (2t, 2t+1) of dim d as one bf16 pair (nk2 = ⌈nk/2⌉, odd nk padded);
 * (one block, kept between calls: see cb_get), and a task writes its probabilities as Pp [BK/2][BQ] (keys
 * (2t, 2t+1) of query c in lane c, 0 for a key past the block). Then St = Kb_blk · Qb is a broadcast key
 * pair times a row of Qb (times log2(e)/sqrt(hd) on the way out, as q is rounded unscaled), and
 * Ot = α·Ot + Vbᵀ · Pp a broadcast V pair times a row of Pp: half the instructions of the fp32 kernels, with
 * the same register blocking, blocks of keys and softmax code between them. Subnormal bf16 values may
 * count as 0 there. Everywhere else (no AVX512_BF16, GENERIC/FALLBACK kernels, the EMULATE backend of
 * zl_ops_set_attention_bf16_backend, no memory for the block) the same roundings are applied on the fp32
 * path: q when Qt is loaded, k and v into rounded f32 copies (or on the fly in the row version), P after
 * the sum. So the mode gives the same numbers everywhere up to fp32 summation order (the row version
 * rounds P against running instead of block maxima). Off, nothing of this runs: bit for bit the fp32 op.
 * Measured on one Zen 4 core (CPU time of one thread, 30 heads of 128, non-causal, machine shared): 1024
 * tokens 0.19-0.22 s fp32 → 0.10-0.12 s bf16; 4096 tokens 3.7-4.2 s → 1.37-1.44 s (fp32 K/V of a head no
 * longer fit L2 there; bf16 halves that traffic). Per 16 scores the bf16 kernel spends ~85 % in vdpbf16ps.
 */
#include "nn/ops.h"
#include "nn/ops_internal.h"

#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#define BQ 64  /* queries per task (4 vectors of 16) */
#define BK 128 /* keys per block */
#define JR 6   /* keys per register block (QK) */
#define DR 6   /* output dims per register block (PV) */
#include "nn/attention_kernels.h" /* qk_rows, pv_rows: the register-blocked products (needs BQ) */

#define LOG2E 1.44269504088896340736
#define LN2 0.69314718055994530942

typedef struct {
    const float *q, *k, *v;
    float *o, *lse;
    int nq, nk, hq, hkv, hd, causal, group, off;
    size_t qs, ks; /* row strides of q/o and k/v */
    float qscale;  /* log2(e) / sqrt(hd) */
    int rnd;       /* bf16 compute on the fp32 path: round q, k, v and P to bf16 */
    uint32_t *qb, *kb, *vb; /* bf16 kernel: Qb, Kb, Vb (see the top) */
    int hd2, nk2, nqb; /* ⌈hd/2⌉, ⌈nk/2⌉, ⌈nq/BQ⌉ */
} att_t;

typedef struct {
    float *Qt, *Ot, *St, *m, *l, *al;
    uint32_t *Pp; /* bf16 kernel only */
} att_scr;

/* The bf16 kernel's Qb/Kb/Vb block, kept between calls and grown as needed, like linear_dnnl.c's x buffer
 * (fresh pages cost ~10 % at 1024 tokens in page faults and zeroing); it holds the largest
 * 2·(nq·hq + 2·nk·hkv)·hd bytes seen, 94 MB at 4096 tokens × 30 heads × 128. A call that finds it in use
 * by another thread allocates its own. */
static pthread_mutex_t cb_mu = PTHREAD_MUTEX_INITIALIZER;
#ifdef ZL_X86_SIMD
static uint32_t *cb_keep;
static size_t cb_cap; /* uint32 elements */

static uint32_t *cb_get(size_t n, int *kept) {
    size_t bytes = (sizeof(uint32_t) * n + 63) / 64 * 64;
    *kept = 0;
    if (pthread_mutex_trylock(&cb_mu) == 0) {
        if (n > cb_cap) {
            free(cb_keep);
            cb_keep = aligned_alloc(64, bytes);
            cb_cap = cb_keep ? n : 0;
        }
        if (cb_keep) {
            *kept = 1;
            return cb_keep;
        }
        pthread_mutex_unlock(&cb_mu);
    }
    return aligned_alloc(64, bytes);
}
#endif

static void cb_put(uint32_t *p, int kept) {
    if (kept) pthread_mutex_unlock(&cb_mu);
    else free(p);
}

/* bf16 compute: which kernel (zl_ops_set_attention_bf16_backend), and how often the bf16 one ran. */
static int att_bf16_backend = ZL_BF16_GEMM_AUTO;
static long att_bf16_fast;
void zl_ops_set_attention_bf16_backend(int backend) { att_bf16_backend = backend; }
int zl_ops_attention_bf16_backend_(void) { return att_bf16_backend; }
long zl_ops_attention_bf16_fast_calls(void) { return att_bf16_fast; }

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
        if (a->rnd)
            for (int d = 0; d < a->hd; d++) s->Qt[(size_t)d * BQ + c] = c < bq ? zl_bf16_round(qr[d]) * a->qscale : 0.0f;
        else
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
                if (a->rnd) *p = zl_bf16_round(*p);
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
        if (a->rnd) /* bf16 compute: q, k, v and p rounded on the fly */
            for (int d = 0; d < hd; d++) sc += zl_bf16_round(qr[d]) * zl_bf16_round(kr[d]);
        else
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
        if (a->rnd) {
            p = zl_bf16_round(p);
            for (int d = 0; d < hd; d++) orow[d] += p * zl_bf16_round(vr[d]);
        } else {
            for (int d = 0; d < hd; d++) orow[d] += p * vr[d];
        }
    }
    for (int d = 0; d < hd; d++) orow[d] /= l;
    if (a->lse) a->lse[(size_t)h * a->nq + i] = (float)((double)m + log((double)l));
}

/* ------------------------------------------------------------------ AVX-512 version */

#ifdef ZL_X86_SIMD
/* RND: bf16 compute on this fp32 kernel (q rounded by load_qt, k and v by the caller, P here). */
ZL_AVX512_INLINE void task_simd_nv(const att_t *a, const att_scr *s, int h, int i0, int bq, const int NV,
                                   const int RND) {
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
                _mm512_store_ps(p, RND ? _mm512_castsi512_ps(zl_bf16_round_bits(e)) : e);
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
    task_simd_nv(a, s, h, i0, bq, 1, 0);
}
ZL_AVX512 static void task_simd2(const att_t *a, const att_scr *s, int h, int i0, int bq) {
    task_simd_nv(a, s, h, i0, bq, 2, 0);
}
ZL_AVX512 static void task_simd3(const att_t *a, const att_scr *s, int h, int i0, int bq) {
    task_simd_nv(a, s, h, i0, bq, 3, 0);
}
ZL_AVX512 static void task_simd4(const att_t *a, const att_scr *s, int h, int i0, int bq) {
    task_simd_nv(a, s, h, i0, bq, 4, 0);
}
ZL_AVX512 static void task_simd_rnd(const att_t *a, const att_scr *s, int h, int i0, int bq) {
    switch ((bq + 15) / 16) {
    case 1: task_simd_nv(a, s, h, i0, bq, 1, 1); break;
    case 2: task_simd_nv(a, s, h, i0, bq, 2, 1); break;
    case 3: task_simd_nv(a, s, h, i0, bq, 3, 1); break;
    default: task_simd_nv(a, s, h, i0, bq, 4, 1); break;
    }
}

static void task_simd(const att_t *a, const att_scr *s, int h, int i0, int bq) {
    if (a->rnd) { task_simd_rnd(a, s, h, i0, bq); return; }
    switch ((bq + 15) / 16) {
    case 1: task_simd1(a, s, h, i0, bq); break;
    case 2: task_simd2(a, s, h, i0, bq); break;
    case 3: task_simd3(a, s, h, i0, bq); break;
    default: task_simd4(a, s, h, i0, bq); break;
    }
}

/* dst rows [r0, r1) = src rows rounded to bf16, as f32 (rows of ks floats). */
ZL_AVX512 static void round_rows_simd(float *dst, const float *src, size_t ks, size_t r0, size_t r1) {
    size_t i = r0 * ks, e = r1 * ks;
    for (; i + 16 <= e; i += 16)
        _mm512_storeu_ps(dst + i, _mm512_castsi512_ps(zl_bf16_round_bits(_mm512_loadu_ps(src + i))));
    for (; i < e; i++) dst[i] = zl_bf16_round(src[i]);
}

/* ------------------------------------------------------------------ AVX512_BF16 version */

/* Kb for keys [j0, j1), all kv heads (reading k row by row). */
ZL_BF16K static void convert_k(const att_t *a, size_t nkvh, size_t j0, size_t j1) {
    for (size_t j = j0; j < j1; j++)
        for (size_t kvh = 0; kvh < nkvh; kvh++)
            pack_pairs(a->kb + (kvh * (size_t)a->nk + j) * (size_t)a->hd2, 1,
                       a->k + j * a->ks + kvh * (size_t)a->hd, a->hd);
}

/* Vb for key pairs [t0, t1), all kv heads. */
ZL_BF16K static void convert_v(const att_t *a, size_t nkvh, size_t t0, size_t t1) {
    int hd = a->hd;
    for (size_t t = t0; t < t1; t++)
        for (size_t kvh = 0; kvh < nkvh; kvh++) {
            size_t j = 2 * t;
            const float *v0 = a->v + j * a->ks + kvh * (size_t)hd, *v1 = v0 + a->ks;
            int has1 = j + 1 < (size_t)a->nk;
            uint32_t *dst = a->vb + (kvh * (size_t)a->nk2 + t) * (size_t)hd;
            for (int d = 0; d < hd; d += 16) {
                __mmask16 mk = (__mmask16)(hd - d >= 16 ? 0xffffu : (1u << (hd - d)) - 1);
                __m512i lo = _mm512_srli_epi32(zl_bf16_round_bits(_mm512_maskz_loadu_ps(mk, v0 + d)), 16);
                __m512i hi = has1 ? zl_bf16_round_bits(_mm512_maskz_loadu_ps(mk, v1 + d)) : _mm512_setzero_si512();
                _mm512_mask_storeu_epi32(dst + d, mk, _mm512_or_si512(lo, hi));
            }
        }
}

/* Qb for query block ib (queries ib·BQ.., lanes past nq zero), all heads. */
ZL_BF16K static void convert_q(const att_t *a, int ib) {
    size_t blk = (size_t)a->hd2 * BQ;
    for (int c = 0; c < BQ; c++) {
        int i = ib * BQ + c;
        for (int h = 0; h < a->hq; h++) {
            uint32_t *dst = a->qb + ((size_t)h * a->nqb + ib) * blk + c;
            if (i < a->nq) pack_pairs(dst, BQ, a->q + (size_t)i * a->qs + (size_t)h * a->hd, a->hd);
            else for (int t = 0; t < a->hd2; t++) dst[(size_t)t * BQ] = 0;
        }
    }
}

/* Ot = 0, m = −inf, l = 0 for `width` lanes. */
ZL_BF16K_INLINE void init_acc(const att_t *a, const att_scr *s, int width) {
    for (int d = 0; d < a->hd; d++)
        for (int c = 0; c < width; c++) s->Ot[(size_t)d * BQ + c] = 0.0f;
    for (int c = 0; c < width; c++) {
        s->m[c] = -INFINITY;
        s->l[c] = 0.0f;
    }
}

ZL_BF16K_INLINE void task_bf16_nv(const att_t *a, const att_scr *s, int h, int i0, int bq, const int NV) {
    int hd = a->hd, hd2 = a->hd2, kvh = h / a->group;
    long kend = task_kend(a, i0, bq);
    init_acc(a, s, 16 * NV);
    const uint32_t *Qp = a->qb + ((size_t)h * a->nqb + (size_t)(i0 / BQ)) * (size_t)hd2 * BQ;
    const __m512 ninf = _mm512_set1_ps(-INFINITY), zero = _mm512_setzero_ps();
    const __m512i lane = _mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0);
    /* word 2i <- word i (key 2t), word 2i+1 <- word 16+i (key 2t+1) */
    const __m512i ilv = _mm512_set_epi16(31, 15, 30, 14, 29, 13, 28, 12, 27, 11, 26, 10, 25, 9, 24, 8, 23, 7, 22, 6,
                                         21, 5, 20, 4, 19, 3, 18, 2, 17, 1, 16, 0);
    const uint32_t *Kh = a->kb + (size_t)kvh * a->nk * hd2, *Vh = a->vb + (size_t)kvh * a->nk2 * hd;
    for (long j0 = 0; j0 < kend; j0 += BK) {
        int nkb = (int)(kend - j0 < BK ? kend - j0 : BK), np = (nkb + 1) / 2;
        const uint32_t *K = Kh + (size_t)j0 * hd2, *V = Vh + (size_t)(j0 / 2) * hd;
        if (j0 + BK >= kend) /* the last block: fetch the output rows meanwhile (store_out's writes miss) */
            for (int c = 0; c < bq; c++) {
                const char *orow = (const char *)(a->o + (size_t)(i0 + c) * a->qs + (size_t)h * hd);
                for (size_t b = 0; b < sizeof(float) * (size_t)hd; b += 64) _mm_prefetch(orow + b, _MM_HINT_T0);
            }
        int j = 0;
        for (; j + JR <= nkb; j += JR) qk_rows_bf16(s->St, Qp, K, j, hd2, a->qscale, NV, JR);
        for (; j + 2 <= nkb; j += 2) qk_rows_bf16(s->St, Qp, K, j, hd2, a->qscale, NV, 2);
        for (; j < nkb; j++) qk_rows_bf16(s->St, Qp, K, j, hd2, a->qscale, NV, 1);
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
            for (j = 0; j < nkb; j += 2) { /* P of keys j, j+1 -> one row of Pp */
                __m512 e0 = zl_exp2_ps(_mm512_sub_ps(_mm512_load_ps(s->St + (size_t)j * BQ + 16 * v), mu)), e1 = zero;
                sum = _mm512_add_ps(sum, e0);
                if (j + 1 < nkb) {
                    e1 = zl_exp2_ps(_mm512_sub_ps(_mm512_load_ps(s->St + (size_t)(j + 1) * BQ + 16 * v), mu));
                    sum = _mm512_add_ps(sum, e1);
                }
                __m512i pr = _mm512_permutexvar_epi16(ilv, (__m512i)_mm512_cvtne2ps_pbh(e1, e0));
                _mm512_store_si512((void *)(s->Pp + (size_t)(j / 2) * BQ + 16 * v), pr);
            }
            __m512 al = zl_exp2_ps(_mm512_sub_ps(mo, mu));
            _mm512_store_ps(s->al + 16 * v, al);
            _mm512_store_ps(s->l + 16 * v, _mm512_fmadd_ps(_mm512_load_ps(s->l + 16 * v), al, sum));
            _mm512_store_ps(s->m + 16 * v, mx);
        }
        int d = 0;
        for (; d + DR <= hd; d += DR) pv_rows_bf16(s->Ot, s->Pp, V, hd, s->al, d, np, NV, DR);
        for (; d + 2 <= hd; d += 2) pv_rows_bf16(s->Ot, s->Pp, V, hd, s->al, d, np, NV, 2);
        for (; d < hd; d++) pv_rows_bf16(s->Ot, s->Pp, V, hd, s->al, d, np, NV, 1);
    }
    store_out(a, s, h, i0, bq);
}

ZL_BF16K static void task_bf16(const att_t *a, const att_scr *s, int h, int i0, int bq) {
    switch ((bq + 15) / 16) {
    case 1: task_bf16_nv(a, s, h, i0, bq, 1); break;
    case 2: task_bf16_nv(a, s, h, i0, bq, 2); break;
    case 3: task_bf16_nv(a, s, h, i0, bq, 3); break;
    default: task_bf16_nv(a, s, h, i0, bq, 4); break;
    }
}
#endif

/* f32 copies of k or v rows [r0, r1) (row r = key r, all kv heads) rounded to bf16 (bf16 compute, fp32 path). */
static void round_rows(float *dst, const float *src, size_t ks, size_t r0, size_t r1, int simd) {
#ifdef ZL_X86_SIMD
    if (simd) { round_rows_simd(dst, src, ks, r0, r1); return; }
#endif
    (void)simd;
    for (size_t i = r0 * ks; i < r1 * ks; i++) dst[i] = zl_bf16_round(src[i]);
}

/* ------------------------------------------------------------------ driver */

#define CONV_ROWS 16 /* keys (or key pairs) converted per work item, all kv heads */

void zl_op_attention(float *o, const float *q, const float *k, const float *v, int nq, int nk, int hq, int hkv,
                     int hd, int causal, float *lse) {
    if (nq <= 0 || hq <= 0 || hd <= 0) return;
    att_t a = {q, k, v, o, lse, nq, nk < 0 ? 0 : nk, hq, hkv, hd, causal, hkv > 0 ? hq / hkv : 1, 0,
               (size_t)hq * hd, (size_t)hkv * hd, (float)(LOG2E / sqrt((double)hd)), 0, NULL, NULL, NULL, 0, 0, 0};
    if (a.group < 1) a.group = 1;
    a.off = a.nk - nq;
    int kern = zl_ops_kernels_();
    int nqb = (nq + BQ - 1) / BQ;
    long ntask = (long)hq * nqb;
    size_t qbytes = sizeof(float) * (size_t)hd * BQ, sbytes = sizeof(float) * BK * BQ, vbytes = sizeof(float) * BQ;
    size_t total = 2 * qbytes + sbytes + 3 * vbytes;

    /* bf16 compute: the AVX512_BF16 kernel on Kb/Vb (fast), else the fp32 path on rounded copies of k and v
     * (kr, vr), else (no memory for those) the row version rounding on the fly (rows_only) */
    int fast = 0, rows_only = 0;
    uint32_t *cb = NULL; /* Qb, Kb, Vb in one block (cb_kept: the kept one) */
    int cb_kept = 0;
    float *kr = NULL, *vr = NULL;
    size_t nkvh = (size_t)(hq - 1) / (size_t)a.group + 1; /* kv heads used */
    long qitems = 0, kitems = 0, vitems = 0;              /* conversion work: blocks of queries, keys, key pairs */
    (void)nkvh;
    if (zl_ops_bf16_gemm() && a.nk > 0) {
        a.rnd = 1;
        a.hd2 = (hd + 1) / 2;
        a.nk2 = (a.nk + 1) / 2;
        a.nqb = nqb;
#ifdef ZL_X86_SIMD
        if (kern == ZL_KERNELS_SIMD && att_bf16_backend != ZL_BF16_GEMM_EMULATE && zl_ops_have_avx512bf16()) {
            size_t qn = (size_t)hq * nqb * a.hd2 * BQ, kn = nkvh * a.nk * a.hd2, vn = nkvh * a.nk2 * hd;
            qn = (qn + 15) / 16 * 16; /* 64-byte aligned Kb */
            kn = (kn + 15) / 16 * 16;
            if ((cb = cb_get(qn + kn + vn, &cb_kept))) {
                fast = 1;
                a.qb = cb;
                a.kb = cb + qn;
                a.vb = cb + qn + kn;
                total += sizeof(uint32_t) * BK / 2 * BQ;
                qitems = nqb;
                kitems = (a.nk + CONV_ROWS - 1) / CONV_ROWS;
                vitems = (a.nk2 + CONV_ROWS - 1) / CONV_ROWS;
            }
        }
#endif
        if (!fast && kern != ZL_KERNELS_FALLBACK) {
            size_t cnt = (size_t)a.nk * a.ks;
            kr = malloc(sizeof(float) * cnt);
            vr = malloc(sizeof(float) * cnt);
            if (kr && vr) {
                a.k = kr;
                a.v = vr;
                kitems = vitems = (a.nk + CONV_ROWS - 1) / CONV_ROWS;
            } else {
                free(kr);
                free(vr);
                kr = vr = NULL;
                rows_only = 1;
            }
        }
    }
    long nitem = qitems + kitems + vitems;
#pragma omp parallel if (ntask > 1 && (double)nq * a.nk * hq * hd > 1e5)
    {
        float *buf = kern == ZL_KERNELS_FALLBACK || rows_only ? NULL : aligned_alloc(64, (total + 63) / 64 * 64);
        att_scr s = {0};
        if (buf) {
            s.Qt = buf;
            s.Ot = s.Qt + (size_t)hd * BQ;
            s.St = s.Ot + (size_t)hd * BQ;
            s.m = s.St + BK * BQ;
            s.l = s.m + BQ;
            s.al = s.l + BQ;
            if (fast) s.Pp = (uint32_t *)(s.al + BQ);
        }
        if (nitem > 0) {
#pragma omp for schedule(dynamic, 1)
            for (long c = 0; c < nitem; c++) {
                int isv = c >= qitems + kitems;
                long c1 = c - qitems - (isv ? kitems : 0);
                size_t r0 = (size_t)c1 * CONV_ROWS, rn = isv ? (fast ? a.nk2 : a.nk) : a.nk;
                size_t r1 = r0 + CONV_ROWS < rn ? r0 + CONV_ROWS : rn;
#ifdef ZL_X86_SIMD
                if (fast) {
                    if (c < qitems) convert_q(&a, (int)c);
                    else if (!isv) convert_k(&a, nkvh, r0, r1);
                    else convert_v(&a, nkvh, r0, r1);
                    continue;
                }
#endif
                round_rows(isv ? vr : kr, isv ? v : k, a.ks, r0, r1, kern == ZL_KERNELS_SIMD);
            }
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
                if (fast) { task_bf16(&a, &s, h, i0, bq); continue; }
                if (kern == ZL_KERNELS_SIMD) { task_simd(&a, &s, h, i0, bq); continue; }
#endif
                task_generic(&a, &s, h, i0, bq);
            }
        }
        free(buf);
    }
    if (fast) att_bf16_fast++;
    if (cb) cb_put(cb, cb_kept);
    free(kr);
    free(vr);
}
