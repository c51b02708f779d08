"""Uploading a submission: the kaggle API stood in (no network), one-line errors, no secrets."""

from __future__ import annotations

import base64
import json
import os
import sys

import pytest
import requests

from src import config, kaggle_api
from src.errors import DataError

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
def real_api(tmp_path, monkeypatch):
    """The real KaggleApi class, in a home with no credentials and no KAGGLE_* variables."""
    module = pytest.importorskip("kaggle.api.kaggle_api_extended")
    for name in [name for name in os.environ if name.startswith("KAGGLE_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setattr(module.KaggleApi, "config", str(tmp_path / "home/.kaggle/kaggle.json"))
    return module.KaggleApi


@pytest.fixture
def legacy_key(real_api, monkeypatch):
    """Legacy credentials in the environment; the library in verbose mode (it prints headers)."""
    monkeypatch.setenv("KAGGLE_USERNAME", USERNAME)
    monkeypatch.setenv("KAGGLE_KEY", SECRET)
    monkeypatch.setattr(real_api, "args", ["--verbose"])
    return real_api


def _fail_upload(csv_path, capfd) -> str:
    """Run an upload that must fail through the CLI wrapper; return its one stderr line."""
    code = config.run_cli(lambda argv: kaggle_api.upload_submission(csv_path, "a message"), [])
    out, err = capfd.readouterr()
    assert code == 2 and out == ""
    assert err.startswith("error: kaggle upload: ") and err.count("\n") == 1
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


def test_success_submits_the_file_with_message_and_competition(real_api, monkeypatch, csv_path):
    calls = []

    class FakeApi(real_api):
        def authenticate(self):
            pass

        def competition_submit(self, file_name, message, competition, quiet=False):
            calls.append((file_name, message, competition, quiet))
            print("uploading...")  # the library's chatter is swallowed
            return type("Reply", (), {"message": "Successfully submitted to Digit Recognizer"})

    monkeypatch.setattr(sys.modules[real_api.__module__], "KaggleApi", FakeApi)
    reply = kaggle_api.upload_submission(csv_path, "5-fold, top-3")
    assert reply == "Successfully submitted to Digit Recognizer"
    assert calls == [(str(csv_path), "5-fold, top-3", "digit-recognizer", True)]


def test_no_credentials_says_where_they_go_and_keeps_the_csv(real_api, csv_path, capfd):
    before = csv_path.read_bytes()
    err = _fail_upload(csv_path, capfd)
    assert "home/.kaggle/kaggle.json (chmod 600) or $KAGGLE_USERNAME and $KAGGLE_KEY" in err
    assert "found none" in err and f"{csv_path} is kept" in err
    assert csv_path.read_bytes() == before


@pytest.mark.parametrize("empty", [("KAGGLE_USERNAME", "KAGGLE_KEY"), ("KAGGLE_KEY",)])
def test_empty_username_and_key_are_missing_credentials_not_a_request(real_api, monkeypatch,
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
def test_no_connection_is_one_line_without_the_secret(real_api, monkeypatch, csv_path, capfd,
                                                      credential):
    if credential == "legacy key":
        monkeypatch.setenv("KAGGLE_USERNAME", USERNAME)
        monkeypatch.setenv("KAGGLE_KEY", SECRET)
    else:
        monkeypatch.setenv("KAGGLE_API_TOKEN", SECRET)
    monkeypatch.setattr(real_api, "args", ["--verbose"])

    def unreachable(session, request, **kwargs):
        raise requests.ConnectionError(f"cannot reach api.kaggle.com with {request.headers}")

    monkeypatch.setattr(requests.Session, "send", unreachable)
    err = _fail_upload(csv_path, capfd)
    assert "found no connection (ConnectionError) (check the network connection;" in err
    assert "for competition 'digit-recognizer'" in err
    _assert_no_secret(err)


def test_unfinished_upload_is_an_error(real_api, monkeypatch, csv_path):
    class FakeApi(real_api):
        def authenticate(self):
            pass

        def competition_submit(self, file_name, message, competition, quiet=False):
            return type("Reply", (), {"message": self.COMPETITION_SUBMIT_UPLOAD_FAILED_MESSAGE})

    monkeypatch.setattr(sys.modules[real_api.__module__], "KaggleApi", FakeApi)
    with pytest.raises(DataError, match="found an unfinished upload"):
        kaggle_api.upload_submission(csv_path, "m")


def test_missing_kaggle_package_says_how_to_install_it(monkeypatch, csv_path):
    monkeypatch.setitem(sys.modules, "kaggle.api.kaggle_api_extended", None)
    with pytest.raises(DataError) as caught:
        kaggle_api.upload_submission(csv_path, "m")
    assert str(caught.value) == ('kaggle upload: expected the kaggle package, found not installed '
                                 '(pip install -e ".[kaggle]")')


def test_missing_csv_is_named(tmp_path):
    with pytest.raises(DataError, match="nope.csv: expected a submission CSV, found no such file"):
        kaggle_api.upload_submission(tmp_path / "nope.csv", "m")
