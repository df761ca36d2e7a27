/* te_cache.c — see te_cache.h. */
#include "te_cache.h"
#include "../base/base.h"
#include "../io/safetensors.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

char *zl_weights_identity(const char *path, const char *subdir, const char *label) {
    char p[4200];
    snprintf(p, sizeof p, "%s/%s", path, subdir ? subdir : "");
    if (subdir && zl_is_dir(path) && zl_is_dir(p)) path = p;
    zl_st *st;
    if (zl_st_open(path, &st)) return NULL;
    uint64_t h = 0;
    for (int i = 0; i < zl_st_count(st); i++) {
        const zl_tensor_info *t = zl_st_tensor(st, i);
        h = zl_hash64(t->name, strlen(t->name) + 1, h);
        int64_t d[ZL_MAX_DIMS + 2] = {t->dtype, t->ndim};
        for (int k = 0; k < t->ndim; k++) d[2 + k] = t->shape[k];
        h = zl_hash64(d, sizeof(int64_t) * (size_t)(2 + t->ndim), h);
        /* a sample of the data of every tensor: its first and last 256 bytes */
        size_t n = t->nbytes < 256 ? t->nbytes : 256;
        h = zl_hash64(t->data, n, h);
        h = zl_hash64((const char *)t->data + t->nbytes - n, n, h);
    }
    char *id = zl_xasprintf("%s:%d-tensors:%016llx", label, zl_st_count(st), (unsigned long long)h);
    zl_st_close(st);
    return id;
}

char *zl_te_identity(const char *path) { return zl_weights_identity(path, "text_encoder", "qwen3"); }

static char *entry_path(const char *dir, const char *identity, const char *prompt) {
    uint64_t h = zl_hash64(identity, strlen(identity) + 1, 0);
    h = zl_hash64(ZL_TE_TEMPLATE_VERSION, sizeof ZL_TE_TEMPLATE_VERSION, h);
    h = zl_hash64(prompt, strlen(prompt), h);
    return zl_xasprintf("%s/%016llx.safetensors", dir, (unsigned long long)h);
}

int zl_te_cache_load(const char *dir, const char *identity, const char *prompt, float **cap, int32_t **ids, int *L,
                     int *hidden) {
    *cap = NULL;
    *ids = NULL;
    char *p = entry_path(dir, identity, prompt);
    if (!zl_file_exists(p)) { free(p); return 0; }
    zl_st *st;
    if (zl_st_open(p, &st)) { zl_err_prefix("feature cache"); free(p); return -1; }
    const char *mi = zl_st_meta_get(st, "zlora.encoder"), *mt = zl_st_meta_get(st, "zlora.template"),
               *mp = zl_st_meta_get(st, "zlora.prompt");
    int rc = 0;
    if (!mi || !mt || !mp || strcmp(mi, identity) || strcmp(mt, ZL_TE_TEMPLATE_VERSION) || strcmp(mp, prompt)) {
        rc = 0; /* another prompt or encoder under the same hash: a miss (it will be overwritten) */
    } else {
        const zl_tensor_info *c = zl_st_find(st, "cap"), *d = zl_st_find(st, "ids");
        if (!c || !d || c->ndim != 2 || d->ndim != 1 || d->dtype != ZL_I32 || c->shape[0] != d->shape[0] || c->shape[0] < 1) {
            rc = zl_err("feature cache %s: malformed entry (delete it)", p);
        } else {
            *L = (int)c->shape[0];
            *hidden = (int)c->shape[1];
            *cap = zl_st_read_f32(st, c);
            *ids = zl_xmalloc(sizeof(int32_t) * (size_t)*L);
            memcpy(*ids, d->data, sizeof(int32_t) * (size_t)*L);
            rc = *cap ? 1 : -1;
        }
    }
    zl_st_close(st);
    free(p);
    if (rc < 0) { free(*cap); free(*ids); *cap = NULL; *ids = NULL; }
    return rc;
}

int zl_te_cache_store(const char *dir, const char *identity, const char *prompt, const float *cap, const int32_t *ids,
                      int L, int hidden) {
    if (!zl_is_dir(dir) && mkdir(dir, 0755) != 0 && errno != EEXIST) return zl_err("cannot create the feature cache %s: %s", dir, strerror(errno));
    char *p = entry_path(dir, identity, prompt);
    zl_st_writer *w = zl_stw_new();
    zl_stw_meta(w, "zlora.encoder", identity);
    zl_stw_meta(w, "zlora.template", ZL_TE_TEMPLATE_VERSION);
    zl_stw_meta(w, "zlora.prompt", prompt);
    int64_t sc[2] = {L, hidden}, si[1] = {L};
    int rc = zl_stw_add_f32(w, "cap", 2, sc, cap, ZL_F32);
    if (!rc) rc = zl_stw_add(w, "ids", ZL_I32, 1, si, ids);
    if (!rc) rc = zl_stw_write(w, p);
    zl_stw_free(w);
    free(p);
    return rc;
}
