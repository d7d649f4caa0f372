"""Downloading public data so that a finished file can be trusted.

:func:`fetch` downloads one URL to one file:

- **resumable**: bytes go to ``<dest>.part``; an existing ``.part`` is resumed
  with an HTTP ``Range: bytes=N-`` request (``206 Partial Content`` is
  appended; a ``200`` answer restarts from byte zero; a ``416`` answer means
  the ``.part`` is already complete when the server's size equals it, and is
  discarded otherwise);
- **retried** with exponential backoff (``backoff * 2**k`` seconds) on HTTP
  5xx, 408 and 429, connection errors and resets, timeouts and a body that
  ends before its ``Content-Length`` (the next attempt resumes where the last
  one stopped); any other 4xx answer (404, 403, ...) fails at once;
- **verified**: size (the expected one, else the server's ``Content-Length``),
  sha256 and md5 when given, and the format: a ``.gz`` file must be one
  complete gzip stream, a Matrix Market ``.mtx`` / ``.mtx.gz`` file must have
  a valid header and as many entries as it announces
  (:func:`milkcells.checks.check_format`);
- **atomic**: ``.part`` is renamed to ``dest`` only after every check passed;
  when a check fails the ``.part`` is deleted, so nothing that looks finished is
  left behind. A ``dest`` that already exists is never written again: when it
  verifies it is returned as is (``"downloaded": False``), otherwise
  :class:`DownloadError` tells you to remove it.

:func:`fetch_all` downloads a list of ``{"url", "filename", "sha256", "md5",
"size"}`` items (:mod:`milkcells.manifest`; read from a TSV by
:func:`milkcells.archives.urls.read_url_list`) into one folder, optionally
copying them from a local ``mirror`` folder instead of the network, and writes
a manifest (:func:`milkcells.manifest.write_manifest`).

Errors
------
Transfer and verification failures raise :class:`DownloadError`, a subclass
of :class:`OSError` (as are the network errors of ``requests``); its message
names the URL, the file and what was expected. Bad arguments and malformed
user files (a URL list, a manifest) raise :class:`milkcells.InputError` (a
:class:`ValueError`).

The HTTP client is `requests <https://requests.readthedocs.io>`_, which is
already installed as a dependency of Snakemake. Proxies are taken from the
usual environment variables (``HTTPS_PROXY``, ...), as ``requests`` does.
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import os
import shutil
import time
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import requests
import urllib3

from ._http import Progress, human, int_header, parse_content_range
from ._utils import InputError
from .checks import check_format
from .manifest import Expected, normalise_item, unique_filenames, write_manifest

__all__ = [
    "USER_AGENT",
    "DownloadError",
    "fetch",
    "fetch_all",
]

log = logging.getLogger(__name__)


def _package_version() -> str:
    try:
        return version("milkcells")
    except PackageNotFoundError:  # pragma: no cover - source tree without install
        return "0+unknown"


#: The ``User-Agent`` sent with every request, so archive operators can see
#: who is downloading and where to find us.
USER_AGENT = f"milkcells/{_package_version()} (+https://github.com/milkcells/milkcells)"

_RETRY_STATUS = frozenset({408, 429})
_MAX_DELAY = 120.0  # cap on one backoff pause, seconds
_READ_BLOCK = 1 << 20
_NETWORK_ERRORS = (
    requests.exceptions.ConnectionError,
    requests.exceptions.Timeout,
    requests.exceptions.ChunkedEncodingError,
    urllib3.exceptions.HTTPError,
    http.client.HTTPException,
    ConnectionError,
    TimeoutError,
)


class DownloadError(OSError):
    """A download failed, or a file does not match what was expected.

    A subclass of :class:`OSError`. The message names the URL, the file, the
    problem (for retried failures: the number of attempts and the last
    failure) and what was expected.

    Attributes
    ----------
    url, path
        The URL and the destination (or mirror) file, when known.
    expected
        What was expected, when it applies.
    attempts
        How many HTTP requests were made, for transfer failures.
    """

    def __init__(
        self,
        problem: str,
        *,
        url: str | None = None,
        path: str | os.PathLike | None = None,
        expected: str | None = None,
        attempts: int | None = None,
    ) -> None:
        where = []
        if url is not None:
            where.append(f"url {url!r}")
        if path is not None:
            where.append(f"file {str(path)!r}")
        msg = f"{', '.join(where)}: {problem}" if where else problem
        if expected:
            msg += f" (expected {expected})"
        super().__init__(msg)
        self.problem = problem
        self.url = url
        self.path = None if path is None else str(path)
        self.expected = expected
        self.attempts = attempts


class _Transient(Exception):
    """A failure worth retrying (5xx, connection trouble, short body)."""

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


# --------------------------------------------------------------------------- helpers


def _utc(timestamp: float | None = None) -> str:
    moment = datetime.now(UTC) if timestamp is None else datetime.fromtimestamp(timestamp, UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _part_path(dest: Path) -> Path:
    return dest.with_name(dest.name + ".part")


def _digest(path: Path) -> tuple[int, str, str]:
    """Size, sha256 and md5 of a file, read once."""
    sha, md5, size = hashlib.sha256(), hashlib.md5(usedforsecurity=False), 0
    with open(path, "rb") as f:
        while block := f.read(_READ_BLOCK):
            sha.update(block)
            md5.update(block)
            size += len(block)
    return size, sha.hexdigest(), md5.hexdigest()


def _verify(path: Path, *, name: str, expect: Expected, url: str, shown: Path) -> dict[str, Any]:
    """Size, checksums and format of ``path``; :class:`DownloadError` naming ``shown``."""
    size, sha256, md5 = _digest(path)
    if expect.size is not None and size != expect.size:
        raise DownloadError(f"size mismatch: {size} bytes", url=url, path=shown, expected=f"{expect.size} bytes")
    for algo, got in (("sha256", sha256), ("md5", md5)):
        want = getattr(expect, algo)
        if want is not None and got != want:
            raise DownloadError(f"{algo} mismatch: got {got}", url=url, path=shown, expected=f"{algo} {want}")
    try:
        check_format(path, name)
    except InputError as exc:
        raise DownloadError(f"format check failed: {exc}", url=url, path=shown, expected=exc.expected) from exc
    return {"size": size, "sha256": sha256, "md5": md5}


def _record(url: str, dest: Path, info: Mapping, *, downloaded: bool, origin: str, when: str) -> dict:
    return {
        "url": url,
        "path": str(dest),
        "size": info["size"],
        "sha256": info["sha256"],
        "md5": info["md5"],
        "downloaded": downloaded,
        "origin": origin,
        "time": when,
    }


def _reuse(url: str, dest: Path, expect: Expected) -> dict:
    """Return the record of an existing ``dest`` that verifies; never modify it."""
    if not dest.is_file():
        raise DownloadError("exists but is not a regular file", url=url, path=dest)
    try:
        info = _verify(dest, name=dest.name, expect=expect, url=url, shown=dest)
    except DownloadError as exc:
        raise DownloadError(
            f"the existing file does not verify ({exc.problem}); it is left untouched: remove it to download again",
            url=url,
            path=dest,
            expected=exc.expected,
        ) from exc
    log.debug("%s: already present and verified", dest)
    return _record(url, dest, info, downloaded=False, origin="existing", when=_utc(dest.stat().st_mtime))


# --------------------------------------------------------------------------- transfer


def _request_headers(session: requests.Session, offset: int) -> dict[str, str]:
    # identity: the bytes on disk are exactly the served file, and Range/Content-Length
    # count those bytes (a .gz is not transparently decompressed)
    headers = {"Accept-Encoding": "identity"}
    if session.headers.get("User-Agent") in (None, requests.utils.default_user_agent()):
        headers["User-Agent"] = USER_AGENT
    if offset:
        headers["Range"] = f"bytes={offset}-"
    return headers


def _attempt(session, url, part: Path, *, dest: Path, expect: Expected, timeout, chunk_size, progress) -> int:
    """One HTTP request appending to ``part``; return the offset it started from.

    Raises :class:`_Transient` for failures worth retrying and
    :class:`DownloadError` for the others.
    """
    offset = part.stat().st_size if part.exists() else 0
    try:
        resp = session.get(url, headers=_request_headers(session, offset), stream=True, timeout=timeout)
    except requests.exceptions.SSLError as exc:
        raise DownloadError(f"TLS error: {exc}", url=url, path=dest) from exc
    except (requests.exceptions.ConnectionError, requests.exceptions.Timeout) as exc:
        raise _Transient(f"{type(exc).__name__}: {exc}") from exc
    except requests.RequestException as exc:
        raise DownloadError(f"request failed: {type(exc).__name__}: {exc}", url=url, path=dest) from exc
    with resp:
        status = resp.status_code
        if status == 416 and offset:
            total = parse_content_range(resp.headers.get("Content-Range"))[2]
            if total == offset and expect.size in (None, total):
                log.info("%s: the partial download %s is already complete", url, part)
                return offset
            part.unlink(missing_ok=True)
            raise _Transient(
                f"HTTP 416 for a resume from byte {offset} (server size {total}); "
                "discarded the partial file, restarting from zero"
            )
        if status >= 500 or status in _RETRY_STATUS:
            retry_after = int_header(resp, "Retry-After")
            raise _Transient(
                f"HTTP {status} {resp.reason}", retry_after=None if retry_after is None else float(retry_after)
            )
        if status not in (200, 206):
            raise DownloadError(f"HTTP {status} {resp.reason}; not retried", url=url, path=dest, expected="HTTP 200")
        length = int_header(resp, "Content-Length")
        if status == 206:
            start, end, total = parse_content_range(resp.headers.get("Content-Range"))
            if not offset or start != offset:
                part.unlink(missing_ok=True)
                got = resp.headers.get("Content-Range")
                raise _Transient(
                    f"HTTP 206 with Content-Range {got!r} for a resume from byte {offset}; restarting from zero"
                )
            if length is not None and end is not None and length != end - start + 1:
                length = None  # inconsistent headers: rely on the total size
            mode = "ab"
        else:
            if offset:
                log.info("%s: the server ignored the Range request; restarting from zero", url)
                offset = 0
            total = length
            mode = "wb"
        if expect.size is not None and total is not None and total != expect.size:
            part.unlink(missing_ok=True)
            raise DownloadError(
                f"the server reports {total} bytes", url=url, path=dest, expected=f"{expect.size} bytes"
            )
        if offset:
            log.info("%s: resuming from byte %d", url, offset)
        meter = Progress(url, offset, total, progress)
        stream = resp.raw.stream(chunk_size, decode_content=False)
        with open(part, mode) as f:
            while True:
                try:
                    block = next(stream)
                except StopIteration:
                    break
                except _NETWORK_ERRORS as exc:
                    raise _Transient(f"connection lost after {meter.done} bytes ({type(exc).__name__}: {exc})") from exc
                f.write(block)
                meter.update(len(block))
            f.flush()
            os.fsync(f.fileno())
        got = part.stat().st_size
        want = total if total is not None else expect.size
        if want is not None and got < want:
            raise _Transient(f"connection closed after {got} of {want} bytes")
        return offset


def _transfer(session, url, part: Path, *, expect, retries, backoff, timeout, chunk_size, progress, dest: Path) -> int:
    """Fill ``part`` with the whole resource, retrying; return the last attempt's start offset."""
    attempt = 0
    while True:
        attempt += 1
        try:
            return _attempt(
                session, url, part, dest=dest, expect=expect, timeout=timeout, chunk_size=chunk_size, progress=progress
            )
        except DownloadError as exc:
            exc.attempts = attempt
            raise
        except _Transient as exc:
            if attempt > retries:
                raise DownloadError(
                    f"failed after {attempt} attempts; last failure: {exc}", url=url, path=dest, attempts=attempt
                ) from exc
            delay = min(backoff * 2 ** (attempt - 1), _MAX_DELAY)
            if exc.retry_after is not None:
                delay = max(delay, min(exc.retry_after, _MAX_DELAY))
            log.warning("%s: %s; retrying in %.2f s (attempt %d of %d)", url, exc, delay, attempt + 1, retries + 1)
            time.sleep(delay)


def _check_options(retries, backoff, chunk_size) -> None:
    if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
        raise InputError(f"retries must be a whole number >= 0, not {retries!r}", field="retries")
    if not backoff >= 0:
        raise InputError(f"backoff must be >= 0 seconds, not {backoff!r}", field="backoff")
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise InputError(f"chunk_size must be a positive whole number, not {chunk_size!r}", field="chunk_size")


def _new_session() -> requests.Session:
    session = requests.Session()
    session.headers["User-Agent"] = USER_AGENT
    return session


def fetch(
    url: str,
    dest: str | os.PathLike,
    *,
    sha256: str | None = None,
    md5: str | None = None,
    size: int | None = None,
    retries: int = 5,
    backoff: float = 0.5,
    timeout: float | tuple[float, float] = 60,
    chunk_size: int = 1 << 20,
    progress: bool = True,
    session: requests.Session | None = None,
) -> dict[str, Any]:
    """Download ``url`` to ``dest``: resumable, retried, verified and atomic.

    Bytes are written to ``dest + ".part"``, resuming an existing ``.part``
    with a ``Range`` request. Failures worth retrying (HTTP 5xx, 408, 429,
    connection errors and resets, timeouts, a body shorter than its
    ``Content-Length``) are retried ``retries`` times, pausing ``backoff *
    2**k`` seconds (at most 120 s, longer when the server sends
    ``Retry-After``), each retry resuming where the last stopped. Other HTTP
    errors (404, 403, ...) fail at once. The ``.part`` becomes ``dest`` only
    when size, checksums and format (see the module docstring) all check out;
    otherwise it is deleted. When a file assembled from several responses
    fails a check, it is downloaded once more from byte zero before giving up
    (the remote file may have changed between the pieces).

    After a transfer failure (retries exhausted) the ``.part`` file is kept,
    so the next call resumes it; after a failed check it is deleted. An
    existing ``dest`` is never written: when it verifies against the same
    checks it is returned without any request (``"downloaded": False``), and
    when it does not, :class:`DownloadError` asks you to remove it.

    Parameters
    ----------
    url
        ``http://`` or ``https://`` URL.
    dest
        Destination file; its folder is created.
    sha256, md5
        Expected checksums (hexadecimal, any case), checked when given.
    size
        Expected size in bytes; when ``None``, the server's ``Content-Length``
        is used.
    retries
        Number of retries after the first attempt (``retries + 1`` requests at
        most).
    backoff
        First pause between attempts, in seconds; doubled at each retry.
    timeout
        Seconds to wait to connect and between bytes (a ``requests`` timeout;
        a ``(connect, read)`` pair is accepted).
    chunk_size
        Bytes read from the network at a time.
    progress
        Log the progress of long downloads (running for more than a few
        seconds) at INFO, every 10 % or every 10 s.
    session
        A :class:`requests.Session` to reuse (connection pooling, proxies,
        authentication); a new one is made and closed otherwise.

    Returns
    -------
    dict
        ``{"url", "path", "size", "sha256", "md5", "downloaded", "origin",
        "time"}``: ``downloaded`` is ``True`` when this call put the file in
        place; ``origin`` (where it came from) is ``"network"`` or ``"existing"`` (``"mirror"`` from
        :func:`fetch_all`); ``time`` (ISO 8601, UTC) is when the file was
        finished (for an existing file: its modification time).

    Raises
    ------
    DownloadError
        When the download fails (at once for 4xx, else after the retries; the
        message names the URL and the last failure), when a check fails, or
        when an existing ``dest`` does not verify.
    InputError
        When a checksum, size or option is malformed.
    """
    dest = Path(dest)
    expect = Expected.checked(sha256=sha256, md5=md5, size=size)
    _check_options(retries, backoff, chunk_size)
    if dest.exists() or dest.is_symlink():
        return _reuse(url, dest, expect)
    scheme = urlsplit(url).scheme.lower()
    if scheme not in ("http", "https"):
        raise InputError(f"unsupported URL {url!r}", field="url", expected="an http(s):// URL")
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = _part_path(dest)
    own_session = session is None
    session = _new_session() if own_session else session
    started = time.monotonic()
    log.info("downloading %s -> %s", url, dest)
    try:
        for last_chance in (False, True):
            offset = _transfer(
                session,
                url,
                part,
                expect=expect,
                retries=retries,
                backoff=backoff,
                timeout=timeout,
                chunk_size=chunk_size,
                progress=progress,
                dest=dest,
            )
            try:
                info = _verify(part, name=dest.name, expect=expect, url=url, shown=dest)
            except DownloadError as exc:
                part.unlink(missing_ok=True)
                if offset and not last_chance:
                    log.warning(
                        "%s; the file was assembled from several pieces, downloading it again from the start", exc
                    )
                    continue
                raise
            break
        os.replace(part, dest)
    finally:
        if own_session:
            session.close()
    elapsed = time.monotonic() - started
    log.info("downloaded %s (%s in %.1f s, sha256 %s)", dest, human(info["size"]), elapsed, info["sha256"])
    return _record(url, dest, info, downloaded=True, origin="network", when=_utc())


def _from_mirror(item: Mapping, copy: Path, dest: Path, expect: Expected) -> dict:
    """Copy the mirror's ``copy`` to ``dest`` through a ``.part`` file, verified like a download."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = _part_path(dest)
    try:
        shutil.copyfile(copy, part)
        info = _verify(part, name=dest.name, expect=expect, url=item["url"], shown=copy)
    except BaseException:
        part.unlink(missing_ok=True)
        raise
    os.replace(part, dest)
    log.info("copied %s from the mirror %s", dest, copy)
    return _record(item["url"], dest, info, downloaded=True, origin="mirror", when=_utc())


def fetch_all(
    items: Iterable[Mapping[str, Any]],
    dest_dir: str | os.PathLike,
    *,
    manifest: str | os.PathLike | None = None,
    mirror: str | os.PathLike | None = None,
    **kw: Any,
) -> list[dict[str, Any]]:
    """Download a list of files with expected checksums into one folder.

    Each item is saved as ``dest_dir / filename`` with :func:`fetch` (so an
    existing, verified file is not downloaded again). Items are handled in
    order and the first failure raises; files finished before it are kept
    and skipped by the next run.

    Parameters
    ----------
    items
        Mappings with ``"url"`` and optionally ``"filename"`` (default: the
        last segment of the URL), ``"sha256"``, ``"md5"`` and ``"size"``, as
        returned by :func:`milkcells.archives.urls.read_url_list`.
    dest_dir
        The download folder.
    manifest
        When given, a manifest of all the files is written there
        (:func:`milkcells.manifest.write_manifest`) once every file is in place.
    mirror
        A local folder holding (some of) the files under the same relative
        names. A file found there is copied instead of downloaded, without
        any network request, and verified the same way; files not found
        there are downloaded. This lets the workflow run offline.
    **kw
        Options for :func:`fetch` (``retries``, ``backoff``, ``timeout``,
        ``chunk_size``, ``progress``, ``session``); the checksums and sizes
        come from the items.

    Returns
    -------
    list of dict
        One :func:`fetch` record per item, in order; ``origin`` is
        ``"network"``, ``"mirror"`` or ``"existing"``.

    Raises
    ------
    DownloadError
        When a download, a copy or a check fails (the message names the URL
        and the file).
    InputError
        When an item is malformed or two items save to the same file.
    TypeError
        When ``kw`` holds an unknown option or a per-item one.
    """
    per_item = {"sha256", "md5", "size"} & kw.keys()
    if per_item:
        raise TypeError(f"fetch_all() takes {sorted(per_item)} from the items, not as options")
    allowed = {"retries", "backoff", "timeout", "chunk_size", "progress", "session"}
    unknown = kw.keys() - allowed
    if unknown:
        raise TypeError(f"fetch_all() got unexpected options {sorted(unknown)}")
    normalised = [normalise_item(item) for item in items]
    unique_filenames(normalised)
    dest_dir = Path(dest_dir)
    mirror = None if mirror is None else Path(mirror)
    own_session = kw.get("session") is None
    if own_session:
        kw["session"] = _new_session()
    records = []
    try:
        for item in normalised:
            dest = dest_dir / item["filename"]
            expect = Expected(sha256=item["sha256"], md5=item["md5"], size=item["size"])
            if mirror is not None and not (dest.exists() or dest.is_symlink()):
                copy = mirror / item["filename"]
                if copy.is_file():
                    records.append(_from_mirror(item, copy, dest, expect))
                    continue
                log.info("%s is not in the mirror %s; downloading it", item["filename"], mirror)
            records.append(fetch(item["url"], dest, sha256=item["sha256"], md5=item["md5"], size=item["size"], **kw))
    finally:
        if own_session:
            kw["session"].close()
    if manifest is not None:
        write_manifest(records, manifest)
    return records
