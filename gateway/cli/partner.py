"""`gateway partner token|query|batch`: a reference partner client, so that an integrator sees one working.

From a client file it authenticates with `private_key_jwt` (a fresh assertion for each request, as
RFC 7523 wants them single-use), proves possession of its DPoP key (answering `use_dpop_nonce` by
trying once more with the nonce it was given), exchanges an officer's token for a gateway token where
the agreement wants a verified officer (RFC 8693), and sends one GraphQL operation. It talks to the
gateway over HTTP only, as a partner's system would; it shares no code with the server's checks. `batch`
uploads a file of reports and follows its job to the end.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import time
from pathlib import Path
from typing import Any, Final

import click
import httpx
from joserfc import jwt

from gateway.cli.client_files import ClientFile, read_client_file
from gateway.cli.support import fail
from gateway.oauth import make_proof

ASSERTION_TYPE: Final = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
TOKEN_EXCHANGE: Final = "urn:ietf:params:oauth:grant-type:token-exchange"  # noqa: S105 - a URN
JWT_TOKEN_TYPE: Final = "urn:ietf:params:oauth:token-type:jwt"  # noqa: S105


class PartnerClient:
    def __init__(self, client: ClientFile, http: httpx.Client) -> None:
        self._client = client
        self._http = http
        self._nonce: str | None = None

    def token(self, *, subject_token: str | None = None) -> dict[str, Any]:
        """A gateway access token: client credentials, or an exchange of an officer's token."""
        for attempt in (1, 2):
            form: dict[str, str] = {"grant_type": "client_credentials"}
            if subject_token is not None:
                form = {
                    "grant_type": TOKEN_EXCHANGE,
                    "subject_token": subject_token,
                    "subject_token_type": JWT_TOKEN_TYPE,
                }
            headers = {
                "DPoP": make_proof(
                    self._client.dpop_key, method="POST", url=self._client.token_endpoint, nonce=self._nonce
                )
            }
            auth: httpx.BasicAuth | None = None
            if self._client.key is not None:
                form |= {"client_assertion_type": ASSERTION_TYPE, "client_assertion": self._assertion()}
            elif self._client.client_secret is not None:
                auth = httpx.BasicAuth(self._client.client_id, self._client.client_secret)
            response = self._http.post(
                self._client.token_endpoint, data=form, headers=headers, auth=auth or httpx.USE_CLIENT_DEFAULT
            )
            self._nonce = response.headers.get("DPoP-Nonce", self._nonce)
            body = _json(response)
            if response.status_code == 400 and body.get("error") == "use_dpop_nonce" and attempt == 1:
                continue
            if response.status_code != 200:
                raise PartnerError(
                    f"the token endpoint answered {response.status_code}: {body.get('error')}: "
                    f"{body.get('error_description')}"
                )
            return body
        raise PartnerError("the token endpoint kept asking for a new DPoP nonce")

    def query(
        self,
        document: str,
        variables: dict[str, Any] | None,
        *,
        token: dict[str, Any],
        headers: dict[str, str] | None = None,
    ) -> httpx.Response:
        body: dict[str, Any] = {"query": document}
        if variables:
            body["variables"] = variables
        content = json.dumps(body).encode()
        sent = {"Content-Type": "application/json", **(headers or {})}
        return self.send("POST", self._client.graphql_endpoint, token=token, content=content, headers=sent)

    def send(
        self,
        method: str,
        url: str,
        *,
        token: dict[str, Any],
        content: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> httpx.Response:
        """One request to the gateway with the token (and a DPoP proof for `url`, where it is bound)."""
        access_token = token["access_token"]
        for attempt in (1, 2):
            sent = dict(headers or {})
            if token.get("token_type") == "DPoP":
                sent["Authorization"] = f"DPoP {access_token}"
                sent["DPoP"] = make_proof(
                    self._client.dpop_key,
                    method=method,
                    url=url,
                    access_token=access_token,
                    nonce=self._nonce,
                )
            else:
                sent["Authorization"] = f"Bearer {access_token}"
            response = self._http.request(method, url, content=content, headers=sent)
            self._nonce = response.headers.get("DPoP-Nonce", self._nonce)
            if (
                response.status_code == 401
                and 'error="use_dpop_nonce"' in response.headers.get("WWW-Authenticate", "")
                and attempt == 1
            ):
                continue
            return response
        return response

    def _assertion(self) -> str:
        key = self._client.key
        assert key is not None
        now = int(time.time())
        claims = {
            "iss": self._client.client_id,
            "sub": self._client.client_id,
            "aud": self._client.token_endpoint,
            "iat": now,
            "exp": now + 60,
            "jti": secrets.token_urlsafe(16),
        }
        return jwt.encode({"alg": "ES256", "kid": key.kid, "typ": "JWT"}, claims, key, algorithms=["ES256"])


class PartnerError(Exception):
    pass


def _json(response: httpx.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


_client_file = click.option(
    "--client-file",
    type=click.Path(path_type=Path),
    required=True,
    help="As `gateway clients add` writes it.",
)
_officer = click.option(
    "--officer",
    default=None,
    help="Demo only: mint the officer's token with the client file's stand-in issuer.",
)
_subject = click.option(
    "--subject-token-file",
    type=click.Path(path_type=Path),
    default=None,
    help="The officer's token from the partner's identity provider, to exchange (RFC 8693).",
)


@click.group(help="A reference partner client: private_key_jwt, DPoP and token exchange, from a client file.")
def partner() -> None:
    pass


@partner.command("token", help="Get an access token; prints the token response as JSON.")
@_client_file
@_officer
@_subject
def partner_token(client_file: Path, officer: str | None, subject_token_file: Path | None) -> None:
    client = read_client_file(client_file)
    with _gateway(client) as http:
        click.echo(
            json.dumps(_token(PartnerClient(client, http), client, officer, subject_token_file), indent=2)
        )


@partner.command("query", help="Get a token and send one GraphQL operation; prints the answer as JSON.")
@_client_file
@click.option("--query", "document", default=None, help="The GraphQL document.")
@click.option("--query-file", type=click.Path(path_type=Path), default=None)
@click.option("--variables", default=None, help="Variables, as a JSON object.")
@_officer
@_subject
@click.option("--case-reference", default=None)
@click.option("--acting-user", default=None, help="Only where the agreement takes an asserted officer.")
def partner_query(
    client_file: Path,
    document: str | None,
    query_file: Path | None,
    variables: str | None,
    officer: str | None,
    subject_token_file: Path | None,
    case_reference: str | None,
    acting_user: str | None,
) -> None:
    if (document is None) == (query_file is None):
        fail("give the operation once: --query or --query-file")
    text = document if document is not None else _read(query_file)
    parsed = None
    if variables is not None:
        try:
            parsed = json.loads(variables)
        except ValueError:
            fail("--variables must be a JSON object")
        if not isinstance(parsed, dict):
            fail("--variables must be a JSON object")
    client = read_client_file(client_file)
    headers = _purpose(case_reference, acting_user)
    with _gateway(client) as http:
        partner_client = PartnerClient(client, http)
        token = _token(partner_client, client, officer, subject_token_file)
        try:
            response = partner_client.query(text, parsed, token=token, headers=headers)
        except httpx.HTTPError as error:
            fail(f"cannot reach {client.graphql_endpoint} ({type(error).__name__})")
    click.echo(json.dumps(_json(response), indent=2))
    if response.status_code >= 400:
        errors = _json(response).get("errors") or [{}]
        code = errors[0].get("extensions", {}).get("code", "")
        fail(f"the gateway answered {response.status_code} {code}: {errors[0].get('message', '')}")


@partner.command(
    "batch",
    help="Upload a batch of reports (NDJSON or CSV) and follow its job to the end; prints the job as JSON, "
    "and with --results each row's result.",
)
@_client_file
@click.argument("batch_file", type=click.Path(path_type=Path))
@click.option("--key", default=None, help="The upload's Idempotency-Key (default: from its content).")
@click.option("--results", "show_results", is_flag=True, help="Print each row's result (NDJSON) too.")
@_officer
@_subject
@click.option("--case-reference", default=None)
@click.option("--acting-user", default=None, help="Only where the agreement takes an asserted officer.")
def partner_batch(
    client_file: Path,
    batch_file: Path,
    key: str | None,
    show_results: bool,
    officer: str | None,
    subject_token_file: Path | None,
    case_reference: str | None,
    acting_user: str | None,
) -> None:
    try:
        content = batch_file.read_bytes()
    except OSError as error:
        fail(f"cannot read {batch_file} ({error.strerror or type(error).__name__})")
    media = "text/csv" if batch_file.suffix.lower() == ".csv" else "application/x-ndjson"
    # The same file sent again is the same job: its key is its content's, unless one is given.
    key = key or "file-" + hashlib.sha256(content).hexdigest()[:40]
    client = read_client_file(client_file)
    base = client.issuer + "/batches"
    headers = _purpose(case_reference, acting_user)
    with _gateway(client) as http:
        partner_client = PartnerClient(client, http)
        token = _token(partner_client, client, officer, subject_token_file)
        try:
            answered = partner_client.send(
                "POST", base, token=token, content=content,
                headers={**headers, "Content-Type": media, "Idempotency-Key": key},
            )  # fmt: skip
            job = _answered(answered)
            while job.get("state") in ("received", "running", "sealing"):
                time.sleep(0.5)
                job = _answered(
                    partner_client.send("GET", f"{base}/{job['id']}", token=token, headers=headers)
                )
                click.echo(
                    f"{job['state']}: {job['processed']} of {job['rows']} rows ({job['percent']}%)", err=True
                )
            results = (
                partner_client.send("GET", f"{base}/{job['id']}/results", token=token, headers=headers).text
                if show_results
                else ""
            )
        except httpx.HTTPError as error:
            fail(f"cannot reach {base} ({type(error).__name__})")
    click.echo(json.dumps(job, indent=2))
    if results:
        click.echo(results, nl=False)


def _purpose(case_reference: str | None, acting_user: str | None) -> dict[str, str]:
    pairs = (("X-Case-Reference", case_reference), ("X-Acting-User", acting_user))
    return {name: value for name, value in pairs if value}


def _answered(response: httpx.Response) -> dict[str, Any]:
    body = _json(response)
    if response.status_code >= 400:
        errors = body.get("errors") or [{}]
        code = errors[0].get("extensions", {}).get("code", "")
        fail(f"the gateway answered {response.status_code} {code}: {errors[0].get('message', '')}")
    return body


@partner.command(
    "officer-token",
    help="Demo only: print an officer's token from the client file's stand-in identity provider, as the "
    "partner's own provider would issue it, for a client of your own to exchange.",
)
@_client_file
@click.option("--officer", required=True, help="The officer the token names.")
def partner_officer_token(client_file: Path, officer: str) -> None:
    click.echo(read_client_file(client_file).officer_token(officer))


def _token(
    client: PartnerClient, file: ClientFile, officer: str | None, subject_token_file: Path | None
) -> dict[str, Any]:
    if officer is not None and subject_token_file is not None:
        fail("name the officer once: --officer (demo) or --subject-token-file")
    subject = None
    if officer is not None:
        subject = file.officer_token(officer)
    elif subject_token_file is not None:
        subject = _read(subject_token_file).strip()
    try:
        return client.token(subject_token=subject)
    except PartnerError as error:
        fail(str(error))
    except httpx.HTTPError as error:
        fail(f"cannot reach {file.token_endpoint} ({type(error).__name__})")


def _gateway(client: ClientFile) -> httpx.Client:
    return httpx.Client(timeout=30, follow_redirects=False)


def _read(path: Path | None) -> str:
    assert path is not None
    try:
        return path.read_text(encoding="utf-8")
    except OSError as error:
        fail(f"cannot read {path} ({error.strerror or type(error).__name__})")
