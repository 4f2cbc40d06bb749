"""The images the sandbox's real node runs, built locally: no registry is reachable.

- pause: a static Go binary that waits for a signal (the Pod sandbox's init process).
- job: Debian bookworm minbase from `debootstrap`, with bash, coreutils and python3.

Each is written as an OCI image archive and cached beside the Kubernetes binaries, keyed by
`RECIPE`; `kube_node` imports them into containerd with `ctr images import`. Bump `RECIPE`
when what goes into an image changes.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import shutil
import subprocess
import tarfile
import time
from pathlib import Path
from typing import Any

from bridge.errors import PermanentError
from bridge.sandbox import k8s_build
from bridge.sandbox.layout import ProgressFn

RECIPE = 1
JOB_IMAGE = "registry.lab:5000/skbridge-job:bookworm"
"""The sandbox's job image; `registry.lab:5000` is on the sandbox policy's allow-list."""
PAUSE_IMAGE = "registry.lab:5000/skbridge-pause:1"
DEBIAN_SUITE = "bookworm"
DEBIAN_MIRROR_ENV = "SKBRIDGE_DEBIAN_MIRROR"
DEFAULT_DEBIAN_MIRROR = "http://deb.debian.org/debian"
JOB_PACKAGES = ("python3",)  # minbase already has bash and coreutils

_PAUSE_GO = """package main

import (
	"os"
	"os/signal"
	"syscall"
)

// The Pod sandbox's init: wait for SIGINT/SIGTERM, reap whatever gets re-parented to us.
func main() {
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGCHLD)
	for sig := range sigs {
		if sig != syscall.SIGCHLD {
			return
		}
		for {
			pid, err := syscall.Wait4(-1, nil, syscall.WNOHANG, nil)
			if pid <= 0 || err != nil {
				break
			}
		}
	}
}
"""


def images_dir() -> Path:
    return k8s_build.cache_root() / f"images-r{RECIPE}"


def archive_path(image: str) -> Path:
    return images_dir() / f"{image.rsplit('/', 1)[-1].replace(':', '_')}.oci.tar"


def missing_images() -> list[str]:
    return [image for image in (PAUSE_IMAGE, JOB_IMAGE) if not archive_path(image).is_file()]


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def write_oci_archive(out: Path, image: str, layer_tar: Path, config: dict[str, Any]) -> None:
    """One uncompressed layer, one manifest, as an OCI image layout in a tar archive."""
    layer_digest = _sha256_file(layer_tar)
    image_config = {
        "architecture": "amd64", "os": "linux", "config": config,
        "rootfs": {"type": "layers", "diff_ids": [f"sha256:{layer_digest}"]},
        "history": [{"created_by": f"slurm-k8s-bridge sandbox images recipe {RECIPE}"}],
    }
    config_bytes = json.dumps(image_config, sort_keys=True).encode()
    manifest = {
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": f"sha256:{hashlib.sha256(config_bytes).hexdigest()}", "size": len(config_bytes)},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar",
                    "digest": f"sha256:{layer_digest}", "size": layer_tar.stat().st_size}],
    }
    manifest_bytes = json.dumps(manifest, sort_keys=True).encode()
    manifest_digest = hashlib.sha256(manifest_bytes).hexdigest()
    index = {
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": f"sha256:{manifest_digest}",
            "size": len(manifest_bytes), "platform": {"architecture": "amd64", "os": "linux"},
            "annotations": {"io.containerd.image.name": image,
                            "org.opencontainers.image.ref.name": image.rsplit(":", 1)[-1]},
        }],
    }
    partial = out.with_suffix(".partial")
    with tarfile.open(partial, "w") as tar:
        def add_bytes(name: str, data: bytes) -> None:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mtime = int(time.time())
            tar.addfile(info, io.BytesIO(data))

        add_bytes("oci-layout", b'{"imageLayoutVersion":"1.0.0"}')
        add_bytes("index.json", json.dumps(index).encode())
        add_bytes(f"blobs/sha256/{hashlib.sha256(config_bytes).hexdigest()}", config_bytes)
        add_bytes(f"blobs/sha256/{manifest_digest}", manifest_bytes)
        tar.add(layer_tar, arcname=f"blobs/sha256/{layer_digest}", recursive=False)
    os.replace(partial, out)


def _run(argv: list[str], *, what: str, log_path: Path, cwd: Path | None = None,
         env: dict[str, str] | None = None, progress: ProgressFn | None = None) -> None:
    started = time.monotonic()
    with log_path.open("a", encoding="utf-8") as out:
        out.write(f"\n$ {' '.join(argv)}\n")
        out.flush()
        proc = subprocess.Popen(argv, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT)
        while proc.poll() is None:
            time.sleep(1.0)
            elapsed = int(time.monotonic() - started)
            if progress is not None and elapsed and elapsed % 15 == 0:
                progress(f"{what}: {elapsed // 60}m{elapsed % 60:02d}s elapsed")
    if proc.returncode != 0:
        tail = "".join(log_path.read_text(encoding="utf-8", errors="replace").splitlines(True)[-30:])
        raise PermanentError(f"{what} failed (exit {proc.returncode}); full log in {log_path}\n{tail}")


def _build_pause(work: Path, log_path: Path) -> None:
    src = work / "pause"
    shutil.rmtree(src, ignore_errors=True)
    (src / "rootfs").mkdir(parents=True)
    (src / "go.mod").write_text("module slurm-k8s-bridge.local/sandbox-pause\n\ngo 1.21\n", encoding="utf-8")
    (src / "main.go").write_text(_PAUSE_GO, encoding="utf-8")
    env = dict(os.environ, CGO_ENABLED="0", GOTOOLCHAIN="local", GOFLAGS="")
    _run(["go", "build", "-trimpath", "-ldflags", "-s -w", "-o", str(src / "rootfs" / "pause"), "."],
         what="building the pause binary", log_path=log_path, cwd=src, env=env)
    layer = src / "layer.tar"
    _run(["tar", "--numeric-owner", "--owner=0", "--group=0", "-C", str(src / "rootfs"), "-cf", str(layer), "pause"],
         what="packing the pause layer", log_path=log_path)
    write_oci_archive(archive_path(PAUSE_IMAGE), PAUSE_IMAGE, layer,
                      {"Entrypoint": ["/pause"], "User": "65535:65535"})
    shutil.rmtree(src, ignore_errors=True)


def _unmount_below(root: Path) -> None:
    """debootstrap mounts /proc and /sys in its target; an interrupted run leaves them."""
    prefix = str(root.resolve()) + "/"
    mounts = [line.split()[4] for line in Path("/proc/self/mountinfo").read_text().splitlines()]
    for point in sorted((m for m in mounts if m.startswith(prefix)), key=len, reverse=True):
        subprocess.run(["umount", "-l", point], capture_output=True, check=False)


def _build_job(work: Path, log_path: Path, progress: ProgressFn) -> None:
    if shutil.which("debootstrap") is None:
        raise PermanentError("building the sandbox's job image needs debootstrap: apt-get install debootstrap")
    src = work / "job"
    rootfs = src / "rootfs"
    if src.exists():
        _unmount_below(src)
        shutil.rmtree(src)
    src.mkdir(parents=True)
    mirror = os.environ.get(DEBIAN_MIRROR_ENV, DEFAULT_DEBIAN_MIRROR)
    progress(f"job image: debootstrap {DEBIAN_SUITE} minbase + {', '.join(JOB_PACKAGES)} from {mirror} (about a minute)")
    try:
        _run(["debootstrap", "--variant=minbase", f"--include={','.join(JOB_PACKAGES)}", DEBIAN_SUITE,
              str(rootfs), mirror], what="debootstrap of the job image", log_path=log_path, progress=progress)
    finally:
        _unmount_below(src)
    for leftover in ("var/cache/apt/archives", "var/lib/apt/lists", "var/log"):
        for path in (rootfs / leftover).glob("*"):
            if path.is_file():
                path.unlink()
    layer = src / "layer.tar"
    _run(["tar", "--numeric-owner", "-C", str(rootfs), "-cf", str(layer), "."],
         what="packing the job image layer", log_path=log_path)
    write_oci_archive(archive_path(JOB_IMAGE), JOB_IMAGE, layer, {
        "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG=C.UTF-8"],
        "Cmd": ["/bin/bash"], "WorkingDir": "/",
    })
    shutil.rmtree(src, ignore_errors=True)


def ensure_images(progress: ProgressFn) -> dict[str, Path]:
    """Build the missing image archives (first run only); return image name -> archive."""
    missing = missing_images()
    if missing:
        directory = images_dir()
        work = directory / "src"
        work.mkdir(parents=True, exist_ok=True)
        log_path = directory / "build.log"
        started = time.monotonic()
        progress(f"building images {', '.join(missing)} into {directory} (first run only; log: {log_path})")
        if PAUSE_IMAGE in missing:
            if shutil.which("go") is None:
                raise PermanentError("the sandbox builds its pause image with Go; put Go on PATH")
            _build_pause(work, log_path)
        if JOB_IMAGE in missing:
            _build_job(work, log_path, progress)
        with contextlib.suppress(OSError):
            work.rmdir()
        progress(f"images ready in {time.monotonic() - started:.0f}s")
    return {image: archive_path(image) for image in (PAUSE_IMAGE, JOB_IMAGE)}
