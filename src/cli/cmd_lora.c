/* cmd_lora.c — `zlora lora inspect|check|convert|merge|resize`: the LoRA file toolbox. */
#include <stdio.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "base/base.h"
#include "cli/cli.h"
#include "lora/lora.h"

static const char *usage_text =
    "usage: zlora lora <command> ...\n"
    "\n"
    "  inspect FILE [--json]            what the file is: model family, key format, adapters, rank, alpha,\n"
    "                                   blocks and layers it touches, metadata\n"
    "  check FILE [--model CHECKPOINT]  would it apply to Z-Image? prints 'applied n/m tensors' and every\n"
    "                                   key that would not apply, with the reason; exit 0 only if all apply\n"
    "  convert IN OUT --to FORMAT [--dtype fp32|bf16|fp16] [--lossy] [--lossy-rank R]\n"
    "                                   FORMAT: diffusers, ai-toolkit, kohya, comfyui (fused qkv), diffsynth\n"
    "                                   exact except LoKr into fused qkv, refused unless --lossy (SVD, rank\n"
    "                                   R, default 64; the energy kept is reported)\n"
    "  merge OUT A[:s] B[:s] ... [--to FORMAT] [--dtype D]\n"
    "                                   one LoRA equal to s_A*A + s_B*B + ... (exact: ranks concatenated)\n"
    "  resize IN OUT --rank R [--dtype D] truncated SVD to rank R; reports the energy kept\n";

static int parse_dtype(const char *s, zl_dtype *d) {
    if (!strcmp(s, "fp32") || !strcmp(s, "f32") || !strcmp(s, "float32")) *d = ZL_F32;
    else if (!strcmp(s, "bf16") || !strcmp(s, "bfloat16")) *d = ZL_BF16;
    else if (!strcmp(s, "fp16") || !strcmp(s, "f16") || !strcmp(s, "float16")) *d = ZL_F16;
    else return zl_err("unknown --dtype '%s' (use fp32, bf16 or fp16)", s);
    return 0;
}

static int want_help(int argc, char **argv) {
    for (int i = 1; i < argc; i++)
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) return 1;
    return 0;
}

static int cmd_inspect(int argc, char **argv) {
    const char *file = NULL;
    int json = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--json")) json = 1;
        else if (argv[i][0] == '-') return zl_err("inspect: unknown option %s", argv[i]), zl_cli_fail();
        else if (!file) file = argv[i];
        else return zl_err("inspect: one file at a time"), zl_cli_fail();
    }
    if (!file) return zl_err("inspect: which file? (zlora lora inspect FILE [--json])"), zl_cli_fail();
    zl_lora *l;
    if (zl_lora_load(file, &l)) return zl_cli_fail();
    char *s = json ? zl_lora_inspect_json(l) : zl_lora_inspect_text(l);
    fputs(s, stdout);
    if (json) fputc('\n', stdout);
    free(s);
    zl_lora_free(l);
    return 0;
}

static int count_tensors(const zl_lora_module *m) {
    int n = m->has_alpha;
    for (int p = 0; p < ZL_P_COUNT; p++) n += m->p[p].data != NULL;
    return n ? n : 1; /* unsupported modules keep no tensors: count them once */
}

static int cmd_check(int argc, char **argv) {
    const char *file = NULL, *model = NULL;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--model") && i + 1 < argc) model = argv[++i];
        else if (argv[i][0] == '-') return zl_err("check: unknown option %s", argv[i]), zl_cli_fail();
        else if (!file) file = argv[i];
        else return zl_err("check: one file at a time"), zl_cli_fail();
    }
    if (!file) return zl_err("check: which file? (zlora lora check FILE [--model CHECKPOINT])"), zl_cli_fail();
    zl_lora *l;
    if (zl_lora_load(file, &l)) return zl_cli_fail();
    zl_module_table t;
    if (model) {
        if (zl_module_table_from_checkpoint(model, &t)) { zl_lora_free(l); return zl_cli_fail(); }
    } else zl_module_table_default(&t);
    int applied = 0, bad = 0;
    char buf[512];
    for (int i = 0; i < l->n; i++) {
        const char *why = zl_lora_check_module(l, i, &t, buf, sizeof buf);
        int nt = count_tensors(&l->m[i]);
        if (!why) { applied += nt; continue; }
        bad += nt;
        if (bad <= 200 || zl_log_level > 1) printf("not applied: %s — %s\n", l->m[i].key, why);
    }
    if (bad > 200 && zl_log_level <= 1) printf("… and more (use -v to list all)\n");
    int total = applied + bad;
    printf("applied %d/%d tensors%s%s\n", applied, total, model ? " against " : " against the Z-Image module set",
           model ? model : "");
    if (strcmp(l->family, "z-image") != 0) printf("this is not a Z-Image LoRA: %s\n", l->reason ? l->reason : l->family);
    zl_module_table_free(&t);
    zl_lora_free(l);
    return bad ? 1 : 0;
}

static int cmd_convert(int argc, char **argv) {
    const char *in = NULL, *out = NULL;
    zl_write_opts o = {.to = (zl_format)-1, .dtype = ZL_F32};
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--to") && i + 1 < argc) {
            int f = zl_format_from_name(argv[++i]);
            if (f < 0 || f == ZL_FMT_BARE || f == ZL_FMT_LYCORIS)
                return zl_err("convert: unknown --to '%s' (diffusers, ai-toolkit, kohya, comfyui, diffsynth)", argv[i]), zl_cli_fail();
            o.to = (zl_format)f;
        } else if (!strcmp(argv[i], "--dtype") && i + 1 < argc) {
            if (parse_dtype(argv[++i], &o.dtype)) return zl_cli_fail();
        } else if (!strcmp(argv[i], "--lossy")) o.lossy = 1;
        else if (!strcmp(argv[i], "--lossy-rank") && i + 1 < argc) {
            o.lossy = 1;
            o.lossy_rank = atoi(argv[++i]);
            if (o.lossy_rank < 1) return zl_err("convert: --lossy-rank must be at least 1"), zl_cli_fail();
        }
        else if (argv[i][0] == '-') return zl_err("convert: unknown option %s", argv[i]), zl_cli_fail();
        else if (!in) in = argv[i];
        else if (!out) out = argv[i];
        else return zl_err("convert: too many arguments"), zl_cli_fail();
    }
    if (!in || !out || (int)o.to < 0) return zl_err("convert: usage: zlora lora convert IN OUT --to FORMAT"), zl_cli_fail();
    zl_lora *l;
    if (zl_lora_load(in, &l)) return zl_cli_fail();
    int rc = zl_lora_write(l, out, &o);
    if (rc == 0) {
        zl_info("wrote %s (%s, %d modules, %s)", out, zl_format_name(o.to), l->n, zl_dtype_name(o.dtype));
        if (o.nlossy) zl_info("lossy: %d module(s) approximated by SVD at rank %d, lowest energy kept %.4f%%%s", o.nlossy,
                              zl_lora_lossy_rank, 100.0 * o.energy_min,
                              o.energy_min < 0.9 ? " — this LoRA will not behave like the original; raise --lossy-rank or keep the split format" : "");
    }
    zl_lora_free(l);
    return rc ? zl_cli_fail() : 0;
}

static int cmd_merge(int argc, char **argv) {
    const char *out = NULL;
    zl_write_opts o = {.to = (zl_format)-1, .dtype = ZL_F32};
    zl_lora **ls = zl_xcalloc((size_t)argc, sizeof(zl_lora *));
    float *st = zl_xcalloc((size_t)argc, sizeof(float));
    int n = 0, rc = 0;
    for (int i = 1; i < argc && rc == 0; i++) {
        if (!strcmp(argv[i], "--to") && i + 1 < argc) {
            int f = zl_format_from_name(argv[++i]);
            if (f < 0 || f == ZL_FMT_BARE || f == ZL_FMT_LYCORIS) rc = zl_err("merge: unknown --to '%s'", argv[i]);
            else o.to = (zl_format)f;
        } else if (!strcmp(argv[i], "--dtype") && i + 1 < argc) rc = parse_dtype(argv[++i], &o.dtype);
        else if (argv[i][0] == '-' && argv[i][1]) rc = zl_err("merge: unknown option %s", argv[i]);
        else if (!out) out = argv[i];
        else {
            char path[4096];
            zl_cli_split_strength(argv[i], path, sizeof path, &st[n]);
            if (!isfinite(st[n])) rc = zl_err("merge: strength of %s is not finite", path);
            else if (zl_lora_load(path, &ls[n]) == 0) n++;
            else rc = -1;
        }
    }
    zl_lora *m = NULL;
    if (rc == 0 && (!out || n < 1)) rc = zl_err("merge: usage: zlora lora merge OUT A[:s] B[:s] ...");
    if (rc == 0) rc = zl_lora_merge(ls, st, n, &m);
    if (rc == 0) {
        if ((int)o.to < 0) o.to = ls[0]->format == ZL_FMT_BARE || ls[0]->format == ZL_FMT_LYCORIS ? ZL_FMT_AITOOLKIT : ls[0]->format;
        zl_buf src = {0};
        for (int i = 0; i < n; i++) {
            const char *b = strrchr(ls[i]->path, '/');
            zl_buf_printf(&src, "%s%s:%g", i ? "," : "", b ? b + 1 : ls[i]->path, (double)st[i]);
        }
        zl_lora_meta_set(m, "zlora.merged_from", src.s);
        zl_buf_free(&src);
        free(m->path);
        m->path = zl_xstrdup(out);
        rc = zl_lora_write(m, out, &o);
        if (rc == 0) zl_info("merged %d LoRA(s) into %s (%d modules, %s)", n, out, m->n, zl_format_name(o.to));
    }
    zl_lora_free(m);
    for (int i = 0; i < n; i++) zl_lora_free(ls[i]);
    free(ls); free(st);
    return rc ? zl_cli_fail() : 0;
}

static int cmd_resize(int argc, char **argv) {
    const char *in = NULL, *out = NULL;
    int rank = 0;
    zl_write_opts o = {.to = (zl_format)-1, .dtype = ZL_F32};
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--rank") && i + 1 < argc) rank = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--dtype") && i + 1 < argc) { if (parse_dtype(argv[++i], &o.dtype)) return zl_cli_fail(); }
        else if (argv[i][0] == '-') return zl_err("resize: unknown option %s", argv[i]), zl_cli_fail();
        else if (!in) in = argv[i];
        else if (!out) out = argv[i];
        else return zl_err("resize: too many arguments"), zl_cli_fail();
    }
    if (!in || !out || rank < 1) return zl_err("resize: usage: zlora lora resize IN OUT --rank R (R >= 1)"), zl_cli_fail();
    zl_lora *l;
    if (zl_lora_load(in, &l)) return zl_cli_fail();
    double emin, emean;
    int rc = zl_lora_resize(l, rank, &emin, &emean);
    if (rc == 0) {
        o.to = l->format == ZL_FMT_BARE || l->format == ZL_FMT_LYCORIS ? ZL_FMT_AITOOLKIT : l->format;
        if (!strcmp(l->qkv, "fused")) o.to = ZL_FMT_COMFYUI;
        rc = zl_lora_write(l, out, &o);
    }
    if (rc == 0) printf("resized to rank %d: energy kept %.4f%% on average, %.4f%% at worst\n", rank, 100 * emean, 100 * emin);
    zl_lora_free(l);
    return rc ? zl_cli_fail() : 0;
}

int zl_cmd_lora(int argc, char **argv) {
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help")) {
        fputs(usage_text, argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    if (want_help(argc - 1, argv + 1)) { fputs(usage_text, stdout); return 0; }
    const char *c = argv[1];
    if (!strcmp(c, "inspect")) return cmd_inspect(argc - 1, argv + 1);
    if (!strcmp(c, "check")) return cmd_check(argc - 1, argv + 1);
    if (!strcmp(c, "convert")) return cmd_convert(argc - 1, argv + 1);
    if (!strcmp(c, "merge")) return cmd_merge(argc - 1, argv + 1);
    if (!strcmp(c, "resize")) return cmd_resize(argc - 1, argv + 1);
    fprintf(stderr, "error: unknown lora command '%s'\n%s", c, usage_text);
    return 2;
}
