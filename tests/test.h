/* test.h — a tiny test harness: TEST(name) { ... CHECK(cond); CHECK_NEAR(a,b,tol); } registers a test.
 * The runner (tests/test_main.c) runs all (or those whose name contains argv[1]) and ends with the
 * line "N passed, N failed" that CI reads. A failed CHECK marks the test failed and returns from it. */
#ifndef ZL_TEST_H
#define ZL_TEST_H
#include <math.h>
#include <stdio.h>

typedef void (*zl_test_fn)(int *failed);
void zl_test_register(const char *name, zl_test_fn fn);

#define TEST(name)                                                                      \
    static void test_##name(int *zl_failed_);                                         \
    __attribute__((constructor)) static void reg_##name(void) { zl_test_register(#name, test_##name); } \
    static void test_##name(int *zl_failed_)

#define CHECK(cond)                                                                     \
    do {                                                                                \
        if (!(cond)) {                                                                  \
            fprintf(stderr, "  %s:%d: CHECK(%s) failed\n", __FILE__, __LINE__, #cond);  \
            *zl_failed_ = 1;                                                            \
            return;                                                                     \
        }                                                                               \
    } while (0)

#define CHECK_MSG(cond, ...)                                                            \
    do {                                                                                \
        if (!(cond)) {                                                                  \
            fprintf(stderr, "  %s:%d: CHECK(%s) failed: ", __FILE__, __LINE__, #cond);  \
            fprintf(stderr, __VA_ARGS__);                                               \
            fputc('\n', stderr);                                                        \
            *zl_failed_ = 1;                                                            \
            return;                                                                     \
        }                                                                               \
    } while (0)

#define CHECK_NEAR(a, b, tol)                                                           \
    do {                                                                                \
        double a_ = (a), b_ = (b);                                                      \
        if (!(fabs(a_ - b_) <= (tol))) {                                                \
            fprintf(stderr, "  %s:%d: %s = %.9g, expected %s = %.9g (tol %g)\n", __FILE__, \
                    __LINE__, #a, a_, #b, b_, (double)(tol));                           \
            *zl_failed_ = 1;                                                            \
            return;                                                                     \
        }                                                                               \
    } while (0)

/* Scratch directory for files a test writes (created by the runner, one per run). */
const char *zl_test_dir(void);
/* Path to the zlora binary under test (env ZLORA, default ./zlora). */
const char *zl_test_bin(void);
/* Relative L2 distance between y [n] and float tensor `tensor` of the safetensors file `path`
 * (1e9 when the file or tensor is missing or has another size). */
#include <stddef.h>
double zl_test_golden_rel_l2(const float *y, const char *path, const char *tensor, size_t n);
/* Runs a shell command, capturing stdout into *out (malloc'd, may be NULL) and returning the exit code. */
int zl_test_run(const char *cmd, char **out);
/* The whole file, 0-terminated (malloc'd; NULL if it cannot be read); its length in *len when len is given. */
char *zl_test_slurp(const char *path, size_t *len);
/* The file parsed as JSON (cJSON_Delete it); NULL if it cannot be read or parsed. */
struct cJSON *zl_test_read_json(const char *path);

/* End-to-end model folders (tests/tiny_model.c): a diffusers-layout Z-Image folder at dir made of the tiny
 * test models (DiT, Qwen3 and VAE tiny_a, the tokenizer cut to 1000 ids) with the given scheduler shift;
 * and one such folder in the scratch directory, made once (NULL on failure). */
int zl_test_make_tiny_model(const char *dir, double shift);
const char *zl_test_tiny_model(void);

#endif
