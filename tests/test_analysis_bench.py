"""bench/analysis_sim.py keeps working: a tiny run of each family, and its histogram helpers."""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path

import numpy as np
import pytest

_PATH = Path(__file__).resolve().parent.parent / "bench" / "analysis_sim.py"


@pytest.fixture(scope="module")
def sim():
    spec = importlib.util.spec_from_file_location("analysis_sim", _PATH)
    mod = importlib.util.module_from_spec(spec)
    sys.modules["analysis_sim"] = mod  # dataclasses look their module up
    spec.loader.exec_module(mod)
    return mod


def test_histogram_helpers_match_exact_statistics(sim):
    rng = np.random.default_rng(3)
    y = sim.MU + sim.SIGMA * rng.normal(size=20000)
    h = np.bincount(np.clip(((y - sim.LO) / sim.BW).astype(int), 0, sim.NB - 1), minlength=sim.NB)
    hh = sim.Hist(h)
    assert hh.quantile(0.5) == pytest.approx(np.quantile(y, 0.5), abs=sim.BW)
    assert hh.quantile(0.99) == pytest.approx(np.quantile(y, 0.99), abs=2 * sim.BW)
    t = np.quantile(y, 0.9)
    assert hh.above(np.array(t)) == pytest.approx((y > t).sum(), rel=0.05)
    # the binned Mann-Whitney z is close to the exact one (ties from 2.7% bins are negligible)
    from scipy import stats

    c = y[:2000] + 0.05
    s = y[2000:]
    hc = np.bincount(np.clip(((c - sim.LO) / sim.BW).astype(int), 0, sim.NB - 1), minlength=sim.NB)
    hs = np.bincount(np.clip(((s - sim.LO) / sim.BW).astype(int), 0, sim.NB - 1), minlength=sim.NB)
    z = sim.mw_z(sim.Hist(hc), sim.Hist(hs))
    ref = stats.mannwhitneyu(c, s, alternative="greater", method="asymptotic")
    assert z == pytest.approx(stats.norm.isf(ref.pvalue), abs=0.1)


def test_tiny_cells_run_and_are_sane(sim):
    rng = np.random.default_rng(5)
    scn = {s.name: s for s in sim.SCENARIOS}
    out = sim.simulate_latency_cell(scn["median+20%"], 0.1, 100.0, sim.MARGINS["0"], 40, 6000, rng)
    w = sim.summarise(out["weir-sequential"], False)
    assert w["missed_rate"] <= 0.1 and w["median_total_requests"] <= 2000
    assert sim.summarise(out["flagger-limit1"], False)["rollback_rate"] > 0.5
    out = sim.simulate_latency_cell(scn["S0"], 0.1, 10.0, sim.MARGINS["0"], 40, 4000, rng)
    assert sim.summarise(out["weir-sequential"], True)["false_rollback_rate"] <= 0.15
    assert sim.summarise(out["flagger-limit1"], True)["false_rollback_rate"] > 0.5
    out = sim.simulate_error_cell(scn["errors-0.5%"], 0.1, 100.0, sim.MARGINS["0"], 40, 100_000, rng)
    w = sim.summarise(out["weir-sequential"], False)
    assert w["missed_rate"] <= 0.2 and math.isfinite(w["median_total_requests"])


def test_block_schedule_covers_the_horizon(sim):
    for rate in sim.RATES:
        blocks = sim.block_schedule(rate, 5000 / rate)
        assert blocks[0] == (0, 1)
        t = 0
        for start, d in blocks:
            assert start == t and d >= 1
            if d > 1 and (start // 60) != ((start + d - 1) // 60):
                assert start % 60 == 0  # blocks that span minutes start on a minute boundary
            t += d
        assert t == math.ceil(5000 / rate)
