"""Paper-like held-out test tasks per category, and the tasks built from the same underlying data (never
to be trained on alongside a held-out one)."""

from __future__ import annotations

PAPER_HELD_OUT: dict[str, list[str]] = {
    "cls": ["clinc150", "banking77"],
    "nli": ["rte", "cb", "bigbench:presuppositions_as_nli"],
    "qa": ["bigbench:social_iqa", "bigbench:strategyqa"],
    "sum": ["bigbench:mlsum_de", "bigbench:mlsum_es"],
    "math": ["gsm8k"],
    "mlcls": ["goemotions"],
}
"""Proposed held-out test tasks per category, in the spirit of the paper's Table 6 (CLINC150 and Banking77
for CLS, RTE/CB-style NLI, multilingual summarization, GoEmotions for ML-CLS) with what is available here."""

_SAME_SOURCE_GROUPS: list[tuple[str, ...]] = [
    # held-out candidates and every other task built from the same underlying data
    ("rte", "metaicl:glue-rte", "metaicl:superglue-rte"),
    ("cb", "metaicl:superglue-cb"),
    ("goemotions", "goemotions_ekman", "goemotions_group"),
    ("gsm8k", "gsm8k_cot"),
    # SST is built from the Pang & Lee Rotten Tomatoes sentences
    ("sst2", "metaicl:glue-sst2", "metaicl:rotten_tomatoes"),
    ("ag_news", "metaicl:ag_news"),
    ("trec", "metaicl:trec", "metaicl:trec-finegrained"),
    ("bigbench:social_iqa", "metaicl:social_i_qa"),
    ("bigbench:qasc", "metaicl:qasc"),
    ("bigbench:winogrande", "metaicl:wino_grande"),
    # same data inside MetaICL
    ("metaicl:quartz-no_knowledge", "metaicl:quartz-with_knowledge"),
    ("metaicl:squad-no_context", "metaicl:squad-with_context", "metaicl:lama-squad", "metaicl:glue-qnli"),
    ("metaicl:kilt_hotpotqa", "metaicl:hotpot_qa"),
    ("metaicl:kilt_trex", "metaicl:lama-trex"),
    ("metaicl:race-high", "metaicl:race-middle"),
    (
        "metaicl:ethos-directed_vs_generalized",
        "metaicl:ethos-disability",
        "metaicl:ethos-gender",
        "metaicl:ethos-national_origin",
        "metaicl:ethos-race",
        "metaicl:ethos-religion",
        "metaicl:ethos-sexual_orientation",
    ),
]
# clinc150 and banking77 have no MetaICL copy (checked: no clinc/banking folder in metaicl_rethinking).


def _build_same_source() -> dict[str, list[str]]:
    out: dict[str, list[str]] = {n: [] for tasks in PAPER_HELD_OUT.values() for n in tasks}
    for group in _SAME_SOURCE_GROUPS:
        for name in group:
            lst = out.setdefault(name, [])
            lst.extend(n for n in group if n != name and n not in lst)
    return out


SAME_SOURCE: dict[str, list[str]] = _build_same_source()
"""Task -> other tasks made from the same underlying dataset (symmetric; every PAPER_HELD_OUT task is a key).
When a task is held out, none of these may be trained on. Names absent from a data dir are harmless."""


def same_source_tasks(names: list[str]) -> set[str]:
    """All tasks that share data with any of ``names`` (not including ``names`` themselves)."""
    out = {o for n in names for o in SAME_SOURCE.get(n, [])}
    return out - set(names)
