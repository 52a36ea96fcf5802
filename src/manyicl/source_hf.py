"""``format: hf`` sources: ``datasets.load_dataset(**hf)`` with local paths resolved against the task folder.

Values are stringified by the caller's row converter (``datasets``' CSV loader would turn numeric-looking
strings into ints). A hub name needs network; offline, local files or the Hugging Face cache are used.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from .errors import Collector
from .examples import Example

# Local-file builders of ``datasets``: their data_files / data_dir are local paths (resolved against the task
# folder); for a hub dataset they are paths inside the dataset's repository and are left alone.
HF_FILE_BUILDERS = {"json", "csv", "parquet", "text", "arrow", "pandas", "xml", "webdataset", "sql"}


def _local(p: str, folder: Path) -> str:
    if "://" in p or Path(p).is_absolute():
        return p
    if p.startswith("~"):
        return str(Path(p).expanduser())
    return str(folder / p)


def resolve_hf_args(args: dict, folder: Path) -> dict:
    """``hf:`` arguments with local paths made relative to the task folder, not the working directory.

    ``data_files`` and ``data_dir`` are resolved when ``path`` is a local-file builder (json, csv, parquet,
    ...) or a folder inside the task folder; ``cache_dir`` always; ``path`` when it names a file or folder
    inside the task folder. Absolute paths, ``~`` paths and URLs are kept.
    """
    out = dict(args)
    path = out.get("path")
    local_path = isinstance(path, str) and "://" not in path and (folder / path).exists()
    if local_path:
        out["path"] = str(folder / path)
    if local_path or path in HF_FILE_BUILDERS:
        df = out.get("data_files")
        if isinstance(df, str):
            out["data_files"] = _local(df, folder)
        elif isinstance(df, list):
            out["data_files"] = [_local(x, folder) if isinstance(x, str) else x for x in df]
        elif isinstance(df, dict):
            out["data_files"] = {
                k: _local(v, folder)
                if isinstance(v, str)
                else [_local(x, folder) if isinstance(x, str) else x for x in v]
                if isinstance(v, list)
                else v
                for k, v in df.items()
            }
        if isinstance(out.get("data_dir"), str):
            out["data_dir"] = _local(out["data_dir"], folder)
    if isinstance(out.get("cache_dir"), str):
        out["cache_dir"] = _local(out["cache_dir"], folder)
    return out


def read_hf(
    src: dict, folder: Path, c: Collector, where: str, to_example: Callable[..., Example | None]
) -> tuple[dict[str, list[Example]], dict[str, str]]:
    try:
        import datasets
    except ImportError:
        c.add(where, "format hf needs the datasets package: pip install datasets==5.2.0", "source.hf")
        return {}, {}
    args = resolve_hf_args(src["hf"], folder)
    split_map = args.pop("splits", None)
    try:
        dd = datasets.load_dataset(**args)
    except Exception as e:  # noqa: BLE001 - any loader failure is a user-facing data problem
        first = (str(e).splitlines() or [""])[0][:200]
        c.add(
            where,
            f"datasets.load_dataset({args}) failed: {type(e).__name__}: {first}. Offline, use local files "
            "(path: json|csv, data_files: ...; relative to the task folder) or a dataset already in the Hugging "
            "Face cache",
            "source.hf",
        )
        return {}, {}
    if not hasattr(dd, "keys"):  # one split asked for with split: ...
        dd = {str(args.get("split") or "train"): dd}
    split_map = split_map or {k: k for k in dd}
    splits, files = {}, {}
    for ours, theirs in split_map.items():
        if theirs not in dd:
            c.add(where, f"dataset has no split {theirs!r} (it has {list(dd)})", f"source.hf.splits.{ours}")
            continue
        at = f"hf:{args.get('path')}[{theirs}]"
        exs = [to_example(row, src, f"{at}:{i + 1}", c, i + 1) for i, row in enumerate(dd[theirs])]
        splits[str(ours)] = [e for e in exs if e is not None]
        files[str(ours)] = at
    return splits, files
