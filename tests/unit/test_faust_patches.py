"""Every private Faust/mode/aiokafka name StreamRec relies on is checked at start-up
(streams/kafka/faust_patches): a removed or changed one stops the worker with an error naming it."""

from __future__ import annotations

import aiokafka
import faust.streams
import pytest
from faust.tables.recovery import Recovery

import streams.wiring
from streams.kafka import faust_patches
from streams.kafka.faust_patches import OVERRIDES, FaustPatchError, Override


def test_every_override_holds_for_the_installed_versions():
    assert [str(o) for o in OVERRIDES if o.problem() is not None] == []
    faust_patches.check()


def test_a_removed_method_stops_the_worker_with_its_name(make_settings, monkeypatch):
    monkeypatch.delattr(Recovery, "_build_highwaters")
    with pytest.raises(FaustPatchError, match=r"faust\.tables\.recovery:Recovery\._build_highwaters .*no longer exists"):
        streams.wiring.create(make_settings(serving_processes=False))


def test_a_changed_signature_is_named(monkeypatch):
    monkeypatch.setattr(aiokafka.AIOKafkaProducer, "_partition", lambda self, topic, key: 0)
    with pytest.raises(FaustPatchError, match=r"AIOKafkaProducer\._partition takes \(self, topic, key\), expected"):
        faust_patches.check()


def test_a_module_attribute_of_another_kind_is_named(monkeypatch):
    monkeypatch.setattr(faust.streams, "_current_event", None)
    with pytest.raises(FaustPatchError, match=r"faust\.streams\._current_event is a NoneType, expected a ContextVar"):
        faust_patches.check()


def test_an_instance_attribute_no_longer_assigned_is_named(monkeypatch):
    def init(self, *args, **kwargs):  # an __init__ that no longer sets _fetch_max_wait_ms
        pass

    monkeypatch.setattr(aiokafka.AIOKafkaConsumer, "__init__", init)
    with pytest.raises(FaustPatchError, match=r"AIOKafkaConsumer\.__init__ no longer sets self\._fetch_max_wait_ms"):
        faust_patches.check()


def test_an_owner_that_cannot_be_imported_is_named():
    gone = Override("faust.no_such_module:Thing", "_x", "a test")
    with pytest.raises(FaustPatchError, match=r"faust\.no_such_module:Thing cannot be imported"):
        faust_patches.check((gone,))
