"""Failure alerts: their text (job, partition, step, link, no secrets), the ``alerts`` resource the target builds
from the environment, delivery to a local webhook and a local SMTP server, and the run failure sensor on a run that
really failed, including an alert a channel did not take: tried again on later ticks, then given up."""

import email
import email.policy
import logging
import time

import dagster as dg
import pytest

from taxi_assets.assets.policies import fail_fast_on
from taxi_assets.automation import alerts
from taxi_assets.automation.alerts import AlertChannels, AlertCursor, build_failure_sensor
from taxi_assets.secrets import redact
from taxi_assets.services import ContractError
from taxi_assets.settings import ConfigurationError, SmtpSecurity
from taxi_assets.source import SourceError
from taxi_assets.targets import load_target

ALERT = alerts.FailureAlert(
    job_name="yellow_trips_job",
    run_id="0123-abcd",
    partition="2021-03",
    steps=[
        alerts.StepFailure("yellow__raw_trips", "SourceError", "http://mirror/yellow_tripdata_2021-03.csv.gz: HTTP 500")
    ],
    run_url="http://dagster.local:3000/runs/0123-abcd",
)
ALERT_SETTINGS = (  # the environment variables of the alerts, as docs/AUTOMATION.md names them
    "TAXI_ALERT_WEBHOOK_URL",
    "TAXI_UI_BASE_URL",
    "TAXI_SMTP_HOST",
    "TAXI_SMTP_PORT",
    "TAXI_SMTP_SECURITY",
    "TAXI_SMTP_USER",
    "TAXI_SMTP_PASSWORD",
    "TAXI_ALERT_EMAIL_FROM",
    "TAXI_ALERT_EMAIL_TO",
)


def target_alerts(monkeypatch, tmp_path, **settings: str) -> AlertChannels:
    """The ``alerts`` resource of the local target with exactly these alert settings in the environment."""
    monkeypatch.setenv("TAXI_DATA_DIR", str(tmp_path))
    for name in ALERT_SETTINGS:
        monkeypatch.delenv(name, raising=False)
    for name, value in settings.items():
        monkeypatch.setenv(name, value)
    return load_target("local").resources["alerts"]


def resolved(resource: AlertChannels) -> AlertChannels:
    """The resource as a sensor gets it: its ``EnvVar`` settings resolved."""
    with dg.build_resources({"alerts": resource}) as resources:
        return resources.alerts


def test_redact_removes_credentials_and_secret_settings():
    secrets = {
        "TAXI_POSTGRES_URL": "postgresql://loader:s3cr3t-pw@db.internal:5432/taxi",
        "TAXI_SMTP_PASSWORD": "mail-password-1",
        "TAXI_UI_BASE_URL": "http://dagster.local:3000",
        "TAXI_SMTP_PORT": "587",
    }
    text = (
        "connect to postgresql://loader:s3cr3t-pw@db.internal:5432/taxi failed; "
        "dsn host=db password=hunter22 user=x; https://bob:pa55@gcs.example.com/o?X-Goog-Signature=abc123&x=1; "
        "smtp said mail-password-1; ui http://dagster.local:3000; port 587"
    )
    redacted = redact(text, secrets)
    for secret in ("s3cr3t-pw", "hunter22", "pa55", "abc123", "mail-password-1", "loader:"):
        assert secret not in redacted
    assert "http://dagster.local:3000" in redacted and "port 587" in redacted  # the UI URL and plain words stay


def test_the_alert_names_job_partition_step_and_link():
    text = ALERT.text({})
    assert text.splitlines() == [
        "Dagster run failed: yellow_trips_job",
        "Partition: 2021-03",
        "Failed step: yellow__raw_trips (SourceError: http://mirror/yellow_tripdata_2021-03.csv.gz: HTTP 500)",
        "Run: http://dagster.local:3000/runs/0123-abcd",
    ]
    assert ALERT.subject == "[taxi_assets] yellow_trips_job failed for 2021-03 at step yellow__raw_trips"
    assert ALERT.slack_payload({}) == {"text": text}


def test_the_alert_text_never_shows_a_secret_setting():
    channels = AlertChannels(webhook_url="https://hooks.slack.com/services/T1/B2/very-secret")
    alert = alerts.FailureAlert(
        "green_trips_job",
        "r1",
        steps=[alerts.StepFailure("s", "E", "posting to https://hooks.slack.com/services/T1/B2/very-secret")],
    )
    text = channels.text(alert)
    assert "very-secret" not in text and "Run id: r1 (set TAXI_UI_BASE_URL for a link)" in text


def test_the_target_builds_the_alerts_resource_from_the_settings(monkeypatch, tmp_path):
    assert resolved(target_alerts(monkeypatch, tmp_path)).channels == []
    resource = target_alerts(
        monkeypatch,
        tmp_path,
        TAXI_ALERT_WEBHOOK_URL="http://h",
        TAXI_SMTP_HOST="smtp",
        TAXI_ALERT_EMAIL_TO="a@x, b@x",
        TAXI_SMTP_SECURITY="ssl",
        TAXI_SMTP_PASSWORD="pw-123456",
    )
    # The secrets go in by name: the UI shows the variable, never the value.
    assert (resource.webhook_url.env_var_name, resource.smtp_password.env_var_name) == (
        "TAXI_ALERT_WEBHOOK_URL",
        "TAXI_SMTP_PASSWORD",
    )
    settings = resolved(resource)
    assert settings.channels == ["webhook", "email"]
    assert (settings.smtp_security, settings.port, settings.recipients) == (SmtpSecurity.ssl, 465, ("a@x", "b@x"))
    assert settings.secrets == {"TAXI_ALERT_WEBHOOK_URL": "http://h", "TAXI_SMTP_PASSWORD": "pw-123456"}
    no_recipient = target_alerts(monkeypatch, tmp_path, TAXI_SMTP_HOST="smtp")
    assert resolved(no_recipient).channels == []  # no recipient, no email
    with pytest.raises(ConfigurationError, match="TAXI_SMTP_PORT"):
        target_alerts(monkeypatch, tmp_path, TAXI_SMTP_PORT="smtp")
    with pytest.raises(ConfigurationError, match="TAXI_SMTP_SECURITY='tls' is not one of starttls, ssl, none"):
        target_alerts(monkeypatch, tmp_path, TAXI_SMTP_SECURITY="tls")
    assert "pw-123456" not in repr(AlertChannels(smtp_password="pw-123456"))
    with pytest.raises(ValueError, match="'starttls', 'ssl' or 'none'"):  # the type of the one declaration checks it
        AlertChannels(smtp_security="tls")


def test_webhook_post_is_slack_json_and_retries_a_5xx(webhook):
    webhook.statuses = [503]
    settings = AlertChannels(webhook_url=webhook.url, backoff_seconds=0.01)
    assert alerts.send_alert(ALERT, settings) == ["webhook"]
    path, body = webhook.wait_for_post(timeout=5)
    assert path == "/hooks/T000/B000/secret-token" and body == ALERT.slack_payload()
    assert len(webhook.attempts) == 2


def test_a_refused_webhook_fails_without_showing_its_url(webhook):
    webhook.statuses = [404]
    settings = AlertChannels(webhook_url=webhook.url, backoff_seconds=0.01)
    with pytest.raises(alerts.AlertError) as error:
        alerts.send_alert(ALERT, settings)
    assert str(error.value) == "webhook: not delivered after 1 attempt(s) (HTTP 404)"
    unreachable = AlertChannels(webhook_url="http://user:pw@127.0.0.1:9/x", backoff_seconds=0.01, attempts=2)
    with pytest.raises(alerts.AlertError, match=r"after 2 attempt\(s\) \(ConnectionError\)") as error:
        alerts.post_webhook(ALERT, unreachable)
    assert "pw" not in str(error.value)


def test_email_by_smtp_with_login(smtp_server):
    settings = AlertChannels(
        smtp_host=smtp_server.host,
        smtp_port=smtp_server.port,
        smtp_security="none",
        smtp_user="alerts",
        smtp_password="right",
        email_from="dagster@example.com",
        email_to=("oncall@example.com",),
    )
    assert alerts.send_alert(ALERT, settings) == ["email"]
    (message,) = smtp_server.messages
    assert message["auth"] == "alerts" and message["rcpt_to"] == ["<oncall@example.com>"]
    parsed = email.message_from_string(message["data"], policy=email.policy.default)
    assert parsed["Subject"] == "[taxi_assets] yellow_trips_job failed for 2021-03 at step yellow__raw_trips"
    assert parsed["To"] == "oncall@example.com"
    assert parsed.get_content().splitlines() == ALERT.text().splitlines()
    assert "right" not in message["data"]


def test_a_refused_smtp_login_is_reported(smtp_server):
    settings = AlertChannels(
        smtp_host=smtp_server.host,
        smtp_port=smtp_server.port,
        smtp_security="none",
        smtp_user="alerts",
        smtp_password="wrong",
        email_to=("oncall@example.com",),
        backoff_seconds=0.01,
    )
    with pytest.raises(alerts.AlertError, match="refused the login"):
        alerts.send_alert(ALERT, settings)
    assert smtp_server.messages == []


# --------------------------------------------------------------------------------------------------------------
# The sensor on a real failed run


@dg.op
def download():
    raise SourceError(
        "http://loader:hunter2@mirror.local/yellow/yellow_tripdata_2021-03.csv.gz: HTTP 500 Internal Server Error"
    )


@dg.op
def load(_previous):
    pass


@dg.job
def monthly_job():
    load(download())


class Ticks:
    """The failure sensor, evaluated tick after tick on ``instance`` as the daemon would (its cursor carried from
    one tick to the next), with the log of every tick captured. The first tick starts it (before any failure)."""

    def __init__(self, instance: dg.DagsterInstance, channels: AlertChannels, **options):
        self.sensor = build_failure_sensor(**options)
        self.instance, self.channels, self.cursor = instance, channels, None
        self.records: list[logging.LogRecord] = []
        assert self().skip_reason.skip_message == "Alerting run failures from now on"

    def __call__(self) -> dg.SensorResult:
        context = dg.build_sensor_context(
            instance=self.instance, cursor=self.cursor, resources={"alerts": self.channels}
        )
        capture = logging.Handler()
        capture.emit = self.records.append
        context.log.addHandler(capture)  # the tick's log: the sensor logs to the context's logger
        result = self.sensor(context)
        self.cursor = result.cursor
        return result

    def log(self, level: int = logging.DEBUG) -> list[str]:
        return [record.getMessage() for record in self.records if record.levelno >= level]

    @property
    def pending(self) -> list[alerts.PendingAlert]:
        return AlertCursor.parse(self.cursor).pending


def fail_run(instance, tags=None, job=monthly_job) -> str:
    """A run of ``job`` that really fails, in ``instance``; its id."""
    return job.execute_in_process(instance=instance, raise_on_error=False, tags=tags or {}).dagster_run.run_id


def test_the_failure_sensor_posts_job_partition_failed_step_and_link(monkeypatch, tmp_path, instance, webhook):
    # The resource of the target, as the code location has it (the webhook URL as an EnvVar).
    channels = target_alerts(
        monkeypatch, tmp_path, TAXI_ALERT_WEBHOOK_URL=webhook.url, TAXI_UI_BASE_URL="http://dagster.local:3000/"
    )
    earlier = fail_run(instance)  # before the sensor started: not alerted
    tick = Ticks(instance, channels)
    run_id = fail_run(instance, {"dagster/partition": "2021-03"})

    assert tick().skip_reason.skip_message == "1 new run failure(s); 1 alert(s) sent, 0 waiting for a retry, 0 given up"

    _, body = webhook.wait_for_post(timeout=5)
    assert body["text"].splitlines() == [
        "Dagster run failed: monthly_job",
        "Partition: 2021-03",
        "Failed step: download (SourceError: http://loader:***@mirror.local/yellow/yellow_tripdata_2021-03.csv.gz: "
        "HTTP 500 Internal Server Error)",
        f"Run: http://dagster.local:3000/runs/{run_id}",
    ]
    assert tick.log() == [f"Alert for run {run_id} sent by webhook"] and earlier != run_id
    assert webhook.posts.empty()


def test_a_range_run_of_a_backfill_is_named_by_its_range_and_backfill(instance, webhook):
    tick = Ticks(instance, AlertChannels(webhook_url=webhook.url))
    fail_run(
        instance,
        {
            "dagster/asset_partition_range_start": "2019-01",
            "dagster/asset_partition_range_end": "2019-03",
            "dagster/backfill": "bf1",
            "dagster/will_retry": "true",
        },
    )
    tick()
    _, body = webhook.wait_for_post(timeout=5)
    lines = body["text"].splitlines()
    assert lines[1:3] == ["Partition: 2019-01...2019-03", "Backfill: bf1"]
    assert "Dagster retries this run automatically (run_retries)." in lines


@dg.op
def clean():
    with fail_fast_on(SourceError, ContractError):  # as the trips assets do: a contract mismatch becomes a dg.Failure
        raise ContractError("/lake/raw/green/green_tripdata_2019-02.csv.gz: column 'x' is not in the green contract")


@dg.job
def cleaning_job():
    clean()


def test_a_failure_raised_from_an_error_is_named_by_that_error(instance, webhook):
    tick = Ticks(instance, AlertChannels(webhook_url=webhook.url))
    fail_run(instance, job=cleaning_job)
    tick()
    _, body = webhook.wait_for_post(timeout=5)
    assert body["text"].splitlines()[2] == (
        "Failed step: clean (ContractError: /lake/raw/green/green_tripdata_2019-02.csv.gz: "
        "column 'x' is not in the green contract)"
    )


def test_no_channel_configured_logs_the_alert_instead(instance, monkeypatch):
    sent = []  # every delivery the sensor asks the resource for
    monkeypatch.setattr(AlertChannels, "send", lambda self, alert, channels=None: sent.append(alert) or [])
    tick = Ticks(instance, AlertChannels())
    run_id = fail_run(instance)

    tick()  # no exception: the tick succeeds

    assert sent == []  # nothing delivered, on any channel
    assert [(record.levelno, record.getMessage().splitlines()) for record in tick.records] == [
        (
            logging.WARNING,
            [
                "No alert channel configured; the alert would have been:",
                "Dagster run failed: monthly_job",
                "Partition: (none)",
                "Failed step: download (SourceError: "
                "http://loader:***@mirror.local/yellow/yellow_tripdata_2021-03.csv.gz: HTTP 500 Internal Server Error)",
                f"Run id: {run_id} (set TAXI_UI_BASE_URL for a link)",
            ],
        )
    ]
    assert tick.pending == []


# --------------------------------------------------------------------------------------------------------------
# An alert a channel did not take: tried again on later ticks, then given up


def test_an_alert_the_webhook_refused_is_delivered_on_a_later_tick_once(instance, webhook):
    webhook.statuses = [503, 503]  # down for the two attempts of the failure's tick, then up
    tick = Ticks(
        instance, AlertChannels(webhook_url=webhook.url, attempts=2, backoff_seconds=0.01), first_retry_seconds=0
    )
    run_id = fail_run(instance)

    first = tick()
    assert first.skip_reason.skip_message == "1 new run failure(s); 0 alert(s) sent, 1 waiting for a retry, 0 given up"
    assert tick.log() == [
        f"Alert for run {run_id} not delivered by webhook (webhook: HTTP 503); trying again in 0s (attempt 1 of 8)"
    ]
    assert [(p.run_id, p.channels, p.attempts) for p in tick.pending] == [(run_id, ["webhook"], 1)]
    assert webhook.posts.empty() and len(webhook.attempts) == 2

    second = tick()  # no new failure: the waiting alert goes out
    assert second.skip_reason.skip_message == "0 new run failure(s); 1 alert(s) sent, 0 waiting for a retry, 0 given up"
    _, body = webhook.wait_for_post(timeout=5)
    assert body["text"].splitlines()[0:2] == ["Dagster run failed: monthly_job", "Partition: (none)"]
    assert tick.log()[-1] == f"Alert for run {run_id} sent by webhook"

    tick()  # nothing waits any more: no second delivery
    assert webhook.posts.empty() and len(webhook.attempts) == 3 and tick.pending == []
    assert not any("secret-token" in line for line in tick.log())  # the webhook URL is never logged


def test_an_alert_is_given_up_after_its_attempts_naming_the_channel(instance, webhook):
    webhook.statuses = [503] * 100  # down for good
    channels = AlertChannels(webhook_url=webhook.url, attempts=1)
    tick = Ticks(instance, channels, first_retry_seconds=0, max_attempts=3)
    run_id = fail_run(instance)

    results = [tick().skip_reason.skip_message for _ in range(4)]

    assert results == [
        "1 new run failure(s); 0 alert(s) sent, 1 waiting for a retry, 0 given up",
        "0 new run failure(s); 0 alert(s) sent, 1 waiting for a retry, 0 given up",
        "0 new run failure(s); 0 alert(s) sent, 0 waiting for a retry, 1 given up",
        "0 new run failure(s); 0 alert(s) sent, 0 waiting for a retry, 0 given up",
    ]
    assert len(webhook.attempts) == 3  # one per tick, none after it was given up
    (error,) = [r.getMessage() for r in tick.records if r.levelno == logging.ERROR]
    assert error.startswith(f"Alert for run {run_id} not delivered by webhook after 3 attempt(s) over ")
    assert error.endswith("s (webhook: HTTP 503): given up") and "secret-token" not in error


def test_an_email_the_smtp_server_turned_away_is_sent_later_and_the_webhook_not_twice(instance, webhook, smtp_server):
    smtp_server.busy = 2  # turns away the two attempts of the failure's tick
    channels = AlertChannels(
        webhook_url=webhook.url,
        smtp_host=smtp_server.host,
        smtp_port=smtp_server.port,
        smtp_security="none",
        email_to=["oncall@example.com"],
        attempts=2,
        backoff_seconds=0.01,
    )
    tick = Ticks(instance, channels, first_retry_seconds=1)
    run_id = fail_run(instance)

    assert tick().skip_reason.skip_message == "1 new run failure(s); 1 alert(s) sent, 1 waiting for a retry, 0 given up"
    assert tick.log()[:2] == [
        f"Alert for run {run_id} sent by webhook",
        f"Alert for run {run_id} not delivered by email (email: SMTPConnectError); trying again in 1s (attempt 1 of 8)",
    ]
    assert [(p.channels, p.attempts) for p in tick.pending] == [(["email"], 1)]
    webhook.wait_for_post(timeout=5)

    tick()  # too early: the alert waits first_retry_seconds
    assert smtp_server.messages == [] and tick.pending[0].attempts == 1
    time.sleep(1.1)
    assert tick().skip_reason.skip_message == "0 new run failure(s); 1 alert(s) sent, 0 waiting for a retry, 0 given up"

    (message,) = smtp_server.messages
    assert message["rcpt_to"] == ["<oncall@example.com>"] and f"Run id: {run_id}" in message["data"]
    assert webhook.posts.empty() and len(webhook.attempts) == 1  # the webhook had it already: not sent again


def test_at_most_max_pending_alerts_wait_the_oldest_is_given_up(instance, webhook):
    webhook.statuses = [503] * 100
    tick = Ticks(instance, AlertChannels(webhook_url=webhook.url, attempts=1), first_retry_seconds=0, max_pending=2)
    runs = [fail_run(instance) for _ in range(3)]

    assert tick().skip_reason.skip_message == "3 new run failure(s); 0 alert(s) sent, 2 waiting for a retry, 1 given up"

    assert [p.run_id for p in tick.pending] == runs[1:]
    # The webhook failed on the first alert: the tick did not try it again for the two others.
    assert len(webhook.attempts) == 1
    (error,) = [r.getMessage() for r in tick.records if r.levelno == logging.ERROR]
    assert error == (
        f"Alert for run {runs[0]} not delivered by webhook (webhook: HTTP 503): given up, "
        "more than 2 alerts are waiting"
    )


def test_the_cursor_of_the_former_run_failure_sensor_is_taken_up(instance, webhook):
    fail_run(instance)  # alerted by the run_failure_sensor this sensor was before
    newest = instance.fetch_run_status_changes(dg.DagsterEventType.RUN_FAILURE, limit=1).records[0].storage_id
    former = f'{{"__class__": "RunStatusSensorCursor", "record_id": {newest}, "record_timestamp": null}}'
    run_id = fail_run(instance)  # during the upgrade

    context = dg.build_sensor_context(
        instance=instance, cursor=former, resources={"alerts": AlertChannels(webhook_url=webhook.url)}
    )
    build_failure_sensor()(context)

    _, body = webhook.wait_for_post(timeout=5)
    assert body["text"].splitlines()[-1] == f"Run id: {run_id} (set TAXI_UI_BASE_URL for a link)"
    assert webhook.posts.empty()  # the failure before the upgrade is not alerted twice
