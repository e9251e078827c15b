"""The statistics behind the validation report, checked against published figures, closed forms and an independent
transcription of each formula, never against the module's own output.

Tolerances: everything here is a closed-form float64 computation. Against figures published to 4 decimals the
tolerance is 5e-5, the rounding of the published figure; against the transcriptions in this file and exact
closed forms it is 1e-12, which leaves room only for the different order of float operations (~1e-15), so any
real difference in the formula shows.
"""

from __future__ import annotations

import itertools
import json
import math

import numpy as np
import pytest

from edgeresnext.errors import ConfigError, DataError
from edgeresnext.stats import (
    NEWCOMBE_METHOD,
    PairedCounts,
    agreement_gate_provable,
    agreement_lower_bound,
    drop_gate,
    drop_gate_provable,
    drop_interval,
    drop_upper_bound,
    exact_mcnemar_p,
    min_images_for_agreement,
    min_images_to_prove,
    normal_quantile,
    paired_counts,
    proportion_interval,
)

PUBLISHED = 5e-5  # half a unit in the 4th decimal of a published figure
TRANSCRIBED = 1e-12  # float64 evaluation-order noise only

# Literal quantiles, so the transcriptions below do not share normal_quantile with the module
Z_975 = 1.959963984540054  # two-sided 95 %
Z_95 = 1.6448536269514722  # one-sided 95 % = two-sided 90 %


# --------------------------------------------------------------------------------------------- transcriptions
def wilson_by_quadratic(x: int, n: int, z: float) -> tuple[float, float]:
    """Wilson limits as the roots of (p_hat - t)^2 = z^2 t (1 - t) / n, a different algebra from the module's."""
    p_hat = x / n
    a = 1 + z * z / n
    b = -(2 * p_hat + z * z / n)
    c = p_hat * p_hat
    root = math.sqrt(b * b - 4 * a * c)
    return (-b - root) / (2 * a), (-b + root) / (2 * a)


def newcombe_method10(a: int, b: int, c: int, d: int, z: float) -> tuple[float, float]:
    """Newcombe (1998) method 10 written out in the paper's notation: theta = P1 - P2, L = theta - delta,
    U = theta + epsilon, phi from the margins E = a+b, F = c+d, G = a+c, H = b+d with AD - BC replaced by
    max(AD - BC - N/2, 0) when AD > BC, and phi = 0 when a margin is empty."""
    n = a + b + c + d
    e, f, g, h = a + b, c + d, a + c, b + d
    p1, p2 = e / n, g / n
    l1, u1 = wilson_by_quadratic(e, n, z)
    l2, u2 = wilson_by_quadratic(g, n, z)
    if e * f * g * h == 0:
        phi = 0.0
    elif a * d > b * c:
        phi = max(a * d - b * c - n / 2, 0) / math.sqrt(e * f * g * h)
    else:
        phi = (a * d - b * c) / math.sqrt(e * f * g * h)
    delta = math.sqrt(max(0.0, (p1 - l1) ** 2 - 2 * phi * (p1 - l1) * (u2 - p2) + (u2 - p2) ** 2))
    epsilon = math.sqrt(max(0.0, (u1 - p1) ** 2 - 2 * phi * (u1 - p1) * (p2 - l2) + (p2 - l2) ** 2))
    return p1 - p2 - delta, p1 - p2 + epsilon


# --------------------------------------------------------------------------------------------- normal quantile
@pytest.mark.parametrize(
    ("p", "z"), [(0.975, 1.959963984540054), (0.95, 1.6448536269514722), (0.995, 2.5758293035489004), (0.5, 0.0)]
)
def test_normal_quantile_known_values(p: float, z: float) -> None:
    assert normal_quantile(p) == pytest.approx(z, abs=1e-14)
    assert normal_quantile(1 - p) == pytest.approx(-z, abs=1e-14)


@pytest.mark.parametrize("p", [1e-12, 1e-6, 0.02425, 0.1, 0.3, 0.7, 0.9, 0.97575, 1 - 1e-6])
def test_normal_quantile_inverts_the_cdf(p: float) -> None:
    z = normal_quantile(p)
    assert 0.5 * math.erfc(-z / math.sqrt(2)) == pytest.approx(p, rel=1e-13)


@pytest.mark.parametrize("p", [0.0, 1.0, -0.1, 1.5, float("nan")])
def test_normal_quantile_outside_open_unit_interval(p: float) -> None:
    with pytest.raises(ConfigError, match="p="):
        normal_quantile(p)


# --------------------------------------------------------------------------------------------- one proportion
# Newcombe 1998, "Two-sided confidence intervals for the single proportion", Stat Med 17:857-872, Table I,
# Wilson score without continuity correction. By hand for 81/263 at z = 1.959964 (z^2 = 3.841459):
#   2x + z^2 = 165.841459;  z sqrt(z^2 + 4 x (n - x) / n) = 1.959964 * sqrt(3.841459 + 59.094297) = 15.551911
#   2 (n + z^2) = 533.682918;  L = 150.289548 / 533.682918 = 0.2553, U = 181.393370 / 533.682918 = 0.3662
# which is the published pair; the other three rows agree with the formula as well.
@pytest.mark.parametrize(
    ("x", "n", "lower", "upper"),
    [(81, 263, 0.2553, 0.3662), (15, 148, 0.0624, 0.1605), (0, 20, 0.0000, 0.1611), (1, 29, 0.0061, 0.1718)],
)
def test_wilson_matches_newcombe_table_i(x: int, n: int, lower: float, upper: float) -> None:
    interval = proportion_interval(x, n, 0.95)
    assert interval.method == "wilson"
    assert interval.point == x / n
    assert interval.lower == pytest.approx(lower, abs=PUBLISHED)
    assert interval.upper == pytest.approx(upper, abs=PUBLISHED)
    assert (interval.lower, interval.upper) == pytest.approx(wilson_by_quadratic(x, n, Z_975), abs=TRANSCRIBED)


@pytest.mark.parametrize(("x", "n"), [(0, 1), (1, 1), (0, 7), (7, 7), (3, 7), (7600, 10000), (9999, 10000)])
def test_wilson_matches_transcription_and_ends(x: int, n: int) -> None:
    interval = proportion_interval(x, n, 0.95)
    assert (interval.lower, interval.upper) == pytest.approx(wilson_by_quadratic(x, n, Z_975), abs=TRANSCRIBED)
    # no successes: the lower limit is 0 exactly; all successes: the upper limit is 1 exactly
    assert (interval.lower == 0.0) == (x == 0)
    assert (interval.upper == 1.0) == (x == n)


def test_clopper_pearson_known_values() -> None:
    # 0/20: P(X = 0) = (1 - p)^20 = 0.025 at the upper limit, so U = 1 - 0.025^(1/20) = 0.16843
    zero = proportion_interval(0, 20, 0.95, method="exact")
    assert (zero.lower, zero.upper) == (0.0, pytest.approx(1 - 0.025 ** (1 / 20), abs=TRANSCRIBED))
    assert zero.upper == pytest.approx(0.16843, abs=PUBLISHED)
    # x = n mirrors it: P(X = 20) = p^20 = 0.025 at the lower limit
    full = proportion_interval(20, 20, 0.95, method="exact")
    assert (full.lower, full.upper) == (pytest.approx(0.025 ** (1 / 20), abs=TRANSCRIBED), 1.0)
    half = proportion_interval(5, 10, 0.95, method="exact")
    assert (half.lower, half.upper) == pytest.approx((0.187086, 0.812914), abs=5e-7)


@pytest.mark.parametrize("n", [1, 2, 29, 1000])
def test_clopper_pearson_one_away_from_the_ends(n: int) -> None:
    # x = 1: P(X >= 1) = 1 - (1 - p)^n = alpha/2 at the lower limit; x = n - 1: P(X <= n - 1) = 1 - p^n at the upper
    alpha = 0.05
    assert proportion_interval(1, n, 0.95, "exact").lower == pytest.approx(1 - (1 - alpha / 2) ** (1 / n), rel=1e-9)
    assert proportion_interval(n - 1, n, 0.95, "exact").upper == pytest.approx((1 - alpha / 2) ** (1 / n), rel=1e-9)


def test_clopper_pearson_is_wider_than_wilson_on_a_large_set() -> None:
    exact = proportion_interval(7600, 10000, 0.95, method="exact")
    wilson = proportion_interval(7600, 10000, 0.95)
    assert exact.lower < wilson.lower < 0.76 < wilson.upper < exact.upper
    assert exact.upper - exact.lower == pytest.approx(wilson.upper - wilson.lower, rel=0.01)


def test_agreement_is_about_classes_not_correctness() -> None:
    labels = np.array([1, 0, 0, 0])
    fp32 = np.array([1, 2, 3, 0])
    int8 = np.array([1, 5, 3, 0])  # image 1: both wrong, with different classes
    counts = paired_counts(fp32 == labels, int8 == labels)
    assert (counts.a, counts.b, counts.c, counts.d) == (2, 0, 0, 2)
    agreement = proportion_interval(int(np.count_nonzero(fp32 == int8)), fp32.size)
    assert agreement.point == 0.75 and agreement.lower < 0.75 < agreement.upper


@pytest.mark.parametrize(("successes", "n"), [(-1, 10), (11, 10), (0, 0), (1.0, 10), (True, 2)])
def test_proportion_interval_rejects_bad_counts(successes, n) -> None:
    with pytest.raises(DataError):
        proportion_interval(successes, n)


def test_proportion_interval_unknown_method() -> None:
    with pytest.raises(ConfigError, match="wilson, exact"):
        proportion_interval(1, 2, method="wald")


# --------------------------------------------------------------------------------------------- paired table
def test_paired_counts_from_booleans() -> None:
    counts = paired_counts([True, True, False, False, True, True], np.array([True, False, True, False, True, False]))
    assert (counts.a, counts.b, counts.c, counts.d, counts.n) == (2, 2, 1, 1, 6)
    assert counts.drop == pytest.approx(1 / 6)
    assert counts.reference_top1 == pytest.approx(4 / 6) and counts.artifact_top1 == pytest.approx(3 / 6)
    assert paired_counts(np.array([1, 0]), np.array([1, 1])) == PairedCounts(1, 0, 1, 0)


@pytest.mark.parametrize(
    ("ref", "art", "message"),
    [
        ([True, False], [True], "same images"),
        ([], [], "no images"),
        (np.zeros((2, 2), bool), np.zeros((2, 2), bool), "1-D"),
        ([0.0, 1.0], [1.0, 1.0], "dtype float64"),
        ([0, 2], [1, 1], "0/1 integers"),
    ],
)
def test_paired_counts_rejects_bad_input(ref, art, message: str) -> None:
    with pytest.raises(DataError, match=message):
        paired_counts(ref, art)


@pytest.mark.parametrize("table", [(0, 0, 0, 0), (-1, 2, 0, 0), (1, 2.0, 0, 0), (True, 0, 0, 0)])
def test_paired_counts_validate_themselves(table) -> None:
    with pytest.raises(DataError):
        PairedCounts(*table)


# --------------------------------------------------------------------------------------------- paired difference
def test_newcombe_by_hand_bentur() -> None:
    # (a, b, c, d) = (1, 1, 7, 12), n = 21 (Bentur et al. 2009, the paired example of Fagerland et al.'s book);
    # the artifact is the better one here, so the drop is negative. 95 %, z = 1.959964.
    #   p1 = 2/21 = 0.095238, Wilson [l1, u1] = [0.026519, 0.289141]
    #   p2 = 8/21 = 0.380952, Wilson [l2, u2] = [0.207510, 0.591213]
    #   ad - bc = 12 - 7 = 5 <= n/2 = 10.5, so the corrected phi is 0 (uncorrected it would be 5/62.86 = 0.080)
    #   delta = sqrt(0.068719^2 + 0.210261^2) = 0.221206 -> L = -0.285714 - 0.221206 = -0.506920
    #   eps   = sqrt(0.193903^2 + 0.173442^2) = 0.260155 -> U = -0.285714 + 0.260155 = -0.025559
    interval = drop_interval(PairedCounts(1, 1, 7, 12), 0.95, NEWCOMBE_METHOD)
    assert interval.point == pytest.approx(-6 / 21, abs=TRANSCRIBED)
    assert (interval.lower, interval.upper) == pytest.approx((-0.506920, -0.025559), abs=5e-6)


def test_newcombe_by_hand_positive_correlation() -> None:
    # (a, b, c, d) = (85, 9, 3, 24), n = 121: the artifact loses 9 images and wins 3. 95 %, z = 1.959964.
    #   p1 = 94/121 = 0.776860, Wilson [l1, u1] = [0.694810, 0.841870]
    #   p2 = 88/121 = 0.727273, Wilson [l2, u2] = [0.641844, 0.798715]
    #   ad - bc = 2040 - 27 = 2013 > n/2, phi = (2013 - 60.5) / sqrt(94 * 27 * 88 * 33) = 1952.5 / 2714.8392 = 0.719195
    #   delta^2 = 0.082049^2 - 2 * 0.719195 * 0.082049 * 0.071443 + 0.071443^2 = 0.0034045, delta = 0.058348
    #   eps^2   = 0.065011^2 - 2 * 0.719195 * 0.065011 * 0.085429 + 0.085429^2 = 0.0035360, eps   = 0.059464
    #   L = 0.049587 - 0.058348 = -0.008762,  U = 0.049587 + 0.059464 = 0.109051
    interval = drop_interval(PairedCounts(85, 9, 3, 24), 0.95, NEWCOMBE_METHOD)
    assert interval.point == pytest.approx(6 / 121, abs=TRANSCRIBED)
    assert (interval.lower, interval.upper) == pytest.approx((-0.008762, 0.109051), abs=5e-6)


def test_newcombe_matches_transcription_on_every_small_table() -> None:
    # Every table with n <= 8: empty margins, negative correlation, all-discordant and single-image tables
    for n in range(1, 9):
        for a, b, c in itertools.product(range(n + 1), repeat=3):
            d = n - a - b - c
            if d < 0:
                continue
            interval = drop_interval(PairedCounts(a, b, c, d), 0.95, NEWCOMBE_METHOD)
            expected = newcombe_method10(a, b, c, d, Z_975)
            assert (interval.lower, interval.upper) == pytest.approx(expected, abs=TRANSCRIBED), (a, b, c, d)
            assert -1.0 <= interval.lower <= interval.point <= interval.upper <= 1.0, (a, b, c, d)


@pytest.mark.parametrize("table", [(1514, 6, 2, 478), (7580, 20, 18, 2382), (92, 0, 0, 29), (10, 40, 35, 15)])
def test_newcombe_matches_transcription_on_realistic_tables(table: tuple[int, int, int, int]) -> None:
    for confidence, z in ((0.95, Z_975), (0.90, Z_95)):
        interval = drop_interval(PairedCounts(*table), confidence, NEWCOMBE_METHOD)
        assert (interval.lower, interval.upper) == pytest.approx(newcombe_method10(*table, z), abs=TRANSCRIBED)


def test_newcombe_zero_discordant_closed_forms() -> None:
    # Newcombe with b = c = 0 depends on the reference top-1: z^2 / (n + z^2) at 100 %, z / sqrt(n (n + z^2)) at 1/2
    perfect = PairedCounts(121, 0, 0, 0)
    assert drop_upper_bound(perfect, 0.95, NEWCOMBE_METHOD) == pytest.approx(Z_95**2 / (121 + Z_95**2), abs=TRANSCRIBED)
    half = PairedCounts(60, 0, 0, 60)
    expected = Z_95 / math.sqrt(120 * (120 + Z_95**2))
    assert drop_upper_bound(half, 0.95, NEWCOMBE_METHOD) == pytest.approx(expected, abs=TRANSCRIBED)


def tango_by_textbook(b: int, c: int, n: int, z: float, correction: float) -> tuple[float, float]:
    """Tango's score interval written out as in Fagerland et al. (2017, eq. 8.8): for a drop D,
    q = (sqrt(B^2 - 4AC) - B) / 2A with A = 2n, B = -b - c + (2n - b + c) D, C = -c D (1 - D), and
    T(D) = (b - c - n D) / sqrt(n (2q + D (1 - D))); the limits are where |T| less the correction (in images,
    on the numerator) equals z. Solved here on a grid of 2^20 steps refined by bisection: a different search
    from the module's."""

    def excess(delta: float) -> float:
        a_, b_, c_ = 2 * n, -b - c + (2 * n - b + c) * delta, -c * delta * (1 - delta)
        q = (math.sqrt(b_ * b_ - 4 * a_ * c_) - b_) / (2 * a_)
        distance = abs(b - c - n * delta) - correction
        variance = n * (2 * q + delta * (1 - delta))
        return 0.0 if distance <= 0 else (math.inf if variance <= 1e-300 else distance / math.sqrt(variance))

    def solve(start: float, stop: float) -> float:
        if excess(stop) <= z:
            return stop
        steps = 1 << 12
        previous = start
        for i in range(1, steps + 1):
            x = start + (stop - start) * i / steps
            if excess(x) > z:
                lo, hi = previous, x
                for _ in range(100):
                    mid = (lo + hi) / 2
                    lo, hi = (mid, hi) if excess(mid) <= z else (lo, mid)
                return lo
            previous = x
        return stop

    point = (b - c) / n
    upper = solve(min(1.0, point + correction / n), 1.0)
    lower = solve(max(-1.0, point - correction / n), -1.0)
    return lower, upper


def test_tango_matches_published_bentur() -> None:
    # Fagerland, Lydersen & Laake (2014, Stat Med 33:2850, Table V) give Tango's asymptotic score interval for
    # (1, 1, 7, 12) as [-0.517, -0.026] (no continuity correction)
    from edgeresnext.stats import _tango_limit

    counts = PairedCounts(1, 1, 7, 12)
    lower = _tango_limit(counts, Z_975, upper=False, correction=0.0)
    upper = _tango_limit(counts, Z_975, upper=True, correction=0.0)
    assert (lower, upper) == pytest.approx((-0.517, -0.026), abs=5e-4)
    # the half-image correction widens both ends
    interval = drop_interval(counts, 0.95)
    assert interval.method == "tango-score-cc" and interval.lower < lower and interval.upper > upper


@pytest.mark.parametrize(
    "table", [(1, 1, 7, 12), (85, 9, 3, 24), (1514, 6, 2, 478), (7580, 20, 18, 2382), (92, 0, 0, 29), (0, 5, 0, 0)]
)
def test_tango_matches_textbook_transcription(table: tuple[int, int, int, int]) -> None:
    counts = PairedCounts(*table)
    for confidence, z in ((0.95, Z_975), (0.90, Z_95)):
        interval = drop_interval(counts, confidence)
        expected = tango_by_textbook(counts.b, counts.c, counts.n, z, 0.5)
        assert (interval.lower, interval.upper) == pytest.approx(expected, abs=1e-9), table


def test_zero_discordant_pairs_are_not_proof() -> None:
    # b = c = 0: q = 0, so the upper bound U solves n U - 1/2 = z sqrt(n U (1 - U)), whatever the top-1:
    # with s = sqrt(n U): U = (z sqrt(1 - U) s + 1/2) / n; on 121 images at one-sided 95 % that is 2.94 pt
    for table in ((121, 0, 0, 0), (60, 0, 0, 61), (92, 0, 0, 29)):
        bound = drop_upper_bound(PairedCounts(*table), 0.95)
        assert 121 * bound - 0.5 == pytest.approx(Z_95 * math.sqrt(121 * bound * (1 - bound)), abs=1e-9)
        assert bound == pytest.approx(0.029386, abs=5e-7)


def test_all_discordant() -> None:
    worse = drop_interval(PairedCounts(0, 5, 0, 0), 0.95)
    assert (worse.point, worse.upper) == (1.0, 1.0) and worse.lower < 1.0
    better = drop_interval(PairedCounts(0, 0, 5, 0), 0.95)
    assert (better.point, better.lower) == (-1.0, -1.0)
    assert better.upper == pytest.approx(-worse.lower, abs=TRANSCRIBED)


@pytest.mark.parametrize("table", [(1, 0, 0, 0), (0, 1, 0, 0), (0, 0, 1, 0), (0, 0, 0, 1)])
def test_single_image(table: tuple[int, int, int, int]) -> None:
    interval = drop_interval(PairedCounts(*table), 0.95)
    assert -1.0 <= interval.lower <= interval.point <= interval.upper <= 1.0
    assert interval.upper - interval.lower > 0.5  # one image says little


def test_drop_method_unknown() -> None:
    with pytest.raises(ConfigError, match="method='wald'"):
        drop_interval(PairedCounts(1, 1, 1, 1), 0.95, "wald")


def test_one_sided_bound_is_upper_end_at_two_c_minus_one() -> None:
    counts = PairedCounts(1514, 6, 2, 478)
    for confidence in (0.9, 0.95, 0.99):
        expected = drop_interval(counts, 2 * confidence - 1).upper
        assert drop_upper_bound(counts, confidence) == pytest.approx(expected, abs=TRANSCRIBED)
    # and it is the transcription's upper end with z = z_0.95, not the two-sided 95 % upper end
    assert drop_upper_bound(counts, 0.95) == pytest.approx(tango_by_textbook(6, 2, 2000, Z_95, 0.5)[1], abs=1e-9)
    assert drop_upper_bound(counts, 0.95) < drop_interval(counts, 0.95).upper


@pytest.mark.parametrize("confidence", [0.0, 1.0, -0.5, 1.5, float("nan"), True, "0.95"])
def test_confidence_outside_open_unit_interval(confidence) -> None:
    counts = PairedCounts(10, 1, 0, 2)
    for call in (
        lambda: drop_interval(counts, confidence),
        lambda: drop_upper_bound(counts, confidence),
        lambda: proportion_interval(3, 10, confidence),
        lambda: drop_gate(counts, 0.003, confidence),
    ):
        with pytest.raises(ConfigError, match="confidence="):
            call()


def test_one_sided_bound_needs_more_than_half() -> None:
    with pytest.raises(ConfigError, match=r"confidence=0\.5"):
        drop_upper_bound(PairedCounts(10, 1, 0, 2), 0.5)


# --------------------------------------------------------------------------------------------- McNemar
def test_exact_mcnemar() -> None:
    assert exact_mcnemar_p(0, 0) == 1.0
    assert exact_mcnemar_p(10, 0) == 2 * 0.5**10
    # 6 vs 2: P(X <= 2 | 8, 1/2) = (1 + 8 + 28) / 256, doubled
    assert exact_mcnemar_p(6, 2) == pytest.approx(74 / 256, abs=TRANSCRIBED)
    assert exact_mcnemar_p(5, 5) == 1.0  # the doubled tail passes 1 when b = c
    for b, c in ((6, 2), (20, 18), (0, 3), (130, 90)):
        assert exact_mcnemar_p(b, c) == exact_mcnemar_p(c, b)
    assert 0.0 < exact_mcnemar_p(3000, 2700) < 1e-4  # big integers, no overflow


@pytest.mark.parametrize(("b", "c"), [(-1, 0), (1.5, 0), (0, True)])
def test_exact_mcnemar_rejects_bad_counts(b, c) -> None:
    with pytest.raises(DataError):
        exact_mcnemar_p(b, c)


# --------------------------------------------------------------------------------------------- gate
@pytest.mark.parametrize(
    ("table", "point", "bound", "passed_on_bound"),
    [
        # 2000 images, 6 lost and 2 won: drop 0.2 pt looks fine against 0.3 pt, but the one-sided 95 % bound is
        # 0.52 pt. The set itself is big enough (a better result would pass).
        ((1514, 6, 2, 478), 0.002, 0.005223, False),
        # 10,000 images, 20 lost and 18 won: drop 0.02 pt, one-sided 95 % bound 0.13 pt, under 0.3 pt either way.
        ((7580, 20, 18, 2382), 0.0002, 0.001309, True),
    ],
)
def test_gate_judges_the_bound_not_the_point(table, point, bound, passed_on_bound) -> None:
    verdict = drop_gate(PairedCounts(*table), limit=0.003, confidence=0.95)
    assert verdict.point == pytest.approx(point, abs=TRANSCRIBED)
    counts = PairedCounts(*table)
    assert verdict.upper_bound == pytest.approx(tango_by_textbook(counts.b, counts.c, counts.n, Z_95, 0.5)[1], abs=1e-9)
    assert verdict.upper_bound == pytest.approx(bound, abs=5e-7)
    assert (verdict.passed_on_point, verdict.passed_on_bound, verdict.provable) == (True, passed_on_bound, True)
    assert ("NOT proven" in verdict.summary()) is not passed_on_bound and "could pass" not in verdict.summary()


def test_gate_on_a_set_too_small_to_prove_anything() -> None:
    # 121 images, top-1 92/121, nothing discordant: drop 0 "passes" on the point, but the bound is 2.94 pt and no
    # result as good as FP32 on 121 images could bring it under 0.3 pt: NOT PROVEN. 1,210 images needed.
    verdict = drop_gate(PairedCounts(92, 0, 0, 29), limit=0.003, confidence=0.95)
    assert verdict.upper_bound == pytest.approx(0.029386, abs=5e-7)
    assert (verdict.passed_on_point, verdict.passed_on_bound, verdict.provable) == (True, False, False)
    assert verdict.min_images == 1210
    assert "too small for a result as good as FP32 to pass (at least 1210 images needed)" in verdict.summary()
    json.dumps(verdict.to_dict())  # the report stores it as JSON
    assert verdict.to_dict()["counts"] == {"a": 92, "b": 0, "c": 0, "d": 29, "n": 121, "drop": 0.0}


def test_a_result_better_than_fp32_can_pass_where_an_equal_one_cannot() -> None:
    # (100, 0, 5, 16): INT8 wins 5 images and loses none on 121. Its upper bound is -1.1 pt, under a 0.3 pt gate:
    # passed, and not NOT PROVEN (the old rule let "an equal result could not pass" override a passing bound).
    counts = PairedCounts(100, 0, 5, 16)
    verdict = drop_gate(counts, limit=0.003)
    assert verdict.passed_on_bound and verdict.provable and verdict.upper_bound < 0
    assert not drop_gate_provable(121, 100, 0.003) and drop_gate_provable(1210, 1100, 0.003)
    # an equal result on the same set does not pass: NOT PROVEN (the set is too small for it), not proof
    equal = drop_gate(PairedCounts(100, 0, 0, 21), limit=0.003)
    assert not equal.passed_on_bound and not equal.provable
    # McNemar does not call (0, 5) significant (p = 0.0625) although the interval excludes 0
    assert exact_mcnemar_p(0, 5) == 0.0625 and drop_interval(counts).upper < 0


def test_min_images_to_prove_closed_form() -> None:
    # b = c = 0: n U - 1/2 = z sqrt(n U (1 - U)) at U = limit, a quadratic in s = sqrt(n):
    # limit s^2 - z sqrt(limit (1 - limit)) s - 1/2 = 0 -> n = 1,209.7 for 0.3 pt: 1,210 images
    for limit, expected in ((0.003, 1210), (0.005, 725), (0.0005, 7271)):
        root = (Z_95 * math.sqrt(limit * (1 - limit)) + math.sqrt(Z_95**2 * limit * (1 - limit) + 2 * limit)) / (
            2 * limit
        )
        assert math.ceil(root * root) == expected
        assert min_images_to_prove(limit, 0.95) == expected
        for top1 in (1.0, 0.92, 0.5):  # the same whatever the reference top-1
            assert min_images_to_prove(limit, 0.95, top1) == expected
        perfect = PairedCounts(expected, 0, 0, 0)
        smaller = PairedCounts(expected - 1, 0, 0, 0)
        assert drop_upper_bound(perfect, 0.95) <= limit < drop_upper_bound(smaller, 0.95)


# --------------------------------------------------------------------------------------------- exact coverage
def _log_pmf(n: int, k: int, p: float) -> float:
    return math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1) + k * math.log(p) + (n - k) * math.log1p(-p)


def _window(n: int, p: float) -> range:
    """The counts k of Binomial(n, p) within 12 standard deviations (+20) of the mean; the mass outside is below
    1e-30 and is added back, in full, to the false-pass rate (so the rate computed is an upper bound)."""
    if p >= 1.0:
        return range(n, n + 1)
    mean, sd = n * p, math.sqrt(n * p * (1 - p))
    return range(max(0, int(mean - 12 * sd - 20)), min(n, int(mean + 12 * sd + 20)) + 1)


def gate_false_pass_rate(n: int, p_lost: float, p_won: float, limit: float) -> float:
    """The exact probability (up to an added-back truncation of < 1e-12) that the drop gate passes on n images when
    each image is independently lost by INT8 with probability p_lost and won with p_won.

    Conditional on m discordant images, b ~ Binomial(m, p_lost / (p_lost + p_won)) and the gate passes iff
    b <= b*(m), the largest b whose bound is within the limit (the bound grows with b at fixed m, and b*(m) grows
    by at most one per extra discordant image: so b* is found by one binary search, then walked)."""

    def passes(b: int, c: int) -> bool:
        return drop_upper_bound(PairedCounts(n - b - c, b, c, 0), 0.95) <= limit

    discordant, share = p_lost + p_won, p_lost / (p_lost + p_won)
    rate, covered, best = 0.0, 0.0, None
    for m in _window(n, discordant):
        weight = math.exp(_log_pmf(n, m, discordant))
        covered += weight
        if best is None:
            low, high = -1, m
            while low < high:
                middle = (low + high + 1) // 2
                low, high = (middle, high) if passes(middle, m - middle) else (low, middle - 1)
            best = low
        else:
            while best + 1 <= m and passes(best + 1, m - best - 1):
                best += 1
        if best < 0:
            continue
        if share >= 1.0:
            rate += weight * (best >= m)
            continue
        ks = _window(m, share)
        inside = [math.exp(_log_pmf(m, k, share)) for k in ks]
        passing = math.fsum(p for k, p in zip(ks, inside, strict=True) if k <= best)
        rate += weight * (passing + max(0.0, 1.0 - math.fsum(inside)))
    return rate + max(0.0, 1.0 - covered)


def test_gate_false_pass_rate_is_at_most_5_percent_at_the_limit() -> None:
    """At a true drop equal to the 0.3 pt limit, a 95 % gate may pass wrongly at most 5 % of the time. Enumerated
    exactly for every cell of n x FP32 top-1, with the drop all in one direction (INT8 never wins an image) and
    mixed (it wins p_won = 0.3 pt, and half of the images FP32 gets wrong). The bound depends on (b, c, n) alone,
    so the top-1 enters through how many images INT8 can win. A pass on the bound is never NOT PROVEN, so the
    probability counted here is every way the gate can pass wrongly; the rest is a FAIL or (on 121 and 572
    images, too few for 0.3 pt) NOT PROVEN."""
    limit, cache, worst = 0.003, {}, {}
    for n in (121, 572, 2383, 10000):
        for top1 in (0.5, 0.8, 0.92, 0.99):
            for p_won in (0.0, limit, (1 - top1) / 2):
                key = (n, p_won)
                if key not in cache:
                    cache[key] = gate_false_pass_rate(n, limit + p_won, p_won, limit)
                assert cache[key] <= 0.05, (n, top1, p_won, cache[key])
                worst[n] = max(worst.get(n, 0.0), cache[key])
    # the uncorrected score bound (and Newcombe's) went to 7-18 %; this one stays under 5 % and near it on big sets
    assert 0.04 < worst[10000] <= 0.05


def test_uncorrected_bound_fails_the_same_enumeration() -> None:
    # the check has teeth: (286, 0, 0, 286) passed the old gate although 0.997^572 = 17.9 % of true 0.3 pt drops
    # (all in one direction) look like it; the corrected bound does not pass it
    assert drop_upper_bound(PairedCounts(286, 0, 0, 286), 0.95, NEWCOMBE_METHOD) <= 0.003
    assert drop_upper_bound(PairedCounts(286, 0, 0, 286), 0.95) > 0.003
    assert 0.997**572 == pytest.approx(0.179, abs=5e-4)


def test_agreement_bound_is_exact() -> None:
    # Clopper-Pearson one-sided: at full agreement (1 - confidence)^(1/n); 299 images prove 99 %, 598 prove 99.5 %
    assert agreement_lower_bound(299, 299, 0.95) == pytest.approx(0.05 ** (1 / 299), abs=TRANSCRIBED)
    assert (min_images_for_agreement(0.99), min_images_for_agreement(0.995)) == (299, 598)
    assert math.log(0.05) / math.log(0.99) == pytest.approx(298.07, abs=0.01)
    assert agreement_gate_provable(299, 0.99) and not agreement_gate_provable(298, 0.99)
    # exact false-pass rate at a true agreement equal to the limit: P(bound >= limit) <= 5 % for every n
    for n in (121, 299, 572, 2383, 10000):
        passing = [k for k in range(n + 1) if k >= n * 0.99 - 1 and agreement_lower_bound(k, n) >= 0.99]
        if passing:
            tail = math.fsum(math.exp(_log_pmf(n, k, 0.99)) if k < n else 0.99**n for k in range(passing[0], n + 1))
            assert tail <= 0.05, (n, tail)


def test_gate_limit_checks() -> None:
    counts = PairedCounts(92, 0, 0, 29)
    zero = drop_gate(counts, limit=0.0)
    assert (zero.provable, zero.min_images) == (False, None)
    assert "no finite set" in zero.summary()
    for limit in (-0.001, float("nan"), float("inf"), "0.003"):
        with pytest.raises(ConfigError, match="limit="):
            drop_gate(counts, limit=limit)
    with pytest.raises(ConfigError, match="limit=0"):
        min_images_to_prove(0.0)
    with pytest.raises(ConfigError, match="reference_top1="):
        min_images_to_prove(0.003, 0.95, reference_top1=1.5)


def test_the_module_runs_as_a_bare_file_under_python3_alone(tmp_path) -> None:
    """The Jetson kit ships stats.py verbatim to a python3 with neither edgeresnext nor numpy: a copy of the file,
    run isolated (-I -S: no site-packages, no PYTHONPATH, so neither is importable), gives the very intervals
    the host computes (the same code on the same integers: compared for equality, not within a tolerance)."""
    import shutil
    import subprocess
    import sys

    import edgeresnext.stats as host

    shutil.copy(host.__file__, tmp_path / "stats.py")
    script = (
        "import json, stats\n"
        "c = stats.PairedCounts(100, 0, 5, 16)\n"
        "print(json.dumps([stats.drop_interval(c).to_dict(), stats.drop_upper_bound(c),"
        " stats.proportion_interval(95, 121, 0.9, 'exact').to_dict(), stats.exact_mcnemar_p(3, 9)]))\n"
        "assert 'numpy' not in sys.modules and 'edgeresnext' not in sys.modules, sorted(sys.modules)\n"
    )
    out = subprocess.run(
        [sys.executable, "-I", "-S", "-c", f"import sys; sys.path.insert(0, {str(tmp_path)!r}); {script}"],
        capture_output=True,
        text=True,
        check=True,
        env={},
        cwd=tmp_path,
    )
    counts = host.PairedCounts(100, 0, 5, 16)
    expected = [
        host.drop_interval(counts).to_dict(),
        host.drop_upper_bound(counts),
        host.proportion_interval(95, 121, 0.9, "exact").to_dict(),
        host.exact_mcnemar_p(3, 9),
    ]
    assert json.loads(out.stdout) == json.loads(json.dumps(expected))


# --------------------------------------------------------------------------------------------- power and the docs
# Every figure the docs quote about how often a gate passes is computed here exactly (binomial sums over every count
# that matters, no simulation) and compared with the quoted value. stats.drop_gate_pass_probability is checked first
# against a brute-force sum over every (lost, won) table, and against this file's own transcription above.
from edgeresnext import stats as module_stats  # noqa: E402  (the functions below, by their module name)

# The 0.3 pt gate's false-pass rate at a true drop of 0.3 pt, over discordance up to nearly every image: maxima on
# the grid of FALSE_PASS_GRID (p_won, the share of images the artifact wins; it loses p_won + 0.3 pt).
FALSE_PASS_GRID = [0.0, *[k / 10000 for k in range(1, 100)], *[k / 1000 for k in range(10, 499)], 0.4985]
FALSE_PASS_MAXIMA = {121: 0.0473, 572: 0.0493, 2383: 0.0495, 10000: 0.0499}  # the docs: 4.73, 4.93, 4.95, 4.99 %
# Images at which a gate first proves a harmless artifact 80 % of the time: (limit, discordance or disagreement).
DROP_POWER_80 = {(0.003, 0.001): 1757, (0.005, 0.001): 1053}  # exact first crossings
DROP_POWER_80_ABOUT = {(0.003, 0.01): 7400, (0.005, 0.01): 2900, (0.0005, 0.001): 29000}  # "about", 2 digits
AGREEMENT_POWER_80 = {(0.01, 0.005): 1941, (0.01, 0.001): 473, (0.005, 0.0025): 3885, (0.005, 0.0005): 947}
DEVICE_POWER_80 = {0.025: 361, 0.01: 124, 0.005: 93}


def _multinomial_pass_rate(n: int, p_lost: float, p_won: float, limit: float) -> float:
    """Brute force: every table (n - b - c, b, c) with its multinomial probability, summed where the bound passes."""
    total = 0.0
    for b in range(n + 1):
        for c in range(n - b + 1):
            if drop_upper_bound(PairedCounts(n - b - c, b, c, 0), 0.95) <= limit:
                log = math.lgamma(n + 1) - math.lgamma(b + 1) - math.lgamma(c + 1) - math.lgamma(n - b - c + 1)
                log += (b * math.log(p_lost) if b else 0.0) + (c * math.log(p_won) if c else 0.0)
                total += math.exp(log + (n - b - c) * math.log1p(-p_lost - p_won))
    return total


@pytest.mark.parametrize(
    ("n", "p_lost", "p_won", "limit"), [(15, 0.1, 0.02, 0.05), (40, 0.05, 0.05, 0.1), (40, 0.3, 0.25, 0.1)]
)
def test_pass_probability_matches_every_table(n, p_lost, p_won, limit):
    expected = _multinomial_pass_rate(n, p_lost, p_won, limit)
    assert module_stats.drop_gate_pass_probability(n, p_lost, p_won, limit) == pytest.approx(expected, abs=1e-12)


def test_pass_probability_matches_this_file_s_transcription():
    for n, p_won in ((572, 0.0), (572, 0.003), (2383, 0.04)):
        expected = gate_false_pass_rate(n, 0.003 + p_won, p_won, 0.003)
        assert module_stats.drop_gate_pass_probability(n, 0.003 + p_won, p_won, 0.003) == pytest.approx(
            expected, abs=1e-9
        )


@pytest.mark.promise("docs/validation.md", "the 0.3 pt gate's bound passes wrongly at most 5 % of the time")
def test_false_pass_stays_below_5_percent_at_large_discordance():
    """The docs: at a true drop equal to the limit, the bound passes wrongly at most 5 % of the time whatever the
    discordance, on 121 to 10,000 images, up to every image being discordant (the grid's top, where the maxima are).
    A coarse part of the grid here; ``test_the_documented_false_pass_maxima`` (slow) runs all of it."""
    for n, worst in FALSE_PASS_MAXIMA.items():
        rates = [
            module_stats.drop_gate_pass_probability(n, 0.003 + p, p, 0.003) for p in (0.0, 0.003, 0.05, 0.3, 0.4985)
        ]
        assert max(rates) <= 0.05 and max(rates) <= worst + 5e-5, (n, rates)


@pytest.mark.slow
def test_the_documented_false_pass_maxima():
    for n, worst in FALSE_PASS_MAXIMA.items():
        rates = [module_stats.drop_gate_pass_probability(n, 0.003 + p, p, 0.003) for p in FALSE_PASS_GRID]
        assert round(max(rates), 4) == worst and max(rates) <= 0.05, n


@pytest.mark.promise("docs/validation.md", "NOT PROVEN stops a pipeline")
def test_exit_0_carries_the_guarantee_exit_3_does_not():
    """A 0.3 pt drop, all in one direction, on sets too small to prove the gate: the bound never passes (exit 0 is
    never reached), the measured drop passes (NOT PROVEN, exit 3) 69.5 % of the time on 121 images and 48.8 % on 572."""
    for n, shown in ((121, 0.695), (572, 0.488)):
        assert not drop_gate_provable(n, n, 0.003)
        assert module_stats.drop_gate_pass_probability(n, 0.003, 0.0, 0.003) < 1e-12  # (the window's added tail)
        allowed = math.floor(0.003 * n)  # the measured drop (b - c) / n passes while b <= 0.003 n
        assert module_stats.binomial_cdf(allowed, n, 0.003) == pytest.approx(shown, abs=5e-4)


def test_power_of_the_drop_gates():
    """The docs' "80 % of the time" figures for a harmless artifact (true drop 0: it loses as many images as it wins,
    half the discordance each way)."""

    def power(n, limit, discordance):
        return module_stats.drop_gate_pass_probability(n, discordance / 2, discordance / 2, limit)

    for (limit, discordance), first in DROP_POWER_80.items():
        assert power(first, limit, discordance) >= 0.8 > power(first - 1, limit, discordance)
    for (limit, discordance), about in DROP_POWER_80_ABOUT.items():
        assert power(round(about * 1.02), limit, discordance) >= 0.8 > power(round(about * 0.95), limit, discordance)
    # at 2,383 images (twice the minimum for 0.3 pt), a harmless artifact at 1 % discordance passes 36 % of the time
    assert power(2383, 0.003, 0.01) == pytest.approx(0.36, abs=0.005)


def test_the_drop_gates_first_reach_80_percent_where_the_docs_say():
    for (limit, discordance), first in DROP_POWER_80.items():
        start = min_images_to_prove(limit)
        below = [
            module_stats.drop_gate_pass_probability(n, discordance / 2, discordance / 2, limit)
            for n in range(start, first)
        ]
        assert max(below) < 0.8


def test_power_of_the_agreement_gates():
    """min_agreement 99 % / 99.5 % and the device's max_device_disagreement 5 %: where 80 % is first reached at a
    true disagreement of half or a tenth of the limit (the power saw-tooths with the set's size: a few larger sets
    fall just below it again, as 1,984 for 99 %)."""
    for (limit, disagreement), first in AGREEMENT_POWER_80.items():
        power = module_stats.agreement_gate_power
        assert power(first, limit, disagreement) >= 0.8 > power(first - 1, limit, disagreement)
    for disagreement, first in DEVICE_POWER_80.items():
        assert module_stats.agreement_gate_power(first, 0.05, disagreement) >= 0.8
        assert module_stats.agreement_gate_power(first - 1, 0.05, disagreement) < 0.8
    assert module_stats.agreement_gate_power(1984, 0.01, 0.005) < 0.8  # the saw-tooth


@pytest.mark.promise("docs/jetson.md", "124 images prove 5 % when at most 2 of them disagree")
def test_the_device_check_set_proves_its_gate_at_the_default_size():
    """The default check set (124 images) is the smallest that proves max_device_disagreement 5 % at 95 % confidence
    95 % of the time when the engine truly disagrees on 0.5 % of images; it proves it when at most 2 of 124 disagree;
    it still passes wrongly at most 5 % of the time at a true 5 %. 59 images are the least that can prove it at all."""
    assert module_stats.check_set_size(0.05, 0.95, disagreement=0.005, power=0.95) == 124
    assert module_stats.max_disagreements(124, 0.05) == 2 and module_stats.max_disagreements(58, 0.05) is None
    assert module_stats.max_disagreements(59, 0.05) == 0 and min_images_for_agreement(0.95) == 59
    assert agreement_lower_bound(122, 124) >= 0.95 > agreement_lower_bound(121, 124)
    assert module_stats.agreement_gate_power(124, 0.05, 0.005) == pytest.approx(0.975, abs=5e-4)
    assert module_stats.agreement_gate_power(124, 0.05, 0.01) == pytest.approx(0.872, abs=5e-4)
    assert all(module_stats.agreement_gate_power(n, 0.05, 0.005) < 0.95 for n in range(59, 124))
    assert module_stats.agreement_gate_power(124, 0.05, 0.05) <= 0.05  # the false-pass rate at the limit
    # 32 images (the old default) prove nothing: NOT PROVEN whatever the engine does
    assert module_stats.max_disagreements(32, 0.05) is None and 1 - agreement_lower_bound(32, 32) > 0.088
    # what 124 images can show against FP32: a drop only when 5 more images are lost than won
    assert module_stats.min_detectable_drop(124) == 5
    assert drop_interval(PairedCounts(120, 4, 0, 0)).lower <= 0 < drop_interval(PairedCounts(119, 5, 0, 0)).lower


def test_the_cpu_fp32_gate_on_10000_images():
    """cpu-fp32's 0.05 pt gate on 10,000 images passes with no discordant image (bound 0.036 pt), fails with one image
    right in PyTorch alone (0.053 pt), and passes again when one image right in OpenVINO alone offsets it (0.043 pt):
    each lost image needs one won, up to 2; 3 need 4."""

    def bound(b, c):
        return drop_upper_bound(PairedCounts(10000 - b - c, b, c, 0))

    assert bound(0, 0) == pytest.approx(0.000364, abs=5e-7) and bound(1, 0) == pytest.approx(0.000528, abs=5e-7)
    assert bound(1, 1) == pytest.approx(0.000434, abs=5e-7)
    for lost, won in ((0, 0), (1, 1), (2, 2), (3, 4)):
        assert bound(lost, won) <= 0.0005 < bound(lost, won - 1) if won else bound(lost, won) <= 0.0005
