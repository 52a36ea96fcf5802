"""Scoring answer options over a prompt cache: all of them exactly, or only the best k.

Both lay each query's options out as a token trie (:class:`OptionTrie`) whose nodes see the prompt, their
query and their own ancestors through a 4-D mask, with many queries side by side in one forward pass.

:func:`score_all` feeds every trie node that has children in one pass and returns every option's summed
log-prob. Its cost is the trie's size: a 150-way task with multi-token labels feeds ~400 tokens per query
(~1.7 s on 2 CPU cores with SmolLM2-135M), however sure the model is.

:func:`best_options` returns the same label with far less work. A log-prob is never positive, so an
option's log-prob is at most that of any of its prefixes: a trie node whose prefix already scores below the
k-th best complete option can be cut with everything below it. The search feeds the query, then in rounds
the most promising unexplored subtrees, until no unexplored node can beat the k-th best complete option.
The k best options are then exact (same numbers as :func:`score_all` up to float rounding of a different
batch) and so is the argmax; the other options carry only an upper bound (``exact`` False). The bound holds
for ``normalize: tokens`` too: a prefix's log-prob divided by the longest option below it.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import torch


@dataclass
class OptionTrie:
    """Answer options as a token trie, flattened in insertion order (parents before children)."""

    tokens: list[int]
    parent: list[int]  # index of the parent node, -1 for children of the root (the query's last token)
    depth: list[int]  # 0 for children of the root
    paths: list[list[int]]  # per option: its node indices

    @classmethod
    def build(cls, options: list[list[int]]) -> OptionTrie:
        tokens: list[int] = []
        parent: list[int] = []
        depth: list[int] = []
        children: dict[tuple[int, int], int] = {}
        paths = []
        for opt in options:
            if not opt:
                raise ValueError("an answer option rendered to zero tokens")
            node, path = -1, []
            for d, tid in enumerate(opt):
                key = (node, tid)
                if key not in children:
                    children[key] = len(tokens)
                    tokens.append(tid)
                    parent.append(node)
                    depth.append(d)
                node = children[key]
                path.append(node)
            paths.append(path)
        return cls(tokens, parent, depth, paths)

    def ancestor_mask(self) -> torch.Tensor:
        """[n, n] bool: node i may attend to node j (j is i or an ancestor of i)."""
        n = len(self.tokens)
        m = torch.zeros(n, n, dtype=torch.bool)
        for i in range(n):
            j = i
            while j != -1:
                m[i, j] = True
                j = self.parent[j]
        return m

    def fed_nodes(self) -> list[int]:
        """The nodes a pass must feed: those with children. A leaf's own output is never read (its token's
        log-prob is read at its parent's row) and nothing attends to it, so leaving it out is exact."""
        return sorted({p for p in self.parent if p >= 0})


class CacheLike(Protocol):
    """What the scorers need of a :class:`~manyicl.caching.PromptCache`."""

    base_len: int

    @property
    def length(self) -> int: ...

    def crop_to(self, n: int) -> None: ...

    def masked_forward(self, ids: list[int], pos: list[int], visible: torch.Tensor, keep: list[int]): ...


def option_score(lp: float, n: int, normalize: str) -> float:
    """What options are ranked by: the summed log-prob (``none``) or its mean per token (``tokens``)."""
    return lp / n if normalize == "tokens" else lp


def chunks(sizes: list[int], budget: int) -> list[list[int]]:
    """Consecutive indices grouped while their sizes fit ``budget`` (one item alone may exceed it)."""
    out, cur, used = [], [], 0
    for i, n in enumerate(sizes):
        if cur and used + n > budget:
            out.append(cur)
            cur, used = [], 0
        cur.append(i)
        used += n
    if cur:
        out.append(cur)
    return out


@torch.inference_mode()
def score_all(
    pc: CacheLike,
    items: list[tuple[list[int], list[list[int]]]],
    token_budget: int = 4096,
    progress: Callable[[int], object] | None = None,
) -> list[list[tuple[float, int]]]:
    """For each (query, options): (sum of log-probs, token count) of every option after prompt + query.
    ``progress`` is called with the number of queries each pass finished."""
    pc.crop_to(pc.base_len)
    tries = [OptionTrie.build(opts) for _, opts in items]
    fed = [t.fed_nodes() for t in tries]
    sizes = [len(q) + len(f) for (q, _), f in zip(items, fed)]
    results: list[list[tuple[float, int]]] = [[] for _ in items]
    past = pc.base_len
    for chunk in chunks(sizes, token_budget):
        n = sum(sizes[i] for i in chunk)
        visible = torch.zeros(n, n, dtype=torch.bool)
        ids: list[int] = []
        pos: list[int] = []
        keep: list[int] = []
        rows: list[dict[int, int]] = []  # per query: trie node (-1 = query end) -> row in kept logits
        for i in chunk:
            q, trie, nodes = items[i][0], tries[i], fed[i]
            if not q:
                raise ValueError("empty query")
            o, nq, nf = len(ids), len(q), len(nodes)
            visible[o : o + nq, o : o + nq] = torch.tril(torch.ones(nq, nq, dtype=torch.bool))
            visible[o + nq : o + nq + nf, o : o + nq] = True
            if nf:
                sel = torch.tensor(nodes)
                visible[o + nq : o + nq + nf, o + nq : o + nq + nf] = trie.ancestor_mask()[sel][:, sel]
            ids += list(q) + [trie.tokens[j] for j in nodes]
            pos += list(range(past, past + nq)) + [past + nq + trie.depth[j] for j in nodes]
            row = {-1: len(keep)}
            keep.append(o + nq - 1)
            for k, node in enumerate(nodes):
                row[node] = len(keep)
                keep.append(o + nq + k)
            rows.append(row)
        out = pc.masked_forward(ids, pos, visible, keep)
        logits = out.logits[0].float()
        norm = torch.logsumexp(logits, dim=-1)  # log-probs of the needed tokens only, no [rows, vocab] copy
        pc.crop_to(pc.base_len)
        for i, row in zip(chunk, rows):
            trie = tries[i]
            res = []
            for path in trie.paths:
                r = [row[trie.parent[node]] for node in path]
                t = [trie.tokens[node] for node in path]
                res.append((float((logits[r, t] - norm[r]).sum()), len(path)))
            results[i] = res
        if progress is not None:
            progress(len(chunk))
    return results


# --------------------------------------------------------------------------------------------
# Best-first search
# --------------------------------------------------------------------------------------------


@dataclass
class OptionScores:
    """One query's options after :func:`best_options`."""

    logprobs: list[float]
    """Per option: its summed log-prob where ``exact``, else an upper bound of it."""
    tokens: list[int]
    exact: list[bool]
    fed: int = 0
    """Trie nodes fed (score_all feeds every node with children)."""
    rounds: int = 0
    """Forward passes this query took part in, its own first one included (score_all: 1)."""


@dataclass
class _Search:
    query: list[int]
    trie: OptionTrie
    k: int
    normalize: str
    children: list[list[int]] = field(init=False)
    longest: list[int] = field(init=False)  # per node: the longest option continuing below it
    lp: dict[int, float] = field(default_factory=dict)  # node -> log-prob of its prefix, once known
    slot: dict[int, int] = field(default_factory=dict)  # node (-1: query end) -> place after the prompt
    query_slots: list[int] = field(default_factory=list)
    fed: int = 0
    rounds: int = 0

    def __post_init__(self):
        t = self.trie
        self.children = [[] for _ in t.tokens]
        for i, p in enumerate(t.parent):
            if p >= 0:
                self.children[p].append(i)
        self.longest = [0] * len(t.tokens)
        for path in t.paths:
            for node in path[:-1]:
                self.longest[node] = max(self.longest[node], len(path))
        self._ends = [path[-1] for path in t.paths]

    def bound(self, node: int) -> float:
        """The best normalised score any option strictly below ``node`` can reach: its prefix's
        log-prob (never positive), over the longest option below it under ``tokens``."""
        return option_score(min(self.lp[node], 0.0), self.longest[node], self.normalize)

    def threshold(self) -> float:
        """The k-th best score among the complete options (-inf while fewer than k are complete)."""
        done = sorted(
            (
                option_score(self.lp[e], len(p), self.normalize)
                for e, p in zip(self._ends, self.trie.paths)
                if e in self.lp
            ),
            reverse=True,
        )
        return done[self.k - 1] if len(done) >= self.k else -math.inf

    def frontier(self, cut: float) -> list[int]:
        """Known, unfed nodes with children whose bound beats ``cut`` (the k-th best complete score), best
        first: those that could still hold one of the k best."""
        open_ = [v for v in self.lp if v not in self.slot and self.children[v] and self.bound(v) > cut]
        return sorted(open_, key=lambda v: (-self.bound(v), v))

    def subtree(self, v: int) -> list[int]:
        out, stack = [], [v]
        while stack:
            u = stack.pop()
            if self.children[u]:
                out.append(u)
                stack += self.children[u]
        return sorted(out)  # parents before children (insertion order)

    def pick(self, budget: int, margin: float) -> list[int]:
        """Nodes to feed this round: whole subtrees of the open nodes, best bound first, while they fit
        ``budget`` tokens (a subtree too big for what is left gives only its root). Every open node
        above the k-th best complete score must be fed eventually; before k options are complete there
        is no such score yet, and only nodes within ``margin`` of the best bound are taken."""
        cut = self.threshold()
        open_ = self.frontier(cut)
        if open_ and cut == -math.inf:
            top = self.bound(open_[0])
            open_ = [v for v in open_ if self.bound(v) >= top - margin]
        chosen: list[int] = []
        for v in open_:
            if len(chosen) >= budget:
                break
            sub = self.subtree(v)
            chosen += sub if len(chosen) + len(sub) <= budget else [v]
        return sorted(chosen)

    def result(self) -> OptionScores:
        lps, exact = [], []
        for path in self.trie.paths:
            end = path[-1]
            if end in self.lp:
                lps.append(self.lp[end])
                exact.append(True)
            else:  # the deepest known node on its path bounds it
                known = [v for v in path if v in self.lp]
                lps.append(min(self.lp[known[-1]], 0.0) if known else 0.0)
                exact.append(False)
        return OptionScores(lps, [len(p) for p in self.trie.paths], exact, self.fed, self.rounds)


@torch.inference_mode()
def default_block(token_budget: int, round_tokens: int = 64) -> int:
    """Queries per block of :func:`best_options`: enough to fill one forward pass per round."""
    return max(1, token_budget // round_tokens)


def best_options(
    pc: CacheLike,
    items: list[tuple[list[int], list[list[int]]]],
    k: int = 1,
    normalize: str = "none",
    token_budget: int = 4096,
    round_tokens: int = 64,
    margin: float = 5.0,
    block: int | None = None,
    progress: Callable[[int], object] | None = None,
) -> list[OptionScores]:
    """For each (query, options): the ``k`` best options (by ``normalize``) scored exactly, the others
    pruned with an upper bound.

    ``round_tokens`` (trie nodes fed per query per round) and ``margin`` (nats below the best bound
    that the first expansion takes) trade rounds against nodes fed in vain; neither changes the result.
    On 2 CPU cores a forward pass of a few tokens costs as much as ~60 more tokens in one pass
    (small matrix products run far below the machine's peak), hence whole subtrees and 64 per round.

    Queries are searched in blocks of ``block`` (default: ``token_budget // round_tokens``, enough to
    fill one pass per round), the cache cropped back to the prompt between blocks: every token a search
    feeds stays cached until its block ends, so one block of all 332 queries of a point grew an 8K prompt
    by ~26K tokens that every later pass attended to (blocks of 16 on 2 cores: 3.2x / 2.1x faster per query
    with SmolLM2-135M at 2K / 8K, 1.4x with Gemma 3 at 32K; benchmarks/RESULTS.md section g.). ``progress`` is called with the number of queries each block
    finished. The block size does not change the result.
    """
    if k < 1:
        raise ValueError("k must be at least 1")
    if normalize not in ("none", "tokens"):
        raise ValueError(f"normalize must be 'none' or 'tokens', not {normalize!r}")
    if any(not q for q, _ in items):
        raise ValueError("empty query")
    block = default_block(token_budget, round_tokens) if block is None else block
    if block < 1:
        raise ValueError(f"block must be at least 1, not {block}")
    out: list[OptionScores] = []
    for start in range(0, len(items), block):
        part = items[start : start + block]
        out += _best_block(pc, part, k, normalize, token_budget, round_tokens, margin)
        if progress is not None:
            progress(len(part))
    return out


def _best_block(
    pc: CacheLike,
    items: list[tuple[list[int], list[list[int]]]],
    k: int,
    normalize: str,
    token_budget: int,
    round_tokens: int,
    margin: float,
) -> list[OptionScores]:
    """One block of searches side by side, from the bare prompt back to the bare prompt."""
    pc.crop_to(pc.base_len)
    searches = [_Search(list(q), OptionTrie.build(opts), k, normalize) for q, opts in items]
    base = pc.base_len
    try:
        # round 0: the queries, whose ends give every first token's log-prob; a trie small enough for
        # one round goes in whole (a second pass would cost more than its nodes)
        first = []
        for s in searches:
            nodes = s.trie.fed_nodes()
            first.append((s, list(range(len(s.query))), nodes if len(nodes) <= round_tokens else []))
        _feed(pc, first, token_budget)
        todo = list(searches)
        while todo:
            plan = [(s, [], s.pick(round_tokens, margin)) for s in todo]
            plan = [p for p in plan if p[2]]
            if not plan:
                break
            _feed(pc, plan, token_budget)
            todo = [s for s, _, _ in plan]
    finally:
        pc.crop_to(base)
    return [s.result() for s in searches]


def _feed(pc: CacheLike, plan: list[tuple[_Search, list[int], list[int]]], token_budget: int) -> None:
    """One round: for each search, query tokens (by index) and/or trie nodes, appended to the cache; the
    log-probs their rows give are recorded. Split into passes of ``token_budget`` tokens."""
    sizes = [len(qi) + len(nodes) for _, qi, nodes in plan]
    for chunk in chunks(sizes, token_budget):
        past = pc.length - pc.base_len  # tokens cached after the prompt
        n = sum(sizes[i] for i in chunk)
        visible = torch.zeros(n, past + n, dtype=torch.bool)
        ids: list[int] = []
        pos: list[int] = []
        keep: list[int] = []
        reads: list[tuple[_Search, int, int]] = []  # (search, node whose row it is, kept row)
        for i in chunk:
            s, qidx, nodes = plan[i]
            t = s.trie
            for j in qidx:  # the query: causal among its own tokens
                me = past + len(ids)
                s.query_slots.append(me)
                visible[len(ids), s.query_slots] = True
                ids.append(s.query[j])
                pos.append(pc.base_len + j)
            if qidx:
                s.slot[-1] = s.query_slots[-1]
                reads.append((s, -1, len(keep)))
                keep.append(len(ids) - 1)
            for v in nodes:  # a node: its query, its ancestors (fed before or in this pass) and itself
                me = past + len(ids)
                s.slot[v] = me
                row = visible[len(ids)]
                row[s.query_slots] = True
                u = v
                while u != -1:
                    row[s.slot[u]] = True
                    u = t.parent[u]
                ids.append(t.tokens[v])
                pos.append(pc.base_len + len(s.query) + t.depth[v])
                reads.append((s, v, len(keep)))
                keep.append(len(ids) - 1)
            s.fed += len(nodes)
            s.rounds += 1
        out = pc.masked_forward(ids, pos, visible, keep)
        logits = out.logits[0].float()
        norm = torch.logsumexp(logits, dim=-1)
        for s, v, r in reads:
            kids = s.children[v] if v >= 0 else [c for c, p in enumerate(s.trie.parent) if p == -1]
            if not kids:
                continue
            toks = torch.tensor([s.trie.tokens[c] for c in kids])
            lps = (logits[r, toks] - norm[r]).tolist()
            here = s.lp[v] if v >= 0 else 0.0
            for c, lp in zip(kids, lps):
                s.lp[c] = here + lp
