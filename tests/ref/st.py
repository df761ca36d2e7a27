#!/usr/bin/env python3
"""st.py — minimal safetensors reader/writer for the reference scripts (python3 + numpy only).

Format: 8-byte little-endian header length N, then N bytes of JSON, then the raw data.
The JSON maps tensor name -> {"dtype", "shape", "data_offsets": [begin, end]} (offsets relative to the
start of the data area) plus an optional "__metadata__" object of string -> string.

Writer conventions (deterministic output, byte-identical across runs):
  * "__metadata__" first, then tensor entries with keys sorted by name, compact JSON;
  * header padded with spaces to a multiple of 8, so the data area starts 8-aligned;
  * data laid out by (item size descending, name), like the Rust writer, so every tensor is aligned
    to its own item size even in mixed-dtype files;
  * 0-dim tensors (shape []) are allowed (kohya `.alpha`).

Dtypes: F64 F32 F16 BF16 I64 I32 I16 I8 U8 BOOL. BF16 is stored as uint16 bits; f32 -> bf16 rounds to
nearest, ties to even (NaN stays NaN).

API
  write(path, tensors, metadata=None)   tensors: {name: array} (stored F32 unless the array is another
                                         supported numpy dtype) or {name: (array, "BF16"|"F16"|"F32"|...)}
  read(path) -> (tensors, metadata)      tensors: {name: np.ndarray}, F16/BF16 widened to float32
  read_raw(path) -> (header, data_bytes) header without "__metadata__" removed
  round_bf16(a) -> float32 array of the bf16-rounded values;  f32_to_bf16_bits / bf16_bits_to_f32
  round_f16(a)  -> float32 array of the f16-rounded values
"""
import hashlib
import json
import os
import struct
import sys

import numpy as np

_NP = {  # safetensors dtype -> (numpy storage dtype, item size)
    "F64": ("<f8", 8), "F32": ("<f4", 4), "F16": ("<f2", 2), "BF16": ("<u2", 2),
    "I64": ("<i8", 8), "I32": ("<i4", 4), "I16": ("<i2", 2), "I8": ("i1", 1), "U8": ("u1", 1),
    "BOOL": ("?", 1),
}
_FROM_NP = {np.dtype(np.float64): "F64", np.dtype(np.float32): "F32", np.dtype(np.float16): "F16",
            np.dtype(np.int64): "I64", np.dtype(np.int32): "I32", np.dtype(np.int16): "I16",
            np.dtype(np.int8): "I8", np.dtype(np.uint8): "U8", np.dtype(np.bool_): "BOOL"}


def f32_to_bf16_bits(a):
    """float32 -> bf16 bits (uint16), round to nearest, ties to even; NaN -> quiet NaN."""
    a = np.ascontiguousarray(np.asarray(a, dtype=np.float32))
    u = a.view(np.uint32).astype(np.uint64)
    r = ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16)
    r[np.isnan(a)] = 0x7FC0
    return r


def bf16_bits_to_f32(b):
    b = np.ascontiguousarray(np.asarray(b, dtype=np.uint16))
    return (b.astype(np.uint32) << 16).view(np.float32)


def round_bf16(a):
    a = np.asarray(a, dtype=np.float32)
    return bf16_bits_to_f32(f32_to_bf16_bits(a)).reshape(a.shape)


def round_f16(a):
    return np.asarray(a, dtype=np.float32).astype(np.float16).astype(np.float32)


def _encode(arr, dt):
    """(dtype_str, shape, bytes) for one tensor."""
    if dt not in _NP:
        raise ValueError("unsupported dtype " + str(dt))
    arr = np.asarray(arr)
    shape = [int(s) for s in arr.shape]
    if dt == "BF16":
        data = f32_to_bf16_bits(arr.astype(np.float32)).astype("<u2").tobytes()
    else:
        data = np.ascontiguousarray(arr.astype(_NP[dt][0])).tobytes()
    return dt, shape, data


def write(path, tensors, metadata=None):
    enc = {}
    for name, v in tensors.items():
        if name == "__metadata__":
            raise ValueError("reserved name")
        if isinstance(v, tuple):
            arr, dt = v
        else:
            arr = np.asarray(v)
            dt = _FROM_NP.get(arr.dtype, "F32")
        enc[name] = _encode(arr, dt)
    # data order: item size descending, then name (keeps every tensor aligned to its item size)
    order = sorted(enc, key=lambda n: (-_NP[enc[n][0]][1], n))
    offs, off = {}, 0
    for n in order:
        ln = len(enc[n][2])
        offs[n] = (off, off + ln)
        off += ln
    parts = []
    if metadata is not None:
        parts.append(json.dumps("__metadata__") + ":" +
                     json.dumps({str(k): str(v) for k, v in sorted(metadata.items())},
                                separators=(",", ":"), ensure_ascii=True))
    for n in sorted(enc):
        dt, shape, _ = enc[n]
        parts.append(json.dumps(n, ensure_ascii=True) + ":" +
                     json.dumps({"dtype": dt, "shape": shape, "data_offsets": list(offs[n])},
                                separators=(",", ":")))
    h = ("{" + ",".join(parts) + "}").encode("utf-8")
    h += b" " * ((-len(h)) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for n in order:
            f.write(enc[n][2])
    return off + 8 + len(h)


def read_raw(path):
    with open(path, "rb") as f:
        buf = f.read()
    (n,) = struct.unpack("<Q", buf[:8])
    header = json.loads(buf[8:8 + n].decode("utf-8"))
    return header, buf[8 + n:]


def read(path):
    header, data = read_raw(path)
    meta = header.pop("__metadata__", None)
    out = {}
    for name, e in header.items():
        dt = e["dtype"]
        b, en = e["data_offsets"]
        npdt, isz = _NP[dt]
        count = int(np.prod(e["shape"], dtype=np.int64)) if e["shape"] else 1
        if en - b != count * isz or en > len(data):
            raise ValueError("bad offsets for " + name)
        raw = np.frombuffer(data[b:en], dtype=npdt)
        if dt == "BF16":
            arr = bf16_bits_to_f32(raw)
        elif dt == "F16":
            arr = raw.astype(np.float32)
        else:
            arr = raw.copy()
        out[name] = arr.reshape(e["shape"])
    return out, meta


def dtypes(path):
    """{name: dtype string} of a file."""
    header, _ = read_raw(path)
    header.pop("__metadata__", None)
    return {k: v["dtype"] for k, v in header.items()}


if __name__ == "__main__":
    import sys
    for p in sys.argv[1:]:
        h, _ = read_raw(p)
        m = h.pop("__metadata__", None)
        print(p, "metadata:", m)
        for k in sorted(h):
            print("  %-70s %-5s %s" % (k, h[k]["dtype"], h[k]["shape"]))


# ----------------------------------------------------------------------------------------------------
# weights.sha256: the manifest of generated (git-ignored) weight files that the goldens were made from


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for blk in iter(lambda: fh.read(1 << 20), b""):
            h.update(blk)
    return h.hexdigest()


def manifest_lines(out, configs, weight_files):
    """`sha256sum -c` lines for weight_files(config) of every config, paths relative to out."""
    return ["%s  %s" % (sha256(os.path.join(out, cn, rel)), cn + "/" + rel) for cn in configs for rel in weight_files(cn)]


def sync_manifest(out, lines, weights_only, label="weights"):
    """--weights-only: check the regenerated files against out/weights.sha256 (exit on a mismatch) and
    return True; otherwise write the manifest and return False (the caller goes on to the goldens)."""
    manifest = os.path.join(out, "weights.sha256")
    if weights_only:
        if os.path.exists(manifest):
            with open(manifest) as fh:
                want = [w for w in fh.read().split("\n") if w]
            if want != lines:
                sys.exit("weights differ from %s: goldens were made from other weights" % manifest)
            print(label, "regenerated and match", manifest)
        else:
            print(label, "regenerated (no manifest to check against)")
        return True
    with open(manifest, "w") as fh:
        fh.write("\n".join(lines) + "\n")
    return False
