"""The one exception type for bad input, and how it reads on one line."""

from __future__ import annotations

from pathlib import Path


class DataError(ValueError):
    """Bad input from the user: a data file, a saved model, or a flag value.

    Reads as ``<file>:<line>: <column>: expected <expected>, found <found>``;
    the parts that do not apply are left out.
    """

    def __init__(
        self,
        expected: str,
        found: str,
        file: str | Path | None = None,
        line: int | None = None,
        column: str | None = None,
        hint: str | None = None,
    ):
        self.expected = expected
        self.found = found
        self.file = None if file is None else str(file)
        self.line = line
        self.column = column
        self.hint = hint
        super().__init__(str(self))

    def __reduce__(self):
        # Rebuilt from its parts, not from its message: a worker process sends it back.
        return type(self), (self.expected, self.found, self.file, self.line, self.column,
                            self.hint)

    def with_hint(self, hint: str | None) -> DataError:
        """The same error with hint in place of its own."""
        return type(self)(self.expected, self.found, self.file, self.line, self.column, hint)

    def __str__(self) -> str:
        where = ""
        if self.file is not None:
            where = self.file if self.line is None else f"{self.file}:{self.line}"
            where += ": "
        if self.column is not None:
            where += f"{self.column}: "
        message = f"{where}expected {self.expected}, found {self.found}"
        return f"{message} ({self.hint})" if self.hint else message


class RunFailed(RuntimeError):
    """A run stopped by something outside its input (a worker process killed): one
    ``error:`` line and exit code 1; what it saved stays for a rerun."""


def ctrl_c_inside(error: BaseException) -> KeyboardInterrupt | None:
    """The Ctrl-C a SystemError stands for, or None: Python reports a KeyboardInterrupt
    raised inside one of TensorFlow's C calls as a SystemError ("returned a result with
    an exception set") caused by it, which an `except Exception` would swallow."""
    cause = error.__cause__
    interrupted = isinstance(error, SystemError) and isinstance(cause, KeyboardInterrupt)
    return cause if interrupted else None
