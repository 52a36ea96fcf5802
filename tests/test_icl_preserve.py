"""ICL-preserving fine-tuning: window mixing, tags, the KL-to-base term, and the workflow end to end."""

import json
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from manyicl.config import ICLPreserveConfig, TrainConfig, load_config
from manyicl.data import build_training_data
from manyicl.icl_preserve import ICL_TAG, TARGET_TAG, icl_preserve, icl_window_count, mix_windows, plan_runs
from manyicl.modeling import tiny_model
from manyicl.packing import collate
from manyicl.train import KL_TAG, prepare_model, supervised_loss_and_kl, supervised_loss_sum, train

from conftest import toy_task


def _builds(tok, max_length=256):
    cfg = load_config(TrainConfig, "tiny", [f"data.max_length={max_length}"])
    target = build_training_data(
        [toy_task(80, "target")],
        tok,
        replace(cfg.data, shots=0, objective="mask_last_target", sequences_per_task=60),
        tag=TARGET_TAG,
    )
    icl = build_training_data(
        [toy_task(60, "other_a", ("up", "down")), toy_task(60, "other_b")],
        tok,
        replace(cfg.data, shots="max", objective="mask_all_targets", sequences_per_task=8),
        tag=ICL_TAG,
    )
    return cfg, target, icl


def test_icl_window_count_rounds_half_up_and_keeps_at_least_one():
    assert icl_window_count(0.0, 10) == 0
    assert icl_window_count(0.1, 10) == 1
    assert icl_window_count(0.25, 10) == 3  # 2.5 rounds up
    assert icl_window_count(0.01, 10) == 1  # any ratio > 0 mixes something in
    assert icl_window_count(0.2, 37) == 7


@pytest.mark.parametrize("ratio", [0.0, 0.1, 0.2, 0.5])
def test_mixing_counts_windows_keeps_the_total_and_tags_every_sequence(tok, ratio):
    _, target, icl = _builds(tok)
    n = len(target.windows)
    assert n >= 10 and len(icl.windows) >= n // 2
    mixed, comp = mix_windows(target, icl, ratio)
    assert len(mixed.windows) == n == comp["windows"]  # the same total for every ratio
    n_icl = icl_window_count(ratio, n)
    tags = [{s.tag for s in w.sequences} for w in mixed.windows]
    assert all(len(t) == 1 for t in tags)  # a window is all target or all ICL
    assert sum(t == {ICL_TAG} for t in tags) == n_icl == comp["icl"]["windows"]
    assert sum(t == {TARGET_TAG} for t in tags) == n - n_icl == comp["target"]["windows"]
    assert comp["icl_windows_fraction"] == pytest.approx(n_icl / n)
    # prefixes of each build: a larger ratio's data contains a smaller ratio's
    assert mixed.windows[: n - n_icl] == target.windows[: n - n_icl]
    assert mixed.windows[n - n_icl :] == icl.windows[:n_icl]
    # accounting of the mix
    assert mixed.stats.windows == n
    assert (
        mixed.stats.totals()["supervised_tokens"]
        == comp["target"]["supervised_tokens"] + comp["icl"]["supervised_tokens"]
    )
    if ratio:
        assert set(comp["icl"]["tasks"]) <= {"other_a", "other_b"}


def test_default_tag_is_empty_and_collate_marks_tagged_targets(tok):
    cfg, target, icl = _builds(tok)
    plain = build_training_data([toy_task(20)], tok, cfg.data)
    assert {s.tag for s in plain.sequences} == {""}
    mixed, _ = mix_windows(target, icl, 0.5)
    ws = [mixed.windows[0], mixed.windows[-1]]  # one target window, one ICL window
    for layout in ("row", "rows"):
        b = collate(ws, layout, tag=ICL_TAG)
        assert b.tag_mask is not None and b.tag_mask.shape == b.loss_mask.shape
        assert not (b.tag_mask & ~b.loss_mask).any()
        assert b.tag_mask.sum() == ws[1].supervised_tokens
        assert collate(ws, layout).tag_mask is None


def test_loss_and_kl_match_a_hand_computation(tok):
    _, target, icl = _builds(tok)
    mixed, _ = mix_windows(target, icl, 0.5)
    ws = [mixed.windows[0], mixed.windows[-1]]
    model, ref = tiny_model(len(tok), seed=0), tiny_model(len(tok), seed=1)
    for layout in ("row", "rows"):
        b = collate(ws, layout, tag=KL_TAG)
        ce, n, kl, n_kl = supervised_loss_and_kl(model, b, "cpu", ref)
        ce0, n0 = supervised_loss_sum(model, collate(ws, layout), "cpu")
        assert n == n0 and ce.item() == pytest.approx(ce0.item(), rel=1e-5)
        # by hand: full logits of the ICL window on its own, KL(ref || model) at every tagged target
        want, count = 0.0, 0
        for s in ws[1].sequences:
            ids = torch.tensor(s.ids)[None]
            with torch.no_grad():
                lp = torch.log_softmax(model(input_ids=ids).logits[0].float(), -1)
                lq = torch.log_softmax(ref(input_ids=ids).logits[0].float(), -1)
            for t in np.flatnonzero(s.loss_mask):
                want += float((lq[t - 1].exp() * (lq[t - 1] - lp[t - 1])).sum())
                count += 1
        assert n_kl == count
        assert kl.item() == pytest.approx(want, rel=1e-4)
    # the same model as its own reference: no divergence
    _, _, kl_self, _ = supervised_loss_and_kl(model, collate(ws, "row", tag=KL_TAG), "cpu", model)
    assert kl_self.item() == pytest.approx(0.0, abs=1e-5)


def _train_cfg(tmp_path, name, **over):
    args = [
        f"output_dir={tmp_path / name}",
        "progress=false",
        "train.max_steps=4",
        "train.save_every=0",
        "data.max_length=256",
    ]
    return load_config(TrainConfig, "tiny", args + [f"{k}={v}" for k, v in over.items()])


def _metrics(path):
    return [json.loads(ln) for ln in (path / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("lora", [True, False])
def test_kl_is_zero_at_the_first_step_and_positive_after_an_update(tmp_path, tok, lora):
    _, target, icl = _builds(tok)
    data, _ = mix_windows(target, icl, 0.5)
    cfg = _train_cfg(
        tmp_path, "kl", **{"optim.kl_to_base": 1.0, "lora.enabled": lora, "train.micro_batch_size": 4}
    )
    model, tok = prepare_model(cfg)
    res = train(cfg, data=data, model=model, tokenizer=tok)
    m = [r for r in _metrics(tmp_path / "kl") if r["kl"] is not None]  # None: no ICL window in that step
    assert m[0]["step"] == 1 and len(m) >= 3
    assert m[0]["kl"] == pytest.approx(0.0, abs=1e-6)  # model == base before the first update
    assert m[-1]["kl"] > 1e-6 and m[-1]["kl_tokens"] > 0
    assert res.summary["kl_to_base"] == 1.0 and res.summary["final_kl"] == m[-1]["kl"]
    assert res.summary["mean_kl"] > 0 and res.summary["kl_tokens"] == sum(r["kl_tokens"] for r in m)


def test_full_ft_uses_a_passed_reference_model(tmp_path, tok):
    _, _, icl = _builds(tok)  # every window is ICL-format
    cfg = _train_cfg(
        tmp_path, "ref", **{"optim.kl_to_base": 1.0, "lora.enabled": False, "train.max_steps": 1}
    )
    model, tok = prepare_model(cfg)
    other = tiny_model(len(tok), seed=7)  # a reference that differs from the start
    train(cfg, data=icl, model=model, tokenizer=tok, ref_model=other)
    assert _metrics(tmp_path / "ref")[0]["kl"] > 1e-3


def _weights(model):
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


@pytest.mark.parametrize("lora", [True, False])
def test_kl_weight_zero_gives_bit_identical_training(tmp_path, tok, monkeypatch, lora):
    """kl_to_base=0 must be the plain loop: tags ignored, no base forward, the same weights bit for bit."""
    import copy

    _, target, icl = _builds(tok)
    tagged, _ = mix_windows(target, icl, 0.5)
    untagged = copy.deepcopy(tagged)
    for w in untagged.windows:  # a build that knows nothing about tags (the pre-KL code path)
        for s in w.sequences:
            s.tag = ""
    assert {s.tag for s in tagged.sequences} == {ICL_TAG, TARGET_TAG}

    def run(name, data, **over):
        cfg = _train_cfg(tmp_path, name, **{"lora.enabled": lora, "lora.dropout": 0.1, **over})
        model, tk = prepare_model(cfg)
        train(cfg, data=data, model=model, tokenizer=tk)
        return _weights(model)

    import manyicl.train as T

    def boom(*a, **k):
        raise AssertionError("the KL path ran with kl_to_base=0")

    monkeypatch.setattr(T, "supervised_loss_and_kl", boom)
    a = run("a", tagged, **{"optim.kl_to_base": 0.0})
    b = run("b", untagged)
    monkeypatch.undo()
    c = run("c", tagged, **{"optim.kl_to_base": 1.0})
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert any(not torch.equal(a[k], c[k]) for k in a)  # a positive weight does change the update


TINY = [
    "train.model.name_or_path=tiny-random-llama",
    "train.model.dtype=float32",
    "train.lora.r=4",
    "train.lora.alpha=8",
    "train.optim.lr=1e-3",
    "train.data.tasks.synthetic=true",
    "train.data.tasks.shared=false",
    "train.data.tasks.split=held_in",
    "train.data.tasks.include=[sentiment_words]",
    "train.data.tasks.synthetic_instances=1",
    "train.data.tasks.synthetic_train_size=60",
    "train.data.tasks.synthetic_test_size=8",
    "train.data.max_length=256",
    "train.data.sequences_per_task=16",
    "train.train.epochs=1",
    "train.train.save_every=0",
    "icl_tasks.include=[topic_labels,entail_rules]",
    "icl_tasks.synthetic_train_size=60",
    "icl_tasks.synthetic_test_size=8",
    "eval.tasks.include=[intent_many,numeric_compare]",
    "eval.tasks.synthetic_train_size=40",
    "eval.tasks.synthetic_test_size=8",
    "eval.max_length=256",
    "eval.max_queries=3",
    "eval.shots=[0,1,max]",
    "target_shots=[0,1]",
    "mix_ratios=[0,0.5]",
    "finetune=[lora,full]",
    "kl_to_base=[0,0.5]",
]


def _cfg(tmp_path, *extra):
    return load_config(
        ICLPreserveConfig, "icl_preserve_quick", [f"output_dir={tmp_path / 'ip'}", *TINY, *extra]
    )


def test_plan_skips_kl_without_icl_data(tmp_path):
    runs = plan_runs(_cfg(tmp_path))
    assert [(r.kind, r.ratio, r.kl) for r in runs] == [
        ("lora", 0.0, 0.0),
        ("lora", 0.5, 0.0),
        ("lora", 0.5, 0.5),
        ("full", 0.0, 0.0),
        ("full", 0.5, 0.0),
        ("full", 0.5, 0.5),
    ]


@pytest.mark.slow
def test_workflow_writes_every_row_and_resumes_without_redoing_cells(tmp_path):
    cfg = _cfg(tmp_path)
    res = icl_preserve(cfg)
    out = tmp_path / "ip"
    assert res.report_path == out / "report.md" and res.output_dir == out
    text = res.report_path.read_text()
    runs = plan_runs(cfg)
    # the result holds the cells the report is made from
    assert res.base == json.loads((out / "cells" / "eval" / "base.json").read_text())
    assert [r["run"]["name"] for r in res.runs] == [r.name for r in runs]
    for r, spec in zip(res.runs, runs):
        train_cell = json.loads((out / "cells" / "train" / f"{spec.name}.json").read_text())
        eval_cell = json.loads((out / "cells" / "eval" / f"{spec.name}.json").read_text())
        assert r == train_cell | eval_cell
    for r in runs:
        assert f"| {r.label} |" in text, r.label
    assert "No fine-tuning (base)" in text and "ICL drop % best" in text
    assert "What seed 003's claims look like here" in text
    for p in ("results.json", "results.csv", "plots/icl_drop_vs_mix.png", "plots/target_accuracy_vs_mix.png"):
        assert (out / p).exists(), p
    data = json.loads((out / "results.json").read_text())
    assert [r["name"] for r in data["rows"]] == ["base"] + [r.name for r in runs]
    assert data["claims"]  # generated from the numbers
    for row in data["rows"][1:]:
        mix = row["mix"]
        assert mix["windows"] == data["rows"][1]["mix"]["windows"]  # same total in every run
        assert mix["icl"]["windows"] == icl_window_count(row["ratio"], mix["windows"])
        assert row["steps"] == data["rows"][1]["steps"]
        assert set(row["heldout"]["per_task"]) == {"intent_many_0", "numeric_compare_0"}
    base = data["rows"][0]["heldout"]["mean"]
    assert all(v["drop_pct"] in (None, 0.0) for v in base.values())  # the base against itself
    kl_run = next(r for r in data["rows"] if r["kl"] and r["kind"] == "full")
    assert kl_run["mean_kl"] is not None and kl_run["mean_kl"] > 0
    # the ICL task names are recorded (the report reads them there), and the report-only path
    # rewrites the same files from results.json alone
    assert data["icl_tasks"] == res.icl_tasks and res.icl_tasks
    written = {p: (out / p).read_bytes() for p in ("report.md", "results.json", "results.csv")}
    from manyicl.icl_preserve_report import report_from_results

    assert report_from_results(out) == out / "report.md"
    assert {p: (out / p).read_bytes() for p in written} == written

    # resume: finished cells are not redone; a deleted eval cell is (and its training is not); a deleted
    # training cell is redone, and so is the evaluation of that training
    cells = out / "cells"
    before = {p: p.stat().st_mtime_ns for p in cells.rglob("*.json")}
    assert len(before) == 1 + 2 * len(runs)
    (cells / "eval" / f"{runs[-1].name}.json").unlink()
    (cells / "train" / f"{runs[0].name}.json").unlink()
    again = icl_preserve(cfg)
    after = {p: p.stat().st_mtime_ns for p in cells.rglob("*.json")}
    changed = {p.relative_to(cells).as_posix() for p in after if before.get(p) != after[p]}
    assert changed == {
        f"eval/{runs[-1].name}.json",
        f"train/{runs[0].name}.json",
        f"eval/{runs[0].name}.json",
    }
    assert [r["run"]["name"] for r in again.runs] == [r.name for r in runs]


def test_held_out_tasks_must_not_be_trained_on(tmp_path):
    from manyicl.errors import ConfigError

    cfg = _cfg(tmp_path, "eval.tasks.split=held_in", "eval.tasks.include=[topic_labels]")
    with pytest.raises(ConfigError, match="topic_labels"):
        icl_preserve(cfg)


def test_a_folder_with_cells_of_other_settings_is_refused_and_the_study_holds_the_folder(
    tmp_path, monkeypatch
):
    import manyicl.icl_preserve as ip
    from manyicl.config import dump_yaml
    from manyicl.errors import ConfigError, ManyICLError
    from manyicl.fileio import exclusive_lock

    cfg = _cfg(tmp_path)
    out = tmp_path / "ip"
    studied = []

    def study(cfg, out):  # instead of the real study: is the folder held while it works?
        with pytest.raises(ManyICLError, match="in use by pid"):
            with exclusive_lock(out, "probe"):
                pass
        studied.append(cfg.output_dir)
        return "studied"

    monkeypatch.setattr(ip, "_study", study)
    assert icl_preserve(cfg) == "studied" and studied == [str(out)]
    assert (out / "config.yaml").read_text() == dump_yaml(cfg)
    (out / "cells" / "eval").mkdir(parents=True)
    (out / "cells" / "eval" / "base.json").write_text("{}")
    ip.claim_folder(cfg)  # the same settings continue cell by cell
    ip.claim_folder(_cfg(tmp_path, "finetune=[lora]", "kl_to_base=[0]"))  # which runs: selection only
    with pytest.raises(ConfigError, match="eval.max_queries: 3 -> 5") as e:
        icl_preserve(_cfg(tmp_path, "eval.max_queries=5", "mix_ratios=[0,0.2]"))
    msg = str(e.value)
    assert "mix_ratios: [0.0, 0.5] -> [0.0, 0.2]" in msg and "output_dir" in msg
    assert "set overwrite=true to discard it" in msg
    assert (out / "config.yaml").read_text() == dump_yaml(cfg) and len(studied) == 1  # refused: untouched
    assert (out / "cells" / "eval" / "base.json").exists()
    with exclusive_lock(out, "icl-preserve"):  # another process works on the folder
        with pytest.raises(ManyICLError, match="in use by pid"):
            icl_preserve(_cfg(tmp_path, "finetune=[lora]"))
    assert (out / "config.yaml").read_text() == dump_yaml(cfg) and len(studied) == 1  # not its config


def test_cli_refuses_a_folder_of_other_settings_until_overwrite_is_set(tmp_path, monkeypatch, capsys):
    """``manyicl icl-preserve`` into a folder whose cells were made with other settings: exit 2 naming the
    changed setting and ``overwrite=true``; with ``overwrite=true`` the earlier cells and adapters go and
    the study starts afresh; the same settings (overwrite recorded or not) then continue it."""
    from types import SimpleNamespace

    import manyicl.icl_preserve as ip
    from manyicl.cli import main
    from manyicl.config import dump_yaml

    out = tmp_path / "ip"
    args = ["-q", "icl-preserve", "icl_preserve_quick", f"output_dir={out}", *TINY]
    (out / "cells" / "eval").mkdir(parents=True)
    (out / "cells" / "eval" / "base.json").write_text("{}")
    (out / "train" / "lora_ratio0_kl0").mkdir(parents=True)
    (out / "config.yaml").write_text(dump_yaml(_cfg(tmp_path)))
    studied = []

    def study(cfg, folder):
        studied.append(cfg)
        return SimpleNamespace(report_path=folder / "report.md")

    monkeypatch.setattr(ip, "_study", study)
    assert main([*args, "eval.max_queries=5"]) == 2
    err = capsys.readouterr().err
    assert "eval.max_queries: 3 -> 5" in err and "set overwrite=true to discard it" in err
    assert "Traceback" not in err and not studied and (out / "cells" / "eval" / "base.json").exists()
    assert main([*args, "eval.max_queries=5", "overwrite=true"]) == 0
    assert len(studied) == 1 and studied[0].overwrite and studied[0].eval.max_queries == 5
    assert not (out / "cells").exists() and not (out / "train").exists()
    (out / "cells" / "eval").mkdir(parents=True)
    (out / "cells" / "eval" / "base.json").write_text("{}")
    assert main([*args, "eval.max_queries=5"]) == 0  # overwrite is no setting of the study's numbers
    assert len(studied) == 2 and (out / "cells" / "eval" / "base.json").exists()


def test_icl_preserve_report_imports_no_data_loader_model_or_workflow():
    from test_architecture import import_graph

    imports = import_graph()["manyicl.icl_preserve_report"]
    loaders = {"manyicl.data", "manyicl.tasks", "manyicl.sources", "manyicl.datasets", "manyicl.synthetic"}
    workflows = {"manyicl.icl_preserve", "manyicl.train", "manyicl.evaluate", "manyicl.session"}
    assert not imports & (loaders | workflows | {"manyicl.modeling"}), sorted(imports)


COMMITTED = Path(__file__).resolve().parent.parent / "results" / "icl_preserve"


@pytest.mark.skipif(not (COMMITTED / "results.json").exists(), reason="no committed icl-preserve results")
def test_the_committed_report_regenerates_identically_from_its_results(tmp_path, capsys):
    """``manyicl icl-preserve CONFIG --report`` rewrites report.md, results.json/csv from results.json
    alone (no model, no task data): on the committed study, byte for byte."""
    from manyicl.cli import main

    out = tmp_path / "icl_preserve"
    shutil.copytree(COMMITTED, out)
    assert main(["-q", "icl-preserve", "icl_preserve_quick", f"output_dir={out}", "--report"]) == 0
    assert f"report: {out / 'report.md'}" in capsys.readouterr().out
    for name in ("report.md", "results.json", "results.csv"):
        assert (out / name).read_bytes() == (COMMITTED / name).read_bytes(), name


def test_report_only_refuses_a_folder_without_usable_results(tmp_path, capsys):
    from manyicl.cli import main

    args = ["-q", "icl-preserve", "icl_preserve_quick", f"output_dir={tmp_path}", "--report"]
    assert main(args) == 2
    assert "has no results.json: run the study first" in capsys.readouterr().err
    (tmp_path / "results.json").write_text('{"rows": [')
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "results.json: not readable JSON" in err and "Traceback" not in err
    (tmp_path / "results.json").write_text('{"rows": []}')
    assert main(args) == 2
    assert "not an icl-preserve results.json (no config, base, runs)" in capsys.readouterr().err
