"""The ``manyicl`` command line. Each subcommand loads a typed config and calls one workflow function.

Layout: ``parser`` (the subcommands and their examples), ``workflows`` (train, eval, experiment, ...),
``tasks_cmds`` (data and task tools), ``config_cmds``, and ``common`` (logging, config loading, tables).
"""

from __future__ import annotations

import sys

from ..errors import ManyICLError
from .common import SUMMARY_HEADER, TABLE_WIDTH, _setup_logging, _split_config_args, summary_table_text
from .parser import EXAMPLES, build_parser, parse_args

__all__ = [
    "EXAMPLES",
    "SUMMARY_HEADER",
    "TABLE_WIDTH",
    "_split_config_args",
    "build_parser",
    "main",
    "parse_args",
    "summary_table_text",
]


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    a = parse_args(parser, argv)
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


if __name__ == "__main__":
    sys.exit(main())
