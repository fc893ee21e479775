#!/usr/bin/env bash
# setup-vault.sh — configure a fresh Vault (or devvault, or OpenBao) for vault-rotator.
#
# Uses only standard Vault HTTP API calls (curl + jq), so it works against real Vault
# as well as devvault. It is idempotent where Vault allows: existing mounts are reused,
# roles and policies are overwritten.
#
# Required environment:
#   VAULT_ADDR            e.g. http://127.0.0.1:8200
#   VAULT_TOKEN           a token allowed to mount engines and write policies (root in dev)
#   PG_ADMIN_USER         PostgreSQL user Vault manages roles with (needs CREATEROLE)
#   PG_ADMIN_PASSWORD     its password
# Optional environment (defaults in brackets):
#   VAULT_CACERT          CA bundle for an https VAULT_ADDR
#   PG_HOST [127.0.0.1]   PG_PORT [5432]   PG_DATABASE [postgres]   PG_SSLMODE [disable]
#                         host/port as seen *from Vault*, not from this script
#   DB_MOUNT [database]   DB_CONNECTION [postgres]
#   DB_DEFAULT_TTL [1h]   DB_MAX_TTL [24h]          TTLs of the dynamic role `app`
#   STATIC_USERNAME [app_static]                     existing PostgreSQL user for role `app-static`
#   STATIC_ROTATION_PERIOD [24h]
#   SETUP_CREATE_STATIC_USER [auto]  auto: create STATIC_USERNAME with psql when psql is
#                         installed (connecting to PG_HOST:PG_PORT from here); 0: the user
#                         must already exist (static roles import an existing user)
#   APPROLE_MOUNT [approle]   APPROLE_TOKEN_TTL [1h]   APPROLE_TOKEN_MAX_TTL [4h]
#   K8S_PEM_KEYS_FILE     file with the service-account issuer's PEM public key(s);
#                         when unset, Kubernetes auth is skipped
#   K8S_MOUNT [kubernetes]  K8S_HOST [https://kubernetes.default.svc]
#   K8S_SA_NAME [app]  K8S_SA_NAMESPACE [default]  K8S_AUDIENCE [vault]
#   K8S_DISABLE_LOCAL_CA_JWT [false]  true when Vault runs outside the cluster: it then has
#                         no service-account files of its own, and real Vault and OpenBao
#                         refuse the config unless this is set and K8S_CA_CERT_FILE is given
#   K8S_CA_CERT_FILE      the cluster API's CA certificate (PEM), as kubernetes_ca_cert
#                         (matches manifests/: service account `app`, projected token audience `vault`)
#   KV_MOUNT [secret]     KV v2 mount; a sample secret is written to <KV_MOUNT>/app/config
#
# Fails loudly: the first failing call stops the script with Vault's error text.

set -euo pipefail

: "${VAULT_ADDR:?VAULT_ADDR must be set}"
: "${VAULT_TOKEN:?VAULT_TOKEN must be set}"
: "${PG_ADMIN_USER:?PG_ADMIN_USER must be set}"
: "${PG_ADMIN_PASSWORD:?PG_ADMIN_PASSWORD must be set}"
PG_HOST=${PG_HOST:-127.0.0.1}
PG_PORT=${PG_PORT:-5432}
PG_DATABASE=${PG_DATABASE:-postgres}
PG_SSLMODE=${PG_SSLMODE:-disable}
DB_MOUNT=${DB_MOUNT:-database}
DB_CONNECTION=${DB_CONNECTION:-postgres}
DB_DEFAULT_TTL=${DB_DEFAULT_TTL:-1h}
DB_MAX_TTL=${DB_MAX_TTL:-24h}
STATIC_USERNAME=${STATIC_USERNAME:-app_static}
STATIC_ROTATION_PERIOD=${STATIC_ROTATION_PERIOD:-24h}
SETUP_CREATE_STATIC_USER=${SETUP_CREATE_STATIC_USER:-auto}
APPROLE_MOUNT=${APPROLE_MOUNT:-approle}
APPROLE_TOKEN_TTL=${APPROLE_TOKEN_TTL:-1h}
APPROLE_TOKEN_MAX_TTL=${APPROLE_TOKEN_MAX_TTL:-4h}
K8S_MOUNT=${K8S_MOUNT:-kubernetes}
K8S_HOST=${K8S_HOST:-https://kubernetes.default.svc}
K8S_SA_NAME=${K8S_SA_NAME:-app}
K8S_AUDIENCE=${K8S_AUDIENCE:-vault}
K8S_SA_NAMESPACE=${K8S_SA_NAMESPACE:-default}
K8S_DISABLE_LOCAL_CA_JWT=${K8S_DISABLE_LOCAL_CA_JWT:-false}
KV_MOUNT=${KV_MOUNT:-secret}

command -v curl >/dev/null || { echo "setup-vault: curl is required" >&2; exit 1; }
command -v jq >/dev/null || { echo "setup-vault: jq is required" >&2; exit 1; }

curl_opts=(-sS --fail-with-body --max-time 30)
if [ -n "${VAULT_CACERT:-}" ]; then
    curl_opts+=(--cacert "$VAULT_CACERT")
fi

# api METHOD PATH [JSON_BODY] — prints the response body; exits with Vault's error text on failure.
api() {
    local method=$1 path=$2 body=${3:-} out
    local args=("${curl_opts[@]}" -X "$method" -H "X-Vault-Token: $VAULT_TOKEN" -H "X-Vault-Request: true")
    if [ -n "$body" ]; then
        args+=(-H "Content-Type: application/json" --data "$body")
    fi
    if ! out=$(curl "${args[@]}" "$VAULT_ADDR/v1/$path" 2>&1); then
        local msg
        # curl's own complaint (stderr) and Vault's JSON body arrive in either order: pick
        # the line that is JSON.
        msg=$(printf '%s\n' "$out" | jq -rR 'fromjson? | .errors | join("; ")' 2>/dev/null || true)
        echo "setup-vault: $method /v1/$path failed: ${msg:-$out}" >&2
        exit 1
    fi
    printf '%s' "$out"
}

log() { echo "setup-vault: $*"; }

# mounted TABLE PATH — whether sys/<TABLE> (mounts|auth) has PATH/.
mounted() {
    api GET "sys/$1" | jq -e --arg p "$2/" '(.data // .)[$p] != null' >/dev/null
}

health=$(curl "${curl_opts[@]}" "$VAULT_ADDR/v1/sys/health?standbyok=true" 2>&1) || {
    echo "setup-vault: Vault at $VAULT_ADDR is not healthy: $health" >&2
    exit 1
}
log "Vault $(printf '%s' "$health" | jq -r .version) at $VAULT_ADDR"

# --- database secrets engine -------------------------------------------------------------
if mounted mounts "$DB_MOUNT"; then
    log "database engine already mounted at $DB_MOUNT/"
else
    api POST "sys/mounts/$DB_MOUNT" '{"type":"database"}' >/dev/null
    log "mounted database engine at $DB_MOUNT/"
fi

api POST "$DB_MOUNT/config/$DB_CONNECTION" "$(jq -n \
    --arg url "postgresql://{{username}}:{{password}}@$PG_HOST:$PG_PORT/$PG_DATABASE?sslmode=$PG_SSLMODE" \
    --arg user "$PG_ADMIN_USER" --arg pass "$PG_ADMIN_PASSWORD" \
    '{plugin_name: "postgresql-database-plugin", connection_url: $url, username: $user,
      password: $pass, allowed_roles: ["app", "app-static"], verify_connection: true}')" >/dev/null
log "configured connection $DB_CONNECTION (postgresql://$PG_HOST:$PG_PORT/$PG_DATABASE)"

api POST "$DB_MOUNT/roles/app" "$(jq -n --arg db "$DB_CONNECTION" \
    --arg ttl "$DB_DEFAULT_TTL" --arg max "$DB_MAX_TTL" \
    '{db_name: $db, default_ttl: $ttl, max_ttl: $max,
      creation_statements: [
        "CREATE ROLE \"{{name}}\" WITH LOGIN PASSWORD '\''{{password}}'\'' VALID UNTIL '\''{{expiration}}'\'';",
        "GRANT SELECT ON ALL TABLES IN SCHEMA public TO \"{{name}}\";"
      ]}')" >/dev/null
log "dynamic role app (default_ttl=$DB_DEFAULT_TTL, max_ttl=$DB_MAX_TTL)"

if [ "$SETUP_CREATE_STATIC_USER" != "0" ] && command -v psql >/dev/null; then
    PGPASSWORD=$PG_ADMIN_PASSWORD PGCONNECT_TIMEOUT=10 psql -q -h "$PG_HOST" -p "$PG_PORT" \
        -U "$PG_ADMIN_USER" -d "$PG_DATABASE" -v ON_ERROR_STOP=1 -v u="$STATIC_USERNAME" <<'SQL'
SELECT format('CREATE ROLE %I LOGIN', :'u') WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = :'u')
\gexec
SQL
    log "ensured PostgreSQL user $STATIC_USERNAME exists"
elif [ "$SETUP_CREATE_STATIC_USER" = "auto" ]; then
    log "psql not found: PostgreSQL user $STATIC_USERNAME must already exist"
fi

api POST "$DB_MOUNT/static-roles/app-static" "$(jq -n --arg db "$DB_CONNECTION" \
    --arg user "$STATIC_USERNAME" --arg period "$STATIC_ROTATION_PERIOD" \
    '{db_name: $db, username: $user, rotation_period: $period}')" >/dev/null
log "static role app-static (user $STATIC_USERNAME, rotation_period=$STATIC_ROTATION_PERIOD)"

# --- KV v2 ---------------------------------------------------------------------------------
if mounted mounts "$KV_MOUNT"; then
    log "KV already mounted at $KV_MOUNT/"
else
    api POST "sys/mounts/$KV_MOUNT" '{"type":"kv","options":{"version":"2"}}' >/dev/null
    log "mounted KV v2 at $KV_MOUNT/"
fi
api POST "$KV_MOUNT/data/app/config" '{"data":{"api_key":"sample-not-a-secret","feature_flag":"on"}}' >/dev/null
log "wrote sample secret $KV_MOUNT/app/config"

# --- policy ----------------------------------------------------------------------------------
policy=$(cat <<HCL
# vault-rotator: what the agent needs, nothing more.
path "$DB_MOUNT/creds/app" {
  capabilities = ["read"]
}
path "$DB_MOUNT/static-creds/app-static" {
  capabilities = ["read"]
}
path "$DB_MOUNT/rotate-role/app-static" {
  capabilities = ["update"]
}
path "$KV_MOUNT/data/app/*" {
  capabilities = ["read"]
}
path "$KV_MOUNT/metadata/app/*" {
  capabilities = ["read", "list"]
}
path "sys/leases/renew" {
  capabilities = ["update"]
}
path "sys/leases/revoke" {
  capabilities = ["update"]
}
path "auth/token/renew-self" {
  capabilities = ["update"]
}
path "auth/token/lookup-self" {
  capabilities = ["read"]
}
HCL
)
api PUT "sys/policies/acl/app" "$(jq -n --arg p "$policy" '{policy: $p}')" >/dev/null
log "policy app"

# --- AppRole -------------------------------------------------------------------------------
if mounted auth "$APPROLE_MOUNT"; then
    log "approle already enabled at auth/$APPROLE_MOUNT/"
else
    api POST "sys/auth/$APPROLE_MOUNT" '{"type":"approle"}' >/dev/null
    log "enabled approle at auth/$APPROLE_MOUNT/"
fi
api POST "auth/$APPROLE_MOUNT/role/app" "$(jq -n --arg ttl "$APPROLE_TOKEN_TTL" --arg max "$APPROLE_TOKEN_MAX_TTL" \
    '{token_policies: ["app"], token_ttl: $ttl, token_max_ttl: $max, bind_secret_id: true}')" >/dev/null
role_id=$(api GET "auth/$APPROLE_MOUNT/role/app/role-id" | jq -r .data.role_id)
log "approle role app (role_id $role_id); issue a secret id with:"
log "  curl -X POST -H \"X-Vault-Token: \$VAULT_TOKEN\" \$VAULT_ADDR/v1/auth/$APPROLE_MOUNT/role/app/secret-id"

# --- Kubernetes auth -----------------------------------------------------------------------
if [ -n "${K8S_PEM_KEYS_FILE:-}" ]; then
    [ -r "$K8S_PEM_KEYS_FILE" ] || { echo "setup-vault: cannot read K8S_PEM_KEYS_FILE=$K8S_PEM_KEYS_FILE" >&2; exit 1; }
    if mounted auth "$K8S_MOUNT"; then
        log "kubernetes auth already enabled at auth/$K8S_MOUNT/"
    else
        api POST "sys/auth/$K8S_MOUNT" '{"type":"kubernetes"}' >/dev/null
        log "enabled kubernetes auth at auth/$K8S_MOUNT/"
    fi
    case "$K8S_DISABLE_LOCAL_CA_JWT" in
        true|false) ;;
        *) echo "setup-vault: K8S_DISABLE_LOCAL_CA_JWT must be true or false" >&2; exit 1 ;;
    esac
    ca_cert=""
    if [ -n "${K8S_CA_CERT_FILE:-}" ]; then
        [ -r "$K8S_CA_CERT_FILE" ] || { echo "setup-vault: cannot read K8S_CA_CERT_FILE=$K8S_CA_CERT_FILE" >&2; exit 1; }
        ca_cert=$(cat "$K8S_CA_CERT_FILE")
    fi
    # Optional fields are sent only when set, so the default request is the same as before.
    api POST "auth/$K8S_MOUNT/config" "$(jq -n --arg host "$K8S_HOST" --rawfile pem "$K8S_PEM_KEYS_FILE" \
        --argjson nolocal "$K8S_DISABLE_LOCAL_CA_JWT" --arg ca "$ca_cert" \
        '{kubernetes_host: $host, pem_keys: [$pem]}
         + (if $nolocal then {disable_local_ca_jwt: true} else {} end)
         + (if $ca != "" then {kubernetes_ca_cert: $ca} else {} end)')" >/dev/null
    api POST "auth/$K8S_MOUNT/role/app" "$(jq -n --arg sa "$K8S_SA_NAME" --arg ns "$K8S_SA_NAMESPACE" \
        --arg ttl "$APPROLE_TOKEN_TTL" --arg max "$APPROLE_TOKEN_MAX_TTL" --arg aud "$K8S_AUDIENCE" \
        '{bound_service_account_names: [$sa], bound_service_account_namespaces: [$ns],
          audience: $aud, token_policies: ["app"], token_ttl: $ttl, token_max_ttl: $max}')" >/dev/null
    log "kubernetes role app bound to $K8S_SA_NAMESPACE/$K8S_SA_NAME"
else
    log "K8S_PEM_KEYS_FILE not set: skipping kubernetes auth"
fi

log "done"
