#!/usr/bin/env bash
# Installs or upgrades hivemesh on this machine as a systemd service: the code in /opt/hivemesh
# (a copy of this checkout with its npm dependencies, which include hivemesh's own Node 22),
# data in /var/lib/hivemesh, a `hivemesh` user and group, and /usr/local/bin/hivemesh for the CLI.
# Run it as root from a checkout. It says what it does; --dry-run only says it.
#
# A re-run upgrades: the new code is built in a fresh directory beside the prefix and then takes
# the prefix's place whole, so files a newer version dropped do not linger; the data dir is never
# inside what is replaced; the service is restarted if it was running, so the new code runs.
set -euo pipefail

usage() {
  cat <<'EOF'
usage: sudo scripts/install-node.sh [options]

  --secret-file F         join an existing cluster with its cluster.key (copied to the data dir)
  --replace-cluster-key   with --secret-file: replace a different cluster.key already in the data dir,
                          keeping the old one as cluster.key.previous (without this flag: refused)
  --name N                node name (default: host name)
  --ollama-url U          this host's Ollama (default http://127.0.0.1:11434)
  --bootstrap ADDR        a static peer multiaddr (repeatable), for networks without multicast
  --no-mdns               no multicast discovery
  --prefix DIR            where the code goes (default /opt/hivemesh; replaced whole on a re-run)
  --data-dir DIR          where the data goes (default /var/lib/hivemesh; must not be inside the prefix)
  --dry-run               print the steps without doing them
  -h, --help              this text

The first node of a cluster needs no --secret-file: it creates /var/lib/hivemesh/cluster.key;
copy that file to the other machines and pass it with --secret-file there.

Running it again upgrades this node to the checkout it is run from: the code is replaced, the
data dir is kept, and the service is restarted if it was running (started if not).
EOF
}

prefix=/opt/hivemesh
data_dir=/var/lib/hivemesh
secret_file=""
replace_cluster_key=0
dry_run=0
extra_args=()

# The unit file and the CLI link go under this root. Only the installer's tests set it (to a
# scratch directory, with stand-ins for systemctl, useradd and the like on PATH).
system_root="${HIVEMESH_INSTALL_ROOT:-}"
unit_path="$system_root/etc/systemd/system/hivemesh.service"
cli_link="$system_root/usr/local/bin/hivemesh"

fail() {
  echo "install-node.sh: $*" >&2
  exit 1
}

fail_usage() {
  echo "install-node.sh: $*" >&2
  usage >&2
  exit 2
}

# Called as `require_value OPTION WHAT "${@:2:1}"`: with no argument after the option, an empty
# one, or another option in its place, the value is missing.
require_value() {
  local option=$1 what=$2
  shift 2
  if [ $# -eq 0 ] || [ -z "$1" ]; then fail_usage "$option needs $what"; fi
  if [[ $1 == --* ]]; then fail_usage "$option needs $what, not the option $1"; fi
}

while [ $# -gt 0 ]; do
  case "$1" in
    --secret-file) require_value "$1" "a path (the cluster.key file)" "${@:2:1}"; secret_file=$2; shift 2 ;;
    --replace-cluster-key) replace_cluster_key=1; shift ;;
    --name) require_value "$1" "a value (the node name)" "${@:2:1}"; extra_args+=(--name "$2"); shift 2 ;;
    --ollama-url) require_value "$1" "a URL" "${@:2:1}"; extra_args+=(--ollama-url "$2"); shift 2 ;;
    --bootstrap) require_value "$1" "a multiaddr" "${@:2:1}"; extra_args+=(--bootstrap "$2"); shift 2 ;;
    --no-mdns) extra_args+=(--no-mdns); shift ;;
    --prefix) require_value "$1" "a directory" "${@:2:1}"; prefix=$2; shift 2 ;;
    --data-dir) require_value "$1" "a directory" "${@:2:1}"; data_dir=$2; shift 2 ;;
    --dry-run) dry_run=1; shift ;;
    -h|--help) usage; exit 0 ;;
    *) fail_usage "unknown option $1" ;;
  esac
done
if [ "$replace_cluster_key" -eq 1 ] && [ -z "$secret_file" ]; then
  fail_usage "--replace-cluster-key needs --secret-file (the key to put in its place)"
fi

# Prints a command the way a shell would read it back, so a dry run's lines can be pasted.
show() {
  local line
  printf -v line ' %q' "$@"
  echo "+${line}"
}

run() {
  show "$@"
  if [ "$dry_run" -eq 0 ]; then "$@"; fi
}

run_in() {
  local directory=$1 line
  shift
  printf -v line ' %q' "$@"
  printf '+ cd %q &&%s\n' "$directory" "$line"
  if [ "$dry_run" -eq 0 ]; then (cd "$directory" && "$@"); fi
}

source_dir="$(cd "$(dirname "$0")/.." && pwd -P)"
if [ ! -f "$source_dir/package.json" ] || ! grep -q '"name": "hivemesh"' "$source_dir/package.json"; then
  fail "run this from a hivemesh checkout ($source_dir is not one)"
fi
if [ "$dry_run" -eq 0 ] && [ "$(id -u)" -ne 0 ]; then
  fail "run as root (sudo), or with --dry-run to see the steps"
fi
for tool in node npm systemctl getent groupadd useradd tar realpath mktemp; do
  if ! command -v "$tool" >/dev/null 2>&1; then
    echo "install-node.sh: '$tool' is missing; install Node.js (20 or newer, with npm) and use a systemd host with the usual system tools" >&2
    [ "$dry_run" -eq 1 ] || exit 1
  fi
done

# systemd refuses an executable whose path has a quote or a backslash, and no unit line can hold
# a newline; the data dir is held to the same rule, as its path goes in the unit too.
check_unit_path() {
  if [[ $2 == *[[:cntrl:]\"\'\\]* ]]; then
    fail "$1 $(printf %q "$2") has a quote, a backslash or a control character (such as a newline), which systemd cannot take in a unit: choose a path without them (spaces, %, \$ and non-ASCII letters are fine)"
  fi
}
# Absolute paths with symlinks resolved, so the checks below compare what is really on disk.
check_unit_path --prefix "$prefix"
prefix=$(realpath -m -- "$prefix")
check_unit_path "--prefix (resolved)" "$prefix"
check_unit_path --data-dir "$data_dir"
data_dir=$(realpath -m -- "$data_dir")
check_unit_path "--data-dir (resolved)" "$data_dir"
# Is $1 the directory $2 or inside it?
is_within() { [ "$1" = "$2" ] || [[ $1 == "$2"/* ]]; }
if [ "$prefix" = / ]; then fail "--prefix / would replace the whole file system: choose a directory of its own"; fi
if [ "$data_dir" = / ]; then fail "--data-dir / is not a data dir: choose a directory of its own"; fi
if is_within "$data_dir" "$prefix"; then
  fail "the data dir $data_dir is inside the code prefix $prefix, which an upgrade replaces whole: choose a data dir outside it"
fi
if is_within "$prefix" "$data_dir"; then
  fail "the code prefix $prefix is inside the data dir $data_dir: keep code and data apart"
fi
if is_within "$source_dir" "$prefix"; then
  fail "this checkout ($source_dir) is inside the prefix $prefix, which the install replaces whole: run the script from a checkout elsewhere"
fi
if is_within "$prefix" "$source_dir"; then
  fail "the prefix $prefix is inside this checkout ($source_dir), which is what gets copied: choose a prefix outside it"
fi
# Only an earlier hivemesh install (or an empty directory) may be replaced.
if [ -e "$prefix" ]; then
  if [ ! -d "$prefix" ]; then fail "$prefix exists and is not a directory: choose another --prefix or remove it"; fi
  if [ -n "$(ls -A -- "$prefix")" ] && ! grep -qs '"name": "hivemesh"' "$prefix/package.json"; then
    fail "$prefix exists and does not hold a hivemesh install; the install replaces the prefix whole, so it refuses: choose another --prefix or empty it"
  fi
fi

# A node's cluster key is what keeps it in its cluster: a different one cuts it off.
key_path="$data_dir/cluster.key"
key_action=none
if [ -n "$secret_file" ]; then
  if [ ! -r "$secret_file" ]; then fail "cannot read the cluster key $secret_file"; fi
  # CRLF line endings and blanks at line ends do not make a key different.
  normalized_key() { tr -d '\r' < "$1" | sed -e 's/[[:space:]]*$//' -e '/^$/d'; }
  if [ ! -e "$key_path" ]; then
    key_action=install
  elif [ ! -r "$key_path" ]; then
    # Only a dry run by a non-root user gets here.
    echo "note: cannot read $key_path to compare it with $secret_file; an install as root refuses a different key unless --replace-cluster-key is given"
    key_action=install
  elif [ "$(normalized_key "$key_path")" = "$(normalized_key "$secret_file")" ]; then
    key_action=unchanged
  elif [ "$replace_cluster_key" -eq 1 ]; then
    key_action=replace
  else
    fail "$key_path already holds a different cluster key than $secret_file. Installing it would cut this node off from its cluster. To move this node to the cluster of $secret_file, pass --replace-cluster-key as well (the old key is kept as $key_path.previous); to keep the current key, leave out --secret-file."
  fi
fi

# systemd's own quoting (not the shell's): double quotes, with backslash and quote escaped and
# % doubled (specifiers). For an argument of ExecStart, $ is doubled too (variables); the
# executable's path, Environment= and ReadWritePaths= take $ as it is.
systemd_quote() {
  local value=$1
  value=${value//\\/\\\\}
  value=${value//\"/\\\"}
  value=${value//%/%%}
  if [ "${2:-}" = argument ]; then value=${value//\$/\$\$}; fi
  printf '"%s"' "$value"
}

echo "Installing hivemesh from $source_dir into $prefix (data in $data_dir)"

# The group first, named explicitly: useradd --system alone leaves the group to the distro.
if getent group hivemesh >/dev/null 2>&1; then
  echo "group hivemesh exists; using it"
else
  run groupadd --system hivemesh
fi
if getent passwd hivemesh >/dev/null 2>&1; then
  echo "user hivemesh exists; using it (the service runs with group hivemesh)"
else
  run useradd --system --gid hivemesh --home-dir "$data_dir" --no-create-home --shell /usr/sbin/nologin hivemesh
fi

# The new code goes into a fresh directory beside the prefix (same file system, so the swap
# is a rename); if anything fails before the swap, the installed code is untouched.
prefix_parent=$(dirname "$prefix")
prefix_base=$(basename "$prefix")
staging_dir=""
retired_dir=""
remove_leftovers() {
  if [ "$dry_run" -eq 1 ]; then return; fi
  if [ -n "$staging_dir" ] && [ -d "$staging_dir" ]; then rm -rf -- "$staging_dir"; fi
  if [ -n "$retired_dir" ] && [ -d "$retired_dir" ]; then rm -rf -- "$retired_dir"; fi
}
trap remove_leftovers EXIT

run mkdir -p "$prefix_parent"
staging_template="$prefix_parent/.$prefix_base.new.XXXXXX"
show mktemp -d "$staging_template"
if [ "$dry_run" -eq 0 ]; then staging_dir=$(mktemp -d "$staging_template"); else staging_dir=$staging_template; fi
run chmod 0755 "$staging_dir"
show_copy() {
  local pack unpack
  printf -v pack ' %q' tar -C "$source_dir" --exclude=./node_modules --exclude=./.git --exclude=./.hivemesh-demo -cf - .
  printf -v unpack ' %q' tar -C "$staging_dir" -xf -
  echo "+${pack} |${unpack}"
}
show_copy
if [ "$dry_run" -eq 0 ]; then
  tar -C "$source_dir" --exclude=./node_modules --exclude=./.git --exclude=./.hivemesh-demo -cf - . | tar -C "$staging_dir" -xf -
fi
run_in "$staging_dir" npm ci --omit=dev --no-audit --no-fund

run mkdir -p "$data_dir"
case "$key_action" in
  install) run install -m 0600 "$secret_file" "$key_path" ;;
  unchanged) echo "cluster key unchanged: $key_path already holds the key in $secret_file" ;;
  replace)
    echo "replacing the cluster key $key_path with $secret_file (--replace-cluster-key); the old key goes to $key_path.previous"
    run mv -f "$key_path" "$key_path.previous"
    run install -m 0600 "$secret_file" "$key_path"
    ;;
esac
run chown -R hivemesh:hivemesh "$data_dir"
run chmod 0700 "$data_dir"

# The swap: the old tree steps aside, the new one takes its name, then the old one goes.
if [ -e "$prefix" ]; then
  retired_template="$prefix_parent/.$prefix_base.old.XXXXXX"
  show mktemp -d "$retired_template"
  if [ "$dry_run" -eq 0 ]; then retired_dir=$(mktemp -d "$retired_template"); else retired_dir=$retired_template; fi
  if ! run mv -T "$prefix" "$retired_dir/tree"; then
    fail "could not move $prefix aside, so the installed code is unchanged (a mount point cannot be moved: then make --prefix a directory inside it)"
  fi
  if ! run mv -T "$staging_dir" "$prefix"; then
    if mv -T "$retired_dir/tree" "$prefix"; then
      fail "could not move the new code into $prefix; the previous code is back in place"
    fi
    kept=$retired_dir/tree
    retired_dir=""
    fail "could not move the new code into $prefix, nor the previous code back: it is in $kept"
  fi
  staging_dir=""
  run rm -rf "$retired_dir"
  retired_dir=""
else
  run mv -T "$staging_dir" "$prefix"
  staging_dir=""
fi
run mkdir -p "$(dirname "$cli_link")"
run ln -sfn "$prefix/bin/hivemesh" "$cli_link"

quoted_args=""
for argument in "${extra_args[@]+"${extra_args[@]}"}"; do quoted_args+=" $(systemd_quote "$argument" argument)"; done
unit="[Unit]
Description=hivemesh node (LLM agents across the LAN)
After=network-online.target ollama.service
Wants=network-online.target

[Service]
User=hivemesh
Group=hivemesh
Environment=$(systemd_quote "HIVEMESH_DATA_DIR=$data_dir")
ExecStart=$(systemd_quote "$prefix/bin/hivemesh") start$quoted_args
Restart=on-failure
RestartSec=2
TimeoutStopSec=20
KillSignal=SIGTERM
NoNewPrivileges=true
ProtectSystem=strict
ReadWritePaths=$(systemd_quote "$data_dir")

[Install]
WantedBy=multi-user.target"
echo "+ write $unit_path:"
echo "$unit" | sed 's/^/    /'
if [ "$dry_run" -eq 0 ]; then
  mkdir -p "$(dirname "$unit_path")"
  printf '%s\n' "$unit" > "$unit_path.new"
  mv -f "$unit_path.new" "$unit_path"
fi
run systemctl daemon-reload
run systemctl enable hivemesh

# `enable --now` leaves a running service alone, so an upgrade would keep running the old code.
service_state=unknown
if command -v systemctl >/dev/null 2>&1; then
  service_state=$(systemctl is-active hivemesh 2>/dev/null || true)
fi
case "$service_state" in
  active|activating|reloading)
    echo "hivemesh was running: restarting it so the new code takes effect"
    run systemctl restart hivemesh
    service_done="restarted"
    ;;
  unknown)
    echo "(systemctl is missing, so whether hivemesh runs is unknown: an install starts it, or restarts it if it runs)"
    run systemctl start hivemesh
    service_done="started"
    ;;
  *)
    echo "hivemesh was not running: starting it"
    run systemctl start hivemesh
    service_done="started"
    ;;
esac

if [ "$dry_run" -eq 1 ]; then
  echo
  echo "dry run: nothing was changed; the steps above are what an install would do."
  exit 0
fi

printf -v status_command 'HIVEMESH_DATA_DIR=%q hivemesh status' "$data_dir"
cat <<EOF

hivemesh is installed and $service_done (systemctl status hivemesh; journalctl -u hivemesh -f).
  dashboard:    http://$(hostname):7420/
  admin token:  $data_dir/admin.token  (root or the hivemesh user can read it)
  cluster key:  $key_path  (copy it to the next machine: install-node.sh --secret-file)
  CLI:          $status_command
EOF
