"""Banking77 intent classification (77 fine-grained banking intents)."""

from __future__ import annotations

import csv
import io

from ..tasks import Example, Task
from .common import (
    INTENT_TEMPLATE,
    DatasetSpec,
    LoadContext,
    drop_notes,
    file_line,
    humanize,
    make_task,
    one_line,
    read_json,
    read_text,
)


def load_banking77(spec: DatasetSpec, cx: LoadContext) -> Task:
    d = cx.root / "banking77"
    cats = read_json(d / "categories.json", cx)
    order: list[str] = []
    if isinstance(cats, list) and all(isinstance(x, str) for x in cats):
        order = [humanize(x) for x in cats]
    elif cats is not None:
        cx.problems.add(str(d / "categories.json"), "expected a JSON list of category names")
    splits: dict[str, list[Example]] = {}
    seen: set[str] = set()
    dropped: dict[str, int] = {}
    for split in ("train", "test"):
        path = d / f"{split}.csv"
        text = read_text(path, cx)
        if text is None:
            continue
        reader = csv.reader(io.StringIO(text, newline=""))
        exs: list[Example] = []
        start = 1
        for i, row in enumerate(reader):
            line, start = start, reader.line_num + 1
            if i == 0:
                if [x.strip() for x in row] != ["text", "category"]:
                    cx.problems.add(
                        file_line(path, line),
                        f"expected the header 'text,category', got {','.join(row)!r:.80}",
                    )
                continue
            if not row:
                continue
            if len(row) != 2:
                cx.problems.add(file_line(path, line), f"expected 2 columns (text, category), got {len(row)}")
                continue
            txt, cat = one_line(row[0]), humanize(row[1])
            if not cat:
                cx.problems.add(file_line(path, line), "empty category", "category")
                continue
            if order and cat not in order:
                cx.problems.add(
                    file_line(path, line), f"category {row[1]!r} is not in categories.json", "category"
                )
                continue
            if not txt:
                dropped[split] = dropped.get(split, 0) + 1
                continue
            seen.add(cat)
            exs.append(Example(txt, cat, line=line))
        splits[split] = exs
    labels = tuple(order) if order else tuple(sorted(seen))
    notes = [
        "labels humanized from categories.json ('card_arrival' -> 'card arrival'); newlines inside texts collapsed",
        *drop_notes(dropped, "rows with an empty text"),
    ]
    return make_task(
        spec,
        INTENT_TEMPLATE,
        splits,
        labels=labels,
        notes=notes,
        split_files={s: str(d / f"{s}.csv") for s in splits},
    )


SPECS: list[DatasetSpec] = [
    DatasetSpec(
        "banking77",
        "cls",
        "banking77",
        "Banking77 intent classification, 77 fine-grained banking intents",
        load_banking77,
        ("banking77/train.csv", "banking77/test.csv"),
    ),
]
