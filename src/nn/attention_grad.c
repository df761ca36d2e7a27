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
 *
 * bf16 compute (zl_ops_set_bf16_gemm on; ops.h): q, k, v, dO rounded to bf16 for every product, P and dS
 * rounded before theirs. On an AVX512_BF16 CPU with SIMD kernels a fourth version runs the same two passes
 * on vdpbf16ps with attention_kernels.h's bf16 products (pairs of bf16 values along the reduced
 * dimension). Once per call, all heads, the operands are converted into one block (kept between calls):
 *   Kd, Vd [hkv][nk][hd2]   k, v rows as pairs of dims (S = Kd·At and dP = Vd·Bt in pass 2);
 *   Kj [hkv][nk2][hd]       keys (2t, 2t+1) of dim d as one pair (dQt += Kᵀ·dS);
 *   Qd, Gd [hq][nq][hd2]    q, dO rows as pairs of dims (S = Qd·At, dP = Gd·Bt in pass 1);
 *   Qj, Gj [hq][nq2][hd]    queries (2t, 2t+1) of dim d as one pair (dKt += Qᵀ·dS, dVt += dOᵀ·P);
 * a task packs its own lane operands At, Bt (pairs of dims per lane) from the fp32 rows, and P and dS of a
 * block as pairs of rows per lane (as the forward's Pp); pass 1 starts its query blocks at even rows.
 * Elsewhere (EMULATE backend of zl_ops_set_attention_bf16_backend, GENERIC kernels, no AVX512_BF16) the
 * fp32 kernels run on rounded copies of q, k, v, dO and round P and dS in their blocks; the row version
 * rounds on the fly. D = Σ dO∘O always uses the unrounded dO. Same numbers up to fp32 summation order
 * whichever version ran (tests/test_ops_grad.c, grad_attention_bf16).
 */
#include "nn/ops.h"
#include "nn/ops_internal.h"

#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#define GBQ 64 /* queries per block */
#define GBK 64 /* keys per block */

typedef struct {
    const float *q, *k, *v, *o, *g, *lse; /* g = dO (rounded copies of q, k, v, g in the emulated bf16 mode) */
    float *dq, *dk, *dv, *D;
    int nq, nk, hq, hkv, hd, causal, group, off; /* off = nk − nq: query i sees keys j <= i + off */
    size_t qs, ks;                                /* row strides of q/o/g/dq and k/v/dk/dv */
    float scale;
    int rnd;         /* bf16 compute: P and dS rounded to bf16 before their products */
    int fly;         /* ... and q, k, v, g rounded as they are read (row version without copies) */
    const float *g0; /* dO as given (D = Σ dO∘O uses it unrounded) */
    uint32_t *Kd, *Vd, *Kj, *Qd, *Gd, *Qj, *Gj; /* bf16 kernel operands (see the top) */
    int hd2, nk2, nq2;                          /* ⌈hd/2⌉, ⌈nk/2⌉, ⌈nq/2⌉ */
} ag_t;

/* bf16 compute: how often the AVX512_BF16 kernel ran (zl_ops_attention_backward_bf16_fast_calls). */
static long agb_fast;
long zl_ops_attention_backward_bf16_fast_calls(void) { return agb_fast; }

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
            float p = j < vis ? expf(sc[j] * a->scale - lse) : 0.0f, ds = p * (dp[j] - Di);
            P[j] = a->rnd ? zl_bf16_round(p) : p;
            dS[j] = a->rnd ? zl_bf16_round(ds) : ds;
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
/* the kernels' dKᵀ (scaled) and dVᵀ accumulators [hd][BQ] into dk and dv rows j0..j0+bk of kv head kvh */
static inline void store_dkdv(const ag_t *a, const float *A1, const float *A2, int kvh, int j0, int bk, int hd) {
    for (int c = 0; c < bk; c++) {
        float *dkr = a->dk + (size_t)(j0 + c) * a->ks + (size_t)kvh * hd;
        float *dvr = a->dv + (size_t)(j0 + c) * a->ks + (size_t)kvh * hd;
        for (int d = 0; d < hd; d++) {
            dkr[d] = a->scale * A1[(size_t)d * BQ + c];
            dvr[d] = A2[(size_t)d * BQ + c];
        }
    }
}

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
                __m512 ds = _mm512_mul_ps(p, dp);
                _mm512_store_ps(sp, a->rnd ? _mm512_castsi512_ps(zl_bf16_round_bits(ds)) : ds);
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
                    __m512 ds = _mm512_mul_ps(p, _mm512_sub_ps(_mm512_load_ps(dpp), Di));
                    if (a->rnd) {
                        p = _mm512_castsi512_ps(zl_bf16_round_bits(p));
                        ds = _mm512_castsi512_ps(zl_bf16_round_bits(ds));
                    }
                    _mm512_store_ps(sp, p);
                    _mm512_store_ps(dpp, ds);
                }
            }
            acc_product(s->A2, s->S, G, a->qs, s->ones, nr, hd, NV);  /* dVt += dOᵀ·P */
            acc_product(s->A1, s->dP, Q, a->qs, s->ones, nr, hd, NV); /* dKt += Qᵀ·dS */
        }
    store_dkdv(a, s->A1, s->A2, kvh, j0, bk, hd);
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

/* ---- AVX512_BF16 version (bf16 compute; see the top) */

/* Per-thread scratch of the bf16 tasks, 64-byte aligned: the lane operands At, Bt [hd2][BQ] (pairs of dims),
 * the accumulators A1, A2 [hd][BQ], S and dP [BQ][BQ], the packed products Pa, Pb [BQ/2][BQ] (pairs of
 * rows) and per-lane vectors. */
typedef struct {
    uint32_t *At, *Bt, *Pa, *Pb;
    float *A1, *A2, *S, *dP, *l2, *Dv, *bias, *ones;
} bx_scr;

/* The pair (row 2t in the low half, row 2t+1 in the high half) of 16 lanes each, as bf16: e0, e1 -> one row
 * of a packed block (word 2i <- e0[i], word 2i+1 <- e1[i]). */
ZL_BF16K_INLINE __m512i pair_rows(__m512 e0, __m512 e1) {
    const __m512i ilv = _mm512_set_epi16(31, 15, 30, 14, 29, 13, 28, 12, 27, 11, 26, 10, 25, 9, 24, 8, 23, 7, 22, 6,
                                         21, 5, 20, 4, 19, 3, 18, 2, 17, 1, 16, 0);
    return _mm512_permutexvar_epi16(ilv, (__m512i)_mm512_cvtne2ps_pbh(e1, e0));
}

/* Lane c of At and Bt [hd2][BQ] = rows x, y (hd floats) as pairs of dims; NULL rows give zeros. */
ZL_BF16K_INLINE void lane_pairs(const bx_scr *s, int c, const float *x, const float *y, int hd, int hd2) {
    if (x) {
        pack_pairs(s->At + c, BQ, x, hd);
        pack_pairs(s->Bt + c, BQ, y, hd);
    } else {
        for (int t = 0; t < hd2; t++) s->At[(size_t)t * BQ + c] = s->Bt[(size_t)t * BQ + c] = 0;
    }
}

/* Acc[d][lanes] += Σ_t Z[t][d] · Pp[t][lanes] over np row pairs, all d (Z: pairs of rows, hd per pair). */
ZL_BF16K_INLINE void acc_pairs(float *Acc, const uint32_t *Pp, const uint32_t *Z, const float *ones, int np, int hd,
                               const int NV) {
    int d = 0;
    for (; d + DR <= hd; d += DR) pv_rows_bf16(Acc, Pp, Z, hd, ones, d, np, NV, DR);
    for (; d + 2 <= hd; d += 2) pv_rows_bf16(Acc, Pp, Z, hd, ones, d, np, NV, 2);
    for (; d < hd; d++) pv_rows_bf16(Acc, Pp, Z, hd, ones, d, np, NV, 1);
}

/* S [rows][BQ] = c · (X rows · At), dP = Y rows · Bt, rows < nrows (X, Y: rows of hd2 pairs). */
ZL_BF16K_INLINE void two_products_bf16(const bx_scr *s, const uint32_t *X, const uint32_t *Y, int nrows, int hd2,
                                       float c, const int NV) {
    int r = 0;
    for (; r + JR <= nrows; r += JR) {
        qk_rows_bf16(s->S, s->At, X, r, hd2, c, NV, JR);
        qk_rows_bf16(s->dP, s->Bt, Y, r, hd2, 1.0f, NV, JR);
    }
    for (; r < nrows; r++) {
        qk_rows_bf16(s->S, s->At, X, r, hd2, c, NV, 1);
        qk_rows_bf16(s->dP, s->Bt, Y, r, hd2, 1.0f, NV, 1);
    }
}

/* Pass 2, queries along the lanes (as simd_dq_nv): At, Bt = q, dO of the task's queries; per key block
 * S = Kd·At, dP = Vd·Bt, dS = P∘(dP − D) packed as pairs of keys into Pa, dQt += Kjᵀ·dS. */
ZL_BF16K_INLINE void bf_dq_nv(const ag_t *a, const bx_scr *s, int h, int i0, int bq, const int NV) {
    int hd = a->hd, hd2 = a->hd2, kvh = h / a->group;
    float c2 = a->scale * LOG2E;
    for (int c = 0; c < BQ; c++) {
        int in = c < bq;
        size_t off = (size_t)(i0 + c) * a->qs + (size_t)h * hd;
        lane_pairs(s, c, in ? a->q + off : NULL, in ? a->g + off : NULL, hd, hd2);
        float l = in ? a->lse[(size_t)h * a->nq + i0 + c] : -INFINITY;
        s->l2[c] = l == -INFINITY ? INFINITY : l * LOG2E; /* +inf: P = 0 on this lane */
        s->Dv[c] = in ? a->D[(size_t)h * a->nq + i0 + c] : 0.0f;
    }
    for (int d = 0; d < hd; d++) memset(s->A1 + (size_t)d * BQ, 0, sizeof(float) * BQ);
    const __m512i lane = _mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0);
    const __m512 zero = _mm512_setzero_ps();
    const uint32_t *Kd = a->Kd + (size_t)kvh * a->nk * hd2, *Vd = a->Vd + (size_t)kvh * a->nk * hd2;
    const uint32_t *Kj = a->Kj + (size_t)kvh * a->nk2 * hd;
    long kend = kend_of(a, (long)i0 + bq - 1);
    for (long j0 = 0; j0 < kend; j0 += BQ) {
        int nkb = (int)(kend - j0 < BQ ? kend - j0 : BQ);
        two_products_bf16(s, Kd + (size_t)j0 * hd2, Vd + (size_t)j0 * hd2, nkb, hd2, c2, NV);
        for (int j = 0; j < nkb; j += 2)
            for (int v = 0; v < NV; v++) {
                __m512 e[2] = {zero, zero};
                for (int u = 0; u < 2 && j + u < nkb; u++) {
                    int jj = j + u;
                    long thr = a->causal ? j0 + jj - a->off - i0 : 0; /* lanes c < thr cannot see key j0+jj */
                    __m512 p = zl_exp2_ps(_mm512_sub_ps(_mm512_load_ps(s->S + (size_t)jj * BQ + 16 * v),
                                                        _mm512_load_ps(s->l2 + 16 * v)));
                    if (thr > 16 * v)
                        p = _mm512_maskz_mov_ps(_mm512_cmpge_epi32_mask(lane, _mm512_set1_epi32((int)(thr - 16 * v))), p);
                    __m512 dp = _mm512_sub_ps(_mm512_load_ps(s->dP + (size_t)jj * BQ + 16 * v), _mm512_load_ps(s->Dv + 16 * v));
                    e[u] = _mm512_mul_ps(p, dp);
                }
                _mm512_store_si512((void *)(s->Pa + (size_t)(j / 2) * BQ + 16 * v), pair_rows(e[0], e[1]));
            }
        acc_pairs(s->A1, s->Pa, Kj + (size_t)(j0 / 2) * hd, s->ones, (nkb + 1) / 2, hd, NV);
    }
    for (int c = 0; c < bq; c++) {
        float *dqr = a->dq + (size_t)(i0 + c) * a->qs + (size_t)h * hd;
        for (int d = 0; d < hd; d++) dqr[d] = a->scale * s->A1[(size_t)d * BQ + c];
    }
}

/* Pass 1, keys along the lanes (as simd_dkdv_nv): At, Bt = k, v of the task's keys; per query head of the
 * group and block of queries S = Qd·At, dP = Gd·Bt, P and dS = P∘(dP − D) packed as pairs of queries into
 * Pa and Pb, dVt += Gjᵀ·P, dKt += Qjᵀ·dS. Blocks of queries start at even rows (pairs). */
ZL_BF16K_INLINE void bf_dkdv_nv(const ag_t *a, const bx_scr *s, int kvh, int j0, int bk, const int NV) {
    int hd = a->hd, hd2 = a->hd2;
    float c2 = a->scale * LOG2E;
    for (int c = 0; c < BQ; c++) {
        int in = c < bk;
        size_t off = (size_t)(j0 + c) * a->ks + (size_t)kvh * hd;
        lane_pairs(s, c, in ? a->k + off : NULL, in ? a->v + off : NULL, hd, hd2);
        s->bias[c] = in ? 0.0f : -INFINITY; /* lanes past the last key: P = 0 */
    }
    for (int d = 0; d < hd; d++) {
        memset(s->A1 + (size_t)d * BQ, 0, sizeof(float) * BQ);
        memset(s->A2 + (size_t)d * BQ, 0, sizeof(float) * BQ);
    }
    const __m512i lane = _mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0);
    const __m512 zero = _mm512_setzero_ps();
    long ifirst = a->causal ? (long)j0 - a->off : 0; /* the first query that sees key j0 */
    if (ifirst < 0) ifirst = 0;
    ifirst &= ~1L; /* an even row: query pairs */
    for (int h = kvh * a->group; h < (kvh + 1) * a->group && h < a->hq; h++)
        for (long i0 = ifirst; i0 < a->nq; i0 += BQ) {
            int nr = (int)(a->nq - i0 < BQ ? a->nq - i0 : BQ);
            two_products_bf16(s, a->Qd + ((size_t)h * a->nq + i0) * hd2, a->Gd + ((size_t)h * a->nq + i0) * hd2, nr, hd2,
                              c2, NV);
            for (int i = 0; i < nr; i += 2)
                for (int v = 0; v < NV; v++) {
                    __m512 p2[2] = {zero, zero}, d2[2] = {zero, zero};
                    for (int u = 0; u < 2 && i + u < nr; u++) {
                        long ii = i0 + i + u;
                        float l = a->lse[(size_t)h * a->nq + ii];
                        __m512 l2 = _mm512_set1_ps(l == -INFINITY ? INFINITY : l * LOG2E);
                        __m512 Di = _mm512_set1_ps(a->D[(size_t)h * a->nq + ii]);
                        long thr = a->causal ? ii + a->off - j0 + 1 : BQ; /* lanes c >= thr: keys it cannot see */
                        __m512 x = _mm512_add_ps(_mm512_load_ps(s->S + (size_t)(i + u) * BQ + 16 * v),
                                                 _mm512_load_ps(s->bias + 16 * v));
                        __m512 p = zl_exp2_ps(_mm512_sub_ps(x, l2));
                        if (thr < 16 * (v + 1)) {
                            long tv = thr - 16 * v;
                            p = _mm512_maskz_mov_ps(_mm512_cmplt_epi32_mask(lane, _mm512_set1_epi32((int)(tv < 0 ? 0 : tv))), p);
                        }
                        p2[u] = p;
                        d2[u] = _mm512_mul_ps(p, _mm512_sub_ps(_mm512_load_ps(s->dP + (size_t)(i + u) * BQ + 16 * v), Di));
                    }
                    _mm512_store_si512((void *)(s->Pa + (size_t)(i / 2) * BQ + 16 * v), pair_rows(p2[0], p2[1]));
                    _mm512_store_si512((void *)(s->Pb + (size_t)(i / 2) * BQ + 16 * v), pair_rows(d2[0], d2[1]));
                }
            size_t pq = ((size_t)h * a->nq2 + (size_t)(i0 / 2)) * hd;
            acc_pairs(s->A2, s->Pa, a->Gj + pq, s->ones, (nr + 1) / 2, hd, NV); /* dVt += dOᵀ·P */
            acc_pairs(s->A1, s->Pb, a->Qj + pq, s->ones, (nr + 1) / 2, hd, NV); /* dKt += Qᵀ·dS */
        }
    store_dkdv(a, s->A1, s->A2, kvh, j0, bk, hd);
}

ZL_BF16K static void bf_dq(const ag_t *a, const bx_scr *s, int h, int i0, int bq) {
    switch ((bq + 15) / 16) {
    case 1: bf_dq_nv(a, s, h, i0, bq, 1); break;
    case 2: bf_dq_nv(a, s, h, i0, bq, 2); break;
    case 3: bf_dq_nv(a, s, h, i0, bq, 3); break;
    default: bf_dq_nv(a, s, h, i0, bq, 4); break;
    }
}

ZL_BF16K static void bf_dkdv(const ag_t *a, const bx_scr *s, int kvh, int j0, int bk) {
    switch ((bk + 15) / 16) {
    case 1: bf_dkdv_nv(a, s, kvh, j0, bk, 1); break;
    case 2: bf_dkdv_nv(a, s, kvh, j0, bk, 2); break;
    case 3: bf_dkdv_nv(a, s, kvh, j0, bk, 3); break;
    default: bf_dkdv_nv(a, s, kvh, j0, bk, 4); break;
    }
}

/* dst [nh][rows][hd2]: row r of head h (src row stride `stride`, head at h·hd) as pairs of dims; rows
 * [r0, r1). */
ZL_BF16K static void conv_dims(uint32_t *dst, const float *src, size_t stride, int nh, int rows, int hd, int hd2,
                               size_t r0, size_t r1) {
    for (size_t r = r0; r < r1; r++)
        for (int h = 0; h < nh; h++)
            pack_pairs(dst + ((size_t)h * rows + r) * (size_t)hd2, 1, src + r * stride + (size_t)h * hd, hd);
}

/* dst [nh][rows2][hd]: rows (2t, 2t+1) of dim d of head h in one uint32 (low half row 2t; an odd last row
 * is paired with 0); pairs [t0, t1). */
ZL_BF16K static void conv_rowpairs(uint32_t *dst, const float *src, size_t stride, int nh, int rows, int rows2, int hd,
                                   size_t t0, size_t t1) {
    for (size_t t = t0; t < t1; t++)
        for (int h = 0; h < nh; h++) {
            size_t j = 2 * t;
            const float *x0 = src + j * stride + (size_t)h * hd, *x1 = x0 + stride;
            int has1 = j + 1 < (size_t)rows;
            uint32_t *o = dst + ((size_t)h * rows2 + t) * (size_t)hd;
            for (int d = 0; d < hd; d += 16) {
                __mmask16 mk = (__mmask16)(hd - d >= 16 ? 0xffffu : (1u << (hd - d)) - 1);
                __m512i lo = _mm512_srli_epi32(zl_bf16_round_bits(_mm512_maskz_loadu_ps(mk, x0 + d)), 16);
                __m512i hi = has1 ? zl_bf16_round_bits(_mm512_maskz_loadu_ps(mk, x1 + d)) : _mm512_setzero_si512();
                _mm512_mask_storeu_epi32(o + d, mk, _mm512_or_si512(lo, hi));
            }
        }
}
#endif

/* q, k, v or g as read by the row version: rounded on the fly when a->fly. */
static inline float rd(const ag_t *a, float x) { return a->fly ? zl_bf16_round(x) : x; }

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
            const float *oi = a->o + (size_t)i * a->qs + (size_t)h * hd, *g0 = a->g0 + (size_t)i * a->qs + (size_t)h * hd;
            float *dqi = a->dq + (size_t)i * a->qs + (size_t)h * hd;
            double Dd = 0;
            for (int d = 0; d < hd; d++) Dd += (double)g0[d] * oi[d];
            float D = (float)Dd;
            for (long j = 0; j < kend; j++) {
                const float *kj = a->k + (size_t)j * a->ks + (size_t)kvh * hd, *vj = a->v + (size_t)j * a->ks + (size_t)kvh * hd;
                float *dkj = a->dk + (size_t)j * a->ks + (size_t)kvh * hd, *dvj = a->dv + (size_t)j * a->ks + (size_t)kvh * hd;
                float sc = 0, dp = 0;
                for (int d = 0; d < hd; d++) {
                    sc += rd(a, qi[d]) * rd(a, kj[d]);
                    dp += rd(a, gi[d]) * rd(a, vj[d]);
                }
                float p = expf(sc * a->scale - lse), ds = p * (dp - D);
                if (a->rnd) {
                    p = zl_bf16_round(p);
                    ds = zl_bf16_round(ds);
                }
                for (int d = 0; d < hd; d++) {
                    dqi[d] += a->scale * ds * rd(a, kj[d]);
                    dkj[d] += a->scale * ds * rd(a, qi[d]);
                    dvj[d] += p * rd(a, gi[d]);
                }
            }
        }
    }
}

/* The bf16 kernel's operand block (Kd, Vd, Kj, Qd, Gd, Qj, Gj), kept between calls and grown as needed, as
 * the forward's (attention.c cb_get): 7·n·heads·hd·2 bytes, 220 MB at 4096 tokens × 30 heads × 128. A
 * call that finds it in use by another thread allocates its own. */
#ifdef ZL_X86_SIMD
static pthread_mutex_t ob_mu = PTHREAD_MUTEX_INITIALIZER;
static uint32_t *ob_keep;
static size_t ob_cap; /* uint32 elements */

static uint32_t *ob_get(size_t n, int *kept) {
    size_t bytes = (sizeof(uint32_t) * n + 63) / 64 * 64;
    *kept = 0;
    if (pthread_mutex_trylock(&ob_mu) == 0) {
        if (n > ob_cap) {
            free(ob_keep);
            ob_keep = aligned_alloc(64, bytes);
            ob_cap = ob_keep ? n : 0;
        }
        if (ob_keep) {
            *kept = 1;
            return ob_keep;
        }
        pthread_mutex_unlock(&ob_mu);
    }
    return aligned_alloc(64, bytes);
}

static void ob_put(uint32_t *p, int kept) {
    if (kept) pthread_mutex_unlock(&ob_mu);
    else free(p);
}
#endif

#define CONV_ROWS 16 /* rows (or row pairs) converted per work item, all heads */

void zl_op_attention_backward(float *dq, float *dk, float *dv, const float *dout, const float *q, const float *k,
                              const float *v, const float *o, const float *lse, int nq, int nk, int hq, int hkv,
                              int hd, int causal) {
    if (nq <= 0 || hq <= 0 || hd <= 0) return;
    if (nk < 0) nk = 0;
    ag_t a = {q, k, v, o, dout, lse, dq, dk, dv, NULL, nq, nk, hq, hkv, hd, causal, hkv > 0 ? hq / hkv : 1, nk - nq,
              (size_t)hq * hd, (size_t)(hkv > 0 ? hkv : 1) * hd, (float)(1.0 / sqrt((double)hd)),
              zl_ops_bf16_gemm(), 0, dout, NULL, NULL, NULL, NULL, NULL, NULL, NULL, 0, 0, 0};
    if (a.group < 1) a.group = 1;
    if (nk == 0) {
        memset(dq, 0, sizeof(float) * (size_t)nq * a.qs);
        return;
    }
    int kern = zl_ops_kernels_();
    float *D = kern == ZL_KERNELS_FALLBACK ? NULL : malloc(sizeof(float) * (size_t)hq * nq);
    if (!D) {
        a.fly = a.rnd;
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

    /* bf16 compute: the AVX512_BF16 kernel on the operand block (fast), else the fp32 kernels on rounded copies
     * of q, k, v and dO (with P and dS rounded in the blocks), else (no memory) the row version rounding on
     * the fly */
    int fast = 0, ob_kept = 0;
    uint32_t *ob = NULL;
    float *cq = NULL, *ck = NULL, *cv = NULL, *cg = NULL; /* rounded copies */
    size_t nqe = (size_t)nq * a.qs, nke = (size_t)nk * a.ks;
    long items[7] = {0}; /* conversion work items: Kd, Vd, Kj, Qd, Gd, Qj, Gj (fast) or q, k, v, g (copies) */
    if (a.rnd) {
#ifdef ZL_X86_SIMD
        if (simd && zl_ops_attention_bf16_backend_() != ZL_BF16_GEMM_EMULATE && zl_ops_have_avx512bf16()) {
            a.hd2 = (hd + 1) / 2;
            a.nk2 = (nk + 1) / 2;
            a.nq2 = (nq + 1) / 2;
            size_t r16 = 16, nkd = ((size_t)nkvh * nk * a.hd2 + r16 - 1) / r16 * r16;
            size_t nkj = ((size_t)nkvh * a.nk2 * hd + r16 - 1) / r16 * r16;
            size_t nqd = ((size_t)hq * nq * a.hd2 + r16 - 1) / r16 * r16, nqj = ((size_t)hq * a.nq2 * hd + r16 - 1) / r16 * r16;
            if ((ob = ob_get(2 * nkd + nkj + 2 * nqd + 2 * nqj, &ob_kept))) {
                fast = 1;
                a.Kd = ob;
                a.Vd = a.Kd + nkd;
                a.Kj = a.Vd + nkd;
                a.Qd = a.Kj + nkj;
                a.Gd = a.Qd + nqd;
                a.Qj = a.Gd + nqd;
                a.Gj = a.Qj + nqj;
                long kr = (nk + CONV_ROWS - 1) / CONV_ROWS, k2 = (a.nk2 + CONV_ROWS - 1) / CONV_ROWS;
                long qr = (nq + CONV_ROWS - 1) / CONV_ROWS, q2 = (a.nq2 + CONV_ROWS - 1) / CONV_ROWS;
                long it[7] = {kr, kr, k2, qr, qr, q2, q2};
                memcpy(items, it, sizeof it);
            }
        }
#endif
        if (!fast) {
            cq = malloc(sizeof(float) * nqe);
            ck = malloc(sizeof(float) * nke);
            cv = malloc(sizeof(float) * nke);
            cg = malloc(sizeof(float) * nqe);
            if (cq && ck && cv && cg) {
                a.q = cq;
                a.k = ck;
                a.v = cv;
                a.g = cg;
                long qi = (nq + CONV_ROWS - 1) / CONV_ROWS, ki = (nk + CONV_ROWS - 1) / CONV_ROWS;
                long it[7] = {qi, ki, ki, qi, 0, 0, 0};
                memcpy(items, it, sizeof it);
            } else {
                free(cq); free(ck); free(cv); free(cg);
                cq = ck = cv = cg = NULL;
                a.fly = 1;
                free(D);
                a.D = NULL;
                rows_serial(&a);
                return;
            }
        }
    }
    long nitem = 0;
    for (int i = 0; i < 7; i++) nitem += items[i];
    /* scratch per thread: GENERIC Kt, Vt [hd][GBK], P, dS [GBQ][GBK], two [64][hd] accumulators; SIMD four
     * [hd][64] blocks, S and dP [64][64] and four [64] vectors; bf16 two [hd2][64] lane operands, two [hd][64]
     * accumulators, S and dP [64][64], two packed [32][64] blocks and four [64] vectors (64-byte aligned) */
    size_t per = fast   ? 2 * ((size_t)(hd + 1) / 2) * 64 + 2 * (size_t)hd * 64 + 2 * 64 * 64 + 2 * 32 * 64 + 4 * 64
                 : simd ? 4 * (size_t)hd * 64 + 2 * 64 * 64 + 4 * 64
                        : 2 * (size_t)hd * GBK + 2 * (size_t)GBQ * GBK + 2 * (size_t)(GBQ > GBK ? GBQ : GBK) * hd;
    int failed = 0;
#pragma omp parallel if ((double)nq * nk * hq * hd > 1e5)
    {
        float *buf = aligned_alloc(64, sizeof(float) * per);
        ag_scr s = {0};
#ifdef ZL_X86_SIMD
        sx_scr x = {0};
        bx_scr y = {0};
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
        if (buf && simd && !fast) {
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
        if (buf && fast) {
            size_t h2 = (size_t)(hd + 1) / 2;
            y.At = (uint32_t *)buf;
            y.Bt = y.At + h2 * BQ;
            y.A1 = (float *)(y.Bt + h2 * BQ);
            y.A2 = y.A1 + (size_t)hd * BQ;
            y.S = y.A2 + (size_t)hd * BQ;
            y.dP = y.S + BQ * BQ;
            y.Pa = (uint32_t *)(y.dP + BQ * BQ);
            y.Pb = y.Pa + BQ / 2 * BQ;
            y.l2 = (float *)(y.Pb + BQ / 2 * BQ);
            y.Dv = y.l2 + BQ;
            y.bias = y.Dv + BQ;
            y.ones = y.bias + BQ;
            for (int c = 0; c < BQ; c++) y.ones[c] = 1.0f;
        }
#endif
        if (!buf) {
#pragma omp atomic write
            failed = 1;
        }
        if (nitem > 0) { /* the bf16 operands, or the rounded copies */
#pragma omp for schedule(dynamic, 1)
            for (long c = 0; c < nitem; c++) {
                int w = 0;
                long c1 = c;
                while (c1 >= items[w]) c1 -= items[w++];
                size_t r0 = (size_t)c1 * CONV_ROWS;
#ifdef ZL_X86_SIMD
                if (fast) {
                    size_t rn = w == 2 ? (size_t)a.nk2 : w < 2 ? (size_t)nk : w < 5 ? (size_t)nq : (size_t)a.nq2;
                    size_t r1 = r0 + CONV_ROWS < rn ? r0 + CONV_ROWS : rn;
                    switch (w) {
                    case 0: conv_dims(a.Kd, k, a.ks, nkvh, nk, hd, a.hd2, r0, r1); break;
                    case 1: conv_dims(a.Vd, v, a.ks, nkvh, nk, hd, a.hd2, r0, r1); break;
                    case 2: conv_rowpairs(a.Kj, k, a.ks, nkvh, nk, a.nk2, hd, r0, r1); break;
                    case 3: conv_dims(a.Qd, q, a.qs, hq, nq, hd, a.hd2, r0, r1); break;
                    case 4: conv_dims(a.Gd, dout, a.qs, hq, nq, hd, a.hd2, r0, r1); break;
                    case 5: conv_rowpairs(a.Qj, q, a.qs, hq, nq, a.nq2, hd, r0, r1); break;
                    default: conv_rowpairs(a.Gj, dout, a.qs, hq, nq, a.nq2, hd, r0, r1); break;
                    }
                    continue;
                }
#endif
                const float *src = w == 0 ? q : w == 1 ? k : w == 2 ? v : dout;
                float *dst = w == 0 ? cq : w == 1 ? ck : w == 2 ? cv : cg;
                size_t rs = w == 1 || w == 2 ? a.ks : a.qs, rn = w == 1 || w == 2 ? (size_t)nk : (size_t)nq;
                size_t r1 = r0 + CONV_ROWS < rn ? r0 + CONV_ROWS : rn;
                for (size_t i = r0 * rs; i < r1 * rs; i++) dst[i] = zl_bf16_round(src[i]);
            }
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
                if (fast) { bf_dkdv(&a, &y, kvh, j0, nk - j0 < GBK ? nk - j0 : GBK); continue; }
                if (simd) { simd_dkdv(&a, &x, kvh, j0, nk - j0 < GBK ? nk - j0 : GBK); continue; }
#endif
                task_dkdv(&a, &s, kvh, j0, nk - j0 < GBK ? nk - j0 : GBK);
            }
#pragma omp for schedule(dynamic, 1)
            for (long t = 0; t < t2; t++) {
                int h = (int)(t / nqb), i0 = (int)(t % nqb) * GBQ;
#ifdef ZL_X86_SIMD
                if (fast) { bf_dq(&a, &y, h, i0, nq - i0 < GBQ ? nq - i0 : GBQ); continue; }
                if (simd) { simd_dq(&a, &x, h, i0, nq - i0 < GBQ ? nq - i0 : GBQ); continue; }
#endif
                task_dq(&a, &s, h, i0, nq - i0 < GBQ ? nq - i0 : GBQ);
            }
        }
        free(buf);
    }
    if (failed) {
        a.fly = a.rnd && !cq; /* the copies are rounded already */
        rows_serial(&a);
    } else if (fast) {
        agb_fast++;
    }
#ifdef ZL_X86_SIMD
    if (ob) ob_put(ob, ob_kept);
#endif
    free(cq); free(ck); free(cv); free(cg);
    free(D);
}
