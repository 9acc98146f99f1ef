#!/bin/sh
# The team's `mlflow server`: PostgreSQL backend, artifacts served through the server from $MLFLOW_HOME (a volume),
# optional basic auth. Settings come from the environment (docker/secrets.env, or a Kubernetes Secret); the database
# password travels in MLFLOW_BACKEND_STORE_URI, which the server reads itself, never on a command line.
# tests/orchestrator/test_postgres.py runs this script against a real PostgreSQL.
set -eu
: "${POSTGRES_USER:?set POSTGRES_USER}" "${POSTGRES_PASSWORD:?set POSTGRES_PASSWORD}" "${POSTGRES_DB:?set POSTGRES_DB}"
home="${MLFLOW_HOME:-/mlflow}"
# SQLAlchemy 2.1 reads a bare postgresql:// as psycopg 3; the image ships psycopg2. The password must be URL-safe.
export MLFLOW_BACKEND_STORE_URI="postgresql+psycopg2://${POSTGRES_USER}:${POSTGRES_PASSWORD}@${POSTGRES_HOST:-postgres}:${POSTGRES_PORT:-5432}/${POSTGRES_DB}"
set -- --artifacts-destination "${MLFLOW_ARTIFACTS_DESTINATION:-$home/artifacts}" \
       --host "${MLFLOW_HOST:-0.0.0.0}" --port "${MLFLOW_PORT:-5000}" --workers "${MLFLOW_WORKERS:-2}"
if [ "${MLFLOW_BASIC_AUTH:-false}" = true ]; then
  # users live in SQLite on the same volume; the admin's first password comes from MLFLOW_AUTH_ADMIN_PASSWORD
  : "${MLFLOW_AUTH_ADMIN_PASSWORD:?basic auth needs MLFLOW_AUTH_ADMIN_PASSWORD}"
  mkdir -p "$home/auth"
  cat > "$home/auth/basic_auth.ini" <<INI
[mlflow]
default_permission = READ
database_uri = sqlite:///$home/auth/basic_auth.db
admin_username = ${MLFLOW_AUTH_ADMIN_USERNAME:-admin}
authorization_function = mlflow.server.auth:authenticate_request_basic_auth
INI
  export MLFLOW_AUTH_CONFIG_PATH="$home/auth/basic_auth.ini"
  set -- "$@" --app-name basic-auth
fi
exec mlflow server "$@"
