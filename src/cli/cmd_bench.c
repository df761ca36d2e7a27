/* cmd_bench.c — `zlora bench ...`: speed measurements (never timed tests). The scripts in bench/
 * call these and compare with PyTorch running the same work in the same run.
 *   dit-block --tokens T --dtype f32|bf16 [--exact] [--iters N] [--threads N] [--json]
 *       one full-size Z-Image block (dim 3840, FFN 10240, 30 heads of 128) with random weights:
 *       median seconds per forward, GFLOP/s, peak RSS. With bf16 weights the linears run in bf16
 *       compute (zl_ops_set_bf16_gemm: x rounded to bf16, as PyTorch's bf16 block) unless --exact.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include "base/base.h"
#include "cli/cli.h"
#include "model/zimage.h"

static void *rand_weight(zl_rng *r, int out, int in, zl_dtype dt) {
    size_t n = (size_t)out * in;
    float s = 1.0f / sqrtf((float)in);
    if (dt == ZL_F32) {
        float *w = zl_xmalloc(n * 4);
        for (size_t i = 0; i < n; i++) w[i] = s * (2 * zl_rng_uniform(r) - 1);
        return w;
    }
    uint16_t *w = zl_xmalloc(n * 2);
    for (size_t i = 0; i < n; i++) w[i] = zl_f32_to_bf16(s * (2 * zl_rng_uniform(r) - 1));
    return w;
}

static float *ones(int n, zl_rng *r) {
    float *v = zl_xmalloc(sizeof(float) * (size_t)n);
    for (int i = 0; i < n; i++) v[i] = 1.0f + 0.05f * (2 * zl_rng_uniform(r) - 1);
    return v;
}

static int cmp_d(const void *a, const void *b) { double x = *(const double *)a, y = *(const double *)b; return x < y ? -1 : x > y; }

static int bench_dit_block(int argc, char **argv) {
    int T = 1024, iters = 3, json = 0, threads = 0, exact = 0;
    zl_dtype dt = ZL_BF16;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--tokens") && i + 1 < argc) T = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--iters") && i + 1 < argc) iters = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--threads") && i + 1 < argc) threads = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--json")) json = 1;
        else if (!strcmp(argv[i], "--exact")) exact = 1;
        else if (!strcmp(argv[i], "--dtype") && i + 1 < argc) {
            const char *v = argv[++i];
            if (!strcmp(v, "f32") || !strcmp(v, "fp32")) dt = ZL_F32;
            else if (!strcmp(v, "bf16")) dt = ZL_BF16;
            else return zl_err("--dtype must be f32 or bf16"), zl_cli_fail();
        } else if (!strcmp(argv[i], "--backward")) return zl_err("--backward arrives with the training issue"), zl_cli_fail();
        else return zl_err("bench dit-block: unexpected argument '%s'", argv[i]), zl_cli_fail();
    }
    if (T < 1 || iters < 1) return zl_err("--tokens and --iters must be positive"), zl_cli_fail();
    if (threads > 0) zl_ops_set_threads(threads);
    int bf16_gemm = dt == ZL_BF16 && !exact, old_gemm = zl_ops_bf16_gemm();
    zl_ops_set_bf16_gemm(bf16_gemm);
    zl_zimage_config c;
    zl_zimage_default_config(&c);
    zl_rng r = {1234};
    zl_zblock b = {0};
    b.modulated = 1;
    zl_linear *ls[] = {&b.q, &b.k, &b.v, &b.o, &b.w1, &b.w2, &b.w3, &b.ada};
    int outs[] = {c.dim, c.dim, c.dim, c.dim, c.ffn, c.dim, c.ffn, 4 * c.dim};
    int ins[] = {c.dim, c.dim, c.dim, c.dim, c.dim, c.ffn, c.dim, c.adaln};
    for (int i = 0; i < 8; i++) {
        ls[i]->dtype = dt; ls[i]->out = outs[i]; ls[i]->in = ins[i];
        ls[i]->w = rand_weight(&r, outs[i], ins[i], dt);
    }
    float *ada_b = zl_xcalloc((size_t)4 * c.dim, sizeof(float));
    b.ada.bias = ada_b;
    b.norm_q = ones(c.head_dim, &r); b.norm_k = ones(c.head_dim, &r);
    b.attn_norm1 = ones(c.dim, &r); b.attn_norm2 = ones(c.dim, &r); b.ffn_norm1 = ones(c.dim, &r); b.ffn_norm2 = ones(c.dim, &r);
    float *x = zl_xmalloc(sizeof(float) * (size_t)T * c.dim), *x0 = zl_xmalloc(sizeof(float) * (size_t)T * c.dim);
    for (size_t i = 0; i < (size_t)T * c.dim; i++) x0[i] = zl_rng_normal(&r);
    float *cond = ones(c.adaln, &r);
    int32_t *ids = zl_xcalloc((size_t)3 * T, sizeof(int32_t));
    int side = 1;
    while (side * side < T) side++;
    for (int i = 0; i < T; i++) { ids[3 * i] = 33; ids[3 * i + 1] = i / side; ids[3 * i + 2] = i % side; }
    float *cs = zl_xmalloc(sizeof(float) * (size_t)T * c.head_dim);
    zl_rope_table_3axis(cs, ids, T, c.axes_dims, c.rope_theta);
    double *times = zl_xmalloc(sizeof(double) * (size_t)(iters + 1));
    zl_zblock_ws *ws = zl_zblock_ws_new(&c, T); /* scratch reused, as the model forward does */
    int rc = ws ? 0 : -1;
    for (int it = 0; it <= iters && rc == 0; it++) { /* the first run warms up */
        memcpy(x, x0, sizeof(float) * (size_t)T * c.dim);
        double t0 = zl_now();
        rc = zl_zblock_forward(&c, &b, x, T, cs, cond, ws);
        times[it] = zl_now() - t0;
    }
    zl_zblock_ws_free(ws);
    if (rc == 0) {
        qsort(times + 1, (size_t)iters, sizeof(double), cmp_d);
        double med = times[1 + iters / 2];
        double d = c.dim, f = c.ffn, n = T;
        double flops = 2 * n * (4 * d * d + 3 * d * f) + 4 * n * n * d;
        struct rusage ru;
        getrusage(RUSAGE_SELF, &ru);
        double rss_mb = (double)ru.ru_maxrss / 1024.0;
        if (json)
            printf("{\"bench\":\"dit-block\",\"tokens\":%d,\"dtype\":\"%s\",\"gemm\":\"%s\",\"seconds\":%.4f,\"gflops\":%.1f,\"peak_rss_mb\":%.0f,\"iters\":%d}\n",
                   T, dt == ZL_F32 ? "f32" : "bf16", bf16_gemm ? "bf16" : "f32", med, flops / med * 1e-9, rss_mb, iters);
        else
            printf("dit-block forward, %d tokens, %s weights, %s gemm: %.3f s (median of %d), %.1f GFLOP/s, peak RSS %.0f MB\n", T,
                   dt == ZL_F32 ? "f32" : "bf16", bf16_gemm ? "bf16" : "f32", med, iters, flops / med * 1e-9, rss_mb);
    }
    zl_ops_set_bf16_gemm(old_gemm);
    for (int i = 0; i < 8; i++) free((void *)ls[i]->w);
    free(ada_b); free(b.norm_q); free(b.norm_k); free(b.attn_norm1); free(b.attn_norm2); free(b.ffn_norm1); free(b.ffn_norm2);
    free(x); free(x0); free(cond); free(ids); free(cs); free(times);
    return rc ? zl_cli_fail() : 0;
}

int zl_cmd_bench(int argc, char **argv) {
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
        printf("usage: zlora bench <what> ...\n"
               "  dit-block --tokens T --dtype f32|bf16 [--exact] [--iters N] [--threads N] [--json]\n"
               "      one full-size Z-Image block with random weights: seconds per forward (median), GFLOP/s, peak RSS;\n"
               "      bf16 weights run bf16 compute (x rounded to bf16, fp32 accumulation) unless --exact\n");
        return argc < 2 ? 2 : 0;
    }
    if (!strcmp(argv[1], "dit-block")) return bench_dit_block(argc - 1, argv + 1);
    fprintf(stderr, "error: unknown benchmark '%s'\n", argv[1]);
    return 2;
}
