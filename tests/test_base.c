/* test_base.c — base helpers: dtype conversions against exact values, UTF-8 validation. */
#include "test.h"
#include "base/base.h"
#include "base/dtype.h"
#include <string.h>

TEST(dtype_bf16_round_nearest_even) {
    CHECK(zl_f32_to_bf16(1.0f) == 0x3f80);
    /* 1 + 2^-8 is exactly halfway between bf16 1.0 and 1.0078125: ties to even (1.0) */
    CHECK(zl_f32_to_bf16(1.00390625f) == 0x3f80);
    /* 1 + 3*2^-8 is halfway between 1.0078125 (odd) and 1.015625 (even): rounds up */
    CHECK(zl_f32_to_bf16(1.01171875f) == 0x3f82);
    CHECK(zl_bf16_to_f32(0xc040) == -3.0f);
    CHECK(isnan(zl_bf16_to_f32(zl_f32_to_bf16(NAN))));
}

TEST(dtype_f16_roundtrip) {
    CHECK(zl_f32_to_f16(1.0f) == 0x3c00);
    CHECK(zl_f32_to_f16(65504.0f) == 0x7bff);
    CHECK(zl_f32_to_f16(65520.0f) == 0x7c00);            /* rounds to inf */
    CHECK(zl_f16_to_f32(0x0001) == ldexpf(1.0f, -24));   /* smallest subnormal */
    CHECK(zl_f32_to_f16(ldexpf(1.0f, -25)) == 0x0000);    /* halfway: ties to even (0) */
    CHECK(zl_f32_to_f16(ldexpf(3.0f, -25)) == 0x0002);    /* 1.5 ulp: ties to even (2) */
    for (uint32_t h = 0; h < 0x7c00; h++) CHECK(zl_f32_to_f16(zl_f16_to_f32((uint16_t)h)) == h);
}

TEST(dtype_f8) {
    CHECK(zl_f8e4m3_to_f32(0x38) == 1.0f);     /* exp 7, man 0 */
    CHECK(zl_f8e4m3_to_f32(0x7e) == 448.0f);   /* max finite */
    CHECK(isnan(zl_f8e4m3_to_f32(0x7f)));
    CHECK(zl_f8e4m3_to_f32(0x01) == ldexpf(1.0f, -9));
    CHECK(zl_f8e5m2_to_f32(0x3c) == 1.0f);
    CHECK(isinf(zl_f8e5m2_to_f32(0x7c)));
}

TEST(utf8_validation) {
    CHECK(zl_utf8_valid("abc", 3));
    CHECK(zl_utf8_valid("\xe4\xb8\xad\xf0\x9f\x98\x80", 7));
    CHECK(!zl_utf8_valid("\xc0\xaf", 2));          /* overlong */
    CHECK(!zl_utf8_valid("\xed\xa0\x80", 3));      /* surrogate */
    CHECK(!zl_utf8_valid("\xe4\xb8", 2));          /* truncated */
    CHECK(!zl_utf8_valid("\xf4\x90\x80\x80", 4));  /* > U+10FFFF */
}
