"""Evaluation speed vs lm-evaluation-harness, side by side in one run, same prompts, same model.

Tasks (real shared data): CLINC150 (150-way option scoring), SST-2 (binary option scoring) and BIG-bench
QASC (greedy generation). For each task and each shot count (16, 64, 256 - or as many as fit in 8K), the
same k-shot prompt (our stratified sample) and the same test queries go to both:

  manyicl   the prompt is processed once; its KV cache serves every query; all options of a query are
            scored in one pass as a token trie; several queries share a pass
  lm-eval   0.4.x HFLM on the same model object, a local JSONL task whose documents hold the full prompt
            text; it runs context + continuation for every option (its own algorithm, batch size 1)

lm-eval is timed on fewer queries where it would take hours; times are compared per query. Predictions
are compared on the queries both ran (agreement).

    python benchmarks/bench_eval_vs_lmeval.py [--queries 100] [--lmeval-budget-s 1500]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

OUT = Path(__file__).parent / "results"

TASKS = [
    # (task, demo split, eval split, kind)
    ("clinc150", "train", "test", "options"),
    ("sst2", "train", "test", "options"),
    ("bigbench:qasc", "train", "test", "generate"),
]


def lmeval_yaml(path: Path, data: Path, kind: str, max_gen: int, until: list[str]) -> None:
    lines = [
        "task: manyicl_bench",
        "dataset_path: json",
        f"dataset_kwargs:\n  data_files:\n    test: {data}",
        "test_split: test",
        'doc_to_text: "{{prompt}}"',
    ]
    if kind == "options":
        lines += [
            "output_type: multiple_choice",
            'doc_to_choice: "{{choices}}"',
            'doc_to_target: "{{gold}}"',
            "target_delimiter: ' '",
        ]
        lines += ["metric_list:\n  - metric: acc"]
    else:
        lines += [
            "output_type: generate_until",
            'doc_to_target: "{{gold}}"',
            # the same stop strings as manyicl's generation (JSON is YAML: "\n" stays a newline)
            f"generation_kwargs:\n  until: {json.dumps(until)}\n  do_sample: false\n  max_gen_toks: {max_gen}",
            "metric_list:\n  - metric: exact_match",
        ]
    path.write_text("\n".join(lines) + "\n")


def run_lmeval(
    model, tok, docs: list[dict], kind: str, max_gen: int, until: list[str] | None = None
) -> tuple[list, float]:
    """Predictions and wall seconds (dataset set-up excluded as far as lm-eval allows) for ``docs``."""
    from lm_eval import simple_evaluate
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        (d / "test.jsonl").write_text("\n".join(json.dumps(x) for x in docs) + "\n")
        lmeval_yaml(d / "bench.yaml", d / "test.jsonl", kind, max_gen, until or ["\n"])
        lm = HFLM(pretrained=model, tokenizer=tok, batch_size=1, device=str(next(model.parameters()).device))
        tm = TaskManager(include_path=str(d))
        t0 = time.perf_counter()
        out = simple_evaluate(
            model=lm, tasks=["manyicl_bench"], task_manager=tm, log_samples=True, num_fewshot=0
        )
        wall = time.perf_counter() - t0
    samples = sorted(out["samples"]["manyicl_bench"], key=lambda s: s["doc_id"])
    if kind == "options":
        preds = [int(np.argmax([float(r[0]) for r in s["filtered_resps"]])) for s in samples]
    else:
        preds = [
            (s["filtered_resps"][0] if isinstance(s["filtered_resps"], list) else s["filtered_resps"]).strip()
            for s in samples
        ]
    return preds, wall


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--queries", type=int, default=100)
    ap.add_argument("--shots", default="16,64,256")
    ap.add_argument("--lmeval-budget-s", type=float, default=1500, help="total seconds to spend in lm-eval")
    ap.add_argument("--tasks", default=",".join(t for t, *_ in TASKS))
    ap.add_argument(
        "--lmeval-max-query-s",
        type=float,
        default=900,
        help="skip lm-eval at a shot count where one query is predicted to take longer (the per-query time is "
        "then extrapolated from the previous shot count by prompt tokens, a lower bound, and marked estimated)",
    )
    a = ap.parse_args()
    from dataclasses import replace

    from manyicl.caching import PromptCache
    from manyicl.config import EvalConfig, ModelConfig, load_config
    from manyicl.evaluate import prepare_task, shot_plan
    from manyicl.fileio import atomic_write_json
    from manyicl.modeling import load_model
    from manyicl.realdata import default_data_dir, load_shared_task

    torch.manual_seed(0)
    model, tok = load_model(ModelConfig())
    data_dir = default_data_dir()
    wanted = a.tasks.split(",")
    shots = [int(s) for s in a.shots.split(",")]
    results = []

    def emit(row: dict) -> None:
        """Record a row and rewrite the results file (a killed run keeps what it measured)."""
        results.append(row)
        print(json.dumps(row), flush=True)
        OUT.mkdir(exist_ok=True)
        atomic_write_json(OUT / "eval_vs_lmeval.json", {"rows": results})

    # lm-eval's cost per query, estimated from one short probe per (task, k), decides how many queries it gets
    n_cells = sum(1 for t in TASKS if t[0] in wanted) * len(shots)
    for name, demo_split, eval_split, kind in TASKS:
        if name not in wanted:
            continue
        task = load_shared_task(name, data_dir)
        cfg = load_config(
            EvalConfig,
            None,
            [
                "max_length=8192",
                f"max_queries={a.queries}",
                "seeds=[0]",
                f"demo_split={demo_split}",
                f"eval_split={eval_split}",
            ],
        )
        cfg = replace(cfg, shots=[*shots, "max"])
        pt = prepare_task(task, tok, cfg)
        order, plan, n_fit = shot_plan(pt, cfg, 0)
        for k_req in shots:
            k = min(k_req, n_fit)
            prompt = pt.demos.header.tolist()
            for i in order[:k]:
                prompt += pt.demos.example_ids(int(i))[0].tolist()
            queries = pt.queries
            stops = task.template.stop_strings()
            # ---- manyicl
            t0 = time.perf_counter()
            pc = PromptCache(model, prompt)
            if kind == "options":
                lls = pc.score_options_many([(q.ids, q.option_ids) for q in queries])
                ours = [int(np.argmax([lp for lp, _ in ll])) for ll in lls]
            else:
                ours = [
                    t.strip()
                    for t in pc.generate_many([q.ids for q in queries], tok, pt.max_new_tokens, stops)
                ]
            ours_s = (time.perf_counter() - t0) / len(queries)
            # lm-eval's per-query cost grows at least linearly with the prompt (it re-runs it per option)
            prev = next((r for r in reversed(results) if r["task"] == name and r["queries_lmeval"]), None)
            predicted = (
                prev["lmeval_s_per_query"] * len(prompt) / prev["prompt_tokens"] if prev is not None else 0.0
            )
            head = {
                "task": name,
                "kind": kind,
                "options": len(queries[0].options) if kind == "options" else None,
                "shots": k,
                "prompt_tokens": len(prompt),
                "queries_manyicl": len(queries),
                "manyicl_s_per_query": ours_s,
            }
            if predicted > a.lmeval_max_query_s:
                emit(
                    head
                    | {
                        "queries_lmeval": 0,
                        "lmeval_s_per_query": predicted,
                        "lmeval_estimated": True,  # not run: extrapolated linearly from the previous shot count
                        "speedup": predicted / ours_s,
                        "agreement": None,
                    }
                )
                continue
            # ---- lm-eval on as many of the same queries as its time budget allows
            prompt_text = tok.decode(prompt)
            docs = []
            for q in queries:
                text = prompt_text + tok.decode(q.ids)
                if kind == "options":
                    docs.append(
                        {
                            "prompt": text,
                            "choices": [o + "\n" for o in q.options],
                            "gold": q.options.index(q.example.output),
                        }
                    )
                else:
                    docs.append({"prompt": text, "gold": q.example.output})
            probe_preds, probe_s = run_lmeval(model, tok, docs[:1], kind, pt.max_new_tokens, stops)
            per_q = probe_s
            budget = a.lmeval_budget_s / n_cells
            n_lm = int(max(1, min(len(docs), budget // max(per_q, 1e-3))))
            if n_lm > 1:
                more, more_s = run_lmeval(model, tok, docs[1:n_lm], kind, pt.max_new_tokens, stops)
                lm_preds = probe_preds + more
                per_q = (probe_s + more_s) / n_lm
            else:
                lm_preds = probe_preds
            agree = float(np.mean([x == y for x, y in zip(ours[:n_lm], lm_preds)]))
            same_ids = tok(prompt_text, add_special_tokens=False)["input_ids"] == prompt
            emit(
                head
                | {
                    "queries_lmeval": n_lm,
                    "lmeval_s_per_query": per_q,
                    "speedup": per_q / ours_s,
                    "agreement": agree,
                    "prompt_retokenizes_identically": same_ids,
                    "examples": [{"manyicl": x, "lmeval": y} for x, y in list(zip(ours, lm_preds))[:3]],
                }
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
