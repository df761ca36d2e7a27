/* test_train.c — zlora train and debug dit-grad on the tiny model folder: the gradients of the CLI against
 * the PyTorch autograd golden (tests/data/zimage/tiny_a/grad), a run that learns, resume that is
 * bit-identical to an uninterrupted run, Ctrl-C saving a checkpoint, the adapter route never saving the
 * adapter, and refusals. */
#include "test.h"
#include "base/base.h"
#include "io/safetensors.h"
#include "lora/lora.h"
#include "model/zimage.h"
#include "io/image.h"

#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#define GRAD "tests/data/zimage/tiny_a/grad"

static void canon_to_kohya(const char *canon, int up, char *out, size_t n) {
    char b[300];
    snprintf(b, sizeof b, "lora_unet_%s", canon);
    for (char *p = b; *p; p++) if (*p == '.') *p = '_';
    snprintf(out, n, "%s.%s.weight", b, up ? "lora_up" : "lora_down");
}

TEST(train_dit_grad_matches_torch_autograd) {
    zl_st *g;
    CHECK(zl_st_open(GRAD "/golden.safetensors", &g) == 0);
    const zl_tensor_info *tx = zl_st_find(g, "x"), *tt = zl_st_find(g, "t"), *tg = zl_st_find(g, "target"), *tc = zl_st_find(g, "cap"),
                         *tl = zl_st_find(g, "loss");
    CHECK(tx && tt && tg && tc && tl);
    float *x = zl_st_read_f32(g, tx), *t = zl_st_read_f32(g, tt), *tgt = zl_st_read_f32(g, tg), *cap = zl_st_read_f32(g, tc),
          *loss = zl_st_read_f32(g, tl);
    float strength = (float)atof(zl_st_meta_get(g, "strength"));
    size_t n = (size_t)tx->shape[0] * tx->shape[1] * tx->shape[2];
    /* the golden gives x_σ and the target; x0 = x + σ·target, noise = x − (1 − σ)·target */
    float s = 1 - t[0], *x0 = malloc(sizeof(float) * n), *nz = malloc(sizeof(float) * n);
    for (size_t i = 0; i < n; i++) { x0[i] = x[i] + s * tgt[i]; nz[i] = x[i] - (1 - s) * tgt[i]; }
    char in[600], lora[600], out[600], cmd[3000];
    snprintf(in, sizeof in, "%s/grad_in.safetensors", zl_test_dir());
    snprintf(lora, sizeof lora, "%s/grad_lora.safetensors", zl_test_dir());
    snprintf(out, sizeof out, "%s/grad_out.safetensors", zl_test_dir());
    zl_st_writer *w = zl_stw_new();
    int64_t one[1] = {1};
    CHECK(zl_stw_add_f32(w, "x0", 3, tx->shape, x0, ZL_F32) == 0 && zl_stw_add_f32(w, "noise", 3, tx->shape, nz, ZL_F32) == 0);
    CHECK(zl_stw_add_f32(w, "sigma", 1, one, &s, ZL_F32) == 0 && zl_stw_add_f32(w, "cap", 2, tc->shape, cap, ZL_F32) == 0);
    CHECK(zl_stw_write(w, in) == 0);
    zl_stw_free(w);
    /* dit-grad trains at strength 1: fold the golden's strength into alpha; kohya naming keeps the factors */
    zl_lora *l;
    CHECK(zl_lora_load(GRAD "/lora_train.safetensors", &l) == 0);
    for (int i = 0; i < l->n; i++) {
        if (!l->m[i].has_alpha) { l->m[i].has_alpha = 1; l->m[i].alpha = (float)l->m[i].rank; }
        l->m[i].alpha *= strength;
    }
    zl_write_opts wo = {.to = ZL_FMT_KOHYA, .dtype = ZL_F32};
    CHECK(zl_lora_write(l, lora, &wo) == 0);
    zl_lora_free(l);
    snprintf(cmd, sizeof cmd, "%s -q debug dit-grad --weights f32 --model tests/data/zimage/tiny_a/diffusers_single.safetensors --lora %s --in %s --out %s 2>&1", zl_test_bin(), lora, in, out);
    CHECK(zl_test_run(cmd, NULL) == 0);
    zl_st *o;
    CHECK(zl_st_open(out, &o) == 0);
    float *l2 = zl_st_read_f32(o, zl_st_find(o, "loss"));
    CHECK(l2);
    CHECK_MSG(fabs(l2[0] - loss[0]) <= 1e-5 * fabs(loss[0]), "loss %g vs torch %g", l2[0], loss[0]);
    int compared = 0;
    double worst = 0;
    for (int i = 0; i < zl_st_count(g); i++) {
        const zl_tensor_info *gt = zl_st_tensor(g, i);
        if (!zl_starts_with(gt->name, "grad.")) continue;
        const char *name = gt->name + 5;
        size_t len = strlen(name);
        int up = zl_ends_with(name, ".lora_B");
        if (!up && !zl_ends_with(name, ".lora_A")) continue; /* norm weights: not LoRA tensors */
        char canon[256], key[340];
        snprintf(canon, sizeof canon, "%.*s", (int)(len - 7), name);
        canon_to_kohya(canon, up, key, sizeof key);
        const zl_tensor_info *ct = zl_st_find(o, key);
        CHECK_MSG(ct, "no gradient for %s (%s)", gt->name, key);
        float *a = zl_st_read_f32(g, gt), *b = zl_st_read_f32(o, ct);
        size_t m = (size_t)gt->shape[0] * gt->shape[1];
        double num = 0, den = 0;
        for (size_t k = 0; k < m; k++) { num += (double)(a[k] - b[k]) * (a[k] - b[k]); den += (double)a[k] * a[k]; }
        double rel = sqrt(num / (den + 1e-30));
        worst = fmax(worst, rel);
        free(a); free(b);
        compared++;
    }
    CHECK(compared >= 40);
    CHECK_MSG(worst < 1e-4, "worst gradient rel. L2 vs torch autograd: %g", worst);
    free(l2);
    zl_st_close(o);
    zl_st_close(g);
    free(x); free(t); free(tgt); free(cap); free(loss); free(x0); free(nz);
}

/* a small dataset: coloured boxes with captions */
static const char *dataset(void) {
    static char dir[600];
    if (dir[0]) return dir;
    snprintf(dir, sizeof dir, "%s/train_data", zl_test_dir());
    mkdir(dir, 0755);
    for (int i = 0; i < 4; i++) {
        char p[700];
        snprintf(p, sizeof p, "%s/img%d.png", dir, i);
        zl_image img;
        zl_image_alloc(&img, 40, 32);
        for (int y = 0; y < 32; y++)
            for (int xx = 0; xx < 40; xx++) {
                float *px = img.px + ((size_t)y * 40 + xx) * 3;
                int in = xx > 6 + 4 * i && xx < 26 + 4 * i && y > 6 && y < 26;
                px[0] = in ? 0.9f : 0.2f; px[1] = in ? 0.1f : 0.3f + 0.1f * i; px[2] = 0.2f;
            }
        zl_image_write_png(p, &img, NULL, NULL, 0);
        zl_image_free(&img);
        snprintf(p, sizeof p, "%s/img%d.txt", dir, i);
        FILE *f = fopen(p, "w");
        fputs(i % 2 ? "a red box on a green background" : "[trigger] box, plain background", f);
        fclose(f);
    }
    return dir;
}

static int train(const char *out, const char *extra) {
    char cmd[4000];
    snprintf(cmd, sizeof cmd,
             "%s -q train --model %s --data %s --out %s/%s --trigger zxq --resolution 32 --rank 4 --lr 2e-3 --sample-every 0 "
             "--cache %s/train_cache %s 2>&1",
             zl_test_bin(), zl_test_tiny_model(), dataset(), zl_test_dir(), out, zl_test_dir(), extra);
    return zl_test_run(cmd, NULL);
}

static int lora_equal(const char *a, const char *b) {
    char pa[700], pb[700];
    snprintf(pa, sizeof pa, "%s/%s", zl_test_dir(), a);
    snprintf(pb, sizeof pb, "%s/%s", zl_test_dir(), b);
    zl_st *x, *y;
    if (zl_st_open(pa, &x)) return -1;
    if (zl_st_open(pb, &y)) { zl_st_close(x); return -1; }
    int eq = zl_st_count(x) == zl_st_count(y);
    for (int i = 0; eq && i < zl_st_count(x); i++) {
        const zl_tensor_info *t = zl_st_tensor(x, i), *u = zl_st_find(y, t->name);
        eq = u && t->nbytes == u->nbytes && !memcmp(t->data, u->data, t->nbytes);
    }
    zl_st_close(x);
    zl_st_close(y);
    return eq;
}

TEST(train_resume_is_exact) {
    CHECK(train("straight", "--route turbo-direct --steps 12 --save-every 0 --batch 2") == 0);
    CHECK(train("halves", "--route turbo-direct --steps 5 --save-every 5 --batch 2") == 0);
    char cmd[2000];
    snprintf(cmd, sizeof cmd, "%s -q train --resume %s/halves --steps 12 2>&1", zl_test_bin(), zl_test_dir());
    CHECK(zl_test_run(cmd, NULL) == 0);
    CHECK(lora_equal("straight/lora.safetensors", "halves/lora.safetensors") == 1);
    /* the outputs a run promises */
    char p[800];
    const char *files[] = {"lora.safetensors", "train.json", "loss.csv", "loss.png", "checkpoints/latest"};
    for (int i = 0; i < 5; i++) {
        snprintf(p, sizeof p, "%s/halves/%s", zl_test_dir(), files[i]);
        CHECK_MSG(zl_file_exists(p), "missing %s", p);
    }
    snprintf(cmd, sizeof cmd, "ls %s/halves/*.safetensors | wc -l", zl_test_dir());
    char *o = NULL;
    CHECK(zl_test_run(cmd, &o) == 0 && o && atoi(o) == 1); /* the only .safetensors at the top is the LoRA */
    free(o);
}

TEST(train_learns) {
    /* the loss on the same (σ, noise, image) draws falls: compare the first and last steps' average over a
     * run that sees every image many times */
    CHECK(train("learn", "--route turbo-direct --steps 80 --save-every 0 --lr 5e-3 --sigma uniform") == 0);
    char p[700];
    snprintf(p, sizeof p, "%s/learn/loss.csv", zl_test_dir());
    FILE *f = fopen(p, "r");
    CHECK(f);
    char line[256];
    double first = 0, last = 0;
    int n = 0;
    while (fgets(line, sizeof line, f)) {
        int st;
        float l;
        if (sscanf(line, "%d,%f", &st, &l) != 2) continue;
        if (st <= 20) first += l;
        if (st > 60) last += l;
        n++;
    }
    fclose(f);
    CHECK(n == 80);
    CHECK_MSG(last < 0.9 * first, "loss did not fall: first 20 steps %g, last 20 %g", first / 20, last / 20);
}

TEST(train_interrupt_saves_a_checkpoint) {
    char cmd[4000];
    snprintf(cmd, sizeof cmd,
             "%s -q train --model %s --data %s --out %s/intr --trigger zxq --resolution 32 --rank 4 --sample-every 0 --save-every 0 "
             "--cache %s/train_cache --route turbo-direct --steps 100000 > /dev/null 2>&1 & pid=$!; sleep 3; kill -INT $pid; wait $pid; echo $?",
             zl_test_bin(), zl_test_tiny_model(), dataset(), zl_test_dir(), zl_test_dir());
    char *out = NULL;
    CHECK(zl_test_run(cmd, &out) == 0 && out);
    CHECK_MSG(atoi(out) == 130, "exit status %s", out);
    free(out);
    char p[700];
    snprintf(p, sizeof p, "%s/intr/checkpoints/latest", zl_test_dir());
    CHECK(zl_file_exists(p));
}

TEST(train_adapter_route_never_saves_the_adapter) {
    /* the adapter: a LoRA on the same modules (a trained one from the golden folder stands in) */
    CHECK(train("adapter", "--route turbo-adapter --adapter tests/data/zimage/tiny_a/lora/lora_peft.safetensors --steps 3 --save-every 0") == 0);
    zl_lora *l, *a;
    char p[700];
    snprintf(p, sizeof p, "%s/adapter/lora.safetensors", zl_test_dir());
    CHECK(zl_lora_load(p, &l) == 0);
    CHECK(zl_lora_load("tests/data/zimage/tiny_a/lora/lora_peft.safetensors", &a) == 0);
    zl_zimage_config c;
    zl_zimage_default_config(&c);
    CHECK(l->n == 7 * 2); /* q, k, v, out, w1, w2, w3 of the 2 main layers: what was trained, nothing else */
    for (int i = 0; i < l->n; i++) {
        CHECK(l->m[i].rank == 4);
        for (int j = 0; j < a->n; j++)
            if (!strcmp(l->m[i].target, a->m[j].target) && a->m[j].rank == 4) {
                /* not the adapter's values */
                CHECK(memcmp(l->m[i].p[ZL_P_DOWN].data, a->m[j].p[ZL_P_DOWN].data, sizeof(float) * 4) != 0);
            }
    }
    CHECK(zl_lora_meta_get(l, "zlora.route") && !strcmp(zl_lora_meta_get(l, "zlora.route"), "turbo-adapter"));
    zl_lora_free(l);
    zl_lora_free(a);
    /* the route needs its adapter */
    CHECK(train("noadapter", "--route turbo-adapter --steps 1") != 0);
}

TEST(train_refusals) {
    char cmd[2000], *out = NULL;
    snprintf(cmd, sizeof cmd, "%s train --model %s --data %s/nope --out %s/r1 --route base 2>&1", zl_test_bin(), zl_test_tiny_model(), zl_test_dir(), zl_test_dir());
    CHECK(zl_test_run(cmd, &out) != 0 && out && strstr(out, "nope"));
    free(out);
    snprintf(cmd, sizeof cmd, "%s train --model %s --data %s --out %s/r2 2>&1", zl_test_bin(), zl_test_tiny_model(), dataset(), zl_test_dir());
    CHECK(zl_test_run(cmd, NULL) != 0); /* no route */
    snprintf(cmd, sizeof cmd, "%s train --resume %s/nothing 2>&1", zl_test_bin(), zl_test_dir());
    CHECK(zl_test_run(cmd, NULL) != 0);
}

static double loss_avg(const char *run, int from, int to) {
    char p[700], line[256];
    snprintf(p, sizeof p, "%s/%s/loss.csv", zl_test_dir(), run);
    FILE *f = fopen(p, "r");
    if (!f) return -1;
    double s = 0;
    int n = 0;
    while (fgets(line, sizeof line, f)) {
        int st;
        float l;
        if (sscanf(line, "%d,%f", &st, &l) == 2 && st >= from && st <= to) { s += l; n++; }
    }
    fclose(f);
    return n ? s / n : -1;
}

TEST(train_full_parameter_and_distillation) {
    /* every weight trains; the output is a transformer that generate loads */
    CHECK(train("full", "--route custom --full --name dit --steps 40 --lr 1e-3 --save-every 0 --sigma uniform") == 0);
    double a = loss_avg("full", 1, 10), b = loss_avg("full", 31, 40);
    CHECK_MSG(a > 0 && b > 0 && b < 0.85 * a, "full-parameter loss: first 10 steps %g, last 10 %g", a, b);
    char cmd[3000];
    snprintf(cmd, sizeof cmd, "%s -q generate --model %s --dit %s/full/dit.safetensors -p zxq -W 16 -H 16 --seed 1 --no-cache -o %s/full.png 2>&1",
             zl_test_bin(), zl_test_tiny_model(), zl_test_dir(), zl_test_dir());
    CHECK(zl_test_run(cmd, NULL) == 0);
    /* trajectory distillation into a LoRA: the student's loss against the teacher's trajectory falls */
    CHECK(train("distill", "--route custom --distill-steps 4 --teacher-substeps 2 --teacher-cfg 2 --rank 8 --steps 24 --save-every 0") == 0);
    a = loss_avg("distill", 1, 8);
    b = loss_avg("distill", 17, 24);
    CHECK_MSG(a > 0 && b > 0 && b < 0.9 * a, "distillation loss: first 8 steps %g, last 8 %g", a, b);
    /* --full cannot be combined with a frozen adapter */
    CHECK(train("fullbad", "--route custom --full --adapter tests/data/zimage/tiny_a/lora/lora_peft.safetensors --steps 1") != 0);
}

TEST(train_samples_at_the_route_settings) {
    char extra[1200];
    snprintf(extra, sizeof extra, "--route base --turbo-model %s --steps 2 --save-every 0 --sample-every 2 --sample-size 16", zl_test_tiny_model());
    /* train() passes --sample-every 0 first; the later flag wins */
    CHECK(train("samples", extra) == 0);
    const char *want[] = {"step_000000_base30_p00.png", "step_000002_base30_p01.png", "step_000000_on-turbo8_p00.png", "step_000002_on-turbo8_p01.png",
                          "step_000000_grid.png", "step_000002_grid.png"};
    for (int i = 0; i < 6; i++) {
        char p[800];
        snprintf(p, sizeof p, "%s/samples/samples/%s", zl_test_dir(), want[i]);
        CHECK_MSG(zl_file_exists(p), "missing %s", p);
    }
    CHECK(train("samples_turbo", "--route turbo-direct --steps 1 --save-every 0 --sample-every 1 --sample-size 16") == 0);
    char p[800];
    snprintf(p, sizeof p, "%s/samples_turbo/samples/step_000001_30steps_p00.png", zl_test_dir());
    CHECK(zl_file_exists(p));
    snprintf(p, sizeof p, "%s/samples_turbo/samples/step_000001_turbo8_p00.png", zl_test_dir());
    CHECK(zl_file_exists(p));
}

/* ---- LoRA dropout (--lora-dropout; the op is tested in test_lora_dropout.c) */

TEST(train_lora_dropout_zero_and_resume) {
    /* P = 0 is the run without the option, bit for bit */
    CHECK(train("ld_none", "--route turbo-direct --steps 4 --save-every 0 --batch 2") == 0);
    CHECK(train("ld_zero", "--route turbo-direct --steps 4 --save-every 0 --batch 2 --lora-dropout 0") == 0);
    CHECK(lora_equal("ld_none/lora.safetensors", "ld_zero/lora.safetensors") == 1);
    /* with dropout: a stop and --resume give the uninterrupted run's LoRA (the masks come from the per-step
     * keys, the option from train.json), and the LoRA is not the one without dropout */
    CHECK(train("ld_straight", "--route turbo-direct --steps 6 --save-every 0 --batch 2 --lora-dropout 0.3") == 0);
    CHECK(train("ld_halves", "--route turbo-direct --steps 3 --save-every 3 --batch 2 --lora-dropout 0.3") == 0);
    char cmd[2000], p[800];
    snprintf(cmd, sizeof cmd, "%s -q train --resume %s/ld_halves --steps 6 2>&1", zl_test_bin(), zl_test_dir());
    CHECK(zl_test_run(cmd, NULL) == 0);
    CHECK(lora_equal("ld_straight/lora.safetensors", "ld_halves/lora.safetensors") == 1);
    CHECK(train("ld_plain6", "--route turbo-direct --steps 6 --save-every 0 --batch 2") == 0);
    CHECK(lora_equal("ld_straight/lora.safetensors", "ld_plain6/lora.safetensors") == 0);
    snprintf(p, sizeof p, "%s/ld_halves/train.json", zl_test_dir());
    FILE *f = fopen(p, "r");
    CHECK(f);
    char buf[8192];
    size_t k = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[k] = 0;
    CHECK(strstr(buf, "\"lora_dropout\":\t0.3"));
    /* refusals: out of range, and with --full (nothing to drop out) */
    CHECK(train("ld_bad", "--route turbo-direct --steps 1 --lora-dropout 1") != 0);
    CHECK(train("ld_full", "--route custom --full --steps 1 --lora-dropout 0.1") != 0);
}

/* The sample the trainer draws at its last step with dropout on is, pixel for pixel, what `zlora generate`
 * draws with the saved LoRA (runtime branches, no dropout there): the samples never see the masks. */
TEST(train_lora_dropout_is_off_in_samples) {
    CHECK(train("ld_samples", "--route turbo-direct --steps 3 --save-every 0 --lora-dropout 0.5 --lr 2e-2 --sample-every 3 "
                              "--sample-size 16 --sample-steps 4 --sample-cfg 1 --sample-prompt 'zxq box'") == 0);
    char cmd[3000], a[800], b[800], c[800];
    snprintf(a, sizeof a, "%s/ld_samples/samples/step_000003_custom_p00.png", zl_test_dir());
    snprintf(b, sizeof b, "%s/ld_gen.png", zl_test_dir());
    snprintf(c, sizeof c, "%s/ld_gen_nolora.png", zl_test_dir());
    const char *gen = "%s -q generate --model %s %s -p 'zxq box' --steps 4 --cfg 1 --seed 42 -W 16 -H 16 --cache %s/train_cache -o %s 2>&1";
    char lora[900];
    snprintf(lora, sizeof lora, "--lora %s/ld_samples/lora.safetensors --lora-mode runtime", zl_test_dir());
    snprintf(cmd, sizeof cmd, gen, zl_test_bin(), zl_test_tiny_model(), lora, zl_test_dir(), b);
    CHECK(zl_test_run(cmd, NULL) == 0);
    snprintf(cmd, sizeof cmd, gen, zl_test_bin(), zl_test_tiny_model(), "", zl_test_dir(), c);
    CHECK(zl_test_run(cmd, NULL) == 0);
    zl_image x, y, z;
    CHECK(zl_image_read(a, NULL, &x) == 0);
    CHECK(zl_image_read(b, NULL, &y) == 0);
    CHECK(zl_image_read(c, NULL, &z) == 0);
    size_t n = (size_t)x.w * x.h * 3;
    CHECK(x.w == y.w && x.h == y.h && x.w == z.w && x.h == z.h);
    int same = !memcmp(x.px, y.px, sizeof(float) * n), lora_matters = memcmp(y.px, z.px, sizeof(float) * n) != 0;
    zl_image_free(&x);
    zl_image_free(&y);
    zl_image_free(&z);
    CHECK_MSG(lora_matters, "the trained LoRA does not change the image: the comparison would not see dropout");
    CHECK_MSG(same, "the trainer's sample differs from generate's image with the saved LoRA");
}
