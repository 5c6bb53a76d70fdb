"""The gateway: the only layer that knows about HTTP. Imports from `schema`, `resolvers` and `policies`.

Read it top down: `cli/` (the `gateway` command) <- `app` (the composition root) <- the endpoints
(`routes`, `graphql`) <- the subsystems (`oauth/`, `audit/`) <- what they all stand on (`config`, `db`,
`http`, `keys`, `telemetry`, `logs`, `migrations/`). Imports point down that list only, with no cycle
(`.ci/check_layers.py`).
"""

from gateway.app import Gateway, create_app
from gateway.config import Settings

__all__ = ["Gateway", "Settings", "create_app"]
