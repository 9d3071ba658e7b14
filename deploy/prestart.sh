#!/usr/bin/env bash
# Run once per deploy before the web processes and workers start (systemd:
# episode-control-migrate.service): brings the database to the code's schema. Idempotent;
# not part of each web process's start, because two upgrades racing on one database fail.
set -euo pipefail
cd "$(dirname "$0")/.."
exec "${PYTHON:-.venv/bin/python}" -m flask --app wsgi db upgrade
