"""Context distillation (seed 004): a teacher that sees k support examples trains a student without them.

Setting: binary NLI with a yes/no verbalizer. The teacher sees prefix + k support examples + query; the
student sees only (prefix +) query and learns to match the teacher's next-token distribution at the
answer, mixed with cross-entropy on the gold answer:

    loss = alpha * KL(teacher || student) + (1 - alpha) * CE(gold)

The teacher is frozen, so its targets are computed once per k with a cached support prompt; student
training then costs the same whatever k is. Compared in one run at k in {1, 4, 8, 12}:

  base  the student with no training (prefix + query)
  icl   in-context learning: the teacher with the k supports in its prompt
  pbft  pattern-based fine-tuning: the student fine-tuned on the k supports in the prompt pattern
        (prefix + the k labelled examples, loss on every answer); evaluated without context
  cd    context distillation; evaluated without context

each fine-tuned one with LoRA, BitFit (bias terms only) and/or full updates, through the optimisation kernel
``train`` uses (``optimize``: AdamW, warm-up + cosine LR and clipping per ``optim``). Measured: in-domain and
out-of-domain accuracy, peak memory and time of training, and inference cost per query.
"""

from __future__ import annotations

import copy
import logging
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from .config import DistillConfig, EvalConfig, to_dict
from .distill_report import notes_of, upgrade_settings, write_report
from .errors import ManyICLError
from .losses import distillation_loss
from .memory import PeakMemory
from .optimize import Loss, Optimization, StepBatch, StepResult, run_steps
from .tasks import Example, Task, Template

log = logging.getLogger(__name__)

VERBALIZER = {"yes": ("entailment", "entails"), "no": ("contradiction", "not entailment", "not_entailment")}
_FIELD = re.compile(r"^\s*(premise|hypothesis|sentence ?\d)\s*:\s*", re.IGNORECASE)


# --------------------------------------------------------------------------------------------
# Data: binary NLI with a yes/no verbalizer
# --------------------------------------------------------------------------------------------


def split_pair(text: str) -> tuple[str, str] | None:
    """(premise, hypothesis) from the formats of the shared NLI tasks ('a [SEP] b', 'a\\nHypothesis: b')."""
    if "[SEP]" in text:
        a, _, b = text.partition("[SEP]")
    elif "\nHypothesis:" in text:
        a, _, b = text.partition("\nHypothesis:")
    else:
        return None
    return _FIELD.sub("", a).strip(), _FIELD.sub("", b).strip()


def binary_nli(
    task: Task, prefix: str, split: str = "train+dev+test", neutral_is_no: bool = False
) -> list[Example]:
    """The task's examples as yes/no entailment; neutral is dropped (or counted as 'no' for two-way
    tasks such as SciTail, where 'neutral' means 'not entailed')."""
    out = []
    labels = {lab.lower() for lab in task.labels}
    two_way_neutral = labels == {"entailment", "neutral"}
    for ex in task.split(split):
        lab = ex.output.strip().lower()
        if lab in VERBALIZER["yes"]:
            y = "yes"
        elif lab in VERBALIZER["no"] or (lab == "neutral" and (two_way_neutral or neutral_is_no)):
            y = "no"
        else:
            continue
        pair = split_pair(ex.input)
        if pair is None:
            continue
        p, h = pair
        out.append(Example(f"{p}\nHypothesis: {h}", y, ("yes", "no"), line=ex.line))
    return out


def nli_template(prefix: str) -> Template:
    return Template(instruction=prefix, input_prefix="Premise: ", output_prefix="Answer:")


@dataclass
class DistillData:
    pool: list[Example]  # in-domain examples for supports and training queries
    in_domain_test: list[Example]
    ood: dict[str, list[Example]]

    def supports(self, k: int, seed: int) -> list[Example]:
        """k supports, balanced yes/no, the same prefix for every k (so k=4 extends k=1)."""
        rng = np.random.default_rng(seed)
        yes = [e for e in self.pool if e.output == "yes"]
        no = [e for e in self.pool if e.output == "no"]
        order_y, order_n = rng.permutation(len(yes)), rng.permutation(len(no))
        out = []
        for i in range(k):
            out.append(yes[order_y[i // 2]] if i % 2 == 0 else no[order_n[i // 2]])
        return out

    def train_queries(self, n: int, exclude: list[Example], seed: int) -> list[Example]:
        taken = {(e.input, e.output) for e in exclude}
        rest = [e for e in self.pool if (e.input, e.output) not in taken]
        idx = np.random.default_rng(seed + 1).permutation(len(rest))[:n]
        return [rest[i] for i in idx]


def load_distill_data(cfg: DistillConfig) -> DistillData:
    from .realdata import default_data_dir, load_shared_task

    d = Path(cfg.data_dir) if cfg.data_dir else default_data_dir()
    if d is None:
        raise ManyICLError(
            "distillation uses the shared NLI data: put it at ../shared/data, set MANYICL_DATA or data_dir"
        )
    ind = binary_nli(load_shared_task(cfg.in_domain, d), cfg.prefix)
    if len(ind) < cfg.eval_queries + max(cfg.shots) + cfg.train_queries:
        raise ManyICLError(
            f"{cfg.in_domain} has only {len(ind)} yes/no examples; lower eval_queries/train_queries"
        )
    order = np.random.default_rng(cfg.seed).permutation(len(ind))
    test = [ind[i] for i in order[: cfg.eval_queries]]
    pool = [ind[i] for i in order[cfg.eval_queries : cfg.eval_queries + cfg.pool_size]]
    ood = {}
    for name in cfg.out_of_domain:
        exs = binary_nli(
            load_shared_task(name, d), cfg.prefix, split="test" if name in ("rte", "cb") else "train+dev+test"
        )
        if not exs:
            raise ManyICLError(f"out-of-domain task {name} has no yes/no examples after dropping neutral")
        idx = np.random.default_rng(cfg.seed + 7).permutation(len(exs))[: cfg.eval_queries]
        ood[name] = [exs[i] for i in idx]
    return DistillData(pool, test, ood)


# --------------------------------------------------------------------------------------------
# Students: LoRA, BitFit, full; optionally fewer layers
# --------------------------------------------------------------------------------------------


def truncate_layers(model, n_layers: int):
    """A copy of ``model`` keeping only its first ``n_layers`` decoder layers (same tokenizer)."""
    student = copy.deepcopy(model)
    decoder = student.get_decoder()
    if n_layers >= len(decoder.layers):
        raise ManyICLError(
            f"student_layers={n_layers} is not smaller than the teacher's {len(decoder.layers)} layers"
        )
    decoder.layers = decoder.layers[:n_layers]
    student.config.num_hidden_layers = n_layers
    if getattr(student.config, "layer_types", None):
        student.config.layer_types = student.config.layer_types[:n_layers]
    return student


def add_bitfit(model) -> tuple[int, bool]:
    """Make only bias terms trainable (BitFit). Linear layers without a bias get a zero-initialised
    one, so the starting function is unchanged. Returns (trainable parameters, whether biases were added)."""
    model.requires_grad_(False)
    added = False
    for module in model.get_decoder().modules():
        if isinstance(module, torch.nn.Linear):
            if module.bias is None:
                module.bias = torch.nn.Parameter(
                    torch.zeros(module.out_features, dtype=module.weight.dtype, device=module.weight.device)
                )
                added = True
            module.bias.requires_grad_(True)
    n = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return n, added


def make_student(teacher, cfg: DistillConfig, update: str):
    """A fresh student for one run: a copy of the teacher (or its first N layers) with the update kind."""
    from .modeling import apply_lora

    torch.manual_seed(cfg.seed)
    base = truncate_layers(teacher, cfg.student_layers) if cfg.student_layers else copy.deepcopy(teacher)
    base = base.float()  # bias-only and full updates are lossy in bf16
    note = ""
    if update == "lora":
        student = apply_lora(base, cfg.lora)
    elif update == "bitfit":
        _, added = add_bitfit(base)
        student = base
        if added:
            note = (
                "zero-initialised biases were added to every linear layer of the decoder (the model has none)"
            )
    elif update == "full":
        base.requires_grad_(True)
        student = base
    else:
        raise ValueError(update)
    student.train()
    return student, note


# --------------------------------------------------------------------------------------------
# Training
# --------------------------------------------------------------------------------------------


@dataclass
class Item:
    """One training example: token ids, the positions whose logits are trained, gold ids there, and
    the teacher's log-probabilities there (None for pure cross-entropy)."""

    ids: list[int]
    positions: list[int]
    gold: list[int]
    teacher: torch.Tensor | None = None


def _render(
    tok, template: Template, examples: list[Example], with_prefix: bool
) -> tuple[list[int], list[tuple[int, int]]]:
    """ids of [prefix] + examples, and the (start, end) token span of each example's answer."""
    from .templates import Renderer

    r = Renderer(tok, template)
    ids = list(r.header_ids) if with_prefix else list(r.bos)
    spans = []
    for ex in examples:
        (q,) = r.query_ids([ex.input])
        (t,) = r.target_ids([ex.output])
        ids += q
        spans.append((len(ids), len(ids) + len(t)))
        ids += t
    return ids, spans


def teacher_items(
    teacher, tok, cfg: DistillConfig, supports: list[Example], queries: list[Example]
) -> list[Item]:
    """Student inputs for each query, with the teacher's distributions (support prompt cached once)."""
    from .scoring import HFScorer
    from .templates import Renderer

    template = nli_template(cfg.prefix)
    r = Renderer(tok, template)
    prompt, _ = _render(tok, template, supports, with_prefix=True)
    scorer = HFScorer(teacher, tok)
    scorer.set_prompt(prompt)
    items = []
    for q in queries:
        (qi,) = r.query_ids([q.input])
        (ti,) = r.target_ids([q.output])
        dist = scorer.continuation_distributions(qi, ti).cpu()
        s_ids, spans = _render(tok, template, [q], with_prefix=cfg.student_prefix)
        start, end = spans[0]
        items.append(Item(s_ids, list(range(start - 1, end - 1)), s_ids[start:end], dist))
    return items


def pbft_items(tok, cfg: DistillConfig, supports: list[Example]) -> list[Item]:
    """One sequence: prefix + the k supports in the prompt pattern, loss on every answer."""
    ids, spans = _render(tok, nli_template(cfg.prefix), supports, with_prefix=True)
    pos = [p for s, e in spans for p in range(s - 1, e - 1)]
    gold = [ids[p + 1] for p in pos]
    return [Item(ids, pos, gold, None)]


def verbalizer_ids(tok, template: Template | None = None) -> tuple[int, list[int]]:
    """(answer position, [token of 'yes', token of 'no']) at the first answer token where the two
    verbalizers differ (position 0 for BPE tokenizers that keep ' yes' and ' no' whole)."""
    template = template or Template()
    a, b = (tok(template.target_text(w), add_special_tokens=False)["input_ids"] for w in ("yes", "no"))
    for j, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return j, [x, y]
    raise ManyICLError("the tokenizer renders ' yes' and ' no' identically; use kl: full")


def item_loss(student, item: Item, cfg: DistillConfig, verb: tuple[int, list[int]], device) -> torch.Tensor:
    """The distillation loss of one item (``losses.distillation_loss`` with the item's fields)."""
    return distillation_loss(
        student,
        item.ids,
        item.positions,
        item.gold,
        item.teacher,
        alpha=cfg.alpha,
        temperature=cfg.temperature,
        kl=cfg.kl,
        verbalizer=verb,
        device=device,
    )


def step_plan(n_items: int, cfg: DistillConfig) -> list[list[int]]:
    """Item indices of each optimizer step: a fresh permutation per epoch, cut into ``batch_size`` steps
    (the last one of an epoch may be smaller). A pure function of (seed, n_items, epochs, batch_size)."""
    rng = np.random.default_rng(cfg.seed)
    plan = []
    for _ in range(cfg.epochs):
        order = rng.permutation(n_items)
        plan += [[int(i) for i in order[b : b + cfg.batch_size]] for b in range(0, n_items, cfg.batch_size)]
    return plan


def fit_student(
    student,
    items: list[Item],
    cfg: DistillConfig,
    lr: float,
    verb: tuple[int, list[int]],
    after_step: Callable[[StepResult], None] | None = None,
) -> dict:
    """Train ``student`` on ``items`` through the shared optimisation kernel (``optimize``): ``cfg.optim``'s
    AdamW, warm-up + cosine schedule and clipping, at peak learning rate ``lr``. Each step's loss is the
    mean of its items' distillation losses (one target per item). ``after_step`` sees every step."""
    device = next(student.parameters()).device
    plan = step_plan(len(items), cfg)
    params = [p for p in student.parameters() if p.requires_grad]
    opt = Optimization(params, replace(cfg.optim, lr=lr), total_steps=len(plan))

    def loss_fn(model, item: Item) -> Loss:
        loss = item_loss(model, item, cfg, verb, device)
        return Loss(loss, loss)

    def batches(step: int) -> StepBatch:
        its = [items[i] for i in plan[step]]
        return StepBatch(its, targets=len(its), tokens=sum(len(i.ids) for i in its))

    student.train()
    last, _ = run_steps(opt, student, loss_fn, batches, 0, len(plan), after_step=after_step)
    student.eval()
    return {
        "steps": len(plan),
        "final_loss": last.loss if last is not None else float("nan"),
        "trainable_params": sum(p.numel() for p in params),
    }


# --------------------------------------------------------------------------------------------
# The workflow
# --------------------------------------------------------------------------------------------


def _eval_tasks(data: DistillData, supports: list[Example], template: Template) -> list[Task]:
    """One task per test set; its 'support' split is the in-domain supports (ICL always shows MNLI supports)."""
    tasks = [
        Task(
            "in_domain",
            "nli",
            template,
            {"support": supports, "test": data.in_domain_test},
            labels=("yes", "no"),
        )
    ]
    for name, exs in data.ood.items():
        tasks.append(Task(name, "nli", template, {"support": supports, "test": exs}, labels=("yes", "no")))
    return tasks


def _score(model, tok, tasks: list[Task], cfg: DistillConfig, shots: int, with_prefix: bool) -> dict:
    from .evaluate import evaluate

    ecfg = EvalConfig(
        output_dir=str(Path(cfg.output_dir) / "eval_runs" / "tmp"),
        demo_split="support",
        eval_split="test",
        max_length=cfg.max_length,
        shots=[shots],
        seeds=[cfg.seed],
        max_queries=cfg.eval_queries,
        add_bos=True,
        plots=False,
        progress=False,
        adapters={"m": None},
        dev_queries=0,  # distill reports fixed k, never a best over shots
        overwrite=True,  # one scratch folder, reused by every call
    )
    ts = tasks if with_prefix else [replace(t, template=replace(t.template, instruction="")) for t in tasks]
    res = evaluate(ecfg, model=model, tokenizer=tok, tasks=ts)
    acc = {r["task"]: r["score"] for r in res.rows}
    n = sum(r["n_queries"] for r in res.rows)
    ood = [acc[t] for t in acc if t != "in_domain"]
    return {
        "in_domain": acc["in_domain"],
        "out_of_domain": float(np.mean(ood)) if ood else None,
        "per_task": acc,
        "inference_ms_per_query": 1000 * sum(r["query_s"] + r["prefill_s"] for r in res.rows) / max(n, 1),
        "prompt_tokens": max(r["prompt_tokens"] for r in res.rows),
    }


_SELECTION = ("output_dir", "overwrite", "methods", "updates", "shots")
"""Settings that choose which cells run, not what a cell computes (a resume may change them)."""


def settings_drift(old: dict, cfg: DistillConfig) -> list[str]:
    """Settings that differ between the run that made a folder's cells and ``cfg`` (selection keys aside).
    Cells made before ``optim`` existed compare against the optimiser they were trained with
    (``distill_report.upgrade_settings``: constant LR, no clipping), so they are not mistaken for cells
    made with the schedule."""
    from .runs import settings_drift as drift

    return drift(upgrade_settings(old, to_dict(cfg.optim)), to_dict(cfg), ignore=_SELECTION)


def claim_folder(cfg: DistillConfig):
    """The output folder under the shared run policy (``runs.RunFolder``): finished cells made with the
    same settings are kept (the run continues cell by cell); cells made with other settings are refused,
    or discarded with ``overwrite=true``. Returns the folder, to hold its lock while the run works."""
    from .fileio import check_output_dir
    from .runs import study_folder

    return study_folder(
        check_output_dir(cfg.output_dir),
        "distillation",
        ("cells", "eval_runs", "plots", "results.json", "results.csv", "report.md"),
        lambda old: settings_drift(old, cfg),
        cfg.overwrite,
    )


@dataclass
class DistillResult:
    """What ``distill`` did: the report and the rows it is made from."""

    report_path: Path
    output_dir: Path
    rows: list[dict]
    """One per cell (method, update, k): accuracies, inference cost, and training cost and stats."""
    notes: list[str]
    """Notes on the runs that the report prints (e.g. biases added for BitFit)."""
    student: str
    """The student's shape ("same model" or "first N layers")."""


def distill(cfg: DistillConfig) -> DistillResult:
    """Run every (method, update, k) cell; write report.md, results.json/.csv and plots. Resumable."""
    folder = claim_folder(cfg)
    with folder.started(cfg) as cfg:
        return _run(cfg, folder.path)


def _run(cfg: DistillConfig, out: Path) -> DistillResult:
    from .cells import Cells
    from .modeling import load_model

    cells = Cells(out)
    teacher, tok = load_model(replace(cfg.model, adapter=None))
    data = load_distill_data(cfg)
    template = nli_template(cfg.prefix)
    verb = verbalizer_ids(tok, template)
    device = next(teacher.parameters()).device
    rows = []

    def cell(key: str, fn) -> dict:
        rows.append(cells.run(key, fn))
        return rows[-1]

    student_shape = f"first {cfg.student_layers} layers" if cfg.student_layers else "same model"
    if "base" in cfg.methods:

        def run_base():
            student = truncate_layers(teacher, cfg.student_layers) if cfg.student_layers else teacher
            scores = _score(student, tok, _eval_tasks(data, [], template), cfg, 0, cfg.student_prefix)
            return {"method": "base", "update": "-", "k": 0} | scores

        cell("base", run_base)
    for k in cfg.shots:
        supports = data.supports(k, cfg.seed)
        tasks = _eval_tasks(data, supports, template)
        if "icl" in cfg.methods:
            cell(
                f"icl/{k}",
                lambda supports=supports, tasks=tasks, k=k: (
                    {"method": "icl", "update": "-", "k": k} | _score(teacher, tok, tasks, cfg, k, True)
                ),
            )
        for method in [m for m in cfg.methods if m in ("pbft", "cd")]:
            for update in cfg.updates:

                def run(method=method, update=update, k=k, supports=supports, tasks=tasks):
                    with PeakMemory() as mem:
                        t0 = time.perf_counter()
                        if method == "cd":
                            queries = data.train_queries(cfg.train_queries, supports, cfg.seed)
                            items = teacher_items(teacher, tok, cfg, supports, queries)
                        else:
                            items = pbft_items(tok, cfg, supports)
                        student, note = make_student(teacher, cfg, update)
                        student.to(device)
                        lr = cfg.bitfit_lr if update == "bitfit" else cfg.optim.lr
                        stats = fit_student(student, items, cfg, lr, verb)
                        train_s = time.perf_counter() - t0
                    scores = _score(student, tok, tasks, cfg, 0, cfg.student_prefix)
                    del student
                    return {
                        "method": method,
                        "update": update,
                        "k": k,
                        "train_s": train_s,
                        "train_tokens": sum(len(i.ids) for i in items) * cfg.epochs,
                        "note": note,
                        **mem.as_dict(),
                        **stats,
                        **scores,
                    }

                cell(f"{method}/{update}/{k}", run)
    report = write_report(cfg, rows, student_shape, to_dict(cfg))
    return DistillResult(report, out, rows, notes_of(rows), student_shape)
