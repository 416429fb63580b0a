#!/usr/bin/env bash
# Installs the Debian packages cbserver needs on a Debian 12 (or newer) host.
# Used by `make run`, `make test`, CI, and (with --server) deploy/install.sh and so the
# Vagrant box. Idempotent: it installs only what is missing, and does nothing at all when
# nothing is.
#
#   sipp (sip-tester)  the demo PSTN gateway and the test suite's SIP peers
#   debootstrap        builds the Asterisk root when no Asterisk >= 20 is installed
#   python3-venv       the virtual environment the Makefile (or install.sh) creates
#   chromium           the headless browser the browser tests drive (tests/browser.py)
#
# --server: only what a production box runs (no demo gateway, no browser).
set -euo pipefail

server=no
if [ "${1:-}" = "--server" ]; then
    server=yes
fi

missing=()
command -v debootstrap >/dev/null 2>&1 || [ -x /usr/sbin/debootstrap ] || missing+=(debootstrap)
command -v unshare >/dev/null 2>&1 || missing+=(util-linux)
"${PYTHON:-python3}" -c 'import venv, ensurepip' >/dev/null 2>&1 || missing+=(python3-venv)
if [ "$server" = no ]; then
    command -v sipp >/dev/null 2>&1 || missing+=(sip-tester)
    command -v chromium >/dev/null 2>&1 || missing+=(chromium)
    # Without recommends Chromium brings no fonts, and pages would render as empty boxes.
    dpkg -s fonts-dejavu-core >/dev/null 2>&1 || missing+=(fonts-dejavu-core)
fi

if [ ${#missing[@]} -eq 0 ]; then
    exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
    echo "cbserver needs these Debian packages: ${missing[*]}" >&2
    echo "install them with:  sudo apt-get install ${missing[*]}" >&2
    exit 1
fi
echo "installing Debian packages: ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
