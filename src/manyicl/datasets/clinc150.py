"""CLINC150 intent classification (150 in-scope intents; out-of-scope rows ignored)."""

from __future__ import annotations

from ..tasks import Example, Task
from .common import (
    INTENT_TEMPLATE,
    DatasetSpec,
    LoadContext,
    array_lines,
    drop_notes,
    file_line,
    humanize,
    make_task,
    one_line,
    read_json,
)


def load_clinc150(spec: DatasetSpec, ctx: LoadContext) -> Task:
    path = ctx.root / "clinc150" / "data_full.json"
    data = read_json(path, ctx)
    splits: dict[str, list[Example]] = {}
    labels: set[str] = set()
    dropped: dict[str, int] = {}
    oos_inside = 0
    if data is not None and not isinstance(data, dict):
        ctx.problems.add(str(path), "expected a JSON object of splits ('train', 'val', 'test', 'oos_*')")
        data = None
    if data is not None:
        for split, key in (("train", "train"), ("dev", "val"), ("test", "test")):
            rows = data.get(key)
            if not isinstance(rows, list):
                ctx.problems.add(str(path), f"missing split '{key}' (a list of [text, intent] rows)", key)
                continue
            lines = array_lines(path, key, len(rows), ctx)
            exs = []
            for row, line in zip(rows, lines):
                if not (isinstance(row, list) and len(row) == 2 and all(isinstance(x, str) for x in row)):
                    ctx.problems.add(
                        file_line(path, line), f"expected [text, intent] (two strings), got {row!r:.80}", key
                    )
                    continue
                text, intent = row[0].strip(), humanize(row[1])
                if intent == "oos":
                    oos_inside += 1
                    continue
                if not text or not intent:
                    dropped[split] = dropped.get(split, 0) + 1
                    continue
                labels.add(intent)
                exs.append(Example(one_line(text), intent, line=line))
            splits[split] = exs
    oos = {k: len(v) for k, v in (data or {}).items() if k.startswith("oos") and isinstance(v, list)}
    notes = [
        "out-of-scope rows ignored: "
        + ", ".join(f"{k} {v}" for k, v in sorted(oos.items()))
        + (f", plus {oos_inside} 'oos' rows inside train/val/test" if oos_inside else ""),
        "'dev' is the 'val' split of data_full.json (data_small/data_imbalanced/data_oos_plus are not used)",
        "line numbers point into the pretty-printed data_full.json",
        *drop_notes(dropped, "rows with an empty text or intent"),
    ]
    return make_task(
        spec,
        INTENT_TEMPLATE,
        splits,
        labels=tuple(sorted(labels)),
        notes=notes,
        split_files={s: str(path) for s in splits},
    )


SPECS: list[DatasetSpec] = [
    DatasetSpec(
        "clinc150",
        "cls",
        "clinc150",
        "CLINC150 intent classification, 150 in-scope intents (oos rows ignored)",
        load_clinc150,
        ("clinc150/data_full.json",),
    ),
]
