/* tokenizer.h — the Qwen2/Qwen3 byte-level BPE tokenizer (Z-Image's text encoder front end).
 *
 * Loads a HuggingFace tokenizer.json, or vocab.json + merges.txt (+ the added tokens of a
 * tokenizer_config.json beside them), and turns UTF-8 text into token ids exactly like the reference
 * (@lenml/tokenizers, the JS port of HF tokenizers; see tests/ref/tokenize_ref.mjs):
 *
 *   text ─▶ invalid UTF-8 replaced by U+FFFD (one per maximal subpart, as TextDecoder does)
 *        ─▶ added tokens split out first (leftmost, then longest match; lstrip/rstrip trim the
 *           whitespace of the neighbouring text; single_word needs non-word characters around it)
 *        ─▶ each remaining section: NFC (utf8proc) ─▶ the pre-tokenizer regex (PCRE2, UTF + UCP)
 *        ─▶ each piece's UTF-8 bytes as GPT-2 byte symbols ─▶ BPE merges by rank (lowest first,
 *           leftmost among equals), cached per piece ─▶ vocab ids.
 *
 * The regex keeps the reference's meaning, which is JavaScript's, not PCRE2's: `\s` is JS whitespace
 * (it includes U+FEFF, not U+0085), and `(?i:...)` is ASCII-only case folding (so `'ſ` is not `'s`).
 * Unicode character properties come from PCRE2 and utf8proc: characters assigned after their Unicode
 * version (PCRE2 10.42: Unicode 14) may split differently from a newer reference.
 *
 * Supported tokenizer.json: normalizer null / NFC (or a Sequence of them); pre_tokenizer ByteLevel, or
 * a Sequence of Split(Regex, Isolated, invert false) then ByteLevel (add_prefix_space false); model
 * BPE without byte_fallback, dropout or subword affixes; merges as "a b" strings or [a, b] pairs.
 * Anything else is refused with a message naming the file and the key. The decoder and post-processor
 * are taken to be ByteLevel (nothing added), as in every Qwen2/Qwen3 file.
 *
 * Thread safety: a loaded tokenizer may be used from several threads at once (the piece cache is
 * locked).
 */
#ifndef ZL_TOKENIZER_H
#define ZL_TOKENIZER_H

#include <stddef.h>
#include <stdint.h>

typedef struct zl_tokenizer zl_tokenizer;

/* The Z-Image prompt template (Qwen3 chat template, one user turn, generation prompt). */
#define ZL_TOK_TEMPLATE_PRE "<|im_start|>user\n"
#define ZL_TOK_TEMPLATE_POST "<|im_end|>\n<|im_start|>assistant\n"
#define ZL_TOK_MAX_LEN 512

/* path: a tokenizer.json; a folder holding tokenizer.json (or vocab.json + merges.txt); a model
 * folder with a tokenizer/ subfolder; or a vocab.json (merges.txt and tokenizer_config.json are then
 * read from the same folder). */
int zl_tok_load(const char *path, zl_tokenizer **out);
/* The text of a tokenizer.json already in memory (name is used in messages). */
int zl_tok_load_json(const char *json, size_t n, const char *name, zl_tokenizer **out);
void zl_tok_free(zl_tokenizer *t);

/* Plain encoding, no template and nothing added. *ids is malloc'd (never NULL on success, even when
 * *n == 0); free() it. Input of any bytes is accepted (invalid UTF-8 becomes U+FFFD); inputs over
 * 1 GiB are refused. */
int zl_tok_encode(const zl_tokenizer *t, const char *text, int32_t **ids, int *n);
int zl_tok_encode_len(const zl_tokenizer *t, const char *text, size_t len, int32_t **ids, int *n);
/* The Z-Image prompt: TEMPLATE_PRE + prompt + TEMPLATE_POST, encoded, then cut to the first max_len
 * tokens (max_len <= 0: no cut), as the pipeline's truncation=True does (a long prompt loses the
 * template's tail). */
int zl_tok_encode_prompt(const zl_tokenizer *t, const char *prompt, int max_len, int32_t **ids, int *n);

/* ids -> text (malloc'd, NUL-terminated; *len, when not NULL, gets its length, which counts any NUL
 * bytes inside): vocab tokens byte-decoded, added tokens as their content, special ones left out when
 * skip_special; invalid UTF-8 in the result becomes U+FFFD. NULL with an error for an id the
 * tokenizer does not have. For valid UTF-8 text s, decode(encode(s)) is NFC(s). */
char *zl_tok_decode(const zl_tokenizer *t, const int32_t *ids, int n, int skip_special, size_t *len);

/* The id of a token given in its vocab form ("<|im_end|>", "Ġthe"), or -1 (no error set). */
int zl_tok_id(const zl_tokenizer *t, const char *token);
/* The vocab form of an id, or NULL. */
const char *zl_tok_token(const zl_tokenizer *t, int id);
/* One more than the largest id. */
int zl_tok_vocab_size(const zl_tokenizer *t);
/* Counts, for reports: vocab entries, merges, added tokens. */
void zl_tok_counts(const zl_tokenizer *t, int *vocab, int *merges, int *added);

#endif
