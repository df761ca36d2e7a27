/* cmd_tokenize.c — `zlora debug tokenize` (see cmd_tokenize.h).
 *
 *   zlora debug tokenize --tokenizer PATH (--prompts FILE.json | --text STRING) [--template] [--max-len N]
 *
 * FILE.json is a JSON array of strings. Prints one JSON array holding each prompt's id list (one
 * prompt per line), plain encoding or, with --template, the Z-Image template cut to --max-len tokens
 * (512 by default; 0: no cut). */
#include "cli/cmd_tokenize.h"

#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/base.h"
#include "cli/cli.h"
#include "model/tokenizer.h"

static void usage(FILE *f) {
    fprintf(f, "usage: zlora debug tokenize --tokenizer PATH (--prompts FILE.json | --text STRING) [--template] [--max-len N]\n"
               "  --tokenizer PATH   tokenizer.json, a folder with it (or vocab.json + merges.txt), or a model folder\n"
               "                     with tokenizer/\n"
               "  --prompts FILE     a JSON array of strings\n"
               "  --text STRING      one prompt\n"
               "  --template         wrap each prompt in the Z-Image template and cut at --max-len tokens\n"
               "  --max-len N        the cut for --template (default %d; 0: none)\n"
               "Prints a JSON array with the id list of each prompt.\n",
            ZL_TOK_MAX_LEN);
}

static cJSON *read_prompts(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) { zl_err("%s: cannot open", path); return NULL; }
    zl_buf b = {0};
    char chunk[65536];
    size_t r;
    while ((r = fread(chunk, 1, sizeof chunk, f)) > 0) {
        if (memchr(chunk, 0, r)) { fclose(f); zl_buf_free(&b); zl_err("%s: not a JSON text (NUL byte)", path); return NULL; }
        zl_buf_printf(&b, "%.*s", (int)r, chunk);
    }
    int bad = ferror(f);
    fclose(f);
    if (bad) { zl_buf_free(&b); zl_err("%s: read error", path); return NULL; }
    cJSON *j = b.s ? cJSON_ParseWithLength(b.s, b.len) : NULL;
    zl_buf_free(&b);
    if (!j) { zl_err("%s: not valid JSON", path); return NULL; }
    if (!cJSON_IsArray(j)) { cJSON_Delete(j); zl_err("%s: not a JSON array of strings", path); return NULL; }
    int i = 0;
    for (const cJSON *e = j->child; e; e = e->next, i++)
        if (!cJSON_IsString(e)) { cJSON_Delete(j); zl_err("%s: element %d is not a string", path, i); return NULL; }
    return j;
}

int zl_cmd_debug_tokenize(int argc, char **argv) {
    const char *tpath = NULL, *ppath = NULL, *text = NULL;
    int templ = 0, max_len = ZL_TOK_MAX_LEN;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) { usage(stdout); return 0; }
        if (!strcmp(a, "--template")) { templ = 1; continue; }
        int known = !strcmp(a, "--tokenizer") || !strcmp(a, "--prompts") || !strcmp(a, "--text") || !strcmp(a, "--max-len");
        if (!known || i + 1 >= argc) {
            fprintf(stderr, "error: debug tokenize: %s '%s'\n", known ? "missing value for" : "unknown argument", a);
            usage(stderr);
            return 2;
        }
        const char *v = argv[++i];
        if (!strcmp(a, "--tokenizer")) tpath = v;
        else if (!strcmp(a, "--prompts")) ppath = v;
        else if (!strcmp(a, "--text")) text = v;
        else {
            char *end;
            long m = strtol(v, &end, 10);
            if (!*v || *end || m < 0 || m > 1000000000) {
                fprintf(stderr, "error: debug tokenize: --max-len wants a count >= 0, not '%s'\n", v);
                return 2;
            }
            max_len = (int)m;
        }
    }
    if (!tpath || (!ppath) == (!text)) {
        fprintf(stderr, "error: debug tokenize: give --tokenizer and one of --prompts / --text\n");
        usage(stderr);
        return 2;
    }
    cJSON *prompts = NULL;
    if (ppath) {
        prompts = read_prompts(ppath);
        if (!prompts) return zl_cli_fail();
    }
    zl_tokenizer *tok;
    if (zl_tok_load(tpath, &tok)) { cJSON_Delete(prompts); return zl_cli_fail(); }
    int rc = 0, i = 0;
    const cJSON *e = prompts ? prompts->child : NULL;
    zl_buf out = {0};
    zl_buf_puts(&out, "[");
    for (;; i++) {
        const char *p = prompts ? (e ? e->valuestring : NULL) : (i == 0 ? text : NULL);
        if (!p) break;
        int32_t *ids;
        int n;
        if (templ ? zl_tok_encode_prompt(tok, p, max_len, &ids, &n) : zl_tok_encode(tok, p, &ids, &n)) {
            zl_err_prefix("prompt %d", i);
            rc = 1;
            break;
        }
        zl_buf_puts(&out, i ? ",\n[" : "\n[");
        for (int k = 0; k < n; k++) zl_buf_printf(&out, k ? ",%d" : "%d", (int)ids[k]);
        zl_buf_puts(&out, "]");
        free(ids);
        if (e) e = e->next;
    }
    zl_buf_puts(&out, i ? "\n]\n" : "]\n");
    zl_tok_free(tok);
    cJSON_Delete(prompts);
    if (rc) { zl_buf_free(&out); return zl_cli_fail(); }
    fwrite(out.s, 1, out.len, stdout);
    zl_buf_free(&out);
    return fflush(stdout) == 0 ? 0 : (zl_err("cannot write the output"), zl_cli_fail());
}
