"""The paper's comparison from one config: methods x held-out tasks x shots, forgetting, ablation, cost.

Work is split into *cells* (train a method, evaluate a method on a task, perplexity of a model, ...).
A finished cell writes ``cells/<key>.json`` atomically and is never redone; a cell that was killed is
redone (training resumes from its last checkpoint). ``manyicl experiment CONFIG --status`` shows
which cells are done, running and left without doing any work.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

from .cells import Cells, _lock_holder_alive  # noqa: F401 - re-exported for callers
from .config import ExperimentConfig, dump_yaml
from .fileio import atomic_write_text
from .methods import LABELS, META, METHODS  # noqa: F401 - re-exported for callers
from .session import ModelSession
from .tasks import Task

log = logging.getLogger(__name__)


SYMBOL = {"done": "✓", "running": "▶", "interrupted": "✗", "todo": "·"}


# --------------------------------------------------------------------------------------------
# The plan
# --------------------------------------------------------------------------------------------


@dataclass
class Plan:
    methods: list[str]
    held_out: list[str]  # held-out task names
    loco: dict[str, list[str]]  # category -> its held-out tasks
    ppl_models: list[str]
    ce_models: list[str] = field(default_factory=list)
    demos_check: list[str] = field(default_factory=list)

    def keys(self, cfg: ExperimentConfig) -> list[str]:
        keys = [f"train/{m}" for m in self.methods if m in META]
        if "task_level" in self.methods:
            keys += [f"train/task_level/{t}" for t in self.held_out]
        keys += [f"eval/{m}/{t}" for m in self.methods for t in self.held_out]
        for cat, tasks in self.loco.items():
            keys += [f"loco/{cat}/train/{m}" for m in cfg.ablation.methods]
            keys += [f"loco/{cat}/eval/{m}/{t}" for m in cfg.ablation.methods for t in tasks]
        keys += [f"ppl/{m}" for m in self.ppl_models]
        keys += [f"ce/{m}" for m in self.ce_models]
        keys += [f"demos/{mode}/{t}" for t in self.demos_check for mode in ("per_seed", "per_query")]
        return keys


def make_plan(cfg: ExperimentConfig, held_out: list[Task]) -> Plan:
    loco = {}
    for cat in cfg.ablation.categories:
        tasks = [t.name for t in held_out if t.category == cat]
        if tasks:
            loco[cat] = tasks
        else:
            log.warning("ablation category %s has no held-out task; skipped", cat)
    ppl = [m for m in cfg.methods if m == "no_ft" or m in META] if cfg.run_perplexity else []
    ce = [m for m in cfg.methods if m == "no_ft" or m in META] if cfg.heldout_ce_sequences else []
    demos = [t.name for t in held_out][: cfg.demos_check_tasks]
    return Plan(list(cfg.methods), [t.name for t in held_out], loco, ppl, ce, demos)


def status_view(cfg: ExperimentConfig, plan: Plan, cells: Cells, width: int = 100) -> str:
    """Methods x (train, tasks, ppl) grid of cell states, then the ablation cells and a count.

    Task columns are numbered (a legend below names them) and the grid is cut into blocks of columns,
    so it fits ``width`` columns however many tasks there are."""
    import textwrap
    from functools import cache

    cell_state = cache(cells.state)  # each cell file is read (and parsed) once per view

    tasks = list(plan.held_out)
    num_w = len(str(len(tasks))) + 1
    name_w = max(len("method"), *(len(m) for m in plan.methods)) + 1
    train_w = max(len("train"), len(f"{len(tasks)}/{len(tasks)}")) + 1

    def state(m: str, c: str) -> str:
        if c == "train":
            if m == "task_level":
                states = [cell_state(f"train/task_level/{t}") for t in tasks]
                return f"{sum(s == 'done' for s in states)}/{len(states)}"
            key = f"train/{m}" if m in META else None
        elif c == "ppl":
            key = f"ppl/{m}" if m in plan.ppl_models else None
        else:
            key = f"eval/{m}/{c}"
        return SYMBOL[cell_state(key)] if key else "-"

    per_block = max(1, (width - name_w - train_w - 4) // num_w)
    lines: list[str] = []
    for start in range(0, max(len(tasks), 1), per_block):
        block = tasks[start : start + per_block]
        first, last = start == 0, start + per_block >= len(tasks)
        head = f"{'method':<{name_w}}" + (f"{'train':>{train_w}}" if first else "")
        head += "".join(f"{start + i + 1:>{num_w}}" for i in range(len(block))) + ("  ppl" if last else "")
        lines.append(head)
        for m in plan.methods:
            row = f"{m:<{name_w}}" + (f"{state(m, 'train'):>{train_w}}" if first else "")
            row += "".join(f"{state(m, t):>{num_w}}" for t in block) + (
                f"{state(m, 'ppl'):>5}" if last else ""
            )
            lines.append(row)
    legend = "  ".join(f"{i + 1}\u00a0{t}" for i, t in enumerate(tasks))  # a number stays with its name
    wrapped = textwrap.wrap(f"tasks: {legend}", width, subsequent_indent="  ", break_on_hyphens=False)
    lines += [ln.replace("\u00a0", " ") for ln in wrapped]
    for cat in plan.loco:
        states = [cell_state(k) for k in plan.keys(cfg) if k.startswith(f"loco/{cat}/")]
        lines.append(f"ablation without {cat}: {sum(s == 'done' for s in states)}/{len(states)} cells done")
    states = [cell_state(k) for k in plan.keys(cfg)]
    count = {s: states.count(s) for s in SYMBOL}
    lines.append(
        f"cells: {count['done']} done, {count['running']} running, {count['interrupted']} interrupted "
        f"(will be redone), {count['todo']} left"
    )
    lines.append("  [" + " ".join(f"{v} {k}" for k, v in SYMBOL.items()) + "; - not part of the plan]")
    return "\n".join(lines)


@dataclass
class ExperimentResult:
    """What ``experiment`` did: the report and the cells it is made from."""

    report_path: Path
    """``report.md`` (not written by ``status_only``, nor by the ranks other than 0 under torchrun)."""
    output_dir: Path
    plan: Plan
    """Every cell of the experiment (``plan.keys(cfg)``), finished or not."""
    cells: Cells
    """The finished cells on disk: the report reads only these."""

    def finished(self, cfg: ExperimentConfig) -> dict[str, dict]:
        """Key -> finished cell, for every cell of the plan that is finished."""
        got = {k: self.cells.get(k) for k in self.plan.keys(cfg)}
        return {k: v for k, v in got.items() if v is not None}


# --------------------------------------------------------------------------------------------
# Running cells
# --------------------------------------------------------------------------------------------


@dataclass
class Context:
    cfg: ExperimentConfig
    out: Path
    cells: Cells
    session: ModelSession | None  # the base model, loaded once; adapters attach per cell
    held_in: list[Task]
    held_out: list[Task]

    @property
    def model(self):
        return self.session.model

    @property
    def tokenizer(self):
        return self.session.tokenizer


def shot_grid(cfg: ExperimentConfig) -> list:
    """The eval grid, plus 0 and k shots when the ablation needs them (paper Table 11)."""
    ints = {s for s in cfg.eval.shots if s != "max"}
    if cfg.ablation.categories:
        ints |= {0, cfg.few_shot_k}
    return sorted(ints) + (["max"] if "max" in cfg.eval.shots else [])


def _method_data_cfg(ctx: Context, method: str, n_tasks: int, shots_override=None, key: str | None = None):
    """The build of one method under the experiment's budget (``ExperimentConfig.budget``); ``key``: the
    training cell it is for (``train/<method>`` unless given), which is warned about only while still to do."""
    cfg = ctx.cfg
    shots, objective = METHODS[method]
    if shots == "k":
        shots = cfg.few_shot_k
    d = replace(
        cfg.train.data,
        shots=shots if shots_override is None else shots_override,
        objective=objective,
        supervised_examples_per_task=cfg.supervised_examples_per_task,
    )
    if method == "task_level" or cfg.budget == "equal_examples":
        return d
    if cfg.budget == "equal_tokens":
        total = cfg.budget_tokens
    else:  # equal_steps: enough distinct data for one pass of budget_steps full windows
        loop = cfg.train.train
        total = cfg.budget_steps * d.max_length * loop.micro_batch_size * loop.grad_accum
    per_task = max(1, math.ceil(total / max(n_tasks, 1)))
    if shots == "max" and per_task < d.max_length and ctx.cells.state(key or f"train/{method}") != "done":
        log.warning(
            "%s: the budget gives each of %d tasks %d tokens, less than one %d-token window, so its many-shot "
            "sequences are cut to ~%d tokens (fewer shots); budget_tokens >= %d gives every task a full window",
            method, n_tasks, per_task, d.max_length, per_task, n_tasks * d.max_length,
        )  # fmt: skip
    return replace(d, tokens_per_task=per_task, supervised_examples_per_task=0)


def _loop_cfg(ctx: Context, method: str):
    """Steps: one pass over the build (equal_examples / equal_tokens) or exactly budget_steps."""
    loop = replace(ctx.cfg.train.train, epochs=ctx.cfg.epochs)
    if ctx.cfg.budget == "equal_steps" and method != "task_level":
        loop = replace(loop, epochs=0.0, max_steps=ctx.cfg.budget_steps)
    return loop


def _val_data(ctx: Context, data_cfg, tasks: list[Task], split: str, whole: bool = False):
    """A few windows of the same objective from examples the method never trains on (``whole``: every
    example of the split once, e.g. a task-level dev slice)."""
    from .data import build_training_data

    have = [t for t in tasks if t.has_split(split)]
    if not have or not ctx.cfg.val_windows or not (ctx.cfg.train.train.eval_every or whole):
        return None
    vcfg = replace(
        data_cfg,
        train_split=split,
        supervised_examples_per_task=len(have[0].split(split)) if whole else 0,
        tokens_per_task=0
        if whole
        else max(1, math.ceil(ctx.cfg.val_windows * data_cfg.max_length / len(have))),
        seed=data_cfg.seed + 1,
    )
    data = build_training_data(have, ctx.tokenizer, vcfg)
    data.windows = data.windows[: ctx.cfg.val_windows]
    return data


def _train_cell(
    ctx: Context,
    key: str,
    out_dir: Path,
    data_cfg,
    tasks: list[Task],
    method: str,
    val_tasks: list[Task] | None = None,
    val_split: str | None = None,
    needed: bool = True,
) -> dict:
    """Train one adapter (resuming a killed attempt) and record its cost; returns the cell.

    A finished cell whose weights are gone (a fresh clone where they were not committed, a deleted
    folder) is trained again while its adapter is still ``needed``, instead of later evaluations failing
    on, or silently skipping, a missing adapter."""
    from .data import build_training_data
    from .train import prepare_model, train

    def compute() -> dict:
        loop = _loop_cfg(ctx, method)
        if method != "task_level":
            loop = replace(loop, early_stopping_patience=0)
        else:
            loop = replace(loop, eval_every=ctx.cfg.task_level_eval_every)
        tcfg = replace(ctx.cfg.train, output_dir=str(out_dir), data=data_cfg, resume=True, train=loop)
        t0 = time.perf_counter()
        data = build_training_data(tasks, ctx.tokenizer, data_cfg)
        val = _val_data(
            ctx,
            data_cfg,
            val_tasks or tasks,
            val_split or ctx.cfg.eval.eval_split,
            whole=val_tasks is not None,
        )
        build_s = time.perf_counter() - t0

        def new_lora(base):
            return prepare_model(tcfg, base=base, tokenizer=ctx.tokenizer)[0]

        with ctx.session.attached(new_lora) as model:  # the LoRA layers go on exit
            res = train(tcfg, data=data, model=model, tokenizer=ctx.tokenizer, val_data=val)
        if tcfg.train.gradient_checkpointing:
            ctx.model.gradient_checkpointing_disable()
        ctx.model.eval()
        return {"final_dir": str(res.final_dir), "build_s": build_s, "summary": res.summary}

    def valid(cell: dict) -> bool:
        if not needed or _has_weights(Path(cell.get("final_dir", ""))):
            return True
        log.warning("%s: its weights are gone from %s; training it again", key, cell.get("final_dir"))
        return False

    return ctx.cells.run(key, compute, valid=valid)


def _has_weights(final_dir: Path) -> bool:
    """Whether a trained adapter/model folder still holds its weights."""
    return final_dir.is_dir() and any(final_dir.glob("*.safetensors"))


def _safe_name(name: str) -> str:
    return name.replace(":", "_").replace("/", "_")


def _task_level_split(task: Task, cfg: ExperimentConfig) -> tuple[Task, Task]:
    """The held-out task's demo split without a dev slice (training), and the dev slice alone (early
    stopping). The dev slice never reaches training, so the stopping point is chosen on unseen data."""
    import numpy as np

    from .data import stable_seed

    pool = task.split(cfg.eval.demo_split)
    n_dev = min(cfg.task_level_dev_examples, len(pool) // 4)
    dev_idx = set(
        np.random.default_rng(stable_seed("task_level_dev", task.name))
        .choice(len(pool), n_dev, replace=False)
        .tolist()
    )
    train = [e for i, e in enumerate(pool) if i not in dev_idx]
    dev = [e for i, e in enumerate(pool) if i in dev_idx]
    splits_train = dict(task.splits)
    splits_train[cfg.eval.demo_split] = train
    return replace(task, splits=splits_train), replace(task, splits={cfg.eval.demo_split: dev})


def _families_interleaved(tasks: list[Task]) -> list[Task]:
    """Tasks dealt round-robin over their families (intent_0, numeric_0, ..., intent_1, ...): a study
    stopped part-way has covered every family, not all instances of the first one."""
    by_family: dict[str, list[Task]] = {}
    for t in tasks:
        by_family.setdefault(t.family or t.name, []).append(t)
    out: list[Task] = []
    while any(by_family.values()):
        for fam in list(by_family):
            if by_family[fam]:
                out.append(by_family[fam].pop(0))
    return out


def _distributed() -> bool:
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized()


def _main_process() -> bool:
    """Under torchrun/accelerate only rank 0 evaluates (training cells use every process)."""
    import torch.distributed as dist

    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0


def _barrier() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def _load_for_scoring(ctx: Context) -> None:
    """Evaluate the base model as loaded in the scoring dtype (float32 on CPU), not bf16-trained weights
    upcast: otherwise the scores would depend on whether the CPU that trained has native bf16."""
    from .evaluate import load_dtype
    from .modeling import _DTYPES, resolve_dtype

    want = load_dtype(replace(ctx.cfg.eval, model=ctx.cfg.train.model))
    if not _main_process() or next(ctx.model.parameters()).dtype == _DTYPES[resolve_dtype(want)]:
        return
    log.info("loading the base model again in %s for evaluation", want)
    tokenizer, ctx.session = ctx.tokenizer, None  # the training copy goes first: one model in memory
    ctx.session = ModelSession.load(replace(ctx.cfg.train.model, dtype=want), tokenizer=tokenizer)


def _eval_cell(
    ctx: Context, key: str, label: str, adapter: str | None, task: Task, shots=None, **overrides
) -> dict:
    from .evaluate import evaluate

    if not _main_process():
        return ctx.cells.get(key) or {}

    def compute() -> dict:
        ecfg = replace(
            ctx.cfg.eval,
            model=replace(ctx.cfg.train.model, adapter=None),  # the model that actually ran
            output_dir=str(ctx.out / "eval_runs" / key.replace("/", "__")),
            adapters={label: adapter},
            plots=False,
            progress=False,
            shots=list(shots) if shots is not None else shot_grid(ctx.cfg),
            resume=True,  # a killed cell keeps its finished points
            **overrides,
        )
        res = evaluate(ecfg, model=ctx.model, tokenizer=ctx.tokenizer, tasks=[task])
        return {
            "rows": res.rows,
            "summary": res.summary,
            "predictions": res.predictions,
            "tasks": res.tasks,
            "scoring_dtype": res.scoring_dtype,
            "cache_timing": res.cache_timing,  # saved max-shot prompt caches: size, save and load time
        }

    return ctx.cells.run(key, compute)


def _ppl_cell(ctx: Context, key: str, label: str, adapter: str | None) -> dict:
    from .perplexity import perplexity

    if not _main_process():
        return ctx.cells.get(key) or {}

    def compute() -> dict:
        pcfg = replace(
            ctx.cfg.perplexity,
            output_dir=str(ctx.out / "perplexity_runs" / label),
            model=ctx.cfg.train.model,
            adapters={label: adapter},
            progress=False,
        )
        res = perplexity(pcfg, model=ctx.model, tokenizer=ctx.tokenizer)
        return {"rows": res.rows}

    return ctx.cells.run(key, compute)


def _ce_cell(ctx: Context, key: str, adapter: str | None) -> dict:
    """Target cross-entropy of one model on every held-out task's max-shot sequences (eval-split examples
    in i.i.d.-label random order): a per-sequence, low-variance measure of in-context learning."""
    from .data import stable_seed
    from .packing import Window, build_task_sequences
    from .templates import tokenize_task
    from .train import validation_loss

    def current(cell: dict) -> bool:  # a cell made for another count is redone
        return cell.get("sequences_per_task") == ctx.cfg.heldout_ce_sequences

    if not _main_process():
        done = ctx.cells.get(key)
        return done if done and current(done) else {}

    def compute() -> dict:
        import numpy as np
        import torch

        dcfg = ctx.cfg.train.data
        orig = next(ctx.model.parameters()).dtype
        out = []
        try:
            with ctx.session.adapter(adapter) as m:  # removed again on exit, also on an error
                device = next(m.parameters()).device
                if device.type == "cpu" and orig != torch.float32:
                    m.to(torch.float32)  # exact scoring on CPU, as in evaluation
                for t in ctx.held_out:
                    split = ctx.cfg.eval.eval_split
                    if not t.has_split(split):
                        continue
                    tokenized = tokenize_task(
                        t, ctx.tokenizer, split, dcfg.max_length, "truncate_input", dcfg.add_bos
                    )
                    rng = np.random.default_rng(stable_seed("heldout_ce", t.name))
                    seqs, _ = build_task_sequences(
                        tokenized,
                        "max",
                        "mask_all_targets",
                        dcfg.max_length,
                        ctx.cfg.heldout_ce_sequences,
                        rng,
                    )
                    for i, sq in enumerate(seqs):
                        ce = validation_loss(
                            m, [Window([sq])], device, chunk=ctx.cfg.train.train.loss_chunk_tokens
                        )
                        out.append(
                            {
                                "task": t.name,
                                "sequence": i,
                                "ce": ce,
                                "targets": int(sq.loss_mask.sum()),
                                "shots": sq.n_examples,
                            }
                        )
        finally:
            if next(ctx.model.parameters()).dtype != orig:
                ctx.model.to(orig)
        return {"rows": out, "sequences_per_task": ctx.cfg.heldout_ce_sequences}

    return ctx.cells.run(key, compute, valid=current)


# Settings that only choose WHICH cells run (or how they are shown): changing them keeps finished cells valid.
_SELECTION = (
    "output_dir", "methods", "run_perplexity", "demos_check_tasks", "ablation.categories", "overwrite",
    "heldout_ce_sequences",  # its cells record their own count and are redone when it changes
    "eval_order",
)  # fmt: skip


def settings_drift(old: dict, new: dict) -> list[str]:
    """Settings that differ between the run that made the cells and this one (selection keys and
    progress bars excluded; keys the older run did not have are taken as unchanged)."""
    from .runs import settings_drift as drift

    return drift(old, new, ignore=_SELECTION, keep_whole=("train.lora", "eval.adapters"))


def check_settings(out: Path, cfg: ExperimentConfig) -> None:
    """Refuse to mix cells made with other settings into this run's results (or discard them with
    ``overwrite=true``). Finished cells made with the same settings are always kept: the experiment
    continues cell by cell."""
    from .config import to_dict
    from .runs import study_folder

    study_folder(
        out,
        "experiment",
        ("cells", "train", "loco", "eval_runs", "perplexity_runs"),
        lambda old: settings_drift(old, to_dict(cfg)),
        cfg.overwrite,
    )


def experiment(
    cfg: ExperimentConfig, status_only: bool = False, report_only: bool = False
) -> ExperimentResult:
    """Run (or continue) every cell of the experiment, then write the report.

    ``status_only`` prints the cell grid and does nothing else; ``report_only`` writes the report from
    the cells finished so far (e.g. while another process is still working on the rest)."""
    from .data import load_tasks

    out = Path(cfg.output_dir)
    cells = Cells(out)
    held_in = load_tasks(cfg.train.data.tasks)
    held_out = load_tasks(cfg.eval.tasks)
    plan = make_plan(cfg, held_out)
    if status_only:
        print(status_view(cfg, plan, cells))
        return ExperimentResult(out / "report.md", out, plan, cells)
    if report_only:
        from .experiment_report import write_experiment_report

        return ExperimentResult(write_experiment_report(cfg, plan, cells), out, plan, cells)
    from .fileio import check_output_dir

    out = check_output_dir(cfg.output_dir)
    check_settings(out, cfg)
    atomic_write_text(out / "config.yaml", dump_yaml(cfg))
    ctx = Context(cfg, out, cells, ModelSession.load(cfg.train.model), held_in, held_out)
    print(status_view(cfg, plan, cells), flush=True)

    adapters: dict[str, str | None] = {"no_ft": None}
    for m in plan.methods:
        if m in META:
            key = f"train/{m}"
            dcfg = _method_data_cfg(ctx, m, len(held_in))
            cell = _train_cell(ctx, key, out / "train" / m, dcfg, held_in, m)
            adapters[m] = cell["final_dir"]
    task_level: dict[str, str] = {}
    if "task_level" in plan.methods:
        for t in held_out:
            key = f"train/task_level/{t.name}"
            t_train, t_dev = _task_level_split(t, cfg)
            dcfg = replace(_method_data_cfg(ctx, "task_level", 1), train_split=cfg.eval.demo_split)
            dcfg = replace(dcfg, supervised_examples_per_task=cfg.task_level_examples)
            cell = _train_cell(
                ctx,
                key,
                out / "train" / "task_level" / _safe_name(t.name),
                dcfg,
                [t_train],
                "task_level",
                val_tasks=[t_dev],
                val_split=cfg.eval.demo_split,
                # evaluated at once in one process: once that cell is done its adapter is not needed
                needed=_distributed() or ctx.cells.get(f"eval/task_level/{t.name}") is None,
            )
            task_level[t.name] = cell["final_dir"]
            if not _distributed():  # one process: evaluate at once, so the adapter is not needed later
                _eval_cell(ctx, f"eval/task_level/{t.name}", "task_level", cell["final_dir"], t, shots=[0])
    loco_adapters: dict[tuple[str, str], str] = {}
    for cat in plan.loco:  # every training before any evaluation: under torchrun the other ranks only train
        tasks = [t for t in held_in if t.category != cat]
        for m in cfg.ablation.methods:
            key = f"loco/{cat}/train/{m}"
            dcfg = _method_data_cfg(
                ctx, m, len(held_in), key=key
            )  # the same total budget as with every category
            cell = _train_cell(ctx, key, out / "loco" / cat / m, dcfg, tasks, m)
            loco_adapters[(cat, m)] = cell["final_dir"]
    _load_for_scoring(ctx)
    pairs = [(m, t) for m in plan.methods for t in held_out]
    if cfg.eval_order == "by_task":  # every method on a task before the next task: paired results early
        pairs = [(m, t) for t in _families_interleaved(held_out) for m in plan.methods]
    for m, t in pairs:
        key = f"eval/{m}/{t.name}"
        if m == "task_level":
            _eval_cell(ctx, key, m, task_level[t.name], t, shots=[0])
        else:
            _eval_cell(ctx, key, m, adapters.get(m), t)
    for cat, names in plan.loco.items():
        for m in cfg.ablation.methods:
            for t in [t for t in held_out if t.name in names]:
                key = f"loco/{cat}/eval/{m}/{t.name}"
                _eval_cell(ctx, key, f"{m}_without_{cat}", loco_adapters[(cat, m)], t)
    for m in plan.ppl_models:
        key = f"ppl/{m}"
        _ppl_cell(ctx, key, m, adapters.get(m))
    for m in plan.ce_models:
        key = f"ce/{m}"
        _ce_cell(ctx, key, adapters.get(m))
    check_model = "many_shot_all" if "many_shot_all" in adapters else "no_ft"
    for t in [t for t in held_out if t.name in plan.demos_check]:
        for mode in ("per_seed", "per_query"):
            key = f"demos/{mode}/{t.name}"
            _eval_cell(
                ctx,
                key,
                check_model,
                adapters.get(check_model),
                t,
                shots=[s for s in shot_grid(cfg) if s != 0],
                demos=mode,
                seeds=[cfg.eval.seeds[0]],
                max_queries=cfg.demos_check_queries,
                dev_queries=0,
            )
    _barrier()
    if not _main_process():
        return ExperimentResult(out / "report.md", out, plan, cells)
    print(status_view(cfg, plan, cells), flush=True)
    from .experiment_report import write_experiment_report

    return ExperimentResult(write_experiment_report(cfg, plan, cells), out, plan, cells)
