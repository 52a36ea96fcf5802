"""Our cached log-likelihoods equal lm-evaluation-harness's on the same tiny model and local JSONL task."""

import json

import numpy as np
import pytest

from manyicl.caching import PromptCache

lm_eval = pytest.importorskip("lm_eval")


@pytest.mark.slow
def test_option_loglikelihoods_equal_lm_evaluation_harness(tmp_path, tok, model):
    from lm_eval import simple_evaluate
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    prompt = "Task: label the colour. Here are some examples:\n" + "".join(
        f"Text: {w}\nLabel: {c}\n" for w, c in [("grass", "green"), ("sky", "blue"), ("blood", "red")] * 4
    )
    choices = ["red", "green", "blue", "blue green"]
    docs = [
        {"prompt": prompt + f"Text: {w}\nLabel:", "choices": choices, "gold": 0}
        for w in ("fire", "leaf", "sea")
    ]
    data = tmp_path / "test.jsonl"
    data.write_text("\n".join(json.dumps(d) for d in docs) + "\n")
    (tmp_path / "parity.yaml").write_text(
        "task: manyicl_parity\n"
        "dataset_path: json\n"
        f"dataset_kwargs:\n  data_files:\n    test: {data}\n"
        "test_split: test\n"
        "output_type: multiple_choice\n"
        'doc_to_text: "{{prompt}}"\n'
        'doc_to_choice: "{{choices}}"\n'
        'doc_to_target: "{{gold}}"\n'
        "metric_list:\n  - metric: acc\n"
    )
    lm = HFLM(pretrained=model, tokenizer=tok, batch_size=1, device="cpu")
    out = simple_evaluate(
        model=lm,
        tasks=["manyicl_parity"],
        task_manager=TaskManager(include_path=str(tmp_path)),
        log_samples=True,
        num_fewshot=0,
    )
    samples = sorted(out["samples"]["manyicl_parity"], key=lambda s: s["doc_id"])
    theirs = [[float(r[0]) for r in s["filtered_resps"]] for s in samples]

    enc = lambda text: tok(text, add_special_tokens=False)["input_ids"]  # noqa: E731
    pc = PromptCache(model, enc(prompt))
    ours = []
    for d in docs:
        query = d["prompt"][len(prompt) :]
        scored = pc.score_options(enc(query), [enc(" " + c) for c in choices])
        ours.append([lp for lp, _ in scored])
    assert np.allclose(ours, theirs, atol=1e-4), (ours, theirs)
