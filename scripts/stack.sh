#!/usr/bin/env bash
# Starts the compose stack (service + Prometheus + Grafana) from docker/compose.yaml, waits for
# Grafana and prints where everything is. Stop it with: bash scripts/stack.sh down
# Extra arguments go to `docker compose up` (e.g. --no-build).
set -euo pipefail
cd "$(dirname "$0")/.."

if docker compose version >/dev/null 2>&1; then
    compose=(docker compose -f docker/compose.yaml)
elif command -v docker-compose >/dev/null; then
    compose=(docker-compose -f docker/compose.yaml)
else
    echo "stack: needs Docker Compose (the 'docker compose' plugin or docker-compose)" >&2
    exit 1
fi

if [ "${1:-}" = down ]; then
    exec "${compose[@]}" down
fi

"${compose[@]}" up --detach --build "$@"

grafana=http://localhost:3000
echo "stack: waiting for Grafana..." >&2
for _ in $(seq 90); do
    if python3 -c "import urllib.request as u; u.urlopen('$grafana/api/health', timeout=2)" 2>/dev/null; then
        break
    fi
    sleep 2
done
cat <<MSG
Grafana:    $grafana/d/csd-sr   (dashboard "csd-sr"; anonymous viewer, admin/admin to edit)
Prometheus: http://localhost:9090/alerts
Service:    http://localhost:8000/docs
Stop:       bash scripts/stack.sh down
MSG
