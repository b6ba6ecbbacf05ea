"""`s2f prepare folders`: one folder per speaker, with audio files and face images -> Clips.

Layout (searched recursively inside each speaker folder, so VoxCeleb's
`<root>/<speaker>/<video>/<n>.wav` works as is):

    <root>/<speaker_id>/**/<name>.<audio ext>    one item per audio file (AUDIO_EXTENSIONS)
    <root>/<speaker_id>/**/<name>.<image ext>    the speaker's face images (IMAGE_EXTENSIONS)

Hidden files and folders (starting with ".") are ignored; files directly in <root> are ignored.
<root> and the meta file are local paths or URLs (gs://, s3://, ...: pipelines/storage.py; a remote
file is copied to a local temporary file while it is read).
The face for an audio file: the image with the same relative path minus extension (e.g.
`a/00001.wav` <-> `a/00001.jpg`) if there is one, else the speaker's image number
stable_hash(item_id) % (number of images) among all the speaker's images sorted by relative path
(deterministic, and spreads a speaker's clips over their photos). A speaker without images: every
item fails with `missing_file`.

The face decoder's target (`decoder_target`): "clip", the clip's own face (the default), or
"most_frontal", the most frontal face (faces.frontality) among all of the speaker's images, the
same for every clip of the speaker (ties: the first by path; images without a usable face are
skipped; a speaker with none keeps each clip's own face). Each worker detects a speaker's images
once (cached per process).

The face is MTCNN's detection nearest the image centre (photos are assumed roughly centred on
the person; `max_center_distance` is looser than for video), aligned and cropped like AVSpeech's
(s2f_tf/media/faces.py); the image is padded by `pad_fraction` before detection so tight face
crops are found too. Crops are cached per worker process (a speaker's clips share few images).

Items: item_id = "<speaker_id>/<relative audio path>", speaker_id = the folder name, split =
`split_for_speaker(speaker_id)` (80/10/10 by a stable hash; speaker-disjoint).

Optional `meta_path`: a VoxCeleb meta file,
    VoxCeleb1 `vox1_meta.csv`: VoxCeleb1 ID, VGGFace1 ID, Gender, Nationality, Set   (tabs)
    VoxCeleb2 `vox2_meta.csv`: VoxCeleb2 ID, VGGFace2 ID, Gender, Set                (commas)
The separator (tab, else comma) is taken from the header line; names and values are stripped of
spaces (the VoxCeleb2 file has "id00012 ,n000012 ,m ,dev "). Columns are found by name: the
first column is the speaker id, a column whose name contains "vggface" is an alternative id
(a speaker folder may be named by either), "gender" (m/f) and "set" (dev/test). With a meta
file, a listed speaker's split is dev -> "train" (or "validation" for a stable-hash fraction
`validation_fraction` of the dev speakers; 0 by default), test -> "test"; speakers not listed
keep the hash split. Every clip then has the attribute "sex" (0 male, 1 female, NaN unknown) and,
where the file has a "Nationality" column (VoxCeleb1), "nationality" (an index into the file's
nationalities, sorted; dataset.json's attribute_classes lists them), for `s2f evaluate`'s
confusion matrices and per-group figures.
"""

from __future__ import annotations

import csv
import dataclasses
import functools
import math
import os
from typing import Any

import numpy as np

from pipelines import common, storage
from s2f_tf.contract import SAMPLE_RATE
from s2f_tf.data import schema
from s2f_tf.media import faces
from s2f_tf.media.audio import load_audio
from s2f_tf.media.errors import MISSING_FILE, TOO_SHORT, MediaError

AUDIO_EXTENSIONS = (
    ".wav",
    ".flac",
    ".ogg",
    ".oga",
    ".opus",
    ".mp3",
    ".m4a",
    ".aac",
    ".wma",
    ".aiff",
    ".aif",
    ".caf",
    ".au",
)
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif", ".ppm")

SEX_VALUES = {"m": 0.0, "male": 0.0, "f": 1.0, "female": 1.0}
SEX_NAMES = ("male", "female")  # the class names of the values above
DECODER_TARGETS = ("clip", "most_frontal")
SET_SPLITS = {"dev": "train", "train": "train", "test": "test"}


def read_meta(meta_path: str) -> dict[str, dict[str, Any]]:
    """A VoxCeleb1/2 meta file -> {speaker id (and VGGFace id): {"set": str | None, "sex": float | None,
    "nationality": str | None}}.
    Raises ValueError naming the file and line for a malformed file."""
    lines = storage.read_text(meta_path).splitlines()
    lines = [(i, ln) for i, ln in enumerate(lines, start=1) if ln.strip()]
    if not lines:
        raise ValueError(f"{meta_path}: empty meta file")
    delimiter = "\t" if "\t" in lines[0][1] else ","
    rows = list(csv.reader([ln for _, ln in lines], delimiter=delimiter))
    header = [h.strip().lower() for h in rows[0]]

    def column(word: str) -> int | None:
        return next((i for i, h in enumerate(header) if word in h), None)

    alt, gender, subset, nation = (
        column("vggface"),
        column("gender"),
        column("set"),
        column("nationality"),
    )
    if gender is None and subset is None:
        raise ValueError(
            f"{meta_path}:{lines[0][0]}: header {rows[0]} has neither a 'Gender' nor a 'Set' "
            "column (expected a VoxCeleb meta file)"
        )
    meta: dict[str, dict[str, Any]] = {}
    for (line_no, _), row in zip(lines[1:], rows[1:]):
        row = [x.strip() for x in row]
        if len(row) < len(header):
            raise ValueError(
                f"{meta_path}:{line_no}: expected {len(header)} fields, got {len(row)}: {row}"
            )
        entry: dict[str, Any] = {
            "set": None,
            "sex": None,
            "nationality": (row[nation] or None) if nation is not None else None,
        }
        if subset is not None:
            value = row[subset].lower()
            if value not in SET_SPLITS:
                raise ValueError(
                    f"{meta_path}:{line_no}: Set {row[subset]!r} is not one of {sorted(SET_SPLITS)}"
                )
            entry["set"] = value
        if gender is not None and row[gender]:
            value = row[gender].lower()
            if value not in SEX_VALUES:
                raise ValueError(f"{meta_path}:{line_no}: Gender {row[gender]!r} is not m or f")
            entry["sex"] = SEX_VALUES[value]
        if not row[0]:
            raise ValueError(f"{meta_path}:{line_no}: empty speaker id")
        meta[row[0]] = entry
        if alt is not None and row[alt]:
            meta.setdefault(row[alt], entry)
    return meta


@functools.lru_cache(maxsize=256)
def _face_crop(
    image_path: str,
    image_size: int,
    min_face_size: int,
    max_side: int | None,
    pad_fraction: float,
    max_center_distance: float,
    ambiguity_margin: float,
    min_confidence: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Image file -> (crop uint8 [S, S, 3], landmarks float32 [5, 2]); cached per process, since a
    speaker's clips share a few images (failures raise and are not cached)."""
    with storage.local_copy(image_path) as local:
        image = faces.load_image(local)  # [H, W, 3]
    crop, landmarks, _ = faces.face_from_frame(
        image,
        (0.5, 0.5),
        image_size,
        min_face_size=min_face_size,
        max_side=max_side,
        pad_fraction=pad_fraction,
        max_center_distance=max_center_distance,
        ambiguity_margin=ambiguity_margin,
        min_confidence=min_confidence,
    )
    crop.setflags(write=False)
    landmarks.setflags(write=False)
    return crop, landmarks


@functools.lru_cache(maxsize=64)
def _most_frontal(speaker_folder: str, detection: tuple) -> tuple[np.ndarray, np.ndarray] | None:
    """The speaker's most frontal face crop and its landmarks among all their images, or None."""
    best = None
    for rel in _pick(storage.list_files(speaker_folder), IMAGE_EXTENSIONS):
        try:
            crop, landmarks = _face_crop(storage.join(speaker_folder, rel), *detection)
        except MediaError:
            continue
        score = faces.frontality(landmarks)
        if best is None or score < best[0]:
            best = (score, crop, landmarks)
    return None if best is None else best[1:]


def _pick(files: list[str], extensions: tuple[str, ...]) -> list[str]:
    """The relative paths (with '/') among `files` with these extensions and nothing hidden, sorted."""
    return sorted(
        rel
        for rel in files
        if os.path.splitext(rel)[1].lower() in extensions
        and not any(part.startswith(".") for part in rel.split("/"))
    )


@dataclasses.dataclass
class FoldersSource:
    """Speaker folders of audio + face images (module docstring). Picklable: plain fields only.

    Args:
      root: the folder holding one folder per speaker.
      image_size: side of the face crops.
      meta_path: optional VoxCeleb1/2 meta file (split and sex).
      validation_fraction: with a meta file, this fraction of the dev speakers goes to validation.
      min_seconds: audio shorter than this fails with too_short.
      max_seconds: keep at most this much audio per clip (from the start); None keeps everything.
      min_face_size, detect_max_side, pad_fraction: face detection (faces.detect_faces).
      max_center_distance, ambiguity_margin, min_confidence: face selection (faces.select_face),
        relative to the image centre.
      decoder_target: "clip" or "most_frontal" (module docstring).
    """

    root: str
    image_size: int
    meta_path: str | None = None
    validation_fraction: float = 0.0
    min_seconds: float = 1.0
    max_seconds: float | None = None
    min_face_size: int = 20
    detect_max_side: int | None = 1024
    pad_fraction: float = 0.15
    max_center_distance: float = 1.5
    ambiguity_margin: float = 0.25
    min_confidence: float = 0.9
    decoder_target: str = "clip"
    name: str = "folders"

    def __post_init__(self):
        if self.image_size < 16:
            raise ValueError(f"image_size must be >= 16, got {self.image_size}")
        if not storage.is_dir(self.root):
            raise ValueError(f"speaker folders root {self.root!r} is not a directory")
        if self.meta_path is not None and (
            not storage.exists(self.meta_path) or storage.is_dir(self.meta_path)
        ):
            raise ValueError(f"meta file {self.meta_path!r} does not exist")
        if self.decoder_target not in DECODER_TARGETS:
            raise ValueError(
                f"decoder_target must be one of {', '.join(DECODER_TARGETS)}, got {self.decoder_target!r}"
            )
        if not 0.0 <= self.validation_fraction < 1.0:
            raise ValueError(
                f"validation_fraction must be in [0, 1), got {self.validation_fraction}"
            )

    def _split(self, speaker: str, entry: dict[str, Any] | None) -> str:
        if entry is None or entry["set"] is None:
            return common.split_for_speaker(speaker)
        split = SET_SPLITS[entry["set"]]
        if split == "train" and self.validation_fraction > 0:
            u = (common.stable_hash(f"s2f-validation:{speaker}") % 1_000_000) / 1_000_000
            if u < self.validation_fraction:
                split = "validation"
        return split

    def list_items(self) -> list[dict[str, Any]]:
        meta = read_meta(self.meta_path) if self.meta_path else None
        files: dict[str, list[str]] = {}  # speaker folder -> the files inside it, relative to it
        for rel in storage.list_files(self.root):
            speaker, _, inside = rel.partition("/")
            if inside and not speaker.startswith("."):
                files.setdefault(speaker, []).append(inside)
        items = []
        for speaker in sorted(files):
            folder = storage.join(self.root, speaker)
            audio = _pick(files[speaker], AUDIO_EXTENSIONS)
            if not audio:
                continue
            images = _pick(files[speaker], IMAGE_EXTENSIONS)
            by_stem = {}
            for rel in images:
                by_stem.setdefault(os.path.splitext(rel)[0], rel)
            entry = meta.get(speaker) if meta is not None else None
            split = self._split(speaker, entry)
            for rel in audio:
                item_id = f"{speaker}/{rel}"
                image = by_stem.get(os.path.splitext(rel)[0])
                if image is None and images:
                    image = images[common.stable_hash(item_id) % len(images)]
                items.append(
                    {
                        "item_id": item_id,
                        "speaker_id": speaker,
                        "split": split,
                        "audio": storage.join(folder, rel),
                        "image": None if image is None else storage.join(folder, image),
                        "sex": None if entry is None else entry["sex"],
                        "nationality": None if entry is None else entry["nationality"],
                    }
                )
        return items

    def process(self, item: dict[str, Any], speaker_index: int) -> schema.Clip:
        if item["image"] is None:
            raise common.ItemError(
                MISSING_FILE,
                f"speaker folder {item['speaker_id']!r} has no face "
                f"images ({', '.join(IMAGE_EXTENSIONS)})",
            )
        # MediaError is pipelines.common.ItemError: typed failures reach the manifest as they are
        with storage.local_copy(item["audio"]) as path:
            pcm = load_audio(path)  # [samples]
        if pcm.size < self.min_seconds * SAMPLE_RATE:
            raise MediaError(
                TOO_SHORT,
                f"{item['audio']}: {pcm.size / SAMPLE_RATE:.3f} s "
                f"of audio (< {self.min_seconds} s)",
            )
        if self.max_seconds is not None:
            pcm = pcm[: int(self.max_seconds * SAMPLE_RATE)]
        crop, landmarks = _face_crop(item["image"], *self._detection())
        target = None
        if self.decoder_target == "most_frontal":
            target = _most_frontal(storage.join(self.root, item["speaker_id"]), self._detection())
        attributes = {}
        if self.meta_path:
            attributes["sex"] = math.nan if item["sex"] is None else float(item["sex"])
            if self._nationalities:
                known = item["nationality"] in self._nationalities
                attributes["nationality"] = (
                    float(self._nationalities.index(item["nationality"])) if known else math.nan
                )
        return schema.Clip(
            clip_id=item["item_id"],
            speaker_id=item["speaker_id"],
            speaker_index=speaker_index,
            split=item["split"],
            pcm=pcm,
            face_png=schema.encode_png(crop),
            face_size=self.image_size,
            landmarks=landmarks,
            attributes=attributes,
            source_path=item["audio"],
            source_start=0.0,
            source_end=pcm.size / SAMPLE_RATE,
            target_png=b"" if target is None else schema.encode_png(target[0]),
            target_landmarks=None if target is None else target[1],
        )

    def _detection(self) -> tuple:
        return (
            self.image_size,
            self.min_face_size,
            self.detect_max_side,
            self.pad_fraction,
            self.max_center_distance,
            self.ambiguity_margin,
            self.min_confidence,
        )

    @functools.cached_property
    def _nationalities(self) -> list[str]:
        """The meta file's nationalities, sorted (a clip's value is an index into them); [] without."""
        if not self.meta_path:
            return []
        return sorted(
            {e["nationality"] for e in read_meta(self.meta_path).values() if e["nationality"]}
        )

    def info(self) -> dict[str, Any]:
        classes = {}
        if self.meta_path:
            classes["sex"] = list(SEX_NAMES)
            if self._nationalities:
                classes["nationality"] = self._nationalities
        return {
            "image_size": self.image_size,
            "num_landmarks": faces.NUM_LANDMARKS,
            **common.REAL_FACE_TARGETS,
            "decoder_target": self.decoder_target,
            "attribute_names": sorted(classes),
            "attribute_classes": classes,
        }
