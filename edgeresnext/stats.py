"""Confidence intervals behind the validation report: how sure a top-1 drop measured on N images is.

The FP32 reference and the INT8 artifact classify the *same* images, so their correctness is paired. Per image
each is right or wrong, which gives the paired 2x2 table (rows FP32, columns INT8):

=============  ============  ============
               INT8 right    INT8 wrong
FP32 right     ``a``         ``b``
FP32 wrong     ``c``         ``d``
=============  ============  ============

The top-1 drop is ``(b - c) / n`` (positive = INT8 worse). Only the discordant pairs ``b`` and ``c`` move it,
which is why 121 images with no discordant pair are not proof of "no drop": the interval below says how far the
drop could be from zero on that many images.

* :func:`drop_interval` / :func:`drop_upper_bound`: Tango's score interval for the difference of paired
  proportions, continuity-corrected by half an image (Newcombe's method 10 stays available as ``method=``);
* :func:`proportion_interval`: Wilson score (default) or exact Clopper-Pearson interval for one proportion
  (top-1 of one model, agreement = share of images whose predicted classes are equal);
* :func:`agreement_lower_bound` / :func:`min_images_for_agreement`: the exact one-sided bound ``min_agreement``
  compares, and the set size at which full agreement passes it;
* :func:`exact_mcnemar_p`: the exact (conditional binomial) McNemar test of ``b`` against ``c``: whether the two
  accuracies differ;
* :func:`drop_gate` / :func:`drop_gate_provable` / :func:`min_images_to_prove`: a max-drop gate decided on the
  upper bound, and whether the set is large enough for a result as good as FP32 to pass it.

Proportions and drops are fractions (0.003 = 0.3 points), as in :class:`edgeresnext.config.Gates`. The standard
library only (numpy is imported lazily, by :func:`paired_counts` alone): the Jetson kit ships this very file beside
its device check, which runs under JetPack's bare ``python3``, so the device's intervals and gates are the host's.
"""

from __future__ import annotations

import logging
import math
import numbers
import statistics
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

try:
    from edgeresnext.errors import ConfigError, DataError
except ImportError:  # a verbatim copy in a device kit, under a python3 without edgeresnext

    class ConfigError(ValueError):  # type: ignore[no-redef]
        pass

    class DataError(ValueError):  # type: ignore[no-redef]
        pass


logger = logging.getLogger(__name__)

__all__ = [
    "DropGateVerdict",
    "Interval",
    "PairedCounts",
    "agreement_gate_provable",
    "agreement_lower_bound",
    "drop_gate",
    "drop_gate_provable",
    "drop_interval",
    "drop_upper_bound",
    "exact_mcnemar_p",
    "min_images_for_agreement",
    "min_images_to_prove",
    "normal_quantile",
    "paired_counts",
    "proportion_interval",
]

PROPORTION_METHODS = ("wilson", "exact")
DROP_METHOD = "tango-score-cc"  # the gate's: Tango's score interval, continuity-corrected by half an image
NEWCOMBE_METHOD = "newcombe-hybrid-score"  # Newcombe's method 10, kept for comparison
DROP_METHODS = (DROP_METHOD, NEWCOMBE_METHOD)
# Half an image: the continuity correction of the drop's score statistic (see drop_interval)
TANGO_CORRECTION = 0.5
# Bisection on [0, 1] halves the bracket each step; 2**-60 is below the spacing of doubles near any limit
# that matters, and the loop also stops as soon as the midpoint no longer moves.
_BISECTION_STEPS = 200


# --------------------------------------------------------------------------------------------- results
@dataclass(frozen=True)
class PairedCounts:
    """The paired 2x2 table of FP32 vs INT8 correctness on the same images (see the module docstring)."""

    a: int  # both right
    b: int  # FP32 right, INT8 wrong
    c: int  # FP32 wrong, INT8 right
    d: int  # both wrong

    def __post_init__(self) -> None:
        for name in ("a", "b", "c", "d"):
            value = getattr(self, name)
            # bool is an int subclass; a True count is a caller's mix-up, not one image
            if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 0:
                raise DataError(f"paired count {name}={value!r}; expected a non-negative integer")
            object.__setattr__(self, name, int(value))
        if self.n == 0:
            raise DataError("paired counts are all zero; at least one image is needed")

    @property
    def n(self) -> int:
        return self.a + self.b + self.c + self.d

    @property
    def discordant(self) -> int:
        """Images where exactly one of the two models is right: the only ones that move the drop."""
        return self.b + self.c

    @property
    def reference_top1(self) -> float:
        return (self.a + self.b) / self.n

    @property
    def artifact_top1(self) -> float:
        return (self.a + self.c) / self.n

    @property
    def drop(self) -> float:
        """Top-1 drop ``(b - c) / n``: reference top-1 minus artifact top-1 (positive = artifact worse)."""
        return (self.b - self.c) / self.n

    def to_dict(self) -> dict[str, Any]:
        return {"a": self.a, "b": self.b, "c": self.c, "d": self.d, "n": self.n, "drop": self.drop}


@dataclass(frozen=True)
class Interval:
    """A two-sided confidence interval ``[lower, upper]`` around ``point`` at level ``confidence``."""

    point: float
    lower: float
    upper: float
    confidence: float
    method: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class DropGateVerdict:
    """A max-top-1-drop gate decided on the one-sided upper bound of the drop, not on the point estimate.

    ``provable`` is False when the bound does not pass and the set is too small for even an artifact as good as
    FP32 (no discordant image) to pass (:func:`drop_gate_provable`); a passing bound is always provable.
    ``min_images`` is the smallest set on which such an artifact passes (None when ``limit`` is 0, which no
    finite set proves).
    """

    counts: PairedCounts
    limit: float
    confidence: float
    point: float
    upper_bound: float
    passed_on_point: bool
    passed_on_bound: bool
    provable: bool
    min_images: int | None

    def summary(self) -> str:
        """One line for the report, in points (0.01 = 1 pt)."""
        verdict = "passed" if self.passed_on_bound else "NOT proven"
        line = (
            f"top-1 drop {100 * self.point:+.2f} pt, {100 * self.confidence:g} % upper bound "
            f"{100 * self.upper_bound:+.2f} pt on {self.counts.n} images ({self.counts.discordant} discordant) "
            f"vs limit {100 * self.limit:.2f} pt: {verdict}"
        )
        if not self.provable:
            needed = "no finite set" if self.min_images is None else f"at least {self.min_images} images"
            line += f"; this set is too small for a result as good as FP32 to pass ({needed} needed)"
        return line

    def holds(self, unproven: str = "warn") -> bool:
        """Whether the gate holds, as the build decides it: on the bound; or, on a set too small for a result as
        good as FP32 to pass (``provable`` False), on the measured drop when ``unproven`` is ``"warn"`` (NOT
        PROVEN) and never when it is ``"fail"``. The validation gate and the quantize fallback both use this."""
        if unproven not in ("warn", "fail"):
            raise ConfigError(f"unproven={unproven!r}; expected 'warn' or 'fail'")
        if self.passed_on_bound:
            return True
        return not self.provable and unproven == "warn" and self.passed_on_point

    def to_dict(self) -> dict[str, Any]:
        result = asdict(self)
        result["counts"] = self.counts.to_dict()
        return result


# --------------------------------------------------------------------------------------------- arguments
def _check_confidence(confidence: float, name: str = "confidence") -> float:
    if isinstance(confidence, bool) or not isinstance(confidence, numbers.Real):
        raise ConfigError(f"{name}={confidence!r}; expected a number strictly between 0 and 1 (e.g. 0.95)")
    confidence = float(confidence)
    if not 0.0 < confidence < 1.0:  # also rejects NaN
        raise ConfigError(f"{name}={confidence!r}; expected a number strictly between 0 and 1 (e.g. 0.95)")
    return confidence


def _check_trials(successes: int, n: int) -> tuple[int, int]:
    for name, value in (("successes", successes), ("n", n)):
        if isinstance(value, bool) or not isinstance(value, numbers.Integral):
            raise DataError(f"{name}={value!r}; expected an integer count")
    if n < 1:
        raise DataError(f"n={n}; at least one image is needed for a proportion")
    if not 0 <= successes <= n:
        raise DataError(f"successes={successes} out of n={n}; expected 0 <= successes <= n")
    return int(successes), int(n)


def _as_correctness(values: Sequence[bool], name: str) -> Any:
    import numpy as np  # lazily: only the host builds tables from per-image arrays

    array = np.asarray(values)
    if array.size == 0:  # np.asarray([]) is float64; the caller reports the emptiness, not a dtype
        return array.astype(bool)
    if array.ndim != 1:
        raise DataError(f"{name} has shape {array.shape}; expected one boolean per image (1-D)")
    if array.dtype == bool:
        return array
    # 0/1 integers are the other common encoding of "right"; anything else (2, 0.5, NaN) is a mistake upstream
    if np.issubdtype(array.dtype, np.integer) and np.isin(array, (0, 1)).all():
        return array.astype(bool)
    raise DataError(f"{name} has dtype {array.dtype}; expected booleans (or 0/1 integers), one per image")


# --------------------------------------------------------------------------------------------- normal quantile
_STANDARD_NORMAL = statistics.NormalDist()


def normal_quantile(p: float) -> float:
    """The standard normal quantile ``z`` with ``P(Z <= z) = p`` (e.g. 1.959963984540054 for 0.975).

    The standard library's :meth:`statistics.NormalDist.inv_cdf` is Wichura's AS 241 (PPND16), accurate to about
    1e-16 over (0, 1); a hand-written approximation (Acklam's, refined by a Newton step) would only add code that
    can be wrong, so this checks the argument and defers to it.
    """
    return _STANDARD_NORMAL.inv_cdf(_check_confidence(p, "p"))


def _two_sided_z(confidence: float) -> float:
    return normal_quantile(1.0 - (1.0 - _check_confidence(confidence)) / 2.0)


# --------------------------------------------------------------------------------------------- one proportion
def _wilson_limits(successes: int, n: int, z: float) -> tuple[float, float]:
    """Wilson (1927) score limits: the ``p`` where ``|p_hat - p| = z * sqrt(p (1 - p) / n)``."""
    p_hat = successes / n
    z2_n = z * z / n
    denominator = 1.0 + z2_n
    center = (p_hat + z2_n / 2.0) / denominator
    half = z / denominator * math.sqrt(p_hat * (1.0 - p_hat) / n + z2_n / (4.0 * n))
    # At 0 or n successes the limit is exactly 0 or 1; the formula gets there only up to rounding
    lower = 0.0 if successes == 0 else max(0.0, center - half)
    upper = 1.0 if successes == n else min(1.0, center + half)
    return lower, upper


def _log_binomial_terms(n: int, p: float, ks: range) -> list[float]:
    """``log P(X = k)`` for ``X ~ Binomial(n, p)`` and each k in ``ks``, from log-gamma (n in the tens of thousands
    neither overflows nor underflows)."""
    log_n_factorial, log_p, log_q = math.lgamma(n + 1), math.log(p), math.log1p(-p)
    return [log_n_factorial - math.lgamma(k + 1) - math.lgamma(n - k + 1) + k * log_p + (n - k) * log_q for k in ks]


def _tail_probability(log_terms: list[float]) -> float:
    # Sum in log space relative to the largest term: the tails of interest are ~alpha/2, far above underflow,
    # but single terms for n ~ 10^4 underflow exp() when taken one by one
    if not log_terms:
        return 0.0
    top = max(log_terms)
    return math.exp(top) * math.fsum(math.exp(term - top) for term in log_terms)


def _bisect(function: Callable[[float], float], target: float, increasing: bool) -> float:
    """The ``p`` in (0, 1) where a function monotone in ``p`` crosses ``target``."""
    low, high = 0.0, 1.0
    for _ in range(_BISECTION_STEPS):
        middle = (low + high) / 2.0
        if middle in (low, high):
            break
        if (function(middle) < target) == increasing:
            low = middle
        else:
            high = middle
    return (low + high) / 2.0


def _clopper_pearson_limits(successes: int, n: int, alpha: float) -> tuple[float, float]:
    """Exact limits (Clopper & Pearson 1934): each tail of the binomial at its limit holds ``alpha / 2``.

    Each tail is summed directly (not as 1 - CDF) so it keeps full relative precision near ``alpha / 2``.
    """

    def at_most(p: float) -> float:  # P(X <= successes | p), decreasing in p
        return _tail_probability(_log_binomial_terms(n, p, range(successes + 1)))

    def at_least(p: float) -> float:  # P(X >= successes | p), increasing in p
        return _tail_probability(_log_binomial_terms(n, p, range(successes, n + 1)))

    lower = 0.0 if successes == 0 else _bisect(at_least, alpha / 2.0, increasing=True)
    upper = 1.0 if successes == n else _bisect(at_most, alpha / 2.0, increasing=False)
    return lower, upper


def _clopper_pearson_lower(successes: int, n: int, alpha: float) -> float:
    """The exact one-sided lower limit: ``P(X >= successes | p) = alpha`` (only the upper tail is summed, a few
    terms when nearly every image succeeds)."""

    def at_least(p: float) -> float:
        return _tail_probability(_log_binomial_terms(n, p, range(successes, n + 1)))

    return 0.0 if successes == 0 else _bisect(at_least, alpha, increasing=True)


def proportion_interval(successes: int, n: int, confidence: float = 0.95, method: str = "wilson") -> Interval:
    """Two-sided interval for one proportion ``successes / n`` (a model's top-1, or agreement).

    ``method="wilson"``: Wilson score interval without continuity correction (method 3 of Newcombe 1998,
    "Two-sided confidence intervals for the single proportion", Stat Med 17:857-872); near-nominal coverage on
    average and sensible at 0 and n. ``method="exact"``: Clopper-Pearson, which never covers less than
    ``confidence`` and is therefore wider.
    """
    successes, n = _check_trials(successes, n)
    confidence = _check_confidence(confidence)
    if method == "wilson":
        lower, upper = _wilson_limits(successes, n, _two_sided_z(confidence))
    elif method == "exact":
        lower, upper = _clopper_pearson_limits(successes, n, 1.0 - confidence)
    else:
        raise ConfigError(f"method={method!r}; expected one of {', '.join(PROPORTION_METHODS)}")
    return Interval(successes / n, lower, upper, confidence, method)


# --------------------------------------------------------------------------------------------- agreement
def agreement_lower_bound(agree: int, n: int, confidence: float = 0.95) -> float:
    """The one-sided lower bound at ``confidence`` of the share of images on which two models predict the same
    class (``agree`` of ``n``): the ``min_agreement`` gate's bound, on the host and in the device check alike.

    Exact (Clopper-Pearson): the agreement ``p`` at which ``agree`` or more of ``n`` agreeing images has
    probability ``1 - confidence``, so the bound is never too high, whatever ``n``. (Wilson's score bound, used
    before, passed a 99 % gate on 268 images that all agreed, while at a true 99 % all 268 agree 6.8 % of the time.)
    """
    successes, n = _check_trials(agree, n)
    if _check_confidence(confidence) <= 0.5:
        raise ConfigError(f"confidence={confidence!r}; a one-sided bound needs a level above 0.5 (e.g. 0.95)")
    if successes == 0:
        return 0.0
    alpha = 1.0 - confidence
    if successes == n:  # P(all n agree) = p^n: the closed form, free of bisection rounding
        return alpha ** (1.0 / n)
    return _clopper_pearson_lower(successes, n, alpha)


def min_images_for_agreement(limit: float, confidence: float = 0.95) -> int | None:
    """The smallest set on which two models agreeing on every image have an :func:`agreement_lower_bound` of at
    least ``limit``; None when no finite set does (``limit`` 1).

    At full agreement the exact lower bound is ``(1 - confidence)^(1/n)``, so ``n >= ln(1 - confidence) /
    ln(limit)``: 298.07 -> 299 images for 99 % at 95 %, 598 for 99.5 %. The scan from just below settles
    rounding the same way the gate computes the bound.
    """
    if limit >= 1.0:
        return None
    if limit <= 0.0:
        return 1
    confidence = _check_confidence(confidence)
    n = max(1, math.floor(math.log(1.0 - confidence) / math.log(limit)) - 1)
    while agreement_lower_bound(n, n, confidence) < limit:
        n += 1
    return n


def agreement_gate_provable(n: int, limit: float, confidence: float = 0.95) -> bool:
    """Whether any result on ``n`` images could pass ``min_agreement`` = ``limit``: the best one (agreement on every
    image) has a lower bound of at least ``limit``. False means NOT PROVEN."""
    needed = min_images_for_agreement(limit, confidence)
    return needed is not None and n >= needed


# --------------------------------------------------------------------------------------------- paired difference
def paired_counts(ref_correct: Sequence[bool], art_correct: Sequence[bool]) -> PairedCounts:
    """The paired 2x2 table from per-image correctness of the FP32 reference and the artifact (same order)."""
    ref = _as_correctness(ref_correct, "ref_correct")
    art = _as_correctness(art_correct, "art_correct")
    if ref.shape != art.shape:
        raise DataError(
            f"ref_correct has {ref.size} images and art_correct {art.size}; both must score the same images"
        )
    if ref.size == 0:
        raise DataError("no images: ref_correct and art_correct are empty")
    return PairedCounts(
        a=int((ref & art).sum()),
        b=int((ref & ~art).sum()),
        c=int((~ref & art).sum()),
        d=int((~ref & ~art).sum()),
    )


def _paired_phi(counts: PairedCounts) -> float:
    """Newcombe's phi for method 10: the correlation of the two correctness indicators, shrunk toward 0.

    ``ad - bc`` is replaced by ``max(ad - bc - n/2, 0)`` when positive (a continuity-type correction; the same
    rule is in Fagerland, Lydersen & Laake, "Statistical Analysis of Contingency Tables", 2017, ch. 8). Without
    it, zero discordant pairs give phi = 1 and, at a top-1 near 50 %, an interval of width ~0: exactly the
    false proof this module exists to prevent. An empty margin (every image right, say) leaves phi undefined;
    it is taken as 0 there, as Fagerland et al. do.
    """
    a, b, c, d, n = counts.a, counts.b, counts.c, counts.d, counts.n
    margins = (a + b) * (c + d) * (a + c) * (b + d)
    if margins == 0:
        return 0.0
    cross = a * d - b * c
    numerator = max(cross - n / 2.0, 0.0) if cross > 0 else float(cross)
    return numerator / math.sqrt(margins)


def _newcombe_limits(counts: PairedCounts, z: float) -> tuple[float, float]:
    n = counts.n
    p1, p2 = counts.reference_top1, counts.artifact_top1
    l1, u1 = _wilson_limits(counts.a + counts.b, n, z)
    l2, u2 = _wilson_limits(counts.a + counts.c, n, z)
    phi = _paired_phi(counts)
    # |phi| <= 1 keeps both radicands >= 0 in exact arithmetic; max() only absorbs rounding
    delta = math.sqrt(max(0.0, (p1 - l1) ** 2 - 2.0 * phi * (p1 - l1) * (u2 - p2) + (u2 - p2) ** 2))
    epsilon = math.sqrt(max(0.0, (u1 - p1) ** 2 - 2.0 * phi * (u1 - p1) * (p2 - l2) + (p2 - l2) ** 2))
    drop = counts.drop
    return max(-1.0, drop - delta), min(1.0, drop + epsilon)


def _tango_restricted_q(b: int, c: int, n: int, delta: float) -> float:
    """Tango's restricted maximum-likelihood estimate of ``P(only the artifact right)`` when the drop is
    ``delta``: the root in [0, 1] of ``2n q^2 + B q + C = 0`` with ``B = -b - c + (2n - b + c) delta`` and
    ``C = -c delta (1 - delta)`` (C <= 0, so the root is real and non-negative). When ``B > 0`` the textbook
    ``(sqrt(B^2 - 4AC) - B) / 2A`` loses every digit to cancellation; ``-2C / (sqrt(B^2 - 4AC) + B)`` is the same
    root without it."""
    quadratic = 2.0 * n
    linear = -b - c + (2.0 * n - b + c) * delta
    constant = -c * delta * (1.0 - delta)
    root = math.sqrt(max(0.0, linear * linear - 4.0 * quadratic * constant))
    if linear > 0:
        return -2.0 * constant / (root + linear) if root + linear > 0 else 0.0
    return (root - linear) / (2.0 * quadratic)


def _tango_excess(b: int, c: int, n: int, delta: float, correction: float) -> float:
    """How far ``delta`` lies from the observed drop in Tango's score units, after the continuity correction:
    ``(|b - c - n delta| - correction)_+ / sqrt(n (2 q + delta (1 - delta)))``; the bound is where it reaches z."""
    distance = abs(b - c - n * delta) - correction
    if distance <= 0.0:
        return 0.0
    variance = n * (2.0 * _tango_restricted_q(b, c, n, delta) + delta * (1.0 - delta))
    return math.inf if variance <= 0.0 else distance / math.sqrt(variance)


def _tango_limit(counts: PairedCounts, z: float, upper: bool, correction: float = TANGO_CORRECTION) -> float:
    """One end of Tango's score interval with a continuity correction: the drop beyond the observed one
    (above it for ``upper``) where :func:`_tango_excess` first reaches ``z``, by bisection (it grows
    monotonically away from the observed drop)."""
    b, c, n = counts.b, counts.c, counts.n
    if upper:
        low, high = min(1.0, (b - c + correction) / n), 1.0
    else:
        low, high = -1.0, max(-1.0, (b - c - correction) / n)
    # The excess is 0 on the near side of the bracket and grows towards the far end (the far end is +-1)
    inside, outside = (low, high) if upper else (high, low)
    if _tango_excess(b, c, n, outside, correction) <= z:
        return outside
    for _ in range(_BISECTION_STEPS):
        middle = (inside + outside) / 2.0
        if middle in (inside, outside):
            break
        if _tango_excess(b, c, n, middle, correction) <= z:
            inside = middle
        else:
            outside = middle
    return inside


def _drop_limits(counts: PairedCounts, z: float, method: str) -> tuple[float, float]:
    if method == DROP_METHOD:
        return _tango_limit(counts, z, upper=False), _tango_limit(counts, z, upper=True)
    if method == NEWCOMBE_METHOD:
        return _newcombe_limits(counts, z)
    raise ConfigError(f"method={method!r}; expected one of {', '.join(DROP_METHODS)}")


def drop_interval(counts: PairedCounts, confidence: float = 0.95, method: str = DROP_METHOD) -> Interval:
    """Two-sided interval for the top-1 drop ``p1 - p2`` (p1 = FP32 top-1, p2 = artifact top-1, same images).

    Default (``"tango-score-cc"``): Tango's score interval for the difference of paired proportions (T. Tango,
    "Equivalence test and confidence interval for the difference in proportions for the paired-sample design",
    Statistics in Medicine 17:891-908, 1998; also Fagerland, Lydersen & Laake, "Statistical Analysis of
    Contingency Tables", 2017, ch. 8), with a continuity correction of half an image: each end is the drop
    ``delta`` where::

        (|b - c - n delta| - 1/2) / sqrt(n (2 q(delta) + delta (1 - delta))) = z

    with ``q(delta)`` the restricted maximum-likelihood estimate of ``P(only the artifact right)``
    (:func:`_tango_restricted_q`). It uses only the discordant counts ``b``, ``c`` and ``n``. Without the half
    image the score interval is too short when few images are discordant: a true drop of 0.3 pt all in one
    direction passed a 0.3 pt gate up to 18 % of the time on 572 images instead of 5 %; with it the exact
    false-pass rate at the gate's limit stays below 5 % (``tests/test_stats.py`` enumerates it).

    ``method="newcombe-hybrid-score"``: Newcombe's hybrid score interval, "method 10" of R. G. Newcombe,
    "Improved confidence intervals for the difference between binomial proportions based on paired data",
    Statistics in Medicine 17:2635-2650 (1998), kept for comparison; it is not the gate's.
    """
    lower, upper = _drop_limits(counts, _two_sided_z(confidence), method)
    return Interval(counts.drop, lower, upper, float(confidence), method)


def drop_upper_bound(counts: PairedCounts, confidence: float = 0.95, method: str = DROP_METHOD) -> float:
    """One-sided upper confidence bound on the top-1 drop at ``confidence`` (what a max-drop gate compares).

    It is the upper end of the two-sided :func:`drop_interval` at level ``2 * confidence - 1`` (0.90 for 0.95),
    i.e. the drop where the corrected score statistic reaches ``z = 1.645`` (one-sided 95 %).
    """
    confidence = _check_confidence(confidence)
    if confidence <= 0.5:
        raise ConfigError(f"confidence={confidence!r}; a one-sided bound needs a level above 0.5 (e.g. 0.95)")
    # Why 2c - 1 and not c: the gate only fails on a drop that is too large, so all of its error allowance
    # 1 - c belongs in the upper tail, i.e. z = z_c (1.645 at 95 %). Taking the upper end of the two-sided
    # interval at c would be a one-sided (1 + c) / 2 bound (97.5 % for 95 %): stricter than stated.
    return _drop_limits(counts, normal_quantile(confidence), method)[1]


# --------------------------------------------------------------------------------------------- McNemar
def exact_mcnemar_p(b: int, c: int) -> float:
    """Two-sided exact McNemar p-value: a binomial test of ``b`` successes in ``b + c`` trials at 1/2.

    ``p = min(1, 2 * P(X <= min(b, c)))`` with ``X ~ Binomial(b + c, 1/2)``, computed in exact integers (the
    concordant pairs a and d carry no information about which model is better). No discordant pair gives 1.
    """
    for name, value in (("b", b), ("c", c)):
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 0:
            raise DataError(f"discordant count {name}={value!r}; expected a non-negative integer")
    trials, smaller = int(b) + int(c), min(int(b), int(c))
    tail = sum(math.comb(trials, k) for k in range(smaller + 1))
    # int / int is correctly rounded in Python even when both exceed the float range
    return min(1.0, 2 * tail / 2**trials)


# --------------------------------------------------------------------------------------------- gate
def _perfect_counts(n: int, reference_right: int) -> PairedCounts:
    """The table of an artifact right on exactly the images the reference gets right (no discordant pair)."""
    return PairedCounts(a=reference_right, b=0, c=0, d=n - reference_right)


def _check_limit(limit: float) -> float:
    if isinstance(limit, bool) or not isinstance(limit, numbers.Real) or not math.isfinite(limit):
        raise ConfigError(f"limit={limit!r}; expected a top-1 drop as a fraction (0.003 = 0.3 pt)")
    if limit < 0:
        raise ConfigError(f"limit={limit!r}; a max top-1 drop cannot be negative")
    return float(limit)


def drop_gate_provable(n: int, reference_right: int, limit: float, confidence: float = 0.95) -> bool:
    """Whether this set can prove a max-drop gate of ``limit`` for an artifact as good as FP32: one right on exactly
    the images FP32 gets right (no discordant image) has an upper bound within ``limit``. False means NOT PROVEN
    for any result whose own bound does not pass (:func:`drop_gate`).

    It is not "no result could pass": an artifact better than FP32 can pass where an equal one cannot, so
    (a, b, c, d) = (100, 0, 5, 16) passes a 0.3 pt gate on 121 images, and a passing bound is never NOT PROVEN.
    But a small set's verdict for an artifact that is merely as good as FP32 is "not proven", not "failed".
    """
    return drop_upper_bound(_perfect_counts(n, reference_right), confidence) <= _check_limit(limit)


def min_images_to_prove(limit: float, confidence: float = 0.95, reference_top1: float = 1.0) -> int:
    """The smallest number of images on which an artifact equal to FP32 (zero discordant pairs) passes ``limit``.

    With the gate's bound (Tango's, corrected by half an image) zero discordant pairs give the upper bound ``U``
    where ``n U - 1/2 = z sqrt(n U (1 - U))`` whatever the reference's top-1: with ``s = sqrt(n)``,
    ``limit s^2 - z sqrt(limit (1 - limit)) s - 1/2 = 0``, so for 0.3 pt at 95 % one-sided (z = 1.645)
    ``n >= 1,209.7``: 1,210 images. ``reference_top1`` (checked, then used to build the table) does not change it.
    """
    limit = _check_limit(limit)
    confidence = _check_confidence(confidence)
    if not 0.0 <= reference_top1 <= 1.0:
        raise ConfigError(f"reference_top1={reference_top1!r}; expected a fraction in [0, 1]")
    if limit == 0.0:
        raise ConfigError("limit=0: no finite number of images proves a drop of at most 0")
    if limit >= 1.0:
        return 1
    z = normal_quantile(confidence)
    root = (z * math.sqrt(limit * (1.0 - limit)) + math.sqrt(z * z * limit * (1.0 - limit) + 2.0 * limit)) / (
        2.0 * limit
    )
    # Start just below the closed form and scan: rounding in the bisection settles the last image either way
    n = max(1, math.floor(root * root) - 2)
    while drop_upper_bound(_perfect_counts(n, round(reference_top1 * n)), confidence) > limit:
        n += 1
    logger.debug("min images to prove a drop <= %g at %g: %d", limit, confidence, n)
    return n


def drop_gate(counts: PairedCounts, limit: float, confidence: float = 0.95) -> DropGateVerdict:
    """Decide a max-top-1-drop gate on the one-sided upper bound, and say whether this set could ever pass it.

    ``passed_on_bound`` is the decision to use; ``passed_on_point`` is what comparing the bare measured drop
    would have said, kept so the report can show when the two disagree (a pass that is luck, not evidence).
    ``provable`` (:func:`drop_gate_provable`) is True whenever the bound passes.
    """
    limit = _check_limit(limit)
    confidence = _check_confidence(confidence)
    upper = drop_upper_bound(counts, confidence)
    provable = upper <= limit or drop_gate_provable(counts.n, counts.a + counts.b, limit, confidence)
    min_images = None if limit == 0.0 else min_images_to_prove(limit, confidence, counts.reference_top1)
    return DropGateVerdict(
        counts=counts,
        limit=limit,
        confidence=confidence,
        point=counts.drop,
        upper_bound=upper,
        passed_on_point=counts.drop <= limit,
        passed_on_bound=upper <= limit,
        provable=provable,
        min_images=min_images,
    )


# --------------------------------------------------------------------------------------------- power
# The minimum set sizes above say when a perfect result *can* pass a gate; these say how often a good-but-not-perfect
# one *does*, computed exactly (binomial sums, no simulation), and size the device check set from its gate.
def binomial_cdf(k: int, n: int, p: float) -> float:
    """``P(X <= k)`` for ``X ~ Binomial(n, p)``, summed term by term in log space."""
    if k < 0:
        return 0.0
    if k >= n or p <= 0.0:
        return 1.0
    if p >= 1.0:
        return 0.0
    return min(1.0, _tail_probability(_log_binomial_terms(n, p, range(k + 1))))


def max_disagreements(n: int, limit: float, confidence: float = 0.95) -> int | None:
    """The most of ``n`` images on which two models may disagree and still prove a disagreement of at most ``limit``
    (their agreement's :func:`agreement_lower_bound` at least ``1 - limit``); None when not even full agreement can
    (``n`` below :func:`min_images_for_agreement`). It is the K of "proves <= 5 % when at most K of N disagree"."""
    _check_trials(0, n)
    if agreement_lower_bound(n, n, confidence) < 1.0 - limit:
        return None
    low, high = 0, n  # the bound falls as disagreements rise: the last passing count, by bisection
    while low < high:
        middle = (low + high + 1) // 2
        if agreement_lower_bound(n - middle, n, confidence) >= 1.0 - limit:
            low = middle
        else:
            high = middle - 1
    return low


def agreement_gate_power(n: int, limit: float, disagreement: float, confidence: float = 0.95) -> float:
    """How often ``n`` images prove a disagreement of at most ``limit`` when the models truly disagree on a share
    ``disagreement`` of images (each image independently): ``P(X <= K)``, ``K`` = :func:`max_disagreements`. At
    ``disagreement == limit`` it is the gate's false-pass rate, at most ``1 - confidence``."""
    most = max_disagreements(n, limit, confidence)
    return 0.0 if most is None else binomial_cdf(most, n, disagreement)


def check_set_size(
    limit: float, confidence: float = 0.95, disagreement: float = 0.005, power: float = 0.95, largest: int = 100_000
) -> int | None:
    """The smallest set that proves a disagreement of at most ``limit`` with probability at least ``power`` when the
    true disagreement is ``disagreement``: the device check set's default size (0.05 at 95 %: 124 images, which
    also give 87 % at a true 1 %). None when no set up to ``largest`` does (``disagreement`` too near ``limit``)."""
    start = min_images_for_agreement(1.0 - limit, confidence)
    if start is None:
        return None
    for n in range(start, largest + 1):
        if agreement_gate_power(n, limit, disagreement, confidence) >= power:
            return n
    return None


def min_detectable_drop(n: int, confidence: float = 0.95) -> int | None:
    """The fewest images an artifact must lose against FP32 (winning none) on ``n`` for the two-sided drop interval
    at ``confidence`` to lie above 0: the smallest drop (``result / n``) these images can show at all. None when even
    losing every image cannot."""
    _check_trials(0, n)
    for lost in range(1, n + 1):
        if drop_interval(PairedCounts(n - lost, lost, 0, 0), confidence).lower > 0.0:
            return lost
    return None


def drop_gate_pass_probability(
    n: int, p_lost: float, p_won: float, limit: float, confidence: float = 0.95, tail: float = 1e-15
) -> float:
    """How often a max-drop gate of ``limit`` passes on its bound over ``n`` images when each image is, independently,
    lost by the artifact (right only in FP32) with probability ``p_lost`` and won with ``p_won``.

    At ``p_lost - p_won == limit`` this is the false-pass rate (at most ``1 - confidence``); at ``p_lost == p_won``
    (a harmless artifact) it is the power. Exact: with ``m`` discordant images (``m ~ Binomial(n, p_lost + p_won)``)
    the bound depends on ``b`` (lost) and ``m`` alone and grows with ``b``, so the gate passes iff ``b <= b*(m)``,
    ``b ~ Binomial(m, p_lost / (p_lost + p_won))``; ``b*`` rises by at most one per extra discordant image. Values
    of ``m`` whose total probability is below ``tail`` are left out, and that probability added (an upper bound).
    """
    limit = _check_limit(limit)
    discordant = p_lost + p_won
    if not (0.0 <= p_lost and 0.0 <= p_won and discordant <= 1.0):
        raise ConfigError(f"p_lost={p_lost!r}, p_won={p_won!r}; expected probabilities that sum to at most 1")

    def passes(b: int, m: int) -> bool:
        return drop_upper_bound(PairedCounts(n - m, b, m - b, 0), confidence) <= limit

    if discordant == 0.0:
        return 1.0 if passes(0, 0) else 0.0
    share = p_lost / discordant
    rate, covered, best = 0.0, 0.0, None
    for m in _binomial_window(n, discordant, tail):
        weight = math.exp(_log_binomial_terms(n, discordant, range(m, m + 1))[0]) if 0 < discordant < 1 else 1.0
        covered += weight
        if best is None:  # the first m: b* by bisection; then walked up as m grows
            low, high = -1, m
            while low < high:
                middle = (low + high + 1) // 2
                low, high = (middle, high) if passes(middle, m) else (low, middle - 1)
            best = low
        else:
            while best + 1 <= m and passes(best + 1, m):
                best += 1
        rate += weight * _binomial_share(best, m, share, tail)
    return min(1.0, rate + max(0.0, 1.0 - covered))


def _binomial_window(n: int, p: float, tail: float) -> range:
    """The counts of ``Binomial(n, p)`` outside of which the probability is below ``tail`` (a Chernoff-style margin
    of standard deviations, generous: the caller adds back whatever the window misses)."""
    if p >= 1.0:
        return range(n, n + 1)
    spread = math.sqrt(max(n * p * (1.0 - p), 1.0)) * math.sqrt(2.0 * math.log(2.0 / tail)) + 20
    return range(max(0, int(n * p - spread)), min(n, int(n * p + spread)) + 1)


def _binomial_share(best: int, m: int, share: float, tail: float) -> float:
    """``P(b <= best)`` for ``b ~ Binomial(m, share)``, from the terms of its window, plus the mass outside the window
    (so never below the exact value)."""
    if best < 0:
        return 0.0
    if share >= 1.0:
        return 1.0 if best >= m else 0.0
    window = _binomial_window(m, share, tail)
    inside = [math.exp(t) for t in _log_binomial_terms(m, share, window)]
    below = math.fsum(inside[: max(0, min(best, window.stop - 1) - window.start + 1)])
    return min(1.0, below + max(0.0, 1.0 - math.fsum(inside)))
