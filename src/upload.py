"""Upload a submission CSV to the competition through the kaggle package's API.

kaggle 2.x signs in with the first of: an API token ($KAGGLE_API_TOKEN or
~/.kaggle/access_token), a legacy key (kaggle.json or $KAGGLE_USERNAME and
$KAGGLE_KEY), OAuth credentials from `kaggle auth login`. Everything the
library prints is swallowed (in verbose mode it prints request headers), and
every failure becomes one DataError line that never holds a credential. The
CSV is never touched: after a failure it can be uploaded again as it is.
"""

from __future__ import annotations

import contextlib
import io
import os
from pathlib import Path

from src.errors import DataError

COMPETITION = "digit-recognizer"
TOKEN_PAGE = "https://www.kaggle.com/settings/api"
WHERE = "kaggle upload"

# What each HTTP status of a refused submission asks the user to check.
HTTP_HINTS = {
    401: "Kaggle refused the credentials: check them, or create new ones at " + TOKEN_PAGE,
    403: "join the competition and accept its rules at "
         "https://www.kaggle.com/competitions/{competition}/rules",
    404: "check the competition name {competition!r}",
    429: "too many requests or today's submissions are used up: try again later",
}


def upload_submission(csv_path: Path, message: str, competition: str = COMPETITION) -> str:
    """Submit csv_path to the competition through the kaggle package's API; return Kaggle's
    reply text. Raises DataError (one line, no credentials in it) when it cannot."""
    csv_path = Path(csv_path)
    if not csv_path.is_file():
        raise DataError("a submission CSV", "no such file", file=csv_path)
    retry = (f"{csv_path} is kept; upload it later with "
             f"`python -m src.submit --check {csv_path} --upload -m MESSAGE`")
    chatter = io.StringIO()
    with contextlib.redirect_stdout(chatter), contextlib.redirect_stderr(chatter):
        api = _signed_in_api(competition, retry)
        reply = _submit(api, csv_path, message, competition, retry)
    return _redact(reply, _secrets(api))


def _signed_in_api(competition: str, retry: str):
    """A KaggleApi that has found credentials; DataError saying where to put them if not."""
    try:
        from kaggle.api.kaggle_api_extended import KaggleApi
    except ImportError:
        raise DataError("the kaggle package", "not installed", column=WHERE,
                        hint='pip install -e ".[kaggle]"') from None
    api = KaggleApi()
    try:
        api.authenticate()
    except SystemExit:  # kaggle prints its help and calls exit(1) when it finds no credentials
        raise DataError(
            f"Kaggle API credentials in {api.config} (chmod 600) "
            "or $KAGGLE_USERNAME and $KAGGLE_KEY", "none", column=WHERE,
            hint=f"create a token at {TOKEN_PAGE}; "
            f"$KAGGLE_API_TOKEN or ~/.kaggle/access_token also work; {retry}") from None
    except Exception as error:  # checking a token asks Kaggle, so the network can fail here
        raise _failure(error, competition, retry, _secrets(api)) from None
    return api


def _submit(api, csv_path: Path, message: str, competition: str, retry: str) -> str:
    """Kaggle's reply to the submission; DataError naming the competition if it fails."""
    try:
        response = api.competition_submit(str(csv_path), message, competition, quiet=True)
    except Exception as error:  # requests, kagglesdk and the server fail in many ways
        raise _failure(error, competition, retry, _secrets(api)) from None
    if response.message == api.COMPETITION_SUBMIT_UPLOAD_FAILED_MESSAGE:
        raise DataError(f"an upload of {csv_path} to {competition!r}", "an unfinished upload",
                        column=WHERE, hint=f"check the network connection; {retry}")
    return response.message


def _failure(error: Exception, competition: str, retry: str, secrets: set[str]) -> DataError:
    """One line for a failed request: the HTTP status and the server's words, never a secret.

    Only an HTTP error's text (the server's message) is shown; any other exception
    is named by its type alone, since some (a malformed header) quote the credentials.
    """
    import requests

    expected = f"a reply from Kaggle for competition {competition!r}"
    response = getattr(error, "response", None)
    if isinstance(error, requests.HTTPError) and response is not None:
        status = response.status_code
        said = _redact((str(error).splitlines() or [""])[0], secrets)[:200]
        hint = HTTP_HINTS.get(status, "try again later").format(competition=competition)
        return DataError(expected, f"HTTP {status} {said!r}", column=WHERE,
                         hint=f"{hint}; {retry}")
    if isinstance(error, (requests.ConnectionError, requests.Timeout)):
        return DataError(expected, f"no connection ({type(error).__name__})", column=WHERE,
                         hint=f"check the network connection; {retry}")
    return DataError(expected, type(error).__name__, column=WHERE,
                     hint=f"check the credentials and the network connection; {retry}")


def _secrets(api) -> set[str]:
    """Every credential value this process could send: the environment's and the API's."""
    values = {os.environ.get("KAGGLE_KEY"), os.environ.get("KAGGLE_API_TOKEN")}
    values |= {api.config_values.get("key"), api.config_values.get("token")}
    return {value for value in values if value}


def _redact(text: str, secrets: set[str]) -> str:
    """text with every secret replaced by ``***``."""
    for secret in secrets:
        text = text.replace(secret, "***")
    return text
