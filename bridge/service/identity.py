"""Who is calling: a MUNGE credential checked by the local munged, or a token issued for one."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import pwd
import re
import secrets
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import structlog

log = structlog.get_logger(__name__)

_FIELD = re.compile(r"^(?P<key>[A-Z_]+):\s+(?P<value>.*)$")
_NUMBER = re.compile(r"\((\d+)\)\s*$")
_MAX_CREDENTIAL = 4096


class AuthError(Exception):
    """The caller could not be identified (answered 401); the message says why."""


@dataclass(frozen=True)
class Identity:
    uid: int
    gid: int
    user: str
    groups: tuple[int, ...]
    admin: bool = False


def identity_for(uid: int, gid: int, admin_gid: int | None) -> Identity:
    try:
        entry = pwd.getpwuid(uid)
    except KeyError as exc:
        raise AuthError(f"uid {uid} has no account on this host") from exc
    groups = tuple(os.getgrouplist(entry.pw_name, entry.pw_gid))
    return Identity(uid=uid, gid=gid, user=entry.pw_name, groups=groups,
                    admin=admin_gid is not None and admin_gid in groups)


def parse_unmunge(text: str) -> dict[str, str]:
    fields: dict[str, str] = {}
    for line in text.splitlines():
        match = _FIELD.match(line.strip())
        if match:
            fields[match.group("key")] = match.group("value").strip()
    return fields


def verify_munge(credential: str, unmunge: Path, *, timeout_s: float = 5.0) -> tuple[int, int]:
    """(uid, gid) the local munged vouches for; AuthError for a bad, expired or replayed credential."""
    value = credential.strip()
    if not value or len(value) > _MAX_CREDENTIAL or not value.isascii():
        raise AuthError("not a MUNGE credential")
    try:
        done = subprocess.run([str(unmunge)], input=value.encode("ascii") + b"\n", capture_output=True,
                              timeout=timeout_s, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        log.error("unmunge failed", error=str(exc))
        raise AuthError("the MUNGE credential could not be checked") from exc
    fields = parse_unmunge(done.stdout.decode("utf-8", "replace"))
    status = fields.get("STATUS", "")
    if done.returncode != 0 or not status.startswith("Success"):
        reason = status or done.stderr.decode("utf-8", "replace").strip().removeprefix("unmunge: ")
        raise AuthError(f"MUNGE credential refused: {reason or f'unmunge exited {done.returncode}'}")
    uid_match = _NUMBER.search(fields.get("UID", ""))
    gid_match = _NUMBER.search(fields.get("GID", ""))
    if uid_match is None or gid_match is None:
        raise AuthError("MUNGE credential without a uid/gid")
    return int(uid_match.group(1)), int(gid_match.group(1))


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class TokenSigner:
    """HMAC-SHA256 tokens with a random key of this process: a restart ends every token."""

    def __init__(self, ttl_s: float, key: bytes | None = None) -> None:
        self.ttl_s = ttl_s
        self._key = key or secrets.token_bytes(32)

    def issue(self, uid: int, gid: int, *, now: float | None = None) -> tuple[str, float]:
        expires = (time.time() if now is None else now) + self.ttl_s
        body = _b64(json.dumps({"uid": uid, "gid": gid, "exp": expires}, separators=(",", ":")).encode())
        return f"{body}.{self._sign(body)}", expires

    def check(self, token: str, *, now: float | None = None) -> tuple[int, int]:
        body, sep, signature = token.strip().partition(".")
        if not sep or not hmac.compare_digest(signature, self._sign(body)):
            raise AuthError("bad token")
        try:
            claims = json.loads(_unb64(body))
            uid, gid, expires = int(claims["uid"]), int(claims["gid"]), float(claims["exp"])
        except (ValueError, KeyError, TypeError) as exc:
            raise AuthError("bad token") from exc
        if (time.time() if now is None else now) >= expires:
            raise AuthError("token expired: get a new one with a MUNGE credential (POST /api/v1/token)")
        return uid, gid

    def _sign(self, body: str) -> str:
        return _b64(hmac.new(self._key, body.encode("ascii", "replace"), hashlib.sha256).digest())
