"""Signing in to Kaggle through the kaggle package (2.x), and turning its failures into
one DataError line that never holds a credential.

kaggle 2.x signs in with the first of: an API token ($KAGGLE_API_TOKEN or
~/.kaggle/access_token), a legacy key (kaggle.json or $KAGGLE_USERNAME and
$KAGGLE_KEY), OAuth credentials from `kaggle auth login`. Everything the
library prints is swallowed (in verbose mode it prints request headers). The
kaggle package is imported lazily, inside a sign-in: importing it tries to sign
in and prints its help when it finds no credentials.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
from pathlib import Path

from src.errors import DataError
from src.util import read_json

COMPETITION = "digit-recognizer"
# The longest Kaggle may stay silent on one request (connecting, or between bytes of its
# reply): kagglesdk sends without a timeout, and a stalled connection waited for ever.
REQUEST_SECONDS = 120.0
TOKEN_PAGE = "https://www.kaggle.com/settings/api"
LEGACY_VARIABLES = ("KAGGLE_USERNAME", "KAGGLE_KEY")

# What each HTTP status of a refused request asks the user to check.
HTTP_HINTS = {
    401: "Kaggle refused the credentials: check them, or create new ones at " + TOKEN_PAGE,
    403: "join the competition and accept its rules at "
         "https://www.kaggle.com/competitions/{competition}/rules",
    404: "check the competition name {competition!r}",
    429: "too many requests or today's submissions are used up: try again later",
}


class KaggleSession:
    """A signed-in KaggleApi for one competition and one action (upload, download, ...).

    Every request goes through ``call``: the library's output is swallowed and a
    failure becomes one DataError naming the action, ending with ``keep`` (what
    is left as it was and how to try again), with every credential redacted.
    """

    def __init__(self, action: str, keep: str, competition: str = COMPETITION):
        self.where = f"kaggle {action}"
        self.keep = keep
        self.competition = competition
        self.api = None
        with _quiet():
            self.api = self._sign_in()

    def call(self, method: str, *args, **kwargs):
        """``api.method(*args, **kwargs)``, quietly; any failure as one DataError."""
        try:
            with _quiet(), _timed_requests(REQUEST_SECONDS):
                return getattr(self.api, method)(*args, **kwargs)
        except Exception as error:  # requests, kagglesdk and the server fail in many ways
            raise self.failure(error) from None

    def redact(self, text: str) -> str:
        """text with every credential this process could send replaced by ``***``."""
        for secret in _secrets(self.api):
            text = text.replace(secret, "***")
        return text

    def _sign_in(self):
        """A KaggleApi that has found credentials; DataError saying where to put them if not."""
        token = os.environ.get("KAGGLE_API_TOKEN", "")
        if token and not token.strip():  # importing kaggle would send it, and Kaggle refuse it
            raise DataError("an API token in $KAGGLE_API_TOKEN", "$KAGGLE_API_TOKEN set but "
                            "blank", column=self.where, hint=f"set it to a token from "
                            f"{TOKEN_PAGE}, or unset it; {self.keep}")
        try:
            from kaggle.api.kaggle_api_extended import KaggleApi
        except ImportError:
            raise DataError("the kaggle package", "not installed", column=self.where,
                            hint='pip install -e ".[kaggle]"') from None
        except SystemExit:  # `import kaggle` signs in, and some versions exit without credentials
            raise self._no_credentials("~/.kaggle/kaggle.json") from None
        api = KaggleApi()
        try:
            api.authenticate()
        except SystemExit:  # kaggle prints its help and calls exit(1) when it finds none
            raise (self._damaged_config(api.config, needs_key=True)
                   or self._no_credentials(api.config)) from None
        except Exception as error:  # checking a token asks Kaggle, so the network can fail
            self.api = api
            # a kaggle.json of settings only, beside a token, is fine: only one that is no
            # JSON object (the library's TypeError) is to blame
            raise (self._damaged_config(api.config, needs_key=False)
                   or self.failure(error)) from None
        if _blank_legacy_key(api):  # kaggle accepts empty ones, and the first request fails
            blank = [f"${name}" for name in LEGACY_VARIABLES
                     if name in os.environ and not os.environ[name].strip()]
            found = (f"{' and '.join(blank)} set but empty" if blank
                     else f"an empty username or key in {api.config}")
            raise DataError(_where_credentials_go(api.config), found, column=self.where,
                            hint=f"set them to your username and key, or unset them; "
                            f"{self.keep}")
        return api

    def _damaged_config(self, config_path: str, needs_key: bool) -> DataError | None:
        """The DataError for a kaggle.json that is there but unusable, or None; needs_key:
        no other credentials were found, so it must hold a username and key.

        The kaggle package skips such a file without a word (so a cut file read as
        "no credentials") or fails on it with a TypeError (a JSON list).
        """
        problem = _config_file_problem(Path(config_path), needs_key)
        if problem is None:
            return None
        return DataError('a JSON object with "username" and "key"', problem, file=config_path,
                         column=self.where,
                         hint=f"download a new kaggle.json from {TOKEN_PAGE}, or remove it and "
                         f"set $KAGGLE_API_TOKEN; {self.keep}")

    def _no_credentials(self, config_path: str) -> DataError:
        token = _token_source()
        if token is not None:  # kaggle asked Kaggle about it, was refused, and said nothing
            return DataError("an API token Kaggle accepts", f"the token in {token} refused "
                             "(expired or revoked)", column=self.where,
                             hint=f"create a new token at {TOKEN_PAGE}; {self.keep}")
        return DataError(_where_credentials_go(config_path), "none", column=self.where,
                         hint=f"create a token at {TOKEN_PAGE}; $KAGGLE_API_TOKEN or "
                         f"~/.kaggle/access_token also work; {self.keep}")

    def failure(self, error: Exception) -> DataError:
        """One line for a failed request: the HTTP status and the server's words, never a
        secret.

        Only an HTTP error's text (the server's message) is shown; any other exception
        is named by its type alone, since some (a malformed header) quote the credentials.
        """
        import requests

        expected = f"a reply from Kaggle for competition {self.competition!r}"
        response = getattr(error, "response", None)
        if isinstance(error, requests.HTTPError) and response is not None:
            status = response.status_code
            said = self.redact((str(error).splitlines() or [""])[0])[:200]
            hint = HTTP_HINTS.get(status, "try again later").format(competition=self.competition)
            return DataError(expected, f"HTTP {status} {said!r}", column=self.where,
                             hint=f"{hint}; {self.keep}")
        if isinstance(error, (requests.ConnectionError, requests.Timeout)):
            return DataError(expected, f"no connection ({type(error).__name__})",
                             column=self.where,
                             hint=f"check the network connection; {self.keep}")
        if isinstance(error, KeyError):  # kagglesdk met a field value it does not know
            return DataError(expected, "KeyError (a reply the kaggle package cannot read)",
                             column=self.where, hint=f"update it: pip install -U kaggle; "
                             f"{self.keep}")
        return DataError(expected, type(error).__name__, column=self.where,
                         hint=f"check the credentials and the network connection; {self.keep}")


def _token_source() -> str | None:
    """Where the kaggle package found an API token ($KAGGLE_API_TOKEN, or the file
    ~/.kaggle/access_token), or None when there is none."""
    try:
        from kagglesdk import get_access_token_from_env  # what kaggle 2.x reads it with
    except ImportError:
        return None
    token, source = get_access_token_from_env()
    if not token:
        return None
    return {"KAGGLE_API_TOKEN": "$KAGGLE_API_TOKEN",
            "access_token": "~/.kaggle/access_token"}.get(source, source)


def _where_credentials_go(config_path: str) -> str:
    return (f"Kaggle API credentials in {config_path} (chmod 600) "
            "or $KAGGLE_USERNAME and $KAGGLE_KEY")


def _config_file_problem(config_path: Path, needs_key: bool) -> str | None:
    """What makes an existing kaggle.json unusable (needs_key: as the only credentials);
    None when it is absent or usable.

    Never quotes the file: it holds the key.
    """
    if not config_path.exists():
        return None
    try:
        values = read_json(config_path)
    except UnicodeDecodeError:
        return "bytes that are not UTF-8 text"
    except json.JSONDecodeError as error:  # its message names the place, never the text
        return f"not JSON ({error.msg}: line {error.lineno} column {error.colno})"
    except ValueError as error:
        return f"not usable JSON ({error})"
    except OSError as error:
        return f"a file that cannot be read ({type(error).__name__})"
    if not isinstance(values, dict):
        return f"a JSON {type(values).__name__}"
    missing = [name for name in ("username", "key") if name not in values]
    if missing and needs_key:
        return "an object without " + " and ".join(f'"{name}"' for name in missing)
    return None


@contextlib.contextmanager
def _quiet():
    """Swallow what the kaggle library prints (its verbose mode prints request headers)."""
    chatter = io.StringIO()
    with contextlib.redirect_stdout(chatter), contextlib.redirect_stderr(chatter):
        yield


@contextlib.contextmanager
def _timed_requests(seconds: float):
    """requests' Session.send with a timeout of seconds where its caller gave none (a
    timeout is requests.Timeout, which KaggleSession.failure words as no connection).
    Socket's default timeout is no help: requests sets none on its sockets."""
    import requests

    send = requests.Session.send

    def send_with_timeout(session, request, **kwargs):
        if kwargs.get("timeout") is None:
            kwargs["timeout"] = seconds
        return send(session, request, **kwargs)

    requests.Session.send = send_with_timeout
    try:
        yield
    finally:
        requests.Session.send = send


def _blank_legacy_key(api) -> bool:
    """True when the API signed in with a legacy username and key of which one is empty."""
    values = api.config_values
    names = (api.CONFIG_NAME_USER, api.CONFIG_NAME_KEY)
    if values.get(api.CONFIG_NAME_TOKEN) or not all(name in values for name in names):
        return False  # an API token or OAuth signed in, not a legacy key
    return not all(str(values[name]).strip() for name in names)


def _secrets(api) -> set[str]:
    """Every credential value this process could send: the environment's and the API's."""
    values = {os.environ.get("KAGGLE_KEY"), os.environ.get("KAGGLE_API_TOKEN")}
    if api is not None:
        values |= {api.config_values.get("key"), api.config_values.get("token")}
    return {value for value in values if value}
