"""Failure alerts, in one place: the text of an alert, its delivery to a webhook and/or by email (each channel
retried with backoff a bounded number of times), the ``alerts`` resource that holds where they go, and
``run_failure_alert_sensor`` that sends one for every failed run, and tries again on later ticks an alert that a
channel did not take (a bounded number of times, then gives it up with an error in the tick's log).

Settings (read in settings.py; the secret ones reach the resource as ``EnvVar``):

- ``TAXI_ALERT_WEBHOOK_URL``: a Slack-compatible incoming webhook; the alert is POSTed as ``{"text": ...}``.
- ``TAXI_SMTP_HOST``, ``TAXI_SMTP_PORT`` (587), ``TAXI_SMTP_SECURITY`` (``starttls``, ``ssl`` or ``none``),
  ``TAXI_SMTP_USER``, ``TAXI_SMTP_PASSWORD``, ``TAXI_ALERT_EMAIL_FROM``, ``TAXI_ALERT_EMAIL_TO`` (comma-separated):
  email, sent when the host and a recipient are set.
- ``TAXI_UI_BASE_URL``: where the Dagster UI is, for the link to the run (e.g. ``https://dagster.example.com``).

An alert never carries a secret: its text is redacted (``taxi_assets.secrets.redact``: credentials in URLs,
``password=`` pairs, signed-URL tokens, and the values of the secret settings it is sent with: the webhook URL and
the SMTP password), and the only setting it shows is the UI base URL.
"""

from __future__ import annotations

import email.policy
import json
import re
import smtplib
import ssl
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
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
from taxi_assets.secrets import redact
from taxi_assets.settings import ALERT_WEBHOOK_URL, SMTP_PASSWORD, UI_BASE_URL, SmtpSecurity

MAX_ERROR_CHARS = 600
MAX_STEPS_LISTED = 5


class AlertError(RuntimeError):
    """An alert could not be delivered on at least one configured channel (the message names which and why, never
    a URL or a login). ``failed``: the reason by channel; ``delivered``: the channels that took it."""

    def __init__(self, message: str, failed: Mapping[str, str] | None = None, delivered: Sequence[str] = ()):
        super().__init__(message)
        self.failed, self.delivered = dict(failed or {}), list(delivered)


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


# --------------------------------------------------------------------------------------------------------------
# The alerts resource: the one declaration of where alerts go


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
    smtp_security: SmtpSecurity = Field(
        default=SmtpSecurity.starttls,
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

    @field_validator("email_to", mode="before")
    @classmethod
    def _split_recipients(cls, value: Any) -> Any:
        if isinstance(value, str) and not isinstance(value, dg.EnvVar):
            return [address.strip() for address in value.split(",") if address.strip()]
        return value

    # The settings as delivered: trimmed, empty ones as unset, the port and sender defaults filled in.
    @property
    def webhook(self) -> str | None:
        return _clean(self.webhook_url)

    @property
    def host(self) -> str | None:
        return _clean(self.smtp_host)

    @property
    def port(self) -> int:
        return self.smtp_port or (465 if self.smtp_security is SmtpSecurity.ssl else 587)

    @property
    def user(self) -> str | None:
        return _clean(self.smtp_user)

    @property
    def password(self) -> str | None:
        return _clean(self.smtp_password)

    @property
    def sender(self) -> str:
        return _clean(self.email_from) or self.user or "dagster@localhost"

    @property
    def recipients(self) -> tuple[str, ...]:
        return tuple(address.strip() for address in self.email_to if address.strip())

    @property
    def base_url(self) -> str | None:
        return _clean(self.ui_base_url)

    @property
    def secrets(self) -> dict[str, str]:
        """The secret settings, by name: their values are redacted from every alert sent with these settings."""
        return {
            name: value for name, value in ((ALERT_WEBHOOK_URL, self.webhook), (SMTP_PASSWORD, self.password)) if value
        }

    @property
    def channels(self) -> list[str]:
        """The configured channels: ``webhook`` and/or ``email``."""
        configured = (("webhook", self.webhook), ("email", self.host and self.recipients))
        return [name for name, setting in configured if setting]

    def text(self, alert: FailureAlert) -> str:
        """The alert's text as it would be sent: redacted, also of this resource's secret settings."""
        return alert.text(self.secrets)

    def send(self, alert: FailureAlert, channels: Sequence[str] | None = None) -> list[str]:
        """Deliver ``alert`` on ``channels`` (default: every configured one); return those that worked.

        Raises ``AlertError`` (naming each failed channel and why, never its URL) if any of them failed.
        """
        return send_alert(alert, self, channels)


# --------------------------------------------------------------------------------------------------------------
# Delivery


def post_webhook(alert: FailureAlert, alerts: AlertChannels) -> None:
    """POST the alert; retry connection errors, 429 and 5xx with backoff. Errors never show the webhook URL."""
    assert alerts.webhook
    last = ""
    for attempt in range(alerts.attempts):
        if attempt:
            time.sleep(alerts.backoff_seconds * 2 ** (attempt - 1))
        try:
            response = requests.post(
                alerts.webhook,
                json=alert.slack_payload(alerts.secrets),
                timeout=(alerts.timeout_seconds, alerts.timeout_seconds),
            )
        except requests.RequestException as error:  # the message would contain the URL: keep the class only
            last = type(error).__name__
            continue
        if response.status_code < 300:
            return
        last = f"HTTP {response.status_code}"
        if response.status_code != 429 and response.status_code < 500:
            break  # a wrong URL or payload: retrying will not help
    raise AlertError(f"webhook: not delivered after {attempt + 1} attempt(s) ({last})", {"webhook": last})


def email_message(alert: FailureAlert, alerts: AlertChannels) -> EmailMessage:
    # Lines up to 998 characters (RFC 5322's limit): the subject and the body stay readable, not folded or encoded.
    message = EmailMessage(policy=email.policy.default.clone(max_line_length=998))
    message["Subject"] = redact(alert.subject, alerts.secrets)
    message["From"] = alerts.sender
    message["To"] = ", ".join(alerts.recipients)
    message["Date"] = formatdate(localtime=False)
    message["Message-ID"] = make_msgid(domain="taxi-assets.local")
    message.set_content(alert.text(alerts.secrets))
    return message


def send_email(alert: FailureAlert, alerts: AlertChannels) -> None:
    """Send the alert by SMTP (STARTTLS, implicit TLS or plain), logging in when a user is set."""
    assert alerts.host and alerts.recipients
    message, security = email_message(alert, alerts), alerts.smtp_security
    last = ""
    for attempt in range(alerts.attempts):
        if attempt:
            time.sleep(alerts.backoff_seconds * 2 ** (attempt - 1))
        try:
            smtp_class = smtplib.SMTP_SSL if security is SmtpSecurity.ssl else smtplib.SMTP
            kwargs = {"context": ssl.create_default_context()} if security is SmtpSecurity.ssl else {}
            with smtp_class(alerts.host, alerts.port, timeout=alerts.timeout_seconds, **kwargs) as smtp:
                if security is SmtpSecurity.starttls:
                    smtp.starttls(context=ssl.create_default_context())
                if alerts.user:
                    smtp.login(alerts.user, alerts.password or "")
                smtp.send_message(message)
            return
        except smtplib.SMTPAuthenticationError as error:
            reason = f"the SMTP server refused the login ({error.smtp_code})"
            raise AlertError(f"email: {reason}", {"email": reason}) from None
        except (OSError, smtplib.SMTPException) as error:
            last = type(error).__name__
    raise AlertError(f"email: not sent after {alerts.attempts} attempt(s) ({last})", {"email": last})


def send_alert(alert: FailureAlert, alerts: AlertChannels, channels: Sequence[str] | None = None) -> list[str]:
    """Deliver ``alert`` on ``channels`` (default: every configured one); return those that worked.

    Raises ``AlertError`` if any of them failed (after trying them all).
    """
    delivered, errors, failed = [], [], {}
    senders = {"webhook": post_webhook, "email": send_email}
    for channel in alerts.channels if channels is None else channels:
        try:
            senders[channel](alert, alerts)
            delivered.append(channel)
        except AlertError as error:
            errors.append(str(error))
            failed.update(error.failed)
    if errors:
        done = f" (delivered by {', '.join(delivered)})" if delivered else ""
        raise AlertError("; ".join(errors) + done, failed, delivered)
    return delivered


# --------------------------------------------------------------------------------------------------------------
# The run failure sensor

FAILURE_SENSOR_INTERVAL = 30  # alerts should be prompt; a tick only reads the event log
MAX_FAILURES_PER_TICK = 100  # new run failures read per tick; more wait for the next tick
MAX_ATTEMPTS = 8  # ticks that try to deliver an alert on a channel before it is given up
FIRST_RETRY_SECONDS = 60.0  # wait before an alert is tried again, doubled for each next try ...
MAX_RETRY_SECONDS = 3600.0  # ... up to an hour: with 8 attempts, an alert is given up about 2 hours after the first
MAX_PENDING = 50  # alerts waiting for a retry; beyond, the oldest is given up (the cursor stays small)


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


def _events(instance: dg.DagsterInstance, run_id: str, event_type: dg.DagsterEventType) -> list[dg.DagsterEvent]:
    records = instance.get_records_for_run(run_id=run_id, of_type=event_type).records
    return [record.event_log_entry.dagster_event for record in records if record.event_log_entry.dagster_event]


def failure_alert(instance: dg.DagsterInstance, run: dg.DagsterRun, ui_base_url: str | None) -> FailureAlert:
    """The alert for the failed ``run``: job, partition, failed steps and why the run failed (from the event
    log), link."""
    steps = []
    for event in _events(instance, run.run_id, dg.DagsterEventType.STEP_FAILURE):
        cls_name, message = _innermost(event.step_failure_data.error if event.step_failure_data else None)
        steps.append(StepFailure(event.step_key or "?", cls_name, message))
    run_error = ""
    failures = _events(instance, run.run_id, dg.DagsterEventType.RUN_FAILURE)
    if not steps and failures:
        error = getattr(failures[-1].event_specific_data, "error", None)
        run_error = " ".join(part for part in _innermost(error) if part) if error else (failures[-1].message or "")
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


@dataclass
class PendingAlert:
    """An alert some channels did not take yet: the failed run (the alert is built again from the event log, so
    no error text, which may hold a secret, is kept), those channels, the ticks that tried, and when to try again."""

    run_id: str
    channels: list[str]
    attempts: int = 0
    first_failed: float = 0.0
    next_try: float = 0.0
    reason: str = ""  # the last failure, per channel (a class name or an HTTP status: never a URL)


@dataclass
class AlertCursor:
    """What the failure sensor remembers between ticks: the newest run failure it has seen (the event's storage
    id) and the alerts waiting for a retry."""

    after: int = -1
    pending: list[PendingAlert] = field(default_factory=list)

    @classmethod
    def parse(cls, raw: str | None) -> AlertCursor | None:
        """The cursor, or ``None`` on the first tick. The cursor of the run failure sensor this sensor was before
        (``record_id``, the same storage ids) is taken up, so no failure is missed across the upgrade."""
        try:
            data = json.loads(raw or "")
        except ValueError:
            return None
        after = data.get("after", data.get("record_id")) if isinstance(data, dict) else None
        if not isinstance(after, int):
            return None
        return cls(after, [PendingAlert(**p) for p in data.get("pending", [])])

    def dump(self) -> str:
        return json.dumps({"after": self.after, "pending": [asdict(p) for p in self.pending]}, separators=(",", ":"))


def _new_failures(instance: dg.DagsterInstance, after: int) -> list:
    """Run failure records after the storage id ``after``, oldest first, of every run of the instance."""
    records_filter = dg.RunStatusChangeRecordsFilter(event_type=dg.DagsterEventType.RUN_FAILURE, after_storage_id=after)
    return instance.fetch_run_status_changes(records_filter, limit=MAX_FAILURES_PER_TICK, ascending=True).records


def build_failure_sensor(
    *,
    minimum_interval_seconds: int = FAILURE_SENSOR_INTERVAL,
    max_attempts: int = MAX_ATTEMPTS,
    first_retry_seconds: float = FIRST_RETRY_SECONDS,
    max_pending: int = MAX_PENDING,
) -> dg.SensorDefinition:
    """``run_failure_alert_sensor``: every failed run of the instance, to the webhook and/or by email (the
    channels of the ``alerts`` resource).

    An alert a channel did not take (after the channel's own attempts) waits in the cursor and is tried again on
    a later tick, ``first_retry_seconds`` later, then twice as long each time (at most an hour), on that channel
    only; after ``max_attempts`` ticks, or when more than ``max_pending`` wait, it is given up with an error in the
    tick's log that names the run and the channel. A channel that fails in a tick is not tried again in that tick.
    """

    @dg.sensor(
        name="run_failure_alert_sensor",
        minimum_interval_seconds=minimum_interval_seconds,
        default_status=dg.DefaultSensorStatus.STOPPED,
        description="Sends an alert for every failed run (job, partition, failed step, link to the run) to the "
        "channels of the alerts resource: a webhook (TAXI_ALERT_WEBHOOK_URL) and/or email (TAXI_SMTP_*); an alert "
        "not delivered is tried again on later ticks. See docs/AUTOMATION.md.",
    )
    def run_failure_alert_sensor(context: dg.SensorEvaluationContext, alerts: AlertChannels) -> dg.SensorResult:
        # Every run of the instance: also runs started from a terminal (`dagster asset materialize`), which
        # belong to no code location. A deployment of taxi_assets has this one location.
        instance, now = context.instance, time.time()
        cursor = AlertCursor.parse(context.cursor)
        if cursor is None:  # first tick: alert the failures from now on, not the instance's history
            newest = instance.fetch_run_status_changes(dg.DagsterEventType.RUN_FAILURE, limit=1).records
            cursor = AlertCursor(after=newest[0].storage_id if newest else -1)
            return dg.SensorResult(cursor=cursor.dump(), skip_reason="Alerting run failures from now on")

        new = _new_failures(instance, cursor.after)
        if new:
            cursor.after = new[-1].storage_id
        due = [p for p in cursor.pending if p.next_try <= now]
        waiting = [p for p in cursor.pending if p.next_try > now]
        configured = alerts.channels
        work = due + [PendingAlert(r.event_log_entry.run_id, configured, first_failed=now) for r in new]
        down: dict[str, str] = {}  # channels that failed in this tick: not tried again before the next one
        sent, given_up = 0, 0
        for item in work:
            run = instance.get_run_by_id(item.run_id)
            if run is None:  # deleted meanwhile: nothing to say about it
                continue
            alert = failure_alert(instance, run, alerts.base_url)
            if not configured:
                context.log.warning(f"No alert channel configured; the alert would have been:\n{alerts.text(alert)}")
                continue
            channels = [c for c in item.channels if c in configured]
            now_down = [c for c in channels if c in down]
            try:
                delivered = alerts.send(alert, [c for c in channels if c not in down])
                failed = dict.fromkeys(now_down, "")
            except AlertError as error:
                delivered, failed = error.delivered, {**error.failed, **dict.fromkeys(now_down, "")}
                down.update(error.failed)
            if delivered:
                sent += 1
                context.log.info(f"Alert for run {item.run_id} sent by {', '.join(delivered)}")
            if not failed:
                continue
            tried = [c for c in failed if c not in now_down]  # a channel skipped in this tick used no attempt
            item.attempts += bool(tried)
            item.channels = list(failed)
            item.reason = "; ".join(f"{c}: {r or down[c]}" for c, r in failed.items())
            if item.attempts >= max_attempts:
                given_up += 1
                context.log.error(
                    f"Alert for run {item.run_id} not delivered by {' and '.join(failed)} after "
                    f"{item.attempts} attempt(s) over {now - item.first_failed:.0f}s ({item.reason}): given up"
                )
                continue
            delay = min(first_retry_seconds * 2 ** max(item.attempts - 1, 0), MAX_RETRY_SECONDS)
            item.next_try = now + (delay if tried else 0)
            context.log.warning(
                f"Alert for run {item.run_id} not delivered by {' and '.join(failed)} ({item.reason}); trying "
                f"again in {delay if tried else 0:.0f}s (attempt {item.attempts} of {max_attempts})"
            )
            waiting.append(item)
        waiting.sort(key=lambda p: p.first_failed)
        for item in waiting[: max(len(waiting) - max_pending, 0)]:
            given_up += 1
            context.log.error(
                f"Alert for run {item.run_id} not delivered by {' and '.join(item.channels)} ({item.reason}): "
                f"given up, more than {max_pending} alerts are waiting"
            )
        cursor.pending = waiting[-max_pending:] if max_pending else []
        summary = (
            f"{len(new)} new run failure(s); {sent} alert(s) sent, {len(cursor.pending)} waiting for a retry, "
            f"{given_up} given up"
        )
        return dg.SensorResult(cursor=cursor.dump(), skip_reason=summary)

    return run_failure_alert_sensor
