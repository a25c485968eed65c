from __future__ import annotations

from pathlib import Path

import pytest

from config.settings import ConfigError, load_settings


def test_defaults_come_from_default_toml() -> None:
    settings = load_settings({})
    assert (settings.mqtt.host, settings.mqtt.port) == ("127.0.0.1", 1883)
    assert settings.influx.url == "http://127.0.0.1:8086"
    assert (settings.api.host, settings.api.port) == ("127.0.0.1", 8000)


def test_environment_overrides_one_key_and_is_converted() -> None:
    settings = load_settings({"MINGLIANG_MQTT__PORT": "1884", "UNRELATED": "x"})
    assert settings.mqtt.port == 1884
    assert settings.mqtt.host == "127.0.0.1"


def test_file_layers_over_defaults(tmp_path: Path) -> None:
    conf = tmp_path / "site.toml"
    conf.write_text('[influx]\nurl = "http://10.0.0.5:8086"\n')
    settings = load_settings({"MINGLIANG_CONFIG": str(conf)})
    assert settings.influx.url == "http://10.0.0.5:8086"
    assert settings.influx.database == "mingliang"


def test_error_names_file_key_and_value(tmp_path: Path) -> None:
    conf = tmp_path / "bad.toml"
    conf.write_text("[ingest]\nmax_payload_bytes = 12\n")
    with pytest.raises(ConfigError) as err:
        load_settings({}, conf)
    message = str(err.value)
    assert str(conf) in message
    assert "ingest.max_payload_bytes" in message
    assert "12" in message


def test_unknown_key_is_refused(tmp_path: Path) -> None:
    conf = tmp_path / "typo.toml"
    conf.write_text("[mqtt]\nhots = 'broker'\n")
    with pytest.raises(ConfigError, match=r"mqtt\.hots: unknown key"):
        load_settings({}, conf)


def test_invalid_toml_and_missing_file_are_named(tmp_path: Path) -> None:
    broken = tmp_path / "broken.toml"
    broken.write_text("[mqtt\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_settings({}, broken)
    with pytest.raises(ConfigError, match="file not found"):
        load_settings({}, tmp_path / "absent.toml")


def test_v2_api_needs_token_org_bucket() -> None:
    with pytest.raises(ConfigError, match="token, org, bucket"):
        load_settings({"MINGLIANG_INFLUX__API": "v2"})
    settings = load_settings(
        {},
        influx={"api": "v2", "token": "t", "org": "district", "bucket": "telemetry"},
    )
    assert settings.influx.bucket == "telemetry"


def test_relative_paths_resolve_from_the_project_root() -> None:
    settings = load_settings({"MINGLIANG_PATHS__DATA_DIR": "/var/lib/mingliang"})
    assert settings.data_dir == Path("/var/lib/mingliang")
    assert load_settings({}).inventory_path.is_file()


def test_configuration_reference_is_up_to_date() -> None:
    from config.__main__ import reference

    doc = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"
    assert doc.read_text() == reference(), "run: python -m config > docs/configuration.md"


@pytest.mark.parametrize(
    ("name", "says"),
    [
        ("MINGLIANG_MQTT_PORT", "MINGLIANG_<SECTION>__<KEY>"),  # one underscore: a typo
        ("MINGLIANG_MQTT__HOTS", "[mqtt] has no key 'hots'"),
        ("MINGLIANG_MQT__HOST", "no key 'mqt'"),
        ("MINGLIANG_MQTT", "MINGLIANG_<SECTION>__<KEY>"),
        ("MINGLIANG_MQTT__PORT__X", "'port' has no keys below it"),
    ],
)
def test_a_misspelt_variable_is_refused_by_name(name: str, says: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_settings({name: "1884"})
    assert name in str(err.value) and says in str(err.value)


def test_nested_keys_and_the_test_suites_variables_are_accepted() -> None:
    env = {"MINGLIANG_ALERTS__REMIND_AFTER_S__CRITICAL": "60", "MINGLIANG_TEST_PGPORT": "5"}
    assert load_settings(env).alerts.remind_after_s["critical"] == 60


def test_auth_penalties_must_fit_the_window() -> None:
    settings = load_settings({})
    assert (settings.auth.free_failures, settings.auth.failure_window_s) == (5, 300)
    assert (settings.auth.penalty_initial_s, settings.auth.penalty_max_s) == (1, 60)
    with pytest.raises(ConfigError, match="penalty_max_s must not exceed failure_window_s"):
        load_settings({}, auth={"penalty_max_s": 600})
    with pytest.raises(ConfigError, match="penalty_initial_s must not exceed penalty_max_s"):
        load_settings({}, auth={"penalty_initial_s": 90})


def test_tls_files_are_taken_from_the_project_root_and_go_in_pairs(tmp_path: Path) -> None:
    from config.settings import PROJECT_ROOT

    env = {"MINGLIANG_MQTT__TLS_CA": "data/tls/ca.pem"}
    assert load_settings(env).mqtt.tls_ca == PROJECT_ROOT / "data" / "tls" / "ca.pem"
    assert load_settings({}).mqtt.tls_ca is None
    api = {"tls_cert": str(tmp_path / "server.pem"), "tls_key": "data/tls/server.key"}
    settings = load_settings({}, api=api)
    assert settings.api.tls_cert == tmp_path / "server.pem"
    assert settings.api.tls_key == PROJECT_ROOT / "data" / "tls" / "server.key"
    for lone in ("tls_cert", "tls_key"):
        with pytest.raises(ConfigError, match="tls_cert and tls_key go together"):
            load_settings({}, api={lone: "data/tls/x.pem"})


def test_a_cluster_node_needs_postgresql_and_an_address_the_others_can_reach() -> None:
    node = {"MINGLIANG_CLUSTER__NODE_ID": "node-1"}
    with pytest.raises(ConfigError, match=r"needs alerts\.store_url to be a postgresql"):
        load_settings(node)
    shared = {**node, "MINGLIANG_ALERTS__STORE_URL": "postgresql+psycopg://ml@db/alerts"}
    anywhere = {**shared, "MINGLIANG_API__HOST": "0.0.0.0"}
    with pytest.raises(ConfigError, match=r"cluster\.api_url is needed when api\.host is"):
        load_settings(anywhere)
    reachable = {**anywhere, "MINGLIANG_CLUSTER__API_URL": "http://10.0.0.11:8000"}
    assert load_settings(reachable).node_api_url == "http://10.0.0.11:8000"
    assert load_settings(shared).node_api_url == "http://127.0.0.1:8000"
    hasty = {
        **shared,
        "MINGLIANG_CLUSTER__HEARTBEAT_S": "2",
        "MINGLIANG_CLUSTER__DEAD_AFTER_S": "3",
    }
    with pytest.raises(ConfigError, match=r"dead_after_s 3\.0 must be at least twice heartbeat_s"):
        load_settings(hasty)
