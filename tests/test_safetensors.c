/* test_safetensors.c — the safetensors reader and writer: round trips of every dtype and of metadata,
 * conversion to f32 on read, sharded sets (folder, diffusers index.json), atomic writes, and a
 * catalogue of malformed files built byte by byte, each of which must fail with a message naming
 * the problem (and never crash). */
#include "test.h"
#include "base/base.h"
#include "base/dtype.h"
#include "io/safetensors.h"

#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/* ---------------------------------------------------------------- helpers */

static char *tpath(const char *name) { return zl_xasprintf("%s/%s", zl_test_dir(), name); }

static int write_bytes(const char *path, const void *p, size_t n) {
    FILE *f = fopen(path, "wb");
    if (!f) return -1;
    size_t w = n ? fwrite(p, 1, n, f) : 0;
    return fclose(f) == 0 && w == n ? 0 : -1;
}

static char *read_bytes(const char *path, size_t *n) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long len = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *b = malloc((size_t)len + 1);
    size_t r = fread(b, 1, (size_t)len, f);
    fclose(f);
    b[r] = 0;
    *n = r;
    return b;
}

/* A raw safetensors image: 8-byte little-endian `hlen` (the real header length when hlen == UINT64_MAX),
 * then `hdr` (hdr_n bytes, strlen when hdr_n == (size_t)-1), then `ndata` bytes of data 0,1,2,... */
static uint8_t *raw_image(uint64_t hlen, const char *hdr, size_t hdr_n, size_t ndata, size_t *n) {
    if (hdr_n == (size_t)-1) hdr_n = strlen(hdr);
    if (hlen == UINT64_MAX) hlen = hdr_n;
    *n = 8 + hdr_n + ndata;
    uint8_t *b = zl_xmalloc(*n);
    for (int i = 0; i < 8; i++) b[i] = (uint8_t)(hlen >> (8 * i));
    memcpy(b + 8, hdr, hdr_n);
    for (size_t i = 0; i < ndata; i++) b[8 + hdr_n + i] = (uint8_t)i;
    return b;
}

/* Writes `img` to a file and checks that both zl_st_open and zl_st_open_buffer reject it with an
 * error message containing `want`. Returns 0 when both do, else prints why and returns -1. */
static int expect_bad_image(const char *label, const uint8_t *img, size_t n, const char *want) {
    char *p = zl_xasprintf("%s/bad-%s.safetensors", zl_test_dir(), label);
    int rc = 0;
    if (write_bytes(p, img, n)) { fprintf(stderr, "  cannot write %s\n", p); free(p); return -1; }
    zl_st *st = (zl_st *)1;
    zl_clear_error();
    if (zl_st_open(p, &st) != -1 || st != NULL) {
        fprintf(stderr, "  [%s] zl_st_open accepted a bad file\n", label);
        zl_st_close(st);
        rc = -1;
    } else if (!strstr(zl_last_error(), want) || !strstr(zl_last_error(), p)) {
        fprintf(stderr, "  [%s] zl_st_open: message \"%s\" lacks \"%s\" or the path\n", label, zl_last_error(), want);
        rc = -1;
    }
    /* the in-memory parser gets an exact-size copy so ASan catches any read past the end */
    uint8_t *copy = zl_xmalloc(n ? n : 1);
    if (n) memcpy(copy, img, n);
    st = (zl_st *)1;
    zl_clear_error();
    if (zl_st_open_buffer(copy, n, "buf", &st) != -1 || st != NULL) {
        fprintf(stderr, "  [%s] zl_st_open_buffer accepted a bad image\n", label);
        zl_st_close(st);
        rc = -1;
    } else if (strcmp(want, "file is empty") != 0 && !strstr(zl_last_error(), want)) {
        fprintf(stderr, "  [%s] zl_st_open_buffer: message \"%s\" lacks \"%s\"\n", label, zl_last_error(), want);
        rc = -1;
    }
    free(copy);
    free(p);
    return rc;
}

/* Header JSON + data bytes; hlen is the real header length. */
static int expect_bad(const char *label, const char *hdr, size_t ndata, const char *want) {
    size_t n;
    uint8_t *img = raw_image(UINT64_MAX, hdr, (size_t)-1, ndata, &n);
    int rc = expect_bad_image(label, img, n, want);
    free(img);
    return rc;
}

static int cmp_strp(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

static int count_tmp_files(const char *dir) {
    DIR *d = opendir(dir);
    if (!d) return -1;
    int n = 0;
    struct dirent *de;
    while ((de = readdir(d)))
        if (strstr(de->d_name, ".tmp")) n++;
    closedir(d);
    return n;
}

/* ---------------------------------------------------------------- round trips */

TEST(safetensors_roundtrip_all_dtypes) {
    zl_st_writer *w = zl_stw_new();
    /* raw bytes of every dtype, with distinct contents per tensor */
    uint8_t raw[ZL_DTYPE_COUNT][48];
    const char *names[ZL_DTYPE_COUNT];
    char namebuf[ZL_DTYPE_COUNT][32];
    for (int t = 0; t < ZL_DTYPE_COUNT; t++) {
        size_t es = zl_dtype_size((zl_dtype)t);
        for (size_t i = 0; i < sizeof raw[t]; i++) raw[t][i] = (uint8_t)(t * 31 + (int)i * 7 + 1);
        if (t == ZL_BOOL) for (size_t i = 0; i < sizeof raw[t]; i++) raw[t][i] &= 1;
        /* names chosen so that insertion order is not the sorted order */
        snprintf(namebuf[t], sizeof namebuf[t], "%c.t_%s", 'z' - t, zl_dtype_name((zl_dtype)t));
        names[t] = namebuf[t];
        int64_t shape[2] = {2, (int64_t)(sizeof raw[t] / es / 2)};
        CHECK(zl_stw_add(w, names[t], (zl_dtype)t, 2, shape, raw[t]) == 0);
    }
    /* odd shapes: a scalar, an empty tensor, a rank-8 tensor */
    float scalar = 3.5f;
    CHECK(zl_stw_add(w, "scalar", ZL_F32, 0, NULL, &scalar) == 0);
    int64_t empty_shape[2] = {0, 7};
    CHECK(zl_stw_add(w, "empty", ZL_BF16, 2, empty_shape, NULL) == 0);
    int64_t r8[8] = {1, 2, 1, 2, 1, 2, 1, 1};
    float r8d[8] = {1, 2, 3, 4, 5, 6, 7, 8};
    CHECK(zl_stw_add(w, "rank8", ZL_F32, 8, r8, r8d) == 0);
    /* a name that needs escaping, and a unicode one */
    uint8_t one = 1;
    int64_t s1[1] = {1};
    CHECK(zl_stw_add(w, "we\"ird\\name\t", ZL_U8, 1, s1, &one) == 0);
    CHECK(zl_stw_add(w, "名前.😀", ZL_U8, 1, s1, &one) == 0);
    CHECK(zl_stw_add(w, "scalar", ZL_F32, 0, NULL, &scalar) == -1); /* duplicate refused */
    CHECK(strstr(zl_last_error(), "twice"));
    CHECK(zl_stw_count(w) == ZL_DTYPE_COUNT + 5);

    const char *mk[] = {"quote\"key", "newline", "unicode", "empty", "ctrl", "json", "format"};
    const char *mv[] = {"a \"quoted\" \\ value", "line1\nline2\r\n", "中文 — émoji 😀 ∑", "", "\x01\x1f\t",
                        "{\"a\": [1, 2]}", "pt"};
    int nmk = (int)(sizeof mk / sizeof *mk);
    for (int i = 0; i < nmk; i++) zl_stw_meta(w, mk[i], mv[i]);
    zl_stw_meta(w, "format", "replaced");

    char *p = tpath("roundtrip.safetensors");
    CHECK(zl_stw_write(w, p) == 0);
    zl_stw_free(w);

    /* raw layout: 8-byte aligned header, valid JSON, data immediately after */
    size_t fn;
    char *file = read_bytes(p, &fn);
    CHECK(file && fn > 8);
    uint64_t hl = 0;
    for (int i = 7; i >= 0; i--) hl = (hl << 8) | (uint8_t)file[i];
    CHECK((8 + hl) % 8 == 0);
    CHECK(hl < fn);
    CHECK(file[8] == '{');
    free(file);

    zl_st *st = NULL;
    CHECK_MSG(zl_st_open(p, &st) == 0, "%s", zl_last_error());
    CHECK(zl_st_count(st) == ZL_DTYPE_COUNT + 5);
    CHECK(zl_st_nshards(st) == 1);
    CHECK(strcmp(zl_st_path(st), p) == 0);
    CHECK(strcmp(zl_st_shard_path(st, 0), p) == 0);
    for (int i = 1; i < zl_st_count(st); i++)
        CHECK(strcmp(zl_st_tensor(st, i - 1)->name, zl_st_tensor(st, i)->name) < 0);
    CHECK(zl_st_tensor(st, -1) == NULL && zl_st_tensor(st, zl_st_count(st)) == NULL);
    uint64_t total = 0;
    for (int t = 0; t < ZL_DTYPE_COUNT; t++) {
        const zl_tensor_info *ti = zl_st_find(st, names[t]);
        CHECK_MSG(ti, "missing %s", names[t]);
        size_t es = zl_dtype_size((zl_dtype)t);
        CHECK(ti->dtype == (zl_dtype)t);
        CHECK(ti->ndim == 2 && ti->shape[0] == 2 && ti->shape[1] == (int64_t)(sizeof raw[t] / es / 2));
        CHECK(ti->nelem == sizeof raw[t] / es && ti->nbytes == sizeof raw[t]);
        CHECK(memcmp(ti->data, raw[t], sizeof raw[t]) == 0);
        CHECK(ti->shard == 0);
        total += sizeof raw[t];
    }
    const zl_tensor_info *ti = zl_st_find(st, "scalar");
    CHECK(ti && ti->ndim == 0 && ti->nelem == 1 && memcmp(ti->data, &scalar, 4) == 0);
    ti = zl_st_find(st, "empty");
    CHECK(ti && ti->ndim == 2 && ti->shape[0] == 0 && ti->shape[1] == 7 && ti->nelem == 0 && ti->nbytes == 0);
    float *e = zl_st_read_f32(st, ti);
    CHECK(e);
    free(e);
    ti = zl_st_find(st, "rank8");
    CHECK(ti && ti->ndim == 8 && ti->nelem == 8 && ti->shape[3] == 2 && memcmp(ti->data, r8d, sizeof r8d) == 0);
    CHECK(zl_st_find(st, "we\"ird\\name\t"));
    CHECK(zl_st_find(st, "名前.😀"));
    CHECK(zl_st_find(st, "nope") == NULL);
    CHECK(zl_st_total_bytes(st) == total + 4 + 0 + 32 + 1 + 1);

    CHECK(zl_st_meta_count(st) == nmk);
    for (int i = 0; i < nmk; i++) {
        const char *v = zl_st_meta_get(st, mk[i]);
        CHECK_MSG(v, "metadata %s missing", mk[i]);
        CHECK_MSG(strcmp(v, strcmp(mk[i], "format") == 0 ? "replaced" : mv[i]) == 0, "metadata %s = \"%s\"", mk[i], v);
    }
    /* keys are listed in sorted order (the writer sorts them) */
    for (int i = 1; i < zl_st_meta_count(st); i++) CHECK(strcmp(zl_st_meta_key(st, i - 1), zl_st_meta_key(st, i)) < 0);
    CHECK(strcmp(zl_st_meta_value(st, 0), zl_st_meta_get(st, zl_st_meta_key(st, 0))) == 0);
    CHECK(zl_st_meta_get(st, "absent") == NULL);
    zl_st_close(st);

    /* the same bytes through the in-memory parser */
    char *img = read_bytes(p, &fn);
    CHECK(zl_st_open_buffer(img, fn, "mem", &st) == 0);
    CHECK(zl_st_count(st) == ZL_DTYPE_COUNT + 5 && zl_st_meta_count(st) == nmk);
    CHECK(strcmp(zl_st_path(st), "mem") == 0);
    zl_st_close(st);
    free(img);
    free(p);
}

TEST(safetensors_roundtrip_sorted_and_no_metadata) {
    /* tensors added in reverse order come back sorted; a file without metadata has no __metadata__ */
    zl_st_writer *w = zl_stw_new();
    const char *keys[] = {"layers.9.w", "layers.10.w", "a", "B", "layers.1.w", "_x"};
    int nk = (int)(sizeof keys / sizeof *keys);
    for (int i = 0; i < nk; i++) {
        float v[3] = {(float)i, (float)i + 0.5f, -(float)i};
        int64_t s[1] = {3};
        CHECK(zl_stw_add_f32(w, keys[i], 1, s, v, ZL_F32) == 0);
    }
    char *p = tpath("sorted.safetensors");
    CHECK(zl_stw_write(w, p) == 0);
    zl_stw_free(w);
    size_t fn;
    char *file = read_bytes(p, &fn);
    CHECK(file && !strstr(file + 8, "__metadata__"));
    free(file);
    zl_st *st;
    CHECK(zl_st_open(p, &st) == 0);
    char *sorted[6];
    for (int i = 0; i < nk; i++) sorted[i] = (char *)keys[i];
    qsort(sorted, (size_t)nk, sizeof *sorted, cmp_strp);
    CHECK(zl_st_count(st) == nk && zl_st_meta_count(st) == 0);
    for (int i = 0; i < nk; i++) CHECK(strcmp(zl_st_tensor(st, i)->name, sorted[i]) == 0);
    /* offsets are dense and in name order */
    for (int i = 1; i < nk; i++)
        CHECK((const char *)zl_st_tensor(st, i)->data == (const char *)zl_st_tensor(st, i - 1)->data + 12);
    const zl_tensor_info *t = zl_st_find(st, "layers.10.w");
    float *f = zl_st_read_f32(st, t);
    CHECK(f && f[0] == 1.0f && f[1] == 1.5f && f[2] == -1.0f);
    free(f);
    zl_st_close(st);

    /* an empty writer gives a valid empty file */
    w = zl_stw_new();
    CHECK(zl_stw_write(w, p) == 0);
    zl_stw_free(w);
    CHECK(zl_st_open(p, &st) == 0);
    CHECK(zl_st_count(st) == 0 && zl_st_total_bytes(st) == 0);
    zl_st_close(st);
    free(p);
}

/* ---------------------------------------------------------------- conversion on read */

TEST(safetensors_read_f32_conversions) {
    const float vals[] = {0.0f, 1.0f, -2.5f, 0.15625f, 448.0f, -0.001953125f, 65504.0f, 3.0e-5f};
    const int n = 8;
    zl_st_writer *w = zl_stw_new();
    int64_t s[1] = {n};
    CHECK(zl_stw_add_f32(w, "as_f32", 1, s, vals, ZL_F32) == 0);
    CHECK(zl_stw_add_f32(w, "as_bf16", 1, s, vals, ZL_BF16) == 0);
    CHECK(zl_stw_add_f32(w, "as_f16", 1, s, vals, ZL_F16) == 0);
    CHECK(zl_stw_add_f32(w, "as_i8", 1, s, vals, ZL_I8) == -1);
    double d[8];
    for (int i = 0; i < n; i++) d[i] = (double)vals[i];
    CHECK(zl_stw_add(w, "f64", ZL_F64, 1, s, d) == 0);
    /* f8 e4m3: 0x38 = 1, 0x7e = 448, 0xc0 = -2, 0x01 = 2^-9; e5m2: 0x3c = 1, 0xc1 = -2.5 */
    uint8_t e4[4] = {0x38, 0x7e, 0xc0, 0x01}, e5[4] = {0x3c, 0xc1, 0x00, 0x7c};
    int64_t s4[1] = {4};
    CHECK(zl_stw_add(w, "f8e4m3", ZL_F8_E4M3, 1, s4, e4) == 0);
    CHECK(zl_stw_add(w, "f8e5m2", ZL_F8_E5M2, 1, s4, e5) == 0);
    int32_t ints[4] = {1, 2, 3, 4};
    CHECK(zl_stw_add(w, "ints", ZL_I32, 1, s4, ints) == 0);
    char *p = tpath("conv.safetensors");
    CHECK(zl_stw_write(w, p) == 0);
    zl_stw_free(w);

    zl_st *st;
    CHECK(zl_st_open(p, &st) == 0);
    const zl_tensor_info *t = zl_st_find(st, "as_bf16");
    CHECK(t && t->dtype == ZL_BF16 && t->nbytes == 2 * (size_t)n);
    float *f = zl_st_read_f32(st, t);
    CHECK(f);
    for (int i = 0; i < n; i++) CHECK_NEAR(f[i], vals[i], fabs(vals[i]) * (1.0 / 256));
    for (int i = 0; i < n; i++) CHECK(f[i] == zl_bf16_to_f32(zl_f32_to_bf16(vals[i])));
    free(f);
    t = zl_st_find(st, "as_f16");
    CHECK(t && t->dtype == ZL_F16);
    f = zl_st_read_f32(st, t);
    CHECK(f);
    for (int i = 0; i < n; i++) CHECK_NEAR(f[i], vals[i], fabs(vals[i]) * (1.0 / 2048) + 1e-7);
    CHECK(f[6] == 65504.0f && f[4] == 448.0f);
    free(f);
    t = zl_st_find(st, "as_f32");
    f = zl_st_read_f32(st, t);
    CHECK(f && memcmp(f, vals, sizeof vals) == 0);
    free(f);
    f = zl_st_read_f32(st, zl_st_find(st, "f64"));
    CHECK(f);
    for (int i = 0; i < n; i++) CHECK(f[i] == vals[i]);
    free(f);
    f = zl_st_read_f32(st, zl_st_find(st, "f8e4m3"));
    CHECK(f && f[0] == 1.0f && f[1] == 448.0f && f[2] == -2.0f && f[3] == ldexpf(1.0f, -9));
    free(f);
    f = zl_st_read_f32(st, zl_st_find(st, "f8e5m2"));
    CHECK(f && f[0] == 1.0f && f[1] == -2.5f && f[2] == 0.0f && isinf(f[3]));
    free(f);
    zl_clear_error();
    CHECK(zl_st_read_f32(st, zl_st_find(st, "ints")) == NULL);
    CHECK(strstr(zl_last_error(), "I32") && strstr(zl_last_error(), "float"));
    zl_st_close(st);
    free(p);
}

TEST(safetensors_read_f32_misaligned) {
    /* A hand-made file whose header length is odd: the tensors start at odd addresses. */
    const char *hdr = "{\"a\":{\"dtype\":\"BF16\",\"shape\":[3],\"data_offsets\":[0,6]},"
                      "\"b\":{\"dtype\":\"F64\",\"shape\":[1],\"data_offsets\":[6,14]},"
                      "\"c\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[14,18]}}";
    size_t hn = strlen(hdr);
    if (hn % 2 == 0) hn++; /* the header may be padded with a space: force an odd data start */
    char *h = zl_xmalloc(hn + 1);
    memset(h, ' ', hn);
    memcpy(h, hdr, strlen(hdr));
    h[hn] = 0;
    size_t n;
    uint8_t *img = raw_image(UINT64_MAX, h, hn, 18, &n);
    uint8_t *data = img + 8 + hn;
    uint16_t bf[3] = {0x3f80, 0xc040, 0x4000}; /* 1, -3, 2 */
    double dv = -0.75;
    float fv = 6.5f;
    memcpy(data, bf, 6);
    memcpy(data + 6, &dv, 8);
    memcpy(data + 14, &fv, 4);
    char *p = tpath("misaligned.safetensors");
    CHECK(write_bytes(p, img, n) == 0);
    zl_st *st;
    CHECK_MSG(zl_st_open(p, &st) == 0, "%s", zl_last_error());
    CHECK(((uintptr_t)zl_st_find(st, "a")->data & 1) == 1);
    float *f = zl_st_read_f32(st, zl_st_find(st, "a"));
    CHECK(f && f[0] == 1.0f && f[1] == -3.0f && f[2] == 2.0f);
    free(f);
    f = zl_st_read_f32(st, zl_st_find(st, "b"));
    CHECK(f && f[0] == -0.75f);
    free(f);
    f = zl_st_read_f32(st, zl_st_find(st, "c"));
    CHECK(f && f[0] == 6.5f);
    free(f);
    zl_st_close(st);
    free(img);
    free(h);
    free(p);
}

/* ---------------------------------------------------------------- sharded sets */

static int write_shard(const char *path, const char *const *names, int n, float base, const char *meta_v) {
    zl_st_writer *w = zl_stw_new();
    for (int i = 0; i < n; i++) {
        float v[2] = {base + (float)i, base - (float)i};
        int64_t s[1] = {2};
        if (zl_stw_add_f32(w, names[i], 1, s, v, ZL_BF16)) { zl_stw_free(w); return -1; }
    }
    if (meta_v) zl_stw_meta(w, "origin", meta_v);
    int rc = zl_stw_write(w, path);
    zl_stw_free(w);
    return rc;
}

static const char *shard1_names[] = {"layers.0.attention.to_q.weight", "layers.0.attention.to_k.weight", "x_pad_token"};
static const char *shard2_names[] = {"layers.1.attention.to_q.weight", "cap_pad_token"};

/* Makes folder `name` with the two diffusers shards; with_index adds the index (valid when bad == 0,
 * 1 = references a missing shard, 2 = names the wrong shard for a tensor, 3 = lists an absent tensor). */
static char *make_sharded(const char *name, int with_index, int bad) {
    char *dir = tpath(name);
    mkdir(dir, 0755);
    char *s1 = zl_xasprintf("%s/diffusion_pytorch_model-00001-of-00002.safetensors", dir);
    char *s2 = zl_xasprintf("%s/diffusion_pytorch_model-00002-of-00002.safetensors", dir);
    write_shard(s1, shard1_names, 3, 1.0f, "shard1");
    write_shard(s2, shard2_names, 2, 10.0f, "shard2");
    if (with_index) {
        zl_buf b = {0};
        zl_buf_puts(&b, "{\"metadata\": {\"total_size\": 20}, \"weight_map\": {\n");
        for (int i = 0; i < 3; i++)
            zl_buf_printf(&b, "  \"%s\": \"diffusion_pytorch_model-00001-of-00002.safetensors\",\n", shard1_names[i]);
        const char *f2 = bad == 1 ? "diffusion_pytorch_model-00003-of-00003.safetensors"
                                  : "diffusion_pytorch_model-00002-of-00002.safetensors";
        zl_buf_printf(&b, "  \"%s\": \"%s\",\n", shard2_names[0], f2);
        zl_buf_printf(&b, "  \"%s\": \"%s\"", shard2_names[1],
                      bad == 2 ? "diffusion_pytorch_model-00001-of-00002.safetensors"
                               : "diffusion_pytorch_model-00002-of-00002.safetensors");
        if (bad == 3) zl_buf_puts(&b, ",\n  \"ghost.weight\": \"diffusion_pytorch_model-00002-of-00002.safetensors\"");
        zl_buf_puts(&b, "\n}}\n");
        char *ip = zl_xasprintf("%s/diffusion_pytorch_model.safetensors.index.json", dir);
        write_bytes(ip, b.s, b.len);
        free(ip);
        zl_buf_free(&b);
    }
    free(s1);
    free(s2);
    return dir;
}

static void check_sharded_set(int *zl_failed_, zl_st *st) {
    CHECK(zl_st_nshards(st) == 2);
    CHECK(zl_st_count(st) == 5);
    CHECK(strstr(zl_st_shard_path(st, 0), "00001-of-00002"));
    CHECK(strstr(zl_st_shard_path(st, 1), "00002-of-00002"));
    for (int i = 1; i < zl_st_count(st); i++) CHECK(strcmp(zl_st_tensor(st, i - 1)->name, zl_st_tensor(st, i)->name) < 0);
    const zl_tensor_info *t = zl_st_find(st, "cap_pad_token");
    CHECK(t && t->shard == 1 && t->dtype == ZL_BF16);
    float *f = zl_st_read_f32(st, t);
    CHECK(f && f[0] == 11.0f && f[1] == 9.0f);
    free(f);
    t = zl_st_find(st, "layers.0.attention.to_k.weight");
    CHECK(t && t->shard == 0);
    f = zl_st_read_f32(st, t);
    CHECK(f && f[0] == 2.0f && f[1] == 0.0f); /* second tensor of shard 1: {1 + 1, 1 - 1} */
    free(f);
    CHECK(zl_st_total_bytes(st) == 5 * 4);
    /* metadata: the first shard's value wins */
    CHECK(zl_st_meta_count(st) == 1 && strcmp(zl_st_meta_get(st, "origin"), "shard1") == 0);
}
#define CHECK_SET(st) do { check_sharded_set(zl_failed_, st); if (*zl_failed_) { zl_st_close(st); return; } } while (0)

TEST(safetensors_sharded_index) {
    char *dir = make_sharded("sharded-index", 1, 0);
    zl_st *st;
    /* by folder */
    CHECK_MSG(zl_st_open(dir, &st) == 0, "%s", zl_last_error());
    CHECK_SET(st);
    zl_st_close(st);
    /* by the index itself */
    char *ip = zl_xasprintf("%s/diffusion_pytorch_model.safetensors.index.json", dir);
    CHECK_MSG(zl_st_open(ip, &st) == 0, "%s", zl_last_error());
    CHECK_SET(st);
    CHECK(strcmp(zl_st_path(st), ip) == 0);
    zl_st_close(st);
    /* a single shard opened alone is just a file */
    char *s2 = zl_xasprintf("%s/diffusion_pytorch_model-00002-of-00002.safetensors", dir);
    CHECK(zl_st_open(s2, &st) == 0);
    CHECK(zl_st_nshards(st) == 1 && zl_st_count(st) == 2);
    zl_st_close(st);
    free(s2);
    free(ip);
    free(dir);
}

TEST(safetensors_sharded_folder_without_index) {
    char *dir = make_sharded("sharded-noindex", 0, 0);
    /* files that are not safetensors are ignored */
    char *junk = zl_xasprintf("%s/config.json", dir);
    write_bytes(junk, "{}", 2);
    zl_st *st;
    CHECK_MSG(zl_st_open(dir, &st) == 0, "%s", zl_last_error());
    CHECK_SET(st);
    zl_st_close(st);
    /* an empty folder */
    char *empty = tpath("empty-folder");
    mkdir(empty, 0755);
    CHECK(zl_st_open(empty, &st) == -1 && st == NULL);
    CHECK(strstr(zl_last_error(), "no .safetensors files"));
    free(empty);
    free(junk);
    free(dir);
}

TEST(safetensors_sharded_bad_index) {
    zl_st *st;
    char *dir = make_sharded("sharded-missing", 1, 1);
    CHECK(zl_st_open(dir, &st) == -1 && st == NULL);
    CHECK_MSG(strstr(zl_last_error(), "missing") && strstr(zl_last_error(), "00003-of-00003"), "%s", zl_last_error());
    free(dir);

    dir = make_sharded("sharded-wrong", 1, 2);
    CHECK(zl_st_open(dir, &st) == -1);
    CHECK_MSG(strstr(zl_last_error(), "cap_pad_token") && strstr(zl_last_error(), "found in"), "%s", zl_last_error());
    free(dir);

    dir = make_sharded("sharded-ghost", 1, 3);
    CHECK(zl_st_open(dir, &st) == -1);
    CHECK_MSG(strstr(zl_last_error(), "ghost.weight") && strstr(zl_last_error(), "missing"), "%s", zl_last_error());
    free(dir);

    /* index files that are not indexes */
    const char *bad_idx[][2] = {
        {"{\"weight_map\": [1]}", "weight_map"},
        {"not json", "not valid JSON"},
        {"{\"weight_map\": {\"a\": \"../x.safetensors\"}}", "not a plain file name"},
        {"{\"weight_map\": {\"a\": 5}}", "not a plain file name"},
        {"{\"weight_map\": {\"a\": \"\xff.safetensors\"}}", "UTF-8"},
    };
    for (size_t i = 0; i < sizeof bad_idx / sizeof *bad_idx; i++) {
        char *ip = zl_xasprintf("%s/bad%zu.safetensors.index.json", zl_test_dir(), i);
        CHECK(write_bytes(ip, bad_idx[i][0], strlen(bad_idx[i][0])) == 0);
        CHECK(zl_st_open(ip, &st) == -1 && st == NULL);
        CHECK_MSG(strstr(zl_last_error(), bad_idx[i][1]) && strstr(zl_last_error(), ip), "%s", zl_last_error());
        free(ip);
    }
}

TEST(safetensors_sharded_duplicate_tensor) {
    char *dir = tpath("sharded-dup");
    mkdir(dir, 0755);
    char *s1 = zl_xasprintf("%s/model-00001-of-00002.safetensors", dir);
    char *s2 = zl_xasprintf("%s/model-00002-of-00002.safetensors", dir);
    const char *a[] = {"shared.weight", "a.weight"}, *b[] = {"b.weight", "shared.weight"};
    CHECK(write_shard(s1, a, 2, 0.0f, NULL) == 0);
    CHECK(write_shard(s2, b, 2, 0.0f, NULL) == 0);
    zl_st *st;
    CHECK(zl_st_open(dir, &st) == -1 && st == NULL);
    CHECK_MSG(strstr(zl_last_error(), "shared.weight") && strstr(zl_last_error(), "twice") &&
              strstr(zl_last_error(), "00001") && strstr(zl_last_error(), "00002"), "%s", zl_last_error());
    /* the same through an index that lists both shards */
    char *ip = zl_xasprintf("%s/model.safetensors.index.json", dir);
    const char *idx = "{\"weight_map\":{\"a.weight\":\"model-00001-of-00002.safetensors\","
                      "\"b.weight\":\"model-00002-of-00002.safetensors\","
                      "\"shared.weight\":\"model-00001-of-00002.safetensors\"}}";
    CHECK(write_bytes(ip, idx, strlen(idx)) == 0);
    CHECK(zl_st_open(ip, &st) == -1);
    CHECK_MSG(strstr(zl_last_error(), "shared.weight") && strstr(zl_last_error(), "twice"), "%s", zl_last_error());
    free(ip);
    free(s1);
    free(s2);
    free(dir);
}

/* ---------------------------------------------------------------- atomic writes */

TEST(safetensors_atomic_write) {
    char *dir = tpath("atomic");
    mkdir(dir, 0755);
    char *p = zl_xasprintf("%s/out.safetensors", dir);
    float v1[4] = {1, 2, 3, 4}, v2[2] = {9, 8};
    int64_t s4[1] = {4}, s2[1] = {2};
    zl_st_writer *w = zl_stw_new();
    CHECK(zl_stw_add_f32(w, "first", 1, s4, v1, ZL_F32) == 0);
    CHECK(zl_stw_write(w, p) == 0);
    zl_stw_free(w);
    CHECK(count_tmp_files(dir) == 0);

    zl_st *old;
    CHECK(zl_st_open(p, &old) == 0);
    /* overwrite while the old version is still mapped: the rename leaves the old mapping intact */
    w = zl_stw_new();
    CHECK(zl_stw_add_f32(w, "second", 1, s2, v2, ZL_F32) == 0);
    zl_stw_meta(w, "v", "2");
    CHECK(zl_stw_write(w, p) == 0);
    zl_stw_free(w);
    CHECK(count_tmp_files(dir) == 0);
    const zl_tensor_info *t = zl_st_find(old, "first");
    CHECK(t && memcmp(t->data, v1, sizeof v1) == 0);
    zl_st_close(old);

    zl_st *st;
    CHECK(zl_st_open(p, &st) == 0);
    CHECK(zl_st_count(st) == 1 && zl_st_find(st, "second") && !zl_st_find(st, "first"));
    CHECK(strcmp(zl_st_meta_get(st, "v"), "2") == 0);
    zl_st_close(st);

    /* a write that cannot happen fails cleanly and leaves nothing behind */
    char *bad = zl_xasprintf("%s/no-such-dir/out.safetensors", dir);
    w = zl_stw_new();
    CHECK(zl_stw_add_f32(w, "x", 1, s2, v2, ZL_F32) == 0);
    CHECK(zl_stw_write(w, bad) == -1);
    CHECK(strstr(zl_last_error(), "cannot create"));
    zl_stw_free(w);
    CHECK(count_tmp_files(dir) == 0);
    free(bad);
    free(p);
    free(dir);
}

/* ---------------------------------------------------------------- malformed files */

#define T1 "{\"t\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}"

TEST(safetensors_bad_sizes) {
    /* sanity: the good base case opens */
    size_t n;
    uint8_t *img = raw_image(UINT64_MAX, T1, (size_t)-1, 8, &n);
    zl_st *st;
    CHECK(zl_st_open_buffer(img, n, "ok", &st) == 0);
    CHECK(zl_st_count(st) == 1);
    zl_st_close(st);

    CHECK(expect_bad_image("empty", img, 0, "file is empty") == 0);
    CHECK(expect_bad_image("short", img, 5, "only 5 bytes") == 0);
    CHECK(expect_bad_image("lenonly", img, 8, "runs past the end") == 0);
    free(img);

    img = raw_image(strlen(T1) + 1, T1, (size_t)-1, 0, &n); /* one byte more than there is */
    CHECK(expect_bad_image("past-end", img, n, "runs past the end") == 0);
    free(img);
    img = raw_image(200ull << 20, T1, (size_t)-1, 8, &n);
    CHECK(expect_bad_image("huge-claim", img, n, "100 MB") == 0);
    free(img);
    img = raw_image(UINT64_MAX - 1, T1, (size_t)-1, 8, &n);
    CHECK(expect_bad_image("u64max-claim", img, n, "100 MB") == 0);
    free(img);
    img = raw_image(1, T1, (size_t)-1, 8, &n);
    CHECK(expect_bad_image("tiny-claim", img, n, "too small") == 0);
    free(img);
    img = raw_image(0, T1, (size_t)-1, 8, &n);
    CHECK(expect_bad_image("zero-claim", img, n, "too small") == 0);
    free(img);
    /* a text file given as safetensors (a checkpoints/latest pointer, a JSON config, an HTML error page) */
    static const char txt[] = "step_000500\n";
    CHECK(expect_bad_image("text-file", (const uint8_t *)txt, sizeof txt - 1, "starts with text (\"step_000\")") == 0);
    /* a truncated download: the header is intact but the data is cut short */
    img = raw_image(UINT64_MAX, T1, (size_t)-1, 5, &n);
    CHECK(expect_bad_image("truncated-data", img, n, "outside the data area") == 0);
    free(img);
}

TEST(safetensors_bad_header_text) {
    CHECK(expect_bad("not-json", "{\"t\": nope}", 0, "not valid JSON") == 0);
    CHECK(expect_bad("unterminated", "{\"t\":{\"dtype\":\"F32\"", 0, "not valid JSON") == 0);
    CHECK(expect_bad("trailing", "{} x", 0, "trailing bytes") == 0);
    CHECK(expect_bad("non-utf8", "{\"t\xff\":{}}", 0, "UTF-8") == 0);
    CHECK(expect_bad("overlong-utf8", "{\"\xc0\xaf\":1}", 0, "UTF-8") == 0);
    CHECK(expect_bad("array", "[1,2,3]", 0, "not a JSON object") == 0);
    CHECK(expect_bad("string", "\"abc\"", 0, "not a JSON object") == 0);
    CHECK(expect_bad("number", "42", 0, "not a JSON object") == 0);
    /* NUL bytes inside the header (raw, not escaped) */
    static const char nul_hdr[] = "{\"t\":{\"dtype\":\"F32\"\0,\"shape\":[2],\"data_offsets\":[0,8]}}";
    size_t n;
    uint8_t *img = raw_image(UINT64_MAX, nul_hdr, sizeof nul_hdr - 1, 8, &n);
    CHECK(expect_bad_image("nul", img, n, "NUL") == 0);
    free(img);
    /* a header of only NULs, as left by a preallocated, never-written file */
    char zeros[64] = {0};
    img = raw_image(UINT64_MAX, zeros, sizeof zeros, 0, &n);
    CHECK(expect_bad_image("zeros", img, n, "NUL") == 0);
    free(img);
    /* deep nesting must not overflow the stack (cJSON stops at 1000 levels) */
    static char deep[6100];
    strcpy(deep, "{\"a\":");
    for (int i = 0; i < 3000; i++) { deep[5 + i] = '['; deep[3005 + i] = ']'; }
    strcpy(deep + 6005, "}");
    CHECK(expect_bad("deep", deep, 0, "not valid JSON") == 0);
}

TEST(safetensors_bad_entries) {
    CHECK(expect_bad("unknown-dtype", "{\"t\":{\"dtype\":\"F12\",\"shape\":[2],\"data_offsets\":[0,8]}}", 8,
                     "unknown dtype \"F12\"") == 0);
    CHECK(expect_bad("lower-dtype", "{\"t\":{\"dtype\":\"f32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 8,
                     "unknown dtype") == 0);
    CHECK(expect_bad("dtype-number", "{\"t\":{\"dtype\":4,\"shape\":[2],\"data_offsets\":[0,8]}}", 8,
                     "needs dtype") == 0);
    CHECK(expect_bad("no-shape", "{\"t\":{\"dtype\":\"F32\",\"data_offsets\":[0,8]}}", 8, "needs dtype") == 0);
    CHECK(expect_bad("no-offsets", "{\"t\":{\"dtype\":\"F32\",\"shape\":[2]}}", 8, "needs dtype") == 0);
    CHECK(expect_bad("entry-not-object", "{\"t\":[1,2]}", 8, "not an object") == 0);
    CHECK(expect_bad("size-mismatch", "{\"t\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,8]}}", 12,
                     "data_offsets span 8") == 0);
    CHECK(expect_bad("size-mismatch-bf16", "{\"t\":{\"dtype\":\"BF16\",\"shape\":[2,2],\"data_offsets\":[0,16]}}", 16,
                     "8 bytes but data_offsets span 16") == 0);
    CHECK(expect_bad("out-of-range", "{\"t\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[8,16]}}", 12,
                     "outside the data area") == 0);
    CHECK(expect_bad("far-out-of-range",
                     "{\"t\":{\"dtype\":\"U8\",\"shape\":[8],\"data_offsets\":[9007199254740000,9007199254740008]}}", 8,
                     "outside the data area") == 0);
    CHECK(expect_bad("end-before-begin", "{\"t\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[8,0]}}", 8,
                     "before begin") == 0);
    CHECK(expect_bad("offsets-three", "{\"t\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,4,8]}}", 8,
                     "two non-negative integers") == 0);
    CHECK(expect_bad("offsets-negative", "{\"t\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[-8,0]}}", 8,
                     "two non-negative integers") == 0);
    CHECK(expect_bad("offsets-float", "{\"t\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8.5]}}", 8,
                     "two non-negative integers") == 0);
    CHECK(expect_bad("overlap",
                     "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                     "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}", 12, "overlap") == 0);
    CHECK(expect_bad("overlap-contained",
                     "{\"a\":{\"dtype\":\"U8\",\"shape\":[16],\"data_offsets\":[0,16]},"
                     "\"b\":{\"dtype\":\"U8\",\"shape\":[2],\"data_offsets\":[20,22]},"
                     "\"c\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[4,8]}}", 24, "overlap") == 0);
    CHECK(expect_bad("same-range",
                     "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                     "\"b\":{\"dtype\":\"I32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 8, "overlap") == 0);
    CHECK(expect_bad("duplicate-key",
                     "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
                     "\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}", 8, "duplicate tensor name \"a\"") == 0);
    CHECK(expect_bad("duplicate-key-escaped", /* the same name spelled with an escape */
                     "{\"ab\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
                     "\"a\\u0062\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}", 8, "duplicate tensor name") == 0);
    CHECK(expect_bad("shape-float", "{\"t\":{\"dtype\":\"F32\",\"shape\":[2.5],\"data_offsets\":[0,8]}}", 8,
                     "shape entry is not a non-negative integer") == 0);
    CHECK(expect_bad("shape-negative", "{\"t\":{\"dtype\":\"F32\",\"shape\":[-2],\"data_offsets\":[0,8]}}", 8,
                     "shape entry is not a non-negative integer") == 0);
    CHECK(expect_bad("shape-string", "{\"t\":{\"dtype\":\"F32\",\"shape\":[\"2\"],\"data_offsets\":[0,8]}}", 8,
                     "shape entry is not a non-negative integer") == 0);
    CHECK(expect_bad("shape-huge-float", "{\"t\":{\"dtype\":\"F32\",\"shape\":[1e300],\"data_offsets\":[0,8]}}", 8,
                     "shape entry is not a non-negative integer") == 0);
    CHECK(expect_bad("shape-overflow",
                     "{\"t\":{\"dtype\":\"F64\",\"shape\":[4294967296,4294967296,16],\"data_offsets\":[0,8]}}", 8,
                     "absurdly large") == 0);
    CHECK(expect_bad("shape-not-array", "{\"t\":{\"dtype\":\"F32\",\"shape\":2,\"data_offsets\":[0,8]}}", 8,
                     "needs dtype") == 0);
    CHECK(expect_bad("rank-9", "{\"t\":{\"dtype\":\"F32\",\"shape\":[1,1,1,1,1,1,1,1,2],\"data_offsets\":[0,8]}}", 8,
                     "9 dimensions") == 0);
}

TEST(safetensors_bad_metadata) {
    CHECK(expect_bad("meta-int", "{\"__metadata__\":{\"a\":\"x\",\"b\":1}}", 0, "value of \"b\" is not a string") == 0);
    CHECK(expect_bad("meta-nested", "{\"__metadata__\":{\"a\":{\"x\":\"y\"}}}", 0, "is not a string") == 0);
    CHECK(expect_bad("meta-null", "{\"__metadata__\":{\"a\":null}}", 0, "is not a string") == 0);
    CHECK(expect_bad("meta-array", "{\"__metadata__\":[\"a\",\"b\"]}", 0, "__metadata__ is not an object") == 0);
    CHECK(expect_bad("meta-string", "{\"__metadata__\":\"a\"}", 0, "__metadata__ is not an object") == 0);
    CHECK(expect_bad("meta-dup-key", "{\"__metadata__\":{\"k\":\"1\",\"j\":\"0\",\"k\":\"2\"}}", 0,
                     "duplicate __metadata__ key \"k\"") == 0);
    CHECK(expect_bad("meta-twice", "{\"__metadata__\":{\"a\":\"1\"},\"__metadata__\":{\"b\":\"2\"}}", 0,
                     "duplicate key \"__metadata__\"") == 0);
    /* a valid metadata-only file, with escapes, opens */
    size_t n;
    uint8_t *img = raw_image(UINT64_MAX, "{\"__metadata__\":{\"k\\n\":\"v\\u00e9\\t\\\"\"}}  ", (size_t)-1, 0, &n);
    zl_st *st;
    CHECK(zl_st_open_buffer(img, n, "meta", &st) == 0);
    CHECK(zl_st_count(st) == 0 && zl_st_meta_count(st) == 1);
    CHECK(strcmp(zl_st_meta_get(st, "k\n"), "v\xc3\xa9\t\"") == 0);
    zl_st_close(st);
    free(img);
}

TEST(safetensors_accepts_edge_cases) {
    /* things the format allows: empty tensors sharing an offset, zero-size dims beside huge ones,
     * unknown extra fields, whitespace padding, data bytes beyond the last tensor */
    const char *hdr = "{\"e1\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[4,4]},"
                      "\"e2\":{\"dtype\":\"BF16\",\"shape\":[9007199254740991,0],\"data_offsets\":[4,4]},"
                      "\"s\":{\"dtype\":\"BOOL\",\"shape\":[],\"data_offsets\":[3,4]},"
                      "\"x\":{\"dtype\":\"U8\",\"shape\":[3],\"data_offsets\":[0,3],\"extra\":true}}    \n";
    size_t n;
    uint8_t *img = raw_image(UINT64_MAX, hdr, (size_t)-1, 10, &n);
    zl_st *st;
    CHECK_MSG(zl_st_open_buffer(img, n, "edge", &st) == 0, "%s", zl_last_error());
    CHECK(zl_st_count(st) == 4);
    const zl_tensor_info *t = zl_st_find(st, "e2");
    CHECK(t && t->nelem == 0 && t->nbytes == 0 && t->shape[0] == 9007199254740991ll);
    t = zl_st_find(st, "s");
    CHECK(t && t->ndim == 0 && t->nelem == 1 && *(const uint8_t *)t->data == 3);
    t = zl_st_find(st, "x");
    CHECK(t && ((const uint8_t *)t->data)[2] == 2);
    zl_st_close(st);
    free(img);
}

TEST(safetensors_open_errors) {
    zl_st *st = (zl_st *)1;
    char *p = tpath("does-not-exist.safetensors");
    CHECK(zl_st_open(p, &st) == -1 && st == NULL);
    CHECK(strstr(zl_last_error(), "cannot open") && strstr(zl_last_error(), p));
    free(p);
    /* every prefix of a valid file is rejected without crashing */
    float v[6] = {1, 2, 3, 4, 5, 6};
    int64_t s[2] = {2, 3};
    zl_st_writer *w = zl_stw_new();
    CHECK(zl_stw_add_f32(w, "a", 2, s, v, ZL_F32) == 0);
    CHECK(zl_stw_add_f32(w, "b", 2, s, v, ZL_BF16) == 0);
    zl_stw_meta(w, "m", "x");
    p = tpath("prefixes.safetensors");
    CHECK(zl_stw_write(w, p) == 0);
    zl_stw_free(w);
    size_t n;
    char *img = read_bytes(p, &n);
    for (size_t k = 0; k < n; k++) {
        char *c = zl_xmalloc(k ? k : 1);
        memcpy(c, img, k);
        CHECK_MSG(zl_st_open_buffer(c, k, "prefix", &st) == -1, "prefix of %zu bytes accepted", k);
        free(c);
    }
    CHECK(zl_st_open_buffer(img, n, "whole", &st) == 0);
    zl_st_close(st);
    free(img);
    free(p);
}
