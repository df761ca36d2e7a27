/* cmd_score.c — `zlora score IMAGE... [--reference IMG|DIR] [--json]`: the sharpness of each image and,
 * against a reference of the same size, how far it is from it (src/eval/score.h has the definitions).
 * Every image is scored before anything is printed: a bad file or a size mismatch gives one error line
 * and exit 1, with no partial table. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cjson/cJSON.h>

#include "base/base.h"
#include "cli/cli.h"
#include "eval/score.h"
#include "io/image.h"

static void usage(FILE *f) {
    fprintf(f,
            "usage: zlora score [options] IMAGE...\n\n"
            "Scores images (PNG, JPEG or WebP) for sharpness and, against a reference image of the same size,\n"
            "for difference. Made for checking LoRA outputs: blur from a LoRA or from too few steps shows as a\n"
            "lower sharpness; drift from a baseline (same seed and prompt without the LoRA) as a difference.\n\n"
            "options:\n"
            "  --reference IMG|DIR  compare every IMAGE with IMG, or with the file of the same name in DIR\n"
            "  --json               print a JSON array: one object per image with image, width, height,\n"
            "                       sharpness, hf_ratio and, with a reference, reference, difference, ssim,\n"
            "                       ssim_difference (= 1 - ssim)\n"
            "  -h, --help           this text\n\n"
            "the numbers (luma Y = 0.299 R + 0.587 G + 0.114 B on the 0..1 values, Rec.601):\n"
            "  sharpness   variance of the 4-neighbour Laplacian of Y (mirrored borders); falls when an image\n"
            "              is blurred, rises with noise and contrast (OpenCV's figure on 0..255 is 255² times it)\n"
            "  hf_ratio    mean((Y - Gaussian_sigma1(Y))²) / var(Y): the share of the variance in fine detail,\n"
            "              0..1, independent of contrast\n"
            "  difference  mean |image - reference| over all pixels and RGB channels, 0..1 (0: identical)\n"
            "  ssim        mean SSIM of the lumas (11x11 Gaussian window, sigma 1.5, C1 = 0.01², C2 = 0.03²);\n"
            "              1 for identical images, so 1 - ssim is the second difference measure\n"
            "Images with alpha are composited on white. SSIM needs images of at least 11x11.\n");
}

static const char *base_name(const char *p) {
    const char *s = strrchr(p, '/');
    return s ? s + 1 : p;
}

typedef struct {
    const char *image;
    char *reference; /* NULL: none */
    zl_score s;
} result;

/* Scores one image against ref (NULL: none); *cached_ref is the single --reference IMG, read once. */
static int score_one(const char *image, const char *refarg, int refdir, zl_image *cached_ref, result *r) {
    memset(r, 0, sizeof *r);
    r->image = image;
    zl_image img, dref;
    const zl_image *ref = NULL;
    memset(&dref, 0, sizeof dref);
    if (zl_is_dir(image)) return zl_err("%s is a folder, not an image", image);
    if (zl_image_read(image, NULL, &img)) return -1;
    if (refarg && refdir) {
        r->reference = zl_xasprintf("%s%s%s", refarg, zl_ends_with(refarg, "/") ? "" : "/", base_name(image));
        if (zl_image_read(r->reference, NULL, &dref)) {
            zl_image_free(&img);
            return zl_err_prefix("the reference for %s", image);
        }
        ref = &dref;
    } else if (refarg) {
        r->reference = zl_xstrdup(refarg);
        ref = cached_ref;
    }
    int rc = 0;
    if (ref && (ref->w != img.w || ref->h != img.h))
        rc = zl_err("%s is %dx%d but its reference %s is %dx%d: images must be the same size to compare", image, img.w,
                    img.h, r->reference, ref->w, ref->h);
    else if (zl_score_image(&img, ref, &r->s))
        rc = zl_err_prefix("%s", image);
    zl_image_free(&img);
    zl_image_free(&dref);
    return rc;
}

/* A JSON array with one object per line. */
static int print_json(const result *res, int n) {
    zl_buf b = {0};
    zl_buf_puts(&b, "[");
    for (int i = 0; i < n; i++) {
        const result *r = &res[i];
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "image", r->image);
        cJSON_AddNumberToObject(o, "width", r->s.w);
        cJSON_AddNumberToObject(o, "height", r->s.h);
        cJSON_AddNumberToObject(o, "sharpness", r->s.sharp.sharpness);
        cJSON_AddNumberToObject(o, "hf_ratio", r->s.sharp.hf_ratio);
        if (r->s.has_ref) {
            cJSON_AddStringToObject(o, "reference", r->reference);
            cJSON_AddNumberToObject(o, "difference", r->s.diff.difference);
            cJSON_AddNumberToObject(o, "ssim", r->s.diff.ssim);
            cJSON_AddNumberToObject(o, "ssim_difference", 1.0 - r->s.diff.ssim);
        }
        char *s = cJSON_PrintUnformatted(o);
        cJSON_Delete(o);
        if (!s) {
            zl_buf_free(&b);
            return zl_err("score: out of memory formatting JSON");
        }
        zl_buf_puts(&b, i ? ",\n " : "\n ");
        zl_buf_puts(&b, s);
        cJSON_free(s);
    }
    zl_buf_puts(&b, "\n]\n");
    fwrite(b.s, 1, b.len, stdout);
    zl_buf_free(&b);
    return 0;
}

static void print_table(const result *res, int n, const char *refarg, int refdir) {
    int wn = 5;
    for (int i = 0; i < n; i++) {
        int l = (int)strlen(res[i].image);
        if (l > wn) wn = l;
    }
    if (wn > 60) wn = 60;
    int ref = refarg != NULL;
    if (ref) printf("reference: %s%s\n\n", refarg, refdir ? " (the file of the same name)" : "");
    printf("%-*s  %9s  %10s  %8s", wn, "image", "size", "sharpness", "hf_ratio");
    if (ref) printf("  %10s  %8s", "difference", "1-ssim");
    printf("\n");
    for (int i = 0; i < n; i++) {
        const zl_score *s = &res[i].s;
        char size[32];
        snprintf(size, sizeof size, "%dx%d", s->w, s->h);
        printf("%-*s  %9s  %10.6f  %8.4f", wn, res[i].image, size, s->sharp.sharpness, s->sharp.hf_ratio);
        if (ref) printf("  %10.6f  %8.6f", s->diff.difference, 1.0 - s->diff.ssim);
        printf("\n");
    }
}

int zl_cmd_score(int argc, char **argv) {
    int json = 0, opts_done = 0, n = 0;
    const char *refarg = NULL;
    const char **images = zl_xmalloc(sizeof(char *) * (size_t)(argc > 1 ? argc : 1));
    int rc = 2;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!opts_done && a[0] == '-' && a[1]) {
            if (strcmp(a, "--") == 0) opts_done = 1;
            else if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) { usage(stdout); rc = 0; goto done; }
            else if (strcmp(a, "--json") == 0) json = 1;
            else if (strcmp(a, "--reference") == 0 || zl_starts_with(a, "--reference=")) {
                const char *v = a[11] == '=' ? a + 12 : i + 1 < argc ? argv[++i] : NULL;
                if (!v || !*v) { fprintf(stderr, "error: score: --reference needs an image or a folder\n"); goto done; }
                if (refarg) { fprintf(stderr, "error: score: one --reference only\n"); goto done; }
                refarg = v;
            } else {
                fprintf(stderr, "error: score: unknown option '%s' (see 'zlora score --help')\n", a);
                goto done;
            }
        } else {
            images[n++] = a;
        }
    }
    if (n == 0) {
        usage(stderr);
        goto done;
    }
    int refdir = refarg && zl_is_dir(refarg);
    zl_image cached;
    memset(&cached, 0, sizeof cached);
    if (refarg && !refdir && zl_image_read(refarg, NULL, &cached)) {
        zl_err_prefix("score: the reference");
        rc = zl_cli_fail();
        goto done;
    }
    result *res = zl_xcalloc((size_t)n, sizeof *res);
    rc = 0;
    for (int i = 0; i < n && !rc; i++)
        if (score_one(images[i], refarg, refdir, &cached, &res[i])) {
            zl_err_prefix("score");
            rc = zl_cli_fail();
        }
    if (!rc) {
        if (json) {
            if (print_json(res, n)) rc = zl_cli_fail();
        } else {
            print_table(res, n, refarg, refdir);
        }
        if (!rc && fflush(stdout) != 0) {
            zl_err("score: cannot write the output");
            rc = zl_cli_fail();
        }
    }
    for (int i = 0; i < n; i++) free(res[i].reference);
    free(res);
    zl_image_free(&cached);
done:
    free(images);
    return rc;
}
