"""TREC question classification into the 6 coarse answer types."""

from __future__ import annotations

from ..tasks import Example, Task
from .common import (
    DatasetSpec,
    LoadContext,
    drop_notes,
    file_line,
    make_task,
    one_line,
    read_text,
    text_template,
)

_TREC = {
    "ABBR": "abbreviation",
    "DESC": "description",
    "ENTY": "entity",
    "HUM": "human",
    "LOC": "location",
    "NUM": "number",
}


def load_trec(spec: DatasetSpec, cx: LoadContext) -> Task:
    d = cx.root / "trec"
    splits: dict[str, list[Example]] = {}
    dropped: dict[str, int] = {}
    for split in ("train", "test"):
        path = d / f"{split}.txt"
        text = read_text(path, cx)
        if text is None:
            continue
        exs: list[Example] = []
        for line, row in enumerate(text.split("\n"), 1):
            if not row.strip():
                continue
            head, _, q = row.partition(" ")
            coarse = head.split(":", 1)[0]
            if ":" not in head or coarse not in _TREC:
                cx.problems.add(
                    file_line(path, line),
                    f"expected 'COARSE:fine question' with COARSE in {sorted(_TREC)}, got {head!r:.30}",
                    "label",
                )
                continue
            q = one_line(q)
            if not q:
                dropped[split] = dropped.get(split, 0) + 1
                continue
            exs.append(Example(q, _TREC[coarse], line=line))
        splits[split] = exs
    tmpl = text_template(
        "You will receive a question. Your task is to classify the type of answer the question asks for.",
        "Type:",
        input_prefix="Question: ",
    )
    notes = [
        "labels: the 6 coarse classes (fine classes dropped), humanized (ABBR -> abbreviation, ...)",
        *drop_notes(dropped, "empty questions"),
    ]
    return make_task(
        spec,
        tmpl,
        splits,
        labels=tuple(_TREC.values()),
        notes=notes,
        split_files={s: str(d / f"{s}.txt") for s in splits},
    )


SPECS: list[DatasetSpec] = [
    DatasetSpec(
        "trec",
        "cls",
        "trec",
        "TREC question classification, 6 coarse answer types",
        load_trec,
        ("trec/train.txt",),
    ),
]
