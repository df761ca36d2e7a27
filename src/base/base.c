/* base.c — see base.h. */

#include "base.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static _Thread_local char g_err[2048];
int zl_log_level = 1;

int zl_err(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(g_err, sizeof g_err, fmt, ap);
    va_end(ap);
    return -1;
}

int zl_err_prefix(const char *fmt, ...) {
    char pre[1024], old[sizeof g_err];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(pre, sizeof pre, fmt, ap);
    va_end(ap);
    memcpy(old, g_err, sizeof old);
    size_t n = strlen(pre);
    if (n > sizeof g_err - 3) n = sizeof g_err - 3;
    memcpy(g_err, pre, n);
    memcpy(g_err + n, ": ", 2);
    size_t m = strlen(old);
    if (m > sizeof g_err - n - 3) m = sizeof g_err - n - 3;
    memcpy(g_err + n + 2, old, m);
    g_err[n + 2 + m] = 0;
    return -1;
}

const char *zl_last_error(void) { return g_err[0] ? g_err : "unknown error"; }
void zl_clear_error(void) { g_err[0] = 0; }

static void vlog(const char *tag, const char *fmt, va_list ap) {
    if (tag) fputs(tag, stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
}
void zl_info(const char *fmt, ...) {
    if (zl_log_level < 1) return;
    va_list ap; va_start(ap, fmt); vlog(NULL, fmt, ap); va_end(ap);
}
void zl_warn(const char *fmt, ...) {
    va_list ap; va_start(ap, fmt); vlog("warning: ", fmt, ap); va_end(ap);
}
void zl_debug(const char *fmt, ...) {
    if (zl_log_level < 2) return;
    va_list ap; va_start(ap, fmt); vlog("debug: ", fmt, ap); va_end(ap);
}

static void oom(size_t n) {
    fprintf(stderr, "error: out of memory allocating %zu bytes\n", n);
    exit(3);
}
void *zl_xmalloc(size_t n) { void *p = malloc(n ? n : 1); if (!p) oom(n); return p; }
void *zl_xcalloc(size_t n, size_t sz) { void *p = calloc(n ? n : 1, sz ? sz : 1); if (!p) oom(n * sz); return p; }
void *zl_xrealloc(void *p, size_t n) { void *q = realloc(p, n ? n : 1); if (!q) oom(n); return q; }
char *zl_xstrdup(const char *s) { size_t n = strlen(s) + 1; char *d = zl_xmalloc(n); memcpy(d, s, n); return d; }
void *zl_try_malloc(size_t n) {
    void *p = malloc(n ? n : 1);
    if (!p) zl_err("out of memory (%zu bytes)", n);
    return p;
}
void *zl_try_calloc(size_t n, size_t sz) {
    void *p = calloc(n ? n : 1, sz ? sz : 1);
    if (!p) zl_err("out of memory (%zu x %zu bytes)", n, sz);
    return p;
}

int zl_starts_with(const char *s, const char *p) { return strncmp(s, p, strlen(p)) == 0; }
int zl_ends_with(const char *s, const char *suf) {
    size_t a = strlen(s), b = strlen(suf);
    return a >= b && memcmp(s + a - b, suf, b) == 0;
}

char *zl_xasprintf(const char *fmt, ...) {
    va_list ap, ap2;
    va_start(ap, fmt);
    va_copy(ap2, ap);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    char *s = zl_xmalloc((size_t)n + 1);
    vsnprintf(s, (size_t)n + 1, fmt, ap2);
    va_end(ap2);
    return s;
}

static void buf_reserve(zl_buf *b, size_t extra) {
    if (b->len + extra + 1 <= b->cap) return;
    size_t nc = b->cap ? b->cap * 2 : 256;
    while (nc < b->len + extra + 1) nc *= 2;
    b->s = zl_xrealloc(b->s, nc);
    b->cap = nc;
}
void zl_buf_printf(zl_buf *b, const char *fmt, ...) {
    va_list ap, ap2;
    va_start(ap, fmt);
    va_copy(ap2, ap);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    buf_reserve(b, (size_t)n);
    vsnprintf(b->s + b->len, (size_t)n + 1, fmt, ap2);
    va_end(ap2);
    b->len += (size_t)n;
}
void zl_buf_puts(zl_buf *b, const char *s) {
    size_t n = strlen(s);
    buf_reserve(b, n);
    memcpy(b->s + b->len, s, n + 1);
    b->len += n;
}
void zl_buf_json_string(zl_buf *b, const char *s) {
    zl_buf_puts(b, "\"");
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        switch (*p) {
        case '"': zl_buf_puts(b, "\\\""); break;
        case '\\': zl_buf_puts(b, "\\\\"); break;
        case '\n': zl_buf_puts(b, "\\n"); break;
        case '\r': zl_buf_puts(b, "\\r"); break;
        case '\t': zl_buf_puts(b, "\\t"); break;
        default:
            if (*p < 0x20) zl_buf_printf(b, "\\u%04x", *p);
            else { char c[2] = {(char)*p, 0}; zl_buf_puts(b, c); }
        }
    }
    zl_buf_puts(b, "\"");
}
void zl_buf_free(zl_buf *b) { free(b->s); b->s = NULL; b->len = b->cap = 0; }

int zl_mul_size(size_t a, size_t b, size_t *out) {
    if (a && b > SIZE_MAX / a) return -1;
    *out = a * b;
    return 0;
}

int zl_write_atomic(const char *path, const void *const *parts, const size_t *sizes, int nparts) {
    char *tmp = zl_xasprintf("%s.tmp.%ld", path, (long)getpid());
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0) {
        zl_err("cannot create %s: %s", tmp, strerror(errno));
        free(tmp);
        return -1;
    }
    for (int i = 0; i < nparts; i++) {
        const char *p = parts[i];
        size_t left = sizes[i];
        while (left) {
            ssize_t w = write(fd, p, left > (1u << 30) ? (1u << 30) : left);
            if (w < 0) {
                if (errno == EINTR) continue;
                zl_err("write to %s failed: %s", tmp, strerror(errno));
                close(fd); unlink(tmp); free(tmp);
                return -1;
            }
            p += w; left -= (size_t)w;
        }
    }
    if (fsync(fd) != 0 && errno != EINVAL) {
        zl_err("fsync of %s failed: %s", tmp, strerror(errno));
        close(fd); unlink(tmp); free(tmp);
        return -1;
    }
    close(fd);
    if (rename(tmp, path) != 0) {
        zl_err("cannot rename %s to %s: %s", tmp, path, strerror(errno));
        unlink(tmp); free(tmp);
        return -1;
    }
    free(tmp);
    return 0;
}

void zl_pages_release(const void *p, size_t n) {
    long pg = sysconf(_SC_PAGESIZE);
    uintptr_t a = ((uintptr_t)p + (uintptr_t)pg - 1) & ~(uintptr_t)(pg - 1);
    uintptr_t e = ((uintptr_t)p + n) & ~(uintptr_t)(pg - 1);
    if (e > a) madvise((void *)a, e - a, MADV_DONTNEED);
}

void zl_pages_willneed(const void *p, size_t n) {
    long pg = sysconf(_SC_PAGESIZE);
    uintptr_t a = (uintptr_t)p & ~(uintptr_t)(pg - 1);
    if (n) madvise((void *)a, n + ((uintptr_t)p - a), MADV_WILLNEED);
}

int zl_file_exists(const char *path) { struct stat st; return stat(path, &st) == 0; }
int zl_is_dir(const char *path) { struct stat st; return stat(path, &st) == 0 && S_ISDIR(st.st_mode); }

uint64_t zl_hash64(const void *data, size_t n, uint64_t h) {
    if (!h) h = 1469598103934665603ull;
    const unsigned char *p = data;
    for (size_t i = 0; i < n; i++) { h ^= p[i]; h *= 1099511628211ull; }
    return h;
}

int zl_utf8_valid(const char *str, size_t n) {
    const unsigned char *s = (const unsigned char *)str;
    size_t i = 0;
    while (i < n) {
        unsigned c = s[i];
        if (c < 0x80) { i++; continue; }
        int len; unsigned cp;
        if (c >= 0xC2 && c <= 0xDF) { len = 2; cp = c & 0x1F; }
        else if (c >= 0xE0 && c <= 0xEF) { len = 3; cp = c & 0x0F; }
        else if (c >= 0xF0 && c <= 0xF4) { len = 4; cp = c & 0x07; }
        else return 0;
        if (i + (size_t)len > n) return 0;
        for (int k = 1; k < len; k++) {
            if ((s[i + k] & 0xC0) != 0x80) return 0;
            cp = (cp << 6) | (s[i + k] & 0x3F);
        }
        if ((len == 3 && cp < 0x800) || (len == 4 && (cp < 0x10000 || cp > 0x10FFFF))) return 0;
        if (cp >= 0xD800 && cp <= 0xDFFF) return 0;
        i += (size_t)len;
    }
    return 1;
}

uint64_t zl_rng_next(zl_rng *r) {
    uint64_t z = (r->s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}
float zl_rng_uniform(zl_rng *r) { return (float)(zl_rng_next(r) >> 40) / (float)(1ull << 24); }
float zl_rng_normal(zl_rng *r) {
    double u1 = ((double)(zl_rng_next(r) >> 11) + 1.0) / 9007199254740993.0;
    double u2 = (double)(zl_rng_next(r) >> 11) / 9007199254740992.0;
    return (float)(sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2));
}

double zl_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}
