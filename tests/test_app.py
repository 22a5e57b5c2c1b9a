"""``mrfa app``: a live server on 127.0.0.1 driven by gradio_client and by Debian's Chromium through Playwright.

On the tiny model and short generated clips: the API returns an mp4 with the driving clip's frame count and frame
rate and the reconstruction metrics; in the browser, the progress shows, the result plays, the download holds
every frame, every request stays on 127.0.0.1, Cancel leaves no file, two pages are queued and both finish, and a
bad upload is one sentence while the next job works. Screenshots go to ``$MRFA_APP_SCREENSHOTS`` when it is set.
"""
from __future__ import annotations

import importlib.util
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch

import mrfa
from mrfa.config import load_config
from mrfa.media.video import video_info, write_image, write_video

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = Path("/usr/bin/chromium")
HAVE_GRADIO = importlib.util.find_spec("gradio") is not None
pytestmark = pytest.mark.skipif(not HAVE_GRADIO, reason="the app extra (gradio) is not installed")
CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-sync",
                  "--disable-background-networking", "--disable-component-update"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _clip(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:64, 0:64]
    base = np.stack([xx * 4, yy * 4, np.full_like(xx, 128)], -1).astype(np.float64)
    return np.stack([np.clip(base + 20 * np.sin(t / 5) + rng.normal(0, 2, base.shape), 0, 255)
                     for t in range(n)]).astype(np.uint8)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    d = tmp_path_factory.mktemp("app")
    torch.manual_seed(0)
    cfg = load_config(ROOT / "configs" / "tiny.yaml")
    ckpt = d / "tiny.pt"
    mrfa.save_snapshot(ckpt, mrfa.build_model(cfg), cfg)
    files = {"ckpt": ckpt, "src": d / "source.png", "short": d / "short.mp4", "long": d / "long.mp4",
             "text": d / "notes.png", "work": d / "work"}
    write_image(files["src"], _clip(1, 5)[0])
    write_video(files["short"], _clip(12), fps=10)
    write_video(files["long"], _clip(300, 1), fps=25)
    files["longer"] = d / "longer.mp4"  # long enough that Cancel lands mid-run even on a fast, idle machine
    write_video(files["longer"], _clip(6000, 2), fps=25)
    files["text"].write_text("this is not a picture")
    port = _free_port()
    log = open(d / "server.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "mrfa", "app", "--checkpoint", str(ckpt), "--port", str(port),
                             "--device", "cpu", "--max-frames", "8000", "--max-upload-mb", "20", "--work-dir",
                             str(files["work"]), "--no-face-figures"], cwd=d, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            urllib.request.urlopen(url, timeout=2)
            break
        except OSError:
            if proc.poll() is not None:
                pytest.fail(f"mrfa app exited: {(d / 'server.log').read_text()[-2000:]}")
            time.sleep(0.5)
    else:
        proc.kill()
        pytest.fail("mrfa app did not start within 120 s")
    yield url, files
    proc.terminate()
    proc.wait(timeout=30)


def _results(files: dict[str, Path]) -> list[str]:
    folder = files["work"] / "results"
    return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []


# ------------------------------------------------------------------------------------------ the API
def test_api_animate_and_reconstruct(server) -> None:
    from gradio_client import Client, handle_file

    url, files = server
    client = Client(url, verbose=False)
    video, download, figures = client.predict(source=handle_file(str(files["src"])),
                                              driving=handle_file(str(files["short"])), api_name="/animate")
    info = video_info(video)
    assert info.num_frames == 12 and info.fps == 10.0
    assert figures["frames"] == 12 and Path(download).is_file()
    recon, metrics = client.predict(video=handle_file(str(files["short"])), api_name="/reconstruct")
    assert video_info(recon).num_frames == 12
    assert {"l1", "psnr", "ssim"} <= set(metrics) and 0 <= metrics["l1"] <= 1


def test_api_bad_upload_is_one_sentence_and_the_server_keeps_serving(server) -> None:
    from gradio_client import Client, handle_file
    from gradio_client.exceptions import AppError

    url, files = server
    client = Client(url, verbose=False)
    with pytest.raises(AppError) as err:
        client.predict(source=handle_file(str(files["text"])), driving=handle_file(str(files["short"])),
                       api_name="/animate")
    message = str(err.value)
    assert "Traceback" not in message and "notes.png" in message and len(message.splitlines()) == 1
    video, _, _ = client.predict(source=handle_file(str(files["src"])), driving=handle_file(str(files["short"])),
                                 api_name="/animate")
    assert video_info(video).num_frames == 12


def test_no_file_outside_the_upload_area_is_served(server) -> None:
    url, files = server
    for target in ("/etc/passwd", str(files["ckpt"]), str(files["src"])):
        req = urllib.request.Request(f"{url}gradio_api/file={target}")
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(req, timeout=10)
        assert err.value.code in (403, 404), target


# ------------------------------------------------------------------------------------------ the browser
@pytest.fixture(scope="module")
def browser():
    if importlib.util.find_spec("playwright") is None:
        pytest.skip("playwright is not installed (pip install playwright; the browser is Debian's chromium)")
    if not CHROMIUM.is_file():
        pytest.skip("Debian's chromium is not installed (apt-get install -y chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_FLAGS)
        yield b
        b.close()


def _page(browser, url: str, outside: list[str]):
    context = browser.new_context(accept_downloads=True, viewport={"width": 1280, "height": 1400})
    page = context.new_page()

    def route(r) -> None:
        host = r.request.url.split("/")[2] if "://" in r.request.url else ""
        if r.request.url.startswith(("data:", "blob:")) or host.split(":")[0] == "127.0.0.1":
            r.continue_()
        else:
            outside.append(r.request.url)
            r.abort()

    page.route("**/*", route)
    page.goto(url, wait_until="networkidle")
    return page


def _upload(page, files: dict[str, Path], source: str, driving: str) -> None:
    page.locator("#source input[type=file]").set_input_files(str(files[source]))
    page.locator("#driving input[type=file]").set_input_files(str(files[driving]))
    page.locator("#driving video").first.wait_for(timeout=30_000)


def _wait_text(page, pattern: str, timeout: float) -> float:
    """Poll the page's text for a regular expression; returns the seconds it took (fails after ``timeout``)."""
    import re

    start = time.perf_counter()
    while time.perf_counter() - start < timeout:
        if re.search(pattern, page.inner_text("body")):
            return time.perf_counter() - start
        time.sleep(0.1)
    pytest.fail(f"no text matching {pattern!r} within {timeout} s")


def _shot(page, name: str) -> None:
    folder = os.environ.get("MRFA_APP_SCREENSHOTS")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(Path(folder) / name), full_page=True, type="jpeg", quality=70)


def test_browser_animate_progress_play_download_local_only(server, browser, tmp_path: Path) -> None:
    url, files = server
    outside: list[str] = []
    page = _page(browser, url, outside)
    start = time.perf_counter()
    page.wait_for_selector("#animate-button", timeout=30_000)
    load_s = time.perf_counter() - start
    _shot(page, "app-before.jpg")
    _upload(page, files, "src", "long")
    page.click("#animate-button")
    first_frame_s = _wait_text(page, r"[1-9]\d* ?/ ?300 frames", 60)  # click to the first rendered frame
    _wait_text(page, r"\d+ / 300 frames, about \d+ s left", 60)
    _shot(page, "app-progress.jpg")
    page.locator("#result video").wait_for(timeout=180_000)
    playing = page.evaluate("""async () => {
        const v = document.querySelector('#result video');
        v.muted = true; await v.play();
        await new Promise(r => setTimeout(r, 1200));
        return v.currentTime > 0 && v.readyState >= 2;
    }""")
    _shot(page, "app-after.jpg")
    with page.expect_download(timeout=60_000) as dl:
        page.locator("#download a").first.click()
    saved = tmp_path / "download.mp4"
    dl.value.save_as(saved)
    assert playing, "the result video does not play"
    assert video_info(saved).num_frames == 300
    assert outside == [], outside
    print(f"page load {load_s:.2f} s, click to first frame {first_frame_s:.2f} s")


def test_browser_cancel_leaves_no_output(server, browser) -> None:
    url, files = server
    before = _results(files)
    outside: list[str] = []
    page = _page(browser, url, outside)
    _upload(page, files, "src", "longer")
    page.click("#animate-button")
    _wait_text(page, r"[1-9]\d* / 6000 frames", 60)
    page.click("#cancel-button")
    deadline = time.time() + 30
    while time.time() < deadline and (any(".partial-" in n for n in _results(files)) or
                                      len(_results(files)) != len(before)):
        time.sleep(0.5)
    assert _results(files) == before
    assert outside == []


def test_browser_two_pages_are_queued_and_both_finish(server, browser) -> None:
    url, files = server
    outside: list[str] = []
    pages = [_page(browser, url, outside) for _ in range(2)]
    for page in pages:
        _upload(page, files, "src", "short")
    for page in pages:
        page.click("#animate-button")
    for page in pages:
        page.locator("#result video").wait_for(timeout=120_000)
    assert outside == []


def test_browser_bad_upload_then_a_good_job(server, browser) -> None:
    url, files = server
    outside: list[str] = []
    page = _page(browser, url, outside)
    page.locator("#driving input[type=file]").set_input_files(str(files["short"]))
    page.locator("#driving video").first.wait_for(timeout=30_000)
    page.click("#animate-button")  # no photo
    page.get_by_text("Please add the source photo").first.wait_for(timeout=30_000)
    assert page.get_by_text("Traceback").count() == 0
    page.locator("#source input[type=file]").set_input_files(str(files["src"]))  # the video is still there
    page.click("#animate-button")
    page.locator("#result video").wait_for(timeout=120_000)
    assert outside == []


@pytest.mark.skipif(shutil.which("mrfa") is None and not (Path(sys.executable).parent / "mrfa").exists(),
                    reason="the mrfa console script is not installed")
def test_without_gradio_the_command_says_how_to_install(tmp_path: Path) -> None:
    code = ("import importlib.util, sys\nreal = importlib.util.find_spec\n"
            "importlib.util.find_spec = lambda n, *a: None if n == 'gradio' else real(n, *a)\n"
            "from mrfa.cli import main\nsys.exit(main(['app']))\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1 and proc.stderr.strip().splitlines() == [
        "mrfa app: error: mrfa app needs the web-app extra: pip install -e '.[app]' (Gradio, served offline from "
        "this machine)"]
