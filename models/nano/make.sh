#!/bin/sh
# models/nano/make.sh — remakes the nano Z-Image family (issue 9) from nothing: the procedural data, the
# tokenizer, the text encoder, the VAE and the test goldens; later the DiTs (TODO hooks below).
#
#   sh models/nano/make.sh [STEP ...]      (from anywhere; `make nano-models` runs every step)
#
# Steps, in order (default: all):
#   data       build/nano/data (N training scenes, seed 0), build/nano/heldout (64, seed 1),
#              build/nano/wide{,_heldout} (the VAE's extra scenes: N, seed 0; 64, seed 1),
#              build/nano/prompts{,_zxq} (seed 12345); models/nano/data_zxq (the character set, committed)
#   tokenizer  models/nano/tokenizer/ learned from build/nano/data's captions          (Python, < 1 s)
#   te         models/nano/text_encoder/ (random, frozen, deterministic)               (numpy, 1 s)
#   goldens    tests/data/nano: JS tokenizer ids (needs node + `make deps`), the text encoder's and
#              the VAE's reference outputs (need python3-torch)
#   vae        models/nano/vae/ trained by models/nano/train_vae.py in three phases + its goldens
#              (torch, one CPU thread: about 2 h 20 min on a busy 2-core machine)
#   dit        TODO: the nano DiTs (base, turbo, training adapter, distill patch)
#
# Needs ./zlora (make), /usr/bin/python3 with numpy (and torch, Pillow for the VAE), node for the goldens.
# Environment: NANO_COUNT (training scenes, default 4000), NANO_VAE_STEPS (phase 1, default 2800),
# NANO_WORK (default build/nano), PYTHON, ZLORA.
set -eu
cd "$(dirname "$0")/../.."
PY=${PYTHON:-/usr/bin/python3}
ZLORA=${ZLORA:-./zlora}
WORK=${NANO_WORK:-build/nano}
N=${NANO_COUNT:-4000}
VAE_STEPS=${NANO_VAE_STEPS:-2800}
STEPS=${*:-data tokenizer te goldens vae dit}

[ -x "$ZLORA" ] || { echo "make.sh: $ZLORA is missing: run make first" >&2; exit 1; }

step_data() {
    rm -rf "$WORK/data" "$WORK/heldout" "$WORK/wide" "$WORK/wide_heldout" "$WORK/prompts" "$WORK/prompts_zxq" \
        models/nano/data_zxq
    "$ZLORA" debug nano-data --out "$WORK/data" --count "$N" --seed 0
    "$ZLORA" debug nano-data --out "$WORK/heldout" --count 64 --seed 1
    "$ZLORA" debug nano-data --out "$WORK/wide" --wide --count "$N" --seed 0
    "$ZLORA" debug nano-data --out "$WORK/wide_heldout" --wide --count 64 --seed 1
    "$ZLORA" debug nano-data --out "$WORK/prompts" --count 200 --seed 12345
    "$ZLORA" debug nano-data --out "$WORK/prompts_zxq" --character zxq --seed 12345
    "$ZLORA" debug nano-data --out models/nano/data_zxq --character zxq --seed 0
}

step_tokenizer() {
    "$PY" models/nano/make_tokenizer.py "$WORK/data" models/nano/tokenizer
}

step_te() {
    "$PY" models/nano/make_te.py --out models/nano/text_encoder --tokenizer models/nano/tokenizer
}

step_goldens() {
    mkdir -p tests/data/nano
    # the prompts: one character caption with the trigger word, 199 base captions, the other character
    # captions (with the word and with [trigger]), and strings no caption has
    "$PY" - "$WORK" <<'EOF'
import glob, json, sys
rd = lambda d: [open(f, encoding="utf-8").read().strip() for f in sorted(glob.glob(d + "/*.txt"))]
base, char = rd(sys.argv[1] + "/prompts"), rd(sys.argv[1] + "/prompts_zxq")
extras = ["", "a red fox in the snow, photo", "blurry, low quality", "A Small RED Circle!!  at the top-left...",
          "caf\u00e9 \u65e5\u672c \U0001F642", "line\nbreak\ttab", "<|im_start|>user\nhi<|im_end|>", "[trigger]", "zxq"]
prompts = [char[0].replace("[trigger]", "zxq")] + base + [c.replace("[trigger]", "zxq") for c in char[1:]] + char + extras
with open("tests/data/nano/prompts.json", "w", encoding="utf-8") as f:
    f.write("[\n" + ",\n".join(json.dumps(p, ensure_ascii=False) for p in prompts) + "\n]\n")
EOF
    node tests/ref/tokenize_file.mjs models/nano/tokenizer tests/data/nano/prompts.json tests/data/nano/expected.json
    node tests/ref/tokenize_file.mjs models/nano/tokenizer tests/data/nano/prompts.json tests/data/nano/expected_template.json --template
    "$PY" models/nano/make_te.py --out models/nano/text_encoder --tokenizer models/nano/tokenizer --golden tests/data/nano
    if [ -f models/nano/vae/config.json ]; then
        "$PY" models/nano/train_vae.py --heldout "$WORK/heldout" --from models/nano/vae --golden tests/data/nano
    fi
}

step_vae() {
    # what made the committed VAE: phase 1 on the base scenes from random weights, then two phases on
    # base + wide scenes, each starting from the one before (the last writes models/nano/vae + goldens)
    V="$PY models/nano/train_vae.py --heldout $WORK/heldout --eval models/nano/data_zxq,$WORK/wide_heldout"
    $V --data "$WORK/data" --out "$WORK/vae_phase1" --steps "$VAE_STEPS"
    $V --data "$WORK/data,$WORK/wide" --init "$WORK/vae_phase1" --out "$WORK/vae_phase2" --steps 3000 --lr 1e-3
    $V --data "$WORK/data,$WORK/wide" --init "$WORK/vae_phase2" --out models/nano/vae --steps 3000 --lr 6e-4 \
        --golden tests/data/nano
}

step_dit() {
    # TODO(issue 9, DiT training): zlora's full-parameter training and distillation make these from
    # $WORK/data (latents through models/nano/vae, captions through models/nano/text_encoder):
    #   nano-base     models/nano/base/transformer      (flow matching on $WORK/data)
    #   nano-turbo    models/nano/turbo/transformer     (distilled from nano-base, few steps)
    #   adapter       models/nano/adapter.safetensors   (de-distill training adapter for nano-turbo)
    #   patch         models/nano/patch.safetensors     (DistillPatch LoRA restoring few-step sharpness)
    echo "make.sh: dit: not made yet (TODO: the DiT training steps)"
}

for s in $STEPS; do
    case $s in
        data|tokenizer|te|goldens|vae|dit) echo "== nano: $s"; t0=$(date +%s); "step_$s"; echo "== nano: $s done in $(( $(date +%s) - t0 )) s" ;;
        *) echo "make.sh: unknown step '$s' (data tokenizer te goldens vae dit)" >&2; exit 2 ;;
    esac
done
