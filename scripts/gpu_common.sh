# Sourced by the scripts/gpu_*.sh recipes: offline environment, the Python to use and the data folder.
# Python: .venv (scripts/setup.sh) if present, else python3 with this checkout on PYTHONPATH (a GPU image with
# torch/transformers/peft installed; wheels it lacks are installed from .gpu_carry/wheels when that folder
# exists). Data: $MANYICL_DATA, else .gpu_carry/data, else ../shared/data. Nothing is downloaded.
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
if [ -x .venv/bin/python ]; then
  PY=.venv/bin/python
else
  PY=python3
  export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
  if [ -d .gpu_carry/wheels ]; then "$PY" -m pip install -q --no-index --no-deps .gpu_carry/wheels/*.whl; fi
fi
if [ -z "${MANYICL_DATA:-}" ]; then
  if [ -d .gpu_carry/data ]; then export MANYICL_DATA="$PWD/.gpu_carry/data"; else export MANYICL_DATA="$PWD/../shared/data"; fi
fi
