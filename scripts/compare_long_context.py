"""SmolLM2-135M at its 8K limit vs Gemma 3 270M at 32K (base and meta-trained), paired on the same queries.

Both evaluations draw the same test queries and, per seed and shot count, the same demonstrations
(``manyicl eval`` / ``experiment`` with the same task split, seeds and shot grid); only the tokenizers
differ, so the most shots that fit differ (SmolLM2 ~445 CLINC150 shots at 8K, Gemma ~1,904 at 32K).
Every row compares Gemma at a shot count with SmolLM2 at the same count, or at its max where Gemma's
count does not fit 8K. The script checks that queries, seeds and gold labels line up before testing.

    .venv/bin/python scripts/compare_long_context.py      # writes results/long_context/smollm2_vs_gemma3.md
"""

from __future__ import annotations

import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

from manyicl.claims import _fmt_test
from manyicl.fileio import atomic_write_text
from manyicl.predictions import load_predictions
from manyicl.stats import paired_test, verdict

ROOT = Path(__file__).resolve().parents[1] / "results" / "long_context"
GEMMA = ROOT / "predictions.jsonl.gz"
SMOL = ROOT / "smollm2_base" / "predictions.jsonl.gz"
PAIRS = [
    ("0", "0"),
    ("1", "1"),
    ("10", "10"),
    ("100", "100"),
    ("300", "300"),
    ("1000", "max"),
    ("max", "max"),
]
MODELS = {"no_ft": "Gemma 3 270M base", "many_shot_all": "Gemma 3 270M meta-trained (mask all)"}


def _index(preds: list[dict], model: str) -> dict:
    out: dict = defaultdict(dict)
    for r in preds:
        if r["model"] == model and r.get("split", "test") == "test":
            out[(r["task"], str(r["shots_requested"]))][(r["query"], r["seed"])] = (
                r["score"],
                r["gold"],
                r["shots"],
            )
    return out


def _aligned(a: dict, b: dict, where: str) -> tuple[np.ndarray, np.ndarray]:
    if set(a) != set(b):
        raise SystemExit(f"{where}: the two runs hold different (query, seed) pairs")
    if any(a[k][1] != b[k][1] for k in a):
        raise SystemExit(f"{where}: gold labels differ for the same query")
    qs, seeds = sorted({q for q, _ in a}), sorted({s for _, s in a})
    return (
        np.array([[a[(q, s)][0] for s in seeds] for q in qs]),
        np.array([[b[(q, s)][0] for s in seeds] for q in qs]),
    )


def main(out: Path | None = None) -> int:
    gemma, smol = load_predictions(GEMMA), load_predictions(SMOL)
    s = _index(smol, "base")
    g = {model: _index(gemma, model) for model in MODELS}  # indexed once, read for every row
    lines = [
        "# SmolLM2-135M (8K) vs Gemma 3 270M (32K): paired on the same queries",
        "",
        "Written by `scripts/compare_long_context.py` from `predictions.jsonl.gz` (Gemma, the experiment) and "
        "`smollm2_base/predictions.jsonl.gz` (SmolLM2-135M-Instruct base, `manyicl eval long_context_gemma3 "
        "model.name_or_path=smollm2-135m-instruct max_length=8192`). Same 300 test queries, seeds 0-2 and "
        "demonstration draws; fp32 scoring, top_k=1. Differences are Gemma minus SmolLM2, 95% bootstrap intervals "
        "over queries, paired tests as in the report (exact McNemar at 0 shots, else sign-flip permutation), "
        "no multiple-comparison adjustment. Different models of different size, training and tokenizer: this "
        "compares what each reaches in its own window, not architectures.",
        "",
    ]
    for task in sorted({t for t, _ in s}, key=lambda t: (t != "clinc150", t)):
        lines += [
            f"## {task}",
            "",
            "| Gemma at | SmolLM2 at | "
            + " | ".join(f"{label} minus SmolLM2 [95% CI], p | p < 0.05" for label in MODELS.values())
            + " |",
        ]
        lines.append("|---|---|" + "---|---|" * len(MODELS))
        for gs, ss in PAIRS:
            b = s.get((task, ss))
            if not b:
                continue
            smol_k = max(v[2] for v in b.values())
            cells = []
            for model in MODELS:
                a = g[model].get((task, gs))
                if not a:
                    cells += ["-", "-"]
                    continue
                x, y = _aligned(a, b, f"{task} {model}@{gs} vs SmolLM2@{ss}")
                t = paired_test(x, y)
                v = {"supported": "Gemma better", "contradicted": "SmolLM2 better"}.get(
                    verdict(t), "not significant"
                )
                cells += [_fmt_test(t), v]
            gemma_k = max(v[2] for v in g["no_ft"][(task, gs)].values())
            lines.append(f"| {gs} ({gemma_k}) | {ss} ({smol_k}) | " + " | ".join(cells) + " |")
        lines.append("")
    lines.append("Shot counts in brackets: the most over seeds.")
    out = out or ROOT / "smollm2_vs_gemma3.md"
    atomic_write_text(out, "\n".join(lines) + "\n")
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
