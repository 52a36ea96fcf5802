"""A built-in synthetic task suite: natural-looking tasks generated from a seed, no data, no network.

Each *family* is a kind of task with a hidden rule (which topic maps to which label word, which animal
to count, which coefficient to apply, ...). Each *instance* of a family draws its own rule parameters
from ``random.Random(f"{seed}:{family}:{instance}")``, so the rule has to be inferred from the in-context
examples; the instruction only describes the format. Families marked ``held_out`` are reserved for
evaluation and never meta-trained on. Same arguments, same tasks (byte-identical, in the same order).

Classification families (cls, nli) draw labels balanced and shuffled, so classes are balanced; no input
repeats within a task, and no test input appears in train. A family whose input space is too small for
the requested sizes raises ``ValueError`` instead of looping.

Layout: ``registry`` (Family, make_task, synthetic_suite), ``words`` (shared vocabulary), and one module
per category whose import registers its families. The import order below fixes the family order, and so
the suite's order: do not reorder.
"""

from __future__ import annotations

# isort: off
from . import cls_tasks  # noqa: F401  (each import registers its families, in this order)
from . import nli_tasks  # noqa: F401
from . import qa_tasks  # noqa: F401
from . import mlcls_tasks  # noqa: F401
from . import sum_tasks  # noqa: F401
from . import math_tasks  # noqa: F401
from . import other_tasks  # noqa: F401

# isort: on
from .registry import _MAX_TRIES, FAMILIES, Family, _Spec, held_in, held_out, make_task, synthetic_suite

HELD_OUT: tuple[str, ...] = held_out()
HELD_IN: tuple[str, ...] = held_in()

__all__ = ["FAMILIES", "HELD_IN", "HELD_OUT", "Family", "make_task", "synthetic_suite", "_MAX_TRIES", "_Spec"]
