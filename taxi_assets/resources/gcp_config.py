"""Settings and credentials of the ``gcp`` target, shared by the GCS lake and the BigQuery warehouse.

Credentials are Application Default Credentials unless ``TAXI_GCP_CREDENTIALS`` holds a key (a path to a JSON
key file, or the JSON itself). With an endpoint override (``STORAGE_EMULATOR_HOST``, ``TAXI_BQ_API_ENDPOINT``)
the clients talk to a local emulator with anonymous credentials. A key is never printed, logged, put into
metadata or quoted in an error: messages name the setting only.
"""

from __future__ import annotations

import json

from google.auth.credentials import AnonymousCredentials, Credentials
from google.oauth2 import credentials as user_credentials
from google.oauth2 import service_account
from pydantic import Field

from taxi_assets.settings import GCP_CREDENTIALS, ConfigurationError

_SCOPES = ["https://www.googleapis.com/auth/cloud-platform"]


def credentials_field():
    """The ``credentials`` field of every GCP client resource and IO manager."""
    return Field(
        default=None,
        description="Key of a service account (path to the JSON file, or the JSON itself); unset: Application "
        "Default Credentials. Give it with EnvVar so it never shows in the UI.",
    )


def api_endpoint_field(api: str, setting: str):
    """The ``api_endpoint`` field of a GCP client resource or IO manager (``api``: Storage, BigQuery)."""
    return Field(default=None, description=f"{api} API endpoint override, e.g. an emulator ({setting}).")


def load_credentials(key: str | None, api_endpoint: str | None = None) -> Credentials | None:
    """Credentials for a client: anonymous against an emulator, the key's when given, else None (ADC).

    ``key`` is the value of ``TAXI_GCP_CREDENTIALS``: a service-account (or ``gcloud`` user) JSON key, inline or
    as a file path. Errors name the setting and say what is wrong, never what the value was; they are raised
    outside the ``except`` blocks so no chained exception (a JSON error holds the whole document) goes along.
    """
    if api_endpoint:
        return AnonymousCredentials()
    if not key or not key.strip():
        return None  # the client library finds Application Default Credentials itself
    key, info, problem = key.strip(), None, None
    try:
        if key.startswith("{"):
            info = json.loads(key)
        else:
            with open(key, encoding="utf-8") as f:
                info = json.load(f)
    except OSError as error:
        problem = f"cannot read the key file ({type(error).__name__})"  # the path is not quoted: it may be a key
    except ValueError:
        problem = "the key is not valid JSON"
    if problem:
        raise ConfigurationError(f"{GCP_CREDENTIALS}: {problem}")

    # Only the two key types that are plain data: google-auth's generic loader also accepts "external_account"
    # configurations, which make the library fetch URLs or run programs named in the file.
    loaders = {
        "service_account": service_account.Credentials.from_service_account_info,
        "authorized_user": user_credentials.Credentials.from_authorized_user_info,
    }
    loader = loaders.get(info.get("type")) if isinstance(info, dict) else None
    if loader is None:
        raise ConfigurationError(f"{GCP_CREDENTIALS}: the JSON is not a service_account or authorized_user key")
    try:
        return loader(info, scopes=_SCOPES)
    except (ValueError, TypeError, KeyError):
        problem = f"the {info['type']} key is incomplete or malformed"
    raise ConfigurationError(f"{GCP_CREDENTIALS}: {problem}")


def client_options(api_endpoint: str | None) -> dict[str, str] | None:
    return {"api_endpoint": api_endpoint} if api_endpoint else None
