#!/usr/bin/env bash
# Installs hivemesh on this machine as a systemd service: the code in /opt/hivemesh (a copy
# of this checkout with its npm dependencies, which include hivemesh's own Node 22), data
# in /var/lib/hivemesh, a `hivemesh` user, and /usr/local/bin/hivemesh for the CLI.
# Run it as root from a checkout. It says what it does; --dry-run only says it.
set -euo pipefail

usage() {
  cat <<'EOF'
usage: sudo scripts/install-node.sh [options]

  --secret-file F     join an existing cluster with its cluster.key (copied to /var/lib/hivemesh)
  --name N            node name (default: host name)
  --ollama-url U      this host's Ollama (default http://127.0.0.1:11434)
  --bootstrap ADDR    a static peer multiaddr (repeatable), for networks without multicast
  --no-mdns           no multicast discovery
  --prefix DIR        where the code goes (default /opt/hivemesh)
  --data-dir DIR      where the data goes (default /var/lib/hivemesh)
  --dry-run           print the steps without doing them
  -h, --help          this text

The first node of a cluster needs no --secret-file: it creates /var/lib/hivemesh/cluster.key;
copy that file to the other machines and pass it with --secret-file there.
EOF
}

prefix=/opt/hivemesh
data_dir=/var/lib/hivemesh
secret_file=""
dry_run=0
extra_args=()

while [ $# -gt 0 ]; do
  case "$1" in
    --secret-file) secret_file="${2:?--secret-file needs a path}"; shift 2 ;;
    --name) extra_args+=(--name "${2:?--name needs a value}"); shift 2 ;;
    --ollama-url) extra_args+=(--ollama-url "${2:?--ollama-url needs a URL}"); shift 2 ;;
    --bootstrap) extra_args+=(--bootstrap "${2:?--bootstrap needs a multiaddr}"); shift 2 ;;
    --no-mdns) extra_args+=(--no-mdns); shift ;;
    --prefix) prefix="${2:?--prefix needs a directory}"; shift 2 ;;
    --data-dir) data_dir="${2:?--data-dir needs a directory}"; shift 2 ;;
    --dry-run) dry_run=1; shift ;;
    -h|--help) usage; exit 0 ;;
    *) echo "install-node.sh: unknown option $1" >&2; usage >&2; exit 2 ;;
  esac
done

run() {
  echo "+ $*"
  if [ "$dry_run" -eq 0 ]; then "$@"; fi
}

source_dir="$(cd "$(dirname "$0")/.." && pwd)"
if [ ! -f "$source_dir/package.json" ] || ! grep -q '"name": "hivemesh"' "$source_dir/package.json"; then
  echo "install-node.sh: run this from a hivemesh checkout ($source_dir is not one)" >&2
  exit 1
fi
if [ "$dry_run" -eq 0 ] && [ "$(id -u)" -ne 0 ]; then
  echo "install-node.sh: run as root (sudo), or with --dry-run to see the steps" >&2
  exit 1
fi
for tool in node npm systemctl; do
  if ! command -v "$tool" >/dev/null 2>&1; then
    echo "install-node.sh: '$tool' is missing; install Node.js (20 or newer, with npm) and use a systemd host" >&2
    [ "$dry_run" -eq 1 ] || exit 1
  fi
done
if [ -n "$secret_file" ] && [ ! -r "$secret_file" ]; then
  echo "install-node.sh: cannot read the cluster key $secret_file" >&2
  exit 1
fi

echo "Installing hivemesh from $source_dir into $prefix (data in $data_dir)"
if ! id hivemesh >/dev/null 2>&1; then
  run useradd --system --home-dir "$data_dir" --shell /usr/sbin/nologin hivemesh
fi
run mkdir -p "$prefix" "$data_dir"
run tar -C "$source_dir" --exclude=./node_modules --exclude=./.git --exclude=./.hivemesh-demo -cf "$prefix/.hivemesh-src.tar" .
run tar -C "$prefix" -xf "$prefix/.hivemesh-src.tar"
run rm -f "$prefix/.hivemesh-src.tar"
run sh -c "cd '$prefix' && npm ci --omit=dev --no-audit --no-fund"
if [ -n "$secret_file" ]; then
  run install -m 0600 -o hivemesh -g hivemesh "$secret_file" "$data_dir/cluster.key"
fi
run chown -R hivemesh:hivemesh "$data_dir"
run chmod 0700 "$data_dir"
run ln -sf "$prefix/bin/hivemesh" /usr/local/bin/hivemesh

# systemd's own quoting for ExecStart (not the shell's): double quotes, with backslash and
# quote escaped, % doubled (specifiers) and $ doubled (variables).
systemd_quote() {
  local value=$1
  value=${value//\\/\\\\}
  value=${value//\"/\\\"}
  value=${value//%/%%}
  value=${value//\$/\$\$}
  printf '"%s"' "$value"
}
quoted_args=""
for argument in "${extra_args[@]+"${extra_args[@]}"}"; do quoted_args+=" $(systemd_quote "$argument")"; done
unit="[Unit]
Description=hivemesh node (LLM agents across the LAN)
After=network-online.target ollama.service
Wants=network-online.target

[Service]
User=hivemesh
Environment=HIVEMESH_DATA_DIR=$data_dir
ExecStart=$prefix/bin/hivemesh start$quoted_args
Restart=on-failure
RestartSec=2
TimeoutStopSec=20
KillSignal=SIGTERM
NoNewPrivileges=true
ProtectSystem=strict
ReadWritePaths=$data_dir

[Install]
WantedBy=multi-user.target"
echo "+ write /etc/systemd/system/hivemesh.service:"
echo "$unit" | sed 's/^/    /'
if [ "$dry_run" -eq 0 ]; then echo "$unit" > /etc/systemd/system/hivemesh.service; fi
run systemctl daemon-reload
run systemctl enable --now hivemesh

if [ "$dry_run" -eq 1 ]; then
  echo
  echo "dry run: nothing was changed; the steps above are what an install would do."
  exit 0
fi

cat <<EOF

hivemesh is installed and running (systemctl status hivemesh; journalctl -u hivemesh -f).
  dashboard:    http://$(hostname):7420/
  admin token:  $data_dir/admin.token  (root or the hivemesh user can read it)
  cluster key:  $data_dir/cluster.key  (copy it to the next machine: install-node.sh --secret-file)
  CLI:          HIVEMESH_DATA_DIR=$data_dir hivemesh status
EOF
