"""GSM8K grade-school math word problems: the final number, or the worked solution (``gsm8k_cot``)."""

from __future__ import annotations

import re

from ..tasks import Task, Template
from .common import (
    BadRow,
    DatasetSpec,
    LoadContext,
    drop_notes,
    make_task,
    parse_splits,
    read_jsonl,
    task_instruction,
)

MATH_TEMPLATE = Template(
    instruction=task_instruction("Solve the math word problem."),
    input_prefix="Question: ",
    output_prefix="Answer:",
)
MATH_COT_TEMPLATE = Template(
    instruction=task_instruction(
        "Solve the math word problem step by step; give the final answer after '####'."
    ),
    input_prefix="Question: ",
    output_prefix="Answer:",
    example_separator="\n\n",
)

_GSM_NUM = re.compile(r"-?\d+(?:\.\d+)?")


def load_gsm8k(spec: DatasetSpec, ctx: LoadContext) -> Task:
    cot = spec.name == "gsm8k_cot"
    d = ctx.root / "gsm8k"

    def parse(obj: dict) -> tuple[str, str]:
        q, a = obj.get("question"), obj.get("answer")
        wrong = [(f"missing or not a string ({type(v).__name__})", k) for k, v in (("question", q), ("answer", a))
                 if not isinstance(v, str)]  # fmt: skip
        if wrong:
            raise BadRow(*wrong[0], *wrong[1:])
        if a.count("####") != 1:  # type: ignore[union-attr]
            raise BadRow("the answer must end with one '#### <number>' line", "answer")
        body, final = a.split("####")  # type: ignore[union-attr]
        final = final.strip().replace(",", "")
        if not _GSM_NUM.fullmatch(final):
            raise BadRow(f"final answer {final!r} after '####' is not a number", "answer")
        if not cot:
            return q, final  # type: ignore[return-value]
        steps = [ln.strip() for ln in body.split("\n") if ln.strip()]
        return q, "\n".join([*steps, f"#### {final}"])  # type: ignore[return-value]

    files = {s: d / f"{s}.jsonl" for s in ("train", "test")}
    splits, dropped = parse_splits(files, lambda p: read_jsonl(p, ctx), parse, ctx)
    notes = [
        "test_socratic.jsonl (same questions as test, Socratic-style solutions) is not used",
        (
            "output: the worked solution with calculator annotations <<...>> kept, blank lines removed, ending "
            "'#### N' (N without thousands commas); examples are separated by a blank line"
            if cot
            else "output: the final number after '####' (thousands commas removed)"
        ),
        *drop_notes(dropped, "rows with an empty question"),
    ]
    return make_task(
        spec,
        MATH_COT_TEMPLATE if cot else MATH_TEMPLATE,
        splits,
        notes=notes,
        metric="math_accuracy",
        split_files={s: str(d / f"{s}.jsonl") for s in splits},
    )


SPECS: list[DatasetSpec] = [
    DatasetSpec(
        "gsm8k",
        "math",
        "gsm8k",
        "GSM8K grade-school math word problems; output = final number",
        load_gsm8k,
        ("gsm8k/train.jsonl", "gsm8k/test.jsonl"),
    ),
    DatasetSpec(
        "gsm8k_cot",
        "math",
        "gsm8k",
        "GSM8K with the worked solution (chain of thought) ending '#### N' as output",
        load_gsm8k,
        ("gsm8k/train.jsonl", "gsm8k/test.jsonl"),
    ),
]
