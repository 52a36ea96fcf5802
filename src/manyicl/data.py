"""From task sources to packed training windows, with token accounting (``manyicl data stats``)."""

from __future__ import annotations

import logging
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .config import DataConfig, TaskSourceConfig
from .errors import Collector, ConfigError, TaskFormatError
from .packing import BuildStats, TrainingSequence, Window, build_task_sequences, pack_windows
from .tasks import Task, load_task_dirs, validate_task
from .templates import tokenize_task

log = logging.getLogger(__name__)


def stable_seed(*parts: object) -> int:
    """A seed that depends only on its parts (not on PYTHONHASHSEED or task order)."""
    return zlib.crc32("|".join(map(str, parts)).encode())


def load_tasks(src: TaskSourceConfig) -> list[Task]:
    """Tasks from the synthetic suite, the shared datasets and task folders, filtered by include/exclude."""
    tasks: list[Task] = []
    if src.synthetic:
        from .synthetic import synthetic_suite

        tasks += synthetic_suite(
            seed=src.synthetic_seed,
            instances=src.synthetic_instances,
            train_size=src.synthetic_train_size,
            test_size=src.synthetic_test_size,
            split=src.split,
        )
    if src.shared:
        tasks += _shared_tasks(src)
    if src.dirs:
        tasks += load_task_dirs(src.dirs)
    tasks = [t for t in tasks if _selected(t, src)]
    _check_unique_names(tasks)
    if not tasks:
        raise ConfigError.single("data.tasks", "selects no tasks; check include/exclude, dirs and the split")
    if src.max_examples_per_split:
        tasks = [cap_examples(t, src.max_examples_per_split) for t in tasks]
    c = Collector()
    for t in tasks:
        validate_task(t, c)
    c.raise_if_any(TaskFormatError)
    return tasks


def _check_unique_names(tasks: list[Task]) -> None:
    """Two tasks of one name (a folder named like a synthetic or shared task) would be merged in every
    result and averaged as if they were seeds: refuse, naming where each came from."""
    seen: dict[str, Task] = {}
    c = Collector()
    for t in tasks:
        if t.name in seen:
            first = seen[t.name]

            def where(x: Task) -> str:
                files = list(x.split_files.values())
                return str(Path(files[0]).parent) if files else (x.source or "synthetic suite")

            c.add(
                t.name,
                f"two tasks have this name ({where(first)}; {where(t)}); names must be unique: rename the "
                "task folder's name: in task.yaml, or leave one source out (tasks.include / tasks.exclude)",
                "name",
            )
        else:
            seen[t.name] = t
    c.raise_if_any(TaskFormatError)


def _selected(t: Task | object, src: TaskSourceConfig) -> bool:
    names = {t.name, t.family, t.category} if isinstance(t, Task) else {t.name, t.dataset, t.category}
    if src.include and not names & set(src.include):
        return False
    return not (src.exclude and names & set(src.exclude))


def shared_data_dir(src: TaskSourceConfig) -> Path:
    from .realdata import default_data_dir

    d = Path(src.data_dir) if src.data_dir else default_data_dir()
    if d is None or not d.is_dir():
        raise ConfigError.single(
            "tasks.data_dir",
            f"shared data folder {'not found' if d is None else str(d) + ' does not exist'}; "
            "put it at ../shared/data beside the repository, set MANYICL_DATA, or set tasks.data_dir",
        )
    return d


def _shared_tasks(src: TaskSourceConfig) -> list[Task]:
    from .realdata import load_shared_tasks, shared_catalog
    from .splits import resolve_split

    d = shared_data_dir(src)
    split = resolve_split(src.scheme, d)
    if split.missing:
        log.warning(
            "split %s names %d tasks absent here (skipped): %s",
            split.scheme,
            len(split.missing),
            ", ".join(split.missing),
        )
    wanted = {
        "held_in": split.train,
        "held_out": split.test,
        "all": list(dict.fromkeys(split.train + split.test)),
    }[src.split]
    catalog = {t.name: t for t in shared_catalog(d)}
    names = [n for n in wanted if _selected(catalog[n], src)]
    return load_shared_tasks(d, names)


def cap_examples(task: Task, n: int) -> Task:
    """At most ``n`` examples per split: a fixed random subset (same for every run), file order kept."""
    from dataclasses import replace

    splits = {}
    for k, exs in task.splits.items():
        if len(exs) <= n:
            splits[k] = exs
            continue
        keep = np.sort(
            np.random.default_rng(stable_seed("cap", task.name, k)).choice(len(exs), n, replace=False)
        )
        splits[k] = [exs[i] for i in keep]
    return replace(task, splits=splits)


@dataclass
class TrainingData:
    windows: list[Window]
    stats: BuildStats

    @property
    def sequences(self) -> list[TrainingSequence]:
        return [s for w in self.windows for s in w.sequences]


def build_training_data(tasks: list[Task], tokenizer, cfg: DataConfig, tag: str = "") -> TrainingData:
    """Tokenize each task once, sample its sequences, shuffle all tasks together, pack windows.

    ``tag`` is set on every sequence (``TrainingSequence.tag``), e.g. ``icl`` for data mixed in as ICL format."""
    stats = BuildStats(cfg.max_length, cfg.shots, cfg.objective)
    seqs: list[TrainingSequence] = []
    c = Collector()
    for task in tasks:
        if not task.has_split(cfg.train_split):
            c.add(
                task.name,
                f"has no '{cfg.train_split}' split (has {', '.join(task.splits)})",
                "data.train_split",
            )
            continue
        try:
            tokenized = tokenize_task(
                task, tokenizer, cfg.train_split, cfg.max_length, cfg.on_overlong, cfg.add_bos
            )
        except TaskFormatError as e:  # collect every task's overlong examples, then report once
            c.problems.extend(e.problems)
            continue
        rng = np.random.default_rng(stable_seed(cfg.seed, task.name))
        task_seqs, tstats = build_task_sequences(
            tokenized,
            cfg.shots,
            cfg.objective,
            cfg.max_length,
            cfg.sequences_per_task,
            rng,
            cfg.supervised_examples_per_task,
            label_sampling=cfg.label_sampling,
            token_budget=cfg.tokens_per_task,
        )
        for s in task_seqs:
            s.tag = tag
        if not task_seqs and tokenized.skipped:
            c.add(
                task.name,
                f"every one of its {tokenized.skipped} '{cfg.train_split}' examples is longer than max_length "
                f"{cfg.max_length} and was skipped, so the task would vanish from training; raise data.max_length "
                "or set data.on_overlong=truncate_input",
                "data.on_overlong",
            )
            continue
        seqs += task_seqs
        stats.per_task[task.name] = tstats
    c.raise_if_any(TaskFormatError)
    order = np.random.default_rng(stable_seed(cfg.seed, "shuffle")).permutation(len(seqs))
    windows = pack_windows([seqs[i] for i in order], cfg.max_length, cfg.pack_short)
    stats.windows = len(windows)
    stats.window_tokens = sum(len(w) for w in windows)
    return TrainingData(windows, stats)


def format_stats(stats: BuildStats, per_task: bool = True) -> str:
    """Human-readable token accounting, including the mask-last comparison (paper Table 7)."""
    t = stats.totals()
    lines = [
        f"build: max_length={stats.max_length} shots={stats.shots} objective={stats.objective}",
        f"  tasks                         {t['tasks']:>14,}",
        f"  sequences                     {t['sequences']:>14,}",
        f"  windows                       {t['windows']:>14,}   (fill {t['window_fill']:.1%})",
        f"  tokens processed              {t['tokens']:>14,}",
        f"  supervised tokens             {t['supervised_tokens']:>14,}",
        f"  supervised examples           {t['supervised_examples']:>14,}",
        f"  mean shots per sequence       {t['mean_shots_per_sequence']:>14.1f}",
        f"  mask_last_target equivalent   {t['mask_last_equivalent_tokens']:>14,}   tokens to supervise the same targets",
        f"  ratio mask_last / this build  {t['mask_last_over_build_ratio']:>14.1f}x",
        f"  overlong examples             {t['skipped_overlong']:>7,} skipped {t['truncated_overlong']:>7,} truncated",
    ]
    if t["shortened"] or t["pool_exhausted"]:
        lines.append(
            f"  short sequences               {t['shortened']:>7,} did not fit k+1, {t['pool_exhausted']:,} ran out of examples"
        )
    if per_task:
        lines.append("")
        lines.append(
            f"  {'task':<28}{'seqs':>7}{'shots/seq':>10}{'tokens':>12}{'supervised':>12}{'mask-last x':>12}"
        )
        for name, s in stats.per_task.items():
            ratio = s.mask_last_equivalent_tokens / max(s.tokens, 1)
            lines.append(
                f"  {name:<28}{s.sequences:>7}{s.examples / max(s.sequences, 1):>10.1f}{s.tokens:>12,}"
                f"{s.supervised_tokens:>12,}{ratio:>12.1f}"
            )
    return "\n".join(lines)
