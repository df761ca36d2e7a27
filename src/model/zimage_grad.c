/* zimage_grad.c — training for the Z-Image transformer: the backward of a block by recomputation and one
 * sample's forward + backward with the flow-matching loss (see zimage.h, "training").
 * Model code: data movement and calls into nn/ops.h only.
 *
 * Memory plan. The forward keeps only the input of each block the backward will visit. The backward
 * walks the blocks in reverse; for each it re-runs the block's forward from that input into a workspace
 * (zl_zblock_bws) that holds what the block's backward needs:
 *   saved by the recomputation   q0, k0 (pre-norm q, k), v, o, p (attention out-projection), x1 (the
 *                                residual after attention), f (FFN output) [n, dim]; lse [heads, n];
 *                                q2, k2 (normed, rotated) in t2, t3; h1, h3 (w1, w3 outputs) and hm
 *                                (silu(h1)·h3) [n, ffn]
 *   recomputed on the way back   a0 = rmsnorm(x), a1 = a0·(1+scale) (attention input), b0, b1 (FFN input),
 *                                p1 = rmsnorm(p), f1 = rmsnorm(f): cheap row operations, not stored
 *   temporaries                  t1, g1 [n, dim]; the gradients of q, k, v reuse buffers freed by then
 * so 11·n·dim + 3·n·ffn floats, whatever the depth of the model. The last main layer is not recomputed:
 * the forward leaves its activations in the workspace.
 */
#include "zimage.h"
#include "zimage_internal.h"
#include "../base/base.h"

#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------------ workspace */

struct zl_zblock_bws {
    int n;
    float *q0, *k0, *v, *o, *p, *x1, *f, *t1, *t2, *t3, *g1; /* [n, dim] */
    float *h1, *h3, *hm;                                      /* [n, ffn] */
    float *lse;                                               /* [heads, n] */
    float *mod, *dmod;                                        /* [4·dim] */
};

void zl_zblock_bws_free(zl_zblock_bws *w) {
    if (!w) return;
    float *bufs[] = {w->q0, w->k0, w->v, w->o, w->p, w->x1, w->f, w->t1, w->t2, w->t3, w->g1,
                     w->h1, w->h3, w->hm, w->lse, w->mod, w->dmod};
    for (size_t i = 0; i < sizeof bufs / sizeof *bufs; i++) free(bufs[i]);
    free(w);
}

zl_zblock_bws *zl_zblock_bws_new(const zl_zimage_config *c, int n) {
    zl_zblock_bws *w = zl_xcalloc(1, sizeof *w);
    size_t dn = (size_t)n * c->dim, fn = (size_t)n * c->ffn;
    w->n = n;
    float **nd[] = {&w->q0, &w->k0, &w->v, &w->o, &w->p, &w->x1, &w->f, &w->t1, &w->t2, &w->t3, &w->g1};
    int ok = 1;
    for (size_t i = 0; i < sizeof nd / sizeof *nd; i++) ok &= (*nd[i] = zl_try_malloc(sizeof(float) * dn)) != NULL;
    ok &= (w->h1 = zl_try_malloc(sizeof(float) * fn)) != NULL;
    ok &= (w->h3 = zl_try_malloc(sizeof(float) * fn)) != NULL;
    ok &= (w->hm = zl_try_malloc(sizeof(float) * fn)) != NULL;
    ok &= (w->lse = zl_try_malloc(sizeof(float) * (size_t)n * c->n_heads)) != NULL;
    ok &= (w->mod = zl_try_malloc(sizeof(float) * 4 * (size_t)c->dim)) != NULL;
    ok &= (w->dmod = zl_try_malloc(sizeof(float) * 4 * (size_t)c->dim)) != NULL;
    if (ok) return w;
    zl_zblock_bws_free(w);
    zl_err("out of memory for the backward workspace of %d tokens", n);
    return NULL;
}

/* ------------------------------------------------------------------ what is trainable */

static int lin_trainable(const zl_linear *l) {
    if (l->dw || l->db) return 1;
    for (int i = 0; i < l->nbranch; i++)
        if (l->branch[i].d_down || l->branch[i].d_up) return 1;
    return 0;
}

static int block_trainable(const zl_zblock *b) {
    const zl_zblock_grads *g = &b->grad;
    if (g->norm_q || g->norm_k || g->attn_norm1 || g->attn_norm2 || g->ffn_norm1 || g->ffn_norm2) return 1;
    const zl_linear *ls[] = {&b->q, &b->k, &b->v, &b->o, &b->w1, &b->w2, &b->w3};
    for (size_t i = 0; i < sizeof ls / sizeof *ls; i++)
        if (lin_trainable(ls[i])) return 1;
    return b->modulated && lin_trainable(&b->ada);
}

/* ------------------------------------------------------------------ one block */

/* The block's forward from x [n, dim], keeping what the backward needs in w (see the top). The output
 * itself is not formed (block_output does that). cond NULL: unmodulated. */
static void block_recompute(const zl_zimage_config *cf, const zl_zblock *b, const float *x, int n, const float *cs,
                            const float *cond, zl_zblock_bws *w) {
    int d = cf->dim, H = cf->n_heads, hd = cf->head_dim;
    const float *scale_msa = NULL, *gate_msa = NULL, *scale_mlp = NULL;
    if (cond) {
        zl_op_linear(w->mod, cond, &b->ada, 1);
        scale_msa = w->mod; gate_msa = w->mod + d; scale_mlp = w->mod + 2 * d;
    }
    /* attention: a1 in t1, q2 in t2, k2 in t3 */
    zl_op_rmsnorm(w->t1, x, b->attn_norm1, n, d, cf->norm_eps);
    if (scale_msa) zl_op_modulate(w->t1, w->t1, scale_msa, n, d);
    zl_op_linear(w->q0, w->t1, &b->q, n);
    zl_op_linear(w->k0, w->t1, &b->k, n);
    zl_op_linear(w->v, w->t1, &b->v, n);
    zl_op_rmsnorm(w->t2, w->q0, b->norm_q, n * H, hd, cf->norm_eps);
    zl_op_rmsnorm(w->t3, w->k0, b->norm_k, n * H, hd, cf->norm_eps);
    zl_op_rope(w->t2, cs, n, H, hd, 1);
    zl_op_rope(w->t3, cs, n, H, hd, 1);
    zl_op_attention(w->o, w->t2, w->t3, w->v, n, n, H, H, hd, 0, w->lse);
    zl_op_linear(w->p, w->o, &b->o, n);
    /* x1 = x + tanh(gate)·rmsnorm(p) */
    zl_op_rmsnorm(w->t1, w->p, b->attn_norm2, n, d, cf->norm_eps);
    memcpy(w->x1, x, sizeof(float) * (size_t)n * d);
    zl_op_gated_residual(w->x1, w->t1, gate_msa, n, d);
    /* FFN: b1 in t1 */
    zl_op_rmsnorm(w->t1, w->x1, b->ffn_norm1, n, d, cf->norm_eps);
    if (scale_mlp) zl_op_modulate(w->t1, w->t1, scale_mlp, n, d);
    zl_op_linear(w->h1, w->t1, &b->w1, n);
    zl_op_linear(w->h3, w->t1, &b->w3, n);
    zl_op_silu_mul(w->hm, w->h1, w->h3, (size_t)n * cf->ffn);
    zl_op_linear(w->f, w->hm, &b->w2, n);
}

/* y [n, dim] = x1 + tanh(gate_mlp)·rmsnorm(f): the block's output after block_recompute (uses t1). */
static void block_output(const zl_zimage_config *cf, const zl_zblock *b, int n, int modulated, zl_zblock_bws *w, float *y) {
    int d = cf->dim;
    zl_op_rmsnorm(w->t1, w->f, b->ffn_norm2, n, d, cf->norm_eps);
    memcpy(y, w->x1, sizeof(float) * (size_t)n * d);
    zl_op_gated_residual(y, w->t1, modulated ? w->mod + 3 * d : NULL, n, d);
}

/* The backward after block_recompute: dx in: d(output), out: d(input). */
static void block_backprop(const zl_zimage_config *cf, const zl_zblock *b, const float *x, float *dx, int n,
                           const float *cs, const float *cond, float *dcond, zl_zblock_bws *w) {
    int d = cf->dim, H = cf->n_heads, hd = cf->head_dim, mod = cond != NULL;
    float *dm = w->dmod; /* d(scale_msa), d(gate_msa), d(scale_mlp), d(gate_mlp) */
    const float *scale_msa = mod ? w->mod : NULL, *gate_msa = mod ? w->mod + d : NULL;
    const float *scale_mlp = mod ? w->mod + 2 * d : NULL, *gate_mlp = mod ? w->mod + 3 * d : NULL;
    const zl_zblock_grads *g = &b->grad;
    if (mod) memset(dm, 0, sizeof(float) * 4 * (size_t)d);

    /* ---- FFN branch: y = x1 + tanh(gate_mlp)·rmsnorm(f) */
    zl_op_rmsnorm(w->t1, w->f, b->ffn_norm2, n, d, cf->norm_eps);                    /* f1 */
    zl_op_gated_residual_backward(w->t1, mod ? dm + 3 * d : NULL, dx, w->t1, gate_mlp, n, d); /* d f1 */
    zl_op_rmsnorm_backward(w->t1, g->ffn_norm2, w->t1, w->f, b->ffn_norm2, n, d, cf->norm_eps); /* d f */
    zl_op_linear_backward(w->hm, w->t1, w->hm, &b->w2, n, 0);                           /* d hm (over hm) */
    zl_op_silu_mul_backward(w->h1, w->h3, w->hm, w->h1, w->h3, (size_t)n * cf->ffn);   /* d h1, d h3 */
    /* the FFN input again: b0 = rmsnorm(x1) in f (free now), b1 = b0·(1+scale_mlp) in t1 */
    zl_op_rmsnorm(w->f, w->x1, b->ffn_norm1, n, d, cf->norm_eps);
    const float *b1 = w->f;
    if (mod) {
        zl_op_modulate(w->t1, w->f, scale_mlp, n, d);
        b1 = w->t1;
    }
    zl_op_linear_backward(w->g1, w->h1, b1, &b->w1, n, 0);                              /* d b1 */
    zl_op_linear_backward(w->g1, w->h3, b1, &b->w3, n, 1);
    if (mod) zl_op_modulate_backward(w->g1, dm + 2 * d, w->g1, w->f, scale_mlp, n, d); /* d b0 */
    zl_op_rmsnorm_backward(w->g1, g->ffn_norm1, w->g1, w->x1, b->ffn_norm1, n, d, cf->norm_eps);
    zl_op_add(w->g1, w->g1, dx, (size_t)n * d);                                         /* d x1 */

    /* ---- attention branch: x1 = x + tanh(gate_msa)·rmsnorm(p) */
    zl_op_rmsnorm(w->t1, w->p, b->attn_norm2, n, d, cf->norm_eps);                   /* p1 */
    zl_op_gated_residual_backward(w->t1, mod ? dm + d : NULL, w->g1, w->t1, gate_msa, n, d); /* d p1 */
    zl_op_rmsnorm_backward(w->t1, g->attn_norm2, w->t1, w->p, b->attn_norm2, n, d, cf->norm_eps); /* d p */
    zl_op_linear_backward(w->p, w->t1, w->o, &b->o, n, 0);                              /* d o (in p) */
    /* d q2 -> t1, d k2 -> f, d v -> x1 (all free now) */
    zl_op_attention_backward(w->t1, w->f, w->x1, w->p, w->t2, w->t3, w->v, w->o, w->lse, n, n, H, H, hd, 0);
    zl_op_rope_backward(w->t1, cs, n, H, hd, 1);
    zl_op_rope_backward(w->f, cs, n, H, hd, 1);
    zl_op_rmsnorm_backward(w->t1, g->norm_q, w->t1, w->q0, b->norm_q, n * H, hd, cf->norm_eps); /* d q0 */
    zl_op_rmsnorm_backward(w->f, g->norm_k, w->f, w->k0, b->norm_k, n * H, hd, cf->norm_eps);   /* d k0 */
    /* the attention input again: a0 = rmsnorm(x) in q0, a1 = a0·(1+scale_msa) in k0 */
    zl_op_rmsnorm(w->q0, x, b->attn_norm1, n, d, cf->norm_eps);
    const float *a1 = w->q0;
    if (mod) {
        zl_op_modulate(w->k0, w->q0, scale_msa, n, d);
        a1 = w->k0;
    }
    zl_op_linear_backward(w->v, w->t1, a1, &b->q, n, 0);                                /* d a1 (in v) */
    zl_op_linear_backward(w->v, w->f, a1, &b->k, n, 1);
    zl_op_linear_backward(w->v, w->x1, a1, &b->v, n, 1);
    if (mod) zl_op_modulate_backward(w->v, dm, w->v, w->q0, scale_msa, n, d);         /* d a0 */
    zl_op_rmsnorm_backward(w->v, g->attn_norm1, w->v, x, b->attn_norm1, n, d, cf->norm_eps);
    zl_op_add(dx, w->g1, w->v, (size_t)n * d);                                          /* d x */

    /* ---- modulation: mod = ada(cond) */
    if (mod) zl_op_linear_backward(dcond, dm, cond, &b->ada, 1, 1);
}

int zl_zblock_backward(const zl_zimage_config *c, const zl_zblock *b, const float *x, float *dx, int n,
                       const float *cs, const float *cond, float *dcond, zl_zblock_bws *ws) {
    if (n <= 0) return 0;
    zl_zblock_bws *w = ws && ws->n >= n ? ws : zl_zblock_bws_new(c, n);
    if (!w) return -1;
    const float *cd = b->modulated ? cond : NULL;
    block_recompute(c, b, x, n, cs, cd, w);
    block_backprop(c, b, x, dx, n, cs, cd, dcond, w);
    if (w != ws) zl_zblock_bws_free(w);
    return 0;
}

int zl_zblock_forward_save(const zl_zimage_config *c, const zl_zblock *b, const float *x, float *y, int n,
                           const float *cs, const float *cond, zl_zblock_bws *ws) {
    if (n <= 0) return 0;
    if (!ws || ws->n < n) return zl_err("zl_zblock_forward_save: no workspace for %d tokens", n);
    block_recompute(c, b, x, n, cs, b->modulated ? cond : NULL, ws);
    if (y) block_output(c, b, n, b->modulated, ws, y);
    return 0;
}

int zl_zblock_backward_saved(const zl_zimage_config *c, const zl_zblock *b, const float *x, float *dx, int n,
                             const float *cs, const float *cond, float *dcond, zl_zblock_bws *ws) {
    if (n <= 0) return 0;
    if (!ws || ws->n < n) return zl_err("zl_zblock_backward_saved: no workspace for %d tokens", n);
    block_backprop(c, b, x, dx, n, cs, b->modulated ? cond : NULL, dcond, ws);
    return 0;
}

/* ------------------------------------------------------------------ the whole model */

int zl_zimage_forward_backward(zl_zimage *m, const float *x, int H, int W, float t, const float *cap, int L,
                               const float *target, float gscale, float *loss, float *out) {
    const zl_zimage_config *c = &m->cfg;
    zl_zimage_layout g;
    if (zl_zimage_layout_(c, H, W, L, &g)) return -1;
    int p = c->patch, d = c->dim, Ni = g.Ni, Np = g.Np, Lc = g.Lc, N = g.N, R = c->n_refiner, NL = c->n_layers;
    size_t nout = (size_t)c->in_channels * H * W;

    /* which blocks the backward visits: those with something trainable at or before them */
    int need_dcond = lin_trainable(&m->t_mlp0) || lin_trainable(&m->t_mlp2);
    int *run_nr = zl_xcalloc((size_t)R + 1, sizeof(int)), *run_cr = zl_xcalloc((size_t)R + 1, sizeof(int));
    int *run_l = zl_xcalloc((size_t)NL, sizeof(int));
    int up_img = need_dcond || lin_trainable(&m->x_emb), up_cap = lin_trainable(&m->cap_emb);
    for (int i = 0; i < R; i++) {
        up_img |= block_trainable(&m->noise_ref[i]);
        up_cap |= block_trainable(&m->ctx_ref[i]);
        run_nr[i] = up_img;
        run_cr[i] = up_cap;
    }
    int up = up_img || up_cap;
    for (int i = 0; i < NL; i++) {
        up |= block_trainable(&m->layers[i]);
        run_l[i] = up;
    }
    int any_l = NL > 0 && run_l[NL - 1];               /* the gradient must enter the main layers */
    int fin_ada = need_dcond || lin_trainable(&m->final_ada); /* the final modulation's gradient is needed */

    /* buffers */
    size_t nsave = 0;
    for (int i = 0; i < R; i++) nsave += (size_t)(run_nr[i] ? Np : 0) + (size_t)(run_cr[i] ? Lc : 0);
    for (int i = 0; i < NL; i++) nsave += run_l[i] ? (size_t)N : 0;
    float *u = zl_try_malloc(sizeof(float) * (size_t)N * d), *du = zl_try_calloc((size_t)N * d, sizeof(float));
    float *ptok = zl_try_malloc(sizeof(float) * (size_t)Np * c->patch_dim);
    float *tok = zl_try_malloc(sizeof(float) * (size_t)Np * c->patch_dim);
    float *capn = zl_try_malloc(sizeof(float) * (size_t)L * c->cap_feat_dim);
    float *cs = zl_try_malloc(sizeof(float) * (size_t)N * c->head_dim);
    int32_t *ids = zl_try_malloc(sizeof(int32_t) * 3 * (size_t)N);
    float *fin_ln = zl_try_malloc(sizeof(float) * (size_t)Ni * d), *fin_lm = zl_try_malloc(sizeof(float) * (size_t)Ni * d);
    float *y = zl_try_malloc(sizeof(float) * nout), *dy = zl_try_malloc(sizeof(float) * nout);
    float *saves = nsave ? zl_try_malloc(sizeof(float) * nsave * d) : NULL;
    float *vec = zl_try_malloc(sizeof(float) * (256 + 3 * (size_t)c->t_mid + 4 * (size_t)c->adaln + 2 * (size_t)d));
    zl_zblock_bws *ws = zl_zblock_bws_new(c, N);
    int rc = 0;
    if (!u || !du || !ptok || !tok || !capn || !cs || !ids || !fin_ln || !fin_lm || !y || !dy || (nsave && !saves) ||
        !vec || !ws) {
        rc = zl_err("out of memory for a training step of %d tokens", N);
        goto out;
    }
    float *emb = vec, *hpre = emb + 256, *h = hpre + c->t_mid, *dh = h + c->t_mid, *cond = dh + c->t_mid;
    float *dcond = cond + c->adaln, *hf = dcond + c->adaln, *dhf = hf + c->adaln, *fmod = dhf + c->adaln;
    float *dfmod = fmod + d;
    float **in_nr = zl_xcalloc((size_t)R + 1, sizeof(float *)), **in_cr = zl_xcalloc((size_t)R + 1, sizeof(float *));
    float **in_l = zl_xcalloc((size_t)NL, sizeof(float *));
    {
        float *sp = saves;
        for (int i = 0; i < R; i++) {
            if (run_nr[i]) { in_nr[i] = sp; sp += (size_t)Np * d; }
            if (run_cr[i]) { in_cr[i] = sp; sp += (size_t)Lc * d; }
        }
        for (int i = 0; i < NL; i++)
            if (run_l[i]) { in_l[i] = sp; sp += (size_t)N * d; }
    }

    /* ---- forward (as zl_zimage_forward), keeping the inputs of the blocks to visit */
    zl_op_timestep_embedding(emb, t * c->t_scale, 256, 10000.0f);
    zl_op_linear(hpre, emb, &m->t_mlp0, 1);
    zl_op_silu(h, hpre, (size_t)c->t_mid);
    zl_op_linear(cond, h, &m->t_mlp2, 1);
    zl_op_patchify(ptok, x, c->in_channels, H, W, p);
    zl_op_linear(u, ptok, &m->x_emb, Ni);
    zl_op_fill_rows(u, m->x_pad, Ni, Np, d);
    zl_zimage_rope_table_(c, &g, ids, cs);
    for (int i = 0; i < R; i++) {
        if (in_nr[i]) memcpy(in_nr[i], u, sizeof(float) * (size_t)Np * d);
        block_recompute(c, &m->noise_ref[i], u, Np, cs, cond, ws);
        block_output(c, &m->noise_ref[i], Np, 1, ws, u);
    }
    float *ci = u + (size_t)Np * d;
    const float *ccs = cs + (size_t)Np * c->head_dim;
    zl_op_rmsnorm(capn, cap, m->cap_norm, L, c->cap_feat_dim, c->norm_eps);
    zl_op_linear(ci, capn, &m->cap_emb, L);
    zl_op_fill_rows(ci, m->cap_pad, L, Lc, d);
    for (int i = 0; i < R; i++) {
        if (in_cr[i]) memcpy(in_cr[i], ci, sizeof(float) * (size_t)Lc * d);
        block_recompute(c, &m->ctx_ref[i], ci, Lc, ccs, NULL, ws);
        block_output(c, &m->ctx_ref[i], Lc, 0, ws, ci);
    }
    for (int i = 0; i < NL; i++) {
        if (in_l[i]) memcpy(in_l[i], u, sizeof(float) * (size_t)N * d);
        block_recompute(c, &m->layers[i], u, N, cs, cond, ws);
        block_output(c, &m->layers[i], N, 1, ws, u);
    }
    zl_op_silu(hf, cond, (size_t)c->adaln);
    zl_op_linear(fmod, hf, &m->final_ada, 1);
    zl_op_layernorm(fin_ln, u, Ni, d, 1e-6f);
    zl_op_modulate(fin_lm, fin_ln, fmod, Ni, d);
    zl_op_linear(tok, fin_lm, &m->final_lin, Ni);
    zl_op_unpatchify(y, tok, c->in_channels, H, W, p);
    if (out) memcpy(out, y, sizeof(float) * nout);
    double l = zl_op_mse_loss(dy, y, target, nout, gscale);
    if (loss) *loss = (float)l;

    /* ---- backward */
    zl_op_unpatchify_backward(tok, dy, c->in_channels, H, W, p);                 /* d tok [Ni, patch_dim] */
    zl_op_linear_backward(any_l || fin_ada ? fin_lm : NULL, tok, fin_lm, &m->final_lin, Ni, 0); /* d lm (over lm) */
    if (any_l || fin_ada) {
        if (fin_ada) memset(dfmod, 0, sizeof(float) * (size_t)d);
        zl_op_modulate_backward(any_l ? fin_lm : NULL, fin_ada ? dfmod : NULL, fin_lm, fin_ln, fmod, Ni, d);
    }
    if (any_l) zl_op_layernorm_backward(du, fin_lm, u, Ni, d, 1e-6f);              /* rows past Ni stay 0 */
    memset(dcond, 0, sizeof(float) * (size_t)c->adaln);
    if (fin_ada) {
        zl_op_linear_backward(need_dcond ? dhf : NULL, dfmod, hf, &m->final_ada, 1, 0);
        if (need_dcond) zl_op_silu_backward(dcond, dhf, cond, (size_t)c->adaln);
    }
    for (int i = NL - 1; i >= 0; i--) {
        if (!run_l[i]) break; /* nothing trainable at or before this layer */
        /* the last layer's activations are still in ws from the forward (the final layer does not use ws) */
        if (i < NL - 1) block_recompute(c, &m->layers[i], in_l[i], N, cs, cond, ws);
        block_backprop(c, &m->layers[i], in_l[i], du, N, cs, cond, need_dcond ? dcond : NULL, ws);
    }
    float *dci = du + (size_t)Np * d;
    for (int i = R - 1; i >= 0; i--) {
        if (!run_cr[i]) break;
        block_recompute(c, &m->ctx_ref[i], in_cr[i], Lc, ccs, NULL, ws);
        block_backprop(c, &m->ctx_ref[i], in_cr[i], dci, Lc, ccs, NULL, NULL, ws);
    }
    if (lin_trainable(&m->cap_emb)) zl_op_linear_backward(NULL, dci, capn, &m->cap_emb, L, 0); /* pad rows: the pad token */
    for (int i = R - 1; i >= 0; i--) {
        if (!run_nr[i]) break;
        block_recompute(c, &m->noise_ref[i], in_nr[i], Np, cs, cond, ws);
        block_backprop(c, &m->noise_ref[i], in_nr[i], du, Np, cs, cond, need_dcond ? dcond : NULL, ws);
    }
    if (lin_trainable(&m->x_emb)) zl_op_linear_backward(NULL, du, ptok, &m->x_emb, Ni, 0);
    if (need_dcond) {
        zl_op_linear_backward(dh, dcond, h, &m->t_mlp2, 1, 0);
        zl_op_silu_backward(dh, dh, hpre, (size_t)c->t_mid);
        zl_op_linear_backward(NULL, dh, emb, &m->t_mlp0, 1, 0);
    }
    free(in_nr); free(in_cr); free(in_l);
out:
    free(u); free(du); free(ptok); free(tok); free(capn); free(cs); free(ids); free(fin_ln); free(fin_lm);
    free(y); free(dy); free(saves); free(vec);
    zl_zblock_bws_free(ws);
    free(run_nr); free(run_cr); free(run_l);
    return rc;
}
