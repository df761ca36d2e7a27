/* test_main.c — the runner for tests registered with TEST(). Usage: test_zlora [filter] */

#include "test.h"
#include "io/safetensors.h"
#include <cjson/cJSON.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

typedef struct { const char *name; zl_test_fn fn; } entry;
static entry tests[1024];
static int ntests;
static char tmpdir[512];

void zl_test_register(const char *name, zl_test_fn fn) {
    if (ntests < 1024) tests[ntests++] = (entry){name, fn};
}
const char *zl_test_dir(void) { return tmpdir; }
const char *zl_test_bin(void) { const char *b = getenv("ZLORA"); return b && *b ? b : "./zlora"; }

char *zl_test_slurp(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    rewind(f);
    char *b = n >= 0 ? malloc((size_t)n + 1) : NULL;
    size_t got = b ? fread(b, 1, (size_t)n, f) : 0;
    fclose(f);
    if (b) b[got] = 0;
    if (len) *len = got;
    return b;
}

cJSON *zl_test_read_json(const char *path) {
    char *s = zl_test_slurp(path, NULL);
    cJSON *j = s ? cJSON_Parse(s) : NULL;
    free(s);
    return j;
}

int zl_test_run(const char *cmd, char **out) {
    FILE *p = popen(cmd, "r");
    if (!p) return -1;
    size_t cap = 4096, len = 0;
    char *b = malloc(cap);
    size_t r;
    while ((r = fread(b + len, 1, cap - len - 1, p)) > 0) {
        len += r;
        if (len + 1 == cap) { cap *= 2; b = realloc(b, cap); }
    }
    b[len] = 0;
    int st = pclose(p);
    if (out) *out = b; else free(b);
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128;
}

double zl_test_golden_rel_l2(const float *y, const char *path, const char *tensor, size_t n) {
    zl_st *st;
    if (zl_st_open(path, &st)) return 1e9;
    const zl_tensor_info *t = zl_st_find(st, tensor);
    double e = 1e9;
    if (t && t->nelem == n) {
        float *g = zl_st_read_f32(st, t);
        double num = 0, den = 0;
        for (size_t i = 0; g && i < n; i++) { double d = (double)y[i] - g[i]; num += d * d; den += (double)g[i] * g[i]; }
        if (g) e = sqrt(num / (den > 0 ? den : 1));
        free(g);
    }
    zl_st_close(st);
    return e;
}

static int cmp(const void *a, const void *b) { return strcmp(((const entry *)a)->name, ((const entry *)b)->name); }

int main(int argc, char **argv) {
    const char *filter = argc > 1 ? argv[1] : NULL;
    const char *base = getenv("ZL_TEST_TMP");
    snprintf(tmpdir, sizeof tmpdir, "%s/zlora-test-XXXXXX", base && *base ? base : "/tmp");
    if (!mkdtemp(tmpdir)) { perror("mkdtemp"); return 2; }
    qsort(tests, (size_t)ntests, sizeof(entry), cmp);
    int passed = 0, failed = 0;
    for (int i = 0; i < ntests; i++) {
        if (filter && !strstr(tests[i].name, filter)) continue;
        int f = 0;
        fprintf(stderr, "test %-48s ", tests[i].name);
        fflush(stderr);
        tests[i].fn(&f);
        fprintf(stderr, "%s\n", f ? "FAIL" : "ok");
        if (f) failed++; else passed++;
    }
    if (!getenv("ZL_KEEP_TMP")) {
        char cmd[600];
        snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
        if (system(cmd)) {}
    }
    printf("%d passed, %d failed\n", passed, failed);
    return failed ? 1 : 0;
}
