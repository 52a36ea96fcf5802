"""GoEmotions multi-label emotion classification of Reddit comments (original 28 labels, Ekman groups,
sentiment groups)."""

from __future__ import annotations

from ..tasks import Task
from .common import (
    BadRow,
    DatasetSpec,
    LoadContext,
    drop_notes,
    make_task,
    parse_splits,
    read_text,
    text_rows,
    text_template,
)

_GOEMO_VARIANT = {"goemotions": "original", "goemotions_ekman": "ekman", "goemotions_group": "group"}


def load_goemotions(spec: DatasetSpec, ctx: LoadContext) -> Task:
    d = ctx.root / "goemotions" / _GOEMO_VARIANT[spec.name]
    lab_text = read_text(d / "labels.txt", ctx)
    labels = [x.strip() for x in (lab_text or "").splitlines() if x.strip()]
    if lab_text is not None and not labels:
        ctx.problems.add(str(d / "labels.txt"), "no labels (one label name per line)")

    def parse(row: str) -> tuple[str, str]:
        parts = row.split("\t")
        if len(parts) != 3:
            raise BadRow(f"expected 3 tab-separated columns (text, label ids, id), got {len(parts)}")
        ids: set[int] = set()
        for tok in parts[1].split(","):
            tok = tok.strip()
            if not tok.isdigit() or int(tok) >= len(labels):
                raise BadRow(
                    f"label id {tok!r} is not an index into labels.txt (0..{len(labels) - 1})", "labels"
                )
            ids.add(int(tok))
        return parts[0], ", ".join(labels[i] for i in sorted(ids))

    files = {s: d / f"{s}.tsv" for s in ("train", "dev", "test")}
    splits, dropped = parse_splits(files, lambda p: text_rows(p, ctx), parse, ctx)
    noun = "sentiment group" if spec.name == "goemotions_group" else "emotion"
    tmpl = text_template(
        f"You will receive a text input. Your task is to identify every {noun} expressed in the input text "
        "(one or more, separated by commas).",
        "Sentiments:" if spec.name == "goemotions_group" else "Emotions:",
    )
    notes = [
        f"multi-label: output = label names joined with ', ' in labels.txt order ({_GOEMO_VARIANT[spec.name]}/)",
        *drop_notes(dropped, "rows with an empty text"),
    ]
    return make_task(
        spec,
        tmpl,
        splits,
        labels=tuple(labels),
        notes=notes,
        metric="multilabel_f1",
        split_files={s: str(d / f"{s}.tsv") for s in splits},
        label_separator=", ",
    )


SPECS: list[DatasetSpec] = [
    DatasetSpec(
        "goemotions",
        "mlcls",
        "goemotions",
        "GoEmotions multi-label emotion classification of Reddit comments, 28 labels",
        load_goemotions,
        ("goemotions/original/labels.txt", "goemotions/original/train.tsv"),
    ),
    DatasetSpec(
        "goemotions_ekman",
        "mlcls",
        "goemotions",
        "GoEmotions mapped to the 7 Ekman emotion groups (multi-label)",
        load_goemotions,
        ("goemotions/ekman/labels.txt", "goemotions/ekman/train.tsv"),
    ),
    DatasetSpec(
        "goemotions_group",
        "mlcls",
        "goemotions",
        "GoEmotions mapped to 4 sentiment groups (multi-label)",
        load_goemotions,
        ("goemotions/group/labels.txt", "goemotions/group/train.tsv"),
    ),
]
