/* dtype.c — see dtype.h. */
#include "dtype.h"
#include "base.h"
#include <math.h>
#include <string.h>

static const char *names[ZL_DTYPE_COUNT] = {"F64", "F32", "F16", "BF16", "F8_E4M3", "F8_E5M2",
                                            "I64", "I32", "I16", "I8", "U8", "BOOL"};
static const size_t sizes[ZL_DTYPE_COUNT] = {8, 4, 2, 2, 1, 1, 8, 4, 2, 1, 1, 1};

const char *zl_dtype_name(zl_dtype t) { return (unsigned)t < ZL_DTYPE_COUNT ? names[t] : "?"; }
int zl_dtype_from_name(const char *s) {
    for (int i = 0; i < ZL_DTYPE_COUNT; i++)
        if (strcmp(s, names[i]) == 0) return i;
    return -1;
}
size_t zl_dtype_size(zl_dtype t) { return (unsigned)t < ZL_DTYPE_COUNT ? sizes[t] : 0; }
int zl_dtype_is_float(zl_dtype t) { return t <= ZL_F8_E5M2; }

static inline uint32_t f2u(float f) { uint32_t u; memcpy(&u, &f, 4); return u; }
static inline float u2f(uint32_t u) { float f; memcpy(&f, &u, 4); return f; }

float zl_bf16_to_f32(uint16_t h) { return u2f((uint32_t)h << 16); }
uint16_t zl_f32_to_bf16(float f) {
    uint32_t u = f2u(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40); /* quiet NaN */
    u += 0x7fffu + ((u >> 16) & 1u);
    return (uint16_t)(u >> 16);
}

float zl_f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t exp = (h >> 10) & 0x1f, man = h & 0x3ffu;
    if (exp == 0) {
        if (man == 0) return u2f(sign);
        float v = ldexpf((float)man, -24); /* subnormal */
        return sign ? -v : v;
    }
    if (exp == 31) return u2f(sign | 0x7f800000u | (man << 13));
    return u2f(sign | ((exp + 112) << 23) | (man << 13));
}
uint16_t zl_f32_to_f16(float f) {
    uint32_t u = f2u(f);
    uint16_t sign = (uint16_t)((u >> 16) & 0x8000u);
    uint32_t a = u & 0x7fffffffu;
    if (a > 0x7f800000u) return sign | 0x7e00u;            /* NaN */
    if (a >= 0x477ff000u) return sign | 0x7c00u;           /* overflow (>= 65520) -> inf */
    if (a < 0x38800000u) {                                  /* subnormal or zero in f16 */
        float v = u2f(a) * 16777216.0f;                     /* scale by 2^24: value in units of 2^-24 */
        return sign | (uint16_t)lrintf(v);                  /* rint = nearest even */
    }
    uint32_t r = a + 0xfffu + ((a >> 13) & 1u);
    return sign | (uint16_t)((r - 0x38000000u) >> 13);
}

float zl_f8e4m3_to_f32(uint8_t v) { /* e4m3fn: bias 7, no inf, 0x7f/0xff NaN */
    int sign = v >> 7, exp = (v >> 3) & 0xf, man = v & 7;
    float r;
    if (exp == 15 && man == 7) return NAN;
    if (exp == 0) r = ldexpf((float)man, -9);
    else r = ldexpf(1.0f + man / 8.0f, exp - 7);
    return sign ? -r : r;
}
float zl_f8e5m2_to_f32(uint8_t v) { return zl_f16_to_f32((uint16_t)v << 8); }

/* Element loads go through memcpy: tensor data inside a file need not be aligned. */
static inline uint16_t ld16(const char *p) { uint16_t v; memcpy(&v, p, 2); return v; }

int zl_to_f32(float *dst, const void *src, zl_dtype t, size_t n) {
    const char *s = src;
    switch (t) {
    case ZL_F32: memcpy(dst, src, n * 4); return 0;
    case ZL_F64: for (size_t i = 0; i < n; i++) { double v; memcpy(&v, s + 8 * i, 8); dst[i] = (float)v; } return 0;
    case ZL_BF16: for (size_t i = 0; i < n; i++) dst[i] = zl_bf16_to_f32(ld16(s + 2 * i)); return 0;
    case ZL_F16: for (size_t i = 0; i < n; i++) dst[i] = zl_f16_to_f32(ld16(s + 2 * i)); return 0;
    case ZL_F8_E4M3: for (size_t i = 0; i < n; i++) dst[i] = zl_f8e4m3_to_f32((uint8_t)s[i]); return 0;
    case ZL_F8_E5M2: for (size_t i = 0; i < n; i++) dst[i] = zl_f8e5m2_to_f32((uint8_t)s[i]); return 0;
    default: return zl_err("dtype %s is not a float type", zl_dtype_name(t));
    }
}

int zl_to_bf16(uint16_t *dst, const void *src, zl_dtype t, size_t n) {
    if (t == ZL_BF16) { memcpy(dst, src, n * 2); return 0; }
    if (!zl_dtype_is_float(t)) return zl_err("dtype %s is not a float type", zl_dtype_name(t));
    float tmp[256];
    const char *s = src;
    size_t es = zl_dtype_size(t);
    for (size_t i = 0; i < n; i += 256) {
        size_t m = n - i < 256 ? n - i : 256;
        zl_to_f32(tmp, s + i * es, t, m);
        for (size_t j = 0; j < m; j++) dst[i + j] = zl_f32_to_bf16(tmp[j]);
    }
    return 0;
}

int zl_from_f32(void *dst, const float *src, zl_dtype t, size_t n) {
    switch (t) {
    case ZL_F32: memcpy(dst, src, n * 4); return 0;
    case ZL_BF16: { uint16_t *d = dst; for (size_t i = 0; i < n; i++) d[i] = zl_f32_to_bf16(src[i]); return 0; }
    case ZL_F16: { uint16_t *d = dst; for (size_t i = 0; i < n; i++) d[i] = zl_f32_to_f16(src[i]); return 0; }
    default: return zl_err("cannot store as %s", zl_dtype_name(t));
    }
}
