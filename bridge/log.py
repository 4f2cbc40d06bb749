"""structlog configured once: JSON lines on stdout (journald picks them up under systemd).

Every line of a job's story carries its identity: bind `file`, `owner`, `job_id`, `pod`
with `structlog.contextvars.bound_contextvars(...)` or `log.bind(...)`.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import threading
from collections.abc import Iterator
from contextvars import ContextVar
from typing import Any

import structlog

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}


def configure_logging(level: str = "info", *, json_output: bool = True, stream: Any = None) -> None:
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer() if json_output else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.StackInfoRenderer(),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(_LEVELS.get(level, logging.INFO)),
        logger_factory=_RoutedLoggerFactory(stream or sys.stdout),
        cache_logger_on_first_use=False,
    )


def get_logger(**initial: Any) -> structlog.typing.FilteringBoundLogger:
    logger: structlog.typing.FilteringBoundLogger = structlog.get_logger(**initial)
    return logger


# Where this context's lines go instead of the configured stream: the watcher runs hooks for
# slurmctld, and their lines belong in the hooks' log, not among the watcher's.
_stream_override: ContextVar[Any] = ContextVar("skbridge_log_stream", default=None)
_override_lock = threading.Lock()


@contextlib.contextmanager
def log_stream(stream: Any) -> Iterator[None]:
    token = _stream_override.set(stream)
    try:
        yield
    finally:
        _stream_override.reset(token)


class _RoutedPrintLogger(structlog.PrintLogger):
    def msg(self, message: str) -> None:
        stream = _stream_override.get()
        if stream is None:
            super().msg(message)
            return
        with _override_lock:
            stream.write(message + "\n")
            stream.flush()

    log = debug = info = warn = warning = msg
    fatal = failure = err = error = critical = exception = msg


class _RoutedLoggerFactory:
    def __init__(self, stream: Any) -> None:
        self._stream = stream

    def __call__(self, *args: Any) -> _RoutedPrintLogger:
        return _RoutedPrintLogger(self._stream)
