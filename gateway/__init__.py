"""The gateway: ASGI app, OAuth server and token checks, configuration and CLI.

The only layer that knows about HTTP. Imports from `schema`, `resolvers` and `policies`.
"""

from gateway.app import Gateway, create_app
from gateway.config import Settings

__all__ = ["Gateway", "Settings", "create_app"]
