/* cmd_vae.c — `zlora debug vae`: the VAE encoder or decoder on tensors from a safetensors file (parity
 * checks against the PyTorch reference, bug reports). See cmd_vae.h and model/vae.h. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "base/base.h"
#include "cli/cli.h"
#include "cli/cmd_vae.h"
#include "io/safetensors.h"
#include "model/vae.h"

static const char *usage =
    "usage: zlora debug vae --model PATH (--encode IN | --decode IN) --out OUT\n"
    "                       [--tile N [--overlap N]] [--weights f32|bf16] [--groups N]\n"
    "  PATH: a diffusers vae/ folder, a model folder holding vae/, or a single file (diffusers or\n"
    "        BFL/ComfyUI ae.safetensors naming)\n"
    "  --encode: IN holds image [3,H,W] float32 in [-1,1] (H, W multiples of the spatial factor);\n"
    "            OUT receives mean [C,H/f,W/f], the raw latent mean (not normalised)\n"
    "  --decode: IN holds latent [C,h,w], raw (not normalised); OUT receives decoded [3,h*f,w*f] in model\n"
    "            space (about [-1,1], not clamped)\n"
    "  --tile N: process in overlapping tiles of N latent pixels (N*f image pixels); --overlap: shared\n"
    "            latent pixels between neighbours (default N/4)\n"
    "  --groups N: GroupNorm group count when the file does not say (default: config.json, else 32)\n";

static int parse_int(const char *s, int lo, int hi, int *v) {
    char *end;
    long x = strtol(s, &end, 10);
    if (!*s || *end || x < lo || x > hi) return -1;
    *v = (int)x;
    return 0;
}

int zl_cmd_debug_vae(int argc, char **argv) {
    const char *model = NULL, *enc = NULL, *dec = NULL, *out = NULL;
    int tile = 0, overlap = -1;
    zl_vae_opts o;
    zl_vae_default_opts(&o);
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        int more = i + 1 < argc;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) { fputs(usage, stdout); return 0; }
        else if (!strcmp(a, "--model") && more) model = argv[++i];
        else if (!strcmp(a, "--encode") && more) enc = argv[++i];
        else if (!strcmp(a, "--decode") && more) dec = argv[++i];
        else if (!strcmp(a, "--out") && more) out = argv[++i];
        else if (!strcmp(a, "--tile") && more) {
            if (parse_int(argv[++i], 1, 1 << 20, &tile)) return zl_err("debug vae: --tile must be a positive integer"), zl_cli_fail();
        } else if (!strcmp(a, "--overlap") && more) {
            if (parse_int(argv[++i], 0, 1 << 20, &overlap)) return zl_err("debug vae: --overlap must be a non-negative integer"), zl_cli_fail();
        } else if (!strcmp(a, "--groups") && more) {
            if (parse_int(argv[++i], 1, 1 << 20, &o.groups)) return zl_err("debug vae: --groups must be a positive integer"), zl_cli_fail();
        } else if (!strcmp(a, "--weights") && more) {
            const char *v = argv[++i];
            if (!strcmp(v, "bf16")) o.weight_dtype = ZL_BF16;
            else if (!strcmp(v, "f32") || !strcmp(v, "fp32")) o.weight_dtype = ZL_F32;
            else return zl_err("debug vae: --weights must be f32 or bf16"), zl_cli_fail();
        } else return zl_err("debug vae: unexpected argument '%s' (see zlora debug vae --help)", a), zl_cli_fail();
    }
    if (!model || !out || !enc == !dec)
        return zl_err("debug vae: --model, --out and one of --encode / --decode are required\n%s", usage), zl_cli_fail();
    if (overlap < 0) overlap = tile / 4;
    if (tile && overlap >= tile) return zl_err("debug vae: --overlap (%d) must be smaller than --tile (%d)", overlap, tile), zl_cli_fail();
    const char *in = enc ? enc : dec, *key = enc ? "image" : "latent";
    zl_st *st = NULL;
    zl_vae *m = NULL;
    float *x = NULL, *y = NULL;
    int rc = zl_st_open(in, &st);
    const zl_tensor_info *t = NULL;
    if (rc == 0) {
        t = zl_st_find(st, key);
        if (!t) rc = zl_err("%s: no tensor \"%s\" (%s)", in, key, enc ? "image [3,H,W] in [-1,1]" : "latent [C,h,w]");
        else if (t->ndim != 3) rc = zl_err("%s: tensor \"%s\" has %d dimensions, expected 3", in, key, t->ndim);
        else if (t->shape[1] <= 0 || t->shape[2] <= 0 || t->shape[1] > (1 << 20) || t->shape[2] > (1 << 20))
            rc = zl_err("%s: tensor \"%s\" has an empty or huge shape", in, key);
        else if (!(x = zl_st_read_f32(st, t))) rc = zl_err_prefix("%s", in);
    }
    if (rc == 0) rc = zl_vae_load(model, &o, &m);
    int C = 0, h = 0, w = 0;
    if (rc == 0) {
        const zl_vae_config *c = &m->cfg;
        zl_info("vae: %s (%s naming, %d levels [factor %d], channels %d..%d, %d/%d ResBlocks, %d latent channels, "
                "groups %d, weights %s)", m->path, m->naming, c->levels, zl_vae_factor(m), c->ch[0], c->ch[c->levels - 1],
                c->enc_layers, c->dec_layers, c->latent_channels, c->groups, zl_dtype_name(m->weight_dtype));
        int f = zl_vae_factor(m), want = enc ? c->in_channels : c->latent_channels;
        if (t->shape[0] != want)
            rc = zl_err("%s: %s has %lld channels, the VAE takes %d", in, key, (long long)t->shape[0], want);
        else if (enc) { C = c->latent_channels; h = (int)t->shape[1] / f; w = (int)t->shape[2] / f; }
        else { C = c->out_channels; h = (int)t->shape[1] * f; w = (int)t->shape[2] * f; }
        if (rc == 0 && !(y = zl_try_malloc(sizeof(float) * (size_t)C * h * w + 1))) rc = -1;
    }
    if (rc == 0) {
        double t0 = zl_now();
        int H = (int)t->shape[1], W = (int)t->shape[2];
        if (enc) rc = tile ? zl_vae_encode_tiled(m, x, H, W, tile, overlap, y) : zl_vae_encode(m, x, H, W, y);
        else rc = tile ? zl_vae_decode_tiled(m, x, H, W, tile, overlap, y) : zl_vae_decode(m, x, H, W, y);
        if (rc == 0) zl_info("%s %dx%d -> %dx%d in %.2f s", enc ? "encoded" : "decoded", W, H, w, h, zl_now() - t0);
    }
    if (rc == 0) {
        zl_st_writer *wr = zl_stw_new();
        zl_stw_meta(wr, "zlora.model", model);
        int64_t dims[3] = {C, h, w};
        rc = zl_stw_add_f32(wr, enc ? "mean" : "decoded", 3, dims, y, ZL_F32);
        if (rc == 0) rc = zl_stw_write(wr, out);
        zl_stw_free(wr);
    }
    free(x);
    free(y);
    zl_st_close(st);
    zl_vae_free(m);
    return rc ? zl_cli_fail() : 0;
}
