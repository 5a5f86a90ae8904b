#!/bin/sh
# gpumesh installer: installs the agent (default) or the coordinator
# (--coordinator) from a local bundle, offline, as a systemd service.
#
#   GPUMESH_INSTALL_TARBALL=gpumesh-0.1.0-linux-x64.tar.gz \
#   GPUMESH_COORDINATOR=/ip4/10.0.0.1/tcp/7471/p2p/12D3KooW... \
#   GPUMESH_CLUSTER_KEY_FILE=./cluster.key GPUMESH_JOIN_TOKEN=gmj_... \
#   sh install.sh
#
# Options: --coordinator, --dry-run (print what would change), --help.
# Knobs (k3s style):
#   GPUMESH_INSTALL_TARBALL         bundle to install (required); SHA256SUMS must sit beside it
#   GPUMESH_INSTALL_SHA256SUMS      checksum file (default: SHA256SUMS beside the tarball)
#   GPUMESH_INSTALL_SKIP_ENABLE     true: do not enable the service
#   GPUMESH_INSTALL_SKIP_START      true: do not start or restart it
#   GPUMESH_INSTALL_FORCE_RESTART   true: restart even when nothing changed
#   GPUMESH_INSTALL_BIN_DIR         where the commands go (default /usr/local/bin)
#   GPUMESH_INSTALL_SYSTEMD_DIR     where the unit goes (default /etc/systemd/system)
#   GPUMESH_INSTALL_ROOT            install under this root (tests, image builds)
# Every GPUMESH_* setting of the daemon (and proxy variables) given to the
# installer is written to /etc/gpumesh/<role>.env (0600).
#
# Everything runs from main() at the end, so a truncated download runs nothing.

set -eu

info () { printf '[gpumesh] %s\n' "$*" >&2; }
warn () { printf '[gpumesh] warning: %s\n' "$*" >&2; }
fatal () { printf '[gpumesh] error: %s\n' "$*" >&2; exit 1; }

# Runs a command, or prints it under --dry-run.
run () {
  if [ "$DRY_RUN" = true ]; then
    printf '[gpumesh] would run:' >&2
    printf ' %s' "$@" >&2
    printf '\n' >&2
  else
    "$@"
  fi
}

parse_args () {
  ROLE=agent
  DRY_RUN=false
  while [ $# -gt 0 ]; do
    case "$1" in
      --coordinator) ROLE=coordinator ;;
      --agent) ROLE=agent ;;
      --dry-run) DRY_RUN=true ;;
      -h|--help) sed -n '2,25p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
      *) fatal "unknown option $1 (see --help)" ;;
    esac
    shift
  done
}

setup_paths () {
  ROOT=${GPUMESH_INSTALL_ROOT:-}
  BIN_DIR=${GPUMESH_INSTALL_BIN_DIR:-/usr/local/bin}
  SYSTEMD_DIR=${GPUMESH_INSTALL_SYSTEMD_DIR:-/etc/systemd/system}
  LIB_DIR=/usr/local/lib/gpumesh
  ETC_DIR=/etc/gpumesh
  UNIT=gpumesh-$ROLE.service
  ENV_FILE=$ETC_DIR/$ROLE.env
  CHANGED=false
  UNIT_CHANGED=false
}

verify_system () {
  case "$(uname -m)" in
    x86_64|amd64) ARCH=x64 ;;
    *) fatal "unsupported architecture $(uname -m): gpumesh bundles are built for x86_64 (linux-x64)" ;;
  esac
  if [ -z "$ROOT" ] && [ ! -d /run/systemd/system ]; then
    fatal "systemd is not running here (no /run/systemd/system): gpumesh installs as a systemd service"
  fi
  command -v systemctl >/dev/null 2>&1 || fatal "systemctl not found: gpumesh installs as a systemd service"
  command -v sha256sum >/dev/null 2>&1 || fatal "sha256sum not found (coreutils)"
  command -v tar >/dev/null 2>&1 || fatal "tar not found"
}

preflight () {
  [ "$ROLE" = agent ] || return 0
  if ! command -v nvidia-smi >/dev/null 2>&1; then
    warn "nvidia-smi not found: this host will join as a CPU host (pool cpu) until an NVIDIA driver is installed"
  elif nvidia-smi -L 2>/dev/null | grep -q 'A100'; then
    warn "A100 GPUs found: the A100 is end-of-life; supported for now, plan its replacement"
  fi
  # Local storage for model weights and checkpoints: the largest local filesystem.
  kb=$(df -Pk -x tmpfs -x devtmpfs -x overlay -x squashfs 2>/dev/null | awk 'NR > 1 { if ($2 > max) max = $2 } END { print max + 0 }')
  if [ "${kb:-0}" -lt 292968750 ]; then
    warn "the largest local filesystem is $((kb / 1000000)) GB, under the 300 GB that model weights and checkpoints need"
  fi
}

locate_bundle () {
  TARBALL=${GPUMESH_INSTALL_TARBALL:-}
  [ -n "$TARBALL" ] || fatal "set GPUMESH_INSTALL_TARBALL to a gpumesh-<version>-linux-x64.tar.gz (this installer fetches nothing)"
  [ -f "$TARBALL" ] || fatal "$TARBALL not found"
  SUMS=${GPUMESH_INSTALL_SHA256SUMS:-$(dirname "$TARBALL")/SHA256SUMS}
  [ -f "$SUMS" ] || fatal "$SUMS not found: the bundle's checksum is required"
  name=$(basename "$TARBALL")
  expected=$(awk -v n="$name" '$2 == n || $2 == "*" n { print $1 }' "$SUMS")
  [ -n "$expected" ] || fatal "$SUMS has no line for $name"
  actual=$(sha256sum "$TARBALL" | awk '{ print $1 }')
  [ "$expected" = "$actual" ] || fatal "checksum mismatch for $name: expected $expected, got $actual (corrupt or tampered bundle)"
  VERSION=$(printf '%s' "$name" | sed -n 's/^gpumesh-\(.*\)-linux-x64\.tar\.gz$/\1/p')
  [ -n "$VERSION" ] || fatal "$name is not named gpumesh-<version>-linux-x64.tar.gz"
  info "bundle $name verified (sha256 $actual)"
}

# Writes $2 (content from stdin) to $1 with mode $3 only when it differs; marks the change.
put_file () {
  target=$ROOT$1
  tmp=$(mktemp)
  cat > "$tmp"
  if [ -f "$target" ] && cmp -s "$tmp" "$target" && [ "$(stat -c %a "$target")" = "$2" ]; then
    rm -f "$tmp"
    return 1
  fi
  if [ "$DRY_RUN" = true ]; then
    info "would write $1 (mode $2)"
    rm -f "$tmp"
  else
    mkdir -p "$(dirname "$target")"
    # Written beside the target and renamed: a reader never sees half a file.
    cp "$tmp" "$target.new.$$"
    rm -f "$tmp"
    chmod "$2" "$target.new.$$"
    mv -f "$target.new.$$" "$target"
    info "wrote $1"
  fi
  CHANGED=true
  return 0
}

install_bundle () {
  dest=$LIB_DIR/$VERSION
  if [ -x "$ROOT$dest/node/bin/node" ] && [ -f "$ROOT$dest/.sha256" ] && [ "$(cat "$ROOT$dest/.sha256")" = "$actual" ]; then
    info "gpumesh $VERSION already installed in $dest"
  else
    info "installing gpumesh $VERSION into $dest"
    run mkdir -p "$ROOT$dest"
    run tar -xzf "$TARBALL" -C "$ROOT$dest" --strip-components=1 --no-same-owner
    if [ "$DRY_RUN" = false ]; then printf '%s\n' "$actual" > "$ROOT$dest/.sha256"; fi
    CHANGED=true
  fi
  if [ "$(readlink "$ROOT$LIB_DIR/current" 2>/dev/null || true)" != "$VERSION" ]; then
    run ln -sfn "$VERSION" "$ROOT$LIB_DIR/current"
    CHANGED=true
  fi
  for cmd in gpumesh-agent:agent/main.js gpumesh-coordinator:coordinator/main.js gpumesh:cli/main.js; do
    # The agent daemon runs with V8's low-memory heap sizing (agent/node-flags.ts says why).
    case $cmd in gpumesh-agent:*) flags='--optimize-for-size --max-semi-space-size=2 --no-maglev ' ;; *) flags='' ;; esac
    put_file "$BIN_DIR/${cmd%%:*}" 755 <<EOF || true
#!/bin/sh
# gpumesh $VERSION (installed by install.sh)
exec "$LIB_DIR/current/node/bin/node" $flags"$LIB_DIR/current/app/dist/${cmd#*:}" "\$@"
EOF
  done
}

create_user () {
  [ "$ROLE" = coordinator ] || return 0
  # The agent runs as root: it needs the GPUs, docker and its workloads' users.
  if [ -n "$ROOT" ]; then
    grep -q '^gpumesh:' "$ROOT/etc/passwd" 2>/dev/null && return 0
    run mkdir -p "$ROOT/etc"
    if [ "$DRY_RUN" = false ]; then
      printf 'gpumesh:x:999:999:gpumesh coordinator:/var/lib/gpumesh:/usr/sbin/nologin\n' >> "$ROOT/etc/passwd"
      printf 'gpumesh:x:999:\n' >> "$ROOT/etc/group"
    fi
    CHANGED=true
    return 0
  fi
  id -u gpumesh >/dev/null 2>&1 && return 0
  run useradd --system --user-group --home-dir /var/lib/gpumesh --shell /usr/sbin/nologin gpumesh
  CHANGED=true
}

write_config () {
  run mkdir -p "$ROOT$ETC_DIR"
  if [ -n "${GPUMESH_CLUSTER_KEY_FILE:-}" ]; then
    [ -f "$GPUMESH_CLUSTER_KEY_FILE" ] || fatal "GPUMESH_CLUSTER_KEY_FILE=$GPUMESH_CLUSTER_KEY_FILE not found"
    head -n 1 "$GPUMESH_CLUSTER_KEY_FILE" | grep -q '^/key/swarm/psk/1.0.0/' || fatal "$GPUMESH_CLUSTER_KEY_FILE is not a cluster key (swarm.key format)"
    if [ "$GPUMESH_CLUSTER_KEY_FILE" != "$ETC_DIR/cluster.key" ]; then
      put_file "$ETC_DIR/cluster.key" 600 < "$GPUMESH_CLUSTER_KEY_FILE" || true
    fi
    GPUMESH_CLUSTER_KEY_FILE=$ETC_DIR/cluster.key
  fi
  if [ "$ROLE" = agent ]; then
    [ -n "${GPUMESH_COORDINATOR:-}" ] || warn "GPUMESH_COORDINATOR is not set: the agent will not start until $ENV_FILE names the coordinator"
    [ -n "${GPUMESH_CLUSTER_KEY_FILE:-}" ] || warn "GPUMESH_CLUSTER_KEY_FILE is not set: the agent will not start until $ENV_FILE names the cluster key"
  fi
  # Every GPUMESH_* daemon setting given to the installer, and proxy settings; installer knobs excluded.
  # Through a file: put_file must run in this shell (a pipeline's last step is a subshell in POSIX sh, and CHANGED would be lost).
  settings=$(mktemp)
  env | grep -E '^(GPUMESH_[A-Z0-9_]+|HTTPS?_PROXY|NO_PROXY|https?_proxy|no_proxy)=.' | grep -v '^GPUMESH_INSTALL_' | sort | {
    printf '# gpumesh %s settings, written by install.sh. Secrets live here: keep it 0600.\n' "$ROLE"
    while IFS= read -r line; do
      case "$line" in
        GPUMESH_CLUSTER_KEY_FILE=*) printf 'GPUMESH_CLUSTER_KEY_FILE=%s\n' "$GPUMESH_CLUSTER_KEY_FILE" ;;
        *) printf '%s\n' "$line" ;;
      esac
    done
  } > "$settings"
  put_file "$ENV_FILE" 600 < "$settings" || true
  rm -f "$settings"
}

install_unit () {
  template=$ROOT$LIB_DIR/current/systemd/$UNIT
  [ "$DRY_RUN" = true ] && [ ! -f "$template" ] && template=$(mktemp) && tar -xzOf "$TARBALL" "gpumesh-$VERSION-linux-$ARCH/systemd/$UNIT" > "$template"
  [ -f "$template" ] || fatal "the bundle has no systemd/$UNIT"
  unit=$(mktemp)
  sed "s|/usr/local/bin/|$BIN_DIR/|" "$template" > "$unit"
  if put_file "$SYSTEMD_DIR/$UNIT" 644 < "$unit"; then
    UNIT_CHANGED=true
  fi
  rm -f "$unit"
}

write_uninstaller () {
  put_file "$BIN_DIR/gpumesh-uninstall.sh" 755 <<EOF || true
#!/bin/sh
# Removes what install.sh installed. State (/var/lib/gpumesh) and settings
# (/etc/gpumesh) are kept unless --purge.
set -eu
ROOT=\${GPUMESH_INSTALL_ROOT:-}
PURGE=false
[ "\${1:-}" = --purge ] && PURGE=true
for role in agent coordinator; do
  unit=gpumesh-\$role.service
  if [ -f "\$ROOT$SYSTEMD_DIR/\$unit" ]; then
    systemctl disable --now "\$unit" >/dev/null 2>&1 || true
    rm -f "\$ROOT$SYSTEMD_DIR/\$unit"
    RELOAD=true
  fi
done
[ "\${RELOAD:-false}" = true ] && { systemctl daemon-reload || true; }
rm -f "\$ROOT$BIN_DIR/gpumesh-agent" "\$ROOT$BIN_DIR/gpumesh-coordinator" "\$ROOT$BIN_DIR/gpumesh"
rm -rf "\$ROOT$LIB_DIR"
if [ "\$PURGE" = true ]; then
  rm -rf "\$ROOT/var/lib/gpumesh" "\$ROOT$ETC_DIR"
  echo "[gpumesh] removed, with its state and settings"
else
  echo "[gpumesh] removed; state (/var/lib/gpumesh) and settings ($ETC_DIR) kept (--purge removes them)"
fi
rm -f "\$ROOT$BIN_DIR/gpumesh-uninstall.sh"
EOF
}

start_service () {
  # daemon-reload only when the unit changed: on GPU hosts it can detach GPUs
  # from running containers (NVIDIA/nvidia-docker#1730).
  if [ "$UNIT_CHANGED" = true ]; then
    info "unit changed: systemctl daemon-reload"
    run systemctl daemon-reload
  fi
  if [ "${GPUMESH_INSTALL_SKIP_ENABLE:-false}" != true ] && ! systemctl is-enabled --quiet "$UNIT" 2>/dev/null; then
    run systemctl enable "$UNIT"
  fi
  [ "${GPUMESH_INSTALL_SKIP_START:-false}" = true ] && { info "not starting $UNIT (GPUMESH_INSTALL_SKIP_START)"; return 0; }
  if [ "$CHANGED" = true ] || [ "${GPUMESH_INSTALL_FORCE_RESTART:-false}" = true ]; then
    info "restarting $UNIT"
    run systemctl restart "$UNIT"
  else
    info "no change detected: $UNIT left as it is"
    run systemctl start "$UNIT"
  fi
}

main () {
  parse_args "$@"
  setup_paths
  verify_system
  preflight
  locate_bundle
  install_bundle
  create_user
  write_config
  install_unit
  write_uninstaller
  start_service
  info "done: gpumesh $VERSION ($ROLE); logs: journalctl -u $UNIT"
}

main "$@"
