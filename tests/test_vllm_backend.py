"""The vLLM backend's plumbing, with a stand-in vllm module (vLLM itself needs a CUDA machine)."""

import sys
import types

import pytest

from manyicl.config import EvalConfig, load_config
from manyicl.errors import ManyICLError
from manyicl.tasks import Example, Task, Template

from conftest import toy_task


@pytest.fixture()
def fake_vllm(monkeypatch):
    calls = {"init": [], "generate": []}

    class LLM:
        def __init__(self, **kw):
            calls["init"].append(kw)

        def generate(self, prompts, params, lora_request=None, use_tqdm=True):
            calls["generate"].append((prompts, params, lora_request))
            out = types.SimpleNamespace
            return [out(outputs=[out(text=" 42\nText: more")]) for _ in prompts]

    class SamplingParams:
        def __init__(self, **kw):
            self.kw = kw

    class LoRARequest:
        def __init__(self, name, idx, path):
            self.args = (name, idx, path)

    vllm = types.ModuleType("vllm")
    vllm.LLM, vllm.SamplingParams = LLM, SamplingParams
    lora = types.ModuleType("vllm.lora")
    req = types.ModuleType("vllm.lora.request")
    req.LoRARequest = LoRARequest
    monkeypatch.setitem(sys.modules, "vllm", vllm)
    monkeypatch.setitem(sys.modules, "vllm.lora", lora)
    monkeypatch.setitem(sys.modules, "vllm.lora.request", req)
    return calls


def _gen_task():
    exs = [Example(f"what is {i} plus {i}?", str(2 * i)) for i in range(30)]
    return Task(
        "add", "math", Template(input_prefix="Q: ", output_prefix="A:"), {"train": exs[4:], "test": exs[:4]}
    )


def test_generation_goes_through_vllm_with_prefix_caching_and_options_do_not(tmp_path, tok, model, fake_vllm):
    from manyicl.evaluate import evaluate

    cfg = load_config(
        EvalConfig,
        None,
        [
            f"output_dir={tmp_path}",
            "model.name_or_path=tiny-random-llama",
            "scoring.generation_backend=vllm",
            "shots=[0,2]",
            "seeds=[0]",
            "max_length=400",
            "progress=false",
        ],
    )
    res = evaluate(cfg, model=model, tokenizer=tok, tasks=[_gen_task(), toy_task(40)])
    (init,) = fake_vllm["init"]
    assert init["enable_prefix_caching"] is True and init["max_model_len"] == 400
    assert len(fake_vllm["generate"]) == 2  # one call per shot count for the generation task only
    prompts, params, lora = fake_vllm["generate"][0]
    assert params.kw["temperature"] == 0.0 and "\n" in params.kw["stop"] and lora is None
    assert all(isinstance(p["prompt_token_ids"], list) for p in prompts)
    gen_rows = [r for r in res.rows if r["task"] == "add"]
    assert gen_rows and all(
        p["prediction"] == "42" for p in res.predictions if p["task"] == "add"
    )  # cut at the stop string
    assert any(r["task"] == "toy" for r in res.rows)  # option scoring ran on manyicl's own path


def test_missing_vllm_gives_a_clear_error(monkeypatch):
    from manyicl.config import ModelConfig
    from manyicl.vllm_backend import VLLMGenerator

    monkeypatch.setitem(sys.modules, "vllm", None)
    with pytest.raises(ManyICLError, match="pip install vllm"):
        VLLMGenerator(ModelConfig(name_or_path="tiny-random-llama"), 512)
