/* dtype.h — the tensor element types zlora reads and writes, and conversions between them.
 * Float conversions to bf16/f16 round to nearest even; NaN stays NaN; f32->f8 is not needed (read only).
 */
#ifndef ZL_DTYPE_H
#define ZL_DTYPE_H
#include <stddef.h>
#include <stdint.h>

typedef enum {
    ZL_F64, ZL_F32, ZL_F16, ZL_BF16, ZL_F8_E4M3, ZL_F8_E5M2,
    ZL_I64, ZL_I32, ZL_I16, ZL_I8, ZL_U8, ZL_BOOL,
    ZL_DTYPE_COUNT
} zl_dtype;

const char *zl_dtype_name(zl_dtype t);    /* safetensors spelling: "F32", "BF16", ... */
int zl_dtype_from_name(const char *s);    /* -1 if unknown */
size_t zl_dtype_size(zl_dtype t);
int zl_dtype_is_float(zl_dtype t);

float zl_bf16_to_f32(uint16_t h);
uint16_t zl_f32_to_bf16(float f);
float zl_f16_to_f32(uint16_t h);
uint16_t zl_f32_to_f16(float f);
float zl_f8e4m3_to_f32(uint8_t v);
float zl_f8e5m2_to_f32(uint8_t v);

/* Convert n elements of a float dtype (F64/F32/F16/BF16/F8) to f32 / bf16. Returns -1 for non-float. */
int zl_to_f32(float *dst, const void *src, zl_dtype t, size_t n);
int zl_to_bf16(uint16_t *dst, const void *src, zl_dtype t, size_t n);
/* Convert n f32 values to F32/F16/BF16 storage. */
int zl_from_f32(void *dst, const float *src, zl_dtype t, size_t n);

#endif
