"""The trainer child's metrics reach the worker's registry (streams.lifecycle.trainer_process)."""

import threading

from streams.lifecycle.trainer_process import MetricsRelay, replay
from streams.metrics import Metrics


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
