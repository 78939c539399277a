"""Settings: defaults in dev, refusal of placeholder secrets in prod, naming the variable."""

from __future__ import annotations

import pytest

from libs.secrets import DEV_SECRETS_KEY, generate_key
from libs.settings import DEV_DEFAULTS, OPTIONAL_IN_PROD, Settings, SettingsError, load_settings

#: One real key for every prod test (generated once: a Fernet key is not an arbitrary string).
PROD_KEY = generate_key()


def real_values() -> dict[str, str]:
    """A real value for every prod secret."""
    values = {name: f"real-{name}-0123456789" for name in DEV_DEFAULTS}
    values["secrets_keys"] = PROD_KEY
    return values


def test_dev_fills_documented_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in DEV_DEFAULTS:
        monkeypatch.delenv(f"ZAPQ_{name.upper()}", raising=False)
    settings = load_settings(env="dev")
    assert settings.meta_app_secret == DEV_DEFAULTS["meta_app_secret"]
    assert settings.redis_url.startswith("redis://")


@pytest.mark.parametrize("missing", sorted(set(DEV_DEFAULTS) - OPTIONAL_IN_PROD))
def test_prod_refuses_missing_secret_and_names_it(missing: str) -> None:
    values = real_values()
    values[missing] = ""
    with pytest.raises(SettingsError, match=f"ZAPQ_{missing.upper()}"):
        load_settings(env="prod", **values)


def test_prod_refuses_placeholders_and_dev_defaults() -> None:
    values = real_values()
    with pytest.raises(SettingsError, match="ZAPQ_API_TOKEN"):
        load_settings(env="prod", **{**values, "api_token": "changeme"})
    with pytest.raises(SettingsError, match="ZAPQ_META_APP_SECRET"):
        load_settings(env="prod", **{**values, "meta_app_secret": DEV_DEFAULTS["meta_app_secret"]})


def test_prod_with_real_secrets_starts_and_is_frozen() -> None:
    settings = load_settings(env="prod", **real_values())
    with pytest.raises(Exception):  # noqa: B017 - pydantic's frozen error type
        settings.api_token = "other"  # type: ignore[misc]


def test_invalid_value_names_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ZAPQ_ENV", "staging")
    with pytest.raises(SettingsError, match="ZAPQ_ENV"):
        load_settings()


@pytest.mark.parametrize("endpoint", ["otel-collector:4318", "grpc://otel:4317/v1/traces", "http://"])
def test_a_tracing_endpoint_that_is_not_an_http_url_is_refused(endpoint: str) -> None:
    with pytest.raises(SettingsError, match="ZAPQ_OTEL_ENDPOINT must be an http"):
        load_settings(otel_endpoint=endpoint)
    assert load_settings(otel_endpoint="https://api.honeycomb.io/v1/traces").otel_endpoint.startswith("https://")


def test_database_url_forms() -> None:
    settings = Settings(database_url="postgresql://u@h:5432/d")
    assert settings.sqlalchemy_url == "postgresql+psycopg://u@h:5432/d"
    assert settings.libpq_url == "postgresql://u@h:5432/d"


def test_prod_refuses_to_start_without_a_secrets_key_and_names_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """Given prod and every other secret real, when ZAPQ_SECRETS_KEYS is unset (or the dev key), start-up
    fails naming the variable; with a real key it starts."""
    monkeypatch.delenv("ZAPQ_SECRETS_KEYS", raising=False)
    values = real_values()
    del values["secrets_keys"]
    with pytest.raises(SettingsError, match="ZAPQ_SECRETS_KEYS"):
        load_settings(env="prod", **values)
    with pytest.raises(SettingsError, match="ZAPQ_SECRETS_KEYS"):
        load_settings(env="prod", **values, secrets_keys=DEV_SECRETS_KEY)
    with pytest.raises(SettingsError, match="ZAPQ_SECRETS_KEYS"):
        load_settings(env="prod", **values, secrets_keys=f"{PROD_KEY},{DEV_SECRETS_KEY}")
    assert load_settings(env="prod", **values, secrets_keys=PROD_KEY).secrets_key_list == [PROD_KEY]


def test_a_malformed_secrets_key_is_refused_in_every_environment_without_echoing_it() -> None:
    for env in ("dev", "prod"):
        with pytest.raises(SettingsError, match="ZAPQ_SECRETS_KEYS: key 2 is not a Fernet key") as caught:
            load_settings(env=env, **{**real_values(), "secrets_keys": f"{PROD_KEY},not-a-key-hunter2"})
        assert "hunter2" not in str(caught.value)


def test_dev_and_test_have_the_documented_default_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ZAPQ_SECRETS_KEYS", raising=False)
    assert load_settings(env="test").secrets_key_list == [DEV_SECRETS_KEY]


def test_prod_accepts_no_global_baileys_secret_but_not_a_placeholder() -> None:
    """The global Baileys secret is a migration path: unset in prod disables ``/webhooks/baileys``."""
    assert load_settings(env="prod", **{**real_values(), "baileys_webhook_secret": ""}).baileys_webhook_secret == ""
    with pytest.raises(SettingsError, match="ZAPQ_BAILEYS_WEBHOOK_SECRET"):
        load_settings(env="prod", **{**real_values(), "baileys_webhook_secret": "changeme"})
