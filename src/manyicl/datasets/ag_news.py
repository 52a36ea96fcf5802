"""AG News topic classification (4 classes; train/test derived from the official test split)."""

from __future__ import annotations

import csv
import io

from ..tasks import Example, Task
from .common import (
    DatasetSpec,
    LoadContext,
    derive_splits,
    file_line,
    make_task,
    one_line,
    read_text,
    text_template,
)

_AG = {"1": "World", "2": "Sports", "3": "Business", "4": "Sci/Tech"}


def load_ag_news(spec: DatasetSpec, cx: LoadContext) -> Task:
    path = cx.root / "ag_news" / "test.csv"
    text = read_text(path, cx)
    exs: list[Example] = []
    dropped = 0
    if text is not None:
        reader = csv.reader(io.StringIO(text, newline=""))
        start = 1
        for i, row in enumerate(reader):
            line, start = start, reader.line_num + 1
            if i == 0:
                if [x.strip() for x in row] != ["Class Index", "Title", "Description"]:
                    cx.problems.add(
                        file_line(path, line),
                        f"expected the header 'Class Index,Title,Description', got {','.join(row)!r:.80}",
                    )
                continue
            if not row:
                continue
            if len(row) != 3:
                cx.problems.add(
                    file_line(path, line),
                    f"expected 3 columns (Class Index, Title, Description), got {len(row)}",
                )
                continue
            if row[0].strip() not in _AG:
                cx.problems.add(file_line(path, line), f"class index {row[0]!r} is not 1-4", "Class Index")
                continue
            title, desc = one_line(row[1].replace("\\", " ")), one_line(row[2].replace("\\", " "))
            if not title and not desc:
                dropped += 1
                continue
            if not title or not desc:
                joined = title or desc
            else:
                joined = f"{title} {desc}" if title[-1] in ".?!" else f"{title}. {desc}"
            exs.append(Example(joined, _AG[row[0].strip()], line=line))
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
