/* lora_write.c — writing a zl_lora in any target naming scheme. See lora.h. */
#include "lora.h"
#include "../base/base.h"
#include "../io/safetensors.h"
#include "../model/zimage_names.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int zl_lora_fuse_qkv_n(zl_lora *l, int lossy, double *energy_min, int *nlossy);
void zl_lora_module_fold(zl_lora_module *m, float f);

static const char *fmt_prefix(zl_format f) {
    switch (f) {
    case ZL_FMT_DIFFUSERS: return "transformer.";
    case ZL_FMT_AITOOLKIT: case ZL_FMT_COMFYUI: return "diffusion_model.";
    case ZL_FMT_KOHYA: return "lora_unet_";
    case ZL_FMT_LYCORIS: return "lycoris_";
    default: return "";
    }
}

static int underscored(zl_format f) { return f == ZL_FMT_KOHYA || f == ZL_FMT_LYCORIS; }

/* The module part of a key in format f. */
static void module_name(const zl_lora_module *m, zl_format f, char *out, size_t n) {
    char nat[128];
    const char *name;
    if (!m->target) {
        snprintf(out, n, "%s", m->key); /* not a Z-Image module: keep the file's own key */
        return;
    }
    if (f == ZL_FMT_COMFYUI) { zl_zimage_native(m->target, nat); name = nat; }
    else name = m->target;
    snprintf(out, n, "%s%s", fmt_prefix(f), name);
    if (underscored(f))
        for (char *p = out + strlen(fmt_prefix(f)); *p; p++) if (*p == '.') *p = '_';
}

static int add(zl_st_writer *w, const char *mod, const char *suffix, const zl_mat *m, zl_dtype dt) {
    char key[600];
    snprintf(key, sizeof key, "%s%s", mod, suffix);
    return zl_stw_add_f32(w, key, m->ndim, m->shape, m->data, dt);
}

static int add_scalar(zl_st_writer *w, const char *mod, float v, zl_dtype dt) {
    zl_mat a = {.data = &v, .ndim = 0};
    return add(w, mod, ".alpha", &a, dt);
}

static const char *basename_of(const char *p) { const char *s = strrchr(p, '/'); return s ? s + 1 : p; }

int zl_lora_write(zl_lora *l, const char *path, zl_write_opts *o) {
    o->energy_min = 1.0;
    o->nlossy = 0;
    if (strcmp(l->family, "z-image") != 0)
        return zl_err("%s is a %s LoRA, not Z-Image: %s", l->path, l->family, l->reason ? l->reason : "");
    int nun = 0;
    const char *what = NULL;
    for (int i = 0; i < l->n; i++)
        if (l->m[i].kind == ZL_AD_UNSUPPORTED) { nun++; what = l->m[i].unsupported; }
    if (nun) return zl_err("%s: %d module(s) use %s, which zlora cannot convert", l->path, nun, what ? what : "an unsupported adapter");
    if (o->lossy_rank > 0) zl_lora_lossy_rank = o->lossy_rank;
    /* qkv layout of the target */
    if (o->to == ZL_FMT_COMFYUI) {
        if (zl_lora_fuse_qkv_n(l, o->lossy, &o->energy_min, &o->nlossy)) return -1;
    } else {
        int any_fused = 0;
        for (int i = 0; i < l->n; i++) any_fused |= l->m[i].fused_qkv;
        if (any_fused) {
            int before = l->n;
            if (zl_lora_split_qkv(l, o->lossy, &o->energy_min)) return -1;
            (void)before;
            if (o->energy_min < 1.0) o->nlossy++;
        }
    }
    if (o->to == ZL_FMT_DIFFSYNTH || o->to == ZL_FMT_DIFFUSERS) {
        int other = 0;
        for (int i = 0; i < l->n; i++) other += l->m[i].kind == ZL_AD_LOHA || l->m[i].kind == ZL_AD_LOKR;
        if (other)
            zl_warn("%s has no naming for LoHa/LoKr: %d module(s) are written with LyCORIS suffixes (hada_*/lokr_*), "
                    "which ComfyUI reads but %s does not", zl_format_name(o->to), other, zl_format_name(o->to));
    }
    zl_st_writer *w = zl_stw_new();
    int peft = !(o->to == ZL_FMT_KOHYA || o->to == ZL_FMT_LYCORIS);
    const char *sdown = o->to == ZL_FMT_DIFFSYNTH ? ".lora_A.default.weight" : peft ? ".lora_A.weight" : ".lora_down.weight";
    const char *sup = o->to == ZL_FMT_DIFFSYNTH ? ".lora_B.default.weight" : peft ? ".lora_B.weight" : ".lora_up.weight";
    int rc = 0, rank = 0;
    float alpha = 0;
    int alpha_uniform = 1;
    char mod[512];
    for (int i = 0; i < l->n && rc == 0; i++) {
        zl_lora_module *m = &l->m[i];
        module_name(m, o->to, mod, sizeof mod);
        switch (m->kind) {
        case ZL_AD_LORA:
            if (peft && !m->dora) {
                /* PEFT-style loaders ignore or disagree about .alpha: fold the scale into B (exact) */
                zl_lora_module_fold(m, 1.0f);
            }
            rc = add(w, mod, sdown, &m->p[ZL_P_DOWN], o->dtype);
            if (!rc) rc = add(w, mod, sup, &m->p[ZL_P_UP], o->dtype);
            if (!rc && (!peft || m->has_alpha)) {
                float a = m->has_alpha && m->alpha != 0 ? m->alpha : (float)m->rank;
                rc = add_scalar(w, mod, a, ZL_F32);
                if (rank && a != alpha) alpha_uniform = 0;
                alpha = a;
            }
            if (!rank) rank = m->rank;
            break;
        case ZL_AD_LOHA: {
            static const char *sfx[] = {".hada_w1_a", ".hada_w1_b", ".hada_w2_a", ".hada_w2_b"};
            for (int p = 0; p < 4 && !rc; p++) rc = add(w, mod, sfx[p], &m->p[ZL_P_W1A + p], o->dtype);
            if (!rc && m->has_alpha) rc = add_scalar(w, mod, m->alpha, ZL_F32);
            if (!rank) rank = m->rank;
            break;
        }
        case ZL_AD_LOKR: {
            static const char *sfx[] = {".lokr_w1", ".lokr_w1_a", ".lokr_w1_b", ".lokr_w2", ".lokr_w2_a", ".lokr_w2_b"};
            for (int p = 0; p < 6 && !rc; p++)
                if (m->p[ZL_P_K1 + p].data) rc = add(w, mod, sfx[p], &m->p[ZL_P_K1 + p], o->dtype);
            if (!rc && m->has_alpha) rc = add_scalar(w, mod, m->alpha, ZL_F32);
            break;
        }
        case ZL_AD_DIFF:
            if (m->p[ZL_P_DIFF].data) rc = add(w, mod, ".diff", &m->p[ZL_P_DIFF], o->dtype);
            if (!rc && m->p[ZL_P_DIFF_B].data) rc = add(w, mod, ".diff_b", &m->p[ZL_P_DIFF_B], o->dtype);
            break;
        default:
            break;
        }
        if (!rc && m->dora) rc = add(w, mod, ".dora_scale", &m->p[ZL_P_DORA], o->dtype);
    }
    if (rc) { zl_stw_free(w); return -1; }
    /* metadata: carry everything except what describes the scale (now folded or rewritten) */
    for (int i = 0; i < l->nmeta; i++) {
        const char *k = l->mkeys[i];
        if (strcmp(k, "lora_adapter_metadata") == 0 || strcmp(k, "ss_network_alpha") == 0 || strcmp(k, "ss_network_dim") == 0)
            continue;
        zl_stw_meta(w, k, l->mvals[i]);
    }
    char buf[64];
    zl_stw_meta(w, "zlora.version", ZL_VERSION);
    zl_stw_meta(w, "zlora.source", basename_of(l->path));
    zl_stw_meta(w, "zlora.source_format", zl_format_name(l->format));
    zl_stw_meta(w, "zlora.format", zl_format_name(o->to));
    if (o->nlossy) {
        snprintf(buf, sizeof buf, "%.6f", o->energy_min);
        zl_stw_meta(w, "zlora.lossy_energy_min", buf);
    }
    if (!zl_lora_meta_get(l, "modelspec.architecture")) zl_stw_meta(w, "modelspec.architecture", "Z-Image/lora");
    if (peft && !zl_lora_meta_get(l, "format")) zl_stw_meta(w, "format", "pt");
    if (!peft) {
        if (!zl_lora_meta_get(l, "ss_network_module")) zl_stw_meta(w, "ss_network_module", "networks.lora_zimage");
        if (!zl_lora_meta_get(l, "ss_base_model_version")) zl_stw_meta(w, "ss_base_model_version", "z_image");
        if (rank) {
            snprintf(buf, sizeof buf, "%d", rank);
            zl_stw_meta(w, "ss_network_dim", buf);
            if (alpha_uniform && alpha != 0) {
                snprintf(buf, sizeof buf, "%g", (double)alpha);
                zl_stw_meta(w, "ss_network_alpha", buf);
            }
        }
    }
    rc = zl_stw_write(w, path);
    zl_stw_free(w);
    if (rc) return zl_err_prefix("%s", path);
    return 0;
}
