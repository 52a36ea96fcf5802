"""SST-2 binary sentiment of movie-review sentences (the stsa.binary release)."""

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


def load_sst2(spec: DatasetSpec, cx: LoadContext) -> Task:
    d = cx.root / "sst2"
    names = {"0": "negative", "1": "positive"}
    splits: dict[str, list[Example]] = {}
    dropped: dict[str, int] = {}
    for split in ("train", "dev", "test"):
        path = d / f"stsa.binary.{split}"
        text = read_text(path, cx)
        if text is None:
            continue
        exs: list[Example] = []
        for line, row in enumerate(text.split("\n"), 1):
            if not row.strip():
                continue
            lab, _, sent = row.partition(" ")
            if lab not in names:
                cx.problems.add(
                    file_line(path, line), f"expected '<0|1> <sentence>', got label {lab!r:.20}", "label"
                )
                continue
            sent = one_line(sent)
            if not sent:
                dropped[split] = dropped.get(split, 0) + 1
                continue
            exs.append(Example(sent, names[lab], line=line))
        splits[split] = exs
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
