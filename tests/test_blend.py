"""python -m src.blend: finished runs averaged into a new run folder, and the probability
files of src.probabilities that it reads."""

from __future__ import annotations

import gzip
import json
import shlex
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from src import blend, probabilities, runs, submit
from src.config import Config, run_cli
from src.data import load_digits, load_fold_digits, run_data_fingerprints
from src.errors import DataError
from tests.fixtures import TEST_SIZE, write_run


def _labels(data_dir) -> np.ndarray:
    return pd.read_csv(data_dir / "train.csv", usecols=["label"])["label"].to_numpy()


def _random_probs(rows: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).dirichlet(np.ones(10), size=rows)


def _run_with_probabilities(data_dir, submissions_dir, name: str, seed: int, minutes=10.0,
                            search_holdout=None):
    """A run folder (tests.fixtures.write_run) with random probability files for the data."""
    run_dir = write_run(submissions_dir, name, correct=1000, total=len(_labels(data_dir)),
                        minutes=minutes)
    probabilities.write_probabilities(
        run_dir, _labels(data_dir), _random_probs(len(_labels(data_dir)), seed),
        np.arange(1, TEST_SIZE + 1), _random_probs(TEST_SIZE, seed + 100), search_holdout)
    return run_dir


def _oof(run_dir, labels):
    return probabilities.read_oof(run_dir, labels)[0]


def _blend_args(data_dir, tmp_path, *run_dirs):
    return [*map(str, run_dirs), "--data-dir", str(data_dir),
            "--submissions-dir", str(tmp_path / "blends")]


def _blends(tmp_path):
    folder = tmp_path / "blends"
    return [] if not folder.is_dir() else sorted(
        path for path in folder.iterdir() if not path.is_symlink() and path.is_dir())


def test_runs_of_one_name_get_names_of_their_own():
    folders = [Path("a/R"), Path("b/R-2"), Path("c/R"), Path("d/R")]
    assert blend._names(folders) == ["R", "R-2", "R-3", "R-4"]


def test_probability_files_round_trip(kaggle_dir_readonly, tmp_path):
    labels = _labels(kaggle_dir_readonly)
    oof, test = _random_probs(len(labels), 1), _random_probs(TEST_SIZE, 2)
    probabilities.write_probabilities(tmp_path, labels, oof, np.arange(1, TEST_SIZE + 1), test)
    assert probabilities.read_oof(tmp_path, labels)[1] is None  # no search
    np.testing.assert_allclose(_oof(tmp_path, labels), oof, rtol=1e-6)
    np.testing.assert_allclose(probabilities.read_test(tmp_path, np.arange(1, TEST_SIZE + 1)),
                               test, rtol=1e-6)
    frame = pd.read_csv(tmp_path / probabilities.OOF_FILE)
    assert list(frame.columns) == probabilities.OOF_COLUMNS
    assert frame["row"].tolist() == list(range(len(labels)))


def test_a_subsample_runs_rows_are_its_images_rows_in_train_csv(kaggle_dir_readonly, tmp_path):
    """With --train-samples the OOF file's row column points each image back at train.csv."""
    config = Config(data_dir=str(kaggle_dir_readonly), train_samples=100, folds=3)
    digits = load_fold_digits(config)
    assert len(digits.y_train) == 100 and len(set(digits.train_rows)) == 100
    probs = _random_probs(100, 3)
    probabilities.write_probabilities(tmp_path, digits.y_train, probs, digits.test_ids,
                                      _random_probs(len(digits.test_ids), 4), None,
                                      digits.train_rows)
    frame = pd.read_csv(tmp_path / probabilities.OOF_FILE)
    full = load_digits(Config(data_dir=str(kaggle_dir_readonly)))
    assert frame["row"].tolist() == digits.train_rows.tolist()
    np.testing.assert_array_equal(full.y_train[frame["row"]], frame["label"])
    np.testing.assert_array_equal(full.x_train[frame["row"]], digits.x_train)
    every = load_fold_digits(Config(data_dir=str(kaggle_dir_readonly))).train_rows
    np.testing.assert_array_equal(every, np.arange(len(full.y_train)))  # all, in file order


def test_a_blend_is_also_scored_without_any_runs_search_hold_out(kaggle_dir_readonly,
                                                                   tmp_path, capsys):
    labels = _labels(kaggle_dir_readonly)
    held_a, held_b = np.zeros(len(labels), bool), np.zeros(len(labels), bool)
    held_a[:100], held_b[50:200] = True, True  # two searches' hold-outs, overlapping
    first = _run_with_probabilities(kaggle_dir_readonly, tmp_path / "a", "run-a", 1,
                                    search_holdout=held_a)
    second = _run_with_probabilities(kaggle_dir_readonly, tmp_path / "b", "run-b", 2)
    third = _run_with_probabilities(kaggle_dir_readonly, tmp_path / "c", "run-c", 3,
                                    search_holdout=held_b)
    np.testing.assert_array_equal(probabilities.read_oof(first, labels)[1], held_a)
    assert run_cli(blend.main, _blend_args(kaggle_dir_readonly, tmp_path, first, second,
                                           third)) == 0
    [blended] = _blends(tmp_path)
    oof, held = probabilities.read_oof(blended, labels)
    np.testing.assert_array_equal(held, held_a | held_b)
    outside = json.loads((blended / "metrics.json").read_text())[
        "ensemble_outside_search_holdout"]
    assert (outside["left_out"], outside["total"]) == (200, len(labels) - 200)
    assert outside["errors"] == int(np.sum(oof[200:].argmax(axis=1) != labels[200:]))
    out = capsys.readouterr().out
    assert "without the 200 images the search chose the members on" in out
    # Its run-by-run comparisons leave them out too, as src.compare does.
    for name in ("run-a", "run-b", "run-c"):
        pair = out[out.index(f"the blend (run A) against {name} (run B):"):]
        assert pair.splitlines()[4] == "without the 200 images a search chose a run's members on:"
        assert pair.splitlines()[5].startswith(f"on {len(labels) - 200} images: run A ")


def test_a_search_holdout_flag_other_than_0_or_1_is_one_line(kaggle_dir_readonly, tmp_path):
    labels = _labels(kaggle_dir_readonly)
    run_dir = _run_with_probabilities(kaggle_dir_readonly, tmp_path, "run", 1,
                                      search_holdout=np.zeros(len(labels), bool))
    path = run_dir / probabilities.OOF_FILE
    frame = pd.read_csv(path)
    frame.loc[3, "search_holdout"] = 2
    path.write_bytes(probabilities._gzipped_csv(frame))
    with pytest.raises(DataError) as caught:
        probabilities.read_oof(run_dir, labels)
    assert str(caught.value) == f"{path}:5: search_holdout: expected 0 or 1, found '2'"


def _record_data(run_dir, **hashes):
    """Write run_info.data into a run's metrics.json, as src.submit records it."""
    path = run_dir / "metrics.json"
    metrics = json.loads(path.read_text())
    metrics["run_info"]["data"] = hashes
    path.write_text(json.dumps(metrics))


def test_compare_reads_a_latest_link_once_though_a_run_is_published_meanwhile(
        kaggle_dir_readonly, tmp_path, monkeypatch, capsys):
    from src import compare

    first = _run_with_probabilities(kaggle_dir_readonly, tmp_path / "a", "run-a", 1)
    older = _run_with_probabilities(kaggle_dir_readonly, tmp_path / "b", "run-b", 2)
    newer = _run_with_probabilities(kaggle_dir_readonly, tmp_path / "b", "run-c", 3)
    loaded = run_data_fingerprints(load_digits(Config(data_dir=str(kaggle_dir_readonly))))
    for run_dir in (first, older):
        _record_data(run_dir, **loaded)
    _record_data(newer, train="0123456789ab", test=loaded["test"])  # a run of other images
    latest = tmp_path / "b" / "latest"
    latest.symlink_to(older.name)
    reading = compare.read_oof

    def read_then_publish(folder, labels):  # a submit publishes its run as compare reads
        probabilities_and_holdout = reading(folder, labels)
        latest.unlink()
        latest.symlink_to(newer.name)
        return probabilities_and_holdout

    monkeypatch.setattr(compare, "read_oof", read_then_publish)
    argv = [str(first), str(latest), "--data-dir", str(kaggle_dir_readonly)]
    assert run_cli(compare.main, argv) == 0  # it checked older's data, not newer's
    assert f"run B: {older}\n" in capsys.readouterr().out


def test_a_run_of_other_images_is_refused_by_blend_and_compare(kaggle_dir_readonly, tmp_path,
                                                               capsys):
    """A train.csv shuffled within each digit passes every check of rows and labels: its
    OOF rows were averaged with other images' without a word."""
    from src import compare

    first = _run_with_probabilities(kaggle_dir_readonly, tmp_path / "a", "run-a", 1)
    second = _run_with_probabilities(kaggle_dir_readonly, tmp_path / "b", "run-b", 2)
    loaded = run_data_fingerprints(load_digits(Config(data_dir=str(kaggle_dir_readonly))))
    _record_data(first, **loaded)
    _record_data(second, train="0123456789ab", test=loaded["test"])
    args = _blend_args(kaggle_dir_readonly, tmp_path, first, second)
    assert run_cli(blend.main, args) == 2
    assert capsys.readouterr().err == (
        f"error: {second / 'metrics.json'}: run_info.data.train: expected a run of the same "
        f"training images as the data loaded here (hash {loaded['train']}), found one of "
        "other training images (hash 0123456789ab)\n")
    assert _blends(tmp_path) == []
    compared = [str(first), str(second), "--data-dir", str(kaggle_dir_readonly)]
    assert run_cli(compare.main, compared) == 2
    assert capsys.readouterr().err == (
        f"error: {second / 'metrics.json'}: run_info.data.train: expected a run of the same "
        f"training images as {first} (hash {loaded['train']}), found one of other training "
        "images (hash 0123456789ab)\n")
    # Another test set: compare pairs OOF rows only; blend would average other test rows.
    _record_data(second, train=loaded["train"], test="0123456789ab")
    assert run_cli(compare.main, compared) == 0
    capsys.readouterr()
    assert run_cli(blend.main, args) == 2
    assert "run_info.data.test: expected a run of the same test images" in capsys.readouterr().err
    path = second / "metrics.json"
    _record_data(second, **loaded)
    damaged = path.read_text().replace(json.dumps(loaded), '"0123456789ab"')
    path.write_text(damaged)  # a damaged record would switch the check off
    assert run_cli(blend.main, args) == 2
    assert capsys.readouterr().err == (f"error: {path}: run_info.data: expected an object, "
                                       'found "0123456789ab"\n')
    _record_data(second, **loaded)  # the same data: blended, and the blend records it
    assert run_cli(blend.main, args) == 0
    [blended] = _blends(tmp_path)
    assert json.loads((blended / "metrics.json").read_text())["run_info"]["data"] == loaded


def test_blend_is_the_plain_mean_and_lists_in_the_ledger(kaggle_dir_readonly, tmp_path, capsys):
    first = _run_with_probabilities(kaggle_dir_readonly, tmp_path / "a's runs", "run-a", 1,
                                    minutes=10)  # a folder name the shell must quote
    second = _run_with_probabilities(kaggle_dir_readonly, tmp_path / "b", "run-b", 2, minutes=20)
    args = _blend_args(kaggle_dir_readonly, tmp_path, first, second)
    assert run_cli(blend.main, args) == 0
    [blended] = _blends(tmp_path)
    assert blended.name.endswith("-blend-kaggle")
    labels = _labels(kaggle_dir_readonly)
    mean = (_oof(first, labels) + _oof(second, labels)) / 2
    np.testing.assert_allclose(_oof(blended, labels), mean, rtol=1e-5)
    metrics = json.loads((blended / "metrics.json").read_text())
    accuracy = float(np.mean(mean.argmax(axis=1) == labels))
    assert metrics["ensemble"]["accuracy"] == pytest.approx(accuracy)
    assert list(metrics["models"]) == ["run-a", "run-b"]
    # The recorded command reruns the blend: every argument quoted where it needs to be.
    assert shlex.split(metrics["run_info"]["command"]) == ["python", "-m", "src.blend", *args]
    assert "a blend averages finished runs" in (blended / "report.md").read_text()
    out = capsys.readouterr().out
    assert f"ensemble OOF accuracy {accuracy:.4%}" in out
    right = {name: _oof(run, labels).argmax(axis=1) == labels
             for name, run in (("run-a", first), ("run-b", second))}
    blend_right = mean.argmax(axis=1) == labels
    for name in ("run-a", "run-b"):  # in the order given, each with its own counts
        only_blend = int(np.sum(blend_right & ~right[name]))
        only_run = int(np.sum(~blend_right & right[name]))
        assert (f"the blend (run A) against {name} (run B):\n"
                f"on {len(labels)} images: ") in out
        assert f"only run A right on {only_blend}, only run B right on {only_run}\n" in out
    assert out.index("against run-a (run B)") < out.index("against run-b (run B)")
    test_mean = (probabilities.read_test(first, np.arange(1, TEST_SIZE + 1))
                 + probabilities.read_test(second, np.arange(1, TEST_SIZE + 1))) / 2
    submission = pd.read_csv(blended / "submission.csv")
    assert submission["Label"].tolist() == test_mean.argmax(axis=1).tolist()
    # Its minutes in the ledger are its runs' and its own, and an upload names it a blend.
    [row] = runs.ledger(tmp_path / "blends").to_dict("records")
    assert row["profile"] == "blend" and 30 <= row["minutes"] < 31
    assert submit._default_message(blended, metrics).startswith("blend of 2 runs, OOF ")


@pytest.mark.parametrize("damage, message", [
    (lambda path: path.unlink(), "oof.csv.gz: expected oof.csv.gz, which python -m src.submit "
     "writes in a run folder, found no such file (runs older"),
    (lambda path: (path.unlink(), path.mkdir()), "oof.csv.gz: expected oof.csv.gz, which "
     "python -m src.submit writes in a run folder, found a folder"),
    (lambda path: _replace_cell(path, 5, "p3", "abc"),
     "oof.csv.gz:7: p3: expected a probability 0..1, found 'abc'"),
    (lambda path: _replace_cell(path, 2, "p0", "1.5"),
     "oof.csv.gz:4: p0: expected a probability 0..1, found '1.5'"),
    (lambda path: _replace_cell(path, 9, "label", "11"),
     "oof.csv.gz:11: label: expected "),
    # pandas skipped a blank line: the file passed, and later lines were named one short
    (lambda path: _insert_blank_line(path, 4),
     "oof.csv.gz:4: expected 12 values, found a blank line"),
    (lambda path: path.write_bytes(gzip.compress(b"row,label,p0\n0,1,1\n")),
     "oof.csv.gz:1: expected columns row,label,p0,"),
    (lambda path: path.write_bytes(b"not gzip"), "oof.csv.gz"),
    # a run's metrics.json: the blend sums its minutes and lists its score
    (lambda path: _edit_metrics(path, "timings", {"total": float("nan")}),
     "metrics.json: expected the metrics.json of python -m src.submit, found ValueError: NaN"),
    (lambda path: _edit_metrics(path, "timings", {"total": -5}),
     "metrics.json: timings.total: expected a number of seconds >= 0, found -5"),
    (lambda path: _edit_metrics(path, "ensemble", {"accuracy": "0.5"}),
     "metrics.json: ensemble.accuracy: expected a share 0..1, found \"0.5\""),
])
def test_a_damaged_run_file_is_one_line_exit_2_and_writes_nothing(
        kaggle_dir_readonly, tmp_path, capsys, damage, message):
    first = _run_with_probabilities(kaggle_dir_readonly, tmp_path / "a", "run-a", 1)
    second = _run_with_probabilities(kaggle_dir_readonly, tmp_path / "b", "run-b", 2)
    damage(second / probabilities.OOF_FILE)
    assert run_cli(blend.main, _blend_args(kaggle_dir_readonly, tmp_path, first, second)) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and len(err.splitlines()) == 1
    assert message in err and str(second) in err
    assert _blends(tmp_path) == []


def test_a_row_too_long_names_the_header_s_count(kaggle_dir_readonly, tmp_path, capsys):
    """With its search_holdout column an oof.csv.gz has 13 columns: a row of 14 is one too
    many, not two (the message counted the 12 columns every oof.csv.gz has)."""
    first = _run_with_probabilities(kaggle_dir_readonly, tmp_path / "a", "run-a", 1)
    held = np.zeros(len(_labels(kaggle_dir_readonly)), dtype=bool)
    held[:10] = True
    second = _run_with_probabilities(kaggle_dir_readonly, tmp_path / "b", "run-b", 2,
                                     search_holdout=held)
    path = second / probabilities.OOF_FILE
    lines = gzip.decompress(path.read_bytes()).decode().splitlines()
    assert len(lines[0].split(",")) == 13
    lines[4] += ",0"
    path.write_bytes(gzip.compress(("\n".join(lines) + "\n").encode()))
    assert run_cli(blend.main, _blend_args(kaggle_dir_readonly, tmp_path, first, second)) == 2
    assert capsys.readouterr().err == f"error: {path}:5: expected 13 values, found 14\n"


def _edit_metrics(oof_path, key: str, value) -> None:
    """Set a top-level field of the metrics.json beside oof_path (NaN is written as NaN)."""
    path = oof_path.parent / "metrics.json"
    metrics = json.loads(path.read_text())
    metrics[key] = value
    path.write_text(json.dumps(metrics))


def _insert_blank_line(path, line: int) -> None:
    lines = gzip.decompress(path.read_bytes()).split(b"\n")
    path.write_bytes(gzip.compress(b"\n".join([*lines[:line - 1], b"", *lines[line - 1:]])))


def _replace_cell(path, row: int, column: str, value: str) -> None:
    frame = pd.read_csv(path, dtype=str)
    frame.loc[row, column] = value
    path.write_bytes(gzip.compress(frame.to_csv(index=False).encode()))


def test_runs_of_other_data_are_refused(kaggle_dir_readonly, tmp_path, capsys):
    first = _run_with_probabilities(kaggle_dir_readonly, tmp_path / "a", "run-a", 1)
    second = _run_with_probabilities(kaggle_dir_readonly, tmp_path / "b", "run-b", 2)
    labels = _labels(kaggle_dir_readonly)[:-5]  # a run on a subsample (--train-samples)
    probabilities.write_probabilities(second, labels, _random_probs(len(labels), 3),
                                      np.arange(1, TEST_SIZE + 1), _random_probs(TEST_SIZE, 4))
    # as src.submit records a subsample's: the row check's words fit it, and come first
    _record_data(second, train="0123456789ab", test="0123456789ab")
    assert run_cli(blend.main, _blend_args(kaggle_dir_readonly, tmp_path, first, second)) == 2
    err = capsys.readouterr().err
    assert f"expected {len(labels) + 5} rows, one per training image, found {len(labels)}" in err
    assert err.rstrip().endswith("(is it a run on other data, or on a --train-samples subset? "
                                 "give the --source and --data-dir it ran on; a subset's runs "
                                 "are neither blended nor compared)") and err.count("\n") == 1


@pytest.mark.parametrize("how, message", [
    ("one", "RUN: expected at least two run folders to blend, found 1"),
    ("twice", "RUN: expected different run folders"),
    ("missing", "expected a run folder of python -m src.submit, found no such folder"),
    ("a file", "metrics.json: expected a run folder of python -m src.submit, found a file"),
    # its name went into the figures' titles, which matplotlib refused (named through a
    # link: given as it is, argparse refuses it)
    ("not UTF-8", "link: expected a run folder named in text on one line, found a line "
                  "break, control character or byte that is not UTF-8"),
])
def test_bad_run_arguments_are_one_line_exit_2(kaggle_dir_readonly, tmp_path, capsys, how,
                                               message):
    first = _run_with_probabilities(kaggle_dir_readonly, tmp_path / "a", "run-a", 1)
    odd = tmp_path / "a" / "run-a\udcff"
    given = {"one": [first], "twice": [first, tmp_path / "a" / ".." / "a" / "run-a"],
             "missing": [first, tmp_path / "nowhere"],
             "not UTF-8": [first, tmp_path / "a" / "link"],
             "a file": [first, first / "metrics.json"]}[how]
    if how == "not UTF-8":
        shutil.copytree(first, odd)
        (tmp_path / "a" / "link").symlink_to(odd)
    assert run_cli(blend.main, _blend_args(kaggle_dir_readonly, tmp_path, *given)) == 2
    assert message in capsys.readouterr().err
    assert _blends(tmp_path) == []


def test_a_run_given_twice_in_any_guise_is_refused(kaggle_dir_readonly, tmp_path, capsys):
    # Blended beside a blend that holds it, or beside a copy of its folder, a run counted
    # twice: the mean was no longer the plain mean, and its minutes were summed twice.
    first = _run_with_probabilities(kaggle_dir_readonly, tmp_path / "a", "run-a", 1)
    second = _run_with_probabilities(kaggle_dir_readonly, tmp_path / "b", "run-b", 2)
    assert run_cli(blend.main, _blend_args(kaggle_dir_readonly, tmp_path, first, second)) == 0
    [blended] = _blends(tmp_path)
    runs = json.loads((blended / "metrics.json").read_text())["run_info"]["runs"]
    assert runs["run-a"]["folder"] == str(first.resolve())  # not as typed: a link moves
    (tmp_path / "a" / "latest").symlink_to("run-a")
    copy = Path(shutil.copytree(first, tmp_path / "copy" / "run-a"))
    moved = Path(shutil.copytree(first, tmp_path / "moved" / "run-a"))
    capsys.readouterr()
    inside = "runs that are not already in a blend given"
    for given, found in (
            ([tmp_path / "a" / "latest", blended],
             f"{inside}, found {first.resolve()}, which the blend {blended} holds"),
            ([blended, moved], f"{inside}, found {moved}, which the blend {blended} holds"),
            ([first, second, copy], f"runs that differ, found {first} and {copy} with the same "
                                    "OOF probabilities, copies of one run")):
        assert run_cli(blend.main, _blend_args(kaggle_dir_readonly, tmp_path, *given)) == 2
        assert capsys.readouterr().err == f"error: RUN: expected {found}\n"
    assert _blends(tmp_path) == [blended]


def test_a_latest_link_is_followed_once(kaggle_dir_readonly, tmp_path, monkeypatch, capsys):
    """A run published while the blend reads moves `latest`: every file of a run comes from
    the folder the link named when the blend began, not OOF from one run, test from another."""
    first = _run_with_probabilities(kaggle_dir_readonly, tmp_path / "a", "run-a", 1)
    later = _run_with_probabilities(kaggle_dir_readonly, tmp_path / "a", "run-c", 3)
    second = _run_with_probabilities(kaggle_dir_readonly, tmp_path / "b", "run-b", 2)
    latest = tmp_path / "a" / "latest"
    latest.symlink_to("run-a")
    read_from, read_test = [], blend.read_test

    def publish_meanwhile(folder, test_ids):
        latest.unlink()
        latest.symlink_to("run-c")  # a submit published run-c
        read_from.append(folder)
        return read_test(folder, test_ids)

    monkeypatch.setattr(blend, "read_test", publish_meanwhile)
    assert run_cli(blend.main, _blend_args(kaggle_dir_readonly, tmp_path, latest, second)) == 0
    assert read_from == [first.resolve(), second.resolve()] and later.resolve() not in read_from
    [blended] = _blends(tmp_path)
    runs = json.loads((blended / "metrics.json").read_text())["run_info"]["runs"]
    assert runs["run-a"]["folder"] == str(first.resolve())


def test_a_run_folder_as_submissions_dir_is_refused(kaggle_dir_readonly, tmp_path, capsys):
    """The blend would nest inside the run folder named, where no ledger looks for it."""
    a, b = (_run_with_probabilities(kaggle_dir_readonly, tmp_path / "runs", f"run-{name}", seed)
            for seed, name in enumerate("ab", start=1))
    before = sorted(path.name for path in a.iterdir())
    args = [str(a), str(b), "--data-dir", str(kaggle_dir_readonly), "--submissions-dir", str(a)]
    assert run_cli(blend.main, args) == 2
    assert capsys.readouterr().err == (
        f"error: {a}: --submissions-dir: expected a folder that holds run folders, such as "
        "submissions, found a run folder (it holds metrics.json)\n")
    assert sorted(path.name for path in a.iterdir()) == before


def test_a_run_inside_blends_of_blends_counts_once(kaggle_dir_readonly, tmp_path, capsys):
    a, b, c, d = (_run_with_probabilities(kaggle_dir_readonly, tmp_path / name, f"run-{name}",
                                          seed) for seed, name in enumerate("abcd", start=1))

    def blend_of(*runs, into):
        args = [*map(str, runs), "--data-dir", str(kaggle_dir_readonly),
                "--submissions-dir", str(tmp_path / into)]
        code = run_cli(blend.main, args)
        capsys.readouterr()
        return code, (tmp_path / into / "latest").resolve()

    _, ab = blend_of(a, b, into="ab")
    _, abc = blend_of(ab, c, into="abc")  # a blend of a blend
    _, ad = blend_of(a, d, into="ad")
    assert blend_of(abc, a, into="x")[0] == 2  # a, two blends down
    assert blend_of(abc, ad, into="x")[0] == 2  # a, inside both
    assert run_cli(blend.main, [str(abc), str(d), "--data-dir", str(kaggle_dir_readonly),
                                "--submissions-dir", str(tmp_path / "x")]) == 0
    assert "holds" not in (abc / "report.md").read_text()  # digests are for programs
    # A damaged "holds" is no digest list, and no traceback.
    for damaged in (None, 5, "abcdef"):
        metrics = json.loads((abc / "metrics.json").read_text())
        for run in metrics["run_info"]["runs"].values():
            run["holds"] = damaged
        (abc / "metrics.json").write_text(json.dumps(metrics))
        assert blend.held_runs(metrics)["digests"] == {
            run["oof_sha1"] for run in metrics["run_info"]["runs"].values()}
    # A blend written before it recorded folders whole named them as typed: a `latest`
    # link, since moved on, is no evidence; the digest decides.
    metrics_path = ab / "metrics.json"
    metrics = json.loads(metrics_path.read_text())
    for run in metrics["run_info"]["runs"].values():
        run["folder"] = "a/latest"
        del run["oof_sha1"], run["holds"]
    metrics_path.write_text(json.dumps(metrics))
    assert blend_of(ab, c, into="y")[0] == 0


@pytest.mark.slow
def test_two_submit_runs_blend_into_one_scored_as_their_mean(kaggle_dir_readonly, tmp_path,
                                                             capsys):
    folders = []
    for seed in ("1", "2"):
        argv = ["--data-dir", str(kaggle_dir_readonly), "--profile", "smoke", "--seed", seed,
                "--artifacts-dir", str(tmp_path / "artifacts"),
                "--submissions-dir", str(tmp_path / f"runs-{seed}")]
        assert run_cli(submit.main, argv) == 0
        folders.append((tmp_path / f"runs-{seed}" / "latest").resolve())
    labels = _labels(kaggle_dir_readonly)
    for folder in folders:  # the files hold the ensemble its metrics.json scored
        metrics = json.loads((folder / "metrics.json").read_text())
        oof = _oof(folder, labels)
        assert np.mean(oof.argmax(axis=1) == labels) == pytest.approx(
            metrics["ensemble"]["accuracy"])
        test = probabilities.read_test(folder, np.arange(1, TEST_SIZE + 1))
        submission = pd.read_csv(folder / "submission.csv")
        assert submission["Label"].tolist() == test.argmax(axis=1).tolist()
    capsys.readouterr()
    assert run_cli(blend.main, _blend_args(kaggle_dir_readonly, tmp_path, *folders)) == 0
    assert "the mean of 2 runs" in capsys.readouterr().out
    [blended] = _blends(tmp_path)
    assert (blended / "report.html").is_file() and (blended / "submission.csv").is_file()
    rows = submit.check_submission_file(blended / "submission.csv",
                                        kaggle_dir_readonly / "test.csv")
    assert rows == TEST_SIZE
