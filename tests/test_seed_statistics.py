"""Statistics across seeds, censoring included, against hand-computed cases."""

import numpy as np
import pytest

from jaxfool.report import evaluations_cell
from jaxfool.seed_statistics import done_curve, seed_table, share_stats, time_stats


def test_censored_seeds_count_as_slower_than_the_budget_never_dropped():
    # Sorted with the censored seed last: 1000, 2000, 3000, >5000 -> median (2000 + 3000) / 2.
    s = time_stats([3000, None, 1000, 2000], [5000] * 4)
    assert s["median"] == 2500.0 and s["censored"] == 1 and s["seeds"] == 4
    # Dropping the censored seed would give 2000: it is kept.
    assert time_stats([3000, 1000, 2000], [5000] * 3)["median"] == 2000.0
    # IQM of 1000, 2000, 3000, 5000 (censored at the budget): the middle two, 2500, a lower bound.
    assert s["iqm"] == 2500.0 and s["iqm_is_lower_bound"]
    # Half the seeds censored: the median is not reached, and neither is the interval's top.
    half = time_stats([100, None, 300, None], [400] * 4)
    assert half["median"] is None and half["median_ci"][1] is None and half["median_ci"][0] is not None


def test_iqm_of_eight_seeds_is_the_mean_of_the_middle_four():
    s = time_stats([800, 100, 700, 200, 600, 300, 500, 400], [10_000] * 8)
    assert s["iqm"] == pytest.approx((300 + 400 + 500 + 600) / 4) and s["median"] == 450.0 and not s["iqm_is_lower_bound"]


def test_bootstrap_intervals_hold_their_statistic_and_repeat():
    times = [1200, 1500, 900, 2000, 1100, 1700, 1300, 5000]
    a, b = time_stats(times, [9000] * 8), time_stats(times, [9000] * 8)
    assert a == b  # seeded: the same interval every time
    low, high = a["median_ci"]
    assert 900 <= low <= a["median"] <= high <= 5000
    low, high = a["iqm_ci"]
    assert 900 <= low <= a["iqm"] <= high <= 5000
    assert time_stats([700] * 5, [900] * 5)["median_ci"] == (700.0, 700.0)  # no spread: no interval width


def test_done_curve_is_kaplan_meier_with_censoring_between_events():
    # Seed 2 is censored at 3 (its own budget) between the events at 2 and 4.
    # KM survival: 3/4 after t=2; at t=4, 2 at risk, 1 event: 3/4 * 1/2 = 3/8; at t=5: 0.
    x, share = done_curve([2, None, 4, 5], [10, 3, 10, 10])
    assert x.tolist() == [0, 2, 3, 4, 5]  # the censoring time is a step too, with no change
    np.testing.assert_allclose(share, [0, 0.25, 0.25, 1 - 3 / 8, 1.0])
    x, share = done_curve([None, None], [50, 50])
    assert share.tolist() == [0.0]


def test_share_stats_and_the_table_row():
    assert share_stats([1.0, 0.5])["mean"] == 0.75
    summary = {"seeds": [
        {"evaluations": 4000, "evaluations_to_0.9999": 1000, "fraction_at_least_0.99": 1.0, "fraction_at_least_0.9999": 1.0},
        {"evaluations": 4000, "evaluations_to_0.9999": 3000, "fraction_at_least_0.99": 1.0, "fraction_at_least_0.9999": 1.0},
        {"evaluations": 4000, "evaluations_to_0.9999": None, "fraction_at_least_0.99": 0.9, "fraction_at_least_0.9999": 0.6},
    ]}
    row = seed_table(summary)
    assert row["median_evaluations_to_0.9999"] == 3000.0 and row["seeds_censored"] == 1
    # 25 % of 3 seeds trims none (scipy cuts int(0.25 * 3) = 0 from each end): the mean of 1000, 3000, 4000.
    assert row["iqm_evaluations_to_0.9999"] == pytest.approx(8000 / 3, abs=0.1)
    assert row["share_classes_fooled_0.99"] == pytest.approx(0.9667, abs=1e-4)
    assert row["share_classes_fooled_0.9999"] == pytest.approx(0.8667, abs=1e-4)
    assert row["median_evaluations_to_0.9999_ci95"].endswith("..inf")  # resamples with 2 censored seeds never finish
    assert evaluations_cell(row).startswith("3,000 [") and "IQM >= 2,667 (1 censored)" in evaluations_cell(row)
