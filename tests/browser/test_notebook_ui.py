"""Notebook 00 in a real browser: JupyterLab from .venv, headless Chromium driven by Playwright, SMOKE mode.

A headless notebook run cannot see whether the live loss panel (an ipywidgets
VBox of HTML + Image) renders: a version mismatch between ipywidgets and
JupyterLab shows "Error displaying widget" instead. Here JupyterLab serves a
copy of notebook 00 with SMOKE = True injected, Chromium runs every cell, and the
test watches the panel's image: it must appear and change while training runs.
The page is saved as ``notebook00.png`` in the test's tmp_path.

Needs Debian's ``chromium`` (``apt-get install -y chromium``) and PyPI's
``playwright`` (no browser download: it drives /usr/bin/chromium); .ci/run installs both.
"""

from __future__ import annotations

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

CHROMIUM = os.environ.get("CPTNB_CHROMIUM", "/usr/bin/chromium")
PANEL_IMAGE = "img.widget-image"

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _smoke_copy(folder: Path) -> Path:
    """Notebook 00 with SMOKE = True and OUT_DIR set in a cell after its parameters cell (as papermill injects)."""
    import nbformat

    from cptnb.notebooks import notebook_path

    nb = nbformat.read(notebook_path("00_quickstart"), as_version=4)
    at = next(i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", []))
    nb.cells.insert(at + 1, nbformat.v4.new_code_cell(f"SMOKE = True\nOUT_DIR = {str(folder / 'run')!r}"))
    # Committed notebooks carry no kernel choice; without one JupyterLab asks in a dialog.
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"}
    target = folder / "00_quickstart.ipynb"
    nbformat.write(nb, target)
    return target


@pytest.fixture
def jupyterlab(tmp_path):
    """A JupyterLab server from this interpreter's environment on 127.0.0.1, serving tmp_path; yields its URL."""
    if not Path(CHROMIUM).is_file():
        missing = f"no Chromium at {CHROMIUM}: apt-get install -y chromium (.ci/run installs it)"
        if os.environ.get("CPTNB_REQUIRE_BROWSER"):
            pytest.fail(missing)
        pytest.skip(missing)
    pytest.importorskip("playwright", reason="pip install playwright==1.65.2 (in requirements)")
    port, token = _free_port(), secrets.token_hex(16)
    log = (tmp_path / "jupyterlab.log").open("w")
    server = subprocess.Popen(
        [sys.executable, "-m", "jupyter", "lab", "--no-browser", "--ip=127.0.0.1", f"--port={port}",
         f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={tmp_path}", "--allow-root"],
        stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(240):
            try:
                urllib.request.urlopen(f"{base}/api/status?token={token}", timeout=2)
                break
            except OSError:
                if server.poll() is not None:
                    pytest.fail(f"JupyterLab exited: {(tmp_path / 'jupyterlab.log').read_text()[-2000:]}")
                time.sleep(0.5)
        yield base, token
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()


def test_quickstart_live_panel_renders_and_updates_in_chromium(jupyterlab, tmp_path):
    from playwright.sync_api import sync_playwright

    base, token = jupyterlab
    notebook = _smoke_copy(tmp_path)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True,
                                     args=["--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"])
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(f"{base}/lab/tree/{notebook.name}?token={token}", timeout=120_000)
        page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=120_000)
        page.get_by_text("Python 3 (ipykernel) | Idle").wait_for(timeout=180_000)  # the kernel is up
        page.get_by_role("menuitem", name="Run", exact=True).click()
        page.get_by_text("Run All Cells", exact=True).click()
        panel = page.locator(PANEL_IMAGE).first
        panel.wait_for(state="visible", timeout=240_000)
        # Poll the panel while training runs: each redraw gives the <img> a new blob URL with a new PNG.
        done = page.locator(".jp-OutputArea-output", has_text="adapter:")  # the last cell's output (not its source)
        sources, shots, deadline = [], [], time.monotonic() + 420  # two test workers share the CPU
        while time.monotonic() < deadline and done.count() == 0:
            src = panel.get_attribute("src")
            if src and (not sources or src != sources[-1]):
                sources.append(src)
                shots.append(panel.screenshot())
            time.sleep(0.2)
        done.first.wait_for(timeout=60_000)  # the last cell printed the adapter path
        shots.append(panel.screenshot())
        page.screenshot(path=str(tmp_path / "notebook00.png"), full_page=True)
        errors = page.get_by_text("Error displaying widget").count()
        browser.close()
    shutil.copy(tmp_path / "notebook00.png", tmp_path / "run" / "notebook00.png")
    print(f"screenshot: {tmp_path / 'notebook00.png'}; {len(sources)} panel images seen")
    assert errors == 0, "the live panel shows 'Error displaying widget' (ipywidgets/JupyterLab mismatch)"
    assert len(sources) >= 2, f"the panel's image never changed during training ({len(sources)} seen)"
    assert shots[0] != shots[-1], "the panel's first and last pictures are identical: it did not redraw"
