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
 * and results that do not depend on the thread count. Inside a block the keys (and values) are held
 * transposed, Kt [hd][GBK], so that each score row is a sum of broadcast q elements times rows of Kt:
 * contiguous, vectorisable (#pragma omp simd) inner loops, as for the dk/dv/dq updates along hd.
 *
 * Without scratch (FALLBACK kernels, or no memory) a serial row-at-a-time version runs with no heap at all.
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
    size_t per = 2 * (size_t)hd * GBK + 2 * (size_t)GBQ * GBK + 2 * (size_t)(GBQ > GBK ? GBQ : GBK) * hd;
    int failed = 0;
#pragma omp parallel if ((double)nq * nk * hq * hd > 1e5)
    {
        float *buf = malloc(sizeof(float) * per);
        ag_scr s = {0};
        if (buf) {
            s.Kt = buf;
            s.Vt = s.Kt + (size_t)hd * GBK;
            s.P = s.Vt + (size_t)hd * GBK;
            s.dS = s.P + (size_t)GBQ * GBK;
            s.acc1 = s.dS + (size_t)GBQ * GBK;
            s.acc2 = s.acc1 + (size_t)(GBQ > GBK ? GBQ : GBK) * hd;
        } else {
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
                task_dkdv(&a, &s, kvh, j0, nk - j0 < GBK ? nk - j0 : GBK);
            }
#pragma omp for schedule(dynamic, 1)
            for (long t = 0; t < t2; t++) {
                int h = (int)(t / nqb), i0 = (int)(t % nqb) * GBQ;
                task_dq(&a, &s, h, i0, nq - i0 < GBQ ? nq - i0 : GBQ);
            }
        }
        free(buf);
    }
    if (failed) rows_serial(&a);
    free(D);
}
