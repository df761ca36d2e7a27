#!/usr/bin/env python3
"""The Qwen3 text encoder in PyTorch on the CPU, the comparison point for `zlora debug te` in
bench/te.sh: the same checkpoint (an HF text_encoder/ folder: config.json, shards, index), the same
token ids, hidden_states[-2] (layers 0..L-2, no final norm), computed by tests/ref/qwen3_ref.py's
forward (the reference the C tests are checked against).

--dtype f32: weights widened to float32 at load (the bf16 values exactly), float32 compute: the same
             computation as zlora's default (bf16 weights widened in tiles, fp32 activations).
--dtype bf16: weights kept bf16, activations bf16 (norms and softmax in float32, as HF does): PyTorch's
             bf16 path (oneDNN matmuls), the counterpart of zlora's --bf16-gemm.

Only what hidden_states[-2] needs is loaded (the embedding and layers 0..L-2), read tensor by tensor with
pread (no mmap: the file's pages never count in this process's RSS).

usage: te_torch.py --model DIR --ids IDS.safetensors [--dtype f32|bf16] [--threads N] [--repeat N]
                   [--out OUT.safetensors]
  IDS: a file with an int32 tensor `ids` (zlora debug te's output), so both encode the same tokens.
  Prints one JSON line: load seconds, each encode's wall and CPU seconds, peak RSS (MB), threads, tokens.
"""
import argparse
import json
import os
import resource
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "ref"))
import qwen3_ref  # noqa: E402
import st  # noqa: E402


def folder(path):
    return os.path.join(path, "text_encoder") if os.path.isdir(os.path.join(path, "text_encoder")) else path


def load(path, dtype, names):
    """{name: torch tensor} for the given HF names (with the model. prefix) of the sharded checkpoint."""
    d = folder(path)
    idx = os.path.join(d, "model.safetensors.index.json")
    if os.path.exists(idx):
        with open(idx) as fh:
            where = json.load(fh)["weight_map"]
    else:
        where = {n: "model.safetensors" for n in names}
    out = {}
    for shard in sorted(set(where[n] for n in names)):
        with open(os.path.join(d, shard), "rb") as fh:
            hlen = int.from_bytes(fh.read(8), "little")
            header = json.loads(fh.read(hlen))
            base = 8 + hlen
            fd = fh.fileno()
            for n in names:
                if where[n] != shard:
                    continue
                e = header[n]
                b, en = e["data_offsets"]
                raw = os.pread(fd, en - b, base + b)
                if len(raw) != en - b:
                    raise IOError("%s: short read of %s" % (shard, n))
                if e["dtype"] == "BF16":
                    u = np.frombuffer(raw, dtype="<u2").reshape(e["shape"])
                    if dtype == torch.bfloat16:
                        t = torch.from_numpy(u.view(np.int16).copy()).view(torch.bfloat16)
                    else:
                        t = torch.from_numpy(st.bf16_bits_to_f32(u).reshape(e["shape"]))
                elif e["dtype"] == "F32":
                    t = torch.from_numpy(np.frombuffer(raw, dtype="<f4").reshape(e["shape"]).copy()).to(dtype)
                else:
                    raise ValueError("%s: dtype %s not handled here" % (n, e["dtype"]))
                del raw
                out[n] = t
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--ids", required=True)
    ap.add_argument("--dtype", choices=["f32", "bf16"], default="f32")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--out")
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    dt = torch.float32 if a.dtype == "f32" else torch.bfloat16
    with open(os.path.join(folder(a.model), "config.json")) as fh:
        cj = json.load(fh)
    c = dict(hidden=cj["hidden_size"], layers=cj["num_hidden_layers"], heads=cj["num_attention_heads"],
             kv_heads=cj["num_key_value_heads"], head_dim=cj.get("head_dim", cj["hidden_size"] // cj["num_attention_heads"]),
             ffn=cj["intermediate_size"], vocab=cj["vocab_size"], rope_theta=float(cj.get("rope_theta", 1e6)),
             eps=float(cj.get("rms_norm_eps", 1e-6)))
    ids = st.read(a.ids)[0]["ids"].astype(np.int64)
    qwen3_ref._import_torch()  # sets its own thread count: ours wins
    if a.threads:
        torch.set_num_threads(a.threads)
    run = c["layers"] - 1
    parts = ["input_layernorm", "post_attention_layernorm", "self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj",
             "self_attn.o_proj", "self_attn.q_norm", "self_attn.k_norm", "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"]
    names = ["model.embed_tokens.weight"] + ["model.layers.%d.%s.weight" % (i, p) for i in range(run) for p in parts]
    t0 = time.time()
    W = {k[len("model."):]: v for k, v in load(a.model, dt, names).items()}
    load_s = time.time() - t0
    times, cpu, y = [], [], None
    with torch.no_grad():
        for _ in range(a.repeat):
            t0, c0 = time.time(), time.process_time()
            y = qwen3_ref.forward_all(W, c, ids, layers=run)[-1]
            times.append(time.time() - t0)
            cpu.append(time.process_time() - c0)
    if a.out:
        st.write(a.out, {"cap": y.float().numpy()})
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    print(json.dumps({"impl": "torch", "dtype": a.dtype, "tokens": int(len(ids)), "threads": torch.get_num_threads(),
                      "load_s": round(load_s, 3), "encode_s": [round(t, 3) for t in times], "encode_cpu_s": [round(t, 3) for t in cpu], "peak_rss_mb": round(rss),
                      "torch": torch.__version__}))


if __name__ == "__main__":
    main()
