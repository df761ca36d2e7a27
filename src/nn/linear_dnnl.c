/* linear_dnnl.c — the oneDNN backend of the bf16-compute linear (see zl_ops_set_bf16_gemm in ops.h and
 * linear.c): y [n, out] = bf16(x) [n, in] · wᵀ (+ bias), w bf16, fp32 accumulation and output, through
 * oneDNN's matmul primitive (on AVX512_BF16 CPUs its brgemm kernels use vdpbf16ps; measured on 2 Zen 4
 * cores ≈ 400 GFLOP/s against ≈ 190 for fp32 sgemm, vdpbf16ps peak ≈ 437). W [out, in] row-major is
 * passed as the [in, out] operand with strides {1, in}: oneDNN packs it as it goes (pre-packing W once
 * would gain only 1-3 % and double the weight memory).
 *
 * x is converted to bf16 into a buffer kept between calls and grown as needed (no page faults per call;
 * it holds the largest n·in·2 bytes seen, e.g. 84 MB for n = 4096, in = 10240). Primitives are created
 * per (n, out, in, bias?, threads) and cached (CACHE entries, least recently used replaced): creating one
 * takes about a millisecond. Buffer, cache, engine and stream are process-wide and guarded by one mutex
 * held for the whole call, so concurrent callers are safe but run one at a time. oneDNN threads with
 * OpenMP (Debian's libdnnl links libgomp, the runtime of the other ops), so zl_ops_set_threads applies.
 *
 * The same machinery multiplies the input gradient of the linear in the bf16 mode (zl_op_linear_backward):
 * dx [n, in] (+)= bf16(dy) [n, out] · w, w read as the plain [out, in] operand; accumulation into dx is
 * oneDNN's sum post-op.
 *
 * Built only with ZL_HAVE_DNNL (the Makefile defines it when <oneapi/dnnl/dnnl.h> exists and links
 * -ldnnl); otherwise zl_bf16_gemm_dnnl_ returns -1 and linear.c rounds x and uses its fp32 path.
 */
#include "nn/ops_internal.h"

#ifdef ZL_HAVE_DNNL
#include <oneapi/dnnl/dnnl.h>
#include <omp.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#define CACHE 24

/* Two products share the machinery (kind): FWD y [n, out] = bf16(x) [n, in] · wᵀ (+ bias), and DX
 * dx [n, in] (+)= bf16(dy) [n, out] · w (the input gradient of the linear; accumulate: oneDNN's sum
 * post-op adds into dx). In both w [out, in] stays as stored: FWD reads it as the [in, out] operand with
 * strides {1, in}, DX as the plain [out, in] operand. */
enum { FWD = 0, DX = 1 };

typedef struct {
    int kind, n, out, in, bias, sum, threads; /* oneDNN fixes its thread partition when a primitive is created */
    dnnl_primitive_t prim;
    size_t scratch;     /* bytes of the user scratchpad the primitive needs */
    unsigned long used; /* 0: empty slot */
} entry;

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static int state; /* 0 not tried, 1 ready, -1 unusable */
static dnnl_engine_t engine;
static dnnl_stream_t stream;
static entry cache[CACHE];
static unsigned long clock_;
static uint16_t *xbuf; /* bf16(x), kept between calls (grown as needed): no page faults per call */
static size_t xcap;
static void *sbuf;     /* the primitives' scratchpad (user mode), kept between calls and grown as needed */
static size_t scap;

static int init_locked(void) {
    if (state) return state;
    state = -1;
    if (dnnl_engine_create(&engine, dnnl_cpu, 0) != dnnl_success) return state;
    if (dnnl_stream_create(&stream, engine, dnnl_stream_default_flags) != dnnl_success) {
        dnnl_engine_destroy(engine);
        return state;
    }
    state = 1;
    return state;
}

/* The memory descriptors of a product: a (bf16 input), b (bf16 weights), c (f32 output), bi (f32 bias). */
static int descs(int kind, int n, int out, int in, dnnl_memory_desc_t *a, dnnl_memory_desc_t *b, dnnl_memory_desc_t *c,
                 dnnl_memory_desc_t *bi) {
    int k = kind == FWD ? in : out, m = kind == FWD ? out : in; /* a [n, k] · b [k, m] = c [n, m] */
    dnnl_dims_t da = {n, k}, sa = {k, 1}, db = {k, m}, dc = {n, m}, sc = {m, 1}, dbi = {1, m}, sbi = {m, 1};
    dnnl_dims_t sb_fwd = {1, in}, sb_dx = {in, 1};
    return dnnl_memory_desc_init_by_strides(a, 2, da, dnnl_bf16, sa) == dnnl_success &&
           dnnl_memory_desc_init_by_strides(b, 2, db, dnnl_bf16, kind == FWD ? sb_fwd : sb_dx) == dnnl_success &&
           dnnl_memory_desc_init_by_strides(c, 2, dc, dnnl_f32, sc) == dnnl_success &&
           dnnl_memory_desc_init_by_strides(bi, 2, dbi, dnnl_f32, sbi) == dnnl_success;
}

/* A primitive for this product, from the cache or new; NULL when oneDNN has no fast kernel for it. */
static dnnl_primitive_t get_locked(int kind, int n, int out, int in, int bias, int sum, size_t *scratch) {
    entry *victim = &cache[0];
    int threads = omp_get_max_threads();
    for (int i = 0; i < CACHE; i++) {
        entry *e = &cache[i];
        if (e->used && e->kind == kind && e->n == n && e->out == out && e->in == in && e->bias == bias && e->sum == sum &&
            e->threads == threads) {
            e->used = ++clock_;
            *scratch = e->scratch;
            return e->prim;
        }
        if (e->used < victim->used) victim = e;
    }
    dnnl_memory_desc_t a, b, c, bi;
    if (!descs(kind, n, out, in, &a, &b, &c, &bi)) return NULL;
    dnnl_matmul_desc_t md;
    if (dnnl_matmul_desc_init(&md, &a, &b, bias ? &bi : NULL, &c) != dnnl_success) return NULL;
    /* the scratchpad in user mode: one buffer kept between calls instead of oneDNN's per-call one */
    dnnl_primitive_attr_t attr = NULL;
    dnnl_post_ops_t po = NULL;
    if (dnnl_primitive_attr_create(&attr) != dnnl_success) return NULL;
    int ok = dnnl_primitive_attr_set_scratchpad_mode(attr, dnnl_scratchpad_mode_user) == dnnl_success;
    if (ok && sum)
        ok = dnnl_post_ops_create(&po) == dnnl_success && dnnl_post_ops_append_sum(po, 1.0f) == dnnl_success &&
             dnnl_primitive_attr_set_post_ops(attr, po) == dnnl_success;
    if (po) dnnl_post_ops_destroy(po);
    if (!ok) {
        dnnl_primitive_attr_destroy(attr);
        return NULL;
    }
    dnnl_primitive_desc_t pd;
    dnnl_status_t st = dnnl_primitive_desc_create(&pd, &md, attr, engine, NULL);
    if (attr) dnnl_primitive_attr_destroy(attr);
    if (st != dnnl_success) return NULL;
    /* only a kernel that really computes in bf16 is worth it: reject reference / emulated ones */
    const char *impl = NULL;
    int fast = dnnl_primitive_desc_query(pd, dnnl_query_impl_info_str, 0, &impl) == dnnl_success && impl &&
               !strstr(impl, "ref") && (strstr(impl, "bf16") || strstr(impl, "amx"));
    const dnnl_memory_desc_t *smd = dnnl_primitive_desc_query_md(pd, dnnl_query_scratchpad_md, 0);
    size_t sbytes = smd ? dnnl_memory_desc_get_size(smd) : 0;
    dnnl_primitive_t p = NULL;
    if (!fast || dnnl_primitive_create(&p, pd) != dnnl_success) p = NULL;
    dnnl_primitive_desc_destroy(pd);
    if (!p) return NULL;
    if (victim->used) dnnl_primitive_destroy(victim->prim);
    *victim = (entry){kind, n, out, in, bias, sum, threads, p, sbytes, ++clock_};
    *scratch = sbytes;
    return p;
}

/* c = bf16(a)·b (+ bias) (+ c when sum), a [n, FWD ? in : out] f32. */
static int run(int kind, float *c, const float *a, const uint16_t *w, const float *bias, int n, int out, int in, int sum) {
    pthread_mutex_lock(&mu);
    int rc = -1;
    size_t cnt = (size_t)n * (size_t)(kind == FWD ? in : out);
    if (cnt > xcap) {
        free(xbuf);
        xbuf = malloc(sizeof(uint16_t) * cnt);
        xcap = xbuf ? cnt : 0;
    }
    size_t sbytes = 0;
    dnnl_primitive_t p = init_locked() == 1 && xbuf ? get_locked(kind, n, out, in, bias != NULL, sum, &sbytes) : NULL;
    if (p && sbytes > scap) {
        free(sbuf);
        sbuf = malloc(sbytes);
        scap = sbuf ? sbytes : 0;
        if (!sbuf) p = NULL;
    }
    if (p) {
        zl_f32_to_bf16_par_(xbuf, a, cnt);
        dnnl_memory_desc_t da, db, dc, dbi, ds;
        dnnl_dims_t dsz = {(dnnl_dim_t)(sbytes ? sbytes : 1)};
        dnnl_memory_t ma = NULL, mb = NULL, mc = NULL, mbi = NULL, ms = NULL;
        int ok = descs(kind, n, out, in, &da, &db, &dc, &dbi) &&
                 dnnl_memory_desc_init_by_tag(&ds, 1, dsz, dnnl_u8, dnnl_a) == dnnl_success &&
                 dnnl_memory_create(&ms, &ds, engine, sbytes ? sbuf : NULL) == dnnl_success &&
                 dnnl_memory_create(&ma, &da, engine, (void *)xbuf) == dnnl_success &&
                 dnnl_memory_create(&mb, &db, engine, (void *)w) == dnnl_success &&
                 dnnl_memory_create(&mc, &dc, engine, c) == dnnl_success &&
                 (!bias || dnnl_memory_create(&mbi, &dbi, engine, (void *)bias) == dnnl_success);
        if (ok) {
            dnnl_exec_arg_t args[5] = {{DNNL_ARG_SRC, ma}, {DNNL_ARG_WEIGHTS, mb}, {DNNL_ARG_DST, mc},
                                       {DNNL_ARG_SCRATCHPAD, ms}, {DNNL_ARG_BIAS, mbi}};
            if (dnnl_primitive_execute(p, stream, bias ? 5 : 4, args) == dnnl_success &&
                dnnl_stream_wait(stream) == dnnl_success)
                rc = 0;
        }
        if (ma) dnnl_memory_destroy(ma);
        if (mb) dnnl_memory_destroy(mb);
        if (mc) dnnl_memory_destroy(mc);
        if (mbi) dnnl_memory_destroy(mbi);
        if (ms) dnnl_memory_destroy(ms);
    }
    pthread_mutex_unlock(&mu);
    return rc;
}

int zl_bf16_gemm_dnnl_(float *y, const float *x, const uint16_t *w, const float *bias, int n, int out, int in) {
    return run(FWD, y, x, w, bias, n, out, in, 0);
}

int zl_bf16_gemm_dx_dnnl_(float *dx, const float *dy, const uint16_t *w, int n, int out, int in, int accumulate) {
    return run(DX, dx, dy, w, NULL, n, out, in, accumulate != 0);
}

int zl_bf16_gemm_dnnl_available_(void) { return 1; }

#else

int zl_bf16_gemm_dnnl_(float *y, const float *x, const uint16_t *w, const float *bias, int n, int out, int in) {
    (void)y; (void)x; (void)w; (void)bias; (void)n; (void)out; (void)in;
    return -1;
}

int zl_bf16_gemm_dx_dnnl_(float *dx, const float *dy, const uint16_t *w, int n, int out, int in, int accumulate) {
    (void)dx; (void)dy; (void)w; (void)n; (void)out; (void)in; (void)accumulate;
    return -1;
}

int zl_bf16_gemm_dnnl_available_(void) { return 0; }

#endif
