"""Talking to Kaggle through a stand-in for its API (no network): upload, download, one-line
errors, no secrets."""

from __future__ import annotations

import base64
import dataclasses
import io
import json
import os
import re
import shlex
import socket
import subprocess
import sys
import zipfile
from datetime import datetime
from pathlib import Path

import pandas as pd
import pytest
import requests
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from src import config, download, kaggle_api, submit, tune, util
from src.errors import DataError
from tests.fixtures import disk_full, ended_pid, write_run
from tests.kaggle_stand_in import NEVER, api_submission, competition_zip, http_error

USERNAME = "digit-fan"
SECRET = "fake-key-5f0c9e1d7a2b4c68"  # a made-up credential that must never be printed


@pytest.fixture
def csv_path(tmp_path):
    """A small submission CSV; uploads must leave it as it is."""
    path = tmp_path / "run" / "submission.csv"
    path.parent.mkdir()
    path.write_text("ImageId,Label\n1,7\n2,2\n")
    return path


@pytest.fixture
def legacy_key(kaggle_home, monkeypatch):
    """Legacy credentials in the environment; the library in verbose mode (it prints headers)."""
    monkeypatch.setenv("KAGGLE_USERNAME", USERNAME)
    monkeypatch.setenv("KAGGLE_KEY", SECRET)
    monkeypatch.setattr(kaggle_home, "args", ["--verbose"])
    return kaggle_home


def _fail_upload(csv_path, capfd, where: str = "kaggle upload") -> str:
    """Run an upload that must fail through the CLI wrapper; return its one stderr line."""
    code = config.run_cli(lambda argv: kaggle_api.upload_submission(csv_path, "a message"), [])
    out, err = capfd.readouterr()
    assert code == 2 and out == ""
    assert err.startswith(f"error: {where}: ") and err.count("\n") == 1
    return err


def _assert_no_secret(text: str) -> None:
    basic_auth = base64.b64encode(f"{USERNAME}:{SECRET}".encode()).decode()
    assert SECRET not in text and basic_auth not in text


def _http_reply(status: int, message: str) -> requests.Response:
    """What Kaggle's API answers to a refused request."""
    response = requests.Response()
    response.status_code = status
    response.headers["Content-Type"] = "application/json"
    response._content = json.dumps({"code": status, "message": message}).encode()
    return response


def test_upload_returns_the_pending_submission_quietly(kaggle, csv_path, capfd):
    submitted = kaggle_api.upload_submission(csv_path, "5-fold")
    assert (submitted.ref, submitted.status, submitted.message) == (1000, "pending", "5-fold")
    assert submitted.file_name == "submission.csv" and submitted.public_score is None
    assert kaggle.requests == ["authenticate", "competition_submit"]
    assert capfd.readouterr() == ("", "")  # the library's "uploading ..." is swallowed


def test_no_credentials_says_where_they_go_and_keeps_the_csv(kaggle_home, csv_path, capfd):
    before = csv_path.read_bytes()
    err = _fail_upload(csv_path, capfd)
    assert "home/.kaggle/kaggle.json (chmod 600) or $KAGGLE_USERNAME and $KAGGLE_KEY" in err
    assert "found none" in err and f"{csv_path} is kept" in err
    assert csv_path.read_bytes() == before


@pytest.mark.parametrize("where", ["$KAGGLE_API_TOKEN", "~/.kaggle/access_token"])
def test_a_refused_token_is_named_not_missing(kaggle_home, csv_path, capfd, monkeypatch,
                                              where):
    # kaggle asks Kaggle about the token and, when refused (400, 403, 404), drops it without
    # a word: it then reads as no credentials at all, the very ones the user had set.
    if where == "$KAGGLE_API_TOKEN":
        monkeypatch.setenv("KAGGLE_API_TOKEN", SECRET)
    else:
        token_file = Path(os.environ["HOME"]) / ".kaggle" / "access_token"
        token_file.parent.mkdir(parents=True)
        token_file.write_text(SECRET)
    monkeypatch.setattr(kaggle_home, "_introspect_token", lambda self, token: None)
    err = _fail_upload(csv_path, capfd)
    assert (f"expected an API token Kaggle accepts, found the token in {where} refused "
            "(expired or revoked)") in err
    assert f"{csv_path} is kept" in err and "found none" not in err
    _assert_no_secret(err)


@pytest.mark.parametrize("content, found", [
    (f'{{"username": "{USERNAME}", "key": "{SECRET}', "found not JSON (Unterminated string "
     "starting at: line 1 column 34)"),
    ("[]", "found a JSON list"),
    ('"key"', "found a JSON str"),
    (f'{{"username": "{USERNAME}"}}', 'found an object without "key"'),
    ("{}", 'found an object without "username" and "key"'),
    (b'{"username": "\xff"}', "found bytes that are not UTF-8 text"),
])
def test_a_damaged_kaggle_json_is_named_not_missing(kaggle_home, csv_path, capfd, content,
                                                    found):
    config_file = Path(kaggle_home.config)
    config_file.parent.mkdir(parents=True)
    write = config_file.write_bytes if isinstance(content, bytes) else config_file.write_text
    write(content)
    err = _fail_upload(csv_path, capfd, where=f"{config_file}: kaggle upload")
    assert err.startswith(f"error: {config_file}: kaggle upload: expected a JSON object with "
                          f'"username" and "key", {found} (download a new kaggle.json from ')
    assert f"{csv_path} is kept" in err
    _assert_no_secret(err)


def test_a_json_list_beside_a_token_is_named_not_a_type_error(kaggle_home, monkeypatch,
                                                             csv_path, capfd):
    # with a KAGGLE_* variable set, the kaggle package fails on a list with a TypeError
    monkeypatch.setenv("KAGGLE_API_TOKEN", SECRET)
    monkeypatch.setattr(requests.Session, "send", lambda *args, **kwargs: pytest.fail("sent"))
    config_file = Path(kaggle_home.config)
    config_file.parent.mkdir(parents=True)
    config_file.write_text("[1]")
    err = _fail_upload(csv_path, capfd, where=f"{config_file}: kaggle upload")
    assert 'expected a JSON object with "username" and "key", found a JSON list' in err
    _assert_no_secret(err)


def test_a_kaggle_json_of_settings_beside_a_token_is_not_blamed_for_the_network(
        kaggle_home, monkeypatch, csv_path, capfd):
    """`kaggle config set` writes settings without a username or key; with a token that is
    fine, and a failed token check is the network's fault."""
    monkeypatch.setenv("KAGGLE_API_TOKEN", SECRET)

    def unreachable(session, request, **kwargs):
        raise requests.ConnectionError("cannot reach api.kaggle.com")

    monkeypatch.setattr(requests.Session, "send", unreachable)
    config_file = Path(kaggle_home.config)
    config_file.parent.mkdir(parents=True)
    config_file.write_text('{"competition": "digit-recognizer"}')
    err = _fail_upload(csv_path, capfd)
    assert "found no connection (ConnectionError)" in err and "kaggle.json" not in err


# Pieces of a kaggle.json, well-formed or not, the key among them.
KAGGLE_JSON_PIECES = [b"{", b"}", b"[", b"]", b":", b",", b'"', b" ", b"\n", b"\\", b"null",
                      b"true", b"1e999", b"9" * 400, b'"username"', b'"key"', b'"token"',
                      f'"{USERNAME}"'.encode(), f'"{SECRET}"'.encode(), b"\xff",
                      b"\xef\xbb\xbf", b"\x00"]


@settings(max_examples=60, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])  # rewritten each time
@given(pieces=st.lists(st.sampled_from(KAGGLE_JSON_PIECES), max_size=12))
@example(pieces=[f'{{"username": "{USERNAME}", "key": "{SECRET}"}}'.encode()])  # signs in
@example(pieces=[b'{"username": [], "key": {"a": 1}}'])
@example(pieces=[b'{"username": null, "key": 1e999}'])
def test_any_kaggle_json_is_one_line_without_the_key(kaggle_home, monkeypatch, csv_path,
                                                     capfd, pieces):
    def unreachable(session, request, **kwargs):
        raise requests.ConnectionError(f"cannot reach api.kaggle.com with {request.headers}")

    monkeypatch.setattr(requests.Session, "send", unreachable)
    config_file = Path(kaggle_home.config)
    config_file.parent.mkdir(parents=True, exist_ok=True)
    config_file.write_bytes(b"".join(pieces))
    code = config.run_cli(lambda argv: kaggle_api.upload_submission(csv_path, "a message"), [])
    out, err = capfd.readouterr()
    assert code == 2 and out == "" and err.startswith("error: ") and err.count("\n") == 1, err
    _assert_no_secret(err)


@pytest.mark.parametrize("empty", [("KAGGLE_USERNAME", "KAGGLE_KEY"), ("KAGGLE_KEY",)])
def test_empty_username_and_key_are_missing_credentials_not_a_request(kaggle_home, monkeypatch,
                                                                      csv_path, capfd, empty):
    monkeypatch.setenv("KAGGLE_USERNAME", USERNAME)
    for name in empty:
        monkeypatch.setenv(name, "")

    def no_request(session, request, **kwargs):
        raise AssertionError("empty credentials must not reach the network")

    monkeypatch.setattr(requests.Session, "send", no_request)
    before = csv_path.read_bytes()
    err = _fail_upload(csv_path, capfd)
    names = " and ".join(f"${name}" for name in empty)
    assert f"or $KAGGLE_USERNAME and $KAGGLE_KEY, found {names} set but empty" in err
    assert f"{csv_path} is kept" in err and csv_path.read_bytes() == before


# In a fresh process: importing the kaggle package signs in, and so sends the token.
BLANK_TOKEN_UPLOAD = """
import sys
import requests
sent = []
requests.Session.send = lambda session, request, **kwargs: sent.append(request.url)
from src import config, kaggle_api
code = config.run_cli(lambda argv: kaggle_api.upload_submission(sys.argv[1], "m"), [])
print(code, sent)
"""


def test_a_blank_api_token_is_named_not_sent(kaggle_home, csv_path, tmp_path):
    pytest.importorskip("kaggle")
    environment = {name: value for name, value in os.environ.items()
                   if not name.startswith("KAGGLE_")}
    environment.update(KAGGLE_API_TOKEN=" \t", HOME=str(tmp_path / "home"))  # "" is unset
    done = subprocess.run([sys.executable, "-c", BLANK_TOKEN_UPLOAD, str(csv_path)],
                          capture_output=True, text=True, env=environment, timeout=120)
    assert done.stdout.splitlines()[-1] == "2 []", done.stderr[-2000:]  # no request
    assert ("error: kaggle upload: expected an API token in $KAGGLE_API_TOKEN, found "
            "$KAGGLE_API_TOKEN set but blank (set it to a token from "
            "https://www.kaggle.com/settings/api, or unset it; ") in done.stderr


@pytest.mark.parametrize("action", ["download", "submissions"])
def test_empty_credentials_are_missing_for_download_and_sync_too(kaggle_home, monkeypatch,
                                                                 tmp_path, action):
    monkeypatch.setenv("KAGGLE_USERNAME", "")
    monkeypatch.setenv("KAGGLE_KEY", "")
    request = {"download": lambda: download.download_competition_data(tmp_path / "data"),
               "submissions": kaggle_api.list_submissions}[action]
    with pytest.raises(DataError, match=f"kaggle {action}: expected Kaggle API credentials in .* "
                                        r"found \$KAGGLE_USERNAME and \$KAGGLE_KEY set but empty"):
        request()
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("status, hint", [
    (401, "Kaggle refused the credentials"),
    (403, "accept its rules at https://www.kaggle.com/competitions/digit-recognizer/rules"),
    (404, "check the competition name 'digit-recognizer'"),
    (429, "try again later"),
    (500, "try again later"),
])
def test_refused_submission_is_one_line_without_the_key(legacy_key, monkeypatch, csv_path,
                                                        capfd, status, hint):
    echo = f"refused; you sent key {SECRET}"  # the worst case: the server quotes the key
    monkeypatch.setattr(requests.Session, "send",
                        lambda session, request, **kwargs: _http_reply(status, echo))
    err = _fail_upload(csv_path, capfd)
    assert f"found HTTP {status} 'refused; you sent key ***'" in err and hint in err
    assert "for competition 'digit-recognizer'" in err
    _assert_no_secret(err)
    assert csv_path.is_file()


@pytest.mark.parametrize("credential", ["legacy key", "access token"])
def test_no_connection_is_one_line_without_the_secret(kaggle_home, monkeypatch, csv_path, capfd,
                                                      credential):
    if credential == "legacy key":
        monkeypatch.setenv("KAGGLE_USERNAME", USERNAME)
        monkeypatch.setenv("KAGGLE_KEY", SECRET)
    else:
        monkeypatch.setenv("KAGGLE_API_TOKEN", SECRET)
    monkeypatch.setattr(kaggle_home, "args", ["--verbose"])

    def unreachable(session, request, **kwargs):
        raise requests.ConnectionError(f"cannot reach api.kaggle.com with {request.headers}")

    monkeypatch.setattr(requests.Session, "send", unreachable)
    err = _fail_upload(csv_path, capfd)
    assert "found no connection (ConnectionError) (check the network connection;" in err
    assert "for competition 'digit-recognizer'" in err
    _assert_no_secret(err)


def test_an_upload_request_that_fails_says_to_look_before_sending_again(kaggle, csv_path,
                                                                        capfd):
    # A time-out after Kaggle got the file said only "upload it later": a second copy, and
    # another of the day's submissions.
    kaggle.failures["competition_submit"] = requests.ReadTimeout("read timed out")
    err = _fail_upload(csv_path, capfd)
    assert err.endswith(f"found no connection (ReadTimeout) (check the network connection; "
                        f"{csv_path} is kept; if the competition's My Submissions page does "
                        "not list it, upload it later with `python -m src.submit --check "
                        f"{csv_path} --upload -m MESSAGE`)\n")


def test_unfinished_upload_is_an_error(kaggle_home, monkeypatch, csv_path):
    class FakeApi(kaggle_home):
        def authenticate(self):
            pass

        def competition_submit(self, file_name, message, competition, quiet=False):
            return type("Reply", (), {"message": self.COMPETITION_SUBMIT_UPLOAD_FAILED_MESSAGE})

    monkeypatch.setattr(sys.modules[kaggle_home.__module__], "KaggleApi", FakeApi)
    with pytest.raises(DataError, match="found an unfinished upload"):
        kaggle_api.upload_submission(csv_path, "m")


def test_missing_kaggle_package_says_how_to_install_it(monkeypatch, csv_path):
    monkeypatch.setitem(sys.modules, "kaggle.api.kaggle_api_extended", None)
    with pytest.raises(DataError) as caught:
        kaggle_api.upload_submission(csv_path, "m")
    assert str(caught.value) == ('kaggle upload: expected the kaggle package, found not installed '
                                 '(pip install -e ".[kaggle]")')


def test_a_kaggle_that_exits_on_import_is_missing_credentials(monkeypatch, csv_path):
    class ExitsOnImport:  # as `import kaggle` does in versions that sign in and exit(1)
        def __getattr__(self, name):
            raise SystemExit(1)

    monkeypatch.setitem(sys.modules, "kaggle.api.kaggle_api_extended", ExitsOnImport())
    with pytest.raises(DataError, match=r"kaggle upload: expected Kaggle API credentials in "
                                        r"~/.kaggle/kaggle.json \(chmod 600\) or "):
        kaggle_api.upload_submission(csv_path, "m")


def test_missing_csv_is_named(tmp_path):
    with pytest.raises(DataError, match="nope.csv: expected a submission CSV, found no such file"):
        kaggle_api.upload_submission(tmp_path / "nope.csv", "m")


# ---------------------------------------------------------------- download


@pytest.mark.parametrize("cli", [tune.main, submit.main])
def test_missing_data_names_the_flag_that_fetches_it(tmp_path, capsys, cli):
    assert config.run_cli(cli, ["--data-dir", str(tmp_path / "nowhere")]) == 2
    assert ("found none (fetch it with `python -m src.download` and your Kaggle API credentials "
            "(tune and submit take --download)") in capsys.readouterr().err


def test_download_unpacks_validates_and_moves_the_files_in(kaggle, tmp_path, capsys):
    target = tmp_path / "data" / "digit-recognizer"
    killed = util.partial_path(target.parent / "digit-recognizer-download").name.replace(
        f"-{os.getpid()}@", f"-{ended_pid()}@")  # the staging folder of a killed download
    (target.parent / killed / "zip").mkdir(parents=True)
    assert download.download_competition_data(target) == target
    assert sorted(p.name for p in target.iterdir()) == ["sample_submission.csv", "test.csv",
                                                        "train.csv"]
    assert sorted(p.name for p in target.parent.iterdir()) == ["digit-recognizer"]  # no staging
    assert "uploading" not in capsys.readouterr().out
    # The second time the files are there: no request at all.
    requests_before = list(kaggle.requests)
    download.download_competition_data(target)
    assert kaggle.requests == requests_before
    assert "holds train.csv and test.csv already; not downloading" in capsys.readouterr().out


def test_download_fills_an_existing_folder_and_keeps_its_other_files(kaggle, tmp_path):
    target = tmp_path / "data"
    target.mkdir()
    (target / "notes.txt").write_text("mine")
    (target / "train.csv").write_text("a stale half file")  # no test.csv: not data yet
    download.download_competition_data(target)
    assert (target / "notes.txt").read_text() == "mine"
    assert (target / "train.csv").read_text().startswith("label,pixel0,")


def test_download_default_folder_is_data_digit_recognizer(kaggle, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert download.download_competition_data() == Path("data/digit-recognizer")
    assert (tmp_path / "data" / "digit-recognizer" / "test.csv").is_file()


def test_python_m_src_download_fetches_on_its_own(kaggle, tmp_path, monkeypatch, capsys):
    """It printed nothing and exited 0: the module had no command line of its own."""
    monkeypatch.chdir(tmp_path)
    assert config.run_cli(download.main, ["--data-dir", "mine"]) == 0
    assert (tmp_path / "mine" / "train.csv").is_file()
    assert "data: mine/ holds sample_submission.csv, test.csv, train.csv" in (
        capsys.readouterr().out)
    with pytest.raises(SystemExit) as exit_:
        download.main(["--data-dir"])
    assert exit_.value.code == 2
    assert capsys.readouterr().err.startswith("error: argument --data-dir: expected one")


def _fail_download(target, capfd) -> str:
    code = config.run_cli(lambda argv: download.download_competition_data(target), [])
    err = capfd.readouterr().err
    assert code == 2 and err.startswith("error: ") and err.count("\n") == 1, err
    assert not target.parent.exists()  # nothing left behind, not even the folder made for it
    return err


def test_download_without_accepted_rules_is_one_line(kaggle, tmp_path, capfd):
    kaggle.failures["competition_download_files"] = http_error(403, "You must accept the rules")
    err = _fail_download(tmp_path / "data" / "digit-recognizer", capfd)
    assert err.startswith("error: kaggle download: ") and "found HTTP 403" in err
    assert "accept its rules at https://www.kaggle.com/competitions/digit-recognizer/rules" in err


def test_download_without_credentials_says_where_they_go(kaggle_home, tmp_path, capfd):
    err = _fail_download(tmp_path / "data" / "digit-recognizer", capfd)
    assert "error: kaggle download: expected Kaggle API credentials in " in err
    assert "found none" in err and "nothing was written to" in err


def _flip_byte_in_train_csv(raw: bytes, share: float) -> bytes:
    """The zip with one byte of train.csv's compressed data flipped, share of the way in:
    its directory intact, the member damaged (a zlib error at the start, a CRC one later)."""
    info = zipfile.ZipFile(io.BytesIO(raw)).getinfo("train.csv")
    at = info.header_offset + 30 + len("train.csv") + int(info.compress_size * share)
    return raw[:at] + bytes([raw[at] ^ 0xFF]) + raw[at + 1:]


@pytest.mark.parametrize("damage, found", [
    (lambda data: competition_zip(data, names=("train.csv",)), "a zip holding train.csv and "
     "test.csv, found train.csv"),
    (lambda data: b"<html>not a zip</html>", "a zip of the competition files, found "
     "'digit-recognizer.zip' (BadZipFile)"),
    (lambda data: _flip_byte_in_train_csv(competition_zip(data), 0), "a zip of the "
     "competition files, found 'digit-recognizer.zip' (zlib.error)"),  # its Huffman tables
    (lambda data: _flip_byte_in_train_csv(competition_zip(data), 0.5), "a zip of the "
     "competition files, found 'digit-recognizer.zip' (BadZipFile)"),  # its CRC
])
def test_damaged_download_is_one_line_and_leaves_nothing(kaggle, kaggle_dir_readonly, tmp_path,
                                                         capfd, damage, found):
    kaggle.data_zip = damage(kaggle_dir_readonly)
    assert found in _fail_download(tmp_path / "data" / "digit-recognizer", capfd)


@pytest.mark.parametrize("target", ["data/digit-recognizer", "data"])
def test_a_download_into_or_under_a_file_is_one_line_before_signing_in(kaggle_home, tmp_path,
                                                                        capfd, target):
    """--data-dir naming a file was blamed on the missing credentials (and with them, named
    only once the zip had downloaded)."""
    (tmp_path / "data").write_text("a file, not a folder")
    target = tmp_path / target
    code = config.run_cli(lambda argv: download.download_competition_data(target), [])
    assert code == 2
    assert capfd.readouterr().err == (
        f"error: {target}: expected a writable folder with free space, "
        "found Not a directory (ENOTDIR)\n")


@pytest.mark.parametrize("fails", ["unpack", "move"])
def test_a_download_that_cannot_write_is_one_line_and_leaves_nothing(kaggle, tmp_path, capfd,
                                                                     monkeypatch, fails):
    target = tmp_path / "data" / "digit-recognizer"
    if fails == "unpack":
        monkeypatch.setattr(zipfile.ZipFile, "extractall", disk_full)
    else:
        monkeypatch.setattr(download.os, "rename", disk_full)
    err = _fail_download(target, capfd)
    assert "expected a writable folder with free space, found No space left" in err


def test_download_with_a_bad_csv_fails_like_any_input(kaggle, kaggle_dir, tmp_path, capfd):
    lines = (kaggle_dir / "train.csv").read_text().splitlines()
    lines[3] = lines[3].replace(",0,", ",256,", 1)
    (kaggle_dir / "train.csv").write_text("\n".join(lines) + "\n")
    kaggle.data_zip = competition_zip(kaggle_dir)
    err = _fail_download(tmp_path / "data" / "digit-recognizer", capfd)
    assert "train.csv:4: pixel" in err and "expected an integer 0..255, found '256'" in err
    assert "a damaged download" in err


def test_submit_download_then_check_uses_the_fetched_files(kaggle, tmp_path, capsys):
    good = tmp_path / "good.csv"
    pd.DataFrame({"ImageId": range(1, 301), "Label": 3}).to_csv(good, index=False)
    target = tmp_path / "fetched"
    argv = ["--download", "--data-dir", str(target), "--check", str(good)]
    assert config.run_cli(submit.main, argv) == 0
    assert "valid submission, 300 rows" in capsys.readouterr().out
    assert kaggle.requests == ["authenticate", "competition_download_files"]


def test_tune_download_failure_stops_before_the_search(kaggle, tmp_path, capfd):
    kaggle.failures["competition_download_files"] = http_error(403, "rules")
    argv = ["--download", "--data-dir", str(tmp_path / "data"), "--profile", "smoke",
            "--artifacts-dir", str(tmp_path / "artifacts")]
    assert config.run_cli(tune.main, argv) == 2
    assert "found HTTP 403" in capfd.readouterr().err
    assert list(tmp_path.iterdir()) == []  # no data, no artifacts


def test_download_needs_the_kaggle_source():
    with pytest.raises(DataError, match="--download: expected --source kaggle with --download"):
        submit._parse_args(["--download", "--source", "keras"])


# ---------------------------------------------------------------- waiting for the score


class FakeClock:
    """A monotonic clock that moves only when slept on."""

    def __init__(self):
        self.now = 0.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def _wait(kaggle_stand_in, csv_path, minutes=10.0, poll_seconds=15.0):
    clock = FakeClock()
    submitted = kaggle_api.upload_submission(csv_path, "m")
    scored = kaggle_api.wait_for_score(submitted, minutes, poll_seconds, clock=clock,
                                       sleep=clock.sleep)
    return scored, clock


def test_wait_polls_a_pending_submission_until_it_is_scored(kaggle, csv_path, capsys):
    kaggle.polls_to_score = 3
    scored, clock = _wait(kaggle, csv_path)
    assert (scored.ref, scored.status, scored.public_score) == (1000, "complete", 0.99567)
    assert clock.sleeps == [15.0, 15.0]
    assert capsys.readouterr().out.splitlines() == [
        "kaggle: submission 1000 is pending; waited 0s of at most 10m00s",
        "kaggle: submission 1000 is pending; waited 15s of at most 10m00s"]


def test_wait_returns_kaggles_scoring_error(kaggle, csv_path):
    kaggle.outcome = ("error", "Submission must have 28000 rows")
    scored, clock = _wait(kaggle, csv_path)
    assert (scored.status, scored.error, scored.public_score) == (
        "error", "Submission must have 28000 rows", None)
    assert clock.sleeps == []


def test_wait_gives_up_at_its_time_limit_still_pending(kaggle, csv_path, capsys):
    kaggle.polls_to_score = NEVER
    scored, clock = _wait(kaggle, csv_path, minutes=1, poll_seconds=25)
    assert scored.status == "pending" and scored.public_score is None
    assert clock.sleeps == [25, 25, 10]  # the last sleep ends at the limit
    assert len(capsys.readouterr().out.splitlines()) == 3
    assert kaggle.requests.count("competition_submissions") == 4


@pytest.mark.parametrize("largest_page", [10**6, 20])
def test_the_listing_reads_every_page_whatever_size_kaggle_gives_them(kaggle, largest_page):
    # With pages held to 20 rows, a first page "shorter than the 50 asked" ended the listing.
    kaggle.largest_page = largest_page
    kaggle.submissions = [api_submission(ref, f"run {ref}", datetime(2026, 11, 24, 9, 0))
                          for ref in range(1, 46)]
    assert sorted(row.ref for row in kaggle_api.list_submissions()) == list(range(1, 46))
    # an empty page ends it: a first page shorter than asked may be all a page holds
    assert kaggle.requests.count("competition_submissions") == (2 if largest_page > 50 else 3)


def test_the_listing_reads_the_newest_thousand_rows_in_pages_of_any_size(kaggle, monkeypatch):
    # Twenty pages were read whatever they held: of pages held to 20 rows, the newest 400.
    kaggle.largest_page = 20
    when = datetime(2026, 11, 24, 9, 0)
    kaggle.submissions = [api_submission(ref, f"run {ref}", when) for ref in range(1, 501)]
    assert len(kaggle_api.list_submissions()) == 500
    monkeypatch.setattr(kaggle_api, "MOST_LISTED", 100)
    kaggle.requests.clear()
    assert [row.ref for row in kaggle_api.list_submissions()] == list(range(1, 101))
    assert kaggle.requests.count("competition_submissions") == 5


@pytest.mark.parametrize("score", ["N/A", "nan", "inf"])
def test_a_listed_score_that_is_no_number_reads_as_none(kaggle, score):
    # An old row's odd score was a ValueError traceback that stopped every listing.
    when = datetime(2026, 11, 24, 9, 0)
    kaggle.submissions = [api_submission(2, "new", when, public_score="0.99600"),
                          api_submission(1, "old", when, public_score=score)]
    assert [row.public_score for row in kaggle_api.list_submissions()] == [0.996, None]


def test_a_request_kaggle_stays_silent_on_gives_up(kaggle, monkeypatch):
    # kagglesdk sends without a timeout: a stalled connection waited for ever, whatever
    # --wait-minutes said.
    from src import kaggle_session

    silent = socket.create_server(("127.0.0.1", 0))  # takes the connection, never answers
    url = f"http://127.0.0.1:{silent.getsockname()[1]}/"
    monkeypatch.setattr(kaggle_session, "REQUEST_SECONDS", 0.5)
    session = kaggle_session.KaggleSession("score", "try again later")
    monkeypatch.setattr(session.api, "stalled", lambda: requests.Session().get(url),
                        raising=False)
    try:
        with pytest.raises(DataError, match=r"found no connection \(ReadTimeout\)"):
            session.call("stalled")
    finally:
        silent.close()
    assert requests.Session.send.__name__ == "send"  # requests as it was


def test_find_submission_by_id_or_by_message_file_and_date():
    rows = [kaggle_api.Submission(ref, message, "submission.csv", date, "complete", score)
            for ref, message, date, score in [
                (3, "again", "2026-11-24T12:00:00+00:00", 0.991),
                (2, "quick", "2026-11-24T11:00:00+00:00", 0.995),
                (1, "quick", "2026-11-23T09:00:00+00:00", 0.990)]]
    assert kaggle_api.find_submission(rows, ref=1).public_score == 0.990
    assert kaggle_api.find_submission(rows, ref=9) is None
    newest = kaggle_api.find_submission(rows, message="quick", file_name="submission.csv")
    assert newest.ref == 2
    assert kaggle_api.find_submission(rows, message="quick", file_name="submission.csv",
                                      after="2026-11-24T11:30:00+00:00") is None
    assert kaggle_api.find_submission(rows, message="quick", file_name="other.csv") is None


# ---------------------------------------------------------------- submit --upload records it


@pytest.fixture
def run_dir(tmp_path):
    """A published quick run with OOF 99.567% (41,818 of 42,000)."""
    return write_run(tmp_path / "submissions", "20261124-093000-quick-kaggle", correct=41_818)


def _submit_check(run_dir, data_dir, *extra):
    return config.run_cli(submit.main, ["--check", str(run_dir / "submission.csv"), "--upload",
                                        "--data-dir", str(data_dir), *extra])


def test_upload_of_a_run_waits_and_records_the_score_beside_the_oof(
        kaggle, run_dir, kaggle_dir_readonly, capsys):
    assert _submit_check(run_dir, kaggle_dir_readonly) == 0
    out = capsys.readouterr().out
    message = "quick: 1 config x 3 folds, OOF 99.567%, run 20261124-093000-quick-kaggle"
    assert f"as {message!r}" in out
    line = "Kaggle public score: 0.99567 (99.567%) beside 99.567% out of fold"
    assert line in out
    record = json.loads((run_dir / "metrics.json").read_text())["kaggle"]
    assert record == {**record, "ref": 1000, "message": message, "status": "complete",
                      "public_score": 0.99567, "file_name": "submission.csv"}
    for name in ("report.md", "report.html"):
        document = (run_dir / name).read_text()
        assert document.count(line) == 1 and document.count("<!-- kaggle -->") == 1
    assert not [path.name for path in run_dir.iterdir() if path.name.startswith(".")]


@pytest.mark.parametrize("field, value", [("ensemble", []), ("run_info", []),
                                          ("models", 5), ("report.md", b"\xff")])
def test_a_run_with_damaged_files_is_one_line_before_anything_is_sent(
        kaggle, run_dir, kaggle_dir_readonly, capsys, field, value):
    """The upload would be recorded in that run's metrics.json and reports, and its default
    message read from it: each crashed after the CSV was checked (a damaged report, after
    the upload had gone through)."""
    path = run_dir / "metrics.json"
    if field == "report.md":
        path = run_dir / field
        path.write_bytes(value)
    else:
        metrics = json.loads(path.read_text())
        metrics[field] = value
        path.write_text(json.dumps(metrics))
    before = path.read_bytes()
    assert _submit_check(run_dir, kaggle_dir_readonly, "-m", "mine") == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {path}: ") and err.count("\n") == 1
    assert err.endswith("(the upload would be recorded in this run; to upload the CSV alone, "
                        "copy it out of the run folder)\n")
    assert kaggle.requests == [] and path.read_bytes() == before


@pytest.mark.parametrize("argv, found", [
    (["-m", "mine"], "--message: expected --upload with --message, found --message without "
                     "--upload"),
    (["--no-wait"], "--no-wait: expected --upload with --no-wait, found --no-wait without "
                    "--upload"),
    (["--wait-minutes", "5"], "--wait-minutes: expected --upload with --wait-minutes, found "
                              "--wait-minutes without --upload"),
    (["--upload", "-m", " "], "--message: expected a submission message, found an empty one "
                              "(leave -m out for the default)"),
    (["--upload", "--no-wait", "--wait-minutes", "5"], "--wait-minutes: expected "
     "--wait-minutes without --no-wait, found both"),
    # A check trains nothing: these were dropped, and it exited 0.
    (["--epochs", "7", "--folds", "9"], "--epochs: expected --check with the data and Kaggle "
     "flags only, found --epochs, which a check does not use (it trains nothing)"),
    (["--submissions-dir", "elsewhere", "--seed", "3"], "--seed: expected --check with the data "
     "and Kaggle flags only, found --seed, which a check does not use (it trains nothing)"),
])
def test_a_message_that_would_be_dropped_is_refused(run_dir, kaggle_dir_readonly, capsys, argv,
                                                    found):
    code = config.run_cli(submit.main, ["--check", str(run_dir / "submission.csv"),
                                        "--data-dir", str(kaggle_dir_readonly), *argv])
    assert code == 2 and capsys.readouterr().err == f"error: {found}\n"


@pytest.mark.parametrize("flags, found", [
    (["--plan-only"], "--plan-only: expected --check without --plan-only, found both"),
    (["--source", "keras"], "--check: expected --source kaggle with --check, found --source "
                            "keras"),
])
def test_check_refuses_flags_it_would_drop(run_dir, kaggle_dir_readonly, capsys, flags, found):
    code = config.run_cli(submit.main, ["--check", str(run_dir / "submission.csv"),
                                        "--data-dir", str(kaggle_dir_readonly), *flags])
    assert code == 2 and capsys.readouterr().err == f"error: {found}\n"


def test_a_plan_with_upload_is_refused_before_anything_runs(kaggle_dir_readonly, capsys):
    # A plan trains and publishes nothing: the upload would be dropped without a word.
    code = config.run_cli(submit.main, ["--plan-only", "--upload",
                                        "--data-dir", str(kaggle_dir_readonly)])
    assert code == 2
    assert capsys.readouterr().err == ("error: --upload: expected --upload without "
                                       "--plan-only, found both\n")


def test_the_score_goes_to_the_run_uploaded_when_latest_moves_during_the_wait(
        kaggle, run_dir, kaggle_dir_readonly, capsys, monkeypatch):
    # The README's command uploads submissions/latest/submission.csv; another src.submit
    # that publishes while the upload waits moves `latest` to its own run.
    latest = run_dir.parent / "latest"
    latest.symlink_to(run_dir.name)
    newer = write_run(run_dir.parent, "20261125-093000-quick-kaggle", correct=41_900)
    wait_for_score = kaggle_api.wait_for_score

    def newer_run_published(*args, **kwargs):
        latest.unlink()
        latest.symlink_to(newer.name)
        return wait_for_score(*args, **kwargs)

    monkeypatch.setattr(kaggle_api, "wait_for_score", newer_run_published)
    assert _submit_check(latest, kaggle_dir_readonly) == 0
    assert "beside 99.567% out of fold" in capsys.readouterr().out
    record = json.loads((run_dir / "metrics.json").read_text())["kaggle"]
    assert (record["status"], record["public_score"]) == ("complete", 0.99567)
    assert "kaggle" not in json.loads((newer / "metrics.json").read_text())


def test_upload_without_waiting_records_it_pending(kaggle, run_dir, kaggle_dir_readonly, capsys):
    assert _submit_check(run_dir, kaggle_dir_readonly, "--no-wait", "-m", "mine") == 0
    assert "Kaggle has not scored the submission yet (pending)" in capsys.readouterr().out
    assert "competition_submissions" not in kaggle.requests
    record = json.loads((run_dir / "metrics.json").read_text())["kaggle"]
    assert (record["status"], record["message"], record["public_score"]) == (
        "pending", "mine", None)


def test_scoring_error_is_recorded_and_one_line_exit_2(kaggle, run_dir, kaggle_dir_readonly,
                                                        capsys):
    kaggle.outcome = ("error", "Bad row 7")
    assert _submit_check(run_dir, kaggle_dir_readonly) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "kaggle score: expected a scored submission, found " in err
    assert "Kaggle's error 'Bad row 7'" in err
    record = json.loads((run_dir / "metrics.json").read_text())["kaggle"]
    assert (record["status"], record["error"]) == ("error", "Bad row 7")


def test_time_limit_leaves_it_pending_for_sync(kaggle, run_dir, kaggle_dir_readonly, capsys):
    kaggle.polls_to_score = NEVER
    assert _submit_check(run_dir, kaggle_dir_readonly, "--wait-minutes", "0") == 0
    assert "python -m src.runs --sync fetches the score" in capsys.readouterr().out
    assert kaggle.requests.count("competition_submissions") == 1
    assert json.loads((run_dir / "metrics.json").read_text())["kaggle"]["status"] == "pending"


def test_a_failed_wait_keeps_the_upload_recorded(kaggle, run_dir, kaggle_dir_readonly, capsys):
    kaggle.failures["competition_submissions"] = requests.ConnectionError("offline")
    assert _submit_check(run_dir, kaggle_dir_readonly) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: kaggle score: ") and "no connection (ConnectionError)" in err
    assert "the upload went through; `python -m src.runs --sync` records the score later" in err
    assert json.loads((run_dir / "metrics.json").read_text())["kaggle"]["ref"] == 1000


def test_a_reply_the_kaggle_package_cannot_read_says_so(kaggle, run_dir, kaggle_dir_readonly,
                                                       capsys):
    """A status this kagglesdk does not know is its KeyError: the line blamed the
    credentials and the network."""
    from kagglesdk.competitions.types.competition_api_service import ApiSubmission

    with pytest.raises(KeyError) as unknown_status:
        ApiSubmission.from_dict({"ref": 5, "status": "SUBMISSION_STATUS_RUNNING"})
    kaggle.failures["competition_submissions"] = unknown_status.value
    assert _submit_check(run_dir, kaggle_dir_readonly) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: kaggle score: expected a reply from Kaggle for competition "
                          "'digit-recognizer', found KeyError (a reply the kaggle package "
                          "cannot read) (update it: pip install -U kaggle; ")


def test_ctrl_c_after_the_upload_says_it_went_through(kaggle, run_dir, kaggle_dir_readonly,
                                                     capsys, monkeypatch):
    # "Run the same command again" would upload a second time, using up one of the day's
    # submissions and replacing the first one's id in the run.
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(kaggle_api, "wait_for_score", interrupted)
    assert _submit_check(run_dir, kaggle_dir_readonly) == 130
    assert capsys.readouterr().err == ("interrupted: the upload went through; `python -m "
                                       "src.runs --sync` records the score later\n")
    assert json.loads((run_dir / "metrics.json").read_text())["kaggle"]["ref"] == 1000


@pytest.mark.parametrize("message", [[], ["-m", "a's message"]])  # quoted for the shell
def test_ctrl_c_during_the_upload_says_it_may_have_gone_through(kaggle, run_dir,
                                                               kaggle_dir_readonly, capsys,
                                                               message):
    # "Run the same command again to resume" uploaded a file Kaggle may already hold.
    kaggle.failures["competition_submit"] = KeyboardInterrupt()
    assert _submit_check(run_dir, kaggle_dir_readonly, *message) == 130
    found = ("the competition's My Submissions page lists it" if message
             else "`python -m src.runs --sync` records it")
    again = shlex.join(["python", "-m", "src.submit", "--check",
                        str(run_dir / "submission.csv"), "--upload", *message])
    assert capsys.readouterr().err == (
        f"interrupted: the upload may have gone through: {found} if it did; if not, upload it "
        f"with `{again}` (each upload uses one of today's submissions)\n")


def test_ctrl_c_during_a_second_upload_of_a_run_points_to_kaggle_s_page(
        kaggle, run_dir, kaggle_dir_readonly, capsys):
    """--sync finds a run that recorded an upload by that upload's id: it would not record
    the second one, and the user would upload a third time."""
    assert _submit_check(run_dir, kaggle_dir_readonly) == 0
    capsys.readouterr()
    kaggle.failures["competition_submit"] = KeyboardInterrupt()
    assert _submit_check(run_dir, kaggle_dir_readonly) == 130
    assert capsys.readouterr().err.startswith(
        "interrupted: the upload may have gone through: the competition's My Submissions page "
        "lists it if it did; ")


def test_a_message_in_bytes_that_are_not_utf8_is_refused_before_the_upload(
        kaggle, run_dir, kaggle_dir_readonly, capsys):
    """A Latin-1 shell's é reaches Python as a lone surrogate: the upload and its record
    went through, and every later ledger failed to write runs.csv."""
    assert _submit_check(run_dir, kaggle_dir_readonly, "-m", "caf\udce9") == 2
    assert capsys.readouterr().err == ("error: --message: expected a submission message in "
                                       "UTF-8 text, found bytes that are not UTF-8\n")
    assert kaggle.requests == []


def test_a_record_that_fails_after_the_upload_says_it_went_through(
        kaggle, run_dir, kaggle_dir_readonly, capsys, monkeypatch):
    def full_disk(path, text, *args, **kwargs):
        disk_full()

    monkeypatch.setattr(Path, "write_text", full_disk)  # metrics.json and the reports
    assert _submit_check(run_dir, kaggle_dir_readonly) == 2
    err = capsys.readouterr().err
    # the reports are written first: metrics.json, which --sync compares with, comes last
    assert err.startswith(f"error: {run_dir / 'report.md'}: expected a writable folder")
    assert err.endswith("(the upload went through; `python -m src.runs --sync` records the "
                        "score later)\n") and err.count("\n") == 1
    assert kaggle.requests.count("competition_submit") == 1


def test_another_csv_in_a_run_folder_is_uploaded_without_the_run(kaggle, run_dir,
                                                                 kaggle_dir_readonly, capsys):
    # An edited copy is not the file the run's OOF accuracy stands for.
    edited = run_dir / "hand_edited.csv"
    edited.write_bytes((run_dir / "submission.csv").read_bytes())
    before = (run_dir / "metrics.json").read_bytes()
    code = config.run_cli(submit.main, ["--check", str(edited), "--upload",
                                        "--data-dir", str(kaggle_dir_readonly)])
    assert code == 0
    out = capsys.readouterr().out
    assert "as 'checked hand_edited.csv'" in out and "Kaggle public score: 0.99567" in out
    assert "beside" not in out  # no OOF accuracy to set it beside
    assert (run_dir / "metrics.json").read_bytes() == before
    # Unscored yet, or a failed wait: Kaggle's page, for no run would record its score.
    assert config.run_cli(submit.main, ["--check", str(edited), "--upload", "--no-wait",
                                        "--data-dir", str(kaggle_dir_readonly)]) == 0
    out = capsys.readouterr().out
    assert out.rstrip().endswith("its score is on the competition's My Submissions page")
    assert "--sync" not in out
    kaggle.failures["competition_submissions"] = requests.ConnectionError("offline")
    assert config.run_cli(submit.main, ["--check", str(edited), "--upload",
                                        "--data-dir", str(kaggle_dir_readonly)]) == 2
    assert capsys.readouterr().err.endswith(
        "; the upload went through; its score is on the competition's My Submissions page)\n")


def test_a_wait_by_message_never_takes_an_older_submission_of_the_same_name(kaggle,
                                                                           monkeypatch):
    # Where Kaggle's reply gave no id, the submission is found by message and file name:
    # an earlier upload of the same run is not it.
    sent = kaggle_api.Submission(0, "quick", "submission.csv", "2026-12-06T10:00:00+00:00",
                                 "pending")
    older = kaggle_api.Submission(7, "quick", "submission.csv", "2026-12-05T09:00:00+00:00",
                                  "complete", 0.995)
    monkeypatch.setattr(kaggle_api, "_list_submissions", lambda session, enough: [older])
    clock = FakeClock()
    assert kaggle_api.wait_for_score(sent, 0, clock=clock, sleep=clock.sleep) == sent
    late_clock = dataclasses.replace(older, ref=8, date="2026-12-06T09:59:30+00:00")
    monkeypatch.setattr(kaggle_api, "_list_submissions", lambda session, enough: [late_clock])
    assert kaggle_api.wait_for_score(sent, 0, clock=clock, sleep=clock.sleep).ref == 8


def test_a_negative_or_endless_wait_is_refused():
    for minutes in ("-1", "inf", "nan", "1e+308"):
        with pytest.raises(DataError, match=re.escape(
                f"--wait-minutes: expected a number of minutes 0..525600, found {minutes}")):
            submit._parse_args(["--upload", "--wait-minutes", minutes])
