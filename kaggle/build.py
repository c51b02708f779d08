"""Build the Kaggle kernel: ``python kaggle/build.py`` -> kaggle/build/, ready to push.

Kaggle uploads only the one code file that kernel-metadata.json names, so
the build writes that file as kaggle/entry.py with the src/ package packed
inside it (a base64 zip), next to a copy of kernel-metadata.json. Push it with
``kaggle kernels push -p kaggle/build``. The same sources give the same bytes.
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import os
import re
import sys
import textwrap
import zipfile
from collections.abc import Sequence
from pathlib import Path

KAGGLE_DIR = Path(__file__).resolve().parent
REPO_ROOT = KAGGLE_DIR.parent
PACKAGE_DIR = REPO_ROOT / "src"
METADATA = KAGGLE_DIR / "kernel-metadata.json"
ENTRY = KAGGLE_DIR / "entry.py"
PLACEHOLDER_LINE = ('PACKAGE_ZIP = ""  # the src/ package as a base64 zip, '
                    'written in by kaggle/build.py')
PLACEHOLDER_OWNER = "YOUR-KAGGLE-USERNAME"
CODE_FILE = re.compile(r"[\w-]+\.py")  # a file name in the build folder, no path


class BuildError(Exception):
    """Bad input to the build, as one line: '<file>: expected X, found Y'."""

    def __init__(self, file: Path, expected: str, found: str):
        name = str(file) if str(file).isprintable() else ascii(str(file))[1:-1]
        super().__init__(f"{name}: expected {expected}, found {found}")


def package_files(package_dir: Path = PACKAGE_DIR) -> list[Path]:
    """Every Python file of the package, sorted, without bytecode caches."""
    files = sorted(path for path in package_dir.rglob("*.py")
                   if path.is_file() and "__pycache__" not in path.parts)
    for path in files:
        if not path.name.isprintable():  # the zip holds names as UTF-8 text
            raise BuildError(path, "a file name in UTF-8 text", "other bytes")
    return files


def zip_package(package_dir: Path = PACKAGE_DIR) -> bytes:
    """The package as a zip whose names start with its folder name (src/...); reproducible."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in package_files(package_dir):
            name = path.relative_to(package_dir.parent).as_posix()
            info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            archive.writestr(info, path.read_bytes())
    return buffer.getvalue()


def render_script(entry_text: str, package_zip: bytes) -> str:
    """entry_text with its PACKAGE_ZIP placeholder replaced by the zip, base64 in short lines."""
    found = entry_text.count(PLACEHOLDER_LINE)
    if found != 1:
        raise BuildError(ENTRY, f"the line {PLACEHOLDER_LINE!r} once", f"it {found} times")
    lines = textwrap.wrap(base64.b64encode(package_zip).decode("ascii"), 100)
    packed = 'PACKAGE_ZIP = """\n' + "\n".join(lines) + '\n"""  # the src/ package, base64 zip'
    return entry_text.replace(PLACEHOLDER_LINE, packed)


def read_metadata(path: Path = METADATA) -> dict:
    """kernel-metadata.json, checked: a JSON object whose code_file is a plain .py file name
    (the build writes it into the build folder, never outside) and whose id is text."""
    try:
        metadata = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise BuildError(path, "kernel-metadata.json, a JSON object",
                         f"{type(error).__name__}: {' '.join(str(error).split())}") from None
    if not isinstance(metadata, dict):
        raise BuildError(path, "a JSON object", f"a JSON {type(metadata).__name__}")
    code_file = metadata.get("code_file")
    if not isinstance(code_file, str) or not CODE_FILE.fullmatch(code_file):
        raise BuildError(path, "a code_file like entry.py (letters, digits, - and _)",
                         repr(code_file))
    if not isinstance(metadata.get("id"), str):
        raise BuildError(path, 'an "id" like YOU/digit-recognizer-cnn-ensemble',
                         repr(metadata.get("id")))
    return metadata


def build(out_dir: Path, metadata_path: Path = METADATA) -> Path:
    """Write kernel-metadata.json and the self-contained kernel script into out_dir; return it.

    Both are made in memory first and each is written under a hidden name, then renamed
    into place, so a failure leaves no half-written file."""
    metadata = read_metadata(metadata_path)
    script = out_dir / metadata["code_file"]
    try:
        contents = {script: render_script(ENTRY.read_text(encoding="utf-8"), zip_package()),
                    out_dir / METADATA.name: metadata_path.read_text(encoding="utf-8")}
    except (OSError, UnicodeDecodeError) as error:  # a package file, the template or metadata
        where = Path(getattr(error, "filename", None) or ENTRY)
        raise BuildError(where, "a readable UTF-8 file",
                         getattr(error, "strerror", None) or type(error).__name__) from None
    if out_dir.exists() and not out_dir.is_dir():
        raise BuildError(out_dir, "a folder to build into", "a file")
    for path in contents:
        if path.is_dir():
            raise BuildError(path, "a file or nothing", "a folder")
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        for path, text in contents.items():
            partial = path.with_name(f".partial-{os.getpid()}-{path.name}")
            try:
                partial.write_text(text, encoding="utf-8")
                os.replace(partial, path)
            finally:
                partial.unlink(missing_ok=True)  # gone once renamed; a failed write's, removed
    except OSError as error:
        raise BuildError(Path(error.filename or out_dir), "a writable folder with free space",
                         error.strerror or type(error).__name__) from None
    return script


def main(argv: Sequence[str] | None = None) -> int:
    """Build the kernel folder and say how to push it; bad input is one error line, exit 2."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(KAGGLE_DIR / "build"),
                        help="the folder to write (default: kaggle/build)")
    given = parser.parse_args(argv).out
    out_dir = Path(given)
    try:
        if not given.strip():  # Path("") is the current folder
            raise BuildError(Path("--out"), "a folder for the build", repr(given))
        script = build(out_dir)
    except BuildError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"wrote {script} ({len(package_files())} files of src/, "
          f"{script.stat().st_size // 1024} KiB) and {out_dir / METADATA.name}")
    kernel_id = read_metadata()["id"]
    if kernel_id.startswith(PLACEHOLDER_OWNER + "/"):
        print(f"before pushing, put your Kaggle username in \"id\" of {METADATA} "
              f"(now {kernel_id!r}) and build again", file=sys.stderr)
    print(f"push it with: kaggle kernels push -p {out_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
