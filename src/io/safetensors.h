/* safetensors.h — reading (mmap, zero-copy, fully validated) and atomic writing of .safetensors files,
 * and sharded sets (a folder, or a diffusers/transformers *.index.json) opened as one set of tensors.
 *
 * Validation on open: header length inside the file and <= 100 MB, header valid UTF-8 JSON object,
 * every tensor entry {dtype, shape, data_offsets} with a known dtype, non-negative shape whose
 * element count × dtype size equals the byte range, ranges inside the data area and not overlapping,
 * no duplicate names, `__metadata__` a string→string map. Any violation: -1 with a message.
 */
#ifndef ZL_SAFETENSORS_H
#define ZL_SAFETENSORS_H
#include <stddef.h>
#include <stdint.h>
#include "../base/dtype.h"

#define ZL_MAX_DIMS 8

typedef struct {
    const char *name;
    zl_dtype dtype;
    int ndim;
    int64_t shape[ZL_MAX_DIMS];
    uint64_t nelem;
    const void *data; /* points into the mapped file */
    size_t nbytes;
    int shard;        /* index of the file within the set */
} zl_tensor_info;

typedef struct zl_st zl_st;

/* Opens a .safetensors file, a folder of shards (uses its *.index.json when there is one), or an
 * *.index.json. The error message names the file and the problem. */
int zl_st_open(const char *path, zl_st **out);
/* Parses a safetensors image held in memory (not copied: buf must outlive the set). For fuzzing and
 * tests. `label` names it in messages. */
int zl_st_open_buffer(const void *buf, size_t n, const char *label, zl_st **out);
void zl_st_close(zl_st *st);

int zl_st_count(const zl_st *st);
const zl_tensor_info *zl_st_tensor(const zl_st *st, int i); /* sorted by name */
const zl_tensor_info *zl_st_find(const zl_st *st, const char *name);
const char *zl_st_path(const zl_st *st);             /* what was opened */
int zl_st_nshards(const zl_st *st);
const char *zl_st_shard_path(const zl_st *st, int i);
uint64_t zl_st_total_bytes(const zl_st *st);         /* tensor bytes */

int zl_st_meta_count(const zl_st *st);
const char *zl_st_meta_key(const zl_st *st, int i);
const char *zl_st_meta_value(const zl_st *st, int i);
const char *zl_st_meta_get(const zl_st *st, const char *key); /* NULL if absent */

/* Reads a float tensor converted to f32 into a new buffer (NULL + error for non-float dtypes). */
float *zl_st_read_f32(const zl_st *st, const zl_tensor_info *t);

/* Writer. Tensors are written sorted by name with an 8-byte aligned header, atomically. */
typedef struct zl_st_writer zl_st_writer;
zl_st_writer *zl_stw_new(void);
void zl_stw_free(zl_st_writer *w);
void zl_stw_meta(zl_st_writer *w, const char *key, const char *value); /* replaces an existing key */
/* Adds raw data (copied). */
int zl_stw_add(zl_st_writer *w, const char *name, zl_dtype dt, int ndim, const int64_t *shape,
               const void *data);
/* Adds f32 data stored as `as` (F32, BF16 or F16), converted and copied. */
int zl_stw_add_f32(zl_st_writer *w, const char *name, int ndim, const int64_t *shape, const float *data,
                   zl_dtype as);
int zl_stw_count(const zl_st_writer *w);
int zl_stw_write(zl_st_writer *w, const char *path);

/* Streaming writer for files too big to hold in memory: declare every tensor up front (sorted by name),
 * then append their bytes in that order; zl_sts_end checks the byte count, fsyncs and renames (atomic).
 * On any error the temporary file is removed. */
typedef struct { const char *name; zl_dtype dtype; int ndim; const int64_t *shape; } zl_st_decl;
typedef struct { int fd; char *tmp, *path; uint64_t expect, written; } zl_st_stream;
int zl_sts_begin(zl_st_stream *s, const char *path, const zl_st_decl *d, int n, char *const *mk, char *const *mv, int nm);
int zl_sts_write(zl_st_stream *s, const void *data, size_t bytes);
int zl_sts_end(zl_st_stream *s);
void zl_sts_abort(zl_st_stream *s);

/* Writes a copy of `src` to `path` with every float tensor stored as `to` (F32, BF16 or F16; other
 * tensors copied), streaming: the header first, then each tensor converted in bounded chunks from the
 * mapped source, whose pages are released as they are consumed, so memory stays bounded whatever the
 * size. Metadata is carried plus `extra` key/value pairs (NULL-terminated list, may be NULL). Atomic. */
int zl_st_convert(const zl_st *src, const char *path, zl_dtype to, const char *const *extra);

#endif
