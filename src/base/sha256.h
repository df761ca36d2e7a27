/* sha256.h — SHA-256 (FIPS 180-4), for file hashes people compare with other tools (A1111/Civitai
 * "AutoV2" short hashes). */
#ifndef ZL_SHA256_H
#define ZL_SHA256_H
#include <stddef.h>
#include <stdint.h>

typedef struct {
    uint32_t h[8];
    uint64_t len;
    uint8_t buf[64];
    size_t nbuf;
} zl_sha256;

void zl_sha256_init(zl_sha256 *s);
void zl_sha256_update(zl_sha256 *s, const void *data, size_t n);
void zl_sha256_final(zl_sha256 *s, uint8_t out[32]);
/* SHA-256 of a whole file, streamed; hex[65]. 0 or -1 with a message. */
int zl_sha256_file(const char *path, char hex[65]);

#endif
