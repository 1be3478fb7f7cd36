"""The ``alerts`` resource: where failure alerts go (a webhook and/or email), for ``run_failure_alert_sensor``.

The text of an alert and its delivery are Dagster-free, in taxi_assets/alerts.py; this resource holds the settings
(targets.py fills them from ``TAXI_ALERT_WEBHOOK_URL``, ``TAXI_SMTP_*``, ``TAXI_ALERT_EMAIL_*`` and
``TAXI_UI_BASE_URL``, the secret ones as ``EnvVar``) and hands them to that code.
"""

from __future__ import annotations

from typing import Any

import dagster as dg
from pydantic import Field, field_validator

from taxi_assets import alerts


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
        if security not in alerts.SMTP_SECURITIES:
            raise ValueError(f"smtp_security={value!r} is not one of {', '.join(alerts.SMTP_SECURITIES)}")
        return security

    @field_validator("email_to", mode="before")
    @classmethod
    def _split_recipients(cls, value: Any) -> Any:
        if isinstance(value, str) and not isinstance(value, dg.EnvVar):
            return [address.strip() for address in value.split(",") if address.strip()]
        return value

    def settings(self) -> alerts.AlertSettings:
        """The settings for alerts.py: trimmed, empty ones as unset, the port and sender defaults filled in."""
        user = _clean(self.smtp_user)
        return alerts.AlertSettings(
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

    def text(self, alert: alerts.FailureAlert) -> str:
        """The alert's text as it would be sent: redacted, also of this resource's secret settings."""
        return alert.text(self.settings().secrets)

    def send(self, alert: alerts.FailureAlert) -> list[str]:
        """Deliver ``alert`` on every configured channel; return those that worked.

        Raises ``alerts.AlertError`` (naming the channel and why, never its URL) if any of them failed.
        """
        return alerts.send_alert(alert, self.settings())
