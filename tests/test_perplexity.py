import math

import pytest
import torch

from manyicl.config import PerplexityConfig, load_config
from manyicl.perplexity import perplexity, strip_gutenberg, token_windows, window_nll


def test_chunked_nll_equals_the_models_own_loss(model, tok):
    ids = tok(
        "It was the best of times, it was the worst of times, it was the age of wisdom.",
        add_special_tokens=False,
    )["input_ids"]
    total, n = window_nll(model, torch.tensor(ids), chunk=7)
    with torch.no_grad():
        ref = float(model(input_ids=torch.tensor([ids]), labels=torch.tensor([ids])).loss)
    assert n == len(ids) - 1
    assert total / n == pytest.approx(ref, rel=1e-5)


def test_strip_gutenberg_and_windows():
    text = "\ufeffThe Project Gutenberg eBook\n*** START OF THE PROJECT GUTENBERG EBOOK ALICE ***\nDown the rabbit hole.\n*** END OF THE PROJECT GUTENBERG EBOOK ALICE ***\nlicense"
    assert strip_gutenberg(text) == "Down the rabbit hole."
    assert token_windows(list(range(10)), 4, 0) == [[0, 1, 2, 3], [4, 5, 6, 7]]
    assert token_windows(list(range(100)), 4, 8) == [[0, 1, 2, 3], [4, 5, 6, 7]]


def test_perplexity_workflow_on_a_tiny_model(tmp_path, model, tok):
    books = tmp_path / "books"
    books.mkdir()
    for i in range(2):
        (books / f"{i}.txt").write_text(
            "*** START OF THE PROJECT GUTENBERG EBOOK X ***\n" + "Call me Ishmael. " * 200
        )
    cfg = load_config(
        PerplexityConfig,
        None,
        [
            f"output_dir={tmp_path / 'out'}",
            f"books_dir={books}",
            "context_lengths=[16,64,100000]",
            "tokens_per_length=512",
            "progress=false",
        ],
    )
    res = perplexity(cfg, model=model, tokenizer=tok)
    lengths = {r["context_length"] for r in res.rows}
    assert lengths == {16, 64}  # beyond the model's positions: skipped
    for r in res.rows:
        assert r["perplexity"] > 1 and r["bits_per_byte"] > 0 and math.isfinite(r["perplexity"])
    assert (tmp_path / "out" / "perplexity.md").read_text().startswith("Perplexity by context length")


def test_a_bad_output_dir_is_refused_before_any_work(tmp_path, model, tok):
    from manyicl.errors import ConfigError

    taken = tmp_path / "a_file"
    taken.write_text("x")
    cfg = load_config(PerplexityConfig, None, [f"output_dir={taken}", "progress=false"])
    with pytest.raises(ConfigError, match="output_dir"):
        perplexity(cfg, model=model, tokenizer=tok)
    assert taken.read_text() == "x"


def test_the_perplexity_table_gives_each_cell_an_interval_from_its_windows():
    import numpy as np

    from manyicl.report import perplexity_table

    nll = [2.0, 3.0, 4.0, 3.0]
    rows = [
        {"model": "base", "context_length": 64, "perplexity": float(np.exp(3.0)), "bits_per_byte": 1.0,
         "window_nll": nll},
        {"model": "ft", "context_length": 64, "perplexity": float(np.exp(3.5)), "bits_per_byte": 1.1,
         "window_nll": [3.5]},  # one window: no interval
    ]  # fmt: skip
    text = perplexity_table(rows)
    line = next(x for x in text.splitlines() if x.startswith("| base |"))
    lo, hi = (float(v) for v in line.split("[")[1].split("]")[0].split(","))
    assert lo < np.exp(3.0) < hi and np.exp(2.0) <= lo and hi <= np.exp(4.0)
    ft = next(x for x in text.splitlines() if x.startswith("| ft |"))
    assert "[" not in ft and "(+13.03)" in ft
