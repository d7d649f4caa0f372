"""HTTP details of a transfer (:mod:`milkcells.download`): ranges, headers, progress in the log."""

from __future__ import annotations

import logging
import re
import time

import requests

__all__ = ["PROGRESS_AFTER", "PROGRESS_EVERY", "Progress", "human", "int_header", "parse_content_range"]

# the download's messages, under the download module's name
log = logging.getLogger("milkcells.download")

PROGRESS_AFTER = 5.0  # a download is "long" after this many seconds: log its progress
PROGRESS_EVERY = 10.0  # and then at least every 10 % or this many seconds


def human(n: float) -> str:
    """A byte count for people: ``1536`` -> ``"1.5 KiB"``."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"  # pragma: no cover - unreachable


def parse_content_range(value: str | None) -> tuple[int | None, int | None, int | None]:
    """``"bytes 10-99/100"`` -> (10, 99, 100); ``"bytes */100"`` -> (None, None, 100)."""
    m = re.fullmatch(r"\s*bytes\s+(?:(\d+)-(\d+)|\*)/(\d+|\*)\s*", value or "")
    if not m:
        return None, None, None
    start, end, total = m.groups()
    return (
        None if start is None else int(start),
        None if end is None else int(end),
        None if total == "*" else int(total),
    )


def int_header(resp: requests.Response, name: str) -> int | None:
    try:
        return int(resp.headers[name])
    except (KeyError, ValueError):
        return None


class Progress:
    """Log the progress of long downloads at INFO (every 10 % or every few seconds)."""

    def __init__(self, url: str, done: int, total: int | None, enabled: bool) -> None:
        self.url, self.done, self.total, self.enabled = url, done, total, enabled
        self.start = self.last_time = time.monotonic()
        self.last_done = done

    def update(self, n: int) -> None:
        self.done += n
        if not self.enabled:
            return
        now = time.monotonic()
        if now - self.start < PROGRESS_AFTER:
            return
        step = self.total is not None and self.total > 0 and (self.done - self.last_done) * 10 >= self.total
        if step or now - self.last_time >= PROGRESS_EVERY:
            rate = (self.done - self.last_done) / max(now - self.last_time, 1e-9)
            of = ""
            if self.total:
                of = f" of {human(self.total)} ({100 * self.done / self.total:.0f} %)"
            log.info("%s: %s%s, %s/s", self.url, human(self.done), of, human(rate))
            self.last_time, self.last_done = now, self.done
