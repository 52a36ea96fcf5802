import math

import numpy as np
import pytest

from manyicl.stats import (
    PairedTest,
    bootstrap_ci,
    holm,
    is_binary,
    mcnemar_exact_p,
    min_attainable_p,
    paired_test,
    paired_test_pooled,
    score_ci,
    verdict,
    wilson_interval,
)


def test_wilson_known_values():
    lo, hi = wilson_interval(5, 10)
    assert lo == pytest.approx(0.2366, abs=1e-3) and hi == pytest.approx(0.7634, abs=1e-3)
    lo, hi = wilson_interval(0, 10)
    assert lo == 0.0 and hi == pytest.approx(0.2775, abs=1e-3)
    lo, hi = wilson_interval(10, 10)
    assert hi == 1.0 and lo == pytest.approx(1 - 0.2775, abs=1e-3)
    assert wilson_interval(0, 0) == (0.0, 1.0)


def test_wilson_coverage():
    rng = np.random.default_rng(1)
    hits = 0
    for _ in range(300):
        k = rng.binomial(100, 0.3)
        lo, hi = wilson_interval(k, 100)
        hits += lo <= 0.3 <= hi
    assert 0.92 <= hits / 300 <= 0.98


def test_bootstrap_coverage_and_determinism():
    rng = np.random.default_rng(2)
    true_mean = 2 / 7  # Beta(2, 5)
    hits = 0
    for _ in range(200):
        lo, hi = bootstrap_ci(rng.beta(2, 5, size=60), n_boot=1000, seed=int(rng.integers(1 << 30)))
        hits += lo <= true_mean <= hi
    assert 0.88 <= hits / 200 <= 0.99
    v = rng.random(50)
    assert bootstrap_ci(v, seed=3) == bootstrap_ci(v, seed=3)
    assert bootstrap_ci(v, seed=3) != bootstrap_ci(v, seed=4)


def test_is_binary():
    assert is_binary([0, 1, 1.0]) and is_binary(np.array([True, False]))
    assert not is_binary([0, 0.5, 1]) and not is_binary([0, 2])


def test_score_ci_method_choice_and_seed_std():
    rng = np.random.default_rng(3)
    binary = (rng.random(100) < 0.5).astype(float)
    r = score_ci(binary)
    assert r.method == "wilson" and r.std_over_seeds is None and r.seeds == 1 and r.n == 100
    assert (r.lo, r.hi) == wilson_interval(binary.sum(), 100)
    assert r.mean == pytest.approx(binary.mean())
    assert r.fmt() == f"{r.mean:.3f} [{r.lo:.3f}, {r.hi:.3f}]"

    cont = rng.random(100)
    r = score_ci(cont)
    assert r.method == "bootstrap" and r.std_over_seeds is None

    binary2d = (rng.random((100, 3)) < 0.5).astype(float)
    r = score_ci(binary2d)
    assert r.method == "bootstrap" and r.seeds == 3
    assert r.std_over_seeds == pytest.approx(binary2d.mean(axis=0).std())
    assert r.lo < r.mean < r.hi


def test_score_ci_cluster_bootstrap_not_narrowed_by_copied_seeds():
    rng = np.random.default_rng(4)
    col = rng.random(80)
    one = score_ci(col)
    five = score_ci(np.repeat(col[:, None], 5, axis=1))
    assert five.lo == pytest.approx(one.lo, abs=0.01) and five.hi == pytest.approx(one.hi, abs=0.01)
    # a cell-level bootstrap would be ~sqrt(5) = 2.24x narrower
    assert (five.hi - five.lo) > 0.9 * (one.hi - one.lo)
    assert five.std_over_seeds == pytest.approx(0.0)


def _binary_pairs(n00: int, n01: int, n10: int, n11: int) -> tuple[np.ndarray, np.ndarray]:
    a = np.array([0] * n00 + [0] * n01 + [1] * n10 + [1] * n11, dtype=float)
    b = np.array([0] * n00 + [1] * n01 + [0] * n10 + [1] * n11, dtype=float)
    return a, b


def test_mcnemar_exact_hand_computed():
    a, b = _binary_pairs(20, 1, 9, 30)
    t = paired_test(a, b)
    assert t.test == "mcnemar_exact"
    assert t.p == pytest.approx(2 * (math.comb(10, 0) + math.comb(10, 1)) / 2**10, abs=1e-12)
    assert t.p == pytest.approx(0.021484375, abs=1e-12)
    assert (t.wins, t.losses, t.n) == (9, 1, 60)
    assert t.diff == pytest.approx(8 / 60) and t.lo <= t.diff <= t.hi
    assert paired_test(b, a).p == pytest.approx(t.p, abs=1e-12)
    assert paired_test(*_binary_pairs(5, 6, 6, 5)).p == 1.0
    assert paired_test(*_binary_pairs(10, 0, 0, 10)).p == 1.0


def test_mcnemar_log_space_branch_matches_exact_ints():
    m, k = 3001, 1400  # above the exact-int cut-off
    exact = min(1.0, 2 * sum(math.comb(m, i) for i in range(k + 1)) / 2**m)
    assert mcnemar_exact_p(k, m - k) == pytest.approx(exact, rel=1e-9)


def test_permutation_null_rate_and_power():
    rng = np.random.default_rng(5)
    rejections = 0
    for _ in range(200):
        a, b = rng.random((60, 3)), rng.random((60, 3))
        rejections += paired_test(a, b, n_perm=500, n_boot=100, seed=int(rng.integers(1 << 30))).p < 0.05
    assert 0.01 <= rejections / 200 <= 0.10

    b = rng.random((60, 3)) * 0.7
    a = b + 0.2 + rng.normal(0, 0.05, size=b.shape)
    t = paired_test(a, b, n_perm=2000)
    assert t.test == "permutation" and t.p < 0.01 and t.lo > 0 and t.wins > 50
    reverse = paired_test(b, a, n_perm=2000)  # two-sided: the opposite shift is just as significant
    assert reverse.p < 0.01 and reverse.hi < 0 and reverse.losses > 50
    assert paired_test(b, b.copy()).p == 1.0


def test_permutation_p_matches_full_enumeration():
    d = np.array([0.3, -0.1, 0.25, 0.4, -0.2, 0.15, 0.05, 0.1])
    signs = np.array(np.meshgrid(*[[-1, 1]] * len(d))).reshape(len(d), -1).T
    exact = np.mean(np.abs((signs * d).mean(axis=1)) >= abs(d.mean()) - 1e-12)
    assert 0.05 < exact < 0.5
    t = paired_test(d, np.zeros_like(d), n_perm=20000, n_boot=100)
    assert t.test == "permutation" and t.p == pytest.approx(exact, abs=1e-12)  # 2^8 <= n_perm: enumerated
    mc = paired_test(d, np.zeros_like(d), n_perm=200, n_boot=100)  # 2^8 > n_perm: Monte Carlo
    assert mc.p != pytest.approx(exact, abs=1e-12) and mc.p == pytest.approx(exact, abs=0.1)
    # no permutation reaches the observed mean: p is 1 / (1 + n_perm), never 0
    assert paired_test(np.full(20, 0.7), np.full(20, 0.2), n_perm=999, n_boot=10).p == pytest.approx(1 / 1000)


def test_pooled_equals_concatenated():
    rng = np.random.default_rng(6)
    pairs = [(rng.random((n, 2)), rng.random((n, 2))) for n in (30, 45, 12)]
    pooled = paired_test_pooled(pairs, n_perm=1000)
    concat = paired_test(
        np.concatenate([a for a, _ in pairs]), np.concatenate([b for _, b in pairs]), n_perm=1000
    )
    assert pooled == concat and pooled.n == 87 and pooled.test == "permutation"

    bin_pairs = [_binary_pairs(3, 1, 5, 4), _binary_pairs(2, 0, 6, 1)]
    pooled = paired_test_pooled(bin_pairs)
    assert pooled.test == "mcnemar_exact" and pooled.p == pytest.approx(mcnemar_exact_p(1, 11))
    with pytest.raises(ValueError):
        paired_test_pooled([(np.zeros((4, 2)), np.zeros((4, 2))), (np.zeros((4, 3)), np.zeros((4, 3)))])


def test_verdict_outcomes():
    def t(diff, p):
        return PairedTest(diff=diff, lo=0.0, hi=0.0, p=p, test="permutation", n=10, wins=0, losses=0)

    assert verdict(t(0.1, 0.01)) == "supported"
    assert verdict(t(-0.1, 0.01)) == "contradicted"
    assert verdict(t(-0.1, 0.01), expected_sign=-1) == "supported"
    assert verdict(t(0.1, 0.2)) == "not significant"
    assert verdict(t(0.1, 0.05)) == "not significant"


def test_holm():
    adj = holm([0.01, 0.04, 0.03])
    assert adj == pytest.approx([0.03, 0.06, 0.06], abs=1e-12)
    order = np.argsort([0.01, 0.04, 0.03])
    assert np.all(np.diff(np.asarray(adj)[order]) >= 0)
    assert holm([0.5, 0.6]) == [1.0, 1.0]
    assert holm([]) == []


def test_min_attainable_p_flags_untestable_samples():
    # four sequences all favouring a: the exact sign-flip p is 2/16, so p<0.05 is impossible at n=4
    t = paired_test(np.array([1.2, 1.3, 1.1, 1.25]), np.array([1.4, 1.5, 1.2, 1.3]), n_boot=100)
    assert t.p == pytest.approx(0.125) and min_attainable_p(t) == pytest.approx(0.125)
    assert verdict(t, expected_sign=-1) == "not significant"
    six = paired_test(np.full(6, 0.2), np.full(6, 0.5), n_boot=100)
    assert six.p == pytest.approx(2 / 64) and min_attainable_p(six) == pytest.approx(2 / 64)
    # McNemar: m discordant pairs give at best 2 * 0.5^m
    a, b = np.array([1, 1, 1, 0, 0]), np.array([0, 0, 0, 0, 0])
    mt = paired_test(a, b)
    assert mt.test == "mcnemar_exact" and mt.p == pytest.approx(min_attainable_p(mt)) == pytest.approx(0.25)
