/* test_vae.c — the FLUX.1 VAE (src/model/vae.c) against the independent PyTorch reference
 * (tests/ref/vae_ref.py; goldens in tests/data/vae, see its README): three tiny configs (2 and 3 levels,
 * 1 and 2 ResBlocks per level, GroupNorm 8/32/16, an SD-style one with 4 latent channels, quant convs and
 * legacy attention names) in every layout (diffusers folder, model folder, single file beside config.json,
 * BFL ae.safetensors, BF16 with a prefix, F16), F32 and BF16 weights, the inferred config, tiled against
 * untiled, latent normalisation, the debug CLI, and refusals of wrong files.
 * Tolerances: F32 parity relative L2 <= 1e-4 (the reference's own float64 run agrees to 2e-6); tiled vs
 * untiled see TILE_TOL below. */
#include "test.h"
#include "base/base.h"
#include "cli/cmd_vae.h"
#include "io/safetensors.h"
#include "model/vae.h"

#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#define DATA "tests/data/vae"
#define TOL 1e-4

static int weights_present(void) {
    return zl_file_exists(DATA "/tiny_a/ae.safetensors") && zl_file_exists(DATA "/tiny_b/ae.safetensors") &&
           zl_file_exists(DATA "/tiny_c/diffusers/vae/diffusion_pytorch_model.safetensors") &&
           zl_file_exists(DATA "/tiny_a/diffusers_f16.safetensors");
}
#define NEED_WEIGHTS() CHECK_MSG(weights_present(), "tiny VAE weights missing: run `%s tests/ref/vae_ref.py --out " DATA " --weights-only`", "python3")

/* Reads tensor `name` of a file (f32, malloc'd) and its shape. */
static float *read_t(const char *path, const char *name, int64_t *dims) {
    zl_st *st;
    if (zl_st_open(path, &st)) return NULL;
    const zl_tensor_info *t = zl_st_find(st, name);
    float *v = NULL;
    if (t && t->ndim == 3) {
        for (int i = 0; i < 3; i++) dims[i] = t->shape[i];
        v = zl_st_read_f32(st, t);
    }
    zl_st_close(st);
    return v;
}

static double rel_l2(const float *a, const float *b, size_t n) {
    double num = 0, den = 0;
    for (size_t i = 0; i < n; i++) {
        double d = (double)a[i] - b[i];
        num += d * d;
        den += (double)b[i] * b[i];
    }
    return sqrt(num / (den > 0 ? den : 1));
}

/* Relative L2 of encode(image of case) against golden enc_<gold>.safetensors and decode(latent) against
 * dec_<gold>; worst of both. */
static double run_case(const zl_vae *m, const char *cfg, const char *cs, const char *gold) {
    char p[256];
    int64_t di[3], dm[3], dl[3], dd[3];
    snprintf(p, sizeof p, DATA "/%s/in_%s.safetensors", cfg, cs);
    float *img = read_t(p, "image", di), *lat = read_t(p, "latent", dl);
    snprintf(p, sizeof p, DATA "/%s/enc_%s.safetensors", cfg, gold);
    float *gm = read_t(p, "mean", dm);
    snprintf(p, sizeof p, DATA "/%s/dec_%s.safetensors", cfg, gold);
    float *gd = read_t(p, "decoded", dd);
    double e = 1e9;
    int f = zl_vae_factor(m);
    if (img && lat && gm && gd && dm[1] * f == di[1] && dd[1] == dl[1] * f && dm[0] == m->cfg.latent_channels) {
        size_t nm = (size_t)(dm[0] * dm[1] * dm[2]), nd = (size_t)(dd[0] * dd[1] * dd[2]);
        float *ym = malloc(sizeof(float) * nm), *yd = malloc(sizeof(float) * nd);
        if (zl_vae_encode(m, img, (int)di[1], (int)di[2], ym) == 0 && zl_vae_decode(m, lat, (int)dl[1], (int)dl[2], yd) == 0) {
            double e1 = rel_l2(ym, gm, nm), e2 = rel_l2(yd, gd, nd);
            e = e1 > e2 ? e1 : e2;
        } else {
            fprintf(stderr, "    %s\n", zl_last_error());
        }
        free(ym); free(yd);
    }
    free(img); free(lat); free(gm); free(gd);
    return e;
}

static int nthcase(const char *cfg) { return strcmp(cfg, "tiny_c") ? 2 : 1; }

TEST(vae_parity_every_layout_f32) {
    NEED_WEIGHTS();
    double worst = 0;
    const char *cfgs[] = {"tiny_a", "tiny_b", "tiny_c"};
    const char *layouts[] = {"diffusers", "diffusers/vae", "diffusers/vae/diffusion_pytorch_model.safetensors", "ae.safetensors"};
    for (int c = 0; c < 3; c++)
        for (int l = 0; l < 4; l++) {
            char p[256];
            snprintf(p, sizeof p, DATA "/%s/%s", cfgs[c], layouts[l]);
            zl_vae *m;
            CHECK_MSG(zl_vae_load(p, NULL, &m) == 0, "%s: %s", p, zl_last_error());
            CHECK(!strcmp(m->naming, l == 3 ? "bfl" : c == 2 ? "diffusers-legacy" : "diffusers"));
            for (int k = 0; k < nthcase(cfgs[c]); k++) {
                char cs[16];
                snprintf(cs, sizeof cs, "case%d", k);
                double e = run_case(m, cfgs[c], cs, cs);
                if (!(e <= TOL)) zl_vae_free(m);
                CHECK_MSG(e <= TOL, "%s %s: rel L2 %.3g", p, cs, e);
                if (e > worst) worst = e;
            }
            zl_vae_free(m);
        }
    fprintf(stderr, "[worst rel L2 %.2g] ", worst);
}

TEST(vae_config_inferred) {
    NEED_WEIGHTS();
    struct { const char *path; int levels, ch0, chl, el, dl, groups, lat, quant; float sc, sh; } want[] = {
        {DATA "/tiny_a/diffusers", 2, 32, 64, 1, 2, 8, 16, 0, 0.3611f, 0.1159f},
        {DATA "/tiny_a/ae.safetensors", 2, 32, 64, 1, 2, 8, 16, 0, 0.3611f, 0.1159f},       /* groups from metadata */
        {DATA "/tiny_b/ae.safetensors", 3, 32, 64, 2, 3, 32, 16, 0, 0.3611f, 0.1159f},      /* groups default 32 */
        {DATA "/tiny_c/diffusers", 2, 32, 64, 1, 2, 16, 4, 1, 0.18215f, 0.0f},              /* shift_factor null */
        {DATA "/tiny_c/ae.safetensors", 2, 32, 64, 1, 2, 16, 4, 1, 0.18215f, 0.0f},         /* SD defaults */
    };
    for (size_t i = 0; i < sizeof want / sizeof *want; i++) {
        zl_vae *m;
        CHECK_MSG(zl_vae_load(want[i].path, NULL, &m) == 0, "%s", zl_last_error());
        const zl_vae_config *c = &m->cfg;
        int ok = c->levels == want[i].levels && c->ch[0] == want[i].ch0 && c->ch[c->levels - 1] == want[i].chl &&
                 c->enc_layers == want[i].el && c->dec_layers == want[i].dl && c->groups == want[i].groups &&
                 c->latent_channels == want[i].lat && c->quant_conv == want[i].quant && c->post_quant_conv == want[i].quant &&
                 c->in_channels == 3 && c->out_channels == 3 && c->mid_attention && c->scaling_factor == want[i].sc &&
                 c->shift_factor == want[i].sh && zl_vae_factor(m) == 1 << (want[i].levels - 1);
        zl_vae_free(m);
        CHECK_MSG(ok, "%s", want[i].path);
    }
}

TEST(vae_parity_bf16_f16) {
    NEED_WEIGHTS();
    zl_vae_opts f32 = {ZL_F32, 0}, bf = {ZL_BF16, 0};
    struct { const char *path; const zl_vae_opts *o; const char *gold; } runs[] = {
        {DATA "/tiny_a/ae_bf16_prefixed.safetensors", &f32, "bf16_case0"},  /* BF16 file, first_stage_model. prefix */
        {DATA "/tiny_a/ae_bf16_prefixed.safetensors", &bf, "bf16_case0"},   /* kept BF16: zero copy */
        {DATA "/tiny_a/diffusers_f16.safetensors", &f32, "f16_case0"},      /* F16 file, groups from metadata */
    };
    for (size_t i = 0; i < sizeof runs / sizeof *runs; i++) {
        zl_vae *m;
        CHECK_MSG(zl_vae_load(runs[i].path, runs[i].o, &m) == 0, "%s", zl_last_error());
        CHECK(m->weight_dtype == runs[i].o->weight_dtype && m->enc.res[0].c1.dtype == runs[i].o->weight_dtype);
        if (i == 1) CHECK(m->dec.attn.q.dtype == ZL_BF16);
        double e = run_case(m, "tiny_a", "case0", runs[i].gold);
        fprintf(stderr, "[%.2g] ", e);
        zl_vae_free(m);
        CHECK_MSG(e <= TOL, "%s (%s weights): rel L2 %.3g", runs[i].path, zl_dtype_name(runs[i].o->weight_dtype), e);
    }
    /* an F32 file converted to BF16 while loading holds bitwise the file's bf16 values (nearest even) */
    zl_vae *m, *m2;
    CHECK(zl_vae_load(DATA "/tiny_a/diffusers", &bf, &m) == 0);
    CHECK(zl_vae_load(DATA "/tiny_a/ae_bf16_prefixed.safetensors", &bf, &m2) == 0);
    const zl_conv2d *ca[] = {&m->enc.res[0].c1, &m->dec.down[0], &m->dec.conv_out, &m->dec.res[2].sc};
    const zl_conv2d *cb[] = {&m2->enc.res[0].c1, &m2->dec.down[0], &m2->dec.conv_out, &m2->dec.res[2].sc};
    int same = 1;
    for (int i = 0; i < 4; i++)
        same &= ca[i]->dtype == ZL_BF16 && cb[i]->dtype == ZL_BF16 && ca[i]->w && cb[i]->w &&
                !memcmp(ca[i]->w, cb[i]->w, (size_t)ca[i]->cout * ca[i]->cin * ca[i]->k * ca[i]->k * 2);
    same &= !memcmp(m->enc.attn.k.w, m2->enc.attn.k.w, (size_t)64 * 64 * 2);
    double e0 = run_case(m, "tiny_a", "case0", "case0");
    zl_vae_free(m);
    zl_vae_free(m2);
    CHECK(same);
    CHECK_MSG(e0 > 1e-3 && e0 < 3e-2, "bf16 weights vs the f32 golden: %.3g", e0);
    /* and the bf16 goldens really differ from the f32 ones (the test can fail) */
    CHECK(zl_vae_load(DATA "/tiny_a/ae_bf16_prefixed.safetensors", &bf, &m) == 0);
    double e = run_case(m, "tiny_a", "case0", "case0");
    zl_vae_free(m);
    CHECK_MSG(e > 1e-3 && e < 3e-2, "bf16 weights vs the f32 golden: %.3g", e);
}

TEST(vae_groups_option_and_metadata) {
    NEED_WEIGHTS();
    zl_vae_opts o = {ZL_F32, 16};
    zl_vae *m;
    CHECK(zl_vae_load(DATA "/tiny_b/ae.safetensors", &o, &m) == 0); /* loads, but another model */
    CHECK(m->cfg.groups == 16);
    double e = run_case(m, "tiny_b", "case0", "case0");
    zl_vae_free(m);
    CHECK_MSG(e > 0.05, "groups 16 instead of 32 should change the output: %.3g", e);
    o.groups = 5;
    CHECK(zl_vae_load(DATA "/tiny_b/ae.safetensors", &o, &m) != 0);
    CHECK_MSG(strstr(zl_last_error(), "5 groups") && strstr(zl_last_error(), "groups option"), "%s", zl_last_error());
}

/* ------------------------------------------------------------------ tiles */

/* The test's own tile grid (the contract in vae.h): k = ceil((n − o)/(t − o)), start_i = floor(i(n − t)/(k − 1)). */
static int starts_ref(int n, int t, int o, int *s) {
    if (n <= t) { s[0] = 0; return 1; }
    int k = (n - o + (t - o) - 1) / (t - o);
    if (k < 2) k = 2;
    for (int i = 0; i < k; i++) s[i] = (int)((long long)i * (n - t) / (k - 1));
    return k;
}

static double ramp_ref(int i, int n, int o0, int o1) {
    double r = 1;
    if (o0 > 0 && i < o0) r *= (i + 0.5) / o0;
    if (o1 > 0 && n - 1 - i < o1) r *= (n - 1 - i + 0.5) / o1;
    return r;
}

/* z [16, h, w]: stationary noise (smooth = 0) or low-frequency waves + noise (smooth = 1). */
static void make_latent(float *z, int h, int w, int smooth, uint64_t seed) {
    zl_rng g = {seed};
    for (int c = 0; c < 16; c++) {
        float fy = 0.05f + 0.2f * zl_rng_uniform(&g), fx = 0.05f + 0.2f * zl_rng_uniform(&g), ph = 6.28f * zl_rng_uniform(&g);
        for (int i = 0; i < h; i++)
            for (int j = 0; j < w; j++)
                z[((size_t)c * h + i) * w + j] = smooth ? sinf(fy * i + fx * j + ph) + 0.3f * zl_rng_normal(&g) : zl_rng_normal(&g);
    }
}

/* Seams: e(x) = mean over channels and rows of |Δx tiled − Δx untiled| (Δx: the step from column x−1 to
 * x); returns max e(x) over the tile-boundary columns, and the mean of e over all columns in *mean. */
static double seam_jump(const float *a, const float *b, int C, int H, int W, int f, int w, int tile, int ov, double *mean) {
    double *e = calloc((size_t)W, sizeof(double)), mx = 0, sum = 0;
    for (int c = 0; c < C; c++)
        for (int y = 0; y < H; y++)
            for (int x = 1; x < W; x++) {
                size_t i = ((size_t)c * H + y) * W + x;
                e[x] += fabs(((double)b[i] - b[i - 1]) - ((double)a[i] - a[i - 1])) / (C * H);
            }
    for (int x = 1; x < W; x++) sum += e[x];
    *mean = sum / (W - 1);
    int s[64], k = starts_ref(w, tile, ov, s);
    for (int i = 0; i < k; i++) {
        int bx[2] = {s[i] * f, (s[i] + tile) * f};
        for (int q = 0; q < 2; q++)
            if (bx[q] > 0 && bx[q] < W && e[bx[q]] > mx) mx = e[bx[q]];
    }
    free(e);
    return mx;
}

/* Tiles, mechanics: with the mid block in the tiles too (global_mid_max_bytes = 0), the tiled decode must
 * equal, to rounding, this test's own blend of independent untiled decodes of each tile's latent. */
TEST(vae_tiled_mechanics) {
    NEED_WEIGHTS();
    zl_vae *m;
    CHECK(zl_vae_load(DATA "/tiny_b/ae.safetensors", NULL, &m) == 0);
    int h = 13, w = 22, f = 4, H = h * f, W = w * f, tile = 8, ov = 3, C = 3;
    float *z = malloc(sizeof(float) * 16 * h * w), *out = malloc(sizeof(float) * C * H * W);
    double *acc = calloc((size_t)C * H * W, sizeof(double)), *ws = calloc((size_t)H * W, sizeof(double));
    make_latent(z, h, w, 1, 5);
    m->global_mid_max_bytes = 0;
    CHECK(zl_vae_decode_tiled(m, z, h, w, tile, ov, out) == 0);
    int ys[16], xs[16], ky = starts_ref(h, tile, ov, ys), kx = starts_ref(w, tile, ov, xs);
    CHECK(ky == 2 && kx == 4 && ys[1] == 5 && xs[3] == 14);
    float *zt = malloc(sizeof(float) * 16 * tile * tile), *it = malloc(sizeof(float) * C * tile * f * tile * f);
    for (int a = 0; a < ky; a++)
        for (int b = 0; b < kx; b++) {
            for (int c = 0; c < 16; c++)
                for (int i = 0; i < tile; i++)
                    for (int j = 0; j < tile; j++) zt[(c * tile + i) * tile + j] = z[((size_t)c * h + ys[a] + i) * w + xs[b] + j];
            CHECK(zl_vae_decode(m, zt, tile, tile, it) == 0);
            int T = tile * f;
            int ot = a ? (ys[a - 1] + tile - ys[a]) * f : 0, ob = a < ky - 1 ? (ys[a] + tile - ys[a + 1]) * f : 0;
            int ol = b ? (xs[b - 1] + tile - xs[b]) * f : 0, orr = b < kx - 1 ? (xs[b] + tile - xs[b + 1]) * f : 0;
            for (int i = 0; i < T; i++)
                for (int j = 0; j < T; j++) {
                    double wt = ramp_ref(i, T, ot, ob) * ramp_ref(j, T, ol, orr);
                    size_t p = (size_t)(ys[a] * f + i) * W + xs[b] * f + j;
                    ws[p] += wt;
                    for (int c = 0; c < C; c++) acc[(size_t)c * H * W + p] += wt * it[(c * T + i) * T + j];
                }
        }
    double worst = 0;
    for (size_t i = 0; i < (size_t)C * H * W; i++) {
        double d = fabs(out[i] - acc[i] / ws[i % ((size_t)H * W)]);
        if (d > worst) worst = d;
    }
    CHECK_MSG(worst < 1e-5, "tiled decode vs the test's blend: max |d| %.3g", worst);
    /* encode: the same, with mean tiles blended in latent pixels */
    float *mean = malloc(sizeof(float) * 16 * h * w), *mt = malloc(sizeof(float) * 16 * tile * tile);
    float *img = malloc(sizeof(float) * C * H * W);
    for (size_t i = 0; i < (size_t)C * H * W; i++) img[i] = out[i] * 0.5f;
    CHECK(zl_vae_encode_tiled(m, img, H, W, tile, ov, mean) == 0);
    double *acc2 = calloc((size_t)16 * h * w, sizeof(double)), *ws2 = calloc((size_t)h * w, sizeof(double));
    float *imt = malloc(sizeof(float) * C * tile * f * tile * f);
    for (int a = 0; a < ky; a++)
        for (int b = 0; b < kx; b++) {
            int T = tile * f;
            for (int c = 0; c < C; c++)
                for (int i = 0; i < T; i++)
                    for (int j = 0; j < T; j++) imt[(c * T + i) * T + j] = img[((size_t)c * H + ys[a] * f + i) * W + xs[b] * f + j];
            CHECK(zl_vae_encode(m, imt, T, T, mt) == 0);
            int ot = a ? ys[a - 1] + tile - ys[a] : 0, ob = a < ky - 1 ? ys[a] + tile - ys[a + 1] : 0;
            int ol = b ? xs[b - 1] + tile - xs[b] : 0, orr = b < kx - 1 ? xs[b] + tile - xs[b + 1] : 0;
            for (int i = 0; i < tile; i++)
                for (int j = 0; j < tile; j++) {
                    double wt = ramp_ref(i, tile, ot, ob) * ramp_ref(j, tile, ol, orr);
                    size_t p = (size_t)(ys[a] + i) * w + xs[b] + j;
                    ws2[p] += wt;
                    for (int c = 0; c < 16; c++) acc2[(size_t)c * h * w + p] += wt * mt[(c * tile + i) * tile + j];
                }
        }
    worst = 0;
    for (size_t i = 0; i < (size_t)16 * h * w; i++) {
        double d = fabs(mean[i] - acc2[i] / ws2[i % ((size_t)h * w)]);
        if (d > worst) worst = d;
    }
    CHECK_MSG(worst < 1e-5, "tiled encode vs the test's blend: max |d| %.3g", worst);
    free(z); free(out); free(acc); free(ws); free(zt); free(it); free(mean); free(mt); free(img); free(acc2); free(ws2); free(imt);
    zl_vae_free(m);
}

/* Tiles, quality: tiled vs untiled on tiny_a (factor 2) with an image much bigger than a tile (latent
 * 72×48 = 3×3 tiles of 24, overlap ≥ 8). With the default budget the mid block (attention) runs on the whole
 * latent; GroupNorm statistics of the tiled stages stay per tile, which is what remains. Measured on this
 * random-weight VAE: a stationary (noise) latent 3.4 % relative L2, low-frequency waves 28 % (per-tile
 * GroupNorm statistics then differ a lot; the mid block in the tiles too would give 50 % and 71 %).
 * No seams: the jump across tile borders is no worse than anywhere else, while with no overlap it is. */
#define TILE_TOL 0.05     /* decode, stationary latent (measured 0.034) */
#define TILE_TOL_ENC 0.1  /* encode of the decoded image (measured 0.077) */
TEST(vae_tiled_matches_untiled) {
    NEED_WEIGHTS();
    zl_vae *m;
    CHECK(zl_vae_load(DATA "/tiny_a/ae.safetensors", NULL, &m) == 0);
    int h = 48, w = 72, f = 2, H = h * f, W = w * f, tile = 24, ov = 8;
    size_t nz = (size_t)16 * h * w, ni = (size_t)3 * H * W;
    float *z = malloc(sizeof(float) * nz), *a = malloc(sizeof(float) * ni), *b = malloc(sizeof(float) * ni);
    for (int smooth = 0; smooth < 2; smooth++) {
        make_latent(z, h, w, smooth, 99);
        CHECK(zl_vae_decode(m, z, h, w, a) == 0);
        CHECK(zl_vae_decode_tiled(m, z, h, w, tile, ov, b) == 0);
        double e = rel_l2(b, a, ni), mean, jump = seam_jump(a, b, 3, H, W, f, w, tile, ov, &mean);
        fprintf(stderr, "[%s: rel L2 %.4f, border jump %.4f vs mean %.4f] ", smooth ? "waves" : "noise", e, jump, mean);
        if (!smooth) CHECK_MSG(e < TILE_TOL, "tiled decode differs by %.3g", e);
        else CHECK_MSG(e < 0.4, "tiled decode (waves) differs by %.3g", e);
        CHECK_MSG(jump < 2.0 * mean, "seams: jump %.3g at tile borders vs %.3g on average", jump, mean);
        /* no overlap: hard seams, which the check sees */
        CHECK(zl_vae_decode_tiled(m, z, h, w, tile, 0, b) == 0);
        double jump0 = seam_jump(a, b, 3, H, W, f, w, tile, 0, &mean);
        CHECK_MSG(jump0 > 4.0 * mean, "overlap 0: jump %.3g vs %.3g", jump0, mean);
        /* the mid block in tiles is worse for this attention-heavy model */
        m->global_mid_max_bytes = 0;
        CHECK(zl_vae_decode_tiled(m, z, h, w, tile, ov, b) == 0);
        m->global_mid_max_bytes = (size_t)512 << 20;
        CHECK_MSG(rel_l2(b, a, ni) > e, "mid block in tiles: %.3g vs %.3g", rel_l2(b, a, ni), e);
    }
    /* one tile covering everything: identical to untiled */
    CHECK(zl_vae_decode_tiled(m, z, h, w, 80, 8, b) == 0);
    CHECK(memcmp(a, b, sizeof(float) * ni) == 0);
    /* tiled encode of the decoded (noise-latent) image */
    make_latent(z, h, w, 0, 99);
    CHECK(zl_vae_decode(m, z, h, w, a) == 0);
    float *m0 = malloc(sizeof(float) * nz), *m1 = malloc(sizeof(float) * nz);
    CHECK(zl_vae_encode(m, a, H, W, m0) == 0);
    CHECK(zl_vae_encode_tiled(m, a, H, W, tile, ov, m1) == 0);
    double ee = rel_l2(m1, m0, nz);
    fprintf(stderr, "[encode: rel L2 %.4f] ", ee);
    CHECK_MSG(ee < TILE_TOL_ENC, "tiled encode differs by %.3g", ee);
    CHECK(zl_vae_encode_tiled(m, a, H, W, 100, 10, m1) == 0);
    CHECK(memcmp(m0, m1, sizeof(float) * nz) == 0);
    /* bad tile arguments */
    CHECK(zl_vae_decode_tiled(m, z, h, w, 8, 8, b) != 0);
    CHECK(zl_vae_encode_tiled(m, a, H, W, 0, 0, m1) != 0);
    free(m0); free(m1); free(z); free(a); free(b);
    zl_vae_free(m);
}

/* ------------------------------------------------------------------ misc */

TEST(vae_normalize_and_bad_inputs) {
    NEED_WEIGHTS();
    zl_vae *m;
    CHECK(zl_vae_load(DATA "/tiny_a/diffusers", NULL, &m) == 0);
    float z[4] = {0.1159f, 1.0f, -2.0f, 0.0f}, v[4];
    memcpy(v, z, sizeof z);
    zl_vae_normalize(m, v, 4);
    for (int i = 0; i < 4; i++) CHECK_NEAR(v[i], ((double)z[i] - 0.1159) * 0.3611, 1e-6);
    zl_vae_denormalize(m, v, 4);
    for (int i = 0; i < 4; i++) CHECK_NEAR(v[i], z[i], 1e-6);
    float img[3 * 6 * 5] = {0}, out[16 * 3 * 3];
    CHECK(zl_vae_encode(m, img, 6, 5, out) != 0); /* 5 is odd: factor 2 */
    CHECK(strstr(zl_last_error(), "multiples of 2"));
    CHECK(zl_vae_decode(m, img, 0, 3, out) != 0);
    zl_vae_free(m);
}

/* Writes a safetensors file holding `names` (f32 [shape], zeros). */
static int write_fake(const char *path, const char *const *names, const int64_t (*shapes)[5], const int *nd, int n) {
    zl_st_writer *w = zl_stw_new();
    int rc = 0;
    for (int i = 0; i < n && rc == 0; i++) {
        size_t cnt = 1;
        for (int d = 0; d < nd[i]; d++) cnt *= (size_t)shapes[i][d];
        float *z = calloc(cnt ? cnt : 1, sizeof(float));
        rc = zl_stw_add_f32(w, names[i], nd[i], shapes[i], z, ZL_F32);
        free(z);
    }
    if (rc == 0) rc = zl_stw_write(w, path);
    zl_stw_free(w);
    return rc;
}

/* Copies the tiny_a BFL file without the tensors whose names contain `drop` (NULL: none), with the
 * tensor named `reshape` (may be NULL) flattened to 1-D. */
static int copy_without(const char *dst, const char *drop, const char *reshape) {
    zl_st *st;
    if (zl_st_open(DATA "/tiny_a/ae.safetensors", &st)) return -1;
    zl_st_writer *w = zl_stw_new();
    zl_stw_meta(w, "norm_num_groups", "8");
    int rc = 0;
    for (int i = 0; i < zl_st_count(st) && rc == 0; i++) {
        const zl_tensor_info *t = zl_st_tensor(st, i);
        if (drop && strstr(t->name, drop)) continue;
        int64_t flat[1] = {(int64_t)t->nelem};
        int re = reshape && !strcmp(t->name, reshape);
        rc = zl_stw_add(w, t->name, t->dtype, re ? 1 : t->ndim, re ? flat : t->shape, t->data);
    }
    if (rc == 0) rc = zl_stw_write(w, dst);
    zl_stw_free(w);
    zl_st_close(st);
    return rc;
}

static int load_fails_with(const char *path, const char *msg) {
    zl_vae *m = NULL;
    if (zl_vae_load(path, NULL, &m) == 0) { zl_vae_free(m); fprintf(stderr, "    %s loaded\n", path); return 0; }
    if (!strstr(zl_last_error(), msg)) { fprintf(stderr, "    %s: \"%s\" lacks \"%s\"\n", path, zl_last_error(), msg); return 0; }
    return 1;
}

TEST(vae_refuses_wrong_files) {
    NEED_WEIGHTS();
    char p[512];
    const char *d = zl_test_dir();
    /* a Z-Image DiT, a LoRA, a TAESD, a video VAE, a UNet */
    const char *dit[] = {"cap_embedder.1.weight", "layers.0.attention.to_q.weight"};
    const int64_t s2[][5] = {{8, 4}, {8, 8}};
    const int nd2[] = {2, 2};
    snprintf(p, sizeof p, "%s/dit.safetensors", d);
    CHECK(write_fake(p, dit, s2, nd2, 2) == 0);
    CHECK(load_fails_with(p, "not a VAE (AutoencoderKL) checkpoint: it looks like a Z-Image transformer"));
    if (zl_file_exists("tests/data/zimage/tiny_a/lora/lora_aitk.safetensors"))
        CHECK(load_fails_with("tests/data/zimage/tiny_a/lora/lora_aitk.safetensors", "it looks like a LoRA file"));
    const char *lora[] = {"vae.encoder.down_blocks.0.resnets.0.conv1.lora_A.weight", "vae.encoder.down_blocks.0.resnets.0.conv1.lora_B.weight"};
    snprintf(p, sizeof p, "%s/lora.safetensors", d);
    CHECK(write_fake(p, lora, s2, nd2, 2) == 0);
    CHECK(load_fails_with(p, "it looks like a LoRA file"));
    const char *taesd[] = {"decoder.layers.0.weight", "encoder.layers.0.weight"};
    snprintf(p, sizeof p, "%s/taesd.safetensors", d);
    CHECK(write_fake(p, taesd, s2, nd2, 2) == 0);
    CHECK(load_fails_with(p, "TAESD"));
    const char *wan[] = {"encoder.down.0.block.0.conv1.weight", "decoder.conv_in.weight"};
    const int64_t s5[][5] = {{4, 4, 3, 3, 3}, {4, 4, 3, 3, 3}};
    const int nd5[] = {5, 5};
    snprintf(p, sizeof p, "%s/wan.safetensors", d);
    CHECK(write_fake(p, wan, s5, nd5, 2) == 0);
    CHECK(load_fails_with(p, "video VAE"));
    /* missing tensors: named */
    snprintf(p, sizeof p, "%s/missing.safetensors", d);
    CHECK(copy_without(p, "encoder.mid.attn_1.proj_out", NULL) == 0);
    CHECK(load_fails_with(p, "2 tensors missing: encoder.mid.attn_1.proj_out.weight, encoder.mid.attn_1.proj_out.bias"));
    snprintf(p, sizeof p, "%s/nodecoder.safetensors", d);
    CHECK(copy_without(p, "decoder.", NULL) == 0);
    CHECK(load_fails_with(p, "needs both the encoder and the decoder"));
    snprintf(p, sizeof p, "%s/badshape.safetensors", d);
    CHECK(copy_without(p, NULL, "decoder.up.1.upsample.conv.weight") == 0);
    CHECK(load_fails_with(p, "decoder.up.1.upsample.conv.weight has shape [36864], expected [64,64,3,3]"));
    /* a config.json that contradicts the weights, or describes another class */
    char cmd[1200];
    snprintf(cmd, sizeof cmd, "mkdir -p %s/cfg/vae && cp " DATA "/tiny_a/diffusers/vae/diffusion_pytorch_model.safetensors %s/cfg/vae/ && "
             "sed 's/\"layers_per_block\": 1/\"layers_per_block\": 2/' " DATA "/tiny_a/diffusers/vae/config.json > %s/cfg/vae/config.json", d, d, d);
    CHECK(system(cmd) == 0);
    snprintf(p, sizeof p, "%s/cfg", d);
    CHECK(load_fails_with(p, "config.json says layers_per_block 2, the weights have 1 per encoder level and 2 per decoder block"));
    snprintf(cmd, sizeof cmd, "sed 's/\"AutoencoderKL\"/\"AutoencoderKLWan\"/' " DATA "/tiny_a/diffusers/vae/config.json > %s/cfg/vae/config.json", d);
    CHECK(system(cmd) == 0);
    CHECK(load_fails_with(p, "describes a AutoencoderKLWan, not an AutoencoderKL"));
    CHECK(load_fails_with(DATA "/nope", "nope"));
}

/* ------------------------------------------------------------------ CLI */

static int cli(const char *a0, ...) {
    char *argv[24];
    int argc = 0;
    va_list ap;
    va_start(ap, a0);
    for (const char *a = a0; a && argc < 23; a = va_arg(ap, const char *)) argv[argc++] = (char *)a;
    va_end(ap);
    argv[argc] = NULL;
    return zl_cmd_debug_vae(argc, argv);
}

static int vae_cli_body(void);
TEST(vae_cli_debug) {
    NEED_WEIGHTS();
    int lv = zl_log_level;
    zl_log_level = 0; /* no info lines; errors still print */
    int line = vae_cli_body();
    zl_log_level = lv;
    CHECK_MSG(line == 0, "check at line %d failed", line);
}

/* CHECK for a function returning the failing line (0: all passed) */
#define REQ(c) do { if (!(c)) { fprintf(stderr, "  %s:%d: REQ(%s) failed\n", __FILE__, __LINE__, #c); return __LINE__; } } while (0)
static int vae_cli_body(void) {
    char out[512], p[512];
    snprintf(out, sizeof out, "%s/vae_out.safetensors", zl_test_dir());
    int64_t d1[3], d2[3];
    REQ(cli("vae", "--model", DATA "/tiny_b/ae.safetensors", "--encode", DATA "/tiny_b/in_case0.safetensors", "--out", out, NULL) == 0);
    float *y = read_t(out, "mean", d1), *g = read_t(DATA "/tiny_b/enc_case0.safetensors", "mean", d2);
    REQ(y && g && d1[0] == 16 && d1[1] == d2[1] && d1[2] == d2[2]);
    REQ(rel_l2(y, g, (size_t)(d1[0] * d1[1] * d1[2])) <= TOL);
    free(y); free(g);
    REQ(cli("vae", "--model", DATA "/tiny_b/diffusers", "--decode", DATA "/tiny_b/in_case1.safetensors", "--out", out, NULL) == 0);
    y = read_t(out, "decoded", d1);
    g = read_t(DATA "/tiny_b/dec_case1.safetensors", "decoded", d2);
    REQ(y && g && d1[0] == 3 && d1[1] == d2[1] && d1[2] == d2[2]);
    REQ(rel_l2(y, g, (size_t)(d1[0] * d1[1] * d1[2])) <= TOL);
    free(y); free(g);
    REQ(cli("vae", "--model", DATA "/tiny_b/diffusers", "--decode", DATA "/tiny_b/in_case1.safetensors", "--out", out, "--tile", "2",
              "--overlap", "1", NULL) == 0);
    /* errors */
    REQ(cli("vae", "--model", DATA "/tiny_b/diffusers", "--out", out, NULL) == 1);
    REQ(cli("vae", "--model", DATA "/tiny_b/diffusers", "--encode", DATA "/tiny_b/in_case1.safetensors", "--decode", "x", "--out", out, NULL) == 1);
    REQ(cli("vae", "--model", DATA "/tiny_b/diffusers", "--encode", DATA "/tiny_b/enc_case0.safetensors", "--out", out, NULL) == 1);
    REQ(strstr(zl_last_error(), "no tensor \"image\""));
    REQ(cli("vae", "--model", DATA "/tiny_c/diffusers", "--decode", DATA "/tiny_b/in_case1.safetensors", "--out", out, NULL) == 1);
    REQ(strstr(zl_last_error(), "latent has 16 channels, the VAE takes 4"));
    snprintf(p, sizeof p, "%s/nothere", zl_test_dir());
    REQ(cli("vae", "--model", p, "--decode", DATA "/tiny_b/in_case1.safetensors", "--out", out, NULL) == 1);
    REQ(cli("vae", "--model", DATA "/tiny_b/diffusers", "--decode", DATA "/tiny_b/in_case1.safetensors", "--out", out, "--tile", "4",
              "--overlap", "4", NULL) == 1);
    REQ(cli("vae", "--bogus", NULL) == 1);
    return 0;
}
