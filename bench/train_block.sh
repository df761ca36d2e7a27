#!/bin/sh
# One full-size block's LoRA training step (forward + backward through frozen weights to rank-16 LoRA
# factors on q, k, v, out, w1, w2, w3): `zlora bench dit-block --backward` against PyTorch autograd on the
# same block (bench/train_block_torch.py), same machine, same thread count, same run. First checks on a
# small block that both compute the same gradients (relative L2 against a float64 reference), then prints
# a Markdown table per token count and dtype.
#
# zlora's step is the checkpointed one the trainer runs: forward, then zl_zblock_backward (recompute +
# backprop); "no recompute" is forward + backprop from kept activations (what autograd does). PyTorch runs
# plain autograd (keeps every activation, T x T attention probabilities included) and, with CKPT=1 (the
# default), torch.utils.checkpoint around the block (zlora's policy).
#
# usage: bench/train_block.sh [TOKENS...]     (default: 1024 4096)
#        ITERS=N (2), THREADS=N (nproc), DTYPES="bf16 f32", CKPT=0 skips the checkpointed PyTorch run,
#        CHECK=0 skips the gradient check
set -e
cd "$(dirname "$0")/.."
PY=${PYTHON:-/usr/bin/python3}
TH=${THREADS:-$(nproc)}
IT=${ITERS:-2}
TOKS=${*:-"1024 4096"}
DTYPES=${DTYPES:-"bf16 f32"}
[ -x ./zlora ] || make -s zlora
if [ "${CHECK:-1}" = 1 ]; then
  D=$(mktemp -d)
  echo "gradient check: a small block (dim 256, 2 heads of 128, FFN 640, 200 tokens, LoRA rank 16), rel. L2 against float64"
  echo "| implementation | compute | out | d input | d cond | LoRA grads, median | LoRA grads, worst |"
  echo "|---|---|---|---|---|---|---|"
  for M in bf16 exact f32; do
    case $M in bf16) A="--dtype bf16";; exact) A="--dtype bf16 --exact";; f32) A="--dtype f32";; esac
    ./zlora -q bench dit-block --backward --dim 256 --ffn 640 --tokens 200 $A --dump "$D/$M.safetensors"
    "$PY" bench/train_block_torch.py --check "$D/$M.safetensors" --threads "$TH" > "$D/$M.json"
    "$PY" - "$D/$M.json" "$M" <<'EOF'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
w = {"bf16": "bf16 weights, bf16 compute", "exact": "bf16 weights, fp32 compute", "f32": "f32 weights"}[sys.argv[2]]
for r in rows:
    if r["impl"] != "zlora" and sys.argv[2] != "f32":
        continue  # the PyTorch rows once, from the f32 dump (its weights are not rounded)
    what = "zlora, " + w if r["impl"] == "zlora" else "PyTorch (this bench's block), " + r["gemm"]
    print("| %s | %s | %.2g | %.2g | %.2g | %.2g | %.2g (%s) |" % (what, r["gemm"], r["y"], r["dx"], r["dcond"], r["lora_median"],
                                                          r["lora_max"], r["worst"].replace("grad.", "")))
EOF
  done
  rm -rf "$D"
  echo
fi
echo "| tokens | dtype | zlora step s (fwd + bwd) | fwd | recompute | backprop | zlora no-recompute s | zlora GFLOP/s | zlora RSS MB | torch autograd s | fwd | bwd | torch RSS MB | torch checkpoint s | torch ckpt RSS MB | speed-up vs autograd | like for like |"
echo "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
for T in $TOKS; do
  for DT in $DTYPES; do
    z=$(./zlora -q bench dit-block --backward --tokens "$T" --dtype "$DT" --iters "$IT" --threads "$TH" --json)
    t=$("$PY" bench/train_block_torch.py --tokens "$T" --dtype "$DT" --iters "$IT" --threads "$TH")
    c='{}'
    [ "${CKPT:-1}" = 1 ] && c=$("$PY" bench/train_block_torch.py --tokens "$T" --dtype "$DT" --iters "$IT" --threads "$TH" --checkpoint)
    "$PY" - "$z" "$t" "$c" <<'EOF'
import json, sys
z, t, c = (json.loads(a) for a in sys.argv[1:4])
cs = "%.2f" % c["seconds"] if c else "-"
cr = "%d" % c["peak_rss_mb"] if c else "-"
# like for like: zlora without recompute vs autograd; zlora's checkpointed step vs torch's checkpointed one
lfl = "%.2fx / %.2fx" % (t["seconds"] / z["no_recompute_s"], c["seconds"] / z["seconds"]) if c else "%.2fx / -" % (t["seconds"] / z["no_recompute_s"])
print("| %d | %s | %.2f | %.2f | %.2f | %.2f | %.2f | %.0f | %d | %.2f | %.2f | %.2f | %d | %s | %s | %.2fx | %s |" % (
    z["tokens"], z["dtype"], z["seconds"], z["forward_s"], z["recompute_s"], z["backprop_s"], z["no_recompute_s"], z["gflops"],
    z["peak_rss_mb"], t["seconds"], t["forward_s"], t["backward_s"], t["peak_rss_mb"], cs, cr, t["seconds"] / z["seconds"], lfl))
EOF
  done
done
echo "(speed-up vs autograd: torch autograd s / zlora step s; like for like: autograd / zlora no-recompute, torch checkpoint / zlora step)"
