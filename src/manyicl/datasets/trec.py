"""TREC question classification into the 6 coarse answer types."""

from __future__ import annotations

from ..tasks import Task
from .common import (
    BadRow,
    DatasetSpec,
    LoadContext,
    drop_notes,
    make_task,
    parse_splits,
    text_rows,
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


def load_trec(spec: DatasetSpec, ctx: LoadContext) -> Task:
    d = ctx.root / "trec"

    def parse(row: str) -> tuple[str, str]:
        head, _, q = row.partition(" ")
        coarse = head.split(":", 1)[0]
        if ":" not in head or coarse not in _TREC:
            raise BadRow(
                f"expected 'COARSE:fine question' with COARSE in {sorted(_TREC)}, got {head!r:.30}", "label"
            )
        return q, _TREC[coarse]

    files = {s: d / f"{s}.txt" for s in ("train", "test")}
    splits, dropped = parse_splits(files, lambda p: text_rows(p, ctx), parse, ctx)
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
