import pytest

from manyicl.config import TaskSourceConfig
from manyicl.errors import ConfigError
from manyicl.realdata import default_data_dir
from manyicl.splits import find_overlaps, loco_split, metaicl_split, paper_split, resolve_split
from manyicl.tasks import Example, Task

DATA = default_data_dir()
needs_data = pytest.mark.skipif(DATA is None, reason="../shared/data not found; set MANYICL_DATA")


def _task(name, inputs, split="train"):
    return Task(
        name=name, category="cls", splits={split: [Example(x, "a") for x in inputs]}, labels=("a", "b")
    )


def test_overlaps_exact_near_and_short():
    train = [
        _task(
            "tr",
            [
                "The quick brown fox jumps over the lazy dog today.",
                "great",
                "one two three four five six seven eight nine ten eleven twelve thirteen",
            ],
        )
    ]
    test = [
        _task(
            "te",
            [
                "the QUICK brown fox, jumps over the lazy dog today",
                "Great!",
                "one two three four five six seven eight nine ten eleven twelve and more",
                "unrelated text here",
            ],
            split="test",
        )
    ]
    found = {o["kind"]: o for o in find_overlaps(train, test, "train", "test")}
    assert found["exact"]["count"] == 1 and found["short"]["count"] == 1 and found["near"]["count"] == 1


@needs_data
def test_paper_split_holds_out_the_papers_test_tasks_and_their_sources():
    s = paper_split(DATA)
    assert {"clinc150", "banking77", "rte", "gsm8k"} <= set(s.test)
    assert not set(s.train) & set(s.test)
    assert "metaicl:glue-rte" in s.excluded and "metaicl:glue-rte" not in s.train
    assert "gsm8k_cot" in s.excluded
    assert len(s.train) > 80


@needs_data
def test_leave_one_category_out():
    s = loco_split(DATA, "cls")
    assert set(s.test) == {"clinc150", "banking77"}
    from manyicl.realdata import shared_catalog

    cats = {t.name: t.category for t in shared_catalog(DATA)}
    assert all(cats[n] != "cls" for n in s.train)


@needs_data
def test_metaicl_split_reports_absent_tasks():
    s = metaicl_split(DATA, "class_to_class")
    assert s.test and s.train and all(n.startswith("metaicl:") for n in s.train + s.test)
    assert all(m.startswith("metaicl:") for m in s.missing)
    with pytest.raises(ConfigError, match="available"):
        metaicl_split(DATA, "no_such_split")
    with pytest.raises(ConfigError, match="unknown split scheme"):
        resolve_split("bogus", DATA)


@pytest.mark.slow
@needs_data
def test_paper_split_has_no_leaking_test_examples():
    from manyicl.realdata import load_shared_tasks

    s = paper_split(DATA)
    found = find_overlaps(
        load_shared_tasks(DATA, s.train), load_shared_tasks(DATA, s.test), "train+dev+test", "test"
    )
    assert [o for o in found if o["kind"] != "short"] == []


@needs_data
def test_load_tasks_from_the_shared_data_with_a_scheme():
    from manyicl.data import load_tasks

    held_out = load_tasks(
        TaskSourceConfig(synthetic=False, shared=True, split="held_out", include=["clinc150", "banking77"])
    )
    assert [t.name for t in held_out] == ["clinc150", "banking77"]
    capped = load_tasks(
        TaskSourceConfig(
            synthetic=False, shared=True, split="held_in", include=["sst2"], max_examples_per_split=50
        )
    )
    assert len(capped) == 1 and all(len(v) == 50 for v in capped[0].splits.values())
