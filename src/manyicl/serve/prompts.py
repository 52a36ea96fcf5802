"""A registered task's many-shot prompt, built exactly as ``manyicl eval`` builds its max-shot prompt, and
the scoring of live inputs against its cache.

The demonstrations come from eval's own code: the demo pool tokenized by ``tokenize_task`` (after eval's
train/test de-duplication), then ``shot_plan`` -- a balanced selection (equal label counts) of the most
demos that fit, in an independent random order -- so the prompt a server answers from is the prompt
``manyicl eval`` scores with the same settings, seed and reserve. Inputs are rendered by the same
``Renderer`` and options scored by the same ``PromptCache.score_options_many`` (all options of many
inputs in one pass, as a trie), with eval's argmax rule; generation uses ``generate_many``.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field

from ..caching import PromptCache, prompt_hash
from ..config import EvalConfig
from ..evaluate import PreparedTask, answer_mode, shot_plan
from ..option_search import OptionTrie, chunks, option_score
from ..overlap import drop_train_test_duplicates
from ..tasks import Task
from ..templates import Renderer, tokenize_task
from .config import TaskSettings
from .errors import Invalid, TooLarge

MAX_OPTIONS = 1024
"""Most answer options one request may ask to score (each input scores all of them)."""
MAX_NEW_TOKENS_CAP = 512
"""Upper bound of the automatic ``max_new_tokens`` (eval's ``scoring.max_new_tokens_cap``)."""


@dataclass
class ServedTask:
    """A task ready to answer: its prompt ids and everything needed to render and score inputs."""

    task: Task
    settings: TaskSettings
    mode: str
    """``options`` (score each answer option) or ``generate`` (greedy decoding)."""
    prompt_ids: list[int]
    demo_indices: list[int]
    """Indices of the prompt's demonstrations in the (de-duplicated) demo pool, in prompt order."""
    n_fit: int
    """The most demonstrations that fit (``shots: max`` uses all of them)."""
    reserve: int
    max_new_tokens: int
    renderer: Renderer
    duplicates: dict = field(default_factory=dict)
    """Demo-pool and eval-split inputs dropped as duplicates of each other (eval's ``dedup``)."""
    demo_pool: int = 0
    """Demonstrations the prompt was drawn from."""
    _option_ids: dict[tuple[str, ...], list[list[int]]] = field(default_factory=dict, repr=False)
    _trie_sizes: dict[tuple[str, ...], int] = field(default_factory=dict, repr=False)

    @property
    def name(self) -> str:
        return self.task.name

    @property
    def shots(self) -> int:
        return len(self.demo_indices)

    @property
    def prompt_sha256(self) -> str:
        return prompt_hash(self.prompt_ids)

    def option_ids(self, options: tuple[str, ...]) -> list[list[int]]:
        if options not in self._option_ids:
            self._option_ids[options] = self.renderer.target_ids(list(options))
        return self._option_ids[options]

    def trie_size(self, options: tuple[str, ...]) -> int:
        """Tokens of the options' trie (shared prefixes once): what one input adds to a forward pass."""
        if options not in self._trie_sizes:
            self._trie_sizes[options] = len(OptionTrie.build(self.option_ids(options)).tokens)
        return self._trie_sizes[options]

    def default_options(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(self.task.labels)) if self.task.category != "mlcls" else ()

    def describe(self) -> dict:
        t = self.task
        return {
            "name": t.name,
            "category": t.category,
            "metric": t.metric,
            "mode": self.mode,
            "labels": list(t.labels),
            "shots": self.shots,
            "max_shots_fit": self.n_fit,
            "prompt_tokens": len(self.prompt_ids),
            "prompt_sha256": self.prompt_sha256,
            "reserve_tokens": self.reserve,
            "max_new_tokens": self.max_new_tokens if self.mode == "generate" else None,
            "demo_pool": self.demo_pool,
            "duplicates_dropped": self.duplicates,
        }


def settings_digest(settings: TaskSettings) -> str:
    from dataclasses import asdict

    return hashlib.sha256(json.dumps(asdict(settings), sort_keys=True).encode()).hexdigest()[:12]


def _eval_config(s: TaskSettings) -> EvalConfig:
    """The eval settings whose max-shot prompt this task serves (what ``manyicl eval`` would be given)."""
    return EvalConfig(
        max_length=s.max_length,
        shots=[s.shots],
        seeds=[s.seed],
        demo_split=s.demo_split,
        eval_split=s.eval_split,
        dedup=s.dedup,
        add_bos=s.add_bos,
        on_overlong=s.on_overlong,
    )


def build_served_task(
    task: Task, tokenizer, s: TaskSettings, position_limit: int | None = None
) -> ServedTask:
    """Tokenize the demo pool and build the prompt; raises :class:`Invalid` naming the setting to change."""
    if position_limit is not None and s.max_length > position_limit:
        raise Invalid(
            f"{s.max_length} exceeds the model's {position_limit} positions; ask for at most {position_limit}",
            "settings.max_length",
        )
    if not task.has_split(s.demo_split):
        raise Invalid(
            f"task {task.name} has no split '{s.demo_split}' to draw demonstrations from (it has "
            f"{', '.join(task.splits) or 'none'}); set settings.demo_split",
            "settings.demo_split",
        )
    dups: dict = {}
    if s.dedup and task.has_split(s.eval_split):
        task, dups = drop_train_test_duplicates(task, s.demo_split, s.eval_split)
    mode = answer_mode(task)
    demos = tokenize_task(task, tokenizer, s.demo_split, s.max_length // 2, s.on_overlong, s.add_bos)
    if not demos.query:
        raise Invalid(
            f"task {task.name}: no demonstration of split '{s.demo_split}' fits in half of max_length "
            f"{s.max_length}; raise settings.max_length",
            "settings.max_length",
        )
    r = Renderer(tokenizer, task.template, add_bos=s.add_bos)
    if s.max_new_tokens:
        max_new = s.max_new_tokens
    else:
        longest = max((len(t) for t in demos.target), default=16)
        max_new = min(MAX_NEW_TOKENS_CAP, int(longest * 1.5) + 8)
    if mode == "generate" and s.max_length // 2 - max_new < 4:  # else every predict is refused (413)
        raise Invalid(
            f"{max_new} new tokens leave no room for an input in half of max_length {s.max_length} (a query "
            f"and its answer); use at most {s.max_length // 2 - 4} (0 = automatic) or raise settings.max_length",
            "settings.max_new_tokens",
        )
    if s.reserve_tokens:
        reserve = s.reserve_tokens
    else:
        query_len = max(len(q) for q in demos.query)
        if mode == "options":
            opts = set()
            if task.labels:
                opts.add(tuple(task.labels))
            for e in task.split(s.demo_split)[:1000]:
                if e.options:
                    opts.add(tuple(e.options))
            answer = max((len(o) for group in opts for o in r.target_ids(list(group))), default=max_new)
        else:
            answer = max_new
        reserve = min(query_len + answer, s.max_length // 2)
    prepared = PreparedTask(task, mode, demos, [], reserve, max_new)
    plan, n_fit = shot_plan(prepared, _eval_config(s), s.seed)
    label = "max" if s.shots == "max" else str(s.shots)
    if label not in plan:
        raise Invalid(
            f"{s.shots} demonstrations do not fit in max_length {s.max_length} with {reserve} tokens reserved "
            f"for the query (at most {n_fit} fit); ask for fewer shots or a larger max_length",
            "settings.shots",
        )
    order = [int(i) for i in plan[label]]
    prompt = demos.header.tolist()
    for i in order:
        ids, _ = demos.example_ids(i)
        prompt += ids.tolist()
    return ServedTask(task, s, mode, prompt, order, n_fit, reserve, max_new, r, dups, len(demos.query))


# --------------------------------------------------------------------------------------------
# Scoring live inputs
# --------------------------------------------------------------------------------------------


@dataclass
class Encoded:
    """One input rendered for scoring."""

    ids: list[int]
    options: tuple[str, ...] = ()
    option_ids: list[list[int]] = field(default_factory=list)
    truncated: bool = False
    top_k: int | None = None
    """Score only the k best options exactly (None: every option)."""


def encode_inputs(
    st: ServedTask, inputs: list[str], options: list[str] | None, top_k: int | None = None
) -> list[Encoded]:
    """Render inputs as eval renders queries (cut from the left when too long); raises on bad options."""
    s = st.settings
    opts: tuple[str, ...] = ()
    opt_ids: list[list[int]] = []
    if st.mode == "options":
        opts = tuple(dict.fromkeys(options)) if options else st.default_options()
        if not opts:
            raise Invalid(
                f"task {st.name} has no label set: give the answer options with the request (options: [...])",
                "options",
            )
        if len(opts) > MAX_OPTIONS:
            raise TooLarge(f"{len(opts)} answer options exceed {MAX_OPTIONS}", "options")
        if any(not o.strip() for o in opts):
            raise Invalid("options must be non-empty strings", "options")
        opt_ids = st.option_ids(opts)
        answer = max(len(o) for o in opt_ids)
    else:
        if options:
            raise Invalid(f"task {st.name} generates text; it takes no options", "options")
        if top_k is not None:
            raise Invalid(f"task {st.name} generates text; top_k is for option tasks", "top_k")
        answer = st.max_new_tokens
    room = min(s.max_length // 2, s.max_length - len(st.prompt_ids)) - answer
    if room < 4:
        raise TooLarge(
            f"the answer options take {answer} tokens, leaving no room for an input in max_length {s.max_length} "
            "after the prompt; use shorter options or register the task with a larger reserve_tokens",
            "options",
        )
    out = []
    for x in inputs:
        ids, cut = st.renderer.fit_query(x, room)
        if len(ids) > room:
            raise TooLarge(f"the task's template alone exceeds the {room} tokens left for an input", "inputs")
        out.append(Encoded(ids, opts, opt_ids, cut, top_k if top_k is None or top_k < len(opts) else None))
    return out


def pass_chunks(st: ServedTask, items: list[Encoded], budget: int) -> list[list[int]]:
    """Indices of ``items`` per forward pass: consecutive inputs while their tokens (input + option trie,
    or input + ``max_new_tokens``) fit ``budget`` -- the passes ``score_options_many`` would make for them."""
    if st.mode == "options":
        sizes = [len(e.ids) + st.trie_size(e.options) for e in items]
    else:
        budget = max(budget, 4096)
        sizes = [len(e.ids) + st.max_new_tokens for e in items]
    return chunks(sizes, budget)


def score_encoded(
    st: ServedTask, pc: PromptCache, tokenizer, items: list[Encoded], budget: int
) -> list[dict]:
    """Answers for ``items`` against the prompt cache, in one batched call (eval's scoring rule)."""
    if not items:
        return []
    if st.mode == "options":
        norm = st.settings.normalize
        out: list[dict] = [{} for _ in items]
        every = [i for i, e in enumerate(items) if e.top_k is None]
        if every:
            all_lls = pc.score_options_many(
                [(items[i].ids, items[i].option_ids) for i in every], token_budget=budget
            )
            for i, lls in zip(every, all_lls):
                out[i] = _answer(items[i], [lp for lp, _ in lls], [n for _, n in lls], None, norm)
        for k in sorted({e.top_k for e in items if e.top_k is not None}):
            some = [i for i, e in enumerate(items) if e.top_k == k]
            found = pc.best_options_many(
                [(items[i].ids, items[i].option_ids) for i in some], k=k, normalize=norm, token_budget=budget
            )
            for i, r in zip(some, found):
                out[i] = _answer(items[i], r.logprobs, r.tokens, r.exact, norm)
        return out
    texts = pc.generate_many(
        [e.ids for e in items],
        tokenizer,
        st.max_new_tokens,
        st.task.template.stop_strings(),
        token_budget=max(budget, 4096),
    )
    return [{"text": t.strip(), "truncated": e.truncated} for t, e in zip(texts, items)]


def _answer(e: Encoded, lps: list[float], ns: list[int], exact: list[bool] | None, normalize: str) -> dict:
    """eval's argmax rule over the exactly scored options; with ``top_k`` the k best (best first) are
    reported and the pruned ones counted."""
    vals = [option_score(lp, n, normalize) for lp, n in zip(lps, ns)]
    shown = list(range(len(lps))) if exact is None else [i for i in range(len(lps)) if exact[i]]
    if exact is not None:
        shown = sorted(shown, key=lambda i: (-vals[i], i))[: e.top_k]
    best = max(shown, key=lambda i: (vals[i], -i))
    res: dict = {
        "label": e.options[best],
        "logprobs": {e.options[i]: lps[i] for i in shown},
        "truncated": e.truncated,
    }
    if normalize == "tokens":
        res["scores"] = {e.options[i]: vals[i] for i in shown}
    if exact is not None:
        res["pruned"] = len(lps) - len(shown)
    return res
