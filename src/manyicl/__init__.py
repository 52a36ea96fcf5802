"""manyicl: fine-tune a language model once, then adapt it to any task through many-shot prompting.

Python API (each workflow is a plain function of a typed config)::

    from manyicl import TrainConfig, load_config, train
    cfg = load_config(TrainConfig, "synthetic", ["train.max_steps=20"])
    result = train(cfg)

Progress lines go to the standard ``logging`` loggers ``manyicl.*``; the command line shows them, and a
script shows them after ``manyicl.enable_logging()`` (or ``logging.basicConfig(level=logging.INFO)``).
"""

import logging

from .config import DataConfig, LoraConfig, ModelConfig, TrainConfig, load_config
from .errors import ConfigError, ManyICLError, TaskFormatError
from .tasks import Example, Task, Template, load_task_dir, write_task_dir

__version__ = "0.1.0"


def enable_logging(level: int | str = logging.INFO, stream=None) -> logging.Logger:
    """Print manyicl's progress lines (loggers ``manyicl.*``) when it is used as a library.

    The command line does this itself. When the program has already configured logging (a handler on
    the root logger, e.g. from ``logging.basicConfig``), only the level of ``manyicl`` is set, so lines
    are not printed twice; otherwise a handler writing to ``stream`` (default stderr) is added once.
    Returns the ``manyicl`` logger for further configuration.
    """
    import sys

    logger = logging.getLogger("manyicl")
    logger.setLevel(level)
    ours = any(getattr(h, "_manyicl", False) for h in logger.handlers)
    if not ours and not logging.getLogger().handlers:
        handler = logging.StreamHandler(stream or sys.stderr)
        handler.setFormatter(logging.Formatter("%(message)s"))
        handler._manyicl = True  # type: ignore[attr-defined]
        logger.addHandler(handler)
    return logger


def train(cfg: TrainConfig, **kwargs):
    """Fine-tune per ``cfg`` (see :func:`manyicl.train.train`)."""
    from .train import train as _train

    return _train(cfg, **kwargs)


__all__ = [
    "ConfigError",
    "DataConfig",
    "Example",
    "LoraConfig",
    "ManyICLError",
    "ModelConfig",
    "Task",
    "TaskFormatError",
    "Template",
    "TrainConfig",
    "enable_logging",
    "load_config",
    "load_task_dir",
    "train",
    "write_task_dir",
]
