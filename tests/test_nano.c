/* test_nano.c — the committed nano model parts (models/nano/, made by models/nano/make.sh):
 *   tokenizer     ids of 225 prompts (captions of both data sets, odd strings) equal the JS reference's
 *                 (tests/data/nano/expected*.json, by tests/ref/tokenize_file.mjs); fresh captions
 *                 round-trip and, when node and tests/ref/node_modules are there, match the JS
 *                 reference run now; the vocabulary is what the captions need
 *   text encoder  `zlora debug te` on the model folder equals tests/ref/qwen3_ref.py's features
 *                 (tests/data/nano/te_case*, by make_te.py --golden)
 *   (the VAE: test_nano_vae.c)
 *   folder        model_index.json (ZImagePipeline), scheduler shift 3, the character set. */
#include "test.h"
#include "base/base.h"
#include "io/safetensors.h"
#include "model/qwen3.h"
#include "model/tokenizer.h"
#include "train/nano_data.h"

#include <cjson/cJSON.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define NANO "models/nano"
#define NDATA "tests/data/nano"

/* "[\n[1,2],\n[3]\n]\n": the format of `zlora debug tokenize` and tests/ref/tokenize_file.mjs */
static char *ids_text(zl_tokenizer *t, const cJSON *prompts, int templ) {
    zl_buf b = {0};
    zl_buf_puts(&b, "[");
    int i = 0;
    for (const cJSON *e = prompts->child; e; e = e->next, i++) {
        int32_t *ids;
        int n;
        int rc = templ ? zl_tok_encode_prompt(t, e->valuestring, ZL_TOK_MAX_LEN, &ids, &n) : zl_tok_encode(t, e->valuestring, &ids, &n);
        if (rc) { zl_buf_free(&b); return NULL; }
        zl_buf_puts(&b, i ? ",\n[" : "\n[");
        for (int k = 0; k < n; k++) zl_buf_printf(&b, k ? ",%d" : "%d", (int)ids[k]);
        zl_buf_puts(&b, "]");
        free(ids);
    }
    zl_buf_puts(&b, "\n]\n");
    return b.s;
}

/* the first differing line of two texts, for the failure message */
static int first_diff_line(const char *a, const char *b) {
    int line = 1;
    for (; *a && *a == *b; a++, b++) line += *a == '\n';
    return line;
}

TEST(nano_tokenizer_matches_js_golden) {
    zl_tokenizer *t;
    CHECK(zl_tok_load(NANO, &t) == 0); /* a model folder with tokenizer/ */
    cJSON *pr = zl_test_read_json(NDATA "/prompts.json");
    CHECK(pr && cJSON_GetArraySize(pr) > 200);
    for (int templ = 0; templ < 2; templ++) {
        char *want = zl_test_slurp(templ ? NDATA "/expected_template.json" : NDATA "/expected.json", NULL);
        char *got = ids_text(t, pr, templ);
        int same = want && got && !strcmp(want, got);
        if (!same && want && got) fprintf(stderr, "  %s: first difference on line %d\n", templ ? "template" : "plain", first_diff_line(want, got));
        free(want);
        free(got);
        CHECK(same);
    }
    cJSON_Delete(pr);
    zl_tok_free(t);
}

/* captions of both data sets for another seed, as JSON, and the ids */
static cJSON *fresh_captions(uint64_t seed, int n) {
    cJSON *a = cJSON_CreateArray();
    for (int i = 0; i < n; i++) {
        zl_nano_scene s;
        zl_nano_scene_make(seed, i, i % 10 == 9, &s);
        char *c = zl_nano_caption(&s), *p = strstr(c, "[trigger]");
        if (p && i % 20 == 9) memcpy(p, "zxq", 3), memmove(p + 3, p + 9, strlen(p + 9) + 1); /* as trained */
        cJSON_AddItemToArray(a, cJSON_CreateString(c));
        free(c);
    }
    return a;
}

TEST(nano_tokenizer_roundtrip_and_vocab) {
    zl_tokenizer *t;
    CHECK(zl_tok_load(NANO "/tokenizer", &t) == 0);
    int nv, nm, na;
    zl_tok_counts(t, &nv, &nm, &na);
    CHECK(na == 3 && nv >= 256 && nv + na == zl_tok_vocab_size(t));
    CHECK(nm >= 100 && nm <= nv - 256); /* learned merges; each new token comes from one */
    CHECK(zl_tok_vocab_size(t) >= 300 && zl_tok_vocab_size(t) <= 1024);
    CHECK(zl_tok_id(t, "<|endoftext|>") == nv && zl_tok_id(t, "<|im_start|>") == nv + 1 && zl_tok_id(t, "<|im_end|>") == nv + 2);
    /* the caption words are whole tokens; the trigger is not a word the tokenizer knows */
    const char *words[] = {"Ġcircle", "Ġsquare", "Ġtriangle", "Ġstar", "Ġring", "Ġcross", "Ġbackground", "Ġgradient",
                           "Ġcentre", "Ġpurple", "Ġorange", "Ġphoto", "user", "assistant"};
    for (size_t i = 0; i < sizeof words / sizeof *words; i++) CHECK_MSG(zl_tok_id(t, words[i]) >= 256, "%s", words[i]);
    CHECK(zl_tok_id(t, "Ġzxq") < 0 && zl_tok_id(t, "Ġdiamond") < 0);
    cJSON *caps = fresh_captions(4242, 300);
    int i = 0;
    for (const cJSON *e = caps->child; e; e = e->next, i++) {
        int32_t *ids;
        int n;
        CHECK(zl_tok_encode(t, e->valuestring, &ids, &n) == 0);
        CHECK(n > 5 && n < 40);
        char *back = zl_tok_decode(t, ids, n, 0, NULL);
        CHECK_MSG(back && !strcmp(back, e->valuestring), "caption %d: \"%s\" came back as \"%s\"", i, e->valuestring, back ? back : "(null)");
        free(back);
        free(ids);
    }
    cJSON_Delete(caps);
    zl_tok_free(t);
}

TEST(nano_tokenizer_matches_js_live) {
    if (zl_test_run("node --version >/dev/null 2>&1", NULL) != 0 || access("tests/ref/node_modules/@lenml/tokenizers", F_OK) != 0) {
        fprintf(stderr, "  (skipped: node or tests/ref/node_modules missing; `make deps` installs them)\n");
        return;
    }
    zl_tokenizer *t;
    CHECK(zl_tok_load(NANO, &t) == 0);
    cJSON *caps = fresh_captions(777, 300);
    char *js = cJSON_Print(caps), p[700], o[700], cmd[2200];
    snprintf(p, sizeof p, "%s/nano_prompts.json", zl_test_dir());
    snprintf(o, sizeof o, "%s/nano_js.json", zl_test_dir());
    FILE *f = fopen(p, "wb");
    CHECK(f);
    fputs(js, f);
    fclose(f);
    free(js);
    for (int templ = 0; templ < 2; templ++) {
        snprintf(cmd, sizeof cmd, "node tests/ref/tokenize_file.mjs %s '%s' '%s' %s >/dev/null", NANO "/tokenizer", p, o, templ ? "--template" : "");
        CHECK(zl_test_run(cmd, NULL) == 0);
        char *want = zl_test_slurp(o, NULL), *got = ids_text(t, caps, templ);
        int same = want && got && !strcmp(want, got);
        if (!same && want && got) fprintf(stderr, "  first difference on line %d\n", first_diff_line(want, got));
        free(want);
        free(got);
        CHECK(same);
    }
    cJSON_Delete(caps);
    zl_tok_free(t);
}

TEST(nano_text_encoder) {
    cJSON *pr = zl_test_read_json(NDATA "/prompts.json");
    CHECK(pr);
    zl_qwen3 *m;
    CHECK(zl_qwen3_load(NANO, NULL, &m) == 0);
    zl_tokenizer *t;
    CHECK(zl_tok_load(NANO, &t) == 0);
    CHECK(m->cfg.vocab == zl_tok_vocab_size(t) && m->cfg.n_kv_heads < m->cfg.n_heads && m->have_config_json);
    CHECK(m->weight_dtype == ZL_BF16 && m->embed_dtype == ZL_BF16); /* the file is BF16: used in place */
    int hidden = m->cfg.hidden;
    zl_qwen3_free(m);
    zl_tok_free(t);
    for (int c = 0; c < 3; c++) {
        char golden[200], out[700], cmd[2400];
        snprintf(golden, sizeof golden, NDATA "/te_case%d.safetensors", c);
        const char *prompt = cJSON_GetArrayItem(pr, c)->valuestring;
        for (int w = 0; w < 2; w++) {
            snprintf(out, sizeof out, "%s/nano_te_%d_%d.safetensors", zl_test_dir(), c, w);
            snprintf(cmd, sizeof cmd, "%s -q debug te --model " NANO " --prompt '%s' --out '%s' %s", zl_test_bin(), prompt, out,
                     w ? "--weights f32" : "");
            CHECK(zl_test_run(cmd, NULL) == 0);
            zl_st *a, *b;
            CHECK(zl_st_open(out, &a) == 0);
            CHECK(zl_st_open(golden, &b) == 0);
            const zl_tensor_info *ia = zl_st_find(a, "ids"), *ib = zl_st_find(b, "ids"), *ca = zl_st_find(a, "cap");
            CHECK(ia && ib && ca && ia->nelem == ib->nelem && ca->nelem == ia->nelem * (size_t)hidden);
            CHECK(ia->nbytes == ib->nbytes && memcmp(ia->data, ib->data, ia->nbytes) == 0);
            float *cap = zl_st_read_f32(a, ca);
            double e = zl_test_golden_rel_l2(cap, golden, "cap", ca->nelem);
            free(cap);
            zl_st_close(a);
            zl_st_close(b);
            CHECK_MSG(e < 1e-5, "case %d (%s weights): rel. L2 %.3g", c, w ? "f32" : "bf16", e);
        }
    }
    cJSON_Delete(pr);
}

TEST(nano_folder) {
    cJSON *j = zl_test_read_json(NANO "/model_index.json");
    CHECK(j);
    const cJSON *cls = cJSON_GetObjectItemCaseSensitive(j, "_class_name");
    CHECK(cJSON_IsString(cls) && !strcmp(cls->valuestring, "ZImagePipeline"));
    cJSON_Delete(j);
    j = zl_test_read_json(NANO "/scheduler/scheduler_config.json");
    CHECK(j);
    const cJSON *sh = cJSON_GetObjectItemCaseSensitive(j, "shift");
    CHECK(cJSON_IsNumber(sh) && sh->valuedouble == 3.0);
    cJSON_Delete(j);
    /* the committed character set is what the generator makes */
    for (int i = 0; i < 8; i++) {
        char p[200];
        snprintf(p, sizeof p, NANO "/data_zxq/zxq_%03d.txt", i);
        char *cap = zl_test_slurp(p, NULL);
        CHECK_MSG(cap, "%s missing", p);
        zl_nano_scene s;
        zl_nano_scene_make(0, i, 1, &s);
        char *want = zl_nano_caption(&s);
        size_t n = strlen(want);
        int same = !strncmp(cap, want, n) && !strcmp(cap + n, "\n");
        free(want);
        free(cap);
        CHECK_MSG(same, "%s is not the generator's caption", p);
    }
}
