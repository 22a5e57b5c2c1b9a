"""The Gradio page of ``mrfa app``: Animate and Reconstruct tabs over :mod:`mrfa.app.jobs`, with progress, Cancel,
a bounded queue (one job per device at a time) and stable API names (``/animate``, ``/reconstruct``).

Safe by default: it binds 127.0.0.1, never opens a public share link, sends no analytics, names no web font (system
fonts only; Gradio's own assets are served by the page itself), refuses uploads above ``--max-upload-mb`` and videos
above ``--max-frames``, serves no file outside its own upload and result folders, and answers a bad upload with one
sentence in the page while it keeps serving.
"""
from __future__ import annotations

import contextlib
import logging
import os
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Optional

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # before gradio is imported

import gradio as gr  # noqa: E402
import numpy as np  # noqa: E402

from mrfa.app.jobs import (  # noqa: E402
    ENGINES,
    AnimateSettings,
    Cancelled,
    Job,
    Limits,
    ModelPool,
    animate_job,
    check_upload,
    check_video_length,
    describe_checkpoint,
    progress_text,
    reconstruct_job,
)
from mrfa.media.video import write_image, write_video  # noqa: E402

logger = logging.getLogger(__name__)
LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")
NO_CHECKPOINT = ("**No model loaded.** Start the page with a checkpoint: `mrfa app --checkpoint vox.pth.tar` (the "
                 "official VoxCeleb or CelebV-HQ checkpoints are linked from the README of github.com/JialeTao/MRFA), "
                 "or train the small demo model with `make demo` and use `--checkpoint runs/demo/snapshot.pt`.")


@dataclass
class AppSettings:
    """How the page is served (the options of ``mrfa app``)."""

    checkpoints: list[Path] = field(default_factory=list)
    host: str = "127.0.0.1"
    port: int = 7860
    device: str = "auto"
    max_frames: int = 3000
    max_upload_mb: float = 200.0
    queue_size: int = 8
    auth: Optional[tuple[str, str]] = None
    work_dir: Optional[Path] = None  # results and examples (default: a new temporary folder)
    face_figures: bool = True


def _examples(folder: Path) -> list[list[str]]:
    """A source photo and a driving clip made from scikit-image's public-domain portraits (the synthetic faces of
    the demo dataset): shippable examples, made at start-up."""
    from mrfa.data.synthetic import TEMPLATES, make_identity, render_clip, sample_trajectory

    folder.mkdir(parents=True, exist_ok=True)
    src, drv = folder / "example-source.png", folder / "example-driving.mp4"
    if not (src.is_file() and drv.is_file()):
        rng = np.random.default_rng(7)
        ident = make_identity(TEMPLATES["cameraman"], 256, rng, "example-source")
        write_image(src, render_clip(ident, sample_trajectory(1, 256, rng), 256)[0][0], overwrite=True)
        ident = make_identity(TEMPLATES["astronaut"], 256, rng, "example-driving")
        write_video(drv, render_clip(ident, sample_trajectory(50, 256, rng), 256)[0], fps=25, overwrite=True)
    return [[str(src), str(drv)]]


def upload_path(value: Any, what: str) -> Optional[str]:
    """The local path of an uploaded file as the event receives it without Gradio's preprocessing (a path, a
    FileData dict, or a video dict), refused unless it lies in Gradio's upload folder: a request naming any other
    file of the machine reads nothing.

    Raises:
        ValueError: a path outside the upload folder.
    """
    if isinstance(value, dict) and isinstance(value.get("video"), dict):
        value = value["video"]
    if isinstance(value, dict):
        value = value.get("path")
    if value in (None, ""):
        return None
    path = Path(str(value)).resolve()
    folder = Path(gr.utils.get_upload_folder()).resolve()
    if not path.is_relative_to(folder):
        raise ValueError(f"the {what} must be uploaded through the page")
    return str(path)


def _one_sentence(err: BaseException) -> str:
    lines = [ln.strip() for ln in str(err).splitlines() if ln.strip()]
    text = lines[0] if lines else type(err).__name__
    return text[0].upper() + text[1:] if text else text


class App:
    """The page and its state (models, running jobs, folders)."""

    def __init__(self, settings: AppSettings) -> None:
        self.settings = settings
        self.limits = Limits(max_frames=settings.max_frames, max_upload_mb=settings.max_upload_mb)
        self.work_dir = Path(settings.work_dir or tempfile.mkdtemp(prefix="mrfa-app-"))
        self.results = self.work_dir / "results"
        self.results.mkdir(parents=True, exist_ok=True)
        self.models = ModelPool(device=settings.device)
        self.jobs: dict[str, Job] = {}  # session -> running job
        self._lock = threading.Lock()
        self.checkpoints = {f"{p.name}  ({describe_checkpoint(p)})": p for p in settings.checkpoints}

    # ------------------------------------------------------------------ handlers
    def _checkpoint(self, label: Optional[str]) -> Path:
        if not self.checkpoints:
            raise ValueError("no model is loaded; start mrfa app with --checkpoint (see the note at the top)")
        if label not in self.checkpoints:
            raise ValueError("choose one of the listed checkpoints")
        return self.checkpoints[label]

    @contextlib.contextmanager
    def _job(self, request: Optional[gr.Request]) -> Iterator[Job]:
        """A running job of this page (what Cancel stops); its errors reach the page as one sentence."""
        job = Job()
        key = getattr(request, "session_hash", None) or job.id
        with self._lock:
            self.jobs[key] = job
        try:
            yield job
        except Cancelled:
            raise gr.Error("Cancelled: nothing was written.") from None
        except (ValueError, OSError, RuntimeError) as err:  # VideoReadError and FileNotFoundError included
            raise gr.Error(_one_sentence(err)) from None
        finally:
            with self._lock:
                if self.jobs.get(key) is job:
                    del self.jobs[key]

    def _report(self, progress: gr.Progress):
        def update(job: Job) -> None:
            progress((job.done, job.total), desc=progress_text(job), unit="frames")
        return update

    def animate(self, source: Optional[str], driving: Optional[str], checkpoint: Optional[str], motion: str,
                adapt_scale: bool, crop: bool, paste_back: bool, reference: str, smoothing: float, engine: str,
                side_by_side: bool, request: gr.Request = None,
                progress: gr.Progress = gr.Progress()) -> tuple[str, str, Any]:
        """Animate ``source`` with ``driving``; returns (result video, the same file to download, figures)."""
        with self._job(request) as job:
            src = check_upload(upload_path(source, "source photo"), "source photo", self.limits)
            drv = check_upload(upload_path(driving, "driving video"), "driving video", self.limits)
            job.total = check_video_length(drv, "driving video", self.limits)
            progress((0, job.total), desc="loading the model", unit="frames")
            animator = self.models.get(self._checkpoint(checkpoint), engine)
            settings = AnimateSettings(relative=motion != "absolute", adapt_scale=bool(adapt_scale), crop=bool(crop),
                                       paste_back=bool(paste_back), reference=str(reference or "first"),
                                       smoothing=float(smoothing or 0.0), side_by_side=bool(side_by_side))
            report = animate_job(animator, src, drv, settings, self.results, job, on_progress=self._report(progress),
                                 figures=self.settings.face_figures)
        figures = {"frames": report["frames"], "fps": report["fps"], "audio kept": report["audio"],
                   "seconds": report["seconds"], "face figures": report["figures"]}
        return report["video"], report["video"], figures

    def reconstruct(self, video: Optional[str], checkpoint: Optional[str], engine: str, request: gr.Request = None,
                    progress: gr.Progress = gr.Progress()) -> tuple[str, Any]:
        """Reconstruct ``video`` from its first frame; returns (input | reconstruction video, metrics)."""
        with self._job(request) as job:
            path = check_upload(upload_path(video, "video"), "video", self.limits)
            job.total = check_video_length(path, "video", self.limits)
            progress((0, job.total), desc="loading the model", unit="frames")
            animator = self.models.get(self._checkpoint(checkpoint), engine)
            report = reconstruct_job(animator, path, self.results, job, on_progress=self._report(progress))
        return report["video"], {"frames": report["frames"], **report["metrics"]}

    def cancel(self, request: gr.Request = None) -> None:
        """Stop this page's running job (within one frame); its partial output is deleted."""
        with self._lock:
            job = self.jobs.get(getattr(request, "session_hash", None) or "")
        if job is not None:
            job.stop.set()

    # ------------------------------------------------------------------ page
    def blocks(self) -> gr.Blocks:
        labels = list(self.checkpoints)
        engine_choices = [(f"{name}: {accuracy}", key) for key, (name, accuracy) in ENGINES.items()]
        with gr.Blocks(title="mrfa: animate a portrait", analytics_enabled=False) as page:
            gr.Markdown("# mrfa: animate a portrait with a driving video\nMotion refinement for unsupervised face "
                        "animation (MRFA, NeurIPS 2023). Everything runs on this machine.")
            if not labels:
                gr.Markdown(NO_CHECKPOINT, elem_id="no-checkpoint")
            checkpoint = gr.Dropdown(labels, value=labels[0] if labels else None, label="Model",
                                     info="checkpoints given to mrfa app (an mrfa snapshot, an official file, or an "
                                          "exported ONNX folder)", elem_id="checkpoint")
            engine = gr.Radio(engine_choices, value="exact", label="Engine (accuracy measured against fp32 on the "
                              "official vox256 model)", elem_id="engine")
            with gr.Tab("Animate"):
                with gr.Row():
                    source = gr.Image(type="filepath", sources=["upload", "webcam"], label="Source photo",
                                      elem_id="source")
                    driving = gr.Video(sources=["upload", "webcam"], label="Driving video", elem_id="driving")
                with gr.Row():
                    motion = gr.Radio(["relative", "absolute"], value="relative", label="Motion")
                    adapt_scale = gr.Checkbox(False, label="Adapt scale")
                    crop = gr.Checkbox(False, label="Find and crop the faces")
                    paste_back = gr.Checkbox(False, label="Paste back into the full photo")
                    side_by_side = gr.Checkbox(False, label="Side by side (source | driving | result)")
                with gr.Row():
                    reference = gr.Textbox("first", label="Reference driving frame",
                                           info="'first', 'auto' (closest face to the source) or a frame number")
                    smoothing = gr.Slider(0.0, 5.0, value=0.0, step=0.1, label="Motion smoothing (0 = off)",
                                          info="One-Euro filter cut-off in Hz: lower is smoother, with more lag")
                with gr.Row():
                    run = gr.Button("Animate", variant="primary", elem_id="animate-button")
                    stop = gr.Button("Cancel", variant="stop", elem_id="cancel-button")
                result = gr.Video(label="Result", elem_id="result", autoplay=False)
                download = gr.File(label="Download the mp4", elem_id="download")
                figures = gr.JSON(label="About the result", elem_id="figures")
                examples_dir = self.work_dir / "examples"
                try:
                    gr.Examples(_examples(examples_dir), inputs=[source, driving], label="Example (synthetic faces)")
                except (OSError, ValueError) as err:  # examples are a convenience; the page works without them
                    logger.warning("no examples: %s", err)
                event = run.click(self.animate, inputs=[source, driving, checkpoint, motion, adapt_scale, crop,
                                                        paste_back, reference, smoothing, engine, side_by_side],
                                  outputs=[result, download, figures], api_name="animate",
                                  preprocess=False)  # uploads are checked here, with one sentence for a bad one
                stop.click(self.cancel, inputs=None, outputs=None, cancels=[event], api_name="cancel_animate",
                           queue=False)
            with gr.Tab("Reconstruct"):
                video = gr.Video(sources=["upload"], label="Video (its first frame drives the rest)",
                                 elem_id="recon-input")
                with gr.Row():
                    recon_run = gr.Button("Reconstruct", variant="primary", elem_id="reconstruct-button")
                    recon_stop = gr.Button("Cancel", variant="stop", elem_id="reconstruct-cancel")
                recon_video = gr.Video(label="Input | reconstruction", elem_id="recon-result")
                recon_metrics = gr.JSON(label="L1, PSNR, SSIM, LPIPS", elem_id="recon-metrics")
                recon_event = recon_run.click(self.reconstruct, inputs=[video, checkpoint, engine],
                                              outputs=[recon_video, recon_metrics], api_name="reconstruct",
                                              preprocess=False)
                recon_stop.click(self.cancel, inputs=None, outputs=None, cancels=[recon_event],
                                 api_name="cancel_reconstruct", queue=False)
        return page

    def launch(self, *, block: bool = True) -> Any:
        """Serve the page (queue: one job at a time, at most ``queue_size`` waiting)."""
        s = self.settings
        if s.host not in LOCAL_HOSTS and s.auth is None:
            logger.warning("serving on %s makes the page reachable from other machines; protect it with "
                           "--auth USER:PASSWORD", s.host)
        theme = gr.themes.Default(font=["ui-sans-serif", "system-ui", "sans-serif"],
                                  font_mono=["ui-monospace", "monospace"])
        page = self.blocks()
        page.queue(default_concurrency_limit=1, max_size=s.queue_size)
        return page.launch(server_name=s.host, server_port=s.port, share=False, auth=s.auth,
                           max_file_size=f"{s.max_upload_mb:g}mb", prevent_thread_lock=not block, quiet=True,
                           footer_links=["api"], theme=theme, show_error=True, allowed_paths=[],
                           blocked_paths=[], mcp_server=False, pwa=False, ssr_mode=False)
