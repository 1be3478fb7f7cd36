"""Failure alerts, in one place: the text of an alert, its delivery to a webhook and/or by email (each channel
retried with backoff a bounded number of times), the ``alerts`` resource that holds where they go, and
``run_failure_alert_sensor`` that sends one for every failed run.

Settings (read in settings.py; the secret ones reach the resource as ``EnvVar``):

- ``TAXI_ALERT_WEBHOOK_URL``: a Slack-compatible incoming webhook; the alert is POSTed as ``{"text": ...}``.
- ``TAXI_SMTP_HOST``, ``TAXI_SMTP_PORT`` (587), ``TAXI_SMTP_SECURITY`` (``starttls``, ``ssl`` or ``none``),
  ``TAXI_SMTP_USER``, ``TAXI_SMTP_PASSWORD``, ``TAXI_ALERT_EMAIL_FROM``, ``TAXI_ALERT_EMAIL_TO`` (comma-separated):
  email, sent when the host and a recipient are set.
- ``TAXI_UI_BASE_URL``: where the Dagster UI is, for the link to the run (e.g. ``https://dagster.example.com``).

An alert never carries a secret: its text is redacted (credentials in URLs, ``password=`` pairs, signed-URL
tokens, and the values of the secret settings it is sent with: the webhook URL and the SMTP password), and the
only setting it shows is the UI base URL.
"""

from __future__ import annotations

import email.policy
import re
import smtplib
import ssl
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from typing import Any

import dagster as dg
import requests
from pydantic import Field, field_validator

from taxi_assets.automation.runs import (
    BACKFILL_TAG,
    PARTITION_TAG,
    RANGE_END_TAG,
    RANGE_START_TAG,
    RETRY_NUMBER_TAG,
    WILL_RETRY_TAG,
)
from taxi_assets.settings import ALERT_WEBHOOK_URL, SMTP_PASSWORD, SMTP_SECURITIES, UI_BASE_URL

MAX_ERROR_CHARS = 600
MAX_STEPS_LISTED = 5
REDACTED = "***"
# Values of settings whose name ends like this are never shown (whatever the setting is).
_SECRET_NAME = re.compile(r"(PASSWORD|PASSWD|SECRET|TOKEN|KEY|CREDENTIALS?|_URL|_URI|_DSN|WEBHOOK)$", re.IGNORECASE)
_MIN_SECRET_CHARS = 6  # shorter values (ports, "true") would redact ordinary words
_URL_USERINFO = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)(?P<userinfo>[^/\s@]+)@")
_KEY_VALUE_SECRET = re.compile(
    r"(?P<key>\b(?:password|passwd|pwd|secret|token|api[_-]?key|access[_-]?key)\b\s*[=:]\s*)(?P<value>'[^']*'|\"[^\"]*\"|[^\s&;,]+)",
    re.IGNORECASE,
)
_QUERY_SECRET = re.compile(
    r"(?P<key>[?&](?:sig|signature|token|key|access_token|X-Goog-Signature)=)(?P<value>[^&\s]+)", re.IGNORECASE
)


class AlertError(RuntimeError):
    """An alert could not be delivered on at least one configured channel (the message names which, not how)."""


def redact(text: str, secrets: Mapping[str, str] | None = None) -> str:
    """``text`` without credentials: URL passwords, ``password=...`` pairs, signed-URL tokens, and the value of
    each of ``secrets`` (settings by name, e.g. ``{"TAXI_SMTP_PASSWORD": ...}``) whose name says it is secret."""
    values = sorted(
        (
            value
            for name, value in (secrets or {}).items()
            if value and name != UI_BASE_URL and _SECRET_NAME.search(name) and len(value) >= _MIN_SECRET_CHARS
        ),
        key=len,
        reverse=True,  # the longest first, so a secret that contains another is replaced whole
    )
    for value in values:
        text = text.replace(value, REDACTED)
    text = _URL_USERINFO.sub(lambda m: f"{m['scheme']}{REDACTED}@", text)
    text = _KEY_VALUE_SECRET.sub(lambda m: f"{m['key']}{REDACTED}", text)
    return _QUERY_SECRET.sub(lambda m: f"{m['key']}{REDACTED}", text)


def _shorten(text: str, limit: int = MAX_ERROR_CHARS) -> str:
    text = text.strip()
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


@dataclass(frozen=True)
class StepFailure:
    """A failed step: its key (e.g. ``yellow__raw_trips``) and the error's class name and message."""

    step_key: str
    error_type: str = ""
    message: str = ""


@dataclass(frozen=True)
class FailureAlert:
    """What an alert says about a failed run. ``text(secrets)`` is redacted; build it from run facts only."""

    job_name: str
    run_id: str
    partition: str | None = None
    steps: Sequence[StepFailure] = ()
    run_error: str = ""  # when no step failed: why the run itself failed (did not start, worker crashed)
    run_url: str | None = None
    backfill_id: str | None = None
    retry_note: str = ""

    @property
    def subject(self) -> str:
        where = f" for {self.partition}" if self.partition else ""
        step = f" at step {self.steps[0].step_key}" if self.steps else ""
        return redact(f"[taxi_assets] {self.job_name} failed{where}{step}")

    def text(self, secrets: Mapping[str, str] | None = None) -> str:
        """The alert's text, redacted: credential patterns, and the values of ``secrets`` (see ``redact``)."""
        lines = [f"Dagster run failed: {self.job_name}"]
        lines.append(f"Partition: {self.partition or '(none)'}")
        if self.backfill_id:
            lines.append(f"Backfill: {self.backfill_id}")
        for step in self.steps[:MAX_STEPS_LISTED]:
            error = ": ".join(part for part in (step.error_type, _shorten(step.message)) if part)
            lines.append(f"Failed step: {step.step_key}" + (f" ({error})" if error else ""))
        if len(self.steps) > MAX_STEPS_LISTED:
            lines.append(f"... and {len(self.steps) - MAX_STEPS_LISTED} more failed steps")
        if not self.steps:
            lines.append(
                "Failed step: none, the run failed outside its steps"
                + (f" ({_shorten(self.run_error)})" if self.run_error else "")
            )
        if self.retry_note:
            lines.append(self.retry_note)
        body = redact("\n".join(lines), secrets)
        # The link is built from the UI base URL, the one setting an alert may show (minus any credentials in it).
        link = (
            f"Run: {redact(self.run_url, {})}"
            if self.run_url
            else f"Run id: {self.run_id} (set {UI_BASE_URL} for a link)"
        )
        return f"{body}\n{link}"

    def slack_payload(self, secrets: Mapping[str, str] | None = None) -> dict:
        """Slack-compatible incoming-webhook JSON (also understood by Mattermost and Rocket.Chat)."""
        return {"text": self.text(secrets)}


def run_url(base_url: str | None, run_id: str) -> str | None:
    """Link to the run in the Dagster UI, or ``None`` without a base URL."""
    if not base_url:
        return None
    return f"{base_url.rstrip('/')}/runs/{run_id}"


@dataclass(frozen=True)
class AlertSettings:
    """Where alerts go, checked and resolved (``AlertChannels.settings()`` makes one); empty means "not configured"."""

    webhook_url: str | None = field(default=None, repr=False)
    ui_base_url: str | None = None
    smtp_host: str | None = None
    smtp_port: int = 587
    smtp_security: str = "starttls"
    smtp_user: str | None = None
    smtp_password: str | None = field(default=None, repr=False)
    email_from: str | None = None
    email_to: tuple[str, ...] = ()
    timeout_seconds: float = 10.0
    attempts: int = 3
    backoff_seconds: float = 1.0

    @property
    def secrets(self) -> dict[str, str]:
        """The secret settings, by name: their values are redacted from every alert sent with these settings."""
        return {
            name: value
            for name, value in ((ALERT_WEBHOOK_URL, self.webhook_url), (SMTP_PASSWORD, self.smtp_password))
            if value
        }

    @property
    def channels(self) -> list[str]:
        """The configured channels: ``webhook`` and/or ``email``."""
        return [
            name
            for name, configured in (("webhook", self.webhook_url), ("email", self.smtp_host and self.email_to))
            if configured
        ]


def post_webhook(alert: FailureAlert, settings: AlertSettings) -> None:
    """POST the alert; retry connection errors, 429 and 5xx with backoff. Errors never show the webhook URL."""
    assert settings.webhook_url
    last = ""
    for attempt in range(settings.attempts):
        if attempt:
            time.sleep(settings.backoff_seconds * 2 ** (attempt - 1))
        try:
            response = requests.post(
                settings.webhook_url,
                json=alert.slack_payload(settings.secrets),
                timeout=(settings.timeout_seconds, settings.timeout_seconds),
            )
        except requests.RequestException as error:  # the message would contain the URL: keep the class only
            last = type(error).__name__
            continue
        if response.status_code < 300:
            return
        last = f"HTTP {response.status_code}"
        if response.status_code != 429 and response.status_code < 500:
            break  # a wrong URL or payload: retrying will not help
    raise AlertError(f"webhook: not delivered after {attempt + 1} attempt(s) ({last})")


def email_message(alert: FailureAlert, settings: AlertSettings) -> EmailMessage:
    # Lines up to 998 characters (RFC 5322's limit): the subject and the body stay readable, not folded or encoded.
    message = EmailMessage(policy=email.policy.default.clone(max_line_length=998))
    message["Subject"] = redact(alert.subject, settings.secrets)
    message["From"] = settings.email_from or "dagster@localhost"
    message["To"] = ", ".join(settings.email_to)
    message["Date"] = formatdate(localtime=False)
    message["Message-ID"] = make_msgid(domain="taxi-assets.local")
    message.set_content(alert.text(settings.secrets))
    return message


def send_email(alert: FailureAlert, settings: AlertSettings) -> None:
    """Send the alert by SMTP (STARTTLS, implicit TLS or plain), logging in when a user is set."""
    assert settings.smtp_host and settings.email_to
    message = email_message(alert, settings)
    last = ""
    for attempt in range(settings.attempts):
        if attempt:
            time.sleep(settings.backoff_seconds * 2 ** (attempt - 1))
        try:
            smtp_class = smtplib.SMTP_SSL if settings.smtp_security == "ssl" else smtplib.SMTP
            kwargs = {"context": ssl.create_default_context()} if settings.smtp_security == "ssl" else {}
            with smtp_class(settings.smtp_host, settings.smtp_port, timeout=settings.timeout_seconds, **kwargs) as smtp:
                if settings.smtp_security == "starttls":
                    smtp.starttls(context=ssl.create_default_context())
                if settings.smtp_user:
                    smtp.login(settings.smtp_user, settings.smtp_password or "")
                smtp.send_message(message)
            return
        except smtplib.SMTPAuthenticationError as error:
            raise AlertError(f"email: the SMTP server refused the login ({error.smtp_code})") from None
        except (OSError, smtplib.SMTPException) as error:
            last = type(error).__name__
    raise AlertError(f"email: not sent after {settings.attempts} attempt(s) ({last})")


def send_alert(alert: FailureAlert, settings: AlertSettings) -> list[str]:
    """Deliver ``alert`` on every configured channel; return those that worked.

    Raises ``AlertError`` if any configured channel failed (after trying them all).
    """
    delivered, errors = [], []
    senders = {"webhook": post_webhook, "email": send_email}
    for channel in settings.channels:
        try:
            senders[channel](alert, settings)
            delivered.append(channel)
        except AlertError as error:
            errors.append(str(error))
    if errors:
        done = f" (delivered by {', '.join(delivered)})" if delivered else ""
        raise AlertError("; ".join(errors) + done)
    return delivered


# --------------------------------------------------------------------------------------------------------------
# The alerts resource


def _clean(value: str | None) -> str | None:
    return (value or "").strip() or None


class AlertChannels(dg.ConfigurableResource):
    """Delivers failure alerts to a Slack-compatible webhook and/or by email; with neither set, nothing is sent.

    Example:
        .. code-block:: python

            alerts = AlertChannels(
                webhook_url=dg.EnvVar("TAXI_ALERT_WEBHOOK_URL"), ui_base_url="https://dagster.example.com"
            )
            alerts.send(alert)  # ["webhook"]
    """

    webhook_url: str | None = Field(
        default=None,
        repr=False,
        description='Incoming webhook (Slack, Mattermost, Rocket.Chat) the alert is POSTed to as {"text": ...}. '
        "A secret: never shown in an alert.",
    )
    ui_base_url: str | None = Field(
        default=None,
        description="Address of the Dagster UI as people reach it (e.g. https://dagster.example.com), for the link "
        "to the failed run. The one setting an alert shows.",
    )
    smtp_host: str | None = Field(
        default=None, description="SMTP server; email is sent when it and at least one recipient are set."
    )
    smtp_port: int | None = Field(default=None, description="SMTP port. Unset: 587, or 465 with smtp_security 'ssl'.")
    smtp_security: str = Field(
        default="starttls",
        description="How the SMTP connection is secured: 'starttls' (upgrade a plain connection), 'ssl' "
        "(implicit TLS) or 'none'.",
    )
    smtp_user: str | None = Field(default=None, description="SMTP login, when the server wants one.")
    smtp_password: str | None = Field(
        default=None, repr=False, description="Password of the SMTP login. A secret: never shown in an alert."
    )
    email_from: str | None = Field(
        default=None, description="Sender of the alert email. Unset: the SMTP user, or dagster@localhost."
    )
    email_to: list[str] = Field(
        default=[], description="Recipients of the alert email (a list, or one comma-separated string)."
    )
    timeout_seconds: float = Field(default=10.0, description="Connect and read timeout of each delivery attempt.")
    attempts: int = Field(
        default=3, description="Attempts per channel (connection errors, HTTP 429 and 5xx are retried)."
    )
    backoff_seconds: float = Field(default=1.0, description="Wait before the second attempt, doubled for each next.")

    @field_validator("smtp_security")
    @classmethod
    def _check_security(cls, value: str) -> str:
        if isinstance(value, dg.EnvVar):  # checked once resolved (Dagster validates the resolved value again)
            return value
        security = value.strip().lower()
        if security not in SMTP_SECURITIES:
            raise ValueError(f"smtp_security={value!r} is not one of {', '.join(SMTP_SECURITIES)}")
        return security

    @field_validator("email_to", mode="before")
    @classmethod
    def _split_recipients(cls, value: Any) -> Any:
        if isinstance(value, str) and not isinstance(value, dg.EnvVar):
            return [address.strip() for address in value.split(",") if address.strip()]
        return value

    def settings(self) -> AlertSettings:
        """The delivery settings: trimmed, empty ones as unset, the port and sender defaults filled in."""
        user = _clean(self.smtp_user)
        return AlertSettings(
            webhook_url=_clean(self.webhook_url),
            ui_base_url=_clean(self.ui_base_url),
            smtp_host=_clean(self.smtp_host),
            smtp_port=self.smtp_port or (465 if self.smtp_security == "ssl" else 587),
            smtp_security=self.smtp_security,
            smtp_user=user,
            smtp_password=_clean(self.smtp_password),
            email_from=_clean(self.email_from) or user or "dagster@localhost",
            email_to=tuple(address.strip() for address in self.email_to if address.strip()),
            timeout_seconds=self.timeout_seconds,
            attempts=self.attempts,
            backoff_seconds=self.backoff_seconds,
        )

    @property
    def channels(self) -> list[str]:
        """The configured channels: ``webhook`` and/or ``email``."""
        return self.settings().channels

    def text(self, alert: FailureAlert) -> str:
        """The alert's text as it would be sent: redacted, also of this resource's secret settings."""
        return alert.text(self.settings().secrets)

    def send(self, alert: FailureAlert) -> list[str]:
        """Deliver ``alert`` on every configured channel; return those that worked.

        Raises ``AlertError`` (naming the channel and why, never its URL) if any of them failed.
        """
        return send_alert(alert, self.settings())


# --------------------------------------------------------------------------------------------------------------
# The run failure sensor

FAILURE_SENSOR_INTERVAL = 30  # alerts should be prompt; a tick only reads the event log


def _job_label(run: dg.DagsterRun) -> str:
    if not run.job_name.startswith("__"):
        return run.job_name
    keys = sorted(k.to_user_string() for k in run.asset_selection or ())
    if not keys:
        return run.job_name
    return "assets " + ", ".join(keys[:4]) + (f" and {len(keys) - 4} more" if len(keys) > 4 else "")


def _partition_label(run: dg.DagsterRun) -> str | None:
    if run.tags.get(PARTITION_TAG):
        return run.tags[PARTITION_TAG]
    start, end = run.tags.get(RANGE_START_TAG), run.tags.get(RANGE_END_TAG)
    if start and end:
        return start if start == end else f"{start}...{end}"
    return None


def _wrapper(cls_name: str | None) -> bool:
    # Dagster's framework errors, and a dg.Failure raised from the user's error (fail_fast_on turns
    # a permanent ContractError or SourceError into one, so the retry policy skips it): the cause says more.
    return bool(cls_name) and (cls_name.startswith("Dagster") or cls_name == "Failure")


def _innermost(error) -> tuple[str, str]:
    """Class name and message of the user's error (Dagster wraps it in framework errors, or in a ``Failure``)."""
    while error is not None and error.cause is not None and _wrapper(error.cls_name):
        error = error.cause
    if error is None:
        return "", ""
    message = error.message.strip()
    if error.cls_name:  # "taxi_assets.source.SourceError: http://...": the class is shown apart
        message = re.sub(rf"^[\w.]*\b{re.escape(error.cls_name)}: ", "", message)
    return error.cls_name or "", message


def failure_alert(context: dg.RunFailureSensorContext, ui_base_url: str | None) -> FailureAlert:
    """The alert for the failed run of ``context``: job, partition, failed steps (from the event log), link."""
    run = context.dagster_run
    steps = []
    for event in context.get_step_failure_events():
        cls_name, message = _innermost(event.step_failure_data.error if event.step_failure_data else None)
        steps.append(StepFailure(event.step_key or "?", cls_name, message))
    run_error = ""
    if not steps:
        failure = context.failure_event
        data = failure.event_specific_data
        error = getattr(data, "error", None)
        run_error = " ".join(part for part in _innermost(error) if part) if error else (failure.message or "")
    retry_note = ""
    if run.tags.get(WILL_RETRY_TAG) == "true":
        retry_note = "Dagster retries this run automatically (run_retries)."
    elif run.tags.get(RETRY_NUMBER_TAG):
        retry_note = f"This was automatic retry {run.tags[RETRY_NUMBER_TAG]}; no further retry."
    return FailureAlert(
        job_name=_job_label(run),
        run_id=run.run_id,
        partition=_partition_label(run),
        steps=steps,
        run_error=run_error,
        run_url=run_url(ui_base_url, run.run_id),
        backfill_id=run.tags.get(BACKFILL_TAG),
        retry_note=retry_note,
    )


def build_failure_sensor(*, minimum_interval_seconds: int = FAILURE_SENSOR_INTERVAL) -> dg.SensorDefinition:
    """``run_failure_alert_sensor``: every failed run of the instance, to the webhook and/or by email (the
    channels of the ``alerts`` resource)."""

    @dg.run_failure_sensor(
        name="run_failure_alert_sensor",
        minimum_interval_seconds=minimum_interval_seconds,
        # Every run of the instance: also runs started from a terminal (`dagster asset materialize`), which
        # belong to no code location. A deployment of taxi_assets has this one location.
        monitor_all_code_locations=True,
        default_status=dg.DefaultSensorStatus.STOPPED,
        description="Sends an alert for every failed run (job, partition, failed step, link to the run) to the "
        "channels of the alerts resource: a webhook (TAXI_ALERT_WEBHOOK_URL) and/or email (TAXI_SMTP_*). "
        "See docs/AUTOMATION.md.",
    )
    def run_failure_alert_sensor(context: dg.RunFailureSensorContext, alerts: AlertChannels) -> None:
        alert = failure_alert(context, alerts.settings().ui_base_url)
        if not alerts.channels:
            context.log.warning(f"No alert channel configured; the alert would have been:\n{alerts.text(alert)}")
            return
        # A delivery failure raises: the tick shows as failed in the UI, with the channel and reason.
        delivered = alerts.send(alert)
        context.log.info(f"Alert for run {context.dagster_run.run_id} sent by {', '.join(delivered)}")

    return run_failure_alert_sensor
