"""The CLI end to end on the tiny model: quickstart, data stats, tasks, errors without tracebacks."""

import json

import pytest

from manyicl.cli import main

TINY_QS = [
    "train.model.name_or_path=tiny-random-llama",
    "train.model.dtype=float32",
    "train.data.max_length=384",
    "train.data.tasks.synthetic_instances=1",
    "train.data.tasks.synthetic_train_size=40",
    "train.data.tasks.synthetic_test_size=10",
    "train.data.sequences_per_task=1",
    "train.train.max_steps=2",
    "train.train.save_every=0",
    "train.progress=false",
    "eval.tasks.synthetic_instances=1",
    "eval.tasks.synthetic_train_size=40",
    "eval.tasks.synthetic_test_size=10",
    "eval.max_length=384",
    "eval.max_queries=3",
    "eval.shots=[0,1,max]",
    "eval.scoring.max_new_tokens=4",
    "eval.progress=false",
]


@pytest.mark.slow
def test_quickstart_runs_end_to_end_on_the_tiny_model(tmp_path, capsys, caplog):
    import logging

    assert main(["-q", "quickstart", "--output", str(tmp_path / "qs"), *TINY_QS]) == 0
    info = [
        r.getMessage() for r in caplog.records if r.name.startswith("manyicl") and r.levelno < logging.WARNING
    ]
    assert info == [], info[:3]  # -q: "only warnings and results"
    out = capsys.readouterr().out
    assert "manyicl" in out and f"report: {tmp_path / 'qs' / 'eval' / 'report.md'}" in out
    assert f"plots:  {tmp_path / 'qs' / 'eval' / 'plots'}/ (6 PNG" in out
    from manyicl.cli import SUMMARY_HEADER_NO_DEV

    table = out[out.index(SUMMARY_HEADER_NO_DEV) : out.index("\ntime:")].strip().splitlines()
    assert all(len(ln) <= 100 for ln in table) and len(table) == 2 + 6 * 2  # 6 families x 2 models
    assert (tmp_path / "qs" / "eval" / "report.md").exists()
    assert (tmp_path / "qs" / "train" / "adapter" / "adapter_model.safetensors").exists()
    assert (
        len(list((tmp_path / "qs" / "eval" / "plots").glob("*.png"))) == 6
    )  # held-out families but word_cipher
    timings = json.loads((tmp_path / "qs" / "timings.json").read_text())
    assert timings["total_s"] > 0


def test_data_stats_json(capsys):
    args = ["-q", "data", "stats", "tiny", "data.max_length=256", "--json"]
    assert main(args) == 0
    stats = json.loads(capsys.readouterr().out)
    t = stats["totals"]
    assert t["sequences"] > 0 and t["supervised_tokens"] < t["tokens"]
    assert t["mask_last_equivalent_tokens"] > t["tokens"]


def test_data_show_marks_targets(capsys):
    assert main(["-q", "data", "show", "tiny", "--task", "topic_labels", "--chars", "400"]) == 0
    assert "[[" in capsys.readouterr().out


def test_tasks_list_and_synth_export_validate(tmp_path, capsys):
    assert main(["-q", "tasks", "list", "--no-shared"]) == 0
    listing = capsys.readouterr().out
    assert "intent_many_0" in listing and "held-out" in listing
    assert (
        main(["-q", "synth", "export", str(tmp_path / "suite"), "--train-size", "30", "--test-size", "5"])
        == 0
    )
    capsys.readouterr()
    assert main(["-q", "tasks", "validate", str(tmp_path / "suite")]) == 0
    assert capsys.readouterr().out.count("ok ") == 20


@pytest.mark.parametrize(
    "args,needle",
    [
        (["train", "tiny", "data.max_lenght=5"], "Did you mean 'max_length'"),
        (["train", "no_such_config"], "no shipped config"),
        (["train", "tiny", "model.name_or_path=some/hub-model"], "runs offline"),
        (["tasks", "validate", "/nonexistent"], "no task.yaml"),
    ],
)
def test_user_errors_print_a_message_not_a_traceback(args, needle, capsys):
    assert main(["-q", *args]) == 2
    err = capsys.readouterr().err
    assert needle in err and "Traceback" not in err


def test_config_show_documents_every_field(capsys):
    assert main(["config", "show", "train"]) == 0
    assert "# Context window in tokens" in capsys.readouterr().out


# --------------------------------------------------------------------------------------------
# What a new user meets: config commands, messages, output width, folders
# --------------------------------------------------------------------------------------------

from manyicl.config import WORKFLOWS, load_config  # noqa: E402


@pytest.mark.parametrize("workflow", list(WORKFLOWS.values()))
def test_config_show_prints_every_workflows_schema_with_docs(workflow, capsys):
    import dataclasses

    from manyicl import config as C

    cls = getattr(C, next(k for k, v in WORKFLOWS.items() if v == workflow))
    assert main(["config", "show", workflow]) == 0
    out = capsys.readouterr().out
    for f in dataclasses.fields(cls):
        assert f"\n{f.name}:" in out  # every top-level field, each after its doc comment
    assert out.count("\n# ") > len(dataclasses.fields(cls))


def test_config_show_of_a_shipped_config_prints_its_resolved_values(capsys):
    import yaml

    from manyicl.config import EvalConfig, to_dict

    assert main(["config", "show", "eval_synthetic"]) == 0
    out = capsys.readouterr().out
    data = yaml.safe_load(out)
    assert data["workflow"] == "eval" and data["dev_queries"] == 32  # a default the file does not set
    assert data["tasks"]["synthetic_instances"] == 2  # a value the file sets
    shown = load_config(EvalConfig, data={k: v for k, v in data.items() if k != "workflow"})
    assert to_dict(shown) == to_dict(load_config(EvalConfig, "eval_synthetic"))


def test_config_show_unknown_name_lists_workflows_and_configs(capsys):
    assert main(["config", "show", "evl"]) == 2
    err = capsys.readouterr().err
    assert "icl-preserve" in err and "eval_synthetic" in err and "Traceback" not in err


def test_config_list_is_aligned_and_wrapped(capsys):
    assert main(["config", "list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert all(len(ln) <= 100 for ln in lines)
    table = lines[: lines.index("")]
    rows = [ln for ln in table[1:] if not ln.startswith(" ")]
    col = lines[0].index("description")
    names = {ln.split()[0] for ln in rows}
    assert {"experiment_gpu_paper_small", "experiment_paper_mistral7b", "eval_folder"} <= names
    for ln in rows:
        assert ln[col - 2 : col] == "  " and ln[col] != " "  # every description starts in one column
    cpu = next(ln for ln in rows if ln.startswith("experiment_cpu "))
    assert " experiment " in cpu and "workflow:" not in cpu and "The paper's comparison" in cpu


def test_overrides_may_follow_flags():
    from manyicl.cli import build_parser, parse_args

    a = parse_args(build_parser(), ["data", "show", "tiny", "--task", "x", "data.max_length=256"])
    assert a.args == ["tiny", "data.max_length=256"] and a.task == "x"
    with pytest.raises(SystemExit):
        parse_args(build_parser(), ["data", "show", "tiny", "--no-such-flag"])


def test_data_show_explains_a_held_out_family_and_the_fix_works(capsys):
    assert main(["-q", "data", "show", "tiny", "--task", "numeric_compare"]) == 2
    err = capsys.readouterr().err
    assert "no task named" not in err and "held-out" in err and "numeric_compare_0" in err
    fix = err.strip().splitlines()[-1].split()
    assert fix[:3] == ["manyicl", "data", "show"] and "data.tasks.split=held_out" in fix
    assert main(["-q", *fix[1:], "--chars", "50"]) == 0
    assert "# task numeric_compare_0" in capsys.readouterr().out


def test_data_show_suggests_more_instances_and_close_names(capsys):
    assert main(["-q", "data", "show", "tiny", "--task", "topic_labels_3"]) == 2
    assert "data.tasks.synthetic_instances=4" in capsys.readouterr().err
    assert main(["-q", "data", "show", "tiny", "--task", "topic_labls"]) == 2
    assert "Did you mean topic_labels" in capsys.readouterr().err


def test_tasks_show_hints_at_dirs_for_a_folder_task(tmp_path, capsys, monkeypatch):
    from manyicl.tasks import write_task_dir

    from conftest import toy_task

    write_task_dir(toy_task(name="my_intents"), tmp_path / "mine" / "my_intents")
    monkeypatch.chdir(tmp_path)
    assert main(["-q", "tasks", "show", "my_intents", "--no-shared"]) == 2
    err = capsys.readouterr().err
    assert "--dirs" in err and "Traceback" not in err
    args = ["-q", "tasks", "show", "my_intents", "--no-shared", "--no-synthetic", "--dirs", "mine"]
    assert main([*args, "--model", "tiny-random-llama"]) == 0
    assert "no test input occurs in train" in capsys.readouterr().out


def test_eval_summary_is_one_line_per_task_and_model_within_100_columns():
    from manyicl.cli import SUMMARY_HEADER, summary_table_text

    row = dict(n=100, best=0.51, best_lo=0.41, best_hi=0.61, best_shots=16, max_shots=128, majority=0.5)
    row |= dict(at_max=0.5, at_max_lo=0.4, at_max_hi=0.6)
    tasks = ["numeric_compare_0", "metaicl:superglue-cb", "bigbench:presuppositions_as_nli"]
    models = ["base", "manyicl", "mask_all_ft"]
    summary = [dict(row, task=t, model=m) for t in tasks for m in models]
    summary.append(dict(task="x", model="y", **{k: None for k in row}))
    text = summary_table_text(summary)
    lines = text.splitlines()
    assert lines[0] == SUMMARY_HEADER and "best [95% CI]" in lines[1] and "at max [95% CI]" in lines[1]
    assert all(len(ln) <= 100 for ln in lines)
    body = lines[2:]
    assert len(body) == len(summary)  # one line per (task, model)
    for t in tasks:
        for m in models:
            assert any(ln.startswith(t) and f" {m} " in ln for ln in body)  # full names, never cut
    assert "0.510 [0.41, 0.61]" in body[0] and " 128 " in body[0]


def test_summary_without_dev_queries_shows_the_zero_shot_score_not_empty_columns():
    """dev_queries: 0 (the quickstart) chooses no k: the 0-shot score fills those columns, in the CLI
    table and in report.md, so the many-shot gain reads off one line."""
    from manyicl.cli import SUMMARY_HEADER_NO_DEV, summary_table_text
    from manyicl.report import summary_table

    curve = [
        dict(shots_requested=0, shots=0.0, mean=0.25, lo=0.12, hi=0.44),
        dict(shots_requested="max", shots=45.0, mean=0.6, lo=0.42, hi=0.75),
    ]
    row = dict(task="intent_many_0", model="manyicl", n=30, best=None, best_shots=None, max_shots=45)
    row |= dict(at_max=0.6, at_max_lo=0.42, at_max_hi=0.75, curve=curve, majority=0.2)
    lines = summary_table_text([row]).splitlines()
    assert lines[0] == SUMMARY_HEADER_NO_DEV and "at 0 [95% CI]" in lines[1] and "best" not in lines[1]
    assert "0.250 [0.12, 0.44]" in lines[2] and "0.600 [0.42, 0.75]" in lines[2]
    md = summary_table([row]).splitlines()
    assert "at 0 [95% CI]" in md[0] and "k (dev)" not in md[0]
    assert md[1].count("|") == md[0].count("|") and md[2].count("|") == md[0].count("|")
    assert "| 0.250 [0.12, 0.44] | 45 | 0.600 [0.42, 0.75] |" in md[2]
    with_dev = dict(row, best=0.5, best_lo=0.3, best_hi=0.7, best_shots=4)
    assert "k (dev)" in summary_table([with_dev]) and "best [95% CI]" in summary_table_text([with_dev])


def test_summary_keeps_names_longer_than_the_table_whole():
    from manyicl.cli import summary_table_text

    long = "a_task_name_that_is_much_longer_than_any_column_could_hold_in_a_hundred_characters"
    text = summary_table_text([dict(task=long, model="manyicl", n=3, best=1.0, max_shots=4, at_max=1.0)])
    assert f"{long}  manyicl" in text and all(len(ln) <= 100 for ln in text.splitlines())


def _folder(tmp_path, name: str, train: list[tuple[str, str]], test: list[tuple[str, str]], meta: str = ""):
    d = tmp_path / name
    d.mkdir(parents=True)
    (d / "task.yaml").write_text(f"name: {name}\ncategory: cls\nlabels: [a, b]\n{meta}")
    for split, rows in (("train", train), ("test", test)):
        (d / f"{split}.jsonl").write_text(
            "".join(json.dumps({"input": i, "output": o}) + "\n" for i, o in rows)
        )
    return d


def test_tasks_validate_caps_errors_per_file(tmp_path, capsys):
    d = tmp_path / "bad"
    d.mkdir()
    (d / "task.yaml").write_text("category: cls\n")
    (d / "train.jsonl").write_text("\n".join('{"input": "x"}' for _ in range(30)) + "\n")
    assert main(["-q", "tasks", "validate", str(d)]) == 2
    err = capsys.readouterr().err
    assert err.count("missing field") == 10 and "... and 20 more errors in this file" in err
    assert main(["-q", "tasks", "validate", str(d), "--max-errors", "0"]) == 2
    assert capsys.readouterr().err.count("missing field") == 30


def test_tasks_validate_reports_good_folders_next_to_broken_ones(tmp_path, capsys):
    _folder(tmp_path, "good", [("p", "a"), ("q", "b")], [("r", "a")])
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "task.yaml").write_text("category: clss\n")
    assert main(["-q", "tasks", "validate", str(tmp_path)]) == 2
    captured = capsys.readouterr()
    assert "ok  good" in captured.out and "clss" in captured.err


def test_tasks_validate_reports_within_task_train_test_duplicates(tmp_path, capsys):
    train = [("The cat sat", "a"), ("a dog ran", "b"), ("birds sing", "a"), ("fish swim", "b")]
    test = [("the  CAT sat", "a"), ("A dog ran", "a"), ("new input", "b")]
    _folder(tmp_path, "dupes", train, test)
    assert main(["-q", "tasks", "validate", str(tmp_path / "dupes")]) == 0
    out = capsys.readouterr().out
    assert "2 of 3 test inputs also occur in train" in out and "1 of them with a different label" in out


def test_tasks_validate_warns_on_empty_inputs(tmp_path, capsys):
    _folder(tmp_path, "empties", [("", "a"), ("x", "b"), ("  ", "a")], [("y", "a")])
    assert main(["-q", "tasks", "validate", str(tmp_path / "empties")]) == 0
    out = capsys.readouterr().out
    assert out.count("input is empty") == 2 and "train.jsonl:1 [input]" in out
    assert main(["-q", "tasks", "validate", "--strict", str(tmp_path / "empties")]) == 2


def test_tasks_split_check_overlap_on_user_folders(tmp_path, capsys):
    shared = [(f"a fairly long sentence number {i} about things", "a" if i % 2 else "b") for i in range(4)]
    _folder(tmp_path / "f", "one", shared, [("something else entirely here now", "a")])
    _folder(tmp_path / "f", "two", [("other words", "a"), ("more words", "b")], shared[:2] + shared[:1])
    args = ["-q", "tasks", "split", "--dirs", str(tmp_path / "f"), "--no-shared", "--check-overlap"]
    assert main(args) == 2
    out = capsys.readouterr().out
    assert "OVERLAP: 3 of two in one" in out and "1 leaking task pairs" in out
    assert main([*args, "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["folders"] == ["one", "two"] and res["overlaps"][0]["count"] == 3
    assert {w["task"]: w["duplicates"] for w in res["within_task"]} == {"one": 0, "two": 0}


def test_enable_logging_shows_library_log_lines(monkeypatch):
    import io
    import logging

    import manyicl

    root = logging.getLogger()
    monkeypatch.setattr(root, "handlers", [])
    logger = logging.getLogger("manyicl")
    monkeypatch.setattr(logger, "handlers", [])
    monkeypatch.setattr(logger, "level", logging.NOTSET)
    buf = io.StringIO()
    manyicl.enable_logging(stream=buf)
    manyicl.enable_logging(stream=buf)  # idempotent: one handler
    logging.getLogger("manyicl.evaluate").info("prepared 3 tasks")
    assert buf.getvalue() == "prepared 3 tasks\n" and len(logger.handlers) == 1


def test_experiment_status_grid_keeps_fractions_together(tmp_path, capsys):
    import re

    args = ["-q", "experiment", "experiment_quick", "--status", f"output_dir={tmp_path / 'x'}"]
    assert main([*args, "eval.tasks.synthetic_instances=1", "train.data.tasks.synthetic_instances=1"]) == 0
    row = next(ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("task_level"))
    assert re.search(r"\s0/\d+\s", row) and not re.search(r"/\s+\d", row), row


def test_experiment_status_grid_fits_100_columns_with_many_tasks(tmp_path, capsys):
    from manyicl.cells import Cells
    from manyicl.config import ExperimentConfig
    from manyicl.experiment import make_plan, status_view
    from manyicl.synthetic import synthetic_suite

    tasks = synthetic_suite(instances=4, train_size=20, test_size=5, split="held_out")  # 20+ tasks
    cfg = ExperimentConfig(output_dir=str(tmp_path))
    view = status_view(cfg, make_plan(cfg, tasks), Cells(tmp_path))
    assert max(len(ln) for ln in view.splitlines()) <= 100, view
    legend = " ".join(ln.strip() for ln in view.splitlines() if ln.startswith(("tasks:", "  ")))
    for i, t in enumerate(tasks):  # every numbered column is named, number and name together
        assert f" {i + 1} {t.name} " in f"{legend} ", (i, t.name)


def test_experiment_report_refuses_a_results_folder_without_its_cells(tmp_path, capsys):
    """A committed results folder has report.md and results.json but no cells/ (not committed):
    ``--report`` would rebuild an empty report over it, so it is refused and nothing changes."""
    (tmp_path / "report.md").write_text("# Experiment report: the committed one\n")
    (tmp_path / "results.json").write_text('{"rows": [1]}')
    args = ["-q", "experiment", "experiment_quick", f"output_dir={tmp_path}", "--report"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "holds a report but no finished cells" in err and "Traceback" not in err
    assert (tmp_path / "report.md").read_text() == "# Experiment report: the committed one\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.md", "results.json"]
