"""One shape for "this input is wrong, here is where and why", shared by the notification modules.

A `Problem` names the field (a dotted path the HTTP layer can put into its
`details[].field`), a stable machine code, a human message, and for text
inputs the 0-based character position where the problem starts.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Problem:
    field: str
    code: str
    message: str
    position: int | None = None

    def __str__(self) -> str:
        where = f" (at position {self.position})" if self.position is not None else ""
        return f"{self.field}: {self.message}{where}"


class ProblemsError(ValueError):
    """Raised by constructors that refuse their input; carries every problem found, not only the first."""

    def __init__(self, problems: Sequence[Problem]) -> None:
        self.problems = tuple(problems)
        super().__init__("; ".join(str(p) for p in self.problems) or "invalid")
