#!/usr/bin/env bash
# Remake the sample packs in this folder from a fresh demo population (synthetic people only):
# serves the demo on 127.0.0.1:${PORT:-8765} in a scratch directory, has four partners read, records a
# subject's requests (access; a postcode corrected, told to its past recipients; an objection to public
# health) and a DWP report about them, then writes the subject access pack, two evidence packs, a retention
# dry run and the explanation of their family's eligibility here. Run: make samples
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
bin="$(cd "$here/../.." && pwd)/.venv/bin"
docs="$here/../../gateway/cli/demo_documents"
port="${PORT:-8765}"
scratch="$(mktemp -d)"
cd "$scratch"
export GATEWAY_ISSUER="http://127.0.0.1:$port"
"$bin/gateway" demo --port "$port" > demo.log 2>&1 &
server=$!
trap 'kill $server 2>/dev/null; wait $server 2>/dev/null || true; rm -rf "$scratch"' EXIT
for _ in $(seq 1 120); do curl -sf "http://127.0.0.1:$port/livez" > /dev/null && break; sleep 1; done
ask() { "$bin/gateway" partner query --client-file "var/demo-clients/$1.json" "${@:2}" > /dev/null; }
ask police-prevention --officer pc-4471 --case-reference CASE-2026-0001 \
  --query '{ people(first: 3) { edges { node { ref givenName familyName dateOfBirth postcode } } } }'
ask ons-evaluation --query-file "$docs/ons-evaluation/page.graphql" --variables '{"first": 5}'
ask dwp-worklessness --query-file "$docs/dwp-worklessness/page.graphql" --variables '{"first": 5}'
ask public-health-planning --query-file "$docs/public-health-planning/page.graphql" --variables '{"first": 5}'
ask public-health-planning --query-file "$docs/public-health-planning/counts.graphql"
# The person the most partners received: the subject of the sample.
person=$(python3 -c "
import sqlite3
print(sqlite3.connect('var/gateway.db').execute('''SELECT d.person_id FROM audit_disclosures d
  JOIN audit_events e ON e.id = d.event_id GROUP BY d.person_id
  ORDER BY count(DISTINCT e.agreement_id) DESC, d.person_id LIMIT 1''').fetchone()[0])")
who=(--acting-user dpo@council.example --case-reference SAR-2026-0042)
"$bin/gateway" rights record "$person" --kind access --basis "UK GDPR Art 15" "${who[@]}" > /dev/null
request=$("$bin/gateway" rights record "$person" --kind rectification --basis "UK GDPR Art 16" "${who[@]}" | cut -d' ' -f1)
"$bin/gateway" rights close "$request" --outcome completed --note "postcode corrected in the case system" \
  --changed postcode "${who[@]}"
"$bin/gateway" rights record "$person" --kind objection --agreement public-health-planning \
  --basis "UK GDPR Art 21" "${who[@]}" > /dev/null
ask police-prevention --officer pc-4471 --case-reference CASE-2026-0002 --query-file "$docs/notifications.graphql"
# The DWP tells the council the person receives out-of-work benefits (by the DWP's own ref for them).
ref=$("$bin/python" -c "
from pathlib import Path
from resolvers import RefCodec, RefKind
print(RefCodec(Path('var/ref-secret').read_bytes().strip(), 'dwp-worklessness').encode(RefKind.PERSON, $person))")
ask dwp-worklessness --query-file "$docs/dwp-worklessness/report-benefits.graphql" \
  --variables "{\"ref\": \"$ref\", \"receiving\": true, \"asOf\": \"$(date -u +%Y-%m-01)\", \"key\": \"dwp-sample-0001\"}"
month_start="$(date -u +%Y-%m-01)"; today="$(date -u +%Y-%m-%d)"
"$bin/gateway" sar "$person" --format html "${who[@]}" > "$here/subject-access-pack.html"
for agreement in police-prevention public-health-planning; do
  "$bin/gateway" evidence "$agreement" --from "$month_start" --to "$today" --format html "${who[@]}" \
    > "$here/evidence-$agreement.html"
done
"$bin/gateway" retention run "${who[@]}" > "$here/retention-dry-run.txt"
"$bin/gateway" eligibility explain "$person" "${who[@]}" > "$here/eligibility-explained.txt"
echo "wrote the samples for person $person into $here"
