"""The notebooks as a student meets them: JupyterLab in headless Chromium, offline.

Every notebook runs in its ``ci`` preset through JupyterLab's own "Run All"; then no output
may be an error or stderr, every figure must be drawn as an image, every widget as controls;
each panel's Run button is clicked and its live plot must appear. Every request that leaves
127.0.0.1 is blocked and fails the test, so a CDN dependency cannot hide. Screenshots land
in ``reports/browser/``.

Needs Debian's ``chromium`` (``.ci/run`` installs it; Playwright drives that binary and
downloads nothing). Without it the test is skipped, unless ``LORA_LAB_REQUIRE_BROWSER=1``
(set by ``.ci/run``), where a missing browser is a failure.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.harness import ROOT

# Debian's chromium here and in .ci/run; a GitHub runner's preinstalled Chrome in a fork's
# workflow (LORA_LAB_CHROMIUM=google-chrome); any Chromium build Playwright can drive.
CHROMIUM = next(filter(None, (shutil.which(name) for name in (
    os.environ.get("LORA_LAB_CHROMIUM", ""), "chromium", "chromium-browser"))), None)  # fmt: skip
REQUIRED = os.environ.get("LORA_LAB_REQUIRE_BROWSER") == "1"
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
SHOTS = ROOT / "reports" / "browser"
RUN_TIMEOUT_S = 900  # one notebook's "Run All" (a busy 2-core machine)
PANEL_TIMEOUT_S = 300  # one panel's live training run

try:
    from playwright.sync_api import sync_playwright
except ImportError:  # pragma: no cover - dev extra not installed
    sync_playwright = None

if REQUIRED:
    assert CHROMIUM, "LORA_LAB_REQUIRE_BROWSER=1 but no chromium on PATH (apt-get install chromium)"
    assert sync_playwright, "LORA_LAB_REQUIRE_BROWSER=1 but playwright is not installed"
pytestmark = pytest.mark.skipif(
    not (CHROMIUM and sync_playwright), reason="needs Debian's chromium and playwright"
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ci_copy(src: Path, dest: Path) -> None:
    """The notebook with its parameters cell set to the ``ci`` preset (what papermill does)."""
    nb = json.loads(src.read_text())
    for cell in nb["cells"]:
        if "parameters" in cell.get("metadata", {}).get("tags", []):
            cell["source"] = ['preset = "ci"\n']
    dest.write_text(json.dumps(nb, indent=1))


@pytest.fixture(scope="session")
def lab(tmp_path_factory):
    """A JupyterLab server on 127.0.0.1 with a token, serving ci copies of the notebooks."""
    root = tmp_path_factory.mktemp("lab")
    for nb in NOTEBOOKS:
        _ci_copy(nb, root / nb.name)
    settings = root / ".settings"
    tracker = settings / "@jupyterlab" / "notebook-extension"
    tracker.mkdir(parents=True)
    # every cell in the DOM (no virtual scrolling), so the page can be checked as a whole
    (tracker / "tracker.jupyterlab-settings").write_text('{"windowingMode": "none"}')
    notices = settings / "@jupyterlab" / "apputils-extension"
    notices.mkdir(parents=True)
    (notices / "notification.jupyterlab-settings").write_text('{"fetchNews": "false"}')
    port, token = _free_port(), secrets.token_hex(16)
    env = {k: v for k, v in os.environ.items() if k != "MPLBACKEND"}  # inline figures
    env["JUPYTERLAB_SETTINGS_DIR"] = str(settings)
    env["JUPYTERLAB_WORKSPACES_DIR"] = str(root / ".workspaces")
    log = open(root / "server.log", "w")  # noqa: SIM115 - the server writes it while it runs
    server = subprocess.Popen(
        [sys.executable, "-m", "jupyter", "lab", "--no-browser", "--ServerApp.ip=127.0.0.1",
         f"--ServerApp.port={port}", f"--IdentityProvider.token={token}",
         f"--ServerApp.root_dir={root}", "--LabApp.expose_app_in_browser=True",
         "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
         "--LabApp.news_url=None", "--ServerApp.allow_root=True"],
        env=env, stdout=log, stderr=subprocess.STDOUT, cwd=root,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 120
    while True:
        try:
            urllib.request.urlopen(f"{url}/api/status?token={token}", timeout=2)
            break
        except OSError as e:
            if time.time() > deadline or server.poll() is not None:
                server.kill()
                why = (root / "server.log").read_text()
                raise RuntimeError(f"JupyterLab did not start: {why}") from e
            time.sleep(0.5)
    yield url, token, root
    server.terminate()
    try:  # shutting kernels down can outlast 30 s on a loaded machine: not what is tested
        server.wait(timeout=30)
    except subprocess.TimeoutExpired:
        server.kill()
        server.wait(timeout=30)
    log.close()


@pytest.fixture(scope="session")
def browser():
    with sync_playwright() as p:
        b = p.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=["--no-sandbox", "--disable-gpu"]
        )
        yield b
        b.close()


class LabPage:
    """One JupyterLab page per worker: the app loads once, and each notebook opens in it,
    runs, and closes with its kernel shut down (kernels of notebooks already tested used to
    stay alive until the session ended). Requests that leave 127.0.0.1 are blocked and
    collected in ``blocked`` (emptied per notebook)."""

    def __init__(self, browser, url: str, token: str) -> None:
        self.context = browser.new_context(viewport={"width": 1400, "height": 1000})
        self.blocked: list[str] = []
        self.context.route("**/*", self._only_localhost)
        self.page = self.context.new_page()
        # ?reset: a fresh workspace, so nothing a previous session opened reopens here
        self.page.goto(f"{url}/lab?reset&token={token}")
        self.page.wait_for_function(APP_STARTED, timeout=120_000)
        self.page.evaluate("async () => { await window.jupyterapp.restored; }")

    def _only_localhost(self, route) -> None:
        url = route.request.url
        host = url.split("/")[2].split(":")[0] if "://" in url else ""
        if host in ("127.0.0.1", "localhost") or url.startswith(("data:", "blob:")):
            route.continue_()
        else:
            self.blocked.append(url)
            route.abort()

    def open(self, notebook: str) -> None:
        """Open ``notebook`` and wait until its kernel is idle."""
        self.blocked.clear()
        self.page.evaluate(
            "p => { window.jupyterapp.commands.execute('docmanager:open', {path: p}); }", notebook
        )
        self.page.wait_for_function(KERNEL_IDLE, arg=notebook, timeout=120_000)

    def close_current(self) -> None:
        """Shut the current notebook's kernel down and close it (it was saved, or is a
        failure's leftover): kernels of notebooks already tested free their memory."""
        self.page.evaluate(CLOSE_CURRENT)


@pytest.fixture(scope="session")
def lab_page(lab, browser):
    url, token, _ = lab
    page = LabPage(browser, url, token)
    yield page
    page.context.close()


APP_STARTED = """() => !!window.jupyterapp
  && window.jupyterapp.commands.hasCommand('docmanager:open')"""

KERNEL_IDLE = """(path) => {
  const w = window.jupyterapp.shell.currentWidget;
  if (!w || !w.context || w.context.path !== path) return false;
  const k = w.sessionContext && w.sessionContext.session && w.sessionContext.session.kernel;
  return !!k && k.status === 'idle' && !w.sessionContext.isRestarting;
}"""

CLOSE_CURRENT = """async () => {
  const w = window.jupyterapp.shell.currentWidget;
  if (!w || !w.sessionContext) return;
  await w.sessionContext.shutdown();
  w.dispose();
}"""

FINISHED = """() => {
  const w = window.jupyterapp.shell.currentWidget;
  const k = w.sessionContext.session.kernel;
  const prompts = [...w.node.querySelectorAll('.jp-CodeCell .jp-InputPrompt')]
    .map(p => p.textContent.trim());
  const busy = prompts.some(p => p.includes('*'));
  const done = prompts.every(p => /\\[\\d+\\]/.test(p));
  const failed = w.node.querySelectorAll(
    '.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.stderr"]').length > 0;
  return k.status === 'idle' && !busy && (done || failed);
}"""

# What the notebook model holds, so the DOM can be checked against it.
MODEL_OUTPUTS = """() => {
  const nb = window.jupyterapp.shell.currentWidget.content;
  let images = 0, widgets = 0;
  for (const cell of nb.widgets) {
    if (cell.model.type !== 'code') continue;
    const outs = cell.model.outputs;
    for (let i = 0; i < outs.length; i++) {
      const data = outs.get(i).data || {};
      if ('application/vnd.jupyter.widget-view+json' in data) widgets++;
      else if ('image/png' in data) images++;
    }
  }
  return {images, widgets};
}"""

DOM_OUTPUTS = """() => {
  const w = window.jupyterapp.shell.currentWidget;
  const q = s => [...w.node.querySelectorAll(s)];
  return {
    images: q('.jp-Cell .jp-RenderedImage img')
      .filter(i => i.complete && i.naturalWidth > 0).length,
    widgets: q('.jp-OutputArea-output .jupyter-widgets').filter(
      w => !w.parentElement.closest('.jupyter-widgets')).length,
    errors: q('.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.stderr"]')
      .map(e => e.textContent),
    text: w.node.innerText,
  };
}"""


@pytest.mark.parametrize("notebook", [p.name for p in NOTEBOOKS])
def test_notebook_runs_in_jupyterlab_in_a_real_browser(lab, lab_page, notebook, executed_notebooks):
    _, _, root = lab
    page = lab_page.page
    times: dict[str, object] = {}  # wall seconds of each phase (benchmarks/notebook_time.py)
    try:
        t = time.perf_counter()
        lab_page.open(notebook)
        times["open_s"] = time.perf_counter() - t
        t = time.perf_counter()
        page.evaluate("window.jupyterapp.commands.execute('notebook:run-all-cells')")
        page.wait_for_timeout(1000)  # the prompts turn to [*] first
        page.wait_for_function(FINISHED, timeout=RUN_TIMEOUT_S * 1000, polling=250)
        model, dom = page.evaluate(MODEL_OUTPUTS), page.evaluate(DOM_OUTPUTS)
        assert not dom["errors"], f"{notebook}: error / stderr output:\n" + "\n---\n".join(
            map(_head_and_tail, dom["errors"])
        )
        assert "Error displaying widget" not in dom["text"]
        assert "No renderer could be found" not in dom["text"]
        assert dom["images"] >= model["images"] > 0, (notebook, model, dom["images"])
        assert dom["widgets"] >= model["widgets"], (notebook, model, dom["widgets"])
        times["run_all_s"] = time.perf_counter() - t
        executed_notebooks[Path(notebook).stem] = _save(page, root / notebook)
        times["panels_s"] = _click_every_run_button(page, notebook)
        SHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SHOTS / f"{Path(notebook).stem}.png"), full_page=True)
        (SHOTS / f"{Path(notebook).stem}.timings.json").write_text(json.dumps(times) + "\n")
    finally:
        lab_page.close_current()
    blocked = lab_page.blocked
    assert not blocked, f"{notebook} asked for resources outside 127.0.0.1: {blocked[:5]}"


def _head_and_tail(text: str, keep: int = 1200) -> str:
    return text if len(text) <= 2 * keep else f"{text[:keep]}\n[...]\n{text[-keep:]}"


SAVED = """() => {
  const w = window.jupyterapp.shell.currentWidget;
  return !w.context.model.dirty && !w.context.isDisposed;
}"""


def _save(page, path: Path) -> Path:
    """Save the executed notebook from JupyterLab and keep a copy: the papermill tests of
    this notebook read their records from it instead of executing it again."""
    page.evaluate("window.jupyterapp.commands.execute('docmanager:save')")
    page.wait_for_function(SAVED, timeout=60_000, polling=250)
    copy = path.with_name(f"{path.stem}.executed.ipynb")
    shutil.copyfile(path, copy)
    return copy


def _click_every_run_button(page, notebook: str) -> list[float]:
    """Each panel's Run trains live: the button disables while running, and a plot appears
    in that panel's output area. Returns each panel's seconds from click to finished plot."""
    buttons = page.locator(".jupyter-widgets button.jupyter-button", has_text="Run")
    seconds = []
    for i in range(buttons.count()):
        button = buttons.nth(i)
        panel = button.locator("xpath=ancestor::div[contains(@class,'widget-vbox')][1]")
        before = panel.locator(".widget-output img").count()
        button.scroll_into_view_if_needed()
        t = time.perf_counter()
        button.click()
        page.wait_for_function(
            """([el, n]) => el.querySelectorAll('.widget-output img').length > n
                 && !el.querySelector('button.jupyter-button:disabled')""",
            arg=[panel.element_handle(), before],
            timeout=PANEL_TIMEOUT_S * 1000,
            polling=250,
        )
        seconds.append(time.perf_counter() - t)
        errors = panel.locator(".jp-OutputArea-output[data-mime-type*='stderr']")
        # a traceback's head and its last lines (where the exception says what went wrong)
        texts = [_head_and_tail(errors.nth(j).inner_text()) for j in range(errors.count())]
        assert not texts, f"{notebook}: panel {i} printed an error:\n" + "\n---\n".join(texts)
        # kept for review: the panel after Run, its live curve over the sweep's
        SHOTS.mkdir(parents=True, exist_ok=True)
        panel.screenshot(path=str(SHOTS / f"{Path(notebook).stem}-panel{i}.png"))
    return seconds


def test_html_report_renders_maths_offline_and_shows_panels_statically(browser, tmp_path):
    """reports/*.html as a workshop opens them with no network: MathJax from a local copy,
    a widget panel as a static note, and no request to anywhere."""
    import nbformat

    from lora_lab.reproduce import to_html

    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_markdown_cell(r"$$W' = W + \frac{\alpha}{r} B A$$"),
        nbformat.v4.new_code_cell("panel", outputs=[nbformat.v4.new_output(
            "display_data", data={"application/vnd.jupyter.widget-view+json": {
                "model_id": "x", "version_major": 2, "version_minor": 0},
                "text/plain": "VBox()"})]),
    ]  # fmt: skip
    nb.metadata["widgets"] = {"application/vnd.jupyter.widget-state+json": {"state": {}}}
    path = tmp_path / "report.ipynb"
    nbformat.write(nb, str(path))
    page_path = to_html(path)
    context = browser.new_context()
    requested: list[str] = []

    def only_files(route):
        if not route.request.url.startswith(("file://", "data:", "blob:")):
            requested.append(route.request.url)
            route.abort()
        else:
            route.continue_()

    context.route("**/*", only_files)
    page = context.new_page()
    try:
        page.goto(page_path.as_uri())
        page.wait_for_function(
            "() => window.MathJax && MathJax.Hub && MathJax.Hub.queue.pending === 0"
            " && document.querySelectorAll('.MathJax_Display').length > 0",
            timeout=60_000,
        )
        text = page.inner_text("body")
        assert "Interactive panel" in text
        assert "\\frac" not in text  # typeset, not raw TeX
        assert "Math Processing Error" not in text
    finally:
        context.close()
    assert not requested, requested
