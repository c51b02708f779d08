"""Helpers every stage shares: writing a file atomically, reporting a failed write,
clearing what killed runs left half-written, and printing a duration."""

from __future__ import annotations

import errno
import json
import math
import os
import re
import shlex
import shutil
import socket
import sys
import unicodedata
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from src.errors import DataError
from src.processes import is_running

WRITABLE = "a writable folder with free space"
LEADERBOARD_ROWS = 10  # trials a leaderboard shows: tune's printout and the report's table


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


def check_writable_folder(path: str | Path) -> None:
    """The DataError a write under path would raise, raised now (before hours of training):
    unless path is a folder this process may write in, or the nearest existing folder above
    it is (a file on the way, or a read-only folder, is named as writing would name it)."""
    with writing(path):  # exists() too: it raises for a folder on the way that is not ours
        existing = Path(path)
        while not existing.exists() and existing.parent != existing:
            existing = existing.parent
        if not existing.is_dir():
            raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), str(existing))
        # A file made and removed, not os.access: that answers from the mode bits, which is
        # wrong for root on an NFS share that maps root to nobody, and for ACLs.
        # A name of its own: one a killed check left, by a process of this pid, stays.
        probe = partial_path(existing / f"write-check-{os.urandom(4).hex()}")
        probe.touch(exist_ok=False)
        probe.unlink()


def partial_path(path: str | Path) -> Path:
    """The hidden name this process writes path under before renaming it into place:
    ``.partial-<pid>@<host>@<name>``, so that a later run can tell what a killed process
    left (remove_stale_partials) from what a live one, here or on another machine sharing
    the folder, is writing. A host name holds no "@": host gpu never takes gpu-2's files."""
    path = Path(path)
    return path.with_name(f".partial-{os.getpid()}@{socket.gethostname()}@{path.name}")


def remove_stale_partials(folder: str | Path) -> None:
    """Delete the partial files and folders in folder whose process, on this machine, has
    ended: what a killed run left half-written."""
    mine = re.compile(rf"\.partial-(\d+)@{re.escape(socket.gethostname())}@")
    for path in Path(folder).glob(".partial-*"):
        match = mine.match(path.name)
        if match is None or is_running(int(match.group(1))):
            continue
        if path.is_dir() and not path.is_symlink():  # a link: to the folder it names
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)


def write_atomically(path: str | Path, text: str | bytes) -> None:
    """Write text (UTF-8) or bytes to a partial file beside path, then os.replace it: never
    half a file. A failed write leaves no partial file and raises DataError naming path."""
    write_all_atomically({Path(path): text})


def _write_partials(partials: dict[Path, Path], texts: dict[Path, str | bytes]) -> None:
    """Each text (UTF-8) or bytes into the partial file of its path; a failed write is a
    DataError naming the path."""
    for path, partial in partials.items():
        with writing(path):
            if isinstance(texts[path], bytes):
                partial.write_bytes(texts[path])
            else:
                partial.write_text(texts[path], encoding="utf-8")


def write_all_atomically(texts: dict[Path, str | bytes]) -> None:
    """write_atomically for files that belong together: every partial file is written
    before any replaces its file, so a failed write (a full disk) leaves all the files as
    they were, never a new one beside an old one. Should a rename fail after that, the files
    it had created are taken back; one it had replaced stays new."""
    partials = {path: partial_path(path) for path in texts}
    created: list[Path] = []
    try:
        _write_partials(partials, texts)
        for path, partial in partials.items():
            existed = path.exists()
            with writing(path):
                os.replace(partial, path)
            if not existed:
                created.append(path)
    except BaseException:
        for path in (*partials.values(), *created):
            path.unlink(missing_ok=True)
        raise


def write_all_new(texts: dict[Path, str | bytes]) -> bool:
    """write_all_atomically for files that must not exist yet: each partial file is hard-
    linked to its name, which fails on a name taken, even by another process since it was
    checked. False, with nothing written, when a name was taken; a file system without hard
    links falls back to write_all_atomically over names that were free when checked."""
    if any(path.exists() for path in texts):
        return False
    partials = {path: partial_path(path) for path in texts}
    linked: list[Path] = []
    try:
        _write_partials(partials, texts)
        for path, partial in partials.items():
            try:
                os.link(partial, path)
            except FileExistsError:  # another run took it since the check: take none
                for done in linked:
                    done.unlink(missing_ok=True)
                return False
            except OSError:  # no hard links here (FAT, some network shares)
                for done in linked:
                    done.unlink(missing_ok=True)
                write_all_atomically(texts)
                return True
            linked.append(path)
        return True
    except BaseException:
        for path in linked:
            path.unlink(missing_ok=True)
        raise
    finally:
        for partial in partials.values():
            partial.unlink(missing_ok=True)


def numbered_names(name: str) -> Iterator[str]:
    """name, then name-2, name-3, ... name-999: the names a new run's file or folder tries
    in turn, so that no earlier run's is overwritten."""
    yield name
    for number in range(2, 1000):
        yield f"{name}-{number}"


def no_free_name(path: Path) -> DataError:
    """The error when every name numbered_names gives for path is taken."""
    return DataError("a free name", f"{path.name} and {path.name}-2 to -999 taken", file=path,
                     hint="move earlier runs away")


def command_line(module: str, argv: Sequence[str] | None) -> str:
    """The command that ran `module` with argv (the process's own arguments if None),
    as a run's records quote it."""
    given = sys.argv[1:] if argv is None else list(argv)
    return f"python -m {module} " + shlex.join(given)


def keras_verbosity() -> int:
    """Keras' verbose for a fit or a search: a progress bar on a terminal (1), else one line
    per epoch (2), which a log keeps readable."""
    return 1 if sys.stdout.isatty() else 2


def format_accuracy(share: float, decimals: int = 2) -> str:
    """share (0..1) as a percentage; below 1 never as 100% (41,999 right of 42,000 is
    99.99%, not 100.00%: only a run without errors reads 100%)."""
    text = f"{share:.{decimals}%}"
    if share < 1 and text.startswith("100"):
        return f"{100 - 10 ** -decimals:.{decimals}f}%"
    return text


def format_duration(seconds: float) -> str:
    """12s, 4m05s or 1h02m."""
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def is_number(value: object, minimum: float = -1e300) -> bool:
    """Whether a value read from JSON is a number (not a bool) from minimum to 1e300: not
    NaN, not infinite, and no integer too large for a float (JSON holds any)."""
    return type(value) in (int, float) and minimum <= value <= 1e300


def is_share(value: object, or_null: bool = False) -> bool:
    """Whether a value read from JSON is a number 0..1 (an accuracy, a score), or null where
    or_null."""
    return (or_null and value is None) or (is_number(value, 0) and value <= 1)


def is_count(value: object, minimum: int = 0) -> bool:
    """Whether a value read from JSON is an integer (not a bool) of at least minimum."""
    return type(value) is int and value >= minimum


def one_line(error: BaseException) -> str:
    """The exception as one line: its type, then its message with the line breaks gone."""
    return f"{type(error).__name__}: {' '.join(str(error).split())}"


def is_file(path: str | Path) -> bool:
    """Path.is_file() of a path a user gave, where a folder this user may not search or a
    name too long for the system is a DataError naming it: Python 3.11 raises those."""
    return _look(path, Path.is_file)


def is_dir(path: str | Path) -> bool:
    """Path.is_dir(), as is_file() treats a path it cannot look at."""
    return _look(path, Path.is_dir)


def _look(path: str | Path, test: Callable[[Path], bool]) -> bool:
    try:
        return test(Path(path))
    except OSError as error:
        raise DataError("a path this user can read", describe_os_error(error),
                        file=path) from None


def not_a_file(path: Path) -> str:
    """What stands where a file should be: a folder, nothing (a dangling link too), or
    something else (a device such as /dev/null, a pipe)."""
    if path.is_dir():
        return "a folder"
    return "something other than a file" if path.exists() else "no such file"


def read_json(path: str | Path, finite: bool = False) -> object:
    """The JSON in a UTF-8 file; ValueError for one that is not JSON, also for one nested
    past Python's recursion limit (which json raises as RecursionError) or holding an
    integer too large for a float (float() of it raises OverflowError). finite: NaN,
    Infinity and numbers past a float (1e400) are ValueError too, as for a file this
    package wrote, which ``json.dumps(allow_nan=False)`` could not write back otherwise."""
    options = {"parse_constant": _no_constant, "parse_float": _finite_float} if finite else {}
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"), parse_int=_float_sized_int,
                          **options)
    except RecursionError:
        raise ValueError("JSON nested deeper than Python's recursion limit") from None


def _no_constant(text: str) -> float:
    raise ValueError(f"{text}, which JSON does not hold")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text}, past what a float holds")
    return value


def _float_sized_int(text: str) -> int:
    if len(text.lstrip("-")) > 300:  # 1e300 and beyond: past what a float holds, near enough
        raise ValueError(f"an integer of {len(text.lstrip('-'))} digits")
    return int(text)


# Characters that break a line or a terminal: control characters, line and paragraph
# separators, and lone surrogates (Python's stand-in for a file name's byte that is not UTF-8).
LINE_BREAKERS = {"Cc", "Zl", "Zp", "Cs"}


def is_plain_text(text: str) -> bool:
    """Whether text prints on one line of any terminal (a no-break space is fine)."""
    return not any(unicodedata.category(char) in LINE_BREAKERS for char in text)


# What is_plain_text refuses, as error lines name it.
NOT_ONE_LINE = "a line break, control character or byte that is not UTF-8"


def is_one_line_path(text: str) -> bool:
    """Whether a path can stand in a report's line: is_plain_text, a tab allowed."""
    return is_plain_text(text.replace("\t", " "))


MOST_SHOWN = 40  # characters of a bad value an error line quotes


def shown(value: object) -> str:
    """A bad value as an error line quotes it: its repr, its first MOST_SHOWN characters
    only when longer (a megabyte-long cell made a megabyte-long message)."""
    text = str(value)
    if len(text) <= MOST_SHOWN:
        return repr(text)
    return f"{text[:MOST_SHOWN]!r}..."


def printable(text: str) -> str:
    """text as one line any terminal prints: a line break or other control character as its
    escape (\\n), a file name's byte that is not UTF-8 as the byte (\\xff)."""
    if is_plain_text(text):
        return text
    return "".join(_escaped(char) if unicodedata.category(char) in LINE_BREAKERS else char
                   for char in text)


def _escaped(char: str) -> str:
    if 0xDC80 <= ord(char) <= 0xDCFF:  # os.fsdecode's stand-in for the byte ord - 0xDC00
        return f"\\x{ord(char) - 0xDC00:02x}"
    return char.encode("unicode_escape").decode("ascii")
