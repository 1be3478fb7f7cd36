"""Failure alerts: their text (job, partition, step, link, no secrets), the ``alerts`` resource the target builds
from the environment, delivery to a local webhook and a local SMTP server, and the run failure sensor on a run that
really failed."""

import email
import email.policy
import logging

import dagster as dg
import pytest

from taxi_assets.assets.policies import fail_fast_on
from taxi_assets.automation import alerts
from taxi_assets.automation.alerts import AlertChannels, build_failure_sensor
from taxi_assets.services import ContractError
from taxi_assets.settings import ConfigurationError
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
    redacted = alerts.redact(text, secrets)
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
    settings = resolved(resource).settings()
    assert settings.channels == ["webhook", "email"]
    assert (settings.smtp_port, settings.email_to) == (465, ("a@x", "b@x"))
    assert settings.secrets == {"TAXI_ALERT_WEBHOOK_URL": "http://h", "TAXI_SMTP_PASSWORD": "pw-123456"}
    no_recipient = target_alerts(monkeypatch, tmp_path, TAXI_SMTP_HOST="smtp")
    assert resolved(no_recipient).channels == []  # no recipient, no email
    with pytest.raises(ConfigurationError, match="TAXI_SMTP_PORT"):
        target_alerts(monkeypatch, tmp_path, TAXI_SMTP_PORT="smtp")
    with pytest.raises(ConfigurationError, match="TAXI_SMTP_SECURITY='tls' is not one of starttls, ssl, none"):
        target_alerts(monkeypatch, tmp_path, TAXI_SMTP_SECURITY="tls")
    assert "password" not in repr(alerts.AlertSettings(smtp_password="pw-123456"))
    assert "password" not in repr(AlertChannels(smtp_password="pw-123456"))


def test_webhook_post_is_slack_json_and_retries_a_5xx(webhook):
    webhook.statuses = [503]
    settings = alerts.AlertSettings(webhook_url=webhook.url, backoff_seconds=0.01)
    assert alerts.send_alert(ALERT, settings) == ["webhook"]
    path, body = webhook.wait_for_post(timeout=5)
    assert path == "/hooks/T000/B000/secret-token" and body == ALERT.slack_payload()
    assert len(webhook.attempts) == 2


def test_a_refused_webhook_fails_without_showing_its_url(webhook):
    webhook.statuses = [404]
    settings = alerts.AlertSettings(webhook_url=webhook.url, backoff_seconds=0.01)
    with pytest.raises(alerts.AlertError) as error:
        alerts.send_alert(ALERT, settings)
    assert str(error.value) == "webhook: not delivered after 1 attempt(s) (HTTP 404)"
    unreachable = alerts.AlertSettings(webhook_url="http://user:pw@127.0.0.1:9/x", backoff_seconds=0.01, attempts=2)
    with pytest.raises(alerts.AlertError, match=r"after 2 attempt\(s\) \(ConnectionError\)") as error:
        alerts.post_webhook(ALERT, unreachable)
    assert "pw" not in str(error.value)


def test_email_by_smtp_with_login(smtp_server):
    settings = alerts.AlertSettings(
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
    settings = alerts.AlertSettings(
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


def failure_context(instance, tags, channels: AlertChannels) -> dg.RunFailureSensorContext:
    result = monthly_job.execute_in_process(instance=instance, raise_on_error=False, tags=tags)
    return dg.build_run_status_sensor_context(
        sensor_name="run_failure_alert_sensor",
        dagster_instance=instance,
        dagster_run=result.dagster_run,
        dagster_event=result.get_run_failure_event(),
        resources={"alerts": channels},
    ).for_run_failure()


def test_the_failure_sensor_posts_job_partition_failed_step_and_link(monkeypatch, tmp_path, instance, webhook):
    # The resource of the target, as the code location has it (the webhook URL as an EnvVar).
    channels = target_alerts(
        monkeypatch, tmp_path, TAXI_ALERT_WEBHOOK_URL=webhook.url, TAXI_UI_BASE_URL="http://dagster.local:3000/"
    )
    context = failure_context(instance, {"dagster/partition": "2021-03"}, channels)

    build_failure_sensor()(context)

    _, body = webhook.wait_for_post(timeout=5)
    assert body["text"].splitlines() == [
        "Dagster run failed: monthly_job",
        "Partition: 2021-03",
        "Failed step: download (SourceError: http://***@mirror.local/yellow/yellow_tripdata_2021-03.csv.gz: "
        "HTTP 500 Internal Server Error)",
        f"Run: http://dagster.local:3000/runs/{context.dagster_run.run_id}",
    ]


def test_a_range_run_of_a_backfill_is_named_by_its_range_and_backfill(instance, webhook):
    context = failure_context(
        instance,
        {
            "dagster/asset_partition_range_start": "2019-01",
            "dagster/asset_partition_range_end": "2019-03",
            "dagster/backfill": "bf1",
            "dagster/will_retry": "true",
        },
        AlertChannels(webhook_url=webhook.url),
    )
    build_failure_sensor()(context)
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
    result = cleaning_job.execute_in_process(instance=instance, raise_on_error=False)
    context = dg.build_run_status_sensor_context(
        sensor_name="run_failure_alert_sensor",
        dagster_instance=instance,
        dagster_run=result.dagster_run,
        dagster_event=result.get_run_failure_event(),
        resources={"alerts": AlertChannels(webhook_url=webhook.url)},
    ).for_run_failure()
    build_failure_sensor()(context)
    _, body = webhook.wait_for_post(timeout=5)
    assert body["text"].splitlines()[2] == (
        "Failed step: clean (ContractError: /lake/raw/green/green_tripdata_2019-02.csv.gz: "
        "column 'x' is not in the green contract)"
    )


def test_no_channel_configured_logs_the_alert_instead(instance, monkeypatch):
    sent = []  # every delivery the sensor asks the resource for
    monkeypatch.setattr(AlertChannels, "send", lambda self, alert: sent.append(alert) or [])
    context = failure_context(instance, {}, AlertChannels())
    records: list[logging.LogRecord] = []
    capture = logging.Handler()
    capture.emit = records.append
    context.log.addHandler(capture)  # the tick's log: the sensor logs to the context's logger

    build_failure_sensor()(context)  # no exception: the tick succeeds

    assert sent == []  # nothing delivered, on any channel
    run_id = context.dagster_run.run_id
    assert [(record.levelno, record.getMessage().splitlines()) for record in records] == [
        (
            logging.WARNING,
            [
                "No alert channel configured; the alert would have been:",
                "Dagster run failed: monthly_job",
                "Partition: (none)",
                "Failed step: download (SourceError: http://***@mirror.local/yellow/yellow_tripdata_2021-03.csv.gz: "
                "HTTP 500 Internal Server Error)",
                f"Run id: {run_id} (set TAXI_UI_BASE_URL for a link)",
            ],
        )
    ]


def test_a_delivery_failure_fails_the_tick(instance, webhook):
    webhook.statuses = [400]
    with pytest.raises(Exception, match="webhook: not delivered"):
        build_failure_sensor()(failure_context(instance, {}, AlertChannels(webhook_url=webhook.url)))
