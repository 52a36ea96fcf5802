"""Per-query predictions on disk: one JSON line per model x task x seed x shots x query, so any
comparison can be re-tested from the file alone (``predictions.jsonl`` or ``.jsonl.gz``)."""

from __future__ import annotations

from pathlib import Path

from .fileio import atomic_write_text


def save_predictions(path: Path, preds: list[dict]) -> Path:
    """predictions.jsonl (or .jsonl.gz): one line per model x task x seed x shots x query."""
    import gzip
    import json

    text = "".join(json.dumps(p, ensure_ascii=False) + "\n" for p in preds)
    if str(path).endswith(".gz"):
        from .fileio import atomic_save

        return atomic_save(path, lambda tmp: Path(tmp).write_bytes(gzip.compress(text.encode(), mtime=0)))
    return atomic_write_text(path, text)


def load_predictions(path: Path) -> list[dict]:
    import gzip
    import json

    raw = gzip.decompress(path.read_bytes()).decode() if str(path).endswith(".gz") else path.read_text()
    return [json.loads(line) for line in raw.splitlines() if line.strip()]
