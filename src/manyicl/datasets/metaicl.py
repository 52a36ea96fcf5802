"""MetaICL/CrossFit tasks (the Rethinking-demonstrations release): one task per folder, category from
MetaICL's configs."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from ..tasks import Example, Task, Template
from .common import DatasetSpec, LoadContext, drop_notes, file_line, make_task, one_line, read_jsonl

METAICL_TEMPLATE = Template(instruction="", input_prefix="Input: ", output_prefix="Output:")

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


def load_metaicl(spec: DatasetSpec, ctx: LoadContext) -> Task:
    task = spec.name.split(":", 1)[1]
    d = ctx.root / _METAICL / task
    meta = _metaicl_meta(ctx.root, ctx.cache)
    cfg = _metaicl_task_config(ctx.root, task, meta)
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
        for line, obj in read_jsonl(path, ctx):
            where = file_line(path, line)
            inp, out = _scalar_str(obj.get("input")), _scalar_str(obj.get("output"))
            if inp is None:
                ctx.problems.add(where, f"missing or not text ({type(obj.get('input')).__name__})", "input")
            if out is None:
                ctx.problems.add(where, f"missing or not text ({type(obj.get('output')).__name__})", "output")
            raw_opts = obj.get("options") or []
            opts: list[str] = []
            if not isinstance(raw_opts, list):
                ctx.problems.add(where, f"must be a list, got {type(raw_opts).__name__}", "options")
                continue
            for o in raw_opts:
                s = _scalar_str(o)
                if s is None:
                    ctx.problems.add(where, f"option {o!r:.40} is not text", "options")
                    break
                s = one_line(s)
                if s and s not in opts:
                    opts.append(s)
            else:
                if inp is None or out is None:
                    continue
                inp, out = one_line(inp), one_line(out)
                dedup += len(raw_opts) - len(opts)
                if not inp or not out:
                    dropped[split] = dropped.get(split, 0) + 1
                    continue
                if opts and out not in opts:
                    ctx.problems.add(
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
    notes += drop_notes(dropped, "examples with an empty input/output")
    return make_task(
        spec,
        METAICL_TEMPLATE,
        splits,
        labels=labels,
        notes=notes,
        metric=metric,
        split_files={s: str(p) for s, p in files.items()},
        family="metaicl",
    )


def specs(root: Path, cache: dict | None = None) -> list[DatasetSpec]:
    """One spec per task folder of the MetaICL release under ``root`` (none when it is absent)."""
    folders = _metaicl_folders(root)
    if not folders:
        return []
    meta = _metaicl_meta(root, cache)
    return [
        DatasetSpec(
            f"metaicl:{t}",
            _metaicl_category(root, t, meta),
            _METAICL,
            f"MetaICL/CrossFit task {t}",
            load_metaicl,
            (),
        )
        for t in folders
    ]
