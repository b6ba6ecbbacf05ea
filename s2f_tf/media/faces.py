"""Images and faces: MTCNN detection, selection near a given centre, canonical alignment.

  load_image(path)                        any JPEG/PNG/... -> uint8 [H, W, 3] RGB (EXIF-rotated)
  detect_faces(frame)                     -> [Face(box, confidence, keypoints [5, 2])], MTCNN on CPU
  select_face(faces, center_xy, ...)      -> the face nearest a given (normalised) centre, or a typed failure
  crop_face(frame, keypoints, box, size)  -> (uint8 [S, S, 3], landmarks float32 [5, 2] in [0, 1])
  face_from_frame(frame, center_xy, size) -> detect_faces -> select_face -> crop_face
  frontality(landmarks)                   -> 0 for an upright frontal face, more when turned or tilted

Detection: the `mtcnn` package (1.0, Keras 3 / TF 2; weights inside the wheel), one detector per
process, created on first use, run on CPU. Keypoints are MTCNN's 5 points in `LANDMARK_NAMES`
order; "left"/"right" are as seen in the image (left_eye has the smaller x on an upright face).
MTCNN 1.0 silently finds nothing when its min_face_size is above 20 (see `detect_faces`), so a
larger minimum face size is implemented by downscaling the frame instead.

Alignment (`crop_face`): a similarity transform (rotation, uniform scale, translation; no shear)
puts the face in a fixed canonical layout, in units of the crop side S:
  - roll: taken from the eye line and the eye->mouth line together (as in FFHQ's alignment), so
    an upright frontal face ends with its eyes exactly horizontal, and a noisy eye pair on a
    turned head does not tilt the crop;
  - scale: the larger of (eye distance / CANONICAL_EYE_DISTANCE, eye-to-mouth distance /
    CANONICAL_EYE_TO_MOUTH), so neither a turned (short eye distance) nor a tilted-down
    (short eye-to-mouth distance) face is blown up;
  - position: the point halfway between the eye midpoint and the mouth midpoint goes to
    (0.5, (CANONICAL_EYE_Y + CANONICAL_MOUTH_Y) / 2).
For an average frontal face this puts the eyes at y = 0.40 (0.30 S apart), the mouth at y = 0.74,
the hairline near the top edge and the chin near y = 0.91: the whole face fills most of the crop,
like VGG-Face crops. Pixels outside the source frame are black. Large downscales are rendered
at an integer multiple of S and box-reduced (no aliasing).

Coordinates: "continuous" pixel coordinates everywhere (pixel column j spans [j, j + 1), its
centre is x = j + 0.5); normalised crop coordinates are continuous / S, so pixel column j has
x = (j + 0.5) / S; x right, y down. MTCNN reports pixel-index coordinates (centre of column j at
x = j); `detect_faces` converts them.
"""

from __future__ import annotations

import dataclasses
import importlib.resources
import math
import threading
from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageOps

from s2f_tf.media.errors import (
    NO_FACE,
    NO_FACE_NEAR_CENTER,
    SEVERAL_FACES,
    UNDECODABLE,
    MediaError,
    require_file,
)

LANDMARK_NAMES = ("left_eye", "right_eye", "nose", "mouth_left", "mouth_right")
NUM_LANDMARKS = len(LANDMARK_NAMES)

# Canonical face layout in the crop, in units of the crop side (see the module docstring).
CANONICAL_EYE_Y = 0.40
CANONICAL_EYE_DISTANCE = 0.30
CANONICAL_MOUTH_Y = 0.74
CANONICAL_EYE_TO_MOUTH = CANONICAL_MOUTH_Y - CANONICAL_EYE_Y
# The five points of an average frontal face in that layout (LANDMARK_NAMES order): the eyes and
# mouth as above, the nose tip halfway down and the mouth 0.83 eye distances wide (the proportions
# of the common 5-point alignment template of face recognition, e.g. ArcFace's 112 px one). The
# face decoder's texture is aligned to this layout for real data (DatasetInfo.mean_landmarks).
CANONICAL_LANDMARKS = (
    (0.5 - CANONICAL_EYE_DISTANCE / 2, CANONICAL_EYE_Y),
    (0.5 + CANONICAL_EYE_DISTANCE / 2, CANONICAL_EYE_Y),
    (0.5, CANONICAL_EYE_Y + 0.5 * CANONICAL_EYE_TO_MOUTH),
    (0.5 - 0.415 * CANONICAL_EYE_DISTANCE, CANONICAL_MOUTH_Y),
    (0.5 + 0.415 * CANONICAL_EYE_DISTANCE, CANONICAL_MOUTH_Y),
)
MAX_SUPERSAMPLE = 4  # render at most 4 S before box-reducing to S


def load_image(path: str) -> np.ndarray:
    """An image file -> uint8 [H, W, 3] RGB, rotated upright by its EXIF orientation.
    Raises MediaError: MISSING_FILE, UNDECODABLE."""
    path = require_file(path)
    try:
        with Image.open(path) as im:
            im = ImageOps.exif_transpose(im)
            return np.asarray(im.convert("RGB"))  # [H, W, 3]
    except Exception as e:  # noqa: BLE001
        raise MediaError(
            UNDECODABLE, f"{path}: not a readable image ({type(e).__name__}: {e})"
        ) from None


@dataclasses.dataclass(frozen=True)
class Face:
    """One detected face, in continuous pixel coordinates of the frame it was detected in."""

    box: np.ndarray  # float32 [4]: x1, y1, x2, y2
    confidence: float
    keypoints: np.ndarray  # float32 [5, 2]: (x, y) in LANDMARK_NAMES order

    @property
    def center(self) -> np.ndarray:
        return np.array(
            [(self.box[0] + self.box[2]) / 2, (self.box[1] + self.box[3]) / 2], np.float32
        )

    @property
    def size(self) -> float:
        """Geometric mean of the box's width and height, in pixels."""
        return float(
            math.sqrt(max(self.box[2] - self.box[0], 1e-6) * max(self.box[3] - self.box[1], 1e-6))
        )


_detector = None
_detector_lock = threading.Lock()


def _get_detector():
    """The process's one MTCNN detector (created on first use; weights from the mtcnn wheel)."""
    global _detector
    with _detector_lock:
        if _detector is None:
            # Imported here, on first use: mtcnn imports TensorFlow and Keras (seconds, and memory), which
            # nothing else in s2f_tf.media needs.
            from mtcnn import MTCNN
            from mtcnn.stages import StageONet, StagePNet, StageRNet

            weights = importlib.resources.files("mtcnn.assets.weights")
            # Absolute weight paths: mtcnn otherwise prefers a same-named file in the working directory.
            stages = [
                StagePNet(weights=str(weights / "pnet.lz4")),
                StageRNet(weights=str(weights / "rnet.lz4")),
                StageONet(weights=str(weights / "onet.lz4")),
            ]
            _detector = MTCNN(stages=stages, device="CPU:0")
        return _detector


# MTCNN 1.0's image pyramid is only valid for min_face_size <= 20: its number of scales ignores
# min_face_size, so a larger value adds scales below PNet's 12 px input, the network raises, and
# mtcnn's catch-all turns that into "no faces" (silently). Larger minimum sizes are therefore done
# here by downscaling the image (which is what the first pyramid level would do anyway).
_MTCNN_MIN_FACE = 20
_MTCNN_MIN_IMAGE = 24


def detect_faces(
    frame: np.ndarray,
    min_face_size: int = 20,
    max_side: int | None = None,
    pad_fraction: float = 0.0,
) -> list[Face]:
    """All faces MTCNN finds in an RGB frame, most confident first.

    Args:
      frame: uint8 [H, W, 3] RGB.
      min_face_size: smallest face side searched for, in pixels of `frame`; larger is faster
        (detection runs on a copy downscaled by min(1, 20 / min_face_size)).
      max_side: if the frame's longer side exceeds this, detect on a copy downscaled to it (much
        faster on HD frames).
      pad_fraction: pad each side by this fraction of the frame (black) before detecting; helps
        MTCNN on tight face crops whose face touches the border.
    Returns:
      [Face] in `frame`'s continuous pixel coordinates (boxes and keypoints are mapped back from the
      downscaled/padded copy).
    """
    frame = np.asarray(frame)
    if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
        raise ValueError(f"frame must be uint8 [H, W, 3], got {frame.dtype} {frame.shape}")
    if min_face_size < 1:
        raise ValueError(f"min_face_size must be >= 1, got {min_face_size}")
    image, scale = frame, min(1.0, _MTCNN_MIN_FACE / min_face_size)
    if max_side is not None:
        scale = min(scale, max_side / max(frame.shape[:2]))
    if scale < 1.0:
        size = (max(1, round(frame.shape[1] * scale)), max(1, round(frame.shape[0] * scale)))
        image = np.asarray(Image.fromarray(frame).resize(size, Image.Resampling.BOX))  # [h, w, 3]
        scale = image.shape[1] / frame.shape[1]
    pad = 0
    if pad_fraction > 0:
        pad = int(round(pad_fraction * max(image.shape[:2])))
        image = np.pad(image, ((pad, pad), (pad, pad), (0, 0)))
    if min(image.shape[:2]) < _MTCNN_MIN_IMAGE:
        return []
    mtcnn_min_face = int(min(max(round(min_face_size * scale), 12), _MTCNN_MIN_FACE))
    detector = _get_detector()
    with _detector_lock:
        rows = detector.detect_faces(
            image, min_face_size=mtcnn_min_face, box_format="xyxy", output_type="numpy"
        )  # [n, 16]
    rows = np.asarray(rows, np.float64)
    if rows.ndim != 2 or rows.shape[0] == 0 or rows.shape[1] < 16:
        return []
    faces = []
    for r in rows:
        # MTCNN row: [image, x1, y1, x2, y2, confidence, x of the 5 keypoints, y of the 5 keypoints];
        # pixel-index coordinates -> continuous (+0.5), unpad, unscale.
        box = (r[1:5] + 0.5 - pad) / scale
        keypoints = (np.stack([r[6:11], r[11:16]], axis=1) + 0.5 - pad) / scale  # [5, 2]
        faces.append(
            Face(
                box=box.astype(np.float32),
                confidence=float(r[5]),
                keypoints=keypoints.astype(np.float32),
            )
        )
    faces.sort(key=lambda f: -f.confidence)
    return faces


def select_face(
    faces: Sequence[Face],
    center_xy: Sequence[float],
    frame_hw: Sequence[int],
    max_center_distance: float = 0.75,
    ambiguity_margin: float = 0.25,
    min_confidence: float = 0.9,
) -> Face:
    """The face nearest a given centre, or a typed failure.

    Distances are from `center_xy` to each face's box centre, in units of that face's size (so
    0.5 is roughly "on the face's edge").
    Args:
      faces: detections in the frame's pixel coordinates.
      center_xy: (x, y) normalised to [0, 1] of the frame (x right, y down), e.g. AVSpeech's
        face centre, or (0.5, 0.5) for a photo.
      frame_hw: (height, width) of the frame the detections refer to.
      max_center_distance: the nearest face must be at most this far from the centre.
      ambiguity_margin: if a second face is also within `max_center_distance` and less than this
        much farther than the nearest, the choice is ambiguous.
      min_confidence: detections below this MTCNN confidence are ignored.
    Raises MediaError: NO_FACE (no confident face at all), NO_FACE_NEAR_CENTER (the nearest one is
    too far), SEVERAL_FACES (two faces about equally near the centre).
    """
    h, w = int(frame_hw[0]), int(frame_hw[1])
    candidates = [f for f in faces if f.confidence >= min_confidence]
    if not candidates:
        best = max((f.confidence for f in faces), default=None)
        raise MediaError(
            NO_FACE,
            "no face detected"
            if best is None
            else f"no face with confidence >= {min_confidence} (best {best:.3f})",
        )
    point = np.array([center_xy[0] * w, center_xy[1] * h], np.float32)
    dist = np.array([np.linalg.norm(f.center - point) / f.size for f in candidates])
    order = np.argsort(dist, kind="stable")
    nearest = candidates[order[0]]
    d0 = float(dist[order[0]])
    if d0 > max_center_distance:
        raise MediaError(
            NO_FACE_NEAR_CENTER,
            f"{len(candidates)} face(s), the nearest is {d0:.2f} face sizes from the centre "
            f"({center_xy[0]:.3f}, {center_xy[1]:.3f}) (> {max_center_distance})",
        )
    if len(order) > 1:
        d1 = float(dist[order[1]])
        if d1 <= max_center_distance and d1 - d0 < ambiguity_margin:
            raise MediaError(
                SEVERAL_FACES,
                f"two faces about equally near the centre ({d0:.2f} and {d1:.2f} "
                f"face sizes; margin {ambiguity_margin})",
            )
    return nearest


def alignment(
    keypoints: np.ndarray, image_size: int
) -> tuple[float, float, np.ndarray, np.ndarray]:
    """The similarity transform of `crop_face`: (scale, angle, source anchor, crop anchor).

    A normalised crop point u (in [0, 1]^2) comes from the source point
      p = src_anchor + scale * R(angle) @ (u - crop_anchor)
    (continuous pixel coordinates; `scale` in source pixels per crop side).
    """
    del image_size  # the transform is in normalised crop units; the size only sets the sampling
    kp = np.asarray(keypoints, np.float64)  # [5, 2]
    eye_l, eye_r, mouth_l, mouth_r = kp[0], kp[1], kp[3], kp[4]
    eye_mid, mouth_mid = (eye_l + eye_r) / 2, (mouth_l + mouth_r) / 2
    eye_to_eye, eye_to_mouth = eye_r - eye_l, mouth_mid - eye_mid
    # Roll: the eye line, plus the eye->mouth line turned by -90 degrees (both point "right" on an
    # upright face); their sum weighs each by its length.
    direction = eye_to_eye + np.array([eye_to_mouth[1], -eye_to_mouth[0]])
    angle = float(math.atan2(direction[1], direction[0]))
    scale = max(
        float(np.linalg.norm(eye_to_eye)) / CANONICAL_EYE_DISTANCE,
        float(np.linalg.norm(eye_to_mouth)) / CANONICAL_EYE_TO_MOUTH,
        1e-3,
    )
    src_anchor = (eye_mid + mouth_mid) / 2
    crop_anchor = np.array([0.5, (CANONICAL_EYE_Y + CANONICAL_MOUTH_Y) / 2])
    return scale, angle, src_anchor, crop_anchor


def frontality(landmarks: np.ndarray) -> float:
    """How far a face is from frontal and upright, from its 5 points (`LANDMARK_NAMES` order, any
    frame): 0 for an upright frontal face; larger when the head turns (the nose leaves the line
    between the eye and mouth midpoints), rolls (the eyes are not level) or tips (the nose leaves the
    middle height between eyes and mouth). In eye distances; used to pick a speaker's best face."""
    kp = np.asarray(landmarks, np.float64)  # [5, 2]
    eye_l, eye_r, nose, mouth_l, mouth_r = kp
    eye_mid, mouth_mid = (eye_l + eye_r) / 2, (mouth_l + mouth_r) / 2
    eye_distance = max(float(np.linalg.norm(eye_r - eye_l)), 1e-6)
    axis = mouth_mid - eye_mid  # down the face
    length = max(float(np.linalg.norm(axis)), 1e-6)
    along = float(np.dot(nose - eye_mid, axis)) / length**2  # 0.5 when level
    offset = nose - eye_mid
    across = float(axis[0] * offset[1] - axis[1] * offset[0]) / length  # signed, in pixels
    roll = abs(float(eye_r[1] - eye_l[1])) / eye_distance
    return abs(across) / eye_distance + roll + 0.5 * abs(along - 0.5)


def crop_face(
    frame: np.ndarray, keypoints: np.ndarray, box: np.ndarray | None, image_size: int
) -> tuple[np.ndarray, np.ndarray]:
    """Similarity-aligns a face into the canonical layout (module docstring) and resizes it.

    Args:
      frame: uint8 [H, W, 3] RGB.
      keypoints: float [5, 2] (x, y) continuous pixel coordinates, `LANDMARK_NAMES` order.
      box: the detection box [4] (x1, y1, x2, y2); unused by the alignment (kept for callers that
        want to fall back to it), may be None.
      image_size: side S of the output crop.
    Returns:
      (uint8 [S, S, 3] crop, float32 [5, 2] keypoints in the crop, (x, y) normalised to [0, 1]).
    """
    del box
    frame = np.asarray(frame)
    if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
        raise ValueError(f"frame must be uint8 [H, W, 3], got {frame.dtype} {frame.shape}")
    if image_size < 8:
        raise ValueError(f"image_size must be >= 8, got {image_size}")
    scale, angle, src_anchor, crop_anchor = alignment(keypoints, image_size)
    c, s = math.cos(angle), math.sin(angle)
    rot = np.array([[c, -s], [s, c]])
    # Render at k * S (k = source pixels per output pixel, capped) and box-reduce, against aliasing.
    k = int(min(max(math.floor(scale / image_size), 1), MAX_SUPERSAMPLE))
    render = image_size * k
    # Output pixel (continuous q, in [0, render)) -> u = q / render -> source p.
    linear = rot * (scale / render)  # [2, 2]
    offset = src_anchor - scale * rot @ crop_anchor  # [2]
    coeffs = (linear[0, 0], linear[0, 1], offset[0], linear[1, 0], linear[1, 1], offset[1])
    im = Image.fromarray(frame).transform(
        (render, render),
        Image.Transform.AFFINE,
        coeffs,
        resample=Image.Resampling.BILINEAR,
        fillcolor=(0, 0, 0),
    )
    if k > 1:
        im = im.reduce(k)
    crop = np.asarray(im, np.uint8)  # [S, S, 3]
    kp = np.asarray(keypoints, np.float64)  # [5, 2]
    landmarks = crop_anchor + (kp - src_anchor) @ rot / scale  # [5, 2], R^T (p - a) / scale
    return crop, landmarks.astype(np.float32)


def face_from_frame(
    frame: np.ndarray,
    center_xy: Sequence[float],
    image_size: int,
    min_face_size: int = 20,
    max_side: int | None = None,
    pad_fraction: float = 0.0,
    max_center_distance: float = 0.75,
    ambiguity_margin: float = 0.25,
    min_confidence: float = 0.9,
) -> tuple[np.ndarray, np.ndarray, Face]:
    """detect_faces -> select_face -> crop_face in one call: (crop [S, S, 3], landmarks [5, 2], Face)."""
    faces = detect_faces(
        frame, min_face_size=min_face_size, max_side=max_side, pad_fraction=pad_fraction
    )
    face = select_face(
        faces,
        center_xy,
        frame.shape[:2],
        max_center_distance=max_center_distance,
        ambiguity_margin=ambiguity_margin,
        min_confidence=min_confidence,
    )
    crop, landmarks = crop_face(frame, face.keypoints, face.box, image_size)
    return crop, landmarks, face
