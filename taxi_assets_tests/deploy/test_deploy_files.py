"""What can be checked of the deployment files without a Docker engine, Helm or a cluster.

Every file parses; every path, module, class, image, volume, network and environment variable a file names
exists where another file expects it; the instance files validate against Dagster's own schema and share their
policies; the Docker build context holds what the Dockerfile copies and builds the project; and the image's
command serves the code location when run directly here.
"""

from __future__ import annotations

import ast
import fnmatch
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import dagster as dg
import pytest
import yaml
from dagster._config import validate_config
from dagster._core.instance.config import dagster_instance_config, get_tick_retention_settings
from dagster._core.storage.config import pg_config
from dagster._serdes.config_class import ConfigurableClassData
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from taxi_assets.settings import DEFAULT_MIRROR_URL, DEFAULT_TLC_URL, TARGETS
from taxi_assets_tests.processes import free_port, stop_process_group

ROOT = Path(__file__).resolve().parents[2]
INSTANCES = {
    "top": ROOT / "dagster.yaml",  # the repository root's: SQLite in ./.dagster_home, no server, no variable
    "vm": ROOT / "deploy/vm/dagster.yaml",  # a deployment on one host: Postgres, runs as subprocesses
    "docker": ROOT / "deploy/docker/dagster.yaml",  # docker compose: Postgres, a container per run
}
# The sections every variant of the instance shares (storage and run launcher differ by design).
POLICIES = ("run_coordinator", "concurrency", "run_monitoring", "run_retries", "retention")
COMPOSE = ROOT / "docker-compose.yml"
HELM = ROOT / "deploy/helm/values.yaml"
DOCKERFILE = ROOT / "Dockerfile"
LOCK = ROOT / "deploy/requirements.lock.txt"


def load(path: Path):
    return yaml.safe_load(path.read_text())


# --------------------------------------------------------------------------------------------- parsing ---


@pytest.mark.parametrize(
    "path",
    [*INSTANCES.values(), COMPOSE, HELM, ROOT / "workspace.yaml", ROOT / "deploy/compose/workspace.yaml"],
    ids=lambda p: str(p.relative_to(ROOT)),
)
def test_every_yaml_file_parses_to_a_mapping(path):
    assert isinstance(load(path), dict)


# --------------------------------------------------------------------------------- the Dagster instance ---


@pytest.mark.parametrize("variant", list(INSTANCES))
def test_instance_file_is_valid_dagster_instance_config(variant, tmp_path):
    shutil.copy(INSTANCES[variant], tmp_path / "dagster.yaml")
    config, custom_class = dagster_instance_config(str(tmp_path))
    assert custom_class is None
    # Every configurable class named can be imported and accepts its config (none connects to anything).
    for section in ("run_coordinator", "run_launcher", "compute_logs", "local_artifact_storage"):
        if section in config:
            data = ConfigurableClassData(
                config[section]["module"], config[section]["class"], yaml.safe_dump(config[section].get("config", {}))
            )
            assert data.rehydrate() is not None
    if "postgres" in config["storage"]:
        postgres = config["storage"]["postgres"]
        assert validate_config(pg_config(), postgres).success
        # The connection comes from the environment, never from the file.
        assert postgres == {"postgres_url": {"env": "DAGSTER_PG_URL"}}


def test_instance_variants_share_every_policy():
    top, vm, docker = (load(INSTANCES[v]) for v in ("top", "vm", "docker"))
    for section in POLICIES:
        assert top[section] == vm[section] == docker[section], section
    assert vm["storage"] == docker["storage"] == {"postgres": {"postgres_url": {"env": "DAGSTER_PG_URL"}}}
    assert top["run_launcher"] == vm["run_launcher"]
    assert top["run_launcher"]["class"] == "DefaultRunLauncher"
    assert docker["run_launcher"]["class"] == "DockerRunLauncher"
    # Only the top-level file is read without DAGSTER_HOME (in the repository root), and nothing in it needs a
    # server or a variable; the deployments' files are copied or mounted into a DAGSTER_HOME.
    assert "env" not in json.dumps(top)


def test_root_instance_keeps_all_its_state_in_the_gitignored_dagster_home():
    """Relative paths, resolved by each Dagster process against its working directory: the repository root for
    `dagster dev` (webserver, daemon, code server and run workers all run there) and the command line."""
    top = load(INSTANCES["top"])
    folders = {
        "storage": top["storage"]["sqlite"]["base_dir"],
        "compute_logs": top["compute_logs"]["config"]["base_dir"],
        "local_artifact_storage": top["local_artifact_storage"]["config"]["base_dir"],
    }
    assert top["compute_logs"]["class"] == "LocalComputeLogManager"
    for section, folder in folders.items():
        assert not os.path.isabs(folder) and Path(folder).parts[0] == ".dagster_home", (section, folder)
    assert ".dagster_home/" in (ROOT / ".gitignore").read_text().splitlines()


def test_instance_limits_are_the_ones_the_assets_and_runs_need():
    config = load(INSTANCES["top"])
    runs = config["concurrency"]["runs"]
    per_value = {
        limit["key"]: limit["limit"]
        for limit in runs["tag_concurrency_limits"]
        if limit.get("value") == {"applyLimitPerUniqueValue": True}
    }
    # Tags Dagster itself puts on a month's run, and on a single-run backfill's range.
    from dagster._core.storage.tags import (
        ASSET_PARTITION_RANGE_END_TAG,
        ASSET_PARTITION_RANGE_START_TAG,
        PARTITION_NAME_TAG,
    )

    assert per_value == {PARTITION_NAME_TAG: 1, ASSET_PARTITION_RANGE_START_TAG: 1, ASSET_PARTITION_RANGE_END_TAG: 1}
    assert config["concurrency"]["pools"] == {"granularity": "op", "default_limit": 1}
    assert config["run_retries"]["enabled"] is True and config["run_retries"]["max_retries"] >= 1
    assert config["run_monitoring"]["enabled"] is True


def test_the_pools_limited_are_the_pools_the_assets_declare():
    from taxi_assets import defs

    pools = {
        spec.key.to_user_string(): node.pool
        for assets_def in defs.resolve_asset_graph().assets_defs
        for spec in assets_def.specs
        for node in [assets_def.node_def]
        if getattr(node, "pool", None)
    }
    assert set(pools.values()) == {"warehouse", "postgres"}
    for service in ("yellow", "green", "fhv"):
        assert pools[f"{service}/warehouse_trips"] == "warehouse"
        assert pools[f"{service}/postgres_trips"] == "postgres"


# ------------------------------------------------------------------------------------------- workspace ---


def test_workspaces_name_the_same_code_location_the_image_serves():
    (local,) = load(ROOT / "workspace.yaml")["load_from"]
    (grpc,) = load(ROOT / "deploy/compose/workspace.yaml")["load_from"]
    assert local["python_module"]["module_name"] == "taxi_assets"
    assert (ROOT / local["python_module"]["working_directory"] / "taxi_assets" / "__init__.py").exists()
    cmd = dockerfile_cmd()
    location = option(cmd, "--location-name")
    assert local["python_module"]["location_name"] == grpc["grpc_server"]["location_name"] == location
    assert option(cmd, "--module-name") == "taxi_assets"
    compose = load(COMPOSE)
    assert grpc["grpc_server"]["host"] in compose["services"]
    assert grpc["grpc_server"]["port"] == int(option(cmd, "--port")) == 4000


# -------------------------------------------------------------------------------------- docker compose ---


def interpolate(value, env: dict[str, str]):
    """Compose's ${VAR}, ${VAR:-default} and ${VAR:?error} substitution, enough for this file."""
    if isinstance(value, dict):
        return {k: interpolate(v, env) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, env) for v in value]
    if not isinstance(value, str):
        return value

    def substitute(match: re.Match) -> str:
        name, op, arg = match.group(1), match.group(2), match.group(3)
        if op == ":?" and not env.get(name):
            raise KeyError(f"{name}: {arg}")
        return env.get(name) or (arg if op == ":-" else "")

    return re.sub(r"\$\{([A-Z0-9_]+)(?:(:-|:\?)([^}]*))?\}", substitute, value)


@pytest.fixture(scope="module")
def compose() -> dict:
    return interpolate(load(COMPOSE), {"DAGSTER_PG_PASSWORD": "0123abcd"})


def test_compose_refuses_to_start_without_a_password():
    with pytest.raises(KeyError, match="DAGSTER_PG_PASSWORD"):
        interpolate(load(COMPOSE), {})


def test_compose_has_postgres_code_server_webserver_and_daemon(compose):
    services = compose["services"]
    assert set(services) == {"postgres", "taxi-assets-code", "webserver", "daemon"}
    image = services["taxi-assets-code"]["image"]
    for name in ("taxi-assets-code", "webserver", "daemon"):
        assert services[name]["image"] == image
        assert services[name]["build"]["context"] == "."
        assert (ROOT / services[name]["build"]["dockerfile"]).resolve() == DOCKERFILE
    # The run launcher starts runs from the image the code server reports.
    assert services["taxi-assets-code"]["environment"]["DAGSTER_CURRENT_IMAGE"] == image
    assert "command" not in services["taxi-assets-code"]  # the image's CMD serves the code location
    assert services["webserver"]["command"][0] == "dagster-webserver"
    assert services["daemon"]["command"][:2] == ["dagster-daemon", "run"]
    assert services["postgres"]["environment"]["TZ"] == "UTC"


def _mounts(service: dict) -> dict[str, str]:
    """Container path -> source (host path or volume name) of a service's volumes."""
    mounts = {}
    for spec in service.get("volumes", []):
        source, target = spec.split(":")[:2]
        mounts[target] = source
    return mounts


def test_compose_bind_mounts_exist_and_land_where_dagster_looks(compose):
    services = compose["services"]
    for name, service in services.items():
        for source in _mounts(service).values():
            if source.startswith((".", "/")) and source != "/var/run/docker.sock":
                assert (ROOT / source).exists(), f"{name}: {source}"
    home = "/opt/dagster/dagster_home"  # DAGSTER_HOME of the image
    assert f"ENV_DAGSTER_HOME={home}" in dockerfile_env_lines()
    for name in ("taxi-assets-code", "webserver", "daemon"):
        assert _mounts(services[name])[f"{home}/dagster.yaml"] == "./deploy/docker/dagster.yaml"
    for name in ("webserver", "daemon"):
        workspace = option(services[name]["command"], "--workspace")
        assert _mounts(services[name])[workspace] == "./deploy/compose/workspace.yaml"
    sql = (ROOT / "deploy/compose/postgres-init/01-taxi-database.sql").read_text()
    assert "CREATE DATABASE taxi" in sql


def test_compose_and_docker_launcher_agree_on_network_volumes_and_env(compose):
    launcher = load(INSTANCES["docker"])["run_launcher"]["config"]
    assert compose["networks"]["default"]["name"] == launcher["network"]
    volume_names = {spec["name"] for spec in compose["volumes"].values()}
    code_mounts = _mounts(compose["services"]["taxi-assets-code"])
    for spec in launcher["container_kwargs"]["volumes"]:
        volume, target = spec.split(":")
        assert volume in volume_names
        key = next(k for k, v in compose["volumes"].items() if v["name"] == volume)
        if target == "/data":  # runs see the data the code server sees
            assert code_mounts["/data"] == key
        else:  # the webserver reads the step logs the runs write
            assert _mounts(compose["services"]["webserver"])[target] == key
    compute_logs = load(INSTANCES["docker"])["compute_logs"]["config"]["base_dir"]
    assert compute_logs in [t for spec in launcher["container_kwargs"]["volumes"] for t in [spec.split(":")[1]]]
    # The launcher passes these from the daemon's environment into each run's container.
    daemon_env = compose["services"]["daemon"]["environment"]
    for name in launcher["env_vars"]:
        assert name in daemon_env, name
    for name in ("DAGSTER_PG_URL", "TAXI_TARGET", "TAXI_DATA_DIR", "TAXI_SOURCE", "TAXI_TLC_URL", "TAXI_POSTGRES_URL"):
        assert name in launcher["env_vars"] and daemon_env[name], name
    assert daemon_env == {
        k: v for k, v in compose["services"]["taxi-assets-code"]["environment"].items() if k != "DAGSTER_CURRENT_IMAGE"
    }


def test_compose_settings_are_the_ones_the_code_reads(compose):
    env = compose["services"]["daemon"]["environment"]
    assert env["TAXI_TARGET"] in TARGETS
    sources = (env["TAXI_SOURCE"], env["TAXI_TLC_URL"], env["TAXI_SOURCE_URL"])
    assert sources == ("tlc", DEFAULT_TLC_URL, DEFAULT_MIRROR_URL)
    assert env["TAXI_DATA_DIR"] == "/data" == dockerfile_env()["TAXI_DATA_DIR"]
    # Dagster's URL names its driver (SQLAlchemy 2.1 would take psycopg 3); the trips' URL is libpq's.
    assert env["DAGSTER_PG_URL"].startswith("postgresql+psycopg2://")
    assert env["DAGSTER_PG_URL"].endswith("@postgres:5432/dagster")
    assert env["TAXI_POSTGRES_URL"].startswith("postgresql://")
    assert env["TAXI_POSTGRES_URL"].endswith("@postgres:5432/taxi")
    assert compose["services"]["webserver"]["environment"]["DAGSTER_PG_URL"] == env["DAGSTER_PG_URL"]
    for name in env:
        if name.startswith("TAXI_"):
            assert name in code_text(), f"{name} is set but no module reads it"


# ------------------------------------------------------------------------------------------ Dockerfile ---


def dockerfile_instructions() -> list[tuple[int, str, str]]:
    """(stage index, instruction, arguments) of the Dockerfile, continuation lines joined."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    out, stage = [], -1
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        instruction, _, args = line.partition(" ")
        instruction = instruction.upper()
        if instruction == "FROM":
            stage += 1
        out.append((stage, instruction, args.strip()))
    return out


def final_stage() -> list[tuple[str, str]]:
    instructions = dockerfile_instructions()
    last = max(stage for stage, _, _ in instructions)
    return [(i, a) for stage, i, a in instructions if stage == last]


def dockerfile_cmd() -> list[str]:
    (cmd,) = [a for i, a in final_stage() if i == "CMD"]
    return yaml.safe_load(cmd)  # exec form: a JSON array


def dockerfile_env_lines() -> list[str]:
    return [f"ENV_{k}={v}" for k, v in dockerfile_env().items()]


def dockerfile_env() -> dict[str, str]:
    env = {}
    for instruction, args in final_stage():
        if instruction == "ENV":
            for pair in shlex.split(args):
                key, _, value = pair.partition("=")
                env[key] = value
    return env


def option(argv: list[str], name: str) -> str:
    return argv[argv.index(name) + 1]


def test_dockerfile_base_image_is_pinned_and_final_stage_is_slim_and_non_root():
    instructions = dockerfile_instructions()
    (base,) = [a for _, i, a in instructions if i == "ARG" and a.startswith("PYTHON_IMAGE=")]
    image = base.split("=", 1)[1]
    assert re.fullmatch(r"python:3\.11\.\d+-slim-bookworm(@sha256:[0-9a-f]{64})?", image), image
    stage = final_stage()
    users = [a for i, a in stage if i == "USER"]
    assert users and users[-1].split(":")[0] not in ("root", "0")
    uid = [a for i, a in stage if i == "ARG" and a.startswith("UID=")][0].split("=")[1]
    assert users[-1] == "${UID}:${UID}" and int(uid) >= 1000
    final_run = " ".join(a for i, a in stage if i == "RUN")
    for tool in ("apt-get", "gcc", "build-essential", "pip install"):
        assert tool not in final_run, f"{tool} in the final stage"
    assert ("EXPOSE", "4000") in stage


def test_dockerfile_has_no_secrets():
    secret = re.compile(r"(PASSWORD|SECRET|TOKEN|CREDENTIAL|_KEY)\b", re.I)
    for _, instruction, args in dockerfile_instructions():
        if instruction in ("ENV", "ARG", "LABEL"):
            assert not secret.search(args), args
    assert not any(name.startswith(".env") or name.endswith((".json", ".pem")) for name in build_context_files())


def test_image_command_serves_the_code_location_on_port_4000():
    cmd = dockerfile_cmd()
    assert cmd[:3] == ["dagster", "code-server", "start"]
    assert option(cmd, "--host") == "0.0.0.0" and option(cmd, "--port") == "4000"


def dockerignore_patterns() -> list[tuple[bool, str]]:
    patterns = []
    for line in (ROOT / ".dockerignore").read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            patterns.append((line.startswith("!"), line.lstrip("!").rstrip("/")))
    return patterns


def _ignored(rel: str, patterns) -> bool:
    """Docker's rule: the last matching pattern wins; a directory pattern covers what is under it."""
    ignored = False
    for negate, pattern in patterns:
        pattern = pattern.replace("**/", "*")
        parts = rel.split("/")
        prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        if any(fnmatch.fnmatchcase(p, pattern) for p in prefixes) or fnmatch.fnmatchcase(rel, pattern):
            ignored = not negate
    return ignored


def build_context_files() -> list[str]:
    patterns = dockerignore_patterns()
    files = []
    for path in ROOT.rglob("*"):
        rel = path.relative_to(ROOT).as_posix()
        if rel.startswith((".git/", ".venv/")) or not path.is_file():
            continue
        if not _ignored(rel, patterns):
            files.append(rel)
    return sorted(files)


def test_build_context_holds_what_the_dockerfile_copies_and_nothing_else():
    files = build_context_files()
    copied = []
    for _, instruction, args in dockerfile_instructions():
        if instruction == "COPY" and not args.startswith("--from"):
            *sources, _dest = shlex.split(args)
            copied += sources
    for source in copied:
        assert any(f == source or f.startswith(source.rstrip("/") + "/") for f in files), source
    assert all(
        f in ("setup.py", "pyproject.toml", "deploy/requirements.lock.txt") or f.startswith("taxi_assets/")
        for f in files
    ), files
    assert "taxi_assets/__init__.py" in files


def test_build_context_builds_the_project_wheel_offline(tmp_path):
    """The image's `pip install --no-deps --no-build-isolation .`, on exactly the files of the build context."""
    context = tmp_path / "context"
    for rel in build_context_files():
        (context / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(ROOT / rel, context / rel)
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "--no-index",
            "-q",
            "-w",
            str(tmp_path / "wheels"),
            str(context),
        ],
        check=True,
        timeout=180,
    )
    (wheel,) = (tmp_path / "wheels").glob("taxi_assets-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    modules = {p.relative_to(ROOT).as_posix() for p in (ROOT / "taxi_assets").rglob("*.py")}
    assert modules <= names, sorted(modules - names)


# ------------------------------------------------------------------------------------------ the lock ---


def locked() -> dict[str, str]:
    pins = {}
    for line in LOCK.read_text().splitlines():
        if line and not line.startswith("#"):
            name, _, version = line.partition(" ;")[0].partition("==")
            assert version, f"not pinned: {line}"
            pins[canonicalize_name(name)] = version
    return pins


def setup_requirements() -> list[Requirement]:
    tree = ast.parse((ROOT / "setup.py").read_text())
    (call,) = [n for n in ast.walk(tree) if isinstance(n, ast.Call) and getattr(n.func, "id", "") == "setup"]
    (install,) = [k.value for k in call.keywords if k.arg == "install_requires"]
    return [Requirement(r) for r in ast.literal_eval(install)]


def test_lock_pins_a_version_of_everything_setup_py_requires():
    pins = locked()
    for requirement in setup_requirements():
        if requirement.marker and not requirement.marker.evaluate({"python_version": "3.11", "sys_platform": "linux"}):
            continue
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{requirement} is not in {LOCK.name}: run python deploy/lock_requirements.py"
        assert requirement.specifier.contains(pins[name], prereleases=True), (
            f"{requirement} but the lock has {pins[name]}: run python deploy/lock_requirements.py"
        )


def test_lock_has_the_run_launchers_at_dagsters_version():
    pins = locked()
    assert pins["dagster-docker"] == pins["dagster-k8s"] == pins["dagster-postgres"]
    assert pins["dagster"] == dg.__version__


# ---------------------------------------------------------------------------------------------- Helm ---


def test_helm_values_carry_the_instance_policies():
    values, top = load(HELM), load(INSTANCES["top"])
    concurrency = values["concurrency"]
    assert concurrency["enabled"] is True
    runs = top["concurrency"]["runs"]
    assert concurrency["runs"]["maxConcurrentRuns"] == runs["max_concurrent_runs"]
    assert concurrency["runs"]["tagConcurrencyLimits"] == runs["tag_concurrency_limits"]
    pools = top["concurrency"]["pools"]
    assert concurrency["pools"] == {"granularity": pools["granularity"], "defaultLimit": pools["default_limit"]}

    daemon = values["dagsterDaemon"]
    assert daemon["runCoordinator"]["type"] == top["run_coordinator"]["class"]
    assert daemon["runRetries"] == {
        "enabled": top["run_retries"]["enabled"],
        "maxRetries": top["run_retries"]["max_retries"],
        "retryOnAssetOrOpFailure": top["run_retries"]["retry_on_asset_or_op_failure"],
    }
    camel = {re.sub(r"_(\w)", lambda m: m.group(1).upper(), k): v for k, v in top["run_monitoring"].items()}
    assert daemon["runMonitoring"] == camel

    from dagster._core.definitions.run_request import InstigatorType

    for helm_key, key, kind in (
        ("schedule", "schedule", InstigatorType.SCHEDULE),
        ("sensor", "sensor", InstigatorType.SENSOR),
        ("autoMaterialize", "auto_materialize", InstigatorType.SENSOR),
    ):
        from dagster._core.instance.config import get_default_tick_retention_settings

        defaults = get_default_tick_retention_settings(kind)
        helm = {"purge_after_days": values["retention"][helm_key]["purgeAfterDays"]}
        assert get_tick_retention_settings(helm, defaults) == get_tick_retention_settings(
            top["retention"][key], defaults
        ), key


def test_helm_user_deployment_runs_this_image_with_the_k8s_run_launcher():
    values = load(HELM)
    (deployment,) = values["dagster-user-deployments"]["deployments"]
    cmd = dockerfile_cmd()
    args = deployment["codeServerArgs"]
    assert option(args, "--module-name") == option(cmd, "--module-name")
    assert option(args, "--location-name") == option(cmd, "--location-name")
    assert deployment["port"] == int(option(cmd, "--port"))
    assert deployment["image"]["tag"] not in ("latest", "")
    assert deployment["includeConfigInLaunchedRuns"]["enabled"] is True
    assert deployment["podSecurityContext"]["runAsUser"] == int(
        [a for i, a in final_stage() if i == "ARG" and a.startswith("UID=")][0].split("=")[1]
    )
    assert values["runLauncher"]["type"] == "K8sRunLauncher"
    env = {e["name"]: e["value"] for e in deployment["env"]}
    assert env["TAXI_TARGET"] == "gcp" and "gcp" in TARGETS
    for name in env:
        if name.startswith("TAXI_"):
            assert name in code_text(), f"{name} is set but no module reads it"
    assert values["postgresql"]["postgresqlUsername"] and "postgresqlPassword" not in values["postgresql"]
    assert values["postgresql"]["postgresqlScheme"] == "postgresql+psycopg2"


# ----------------------------------------------------------------------- the image's command, run here ---


def code_text() -> str:
    return "\n".join(p.read_text() for p in (ROOT / "taxi_assets").rglob("*.py"))


def test_image_command_loads_the_definitions_when_run_here(tmp_path):
    """The Dockerfile's CMD, run in a bare working directory like the image's, serves every asset and job.

    The code is the installed package (as in the image), DAGSTER_HOME an empty folder, the port a free one;
    the webserver's view of it is taken through the compose workspace file, pointed at this port.
    """
    from dagster._core.workspace.context import WorkspaceProcessContext
    from dagster._core.workspace.load_target import WorkspaceFileTarget

    port = free_port()
    cmd = dockerfile_cmd()
    cmd[cmd.index("--port") + 1] = str(port)
    cmd[cmd.index("--host") + 1] = "127.0.0.1"
    workdir, home = tmp_path / "app", tmp_path / "home"
    workdir.mkdir()
    home.mkdir()
    env = {
        **os.environ,
        **{k: v for k, v in dockerfile_env().items() if k != "PATH"},
        "DAGSTER_HOME": str(home),
        "TAXI_DATA_DIR": str(tmp_path / "data"),
    }
    env.pop("TAXI_TARGET", None)
    bin_dir = Path(sys.executable).parent
    server = subprocess.Popen(
        [str(bin_dir / cmd[0]), *cmd[1:]],
        cwd=workdir,
        env=env,
        start_new_session=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 120
        while True:
            health = subprocess.run(
                [str(bin_dir / "dagster"), "api", "grpc-health-check", "-p", str(port)],
                capture_output=True,
                text=True,
                timeout=60,
            )
            if health.returncode == 0:
                break
            assert server.poll() is None, server.stdout.read().decode()
            assert time.monotonic() < deadline, "the code server did not become healthy in 120 s"
            time.sleep(1)

        workspace = load(ROOT / "deploy/compose/workspace.yaml")
        workspace["load_from"][0]["grpc_server"].update(host="127.0.0.1", port=port)
        (tmp_path / "workspace.yaml").write_text(yaml.safe_dump(workspace))
        with (
            dg.instance_for_test() as instance,
            WorkspaceProcessContext(instance, WorkspaceFileTarget([str(tmp_path / "workspace.yaml")])) as context,
        ):
            location = context.create_request_context().get_code_location("taxi_assets")
            (repository,) = location.get_repositories().values()
            keys = {node.asset_key.to_user_string() for node in repository.get_asset_node_snaps()}
            jobs = {job.name for job in repository.get_all_jobs()}
    finally:
        stop_process_group(server, timeout=30)
    for service in ("yellow", "green", "fhv"):
        assert {f"{service}/{a}" for a in ("raw_trips", "clean_trips", "warehouse_trips", "postgres_trips")} <= keys
        assert f"{service}_trips_job" in jobs
    assert {"taxi_zones", "warehouse_taxi_zones", "postgres_taxi_zones"} <= keys
