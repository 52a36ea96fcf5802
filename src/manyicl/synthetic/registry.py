"""The family registry and task generation: one RNG per (seed, family, instance), so tasks are byte-identical
for the same arguments."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field

from ..tasks import CATEGORIES, Example, Task, Template

_MAX_TRIES = 1000
"""Draws allowed per example before a family is declared too small for the requested sizes."""


@dataclass
class _Spec:
    """One instance's hidden rule and its example generator."""

    gen: Callable[[random.Random, int | None], Example]
    """Draws one example; cls/nli get the index of the label to produce, other categories None."""
    rule: str
    """The instance's hidden rule in words (goes into Task.description, never into the prompt)."""
    labels: tuple[str, ...] = ()
    options: bool = False
    """Examples carry their own multiple-choice options."""


@dataclass(frozen=True)
class Family:
    name: str
    category: str
    held_out: bool
    description: str
    """What the hidden rule is (one line)."""
    make: Callable[[random.Random], _Spec] = field(repr=False, compare=False)
    """Draws an instance's rule from the RNG and returns its generator."""
    prompt: tuple[str, str, str, str] = ("an input", "produce the output", "Input: ", "Output:")
    """(what an input is, what to do, input prefix, output prefix): format only, never the rule."""


FAMILIES: dict[str, Family] = {}
_METRICS = {"cls": "accuracy", "nli": "accuracy", "qa": "exact_match", "mlcls": "multilabel_f1", "sum": "rouge_l",
            "math": "math_accuracy", "other": "exact_match"}  # fmt: skip


def _family(category: str, held_out: bool, prompt: str):
    """Register a family; ``prompt`` is 'what|do|input prefix|output prefix', the docstring its description."""
    assert category in CATEGORIES

    def register(fn: Callable[[random.Random], _Spec]) -> Callable[[random.Random], _Spec]:
        name = fn.__name__.lstrip("_")
        what, do, ip, op = prompt.split("|")
        desc = (fn.__doc__ or "").strip().rstrip(".")
        FAMILIES[name] = Family(name, category, held_out, desc, fn, (what, do, ip, op))
        return fn

    return register


def make_task(
    family: str, instance: int = 0, seed: int = 0, train_size: int = 400, test_size: int = 100
) -> Task:
    """Instance ``instance`` of ``family``: its own hidden rule, ``train`` and ``test`` splits of exactly
    ``train_size`` and ``test_size`` examples (both at least 1)."""
    if family not in FAMILIES:
        raise ValueError(f"unknown synthetic family {family!r}; known: {', '.join(FAMILIES)}")
    if train_size < 1 or test_size < 1:
        raise ValueError(f"train_size and test_size must be at least 1, got {train_size} and {test_size}")
    fam = FAMILIES[family]
    rng = random.Random(f"{seed}:{family}:{instance}")
    spec = fam.make(rng)
    name = f"{family}_{instance}"
    balanced = fam.category in ("cls", "nli")
    seen: set[str] = set()
    splits = {
        split: _generate(spec, rng, n, seen, balanced, f"{name}/{split}")
        for split, n in (("train", train_size), ("test", test_size))
    }
    metric = _METRICS[fam.category] if not spec.options else "accuracy"
    what, do, input_prefix, output_prefix = fam.prompt
    template = Template(
        instruction=f"Task: You will receive {what}. Your task is to {do}. Here are some examples:",
        instruction_separator="\n", input_prefix=input_prefix, input_output_separator="\n",
        output_prefix=output_prefix, target_prefix=" ", example_separator="\n",
    )  # fmt: skip
    return Task(
        name=name, category=fam.category, template=template, splits=splits, metric=metric, labels=spec.labels,
        label_separator=", ", family=family, description=f"{fam.description}. This instance: {spec.rule}.",
    )  # fmt: skip


def _generate(
    spec: _Spec, rng: random.Random, n: int, seen: set[str], balanced: bool, where: str
) -> list[Example]:
    k = len(spec.labels)
    wants: list[int | None] = [i % k for i in range(n)] if balanced else [None] * n
    rng.shuffle(wants)
    out = []
    for want in wants:
        for _ in range(_MAX_TRIES):
            ex = spec.gen(rng, want)
            if ex.input not in seen:
                break
        else:
            raise ValueError(
                f"{where}: no new distinct input after {_MAX_TRIES} draws; this family's input space is "
                f"too small for {n} examples here; ask for fewer train/test examples"
            )
        if want is not None and ex.output != spec.labels[want]:
            raise AssertionError(f"{where}: generator produced {ex.output!r}, wanted {spec.labels[want]!r}")
        seen.add(ex.input)
        out.append(ex)
    return out


def synthetic_suite(
    seed: int = 0, instances: int = 4, train_size: int = 400, test_size: int = 100, split: str = "all"
) -> list[Task]:
    """``instances`` tasks of every family in ``split`` ('all', 'held_in' or 'held_out'), family by family."""
    names = {"all": tuple(FAMILIES), "held_in": held_in(), "held_out": held_out()}.get(split)
    if names is None:
        raise ValueError(f"split must be 'all', 'held_in' or 'held_out', got {split!r}")
    if instances < 1:
        raise ValueError(f"instances must be at least 1, got {instances}")
    return [make_task(f, i, seed, train_size, test_size) for f in names for i in range(instances)]


def held_out() -> tuple[str, ...]:
    """Families reserved for evaluation, in registration order."""
    return tuple(n for n, f in FAMILIES.items() if f.held_out)


def held_in() -> tuple[str, ...]:
    """Families that may be meta-trained on, in registration order."""
    return tuple(n for n, f in FAMILIES.items() if not f.held_out)
