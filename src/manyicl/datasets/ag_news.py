"""AG News topic classification (4 classes; train/test derived from the official test split)."""

from __future__ import annotations

from ..tasks import Task
from .common import (
    BadRow,
    DatasetSpec,
    LoadContext,
    csv_rows,
    derive_splits,
    make_task,
    one_line,
    parse_splits,
    text_template,
)

_AG = {"1": "World", "2": "Sports", "3": "Business", "4": "Sci/Tech"}


def load_ag_news(spec: DatasetSpec, ctx: LoadContext) -> Task:
    path = ctx.root / "ag_news" / "test.csv"

    def parse(row: list[str]) -> tuple[str, str]:
        if row[0].strip() not in _AG:
            raise BadRow(f"class index {row[0]!r} is not 1-4", "Class Index")
        title, desc = one_line(row[1].replace("\\", " ")), one_line(row[2].replace("\\", " "))
        if not title or not desc:
            joined = title or desc
        else:
            joined = f"{title} {desc}" if title[-1] in ".?!" else f"{title}. {desc}"
        return joined, _AG[row[0].strip()]

    header = ["Class Index", "Title", "Description"]
    read, drops = parse_splits({"all": path}, lambda p: csv_rows(p, ctx, header), parse, ctx)
    exs, dropped = read.get("all", []), drops.get("all", 0)
    splits, note = derive_splits(exs, spec.name)
    tmpl = text_template(
        "You will receive a news article. Your task is to classify the topic of the article.",
        "Topic:",
        input_prefix="Article: ",
    )
    notes = [
        f"only AG News' official test split ({len(exs)} rows) is staged; " + note,
        "input = 'Title. Description' with '\\' line-continuation artefacts replaced by spaces; HTML entity "
        "remnants such as '#39;' are kept as in the source (MetaICL's ag_news keeps them too)",
        "label 'Sci/Tech' (classes.txt says 'Science/Tech'; MetaICL uses 'Sci/Tech')",
    ]
    if dropped:
        notes.append(f"dropped {dropped} rows with an empty title and description")
    return make_task(
        spec,
        tmpl,
        splits,
        labels=tuple(_AG.values()),
        notes=notes,
        split_files={s: str(path) for s in splits},
    )


SPECS: list[DatasetSpec] = [
    DatasetSpec(
        "ag_news",
        "cls",
        "ag_news",
        "AG News topic classification, 4 classes (derived from the test split)",
        load_ag_news,
        ("ag_news/test.csv",),
    ),
]
