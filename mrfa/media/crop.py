"""VoxCeleb-style square face crops for images and videos (the ``mrfa crop`` command is
:mod:`mrfa.commands.crop`).

Not a paper box: this is the data front end that makes user inputs look like MRFA's training data
(VoxCeleb-256, ``video-preprocessing/crop_vox.py``): the union of the face boxes over a clip,
enlarged aspect-preserving by ``increase`` (0.1) per side, which yields a square of side
``(1 + 2 * increase) * max(w, h)`` around the union centre, cropped and resized to 256 with
anti-aliasing. The original drops clips whose box leaves the frame; here the box is shifted,
shrunk or padded instead (``border`` of :func:`fit_box`), and :func:`apply_crop` pads explicitly.
"""
from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Literal

import numpy as np

from .convert import to_rgb_uint8
from .face import FaceDetection, FaceDetector, NoFaceError, box_iou, choose_detector, iou_matrix
from .video import pre_reduce

logger = logging.getLogger(__name__)

BorderMode = Literal["fit", "shift", "pad"]
PadMode = Literal["edge", "constant"]


@dataclass(frozen=True)
class CropBox:
    """A square crop box in frame pixels; it may extend past the frame (then it is padded).

    Attributes:
        x0: left column (inclusive), may be negative.
        y0: top row (inclusive), may be negative.
        side: side length in pixels (> 0).
    """

    x0: int
    y0: int
    side: int

    def __post_init__(self) -> None:
        if self.side <= 0:
            raise ValueError(f"crop box side must be positive, got {self.side}.")

    @property
    def x1(self) -> int:
        """Right column, exclusive."""
        return self.x0 + self.side

    @property
    def y1(self) -> int:
        """Bottom row, exclusive."""
        return self.y0 + self.side

    def inside(self, height: int, width: int) -> bool:
        """Whether the box lies entirely inside a ``height x width`` frame."""
        return self.x0 >= 0 and self.y0 >= 0 and self.x1 <= width and self.y1 <= height

    def to_dict(self) -> dict[str, int]:
        """``{"x0", "y0", "side"}`` for JSON."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, int]) -> CropBox:
        """Inverse of :meth:`to_dict` (extra keys are ignored)."""
        return cls(x0=int(d["x0"]), y0=int(d["y0"]), side=int(d["side"]))


def union_boxes(boxes: np.ndarray) -> np.ndarray:
    """Smallest box containing all boxes.

    Args:
        boxes: ``[N, 4]`` ``(x0, y0, x1, y1)``, N >= 1.

    Returns:
        ``[4]`` ``(x0, y0, x1, y1)``.
    """
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    if len(boxes) == 0:
        raise ValueError("union_boxes needs at least one box.")
    return np.concatenate([boxes[:, :2].min(axis=0), boxes[:, 2:].max(axis=0)])


def enlarge_to_square(box: np.ndarray, increase: float = 0.1) -> tuple[float, float, float]:
    """VoxCeleb aspect-preserving enlargement, which yields a square.

    Each side grows by at least ``increase`` of its length, and the shorter dimension grows until it
    matches the longer one, so the result is the square of side ``(1 + 2 * increase) * max(w, h)``
    centred on the box.

    Args:
        box: ``[4]`` ``(x0, y0, x1, y1)``.
        increase: relative growth per side (0.1 in video-preprocessing).

    Returns:
        ``(cx, cy, side)`` in float pixels.
    """
    if increase < 0:
        raise ValueError(f"increase must be >= 0, got {increase}.")
    x0, y0, x1, y1 = (float(v) for v in box)
    w, h = x1 - x0, y1 - y0
    if w <= 0 or h <= 0:
        raise ValueError(f"box {tuple(box)} has no area.")
    return (x0 + x1) / 2.0, (y0 + y1) / 2.0, (1.0 + 2.0 * increase) * max(w, h)


def fit_box(cx: float, cy: float, side: float, height: int, width: int, border: BorderMode = "fit") -> CropBox:
    """Round a square to integer pixels and handle the frame border.

    Args:
        cx, cy, side: square centre and side in float pixels.
        height, width: frame size.
        border: ``"fit"`` (default) never pads: the square is shrunk to at most ``min(height, width)``
            (the face then looks a little larger than in VoxCeleb) and shifted inside the frame;
            ``"shift"`` keeps the size, shifts the square inside the frame along each axis where it
            fits and centres it on the frame where it does not (that part is padded);
            ``"pad"`` keeps the square centred on the face and pads whatever leaves the frame.
    """
    if border not in ("fit", "shift", "pad"):
        raise ValueError(f"border must be 'fit', 'shift' or 'pad', got {border!r}.")
    if border == "fit":
        side = min(side, height, width)
    s = max(1, int(round(side)))
    x0 = int(round(cx - s / 2.0))
    y0 = int(round(cy - s / 2.0))
    if border != "pad":
        x0 = min(max(x0, 0), width - s) if s <= width else (width - s) // 2
        y0 = min(max(y0, 0), height - s) if s <= height else (height - s) // 2
    return CropBox(x0=x0, y0=y0, side=s)


def crop_box_from_faces(face_boxes: np.ndarray, height: int, width: int, *, increase: float = 0.1,
                        border: BorderMode = "fit") -> CropBox:
    """Crop box from face boxes: union, VoxCeleb enlargement to a square, border handling.

    Args:
        face_boxes: ``[N, 4]`` Vox face boxes ``(x0, y0, x1, y1)`` (one per frame, or one for an image).
        height, width: frame size.
        increase: VoxCeleb enlargement per side.
        border: see :func:`fit_box`.
    """
    cx, cy, side = enlarge_to_square(union_boxes(face_boxes), increase)
    return fit_box(cx, cy, side, height, width, border)


def crop_box_for_image(img: np.ndarray, *, detector: FaceDetector | None = None, increase: float = 0.1,
                       border: BorderMode = "fit", name: str = "the image") -> CropBox:
    """Crop box for one image: the best face, enlarged to a VoxCeleb-style square.

    Args:
        img: ``[H, W, 3]`` RGB image.
        detector: a face detector; None builds ``choose_detector("auto")``.
        increase: VoxCeleb enlargement per side.
        border: see :func:`fit_box`.
        name: what to call the image in the error message (e.g. its path).

    Raises:
        NoFaceError: no face was found.
    """
    det = detector if detector is not None else choose_detector("auto")
    rgb = to_rgb_uint8(img)
    faces = det.detect(rgb)
    if not faces:
        raise NoFaceError(f"no face was found in {name}.")
    return crop_box_from_faces(faces[0].box[None], rgb.shape[0], rgb.shape[1], increase=increase, border=border)


def _anchor_frame(per_frame: list[list[FaceDetection]], min_iou: float, max_candidates: int = 256) -> int:
    """Frame index of the most persistent per-frame best detection, or -1 when there is none."""
    all_boxes = np.array([d.box for dets in per_frame for d in dets], dtype=np.float64)
    all_boxes = all_boxes.reshape(-1, 4)  # [D, 4]
    if len(all_boxes) == 0:
        return -1
    frame_of = np.array([t for t, dets in enumerate(per_frame) for _ in dets])  # [D]
    cand_t = np.array([t for t, dets in enumerate(per_frame) if dets])
    cand_t = cand_t[np.unique(np.linspace(0, len(cand_t) - 1, min(len(cand_t), max_candidates)).astype(int))]
    cand = np.stack([per_frame[t][0].box for t in cand_t])  # [C, 4]
    iou = iou_matrix(cand, all_boxes)  # [C, D]
    support = [len(np.unique(frame_of[row > min_iou])) for row in iou]  # frames supporting each candidate
    best = max(range(len(cand_t)), key=lambda i: (support[i], per_frame[cand_t[i]][0].score))
    return int(cand_t[best])


def track_face_boxes(per_frame: list[list[FaceDetection]], *, min_iou: float = 0.2,
                     smooth: int = 5) -> np.ndarray:
    """Follow one face through a clip and smooth its boxes over time.

    The anchor is the most persistent face: the per-frame best detection that overlaps detections in
    the largest number of frames (ties broken by score), so a strong one-frame false positive cannot
    win. From the anchor frame the track is extended forwards and backwards: in each frame the
    detection overlapping the last tracked box most (IoU > ``min_iou``) is taken, other faces and
    detector false positives are ignored, and a frame without a match is skipped (the track keeps
    its last box, so gradual zooms and moves are followed). The tracked boxes are then smoothed with
    a running median over ``smooth`` analysed frames, which removes one-frame spikes (a mis-fitted
    landmark set, a wide-open mouth).

    Args:
        per_frame: detections for each analysed frame (best first).
        min_iou: minimum overlap with the previous tracked box.
        smooth: running-median window (1 disables smoothing).

    Returns:
        ``[M, 4]`` tracked Vox face boxes in frame order, M <= number of frames with a face.
    """
    anchor_t = _anchor_frame(per_frame, min_iou)
    if anchor_t < 0:
        return np.zeros((0, 4))
    track: dict[int, np.ndarray] = {anchor_t: per_frame[anchor_t][0].box}
    for order in (range(anchor_t + 1, len(per_frame)), range(anchor_t - 1, -1, -1)):
        last = track[anchor_t]
        for t in order:
            overlaps = [(box_iou(d.box, last), i) for i, d in enumerate(per_frame[t])]
            overlaps = [o for o in overlaps if o[0] > min_iou]
            if overlaps:
                last = per_frame[t][max(overlaps)[1]].box
                track[t] = last
    boxes = np.array([track[t] for t in sorted(track)], dtype=np.float64)  # [M, 4]
    if smooth > 1 and len(boxes) > 2:
        half = smooth // 2
        padded = np.pad(boxes, ((half, half), (0, 0)), mode="edge")  # [M + 2 * half, 4]
        windows = np.stack([padded[i:i + len(boxes)] for i in range(2 * half + 1)])  # [W, M, 4]
        boxes = np.median(windows, axis=0)
    return boxes


def crop_box_for_video(frames: Iterable[np.ndarray], *, detector: FaceDetector | None = None,
                       increase: float = 0.1, border: BorderMode = "fit", stride: int = 1,
                       name: str = "the video") -> CropBox:
    """One crop box for a whole clip: union of the tracked face boxes, VoxCeleb-enlarged.

    Frames are consumed one at a time (a lazy video reader is fine). The per-frame face box is
    calibrated on single VoxCeleb frames, whose scale already includes VoxCeleb's own union, so for
    clips with large head motion the crop is looser than VoxCeleb's (up to 1.34x the frame side
    on the FOMM demo clips); ``border="fit"`` caps it at the frame.

    Args:
        frames: iterable of ``[H, W, 3]`` RGB frames, all the same size.
        detector: a face detector; None builds ``choose_detector("auto")``.
        increase: VoxCeleb enlargement per side.
        border: see :func:`fit_box`.
        stride: run the detector on every ``stride``-th frame (frame 0 always).
        name: what to call the clip in the error message.

    Raises:
        NoFaceError: no face was found in any analysed frame.
    """
    if stride < 1:
        raise ValueError(f"stride must be >= 1, got {stride}.")
    det = detector if detector is not None else choose_detector("auto")
    shape: tuple[int, int] | None = None
    per_frame: list[list[FaceDetection]] = []
    for i, frame in enumerate(frames):
        if shape is None:
            shape = frame.shape[:2]
        elif frame.shape[:2] != shape:
            raise ValueError(f"frame {i} of {name} has size {frame.shape[:2]}, expected {shape}.")
        if i % stride == 0:
            per_frame.append(det.detect(frame))
    if shape is None:
        raise ValueError(f"{name} has no frames.")
    boxes = track_face_boxes(per_frame)
    if len(boxes) == 0:
        raise NoFaceError(f"no face was found in {name}.")
    logger.info("%s: face in %d of %d analysed frames", name, len(boxes), len(per_frame))
    return crop_box_from_faces(boxes, shape[0], shape[1], increase=increase, border=border)


def apply_crop(frame: np.ndarray, box: CropBox, size: int = 256, *, pad_mode: PadMode = "edge") -> np.ndarray:
    """Cut the box out of a frame (padding where it leaves the frame) and resize to ``size``.

    Resizing follows video-preprocessing: ``skimage.transform.resize`` with anti-aliasing.

    Args:
        frame: ``[H, W, 3]`` RGB (uint8 or float in [0, 1]).
        box: the square crop box.
        size: output side.
        pad_mode: ``"edge"`` repeats the border pixels, ``"constant"`` pads with black.

    Returns:
        ``[size, size, 3]`` uint8.
    """
    from skimage.transform import resize

    if pad_mode not in ("edge", "constant"):
        raise ValueError(f"pad_mode must be 'edge' or 'constant', got {pad_mode!r}.")
    if size < 1:
        raise ValueError(f"crop size must be positive, got {size}.")
    rgb = to_rgb_uint8(frame)  # [H, W, 3]
    h, w = rgb.shape[:2]
    ix0, iy0 = max(box.x0, 0), max(box.y0, 0)
    ix1, iy1 = min(box.x1, w), min(box.y1, h)
    if ix0 >= ix1 or iy0 >= iy1:
        raise ValueError(f"crop box {box} does not overlap the {w}x{h} frame.")
    patch = rgb[iy0:iy1, ix0:ix1]
    pads = ((iy0 - box.y0, box.y1 - iy1), (ix0 - box.x0, box.x1 - ix1), (0, 0))
    if any(p for ax in pads for p in ax):
        patch = np.pad(patch, pads, mode=pad_mode)  # [side, side, 3]
    if box.side == size:
        return np.ascontiguousarray(patch)
    patch = pre_reduce(patch, size, size)  # only for crops >= 16x the output (huge photos)
    out = resize(patch, (size, size), order=1, anti_aliasing=patch.shape[0] > size, preserve_range=True)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)
