/* test_nano_vae.c — the committed nano VAE (models/nano/vae, trained by models/nano/train_vae.py):
 * encode/decode equal tests/ref/vae_ref.py's float32 forward on two held-out scenes
 * (tests/data/nano/vae_case*, by train_vae.py --golden), through the library and `zlora debug vae`;
 * reconstruction PSNR of held-out scenes above NANO_VAE_MIN_PSNR; normalised latents near mean 0, std 1. */
#include "test.h"
#include "base/base.h"
#include "io/safetensors.h"
#include "model/vae.h"
#include "train/nano_data.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define NANO "models/nano"
#define NDATA "tests/data/nano"
/* decode(encode(x)) of held-out 64x64 scenes, mean PSNR over 16 of them, 8-bit; measured value in
 * models/nano/README.md (the threshold leaves room for another BLAS or thread count, not for a worse VAE) */
#define NANO_VAE_MIN_PSNR 27.0

/* held-out scene i (seed 1, as train_vae.py's --heldout) as a [3,64,64] tensor in [-1,1] */
static void heldout(int i, float *chw) {
    uint8_t rgb[64 * 64 * 3];
    zl_nano_scene s;
    zl_nano_scene_make(1, i, 0, &s);
    zl_nano_render(&s, 64, 4, rgb);
    for (int k = 0; k < 64 * 64; k++)
        for (int c = 0; c < 3; c++) chw[c * 64 * 64 + k] = rgb[k * 3 + c] / 255.0f * 2.0f - 1.0f;
}

TEST(nano_vae_matches_reference) {
    zl_vae *m;
    CHECK(zl_vae_load(NANO, NULL, &m) == 0);
    CHECK(zl_vae_factor(m) == 8 && m->cfg.latent_channels == 16 && m->cfg.mid_attention);
    float img[3 * 64 * 64], mean[16 * 8 * 8], dec[3 * 64 * 64];
    double worst = 0;
    for (int c = 0; c < 2; c++) {
        char golden[200];
        snprintf(golden, sizeof golden, NDATA "/vae_case%d.safetensors", c);
        heldout(c, img);
        CHECK(zl_vae_encode(m, img, 64, 64, mean) == 0);
        double e = zl_test_golden_rel_l2(mean, golden, "mean", 16 * 8 * 8);
        CHECK_MSG(e < 1e-4, "case %d encode: rel. L2 %.3g", c, e);
        worst = e > worst ? e : worst;
        zl_st *st;
        CHECK(zl_st_open(golden, &st) == 0);
        float *gm = zl_st_read_f32(st, zl_st_find(st, "mean"));
        zl_st_close(st);
        CHECK(gm);
        CHECK(zl_vae_decode(m, gm, 8, 8, dec) == 0);
        free(gm);
        e = zl_test_golden_rel_l2(dec, golden, "decoded", 3 * 64 * 64);
        CHECK_MSG(e < 1e-4, "case %d decode: rel. L2 %.3g", c, e);
        worst = e > worst ? e : worst;
    }
    zl_vae_free(m);
    fprintf(stderr, "  nano VAE vs vae_ref.py: largest rel. L2 %.2g\n", worst);
    /* the CLI on the same image */
    char in[700], out[700], cmd[2000];
    snprintf(in, sizeof in, "%s/nano_vae_in.safetensors", zl_test_dir());
    snprintf(out, sizeof out, "%s/nano_vae_out.safetensors", zl_test_dir());
    heldout(1, img);
    zl_st_writer *w = zl_stw_new();
    int64_t dims[3] = {3, 64, 64};
    CHECK(zl_stw_add_f32(w, "image", 3, dims, img, ZL_F32) == 0);
    CHECK(zl_stw_write(w, in) == 0);
    zl_stw_free(w);
    snprintf(cmd, sizeof cmd, "%s -q debug vae --model " NANO " --encode '%s' --out '%s'", zl_test_bin(), in, out);
    CHECK(zl_test_run(cmd, NULL) == 0);
    zl_st *st;
    CHECK(zl_st_open(out, &st) == 0);
    float *got = zl_st_read_f32(st, zl_st_find(st, "mean"));
    zl_st_close(st);
    CHECK(got);
    double e = zl_test_golden_rel_l2(got, NDATA "/vae_case1.safetensors", "mean", 16 * 8 * 8);
    free(got);
    CHECK_MSG(e < 1e-4, "debug vae --encode: rel. L2 %.3g", e);
}

TEST(nano_vae_quality) {
    zl_vae *m;
    CHECK(zl_vae_load(NANO "/vae", NULL, &m) == 0);
    enum { N = 16, HW = 64 * 64 };
    float img[3 * HW], lat[16 * 64], dec[3 * HW];
    double psnr = 0, s = 0, s2 = 0;
    for (int i = 0; i < N; i++) {
        heldout(i, img);
        CHECK(zl_vae_encode(m, img, 64, 64, lat) == 0);
        CHECK(zl_vae_decode(m, lat, 8, 8, dec) == 0);
        double se = 0;
        for (int k = 0; k < 3 * HW; k++) {
            /* 8-bit, as images are saved: round(clamp(x/2 + 0.5, 0, 1)·255) */
            double a = round((img[k] + 1) * 127.5), v = dec[k] / 2 + 0.5;
            double b = round((v < 0 ? 0 : v > 1 ? 1 : v) * 255);
            se += (a - b) * (a - b);
        }
        psnr += 10 * log10(255.0 * 255.0 / (se / (3 * HW) + 1e-10));
        zl_vae_normalize(m, lat, 16 * 64);
        for (int k = 0; k < 16 * 64; k++) s += lat[k], s2 += (double)lat[k] * lat[k];
    }
    zl_vae_free(m);
    psnr /= N;
    double mean = s / (N * 16 * 64), sd = sqrt(s2 / (N * 16 * 64) - mean * mean);
    fprintf(stderr, "  nano VAE: held-out PSNR %.2f dB (threshold %.1f); normalised latents mean %.3f std %.3f\n", psnr,
            NANO_VAE_MIN_PSNR, mean, sd);
    CHECK(psnr > NANO_VAE_MIN_PSNR);
    CHECK(fabs(mean) < 0.25 && sd > 0.75 && sd < 1.33);
}

