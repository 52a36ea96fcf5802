"""Loaders for the real datasets in the shared data folder (skipped when it is absent)."""

import json
from pathlib import Path

import pytest

from manyicl.errors import Collector, TaskFormatError
from manyicl.realdata import (
    PAPER_HELD_OUT,
    SAME_SOURCE,
    default_data_dir,
    load_shared_task,
    load_shared_tasks,
    same_source_tasks,
    shared_catalog,
)
from manyicl.tasks import CATEGORIES, METRICS, validate_task

DATA = default_data_dir()


@pytest.fixture(scope="module")
def data_dir() -> Path:
    if DATA is None or not DATA.is_dir():
        pytest.skip("../shared/data not found; set MANYICL_DATA")
    return DATA


@pytest.fixture(scope="module")
def tasks(data_dir):
    return {t.name: t for t in load_shared_tasks(data_dir)}


def sizes(task):
    return {k: len(v) for k, v in task.splits.items()}


BIGBENCH = [
    "bigbench:mlsum_de",
    "bigbench:mlsum_es",
    "bigbench:wikilingua_en",
    "bigbench:social_iqa",
    "bigbench:strategyqa",
    "bigbench:presuppositions_as_nli",
    "bigbench:qasc",
    "bigbench:winogrande",
]
DERIVED = ["ag_news", *BIGBENCH]


def test_catalog_lists_every_dataset(data_dir):
    cat = shared_catalog(data_dir)
    names = [t.name for t in cat]
    assert len(names) == len(set(names))
    for n in [
        "clinc150",
        "banking77",
        "gsm8k",
        "gsm8k_cot",
        "goemotions",
        "rte",
        "cb",
        "sst2",
        "trec",
        "ag_news",
    ]:
        assert n in names
    assert sum(n.startswith("metaicl:") for n in names) >= 90
    assert set(BIGBENCH) <= set(names)
    assert not any("gutenberg" in n for n in names)
    assert all(t.category in CATEGORIES and t.dataset and t.description for t in cat)
    assert {t.dataset for t in cat if t.name.startswith("metaicl:")} == {"metaicl_rethinking"}


def test_catalog_matches_loaded_tasks(data_dir, tasks):
    cat = {t.name: t for t in shared_catalog(data_dir)}
    assert set(cat) == set(tasks)
    for name, t in tasks.items():
        assert t.category == cat[name].category, name


EXACT = {
    "clinc150": {"train": 15000, "dev": 3000, "test": 4500},
    "banking77": {"train": 10003, "test": 3080},
    "gsm8k": {"train": 7473, "test": 1319},
    "gsm8k_cot": {"train": 7473, "test": 1319},
    "goemotions": {"train": 43410, "dev": 5426, "test": 5427},
    "goemotions_ekman": {"train": 43410, "dev": 5426, "test": 5427},
    "rte": {"train": 2490, "test": 277},
    "cb": {"train": 250, "test": 56},
    "sst2": {"train": 6920, "dev": 872, "test": 1821},
    "trec": {"train": 5452, "test": 500},
    "ag_news": {"train": 6080, "test": 1520},
    "bigbench:mlsum_de": {"train": 1600, "test": 400},
    "bigbench:mlsum_es": {"train": 1600, "test": 400},
    "metaicl:glue-mnli": {"train": 16, "dev": 16, "test": 3000},
    "metaicl:superglue-cb": {"train": 16, "dev": 16, "test": 56},
}
N_LABELS = {"clinc150": 150, "banking77": 77, "goemotions": 28, "goemotions_ekman": 7, "trec": 6, "sst2": 2}


@pytest.mark.parametrize("name", sorted(EXACT))
def test_exact_sizes(tasks, name):
    assert sizes(tasks[name]) == EXACT[name]
    if name in N_LABELS:
        assert len(tasks[name].labels) == N_LABELS[name]


def test_intent_tasks_follow_the_paper_template(tasks):
    for name in ("clinc150", "banking77"):
        t = tasks[name]
        assert t.category == "cls" and t.metric == "accuracy"
        tm = t.template
        assert tm.instruction == (
            "Task: You will receive a text input. Your task is to classify the intent of the input text. "
            "Here are some examples:"
        )
        assert (tm.input_prefix, tm.output_prefix) == ("Text: ", "Intent:")
    assert "bill balance" in tasks["clinc150"].labels and "oos" not in tasks["clinc150"].labels
    assert any("oos" in n for n in tasks["clinc150"].notes)
    assert "card arrival" in tasks["banking77"].labels
    assert all(
        "_" not in lab and lab == lab.lower() for lab in tasks["clinc150"].labels + tasks["banking77"].labels
    )
    assert set(tasks["trec"].labels) == {
        "abbreviation",
        "description",
        "entity",
        "human",
        "location",
        "number",
    }


def test_example_lines_point_into_source_files(data_dir, tasks):
    clinc = (data_dir / "clinc150" / "data_full.json").read_text().split("\n")
    for ex in tasks["clinc150"].splits["test"][::997]:
        assert ex.input in clinc[ex.line - 1] or ex.input in clinc[ex.line], ex
    bank = (data_dir / "banking77" / "train.csv").read_text().split("\n")
    for ex in tasks["banking77"].splits["train"][::1499]:
        assert bank[ex.line - 1].split(",")[0].strip('"')[:20] in ex.input, ex
    bb = (data_dir / "bigbench_subset" / "strategyqa" / "task.json").read_text().split("\n")
    for ex in tasks["bigbench:strategyqa"].splits["test"][::97]:
        assert ex.input[:30] in "\n".join(bb[ex.line - 1 : ex.line + 2]), ex


def test_rte_and_cb_use_no_unlabeled_split(tasks):
    for name in ("rte", "cb"):
        t = tasks[name]
        assert set(t.splits) == {"train", "test"}
        assert t.split_files["test"].endswith("val.jsonl")
        assert not any(f.endswith("/test.jsonl") for f in t.split_files.values())
        assert any("no labels" in n for n in t.notes)
        assert t.category == "nli" and t.metric == "accuracy"
        assert all("\nHypothesis: " in e.input for e in t.splits["train"][:20])
    assert tasks["rte"].labels == ("entailment", "not entailment")
    assert set(tasks["cb"].labels) == {"entailment", "contradiction", "neutral"}


def test_gsm8k_final_answer_and_cot(data_dir, tasks):
    rows = [json.loads(line) for line in (data_dir / "gsm8k" / "train.jsonl").read_text().splitlines()[:8]]
    plain, cot = tasks["gsm8k"], tasks["gsm8k_cot"]
    assert plain.metric == cot.metric == "math_accuracy" and plain.category == "math"
    for row, ex, cex in zip(rows, plain.splits["train"], cot.splits["train"]):
        final = row["answer"].split("####")[-1].strip().replace(",", "")
        assert ex.output == final and ex.input == " ".join(row["question"].split())
        assert cex.output.endswith(f"#### {final}") and "\n" in cex.output
    assert all("," not in e.output for e in plain.split("train+test"))
    assert any(e.output == "1000" or len(e.output) > 3 for e in plain.splits["train"])
    assert cot.template.example_separator == "\n\n"
    assert all("\n\n" not in e.output for e in cot.split("train+test"))
    assert any("socratic" in n for n in plain.notes)


def test_goemotions_multilabel_in_canonical_order(tasks):
    t = tasks["goemotions"]
    assert t.category == "mlcls" and t.metric == "multilabel_f1" and t.label_separator == ", "
    assert t.labels[:3] == ("admiration", "amusement", "anger") and t.labels[-1] == "neutral"
    order = {lab: i for i, lab in enumerate(t.labels)}
    multi = 0
    for e in t.split("train+dev+test"):
        parts = e.output.split(", ")
        assert all(p in order for p in parts), e
        assert [order[p] for p in parts] == sorted(order[p] for p in parts), e
        multi += len(parts) > 1
    assert sum(len(e.output.split(", ")) > 1 for e in t.splits["train"]) == 7102  # as SOURCE.txt says
    assert multi > 7102
    assert tasks["goemotions_ekman"].labels == (
        "anger",
        "disgust",
        "fear",
        "joy",
        "neutral",
        "sadness",
        "surprise",
    )


@pytest.mark.parametrize("name", DERIVED)
def test_derived_splits_are_disjoint_and_deterministic(data_dir, tasks, name):
    t = tasks[name]
    train, test = t.splits["train"], t.splits["test"]
    assert set(t.splits) == {"train", "test"}
    assert {e.line for e in train}.isdisjoint(e.line for e in test)
    norm = lambda e: " ".join(e.input.lower().split())  # noqa: E731
    assert {norm(e) for e in train}.isdisjoint(norm(e) for e in test)
    if name not in ("bigbench:mlsum_de", "bigbench:mlsum_es"):
        assert abs(len(test) / (len(train) + len(test)) - 0.2) < 0.01
    assert any("derived" in n for n in t.notes)
    again = load_shared_task(name, data_dir)
    assert again.splits == t.splits
    assert [e.line for e in again.splits["test"]] == [e.line for e in test]


def test_every_task_is_valid_and_clean(tasks):
    assert len(tasks) >= 110
    for name, t in tasks.items():
        c = Collector()
        validate_task(t, c)
        assert not c.errors, (name, [str(p) for p in c.errors[:3]])
        assert t.category in CATEGORIES and t.metric in METRICS, name
        assert t.source and t.family and t.description, name
        assert set(t.split_files) == set(t.splits) and "train" in t.splits, name
        assert "test" in t.splits or (name.startswith("metaicl:") and "dev" in t.splits), name
        assert all(lab and lab == lab.strip() for lab in t.labels), name
        if t.category in ("cls", "mlcls"):
            assert t.labels, name
        for split, exs in t.splits.items():
            assert exs, (name, split)
            for e in exs:
                assert isinstance(e.input, str) and isinstance(e.output, str)
                assert e.input and e.output and e.input == e.input.strip() and e.output == e.output.strip(), e
                if name != "gsm8k_cot":
                    assert "\n" not in e.output, (name, e)
                assert e.input.count("\n") <= 1, (name, e)
                assert not e.options or e.output in e.options, (name, e)
                assert e.line > 0, (name, e)


def test_metaicl_tasks(tasks):
    m = {n: t for n, t in tasks.items() if n.startswith("metaicl:")}
    assert m["metaicl:glue-mnli"].category == "nli"
    assert m["metaicl:superglue-cb"].category == "nli"
    assert m["metaicl:ai2_arc"].category == "qa" and m["metaicl:ai2_arc"].metric == "accuracy"
    assert m["metaicl:boolq"].category == "qa"  # listed in qa_to_qa.json although a classification task
    assert m["metaicl:ag_news"].category == "cls"
    assert m["metaicl:ag_news"].labels == ("Business", "Sci/Tech", "Sports", "World")
    assert m["metaicl:kilt_nq"].metric == "exact_match" and not m["metaicl:kilt_nq"].labels
    for t in m.values():
        assert t.family == "metaicl" and t.template.instruction == ""
        assert (t.template.input_prefix, t.template.output_prefix) == ("Input: ", "Output:")
    no_test = [n for n, t in m.items() if "test" not in t.splits]
    assert "metaicl:discovery" in no_test and len(no_test) == 15
    assert all(any("no test file" in x for x in m[n].notes) for n in no_test)
    spam = m["metaicl:sms_spam"]  # its k=16 train file has only 'ham'
    assert len({e.output for e in spam.splits["train"]}) == 2


def test_bigbench_tasks(tasks):
    for n in ("bigbench:mlsum_de", "bigbench:mlsum_es", "bigbench:wikilingua_en"):
        t = tasks[n]
        assert t.category == "sum" and t.metric == "rouge_l" and t.template.output_prefix == "Summary:"
    siqa = tasks["bigbench:social_iqa"]
    assert siqa.category == "qa" and siqa.metric == "accuracy"
    assert all(len(e.options) in (2, 3) for e in siqa.splits["train"])
    sqa = tasks["bigbench:strategyqa"]
    assert set(sqa.labels) == {"Yes", "No"} and sqa.metric == "accuracy"
    nli = tasks["bigbench:presuppositions_as_nli"]
    assert nli.category == "nli" and set(nli.labels) == {"entailment", "neutral", "contradiction"}
    assert all("The answer is" not in e.input for e in nli.split("train+test"))
    assert tasks["bigbench:qasc"].metric == "exact_match"
    assert tasks["bigbench:winogrande"].category in ("qa", "other")
    for n in BIGBENCH:
        t = tasks[n]
        assert "canary" not in t.template.instruction.lower()
        assert all("canary" not in e.input.lower() for e in t.splits["test"][:50])


def test_held_out_proposal_and_same_source(data_dir):
    names = {t.name for t in shared_catalog(data_dir)}
    held = [n for v in PAPER_HELD_OUT.values() for n in v]
    assert set(held) <= names and set(PAPER_HELD_OUT) <= set(CATEGORIES)
    assert set(held) <= set(SAME_SOURCE)
    for n, others in SAME_SOURCE.items():
        assert n not in others
        for o in others:
            assert n in SAME_SOURCE[o], (n, o)  # symmetric
            assert o in names, o  # every same-source name exists here
    assert {"metaicl:glue-rte", "metaicl:superglue-rte"} <= set(SAME_SOURCE["rte"])
    assert "gsm8k_cot" in same_source_tasks(["gsm8k"]) and "gsm8k" in SAME_SOURCE["gsm8k_cot"]
    assert "goemotions_ekman" in SAME_SOURCE["goemotions"]
    assert "metaicl:glue-sst2" in SAME_SOURCE["sst2"] and "metaicl:ag_news" in SAME_SOURCE["ag_news"]


# ---- malformed copies ------------------------------------------------------------------------


def test_malformed_jsonl_names_file_line_and_field(tmp_path):
    d = tmp_path / "rte"
    d.mkdir()
    good = {"premise": "A man sleeps.", "hypothesis": "A man is asleep.", "label": "entailment", "idx": 0}
    bad_label = dict(good, label="maybe")
    (d / "train.jsonl").write_text(
        "\n".join(
            [
                json.dumps(good),
                "{not json",
                json.dumps({"premise": "x", "label": "entailment"}),
                json.dumps(bad_label),
                json.dumps(dict(good, label="not_entailment")),
            ]
        )
        + "\n"
    )
    (d / "val.jsonl").write_text(
        json.dumps(good) + "\n" + json.dumps(dict(good, label="not_entailment")) + "\n"
    )
    assert [t.name for t in shared_catalog(tmp_path)] == ["rte"]
    with pytest.raises(TaskFormatError) as e:
        load_shared_task("rte", tmp_path)
    msg = str(e.value)
    assert f"{d / 'train.jsonl'}:2" in msg and "malformed JSON" in msg
    assert "train.jsonl:3 [hypothesis]" in msg
    assert "train.jsonl:4 [label]" in msg and "maybe" in msg
    assert "val.jsonl" not in msg


def test_malformed_csv_names_file_and_line(tmp_path):
    d = tmp_path / "banking77"
    d.mkdir()
    (d / "categories.json").write_text(json.dumps(["card_arrival", "card_linking"]))
    (d / "train.csv").write_text(
        'text,category\n"where is\nmy card?",card_arrival\nhow do I link it,card_linking,extra\n'
        "link my card,card_linking\nhello,no_such_intent\n"
    )
    (d / "test.csv").write_text("text,category\nmy card?,card_arrival\nlink,card_linking\n")
    with pytest.raises(TaskFormatError) as e:
        load_shared_tasks(tmp_path)
    msg = str(e.value)
    assert f"{d / 'train.csv'}:4" in msg and "got 3" in msg  # the multi-line row 2-3 is counted right
    assert "train.csv:6 [category]" in msg and "no_such_intent" in msg
    assert len(e.value.problems) == 2


def test_malformed_metaicl_and_bigbench(tmp_path):
    d = tmp_path / "metaicl_rethinking" / "toy"
    d.mkdir(parents=True)
    rows = [{"task": "toy", "input": f"q{i}", "output": "a", "options": ["a", "b"]} for i in range(3)]
    rows[1]["output"] = "c"
    rows[2]["options"] = "a|b"
    (d / "toy_16_42_train.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    (d / "toy_16_42_dev.jsonl").write_text(json.dumps(rows[0]) + "\n")
    b = tmp_path / "bigbench_subset" / "strategyqa"
    b.mkdir(parents=True)
    (b / "task.json").write_text(
        json.dumps(
            {
                "examples": [
                    {"input": "Is it?", "target_scores": {"Yes": 1, "No": 0}},
                    {"input": "Is it not?", "target_scores": {"Yes": 1, "No": 1}},
                ]
            },
            indent=2,
        )
    )
    assert {t.name for t in shared_catalog(tmp_path)} == {"metaicl:toy", "bigbench:strategyqa"}
    with pytest.raises(TaskFormatError) as e:
        load_shared_tasks(tmp_path)
    msg = str(e.value)
    assert "toy_16_42_train.jsonl:2 [options]" in msg and "toy_16_42_train.jsonl:3 [options]" in msg
    assert f"{b / 'task.json'}:" in msg and "[target_scores]" in msg


def test_unknown_name_and_missing_dir(tmp_path, data_dir):
    with pytest.raises(TaskFormatError, match="did you mean"):
        load_shared_task("clinc15", data_dir)
    with pytest.raises(TaskFormatError, match="not found"):
        load_shared_tasks(tmp_path / "nope")
    assert shared_catalog(tmp_path) == []


def test_default_data_dir_env(monkeypatch, tmp_path):
    monkeypatch.setenv("MANYICL_DATA", str(tmp_path))
    assert default_data_dir() == tmp_path
