"""Accuracy and fidelity metrics of logits: top-k, per-class, confusion, agreement and cosine with a reference,
and the Polygraphy-style comparison of two artifacts' outputs."""

from __future__ import annotations

from typing import Any

import numpy as np

from edgeresnext.errors import DataError
from edgeresnext.validate.results import Uncertainty

CONFUSION_MAX_CLASSES = 20


def topk_accuracy(logits: np.ndarray, labels: np.ndarray, k: int) -> float:
    """Share of rows whose label is among the ``k`` largest logits (ties broken by class index)."""
    logits = np.asarray(logits)
    labels = np.asarray(labels)
    k = min(k, logits.shape[1])
    # Stable sort on the negated logits: equal logits rank the lower class index first, like argmax.
    top = np.argsort(-logits, axis=1, kind="stable")[:, :k]
    return float(np.mean(np.any(top == labels[:, None], axis=1)))


def per_class_accuracy(predictions: np.ndarray, labels: np.ndarray, num_classes: int) -> list[float | None]:
    """Top-1 accuracy of each class (None for a class absent from the labels)."""
    result: list[float | None] = []
    for cls in range(num_classes):
        mask = labels == cls
        result.append(float(np.mean(predictions[mask] == cls)) if mask.any() else None)
    return result


def confusion_matrix(predictions: np.ndarray, labels: np.ndarray, num_classes: int) -> list[list[int]]:
    """Counts ``[true][predicted]``."""
    matrix = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(matrix, (labels, predictions), 1)
    return matrix.tolist()


def classification_metrics(logits: np.ndarray, labels: np.ndarray, num_classes: int | None = None) -> dict[str, Any]:
    """top-1, top-5, per-class accuracy and (for <= 20 classes) the confusion matrix."""
    logits = np.asarray(logits, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.int64)
    num_classes = num_classes or logits.shape[1]
    predictions = np.argmax(logits, axis=1)
    return {
        "top1": topk_accuracy(logits, labels, 1),
        "top5": topk_accuracy(logits, labels, 5),
        "per_class_accuracy": per_class_accuracy(predictions, labels, num_classes),
        "confusion": confusion_matrix(predictions, labels, num_classes)
        if num_classes <= CONFUSION_MAX_CLASSES
        else None,
    }


def cosine_similarity_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosine similarity of each row of ``a`` with the same row of ``b`` (two zero rows count as 1)."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    dots = np.sum(a * b, axis=1)
    both_zero = (np.linalg.norm(a, axis=1) == 0) & (np.linalg.norm(b, axis=1) == 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        cosine = np.where(norms > 0, dots / np.where(norms > 0, norms, 1.0), 0.0)
    return np.where(both_zero, 1.0, np.clip(cosine, -1.0, 1.0))


def fidelity_metrics(logits: np.ndarray, reference: np.ndarray) -> dict[str, float]:
    """How closely ``logits`` follow the reference's: agreement, cosine (mean/min), abs error (max/mean)."""
    logits = np.asarray(logits, dtype=np.float64)
    reference = np.asarray(reference, dtype=np.float64)
    if logits.shape != reference.shape:
        raise DataError(f"logits of shape {logits.shape} cannot be compared with reference {reference.shape}")
    cosine = cosine_similarity_rows(logits, reference)
    error = np.abs(logits - reference)
    return {
        "agreement": float(np.mean(np.argmax(logits, axis=1) == np.argmax(reference, axis=1))),
        "cosine_mean": float(np.mean(cosine)),
        "cosine_min": float(np.min(cosine)),
        "max_abs_error": float(np.max(error)),
        "mean_abs_error": float(np.mean(error)),
    }


def paired_uncertainty(
    logits: np.ndarray, reference: np.ndarray, labels: np.ndarray, confidence: float = 0.95
) -> Uncertainty:
    """Intervals for the top-1 drop and the agreement of ``logits`` against ``reference`` on the same images.

    Per image each model is right or wrong (top-1, ties to the lower class like argmax), which gives the paired
    2x2 table of :func:`edgeresnext.stats.paired_counts`; the drop's interval is Tango's paired score interval
    corrected by half an image, the exact McNemar test asks whether the two accuracies differ (whether the
    discordant images lean one way), and agreement (same top-1 class as the reference) gets an exact
    (Clopper-Pearson) interval, the same method as its one-sided bound. The one-sided bounds are at ``confidence``.
    """
    from edgeresnext import stats

    predictions = np.argmax(np.asarray(logits), axis=1)
    reference_predictions = np.argmax(np.asarray(reference), axis=1)
    labels = np.asarray(labels)
    counts = stats.paired_counts(reference_predictions == labels, predictions == labels)
    agree = int(np.count_nonzero(predictions == reference_predictions))
    drop = stats.drop_interval(counts, confidence)
    agreement = stats.proportion_interval(agree, counts.n, confidence, "exact")
    return Uncertainty(
        confidence=confidence,
        a=counts.a,
        b=counts.b,
        c=counts.c,
        d=counts.d,
        agree=agree,
        drop=counts.drop,
        drop_interval=(drop.lower, drop.upper),
        drop_upper_bound=stats.drop_upper_bound(counts, confidence),
        mcnemar_p=stats.exact_mcnemar_p(counts.b, counts.c),
        agreement=agreement.point,
        agreement_interval=(agreement.lower, agreement.upper),
        agreement_lower_bound=stats.agreement_lower_bound(agree, counts.n, confidence),
        drop_method=drop.method,
        agreement_method=agreement.method,
    )


def compare_outputs(
    a: np.ndarray,
    b: np.ndarray,
    labels: np.ndarray | None = None,
    atol: float = 1e-3,
    rtol: float = 1e-3,
    worst: int = 10,
) -> dict[str, Any]:
    """Polygraphy-style comparison of two artifacts' logits on the same inputs (``b`` is the reference).

    An element passes when ``|a - b| <= atol + rtol * |b|``; the comparison passes when all do. The
    ``worst`` images (largest absolute error) are listed with both predictions.
    """
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise DataError(f"outputs of shape {a.shape} and {b.shape} cannot be compared")
    error = np.abs(a - b)
    relative = error / np.maximum(np.abs(b), 1e-12)
    within = error <= atol + rtol * np.abs(b)
    per_image = error.max(axis=1)
    cosine = cosine_similarity_rows(a, b)
    pred_a, pred_b = a.argmax(axis=1), b.argmax(axis=1)
    order = np.argsort(-per_image, kind="stable")[:worst]
    worst_rows = [
        {
            "index": int(i),
            "label": None if labels is None else int(labels[i]),
            "pred_a": int(pred_a[i]),
            "pred_b": int(pred_b[i]),
            "max_abs_error": float(per_image[i]),
            "cosine": float(cosine[i]),
        }
        for i in order
    ]
    return {
        "images": int(a.shape[0]),
        "atol": atol,
        "rtol": rtol,
        "passed": bool(within.all()),
        "elements_within_tolerance": float(within.mean()),
        "images_within_tolerance": float(within.all(axis=1).mean()),
        "max_abs_error": float(error.max()),
        "mean_abs_error": float(error.mean()),
        "median_abs_error": float(np.median(error)),
        "max_rel_error": float(relative.max()),
        "agreement": float(np.mean(pred_a == pred_b)),
        "cosine_mean": float(cosine.mean()),
        "cosine_min": float(cosine.min()),
        "top1_a": None if labels is None else float(np.mean(pred_a == labels)),
        "top1_b": None if labels is None else float(np.mean(pred_b == labels)),
        "worst": worst_rows,
    }


def reference_warning(logits: np.ndarray, labels: np.ndarray, class_names: list[str]) -> str | None:
    """Why the FP32 reference cannot be trusted on these images, or None: top-1 no better than guessing (within
    two binomial standard errors of the larger of 1/classes and the commonest label's share), or one class taking
    most predictions (over half of them, and over twice its share of the labels)."""
    predictions = np.asarray(logits).argmax(axis=1)
    labels = np.asarray(labels)
    count, classes = len(labels), len(class_names)
    top1 = float(np.mean(predictions == labels))
    guess = max(1 / classes, float(np.bincount(labels, minlength=classes).max()) / count)
    reasons = []
    if top1 <= guess + 2 * np.sqrt(guess * (1 - guess) / count):
        reasons.append(f"top-1 {top1 * 100:.1f} % on {count} images, where guessing gives {guess * 100:.1f} %")
    commonest = int(np.bincount(predictions, minlength=classes).argmax())
    share = float(np.mean(predictions == commonest))
    if classes >= 3 and share > 0.5 and share > 2 * float(np.mean(labels == commonest)):
        reasons.append(f"it predicts {class_names[commonest]!r} for {int(share * count)} of {count} images")
    if not reasons:
        return None
    return (
        "the FP32 reference is not a working model on these images (" + "; ".join(reasons) + "). Usual causes: a "
        "class order or preprocessing that differs from training (see the notes on where they came from). A drop "
        "measured against this reference proves nothing"
    )
