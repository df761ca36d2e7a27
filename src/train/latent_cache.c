/* latent_cache.c — see latent_cache.h. */
#include "train/latent_cache.h"
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include "base/base.h"
#include "base/progress.h"
#include "io/safetensors.h"
#include "model/te_cache.h"
#include "model/vae.h"
#include "nn/ops.h"

static char *entry(const char *dir, const char *vid, const zl_item *it, int flip) {
    uint64_t h = zl_hash64(vid, strlen(vid) + 1, 0x6c6174656e74ull);
    int32_t k[3] = {it->bw, it->bh, flip};
    h = zl_hash64(&it->hash, sizeof it->hash, h);
    h = zl_hash64(k, sizeof k, h);
    return zl_xasprintf("%s/%016llx.safetensors", dir, (unsigned long long)h);
}

static int mkdirs(const char *dir) {
    char *p = zl_xstrdup(dir);
    for (char *s = p + 1; *s; s++)
        if (*s == '/') { *s = 0; mkdir(p, 0755); *s = '/'; }
    int rc = mkdir(p, 0755) && !zl_is_dir(p) ? zl_err("cannot create the cache folder %s", dir) : 0;
    free(p);
    return rc;
}

int zl_latent_cache_load(const char *dir, const char *vid, const zl_item *it, int flip, float **x0, int *C, int *h, int *w) {
    *x0 = NULL;
    char *p = entry(dir, vid, it, flip);
    if (!zl_file_exists(p)) { free(p); return 0; }
    zl_st *st;
    if (zl_st_open(p, &st)) { zl_err_prefix("latent cache"); free(p); return -1; }
    char want[64];
    snprintf(want, sizeof want, "%016llx:%dx%d:%d", (unsigned long long)it->hash, it->bw, it->bh, flip);
    const char *mv = zl_st_meta_get(st, "zlora.vae"), *mi = zl_st_meta_get(st, "zlora.item");
    const zl_tensor_info *t = zl_st_find(st, "x0");
    int rc = 0;
    if (mv && mi && !strcmp(mv, vid) && !strcmp(mi, want)) {
        if (!t || t->ndim != 3) rc = zl_err("latent cache entry %s: no x0 [C,h,w] tensor (delete the file)", p);
        else {
            *x0 = zl_st_read_f32(st, t);
            if (!*x0) rc = -1;
            else { *C = (int)t->shape[0]; *h = (int)t->shape[1]; *w = (int)t->shape[2]; rc = 1; }
        }
    }
    zl_st_close(st);
    free(p);
    return rc;
}

int zl_latent_cache_fill(const zl_dataset *ds, const char *vae_path, const char *dir, int flips, int *encoded) {
    if (encoded) *encoded = 0;
    if (mkdirs(dir)) return -1;
    char *vid = zl_weights_identity(vae_path, "vae", "vae");
    if (!vid) return -1;
    int nf = flips ? 2 : 1, missing = 0, rc = 0;
    for (int i = 0; i < ds->n; i++)
        for (int f = 0; f < nf; f++) {
            char *p = entry(dir, vid, &ds->items[i], f);
            missing += !zl_file_exists(p);
            free(p);
        }
    if (!missing) { free(vid); return 0; }
    zl_vae *vae = NULL;
    zl_vae_opts o;
    zl_vae_default_opts(&o);
    if (zl_vae_load(vae_path, &o, &vae)) { free(vid); return -1; }
    int fac = zl_vae_factor(vae), C = vae->cfg.latent_channels, done = 0;
    zl_ops_auto_threads(vae->cfg.ch[vae->cfg.levels - 1] * 8); /* small VAEs (the nano one): one thread */
    zl_progress pr;
    zl_progress_start(&pr, "encoding latents", missing, "images");
    for (int i = 0; i < ds->n && rc == 0; i++)
        for (int f = 0; f < nf && rc == 0; f++) {
            const zl_item *it = &ds->items[i];
            char *p = entry(dir, vid, it, f);
            if (zl_file_exists(p)) { free(p); continue; }
            if (it->bw % fac || it->bh % fac) { rc = zl_err("%s: bucket %dx%d is not a multiple of the VAE factor %d", it->image, it->bw, it->bh, fac); free(p); break; }
            int h = it->bh / fac, w = it->bw / fac;
            float *px = zl_try_malloc(sizeof(float) * 3 * (size_t)it->bw * (size_t)it->bh);
            float *z = zl_try_malloc(sizeof(float) * (size_t)C * (size_t)h * (size_t)w);
            if (!px || !z) rc = -1;
            if (rc == 0) rc = zl_dataset_load_pixels(it, f, px);
            if (rc == 0) rc = zl_vae_encode_tiled(vae, px, it->bh, it->bw, 128, 16, z);
            if (rc == 0) {
                zl_vae_normalize(vae, z, (size_t)C * (size_t)h * (size_t)w);
                char meta[64];
                snprintf(meta, sizeof meta, "%016llx:%dx%d:%d", (unsigned long long)it->hash, it->bw, it->bh, f);
                zl_st_writer *wr = zl_stw_new();
                zl_stw_meta(wr, "zlora.vae", vid);
                zl_stw_meta(wr, "zlora.item", meta);
                if (zl_utf8_valid(it->image, strlen(it->image))) zl_stw_meta(wr, "zlora.image", it->image);
                int64_t sh[3] = {C, h, w};
                rc = zl_stw_add_f32(wr, "x0", 3, sh, z, ZL_F32);
                if (rc == 0) rc = zl_stw_write(wr, p);
                zl_stw_free(wr);
            }
            if (rc) zl_err_prefix("%s", it->image);
            free(px);
            free(z);
            free(p);
            zl_progress_update(&pr, ++done);
        }
    if (rc == 0) zl_progress_end(&pr, done);
    if (encoded) *encoded = done;
    zl_vae_free(vae);
    free(vid);
    return rc;
}
