"""Render a run's Allure results with Allure 3 and look at them as a reader does: in headless Chromium.

    python bench/allure_render.py [RESULTS] [--out DIR] [--history DIR]

RESULTS is a `meshconf run` results directory (its allure/ is rendered). Without it, a short local
run makes one: RouteToVersion and WeightedSplit under the mutant ignore-weights, so that one feature
passes and one fails. The results are rendered by `meshconf report` (Allure 3 through npx), served
on 127.0.0.1, and opened in headless Chromium (Debian: apt-get install -y chromium): the results
page and the categories page are saved as PNG and as their rendered DOM in --out (default
RESULTS/allure-screens). It prints what the rendered pages show: the tree's groups and tests, the
categories, the environment; and exits 1 when the tree is not profile > feature, or the categories
or the environment are missing.
"""

import argparse
import functools
import http.server
import shutil
import subprocess
import sys
import tempfile
import threading
from html.parser import HTMLParser
from pathlib import Path

from conformance.features import BY_NAME, PROFILES
from conformance.report.failure_kinds import FailureKind

RUN = ["--feature", "RouteToVersion", "--feature", "WeightedSplit", "--local-mutant", "ignore-weights"]
PAGES = {"results": "index.html", "categories": "index.html#/categories"}  # the report's routes
BROWSERS = ("chromium", "chromium-browser", "google-chrome")
VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}
# What the awesome report marks its elements with (data-testid), as Allure 3.18.0 renders them.
WATCHED = {"tree-section-title", "tree-leaf-title", "metadata-item-key", "metadata-item-value"}


class Page(HTMLParser):
    """The rendered page's texts under the elements it watches, with their depth in the tree."""

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[tuple[str, dict[str, str]]] = []
        self.open: list[tuple[int, str, int, list[str]]] = []  # (stack depth, testid, tree depth, texts)
        self.found: list[tuple[str, int, str]] = []  # (testid, tree depth, first text)
        self.in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in VOID:
            return
        named = {k: v or "" for k, v in attrs}
        self.stack.append((tag, named))
        self.in_script = tag in ("script", "style")
        testid = named.get("data-testid", "")
        if testid in WATCHED:
            depth = sum(1 for _, a in self.stack[:-1] if a.get("data-testid") == "tree-content")
            self.open.append((len(self.stack), testid, depth, []))

    def handle_endtag(self, tag: str) -> None:
        while self.stack:
            popped, _ = self.stack.pop()
            while self.open and self.open[-1][0] > len(self.stack):
                _, testid, depth, texts = self.open.pop()
                self.found.append((testid, depth, texts[0] if texts else ""))
            if popped == tag:
                break
        self.in_script = False

    def handle_data(self, data: str) -> None:
        if not self.in_script and data.strip():
            for _, _, _, texts in self.open:
                texts.append(data.strip())

    def texts(self, testid: str) -> list[tuple[int, str]]:
        return [(depth, text) for t, depth, text in self.found if t == testid]


def local_run(results: Path) -> None:
    command = [sys.executable, "-m", "conformance.cli", "run", *RUN, "--results", str(results)]
    print(f"$ {' '.join(command)}", flush=True)
    code = subprocess.run(command, check=False).returncode
    print(f"meshconf run exited {code} (1: a feature failed, as the mutant makes WeightedSplit)")


def render(results: Path, history: Path | None) -> Path:
    command = [sys.executable, "-m", "conformance.cli", "report", str(results)]
    command += ["--history", str(history)] if history else []
    print(f"$ {' '.join(command)}", flush=True)
    if subprocess.run(command, check=False).returncode != 0 or not (results / "allure-report" / "index.html").is_file():
        sys.exit("bench: meshconf report rendered nothing (is Node.js, with npx, installed?)")
    return results / "allure-report"


def serve(directory: Path) -> http.server.ThreadingHTTPServer:
    """The report over HTTP: it loads its data with fetch, which file:// pages may not."""
    handler = functools.partial(QuietHandler, directory=str(directory))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


def browse(browser: str, url: str, png: Path, dom: Path) -> Page:
    common = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
              "--window-size=1600,1100", "--virtual-time-budget=15000"]  # let the app fetch and draw
    subprocess.run([*common, f"--screenshot={png}", url], check=True, capture_output=True, timeout=180)
    html = subprocess.run([*common, "--dump-dom", url], check=True, capture_output=True, text=True, timeout=180).stdout
    dom.write_text(html)
    page = Page()
    page.feed(html)
    return page


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("results", nargs="?", help="a meshconf results directory (default: a short local run)")
    parser.add_argument("--out", help="where the screenshots and DOMs go (default RESULTS/allure-screens)")
    parser.add_argument("--history", help="passed to meshconf report --history")
    args = parser.parse_args()
    browser = next((b for b in BROWSERS if shutil.which(b)), None)
    if browser is None:
        sys.exit("bench: no Chromium on PATH: apt-get install -y chromium")
    results = Path(args.results) if args.results else Path(tempfile.mkdtemp(prefix="meshconf-allure-")) / "results"
    if not args.results:
        local_run(results)
    report = render(results, Path(args.history) if args.history else None)
    out = Path(args.out) if args.out else results / "allure-screens"
    out.mkdir(parents=True, exist_ok=True)
    server = serve(report)
    try:
        base = f"http://127.0.0.1:{server.server_address[1]}/"
        pages = {name: browse(browser, base + route, out / f"{name}.png", out / f"{name}-dom.html")
                 for name, route in PAGES.items()}
    finally:
        server.shutdown()
    return judge(pages, out)


def judge(pages: dict[str, Page], out: Path) -> int:
    sections = pages["results"].texts("tree-section-title")
    top = min((depth for depth, _ in sections), default=0)  # the whole tree sits in a tree-content too
    tree = [(depth - top, text) for depth, text in sections]
    leaves = [text for _, text in pages["results"].texts("tree-leaf-title")]
    keys = [text for _, text in pages["results"].texts("metadata-item-key")]
    values = [text for _, text in pages["results"].texts("metadata-item-value")]
    categories = [text for _, text in pages["categories"].texts("tree-section-title")]
    print("tree (results page):")
    for depth, text in tree:
        print(f"  {'  ' * depth}{text}")
    print(f"tests shown: {leaves}")
    print(f"categories (categories page): {categories}")
    print(f"environment: {dict(zip(keys, values))}")
    print(f"screenshots and DOMs: {sorted(p.name for p in out.iterdir())} in {out}")
    problems = []
    if not tree or any(text not in PROFILES for depth, text in tree if depth == 0):
        problems.append("the tree's first level is not the profiles")
    if not any(text in BY_NAME for depth, text in tree if depth == 1):
        problems.append("the tree's second level is not the features")
    if not set(categories) & {k.category for k in FailureKind}:
        problems.append("no meshconf category shown")
    if "target" not in keys:
        problems.append("no environment shown")
    for problem in problems:
        print(f"bench: FAIL: {problem}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
