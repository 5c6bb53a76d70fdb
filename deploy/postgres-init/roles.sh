#!/usr/bin/env bash
# Creates the gateway's two database roles, the first time the postgres image initialises an empty
# data directory (it runs every script in /docker-entrypoint-initdb.d, as the superuser, over its
# socket). The same grants as `gateway db roles --print-sql` (tests/deploy compares the two), with
# passwords set:
#
#   gateway_migrator  owns the tables and triggers: `gateway db upgrade`, `gateway audit retention`
#   gateway_app       what the running gateways connect as; `gateway db upgrade` grants it, table by
#                     table, SELECT and INSERT on the ledger and what else it needs, and no more
#
# Passwords come from MIGRATOR_DB_PASSWORD and APP_DB_PASSWORD (deploy/compose.yaml). Role names
# may be changed with MIGRATOR_DB_ROLE and APP_DB_ROLE (then change the URLs in compose.yaml too).
# A data directory initialised before this script existed is not touched: see deploy/README.md.
set -eo pipefail   # not -u: the image sources a script that lost its execute bit

migrator_role="${MIGRATOR_DB_ROLE:-gateway_migrator}"
app_role="${APP_DB_ROLE:-gateway_app}"
: "${MIGRATOR_DB_PASSWORD:?MIGRATOR_DB_PASSWORD is not set}"
: "${APP_DB_PASSWORD:?APP_DB_PASSWORD is not set}"

# psql quotes :"name" as an identifier and :'value' as a literal, so no value is pasted into SQL text.
psql --no-psqlrc --set ON_ERROR_STOP=1 \
    --username "${POSTGRES_USER:-postgres}" --dbname "${POSTGRES_DB:-postgres}" \
    --set migrator_role="$migrator_role" --set app_role="$app_role" \
    --set migrator_password="$MIGRATOR_DB_PASSWORD" --set app_password="$APP_DB_PASSWORD" <<'SQL'
CREATE ROLE :"migrator_role" LOGIN PASSWORD :'migrator_password';
CREATE ROLE :"app_role" LOGIN PASSWORD :'app_password';
SELECT format('REVOKE ALL ON DATABASE %I FROM PUBLIC', current_database()) \gexec
SELECT format('GRANT CONNECT, TEMPORARY ON DATABASE %I TO %I', current_database(), :'migrator_role') \gexec
SELECT format('GRANT CONNECT ON DATABASE %I TO %I', current_database(), :'app_role') \gexec
REVOKE CREATE ON SCHEMA public FROM PUBLIC;
GRANT USAGE, CREATE ON SCHEMA public TO :"migrator_role";
GRANT USAGE ON SCHEMA public TO :"app_role";
SQL
