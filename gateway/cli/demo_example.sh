.venv/bin/gateway partner query --client-file var/demo-clients/police-prevention.json \
  --officer pc-4471 --case-reference CASE-2026-0001 \
  --query '{ people(first: 3) { edges { node { ref givenName familyName dateOfBirth postcode } } } }'
