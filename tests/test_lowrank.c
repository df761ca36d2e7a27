/* test_lowrank.c — truncated SVDs (lora/lowrank.h) against independent double-precision references:
 * LAPACKE_dgesvd on the formed matrix, or matrices built from known singular values. */
#include "test.h"
#include "base/base.h"
#include "lora/lowrank.h"
#include <cblas.h>
#include <lapacke.h>
#include <stdlib.h>
#include <string.h>

static void fill_normal(float *x, size_t n, uint64_t seed) {
    zl_rng rng = {seed};
    for (size_t i = 0; i < n; i++) x[i] = zl_rng_normal(&rng);
}

/* C [m,n] = A [m,k] @ B [k,n], all row-major, accumulated in double. */
static void matmul_d(const float *A, const float *B, int m, int k, int n, double *C) {
    for (int i = 0; i < m; i++)
        for (int j = 0; j < n; j++) {
            double acc = 0;
            for (int t = 0; t < k; t++) acc += (double)A[(size_t)i * k + t] * (double)B[(size_t)t * n + j];
            C[(size_t)i * n + j] = acc;
        }
}

static double frob2_d(const double *x, size_t n) {
    double s = 0;
    for (size_t i = 0; i < n; i++) s += x[i] * x[i];
    return s;
}

static double diff2_d(const double *a, const double *b, size_t n) {
    double s = 0;
    for (size_t i = 0; i < n; i++) s += (a[i] - b[i]) * (a[i] - b[i]);
    return s;
}

/* Reference SVD of a row-major double matrix (copied): sigma [min], u [m,min], vt [min,n]. */
static int ref_svd(const double *M, int m, int n, double *sigma, double *u, double *vt) {
    int t = m < n ? m : n;
    double *a = malloc(sizeof(double) * (size_t)m * n), *sup = malloc(sizeof(double) * (size_t)t);
    memcpy(a, M, sizeof(double) * (size_t)m * n);
    int info = LAPACKE_dgesvd(LAPACK_ROW_MAJOR, 'S', 'S', m, n, a, n, sigma, u, t, vt, n, sup);
    free(a);
    free(sup);
    return info;
}

/* Checks of one factored case against the dgesvd reference of the formed product. Returns a message
 * (static) on failure, NULL on success. */
static const char *check_factored(int m, int k, int n, int r, uint64_t seed) {
    static char msg[256];
    int t = m < n ? m : n;
    float *U = malloc(sizeof(float) * (size_t)m * k), *V = malloc(sizeof(float) * (size_t)k * n);
    float *up = malloc(sizeof(float) * (size_t)m * r), *down = malloc(sizeof(float) * (size_t)r * n);
    double *M = malloc(sizeof(double) * (size_t)m * n), *P = malloc(sizeof(double) * (size_t)m * n);
    double *Mr = calloc((size_t)m * n, sizeof(double));
    double *sg = malloc(sizeof(double) * t), *u = malloc(sizeof(double) * (size_t)m * t);
    double *vt = malloc(sizeof(double) * (size_t)t * n);
    const char *fail = NULL;
    fill_normal(U, (size_t)m * k, seed);
    fill_normal(V, (size_t)k * n, seed + 1);
    matmul_d(U, V, m, k, n, M);
    double energy = -1;
    if (zl_lowrank_factored(U, V, m, k, n, r, up, down, &energy) != 0) { fail = "call failed"; goto out; }
    if (ref_svd(M, m, n, sg, u, vt) != 0) { fail = "reference dgesvd failed"; goto out; }

    int rr = r < t ? r : t;
    double total = 0, head = 0;
    for (int i = 0; i < t; i++) { total += sg[i] * sg[i]; if (i < rr) head += sg[i] * sg[i]; }
    for (int i = 0; i < m; i++)
        for (int j = 0; j < n; j++)
            for (int a = 0; a < rr; a++) Mr[(size_t)i * n + j] += u[(size_t)i * t + a] * sg[a] * vt[(size_t)a * n + j];
    matmul_d(up, down, m, r, n, P);
    double err2 = diff2_d(M, P, (size_t)m * n);
    double dref = sqrt(diff2_d(Mr, P, (size_t)m * n) / frob2_d(Mr, (size_t)m * n));
    snprintf(msg, sizeof msg, "m=%d k=%d n=%d r=%d: energy %.9g vs %.9g, err2 %.6g vs discarded %.6g, "
             "|P-Mr|/|Mr| %.3g", m, k, n, r, energy, head / total, err2, total - head, dref);
    if (fabs(energy - head / total) > 1e-5) { fail = msg; goto out; }
    if (fabs(err2 - (total - head)) > 1e-5 * total) { fail = msg; goto out; }
    if (!(dref < 1e-4)) { fail = msg; goto out; }
    /* sqrt(S) split: column j of up and row j of down both have squared norm sigma_j; up's columns are
     * orthogonal; everything beyond the rank bound is exactly zero. */
    for (int a = 0; a < r; a++) {
        double cu = 0, rd = 0, off = 0;
        for (int i = 0; i < m; i++) {
            cu += (double)up[(size_t)i * r + a] * up[(size_t)i * r + a];
            if (a > 0) off += (double)up[(size_t)i * r + a] * up[(size_t)i * r + a - 1];
        }
        for (int j = 0; j < n; j++) rd += (double)down[(size_t)a * n + j] * down[(size_t)a * n + j];
        double want = a < rr ? sg[a] : 0;
        if (fabs(cu - want) > 1e-4 * sg[0] || fabs(rd - want) > 1e-4 * sg[0] || fabs(off) > 1e-4 * sg[0]) {
            snprintf(msg, sizeof msg, "m=%d k=%d n=%d r=%d: column %d: |up|^2 %.6g |down|^2 %.6g want %.6g, "
                     "off %.3g", m, k, n, r, a, cu, rd, want, off);
            fail = msg;
            goto out;
        }
        if (a >= rr && (cu != 0 || rd != 0)) { fail = "padding not zero"; goto out; }
    }
out:
    free(U); free(V); free(up); free(down); free(M); free(P); free(Mr); free(sg); free(u); free(vt);
    return fail;
}

TEST(lowrank_factored_truncation_vs_dgesvd) {
    static const int cases[][4] = {
        {60, 12, 45, 5}, {45, 12, 60, 7}, {6, 10, 8, 3}, {50, 20, 7, 4}, {9, 16, 33, 2}, {128, 32, 96, 16},
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        const char *f = check_factored(cases[c][0], cases[c][1], cases[c][2], cases[c][3], 100 + c);
        CHECK_MSG(f == NULL, "%s", f);
    }
}

TEST(lowrank_factored_full_rank_reproduces) {
    static const int cases[][4] = {{64, 8, 40, 8}, {64, 8, 40, 11}, {5, 9, 7, 9}, {30, 6, 3, 6}, {1, 1, 1, 2}};
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        int m = cases[c][0], k = cases[c][1], n = cases[c][2], r = cases[c][3];
        int bound = k < m ? k : m;
        if (n < bound) bound = n;
        float *U = malloc(sizeof(float) * m * k), *V = malloc(sizeof(float) * k * n);
        float *up = malloc(sizeof(float) * m * r), *down = malloc(sizeof(float) * r * n);
        double *M = malloc(sizeof(double) * m * n), *P = malloc(sizeof(double) * m * n);
        fill_normal(U, (size_t)m * k, 7 + c);
        fill_normal(V, (size_t)k * n, 70 + c);
        for (int i = 0; i < m * r; i++) up[i] = 9.0f;    /* garbage that must be overwritten */
        for (int i = 0; i < r * n; i++) down[i] = 9.0f;
        double energy = 0;
        int rc = zl_lowrank_factored(U, V, m, k, n, r, up, down, &energy);
        matmul_d(U, V, m, k, n, M);
        matmul_d(up, down, m, r, n, P);
        double rel = sqrt(diff2_d(M, P, (size_t)m * n) / frob2_d(M, (size_t)m * n));
        int pad_ok = 1;
        for (int i = 0; i < m; i++)
            for (int j = bound; j < r; j++) pad_ok &= up[i * r + j] == 0.0f;
        for (int j = bound; j < r; j++)
            for (int c2 = 0; c2 < n; c2++) pad_ok &= down[j * n + c2] == 0.0f;
        free(U); free(V); free(up); free(down); free(M); free(P);
        CHECK(rc == 0);
        CHECK_MSG(rel < 1e-5, "case %zu: relative error %.3g", c, rel);
        CHECK_NEAR(energy, 1.0, 1e-6);
        CHECK_MSG(pad_ok, "case %zu: padding beyond rank %d not zero", c, bound);
    }
}

TEST(lowrank_dense_exact_matches_factored) {
    static const int cases[][4] = {{100, 10, 80, 6}, {70, 10, 130, 6}, {33, 4, 33, 9}};
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        int m = cases[c][0], k = cases[c][1], n = cases[c][2], r = cases[c][3];
        float *U = malloc(sizeof(float) * m * k), *V = malloc(sizeof(float) * k * n);
        float *W = malloc(sizeof(float) * m * n);
        float *u1 = malloc(sizeof(float) * m * r), *d1 = malloc(sizeof(float) * r * n);
        float *u2 = malloc(sizeof(float) * m * r), *d2 = malloc(sizeof(float) * r * n);
        double *M = malloc(sizeof(double) * m * n), *P1 = malloc(sizeof(double) * m * n);
        double *P2 = malloc(sizeof(double) * m * n);
        fill_normal(U, (size_t)m * k, 300 + c);
        fill_normal(V, (size_t)k * n, 400 + c);
        matmul_d(U, V, m, k, n, M);
        for (int i = 0; i < m * n; i++) W[i] = (float)M[i];
        double e1 = -1, e2 = -2;
        int rc1 = zl_lowrank_factored(U, V, m, k, n, r, u1, d1, &e1);
        int rc2 = zl_lowrank_dense(W, m, n, r, 1, u2, d2, &e2);
        matmul_d(u1, d1, m, r, n, P1);
        matmul_d(u2, d2, m, r, n, P2);
        double rel = sqrt(diff2_d(P1, P2, (size_t)m * n) / frob2_d(P1, (size_t)m * n));
        double err2 = diff2_d(M, P2, (size_t)m * n) / frob2_d(M, (size_t)m * n);
        free(U); free(V); free(W); free(u1); free(d1); free(u2); free(d2); free(M); free(P1); free(P2);
        CHECK(rc1 == 0 && rc2 == 0);
        CHECK_NEAR(e1, e2, 1e-5);
        CHECK_MSG(rel < 1e-4, "case %zu: dense vs factored relative difference %.3g", c, rel);
        CHECK_NEAR(err2, 1.0 - e2, 1e-5);   /* error² is exactly the discarded energy */
        if (r >= k) CHECK_NEAR(e2, 1.0, 1e-6);
    }
}

TEST(lowrank_dense_exact_full_rank_vs_dgesvd) {
    const int m = 40, n = 55, r = 7, t = 40;
    float *W = malloc(sizeof(float) * m * n), *up = malloc(sizeof(float) * m * r);
    float *down = malloc(sizeof(float) * r * n);
    double *M = malloc(sizeof(double) * m * n), *P = malloc(sizeof(double) * m * n);
    double sg[40], *u = malloc(sizeof(double) * m * t), *vt = malloc(sizeof(double) * t * n);
    fill_normal(W, (size_t)m * n, 555);
    for (int i = 0; i < m * n; i++) M[i] = W[i];
    double energy = -1;
    int rc = zl_lowrank_dense(W, m, n, r, 0, up, down, &energy);
    int info = ref_svd(M, m, n, sg, u, vt);
    matmul_d(up, down, m, r, n, P);
    double total = 0, head = 0;
    for (int i = 0; i < t; i++) { total += sg[i] * sg[i]; if (i < r) head += sg[i] * sg[i]; }
    double err2 = diff2_d(M, P, (size_t)m * n);
    free(W); free(up); free(down); free(M); free(P); free(u); free(vt);
    CHECK(rc == 0 && info == 0);
    CHECK_NEAR(energy, head / total, 1e-5);
    CHECK_NEAR(err2 / total, (total - head) / total, 1e-5);
}

/* W = A diag(sigma) Bᵀ with A [m,K], B [n,K] random orthonormal (double QR of Gaussians). */
static void orthonormal_d(double *A, int rows, int cols, uint64_t seed) {
    zl_rng rng = {seed};
    double *tau = malloc(sizeof(double) * cols);
    for (size_t i = 0; i < (size_t)rows * cols; i++) A[i] = zl_rng_normal(&rng);
    LAPACKE_dgeqrf(LAPACK_ROW_MAJOR, rows, cols, A, cols, tau);
    LAPACKE_dorgqr(LAPACK_ROW_MAJOR, rows, cols, cols, A, cols, tau);
    free(tau);
}

TEST(lowrank_dense_randomized_decaying_spectrum) {
    const int m = 1500, n = 1200, K = 200, r = 16;
    double *A = malloc(sizeof(double) * m * K), *B = malloc(sizeof(double) * n * K);
    double *Wd = malloc(sizeof(double) * m * n), *Wr = malloc(sizeof(double) * m * n);
    float *W = malloc(sizeof(float) * m * n), *Wt = malloc(sizeof(float) * m * n);
    float *up = malloc(sizeof(float) * m * r), *down = malloc(sizeof(float) * r * m); /* m > n: both passes */
    float *P = malloc(sizeof(float) * m * n);
    double sigma[200], total = 0, head = 0;
    for (int i = 0; i < K; i++) {
        sigma[i] = 3.0 * exp(-i / 10.0);
        total += sigma[i] * sigma[i];
        if (i < r) head += sigma[i] * sigma[i];
    }
    const double want = head / total;
    orthonormal_d(A, m, K, 11);
    orthonormal_d(B, n, K, 12);
    for (int j = 0; j < K; j++)
        for (int i = 0; i < m; i++) A[(size_t)i * K + j] *= sigma[j];
    /* Wr = rank-r truncation (exact reference), Wd = full W */
    cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasTrans, m, n, r, 1.0, A, K, B, K, 0.0, Wr, n);
    cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasTrans, m, n, K, 1.0, A, K, B, K, 0.0, Wd, n);
    for (size_t i = 0; i < (size_t)m * n; i++) W[i] = (float)Wd[i];
    for (int i = 0; i < m; i++)
        for (int j = 0; j < n; j++) Wt[(size_t)j * m + i] = W[(size_t)i * n + j];

    double e[3] = {-1, -1, -1}, rel[2] = {1, 1}, err2[2] = {1, 1};
    int rc[3];
    for (int pass = 0; pass < 2; pass++) {     /* pass 0: W [1500,1200]; pass 1: Wᵀ [1200,1500] */
        int mm = pass ? n : m, nn = pass ? m : n;
        rc[pass] = zl_lowrank_dense(pass ? Wt : W, mm, nn, r, 42, up, down, &e[pass]);
        if (rc[pass]) break;
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, mm, nn, r, 1.0f, up, r, down, nn, 0.0f, P,
                    nn);
        double dr = 0, nr = 0, dw = 0;
        for (int i = 0; i < mm; i++)
            for (int j = 0; j < nn; j++) {
                size_t ij = pass ? (size_t)j * n + i : (size_t)i * n + j;   /* index into Wr/Wd */
                double p = P[(size_t)i * nn + j];
                dr += (p - Wr[ij]) * (p - Wr[ij]);
                nr += Wr[ij] * Wr[ij];
                dw += (p - Wd[ij]) * (p - Wd[ij]);
            }
        rel[pass] = sqrt(dr / nr);
        err2[pass] = dw / total;
    }
    rc[2] = zl_lowrank_dense(W, m, n, r, 42, up, down, &e[2]);   /* same seed: same answer */
    free(A); free(B); free(Wd); free(Wr); free(W); free(Wt); free(up); free(down); free(P);
    for (int pass = 0; pass < 2; pass++) {
        CHECK(rc[pass] == 0);
        CHECK_NEAR(e[pass], want, 1e-4);
        CHECK_MSG(rel[pass] < 1e-3, "pass %d: relative error vs exact truncation %.3g", pass, rel[pass]);
        CHECK_NEAR(err2[pass], 1.0 - want, 1e-4);
    }
    CHECK(rc[2] == 0);
    CHECK(e[2] == e[0]);
}

TEST(lowrank_zero_input) {
    float U[10 * 4] = {0}, V[4 * 7], up[10 * 3], down[3 * 7];
    fill_normal(V, 28, 5);
    for (int i = 0; i < 30; i++) up[i] = 1.0f;
    for (int i = 0; i < 21; i++) down[i] = 1.0f;
    double e = 0;
    CHECK(zl_lowrank_factored(U, V, 10, 4, 7, 3, up, down, &e) == 0);
    CHECK(e == 1.0);
    for (int i = 0; i < 30; i++) CHECK(up[i] == 0.0f);
    for (int i = 0; i < 21; i++) CHECK(down[i] == 0.0f);

    /* exact-path size and randomized-path size */
    static const int sizes[][2] = {{20, 15}, {1030, 1100}};
    for (int c = 0; c < 2; c++) {
        int m = sizes[c][0], n = sizes[c][1], r = 4;
        float *W = calloc((size_t)m * n, sizeof(float));
        float *u = malloc(sizeof(float) * m * r), *d = malloc(sizeof(float) * r * n);
        for (int i = 0; i < m * r; i++) u[i] = 2.0f;
        for (int i = 0; i < r * n; i++) d[i] = 2.0f;
        e = 0;
        int rc = zl_lowrank_dense(W, m, n, r, 3, u, d, &e);
        int zero = 1;
        for (int i = 0; i < m * r; i++) zero &= u[i] == 0.0f;
        for (int i = 0; i < r * n; i++) zero &= d[i] == 0.0f;
        free(W); free(u); free(d);
        CHECK(rc == 0);
        CHECK(e == 1.0);
        CHECK(zero);
    }
}

TEST(lowrank_bad_input) {
    float U[6] = {1, 2, 3, 4, 5, 6}, V[6] = {1, 0, 1, 0, 1, 0}, up[9], down[9];
    double e;
    zl_clear_error();
    CHECK(zl_lowrank_factored(U, V, 0, 2, 3, 1, up, down, &e) == -1);
    CHECK(zl_last_error()[0] != 0);
    CHECK(zl_lowrank_dense(U, 2, 3, 0, 0, up, down, &e) == -1);
    CHECK(zl_lowrank_dense(NULL, 2, 3, 1, 0, up, down, &e) == -1);
    U[4] = NAN;
    CHECK(zl_lowrank_factored(U, V, 3, 2, 3, 1, up, down, &e) == -1);
    CHECK(zl_lowrank_dense(U, 2, 3, 1, 0, up, down, &e) == -1);
    U[4] = INFINITY;
    CHECK(zl_lowrank_dense(U, 2, 3, 1, 0, up, down, &e) == -1);
}
