/* cmd_te.c — `zlora debug te --model PATH (--prompt TEXT | --ids 1,2,3) --out OUT.safetensors`:
 * the Qwen3 text encoder on one prompt. OUT holds `cap` [L, hidden] float32 (hidden_states[-2] of the
 * real tokens, what the DiT takes as its caption) and `ids` [L] int32. --prompt goes through the
 * tokenizer and the Z-Image chat template (max 512 tokens); --ids bypasses tokenization. */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include "base/base.h"
#include "cli/cli.h"
#include "cli/cmd_te.h"
#include "io/safetensors.h"
#include "model/qwen3.h"
#include "model/te_cache.h"
#include "model/tokenizer.h"

static const char *usage =
    "usage: zlora debug te --model PATH (--prompt TEXT | --ids 1,2,3) --out OUT.safetensors [--weights bf16|f32]\n"
    "                      [--bf16-gemm] [--threads N] [--repeat N] [--cache DIR]\n"
    "  PATH: a model folder (text_encoder/ and tokenizer/), a text_encoder/ folder or a single Qwen3 file\n"
    "        (ComfyUI's qwen_3_4b.safetensors; --ids only, since it has no tokenizer)\n"
    "  --prompt TEXT  tokenized with the Z-Image chat template (at most 512 tokens)\n"
    "  --ids LIST     token ids, comma-separated, used as they are (no template)\n"
    "  --cache DIR    reuse/store features in DIR (keyed by encoder identity, template and prompt; a hit\n"
    "                 never loads the encoder)\n"
    "  --bf16-gemm    bf16 compute mode: GEMM inputs and attention operands rounded to bf16, fp32 sums\n"
    "                 (fast on AVX512_BF16; not exact)\n"
    "  --threads N    compute threads (default: all cores)\n"
    "  --repeat N     encode N times (benchmarks: the first pass also faults the mmapped weights in)\n"
    "  Timings (load, tokenize, each encode) and the peak RSS go to stderr.\n"
    "  OUT receives cap [L,hidden] (float32, hidden_states[-2] of the real tokens) and ids [L] (int32)\n";

/* Parses "1,2, 3" into a new array. */
static int parse_ids(const char *s, int32_t **ids, int *n) {
    int cap = 16, k = 0;
    int32_t *v = zl_xmalloc(sizeof(int32_t) * (size_t)cap);
    const char *p = s;
    for (;;) {
        while (*p == ' ' || *p == '\t') p++;
        char *end;
        errno = 0;
        long x = strtol(p, &end, 10);
        if (end == p || errno || x < 0 || x > INT32_MAX) {
            free(v);
            return zl_err("--ids: '%s' is not a comma-separated list of non-negative token ids", s);
        }
        if (k == cap) v = zl_xrealloc(v, sizeof(int32_t) * (size_t)(cap *= 2));
        v[k++] = (int32_t)x;
        p = end;
        while (*p == ' ' || *p == '\t') p++;
        if (*p == 0) break;
        if (*p != ',') { free(v); return zl_err("--ids: unexpected '%c' in '%s'", *p, s); }
        p++;
    }
    *ids = v;
    *n = k;
    return 0;
}

/* The process's peak resident set so far, MB. */
static double peak_rss_mb(void) {
    struct rusage ru;
    return getrusage(RUSAGE_SELF, &ru) ? 0 : (double)ru.ru_maxrss / 1024.0;
}

/* CPU seconds of the whole process (all threads) so far. */
static double cpu_now(void) {
    struct timespec ts;
    return clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts) ? 0 : (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* The process's resident set now, MB (Linux /proc/self/statm; 0 elsewhere). */
static double rss_now_mb(void) {
    FILE *f = fopen("/proc/self/statm", "r");
    long pages = 0, res = 0;
    if (!f) return 0;
    int ok = fscanf(f, "%ld %ld", &pages, &res) == 2;
    fclose(f);
    return ok ? (double)res * 4096.0 / 1048576.0 : 0;
}

static int tokenize(const char *model, const char *prompt, int32_t **ids, int *n) {
    zl_tokenizer *tok = NULL;
    if (zl_tok_load(model, &tok)) return -1; /* a model folder with tokenizer/, or the tokenizer itself */
    int rc = zl_tok_encode_prompt(tok, prompt, ZL_TOK_MAX_LEN, ids, n);
    zl_tok_free(tok);
    return rc ? -1 : 0;
}

int zl_cmd_debug_te(int argc, char **argv) {
    const char *model = NULL, *prompt = NULL, *ids_arg = NULL, *out = NULL, *cache = NULL;
    int bf16_gemm = 0, threads = 0, repeat = 1;
    zl_qwen3_opts o;
    zl_qwen3_default_opts(&o);
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) { fputs(usage, stdout); return 0; }
        else if (!strcmp(a, "--model") && i + 1 < argc) model = argv[++i];
        else if (!strcmp(a, "--prompt") && i + 1 < argc) prompt = argv[++i];
        else if (!strcmp(a, "--ids") && i + 1 < argc) ids_arg = argv[++i];
        else if (!strcmp(a, "--out") && i + 1 < argc) out = argv[++i];
        else if (!strcmp(a, "--cache") && i + 1 < argc) cache = argv[++i];
        else if (!strcmp(a, "--bf16-gemm")) bf16_gemm = 1;
        else if ((!strcmp(a, "--threads") || !strcmp(a, "--repeat")) && i + 1 < argc) {
            char *end;
            long v = strtol(argv[++i], &end, 10);
            if (*end || end == argv[i] || v < 1 || v > 4096) { fprintf(stderr, "error: %s must be a positive integer\n%s", a, usage); return 2; }
            if (a[2] == 't') threads = (int)v;
            else repeat = (int)v;
        }
        else if (!strcmp(a, "--weights") && i + 1 < argc) {
            const char *v = argv[++i];
            if (!strcmp(v, "bf16")) o.weight_dtype = ZL_BF16;
            else if (!strcmp(v, "f32") || !strcmp(v, "fp32")) o.weight_dtype = ZL_F32;
            else { fprintf(stderr, "error: --weights must be bf16 or f32\n%s", usage); return 2; }
        } else { fprintf(stderr, "error: debug te: unexpected argument '%s'\n%s", a, usage); return 2; }
    }
    if (!model || !out || !prompt == !ids_arg) {
        fprintf(stderr, "error: debug te: --model, --out and one of --prompt or --ids are required\n%s", usage);
        return 2;
    }
    int32_t *ids = NULL;
    int n = 0, rc = 0, hidden = 0, hit = 0;
    double t0;
    float *cap = NULL;
    zl_qwen3 *m = NULL;
    char *identity = NULL;
    if (cache && prompt) {
        identity = zl_te_identity(model);
        hit = identity ? zl_te_cache_load(cache, identity, prompt, &cap, &ids, &n, &hidden) : -1;
        if (hit < 0) rc = -1;
        if (hit > 0) zl_info("features from the cache (%d tokens); the encoder was not loaded", n);
    }
    t0 = zl_now();
    if (rc == 0 && !hit) rc = ids_arg ? parse_ids(ids_arg, &ids, &n) : tokenize(model, prompt, &ids, &n);
    if (rc == 0 && !hit && prompt) zl_info("tokenized: %d tokens in %.3f s", n, zl_now() - t0);
    t0 = zl_now();
    if (rc == 0 && !hit) rc = zl_qwen3_load(model, &o, &m);
    if (rc == 0 && !hit) {
        zl_info("loaded in %.3f s", zl_now() - t0);
        zl_info("text encoder: %s (prefix \"%s\", hidden %d, %d of %d layers, %d/%d heads x %d, weights %s%s)", m->path,
                m->prefix, m->cfg.hidden, m->n_run, m->cfg.n_layers, m->cfg.n_heads, m->cfg.n_kv_heads, m->cfg.head_dim,
                zl_dtype_name(m->weight_dtype), m->have_config_json ? "" : "; no config.json: config from shapes");
        cap = zl_try_malloc(sizeof(float) * (size_t)n * (size_t)m->cfg.hidden);
        if (!cap) rc = -1;
    }
    if (rc == 0 && !hit) {
        int old_gemm = zl_ops_bf16_gemm();
        if (threads) zl_ops_set_threads(threads);
        zl_ops_set_bf16_gemm(bf16_gemm);
        hidden = m->cfg.hidden;
        for (int r = 0; r < repeat && rc == 0; r++) {
            t0 = zl_now();
            double c0 = cpu_now();
            rc = zl_qwen3_encode(m, ids, n, cap);
            if (rc == 0)
                zl_info("encoded %d tokens in %.3f s (CPU %.2f s)%s", n, zl_now() - t0, cpu_now() - c0, bf16_gemm ? " (bf16 GEMM mode)" : "");
        }
        zl_ops_set_bf16_gemm(old_gemm);
        if (threads) zl_ops_set_threads(0);
        if (rc == 0) {
            double peak = peak_rss_mb();
            zl_qwen3_free(m);
            m = NULL;
            zl_info("peak RSS %.0f MB; %.0f MB after freeing the encoder", peak, rss_now_mb());
        }
        if (rc == 0 && identity) rc = zl_te_cache_store(cache, identity, prompt, cap, ids, n, hidden);
    }
    if (rc == 0) {
        zl_st_writer *w = zl_stw_new();
        zl_stw_meta(w, "zlora.model", model);
        if (prompt && zl_utf8_valid(prompt, strlen(prompt))) zl_stw_meta(w, "zlora.prompt", prompt);
        int64_t sc[2] = {n, hidden}, si[1] = {n};
        rc = zl_stw_add_f32(w, "cap", 2, sc, cap, ZL_F32);
        if (rc == 0) rc = zl_stw_add(w, "ids", ZL_I32, 1, si, ids);
        if (rc == 0) rc = zl_stw_write(w, out);
        zl_stw_free(w);
    }
    free(ids);
    free(cap);
    free(identity);
    zl_qwen3_free(m);
    return rc ? zl_cli_fail() : 0;
}
