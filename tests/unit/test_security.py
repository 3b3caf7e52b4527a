"""Security checks of issue 7 item 5, one test each: HTTP bound to 127.0.0.1 by default,
checkpoints loaded with ``weights_only=True`` (a pickled object is refused, never run), the
announced checksum verified, the message size limit, and no secret in reprs, strings or dumps of
the settings."""

from __future__ import annotations

import json
import logging

import pytest
import torch

from model.checkpoint import CheckpointError, load_checkpoint
from model.recommender import Recommender
from streams.ingest.events import InvalidEvent, parse_event
from streams.lifecycle.model_store import ModelStore, ModelStoreError, ModelUpdate, sha256_file, verify
from streams.settings import Settings, load_settings

SECRET = "s3cr3t-Pa55w0rd-do-not-log"


def test_http_binds_localhost_by_default():
    from streams.app import faust_app

    settings = load_settings({}, environ={})
    assert settings.http_host == "127.0.0.1"
    app = faust_app(settings)
    assert app.conf.web_bind == "127.0.0.1"
    assert app.conf.web_host == "127.0.0.1"


class _Payload:
    """Unpickling this object would create ``marker`` (proof that pickle code ran)."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _valid_checkpoint(path):
    Recommender.fresh(item_ids=[f"i{n}" for n in range(20)]).save(str(path))


def test_checkpoint_with_pickled_object_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    _valid_checkpoint(path)
    ckpt = torch.load(path, weights_only=True)
    ckpt["meta"] = {"note": _Payload(marker)}
    torch.save(ckpt, path)  # a full, well-formed checkpoint with one pickled object inside
    with pytest.raises(CheckpointError):
        load_checkpoint(str(path))
    with pytest.raises(CheckpointError):
        Recommender.from_checkpoint(str(path))
    assert not marker.exists(), "the pickled object was executed"
    # The same file without the object loads: what is refused is the object, not the format.
    ckpt["meta"] = {}
    torch.save(ckpt, path)
    assert Recommender.from_checkpoint(str(path)).vocab is not None


def test_checkpoint_checksum_verified(tmp_path):
    store = ModelStore(tmp_path / "models")
    rec = Recommender.fresh(item_ids=["a", "b", "c"])
    rec.version = 3
    update = store.save(rec)
    assert verify(update) == tmp_path / "models" / "v00000003.pt"
    path = verify(update)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01  # one bit
    path.write_bytes(bytes(data))
    with pytest.raises(ModelStoreError, match="refusing"):
        verify(update)
    forged = ModelUpdate(update.version, update.path, "0" * 64, update.created_ts)
    with pytest.raises(ModelStoreError):
        verify(forged)
    assert sha256_file(path) != update.sha256


def test_message_size_limit():
    limit = 1024
    body = {"user_id": "u1", "item_id": "i1", "type": "click", "ts": 1.0}
    raw = json.dumps(body).encode()
    exact = raw + b" " * (limit - len(raw))  # valid JSON of exactly the limit: accepted
    assert parse_event(exact, max_bytes=limit, max_future_s=60, now=10.0).user_id == "u1"
    with pytest.raises(InvalidEvent) as err:
        parse_event(exact + b" ", max_bytes=limit, max_future_s=60, now=10.0)
    assert err.value.reason == "too_large"
    with pytest.raises(InvalidEvent) as err:  # checked before decoding: a huge message is not parsed
        parse_event(b"[" * 10_000_000, max_bytes=limit, max_future_s=60, now=10.0)
    assert err.value.reason == "too_large"
    assert Settings.model_fields["max_message_bytes"].default == 65_536


def test_no_secret_in_settings_output(caplog):
    settings = load_settings({"security_protocol": "SASL_SSL", "sasl_username": "alice",
                              "sasl_password": SECRET}, environ={})
    assert settings.sasl_password.get_secret_value() == SECRET  # it is there, for the clients
    for text in (repr(settings), str(settings), settings.model_dump_json(), json.dumps(settings.model_dump(
            mode="json")), repr(settings.model_dump()), f"{settings}", repr(settings.sasl_password)):
        assert SECRET not in text
    with caplog.at_level(logging.DEBUG):
        logging.getLogger("streamrec").info("settings: %s / %r", settings, settings)
    assert SECRET not in caplog.text
    # From the environment too, and in the error of an invalid setting next to it.
    env = {"STREAMREC_SASL_PASSWORD": SECRET, "STREAMREC_SECURITY_PROTOCOL": "SASL_PLAINTEXT"}
    assert SECRET not in repr(load_settings({}, environ=env))
    with pytest.raises(Exception) as err:
        load_settings({"http_port": "not-a-port"}, environ=env)
    assert SECRET not in str(err.value)
