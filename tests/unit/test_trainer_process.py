"""The trainer child: its metrics reach the worker's registry, and it runs in the background
(streams.lifecycle.trainer_process, streams.tuning.background_process)."""

import os
import subprocess
import sys
import threading

import pytest

from streams.lifecycle.trainer_process import MetricsRelay, TrainerProcess, replay
from streams.metrics import Metrics
from streams.settings import Settings
from streams.tuning import background_process


def sample(metrics: Metrics, name: str, labels: dict | None = None) -> float | None:
    return metrics.registry.get_sample_value(name, labels or {})


def test_every_kind_of_metric_call_is_replayed_in_order():
    relay, metrics = MetricsRelay(), Metrics()
    relay.train_dropped.inc()
    relay.train_dropped.inc(2)
    relay.training_loss.set(3.5)
    relay.training_loss.set(1.25)  # the last value wins, as it would have in place
    relay.update_seconds.observe(0.2)
    relay.stage_seconds.labels("train_update").observe(0.05)
    relay.promotion_hit_rate.labels(model="candidate").set(0.125)
    replay(metrics, relay.take())
    assert sample(metrics, "streamrec_train_dropped_total") == 3
    assert sample(metrics, "streamrec_training_loss") == 1.25
    assert sample(metrics, "streamrec_train_update_seconds_count") == 1
    assert sample(metrics, "streamrec_stage_seconds_sum", {"stage": "train_update"}) == 0.05
    assert sample(metrics, "streamrec_promotion_hit_rate", {"model": "candidate"}) == 0.125
    assert relay.take() == []  # taken once


def test_calls_from_several_threads_are_all_kept():
    relay, metrics = MetricsRelay(), Metrics()
    taken = []

    def count(n):
        for _ in range(n):
            relay.train_duplicates.inc()

    threads = [threading.Thread(target=count, args=(5000,)) for _ in range(4)]
    for t in threads:
        t.start()
    while any(t.is_alive() for t in threads):
        taken += relay.take()
    taken += relay.take()
    replay(metrics, taken)
    assert sample(metrics, "streamrec_train_duplicates_total") == 20_000


@pytest.mark.skipif(not hasattr(os, "SCHED_IDLE"), reason="SCHED_IDLE is Linux's")
def test_idle_priority_puts_the_process_and_its_later_threads_under_sched_idle():
    code = ("import os, sys, threading\n"
            "sys.stdin.readline()\n"  # wait until the parent has set the policy
            "t = threading.Thread(target=lambda: print(os.sched_getscheduler(0), flush=True))\n"
            "t.start(); t.join()")
    child = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert background_process(child.pid, "idle") == "idle"
        assert os.sched_getscheduler(child.pid) == os.SCHED_IDLE
        out, _ = child.communicate("go\n", timeout=20)
        assert int(out) == os.SCHED_IDLE  # a thread started afterwards inherits it
    finally:
        child.kill()


def test_low_priority_adds_to_the_niceness():
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        before = os.getpriority(os.PRIO_PROCESS, child.pid)
        assert background_process(child.pid, "low", niceness=5) == "low"
        assert os.getpriority(os.PRIO_PROCESS, child.pid) == min(19, before + 5)
        assert os.sched_getscheduler(child.pid) != getattr(os, "SCHED_IDLE", -1)
    finally:
        child.kill()


@pytest.mark.skipif(not hasattr(os, "SCHED_IDLE"), reason="SCHED_IDLE is Linux's")
def test_the_trainer_child_runs_in_the_background(tmp_path):
    """The worker's trainer child is under SCHED_IDLE from its start (no broker: its reader retries)."""
    settings = Settings(data_dir=tmp_path, bootstrap_servers="127.0.0.1:1")
    proc = TrainerProcess(settings, Metrics())
    proc.start(None)
    try:
        assert os.sched_getscheduler(proc._proc.pid) == os.SCHED_IDLE
    finally:
        proc.stop()
    assert not proc.alive()
