"""What a new user copies must work: every example in every ``--help`` loads as a config of its workflow,
and every README/docs shell block marked ``<!-- runnable -->`` runs (offline, seconds)."""

import argparse
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from manyicl.cli import _split_config_args, build_parser, parse_args
from manyicl.config import load_config

ROOT = Path(__file__).resolve().parents[1]
OVERRIDE = re.compile(r"(?<![\w./-])[a-z_][a-z0-9_]*(?:\.[a-z0-9_]+)*=\S+")


def _subcommands(parser: argparse.ArgumentParser, path=()):
    """(command words, parser) for every leaf subcommand."""
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs:
        yield path, parser
        return
    for name, p in subs[0].choices.items():
        yield from _subcommands(p, (*path, name))


LEAVES = list(_subcommands(build_parser()))


def _examples(help_text: str) -> list[str]:
    return [ln.strip() for ln in help_text.splitlines() if ln.strip().startswith("manyicl ")]


@pytest.mark.parametrize("words,parser", LEAVES, ids=[" ".join(w) for w, _ in LEAVES])
def test_every_help_example_loads_for_its_workflow(words, parser, monkeypatch):
    monkeypatch.setenv("COLUMNS", "100")
    text = parser.format_help()
    examples = _examples(text)
    cls = parser.get_default("config_class")
    if cls is None:  # tasks, synth, config: no config, no overrides
        assert not OVERRIDE.findall(text), f"override-like text in `{' '.join(words)} --help`"
        return
    assert examples, f"`manyicl {' '.join(words)} --help` shows no examples"
    in_examples = set()
    for line in examples:
        argv = shlex.split(line, comments=True)[1:]
        assert argv[: len(words)] == list(words), line
        a = parse_args(build_parser(), argv)
        assert a.config_class is cls
        if hasattr(a, "overrides"):  # quickstart: --config NAME, then overrides
            path, overrides = a.config, list(a.overrides)
        else:
            path, overrides = _split_config_args(a.args)
        load_config(cls, path, overrides)  # raises ConfigError on any key the workflow rejects
        in_examples |= set(OVERRIDE.findall(line))
    # no override example elsewhere in the help (e.g. in an argument's description) goes untested
    assert set(OVERRIDE.findall(text)) <= in_examples


def test_train_and_eval_examples_differ():
    helps = {" ".join(w): p.format_help() for w, p in LEAVES}
    assert "data.max_length" not in helps["eval"] and "optim.lr" not in helps["eval"]
    assert "data.max_length" not in helps["experiment"].replace("train.data.max_length", "")


def _runnable_blocks() -> list[tuple[str, int, str]]:
    """(file, line, shell text) of every ```bash block right after a ``<!-- runnable -->`` line."""
    out = []
    for md in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        lines = md.read_text(encoding="utf-8").splitlines()
        for i, line in enumerate(lines):
            if line.strip() != "<!-- runnable -->":
                continue
            assert lines[i + 1].startswith("```bash"), f"{md.name}:{i + 1}: the marker must precede ```bash"
            end = next(j for j in range(i + 2, len(lines)) if lines[j].startswith("```"))
            out.append((md.name, i + 2, "\n".join(lines[i + 2 : end])))
    return out


BLOCKS = _runnable_blocks()


def test_the_docs_have_runnable_blocks():
    assert {"README.md", "task_format.md", "evaluation.md"} <= {f for f, _, _ in BLOCKS}


@pytest.mark.parametrize("file,line,script", BLOCKS, ids=[f"{f}:{n}" for f, n, _ in BLOCKS])
def test_runnable_doc_blocks_run(file, line, script, tmp_path):
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", HF_DATASETS_OFFLINE="1")
    r = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, (
        f"{file}:{line} failed ({r.returncode}):\n{r.stdout[-2000:]}\n{r.stderr[-3000:]}"
    )
    assert "Traceback" not in r.stderr


def test_the_readme_python_snippet_loads_its_configs(monkeypatch, tmp_path):
    """The README's Python API block, run with train/evaluate replaced by recorders: every override it
    passes is a valid key of the config it names (the real run is measured in README: ~2.6 min)."""
    from types import SimpleNamespace

    import manyicl
    import manyicl.evaluate

    block = re.search(r"```python\n(.*?)```", (ROOT / "README.md").read_text(encoding="utf-8"), re.S)
    assert block, "README has no python block"
    calls = []
    monkeypatch.setattr(
        manyicl, "train", lambda cfg: calls.append(cfg) or SimpleNamespace(final_dir=str(tmp_path / "ad"))
    )
    monkeypatch.setattr(manyicl.evaluate, "evaluate", lambda cfg: calls.append(cfg))
    monkeypatch.chdir(tmp_path)
    exec(compile(block.group(1), "README.md", "exec"), {})
    assert [type(c).__name__ for c in calls] == ["TrainConfig", "EvalConfig"]
    assert calls[0].train.max_steps == 10 and calls[1].seeds == [0]
