/* cmd_train.c — `zlora train`: LoRA training by the three routes (see src/train/trainer.h, README "Train"). */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "base/base.h"
#include "cli/cli.h"
#include "io/safetensors.h"
#include "lora/lora.h"
#include "model/zimage.h"
#include "nn/ops.h"
#include "train/lora_init.h"
#include "train/trainer.h"

static const char *usage =
    "usage: zlora train --model DIR --data DIR --route base|turbo-adapter|turbo-direct|custom --out DIR [options]\n"
    "       zlora train --resume OUT_DIR [--steps N]\n"
    "routes:\n"
    "  base            train on Z-Image (Base); samples at Base settings (30 steps, CFG 4, negative prompt)\n"
    "  turbo-adapter   train on Turbo with --adapter FILE (a de-distill training adapter, any LoRA format) at +1;\n"
    "                  samples at Turbo settings (8 steps, no CFG) without it; the adapter is never saved\n"
    "  turbo-direct    train on Turbo plainly (the control); samples at 8 steps and at 30 steps\n"
    "LoRA:      --rank 16  --alpha RANK  --targets attn,ffn[,adaln,refiners]  --init kaiming|gaussian\n"
    "           --lora-dropout 0 (P: dropout on each LoRA branch's input, scaled 1/(1-P), as PEFT's lora_dropout;\n"
    "           training steps only, never in samples)\n"
    "optimiser: --lr 1e-4  --schedule constant|warmup|cosine  --warmup 0  --min-lr 0  --weight-decay 0.01\n"
    "           --max-grad-norm 1  --beta1 0.9 --beta2 0.999  --steps 3000  --batch 1  --grad-accum 1\n"
    "noise:     --sigma shift|logit-normal|uniform|weighted  --sigma-shift 3  --sigma-mean 0 --sigma-std 1\n"
    "data:      --resolution 1024  --bucket-step 64  --trigger WORD  --default-caption TEXT  --repeats 1\n"
    "           --caption-dropout 0  --flip  --allow-upscale\n"
    "custom:    --full (train every weight; the output is a whole transformer)\n"
    "           --distill-steps 8 --teacher DIR --teacher-lora FILE[:S] --teacher-substeps 4 --teacher-cfg G\n"
    "           (trajectory distillation: one student step matches the teacher's substeps)\n"
    "runs:      --seed 42  --save-every 250  --keep 3  --sample-every 250 (0: never)  --sample-prompt TEXT (repeat)\n"
    "           --sample-size N  --sample-steps N --sample-cfg G (instead of the route's)\n"
    "           --turbo-model DIR (base route: also sample the LoRA on Turbo at 8 steps)  --name lora  --cache DIR (latents + caption features; default ~/.cache/zlora)\n"
    "Ctrl-C saves a checkpoint; --resume continues exactly where it stopped.\n";

static int num(const char *flag, const char *v, double lo, double hi, double *out) {
    char *end;
    errno = 0;
    double x = strtod(v, &end);
    if (end == v || *end || errno || !(x >= lo && x <= hi)) return zl_err("%s: '%s' is not a number in [%g, %g]", flag, v, lo, hi);
    *out = x;
    return 0;
}

static char *slurp_file(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    zl_buf b = {0};
    char c[4096];
    size_t k;
    zl_buf_puts(&b, "");
    while ((k = fread(c, 1, sizeof c, f)) > 0)
        for (size_t i = 0; i < k; i++) zl_buf_printf(&b, "%c", c[i]);
    fclose(f);
    return b.s;
}

int zl_cmd_train(int argc, char **argv) {
    zl_train_opts o;
    zl_train_default_opts(&o);
    const char *resume = NULL;
    int rc = 0, have_steps = 0;
    double v;
    for (int i = 1; i < argc && rc == 0; i++)
        if (!strcmp(argv[i], "--resume") && i + 1 < argc) resume = argv[i + 1];
    if (resume) {
        char *p = zl_xasprintf("%s/train.json", resume), *js = slurp_file(p);
        if (!js) rc = zl_err("--resume %s: no train.json there (not a zlora training folder)", resume);
        else rc = zl_train_opts_from_json(js, &o);
        free(js);
        free(p);
        if (rc) return zl_cli_fail();
        free(o.out);
        o.out = zl_xstrdup(resume);
    }
    for (int i = 1; i < argc && rc == 0; i++) {
        const char *f = argv[i], *x = i + 1 < argc ? argv[i + 1] : NULL;
#define ARG(name) (!strcmp(f, name) && x && ++i)
#define STR(field) do { free(o.field); o.field = zl_xstrdup(x); } while (0)
        if (!strcmp(f, "--help") || !strcmp(f, "-h")) { fputs(usage, stdout); zl_train_opts_free(&o); return 0; }
        else if (ARG("--resume")) {}
        else if (resume && strcmp(f, "--steps")) rc = zl_err("with --resume only --steps may be given (the run's options are in train.json)");
        else if (ARG("--model")) STR(model);
        else if (ARG("--data")) STR(data);
        else if (ARG("--out")) STR(out);
        else if (ARG("--adapter")) STR(adapter);
        else if (ARG("--name")) STR(name);
        else if (ARG("--trigger")) STR(trigger);
        else if (ARG("--default-caption")) STR(default_caption);
        else if (ARG("--cache")) STR(cache);
        else if (ARG("--negative")) STR(negative);
        else if (ARG("--route")) rc = zl_route_parse(x, &o.route);
        else if (!strcmp(f, "--full")) o.full = 1;
        else if (ARG("--teacher")) STR(teacher);
        else if (ARG("--teacher-lora")) STR(teacher_lora);
        else if (ARG("--distill-steps")) { rc = num(f, x, 1, 1000, &v); o.distill_steps = (int)v; }
        else if (ARG("--teacher-substeps")) { rc = num(f, x, 1, 1000, &v); o.teacher_substeps = (int)v; }
        else if (ARG("--teacher-cfg")) { rc = num(f, x, -100, 100, &v); o.teacher_guidance = (float)(v - 1); }
        else if (ARG("--rank")) { rc = num(f, x, 1, 4096, &v); o.rank = (int)v; }
        else if (ARG("--lora-dropout")) { rc = num(f, x, 0, 0.99, &v); o.lora_dropout = (float)v; }
        else if (ARG("--alpha")) { rc = num(f, x, 1e-6, 1e6, &v); o.alpha = (float)v; }
        else if (ARG("--targets")) rc = zl_lora_targets_parse(x, &o.targets);
        else if (ARG("--init")) {
            if (!strcmp(x, "kaiming")) o.gaussian_init = 0;
            else if (!strcmp(x, "gaussian")) o.gaussian_init = 1;
            else rc = zl_err("--init must be kaiming or gaussian");
        } else if (ARG("--lr")) { rc = num(f, x, 0, 1, &v); o.lr = (float)v; }
        else if (ARG("--min-lr")) { rc = num(f, x, 0, 1, &v); o.min_lr = (float)v; }
        else if (ARG("--schedule")) rc = zl_lr_parse(x, &o.sched);
        else if (ARG("--warmup")) { rc = num(f, x, 0, 1e9, &v); o.warmup = (int)v; }
        else if (ARG("--weight-decay")) { rc = num(f, x, 0, 10, &v); o.weight_decay = (float)v; }
        else if (ARG("--max-grad-norm")) { rc = num(f, x, 0, 1e9, &v); o.max_grad_norm = (float)v; }
        else if (ARG("--beta1")) { rc = num(f, x, 0, 0.99999, &v); o.beta1 = (float)v; }
        else if (ARG("--beta2")) { rc = num(f, x, 0, 0.999999, &v); o.beta2 = (float)v; }
        else if (ARG("--steps")) { rc = num(f, x, 1, 1e9, &v); o.steps = (int)v; have_steps = 1; }
        else if (ARG("--batch")) { rc = num(f, x, 1, 1024, &v); o.batch = (int)v; }
        else if (ARG("--grad-accum")) { rc = num(f, x, 1, 1024, &v); o.grad_accum = (int)v; }
        else if (ARG("--sigma")) rc = zl_sigma_parse(x, &o.sigma.kind);
        else if (ARG("--sigma-shift")) { rc = num(f, x, 0.01, 100, &v); o.sigma.shift = (float)v; }
        else if (ARG("--sigma-mean")) { rc = num(f, x, -10, 10, &v); o.sigma.mean = (float)v; }
        else if (ARG("--sigma-std")) { rc = num(f, x, 0.01, 10, &v); o.sigma.std = (float)v; }
        else if (ARG("--resolution")) { rc = num(f, x, 16, 8192, &v); o.resolution = (int)v; }
        else if (ARG("--bucket-step")) { rc = num(f, x, 1, 1024, &v); o.bucket_step = (int)v; }
        else if (ARG("--repeats")) { rc = num(f, x, 1, 10000, &v); o.repeats = (int)v; }
        else if (ARG("--caption-dropout")) { rc = num(f, x, 0, 1, &v); o.caption_dropout = (float)v; }
        else if (!strcmp(f, "--flip")) o.flip = 1;
        else if (!strcmp(f, "--allow-upscale")) o.allow_upscale = 1;
        else if (ARG("--seed")) { rc = num(f, x, 0, 1.8e19, &v); o.seed = strtoull(x, NULL, 10); }
        else if (ARG("--save-every")) { rc = num(f, x, 0, 1e9, &v); o.save_every = (int)v; }
        else if (ARG("--keep")) { rc = num(f, x, 0, 1e6, &v); o.keep = (int)v; }
        else if (ARG("--sample-every")) { rc = num(f, x, 0, 1e9, &v); o.sample_every = (int)v; }
        else if (ARG("--sample-size")) { rc = num(f, x, 16, 8192, &v); o.sample_size = (int)v; }
        else if (ARG("--sample-steps")) { rc = num(f, x, 1, 1000, &v); o.sample_steps = (int)v; }
        else if (ARG("--sample-cfg")) { rc = num(f, x, -100, 100, &v); o.sample_guidance = (float)(v - 1); }
        else if (ARG("--turbo-model")) STR(turbo_model);
        else if (ARG("--sample-seed")) { rc = num(f, x, 0, 2e9, &v); o.sample_seed = (int)v; }
        else if (ARG("--sample-prompt")) {
            if (o.nprompts == ZL_TRAIN_MAX_PROMPTS) rc = zl_err("at most %d sample prompts", ZL_TRAIN_MAX_PROMPTS);
            else o.prompts[o.nprompts++] = zl_xstrdup(x);
        } else rc = zl_err("train: unexpected argument '%s' (see zlora train --help)", f);
#undef ARG
#undef STR
    }
    if (rc == 0 && !resume && o.route == ZL_ROUTE_COUNT) rc = zl_err("train: choose a --route (base, turbo-adapter, turbo-direct or custom)");
    if (rc == 0 && resume && !have_steps) zl_info("resuming %s to step %d", resume, o.steps);
    if (rc == 0) rc = zl_train_run(&o, resume != NULL);
    zl_train_opts_free(&o);
    if (rc == 130) return 130;
    return rc ? zl_cli_fail() : 0;
}

/* `zlora debug dit-grad --model PATH --lora LORA --in IN --out OUT`: one flow-matching loss and the
 * gradient of every tensor of LORA (strength 1, runtime branches), for parity checks against other
 * implementations. IN: x0 [16,H,W], noise [16,H,W], sigma [1], cap [L,C]. OUT: loss [1] and, under each
 * LoRA tensor's own key, its gradient (F32; alpha tensors have none). */
int zl_cmd_debug_dit_grad(int argc, char **argv) {
    const char *u = "usage: zlora debug dit-grad --model PATH --lora LORA --in IN.safetensors --out OUT.safetensors [--weights bf16|f32]\n"
                    "  IN: x0 [16,H,W], noise [16,H,W], sigma [1], cap [L,cap_feat_dim]; loss = mean((DiT(x_s, 1 - s, cap) - (x0 - noise))^2)\n"
                    "  with x_s = (1 - s) x0 + s noise; OUT: loss [1] and the gradient of every LoRA tensor under its key\n";
    const char *model = NULL, *lora = NULL, *in = NULL, *out = NULL;
    zl_zimage_opts wo;
    zl_zimage_default_opts(&wo);
    for (int i = 1; i < argc; i++) {
        const char *f = argv[i], *x = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(f, "--help") || !strcmp(f, "-h")) { fputs(u, stdout); return 0; }
        else if (!strcmp(f, "--model") && x) model = argv[++i];
        else if (!strcmp(f, "--lora") && x) lora = argv[++i];
        else if (!strcmp(f, "--in") && x) in = argv[++i];
        else if (!strcmp(f, "--out") && x) out = argv[++i];
        else if (!strcmp(f, "--weights") && x) {
            const char *v = argv[++i];
            if (!strcmp(v, "bf16")) wo.weight_dtype = ZL_BF16;
            else if (!strcmp(v, "f32")) wo.weight_dtype = ZL_F32;
            else { fprintf(stderr, "error: --weights must be bf16 or f32\n"); return 2; }
        } else { fprintf(stderr, "error: debug dit-grad: unexpected argument '%s'\n%s", f, u); return 2; }
    }
    if (!model || !lora || !in || !out) { fprintf(stderr, "error: debug dit-grad: --model, --lora, --in and --out are required\n%s", u); return 2; }
    zl_zimage *m = NULL;
    zl_lora *l = NULL, *g = NULL;
    zl_st *st = NULL, *ls = NULL;
    float *x0 = NULL, *nz = NULL, *sg = NULL, *cap = NULL, *xs = NULL, *tgt = NULL;
    int rc = zl_st_open(in, &st);
    const zl_tensor_info *tx = NULL, *tn = NULL, *ts = NULL, *tc = NULL;
    if (rc == 0) {
        tx = zl_st_find(st, "x0"); tn = zl_st_find(st, "noise"); ts = zl_st_find(st, "sigma"); tc = zl_st_find(st, "cap");
        if (!tx || !tn || !ts || !tc || tx->ndim != 3 || tn->ndim != 3 || tc->ndim != 2 || ts->ndim != 1 ||
            memcmp(tx->shape, tn->shape, sizeof(int64_t) * 3))
            rc = zl_err("%s: needs x0 [16,H,W], noise [16,H,W] (same shape), sigma [1] and cap [L,C]", in);
    }
    if (rc == 0) {
        x0 = zl_st_read_f32(st, tx); nz = zl_st_read_f32(st, tn); sg = zl_st_read_f32(st, ts); cap = zl_st_read_f32(st, tc);
        if (!x0 || !nz || !sg || !cap) rc = -1;
    }
    if (rc == 0) rc = zl_zimage_load(model, &wo, &m);
    if (rc == 0 && tc->shape[1] != m->cfg.cap_feat_dim) rc = zl_err("cap is %lld wide; the DiT expects %d", (long long)tc->shape[1], m->cfg.cap_feat_dim);
    if (rc == 0 && tx->shape[0] != m->cfg.in_channels) rc = zl_err("x0 has %lld channels; the DiT takes %d", (long long)tx->shape[0], m->cfg.in_channels);
    if (rc == 0) zl_ops_auto_threads(m->cfg.dim);
    if (rc == 0) rc = zl_lora_load(lora, &l);
    if (rc == 0) rc = zl_lora_load(lora, &g);
    float one = 1.0f;
    if (rc == 0) rc = zl_zimage_apply_loras(m, &l, &one, 1, 0, 0, NULL);
    if (rc == 0) {
        for (int i = 0; i < g->n; i++)
            for (int p = 0; p < ZL_P_COUNT; p++)
                if (g->m[i].p[p].data) {
                    size_t n = 1;
                    for (int d = 0; d < g->m[i].p[p].ndim; d++) n *= (size_t)g->m[i].p[p].shape[d];
                    memset(g->m[i].p[p].data, 0, sizeof(float) * n);
                }
        if (zl_zimage_lora_grads(m, l, g) < 1) rc = zl_err("%s: no LoRA module of this file can be trained here (only plain LoRA modules have gradients)", lora);
    }
    float loss = 0;
    if (rc == 0) {
        size_t n = (size_t)tx->shape[0] * (size_t)tx->shape[1] * (size_t)tx->shape[2];
        float s = sg[0];
        xs = zl_xmalloc(sizeof(float) * n);
        tgt = zl_xmalloc(sizeof(float) * n);
        for (size_t q = 0; q < n; q++) { xs[q] = (1 - s) * x0[q] + s * nz[q]; tgt[q] = x0[q] - nz[q]; }
        rc = zl_zimage_forward_backward(m, xs, (int)tx->shape[1], (int)tx->shape[2], 1 - s, cap, (int)tc->shape[0], tgt, 1.0f, &loss, NULL);
    }
    if (rc == 0) rc = zl_st_open(lora, &ls);
    if (rc == 0) {
        zl_st_writer *w = zl_stw_new();
        int64_t one_shape[1] = {1};
        rc = zl_stw_add_f32(w, "loss", 1, one_shape, &loss, ZL_F32);
        int written = 0;
        for (int t = 0; t < zl_st_count(ls) && rc == 0; t++) {
            const zl_tensor_info *ti = zl_st_tensor(ls, t);
            char mod[512];
            zl_part part;
            zl_format fmt;
            const char *uns = NULL;
            if (zl_lora_parse_key(ti->name, mod, sizeof mod, &part, &fmt, &uns) || (part != ZL_P_DOWN && part != ZL_P_UP)) continue;
            for (int i = 0; i < g->n; i++) {
                if (strcmp(g->m[i].key, mod) || g->m[i].kind != ZL_AD_LORA || !g->m[i].p[part].data) continue;
                rc = zl_stw_add_f32(w, ti->name, g->m[i].p[part].ndim, g->m[i].p[part].shape, g->m[i].p[part].data, ZL_F32);
                written++;
                break;
            }
        }
        if (rc == 0) rc = zl_stw_write(w, out);
        zl_stw_free(w);
        if (rc == 0) zl_info("loss %.6g; %d gradient tensors written to %s", (double)loss, written, out);
    }
    zl_st_close(st);
    zl_st_close(ls);
    free(x0); free(nz); free(sg); free(cap); free(xs); free(tgt);
    zl_lora_free(l);
    zl_lora_free(g);
    zl_zimage_free(m);
    return rc ? zl_cli_fail() : 0;
}
