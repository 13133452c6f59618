#!/usr/bin/env bash
# Makes a local Docker engine usable for the image test, the way these machines allow:
#   1. installs Debian's engine (docker.io) and debootstrap when missing (needs root and apt);
#   2. starts dockerd without its default bridge (host networking only) unless an engine answers;
#   3. builds the base image local/python:3.11-bookworm from Debian packages once (no registry here).
# Idempotent: a second run finds everything in place and returns in about a second.
# Prints the docker client to use on its last line. Stop the engine with:
#   kill "$(cat "${CSD_SR_DOCKERD_PID:-/tmp/csd-sr-dockerd.pid}")"
set -euo pipefail

BASE_IMAGE=${CSD_SR_BASE_IMAGE:-local/python:3.11-bookworm}
PID_FILE=${CSD_SR_DOCKERD_PID:-/tmp/csd-sr-dockerd.pid}
LOG_FILE=${CSD_SR_DOCKERD_LOG:-/tmp/csd-sr-dockerd.log}

log() { echo "docker-engine: $*" >&2; }

need=()
command -v dockerd >/dev/null || need+=(docker.io)
command -v debootstrap >/dev/null || need+=(debootstrap)
if [ ${#need[@]} -gt 0 ]; then
    [ "$(id -u)" = 0 ] || { log "missing ${need[*]} and not root: install them first"; exit 1; }
    log "installing ${need[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

# Debian's client matches Debian's engine; an older/newer client earlier on PATH may not.
docker=/usr/bin/docker
[ -x "$docker" ] || docker=$(command -v docker)

if ! "$docker" info >/dev/null 2>&1; then
    log "starting dockerd (log: $LOG_FILE)"
    setsid dockerd --bridge=none --iptables=false --ip6tables=false >"$LOG_FILE" 2>&1 < /dev/null &
    echo $! >"$PID_FILE"
    for _ in $(seq 60); do
        "$docker" info >/dev/null 2>&1 && break
        sleep 1
    done
    "$docker" info >/dev/null 2>&1 || { log "dockerd did not come up"; tail -20 "$LOG_FILE" >&2; exit 1; }
fi

if ! "$docker" image inspect "$BASE_IMAGE" >/dev/null 2>&1; then
    log "building $BASE_IMAGE with debootstrap (about a minute)"
    rootfs=$(mktemp -d /tmp/csd-sr-rootfs.XXXXXX)
    trap 'rm -rf "$rootfs"' EXIT
    debootstrap --variant=minbase --include=python3,python3-venv,python3-pip,ca-certificates \
        bookworm "$rootfs" >"$rootfs.log" 2>&1 || { tail -20 "$rootfs.log" >&2; exit 1; }
    rm -f "$rootfs.log"
    # HTTPS here goes through a certificate authority only the host trusts.
    cp /etc/ssl/certs/ca-certificates.crt "$rootfs/etc/ssl/certs/ca-certificates.crt"
    rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
    tar -C "$rootfs" -c . | "$docker" import \
        --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --change 'CMD ["python3"]' - "$BASE_IMAGE" >/dev/null
fi
echo "$docker"
