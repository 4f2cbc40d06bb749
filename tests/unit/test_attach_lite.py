"""The light `skbridge attach` (issue 14): its results folder is the settings model's, its
stdlib client speaks to a small fake API server at the HTTP boundary (the real API server is
in tests/jobs/test_attach_light.py), and importing it loads none of the heavy packages."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from bridge.configfile import read_config_mapping, results_root
from bridge.errors import BridgeError
from bridge.kubernetes.kubeconfig import kubeconfig_document, render_kubeconfig
from bridge.kubernetes.lite import AttachBundle, LitePod, attach_extension, read_attach_bundle
from bridge.settings import load_settings

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(("text", "env"), [
    ("", {}),
    ("nas:\n  root: /srv/nas\n", {}),
    ("nas:\n  root: /srv/nas\n  results_dir: /elsewhere/results\n", {}),
    ("nas:\n  root: /srv/nas\n  results_dir: out\n", {"SKBRIDGE_NAS__ROOT": "/env/nas"}),
    ("nas:\n  results_dir: out\n", {"skbridge_nas__results_dir": "lower"}),
    ("nas:\n  root: /srv/nas\n", {"SKBRIDGE_NAS": '{"root": "/json/nas", "results_dir": "r"}'}),
    ("nas:\n  root: /srv/nas\n", {"SKBRIDGE_NAS": '{"root": "/json/nas"}', "SKBRIDGE_NAS__RESULTS_DIR": "x"}),
])
def test_results_root_is_the_settings_models(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, text: str,
                                             env: dict[str, str]) -> None:
    config = tmp_path / "config.yaml"
    config.write_text(text, encoding="utf-8")
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert results_root(read_config_mapping(config), os.environ) == load_settings(config).nas.results_root


def test_importing_attach_loads_no_settings_model_nor_kubernetes_client() -> None:
    code = ("import sys, bridge.hooks.attach; print(sorted({m.split('.')[0] for m in sys.modules} & "
            "{'pydantic', 'pydantic_settings', 'structlog', 'kubernetes', 'urllib3', 'yaml'}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def _bundle_kubeconfig(tmp_path: Path, *, extension: bool = True) -> Path:
    doc = kubeconfig_document(server="https://api.example:6443", ca_pem=b"", user_name="u", token="t0k",
                              namespace="ns")
    if extension:
        doc["extensions"] = [attach_extension(job_id="7", restart_count=1, pod="skb-7-r1", namespace="ns",
                                              termination_grace_period_s=20, api_timeout_s=10.0)]
    path = tmp_path / "kubeconfig"
    path.write_text(json.dumps(doc), encoding="utf-8")
    return path


def test_the_bundle_reads_from_a_json_kubeconfig_and_not_from_an_older_one(tmp_path: Path) -> None:
    bundle = read_attach_bundle(_bundle_kubeconfig(tmp_path))
    assert bundle == AttachBundle(server="https://api.example:6443", ca_pem=b"", token="t0k", namespace="ns",
                                  pod="skb-7-r1", job_id="7", restart_count=1, termination_grace_period_s=20,
                                  api_timeout_s=10.0)
    assert read_attach_bundle(_bundle_kubeconfig(tmp_path, extension=False)) is None
    older = tmp_path / "older"
    older.write_text(render_kubeconfig(server="https://a:1", ca_pem=b"", user_name="u", token="t"), encoding="utf-8")
    assert read_attach_bundle(older) is None
    assert read_attach_bundle(tmp_path / "missing") is None


class _FakeApi(BaseHTTPRequestHandler):
    """One Pod `p` in namespace `ns`; `state` says how the next requests are answered."""

    state: dict[str, Any] = {}
    seen: list[tuple[str, str, str]] = []

    def log_message(self, *_args: Any) -> None:
        pass

    def _answer(self, status: int, body: bytes, content_type: str = "application/json") -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        self.seen.append(("GET", self.path, self.headers.get("Authorization", "")))
        if self.state.get("fail"):
            self._answer(self.state["fail"], json.dumps({"message": "nope"}).encode())
        elif self.path.startswith("/api/v1/namespaces/ns/pods/p/log"):
            self._answer(200, b"line 1\nline \xff2\n", "text/plain")
        elif self.path.startswith("/api/v1/namespaces/ns/pods?"):
            self.send_response(200)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for event in ({"type": "MODIFIED", "object": {"kind": "Pod", "status": {"phase": "Running"}}},
                          {"type": "MODIFIED", "object": {"kind": "Pod", "status": {"phase": "Succeeded"}}}):
                line = json.dumps(event).encode() + b"\n"
                self.wfile.write(f"{len(line):x}\r\n".encode() + line + b"\r\n")
            self.wfile.write(b"0\r\n\r\n")
        elif self.path == "/api/v1/namespaces/ns/pods/p":
            self._answer(200, json.dumps({"metadata": {"name": "p", "resourceVersion": "5"}}).encode())
        else:
            self._answer(404, b"{}")

    def do_DELETE(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.seen.append(("DELETE", self.path, json.dumps(body, sort_keys=True)))
        self._answer(404 if self.state.get("gone") else 200, b"{}")


@pytest.fixture
def fake_pod() -> Iterator[LitePod]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _FakeApi)
    _FakeApi.state, _FakeApi.seen = {}, []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield LitePod(AttachBundle(server=f"http://127.0.0.1:{server.server_port}", ca_pem=b"", token="t0k",
                               namespace="ns", pod="p", job_id="7", restart_count=0, termination_grace_period_s=20,
                               api_timeout_s=5.0))
    server.shutdown()


def test_the_lite_client_gets_watches_reads_and_deletes_its_pod(fake_pod: LitePod) -> None:
    assert fake_pod.get() == {"metadata": {"name": "p", "resourceVersion": "5"}}
    phases = [event["object"]["status"]["phase"] for event in fake_pod.watch("5", timeout_s=30)]
    assert phases == ["Running", "Succeeded"]
    assert b"".join(fake_pod.follow_log()) == fake_pod.read_log() == b"line 1\nline \xff2\n"
    fake_pod.delete(20)
    _FakeApi.state["gone"] = True
    fake_pod.delete(20)  # already gone: no error
    get, watch, follow, _read = _FakeApi.seen[:4]
    assert get == ("GET", "/api/v1/namespaces/ns/pods/p", "Bearer t0k")
    assert "fieldSelector=metadata.name%3Dp" in watch[1] and "resourceVersion=5" in watch[1]
    assert "watch=true" in watch[1]
    assert "container=job" in follow[1] and "follow=true" in follow[1]
    assert _FakeApi.seen[4][2] == json.dumps({"apiVersion": "v1", "gracePeriodSeconds": 20, "kind": "DeleteOptions",
                                              "propagationPolicy": "Background"}, sort_keys=True)


def test_the_lite_client_reads_404_as_gone_and_raises_a_bridge_error_otherwise(fake_pod: LitePod) -> None:
    _FakeApi.state["fail"] = 404
    assert fake_pod.get() is None
    _FakeApi.state["fail"] = 403
    with pytest.raises(BridgeError, match="403 nope"):
        fake_pod.get()
    with pytest.raises(BridgeError):
        list(fake_pod.follow_log())


def test_an_unreachable_api_server_is_a_bridge_error() -> None:
    pod = LitePod(AttachBundle(server="http://127.0.0.1:9", ca_pem=b"", token="t", namespace="ns", pod="p",
                               job_id="7", restart_count=0, termination_grace_period_s=20, api_timeout_s=1.0))
    with pytest.raises(BridgeError, match="unreachable"):
        pod.get()
