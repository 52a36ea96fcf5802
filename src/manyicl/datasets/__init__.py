"""Real task data: loaders for the public datasets kept in the shared data folder, one module per source.

The shared folder (``../shared/data`` next to the repository, or ``$MANYICL_DATA``) holds public datasets in
their original formats (see its README and each ``SOURCE.txt``). Each module here turns one of them into
:class:`~manyicl.tasks.Task` objects with paper-style templates (Appendix A.2: ``Task: ... Here are some
examples:`` / ``Text: ...`` / ``Intent: ...``), so that meta-training and evaluation can run on real text:
:mod:`.clinc150`, :mod:`.banking77`, :mod:`.gsm8k`, :mod:`.goemotions`, :mod:`.superglue` (RTE, CB),
:mod:`.sst2`, :mod:`.trec`, :mod:`.ag_news`, :mod:`.metaicl`, :mod:`.bigbench`. :mod:`.common` holds what
they share (file reading with problems collected, derived splits, the :class:`DatasetSpec` each declares),
:mod:`.registry` the catalog and the loading entry points, :mod:`.held_out` the held-out proposals.

* :func:`shared_catalog` lists what is available (cheap: reads no examples).
* :func:`load_shared_task` / :func:`load_shared_tasks` load tasks; malformed files raise
  :class:`~manyicl.errors.TaskFormatError` naming file, line and field (all problems at once).
* :data:`PAPER_HELD_OUT` proposes paper-like held-out test tasks per category (Table 6 spirit) and
  :data:`SAME_SOURCE` names the tasks built from the same underlying data, which must never be trained on
  alongside a held-out task.

Usable data are kept; what is dropped or derived (empty outputs, out-of-scope rows, unlabeled test files,
splits made by a seeded shuffle) is counted in ``Task.notes``. Content quirks that do not make an example
unusable (duplicates, labels differing only in case) are left for :func:`manyicl.tasks.check_quality`.

A new source is one module defining a loader ``(DatasetSpec, LoadContext) -> Task`` and its specs, added to
:mod:`.registry`.
"""

from .common import SPLIT_SEED, TEST_FRACTION, SharedTask, default_data_dir
from .held_out import PAPER_HELD_OUT, SAME_SOURCE, same_source_tasks
from .registry import load_shared_task, load_shared_tasks, shared_catalog

__all__ = [
    "PAPER_HELD_OUT",
    "SAME_SOURCE",
    "SPLIT_SEED",
    "TEST_FRACTION",
    "SharedTask",
    "default_data_dir",
    "load_shared_task",
    "load_shared_tasks",
    "same_source_tasks",
    "shared_catalog",
]
