"""User-facing errors.

Every check that can fail on user input collects *all* of its problems and raises once, so a user
fixes a broken config or task file in one round instead of one error per run. The CLI prints these
without a traceback; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Problem:
    """One thing wrong with user input: where it is and how to fix it."""

    where: str
    """File (and line) or config key, e.g. ``tasks/foo/train.jsonl:12`` or ``data.max_length``."""
    message: str
    """What is wrong and what to do about it."""
    field: str | None = None
    """Field inside the record, when there is one."""
    level: str = "error"
    """'error' (the input cannot be used) or 'warning' (usable, but probably not what was meant)."""

    def __str__(self) -> str:
        field = f" [{self.field}]" if self.field else ""
        tag = "warning: " if self.level == "warning" else ""
        return f"{tag}{self.where}{field}: {self.message}"


class ManyICLError(Exception):
    """Base class for errors caused by user input; the CLI prints them without a traceback."""


class ProblemsError(ManyICLError):
    """Several problems found at once."""

    title = "invalid input"

    def __init__(self, problems: list[Problem], title: str | None = None, limit: int = 50):
        self.problems = list(problems)
        if title:
            self.title = title
        shown = [f"  - {p}" for p in self.problems[:limit]]
        if len(self.problems) > limit:
            shown.append(f"  ... and {len(self.problems) - limit} more")
        n = len(self.problems)
        super().__init__(f"{self.title}: {n} problem{'s' if n != 1 else ''}\n" + "\n".join(shown))

    @classmethod
    def single(cls, where: str, message: str, field: str | None = None) -> ProblemsError:
        return cls([Problem(where, message, field)])


class ConfigError(ProblemsError):
    title = "invalid config"


class TaskFormatError(ProblemsError):
    title = "invalid task data"


class Collector:
    """Collects problems, then raises them together."""

    def __init__(self) -> None:
        self.problems: list[Problem] = []

    def add(self, where: str, message: str, field: str | None = None) -> None:
        self.problems.append(Problem(where, message, field))

    def warn(self, where: str, message: str, field: str | None = None) -> None:
        self.problems.append(Problem(where, message, field, level="warning"))

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.level == "error"]

    @property
    def warnings(self) -> list[Problem]:
        return [p for p in self.problems if p.level == "warning"]

    def __bool__(self) -> bool:
        return bool(self.errors)

    def raise_if_any(self, cls: type[ProblemsError] = ProblemsError, title: str | None = None) -> None:
        """Raise with every problem (warnings included, for context) when there is at least one error."""
        if self.errors:
            raise cls(self.errors + self.warnings, title=title)
