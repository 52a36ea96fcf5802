"""The built-in synthetic suite: coverage, determinism, validity, balance, hidden rules, round trip."""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from manyicl import synthetic
from manyicl.errors import Collector
from manyicl.synthetic import FAMILIES, HELD_IN, HELD_OUT, Family, make_task, synthetic_suite
from manyicl.tasks import CATEGORIES, Example, load_task_dir, validate_task, write_task_dir

EXPECTED_METRIC = {"cls": "accuracy", "nli": "accuracy", "mlcls": "multilabel_f1", "sum": "rouge_l",
                   "math": "math_accuracy", "other": "exact_match"}  # fmt: skip


@pytest.fixture(scope="module")
def suite():
    return synthetic_suite(seed=0, instances=3, train_size=400, test_size=100)


def _digest(tasks) -> str:
    h = hashlib.sha256()
    for t in tasks:
        h.update(repr((t.name, t.labels, t.template, t.splits)).encode())
    return h.hexdigest()


# --------------------------------------------------------------------------------------------
# Registry
# --------------------------------------------------------------------------------------------


def test_families_cover_every_category():
    assert len(FAMILIES) >= 16
    cats = Counter(f.category for f in FAMILIES.values())
    assert set(cats) == set(CATEGORIES)
    for c in ("cls", "nli", "qa", "math", "other"):
        assert cats[c] >= 2, c
    for name, fam in FAMILIES.items():
        assert isinstance(fam, Family) and fam.name == name
        assert fam.description and "\n" not in fam.description


def test_held_in_and_held_out_split():
    assert len(HELD_OUT) >= 5
    assert not set(HELD_IN) & set(HELD_OUT)
    assert set(HELD_IN) | set(HELD_OUT) == set(FAMILIES)
    assert list(HELD_IN) == [n for n in FAMILIES if n in HELD_IN]  # registry order, stable
    assert all(FAMILIES[n].held_out for n in HELD_OUT) and not any(FAMILIES[n].held_out for n in HELD_IN)
    out_cats = {FAMILIES[n].category for n in HELD_OUT}
    assert {"cls", "nli", "qa", "math", "other"} <= out_cats
    assert {FAMILIES[n].category for n in HELD_IN} == set(CATEGORIES)


def test_suite_splits_and_errors():
    held_in = synthetic_suite(instances=2, train_size=5, test_size=3, split="held_in")
    held_out = synthetic_suite(instances=2, train_size=5, test_size=3, split="held_out")
    every = synthetic_suite(instances=2, train_size=5, test_size=3)
    assert {t.family for t in held_in} == set(HELD_IN) and {t.family for t in held_out} == set(HELD_OUT)
    assert len(every) == 2 * len(FAMILIES) == len(held_in) + len(held_out)
    assert len({t.name for t in every}) == len(every)
    with pytest.raises(ValueError, match="split"):
        synthetic_suite(split="train")
    with pytest.raises(ValueError, match="unknown synthetic family"):
        make_task("no_such_family")
    with pytest.raises(ValueError):
        make_task("topic_labels", train_size=0)


# --------------------------------------------------------------------------------------------
# Determinism and hidden rules
# --------------------------------------------------------------------------------------------


def test_deterministic_and_seed_sensitive():
    a = synthetic_suite(seed=7, instances=2, train_size=30, test_size=10)
    b = synthetic_suite(seed=7, instances=2, train_size=30, test_size=10)
    assert _digest(a) == _digest(b)
    for ta, tb in zip(a, b):
        assert ta.splits == tb.splits and ta.labels == tb.labels and ta.description == tb.description
    c = synthetic_suite(seed=8, instances=2, train_size=30, test_size=10)
    for ta, tc in zip(a, c):
        assert ta.splits["train"] != tc.splits["train"], ta.name


def test_deterministic_across_processes():
    """String seeding does not depend on PYTHONHASHSEED or on the process."""
    code = (
        "import test_synthetic as t; from manyicl.synthetic import synthetic_suite; "
        "print(t._digest(synthetic_suite(seed=3, instances=2, train_size=20, test_size=5)))"
    )
    path = [str(Path(synthetic.__file__).parents[1]), str(Path(__file__).parent)]
    env = dict(os.environ, PYTHONHASHSEED="12345", PYTHONPATH=os.pathsep.join(path))
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == _digest(synthetic_suite(seed=3, instances=2, train_size=20, test_size=5))


def test_instances_differ_in_hidden_rule():
    for fam in FAMILIES:
        tasks = [make_task(fam, i, seed=0, train_size=40, test_size=10) for i in range(4)]
        rules = {(t.labels, t.description) for t in tasks}
        assert len(rules) >= 2, f"{fam}: all 4 instances share one rule"
        outputs = {tuple(e.output for e in t.splits["train"]) for t in tasks}
        assert len(outputs) == 4, fam


def test_instruction_does_not_reveal_rule(suite):
    for t in suite:
        instr = t.template.instruction
        assert instr.startswith("Task: You will receive ") and instr.endswith("Here are some examples:")
        words = set(t.labels)
        if t.category in ("qa", "math"):  # looked-up answers and numbers
            words |= {e.output for e in t.splits["train"]}
        if t.family == "word_cipher":  # the invented lexicon
            words |= {w for e in t.splits["train"] for w in e.output.split()}
        for w in words:
            assert not re.search(rf"(?<!\w){re.escape(w)}(?!\w)", instr, re.I), (t.name, w)


def test_word_cipher_instances_use_different_lexicons():
    a = make_task("word_cipher", 0, train_size=200, test_size=10)
    b = make_task("word_cipher", 1, train_size=200, test_size=10)
    lex_a = {i: o for e in a.splits["train"] for i, o in zip(e.input.split(), e.output.split())}
    lex_b = {i: o for e in b.splits["train"] for i, o in zip(e.input.split(), e.output.split())}
    shared = set(lex_a) & set(lex_b)
    assert len(shared) >= 20 and sum(lex_a[w] != lex_b[w] for w in shared) >= len(shared) - 2


# --------------------------------------------------------------------------------------------
# Validity of every task
# --------------------------------------------------------------------------------------------


def test_tasks_are_valid(suite):
    c = Collector()
    for t in suite:
        validate_task(t, c)
        assert (
            t.name == f"{t.family}_{t.name.rsplit('_', 1)[1]}" and t.category == FAMILIES[t.family].category
        )
        assert len(t.splits["train"]) == 400 and len(t.splits["test"]) == 100
        tpl = t.template
        assert (tpl.instruction_separator, tpl.input_output_separator, tpl.target_prefix, tpl.example_separator) == (
            "\n", "\n", " ", "\n")  # fmt: skip
        assert tpl.input_prefix.endswith(": ") and tpl.output_prefix.endswith(":")
        has_options = any(e.options for e in t.splits["train"])
        expected = "accuracy" if has_options else EXPECTED_METRIC.get(t.category, "exact_match")
        assert t.metric == expected, t.name
    assert not c.problems, c.problems[:5]


def test_text_is_clean_and_short(suite):
    words = []
    for t in suite:
        for e in t.splits["train"] + t.splits["test"]:
            for s in (e.input, e.output, *e.options):
                assert s and s == s.strip() and "\n" not in s and "  " not in s, (t.name, s)
            assert not re.search(r"\{\w+\}", e.input + e.output), (t.name, e)
            words.append(len(e.input.split()))
            assert len(e.input.split()) <= 45, (t.name, e.input)
            assert len(e.output.split()) <= 12, (t.name, e.output)
        rendered = [
            len(t.template.query_text(e.input) + t.template.target_text(e.output)) for e in t.splits["train"]
        ]
        assert sum(rendered) / len(rendered) < 260, t.name  # ~30+ examples fit in 2048 tokens
    assert sum(8 <= n <= 40 for n in words) / len(words) > 0.6


def test_no_duplicates_and_no_leakage(suite):
    for t in suite:
        train = [e.input for e in t.splits["train"]]
        assert len(set(train)) == len(train), t.name
        assert not set(train) & {e.input for e in t.splits["test"]}, t.name


def test_classification_labels_balanced(suite):
    for t in suite:
        if t.category not in ("cls", "nli"):
            continue
        assert len(t.labels) >= 2 and len(set(t.labels)) == len(t.labels)
        for a in t.labels:
            assert a == a.strip() and not any(b != a and b.startswith(a) for b in t.labels), (t.name, a)
        for split, exs in t.splits.items():
            counts = Counter(e.output for e in exs)
            assert set(counts) <= set(t.labels)
            uniform = len(exs) / len(t.labels)
            for label in t.labels:
                assert 0.5 * uniform <= counts[label] <= 2 * uniform, (t.name, split, label, counts)


def test_multilabel_canonical_order(suite):
    for t in suite:
        if t.category != "mlcls":
            continue
        assert t.labels and t.label_separator == ", "
        seen = Counter()
        for e in t.splits["train"] + t.splits["test"]:
            parts = e.output.split(", ")
            assert parts and set(parts) <= set(t.labels), (t.name, e.output)
            assert parts == sorted(parts, key=t.labels.index) and len(set(parts)) == len(parts)
            seen.update(parts)
        assert len(seen) == len(t.labels), (t.name, seen)


def test_math_and_options(suite):
    for t in suite:
        for e in t.splits["train"]:
            if t.category == "math":
                assert re.fullmatch(r"-?\d+", e.output), (t.name, e.output)
            if e.options:
                assert e.output in e.options and len(set(e.options)) == len(e.options)


def test_rules_hold_on_examples():
    """Spot checks that outputs really follow from inputs."""
    t = make_task("linear_rule", 2, train_size=50, test_size=10)
    pairs = [(int(re.search(r"\d+", e.input).group()), int(e.output)) for e in t.splits["train"]]
    (x0, y0), (x1, y1) = pairs[0], next(p for p in pairs if p[0] != pairs[0][0])
    a = (y1 - y0) // (x1 - x0)
    assert all(y == a * x + (y0 - a * x0) for x, y in pairs)
    t = make_task("numeric_compare", 1, train_size=100, test_size=10)
    ops = {"more than": int.__gt__, "fewer than": int.__lt__, "at least": int.__ge__, "at most": int.__le__,
           "exactly": int.__eq__}  # fmt: skip
    truth = {}
    for e in t.splits["train"]:
        x = int(re.search(r"\d+", e.input).group())
        rel, m = re.search(r"has (more than|fewer than|at least|at most|exactly) (\d+)", e.input).groups()
        truth.setdefault(ops[rel](x, int(m)), set()).add(e.output)
    assert len(truth[True]) == 1 and len(truth[False]) == 1 and truth[True] != truth[False]


def test_large_sizes_and_small_space(monkeypatch):
    for fam in FAMILIES:
        t = make_task(fam, 0, train_size=2000, test_size=500)
        assert len(t.splits["train"]) == 2000 and len(t.splits["test"]) == 500
    tiny = Family(
        "tiny",
        "qa",
        False,
        "tiny",
        lambda rng: synthetic._Spec(lambda r, k: Example(str(r.randint(1, 5)), "x"), "r"),
    )
    monkeypatch.setitem(FAMILIES, "tiny", tiny)
    with pytest.raises(ValueError, match="too small"):
        make_task("tiny", train_size=10, test_size=2)


# --------------------------------------------------------------------------------------------
# On disk
# --------------------------------------------------------------------------------------------


def test_round_trip(tmp_path):
    for fam in FAMILIES:
        t = make_task(fam, 1, seed=2, train_size=20, test_size=5)
        loaded = load_task_dir(write_task_dir(t, tmp_path / t.name))
        assert loaded.splits == t.splits, fam
        assert (loaded.name, loaded.category, loaded.metric, loaded.labels, loaded.family) == (
            t.name, t.category, t.metric, t.labels, t.family)  # fmt: skip
        assert loaded.template == t.template and loaded.label_separator == t.label_separator


SUITE_DIGEST = "9a8a69dd3d1450500f5533bce03d8f1f3074a0cabfbb02885c7cf07b43cdfc0e"
"""sha256 of the whole default synthetic suite (seed 0, 4 instances, 400/100 examples, both roles). Every
committed result on the synthetic suite was made from exactly this data: a refactor that changes one
example changes this digest. Update it only together with a LOG.md entry saying why the data changed."""


def test_the_synthetic_suite_is_byte_for_byte_what_the_results_were_made_from():
    import hashlib
    import json

    from manyicl.synthetic import synthetic_suite

    h = hashlib.sha256()
    for split in ("held_in", "held_out"):
        for t in synthetic_suite(seed=0, instances=4, train_size=400, test_size=100, split=split):
            h.update(
                json.dumps(
                    [
                        t.name,
                        t.category,
                        t.metric,
                        list(t.labels),
                        t.template.header_text(),
                        t.template.query_text("X"),
                        t.template.target_text("Y"),
                        {
                            k: [[e.input, e.output, list(e.options or ())] for e in v]
                            for k, v in sorted(t.splits.items())
                        },
                    ],
                    sort_keys=True,
                ).encode()
            )
    assert h.hexdigest() == SUITE_DIGEST
