"""The launcher line's marker, on its own so the hook programs' stdlib fast path can read it
without importing anything heavy (bridge.jobfile.launcher builds and checks the whole line)."""

LAUNCHER_MARKER = "# skbridge-launcher: this job runs in a Kubernetes Pod"
