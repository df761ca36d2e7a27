/* cmd_random.c — random checkpoints in the release layouts, streaming (see cmd_random.h):
 *   random-dit DIR   DIR/transformer/: a Z-Image S3-DiT (diffusers names, config.json, shards + index)
 *   random-te DIR    DIR/text_encoder/: a Qwen3 text encoder (HF names with the `model.` prefix,
 *                    config.json, shards + index), and DIR/tokenizer/tokenizer.json copied from
 *                    --tokenizer, so that `zlora debug te --model DIR --prompt ...` runs on it.
 * One writer serves both: a list of tensors, each filled with center + half·U(−1, 1) from one seeded
 * generator in name order, split into shards of about equal bytes, written in 4 MB chunks. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include "base/base.h"
#include "base/progress.h"
#include "cli/cli.h"
#include "cli/cmd_random.h"
#include "io/safetensors.h"
#include "model/zimage.h"

/* ------------------------------------------------------------------ the shared writer */

typedef struct {
    char *name; /* owned */
    int ndim;
    int64_t shape[2];
    float center, half; /* values: center + half * U(-1, 1) */
} rnd_tensor;

typedef struct {
    rnd_tensor *t;
    int n, cap;
} rnd_list;

static void rnd_add(rnd_list *l, char *name, int ndim, int64_t d0, int64_t d1, float center, float half) {
    if (l->n == l->cap) {
        l->cap = l->cap ? 2 * l->cap : 256;
        l->t = zl_xrealloc(l->t, sizeof(rnd_tensor) * (size_t)l->cap);
    }
    l->t[l->n++] = (rnd_tensor){name, ndim, {d0, ndim > 1 ? d1 : 1}, center, half};
}

static void rnd_free(rnd_list *l) {
    for (int i = 0; i < l->n; i++) free(l->t[i].name);
    free(l->t);
}

static int by_name(const void *a, const void *b) { return strcmp(((const rnd_tensor *)a)->name, ((const rnd_tensor *)b)->name); }

static uint64_t nelem(const rnd_tensor *t) { return (uint64_t)t->shape[0] * (uint64_t)(t->ndim > 1 ? t->shape[1] : 1); }

static int make_dir(const char *p) {
    if (zl_is_dir(p) || mkdir(p, 0755) == 0 || errno == EEXIST) return 0;
    return zl_err("cannot create %s: %s", p, strerror(errno));
}

static int write_text(const char *path, const char *text) {
    const void *parts[1] = {text};
    size_t sizes[1] = {strlen(text)};
    return zl_write_atomic(path, parts, sizes, 1);
}

/* Writes l's tensors (sorted here by name) in `folder`: one file `stem`.safetensors, or `shards` files
 * `stem`-0000k-of-0000N.safetensors of about equal bytes and `stem`.safetensors.index.json (the names
 * the HF and diffusers releases use). Streaming: memory stays at one 4 MB chunk whatever the size. */
static int write_random_shards(const char *folder, const char *stem, rnd_list *l, zl_dtype dt, int shards, uint64_t seed) {
    int nt = l->n;
    if (shards < 1 || shards > nt) return zl_err("--shards must lie in [1, %d] (the number of tensors)", nt);
    qsort(l->t, (size_t)nt, sizeof(rnd_tensor), by_name);
    zl_st_decl *sd = zl_xmalloc(sizeof(zl_st_decl) * (size_t)nt);
    uint64_t total = 0;
    size_t es = zl_dtype_size(dt);
    for (int i = 0; i < nt; i++) {
        sd[i] = (zl_st_decl){l->t[i].name, dt, l->t[i].ndim, l->t[i].shape};
        total += nelem(&l->t[i]) * es;
    }
    zl_buf idx = {0};
    zl_buf_printf(&idx, "{\"metadata\": {\"total_size\": %llu}, \"weight_map\": {", (unsigned long long)total);
    zl_rng r = {seed};
    size_t cap = 1 << 20;
    float *f = zl_xmalloc(sizeof(float) * cap);
    void *b = zl_xmalloc(4 * cap);
    zl_progress pr;
    zl_progress_start(&pr, "writing", (double)total / 1e6, "MB");
    uint64_t done = 0;
    int first = 0, rc = 0;
    char path[4200];
    for (int sh = 0; sh < shards && !rc; sh++) {
        /* at least one tensor per shard, and one left for each shard after this one */
        int last = first;
        uint64_t acc = 0, target = total / (uint64_t)shards;
        while (last < nt - (shards - 1 - sh) && (sh == shards - 1 || acc < target || last == first)) {
            acc += nelem(&l->t[last]) * es;
            last++;
        }
        char fname[300];
        if (shards == 1) snprintf(fname, sizeof fname, "%s.safetensors", stem);
        else snprintf(fname, sizeof fname, "%s-%05d-of-%05d.safetensors", stem, sh + 1, shards);
        snprintf(path, sizeof path, "%s/%s", folder, fname);
        zl_st_stream st;
        char *mk[1] = {"format"}, *mv[1] = {"pt"};
        rc = zl_sts_begin(&st, path, sd + first, last - first, mk, mv, 1);
        if (rc) break;
        for (int i = first; i < last && !rc; i++) {
            const rnd_tensor *t = &l->t[i];
            uint64_t ne = nelem(t);
            for (uint64_t e = 0; e < ne && !rc; e += cap) {
                size_t n = ne - e < cap ? (size_t)(ne - e) : cap;
                for (size_t k = 0; k < n; k++) f[k] = t->center + t->half * (2 * zl_rng_uniform(&r) - 1);
                zl_from_f32(b, f, dt, n);
                rc = zl_sts_write(&st, b, n * es);
                done += n * es;
                zl_progress_update(&pr, (double)done / 1e6);
            }
            zl_buf_printf(&idx, "%s", i ? ", " : "");
            zl_buf_json_string(&idx, t->name);
            zl_buf_puts(&idx, ": ");
            zl_buf_json_string(&idx, fname);
        }
        if (rc) zl_sts_abort(&st);
        else rc = zl_sts_end(&st);
        first = last;
    }
    zl_buf_puts(&idx, "}}\n");
    if (!rc && shards > 1) {
        snprintf(path, sizeof path, "%s/%s.safetensors.index.json", folder, stem);
        rc = write_text(path, idx.s);
    }
    if (!rc) zl_progress_end(&pr, (double)done / 1e6);
    zl_buf_free(&idx);
    free(f);
    free(b);
    free(sd);
    return rc;
}

/* Parses a positive int option value; -1 with a message otherwise. */
static int pos_int(const char *opt, const char *v, int *out) {
    char *end;
    errno = 0;
    long x = strtol(v, &end, 10);
    if (end == v || *end || errno || x < 1 || x > (1 << 24)) return zl_err("%s: '%s' is not a positive integer", opt, v);
    *out = (int)x;
    return 0;
}

static int parse_seed(const char *v, uint64_t *out) {
    char *end;
    errno = 0;
    unsigned long long x = strtoull(v, &end, 0);
    if (end == v || *end || errno) return zl_err("--seed: '%s' is not an integer", v);
    *out = x;
    return 0;
}

static int parse_dtype(const char *v, zl_dtype *dt) {
    if (!strcmp(v, "bf16")) *dt = ZL_BF16;
    else if (!strcmp(v, "f32") || !strcmp(v, "fp32")) *dt = ZL_F32;
    else return zl_err("--dtype must be bf16 or f32");
    return 0;
}

static int usage_error(const char *usage) {
    fprintf(stderr, "error: %s\n%s", zl_last_error(), usage);
    return 2;
}

/* ------------------------------------------------------------------ random-dit */

int zl_cmd_debug_random_dit(int argc, char **argv) {
    static const char *usage =
        "usage: zlora debug random-dit DIR [--dtype f32|bf16] [--shards N] [--dim D --layers N --refiners N --cap C --head H]\n"
        "                              [--seed S]\n"
        "  writes DIR/transformer/ (config.json, shards, index) with random weights; default: the 6.15B config\n";
    const char *dir = NULL;
    zl_dtype dt = ZL_BF16;
    int shards = 1;
    uint64_t seed = 99;
    zl_zimage_config c;
    zl_zimage_default_config(&c);
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        int rc = 0;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) { fputs(usage, stdout); return 0; }
        if (!strcmp(a, "--dtype") && v) rc = parse_dtype(v, &dt);
        else if (!strcmp(a, "--shards") && v) rc = pos_int(a, v, &shards);
        else if (!strcmp(a, "--dim") && v) rc = pos_int(a, v, &c.dim);
        else if (!strcmp(a, "--layers") && v) rc = pos_int(a, v, &c.n_layers);
        else if (!strcmp(a, "--refiners") && v) rc = pos_int(a, v, &c.n_refiner);
        else if (!strcmp(a, "--cap") && v) rc = pos_int(a, v, &c.cap_feat_dim);
        else if (!strcmp(a, "--head") && v) rc = pos_int(a, v, &c.head_dim);
        else if (!strcmp(a, "--seed") && v) rc = parse_seed(v, &seed);
        else if (a[0] != '-' && !dir) { dir = a; continue; }
        else rc = zl_err("debug random-dit: unexpected argument '%s'", a);
        if (rc) return usage_error(usage);
        i++;
    }
    if (!dir || c.dim < 8 || c.head_dim < 8 || c.dim % c.head_dim || c.head_dim % 8) {
        zl_err("debug random-dit: %s", !dir ? "which folder?" : "dim must be a multiple of head, head a multiple of 8");
        return usage_error(usage);
    }
    c.ffn = (int)(c.dim / 3.0 * 8);
    c.adaln = c.dim < 256 ? c.dim : 256;
    c.n_heads = c.dim / c.head_dim;
    if (c.head_dim != 128) { c.axes_dims[0] = c.head_dim / 4; c.axes_dims[1] = c.axes_dims[2] = (c.head_dim - c.head_dim / 4) / 2; }
    /* weights (linears: ±1/sqrt(fan-in); norm vectors: 1 ± 0.05), biases and pad tokens (±0.05) */
    zl_zimage_module *mods;
    int nm = zl_zimage_modules(&c, &mods);
    rnd_list l = {0};
    for (int i = 0; i < nm; i++) {
        int lin = mods[i].type == ZL_MOD_LINEAR;
        rnd_add(&l, zl_xasprintf("%s.weight", mods[i].name), lin ? 2 : 1, mods[i].out, mods[i].in, lin ? 0.0f : 1.0f,
                lin ? 1.0f / sqrtf((float)mods[i].in) : 0.05f);
        if (mods[i].has_bias) rnd_add(&l, zl_xasprintf("%s.bias", mods[i].name), 1, mods[i].out, 1, 0.0f, 0.05f);
    }
    free(mods);
    rnd_add(&l, zl_xstrdup("cap_pad_token"), 2, 1, c.dim, 0.0f, 0.05f);
    rnd_add(&l, zl_xstrdup("x_pad_token"), 2, 1, c.dim, 0.0f, 0.05f);
    char folder[4200], path[4300];
    snprintf(folder, sizeof folder, "%s/transformer", dir);
    int rc = make_dir(dir);
    if (!rc) rc = make_dir(folder);
    if (!rc) {
        char *cfg = zl_xasprintf("{\"_class_name\": \"ZImageTransformer2DModel\", \"all_f_patch_size\": [1], \"all_patch_size\": [2], "
                                 "\"axes_dims\": [%d, %d, %d], \"axes_lens\": [1536, 512, 512], \"cap_feat_dim\": %d, \"dim\": %d, "
                                 "\"in_channels\": 16, \"n_heads\": %d, \"n_kv_heads\": %d, \"n_layers\": %d, \"n_refiner_layers\": %d, "
                                 "\"norm_eps\": 1e-05, \"qk_norm\": true, \"rope_theta\": 256.0, \"t_scale\": 1000.0}\n",
                                 c.axes_dims[0], c.axes_dims[1], c.axes_dims[2], c.cap_feat_dim, c.dim, c.n_heads, c.n_heads,
                                 c.n_layers, c.n_refiner);
        snprintf(path, sizeof path, "%s/config.json", folder);
        rc = write_text(path, cfg);
        free(cfg);
    }
    if (!rc) rc = write_random_shards(folder, "diffusion_pytorch_model", &l, dt, shards, seed);
    rnd_free(&l);
    return rc ? zl_cli_fail() : 0;
}

/* ------------------------------------------------------------------ random-te */

/* Copies a file (a tokenizer.json: megabytes) to dst, atomically. */
static int copy_file(const char *src, const char *dst) {
    FILE *f = fopen(src, "rb");
    if (!f) return zl_err("%s: %s", src, strerror(errno));
    int rc = 0;
    long n = fseek(f, 0, SEEK_END) == 0 ? ftell(f) : -1;
    char *buf = NULL;
    if (n < 0 || fseek(f, 0, SEEK_SET)) rc = zl_err("%s: cannot read", src);
    else if (!(buf = zl_try_malloc((size_t)n + 1))) rc = zl_err_prefix("%s", src);
    else if (fread(buf, 1, (size_t)n, f) != (size_t)n) rc = zl_err("%s: short read", src);
    fclose(f);
    if (!rc) {
        const void *parts[1] = {buf};
        size_t sizes[1] = {(size_t)n};
        rc = zl_write_atomic(dst, parts, sizes, 1);
    }
    free(buf);
    return rc;
}

int zl_cmd_debug_random_te(int argc, char **argv) {
    static const char *usage =
        "usage: zlora debug random-te DIR [--dtype bf16|f32] [--shards N] [--tokenizer tokenizer.json] [--seed S]\n"
        "                             [--hidden H --layers N --heads H --kv-heads K --head-dim D --inter I --vocab V]\n"
        "  writes a random Qwen3 text encoder in the HF layout: DIR/text_encoder/ (config.json, model-0000k-of-0000N\n"
        "  .safetensors, model.safetensors.index.json; names model.embed_tokens.weight, model.layers.{i}.*, model.norm.weight),\n"
        "  streaming. Default: Qwen3-4B (hidden 2560, 36 layers, 32/8 heads x 128, intermediate 9728, vocab 151936;\n"
        "  bf16, 3 shards, 8 GB). Weights ~ U(-0.035, 0.035) (std 0.02), norm weights 1 +- 0.05.\n"
        "  --tokenizer FILE  copied to DIR/tokenizer/tokenizer.json, so `zlora debug te --model DIR --prompt ...` works\n";
    const char *dir = NULL, *tok = NULL;
    zl_dtype dt = ZL_BF16;
    int shards = 3, hidden = 2560, layers = 36, heads = 32, kv = 8, hd = 128, inter = 9728, vocab = 151936;
    uint64_t seed = 1;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        int rc = 0;
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) { fputs(usage, stdout); return 0; }
        if (!strcmp(a, "--dtype") && v) rc = parse_dtype(v, &dt);
        else if (!strcmp(a, "--shards") && v) rc = pos_int(a, v, &shards);
        else if (!strcmp(a, "--hidden") && v) rc = pos_int(a, v, &hidden);
        else if (!strcmp(a, "--layers") && v) rc = pos_int(a, v, &layers);
        else if (!strcmp(a, "--heads") && v) rc = pos_int(a, v, &heads);
        else if (!strcmp(a, "--kv-heads") && v) rc = pos_int(a, v, &kv);
        else if (!strcmp(a, "--head-dim") && v) rc = pos_int(a, v, &hd);
        else if (!strcmp(a, "--inter") && v) rc = pos_int(a, v, &inter);
        else if (!strcmp(a, "--vocab") && v) rc = pos_int(a, v, &vocab);
        else if (!strcmp(a, "--seed") && v) rc = parse_seed(v, &seed);
        else if (!strcmp(a, "--tokenizer") && v) tok = v;
        else if (a[0] != '-' && !dir) { dir = a; continue; }
        else rc = zl_err("debug random-te: unexpected argument '%s'", a);
        if (rc) return usage_error(usage);
        i++;
    }
    if (!dir) { zl_err("debug random-te: which folder?"); return usage_error(usage); }
    if (hd % 2 || heads % kv) { zl_err("debug random-te: head-dim must be even and heads a multiple of kv-heads"); return usage_error(usage); }
    if (tok && !zl_file_exists(tok)) return zl_err("--tokenizer: %s does not exist", tok), zl_cli_fail();
    const float w = 0.02f * sqrtf(3.0f), nw = 0.05f; /* linears and embedding: std 0.02 (HF's initializer_range) */
    int qd = heads * hd, kvd = kv * hd;
    rnd_list l = {0};
    rnd_add(&l, zl_xstrdup("model.embed_tokens.weight"), 2, vocab, hidden, 0.0f, w);
    rnd_add(&l, zl_xstrdup("model.norm.weight"), 1, hidden, 1, 1.0f, nw);
    for (int i = 0; i < layers; i++) {
        struct { const char *name; int out, in; } lin[] = {
            {"self_attn.q_proj", qd, hidden}, {"self_attn.k_proj", kvd, hidden}, {"self_attn.v_proj", kvd, hidden},
            {"self_attn.o_proj", hidden, qd}, {"mlp.gate_proj", inter, hidden}, {"mlp.up_proj", inter, hidden},
            {"mlp.down_proj", hidden, inter},
        };
        for (size_t k = 0; k < sizeof lin / sizeof *lin; k++)
            rnd_add(&l, zl_xasprintf("model.layers.%d.%s.weight", i, lin[k].name), 2, lin[k].out, lin[k].in, 0.0f, w);
        struct { const char *name; int n; } vec[] = {
            {"input_layernorm", hidden}, {"post_attention_layernorm", hidden}, {"self_attn.q_norm", hd}, {"self_attn.k_norm", hd},
        };
        for (size_t k = 0; k < sizeof vec / sizeof *vec; k++)
            rnd_add(&l, zl_xasprintf("model.layers.%d.%s.weight", i, vec[k].name), 1, vec[k].n, 1, 1.0f, nw);
    }
    char folder[4200], path[4300];
    snprintf(folder, sizeof folder, "%s/text_encoder", dir);
    int rc = make_dir(dir);
    if (!rc) rc = make_dir(folder);
    if (!rc) {
        char *cfg = zl_xasprintf(
            "{\n  \"architectures\": [\"Qwen3ForCausalLM\"],\n  \"attention_bias\": false,\n  \"attention_dropout\": 0.0,\n"
            "  \"bos_token_id\": 151643,\n  \"eos_token_id\": 151645,\n  \"head_dim\": %d,\n  \"hidden_act\": \"silu\",\n"
            "  \"hidden_size\": %d,\n  \"initializer_range\": 0.02,\n  \"intermediate_size\": %d,\n"
            "  \"max_position_embeddings\": 40960,\n  \"max_window_layers\": %d,\n  \"model_type\": \"qwen3\",\n"
            "  \"num_attention_heads\": %d,\n  \"num_hidden_layers\": %d,\n  \"num_key_value_heads\": %d,\n"
            "  \"rms_norm_eps\": 1e-06,\n  \"rope_scaling\": null,\n  \"rope_theta\": 1000000,\n  \"sliding_window\": null,\n"
            "  \"tie_word_embeddings\": true,\n  \"torch_dtype\": \"%s\",\n  \"transformers_version\": \"4.51.0\",\n"
            "  \"use_cache\": true,\n  \"use_sliding_window\": false,\n  \"vocab_size\": %d\n}\n",
            hd, hidden, inter, layers, heads, layers, kv, dt == ZL_BF16 ? "bfloat16" : "float32", vocab);
        snprintf(path, sizeof path, "%s/config.json", folder);
        rc = write_text(path, cfg);
        free(cfg);
    }
    if (!rc && tok) {
        snprintf(path, sizeof path, "%s/tokenizer", dir);
        rc = make_dir(path);
        snprintf(path, sizeof path, "%s/tokenizer/tokenizer.json", dir);
        if (!rc) rc = copy_file(tok, path);
    }
    if (!rc) rc = write_random_shards(folder, "model", &l, dt, shards, seed);
    if (!rc)
        zl_info("wrote a random Qwen3 text encoder (hidden %d, %d layers, %d/%d heads x %d, intermediate %d, vocab %d, %s) to %s%s", hidden,
                layers, heads, kv, hd, inter, vocab, zl_dtype_name(dt), folder, tok ? " and its tokenizer" : "");
    rnd_free(&l);
    return rc ? zl_cli_fail() : 0;
}
