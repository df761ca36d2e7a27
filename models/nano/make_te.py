#!/usr/bin/env python3
"""make_te.py — the nano Qwen3 text encoder: random and frozen, HF layout, deterministic.

Usage:
  /usr/bin/python3 models/nano/make_te.py [--out models/nano/text_encoder] [--tokenizer models/nano/tokenizer]
      numpy only: writes config.json + model.safetensors (BF16, HF names with the `model.` prefix, tied
      embeddings so no lm_head, like Qwen3-4B). The vocabulary is the nano tokenizer's size.
  /usr/bin/python3 models/nano/make_te.py --golden tests/data/nano
      (needs torch) also writes the reference features of the first prompts of tests/data/nano/prompts.json
      (ids from expected_template.json, the JS reference's) as te_case{i}.safetensors: ids [n] and cap
      [n, hidden] = hidden_states[-2], from tests/ref/qwen3_ref.py's float32 forward on the BF16 weights.

The weights are tests/ref/qwen3_ref.py's generator (splitmix64 keyed by name, Irwin-Hall normals: linears
N(0, 1/fan_in), norms N(1, 0.1^2), embedding N(0, 1)) under the key "qwen3/nano/", so the file is
byte-identical on every machine. Qwen3 architecture, small: hidden 64, 3 layers (hidden_states[-2] runs
the first 2), 4 query heads and 2 kv heads (GQA) of 16, SwiGLU 192, rope_theta 1e6, eps 1e-6.
"""
import argparse
import json
import os
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.join(HERE, "..", "..")
sys.path.insert(0, os.path.join(ROOT, "tests", "ref"))
import qwen3_ref  # noqa: E402
import st  # noqa: E402

CONFIG = dict(name="nano", hidden=64, layers=3, heads=4, kv_heads=2, head_dim=16, ffn=192, rope_theta=1000000.0,
              eps=1e-6)


def vocab_size(tokdir):
    t = json.load(open(os.path.join(tokdir, "tokenizer.json"), encoding="utf-8"))
    ids = list(t["model"]["vocab"].values()) + [a["id"] for a in t["added_tokens"]]
    return max(ids) + 1


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.path.join(HERE, "text_encoder"))
    ap.add_argument("--tokenizer", default=os.path.join(HERE, "tokenizer"))
    ap.add_argument("--golden", help="folder with prompts.json and expected_template.json (needs torch)")
    ap.add_argument("--cases", type=int, default=3)
    args = ap.parse_args()
    c = dict(CONFIG, vocab=vocab_size(args.tokenizer))
    W = qwen3_ref.gen_weights(c)
    Wb = {k: st.round_bf16(v) for k, v in W.items()}   # what the file holds
    cfg = qwen3_ref.hf_config(c)
    cfg.update(tie_word_embeddings=True, torch_dtype="bfloat16", max_position_embeddings=4096)
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "config.json"), "w") as fh:
        json.dump(cfg, fh, indent=2, sort_keys=True)
        fh.write("\n")
    st.write(os.path.join(args.out, "model.safetensors"), {"model." + k: (v, "BF16") for k, v in W.items()},
             {"format": "pt", "note": "zlora nano Qwen3 encoder: random, frozen (models/nano/make_te.py)"})
    n = sum(v.size for v in W.values())
    print("%s: %d parameters (vocab %d, hidden %d, %d layers), BF16" % (args.out, n, c["vocab"], c["hidden"], c["layers"]))
    if not args.golden:
        return
    qwen3_ref._import_torch()
    prompts = json.load(open(os.path.join(args.golden, "prompts.json"), encoding="utf-8"))
    ids_all = json.load(open(os.path.join(args.golden, "expected_template.json"), encoding="utf-8"))
    for i in range(args.cases):
        ids = np.asarray(ids_all[i], dtype=np.int32)
        cap = qwen3_ref.forward(Wb, c, ids)
        ref64 = qwen3_ref.forward_np64(Wb, c, ids)
        r = qwen3_ref.rel(cap, ref64)
        assert r < 1e-5, r
        st.write(os.path.join(args.golden, "te_case%d.safetensors" % i), {"ids": ids, "cap": cap},
                 {"prompt": prompts[i]})
        print("te_case%d: %d tokens, std %.3f, float64 check %.1e  (%s)" % (i, len(ids), cap.std(), r, prompts[i]))


if __name__ == "__main__":
    main()
