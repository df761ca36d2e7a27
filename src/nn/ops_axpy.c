/* ops_axpy.c — y += alpha·x (see ops.h). */
#include "ops.h"
#include <cblas.h>

void zl_op_axpy(float *y, float alpha, const float *x, size_t n) {
    while (n) { /* BLAS takes int lengths */
        int k = n > (1u << 30) ? (1 << 30) : (int)n;
        cblas_saxpy(k, alpha, x, 1, y, 1);
        x += k; y += k; n -= (size_t)k;
    }
}
