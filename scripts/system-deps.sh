#!/usr/bin/env bash
# Debian packages the tests use: prometheus (+ promtool), docker.io (the engine), debootstrap (the
# test base image) for the deployment tests; chromium for the web page's tests, which drive it through
# Playwright (never Playwright's own browser download); redis-server for the jobs' Redis store (two
# replicas sharing one). Installs the missing ones when run as root; otherwise says what is missing
# and leaves it to the tests to skip. Fast when everything is there.
set -euo pipefail

declare -A package_of=([prometheus]=prometheus [promtool]=prometheus [dockerd]=docker.io [debootstrap]=debootstrap
    [chromium]=chromium [redis-server]=redis-server)
missing=()
for bin in "${!package_of[@]}"; do
    command -v "$bin" >/dev/null || missing+=("${package_of[$bin]}")
done
[ ${#missing[@]} -eq 0 ] && exit 0
mapfile -t missing < <(printf '%s\n' "${missing[@]}" | sort -u)

if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
    echo "system-deps: missing ${missing[*]} (install as root: apt-get install ${missing[*]})" >&2
    exit 0
fi
echo "system-deps: installing ${missing[*]}" >&2
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
