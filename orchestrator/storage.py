"""Where a sweep run's state lives: a local directory (shared storage mounted at the same path on every node) or an
object store (`s3://bucket/prefix`, `gs://bucket/prefix`, anything `pyarrow.fs` understands), behind one small class.

Ray Tune reads and writes its experiment state and the trial checkpoints there itself (its own pyarrow.fs handling,
given the same URI); this module serves what s4sweep keeps beside them: `run.json`, the budget and trial-status
files, markers. No credentials pass through here: pyarrow (and boto3, for MLflow's artifacts) take them from the
standard AWS (or Google) environment variables, config files or the node's role. A URI carrying credentials is
refused, since URIs are logged and recorded.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
from dataclasses import dataclass, replace
from pathlib import Path
from urllib.parse import urlsplit

import pyarrow as pa
import pyarrow.fs as pafs

from trainers import fileio

PROBE_PREFIX = ".s4sweep-probe-"


class StorageError(ValueError):
    """The storage cannot be used as given; the message names the URI and what to do."""


@dataclass(frozen=True)
class Location:
    """A file or folder on a local or object-store filesystem; `/` joins like pathlib, `str()` gives the URI."""

    fs: pafs.FileSystem
    path: str  # the filesystem's own path: `/abs/dir` locally, `bucket/prefix` on S3
    scheme: str = ""  # "" for a local path
    query: str = ""  # an object store's options (`?endpoint_override=...`), kept for Ray

    def __truediv__(self, part: str) -> Location:
        return replace(self, path=f"{self.path.rstrip('/')}/{part}")

    def __str__(self) -> str:
        if not self.scheme:
            return self.path
        return f"{self.scheme}://{self.path}" + (f"?{self.query}" if self.query else "")

    @property
    def local(self) -> Path | None:
        """The local path, or None on an object store."""
        return None if self.scheme else Path(self.path)

    @property
    def name(self) -> str:
        return self.path.rstrip("/").rsplit("/", 1)[-1]

    def is_file(self) -> bool:
        return self.fs.get_file_info(self.path).type == pafs.FileType.File

    def read_text(self) -> str:
        with self.fs.open_input_stream(self.path) as f:
            return f.read().decode()

    def write_text(self, text: str) -> None:
        """Whole or not at all: a local file is written aside and renamed; an object is one PUT."""
        if self.local is None:
            with self.fs.open_output_stream(self.path) as f:
                f.write(text.encode())
            return
        self.local.parent.mkdir(parents=True, exist_ok=True)
        fileio.write_text(self.local, text)

    def children(self) -> list[Location]:
        """The entries directly inside this folder, sorted by name; none if it does not exist."""
        found = self.fs.get_file_info(pafs.FileSelector(self.path, allow_not_found=True))
        return sorted((replace(self, path=info.path) for info in found), key=lambda loc: loc.path)

    def delete(self) -> None:
        self.fs.delete_file(self.path)

    def download(self, dst: Path) -> Path:
        """Copy this folder's contents into the local folder `dst`."""
        if self.local is not None:
            shutil.copytree(self.local, dst, dirs_exist_ok=True)
        else:
            dst.mkdir(parents=True, exist_ok=True)
            pafs.copy_files(self.path, str(dst), source_filesystem=self.fs,
                            destination_filesystem=pafs.LocalFileSystem())
        return dst


def open_location(given: str | Path) -> Location:
    """A path (made absolute: Tune changes each trial's working directory) or a URI pyarrow.fs understands."""
    text = str(given)
    parts = urlsplit(text)
    if not parts.scheme or parts.scheme == "file" or len(parts.scheme) == 1:  # `C:` is a drive, not a scheme
        path = Path(text.removeprefix("file://")).expanduser().resolve()
        return Location(pafs.LocalFileSystem(), str(path))
    if "@" in parts.netloc or re.search(r"(^|&)(access_key|secret_key|session_token)=", parts.query):
        raise StorageError(f"storage {_redact(text)}: credentials in the URI would be logged and recorded; give them "
                           "through AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_PROFILE or the node's role "
                           "(GOOGLE_APPLICATION_CREDENTIALS for gs://) and pass the bare URI")
    try:
        fs, path = pafs.FileSystem.from_uri(text)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as e:
        raise StorageError(f"storage {text!r}: not a filesystem this machine can open ({_one_line(e)}); use an "
                           "absolute path on shared storage or an object-store URI such as s3://bucket/prefix"
                           ) from None
    except OSError as e:  # S3 without AWS_REGION asks the bucket for its region: the store is already in play
        raise StorageError(f"storage {text}: {diagnose(e, text)}") from None
    return Location(fs, path.rstrip("/"), parts.scheme, parts.query)


def check_writable(root: Location) -> None:
    """Write, read back and delete a probe file under `root`; refuse with one line naming the URI and what to do.

    Called by the driver before anything is created or scheduled: an unreachable endpoint, a missing bucket or
    credentials the store refuses surface here instead of as the first trial's error.
    """
    probe = root / f"{PROBE_PREFIX}{secrets.token_hex(6)}"
    try:
        if root.local is not None:
            root.local.mkdir(parents=True, exist_ok=True)
        probe.write_text(probe.name)
        if probe.read_text() != probe.name:
            raise OSError("the probe file read back differs from what was written")
        probe.delete()
    except OSError as e:
        raise StorageError(f"storage {root}: {diagnose(e, str(root))}") from None


def diagnose(error: BaseException, uri: str) -> str:
    """What went wrong with the store at `uri`, in words, and what to do; never a credential (none is in the error)."""
    text = _one_line(error)
    parts = urlsplit(uri)
    if not parts.scheme or parts.scheme == "file" or len(parts.scheme) == 1:
        return f"cannot write there ({text}); pass a folder this user can write to (--storage or S4SWEEP_HOME)"
    bucket = parts.netloc
    if re.search(r"NO_SUCH_BUCKET|NoSuchBucket|bucket does not exist", text, re.I):
        return (f"bucket {bucket!r} does not exist ({text}); create it (aws s3 mb {parts.scheme}://{bucket}) or fix "
                "the bucket name")
    if re.search(r"INVALID_ACCESS_KEY|SIGNATURE_DOES_NOT_MATCH|ACCESS_DENIED|AccessDenied|Forbidden|"
                 r"InvalidAccessKeyId|SignatureDoesNotMatch|EXPIRED_TOKEN|credential", text, re.I):
        return (f"the store refused the credentials ({text}); set AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or "
                f"AWS_PROFILE (or give the node a role) allowed to read and write {parts.scheme}://{bucket}")
    if re.search(r"NETWORK_CONNECTION|curlCode|Could not connect|resolve host|timed out|Connection refused",
                 text, re.I):
        endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or "the default"
        return (f"cannot reach the store (endpoint {endpoint}; {text}); check AWS_ENDPOINT_URL / AWS_REGION and "
                "that this machine can reach it")
    return f"cannot write and read back a probe file ({text}); check the URI, the credentials and the endpoint"


def _one_line(error: BaseException) -> str:
    text = " ".join(str(error).split())
    return re.sub(r"\s*\(Request ID: [^)]*\)?", "", text)[:400]


def _redact(uri: str) -> str:
    uri = re.sub(r"//[^/@]*@", "//***@", uri)
    return re.sub(r"((?:^|[?&])(?:access_key|secret_key|session_token)=)[^&]*", r"\1***", uri)


def read_probe(uri: str, expected: str) -> str | None:
    """On another node (tune_backend.check_shared): None if the probe reads back as written, else what went wrong, in
    words."""
    try:
        location = open_location(uri)
    except StorageError as e:
        return str(e)
    try:
        if not location.is_file():
            return "missing"
        return None if location.read_text() == expected else "different"
    except OSError as e:
        return f"unreadable: {e}" if location.local is not None else diagnose(e, uri)
