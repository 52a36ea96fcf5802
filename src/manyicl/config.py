"""Typed configs: nested dataclasses, mirrored by YAML, overridden by ``key.sub=value``.

Each field carries a docstring (the string literal right under it); ``manyicl config show`` prints
them next to the defaults. Loading checks types, rejects unknown keys with a suggestion, runs each
dataclass's ``validate`` hook, and reports every problem at once.

This module holds the workflow configs (quickstart, perplexity, experiment, distill, icl-preserve);
the sections they are built from (model, LoRA, tasks, data, optimizer, loop, scoring, train, eval) live
in :mod:`manyicl.config_parts` and the loading machinery in :mod:`manyicl.configio`. The public names of
both are importable from here, so ``from manyicl.config import ...`` reaches every config.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from .config_parts import (
    Category,
    DataConfig,
    EvalConfig,
    LoraConfig,
    ModelConfig,
    Objective,
    OptimConfig,
    ScoringConfig,
    TaskSourceConfig,
    TrainConfig,
    TrainLoopConfig,
    _check_seed,
    _key,
    _require_positive,
)
from .configio import (
    WORKFLOWS,
    builtin_config_dir,
    describe,
    dump_yaml,
    field_docs,
    load_config,
    load_yaml_mapping,
    parse_overrides,
    resolve_config_path,
    set_by_path,
    to_dict,
)
from .errors import Collector

__all__ = [
    "WORKFLOWS",
    "AblationConfig",
    "Category",
    "DataConfig",
    "DistillConfig",
    "EvalConfig",
    "ExperimentConfig",
    "ICLPreserveConfig",
    "LoraConfig",
    "ModelConfig",
    "Objective",
    "OptimConfig",
    "PerplexityConfig",
    "QuickstartConfig",
    "ScoringConfig",
    "TaskSourceConfig",
    "TrainConfig",
    "TrainLoopConfig",
    "builtin_config_dir",
    "describe",
    "dump_yaml",
    "field_docs",
    "load_config",
    "load_yaml_mapping",
    "parse_overrides",
    "resolve_config_path",
    "set_by_path",
    "to_dict",
]


@dataclass
class QuickstartConfig:
    output_dir: str = "runs/quickstart"
    """Everything goes here: train/ (adapter, metrics) and eval/ (report.md, plots/)."""
    train: TrainConfig = field(default_factory=TrainConfig)
    """Meta-training on the held-in synthetic families (its output_dir is set to OUTPUT/train)."""
    eval: EvalConfig = field(default_factory=EvalConfig)
    """Base vs fine-tuned on the held-out families (its output_dir is set to OUTPUT/eval)."""


@dataclass
class PerplexityConfig:
    output_dir: str = "runs/perplexity"
    """Where perplexity.json and perplexity.md go."""
    model: ModelConfig = field(default_factory=ModelConfig)
    """Base model."""
    adapters: dict[str, Any] = field(default_factory=dict)
    """Models to compare, label -> adapter directory (null = base). Empty: the base model only."""
    books_dir: str | None = None
    """Folder of plain-text books (default: the shared data's gutenberg_books, a stand-in for PG-19)."""
    n_books: int = 4
    """How many books to use (0: all)."""
    context_lengths: list[int] = field(
        default_factory=lambda: [32, 64, 128, 256, 512, 1024, 2048, 4096, 8192]
    )
    """Window lengths in tokens; lengths above the model's maximum are skipped."""
    tokens_per_length: int = 16384
    """Tokens evaluated per context length, spread over the books (at least one window each)."""
    chunk: int = 1024
    """Positions per LM-head chunk: bounds the logits held at once to chunk x vocabulary."""
    progress: bool = True
    """Show a progress bar."""

    def validate(self, where: str, c: Collector) -> None:
        if not self.context_lengths or any(L < 2 for L in self.context_lengths):
            c.add(_key(where, "context_lengths"), f"must be lengths >= 2, got {self.context_lengths}")
        _require_positive(self, where, c, "tokens_per_length", "chunk")
        if self.n_books < 0:
            c.add(_key(where, "n_books"), f"must be >= 0, got {self.n_books}")
        for label, path in self.adapters.items():
            if path is not None and not isinstance(path, str):
                c.add(_key(where, f"adapters.{label}"), f"must be an adapter directory or null, got {path!r}")


@dataclass
class AblationConfig:
    categories: list[str] = field(default_factory=list)
    """Leave each of these categories out of meta-training in turn and test on its held-out tasks
    (paper Tables 10/11). Empty: no ablation."""
    methods: list[str] = field(
        default_factory=lambda: ["zero_shot", "few_shot_all", "many_shot_ar", "many_shot_all"]
    )
    """Meta-training methods to retrain without the category."""


@dataclass
class ExperimentConfig:
    output_dir: str = "results/experiment"
    """Everything goes here: cells/ (finished work, for resuming), train/, report.md, plots/."""
    train: TrainConfig = field(default_factory=TrainConfig)
    """Settings shared by every training: model, LoRA, optimizer, held-in tasks, context length. Each
    method overrides data.shots and data.objective; output_dir is set per method."""
    eval: EvalConfig = field(default_factory=EvalConfig)
    """Held-out tasks, shot grid, seeds and queries shared by every evaluation."""
    methods: list[str] = field(
        default_factory=lambda: [
            "no_ft",
            "zero_shot",
            "few_shot_last",
            "few_shot_all",
            "many_shot_ar",
            "many_shot_last",
            "many_shot_all",
            "task_level",
        ]
    )
    """Methods of the paper's Table 3 to run (see ``manyicl experiment --methods``)."""
    few_shot_k: int = 5
    """Demonstrations per sequence for few-shot fine-tuning."""
    supervised_examples_per_task: int = 256
    """Examples carrying loss per training task, the same for every meta-training method (Appendix A.1)."""
    epochs: float = 1.0
    """Passes over each method's build; the step count follows from the build size."""
    task_level_examples: int = 512
    """Supervised examples per held-out task for task-level fine-tuning (one adapter per task)."""
    budget: Literal["equal_examples", "equal_steps", "equal_tokens"] = "equal_examples"
    """What every meta-training method gets the same of: supervised examples per task (the paper's
    Appendix A.1; mask-last methods then run many more steps and tokens), optimizer steps
    (``budget_steps``), or tokens processed (``budget_tokens``, i.e. the same compute)."""
    budget_steps: int = 0
    """Optimizer steps per method with ``budget: equal_steps``."""
    budget_tokens: int = 0
    """Tokens processed per method with ``budget: equal_tokens`` (spread evenly over the tasks)."""
    val_windows: int = 16
    """Validation windows (held-in tasks' ``eval.eval_split`` examples, each method's own objective),
    scored every ``train.train.eval_every`` steps: did the method converge?"""
    task_level_eval_every: int = 5
    """Validation (dev slice) every N steps during task-level fine-tuning, for early stopping."""
    task_level_dev_examples: int = 64
    """Examples of each held-out task's demo split kept out of task-level training as its dev set
    (early stopping with ``train.train.early_stopping_patience``, best weights kept)."""
    heldout_ce_sequences: int = 4
    """Per held-out task, max-shot sequences (eval-split examples, i.i.d. labels in random order) on
    which every model's target cross-entropy is measured: a low-variance second metric. 0: skip."""
    demos_check_tasks: int = 0
    """Measure ``eval.demos: per_query`` against the cached per-seed prompt once, on this many held-out
    tasks with many_shot_all (or no_ft), first seed. 0: skip."""
    demos_check_queries: int = 50
    """Queries per task for the demos check."""
    ablation: AblationConfig = field(default_factory=AblationConfig)
    """Leave-one-category-out ablation."""
    perplexity: PerplexityConfig = field(default_factory=PerplexityConfig)
    """Forgetting: long-context perplexity of the base model and every meta-trained model."""
    run_perplexity: bool = True
    """Include the perplexity study."""
    overwrite: bool = False
    """Discard the finished cells in output_dir when they were made with other settings (by default such
    a run is refused: it would report numbers the new settings did not produce)."""
    eval_order: Literal["by_method", "by_task"] = "by_method"
    """Order of the evaluation cells: every task of one method first, or every method on one task first
    (a study run in parts then has paired comparisons on the tasks finished so far)."""

    def validate(self, where: str, c: Collector) -> None:
        from .methods import METHODS

        for m in self.methods:
            if m not in METHODS:
                c.add(_key(where, "methods"), f"unknown method {m!r}; known: {', '.join(METHODS)}")
        for m in self.ablation.methods:
            if m not in METHODS or METHODS[m] is None or m == "task_level":
                c.add(_key(where, "ablation.methods"), f"{m!r} is not a meta-training method")
        for cat in self.ablation.categories:
            if cat not in ("cls", "nli", "qa", "mlcls", "sum", "math", "other"):
                c.add(_key(where, "ablation.categories"), f"unknown category {cat!r}")
        _require_positive(self, where, c, "few_shot_k", "supervised_examples_per_task", "task_level_examples")
        if self.budget == "equal_steps" and self.budget_steps <= 0:
            c.add(_key(where, "budget_steps"), "must be > 0 with budget: equal_steps")
        if self.budget == "equal_tokens" and self.budget_tokens <= 0:
            c.add(_key(where, "budget_tokens"), "must be > 0 with budget: equal_tokens")
        if self.epochs <= 0:
            c.add(_key(where, "epochs"), f"must be > 0, got {self.epochs}")
        counts = ("val_windows", "task_level_dev_examples", "heldout_ce_sequences", "demos_check_tasks")
        for name in counts:  # a negative count slices from the end, or fails after the trainings
            if getattr(self, name) < 0:
                c.add(_key(where, name), f"must be >= 0 (0: skip), got {getattr(self, name)}")
        _require_positive(self, where, c, "task_level_eval_every", "demos_check_queries")
        if not self.train.lora.enabled:
            c.add(
                _key(where, "train.lora.enabled"),
                "experiments compare LoRA adapters on one base model; keep LoRA on",
            )


@dataclass
class DistillConfig:
    output_dir: str = "results/distill"
    """Where report.md, results.json/csv and the plots go."""
    model: ModelConfig = field(default_factory=ModelConfig)
    """The teacher (and, unless student_layers is set, the student's starting point)."""
    student_layers: int = 0
    """0: the student is the teacher model itself (context distillation proper); N: a smaller student,
    the teacher cut to its first N layers (same tokenizer), like distilling OPT-1.3B into OPT-125M."""
    methods: list[str] = field(default_factory=lambda: ["base", "icl", "pbft", "cd"])
    """base (student, no context), icl (teacher with k support examples in the prompt), pbft
    (pattern-based fine-tuning on the k labelled examples), cd (context distillation)."""
    updates: list[str] = field(default_factory=lambda: ["lora", "bitfit", "full"])
    """How the student is updated in pbft and cd: LoRA, BitFit (bias terms only) and/or all weights."""
    shots: list[int] = field(default_factory=lambda: [1, 4, 8, 12])
    """Support examples k."""
    kl: Literal["verbalizer", "full"] = "verbalizer"
    """KL over the yes/no tokens at the answer position, or over the full vocabulary at every answer token."""
    alpha: float = 0.5
    """Loss = alpha * KL(teacher || student) + (1 - alpha) * cross-entropy on the gold answer."""
    temperature: float = 1.0
    """Softmax temperature of teacher and student in the KL term."""
    train_queries: int = 20
    """Training queries the student learns from (teacher context distillation); pbft trains on the k supports."""
    epochs: int = 10
    """Passes over the training examples."""
    batch_size: int = 4
    """Examples per optimizer step."""
    optim: OptimConfig = field(
        default_factory=lambda: OptimConfig(lr=1e-4, weight_decay=0.01, warmup_steps=2)
    )
    """Students' AdamW, warm-up + cosine LR, clipping, as in ``train`` (optim.lr: LoRA and full updates)."""
    bitfit_lr: float = 1.0e-3
    """Peak learning rate for BitFit instead of optim.lr (bias-only updates need a larger step)."""
    lora: LoraConfig = field(
        default_factory=lambda: LoraConfig(r=8, alpha=32.0, dropout=0.05, target_modules=["q_proj", "v_proj"])
    )
    """LoRA settings for the student (seed 004: r=8, alpha=32, q/v, dropout 0.05)."""
    prefix: str = "Determine if the premise entails the hypothesis. Answer with yes or no."
    """Task prefix; the teacher always sees it, the student when student_prefix is true."""
    student_prefix: bool = True
    """Give the student the prefix too (it never sees the support examples)."""
    in_domain: str = "metaicl:glue-mnli"
    """The task whose examples train the student and give in-domain accuracy (neutral removed)."""
    out_of_domain: list[str] = field(default_factory=lambda: ["rte", "metaicl:scitail", "cb", "metaicl:sick"])
    """Binary NLI tasks for out-of-domain accuracy (neutral removed where there is one)."""
    eval_queries: int = 100
    """Test queries per task."""
    pool_size: int = 3000
    """Examples of the in-domain task that supports and training queries are drawn from."""
    seed: int = 0
    """Seed for supports, training queries and initialisation."""
    data_dir: str | None = None
    """Shared data folder (default: ../shared/data or $MANYICL_DATA)."""
    max_length: int = 2048
    """Context window for the teacher's prompt."""
    overwrite: bool = False
    """Discard the cells of an earlier run made with other settings in output_dir (else refused)."""

    def validate(self, where: str, c: Collector) -> None:
        if self.optim.kl_to_base:
            c.add(_key(where, "optim.kl_to_base"), "must be 0: distill's KL is to the teacher (alpha)")
        for m in self.methods:
            if m not in ("base", "icl", "pbft", "cd"):
                c.add(_key(where, "methods"), f"unknown method {m!r}; use base, icl, pbft, cd")
        for u in self.updates:
            if u not in ("lora", "bitfit", "full"):
                c.add(_key(where, "updates"), f"unknown update {u!r}; use lora, bitfit, full")
        if not self.shots or any(k <= 0 for k in self.shots):
            c.add(_key(where, "shots"), f"must be positive support counts, got {self.shots}")
        if not 0 <= self.alpha <= 1:
            c.add(_key(where, "alpha"), f"must be in [0, 1], got {self.alpha}")
        names = ("temperature", "bitfit_lr", "train_queries", "epochs", "batch_size", "eval_queries")
        _require_positive(self, where, c, *names, "pool_size", "max_length")
        if self.student_layers < 0:
            c.add(_key(where, "student_layers"), f"must be >= 0, got {self.student_layers}")
        _check_seed(self.seed, _key(where, "seed"), c)


@dataclass
class ICLPreserveConfig:
    output_dir: str = "results/icl_preserve"
    """Where report.md, results.json/csv and the plots go."""
    train: TrainConfig = field(default_factory=TrainConfig)
    """Shared training settings (model, LoRA, optimizer, loop, context length). data.tasks selects the
    *target* task(s) that are fine-tuned zero-shot; lora.enabled is set per run by ``finetune``."""
    icl_tasks: TaskSourceConfig = field(default_factory=TaskSourceConfig)
    """Multi-task data mixed in, in ICL format (many-shot sequences of other tasks; synthetic held-in
    families by default)."""
    icl_shots: int | Literal["max"] = "max"
    """Shots per mixed-in ICL sequence."""
    mix_ratios: list[float] = field(default_factory=lambda: [0.0, 0.1, 0.2])
    """Fractions of the training windows that are ICL-format data (seed 003: ~10% preserves ICL)."""
    finetune: list[str] = field(default_factory=lambda: ["lora", "full"])
    """Fine-tuning kinds to compare: LoRA and/or full."""
    kl_to_base: list[float] = field(default_factory=lambda: [0.0])
    """Weights of a KL-to-the-base-model regulariser on ICL-format batches to sweep (0: off)."""
    eval: EvalConfig = field(default_factory=EvalConfig)
    """Held-out tasks unrelated to the target (few-shot ability before/after) and their shot grid."""
    target_shots: list[Any] = field(default_factory=lambda: [0, 5])
    """Shots at which the target task's own accuracy is measured."""
    overwrite: bool = False
    """Discard the cells, adapters and report of an earlier study in output_dir when they were made with
    other settings (by default such a folder is refused: its numbers are not what these settings produce).
    A study made with the same settings always continues cell by cell."""

    def validate(self, where: str, c: Collector) -> None:
        for r in self.mix_ratios:
            if not 0 <= r < 1:
                c.add(_key(where, "mix_ratios"), f"ratios must be in [0, 1), got {r}")
        for f in self.finetune:
            if f not in ("lora", "full"):
                c.add(_key(where, "finetune"), f"unknown kind {f!r}; use lora or full")
        for w in self.kl_to_base:
            if w < 0:
                c.add(_key(where, "kl_to_base"), f"weights must be >= 0, got {w}")
