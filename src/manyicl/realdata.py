"""The shared-data loaders under their historical name; they live in :mod:`manyicl.datasets`, one module
per source. Everything that was public here is importable from here unchanged."""

from .datasets.bigbench import SUM_TEMPLATE
from .datasets.common import (
    INTENT_TEMPLATE,
    SPLIT_SEED,
    TEST_FRACTION,
    SharedTask,
    default_data_dir,
)
from .datasets.gsm8k import MATH_COT_TEMPLATE, MATH_TEMPLATE
from .datasets.held_out import PAPER_HELD_OUT, SAME_SOURCE, same_source_tasks
from .datasets.metaicl import METAICL_TEMPLATE
from .datasets.registry import load_shared_task, load_shared_tasks, shared_catalog

__all__ = [
    "INTENT_TEMPLATE",
    "MATH_COT_TEMPLATE",
    "MATH_TEMPLATE",
    "METAICL_TEMPLATE",
    "PAPER_HELD_OUT",
    "SAME_SOURCE",
    "SPLIT_SEED",
    "SUM_TEMPLATE",
    "TEST_FRACTION",
    "SharedTask",
    "default_data_dir",
    "load_shared_task",
    "load_shared_tasks",
    "same_source_tasks",
    "shared_catalog",
]
