"""Banking77 intent classification (77 fine-grained banking intents)."""

from __future__ import annotations

from ..tasks import Task
from .common import (
    INTENT_TEMPLATE,
    BadRow,
    DatasetSpec,
    LoadContext,
    csv_rows,
    drop_notes,
    humanize,
    make_task,
    parse_splits,
    read_json,
)


def load_banking77(spec: DatasetSpec, ctx: LoadContext) -> Task:
    d = ctx.root / "banking77"
    cats = read_json(d / "categories.json", ctx)
    order: list[str] = []
    if isinstance(cats, list) and all(isinstance(x, str) for x in cats):
        order = [humanize(x) for x in cats]
    elif cats is not None:
        ctx.problems.add(str(d / "categories.json"), "expected a JSON list of category names")
    seen: set[str] = set()

    def parse(row: list[str]) -> tuple[str, str]:
        cat = humanize(row[1])
        if not cat:
            raise BadRow("empty category", "category")
        if order and cat not in order:
            raise BadRow(f"category {row[1]!r} is not in categories.json", "category")
        if row[0].strip():
            seen.add(cat)
        return row[0], cat

    files = {s: d / f"{s}.csv" for s in ("train", "test")}
    splits, dropped = parse_splits(files, lambda p: csv_rows(p, ctx, ["text", "category"]), parse, ctx)
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
