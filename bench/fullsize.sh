#!/bin/sh
# Full-size memory and speed check (not part of CI; needs ~40 GB of disk and ~15 minutes here):
#  1. writes a random 6.15B Z-Image transformer in the Turbo release's layout (fp32, 3 shards, 24.6 GB),
#  2. loads it converting to bf16 while streaming and runs one forward at 256x256 (peak RSS measured by
#     /usr/bin/time: the question is whether loading fp32 needs only about the bf16 size),
#  3. converts it once to a single bf16 file (convert-model) and runs 256x256 and 512x512 from that file
#     (pure mmap).
# usage: bench/fullsize.sh [DIR]      (default /tmp/zlora-fullsize; removed at the end unless KEEP=1)
set -e
cd "$(dirname "$0")/.."
D=${1:-/tmp/zlora-fullsize}
PY=${PYTHON:-/usr/bin/python3}
TIME=/usr/bin/time
[ -x "$TIME" ] || { echo "error: /usr/bin/time is missing (apt-get install time)"; exit 1; }
[ -x ./zlora ] || make -s zlora
mkdir -p "$D"
[ -f "$D/f32/transformer/diffusion_pytorch_model.safetensors.index.json" ] || \
  ./zlora debug random-dit "$D/f32" --dtype f32 --shards 3
"$PY" - "$D" <<'PYEOF'
import sys, numpy as np
sys.path.insert(0, "tests/ref")
import st
d = sys.argv[1]
rng = np.random.default_rng(0)
for side in (256, 512):
    h = side // 8
    st.write(f"{d}/in{side}.safetensors", {"x": rng.standard_normal((16, h, h)).astype(np.float32),
                                          "t": np.array([0.5], np.float32),
                                          "cap": rng.standard_normal((24, 2560)).astype(np.float32)})
PYEOF
run() { # label, then the command; prints seconds and peak RSS
  label=$1; shift
  "$TIME" -f "%e %M" -o "$D/time.txt" "$@" > "$D/log.txt" 2>&1 || { cat "$D/log.txt"; exit 1; }
  read -r secs kb < "$D/time.txt"
  printf '| %s | %s | %.1f |\n' "$label" "$secs" "$(echo "$kb / 1048576" | bc -l)"
}
echo "| step | seconds | peak RSS GB |"
echo "|---|---|---|"
sync; echo 3 > /proc/sys/vm/drop_caches 2>/dev/null || true
run "fp32 shards -> bf16 while loading + forward 256x256" ./zlora -q debug dit --model "$D/f32" --weights bf16 --in "$D/in256.safetensors" --out "$D/out.safetensors"
run "convert-model fp32 shards -> one bf16 file" ./zlora -q convert-model "$D/f32" "$D/bf16.safetensors"
sync; echo 3 > /proc/sys/vm/drop_caches 2>/dev/null || true
run "bf16 file (mmap) + forward 256x256" ./zlora -q debug dit --model "$D/bf16.safetensors" --in "$D/in256.safetensors" --out "$D/out.safetensors"
run "bf16 file (mmap) + forward 512x512, bf16 GEMM" ./zlora -q debug dit --bf16-gemm --model "$D/bf16.safetensors" --in "$D/in512.safetensors" --out "$D/out.safetensors"
[ "${KEEP:-0}" = 1 ] || rm -rf "$D"
