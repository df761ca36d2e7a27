#!/bin/sh
# Measured `zlora train` step time on the tiny test model (DiT tiny_a: dim 256, 2 heads, 2 layers, 1 refiner
# pair; the test Qwen3 and VAE only fill the caches), next to the time the block benchmark predicts for
# the same blocks: the check that a training step is its blocks' forward + backward and little else
# (optimizer, data, loss), which is what the 6B projection in docs/PERFORMANCE.md assumes.
# Needs the test weights (make test-plain builds them). A few seconds to a minute.
# usage: bench/train_tiny.sh [RESOLUTIONS]     (default "64 256"; STEPS=N (60), THREADS=N (1: the
#        trainer's own choice for models narrower than 1024), KEEP=1 keeps the temporary folder)
set -e
cd "$(dirname "$0")/.."
PY=${PYTHON:-/usr/bin/python3}
RES=${*:-"64 256"}
STEPS=${STEPS:-60}
TH=${THREADS:-1}
[ -x ./zlora ] || make -s zlora
[ -f tests/data/zimage/tiny_a/diffusers/transformer/config.json ] || { echo "error: run 'make test-plain' first (test weights)"; exit 1; }
D=$(mktemp -d /tmp/zlora-train-tiny.XXXXXX)
M=$D/model
mkdir -p "$M/scheduler" "$D/data"
ln -s "$PWD/tests/data/zimage/tiny_a/diffusers/transformer" "$M/transformer"
ln -s "$PWD/tests/data/qwen3/tiny_a/text_encoder" "$M/text_encoder"
ln -s "$PWD/tests/data/tokenizer/tiny" "$M/tokenizer"
ln -s "$PWD/tests/data/vae/tiny_a/diffusers/vae" "$M/vae"
echo '{"_class_name": "FlowMatchEulerDiscreteScheduler", "num_train_timesteps": 1000, "use_dynamic_shifting": false, "shift": 3.0}' > "$M/scheduler/scheduler_config.json"
echo '{"_class_name": "ZImagePipeline"}' > "$M/model_index.json"
"$PY" - "$D/data" <<'EOF'
import sys
from PIL import Image, ImageDraw
for i in range(4):
    im = Image.new("RGB", (512, 512), (40, 60 + 30 * i, 90))
    ImageDraw.Draw(im).rectangle([60 + 40 * i, 80, 300 + 40 * i, 400], fill=(220, 40, 50))
    im.save("%s/img%d.png" % (sys.argv[1], i))
    open("%s/img%d.txt" % (sys.argv[1], i), "w").write("[trigger] box on a plain background" if i % 2 else "a red box, studio photo")
EOF
echo "| resolution | image tokens | threads | steps | measured s/step | block bench: 2 layers fwd+bwd + refiners fwd (s) |"
echo "|---|---|---|---|---|---|"
for R in $RES; do
  ./zlora -q --threads "$TH" train --model "$M" --data "$D/data" --out "$D/run$R" --route base --trigger zxq --resolution "$R" \
      --rank 16 --steps "$STEPS" --sample-every 0 --save-every 0 --cache "$D/cache" > "$D/log$R.txt" 2>&1 || { cat "$D/log$R.txt"; exit 1; }
  # seconds since the start, per step: the step time is the slope after the first step (which includes setup)
  per=$(awk -F, 'NR == 2 { s1 = $6; n1 = $1 } NR > 2 { s = $6; n = $1 } END { printf "%.4f", (s - s1) / (n - n1) }' "$D/run$R/loss.csv")
  # the blocks the trainer visits at this size: main layers over image + caption tokens (forward + backward),
  # refiners forward only (LoRA on the main layers); caption length from the log's caption features
  # image tokens: (R / (VAE factor · patch 2))²; the tiny VAE has 2 levels (factor 2, not 8)
  FAC=$("$PY" -c "import json; print(2 ** (len(json.load(open('tests/data/vae/tiny_a/diffusers/vae/config.json'))['block_out_channels']) - 1))")
  T=$(( (R / (FAC * 2)) * (R / (FAC * 2)) ))
  Tp=$(( (T + 31) / 32 * 32 ))
  N=$(( Tp + 32 )) # a short caption pads to 32 tokens
  z=$(./zlora -q --threads "$TH" bench dit-block --backward --dim 256 --ffn 682 --dtype bf16 --exact --tokens "$N" --iters 5 --threads "$TH" --json)
  f=$(./zlora -q --threads "$TH" bench dit-block --dim 256 --ffn 682 --dtype bf16 --exact --tokens "$Tp" --iters 5 --threads "$TH" --json)
  "$PY" - "$R" "$T" "$TH" "$STEPS" "$per" "$z" "$f" <<'EOF'
import json, sys
R, T, th, steps, per = sys.argv[1:6]
z, f = json.loads(sys.argv[6]), json.loads(sys.argv[7])
# 2 main layers: forward + backward each (checkpointed step); 1 noise refiner forward on the image tokens
# (the caption refiner's 32 tokens are negligible)
pred = 2 * z["seconds"] + f["seconds"]
print("| %s | %s | %s | %s | %.4f | %.4f |" % (R, T, th, steps, float(per), pred))
EOF
done
[ "$KEEP" = 1 ] && echo "kept $D" || rm -rf "$D"
