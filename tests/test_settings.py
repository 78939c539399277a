"""Settings: defaults in dev, refusal of placeholder secrets in prod, naming the variable."""

from __future__ import annotations

import pytest

from libs.settings import DEV_DEFAULTS, Settings, SettingsError, load_settings


def test_dev_fills_documented_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in DEV_DEFAULTS:
        monkeypatch.delenv(f"ZAPQ_{name.upper()}", raising=False)
    settings = load_settings(env="dev")
    assert settings.meta_app_secret == DEV_DEFAULTS["meta_app_secret"]
    assert settings.redis_url.startswith("redis://")


@pytest.mark.parametrize("missing", sorted(DEV_DEFAULTS))
def test_prod_refuses_missing_secret_and_names_it(missing: str) -> None:
    values = {name: f"real-{name}-0123456789" for name in DEV_DEFAULTS}
    values[missing] = ""
    with pytest.raises(SettingsError, match=f"ZAPQ_{missing.upper()}"):
        load_settings(env="prod", **values)


def test_prod_refuses_placeholders_and_dev_defaults() -> None:
    values = {name: f"real-{name}-0123456789" for name in DEV_DEFAULTS}
    with pytest.raises(SettingsError, match="ZAPQ_API_TOKEN"):
        load_settings(env="prod", **{**values, "api_token": "changeme"})
    with pytest.raises(SettingsError, match="ZAPQ_META_APP_SECRET"):
        load_settings(env="prod", **{**values, "meta_app_secret": DEV_DEFAULTS["meta_app_secret"]})


def test_prod_with_real_secrets_starts_and_is_frozen() -> None:
    settings = load_settings(env="prod", **{name: f"real-{name}-0123456789" for name in DEV_DEFAULTS})
    with pytest.raises(Exception):  # noqa: B017 - pydantic's frozen error type
        settings.api_token = "other"  # type: ignore[misc]


def test_invalid_value_names_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ZAPQ_ENV", "staging")
    with pytest.raises(SettingsError, match="ZAPQ_ENV"):
        load_settings()


def test_database_url_forms() -> None:
    settings = Settings(database_url="postgresql://u@h:5432/d")
    assert settings.sqlalchemy_url == "postgresql+psycopg://u@h:5432/d"
    assert settings.libpq_url == "postgresql://u@h:5432/d"
