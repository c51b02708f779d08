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


def package_files(package_dir: Path = PACKAGE_DIR) -> list[Path]:
    """Every file of the package, sorted, without bytecode caches."""
    return sorted(path for path in package_dir.rglob("*")
                  if path.is_file() and "__pycache__" not in path.parts)


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
    if entry_text.count(PLACEHOLDER_LINE) != 1:
        raise ValueError(f"{ENTRY} must hold the line {PLACEHOLDER_LINE!r} exactly once")
    lines = textwrap.wrap(base64.b64encode(package_zip).decode("ascii"), 100)
    packed = 'PACKAGE_ZIP = """\n' + "\n".join(lines) + '\n"""  # the src/ package, base64 zip'
    return entry_text.replace(PLACEHOLDER_LINE, packed)


def build(out_dir: Path) -> Path:
    """Write kernel-metadata.json and the self-contained kernel script into out_dir; return it."""
    metadata = json.loads(METADATA.read_text())
    out_dir.mkdir(parents=True, exist_ok=True)
    script = out_dir / metadata["code_file"]
    script.write_text(render_script(ENTRY.read_text(), zip_package()))
    (out_dir / METADATA.name).write_text(METADATA.read_text())
    return script


def main(argv: Sequence[str] | None = None) -> int:
    """Build the kernel folder and say how to push it."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=KAGGLE_DIR / "build",
                        help="the folder to write (default: kaggle/build)")
    out_dir = parser.parse_args(argv).out
    script = build(out_dir)
    print(f"wrote {script} ({len(package_files())} files of src/, "
          f"{script.stat().st_size // 1024} KiB) and {out_dir / METADATA.name}")
    kernel_id = json.loads(METADATA.read_text())["id"]
    if kernel_id.startswith(PLACEHOLDER_OWNER + "/"):
        print(f"before pushing, put your Kaggle username in \"id\" of {METADATA} "
              f"(now {kernel_id!r}) and build again", file=sys.stderr)
    print(f"push it with: kaggle kernels push -p {out_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
