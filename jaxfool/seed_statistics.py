"""Statistics across seeds: how many evaluations fooling takes, with seeds that never got there
counted as *censored* at their budget (never dropped), and bootstrap confidence intervals.

A seed that did not fool every class within its budget is right-censored: all we know is that
it would have needed more than the budget. The median counts censored seeds as infinitely slow:
with one budget for all seeds (a fixed generation cap) that is exactly the median of the true
times, and it is "not reached" (``None``) when half the seeds or more are censored. scipy does the
statistics: ``scipy.stats.ecdf`` on ``CensoredData`` (the survival curve, "share of seeds done
against evaluations") and ``scipy.stats.bootstrap`` (percentile intervals over seeds).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy import stats

CONFIDENCE = 0.95
RESAMPLES = 2000


def censored_times(times: Sequence[float | None], budgets: Sequence[float]) -> stats.CensoredData:
    """``times[i]``: evaluations at which seed ``i`` was done, ``None`` if not within
    ``budgets[i]`` (then right-censored there)."""
    done = [float(t) for t in times if t is not None]
    censored = [float(b) for t, b in zip(times, budgets) if t is None]
    return stats.CensoredData(uncensored=done, right=censored)


def done_curve(times: Sequence[float | None], budgets: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """The share of seeds done against evaluations (1 - Kaplan-Meier survival): ``(x, share)``
    as steps, ``share[i]`` from ``x[i]`` on; starts at ``(0, 0)``.

    >>> x, share = done_curve([100, 300, None, None], [400] * 4)
    >>> x.tolist(), share.tolist()        # two seeds never done: the curve ends at 0.5 at the budget
    ([0.0, 100.0, 300.0, 400.0], [0.0, 0.25, 0.5, 0.5])
    """
    data = censored_times(times, budgets)
    if data.num_censored() == len(times):  # nobody done: the curve stays at 0
        return np.zeros(1), np.zeros(1)
    cdf = stats.ecdf(data).cdf
    return np.concatenate([[0.0], cdf.quantiles]), np.concatenate([[0.0], cdf.probabilities])


def _interval(values: np.ndarray, statistic, seed: int) -> tuple[float | None, float | None]:
    """Percentile bootstrap interval of ``statistic`` over ``values`` (inf: beyond the budget,
    reported as ``None``); a degenerate sample gives its one value at both ends."""
    if len(values) < 2:
        return (None, None)
    if np.all(values == values[0]):
        v = float(values[0])
        return (v, v) if math.isfinite(v) else (None, None)
    with np.errstate(invalid="ignore"):
        res = stats.bootstrap((values,), statistic, confidence_level=CONFIDENCE, n_resamples=RESAMPLES, method="percentile",
                              random_state=np.random.default_rng(seed), vectorized=True, axis=-1)
    low, high = float(res.confidence_interval.low), float(res.confidence_interval.high)
    return (low if math.isfinite(low) else None, high if math.isfinite(high) else None)


def _iqm(x, axis=-1):
    return stats.trim_mean(x, 0.25, axis=axis)


def time_stats(times: Sequence[float | None], budgets: Sequence[float], seed: int = 0) -> dict:
    """Evaluations to be done, across seeds, censored seeds included.

    Returns a dict: ``seeds``, ``censored`` (seeds not done within their budget), ``median``
    (censored seeds counted as infinitely slow; ``None``: not reached), ``median_ci`` (95 % bootstrap interval; an end beyond
    the budget is ``None``), ``iqm`` (interquartile mean, censored seeds at their budget: a lower
    bound when any is censored, flagged by ``iqm_is_lower_bound``) and ``iqm_ci``.

    >>> s = time_stats([1000, 2000, 3000, None], [5000] * 4)
    >>> s["median"], s["censored"], s["iqm"], s["iqm_is_lower_bound"]
    (2500.0, 1, 2500.0, True)
    >>> time_stats([None, None, 800], [900] * 3)["median"] is None   # 2 of 3 never done
    True
    """
    times = list(times)
    as_inf = np.array([np.inf if t is None else float(t) for t in times])
    at_budget = np.array([float(b) if t is None else float(t) for t, b in zip(times, budgets)])
    censored = sum(t is None for t in times)
    median = float(np.median(as_inf))
    return {
        "seeds": len(times),
        "censored": censored,
        "median": median if math.isfinite(median) else None,
        "median_ci": _interval(as_inf, np.median, seed),
        "iqm": float(_iqm(at_budget)),
        "iqm_is_lower_bound": censored > 0,
        "iqm_ci": _interval(at_budget, _iqm, seed),
    }


def share_stats(shares: Sequence[float], seed: int = 0) -> dict:
    """Mean of per-seed shares (e.g. of classes fooled) with its 95 % bootstrap interval.

    >>> share_stats([1.0, 0.5, 1.0, 0.5])["mean"]
    0.75
    """
    values = np.asarray(shares, float)
    return {"mean": float(values.mean()), "ci": _interval(values, np.mean, seed)}


def seed_table(summary: dict, threshold: float = 0.9999) -> dict:
    """The statistics of one run's seeds (a ``summary.json``): evaluations to fool every class
    at ``threshold`` (censored at each seed's evaluations), and the share of classes fooled at
    99 % and at 99.99 %, as flat columns for ``sweep.csv`` and the susceptibility table."""
    seeds = summary["seeds"]
    key = f"{threshold:g}"
    times = [s.get(f"evaluations_to_{key}") for s in seeds]
    budgets = [s["evaluations"] for s in seeds]
    t = time_stats(times, budgets)
    row = {
        "seeds_censored": t["censored"],
        f"median_evaluations_to_{key}": t["median"],
        f"median_evaluations_to_{key}_ci95": _pair(t["median_ci"]),
        f"iqm_evaluations_to_{key}": round(t["iqm"], 1),
        f"iqm_evaluations_to_{key}_ci95": _pair(t["iqm_ci"]),
    }
    for level in ("0.99", "0.9999"):
        s = share_stats([x[f"fraction_at_least_{level}"] for x in seeds])
        row[f"share_classes_fooled_{level}"] = round(s["mean"], 4)
        row[f"share_classes_fooled_{level}_ci95"] = _pair(s["ci"], 4)
    return row


def _pair(interval: tuple[float | None, float | None], digits: int = 1) -> str:
    """``"low..high"`` for a CSV cell (``>budget`` ends as ``inf``)."""
    low, high = (("inf" if v is None else f"{round(v, digits):g}") for v in interval)
    return f"{low}..{high}"
