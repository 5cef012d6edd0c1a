"""End to end in a real browser: JupyterLab + headless Chromium with a fake camera.

Starts JupyterLab on 127.0.0.1 (a secure context, so getUserMedia is allowed)
with a random token and port, opens notebooks/07_webcam_demo.ipynb in Debian's
Chromium (driven by Playwright's Python API, never ``playwright install``),
runs the app cell, presses Capture and checks that a top-5 list appears. The
screenshot goes to the test's tmp_path (its path is printed), never into
figures/. A second run refuses the
camera and uploads data/samples/coffee.jpg.

Needs ``/usr/bin/chromium`` (``apt-get install chromium``) and ``playwright``
(pip); skipped, loudly, when either is missing. Autosave is switched off and
the notebook file is checked to be unchanged afterwards.
"""
from __future__ import annotations

import hashlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest


REPO = Path(__file__).resolve().parents[1]
NOTEBOOK = "notebooks/07_webcam_demo.ipynb"
CHROMIUM = os.environ.get("QCNN_CHROMIUM", "/usr/bin/chromium")
PHOTO = REPO / "data" / "samples" / "coffee.jpg"
CHROMIUM_ARGS = [
    "--use-fake-device-for-media-stream",
    "--use-fake-ui-for-media-stream",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def _skip_reason() -> str | None:
    if not Path(CHROMIUM).is_file():
        return f"BROWSER TEST SKIPPED: no Chromium at {CHROMIUM} (apt-get install chromium)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "BROWSER TEST SKIPPED: the playwright package is not installed (pip install playwright)"
    if shutil.which("jupyter", path=str(Path(sys.executable).parent)) is None:
        return "BROWSER TEST SKIPPED: jupyter is not installed next to this Python"
    return None


pytestmark = [pytest.mark.slow, pytest.mark.skipif(_skip_reason() is not None, reason=_skip_reason() or "")]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_http(url: str, proc: subprocess.Popen, timeout: float, log: Path) -> None:
    t_end = time.monotonic() + timeout
    while time.monotonic() < t_end:
        if proc.poll() is not None:
            tail = log.read_text(errors="replace")[-3000:]
            raise RuntimeError(f"JupyterLab exited early with code {proc.returncode}:\n{tail}")
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.3)
    raise TimeoutError(f"JupyterLab did not answer {url} within {timeout} s")


@pytest.fixture(scope="module")
def jupyterlab(tmp_path_factory):
    """A JupyterLab server on 127.0.0.1 at the repository root; yields (base URL, token). Killed afterwards."""
    tmp_path = tmp_path_factory.mktemp("jupyterlab")
    port, token = _free_port(), secrets.token_hex(16)
    settings = tmp_path / "settings"
    # no autosave (the committed notebook must not change), no news pop-up
    for plugin, value in [("@jupyterlab/docmanager-extension/plugin.jupyterlab-settings", {"autosave": False}),
                          ("@jupyterlab/apputils-extension/notification.jupyterlab-settings", {"fetchNews": "false"})]:
        f = settings / plugin
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_text(json.dumps(value))
    env = dict(os.environ, JUPYTER_RUNTIME_DIR=str(tmp_path / "runtime"), JUPYTER_CONFIG_DIR=str(tmp_path / "config"),
               JUPYTER_DATA_DIR=str(tmp_path / "data"), QCNN_PROGRESS="0")
    # quantize the default model (first use only, then cached) before the browser's clock starts
    from qcnn_lite.apps import demo

    demo.load_models()
    cmd = [sys.executable, "-m", "jupyter", "lab", "--no-browser", f"--port={port}", "--ip=127.0.0.1",
           f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={REPO}", "--ServerApp.open_browser=False",
           f"--LabApp.user_settings_dir={settings}", f"--LabApp.workspaces_dir={tmp_path / 'workspaces'}",
           "--LabApp.extension_manager=readonly", "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate"]
    if os.geteuid() == 0:  # CI and containers run as root
        cmd.append("--allow-root")
    log_path = tmp_path / "jupyterlab.log"
    log = open(log_path, "wb")
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        _wait_http(f"http://127.0.0.1:{port}/api/status?token={token}", proc, timeout=60, log=log_path)
        yield f"http://127.0.0.1:{port}", token
    finally:
        # the server and its kernels share one new session: end the whole group, then make sure
        for sig, wait in ((signal.SIGTERM, 10), (signal.SIGKILL, 5)):
            try:
                os.killpg(proc.pid, sig)
            except ProcessLookupError:
                break
            try:
                proc.wait(wait)
                break
            except subprocess.TimeoutExpired:
                continue
        log.close()
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # stray kernels left in the group
        except ProcessLookupError:
            pass


def _run_app_cell(page, base: str, token: str) -> None:
    """Open the notebook and run its classify_app() cell."""
    page.goto(f"{base}/lab/tree/{NOTEBOOK}?token={token}&reset", timeout=60_000)
    page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=60_000)
    # the kernel must be ready before we run anything
    page.get_by_text("Kernel status: Idle").first.wait_for(state="attached", timeout=60_000)
    cell = page.locator(".jp-CodeCell", has_text="classify_app()").first
    cell.scroll_into_view_if_needed()
    cell.locator(".cm-content").click()
    page.keyboard.press("Shift+Enter")


def _top5(page) -> list[tuple[str, float]]:
    rows = page.locator(".qcnn-top5").first.locator("li")
    rows.first.wait_for(timeout=30_000)
    return [tuple(r) for r in rows.evaluate_all("els => els.map(e => [e.dataset.class, parseFloat(e.dataset.p)])")]


def _check_top5(names: list[tuple[str, float]]) -> None:
    probs = [p for _, p in names]
    assert len(names) == 5 and len({n for n, _ in names}) == 5
    assert probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1 + 1e-6


def test_capture_in_jupyterlab_shows_top5(jupyterlab, tmp_path):
    from playwright.sync_api import sync_playwright

    base, token = jupyterlab
    before = hashlib.sha256((REPO / NOTEBOOK).read_bytes()).hexdigest()
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1300, "height": 1000})
            _run_app_cell(page, base, token)
            page.locator(".qcnn-camera-status[data-state='live']").wait_for(timeout=90_000)
            # no input picture (no broken-image icon) before the first photo
            images_before = page.locator(".qcnn-classify-app img:visible").count()
            page.locator(".qcnn-camera-capture").click()
            names = _top5(page)
            timing = page.locator(".qcnn-time").inner_text()
            images_after = page.locator(".qcnn-classify-app img:visible").count()
            page.locator(".qcnn-classify-app").scroll_into_view_if_needed()
            shot = tmp_path / "browser_capture.png"
            page.screenshot(path=str(shot))
        finally:
            browser.close()
    print(f"\nfake camera frame classified as: {names}\n{timing}\nscreenshot: {shot}")
    _check_top5(names)
    assert "source: camera" in timing
    from qcnn_lite.apps.demo import TIMING_RUNS

    assert f"median of {TIMING_RUNS} warm runs" in timing and "Q-CNN:" in timing and "dense CNN:" in timing
    assert "faster than the dense engine (results/table2" in timing  # the full-size figure beside the 28x28 one
    assert images_before == 0 and images_after == 1
    assert hashlib.sha256((REPO / NOTEBOOK).read_bytes()).hexdigest() == before, "the notebook file was modified"


def test_refused_camera_falls_back_to_upload(jupyterlab):
    """Permission denied: the widget says so, and an uploaded photo is classified instead."""
    from playwright.sync_api import sync_playwright

    base, token = jupyterlab
    args = [a for a in CHROMIUM_ARGS if a != "--use-fake-ui-for-media-stream"] + ["--use-fake-ui-for-media-stream=deny"]
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=args)
        try:
            page = browser.new_page(viewport={"width": 1300, "height": 1000})
            _run_app_cell(page, base, token)
            status = page.locator(".qcnn-camera-status[data-state='unavailable']")
            status.wait_for(timeout=90_000)
            said = status.inner_text()
            with page.expect_file_chooser(timeout=30_000) as chooser:
                page.locator(".qcnn-classify-app .widget-upload").click()
            chooser.value.set_files(str(PHOTO))
            names = _top5(page)
            timing = page.locator(".qcnn-time").inner_text()
            note = page.locator(".qcnn-classify-app").inner_text()
        finally:
            browser.close()
    print(f"\ncamera refused: {said!r}; coffee.jpg classified as: {names}")
    assert "permission was refused" in said and "upload" in said.lower()
    assert "Upload photo" in note  # the app points to the upload
    assert note.lower().count("camera unavailable") == 1 and "no camera here" not in note.lower()  # said once
    _check_top5(names)
    assert "source: upload coffee.jpg" in timing
    # the browser's upload went through the same path as a direct call in Python
    from qcnn_lite.apps import demo

    net, _, _ = demo.load_models()
    expect = demo.classify(net, PHOTO.read_bytes()).top
    assert [n for n, _ in names] == [n for n, _ in expect]
    assert max(abs(p - q) for (_, p), (_, q) in zip(names, expect)) < 1e-4


def _uniform_y4m(path: Path, grey: int = 128, w: int = 320, h: int = 240, frames: int = 30) -> Path:
    """A Y4M video of uniform grey frames, for Chromium's --use-file-for-fake-video-capture."""
    frame = b"FRAME\n" + bytes([grey]) * (w * h) + bytes([128]) * (2 * (w // 2) * (h // 2))
    path.write_bytes(f"YUV4MPEG2 W{w} H{h} F30:1 Ip A1:1 C420jpeg\n".encode() + frame * frames)
    return path


def test_uniform_frame_gets_the_far_from_training_note(jupyterlab, tmp_path):
    """A camera that shows a plain grey wall: the app answers, and says the photo is nothing like the training images."""
    from playwright.sync_api import sync_playwright

    base, token = jupyterlab
    video = _uniform_y4m(tmp_path / "grey.y4m")
    args = CHROMIUM_ARGS + [f"--use-file-for-fake-video-capture={video}"]
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=args)
        try:
            page = browser.new_page(viewport={"width": 1300, "height": 1000})
            _run_app_cell(page, base, token)
            page.locator(".qcnn-camera-status[data-state='live']").wait_for(timeout=90_000)
            page.locator(".qcnn-camera-capture").click()
            names = _top5(page)
            note = page.locator(".qcnn-far").first
            note.wait_for(timeout=30_000)
            said = note.inner_text()
            timing = page.locator(".qcnn-time").inner_text()
        finally:
            browser.close()
    print(f"\nuniform grey frame: {names}\nnote: {said}\n{timing}")
    _check_top5(names)
    assert "nearly uniform" in said and "source: camera" in timing
