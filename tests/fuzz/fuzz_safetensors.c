/* fuzz_safetensors.c — libFuzzer target for the safetensors parser (zl_st_open_buffer).
 *
 * Every input either fails with an error message or yields a set whose invariants hold: tensors sorted
 * and unique, each one's bytes inside the input and equal to nelem × dtype size, float tensors readable
 * as f32, metadata readable. Any violation aborts (a crash for libFuzzer), as do ASan/UBSan reports.
 *
 * Seed corpus: run with ZL_FUZZ_WRITE_SEEDS=<dir> and the binary writes a few small valid files there
 * (through the real writer) and exits; tests/fuzz/run.sh does this before fuzzing.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/base.h"
#include "base/dtype.h"
#include "io/safetensors.h"

#define REQUIRE(c)                                                                       \
    do {                                                                                 \
        if (!(c)) {                                                                      \
            fprintf(stderr, "fuzz_safetensors: invariant failed: %s (line %d)\n", #c, __LINE__); \
            abort();                                                                     \
        }                                                                                \
    } while (0)

static volatile float sink;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    zl_st *st = NULL;
    zl_clear_error();
    if (zl_st_open_buffer(data, size, "fuzz", &st) != 0) {
        REQUIRE(st == NULL);
        REQUIRE(zl_last_error()[0] != 0);
        return 0;
    }
    REQUIRE(st != NULL);
    int n = zl_st_count(st);
    uint64_t total = 0;
    for (int i = 0; i < n; i++) {
        const zl_tensor_info *t = zl_st_tensor(st, i);
        REQUIRE(t && t->name);
        if (i) REQUIRE(strcmp(zl_st_tensor(st, i - 1)->name, t->name) < 0);
        REQUIRE(zl_st_find(st, t->name) == t);
        REQUIRE((unsigned)t->dtype < ZL_DTYPE_COUNT);
        REQUIRE(t->ndim >= 0 && t->ndim <= ZL_MAX_DIMS);
        REQUIRE(t->nbytes == t->nelem * zl_dtype_size(t->dtype));
        REQUIRE(t->shard == 0);
        const uint8_t *p = t->data;
        REQUIRE(p >= data + 8 && p + t->nbytes <= data + size);
        total += t->nbytes;
        /* touch every byte */
        uint8_t x = 0;
        for (size_t k = 0; k < t->nbytes; k++) x ^= p[k];
        sink = x;
        if (zl_dtype_is_float(t->dtype)) {
            float *f = zl_st_read_f32(st, t);
            REQUIRE(f != NULL);
            float acc = 0;
            for (uint64_t k = 0; k < t->nelem; k++) acc += f[k];
            sink = acc;
            free(f);
        } else {
            REQUIRE(zl_st_read_f32(st, t) == NULL);
        }
    }
    REQUIRE(zl_st_total_bytes(st) == total);
    REQUIRE(total <= size);
    for (int i = 0; i < zl_st_meta_count(st); i++) {
        const char *k = zl_st_meta_key(st, i), *v = zl_st_meta_value(st, i);
        REQUIRE(k && v);
        REQUIRE(zl_utf8_valid(k, strlen(k)) && zl_utf8_valid(v, strlen(v)));
        REQUIRE(zl_st_meta_get(st, k) == v);
    }
    REQUIRE(zl_st_nshards(st) == 1);
    REQUIRE(strcmp(zl_st_path(st), "fuzz") == 0);
    zl_st_close(st);
    return 0;
}

/* ---------------------------------------------------------------- seed corpus */

static int write_seed(const char *dir, const char *name, zl_st_writer *w) {
    char *p = zl_xasprintf("%s/%s", dir, name);
    int rc = zl_stw_write(w, p);
    if (rc) fprintf(stderr, "fuzz_safetensors: %s\n", zl_last_error());
    free(p);
    zl_stw_free(w);
    return rc;
}

static int write_raw_seed(const char *dir, const char *name, const char *hdr, size_t ndata) {
    size_t hl = strlen(hdr), n = 8 + hl + ndata;
    uint8_t *b = zl_xcalloc(n, 1);
    for (int i = 0; i < 8; i++) b[i] = (uint8_t)((uint64_t)hl >> (8 * i));
    memcpy(b + 8, hdr, hl);
    for (size_t i = 0; i < ndata; i++) b[8 + hl + i] = (uint8_t)(i * 37 + 11);
    char *p = zl_xasprintf("%s/%s", dir, name);
    const void *parts[1] = {b};
    size_t sizes[1] = {n};
    int rc = zl_write_atomic(p, parts, sizes, 1);
    free(p);
    free(b);
    return rc;
}

static int write_seeds(const char *dir) {
    int rc = 0;
    float v[12];
    for (int i = 0; i < 12; i++) v[i] = (float)i * 0.25f - 1.0f;

    /* one tensor of each float storage type, with metadata */
    zl_st_writer *w = zl_stw_new();
    int64_t s34[2] = {3, 4}, s6[1] = {6}, s2[1] = {2};
    zl_stw_add_f32(w, "layers.0.attention.to_q.weight", 2, s34, v, ZL_BF16);
    zl_stw_add_f32(w, "layers.0.attention.norm_q.weight", 1, s6, v, ZL_F32);
    zl_stw_add_f32(w, "x_pad_token", 1, s2, v, ZL_F16);
    zl_stw_meta(w, "format", "pt");
    zl_stw_meta(w, "ss_network_dim", "4");
    rc |= write_seed(dir, "floats.safetensors", w);

    /* every dtype, raw bytes */
    w = zl_stw_new();
    uint8_t raw[16];
    for (int i = 0; i < 16; i++) raw[i] = (uint8_t)(i * 17 + 3);
    for (int t = 0; t < ZL_DTYPE_COUNT; t++) {
        char name[32];
        snprintf(name, sizeof name, "t.%s", zl_dtype_name((zl_dtype)t));
        int64_t s[1] = {(int64_t)(16 / zl_dtype_size((zl_dtype)t))};
        zl_stw_add(w, name, (zl_dtype)t, 1, s, raw);
    }
    rc |= write_seed(dir, "dtypes.safetensors", w);

    /* a LoRA pair with alpha, kohya style */
    w = zl_stw_new();
    int64_t sd[2] = {2, 6}, su[2] = {6, 2};
    zl_stw_add_f32(w, "lora_unet_layers_0_attention_to_q.lora_down.weight", 2, sd, v, ZL_F16);
    zl_stw_add_f32(w, "lora_unet_layers_0_attention_to_q.lora_up.weight", 2, su, v, ZL_F16);
    float alpha = 2.0f;
    zl_stw_add_f32(w, "lora_unet_layers_0_attention_to_q.alpha", 0, NULL, &alpha, ZL_F32);
    zl_stw_meta(w, "ss_network_module", "networks.lora");
    rc |= write_seed(dir, "lora.safetensors", w);

    /* metadata only, with escapes */
    w = zl_stw_new();
    zl_stw_meta(w, "note", "quote \" backslash \\ newline \n unicode é 😀");
    rc |= write_seed(dir, "meta.safetensors", w);

    /* hand-made: odd header length (misaligned data), empty tensors, rank 0, f8 */
    rc |= write_raw_seed(dir, "raw-misaligned.safetensors",
                         "{\"a\":{\"dtype\":\"BF16\",\"shape\":[3],\"data_offsets\":[0,6]},"
                         "\"b\":{\"dtype\":\"F64\",\"shape\":[],\"data_offsets\":[6,14]},"
                         "\"c\":{\"dtype\":\"F8_E4M3\",\"shape\":[2,2],\"data_offsets\":[14,18]},"
                         "\"d\":{\"dtype\":\"F32\",\"shape\":[0,5],\"data_offsets\":[18,18]}} ",
                         18);
    rc |= write_raw_seed(dir, "raw-empty.safetensors", "{}      ", 0);
    return rc;
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc; (void)argv;
    const char *dir = getenv("ZL_FUZZ_WRITE_SEEDS");
    if (dir && *dir) exit(write_seeds(dir) ? 1 : 0);
    return 0;
}
