"""Uncertainty for evaluation reports: 95% intervals for every score, paired tests for every comparison.

Per-query scores lie in [0, 1] (accuracy 0/1, or ROUGE-L/F1). A result for one (model, task, shots) is
``scores[n_queries, n_seeds]``: the seeds are demonstration seeds over the *same* queries, so they are
not independent samples. Intervals and tests therefore resample queries (a cluster bootstrap whose unit
is a query's mean over seeds), never individual cells. Pure numpy (no scipy) and deterministic per seed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

# Cap on the number of resampled indices held at once (about 32 MiB of int64).
_CHUNK_CELLS = 4_000_000
# Above this many discordant pairs, the exact binomial tail is summed in log space (exact ints get slow).
_EXACT_INT_MAX = 2000


def _as_2d(a, name: str = "scores") -> np.ndarray:
    """[queries] or [queries, seeds] as float [queries, seeds]; rejects empty or non-finite input."""
    x = np.asarray(a, dtype=float)
    if x.ndim == 1:
        x = x[:, None]
    if x.ndim != 2:
        raise ValueError(f"{name} must be 1-D [queries] or 2-D [queries, seeds], got shape {x.shape}")
    if x.shape[0] == 0 or x.shape[1] == 0:
        raise ValueError(f"{name} is empty (shape {x.shape})")
    if not np.isfinite(x).all():
        raise ValueError(f"{name} contains NaN or inf")
    return x


def _chunks(total: int, n: int):
    """Row counts whose product with n stays under the memory cap, so huge n_boot never blows up."""
    step = max(1, _CHUNK_CELLS // max(n, 1))
    for start in range(0, total, step):
        yield min(step, total - start)


def wilson_interval(successes: float, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval for a proportion: unlike the normal interval it stays in [0, 1] and keeps
    its coverage near 0 and 1, where small-n accuracies often sit. n=0 -> (0.0, 1.0), i.e. no information."""
    if n <= 0:
        return 0.0, 1.0
    if not 0 <= successes <= n:
        raise ValueError(f"successes={successes} outside [0, n={n}]")
    p = successes / n
    denom = 1.0 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    lo = 0.0 if successes == 0 else max(0.0, centre - half)
    hi = 1.0 if successes == n else min(1.0, centre + half)
    return lo, hi


def _boot_means(values: np.ndarray, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    n = len(values)
    out = np.empty(n_boot)
    pos = 0
    for k in _chunks(n_boot, n):
        idx = rng.integers(0, n, size=(k, n))
        out[pos : pos + k] = values[idx].mean(axis=1)
        pos += k
    return out


def bootstrap_ci(
    values: np.ndarray, n_boot: int = 10000, seed: int = 0, alpha: float = 0.05
) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of a 1-D array: makes no shape assumption, so it fits
    continuous scores (ROUGE-L, F1) and clustered units alike. Vectorised in memory-bounded chunks."""
    v = np.asarray(values, dtype=float)
    if v.ndim != 1 or v.size == 0:
        raise ValueError(f"bootstrap_ci needs a non-empty 1-D array, got shape {v.shape}")
    if n_boot < 1:
        raise ValueError("n_boot must be >= 1")
    means = _boot_means(v, n_boot, np.random.default_rng(seed))
    lo, hi = np.quantile(means, [alpha / 2, 1 - alpha / 2])
    return float(lo), float(hi)


def is_binary(a) -> bool:
    """True when every value is exactly 0 or 1 (accuracy-style scores), which selects the exact methods."""
    x = np.asarray(a)
    return bool(np.isin(x, (0, 1)).all())


@dataclass
class ScoreCI:
    """A score with its 95% interval; std_over_seeds is None for one seed (never shown as "± 0")."""

    mean: float
    lo: float
    hi: float
    n: int
    seeds: int
    method: str  # "wilson" | "bootstrap"
    std_over_seeds: float | None

    def fmt(self, digits: int = 3) -> str:
        """E.g. "0.512 [0.414, 0.609]"."""
        d = digits
        return f"{self.mean:.{d}f} [{self.lo:.{d}f}, {self.hi:.{d}f}]"


def score_ci(scores, n_boot: int = 10000, seed: int = 0) -> ScoreCI:
    """Mean and 95% interval of a result: Wilson for binary scores with one seed; otherwise a cluster
    bootstrap over queries (each query's mean over seeds is the unit, as seeds reuse the same queries)."""
    x = _as_2d(scores)
    n, s = x.shape
    mean = float(x.mean())
    if s == 1 and is_binary(x):
        lo, hi = wilson_interval(float(x.sum()), n)
        method = "wilson"
    else:
        lo, hi = bootstrap_ci(x.mean(axis=1), n_boot=n_boot, seed=seed)
        method = "bootstrap"
    std = float(x.mean(axis=0).std()) if s >= 2 else None
    return ScoreCI(mean=mean, lo=lo, hi=hi, n=n, seeds=s, method=method, std_over_seeds=std)


@dataclass
class PairedTest:
    """a - b over the same queries: mean difference, its 95% CI, two-sided p, and per-query wins/losses."""

    diff: float
    lo: float
    hi: float
    p: float
    test: str  # "mcnemar_exact" | "permutation"
    n: int
    wins: int
    losses: int


def mcnemar_exact_p(b01: int, b10: int) -> float:
    """Exact two-sided McNemar p: binomial(b01 + b10, 0.5) test on the discordant pairs (1.0 if none)."""
    m, k = b01 + b10, min(b01, b10)
    if m == 0:
        return 1.0
    if m <= _EXACT_INT_MAX:
        tail = sum(math.comb(m, i) for i in range(k + 1)) / 2**m  # exact ints, one correctly rounded divide
    else:
        logs = np.array(
            [math.lgamma(m + 1) - math.lgamma(i + 1) - math.lgamma(m - i + 1) for i in range(k + 1)]
        )
        top = logs.max()
        tail = math.exp(top + math.log(np.exp(logs - top).sum()) - m * math.log(2))
    return min(1.0, 2.0 * tail)


def sign_flip_p(d: np.ndarray, n_perm: int = 10000, seed: int = 0) -> float:
    """Two-sided sign-flip permutation p for mean(d) = 0: valid for paired differences of any shape
    (exchangeable under the null), so it needs no normality assumption for bounded continuous scores."""
    d = np.asarray(d, dtype=float)
    if not np.any(d):
        return 1.0
    obs = abs(d.mean()) - 1e-12
    if 2 ** len(d) <= n_perm:  # few pairs: all 2^n sign patterns, the exact p (Monte Carlo adds noise)
        signs = ((np.arange(2 ** len(d))[:, None] >> np.arange(len(d))) & 1) * 2 - 1
        return float(np.mean(np.abs((signs * d).mean(axis=1)) >= obs))
    rng = np.random.default_rng(seed)
    hits = 0
    for k in _chunks(n_perm, len(d)):
        signs = rng.integers(0, 2, size=(k, len(d))) * 2 - 1
        hits += int((np.abs((signs * d).mean(axis=1)) >= obs).sum())
    return (1 + hits) / (1 + n_perm)


def min_attainable_p(t: PairedTest) -> float:
    """The smallest two-sided p the test could give these pairs: 2 / 2^m for m non-tied pairs (McNemar's
    discordant pairs, or the sign-flip test's non-zero differences). At or above alpha, "not significant"
    says only that there were too few pairs to test, not that the effect is absent."""
    return min(1.0, 2.0 ** (1 - (t.wins + t.losses)))


def paired_test(a, b, n_perm: int = 10000, seed: int = 0, n_boot: int = 10000) -> PairedTest:
    """Paired comparison of a vs b over the same queries (1-D or [queries, seeds]). Binary, one seed:
    exact McNemar. Otherwise: sign-flip permutation on per-query seed-mean differences. The CI is a
    bootstrap over queries in both cases, so seeds are never treated as independent samples."""
    x, y = _as_2d(a, "a"), _as_2d(b, "b")
    if x.shape != y.shape:
        raise ValueError(f"a and b must be aligned: shapes {x.shape} vs {y.shape}")
    d = (x - y).mean(axis=1)
    lo, hi = bootstrap_ci(d, n_boot=n_boot, seed=seed)
    if x.shape[1] == 1 and is_binary(x) and is_binary(y):
        b01 = int(((x == 0) & (y == 1)).sum())
        b10 = int(((x == 1) & (y == 0)).sum())
        p, test = mcnemar_exact_p(b01, b10), "mcnemar_exact"
    else:
        p, test = sign_flip_p(d, n_perm=n_perm, seed=seed + 1), "permutation"
    return PairedTest(
        diff=float(d.mean()),
        lo=lo,
        hi=hi,
        p=float(p),
        test=test,
        n=len(d),
        wins=int((d > 0).sum()),
        losses=int((d < 0).sum()),
    )


def paired_test_pooled(
    pairs: list[tuple[np.ndarray, np.ndarray]], n_perm: int = 10000, seed: int = 0, n_boot: int = 10000
) -> PairedTest:
    """One paired test over several tasks' aligned (a, b) arrays (any query counts, equal seeds): the
    per-query units are concatenated, so a claim about "the method" is tested on all its queries at once."""
    if not pairs:
        raise ValueError("paired_test_pooled needs at least one (a, b) pair")
    xs, ys = [], []
    for i, (a, b) in enumerate(pairs):
        x, y = _as_2d(a, f"pairs[{i}][0]"), _as_2d(b, f"pairs[{i}][1]")
        if x.shape != y.shape:
            raise ValueError(f"pairs[{i}]: a and b must be aligned: shapes {x.shape} vs {y.shape}")
        xs.append(x)
        ys.append(y)
    seeds = {x.shape[1] for x in xs}
    if len(seeds) != 1:
        raise ValueError(f"every task must have the same number of seeds, got {sorted(seeds)}")
    return paired_test(np.concatenate(xs), np.concatenate(ys), n_perm=n_perm, seed=seed, n_boot=n_boot)


def verdict(test: PairedTest, alpha: float = 0.05, expected_sign: int = +1) -> str:
    """ "supported" / "contradicted" / "not significant": a claim stands only on a significant difference
    in the expected direction; a significant difference the other way refutes it."""
    if expected_sign not in (1, -1):
        raise ValueError("expected_sign must be +1 or -1")
    if test.p < alpha and test.diff != 0:
        return "supported" if np.sign(test.diff) == expected_sign else "contradicted"
    return "not significant"


def holm(pvalues: list[float]) -> list[float]:
    """Holm-Bonferroni adjusted p-values (monotone, capped at 1): controls the family-wise error over the
    report's many comparisons without Bonferroni's loss of power."""
    p = np.asarray(pvalues, dtype=float)
    m = len(p)
    if m == 0:
        return []
    order = np.argsort(p, kind="stable")
    adj = np.minimum(1.0, np.maximum.accumulate((m - np.arange(m)) * p[order]))
    out = np.empty(m)
    out[order] = adj
    return [float(v) for v in out]
