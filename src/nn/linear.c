/* linear.c — zl_op_linear (see ops.h): y [n, out] = x [n, in] · Wᵀ + bias + Σ branches + x·deltaᵀ.
 *
 * F32 W: one cblas_sgemm. BF16 (or any other float dtype) W: rows of W are converted to f32 in tiles of
 * TILE_ROWS rows (fewer if that passes TILE_MAX_BYTES) into one scratch buffer, and each tile is one sgemm
 * into its columns of y (ldc = out): a tile is converted once and reused for all n rows, and no full f32
 * copy of W exists. Tiles are large on purpose: OpenBLAS re-packs all of x on every call, so the cost of
 * tiling grows as 1/rows-per-tile (measured at n = 4096, 10240×3840: 544 rows +24 %, 1024 +13 %, 2048 +6 %
 * over the F32 time). For n <= DIRECT_MAX_N the work is memory-bound and W is read once, directly, by
 * dot products that convert on the fly (4 rows of W × 4 rows of x per block). When no tile can be
 * allocated (even of one row) the direct path is used for any n: slower, but it needs no memory.
 * Branches go through an [n, r] scratch, or a stack buffer in chunks of rows and ranks when that cannot
 * be allocated.
 *
 * bf16 compute (zl_ops_set_bf16_gemm, BF16 weights only): x is rounded to bf16 and multiplied on bf16
 * dot-product hardware by oneDNN (linear_dnnl.c, which also adds the bias), for any n: even at n = 1 it
 * streams W faster than the direct path (measured 3840×3840: n = 1 1.4 ms against 3.4, n = 64 5.6 ms
 * against 25 for the fp32 path). Where it cannot run (no AVX512_BF16, GENERIC/FALLBACK kernels, oneDNN
 * not built in or failing) x is rounded the same way and the fp32 paths below do the product, so the mode
 * means the same numbers everywhere. Branches and delta always use the unrounded x.
 *
 * The backward's input gradient follows the same mode: dx = bf16(dy)·W by oneDNN (or dy rounded the same
 * way, then the fp32 paths), branches and delta with the unrounded dy; parameter gradients stay fp32.
 *
 * Nothing here runs an OpenMP region right before an sgemm: with OpenBLAS's pthread build libgomp's idle
 * workers spin for a few ms (GOMP_SPINCOUNT) after a region, on the cores OpenBLAS's threads then need
 * (and those spin in sched_yield after the sgemm); converting a tile on the calling thread is cheaper than
 * that contention (measured: n = 128, 30 % faster). The Makefile links OpenBLAS's OpenMP build where it is
 * installed, which shares libgomp's pool and avoids the contention altogether.
 *
 * The branches' rank-side products (x·downᵀ, dy·up, and the parameter gradients dyᵀ·t, uᵀ·x) run in
 * linear_lowrank.c's AVX-512 passes with the SIMD kernels (BLAS is slow on r-column products), on BLAS
 * otherwise and with dropout; the rank-r expansions (t·upᵀ, u·down) stay on BLAS.
 */
#include "nn/ops.h"
#include "nn/ops_internal.h"

#include <cblas.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#define TILE_ROWS 2048             /* rows of W converted per tile ... */
#define TILE_MAX_BYTES (64u << 20) /* ... unless that is more f32 bytes than this */
#define DIRECT_MAX_N 16            /* BF16 with n <= this: direct dot products */
#define BRANCH_STACK 4096          /* floats of stack scratch for branches when malloc fails */
#define DIRECT_CHUNK 256           /* generic direct path: W elements converted at a time */

static inline float bf16f(uint16_t h) {
    uint32_t u = (uint32_t)h << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}

/* ------------------------------------------------------------------ conversion of W rows */

#ifdef ZL_X86_SIMD
ZL_AVX512 static void bf16_to_f32_avx512(float *dst, const uint16_t *src, size_t n) {
    size_t i = 0;
    for (; i + 16 <= n; i += 16) {
        __m512i v = _mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)(src + i)));
        _mm512_storeu_ps(dst + i, _mm512_castsi512_ps(_mm512_slli_epi32(v, 16)));
    }
    for (; i < n; i++) dst[i] = bf16f(src[i]);
}

ZL_AVX512_INLINE __m512 bf16_round_avx512(__m512 v) { return _mm512_castsi512_ps(zl_bf16_round_bits(v)); }

/* dst = bf16(src), n elements. */
ZL_AVX512 static void f32_to_bf16_avx512(uint16_t *dst, const float *src, size_t n) {
    size_t i = 0;
    for (; i + 16 <= n; i += 16) {
        __m512i b = _mm512_srli_epi32(zl_bf16_round_bits(_mm512_loadu_ps(src + i)), 16);
        _mm256_storeu_si256((__m256i *)(dst + i), _mm512_cvtepi32_epi16(b));
    }
    for (; i < n; i++) dst[i] = zl_f32_to_bf16(src[i]);
}
/* dst = src rounded to bf16, as f32, n elements. */
ZL_AVX512 static void round_bf16_avx512(float *dst, const float *src, size_t n) {
    size_t i = 0;
    for (; i + 16 <= n; i += 16) _mm512_storeu_ps(dst + i, bf16_round_avx512(_mm512_loadu_ps(src + i)));
    for (; i < n; i++) dst[i] = zl_bf16_round(src[i]);
}
#endif

/* dst [cnt] = bf16(src) (tobf16) or src rounded to bf16 as f32 (!tobf16); with par, OpenMP over blocks
 * when big (only before oneDNN, which runs on the same OpenMP threads; see the top of this file). */
static void round_x(void *dst, const float *src, size_t cnt, int tobf16, int simd, int par) {
    const size_t blk = 1u << 16;
    size_t nb = (cnt + blk - 1) / blk;
#pragma omp parallel for schedule(static) if (par && nb > 1)
    for (size_t b = 0; b < nb; b++) {
        size_t i0 = b * blk, m = cnt - i0 < blk ? cnt - i0 : blk;
#ifdef ZL_X86_SIMD
        if (simd) {
            if (tobf16) f32_to_bf16_avx512((uint16_t *)dst + i0, src + i0, m);
            else round_bf16_avx512((float *)dst + i0, src + i0, m);
            continue;
        }
#endif
        if (tobf16)
            for (size_t i = 0; i < m; i++) ((uint16_t *)dst)[i0 + i] = zl_f32_to_bf16(src[i0 + i]);
        else
            for (size_t i = 0; i < m; i++) ((float *)dst)[i0 + i] = zl_bf16_round(src[i0 + i]);
    }
    (void)simd;
}

/* dst [cnt] = bf16(src), OpenMP over blocks; for linear_dnnl.c (see ops_internal.h). */
void zl_f32_to_bf16_par_(uint16_t *dst, const float *src, size_t cnt) {
    round_x(dst, src, cnt, 1, zl_ops_kernels_() == ZL_KERNELS_SIMD, 1);
}

/* dst [nr, in] = rows [r0, r0+nr) of W as f32, on the calling thread (see the top of this file). */
static void convert_rows(float *dst, const zl_linear *L, size_t r0, int nr, int simd) {
    size_t cnt = (size_t)nr * (size_t)L->in, esz = zl_dtype_size(L->dtype);
    const char *src = (const char *)L->w + r0 * (size_t)L->in * esz;
#ifdef ZL_X86_SIMD
    if (simd && L->dtype == ZL_BF16) { bf16_to_f32_avx512(dst, (const uint16_t *)src, cnt); return; }
#endif
    (void)simd;
    if (L->dtype == ZL_BF16) {
        const uint16_t *s16 = (const uint16_t *)src;
        for (size_t i = 0; i < cnt; i++) dst[i] = bf16f(s16[i]);
        return;
    }
    zl_to_f32(dst, src, L->dtype, cnt);
}

/* ------------------------------------------------------------------ direct path (no scratch) */

/* y[r][o] = beta·y[r][o] + x[r]·W[o] for all r < n; W any float dtype, converted DIRECT_CHUNK at a time
 * on the stack. Rows of x are taken four at a time. rx: x is rounded to bf16 on the fly (bf16 compute). */
static void direct_generic(float *y, const float *x, const zl_linear *L, int n, float beta, int rx) {
    int out = L->out, in = L->in;
    size_t esz = zl_dtype_size(L->dtype);
#pragma omp parallel for schedule(static) if ((size_t)out * in >= (1u << 16))
    for (int o = 0; o < out; o++) {
        const char *wr = (const char *)L->w + (size_t)o * in * esz;
        float wb[DIRECT_CHUNK];
        for (int r0 = 0; r0 < n; r0 += 4) {
            int nr = n - r0 < 4 ? n - r0 : 4;
            float acc[4] = {0, 0, 0, 0};
            for (int i0 = 0; i0 < in; i0 += DIRECT_CHUNK) {
                int ni = in - i0 < DIRECT_CHUNK ? in - i0 : DIRECT_CHUNK;
                if (L->dtype == ZL_BF16) {
                    const uint16_t *w16 = (const uint16_t *)wr + i0;
                    for (int i = 0; i < ni; i++) wb[i] = bf16f(w16[i]);
                } else {
                    zl_to_f32(wb, wr + (size_t)i0 * esz, L->dtype, (size_t)ni);
                }
                for (int rr = 0; rr < nr; rr++) {
                    const float *xr = x + (size_t)(r0 + rr) * in + i0;
                    float s = 0;
                    if (rx)
                        for (int i = 0; i < ni; i++) s += zl_bf16_round(xr[i]) * wb[i];
                    else
                        for (int i = 0; i < ni; i++) s += xr[i] * wb[i];
                    acc[rr] += s;
                }
            }
            for (int rr = 0; rr < nr; rr++) {
                float *yo = y + (size_t)(r0 + rr) * out + o;
                *yo = (beta != 0.0f ? *yo : 0.0f) + acc[rr];
            }
        }
    }
}

#ifdef ZL_X86_SIMD
/* BF16 only, outputs [o0, o1): blocks of 4 rows of W × 4 rows of x (16 accumulators; a missing row
 * repeats the block's first one and its results are dropped). rx: x rounded to bf16 on the fly. */
ZL_AVX512 static void direct_bf16_avx512(float *y, const float *x, const uint16_t *w, int n, int out, int in,
                                         float beta, int o0, int o1, int rx) {
    for (int ob = o0; ob < o1; ob += 4) {
        int no = o1 - ob < 4 ? o1 - ob : 4;
        const uint16_t *wr[4];
        for (int k = 0; k < 4; k++) wr[k] = w + (size_t)(ob + (k < no ? k : 0)) * in;
        for (int r0 = 0; r0 < n; r0 += 4) {
            int nr = n - r0 < 4 ? n - r0 : 4;
            const float *xr[4];
            for (int k = 0; k < 4; k++) xr[k] = x + (size_t)(r0 + (k < nr ? k : 0)) * in;
            __m512 acc[4][4];
            for (int a = 0; a < 4; a++)
                for (int b = 0; b < 4; b++) acc[a][b] = _mm512_setzero_ps();
            int i = 0;
            for (; i + 16 <= in; i += 16) {
                __m512 wv[4], xv[4];
                for (int a = 0; a < 4; a++) {
                    __m512i v = _mm512_cvtepu16_epi32(_mm256_loadu_si256((const __m256i *)(wr[a] + i)));
                    wv[a] = _mm512_castsi512_ps(_mm512_slli_epi32(v, 16));
                    xv[a] = _mm512_loadu_ps(xr[a] + i);
                    if (rx) xv[a] = bf16_round_avx512(xv[a]);
                }
                for (int a = 0; a < 4; a++)
                    for (int b = 0; b < 4; b++) acc[a][b] = _mm512_fmadd_ps(wv[a], xv[b], acc[a][b]);
            }
            for (int a = 0; a < no; a++)
                for (int b = 0; b < nr; b++) {
                    float s = _mm512_reduce_add_ps(acc[a][b]);
                    for (int j = i; j < in; j++) s += bf16f(wr[a][j]) * (rx ? zl_bf16_round(xr[b][j]) : xr[b][j]);
                    float *yo = y + (size_t)(r0 + b) * out + ob + a;
                    *yo = (beta != 0.0f ? *yo : 0.0f) + s;
                }
        }
    }
}
#endif

static void linear_direct(float *y, const float *x, const zl_linear *L, int n, float beta, int kern, int rx) {
#ifdef ZL_X86_SIMD
    if (kern == ZL_KERNELS_SIMD && L->dtype == ZL_BF16) {
        int out = L->out, chunk = 16, nchunk = (out + chunk - 1) / chunk;
#pragma omp parallel for schedule(static) if ((size_t)out * L->in >= (1u << 16))
        for (int c = 0; c < nchunk; c++)
            direct_bf16_avx512(y, x, (const uint16_t *)L->w, n, out, L->in, beta, c * chunk,
                               (c + 1) * chunk < out ? (c + 1) * chunk : out, rx);
        return;
    }
#endif
    (void)kern;
    direct_generic(y, x, L, n, beta, rx);
}

/* ------------------------------------------------------------------ tiled path */

/* The tile buffer is kept between calls (the largest used so far, at most about TILE_MAX_BYTES): a fresh
 * malloc of tens of MB is a fresh mmap whose pages the kernel zeroes again on every call (measured on
 * the Qwen3-4B encoder at 100 tokens, 245 linears per forward: ≈ 3.7 s of system time per forward).
 * One caller at a time uses it (trylock); a concurrent caller allocates its own, as before. */
static pthread_mutex_t tile_mu = PTHREAD_MUTEX_INITIALIZER;
static float *tile_keep;
static size_t tile_keep_n; /* floats */

/* Returns -1 (nothing written) when no tile of even one row can be allocated. */
static int linear_tiled(float *y, const float *x, const zl_linear *L, int n, float beta, int kern) {
    int out = L->out, in = L->in;
    size_t tr = (size_t)zl_ops_bf16_tile_rows_();
    if (!tr) {
        tr = TILE_MAX_BYTES / (sizeof(float) * (size_t)in);
        tr = tr > TILE_ROWS ? TILE_ROWS : tr < 16 ? 16 : tr / 16 * 16;
    }
    if (tr > (size_t)out) tr = (size_t)out;
    float *buf = NULL;
    int kept = pthread_mutex_trylock(&tile_mu) == 0;
    if (kept) {
        if (tile_keep_n < tr * (size_t)in) {
            free(tile_keep);
            tile_keep = malloc(sizeof(float) * tr * (size_t)in);
            tile_keep_n = tile_keep ? tr * (size_t)in : 0;
        }
        if (!(buf = tile_keep)) {
            pthread_mutex_unlock(&tile_mu);
            kept = 0;
        }
    }
    for (; !buf;) {
        buf = malloc(sizeof(float) * tr * (size_t)in);
        if (buf || tr == 1) break;
        tr /= 2;
    }
    if (!buf) return -1;
    for (size_t o0 = 0; o0 < (size_t)out; o0 += tr) {
        int nr = (int)((size_t)out - o0 < tr ? (size_t)out - o0 : tr);
        convert_rows(buf, L, o0, nr, kern == ZL_KERNELS_SIMD);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, nr, in, 1.0f, x, in, buf, in, beta, y + o0, out);
    }
    if (kept) pthread_mutex_unlock(&tile_mu);
    else free(buf);
    return 0;
}

/* ------------------------------------------------------------------ branches */

/* LoRA dropout (see zl_op_dropout_mask in ops.h). Element index e = i·cols + j of the call's input; one
 * SplitMix64 finalisation of key + (e/4)·φ gives four 16-bit uniforms, lane e mod 4 for element e, and the
 * element is kept when its lane is >= thr = round(p·2^16) (P is honoured to 1/65536). The masked input is
 * formed in blocks of at most DROP_BLOCK floats (rows × columns) on the calling thread, never as a whole
 * [n, in] copy; the backward masks x once for both factors. Measured (one thread, [1024, 3840]·[3840,
 * 3840]ᵀ f32 weights, rank 16, P = 0.1): forward 296–302 → 302–308 ms (+2 %), backward 304–310 → 319–323
 * ms (+4.5 %); with 24-bit uniforms from one hash per element and three mask passes it was +5 % / +9 %. */
#define DROP_BLOCK (1u << 20)
#define DROP_SEG 256 /* mask values made at a time, on the stack */

static inline uint64_t drop_mix(uint64_t z) {
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}
static inline uint32_t drop_thr(float p) { return (uint32_t)((double)p * 65536.0 + 0.5); }

/* m [nc] = the mask values (0 or inv) of elements e0 .. e0 + nc − 1. */
static void drop_scales(float *m, uint64_t key, uint64_t e0, int nc, uint32_t thr, float inv) {
    uint64_t e = e0, end = e0 + (uint64_t)nc;
    int j = 0;
    while (e < end) {
        uint64_t h = drop_mix(key + (e >> 2) * 0x9e3779b97f4a7c15ull);
        for (int l = (int)(e & 3); l < 4 && e < end; l++, e++, j++) m[j] = ((h >> (16 * l)) & 0xffffu) >= thr ? inv : 0.0f;
    }
}

void zl_op_dropout_mask(float *m, uint64_t key, float p, int i0, int rows, int cols) {
    uint32_t thr = drop_thr(p);
    float inv = 1.0f / (1.0f - p);
    for (int i = 0; i < rows; i++)
        drop_scales(m + (size_t)i * cols, key, (uint64_t)(i0 + i) * (uint64_t)cols, cols, thr, inv);
}

/* The masked input block: dst [rows, nc] = x∘M over rows [i0, i0 + rows) and columns [j0, j0 + nc) of the
 * call's input x [n, in] (x points at the call's row 0). add: dst is dx instead, [n, in] like x, and
 * dx += src∘M over that block, src [rows, nc]. */
static void drop_apply(float *dst, const float *src, const zl_branch *b, int i0, int rows, int in, int j0, int nc, int add) {
    uint32_t thr = drop_thr(b->dropout);
    float inv = 1.0f / (1.0f - b->dropout), m[DROP_SEG];
    for (int i = 0; i < rows; i++) {
        uint64_t e0 = (uint64_t)(i0 + i) * (uint64_t)in + (uint64_t)j0;
        for (int c0 = 0; c0 < nc; c0 += DROP_SEG) {
            int k = nc - c0 < DROP_SEG ? nc - c0 : DROP_SEG;
            drop_scales(m, b->drop_key, e0 + (uint64_t)c0, k, thr, inv);
            if (add) {
                float *d = dst + (size_t)(i0 + i) * in + j0 + c0;
                const float *sr = src + (size_t)i * nc + c0;
                for (int j = 0; j < k; j++) d[j] += sr[j] * m[j];
            } else {
                float *d = dst + (size_t)i * nc + c0;
                const float *xr = src + (size_t)(i0 + i) * in + j0 + c0;
                for (int j = 0; j < k; j++) d[j] = xr[j] * m[j];
            }
        }
    }
}
static void drop_block(float *dst, const float *x, const zl_branch *b, int i0, int rows, int in, int j0, int nc) {
    drop_apply(dst, x, b, i0, rows, in, j0, nc, 0);
}
static void drop_add(float *dx, const float *src, const zl_branch *b, int i0, int rows, int in, int j0, int nc) {
    drop_apply(dx, src, b, i0, rows, in, j0, nc, 1);
}

/* Scratch for masked blocks: [rows, columns] of at most cap floats. */
typedef struct {
    float *p;
    size_t cap;
} dscratch;

/* How an [ni, in] block of the input is cut to fit d: nc columns (all of them when they fit) by rw rows. */
static void drop_blocking(const dscratch *d, int in, int *nc, int *rw) {
    *nc = (size_t)in <= d->cap ? in : (int)d->cap;
    *rw = (int)(d->cap / (size_t)*nc);
}

/* t [ni, rr] = (x∘M)[i0 : i0 + ni] · down[r0 : r0 + rr]ᵀ, block by block through d; with u [ni, rr], each
 * masked block also serves d_down[r0 : r0 + rr] += scale·uᵀ·(x∘M) (one mask pass for both factors). */
static void drop_xdown(float *t, const float *x, const zl_branch *b, int i0, int ni, int r0, int rr, int in,
                       const dscratch *d, const float *u) {
    int nc, rw;
    drop_blocking(d, in, &nc, &rw);
    for (int a = 0; a < ni; a += rw)
        for (int j0 = 0, na = ni - a < rw ? ni - a : rw; j0 < in; j0 += nc) {
            int nj = in - j0 < nc ? in - j0 : nc;
            drop_block(d->p, x, b, i0 + a, na, in, j0, nj);
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, na, rr, nj, 1.0f, d->p, nj,
                        b->down + (size_t)r0 * in + j0, in, j0 ? 1.0f : 0.0f, t + (size_t)a * rr, rr);
            if (u)
                cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, rr, nj, na, b->scale, u + (size_t)a * rr, rr,
                            d->p, nj, 1.0f, b->d_down + (size_t)r0 * in + j0, in);
        }
}

/* t [ni, rr] = x̃[i0 : i0 + ni] · down[r0 : r0 + rr]ᵀ, x̃ = x or, with dropout, x∘M (through d). */
static void branch_xdown(float *t, const float *x, const zl_branch *b, int i0, int ni, int r0, int rr, int in,
                         const dscratch *d, int kern) {
    if (b->dropout <= 0.0f) {
        if (kern == ZL_KERNELS_SIMD && !zl_lowrank_pass_(x + (size_t)i0 * in, ni, in, in, b->down + (size_t)r0 * in, in, 1,
                                                          t, rr, NULL, 0, NULL, 0, 0, 0.0f, rr))
            return;
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, ni, rr, in, 1.0f, x + (size_t)i0 * in, in,
                    b->down + (size_t)r0 * in, in, 0.0f, t, rr);
        return;
    }
    drop_xdown(t, x, b, i0, ni, r0, rr, in, d, NULL);
}

/* Masked-block scratch for the branches of L that have dropout: heap (DROP_BLOCK floats, fewer for small
 * inputs) or the caller's stack buffer. *heap receives what to free. */
static dscratch drop_scratch(const zl_linear *L, int n, int kern, float *stack, size_t nstack, float **heap) {
    dscratch d = {stack, nstack};
    *heap = NULL;
    int any = 0;
    for (int i = 0; i < L->nbranch; i++) any |= L->branch[i].dropout > 0.0f && L->branch[i].r > 0 && L->branch[i].scale != 0.0f;
    if (!any || kern == ZL_KERNELS_FALLBACK) return d;
    size_t want = (size_t)n * (size_t)L->in;
    if (want > DROP_BLOCK) want = DROP_BLOCK > (size_t)L->in ? DROP_BLOCK / (size_t)L->in * (size_t)L->in : (size_t)L->in;
    if (want > nstack && (*heap = malloc(sizeof(float) * want))) { d.p = *heap; d.cap = want; }
    return d;
}

/* y += scale · (x̃ downᵀ) upᵀ, through t = x̃·downᵀ [rows, ranks] in chunks that fit the scratch. */
static void apply_branch(float *y, const float *x, const zl_branch *b, int n, int in, int out, int kern, const dscratch *d) {
    int r = b->r;
    if (r <= 0 || b->scale == 0.0f) return;
    float stackbuf[BRANCH_STACK];
    float *heap = NULL, *t = stackbuf;
    size_t cap = BRANCH_STACK;
    if (kern != ZL_KERNELS_FALLBACK && (heap = malloc(sizeof(float) * (size_t)n * (size_t)r))) {
        t = heap;
        cap = (size_t)n * (size_t)r;
    }
    int rc = (size_t)r < cap ? r : (int)cap;
    size_t nrows = cap / (size_t)rc;
    int nr = nrows > (size_t)n ? n : (int)nrows;
    for (int r0 = 0; r0 < r; r0 += rc) {
        int rr = r - r0 < rc ? r - r0 : rc;
        for (int i0 = 0; i0 < n; i0 += nr) {
            int ni = n - i0 < nr ? n - i0 : nr;
            branch_xdown(t, x, b, i0, ni, r0, rr, in, d, kern);
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, ni, out, rr, b->scale, t, rr, b->up + r0, r, 1.0f,
                        y + (size_t)i0 * out, out);
        }
    }
    free(heap);
}

/* ------------------------------------------------------------------ bf16 compute */

static int bf16_gemm_on;
static int bf16_backend = ZL_BF16_GEMM_AUTO;
static long bf16_fast_calls;
long zl_ops_bf16_fast_calls(void) { return bf16_fast_calls; }

void zl_ops_set_bf16_gemm(int on) { bf16_gemm_on = on != 0; }
int zl_ops_bf16_gemm(void) { return bf16_gemm_on; }
void zl_ops_set_bf16_gemm_backend(int backend) { bf16_backend = backend; }

int zl_ops_have_avx512bf16(void) {
#ifdef ZL_X86_SIMD
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bf16") ? 1 : 0;
#else
    return 0;
#endif
}

/* y = bf16(x)·Wᵀ + bias with a bf16 dot-product kernel; -1 (y undefined) when none can run. */
static int linear_bf16_fast(float *y, const float *x, const zl_linear *L, int n, int kern) {
    if (kern != ZL_KERNELS_SIMD || bf16_backend == ZL_BF16_GEMM_EMULATE || !zl_ops_have_avx512bf16()) return -1;
    int rc = zl_bf16_gemm_dnnl_(y, x, (const uint16_t *)L->w, L->bias, n, L->out, L->in);
    if (rc == 0) bf16_fast_calls++;
    return rc;
}

/* dx (+)= bf16(dy)·W with a bf16 dot-product kernel; -1 (dx untouched) when none can run. */
static int dx_bf16_fast(float *dx, const float *dy, const zl_linear *L, int n, int accumulate, int kern) {
    if (kern != ZL_KERNELS_SIMD || bf16_backend == ZL_BF16_GEMM_EMULATE || !zl_ops_have_avx512bf16()) return -1;
    int rc = zl_bf16_gemm_dx_dnnl_(dx, dy, (const uint16_t *)L->w, n, L->out, L->in, accumulate);
    if (rc == 0) bf16_fast_calls++;
    return rc;
}

/* ------------------------------------------------------------------ zl_op_linear */

void zl_op_linear(float *y, const float *x, const zl_linear *L, int n) {
    int out = L->out, in = L->in;
    if (n <= 0 || out <= 0) return;
    int kern = zl_ops_kernels_();
    int rx = bf16_gemm_on && L->dtype == ZL_BF16 && in > 0; /* round x to bf16 */
    if (rx && linear_bf16_fast(y, x, L, n, kern) == 0) goto adapters;
    float beta = 0.0f;
    if (L->bias) { /* on this thread, like convert_rows */
        for (int r = 0; r < n; r++) memcpy(y + (size_t)r * out, L->bias, sizeof(float) * (size_t)out);
        beta = 1.0f;
    } else if (in <= 0) {
        memset(y, 0, sizeof(float) * (size_t)n * (size_t)out);
    }
    if (in <= 0) return;

    if (L->dtype == ZL_F32) {
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, out, in, 1.0f, x, in, (const float *)L->w, in, beta,
                    y, out);
    } else {
        int dmax = zl_ops_bf16_direct_max_n_();
        if (dmax < 0) dmax = DIRECT_MAX_N;
        if (kern == ZL_KERNELS_FALLBACK || n <= dmax) {
            linear_direct(y, x, L, n, beta, kern, rx);
        } else {
            /* bf16 compute without its kernel: the same rounding of x, then the fp32 product (the direct
             * path rounds on the fly when the rounded copy cannot be allocated) */
            float *xr = NULL;
            if (rx && (xr = malloc(sizeof(float) * (size_t)n * (size_t)in)))
                round_x(xr, x, (size_t)n * (size_t)in, 0, kern == ZL_KERNELS_SIMD, 0);
            if ((rx && !xr) || linear_tiled(y, xr ? xr : x, L, n, beta, kern)) linear_direct(y, x, L, n, beta, kern, rx);
            free(xr);
        }
    }
adapters:
    if (L->nbranch) {
        float dstack[BRANCH_STACK], *dheap;
        dscratch d = drop_scratch(L, n, kern, dstack, BRANCH_STACK, &dheap);
        for (int i = 0; i < L->nbranch; i++) apply_branch(y, x, &L->branch[i], n, in, out, kern, &d);
        free(dheap);
    }
    if (L->delta)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, out, in, 1.0f, x, in, L->delta, in, 1.0f, y, out);
}

/* ------------------------------------------------------------------ zl_op_linear_backward */

/* dx [n, in] = beta·dx + dy·W for BF16 (or other non-F32) W read directly, without scratch beyond the stack:
 * threads split the columns of dx; each walks all rows o of W, converting DIRECT_CHUNK columns at a time,
 * and adds dy[r][o]·W[o][cols] into each row r. Used for small n and when no tile can be allocated.
 * rdy: dy rounded to bf16 on the fly (bf16 compute without its kernel). */
static void dx_direct(float *dx, const float *dy, const zl_linear *L, int n, float beta, int rdy) {
    int out = L->out, in = L->in;
    size_t esz = zl_dtype_size(L->dtype);
    int nchunk = (in + DIRECT_CHUNK - 1) / DIRECT_CHUNK;
#pragma omp parallel for schedule(static) if ((size_t)out * in >= (1u << 16))
    for (int c = 0; c < nchunk; c++) {
        int i0 = c * DIRECT_CHUNK, ni = in - i0 < DIRECT_CHUNK ? in - i0 : DIRECT_CHUNK;
        float wb[DIRECT_CHUNK];
        for (int r = 0; r < n; r++) {
            float *d = dx + (size_t)r * in + i0;
            if (beta == 0.0f) memset(d, 0, sizeof(float) * (size_t)ni);
        }
        for (int o = 0; o < out; o++) {
            const char *wr = (const char *)L->w + ((size_t)o * in + i0) * esz;
            if (L->dtype == ZL_BF16) {
                const uint16_t *w16 = (const uint16_t *)wr;
#pragma omp simd
                for (int i = 0; i < ni; i++) wb[i] = bf16f(w16[i]);
            } else {
                zl_to_f32(wb, wr, L->dtype, (size_t)ni);
            }
            for (int r = 0; r < n; r++) {
                float g = dy[(size_t)r * out + o];
                if (rdy) g = zl_bf16_round(g);
                if (g == 0.0f) continue;
                float *d = dx + (size_t)r * in + i0;
#pragma omp simd
                for (int i = 0; i < ni; i++) d[i] += g * wb[i];
            }
        }
    }
}

/* dx = beta·dx + dy·W through f32 tiles of rows of W (as linear_tiled); -1 when no tile fits in memory. */
static int dx_tiled(float *dx, const float *dy, const zl_linear *L, int n, float beta, int kern) {
    int out = L->out, in = L->in;
    size_t tr = (size_t)zl_ops_bf16_tile_rows_();
    if (!tr) {
        tr = TILE_MAX_BYTES / (sizeof(float) * (size_t)in);
        tr = tr > TILE_ROWS ? TILE_ROWS : tr < 16 ? 16 : tr / 16 * 16;
    }
    if (tr > (size_t)out) tr = (size_t)out;
    float *buf = NULL;
    for (;;) {
        buf = malloc(sizeof(float) * tr * (size_t)in);
        if (buf || tr == 1) break;
        tr /= 2;
    }
    if (!buf) return -1;
    for (size_t o0 = 0; o0 < (size_t)out; o0 += tr) {
        int nr = (int)((size_t)out - o0 < tr ? (size_t)out - o0 : tr);
        convert_rows(buf, L, o0, nr, kern == ZL_KERNELS_SIMD);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, in, nr, 1.0f, dy + o0, out, buf, in,
                    o0 == 0 ? beta : 1.0f, dx, in);
    }
    free(buf);
    return 0;
}

/* Scratch for the branch products: [rows, ranks] blocks, heap when possible, else the stack (chunks). */
typedef struct {
    float *p;
    size_t cap;
} bscratch;

/* The parameter gradients of ranks [r0, r0 + rr) of branch b over rows gi = dy[i0 ..], xi = x[i0 ..] (ni rows)
 * by linear_lowrank.c's passes: t = x·downᵀ (when d_up), then one pass over dy for u = dy·up (when d_down) and
 * d_up += scale·dyᵀ·t, then one over x for d_down += scale·uᵀ·x. 1 when done; 0 (nothing written, or
 * only t and u, which the BLAS path then recomputes) when a pass could not run. */
static int lowrank_param_grads(const float *gi, const float *xi, const zl_branch *b, int ni, int in, int out, int r0,
                               int rr, float *t, float *u) {
    int r = b->r;
    if (b->d_up && zl_lowrank_pass_(xi, ni, in, in, b->down + (size_t)r0 * in, in, 1, t, rr, NULL, 0, NULL, 0, 0, 0.0f, rr))
        return 0;
    if (b->d_down && b->d_up) {
        /* both in one pass over dy: u is written before d_up is touched, so a failure leaves d_up as it was */
        if (zl_lowrank_pass_(gi, ni, out, out, b->up + r0, r, 0, u, rr, t, rr, b->d_up + r0, r, 0, b->scale, rr)) return 0;
    } else if (b->d_up) {
        if (zl_lowrank_pass_(gi, ni, out, out, NULL, 0, 0, NULL, 0, t, rr, b->d_up + r0, r, 0, b->scale, rr)) return 0;
    } else if (zl_lowrank_pass_(gi, ni, out, out, b->up + r0, r, 0, u, rr, NULL, 0, NULL, 0, 0, 0.0f, rr)) {
        return 0;
    }
    if (b->d_down &&
        zl_lowrank_pass_(xi, ni, in, in, NULL, 0, 0, NULL, 0, u, rr, b->d_down + (size_t)r0 * in, in, 1, b->scale, rr)) {
        /* d_up is done already; d_down by BLAS from the u just formed */
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, rr, in, ni, b->scale, u, rr, xi, in, 1.0f,
                    b->d_down + (size_t)r0 * in, in);
    }
    return 1;
}

/* d_up += scale·dyᵀ·(x·downᵀ) and d_down += scale·(dy·up)ᵀ·x, in chunks of rows and ranks that fit s (two
 * blocks of rows × ranks). Returns dy·up [n, r] (in s) when d_down needed it and one chunk held all of it,
 * for branch_dx to reuse; else NULL. */
static const float *branch_param_grads(const float *dy, const float *x, const zl_branch *b, int n, int in, int out,
                                       const bscratch *s, const dscratch *d, int kern) {
    int r = b->r;
    int rc = (size_t)r < s->cap / 2 ? r : (int)(s->cap / 2);
    size_t nrows = s->cap / (2 * (size_t)rc);
    int nr = nrows > (size_t)n ? n : (int)nrows;
    float *t = s->p, *u = s->p + (size_t)nr * rc;
    for (int r0 = 0; r0 < r; r0 += rc) {
        int rr = r - r0 < rc ? r - r0 : rc;
        for (int i0 = 0; i0 < n; i0 += nr) {
            int ni = n - i0 < nr ? n - i0 : nr;
            const float *xi = x + (size_t)i0 * in, *gi = dy + (size_t)i0 * out;
            if (b->dropout > 0.0f && b->d_up && b->d_down) {
                /* both factors: each masked block of x serves t = (x∘M)·downᵀ and d_down += scale·uᵀ·(x∘M)
                 * (the same blocks and order as the separate paths below: the same numbers, one mask pass) */
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, ni, rr, out, 1.0f, gi, out, b->up + r0, r, 0.0f,
                            u, rr);
                drop_xdown(t, x, b, i0, ni, r0, rr, in, d, u);
                cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, out, rr, ni, b->scale, gi, out, t, rr, 1.0f,
                            b->d_up + r0, r);
                continue;
            }
            if (kern == ZL_KERNELS_SIMD && b->dropout <= 0.0f && lowrank_param_grads(gi, xi, b, ni, in, out, r0, rr, t, u))
                continue;
            if (b->d_up) {
                branch_xdown(t, x, b, i0, ni, r0, rr, in, d, kern);
                cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, out, rr, ni, b->scale, gi, out, t, rr, 1.0f,
                            b->d_up + r0, r);
            }
            if (b->d_down) {
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, ni, rr, out, 1.0f, gi, out, b->up + r0, r, 0.0f,
                            u, rr);
                if (b->dropout <= 0.0f) {
                    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, rr, in, ni, b->scale, u, rr, xi, in, 1.0f,
                                b->d_down + (size_t)r0 * in, in);
                } else {
                    int nc, rw; /* d_down += scale·uᵀ·(x∘M), block by block */
                    drop_blocking(d, in, &nc, &rw);
                    for (int a = 0; a < ni; a += rw)
                        for (int j0 = 0, na = ni - a < rw ? ni - a : rw; j0 < in; j0 += nc) {
                            int nj = in - j0 < nc ? in - j0 : nc;
                            drop_block(d->p, x, b, i0 + a, na, in, j0, nj);
                            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, rr, nj, na, b->scale, u + (size_t)a * rr, rr,
                                        d->p, nj, 1.0f, b->d_down + (size_t)r0 * in + j0, in);
                        }
                }
            }
        }
    }
    return b->d_down && rc == r && nr == n ? u : NULL;
}

/* dx[i0 : i0 + ni] += (scale·u·down[r0 : r0 + rr])∘M, u [ni, rr], in blocks through d. */
static void branch_dx_dropped(float *dx, const float *u, const zl_branch *b, int i0, int ni, int r0, int rr, int in,
                              const dscratch *d) {
    int nc, rw;
    drop_blocking(d, in, &nc, &rw);
    for (int a = 0; a < ni; a += rw)
        for (int j0 = 0, na = ni - a < rw ? ni - a : rw; j0 < in; j0 += nc) {
            int nj = in - j0 < nc ? in - j0 : nc;
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, na, nj, rr, b->scale, u + (size_t)a * rr, rr,
                        b->down + (size_t)r0 * in + j0, in, 0.0f, d->p, nj);
            drop_add(dx, d->p, b, i0 + a, na, in, j0, nj);
        }
}

/* dx += scale·(dy·up)·down (masked when the branch has dropout), in chunks that fit s; dyup: dy·up [n, r]
 * already computed (or NULL). */
static void branch_dx(float *dx, const float *dy, const zl_branch *b, int n, int in, int out, const bscratch *s,
                      const float *dyup, const dscratch *d, int kern) {
    int r = b->r;
    if (dyup && b->dropout > 0.0f) {
        branch_dx_dropped(dx, dyup, b, 0, n, 0, r, in, d);
        return;
    }
    if (dyup) {
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, in, r, b->scale, dyup, r, b->down, in, 1.0f, dx, in);
        return;
    }
    int rc = (size_t)r < s->cap ? r : (int)s->cap;
    size_t nrows = s->cap / (size_t)rc;
    int nr = nrows > (size_t)n ? n : (int)nrows;
    for (int r0 = 0; r0 < r; r0 += rc) {
        int rr = r - r0 < rc ? r - r0 : rc;
        for (int i0 = 0; i0 < n; i0 += nr) {
            int ni = n - i0 < nr ? n - i0 : nr;
            if (kern != ZL_KERNELS_SIMD || zl_lowrank_pass_(dy + (size_t)i0 * out, ni, out, out, b->up + r0, r, 0, s->p, rr,
                                                            NULL, 0, NULL, 0, 0, 0.0f, rr))
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, ni, rr, out, 1.0f, dy + (size_t)i0 * out, out,
                            b->up + r0, r, 0.0f, s->p, rr);
            if (b->dropout > 0.0f) branch_dx_dropped(dx, s->p, b, i0, ni, r0, rr, in, d);
            else cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, ni, in, rr, b->scale, s->p, rr,
                             b->down + (size_t)r0 * in, in, 1.0f, dx + (size_t)i0 * in, in);
        }
    }
}

void zl_op_linear_backward(float *dx, const float *dy, const float *x, const zl_linear *L, int n, int accumulate) {
    int out = L->out, in = L->in;
    if (n <= 0 || in <= 0) return;
    int kern = zl_ops_kernels_();
    int rmax = 0, trainable = 0;
    for (int i = 0; i < L->nbranch; i++) {
        const zl_branch *b = &L->branch[i];
        if (b->r <= 0 || b->scale == 0.0f) continue;
        if (b->r > rmax) rmax = b->r;
        trainable |= b->d_down || b->d_up;
    }
    if (!dx && !trainable && !L->dw && !L->db) return;
    /* 0. full-parameter gradients: dW += dyᵀ·x, db += Σ_rows dy */
    if (L->dw && L->dtype == ZL_F32 && out > 0)
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, out, in, n, 1.0f, dy, out, x, in, 1.0f, L->dw, in);
    if (L->db && out > 0) {
#pragma omp parallel for schedule(static) if ((size_t)n * out >= (1u << 16))
        for (int o = 0; o < out; o++) {
            double acc = 0;
            for (int r = 0; r < n; r++) acc += dy[(size_t)r * out + o];
            L->db[o] += (float)acc;
        }
    }
    float stackbuf[BRANCH_STACK];
    bscratch s = {stackbuf, BRANCH_STACK};
    float *heap = NULL;
    size_t want = 2 * (size_t)n * (size_t)(rmax > 0 ? rmax : 1);
    if (rmax > 0 && kern != ZL_KERNELS_FALLBACK && want > BRANCH_STACK && (heap = malloc(sizeof(float) * want))) {
        s.p = heap;
        s.cap = want;
    }
    float dstack[BRANCH_STACK], *dheap;
    dscratch d = drop_scratch(L, n, kern, dstack, BRANCH_STACK, &dheap);
    /* 1. branch parameter gradients: every read of x happens here, before dx is written; dy·up of the last
     * branch stays in the scratch for its dx term when it fitted whole */
    const float *dyup = NULL;
    int dyup_of = -1;
    if (out > 0 && trainable)
        for (int i = 0; i < L->nbranch; i++) {
            const zl_branch *b = &L->branch[i];
            if (b->r > 0 && b->scale != 0.0f && (b->d_down || b->d_up)) {
                const float *u = branch_param_grads(dy, x, b, n, in, out, &s, &d, kern);
                dyup = u;
                dyup_of = u ? i : -1;
            }
        }
    /* 2. dx = dy·W (+ adapters) */
    if (dx) {
        float beta = accumulate ? 1.0f : 0.0f;
        if (out <= 0) {
            if (!accumulate) memset(dx, 0, sizeof(float) * (size_t)n * (size_t)in);
        } else {
            int rdy = bf16_gemm_on && L->dtype == ZL_BF16; /* bf16 compute: dy rounded to bf16 */
            if (L->dtype == ZL_F32) {
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, in, out, 1.0f, dy, out, (const float *)L->w,
                            in, beta, dx, in);
            } else if (!rdy || dx_bf16_fast(dx, dy, L, n, accumulate, kern)) {
                int dmax = zl_ops_bf16_direct_max_n_();
                if (dmax < 0) dmax = DIRECT_MAX_N;
                /* bf16 compute without its kernel: the same rounding of dy, then the fp32 product (the direct
                 * path rounds on the fly when the rounded copy cannot be allocated) */
                float *dyr = NULL;
                if (rdy && kern != ZL_KERNELS_FALLBACK && n > dmax && (dyr = malloc(sizeof(float) * (size_t)n * (size_t)out)))
                    round_x(dyr, dy, (size_t)n * (size_t)out, 0, kern == ZL_KERNELS_SIMD, 0);
                if (kern == ZL_KERNELS_FALLBACK || n <= dmax || (rdy && !dyr) || dx_tiled(dx, dyr ? dyr : dy, L, n, beta, kern))
                    dx_direct(dx, dy, L, n, beta, rdy);
                free(dyr);
            }
            /* the branch whose dy·up was kept first: the others' dy·up reuse the scratch it lies in (a
             * branch of a larger rank before it, e.g. a frozen adapter, would overwrite it) */
            if (dyup_of >= 0) branch_dx(dx, dy, &L->branch[dyup_of], n, in, out, &s, dyup, &d, kern);
            for (int i = 0; i < L->nbranch; i++) {
                const zl_branch *b = &L->branch[i];
                if (b->r > 0 && b->scale != 0.0f && i != dyup_of) branch_dx(dx, dy, b, n, in, out, &s, NULL, &d, kern);
            }
            if (L->delta)
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, in, out, 1.0f, dy, out, L->delta, in, 1.0f,
                            dx, in);
        }
    }
    free(heap);
    free(dheap);
}
