"""No secret anywhere: a distinct secret is planted in every setting that can carry a credential (each form of
``TAXI_POSTGRES_URL``, the user info of ``TAXI_SOURCE_URL`` and ``TAXI_TLC_URL``, the webhook URL, the SMTP
password, the GCP key), real ``dagster asset materialize`` runs succeed and fail with them, and then every byte of
each ``DAGSTER_HOME`` (the SQLite event logs and run storage, their compressed snapshots, the compute logs) and the
processes' output is searched for each secret. The alert sensor's tick on a failed run, and Postgres' connection
errors for each URL form, are searched too."""

from __future__ import annotations

import base64
import contextlib
import functools
import http.server
import json
import logging
import os
import sqlite3
import subprocess
import sys
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import dagster as dg
import pytest

from taxi_assets.automation.alerts import AlertChannels, build_failure_sensor
from taxi_assets.fake_source import read_manifest, write_fake_source
from taxi_assets.resources.postgres import PostgresStore
from taxi_assets_tests.conftest import serve
from taxi_assets_tests.stores import postgres_rows

REPO = Path(__file__).resolve().parents[2]
MONTH, ROWS = "2021-01", 2_000
ALL_FOUR = "yellow/raw_trips,yellow/clean_trips,yellow/warehouse_trips,yellow/postgres_trips"
NO_DUCKDB = "yellow/raw_trips,yellow/clean_trips,yellow/postgres_trips"

# One distinct secret per setting (and per Postgres URL form), none a part of another.
SOURCE_SECRET = "srcPw7Kq2Zmirror"
TLC_SECRET = "tlcPw4Hd8Xsource"
WEBHOOK_SECRET = "hookTok3Nf6Vslack"
SMTP_SECRET = "smtpPw5Rb1Ymail"
GCP_CLIENT_SECRET = "gcpCs2Wp9Lclient"
GCP_REFRESH_TOKEN = "gcpRt8Jm3Qrefresh"
PG_SECRETS = {  # the Postgres URL forms libpq takes, each with its own password
    "userinfo": "pgPw1Ae5Uuserinfo",
    "query": "pgPw2Be6Tquery",
    "keyword": "pgPw3Ce7Skeyword",
    "encoded": "pgPw4@De8:encoded",  # percent-encoded in the URL: both spellings are searched
}
GCP_KEY = json.dumps(
    {
        "type": "authorized_user",  # a key google-auth loads without any network: the load succeeds
        "client_id": "taxi-test.apps.googleusercontent.com",
        "client_secret": GCP_CLIENT_SECRET,
        "refresh_token": GCP_REFRESH_TOKEN,
    }
)

GCP_KEY_ID = "gcpKid6Tn2Rkeyid"


@functools.cache
def service_account_key() -> tuple[str, str]:
    """A service account's JSON key with a freshly made private key (google-auth parses it: the load succeeds),
    and a line of that key's PEM, to search for."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    info = {
        "type": "service_account",
        "project_id": "taxi-secrets-test",
        "private_key_id": GCP_KEY_ID,
        "private_key": pem,
        "client_email": "loader@taxi-secrets-test.iam.gserviceaccount.com",
        "token_uri": "https://oauth2.googleapis.com/token",
    }
    return json.dumps(info), pem.splitlines()[3]


def every_secret() -> list[str]:
    encoded = quote(PG_SECRETS["encoded"], safe="")
    gcp = [GCP_CLIENT_SECRET, GCP_REFRESH_TOKEN, GCP_KEY_ID, service_account_key()[1]]
    return [SOURCE_SECRET, TLC_SECRET, WEBHOOK_SECRET, SMTP_SECRET, *gcp, encoded, *PG_SECRETS.values()]


def pg_url(form: str, socket_dir: str, database: str) -> str:
    """``TAXI_POSTGRES_URL`` in ``form``, with its password, for the test server (trust authentication on its
    socket: any password is accepted, so each run works with its secret planted)."""
    password = PG_SECRETS[form]
    return {
        "userinfo": f"postgresql://postgres:{password}@localhost:5432/{database}?host={socket_dir}",
        "query": f"postgresql:///{database}?host={socket_dir}&user=postgres&password={password}",
        "keyword": f"host={socket_dir} dbname={database} user=postgres password={password}",
        "encoded": f"postgres://postgres:{quote(password, safe='')}@/{database}?host={socket_dir}",
    }[form]


# --------------------------------------------------------------------------------------------------------------
# A source that wants basic auth (any user and password), as a private mirror would


class _BasicAuthHandler(http.server.SimpleHTTPRequestHandler):
    seen: list  # the user names of the requests that came with basic auth
    # A user named "flaky..." gets a 503 on its first GET: the client's retry (and what it logs) is exercised.
    flaked: set

    def log_message(self, format, *args):
        pass

    def _authorized(self) -> bool:
        header = self.headers.get("Authorization", "")
        if not header.startswith("Basic "):
            self.send_response(401)
            self.send_header("WWW-Authenticate", 'Basic realm="taxi"')
            self.send_header("Content-Length", "0")
            self.end_headers()
            return False
        self.seen.append(base64.b64decode(header[6:]).decode().split(":", 1)[0])
        return True

    def do_GET(self):
        if not self._authorized():
            return
        user = self.seen[-1]
        if user.startswith("flaky") and user not in self.flaked:
            self.flaked.add(user)
            self.send_response(503)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        super().do_GET()

    def do_HEAD(self):
        if self._authorized():
            super().do_HEAD()


@contextlib.contextmanager
def basic_auth_source(folder: Path, seen: list) -> Iterator[str]:
    handler = type("Handler", (_BasicAuthHandler,), {"seen": seen, "flaked": set()})
    with serve(functools.partial(handler, directory=str(folder))) as url:
        yield url


# --------------------------------------------------------------------------------------------------------------
# Where a secret could be: every file of DAGSTER_HOME (SQLite databases read row by row, zlib blobs inflated)


def _texts_of_sqlite(path: Path) -> Iterator[bytes]:
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as conn:
        tables = [name for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        for table in tables:
            for row in conn.execute(f'SELECT * FROM "{table}"'):
                for value in row:
                    if isinstance(value, str):
                        yield value.encode()
                    elif isinstance(value, bytes):
                        yield value
                        try:
                            yield zlib.decompress(value)  # Dagster stores snapshots compressed
                        except zlib.error:
                            pass


def leaks(home: Path, outputs: list[bytes], secrets: list[str]) -> list[str]:
    """Where each of ``secrets`` appears: ``<secret> in <file or output>``."""
    found = []
    for path in sorted(p for p in home.rglob("*") if p.is_file()):
        chunks = [path.read_bytes()]
        if chunks[0].startswith(b"SQLite format 3"):
            chunks += list(_texts_of_sqlite(path))
        for secret in secrets:
            if any(secret.encode() in chunk for chunk in chunks):
                found.append(f"{secret} in {path.relative_to(home)}")
    for index, output in enumerate(outputs):
        found += [f"{secret} in output {index}" for secret in secrets if secret.encode() in output]
    return found


# --------------------------------------------------------------------------------------------------------------
# The runs: started together (they mostly wait on their own start-up), each with its own DAGSTER_HOME


@dataclass
class Run:
    name: str
    home: Path
    returncode: int
    stdout: bytes
    stderr: bytes

    @property
    def outputs(self) -> list[bytes]:
        return [self.stdout, self.stderr]


@pytest.fixture(scope="module")
def sources(tmp_path_factory) -> Iterator[dict]:
    """The mirror's and the TLC's layouts, each behind a server that wants basic auth."""
    mirror, tlc = tmp_path_factory.mktemp("mirror"), tmp_path_factory.mktemp("tlc")
    write_fake_source(mirror, ["yellow"], [MONTH], rows=ROWS, seed=5, layout="mirror")
    write_fake_source(tlc, ["yellow"], [MONTH], rows=ROWS, seed=5, layout="tlc")
    seen: list = []
    with basic_auth_source(mirror, seen) as mirror_url, basic_auth_source(tlc, seen) as tlc_url:
        yield {
            "mirror": mirror_url.replace("http://", f"http://taxi:{SOURCE_SECRET}@"),
            "flaky mirror": mirror_url.replace("http://", f"http://flaky:{SOURCE_SECRET}@"),
            "tlc": tlc_url.replace("http://", f"http://taxi:{TLC_SECRET}@"),
            "folder": str(tmp_path_factory.mktemp("empty-folder")),
            "seen": seen,
            "kept": read_manifest(mirror)["files"][f"yellow/yellow_tripdata_{MONTH}.csv.gz"]["kept"],
        }


def _plain_env() -> dict[str, str]:
    # The developer's own TAXI_* settings must not choose anything here.
    return {name: value for name, value in os.environ.items() if not name.startswith(("TAXI_", "DAGSTER_"))}


def _planted(home: Path, data_dir: Path, sources: dict, pg: str, **settings: str) -> dict[str, str]:
    return {
        **_plain_env(),
        "DAGSTER_HOME": str(home),
        "TAXI_DATA_DIR": str(data_dir),
        "TAXI_SOURCE": "mirror",
        "TAXI_SOURCE_URL": sources["mirror"],
        "TAXI_TLC_URL": sources["tlc"],
        "TAXI_POSTGRES_URL": pg,
        "TAXI_ALERT_WEBHOOK_URL": f"http://127.0.0.1:9/hooks/T0/B0/{WEBHOOK_SECRET}",
        "TAXI_SMTP_HOST": "127.0.0.1",
        "TAXI_SMTP_USER": "alerts",
        "TAXI_SMTP_PASSWORD": SMTP_SECRET,
        "TAXI_ALERT_EMAIL_TO": "oncall@example.com",
        "TAXI_GCP_CREDENTIALS": GCP_KEY,
        **settings,
    }


@pytest.fixture(scope="module")
def runs(sources, postgres_url, tmp_path_factory) -> dict[str, Run]:
    """Every run, by name: four that succeed (one per Postgres URL form, over both sources), and two that fail (a
    month the source has not published, and the gcp target with its key)."""
    import psycopg

    socket_dir = postgres_url.split("host=")[1].split("&")[0]
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        for form in PG_SECRETS:
            conn.execute(f'DROP DATABASE IF EXISTS "secrets_{form}"')
            conn.execute(f'CREATE DATABASE "secrets_{form}"')
    root = tmp_path_factory.mktemp("secret-runs")

    def plan(name: str, form: str, args: list[str], **settings: str) -> tuple[list[str], dict]:
        (root / name / "home").mkdir(parents=True)
        pg = pg_url(form, socket_dir, f"secrets_{form}")
        env = _planted(root / name / "home", root / name / "data", sources, pg, **settings)
        command = [str(Path(sys.executable).parent / "dagster"), "asset", "materialize", "-m", "taxi_assets", *args]
        return command, env

    plans = {
        "mirror, Postgres user info": plan(
            "ok-userinfo",
            "userinfo",
            ["--select", ALL_FOUR, "--partition", MONTH],
            TAXI_SOURCE_URL=sources["flaky mirror"],  # a 503 first: the download is retried
        ),
        "tlc, Postgres query": plan(
            "ok-query", "query", ["--select", ALL_FOUR, "--partition", MONTH], TAXI_SOURCE="tlc"
        ),
        "mirror, Postgres keyword DSN": plan("ok-keyword", "keyword", ["--select", NO_DUCKDB, "--partition", MONTH]),
        "mirror, Postgres percent-encoded": plan(
            "ok-encoded", "encoded", ["--select", NO_DUCKDB, "--partition", MONTH]
        ),
        "source 404": plan("fail-source", "userinfo", ["--select", "yellow/raw_trips", "--partition", "2021-03"]),
        "gcp key": plan(
            "fail-gcp",
            "userinfo",
            ["--select", "yellow/raw_trips", "--partition", MONTH],
            TAXI_TARGET="gcp",
            TAXI_GCP_CREDENTIALS=service_account_key()[0],
            TAXI_GCS_BUCKET="taxi-secrets-test",
            TAXI_GCP_PROJECT="taxi-secrets-test",
            TAXI_SOURCE_URL=sources["folder"],  # no file there: the run fails before the lake is touched
        ),
    }
    processes = {
        name: subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        for name, (command, env) in plans.items()
    }
    done = {}
    for name, process in processes.items():
        stdout, stderr = process.communicate(timeout=300)
        done[name] = Run(name, Path(plans[name][1]["DAGSTER_HOME"]), process.returncode, stdout, stderr)
    return done


SUCCEEDING = [
    "mirror, Postgres user info",
    "tlc, Postgres query",
    "mirror, Postgres keyword DSN",
    "mirror, Postgres percent-encoded",
]


@pytest.mark.fault_case("Credentials in every setting, run succeeds")
def test_a_run_that_succeeds_keeps_every_secret_out_of_the_instance_and_the_output(runs, sources, postgres_url):
    for name in SUCCEEDING:
        run = runs[name]
        assert run.returncode == 0, f"{name}: {run.stderr.decode(errors='replace')[-3000:]}"
        assert b"RUN_SUCCESS" in run.stderr
    kept = {form: sources["kept"] for form in PG_SECRETS}  # the month really went through, in every database
    assert {
        form: postgres_rows(postgres_url.replace("@/postgres?", f"@/secrets_{form}?"), "yellow_trips", MONTH)
        for form in PG_SECRETS
    } == kept
    # The source was asked with the URL's user info; the flaky one twice (a 503, then the file).
    assert set(sources["seen"]) == {"taxi", "flaky"} and sources["seen"].count("flaky") == 2
    found = [
        f"{name}: {leak}" for name in SUCCEEDING for leak in leaks(runs[name].home, runs[name].outputs, every_secret())
    ]
    assert found == []


@pytest.mark.fault_case("Credentials in every setting, run fails")
def test_a_run_that_fails_on_the_source_keeps_every_secret_out(runs):
    run = runs["source 404"]
    assert run.returncode != 0 and b"RUN_FAILURE" in run.stderr
    assert b"yellow_tripdata_2021-03.csv.gz" in run.stderr  # the error still names the file
    assert leaks(run.home, run.outputs, every_secret()) == []


@pytest.mark.fault_case("GCP key in a failed run")
def test_the_gcp_key_stays_out_of_a_failed_gcp_run(runs):
    run = runs["gcp key"]
    assert run.returncode != 0 and b"RUN_FAILURE" in run.stderr, run.stderr.decode(errors="replace")[-3000:]
    # The key was read and checked when the code location loaded; the run failed on the missing file.
    assert b"RESOURCE_INIT_SUCCESS" in run.stderr and b"yellow_tripdata_2021-01.csv.gz" in run.stderr
    assert leaks(run.home, run.outputs, every_secret()) == []


@pytest.mark.fault_case("Alert on a failed run with credentials")
def test_the_alert_of_a_failed_run_and_its_retry_carry_no_secret(runs, monkeypatch):
    """The failure sensor on the instance of the run that failed: the alert it posts, the log of its ticks (the
    first delivery fails, a later tick delivers) and its cursor hold no secret."""
    from taxi_assets_tests.automation.conftest import webhook_receiver

    monkeypatch.setenv("DAGSTER_HOME", str(runs["source 404"].home))
    instance = dg.DagsterInstance.get()
    records: list[logging.LogRecord] = []
    with webhook_receiver() as webhook:
        webhook.statuses = [503]
        channels = AlertChannels(
            webhook_url=webhook.url.replace("secret-token", WEBHOOK_SECRET), attempts=1, smtp_password=SMTP_SECRET
        )
        sensor, cursor = build_failure_sensor(first_retry_seconds=0), json.dumps({"after": -1, "pending": []})
        texts = []
        for _ in range(2):
            context = dg.build_sensor_context(instance=instance, cursor=cursor, resources={"alerts": channels})
            handler = logging.Handler()
            handler.emit = records.append
            context.log.addHandler(handler)
            result = sensor(context)
            cursor = result.cursor
            texts += [result.skip_reason.skip_message, cursor]
        _, body = webhook.wait_for_post(timeout=5)
    assert "yellow_tripdata_2021-03.csv.gz" in body["text"] and len(webhook.attempts) == 2
    texts += [body["text"], *(record.getMessage() for record in records)]
    assert [secret for secret in every_secret() for text in texts if secret in text] == []


@pytest.mark.fault_case("Postgres unreachable, password in its URL")
@pytest.mark.parametrize("form", list(PG_SECRETS))
def test_a_postgres_connection_error_names_the_server_without_its_password(form, tmp_path):
    url = pg_url(form, str(tmp_path / "no-server"), "taxi")  # no server listens on that socket
    with pytest.raises(ConnectionError) as error:
        with PostgresStore(url=url).connect():
            pass
    assert "cannot connect to Postgres at " in str(error.value)
    assert [s for s in every_secret() if s in str(error.value)] == []


@pytest.mark.fault_case("Credentials in every setting, the UI")
@pytest.mark.parametrize("target, key", [("local", "user"), ("gcp", "user"), ("gcp", "service account")])
def test_what_the_ui_shows_holds_no_secret(target, key, monkeypatch, tmp_path, sources):
    """The code location as the UI gets it (the repository snapshot: jobs, assets, sensors, resources and their
    configured values), for each target, with every secret planted."""
    from dagster._core.remote_representation.external_data import RepositorySnap  # what a code server sends
    from dagster._serdes import serialize_value

    from taxi_assets.definitions import build_defs
    from taxi_assets.targets import load_target

    pg = pg_url("keyword", str(tmp_path), "taxi")
    gcp_key = GCP_KEY if key == "user" else service_account_key()[0]
    planted = _planted(
        tmp_path / "home", tmp_path / "data", sources, pg, TAXI_TARGET=target, TAXI_GCP_CREDENTIALS=gcp_key
    )
    for name, value in planted.items():
        if name.startswith("TAXI_"):
            monkeypatch.setenv(name, value)
    monkeypatch.setenv("TAXI_GCS_BUCKET", "taxi-secrets-test")
    monkeypatch.setenv("TAXI_GCP_PROJECT", "taxi-secrets-test")

    defs = build_defs(load_target())
    shown = serialize_value(RepositorySnap.from_def(defs.get_repository_def()))

    assert "TAXI_SOURCE_URL" in shown  # the source's URL, which holds a login, is shown by its name
    assert [secret for secret in every_secret() if secret in shown] == []
