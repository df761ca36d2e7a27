/* lowrank.h — truncated SVD helpers for LoRA resize and lossy conversions (LAPACK through LAPACKE).
 *
 * Both return up [m, r] and down [r, n] such that up @ down is the best rank-r approximation (in the
 * Frobenius norm) of the input, with the singular values split as sqrt(S) into each side, and
 * *energy = (sum of the r largest squared singular values) / ‖input‖²_F  (1 for a zero input).
 * When r exceeds the input's rank bound, the extra rows/columns are zero.
 */
#ifndef ZL_LOWRANK_H
#define ZL_LOWRANK_H
#include <stdint.h>

/* Input given as a product U [m,k] @ V [k,n] (k small): exact, via QR of both factors and an SVD of the
 * k×k core; never forms the m×n matrix. */
int zl_lowrank_factored(const float *U, const float *V, int m, int k, int n, int r,
                        float *up, float *down, double *energy);

/* Input a dense W [m,n]: exact SVD when min(m,n) <= 1024, else a randomized range finder
 * (oversampling 10, 3 power iterations with re-orthonormalisation, seeded) — error far below the
 * discarded energy for the spectra LoRA deltas have. */
int zl_lowrank_dense(const float *W, int m, int n, int r, uint64_t seed,
                     float *up, float *down, double *energy);

#endif
