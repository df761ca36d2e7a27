/* test_nano_e2e.c — the whole workflow on the committed nano family (models/nano: nano-base, nano-turbo,
 * the training adapter, the distill patch), through the CLI as a person runs it:
 *   generate   the same seed gives the same bytes; nano-turbo at 8 steps without CFG is sharper than
 *              nano-base at the same settings (what the distillation bought)
 *   train      short LoRA runs on the zxq character set by the adapter route and directly: their losses fall;
 *              the adapter-route LoRA changes the trigger prompts more than the others; the distill patch
 *              sharpens the direct LoRA at 8 steps (compare's summary.json) */
#include "test.h"
#include "base/base.h"

#include <cjson/cJSON.h>
#include <stdlib.h>
#include <string.h>

#define NANO "models/nano"

static double num(const cJSON *sum, const char *cfg, const char *key) {
    const cJSON *c = cJSON_GetObjectItemCaseSensitive(sum, cfg);
    const cJSON *v = c ? cJSON_GetObjectItemCaseSensitive(c, key) : NULL;
    return cJSON_IsNumber(v) ? v->valuedouble : NAN;
}

static int write_file(const char *path, const char *text) {
    FILE *f = fopen(path, "w");
    if (!f) return -1;
    fputs(text, f);
    return fclose(f);
}

static int same_bytes(const char *a, const char *b) {
    char cmd[2000];
    snprintf(cmd, sizeof cmd, "cmp -s %s %s", a, b);
    return zl_test_run(cmd, NULL) == 0;
}

/* Runs a `zlora compare` command line; its summary.json (from the output folder out), or NULL when the
 * command failed (its output printed) or wrote none. */
static cJSON *run_compare(const char *cmd, const char *out) {
    char *o = NULL;
    if (zl_test_run(cmd, &o) != 0) {
        fprintf(stderr, "%s", o ? o : "");
        free(o);
        return NULL;
    }
    free(o);
    char p[700];
    snprintf(p, sizeof p, "%s/summary.json", out);
    return zl_test_read_json(p);
}

TEST(nano_generate_turbo_is_deterministic_and_sharper_than_base_at_8_steps) {
    const char *d = zl_test_dir();
    char cmd[4000], a[600], b[600];
    snprintf(a, sizeof a, "%s/nano_t1.png", d);
    snprintf(b, sizeof b, "%s/nano_t2.png", d);
    for (int i = 0; i < 2; i++) {
        snprintf(cmd, sizeof cmd, "%s -q generate --model %s/turbo -p 'a large red circle in the centre on a blue background' "
                 "-W 64 -H 64 --seed 5 --no-cache -o %s 2>&1", zl_test_bin(), NANO, i ? b : a);
        CHECK(zl_test_run(cmd, NULL) == 0);
    }
    CHECK(same_bytes(a, b));
    /* nano-turbo and nano-base at Turbo settings on the same noise: the distilled model is the sharper */
    char prompts[600], cfg[600], out[600];
    snprintf(prompts, sizeof prompts, "%s/nano_prompts.txt", d);
    snprintf(cfg, sizeof cfg, "%s/nano_turbo_base.json", d);
    snprintf(out, sizeof out, "%s/nano_cmp_tb", d);
    CHECK(write_file(prompts, "a large red circle in the centre on a blue background\n"
                              "a photo of a small yellow star at the top left and a green square at the bottom right on a black background\n"
                              "an orange cross at the right on a black to gray gradient\n") == 0);
    CHECK(write_file(cfg, "[{\"name\": \"turbo\"}, {\"name\": \"base\", \"model\": \"base\"},"
                          " {\"name\": \"base 30 cfg 4\", \"model\": \"base\", \"preset\": \"base\"}]\n") == 0);
    snprintf(cmd, sizeof cmd, "%s -q compare --model %s/turbo --base-model %s/base --config %s --prompts %s --seeds 1-3 "
             "-W 64 -H 64 --grid-cell 0 --no-cache -o %s 2>&1", zl_test_bin(), NANO, NANO, cfg, prompts, out);
    cJSON *s = run_compare(cmd, out);
    CHECK_MSG(s, "compare failed or wrote no %s/summary.json", out);
    double st = num(s, "turbo", "sharpness"), sb = num(s, "base", "sharpness"), sb30 = num(s, "base 30 cfg 4", "sharpness");
    cJSON_Delete(s);
    fprintf(stderr, "  sharpness at 8 steps: turbo %.5f, base %.5f; base at 30 steps CFG 4: %.5f\n", st, sb, sb30);
    CHECK_MSG(st > 1.5 * sb, "nano-turbo %g vs nano-base %g at 8 steps", st, sb);
}

static int train_zxq(const char *route, const char *extra, const char *name) {
    char cmd[4000];
    snprintf(cmd, sizeof cmd, "%s -q train --model %s/turbo --data %s/data_zxq --route %s %s --trigger zxq --resolution 64 "
             "--rank 8 --lr 1e-3 --schedule cosine --warmup 20 --batch 4 --steps 300 --sigma logit-normal --seed 7 --save-every 0 "
             "--sample-every 0 --cache %s/nano_cache --name zxq --out %s/%s 2>&1", zl_test_bin(), NANO, NANO, route, extra,
             zl_test_dir(), zl_test_dir(), name);
    char *o = NULL;
    int rc = zl_test_run(cmd, &o);
    if (rc) fprintf(stderr, "%s", o ? o : "");
    free(o);
    return rc;
}

/* the mean loss of the first and the last 60 steps of a run's loss.csv */
static int loss_ends(const char *name, double *first, double *last) {
    char p[700];
    snprintf(p, sizeof p, "%s/%s/loss.csv", zl_test_dir(), name);
    FILE *f = fopen(p, "r");
    if (!f) return -1;
    char line[256];
    int n = 0;
    *first = *last = 0;
    while (fgets(line, sizeof line, f)) {
        int st;
        float l;
        if (sscanf(line, "%d,%f", &st, &l) != 2) continue;
        if (st <= 60) *first += l / 60;
        if (st > 240) *last += l / 60;
        n++;
    }
    fclose(f);
    return n == 300 ? 0 : -1;
}

/* The seed's experiment in small (make demo runs it in full): a character LoRA trained on nano-turbo with the
 * training adapter and one trained directly, then compared at Turbo settings. The adapter-route LoRA learns the
 * trigger and changes the trigger prompts more than the others; the DistillPatch gives the direct LoRA back
 * its 8-step sharpness. Measured when written: effect 0.043 on trigger prompts vs 0.027 on others; sharpness
 * 0.00116 direct vs 0.00143 direct + patch. */
TEST(nano_lora_routes_trigger_and_patch) {
    const char *d = zl_test_dir();
    CHECK(train_zxq("turbo-adapter", "--adapter " NANO "/adapter.safetensors", "nano_adapter") == 0);
    CHECK(train_zxq("turbo-direct", "", "nano_direct") == 0);
    double first, last;
    CHECK(loss_ends("nano_adapter", &first, &last) == 0);
    CHECK_MSG(last < 0.9 * first, "adapter route: loss did not fall: %g -> %g", first, last);
    CHECK(loss_ends("nano_direct", &first, &last) == 0);
    CHECK_MSG(last < 0.9 * first, "direct route: loss did not fall: %g -> %g", first, last);
    char prompts[600], cfg[600], out[600], cmd[4000];
    snprintf(prompts, sizeof prompts, "%s/nano_prompts_zxq.txt", d);
    snprintf(cfg, sizeof cfg, "%s/nano_routes.json", d);
    snprintf(out, sizeof out, "%s/nano_cmp_routes", d);
    CHECK(write_file(prompts, "a photo of [trigger] in the centre on a blue background\n"
                              "a photo of [trigger] at the top right on a yellow background\n"
                              "a large red circle in the centre on a white background\n"
                              "a photo of a small green star at the bottom left on a purple background\n") == 0);
    char json[3000];
    snprintf(json, sizeof json,
             "[{\"name\": \"no LoRA\"}, {\"name\": \"adapter\", \"loras\": [\"%s/nano_adapter/zxq.safetensors\"]},"
             " {\"name\": \"direct\", \"loras\": [\"%s/nano_direct/zxq.safetensors\"]},"
             " {\"name\": \"direct+patch\", \"loras\": [\"%s/nano_direct/zxq.safetensors\", \"" NANO "/patch.safetensors\"]}]\n", d, d, d);
    CHECK(write_file(cfg, json) == 0);
    snprintf(cmd, sizeof cmd, "%s -q compare --model %s/turbo --config %s --prompts %s --seeds 1-4 --trigger zxq -W 64 -H 64 "
             "--grid-cell 0 --no-cache -o %s 2>&1", zl_test_bin(), NANO, cfg, prompts, out);
    cJSON *s = run_compare(cmd, out);
    CHECK_MSG(s, "compare failed or wrote no %s/summary.json", out);
    double et = num(s, "adapter", "effect"), eo = num(s, "adapter", "effect_other");
    double sd = num(s, "direct", "sharpness"), sp = num(s, "direct+patch", "sharpness");
    cJSON_Delete(s);
    fprintf(stderr, "  adapter route: effect %.4f on trigger prompts, %.4f on others; sharpness direct %.5f, + patch %.5f\n", et, eo, sd, sp);
    CHECK_MSG(et > 0.02, "the LoRA barely changes the trigger prompts: %g", et);
    CHECK_MSG(et > 1.2 * eo, "trigger prompts change %g, other prompts %g", et, eo);
    CHECK_MSG(sp > 1.1 * sd, "the patch does not sharpen the direct LoRA at 8 steps: %g vs %g", sp, sd);
    char rep[700];
    snprintf(rep, sizeof rep, "%s/report.html", out);
    CHECK(zl_file_exists(rep));
}
