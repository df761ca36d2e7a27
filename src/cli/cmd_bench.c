/* cmd_bench.c — `zlora bench ...`: speed measurements (never timed tests). The scripts in bench/
 * call these and compare with PyTorch running the same work in the same run.
 *   dit-block --tokens T --dtype f32|bf16 [--exact] [--iters N] [--threads N] [--json]
 *       one full-size Z-Image block (dim 3840, FFN 10240, 30 heads of 128) with random weights:
 *       median seconds per forward, GFLOP/s, peak RSS. With bf16 weights the linears run in bf16
 *       compute (zl_ops_set_bf16_gemm: x rounded to bf16, as PyTorch's bf16 block) unless --exact.
 *   dit-block --backward [--rank R] [--dim D --ffn F] [--dump FILE] ...
 *       the same block's training step with rank-R LoRA branches (bench/train_block.sh compares it with
 *       PyTorch autograd); --dim/--ffn shrink the block for --dump, the gradient check's input.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include "base/base.h"
#include "cli/cli.h"
#include "io/safetensors.h"
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

static double median(double *v, int n) {
    qsort(v, (size_t)n, sizeof(double), cmp_d);
    return v[n / 2];
}

static double peak_rss_mb(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_maxrss / 1024.0;
}

/* One modulated block with random weights (and, with rank > 0, a trainable LoRA branch with gradient
 * buffers on each of q, k, v, out, w1, w2, w3), its input, conditioning and RoPE table. */
enum { NLIN = 8, NLORA = 7 };
typedef struct {
    zl_zimage_config c;
    zl_zblock b;
    zl_dtype dt;
    int T, rank;
    zl_branch br[NLORA];
    float *ada_b, *x0, *cond, *cs;
} bench_block;

static const char *const lin_names[NLIN] = {"attention.to_q", "attention.to_k", "attention.to_v", "attention.to_out.0",
                                            "feed_forward.w1", "feed_forward.w2", "feed_forward.w3", "adaLN_modulation.0"};

static zl_linear *bb_lin(bench_block *bb, int i) {
    zl_linear *ls[NLIN] = {&bb->b.q, &bb->b.k, &bb->b.v, &bb->b.o, &bb->b.w1, &bb->b.w2, &bb->b.w3, &bb->b.ada};
    return ls[i];
}

static void bb_init(bench_block *bb, int T, zl_dtype dt, int dim, int ffn, int rank) {
    memset(bb, 0, sizeof *bb);
    zl_zimage_config *c = &bb->c;
    zl_zimage_default_config(c);
    if (dim > 0) { c->dim = dim; c->n_heads = dim / c->head_dim; }
    if (ffn > 0) c->ffn = ffn;
    bb->dt = dt; bb->T = T; bb->rank = rank;
    zl_rng r = {1234};
    bb->b.modulated = 1;
    int outs[NLIN] = {c->dim, c->dim, c->dim, c->dim, c->ffn, c->dim, c->ffn, 4 * c->dim};
    int ins[NLIN] = {c->dim, c->dim, c->dim, c->dim, c->dim, c->ffn, c->dim, c->adaln};
    for (int i = 0; i < NLIN; i++) {
        zl_linear *l = bb_lin(bb, i);
        l->dtype = dt; l->out = outs[i]; l->in = ins[i];
        l->w = rand_weight(&r, outs[i], ins[i], dt);
    }
    bb->ada_b = zl_xcalloc((size_t)4 * c->dim, sizeof(float));
    bb->b.ada.bias = bb->ada_b;
    bb->b.norm_q = ones(c->head_dim, &r); bb->b.norm_k = ones(c->head_dim, &r);
    bb->b.attn_norm1 = ones(c->dim, &r); bb->b.attn_norm2 = ones(c->dim, &r);
    bb->b.ffn_norm1 = ones(c->dim, &r); bb->b.ffn_norm2 = ones(c->dim, &r);
    bb->x0 = zl_xmalloc(sizeof(float) * (size_t)T * c->dim);
    for (size_t i = 0; i < (size_t)T * c->dim; i++) bb->x0[i] = zl_rng_normal(&r);
    bb->cond = ones(c->adaln, &r);
    int32_t *ids = zl_xcalloc((size_t)3 * T, sizeof(int32_t));
    int side = 1;
    while (side * side < T) side++;
    for (int i = 0; i < T; i++) { ids[3 * i] = 33; ids[3 * i + 1] = i / side; ids[3 * i + 2] = i % side; }
    bb->cs = zl_xmalloc(sizeof(float) * (size_t)T * c->head_dim);
    zl_rope_table_3axis(bb->cs, ids, T, c->axes_dims, c->rope_theta);
    free(ids);
    /* LoRA (alpha = rank: scale 1): down ~ U(±1/sqrt(in)), up ~ U(±0.1/sqrt(rank)): both nonzero, so both
     * factors get gradients (a fresh LoRA starts with up = 0; the cost is the same) */
    for (int i = 0; rank > 0 && i < NLORA; i++) {
        zl_linear *l = bb_lin(bb, i);
        zl_branch *br = &bb->br[i];
        float *dn = zl_xmalloc(sizeof(float) * (size_t)rank * l->in), *up = zl_xmalloc(sizeof(float) * (size_t)l->out * rank);
        float sd = 1.0f / sqrtf((float)l->in), su = 0.1f / sqrtf((float)rank);
        for (size_t k = 0; k < (size_t)rank * l->in; k++) dn[k] = sd * (2 * zl_rng_uniform(&r) - 1);
        for (size_t k = 0; k < (size_t)l->out * rank; k++) up[k] = su * (2 * zl_rng_uniform(&r) - 1);
        br->down = dn; br->up = up; br->r = rank; br->scale = 1.0f;
        br->d_down = zl_xcalloc((size_t)rank * l->in, sizeof(float));
        br->d_up = zl_xcalloc((size_t)l->out * rank, sizeof(float));
        l->branch = br; l->nbranch = 1;
    }
}

static void bb_zero_grads(bench_block *bb) {
    for (int i = 0; bb->rank > 0 && i < NLORA; i++) {
        zl_linear *l = bb_lin(bb, i);
        memset(bb->br[i].d_down, 0, sizeof(float) * (size_t)bb->rank * l->in);
        memset(bb->br[i].d_up, 0, sizeof(float) * (size_t)l->out * bb->rank);
    }
}

static void bb_free(bench_block *bb) {
    for (int i = 0; i < NLIN; i++) free((void *)bb_lin(bb, i)->w);
    for (int i = 0; bb->rank > 0 && i < NLORA; i++) {
        free((void *)bb->br[i].down); free((void *)bb->br[i].up); free(bb->br[i].d_down); free(bb->br[i].d_up);
    }
    zl_zblock *b = &bb->b;
    free(bb->ada_b); free(b->norm_q); free(b->norm_k); free(b->attn_norm1); free(b->attn_norm2); free(b->ffn_norm1);
    free(b->ffn_norm2); free(bb->x0); free(bb->cond); free(bb->cs);
}

/* FLOPs of the block's forward: the linears and attention's two T×T products (as the PyTorch scripts). */
static double fwd_flops(const zl_zimage_config *c, int T) {
    double d = c->dim, f = c->ffn, n = T;
    return 2 * n * (4 * d * d + 3 * d * f) + 4 * n * n * d;
}

typedef struct {
    int T, iters, json, threads, exact, backward, rank, dim, ffn;
    float dropout;
    zl_dtype dt;
    const char *dump;
} bench_args;

static int bench_forward(const bench_args *a) {
    bench_block bb;
    bb_init(&bb, a->T, a->dt, a->dim, a->ffn, 0);
    const zl_zimage_config *c = &bb.c;
    int T = a->T, iters = a->iters;
    float *x = zl_xmalloc(sizeof(float) * (size_t)T * c->dim);
    double *times = zl_xmalloc(sizeof(double) * (size_t)(iters + 1));
    zl_zblock_ws *ws = zl_zblock_ws_new(c, T); /* scratch reused, as the model forward does */
    int rc = ws ? 0 : -1;
    for (int it = 0; it <= iters && rc == 0; it++) { /* the first run warms up */
        memcpy(x, bb.x0, sizeof(float) * (size_t)T * c->dim);
        double t0 = zl_now();
        rc = zl_zblock_forward(c, &bb.b, x, T, bb.cs, bb.cond, ws);
        times[it] = zl_now() - t0;
    }
    zl_zblock_ws_free(ws);
    if (rc == 0) {
        double med = median(times + 1, iters), flops = fwd_flops(c, T), rss_mb = peak_rss_mb();
        int bg = zl_ops_bf16_gemm();
        if (a->json)
            printf("{\"bench\":\"dit-block\",\"tokens\":%d,\"dtype\":\"%s\",\"gemm\":\"%s\",\"seconds\":%.4f,\"gflops\":%.1f,\"peak_rss_mb\":%.0f,\"iters\":%d}\n",
                   T, a->dt == ZL_F32 ? "f32" : "bf16", bg ? "bf16" : "f32", med, flops / med * 1e-9, rss_mb, iters);
        else
            printf("dit-block forward, %d tokens, %s weights, %s gemm: %.3f s (median of %d), %.1f GFLOP/s, peak RSS %.0f MB\n", T,
                   a->dt == ZL_F32 ? "f32" : "bf16", bg ? "bf16" : "f32", med, iters, flops / med * 1e-9, rss_mb);
    }
    free(x); free(times);
    bb_free(&bb);
    return rc ? zl_cli_fail() : 0;
}

/* --dump: one forward_save + backward_saved from zeroed gradients, written with everything that went in
 * (weights as stored, LoRA factors, norms, x0, cond, the RoPE table, g) for bench/train_block_torch.py
 * --check. Names: <module>.weight / .bias / .lora_down / .lora_up, grad.<module>.lora_down / .lora_up,
 * <norm>.weight, x, cond, cs, g, y, dx, dcond. */
static int dump_block(bench_block *bb, const char *path) {
    const zl_zimage_config *c = &bb->c;
    int T = bb->T, d = c->dim;
    size_t nd = (size_t)T * d;
    zl_zblock_bws *ws = zl_zblock_bws_new(c, T);
    if (!ws) return -1;
    float *y = zl_xmalloc(sizeof(float) * nd), *g = zl_xmalloc(sizeof(float) * nd), *dx = zl_xmalloc(sizeof(float) * nd);
    float *dcond = zl_xcalloc((size_t)c->adaln, sizeof(float));
    zl_rng r = {99};
    for (size_t i = 0; i < nd; i++) g[i] = zl_rng_normal(&r);
    memcpy(dx, g, sizeof(float) * nd);
    bb_zero_grads(bb);
    int rc = zl_zblock_forward_save(c, &bb->b, bb->x0, y, T, bb->cs, bb->cond, ws);
    if (!rc) rc = zl_zblock_backward_saved(c, &bb->b, bb->x0, dx, T, bb->cs, bb->cond, dcond, ws);
    zl_zblock_bws_free(ws);
    zl_st_writer *w = zl_stw_new();
    char nm[160];
    for (int i = 0; i < NLIN && !rc; i++) {
        zl_linear *l = bb_lin(bb, i);
        int64_t sh[2] = {l->out, l->in};
        snprintf(nm, sizeof nm, "%s.weight", lin_names[i]);
        rc |= zl_stw_add(w, nm, l->dtype, 2, sh, l->w);
        if (l->bias) {
            snprintf(nm, sizeof nm, "%s.bias", lin_names[i]);
            rc |= zl_stw_add_f32(w, nm, 1, sh, l->bias, ZL_F32);
        }
        if (i >= NLORA || bb->rank <= 0) continue;
        const zl_branch *br = &bb->br[i];
        int64_t sd[2] = {bb->rank, l->in}, su[2] = {l->out, bb->rank};
        snprintf(nm, sizeof nm, "%s.lora_down", lin_names[i]); rc |= zl_stw_add_f32(w, nm, 2, sd, br->down, ZL_F32);
        snprintf(nm, sizeof nm, "%s.lora_up", lin_names[i]); rc |= zl_stw_add_f32(w, nm, 2, su, br->up, ZL_F32);
        snprintf(nm, sizeof nm, "grad.%s.lora_down", lin_names[i]); rc |= zl_stw_add_f32(w, nm, 2, sd, br->d_down, ZL_F32);
        snprintf(nm, sizeof nm, "grad.%s.lora_up", lin_names[i]); rc |= zl_stw_add_f32(w, nm, 2, su, br->d_up, ZL_F32);
    }
    const char *norms[6] = {"attention.norm_q", "attention.norm_k", "attention_norm1", "attention_norm2", "ffn_norm1", "ffn_norm2"};
    const float *nv[6] = {bb->b.norm_q, bb->b.norm_k, bb->b.attn_norm1, bb->b.attn_norm2, bb->b.ffn_norm1, bb->b.ffn_norm2};
    for (int i = 0; i < 6 && !rc; i++) {
        int64_t sh[1] = {i < 2 ? c->head_dim : d};
        snprintf(nm, sizeof nm, "%s.weight", norms[i]);
        rc |= zl_stw_add_f32(w, nm, 1, sh, nv[i], ZL_F32);
    }
    int64_t sx[2] = {T, d}, sc[1] = {c->adaln}, scs[3] = {T, c->head_dim / 2, 2};
    if (!rc) {
        rc |= zl_stw_add_f32(w, "x", 2, sx, bb->x0, ZL_F32);
        rc |= zl_stw_add_f32(w, "g", 2, sx, g, ZL_F32);
        rc |= zl_stw_add_f32(w, "y", 2, sx, y, ZL_F32);
        rc |= zl_stw_add_f32(w, "dx", 2, sx, dx, ZL_F32);
        rc |= zl_stw_add_f32(w, "cond", 1, sc, bb->cond, ZL_F32);
        rc |= zl_stw_add_f32(w, "dcond", 1, sc, dcond, ZL_F32);
        rc |= zl_stw_add_f32(w, "cs", 3, scs, bb->cs, ZL_F32);
        char v[64];
        snprintf(v, sizeof v, "%d", c->n_heads); zl_stw_meta(w, "n_heads", v);
        snprintf(v, sizeof v, "%d", c->head_dim); zl_stw_meta(w, "head_dim", v);
        snprintf(v, sizeof v, "%g", (double)c->norm_eps); zl_stw_meta(w, "norm_eps", v);
        zl_stw_meta(w, "gemm", zl_ops_bf16_gemm() ? "bf16" : "f32");
        rc = zl_stw_write(w, path);
    }
    zl_stw_free(w);
    free(y); free(g); free(dx); free(dcond);
    return rc ? -1 : 0;
}

/* A block's training step: forward (zl_zblock_forward_save into the backward's workspace with the output
 * formed, as zl_zimage_forward_backward runs each block it will visit), then zl_zblock_backward (recompute + backprop) from the gradient g of
 * loss = sum(out·g); the backward's halves are timed again separately (zl_zblock_forward_save then
 * zl_zblock_backward_saved). Useful FLOPs of a step (frozen weights: no weight gradient): forward + the
 * input gradients of the linears (the same count) + attention's backward (four T×T products, twice the
 * forward's); the recomputation is not counted as useful work. */
static int bench_backward(const bench_args *a) {
    bench_block bb;
    bb_init(&bb, a->T, a->dt, a->dim, a->ffn, a->rank);
    for (int i = 0; i < NLORA && a->rank > 0; i++) { bb.br[i].dropout = a->dropout; bb.br[i].drop_key = 1000 + (uint64_t)i; }
    const zl_zimage_config *c = &bb.c;
    int T = a->T, iters = a->iters, rc = 0;
    if (a->dump) {
        rc = dump_block(&bb, a->dump);
        if (!rc) zl_info("wrote %s", a->dump);
        bb_free(&bb);
        return rc ? zl_cli_fail() : 0;
    }
    size_t nd = (size_t)T * c->dim;
    float *x = zl_xmalloc(sizeof(float) * nd), *g = zl_xmalloc(sizeof(float) * nd), *dx = zl_xmalloc(sizeof(float) * nd);
    float *dcond = zl_xcalloc((size_t)c->adaln, sizeof(float));
    zl_rng r = {99};
    for (size_t i = 0; i < nd; i++) g[i] = zl_rng_normal(&r);
    double *tf = zl_xmalloc(sizeof(double) * 4 * (size_t)(iters + 1)), *tb = tf + iters + 1, *ts = tb + iters + 1,
           *tp = ts + iters + 1;
    zl_zblock_bws *bws = zl_zblock_bws_new(c, T); /* reused across calls, as the trainer does */
    if (!bws) rc = -1;
    for (int it = 0; it <= iters && rc == 0; it++) { /* the first run warms up */
        bb_zero_grads(&bb);
        double t0 = zl_now(); /* the trainer's forward of a block: the same call, output formed */
        rc = zl_zblock_forward_save(c, &bb.b, bb.x0, x, T, bb.cs, bb.cond, bws);
        tf[it] = zl_now() - t0;
        memcpy(dx, g, sizeof(float) * nd);
        t0 = zl_now();
        if (!rc) rc = zl_zblock_backward(c, &bb.b, bb.x0, dx, T, bb.cs, bb.cond, dcond, bws);
        tb[it] = zl_now() - t0;
        memcpy(dx, g, sizeof(float) * nd);
        t0 = zl_now();
        if (!rc) rc = zl_zblock_forward_save(c, &bb.b, bb.x0, NULL, T, bb.cs, bb.cond, bws);
        ts[it] = zl_now() - t0;
        t0 = zl_now();
        if (!rc) rc = zl_zblock_backward_saved(c, &bb.b, bb.x0, dx, T, bb.cs, bb.cond, dcond, bws);
        tp[it] = zl_now() - t0;
        if (!a->json) zl_info("iteration %d: forward %.3f s, backward %.3f s (recompute %.3f s + backprop %.3f s)", it, tf[it],
                              tb[it], ts[it], tp[it]);
    }
    zl_zblock_bws_free(bws);
    if (rc == 0) {
        double step[64], nr[64];
        int m = iters < 64 ? iters : 64;
        for (int i = 0; i < m; i++) { step[i] = tf[1 + i] + tb[1 + i]; nr[i] = ts[1 + i] + tp[1 + i]; }
        double mstep = median(step, m), mnr = median(nr, m);
        double mf = median(tf + 1, iters), mb = median(tb + 1, iters), ms = median(ts + 1, iters), mp = median(tp + 1, iters);
        double d = c->dim, n = T, lin = 2 * n * (4 * d * d + 3 * d * c->ffn);
        double flops = fwd_flops(c, T) + lin + 8 * n * n * d, rss_mb = peak_rss_mb();
        const char *dts = a->dt == ZL_F32 ? "f32" : "bf16", *gm = zl_ops_bf16_gemm() ? "bf16" : "f32";
        if (a->json)
            printf("{\"bench\":\"dit-block-train\",\"tokens\":%d,\"dtype\":\"%s\",\"gemm\":\"%s\",\"rank\":%d,\"seconds\":%.4f,"
                   "\"gflops\":%.1f,\"forward_s\":%.4f,\"backward_s\":%.4f,\"recompute_s\":%.4f,\"backprop_s\":%.4f,"
                   "\"no_recompute_s\":%.4f,\"peak_rss_mb\":%.0f,\"iters\":%d,\"lora_dropout\":%g}\n",
                   T, dts, gm, a->rank, mstep, flops / mstep * 1e-9, mf, mb, ms, mp, mnr, rss_mb, iters, (double)a->dropout);
        else
            printf("dit-block training step, %d tokens, %s weights, %s gemm, LoRA rank %d on q,k,v,out,w1,w2,w3 (median of %d):\n"
                   "  forward %.3f s + backward %.3f s (recompute %.3f s + backprop %.3f s) = step %.3f s, %.1f GFLOP/s useful\n"
                   "  without the recomputation (activations kept, as autograd): %.3f s\n"
                   "  peak RSS %.0f MB\n",
                   T, dts, gm, a->rank, iters, mf, mb, ms, mp, mstep, flops / mstep * 1e-9, mnr, rss_mb);
    }
    free(x); free(g); free(dx); free(dcond); free(tf);
    bb_free(&bb);
    return rc ? zl_cli_fail() : 0;
}

static int bench_dit_block(int argc, char **argv) {
    bench_args a = {.T = 1024, .iters = 3, .rank = 16, .dt = ZL_BF16};
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--tokens") && i + 1 < argc) a.T = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--iters") && i + 1 < argc) a.iters = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--threads") && i + 1 < argc) a.threads = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--rank") && i + 1 < argc) a.rank = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--dim") && i + 1 < argc) a.dim = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--ffn") && i + 1 < argc) a.ffn = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--dump") && i + 1 < argc) a.dump = argv[++i];
        else if (!strcmp(argv[i], "--lora-dropout") && i + 1 < argc) a.dropout = (float)atof(argv[++i]);
        else if (!strcmp(argv[i], "--json")) a.json = 1;
        else if (!strcmp(argv[i], "--exact")) a.exact = 1;
        else if (!strcmp(argv[i], "--backward")) a.backward = 1;
        else if (!strcmp(argv[i], "--dtype") && i + 1 < argc) {
            const char *v = argv[++i];
            if (!strcmp(v, "f32") || !strcmp(v, "fp32")) a.dt = ZL_F32;
            else if (!strcmp(v, "bf16")) a.dt = ZL_BF16;
            else return zl_err("--dtype must be f32 or bf16"), zl_cli_fail();
        } else return zl_err("bench dit-block: unexpected argument '%s'", argv[i]), zl_cli_fail();
    }
    if (a.T < 1 || a.iters < 1) return zl_err("--tokens and --iters must be positive"), zl_cli_fail();
    if (a.iters > 64) return zl_err("--iters: at most 64"), zl_cli_fail();
    if (a.dim < 0 || a.dim % 128 || a.ffn < 0) return zl_err("--dim must be a multiple of 128 (heads of 128)"), zl_cli_fail();
    if (a.rank < 0) return zl_err("--rank must be >= 0"), zl_cli_fail();
    if (a.dump && !a.backward) return zl_err("--dump goes with --backward"), zl_cli_fail();
    if (!(a.dropout >= 0 && a.dropout < 1)) return zl_err("--lora-dropout must be in [0, 1)"), zl_cli_fail();
    if (a.threads > 0) zl_ops_set_threads(a.threads);
    int old_gemm = zl_ops_bf16_gemm();
    zl_ops_set_bf16_gemm(a.dt == ZL_BF16 && !a.exact);
    int rc = a.backward ? bench_backward(&a) : bench_forward(&a);
    zl_ops_set_bf16_gemm(old_gemm);
    return rc;
}

int zl_cmd_bench(int argc, char **argv) {
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
        printf("usage: zlora bench <what> ...\n"
               "  dit-block --tokens T --dtype f32|bf16 [--exact] [--iters N] [--threads N] [--json]\n"
               "      one full-size Z-Image block with random weights: seconds per forward (median), GFLOP/s, peak RSS;\n"
               "      bf16 weights run bf16 compute (x rounded to bf16, fp32 accumulation) unless --exact\n"
               "  dit-block --backward [--rank R] ... [--dim D --ffn F] [--dump FILE]\n"
               "      the same block's training step: forward + zl_zblock_backward (recompute + backprop) with rank-R\n"
               "      LoRA branches (default 16) on q,k,v,out,w1,w2,w3, gradients through the frozen weights;\n"
               "      --dump: one step at this size written for bench/train_block_torch.py --check (no timing);\n"
               "      --lora-dropout P: the branches' inputs masked as zlora train --lora-dropout does\n");
        return argc < 2 ? 2 : 0;
    }
    if (!strcmp(argv[1], "dit-block")) return bench_dit_block(argc - 1, argv + 1);
    fprintf(stderr, "error: unknown benchmark '%s'\n", argv[1]);
    return 2;
}
