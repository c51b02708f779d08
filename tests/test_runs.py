"""python -m src.runs: the ledger of run folders, its files, and --sync with a stand-in Kaggle."""

from __future__ import annotations

import errno
import json
import os
from datetime import UTC, datetime
from pathlib import Path

import matplotlib.image
import pandas as pd
import pytest

from src import kaggle_record, run_folders, runs
from src.config import run_cli
from src.errors import DataError
from tests.fixtures import write_run
from tests.kaggle_stand_in import api_submission

FIRST, SECOND, THIRD = ("20261122-080000-quick-kaggle", "20261123-090000-full-kaggle",
                        "20261124-100000-smoke-kaggle")


def _record(ref: int, message: str, status: str = "complete", score: float | None = None,
            date: str = "2026-11-24T10:20:00+00:00") -> dict:
    return {"ref": ref, "message": message, "file_name": "submission.csv", "date": date,
            "status": status, "public_score": score, "error": "",
            "competition": "digit-recognizer"}


@pytest.fixture
def submissions(tmp_path):
    """Three runs: the oldest scored on Kaggle, the next uploaded and pending, the newest not
    uploaded; the newest has the best OOF accuracy, the oldest the worst."""
    folder = tmp_path / "submissions"
    oldest = write_run(folder, FIRST, correct=41_800, minutes=16.2)
    kaggle_record.record_kaggle(oldest, _record(11, "first", score=0.99614))
    middle = write_run(folder, SECOND, correct=41_850, profile="full",
                       members=("rank1", "rank2", "default"), minutes=95)
    kaggle_record.record_kaggle(middle, _record(12, "second", status="pending"))
    write_run(folder, THIRD, correct=41_900, profile="smoke", minutes=0.5)
    (folder / "latest").symlink_to(THIRD)
    (folder / ".partial-20261124-110000-quick-kaggle").mkdir()  # a run still being written
    return folder


def _ledger(folder, capsys, *extra) -> list[str]:
    assert run_cli(runs.main, ["--submissions-dir", str(folder), *extra]) == 0
    return capsys.readouterr().out.splitlines()


def test_ledger_lists_runs_newest_first_with_cv_beside_public(submissions, capsys):
    header, *rows, wrote = _ledger(submissions, capsys)
    assert header.split()[:4] == ["run", "date", "(UTC)", "profile"]
    assert [row.split()[0] for row in rows] == [THIRD, SECOND, FIRST]
    assert rows[2].split()[1:8] == ["2026-11-22", "08:00", "quick", "16.2", "default",
                                    "99.524%", "99.45%-99.59%"]
    assert rows[2].split()[8:] == ["99.614%", "first"]
    assert "rank1+rank2+default" in rows[1] and "pending" in rows[1]
    assert rows[0].split()[-1] == "-"  # not uploaded
    assert wrote == f"wrote {submissions / 'runs.csv'}, {submissions / 'runs.png'}"


def test_a_message_with_a_line_break_keeps_its_row_on_one_line(tmp_path, capsys):
    run = write_run(tmp_path / "submissions", FIRST, correct=41_800)
    kaggle_record.record_kaggle(run, _record(11, "first line\nsecond\tline", score=0.99614))
    header, row, wrote = _ledger(tmp_path / "submissions", capsys)
    assert row.endswith("99.614%  first line\\nsecond\\tline")


def test_ledger_files_hold_every_run_and_a_real_figure(submissions, capsys):
    _ledger(submissions, capsys)
    frame = pd.read_csv(submissions / "runs.csv")
    assert list(frame.columns) == runs.COLUMNS
    assert frame["run"].tolist() == [THIRD, SECOND, FIRST]
    assert frame["public_score"].tolist()[2] == 0.99614 and frame["public_score"].isna().sum() == 2
    assert frame["oof"].tolist()[0] == pytest.approx(41_900 / 42_000)
    image = matplotlib.image.imread(submissions / "runs.png")
    assert image.ndim == 3 and image.shape[0] > 300 and image.std() > 0
    assert not [path.name for path in submissions.iterdir() if path.name.endswith(".tmp")]


def test_a_figure_that_cannot_be_written_is_one_line_exit_2(submissions, capsys,
                                                           monkeypatch):
    real_write = Path.write_bytes

    def full_disk_at_the_figure(path, data):  # the disk fills halfway through runs.png
        if "runs.png" not in path.name:
            return real_write(path, data)
        real_write(path, data[:100])
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Path, "write_bytes", full_disk_at_the_figure)
    assert run_cli(runs.main, ["--submissions-dir", str(submissions)]) == 2
    assert capsys.readouterr().err == (f"error: {submissions / 'runs.png'}: expected a writable "
                                       "folder with free space, found No space left on device "
                                       "(ENOSPC)\n")
    assert not list(submissions.glob(".runs.png*")) and not (submissions / "runs.png").exists()
    assert not list(submissions.glob(".partial-*runs.png"))  # the half-written file is gone
    assert not (submissions / "runs.csv").exists()  # the pair is written together or not at all


def test_a_ledger_without_scores_leaves_no_figure_of_old_ones(submissions, capsys):
    _ledger(submissions, capsys)
    assert (submissions / "runs.png").is_file()
    # The scored run uploaded again: pending, so no run has a public score.
    kaggle_record.record_kaggle(submissions / FIRST, _record(13, "again", status="pending"))
    *_, wrote = _ledger(submissions, capsys)
    assert wrote == f"wrote {submissions / 'runs.csv'}"
    assert not (submissions / "runs.png").exists()


@pytest.mark.parametrize("sort, order", [("oof", [THIRD, SECOND, FIRST]),
                                         ("lb", [FIRST, THIRD, SECOND]),
                                         ("date", [THIRD, SECOND, FIRST])])
def test_sort_by_oof_or_public_score(submissions, capsys, sort, order):
    if sort == "oof":  # make the oldest the best, so OOF order is not date order
        metrics = json.loads((submissions / FIRST / "metrics.json").read_text())
        metrics["ensemble"].update(accuracy=41_990 / 42_000, errors=10)
        (submissions / FIRST / "metrics.json").write_text(json.dumps(metrics))
        order = [FIRST, THIRD, SECOND]
    _, *rows, _ = _ledger(submissions, capsys, "--sort", sort)
    assert [row.split()[0] for row in rows] == order


def test_runs_of_one_second_list_newest_first(tmp_path, capsys):
    # numbered_names gives the tenth run of a second the name X-10, after.
    names = [FIRST, *(f"{FIRST}-{number}" for number in (2, 9, 10))]
    for name in names:
        write_run(tmp_path / "submissions", name, correct=41_800)
    _, *rows, _ = _ledger(tmp_path / "submissions", capsys)
    assert [row.split()[0] for row in rows] == names[::-1]


def _set(dotted: str, value):
    """A damage: metrics[a][b] = value for "a.b"."""
    def damage(metrics: dict) -> None:
        *path, last = dotted.split(".")
        for key in path:
            metrics = metrics[key]
        metrics[last] = value
    return damage


def _drop(dotted: str):
    def damage(metrics: dict) -> None:
        *path, last = dotted.split(".")
        for key in path:
            metrics = metrics[key]
        del metrics[last]
    return damage


@pytest.mark.parametrize("damage, found", [
    ("{not json", ": expected the metrics.json of python -m src.submit, found JSONDecodeError: "
                  "Expecting property name enclosed in double quotes: line 1 column 2 (char 1)"),
    ("[" * 100_000 + "]" * 100_000, ": expected the metrics.json of python -m src.submit, found "
                                    "ValueError: JSON nested deeper than Python's recursion limit"),
    # JSON holds integers of any size; dividing one by 60 raised OverflowError
    ('{"timings": {"total": 1' + "0" * 400 + "}}", ": expected the metrics.json of python -m "
                                                  "src.submit, found ValueError: an integer of "
                                                  "401 digits"),
    ('{"timings": {"total": NaN}}', ": expected the metrics.json of python -m src.submit, "
                                    "found ValueError: NaN, which JSON does not hold"),
    ('{"timings": {"total": 1e999}}', ": expected the metrics.json of python -m src.submit, "
                                      "found ValueError: 1e999, past what a float holds"),
    ("[]", ": metrics: expected a JSON object, found a JSON list"),
    (_drop("run_info"), ": run_info.command: expected text, found no such key"),
    (_drop("timings.total"), ": timings.total: expected a number of seconds >= 0, found no such "
                             "key"),
    (_set("timings.total", -600), ": timings.total: expected a number of seconds >= 0, found "
                                  "-600"),
    (_set("ensemble", 0.99), ": ensemble.accuracy: expected a share 0..1, found no such key"),
    (_set("ensemble.accuracy", 5), ": ensemble.accuracy: expected a share 0..1, found 5"),
    (_set("ensemble.ci95_low", "nan"), ": ensemble.ci95_low: expected a share 0..1, found "
                                       '"nan"'),
    # an accuracy edited by hand was printed and blended as fact beside its own error count
    (_set("ensemble.accuracy", 0.99), f": ensemble.accuracy: expected {41_850 / 42_000!r}, its "
                                      "errors (150) of its total (42000), found 0.99"),
    (_set("ensemble.errors", 50_000), ": ensemble.errors: expected at most ensemble.total "
                                      "(42000), found 50000"),
    (_set("ensemble.total", 0), ": ensemble.total: expected an integer >= 1, found 0"),
    (_set("models", "abc"), ": models: expected an object naming at least one member, found "
                            '"abc"'),
    (_set("run_info.profile", None), ": run_info.profile: expected text, found null"),
    (_set("run_info.folds", "3"), ": run_info.folds: expected an integer >= 2, found \"3\""),
    # seaborn's hue cannot take a dict: the ledger's figure crashed after runs.csv was written
    (_set("run_info.profile", {"x": 1}), ': run_info.profile: expected text, found {"x": 1}'),
    (_set("kaggle", "x"), ": kaggle: expected an object or null, found \"x\""),
    (_set("kaggle.public_score", "abc"), ": kaggle.public_score: expected a share 0..1 or "
                                         "null, found \"abc\""),
    (_set("kaggle.public_score", -3), ": kaggle.public_score: expected a share 0..1 or null, "
                                      "found -3"),
    (_set("kaggle.status", None), ": kaggle.status: expected text, found null"),
])
def test_a_damaged_run_is_one_warning_and_skipped(submissions, capsys, damage, found):
    path = submissions / SECOND / "metrics.json"
    if callable(damage):
        metrics = json.loads(path.read_text())
        damage(metrics)
        damage = json.dumps(metrics)
    path.write_text(damage)
    with pytest.warns(UserWarning) as caught:
        _, *rows, _ = _ledger(submissions, capsys)
    assert [str(warning.message) for warning in caught] == [f"{path}{found}; skipped"]
    assert [row.split()[0] for row in rows] == [THIRD, FIRST]


def test_a_run_without_metrics_is_one_warning_and_skipped(submissions, capsys):
    (submissions / SECOND / "metrics.json").unlink()
    with pytest.warns(UserWarning) as caught:
        _, *rows, _ = _ledger(submissions, capsys)
    assert [str(warning.message) for warning in caught] == [
        f"{submissions / SECOND}: expected a run folder of python -m src.submit, with its "
        "metrics.json, found no metrics.json; skipped"]
    assert [row.split()[0] for row in rows] == [THIRD, FIRST]


@pytest.mark.parametrize("name", ["20261125-000000-bad\udcff", "20261125-000000-a\nb"])
def test_a_run_folder_named_in_other_bytes_is_one_warning_and_skipped(submissions, capsys, name):
    """A name that is not UTF-8 crashed writing runs.csv (and printing, on a strict
    terminal); a line break split the ledger's row."""
    write_run(submissions, name, correct=41_000)
    with pytest.warns(UserWarning) as caught:
        _, *rows, _ = _ledger(submissions, capsys)
    assert [str(warning.message) for warning in caught] == [
        f"{submissions / name}: expected a run folder named in text on one line, found a line "
        "break, control character or byte that is not UTF-8; skipped"]
    assert [row.split()[0] for row in rows] == [THIRD, SECOND, FIRST]
    assert b"20261125-000000" not in (submissions / "runs.csv").read_bytes()


def test_a_no_break_space_in_a_run_folder_s_name_is_fine(submissions, capsys):
    write_run(submissions, "20261125-000000-my\xa0run", correct=41_000)
    _, *rows, _ = _ledger(submissions, capsys)
    assert rows[0].startswith("20261125-000000-my\xa0run")


def test_a_renamed_run_keeps_its_date_when_a_score_is_recorded(tmp_path):
    run_dir = write_run(tmp_path, "my-best-run", correct=41_818)
    made = datetime(2026, 11, 24, 9, 30, tzinfo=UTC).timestamp()
    for path in run_dir.iterdir():
        os.utime(path, (made, made))
    kaggle_record.record_kaggle(run_dir, _record(11, "mine"))  # rewrites metrics.json, now
    assert runs.run_date(run_dir) == datetime(2026, 11, 24, 9, 30, tzinfo=UTC)


@pytest.mark.parametrize("make", [False, True])
def test_no_runs_says_so_and_writes_nothing(tmp_path, capsys, monkeypatch, make):
    monkeypatch.chdir(tmp_path)  # the default folder: submissions/
    folder = tmp_path / "submissions"
    if make:
        folder.mkdir()
        (folder / "README.md").write_text("not a run")
    assert run_cli(runs.main, []) == 0
    assert capsys.readouterr().out.splitlines() == [
        "no runs in submissions/ yet: `python -m src.submit` writes one"]
    assert sorted(p.name for p in tmp_path.rglob("*")) == (["README.md", "submissions"] if make
                                                           else [])


def test_a_ledger_whose_runs_are_gone_lists_none(tmp_path, capsys):
    """runs.csv and runs.png kept listing runs moved away, where the command said none."""
    folder = tmp_path / "submissions"
    folder.mkdir()
    (folder / "runs.csv").write_text("run_id,oof\n20261125-000000-quick-kaggle,0.99\n")
    (folder / "runs.png").write_bytes(b"an old figure")
    assert _ledger(folder, capsys)[0].startswith("no runs in ")
    assert sorted(p.name for p in folder.iterdir()) == ["runs.csv"]
    assert len((folder / "runs.csv").read_text().splitlines()) == 1  # the header alone


def test_without_public_scores_there_is_no_figure(tmp_path, capsys):
    folder = tmp_path / "submissions"
    write_run(folder, THIRD, correct=41_900)
    assert _ledger(folder, capsys)[-1] == f"wrote {folder / 'runs.csv'}"
    assert sorted(p.name for p in folder.iterdir()) == [THIRD, "runs.csv"]


# ---------------------------------------------------------------- --sync


def test_sync_records_the_scores_of_earlier_uploads(submissions, kaggle, capsys):
    fourth = write_run(submissions, "20261124-120000-quick-kaggle", correct=41_700)
    kaggle_record.record_kaggle(fourth, _record(0, "mine", status="pending"))  # id unknown
    fifth = write_run(submissions, "20261124-123000-quick-kaggle", correct=41_700)
    kaggle_record.record_kaggle(fifth, _record(0, "again", status="pending"))
    when = datetime(2026, 11, 24, 13, 0)
    kaggle.submissions = [
        api_submission(12, "second", when, public_score="0.99640"),  # the pending one
        api_submission(30, f"smoke: 1 config x 2 folds, OOF 99.762%, run {THIRD}", when,
                       public_score="0.99700"),  # never recorded: found by its run id
        api_submission(31, "mine", when, status="error", error="Bad header"),
        api_submission(11, "first", datetime(2026, 11, 22, 9, 0), public_score="0.99614"),
        api_submission(5, "again", datetime(2026, 11, 20, 9, 0), public_score="0.5"),  # too old
    ]
    lines = _ledger(submissions, capsys, "--sync")
    assert lines[0] == "sync: 5 submissions on Kaggle; 3 runs updated"
    kaggle_of = {run_dir.name: json.loads((run_dir / "metrics.json").read_text())["kaggle"]
                 for run_dir in run_folders.list_run_folders(submissions)}
    assert kaggle_of[SECOND]["public_score"] == 0.9964
    assert (kaggle_of[THIRD]["ref"], kaggle_of[THIRD]["public_score"]) == (30, 0.997)
    assert (kaggle_of[fourth.name]["ref"], kaggle_of[fourth.name]["status"]) == (31, "error")
    assert kaggle_of[fifth.name] == _record(0, "again", status="pending")  # made before the run
    assert "Kaggle public score: 0.99700" in (submissions / THIRD / "report.md").read_text()
    assert "99.640%" in next(line for line in lines if line.startswith(SECOND))
    assert _ledger(submissions, capsys, "--sync")[0] == ("sync: 5 submissions on Kaggle; "
                                                          "0 runs updated")


def test_sync_leaves_a_run_with_a_damaged_report_as_it_was(submissions, kaggle, capsys):
    """Its metrics.json was rewritten before report.md failed to read: half a record."""
    report_md = submissions / SECOND / "report.md"
    report_md.write_bytes(b"# report\n\xff\n")
    before = (submissions / SECOND / "metrics.json").read_bytes()
    kaggle.submissions = [api_submission(12, "second", datetime(2026, 11, 24, 13, 0),
                                         public_score="0.99640")]
    with pytest.warns(UserWarning) as caught:
        lines = _ledger(submissions, capsys, "--sync")
    assert [str(warning.message) for warning in caught] == [
        f"{report_md}: expected the report python -m src.submit wrote, found "
        "UnicodeDecodeError: 'utf-8' codec can't decode byte 0xff in position 9: invalid start "
        "byte; its score is not recorded"]
    assert lines[0] == "sync: 1 submission on Kaggle; 0 runs updated"
    assert (submissions / SECOND / "metrics.json").read_bytes() == before


def test_a_record_cut_short_is_finished_by_the_next_sync(submissions, kaggle, capsys,
                                                         monkeypatch):
    """metrics.json is what --sync compares with: renamed last, after the reports."""
    kaggle.submissions = [api_submission(12, "second", datetime(2026, 11, 24, 13, 0),
                                         public_score="0.99640")]
    replace = os.replace

    def locked_report(source, target):
        if Path(target).name == "report.md":
            raise OSError(errno.EACCES, "Permission denied")
        replace(source, target)

    monkeypatch.setattr(os, "replace", locked_report)
    with pytest.warns(UserWarning, match="its score is not recorded$"):
        _ledger(submissions, capsys, "--sync")
    monkeypatch.setattr(os, "replace", replace)
    assert _ledger(submissions, capsys, "--sync")[0] == ("sync: 1 submission on Kaggle; "
                                                          "1 run updated")
    assert "Kaggle public score: 0.99640" in (submissions / SECOND / "report.md").read_text()


def test_sync_finds_a_run_by_its_whole_id_not_a_longer_one(submissions, kaggle, capsys):
    twin = write_run(submissions, f"{THIRD}-2", correct=41_700)  # published the same second
    kaggle.submissions = [api_submission(
        40, f"smoke: 1 config x 2 folds, OOF 99.286%, run {twin.name}",
        datetime(2026, 11, 24, 13, 0), public_score="0.99300")]
    assert _ledger(submissions, capsys, "--sync")[0] == ("sync: 1 submission on Kaggle; "
                                                          "1 run updated")
    metrics_of = {run_dir.name: json.loads((run_dir / "metrics.json").read_text())
                  for run_dir in run_folders.list_run_folders(submissions)}
    assert metrics_of[twin.name]["kaggle"]["ref"] == 40 and "kaggle" not in metrics_of[THIRD]


def test_sync_without_credentials_is_one_line_and_writes_nothing(submissions, kaggle_home,
                                                                 capfd):
    before = {path: path.read_bytes() for path in submissions.rglob("*") if path.is_file()}
    assert run_cli(runs.main, ["--submissions-dir", str(submissions), "--sync"]) == 2
    err = capfd.readouterr().err
    assert err.startswith("error: kaggle submissions: expected Kaggle API credentials in ")
    assert err.count("\n") == 1
    assert {path: path.read_bytes() for path in submissions.rglob("*") if path.is_file()} == before



def test_a_submissions_dir_that_is_a_file_is_one_line_exit_2(tmp_path, capsys):
    folder = tmp_path / "submissions"
    folder.write_text("not a folder")
    assert run_cli(runs.main, ["--submissions-dir", str(folder)]) == 2
    assert capsys.readouterr().err == (f"error: {folder}: --submissions-dir: expected a folder "
                                       "of run folders, found a file\n")



@pytest.mark.parametrize("score", ["99.640", "-0.5", "NaN", ""])
def test_a_listed_score_that_is_no_accuracy_is_recorded_as_none(submissions, kaggle, capsys,
                                                                 score):
    """A score outside 0..1 was recorded, and from then on the ledger skipped the run as
    damaged; a complete one without a score read as "not scored yet"."""
    kaggle.submissions = [api_submission(12, "second", datetime(2026, 11, 24, 13, 0),
                                         public_score=score)]
    lines = _ledger(submissions, capsys, "--sync")
    assert lines[0] == "sync: 1 submission on Kaggle; 1 run updated"
    row = next(line for line in lines if line.startswith(SECOND))
    assert row.endswith(" no score  second")  # the public column, then the message
    record = json.loads((submissions / SECOND / "metrics.json").read_text())["kaggle"]
    assert (record["status"], record["public_score"]) == ("complete", None)
    assert ("Kaggle lists the submission as scored but gives no public score (an accuracy "
            "0..1 was expected)") in (submissions / SECOND / "report.md").read_text()


def test_a_listed_message_of_lone_surrogates_is_recorded_escaped(submissions, kaggle, capsys):
    """JSON's "\\ud83d" alone made every later ledger fail to write runs.csv."""
    kaggle.submissions = [api_submission(30, f"run {THIRD} \ud83d", datetime(2026, 11, 24, 13, 0),
                                         public_score="0.99700")]
    assert _ledger(submissions, capsys, "--sync")[0] == ("sync: 1 submission on Kaggle; "
                                                          "1 run updated")
    record = json.loads((submissions / THIRD / "metrics.json").read_text())["kaggle"]
    assert record["message"] == f"run {THIRD} \\ud83d"
    _ledger(submissions, capsys)
    assert f"run {THIRD} \\ud83d" in (submissions / "runs.csv").read_text(encoding="utf-8")


def test_sync_finds_a_run_by_its_id_on_a_kaggle_clock_seconds_behind(submissions, kaggle,
                                                                     capsys):
    """Uploaded as the run was published, by a Kaggle clock 3 s behind this machine's."""
    kaggle.submissions = [api_submission(30, f"smoke: 1 config, run {THIRD}",
                                         datetime(2026, 11, 24, 9, 59, 57), public_score="0.997")]
    assert _ledger(submissions, capsys, "--sync")[0] == ("sync: 1 submission on Kaggle; "
                                                          "1 run updated")


def test_a_report_whose_kaggle_markers_were_edited_is_refused_before_a_record(submissions):
    """With the closing marker gone, the next record added a second line, and the one after
    replaced the user's text between the old opening marker and the new closing one."""
    report_md = submissions / FIRST / "report.md"
    edited = report_md.read_text().replace("<!-- /kaggle -->", "My note.\n")
    report_md.write_text(edited)
    with pytest.raises(DataError, match=r"report\.md: expected the Kaggle line between one "
                       r"<!-- kaggle --> and one <!-- /kaggle -->, found 1 and 0 of them"):
        kaggle_record.record_kaggle(submissions / FIRST, _record(13, "again", score=0.99))
    assert report_md.read_text() == edited
