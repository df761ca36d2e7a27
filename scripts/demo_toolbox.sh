#!/bin/sh
# make demo-toolbox — the LoRA toolbox on sample files that
# zlora generates itself: recognise formats and foreign files, check, convert, merge and resize.
set -e
Z=./zlora
D=build/demo
rm -rf "$D"; mkdir -p "$D"
step() { printf '\n\033[1m$ %s\033[0m\n' "$*"; }
run() { step "$*"; "$@"; }

run $Z debug sample-loras "$D"
run $Z lora inspect "$D/character_kohya.safetensors"
run $Z lora check "$D/character_kohya.safetensors"
step "$Z lora check $D/flux_lora.safetensors   # a FLUX.1 LoRA is named, not silently dropped"
$Z lora check "$D/flux_lora.safetensors" || echo "(exit $?: not a Z-Image LoRA)"
step "$Z lora inspect $D/broken_half.safetensors   # a truncated/incomplete file gets one clear error"
$Z lora inspect "$D/broken_half.safetensors" || echo "(exit $?)"
run $Z lora convert "$D/character_kohya.safetensors" "$D/character_comfyui.safetensors" --to comfyui --dtype bf16
run $Z lora inspect "$D/character_comfyui.safetensors" --json
step "$Z lora convert $D/style_lokr_aitoolkit.safetensors $D/style_comfyui.safetensors --to comfyui   # a full-factor LoKr cannot be fused exactly"
$Z lora convert "$D/style_lokr_aitoolkit.safetensors" "$D/style_comfyui.safetensors" --to comfyui || echo "(exit $?: refused without --lossy)"
run $Z lora convert "$D/style_lokr_aitoolkit.safetensors" "$D/style_comfyui.safetensors" --to comfyui --lossy
run $Z lora merge "$D/stack.safetensors" "$D/character_kohya.safetensors:1.0" "$D/patch_diffsynth.safetensors:0.8" --to ai-toolkit
run $Z lora inspect "$D/stack.safetensors"
run $Z lora resize "$D/stack.safetensors" "$D/stack_r4.safetensors" --rank 4
printf '\nDemo files are in %s\n' "$D"
