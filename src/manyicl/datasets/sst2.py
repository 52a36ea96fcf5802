"""SST-2 binary sentiment of movie-review sentences (the stsa.binary release)."""

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


def load_sst2(spec: DatasetSpec, ctx: LoadContext) -> Task:
    d = ctx.root / "sst2"
    names = {"0": "negative", "1": "positive"}

    def parse(row: str) -> tuple[str, str]:
        lab, _, sent = row.partition(" ")
        if lab not in names:
            raise BadRow(f"expected '<0|1> <sentence>', got label {lab!r:.20}", "label")
        return sent, names[lab]

    files = {s: d / f"stsa.binary.{s}" for s in ("train", "dev", "test")}
    splits, dropped = parse_splits(files, lambda p: text_rows(p, ctx), parse, ctx)
    tmpl = text_template(
        "You will receive a text input. Your task is to classify the sentiment of the input text.",
        "Sentiment:",
    )
    notes = [
        "sentences are lower-cased and tokenized as in the stsa.binary release",
        *drop_notes(dropped, "empty sentences"),
    ]
    return make_task(
        spec,
        tmpl,
        splits,
        labels=("negative", "positive"),
        notes=notes,
        split_files={s: str(d / f"stsa.binary.{s}") for s in splits},
    )


SPECS: list[DatasetSpec] = [
    DatasetSpec(
        "sst2",
        "cls",
        "sst2",
        "SST-2 binary sentiment of movie-review sentences",
        load_sst2,
        ("sst2/stsa.binary.train",),
    ),
]
