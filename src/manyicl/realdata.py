"""Real task data: loaders for the public datasets kept in the shared data folder.

The shared folder (``../shared/data`` next to the repository, or ``$MANYICL_DATA``) holds public datasets in
their original formats (see its README and each ``SOURCE.txt``). This module turns each of them into
:class:`~manyicl.tasks.Task` objects with paper-style templates (Appendix A.2: ``Task: ... Here are some
examples:`` / ``Text: ...`` / ``Intent: ...``), so that meta-training and evaluation can run on real text.

* :func:`shared_catalog` lists what is available (cheap: reads no examples).
* :func:`load_shared_task` / :func:`load_shared_tasks` load tasks; malformed files raise
  :class:`~manyicl.errors.TaskFormatError` naming file, line and field (all problems at once).
* :data:`PAPER_HELD_OUT` proposes paper-like held-out test tasks per category (Table 6 spirit) and
  :data:`SAME_SOURCE` names the tasks built from the same underlying data, which must never be trained on
  alongside a held-out task.

Usable data are kept; what is dropped or derived (empty outputs, out-of-scope rows, unlabeled test files,
splits made by a seeded shuffle) is counted in ``Task.notes``. Content quirks that do not make an example
unusable (duplicates, labels differing only in case) are left for :func:`manyicl.tasks.check_quality`.
"""

from __future__ import annotations

import csv
import io
import json
import os
import random
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from difflib import get_close_matches
from pathlib import Path
from typing import Any

from .errors import Collector, TaskFormatError
from .tasks import DEFAULT_METRIC, Example, Task, Template, validate_task

SPLIT_SEED = 20240917
"""Seed of the shuffle that derives train/test splits for datasets that ship only one split."""
TEST_FRACTION = 0.2

# --------------------------------------------------------------------------------------------
# Where the data is
# --------------------------------------------------------------------------------------------


def default_data_dir() -> Path | None:
    """``$MANYICL_DATA`` if set; else the first existing of ``<repo>/../shared/data``,
    ``./../shared/data`` and ``./shared/data``; ``None`` if none exists."""
    env = os.environ.get("MANYICL_DATA")
    if env:
        return Path(env)
    repo = Path(__file__).resolve().parents[2]
    for cand in (
        repo.parent / "shared" / "data",
        Path.cwd().parent / "shared" / "data",
        Path.cwd() / "shared" / "data",
    ):
        if cand.is_dir():
            return cand.resolve()
    return None


@dataclass(frozen=True)
class SharedTask:
    """One task available in the shared data folder."""

    name: str
    """Task name used everywhere, e.g. 'clinc150', 'gsm8k_cot', 'metaicl:glue-sst2'."""
    category: str
    dataset: str
    """Folder under the data dir, e.g. 'clinc150', 'metaicl_rethinking', 'bigbench_subset'."""
    description: str


# --------------------------------------------------------------------------------------------
# Paper-like held-out tasks and same-source groups
# --------------------------------------------------------------------------------------------

PAPER_HELD_OUT: dict[str, list[str]] = {
    "cls": ["clinc150", "banking77"],
    "nli": ["rte", "cb", "bigbench:presuppositions_as_nli"],
    "qa": ["bigbench:social_iqa", "bigbench:strategyqa"],
    "sum": ["bigbench:mlsum_de", "bigbench:mlsum_es"],
    "math": ["gsm8k"],
    "mlcls": ["goemotions"],
}
"""Proposed held-out test tasks per category, in the spirit of the paper's Table 6 (CLINC150 and Banking77
for CLS, RTE/CB-style NLI, multilingual summarization, GoEmotions for ML-CLS) with what is available here."""

_SAME_SOURCE_GROUPS: list[tuple[str, ...]] = [
    # held-out candidates and every other task built from the same underlying data
    ("rte", "metaicl:glue-rte", "metaicl:superglue-rte"),
    ("cb", "metaicl:superglue-cb"),
    ("goemotions", "goemotions_ekman", "goemotions_group"),
    ("gsm8k", "gsm8k_cot"),
    # SST is built from the Pang & Lee Rotten Tomatoes sentences
    ("sst2", "metaicl:glue-sst2", "metaicl:rotten_tomatoes"),
    ("ag_news", "metaicl:ag_news"),
    ("trec", "metaicl:trec", "metaicl:trec-finegrained"),
    ("bigbench:social_iqa", "metaicl:social_i_qa"),
    ("bigbench:qasc", "metaicl:qasc"),
    ("bigbench:winogrande", "metaicl:wino_grande"),
    # same data inside MetaICL
    ("metaicl:quartz-no_knowledge", "metaicl:quartz-with_knowledge"),
    ("metaicl:squad-no_context", "metaicl:squad-with_context", "metaicl:lama-squad", "metaicl:glue-qnli"),
    ("metaicl:kilt_hotpotqa", "metaicl:hotpot_qa"),
    ("metaicl:kilt_trex", "metaicl:lama-trex"),
    ("metaicl:race-high", "metaicl:race-middle"),
    (
        "metaicl:ethos-directed_vs_generalized",
        "metaicl:ethos-disability",
        "metaicl:ethos-gender",
        "metaicl:ethos-national_origin",
        "metaicl:ethos-race",
        "metaicl:ethos-religion",
        "metaicl:ethos-sexual_orientation",
    ),
]
# clinc150 and banking77 have no MetaICL copy (checked: no clinc/banking folder in metaicl_rethinking).


def _build_same_source() -> dict[str, list[str]]:
    out: dict[str, list[str]] = {n: [] for tasks in PAPER_HELD_OUT.values() for n in tasks}
    for group in _SAME_SOURCE_GROUPS:
        for name in group:
            lst = out.setdefault(name, [])
            lst.extend(n for n in group if n != name and n not in lst)
    return out


SAME_SOURCE: dict[str, list[str]] = _build_same_source()
"""Task -> other tasks made from the same underlying dataset (symmetric; every PAPER_HELD_OUT task is a key).
When a task is held out, none of these may be trained on. Names absent from a data dir are harmless."""


def same_source_tasks(names: list[str]) -> set[str]:
    """All tasks that share data with any of ``names`` (not including ``names`` themselves)."""
    out = {o for n in names for o in SAME_SOURCE.get(n, [])}
    return out - set(names)


# --------------------------------------------------------------------------------------------
# Templates
# --------------------------------------------------------------------------------------------


def _instr(text: str) -> str:
    return f"Task: {text} Here are some examples:"


INTENT_TEMPLATE = Template(
    instruction=_instr(
        "You will receive a text input. Your task is to classify the intent of the input text."
    ),
    input_prefix="Text: ",
    output_prefix="Intent:",
)
MATH_TEMPLATE = Template(
    instruction=_instr("Solve the math word problem."), input_prefix="Question: ", output_prefix="Answer:"
)
MATH_COT_TEMPLATE = Template(
    instruction=_instr("Solve the math word problem step by step; give the final answer after '####'."),
    input_prefix="Question: ",
    output_prefix="Answer:",
    example_separator="\n\n",
)
METAICL_TEMPLATE = Template(instruction="", input_prefix="Input: ", output_prefix="Output:")
SUM_TEMPLATE = Template(
    instruction=_instr("Summarize the article in one sentence."),
    input_prefix="Article: ",
    output_prefix="Summary:",
    example_separator="\n",
)


def _nli_template(three_way: bool) -> Template:
    what = (
        "Decide whether the premise entails, contradicts, or is neutral towards the hypothesis."
        if three_way
        else "Decide whether the premise entails the hypothesis."
    )
    return Template(instruction=_instr(what), input_prefix="Premise: ", output_prefix="Answer:")


def _text_template(what: str, output_prefix: str, input_prefix: str = "Text: ") -> Template:
    return Template(instruction=_instr(what), input_prefix=input_prefix, output_prefix=output_prefix)


# --------------------------------------------------------------------------------------------
# Reading helpers (parsed files are cached within one call, never on disk)
# --------------------------------------------------------------------------------------------


@dataclass
class _Ctx:
    root: Path
    c: Collector = field(default_factory=Collector)
    cache: dict[Any, Any] = field(default_factory=dict)


def _one_line(s: str) -> str:
    """Collapse all whitespace runs (newlines included) to single spaces."""
    return " ".join(s.split())


def _humanize(label: str) -> str:
    return label.strip().replace("_", " ").lower()


def _read_text(path: Path, cx: _Ctx) -> str | None:
    key = ("text", path)
    if key in cx.cache:
        return cx.cache[key]
    text: str | None = None
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        cx.c.add(str(path), "file not found (is the shared data folder complete? see its SOURCE.txt)")
    except OSError as e:
        cx.c.add(str(path), f"cannot read: {e.strerror}")
    else:
        try:
            text = raw.decode("utf-8-sig")
        except UnicodeDecodeError as e:
            line = raw[: e.start].count(b"\n") + 1
            cx.c.add(f"{path}:{line}", f"not UTF-8 (byte {e.start}); re-save the file as UTF-8")
    cx.cache[key] = text
    return text


def _read_jsonl(path: Path, cx: _Ctx) -> list[tuple[int, dict]]:
    """(line number, object) for every non-blank line; bad lines are recorded as errors."""
    key = ("jsonl", path)
    if key in cx.cache:
        return cx.cache[key]
    out: list[tuple[int, dict]] = []
    text = _read_text(path, cx)
    if text is not None:
        loads = json.loads
        for lineno, line in enumerate(text.split("\n"), 1):
            if not line.strip():
                continue
            try:
                obj = loads(line)
            except json.JSONDecodeError as e:
                cx.c.add(
                    f"{path}:{lineno}",
                    f"malformed JSON ({e.msg} at column {e.colno}); each line must be one JSON object",
                )
                continue
            if not isinstance(obj, dict):
                cx.c.add(f"{path}:{lineno}", f"expected a JSON object, got {type(obj).__name__}")
                continue
            out.append((lineno, obj))
        if not out and not any(p.where.startswith(f"{path}:") for p in cx.c.errors):
            cx.c.add(str(path), "no examples in this file")
    cx.cache[key] = out
    return out


def _read_json(path: Path, cx: _Ctx) -> Any:
    key = ("json", path)
    if key in cx.cache:
        return cx.cache[key]
    obj = None
    text = _read_text(path, cx)
    if text is not None:
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as e:
            cx.c.add(f"{path}:{e.lineno}", f"malformed JSON ({e.msg} at column {e.colno})")
    cx.cache[key] = obj
    return obj


_WS = re.compile(r"[ \t\r\n]*")


def _array_lines(path: Path, key: str, n: int, cx: _Ctx) -> list[int]:
    """1-based line of each element of the array stored under ``"key": [...]`` in a JSON file.

    Lets messages about pretty-printed JSON name real lines. Falls back to the element's position
    (index + 1) when the array cannot be located unambiguously.
    """
    ck = ("lines", path, key)
    if ck in cx.cache:
        return cx.cache[ck]
    text = _read_text(path, cx) or ""
    dec = json.JSONDecoder()
    result = list(range(1, n + 1))
    for m in re.finditer('"' + re.escape(key) + r'"\s*:\s*\[', text):
        pos, last = m.end(), m.end()
        line = text.count("\n", 0, pos) + 1
        lines: list[int] = []
        try:
            while True:
                pos = _WS.match(text, pos).end()  # type: ignore[union-attr]
                if text[pos] == "]":
                    break
                line += text.count("\n", last, pos)
                last = pos
                lines.append(line)
                _, pos = dec.raw_decode(text, pos)
                pos = _WS.match(text, pos).end()  # type: ignore[union-attr]
                if text[pos] == ",":
                    pos += 1
        except (ValueError, IndexError):
            continue
        if len(lines) == n:
            result = lines
            break
    cx.cache[ck] = result
    return result


def _at(path: Path, line: int) -> str:
    return f"{path}:{line}"


def _derive_splits(
    exs: list[Example], name: str, cap_train: int | None = None, cap_test: int | None = None
) -> tuple[dict[str, list[Example]], str]:
    """Deterministic 80/20 train/test split by a seeded shuffle; identical inputs stay on one side."""
    groups: dict[str, list[Example]] = {}
    for ex in exs:
        groups.setdefault(" ".join(ex.input.lower().split()), []).append(ex)
    keys = list(groups)
    random.Random(f"{SPLIT_SEED}:{name}").shuffle(keys)
    n_test = round(len(exs) * TEST_FRACTION)
    train: list[Example] = []
    test: list[Example] = []
    for k in keys:
        (test if len(test) < n_test else train).extend(groups[k])
    dropped = []
    if cap_test is not None and len(test) > cap_test:
        dropped.append(f"test capped at {cap_test} (of {len(test)})")
        test = test[:cap_test]
    if cap_train is not None and len(train) > cap_train:
        dropped.append(f"train capped at {cap_train} (of {len(train)})")
        train = train[:cap_train]
    train.sort(key=lambda e: e.line)  # file order within each side (the caps above cut the shuffled order)
    test.sort(key=lambda e: e.line)
    note = (
        f"no official train/test split: 'train' ({len(train)}) and 'test' ({len(test)}) are derived from "
        f"{len(exs)} examples by a seeded shuffle (seed {SPLIT_SEED}, {1 - TEST_FRACTION:.0%}/{TEST_FRACTION:.0%}; "
        "identical inputs kept on one side)" + (("; " + ", ".join(dropped)) if dropped else "")
    )
    return {"train": train, "test": test}, note


def _drop_note(dropped: dict[str, int], what: str) -> list[str]:
    return [f"dropped {n} {what} in {split}" for split, n in dropped.items() if n]


# --------------------------------------------------------------------------------------------
# Per-dataset loaders
# --------------------------------------------------------------------------------------------


def _load_clinc(spec: _Spec, cx: _Ctx) -> Task:
    path = cx.root / "clinc150" / "data_full.json"
    data = _read_json(path, cx)
    splits: dict[str, list[Example]] = {}
    labels: set[str] = set()
    dropped: dict[str, int] = {}
    oos_inside = 0
    if data is not None and not isinstance(data, dict):
        cx.c.add(str(path), "expected a JSON object of splits ('train', 'val', 'test', 'oos_*')")
        data = None
    if data is not None:
        for split, key in (("train", "train"), ("dev", "val"), ("test", "test")):
            rows = data.get(key)
            if not isinstance(rows, list):
                cx.c.add(str(path), f"missing split '{key}' (a list of [text, intent] rows)", key)
                continue
            lines = _array_lines(path, key, len(rows), cx)
            exs = []
            for row, line in zip(rows, lines):
                if not (isinstance(row, list) and len(row) == 2 and all(isinstance(x, str) for x in row)):
                    cx.c.add(_at(path, line), f"expected [text, intent] (two strings), got {row!r:.80}", key)
                    continue
                text, intent = row[0].strip(), _humanize(row[1])
                if intent == "oos":
                    oos_inside += 1
                    continue
                if not text or not intent:
                    dropped[split] = dropped.get(split, 0) + 1
                    continue
                labels.add(intent)
                exs.append(Example(_one_line(text), intent, line=line))
            splits[split] = exs
    oos = {k: len(v) for k, v in (data or {}).items() if k.startswith("oos") and isinstance(v, list)}
    notes = [
        "out-of-scope rows ignored: "
        + ", ".join(f"{k} {v}" for k, v in sorted(oos.items()))
        + (f", plus {oos_inside} 'oos' rows inside train/val/test" if oos_inside else ""),
        "'dev' is the 'val' split of data_full.json (data_small/data_imbalanced/data_oos_plus are not used)",
        "line numbers point into the pretty-printed data_full.json",
        *_drop_note(dropped, "rows with an empty text or intent"),
    ]
    return _task(
        spec,
        INTENT_TEMPLATE,
        splits,
        labels=tuple(sorted(labels)),
        notes=notes,
        split_files={s: str(path) for s in splits},
    )


def _load_banking77(spec: _Spec, cx: _Ctx) -> Task:
    d = cx.root / "banking77"
    cats = _read_json(d / "categories.json", cx)
    order: list[str] = []
    if isinstance(cats, list) and all(isinstance(x, str) for x in cats):
        order = [_humanize(x) for x in cats]
    elif cats is not None:
        cx.c.add(str(d / "categories.json"), "expected a JSON list of category names")
    splits: dict[str, list[Example]] = {}
    seen: set[str] = set()
    dropped: dict[str, int] = {}
    for split in ("train", "test"):
        path = d / f"{split}.csv"
        text = _read_text(path, cx)
        if text is None:
            continue
        reader = csv.reader(io.StringIO(text, newline=""))
        exs: list[Example] = []
        start = 1
        for i, row in enumerate(reader):
            line, start = start, reader.line_num + 1
            if i == 0:
                if [x.strip() for x in row] != ["text", "category"]:
                    cx.c.add(
                        _at(path, line), f"expected the header 'text,category', got {','.join(row)!r:.80}"
                    )
                continue
            if not row:
                continue
            if len(row) != 2:
                cx.c.add(_at(path, line), f"expected 2 columns (text, category), got {len(row)}")
                continue
            txt, cat = _one_line(row[0]), _humanize(row[1])
            if not cat:
                cx.c.add(_at(path, line), "empty category", "category")
                continue
            if order and cat not in order:
                cx.c.add(_at(path, line), f"category {row[1]!r} is not in categories.json", "category")
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
        *_drop_note(dropped, "rows with an empty text"),
    ]
    return _task(
        spec,
        INTENT_TEMPLATE,
        splits,
        labels=labels,
        notes=notes,
        split_files={s: str(d / f"{s}.csv") for s in splits},
    )


_GSM_NUM = re.compile(r"-?\d+(?:\.\d+)?")


def _load_gsm8k(spec: _Spec, cx: _Ctx) -> Task:
    cot = spec.name == "gsm8k_cot"
    d = cx.root / "gsm8k"
    splits: dict[str, list[Example]] = {}
    dropped: dict[str, int] = {}
    for split in ("train", "test"):
        path = d / f"{split}.jsonl"
        exs: list[Example] = []
        for line, obj in _read_jsonl(path, cx):
            q, a = obj.get("question"), obj.get("answer")
            ok = True
            for k, v in (("question", q), ("answer", a)):
                if not isinstance(v, str):
                    cx.c.add(_at(path, line), f"missing or not a string ({type(v).__name__})", k)
                    ok = False
            if not ok:
                continue
            if a.count("####") != 1:  # type: ignore[union-attr]
                cx.c.add(_at(path, line), "the answer must end with one '#### <number>' line", "answer")
                continue
            body, final = a.split("####")  # type: ignore[union-attr]
            final = final.strip().replace(",", "")
            if not _GSM_NUM.fullmatch(final):
                cx.c.add(_at(path, line), f"final answer {final!r} after '####' is not a number", "answer")
                continue
            q = _one_line(q)  # type: ignore[arg-type]
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
        *_drop_note(dropped, "rows with an empty question"),
    ]
    return _task(
        spec,
        MATH_COT_TEMPLATE if cot else MATH_TEMPLATE,
        splits,
        notes=notes,
        metric="math_accuracy",
        split_files={s: str(d / f"{s}.jsonl") for s in splits},
    )


_GOEMO_VARIANT = {"goemotions": "original", "goemotions_ekman": "ekman", "goemotions_group": "group"}


def _load_goemotions(spec: _Spec, cx: _Ctx) -> Task:
    d = cx.root / "goemotions" / _GOEMO_VARIANT[spec.name]
    lab_text = _read_text(d / "labels.txt", cx)
    labels = [x.strip() for x in (lab_text or "").splitlines() if x.strip()]
    if lab_text is not None and not labels:
        cx.c.add(str(d / "labels.txt"), "no labels (one label name per line)")
    splits: dict[str, list[Example]] = {}
    dropped: dict[str, int] = {}
    for split in ("train", "dev", "test"):
        path = d / f"{split}.tsv"
        text = _read_text(path, cx)
        if text is None:
            continue
        exs: list[Example] = []
        for line, row in enumerate(text.split("\n"), 1):
            if not row.strip():
                continue
            parts = row.rstrip("\r").split("\t")
            if len(parts) != 3:
                cx.c.add(
                    _at(path, line),
                    f"expected 3 tab-separated columns (text, label ids, id), got {len(parts)}",
                )
                continue
            ids: set[int] = set()
            bad = False
            for tok in parts[1].split(","):
                tok = tok.strip()
                if not tok.isdigit() or int(tok) >= len(labels):
                    cx.c.add(
                        _at(path, line),
                        f"label id {tok!r} is not an index into labels.txt (0..{len(labels) - 1})",
                        "labels",
                    )
                    bad = True
                    break
                ids.add(int(tok))
            if bad:
                continue
            txt = _one_line(parts[0])
            if not txt:
                dropped[split] = dropped.get(split, 0) + 1
                continue
            exs.append(Example(txt, ", ".join(labels[i] for i in sorted(ids)), line=line))
        splits[split] = exs
    noun = "sentiment group" if spec.name == "goemotions_group" else "emotion"
    tmpl = _text_template(
        f"You will receive a text input. Your task is to identify every {noun} expressed in the input text "
        "(one or more, separated by commas).",
        "Sentiments:" if spec.name == "goemotions_group" else "Emotions:",
    )
    notes = [
        f"multi-label: output = label names joined with ', ' in labels.txt order ({_GOEMO_VARIANT[spec.name]}/)",
        *_drop_note(dropped, "rows with an empty text"),
    ]
    return _task(
        spec,
        tmpl,
        splits,
        labels=tuple(labels),
        notes=notes,
        metric="multilabel_f1",
        split_files={s: str(d / f"{s}.tsv") for s in splits},
        label_separator=", ",
    )


_SUPERGLUE_LABELS = {
    "rte": ("entailment", "not entailment"),
    "cb": ("entailment", "contradiction", "neutral"),
}


def _load_superglue(spec: _Spec, cx: _Ctx) -> Task:
    d = cx.root / spec.name
    allowed = _SUPERGLUE_LABELS[spec.name]
    splits: dict[str, list[Example]] = {}
    dropped: dict[str, int] = {}
    files = {"train": d / "train.jsonl", "test": d / "val.jsonl"}
    for split, path in files.items():
        exs: list[Example] = []
        for line, obj in _read_jsonl(path, cx):
            ok = True
            for k in ("premise", "hypothesis", "label"):
                if not isinstance(obj.get(k), str):
                    cx.c.add(_at(path, line), f"missing or not a string ({type(obj.get(k)).__name__})", k)
                    ok = False
            if not ok:
                continue
            label = obj["label"].strip().replace("_", " ")
            if label not in allowed:
                cx.c.add(_at(path, line), f"label {obj['label']!r} is not one of {list(allowed)}", "label")
                continue
            prem, hyp = _one_line(obj["premise"]), _one_line(obj["hypothesis"])
            if not prem or not hyp:
                dropped[split] = dropped.get(split, 0) + 1
                continue
            exs.append(Example(f"{prem}\nHypothesis: {hyp}", label, line=line))
        splits[split] = exs
    notes = [
        "test.jsonl has no labels (SuperGLUE hidden test); 'test' here is the labelled validation split (val.jsonl)",
        *_drop_note(dropped, "rows with an empty premise or hypothesis"),
    ]
    return _task(
        spec,
        _nli_template(len(allowed) == 3),
        splits,
        labels=allowed,
        notes=notes,
        split_files={s: str(p) for s, p in files.items()},
    )


def _load_sst2(spec: _Spec, cx: _Ctx) -> Task:
    d = cx.root / "sst2"
    names = {"0": "negative", "1": "positive"}
    splits: dict[str, list[Example]] = {}
    dropped: dict[str, int] = {}
    for split in ("train", "dev", "test"):
        path = d / f"stsa.binary.{split}"
        text = _read_text(path, cx)
        if text is None:
            continue
        exs: list[Example] = []
        for line, row in enumerate(text.split("\n"), 1):
            if not row.strip():
                continue
            lab, _, sent = row.partition(" ")
            if lab not in names:
                cx.c.add(_at(path, line), f"expected '<0|1> <sentence>', got label {lab!r:.20}", "label")
                continue
            sent = _one_line(sent)
            if not sent:
                dropped[split] = dropped.get(split, 0) + 1
                continue
            exs.append(Example(sent, names[lab], line=line))
        splits[split] = exs
    tmpl = _text_template(
        "You will receive a text input. Your task is to classify the sentiment of the input text.",
        "Sentiment:",
    )
    notes = [
        "sentences are lower-cased and tokenized as in the stsa.binary release",
        *_drop_note(dropped, "empty sentences"),
    ]
    return _task(
        spec,
        tmpl,
        splits,
        labels=("negative", "positive"),
        notes=notes,
        split_files={s: str(d / f"stsa.binary.{s}") for s in splits},
    )


_TREC = {
    "ABBR": "abbreviation",
    "DESC": "description",
    "ENTY": "entity",
    "HUM": "human",
    "LOC": "location",
    "NUM": "number",
}


def _load_trec(spec: _Spec, cx: _Ctx) -> Task:
    d = cx.root / "trec"
    splits: dict[str, list[Example]] = {}
    dropped: dict[str, int] = {}
    for split in ("train", "test"):
        path = d / f"{split}.txt"
        text = _read_text(path, cx)
        if text is None:
            continue
        exs: list[Example] = []
        for line, row in enumerate(text.split("\n"), 1):
            if not row.strip():
                continue
            head, _, q = row.partition(" ")
            coarse = head.split(":", 1)[0]
            if ":" not in head or coarse not in _TREC:
                cx.c.add(
                    _at(path, line),
                    f"expected 'COARSE:fine question' with COARSE in {sorted(_TREC)}, got {head!r:.30}",
                    "label",
                )
                continue
            q = _one_line(q)
            if not q:
                dropped[split] = dropped.get(split, 0) + 1
                continue
            exs.append(Example(q, _TREC[coarse], line=line))
        splits[split] = exs
    tmpl = _text_template(
        "You will receive a question. Your task is to classify the type of answer the question asks for.",
        "Type:",
        input_prefix="Question: ",
    )
    notes = [
        "labels: the 6 coarse classes (fine classes dropped), humanized (ABBR -> abbreviation, ...)",
        *_drop_note(dropped, "empty questions"),
    ]
    return _task(
        spec,
        tmpl,
        splits,
        labels=tuple(_TREC.values()),
        notes=notes,
        split_files={s: str(d / f"{s}.txt") for s in splits},
    )


_AG = {"1": "World", "2": "Sports", "3": "Business", "4": "Sci/Tech"}


def _load_ag_news(spec: _Spec, cx: _Ctx) -> Task:
    path = cx.root / "ag_news" / "test.csv"
    text = _read_text(path, cx)
    exs: list[Example] = []
    dropped = 0
    if text is not None:
        reader = csv.reader(io.StringIO(text, newline=""))
        start = 1
        for i, row in enumerate(reader):
            line, start = start, reader.line_num + 1
            if i == 0:
                if [x.strip() for x in row] != ["Class Index", "Title", "Description"]:
                    cx.c.add(
                        _at(path, line),
                        f"expected the header 'Class Index,Title,Description', got {','.join(row)!r:.80}",
                    )
                continue
            if not row:
                continue
            if len(row) != 3:
                cx.c.add(
                    _at(path, line), f"expected 3 columns (Class Index, Title, Description), got {len(row)}"
                )
                continue
            if row[0].strip() not in _AG:
                cx.c.add(_at(path, line), f"class index {row[0]!r} is not 1-4", "Class Index")
                continue
            title, desc = _one_line(row[1].replace("\\", " ")), _one_line(row[2].replace("\\", " "))
            if not title and not desc:
                dropped += 1
                continue
            if not title or not desc:
                joined = title or desc
            else:
                joined = f"{title} {desc}" if title[-1] in ".?!" else f"{title}. {desc}"
            exs.append(Example(joined, _AG[row[0].strip()], line=line))
    splits, note = _derive_splits(exs, spec.name)
    tmpl = _text_template(
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
    return _task(
        spec,
        tmpl,
        splits,
        labels=tuple(_AG.values()),
        notes=notes,
        split_files={s: str(path) for s in splits},
    )


# --- MetaICL --------------------------------------------------------------------------------

_METAICL = "metaicl_rethinking"
_METAICL_TRAIN = "_16_42_train.jsonl"
_METAICL_DEV = "_16_42_dev.jsonl"
_METAICL_SUM = {"xsum", "gigaword"}
"""Free-form MetaICL tasks that are summarization: category 'sum', metric ROUGE-L."""


def _norm(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.split(":")[-1].lower())


def _metaicl_meta(root: Path, cache: dict | None = None) -> dict[str, Any]:
    """Category sets from config/*.json (names normalised: prefixes like 'unifiedqa:' dropped)."""
    key = ("metaicl_meta", root)
    if cache is not None and key in cache:
        return cache[key]
    cfg = root / _METAICL / "config"

    def load(p: Path) -> Any:
        try:
            return json.loads(p.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None

    nli = load(cfg / "non_nli_to_nli.json") or {}
    qa = load(cfg / "qa_to_qa.json") or {}
    nqa = load(cfg / "non_qa_to_qa.json") or {}
    meta = {
        "nli": {_norm(n) for n in nli.get("test", [])},
        "qa": {_norm(n) for v in qa.values() if isinstance(v, list) for n in v}
        | {_norm(n) for n in nqa.get("test", [])},
        "load": load,
    }
    if cache is not None:
        cache[key] = meta
    return meta


def _metaicl_task_config(root: Path, task: str, meta: dict[str, Any]) -> dict[str, Any] | None:
    key = ("cfg", task)
    if key not in meta:
        meta[key] = meta["load"](root / _METAICL / "config" / "tasks" / f"{task}.json")
    cfg = meta[key]
    return cfg if isinstance(cfg, dict) else None


_METAICL_NLI_EXTRA = {"superglue-rte"}
"""NLI tasks that MetaICL's configs list in no NLI split (superglue-rte is the same data as glue-rte)."""


def _metaicl_category(root: Path, task: str, meta: dict[str, Any]) -> str:
    n = _norm(task)
    if n in meta["nli"] or task in _METAICL_NLI_EXTRA:
        return "nli"
    if n in meta["qa"]:
        return "qa"
    cfg = _metaicl_task_config(root, task, meta) or {}
    ttype = cfg.get("task_type")
    if ttype == "classification":
        return "cls"
    if ttype == "multi-choice":
        return "qa"
    if task in _METAICL_SUM:
        return "sum"
    return "other"


def _metaicl_folders(root: Path) -> list[str]:
    d = root / _METAICL
    if not d.is_dir():
        return []
    return sorted(
        p.name for p in d.iterdir() if p.is_dir() and p.name != "config" and not p.name.startswith(".")
    )


def _metaicl_test_file(d: Path, task: str) -> Path | None:
    pat = re.compile(re.escape(task) + r"_\d+_\d+_test\.jsonl")
    found = sorted(p for p in d.iterdir() if pat.fullmatch(p.name))
    return found[0] if found else None


def _scalar_str(v: Any) -> str | None:
    if isinstance(v, str):
        return v
    if isinstance(v, bool) or v is None:
        return None if v is None else str(v).lower()
    if isinstance(v, int | float):
        return str(v)
    return None


def _load_metaicl(spec: _Spec, cx: _Ctx) -> Task:
    task = spec.name.split(":", 1)[1]
    d = cx.root / _METAICL / task
    meta = _metaicl_meta(cx.root, cx.cache)
    cfg = _metaicl_task_config(cx.root, task, meta)
    files: dict[str, Path] = {"train": d / f"{task}{_METAICL_TRAIN}", "dev": d / f"{task}{_METAICL_DEV}"}
    test = _metaicl_test_file(d, task) if d.is_dir() else None
    if test is not None:
        files["test"] = test
    splits: dict[str, list[Example]] = {}
    dropped: dict[str, int] = {}
    dedup = 0
    any_options = False
    for split, path in files.items():
        exs: list[Example] = []
        for line, obj in _read_jsonl(path, cx):
            where = _at(path, line)
            inp, out = _scalar_str(obj.get("input")), _scalar_str(obj.get("output"))
            if inp is None:
                cx.c.add(where, f"missing or not text ({type(obj.get('input')).__name__})", "input")
            if out is None:
                cx.c.add(where, f"missing or not text ({type(obj.get('output')).__name__})", "output")
            raw_opts = obj.get("options") or []
            opts: list[str] = []
            if not isinstance(raw_opts, list):
                cx.c.add(where, f"must be a list, got {type(raw_opts).__name__}", "options")
                continue
            for o in raw_opts:
                s = _scalar_str(o)
                if s is None:
                    cx.c.add(where, f"option {o!r:.40} is not text", "options")
                    break
                s = _one_line(s)
                if s and s not in opts:
                    opts.append(s)
            else:
                if inp is None or out is None:
                    continue
                inp, out = _one_line(inp), _one_line(out)
                dedup += len(raw_opts) - len(opts)
                if not inp or not out:
                    dropped[split] = dropped.get(split, 0) + 1
                    continue
                if opts and out not in opts:
                    cx.c.add(
                        where,
                        f"gold output {out!r:.60} is not one of the options {opts[:6]!r:.120}",
                        "options",
                    )
                    continue
                any_options = any_options or bool(opts)
                exs.append(Example(inp, out, tuple(opts), line=line))
        splits[split] = exs
    category = spec.category
    swapped = False
    if category in ("cls", "nli") and len({e.output for e in splits.get("train", [])}) < 2:
        if len({e.output for e in splits.get("dev", [])}) >= 2:
            splits["train"], splits["dev"] = splits["dev"], splits["train"]
            files["train"], files["dev"] = files["dev"], files["train"]
            swapped = True
    labels: tuple[str, ...] = ()
    if cfg and cfg.get("task_type") == "classification" and isinstance(cfg.get("options"), list):
        labels = tuple(s for s in (_scalar_str(o) for o in cfg["options"]) if s is not None)
        labels = tuple(dict.fromkeys(x.strip() for x in labels if x.strip()))
    metric = "accuracy" if any_options else ("rouge_l" if category == "sum" else "exact_match")
    notes = [
        "MetaICL/CrossFit preprocessing (Rethinking-demonstrations release): 'train' and 'dev' are the k=16, "
        "seed=42 demonstration files (16 examples each)",
    ]
    if swapped:
        notes.append(
            f"the k=16 train file holds a single label, so 'train' is {files['train'].name} and 'dev' is "
            f"{files['dev'].name} (both are 16-example samples of the same training data)"
        )
    if test is None:
        notes.append("no test file in the snapshot: only 'train' and 'dev' (16 examples each)")
    else:
        notes.append(f"'test' is {test.name} (cut to its first 3000 lines where longer; see SOURCE.txt)")
    if cfg is None:
        notes.append(f"no config/tasks/{task}.json: category guessed '{category}'")
    if dedup:
        notes.append(f"removed {dedup} duplicate or empty options")
    notes += _drop_note(dropped, "examples with an empty input/output")
    return _task(
        spec,
        METAICL_TEMPLATE,
        splits,
        labels=labels,
        notes=notes,
        metric=metric,
        split_files={s: str(p) for s, p in files.items()},
        family="metaicl",
    )


# --- BIG-bench ------------------------------------------------------------------------------

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


def _bb_examples(spec: _Spec, cx: _Ctx) -> tuple[Path, list[tuple[int, dict]]]:
    key = spec.name.split(":", 1)[1]
    path = cx.root / _BB / _BB_PATHS[key] / "task.json"
    data = _read_json(path, cx)
    if data is None:
        return path, []
    exs = data.get("examples") if isinstance(data, dict) else None
    if not isinstance(exs, list):
        cx.c.add(str(path), "expected a BIG-bench task object with an 'examples' list", "examples")
        return path, []
    lines = _array_lines(path, "examples", len(exs), cx)
    out = []
    for obj, line in zip(exs, lines):
        if not isinstance(obj, dict) or not isinstance(obj.get("input"), str):
            cx.c.add(_at(path, line), "expected an example object with a string 'input'", "input")
            continue
        out.append((line, obj))
    return path, out


def _first_target(obj: dict) -> str | None:
    t = obj.get("target")
    if isinstance(t, list):
        t = t[0] if t else None
    return t if isinstance(t, str) else None


def _best_option(obj: dict, where: str, cx: _Ctx) -> tuple[str, tuple[str, ...]] | None:
    ts = obj.get("target_scores")
    if not isinstance(ts, dict) or not ts or not all(isinstance(v, int | float) for v in ts.values()):
        cx.c.add(where, "expected 'target_scores': {choice: score}", "target_scores")
        return None
    opts = tuple(dict.fromkeys(_one_line(str(k)) for k in ts))
    best = max(ts.values())
    winners = [k for k, v in ts.items() if v == best]
    if len(winners) != 1:
        cx.c.add(
            where, f"{len(winners)} choices share the best score {best}; need exactly one", "target_scores"
        )
        return None
    return _one_line(winners[0]), opts


def _load_bigbench(spec: _Spec, cx: _Ctx) -> Task:
    key = spec.name.split(":", 1)[1]
    path, rows = _bb_examples(spec, cx)
    exs: list[Example] = []
    dropped = 0
    extra: list[str] = []
    metric = DEFAULT_METRIC[spec.category]
    labels: tuple[str, ...] = ()
    for line, obj in rows:
        where = _at(path, line)
        raw_in: str = obj["input"]
        if key in ("mlsum_de", "mlsum_es", "wikilingua_en", "qasc", "winogrande"):
            tgt = _first_target(obj)
            if tgt is None:
                cx.c.add(where, "expected a string 'target' (or a non-empty list of strings)", "target")
                continue
            out = _one_line(tgt)
            if key == "qasc":
                m = _QASC.fullmatch(raw_in.strip())
                inp = (
                    f"{_one_line(m.group(1))}\nQuestion: {_one_line(m.group(2))}" if m else _one_line(raw_in)
                )
            elif key == "winogrande":
                m = _WINO.fullmatch(raw_in.strip())
                inp = _one_line(m.group(1) if m else raw_in).rstrip(".")
            else:
                inp = _one_line(raw_in)
            options: tuple[str, ...] = ()
        else:
            best = _best_option(obj, where, cx)
            if best is None:
                continue
            out, options = best
            if key == "presuppositions_as_nli":
                m = _PRESUP.fullmatch(raw_in.strip() + "\n")
                inp = (
                    f"{_one_line(m.group(1))}\nHypothesis: {_one_line(m.group(2))}"
                    if m
                    else _one_line(raw_in)
                )
            else:
                inp = _one_line(raw_in)
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
    splits, note = _derive_splits(exs, spec.name, cap_train, cap_test)
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
    return _task(
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
        instruction=_instr("Answer the question about the social situation."),
        input_prefix="Question: ",
        output_prefix="Answer:",
    ),
    "strategyqa": Template(
        instruction=_instr("Answer the question with Yes or No."),
        input_prefix="Question: ",
        output_prefix="Answer:",
    ),
    "presuppositions_as_nli": _nli_template(True),
    "qasc": Template(
        instruction=_instr("Answer the question using the given fact."),
        input_prefix="Fact: ",
        output_prefix="Answer:",
    ),
    "winogrande": Template(
        instruction=_instr(
            "Given a context word, write two fill-in-the-blank sentences about two related objects, each with its answer."
        ),
        input_prefix="Context word: ",
        output_prefix="Output:",
    ),
}


# --------------------------------------------------------------------------------------------
# Catalog
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Spec:
    name: str
    category: str
    dataset: str
    description: str
    loader: Callable[[_Spec, _Ctx], Task]
    needs: tuple[str, ...]
    """Files (relative to the data dir) whose presence makes the task available."""


_STATIC: list[_Spec] = [
    _Spec(
        "clinc150",
        "cls",
        "clinc150",
        "CLINC150 intent classification, 150 in-scope intents (oos rows ignored)",
        _load_clinc,
        ("clinc150/data_full.json",),
    ),
    _Spec(
        "banking77",
        "cls",
        "banking77",
        "Banking77 intent classification, 77 fine-grained banking intents",
        _load_banking77,
        ("banking77/train.csv", "banking77/test.csv"),
    ),
    _Spec(
        "gsm8k",
        "math",
        "gsm8k",
        "GSM8K grade-school math word problems; output = final number",
        _load_gsm8k,
        ("gsm8k/train.jsonl", "gsm8k/test.jsonl"),
    ),
    _Spec(
        "gsm8k_cot",
        "math",
        "gsm8k",
        "GSM8K with the worked solution (chain of thought) ending '#### N' as output",
        _load_gsm8k,
        ("gsm8k/train.jsonl", "gsm8k/test.jsonl"),
    ),
    _Spec(
        "goemotions",
        "mlcls",
        "goemotions",
        "GoEmotions multi-label emotion classification of Reddit comments, 28 labels",
        _load_goemotions,
        ("goemotions/original/labels.txt", "goemotions/original/train.tsv"),
    ),
    _Spec(
        "goemotions_ekman",
        "mlcls",
        "goemotions",
        "GoEmotions mapped to the 7 Ekman emotion groups (multi-label)",
        _load_goemotions,
        ("goemotions/ekman/labels.txt", "goemotions/ekman/train.tsv"),
    ),
    _Spec(
        "goemotions_group",
        "mlcls",
        "goemotions",
        "GoEmotions mapped to 4 sentiment groups (multi-label)",
        _load_goemotions,
        ("goemotions/group/labels.txt", "goemotions/group/train.tsv"),
    ),
    _Spec(
        "rte",
        "nli",
        "rte",
        "RTE textual entailment (SuperGLUE), 2-way",
        _load_superglue,
        ("rte/train.jsonl", "rte/val.jsonl"),
    ),
    _Spec(
        "cb",
        "nli",
        "cb",
        "CommitmentBank (SuperGLUE), 3-way NLI",
        _load_superglue,
        ("cb/train.jsonl", "cb/val.jsonl"),
    ),
    _Spec(
        "sst2",
        "cls",
        "sst2",
        "SST-2 binary sentiment of movie-review sentences",
        _load_sst2,
        ("sst2/stsa.binary.train",),
    ),
    _Spec(
        "trec",
        "cls",
        "trec",
        "TREC question classification, 6 coarse answer types",
        _load_trec,
        ("trec/train.txt",),
    ),
    _Spec(
        "ag_news",
        "cls",
        "ag_news",
        "AG News topic classification, 4 classes (derived from the test split)",
        _load_ag_news,
        ("ag_news/test.csv",),
    ),
]

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


def _specs(data_dir: Path, cache: dict | None = None) -> list[_Spec]:
    root = Path(data_dir)
    specs = [s for s in _STATIC if all((root / f).is_file() for f in s.needs)]
    folders = _metaicl_folders(root)
    if folders:
        meta = _metaicl_meta(root, cache)
        for t in folders:
            specs.append(
                _Spec(
                    f"metaicl:{t}",
                    _metaicl_category(root, t, meta),
                    _METAICL,
                    f"MetaICL/CrossFit task {t}",
                    _load_metaicl,
                    (),
                )
            )
    for key, (cat, desc) in _BB_META.items():
        if (root / _BB / _BB_PATHS[key] / "task.json").is_file():
            specs.append(_Spec(f"bigbench:{key}", cat, _BB, desc, _load_bigbench, ()))
    return specs


def shared_catalog(data_dir: Path) -> list[SharedTask]:
    """Every task available in ``data_dir`` (reads only small config files, no examples)."""
    return [SharedTask(s.name, s.category, s.dataset, s.description) for s in _specs(Path(data_dir))]


def _task(
    spec: _Spec,
    template: Template,
    splits: dict[str, list[Example]],
    *,
    labels: tuple[str, ...] = (),
    notes: list[str],
    split_files: dict[str, str],
    metric: str = "",
    family: str = "",
    label_separator: str = ", ",
) -> Task:
    return Task(
        name=spec.name,
        category=spec.category,
        template=template,
        splits=splits,
        metric=metric or DEFAULT_METRIC.get(spec.category, "exact_match"),
        labels=labels,
        label_separator=label_separator,
        family=family or spec.dataset,
        description=spec.description,
        source=spec.dataset,
        split_files=split_files,
        notes=[n for n in notes if n],
    )


def _load_spec(spec: _Spec, cx: _Ctx) -> Task | None:
    n_before = len(cx.c.errors)
    task = spec.loader(spec, cx)
    validate_task(task, cx.c, where=f"{cx.root / spec.dataset} ({spec.name})")
    if any(not lab for lab in task.labels):
        cx.c.add(spec.name, "a label is empty", "labels")
    return task if len(cx.c.errors) == n_before else None


def _unknown(name: str, specs: list[_Spec], data_dir: Path, c: Collector) -> None:
    known = [s.name for s in specs]
    close = get_close_matches(name, known, n=3)
    hint = (
        f"did you mean {', '.join(close)}?"
        if close
        else f"{len(known)} tasks available, e.g. {', '.join(known[:6])}"
    )
    c.add(name, f"no such task in {data_dir}; {hint}")


def load_shared_task(name: str, data_dir: Path) -> Task:
    """Load one task; raises :class:`TaskFormatError` (every problem with file, line and field)."""
    return load_shared_tasks(data_dir, [name])[0]


def load_shared_tasks(data_dir: Path, names: list[str] | None = None) -> list[Task]:
    """Load ``names`` (default: every task in the catalog), collecting the problems of all, raising once."""
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise TaskFormatError.single(str(data_dir), "shared data folder not found; set MANYICL_DATA")
    cx = _Ctx(root=data_dir)
    specs = _specs(data_dir, cx.cache)
    by_name = {s.name: s for s in specs}
    wanted = list(by_name) if names is None else list(dict.fromkeys(names))
    tasks: list[Task] = []
    for n in wanted:
        spec = by_name.get(n)
        if spec is None:
            _unknown(n, specs, data_dir, cx.c)
            continue
        task = _load_spec(spec, cx)
        if task is not None:
            tasks.append(task)
    cx.c.raise_if_any(TaskFormatError, title=f"invalid task data in {data_dir}")
    return tasks
