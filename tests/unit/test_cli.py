"""The ``streamrec`` command line (streams/cli/main.py): user errors are one line on stderr, exit 2."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys

import pytest

from streams.cli import build_parser, main

COMMANDS = ["broker", "worker", "produce", "consume", "demo", "rollback"]


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch):
    for key in [k for k in __import__("os").environ if k.startswith("STREAMREC_")]:
        monkeypatch.delenv(key)


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(err: str, *fragments: str) -> None:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def test_produce_missing_file_exits_2_with_one_line(capsys, tmp_path):
    code, out, err = run(capsys, "produce", str(tmp_path / "missing-file"))
    assert code == 2
    assert_one_line_error(err, "streamrec produce: error:", "missing-file")


def test_produce_missing_file_from_the_real_entry_point(tmp_path):
    """The same through ``python -m streams.cli`` (what the ``streamrec`` script runs)."""
    result = subprocess.run([sys.executable, "-m", "streams.cli", "produce", "missing-file"],
                            cwd=tmp_path, capture_output=True, text=True, timeout=60,
                            env={k: v for k, v in __import__("os").environ.items() if not k.startswith("STREAMREC_")})
    assert result.returncode == 2
    assert_one_line_error(result.stderr, "no such file: missing-file")


def test_invalid_flag_exits_2_naming_it(capsys, tmp_path):
    code, _, err = run(capsys, "produce", str(tmp_path / "x.jsonl"), "--http-port", "eighty")
    assert code == 2
    assert_one_line_error(err, "--http-port", "'eighty'")


def test_invalid_environment_variable_exits_2_naming_it(capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("STREAMREC_PARTITIONS", "zero")
    code, _, err = run(capsys, "produce", str(tmp_path / "x.jsonl"))
    assert code == 2
    assert_one_line_error(err, "STREAMREC_PARTITIONS")


def test_unknown_environment_variable_exits_2_naming_it(capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("STREAMREC_HTTP_PROT", "8080")
    code, _, err = run(capsys, "consume")
    assert code == 2
    assert_one_line_error(err, "unknown setting STREAMREC_HTTP_PROT")


def test_bad_taobao_row_exits_2_naming_file_and_line_before_touching_kafka(capsys, tmp_path):
    path = tmp_path / "UserBehavior.csv"
    path.write_text("1,101,7,pv,soon\n")
    code, _, err = run(capsys, "produce", str(path), "--bootstrap-servers", "127.0.0.1:1")
    assert code == 2
    assert_one_line_error(err, "UserBehavior.csv:1:")


def test_undetectable_format_exits_2(capsys, tmp_path):
    path = tmp_path / "mystery.dat"
    path.write_text("a;b;c\n")
    code, _, err = run(capsys, "produce", str(path))
    assert code == 2
    assert_one_line_error(err, "--format")


def test_broker_port_in_use_exits_2(capsys, monkeypatch):
    monkeypatch.setattr(signal, "signal", lambda *args: None)  # cmd_broker installs handlers
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        code, _, err = run(capsys, "broker", "--broker-port", str(port))
    assert code == 2
    assert_one_line_error(err, "already in use", str(port))


def test_unreachable_kafka_in_consume_exits_2(capsys, monkeypatch):
    import kafka
    from kafka.errors import KafkaTimeoutError

    def unreachable(**kwargs):
        raise KafkaTimeoutError("Unable to bootstrap from 127.0.0.1:1")

    monkeypatch.setattr(kafka, "KafkaConsumer", unreachable)
    code, _, err = run(capsys, "consume", "--bootstrap-servers", "127.0.0.1:1")
    assert code == 2
    assert_one_line_error(err, "cannot reach Kafka at 127.0.0.1:1")


@pytest.mark.parametrize("command", COMMANDS)
def test_help_of_every_command(command, capsys):
    with pytest.raises(SystemExit) as info:
        main([command, "--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    if command not in ("rollback",):
        assert "--bootstrap-servers" in out and "STREAMREC_BOOTSTRAP_SERVERS" in out


def test_every_setting_has_a_flag():
    from streams.settings import Settings

    parser = build_parser()
    args = parser.parse_args(["worker"] + [f"--{name.replace('_', '-')}=1" for name in Settings.model_fields])
    assert all(getattr(args, f"setting__{name}") == "1" for name in Settings.model_fields)


def test_unknown_command_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as info:
        main(["frobnicate"])
    assert info.value.code == 2


def test_the_demo_hands_the_settings_it_was_given_to_its_worker():
    from streams.cli.demo import worker_environment
    from streams.settings import load_settings

    given = load_settings({"top_k": 5, "train": False, "http_port": 7001},
                          environ={"STREAMREC_SASL_PASSWORD": "s3cret", "STREAMREC_FETCH_MAX_WAIT_MS": "20"})
    env = worker_environment(given)
    # the demo's command line sets the port itself; the rest reaches the worker as it would be read
    assert env == {"STREAMREC_TOP_K": "5", "STREAMREC_TRAIN": "false", "STREAMREC_SASL_PASSWORD": "s3cret",
                   "STREAMREC_FETCH_MAX_WAIT_MS": "20"}
    assert load_settings(environ=env).top_k == 5 and not load_settings(environ=env).train
    assert worker_environment(load_settings(environ={})) == {}  # nothing given: the worker's defaults
