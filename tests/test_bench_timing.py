"""Interleaved timing: round-robin order, per-round ratios and their spread, on fake engines and a fake clock.

No speed is measured here: every time comes from the fake clock, so the figures are exact.
"""
from __future__ import annotations

import functools

import pytest

from qcnn_lite.bench import benchmarks as bench
from qcnn_lite.bench import ort, timing


class FakeMachine:
    """Engines whose calls advance a fake clock by a set cost, times a slow-down per round.

    ``slow[r]``: factor on every engine in round r (a slow episode of the whole machine); thread
    CPU time advances by ``cpu_share`` of the wall time. Rounds are counted from the calls
    (warm-up 0 in these tests), so ``calls`` is the order in which the engines ran.
    """

    def __init__(self, cost: dict[str, float], slow: dict[int, float] | None = None, cpu_share: float = 1.0):
        self.cost, self.slow, self.cpu_share = cost, slow or {}, cpu_share
        self.wall = self.cpu = 0.0
        self.calls: list[str] = []

    def clock(self) -> tuple[float, float]:
        return self.wall, self.cpu

    def engine(self, name: str):
        def fn() -> None:
            r = len(self.calls) // len(self.cost)
            self.calls.append(name)
            dt = self.cost[name] * self.slow.get(r, 1.0) / 1e3  # ms -> s
            self.wall += dt
            self.cpu += dt * self.cpu_share
        return fn

    def fns(self) -> dict:
        return {n: self.engine(n) for n in self.cost}


def test_round_robin_rotates_the_first_engine():
    m = FakeMachine({"a": 1.0, "b": 1.0, "c": 1.0})
    out = timing.interleaved(m.fns(), rounds=4, warmup=0, clock=m.clock)
    assert m.calls == list("abc" "bca" "cab" "abc")
    assert all(len(v["wall"]) == len(v["cpu"]) == 4 for v in out.values())


def test_warmup_calls_are_not_timed():
    m = FakeMachine({"a": 1.0, "b": 2.0})
    out = timing.interleaved(m.fns(), rounds=3, warmup=2, clock=m.clock)
    assert m.calls[:4] == ["a", "a", "b", "b"] and len(m.calls) == 4 + 6
    assert out["b"]["wall"] == pytest.approx([2.0] * 3)
    with pytest.raises(ValueError, match="rounds"):
        timing.interleaved(m.fns(), rounds=0)


def test_per_round_ratios_cancel_a_slow_episode():
    """A round where the whole machine runs 3x slower moves every engine's time, not their ratio."""
    m = FakeMachine({"base": 10.0, "q": 2.0}, slow={1: 3.0, 2: 3.0}, cpu_share=0.5)
    out = timing.interleaved(m.fns(), rounds=5, warmup=0, clock=m.clock)
    assert out["base"]["wall"] == pytest.approx([10, 30, 30, 10, 10])
    assert out["q"]["cpu"] == pytest.approx([1, 3, 3, 1, 1])  # thread CPU time: its own clock
    for clock in ("wall", "cpu"):
        r = timing.round_ratios(out["base"][clock], out["q"][clock])
        assert r == pytest.approx([5.0] * 5)
        s = timing.spread(r)
        assert (s["median"], s["p25"], s["p75"], s["min"], s["max"], s["rounds"]) == pytest.approx((5, 5, 5, 5, 5, 5))


def test_episode_on_one_engine_only_moves_its_rounds():
    """When only Q-CNN's call of one round is slowed (an episode shorter than a round), that round's ratio
    drops and the median ignores it; the spread shows it."""
    m = FakeMachine({"base": 8.0, "q": 2.0})
    fns = m.fns()
    q, n = fns["q"], {"k": 0}

    def q_sometimes_slow() -> None:
        n["k"] += 1
        q()
        if n["k"] == 2:  # its second call took 4x as long
            m.wall += 3 * 2.0 / 1e3
            m.cpu += 3 * 2.0 / 1e3

    out = timing.interleaved({"base": fns["base"], "q": q_sometimes_slow}, rounds=5, warmup=0, clock=m.clock)
    r = timing.round_ratios(out["base"]["cpu"], out["q"]["cpu"])
    assert r == pytest.approx([4, 1, 4, 4, 4])
    s = timing.spread(r)
    assert (s["median"], s["p25"], s["min"], s["max"]) == pytest.approx((4, 4, 1, 4))


def test_spread_percentiles():
    s = timing.spread([3.0, 1.0, 100.0, 2.0, 4.0])
    assert (s["median"], s["p25"], s["p75"], s["min"], s["max"], s["rounds"]) == (3, 2, 4, 1, 100, 5)
    assert timing.spread([1.0, 2.0])["median"] == 1.5
    with pytest.raises(ValueError, match="rounds"):
        timing.round_ratios([1.0], [1.0, 2.0])


def test_summary_keeps_the_time_call_keys():
    s = timing.summary({"wall": [3.0, 1.0, 2.0], "cpu": [2.0, 1.0, 1.5]})
    assert s == {"median_ms": 2.0, "min_ms": 1.0, "max_ms": 3.0, "cpu_median_ms": 1.5, "runs": 3}
    assert set(s) == set(timing.time_call(lambda: None, 2, 0))


def test_engines_times_interleaved_and_marks_missing_peers(monkeypatch):
    """The benchmark's engine table: baselines and Q-CNN in one round-robin, n/a peers as None, and the
    per-round speed-ups (baseline time / Q-CNN time) of every baseline but Q-CNN itself."""
    m = FakeMachine({"dense": 8.0, "torch": 6.0, "q": 2.0}, slow={0: 2.0, 3: 5.0})
    monkeypatch.setattr(bench, "interleaved", functools.partial(timing.interleaved, warmup=0, clock=m.clock))
    fns = m.fns()
    times, per_round = bench._engines(fns["dense"], fns["q"], fns["torch"], None, 6,
                                      ort_fns={ort.ORT_FP32: "n/a", ort.ORT_INT8: "n/a"})
    best = "qcnn-pythran" if "pythran" in bench.kernels.available_backends() else "qcnn-numpy"
    assert times[ort.ORT_FP32] is None and times[ort.ORT_INT8] is None
    assert times["numpy-dense"]["runs"] == 6 and times[best]["cpu_median_ms"] == pytest.approx(2.0)
    assert m.calls[:6] == ["dense", "torch", "q", "torch", "q", "dense"]  # one round-robin, rotating
    assert set(per_round) == {"wall", "cpu"}
    for clock in ("wall", "cpu"):
        assert set(per_round[clock]) == {"numpy-dense", "torch-fp32"}
        assert per_round[clock]["numpy-dense"]["median"] == pytest.approx(4.0)
        assert per_round[clock]["torch-fp32"]["max"] == pytest.approx(3.0)
    # the ratios of medians (the keys Table 2 reads) stay beside them
    assert bench._speedups(times, "cpu_median_ms") == pytest.approx({"numpy-dense": 4.0, "torch-fp32": 3.0})


def _t(ms: float) -> dict[str, float]:
    return {"median_ms": ms, "min_ms": ms, "max_ms": ms, "cpu_median_ms": ms, "runs": 3}


def test_render_networks_shows_round_ratios_and_n_a():
    spread = {"median": 5.0, "p25": 4.5, "p75": 5.5, "min": 4.0, "max": 6.0, "rounds": 3}
    res = {"machine": {"cpu": "test CPU", "cores": 2, "load_average": [1.0, 1.0, 1.0], "numpy": "2", "torch": None},
           "networks": [{"network": "alexnet", "times": {"numpy-dense": _t(10.0), ort.ORT_FP32: None, ort.ORT_INT8: None,
                                                         "qcnn-pythran": _t(2.0)},
                         "speedup": {"numpy-dense": 4.8}, "speedup_cpu": {"numpy-dense": 4.8},
                         "round_speedup": {"numpy-dense": spread}, "round_speedup_cpu": {"numpy-dense": spread},
                         "ort": None}]}
    out = bench.render_networks(res, cpu=True)
    row = next(line for line in out.splitlines() if line.startswith("alexnet "))
    # times: dense, ORT n/a twice, Q-CNN; then x vs dense: the median of the rounds (not the ratio of medians, 4.8)
    assert row.split()[1:6] == ["10.00", "n/a", "n/a", "2.00", "5.00"]
    assert "4.50-5.50 (4.00-6.00)" in out and "3 interleaved rounds" in out
    old = {**res, "networks": [{k: v for k, v in res["networks"][0].items() if not k.startswith("round_")}]}
    row = next(line for line in bench.render_networks(old, cpu=True).splitlines() if line.startswith("alexnet "))
    assert row.split()[5] == "4.80"  # results written before the rounds still render


def test_ort_note_names_the_format():
    facts = {"int8_format": "QDQ", "lrn": "ops",
             "int8_format_times": {"QDQ": _t(1.0), "QOperator": _t(1.25)}}
    assert bench._ort_note("alexnet", facts, True) == "alexnet: QDQ (QDQ 1.00 ms, QOperator 1.25 ms), LRN as elementary ops"
    assert bench._ort_note("alexnet", None, True) is None
