#!/usr/bin/env bash
# Run once per deploy before the web processes and workers start (systemd:
# episode-control-migrate.service): brings the database to the code's schema. Idempotent;
# not part of each web process's start, because two upgrades racing on one database fail.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-.venv/bin/python}"
# Prometheus multiprocess files of the processes that ran before this start describe dead
# processes: empty the directory while nothing writes to it (deploy/monitoring.md).
if [ -n "${PROMETHEUS_MULTIPROC_DIR:-}" ]; then
  "$PY" -m app.metrics reset "$PROMETHEUS_MULTIPROC_DIR"
fi
exec "$PY" -m flask --app wsgi db upgrade
