/* test_lora_init.c — new trainable LoRAs: target sets, shapes, init statistics, determinism, and that the
 * file written is read back as an ai-toolkit Z-Image LoRA that applies fully. */
#include "test.h"
#include "base/base.h"
#include "lora/lora.h"
#include "train/lora_init.h"

#include <stdlib.h>
#include <string.h>

TEST(lora_init_targets_and_init) {
    zl_zimage_config c;
    zl_zimage_default_config(&c); /* the 6B layout: 30 layers, 2 + 2 refiners, dim 3840 */
    zl_lora_init_opts o = {.rank = 4, .seed = 1};
    zl_lora *l;
    CHECK(zl_lora_new_trainable(&c, &o, &l) == 0);
    CHECK(l->n == 7 * c.n_layers);
    double s = 0, s2 = 0, amax = 0;
    size_t cnt = 0;
    for (int i = 0; i < l->n; i++) {
        zl_lora_module *m = &l->m[i];
        CHECK(zl_starts_with(m->target, "layers."));
        CHECK(m->p[ZL_P_DOWN].shape[0] == 4 && m->p[ZL_P_DOWN].shape[1] == m->in && m->p[ZL_P_UP].shape[0] == m->out);
        for (int k = 0; k < m->out * 4; k++) CHECK(m->p[ZL_P_UP].data[k] == 0.0f);
        if (i == 0) {
            for (int k = 0; k < 4 * m->in; k++) { double v = m->p[ZL_P_DOWN].data[k]; s += v; s2 += v * v; amax = fmax(amax, fabs(v)); cnt++; }
            CHECK(amax <= 1.0 / sqrt((double)m->in) + 1e-7);
            CHECK_NEAR(sqrt(s2 / cnt), 1.0 / sqrt(3.0 * m->in), 0.05 / sqrt((double)m->in)); /* U(−b, b): std b/√3 */
        }
        CHECK_NEAR(zl_lora_module_scale(m), 1.0, 0); /* alpha = rank */
    }
    /* same seed, same values; another seed, others */
    zl_lora *l2, *l3;
    CHECK(zl_lora_new_trainable(&c, &o, &l2) == 0);
    o.seed = 2;
    CHECK(zl_lora_new_trainable(&c, &o, &l3) == 0);
    CHECK(memcmp(l->m[5].p[ZL_P_DOWN].data, l2->m[5].p[ZL_P_DOWN].data, sizeof(float) * 4 * l->m[5].in) == 0);
    CHECK(memcmp(l->m[5].p[ZL_P_DOWN].data, l3->m[5].p[ZL_P_DOWN].data, sizeof(float) * 4 * l->m[5].in) != 0);
    zl_lora_free(l2);
    zl_lora_free(l3);
    zl_lora_free(l);
    /* more targets */
    int t;
    CHECK(zl_lora_targets_parse("attn,ffn,adaln,refiners", &t) == 0);
    o.targets = t;
    CHECK(zl_lora_new_trainable(&c, &o, &l) == 0);
    int ada = 0, ref = 0;
    for (int i = 0; i < l->n; i++) {
        ada += strstr(l->m[i].target, "adaLN_modulation.0") != NULL;
        ref += strstr(l->m[i].target, "refiner.") != NULL;
    }
    CHECK(ada == c.n_layers + c.n_refiner); /* main layers and noise refiners are modulated */
    CHECK(ref == 7 * 2 * c.n_refiner + c.n_refiner);
    zl_lora_free(l);
    CHECK(zl_lora_targets_parse("attn,conv", &t) != 0);
    CHECK(zl_lora_targets_parse("refiners", &t) != 0);
    o.rank = 0;
    CHECK(zl_lora_new_trainable(&c, &o, &l) != 0);
}

TEST(lora_init_writes_a_loadable_file) {
    zl_zimage_config c;
    zl_zimage_default_config(&c);
    c.n_layers = 2;
    zl_lora_init_opts o = {.rank = 8, .alpha = 4, .gaussian = 1, .seed = 9};
    zl_lora *l, *r;
    CHECK(zl_lora_new_trainable(&c, &o, &l) == 0);
    l->m[0].p[ZL_P_UP].data[3] = 0.5f; /* a trained value */
    char p[600];
    snprintf(p, sizeof p, "%s/new_lora.safetensors", zl_test_dir());
    zl_write_opts w = {.to = ZL_FMT_AITOOLKIT, .dtype = ZL_F32};
    CHECK(zl_lora_write(l, p, &w) == 0);
    CHECK(zl_lora_load(p, &r) == 0);
    CHECK(r->n == l->n && !strcmp(r->family, "z-image") && r->format == ZL_FMT_AITOOLKIT);
    zl_module_table t;
    zl_module_table_default(&t);
    char buf[256];
    for (int i = 0; i < r->n; i++) CHECK(zl_lora_check_module(r, i, &t, buf, sizeof buf) == NULL);
    zl_module_table_free(&t);
    /* the same ΔW after the round trip (alpha may be folded into the factors) */
    zl_lora_module *a = &l->m[0], *b = NULL;
    for (int i = 0; i < r->n; i++) if (!strcmp(r->m[i].target, a->target)) b = &r->m[i];
    CHECK(b);
    float *d1 = malloc(sizeof(float) * a->out * a->in), *d2 = malloc(sizeof(float) * a->out * a->in);
    CHECK(zl_lora_delta(a, 1, d1) == 0 && zl_lora_delta(b, 1, d2) == 0);
    double md = 0, mx = 0;
    for (int i = 0; i < a->out * a->in; i++) { md = fmax(md, fabs(d1[i] - d2[i])); mx = fmax(mx, fabs(d1[i])); }
    CHECK(mx > 0 && md <= 1e-6 * mx);
    free(d1); free(d2);
    zl_lora_free(l);
    zl_lora_free(r);
}
