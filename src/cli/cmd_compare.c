/* cmd_compare.c — `zlora compare`: a matrix of seeds × prompts × configurations (built-in experiments or a
 * --config file), cells, grids, metrics and a report. See README.md "Compare" and src/eval/compare.h. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include "base/base.h"
#include "cli/cli.h"
#include "eval/compare.h"
#include "eval/grid.h"
#include "nn/ops.h"

static const char *usage =
    "usage: zlora compare --model DIR --lora FILE[:S]... --prompts FILE --seeds LIST -o OUT_DIR [options]\n"
    "A matrix of seeds x prompts x configurations (model, LoRA stack, sampling settings): every cell is generated\n"
    "with the same noise per seed, scored, and shown in grids (rows = configurations, columns = seeds, one per\n"
    "prompt), metrics.json / metrics.csv and report.html, with flags for blur, no effect, bleeding, lost effect.\n"
    "inputs:\n"
    "  --model DIR           the model (diffusers layout: transformer/, text_encoder/, tokenizer/, vae/, scheduler/)\n"
    "  --base-model DIR      Z-Image Base, for --experiment base-vs-turbo (or \"base\" in --config)\n"
    "  --lora FILE[:S]       repeatable: the LoRA stack (routes: the LoRAs to compare side by side)\n"
    "  --patch FILE[:S]      the DistillPatch LoRA (turbo-check adds a LoRA + patch row)\n"
    "  --prompts FILE        one prompt per line; blank lines and lines starting with # are ignored;\n"
    "                        [trigger] is replaced by the trigger word\n"
    "  --seeds LIST          1,2,3 or ranges 40-43\n"
    "  -o, --out DIR         the output folder (created; files in it are replaced)\n"
    "experiments (--experiment NAME):\n"
    "  turbo-check           (default) no LoRA | LoRA at --steps (8) | LoRA at --slow-steps (30) with --slow-cfg (2)\n"
    "                        | LoRA + patch at 8 (with --patch): is the LoRA blurry at 8 steps?\n"
    "  base-vs-turbo         Base (--base-steps 30, --base-cfg 4) and Turbo (8), each without and with the LoRA:\n"
    "                        how much of the LoRA's effect survives on Turbo (retention)\n"
    "  routes                each --lora alone at Turbo settings, plus no LoRA (e.g. three training routes)\n"
    "  strength              the LoRA at each of --strengths (default 0,0.25,0.5,0.75,1), plus no LoRA\n"
    "  --config FILE         instead: a JSON list of configurations (see README \"Compare\")\n"
    "settings:\n"
    "  -W, --width N  -H, --height N   image size (default 1024x1024; multiples of 16)\n"
    "  --steps N  --slow-steps N  --slow-cfg G  --base-steps N  --base-cfg G   (CFG in the standard form, 1 = off)\n"
    "  -n, --negative TEXT   negative prompt of the configurations with CFG (default \"\")\n"
    "  --sampler NAME        euler (default) | res_multistep\n"
    "  --noise torch|torch-scalar   as in zlora generate\n"
    "  --strengths LIST      for --experiment strength, e.g. 0,0.5,1,1.5\n"
    "metrics and flags:\n"
    "  --trigger WORD        prompts containing it are trigger prompts (default: the LoRA's metadata, e.g.\n"
    "                        modelspec.trigger_phrase; without one every prompt counts as a trigger prompt)\n"
    "  --thresholds K=V,...  blurry_at_8=0.7 (sharpness ratio below), not_learning=0.02 (effect below),\n"
    "                        bleeding=0.5 (other-prompt effect above this x trigger-prompt effect),\n"
    "                        low_retention=0.5 (retention below)\n"
    "misc:\n"
    "  --grid-cell N         longer side of a cell in the grids, at most (default 384; 0 = full size)\n"
    "  --cache DIR | --no-cache   caption feature cache (default ~/.cache/zlora/te, or $ZLORA_CACHE/te)\n"
    "  --force               apply LoRAs even where some keys do not fit (those are skipped)\n"
    "  --vae-tile N          tiled VAE decode  --bf16-gemm  bf16 matrix products (faster, not exact)\n";

#define MAX_LORAS 32

static int parse_num(const char *flag, const char *v, double lo, double hi, double *out) {
    char *end;
    errno = 0;
    double x = strtod(v, &end);
    if (end == v || *end || errno || !(x >= lo && x <= hi)) return zl_err("%s: '%s' is not a number in [%g, %g]", flag, v, lo, hi);
    *out = x;
    return 0;
}

static int parse_strengths(const char *s, double *out, int max, int *n) {
    *n = 0;
    for (const char *p = s;;) {
        char *end;
        errno = 0;
        double v = strtod(p, &end);
        if (end == p || errno || !isfinite(v) || fabs(v) > 100 || (*end && *end != ','))
            return zl_err("--strengths %s: expected numbers separated by commas, e.g. 0,0.5,1", s);
        if (*n == max) return zl_err("--strengths: at most %d", max);
        out[(*n)++] = v;
        if (!*end) return 0;
        p = end + 1;
    }
}

int zl_cmd_compare(int argc, char **argv) {
    zl_cmp_plan plan;
    zl_cmp_default_plan(&plan);
    zl_cmp_spec s;
    memset(&s, 0, sizeof s);
    s.width = s.height = 1024;
    s.grid_cell = 384;
    zl_cmp_default_thresholds(&s.th);
    zl_cmp_lora loras[MAX_LORAS], patch;
    char *paths[MAX_LORAS + 1];
    int npaths = 0;
    double strengths[64];
    const char *prompts = NULL, *seeds = NULL, *out = NULL, *cache = NULL, *trigger = NULL;
    int no_cache = 0, bf16 = 0, have_patch = 0, have_experiment = 0, rc = 0;
    double v;
    for (int i = 1; i < argc && rc == 0; i++) {
        const char *f = argv[i], *x = i + 1 < argc ? argv[i + 1] : NULL;
#define ARG(name) (!strcmp(f, name) && x && ++i)
        if (!strcmp(f, "--help") || !strcmp(f, "-h")) { fputs(usage, stdout); return 0; }
        else if (ARG("--model")) plan.model = x;
        else if (ARG("--base-model")) plan.base_model = x;
        else if (ARG("--lora") || ARG("--patch")) {
            int is_patch = !strcmp(f, "--patch");
            if (is_patch && have_patch) { rc = zl_err("--patch is given twice"); break; }
            if (!is_patch && plan.nlora == MAX_LORAS) { rc = zl_err("at most %d LoRAs", MAX_LORAS); break; }
            char path[4096];
            float st;
            zl_cli_split_strength(x, path, sizeof path, &st);
            paths[npaths] = zl_xstrdup(path);
            zl_cmp_lora l = {paths[npaths++], st};
            if (is_patch) { patch = l; have_patch = 1; }
            else loras[plan.nlora++] = l;
        } else if (ARG("--prompts")) prompts = x;
        else if (ARG("--seeds")) seeds = x;
        else if (ARG("-o") || ARG("--out")) out = x;
        else if (ARG("--experiment")) { plan.experiment = x; have_experiment = 1; }
        else if (ARG("--config")) plan.config_file = x;
        else if (ARG("-W") || ARG("--width")) { rc = parse_num(f, x, 1, 16384, &v); s.width = (int)v; }
        else if (ARG("-H") || ARG("--height")) { rc = parse_num(f, x, 1, 16384, &v); s.height = (int)v; }
        else if (ARG("--steps")) { rc = parse_num(f, x, 1, 10000, &v); plan.steps = (int)v; }
        else if (ARG("--slow-steps")) { rc = parse_num(f, x, 1, 10000, &v); plan.slow_steps = (int)v; }
        else if (ARG("--base-steps")) { rc = parse_num(f, x, 1, 10000, &v); plan.base_steps = (int)v; }
        else if (ARG("--slow-cfg")) rc = parse_num(f, x, -100, 100, &plan.slow_cfg);
        else if (ARG("--base-cfg")) rc = parse_num(f, x, -100, 100, &plan.base_cfg);
        else if (ARG("-n") || ARG("--negative")) plan.negative = x;
        else if (ARG("--sampler")) rc = zl_sampler_parse(x, &plan.sampler);
        else if (ARG("--noise")) {
            if (!strcmp(x, "torch")) plan.noise = ZL_NOISE_TORCH;
            else if (!strcmp(x, "torch-scalar")) plan.noise = ZL_NOISE_TORCH_SCALAR;
            else rc = zl_err("--noise must be torch or torch-scalar");
        } else if (ARG("--strengths")) rc = parse_strengths(x, strengths, 64, &plan.nstrength);
        else if (ARG("--trigger")) trigger = x;
        else if (ARG("--thresholds")) rc = zl_cmp_parse_thresholds(x, &s.th);
        else if (ARG("--grid-cell")) { rc = parse_num(f, x, 0, 16384, &v); s.grid_cell = (int)v; }
        else if (ARG("--cache")) cache = x;
        else if (!strcmp(f, "--no-cache")) no_cache = 1;
        else if (!strcmp(f, "--force")) s.force = 1;
        else if (ARG("--vae-tile")) { rc = parse_num(f, x, 8, 4096, &v); s.vae_tile = (int)v; }
        else if (!strcmp(f, "--bf16-gemm")) bf16 = 1;
        else rc = zl_err("compare: unexpected argument '%s' (see zlora compare --help)", f);
#undef ARG
    }
    plan.loras = loras;
    plan.patch = have_patch ? &patch : NULL;
    plan.strengths = strengths;
    if (rc == 0 && !plan.model && !plan.config_file) rc = zl_err("compare: give the model (--model DIR)");
    if (rc == 0 && plan.config_file && have_experiment)
        rc = zl_err("--config and --experiment cannot be combined (the file is the experiment)");
    if (rc == 0 && !prompts) rc = zl_err("compare: give the prompts (--prompts FILE, one per line)");
    if (rc == 0 && !seeds) rc = zl_err("compare: give the seeds (--seeds 1,2,3)");
    if (rc == 0 && !out) rc = zl_err("compare: give the output folder (-o DIR)");
    if (rc == 0 && plan.nstrength && (plan.config_file || strcmp(plan.experiment, "strength")))
        rc = zl_err("--strengths is for --experiment strength");
    if (rc == 0) rc = zl_cmp_parse_seeds(seeds, &s.seeds, &s.nseed);
    if (rc == 0) rc = zl_cmp_read_prompts(prompts, &s.prompts, &s.nprompt);
    if (rc == 0) rc = zl_cmp_build(&plan, &s);
    if (rc == 0) {
        s.trigger = trigger ? zl_xstrdup(trigger) : NULL;
        s.cache_dir = no_cache ? NULL : cache ? zl_xstrdup(cache) : zl_gen_default_cache();
        if (bf16) zl_ops_set_bf16_gemm(1);
    }
    zl_cmp_result r;
    memset(&r, 0, sizeof r);
    if (rc == 0) rc = zl_cmp_run(&s, out, &r);
    if (rc == 0) {
        printf("\n");
        zl_cmp_print_table(&s, &r, stdout);
        struct rusage ru;
        getrusage(RUSAGE_SELF, &ru);
        printf("\n%d cells in %.1f s (peak memory %.0f MB): %s/report.html, %s/metrics.json, %s/metrics.csv\n", r.ncell, r.seconds,
               (double)ru.ru_maxrss / 1024.0, out, out, out);
    }
    int drew = r.grids != NULL;
    zl_cmp_result_free(&s, &r);
    zl_cmp_spec_free(&s);
    for (int i = 0; i < npaths; i++) free(paths[i]);
    if (drew) zl_grid_cleanup();
    return rc ? zl_cli_fail() : 0;
}
