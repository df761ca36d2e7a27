"""Deterministic random numbers for the reference scripts: splitmix64 over a counter, keyed by FNV-1a of
a string. Integer and exact float64 arithmetic only (no numpy/torch RNG, no transcendental functions for
uniforms), so generated weight files are byte-identical on every machine. Shared by zimage_ref.py,
qwen3_ref.py and vae_ref.py: changing it changes every tiny model (their weights.sha256 will say so)."""
import math

import numpy as np


def _fnv1a(s):
    h = 0xCBF29CE484222325
    for b in s.encode("utf-8"):
        h = ((h ^ b) * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return h


def _u64(key, n):
    z = np.uint64(_fnv1a(key)) + np.arange(1, n + 1, dtype=np.uint64) * np.uint64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def uniform(key, shape):
    """[0,1) doubles, multiples of 2^-24 (exact)."""
    n = int(np.prod(shape)) if len(shape) else 1
    return ((_u64(key, n) >> np.uint64(40)).astype(np.float64) * (2.0 ** -24)).reshape(shape)


def randn(key, shape, std=1.0, mean=0.0):
    """Zero-mean unit-variance Irwin-Hall(4) values (sum of 4 uniforms, exact in f64), as float32."""
    n = int(np.prod(shape)) if len(shape) else 1
    u = uniform(key, (n, 4)).sum(axis=1) - 2.0
    v = u * math.sqrt(3.0)
    return (v * std + mean).astype(np.float32).reshape(shape)
