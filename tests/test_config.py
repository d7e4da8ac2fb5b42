"""Settings: defaults run locally; bad values fail at start-up naming the variable."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from pdscaler.config import Role, SettingsError, load_settings


def test_defaults_use_an_sqlite_file_in_the_data_directory(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("PDSCALER_DATA_DIR", str(tmp_path))

    settings = load_settings()

    assert settings.database_url == f"sqlite:///{tmp_path / 'pdscaler.db'}"
    assert settings.loop.interval == timedelta(seconds=5)
    assert settings.loop.enabled is False
    assert settings.api.port == 8080
    assert settings.api.anonymous_reads is False


def test_nested_groups_are_read_from_double_underscore_variables(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PDSCALER_DATABASE__URL", "postgresql+psycopg://db.example/pd")
    monkeypatch.setenv("PDSCALER_LOOP__INTERVAL", "30")
    monkeypatch.setenv(
        "PDSCALER_API__TOKENS", '[{"name": "ci", "role": "editor", "sha256": "' + "a" * 64 + '"}]'
    )

    settings = load_settings()

    assert settings.database_url == "postgresql+psycopg://db.example/pd"
    assert settings.loop.interval == timedelta(seconds=30)
    assert settings.api.tokens[0].role is Role.EDITOR


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("PDSCALER_API__PORT", "99999"),
        ("PDSCALER_LOOP__INTERVAL", "0"),
        ("PDSCALER_DATABASE__URL", "mysql://db/pd"),
        ("PDSCALER_PROMETHEUS__URL", "not a url"),
        ("PDSCALER_API__TOKENS", '[{"name": "x", "role": "root", "sha256": "00"}]'),
        ("PDSCALER_LOG_LEVEL", "LOUD"),
    ],
)
def test_bad_setting_names_its_variable(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    monkeypatch.setenv(variable, value)

    with pytest.raises(SettingsError) as raised:
        load_settings()

    assert variable in str(raised.value)


def test_roles_include_the_rights_of_lower_roles() -> None:
    assert Role.ADMIN.allows(Role.EDITOR)
    assert Role.EDITOR.allows(Role.VIEWER)
    assert not Role.VIEWER.allows(Role.EDITOR)
    assert not Role.EDITOR.allows(Role.ADMIN)


@pytest.mark.parametrize(
    ("given", "seconds"),
    [("30", 30), ("2.5", 2.5), ("90s", 90), ("5m", 300), ("1h30m", 5400), ("250ms", 0.25),
     ("PT45S", 45)],
)  # fmt: skip
def test_durations_accept_seconds_go_and_iso_forms(
    monkeypatch: pytest.MonkeyPatch, given: str, seconds: float
) -> None:
    monkeypatch.setenv("PDSCALER_PROMETHEUS__TIMEOUT", given)

    assert load_settings().prometheus.timeout == timedelta(seconds=seconds)


def test_a_misspelt_variable_is_an_error_with_a_suggestion(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PDSCALER_DATA_DRI", "/srv/pdscaler")

    with pytest.raises(SettingsError, match="did you mean PDSCALER_DATA_DIR"):
        load_settings()


def test_the_cli_token_variable_is_not_a_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PDSCALER_TOKEN", "pds_abc")

    assert load_settings().api.tokens == []


def test_invalid_json_names_its_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PDSCALER_API__TOKENS", "alice:editor")

    with pytest.raises(SettingsError, match="PDSCALER_API__TOKENS: not valid JSON"):
        load_settings()


def test_a_misspelt_nested_variable_suggests_the_nested_name(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PDSCALER_DATABASE_URL", "postgresql+psycopg://db/pd")

    with pytest.raises(SettingsError, match="did you mean PDSCALER_DATABASE__URL"):
        load_settings()


def test_log_level_ignores_case(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PDSCALER_LOG_LEVEL", "debug")

    assert load_settings().log_level == "DEBUG"


def test_kubernetes_defaults_follow_client_go_leader_election(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    kubernetes = load_settings().kubernetes

    assert kubernetes.leader_election is True
    assert (kubernetes.lease_duration, kubernetes.renew_deadline, kubernetes.retry_period) == (
        timedelta(seconds=15), timedelta(seconds=10), timedelta(seconds=2))  # fmt: skip


@pytest.mark.parametrize(
    "timing",
    [
        {"LEASE_DURATION": "10s", "RENEW_DEADLINE": "10s"},  # must be longer
        {"RENEW_DEADLINE": "2s"},  # must be longer than the retry period
        {"RETRY_PERIOD": "0"},  # would spin
    ],
)
def test_lease_timings_that_could_elect_two_leaders_are_refused(
    monkeypatch: pytest.MonkeyPatch, timing: dict[str, str]
) -> None:
    for name, value in timing.items():
        monkeypatch.setenv(f"PDSCALER_KUBERNETES__{name}", value)

    with pytest.raises(SettingsError, match=r"PDSCALER_KUBERNETES.*(must exceed|at least)"):
        load_settings()


def test_an_api_server_url_and_a_kubeconfig_are_not_both_allowed(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("PDSCALER_KUBERNETES__HOST", "https://10.0.0.1:6443")
    monkeypatch.setenv("PDSCALER_KUBERNETES__KUBECONFIG", str(tmp_path / "config"))

    with pytest.raises(SettingsError, match="not both"):
        load_settings()


def test_the_loop_can_be_limited_to_some_namespaces(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PDSCALER_LOOP__NAMESPACES", '["inference", "batch"]')

    assert load_settings().loop.namespaces == ["inference", "batch"]


def test_a_namespace_that_is_not_a_dns_label_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PDSCALER_LOOP__NAMESPACES", '["Not_A_Label"]')

    with pytest.raises(SettingsError, match="PDSCALER_LOOP__NAMESPACES"):
        load_settings()
