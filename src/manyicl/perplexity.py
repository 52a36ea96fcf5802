"""Long-context perplexity and bits-per-byte on books (forgetting, paper Table 5).

Each book (Project Gutenberg boilerplate stripped) is tokenized once and cut into non-overlapping
windows of L tokens, for every context length L. Perplexity at L is exp(mean negative log-likelihood)
over every predicted token of those windows; bits-per-byte divides the total NLL (in bits) by the
UTF-8 bytes of the predicted text, which makes numbers comparable across tokenizers.

Each window is scored by the scoring interface's rolling NLL (:meth:`manyicl.scoring.HFScorer.rolling_nll`).
Memory stays bounded at long contexts: the model returns hidden states, and the LM head and the
cross-entropy run over chunks of positions, so full-vocabulary logits for the whole window never exist.
"""

from __future__ import annotations

import logging
import math
import re
import time
from dataclasses import dataclass
from pathlib import Path

from .config import PerplexityConfig, dump_yaml
from .errors import Collector, ConfigError, ManyICLError
from .fileio import atomic_write_json, atomic_write_text
from .report import perplexity_table  # formatted report-side; importable from here as before
from .scoring import HFScorer

log = logging.getLogger(__name__)

_START = re.compile(r"\*\*\*\s*START OF (THE|THIS) PROJECT GUTENBERG EBOOK[^\n]*\n", re.IGNORECASE)
_END = re.compile(r"\*\*\*\s*END OF (THE|THIS) PROJECT GUTENBERG EBOOK", re.IGNORECASE)


def strip_gutenberg(text: str) -> str:
    """The book's text without the Project Gutenberg header, footer and license."""
    text = text.lstrip("\ufeff")
    m = _START.search(text)
    if m:
        text = text[m.end() :]
    m = _END.search(text)
    if m:
        text = text[: m.start()]
    return text.strip()


def book_files(books_dir: Path, n_books: int) -> list[Path]:
    files = sorted(p for p in books_dir.glob("*.txt") if p.name != "SOURCE.txt")
    if not files:
        raise ConfigError.single("books_dir", f"no .txt books in {books_dir}")
    return files[:n_books] if n_books else files


def _read_books(files: list[Path]) -> list[str]:
    """The books' text; every file that is not readable UTF-8 text is named at once."""
    c = Collector()
    texts = []
    for f in files:
        try:
            texts.append(f.read_text(encoding="utf-8"))
        except UnicodeDecodeError as e:
            c.add(str(f), f"not UTF-8 text (byte {e.start}); convert it, e.g. iconv -f latin1 -t utf-8")
        except OSError as e:
            c.add(str(f), f"cannot read this book ({e.strerror}); fix its permissions or remove it")
    c.raise_if_any(ConfigError, title="unusable books")
    return texts


def window_nll(model, ids, chunk: int = 1024) -> tuple[float, int]:
    """Sum of NLL (nats) of tokens 1..L-1 of one window given the tokens before, and their count
    (:meth:`HFScorer.rolling_nll`: at most ``chunk`` x vocab logits exist at once)."""
    return HFScorer(model, nll_chunk=chunk).rolling_nll(ids)


@dataclass
class PerplexityResult:
    rows: list[dict]
    output_dir: Path


def token_windows(ids: list[int], length: int, limit_tokens: int) -> list[list[int]]:
    """Non-overlapping windows of ``length`` tokens, at most ``limit_tokens`` in total."""
    out = []
    used = 0
    for s in range(0, len(ids) - length + 1, length):
        if limit_tokens and used + length > limit_tokens and out:
            break
        out.append(ids[s : s + length])
        used += length
    return out


def perplexity(cfg: PerplexityConfig, model=None, tokenizer=None) -> PerplexityResult:
    """Perplexity and bits-per-byte of each model at each context length; writes perplexity.json/.md."""
    from tqdm.auto import tqdm

    from .fileio import check_output_dir
    from .modeling import check_adapter
    from .session import ModelSession

    out = check_output_dir(cfg.output_dir)  # before the model loads: a file, dangling link, `~`, read-only
    atomic_write_text(out / "config.yaml", dump_yaml(cfg))
    books_dir = Path(cfg.books_dir) if cfg.books_dir else _default_books()
    files = book_files(books_dir, cfg.n_books)
    texts = _read_books(files)  # a book or an adapter that cannot be used is refused before the model loads
    specs = [(str(k), v) for k, v in cfg.adapters.items()] if cfg.adapters else [("base", cfg.model.adapter)]
    for label, adapter in specs:
        if adapter:
            check_adapter(adapter, f"adapters.{label}" if cfg.adapters else "model.adapter")
    if model is None:
        session = ModelSession.load(cfg.model)  # the base alone: adapters are attached per label below
    else:
        session = ModelSession(model, tokenizer, cfg.model.name_or_path)
    model, tokenizer = session.model, session.tokenizer
    max_pos = getattr(getattr(model, "config", None), "max_position_embeddings", None) or 10**9
    lengths = [L for L in cfg.context_lengths if L <= max_pos]
    if len(lengths) < len(cfg.context_lengths):
        log.warning("context lengths above the model's %d positions are skipped", max_pos)
    books = [tokenizer(strip_gutenberg(t), add_special_tokens=False)["input_ids"] for t in texts]
    rows = []
    plan = {
        L: [w for b in books for w in token_windows(b, L, cfg.tokens_per_length // max(len(books), 1))]
        for L in lengths
    }
    bar = tqdm(
        total=len(specs) * sum(len(v) for v in plan.values()),
        disable=not cfg.progress,
        desc="perplexity",
        unit="window",
    )
    for label, adapter in specs:
        with session.adapter(adapter) as m:  # removed again on exit, also on an error
            scorer = HFScorer(m, tokenizer, nll_chunk=cfg.chunk)
            for L in lengths:
                nll = 0.0
                count = 0
                nbytes = 0
                per_window = []
                t0 = time.perf_counter()
                for w in plan[L]:
                    s, n = scorer.rolling_nll(w)
                    nll += s
                    count += n
                    per_window.append(s / max(n, 1))
                    nbytes += len(tokenizer.decode(w[1:]).encode("utf-8"))
                    bar.update(1)
                if not count:
                    continue
                rows.append(
                    {
                        "model": label,
                        "context_length": L,
                        "windows": len(plan[L]),
                        "tokens": count,
                        "perplexity": math.exp(nll / count),
                        "bits_per_byte": nll / math.log(2) / max(nbytes, 1),
                        "seconds": time.perf_counter() - t0,
                        "window_nll": per_window,  # mean NLL per token of each window (the same windows for every model)
                    }
                )
    bar.close()
    if not rows:
        raise ManyICLError("no perplexity computed: books shorter than every context length?")
    res = PerplexityResult(rows, out)
    atomic_write_json(out / "perplexity.json", {"books": [f.name for f in files], "rows": rows})
    atomic_write_text(out / "perplexity.md", perplexity_table(rows))
    return res


def _default_books() -> Path:
    from .realdata import default_data_dir

    d = default_data_dir()
    if d is None or not (d / "gutenberg_books").is_dir():
        raise ConfigError.single(
            "books_dir", "no gutenberg_books folder found; set books_dir or MANYICL_DATA"
        )
    return d / "gutenberg_books"
