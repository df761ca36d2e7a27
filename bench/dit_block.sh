#!/bin/sh
# Runs `zlora bench dit-block` and the PyTorch block side by side (same machine, same thread count,
# same run) for each token count and dtype, and prints a Markdown table with the speed ratio.
# usage: bench/dit_block.sh [TOKENS...]      (default: 1024 4096)
set -e
cd "$(dirname "$0")/.."
PY=${PYTHON:-/usr/bin/python3}
TH=${THREADS:-$(nproc)}
IT=${ITERS:-3}
TOKS=${*:-"1024 4096"}
[ -x ./zlora ] || make -s zlora
echo "| tokens | dtype | zlora s | zlora GFLOP/s | zlora RSS MB | torch s | torch GFLOP/s | torch RSS MB | speed-up |"
echo "|---|---|---|---|---|---|---|---|---|"
for T in $TOKS; do
  for D in f32 bf16; do
    z=$(./zlora bench dit-block --tokens "$T" --dtype "$D" --iters "$IT" --threads "$TH" --json)
    t=$("$PY" bench/dit_block_torch.py --tokens "$T" --dtype "$D" --iters "$IT" --threads "$TH")
    "$PY" -c "import json,sys; z=json.loads(sys.argv[1]); t=json.loads(sys.argv[2]); print('| %d | %s | %.3f | %.0f | %d | %.3f | %.0f | %d | %.2fx |' % (z['tokens'], z['dtype'], z['seconds'], z['gflops'], z['peak_rss_mb'], t['seconds'], t['gflops'], t['peak_rss_mb'], t['seconds']/z['seconds']))" "$z" "$t"
  done
done
