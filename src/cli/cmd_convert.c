/* cmd_convert.c — `zlora convert-model IN OUT --dtype bf16|f16|f32`: rewrites a checkpoint (a file, a
 * folder of shards, an *.index.json, or a model folder's transformer/) as one safetensors file with its
 * float tensors in the given dtype, streaming: memory stays bounded whatever the model size, so the
 * 24.6 GB fp32 Turbo transformer becomes a 12.3 GB bf16 file that later loads by pure mmap. */
#include <stdio.h>
#include <string.h>
#include "base/base.h"
#include "cli/cli.h"
#include "io/safetensors.h"

int zl_cmd_convert_model(int argc, char **argv) {
    const char *in = NULL, *out = NULL;
    zl_dtype to = ZL_BF16;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            printf("usage: zlora convert-model IN OUT [--dtype bf16|f16|f32]   (default bf16)\n"
                   "  IN: a .safetensors file, a folder of shards, an *.index.json, or a model folder (uses transformer/)\n"
                   "  writes OUT as one file, float tensors converted (round to nearest even), names and metadata kept\n");
            return 0;
        }
        if (!strcmp(argv[i], "--dtype") && i + 1 < argc) {
            const char *v = argv[++i];
            if (!strcmp(v, "bf16")) to = ZL_BF16;
            else if (!strcmp(v, "f16") || !strcmp(v, "fp16")) to = ZL_F16;
            else if (!strcmp(v, "f32") || !strcmp(v, "fp32")) to = ZL_F32;
            else return zl_err("convert-model: --dtype must be bf16, f16 or f32"), zl_cli_fail();
        } else if (argv[i][0] == '-') return zl_err("convert-model: unknown option %s", argv[i]), zl_cli_fail();
        else if (!in) in = argv[i];
        else if (!out) out = argv[i];
        else return zl_err("convert-model: too many arguments"), zl_cli_fail();
    }
    if (!in || !out) return zl_err("convert-model: usage: zlora convert-model IN OUT [--dtype bf16|f16|f32]"), zl_cli_fail();
    char tr[4200];
    snprintf(tr, sizeof tr, "%s/transformer", in);
    if (zl_is_dir(in) && zl_is_dir(tr)) in = tr;
    if (zl_is_dir(out)) return zl_err("convert-model: %s is a folder; give the output file name", out), zl_cli_fail();
    zl_st *st;
    if (zl_st_open(in, &st)) return zl_cli_fail();
    const char *slash = strrchr(in, '/');
    const char *extra[] = {"zlora.converted_from", slash && slash[1] ? slash + 1 : in, "zlora.version", ZL_VERSION, NULL, NULL};
    zl_info("converting %s (%d tensors, %.2f GB in %d file(s)) to %s", in, zl_st_count(st), (double)zl_st_total_bytes(st) / 1e9,
            zl_st_nshards(st), zl_dtype_name(to));
    int rc = zl_st_convert(st, out, to, extra);
    zl_st_close(st);
    if (rc) return zl_cli_fail();
    zl_info("wrote %s", out);
    return 0;
}
