"""Atomic file writes: a reader never sees a half-written checkpoint, report or cache."""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from collections.abc import Callable
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _public(path: str | Path, directory: bool = False) -> None:
    """mkstemp/mkdtemp create 0600/0700; give outputs the permissions the user's umask asks for."""
    os.chmod(path, (0o777 if directory else 0o666) & ~_umask())


def atomic_write_text(path: str | Path, text: str) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    _public(tmp)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_json(path: str | Path, obj: Any) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2, ensure_ascii=False, default=str) + "\n")


def atomic_save(path: str | Path, save: Callable[[Path], None]) -> Path:
    """Call ``save(tmp_path)`` then rename onto ``path`` (for torch/safetensors/matplotlib writers)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=path.suffix or ".tmp", dir=path.parent)
    os.close(fd)
    _public(tmp)
    try:
        save(Path(tmp))
        _public(tmp)  # again: some writers (safetensors' save_file) re-create the file 0600
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


@contextmanager
def atomic_dir(path: str | Path):
    """Build a directory under a temporary name; it appears at ``path`` only when the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    _public(tmp, directory=True)
    try:
        yield tmp
        for f in tmp.rglob("*"):  # writers that create their files 0600 (safetensors) get the umask too
            if not f.is_symlink():
                _public(f, directory=f.is_dir())
        if path.exists():
            old = path.with_name(f".{path.name}.old{os.getpid()}")
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


class _Yaml12Loader(yaml.SafeLoader):
    """SafeLoader with YAML 1.2 scalars: only true/false are booleans (``yes``/``no``/``on``/``off`` stay
    strings, so labels like ``no`` survive) and ``1e-4`` is a float. A key given twice in one mapping is
    an error (PyYAML keeps the last one silently, so editing the first changes nothing); keys brought in
    by a merge (``<<: *base``) may be overridden."""

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            seen: dict[tuple[str, str], int] = {}
            for key, _ in node.value:
                if not isinstance(key, yaml.ScalarNode) or key.tag == "tag:yaml.org,2002:merge":
                    continue
                line = key.start_mark.line + 1
                first = seen.get((key.tag, key.value))
                if first is not None:
                    raise yaml.YAMLError(
                        f"line {line}: key '{key.value}' is given twice in one mapping (first on line "
                        f"{first}); keep one of them"
                    )
                seen[(key.tag, key.value)] = line
        return super().construct_mapping(node, deep=deep)


_Yaml12Loader.yaml_implicit_resolvers = {
    k: [r for r in v if r[0] not in ("tag:yaml.org,2002:bool", "tag:yaml.org,2002:float")]
    for k, v in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Yaml12Loader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)
_Yaml12Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"^[-+]?(?:\.[0-9]+|[0-9][0-9_]*(?:\.[0-9_]*)?)(?:[eE][-+]?[0-9]+)?$|^[-+]?\.(?:inf|Inf|INF)$|^\.(?:nan|NaN|NAN)$"
    ),
    list("-+0123456789."),
)


YAML_MAX_VALUES = 1_000_000
"""Most values a YAML document may hold once its aliases (``*name``) are expanded: a few lines of
nested aliases ("billion laughs") otherwise expand to billions, and every walk over the config (checks,
messages, the saved config.yaml) would run out of memory."""


def _expanded_size(node: yaml.Node, sizes: dict[int, int], open_: set[int]) -> int:
    """Values in ``node`` with every alias expanded (each alias node is counted once per use)."""
    key = id(node)
    if key in sizes:
        return sizes[key]
    if key in open_:
        raise yaml.YAMLError(
            "an alias (*name) refers to the anchor (&name) that contains it; remove the loop"
        )
    open_.add(key)
    n = 1
    if isinstance(node, yaml.SequenceNode):
        n += sum(_expanded_size(v, sizes, open_) for v in node.value)
    elif isinstance(node, yaml.MappingNode):
        n += sum(_expanded_size(k, sizes, open_) + _expanded_size(v, sizes, open_) for k, v in node.value)
    open_.discard(key)
    sizes[key] = n
    if n > YAML_MAX_VALUES:
        raise yaml.YAMLError(
            f"its aliases (*name) expand to more than {YAML_MAX_VALUES:,} values; write the values out "
            "or use fewer nested aliases"
        )
    return n


def load_yaml(text: str) -> Any:
    """Parse YAML safely with YAML 1.2 booleans and floats (see :class:`_Yaml12Loader`); refuse a
    document nested too deeply or whose aliases expand past :data:`YAML_MAX_VALUES` values."""
    loader = _Yaml12Loader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _expanded_size(node, {}, set())
        return loader.construct_document(node)
    except ValueError as e:  # int() of a number with more than 4,300 digits, inside PyYAML
        raise yaml.YAMLError(f"{str(e).split(':')[0]}; write it as a shorter number") from None
    except RecursionError:
        raise yaml.YAMLError("nested too deeply to read; flatten it") from None
    finally:
        loader.dispose()


def check_output_dir(value: str, field: str = "output_dir") -> Path:
    """The output folder, checked before any long work: not empty, ``~`` expanded, not a file, not a
    dangling link, writable. Raises ConfigError naming ``field`` and the fix."""
    from .errors import ConfigError

    if not str(value).strip():
        raise ConfigError.single(field, "is empty; give a folder, e.g. output_dir=runs/my_run")
    path = Path(os.path.expanduser(str(value)))
    if path.is_symlink() and not path.exists():
        raise ConfigError.single(
            field, f"{path} is a link to a missing target ({os.readlink(path)}); remove it or fix it"
        )
    if path.exists() and not path.is_dir():
        raise ConfigError.single(field, f"{path} is a file, not a folder; choose another output_dir")
    try:
        path.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".write-test.", dir=path)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise ConfigError.single(
            field, f"{path} is not writable ({e.strerror}); choose a folder you can write to"
        ) from None
    return path


@contextmanager
def exclusive_lock(folder: Path, what: str):
    """Hold ``folder/.manyicl.lock`` for the block; a second process on the same folder is refused with
    the holder's PID instead of interleaving its files with ours."""
    import fcntl

    from .errors import ManyICLError

    lock_path = Path(folder) / ".manyicl.lock"
    f = open(lock_path, "a+")
    try:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.seek(0)
        holder = f.read().strip() or "another process"
        f.close()
        raise ManyICLError(
            f"{folder} is in use by {holder} ({what}); wait for it to finish, or use another output_dir"
        ) from None
    f.seek(0)
    f.truncate()
    f.write(f"pid {os.getpid()}")
    f.flush()
    try:
        yield
    finally:
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)
        finally:
            f.close()
