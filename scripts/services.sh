#!/usr/bin/env bash
# Install (from Debian's packages, when missing) and start PostgreSQL and Redis on 127.0.0.1 for the
# tests and for a production-like local run. Idempotent. Prints the environment to point Fleetgate at them:
#   eval "$(scripts/services.sh --env)"
set -euo pipefail

PG_USER=fleetgate
PG_PASSWORD=fleetgate
PG_DB=fleetgate
REDIS_PORT=${FLEETGATE_REDIS_PORT:-6379}
PG_PORT=${FLEETGATE_PG_PORT:-5432}

quiet=false
[ "${1:-}" = "--env" ] && quiet=true
log() { $quiet || echo "services: $*" >&2; }

need=()
compgen -G "/usr/lib/postgresql/*/bin/postgres" >/dev/null || need+=(postgresql)
command -v redis-server >/dev/null || need+=(redis-server)
if [ ${#need[@]} -gt 0 ]; then
  log "installing ${need[*]} from Debian's packages"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >&2
  apt-get install -y -qq "${need[@]}" >&2
fi

# PostgreSQL: the Debian cluster, listening on loopback only.
pg_version=$(ls /usr/lib/postgresql | sort -V | tail -n 1)
if ! pg_lsclusters -h 2>/dev/null | awk '{print $1, $2}' | grep -q "^$pg_version main$"; then
  log "creating PostgreSQL $pg_version cluster"
  pg_createcluster "$pg_version" main -p "$PG_PORT" >&2
fi
if ! pg_lsclusters -h | awk -v v="$pg_version" '$1==v && $2=="main" {print $4}' | grep -q online; then
  log "starting PostgreSQL $pg_version"
  pg_ctlcluster "$pg_version" main start -o "-c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200" >&2
fi
for _ in $(seq 1 30); do
  pg_isready -h 127.0.0.1 -p "$PG_PORT" -q && break
  sleep 1
done
pg_isready -h 127.0.0.1 -p "$PG_PORT" -q || { echo "PostgreSQL did not become ready" >&2; exit 1; }
# A superuser role: the tests create databases and (to prove tamper detection) disable the audit trigger.
su postgres -c "psql -p $PG_PORT -qtAc \"SELECT 1 FROM pg_roles WHERE rolname='$PG_USER'\"" | grep -q 1 \
  || su postgres -c "psql -p $PG_PORT -qc \"CREATE ROLE $PG_USER LOGIN SUPERUSER PASSWORD '$PG_PASSWORD'\"" >&2
su postgres -c "psql -p $PG_PORT -qtAc \"SELECT 1 FROM pg_database WHERE datname='$PG_DB'\"" | grep -q 1 \
  || su postgres -c "createdb -p $PG_PORT -O $PG_USER $PG_DB" >&2

# Redis on loopback, no persistence.
if ! redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping >/dev/null 2>&1; then
  log "starting Redis on 127.0.0.1:$REDIS_PORT"
  redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --daemonize yes --save "" --appendonly no >&2
  for _ in $(seq 1 20); do
    redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping >/dev/null 2>&1 && break
    sleep 0.5
  done
fi
redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping >/dev/null || { echo "Redis did not start" >&2; exit 1; }

echo "export DATABASE_URL=postgres://$PG_USER:$PG_PASSWORD@127.0.0.1:$PG_PORT/$PG_DB"
echo "export CELERY_BROKER_URL=redis://127.0.0.1:$REDIS_PORT/0"
