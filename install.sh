#!/usr/bin/env bash
# Install slurm-k8s-bridge on a Slurm controller host that can reach the Kubernetes API.
#
#   sudo ./install.sh [--dry-run] [--kubeconfig FILE] [--nas-root DIR] [--config FILE] [--apply-slurm-conf]
#                     [--no-systemd] [--prefix DIR]
#   sudo ./install.sh --uninstall [--dry-run]
#
# Idempotent: running it again changes nothing that is already right. It never overwrites
# an admin's config, never edits slurm.conf unless asked (--apply-slurm-conf, with a backup),
# and records every path it creates so --uninstall removes exactly those.
set -euo pipefail

PREFIX=/opt/slurm-k8s-bridge
ETC=/etc/slurm-k8s-bridge
STATE=/var/lib/slurm-k8s-bridge
MANIFEST=$STATE/installed-files
UNIT_DIR=/etc/systemd/system
# The slurm.conf in use: $SLURM_CONF, else the one slurmctld reports, else Debian's default.
slurm_conf_in_use() {
  local reported
  reported=$(timeout 15 scontrol show config 2>/dev/null | awk '$1 == "SLURM_CONF" {print $3; exit}') || true
  printf '%s\n' "${reported:-/etc/slurm/slurm.conf}"
}
SLURM_CONF=${SLURM_CONF:-$(slurm_conf_in_use)}
SRC=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

dry_run=0 uninstall=0 apply_slurm=0 no_systemd=0
kubeconfig=${KUBECONFIG:-/root/.kube/config}
nas_root=""
seed_config=""
python=${PYTHON:-/usr/bin/python3}

usage() { sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//'; }
while [ $# -gt 0 ]; do
  case "$1" in
    --dry-run) dry_run=1 ;;
    --uninstall) uninstall=1 ;;
    --apply-slurm-conf) apply_slurm=1 ;;
    --no-systemd) no_systemd=1 ;;   # for hosts without systemd (the sandbox, containers)
    --kubeconfig) kubeconfig=$2; shift ;;
    --nas-root) nas_root=$2; shift ;;
    --config) seed_config=$2; shift ;;  # start from this config file when none is installed yet
    --prefix) PREFIX=$2; shift ;;
    -h|--help) usage; exit 0 ;;
    *) echo "install.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done

say() { printf '%s\n' "$*"; }
run() {  # print, and run unless --dry-run
  say "+ $*"
  [ "$dry_run" = 1 ] || "$@"
}
record() { [ "$dry_run" = 1 ] || { mkdir -p "$STATE"; grep -qxF "$1" "$MANIFEST" 2>/dev/null || echo "$1" >> "$MANIFEST"; }; }
record_tree() { record "tree:$1"; }  # a folder install.sh fills wholesale (venv, copied manifests)

[ "$(id -u)" = 0 ] || { echo "install.sh: run as root (it installs under $PREFIX and /etc)" >&2; exit 1; }

if [ "$uninstall" = 1 ]; then
  if [ ! -f "$MANIFEST" ]; then say "nothing to uninstall ($MANIFEST not found)"; exit 0; fi
  if [ "$no_systemd" = 0 ] && command -v systemctl >/dev/null && systemctl list-unit-files skbridge-watcher.service >/dev/null 2>&1; then
    run systemctl disable --now skbridge-watcher.service || true
    run systemctl disable --now skbridge-serve.service 2>/dev/null || true
  fi
  # Newest first, so files go before the folders that hold them.
  tac "$MANIFEST" | while read -r path; do
    if [ "${path#tree:}" != "$path" ]; then
      run rm -rf --one-file-system "${path#tree:}"
    elif [ -d "$path" ] && [ ! -L "$path" ]; then
      run rmdir --ignore-fail-on-non-empty "$path"
    elif [ -e "$path" ] || [ -L "$path" ]; then
      run rm -f "$path"
    fi
  done
  [ "$dry_run" = 1 ] || rm -f "$MANIFEST"
  if [ -f "$ETC/config.yaml" ]; then
    if [ -f "$STATE/config.yaml.sha256" ] && sha256sum --status -c "$STATE/config.yaml.sha256" 2>/dev/null; then
      run rm -f "$ETC/config.yaml"   # exactly as install.sh wrote it: nobody edited it
    else
      say "kept your edited config $ETC/config.yaml (remove it by hand if you want)"
    fi
  fi
  [ "$dry_run" = 1 ] || rm -f "$STATE/config.yaml.sha256"
  [ "$dry_run" = 1 ] || rmdir --ignore-fail-on-non-empty "$ETC" 2>/dev/null || true
  [ "$dry_run" = 1 ] || rmdir --ignore-fail-on-non-empty "$STATE" 2>/dev/null || true
  if [ "$dry_run" = 1 ]; then
    say "Dry run: nothing was removed."
  else
    say "uninstalled; Slurm's own config was not changed: remove the bridge lines from $SLURM_CONF yourself."
  fi
  exit 0
fi

# --- 1. the package, in its own virtualenv --------------------------------------------------
[ -x "$python" ] || { echo "install.sh: $python not found (apt-get install python3 python3-venv)" >&2; exit 1; }
if [ ! -x "$PREFIX/venv/bin/python" ]; then
  run mkdir -p "$PREFIX"
  record "$PREFIX"
  run "$python" -m venv "$PREFIX/venv"
fi
record "$PREFIX"
record_tree "$PREFIX/venv"
run "$PREFIX/venv/bin/pip" install --quiet --upgrade pip
run "$PREFIX/venv/bin/pip" install --quiet "$SRC"
# Fixed absolute paths: Slurm gives hooks no PATH.
run mkdir -p "$PREFIX/bin"
record "$PREFIX/bin"
for tool in skbridge skbridge-prolog-slurmctld skbridge-epilog-slurmctld; do
  run ln -sfn "$PREFIX/venv/bin/$tool" "$PREFIX/bin/$tool"
  record "$PREFIX/bin/$tool"
done
run mkdir -p "$PREFIX/share/deploy"
record "$PREFIX/share"
record_tree "$PREFIX/share/deploy"
run cp -r "$SRC/deploy/." "$PREFIX/share/deploy/"
run cp "$SRC/pod-template.yaml" "$SRC/slurm.conf.example" "$SRC/gres.conf.example" "$SRC/README.md" "$PREFIX/share/"
for f in pod-template.yaml slurm.conf.example gres.conf.example README.md; do record "$PREFIX/share/$f"; done
[ -e /usr/local/bin/skbridge ] || { run ln -s "$PREFIX/bin/skbridge" /usr/local/bin/skbridge; record /usr/local/bin/skbridge; }

# --- 2. configuration (never overwritten) ---------------------------------------------------
run mkdir -p "$ETC" /var/log/slurm-k8s-bridge "$STATE"
record /var/log/slurm-k8s-bridge
if [ ! -f "$ETC/config.yaml" ]; then
  if [ "$dry_run" = 1 ]; then
    say "+ write $ETC/config.yaml (commented defaults)"
  else
    if [ -n "$seed_config" ]; then
      cp "$seed_config" "$ETC/config.yaml"
    else
      "$PREFIX/bin/skbridge" config example ${nas_root:+--nas-root "$nas_root"} > "$ETC/config.yaml"
    fi
    chmod 0644 "$ETC/config.yaml"   # users' `skbridge validate` and `attach` read it; it holds no secret
    sha256sum "$ETC/config.yaml" > "$STATE/config.yaml.sha256"
    say "wrote $ETC/config.yaml: review it (NAS root, registries, limits)"
  fi
else
  say "kept existing $ETC/config.yaml"
fi

# --- 3. NAS folders with the right modes ------------------------------------------------------
run "$PREFIX/bin/skbridge" install nas-layout

# --- 4. Kubernetes: namespace, the bridge's ServiceAccount + RBAC, the hooks' kubeconfig -----
if [ -f "$kubeconfig" ]; then
  run "$PREFIX/bin/skbridge" install kubernetes --admin-kubeconfig "$kubeconfig" --manifests "$PREFIX/share/deploy/kubernetes" \
      --write-kubeconfig "$ETC/kubeconfig"
  record "$ETC/kubeconfig"
else
  say "no admin kubeconfig at $kubeconfig: skipped the Kubernetes side (rerun with --kubeconfig FILE)"
fi

# --- 5. Slurm: job_submit.lua next to slurm.conf, and the lines slurm.conf needs ----------
slurm_dir=$(dirname "$SLURM_CONF")
lua_target="$slurm_dir/job_submit.lua"
if [ -f "$lua_target" ] && ! grep -q "slurm-k8s-bridge" "$lua_target"; then
  say "WARNING: $lua_target exists and is not ours; not replaced. Merge deploy/slurm/job_submit.lua into it."
else
  # The bridge's own renderer: the launcher line the watcher writes (slurm.skbridge_path and
  # slurm.attach_config_path from the config), the site maxima and the one-road policy.
  run "$PREFIX/bin/skbridge" install job-submit-lua --target "$lua_target" \
      --template "$PREFIX/share/deploy/slurm/job_submit.lua"
  record "$lua_target"
fi
if [ "$apply_slurm" = 1 ]; then
  run "$PREFIX/bin/skbridge" install slurm-conf --slurm-conf "$SLURM_CONF" --apply
elif [ -x "$PREFIX/bin/skbridge" ]; then
  "$PREFIX/bin/skbridge" install slurm-conf --slurm-conf "$SLURM_CONF" || true   # a check: reads, never writes
else
  say "+ $PREFIX/bin/skbridge install slurm-conf --slurm-conf $SLURM_CONF   (checks the lines slurm.conf needs)"
fi

# --- 6. the watcher service ------------------------------------------------------------------
if [ "$no_systemd" = 0 ] && command -v systemctl >/dev/null && [ -d /run/systemd/system ]; then
  run install -m 0644 "$SRC/systemd/skbridge-watcher.service" "$UNIT_DIR/skbridge-watcher.service"
  record "$UNIT_DIR/skbridge-watcher.service"
  run systemctl daemon-reload
  run systemctl enable skbridge-watcher.service
  # restart, not just start: the watcher also runs the Slurm hooks, so an upgrade must reach it.
  run systemctl restart skbridge-watcher.service
  # The REST API is optional: installed, not enabled (`systemctl enable --now skbridge-serve`).
  run install -m 0644 "$SRC/systemd/skbridge-serve.service" "$UNIT_DIR/skbridge-serve.service"
  record "$UNIT_DIR/skbridge-serve.service"
  run systemctl daemon-reload
else
  # No systemd: a watcher already running (an upgrade) is told to reload, which re-executes it
  # in place on the code just installed; the command waits until its hooks answer as that version.
  run "$PREFIX/bin/skbridge" admin reload --if-running
  say "systemd not running here: if no watcher runs, start it yourself with: $PREFIX/bin/skbridge watch"
fi

say ""
if [ "$dry_run" = 1 ]; then
  say "Dry run: nothing was changed. Run again without --dry-run to install."
else
  say "Installed. Next: review $ETC/config.yaml, then run: skbridge test-suite"
fi
