"""GSM8K grade-school math word problems: the final number, or the worked solution (``gsm8k_cot``)."""

from __future__ import annotations

import re

from ..tasks import Example, Task, Template
from .common import (
    DatasetSpec,
    LoadContext,
    drop_notes,
    file_line,
    make_task,
    one_line,
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


def load_gsm8k(spec: DatasetSpec, cx: LoadContext) -> Task:
    cot = spec.name == "gsm8k_cot"
    d = cx.root / "gsm8k"
    splits: dict[str, list[Example]] = {}
    dropped: dict[str, int] = {}
    for split in ("train", "test"):
        path = d / f"{split}.jsonl"
        exs: list[Example] = []
        for line, obj in read_jsonl(path, cx):
            q, a = obj.get("question"), obj.get("answer")
            ok = True
            for k, v in (("question", q), ("answer", a)):
                if not isinstance(v, str):
                    cx.problems.add(file_line(path, line), f"missing or not a string ({type(v).__name__})", k)
                    ok = False
            if not ok:
                continue
            if a.count("####") != 1:  # type: ignore[union-attr]
                cx.problems.add(
                    file_line(path, line), "the answer must end with one '#### <number>' line", "answer"
                )
                continue
            body, final = a.split("####")  # type: ignore[union-attr]
            final = final.strip().replace(",", "")
            if not _GSM_NUM.fullmatch(final):
                cx.problems.add(
                    file_line(path, line), f"final answer {final!r} after '####' is not a number", "answer"
                )
                continue
            q = one_line(q)  # type: ignore[arg-type]
            if not q:
                dropped[split] = dropped.get(split, 0) + 1
                continue
            if cot:
                steps = [ln.strip() for ln in body.split("\n") if ln.strip()]
                out = "\n".join([*steps, f"#### {final}"])
            else:
                out = final
            exs.append(Example(q, out, line=line))
        splits[split] = exs
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
