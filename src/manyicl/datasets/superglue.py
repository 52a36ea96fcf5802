"""SuperGLUE NLI: RTE (2-way) and CommitmentBank (3-way); the labelled validation split is the test."""

from __future__ import annotations

from ..tasks import Example, Task
from .common import (
    DatasetSpec,
    LoadContext,
    drop_notes,
    file_line,
    make_task,
    nli_template,
    one_line,
    read_jsonl,
)

_SUPERGLUE_LABELS = {
    "rte": ("entailment", "not entailment"),
    "cb": ("entailment", "contradiction", "neutral"),
}


def load_superglue(spec: DatasetSpec, ctx: LoadContext) -> Task:
    d = ctx.root / spec.name
    allowed = _SUPERGLUE_LABELS[spec.name]
    splits: dict[str, list[Example]] = {}
    dropped: dict[str, int] = {}
    files = {"train": d / "train.jsonl", "test": d / "val.jsonl"}
    for split, path in files.items():
        exs: list[Example] = []
        for line, obj in read_jsonl(path, ctx):
            ok = True
            for k in ("premise", "hypothesis", "label"):
                if not isinstance(obj.get(k), str):
                    ctx.problems.add(
                        file_line(path, line), f"missing or not a string ({type(obj.get(k)).__name__})", k
                    )
                    ok = False
            if not ok:
                continue
            label = obj["label"].strip().replace("_", " ")
            if label not in allowed:
                ctx.problems.add(
                    file_line(path, line), f"label {obj['label']!r} is not one of {list(allowed)}", "label"
                )
                continue
            prem, hyp = one_line(obj["premise"]), one_line(obj["hypothesis"])
            if not prem or not hyp:
                dropped[split] = dropped.get(split, 0) + 1
                continue
            exs.append(Example(f"{prem}\nHypothesis: {hyp}", label, line=line))
        splits[split] = exs
    notes = [
        "test.jsonl has no labels (SuperGLUE hidden test); 'test' here is the labelled validation split (val.jsonl)",
        *drop_notes(dropped, "rows with an empty premise or hypothesis"),
    ]
    return make_task(
        spec,
        nli_template(len(allowed) == 3),
        splits,
        labels=allowed,
        notes=notes,
        split_files={s: str(p) for s, p in files.items()},
    )


SPECS: list[DatasetSpec] = [
    DatasetSpec(
        "rte",
        "nli",
        "rte",
        "RTE textual entailment (SuperGLUE), 2-way",
        load_superglue,
        ("rte/train.jsonl", "rte/val.jsonl"),
    ),
    DatasetSpec(
        "cb",
        "nli",
        "cb",
        "CommitmentBank (SuperGLUE), 3-way NLI",
        load_superglue,
        ("cb/train.jsonl", "cb/val.jsonl"),
    ),
]
