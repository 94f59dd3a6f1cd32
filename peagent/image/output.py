"""Where a build writes the image's files: a local directory, or a DP over HTTP PUT.

The builder produces the blob as it reads the source, frame after frame, and the small files
(frame table, block index, signature, manifest) at the end. A :class:`Destination` takes them in
that order and makes the image appear only when it is complete:

* :class:`LocalDir` (a directory, a mounted USB stick): every file is written under a temporary
  name, flushed to the device (fsync) at the end, then renamed, the manifest last, and the
  directory itself flushed. A build that fails or is interrupted leaves no image that looks whole
  (and removes its temporary files when it can).
* :class:`HttpPut` (``http://dp/images/name/version/``): the blob streams to the DP while it is
  produced, as one chunked PUT (no local copy: a PE capturing a disk has no room for one); the
  small files follow, the manifest last. ``peagent serve --upload-token`` accepts such PUTs (it
  too writes to a temporary file and renames it once complete); so does nginx with WebDAV.
  A token travels as ``Authorization: Bearer``. An existing image at the URL is not overwritten
  unless asked (a preflight HEAD of its manifest, and ``If-None-Match: *`` on every PUT).
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import queue
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

import requests

from peagent.errors import DeviceError, FetchError, UsageError
from peagent.fetch import is_url, new_session
from peagent.image.format import BLOB, MANIFEST

log = logging.getLogger(__name__)

_QUEUE = 16  # blob pieces in flight to the uploader (each one compressed frame)
_TIMEOUT = (5.0, 300.0)  # the DP may take a while to flush a large upload before it answers


class UploadError(FetchError):
    """A DP refused the upload or the connection failed during it."""

    code = "upload.failed"


class Destination(Protocol):
    location: str  # the directory or URL the image goes to

    def write_blob(self, data: bytes) -> None: ...
    def finish_blob(self) -> None: ...
    def put(self, name: str, data: bytes) -> None: ...
    def commit(self) -> None: ...
    def abort(self) -> None: ...


def open_destination(target: str | Path, *, token: str | None = None, overwrite: bool = False,
                     blob_name: str = BLOB) -> Destination:
    """A directory path or an http(s) URL (a "directory": ending in /, or taken as one)."""
    text = str(target)
    if is_url(text):
        return HttpPut(text if text.endswith("/") else text + "/", token=token, overwrite=overwrite,
                       blob_name=blob_name)
    if token is not None:
        raise UsageError("an upload token is for an http:// output; this output is a directory")
    return LocalDir(Path(text), overwrite=overwrite, blob_name=blob_name)


class LocalDir:
    def __init__(self, path: Path, *, overwrite: bool = False, blob_name: str = BLOB) -> None:
        if (path / MANIFEST).exists() and not overwrite:
            raise UsageError(f"{path} already holds an image ({MANIFEST}): choose another directory, or overwrite it")
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UsageError(f"cannot make the output directory {path}: {exc.strerror}") from None
        self.path = path
        self.location = str(path)
        self.blob_name = blob_name
        self._small: dict[str, bytes] = {}
        self._blob = (path / self._temp(blob_name)).open("wb")

    @staticmethod
    def _temp(name: str) -> str:
        return f".{name}.partial"

    def write_blob(self, data: bytes) -> None:
        with self._errors():
            self._blob.write(data)

    def finish_blob(self) -> None:
        with self._errors():
            self._blob.flush()
            os.fsync(self._blob.fileno())
            self._blob.close()

    def put(self, name: str, data: bytes) -> None:
        self._small[name] = data

    @contextlib.contextmanager
    def _errors(self) -> Iterator[None]:
        try:
            yield
        except OSError as exc:
            hint = {errno.EFBIG: ": its filesystem cannot hold a file this large (FAT32 stops at 4 GiB; use exFAT "
                                 "or ext4)",
                    errno.ENOSPC: ": it is full"}.get(exc.errno or 0, "")
            raise DeviceError(f"writing the image into {self.path} failed: {exc.strerror or exc}{hint}") from None

    def commit(self) -> None:
        with self._errors():
            self._commit()

    def _commit(self) -> None:
        names = [n for n in self._small if n != MANIFEST] + [MANIFEST]
        for name in names:
            with (self.path / self._temp(name)).open("wb") as f:
                f.write(self._small[name])
                f.flush()
                os.fsync(f.fileno())
        # The blob and small files first, the manifest last: whoever sees a manifest sees it all.
        for name in [self.blob_name, *names]:
            os.replace(self.path / self._temp(name), self.path / name)
        fd = os.open(self.path, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)  # the renames themselves
        finally:
            os.close(fd)

    def abort(self) -> None:
        with contextlib.suppress(OSError):
            self._blob.close()
        for name in [self.blob_name, *self._small]:
            with contextlib.suppress(OSError):
                (self.path / self._temp(name)).unlink()


class _Abort:
    """Put in the upload queue to make the body generator fail, so the DP discards the partial file."""


class HttpPut:
    def __init__(self, url: str, *, token: str | None = None, overwrite: bool = False,
                 blob_name: str = BLOB, session: requests.Session | None = None) -> None:
        self.location = url
        self.blob_name = blob_name
        self.overwrite = overwrite
        self.session = session or new_session()
        if token:
            self.session.headers["Authorization"] = f"Bearer {token}"
        self._small: dict[str, bytes] = {}
        self._queue: queue.Queue[bytes | _Abort | None] = queue.Queue(_QUEUE)
        self._result: requests.Response | BaseException | None = None
        self._thread: threading.Thread | None = None
        self._preflight()

    def _headers(self) -> dict[str, str]:
        return {} if self.overwrite else {"If-None-Match": "*"}

    def _preflight(self) -> None:
        """Fail before reading a byte of the source: no DP, no uploads there, a wrong token, an existing image."""
        url = self.location + MANIFEST
        try:
            allowed = self.session.options(url, timeout=_TIMEOUT)
            self._check_token(url, allowed)
            r = self.session.head(url, timeout=_TIMEOUT)
        except requests.RequestException as exc:
            raise UploadError(f"cannot reach the DP at {self.location}: {exc}") from None
        self._check_token(url, r)
        methods = allowed.headers.get("Allow")
        if allowed.ok and methods is not None and "PUT" not in methods.upper():
            raise UploadError(f"{self.location} does not accept uploads (it allows {methods}); "
                              "start it with an upload token (peagent serve --upload-token)")
        if r.status_code == 200 and not self.overwrite:
            raise UsageError(f"{url} exists: an image is already there; choose another version, or overwrite it")

    @staticmethod
    def _check_token(url: str, response: requests.Response) -> None:
        if response.status_code in (401, 403):
            raise UploadError(f"{url}: HTTP {response.status_code}: the DP refuses the upload token (give the token "
                              "the DP was started with)")

    def _body(self) -> Iterator[bytes]:
        while True:
            item = self._queue.get()
            if item is None:
                return
            if isinstance(item, _Abort):
                raise UploadError("upload aborted")
            yield item

    def _upload(self) -> None:
        try:
            self._result = self.session.put(self.location + self.blob_name, data=self._body(),
                                            headers=self._headers(), timeout=_TIMEOUT)
        except BaseException as exc:  # handed to the builder's thread, which reports it
            self._result = exc

    def write_blob(self, data: bytes) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._upload, name="peagent-upload", daemon=True)
            self._thread.start()
        self._send(data)

    def _send(self, item: bytes | None) -> None:
        assert self._thread is not None
        while True:
            try:
                self._queue.put(item, timeout=1.0)
                return
            except queue.Full:
                if not self._thread.is_alive():  # the upload ended while we still had data: say why
                    self._check(self.blob_name)
                    raise UploadError(f"the DP answered before {self.location}{self.blob_name} was sent "
                                      "whole") from None

    def finish_blob(self) -> None:
        if self._thread is None:  # an image of holes only has an empty blob
            self._check_response(self.blob_name, self._put(self.blob_name, b""))
            return
        self._send(None)
        self._thread.join()
        self._check(self.blob_name)

    def _check(self, name: str) -> None:
        result = self._result
        if isinstance(result, BaseException):
            raise UploadError(f"uploading {self.location}{name} failed: {result} (a wrong token or a size "
                              "limit on the DP also shows as a closed connection)")
        if result is None:
            raise UploadError(f"uploading {self.location}{name} stopped without an answer")
        self._check_response(name, result)

    def _check_response(self, name: str, r: requests.Response) -> None:
        if r.status_code == 412:
            raise UsageError(f"{self.location}{name} exists: an image is already there; overwrite it, or choose "
                             "another version")
        if r.status_code not in (200, 201, 204):
            raise UploadError(f"{self.location}{name}: HTTP {r.status_code} {r.text.strip()[:200]}")

    def _put(self, name: str, data: bytes) -> requests.Response:
        for attempt in range(3):
            try:
                return self.session.put(self.location + name, data=data, headers=self._headers(), timeout=_TIMEOUT)
            except requests.RequestException as exc:
                if attempt == 2:
                    raise UploadError(f"uploading {self.location}{name} failed: {exc}") from None
                log.warning("upload of %s%s failed (%s); retrying", self.location, name, exc)
        raise AssertionError("unreachable")

    def put(self, name: str, data: bytes) -> None:
        self._small[name] = data

    def commit(self) -> None:
        names = [n for n in self._small if n != MANIFEST] + [MANIFEST]
        for name in names:
            self._check_response(name, self._put(name, self._small[name]))

    def abort(self) -> None:
        if self._thread is not None and self._thread.is_alive():
            with contextlib.suppress(queue.Full):
                self._queue.put(_Abort(), timeout=5)
            self._thread.join(10)
