"""The manual is built and checked like code (docs/architecture.md, "The manual").

- the site builds with ``mkdocs build --strict``: a broken link, a missing anchor or page fails;
- the command blocks a page marks ``<!-- test: run -->`` or ``<!-- test: output -->`` run here, extracted from the
  page itself, on the tests' small cpu build;
- the home page and the Jetson page render in headless Chromium with every image and no request off the machine;
- promises keep their tests: every ``tests/...py::test_name`` a page names exists, and every test marked
  ``@pytest.mark.promise(page, phrase)`` is named beside that phrase on that page.
"""

from __future__ import annotations

import ast
import html
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from chromium_helpers import CHROMIUM, run_chromium

REPO = Path(__file__).resolve().parents[1]
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
MKDOCS = Path(sys.executable).parent / "mkdocs"


def _rel(path: Path) -> str:
    return path.relative_to(REPO).as_posix() if path.is_relative_to(REPO) else path.name


# ------------------------------------------------------------------------------------------------ the site builds
def build_site(config: Path, site: Path) -> subprocess.CompletedProcess:
    """``mkdocs build --strict`` of ``config`` into ``site`` (the banner about MkDocs 2.0 silenced)."""
    return subprocess.run(
        [str(MKDOCS), "build", "--strict", "--config-file", str(config), "--site-dir", str(site)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )


@pytest.fixture(scope="session")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("site") / "site"
    result = build_site(REPO / "mkdocs.yml", folder)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return folder


def test_the_site_builds_with_strict_and_no_warning(site: Path) -> None:
    for page in ("index", "getting-started", "byo", "jetson", "troubleshooting", "reference/cli", "reference/api"):
        assert (site / f"{page}.html").is_file(), page
    assert "edgeresnext bundle verify" in (site / "reference" / "cli.html").read_text(encoding="utf-8")
    assert "load_bundle" in (site / "reference" / "api.html").read_text(encoding="utf-8")


def test_a_missing_anchor_fails_the_build(tmp_path: Path) -> None:
    """The check has teeth: one link to an anchor no page has, and the strict build stops naming it."""
    shutil.copytree(REPO / "docs", tmp_path / "docs")
    shutil.copy(REPO / "mkdocs.yml", tmp_path / "mkdocs.yml")
    page = tmp_path / "docs" / "byo.md"
    page.write_text(page.read_text(encoding="utf-8") + "\nSee [nowhere](jetson.md#no-such-section).\n")
    result = build_site(tmp_path / "mkdocs.yml", tmp_path / "site")
    assert result.returncode != 0
    assert "byo.md" in result.stderr and "#no-such-section" in result.stderr, result.stderr[-2000:]


def test_generated_reference_pages_are_not_committed() -> None:
    assert not (REPO / "docs" / "reference").exists()
    ignored = subprocess.run(["git", "check-ignore", "-q", "site/"], cwd=REPO, check=False).returncode
    assert ignored == 0, "site/ is not in .gitignore"


# ------------------------------------------------------------------------------------ the pages' command blocks
BLOCK = re.compile(
    r"^<!-- test: (?P<kind>run|output)(?:, exit (?P<exit>\d+))? -->\n```(?P<lang>\w+)\n(?P<code>.*?)^```",
    re.MULTILINE | re.DOTALL,
)


@dataclass(frozen=True)
class Block:
    page: str
    line: int
    kind: str  # run: must exit 0 (or the exit given); output: each `$ command` prints the lines below it
    lang: str
    code: str
    exit: int

    def __str__(self) -> str:
        return f"{self.page}:{self.line}"


def marked_blocks(*pages: Path) -> list[Block]:
    blocks = []
    for path in pages:
        text = path.read_text(encoding="utf-8")
        for match in BLOCK.finditer(text):
            line = text.count("\n", 0, match.start()) + 2  # the fence's line
            blocks.append(
                Block(
                    _rel(path) if path.is_relative_to(REPO) else path.name,
                    line,
                    match["kind"],
                    match["lang"],
                    match["code"],
                    int(match["exit"] or 0),
                )
            )
    return blocks


BLOCKS = marked_blocks(*PAGES)


@pytest.fixture(scope="session")
def workspace(first_build, fmnist_test, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where the tested blocks run: ``targets/`` as shipped, ``build/cpu/`` the tests' small cpu build (shipped model,
    200 validation images), ``shoe.png`` a Fashion-MNIST test image of a sneaker."""
    from PIL import Image

    _yaml, build_root, _summary = first_build
    folder = tmp_path_factory.mktemp("docs-workspace")
    shutil.copytree(build_root / "cpu-small", folder / "build" / "cpu")
    shutil.copytree(REPO / "targets", folder / "targets")
    sneaker = int(np.flatnonzero(fmnist_test.labels == fmnist_test.class_names.index("Sneaker"))[0])
    Image.fromarray(fmnist_test.images[sneaker].squeeze()).save(folder / "shoe.png")
    return folder


def _env() -> dict[str, str]:
    bin_dir = str(Path(sys.executable).parent)
    return {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}", "COLUMNS": "100"}


def _run(command: list[str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        command, cwd=cwd, env=_env(), capture_output=True, text=True, timeout=300, check=False, stdin=subprocess.DEVNULL
    )


def _console(code: str) -> list[tuple[str, str]]:
    """``[(command, expected output)]`` of a console block: ``$ `` starts a command, the lines after it are what it
    prints (stdout and stderr)."""
    steps: list[tuple[str, list[str]]] = []
    for line in code.splitlines():
        if line.startswith("$ "):
            steps.append((line[2:], []))
        elif steps:
            steps[-1][1].append(line)
    return [(command, "\n".join(lines).strip()) for command, lines in steps]


def output_matches(expected: str, actual: str) -> bool:
    """``...`` in the expected text stands for any text (doctest's ELLIPSIS); everything else must match, line
    ends and runs of spaces aside."""
    parts = [re.escape(" ".join(part.split())) for part in expected.split("...")]
    return re.fullmatch(".*?".join(parts), " ".join(actual.split()), re.DOTALL) is not None


def run_block(block: Block, cwd: Path) -> str | None:
    """None when the block does what its page says, else what went wrong."""
    if block.kind == "run":
        runner = [sys.executable, "-c", block.code] if block.lang == "python" else ["bash", "-euo", "pipefail", "-c"]
        result = _run(runner if block.lang == "python" else [*runner, block.code], cwd)
        if result.returncode != block.exit:
            said = f"stderr:\n{result.stderr[-2000:]}\nstdout (its end):\n{result.stdout[-500:]}"
            return f"exit {result.returncode}, expected {block.exit}; {said}"
        return None
    for command, expected in _console(block.code):
        result = _run(["bash", "-o", "pipefail", "-c", command], cwd)
        actual = (result.stdout + result.stderr).strip()
        if not output_matches(expected, actual):
            return f"$ {command}\nprinted:\n{actual[-3000:]}\nthe page says:\n{expected}"
    return None


def test_pages_mark_their_cheap_commands_for_testing() -> None:
    marked = {b.page for b in BLOCKS}
    assert {"docs/getting-started.md", "docs/bundles.md", "docs/troubleshooting.md", "README.md"} <= marked, marked
    assert len(BLOCKS) >= 12


@pytest.mark.parametrize("block", BLOCKS, ids=str)
def test_a_pages_command_block_works(block: Block, workspace: Path, tmp_path: Path) -> None:
    cwd = tmp_path / "cwd"
    shutil.copytree(workspace, cwd, symlinks=True)
    problem = run_block(block, cwd)
    assert problem is None, f"{block}: {problem}"


def test_a_broken_command_block_fails(workspace: Path, tmp_path: Path) -> None:
    """The check has teeth: a block whose command stopped working, and one whose output changed."""
    cwd = tmp_path / "cwd"
    shutil.copytree(workspace, cwd, symlinks=True)
    page = tmp_path / "page.md"
    page.write_text(
        "<!-- test: run -->\n```bash\nedgeresnext bundle verify build/cpu/no-such-bundle\n```\n\n"
        "<!-- test: output, exit 2 -->\n```console\n$ edgeresnext quantize shipped:fashion-mnist --subset-size 0\n"
        "edgeresnext quantize: error: --subset-size must be >= 7, got 0\n```\n",
        encoding="utf-8",
    )
    problems = [run_block(b, cwd) for b in marked_blocks(page)]
    assert problems[0] is not None and "exit 2, expected 0" in problems[0] and "no-such-bundle" in problems[0]
    assert problems[1] is not None and "--subset-size must be >= 1, got 0" in problems[1]


# -------------------------------------------------------------------------------------- the site in a browser
def _proxy() -> tuple[int, list[str], threading.Event]:
    """A local HTTP proxy that answers nothing and records every request Chromium sends through it."""
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(0.2)
    seen: list[str] = []
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            with conn:
                conn.settimeout(2)
                try:
                    data = conn.recv(4096)
                    if not data:  # a connection opened (a preconnect) and closed unused: no request was sent
                        continue
                    seen.append(data.decode("latin-1").split("\r\n", 1)[0])
                    conn.sendall(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                except OSError:
                    pass
        server.close()

    threading.Thread(target=serve, daemon=True).start()
    return server.getsockname()[1], seen, stop


# Appended to a copy of a built page: what the browser loaded, and which images it could not decode.
PROBE = """<script>
window.addEventListener("load", () => setTimeout(() => {
  const missing = [...document.images].filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.src);
  const loaded = performance.getEntriesByType("resource").map(e => e.name);
  document.body.dataset.images = document.images.length;
  document.body.dataset.missing = JSON.stringify(missing);
  document.body.dataset.loaded = JSON.stringify(loaded);
  const header = document.querySelector(".md-header");
  document.body.dataset.sheets = JSON.stringify(header ? getComputedStyle(header).position : "no header");
}, 500));
</script>"""


# Chromium's own services (network time, sign-in, the search engine's preconnect) still call google.com with every
# flag below set; measured on a blank page. Debian's Chromium 156.0.8078.129 also asks its update service
# (update.googleapis.com/service/update2) despite --disable-component-update: the old main's test failed the same way
# with it. No page of ours names either host; every other request fails the test.
CHROMIUM_OWN = re.compile(
    r"^(?:CONNECT (?:[\w-]+\.)*google\.com:|GET http://(?:[\w-]+\.)*google\.com[:/]"
    r"|CONNECT update\.googleapis\.com:443 |POST http://update\.googleapis\.com/service/update2/)"
)
QUIET = (
    "NetworkTimeServiceQuerying,OptimizationHints,OptimizationHintsFetching,OptimizationGuideModelDownloading,"
    "MediaRouter,Translate,AutofillServerCommunication,CertificateTransparencyComponentUpdater,PreconnectToSearch"
)


def _chromium(args: list[str], profile: Path, proxy: int) -> subprocess.CompletedProcess:
    return run_chromium(
        "--disable-domain-reliability",
        "--disable-client-side-phishing-detection",
        "--disable-default-apps",
        "--disable-extensions",
        f"--disable-features={QUIET}",
        "--no-pings",
        f"--proxy-server=http://127.0.0.1:{proxy}",
        "--proxy-bypass-list=<-loopback>",
        "--window-size=1280,1600",
        "--hide-scrollbars",
        "--virtual-time-budget=5000",
        *args,
        profile=profile,
    )


def render(page: Path, tmp_path: Path, screenshot: Path | None = None) -> tuple[dict[str, str], list[str]]:
    """(the probe's findings, requests that tried to leave the machine) of ``page`` in headless Chromium."""
    import json

    probed = page.with_name(page.stem + ".probed.html")
    probed.write_text(page.read_text(encoding="utf-8").replace("</body>", PROBE + "</body>"), encoding="utf-8")
    port, requests, stop = _proxy()
    try:
        dom = _chromium(["--dump-dom", probed.as_uri()], tmp_path / "profile", port)
        if screenshot is not None:
            shot = _chromium([f"--screenshot={screenshot}", page.as_uri()], tmp_path / "profile", port)
            assert shot.returncode == 0 and screenshot.is_file(), shot.stderr[-2000:]
    finally:
        stop.set()
    assert dom.returncode == 0, dom.stderr[-2000:]
    body = dom.stdout[dom.stdout.index("<body") :]
    body = body[: body.index(">")]
    found = dict(re.findall(r'data-(\w+)="([^"]*)"', body))
    assert {"images", "missing", "loaded", "sheets"} <= found.keys(), body
    leaving = [r for r in requests if not CHROMIUM_OWN.match(r)]
    return {k: json.loads(html.unescape(found[k])) for k in ("images", "missing", "loaded", "sheets")}, leaving


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install chromium; .ci/run does)")
@pytest.mark.parametrize("page", ["index.html", "jetson.html"])
def test_the_page_renders_offline_with_every_image(site: Path, page: str, tmp_path: Path) -> None:
    found, requests = render(site / page, tmp_path, screenshot=tmp_path / f"{page}.png")
    assert found["missing"] == [], found["missing"]
    assert requests == [], requests
    # Chromium lists no timing entry for a file:// resource: any entry at all came from elsewhere.
    outside = [url for url in found["loaded"] if not url.startswith("file://")]
    assert outside == [], outside
    assert found["sheets"] == "sticky"  # the theme's stylesheet, read from the site folder, styles the header
    if page == "index.html":
        assert found["images"] >= 1  # the validation report's screenshot
    assert (tmp_path / f"{page}.png").stat().st_size > 10_000


RESOURCE = re.compile(r"<(?:script|link|img|iframe|source|video|audio)\b[^>]*?\b(?:src|href)=[\"']?(https?:)?//", re.I)
CSS_REMOTE = re.compile(r"(?:@import\s+(?:url\()?|url\()\s*[\"']?(?:https?:)?//", re.I)


def test_no_page_loads_anything_from_the_network(site: Path) -> None:
    """Every built page and stylesheet: no script, style, font or image from another host (links to read are fine)."""
    remote = []
    for path in [*site.rglob("*.html"), *site.rglob("*.css")]:
        text = path.read_text(encoding="utf-8", errors="replace")
        pattern = CSS_REMOTE if path.suffix == ".css" else RESOURCE
        remote += [f"{path.relative_to(site)}: {m.group(0)[:80]}" for m in pattern.finditer(text)]
    assert remote == []


def test_a_remote_image_is_caught(site: Path, tmp_path: Path) -> None:
    """The offline check has teeth: a page with an image from another host is reported, and no request leaves."""
    page = tmp_path / "remote.html"
    page.write_text('<html><body><img src="https://example.invalid/logo.png"></body></html>', encoding="utf-8")
    assert RESOURCE.search(page.read_text(encoding="utf-8"))
    if CHROMIUM is None:
        pytest.skip("chromium is not installed")
    found, requests = render(page, tmp_path)
    assert found["missing"] == ["https://example.invalid/logo.png"]
    assert any("example.invalid" in r for r in requests), requests


# ------------------------------------------------------------------------------------ promises keep their tests
TEST_REF = re.compile(r"`(tests/[\w/]+\.py)?((?:::\w+)+)?(\[[^\]`]*\])?`")


def known_tests() -> dict[str, set[str]]:
    """``{"tests/x.py": {"test_a", "Class::test_b", ...}}`` for every test file, by an AST walk."""
    found = {}
    for path in sorted((REPO / "tests").rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        names = set()
        for node in tree.body:
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                names.add(node.name)
            elif isinstance(node, ast.ClassDef):
                names |= {f"{node.name}::{n.name}" for n in node.body if isinstance(n, ast.FunctionDef)}
        found[_rel(path)] = names
    return found


def references_in(text: str) -> list[tuple[int, str, str | None]]:
    """``[(offset, file, test name or None)]`` of the test references in ``text``; ``::name`` alone continues the
    file named last before it."""
    refs, last_file = [], None
    for match in TEST_REF.finditer(text):
        file, name = match[1], match[2]
        if not file and not name:
            continue
        file = file or last_file
        if file is None:
            refs.append((match.start(), "<no file before it>", name[2:]))
            continue
        last_file = file
        refs.append((match.start(), file, name[2:] if name else None))
    return refs


def dangling_references(pages: list[Path], known: dict[str, set[str]]) -> list[str]:
    problems = []
    for path in pages:
        text = path.read_text(encoding="utf-8")
        for offset, file, name in references_in(text):
            where = f"{_rel(path)}:{text.count(chr(10), 0, offset) + 1}"
            if file not in known:
                problems.append(f"{where}: {file} is not a test file")
            elif name is not None and name not in known[file]:
                problems.append(f"{where}: {file}::{name} is not a test in it")
    return problems


def test_every_test_a_page_names_exists() -> None:
    problems = dangling_references(PAGES, known_tests())
    assert problems == [], "\n".join(problems)


def test_a_removed_test_is_a_dangling_reference(tmp_path: Path) -> None:
    page = tmp_path / "page.md"
    page.write_text(
        "Bounds hold (`tests/test_stats.py::test_gate_false_pass_rate_is_at_most_5_percent_at_the_limit`,\n"
        "`::test_no_such_test[case]`); `tests/test_nothing.py` too.\n",
        encoding="utf-8",
    )
    problems = dangling_references([page], known_tests())
    assert [p.split(": ", 1)[1] for p in problems] == [
        "tests/test_stats.py::test_no_such_test is not a test in it",
        "tests/test_nothing.py is not a test file",
    ]


@dataclass(frozen=True)
class Promise:
    test_file: str
    test: str
    page: str
    phrase: str


def promises() -> list[Promise]:
    """Every ``@pytest.mark.promise(page, phrase)`` on a test, read from the test files' source."""
    found = []
    for path in sorted((REPO / "tests").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                continue
            for deco in node.decorator_list:
                if isinstance(deco, ast.Call) and ast.unparse(deco.func) == "pytest.mark.promise":
                    page, phrase = (ast.literal_eval(a) for a in deco.args)
                    found.append(Promise(_rel(path), node.name, page, phrase))
    return found


def _units(text: str) -> list[tuple[int, str]]:
    """``[(offset, text)]`` of a page's paragraphs, list items and table rows: where a promise and its test stand."""
    units, current, start, offset = [], [], 0, 0
    for line in text.splitlines(keepends=True):
        new_unit = not line.strip() or line.lstrip().startswith(("|", "- ", "* ")) or line.startswith("#")
        if new_unit and current:
            units.append((start, "".join(current)))
            current = []
        if line.strip():
            if not current:
                start = offset
            current.append(line)
            if line.lstrip().startswith("|") or line.startswith("#"):
                units.append((start, "".join(current)))
                current = []
        offset += len(line)
    if current:
        units.append((start, "".join(current)))
    return units


def broken_promises(found: list[Promise]) -> list[str]:
    problems = []
    for promise in found:
        label = f"{promise.test_file}::{promise.test} promises {promise.phrase!r} on {promise.page}"
        page = REPO / promise.page
        if not page.is_file():
            problems.append(f"{label}: no such page")
            continue
        text = page.read_text(encoding="utf-8")
        refs = references_in(text)
        phrase = " ".join(promise.phrase.split())
        units = [(start, body) for start, body in _units(text) if phrase in " ".join(body.split())]
        if not units:
            problems.append(f"{label}: the page no longer says it")
            continue
        named = False
        for start, body in units:
            for offset, file, name in refs:
                inside = start <= offset < start + len(body)
                if inside and file == promise.test_file and name in (None, promise.test):
                    named = True
        if not named:
            problems.append(f"{label}: the paragraph that says it no longer names the test")
    return problems


def test_every_promise_is_on_its_page_beside_its_test() -> None:
    found = promises()
    assert len(found) >= 8, found
    problems = broken_promises(found)
    assert problems == [], "\n".join(problems)


def test_a_promise_that_lost_its_sentence_or_its_test_reference_fails(tmp_path: Path, monkeypatch) -> None:
    page = tmp_path / "page.md"
    page.write_text(
        "A 95 % gate passes wrongly at most 5 % of the time\n"
        "(`tests/test_stats.py::test_gate_false_pass_rate_is_at_most_5_percent_at_the_limit`).\n\n"
        "Data folders do not follow links out.\n\n| case | test |\n|---|---|\n| nothing outside --out | none |\n",
        encoding="utf-8",
    )
    monkeypatch.setattr(sys.modules[__name__], "REPO", tmp_path)
    file, test = "tests/test_stats.py", "test_gate_false_pass_rate_is_at_most_5_percent_at_the_limit"
    assert broken_promises([Promise(file, test, "page.md", "passes wrongly at most 5 %")]) == []
    problems = broken_promises(
        [
            Promise("tests/test_hostile_io.py", "test_data_folders_do_not_follow_links_out", "page.md", "follow links"),
            Promise("tests/test_hostile.py", "test_x", "page.md", "nothing outside --out"),
            Promise(file, test, "page.md", "a sentence the page lost"),
        ]
    )
    assert [p.rsplit(": ", 1)[1] for p in problems] == [
        "the paragraph that says it no longer names the test",
        "the paragraph that says it no longer names the test",
        "the page no longer says it",
    ]


# ------------------------------------------------------------------------------------------ the README's promises
def test_the_readme_is_the_front_door() -> None:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    assert len(readme.encode("utf-8")) <= 15_000
    for page in ("byo.md", "jetson.md", "validation.md", "troubleshooting.md"):
        assert f"](docs/{page}" in readme, page
    for image in re.findall(r"!\[[^\]]*\]\(([^)]+)\)", readme):
        assert (REPO / image).is_file(), image


@pytest.mark.promise("README.md", "make build TARGET=cpu")
def test_the_readme_s_two_commands_are_the_makefile_s() -> None:
    """`make build TARGET=cpu` runs the build of targets/cpu.yaml, `make test` the suite without slow and GPU tests
    (a dry run: `make -n`)."""
    build = subprocess.run(["make", "-n", "build", "TARGET=cpu"], cwd=REPO, capture_output=True, text=True, check=True)
    assert re.search(r"-m edgeresnext\.cli build --target cpu\s*$", build.stdout, re.MULTILINE), build.stdout
    test = subprocess.run(["make", "-n", "test"], cwd=REPO, capture_output=True, text=True, check=True)
    assert '-m pytest -m "not slow and not gpu and not tensorrt"' in test.stdout, test.stdout


def _targets_table(text: str) -> dict[str, list[str]]:
    """``{target name: [backend, precision, batch, notes]}`` of the table headed ``| target | backend | ...``."""
    table = text.split("| target | backend | precision | batch | notes |", 1)[1].split("\n\n", 1)[0]
    rows = [line.strip("|").split(" | ") for line in table.strip().splitlines()[1:]]
    return {cells[0].strip("` "): [c.strip() for c in cells[1:]] for cells in rows}


@pytest.mark.promise("README.md", "`targets/<name>.yaml`")
@pytest.mark.parametrize("page", ["README.md", "docs/targets.md"])
def test_the_targets_table_matches_the_target_files(page: str) -> None:
    from edgeresnext.config import load_target
    from edgeresnext.registry import backend_class

    table = _targets_table((REPO / page).read_text(encoding="utf-8"))
    assert sorted(table) == sorted(p.stem for p in (REPO / "targets").glob("*.yaml"))
    for name, (backend, precision, batch, _notes) in table.items():
        target = load_target(REPO / "targets" / f"{name}.yaml")
        assert backend_class(target.backend).display_name in backend, (name, backend)
        assert precision.startswith(target.precision.upper()), (name, precision)
        size = target.input.batch
        expected = str(size.min) if size.min == size.max else f"{size.min}–{size.max} (opt {size.opt})"
        assert batch == expected, (name, batch)
