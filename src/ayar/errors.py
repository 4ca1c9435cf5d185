"""User-facing errors.

Every error a user can cause by their input (a recipe, a data file, a model
path) is raised as an :class:`AyarError`. The CLI prints its message on one
line and exits non-zero without a traceback; a traceback means a bug in ayar.
"""

from __future__ import annotations


class AyarError(Exception):
    """An error caused by the user's input, with a message that says what to do."""


class RecipeError(AyarError):
    """The recipe is invalid. ``problems`` holds one line per problem."""

    def __init__(self, source: str, problems: list[str]):
        self.source = source
        self.problems = problems
        lines = "\n".join(f"  {p}" for p in problems)
        noun = "problem" if len(problems) == 1 else "problems"
        super().__init__(f"{source}: {len(problems)} {noun} in the recipe:\n{lines}")


class DataError(AyarError):
    """A data record is unusable. Names the file, the line (1-based) and the reason."""

    def __init__(self, path: str, line: int | None, reason: str, hint: str = ""):
        self.path = path
        self.line = line
        self.reason = reason
        where = f"{path}:{line}" if line is not None else str(path)
        message = f"{where}: {reason}"
        if hint:
            message += f" ({hint})"
        super().__init__(message)
