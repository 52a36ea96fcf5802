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
    report = distill(cfg)
    text = report.read_text()
    assert "claims" in text and "zero-initialised biases" in text
    import json

    rows = json.loads((tmp_path / "results.json").read_text())["rows"]
    assert {(r["method"], r["update"]) for r in rows} == {("base", "-"), ("icl", "-")} | {
        (m, u) for m in ("pbft", "cd") for u in ("lora", "bitfit", "full")
    }
    for r in rows:
        assert 0 <= r["in_domain"] <= 1 and 0 <= r["out_of_domain"] <= 1
        if r["method"] in ("pbft", "cd"):
            assert r["train_s"] > 0 and r["peak_rss_mb"] > 0 and r["steps"] > 0
    assert len(list((tmp_path / "plots").glob("*.png"))) == 6


def test_accuracy_claims_need_a_teacher_that_can_do_icl():
    from manyicl.report import distill_claims

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
