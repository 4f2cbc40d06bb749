"""Build etcd, the Kubernetes control plane, the kubelet, kubectl and kwok from the Go module proxy.

kind needs Docker and release tarballs come from hosts we cannot reach, so the sandbox
builds the upstream Go modules itself. `k8s.io/kubernetes` replaces its staging modules
with `./staging/...` paths that only exist in its own repository; a wrapper module pins
each of them to the published `v0.Y.Z` tag instead. The result is cached outside the
checkout, keyed by the pinned versions, so only the first run pays for it.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import shutil
import subprocess
import threading
import time
from collections.abc import Sequence
from pathlib import Path

from bridge.errors import PermanentError
from bridge.sandbox.layout import ProgressFn
from bridge.sandbox.versions import PINNED, ComponentVersions

KUBE_BINARIES = ("kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubectl", "kubelet")
ALL_BINARIES = (*KUBE_BINARIES, "etcd", "kwok")

def cache_root() -> Path:
    explicit = os.environ.get("SKBRIDGE_CACHE_DIR")
    if explicit:
        return Path(explicit)
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg) / "slurm-k8s-bridge"


def bin_dir(versions: ComponentVersions = PINNED) -> Path:
    return cache_root() / versions.cache_key / "bin"


def missing_binaries(versions: ComponentVersions = PINNED) -> list[str]:
    directory = bin_dir(versions)
    return [name for name in ALL_BINARIES if not os.access(directory / name, os.X_OK)]


class _GoCommand:
    """Runs one `go` command, reporting progress with elapsed time while it compiles."""

    def __init__(self, progress: ProgressFn, log_path: Path) -> None:
        self._progress = progress
        self._log_path = log_path

    def run(self, label: str, argv: Sequence[str], cwd: Path, env: dict[str, str]) -> None:
        started = time.monotonic()
        packages_done = 0
        lock = threading.Lock()
        with self._log_path.open("a", encoding="utf-8") as log:
            log.write(f"\n$ (cd {cwd} && {' '.join(argv)})\n")
            log.flush()
            proc = subprocess.Popen(
                list(argv), cwd=cwd, env=env, stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT, text=True, errors="replace",
            )
            assert proc.stdout is not None
            stream = proc.stdout

            def pump() -> None:
                nonlocal packages_done
                for line in stream:
                    log.write(line)
                    with lock:
                        packages_done += 1

            reader = threading.Thread(target=pump, daemon=True)
            reader.start()
            while proc.poll() is None:
                time.sleep(1.0)
                elapsed = int(time.monotonic() - started)
                if elapsed and elapsed % 15 == 0:
                    with lock:
                        count = packages_done
                    self._progress(f"{label}: {elapsed // 60}m{elapsed % 60:02d}s elapsed, {count} lines of go output")
            reader.join()
        if proc.returncode != 0:
            tail = "".join(self._log_path.read_text(encoding="utf-8", errors="replace").splitlines(True)[-40:])
            raise PermanentError(
                f"{label} failed (exit {proc.returncode}); full log in {self._log_path}\n{tail}"
            )
        elapsed_s = time.monotonic() - started
        self._progress(f"{label}: done in {elapsed_s:.0f}s")


def _go_env(gocache_dir: Path | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env["CGO_ENABLED"] = "0"
    env["GOFLAGS"] = "-mod=mod"
    env.setdefault("GOPROXY", "https://proxy.golang.org,direct")
    env["GOTOOLCHAIN"] = "local"
    if gocache_dir is not None:
        env["GOCACHE"] = str(gocache_dir)
    return env


def _staging_modules(kubernetes_version: str, env: dict[str, str]) -> list[str]:
    """The `k8s.io/*` modules that `k8s.io/kubernetes` replaces with staging directories."""
    out = subprocess.run(
        ["go", "mod", "download", "-json", f"k8s.io/kubernetes@{kubernetes_version}"],
        env=env, capture_output=True, text=True, check=False,
    )
    if out.returncode != 0:
        raise PermanentError(f"go mod download k8s.io/kubernetes@{kubernetes_version} failed:\n{out.stdout}{out.stderr}")
    gomod = Path(json.loads(out.stdout)["GoMod"]).read_text(encoding="utf-8")
    return sorted(set(re.findall(r"^\s*(k8s\.io/[\w.-]+)\s*=>\s*\./staging/", gomod, flags=re.MULTILINE)))


def _kube_ldflags(v: ComponentVersions) -> str:
    major, minor = v.kubernetes.removeprefix("v").split(".")[:2]
    build_date = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    flags = ["-s", "-w"]
    for pkg in ("k8s.io/component-base/version", "k8s.io/client-go/pkg/version"):
        flags += [
            f"-X {pkg}.gitVersion={v.kubernetes}",
            f"-X {pkg}.gitMajor={major}",
            f"-X {pkg}.gitMinor={minor}",
            f"-X {pkg}.gitTreeState=clean",
            f"-X {pkg}.gitCommit=module-proxy-{v.kubernetes}",
            f"-X {pkg}.buildDate={build_date}",
        ]
    return " ".join(flags)


def _build_kubernetes(v: ComponentVersions, work: Path, out_dir: Path, go: _GoCommand, env: dict[str, str],
                      names: Sequence[str] = KUBE_BINARIES) -> None:
    src = work / "kubernetes"
    src.mkdir(parents=True, exist_ok=True)
    replaces = "\n".join(f"\t{mod} => {mod} {v.staging}" for mod in _staging_modules(v.kubernetes, env))
    (src / "go.mod").write_text(
        "module slurm-k8s-bridge.local/sandbox-kubernetes\n\n"
        "go 1.25\n\n"
        f"require k8s.io/kubernetes {v.kubernetes}\n\n"
        f"replace (\n{replaces}\n)\n",
        encoding="utf-8",
    )
    # One `go build` for every missing binary: they share most packages. A cache from before
    # the kubelet was added gets only the kubelet (its packages mostly come from the Go cache).
    targets = [f"k8s.io/kubernetes/cmd/{name}" for name in names]
    go.run(
        f"kubernetes {v.kubernetes} ({', '.join(names)})",
        ["go", "build", "-v", "-trimpath", "-ldflags", _kube_ldflags(v), "-o", str(out_dir) + "/", *targets],
        src, env,
    )


def _build_etcd(v: ComponentVersions, work: Path, out_dir: Path, go: _GoCommand, env: dict[str, str]) -> None:
    # etcd's own main package lives in the repository's root module, which is not meant to
    # be imported; server/v3 exposes the same entry point as etcdmain.Main.
    src = work / "etcd"
    src.mkdir(parents=True, exist_ok=True)
    (src / "go.mod").write_text(
        "module slurm-k8s-bridge.local/sandbox-etcd\n\n"
        "go 1.24\n\n"
        f"require go.etcd.io/etcd/server/v3 {v.etcd}\n",
        encoding="utf-8",
    )
    (src / "main.go").write_text(
        "package main\n\n"
        'import (\n\t"os"\n\n\t"go.etcd.io/etcd/server/v3/etcdmain"\n)\n\n'
        "func main() { etcdmain.Main(os.Args) }\n",
        encoding="utf-8",
    )
    ldflags = f"-s -w -X go.etcd.io/etcd/api/v3/version.GitSHA=module-proxy-{v.etcd}"
    go.run(f"etcd {v.etcd}", ["go", "build", "-v", "-trimpath", "-ldflags", ldflags, "-o", str(out_dir / "etcd"), "."], src, env)


def _build_kwok(v: ComponentVersions, work: Path, out_dir: Path, go: _GoCommand, env: dict[str, str]) -> None:
    kwok_env = dict(env, GOBIN=str(out_dir))
    kwok_env["GOFLAGS"] = ""  # go install pkg@version refuses -mod=mod
    ldflags = f"-s -w -X sigs.k8s.io/kwok/pkg/consts.Version={v.kwok}"
    argv = ["go", "install", "-v", "-trimpath", "-ldflags", ldflags, f"sigs.k8s.io/kwok/cmd/kwok@{v.kwok}"]
    go.run(f"kwok {v.kwok}", argv, work, kwok_env)


def ensure_built(progress: ProgressFn, versions: ComponentVersions = PINNED) -> Path:
    """Return the directory holding every sandbox binary, building what is missing."""
    out_dir = bin_dir(versions)
    missing = missing_binaries(versions)
    if not missing:
        return out_dir
    if shutil.which("go") is None:
        raise PermanentError("the sandbox builds Kubernetes from source and needs Go >= 1.25 on PATH (https://go.dev/dl/)")
    root = out_dir.parent
    work = root / "src"
    staging_bin = root / "bin.partial"
    work.mkdir(parents=True, exist_ok=True)
    staging_bin.mkdir(parents=True, exist_ok=True)
    log_path = root / "build.log"
    progress(f"building {', '.join(missing)} from the Go module proxy into {out_dir} (first run only; log: {log_path})")
    go = _GoCommand(progress, log_path)
    env = _go_env()
    started = time.monotonic()
    if "etcd" in missing:
        _build_etcd(versions, work, staging_bin, go, env)
    kube_missing = [name for name in KUBE_BINARIES if name in missing]
    if kube_missing:
        _build_kubernetes(versions, work, staging_bin, go, env, kube_missing)
    if "kwok" in missing:
        _build_kwok(versions, work, staging_bin, go, env)
    out_dir.mkdir(parents=True, exist_ok=True)
    # Binaries are moved in only once built, so an interrupted build never looks complete.
    for name in missing:
        os.replace(staging_bin / name, out_dir / name)
    progress(f"sandbox binaries ready in {time.monotonic() - started:.0f}s")
    return out_dir
