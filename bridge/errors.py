"""One error hierarchy for the whole bridge.

Every failure is either temporary (the same action may succeed later: slurmctld down,
API server unreachable, queue full) or permanent (retrying cannot help: invalid job file,
forbidden image, broken template). Callers decide between retry and reject on that
distinction alone.
"""

from __future__ import annotations


class BridgeError(Exception):
    """Base of every error the bridge raises on purpose."""


class TemporaryError(BridgeError):
    """The action may succeed if retried later."""

    def __init__(self, message: str, *, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class PermanentError(BridgeError):
    """Retrying the same action cannot succeed."""


class ConfigError(PermanentError):
    """The bridge's own configuration is invalid."""
