"""Parity across the device boundary: where the Jetson runs its own standard-library code (the kit's ``seal.py`` and
``device_check.py``) and the host runs another implementation of the same check, both get the same inputs and must
give the same answer.

- the device gate (``device_check.gate``, ``gates.max_device_disagreement``) against the host's ``min_agreement``
  gate (``validate.gates``): every count ``(agree, n)`` up to n = 300, same verdict, same bound, same provability;
- ``seal.py``'s bundle check (its manifest structure check and ``check_files``) against ``bundle verify``
  (``bundle.manifest.verify_bundle``): one table of planted faults on a real Jetson bundle, each run through both;
  same verdict, and the same file named with the same reason.

The device side is loaded as the device runs it: the kit's files, by path, never through ``edgeresnext``.
"""

from __future__ import annotations

import functools
import importlib.util
import shutil
import sys
from pathlib import Path
from types import ModuleType

import pytest

from edgeresnext.backends.tensorrt.kit import DEVICE_CHECK_SOURCE, STATS_SOURCE
from edgeresnext.config import Gates
from edgeresnext.validate.gates import evaluate_gates
from edgeresnext.validate.results import ArtifactResult, Uncertainty

LARGEST = 300  # every (agree, n) with n up to this


def _load(path: Path, name: str) -> ModuleType:
    """A kit file as a module of its own (the device loads them by path, beside edgeresnext's copies here)."""
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up while the class is made
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def device(tmp_path_factory) -> tuple[ModuleType, ModuleType]:
    """(``device_check``, ``check/stats.py``) of a kit, copied as kit.py copies them and loaded as the device does."""
    kit = tmp_path_factory.mktemp("kit")
    (kit / "check").mkdir()
    shutil.copy(DEVICE_CHECK_SOURCE, kit / "device_check.py")
    shutil.copy(STATS_SOURCE, kit / "check" / "stats.py")
    device_check = _load(kit / "device_check.py", "parity_kit_device_check")
    return device_check, device_check.load_stats(kit)


# ------------------------------------------------------------------------------------------ the gates
class _Agreement(Uncertainty):
    """The report's uncertainty, its ``n`` summed without building a checked ``PairedCounts`` on every read (the host's
    gate reads it four times: 60 % of the enumeration's time)."""

    @property
    def n(self) -> int:
        return self.a + self.b + self.c + self.d


@functools.cache
def _host_gates(limit: float, confidence: float | None, unproven: str) -> Gates:
    return Gates(min_agreement=1 - limit, confidence=confidence, unproven=unproven)


def _host_gate(limit: float, confidence: float | None, unproven: str, agree: int, n: int):
    """The host's ``min_agreement`` gate at ``1 - limit`` on an artifact that agrees with its reference on ``agree`` of
    ``n`` images (validate.metrics.paired_uncertainty's fields; the drop's are not read by this gate)."""
    gates = _host_gates(limit, confidence, unproven)
    agreement = agree / n  # proportion_interval's point, as paired_uncertainty records it
    uncertainty = _Agreement(
        confidence=confidence or 0.95,
        a=agree,
        b=0,
        c=0,
        d=n - agree,
        agree=agree,
        drop=0.0,
        drop_interval=(0.0, 0.0),
        drop_upper_bound=0.0,
        mcnemar_p=1.0,
        agreement=agreement,
        agreement_interval=(0.0, 1.0),
        agreement_lower_bound=0.0,
    )
    result = ArtifactResult("engine", "tensorrt", "int8", [], agreement=agreement, uncertainty=uncertainty)
    (verdict,) = evaluate_gates(gates, [result], "engine")
    return verdict


def _gate_differences(device_check, kit_stats, limit, confidence, unproven, counts) -> list[str]:
    """Where the device gate and the host's gate differ, for each ``(agree, n)`` of ``counts``."""
    spec = {"max_device_disagreement": limit, "confidence": confidence, "unproven": unproven}
    differences = []
    for agree, n in counts:
        ours = device_check.gate(kit_stats, spec, agree, n)
        host = _host_gate(limit, confidence, unproven, agree, n)
        mine = (ours["passed"], ours["basis"], ours.get("provable"), ours.get("min_images"))
        theirs = (host.passed, host.basis, host.provable, host.min_images)
        # The bound: the device reports the disagreement's upper bound, 1 - the agreement's lower bound the host
        # compares; both come from the same float by the same subtraction, so they are compared exactly.
        if confidence is not None:
            mine, theirs = (*mine, ours["upper_bound"]), (*theirs, 1 - host.value)
        if mine != theirs:
            differences.append(f"agree={agree} n={n}: device {mine}, host {theirs}")
            if len(differences) == 5:
                break
    return differences


def _every_count(largest: int = LARGEST) -> list[tuple[int, int]]:
    return [(agree, n) for n in range(1, largest + 1) for agree in range(n + 1)]


@pytest.fixture(scope="module")
def bound_table() -> dict[float, dict[tuple[int, int], float]]:
    """The exact one-sided Clopper-Pearson lower bound of every ``(agree, n)`` up to :data:`LARGEST`, from scipy's
    inverse incomplete beta function (the closed form ``(1 - confidence)^(1/n)`` at ``agree == n``, 0 at 0), at 95 %
    and 99 %. The stats module's own bisection takes about 3 minutes for these 45,450 counts; the enumeration below
    feeds both gates this table instead (the same values on both sides: what it compares is what each gate does with
    a bound), and :func:`test_the_gates_agree_with_the_stats_modules_own_bounds` runs both unpatched on small sets."""
    from scipy.special import betaincinv

    tables: dict[float, dict[tuple[int, int], float]] = {}
    for confidence in (0.95, 0.99):
        alpha = 1.0 - confidence
        table = {}
        for n in range(1, LARGEST + 1):
            inner = list(range(1, n))
            bounds = betaincinv(inner, [n - a + 1 for a in inner], alpha) if inner else []
            table.update({(a, n): float(bound) for a, bound in zip(inner, bounds, strict=True)})
            table[(0, n)], table[(n, n)] = 0.0, alpha ** (1.0 / n)
        tables[confidence] = table
    return tables


# (max_device_disagreement, gates.confidence, gates.unproven): the default gate; a 1 % gate, which 95 % proves from
# 299 images on (NOT PROVEN below, failed by gates.unproven: fail); a 2 % gate at 99 % (NOT PROVEN below 228 images,
# decided on the measured value); and confidence null (the measured value alone).
GATE_SETTINGS = [(0.05, 0.95, "warn"), (0.01, 0.95, "fail"), (0.02, 0.99, "warn"), (0.05, None, "warn")]


@pytest.mark.promise("docs/jetson.md", "give the same verdict, the same bound and the same set size needed")
@pytest.mark.parametrize(("limit", "confidence", "unproven"), GATE_SETTINGS)
def test_the_device_gate_and_the_hosts_agree_on_every_count_up_to_300(
    device, bound_table, monkeypatch, limit, confidence, unproven
):
    """Same verdict (passed, bound or measured value, provable), same minimum set size and the same bound, for all
    45,450 counts ``(agree, n)``, n = 1..300 (the device gate is ``min_agreement = 1 - max_device_disagreement``)."""
    from edgeresnext import stats

    device_check, kit_stats = device

    def bound(agree: int, n: int, confidence: float = 0.95) -> float:
        return bound_table[confidence][(agree, n)]

    monkeypatch.setattr(stats, "agreement_lower_bound", bound)  # the host's gate, and its min_images_for_agreement
    monkeypatch.setattr(kit_stats, "agreement_lower_bound", bound)  # the device's, and its max_disagreements
    counts = _every_count()
    assert len(counts) == 45_450
    assert _gate_differences(device_check, kit_stats, limit, confidence, unproven, counts) == []


def test_the_gates_agree_with_the_stats_modules_own_bounds(device, monkeypatch):
    """The same comparison on each side's own stats module (its bound, memoized), on every count up to 30 images and the
    counts near full agreement where the gates change their minds: 59, 124, 299 and 300 images."""
    from edgeresnext import stats

    device_check, kit_stats = device
    for module in (stats, kit_stats):  # each module's own function, computed once per count for the four settings
        monkeypatch.setattr(module, "agreement_lower_bound", functools.cache(module.agreement_lower_bound))
    counts = _every_count(30) + [(agree, n) for n in (59, 124, 299, 300) for agree in range(n - 6, n + 1)]
    for limit, confidence, unproven in GATE_SETTINGS:
        assert _gate_differences(device_check, kit_stats, limit, confidence, unproven, counts) == []


@pytest.mark.promise("docs/jetson.md", "1 of 20 images is 5 %, within a 5 % gate")
def test_the_gate_decides_a_tie_at_the_limit_as_the_host_does(device):
    """1 of 20 images is 5 %: within a 5 % gate on both sides (computed as ``1 - 19 / 20 <= 0.05`` it is 5.000...04 %,
    which the device gate once failed while the host passed it)."""
    device_check, kit_stats = device
    spec = {"max_device_disagreement": 0.05, "confidence": None}
    assert 1 - 19 / 20 > 0.05 and 19 / 20 >= 1 - 0.05
    assert device_check.gate(kit_stats, spec, 19, 20)["passed"] and _host_gate(0.05, None, "warn", 19, 20).passed
    assert not device_check.gate(kit_stats, spec, 18, 20)["passed"]
