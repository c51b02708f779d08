"""A stand-in for Kaggle behind the kaggle package's own KaggleApi class: no network.

``StandInKaggle`` holds what the server would (the competition zip, the user's
submissions and how scoring them ends); ``stand_in_api(KaggleApi, kaggle)`` is
the real KaggleApi with sign-in skipped and its competition requests answered
from that state, with kagglesdk's own reply types, so field names and types are
the installed 2.x ones.
"""

from __future__ import annotations

import io
import json
import os
import zipfile
from datetime import datetime, timedelta
from pathlib import Path

import requests

NEVER = 10**9


def competition_zip(data_dir: Path, names=("train.csv", "test.csv", "sample_submission.csv")
                    ) -> bytes:
    """The competition's download as Kaggle serves it: one zip of the CSVs."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name in names:
            archive.write(data_dir / name, name)
    return buffer.getvalue()


def http_error(status: int, message: str) -> requests.HTTPError:
    """What kagglesdk raises for a refused request (response.raise_for_status())."""
    response = requests.Response()
    response.status_code = status
    response.url = "https://api.kaggle.com/v1/competitions.CompetitionApiService/X"
    response._content = json.dumps({"code": status, "message": message}).encode()
    return requests.HTTPError(f"{status} Client Error: {message}", response=response)


def api_submission(ref: int, description: str, date: datetime, status: str = "complete",
                   public_score: str = "", error: str = "", file_name: str = "submission.csv"):
    """One row of competition_submissions, as kagglesdk builds it."""
    from kagglesdk.competitions.types.competition_api_service import ApiSubmission
    from kagglesdk.competitions.types.submission_status import SubmissionStatus

    row = ApiSubmission()
    row.ref, row.description, row.date, row.file_name = ref, description, date, file_name
    row.status = SubmissionStatus[status.upper()]
    row.public_score = public_score
    row.error_description = error
    return row


class StandInKaggle:
    """The server side: what it holds, what it answers, and every request it got."""

    def __init__(self, data_zip: bytes = b""):
        self.data_zip = data_zip
        self.submissions: list = []  # ApiSubmission rows, newest first
        self.polls_to_score = 1  # listings a new submission stays pending for
        self.outcome = ("complete", "0.99567")  # or ("error", "its error description")
        self.failures: dict[str, Exception] = {}  # request name -> what it raises
        self.requests: list[str] = []
        self.now = datetime(2026, 11, 24, 10, 0, 0)  # naive UTC, as kagglesdk parses dates
        self.largest_page = 10**6  # rows a page holds at most, whatever page_size asks
        self._waiting: dict[int, int] = {}

    def answer(self, request: str) -> None:
        """Count the request; raise its failure if one is set."""
        self.requests.append(request)
        if request in self.failures:
            raise self.failures[request]

    def submit(self, file_name: str, message: str):
        """Add a pending submission; kagglesdk's reply to it."""
        from kagglesdk.competitions.types.competition_api_service import (
            ApiCreateSubmissionResponse,
        )

        ref = 1000 + len(self.submissions)
        self.now += timedelta(minutes=1)
        self.submissions.insert(0, api_submission(ref, message, self.now, "pending",
                                                  file_name=os.path.basename(file_name)))
        self._waiting[ref] = self.polls_to_score
        reply = ApiCreateSubmissionResponse()
        reply.message, reply.ref = "Successfully submitted to Digit Recognizer", ref
        return reply

    def listing(self, page: int, page_size: int) -> list:
        """A page of the submissions, newest first; each listing brings scoring a poll nearer."""
        for row in self.submissions:
            if row.ref in self._waiting:
                self._waiting[row.ref] -= 1
                if self._waiting[row.ref] <= 0:
                    del self._waiting[row.ref]
                    self._score(row)
        page_size = min(page_size, self.largest_page)
        first = (max(page, 1) - 1) * page_size
        return self.submissions[first:first + page_size]

    def _score(self, row) -> None:
        from kagglesdk.competitions.types.submission_status import SubmissionStatus

        status, value = self.outcome
        row.status = SubmissionStatus[status.upper()]
        if status == "complete":
            row.public_score = value
        else:
            row.error_description = value


def stand_in_api(kaggle_api_class, kaggle: StandInKaggle):
    """The real KaggleApi class, signing in without credentials and answering from kaggle."""

    class StandInApi(kaggle_api_class):
        def authenticate(self):
            kaggle.answer("authenticate")

        def competition_submit(self, file_name, message, competition, quiet=False,
                               sandbox=False):
            kaggle.answer("competition_submit")
            print("uploading ...")  # the library's chatter, which must be swallowed
            return kaggle.submit(file_name, message)

        def competition_submissions(self, competition, group=None, sort=None, page_number=-1,
                                    page_token="", page_size=20):
            kaggle.answer("competition_submissions")
            return kaggle.listing(page_number, page_size)

        def competition_download_files(self, competition, path=None, force=False, quiet=True,
                                       unzip=False):
            kaggle.answer("competition_download_files")
            os.makedirs(path, exist_ok=True)
            Path(path, f"{competition}.zip").write_bytes(kaggle.data_zip)

    return StandInApi
