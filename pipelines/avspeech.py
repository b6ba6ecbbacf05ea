"""`s2f prepare avspeech`: AVSpeech segments (CSV) + videos the user downloaded -> Clips.

The CSV (avspeech_train.csv / avspeech_test.csv) has no header; one segment a line:

    youtube_id,start_seconds,end_seconds,face_center_x,face_center_y

(face centre normalised to [0, 1] of the frame, x right, y down). Blank lines are skipped. A
malformed line (wrong field count, non-numeric or non-finite value, end <= start, centre outside
[0, 1], or the same (youtube_id, start, end) twice) stops `list_items` with a ValueError naming the
file and line number: a broken CSV is an input error, not a property of one clip, so it is not
recorded as a failed item.

The CSV and `videos_dir` are local paths or URLs (gs://, s3://, ...: pipelines/storage.py; a remote
video is copied to a local temporary file while it is read). Videos are found under `videos_dir`
(searched recursively, once, in `list_items`) as either

    <youtube_id>.<ext>                 the whole video; the segment is cut at [start, end)
    <youtube_id>_<start>_<end>.<ext>   just the segment (as common AVSpeech downloaders save it);
                                       <start>, <end> in seconds, any decimal format
                                       ("90.000000", "90", "90.0"); matched to the CSV within 1 ms;
                                       the whole file is used

with <ext> in VIDEO_EXTENSIONS (case-insensitive). A segment file wins over a whole video. If a
name occurs in several subdirectories, the first path in sorted walk order is used. (A name that
parses as a segment file is also indexed as a whole video under its full stem, since YouTube ids
may contain "_".)

Items: item_id = f"{youtube_id}_{start:.3f}_{end:.3f}", speaker_id = youtube_id (AVSpeech has no
speaker labels; the video is the speaker proxy, so splits are video-disjoint), split = `split`
if given (AVSpeech ships separate train and test CSVs) else `split_for_speaker(youtube_id)`.
A segment whose video is not found is an item that fails with `missing_file` (so the manifest
says which videos to fetch), unless `skip_missing` is set, in which case it is not listed.

Per item: ffmpeg decodes the segment's audio (16 kHz mono int16) and its middle frame; MTCNN finds
the faces; the one nearest the CSV's centre is aligned and cropped (s2f_tf/media/faces.py). Typed
failures: missing_file, undecodable, too_short, no_face, no_face_near_center, several_faces.
Provenance: source_path = the video file, source_start/end = the CSV's times (also for segment
files, whose own time base starts at 0).
"""

from __future__ import annotations

import csv
import dataclasses
import io
import math
import os
from typing import Any

from pipelines import common, storage
from s2f_tf.data import schema
from s2f_tf.media import faces, video
from s2f_tf.media.errors import MISSING_FILE

VIDEO_EXTENSIONS = (
    ".mp4",
    ".mkv",
    ".webm",
    ".mov",
    ".avi",
    ".flv",
    ".m4v",
    ".mpg",
    ".mpeg",
    ".ts",
    ".3gp",
)


def _ms(seconds: float) -> int:
    return int(round(seconds * 1000))


def index_videos(videos_dir: str) -> tuple[dict[str, str], dict[tuple[str, int, int], str]]:
    """Scans `videos_dir` recursively -> (whole videos: youtube_id -> path,
    segment files: (youtube_id, start_ms, end_ms) -> path)."""
    whole: dict[str, str] = {}
    segments: dict[tuple[str, int, int], str] = {}
    if not storage.is_dir(videos_dir):
        raise ValueError(f"videos_dir {videos_dir!r} is not a directory")
    for rel in storage.list_files(videos_dir):
        stem, ext = os.path.splitext(rel.rsplit("/", 1)[-1])
        if ext.lower() not in VIDEO_EXTENSIONS:
            continue
        path = storage.join(videos_dir, rel)
        parts = stem.rsplit("_", 2)
        if len(parts) == 3 and parts[0]:
            try:
                start, end = float(parts[1]), float(parts[2])
            except ValueError:
                start = end = math.nan
            if math.isfinite(start) and math.isfinite(end) and end > start:
                segments.setdefault((parts[0], _ms(start), _ms(end)), path)
        # Also a whole video: YouTube ids may themselves look like "<id>_<n>_<n>".
        whole.setdefault(stem, path)
    return whole, segments


def read_csv(csv_path: str) -> list[dict[str, Any]]:
    """Parses an AVSpeech CSV -> [{youtube_id, start, end, center_x, center_y, line}].
    Raises ValueError naming the line of the first malformed row."""
    rows: list[dict[str, Any]] = []
    seen: dict[tuple[str, int, int], int] = {}
    text = storage.read_text(csv_path)
    for line_no, fields in enumerate(csv.reader(io.StringIO(text, newline="")), start=1):
        fields = [x.strip() for x in fields]
        if not fields or all(not x for x in fields):
            continue
        where = f"{csv_path}:{line_no}"
        if len(fields) != 5:
            raise ValueError(
                f"{where}: expected 5 fields (youtube_id,start,end,x,y), got {len(fields)}: "
                f"{','.join(fields)!r}"
            )
        youtube_id = fields[0]
        if not youtube_id or any(c in youtube_id for c in "/\\ "):
            raise ValueError(f"{where}: bad youtube_id {youtube_id!r}")
        try:
            start, end, cx, cy = (float(x) for x in fields[1:])
        except ValueError:
            raise ValueError(
                f"{where}: start, end, x, y must be numbers, got {','.join(fields[1:])!r}"
            ) from None
        if not all(math.isfinite(v) for v in (start, end, cx, cy)):
            raise ValueError(f"{where}: non-finite value in {','.join(fields[1:])!r}")
        if start < 0 or end <= start:
            raise ValueError(f"{where}: need 0 <= start < end, got start={start} end={end}")
        if not (0.0 <= cx <= 1.0 and 0.0 <= cy <= 1.0):
            raise ValueError(f"{where}: face centre ({cx}, {cy}) is outside [0, 1]")
        key = (youtube_id, _ms(start), _ms(end))
        if key in seen:
            raise ValueError(
                f"{where}: segment {youtube_id} [{start}, {end}] repeats line {seen[key]}"
            )
        seen[key] = line_no
        rows.append(
            {
                "youtube_id": youtube_id,
                "start": start,
                "end": end,
                "center_x": cx,
                "center_y": cy,
                "line": line_no,
            }
        )
    return rows


@dataclasses.dataclass
class AVSpeechSource:
    """AVSpeech CSV + videos (module docstring). Picklable: plain fields only.

    Args:
      csv_path: an AVSpeech CSV (no header).
      videos_dir: where the downloaded videos are (layouts in the module docstring).
      image_size: side of the face crops.
      split: the split of every item ("train", "validation" or "test"); None: by a stable hash of
        the youtube_id (80/10/10, video-disjoint).
      min_seconds: segments (or decoded audio) shorter than this fail with too_short.
      frame_position: where in the segment the face frame is taken (0 start, 0.5 middle).
      min_face_size: smallest face searched for, in pixels of the video frame.
      detect_max_side: detect on a copy downscaled to this longer side (faster on HD); the crop is
        taken from the full-resolution frame.
      max_center_distance, ambiguity_margin, min_confidence: face selection (faces.select_face).
      skip_missing: leave segments whose video is not found out of the item list (instead of
        failed `missing_file` items).
    """

    csv_path: str
    videos_dir: str
    image_size: int
    split: str | None = None
    min_seconds: float = 2.0
    frame_position: float = 0.5
    min_face_size: int = 40
    detect_max_side: int | None = 640
    max_center_distance: float = 0.75
    ambiguity_margin: float = 0.25
    min_confidence: float = 0.9
    skip_missing: bool = False
    name: str = "avspeech"

    def __post_init__(self):
        if self.split is not None and self.split not in schema.SPLITS:
            raise ValueError(f"split must be one of {schema.SPLITS} or None, got {self.split!r}")
        if self.image_size < 16:
            raise ValueError(f"image_size must be >= 16, got {self.image_size}")
        if not 0.0 <= self.frame_position <= 1.0:
            raise ValueError(f"frame_position must be in [0, 1], got {self.frame_position}")
        if not storage.exists(self.csv_path) or storage.is_dir(self.csv_path):
            raise ValueError(f"AVSpeech CSV {self.csv_path!r} does not exist")
        if not storage.is_dir(self.videos_dir):
            raise ValueError(f"videos_dir {self.videos_dir!r} is not a directory")

    def list_items(self) -> list[dict[str, Any]]:
        rows = read_csv(self.csv_path)
        whole, segments = index_videos(self.videos_dir)
        items = []
        for row in rows:
            yt, start, end = row["youtube_id"], row["start"], row["end"]
            segment_path = segments.get((yt, _ms(start), _ms(end)))
            path = segment_path or whole.get(yt)
            if path is None and self.skip_missing:
                continue
            items.append(
                {
                    "item_id": f"{yt}_{start:.3f}_{end:.3f}",
                    "speaker_id": yt,
                    "split": self.split or common.split_for_speaker(yt),
                    "path": path,
                    "segment_file": segment_path is not None,
                    "start": start,
                    "end": end,
                    "center_x": row["center_x"],
                    "center_y": row["center_y"],
                    "line": row["line"],
                }
            )
        return items

    def process(self, item: dict[str, Any], speaker_index: int) -> schema.Clip:
        start, end = item["start"], item["end"]
        if item["path"] is None:
            raise common.ItemError(
                MISSING_FILE,
                f"no video for {item['speaker_id']} in {self.videos_dir} (looked for "
                f"{item['speaker_id']}.<ext> and {item['speaker_id']}_<start>_<end>.<ext>)",
            )
        # A segment file holds just [start, end): its own time base starts at 0.
        offset = start if item["segment_file"] else 0.0
        # MediaError is pipelines.common.ItemError: typed failures reach the manifest as they are
        with storage.local_copy(item["path"]) as path:
            pcm, frame = video.read_video_segment(
                path,
                start - offset,
                end - offset,
                min_seconds=self.min_seconds,
                frame_position=self.frame_position,
            )
        crop, landmarks, _ = faces.face_from_frame(
            frame,
            (item["center_x"], item["center_y"]),
            self.image_size,
            min_face_size=self.min_face_size,
            max_side=self.detect_max_side,
            max_center_distance=self.max_center_distance,
            ambiguity_margin=self.ambiguity_margin,
            min_confidence=self.min_confidence,
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
            source_path=item["path"],
            source_start=start,
            source_end=end,
        )

    def info(self) -> dict[str, Any]:
        return {
            "image_size": self.image_size,
            "num_landmarks": faces.NUM_LANDMARKS,
            "attribute_names": [],
            **common.REAL_FACE_TARGETS,
        }
