"""Tasks the benchmarks fall back on when the shared data is absent (and use with ``--tiny``)."""

from __future__ import annotations

import random

from manyicl.tasks import Example, Task, Template


def synthetic_150way(n_train: int = 1500, n_test: int = 200) -> Task:
    """A CLINC150-like task: 150 intents, short utterances made of intent-specific words."""
    rng = random.Random(0)
    labels = [f"intent_{i:03d}" for i in range(150)]
    vocab = [f"w{i}" for i in range(600)]

    def utterance(label: int) -> str:
        own = vocab[label * 4 : label * 4 + 4]
        return " ".join(rng.choice(own) if rng.random() < 0.5 else rng.choice(vocab) for _ in range(6))

    def split(n: int) -> list[Example]:
        return [Example(utterance(i % 150), labels[i % 150]) for i in range(n)]

    return Task(
        name="synthetic150",
        category="cls",
        template=Template(
            instruction="Classify the intent.", input_prefix="Utterance: ", output_prefix="Intent:"
        ),
        splits={"train": split(n_train), "test": split(n_test)},
        labels=tuple(labels),
    )
