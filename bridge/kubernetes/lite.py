"""A standard-library client for exactly what `skbridge attach` asks of its one Pod.

Every bridge job's batch step runs attach; the official `kubernetes` package costs ~0.3 s
of CPU to import before the first request. Attach needs five calls on one Pod (get, watch by
name from a resourceVersion, follow the `job` container's log, read it whole, delete with a
grace period), with the job's own token and the cluster's CA, so `http.client` + `ssl` do.

The prolog writes what this needs into the per-job kubeconfig (`ATTACH_KUBECONFIG`), as JSON
(valid YAML for every other reader) with an `extensions` entry named `ATTACH_EXTENSION`: the
Pod, its job and attempt, the termination grace period and the API timeout from the bridge's
settings. A kubeconfig without it (written by an older prolog) reads as None: attach then
takes the full path through the official client.

Errors match what attach relies on from `bridge.kubernetes.client`: every failure is a
`BridgeError` (temporary), 404 on the Pod reads as gone.
"""

from __future__ import annotations

import base64
import http.client
import json
import ssl
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlencode, urlsplit

from bridge.errors import TemporaryError
from bridge.kubernetes.podstatus import JOB_CONTAINER

ATTACH_KUBECONFIG = ".attach.kubeconfig"
ATTACH_EXTENSION = "skbridge.io/attach"
LOG_READ_TIMEOUT_S = 24 * 3600.0
_CHUNK_BYTES = 4096


class LiteError(TemporaryError):
    """An API answer other than 2xx (`status`), or no answer at all (status 0)."""

    def __init__(self, message: str, *, status: int) -> None:
        super().__init__(message)
        self.status = status


class PodAccess(Protocol):
    """What attach does to its Pod; every method raises a BridgeError when the API fails."""

    @property
    def pod(self) -> str:
        """The Pod's name."""

    def get(self) -> dict[str, Any] | None:
        """The Pod, None when it does not exist (404)."""

    def watch(self, resource_version: str, timeout_s: float) -> Iterator[dict[str, Any]]:
        """Watch events ({"type", "object"}) for the Pod after `resource_version`."""

    def follow_log(self) -> Iterator[bytes]:
        """The job container's log from its start, followed until the server closes it."""

    def read_log(self) -> bytes:
        """The job container's whole log, one read."""

    def delete(self, grace_period_s: int) -> None:
        """Delete the Pod with that grace period (already gone: no error)."""

    def for_pod(self, name: str) -> PodAccess:
        """The same access on another Pod of the job (a multi-node job's rank)."""


@dataclass(frozen=True)
class AttachBundle:
    server: str
    ca_pem: bytes
    token: str
    namespace: str
    pod: str
    job_id: str
    restart_count: int
    termination_grace_period_s: int
    api_timeout_s: float
    other_pods: tuple[str, ...] = ()
    """A multi-node job's ranks 1..n-1 (attach follows them beside rank 0)."""


def attach_extension(*, job_id: str, restart_count: int, pod: str, namespace: str,
                     termination_grace_period_s: int, api_timeout_s: float,
                     other_pods: Sequence[str] = ()) -> dict[str, Any]:
    """The kubeconfig `extensions` entry the prolog writes and `read_attach_bundle` reads."""
    extension: dict[str, Any] = {
        "job_id": job_id, "restart_count": restart_count, "pod": pod, "namespace": namespace,
        "termination_grace_period_s": termination_grace_period_s, "api_timeout_s": api_timeout_s}
    if other_pods:
        extension["other_pods"] = list(other_pods)
    return {"name": ATTACH_EXTENSION, "extension": extension}


def read_attach_bundle(path: Path) -> AttachBundle | None:
    """The bundle in a JSON attach kubeconfig; None when missing, YAML, or incomplete."""
    try:
        doc = json.loads(path.read_bytes())
        extra = next(item["extension"] for item in doc.get("extensions") or []
                     if isinstance(item, dict) and item.get("name") == ATTACH_EXTENSION)
        cluster = doc["clusters"][0]["cluster"]
        ca_data = cluster.get("certificate-authority-data")
        return AttachBundle(
            server=str(cluster["server"]),
            ca_pem=base64.b64decode(ca_data) if ca_data else b"",
            token=str(doc["users"][0]["user"]["token"]),
            namespace=str(extra["namespace"]), pod=str(extra["pod"]), job_id=str(extra["job_id"]),
            restart_count=int(extra["restart_count"]),
            termination_grace_period_s=int(extra["termination_grace_period_s"]),
            api_timeout_s=float(extra["api_timeout_s"]),
            other_pods=tuple(str(name) for name in extra.get("other_pods") or ()))
    except (OSError, ValueError, LookupError, TypeError, AttributeError, StopIteration):
        return None


class LitePod:
    """`PodAccess` over http.client: one connection per request (attach makes a handful)."""

    def __init__(self, bundle: AttachBundle) -> None:
        self.bundle = bundle
        url = urlsplit(bundle.server)
        self._https = url.scheme == "https"
        self._host = url.hostname or "localhost"
        self._port = url.port
        self._base = url.path.rstrip("/")
        self._tls = ssl.create_default_context(cadata=bundle.ca_pem.decode("ascii")) if bundle.ca_pem else None
        self._pod_path = f"/api/v1/namespaces/{bundle.namespace}/pods/{bundle.pod}"

    @property
    def pod(self) -> str:
        return self.bundle.pod

    def for_pod(self, name: str) -> LitePod:
        """The same credential on another of the job's Pods (a multi-node job's rank)."""
        return LitePod(replace(self.bundle, pod=name))

    def get(self) -> dict[str, Any] | None:
        try:
            return json.loads(self._request("GET", self._pod_path))  # type: ignore[no-any-return]
        except LiteError as exc:
            if exc.status == 404:
                return None
            raise
        except ValueError as exc:
            raise LiteError(f"GET {self._pod_path}: not JSON: {exc}", status=0) from exc

    def watch(self, resource_version: str, timeout_s: float) -> Iterator[dict[str, Any]]:
        path = f"/api/v1/namespaces/{self.bundle.namespace}/pods"
        query = {"fieldSelector": f"metadata.name={self.bundle.pod}", "resourceVersion": resource_version,
                 "watch": "true", "timeoutSeconds": max(1, int(timeout_s)), "allowWatchBookmarks": "false"}
        buffer = b""
        for chunk in self._stream(path, query, read_timeout_s=timeout_s + 5):
            buffer += chunk
            while b"\n" in buffer:
                line, buffer = buffer.split(b"\n", 1)
                if line.strip():
                    try:
                        yield json.loads(line)
                    except ValueError as exc:
                        raise LiteError(f"watch of {path}: not JSON: {exc}", status=0) from exc

    def follow_log(self) -> Iterator[bytes]:
        yield from self._stream(f"{self._pod_path}/log", {"container": JOB_CONTAINER, "follow": "true"},
                                read_timeout_s=LOG_READ_TIMEOUT_S)

    def read_log(self) -> bytes:
        return self._request("GET", f"{self._pod_path}/log", {"container": JOB_CONTAINER})

    def delete(self, grace_period_s: int) -> None:
        body = {"kind": "DeleteOptions", "apiVersion": "v1", "propagationPolicy": "Background",
                "gracePeriodSeconds": grace_period_s}
        try:
            self._request("DELETE", self._pod_path, body=body)
        except LiteError as exc:
            if exc.status != 404:
                raise

    def _connect(self, read_timeout_s: float) -> http.client.HTTPConnection:
        timeout_s = self.bundle.api_timeout_s
        conn: http.client.HTTPConnection
        if self._https:
            conn = http.client.HTTPSConnection(self._host, self._port, timeout=timeout_s, context=self._tls)
        else:
            conn = http.client.HTTPConnection(self._host, self._port, timeout=timeout_s)
        conn.connect()
        if conn.sock is not None:
            conn.sock.settimeout(read_timeout_s)  # connect within the API timeout; a followed stream may idle long
        return conn

    def _open(self, method: str, path: str, query: dict[str, Any] | None, body: Any,
              read_timeout_s: float) -> tuple[http.client.HTTPConnection, http.client.HTTPResponse]:
        url = self._base + path + (f"?{urlencode(query)}" if query else "")
        headers = {"Accept": "application/json", "Authorization": f"Bearer {self.bundle.token}",
                   "User-Agent": "skbridge-attach"}
        data = None
        if body is not None:
            data = json.dumps(body).encode("utf-8")
            headers["Content-Type"] = "application/json"
        conn = None
        try:
            conn = self._connect(read_timeout_s)
            conn.request(method, url, body=data, headers=headers)
            response = conn.getresponse()
        except (OSError, http.client.HTTPException) as exc:
            if conn is not None:
                conn.close()
            raise LiteError(f"{method} {path}: API server unreachable: {exc}", status=0) from exc
        if not 200 <= response.status <= 299:
            try:
                detail = _message(response.read())
            except (OSError, http.client.HTTPException):
                detail = ""
            conn.close()
            raise LiteError(f"{method} {path}: {response.status} {detail or response.reason}",
                            status=response.status)
        return conn, response

    def _request(self, method: str, path: str, query: dict[str, Any] | None = None, *, body: Any = None) -> bytes:
        conn, response = self._open(method, path, query, body, self.bundle.api_timeout_s)
        try:
            return response.read()
        except (OSError, http.client.HTTPException) as exc:
            raise LiteError(f"{method} {path}: answer broke: {exc}", status=0) from exc
        finally:
            conn.close()

    def _stream(self, path: str, query: dict[str, Any], *, read_timeout_s: float) -> Iterator[bytes]:
        """The body as it arrives (read1: whatever the server has sent, so lines are not held back)."""
        conn, response = self._open("GET", path, query, None, read_timeout_s)
        try:
            while chunk := response.read1(_CHUNK_BYTES):
                yield chunk
        except (OSError, http.client.HTTPException) as exc:
            raise LiteError(f"stream of {path} broke: {exc}", status=0) from exc
        finally:
            conn.close()


def _message(body: bytes) -> str:
    try:
        payload = json.loads(body or b"{}")
    except ValueError:
        return ""
    return str(payload.get("message") or "") if isinstance(payload, dict) else ""
