import json
import shutil
from dataclasses import replace
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from manyicl.config import DistillConfig, load_config
from manyicl.distill import (
    Item,
    add_bitfit,
    binary_nli,
    item_loss,
    split_pair,
    truncate_layers,
    verbalizer_ids,
)
from manyicl.modeling import tiny_model
from manyicl.tasks import Example, Task, Template


def _item(tok, model):
    ids = tok("Premise: a\nHypothesis: b\nAnswer: yes\n", add_special_tokens=False)["input_ids"]
    answer_start = len(tok("Premise: a\nHypothesis: b\nAnswer:", add_special_tokens=False)["input_ids"])
    pos = list(range(answer_start - 1, len(ids) - 1))
    teacher = torch.log_softmax(
        torch.randn(len(pos), len(tok), generator=torch.Generator().manual_seed(0)), -1
    )
    return Item(ids, pos, ids[answer_start:], teacher)


def test_distillation_loss_equals_hand_computed_kl(tok, model):
    item = _item(tok, model)
    verb = verbalizer_ids(tok, Template())
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([item.ids])).logits[0].float()[item.positions]
    for kl_kind in ("verbalizer", "full"):
        cfg = DistillConfig(kl=kl_kind, alpha=1.0, temperature=2.0)
        got = item_loss(model, item, cfg, verb, "cpu").item()
        T = 2.0
        if kl_kind == "verbalizer":
            j, ids = verb
            p = torch.softmax(item.teacher[j, ids] / T, -1)
            q = torch.softmax(logits[j, ids] / T, -1)
            want = float((p * (p.log() - q.log())).sum()) * T * T
        else:
            p = torch.softmax(item.teacher / T, -1)
            q = torch.softmax(logits / T, -1)
            want = float((p * (p.log() - q.log())).sum(-1).mean()) * T * T
        assert got == pytest.approx(want, rel=1e-4)
    ce = item_loss(model, item, DistillConfig(alpha=0.0), verb, "cpu").item()
    assert ce == pytest.approx(float(F.cross_entropy(logits, torch.tensor(item.gold))), rel=1e-5)
    mixed = item_loss(model, item, DistillConfig(alpha=0.3, kl="full"), verb, "cpu").item()
    kl1 = item_loss(model, item, DistillConfig(alpha=1.0, kl="full"), verb, "cpu").item()
    assert mixed == pytest.approx(0.3 * kl1 + 0.7 * ce, rel=1e-4)


def test_bitfit_trains_only_added_zero_biases_and_keeps_the_function(tok):
    model = tiny_model(len(tok))
    x = torch.tensor([[5, 6, 7, 8]])
    with torch.no_grad():
        before = model(input_ids=x).logits
    n, added = add_bitfit(model)
    assert added
    trainable = [name for name, p in model.named_parameters() if p.requires_grad]
    assert trainable and all(name.endswith(".bias") for name in trainable)
    linears = [m for m in model.get_decoder().modules() if isinstance(m, torch.nn.Linear)]
    assert n == sum(m.out_features for m in linears)
    with torch.no_grad():
        assert torch.equal(model(input_ids=x).logits, before)


def test_truncated_student_keeps_the_first_layers(tok):
    model = tiny_model(len(tok))
    small = truncate_layers(model, 1)
    assert len(small.get_decoder().layers) == 1 and small.config.num_hidden_layers == 1
    assert torch.equal(
        small.get_decoder().layers[0].self_attn.q_proj.weight,
        model.get_decoder().layers[0].self_attn.q_proj.weight,
    )
    assert len(model.get_decoder().layers) == 2  # the teacher is untouched


def test_binary_nli_views():
    assert split_pair("premise: A cat. [SEP] hypothesis: An animal.") == ("A cat.", "An animal.")
    assert split_pair("A cat.\nHypothesis: An animal.") == ("A cat.", "An animal.")
    three = Task(
        "mnli",
        "nli",
        splits={
            "train": [
                Example("premise: a [SEP] hypothesis: b", lab)
                for lab in ("entailment", "neutral", "contradiction")
            ]
        },
        labels=("contradiction", "entailment", "neutral"),
    )
    assert [e.output for e in binary_nli(three, "p", "train")] == ["yes", "no"]
    two = Task(
        "scitail",
        "nli",
        splits={
            "train": [Example("sentence 1: a [SEP] sentence 2: b", lab) for lab in ("entailment", "neutral")]
        },
        labels=("entailment", "neutral"),
    )
    assert [e.output for e in binary_nli(two, "p", "train")] == [
        "yes",
        "no",
    ]  # two-way: neutral means not entailed


@pytest.mark.slow
def test_distill_workflow_on_the_tiny_model(tmp_path):
    from manyicl.distill import distill
    from manyicl.realdata import default_data_dir

    if default_data_dir() is None:
        pytest.skip("../shared/data not found; set MANYICL_DATA")
    cfg = load_config(
        DistillConfig,
        None,
        [
            f"output_dir={tmp_path}",
            "model.name_or_path=tiny-random-llama",
            "model.dtype=float32",
            "shots=[1,2]",
            "train_queries=3",
            "epochs=1",
            "eval_queries=4",
            "pool_size=40",
            "out_of_domain=[rte,cb]",
            "max_length=1024",
        ],
    )
    res = distill(cfg)
    assert res.report_path == tmp_path / "report.md" and res.output_dir == tmp_path
    text = res.report_path.read_text()
    assert "claims" in text and "zero-initialised biases" in text
    import json

    rows = json.loads((tmp_path / "results.json").read_text())["rows"]
    assert res.rows == rows and res.student == "same model"
    assert any("zero-initialised biases" in n for n in res.notes)
    assert {(r["method"], r["update"]) for r in rows} == {("base", "-"), ("icl", "-")} | {
        (m, u) for m in ("pbft", "cd") for u in ("lora", "bitfit", "full")
    }
    for r in rows:
        assert 0 <= r["in_domain"] <= 1 and 0 <= r["out_of_domain"] <= 1
        if r["method"] in ("pbft", "cd"):
            assert r["train_s"] > 0 and r["peak_rss_mb"] > 0 and r["steps"] > 0
    assert len(list((tmp_path / "plots").glob("*.png"))) == 6
    # a second run continues cell by cell: every cell is finished, nothing is trained or scored again
    stamps = {p: p.stat().st_mtime_ns for p in (tmp_path / "cells").rglob("*.json")}
    assert distill(cfg).rows == rows
    assert {p: p.stat().st_mtime_ns for p in (tmp_path / "cells").rglob("*.json")} == stamps
    assert json.loads((tmp_path / "results.json").read_text())["rows"] == rows


def test_teacher_distributions_are_the_teachers_after_the_whole_support_prompt(tok, model):
    from manyicl.distill import _render, nli_template, teacher_items

    cfg = DistillConfig(prefix="Does the premise entail the hypothesis?")
    yn = ("yes", "no")
    supports = [
        Example("a cat sat\nHypothesis: a cat", "yes", yn),
        Example("it rains\nHypothesis: dry", "no", yn),
    ]
    queries = [Example("dogs bark\nHypothesis: dogs", "yes", yn), Example("x is y\nHypothesis: y", "no", yn)]
    items = teacher_items(model, tok, cfg, supports, queries)
    template = nli_template(cfg.prefix)
    for q, item in zip(queries, items):
        ids, spans = _render(tok, template, supports + [q], with_prefix=True)  # recomputed from scratch
        s, e = spans[-1]
        with torch.no_grad():
            want = torch.log_softmax(model(input_ids=torch.tensor([ids])).logits[0].float(), -1)[
                s - 1 : e - 1
            ]
        assert item.teacher.shape == want.shape and torch.allclose(item.teacher, want, atol=1e-5)
        assert item.gold == ids[s:e]


def test_accuracy_claims_need_a_teacher_that_can_do_icl():
    from manyicl.distill_report import distill_claims

    def row(method, update, k, ind, ood):
        return {"method": method, "update": update, "k": k, "in_domain": ind, "out_of_domain": ood}

    flat = [row("base", "-", 0, 0.51, 0.49), row("icl", "-", 4, 0.52, 0.49), row("cd", "lora", 4, 0.50, 0.49)]
    text = " ".join(distill_claims(flat, ["lora"], n_queries=80, n_ood_sets=4))
    assert "not testable here" in text and "within noise" in text
    strong = [
        row("base", "-", 0, 0.50, 0.50),
        row("icl", "-", 4, 0.90, 0.60),
        row("cd", "lora", 4, 0.70, 0.85),
    ]
    claims = distill_claims(strong, ["lora"], n_queries=80, n_ood_sets=4)
    assert "not testable" not in " ".join(claims)
    assert claims[0].startswith("CD generalises out of domain better than ICL: supported")
    assert claims[1].startswith("ICL is best in domain: supported")


# --------------------------------------------------------------------------------------------
# Student training goes through the shared kernel (optimize): schedule, clipping, the loss it optimises
# --------------------------------------------------------------------------------------------


def _items(tok, n: int = 5) -> list[Item]:
    g = torch.Generator().manual_seed(1)
    out = []
    for i in range(n):
        text = f"Premise: a{i}\nHypothesis: b\nAnswer:"
        prompt = tok(text, add_special_tokens=False)["input_ids"]
        ids = tok(text + (" yes" if i % 2 else " no") + "\n", add_special_tokens=False)["input_ids"]
        pos = list(range(len(prompt) - 1, len(ids) - 1))
        teacher = torch.log_softmax(torch.randn(len(pos), len(tok), generator=g), -1)
        out.append(Item(ids, pos, ids[len(prompt) :], teacher))
    return out


def _student_cfg(**optim) -> DistillConfig:
    from dataclasses import replace

    from manyicl.config import LoraConfig

    cfg = DistillConfig(epochs=2, batch_size=2, lora=LoraConfig(r=4, alpha=8, dropout=0.0))
    return replace(cfg, optim=replace(cfg.optim, **optim))


class _GradsAtStep:
    """The gradients every optimizer sees when it steps (after clipping), for as long as it is active."""

    def __enter__(self):
        self.grads: list[list[torch.Tensor]] = []

        def hook(optimizer, args, kwargs):
            ps = [p for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
            self.grads.append([p.grad.detach().clone() for p in ps])

        from torch.optim.optimizer import register_optimizer_step_pre_hook

        self.handle = register_optimizer_step_pre_hook(hook)
        return self

    def __exit__(self, *exc):
        self.handle.remove()


def test_student_training_follows_the_warmup_and_cosine_schedule(tok):
    from manyicl.distill import fit_student, make_student, step_plan
    from manyicl.optimize import lr_lambda

    items, cfg = _items(tok), _student_cfg(warmup_steps=2, min_lr_ratio=0.1)
    student, _ = make_student(tiny_model(len(tok)), cfg, "bitfit")
    seen = []
    stats = fit_student(student, items, cfg, 1e-3, verbalizer_ids(tok), after_step=seen.append)
    n = len(step_plan(len(items), cfg))
    assert stats["steps"] == n == len(seen) == 6  # 2 epochs x ceil(5 / 2)
    lrs = [r.lr for r in seen]
    assert lrs[0] == pytest.approx(0.5e-3) and lrs[1] == pytest.approx(1e-3)  # warm-up, then the peak
    assert lrs[-1] < 0.5e-3 and lrs == pytest.approx([1e-3 * lr_lambda(2, n, 0.1)(s) for s in range(n)])


def test_student_gradients_are_clipped(tok):
    from manyicl.distill import fit_student, make_student

    items, cfg = _items(tok), _student_cfg(max_grad_norm=1e-3)
    student, _ = make_student(tiny_model(len(tok)), cfg, "full")
    seen = []
    with _GradsAtStep() as g:
        fit_student(student, items, cfg, 1e-3, verbalizer_ids(tok), after_step=seen.append)
    assert len(g.grads) == len(seen)
    for r, grads in zip(seen, g.grads):
        assert r.grad_norm > 100 * 1e-3  # the norm before clipping: far over the limit
        applied = float(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(x) for x in grads])))
        assert applied == pytest.approx(1e-3, rel=1e-3)


def _hand_loss(model, item: Item, cfg: DistillConfig, verb) -> torch.Tensor:
    """alpha * T^2 * KL(teacher || student) over the yes/no tokens + (1 - alpha) * CE(gold), by hand."""
    logits = model(input_ids=torch.tensor([item.ids])).logits[0].float()[item.positions]
    ce = F.cross_entropy(logits, torch.tensor(item.gold))
    j, ids = verb
    T = cfg.temperature
    p = torch.softmax(item.teacher[j, ids] / T, -1)
    log_q = torch.log_softmax(logits[j, ids] / T, -1)
    kl = (p * (p.log() - log_q)).sum() * T * T
    return cfg.alpha * kl + (1 - cfg.alpha) * ce


def test_a_student_step_optimises_the_mean_distillation_loss_of_its_items(tok):
    import copy

    from manyicl.distill import fit_student, make_student, step_plan

    items = _items(tok)
    from dataclasses import replace

    cfg = replace(_student_cfg(max_grad_norm=0.0), alpha=0.7, temperature=2.0)  # no clipping: the loss's own
    verb = verbalizer_ids(tok)
    student, _ = make_student(tiny_model(len(tok)), cfg, "full")
    ref = copy.deepcopy(student)
    first = [items[i] for i in step_plan(len(items), cfg)[0]]
    want = sum(_hand_loss(ref, it, cfg, verb) for it in first) / len(first)
    want.backward()
    seen = []
    with _GradsAtStep() as g:
        fit_student(student, items, cfg, 1e-3, verbalizer_ids(tok), after_step=seen.append)
    assert seen[0].loss == pytest.approx(float(want.detach()), rel=1e-5)
    want_grads = [p.grad for p in ref.parameters() if p.requires_grad]
    assert len(g.grads[0]) == len(want_grads)
    for got, w in zip(g.grads[0], want_grads):
        torch.testing.assert_close(got, w, rtol=1e-4, atol=1e-7)


def test_with_constant_lr_and_no_clipping_students_train_as_plain_adamw(tok):
    """The kernel adds nothing else: with the schedule and clipping off it is the loop distill had before
    (AdamW at torch's defaults, each item's loss / batch size, one step per batch of the plan)."""
    from manyicl.distill import fit_student, item_loss, make_student, step_plan

    items, verb = _items(tok), verbalizer_ids(tok)
    cfg = _student_cfg(warmup_steps=0, min_lr_ratio=1.0, max_grad_norm=0.0, weight_decay=0.01)
    a, _ = make_student(tiny_model(len(tok)), cfg, "lora")
    b, _ = make_student(tiny_model(len(tok)), cfg, "lora")
    fit_student(a, items, cfg, 1e-3, verb)
    params = [p for p in b.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-3)
    for idx in step_plan(len(items), cfg):
        opt.zero_grad(set_to_none=True)
        for i in idx:
            (item_loss(b, items[i], cfg, verb, "cpu") / len(idx)).backward()
        opt.step()
    for (name, x), y in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(x, y), name


def test_a_folder_with_cells_of_other_settings_is_refused(tmp_path):
    from dataclasses import replace

    from manyicl.config import dump_yaml, to_dict
    from manyicl.distill import claim_folder, settings_drift
    from manyicl.errors import ConfigError

    cfg = DistillConfig(output_dir=str(tmp_path))
    assert settings_drift(to_dict(cfg), replace(cfg, shots=[2])) == []  # selection, not settings
    # a folder made before the schedule existed (top-level lr, constant LR, no clipping)
    old = {k: v for k, v in to_dict(cfg).items() if k != "optim"} | {"lr": 1e-4}
    drift = settings_drift(old, cfg)
    assert any(d.startswith("optim.warmup_steps: 0 -> 2") for d in drift)
    assert any(d.startswith("optim.max_grad_norm: 0.0 -> 1.0") for d in drift)
    (tmp_path / "cells").mkdir()
    (tmp_path / "cells" / "base.json").write_text("{}")
    (tmp_path / "config.yaml").write_text(dump_yaml(replace(cfg, alpha=0.9)))
    with pytest.raises(ConfigError, match="alpha: 0.9 -> 0.5"):
        claim_folder(cfg)
    claim_folder(replace(cfg, alpha=0.9))  # the same settings continue cell by cell
    assert (tmp_path / "cells" / "base.json").exists()
    claim_folder(replace(cfg, overwrite=True))
    assert not (tmp_path / "cells").exists()


def test_distill_rejects_a_kl_to_base_term(tmp_path):
    from manyicl.errors import ConfigError

    with pytest.raises(ConfigError, match="optim.kl_to_base"):
        load_config(DistillConfig, None, [f"output_dir={tmp_path}", "optim.kl_to_base=0.1"])


# --------------------------------------------------------------------------------------------
# The report from results.json alone (`manyicl distill CONFIG --report`)
# --------------------------------------------------------------------------------------------

COMMITTED = Path(__file__).resolve().parent.parent / "results" / "distill"
OUTPUTS = ["report.md", "results.json", "results.csv"] + [
    f"plots/{n}"
    for n in (
        "fig1_accuracy.png",
        "fig2_cost.png",
        "fig3_pbft_variants.png",
        "fig4_pbft_cost.png",
        "fig5_cd_variants.png",
        "fig6_cd_cost.png",
    )
]


def test_distill_report_imports_no_data_loader_model_or_workflow():
    from test_architecture import import_graph

    imports = import_graph()["manyicl.distill_report"]
    loaders = {"manyicl.data", "manyicl.tasks", "manyicl.sources", "manyicl.datasets", "manyicl.realdata"}
    workflows = {
        "manyicl.distill",
        "manyicl.train",
        "manyicl.evaluate",
        "manyicl.session",
        "manyicl.optimize",
    }
    assert not imports & (loaders | workflows | {"manyicl.modeling", "manyicl.scoring"}), sorted(imports)


def _copy_inputs(dst: Path) -> Path:
    """The committed study's inputs only (results.json, config.yaml): every output must be rewritten."""
    dst.mkdir()
    for name in ("results.json", "config.yaml"):
        shutil.copy2(COMMITTED / name, dst / name)
    return dst


@pytest.mark.skipif(not (COMMITTED / "results.json").exists(), reason="no committed distill results")
def test_the_committed_report_regenerates_identically_from_its_results(tmp_path, capsys):
    """``manyicl distill CONFIG --report`` on the committed study (made before ``optim`` replaced the
    top-level ``lr``: its settings are in config.yaml, results.json has none) rewrites report.md,
    results.json/csv and the six figures byte for byte (the PNGs too: matplotlib is pinned, and its
    version is the only metadata they carry)."""
    from manyicl.cli import main

    assert (
        "lr" in (COMMITTED / "config.yaml").read_text()
        and "optim" not in (COMMITTED / "config.yaml").read_text()
    )
    out = _copy_inputs(tmp_path / "distill")
    assert main(["-q", "distill", "distill_quick", f"output_dir={out}", "--report"]) == 0
    assert f"report: {out / 'report.md'}" in capsys.readouterr().out
    for name in OUTPUTS:
        assert (out / name).read_bytes() == (COMMITTED / name).read_bytes(), name
    assert (out / "config.yaml").read_bytes() == (COMMITTED / "config.yaml").read_bytes()  # not rewritten


def test_a_study_that_records_its_settings_is_rewritten_from_results_json_alone(tmp_path):
    """A results.json written by today's workflow records the settings; --report reads them there (a
    config.yaml changed since, e.g. by a later run that was stopped, is not what made the rows), and
    keeps them verbatim (settings added to DistillConfig since are not filled in)."""
    from manyicl.config import to_dict
    from manyicl.distill_report import recorded_settings, report_from_results, write_report

    rows = json.loads((COMMITTED / "results.json").read_text())["rows"]
    cfg, _ = recorded_settings(COMMITTED, {}, COMMITTED / "results.json")
    assert cfg.optim.lr == 1e-4 and cfg.optim.warmup_steps == 0 and cfg.optim.max_grad_norm == 0.0
    assert cfg.eval_queries == 80  # recorded, not today's default
    out = tmp_path / "study"
    recorded = {k: v for k, v in to_dict(replace(cfg, output_dir=str(out))).items() if k != "overwrite"}
    write_report(replace(cfg, output_dir=str(out)), rows, "same model", recorded)
    written = {n: (out / n).read_bytes() for n in OUTPUTS}
    assert json.loads(written["results.json"])["config"] == recorded
    (out / "config.yaml").write_text("shots: [2]\neval_queries: 5\n")  # not the study's settings
    for name in ("report.md", "results.csv"):
        (out / name).unlink()
    assert report_from_results(out) == out / "report.md"
    assert {n: (out / n).read_bytes() for n in OUTPUTS} == written
    assert "overwrite" not in json.loads((out / "results.json").read_text())["config"]


def _tree(root: Path) -> dict:
    """Every path under ``root`` with its bytes (files) and modification time, and root's own mtime."""
    got = {".": root.stat().st_mtime_ns}
    for p in sorted(root.rglob("*")):
        got[str(p.relative_to(root))] = (p.read_bytes() if p.is_file() else None, p.stat().st_mtime_ns)
    return got


def test_report_only_refuses_a_folder_without_usable_results(tmp_path, capsys):
    from manyicl.cli import main

    args = ["-q", "distill", "distill_quick", f"output_dir={tmp_path}", "--report"]
    results = tmp_path / "results.json"

    def refused(*needles: str) -> None:
        assert main(args) == 2
        err = capsys.readouterr().err
        assert "Traceback" not in err
        for n in needles:
            assert n in err, err
        assert not (tmp_path / "report.md").exists() and not (tmp_path / ".manyicl.lock").exists()

    refused(f"output_dir: {results} does not exist: run the study first (without --report)")
    results.write_text('{"rows": [')
    refused(f"{results}: not readable JSON")
    results.write_text("[1, 2]")
    refused(f"{results}: not a distill results.json (no student, rows)")
    results.write_text('{"student": "same model", "rows": [{"method": "base", "update": "-", "k": 0}]}')
    refused(f"{results}: rows[0] has no inference_ms_per_query")
    good = {"method": "base", "update": "-", "k": 0, "inference_ms_per_query": 1.0}
    bad_rows = [
        (good | {"k": "4"}, "rows[1] k must be an integer"),
        (good | {"in_domain": "0.5"}, "rows[1] in_domain must be numbers (or null)"),
        (good | {"per_task": {"rte": "x"}}, "rows[1] per_task must map task names to accuracies"),
    ]
    for row, needle in bad_rows:
        results.write_text(json.dumps({"student": "same model", "rows": [good, row]}))
        refused(f"{results}: {needle}")
    results.write_text(json.dumps({"student": "same model", "rows": [good]}))  # no settings anywhere
    refused(f"{results}: records no settings and {tmp_path / 'config.yaml'} is missing")
    (tmp_path / "config.yaml").write_text("shots: [1\n")
    refused(f"{tmp_path / 'config.yaml'}: not readable YAML")
    (tmp_path / "config.yaml").write_text("shots: [1]\nalpha: 7\n")
    refused(
        f"{tmp_path / 'config.yaml'}: the study's recorded settings do not load", "alpha: must be in [0, 1]"
    )
    results.write_text(json.dumps({"config": [1], "student": "same model", "rows": [good]}))
    refused(f"{results}: config must be a mapping")
    results.unlink()
    results.mkdir()
    refused(f"output_dir: {results} is not a file")


def test_report_only_leaves_a_report_without_results_json_untouched(tmp_path, capsys):
    """A folder holding report.md (and plots, config.yaml) but no results.json: refused, nothing in it
    changes, not even a lock file or a write probe (the folder's mtime is the same)."""
    from manyicl.cli import main

    out = tmp_path / "study"
    (out / "plots").mkdir(parents=True)
    (out / "report.md").write_text("# my report\n")
    (out / "plots" / "fig1_accuracy.png").write_bytes(b"\x89PNG not really")
    shutil.copy2(COMMITTED / "config.yaml", out / "config.yaml")
    before = _tree(out)
    assert main(["-q", "distill", "distill_quick", f"output_dir={out}", "--report"]) == 2
    err = capsys.readouterr().err
    assert f"{out / 'results.json'} does not exist" in err and "Traceback" not in err
    assert _tree(out) == before
