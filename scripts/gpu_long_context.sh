#!/usr/bin/env bash
# Many-shot at the window's limit on one GPU (issue 15), writing everything to OUT: meta-train Gemma 3 270M
# base with mask-all at 32K context, then CLINC150 + Banking77 curves to >= 1,000 shots, base vs adapter.
#
#   scripts/gpu_long_context.sh OUT            # GPU: <= 10 min on one H200 (estimate; see the config)
#   scripts/gpu_long_context.sh OUT --tiny     # the same recipe on CPU with a tiny random Gemma 3 (CI)
#
# Python: .venv (scripts/setup.sh --gemma) if present, else python3 with this checkout on PYTHONPATH (a GPU
# image with torch/transformers/peft; wheels it lacks are installed from .gpu_carry/wheels when that folder
# exists). Data: $MANYICL_DATA, else .gpu_carry/data, else ../shared/data. Model: $MANYICL_MODEL (a Gemma 3
# .gguf file or a converted model folder), else .gpu_carry/gemma3 (a folder), else the opt-in gemma3-270m
# packages (Gemma Terms of Use). The GGUF is 253 MB: it does not fit a 64 MiB transfer, so on a machine
# reached that way it must already be there. Nothing is downloaded.
set -euo pipefail
OUT="${1:?usage: scripts/gpu_long_context.sh OUT [--tiny]}"
MODE="${2:-}"
cd "$(dirname "$0")/.."
source scripts/gpu_common.sh  # offline env, $PY, $MANYICL_DATA
MODEL="${MANYICL_MODEL:-}"
[ -z "$MODEL" ] && [ -d .gpu_carry/gemma3 ] && MODEL="$PWD/.gpu_carry/gemma3"
ARGS=("output_dir=$OUT")
[ -n "$MODEL" ] && ARGS+=("train.model.name_or_path=$MODEL")
if [ "$MODE" = "--tiny" ]; then
  # every cell of the GPU recipe, shrunk to seconds: a random Gemma 3 with sliding-window layers (window 16,
  # so every prompt is longer than the window), the two curve tasks cut to a few queries, shots to max
  ARGS+=(
    "train.model.name_or_path=tiny-random-gemma3" "train.model.dtype=float32" "train.lora.r=4"
    "train.data.max_length=512" "train.data.tasks.include=[sst2,trec,ag_news]" "train.data.tasks.max_examples_per_split=60"
    "train.train.eval_every=4" "train.train.save_every=0" "train.train.gradient_checkpointing=false"
    "budget_tokens=3000" "val_windows=2" "heldout_ce_sequences=1"
    "eval.tasks.max_examples_per_split=200" "eval.max_length=512"
    "eval.max_queries=6" "eval.dev_queries=4" "eval.shots=[0,1,10,max]" "eval.save_prompt_caches=false"
  )
elif [ -n "$MODE" ]; then
  echo "unknown option $MODE (use --tiny)" >&2; exit 2
fi
"$PY" -c "import torch; print('torch', torch.__version__, 'cuda' if torch.cuda.is_available() else 'cpu only')"
start=$(date +%s)
"$PY" -m manyicl experiment experiment_gpu_long_context "${ARGS[@]}"
echo "gpu_long_context: finished in $(( $(date +%s) - start )) s; report: $OUT/report.md"
