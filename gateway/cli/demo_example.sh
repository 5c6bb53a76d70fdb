CLIENT_ID=$(python3 -c 'import json; print(json.load(open("var/demo-clients.json"))["police-prevention"]["client_id"])')
CLIENT_SECRET=$(python3 -c 'import json; print(json.load(open("var/demo-clients.json"))["police-prevention"]["client_secret"])')
TOKEN=$(curl -s -u "$CLIENT_ID:$CLIENT_SECRET" -d grant_type=client_credentials {base}/oauth/token \
  | python3 -c 'import json, sys; print(json.load(sys.stdin)["access_token"])')
curl -s {base}/graphql -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/json' \
  -H 'X-Acting-User: pc-4471' -H 'X-Case-Reference: CASE-2026-0001' \
  -d '{"query": "{ people(first: 3) { edges { node { ref givenName familyName dateOfBirth postcode withheld } } } }"}'
