/* test_te_cache.c — the caption-feature cache: hits return exactly what was stored, other prompts and
 * other encoders miss, corrupt entries are errors, and the identity changes with the weights. */
#include "test.h"
#include "base/base.h"
#include "model/te_cache.h"

#include <stdlib.h>
#include <string.h>

#define QDATA "tests/data/qwen3"

TEST(te_cache_roundtrip_and_misses) {
    char dir[512];
    snprintf(dir, sizeof dir, "%s/tecache", zl_test_dir());
    const char *id = "qwen3:test-encoder-1";
    float cap[3 * 4];
    int32_t ids[3] = {151644, 872, 198};
    for (int i = 0; i < 12; i++) cap[i] = 0.25f * (float)i - 1.0f;
    float *c = NULL;
    int32_t *d = NULL;
    int L = 0, H = 0;
    CHECK(zl_te_cache_load(dir, id, "a cat", &c, &d, &L, &H) == 0); /* empty: miss */
    CHECK(zl_te_cache_store(dir, id, "a cat", cap, ids, 3, 4) == 0);
    CHECK(zl_te_cache_load(dir, id, "a cat", &c, &d, &L, &H) == 1);
    CHECK(L == 3 && H == 4 && memcmp(c, cap, sizeof cap) == 0 && memcmp(d, ids, sizeof ids) == 0);
    free(c); free(d);
    CHECK(zl_te_cache_load(dir, id, "a dog", &c, &d, &L, &H) == 0);
    CHECK(zl_te_cache_load(dir, "qwen3:another-encoder", "a cat", &c, &d, &L, &H) == 0);
    CHECK(zl_te_cache_load(dir, id, "a cat ", &c, &d, &L, &H) == 0); /* the prompt is taken exactly */
    /* a corrupt entry is an error that names the file */
    char cmd[1200];
    snprintf(cmd, sizeof cmd, "for f in %s/*.safetensors; do head -c 20 \"$f\" > \"$f.x\" && mv \"$f.x\" \"$f\"; done", dir);
    CHECK(system(cmd) == 0);
    CHECK(zl_te_cache_load(dir, id, "a cat", &c, &d, &L, &H) == -1);
    CHECK_MSG(strstr(zl_last_error(), dir), "%s", zl_last_error());
}

TEST(te_cache_identity_follows_the_weights) {
    char *a = zl_te_identity(QDATA "/tiny_a");
    char *b = zl_te_identity(QDATA "/tiny_b");
    CHECK_MSG(a && b, "run `make zimage-weights` (it also makes the qwen3 test weights): %s", zl_last_error());
    char *a2 = zl_te_identity(QDATA "/tiny_a/text_encoder");
    CHECK(strcmp(a, b) != 0 && strcmp(a, a2) == 0);
    /* one changed weight byte near the start of a tensor changes the identity */
    char src[256], cp[512], cmd[1400];
    snprintf(src, sizeof src, QDATA "/tiny_b/model_bare.safetensors");
    snprintf(cp, sizeof cp, "%s/bare_copy.safetensors", zl_test_dir());
    snprintf(cmd, sizeof cmd, "cp %s %s", src, cp);
    CHECK(system(cmd) == 0);
    char *x = zl_te_identity(cp);
    size_t hdr = 0;
    unsigned char l8[8];
    FILE *f = fopen(cp, "rb");
    CHECK(f && fread(l8, 1, 8, f) == 8);
    fclose(f);
    for (int i = 7; i >= 0; i--) hdr = hdr * 256 + l8[i];
    f = fopen(cp, "r+b");
    CHECK(f);
    fseek(f, (long)(8 + hdr), SEEK_SET); /* first byte of the data area */
    int ch = fgetc(f);
    fseek(f, (long)(8 + hdr), SEEK_SET);
    fputc(ch ^ 0x55, f);
    fclose(f);
    char *y = zl_te_identity(cp);
    CHECK(x && y && strcmp(x, y) != 0);
    free(a); free(b); free(a2); free(x); free(y);
}
