"""Settings (streams/settings.py): environment parsing, flags over environment, clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from streams.settings import Settings, SettingsError, env_name, load_settings


def test_defaults_without_environment():
    s = load_settings(environ={})
    assert s.bootstrap_servers == "embedded" and s.embedded
    assert s.kafka_servers == "127.0.0.1:9092"
    assert s.http_port == 6066 and s.partitions == 4 and s.store == "rocksdb"
    assert s.topic_events == "events" and s.topic_dlq == "events.dlq"


def test_process_environment_is_read_by_default(monkeypatch):
    monkeypatch.setenv("STREAMREC_HTTP_PORT", "7001")
    assert load_settings().http_port == 7001


def test_explicit_environ_ignores_the_process_environment(monkeypatch):
    monkeypatch.setenv("STREAMREC_HTTP_PORT", "7001")
    monkeypatch.setenv("STREAMREC_NOT_A_SETTING", "x")
    assert load_settings(environ={}).http_port == 6066


def test_environment_values_are_parsed_to_their_types():
    s = load_settings(environ={
        "STREAMREC_HTTP_PORT": "8080",
        "STREAMREC_BATCH_WINDOW_S": "0.25",
        "STREAMREC_TRAIN": "false",
        "STREAMREC_DATA_DIR": "/tmp/streamrec-x",
        "STREAMREC_BOOTSTRAP_SERVERS": "k1:9092, k2:9093",
        "STREAMREC_STORE": "memory",
        "STREAMREC_SASL_PASSWORD": "hunter2",
        "PATH": "/usr/bin",  # other variables are none of our business
    })
    assert s.http_port == 8080 and s.batch_window_s == 0.25 and s.train is False
    assert s.data_dir == Path("/tmp/streamrec-x") and s.store == "memory"
    assert not s.embedded and s.kafka_servers == "k1:9092, k2:9093"
    assert "hunter2" not in repr(s) and s.sasl_password.get_secret_value() == "hunter2"


def test_flags_override_the_environment():
    env = {"STREAMREC_HTTP_PORT": "8080", "STREAMREC_PARTITIONS": "8"}
    s = load_settings({"http_port": "9090", "partitions": None}, environ=env)
    assert s.http_port == 9090  # the flag wins
    assert s.partitions == 8  # a flag not given (None) leaves the environment's value


def test_settings_are_frozen():
    s = load_settings(environ={})
    with pytest.raises(ValidationError):
        s.http_port = 1


def test_unknown_environment_variable_is_an_error_naming_it():
    with pytest.raises(SettingsError, match="STREAMREC_HTTP_PROT"):
        load_settings(environ={"STREAMREC_HTTP_PROT": "8080"})


def test_unknown_override_is_an_error_naming_it():
    with pytest.raises(SettingsError, match="http_prot"):
        load_settings({"http_prot": 1}, environ={})


@pytest.mark.parametrize("name, value", [
    ("HTTP_PORT", "eighty"),
    ("HTTP_PORT", "0"),
    ("HTTP_PORT", "70000"),
    ("PARTITIONS", "-1"),
    ("TRAIN", "maybe"),
    ("STORE", "rocksdict"),
    ("LOG_LEVEL", "verbose"),
    ("BOOTSTRAP_SERVERS", "localhost"),
    ("BOOTSTRAP_SERVERS", "host:port"),
    ("BATCH_WINDOW_S", "-0.1"),
    ("GIL_SWITCH_INTERVAL_MS", "0"),
    ("SECURITY_PROTOCOL", "TLS"),
    ("APP_ID", ""),
])
def test_invalid_environment_value_is_an_error_naming_the_variable(name, value):
    with pytest.raises(SettingsError) as info:
        load_settings(environ={"STREAMREC_" + name: value})
    message = str(info.value)
    assert f"STREAMREC_{name}=" in message and "invalid setting" in message


def test_invalid_flag_value_is_an_error_naming_the_flag():
    with pytest.raises(SettingsError, match="flag --http-port='x'"):
        load_settings({"http_port": "x"}, environ={"STREAMREC_PARTITIONS": "2"})
    # The environment's invalid value is named as such even when other flags are given.
    with pytest.raises(SettingsError, match="STREAMREC_PARTITIONS"):
        load_settings({"http_port": "1"}, environ={"STREAMREC_PARTITIONS": "many"})


def test_every_field_has_an_environment_variable_and_a_description():
    for name, field in Settings.model_fields.items():
        assert env_name(name) == "STREAMREC_" + name.upper()
        assert field.description


def test_derived_paths_are_per_worker():
    a = load_settings({"data_dir": "/d", "http_port": 7001}, environ={})
    b = load_settings({"data_dir": "/d", "http_port": 7002}, environ={})
    assert a.table_dir != b.table_dir and a.table_dir.parent == Path("/d/tables")
    assert a.model_dir == b.model_dir == Path("/d/models")


def test_kafka_python_security_options():
    assert load_settings(environ={}).kafka_python_security() == {"security_protocol": "PLAINTEXT"}
    sasl = load_settings({"security_protocol": "SASL_SSL", "sasl_username": "u", "sasl_password": "p",
                          "ssl_cafile": "/ca.pem"}, environ={}).kafka_python_security()
    assert sasl["sasl_plain_username"] == "u" and sasl["sasl_plain_password"] == "p"
    assert sasl["ssl_cafile"] == "/ca.pem" and sasl["sasl_mechanism"] == "PLAIN"


def test_trainer_objectives_and_learning_rate_are_settings(tmp_path):
    from model.objectives import OBJECTIVES
    from streams.lifecycle.trainer import initial_trainer
    from streams.settings import ONLINE_OBJECTIVES, objective_weights

    from model.heads import HEADS
    from model.incremental import ONLINE_HEADS
    # one list: the objectives less those whose heads the online trainer cannot train ("replaced")
    assert set(ONLINE_OBJECTIVES) == set(OBJECTIVES) - (set(HEADS) - set(ONLINE_HEADS)) == set(OBJECTIVES) - {"replaced"}
    assert objective_weights("next:1, masked:0.5") == {"next": 1.0, "masked": 0.5}
    settings = load_settings({"data_dir": tmp_path, "train_lr": "0.01", "train_objectives": "next:1,contrastive:0.2"},
                             environ={})
    _, trainer = initial_trainer(settings, None)
    assert trainer.lr == 0.01 and trainer.opt.param_groups[0]["lr"] == 0.01
    assert trainer.ocfg.weights == {"next": 1.0, "contrastive": 0.2}


@pytest.mark.parametrize("value, message", [
    ("next:1,replaced:1", "unknown objective 'replaced'"),
    ("nxt", "unknown objective 'nxt'"),
    ("next:heavy", "weight 'heavy', not a number"),
    ("next:0", "must be > 0"),
])
def test_invalid_trainer_objectives_are_an_error_naming_the_variable(value, message):
    with pytest.raises(SettingsError, match="STREAMREC_TRAIN_OBJECTIVES") as err:
        load_settings(environ={"STREAMREC_TRAIN_OBJECTIVES": value})
    assert message in str(err.value)
