/* fuzz_tokenizer.c — libFuzzer target for the tokenizer (src/model/tokenizer.c).
 *
 * Two tiny byte-level BPE tokenizers are built once in LLVMFuzzerInitialize from tokenizer.json text
 * made here (the 256 byte symbols, a few merges, Qwen's special tokens; the second one also has lstrip,
 * rstrip and single_word tokens), so the fuzzer needs no npm files. Each input is then:
 *   - encoded as raw bytes by both: must succeed with every id in the vocab; decoding must succeed and
 *     give valid UTF-8; with the first tokenizer (no stripping), NFC(decode(encode(x))) == NFC(x) for
 *     valid UTF-8 x (nothing lost, nothing invented);
 *   - encoded with the Z-Image template and a cut taken from the first byte: at most the cut, and the
 *     first id is <|im_start|>;
 *   - parsed as tokenizer.json text: a load either fails with a message or gives a tokenizer that
 *     encodes the input.
 * Seeds: with ZL_FUZZ_WRITE_SEEDS=<dir> the binary writes both tokenizer.json texts and some prompts.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

#include "base/base.h"
#include "model/tokenizer.h"

#define REQUIRE(c)                                                                       \
    do {                                                                                 \
        if (!(c)) {                                                                      \
            fprintf(stderr, "fuzz_tokenizer: invariant failed: %s (line %d)\n", #c, __LINE__); \
            abort();                                                                     \
        }                                                                                \
    } while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv);

static zl_tokenizer *g_plain, *g_flags;
static int g_max_id;

static unsigned gpt2_cp(unsigned b) {
    if ((b >= 33 && b <= 126) || (b >= 161 && b <= 172) || b >= 174) return b;
    if (b <= 32) return 256 + b;
    if (b <= 160) return 256 + 33 + (b - 127);
    return 256 + 67;
}

static void put_cp(zl_buf *b, unsigned cp) {
    if (cp == '"' || cp == '\\') zl_buf_printf(b, "\\%c", (char)cp);
    else if (cp < 0x80) zl_buf_printf(b, "%c", (char)cp);
    else zl_buf_printf(b, "%c%c", (char)(0xC0 | (cp >> 6)), (char)(0x80 | (cp & 63)));
}

/* The byte symbols get ids 0..255; then merges over them; then added tokens from 1000. */
static char *tiny_tokenizer(int flags) {
    static const char *merges[][2] = {
        {"Ġ", "Ġ"}, {"ĠĠ", "ĠĠ"}, {"i", "n"}, {"t", "h"}, {"th", "e"}, {"Ġ", "t"}, {"Ġ", "the"}, {"e", "r"},
        {"a", "a"}, {"aa", "a"}, {"Ċ", "Ċ"}, {"1", "2"}, {"'", "s"}, {"Ġ", "a"}, {"Ã", "©"}, {"í", "ķ"},
        {"ä", "¸"}, {"ð", "Ł"}, {"Ġ", "<"}, {"<", "|"},
    };
    zl_buf b = {0};
    zl_buf_puts(&b, "{\"version\":\"1.0\",\"added_tokens\":[");
    zl_buf_puts(&b, "{\"id\":1000,\"content\":\"<|endoftext|>\",\"special\":true,\"normalized\":false},"
                    "{\"id\":1001,\"content\":\"<|im_start|>\",\"special\":true,\"normalized\":false},"
                    "{\"id\":1002,\"content\":\"<|im_end|>\",\"special\":true,\"normalized\":false},"
                    "{\"id\":1003,\"content\":\"<think>\",\"special\":false,\"normalized\":false},"
                    "{\"id\":1004,\"content\":\"<|im\",\"special\":true}");
    if (flags)
        zl_buf_puts(&b, ",{\"id\":1005,\"content\":\"[L]\",\"lstrip\":true,\"special\":true},"
                        "{\"id\":1006,\"content\":\"[R]\",\"rstrip\":true,\"special\":true},"
                        "{\"id\":1007,\"content\":\"word\",\"single_word\":true},"
                        "{\"id\":1008,\"content\":\"[LR]\",\"lstrip\":true,\"rstrip\":true}");
    zl_buf_puts(&b, "],\"normalizer\":{\"type\":\"NFC\"},\"pre_tokenizer\":{\"type\":\"Sequence\",\"pretokenizers\":["
                    "{\"type\":\"Split\",\"pattern\":{\"Regex\":\"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\\\r\\\\n\\\\p{L}\\\\p{N}]?\\\\p{L}+|"
                    "\\\\p{N}| ?[^\\\\s\\\\p{L}\\\\p{N}]+[\\\\r\\\\n]*|\\\\s*[\\\\r\\\\n]+|\\\\s+(?!\\\\S)|\\\\s+\"},"
                    "\"behavior\":\"Isolated\",\"invert\":false},"
                    "{\"type\":\"ByteLevel\",\"add_prefix_space\":false,\"trim_offsets\":false,\"use_regex\":false}]},"
                    "\"post_processor\":null,\"decoder\":{\"type\":\"ByteLevel\"},"
                    "\"model\":{\"type\":\"BPE\",\"dropout\":null,\"unk_token\":null,\"byte_fallback\":false,\"vocab\":{");
    for (unsigned i = 0; i < 256; i++) {
        zl_buf_puts(&b, i ? ",\"" : "\"");
        put_cp(&b, gpt2_cp(i));
        zl_buf_printf(&b, "\":%u", i);
    }
    size_t nm = sizeof merges / sizeof *merges;
    for (size_t i = 0; i < nm; i++) /* the merged tokens (both parts are plain UTF-8 already) */
        zl_buf_printf(&b, ",\"%s%s\":%zu", merges[i][0], merges[i][1], 256 + i);
    zl_buf_puts(&b, "},\"merges\":[");
    for (size_t i = 0; i < nm; i++) /* half as "a b" strings, half as pairs */
        if (i % 2) zl_buf_printf(&b, "%s[\"%s\",\"%s\"]", i ? "," : "", merges[i][0], merges[i][1]);
        else zl_buf_printf(&b, "%s\"%s %s\"", i ? "," : "", merges[i][0], merges[i][1]);
    zl_buf_puts(&b, "]}}");
    g_max_id = 1008;
    return b.s;
}

static char *nfc(const char *s, size_t n, size_t *out_n) {
    utf8proc_uint8_t *d = NULL;
    utf8proc_ssize_t m = n ? utf8proc_map((const utf8proc_uint8_t *)s, (utf8proc_ssize_t)n, &d, UTF8PROC_STABLE | UTF8PROC_COMPOSE) : 0;
    if (m < 0) return NULL;
    if (!d) d = (utf8proc_uint8_t *)calloc(1, 1);
    *out_n = (size_t)m;
    return (char *)d;
}

static void check_encode(zl_tokenizer *t, const uint8_t *data, size_t size, int roundtrip) {
    int32_t *ids;
    int n;
    zl_clear_error();
    REQUIRE(zl_tok_encode_len(t, (const char *)data, size, &ids, &n) == 0);
    REQUIRE(ids != NULL && n >= 0 && (size_t)n <= 3 * size); /* a bad byte is U+FFFD: up to 3 tokens */
    for (int i = 0; i < n; i++) REQUIRE(ids[i] >= 0 && ids[i] <= g_max_id && zl_tok_token(t, ids[i]) != NULL);
    size_t dl;
    char *d = zl_tok_decode(t, ids, n, 0, &dl);
    REQUIRE(d != NULL && zl_utf8_valid(d, dl));
    if (roundtrip && zl_utf8_valid((const char *)data, size)) {
        size_t a, b;
        char *x = nfc((const char *)data, size, &a), *y = nfc(d, dl, &b);
        REQUIRE(x && y);
        if (a != b || memcmp(x, y, a) != 0) {
            fprintf(stderr, "round trip: %zu bytes in, %zu out\n", a, b);
            abort();
        }
        free(x);
        free(y);
    }
    free(d);
    d = zl_tok_decode(t, ids, n, 1, NULL);
    REQUIRE(d != NULL);
    free(d);
    free(ids);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (!g_plain || !g_flags) abort();
    check_encode(g_plain, data, size, 1);
    check_encode(g_flags, data, size, 0);

    /* the template on the text up to the first NUL, cut at 0..255 tokens */
    char *p = malloc(size + 1);
    memcpy(p, data, size);
    p[size] = 0;
    int cut = size ? data[0] : 0;
    int32_t *ids;
    int n;
    REQUIRE(zl_tok_encode_prompt(g_plain, p, cut, &ids, &n) == 0);
    REQUIRE(n >= 1 && (cut <= 0 || n <= cut) && ids[0] == 1001);
    free(ids);

    /* the input as a tokenizer.json */
    zl_tokenizer *t = NULL;
    zl_clear_error();
    if (zl_tok_load_json((const char *)data, size, "fuzz.json", &t) == 0) {
        REQUIRE(t != NULL);
        if (zl_tok_encode(t, p, &ids, &n) == 0) {
            for (int i = 0; i < n; i++) REQUIRE(zl_tok_token(t, ids[i]) != NULL);
            char *d = zl_tok_decode(t, ids, n, 0, NULL);
            REQUIRE(d != NULL);
            free(d);
            free(ids);
        } else {
            REQUIRE(zl_last_error()[0]);
        }
        zl_tok_free(t);
    } else {
        REQUIRE(t == NULL && zl_last_error()[0]);
    }
    free(p);
    return 0;
}

static int write_seed(const char *dir, const char *name, const char *s, size_t n) {
    char *path = zl_xasprintf("%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    free(path);
    if (!f) return -1;
    size_t w = fwrite(s, 1, n, f);
    return fclose(f) == 0 && w == n ? 0 : -1;
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc;
    (void)argv;
    char *a = tiny_tokenizer(0), *b = tiny_tokenizer(1);
    if (zl_tok_load_json(a, strlen(a), "tiny", &g_plain) || zl_tok_load_json(b, strlen(b), "tiny-flags", &g_flags)) {
        fprintf(stderr, "fuzz_tokenizer: the tiny tokenizer does not load: %s\n", zl_last_error());
        abort();
    }
    const char *dir = getenv("ZL_FUZZ_WRITE_SEEDS");
    if (dir && *dir) {
        static const char *texts[] = {
            "hello world, the thing's in there", "<|im_start|>user\na cat<|im_end|>\n<|im_start|>assistant\n",
            "  \n\n\t\r\n  x  ", "caf\xc3\xa9 cafe\xcc\x81 \xed\x95\x9c\xea\xb8\x80 \xe4\xb8\xad\xe6\x96\x87 \xf0\x9f\x98\x80\xe2\x80\x8d",
            "\xff\xfe\xc0\xaf\xed\xa0\x80 bad", "'S 'Ll 'RE x'\xc5\xbf\x61 1234567 12", "a [L] b [R] c word aword [LR] d <think>",
            "<|im <|im_end <|endoftext|><|im_end|>\xcc\xb8",
        };
        int rc = write_seed(dir, "tokenizer_plain.json", a, strlen(a)) | write_seed(dir, "tokenizer_flags.json", b, strlen(b));
        char name[32];
        for (size_t i = 0; i < sizeof texts / sizeof *texts; i++) {
            snprintf(name, sizeof name, "text%zu", i);
            rc |= write_seed(dir, name, texts[i], strlen(texts[i]));
        }
        exit(rc ? 1 : 0);
    }
    free(a);
    free(b);
    return 0;
}
