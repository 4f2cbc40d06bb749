"""A thin, fast layer over the official client's ApiClient: REST paths in, dicts out.

The generated API classes import thousands of model modules (~0.4 s), which the prolog
pays on every job's allocation path. `ApiClient.call_api` with raw paths and JSON dicts
keeps the official client's kubeconfig, TLS and auth handling without that cost.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import urllib3
from kubernetes import client as kube_client
from kubernetes import config as kube_config
from kubernetes.client import api_client, exceptions

from bridge.errors import ConfigError, PermanentError, TemporaryError


class KubeError(TemporaryError):
    """An API answer that may change on retry (server error, overload, no answer: status 0),
    or a lookup's miss; `status` is the HTTP status, `retry_after_s` the server's Retry-After."""

    def __init__(self, message: str, *, status: int, reason: str = "", retry_after_s: float | None = None) -> None:
        super().__init__(message, retry_after_s=retry_after_s)
        self.status = status
        self.reason = reason


class KubeNotFound(KubeError):
    """404: the object (or its namespace) does not exist."""


class KubeConflict(KubeError):
    """409: an object of that name exists already, or was changed meanwhile."""


class KubeRejected(PermanentError):
    """The API server refused the object itself: invalid (400/422) or forbidden (403) by RBAC or admission."""

    def __init__(self, message: str, *, status: int, reason: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason


class KubeForbidden(KubeRejected):
    """403: RBAC, Pod Security or the bridge's admission policy said no."""


class KubeUnauthorized(ConfigError):
    """401, or a 403 from RBAC: the bridge's own credential was refused (expired or revoked
    token) or lacks a permission it needs. No job can succeed until an admin fixes it."""

    def __init__(self, message: str, *, status: int = 401, reason: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason


def load_client(kubeconfig: Path, *, timeout_s: float, pool_size: int | None = None) -> Kube:
    """A client of its own: its own kubeconfig read, its own connections (`pool_size` kept open;
    the official client's default, 5 per CPU, when None)."""
    configuration = kube_client.Configuration()
    if pool_size is not None:
        configuration.connection_pool_maxsize = pool_size
    try:
        client = kube_config.new_client_from_config(config_file=str(kubeconfig), client_configuration=configuration)
    except (OSError, kube_config.ConfigException) as exc:
        raise ConfigError(f"cannot load kubeconfig {kubeconfig}: {exc}") from exc
    return Kube(client, timeout_s=timeout_s)


# Hooks served by the watcher run side by side in its threads, up to one per job slot.
SHARED_POOL_SIZE = 64
_shared: dict[tuple[str, int, int, float], Kube] = {}
_shared_lock = threading.Lock()


def shared_client(kubeconfig: Path, *, timeout_s: float) -> Kube:
    """One client per kubeconfig, as the file is now, for the whole process.

    The watcher runs every job's prolog and epilog; a client of each hook's own costs a
    kubeconfig parse and a TLS handshake, on this side (~7 ms of CPU) and on the API
    server's, twice per job. A kubeconfig rewritten on disk (a renewed credential: its
    modification time or size changes) gets a new client at the next hook; the old one goes.
    """
    try:
        stat = kubeconfig.stat()
    except OSError as exc:
        raise ConfigError(f"cannot load kubeconfig {kubeconfig}: {exc}") from exc
    key = (str(kubeconfig), stat.st_mtime_ns, stat.st_size, timeout_s)
    with _shared_lock:
        kube = _shared.get(key)
        if kube is None:
            kube = load_client(kubeconfig, timeout_s=timeout_s, pool_size=SHARED_POOL_SIZE)
            for stale in [other for other in _shared if other[0] == key[0]]:
                del _shared[stale]
            _shared[key] = kube
        return kube


class Kube:
    def __init__(self, client: api_client.ApiClient, *, timeout_s: float = 10.0) -> None:
        self.api_client = client
        self._timeout_s = timeout_s

    def request(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        query: dict[str, Any] | None = None,
        content_type: str = "application/json",
    ) -> dict[str, Any]:
        data = self._call(method, path, body=body, query=query, content_type=content_type).read()
        return json.loads(data) if data else {}

    def request_text(self, method: str, path: str, *, query: dict[str, Any] | None = None) -> str:
        """For endpoints that answer plain text, like pods/log."""
        data = self._call(method, path, query=query).read()
        return data.decode("utf-8", "replace") if data else ""

    def stream_lines(self, path: str, *, query: dict[str, Any], read_timeout_s: float) -> Iterator[bytes]:
        """Raw streamed body (pods/log?follow=true), chunk by chunk."""
        response = self._call("GET", path, query=query, read_timeout_s=read_timeout_s)
        try:
            yield from response.response.stream(4096, decode_content=True)
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise KubeError(f"stream of {path} broke: {exc}", status=0) from exc
        finally:
            response.response.release_conn()

    def get_or_none(self, path: str) -> dict[str, Any] | None:
        try:
            return self.request("GET", path)
        except KubeError as exc:
            if exc.status == 404:
                return None
            raise

    def delete(self, path: str, *, grace_period_s: int | None = None) -> bool:
        """Delete; False when it was already gone."""
        body: dict[str, Any] = {"kind": "DeleteOptions", "apiVersion": "v1", "propagationPolicy": "Background"}
        if grace_period_s is not None:
            body["gracePeriodSeconds"] = grace_period_s
        try:
            self.request("DELETE", path, body=body)
        except KubeError as exc:
            if exc.status == 404:
                return False
            raise
        return True

    def watch(self, path: str, *, query: dict[str, Any], timeout_s: float) -> Iterator[dict[str, Any]]:
        """Yield watch events ({"type", "object"}) until the server ends the stream."""
        params = {**query, "watch": "true", "timeoutSeconds": max(1, int(timeout_s)), "allowWatchBookmarks": "false"}
        buffer = b""
        for chunk in self.stream_lines(path, query=params, read_timeout_s=timeout_s + 5):
            buffer += chunk
            while b"\n" in buffer:
                line, buffer = buffer.split(b"\n", 1)
                if line.strip():
                    yield json.loads(line)

    def _call(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        query: dict[str, Any] | None = None,
        content_type: str = "application/json",
        read_timeout_s: float | None = None,
    ) -> Any:
        """Send one request; returns the client's RESTResponse (body not yet read)."""
        headers = {"Accept": "application/json"}
        if body is not None:
            headers["Content-Type"] = content_type
        try:
            method, url, headers, body, _ = self.api_client.param_serialize(
                method=method, resource_path=path, query_params=list((query or {}).items()), header_params=headers,
                body=body, auth_settings=["BearerToken"])
            response = self.api_client.call_api(method, url, header_params=headers, body=body,
                                                _request_timeout=(self._timeout_s, read_timeout_s or self._timeout_s))
        except exceptions.ApiException as exc:
            raise api_error(method, path, int(exc.status or 0), str(exc.reason or ""), exc.body, exc.headers) from exc
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise KubeError(f"{method} {path}: API server unreachable: {exc}", status=0) from exc
        if not 200 <= response.status <= 299:
            raise api_error(method, path, response.status, str(response.reason or ""), response.read(),
                            response.getheaders())
        return response


def api_error(method: str, path: str, status: int, message: str, body: Any,
              headers: Any = None) -> KubeError | KubeRejected | KubeUnauthorized:
    """The one place an API answer becomes the bridge's error: temporary or permanent, and which."""
    reason = ""
    try:
        payload = json.loads(body or "{}")
        message = payload.get("message") or message
        reason = payload.get("reason") or ""
    except (TypeError, ValueError):
        pass
    text = f"{method} {path}: {status} {message}"
    if status == 401:
        return KubeUnauthorized(f"{text}: the bridge's credential was refused; renew its kubeconfig", reason=reason)
    if status == 403 and _RBAC_DENIAL.search(message):
        return KubeUnauthorized(f"{text}: the bridge's RBAC lacks this; re-apply deploy/kubernetes", status=403,
                                reason=reason)
    if status == 403:
        return KubeForbidden(text, status=status, reason=reason)
    if status in (400, 422):
        return KubeRejected(text, status=status, reason=reason)
    kind = {404: KubeNotFound, 409: KubeConflict}.get(status, KubeError)
    return kind(text, status=status, reason=reason, retry_after_s=_retry_after_s(headers))


def api_unavailable(exc: BaseException) -> bool:
    """The API server did not answer in time, or said it is overloaded or failing (429, 5xx):
    a state of the control plane that every job meets alike, not a fault of this job."""
    return isinstance(exc, KubeError) and (exc.status in {0, 429} or exc.status >= 500)


# RBAC's own wording: `User "system:serviceaccount:slurm-bridge:skbridge" cannot create resource ...`;
# admission denials name their plugin or policy instead.
_RBAC_DENIAL = re.compile(r'is forbidden: User "[^"]*" cannot ')


def _retry_after_s(headers: Any) -> float | None:
    try:
        value = (headers or {}).get("Retry-After")
        return float(value) if value is not None else None
    except (TypeError, ValueError, AttributeError):
        return None
