/* safetensors.c — see safetensors.h. */

#include "safetensors.h"
#include "../base/base.h"
#include "../base/progress.h"

#include <cjson/cJSON.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#define MAX_HEADER (100u << 20)

typedef struct {
    char *path;
    void *map;        /* mmap base (NULL for buffers) */
    size_t size;
    const uint8_t *bytes;
} shard;

struct zl_st {
    char *path;
    shard *shards;
    int nshards;
    zl_tensor_info *t;
    int n, cap;
    char **mkeys, **mvals;
    int nmeta;
};

static int cmp_info(const void *a, const void *b) {
    return strcmp(((const zl_tensor_info *)a)->name, ((const zl_tensor_info *)b)->name);
}

static int cmp_cjson_key(const void *a, const void *b) {
    return strcmp((*(const cJSON *const *)a)->string, (*(const cJSON *const *)b)->string);
}

/* Adds one metadata entry. `check` asks for the linear duplicate search (needed only when merging the
 * metadata of a later shard; within one header duplicates are rejected beforehand). */
static void add_meta(zl_st *st, const char *k, const char *v, int check) {
    if (check)
        for (int i = 0; i < st->nmeta; i++)
            if (strcmp(st->mkeys[i], k) == 0) return; /* first shard wins */
    st->mkeys = zl_xrealloc(st->mkeys, sizeof(char *) * (size_t)(st->nmeta + 1));
    st->mvals = zl_xrealloc(st->mvals, sizeof(char *) * (size_t)(st->nmeta + 1));
    st->mkeys[st->nmeta] = zl_xstrdup(k);
    st->mvals[st->nmeta] = zl_xstrdup(v);
    st->nmeta++;
}

typedef struct { uint64_t b, e; const char *name; } range;
static int cmp_range(const void *a, const void *b) {
    const range *x = a, *y = b;
    if (x->b != y->b) return x->b < y->b ? -1 : 1;
    return x->e < y->e ? -1 : x->e > y->e;
}

/* JSON numbers are doubles: accept only exact non-negative integers below 2^53. */
static int json_u64(const cJSON *j, uint64_t *out) {
    if (!cJSON_IsNumber(j)) return -1;
    double d = j->valuedouble;
    if (!(d >= 0) || d > 9007199254740992.0 || floor(d) != d) return -1;
    *out = (uint64_t)d;
    return 0;
}

/* Parses one shard's header and appends its tensors. `label` names the file in errors. */
static int parse_shard(zl_st *st, int si, const char *label) {
    shard *sh = &st->shards[si];
    if (sh->size < 8) return zl_err("%s: not a safetensors file (only %zu bytes)", label, sh->size);
    uint64_t hl = 0;
    for (int i = 7; i >= 0; i--) hl = (hl << 8) | sh->bytes[i];
    if (hl < 2) return zl_err("%s: header length %llu is too small (file is corrupt or not safetensors)", label, (unsigned long long)hl);
    if (hl > MAX_HEADER) {
        int text = 1; /* a text file (a JSON config, a "latest" pointer, an HTML error page) read as safetensors */
        for (int i = 0; i < 8; i++) text &= sh->bytes[i] >= 0x20 && sh->bytes[i] < 0x7f;
        if (text)
            return zl_err("%s: not a safetensors file: it starts with text (\"%.8s\"), where safetensors starts with the header length",
                          label, (const char *)sh->bytes);
        return zl_err("%s: header length %llu exceeds the 100 MB limit", label, (unsigned long long)hl);
    }
    if (hl > sh->size - 8)
        return zl_err("%s: header length %llu runs past the end of the file (%zu bytes): truncated download?",
                      label, (unsigned long long)hl, sh->size);
    const char *hdr = (const char *)sh->bytes + 8;
    if (memchr(hdr, 0, hl)) return zl_err("%s: header contains a NUL byte (not safetensors JSON)", label);
    if (!zl_utf8_valid(hdr, hl)) return zl_err("%s: header is not valid UTF-8", label);
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(hdr, hl, &end, 0);
    if (!root) return zl_err("%s: header is not valid JSON (near byte %ld)", label,
                             (long)(cJSON_GetErrorPtr() ? cJSON_GetErrorPtr() - hdr : 0));
    for (const char *p = end; p && p < hdr + hl; p++)
        if (*p != ' ' && *p != '\n' && *p != '\r' && *p != '\t') {
            cJSON_Delete(root);
            return zl_err("%s: trailing bytes after the header JSON", label);
        }
    if (!cJSON_IsObject(root)) { cJSON_Delete(root); return zl_err("%s: header is not a JSON object", label); }
    uint64_t data_size = sh->size - 8 - hl;
    const uint8_t *data = sh->bytes + 8 + hl;
    int count = cJSON_GetArraySize(root);
    range *rg = zl_xcalloc((size_t)count + 1, sizeof(range));
    int nr = 0, rc = -1, seen_meta = 0;
    for (cJSON *it = root->child; it; it = it->next) {
        const char *name = it->string;
        if (!name) { zl_err("%s: header entry without a name", label); goto out; }
        if (strcmp(name, "__metadata__") == 0) {
            if (seen_meta) { zl_err("%s: duplicate key \"__metadata__\" in the header", label); goto out; }
            seen_meta = 1;
            if (!cJSON_IsObject(it)) { zl_err("%s: __metadata__ is not an object", label); goto out; }
            int nm = cJSON_GetArraySize(it), k = 0;
            const cJSON **ms = zl_xcalloc((size_t)nm + 1, sizeof *ms);
            for (cJSON *m = it->child; m; m = m->next) {
                if (!cJSON_IsString(m)) {
                    zl_err("%s: __metadata__ value of \"%s\" is not a string", label, m->string);
                    free(ms);
                    goto out;
                }
                ms[k++] = m;
            }
            qsort(ms, (size_t)k, sizeof *ms, cmp_cjson_key);
            for (int i = 1; i < k; i++)
                if (strcmp(ms[i]->string, ms[i - 1]->string) == 0) {
                    zl_err("%s: duplicate __metadata__ key \"%s\"", label, ms[i]->string);
                    free(ms);
                    goto out;
                }
            int check = st->nmeta > 0;
            for (cJSON *m = it->child; m; m = m->next) add_meta(st, m->string, m->valuestring, check);
            free(ms);
            continue;
        }
        if (!cJSON_IsObject(it)) { zl_err("%s: tensor \"%s\": entry is not an object", label, name); goto out; }
        const cJSON *jd = cJSON_GetObjectItemCaseSensitive(it, "dtype");
        const cJSON *js = cJSON_GetObjectItemCaseSensitive(it, "shape");
        const cJSON *jo = cJSON_GetObjectItemCaseSensitive(it, "data_offsets");
        if (!cJSON_IsString(jd) || !cJSON_IsArray(js) || !cJSON_IsArray(jo)) {
            zl_err("%s: tensor \"%s\": needs dtype (string), shape and data_offsets (arrays)", label, name);
            goto out;
        }
        int dt = zl_dtype_from_name(jd->valuestring);
        if (dt < 0) { zl_err("%s: tensor \"%s\": unknown dtype \"%s\"", label, name, jd->valuestring); goto out; }
        zl_tensor_info ti = {0};
        ti.dtype = (zl_dtype)dt;
        ti.ndim = cJSON_GetArraySize(js);
        if (ti.ndim > ZL_MAX_DIMS) { zl_err("%s: tensor \"%s\": %d dimensions (max %d)", label, name, ti.ndim, ZL_MAX_DIMS); goto out; }
        uint64_t ne = 1;
        int k = 0, overflow = 0, zero = 0;
        for (cJSON *d = js->child; d; d = d->next, k++) {
            uint64_t v;
            if (json_u64(d, &v)) { zl_err("%s: tensor \"%s\": shape entry is not a non-negative integer", label, name); goto out; }
            ti.shape[k] = (int64_t)v;
            if (v == 0) zero = 1;
            else if (ne > UINT64_MAX / v) overflow = 1;
            else ne *= v;
        }
        if (zero) { ne = 0; overflow = 0; }
        uint64_t b, e;
        if (cJSON_GetArraySize(jo) != 2 || json_u64(jo->child, &b) || json_u64(jo->child->next, &e)) {
            zl_err("%s: tensor \"%s\": data_offsets must be two non-negative integers", label, name);
            goto out;
        }
        uint64_t es = zl_dtype_size(ti.dtype);
        if (overflow || (ne && es > UINT64_MAX / ne)) { zl_err("%s: tensor \"%s\": shape is absurdly large", label, name); goto out; }
        if (e < b) { zl_err("%s: tensor \"%s\": data_offsets end %llu before begin %llu", label, name, (unsigned long long)e, (unsigned long long)b); goto out; }
        if (e > data_size) {
            zl_err("%s: tensor \"%s\": bytes %llu..%llu lie outside the data area (%llu bytes): truncated file?",
                   label, name, (unsigned long long)b, (unsigned long long)e, (unsigned long long)data_size);
            goto out;
        }
        if (e - b != ne * es) {
            zl_err("%s: tensor \"%s\": shape × %s size = %llu bytes but data_offsets span %llu", label, name,
                   zl_dtype_name(ti.dtype), (unsigned long long)(ne * es), (unsigned long long)(e - b));
            goto out;
        }
        ti.nelem = ne;
        ti.nbytes = (size_t)(e - b);
        ti.data = data + b;
        ti.shard = si;
        ti.name = zl_xstrdup(name);
        if (st->n == st->cap) {
            st->cap = st->cap ? st->cap * 2 : 64;
            st->t = zl_xrealloc(st->t, sizeof(zl_tensor_info) * (size_t)st->cap);
        }
        st->t[st->n++] = ti;
        rg[nr].b = b; rg[nr].e = e; rg[nr].name = ti.name; nr++;
    }
    qsort(rg, (size_t)nr, sizeof(range), cmp_range);
    const range *last = NULL; /* the non-empty range reaching furthest so far */
    for (int i = 0; i < nr; i++) {
        if (rg[i].e == rg[i].b) continue;
        if (last && rg[i].b < last->e) {
            zl_err("%s: tensors \"%s\" and \"%s\" overlap in the data area", label, last->name, rg[i].name);
            goto out;
        }
        if (!last || rg[i].e > last->e) last = &rg[i];
    }
    rc = 0;
out:
    free(rg);
    cJSON_Delete(root);
    return rc;
}

static int finish(zl_st *st) {
    if (st->n) qsort(st->t, (size_t)st->n, sizeof(zl_tensor_info), cmp_info); /* st->t is NULL when empty */
    for (int i = 1; i < st->n; i++)
        if (strcmp(st->t[i].name, st->t[i - 1].name) == 0) {
            if (st->t[i].shard != st->t[i - 1].shard)
                return zl_err("%s: tensor \"%s\" appears twice (in %s and %s)", st->path, st->t[i].name,
                              st->shards[st->t[i - 1].shard].path, st->shards[st->t[i].shard].path);
            return zl_err("%s: duplicate tensor name \"%s\" in the header", st->shards[st->t[i].shard].path,
                          st->t[i].name);
        }
    return 0;
}

static zl_st *st_new(const char *path) {
    zl_st *st = zl_xcalloc(1, sizeof *st);
    st->path = zl_xstrdup(path);
    return st;
}

static int map_shard(zl_st *st, const char *path) {
    int fd = open(path, O_RDONLY);
    if (fd < 0) return zl_err("%s: cannot open: %s", path, strerror(errno));
    struct stat sb;
    if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode)) { close(fd); return zl_err("%s: not a regular file", path); }
    if (sb.st_size == 0) { close(fd); return zl_err("%s: file is empty", path); }
    void *m = mmap(NULL, (size_t)sb.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);
    if (m == MAP_FAILED) return zl_err("%s: mmap failed: %s", path, strerror(errno));
    st->shards = zl_xrealloc(st->shards, sizeof(shard) * (size_t)(st->nshards + 1));
    shard *sh = &st->shards[st->nshards++];
    sh->path = zl_xstrdup(path);
    sh->map = m;
    sh->size = (size_t)sb.st_size;
    sh->bytes = m;
    return parse_shard(st, st->nshards - 1, path);
}

static int shard_index(zl_st *st, const char *path) {
    for (int i = 0; i < st->nshards; i++)
        if (strcmp(st->shards[i].path, path) == 0) return i;
    return -1;
}

static char *dirname_of(const char *path) {
    const char *s = strrchr(path, '/');
    if (!s) return zl_xstrdup(".");
    char *d = zl_xstrdup(path);
    d[(s > path) ? (size_t)(s - path) : 1] = 0;
    return d;
}

static char *slurp(const char *path, size_t *n) {
    FILE *f = fopen(path, "rb");
    if (!f) { zl_err("%s: cannot open: %s", path, strerror(errno)); return NULL; }
    size_t cap = 4096, len = 0;
    char *b = zl_xmalloc(cap);
    size_t r;
    while ((r = fread(b + len, 1, cap - len - 1, f)) > 0) {
        len += r;
        if (len + 1 == cap) {
            if (cap > (256u << 20)) { fclose(f); free(b); zl_err("%s: too large", path); return NULL; }
            cap *= 2; b = zl_xrealloc(b, cap);
        }
    }
    fclose(f);
    b[len] = 0;
    *n = len;
    return b;
}

static int open_index(zl_st *st, const char *index_path) {
    size_t n;
    char *txt = slurp(index_path, &n);
    if (!txt) return -1;
    if (!zl_utf8_valid(txt, n)) { free(txt); return zl_err("%s: not valid UTF-8", index_path); }
    cJSON *root = cJSON_ParseWithLength(txt, n);
    free(txt);
    if (!root) return zl_err("%s: not valid JSON", index_path);
    const cJSON *wm = cJSON_GetObjectItemCaseSensitive(root, "weight_map");
    if (!cJSON_IsObject(wm)) { cJSON_Delete(root); return zl_err("%s: no \"weight_map\" object", index_path); }
    char *dir = dirname_of(index_path);
    int rc = 0;
    for (const cJSON *e = wm->child; e && rc == 0; e = e->next) {
        if (!cJSON_IsString(e) || strchr(e->valuestring, '/') || strcmp(e->valuestring, "..") == 0) {
            rc = zl_err("%s: weight_map entry \"%s\" is not a plain file name", index_path, e->string);
            break;
        }
        char *p = zl_xasprintf("%s/%s", dir, e->valuestring);
        if (shard_index(st, p) < 0) {
            if (!zl_file_exists(p)) rc = zl_err("%s: shard %s listed in the index is missing", index_path, p);
            else rc = map_shard(st, p);
        }
        free(p);
    }
    if (rc == 0) {
        rc = finish(st);
        /* every name in the weight map must be in the shard it names */
        for (const cJSON *e = wm->child; e && rc == 0; e = e->next) {
            const zl_tensor_info *t = zl_st_find(st, e->string);
            char *p = zl_xasprintf("%s/%s", dir, e->valuestring);
            if (!t) rc = zl_err("%s: tensor \"%s\" is listed in the index but missing from %s", index_path, e->string, p);
            else if (strcmp(st->shards[t->shard].path, p) != 0)
                rc = zl_err("%s: tensor \"%s\" is listed in %s but found in %s", index_path, e->string, p, st->shards[t->shard].path);
            free(p);
        }
    }
    free(dir);
    cJSON_Delete(root);
    return rc;
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

static int open_dir(zl_st *st, const char *dirp) {
    DIR *d = opendir(dirp);
    if (!d) return zl_err("%s: cannot open folder: %s", dirp, strerror(errno));
    char **files = NULL, *index = NULL;
    int nf = 0;
    struct dirent *de;
    while ((de = readdir(d))) {
        if (zl_ends_with(de->d_name, ".safetensors.index.json")) {
            if (!index) index = zl_xasprintf("%s/%s", dirp, de->d_name);
        } else if (zl_ends_with(de->d_name, ".safetensors")) {
            files = zl_xrealloc(files, sizeof(char *) * (size_t)(nf + 1));
            files[nf++] = zl_xasprintf("%s/%s", dirp, de->d_name);
        }
    }
    closedir(d);
    int rc;
    if (index) rc = open_index(st, index);
    else if (nf == 0) rc = zl_err("%s: no .safetensors files in this folder", dirp);
    else {
        qsort(files, (size_t)nf, sizeof(char *), cmp_str);
        rc = 0;
        for (int i = 0; i < nf && rc == 0; i++) rc = map_shard(st, files[i]);
        if (rc == 0) rc = finish(st);
    }
    for (int i = 0; i < nf; i++) free(files[i]);
    free(files);
    free(index);
    return rc;
}

int zl_st_open(const char *path, zl_st **out) {
    *out = NULL;
    zl_st *st = st_new(path);
    int rc;
    if (zl_is_dir(path)) rc = open_dir(st, path);
    else if (zl_ends_with(path, ".json")) rc = open_index(st, path);
    else {
        rc = map_shard(st, path);
        if (rc == 0) rc = finish(st);
    }
    if (rc) { zl_st_close(st); return -1; }
    *out = st;
    return 0;
}

int zl_st_open_buffer(const void *buf, size_t n, const char *label, zl_st **out) {
    *out = NULL;
    zl_st *st = st_new(label);
    st->shards = zl_xcalloc(1, sizeof(shard));
    st->nshards = 1;
    st->shards[0].path = zl_xstrdup(label);
    st->shards[0].bytes = buf;
    st->shards[0].size = n;
    if (parse_shard(st, 0, label) || finish(st)) { zl_st_close(st); return -1; }
    *out = st;
    return 0;
}

void zl_st_close(zl_st *st) {
    if (!st) return;
    for (int i = 0; i < st->n; i++) free((char *)st->t[i].name);
    free(st->t);
    for (int i = 0; i < st->nshards; i++) {
        if (st->shards[i].map) munmap(st->shards[i].map, st->shards[i].size);
        free(st->shards[i].path);
    }
    free(st->shards);
    for (int i = 0; i < st->nmeta; i++) { free(st->mkeys[i]); free(st->mvals[i]); }
    free(st->mkeys);
    free(st->mvals);
    free(st->path);
    free(st);
}

int zl_st_count(const zl_st *st) { return st->n; }
const zl_tensor_info *zl_st_tensor(const zl_st *st, int i) { return i >= 0 && i < st->n ? &st->t[i] : NULL; }
const zl_tensor_info *zl_st_find(const zl_st *st, const char *name) {
    zl_tensor_info key = {.name = name};
    if (!st->n) return NULL;
    return bsearch(&key, st->t, (size_t)st->n, sizeof key, cmp_info);
}
const char *zl_st_path(const zl_st *st) { return st->path; }
int zl_st_nshards(const zl_st *st) { return st->nshards; }
const char *zl_st_shard_path(const zl_st *st, int i) { return st->shards[i].path; }
uint64_t zl_st_total_bytes(const zl_st *st) {
    uint64_t s = 0;
    for (int i = 0; i < st->n; i++) s += st->t[i].nbytes;
    return s;
}
int zl_st_meta_count(const zl_st *st) { return st->nmeta; }
const char *zl_st_meta_key(const zl_st *st, int i) { return st->mkeys[i]; }
const char *zl_st_meta_value(const zl_st *st, int i) { return st->mvals[i]; }
const char *zl_st_meta_get(const zl_st *st, const char *key) {
    for (int i = 0; i < st->nmeta; i++)
        if (strcmp(st->mkeys[i], key) == 0) return st->mvals[i];
    return NULL;
}

float *zl_st_read_f32(const zl_st *st, const zl_tensor_info *t) {
    if (!zl_dtype_is_float(t->dtype)) {
        zl_err("%s: tensor \"%s\" has dtype %s, expected a float type", st->path, t->name, zl_dtype_name(t->dtype));
        return NULL;
    }
    size_t bytes;
    if (zl_mul_size((size_t)t->nelem, sizeof(float), &bytes)) { zl_err("tensor too large"); return NULL; }
    float *d = zl_try_malloc(bytes);
    if (!d) return NULL;
    size_t es = zl_dtype_size(t->dtype), n = (size_t)t->nelem;
    if ((uintptr_t)t->data % es == 0) {
        zl_to_f32(d, t->data, t->dtype, n);
    } else {
        /* The data area starts wherever the header ends, so a file whose header length is not a multiple
         * of 8 leaves tensors misaligned for their type: convert through an aligned bounce buffer. */
        uint64_t tmp[512];
        size_t chunk = sizeof tmp / es;
        const uint8_t *src = t->data;
        for (size_t i = 0; i < n; i += chunk) {
            size_t m = n - i < chunk ? n - i : chunk;
            memcpy(tmp, src + i * es, m * es);
            zl_to_f32(d + i, tmp, t->dtype, m);
        }
    }
    return d;
}

/* ---------------------------------------------------------------- writer */

typedef struct {
    char *name;
    zl_dtype dt;
    int ndim;
    int64_t shape[ZL_MAX_DIMS];
    void *data;
    size_t nbytes;
} wtensor;

struct zl_st_writer {
    wtensor *t;
    int n;
    char **mk, **mv;
    int nm;
};

zl_st_writer *zl_stw_new(void) { return zl_xcalloc(1, sizeof(zl_st_writer)); }
void zl_stw_free(zl_st_writer *w) {
    if (!w) return;
    for (int i = 0; i < w->n; i++) { free(w->t[i].name); free(w->t[i].data); }
    for (int i = 0; i < w->nm; i++) { free(w->mk[i]); free(w->mv[i]); }
    free(w->t); free(w->mk); free(w->mv); free(w);
}
void zl_stw_meta(zl_st_writer *w, const char *key, const char *value) {
    for (int i = 0; i < w->nm; i++)
        if (strcmp(w->mk[i], key) == 0) { free(w->mv[i]); w->mv[i] = zl_xstrdup(value); return; }
    w->mk = zl_xrealloc(w->mk, sizeof(char *) * (size_t)(w->nm + 1));
    w->mv = zl_xrealloc(w->mv, sizeof(char *) * (size_t)(w->nm + 1));
    w->mk[w->nm] = zl_xstrdup(key);
    w->mv[w->nm] = zl_xstrdup(value);
    w->nm++;
}

static wtensor *push(zl_st_writer *w, const char *name, zl_dtype dt, int ndim, const int64_t *shape) {
    if (ndim < 0 || ndim > ZL_MAX_DIMS) { zl_err("tensor \"%s\": bad rank %d", name, ndim); return NULL; }
    for (int i = 0; i < w->n; i++)
        if (strcmp(w->t[i].name, name) == 0) { zl_err("tensor \"%s\" added twice", name); return NULL; }
    size_t ne = 1;
    for (int i = 0; i < ndim; i++) {
        if (shape[i] < 0 || zl_mul_size(ne, (size_t)shape[i], &ne)) { zl_err("tensor \"%s\": bad shape", name); return NULL; }
    }
    w->t = zl_xrealloc(w->t, sizeof(wtensor) * (size_t)(w->n + 1));
    wtensor *t = &w->t[w->n++];
    memset(t, 0, sizeof *t);
    t->name = zl_xstrdup(name);
    t->dt = dt;
    t->ndim = ndim;
    for (int i = 0; i < ndim; i++) t->shape[i] = shape[i];
    t->nbytes = ne * zl_dtype_size(dt);
    t->data = zl_xmalloc(t->nbytes);
    return t;
}

int zl_stw_add(zl_st_writer *w, const char *name, zl_dtype dt, int ndim, const int64_t *shape, const void *data) {
    wtensor *t = push(w, name, dt, ndim, shape);
    if (!t) return -1;
    if (t->nbytes) memcpy(t->data, data, t->nbytes);
    return 0;
}

int zl_stw_add_f32(zl_st_writer *w, const char *name, int ndim, const int64_t *shape, const float *data, zl_dtype as) {
    if (as != ZL_F32 && as != ZL_BF16 && as != ZL_F16) return zl_err("cannot store tensors as %s", zl_dtype_name(as));
    wtensor *t = push(w, name, as, ndim, shape);
    if (!t) return -1;
    return zl_from_f32(t->data, data, as, t->nbytes / zl_dtype_size(as));
}

int zl_stw_count(const zl_st_writer *w) { return w->n; }

static int cmp_wt(const void *a, const void *b) { return strcmp(((const wtensor *)a)->name, ((const wtensor *)b)->name); }
static int cmp_idx(const void *a, const void *b, void *ctx) {
    char **k = ctx;
    return strcmp(k[*(const int *)a], k[*(const int *)b]);
}

/* Header pieces shared by the writer and the streaming converter. The header starts with "{", the
 * metadata block (keys sorted) comes first, then one entry per tensor; finish pads to 8 bytes. */
static void header_meta(zl_buf *h, char **mk, char **mv, int nm) {
    zl_buf_puts(h, "{");
    if (!nm) return;
    int *ord = zl_xmalloc(sizeof(int) * (size_t)nm);
    for (int i = 0; i < nm; i++) ord[i] = i;
    qsort_r(ord, (size_t)nm, sizeof(int), cmp_idx, mk);
    zl_buf_puts(h, "\"__metadata__\":{");
    for (int j = 0; j < nm; j++) {
        if (j) zl_buf_puts(h, ",");
        zl_buf_json_string(h, mk[ord[j]]);
        zl_buf_puts(h, ":");
        zl_buf_json_string(h, mv[ord[j]]);
    }
    zl_buf_puts(h, "}");
    free(ord);
}
static void header_tensor(zl_buf *h, const char *name, zl_dtype dt, int ndim, const int64_t *shape, uint64_t off, uint64_t nb) {
    if (h->len > 1) zl_buf_puts(h, ",");
    zl_buf_json_string(h, name);
    zl_buf_printf(h, ":{\"dtype\":\"%s\",\"shape\":[", zl_dtype_name(dt));
    for (int d = 0; d < ndim; d++) zl_buf_printf(h, "%s%lld", d ? "," : "", (long long)shape[d]);
    zl_buf_printf(h, "],\"data_offsets\":[%llu,%llu]}", (unsigned long long)off, (unsigned long long)(off + nb));
}
static void header_finish(zl_buf *h, uint8_t len8[8]) {
    zl_buf_puts(h, "}");
    while ((h->len + 8) % 8) zl_buf_puts(h, " ");
    for (int i = 0; i < 8; i++) len8[i] = (uint8_t)(h->len >> (8 * i));
}

int zl_stw_write(zl_st_writer *w, const char *path) {
    if (w->n) qsort(w->t, (size_t)w->n, sizeof(wtensor), cmp_wt);
    zl_buf h = {0};
    header_meta(&h, w->mk, w->mv, w->nm);
    uint64_t off = 0;
    for (int i = 0; i < w->n; i++) {
        wtensor *t = &w->t[i];
        header_tensor(&h, t->name, t->dt, t->ndim, t->shape, off, t->nbytes);
        off += t->nbytes;
    }
    uint8_t len8[8];
    header_finish(&h, len8);
    int np = 2 + w->n;
    const void **parts = zl_xmalloc(sizeof(void *) * (size_t)np);
    size_t *sizes = zl_xmalloc(sizeof(size_t) * (size_t)np);
    parts[0] = len8; sizes[0] = 8;
    parts[1] = h.s; sizes[1] = h.len;
    for (int i = 0; i < w->n; i++) { parts[2 + i] = w->t[i].data; sizes[2 + i] = w->t[i].nbytes; }
    int rc = zl_write_atomic(path, (const void *const *)parts, sizes, np);
    free(parts); free(sizes);
    zl_buf_free(&h);
    return rc;
}

/* ---------------------------------------------------------------- streaming conversion */

static int write_all(int fd, const void *buf, size_t n, const char *path) {
    const char *p = buf;
    while (n) {
        ssize_t w = write(fd, p, n > (1u << 30) ? (1u << 30) : n);
        if (w < 0) {
            if (errno == EINTR) continue;
            return zl_err("write to %s failed: %s", path, strerror(errno));
        }
        p += w; n -= (size_t)w;
    }
    return 0;
}

int zl_sts_begin(zl_st_stream *s, const char *path, const zl_st_decl *d, int n, char *const *mk, char *const *mv, int nm) {
    memset(s, 0, sizeof *s);
    s->fd = -1;
    for (int i = 1; i < n; i++)
        if (strcmp(d[i - 1].name, d[i].name) >= 0) return zl_err("%s: tensors must be declared in sorted order without duplicates (%s)", path, d[i].name);
    zl_buf h = {0};
    header_meta(&h, (char **)mk, (char **)mv, nm);
    uint64_t off = 0;
    for (int i = 0; i < n; i++) {
        uint64_t ne = 1;
        for (int k = 0; k < d[i].ndim; k++) ne *= (uint64_t)d[i].shape[k];
        uint64_t nb = ne * zl_dtype_size(d[i].dtype);
        header_tensor(&h, d[i].name, d[i].dtype, d[i].ndim, d[i].shape, off, nb);
        off += nb;
    }
    uint8_t len8[8];
    header_finish(&h, len8);
    s->expect = off;
    s->path = zl_xstrdup(path);
    s->tmp = zl_xasprintf("%s.tmp.%ld", path, (long)getpid());
    s->fd = open(s->tmp, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    int rc = s->fd < 0 ? zl_err("cannot create %s: %s", s->tmp, strerror(errno)) : 0;
    if (!rc) rc = write_all(s->fd, len8, 8, s->tmp);
    if (!rc) rc = write_all(s->fd, h.s, h.len, s->tmp);
    zl_buf_free(&h);
    if (rc) zl_sts_abort(s);
    return rc;
}

int zl_sts_write(zl_st_stream *s, const void *data, size_t bytes) {
    if (s->written + bytes > s->expect) return zl_err("%s: more tensor data than declared", s->path);
    s->written += bytes;
    return write_all(s->fd, data, bytes, s->tmp);
}

void zl_sts_abort(zl_st_stream *s) {
    if (s->fd >= 0) close(s->fd);
    if (s->tmp) unlink(s->tmp);
    free(s->tmp); free(s->path);
    memset(s, 0, sizeof *s);
    s->fd = -1;
}

int zl_sts_end(zl_st_stream *s) {
    int rc = 0;
    if (s->written != s->expect) rc = zl_err("%s: %llu bytes of tensor data written, %llu declared", s->path,
                                             (unsigned long long)s->written, (unsigned long long)s->expect);
    if (!rc && fsync(s->fd) != 0 && errno != EINVAL) rc = zl_err("fsync of %s failed: %s", s->tmp, strerror(errno));
    if (!rc) { close(s->fd); s->fd = -1; }
    if (!rc && rename(s->tmp, s->path) != 0) rc = zl_err("cannot rename %s to %s: %s", s->tmp, s->path, strerror(errno));
    if (rc) { zl_sts_abort(s); return -1; }
    free(s->tmp); free(s->path);
    memset(s, 0, sizeof *s);
    s->fd = -1;
    return 0;
}

int zl_st_convert(const zl_st *src, const char *path, zl_dtype to, const char *const *extra) {
    if (to != ZL_F32 && to != ZL_BF16 && to != ZL_F16) return zl_err("cannot convert to %s", zl_dtype_name(to));
    zl_st_writer *meta = zl_stw_new(); /* collects metadata with replacement semantics */
    for (int i = 0; i < src->nmeta; i++) zl_stw_meta(meta, src->mkeys[i], src->mvals[i]);
    for (int i = 0; extra && extra[i] && extra[i + 1]; i += 2) zl_stw_meta(meta, extra[i], extra[i + 1]);
    zl_st_decl *d = zl_xcalloc((size_t)src->n + 1, sizeof(zl_st_decl));
    uint64_t total = 0;
    for (int i = 0; i < src->n; i++) { /* src->t is sorted by name */
        const zl_tensor_info *t = &src->t[i];
        d[i] = (zl_st_decl){t->name, zl_dtype_is_float(t->dtype) ? to : t->dtype, t->ndim, t->shape};
        total += t->nbytes;
    }
    zl_st_stream s;
    int rc = zl_sts_begin(&s, path, d, src->n, meta->mk, meta->mv, meta->nm);
    free(d);
    zl_stw_free(meta);
    if (rc) return -1;
    enum { CHUNK = 1 << 20 };
    void *buf = zl_xmalloc((size_t)CHUNK * 4);
    float *f = zl_xmalloc((size_t)CHUNK * 4);
    zl_progress pr;
    zl_progress_start(&pr, "converting", (double)total / 1e6, "MB");
    uint64_t done = 0;
    for (int i = 0; i < src->n && !rc; i++) {
        const zl_tensor_info *t = &src->t[i];
        size_t es = zl_dtype_size(t->dtype);
        if (!zl_dtype_is_float(t->dtype) || t->dtype == to) {
            for (size_t o = 0; o < t->nbytes && !rc; o += (size_t)CHUNK * 4) {
                size_t n = t->nbytes - o < (size_t)CHUNK * 4 ? t->nbytes - o : (size_t)CHUNK * 4;
                rc = zl_sts_write(&s, (const char *)t->data + o, n);
                zl_pages_release((const char *)t->data + o, n);
            }
        } else {
            for (uint64_t e = 0; e < t->nelem && !rc; e += CHUNK) {
                size_t n = t->nelem - e < CHUNK ? (size_t)(t->nelem - e) : CHUNK;
                const char *sp = (const char *)t->data + e * es;
                zl_to_f32(f, sp, t->dtype, n);
                zl_from_f32(buf, f, to, n);
                rc = zl_sts_write(&s, buf, n * zl_dtype_size(to));
                zl_pages_release(sp, n * es);
            }
        }
        done += t->nbytes;
        zl_progress_update(&pr, (double)done / 1e6);
    }
    free(buf); free(f);
    if (rc) { zl_sts_abort(&s); return -1; }
    if (zl_sts_end(&s)) return -1;
    zl_progress_end(&pr, (double)done / 1e6);
    return 0;
}
