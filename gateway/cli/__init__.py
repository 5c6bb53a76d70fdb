"""The `gateway` command line: one module per command group, assembled in `main`.

Owns the commands (`database`, `clients`, `policies`, `schema`, `keys`, `serve`, `demo`, `audit`)
and what they share (`support`: settings with clear errors, one `error:` line on failure).

May import anything in `gateway/` and the layers below it; nothing in the gateway imports the CLI.
"""

from gateway.cli.main import main

__all__ = ["main"]
