"""Helpers every stage shares: writing a file atomically, reporting a failed write, and
printing a duration."""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from src.errors import DataError

WRITABLE = "a writable folder with free space"


def describe_os_error(error: OSError) -> str:
    """'No space left on device (ENOSPC)': what an OSError says, on one line."""
    if error.errno in errno.errorcode and error.strerror:
        return f"{error.strerror} ({errno.errorcode[error.errno]})"
    return " ".join(str(error).split()) or type(error).__name__


@contextmanager
def writing(path: str | Path) -> Iterator[None]:
    """Report an OSError raised while writing path (a full disk, a read-only folder) as a
    DataError naming path: one line, exit code 2."""
    try:
        yield
    except OSError as error:
        raise DataError(WRITABLE, describe_os_error(error), file=path) from None


def write_atomically(path: str | Path, text: str) -> None:
    """Write text to a temporary file beside path, then os.replace it: never half a file.
    A failed write leaves no temporary file and raises DataError naming path."""
    path = Path(path)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with writing(path):
        try:
            temporary.write_text(text, encoding="utf-8")
            os.replace(temporary, path)
        except BaseException:
            temporary.unlink(missing_ok=True)
            raise


def format_duration(seconds: float) -> str:
    """12s, 4m05s or 1h02m."""
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
