/* base.h — errors, logging, memory and small string helpers shared by every zlora module.
 *
 * Contract: library functions return 0 (or a valid pointer) on success and -1 (or NULL) on failure,
 * leaving a human-readable message in a thread-local buffer read with zl_last_error(). Nothing in the
 * library aborts on bad input; only allocation failure of tiny bookkeeping structures is fatal
 * (zl_xmalloc), because no sensible recovery exists there.
 */
#ifndef ZL_BASE_H
#define ZL_BASE_H

#include <stddef.h>
#include <stdint.h>
#include <stdarg.h>

#define ZL_VERSION "0.1.0"

#if defined(__GNUC__)
#define ZL_PRINTF(a, b) __attribute__((format(printf, a, b)))
#else
#define ZL_PRINTF(a, b)
#endif

/* Sets the thread's error message (printf-style) and returns -1, so `return zl_err(...)` reads well. */
int zl_err(const char *fmt, ...) ZL_PRINTF(1, 2);
/* Prepends "prefix: " to the current message (used to add the file name on the way up). */
int zl_err_prefix(const char *fmt, ...) ZL_PRINTF(1, 2);
const char *zl_last_error(void);
void zl_clear_error(void);

/* Logging to stderr. Level: 0 quiet, 1 normal (default), 2 verbose. */
extern int zl_log_level;
void zl_info(const char *fmt, ...) ZL_PRINTF(1, 2);
void zl_warn(const char *fmt, ...) ZL_PRINTF(1, 2);
void zl_debug(const char *fmt, ...) ZL_PRINTF(1, 2);

/* Memory: zl_x* die with a message on out-of-memory for small allocations. For big buffers whose
 * size comes from user data use zl_try_malloc, which returns NULL and sets the error instead. */
void *zl_xmalloc(size_t n);
void *zl_xcalloc(size_t n, size_t sz);
void *zl_xrealloc(void *p, size_t n);
char *zl_xstrdup(const char *s);
void *zl_try_malloc(size_t n);
void *zl_try_calloc(size_t n, size_t sz);

/* Strings. */
int zl_starts_with(const char *s, const char *prefix);
int zl_ends_with(const char *s, const char *suffix);
char *zl_xasprintf(const char *fmt, ...) ZL_PRINTF(1, 2);
/* Growable string buffer. */
typedef struct { char *s; size_t len, cap; } zl_buf;
void zl_buf_printf(zl_buf *b, const char *fmt, ...) ZL_PRINTF(2, 3);
void zl_buf_puts(zl_buf *b, const char *s);
void zl_buf_json_string(zl_buf *b, const char *s); /* appends a quoted, escaped JSON string */
void zl_buf_free(zl_buf *b);

/* Checked size arithmetic: returns -1 on overflow. */
int zl_mul_size(size_t a, size_t b, size_t *out);

/* Files. zl_write_atomic writes to "<path>.tmp.<pid>" then fsyncs and renames over path. */
int zl_write_atomic(const char *path, const void *const *parts, const size_t *sizes, int nparts);
int zl_file_exists(const char *path);
/* Memory-mapped file pages: drop the whole pages inside [p, p+n) (MADV_DONTNEED: done with them), or
 * ask the kernel to read the pages covering [p, p+n) ahead (MADV_WILLNEED). Advisory; never fail. */
void zl_pages_release(const void *p, size_t n);
void zl_pages_willneed(const void *p, size_t n);
int zl_is_dir(const char *path);
/* Short content hash (FNV-1a 64 over bytes), used for provenance. */
uint64_t zl_hash64(const void *data, size_t n, uint64_t h);

/* UTF-8 validation: 1 if the n bytes are valid UTF-8 (no overlongs, no surrogates), else 0. */
int zl_utf8_valid(const char *s, size_t n);

/* Deterministic RNG (splitmix64 / xoshiro-free, small): for tests and random projections. */
typedef struct { uint64_t s; } zl_rng;
uint64_t zl_rng_next(zl_rng *r);
float zl_rng_uniform(zl_rng *r);   /* [0,1) */
float zl_rng_normal(zl_rng *r);    /* standard normal (Box-Muller) */

double zl_now(void); /* monotonic seconds */

#endif
