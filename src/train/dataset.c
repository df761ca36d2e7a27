/* dataset.c — see dataset.h. */
#include "train/dataset.h"
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "base/base.h"
#include "io/image.h"

void zl_dataset_default_opts(zl_dataset_opts *o) {
    memset(o, 0, sizeof *o);
    o->resolution = 1024;
    o->mult = 16;
    o->step = 64;
    o->max_upscale = 2.0f;
}

static int is_image_name(const char *n) {
    const char *d = strrchr(n, '.');
    if (!d || d == n) return 0;
    const char *ext[] = {".png", ".jpg", ".jpeg", ".webp"};
    for (int i = 0; i < 4; i++) if (!strcasecmp(d, ext[i])) return 1;
    return 0;
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

static int cmp_bucket(const void *a, const void *b) {
    const zl_bucket *x = a, *y = b;
    return x->w != y->w ? x->w - y->w : x->h - y->h;
}

int zl_dataset_bucket_set(const zl_dataset_opts *o, zl_bucket **out) {
    *out = NULL;
    if (o->mult < 1 || o->step < o->mult || o->step % o->mult) return zl_err("bucket step %d must be a positive multiple of %d", o->step, o->mult);
    if (o->resolution < o->step) return zl_err("resolution %d is smaller than the bucket step %d", o->resolution, o->step);
    double area = (double)o->resolution * o->resolution;
    int cap = 64, n = 0;
    zl_bucket *b = zl_xmalloc(sizeof *b * (size_t)cap);
    for (int w = o->step; (double)w * o->step <= area; w += o->step) {
        int h = (int)(area / w / o->step) * o->step;
        if (h < o->step || w > 4 * h || h > 4 * w) continue;
        if (n == cap) b = zl_xrealloc(b, sizeof *b * (size_t)(cap *= 2));
        b[n++] = (zl_bucket){w, h, 0};
    }
    qsort(b, (size_t)n, sizeof *b, cmp_bucket);
    *out = b;
    return n;
}

/* Reads, trims and checks a caption file: 1 caption, 0 none, -1 unreadable (why set). */
static int read_caption(const char *path, char **cap, const char **why) {
    *cap = NULL;
    FILE *f = fopen(path, "rb");
    if (!f) return errno == ENOENT ? 0 : (*why = "caption file cannot be read", -1);
    zl_buf b = {0};
    char chunk[4096];
    size_t k;
    while ((k = fread(chunk, 1, sizeof chunk, f)) > 0) {
        if (b.len + k > (1u << 20)) { fclose(f); zl_buf_free(&b); *why = "caption file larger than 1 MB"; return -1; }
        for (size_t i = 0; i < k; i++) zl_buf_printf(&b, "%c", chunk[i] == '\r' || chunk[i] == '\n' || chunk[i] == '\t' ? ' ' : chunk[i]);
    }
    fclose(f);
    if (!b.s) return 0;
    if (memchr(b.s, 0, b.len) || !zl_utf8_valid(b.s, b.len)) { zl_buf_free(&b); *why = "caption is not UTF-8 text"; return -1; }
    size_t s = 0, e = b.len;
    while (s < e && isspace((unsigned char)b.s[s])) s++;
    while (e > s && isspace((unsigned char)b.s[e - 1])) e--;
    if (s == e) { zl_buf_free(&b); return 0; }
    /* collapse runs of spaces left by line breaks */
    zl_buf c = {0};
    for (size_t i = s; i < e; i++)
        if (!(b.s[i] == ' ' && i > s && b.s[i - 1] == ' ')) zl_buf_printf(&c, "%c", b.s[i]);
    zl_buf_free(&b);
    *cap = c.s;
    return 1;
}

/* The training caption from a raw caption (or NULL) and the trigger; NULL when there is none. */
static char *apply_trigger(const char *raw, const char *trigger) {
    if (!raw) return trigger && *trigger ? zl_xstrdup(trigger) : NULL;
    if (strstr(raw, "[trigger]")) {
        zl_buf b = {0};
        for (const char *p = raw; *p;) {
            if (!strncmp(p, "[trigger]", 9)) { zl_buf_puts(&b, trigger); p += 9; }
            else zl_buf_printf(&b, "%c", *p++);
        }
        return b.s ? b.s : zl_xstrdup("");
    }
    if (trigger && *trigger) return zl_xasprintf("%s, %s", trigger, raw);
    return zl_xstrdup(raw);
}

static void skip(zl_dataset *ds, int *cap, const char *path, const char *why) {
    if (ds->nskipped == *cap) {
        *cap = *cap ? 2 * *cap : 16;
        ds->skipped = zl_xrealloc(ds->skipped, sizeof(char *) * (size_t)*cap);
        ds->why = zl_xrealloc(ds->why, sizeof(char *) * (size_t)*cap);
    }
    ds->skipped[ds->nskipped] = zl_xstrdup(path);
    ds->why[ds->nskipped++] = zl_xstrdup(why);
}

static uint64_t file_hash(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) return 0;
    uint64_t h = 0;
    char buf[1 << 16];
    size_t k;
    while ((k = fread(buf, 1, sizeof buf, f)) > 0) h = zl_hash64(buf, k, h);
    fclose(f);
    return h;
}

/* The bucket of a w×h image. */
static void assign(const zl_dataset_opts *o, const zl_bucket *set, int nset, int w, int h, int *bw, int *bh) {
    double a = log((double)w / h), best = 1e30;
    int bi = 0;
    for (int i = 0; i < nset; i++) {
        double d = fabs(log((double)set[i].w / set[i].h) - a);
        if (d < best - 1e-12 || (fabs(d - best) <= 1e-12 && set[i].w * set[i].h > set[bi].w * set[bi].h)) { best = d; bi = i; }
    }
    *bw = set[bi].w;
    *bh = set[bi].h;
    double s = fmax((double)*bw / w, (double)*bh / h); /* the scale that covers the bucket */
    double lim = o->allow_upscale ? (o->max_upscale > 1 ? o->max_upscale : 1.0) : 1.0;
    if (s > lim + 1e-9) {
        double f = lim / s;
        int nw = (int)(*bw * f / o->mult) * o->mult, nh = (int)(*bh * f / o->mult) * o->mult;
        *bw = nw < o->mult ? o->mult : nw;
        *bh = nh < o->mult ? o->mult : nh;
    }
}

int zl_dataset_scan(const char *dir, const zl_dataset_opts *o, zl_dataset *ds) {
    memset(ds, 0, sizeof *ds);
    zl_dataset_opts def;
    if (!o) { zl_dataset_default_opts(&def); o = &def; }
    zl_bucket *set = NULL;
    int nset = zl_dataset_bucket_set(o, &set);
    if (nset < 0) return -1;
    if (nset == 0) { free(set); return zl_err("no bucket fits resolution %d with step %d", o->resolution, o->step); }
    DIR *d = opendir(dir);
    if (!d) { free(set); return zl_err("--data %s: %s", dir, errno == ENOTDIR ? "not a folder" : strerror(errno)); }
    char **names = NULL;
    int nn = 0, capn = 0, caps = 0, capi = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.' || !is_image_name(e->d_name)) continue;
        if (nn == capn) names = zl_xrealloc(names, sizeof(char *) * (size_t)(capn = capn ? 2 * capn : 64));
        names[nn++] = zl_xstrdup(e->d_name);
    }
    closedir(d);
    if (nn) qsort(names, (size_t)nn, sizeof(char *), cmp_str); /* names is NULL when the folder has no image */
    int uses_trigger_tag = 0;
    for (int i = 0; i < nn; i++) {
        char *path = zl_xasprintf("%s/%s", dir, names[i]);
        const char *dot = strrchr(names[i], '.');
        char *txt = zl_xasprintf("%s/%.*s.txt", dir, (int)(dot - names[i]), names[i]);
        const char *why = NULL;
        char *raw = NULL;
        int rc = read_caption(txt, &raw, &why);
        if (rc < 0) { skip(ds, &caps, path, why); free(path); free(txt); continue; }
        if (!raw && o->default_caption && *o->default_caption) raw = zl_xstrdup(o->default_caption);
        if (raw && strstr(raw, "[trigger]")) uses_trigger_tag = 1;
        char *cap = apply_trigger(raw, o->trigger ? o->trigger : "");
        free(raw);
        if (!cap || !*cap) {
            skip(ds, &caps, path, "no caption (add a .txt file, --default-caption or --trigger)");
            free(cap); free(path); free(txt);
            continue;
        }
        zl_image img;
        if (zl_image_read(path, NULL, &img)) {
            skip(ds, &caps, path, zl_last_error());
            zl_clear_error();
            free(cap); free(path); free(txt);
            continue;
        }
        if (ds->n == capi) ds->items = zl_xrealloc(ds->items, sizeof(zl_item) * (size_t)(capi = capi ? 2 * capi : 64));
        zl_item *it = &ds->items[ds->n++];
        memset(it, 0, sizeof *it);
        it->image = path;
        it->caption = cap;
        it->w = img.w;
        it->h = img.h;
        it->hash = file_hash(path);
        assign(o, set, nset, img.w, img.h, &it->bw, &it->bh);
        zl_image_free(&img);
        free(txt);
    }
    for (int i = 0; i < nn; i++) free(names[i]);
    free(names);
    free(set);
    if (uses_trigger_tag && !(o->trigger && *o->trigger)) {
        zl_dataset_free(ds);
        return zl_err("--data %s: captions use [trigger] but no --trigger WORD was given", dir);
    }
    if (ds->n == 0) {
        int ns = ds->nskipped;
        char first[600] = "";
        if (ns) snprintf(first, sizeof first, " (%d skipped; first: %s: %s)", ns, ds->skipped[0], ds->why[0]);
        zl_dataset_free(ds);
        return zl_err("--data %s: no usable image with a caption%s", dir, ns ? first : " (no .png/.jpg/.jpeg/.webp files)");
    }
    /* buckets in use */
    for (int i = 0; i < ds->n; i++) {
        int k = 0;
        while (k < ds->nbuckets && !(ds->buckets[k].w == ds->items[i].bw && ds->buckets[k].h == ds->items[i].bh)) k++;
        if (k == ds->nbuckets) {
            ds->buckets = zl_xrealloc(ds->buckets, sizeof(zl_bucket) * (size_t)(ds->nbuckets + 1));
            ds->buckets[ds->nbuckets++] = (zl_bucket){ds->items[i].bw, ds->items[i].bh, 0};
        }
        ds->buckets[k].count++;
    }
    qsort(ds->buckets, (size_t)ds->nbuckets, sizeof(zl_bucket), cmp_bucket);
    return 0;
}

void zl_dataset_free(zl_dataset *ds) {
    for (int i = 0; i < ds->n; i++) { free(ds->items[i].image); free(ds->items[i].caption); }
    for (int i = 0; i < ds->nskipped; i++) { free(ds->skipped[i]); free(ds->why[i]); }
    free(ds->items); free(ds->skipped); free(ds->why); free(ds->buckets);
    memset(ds, 0, sizeof *ds);
}

void zl_dataset_print_summary(const zl_dataset *ds, FILE *f) {
    fprintf(f, "dataset: %d image%s", ds->n, ds->n == 1 ? "" : "s");
    if (ds->nskipped) fprintf(f, ", %d skipped:\n", ds->nskipped);
    else fprintf(f, "\n");
    for (int i = 0; i < ds->nskipped; i++) fprintf(f, "  skipped %s: %s\n", ds->skipped[i], ds->why[i]);
    fprintf(f, "  bucket      aspect  images\n");
    for (int i = 0; i < ds->nbuckets; i++)
        fprintf(f, "  %4dx%-4d   %5.2f   %5d\n", ds->buckets[i].w, ds->buckets[i].h, (double)ds->buckets[i].w / ds->buckets[i].h,
                ds->buckets[i].count);
}

int zl_dataset_load_pixels(const zl_item *it, int flip, float *chw) {
    zl_image img, fit;
    if (zl_image_read(it->image, NULL, &img)) return -1;
    int rc = zl_image_fit(&img, it->bw, it->bh, ZL_RESIZE_LANCZOS3, &fit);
    zl_image_free(&img);
    if (rc) return -1;
    if (flip) {
        for (int y = 0; y < fit.h; y++) {
            float *row = fit.px + (size_t)y * fit.w * 3;
            for (int x = 0; x < fit.w / 2; x++)
                for (int c = 0; c < 3; c++) {
                    float t = row[3 * x + c];
                    row[3 * x + c] = row[3 * (fit.w - 1 - x) + c];
                    row[3 * (fit.w - 1 - x) + c] = t;
                }
        }
    }
    zl_image_to_tensor(&fit, chw);
    zl_image_free(&fit);
    return 0;
}
