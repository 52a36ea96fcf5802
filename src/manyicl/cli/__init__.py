"""The ``manyicl`` command line. Each subcommand loads a typed config and calls one workflow function.

Layout: ``parser`` (the subcommands and their examples), ``workflows`` (train, eval, experiment, ...),
``tasks_cmds`` (data and task tools), ``config_cmds``, and ``common`` (logging, config loading, tables).
"""

from __future__ import annotations

import signal
import sys

from ..errors import ManyICLError
from .common import (
    SUMMARY_HEADER,
    SUMMARY_HEADER_NO_DEV,
    TABLE_WIDTH,
    _setup_logging,
    _split_config_args,
    summary_table_text,
)
from .parser import EXAMPLES, build_parser, parse_args

__all__ = [
    "EXAMPLES",
    "SUMMARY_HEADER",
    "SUMMARY_HEADER_NO_DEV",
    "TABLE_WIDTH",
    "_split_config_args",
    "build_parser",
    "main",
    "parse_args",
    "summary_table_text",
]


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt


def _stop_signals_interrupt() -> None:
    """SIGINT and SIGTERM stop a run the way Ctrl-C does (finished cells and checkpoints kept, exit 130).

    A shell starts background jobs (``cmd &``, ``nohup``) with SIGINT ignored, and schedulers (Slurm,
    Kubernetes) stop jobs with SIGTERM; without this, ``kill -INT`` did nothing and SIGTERM killed the
    process without the clean exit.
    """
    import threading

    if threading.current_thread() is not threading.main_thread():  # main() called from a worker thread
        return
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _raise_interrupt)


def main(argv: list[str] | None = None) -> int:
    _stop_signals_interrupt()
    parser = build_parser()
    a = parse_args(parser, argv)
    import logging

    logger = logging.getLogger("manyicl")
    level = logger.level
    _setup_logging(not a.quiet)
    try:
        return a.func(a)
    except ManyICLError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # e.g. `manyicl tasks list | head`
        sys.stderr.close()
        return 0
    finally:  # main() called from Python (tests, notebooks) leaves the caller's log level as it was
        logger.setLevel(level)


if __name__ == "__main__":
    sys.exit(main())
