/* attention_grad.c — zl_op_attention_backward (see ops.h): FlashAttention-2's backward on the CPU.
 *
 * With scale = 1/sqrt(hd), per head: S = scale·q·kᵀ, P = exp(S − lse) (lse saved by the forward, so P is
 * the softmax without any running max), O = P·v. Given dO:
 *   D_i = Σ_d dO_id·O_id      dP = dO·vᵀ      dS = P∘(dP − D)
 *   dq = scale·dS·k           dk = scale·dSᵀ·q      dv = Pᵀ·dO
 * P and dS are recomputed in blocks of GBQ queries × GBK keys and never stored whole.
 *
 * dk and dv sum over queries, dq over keys, so one pass would need atomics or per-thread copies of dq.
 * Instead there are two passes, each a set of independent tasks (OpenMP dynamic):
 *   pass 1, task = (kv head, block of keys): loops over the query heads of its group and every query block
 *           that can see its keys; accumulates dk, dv of its keys in scratch, then writes them;
 *   pass 2, task = (query head, block of queries): loops over the key blocks its queries can see;
 *           accumulates dq in scratch, then writes it.
 * S and dP are computed twice (once per pass): 7 block products instead of 5, in exchange for no races
 * and results that do not depend on the thread count.
 *
 * Three versions, as for the forward (ops_internal.h):
 *   AVX-512   the forward's register-blocked products (attention_kernels.h) on transposed blocks of 64
 *             lanes: pass 2 puts queries along the lanes (At = q·scale·log2 e, Bt = dOᵀ; S = K·At and
 *             dP = V·Bt by qk_rows, dQt += Kᵀ·dS by pv_rows), pass 1 puts keys along the lanes (At = k·…,
 *             Bt = vᵀ; S = Q·At, dP = dO·Bt, dVt += dOᵀ·P, dKt += Qᵀ·dS); P = exp2(S − lse·log2 e) in
 *             vectors. Measured at 1024 tokens, 4 heads of 128, on the 2-core test machine: forward 36 ms,
 *             backward 122 ms (3.4×, about the ratio of block products, 7 to 2).
 *   portable  the same passes in plain C, keys (values) held transposed, Kt [hd][GBK], so that each score
 *             row is a sum of broadcast q elements times rows of Kt (#pragma omp simd inner loops);
 *   serial    row at a time with no scratch at all: FALLBACK kernels, or no memory.
 */
#include "nn/ops.h"
#include "nn/ops_internal.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define GBQ 64 /* queries per block */
#define GBK 64 /* keys per block */

typedef struct {
    const float *q, *k, *v, *o, *g, *lse; /* g = dO */
    float *dq, *dk, *dv, *D;
    int nq, nk, hq, hkv, hd, causal, group, off; /* off = nk − nq: query i sees keys j <= i + off */
    size_t qs, ks;                                /* row strides of q/o/g/dq and k/v/dk/dv */
    float scale;
} ag_t;

typedef struct {
    float *Kt, *Vt, *P, *dS, *acc1, *acc2;
} ag_scr;

/* Last key index (exclusive bound) query i can see. */
static inline long kend_of(const ag_t *a, long i) {
    if (!a->causal) return a->nk;
    long e = i + a->off + 1;
    return e < 0 ? 0 : e > a->nk ? a->nk : e;
}

/* Kt, Vt [hd][GBK] = keys [j0, j0+bk) of kv head kvh, transposed (columns past bk zero). */
static void load_kv_t(const ag_t *a, const ag_scr *s, int kvh, int j0, int bk) {
    int hd = a->hd;
    for (int d = 0; d < hd; d++) {
        memset(s->Kt + (size_t)d * GBK + bk, 0, sizeof(float) * (size_t)(GBK - bk));
        memset(s->Vt + (size_t)d * GBK + bk, 0, sizeof(float) * (size_t)(GBK - bk));
    }
    for (int j = 0; j < bk; j++) {
        const float *kr = a->k + (size_t)(j0 + j) * a->ks + (size_t)kvh * hd;
        const float *vr = a->v + (size_t)(j0 + j) * a->ks + (size_t)kvh * hd;
        for (int d = 0; d < hd; d++) {
            s->Kt[(size_t)d * GBK + j] = kr[d];
            s->Vt[(size_t)d * GBK + j] = vr[d];
        }
    }
}

/* P and dS [GBQ][GBK] for queries [i0, i0+bq) of head h against the keys in Kt/Vt (keys j0.., bk of them). */
static void block_p_ds(const ag_t *a, const ag_scr *s, int h, int i0, int bq, int j0, int bk) {
    int hd = a->hd;
    for (int i = 0; i < bq; i++) {
        const float *qi = a->q + (size_t)(i0 + i) * a->qs + (size_t)h * hd;
        const float *gi = a->g + (size_t)(i0 + i) * a->qs + (size_t)h * hd;
        float *P = s->P + (size_t)i * GBK, *dS = s->dS + (size_t)i * GBK;
        float lse = a->lse[(size_t)h * a->nq + i0 + i], Di = a->D[(size_t)h * a->nq + i0 + i];
        long vis = kend_of(a, i0 + i) - j0; /* keys j < vis of this block are visible */
        if (vis > bk) vis = bk;
        if (vis <= 0 || lse == -INFINITY) {
            memset(P, 0, sizeof(float) * GBK);
            memset(dS, 0, sizeof(float) * GBK);
            continue;
        }
        float sc[GBK], dp[GBK];
        for (int j = 0; j < GBK; j++) sc[j] = dp[j] = 0.0f;
        for (int d = 0; d < hd; d++) {
            const float *kt = s->Kt + (size_t)d * GBK, *vt = s->Vt + (size_t)d * GBK;
            float qd = qi[d], gd = gi[d];
#pragma omp simd
            for (int j = 0; j < GBK; j++) {
                sc[j] += qd * kt[j];
                dp[j] += gd * vt[j];
            }
        }
        for (int j = 0; j < GBK; j++) {
            float p = j < vis ? expf(sc[j] * a->scale - lse) : 0.0f;
            P[j] = p;
            dS[j] = p * (dp[j] - Di);
        }
    }
}

/* Pass 1: dk, dv of keys [j0, j0+bk) of kv head kvh. */
static void task_dkdv(const ag_t *a, const ag_scr *s, int kvh, int j0, int bk) {
    int hd = a->hd;
    float *dK = s->acc1, *dV = s->acc2; /* [GBK][hd] */
    memset(dK, 0, sizeof(float) * GBK * (size_t)hd);
    memset(dV, 0, sizeof(float) * GBK * (size_t)hd);
    load_kv_t(a, s, kvh, j0, bk);
    long ifirst = a->causal ? (long)j0 - a->off : 0; /* the first query that sees key j0 */
    if (ifirst < 0) ifirst = 0;
    for (int h = kvh * a->group; h < (kvh + 1) * a->group && h < a->hq; h++)
        for (long i0 = ifirst / GBQ * GBQ; i0 < a->nq; i0 += GBQ) {
            int bq = a->nq - i0 < GBQ ? (int)(a->nq - i0) : GBQ;
            block_p_ds(a, s, h, (int)i0, bq, j0, bk);
            for (int j = 0; j < bk; j++) {
                float *dk = dK + (size_t)j * hd, *dv = dV + (size_t)j * hd;
                for (int i = 0; i < bq; i++) {
                    float p = s->P[(size_t)i * GBK + j], ds = s->dS[(size_t)i * GBK + j];
                    if (p == 0.0f && ds == 0.0f) continue;
                    const float *qi = a->q + (size_t)(i0 + i) * a->qs + (size_t)h * hd;
                    const float *gi = a->g + (size_t)(i0 + i) * a->qs + (size_t)h * hd;
#pragma omp simd
                    for (int d = 0; d < hd; d++) {
                        dv[d] += p * gi[d];
                        dk[d] += ds * qi[d];
                    }
                }
            }
        }
    for (int j = 0; j < bk; j++) {
        float *dkr = a->dk + (size_t)(j0 + j) * a->ks + (size_t)kvh * hd;
        float *dvr = a->dv + (size_t)(j0 + j) * a->ks + (size_t)kvh * hd;
        for (int d = 0; d < hd; d++) {
            dkr[d] = a->scale * dK[(size_t)j * hd + d];
            dvr[d] = dV[(size_t)j * hd + d];
        }
    }
}

/* Pass 2: dq of queries [i0, i0+bq) of head h. */
static void task_dq(const ag_t *a, const ag_scr *s, int h, int i0, int bq) {
    int hd = a->hd, kvh = h / a->group;
    float *dQ = s->acc1; /* [GBQ][hd] */
    memset(dQ, 0, sizeof(float) * GBQ * (size_t)hd);
    long kend = kend_of(a, (long)i0 + bq - 1);
    for (long j0 = 0; j0 < kend; j0 += GBK) {
        int bk = kend - j0 < GBK ? (int)(kend - j0) : GBK;
        load_kv_t(a, s, kvh, (int)j0, bk);
        block_p_ds(a, s, h, i0, bq, (int)j0, bk);
        for (int i = 0; i < bq; i++) {
            float *dq = dQ + (size_t)i * hd;
            for (int j = 0; j < bk; j++) {
                float ds = s->dS[(size_t)i * GBK + j];
                if (ds == 0.0f) continue;
                const float *kr = a->k + (size_t)(j0 + j) * a->ks + (size_t)kvh * hd;
#pragma omp simd
                for (int d = 0; d < hd; d++) dq[d] += ds * kr[d];
            }
        }
    }
    for (int i = 0; i < bq; i++) {
        float *dqr = a->dq + (size_t)(i0 + i) * a->qs + (size_t)h * hd;
        for (int d = 0; d < hd; d++) dqr[d] = a->scale * dQ[(size_t)i * hd + d];
    }
}

/* ------------------------------------------------------------------ AVX-512 version */

#ifdef ZL_X86_SIMD
#define BQ 64 /* lanes of the transposed blocks (attention_kernels.h) */
#define JR 6
#define DR 6
#include "nn/attention_kernels.h"

#define LOG2E 1.44269504088896340736f

/* Per-thread scratch of the SIMD tasks, 64-byte aligned: two transposed operand blocks and two accumulators
 * [hd][BQ], the S and dP blocks [BQ][BQ], and per-lane vectors. */
typedef struct {
    float *At, *Bt, *A1, *A2, *S, *dP;
    float *l2, *Dv, *bias, *ones; /* [BQ] */
} sx_scr;

/* Rows [0, nrows) of S and dP: S = rows of X · At, dP = rows of Y · Bt (X, Y with row stride xs). */
ZL_AVX512_INLINE void two_products(const sx_scr *s, const float *X, const float *Y, size_t xs, int nrows, int hd,
                                   const int NV) {
    int r = 0;
    for (; r + JR <= nrows; r += JR) {
        qk_rows(s->S, s->At, X, xs, r, hd, NV, JR);
        qk_rows(s->dP, s->Bt, Y, xs, r, hd, NV, JR);
    }
    for (; r < nrows; r++) {
        qk_rows(s->S, s->At, X, xs, r, hd, NV, 1);
        qk_rows(s->dP, s->Bt, Y, xs, r, hd, NV, 1);
    }
}

/* Acc[d][lanes] += Σ_r Z[r][d] · M[r][lanes] over rows r < nrows, all d (Z with row stride zs). */
ZL_AVX512_INLINE void acc_product(float *Acc, const float *M, const float *Z, size_t zs, const float *ones, int nrows,
                                  int hd, const int NV) {
    int d = 0;
    for (; d + DR <= hd; d += DR) pv_rows(Acc, M, Z, zs, ones, d, nrows, NV, DR);
    for (; d + 2 <= hd; d += 2) pv_rows(Acc, M, Z, zs, ones, d, nrows, NV, 2);
    for (; d < hd; d++) pv_rows(Acc, M, Z, zs, ones, d, nrows, NV, 1);
}

/* Pass 2 with the queries along the lanes: dq of queries [i0, i0+bq) of head h. At = q·scale·log2(e) and
 * Bt = dO transposed; for each key block S = K·At (log2 units), dP = V·Bt, then dS = P∘(dP − D) over S, and
 * dQt += Kᵀ·dS. */
ZL_AVX512_INLINE void simd_dq_nv(const ag_t *a, const sx_scr *s, int h, int i0, int bq, const int NV) {
    int hd = a->hd, kvh = h / a->group, W = 16 * NV;
    float c2 = a->scale * LOG2E;
    for (int c = 0; c < W; c++) {
        int in = c < bq;
        const float *qr = a->q + (size_t)(i0 + (in ? c : 0)) * a->qs + (size_t)h * hd;
        const float *gr = a->g + (size_t)(i0 + (in ? c : 0)) * a->qs + (size_t)h * hd;
        for (int d = 0; d < hd; d++) {
            s->At[(size_t)d * BQ + c] = in ? qr[d] * c2 : 0.0f;
            s->Bt[(size_t)d * BQ + c] = in ? gr[d] : 0.0f;
        }
        float l = in ? a->lse[(size_t)h * a->nq + i0 + c] : -INFINITY;
        s->l2[c] = l == -INFINITY ? INFINITY : l * LOG2E; /* +inf: P = 0 on this lane */
        s->Dv[c] = in ? a->D[(size_t)h * a->nq + i0 + c] : 0.0f;
    }
    for (int d = 0; d < hd; d++) memset(s->A1 + (size_t)d * BQ, 0, sizeof(float) * (size_t)W);
    const __m512i lane = _mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0);
    long kend = kend_of(a, (long)i0 + bq - 1);
    for (long j0 = 0; j0 < kend; j0 += BQ) {
        int nkb = (int)(kend - j0 < BQ ? kend - j0 : BQ);
        const float *K = a->k + (size_t)j0 * a->ks + (size_t)kvh * hd;
        const float *V = a->v + (size_t)j0 * a->ks + (size_t)kvh * hd;
        two_products(s, K, V, a->ks, nkb, hd, NV);
        for (int j = 0; j < nkb; j++) {
            long thr = a->causal ? j0 + j - a->off - i0 : 0; /* lanes c < thr cannot see key j0+j */
            for (int v = 0; v < NV; v++) {
                float *sp = s->S + (size_t)j * BQ + 16 * v;
                __m512 p = zl_exp2_ps(_mm512_sub_ps(_mm512_load_ps(sp), _mm512_load_ps(s->l2 + 16 * v)));
                if (thr > 16 * v)
                    p = _mm512_maskz_mov_ps(_mm512_cmpge_epi32_mask(lane, _mm512_set1_epi32((int)(thr - 16 * v))), p);
                __m512 dp = _mm512_sub_ps(_mm512_load_ps(s->dP + (size_t)j * BQ + 16 * v), _mm512_load_ps(s->Dv + 16 * v));
                _mm512_store_ps(sp, _mm512_mul_ps(p, dp));
            }
        }
        acc_product(s->A1, s->S, K, a->ks, s->ones, nkb, hd, NV);
    }
    for (int c = 0; c < bq; c++) {
        float *dqr = a->dq + (size_t)(i0 + c) * a->qs + (size_t)h * hd;
        for (int d = 0; d < hd; d++) dqr[d] = a->scale * s->A1[(size_t)d * BQ + c];
    }
}

/* Pass 1 with the keys along the lanes: dk, dv of keys [j0, j0+bk) of kv head kvh. At = k·scale·log2(e),
 * Bt = v transposed; for each query head of the group and block of queries: S = Q·At, dP = dO·Bt, P =
 * exp2(S − lse·log2 e) (kept in S for dVt += dOᵀ·P), dS = P∘(dP − D) (in dP for dKt += Qᵀ·dS). */
ZL_AVX512_INLINE void simd_dkdv_nv(const ag_t *a, const sx_scr *s, int kvh, int j0, int bk, const int NV) {
    int hd = a->hd, W = 16 * NV;
    float c2 = a->scale * LOG2E;
    for (int c = 0; c < W; c++) {
        int in = c < bk;
        const float *kr = a->k + (size_t)(j0 + (in ? c : 0)) * a->ks + (size_t)kvh * hd;
        const float *vr = a->v + (size_t)(j0 + (in ? c : 0)) * a->ks + (size_t)kvh * hd;
        for (int d = 0; d < hd; d++) {
            s->At[(size_t)d * BQ + c] = in ? kr[d] * c2 : 0.0f;
            s->Bt[(size_t)d * BQ + c] = in ? vr[d] : 0.0f;
        }
        s->bias[c] = in ? 0.0f : -INFINITY; /* lanes past the last key: P = 0 */
    }
    for (int d = 0; d < hd; d++) {
        memset(s->A1 + (size_t)d * BQ, 0, sizeof(float) * (size_t)W);
        memset(s->A2 + (size_t)d * BQ, 0, sizeof(float) * (size_t)W);
    }
    const __m512i lane = _mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0);
    long ifirst = a->causal ? (long)j0 - a->off : 0; /* the first query that sees key j0 */
    if (ifirst < 0) ifirst = 0;
    for (int h = kvh * a->group; h < (kvh + 1) * a->group && h < a->hq; h++)
        for (long i0 = ifirst; i0 < a->nq; i0 += BQ) {
            int nr = (int)(a->nq - i0 < BQ ? a->nq - i0 : BQ);
            const float *Q = a->q + (size_t)i0 * a->qs + (size_t)h * hd, *G = a->g + (size_t)i0 * a->qs + (size_t)h * hd;
            two_products(s, Q, G, a->qs, nr, hd, NV);
            for (int i = 0; i < nr; i++) {
                float l = a->lse[(size_t)h * a->nq + i0 + i];
                __m512 l2 = _mm512_set1_ps(l == -INFINITY ? INFINITY : l * LOG2E);
                __m512 Di = _mm512_set1_ps(a->D[(size_t)h * a->nq + i0 + i]);
                long thr = a->causal ? i0 + i + a->off - j0 + 1 : W; /* lanes c >= thr: keys it cannot see */
                for (int v = 0; v < NV; v++) {
                    float *sp = s->S + (size_t)i * BQ + 16 * v, *dpp = s->dP + (size_t)i * BQ + 16 * v;
                    __m512 x = _mm512_add_ps(_mm512_load_ps(sp), _mm512_load_ps(s->bias + 16 * v));
                    __m512 p = zl_exp2_ps(_mm512_sub_ps(x, l2));
                    if (thr < 16 * (v + 1)) {
                        long tv = thr - 16 * v;
                        p = _mm512_maskz_mov_ps(_mm512_cmplt_epi32_mask(lane, _mm512_set1_epi32((int)(tv < 0 ? 0 : tv))), p);
                    }
                    _mm512_store_ps(sp, p);
                    _mm512_store_ps(dpp, _mm512_mul_ps(p, _mm512_sub_ps(_mm512_load_ps(dpp), Di)));
                }
            }
            acc_product(s->A2, s->S, G, a->qs, s->ones, nr, hd, NV);  /* dVt += dOᵀ·P */
            acc_product(s->A1, s->dP, Q, a->qs, s->ones, nr, hd, NV); /* dKt += Qᵀ·dS */
        }
    for (int c = 0; c < bk; c++) {
        float *dkr = a->dk + (size_t)(j0 + c) * a->ks + (size_t)kvh * hd;
        float *dvr = a->dv + (size_t)(j0 + c) * a->ks + (size_t)kvh * hd;
        for (int d = 0; d < hd; d++) {
            dkr[d] = a->scale * s->A1[(size_t)d * BQ + c];
            dvr[d] = s->A2[(size_t)d * BQ + c];
        }
    }
}

ZL_AVX512 static void simd_dq(const ag_t *a, const sx_scr *s, int h, int i0, int bq) {
    switch ((bq + 15) / 16) {
    case 1: simd_dq_nv(a, s, h, i0, bq, 1); break;
    case 2: simd_dq_nv(a, s, h, i0, bq, 2); break;
    case 3: simd_dq_nv(a, s, h, i0, bq, 3); break;
    default: simd_dq_nv(a, s, h, i0, bq, 4); break;
    }
}

ZL_AVX512 static void simd_dkdv(const ag_t *a, const sx_scr *s, int kvh, int j0, int bk) {
    switch ((bk + 15) / 16) {
    case 1: simd_dkdv_nv(a, s, kvh, j0, bk, 1); break;
    case 2: simd_dkdv_nv(a, s, kvh, j0, bk, 2); break;
    case 3: simd_dkdv_nv(a, s, kvh, j0, bk, 3); break;
    default: simd_dkdv_nv(a, s, kvh, j0, bk, 4); break;
    }
}
#endif

/* The serial version with no scratch: every (head, query) row, accumulating into zeroed dq, dk, dv. */
static void rows_serial(const ag_t *a) {
    int hd = a->hd;
    memset(a->dq, 0, sizeof(float) * (size_t)a->nq * a->qs);
    memset(a->dk, 0, sizeof(float) * (size_t)a->nk * a->ks);
    memset(a->dv, 0, sizeof(float) * (size_t)a->nk * a->ks);
    for (int h = 0; h < a->hq; h++) {
        int kvh = h / a->group;
        for (int i = 0; i < a->nq; i++) {
            float lse = a->lse[(size_t)h * a->nq + i];
            long kend = kend_of(a, i);
            if (kend <= 0 || lse == -INFINITY) continue;
            const float *qi = a->q + (size_t)i * a->qs + (size_t)h * hd, *gi = a->g + (size_t)i * a->qs + (size_t)h * hd;
            const float *oi = a->o + (size_t)i * a->qs + (size_t)h * hd;
            float *dqi = a->dq + (size_t)i * a->qs + (size_t)h * hd;
            double Dd = 0;
            for (int d = 0; d < hd; d++) Dd += (double)gi[d] * oi[d];
            float D = (float)Dd;
            for (long j = 0; j < kend; j++) {
                const float *kj = a->k + (size_t)j * a->ks + (size_t)kvh * hd, *vj = a->v + (size_t)j * a->ks + (size_t)kvh * hd;
                float *dkj = a->dk + (size_t)j * a->ks + (size_t)kvh * hd, *dvj = a->dv + (size_t)j * a->ks + (size_t)kvh * hd;
                float sc = 0, dp = 0;
                for (int d = 0; d < hd; d++) { sc += qi[d] * kj[d]; dp += gi[d] * vj[d]; }
                float p = expf(sc * a->scale - lse), ds = p * (dp - D);
                for (int d = 0; d < hd; d++) {
                    dqi[d] += a->scale * ds * kj[d];
                    dkj[d] += a->scale * ds * qi[d];
                    dvj[d] += p * gi[d];
                }
            }
        }
    }
}

void zl_op_attention_backward(float *dq, float *dk, float *dv, const float *dout, const float *q, const float *k,
                              const float *v, const float *o, const float *lse, int nq, int nk, int hq, int hkv,
                              int hd, int causal) {
    if (nq <= 0 || hq <= 0 || hd <= 0) return;
    if (nk < 0) nk = 0;
    ag_t a = {q, k, v, o, dout, lse, dq, dk, dv, NULL, nq, nk, hq, hkv, hd, causal, hkv > 0 ? hq / hkv : 1, nk - nq,
              (size_t)hq * hd, (size_t)(hkv > 0 ? hkv : 1) * hd, (float)(1.0 / sqrt((double)hd))};
    if (a.group < 1) a.group = 1;
    if (nk == 0) {
        memset(dq, 0, sizeof(float) * (size_t)nq * a.qs);
        return;
    }
    int kern = zl_ops_kernels_();
    float *D = kern == ZL_KERNELS_FALLBACK ? NULL : malloc(sizeof(float) * (size_t)hq * nq);
    if (!D) {
        rows_serial(&a);
        return;
    }
    a.D = D;
    /* dk, dv of kv heads no query head uses stay 0 */
    memset(dk, 0, sizeof(float) * (size_t)nk * a.ks);
    memset(dv, 0, sizeof(float) * (size_t)nk * a.ks);
    int nkvh = (hq - 1) / a.group + 1; /* kv heads used */
    if (nkvh > hkv) nkvh = hkv;
    int nqb = (nq + GBQ - 1) / GBQ, nkb = (nk + GBK - 1) / GBK;
    long t1 = (long)nkvh * nkb, t2 = (long)hq * nqb;
    int simd = kern == ZL_KERNELS_SIMD;
    /* scratch per thread: GENERIC Kt, Vt [hd][GBK], P, dS [GBQ][GBK], two [64][hd] accumulators; SIMD four
     * [hd][64] blocks, S and dP [64][64] and four [64] vectors (both 64-byte aligned) */
    size_t per = simd ? 4 * (size_t)hd * 64 + 2 * 64 * 64 + 4 * 64
                      : 2 * (size_t)hd * GBK + 2 * (size_t)GBQ * GBK + 2 * (size_t)(GBQ > GBK ? GBQ : GBK) * hd;
    int failed = 0;
#pragma omp parallel if ((double)nq * nk * hq * hd > 1e5)
    {
        float *buf = aligned_alloc(64, sizeof(float) * per);
        ag_scr s = {0};
#ifdef ZL_X86_SIMD
        sx_scr x = {0};
#endif
        if (buf && !simd) {
            s.Kt = buf;
            s.Vt = s.Kt + (size_t)hd * GBK;
            s.P = s.Vt + (size_t)hd * GBK;
            s.dS = s.P + (size_t)GBQ * GBK;
            s.acc1 = s.dS + (size_t)GBQ * GBK;
            s.acc2 = s.acc1 + (size_t)(GBQ > GBK ? GBQ : GBK) * hd;
        }
#ifdef ZL_X86_SIMD
        if (buf && simd) {
            x.At = buf;
            x.Bt = x.At + (size_t)hd * BQ;
            x.A1 = x.Bt + (size_t)hd * BQ;
            x.A2 = x.A1 + (size_t)hd * BQ;
            x.S = x.A2 + (size_t)hd * BQ;
            x.dP = x.S + BQ * BQ;
            x.l2 = x.dP + BQ * BQ;
            x.Dv = x.l2 + BQ;
            x.bias = x.Dv + BQ;
            x.ones = x.bias + BQ;
            for (int c = 0; c < BQ; c++) x.ones[c] = 1.0f;
        }
#endif
        if (!buf) {
#pragma omp atomic write
            failed = 1;
        }
#pragma omp for schedule(static)
        for (long r = 0; r < (long)hq * nq; r++) {
            int h = (int)(r / nq), i = (int)(r % nq);
            const float *gi = dout + (size_t)i * a.qs + (size_t)h * hd, *oi = o + (size_t)i * a.qs + (size_t)h * hd;
            double s2 = 0;
            for (int d = 0; d < hd; d++) s2 += (double)gi[d] * oi[d];
            D[r] = (float)s2; /* row r = h·nq + i */
        }
        int bad; /* every thread set `failed` or not before the barrier that ended the loop above */
#pragma omp atomic read
        bad = failed;
        if (!bad) {
#pragma omp for schedule(dynamic, 1)
            for (long t = 0; t < t1; t++) {
                int kvh = (int)(t / nkb), j0 = (int)(t % nkb) * GBK;
#ifdef ZL_X86_SIMD
                if (simd) { simd_dkdv(&a, &x, kvh, j0, nk - j0 < GBK ? nk - j0 : GBK); continue; }
#endif
                task_dkdv(&a, &s, kvh, j0, nk - j0 < GBK ? nk - j0 : GBK);
            }
#pragma omp for schedule(dynamic, 1)
            for (long t = 0; t < t2; t++) {
                int h = (int)(t / nqb), i0 = (int)(t % nqb) * GBQ;
#ifdef ZL_X86_SIMD
                if (simd) { simd_dq(&a, &x, h, i0, nq - i0 < GBQ ? nq - i0 : GBQ); continue; }
#endif
                task_dq(&a, &s, h, i0, nq - i0 < GBQ ? nq - i0 : GBQ);
            }
        }
        free(buf);
    }
    if (failed) rows_serial(&a);
    free(D);
}
