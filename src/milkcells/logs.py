"""Logging: where a step's time goes (:func:`timed`), and the rule scripts' set-up (:func:`setup_rule`)."""

from __future__ import annotations

import contextlib
import logging
import sys
import time
from collections.abc import Iterator

__all__ = ["setup_rule", "timed"]


def setup_rule(snakemake) -> logging.Logger:
    """Send log records and warnings to the rule's log file (and stderr); set thread counts."""
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if snakemake.log:
        handlers.append(logging.FileHandler(str(snakemake.log[0]), mode="w"))
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        handlers=handlers,
        force=True,
    )
    for noisy in ("numba", "h5py", "matplotlib", "fontTools", "PIL"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    logging.captureWarnings(True)
    if "scanpy" in sys.modules:  # the rule's library modules use it (and imported it already)
        sc = sys.modules["scanpy"]
        sc.settings.n_jobs = max(int(getattr(snakemake, "threads", 1)), 1)
        sc.settings.verbosity = 1
    log = logging.getLogger(f"milkcells.rule.{snakemake.rule}")

    def hook(exc_type, exc, tb):
        log.error("rule %s failed", snakemake.rule, exc_info=(exc_type, exc, tb))

    sys.excepthook = hook
    return log


@contextlib.contextmanager
def timed(what: str, logger: logging.Logger | None = None) -> Iterator[None]:
    """Log how long the block took (``<what>: <seconds> s``, level INFO): where a rule's time goes."""
    t0 = time.perf_counter()
    try:
        yield
    finally:
        (logger or logging.getLogger("milkcells")).info("%s: %.1f s", what, time.perf_counter() - t0)
