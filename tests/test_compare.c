/* test_compare.c — `zlora compare` and its parts: labelled grids (Pango/cairo), the matrix of seeds ×
 * prompts × configurations on the tiny model folder (tests/tiny_model.c), cells that are exactly what
 * `zlora generate` makes, metrics (JSON and CSV agree), the report (every file it references exists, and
 * headless Chromium loads every image), and refusals. */
#include "test.h"
#include "base/base.h"
#include "eval/grid.h"
#include "io/image.h"

#include <cjson/cJSON.h>
#include <stdlib.h>
#include <string.h>

TEST(compare_grid_draws_labels_and_cells) {
    enum { R = 2, C = 3, CW = 24, CH = 16 };
    uint8_t cells[R * C][CW * CH * 3];
    const uint8_t *cp[R * C];
    for (int i = 0; i < R * C; i++) {
        for (int k = 0; k < CW * CH; k++) { cells[i][3 * k] = (uint8_t)(40 * i); cells[i][3 * k + 1] = 200; cells[i][3 * k + 2] = 7; }
        cp[i] = i == 4 ? NULL : cells[i];
    }
    const char *rows[R] = {"no LoRA\n8 steps · CFG 1", "LoRA 8 steps, a rather long label that has to wrap somewhere\nlora_peft:1"};
    const char *cols[C] = {"seed 1", "seed 2", "seed 42"};
    zl_grid g = {.title = "prompt 1: a red cube on a blue floor — 日本語 too", .rows = R, .cols = C, .row_labels = rows, .col_labels = cols,
                 .cells = cp, .cell_w = CW, .cell_h = CH};
    uint8_t *rgb;
    int w, h;
    CHECK(zl_grid_render(&g, &rgb, &w, &h) == 0);
    CHECK(w >= 480 && h > 2 * CH + 30);
    /* find the cells: pixels of exactly the cell colours, each in one block of CW x CH */
    int found[R * C] = {0};
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++) {
            const uint8_t *p = rgb + 3 * ((size_t)y * w + x);
            if (p[1] == 200 && p[2] == 7 && p[0] % 40 == 0 && p[0] / 40 < R * C) found[p[0] / 40]++;
        }
    for (int i = 0; i < R * C; i++) CHECK_MSG(found[i] == (i == 4 ? 0 : CW * CH), "cell %d: %d pixels", i, found[i]);
    /* text was drawn: dark pixels left of the cells and above them */
    int dark_left = 0, dark_top = 0;
    for (int y = 0; y < h; y++)
        for (int x = 0; x < w; x++) {
            const uint8_t *p = rgb + 3 * ((size_t)y * w + x);
            if (p[0] < 100 && p[1] < 100 && p[2] < 100) { if (x < 60 && y > 40) dark_left++; if (y < 20) dark_top++; }
        }
    CHECK_MSG(dark_left > 50 && dark_top > 50, "label pixels: %d left, %d top", dark_left, dark_top);
    free(rgb);
    const char *bad[1] = {"\xff\xfe"};
    zl_grid b = g;
    b.rows = 1;
    b.row_labels = bad;
    CHECK(zl_grid_render(&b, &rgb, &w, &h) != 0 && strstr(zl_last_error(), "UTF-8"));
    zl_grid_cleanup();
}

/* ---- inputs ---------------------------------------------------------------------------------------- */

#include "eval/compare.h"
#include "io/safetensors.h"
#include <unistd.h>

static char *path_in_tmp(const char *name) { return zl_xasprintf("%s/%s", zl_test_dir(), name); }

static int write_file(const char *name, const char *text) {
    char *p = path_in_tmp(name);
    FILE *f = fopen(p, "wb");
    free(p);
    if (!f) return -1;
    fputs(text, f);
    return fclose(f);
}

TEST(compare_inputs_prompts_seeds_thresholds) {
    char **ps;
    int n;
    CHECK(write_file("p1.txt", "\xef\xbb\xbf# a comment\r\n  a red fox  \r\n\n   # indented comment\nsks dog, photo\n\t\n") == 0);
    char *p = path_in_tmp("p1.txt");
    CHECK(zl_cmp_read_prompts(p, &ps, &n) == 0);
    free(p);
    CHECK(n == 2 && !strcmp(ps[0], "a red fox") && !strcmp(ps[1], "sks dog, photo"));
    for (int i = 0; i < n; i++) free(ps[i]);
    free(ps);
    CHECK(write_file("p2.txt", "# only comments\n\n") == 0);
    p = path_in_tmp("p2.txt");
    CHECK(zl_cmp_read_prompts(p, &ps, &n) != 0 && strstr(zl_last_error(), "no prompts"));
    free(p);
    CHECK(zl_cmp_read_prompts("/nonexistent/prompts.txt", &ps, &n) != 0 && strstr(zl_last_error(), "/nonexistent/prompts.txt"));
    CHECK(write_file("p3.txt", "fine\nbad \xc3\x28 byte\n") == 0);
    p = path_in_tmp("p3.txt");
    CHECK(zl_cmp_read_prompts(p, &ps, &n) != 0 && strstr(zl_last_error(), ":2:"));
    free(p);
    uint64_t *sd;
    CHECK(zl_cmp_parse_seeds("42, 7,10-12,18446744073709551615", &sd, &n) == 0);
    CHECK(n == 6 && sd[0] == 42 && sd[1] == 7 && sd[2] == 10 && sd[4] == 12 && sd[5] == UINT64_MAX);
    free(sd);
    const char *bad[] = {"", "1,,2", "x", "-1", "3-1", "1,2,1", "1.5", "18446744073709551616", "0-5000"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) CHECK_MSG(zl_cmp_parse_seeds(bad[i], &sd, &n) != 0, "'%s' accepted", bad[i]);
    zl_cmp_thresholds th;
    zl_cmp_default_thresholds(&th);
    CHECK(th.blurry == 0.7 && th.not_learning == 0.02 && th.bleeding == 0.5 && th.retention == 0.5);
    CHECK(zl_cmp_parse_thresholds("blurry_at_8=0.6,low_retention=0.25", &th) == 0 && th.blurry == 0.6 && th.retention == 0.25 && th.bleeding == 0.5);
    CHECK(zl_cmp_parse_thresholds("blurry=0.6", &th) != 0 && strstr(zl_last_error(), "blurry_at_8"));
    CHECK(zl_cmp_parse_thresholds("bleeding=x", &th) != 0);
}

/* ---- end to end on the tiny model ------------------------------------------------------------------ */

#define LORA_A "tests/data/zimage/tiny_a/lora/lora_peft.safetensors"
#define LORA_B "tests/data/zimage/tiny_a/lora/lora_kohya.safetensors"

static const char *prompts_file(void) {
    static char path[600];
    if (!path[0]) {
        if (write_file("prompts.txt", "# two prompts, one with the trigger\na red cube on a blue floor\n\nsks dog in a park\n")) return NULL;
        snprintf(path, sizeof path, "%s/prompts.txt", zl_test_dir());
    }
    return path;
}

/* Runs `zlora compare` on the tiny model at 24x16, 2 steps (slow 3, base 3); stdout+stderr into *out. */
static int compare(const char *outdir, const char *args, char **out) {
    char cmd[4096];
    snprintf(cmd, sizeof cmd, "%s compare --model %s --prompts %s -W 24 -H 16 --steps 2 --slow-steps 3 --base-steps 3 --no-cache %s -o %s/%s 2>&1",
             zl_test_bin(), zl_test_tiny_model(), prompts_file(), args, zl_test_dir(), outdir);
    return zl_test_run(cmd, out);
}

static uint8_t *pixels_of(const char *path, int *w, int *h) {
    zl_image img;
    if (zl_image_read(path, NULL, &img)) return NULL;
    uint8_t *rgb = zl_image_to_rgb8(&img);
    *w = img.w;
    *h = img.h;
    zl_image_free(&img);
    return rgb;
}

/* 1 when the two PNGs hold the same pixels */
static int same_pixels(const char *a, const char *b) {
    int wa, ha, wb, hb;
    uint8_t *pa = pixels_of(a, &wa, &ha), *pb = pixels_of(b, &wb, &hb);
    int same = pa && pb && wa == wb && ha == hb && memcmp(pa, pb, (size_t)wa * ha * 3) == 0;
    free(pa);
    free(pb);
    return same;
}

static int count_occurrences(const char *hay, const char *needle) {
    int n = 0;
    for (const char *p = hay; (p = strstr(p, needle)); p++) n++;
    return n;
}

static cJSON *load_json(const char *dir, const char *name) {
    char *p = zl_xasprintf("%s/%s/%s", zl_test_dir(), dir, name);
    cJSON *j = zl_test_read_json(p);
    free(p);
    return j;
}

/* Splits one CSV record (RFC 4180 quoting, no newlines inside fields) into at most max fields. */
static int csv_split(char *line, char **f, int max) {
    int n = 0;
    char *w = line, *p = line;
    while (n < max) {
        f[n++] = w;
        if (*p == '"') {
            p++;
            for (;;) {
                if (*p == '"' && p[1] == '"') { *w++ = '"'; p += 2; }
                else if (*p == '"') { p++; break; }
                else if (!*p) return -1;
                else *w++ = *p++;
            }
        } else {
            while (*p && *p != ',') *w++ = *p++;
        }
        if (*p == ',') { *w++ = 0; p++; w = p; continue; }
        *w = 0;
        return n;
    }
    return -1;
}

static double num_or_nan(const cJSON *v) { return cJSON_IsNumber(v) ? v->valuedouble : NAN; }
static double csv_num(const char *s) { return *s ? strtod(s, NULL) : NAN; }
static int same_num(double a, double b) { return (isnan(a) && isnan(b)) || a == b; }

/* metrics.csv holds the cells of metrics.json, field for field */
static int csv_agrees(const char *dir, const cJSON *j) {
    char *p = zl_xasprintf("%s/%s/metrics.csv", zl_test_dir(), dir);
    char *t = zl_test_slurp(p, NULL);
    free(p);
    if (!t) return 0;
    const cJSON *cells = cJSON_GetObjectItem(j, "cells");
    int ok = 1, row = -1;
    char *save = NULL;
    for (char *line = strtok_r(t, "\n", &save); line && ok; line = strtok_r(NULL, "\n", &save), row++) {
        char *f[16];
        int n = csv_split(line, f, 16);
        if (row < 0) { ok = n == 13 && !strcmp(f[0], "config_index") && !strcmp(f[12], "seconds"); continue; }
        const cJSON *c = cJSON_GetArrayItem(cells, row);
        if (n != 13 || !c) { ok = 0; break; }
        const cJSON *bf = cJSON_GetObjectItem(c, "baseline_file");
        int checks[13] = {
            atoi(f[0]) == cJSON_GetObjectItem(c, "config_index")->valueint,
            !strcmp(f[1], cJSON_GetObjectItem(c, "config")->valuestring),
            atoi(f[2]) == cJSON_GetObjectItem(c, "prompt_index")->valueint,
            !strcmp(f[3], cJSON_GetObjectItem(cJSON_GetArrayItem(cJSON_GetObjectItem(j, "prompts"), atoi(f[2]) - 1), "text")->valuestring),
            atoi(f[4]) == (cJSON_IsTrue(cJSON_GetObjectItem(c, "trigger_prompt")) ? 1 : 0),
            strtod(f[5], NULL) == cJSON_GetObjectItem(c, "seed")->valuedouble,
            !strcmp(f[6], cJSON_GetObjectItem(c, "file")->valuestring),
            same_num(csv_num(f[7]), num_or_nan(cJSON_GetObjectItem(c, "sharpness"))),
            same_num(csv_num(f[8]), num_or_nan(cJSON_GetObjectItem(c, "hf_ratio"))),
            cJSON_IsString(bf) ? !strcmp(f[9], bf->valuestring) : !*f[9],
            same_num(csv_num(f[10]), num_or_nan(cJSON_GetObjectItem(c, "difference"))),
            same_num(csv_num(f[11]), num_or_nan(cJSON_GetObjectItem(c, "ssim"))),
            same_num(csv_num(f[12]), num_or_nan(cJSON_GetObjectItem(c, "seconds")))};
        for (int k = 0; k < 13 && ok; k++)
            if (!checks[k]) { fprintf(stderr, "  metrics.csv row %d, column %d ('%s') disagrees with metrics.json\n", row + 1, k + 1, f[k]); ok = 0; }
    }
    if (ok && row != cJSON_GetArraySize(cells)) { fprintf(stderr, "  metrics.csv has %d rows, metrics.json %d cells\n", row, cJSON_GetArraySize(cells)); ok = 0; }
    free(t);
    return ok;
}

/* Every src="..." and href="..." of report.html names a file that exists; the number of <img> tags. */
static int report_files_exist(const char *dir, int *nimg) {
    char *p = zl_xasprintf("%s/%s/report.html", zl_test_dir(), dir);
    char *t = zl_test_slurp(p, NULL);
    free(p);
    if (!t) return 0;
    int ok = 1, refs = 0;
    *nimg = count_occurrences(t, "<img ");
    const char *attrs[2] = {" src=\"", " href=\""};
    for (int a = 0; a < 2; a++)
        for (const char *q = t; (q = strstr(q, attrs[a])); q++) {
            q += strlen(attrs[a]);
            const char *e = strchr(q, '"');
            if (!e) return free(t), 0;
            char *f = zl_xasprintf("%s/%s/%.*s", zl_test_dir(), dir, (int)(e - q), q);
            if (strstr(f, "://") || strstr(f, "..") || access(f, R_OK)) { fprintf(stderr, "  report.html refers to %s\n", f); ok = 0; }
            free(f);
            refs++;
        }
    free(t);
    return ok && refs > 0;
}

/* Loads report.html in headless Chromium with a script that lists the images that failed to load
 * (naturalWidth 0); 1: all loaded, 0: some did not, -1: no Chromium. */
static int chromium_loads_all_images(const char *dir, int nimg) {
    const char *browsers[] = {"chromium", "chromium-browser", "google-chrome"};
    const char *br = NULL;
    for (size_t i = 0; i < 3 && !br; i++) {
        char cmd[256];
        snprintf(cmd, sizeof cmd, "command -v %s >/dev/null 2>&1", browsers[i]);
        if (zl_test_run(cmd, NULL) == 0) br = browsers[i];
    }
    if (!br) return -1;
    char *p = zl_xasprintf("%s/%s/report.html", zl_test_dir(), dir);
    char *t = zl_test_slurp(p, NULL);
    free(p);
    char *end = t ? strstr(t, "</body>") : NULL;
    if (!end) { free(t); return 0; }
    *end = 0;
    char *page = zl_xasprintf("%s<script>window.addEventListener('load', function () {\n"
                              "  var bad = [];\n"
                              "  for (const i of document.images) if (!i.complete || i.naturalWidth === 0) bad.push(i.getAttribute('src'));\n"
                              "  document.body.setAttribute('data-images', String(document.images.length));\n"
                              "  document.body.setAttribute('data-broken', bad.length ? bad.join(' ') : 'none');\n"
                              "});</script></body></html>\n", t);
    free(t);
    char *check = zl_xasprintf("%s/%s/report_check.html", zl_test_dir(), dir);
    FILE *f = fopen(check, "wb");
    if (f) { fputs(page, f); fclose(f); }
    free(page);
    char cmd[2400], *out = NULL;
    snprintf(cmd, sizeof cmd, "timeout 120 %s --headless --disable-gpu --no-sandbox --user-data-dir=%s/chromium-profile "
                              "--allow-file-access-from-files --virtual-time-budget=10000 --dump-dom 'file://%s' 2>/dev/null",
             br, zl_test_dir(), check);
    int rc = zl_test_run(cmd, &out);
    char want[64];
    snprintf(want, sizeof want, "data-images=\"%d\"", nimg);
    int ok = rc == 0 && out && strstr(out, want) && strstr(out, "data-broken=\"none\"");
    if (!ok) fprintf(stderr, "  chromium (exit %d): %.300s\n", rc, out && strstr(out, "<body") ? strstr(out, "<body") : "no page");
    free(out);
    free(check);
    return ok;
}

TEST(compare_turbo_check_end_to_end) {
    CHECK(zl_test_tiny_model() && prompts_file());
    char *out = NULL, args[1024];
    snprintf(args, sizeof args, "--lora " LORA_A ":1.5 --patch " LORA_B " --seeds 5,9 --trigger sks");
    double t0 = zl_now();
    int rc = compare("tc", args, &out);
    double secs = zl_now() - t0;
    CHECK_MSG(rc == 0, "%s", out ? out : "");
    fprintf(stderr, "(compare: 16 cells in %.1f s) ", secs);
    /* one encoder load and one DiT load for all four configurations; the table at the end */
    CHECK(out && count_occurrences(out, "text encoder:") == 1 && count_occurrences(out, "transformer:") == 1);
    CHECK(strstr(out, "LoRA + patch, 2 steps") && strstr(out, "report.html"));
    free(out);
    /* the matrix: 4 configurations x 2 prompts x 2 seeds */
    cJSON *j = load_json("tc", "metrics.json");
    CHECK(j);
    const cJSON *cfgs = cJSON_GetObjectItem(j, "configs"), *cells = cJSON_GetObjectItem(j, "cells");
    CHECK(cJSON_GetArraySize(cfgs) == 4 && cJSON_GetArraySize(cells) == 16 && cJSON_GetArraySize(cJSON_GetObjectItem(j, "prompts")) == 2);
    CHECK(!strcmp(cJSON_GetObjectItem(cJSON_GetArrayItem(cfgs, 2), "name")->valuestring, "LoRA, 3 steps CFG 2"));
    CHECK(!strcmp(cJSON_GetObjectItem(cJSON_GetArrayItem(cfgs, 1), "sharpness_vs")->valuestring, "LoRA, 3 steps CFG 2"));
    CHECK(!strcmp(cJSON_GetObjectItem(cJSON_GetArrayItem(cfgs, 1), "baseline")->valuestring, "no LoRA"));
    CHECK(cJSON_IsTrue(cJSON_GetObjectItem(cJSON_GetArrayItem(cJSON_GetObjectItem(j, "prompts"), 1), "trigger_prompt")));
    CHECK(!strcmp(cJSON_GetObjectItem(j, "trigger")->valuestring, "sks"));
    const cJSON *sum = cJSON_GetObjectItem(cJSON_GetArrayItem(cfgs, 1), "summary");
    CHECK(cJSON_IsNumber(cJSON_GetObjectItem(sum, "sharp_ratio")) && cJSON_GetObjectItem(sum, "effect_trigger")->valuedouble > 0);
    CHECK(csv_agrees("tc", j));
    /* summary.json: each configuration by name, the same numbers as metrics.json's summaries */
    cJSON *sj = load_json("tc", "summary.json");
    CHECK(sj && cJSON_GetArraySize(sj) == 4);
    const cJSON *s1 = cJSON_GetObjectItemCaseSensitive(sj, cJSON_GetObjectItem(cJSON_GetArrayItem(cfgs, 1), "name")->valuestring);
    int same = s1 && cJSON_GetObjectItem(s1, "sharp_ratio")->valuedouble == cJSON_GetObjectItem(sum, "sharp_ratio")->valuedouble &&
               cJSON_GetObjectItem(s1, "effect")->valuedouble == cJSON_GetObjectItem(sum, "effect_trigger")->valuedouble &&
               !strcmp(cJSON_GetObjectItem(s1, "sharpness_vs")->valuestring, "LoRA, 3 steps CFG 2");
    cJSON_Delete(sj);
    CHECK(same);
    /* every cell exists; no-LoRA cells have no difference, LoRA cells at the fast settings do */
    int ncell = 0;
    const cJSON *c;
    cJSON_ArrayForEach(c, cells) {
        char *f = zl_xasprintf("%s/tc/%s", zl_test_dir(), cJSON_GetObjectItem(c, "file")->valuestring);
        CHECK_MSG(access(f, R_OK) == 0, "%s", f);
        free(f);
        int ci = cJSON_GetObjectItem(c, "config_index")->valueint;
        CHECK((ci == 2 || ci == 4) == cJSON_IsNumber(cJSON_GetObjectItem(c, "difference")));
        ncell++;
    }
    CHECK(ncell == 16);
    /* a no-LoRA cell is exactly what `zlora generate` makes with the same settings; a LoRA cell what it makes with
     * the same runtime stack, and what `generate --from` the cell remakes */
    char cmd[4096];
    snprintf(cmd, sizeof cmd, "%s -q generate --model %s -p 'sks dog in a park' -W 24 -H 16 --steps 2 --seed 9 --no-cache -o %s/tc_gen.png 2>&1",
             zl_test_bin(), zl_test_tiny_model(), zl_test_dir());
    CHECK(zl_test_run(cmd, NULL) == 0);
    char *cell = zl_xasprintf("%s/tc/cells/c01-no-lora_p02_s9.png", zl_test_dir()), *gen = zl_xasprintf("%s/tc_gen.png", zl_test_dir());
    CHECK(same_pixels(cell, gen));
    free(cell);
    free(gen);
    snprintf(cmd, sizeof cmd, "%s -q generate --model %s -p 'a red cube on a blue floor' -W 24 -H 16 --steps 2 --seed 5 --no-cache "
                              "--lora " LORA_A ":1.5 --lora " LORA_B " --lora-mode runtime -o %s/tc_gen_lora.png 2>&1",
             zl_test_bin(), zl_test_tiny_model(), zl_test_dir());
    CHECK(zl_test_run(cmd, NULL) == 0);
    cell = zl_xasprintf("%s/tc/cells/c04-lora-patch-2-steps_p01_s5.png", zl_test_dir());
    gen = zl_xasprintf("%s/tc_gen_lora.png", zl_test_dir());
    CHECK(same_pixels(cell, gen));
    snprintf(cmd, sizeof cmd, "%s -q generate --from %s --no-cache -o %s/tc_from.png 2>&1", zl_test_bin(), cell, zl_test_dir());
    CHECK(zl_test_run(cmd, NULL) == 0);
    free(gen);
    gen = zl_xasprintf("%s/tc_from.png", zl_test_dir());
    CHECK(same_pixels(cell, gen));
    free(cell);
    free(gen);
    /* the numbers are what `zlora score` says about the files */
    const cJSON *c6 = cJSON_GetArrayItem(cells, 6); /* config 2, prompt 2, seed 5 */
    char cwd[2048];
    CHECK(getcwd(cwd, sizeof cwd));
    snprintf(cmd, sizeof cmd, "cd %s/tc && %s%s%s score %s --reference %s --json", zl_test_dir(), zl_test_bin()[0] == '/' ? "" : cwd,
             zl_test_bin()[0] == '/' ? "" : "/", zl_test_bin(), cJSON_GetObjectItem(c6, "file")->valuestring,
             cJSON_GetObjectItem(c6, "baseline_file")->valuestring);
    out = NULL;
    CHECK(zl_test_run(cmd, &out) == 0 && out);
    cJSON *sc = cJSON_Parse(out);
    free(out);
    CHECK(sc && cJSON_GetArraySize(sc) == 1);
    const cJSON *s0 = cJSON_GetArrayItem(sc, 0);
    CHECK_NEAR(cJSON_GetObjectItem(s0, "sharpness")->valuedouble, cJSON_GetObjectItem(c6, "sharpness")->valuedouble, 1e-12);
    CHECK_NEAR(cJSON_GetObjectItem(s0, "difference")->valuedouble, cJSON_GetObjectItem(c6, "difference")->valuedouble, 1e-12);
    cJSON_Delete(sc);
    cJSON_Delete(j);
    /* the grids: one per prompt, labelled, with a parameters chunk */
    for (int p = 1; p <= 2; p++) {
        char *g = zl_xasprintf("%s/tc/grid_p%02d.png", zl_test_dir(), p);
        zl_image img;
        CHECK(zl_image_read(g, NULL, &img) == 0);
        free(g);
        CHECK(img.w >= 480 && img.h > 4 * 16);
        const char *par = zl_image_text(&img, "parameters");
        CHECK(par && strstr(par, "rows = configurations (no LoRA | LoRA, 2 steps | LoRA, 3 steps CFG 2 | LoRA + patch, 2 steps)") &&
              strstr(par, "columns = seeds (5, 9)"));
        zl_image_free(&img);
    }
    /* the report refers only to files that exist, and a browser loads every image */
    int nimg = 0;
    CHECK(report_files_exist("tc", &nimg));
    CHECK(nimg == 2 + 16);
    int br = chromium_loads_all_images("tc", nimg);
    if (br < 0) fprintf(stderr, "\n  skipped the browser check: chromium is not installed (apt-get install chromium) ");
    else CHECK(br == 1);
}

static const cJSON *config_named(const cJSON *j, const char *name) {
    const cJSON *c;
    cJSON_ArrayForEach(c, cJSON_GetObjectItem(j, "configs")) if (!strcmp(cJSON_GetObjectItem(c, "name")->valuestring, name)) return c;
    return NULL;
}

static int has_flag(const cJSON *cfg, const char *flag) {
    const cJSON *f;
    cJSON_ArrayForEach(f, cJSON_GetObjectItem(cJSON_GetObjectItem(cfg, "summary"), "flags")) if (!strcmp(f->valuestring, flag)) return 1;
    return 0;
}

TEST(compare_strength_zero_changes_nothing) {
    CHECK(zl_test_tiny_model() && prompts_file());
    char *out = NULL;
    CHECK_MSG(compare("st", "--experiment strength --strengths 0,1 --lora " LORA_A " --seeds 3", &out) == 0, "%s", out ? out : "");
    free(out);
    cJSON *j = load_json("st", "metrics.json");
    CHECK(j && cJSON_GetArraySize(cJSON_GetObjectItem(j, "cells")) == 3 * 2 * 1);
    const cJSON *c;
    int zero = 0, one = 0;
    cJSON_ArrayForEach(c, cJSON_GetObjectItem(j, "cells")) {
        const char *cfg = cJSON_GetObjectItem(c, "config")->valuestring;
        if (!strcmp(cfg, "strength 0")) {
            CHECK(cJSON_GetObjectItem(c, "difference")->valuedouble == 0 && cJSON_GetObjectItem(c, "ssim")->valuedouble == 1);
            zero++;
        } else if (!strcmp(cfg, "strength 1")) {
            CHECK(cJSON_GetObjectItem(c, "difference")->valuedouble > 0);
            one++;
        }
    }
    CHECK(zero == 2 && one == 2);
    /* strength 0 does nothing, which is what not_learning says; without a trigger word bleeding is not judged */
    CHECK(has_flag(config_named(j, "strength 0"), "not_learning") && !has_flag(config_named(j, "strength 1"), "not_learning"));
    CHECK(cJSON_IsNull(cJSON_GetObjectItem(j, "trigger")));
    CHECK(cJSON_IsNull(cJSON_GetObjectItem(cJSON_GetObjectItem(config_named(j, "strength 1"), "summary"), "effect_other")));
    CHECK(csv_agrees("st", j));
    cJSON_Delete(j);
}

/* a copy of a LoRA file with a trigger phrase in its metadata */
static char *lora_with_trigger(const char *src, const char *trigger) {
    zl_st *st;
    if (zl_st_open(src, &st)) return NULL;
    zl_st_writer *w = zl_stw_new();
    for (int i = 0; i < zl_st_count(st); i++) {
        const zl_tensor_info *t = zl_st_tensor(st, i);
        zl_stw_add(w, t->name, t->dtype, t->ndim, t->shape, t->data);
    }
    zl_stw_meta(w, "modelspec.trigger_phrase", trigger);
    char *path = path_in_tmp("trigger_lora.safetensors");
    int rc = zl_stw_write(w, path);
    zl_stw_free(w);
    zl_st_close(st);
    if (rc) { free(path); return NULL; }
    return path;
}

TEST(compare_base_vs_turbo_and_routes) {
    CHECK(zl_test_tiny_model() && prompts_file());
    /* a second model folder (same parts, Base's shift 6): one encoder load for both, one DiT load each */
    char *base = path_in_tmp("tiny_base");
    CHECK(zl_test_make_tiny_model(base, 6.0) == 0);
    char *tl = lora_with_trigger(LORA_A, "sks");
    CHECK(tl);
    char args[2048], *out = NULL;
    snprintf(args, sizeof args, "--experiment base-vs-turbo --base-model %s --lora %s --patch " LORA_B " --seeds 4", base, tl);
    CHECK_MSG(compare("bt", args, &out) == 0, "%s", out ? out : "");
    CHECK(count_occurrences(out, "text encoder:") == 1 && count_occurrences(out, "transformer:") == 2);
    CHECK(strstr(out, "trigger: \"sks\" (from"));
    free(out);
    cJSON *j = load_json("bt", "metrics.json");
    CHECK(j && cJSON_GetArraySize(cJSON_GetObjectItem(j, "configs")) == 5 && cJSON_GetArraySize(cJSON_GetObjectItem(j, "models")) == 2);
    CHECK(!strcmp(cJSON_GetObjectItem(j, "trigger")->valuestring, "sks"));
    const cJSON *bl = config_named(j, "Base + LoRA (3 steps CFG 4)"), *tl8 = config_named(j, "Turbo + LoRA (2 steps)");
    CHECK(bl && tl8);
    CHECK(cJSON_GetObjectItem(bl, "shift")->valuedouble == 6 && cJSON_GetObjectItem(tl8, "shift")->valuedouble == 3);
    CHECK(!strcmp(cJSON_GetObjectItem(bl, "baseline")->valuestring, "Base, no LoRA (3 steps CFG 4)"));
    CHECK(!strcmp(cJSON_GetObjectItem(tl8, "baseline")->valuestring, "Turbo, no LoRA (2 steps)"));
    const cJSON *sb = cJSON_GetObjectItem(bl, "summary"), *st = cJSON_GetObjectItem(tl8, "summary");
    /* retention = trigger-prompt effect on Turbo / on Base; the one trigger prompt is prompt 2 */
    CHECK(cJSON_IsNumber(cJSON_GetObjectItem(st, "retention")));
    CHECK_NEAR(cJSON_GetObjectItem(st, "retention")->valuedouble,
               cJSON_GetObjectItem(st, "effect_trigger")->valuedouble / cJSON_GetObjectItem(sb, "effect_trigger")->valuedouble, 1e-12);
    CHECK(cJSON_IsNumber(cJSON_GetObjectItem(st, "effect_other")));
    CHECK(csv_agrees("bt", j));
    cJSON_Delete(j);
    int nimg;
    CHECK(report_files_exist("bt", &nimg) && nimg == 2 + 5 * 2);
    /* routes: each LoRA alone, plus no LoRA; [trigger] in a prompt becomes the trigger (here a phrase of two parts) */
    CHECK(write_file("tagged.txt", "[trigger] on a beach\na photo of a cat\na zzq, standing\n") == 0);
    snprintf(args, sizeof args, "--experiment routes --lora " LORA_A " --lora " LORA_B ":0.5 --seeds 1 --grid-cell 0 "
                                "--prompts %s/tagged.txt --trigger 'sks, zzq'", zl_test_dir());
    out = NULL;
    CHECK_MSG(compare("routes", args, &out) == 0, "%s", out ? out : "");
    free(out);
    j = load_json("routes", "metrics.json");
    CHECK(j && cJSON_GetArraySize(cJSON_GetObjectItem(j, "configs")) == 3);
    CHECK(config_named(j, "no LoRA") && config_named(j, "lora_peft") && config_named(j, "lora_kohya:0.5"));
    CHECK(!strcmp(cJSON_GetObjectItem(config_named(j, "lora_kohya:0.5"), "baseline")->valuestring, "no LoRA"));
    const cJSON *ps = cJSON_GetObjectItem(j, "prompts");
    CHECK(cJSON_GetArraySize(ps) == 3 && !strcmp(cJSON_GetObjectItem(cJSON_GetArrayItem(ps, 0), "text")->valuestring, "sks, zzq on a beach"));
    CHECK(cJSON_IsTrue(cJSON_GetObjectItem(cJSON_GetArrayItem(ps, 0), "trigger_prompt")) &&
          cJSON_IsFalse(cJSON_GetObjectItem(cJSON_GetArrayItem(ps, 1), "trigger_prompt")) &&
          cJSON_IsTrue(cJSON_GetObjectItem(cJSON_GetArrayItem(ps, 2), "trigger_prompt")));
    cJSON_Delete(j);
    free(base);
    free(tl);
}

TEST(compare_config_file) {
    CHECK(zl_test_tiny_model() && prompts_file());
    char *base = path_in_tmp("tiny_base6");
    CHECK(zl_test_make_tiny_model(base, 6.0) == 0);
    CHECK(write_file("cfg.json",
                     "[{\"name\": \"plain\"},\n"
                     " {\"name\": \"mine\", \"loras\": [\"@lora\"]},\n"
                     " {\"name\": \"mine, half\", \"loras\": [\"@lora:0.5\", {\"path\": \"" LORA_B "\", \"strength\": 0.25}], \"baseline\": \"plain\"},\n"
                     " {\"name\": \"mine slow\", \"loras\": [\"" LORA_A ":1.5\"], \"steps\": 3, \"cfg\": 2, \"negative\": \"blurry\", \"sampler\": \"res_multistep\", \"baseline\": null},\n"
                     " {\"name\": \"on base\", \"model\": \"base\", \"preset\": \"base\", \"loras\": [\"@lora\"]}]\n") == 0);
    char args[2048], *out = NULL;
    snprintf(args, sizeof args, "--config %s/cfg.json --base-model %s --lora " LORA_A ":1.5 --seeds 2", zl_test_dir(), base);
    CHECK_MSG(compare("cf", args, &out) == 0, "%s", out ? out : "");
    free(out);
    cJSON *j = load_json("cf", "metrics.json");
    CHECK(j && cJSON_GetArraySize(cJSON_GetObjectItem(j, "configs")) == 5 && cJSON_GetArraySize(cJSON_GetObjectItem(j, "cells")) == 10);
    CHECK(!strcmp(cJSON_GetObjectItem(j, "experiment")->valuestring, "cfg.json"));
    const cJSON *half = config_named(j, "mine, half"), *slow = config_named(j, "mine slow"), *ob = config_named(j, "on base");
    CHECK(half && slow && ob);
    const cJSON *ls = cJSON_GetObjectItem(half, "loras");
    CHECK(cJSON_GetArraySize(ls) == 2 && cJSON_GetObjectItem(cJSON_GetArrayItem(ls, 0), "strength")->valuedouble == 0.75 &&
          cJSON_GetObjectItem(cJSON_GetArrayItem(ls, 1), "strength")->valuedouble == 0.25);
    CHECK(cJSON_GetObjectItem(slow, "steps")->valueint == 3 && cJSON_GetObjectItem(slow, "cfg")->valuedouble == 2 &&
          !strcmp(cJSON_GetObjectItem(slow, "negative")->valuestring, "blurry") && cJSON_IsNull(cJSON_GetObjectItem(slow, "baseline")));
    CHECK(!strcmp(cJSON_GetObjectItem(slow, "sampler")->valuestring, "res_multistep"));
    /* the Base configuration: its own model, Base preset, and no no-LoRA configuration on that model to compare with */
    CHECK(cJSON_GetObjectItem(ob, "steps")->valueint == 3 && cJSON_GetObjectItem(ob, "cfg")->valuedouble == 4 &&
          cJSON_GetObjectItem(ob, "shift")->valuedouble == 6 && cJSON_IsNull(cJSON_GetObjectItem(ob, "baseline")));
    CHECK(!strcmp(cJSON_GetObjectItem(config_named(j, "mine"), "baseline")->valuestring, "plain"));
    cJSON_Delete(j);
    /* mistakes in the file are named */
    const char *bad[][2] = {{"[{\"name\": \"a\", \"stpes\": 3}]", "stpes"},
                            {"[{\"name\": \"a\"}, {\"name\": \"a\"}]", "twice"},
                            {"[{\"name\": \"a\", \"baseline\": \"nope\"}]", "nope"},
                            {"[{\"name\": \"a\", \"loras\": [\"@patch\"]}]", "--patch"},
                            {"{\"name\": \"a\"}", "JSON list"},
                            {"[{\"name\": \"a\", \"model\": \"base\"}]", "--base-model"},
                            {"[{\"name\": \"a\"", "not valid JSON"}};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        CHECK(write_file("bad.json", bad[i][0]) == 0);
        snprintf(args, sizeof args, "--config %s/bad.json --seeds 1", zl_test_dir());
        out = NULL;
        CHECK(compare("bad", args, &out) != 0);
        CHECK_MSG(out && strstr(out, bad[i][1]), "%s: %s", bad[i][0], out ? out : "");
        free(out);
    }
    snprintf(args, sizeof args, "--config %s/cfg.json --experiment routes --seeds 1", zl_test_dir());
    out = NULL;
    CHECK(compare("bad", args, &out) != 0 && out && strstr(out, "cannot be combined"));
    free(out);
    free(base);
}

TEST(compare_refusals) {
    CHECK(zl_test_tiny_model() && prompts_file());
    char cmd[4096], *out = NULL;
    /* missing prompts file; a file with no prompts */
    snprintf(cmd, sizeof cmd, "%s compare --model %s --lora " LORA_A " --prompts %s/none.txt --seeds 1 -o %s/r 2>&1", zl_test_bin(),
             zl_test_tiny_model(), zl_test_dir(), zl_test_dir());
    CHECK(zl_test_run(cmd, &out) == 1 && out && strstr(out, "error:") && strstr(out, "none.txt"));
    free(out);
    CHECK(write_file("empty.txt", "# nothing\n\n") == 0);
    snprintf(cmd, sizeof cmd, "%s compare --model %s --lora " LORA_A " --prompts %s/empty.txt --seeds 1 -o %s/r 2>&1", zl_test_bin(),
             zl_test_tiny_model(), zl_test_dir(), zl_test_dir());
    out = NULL;
    CHECK(zl_test_run(cmd, &out) == 1 && out && strstr(out, "no prompts"));
    free(out);
    struct { const char *args, *want; } cases[] = {
        {"--lora " LORA_A " --seeds 1,x", "--seeds"},
        {"--lora " LORA_A " --seeds 1,1", "twice"},
        {"--lora " LORA_A " --seeds ''", "--seeds"},
        {"--experiment base-vs-turbo --lora " LORA_A " --seeds 1", "--base-model"},
        {"--experiment nope --lora " LORA_A " --seeds 1", "unknown"},
        {"--seeds 1", "needs a LoRA"},
        {"--lora " LORA_A " --seeds 1 --thresholds bleed=1", "bleeding"},
        {"--lora " LORA_A " --seeds 1 --strengths 0,1", "--experiment strength"},
        {"--lora /nonexistent.safetensors --seeds 1", "nonexistent"},
        {"--lora " LORA_A " --seeds 1 -W 30", "multiples of 4"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        out = NULL;
        CHECK(compare("r", cases[i].args, &out) != 0);
        CHECK_MSG(out && strstr(out, cases[i].want), "%s: %s", cases[i].args, out ? out : "");
        free(out);
    }
    /* a LoRA for another model, refused before anything is generated */
    snprintf(cmd, sizeof cmd, "mkdir -p %s/sl && %s -q debug sample-loras %s/sl", zl_test_dir(), zl_test_bin(), zl_test_dir());
    CHECK(zl_test_run(cmd, NULL) == 0);
    char args[1024];
    snprintf(args, sizeof args, "--lora %s/sl/flux_lora.safetensors --seeds 1", zl_test_dir());
    out = NULL;
    CHECK(compare("foreign", args, &out) != 0);
    CHECK_MSG(out && strstr(out, "flux1") && !strstr(out, "text encoder:"), "%s", out ? out : "");
    free(out);
    char *cells = zl_xasprintf("%s/foreign/cells", zl_test_dir());
    CHECK(access(cells, F_OK) != 0);
    free(cells);
    /* --help names the experiments; zlora help lists the command */
    snprintf(cmd, sizeof cmd, "%s compare --help", zl_test_bin());
    out = NULL;
    CHECK(zl_test_run(cmd, &out) == 0 && out && strstr(out, "base-vs-turbo") && strstr(out, "--thresholds"));
    free(out);
    snprintf(cmd, sizeof cmd, "%s help", zl_test_bin());
    out = NULL;
    CHECK(zl_test_run(cmd, &out) == 0 && out && strstr(out, "compare"));
    free(out);
}
