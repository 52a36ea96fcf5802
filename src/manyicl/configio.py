"""The machinery behind the typed configs: YAML and ``key.sub=value`` overrides in, a checked dataclass out.

Works on any dataclass (the schema itself is :mod:`manyicl.config`): values are coerced to the annotated
types, unknown keys are rejected with a suggestion, each dataclass's ``validate`` hook runs, and every
problem is reported at once. :func:`describe` and :func:`field_docs` print the defaults with the docstring
written under each field (read from the source of the dataclass's module).
"""

from __future__ import annotations

import ast
import dataclasses
import difflib
import functools
import inspect
import math
import reprlib
import textwrap
import types
import typing
from pathlib import Path
from typing import Any, Literal

import yaml

from .errors import Collector, ConfigError
from .fileio import load_yaml


@functools.cache
def field_docs(cls: type) -> dict[str, str]:
    """Docstrings written under dataclass fields (read from source; empty when source is missing)."""
    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if not dataclasses.is_dataclass(klass):
            continue
        try:
            tree = ast.parse(textwrap.dedent(inspect.getsource(klass)))
        except (OSError, TypeError, SyntaxError):
            continue
        body = tree.body[0].body  # type: ignore[attr-defined]
        for node, nxt in zip(body, body[1:] + [None]):
            if (
                isinstance(node, ast.AnnAssign)
                and isinstance(node.target, ast.Name)
                and isinstance(nxt, ast.Expr)
                and isinstance(nxt.value, ast.Constant)
                and isinstance(nxt.value.value, str)
            ):
                docs[node.target.id] = " ".join(nxt.value.value.split())
    return docs


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return " | ".join(repr(a) for a in typing.get_args(tp))
    if origin in (typing.Union, types.UnionType):
        return " | ".join(_type_name(a) for a in typing.get_args(tp))
    if origin in (list, tuple, dict):
        return f"{origin.__name__}[{', '.join(_type_name(a) for a in typing.get_args(tp))}]"
    return getattr(tp, "__name__", str(tp))


_NO = object()

_REPR = reprlib.Repr()
_REPR.maxstring = _REPR.maxother = 120
_REPR.maxlist = _REPR.maxtuple = _REPR.maxdict = 10


def _shown(value: Any) -> str:
    """``repr(value)`` cut to a readable length (a 100k-character override is not echoed whole)."""
    return _REPR.repr(value)


def _coerce(value: Any, tp: Any, where: str, c: Collector, base: Any = None) -> Any:
    """Convert a YAML value to type ``tp``; on failure record a problem and return ``_NO``.

    ``base`` is the current value of a nested config: keys not given keep their values from it, so
    a parent's non-default sub-config (e.g. eval tasks defaulting to held-out) survives overrides.
    """
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if dataclasses.is_dataclass(tp):
        if value is None:
            return base if base is not None else tp()
        if not isinstance(value, dict):
            c.add(where, f"expected a mapping of {tp.__name__} fields, got {value!r}")
            return _NO
        return _build(tp, value, where, c, base=base)
    if origin is Literal:
        choices = typing.get_args(tp)
        if value in choices:
            return value
        return _NO
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        for arg in args:  # try exact matches first so "max" stays a string and 3 an int
            if arg is type(None):
                continue
            probe = Collector()
            out = _coerce(value, arg, where, probe)
            if out is not _NO and not probe:
                return out
        return _NO
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            return _NO
        (item_tp, *_) = typing.get_args(tp) or (Any,)
        items = [_coerce(v, item_tp, f"{where}[{i}]", c) for i, v in enumerate(value)]
        if any(i is _NO for i in items):
            return _NO
        return list(items)
    if origin is dict:
        return dict(value) if isinstance(value, dict) else _NO
    if tp is bool:
        return value if isinstance(value, bool) else _NO
    if tp is int:
        if isinstance(value, bool):
            return _NO
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                return int(value.replace("_", ""))
            except ValueError:
                return _NO
        return _NO
    if tp is float:
        if isinstance(value, bool):
            return _NO
        if isinstance(value, (int, float)):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads "1e-4" as a string
            try:
                return float(value)
            except ValueError:
                return _NO
        return _NO
    if tp is str:
        return value if isinstance(value, str) else (str(value) if isinstance(value, (int, float)) else _NO)
    return value


def _non_finite(value: Any) -> float | None:
    """The first NaN or infinity in a float value (or a list of them): no setting means either, and
    both train silently to NaN weights."""
    vals = value if isinstance(value, list) else [value]
    for v in vals:
        if isinstance(v, float) and not math.isfinite(v):
            return v
    return None


def _build(cls: type, data: dict, prefix: str, c: Collector, base: Any = None) -> Any:
    hints = typing.get_type_hints(cls)
    base = base if base is not None else cls()
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        where = f"{prefix}.{key}" if prefix else str(key)
        if key not in names:
            close = difflib.get_close_matches(str(key), names, n=1)
            hint = f" Did you mean '{close[0]}'?" if close else f" Known keys: {', '.join(names)}."
            c.add(where, f"unknown key.{hint}")
            continue
        out = _coerce(value, hints[key], where, c, base=getattr(base, key))
        if out is _NO:
            c.add(where, f"expected {_type_name(hints[key])}, got {_shown(value)}")
            continue
        bad = _non_finite(out)
        if bad is not None:
            c.add(where, f"must be a finite number, got {bad!r}")
            continue
        kwargs[key] = out
    obj = dataclasses.replace(base, **kwargs)
    validate = getattr(obj, "validate", None)
    if callable(validate):
        validate(prefix, c)
    return obj


def set_by_path(data: dict, dotted: str, value: Any) -> None:
    """Set ``data['a']['b'] = value`` for ``dotted='a.b'``, creating mappings on the way."""
    keys = dotted.split(".")
    node = data
    for k in keys[:-1]:
        if not isinstance(node.get(k), dict):
            node[k] = {}
        node = node[k]
    node[keys[-1]] = value


def parse_overrides(overrides: list[str], c: Collector) -> list[tuple[str, Any]]:
    out = []
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            c.add(item, "overrides look like key.sub=value, e.g. data.max_length=1024")
            continue
        try:
            value = load_yaml(raw) if raw.strip() else ""
        except yaml.YAMLError as e:
            if raw.lstrip()[:1] in ("[", "{"):  # a list or mapping that does not parse: say why
                mark = getattr(e, "problem_mark", None)
                why = getattr(e, "problem", None) or str(e)
                at = f" at character {mark.column + 1}; write e.g. [0, 4] or {{key: value}}" if mark else ""
                c.add(key.strip(), f"not valid YAML: {why}{at}")
                continue
            value = raw
        out.append((key.strip(), value))
    return out


def builtin_config_dir() -> Path:
    """The folder of the shipped YAML configs (``manyicl/configs``)."""
    return Path(__file__).parent / "configs"


def resolve_config_path(path: str | Path) -> Path:
    """A file path, or the name of a shipped config (``quickstart`` -> ``configs/quickstart.yaml``)."""
    p = Path(path)
    if p.exists():
        return p
    for cand in (builtin_config_dir() / f"{path}.yaml", builtin_config_dir() / str(path)):
        if cand.exists():
            return cand
    shipped = ", ".join(sorted(q.stem for q in builtin_config_dir().glob("*.yaml")))
    raise ConfigError.single(str(path), f"no such file, and no shipped config of that name ({shipped})")


def load_yaml_mapping(path: Path) -> dict:
    if path.is_dir():
        raise ConfigError.single(
            str(path), "is a folder, not a config file; give a YAML file or a shipped config's name"
        )
    try:
        data = load_yaml(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as e:
        raise ConfigError.single(str(path), f"not valid YAML: {e}") from None
    except UnicodeDecodeError:
        raise ConfigError.single(str(path), "not UTF-8 text; save the file as UTF-8") from None
    except OSError as e:
        raise ConfigError.single(str(path), f"cannot read ({e.strerror}); check its permissions") from None
    if not isinstance(data, dict):
        raise ConfigError.single(str(path), "the top level must be a mapping of config keys")
    return data


def load_config(
    cls: type, path: str | Path | None = None, overrides: list[str] | None = None, data: dict | None = None
):
    """Build a ``cls`` config from a YAML file (or a shipped config's name), a dict and overrides."""
    c = Collector()
    merged: dict = {}
    if path is not None:
        merged = load_yaml_mapping(resolve_config_path(path))
    if data:
        for k, v in data.items():
            merged[k] = v
    for key, value in parse_overrides(overrides or [], c):
        set_by_path(merged, key, value)
    declared = merged.pop("workflow", None)
    expected = WORKFLOWS.get(cls.__name__)
    if declared is not None and expected is not None and declared != expected:
        c.add(
            "workflow",
            f"this config is for '{declared}', not '{expected}'; run `manyicl {declared} ...` with it",
        )
    cfg = _build(cls, merged, "", c)
    c.raise_if_any(ConfigError)
    return cfg


WORKFLOWS = {
    "TrainConfig": "train",
    "EvalConfig": "eval",
    "ExperimentConfig": "experiment",
    "DistillConfig": "distill",
    "ICLPreserveConfig": "icl-preserve",
    "PerplexityConfig": "perplexity",
    "QuickstartConfig": "quickstart",
}
"""The ``workflow:`` a shipped YAML declares for each config class (checked when it is loaded)."""


def to_dict(cfg: Any) -> dict:
    return dataclasses.asdict(cfg)


def dump_yaml(cfg: Any) -> str:
    return yaml.safe_dump(to_dict(cfg), sort_keys=False, allow_unicode=True)


def describe(cls: type, indent: int = 0) -> str:
    """Defaults and field docs as commented YAML (``manyicl config show``)."""
    lines: list[str] = []
    obj = cls()
    docs = field_docs(cls)
    hints = typing.get_type_hints(cls)
    pad = "  " * indent
    for f in dataclasses.fields(cls):
        doc = docs.get(f.name, "")
        for dl in textwrap.wrap(f"{doc} ({_type_name(hints[f.name])})", 100 - len(pad)):
            lines.append(f"{pad}# {dl}")
        value = getattr(obj, f.name)
        if dataclasses.is_dataclass(value):
            lines.append(f"{pad}{f.name}:")
            lines.append(describe(type(value), indent + 1))
        else:
            dumped = yaml.safe_dump({f.name: value}, default_flow_style=True, width=1000).strip()
            lines.append(f"{pad}{dumped[1:-1] if dumped.startswith('{') else dumped}")
    return "\n".join(lines)
