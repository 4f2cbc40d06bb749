"""One table for how every Kubernetes answer becomes the bridge's error (bridge.kubernetes.client.api_error),
and the client the watcher's hooks share."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bridge.errors import ConfigError, PermanentError, TemporaryError
from bridge.kubernetes.client import (
    SHARED_POOL_SIZE,
    KubeConflict,
    KubeError,
    KubeForbidden,
    KubeNotFound,
    KubeRejected,
    KubeUnauthorized,
    api_error,
    api_unavailable,
    shared_client,
)
from bridge.kubernetes.kubeconfig import kubeconfig_document

RBAC = 'pods is forbidden: User "system:serviceaccount:slurm-bridge:skbridge" cannot create resource "pods"'
POLICY = "pods \"skb-1-r0\" is forbidden: ValidatingAdmissionPolicy 'slurm-k8s-bridge-pods' denied request"
PSA = 'pods "skb-1-r0" is forbidden: violates PodSecurity "restricted:latest": host namespaces'


@pytest.mark.parametrize(("status", "message", "kind", "temporary"), [
    (0, "unreachable", KubeError, True),
    (401, "Unauthorized", KubeUnauthorized, False),
    (403, RBAC, KubeUnauthorized, False),
    (403, POLICY, KubeForbidden, False),
    (403, PSA, KubeForbidden, False),
    (400, "bad request", KubeRejected, False),
    (422, "Pod is invalid", KubeRejected, False),
    (404, "not found", KubeNotFound, True),
    (409, "already exists", KubeConflict, True),
    (429, "too many requests", KubeError, True),
    (500, "internal error", KubeError, True),
    (503, "unavailable", KubeError, True),
    (504, "timeout", KubeError, True),
])
def test_every_answer_has_one_meaning(status: int, message: str, kind: type, temporary: bool) -> None:
    error = api_error("POST", "/api/v1/x", status, "", json.dumps({"message": message}))
    assert type(error) is kind
    assert isinstance(error, TemporaryError) is temporary
    assert isinstance(error, PermanentError) is not temporary
    assert message in str(error)


def test_credential_and_rbac_problems_are_the_admins() -> None:
    for status, message in ((401, "Unauthorized"), (403, RBAC)):
        assert isinstance(api_error("GET", "/", status, "", json.dumps({"message": message})), ConfigError)


def test_retry_after_is_kept() -> None:
    error = api_error("GET", "/", 429, "", b"", {"Retry-After": "7"})
    assert isinstance(error, KubeError) and error.retry_after_s == 7.0
    assert api_error("GET", "/", 503, "", b"not json", {"Retry-After": "soon"}).retry_after_s is None  # type: ignore[union-attr]


def _kubeconfig(path: Path, token: str) -> Path:
    doc = kubeconfig_document(server="https://api.example:6443", ca_pem=b"", user_name="u", token=token, namespace="ns")
    path.write_text(json.dumps(doc), encoding="utf-8")
    return path


def test_the_shared_client_is_one_per_kubeconfig_until_the_file_is_rewritten(tmp_path: Path) -> None:
    path = _kubeconfig(tmp_path / "kubeconfig", "first-token")
    first = shared_client(path, timeout_s=10.0)
    assert shared_client(path, timeout_s=10.0) is first
    assert first.api_client.configuration.connection_pool_maxsize == SHARED_POOL_SIZE
    assert shared_client(_kubeconfig(tmp_path / "other", "other-token"), timeout_s=10.0) is not first

    renewed = _kubeconfig(path, "renewed-token-longer")  # an admin renews the credential
    second = shared_client(renewed, timeout_s=10.0)
    assert second is not first
    # The key it is kept under changed across client versions (authorization, BearerToken).
    assert "Bearer renewed-token-longer" in second.api_client.configuration.api_key.values()
    assert shared_client(path, timeout_s=10.0) is second


def test_the_shared_client_says_which_kubeconfig_is_missing(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"cannot load kubeconfig .*absent"):
        shared_client(tmp_path / "absent", timeout_s=10.0)


@pytest.mark.parametrize(("error", "unavailable"), [
    (KubeError("read timed out", status=0), True),
    (KubeError("too many requests", status=429), True),
    (KubeError("etcdserver: request timed out", status=504), True),
    (KubeConflict("exists", status=409), False),
    (KubeNotFound("gone", status=404), False),
    (KubeRejected("invalid", status=422), False),
    (TemporaryError("objects of an earlier attempt are still terminating"), False),
])
def test_an_unanswering_or_overloaded_api_server_is_told_from_a_fault_of_the_job(error: Exception,
                                                                                 unavailable: bool) -> None:
    """The prolog requeues on both, but counts only the job's own faults against its attempts:
    an API server that times out under load must not fail every job that meets it."""
    assert api_unavailable(error) is unavailable
