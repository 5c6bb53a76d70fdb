"""deploy/compose.yaml and the files it mounts: HAProxy's config, the collector's, PostgreSQL's init.

Read as compose reads it (YAML merge keys applied). Nothing here starts a container
(test_compose_on_postgres.py runs the roles script and compose's settings outside Docker).
"""

from __future__ import annotations

import ipaddress
import os
import re
import shutil
import subprocess
from typing import Any

import pytest

from tests.deploy import dockerfile
from tests.deploy.manifests import DEPLOY, compose, documents

GATEWAYS = ["gateway-1", "gateway-2"]


@pytest.fixture(scope="module")
def services() -> dict[str, Any]:
    return compose()["services"]


def _env(service: dict[str, Any]) -> dict[str, str]:
    environment = service["environment"]
    assert isinstance(environment, dict), "environment as a mapping"
    return {k: str(v) for k, v in environment.items()}


def _url_user(url: str) -> str:
    return url.split("://", 1)[1].split(":", 1)[0]


def test_every_service_is_there(services: dict[str, Any]) -> None:
    assert set(services) == {
        "postgres",
        "redis",
        "migrate",
        *GATEWAYS,
        "proxy",
        "retention",
        "otel-collector",
        "jaeger",
    }
    assert services["postgres"]["image"] == "postgres:15"
    assert services["retention"]["profiles"] == ["maintenance"], "run by hand, not by `up`"


def test_only_the_proxy_and_the_jaeger_ui_are_published_on_loopback(services: dict[str, Any]) -> None:
    published = {name: s["ports"] for name, s in services.items() if "ports" in s}
    assert published == {"proxy": ["127.0.0.1:8000:8000"], "jaeger": ["127.0.0.1:16686:16686"]}


def test_gateways_connect_as_the_app_role_and_migrations_as_the_migrator(services: dict[str, Any]) -> None:
    for name in GATEWAYS:
        env = _env(services[name])
        assert _url_user(env["GATEWAY_DATABASE_URL"]) == "gateway_app", name
        assert "GATEWAY_DB_APP_ROLE" not in env
    migrate = _env(services["migrate"])
    assert _url_user(migrate["GATEWAY_DATABASE_URL"]) == "gateway_migrator"
    assert migrate["GATEWAY_DB_APP_ROLE"] == "gateway_app"
    assert services["migrate"]["command"] == ["db", "upgrade"]
    retention = _env(services["retention"])
    assert _url_user(retention["GATEWAY_DATABASE_URL"]) == "gateway_migrator"
    assert services["retention"]["command"] == ["audit", "retention"]
    assert set(services["retention"]["secrets"]) == {"signing_key", "ref_secret"}
    for url in (migrate["GATEWAY_DATABASE_URL"], _env(services["gateway-1"])["GATEWAY_DATABASE_URL"]):
        assert url.startswith("postgresql+asyncpg://") and "@postgres:5432/gateway" in url


def test_two_gateways_with_workers_redis_and_the_collector(services: dict[str, Any]) -> None:
    first, second = (services[name] for name in GATEWAYS)
    assert first == second, "the two gateways differ only in name"
    env = _env(first)
    assert int(env["GATEWAY_WORKERS"]) > 1
    assert env["GATEWAY_REDIS_URL"] == "redis://redis:6379/0"
    assert env["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://otel-collector:4318"
    assert first["depends_on"]["migrate"] == {"condition": "service_completed_successfully"}
    assert first["depends_on"]["redis"] == {"condition": "service_healthy"}
    assert "witness:/var/lib/gateway/witness" in first["volumes"]


def test_gateways_and_one_shots_are_hardened(services: dict[str, Any]) -> None:
    for name in [*GATEWAYS, "migrate", "retention", "proxy"]:
        service = services[name]
        assert service["read_only"] is True, name
        assert service["tmpfs"] == ["/tmp"], name  # noqa: S108 (the container's own /tmp, in memory)
        assert service["cap_drop"] == ["ALL"], name
        assert "no-new-privileges:true" in service["security_opt"], name
    for name in [*GATEWAYS, "migrate", "retention"]:
        assert services[name]["build"] == {"context": "..", "dockerfile": "deploy/Dockerfile"}


def test_gateway_healthcheck_is_the_images_readyz_check(services: dict[str, Any]) -> None:
    _, image_check = dockerfile.healthcheck(dockerfile.parse()[-1])
    for name in GATEWAYS:
        assert services[name]["healthcheck"]["test"] == ["CMD", *image_check]
    assert "/readyz" in image_check[-1]
    assert services["migrate"]["healthcheck"] == {"disable": True}


def test_proxy_waits_for_healthy_gateways_and_alone_is_trusted(services: dict[str, Any]) -> None:
    proxy = services["proxy"]
    assert proxy["depends_on"] == {name: {"condition": "service_healthy"} for name in GATEWAYS}
    address = ipaddress.ip_address(proxy["networks"]["edge"]["ipv4_address"])
    [subnet] = [ipaddress.ip_network(c["subnet"]) for c in compose()["networks"]["edge"]["ipam"]["config"]]
    assert address in subnet
    for name in GATEWAYS:
        trusted = [
            ipaddress.ip_network(n) for n in _env(services[name])["GATEWAY_TRUSTED_PROXIES"].split(",")
        ]
        assert trusted == [ipaddress.ip_network(f"{address}/32")], name
        assert "edge" in services[name]["networks"]
    # Nobody else sits on the network whose traffic the gateways see forwarded.
    on_edge = {name for name, s in services.items() if "edge" in (s.get("networks") or [])}
    assert on_edge == {"proxy", *GATEWAYS}


def test_backend_network_has_no_way_out(services: dict[str, Any]) -> None:
    assert compose()["networks"]["backend"] == {"internal": True}
    for name in ["postgres", "redis", "migrate", "retention"]:
        assert services[name]["networks"] == ["backend"], name


def _haproxy() -> str:
    return (DEPLOY / "haproxy.cfg").read_text(encoding="utf-8")


def test_haproxy_balances_the_two_gateways_on_readyz() -> None:
    config = _haproxy()
    servers = re.findall(r"^\s*server (\S+) (\S+):(\d+) check$", config, re.MULTILINE)
    assert servers == [(name, name, "8000") for name in GATEWAYS]
    assert re.search(r"^\s*http-check send meth GET uri /readyz$", config, re.MULTILINE)
    assert re.search(r"^\s*http-check expect status 200$", config, re.MULTILINE)
    assert re.search(r"^\s*bind :8000$", config, re.MULTILINE)


def test_haproxy_replaces_x_forwarded_for_and_hides_metrics() -> None:
    lines = [line.strip() for line in _haproxy().splitlines()]
    deleted = lines.index("http-request del-header X-Forwarded-For")
    assert lines.index("option forwardfor") > deleted, "the caller's header is dropped, then ours is added"
    assert any(line.startswith("http-request deny") and "/metrics" in line for line in lines)
    [log_format] = [line for line in lines if line.startswith("log-format")]
    assert not re.search(r"%(r|HU|HQ)\b", log_format), "no URL, no query string in the proxy's log"


def test_haproxy_accepts_its_config() -> None:
    haproxy = shutil.which("haproxy")
    if haproxy is None:
        pytest.skip("haproxy is not installed here (the config is checked by HAProxy only where it is)")
    done = subprocess.run([haproxy, "-c", "-f", str(DEPLOY / "haproxy.cfg")], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_collector_sends_traces_to_jaeger(services: dict[str, Any]) -> None:
    [config] = documents(DEPLOY / "otel-collector.yaml")
    pipelines = config["service"]["pipelines"]
    for pipeline in pipelines.values():
        for kind in ("receivers", "processors", "exporters"):
            assert set(pipeline[kind]) <= set(config[kind]), f"{kind} used but not defined"
    assert "attributes/no-urls" in pipelines["traces"]["processors"]
    [exporter] = pipelines["traces"]["exporters"]
    host, port = config["exporters"][exporter]["endpoint"].split(":")
    assert host == "jaeger" and port == "4317"
    assert config["receivers"]["otlp"]["protocols"]["http"]["endpoint"].endswith(":4318")
    # The collector reaches Jaeger on a network they share, and the gateways reach the collector.
    collector_networks = set(services["otel-collector"]["networks"])
    assert collector_networks & set(services["jaeger"]["networks"])
    assert collector_networks & set(services["gateway-1"]["networks"])
    mounted = "./otel-collector.yaml:/etc/otelcol/config.yaml:ro"
    assert mounted in services["otel-collector"]["volumes"]


def test_postgres_runs_the_roles_script_with_both_passwords(services: dict[str, Any]) -> None:
    postgres = services["postgres"]
    assert "./postgres-init:/docker-entrypoint-initdb.d:ro" in postgres["volumes"]
    assert {"MIGRATOR_DB_PASSWORD", "APP_DB_PASSWORD", "POSTGRES_PASSWORD"} <= set(postgres["environment"])
    script = DEPLOY / "postgres-init" / "roles.sh"
    assert os.access(script, os.X_OK), "executable, so the image runs it rather than sourcing it"
    text = script.read_text(encoding="utf-8")
    assert 'migrator_role="${MIGRATOR_DB_ROLE:-gateway_migrator}"' in text
    assert 'app_role="${APP_DB_ROLE:-gateway_app}"' in text
    # The passwords in compose's URLs are the ones the script gives the roles.
    gateway_url = _env(services["gateway-1"])["GATEWAY_DATABASE_URL"]
    migrate_url = _env(services["migrate"])["GATEWAY_DATABASE_URL"]
    assert "gateway_app:${APP_DB_PASSWORD:?" in gateway_url
    assert "gateway_migrator:${MIGRATOR_DB_PASSWORD:?" in migrate_url
