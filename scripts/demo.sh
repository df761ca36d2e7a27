#!/bin/sh
# make demo — the seed experiment on the nano Z-Image family (models/nano), on the CPU in a few minutes:
# a character LoRA (the made-up "zxq", 8 images) trained by the three routes,
#   base           on nano-base, used on nano-turbo
#   turbo-adapter  on nano-turbo with the de-distill training adapter merged while training
#   turbo-direct   on nano-turbo plainly (the control)
# then every LoRA on nano-turbo at Turbo settings (8 steps, no CFG) and at 30 steps with CFG 2 (the slow
# reference compare's turbo-check uses), and turbo-direct with
# the DistillPatch LoRA at 8 steps, through `zlora compare`: out/demo/report.html, summary.json, grids.
# Environment: DEMO_OUT (default out/demo), DEMO_STEPS (LoRA steps, default 600), DEMO_SEEDS (1-4), ZLORA.
set -e
cd "$(dirname "$0")/.."
Z=${ZLORA:-./zlora}
M=models/nano
O=${DEMO_OUT:-out/demo}
STEPS=${DEMO_STEPS:-600}
SEEDS=${DEMO_SEEDS:-1-4}
for f in $M/base/transformer/config.json $M/turbo/transformer/config.json $M/adapter.safetensors $M/patch.safetensors; do
    [ -f "$f" ] || { echo "demo: $f is missing (the nano family: models/nano/README.md)" >&2; exit 1; }
done
rm -rf "$O"
mkdir -p "$O"
t0=$(date +%s)
say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

# the same LoRA settings for every route; only the model (and the adapter) differ
TRAIN="$Z train --data $M/data_zxq --trigger zxq --resolution 64 --rank 8 --lr 1e-3 --schedule cosine --warmup 20
       --batch 4 --steps $STEPS --sigma logit-normal --seed 7 --save-every 0 --sample-every 0 --name zxq --cache $O/cache"
say "1/4 route base: the LoRA trained on nano-base"
$TRAIN --route base --model $M/base --out "$O/base"
say "2/4 route turbo-adapter: on nano-turbo with the training adapter at +1 (removed afterwards, never saved)"
$TRAIN --route turbo-adapter --model $M/turbo --adapter $M/adapter.safetensors --out "$O/turbo-adapter"
say "3/4 route turbo-direct: on nano-turbo plainly"
$TRAIN --route turbo-direct --model $M/turbo --out "$O/turbo-direct"

cat > "$O/prompts.txt" <<EOF
# trigger prompts (places and backgrounds the 8 training images do not have)
a photo of [trigger] in the centre on a blue background
a photo of [trigger] at the top right on a yellow background
# other prompts: the LoRA should leave these alone
a large red circle in the centre on a white background
a photo of a small green star at the bottom left on a purple background
EOF
B="$O/base/zxq.safetensors" A="$O/turbo-adapter/zxq.safetensors" D="$O/turbo-direct/zxq.safetensors" P=$M/patch.safetensors
cat > "$O/configs.json" <<EOF
[
  {"name": "no LoRA"},
  {"name": "no LoRA @30", "steps": 30, "cfg": 2},
  {"name": "base", "loras": ["$B"], "sharpness_vs": "base @30"},
  {"name": "base @30", "loras": ["$B"], "steps": 30, "cfg": 2},
  {"name": "turbo-adapter", "loras": ["$A"], "sharpness_vs": "turbo-adapter @30"},
  {"name": "turbo-adapter @30", "loras": ["$A"], "steps": 30, "cfg": 2},
  {"name": "turbo-direct", "loras": ["$D"], "sharpness_vs": "turbo-direct @30"},
  {"name": "turbo-direct @30", "loras": ["$D"], "steps": 30, "cfg": 2},
  {"name": "turbo-direct+distillpatch", "loras": ["$D", "$P"], "sharpness_vs": "turbo-direct @30"}
]
EOF
say "4/4 compare on nano-turbo: 8 steps (Turbo settings) and 30 steps with CFG 2, seeds $SEEDS"
$Z compare --model $M/turbo --config "$O/configs.json" --prompts "$O/prompts.txt" --seeds "$SEEDS" --trigger zxq \
    -W 64 -H 64 --grid-cell 128 --cache "$O/cache" -o "$O"

say "summary (sharp_ratio = sharpness at 8 steps / at 30 steps CFG 2; effect = difference from no LoRA on the trigger prompts)"
printf '%-28s %11s %8s %13s\n' route sharp_ratio effect effect_other
TAB=$(printf '\t')
for r in base turbo-adapter turbo-direct turbo-direct+distillpatch; do
    # summary.json is cJSON's pretty print: one <TAB>"key":<TAB>value per line inside each configuration
    sed -n "/^$TAB\"$r\":$TAB{/,/^$TAB}/p" "$O/summary.json" | tr -d '\t,"' |
        awk -v r="$r" -F: '$1 == "sharp_ratio" {s=$2} $1 == "effect" {e=$2} $1 == "effect_other" {o=$2}
            END { printf "%-28s %11.3f %8.4f %13.4f\n", r, s, e, o }'
done
echo
echo "report: $O/report.html   numbers: $O/summary.json, $O/metrics.json   ($(( $(date +%s) - t0 )) s in all)"
