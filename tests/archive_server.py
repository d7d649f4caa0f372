"""A local HTTP archive for tests, with fault injection.

:class:`ArchiveServer` serves a folder over HTTP/1.1 on ``127.0.0.1`` (an
ephemeral port, never another interface) from a background thread, with
``GET`` and ``HEAD``, single-range ``Range`` requests (``206`` with
``Content-Range``, ``416`` when unsatisfiable) and a log of every request, so
tests can count requests per path. Faults can be injected per path
(:class:`Fault`): an HTTP error (404, N times 500 ...), a connection dropped
after K body bytes (the full ``Content-Length`` having been announced), a
truncated body (a truncated gzip), other content (a checksum mismatch), a
delay (a timeout), a server that ignores ``Range`` and extra headers.

Usage::

    from tests.archive_server import Fault, serve

    with serve(folder, faults={"E-MTAB-/841/E-MTAB-9841/Files/matrix.mtx.gz":
                               Fault.drop(after=100, times=1)}) as (base_url, server):
        ...  # base_url is "http://127.0.0.1:PORT/"
        assert server.count("E-MTAB-/841/E-MTAB-9841/Files/matrix.mtx.gz") == 2

or the pytest fixtures (``tests/conftest.py`` registers this module as a plugin)::

    def test_x(archive, no_network, tmp_path):
        base_url, server = archive(folder, faults={...})

``archive`` stops every server it started at the end of the test;
``no_network`` makes any connection or name lookup to a host other than the
loopback fail loudly (``AssertionError``) and clears proxy variables, so a
test cannot reach the internet by mistake.

Files are read into memory per request: the server is meant for small
fixture files.
"""

from __future__ import annotations

import contextlib
import http.server
import re
import socket
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

__all__ = ["ArchiveServer", "Fault", "RequestRecord", "archive", "no_network", "serve"]

HOST = "127.0.0.1"
_LOOPBACK = {"127.0.0.1", "::1", "localhost"}
_RANGE = re.compile(r"^\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*$")


@dataclass
class Fault:
    """A misbehaviour of the server for one path.

    Parameters
    ----------
    status
        Answer with this HTTP status (and a short text body) instead of the file.
    drop_after
        Announce the full ``Content-Length``, send only this many body bytes,
        then close the connection (the client sees a short read).
    truncate
        Serve only the first ``truncate`` bytes of the file, with a matching
        ``Content-Length`` (a complete response holding a truncated file).
    body
        Serve these bytes instead of the file (the file need not exist).
    ignore_range
        Answer ``Range`` requests with ``200`` and the whole file.
    delay
        Seconds to wait before answering (to provoke client timeouts).
    headers
        Extra response headers (for example ``{"Content-Encoding": "gzip"}``).
    times
        Apply the fault to the first ``times`` requests for the path only
        (``None``: to all of them); later requests are served normally.
    """

    status: int | None = None
    drop_after: int | None = None
    truncate: int | None = None
    body: bytes | None = None
    ignore_range: bool = False
    delay: float = 0.0
    headers: dict[str, str] = field(default_factory=dict)
    times: int | None = None
    used: int = 0

    @classmethod
    def not_found(cls) -> Fault:
        """Always answer 404, even when the file exists."""
        return cls(status=404)

    @classmethod
    def error(cls, status: int = 500, *, times: int | None = None) -> Fault:
        """Answer ``status`` to the first ``times`` requests (always when ``None``)."""
        return cls(status=status, times=times)

    @classmethod
    def drop(cls, *, after: int, times: int | None = 1) -> Fault:
        """Close the connection after ``after`` body bytes, for the first ``times`` requests."""
        return cls(drop_after=after, times=times)

    @classmethod
    def truncated(cls, n_bytes: int) -> Fault:
        """Serve only the first ``n_bytes`` of the file (a truncated gzip, say)."""
        return cls(truncate=n_bytes)

    @classmethod
    def wrong_content(cls, body: bytes) -> Fault:
        """Serve ``body`` instead of the file (a checksum mismatch)."""
        return cls(body=body)

    def active(self) -> bool:
        return self.times is None or self.used < self.times


@dataclass
class RequestRecord:
    """One request seen by the server."""

    method: str
    path: str
    headers: dict[str, str]
    status: int | None = None
    fault: bool = False

    @property
    def range(self) -> str | None:
        """The ``Range`` header, if any."""
        return next((v for k, v in self.headers.items() if k.lower() == "range"), None)


def _normalise(path: str) -> str:
    """URL path (or fault key) -> path relative to the served folder, ``/``-separated."""
    return unquote(urlsplit(path).path).lstrip("/")


class _HTTPServer(http.server.ThreadingHTTPServer):
    daemon_threads = False  # server_close() joins the handler threads
    block_on_close = True
    allow_reuse_address = False

    def __init__(self, archive: ArchiveServer) -> None:
        self.archive = archive
        self.connections: set[socket.socket] = set()
        self.connections_lock = threading.Lock()
        super().__init__((HOST, 0), _Handler)

    def handle_error(self, request, client_address) -> None:
        """Record (do not print) errors: clients hanging up are expected in these tests."""
        self.archive.errors.append(repr(sys.exc_info()[1]))


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, like real archives
    server_version = "ArchiveServer/1.0"
    timeout = 10  # idle keep-alive connections are closed after this many seconds

    def setup(self) -> None:
        super().setup()
        with self.server.connections_lock:
            self.server.connections.add(self.connection)

    def finish(self) -> None:
        with self.server.connections_lock:
            self.server.connections.discard(self.connection)
        with contextlib.suppress(OSError):
            super().finish()

    def log_message(self, format, *args) -> None:  # noqa: A002
        """Keep test output quiet; the requests are in ``server.requests``."""

    def do_GET(self) -> None:
        self._serve(head=False)

    def do_HEAD(self) -> None:
        self._serve(head=True)

    def _send(
        self, status: int, payload: bytes, headers: Mapping[str, str], *, head: bool, drop_after: int | None = None
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(payload)))
        self.send_header("Accept-Ranges", "bytes")
        for key, value in headers.items():
            self.send_header(key, value)
        self.end_headers()
        if head:
            return
        if drop_after is not None:
            self.wfile.write(payload[:drop_after])
            self.wfile.flush()
            self.close_connection = True  # the server closes the socket: a short read
            return
        self.wfile.write(payload)

    def _serve(self, *, head: bool) -> None:
        archive: ArchiveServer = self.server.archive
        rel = _normalise(self.path)
        record, fault = archive._begin(self.command, rel, dict(self.headers.items()))
        try:
            if fault is not None and fault.delay:
                time.sleep(fault.delay)
            if fault is not None and fault.status is not None:
                text = f"{fault.status} injected fault for /{rel}\n".encode()
                record.status = fault.status
                self._send(fault.status, text, fault.headers, head=head)
                return
            data = fault.body if fault is not None and fault.body is not None else archive.read(rel)
            if data is None:
                record.status = 404
                self._send(404, f"404 not found: /{rel}\n".encode(), {}, head=head)
                return
            if fault is not None and fault.truncate is not None:
                data = data[: fault.truncate]
            extra = dict(fault.headers) if fault is not None else {}
            status, payload = 200, data
            wanted = record.range
            if wanted is not None and not (fault is not None and fault.ignore_range):
                span = _parse_range(wanted, len(data))
                if span == "unsatisfiable":
                    record.status = 416
                    extra["Content-Range"] = f"bytes */{len(data)}"
                    self._send(416, b"", extra, head=head)
                    return
                if span is not None:
                    start, end = span
                    status, payload = 206, data[start : end + 1]
                    extra["Content-Range"] = f"bytes {start}-{end}/{len(data)}"
            record.status = status
            self._send(status, payload, extra, head=head, drop_after=fault.drop_after if fault is not None else None)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True


def _parse_range(value: str, size: int):
    """A single ``bytes=`` range -> (start, end), ``"unsatisfiable"``, or ``None`` (ignore)."""
    m = _RANGE.match(value)
    if not m or not (m[1] or m[2]):
        return None  # several ranges or nonsense: serve the whole file, as RFC 9110 allows
    if m[1]:
        start = int(m[1])
        end = min(int(m[2]), size - 1) if m[2] else size - 1
        if start >= size or (m[2] and int(m[2]) < start):
            return "unsatisfiable"
        return start, end
    suffix = int(m[2])
    if suffix == 0 or size == 0:
        return "unsatisfiable"
    return max(0, size - suffix), size - 1


class ArchiveServer:
    """Serve ``root`` on ``http://127.0.0.1:<ephemeral port>/`` with fault injection.

    Parameters
    ----------
    root
        The folder to serve; URL paths map to files below it.
    faults
        ``{relative path: Fault}``; keys may have a leading ``/``.

    Attributes
    ----------
    base_url
        ``"http://127.0.0.1:PORT/"``.
    requests
        Every :class:`RequestRecord`, in order.
    errors
        Exceptions raised in handler threads (clients hanging up), as text.
    """

    def __init__(self, root, faults: Mapping[str, Fault] | None = None) -> None:
        self.root = Path(root).resolve()
        self.faults: dict[str, Fault] = {_normalise(k): v for k, v in (faults or {}).items()}
        self.requests: list[RequestRecord] = []
        self.errors: list[str] = []
        self._lock = threading.Lock()
        self._httpd = _HTTPServer(self)
        self.host, self.port = self._httpd.server_address[:2]
        self.base_url = f"http://{self.host}:{self.port}/"
        self._thread: threading.Thread | None = None

    # lifecycle -----------------------------------------------------------
    def start(self) -> ArchiveServer:
        """Start serving in a background thread."""
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._httpd.serve_forever,
                kwargs={"poll_interval": 0.05},
                name=f"archive-server-{self.port}",
                daemon=True,
            )
            self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving, close open connections and join all threads."""
        if self._thread is not None:
            self._httpd.shutdown()
            self._thread.join(timeout=10)
            self._thread = None
        with self._httpd.connections_lock:
            open_connections = list(self._httpd.connections)
        for conn in open_connections:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        self._httpd.server_close()  # joins the handler threads

    @property
    def running(self) -> bool:
        """Whether the serving thread is alive."""
        return self._thread is not None and self._thread.is_alive()

    def __enter__(self) -> ArchiveServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # content and faults --------------------------------------------------
    def url(self, path: str) -> str:
        """The URL of ``path`` (relative to the served folder)."""
        return self.base_url + _normalise(path)

    def set_fault(self, path: str, fault: Fault | None) -> None:
        """Set (or with ``None`` remove) the fault for ``path``."""
        with self._lock:
            if fault is None:
                self.faults.pop(_normalise(path), None)
            else:
                self.faults[_normalise(path)] = fault

    def read(self, rel: str) -> bytes | None:
        """The bytes of ``rel`` below the root, or ``None`` when absent (or outside the root)."""
        target = (self.root / rel).resolve()
        if not target.is_relative_to(self.root) or not target.is_file():
            return None
        return target.read_bytes()

    def _begin(self, method: str, rel: str, headers: dict[str, str]):
        with self._lock:
            fault = self.faults.get(rel)
            if fault is not None and fault.active():
                fault.used += 1
            else:
                fault = None
            record = RequestRecord(method, rel, headers, fault=fault is not None)
            self.requests.append(record)
        return record, fault

    # request log -----------------------------------------------------------
    def count(self, path: str | None = None, *, method: str | None = "GET") -> int:
        """Number of requests (for ``path``, or all; ``method=None``: any method)."""
        rel = None if path is None else _normalise(path)
        with self._lock:
            return sum(
                1 for r in self.requests if (rel is None or r.path == rel) and (method is None or r.method == method)
            )

    def requests_for(self, path: str) -> list[RequestRecord]:
        """The requests for ``path``, in order."""
        rel = _normalise(path)
        with self._lock:
            return [r for r in self.requests if r.path == rel]


@contextlib.contextmanager
def serve(folder, faults: Mapping[str, Fault] | None = None) -> Iterator[tuple[str, ArchiveServer]]:
    """Serve ``folder`` for the duration of the ``with`` block; yield ``(base_url, server)``."""
    server = ArchiveServer(folder, faults)
    with server:
        yield server.base_url, server


@contextlib.contextmanager
def loopback_only() -> Iterator[None]:
    """Make connections and name lookups to non-loopback hosts raise ``AssertionError``.

    Used through the :func:`no_network` fixture; a plain context manager for
    code outside pytest. Not thread-safe against other code patching the
    same functions.
    """
    real_connect, real_connect_ex = socket.socket.connect, socket.socket.connect_ex
    real_getaddrinfo = socket.getaddrinfo

    def _check(address) -> None:
        if isinstance(address, tuple) and address and address[0] not in _LOOPBACK:
            raise AssertionError(f"test tried to reach {address!r}: only the loopback is allowed")

    def connect(self, address):
        _check(address)
        return real_connect(self, address)

    def connect_ex(self, address):
        _check(address)
        return real_connect_ex(self, address)

    def getaddrinfo(host, *args, **kwargs):
        name = host.decode() if isinstance(host, bytes) else host
        if name is not None and name not in _LOOPBACK:
            raise AssertionError(f"test tried to resolve {name!r}: only the loopback is allowed")
        return real_getaddrinfo(host, *args, **kwargs)

    socket.socket.connect, socket.socket.connect_ex = connect, connect_ex
    socket.getaddrinfo = getaddrinfo
    try:
        yield
    finally:
        socket.socket.connect, socket.socket.connect_ex = real_connect, real_connect_ex
        socket.getaddrinfo = real_getaddrinfo


_PROXY_VARS = ("http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY")


@pytest.fixture
def no_network(monkeypatch):
    """Only the loopback is reachable during the test; proxy variables are cleared."""
    for var in _PROXY_VARS:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost,::1")
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost,::1")
    with loopback_only():
        yield


@pytest.fixture
def archive():
    """Factory fixture: ``archive(folder, faults=None) -> (base_url, server)``.

    Every server started is stopped (thread joined) at the end of the test.
    """
    with contextlib.ExitStack() as stack:

        def start(folder, faults: Mapping[str, Fault] | None = None) -> tuple[str, ArchiveServer]:
            return stack.enter_context(serve(folder, faults))

        yield start
