#!/usr/bin/env python3
"""make_images.py — writes the tiny PNG test images of tests/test_image.c and their expected pixels.

  /usr/bin/python3 tests/data/images/make_images.py        # rewrites everything in this folder

PNGs are written here with numpy + zlib only (an encoder independent of libpng): every colour type and
bit depth the reader must handle, sub-byte packing, palette transparency, Adam7 interlacing and the three
text chunk kinds. expected.safetensors holds, per image, the RGB float32 [h, w, 3] the reader must
return (samples / (2^depth − 1), alpha composited on white: rgb·a + 1·(1 − a), in float32 as the C code
computes it). resize.safetensors holds Pillow's float ("F" mode) resampling of rgb16.png, channel by
channel, as goldens for zl_image_resize / zl_image_resize_box / zl_image_fit (Pillow's algorithm is the
reference for the filter definitions and the pixel-centre convention).
"""
import os
import struct
import sys
import zlib

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "ref"))
import st  # noqa: E402


def chunk(kind, data):
    c = struct.pack(">I", len(data)) + kind + data
    return c + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def pack_rows(samples, depth):
    """samples [h, w*spp] ints -> list of row byte strings at `depth` bits per sample (big-endian)."""
    rows = []
    for r in samples:
        if depth == 16:
            rows.append(b"".join(struct.pack(">H", int(v)) for v in r))
        elif depth == 8:
            rows.append(bytes(int(v) for v in r))
        else:
            per = 8 // depth
            out = bytearray()
            for i in range(0, len(r), per):
                b = 0
                for j in range(per):
                    v = int(r[i + j]) if i + j < len(r) else 0
                    b |= v << (8 - depth * (j + 1))
                out.append(b)
            rows.append(bytes(out))
    return rows


ADAM7 = [(0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2)]


def png(path, samples, spp, depth, ctype, plte=None, trns=None, interlace=False, texts=()):
    """samples: int array [h, w, spp]."""
    h, w = samples.shape[:2]
    raw = b""
    if interlace:
        for x0, y0, dx, dy in ADAM7:
            sub = samples[y0::dy, x0::dx]
            if sub.size == 0:
                continue
            for r in pack_rows(sub.reshape(sub.shape[0], -1), depth):
                raw += b"\x00" + r
    else:
        for r in pack_rows(samples.reshape(h, -1), depth):
            raw += b"\x00" + r
    out = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, depth, ctype, 0, 0, 1 if interlace else 0))
    if plte is not None:
        out += chunk(b"PLTE", bytes(int(v) for v in np.asarray(plte).ravel()))
    if trns is not None:
        out += chunk(b"tRNS", trns)
    for kind, key, val in texts:
        if kind == "tEXt":
            out += chunk(b"tEXt", key.encode("latin-1") + b"\x00" + val.encode("latin-1"))
        elif kind == "zTXt":
            out += chunk(b"zTXt", key.encode("latin-1") + b"\x00\x00" + zlib.compress(val.encode("latin-1")))
        else:
            out += chunk(b"iTXt", key.encode("latin-1") + b"\x00\x00\x00\x00\x00" + val.encode("utf-8"))
    comp = zlib.compress(raw, 9)
    out += chunk(b"IDAT", comp[: len(comp) // 2]) + chunk(b"IDAT", comp[len(comp) // 2:])  # two IDATs
    out += chunk(b"IEND", b"")
    with open(path, "wb") as fh:
        fh.write(out)


def f32(a):
    return np.asarray(a, dtype=np.float32)


def composite(rgb, a):
    """rgb·a + 1·(1 − a) in float32, in the C code's order."""
    return f32(f32(rgb) * f32(a)[..., None] + f32(1.0) * (f32(1.0) - f32(a))[..., None])


def main():
    rs = np.random.RandomState(1234)  # pixel values only; the expected file is written alongside
    exp = {}

    g8 = rs.randint(0, 256, (4, 5, 1))
    png(os.path.join(HERE, "gray8.png"), g8, 1, 8, 0)
    exp["gray8"] = np.repeat(f32(g8) / f32(255), 3, axis=2)

    g16 = rs.randint(0, 65536, (3, 6, 1))
    png(os.path.join(HERE, "gray16.png"), g16, 1, 16, 0)
    exp["gray16"] = np.repeat(f32(g16) / f32(65535), 3, axis=2)

    g1 = rs.randint(0, 2, (5, 11, 1))
    png(os.path.join(HERE, "gray1.png"), g1, 1, 1, 0)
    exp["gray1"] = np.repeat(f32(g1 * 255) / f32(255), 3, axis=2)

    ga = rs.randint(0, 256, (4, 3, 2))
    ga[0, 0, 1] = 0
    ga[0, 1, 1] = 255
    png(os.path.join(HERE, "ga8.png"), ga, 2, 8, 4)
    v, a = f32(ga[..., 0]) / f32(255), f32(ga[..., 1]) / f32(255)
    exp["ga8"] = composite(np.repeat(v[..., None], 3, axis=2), a)

    rgba = rs.randint(0, 65536, (3, 4, 4))
    png(os.path.join(HERE, "rgba16.png"), rgba, 4, 16, 6)
    exp["rgba16"] = composite(f32(rgba[..., :3]) / f32(65535), f32(rgba[..., 3]) / f32(65535))

    pal = rs.randint(0, 256, (11, 3))
    alpha = bytes([255, 0, 128, 37])  # entries 0-3 transparent-ish, the rest opaque
    idx = rs.randint(0, 11, (5, 7, 1))
    png(os.path.join(HERE, "pal4_trns.png"), idx, 1, 4, 3, plte=pal, trns=alpha)
    al = np.array([alpha[i] if i < len(alpha) else 255 for i in range(11)])
    exp["pal4_trns"] = composite(f32(pal[idx[..., 0]]) / f32(255), f32(al[idx[..., 0]]) / f32(255))

    rgb = rs.randint(0, 256, (9, 10, 3))
    texts = [("tEXt", "parameters", "a photo of a cat\nNegative prompt: blurry\nSteps: 8, Sampler: Euler, CFG scale: 1, Seed: 42"),
             ("zTXt", "comment", "compressed text " * 4),
             ("iTXt", "Title", "caf\u00e9 \u732b")]
    png(os.path.join(HERE, "rgb8_adam7_text.png"), rgb, 3, 8, 2, interlace=True, texts=texts)
    exp["rgb8_adam7_text"] = f32(rgb) / f32(255)

    # the resize source: 16-bit RGB 16x12 with smooth structure and an edge
    yy, xx = np.meshgrid(np.arange(12), np.arange(16), indexing="ij")
    src = np.stack([(xx * 4000 + yy * 1000) % 65536, (np.sin(xx * 0.7) * 30000 + 32768),
                    np.where(xx + yy > 12, 60000, 3000) + rs.randint(0, 2000, (12, 16))], axis=2).astype(np.int64)
    png(os.path.join(HERE, "rgb16.png"), src, 3, 16, 2)
    exp["rgb16"] = f32(src) / f32(65535)

    st.write(os.path.join(HERE, "expected.safetensors"), {k: f32(v) for k, v in exp.items()})

    try:
        from PIL import Image
    except ImportError:
        print("no Pillow: resize goldens not rewritten")
        return
    chans = [Image.fromarray(exp["rgb16"][..., c], mode="F") for c in range(3)]
    L, A, B = Image.LANCZOS, Image.BOX, Image.BILINEAR
    cases = {  # name: (size, filter, box)
        "lanczos_7x5": ((7, 5), L, None),        # downscale (antialiased)
        "lanczos_37x29": ((37, 29), L, None),    # upscale
        "area_8x6": ((8, 6), A, None),           # exact 2x2 means
        "area_5x7": ((5, 7), A, None),           # non-integer factors, aspect change
        "bilinear_9x9": ((9, 9), B, None),
        "lanczos_box": ((6, 6), L, (2.5, 1.0, 14.5, 11.0)),   # a fractional crop box
        "fit_8x8": ((8, 8), L, (2.0, 0.0, 14.0, 12.0)),       # zl_image_fit(16x12 -> 8x8): centred 12x12
        "fit_10x4": ((10, 4), L, (0.0, 2.8, 16.0, 9.2)),      # 16x12 -> 10x4: scale 0.625, box 16x6.4
    }
    res = {}
    for n, (size, flt, box) in cases.items():
        res[n] = np.stack([np.asarray(ch.resize(size, flt, box=box), dtype=np.float32) for ch in chans], axis=2)
    st.write(os.path.join(HERE, "resize.safetensors"), res)
    print("wrote", HERE)


if __name__ == "__main__":
    main()
