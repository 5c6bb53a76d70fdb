"""`gateway keys generate|public`: the token-signing key and the ref secret."""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta

import click

from gateway.cli.support import fail, load_settings
from gateway.config import Settings
from gateway.keys import (
    SIGNS_AFTER,
    SigningKeyError,
    archive_directory,
    generate_key,
    load_key_file,
    rotate_key_file,
    signing_keys,
    write_key_file,
)


@click.group(help="Signing key and ref secret.")
def keys() -> None:
    pass


@keys.command("generate", help="Create the signing key file and the ref secret file (never overwrites).")
def keys_generate() -> None:
    settings = load_settings()
    created = ensure_secrets(settings)
    click.echo(f"created: {', '.join(created) or 'nothing (both exist)'}")


@keys.command(
    "rotate",
    help="Put a new signing key first. Running gateways publish it at once and sign with it from "
    "--signs-after later; the key it replaces then retires, keeps verifying tokens until they have all "
    "expired (15 minutes), and its public half is archived beside the key file for the ledger's checkpoints.",
)
@click.option(
    "--signs-after",
    type=click.IntRange(0, 3600),
    default=int(SIGNS_AFTER.total_seconds()),
    show_default=True,
    help="Seconds before the new key signs: longer than it takes the file to reach every process "
    "(a Kubernetes Secret can take a minute or two).",
)
def keys_rotate(signs_after: int) -> None:
    settings = load_settings()
    if settings.signing_keys is not None:
        fail("the keys come from GATEWAY_SIGNING_KEYS: rotate them where that value is kept")
    if not settings.signing_key_file.is_file():
        fail(f"no signing key file at {settings.signing_key_file}: run `gateway keys generate`")
    try:
        previous = load_key_file(settings.signing_key_file).active.kid
        fresh, starts, dropped = rotate_key_file(
            settings.signing_key_file, signs_after=timedelta(seconds=signs_after)
        )
    except SigningKeyError as error:
        fail(str(error))
    archive = archive_directory(settings.signing_key_file)
    click.echo(
        f"{fresh.kid} signs from {starts.isoformat(timespec='seconds')}, when {previous} retires "
        f"(its public half is in {archive})"
    )
    if dropped:
        click.echo(f"removed the private halves of keys retired long enough: {', '.join(dropped)}")
    click.echo("running gateways read the key file every few seconds: no restart is needed")


@keys.command("public", help="Print the public keys (JWKS): archive them before retiring a key.")
def keys_public() -> None:
    settings = load_settings()
    try:
        signing = signing_keys(settings)
    except SigningKeyError as error:
        fail(str(error))
    click.echo(json.dumps(signing.public_jwks, indent=2))


def ensure_secrets(settings: Settings) -> list[str]:
    """Create whichever of the signing key file and the ref secret file is missing; never overwrite."""
    created = []
    for variable, path in (
        ("GATEWAY_SIGNING_KEY_FILE", settings.signing_key_file),
        ("GATEWAY_REF_SECRET_FILE", settings.ref_secret_file),
    ):
        if path.exists() and not path.is_file():
            fail(f"{variable}: {path} is not a file")
    if not settings.signing_key_file.exists():
        with _writing("GATEWAY_SIGNING_KEY_FILE"):
            write_key_file(settings.signing_key_file, [generate_key()])
        created.append(str(settings.signing_key_file))
    if settings.ref_secret is None and not settings.ref_secret_file.exists():
        with _writing("GATEWAY_REF_SECRET_FILE"):
            settings.ref_secret_file.parent.mkdir(parents=True, exist_ok=True)
            settings.ref_secret_file.write_text(secrets.token_urlsafe(48) + "\n", encoding="utf-8")
            settings.ref_secret_file.chmod(0o600)
        created.append(str(settings.ref_secret_file))
    return created


@contextmanager
def _writing(variable: str) -> Iterator[None]:
    try:
        yield
    except OSError as error:
        fail(f"{variable}: cannot write there ({error.strerror or type(error).__name__}: {error.filename})")
