"""BIG-bench subtasks (GEM summarization, SocialIQA, StrategyQA, presuppositions as NLI) and two
natural-instructions subtasks packaged with them (QASC, WinoGrande-style)."""

from __future__ import annotations

import re
from pathlib import Path

from ..tasks import DEFAULT_METRIC, Example, Task, Template
from .common import (
    DatasetSpec,
    LoadContext,
    array_lines,
    derive_splits,
    file_line,
    make_task,
    nli_template,
    one_line,
    read_json,
    task_instruction,
)

SUM_TEMPLATE = Template(
    instruction=task_instruction("Summarize the article in one sentence."),
    input_prefix="Article: ",
    output_prefix="Summary:",
    example_separator="\n",
)

_BB = "bigbench_subset"
_BB_PATHS = {
    "mlsum_de": "gem/mlsum_de",
    "mlsum_es": "gem/mlsum_es",
    "wikilingua_en": "gem/wikilingua_en",
    "social_iqa": "social_iqa",
    "strategyqa": "strategyqa",
    "presuppositions_as_nli": "presuppositions_as_nli",
    "qasc": "natural_instructions/subtask041_qasc_answer_generation",
    "winogrande": "natural_instructions/subtask029_winogrande_full_object",
}
_BB_SUM_CAPS = {"mlsum_de": (1600, 400), "mlsum_es": (1600, 400)}
_PRESUP = re.compile(r"Sentence 1:(.*?)\nSentence 2:(.*?)(?:The answer is:)?\s*", re.S)
_QASC = re.compile(r"Fact:(.*?)\nQuestion:(.*)", re.S)
_WINO = re.compile(r"Context Word:(.*)", re.S)


def _bb_examples(spec: DatasetSpec, ctx: LoadContext) -> tuple[Path, list[tuple[int, dict]]]:
    key = spec.name.split(":", 1)[1]
    path = ctx.root / _BB / _BB_PATHS[key] / "task.json"
    data = read_json(path, ctx)
    if data is None:
        return path, []
    exs = data.get("examples") if isinstance(data, dict) else None
    if not isinstance(exs, list):
        ctx.problems.add(str(path), "expected a BIG-bench task object with an 'examples' list", "examples")
        return path, []
    lines = array_lines(path, "examples", len(exs), ctx)
    out = []
    for obj, line in zip(exs, lines):
        if not isinstance(obj, dict) or not isinstance(obj.get("input"), str):
            ctx.problems.add(
                file_line(path, line), "expected an example object with a string 'input'", "input"
            )
            continue
        out.append((line, obj))
    return path, out


def _first_target(obj: dict) -> str | None:
    t = obj.get("target")
    if isinstance(t, list):
        t = t[0] if t else None
    return t if isinstance(t, str) else None


def _best_option(obj: dict, where: str, ctx: LoadContext) -> tuple[str, tuple[str, ...]] | None:
    ts = obj.get("target_scores")
    if not isinstance(ts, dict) or not ts or not all(isinstance(v, int | float) for v in ts.values()):
        ctx.problems.add(where, "expected 'target_scores': {choice: score}", "target_scores")
        return None
    opts = tuple(dict.fromkeys(one_line(str(k)) for k in ts))
    best = max(ts.values())
    winners = [k for k, v in ts.items() if v == best]
    if len(winners) != 1:
        ctx.problems.add(
            where, f"{len(winners)} choices share the best score {best}; need exactly one", "target_scores"
        )
        return None
    return one_line(winners[0]), opts


def load_bigbench(spec: DatasetSpec, ctx: LoadContext) -> Task:
    key = spec.name.split(":", 1)[1]
    path, rows = _bb_examples(spec, ctx)
    exs: list[Example] = []
    dropped = 0
    extra: list[str] = []
    metric = DEFAULT_METRIC[spec.category]
    labels: tuple[str, ...] = ()
    for line, obj in rows:
        where = file_line(path, line)
        raw_in: str = obj["input"]
        if key in ("mlsum_de", "mlsum_es", "wikilingua_en", "qasc", "winogrande"):
            tgt = _first_target(obj)
            if tgt is None:
                ctx.problems.add(
                    where, "expected a string 'target' (or a non-empty list of strings)", "target"
                )
                continue
            out = one_line(tgt)
            if key == "qasc":
                m = _QASC.fullmatch(raw_in.strip())
                inp = f"{one_line(m.group(1))}\nQuestion: {one_line(m.group(2))}" if m else one_line(raw_in)
            elif key == "winogrande":
                m = _WINO.fullmatch(raw_in.strip())
                inp = one_line(m.group(1) if m else raw_in).rstrip(".")
            else:
                inp = one_line(raw_in)
            options: tuple[str, ...] = ()
        else:
            best = _best_option(obj, where, ctx)
            if best is None:
                continue
            out, options = best
            if key == "presuppositions_as_nli":
                m = _PRESUP.fullmatch(raw_in.strip() + "\n")
                inp = f"{one_line(m.group(1))}\nHypothesis: {one_line(m.group(2))}" if m else one_line(raw_in)
            else:
                inp = one_line(raw_in)
        if not inp or not out:
            dropped += 1
            continue
        exs.append(Example(inp, out, options, line=line))
    if key in ("social_iqa", "strategyqa", "presuppositions_as_nli"):
        metric = "accuracy"
        option_sets = {frozenset(e.options) for e in exs}
        if key != "social_iqa" and len(option_sets) == 1:
            labels = tuple(dict.fromkeys(o for e in exs for o in e.options))
    cap_train, cap_test = _BB_SUM_CAPS.get(key, (None, None))
    splits, note = derive_splits(exs, spec.name, cap_train, cap_test)
    notes = [
        note,
        "line numbers point into the pretty-printed task.json; the canary and task_prefix fields are not used",
    ]
    if dropped:
        notes.append(f"dropped {dropped} examples with an empty input or target")
    if key == "qasc":
        extra.append(
            "natural-instructions subtask041: answer generation from a given fact; output = the first of "
            "the targets (5 examples list a second accepted answer), exact match"
        )
    if key == "winogrande":
        extra.append(
            "natural-instructions subtask029 is NOT WinoGrande multiple choice: given a context word, write "
            "two fill-in-the-blank sentences with their answers (a generation task; output = the first of "
            "up to 94 accepted targets with newlines collapsed, so exact match is a harsh metric)"
        )
    if key in ("social_iqa", "strategyqa"):
        extra.append(
            "multiple choice: options are the target_scores keys (not appended to the input), gold = the "
            "best-scored key; scored by option likelihood"
        )
    if key == "strategyqa":
        extra.append("the free-text 'target' (answer plus explanation) is not used")
    if key == "presuppositions_as_nli":
        extra.append(
            "input = 'Sentence 1' as premise and 'Sentence 2' as hypothesis; the trailing 'The answer is:' "
            "and BIG-bench's task_prefix are dropped"
        )
    if key in _BB_SUM_CAPS or key == "wikilingua_en":
        extra.append(
            "GEM test split as packaged in BIG-bench; newlines in articles and summaries collapsed to spaces"
        )
    return make_task(
        spec,
        _BB_TEMPLATES[key],
        splits,
        labels=labels,
        notes=notes + extra,
        metric=metric,
        split_files={s: str(path) for s in splits},
    )


_BB_TEMPLATES = {
    "mlsum_de": SUM_TEMPLATE,
    "mlsum_es": SUM_TEMPLATE,
    "wikilingua_en": SUM_TEMPLATE,
    "social_iqa": Template(
        instruction=task_instruction("Answer the question about the social situation."),
        input_prefix="Question: ",
        output_prefix="Answer:",
    ),
    "strategyqa": Template(
        instruction=task_instruction("Answer the question with Yes or No."),
        input_prefix="Question: ",
        output_prefix="Answer:",
    ),
    "presuppositions_as_nli": nli_template(True),
    "qasc": Template(
        instruction=task_instruction("Answer the question using the given fact."),
        input_prefix="Fact: ",
        output_prefix="Answer:",
    ),
    "winogrande": Template(
        instruction=task_instruction(
            "Given a context word, write two fill-in-the-blank sentences about two related objects, each with its answer."
        ),
        input_prefix="Context word: ",
        output_prefix="Output:",
    ),
}

_BB_META = {
    "mlsum_de": ("sum", "MLSUM German news summarization (GEM test split via BIG-bench)"),
    "mlsum_es": ("sum", "MLSUM Spanish news summarization (GEM test split via BIG-bench)"),
    "wikilingua_en": ("sum", "WikiLingua English WikiHow summarization (GEM via BIG-bench)"),
    "social_iqa": ("qa", "SocialIQA commonsense multiple-choice QA about social situations (BIG-bench)"),
    "strategyqa": ("qa", "StrategyQA yes/no questions needing implicit multi-step reasoning (BIG-bench)"),
    "presuppositions_as_nli": ("nli", "Presuppositions as 3-way NLI (BIG-bench)"),
    "qasc": ("qa", "QASC answer generation from a given science fact (natural-instructions subtask041)"),
    "winogrande": (
        "other",
        "WinoGrande-style pair writing from a context word (natural-instructions subtask029)",
    ),
}


def specs(root: Path) -> list[DatasetSpec]:
    """One spec per BIG-bench subtask present under ``root``."""
    return [
        DatasetSpec(f"bigbench:{key}", cat, _BB, desc, load_bigbench, ())
        for key, (cat, desc) in _BB_META.items()
        if (root / _BB / _BB_PATHS[key] / "task.json").is_file()
    ]
