"""Secrets out of every text a user may see: errors, logs, metadata, alerts and the UI.

``redact(text)`` replaces what looks like a credential wherever it is: the user info of a URL
(``http://user:secret@host``, ``postgresql://user:secret@/db``), ``password=...`` pairs (a libpq keyword DSN, a
URL's query), signed-URL tokens, the private key and secrets of a GCP JSON key; and, given ``secrets`` (settings by
name), the value of each whose name says it is secret, in any form. ``setting_secrets()`` are the values of the
secret settings that are set. This module imports nothing of the package but ``settings``: every layer may use it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

from taxi_assets.settings import (
    ALERT_WEBHOOK_URL,
    GCP_CREDENTIALS,
    MIRROR_URL,
    POSTGRES_URL,
    SMTP_PASSWORD,
    TLC_URL,
    UI_BASE_URL,
    value,
)

REDACTED = "***"
# The settings that may carry a credential (the source URLs: in their user info).
SECRET_SETTINGS = (POSTGRES_URL, MIRROR_URL, TLC_URL, ALERT_WEBHOOK_URL, SMTP_PASSWORD, GCP_CREDENTIALS)
# Values of settings whose name ends like this are never shown (whatever the setting is).
_SECRET_NAME = re.compile(r"(PASSWORD|PASSWD|SECRET|TOKEN|KEY|CREDENTIALS?|_URL|_URI|_DSN|WEBHOOK)$", re.IGNORECASE)
_MIN_SECRET_CHARS = 6  # shorter values (ports, "true") would redact ordinary words
_MIN_VALUE_CHARS = 3  # a known password shorter than this is masked by the patterns only: replacing it garbles text
# user:password@ in a URL, the password up to the last @ before the host (an unencoded @ in it stays masked).
_URL_PASSWORD = re.compile(r"(?P<head>[a-zA-Z][a-zA-Z0-9+.-]*://[^:/?#@\s]*:)[^/?#\s]+@(?=[^@/?#\s]*(?:[/?#\s]|$))")
_SECRET_KEYS = (
    r"password|passwd|pwd|secret|token|api[_-]?key|access[_-]?key|client[_-]?secret|refresh[_-]?token|"
    r"private[_-]?key(?:[_-]?id)?"
)
# key=value, key: value, and JSON's "key": "value".
_KEY_VALUE_SECRET = re.compile(
    rf"(?P<key>[\"']?\b(?:{_SECRET_KEYS})\b[\"']?\s*[=:]\s*)(?P<value>\"(?:[^\"\\]|\\.)*\"|'(?:[^'\\]|\\.)*'|[^\s&;,}}]+)",
    re.IGNORECASE,
)
_QUERY_SECRET = re.compile(
    r"(?P<key>[?&](?:sig|signature|token|key|access_token|X-Goog-Signature|X-Goog-Credential)=)(?P<value>[^&\s]+)",
    re.IGNORECASE,
)
_PRIVATE_KEY = re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----.*?(?:-----END [A-Z ]*PRIVATE KEY-----|$)", re.DOTALL)


def setting_secrets() -> dict[str, str]:
    """The values of the secret settings that are set, by name (for ``redact``)."""
    return {name: text for name in SECRET_SETTINGS if (text := value(name))}


def redact(text: str, secrets: Mapping[str, str] | None = None, values: Iterable[str] = ()) -> str:
    """``text`` without credentials: URL passwords, ``password=...`` pairs, signed-URL tokens, private keys, the
    value of each of ``secrets`` (settings by name, e.g. ``{"TAXI_SMTP_PASSWORD": ...}``) whose name says it is
    secret, and each of ``values`` (known passwords, e.g. of a Postgres conninfo, in every spelling)."""
    named = (
        secret
        for name, secret in (secrets or {}).items()
        if secret and name != UI_BASE_URL and _SECRET_NAME.search(name) and len(secret) >= _MIN_SECRET_CHARS
    )
    known = (secret for secret in values if len(secret) >= _MIN_VALUE_CHARS)
    # The longest first, so a secret that contains another is replaced whole.
    for secret in sorted({*named, *known}, key=len, reverse=True):
        text = text.replace(secret, REDACTED)
    text = _PRIVATE_KEY.sub(REDACTED, text)
    text = _URL_PASSWORD.sub(lambda m: f"{m['head']}{REDACTED}@", text)
    text = _KEY_VALUE_SECRET.sub(lambda m: f"{m['key']}{REDACTED}", text)
    return _QUERY_SECRET.sub(lambda m: f"{m['key']}{REDACTED}", text)
