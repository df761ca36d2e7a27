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
#   vae        models/nano/vae/ trained by models/nano/train_vae.py in two phases + its goldens
#              (torch, one CPU thread: about 1 h 40 min on a busy 2-core machine)
#   dit        = base turbo adapter patch: the nano DiTs, trained by zlora (see step_base ... step_patch)
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
    # what made the committed VAE: phase 1 on the base scenes from random weights (28.5 dB held-out), then
    # phase 2 on base + wide scenes starting from phase 1 (31.9 dB; it also carries the zxq character)
    V="$PY models/nano/train_vae.py --heldout $WORK/heldout --eval models/nano/data_zxq,$WORK/wide_heldout"
    $V --data "$WORK/data" --out "$WORK/vae_phase1" --steps "$VAE_STEPS"
    $V --data "$WORK/data,$WORK/wide" --init "$WORK/vae_phase1" --out models/nano/vae --steps 3000 --lr 1e-3 \
        --golden tests/data/nano
}

# a model folder that shares the nano parts (tokenizer, text encoder, VAE, scheduler) by relative links
nano_folder() {
    mkdir -p "$1/transformer"
    for p in tokenizer text_encoder vae scheduler model_index.json; do ln -sfn "../$p" "$1/$p"; done
}

# install a trained transformer (F32 single file from `zlora train --full`) into FOLDER/transformer as BF16
install_dit() { # SRC FOLDER
    nano_folder "$2"
    cp "$WORK/base_init/transformer/config.json" "$2/transformer/config.json"
    "$ZLORA" convert-model "$1" "$2/transformer/diffusion_pytorch_model.safetensors" --dtype bf16
}

# progress pictures in each run's samples/ (they do not change the training)
P1="a large red circle in the centre on a blue background"
P2="a photo of a small yellow star at the top left and a green square at the bottom right on a black background"
P3="a photo of zxq at the left on a red background"
T="$ZLORA train --resolution 64 --cache $WORK/cache --save-every 500 --sample-every 0"

step_base() {
    # nano-base: a random S3-DiT (dim 128, 4 main layers, 1+1 refiners, 4 heads of 32) trained from scratch
    # on the 4000 scenes with the flow-matching loss, every weight (--full), caption dropout 0.1 for CFG
    rm -rf "$WORK/base_init" "$WORK/base_run"
    "$ZLORA" debug random-dit "$WORK/base_init" --dtype f32 --dim 128 --layers 4 --refiners 1 --cap 64 --head 32 --seed 1
    $T --model "$WORK/base_init" --data "$WORK/data" --route custom --full --name nano-base --out "$WORK/base_run" \
        --lr 5e-4 --schedule cosine --warmup 200 --min-lr 2e-5 --batch 16 --sigma logit-normal --caption-dropout 0.1 \
        --steps "${NANO_BASE_STEPS:-6000}" --sample-every 1000 --sample-steps 30 --sample-cfg 4 --sample-prompt "$P1" --sample-prompt "$P2" --sample-prompt "$P3"
    install_dit "$WORK/base_run/nano-base.safetensors" models/nano/base
}

step_turbo() {
    # nano-turbo: nano-base distilled to 8 steps without CFG: for each caption the teacher (nano-base, CFG 4)
    # samples 32 Euler steps from noise; the student learns to cover each 4 of them in one step
    rm -rf "$WORK/turbo_run"
    $T --model models/nano/base --data "$WORK/data" --route custom --full --name nano-turbo --out "$WORK/turbo_run" \
        --distill-steps 8 --teacher models/nano/base --teacher-substeps 4 --teacher-cfg 4 \
        --lr 2e-4 --schedule cosine --warmup 50 --min-lr 1e-5 --batch 4 --steps "${NANO_TURBO_STEPS:-1000}" \
        --sample-every 250 --sample-steps 8 --sample-cfg 1 --sample-prompt "$P1" --sample-prompt "$P2" --sample-prompt "$P3"
    install_dit "$WORK/turbo_run/nano-turbo.safetensors" models/nano/turbo
}

step_adapter() {
    # the de-distill training adapter, as Ostris describes: a LoRA trained on nano-turbo's own 8-step
    # generations with the plain flow-matching loss (it learns what training does to Turbo, so a LoRA
    # trained on top of it does not have to)
    rm -rf "$WORK/turbo_gens" "$WORK/adapter_run"
    mkdir -p "$WORK/turbo_gens"
    i=0
    for f in $(ls "$WORK/data"/*.txt | head -n "${NANO_ADAPTER_IMAGES:-400}"); do
        b=$(basename "$f" .txt)
        "$ZLORA" -q generate --model models/nano/turbo -p "$(cat "$f")" -W 64 -H 64 --seed $((1000 + i)) --no-cache \
            -o "$WORK/turbo_gens/$b.png"
        cp "$f" "$WORK/turbo_gens/$b.txt"
        i=$((i + 1))
    done
    $T --model models/nano/turbo --data "$WORK/turbo_gens" --route custom --name adapter --out "$WORK/adapter_run" \
        --rank 16 --lr 5e-4 --schedule cosine --warmup 50 --batch 8 --sigma logit-normal --steps "${NANO_ADAPTER_STEPS:-1500}"
    cp "$WORK/adapter_run/adapter.safetensors" models/nano/adapter.safetensors
}

step_patch() {
    # the DistillPatch: first a LoRA trained directly on nano-turbo on a concept the demo does not use (the
    # VAE's "wide" scenes: turned, striped, outlined shapes), which drifts Turbo's 8-step trajectory; then
    # a LoRA on nano-turbo with that LoRA frozen at +1 (--adapter), distilled from nano-turbo + the LoRA
    # sampled at 32 steps with CFG 2 (the setting at which a directly trained LoRA still looks right):
    # trajectory imitation, as DiffSynth trains its patch. Only the patch is saved.
    rm -rf "$WORK/wide_lora" "$WORK/wide_sub" "$WORK/patch_data" "$WORK/patch_run"
    mkdir -p "$WORK/wide_sub" "$WORK/patch_data"
    for f in $(ls "$WORK/wide"/*.png | head -n 300); do cp "$f" "${f%.png}.txt" "$WORK/wide_sub/"; done
    # the patch's captions: half of the LoRA's, half base scenes (the patch must not hurt prompts without it)
    for f in $(ls "$WORK/wide"/*.png | head -n 150) $(ls "$WORK/data"/*.png | tail -n 150); do
        cp "$f" "${f%.png}.txt" "$WORK/patch_data/"
    done
    $T --model models/nano/turbo --data "$WORK/wide_sub" --route custom --name wide --out "$WORK/wide_lora" \
        --rank 16 --lr 5e-4 --batch 4 --sigma logit-normal --steps "${NANO_WIDE_STEPS:-800}"
    $T --model models/nano/turbo --data "$WORK/patch_data" --route custom --name patch --out "$WORK/patch_run" \
        --adapter "$WORK/wide_lora/wide.safetensors" --distill-steps 8 --teacher models/nano/turbo \
        --teacher-lora "$WORK/wide_lora/wide.safetensors" --teacher-substeps 4 --teacher-cfg 2 \
        --rank 16 --lr 3e-4 --schedule cosine --warmup 20 --batch 2 --steps "${NANO_PATCH_STEPS:-400}"
    cp "$WORK/patch_run/patch.safetensors" models/nano/patch.safetensors
}

step_dit() {
    step_base; step_turbo; step_adapter; step_patch
}

for s in $STEPS; do
    case $s in
        data|tokenizer|te|goldens|vae|dit|base|turbo|adapter|patch) echo "== nano: $s"; t0=$(date +%s); "step_$s"; echo "== nano: $s done in $(( $(date +%s) - t0 )) s" ;;
        *) echo "make.sh: unknown step '$s' (data tokenizer te goldens vae dit base turbo adapter patch)" >&2; exit 2 ;;
    esac
done
