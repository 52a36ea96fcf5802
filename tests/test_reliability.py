"""The bad-input catalogue: every user mistake gets a clear message naming file/line/field or config key,
before any long work, with no traceback. Plus crash safety (SIGKILL + resume) and property-based tests."""

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from manyicl.cli import main
from manyicl.errors import ManyICLError, TaskFormatError
from manyicl.tasks import load_task_dir, write_task_dir

from conftest import toy_task


def _task_dir(tmp_path: Path, files: dict[str, bytes | str], meta: str = "category: cls\n") -> Path:
    d = tmp_path / "t"
    d.mkdir(exist_ok=True)
    (d / "task.yaml").write_text(meta)
    for name, content in files.items():
        (d / name).write_bytes(content.encode() if isinstance(content, str) else content)
    return d


def _good_lines(n=4):
    return "".join(json.dumps({"input": f"text {i}", "output": "ab"[i % 2]}) + "\n" for i in range(n))


# (name, files, task.yaml, expected message fragment)
CATALOGUE = [
    (
        "malformed JSONL",
        {"train.jsonl": _good_lines() + "{oops\n"},
        "category: cls\n",
        "train.jsonl:5: malformed JSON",
    ),
    (
        "wrong type",
        {"train.jsonl": _good_lines() + '{"input": 7, "output": "a"}\n'},
        "category: cls\n",
        "train.jsonl:5 [input]: must be a string",
    ),
    (
        "missing field",
        {"train.jsonl": _good_lines() + '{"input": "x"}\n'},
        "category: cls\n",
        "train.jsonl:5 [output]: missing field",
    ),
    (
        "non-UTF-8",
        {"train.jsonl": _good_lines().encode() + b'{"input": "\xff", "output": "a"}\n'},
        "category: cls\n",
        "train.jsonl:5: not UTF-8",
    ),
    (
        "empty file",
        {"train.jsonl": _good_lines(), "test.jsonl": ""},
        "category: cls\n",
        "test.jsonl: empty file",
    ),
    (
        "blank split",
        {"train.jsonl": _good_lines(), "test.jsonl": "\n\n"},
        "category: cls\n",
        "test.jsonl: empty file",
    ),
    (
        "one label",
        {"train.jsonl": "".join(json.dumps({"input": f"t{i}", "output": "same"}) + "\n" for i in range(5))},
        "category: cls\n",
        "needs at least 2 labels",
    ),
    (
        "gold not in options",
        {"train.jsonl": _good_lines() + '{"input": "q", "output": "z", "options": ["x", "y"]}\n'},
        "category: qa\n",
        "train.jsonl:5 [options]: gold output 'z' is not one of the options",
    ),
    (
        "malformed CSV",
        {"train.csv": "text,label\nfine,a\nalso fine,b\ntoo,many,cols\n"},
        "category: cls\nsource: {format: csv, input: text, output: label}\n",
        "train.csv:4: has 3 columns",
    ),
    (
        "TSV missing value",
        {"train.tsv": "fine\ta\nalso fine\tb\nno label\t\n"},
        "category: cls\nsource: {format: tsv, columns: [text, label], input: text, output: label}\n",
        "train.tsv:3 [label]: missing or empty output",
    ),
    (
        "unknown task.yaml key",
        {"train.jsonl": _good_lines()},
        "category: cls\nlabelz: [a, b]\n",
        "[labelz]: unknown key",
    ),
    (
        "bad category",
        {"train.jsonl": _good_lines()},
        "category: classification\n",
        "[category]: must be one of",
    ),
]


@pytest.mark.parametrize("name,files,meta,needle", CATALOGUE, ids=[c[0] for c in CATALOGUE])
def test_bad_task_data_is_reported_with_file_line_and_field(tmp_path, capsys, name, files, meta, needle):
    d = _task_dir(tmp_path, files, meta)
    with pytest.raises(TaskFormatError) as e:
        load_task_dir(d)
    assert needle in str(e.value)
    assert main(["-q", "tasks", "validate", str(d)]) == 2  # the CLI: a message, not a traceback
    err = capsys.readouterr().err
    assert needle in err and "Traceback" not in err


def test_all_problems_are_collected_before_reporting(tmp_path):
    bad = _good_lines() + "{oops\n" + '{"input": 7, "output": "a"}\n' + '{"input": "x"}\n'
    d = _task_dir(tmp_path, {"train.jsonl": bad, "test.jsonl": ""})
    with pytest.raises(TaskFormatError) as e:
        load_task_dir(d)
    assert len(e.value.problems) == 4


def _train_args(tmp_path, *extra):
    return ["-q", "train", "tiny", f"output_dir={tmp_path / 'run'}", "progress=false", *extra]


CONFIG_CATALOGUE = [
    (["data.max_lenght=64"], "data.max_lenght: unknown key. Did you mean 'max_length'?"),
    (["optim.lr=-1"], "optim.lr: must be > 0"),
    (["train.max_steps=0"], "train.max_steps: must be > 0"),
    (["data.max_length=0"], "data.max_length: must be >= 16"),
    (["lora.dropout=1.5"], "lora.dropout: must be in [0, 1)"),
    (["data.max_length=abc"], "data.max_length: expected int"),
    (["data.objective=mask_everything"], "data.objective: expected 'mask_all_targets'"),
    (["model.name_or_path=org/some-hub-model"], "runs offline"),
    (["lora.target_modules=[qproj]"], "lora.target_modules: ['qproj'] not in this model"),
    (
        ["data.on_overlong=error", "data.max_length=40"],
        "> max_length 40; set data.on_overlong to skip or truncate_input",
    ),
]


@pytest.mark.parametrize("overrides,needle", CONFIG_CATALOGUE, ids=[o[0] for o, _ in CONFIG_CATALOGUE])
def test_config_mistakes_fail_early_with_the_key_and_the_fix(tmp_path, capsys, overrides, needle):
    assert main(_train_args(tmp_path, *overrides)) == 2
    err = capsys.readouterr().err
    assert needle in err and "Traceback" not in err
    assert not (tmp_path / "run" / "adapter").exists()  # nothing half-done


def test_unreadable_config_files(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("data: [unclosed\n")
    assert main(["-q", "train", str(bad)]) == 2
    assert "not valid YAML" in capsys.readouterr().err
    bad.write_text("- a list\n")
    assert main(["-q", "train", str(bad)]) == 2
    assert "top level must be a mapping" in capsys.readouterr().err


def test_missing_model_and_tokenizer_files(tmp_path, tok, capsys):
    from manyicl.modeling import tiny_model

    only_config = tmp_path / "m1"
    tiny_model(len(tok)).config.save_pretrained(only_config)
    assert main(_train_args(tmp_path, f"model.name_or_path={only_config}")) == 2
    err = capsys.readouterr().err
    assert "model.name_or_path" in err and "Traceback" not in err
    pickled = tmp_path / "m2"  # a legacy pickle checkpoint: refused, never unpickled
    m = tiny_model(len(tok))
    m.config.save_pretrained(pickled)
    torch.save(m.state_dict(), pickled / "pytorch_model.bin")
    tok.save_pretrained(pickled)
    assert main(_train_args(tmp_path, f"model.name_or_path={pickled}")) == 2
    assert "does not unpickle" in capsys.readouterr().err
    nothing = tmp_path / "m3"
    nothing.mkdir()
    assert main(_train_args(tmp_path, f"model.name_or_path={nothing}")) == 2
    assert "has no config.json" in capsys.readouterr().err


def test_adapter_for_another_base_model_is_refused(tmp_path, tok):
    from transformers import LlamaConfig, LlamaForCausalLM

    from manyicl.config import LoraConfig
    from manyicl.modeling import apply_lora, load_adapter, tiny_model

    peft = apply_lora(tiny_model(len(tok)), LoraConfig(r=2, target_modules=["q_proj", "v_proj"]))
    peft.save_pretrained(tmp_path / "adapter")
    other = LlamaForCausalLM(
        LlamaConfig(
            vocab_size=len(tok),
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            num_key_value_heads=1,
        )
    )
    with pytest.raises(ManyICLError, match="does not fit this base model"):
        load_adapter(other, tmp_path / "adapter")
    with pytest.raises(ManyICLError, match="not a PEFT adapter"):
        load_adapter(other, tmp_path)


def test_prompt_cache_from_another_model_or_prompt_is_refused(tmp_path, tok, model):
    from manyicl.caching import PromptCache, model_key
    from manyicl.modeling import tiny_model

    ids = tok("Text: a\nLabel: b\n", add_special_tokens=False)["input_ids"]
    path = PromptCache(model, ids).save(tmp_path / "c.safetensors", model_key(model, "tiny", None, tok))
    other = tiny_model(len(tok), seed=1)
    other.config.hidden_act = "gelu"  # a different model: its config no longer matches
    with pytest.raises(ManyICLError, match="refusing prompt cache"):
        PromptCache.load(path, other, model_key(other, "tiny", None, tok), prompt_ids=ids)
    with pytest.raises(ManyICLError, match="prompt_sha256"):
        PromptCache.load(path, model, model_key(model, "tiny", None, tok), prompt_ids=ids + [5])


def test_checkpoints_are_only_trusted_when_complete(tmp_path):
    from manyicl.train import latest_checkpoint

    ck = tmp_path / "checkpoints"
    (ck / "step-000004").mkdir(parents=True)  # a crash before state.json: not valid
    (ck / ".step-000006.tmpabc").mkdir()  # an atomic write that never finished
    good = ck / "step-000002"
    good.mkdir()
    (good / "state.json").write_text('{"step": 2}')
    for f in ("trainable.safetensors", "optimizer.pt"):
        (good / f).write_bytes(b"x")
    (ck / "step-000004.bak").mkdir()  # a user's copy is not a checkpoint (and must not crash the sort)
    assert latest_checkpoint(tmp_path) == good


# --------------------------------------------------------------------------------------------
# Crash safety: SIGKILL at a random moment, resume, same weights
# --------------------------------------------------------------------------------------------


def _cli(args, **kw):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path), OMP_NUM_THREADS="1")
    return subprocess.Popen(
        [sys.executable, "-m", "manyicl", "-q", *args],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        **kw,
    )


@pytest.mark.slow
def test_sigkill_then_resume_gives_the_same_weights(tmp_path):
    from safetensors.torch import load_file

    write_task_dir(toy_task(60), tmp_path / "tasks" / "toy")
    common = [
        "train",
        "tiny",
        "data.tasks.synthetic=false",
        f"data.tasks.dirs=[{tmp_path / 'tasks'}]",
        "train.max_steps=40",
        "train.save_every=1",
        "train.keep_checkpoints=2",
        "lora.dropout=0.1",
        "progress=false",
    ]
    ref = _cli([*common, f"output_dir={tmp_path / 'ref'}"])
    assert ref.wait(timeout=300) == 0, ref.stderr.read().decode()[-2000:]
    run = tmp_path / "killed"
    rng = random.Random(0)
    kills = 0
    for _attempt in range(3):
        p = _cli([*common, f"output_dir={run}", "resume=true"])
        deadline = time.time() + 120
        while time.time() < deadline and not list((run / "checkpoints").glob("step-*/state.json")):
            time.sleep(0.05)
        time.sleep(rng.uniform(0.05, 0.6))  # somewhere in the middle of training (or of a checkpoint write)
        if p.poll() is None:
            p.send_signal(signal.SIGKILL)
            kills += 1
        p.wait()
        if (run / "adapter" / "adapter_model.safetensors").exists():
            break
    assert kills >= 1
    p = _cli([*common, f"output_dir={run}", "resume=true"])
    assert p.wait(timeout=300) == 0, p.stderr.read().decode()[-2000:]
    a = load_file(str(tmp_path / "ref" / "adapter" / "adapter_model.safetensors"))
    b = load_file(str(run / "adapter" / "adapter_model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    steps = [json.loads(ln)["step"] for ln in (run / "metrics.jsonl").read_text().splitlines()]
    assert steps == list(range(1, 41))  # the log was rewound to the checkpoint, not duplicated


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_stop_signal_ends_a_background_run_cleanly(tmp_path, sig):
    """`cmd &` starts a job with SIGINT ignored and schedulers send SIGTERM: both must stop the run as
    Ctrl-C does (exit 130, 'interrupted', checkpoints kept), not be ignored or kill it mid-write."""
    write_task_dir(toy_task(60), tmp_path / "tasks" / "toy")
    run = tmp_path / "run"
    args = [
        "train",
        "tiny",
        "data.tasks.synthetic=false",
        f"data.tasks.dirs=[{tmp_path / 'tasks'}]",
        "train.max_steps=100000",
        "train.save_every=1",
        "progress=false",
        f"output_dir={run}",
    ]
    p = _cli(args, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    deadline = time.time() + 120
    while time.time() < deadline and not list((run / "checkpoints").glob("step-*/state.json")):
        time.sleep(0.05)
    assert p.poll() is None, p.stderr.read().decode()[-2000:]
    p.send_signal(sig)
    try:
        rc = p.wait(timeout=60)
    except subprocess.TimeoutExpired:
        p.kill()
        raise AssertionError(f"{sig.name} did not stop the run") from None
    err = p.stderr.read().decode()
    assert rc == 130 and "interrupted" in err, err[-2000:]
    assert "Traceback" not in err
    assert list((run / "checkpoints").glob("step-*/state.json"))


# --------------------------------------------------------------------------------------------
# Property-based tests
# --------------------------------------------------------------------------------------------

_text = st.text(alphabet=st.characters(blacklist_categories=["Cs"]), max_size=30)
_value = st.one_of(st.none(), st.integers(), st.floats(allow_nan=False), _text, st.lists(_text, max_size=3))
_record = st.dictionaries(st.sampled_from(["input", "output", "options", "extra"]), _value, max_size=4)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(records=st.lists(st.one_of(_record, _value), min_size=0, max_size=8), junk=st.binary(max_size=20))
def test_jsonl_loader_never_crashes(tmp_path_factory, records, junk):
    d = tmp_path_factory.mktemp("prop")
    (d / "task.yaml").write_text("category: other\n")
    lines = [json.dumps(r) for r in records]
    (d / "train.jsonl").write_bytes(("\n".join(lines) + "\n").encode() + junk)
    try:
        t = load_task_dir(d)
    except TaskFormatError as e:
        assert e.problems
        return
    for ex in t.splits["train"]:  # whatever loaded is a valid example
        assert isinstance(ex.input, str) and isinstance(ex.output, str) and ex.output.strip()
        assert not ex.options or ex.output in ex.options


@settings(max_examples=40, deadline=None)
@given(
    rows=st.lists(st.lists(st.text(alphabet='ab,\t"\n x', max_size=6), min_size=1, max_size=4), max_size=6),
    fmt=st.sampled_from(["csv", "tsv"]),
)
def test_delimited_loader_never_crashes(tmp_path_factory, rows, fmt):
    d = tmp_path_factory.mktemp("prop")
    (d / "task.yaml").write_text(f"category: other\nsource: {{format: {fmt}, input: a, output: b}}\n")
    sep = "," if fmt == "csv" else "\t"
    (d / f"train.{fmt}").write_text("a" + sep + "b\n" + "\n".join(sep.join(r) for r in rows))
    try:
        t = load_task_dir(d)
    except TaskFormatError as e:
        assert e.problems
        return
    assert all(ex.output.strip() for ex in t.splits["train"])


@settings(max_examples=50, deadline=None)
@given(
    lengths=st.lists(st.tuples(st.integers(1, 40), st.integers(1, 8)), min_size=1, max_size=30),
    max_length=st.integers(16, 300),
    shots=st.one_of(st.just("max"), st.integers(0, 6)),
    objective=st.sampled_from(["mask_all_targets", "mask_last_target", "autoregressive"]),
    pack_short=st.booleans(),
    seed=st.integers(0, 3),
)
def test_packer_invariants(lengths, max_length, shots, objective, pack_short, seed):
    from manyicl.packing import build_task_sequences, collate, pack_windows
    from manyicl.tasks import Task
    from manyicl.templates import TokenizedTask

    task = Task("p", "cls", labels=("a", "b"))
    q = [np.arange(a, dtype=np.int64) + 10 for a, _ in lengths]
    t = [np.arange(b, dtype=np.int64) + 100 for _, b in lengths]
    header = np.array([1, 2], dtype=np.int64)
    keep = [i for i in range(len(q)) if len(header) + len(q[i]) + len(t[i]) <= max_length]
    if not keep:
        return
    tt = TokenizedTask(
        task,
        "train",
        header,
        [q[i] for i in keep],
        [t[i] for i in keep],
        ["ab"[i % 2] for i in keep],
        [None] * len(keep),
    )
    seqs, stats = build_task_sequences(tt, shots, objective, max_length, 5, np.random.default_rng(seed))
    assert stats.sequences == len(seqs) == 5
    for s in seqs:
        assert len(s) <= max_length and s.header_len + sum(s.example_lengths) == len(s)  # whole examples only
        assert s.ids[: len(header)].tolist() == header.tolist()
        assert not s.loss_mask[0]
        sup = int(s.loss_mask.sum())
        if objective == "autoregressive":
            assert sup == len(s) - 1
        else:
            assert 0 < sup <= sum(len(x) for x in t)
            assert set(s.ids[s.loss_mask].tolist()) <= set(range(100, 108))  # only target tokens carry loss
        if shots != "max":
            assert s.n_examples <= shots + 1
    windows = pack_windows(seqs, max_length, pack_short)
    assert sum(len(w.sequences) for w in windows) == len(seqs) and all(len(w) <= max_length for w in windows)
    b = collate(windows, "row")
    assert b.input_ids.shape[1] == sum(len(s) for s in seqs)
    assert int((b.position_ids == 0).sum()) == len(seqs)
