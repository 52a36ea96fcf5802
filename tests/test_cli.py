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


def test_quickstart_runs_end_to_end_on_the_tiny_model(tmp_path, capsys):
    assert main(["-q", "quickstart", "--output", str(tmp_path / "qs"), *TINY_QS]) == 0
    out = capsys.readouterr().out
    assert "manyicl" in out and "report:" in out
    assert (tmp_path / "qs" / "eval" / "report.md").exists()
    assert (tmp_path / "qs" / "train" / "adapter" / "adapter_model.safetensors").exists()
    assert len(list((tmp_path / "qs" / "eval" / "plots").glob("*.png"))) == 7  # one per held-out family
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
