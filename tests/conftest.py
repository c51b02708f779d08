"""Shared fixtures: handwritten data in Kaggle and Keras formats, and the real files."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from tests.fixtures import write_kaggle_csvs, write_mnist_npz  # noqa: E402
from tests.kaggle_stand_in import StandInKaggle, competition_zip, stand_in_api  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[1]
REAL_DATA_DIR = Path(os.environ.get("DIGITS_DATA_DIR",
                                    REPO_ROOT.parent / "shared" / "data" / "digit-recognizer"))


@pytest.fixture(scope="session")
def kaggle_dir_readonly(tmp_path_factory) -> Path:
    """Kaggle-format CSVs of real handwriting; shared by tests, so never modify it."""
    return write_kaggle_csvs(tmp_path_factory.mktemp("kaggle-data"))


@pytest.fixture
def kaggle_dir(kaggle_dir_readonly, tmp_path) -> Path:
    """A private copy of the Kaggle-format fixture that a test may change."""
    return Path(shutil.copytree(kaggle_dir_readonly, tmp_path / "digit-recognizer"))


@pytest.fixture(scope="session")
def mnist_npz(tmp_path_factory) -> Path:
    """A stand-in for the Keras mnist.npz download (same keys and dtypes)."""
    return write_mnist_npz(tmp_path_factory.mktemp("keras") / "mnist.npz")


@pytest.fixture(scope="session")
def real_data_dir() -> Path:
    """The competition files in ../shared; tests using it skip when it is absent."""
    if not (REAL_DATA_DIR / "train.csv").is_file():
        pytest.skip(f"competition data not found at {REAL_DATA_DIR}")
    return REAL_DATA_DIR


@pytest.fixture(autouse=True)
def _no_data_dir_from_environment(monkeypatch):
    """Tests choose their data explicitly; a developer's $DIGITS_DATA_DIR must not leak in."""
    monkeypatch.delenv("DIGITS_DATA_DIR", raising=False)


@pytest.fixture(autouse=True)
def _float32_after_each_test():
    """python -m src.tune and src.submit set Keras' global dtype policy; a test's must not leak."""
    yield
    import keras

    keras.mixed_precision.set_global_policy("float32")


@pytest.fixture
def kaggle_home(tmp_path, monkeypatch):
    """The real KaggleApi class, in a home with no credentials and no KAGGLE_* variables."""
    module = pytest.importorskip("kaggle.api.kaggle_api_extended")
    for name in [name for name in os.environ if name.startswith("KAGGLE_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setattr(module.KaggleApi, "config", str(tmp_path / "home/.kaggle/kaggle.json"))
    return module.KaggleApi


@pytest.fixture(scope="session")
def competition_zip_readonly(kaggle_dir_readonly) -> bytes:
    """The fixture CSVs zipped as Kaggle serves the competition's files."""
    return competition_zip(kaggle_dir_readonly)


@pytest.fixture
def kaggle(kaggle_home, competition_zip_readonly, monkeypatch) -> StandInKaggle:
    """A stand-in Kaggle (tests/kaggle_stand_in.py) behind the kaggle package's KaggleApi,
    serving the fixture CSVs as the competition's zip."""
    stand_in = StandInKaggle(competition_zip_readonly)
    monkeypatch.setattr(sys.modules[kaggle_home.__module__], "KaggleApi",
                        stand_in_api(kaggle_home, stand_in))
    return stand_in
