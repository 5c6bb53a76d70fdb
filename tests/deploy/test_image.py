"""The image: what deploy/Dockerfile says, its build steps run as a script, and, where a Docker engine
answers, the image built and run.

The build-steps test reads the Dockerfile rather than repeating it: it copies what the builder stage
COPYs, runs the builder stage's own `uv sync` commands with its ENV (paths moved from /app to a
temporary directory, the pinned uv from .tools/), keeps only the venv as the runtime stage does, and
from another directory runs ENTRYPOINT with `keys generate`, `db upgrade` (SQLite) and CMD, then the
HEALTHCHECK command against it.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import pytest

from tests.deploy import dockerfile
from tests.deploy.manifests import REPO
from tests.support.processes import free_port, running

UV = REPO / ".tools" / "bin" / "uv"


@pytest.fixture(scope="module")
def stages() -> list[dockerfile.Stage]:
    return dockerfile.parse()


@pytest.fixture(scope="module")
def builder(stages: list[dockerfile.Stage]) -> dockerfile.Stage:
    [stage] = [s for s in stages if s.name == "builder"]
    return stage


@pytest.fixture(scope="module")
def runtime(stages: list[dockerfile.Stage]) -> dockerfile.Stage:
    assert stages[-1].name == "runtime", "the last stage is the image"
    return stages[-1]


def test_two_stages_on_the_same_slim_python(stages: list[dockerfile.Stage]) -> None:
    assert [s.name for s in stages] == ["builder", "runtime"]
    assert {s.base for s in stages} == {"python:3.11-slim"}


def test_runtime_runs_as_10001_and_serves_on_8000(runtime: dockerfile.Stage) -> None:
    assert runtime.one("USER").arguments == "10001:10001"
    assert dockerfile.exec_form(runtime.one("ENTRYPOINT").arguments) == ["gateway"]
    assert dockerfile.exec_form(runtime.one("CMD").arguments) == [
        "serve",
        "--host",
        "0.0.0.0",  # noqa: S104 (inside the container: the published port decides who reaches it)
        "--port",
        "8000",
    ]
    assert runtime.one("EXPOSE").arguments == "8000"
    # Workers come from GATEWAY_WORKERS in the deployment's configuration, not from the image.
    assert "--workers" not in runtime.one("CMD").arguments


def test_runtime_takes_only_the_venv_from_the_builder(runtime: dockerfile.Stage) -> None:
    assert [c.arguments for c in runtime.all("COPY")] == ["--from=builder /app/.venv /app/.venv"]


def test_healthcheck_asks_readyz_with_python_not_curl(runtime: dockerfile.Stage) -> None:
    options, command = dockerfile.healthcheck(runtime)
    assert command[:2] == ["python", "-c"]
    assert "urllib.request.urlopen('http://127.0.0.1:8000/readyz'" in command[2]
    assert "curl" not in runtime.one("HEALTHCHECK").arguments
    # The command's own timeout is shorter than Docker's, so a hung request fails rather than hangs.
    assert f"timeout={int(options['timeout'].removesuffix('s')) - 1})" in command[2]


def test_uv_pinned_as_in_the_makefile(builder: dockerfile.Stage) -> None:
    makefile = (REPO / "Makefile").read_text(encoding="utf-8")
    pinned = re.search(r"^UV_VERSION := (\S+)$", makefile, re.MULTILINE)
    assert pinned is not None
    [install] = [r for r in builder.all("RUN") if "pip install" in r.arguments]
    assert f"uv=={pinned.group(1)}" in install.arguments.split()


def test_the_project_is_built_afresh_on_every_build(builder: dockerfile.Stage) -> None:
    """uv keys a local project's cached build on pyproject.toml alone, and the cache mount outlives builds:
    without a reinstall of the project, a rebuild installs the previous build's code."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]["name"]
    [sync] = [r for r in builder.all("RUN") if "--no-editable" in r.arguments]
    words = dockerfile.run_command(sync)
    assert words[words.index("--reinstall-package") + 1] == project


def _uv() -> Path:
    if UV.exists():
        return UV
    message = f"{UV.relative_to(REPO)} is missing: run `make install` first"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


def _clean_env() -> dict[str, str]:
    """This process's environment without the gateway's settings or the developer's venv."""
    return {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("GATEWAY_", "UV_", "OTEL_")) and k not in {"VIRTUAL_ENV", "PYTHONPATH"}
    }


def _moved(value: str, app: Path) -> str:
    return re.sub(r"(?<![\w.])/app(?=/|$|:)", str(app), value)


def _build_steps(builder: dockerfile.Stage, runtime: dockerfile.Stage, app: Path) -> dict[str, str]:
    """The builder stage's steps, then the runtime stage's COPY; returns the runtime stage's ENV."""
    env = _clean_env()
    workdir = None
    for step in builder.instructions:
        if step.keyword == "ENV":
            for key, value in dockerfile.env_pairs(step).items():
                # The image's /usr/local/bin/python3.11 is this machine's Python 3.11.
                env[key] = sys._base_executable if key == "UV_PYTHON" else _moved(value, app)
        elif step.keyword == "WORKDIR":
            assert step.arguments == "/app"
            workdir = app
            workdir.mkdir()
        elif step.keyword == "COPY":
            assert workdir is not None
            *sources, target = step.arguments.split()
            for source in sources:
                origin = REPO / source
                destination = workdir / target / (origin.name if target.endswith("/") else "")
                if origin.is_dir():
                    shutil.copytree(
                        origin,
                        workdir / target,
                        ignore=shutil.ignore_patterns("__pycache__"),  # as .dockerignore
                    )
                else:
                    shutil.copy2(origin, destination)
        elif step.keyword == "RUN":
            words = dockerfile.run_command(step)
            if words[:2] == ["pip", "install"]:
                # The uv the image installs is the one the Makefile pins, which is in .tools/.
                version = subprocess.run([_uv(), "--version"], capture_output=True, text=True, check=True)
                [pin] = [w for w in words if w.startswith("uv==")]
                assert version.stdout.split()[1] == pin.removeprefix("uv=="), version.stdout
                continue
            assert words[0] == "uv", f"a RUN this test does not know how to run: {step.arguments}"
            assert workdir is not None
            done = subprocess.run(
                [str(_uv()), *words[1:]], cwd=workdir, env=env, capture_output=True, text=True, timeout=300
            )
            assert done.returncode == 0, done.stderr
        else:
            pytest.fail(f"builder step this test does not know: {step.keyword} {step.arguments}")

    # Runtime: COPY --from=builder /app/.venv /app/.venv, and nothing else of the builder's tree.
    for entry in app.iterdir():
        if entry.name != ".venv":
            shutil.rmtree(entry) if entry.is_dir() else entry.unlink()
    runtime_env = _clean_env()
    for step in runtime.all("ENV"):
        for key, value in dockerfile.env_pairs(step).items():
            runtime_env[key] = _moved(value, app).replace("$PATH", runtime_env.get("PATH", ""))
    return runtime_env


@pytest.mark.e2e
def test_build_steps_as_a_script(
    builder: dockerfile.Stage, runtime: dockerfile.Stage, tmp_path: Path
) -> None:
    app = tmp_path / "app"
    env = _build_steps(builder, runtime, app)
    run = tmp_path / "run"  # not the source tree: only what the venv installed can be imported
    run.mkdir()
    env |= {
        "GATEWAY_DATABASE_URL": f"sqlite+aiosqlite:///{run / 'gateway.db'}",
        "GATEWAY_SIGNING_KEY_FILE": str(run / "signing-key.jwk.json"),
        "GATEWAY_REF_SECRET_FILE": str(run / "ref-secret"),
        "GATEWAY_AUDIT_WITNESS": str(run / "witness"),
        "GATEWAY_PARTNER_JWKS_DIR": str(run / "partner-jwks"),
    }
    where = "import importlib.util as u; print(*(u.find_spec(p).origin for p in ('gateway', 'policies')))"
    located = subprocess.run(
        ["python", "-c", where],
        cwd=run,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    assert all(Path(p).is_relative_to(app / ".venv") for p in located.stdout.split()), located.stdout

    entrypoint = dockerfile.exec_form(runtime.one("ENTRYPOINT").arguments)
    for args in (["keys", "generate"], ["db", "upgrade"]):
        done = subprocess.run([*entrypoint, *args], cwd=run, env=env, capture_output=True, text=True)
        assert done.returncode == 0, (args, done.stdout, done.stderr)

    port = free_port()
    cmd = dockerfile.exec_form(runtime.one("CMD").arguments)
    cmd[cmd.index("--host") + 1] = "127.0.0.1"  # not every interface of the test machine
    cmd[cmd.index("--port") + 1] = str(port)
    _, check = dockerfile.healthcheck(runtime)
    check = [part.replace("127.0.0.1:8000/", f"127.0.0.1:{port}/") for part in check]
    with running([*entrypoint, *cmd], env, run, port):
        healthy = subprocess.run(check, cwd=run, env=env, capture_output=True, text=True, timeout=10)
        assert healthy.returncode == 0, healthy.stderr
    # ... and the same check fails once nothing answers.
    down = subprocess.run(check, cwd=run, env=env, capture_output=True, text=True, timeout=10)
    assert down.returncode != 0


def _docker() -> str:
    """The Docker client to use (GATEWAY_TEST_DOCKER, default `docker`), if an engine answers it."""
    client = os.environ.get("GATEWAY_TEST_DOCKER", "docker")
    if shutil.which(client) is None:
        pytest.skip(f"no Docker client ({client}) on this machine")
    info = subprocess.run([client, "info", "--format", "{{.ServerVersion}}"], capture_output=True, text=True)
    if info.returncode != 0 or not info.stdout.strip():
        pytest.skip(f"no Docker engine reachable from `{client}`: the image is not built here")
    return client


@pytest.mark.e2e
def test_image_builds_and_reports_healthy(tmp_path: Path) -> None:
    """With an engine: `docker build` with BuildKit, then the image's commands with compose's hardening,
    until Docker's own HEALTHCHECK (run every 2 s here instead of 15 s) says healthy."""
    docker = _docker()
    tag = f"partner-gateway:deploy-test-{os.getpid()}"
    build = subprocess.run(
        [docker, "build", "-q", "-f", "deploy/Dockerfile", "-t", tag, "."],
        cwd=REPO,
        env={**os.environ, "DOCKER_BUILDKIT": "1"},
        capture_output=True,
        text=True,
        timeout=900,
    )
    if build.returncode != 0 and "buildx component is missing" in build.stderr:
        pytest.skip(
            f"`{docker}` cannot build with BuildKit (no buildx): set GATEWAY_TEST_DOCKER to a client that can"
        )
    assert build.returncode == 0, build.stderr
    data = tmp_path / "data"
    data.mkdir()
    data.chmod(0o777)  # the image's user, 10001, writes the keys and the database here
    container_tmp = "/tmp"  # noqa: S108 (the container's own, in memory)
    hardening = [
        "--read-only",
        "--tmpfs",
        container_tmp,
        "--cap-drop",
        "ALL",
        "--security-opt",
        "no-new-privileges",
    ]
    settings = [
        "-e=GATEWAY_DATABASE_URL=sqlite+aiosqlite:////data/gateway.db",
        "-e=GATEWAY_SIGNING_KEY_FILE=/data/signing-key.jwk.json",
        "-e=GATEWAY_REF_SECRET_FILE=/data/ref-secret",
        "-e=GATEWAY_AUDIT_WITNESS=/data/witness",
        "-e=GATEWAY_PARTNER_JWKS_DIR=/data/partner-jwks",
    ]
    volume = f"--volume={data}:/data"
    name = f"deploy-test-{os.getpid()}"
    try:
        for args in (["keys", "generate"], ["db", "upgrade"]):
            done = subprocess.run(
                [docker, "run", "--rm", *hardening, volume, *settings, tag, *args],
                capture_output=True,
                text=True,
                timeout=120,
            )
            assert done.returncode == 0, (args, done.stdout, done.stderr)
        started = subprocess.run(
            [docker, "run", "-d", "--name", name, "--health-interval=2s", *hardening, volume, *settings, tag],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert started.returncode == 0, started.stderr
        user = subprocess.run([docker, "exec", name, "id", "-u"], capture_output=True, text=True, timeout=30)
        assert user.stdout.strip() == "10001"
        deadline = time.monotonic() + 90
        status = ""
        while time.monotonic() < deadline:
            status = subprocess.run(
                [docker, "inspect", "--format", "{{.State.Health.Status}}", name],
                capture_output=True,
                text=True,
                timeout=30,
            ).stdout.strip()
            if status in {"healthy", "unhealthy"}:
                break
            time.sleep(1)
        logs = subprocess.run([docker, "logs", name], capture_output=True, text=True, timeout=30)
        assert status == "healthy", (status, logs.stdout[-2000:], logs.stderr[-2000:])
    finally:
        subprocess.run([docker, "rm", "-f", name], capture_output=True, timeout=60)
        subprocess.run([docker, "image", "rm", "-f", tag], capture_output=True, timeout=60)
