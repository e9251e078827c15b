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
    PairedCounts,
    drop_gate,
    drop_interval,
    drop_upper_bound,
    exact_mcnemar_p,
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
    interval = drop_interval(PairedCounts(1, 1, 7, 12), 0.95)
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
    interval = drop_interval(PairedCounts(85, 9, 3, 24), 0.95)
    assert interval.point == pytest.approx(6 / 121, abs=TRANSCRIBED)
    assert (interval.lower, interval.upper) == pytest.approx((-0.008762, 0.109051), abs=5e-6)


def test_newcombe_matches_transcription_on_every_small_table() -> None:
    # Every table with n <= 8: empty margins, negative correlation, all-discordant and single-image tables
    for n in range(1, 9):
        for a, b, c in itertools.product(range(n + 1), repeat=3):
            d = n - a - b - c
            if d < 0:
                continue
            interval = drop_interval(PairedCounts(a, b, c, d), 0.95)
            expected = newcombe_method10(a, b, c, d, Z_975)
            assert (interval.lower, interval.upper) == pytest.approx(expected, abs=TRANSCRIBED), (a, b, c, d)
            assert -1.0 <= interval.lower <= interval.point <= interval.upper <= 1.0, (a, b, c, d)


@pytest.mark.parametrize("table", [(1514, 6, 2, 478), (7580, 20, 18, 2382), (92, 0, 0, 29), (10, 40, 35, 15)])
def test_newcombe_matches_transcription_on_realistic_tables(table: tuple[int, int, int, int]) -> None:
    for confidence, z in ((0.95, Z_975), (0.90, Z_95)):
        interval = drop_interval(PairedCounts(*table), confidence)
        assert (interval.lower, interval.upper) == pytest.approx(newcombe_method10(*table, z), abs=TRANSCRIBED)


def test_zero_discordant_pairs_are_not_proof() -> None:
    # 121 images, every one right for both models: margins are empty (phi = 0), p1 = p2 = 1, and the bound is
    # 1 - (Wilson lower of 121/121) = z^2 / (n + z^2) = 2.705543 / 123.705543 = 0.021871 at one-sided 95 %.
    perfect = PairedCounts(121, 0, 0, 0)
    assert drop_upper_bound(perfect, 0.95) == pytest.approx(Z_95**2 / (121 + Z_95**2), abs=TRANSCRIBED)
    # Top-1 exactly 1/2: p1 = p2, (u - p) = (p - l) = w, phi = 1 - n / (2ad) = 1 - 2/n, so
    # eps^2 = 2 w^2 (1 - phi) and w^2 = z^2 / (4 (n + z^2)) (Wilson at 1/2) give eps = z / sqrt(n (n + z^2)).
    half = PairedCounts(60, 0, 0, 60)
    assert drop_upper_bound(half, 0.95) == pytest.approx(Z_95 / math.sqrt(120 * (120 + Z_95**2)), abs=TRANSCRIBED)
    # In general (ad > n/2): eps^2 = (z^2 (1 - 2p) / (n + z^2))^2 + z^2 / (n (n + z^2)); at 92/121 that is 0.017619
    p, z = 92 / 121, Z_95
    general = math.sqrt((z * z * (1 - 2 * p) / (121 + z * z)) ** 2 + z * z / (121 * (121 + z * z)))
    assert drop_upper_bound(PairedCounts(92, 0, 0, 29), 0.95) == pytest.approx(general, abs=TRANSCRIBED)
    assert general == pytest.approx(0.017619, abs=5e-7)


def test_all_discordant() -> None:
    # b = n: p1 = 1, p2 = 0, margins empty. U = 1; L = 1 - sqrt(2) z^2 / (n + z^2) (both Wilson gaps are z^2/(n+z^2))
    n = 5
    worse = drop_interval(PairedCounts(0, n, 0, 0), 0.95)
    assert (worse.point, worse.upper) == (1.0, 1.0)
    assert worse.lower == pytest.approx(1 - math.sqrt(2) * Z_975**2 / (n + Z_975**2), abs=TRANSCRIBED)
    better = drop_interval(PairedCounts(0, 0, n, 0), 0.95)
    assert (better.point, better.lower) == (-1.0, -1.0)
    assert better.upper == pytest.approx(-worse.lower, abs=TRANSCRIBED)


@pytest.mark.parametrize("table", [(1, 0, 0, 0), (0, 1, 0, 0), (0, 0, 1, 0), (0, 0, 0, 1)])
def test_single_image(table: tuple[int, int, int, int]) -> None:
    interval = drop_interval(PairedCounts(*table), 0.95)
    assert -1.0 <= interval.lower <= interval.point <= interval.upper <= 1.0
    assert interval.upper - interval.lower > 0.5  # one image says little


def test_one_sided_bound_is_upper_end_at_two_c_minus_one() -> None:
    counts = PairedCounts(1514, 6, 2, 478)
    for confidence in (0.9, 0.95, 0.99):
        expected = drop_interval(counts, 2 * confidence - 1).upper
        assert drop_upper_bound(counts, confidence) == pytest.approx(expected, abs=TRANSCRIBED)
    # and it is the transcription's upper end with z = z_0.95, not the two-sided 95 % upper end
    assert drop_upper_bound(counts, 0.95) == pytest.approx(newcombe_method10(1514, 6, 2, 478, Z_95)[1], abs=1e-12)
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
        # 2000 images, reference top-1 76 %, 6 lost and 2 won: drop 0.2 pt looks fine against 0.3 pt, but the
        # one-sided 95 % bound is 0.457 pt. The set itself is big enough (a perfect result would pass).
        ((1514, 6, 2, 478), 0.002, 0.004574, False),
        # 10,000 images, 20 lost and 18 won: drop 0.02 pt, one-sided 95 % bound 0.124 pt, under 0.3 pt either way.
        ((7580, 20, 18, 2382), 0.0002, 0.001237, True),
    ],
)
def test_gate_judges_the_bound_not_the_point(table, point, bound, passed_on_bound) -> None:
    verdict = drop_gate(PairedCounts(*table), limit=0.003, confidence=0.95)
    assert verdict.point == pytest.approx(point, abs=TRANSCRIBED)
    assert verdict.upper_bound == pytest.approx(newcombe_method10(*table, Z_95)[1], abs=TRANSCRIBED)
    assert verdict.upper_bound == pytest.approx(bound, abs=5e-7)
    assert (verdict.passed_on_point, verdict.passed_on_bound, verdict.provable) == (True, passed_on_bound, True)
    assert ("NOT proven" in verdict.summary()) is not passed_on_bound and "too small" not in verdict.summary()


def test_gate_on_a_set_too_small_to_prove_anything() -> None:
    # 121 images, top-1 92/121, nothing discordant: drop 0 "passes" on the point, but the bound is 1.76 pt and no
    # result on 121 images could bring it under 0.3 pt; 720 images at this top-1 could.
    verdict = drop_gate(PairedCounts(92, 0, 0, 29), limit=0.003, confidence=0.95)
    assert verdict.upper_bound == pytest.approx(0.017619, abs=5e-7)
    assert (verdict.passed_on_point, verdict.passed_on_bound, verdict.provable) == (True, False, False)
    assert verdict.min_images == 720
    assert "too small to prove it (at least 720 images needed)" in verdict.summary()
    json.dumps(verdict.to_dict())  # the report stores it as JSON
    assert verdict.to_dict()["counts"] == {"a": 92, "b": 0, "c": 0, "d": 29, "n": 121, "drop": 0.0}


def test_min_images_to_prove_closed_form_when_every_image_is_right() -> None:
    # Top-1 100 %: U = z^2 / (n + z^2) <= limit  <=>  n >= z^2 (1 - limit) / limit = 2.705543 * 0.997 / 0.003 = 899.14
    assert Z_95**2 * (1 - 0.003) / 0.003 == pytest.approx(899.14, abs=0.01)
    assert min_images_to_prove(0.003, 0.95) == 900
    assert min_images_to_prove(0.01, 0.95) == math.ceil(Z_95**2 * 0.99 / 0.01)


@pytest.mark.parametrize(("reference_top1", "expected"), [(1.0, 900), (0.99, 1039), (0.76, 719), (0.5, 547)])
def test_min_images_to_prove_is_the_first_passing_size(reference_top1: float, expected: int) -> None:
    # The bound with zero discordant pairs depends on the reference top-1 (through phi and the Wilson limits)
    assert min_images_to_prove(0.003, 0.95, reference_top1) == expected

    def perfect(n: int) -> PairedCounts:
        right = round(reference_top1 * n)
        return PairedCounts(right, 0, 0, n - right)

    assert drop_upper_bound(perfect(expected), 0.95) <= 0.003 < drop_upper_bound(perfect(expected - 1), 0.95)
    assert drop_gate(perfect(expected), 0.003).provable and not drop_gate(perfect(expected - 1), 0.003).provable


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
