"""Ray's job API for `s4sweep submit` (orchestrator/submit.py decides what to send; this class talks to the cluster)."""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import ray

log = logging.getLogger(__name__)


class RayJobs:
    """The job API of one cluster (its dashboard URL), through Ray's JobSubmissionClient.

    Token auth is Ray's own: the client sends the token from RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH or ~/.ray/auth_token
    when RAY_AUTH_MODE=token. Every failure becomes an `error` (submit.py passes its SubmitError) naming the address
    and what to change.
    """

    def __init__(self, address: str, *, error: type[Exception] = RuntimeError) -> None:
        from ray.job_submission import JobSubmissionClient

        self.address, self.error = address, error
        with self._errors("connecting"):
            self.client = JobSubmissionClient(address)

    def submit(self, *, entrypoint: str, submission_id: str, runtime_env: Mapping[str, Any] | None = None,
               metadata: Mapping[str, str] | None = None) -> str:
        with self._errors(f"submitting {submission_id}"):
            return self.client.submit_job(entrypoint=entrypoint, submission_id=submission_id,
                                          runtime_env=dict(runtime_env or {}), metadata=dict(metadata or {}))

    def wait(self, submission_id: str, *, timeout_s: float) -> str:
        """Poll until the job ends; returns PENDING/RUNNING if it has not ended within `timeout_s`."""
        deadline = time.monotonic() + timeout_s
        with self._errors(f"waiting for {submission_id}"):
            while True:
                status = self.client.get_job_status(submission_id)
                if status.is_terminal() or time.monotonic() > deadline:
                    return str(status)
                time.sleep(0.5)

    def follow(self, submission_id: str, echo: Callable[[str], None]) -> str:
        """Stream the job's logs until it ends; returns its final status (SUCCEEDED, FAILED or STOPPED)."""
        import asyncio

        async def tail() -> None:
            async for chunk in self.client.tail_job_logs(submission_id):
                echo(chunk)

        with self._errors(f"following {submission_id}"):
            try:
                asyncio.run(tail())
            except RuntimeError as e:  # the log stream closed early: the status below still tells how it ended
                log.warning("log stream of %s closed: %s", submission_id, e)
        return self.wait(submission_id, timeout_s=float("inf"))

    def message(self, submission_id: str) -> str:
        with self._errors(f"reading {submission_id}"):
            return self.client.get_job_info(submission_id).message or ""

    def logs(self, submission_id: str) -> str:
        with self._errors(f"reading the logs of {submission_id}"):
            return self.client.get_job_logs(submission_id)

    def delete(self, submission_id: str) -> None:
        with self._errors(f"deleting {submission_id}"):
            self.client.delete_job(submission_id)

    @contextlib.contextmanager
    def _errors(self, doing: str) -> Iterator[None]:
        from ray.exceptions import AuthenticationError

        try:
            yield
        except AuthenticationError as e:
            mode = os.environ.get("RAY_AUTH_MODE", "")
            hint = ("check that RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH or ~/.ray/auth_token holds this cluster's token"
                    if mode == "token" else "set RAY_AUTH_MODE=token and give the cluster's token through "
                    "RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH or ~/.ray/auth_token")
            first = next((line for line in str(e).splitlines() if line.strip()), "authentication failed")
            raise self.error(f"the Ray cluster at {self.address} refused the request ({first}); {hint}") from None
        except (OSError, ValueError) as e:  # requests' ConnectionError is an OSError
            raise self.error(f"cannot reach the Ray job API at {self.address} while {doing}: {e} (the address is "
                              "the dashboard's URL, http://<head>:8265 by default)") from None
        except RuntimeError as e:  # the SDK's "Request failed with status code ..."
            raise self.error(f"the Ray job API at {self.address} failed while {doing}: {e}") from None
        except (TypeError, KeyError) as e:  # an answer the SDK cannot parse: another Ray version, or not Ray at all
            raise self.error(f"the Ray job API at {self.address} gave an answer this Ray {ray.__version__} client "
                              f"cannot read while {doing} ({type(e).__name__}: {e}); is it a Ray dashboard of the "
                              "same version?") from None
