"""slurm-k8s-bridge: Slurm queues the jobs, Kubernetes runs them as Pods on the allocated nodes."""


def installed_version() -> str:
    """The installed package's version: what the running code is (an upgrade shows after a reload)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("slurm-k8s-bridge")
    except PackageNotFoundError:
        return "unknown"
