#!/bin/sh
# Configures the demo's dev-mode Vault through its HTTP API only (curl, no vault CLI). It
# follows the same steps as the repository's scripts/setup-vault.sh, trimmed to what the
# demo needs. It runs in the vault-setup Job (setup-job.yaml), which gets it through a
# kustomize configMapGenerator. It is idempotent, so it is safe to run again.
#
#   1. database secrets engine at database/, connection "postgres", dynamic role "app"
#   2. policy "app": read database/creds/app, renew and revoke its leases
#   3. kubernetes auth at auth/kubernetes/, role "app" bound to service account "app" in the
#      app's namespace, with audience "vault" (the projected token in deployment.yaml)
#
# Environment: VAULT_ADDR, VAULT_TOKEN, POSTGRES_PASSWORD, APP_NAMESPACE (required);
# PG_HOST (postgres), PG_PORT (5432), DB_ROLE (app), APP_SERVICE_ACCOUNT (app),
# DEFAULT_TTL (5m), MAX_TTL (30m) (optional).
#
# POSIX sh: the curlimages/curl image has busybox ash, not bash.
set -eu

: "${VAULT_ADDR:?}" "${VAULT_TOKEN:?}" "${POSTGRES_PASSWORD:?}" "${APP_NAMESPACE:?}"
PG_HOST=${PG_HOST:-postgres}
PG_PORT=${PG_PORT:-5432}
DB_ROLE=${DB_ROLE:-app}
APP_SERVICE_ACCOUNT=${APP_SERVICE_ACCOUNT:-app}
# Short on purpose, so renewal and rotation show up within minutes in the demo.
DEFAULT_TTL=${DEFAULT_TTL:-5m}
MAX_TTL=${MAX_TTL:-30m}

case $POSTGRES_PASSWORD in
  *'"'* | *\\*) echo "POSTGRES_PASSWORD must not contain \" or \\ (it goes into JSON as is)" >&2; exit 1 ;;
esac

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# The token goes in a header file, not on curl's command line, where any process in the
# container could read it from /proc.
printf 'X-Vault-Token: %s\n' "$VAULT_TOKEN" > "$work/auth-header"

# api METHOD PATH [JSON]: calls $VAULT_ADDR/v1/PATH. The response body goes to
# $work/body. Prints the HTTP status; curl exits non-zero only on a transport error.
api() {
  if [ $# -ge 3 ]; then
    curl -sS -o "$work/body" -w '%{http_code}' -X "$1" -H @"$work/auth-header" \
      -H 'Content-Type: application/json' --data "$3" "$VAULT_ADDR/v1/$2"
  else
    curl -sS -o "$work/body" -w '%{http_code}' -X "$1" -H @"$work/auth-header" \
      "$VAULT_ADDR/v1/$2"
  fi
}

# must METHOD PATH [JSON]: like api, but fails the script on HTTP >= 400. Vault's error
# messages contain no secrets.
must() {
  code=$(api "$@")
  if [ "$code" -ge 400 ]; then
    echo "FAILED: $1 /v1/$2 -> HTTP $code: $(cat "$work/body")" >&2
    exit 1
  fi
  echo "ok: $1 /v1/$2 ($code)"
}

# enable_path KIND PATH TYPE: mount a secrets engine (KIND=mounts) or auth method (KIND=auth)
# unless that path is already in use.
enable_path() {
  code=$(api POST "sys/$1/$2" "{\"type\":\"$3\"}")
  if [ "$code" -lt 400 ]; then
    echo "ok: enabled $3 at $2/"
  elif grep -q 'already in use' "$work/body"; then
    echo "ok: $2/ already enabled"
  else
    echo "FAILED: enable $3 at $2/ -> HTTP $code: $(cat "$work/body")" >&2
    exit 1
  fi
}

echo "waiting for Vault at $VAULT_ADDR"
i=0
until curl -fsS -o /dev/null "$VAULT_ADDR/v1/sys/health"; do
  i=$((i + 1))
  [ "$i" -lt 90 ] || { echo "Vault did not become ready" >&2; exit 1; }
  sleep 2
done

# --- 1. database secrets engine ------------------------------------------------------------
enable_path mounts database database

# Vault checks the connection when it writes the config, so retry until PostgreSQL is up.
config="{\"plugin_name\":\"postgresql-database-plugin\",\
\"connection_url\":\"postgresql://{{username}}:{{password}}@${PG_HOST}:${PG_PORT}/postgres?sslmode=disable\",\
\"username\":\"postgres\",\"password\":\"${POSTGRES_PASSWORD}\",\
\"allowed_roles\":\"${DB_ROLE}\"}"
echo "waiting for PostgreSQL at $PG_HOST:$PG_PORT (through Vault)"
i=0
until [ "$(api POST database/config/postgres "$config")" -lt 400 ]; do
  i=$((i + 1))
  if [ "$i" -ge 90 ]; then
    echo "FAILED: database/config/postgres: $(cat "$work/body")" >&2
    exit 1
  fi
  sleep 2
done
echo "ok: POST /v1/database/config/postgres"

# A dynamic role. Each read of database/creds/app creates a login role valid until the lease
# expires. VALID UNTIL makes PostgreSQL itself refuse the user after that, even if a
# revocation is missed.
must POST "database/roles/${DB_ROLE}" "{\"db_name\":\"postgres\",\
\"creation_statements\":[\
\"CREATE ROLE \\\"{{name}}\\\" WITH LOGIN PASSWORD '{{password}}' VALID UNTIL '{{expiration}}';\",\
\"GRANT SELECT ON ALL TABLES IN SCHEMA public TO \\\"{{name}}\\\";\"],\
\"default_ttl\":\"${DEFAULT_TTL}\",\"max_ttl\":\"${MAX_TTL}\"}"

# --- 2. policy ------------------------------------------------------------------------------
# The default policy already allows token renew-self/lookup-self and sys/leases/renew.
# Revoking the old lease after the grace period needs sys/leases/revoke. Both the body form
# and the path form are allowed, the path form only for this role's leases.
must PUT "sys/policies/acl/${DB_ROLE}" "{\"policy\":\"\
path \\\"database/creds/${DB_ROLE}\\\" { capabilities = [\\\"read\\\"] }\\n\
path \\\"sys/leases/renew\\\" { capabilities = [\\\"update\\\"] }\\n\
path \\\"sys/leases/renew/database/creds/${DB_ROLE}/*\\\" { capabilities = [\\\"update\\\"] }\\n\
path \\\"sys/leases/revoke\\\" { capabilities = [\\\"update\\\"] }\\n\
path \\\"sys/leases/revoke/database/creds/${DB_ROLE}/*\\\" { capabilities = [\\\"update\\\"] }\\n\
\"}"

# --- 3. kubernetes auth ---------------------------------------------------------------------
enable_path auth kubernetes kubernetes

# Vault runs in the cluster, so it finds the API server's CA and its own reviewer token in
# its service-account mount (rbac.yaml gives that account system:auth-delegator).
must POST auth/kubernetes/config '{"kubernetes_host":"https://kubernetes.default.svc"}'

# audience "vault": only tokens projected for Vault log in, and the pod's default API token
# does not.
must POST "auth/kubernetes/role/${DB_ROLE}" "{\
\"bound_service_account_names\":[\"${APP_SERVICE_ACCOUNT}\"],\
\"bound_service_account_namespaces\":[\"${APP_NAMESPACE}\"],\
\"audience\":\"vault\",\
\"token_policies\":[\"${DB_ROLE}\"],\
\"token_ttl\":\"1h\",\"token_max_ttl\":\"24h\"}"

echo "Vault is configured: role ${DB_ROLE} for ${APP_NAMESPACE}/${APP_SERVICE_ACCOUNT}, creds at database/creds/${DB_ROLE}"
