#!/usr/bin/env bash
# Installs cbserver on a Debian 12 (or newer) box, to run under systemd:
#   Debian packages (install-system-deps.sh), a `cbserver` system user, cbserver in a virtualenv
#   under the prefix, the Asterisk root, the config file and the units of deploy/systemd/.
# The Vagrant box runs it, and tests/unit/test_deploy.py runs it in a temporary root.
# Idempotent: a second run installs the checkout's cbserver again, rewrites the units and
# restarts the services; it never touches an existing config file.
#
#   deploy/install.sh [options]       (as root, except with --root)
#     --prefix DIR        cbserver's code and virtualenv          (default /opt/cbserver)
#     --config-dir DIR    cbserver.toml and cbserver.env          (default /etc/cbserver)
#     --state-dir DIR     database, Asterisk instances and root   (default /var/lib/cbserver)
#     --unit-dir DIR      where the systemd units go              (default /etc/systemd/system)
#     --root DIR          a trial install: all four directories inside DIR; no user is created
#     --user NAME         the user the web and the worker run as  (default cbserver)
#     --python PYTHON     the Python that makes the virtualenv    (default python3)
#     --database-url URL  written into a new config file          (default: SQLite in the state dir)
#     --no-asterisk       do not find or build an Asterisk now
#     --no-systemd        write the units, but do not reload, enable or start them
#     --no-start          enable the units, but do not start them
set -euo pipefail

source_dir=$(cd "$(dirname "$0")/.." && pwd)
prefix=/opt/cbserver
config_dir=/etc/cbserver
state_dir=/var/lib/cbserver
unit_dir=/etc/systemd/system
root=""
user=cbserver
python=python3
database_url=""
provision_asterisk=yes
use_systemd=yes
start=yes

fail() {
    echo "install.sh: $*" >&2
    exit 1
}

while [ $# -gt 0 ]; do
    case "$1" in
        --prefix) prefix=${2:?--prefix needs a directory}; shift ;;
        --config-dir) config_dir=${2:?--config-dir needs a directory}; shift ;;
        --state-dir) state_dir=${2:?--state-dir needs a directory}; shift ;;
        --unit-dir) unit_dir=${2:?--unit-dir needs a directory}; shift ;;
        --root) root=${2:?--root needs a directory}; shift ;;
        --user) user=${2:?--user needs a name}; shift ;;
        --python) python=${2:?--python needs a program}; shift ;;
        --database-url) database_url=${2:?--database-url needs a URL}; shift ;;
        --no-asterisk) provision_asterisk=no ;;
        --no-systemd) use_systemd=no ;;
        --no-start) start=no ;;
        -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) fail "unknown option $1 (see --help)" ;;
    esac
    shift
done

if [ -n "$root" ]; then
    mkdir -p "$root"
    root=$(cd "$root" && pwd)
    prefix=$root/opt/cbserver
    config_dir=$root/etc/cbserver
    state_dir=$root/var/lib/cbserver
    unit_dir=$root/etc/systemd/system
fi
for dir in "$prefix" "$config_dir" "$state_dir" "$unit_dir"; do
    case "$dir" in /*) ;; *) fail "$dir is not an absolute path" ;; esac
done
if [ -z "$root" ] && [ "$(id -u)" -ne 0 ]; then
    fail "run this as root (or try it out with --root DIR)"
fi
venv=$prefix/venv
config=$config_dir/cbserver.toml
step() { echo "==> $*" >&2; }

step "Debian packages"
PYTHON=$python "$source_dir/deploy/install-system-deps.sh" --server

# The user exists only on a real install; a trial install runs everything as its caller.
run_as=()
if [ -z "$root" ]; then
    if ! id -u "$user" >/dev/null 2>&1; then
        step "system user $user"
        useradd --system --user-group --home-dir "$state_dir" --no-create-home \
            --shell /usr/sbin/nologin --comment "cbserver" "$user"
    fi
    run_as=(runuser -u "$user" --)
fi
as_user() { (cd / && "${run_as[@]}" env CBSERVER_CONFIG="$config" "$@"); }

step "cbserver in $venv"
mkdir -p "$prefix"
# A copy of the checkout, installed editable: Asterisk's config templates (asterisk-conf/)
# live beside the package, not in it, and are found there.
rm -rf "$prefix/src.new"
mkdir "$prefix/src.new"
tar -C "$source_dir" --exclude=__pycache__ --exclude='*.egg-info' \
    -cf - cbserver asterisk-conf setup.cfg pyproject.toml README.md |
    tar -C "$prefix/src.new" -xf -
rm -rf "$prefix/src.old"
if [ -d "$prefix/src" ]; then mv "$prefix/src" "$prefix/src.old"; fi
mv "$prefix/src.new" "$prefix/src"
rm -rf "$prefix/src.old"
if [ ! -x "$venv/bin/python" ]; then
    "$python" -m venv "$venv"
fi
"$venv/bin/pip" install --quiet --editable "$prefix/src"
"$venv/bin/cbserver" --help >/dev/null

step "state in $state_dir"
install -d -m 0750 "$state_dir"
if [ ${#run_as[@]} -gt 0 ]; then chown "$user:$user" "$state_dir"; fi

step "config in $config"
install -d -m 0755 "$config_dir"
if [ -e "$config" ]; then
    echo "keeping $config as it is" >&2
else
    secret_key=$("$venv/bin/python" -c 'import secrets; print(secrets.token_urlsafe(32))')
    database_line="# database_url = \"postgresql+psycopg://cbserver:PASSWORD@db.example.com/cbserver\""
    if [ -n "$database_url" ]; then
        database_line="database_url = '$database_url'"
    fi
    (
        umask 077
        cat >"$config.new" <<EOF
# cbserver's settings; each may also be set as CBSERVER_<NAME> in $config_dir/cbserver.env,
# which wins. The README's "Configuration" lists them all. Written once by deploy/install.sh.

state_dir = "$state_dir"
asterisk_root = "$state_dir/asterisk-root"
# Every web process behind the load balancer needs the same one.
secret_key = "$secret_key"

# SQLite in the state dir when unset; PostgreSQL for several web or worker processes.
$database_line

# The SIP provider; unset, calls go to a demo gateway that only \`cbserver run\` starts.
# trunk_uri = "sip:gateway.example.com:5060"
# trunk_username = ""
# trunk_password = ""
# trunk_register = true

# Shared rate-limit counters when several web processes serve the same site.
# rate_limit_storage = "redis://127.0.0.1:6379/0"
EOF
    )
    if [ ${#run_as[@]} -gt 0 ]; then chown "root:$user" "$config.new"; fi
    chmod 0640 "$config.new"
    mv "$config.new" "$config"
fi

if [ "$provision_asterisk" = yes ]; then
    step "Asterisk"
    CBSERVER_CONFIG="$config" "$venv/bin/cbserver" asterisk provision
fi
# The worker reads the ARI password from the instance's secrets.json, which Asterisk's unit
# (root) would otherwise create readable by root alone: the worker's user makes it first.
as_user "$venv/bin/python" -c \
    'from cbserver.asterisk.instance import AsteriskInstance as A
from cbserver.config import Settings
A(Settings.load()).secrets()'

step "systemd units in $unit_dir"
install -d -m 0755 "$unit_dir"
units=()
for unit in "$source_dir"/deploy/systemd/*.service; do
    name=$(basename "$unit")
    sed -e "s|/opt/cbserver|$prefix|g" \
        -e "s|/etc/cbserver|$config_dir|g" \
        -e "s|/var/lib/cbserver|$state_dir|g" \
        -e "s|^User=cbserver\$|User=$user|" \
        -e "s|^Group=cbserver\$|Group=$user|" \
        "$unit" >"$unit_dir/$name.new"
    chmod 0644 "$unit_dir/$name.new"
    mv "$unit_dir/$name.new" "$unit_dir/$name"
    units+=("$name")
done

if [ "$use_systemd" = yes ]; then
    systemctl daemon-reload
    systemctl enable "${units[@]}"
    if [ "$start" = yes ]; then
        step "starting ${units[*]}"
        systemctl restart "${units[@]}"
    fi
fi
step "cbserver is installed: $venv/bin/cbserver (config $config)"
