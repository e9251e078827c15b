"""The layering rule of docs/architecture.md ("Layers"), checked: an AST walk over every ``import`` in edgeresnext/
(module-level, function-level and ``TYPE_CHECKING`` ones) finds no import cycle between modules and no
upward import; the only imports it lets through are optional runtimes, named in one allow-list.

And the rule of "A backend" (shared code asks the backend and never names one): outside ``backends/`` no module
compares an artifact's kind with a string (``artifact.kind == "kit"``, ``entry["kind"] != "engine"``) or with the
TensorRT kit's kind ``"kit"`` at all, and no module outside ``backends/tensorrt/`` imports it (the registry names it in
a string, imported by name)."""

from __future__ import annotations

import ast
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGE = "edgeresnext"

# The layers, top first, as docs/architecture.md draws them: a module may import its own layer or any layer
# below. A name ending in "/" is a package (every module in it); anything else is one module file.
LAYERS: list[tuple[str, ...]] = [
    ("cli/",),
    ("pipeline/", "runtime.py", "serving/"),
    ("report/",),
    ("validate/", "bundle/"),
    ("backends/",),
    ("quantize/", "train.py", "export.py", "lint.py", "distributed.py"),
    ("onnx_io.py", "models/", "data/"),
    (
        "__init__.py",
        "config.py",
        "errors.py",
        "atomic.py",
        "environment.py",
        "timing.py",
        "stats.py",
        "progress.py",
        "registry.py",
        "records.py",
    ),
]

# Optional runtimes: installed only where they can run (TensorRT and cuda-python on a Jetson or an NVIDIA host),
# so they are imported inside a function, only by the modules named here, never at module level (the code must
# import without them). `importlib.import_module` is the backend registry's plugin mechanism: registry.py imports a
# backend module by the name in its registry entry (so config and environment, below backends/, derive a backend's
# options and packages from the registered class without naming it), and backends/ import a backend's runtime
# package to see whether it is installed; the AST walk cannot see a name held in a string, so such calls are
# allowed in those two places alone.
OPTIONAL_RUNTIMES: dict[str, frozenset[str]] = {
    "tensorrt": frozenset({"edgeresnext.backends.tensorrt.engine"}),
    "cuda": frozenset({"edgeresnext.backends.tensorrt.engine"}),
}
DYNAMIC_IMPORTS_IN = ("edgeresnext.registry", "edgeresnext.backends")
# What knows a backend's artifact kinds, and the one backend package only its own modules import.
BACKENDS_PACKAGE = "edgeresnext.backends"
TENSORRT_PACKAGE = "edgeresnext.backends.tensorrt"
KIT_KIND = "kit"


class Import(NamedTuple):
    """One imported name: who imports it (module, file, line), what, and where the statement sits."""

    importer: str
    target: str
    file: Path
    line: int
    place: str  # "module", "function" or "type-checking"

    def where(self, root: Path) -> str:
        return f"{self.file.relative_to(root)}:{self.line}"


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _is_dynamic_import(node: ast.Call) -> bool:
    func = node.func
    name = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""
    return name in ("import_module", "__import__")


def _absolute(node: ast.ImportFrom, importer: str, is_package: bool) -> str:
    """The module a ``from ... import`` names, relative imports resolved against ``importer``."""
    if not node.level:
        return node.module or ""
    base = importer.split(".") if is_package else importer.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _targets(node: ast.Import | ast.ImportFrom, importer: str, is_package: bool, modules: set[str]) -> list[str]:
    """The modules one statement imports: ``from pkg import sub`` is the submodule where ``sub`` is one."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    source = _absolute(node, importer, is_package)
    return [f"{source}.{a.name}" if f"{source}.{a.name}" in modules else source for a in node.names]


_BODIES = ("body", "orelse", "finalbody", "handlers", "cases")


def _statements(body: list[ast.AST], place: str) -> Iterator[tuple[ast.AST, str]]:
    """Every statement in ``body`` and the bodies nested in it (imports are statements: expressions are not
    entered), with the place it runs in: module level, inside a function, or only for the type checker
    (``if TYPE_CHECKING:``, never run)."""
    for stmt in body:
        yield stmt, place
        if isinstance(stmt, ast.If) and _is_type_checking(stmt.test):
            yield from _statements(stmt.body, "type-checking")
            yield from _statements(stmt.orelse, place)
            continue
        inner = "function" if isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef)) and place == "module" else place
        for name in _BODIES:
            yield from _statements(getattr(stmt, name, None) or [], inner)


def _dynamic_imports(tree: ast.Module) -> list[int]:
    """Lines of ``importlib.import_module(...)``/``__import__(...)`` calls."""
    return [n.lineno for n in ast.walk(tree) if isinstance(n, ast.Call) and _is_dynamic_import(n)]


def collect_imports(root: Path) -> tuple[list[Import], list[str]]:
    """Every import statement under ``root`` (the folder holding the ``edgeresnext`` package), and the
    ``importlib.import_module``/``__import__`` calls outside backends/ as ``file:line`` (names the walk cannot
    see)."""
    files = sorted((root / PACKAGE).rglob("*.py"))
    modules = {module_name(f, root) for f in files}
    imports: list[Import] = []
    dynamic: list[str] = []
    for file in files:
        importer = module_name(file, root)
        text = file.read_text(encoding="utf-8")
        tree = ast.parse(text, filename=str(file))
        for node, place in _statements(tree.body, "module"):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                for target in _targets(node, importer, file.name == "__init__.py", modules):
                    imports.append(Import(importer, target, file, node.lineno, place))
        if ("import_module" in text or "__import__" in text) and not importer.startswith(DYNAMIC_IMPORTS_IN):
            relative = file.relative_to(root)
            dynamic += [f"{relative}:{line}: {importer} imports by name" for line in _dynamic_imports(tree)]
    return imports, dynamic


def _entry(module: str) -> str:
    """The LAYERS name of an edgeresnext module: its top-level package (``report/``) or file (``config.py``)."""
    first = module.removeprefix(PACKAGE).lstrip(".").split(".")[0]
    if not first:
        return "__init__.py"
    return f"{first}/" if any(f"{first}/" in layer for layer in LAYERS) else f"{first}.py"


def layer_of(module: str) -> int:
    """The index in LAYERS (0 = top) of an edgeresnext module. KeyError: a module no layer names."""
    entry = _entry(module)
    for index, layer in enumerate(LAYERS):
        if entry in layer:
            return index
    raise KeyError(f"{module} is in no layer of docs/architecture.md (tests/test_layering.py LAYERS)")


def _is_internal(target: str) -> bool:
    return target == PACKAGE or target.startswith(PACKAGE + ".")


def upward_imports(imports: list[Import], root: Path) -> list[str]:
    """Each import of a higher layer, as ``file:line: importer (layer) imports target (layer)``."""
    found = []
    for imp in imports:
        if _is_internal(imp.target) and layer_of(imp.target) < layer_of(imp.importer):
            found.append(
                f"{imp.where(root)}: {imp.importer} ({_entry(imp.importer)}, layer {layer_of(imp.importer) + 1}) "
                f"imports {imp.target} ({_entry(imp.target)}, layer {layer_of(imp.target) + 1}), a layer above it "
                f"({imp.place}-level import)"
            )
    return found


def optional_runtime_imports(imports: list[Import], root: Path) -> list[str]:
    """Imports of an optional runtime at module level or outside the modules allowed to load it."""
    found = []
    for imp in imports:
        allowed = OPTIONAL_RUNTIMES.get(imp.target.split(".")[0])
        if allowed is None:
            continue
        if imp.importer not in allowed or imp.place == "module":
            found.append(f"{imp.where(root)}: {imp.importer} imports optional runtime {imp.target} ({imp.place})")
    return found


def import_cycles(imports: list[Import]) -> list[list[str]]:
    """Strongly connected groups of more than one module (or a module importing itself) in the graph of
    executed imports: module- and function-level ones. ``TYPE_CHECKING`` imports do not count here (they never
    run, so they cannot make an import order; they do count for the layer rule above)."""
    graph: dict[str, set[str]] = {}
    for imp in imports:
        if _is_internal(imp.target) and imp.place != "type-checking":
            graph.setdefault(imp.importer, set()).add(imp.target)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(node: str) -> None:  # Tarjan's algorithm; the graph is ~80 modules deep at most
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in graph.get(node, ()):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while not group or group[-1] != node:
                group.append(stack.pop())
            if len(group) > 1 or node in graph.get(node, ()):
                cycles.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return cycles


def tensorrt_imports(imports: list[Import], root: Path) -> list[str]:
    """Imports of ``backends.tensorrt`` (or a module in it) from a module outside it, once per statement and module."""
    found = [
        f"{imp.where(root)}: {imp.importer} imports {imp.target}: only backends/tensorrt/ imports it (ask the backend)"
        for imp in imports
        if (imp.target == TENSORRT_PACKAGE or imp.target.startswith(TENSORRT_PACKAGE + "."))
        and not (imp.importer == TENSORRT_PACKAGE or imp.importer.startswith(TENSORRT_PACKAGE + "."))
    ]
    return list(dict.fromkeys(found))


def _names_a_kind(node: ast.expr) -> bool:
    """``x.kind``, ``x["kind"]`` or ``x.get("kind")``: an artifact's (or a manifest entry's) kind."""
    if isinstance(node, ast.Attribute):  # not numpy's ``dtype.kind``
        owner = node.value.attr if isinstance(node.value, ast.Attribute) else getattr(node.value, "id", "")
        return node.attr == "kind" and owner != "dtype"
    if isinstance(node, ast.Subscript):
        return isinstance(node.slice, ast.Constant) and node.slice.value == "kind"
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "get":
        return bool(node.args) and isinstance(node.args[0], ast.Constant) and node.args[0].value == "kind"
    return False


def _strings(node: ast.expr) -> list[str]:
    """The string constants ``node`` is or holds (a tuple, list or set of them)."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return [node.value]
    if isinstance(node, ast.Tuple | ast.List | ast.Set):
        return [s for item in node.elts for s in _strings(item)]
    return []


def kind_comparisons(root: Path) -> list[str]:
    """Comparisons outside backends/ of an artifact's kind with a string, or of anything with ``"kit"``."""
    found = []
    for file in sorted((root / PACKAGE).rglob("*.py")):
        module = module_name(file, root)
        if module == BACKENDS_PACKAGE or module.startswith(BACKENDS_PACKAGE + "."):
            continue
        for node in ast.walk(ast.parse(file.read_text(encoding="utf-8"), filename=str(file))):
            if not isinstance(node, ast.Compare):
                continue
            sides = [node.left, *node.comparators]
            strings = [s for side in sides for s in _strings(side)]
            if KIT_KIND in strings or (strings and any(_names_a_kind(side) for side in sides)):
                found.append(
                    f"{file.relative_to(root)}:{node.lineno}: {module} compares an artifact kind "
                    f"({ast.unparse(node)}); ask the artifact's backend instead"
                )
    return found


def layering_problems(root: Path) -> list[str]:
    """Everything the layering rule refuses in the tree under ``root``, one line each."""
    imports, dynamic = collect_imports(root)
    problems = upward_imports(imports, root) + optional_runtime_imports(imports, root) + dynamic
    problems += tensorrt_imports(imports, root) + kind_comparisons(root)
    problems += [f"import cycle: {' -> '.join(group)}" for group in import_cycles(imports)]
    return problems


@pytest.mark.promise("docs/architecture.md", "Layers import downwards only")
def test_the_package_keeps_its_layers():
    imports, _ = collect_imports(REPO)
    function_level = [i for i in imports if i.place == "function" and _is_internal(i.target)]
    type_checking = [i for i in imports if i.place == "type-checking" and _is_internal(i.target)]
    assert len(function_level) > 50 and len(type_checking) > 10  # the walk sees inside functions and TYPE_CHECKING
    assert layering_problems(REPO) == []


def test_every_module_is_in_a_layer():
    files = sorted((REPO / PACKAGE).rglob("*.py"))
    unplaced = []
    for file in files:
        try:
            layer_of(module_name(file, REPO))
        except KeyError as err:
            unplaced.append(str(err))
    assert unplaced == []


def test_the_architecture_page_diagram_names_the_layers():
    """docs/architecture.md ("Layers") draws the same layers, top first, with the names the tree has (a renamed module
    or a module turned package fails here)."""
    page = (REPO / "docs" / "architecture.md").read_text(encoding="utf-8")
    section = page.split("## Layers", 1)[1]
    diagram = section.split("```", 2)[1]
    drawn = re.findall(r"(?<![\w/.])(\w+(?:/|\.py))", diagram)
    expected = [name for layer in LAYERS for name in layer if name != "__init__.py"]
    assert drawn == expected
    for name in expected:
        assert (REPO / PACKAGE / name.rstrip("/")).exists(), name


def _copy_tree(tmp_path: Path) -> Path:
    """The package's Python files under ``tmp_path`` (the walk reads nothing else)."""
    shutil.copytree(
        REPO / PACKAGE, tmp_path / PACKAGE, ignore=shutil.ignore_patterns("__pycache__", "*.json", "*.safetensors")
    )
    return tmp_path


PLANTED = {  # an upward import from config.py (bottom layer), and the place it sits in
    "module": "from edgeresnext.pipeline import build",
    "function": "def _planted():\n    import edgeresnext.report",
    "type-checking": "if TYPE_CHECKING:\n    from edgeresnext.validate import ValidationReport",
}


@pytest.mark.parametrize("place", PLANTED)
def test_a_planted_upward_import_fails_and_is_named(tmp_path, place):
    root = _copy_tree(tmp_path)
    config = root / PACKAGE / "config.py"
    lines = config.read_text(encoding="utf-8").splitlines()
    line = len(lines) + PLANTED[place].count("\n") + 1  # the import is the planted text's last line
    config.write_text("\n".join([*lines, PLANTED[place]]) + "\n", encoding="utf-8")

    problems = layering_problems(root)

    upward = [p for p in problems if "a layer above it" in p]
    assert len(upward) == 1, problems
    assert upward[0].startswith(f"edgeresnext/config.py:{line}: edgeresnext.config (config.py, layer 8) imports ")
    assert upward[0].endswith(f"({place}-level import)")
    # An executed import also closes cycles through modules that import config; nothing else is reported.
    cycles = [p for p in problems if p not in upward]
    assert all(p.startswith("import cycle: ") and "edgeresnext.config" in p for p in cycles)
    if place == "type-checking":
        assert cycles == []  # a type-only import never runs: it cannot close a cycle


def test_a_planted_cycle_a_top_level_tensorrt_import_and_an_import_by_name_fail(tmp_path):
    root = _copy_tree(tmp_path)
    with (root / PACKAGE / "timing.py").open("a", encoding="utf-8") as f:
        f.write("\n\ndef _planted():\n    from edgeresnext import stats\n")
    with (root / PACKAGE / "stats.py").open("a", encoding="utf-8") as f:
        f.write("\nimport edgeresnext.timing\n")
    with (root / PACKAGE / "backends" / "tensorrt" / "engine.py").open("a", encoding="utf-8") as f:
        f.write("\nimport tensorrt\n")
    with (root / PACKAGE / "errors.py").open("a", encoding="utf-8") as f:
        f.write("\n\ndef _planted():\n    import importlib\n\n    importlib.import_module('edgeresnext.pipeline')\n")

    problems = layering_problems(root)

    assert "import cycle: edgeresnext.stats -> edgeresnext.timing" in problems
    assert any(p.startswith("edgeresnext/backends/tensorrt/engine.py:") and "tensorrt (module)" in p for p in problems)
    assert any(p.startswith("edgeresnext/errors.py:") and "imports by name" in p for p in problems)
    assert len(problems) == 3, problems


KIND_FAULTS = {  # file, text appended, what the problem line starts with
    "kit-kind": ("pipeline/choose.py", "\n\ndef _planted(artifact):\n    return artifact.kind == 'kit'\n", "compares"),
    "entry-kind": ("runtime.py", "\n\ndef _planted(entry):\n    return entry['kind'] != 'engine'\n", "compares"),
    "kit-literal": ("cli/report.py", "\n\ndef _planted(name):\n    return name in ('kit', 'other')\n", "compares"),
    "tensorrt-import": (
        "cli/bundle.py",
        "\n\ndef _planted():\n    from edgeresnext.backends.tensorrt import seal\n",
        "imports edgeresnext.backends.tensorrt.seal",
    ),
    "tensorrt-package": (
        "serving/export.py",
        "\n\ndef _planted():\n    import edgeresnext.backends.tensorrt\n",
        "imports edgeresnext.backends.tensorrt:",
    ),
}


@pytest.mark.promise("docs/architecture.md", "generic code never compares an artifact's kind")
@pytest.mark.parametrize("fault", KIND_FAULTS)
def test_a_planted_kind_comparison_or_tensorrt_import_outside_the_backend_fails(tmp_path, fault):
    root = _copy_tree(tmp_path)
    name, text, said = KIND_FAULTS[fault]
    path = root / PACKAGE / name
    line = len(path.read_text(encoding="utf-8").splitlines()) + text.count("\n")
    with path.open("a", encoding="utf-8") as handle:
        handle.write(text)

    problems = layering_problems(root)

    assert len(problems) == 1, problems
    where = f"edgeresnext/{name}:{line}: "
    assert problems[0].startswith(where) and said in problems[0], problems


def test_a_backend_may_compare_its_own_kinds(tmp_path):
    """The rule is about shared code: a backend's own module compares its kinds freely."""
    root = _copy_tree(tmp_path)
    with (root / PACKAGE / "backends" / "onnxruntime.py").open("a", encoding="utf-8") as handle:
        handle.write("\n\ndef _planted(artifact):\n    return artifact.kind == 'kit'\n")
    assert layering_problems(root) == []
