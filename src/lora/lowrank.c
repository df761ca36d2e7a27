/* lowrank.c — truncated SVDs for LoRA resize and lossy conversions (see lowrank.h).
 *
 * Layout: the API is row-major; internally every LAPACK/BLAS call is column-major, using the fact that
 * a row-major a×b buffer is the column-major b×a transpose of the same matrix. So a row-major V [k,n]
 * *is* Vᵀ [n,k] column-major, and a row-major W [m,n] *is* Wᵀ [n,m] column-major — no copies needed
 * to reach the transposes. Arithmetic is single precision; norms and energies accumulate in double.
 */
#include "lowrank.h"
#include "../base/base.h"

#include <cblas.h>
#include <lapacke.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#define EXACT_MAX_DIM 1024 /* dense: exact SVD when min(m,n) <= this */
#define OVERSAMPLE 10
#define POWER_ITERS 3

static int imin(int a, int b) { return a < b ? a : b; }

/* Allocates a×b floats (overflow-checked); NULL with the error set on failure. */
static float *falloc(size_t a, size_t b) {
    size_t n, bytes;
    if (zl_mul_size(a, b, &n) || zl_mul_size(n, sizeof(float), &bytes)) {
        zl_err("lowrank: buffer size overflow (%zu x %zu floats)", a, b);
        return NULL;
    }
    return zl_try_malloc(bytes);
}

static float *fcalloc(size_t a, size_t b) {
    size_t n;
    if (zl_mul_size(a, b, &n)) {
        zl_err("lowrank: buffer size overflow (%zu x %zu floats)", a, b);
        return NULL;
    }
    return zl_try_calloc(n, sizeof(float));
}

static int lapack_err(const char *routine, lapack_int info) {
    if (info == LAPACK_WORK_MEMORY_ERROR || info == LAPACK_TRANSPOSE_MEMORY_ERROR)
        return zl_err("lowrank: %s: out of memory for LAPACK workspace", routine);
    if (info < 0) return zl_err("lowrank: %s: illegal argument %d", routine, (int)-info);
    return zl_err("lowrank: %s failed to converge (info %d)", routine, (int)info);
}

/* In place: A [rows, cols] column-major (lda = rows, rows >= cols) becomes the Q of its thin QR.
 * tau has room for cols floats. */
static int orthonormalize(float *A, int rows, int cols, float *tau) {
    lapack_int info = LAPACKE_sgeqrf(LAPACK_COL_MAJOR, rows, cols, A, rows, tau);
    if (info) return lapack_err("sgeqrf", info);
    info = LAPACKE_sorgqr(LAPACK_COL_MAJOR, rows, cols, cols, A, rows, tau);
    if (info) return lapack_err("sorgqr", info);
    return 0;
}

/* Thin SVD of the column-major rows×cols matrix held in src (lda = rows): s [t], u [rows,t] (ld rows),
 * vt [t,cols] (ld t), t = min(rows,cols). work is a rows×cols scratch buffer (may equal src only when
 * src need not survive; then there is no fallback). Uses sgesdd and falls back to sgesvd if the
 * divide-and-conquer driver does not converge. */
static int svd(const float *src, float *work, int rows, int cols, float *s, float *u, float *vt) {
    int t = imin(rows, cols);
    size_t n = (size_t)rows * (size_t)cols;
    if (work != src) memcpy(work, src, n * sizeof(float));
    lapack_int info = LAPACKE_sgesdd(LAPACK_COL_MAJOR, 'S', rows, cols, work, rows, s, u, rows, vt, t);
    if (info <= 0 || work == src) return info ? lapack_err("sgesdd", info) : 0;
    memcpy(work, src, n * sizeof(float));
    float *superb = falloc((size_t)t, 1);
    if (!superb) return -1;
    info = LAPACKE_sgesvd(LAPACK_COL_MAJOR, 'S', 'S', rows, cols, work, rows, s, u, rows, vt, t, superb);
    free(superb);
    return info ? lapack_err("sgesvd", info) : 0;
}

static int all_finite(const float *x, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (!isfinite(x[i])) return 0;
    return 1;
}

static int check_args(const void *a, const void *b, const float *up, const float *down, const double *energy) {
    if (!a || !b || !up || !down || !energy) return zl_err("lowrank: NULL argument");
    return 0;
}

/* ---------------------------------------------------------------------------------------------- */

int zl_lowrank_factored(const float *U, const float *V, int m, int k, int n, int r,
                        float *up, float *down, double *energy) {
    if (check_args(U, V, up, down, energy)) return -1;
    if (m < 1 || k < 1 || n < 1 || r < 1)
        return zl_err("lowrank: bad dimensions (m=%d k=%d n=%d r=%d)", m, k, n, r);
    const size_t M = (size_t)m, K = (size_t)k, N = (size_t)n, R = (size_t)r;
    memset(up, 0, M * R * sizeof(float));
    memset(down, 0, R * N * sizeof(float));
    *energy = 1.0;
    if (!all_finite(U, M * K) || !all_finite(V, K * N))
        return zl_err("lowrank: input contains NaN or Inf");

    const int p = imin(m, k), q = imin(n, k), t = imin(p, q), rr = imin(r, t);
    const size_t P = (size_t)p, Q = (size_t)q, T = (size_t)t;
    int rc = -1;
    float *Qu = falloc(M, K), *Qv = falloc(N, K), *tau = falloc(K, 1);
    float *Ru = fcalloc(P, K), *Rv = fcalloc(Q, K), *C = falloc(P, Q), *Cw = falloc(P, Q);
    float *s = falloc(T, 1), *Uc = falloc(P, T), *Vct = falloc(T, Q);
    if (!Qu || !Qv || !tau || !Ru || !Rv || !C || !Cw || !s || !Uc || !Vct) goto done;

    /* U = Qu Ru: U row-major [m,k] -> column-major copy. */
    for (size_t i = 0; i < M; i++)
        for (size_t j = 0; j < K; j++) Qu[i + j * M] = U[i * K + j];
    lapack_int info = LAPACKE_sgeqrf(LAPACK_COL_MAJOR, m, k, Qu, m, tau);
    if (info) { lapack_err("sgeqrf", info); goto done; }
    for (size_t j = 0; j < K; j++)
        for (size_t i = 0; i <= j && i < P; i++) Ru[i + j * P] = Qu[i + j * M];
    info = LAPACKE_sorgqr(LAPACK_COL_MAJOR, m, p, p, Qu, m, tau);
    if (info) { lapack_err("sorgqr", info); goto done; }

    /* Vᵀ = Qv Rv: the row-major V buffer is Vᵀ [n,k] column-major already. */
    memcpy(Qv, V, K * N * sizeof(float));
    info = LAPACKE_sgeqrf(LAPACK_COL_MAJOR, n, k, Qv, n, tau);
    if (info) { lapack_err("sgeqrf", info); goto done; }
    for (size_t j = 0; j < K; j++)
        for (size_t i = 0; i <= j && i < Q; i++) Rv[i + j * Q] = Qv[i + j * N];
    info = LAPACKE_sorgqr(LAPACK_COL_MAJOR, n, q, q, Qv, n, tau);
    if (info) { lapack_err("sorgqr", info); goto done; }

    /* U V = Qu (Ru Rvᵀ) Qvᵀ; core C = Ru Rvᵀ [p,q] = Uc S Vct. */
    cblas_sgemm(CblasColMajor, CblasNoTrans, CblasTrans, p, q, k, 1.0f, Ru, p, Rv, q, 0.0f, C, p);
    if (svd(C, Cw, p, q, s, Uc, Vct)) goto done;

    double total = 0, head = 0;
    for (int i = 0; i < t; i++) {
        double si = s[i];
        total += si * si;
        if (i < rr) head += si * si;
    }
    if (total <= 0) { rc = 0; goto done; } /* zero input: outputs stay zero, energy 1 */
    *energy = head / total;

    /* Split sqrt(S): Uc[:, :rr] · diag(√s) and diag(√s) · Vct[:rr]. */
    for (int j = 0; j < rr; j++) {
        float w = sqrtf(s[j]);
        for (size_t i = 0; i < P; i++) Uc[i + (size_t)j * P] *= w;
        for (size_t c = 0; c < Q; c++) Vct[(size_t)j + c * T] *= w;
    }
    /* up row-major [m,r] = column-major upᵀ [r,m]; its first rr rows = (Uc√S)ᵀ Quᵀ. */
    cblas_sgemm(CblasColMajor, CblasTrans, CblasTrans, rr, m, p, 1.0f, Uc, p, Qu, m, 0.0f, up, r);
    /* down row-major [r,n] = column-major downᵀ [n,r]; its first rr columns = Qv (√S Vct)ᵀ. */
    cblas_sgemm(CblasColMajor, CblasNoTrans, CblasTrans, n, rr, q, 1.0f, Qv, n, Vct, t, 0.0f, down, n);
    rc = 0;

done:
    free(Qu); free(Qv); free(tau); free(Ru); free(Rv); free(C); free(Cw); free(s); free(Uc); free(Vct);
    if (rc) {
        memset(up, 0, M * R * sizeof(float));
        memset(down, 0, R * N * sizeof(float));
    }
    return rc;
}

/* ---------------------------------------------------------------------------------------------- */

/* Exact: the W buffer is Wᵀ [n,m] column-major = Ua S Vaᵀ, so W = Vaᵀᵀ S Uaᵀ: up = rows of Vaᵀ
 * (transposed) times √s, down = columns of Ua times √s. */
static int dense_exact(const float *W, int m, int n, int r, float *up, float *down, double normsq,
                       double *energy) {
    const int t = imin(m, n), rr = imin(r, t);
    const size_t M = (size_t)m, N = (size_t)n, R = (size_t)r, T = (size_t)t;
    int rc = -1;
    float *A = falloc(M, N), *s = falloc(T, 1), *Ua = falloc(N, T), *Vat = falloc(T, M);
    if (!A || !s || !Ua || !Vat) goto done;
    if (svd(W, A, n, m, s, Ua, Vat)) goto done;

    double head = 0;
    for (int i = 0; i < rr; i++) head += (double)s[i] * (double)s[i];
    *energy = fmin(1.0, head / normsq);
    for (int j = 0; j < rr; j++) {
        float w = sqrtf(s[j]);
        for (size_t i = 0; i < M; i++) up[i * R + (size_t)j] = Vat[(size_t)j + i * T] * w;
        for (size_t c = 0; c < N; c++) down[(size_t)j * N + c] = Ua[c + (size_t)j * N] * w;
    }
    rc = 0;
done:
    free(A); free(s); free(Ua); free(Vat);
    return rc;
}

/* Randomized range finder (Halko, Martinsson & Tropp, alg. 4.4): Q [m,l] spans W's dominant column
 * space; then Bᵀ = Wᵀ Q [n,l] = Ub S Vbᵀ gives W ≈ Q Vb S Ubᵀ. Extra memory O((m + n) l + l²). */
static int dense_randomized(const float *W, int m, int n, int r, uint64_t seed, float *up, float *down,
                            double normsq, double *energy) {
    const int l = imin(r + OVERSAMPLE, imin(m, n)), rr = imin(r, l);
    const size_t M = (size_t)m, N = (size_t)n, L = (size_t)l;
    int rc = -1;
    float *Y = falloc(M, L), *Z = falloc(N, L), *tau = falloc(L, 1);
    float *s = falloc(L, 1), *Ub = falloc(N, L), *Vbt = falloc(L, L);
    if (!Y || !Z || !tau || !s || !Ub || !Vbt) goto done;

    /* Column-major views: W = (buffer)ᵀ with the buffer [n,m], ld n; Wᵀ = buffer. */
    zl_rng rng = {seed};
    for (size_t i = 0; i < N * L; i++) Z[i] = zl_rng_normal(&rng);           /* Ω [n,l] */
    cblas_sgemm(CblasColMajor, CblasTrans, CblasNoTrans, m, l, n, 1.0f, W, n, Z, n, 0.0f, Y, m);
    if (orthonormalize(Y, m, l, tau)) goto done;
    for (int it = 0; it < POWER_ITERS; it++) {
        cblas_sgemm(CblasColMajor, CblasNoTrans, CblasNoTrans, n, l, m, 1.0f, W, n, Y, m, 0.0f, Z, n);
        if (orthonormalize(Z, n, l, tau)) goto done;
        cblas_sgemm(CblasColMajor, CblasTrans, CblasNoTrans, m, l, n, 1.0f, W, n, Z, n, 0.0f, Y, m);
        if (orthonormalize(Y, m, l, tau)) goto done;
    }
    /* Bᵀ = Wᵀ Q [n,l], then its SVD (Z is consumed as workspace). */
    cblas_sgemm(CblasColMajor, CblasNoTrans, CblasNoTrans, n, l, m, 1.0f, W, n, Y, m, 0.0f, Z, n);
    if (svd(Z, Z, n, l, s, Ub, Vbt)) goto done;

    double head = 0;
    for (int i = 0; i < rr; i++) head += (double)s[i] * (double)s[i];
    *energy = fmin(1.0, head / normsq);
    for (int j = 0; j < rr; j++) {
        float w = sqrtf(s[j]);
        for (size_t i = 0; i < L; i++) Vbt[(size_t)j + i * L] *= w;
        for (size_t c = 0; c < N; c++) down[(size_t)j * N + c] = Ub[c + (size_t)j * N] * w;
    }
    /* up row-major [m,r] = column-major upᵀ [r,m]; first rr rows = (√S Vbᵀ[:rr]) Qᵀ. */
    cblas_sgemm(CblasColMajor, CblasNoTrans, CblasTrans, rr, m, l, 1.0f, Vbt, l, Y, m, 0.0f, up, r);
    rc = 0;
done:
    free(Y); free(Z); free(tau); free(s); free(Ub); free(Vbt);
    return rc;
}

int zl_lowrank_dense(const float *W, int m, int n, int r, uint64_t seed,
                     float *up, float *down, double *energy) {
    if (check_args(W, W, up, down, energy)) return -1;
    if (m < 1 || n < 1 || r < 1) return zl_err("lowrank: bad dimensions (m=%d n=%d r=%d)", m, n, r);
    const size_t M = (size_t)m, N = (size_t)n, R = (size_t)r;
    memset(up, 0, M * R * sizeof(float));
    memset(down, 0, R * N * sizeof(float));
    *energy = 1.0;

    double normsq = 0;
    for (size_t i = 0; i < M * N; i++) normsq += (double)W[i] * (double)W[i];
    if (!isfinite(normsq)) return zl_err("lowrank: input contains NaN or Inf");
    if (normsq == 0) return 0; /* zero input: zero outputs, energy 1 */

    int rc = imin(m, n) <= EXACT_MAX_DIM ? dense_exact(W, m, n, r, up, down, normsq, energy)
                                         : dense_randomized(W, m, n, r, seed, up, down, normsq, energy);
    if (rc) {
        *energy = 1.0;
        memset(up, 0, M * R * sizeof(float));
        memset(down, 0, R * N * sizeof(float));
    }
    return rc;
}
