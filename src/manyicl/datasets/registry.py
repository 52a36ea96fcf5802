"""The catalog of the shared data folder and the loading entry points: every source module's specs, in
a fixed order, filtered by what the folder holds."""

from __future__ import annotations

from difflib import get_close_matches
from pathlib import Path

from ..errors import Collector, TaskFormatError
from ..tasks import Task, validate_task
from . import ag_news, banking77, bigbench, clinc150, goemotions, gsm8k, metaicl, sst2, superglue, trec
from .common import DatasetSpec, LoadContext, SharedTask

STATIC_SPECS: list[DatasetSpec] = [
    *clinc150.SPECS,
    *banking77.SPECS,
    *gsm8k.SPECS,
    *goemotions.SPECS,
    *superglue.SPECS,
    *sst2.SPECS,
    *trec.SPECS,
    *ag_news.SPECS,
]
"""The datasets with fixed task names; each is available when all of its ``needs`` files exist."""


def available_specs(data_dir: Path, cache: dict | None = None) -> list[DatasetSpec]:
    """Every task that ``data_dir`` holds: the static ones, then MetaICL's folders, then BIG-bench's."""
    root = Path(data_dir)
    specs = [s for s in STATIC_SPECS if all((root / f).is_file() for f in s.needs)]
    specs += metaicl.specs(root, cache)
    specs += bigbench.specs(root)
    return specs


def shared_catalog(data_dir: Path) -> list[SharedTask]:
    """Every task available in ``data_dir`` (reads only small config files, no examples)."""
    return [SharedTask(s.name, s.category, s.dataset, s.description) for s in available_specs(Path(data_dir))]


def _load_spec(spec: DatasetSpec, ctx: LoadContext) -> Task | None:
    n_before = len(ctx.problems.errors)
    task = spec.loader(spec, ctx)
    validate_task(task, ctx.problems, where=f"{ctx.root / spec.dataset} ({spec.name})")
    if any(not lab for lab in task.labels):
        ctx.problems.add(spec.name, "a label is empty", "labels")
    return task if len(ctx.problems.errors) == n_before else None


def _unknown(name: str, specs: list[DatasetSpec], data_dir: Path, c: Collector) -> None:
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
    ctx = LoadContext(root=data_dir)
    specs = available_specs(data_dir, ctx.cache)
    by_name = {s.name: s for s in specs}
    wanted = list(by_name) if names is None else list(dict.fromkeys(names))
    tasks: list[Task] = []
    for n in wanted:
        spec = by_name.get(n)
        if spec is None:
            _unknown(n, specs, data_dir, ctx.problems)
            continue
        task = _load_spec(spec, ctx)
        if task is not None:
            tasks.append(task)
    ctx.problems.raise_if_any(TaskFormatError, title=f"invalid task data in {data_dir}")
    return tasks
