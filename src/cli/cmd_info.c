/* cmd_info.c — `zlora info FILE|FOLDER|INDEX.json`: what a safetensors file or sharded set holds
 * (shards, tensors, size, dtypes, metadata) and which model it is, recognised from names and shapes:
 * the Z-Image transformer (diffusers or ComfyUI naming, optional `model.diffusion_model.` prefix),
 * Lumina-Image-2.0 (the look-alike it derives from), the Qwen3 text encoder, VAEs (FLUX.1 16-channel
 * vs SD 4-channel, diffusers or BFL/ldm naming) and LoRA/LyCORIS files.
 */
#include <cjson/cJSON.h>
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/base.h"
#include "base/dtype.h"
#include "cli/cli.h"
#include "io/image.h"
#include "io/safetensors.h"


#define LIST_DEFAULT 20
#define META_CUT 200

/* ---------------------------------------------------------------- recognition */

#define MAX_FIELDS 12
typedef struct {
    const char *kind;          /* "zimage-transformer", "qwen3-text-encoder", ... */
    char desc[768];            /* one sentence for people */
    const char *naming;        /* "diffusers", "comfyui", "bfl", "hf", or NULL */
    char prefix[48];           /* key prefix stripped to find the layout ("" when none) */
    int nf;
    struct { const char *k; long long v; } f[MAX_FIELDS]; /* numbers for --json */
} component;

static void field(component *c, const char *k, long long v) {
    if (v > 0 && c->nf < MAX_FIELDS) { c->f[c->nf].k = k; c->f[c->nf].v = v; c->nf++; }
}

static void appendf(char *dst, size_t cap, const char *fmt, ...) ZL_PRINTF(3, 4);
static void appendf(char *dst, size_t cap, const char *fmt, ...) {
    size_t n = strlen(dst);
    if (n + 1 >= cap) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(dst + n, cap - n, fmt, ap);
    va_end(ap);
}

static const zl_tensor_info *findp(const zl_st *st, const char *prefix, const char *name) {
    char buf[512];
    if ((size_t)snprintf(buf, sizeof buf, "%s%s", prefix, name) >= sizeof buf) return NULL;
    return zl_st_find(st, buf);
}

static long long dim0(const zl_tensor_info *t) { return t && t->ndim >= 1 ? (long long)t->shape[0] : 0; }
static long long dim1(const zl_tensor_info *t) { return t && t->ndim >= 2 ? (long long)t->shape[1] : 0; }

/* If `name` is prefix + block + <N> + rest, returns N and points *rest past the "N"; else -1. */
static long block_index(const char *name, const char *prefix, const char *block, const char **rest) {
    size_t pl = strlen(prefix), bl = strlen(block);
    if (strncmp(name, prefix, pl) != 0 || strncmp(name + pl, block, bl) != 0) return -1;
    const char *p = name + pl + bl;
    if (!isdigit((unsigned char)*p)) return -1;
    long v = 0;
    while (isdigit((unsigned char)*p)) {
        if (v > 1000000) return -1;
        v = v * 10 + (*p++ - '0');
    }
    if (*p != '.') return -1;
    *rest = p;
    return v;
}

/* Number of blocks prefix+block+N (max N + 1), or 0. */
static int count_blocks(const zl_st *st, const char *prefix, const char *block) {
    long maxi = -1;
    for (int i = 0; i < zl_st_count(st); i++) {
        const char *rest;
        long v = block_index(zl_st_tensor(st, i)->name, prefix, block, &rest);
        if (v > maxi) maxi = v;
    }
    return (int)(maxi + 1);
}

/* The tensor prefix+block+N+suffix with the smallest N, or NULL. */
static const zl_tensor_info *block_tensor(const zl_st *st, const char *prefix, const char *block, const char *suffix) {
    const zl_tensor_info *best = NULL;
    long besti = -1;
    for (int i = 0; i < zl_st_count(st); i++) {
        const zl_tensor_info *t = zl_st_tensor(st, i);
        const char *rest;
        long v = block_index(t->name, prefix, block, &rest);
        if (v >= 0 && strcmp(rest, suffix) == 0 && (besti < 0 || v < besti)) { best = t; besti = v; }
    }
    return best;
}

static int any_with_prefix(const zl_st *st, const char *prefix, const char *start) {
    char buf[256];
    snprintf(buf, sizeof buf, "%s%s", prefix, start);
    for (int i = 0; i < zl_st_count(st); i++)
        if (zl_starts_with(zl_st_tensor(st, i)->name, buf)) return 1;
    return 0;
}

/* "<naming> naming" plus the key prefix when there is one, for descriptions. */
static const char *naming_text(const component *c, const char *naming, char *buf, size_t cap) {
    if (c->prefix[0]) snprintf(buf, cap, "%s naming, key prefix \"%s\"", naming, c->prefix);
    else snprintf(buf, cap, "%s naming", naming);
    return buf;
}

static const char *plural(long long n) { return n == 1 ? "" : "s"; }

static int detect_lora(const zl_st *st, component *c) {
    static const char *marks[] = {"lora_A", "lora_B", "lora_down", "lora_up", "hada_", "lokr_"};
    int seen[6] = {0}, any = 0;
    for (int i = 0; i < zl_st_count(st); i++)
        for (int k = 0; k < 6; k++)
            if (strstr(zl_st_tensor(st, i)->name, marks[k])) { seen[k] = 1; any = 1; }
    if (!any) return 0;
    c->kind = "lora";
    const char *style = seen[4] ? "LoHa (LyCORIS hada_*)" : seen[5] ? "LoKr (LyCORIS lokr_*)"
                      : seen[0] || seen[1] ? "PEFT/diffusers lora_A/lora_B" : "kohya lora_down/lora_up";
    snprintf(c->desc, sizeof c->desc, "LoRA/LyCORIS adapter, %s keys: use `zlora lora inspect` for its modules, "
             "rank, alpha and target model", style);
    return 1;
}

static const char *dit_prefixes[] = {"", "model.diffusion_model.", "diffusion_model.", "transformer.", "model.", NULL};

static int detect_dit(const zl_st *st, component *c) {
    for (int pi = 0; dit_prefixes[pi]; pi++) {
        const char *P = dit_prefixes[pi];
        const zl_tensor_info *q = block_tensor(st, P, "layers.", ".attention.to_q.weight");
        const zl_tensor_info *qkv = block_tensor(st, P, "layers.", ".attention.qkv.weight");
        const zl_tensor_info *lq = block_tensor(st, P, "layers.", ".attn.to_q.weight"); /* diffusers Lumina2 */
        const zl_tensor_info *cap = findp(st, P, "cap_embedder.1.weight");
        const zl_tensor_info *xd = findp(st, P, "all_x_embedder.2-1.weight");
        const zl_tensor_info *xc = findp(st, P, "x_embedder.weight");
        const zl_tensor_info *tce = findp(st, P, "time_caption_embed.caption_embedder.1.weight");
        int diffusers = q && (cap || xd);
        int comfy = !diffusers && qkv && (xc || cap);
        int lumina_diffusers = !diffusers && !comfy && lq && (xc || tce);
        if (!diffusers && !comfy && !lumina_diffusers) continue;

        long long dim = cap ? dim0(cap) : tce ? dim0(tce) : xd ? dim0(xd) : xc ? dim0(xc)
                      : q ? dim1(q) : qkv ? dim1(qkv) : dim1(lq);
        long long cap_feat = cap ? dim1(cap) : dim1(tce);
        const zl_tensor_info *nq = diffusers ? block_tensor(st, P, "layers.", ".attention.norm_q.weight")
                                 : comfy ? block_tensor(st, P, "layers.", ".attention.q_norm.weight")
                                         : block_tensor(st, P, "layers.", ".attn.norm_q.weight");
        long long head_dim = dim0(nq), kv_width = 0;
        if (diffusers) kv_width = dim0(block_tensor(st, P, "layers.", ".attention.to_k.weight"));
        else if (comfy && dim && dim0(qkv) > dim) kv_width = (dim0(qkv) - dim) / 2;
        else kv_width = dim0(block_tensor(st, P, "layers.", ".attn.to_k.weight"));
        long long heads = head_dim ? dim / head_dim : 0, kv_heads = head_dim && kv_width ? kv_width / head_dim : 0;
        int layers = count_blocks(st, P, "layers."), nr = count_blocks(st, P, "noise_refiner."),
            cr = count_blocks(st, P, "context_refiner.");
        int gqa = kv_width && dim && kv_width != dim;
        int lumina = lumina_diffusers || dim == 2304 || gqa || findp(st, P, "norm_final.weight");

        snprintf(c->prefix, sizeof c->prefix, "%s", P);
        c->naming = diffusers || lumina_diffusers ? "diffusers" : "comfyui";
        char nt[128];
        naming_text(c, c->naming, nt, sizeof nt);
        if (lumina) {
            c->kind = "lumina2-transformer";
            snprintf(c->desc, sizeof c->desc,
                     "Lumina-Image-2.0 transformer (NextDiT), %s: dim %lld, %d layer%s", nt, dim, layers, plural(layers));
            if (heads) appendf(c->desc, sizeof c->desc, ", %lld heads / %lld kv heads", heads, kv_heads ? kv_heads : heads);
            appendf(c->desc, sizeof c->desc, ". This is Lumina-Image-2.0 (%s), not Z-Image: the names look alike "
                    "but Z-Image has dim 3840, 30 heads without GQA and no norm_final",
                    dim == 2304 ? "width 2304" : gqa ? "grouped-query attention" : "has norm_final");
        } else {
            c->kind = "zimage-transformer";
            snprintf(c->desc, sizeof c->desc, "Z-Image transformer (S3-DiT), %s: dim %lld, %d layer%s, "
                     "%d noise + %d context refiner blocks", nt, dim, layers, plural(layers), nr, cr);
            if (heads) appendf(c->desc, sizeof c->desc, ", %lld heads x %lld", heads, head_dim);
            if (dim == 3840 && layers == 30)
                appendf(c->desc, sizeof c->desc, " — the 6B Z-Image / Z-Image-Turbo layout");
            else
                appendf(c->desc, sizeof c->desc, " — not the released 6B size (dim 3840, 30 layers)");
            if (any_with_prefix(st, P, "siglip_")) appendf(c->desc, sizeof c->desc, "; has SigLIP modules (Z-Image-Omni)");
            if (any_with_prefix(st, P, "control_")) appendf(c->desc, sizeof c->desc, "; has ControlNet layers");
        }
        field(c, "dim", dim);
        field(c, "layers", layers);
        field(c, "noise_refiner", nr);
        field(c, "context_refiner", cr);
        field(c, "heads", heads);
        field(c, "kv_heads", kv_heads);
        field(c, "head_dim", head_dim);
        field(c, "cap_feat_dim", cap_feat);
        return 1;
    }
    return 0;
}

static const char *te_prefixes[] = {"model.", "", "text_encoder.model.", "transformer.model.", NULL};

static int detect_text_encoder(const zl_st *st, component *c) {
    for (int pi = 0; te_prefixes[pi]; pi++) {
        const char *P = te_prefixes[pi];
        const zl_tensor_info *q = block_tensor(st, P, "layers.", ".self_attn.q_proj.weight");
        if (!q) continue;
        const zl_tensor_info *qn = block_tensor(st, P, "layers.", ".self_attn.q_norm.weight");
        const zl_tensor_info *k = block_tensor(st, P, "layers.", ".self_attn.k_proj.weight");
        long long hidden = dim1(q), head_dim = dim0(qn);
        long long heads = head_dim ? dim0(q) / head_dim : 0, kv = head_dim ? dim0(k) / head_dim : 0;
        long long inter = dim0(block_tensor(st, P, "layers.", ".mlp.gate_proj.weight"));
        long long vocab = dim0(findp(st, P, "embed_tokens.weight"));
        int layers = count_blocks(st, P, "layers.");
        snprintf(c->prefix, sizeof c->prefix, "%s", P);
        c->naming = "hf";
        char nt[128];
        naming_text(c, "Hugging Face", nt, sizeof nt);
        if (!qn) {
            c->kind = "unknown";
            snprintf(c->desc, sizeof c->desc, "decoder-only language model (Llama/Qwen2-like), %s: hidden %lld, %d layer%s; "
                     "no q_norm/k_norm, so not Qwen3 — Z-Image needs the Qwen3-4B text encoder", nt, hidden, layers,
                     plural(layers));
        } else {
            c->kind = "qwen3-text-encoder";
            snprintf(c->desc, sizeof c->desc, "Qwen3 text encoder, %s: hidden %lld, %d layer%s, %lld heads / %lld kv heads "
                     "(head dim %lld)", nt, hidden, layers, plural(layers), heads, kv, head_dim);
            if (hidden == 2560 && layers == 36)
                appendf(c->desc, sizeof c->desc, " — Qwen3-4B, the Z-Image text encoder");
            else
                appendf(c->desc, sizeof c->desc, " — not Qwen3-4B (hidden 2560, 36 layers), which Z-Image uses");
        }
        field(c, "hidden", hidden);
        field(c, "layers", layers);
        field(c, "heads", heads);
        field(c, "kv_heads", kv);
        field(c, "head_dim", head_dim);
        field(c, "intermediate", inter);
        field(c, "vocab", vocab);
        return 1;
    }
    return 0;
}

static const char *vae_prefixes[] = {"", "vae.", "first_stage_model.", NULL};

static int detect_vae(const zl_st *st, component *c) {
    for (int pi = 0; vae_prefixes[pi]; pi++) {
        const char *P = vae_prefixes[pi];
        int diff = findp(st, P, "encoder.down_blocks.0.resnets.0.conv1.weight") ||
                   findp(st, P, "decoder.up_blocks.0.resnets.0.conv1.weight");
        int bfl = findp(st, P, "encoder.down.0.block.0.conv1.weight") || findp(st, P, "decoder.up.0.block.0.conv1.weight");
        if (!diff && !bfl) continue;
        const zl_tensor_info *co = findp(st, P, "encoder.conv_out.weight");
        const zl_tensor_info *ci = findp(st, P, "decoder.conv_in.weight");
        long long latent = co ? dim0(co) / 2 : dim1(ci);
        int has_enc = co || any_with_prefix(st, P, "encoder."), has_dec = ci || any_with_prefix(st, P, "decoder.");
        int quant = findp(st, P, "quant_conv.weight") || findp(st, P, "post_quant_conv.weight");
        snprintf(c->prefix, sizeof c->prefix, "%s", P);
        c->naming = diff ? "diffusers" : "bfl";
        char nm[128];
        naming_text(c, diff ? "diffusers" : "BFL/ldm", nm, sizeof nm);
        if (latent == 16 && !quant) {
            c->kind = "flux-vae";
            snprintf(c->desc, sizeof c->desc, "FLUX.1 VAE (AutoencoderKL, 16 latent channels), %s — "
                     "the VAE Z-Image uses", nm);
        } else if (latent == 4) {
            c->kind = "sd-vae";
            snprintf(c->desc, sizeof c->desc, "SD VAE (4 latent channels: SD1.x/SDXL), %s — not usable "
                     "with Z-Image, which needs the 16-channel FLUX.1 VAE", nm);
        } else {
            c->kind = "vae";
            snprintf(c->desc, sizeof c->desc, "VAE (AutoencoderKL), %s, %lld latent channels%s — Z-Image "
                     "needs the 16-channel FLUX.1 VAE", nm, latent,
                     quant ? ", with quant_conv (the FLUX.1 VAE has none)" : "");
        }
        if (has_enc != has_dec) appendf(c->desc, sizeof c->desc, "; %s only", has_enc ? "encoder" : "decoder");
        field(c, "latent_channels", latent);
        field(c, "base_channels", dim0(findp(st, P, "encoder.conv_in.weight")));
        return 1;
    }
    return 0;
}

/* Fills comps (up to 4) with what the set contains, most important first; returns the count (>= 1:
 * "unknown" when nothing is recognised). */
static int recognise(const zl_st *st, component *comps) {
    int n = 0;
    memset(comps, 0, 4 * sizeof *comps);
    if (detect_lora(st, &comps[n])) n++;
    if (detect_dit(st, &comps[n])) n++;
    if (detect_text_encoder(st, &comps[n])) n++;
    if (detect_vae(st, &comps[n])) n++;
    if (n == 0) {
        comps[0].kind = "unknown";
        snprintf(comps[0].desc, sizeof comps[0].desc, "%s",
                 zl_st_count(st) ? "not a layout zlora knows (Z-Image or Lumina-2 transformer, Qwen3 text encoder, "
                                   "VAE, LoRA)"
                                 : "no tensors");
        n = 1;
    }
    return n;
}

/* ---------------------------------------------------------------- formatting */

static void fmt_int(unsigned long long v, char *out) { /* 1234567 -> "1,234,567" */
    char tmp[32];
    int n = snprintf(tmp, sizeof tmp, "%llu", v), j = 0;
    for (int i = 0; i < n; i++) {
        if (i && (n - i) % 3 == 0) out[j++] = ',';
        out[j++] = tmp[i];
    }
    out[j] = 0;
}

static void fmt_size(unsigned long long b, char *out, size_t cap) {
    const char *u[] = {"B", "KiB", "MiB", "GiB", "TiB"};
    double v = (double)b;
    int k = 0;
    while (v >= 1024 && k < 4) { v /= 1024; k++; }
    if (k == 0) snprintf(out, cap, "%llu B", b);
    else snprintf(out, cap, "%.2f %s", v, u[k]);
}

static void fmt_shape(const zl_tensor_info *t, char *out, size_t cap) {
    size_t n = 0;
    out[0] = 0;
    n += (size_t)snprintf(out, cap, "[");
    for (int d = 0; d < t->ndim && n < cap; d++)
        n += (size_t)snprintf(out + n, cap - n, "%s%lld", d ? ", " : "", (long long)t->shape[d]);
    if (n < cap) snprintf(out + n, cap - n, "]");
}

/* Prints a metadata value on one line: control characters escaped, cut at `cut` bytes (on a UTF-8
 * boundary) unless cut == 0. */
static void print_meta_value(const char *v, size_t cut) {
    size_t len = strlen(v), lim = len;
    if (cut && len > cut) {
        lim = cut;
        while (lim > 0 && ((unsigned char)v[lim] & 0xC0) == 0x80) lim--;
    }
    for (size_t i = 0; i < lim; i++) {
        unsigned char ch = (unsigned char)v[i];
        if (ch == '\n') fputs("\\n", stdout);
        else if (ch == '\r') fputs("\\r", stdout);
        else if (ch == '\t') fputs("\\t", stdout);
        else if (ch < 0x20 || ch == 0x7f) printf("\\x%02x", ch);
        else putchar(ch);
    }
    if (lim < len) printf(" … (%zu bytes; --all shows it whole)", len);
    putchar('\n');
}

static int cmp_meta(const void *a, const void *b, void *ctx) {
    const zl_st *st = ctx;
    return strcmp(zl_st_meta_key(st, *(const int *)a), zl_st_meta_key(st, *(const int *)b));
}

static int *sorted_meta(const zl_st *st) {
    int n = zl_st_meta_count(st);
    int *ord = zl_xmalloc(sizeof(int) * (size_t)(n ? n : 1));
    for (int i = 0; i < n; i++) ord[i] = i;
    if (n) qsort_r(ord, (size_t)n, sizeof(int), cmp_meta, (void *)st);
    return ord;
}

static const char *base_name(const char *p) {
    const char *s = strrchr(p, '/');
    return s ? s + 1 : p;
}

/* ---------------------------------------------------------------- output */

typedef struct { unsigned long long count, bytes; } dstat;

static void print_json(const zl_st *st, const component *comps, int nc, const dstat *ds, unsigned long long params) {
    zl_buf b = {0};
    zl_buf_puts(&b, "{\"path\":");
    zl_buf_json_string(&b, zl_st_path(st));
    zl_buf_puts(&b, ",\"kind\":");
    zl_buf_json_string(&b, comps[0].kind);
    zl_buf_puts(&b, ",\"description\":");
    zl_buf_json_string(&b, comps[0].desc);
    for (int i = 0; i < nc; i++) {
        const component *c = &comps[i];
        zl_buf_puts(&b, i == 0 ? ",\"model\":" : i == 1 ? ",\"also\":[" : ",");
        zl_buf_puts(&b, "{\"kind\":");
        zl_buf_json_string(&b, c->kind);
        if (i) { zl_buf_puts(&b, ",\"description\":"); zl_buf_json_string(&b, c->desc); }
        if (c->naming) { zl_buf_puts(&b, ",\"naming\":"); zl_buf_json_string(&b, c->naming); }
        zl_buf_puts(&b, ",\"prefix\":");
        zl_buf_json_string(&b, c->prefix);
        for (int k = 0; k < c->nf; k++) zl_buf_printf(&b, ",\"%s\":%lld", c->f[k].k, c->f[k].v);
        zl_buf_puts(&b, "}");
    }
    if (nc > 1) zl_buf_puts(&b, "]");
    zl_buf_puts(&b, ",\"shards\":[");
    for (int i = 0; i < zl_st_nshards(st); i++) {
        if (i) zl_buf_puts(&b, ",");
        zl_buf_json_string(&b, zl_st_shard_path(st, i));
    }
    zl_buf_printf(&b, "],\"tensor_count\":%d,\"parameters\":%llu,\"total_bytes\":%llu,\"dtypes\":{", zl_st_count(st),
                  params, (unsigned long long)zl_st_total_bytes(st));
    int first = 1;
    for (int d = 0; d < ZL_DTYPE_COUNT; d++) {
        if (!ds[d].count) continue;
        zl_buf_printf(&b, "%s\"%s\":%llu", first ? "" : ",", zl_dtype_name((zl_dtype)d), ds[d].count);
        first = 0;
    }
    zl_buf_puts(&b, "},\"metadata\":{");
    int *ord = sorted_meta(st);
    for (int j = 0; j < zl_st_meta_count(st); j++) {
        if (j) zl_buf_puts(&b, ",");
        zl_buf_json_string(&b, zl_st_meta_key(st, ord[j]));
        zl_buf_puts(&b, ":");
        zl_buf_json_string(&b, zl_st_meta_value(st, ord[j]));
    }
    free(ord);
    zl_buf_puts(&b, "},\"tensors\":[");
    for (int i = 0; i < zl_st_count(st); i++) {
        const zl_tensor_info *t = zl_st_tensor(st, i);
        zl_buf_puts(&b, i ? ",{\"name\":" : "{\"name\":");
        zl_buf_json_string(&b, t->name);
        zl_buf_printf(&b, ",\"dtype\":\"%s\",\"shape\":[", zl_dtype_name(t->dtype));
        for (int d = 0; d < t->ndim; d++) zl_buf_printf(&b, "%s%lld", d ? "," : "", (long long)t->shape[d]);
        zl_buf_puts(&b, "]");
        if (zl_st_nshards(st) > 1) zl_buf_printf(&b, ",\"shard\":%d", t->shard);
        zl_buf_puts(&b, "}");
    }
    zl_buf_puts(&b, "]}\n");
    fwrite(b.s, 1, b.len, stdout);
    zl_buf_free(&b);
}

static void print_text(const zl_st *st, const component *comps, int nc, const dstat *ds, unsigned long long params,
                       int all_tensors, int full_meta) {
    char a[64], s[64];
    int ns = zl_st_nshards(st), n = zl_st_count(st);
    printf("path:      %s\n", zl_st_path(st));
    printf("shards:    %d\n", ns);
    if (ns > 1)
        for (int i = 0; i < ns; i++) printf("           %s\n", base_name(zl_st_shard_path(st, i)));
    fmt_int((unsigned long long)n, a);
    printf("tensors:   %s", a);
    fmt_int(params, a);
    fmt_size(zl_st_total_bytes(st), s, sizeof s);
    printf(" (%s parameters, %s)\n", a, s);
    printf("dtypes:   ");
    int any = 0;
    for (int d = 0; d < ZL_DTYPE_COUNT; d++) {
        if (!ds[d].count) continue;
        fmt_size(ds[d].bytes, s, sizeof s);
        printf("%s %s x %llu (%s)", any ? "," : "", zl_dtype_name((zl_dtype)d), ds[d].count, s);
        any = 1;
    }
    printf("%s\n", any ? "" : " -");
    printf("kind:      %s\n           %s\n", comps[0].kind, comps[0].desc);
    for (int i = 1; i < nc; i++) printf("also:      %s\n           %s\n", comps[i].kind, comps[i].desc);

    int nm = zl_st_meta_count(st);
    printf("metadata:  %d %s\n", nm, nm == 1 ? "entry" : "entries");
    int *ord = sorted_meta(st);
    for (int j = 0; j < nm; j++) {
        printf("  %s: ", zl_st_meta_key(st, ord[j]));
        print_meta_value(zl_st_meta_value(st, ord[j]), full_meta ? 0 : META_CUT);
    }
    free(ord);

    int show = all_tensors || n <= LIST_DEFAULT ? n : LIST_DEFAULT;
    int w = 4;
    for (int i = 0; i < show; i++) {
        int l = (int)strlen(zl_st_tensor(st, i)->name);
        if (l > w) w = l;
    }
    if (w > 72) w = 72;
    if (n) printf("tensors:\n  %-*s  %-7s %s\n", w, "name", "dtype", "shape");
    for (int i = 0; i < show; i++) {
        const zl_tensor_info *t = zl_st_tensor(st, i);
        char sh[160];
        fmt_shape(t, sh, sizeof sh);
        printf("  %-*s  %-7s %s\n", w, t->name, zl_dtype_name(t->dtype), sh);
    }
    if (show < n) printf("  … %d more (--tensors lists all)\n", n - show);
}

static void usage(FILE *f) {
    fprintf(f,
            "usage: zlora info [options] FILE|FOLDER|INDEX.json\n\n"
            "Shows what a .safetensors file, a folder of shards or a *.safetensors.index.json holds: shards,\n"
            "tensor count, size, dtypes, metadata and tensors, and which model it is, recognised from tensor\n"
            "names and shapes: Z-Image transformer (diffusers or ComfyUI naming), Lumina-Image-2.0, Qwen3 text\n"
            "encoder, FLUX.1 / SD VAE, LoRA.\n\n"
            "options:\n"
            "  --tensors   list every tensor (default: the first %d)\n"
            "  --all       show metadata values whole (default: cut at %d bytes)\n"
            "  --json      print one JSON object instead: path, kind, description, model, shards, dtypes,\n"
            "              metadata and every tensor {name, dtype, shape}\n"
            "  -h, --help  this text\n",
            LIST_DEFAULT, META_CUT);
}

/* PNG, JPEG or WebP by signature */
static int is_image(const char *path) {
    unsigned char b[12] = {0};
    FILE *f = fopen(path, "rb");
    if (!f) return 0;
    size_t n = fread(b, 1, sizeof b, f);
    fclose(f);
    if (n >= 8 && !memcmp(b, "\x89PNG\r\n\x1a\n", 8)) return 1;
    if (n >= 3 && b[0] == 0xff && b[1] == 0xd8 && b[2] == 0xff) return 1;
    return n >= 12 && !memcmp(b, "RIFF", 4) && !memcmp(b + 8, "WEBP", 4);
}

/* An image: size, format and its text chunks (for images made by zlora generate: the generation
 * parameters, which `zlora generate --from IMAGE` reuses). */
static int image_info(const char *path, int json) {
    zl_image img;
    if (zl_image_read(path, NULL, &img)) return zl_cli_fail();
    if (json) {
        cJSON *j = cJSON_CreateObject(), *t = cJSON_CreateObject();
        cJSON_AddStringToObject(j, "file", path);
        cJSON_AddStringToObject(j, "format", img.format ? img.format : "?");
        cJSON_AddNumberToObject(j, "width", img.w);
        cJSON_AddNumberToObject(j, "height", img.h);
        for (int i = 0; i < img.ntext; i++) cJSON_AddStringToObject(t, img.text_key[i], img.text_val[i]);
        cJSON_AddItemToObject(j, "text", t);
        char *s = cJSON_Print(j);
        puts(s);
        free(s);
        cJSON_Delete(j);
    } else {
        printf("%s: %s image, %dx%d%s\n", path, img.format ? img.format : "?", img.w, img.h, img.had_alpha ? ", with alpha" : "");
        for (int i = 0; i < img.ntext; i++) printf("%s:\n  %s\n", img.text_key[i], img.text_val[i]);
        if (zl_image_text(&img, "zlora")) printf("remake it with: zlora generate --from %s\n", path);
    }
    zl_image_free(&img);
    return 0;
}

int zl_cmd_info(int argc, char **argv) {
    int json = 0, all_tensors = 0, full_meta = 0, opts_done = 0;
    const char *path = NULL;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!opts_done && a[0] == '-' && a[1]) {
            if (strcmp(a, "--") == 0) opts_done = 1;
            else if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) { usage(stdout); return 0; }
            else if (strcmp(a, "--json") == 0) json = 1;
            else if (strcmp(a, "--tensors") == 0) all_tensors = 1;
            else if (strcmp(a, "--all") == 0) full_meta = 1;
            else {
                fprintf(stderr, "error: info: unknown option '%s' (see 'zlora info --help')\n", a);
                return 2;
            }
        } else if (path) {
            fprintf(stderr, "error: info: one FILE or FOLDER at a time (got '%s' and '%s')\n", path, a);
            return 2;
        } else {
            path = a;
        }
    }
    if (!path) {
        usage(stderr);
        return 2;
    }
    if (is_image(path)) return image_info(path, json);
    zl_st *st;
    if (zl_st_open(path, &st)) return zl_cli_fail();

    dstat ds[ZL_DTYPE_COUNT];
    memset(ds, 0, sizeof ds);
    unsigned long long params = 0;
    for (int i = 0; i < zl_st_count(st); i++) {
        const zl_tensor_info *t = zl_st_tensor(st, i);
        ds[t->dtype].count++;
        ds[t->dtype].bytes += t->nbytes;
        params += t->nelem;
    }
    component comps[4];
    int nc = recognise(st, comps);
    if (json) print_json(st, comps, nc, ds, params);
    else print_text(st, comps, nc, ds, params, all_tensors, full_meta);
    zl_st_close(st);
    if (fflush(stdout) != 0) {
        zl_err("info: cannot write the output");
        return zl_cli_fail();
    }
    return 0;
}
