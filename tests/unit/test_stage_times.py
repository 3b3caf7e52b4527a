"""The per-stage cost budget's bookkeeping (streams.metrics.StageTimes)."""

import pytest

from streams import metrics as metrics_module
from streams.metrics import STAGES, Metrics


def stage_sums(metrics: Metrics) -> dict[str, tuple[float, float]]:
    out = {}
    for family in metrics.registry.collect():
        if family.name != "streamrec_stage_seconds":
            continue
        for sample in family.samples:
            stage = sample.labels.get("stage")
            if sample.name.endswith("_sum"):
                out.setdefault(stage, [0.0, 0.0])[0] = sample.value
            elif sample.name.endswith("_count"):
                out.setdefault(stage, [0.0, 0.0])[1] = sample.value
    return {stage: tuple(v) for stage, v in out.items()}


class Clock:
    """A perf_counter that moves only when told (the test asserts exact sums, whatever the load)."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_marks_attribute_the_time_since_the_last_call_and_observe_once_per_batch(monkeypatch):
    clock = Clock()
    monkeypatch.setattr(metrics_module.time, "perf_counter", clock)
    metrics = Metrics()
    stages = metrics.stages
    for _ in range(3):  # three events of one batch
        stages.start()
        clock.now += 0.002
        stages.mark("decode")
        clock.now += 0.004
        stages.mark("state")
        clock.now += 0.01  # between events (an await): counted nowhere
    stages.add("produce", 0.5)
    assert stage_sums(metrics) == {}  # nothing observed before the batch ends
    stages.observe()
    sums = stage_sums(metrics)
    assert set(sums) == {"decode", "state", "produce"}
    assert all(count == 1 for _, count in sums.values())  # one observation per stage and batch
    assert sums["decode"][0] == pytest.approx(0.006) and sums["state"][0] == pytest.approx(0.012)
    assert sums["produce"][0] == 0.5
    stages.observe()  # an empty batch observes nothing more
    assert stage_sums(metrics) == sums


def test_every_stage_the_worker_times_is_listed():
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parents[2] / "streams"
    timed = set()
    for path in root.rglob("*.py"):
        text = path.read_text()
        timed |= set(re.findall(r'stages\.(?:mark|add)\("(\w+)"', text))
        timed |= set(re.findall(r'timings\["(\w+)"\]', text))
        timed |= set(re.findall(r'stage_seconds\.labels\("(\w+)"\)', text))
    assert timed == set(STAGES)
