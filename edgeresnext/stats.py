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

* :func:`drop_interval` / :func:`drop_upper_bound`: Newcombe's hybrid score interval for the difference of
  paired proportions (Newcombe 1998, "method 10");
* :func:`proportion_interval`: Wilson score (default) or exact Clopper-Pearson interval for one proportion
  (top-1 of one model, agreement = share of images whose predicted classes are equal);
* :func:`exact_mcnemar_p`: the exact (conditional binomial) McNemar test of ``b`` against ``c``;
* :func:`drop_gate` / :func:`min_images_to_prove`: a max-drop gate decided on the upper bound, and whether the
  validation set is large enough for any result to pass it.

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
    "drop_gate",
    "drop_interval",
    "drop_upper_bound",
    "exact_mcnemar_p",
    "min_images_to_prove",
    "normal_quantile",
    "paired_counts",
    "proportion_interval",
]

PROPORTION_METHODS = ("wilson", "exact")
DROP_METHOD = "newcombe-hybrid-score"
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

    ``provable`` is False when even an artifact right on exactly the images the reference gets right (zero
    discordant pairs) would leave an upper bound above ``limit`` on this many images: the set is too small to
    ever pass the gate honestly. ``min_images`` is the smallest set size where that perfect result would pass,
    at this reference top-1 (None when ``limit`` is 0, which no finite set proves).
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
            line += f"; this set is too small to prove it ({needed} needed)"
        return line

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
    class (``agree`` of ``n``): the ``min_agreement`` gate's bound, on the host and in the device check alike."""
    if _check_confidence(confidence) <= 0.5:
        raise ConfigError(f"confidence={confidence!r}; a one-sided bound needs a level above 0.5 (e.g. 0.95)")
    return proportion_interval(agree, n, 2.0 * confidence - 1.0, "wilson").lower


def min_images_for_agreement(limit: float, confidence: float = 0.95) -> int | None:
    """The smallest set on which two models agreeing on every image have an :func:`agreement_lower_bound` of at
    least ``limit``; None when no finite set does (``limit`` 1).

    At full agreement the Wilson lower limit is ``n / (n + z^2)``, so ``n >= z^2 limit / (1 - limit)``; the scan
    from just below that settles rounding the same way the gate computes the bound.
    """
    if limit >= 1.0:
        return None
    if limit <= 0.0:
        return 1
    z = normal_quantile(confidence)
    n = max(1, math.floor(z * z * limit / (1.0 - limit)) - 1)
    while agreement_lower_bound(n, n, confidence) < limit:
        n += 1
    return n


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


def drop_interval(counts: PairedCounts, confidence: float = 0.95) -> Interval:
    """Two-sided interval for the top-1 drop ``p1 - p2`` (p1 = FP32 top-1, p2 = artifact top-1, same images).

    Newcombe's hybrid score interval for the difference of paired proportions, "method 10" of R. G. Newcombe,
    "Improved confidence intervals for the difference between binomial proportions based on paired data",
    Statistics in Medicine 17:2635-2650 (1998). With Wilson limits ``[l1, u1]`` of p1 and ``[l2, u2]`` of p2::

        L = D - sqrt((p1 - l1)^2 - 2 phi (p1 - l1)(u2 - p2) + (u2 - p2)^2)
        U = D + sqrt((u1 - p1)^2 - 2 phi (u1 - p1)(p2 - l2) + (p2 - l2)^2)

    with ``D = (b - c) / n`` and ``phi`` the corrected correlation of :func:`_paired_phi`. Unlike the Wald
    interval ``D +- z se`` it does not collapse to a point when b = c = 0: on 121 images with no discordant
    pair the one-sided 95 % bound is still 1.3 to 2.5 points, depending on the reference top-1.
    """
    lower, upper = _newcombe_limits(counts, _two_sided_z(confidence))
    return Interval(counts.drop, lower, upper, float(confidence), DROP_METHOD)


def drop_upper_bound(counts: PairedCounts, confidence: float = 0.95) -> float:
    """One-sided upper confidence bound on the top-1 drop at ``confidence`` (what a max-drop gate compares).

    It is the upper end of the two-sided :func:`drop_interval` at level ``2 * confidence - 1`` (0.90 for 0.95).
    """
    confidence = _check_confidence(confidence)
    if confidence <= 0.5:
        raise ConfigError(f"confidence={confidence!r}; a one-sided bound needs a level above 0.5 (e.g. 0.95)")
    # Why 2c - 1 and not c: the gate only fails on a drop that is too large, so all of its error allowance
    # 1 - c belongs in the upper tail. Each end of Newcombe's interval is built from one end of each Wilson
    # interval, and each Wilson limit inverts a one-sided score test that leaves (1 - level) / 2 beyond it; so
    # the upper end of the two-sided interval at level 2c - 1 leaves about 1 - c above it, i.e. z = z_c (1.645
    # at 95 %). Taking the upper end of the two-sided interval at c would be a one-sided (1 + c) / 2 bound
    # (97.5 % for 95 %): stricter than stated, demanding 20-40 % more images for the same limit. The coverage
    # is approximate, as for any score-type interval, not a guarantee.
    _, upper = _newcombe_limits(counts, normal_quantile(confidence))
    return upper


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


def min_images_to_prove(limit: float, confidence: float = 0.95, reference_top1: float = 1.0) -> int:
    """The smallest number of images on which a perfect artifact (zero discordant pairs) passes ``limit``.

    Perfect means right on exactly the images the reference gets right; the reference's top-1 matters because
    Newcombe's bound with b = c = 0 depends on it (through the Wilson limits and phi). ``reference_top1=1``
    (every image right, so phi = 0) has the closed form ``U = z^2 / (n + z^2)``, hence
    ``n >= z^2 (1 - limit) / limit``: 899.3 -> 900 images for 0.3 pt at 95 % one-sided (z = 1.645).
    """
    limit = _check_limit(limit)
    confidence = _check_confidence(confidence)
    if not 0.0 <= reference_top1 <= 1.0:
        raise ConfigError(f"reference_top1={reference_top1!r}; expected a fraction in [0, 1]")
    if limit == 0.0:
        raise ConfigError("limit=0: no finite number of images proves a drop of at most 0")
    z = normal_quantile(confidence)
    # With b = c = 0 the bound is z^2 / (n + z^2) when a margin is empty and at least z / sqrt(n (n + z^2))
    # otherwise (its value at a top-1 of 1/2), both >= min(z, z^2) / (n + z^2); so no n below
    # min(z, z^2) / limit - z^2 can pass: start the scan there. A scan rather than bisection because rounding
    # reference_top1 * n to whole images makes the bound not quite monotone in n.
    n = max(1, math.floor(min(z, z * z) / limit - z * z))
    while drop_upper_bound(_perfect_counts(n, round(reference_top1 * n)), confidence) > limit:
        n += 1
    logger.debug(
        "min images to prove a drop <= %g at %g (reference top-1 %g): %d", limit, confidence, reference_top1, n
    )
    return n


def drop_gate(counts: PairedCounts, limit: float, confidence: float = 0.95) -> DropGateVerdict:
    """Decide a max-top-1-drop gate on the one-sided upper bound, and say whether this set could ever pass it.

    ``passed_on_bound`` is the decision to use; ``passed_on_point`` is what comparing the bare measured drop
    would have said, kept so the report can show when the two disagree (a pass that is luck, not evidence).
    """
    limit = _check_limit(limit)
    confidence = _check_confidence(confidence)
    upper = drop_upper_bound(counts, confidence)
    perfect_upper = drop_upper_bound(_perfect_counts(counts.n, counts.a + counts.b), confidence)
    min_images = None if limit == 0.0 else min_images_to_prove(limit, confidence, counts.reference_top1)
    return DropGateVerdict(
        counts=counts,
        limit=limit,
        confidence=confidence,
        point=counts.drop,
        upper_bound=upper,
        passed_on_point=counts.drop <= limit,
        passed_on_bound=upper <= limit,
        provable=perfect_upper <= limit,
        min_images=min_images,
    )
