"""The reliability catalogue where a user meets it: on the command line (issue 13, docs/faults.md).

Each case runs a real ``python -m manyicl`` process and checks what a user sees: exit code 2, a message
naming the file or config key and the fix, and no traceback. Cases share processes where the CLI
collects problems (one ``tasks validate`` over a folder of broken tasks, one ``train`` with several bad
keys), and the independent processes run side by side, started once for the module (``cli`` below);
each test then reads its process's answer. Inputs that need an earlier run (a used training or
evaluation folder, a trained adapter) are made in-process with the tiny model first.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from manyicl.tasks import write_task_dir

from conftest import toy_task

ROOT = hasattr(os, "geteuid") and os.geteuid() == 0
"""root reads files whatever their mode: unreadable files are then simulated in the process."""

ENV = dict(
    os.environ,
    PYTHONPATH=os.pathsep.join(sys.path),
    HF_HUB_OFFLINE="1",
    TRANSFORMERS_OFFLINE="1",
    HF_DATASETS_OFFLINE="1",
    OMP_NUM_THREADS="1",
    TOKENIZERS_PARALLELISM="false",
)

TINY_EVAL = [
    "eval",
    "eval_folder",
    "model.name_or_path=tiny-random-llama",
    "model.dtype=float32",
    "shots=[0,1]",
    "seeds=[0]",
    "max_queries=8",
    "dev_queries=0",
    "max_length=256",
    "plots=false",
    "progress=false",
]

# Runs a command like `python -m manyicl`, with reading the paths in argv[1] failing as it does for a
# user without read permission (for root, whom chmod does not stop).
DENY_READ = r"""
import os, sys
from pathlib import Path
deny = set(sys.argv[1].split(os.pathsep))
real_read, real_scandir = Path.read_bytes, os.scandir
def read_bytes(self):
    if str(self) in deny:
        raise PermissionError(13, "Permission denied", str(self))
    return real_read(self)
def scandir(p="."):
    if str(p) in deny:
        raise PermissionError(13, "Permission denied", str(p))
    return real_scandir(p)
Path.read_bytes, os.scandir = read_bytes, scandir
from manyicl.cli import main
sys.exit(main(sys.argv[2:]))
"""


def _jsonl(rows) -> str:
    return "".join(json.dumps(r) + "\n" for r in rows)


GOOD = _jsonl({"input": f"text {i}", "output": "ab"[i % 2]} for i in range(4))
CSV = "text,label\nfirst,a\nsecond,b\n"


def _task(root: Path, folder: str, meta: str, files: dict[str, str] | None = None) -> Path:
    d = root / folder
    d.mkdir(parents=True, exist_ok=True)
    (d / "task.yaml").write_text(meta, encoding="utf-8")
    for name, text in (files or {}).items():
        (d / name).write_text(text, encoding="utf-8")
    return d


def _broken_tasks(root: Path, outside: Path) -> None:
    """One folder per fault of a task folder (and a few that must load), for one ``tasks validate``."""
    src = "source: {format: csv, input: text, output: label}\n"
    _task(root, "fine", "category: cls\n", {"train.jsonl": GOOD})
    # names that become paths
    _task(root, "traversal", "name: ../../../victim/model\ncategory: cls\n", {"train.jsonl": GOOD})
    for i, name in enumerate(["CON", "nul.txt", "Com1", "lpt9.v2", "trailing."]):
        _task(root, f"reserved{i}", f"name: '{name}'\ncategory: cls\n", {"train.jsonl": GOOD})
    _task(root, "PRN", "category: cls\n", {"train.jsonl": GOOD})
    _task(root, "aux_ok", "name: 'aux:x'\ncategory: cls\n", {"train.jsonl": GOOD})  # aux_x as a file: fine
    _task(root, "dup_a", "name: dup\ncategory: cls\n", {"train.jsonl": GOOD})
    _task(root, "dup_b", "name: dup\ncategory: cls\n", {"train.jsonl": GOOD})
    # files that are not what they should be
    (root / "yaml_dir" / "task.yaml").mkdir(parents=True)
    if hasattr(os, "mkfifo"):
        d = _task(root, "pipe", "category: cls\n")
        os.mkfifo(d / "train.jsonl")  # reading it would block forever
    long_doc = "word " * 40_000  # 200,000 characters: over csv's default limit of 131,072
    _task(root, "longcsv", "category: sum\n" + src, {"train.csv": f'text,label\n"{long_doc}",short\nb,c\n'})
    tsv = 'label\ttext\npos\t"Best film ever\nneg\tdull plot\npos\tloved it" said Ann\nneg\tboring\n'
    _task(
        root, "tsvq", "category: cls\nsource: {format: tsv, input: text, output: label}\n", {"train.tsv": tsv}
    )
    # task.yaml mistakes
    _task(
        root,
        "files_list",
        "category: cls\nsource: {format: csv, files: [train.csv], input: text, output: label}\n",
        {"train.csv": CSV},
    )
    for i, tmpl in enumerate(["'{} {text}'", "'{text'"]):
        meta = f"category: cls\nsource: {{format: csv, input: text, output: label, input_template: {tmpl}}}\n"
        _task(root, f"template{i}", meta, {"train.csv": CSV})
    _task(
        root,
        "outside",
        f"category: cls\nsource: {{format: csv, files: {{train: '{outside}', test: ../sibling.csv}}, "
        "input: text, output: label}\n",
    )
    _task(root, "outside_splits", "category: cls\nsplits: {train: ../fine/train.jsonl}\n")
    d = _task(root, "linked", "category: cls\n" + src)
    (d / "train.csv").symlink_to(outside)  # a link inside the folder is followed
    # data that used to crash or pass silently
    _task(root, "nested", "category: cls\n", {"train.jsonl": GOOD + "[" * 100_000 + "\n"})
    _task(
        root,
        "surrogate",
        "category: cls\n",
        {"train.jsonl": GOOD + '{"input": "a\\ud800b", "output": "a"}\n'},
    )
    _task(
        root,
        "nan_values",
        "category: other\nsource: {format: jsonl, input: q, output: a}\n",
        {"train.jsonl": '{"q": "ok", "a": "x"}\n{"q": NaN, "a": "x"}\n{"q": "t", "a": Infinity}\n'},
    )
    _task(
        root, "bigint", "category: other\n", {"train.jsonl": '{"input": ' + "1" * 5000 + ', "output": "a"}\n'}
    )


def _cmd(args, *, cwd: Path, env: dict | None = None, deny: list[Path] | None = None) -> dict:
    if deny is not None and ROOT:
        argv = [sys.executable, "-c", DENY_READ, os.pathsep.join(map(str, deny)), "-q", *args]
    else:
        argv = [sys.executable, "-m", "manyicl", "-q", *args]
    return {"argv": argv, "cwd": cwd, "env": {**ENV, **(env or {})}}


def _start(spec: dict) -> subprocess.CompletedProcess:
    return subprocess.run(
        spec["argv"],
        cwd=spec["cwd"],
        env=spec["env"],
        capture_output=True,
        text=True,
        timeout=600,
        umask=0o022,
    )


@pytest.fixture(scope="module")
def cli(tmp_path_factory):
    """Every command of this module, run once side by side: name -> (CompletedProcess, paths)."""
    from manyicl.config import EvalConfig, ExperimentConfig, TrainConfig, dump_yaml, load_config
    from manyicl.evaluate import evaluate
    from manyicl.experiment import Cells
    from manyicl.train import train

    base = tmp_path_factory.mktemp("cli_faults")
    work = base / "work"  # every command runs here: nothing may appear in it
    work.mkdir()
    p: dict[str, Path] = {"base": base, "work": work}

    # inputs: task folders -------------------------------------------------------------------
    p["toy"] = write_task_dir(toy_task(24), base / "tasks" / "toy")
    p["outside_csv"] = base / "elsewhere.csv"
    p["outside_csv"].write_text(CSV)
    p["broken"] = base / "broken"
    _broken_tasks(p["broken"], p["outside_csv"])
    p["locked"] = base / "locked"
    locked_yaml = _task(p["locked"], "no_read", "category: cls\n", {"train.jsonl": GOOD}) / "task.yaml"
    hidden = p["locked"] / "sub"
    _task(hidden, "inside", "category: cls\n", {"train.jsonl": GOOD})
    p["locked_yaml"], p["locked_dir"] = locked_yaml, hidden
    if not ROOT:
        locked_yaml.chmod(0)
        hidden.chmod(0)
    overlong = base / "overlong"
    _task(
        overlong,
        "long_query",
        "category: cls\nlabels: [a, b]\n",
        {
            "train.jsonl": _jsonl({"input": f"short {i}", "output": "ab"[i % 2]} for i in range(8)),
            "test.jsonl": _jsonl(
                [{"input": "word " * 200, "output": "a"}]
                + [{"input": f"q {i}", "output": "b"} for i in range(3)]
            ),
        },
    )

    # inputs: earlier runs, made in-process with the tiny model ----------------------------------
    p["run"] = base / "run"
    train(
        load_config(
            TrainConfig,
            "tiny",
            [
                f"output_dir={p['run']}",
                "progress=false",
                "train.max_steps=1",
                "train.save_every=0",
                "data.tasks.synthetic=false",
                f"data.tasks.dirs=[{p['toy']}]",
            ],
        )
    )
    p["ev"] = base / "ev"
    eval_args = [*TINY_EVAL[2:], f"tasks.dirs=[{p['toy']}]"]
    evaluate(load_config(EvalConfig, "eval_folder", [*eval_args, f"output_dir={p['ev']}"]))
    # a training run stopped at step 4 of 6 (checkpoints 2 and 4); a copy for the changed-data resume
    p["ck"], p["ck_same"] = base / "run_ck", base / "run_ck_data"
    ck_args = ["train.max_steps=6", "train.save_every=2", "train.keep_checkpoints=5"]
    train(
        load_config(
            TrainConfig,
            "tiny",
            [
                f"output_dir={p['ck']}",
                "progress=false",
                *ck_args,
                "train.stop_after_steps=4",
                "data.tasks.synthetic=false",
                f"data.tasks.dirs=[{p['toy']}]",
            ],
        )
    )
    shutil.copytree(p["ck"], p["ck_same"])
    w = p["ck"] / "checkpoints" / "step-000004" / "trainable.safetensors"
    w.write_bytes(w.read_bytes()[:100])  # the newest checkpoint is damaged
    with (p["ck"] / "metrics.jsonl").open("a") as f:
        f.write('{"step": 5, "lo')  # torn by a kill
    (p["ck"] / "checkpoints" / "step-000004.bak").mkdir()  # a user's copy
    p["fewer"] = write_task_dir(toy_task(16), base / "tasks_fewer" / "toy")  # 8 examples deleted
    p["long"] = base / "long"
    _task(
        p["long"],
        "all_too_long",
        "category: cls\nlabels: [a, b]\n",
        {"train.jsonl": _jsonl({"input": "word " * 100 + str(i), "output": "ab"[i % 2]} for i in range(6))},
    )
    # experiment folders: a torn cell and a stale lock whose PID now belongs to another process
    for name in ("exp_status", "exp_report"):
        d = p[name] = base / name
        Cells(d).put("train/zero_shot", {"final_dir": "x"})
        cell = d / "cells" / "train" / "zero_shot.json"
        cell.write_text(cell.read_text()[:10])
        (d / "cells" / "train" / "few_shot_last.running").write_text(f"{os.getpid()} 12345.00\n")
        cfg = load_config(ExperimentConfig, "experiment_quick", [f"output_dir={d}"])
        (d / "config.yaml").write_text(dump_yaml(cfg))
    p["no_model"] = base / "no_model"
    p["no_model"].mkdir()
    p["busy"] = base / "busy"
    p["busy"].mkdir()
    p["readonly"] = base / "readonly"
    p["readonly"].mkdir()
    p["readonly"].chmod(0o500)
    p["ad_weights"] = base / "adapter_cut"
    shutil.copytree(p["run"] / "adapter", p["ad_weights"])
    w = p["ad_weights"] / "adapter_model.safetensors"
    w.write_bytes(w.read_bytes()[:64])  # a copy cut short
    p["exp"] = base / "exp"
    p["exp"].mkdir()
    Cells(p["exp"]).put("eval/no_ft/t", {"rows": []})  # one finished cell
    exp_cfg = load_config(ExperimentConfig, "experiment_quick", [f"output_dir={p['exp']}"])
    (p["exp"] / "config.yaml").write_text(dump_yaml(exp_cfg))
    p["afile"] = base / "a_file"
    p["afile"].write_text("not a folder")
    p["dangling"] = base / "dangling"
    p["dangling"].symlink_to(base / "missing_target")
    p["home"] = base / "home"
    p["home"].mkdir()
    (p["home"] / "x").write_text("a file in the home folder")
    p["snapshot"] = {
        "metrics": (p["run"] / "metrics.jsonl").read_bytes(),
        "adapter": (p["run"] / "adapter" / "adapter_model.safetensors").read_bytes(),
        "results": (p["ev"] / "results.json").read_bytes(),
    }

    tiny = ["train", "tiny", "progress=false"]
    ev = [*TINY_EVAL, f"tasks.dirs=[{p['toy']}]"]
    cmds = {
        "validate": _cmd(["tasks", "validate", str(p["broken"]), "--max-errors", "0"], cwd=work),
        "unreadable": _cmd(
            ["tasks", "validate", str(p["locked"])], cwd=work, deny=[p["locked_yaml"], p["locked_dir"]]
        ),
        "non_finite": _cmd(
            [
                *tiny,
                "optim.lr=.inf",
                "lora.alpha=nan",
                "optim.eps=-1",
                "train.epochs=.inf",
                f"output_dir={base / 'nf'}",
            ],
            cwd=work,
        ),
        "out_file": _cmd([*tiny, f"output_dir={p['afile']}"], cwd=work),
        # the same check as train's and eval's (test_a_bad_output_dir_is_refused_before_torch_is_imported)
        "out_dangling": _cmd(["experiment", "experiment_quick", f"output_dir={p['dangling']}"], cwd=work),
        "out_empty": _cmd(["experiment", "experiment_quick", "output_dir="], cwd=work),
        "out_tilde": _cmd(
            ["experiment", "experiment_quick", "output_dir=~/x"], cwd=work, env={"HOME": str(p["home"])}
        ),
        "train_used": _cmd([*tiny, f"output_dir={p['run']}"], cwd=work),
        "eval_used": _cmd([*ev, f"output_dir={p['ev']}"], cwd=work),
        "eval_drift": _cmd([*ev, "max_queries=4", "resume=true", f"output_dir={p['ev']}"], cwd=work),
        "exp_drift": _cmd(
            ["experiment", "experiment_quick", f"output_dir={p['exp']}", "train.optim.lr=2e-4"], cwd=work
        ),
        "adapter_cut": _cmd(
            [*ev, f"adapters.cut={p['ad_weights']}", f"output_dir={base / 'ev_cut'}"], cwd=work
        ),
        # 8 sequences per task: one packed window of ~1.5M tokens, a mask no machine holds (the guard's
        # answer must not depend on how much memory the test machine has free)
        "mem_length": _cmd(
            [*tiny, "data.max_length=1e9", "data.sequences_per_task=8", f"output_dir={base / 'mem1'}"],
            cwd=work,
        ),
        "mem_rank": _cmd([*tiny, "lora.r=100000000", f"output_dir={base / 'mem2'}"], cwd=work),
        "overlong": _cmd(
            [
                *TINY_EVAL,
                f"tasks.dirs=[{overlong}]",
                "max_length=128",
                "on_overlong=error",
                f"output_dir={base / 'ev_long'}",
            ],
            cwd=work,
        ),
        "bigint_override": _cmd([*tiny, "train.max_steps=" + "1" * 5000], cwd=work),
        "busy": _cmd([*tiny, f"output_dir={p['busy']}"], cwd=work),
        "resume_damaged": _cmd(
            [
                *tiny,
                "--resume",
                *ck_args,
                "data.tasks.synthetic=false",
                f"data.tasks.dirs=[{p['toy']}]",
                f"output_dir={p['ck']}",
            ],
            cwd=work,
        ),
        "resume_changed": _cmd(
            [
                *tiny,
                "--resume",
                *ck_args,
                "data.tasks.synthetic=false",
                f"data.tasks.dirs=[{p['fewer'].parent}]",
                f"output_dir={p['ck_same']}",
            ],
            cwd=work,
        ),
        "all_skipped": _cmd(
            [
                *tiny,
                "data.tasks.synthetic=false",
                f"data.tasks.dirs=[{p['long']}]",
                "data.on_overlong=skip",
                "data.max_length=64",
                f"output_dir={base / 'skipped'}",
            ],
            cwd=work,
        ),
        "exp_status": _cmd(
            ["experiment", "experiment_quick", f"output_dir={p['exp_status']}", "--status"], cwd=work
        ),
        "exp_report": _cmd(
            ["experiment", "experiment_quick", f"output_dir={p['exp_report']}", "--report"], cwd=work
        ),
    }
    for flow, args in (("train", [*tiny, "data.tasks.synthetic=false"]), ("eval", ev[:-1])):
        key = "data.tasks.dirs" if flow == "train" else "tasks.dirs"
        cmds[f"data_first_{flow}"] = _cmd(  # a model folder that cannot load: the task error must come first
            [*args, f"model.name_or_path={p['no_model']}", f"{key}=[{p['broken'] / 'traversal'}]"]
            + [f"output_dir={base / ('first_' + flow)}"],
            cwd=work,
        )
    if not ROOT:  # root writes anywhere
        cmds["out_readonly"] = _cmd([*tiny, f"output_dir={p['readonly']}"], cwd=work)
    from manyicl.fileio import exclusive_lock

    workers = max(2, min(8, os.cpu_count() or 1))
    with (
        exclusive_lock(p["busy"], "training"),
        ThreadPoolExecutor(workers) as pool,
    ):  # another run holds "busy"
        done = dict(zip(cmds, pool.map(_start, cmds.values())))
    p["readonly"].chmod(0o755)
    return done, p


def _refused(r: subprocess.CompletedProcess, *needles: str) -> str:
    """The run ended with exit code 2 and a message holding every needle, and no traceback."""
    out = r.stdout + r.stderr
    assert "Traceback" not in out, out[-3000:]
    assert r.returncode == 2, out[-3000:]
    missing = [n for n in needles if n not in out]
    assert not missing, f"missing {missing} in:\n{out[-4000:]}"
    return out


# --------------------------------------------------------------------------------------------
# Task folders: one `tasks validate` over a folder of broken ones
# --------------------------------------------------------------------------------------------


def test_validate_reports_every_broken_task_folder(cli):
    done, p = cli
    b = p["broken"]
    _refused(
        done["validate"],
        # names that would become paths
        "traversal/task.yaml [name]: '../../../victim/model' is not a safe task name",
        "reserved0/task.yaml [name]: 'CON' is not a safe task name: 'CON' is a device name on Windows",
        "reserved1/task.yaml [name]: 'nul.txt' is not a safe task name: 'nul' is a device name",
        "reserved2/task.yaml [name]: 'Com1' is not a safe task name",
        "reserved3/task.yaml [name]: 'lpt9.v2' is not a safe task name",
        "reserved4/task.yaml [name]: 'trailing.' is not a safe task name: it ends with '.'",
        "no name given and the folder name 'PRN' is not a safe task name",
        "choose another name",
        "dup [name]: 2 task folders share this name",
        f"{b / 'dup_a'}/task.yaml",
        # files that are not files
        f"{b / 'yaml_dir' / 'task.yaml'}: is a folder, not a YAML file",
        # task.yaml mistakes
        "files_list/task.yaml [source.files]: must map split names to file names, e.g. files: {train: train.csv",
        "template0/task.yaml [source.input_template]: has an empty placeholder {}",
        "template1/task.yaml [source.input_template]: is not a valid template",
        "write {{ and }} for literal braces",
        f"outside/task.yaml [source.files.train]: '{p['outside_csv']}' is outside the task folder",
        "outside/task.yaml [source.files.test]: '../sibling.csv' is outside the task folder",
        "outside_splits/task.yaml [splits.train]: '../fine/train.jsonl' is outside the task folder",
        "copy the file into the task folder, or put a symbolic link to it there",
        # data
        f"{b / 'nested' / 'train.jsonl'}:5: malformed JSON (nested too deeply to read)",
        f"{b / 'surrogate' / 'train.jsonl'}:5 [input]: invalid text: lone surrogate",
        f"{b / 'nan_values' / 'train.jsonl'}:2 [q]: is nan, not text: a JSON NaN/Infinity literal",
        f"{b / 'nan_values' / 'train.jsonl'}:3 [a]: is inf, not text",
        f"{b / 'bigint' / 'train.jsonl'}:1: malformed JSON (Exceeds the limit (4300 digits)",
    )


def test_validate_still_loads_the_folders_that_are_fine(cli):
    out = cli[0]["validate"].stdout
    assert "ok  fine: train=4" in out
    assert "ok  longcsv: train=2" in out  # a 200,000-character field
    assert "ok  tsvq: train=4" in out  # a '"' in a TSV text merges no rows
    assert "ok  linked: train=2" in out  # a link inside the folder to a file elsewhere
    assert "ok  aux:x: train=4" in out


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no named pipes here")
def test_validate_refuses_a_pipe_instead_of_blocking(cli):
    _refused(cli[0]["validate"], f"{cli[1]['broken'] / 'pipe' / 'train.jsonl'}: is not a regular file")


def test_validate_reports_unreadable_task_yaml_and_subfolder(cli):
    done, p = cli
    _refused(
        done["unreadable"],
        f"{p['locked_yaml']}: cannot read (Permission denied); check its permissions, e.g. chmod a+r",
        f"{p['locked_dir']}: cannot read this folder (Permission denied); task folders inside it would be missed",
    )


# --------------------------------------------------------------------------------------------
# Settings and output folders
# --------------------------------------------------------------------------------------------


def test_non_finite_settings_are_all_named_before_anything_loads(cli):
    done, p = cli
    _refused(
        done["non_finite"],
        "invalid config: 4 problems",
        "optim.lr: must be a finite number, got inf",
        "lora.alpha: must be a finite number, got nan",
        "optim.eps: must be > 0 (AdamW divides by sqrt(v) + eps), got -1.0",
        "train.epochs: must be a finite number",
    )
    assert not (p["base"] / "nf").exists()


def test_output_dir_that_is_a_file(cli):
    done, p = cli
    _refused(done["out_file"], f"output_dir: {p['afile']} is a file, not a folder; choose another output_dir")
    assert p["afile"].read_text() == "not a folder"


def test_output_dir_that_is_a_dangling_link(cli):
    done, p = cli
    _refused(
        done["out_dangling"],
        f"output_dir: {p['dangling']} is a link to a missing target",
        "remove it or fix it",
    )


def test_output_dir_that_is_empty(cli):
    _refused(cli[0]["out_empty"], "output_dir: is empty; give a folder, e.g. output_dir=runs/my_run")


def test_output_dir_with_tilde_is_the_home_folder(cli):
    done, p = cli
    _refused(done["out_tilde"], f"output_dir: {p['home'] / 'x'} is a file, not a folder")
    assert not (p["work"] / "~").exists()


@pytest.mark.skipif(ROOT, reason="root writes into any folder")
def test_output_dir_that_is_not_writable(cli):
    done, p = cli
    _refused(done["out_readonly"], f"output_dir: {p['readonly']} is not writable (Permission denied)")


# Runs `main(argv)` in a fresh interpreter and prints, after it returned (or exited), its exit code, its
# stderr and which heavy modules had been imported by then. As root (whom a read-only folder does not
# stop) the write probe into $READONLY fails as it does for a user.
EARLY_REFUSAL = r"""
import contextlib, io, json, os, sys, tempfile
readonly = os.environ.get("READONLY")
if readonly and os.geteuid() == 0:
    real_mkstemp = tempfile.mkstemp
    def mkstemp(*args, dir=None, **kwargs):
        if dir is not None and os.path.abspath(dir) == readonly:
            raise PermissionError(13, "Permission denied", str(dir))
        return real_mkstemp(*args, dir=dir, **kwargs)
    tempfile.mkstemp = mkstemp
from manyicl.cli import main
err = io.StringIO()
with contextlib.redirect_stderr(err):
    try:
        rc = main(sys.argv[1:])
    except SystemExit as e:
        rc = e.code
heavy = ("torch", "transformers", "accelerate", "peft", "datasets")
print(json.dumps({"rc": rc, "err": err.getvalue(), "imported": [m for m in heavy if m in sys.modules]}))
"""

OUTPUT_DIR_FAULTS = ["a_file", "read_only", "dangling_link", "empty", "tilde"]


@pytest.mark.parametrize("flow", ["train", "eval"])
@pytest.mark.parametrize("fault", OUTPUT_DIR_FAULTS)
def test_a_bad_output_dir_is_refused_before_torch_is_imported(tmp_path, flow, fault):
    """Issue 13 case 7: an unusable ``output_dir`` gives exit 2 and a message naming it before torch or
    transformers are imported (the workflow modules import them: seconds before any check of theirs),
    checked in the process where the refusal happened. ``~`` is the home folder, never a literal ``./~``."""
    work, home = tmp_path / "work", tmp_path / "home"
    work.mkdir()
    home.mkdir()
    (home / "x").write_text("a file in the home folder")
    afile = tmp_path / "a_file"
    afile.write_text("not a folder")
    readonly = tmp_path / "read_only"
    readonly.mkdir()
    readonly.chmod(0o555)
    dangling = tmp_path / "dangling"
    dangling.symlink_to(tmp_path / "missing_target")
    value, want = {
        "a_file": (str(afile), f"output_dir: {afile} is a file, not a folder; choose another output_dir"),
        "read_only": (str(readonly), f"output_dir: {readonly} is not writable (Permission denied)"),
        "dangling_link": (
            str(dangling),
            f"output_dir: {dangling} is a link to a missing target ({tmp_path / 'missing_target'}); "
            "remove it or fix it",
        ),
        "empty": ("", "output_dir: is empty; give a folder, e.g. output_dir=runs/my_run"),
        "tilde": ("~/x", f"output_dir: {home / 'x'} is a file, not a folder"),
    }[fault]
    args = ["train", "tiny", "progress=false"] if flow == "train" else ["eval", "eval_synthetic"]
    try:
        r = subprocess.run(
            [sys.executable, "-c", EARLY_REFUSAL, "-q", *args, f"output_dir={value}"],
            cwd=work,
            env={**ENV, "HOME": str(home), "READONLY": str(readonly)},
            capture_output=True,
            text=True,
            timeout=120,
        )
    finally:
        readonly.chmod(0o755)
    assert r.returncode == 0, r.stderr[-3000:]
    got = json.loads(r.stdout.strip().splitlines()[-1])
    assert got["rc"] == 2 and "Traceback" not in got["err"], got["err"][-3000:]
    assert want in got["err"], got["err"]
    assert got["imported"] == [], f"refused only after importing {got['imported']}"
    assert list(work.iterdir()) == [] and list(readonly.iterdir()) == []  # no ./~, no probe left
    assert afile.read_text() == "not a folder" and (home / "x").read_text() == "a file in the home folder"


# --------------------------------------------------------------------------------------------
# Runs that would mix or silently reuse
# --------------------------------------------------------------------------------------------


def test_a_folder_another_run_is_using(cli):
    done, p = cli
    _refused(done["busy"], f"{p['busy']} is in use by pid {os.getpid()} (training)", "use another output_dir")


def test_train_into_a_used_folder_without_resume(cli):
    done, p = cli
    _refused(
        done["train_used"],
        f"output_dir: {p['run']} already holds a training run (metrics.jsonl, adapter); continue it with --resume, "
        "replace it with overwrite=true, or choose another output_dir",
    )
    assert (p["run"] / "metrics.jsonl").read_bytes() == p["snapshot"]["metrics"]
    assert (p["run"] / "adapter" / "adapter_model.safetensors").read_bytes() == p["snapshot"]["adapter"]


def test_eval_into_a_used_folder(cli):
    done, p = cli
    _refused(
        done["eval_used"],
        f"output_dir: {p['ev']} already holds an evaluation run (results.json, points); continue it with "
        "resume=true, replace it with overwrite=true, or choose another output_dir",
    )
    assert (p["ev"] / "results.json").read_bytes() == p["snapshot"]["results"]


def test_eval_resume_with_other_settings_names_the_changed_key(cli):
    done, p = cli
    _refused(
        done["eval_drift"],
        f"resume: {p['ev']} holds an evaluation run made with other settings (max_queries: 8 -> 4); reusing it "
        "would report numbers these settings did not produce: resume with the same settings, set overwrite=true "
        "to discard it, or choose another output_dir",
    )
    assert (p["ev"] / "results.json").read_bytes() == p["snapshot"]["results"]


def test_experiment_with_other_settings(cli):
    done, p = cli
    _refused(
        done["exp_drift"],
        f"output_dir: {p['exp']} holds an experiment run made with other settings (train.optim.lr: 0.001 -> "
        "0.0002); reusing it would report numbers these settings did not produce: restore those settings, "
        "set overwrite=true to discard it, or choose another output_dir",
    )
    assert (p["exp"] / "cells" / "eval" / "no_ft" / "t.json").exists()


def test_resume_refuses_changed_task_data(cli):
    _refused(cli[0]["resume_changed"], "resume: the training data changed since checkpoint")


def test_experiment_status_shows_a_stale_lock_as_interrupted(cli):
    r = cli[0]["exp_status"]
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr[-3000:]
    # the stale lock and the torn cell of the same folder: both are shown as interrupted, neither as done
    assert "0 running, 2 interrupted (will be redone)" in r.stdout


def test_experiment_status_does_not_count_a_torn_cell_as_done(cli):
    assert "cells: 0 done" in cli[0]["exp_status"].stdout


def test_experiment_report_sets_a_torn_cell_aside(cli):
    done, p = cli
    r = done["exp_report"]
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr[-3000:]
    assert (
        "cell train/zero_shot is unreadable" in r.stderr and "set aside as zero_shot.json.corrupt" in r.stderr
    )
    assert (p["exp_report"] / "cells" / "train" / "zero_shot.json.corrupt").exists()


# --------------------------------------------------------------------------------------------
# Damaged files, memory, over-long queries
# --------------------------------------------------------------------------------------------


def test_resume_past_a_damaged_checkpoint_a_torn_metrics_line_and_a_user_folder(cli):
    done, p = cli
    r = done["resume_damaged"]
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr[-3000:]
    assert "step-000004 is damaged" in r.stderr and "falling back to an older one" in r.stderr
    steps = [json.loads(x)["step"] for x in (p["ck"] / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4, 5, 6]
    assert json.loads((p["ck"] / "train_summary.json").read_text())["resumed_from_step"] == 2
    assert (p["ck"] / "checkpoints" / "step-000004.bak").is_dir()  # the user's folder is left alone
    # outputs follow the umask (022 here), not mkstemp's 0600 / mkdtemp's 0700
    assert stat.S_IMODE((p["ck"] / "adapter").stat().st_mode) == 0o755
    assert stat.S_IMODE((p["ck"] / "train_summary.json").stat().st_mode) == 0o644
    assert stat.S_IMODE((p["ck"] / "metrics.jsonl").stat().st_mode) == 0o644


def test_safetensors_outputs_follow_the_umask(cli):
    done, p = cli
    assert done["resume_damaged"].returncode == 0
    assert stat.S_IMODE((p["ck"] / "adapter" / "adapter_model.safetensors").stat().st_mode) == 0o644
    ck = p["ck"] / "checkpoints" / "step-000006" / "trainable.safetensors"
    assert stat.S_IMODE(ck.stat().st_mode) == 0o644


def test_a_training_task_whose_examples_are_all_too_long(cli):
    _refused(
        cli[0]["all_skipped"],
        "all_too_long [data.on_overlong]: every one of its 6 'train' examples is longer than max_length 64",
        "would vanish from training",
    )


def test_eval_with_a_truncated_adapter(cli):
    done, p = cli
    _refused(
        done["adapter_cut"],
        f"{p['ad_weights']}/adapter_model.safetensors is unreadable (SafetensorError",
        "the file is damaged (a copy cut short?): re-train or re-copy the adapter",
    )


def test_a_refused_eval_leaves_nothing_that_blocks_the_rerun(cli):
    done, p = cli
    assert done["adapter_cut"].returncode == 2
    assert "adapters.cut" in done["adapter_cut"].stderr  # the key to fix, not the model's own
    left = sorted(x.name for x in (p["base"] / "ev_cut").iterdir() if x.name != ".manyicl.lock")
    assert left == []


def test_memory_guard_refuses_an_absurd_max_length_before_training(cli):
    done, p = cli
    out = _refused(
        done["mem_length"],
        "training needs about",
        "attention_mask",
        "To run anyway, set train.allow_memory_overrun=true",
    )
    assert "Settings that would fit:" in out or "No setting tried here fits" in out
    assert not (p["base"] / "mem1" / "adapter").exists()
    assert not list((p["base"] / "mem1").glob("checkpoints/step-*"))


def test_the_memory_guard_suggests_a_max_length_that_changes_the_run(cli):
    import re

    m = re.search(r"data\.max_length=(\d+)", cli[0]["mem_length"].stderr)
    if m is None:
        pytest.skip("no max_length fits on this machine: nothing suggested")
    assert int(m.group(1)) < 2_000_000  # below the longest window, or it changes nothing


def test_an_absurd_lora_rank_is_refused_before_peft(cli):
    _refused(
        cli[0]["mem_rank"],
        "lora.r: 100000000 exceeds the narrowest adapted layer (32 wide)",
        "use lora.r <= 32",
    )


def test_eval_query_too_long_with_on_overlong_error(cli):
    done, p = cli
    _refused(
        done["overlong"],
        "long_query/test.jsonl:1: a test query of task long_query does not fit in half of max_length 128 "
        "(64 tokens for query + answer); "
        "set on_overlong to skip or truncate_input, or raise max_length",
    )
    assert "data.on_overlong" not in done["overlong"].stderr  # eval's own key, not train's
    assert not (p["base"] / "ev_long" / "config.yaml").exists()


@pytest.mark.parametrize("flow", ["train", "eval"])
def test_bad_task_data_is_reported_before_the_model_loads(cli, flow):
    out = _refused(
        cli[0][f"data_first_{flow}"],
        "invalid task data: 1 problem",
        "traversal/task.yaml [name]: '../../../victim/model' is not a safe task name",
    )
    assert "config.json" not in out  # the model folder (empty) was never opened


def test_nothing_was_written_into_the_working_directory(cli):
    assert sorted(x.name for x in cli[1]["work"].iterdir()) == []


def test_an_integer_too_long_to_convert_in_a_setting(cli):
    _refused(cli[0]["bigint_override"], "train.max_steps")


# --------------------------------------------------------------------------------------------
# What a finished run's files say (read after an in-process run: the content, not the exit, matters)
# --------------------------------------------------------------------------------------------


def _overlong_eval(tmp_path, on_overlong: str):
    from manyicl.config import EvalConfig, load_config
    from manyicl.evaluate import evaluate

    folder = _task(
        tmp_path / "tasks",
        "long_query",
        "category: cls\nlabels: [a, b]\n",
        {
            "train.jsonl": _jsonl({"input": f"short {i}", "output": "ab"[i % 2]} for i in range(8)),
            "test.jsonl": _jsonl(
                [{"input": "word " * 200, "output": "a"}]
                + [{"input": f"q {i}", "output": "b"} for i in range(3)]
            ),
        },
    )
    args = [*TINY_EVAL[2:], "shots=[0]", "max_length=128", f"on_overlong={on_overlong}"]
    res = evaluate(
        load_config(
            EvalConfig, "eval_folder", [*args, f"tasks.dirs=[{folder}]", f"output_dir={tmp_path / 'ev'}"]
        )
    )
    return json.loads((tmp_path / "ev" / "results.json").read_text()), res.report_path.read_text()


def test_skipped_eval_queries_reach_results_and_report(tmp_path):
    results, report = _overlong_eval(tmp_path, "skip")
    assert results["tasks"][0]["skipped_queries"] == 1
    assert "long_query: 1 quer(ies) skipped as too long (on_overlong=skip)" in report


def test_truncated_eval_queries_reach_results_and_report(tmp_path):
    results, report = _overlong_eval(tmp_path, "truncate_input")
    assert any("truncat" in k and v == 1 for k, v in results["tasks"][0].items())
    assert "truncated" in report


# --------------------------------------------------------------------------------------------
# A second hostile round (docs/faults.md, classes 7-9): each case its own short process
# --------------------------------------------------------------------------------------------


def _hunt_inputs(base: Path) -> dict[str, Path]:
    p = {"folder": base / "a_task_folder"}
    write_task_dir(toy_task(8), p["folder"])
    p["bomb"] = base / "bomb.yaml"
    p["bomb"].write_text(
        "a: &a [1, 1, 1, 1, 1, 1, 1, 1, 1]\n"
        + "".join(f"{b}: &{b} [{', '.join([f'*{a}'] * 9)}]\n" for a, b in zip("abcdefgh", "bcdefghi"))
        + "seeds: *i\n"
    )
    p["deep"] = base / "deep.yaml"
    p["deep"].write_text("seeds: " + "[" * 100_000)
    p["dup"] = base / "dup.yaml"
    p["dup"].write_text("max_queries: 5\nmax_queries: 7\n")
    p["books"] = base / "books"
    p["books"].mkdir()
    (p["books"] / "good.txt").write_text("hello world. " * 500)
    (p["books"] / "latin1.txt").write_bytes("caf\xe9 au lait. ".encode("latin-1") * 50)
    p["books_ok"] = base / "books_ok"
    p["books_ok"].mkdir()
    (p["books_ok"] / "good.txt").write_text("hello world. " * 500)
    return p


PPL = ["perplexity", "model.name_or_path=tiny-random-llama", "context_lengths=[32]", "progress=false"]
HUNT = {
    # case: (argv with {placeholders}, needles)
    "config_is_a_folder": (["eval", "{folder}"], ["a_task_folder: is a folder, not a config file"]),
    "alias_bomb": (
        ["eval", "{bomb}"],
        ["bomb.yaml: not valid YAML: its aliases (*name) expand to more than"],
    ),
    "nested_too_deeply": (["eval", "{deep}"], ["deep.yaml: not valid YAML: nested too deeply to read"]),
    "duplicate_key": (  # a missing model: accepted, it would fail fast (not run a whole evaluation)
        ["eval", "{dup}", "model.name_or_path={out}_nomodel", "output_dir={out}"],
        ["line 2: key 'max_queries' is given twice", "(first on line 1)"],
    ),
    "train_seed_negative": (
        ["train", "tiny", "model.name_or_path=tiny-random-llama", "train.seed=-1", "output_dir={out}"],
        ["train.seed: must be an integer from 0 to 4294967295, got -1"],
    ),
    "perplexity_latin1_book": (
        [*PPL, "books_dir={books}", "output_dir={out}"],
        ["latin1.txt: not UTF-8 text (byte 3)", "iconv"],
    ),
    "perplexity_missing_adapter": (
        [*PPL, "books_dir={books_ok}", "adapters.base=null", "adapters.ft={out}_nothere", "output_dir={out}"],
        ["adapters.ft:", "has no adapter_config.json"],
    ),
}


@pytest.mark.parametrize("case", list(HUNT))
def test_second_round_faults_exit_2_with_the_file_or_key(tmp_path, case):
    """Each was a traceback (a folder as config, YAML nested too deeply, numpy's seed check after torch
    loaded, a Latin-1 book after the model loaded), a message of hundreds of MB (the alias bomb), a silent
    last-wins (a key given twice) or a refusal after the base model's whole perplexity run naming the
    wrong key (model.adapter)."""
    p = {k: str(v) for k, v in _hunt_inputs(tmp_path).items()} | {"out": str(tmp_path / "run")}
    argv, needles = HUNT[case]
    r = _start(_cmd([a.format(**p) for a in argv], cwd=tmp_path))
    out = _refused(r, *needles)
    assert len(out) < 5000
    assert not (tmp_path / "run" / "perplexity.json").exists()
