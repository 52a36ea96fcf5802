"""manyicl: fine-tune a language model once, then adapt it to any task through many-shot prompting.

Python API (each workflow is a plain function of a typed config)::

    from manyicl import TrainConfig, load_config, train
    cfg = load_config(TrainConfig, "synthetic", ["train.max_steps=20"])
    result = train(cfg)
"""

from .config import DataConfig, LoraConfig, ModelConfig, TrainConfig, load_config
from .errors import ConfigError, ManyICLError, TaskFormatError
from .tasks import Example, Task, Template, load_task_dir, write_task_dir

__version__ = "0.1.0"


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
    "load_config",
    "load_task_dir",
    "train",
    "write_task_dir",
]
