"""Comparisons a reader can trust: paired differences over seeds with a 95 % confidence interval.

Two configurations trained with the same seeds see the same data order and initial draws, so
their per-seed differences vary less than either accuracy; the interval is Student's t over
those differences. A difference is *resolved* only when its interval excludes zero.
"""
from __future__ import annotations

import math
import statistics

from scipy import stats as scipy_stats

VERDICTS = ("supported", "contradicted", "not resolved at this budget")


def seed_of(run_name: str) -> int:
    """The seed at the end of a run name such as ``fashion-mnist-drstn_v5-seed2``."""
    head, sep, tail = run_name.rpartition("-seed")
    if not sep or not tail.isdigit():
        raise ValueError(f"run name {run_name!r} does not end in -seed<N>")
    return int(tail)


def paired_difference(a: dict[int, float], b: dict[int, float], confidence: float = 0.95) -> dict:
    """Mean of ``a[seed] - b[seed]`` over the seeds both have, its standard deviation, and the
    ``confidence`` interval of the mean (Student's t with n - 1 degrees of freedom)."""
    seeds = sorted(set(a) & set(b))
    if len(seeds) < 2:
        raise ValueError(f"a paired difference needs at least two shared seeds; got {seeds}")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must lie in (0, 1); got {confidence}")
    diffs = [a[s] - b[s] for s in seeds]
    mean, std = statistics.mean(diffs), statistics.stdev(diffs)
    half = scipy_stats.t.ppf(0.5 + confidence / 2, len(diffs) - 1) * std / math.sqrt(len(diffs))
    return dict(mean=mean, std=std, low=mean - half, high=mean + half, seeds=seeds)


def interval_text(difference: dict) -> str:
    """The 95 % interval of a :func:`paired_difference` as tables and prose print it:
    ``[low, high]`` in points, two decimals."""
    return f"[{difference['low']:.2f}, {difference['high']:.2f}]"


def verdict(difference: dict, paper_says_better: bool = True) -> str:
    """``supported`` when the interval excludes zero on the side the paper claims,
    ``contradicted`` when it excludes zero on the other side, else not resolved."""
    if difference["low"] > 0:
        return VERDICTS[0] if paper_says_better else VERDICTS[1]
    if difference["high"] < 0:
        return VERDICTS[1] if paper_says_better else VERDICTS[0]
    return VERDICTS[2]


def compare_runs(runs: dict[str, dict], model: str, baseline: str, key: str = "final_test_acc",
                 paper_says_better: bool = True) -> dict:
    """A row comparing the runs named ``<model>-seedN`` with ``<baseline>-seedN`` (histories as
    :func:`dmcbook.experiments.load_runs` returns them), in percentage points."""
    def by_seed(prefix):
        return {seed_of(n): 100 * h[key] for n, h in runs.items()
                if n.rpartition("-seed")[0] == prefix and h.get("status") == "finished"}
    a, b = by_seed(model), by_seed(baseline)
    diff = paired_difference(a, b)
    return {"comparison": f"{model} - {baseline}", "seeds": len(diff["seeds"]),
            "difference (points)": round(diff["mean"], 2),
            "95 % interval": interval_text(diff),
            "verdict": verdict(diff, paper_says_better)}
