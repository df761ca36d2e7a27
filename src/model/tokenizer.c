/* tokenizer.c — see tokenizer.h. Byte-level BPE (Qwen2/Qwen3) with PCRE2 pre-tokenization and
 * utf8proc NFC.
 *
 * Layout: strings (vocab forms, added-token contents) live in one arena; a string hash maps the vocab
 * form to an id; merges are a hash from the id pair (left << 32 | right) to (rank, result id); BPE
 * runs on byte symbols (byte -> id through the GPT-2 byte map) with a min-heap of (rank, position),
 * which is the reference's order: lowest rank first, leftmost first among equal ranks. A
 * direct-mapped cache keeps the ids of short pieces. */
#define PCRE2_CODE_UNIT_WIDTH 8
#include "model/tokenizer.h"

#include <cjson/cJSON.h>
#include <limits.h>
#include <pcre2.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <utf8proc.h>

#include "base/base.h"

#define MAX_STAGES 4
#define MAX_IDS (1 << 24)          /* ids above this are refused (Qwen: 151,669) */
#define TOK_MAX_INPUT (1u << 30)       /* bytes of text to encode */
#define MAX_FILE ((size_t)1 << 30) /* bytes of a tokenizer file */
#define CACHE_SLOTS 8192
#define CACHE_KEY 24

enum { TF_PRESENT = 1, TF_ADDED = 2, TF_SPECIAL = 4 };

typedef struct {
    uint32_t off, len; /* content in the arena */
    int32_t id;
    uint8_t first; /* first byte of the content */
    uint8_t special, lstrip, rstrip, single_word, normalized;
} added_tok;

typedef struct { uint32_t off, len; int32_t id; uint32_t tag; } hslot; /* id < 0: empty; tag: high hash bits */

typedef struct {
    uint8_t klen, nids;
    char key[CACHE_KEY];
    int32_t ids[CACHE_KEY];
} cache_ent;

struct zl_tokenizer {
    char *name;
    char *arena;
    size_t arena_len, arena_cap;
    /* id -> vocab form */
    int32_t n_ids;
    uint32_t *tok_off, *tok_len;
    uint8_t *tok_flags;
    /* vocab form -> id */
    hslot *hs;
    size_t hmask, hcount;
    /* merges: (left << 32 | right) -> rank, result */
    uint64_t *mkey;
    int32_t *mrank, *mres;
    size_t mmask;
    int n_merges, n_vocab;
    int32_t byte_id[256];
    /* added tokens, sorted by first byte then longest first; first[b]..first[b+1] start with b */
    added_tok *added;
    int n_added;
    int first[257];
    /* pre-tokenizer */
    pcre2_code *re[MAX_STAGES];
    pcre2_match_context *mctx;
    int n_stages, nfc, ignore_merges;
    /* piece cache */
    pthread_mutex_t mu;
    int mu_init;
    cache_ent *cache;
};

/* ------------------------------------------------------------------ GPT-2 byte map */

/* byte -> code point: printable Latin-1 bytes stand for themselves, the other 68 bytes (0-32, 127-160,
 * 173) take 256, 257, ... in byte order. */
static int byte_kept(unsigned b) { return (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255); }
static unsigned byte_cp(unsigned b) {
    b &= 255;
    if (byte_kept(b)) return b;
    if (b <= 32) return 256 + b;
    if (b <= 160) return 256 + 33 + (b - 127);
    return 256 + 67; /* 173 */
}
/* code point -> byte, or -1 */
static int cp_byte(unsigned cp) {
    if (cp < 256) return byte_kept(cp) ? (int)cp : -1;
    if (cp < 256 + 33) return (int)(cp - 256);
    if (cp < 256 + 67) return (int)(127 + cp - 256 - 33);
    if (cp == 256 + 67) return 173;
    return -1;
}

static size_t put_utf8(char *o, unsigned cp) {
    if (cp < 0x80) { o[0] = (char)cp; return 1; }
    if (cp < 0x800) { o[0] = (char)(0xC0 | (cp >> 6)); o[1] = (char)(0x80 | (cp & 63)); return 2; }
    if (cp < 0x10000) {
        o[0] = (char)(0xE0 | (cp >> 12)); o[1] = (char)(0x80 | ((cp >> 6) & 63)); o[2] = (char)(0x80 | (cp & 63));
        return 3;
    }
    o[0] = (char)(0xF0 | (cp >> 18)); o[1] = (char)(0x80 | ((cp >> 12) & 63));
    o[2] = (char)(0x80 | ((cp >> 6) & 63)); o[3] = (char)(0x80 | (cp & 63));
    return 4;
}

/* Decodes one code point of valid UTF-8 at s[*i] (n bytes in all). */
static unsigned get_utf8(const unsigned char *s, size_t n, size_t *i) {
    unsigned c = s[*i];
    if (c < 0x80 || *i + 1 >= n) { (*i)++; return c; }
    if (c < 0xE0) { unsigned cp = ((c & 31) << 6) | (s[*i + 1] & 63); *i += 2; return cp; }
    if (c < 0xF0) {
        if (*i + 2 >= n) { (*i)++; return c; }
        unsigned cp = ((c & 15) << 12) | ((s[*i + 1] & 63u) << 6) | (s[*i + 2] & 63);
        *i += 3;
        return cp;
    }
    if (*i + 3 >= n) { (*i)++; return c; }
    unsigned cp = ((c & 7) << 18) | ((s[*i + 1] & 63u) << 12) | ((s[*i + 2] & 63u) << 6) | (s[*i + 3] & 63);
    *i += 4;
    return cp;
}

/* Invalid UTF-8 -> U+FFFD, one per maximal subpart (the WHATWG decoder, as TextDecoder and Node's
 * Buffer do). 0 with *out = NULL when s is valid (nothing to copy); 0 with a malloc'd, NUL-terminated
 * repaired copy in *out / *out_n; -1 when out of memory. */
static int utf8_repair(const char *str, size_t n, char **out, size_t *out_n) {
    *out = NULL;
    if (zl_utf8_valid(str, n)) return 0;
    const unsigned char *s = (const unsigned char *)str;
    if (n > (SIZE_MAX - 1) / 3) return zl_err("text too large");
    char *o = zl_try_malloc(n * 3 + 1); /* each bad byte becomes at most 3 bytes */
    if (!o) return -1;
    size_t j = 0, i = 0;
    while (i < n) {
        unsigned c = s[i];
        if (c < 0x80) { o[j++] = (char)c; i++; continue; }
        int need;
        unsigned lo = 0x80, hi = 0xBF;
        if (c >= 0xC2 && c <= 0xDF) need = 1;
        else if (c == 0xE0) { need = 2; lo = 0xA0; }
        else if ((c >= 0xE1 && c <= 0xEC) || c == 0xEE || c == 0xEF) need = 2;
        else if (c == 0xED) { need = 2; hi = 0x9F; }
        else if (c == 0xF0) { need = 3; lo = 0x90; }
        else if (c >= 0xF1 && c <= 0xF3) need = 3;
        else if (c == 0xF4) { need = 3; hi = 0x8F; }
        else { j += put_utf8(o + j, 0xFFFD); i++; continue; }
        int k = 1;
        for (; k <= need; k++) {
            if (i + (size_t)k >= n) break;
            unsigned b = s[i + k];
            unsigned l = k == 1 ? lo : 0x80, h = k == 1 ? hi : 0xBF;
            if (b < l || b > h) break;
        }
        if (k > need) {
            memcpy(o + j, s + i, (size_t)need + 1);
            j += (size_t)need + 1;
            i += (size_t)need + 1;
        } else {
            j += put_utf8(o + j, 0xFFFD);
            i += (size_t)k; /* the lead byte and the good continuation bytes seen so far */
        }
    }
    o[j] = 0;
    *out = o;
    *out_n = j;
    return 0;
}

/* JavaScript's \s (WhiteSpace + LineTerminator): what String.trim and the reference regexes use. */
static int js_space(unsigned cp) {
    return (cp >= 9 && cp <= 13) || cp == 32 || cp == 0xA0 || cp == 0x1680 || (cp >= 0x2000 && cp <= 0x200A) ||
           cp == 0x2028 || cp == 0x2029 || cp == 0x202F || cp == 0x205F || cp == 0x3000 || cp == 0xFEFF;
}
#define JS_SPACE_CLASS "\\t\\n\\x{0B}\\f\\r\\x{20}\\x{A0}\\x{1680}\\x{2000}-\\x{200A}\\x{2028}\\x{2029}\\x{202F}\\x{205F}\\x{3000}\\x{FEFF}"

/* ------------------------------------------------------------------ small helpers */

static uint64_t mix64(uint64_t z) {
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static uint64_t str_hash(const char *s, size_t n) { return mix64(zl_hash64(s, n, 0xcbf29ce484222325ull)); }

static int read_file(const char *path, char **buf, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return zl_err("%s: cannot open", path);
    if (fseek(f, 0, SEEK_END) != 0) { fclose(f); return zl_err("%s: cannot seek", path); }
    long sz = ftell(f);
    if (sz < 0 || (size_t)sz > MAX_FILE) { fclose(f); return zl_err("%s: bad size (over 1 GiB?)", path); }
    rewind(f);
    char *b = zl_try_malloc((size_t)sz + 1);
    if (!b) { fclose(f); return zl_err_prefix("%s", path); }
    size_t got = fread(b, 1, (size_t)sz, f);
    fclose(f);
    if (got != (size_t)sz) { free(b); return zl_err("%s: short read", path); }
    b[got] = 0;
    *buf = b;
    *len = got;
    return 0;
}

static int arena_add(zl_tokenizer *t, const char *s, size_t n, uint32_t *off) {
    if (t->arena_len + n + 1 > UINT32_MAX) return zl_err("%s: tokenizer strings over 4 GiB", t->name);
    if (t->arena_len + n + 1 > t->arena_cap) {
        size_t cap = t->arena_cap ? t->arena_cap : 1 << 16;
        while (cap < t->arena_len + n + 1) cap *= 2;
        char *a = realloc(t->arena, cap);
        if (!a) return zl_err("%s: out of memory", t->name);
        t->arena = a;
        t->arena_cap = cap;
    }
    memcpy(t->arena + t->arena_len, s, n);
    t->arena[t->arena_len + n] = 0;
    *off = (uint32_t)t->arena_len;
    t->arena_len += n + 1;
    return 0;
}

/* ------------------------------------------------------------------ id table and string hash */

static int ids_reserve(zl_tokenizer *t, int32_t id) {
    if (id < 0 || id >= MAX_IDS) return zl_err("%s: token id %d out of range [0, %d)", t->name, (int)id, MAX_IDS);
    if (id < t->n_ids) return 0;
    int32_t n = t->n_ids ? t->n_ids : 1024;
    while (n <= id) n = n > MAX_IDS / 2 ? MAX_IDS : n * 2;
    uint32_t *o = realloc(t->tok_off, sizeof(uint32_t) * (size_t)n);
    if (o) t->tok_off = o;
    uint32_t *l = realloc(t->tok_len, sizeof(uint32_t) * (size_t)n);
    if (l) t->tok_len = l;
    uint8_t *f = realloc(t->tok_flags, (size_t)n);
    if (f) t->tok_flags = f;
    if (!o || !l || !f) return zl_err("%s: out of memory", t->name);
    memset(t->tok_flags + t->n_ids, 0, (size_t)(n - t->n_ids));
    t->n_ids = n;
    return 0;
}

static int hash_grow(zl_tokenizer *t, size_t want) {
    size_t cap = t->hs ? (t->hmask + 1) * 2 : 1 << 12;
    while (cap < want * 2) cap *= 2;
    hslot *h = zl_try_malloc(sizeof(hslot) * cap);
    if (!h) return zl_err_prefix("%s", t->name);
    for (size_t i = 0; i < cap; i++) h[i].id = -1;
    if (t->hs) {
        for (size_t i = 0; i <= t->hmask; i++) {
            if (t->hs[i].id < 0) continue;
            size_t k = str_hash(t->arena + t->hs[i].off, t->hs[i].len) & (cap - 1);
            while (h[k].id >= 0) k = (k + 1) & (cap - 1); /* the tag stays valid: it is the hash's top bits */
            h[k] = t->hs[i];
        }
        free(t->hs);
    }
    t->hs = h;
    t->hmask = cap - 1;
    return 0;
}

static int32_t hash_get(const zl_tokenizer *t, const char *s, size_t n) {
    if (!t->hs) return -1;
    uint64_t h = str_hash(s, n);
    uint32_t tag = (uint32_t)(h >> 32);
    size_t k = h & t->hmask;
    while (t->hs[k].id >= 0) {
        if (t->hs[k].tag == tag && t->hs[k].len == n && memcmp(t->arena + t->hs[k].off, s, n) == 0) return t->hs[k].id;
        k = (k + 1) & t->hmask;
    }
    return -1;
}

/* Maps the string at arena offset off to id (a later mapping of the same string wins, as in the
 * reference's Map), and makes it id's vocab form. */
static int token_set(zl_tokenizer *t, uint32_t off, uint32_t len, int32_t id, uint8_t flags) {
    if (ids_reserve(t, id)) return -1;
    if (!t->hs || (t->hcount + 1) * 2 > t->hmask + 1)
        if (hash_grow(t, t->hcount + 1)) return -1;
    const char *s = t->arena + off;
    uint64_t h = str_hash(s, len);
    uint32_t tag = (uint32_t)(h >> 32);
    size_t k = h & t->hmask;
    while (t->hs[k].id >= 0) {
        if (t->hs[k].tag == tag && t->hs[k].len == len && memcmp(t->arena + t->hs[k].off, s, len) == 0) break;
        k = (k + 1) & t->hmask;
    }
    if (t->hs[k].id < 0) t->hcount++;
    t->hs[k] = (hslot){off, len, id, tag};
    t->tok_off[id] = off;
    t->tok_len[id] = len;
    t->tok_flags[id] = (uint8_t)(TF_PRESENT | flags);
    return 0;
}

/* ------------------------------------------------------------------ merges */

static size_t merge_find(const zl_tokenizer *t, uint64_t key) {
    size_t k = mix64(key) & t->mmask;
    while (t->mkey[k] != UINT64_MAX && t->mkey[k] != key) k = (k + 1) & t->mmask;
    return k;
}

static int merges_alloc(zl_tokenizer *t, size_t n) {
    size_t cap = 16;
    while (cap < n * 2 + 16) cap *= 2;
    t->mkey = zl_try_malloc(sizeof(uint64_t) * cap);
    t->mrank = zl_try_malloc(sizeof(int32_t) * cap);
    t->mres = zl_try_malloc(sizeof(int32_t) * cap);
    if (!t->mkey || !t->mrank || !t->mres) return zl_err_prefix("%s", t->name);
    memset(t->mkey, 0xFF, sizeof(uint64_t) * cap);
    t->mmask = cap - 1;
    return 0;
}

static int merge_add(zl_tokenizer *t, const char *a, size_t an, const char *b, size_t bn, int rank, char **tmp, size_t *tmpcap) {
    int32_t ia = hash_get(t, a, an), ib = hash_get(t, b, bn);
    if (ia < 0 || ib < 0)
        return zl_err("%s: merge %d (\"%.*s\" \"%.*s\"): \"%.*s\" is not in the vocab", t->name, rank, (int)an, a,
                      (int)bn, b, ia < 0 ? (int)an : (int)bn, ia < 0 ? a : b);
    if (an + bn > *tmpcap) {
        size_t c = (an + bn) * 2 + 64;
        char *p = realloc(*tmp, c);
        if (!p) return zl_err("%s: out of memory", t->name);
        *tmp = p;
        *tmpcap = c;
    }
    memcpy(*tmp, a, an);
    memcpy(*tmp + an, b, bn);
    int32_t ir = hash_get(t, *tmp, an + bn);
    if (ir < 0)
        return zl_err("%s: merge %d (\"%.*s\" \"%.*s\"): the result \"%.*s\" is not in the vocab", t->name, rank,
                      (int)an, a, (int)bn, b, (int)(an + bn), *tmp);
    uint64_t key = (uint64_t)(uint32_t)ia << 32 | (uint32_t)ib;
    size_t k = merge_find(t, key);
    t->mkey[k] = key; /* a repeated pair takes its later rank, as the reference's Map does */
    t->mrank[k] = rank;
    t->mres[k] = ir;
    t->n_merges = rank + 1;
    return 0;
}

/* ------------------------------------------------------------------ regex (JS meaning in PCRE2) */

/* Rewrites a pre-tokenizer regex so PCRE2 matches what JavaScript's /.../gu matches (the reference):
 * \s \S \d \D \w \W and . take their JS sets, (?i:...) folds ASCII letters only (JS has no inline
 * flags; the reference spells the Qwen group as [sS], [tT], ...), a '[' inside a class is literal. */
static int regex_translate(const char *src, zl_buf *o) {
    int in_class = 0, depth = 0, ci = 0, ci_depth = 0;
    size_t n = strlen(src);
    for (size_t i = 0; i < n; i++) {
        char c = src[i];
        if (c == '\\') {
            if (i + 1 >= n) return -1;
            char e = src[++i];
            switch (e) {
            case 's': zl_buf_puts(o, in_class ? JS_SPACE_CLASS : "[" JS_SPACE_CLASS "]"); break;
            case 'S': zl_buf_puts(o, in_class ? "\\S" : "[^" JS_SPACE_CLASS "]"); break;
            case 'd': zl_buf_puts(o, in_class ? "0-9" : "[0-9]"); break;
            case 'D': zl_buf_puts(o, in_class ? "\\D" : "[^0-9]"); break;
            case 'w': zl_buf_puts(o, in_class ? "A-Za-z0-9_" : "[A-Za-z0-9_]"); break;
            case 'W': zl_buf_puts(o, in_class ? "\\W" : "[^A-Za-z0-9_]"); break;
            default: {
                char tmp[3] = {'\\', e, 0};
                zl_buf_puts(o, tmp);
            }
            }
            continue;
        }
        if (in_class) {
            if (c == ']') in_class = 0;
            if (c == '[') { zl_buf_puts(o, "\\["); continue; }
            if (ci && ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'))) {
                char tmp[3] = {c, (char)(c ^ 32), 0};
                zl_buf_puts(o, tmp);
                continue;
            }
            char tmp[2] = {c, 0};
            zl_buf_puts(o, tmp);
            continue;
        }
        if (c == '[') {
            in_class = 1;
            zl_buf_puts(o, "[");
            if (i + 1 < n && src[i + 1] == '^') { zl_buf_puts(o, "^"); i++; }
            if (i + 1 < n && src[i + 1] == ']') { zl_buf_puts(o, "\\]"); i++; }
            continue;
        }
        if (c == '(') {
            depth++;
            if (!ci && strncmp(src + i, "(?i:", 4) == 0) {
                ci = 1;
                ci_depth = depth;
                zl_buf_puts(o, "(?:");
                i += 3;
                continue;
            }
        } else if (c == ')') {
            if (ci && depth == ci_depth) ci = 0;
            depth--;
        } else if (c == '.') {
            zl_buf_puts(o, "[^\\n\\r\\x{2028}\\x{2029}]");
            continue;
        } else if (ci && ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'))) {
            char tmp[5] = {'[', c, (char)(c ^ 32), ']', 0};
            zl_buf_puts(o, tmp);
            continue;
        }
        char tmp[2] = {c, 0};
        zl_buf_puts(o, tmp);
    }
    return 0;
}

static int add_stage(zl_tokenizer *t, const char *pattern, int literal) {
    if (t->n_stages >= MAX_STAGES) return zl_err("%s: more than %d pre-tokenizer splits", t->name, MAX_STAGES);
    zl_buf b = {0};
    if (literal) { /* a Split with a String pattern */
        for (const char *p = pattern; *p; p++) {
            unsigned char c = (unsigned char)*p;
            if (c < 0x80 && !((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')))
                zl_buf_printf(&b, "\\x{%02x}", c);
            else
                zl_buf_printf(&b, "%c", c);
        }
        if (!b.s) zl_buf_puts(&b, "");
    } else if (regex_translate(pattern, &b)) {
        zl_buf_free(&b);
        return zl_err("%s: pre-tokenizer regex ends in a lone backslash", t->name);
    }
    int ec;
    PCRE2_SIZE eo;
    pcre2_code *re = pcre2_compile((PCRE2_SPTR)b.s, b.len, PCRE2_UTF | PCRE2_UCP | PCRE2_DOLLAR_ENDONLY, &ec, &eo, NULL);
    zl_buf_free(&b);
    if (!re) {
        PCRE2_UCHAR msg[256];
        pcre2_get_error_message(ec, msg, sizeof msg);
        return zl_err("%s: pre-tokenizer regex does not compile: %s (at %zu)", t->name, (const char *)msg, (size_t)eo);
    }
    pcre2_jit_compile(re, PCRE2_JIT_COMPLETE); /* best effort: the interpreter is the fallback */
    t->re[t->n_stages++] = re;
    return 0;
}

static const char *QWEN2_REGEX =
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
static const char *GPT2_REGEX = "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";

/* ------------------------------------------------------------------ building */

static zl_tokenizer *tok_new(const char *name) {
    zl_tokenizer *t = zl_xcalloc(1, sizeof *t);
    t->name = zl_xstrdup(name);
    for (int i = 0; i < 256; i++) t->byte_id[i] = -1;
    return t;
}

void zl_tok_free(zl_tokenizer *t) {
    if (!t) return;
    for (int i = 0; i < t->n_stages; i++) pcre2_code_free(t->re[i]);
    pcre2_match_context_free(t->mctx);
    if (t->mu_init) pthread_mutex_destroy(&t->mu);
    free(t->cache);
    free(t->added);
    free(t->mkey); free(t->mrank); free(t->mres);
    free(t->hs);
    free(t->tok_off); free(t->tok_len); free(t->tok_flags);
    free(t->arena);
    free(t->name);
    free(t);
}

static int json_bool(const cJSON *o, const char *key, int def, int *out, const char *name, const char *what) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    if (!v || cJSON_IsNull(v)) { *out = def; return 0; }
    if (!cJSON_IsBool(v)) return zl_err("%s: %s: \"%s\" is not a boolean", name, what, key);
    *out = cJSON_IsTrue(v);
    return 0;
}

static int json_id(const cJSON *v, int32_t *out) {
    if (!cJSON_IsNumber(v)) return -1;
    double d = v->valuedouble;
    if (!(d >= 0 && d < MAX_IDS) || d != (double)(int32_t)d) return -1;
    *out = (int32_t)d;
    return 0;
}

/* One added token from a tokenizer.json entry or a tokenizer_config.json added_tokens_decoder value. */
static int added_add(zl_tokenizer *t, const cJSON *o, int32_t id, int idx) {
    char what[64];
    snprintf(what, sizeof what, "added token %d", idx);
    if (!cJSON_IsObject(o)) return zl_err("%s: %s is not an object", t->name, what);
    const cJSON *c = cJSON_GetObjectItemCaseSensitive(o, "content");
    if (!cJSON_IsString(c) || !c->valuestring) return zl_err("%s: %s has no \"content\" string", t->name, what);
    size_t len = strlen(c->valuestring);
    if (len == 0) return zl_err("%s: %s has empty content", t->name, what);
    if (!zl_utf8_valid(c->valuestring, len)) return zl_err("%s: %s is not valid UTF-8", t->name, what);
    int special, lstrip, rstrip, single, normalized;
    if (json_bool(o, "special", 0, &special, t->name, what) || json_bool(o, "lstrip", 0, &lstrip, t->name, what) ||
        json_bool(o, "rstrip", 0, &rstrip, t->name, what) || json_bool(o, "single_word", 0, &single, t->name, what) ||
        json_bool(o, "normalized", !special, &normalized, t->name, what))
        return -1;
    /* a later entry with the same content replaces the earlier one */
    int32_t old = hash_get(t, c->valuestring, len);
    if (old >= 0 && (t->tok_flags[old] & TF_ADDED))
        for (int i = 0; i < t->n_added; i++)
            if (t->added[i].len == len && memcmp(t->arena + t->added[i].off, c->valuestring, len) == 0) {
                t->added[i] = t->added[--t->n_added];
                break;
            }
    uint32_t off;
    if (arena_add(t, c->valuestring, len, &off)) return -1;
    if (token_set(t, off, (uint32_t)len, id, (uint8_t)(TF_ADDED | (special ? TF_SPECIAL : 0)))) return -1;
    t->added = zl_xrealloc(t->added, sizeof(added_tok) * (size_t)(t->n_added + 1));
    t->added[t->n_added++] = (added_tok){off, (uint32_t)len, id, (uint8_t)c->valuestring[0], (uint8_t)special, (uint8_t)lstrip, (uint8_t)rstrip,
                                         (uint8_t)single, (uint8_t)normalized};
    return 0;
}

static int added_cmp(const void *pa, const void *pb) {
    const added_tok *a = pa, *b = pb;
    if (a->first != b->first) return a->first < b->first ? -1 : 1;
    if (a->len != b->len) return a->len > b->len ? -1 : 1;
    return 0;
}

static int vocab_add(zl_tokenizer *t, const cJSON *vocab) {
    if (!cJSON_IsObject(vocab)) return zl_err("%s: the vocab is not an object", t->name);
    int n = 0;
    size_t count = 0;
    for (const cJSON *e = vocab->child; e; e = e->next) count++;
    if (count && hash_grow(t, t->hcount + count + 64)) return -1;
    for (const cJSON *e = vocab->child; e; e = e->next) {
        int32_t id;
        if (!e->string) return zl_err("%s: vocab entry %d has no name", t->name, n);
        if (json_id(e, &id))
            return zl_err("%s: vocab entry \"%.60s\" has no valid id (an integer in [0, %d))", t->name, e->string, MAX_IDS);
        size_t len = strlen(e->string);
        uint32_t off;
        if (arena_add(t, e->string, len, &off) || token_set(t, off, (uint32_t)len, id, 0)) return -1;
        n++;
    }
    if (n == 0) return zl_err("%s: the vocab is empty", t->name);
    t->n_vocab = n;
    return 0;
}

/* After vocab and added tokens: byte symbols, added-token index, cache. Merges come after this. */
static int finish_tables(zl_tokenizer *t) {
    for (int b = 0; b < 256; b++) {
        char s[4];
        size_t n = put_utf8(s, byte_cp((unsigned)b));
        t->byte_id[b] = hash_get(t, s, n);
        if (t->byte_id[b] < 0) return zl_err("%s: the vocab has no token for byte 0x%02x (\"%.*s\")", t->name, b, (int)n, s);
    }
    if (t->n_added > 1) {
        qsort(t->added, (size_t)t->n_added, sizeof(added_tok), added_cmp);
    }
    int k = 0;
    for (int b = 0; b <= 256; b++) {
        while (k < t->n_added && t->added[k].first < b) k++;
        t->first[b] = k;
    }
    t->first[256] = t->n_added;
    t->cache = zl_try_calloc(CACHE_SLOTS, sizeof(cache_ent));
    if (!t->cache) return zl_err_prefix("%s", t->name);
    if (pthread_mutex_init(&t->mu, NULL)) return zl_err("%s: cannot create a mutex", t->name);
    t->mu_init = 1;
    t->mctx = pcre2_match_context_create(NULL);
    if (!t->mctx) return zl_err("%s: out of memory", t->name);
    pcre2_set_match_limit(t->mctx, UINT32_MAX);
    return 0;
}

static int parse_normalizer(zl_tokenizer *t, const cJSON *n, int depth) {
    if (!n || cJSON_IsNull(n)) return 0;
    const cJSON *ty = cJSON_GetObjectItemCaseSensitive(n, "type");
    if (!cJSON_IsString(ty)) return zl_err("%s: normalizer has no \"type\"", t->name);
    if (strcmp(ty->valuestring, "NFC") == 0) { t->nfc = 1; return 0; }
    if (strcmp(ty->valuestring, "Sequence") == 0 && depth < 4) {
        const cJSON *l = cJSON_GetObjectItemCaseSensitive(n, "normalizers");
        if (!cJSON_IsArray(l)) return zl_err("%s: normalizer Sequence has no \"normalizers\" list", t->name);
        for (const cJSON *e = l->child; e; e = e->next)
            if (parse_normalizer(t, e, depth + 1)) return -1;
        return 0;
    }
    return zl_err("%s: normalizer \"%.40s\" is not supported (only NFC)", t->name, ty->valuestring);
}

static int parse_pretok_one(zl_tokenizer *t, const cJSON *p, int *byte_level) {
    const cJSON *ty = cJSON_GetObjectItemCaseSensitive(p, "type");
    if (!cJSON_IsString(ty)) return zl_err("%s: pre_tokenizer has no \"type\"", t->name);
    if (*byte_level) return zl_err("%s: pre_tokenizer \"%.40s\" after ByteLevel is not supported", t->name, ty->valuestring);
    if (strcmp(ty->valuestring, "Split") == 0) {
        const cJSON *pat = cJSON_GetObjectItemCaseSensitive(p, "pattern");
        const cJSON *re = cJSON_GetObjectItemCaseSensitive(pat, "Regex");
        const cJSON *str = cJSON_GetObjectItemCaseSensitive(pat, "String");
        const cJSON *beh = cJSON_GetObjectItemCaseSensitive(p, "behavior");
        int invert;
        if (json_bool(p, "invert", 0, &invert, t->name, "Split")) return -1;
        if (!cJSON_IsString(beh) || strcasecmp(beh->valuestring, "Isolated") != 0 || invert)
            return zl_err("%s: Split pre_tokenizer: only behavior \"Isolated\" without invert is supported", t->name);
        if (cJSON_IsString(re)) return add_stage(t, re->valuestring, 0);
        if (cJSON_IsString(str) && str->valuestring[0]) return add_stage(t, str->valuestring, 1);
        return zl_err("%s: Split pre_tokenizer has no \"pattern\" {\"Regex\": ...}", t->name);
    }
    if (strcmp(ty->valuestring, "ByteLevel") == 0) {
        int aps, use_regex;
        if (json_bool(p, "add_prefix_space", 0, &aps, t->name, "ByteLevel") ||
            json_bool(p, "use_regex", 1, &use_regex, t->name, "ByteLevel"))
            return -1;
        if (aps) return zl_err("%s: ByteLevel add_prefix_space=true is not supported", t->name);
        if (use_regex && add_stage(t, GPT2_REGEX, 0)) return -1;
        *byte_level = 1;
        return 0;
    }
    return zl_err("%s: pre_tokenizer \"%.40s\" is not supported (Split and ByteLevel are)", t->name, ty->valuestring);
}

static int parse_pretok(zl_tokenizer *t, const cJSON *p) {
    if (!p || cJSON_IsNull(p)) return zl_err("%s: no pre_tokenizer (a byte-level BPE needs ByteLevel)", t->name);
    int bl = 0;
    const cJSON *ty = cJSON_GetObjectItemCaseSensitive(p, "type");
    if (cJSON_IsString(ty) && strcmp(ty->valuestring, "Sequence") == 0) {
        const cJSON *l = cJSON_GetObjectItemCaseSensitive(p, "pretokenizers");
        if (!cJSON_IsArray(l)) return zl_err("%s: pre_tokenizer Sequence has no \"pretokenizers\" list", t->name);
        for (const cJSON *e = l->child; e; e = e->next)
            if (parse_pretok_one(t, e, &bl)) return -1;
    } else if (parse_pretok_one(t, p, &bl)) {
        return -1;
    }
    if (!bl) return zl_err("%s: the pre_tokenizer has no ByteLevel step (only byte-level BPE is supported)", t->name);
    return 0;
}

static int merges_from_json(zl_tokenizer *t, const cJSON *m) {
    if (!cJSON_IsArray(m)) return zl_err("%s: model.merges is not a list", t->name);
    int n = cJSON_GetArraySize(m);
    if (merges_alloc(t, (size_t)n)) return -1;
    char *tmp = NULL;
    size_t tmpcap = 0;
    int rank = 0, rc = 0;
    for (const cJSON *e = m->child; e && !rc; e = e->next, rank++) {
        if (cJSON_IsString(e)) {
            const char *s = e->valuestring, *sp = strchr(s, ' ');
            if (!sp || sp == s || !sp[1] || strchr(sp + 1, ' ')) {
                rc = zl_err("%s: merge %d (\"%.60s\") is not two tokens separated by one space", t->name, rank, s);
                break;
            }
            rc = merge_add(t, s, (size_t)(sp - s), sp + 1, strlen(sp + 1), rank, &tmp, &tmpcap);
        } else if (cJSON_IsArray(e) && cJSON_GetArraySize(e) == 2 && cJSON_IsString(e->child) &&
                   cJSON_IsString(e->child->next) && e->child->valuestring[0] && e->child->next->valuestring[0]) {
            const char *a = e->child->valuestring, *b = e->child->next->valuestring;
            rc = merge_add(t, a, strlen(a), b, strlen(b), rank, &tmp, &tmpcap);
        } else {
            rc = zl_err("%s: merge %d is neither \"a b\" nor a pair [\"a\", \"b\"]", t->name, rank);
        }
    }
    free(tmp);
    return rc;
}

static int load_tokenizer_json(zl_tokenizer *t, const char *text, size_t len) {
    cJSON *root = cJSON_ParseWithLength(text, len);
    if (!root) return zl_err("%s: not valid JSON (near byte %zu)", t->name, (size_t)(cJSON_GetErrorPtr() ? cJSON_GetErrorPtr() - text : 0));
    int rc = -1;
    if (!cJSON_IsObject(root)) { zl_err("%s: not a JSON object", t->name); goto out; }
    const cJSON *model = cJSON_GetObjectItemCaseSensitive(root, "model");
    if (!cJSON_IsObject(model)) { zl_err("%s: no \"model\" object (is this a tokenizer.json?)", t->name); goto out; }
    const cJSON *ty = cJSON_GetObjectItemCaseSensitive(model, "type");
    if (ty && !(cJSON_IsString(ty) && strcmp(ty->valuestring, "BPE") == 0)) {
        zl_err("%s: model type %.40s is not supported (only BPE)", t->name, cJSON_IsString(ty) ? ty->valuestring : "(not a string)");
        goto out;
    }
    int bf;
    if (json_bool(model, "byte_fallback", 0, &bf, t->name, "model")) goto out;
    if (bf) { zl_err("%s: BPE byte_fallback is not supported", t->name); goto out; }
    if (json_bool(model, "ignore_merges", 0, &t->ignore_merges, t->name, "model")) goto out;
    const cJSON *dr = cJSON_GetObjectItemCaseSensitive(model, "dropout");
    if (dr && !cJSON_IsNull(dr) && !(cJSON_IsNumber(dr) && dr->valuedouble == 0)) {
        zl_err("%s: BPE dropout is not supported", t->name);
        goto out;
    }
    static const char *affix[] = {"continuing_subword_prefix", "end_of_word_suffix"};
    for (int i = 0; i < 2; i++) {
        const cJSON *a = cJSON_GetObjectItemCaseSensitive(model, affix[i]);
        if (a && !cJSON_IsNull(a) && !(cJSON_IsString(a) && !a->valuestring[0])) {
            zl_err("%s: BPE %s is not supported", t->name, affix[i]);
            goto out;
        }
    }
    if (vocab_add(t, cJSON_GetObjectItemCaseSensitive(model, "vocab"))) goto out;
    const cJSON *added = cJSON_GetObjectItemCaseSensitive(root, "added_tokens");
    if (added && !cJSON_IsNull(added)) {
        if (!cJSON_IsArray(added)) { zl_err("%s: \"added_tokens\" is not a list", t->name); goto out; }
        int i = 0;
        for (const cJSON *e = added->child; e; e = e->next, i++) {
            int32_t id;
            if (json_id(cJSON_GetObjectItemCaseSensitive(e, "id"), &id)) {
                zl_err("%s: added token %d has no valid \"id\"", t->name, i);
                goto out;
            }
            if (added_add(t, e, id, i)) goto out;
        }
    }
    if (parse_normalizer(t, cJSON_GetObjectItemCaseSensitive(root, "normalizer"), 0)) goto out;
    if (parse_pretok(t, cJSON_GetObjectItemCaseSensitive(root, "pre_tokenizer"))) goto out;
    if (finish_tables(t)) goto out;
    if (merges_from_json(t, cJSON_GetObjectItemCaseSensitive(model, "merges"))) goto out;
    rc = 0;
out:
    cJSON_Delete(root);
    return rc;
}

/* vocab.json + merges.txt (+ tokenizer_config.json): the slow Qwen2Tokenizer's files; NFC and the
 * Qwen2 regex are implied. */
static int load_vocab_merges(zl_tokenizer *t, const char *dir) {
    char *vpath = zl_xasprintf("%s/vocab.json", dir), *mpath = zl_xasprintf("%s/merges.txt", dir);
    char *cpath = zl_xasprintf("%s/tokenizer_config.json", dir);
    char *vtext = NULL, *mtext = NULL, *ctext = NULL;
    size_t vlen, mlen, clen;
    cJSON *vocab = NULL, *cfg = NULL;
    int rc = -1;
    if (read_file(vpath, &vtext, &vlen) || read_file(mpath, &mtext, &mlen)) goto out;
    vocab = cJSON_ParseWithLength(vtext, vlen);
    if (!vocab) { zl_err("%s: not valid JSON", vpath); goto out; }
    if (vocab_add(t, vocab)) goto out;
    if (zl_file_exists(cpath)) {
        if (read_file(cpath, &ctext, &clen)) goto out;
        cfg = cJSON_ParseWithLength(ctext, clen);
        if (!cfg) { zl_err("%s: not valid JSON", cpath); goto out; }
        const cJSON *atd = cJSON_GetObjectItemCaseSensitive(cfg, "added_tokens_decoder");
        if (atd && !cJSON_IsNull(atd)) {
            if (!cJSON_IsObject(atd)) { zl_err("%s: \"added_tokens_decoder\" is not an object", cpath); goto out; }
            int i = 0;
            for (const cJSON *e = atd->child; e; e = e->next, i++) {
                char *end;
                long id = strtol(e->string ? e->string : "", &end, 10);
                if (!e->string || !e->string[0] || *end || id < 0 || id >= MAX_IDS) {
                    zl_err("%s: added_tokens_decoder key \"%.40s\" is not an id", cpath, e->string ? e->string : "");
                    goto out;
                }
                if (added_add(t, e, (int32_t)id, i)) goto out;
            }
        }
    }
    t->nfc = 1;
    if (add_stage(t, QWEN2_REGEX, 0) || finish_tables(t)) goto out;
    /* count lines for the table size */
    size_t lines = 1;
    for (size_t i = 0; i < mlen; i++) lines += mtext[i] == '\n';
    if (lines > INT_MAX / 4) { zl_err("%s: too many merges", mpath); goto out; }
    if (merges_alloc(t, lines)) goto out;
    char *tmp = NULL;
    size_t tmpcap = 0;
    int rank = 0;
    size_t pos = 0;
    for (int lineno = 1; pos < mlen; lineno++) {
        size_t e = pos;
        while (e < mlen && mtext[e] != '\n') e++;
        size_t a = pos, b = e;
        pos = e + 1;
        while (a < b && (mtext[a] == ' ' || mtext[a] == '\t' || mtext[a] == '\r')) a++;
        while (b > a && (mtext[b - 1] == ' ' || mtext[b - 1] == '\t' || mtext[b - 1] == '\r')) b--;
        if (a == b || (lineno == 1 && b - a >= 9 && memcmp(mtext + a, "#version:", 9) == 0)) continue;
        size_t s = a;
        while (s < b && mtext[s] != ' ' && mtext[s] != '\t') s++;
        size_t c = s;
        while (c < b && (mtext[c] == ' ' || mtext[c] == '\t')) c++;
        size_t d = c;
        while (d < b && mtext[d] != ' ' && mtext[d] != '\t') d++;
        if (s == b || d != b || memchr(mtext + a, 0, b - a)) {
            free(tmp);
            zl_err("%s: line %d is not two tokens separated by a space", mpath, lineno);
            goto out;
        }
        if (merge_add(t, mtext + a, s - a, mtext + c, b - c, rank++, &tmp, &tmpcap)) {
            free(tmp);
            zl_err_prefix("%s: line %d", mpath, lineno);
            goto out;
        }
    }
    free(tmp);
    rc = 0;
out:
    cJSON_Delete(vocab);
    cJSON_Delete(cfg);
    free(vtext); free(mtext); free(ctext);
    free(vpath); free(mpath); free(cpath);
    return rc;
}

int zl_tok_load_json(const char *json, size_t n, const char *name, zl_tokenizer **out) {
    *out = NULL;
    zl_tokenizer *t = tok_new(name ? name : "tokenizer.json");
    if (!json || load_tokenizer_json(t, json ? json : "", json ? n : 0)) {
        if (!json) zl_err("%s: no text", t->name);
        zl_tok_free(t);
        return -1;
    }
    *out = t;
    return 0;
}

static int load_json_file(const char *path, zl_tokenizer **out) {
    char *text;
    size_t len;
    if (read_file(path, &text, &len)) return -1;
    int rc = zl_tok_load_json(text, len, path, out);
    free(text);
    return rc;
}

static int load_vocab_dir(const char *dir, zl_tokenizer **out) {
    zl_tokenizer *t = tok_new(dir);
    if (load_vocab_merges(t, dir)) { zl_tok_free(t); return -1; }
    *out = t;
    return 0;
}

int zl_tok_load(const char *path, zl_tokenizer **out) {
    *out = NULL;
    if (!path || !*path) return zl_err("tokenizer: no path given");
    if (zl_is_dir(path)) {
        static const char *sub[] = {"", "/tokenizer"};
        for (int i = 0; i < 2; i++) {
            char *tj = zl_xasprintf("%s%s/tokenizer.json", path, sub[i]);
            char *vj = zl_xasprintf("%s%s/vocab.json", path, sub[i]);
            char *dir = zl_xasprintf("%s%s", path, sub[i]);
            int rc = 1;
            if (zl_file_exists(tj)) rc = load_json_file(tj, out);
            else if (zl_file_exists(vj)) rc = load_vocab_dir(dir, out);
            free(tj); free(vj); free(dir);
            if (rc != 1) return rc;
        }
        return zl_err("%s: no tokenizer.json, vocab.json + merges.txt, or tokenizer/ folder with them", path);
    }
    if (!zl_file_exists(path)) return zl_err("%s: no such file or folder", path);
    const char *base = strrchr(path, '/');
    base = base ? base + 1 : path;
    if (strcmp(base, "vocab.json") == 0 || strcmp(base, "merges.txt") == 0) {
        char *dir = base == path ? zl_xstrdup(".") : zl_xasprintf("%.*s", (int)(base - path - 1), path);
        if (!dir[0]) { free(dir); dir = zl_xstrdup("/"); }
        int rc = load_vocab_dir(dir, out);
        free(dir);
        return rc;
    }
    return load_json_file(path, out);
}

/* ------------------------------------------------------------------ encoding */

typedef struct {
    const zl_tokenizer *t;
    int32_t *ids;
    size_t n, cap;
    pcre2_match_data *md[MAX_STAGES];
    /* BPE scratch */
    int32_t *sid, *sprev, *snext;
    uint64_t *heap;
    size_t scap, hn, hcap;
    char *bl;
    size_t blcap;
} enc;

static int push_id(enc *e, int32_t id) {
    if (e->n == e->cap) {
        if (e->cap >= (size_t)INT_MAX) return zl_err("%s: more than %d tokens", e->t->name, INT_MAX);
        size_t c = e->cap ? e->cap * 2 : 256;
        if (c > (size_t)INT_MAX) c = (size_t)INT_MAX;
        int32_t *p = realloc(e->ids, sizeof(int32_t) * c);
        if (!p) return zl_err("%s: out of memory for %zu tokens", e->t->name, c);
        e->ids = p;
        e->cap = c;
    }
    e->ids[e->n++] = id;
    return 0;
}

static void heap_push(enc *e, uint64_t v) {
    size_t i = e->hn++;
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (e->heap[p] <= v) break;
        e->heap[i] = e->heap[p];
        i = p;
    }
    e->heap[i] = v;
}

static uint64_t heap_pop(enc *e) {
    uint64_t top = e->heap[0], v = e->heap[--e->hn];
    size_t i = 0, n = e->hn;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= n) break;
        if (c + 1 < n && e->heap[c + 1] < e->heap[c]) c++;
        if (e->heap[c] >= v) break;
        e->heap[i] = e->heap[c];
        i = c;
    }
    if (n) e->heap[i] = v;
    return top;
}

/* rank of the pair (a, b), or -1; *res gets the merged id */
static int32_t pair_rank(const zl_tokenizer *t, int32_t a, int32_t b, int32_t *res) {
    uint64_t key = (uint64_t)(uint32_t)a << 32 | (uint32_t)b;
    size_t k = merge_find(t, key);
    if (t->mkey[k] == UINT64_MAX) return -1;
    *res = t->mres[k];
    return t->mrank[k];
}

static void push_pair(enc *e, size_t i) {
    int32_t res;
    int32_t r = pair_rank(e->t, e->sid[i], e->sid[e->snext[i]], &res);
    if (r >= 0) heap_push(e, (uint64_t)(uint32_t)r << 32 | (uint64_t)i);
}

static int bpe_piece(enc *e, const unsigned char *p, size_t n) {
    const zl_tokenizer *t = e->t;
    if (n == 0) return 0;
    if (n == 1) return push_id(e, t->byte_id[p[0]]);
    if (t->ignore_merges) { /* the whole piece as one vocab token when there is one */
        if (n * 4 > e->blcap) {
            size_t c = n * 4 + 64;
            char *q = realloc(e->bl, c);
            if (!q) return zl_err("%s: out of memory", t->name);
            e->bl = q;
            e->blcap = c;
        }
        size_t m = 0;
        for (size_t i = 0; i < n; i++) m += put_utf8(e->bl + m, byte_cp(p[i]));
        int32_t id = hash_get(t, e->bl, m);
        if (id >= 0) return push_id(e, id);
    }
    size_t slot = 0;
    zl_tokenizer *mt = (zl_tokenizer *)t; /* the cache is the one mutable part, under its lock */
    if (n <= CACHE_KEY) {
        slot = (size_t)str_hash((const char *)p, n) & (CACHE_SLOTS - 1);
        pthread_mutex_lock(&mt->mu);
        cache_ent *c = &mt->cache[slot];
        if (c->klen == n && memcmp(c->key, p, n) == 0) {
            int32_t ids[CACHE_KEY];
            int k = c->nids;
            memcpy(ids, c->ids, sizeof(int32_t) * (size_t)k);
            pthread_mutex_unlock(&mt->mu);
            for (int i = 0; i < k; i++)
                if (push_id(e, ids[i])) return -1;
            return 0;
        }
        pthread_mutex_unlock(&mt->mu);
    }
    if (n > e->scap) {
        size_t c = n + 64;
        int32_t *a = realloc(e->sid, sizeof(int32_t) * c);
        if (a) e->sid = a;
        int32_t *b = realloc(e->sprev, sizeof(int32_t) * c);
        if (b) e->sprev = b;
        int32_t *d = realloc(e->snext, sizeof(int32_t) * c);
        if (d) e->snext = d;
        uint64_t *h = realloc(e->heap, sizeof(uint64_t) * c * 2);
        if (h) e->heap = h;
        if (!a || !b || !d || !h) return zl_err("%s: out of memory for a piece of %zu bytes", t->name, n);
        e->scap = c;
        e->hcap = c * 2;
    }
    for (size_t i = 0; i < n; i++) {
        e->sid[i] = t->byte_id[p[i]];
        e->sprev[i] = (int32_t)i - 1;
        e->snext[i] = i + 1 < n ? (int32_t)(i + 1) : -1;
    }
    e->hn = 0;
    for (size_t i = 0; i + 1 < n; i++) push_pair(e, i);
    /* lowest (rank, position) first; entries whose pair has changed since they were pushed are stale */
    while (e->hn) {
        uint64_t top = heap_pop(e);
        int32_t rank = (int32_t)(top >> 32);
        size_t i = (size_t)(uint32_t)top;
        if (e->sid[i] < 0 || e->snext[i] < 0) continue; /* merged away, or last */
        size_t j = (size_t)e->snext[i];
        int32_t res = -1;
        if (pair_rank(t, e->sid[i], e->sid[j], &res) != rank) continue; /* stale */
        e->sid[i] = res;
        e->sid[j] = -1;
        e->snext[i] = e->snext[j];
        if (e->snext[j] >= 0) e->sprev[e->snext[j]] = (int32_t)i;
        if (e->hn + 2 > e->hcap) { /* n - 1 first pushes, then at most 2 per merge: 3 n in all */
            size_t c = e->hcap * 2;
            uint64_t *h = realloc(e->heap, sizeof(uint64_t) * c);
            if (!h) return zl_err("%s: out of memory", t->name);
            e->heap = h;
            e->hcap = c;
        }
        if (e->sprev[i] >= 0) push_pair(e, (size_t)e->sprev[i]);
        if (e->snext[i] >= 0) push_pair(e, i);
    }
    size_t first = e->n;
    for (int32_t i = 0; i >= 0; i = e->snext[i])
        if (push_id(e, e->sid[i])) return -1;
    if (n <= CACHE_KEY) {
        pthread_mutex_lock(&mt->mu);
        cache_ent *c = &mt->cache[slot];
        c->klen = (uint8_t)n;
        c->nids = (uint8_t)(e->n - first);
        memcpy(c->key, p, n);
        memcpy(c->ids, e->ids + first, sizeof(int32_t) * (e->n - first));
        pthread_mutex_unlock(&mt->mu);
    }
    return 0;
}

/* Splits s by the regex of `stage` (the Isolated behaviour: matches and the gaps between them are
 * pieces), then the next stage, then BPE. */
static int split_stage(enc *e, int stage, const unsigned char *s, size_t n) {
    const zl_tokenizer *t = e->t;
    if (stage >= t->n_stages) return bpe_piece(e, s, n);
    if (n == 0) return 0;
    pcre2_code *re = t->re[stage];
    pcre2_match_data *md = e->md[stage];
    size_t prev = 0, off = 0;
    while (off <= n) {
        int rc = pcre2_match(re, s, n, off, PCRE2_NO_UTF_CHECK, md, t->mctx);
        if (rc == PCRE2_ERROR_JIT_STACKLIMIT)
            rc = pcre2_match(re, s, n, off, PCRE2_NO_UTF_CHECK | PCRE2_NO_JIT, md, t->mctx);
        if (rc == PCRE2_ERROR_NOMATCH) break;
        if (rc < 0) {
            PCRE2_UCHAR msg[256];
            pcre2_get_error_message(rc, msg, sizeof msg);
            return zl_err("%s: pre-tokenizer regex failed on a %zu-byte text: %s", t->name, n, (const char *)msg);
        }
        PCRE2_SIZE *ov = pcre2_get_ovector_pointer(md);
        size_t ms = ov[0], me = ov[1];
        if (ms < prev || me < ms || me > n) return zl_err("%s: pre-tokenizer regex gave a bad match", t->name);
        if (ms > prev && split_stage(e, stage + 1, s + prev, ms - prev)) return -1;
        if (me > ms && split_stage(e, stage + 1, s + ms, me - ms)) return -1;
        prev = me; /* as the reference: an empty match also splits the text there */
        if (me > ms) {
            off = me;
        } else { /* step over one character */
            off = ms + 1;
            while (off < n && (s[off] & 0xC0) == 0x80) off++;
        }
    }
    if (prev < n) return split_stage(e, stage + 1, s + prev, n - prev);
    return 0;
}

static int is_ascii(const unsigned char *s, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (s[i] & 0x80) return 0;
    return 1;
}

static int encode_section(enc *e, const unsigned char *s, size_t n) {
    if (n == 0) return 0;
    if (e->t->nfc && !is_ascii(s, n)) {
        utf8proc_uint8_t *d = NULL;
        utf8proc_ssize_t m = utf8proc_map(s, (utf8proc_ssize_t)n, &d, UTF8PROC_STABLE | UTF8PROC_COMPOSE);
        if (m < 0) return zl_err("%s: NFC failed: %s", e->t->name, utf8proc_errmsg(m));
        int rc = split_stage(e, 0, d, (size_t)m);
        free(d);
        return rc;
    }
    return split_stage(e, 0, s, n);
}

static int word_char_before(const unsigned char *s, size_t i) {
    if (i == 0) return 0;
    size_t k = i - 1;
    while (k > 0 && (s[k] & 0xC0) == 0x80) k--;
    size_t j = k;
    unsigned cp = get_utf8(s, i, &j);
    utf8proc_category_t c = utf8proc_category((utf8proc_int32_t)cp);
    return cp == '_' || (c >= UTF8PROC_CATEGORY_LU && c <= UTF8PROC_CATEGORY_NO);
}
static int word_char_at(const unsigned char *s, size_t n, size_t i) {
    if (i >= n) return 0;
    unsigned cp = get_utf8(s, n, &i);
    utf8proc_category_t c = utf8proc_category((utf8proc_int32_t)cp);
    return cp == '_' || (c >= UTF8PROC_CATEGORY_LU && c <= UTF8PROC_CATEGORY_NO);
}

/* The added token starting at s[i] (longest first), or -1. */
static int match_added(const zl_tokenizer *t, const unsigned char *s, size_t n, size_t i) {
    unsigned b = s[i];
    for (int k = t->first[b]; k < t->first[b + 1]; k++) {
        const added_tok *a = &t->added[k];
        if (a->len > n - i || memcmp(t->arena + a->off, s + i, a->len) != 0) continue;
        if (a->single_word && (word_char_before(s, i) || word_char_at(s, n, i + a->len))) continue;
        return k;
    }
    return -1;
}

/* trailing/leading JS whitespace of s[a..b) */
static size_t trim_end(const unsigned char *s, size_t a, size_t b) {
    while (b > a) {
        size_t k = b - 1;
        while (k > a && (s[k] & 0xC0) == 0x80) k--;
        size_t j = k;
        if (!js_space(get_utf8(s, b, &j))) break;
        b = k;
    }
    return b;
}
static size_t trim_start(const unsigned char *s, size_t a, size_t b) {
    while (a < b) {
        size_t j = a;
        if (!js_space(get_utf8(s, b, &j))) break;
        a = j;
    }
    return a;
}

int zl_tok_encode_len(const zl_tokenizer *t, const char *text, size_t len, int32_t **ids, int *n) {
    *ids = NULL;
    *n = 0;
    if (!t) return zl_err("tokenizer: not loaded");
    if (!text && len) return zl_err("%s: no text", t->name);
    if (len > TOK_MAX_INPUT) return zl_err("%s: text of %zu bytes is over the 1 GiB limit", t->name, len);
    size_t fixed_n = 0;
    char *fixed = NULL;
    if (text && utf8_repair(text, len, &fixed, &fixed_n)) return zl_err_prefix("%s", t->name);
    const unsigned char *s = (const unsigned char *)(fixed ? fixed : text ? text : "");
    size_t sn = fixed ? fixed_n : len;
    enc e = {.t = t};
    int rc = 0;
    for (int i = 0; i < t->n_stages && !rc; i++) {
        e.md[i] = pcre2_match_data_create_from_pattern(t->re[i], NULL);
        if (!e.md[i]) rc = zl_err("%s: out of memory", t->name);
    }
    /* sections: text between added tokens; lstrip/rstrip trim the neighbouring text */
    size_t start = 0, i = 0;
    int prev_rstrip = 0;
    while (!rc && i < sn) {
        int k = t->n_added && t->first[s[i]] < t->first[s[i] + 1] ? match_added(t, s, sn, i) : -1;
        if (k < 0) { i++; continue; }
        const added_tok *a = &t->added[k];
        size_t b = start, end = i;
        if (prev_rstrip) b = trim_start(s, b, end);
        if (a->lstrip) end = trim_end(s, b, end);
        rc = encode_section(&e, s + b, end - b);
        if (!rc) rc = push_id(&e, a->id);
        prev_rstrip = a->rstrip;
        i += a->len;
        start = i;
    }
    if (!rc && start < sn) {
        size_t b = prev_rstrip ? trim_start(s, start, sn) : start;
        rc = encode_section(&e, s + b, sn - b);
    }
    for (int k = 0; k < t->n_stages; k++) pcre2_match_data_free(e.md[k]);
    free(e.sid); free(e.sprev); free(e.snext); free(e.heap); free(e.bl);
    free(fixed);
    if (rc) { free(e.ids); return -1; }
    if (!e.ids) e.ids = zl_xmalloc(sizeof(int32_t));
    *ids = e.ids;
    *n = (int)e.n;
    return 0;
}

int zl_tok_encode(const zl_tokenizer *t, const char *text, int32_t **ids, int *n) {
    return zl_tok_encode_len(t, text, text ? strlen(text) : 0, ids, n);
}

int zl_tok_encode_prompt(const zl_tokenizer *t, const char *prompt, int max_len, int32_t **ids, int *n) {
    *ids = NULL;
    *n = 0;
    size_t pn = prompt ? strlen(prompt) : 0;
    if (pn > TOK_MAX_INPUT) return zl_err("%s: prompt of %zu bytes is over the 1 GiB limit", t ? t->name : "tokenizer", pn);
    size_t a = strlen(ZL_TOK_TEMPLATE_PRE), b = strlen(ZL_TOK_TEMPLATE_POST);
    char *s = zl_try_malloc(a + pn + b + 1);
    if (!s) return -1;
    memcpy(s, ZL_TOK_TEMPLATE_PRE, a);
    if (pn) memcpy(s + a, prompt, pn);
    memcpy(s + a + pn, ZL_TOK_TEMPLATE_POST, b + 1);
    int rc = zl_tok_encode_len(t, s, a + pn + b, ids, n);
    free(s);
    if (rc == 0 && max_len > 0 && *n > max_len) *n = max_len;
    return rc;
}

/* ------------------------------------------------------------------ decoding and lookups */

typedef struct { char *s; size_t n, cap; } bytes;
static int bytes_put(bytes *b, const void *p, size_t n) {
    if (b->n + n + 1 > b->cap) {
        size_t c = b->cap ? b->cap : 256;
        while (c < b->n + n + 1) c *= 2;
        char *q = realloc(b->s, c);
        if (!q) return zl_err("out of memory");
        b->s = q;
        b->cap = c;
    }
    memcpy(b->s + b->n, p, n);
    b->n += n;
    b->s[b->n] = 0;
    return 0;
}

char *zl_tok_decode(const zl_tokenizer *t, const int32_t *ids, int n, int skip_special, size_t *out_len) {
    if (out_len) *out_len = 0;
    if (!t) { zl_err("tokenizer: not loaded"); return NULL; }
    if (n < 0 || (n > 0 && !ids)) { zl_err("%s: bad id list", t->name); return NULL; }
    bytes raw = {0};
    if (bytes_put(&raw, "", 0)) return NULL;
    for (int i = 0; i < n; i++) {
        int32_t id = ids[i];
        if (id < 0 || id >= t->n_ids || !(t->tok_flags[id] & TF_PRESENT)) {
            free(raw.s);
            zl_err("%s: id %d (position %d) is not a token of this tokenizer", t->name, (int)id, i);
            return NULL;
        }
        const char *s = t->arena + t->tok_off[id];
        size_t len = t->tok_len[id];
        uint8_t f = t->tok_flags[id];
        int rc = 0;
        if (f & TF_ADDED) {
            if (!(skip_special && (f & TF_SPECIAL))) rc = bytes_put(&raw, s, len);
        } else if (!(rc = bytes_put(&raw, s, len))) { /* room for the token; its bytes are never longer */
            size_t j = 0, o = raw.n - len;
            while (j < len) {
                size_t j0 = j;
                unsigned cp = get_utf8((const unsigned char *)s, len, &j);
                int by = cp_byte(cp);
                if (by >= 0) {
                    raw.s[o++] = (char)by;
                } else { /* not a byte symbol: kept as it is */
                    memmove(raw.s + o, s + j0, j - j0);
                    o += j - j0;
                }
            }
            raw.n = o;
            raw.s[o] = 0;
        }
        if (rc) { free(raw.s); return NULL; }
    }
    char *fixed;
    size_t fn;
    if (utf8_repair(raw.s, raw.n, &fixed, &fn)) { free(raw.s); return NULL; }
    if (fixed) {
        free(raw.s);
        if (out_len) *out_len = fn;
        return fixed;
    }
    if (out_len) *out_len = raw.n;
    return raw.s;
}

int zl_tok_id(const zl_tokenizer *t, const char *token) {
    if (!t || !token) return -1;
    return hash_get(t, token, strlen(token));
}

const char *zl_tok_token(const zl_tokenizer *t, int id) {
    if (!t || id < 0 || id >= t->n_ids || !(t->tok_flags[id] & TF_PRESENT)) return NULL;
    return t->arena + t->tok_off[id];
}

int zl_tok_vocab_size(const zl_tokenizer *t) {
    if (!t) return 0;
    int m = 0;
    for (int i = 0; i < t->n_ids; i++)
        if (t->tok_flags[i] & TF_PRESENT) m = i + 1;
    return m;
}

void zl_tok_counts(const zl_tokenizer *t, int *vocab, int *merges, int *added) {
    if (vocab) *vocab = t ? t->n_vocab : 0;
    if (merges) *merges = t ? t->n_merges : 0;
    if (added) *added = t ? t->n_added : 0;
}
