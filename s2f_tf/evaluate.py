"""`s2f evaluate`: honest quality figures on held-out (speaker-disjoint) data.

For each input length (the preset's clip length and half of it; paper: 6 s and 3 s):
  every voice figure under a protocol (s2f_tf/protocols.py): whom a voice is matched against.
    By default identity_mean (SF2F): its identity's mean face feature over the identity's other
    clips; identity_face (SSS) and same_clip (the clip's own face: optimistic) under "protocols"
  feature similarity between v_s and the own reference: angle, cosine, L2/L1 (unit and raw
    features), and the angle histograms                  the paper's feature-similarity table
  retrieval: R@1/2/5/10 by cosine, L1 and L2 in galleries of the own reference and G-1 other
    identities (random, or SF2F's fixed blocks), with G and chance   the paper's retrieval table
  1:2 matching against every other identity in turn, unconstrained and same-sex (chance 50%);
    identity_face adds SSS's verification AUC and retrieval mAP
  attributes (where the data has them): a small CNN classifier trained on the TRUE face images of
    the training split (standing in for the face-attribute service the paper used) reads the true
    face and the decoded face: agreement and confusion matrices for categorical attributes (sex,
    ancestry, and age in bands), Pearson r for continuous ones              paper Fig. 4
  craniofacial measurements on the decoder's landmarks (iBUG-68): Pearson r between the faces
    decoded from the true feature and from the voice, against random pairings  paper Table 4
  fidelity of decoded faces, from the voice and from the TRUE feature ("face to face", the
    decoder's ceiling): image-space retrieval (decode, re-encode with the frozen face encoder,
    recall@K among the same galleries) and sharpness (mean squared Laplacian of the grey image
    relative to the decoder's targets and to the input faces); face to face also gets the
    attribute agreement (the paper's face-to-face reconstructions)
  uncertainty and bias: each headline figure with a 95% bootstrap interval over speakers
    (confidence_intervals), and broken down by the dataset's own groups (by_group: sex, age band,
    ancestry or whatever categorical attribute the data has)
The figures are plain functions in s2f_tf/metrics.py; this module runs the models and the judge.
Writes metrics.json, faces.png (per row: the clip's face | the decoder's target | decoded from the
true feature | decoded from the voice) and report.html (s2f_tf/report.py), each file whole.
"""

from __future__ import annotations

import dataclasses
import functools
import io
import json
import os
from typing import Any

import numpy as np
import tensorflow as tf

from s2f_tf import contract, metrics, protocols
from s2f_tf.data.dataset import InputOptions, make_dataset
from s2f_tf.data.schema import DatasetInfo
from s2f_tf.files import write_atomic
from s2f_tf.judge import train_attribute_classifier
from s2f_tf.report import render_report
from s2f_tf.workdir import Workdir, float32_policy, load_frozen_face_encoder, load_trained_model

JUDGE_IMAGES = 4000  # true training faces the attribute judge learns from, at most ...
JUDGE_IMAGE_BYTES = 256 * 2**20  # ... and at most this much uint8 image memory (224 px: ~1,700)
DEFAULT_CLASSES = {"sex": ["male", "female"]}  # datasets written before attribute_classes existed


def attribute_classes(info: DatasetInfo) -> dict[str, list[str] | None]:
    """Per attribute of the data: its class names (categorical, values are class indices) or None
    (continuous), from dataset.json's attribute_classes."""
    known = {**DEFAULT_CLASSES, **info.attribute_classes}
    return {name: known.get(name) for name in info.attribute_names}


class _Models:
    def __init__(self, workdir: str, vgg_face_weights: str | None):
        self.s2f, self.config = load_trained_model(workdir)
        self.face_encoder = load_frozen_face_encoder(self.config, workdir, vgg_face_weights)
        # reduce_retracing: a split's last batch and each input length are new shapes
        function = functools.partial(tf.function, reduce_retracing=True)
        self.encode_faces = function(
            lambda im: self.face_encoder(tf.cast(im, tf.float32), training=False)["feature"]
        )
        self.encode_voice = function(lambda w: self.s2f.encode(w, training=False))
        self.decode = function(lambda v: self.s2f.face_decoder(v, training=False))

    def decode_faces(
        self, features: np.ndarray, batch_size: int = 256
    ) -> tuple[np.ndarray, np.ndarray]:
        """Features [N, D] -> decoded faces float32 [N, S, S, 3] in [0, 255] and their landmarks [N, K, 2]."""
        images, landmarks = [], []
        for i in range(0, len(features), batch_size):
            out = self.decode(features[i : i + batch_size])
            images.append(np.clip(out["image"].numpy(), 0.0, 1.0) * 255.0)
            landmarks.append(out["landmarks"].numpy())
        return np.concatenate(images), np.concatenate(landmarks)

    def encode_images(self, images: np.ndarray, batch_size: int = 256) -> np.ndarray:
        """Faces [N, S, S, 3] in [0, 255] -> face-encoder features [N, D]."""
        return np.concatenate(
            [
                self.encode_faces(images[i : i + batch_size]).numpy()
                for i in range(0, len(images), batch_size)
            ]
        )


def _collect(
    models: _Models,
    data_dir: str,
    split: str,
    info: DatasetInfo,
    samples: int,
    lengths: list[int],
    limit: int | None,
    with_voice: bool,
    images: bool = True,
    features: bool = True,
) -> dict:
    fields = ["image", "speaker", "clip_id"] + (["pcm", "target_image"] if with_voice else [])
    if info.attribute_names:
        fields.append("attributes")
    # a fixed clip order: the galleries (one clip of each other speaker) and the judge's training
    # faces are then the same on every run, so a model's figures do not move between evaluations
    opts = InputOptions(
        batch_size=32,
        clip_samples=samples,
        training=False,
        fields=tuple(fields),
        drop_remainder=False,
        repeat=False,
        deterministic=True,
    )
    out: dict = {
        "v_f": [],
        "speaker": [],
        "attributes": [],
        "images": [],
        "clip_id": [],
        "targets": [],
    }
    out.update({f"v_s_{n}": [] for n in lengths})
    count = 0
    for batch in make_dataset(data_dir, split, opts, info=info):
        if features:
            out["v_f"].append(models.encode_faces(batch["image"]).numpy())
        out["speaker"].append(batch["speaker"].numpy())
        out["clip_id"] += [c.decode() for c in batch["clip_id"].numpy()]
        if "attributes" in batch:
            out["attributes"].append(batch["attributes"].numpy())
        if images:
            out["images"].append(batch["image"].numpy())
        if "target_image" in batch:
            out["targets"].append(batch["target_image"].numpy())
        if with_voice:
            pcm = batch["pcm"]
            for n in lengths:
                out[f"v_s_{n}"].append(models.encode_voice(contract.center_crop(pcm, n)).numpy())
        count += len(batch["speaker"])
        if limit and count >= limit:
            break
    return {
        k: (np.concatenate(v) if v and not isinstance(v[0], str) else v) for k, v in out.items()
    }


def _faces_png(data: dict, from_true: np.ndarray, from_voice: np.ndarray, rows: int = 8) -> bytes:
    """Per row (one test speaker): the clip's face, the decoder's target, the face decoded from the
    true feature and the face decoded from the voice (all [N, S, S, 3], the last two already decoded)."""
    from PIL import Image, ImageDraw

    speakers = data["speaker"]
    picks = [int(np.flatnonzero(speakers == s)[0]) for s in np.unique(speakers)][:rows]
    columns = [("clip's face", data["images"][picks].astype(np.float32))]
    if len(data["targets"]):
        columns.append(("decoder's target", data["targets"][picks].astype(np.float32)))
    columns += [("from true feature", from_true[picks]), ("from the voice", from_voice[picks])]
    size = columns[0][1].shape[1]
    scale = max(1, 128 // size)
    header = 18
    grid = np.concatenate(
        [np.concatenate(row, axis=1) for row in zip(*(images for _, images in columns))], 0
    )
    image = Image.fromarray(np.uint8(np.clip(np.round(grid), 0, 255))).resize(
        (grid.shape[1] * scale, grid.shape[0] * scale), Image.NEAREST
    )
    canvas = Image.new("RGB", (image.width, image.height + header), "white")
    canvas.paste(image, (0, header))
    draw = ImageDraw.Draw(canvas)
    for i, (label, _) in enumerate(columns):
        draw.text((i * size * scale + 4, 3), label, fill="black")
    buf = io.BytesIO()
    canvas.save(buf, format="PNG")
    return buf.getvalue()


def fidelity_figures(
    models: _Models,
    decoded: np.ndarray,
    test: dict,
    references: dict,
    gallery_size: int,
    per_query: dict | None = None,
    intervals: dict | None = None,
    galleries: str = "random",
) -> dict:
    """What decoded faces [N, S, S, 3] (0..255) keep: image-space retrieval (re-encoded by the frozen
    face encoder, ranked among the true faces of the galleries, identity-level by default and under
    same_clip) and sharpness relative to `references`. With `per_query` / `intervals`, adds each
    query's identity-level image-space R@1 and its gallery bootstrap."""
    encoded = models.encode_images(decoded)
    speakers = test["speaker"]
    figures, hits, verdicts = metrics.protocol_figures(
        protocols.DEFAULT, encoded, test["v_f"], speakers, gallery_size, galleries
    )
    same_clip = metrics.protocol_figures(
        "same_clip", encoded, test["v_f"], speakers, gallery_size, galleries
    )[0]
    if per_query is not None:
        per_query["image_retrieval_R@1"] = hits["retrieval_R@1"]
    if intervals is not None:
        block, g = protocols.block_of(len(verdicts.identities), gallery_size, galleries)
        ci = protocols.gallery_intervals(verdicts, (1,), block, g)
        intervals["image_retrieval_R@1"] = ci["retrieval_R@1"]
    return {
        "image_retrieval": figures["retrieval"],
        "image_retrieval_same_clip": same_clip["retrieval"],
        "sharpness": metrics.sharpness_figures(
            decoded, {k: v for k, v in references.items() if len(v)}
        ),
    }


def protocol_entry(
    queries: np.ndarray, held: _HeldOut, per_query: dict, intervals: dict
) -> tuple[dict, np.ndarray]:
    """The figures of queries [N, D] against the clips' faces under every protocol: each under
    "protocols", the default's also at the top (retrieval, matching, similarity). The per-query
    arrays and gallery-bootstrap intervals of the default and of same_clip ("same_clip_" names) go
    into per_query / intervals. Also returns the default protocol's own reference [N, D]."""
    entry: dict = {"protocol": protocols.DEFAULT, "protocols": {}}
    v_f, speakers, sex = held.data["v_f"], held.speakers, held.sex
    reference = v_f
    for name in protocols.NAMES:
        canonical = held.canonical if name == "identity_face" else None
        figures, pq, verdicts = metrics.protocol_figures(
            name, queries, v_f, speakers, held.gallery_size, held.galleries, canonical, sex
        )
        if name == "identity_face":
            figures |= protocols.identity_face_figures(queries, v_f, speakers, canonical, sex)
        entry["protocols"][name] = figures
        if name not in (protocols.DEFAULT, "same_clip"):
            continue
        prefix = "" if name == protocols.DEFAULT else "same_clip_"
        per_query.update({prefix + k: v for k, v in pq.items()})
        block, g = protocols.block_of(len(verdicts.identities), held.gallery_size, held.galleries)
        groups = {"same_sex": sex} if sex is not None else None
        ci = protocols.gallery_intervals(verdicts, (1, 5, 10), block, g, groups)
        intervals.update({prefix + k: v for k, v in ci.items()})
        if name == protocols.DEFAULT:
            reference = np.where(verdicts.has_own[:, None], verdicts.references, np.nan)
    default = entry["protocols"][protocols.DEFAULT]
    entry.update(retrieval=default["retrieval"], matching=default["matching"])
    entry["similarity"] = default["similarity"]
    return entry, reference


DEFINITIONS = {
    "protocol": f"whom a voice is matched against; the figures outside 'protocols' use "
    f"{protocols.DEFAULT}, every protocol's are under 'protocols', and same_clip_* intervals are "
    "same_clip's",
    **{f"protocol/{name}": text for name, text in protocols.DESCRIPTIONS.items()},
    "ties": "ties never win: scores within 1e-9 (relative) are ties; in 1:2 matching a tie counts "
    "half, in a ranking the own face takes a random place among the faces tied with it (R@K is the "
    "expected hit), so collapsed features score chance",
    "similarity": "to the protocol's own reference: angle and cosine (mean of each: the mean angle is "
    "not the arccos of the mean cosine), l2/l1 between unit-normalised features, l2_raw/l1_raw "
    "between raw features as SF2F computes them (|face - voice + 1e-6|)",
    "gallery": "the own reference + one face of each of G-1 other identities; galleries 'random': "
    "drawn per query, 'blocks': SF2F's fixed blocks of G identities over the first 3G",
    "matching_1:2": "given a voice, is its own reference closer (cosine) than a distractor's; averaged "
    "over every other identity as the distractor (same_sex: only identities of the same sex); "
    "chance 0.5",
    "verification_auc": "identity_face: ROC AUC of voice-face pair cosines, same identity against "
    "different (same_sex: different identities of the same sex), over every pair as SSS",
    "retrieval_map": "identity_face: mean average precision of each voice's ranking of every face "
    "standing for an identity (not its own clip's), ties in expectation; chance: all scores tied",
    "attributes": "CNN attribute classifier trained on true face images (train split), applied to true "
    "and decoded faces; confusion rows: the true face's reading, columns: the decoded face's",
    "craniofacial": "measurements on the decoder's landmarks (iBUG-68): Pearson r over clips between "
    "the faces decoded from the true feature and from the voice; random_pairing_r: the same with the "
    "voice faces shuffled across clips",
    "image_retrieval": "decoded face re-encoded by the frozen face encoder, ranked among the gallery's "
    f"true-face features ({protocols.DEFAULT}; image_retrieval_same_clip: same_clip)",
    "sharpness": "mean squared Laplacian of the grey decoded face relative to the decoder's targets / "
    "the input faces",
    "face_to_face": "faces decoded from the true face's feature",
    "confidence_intervals": f"{metrics.CONFIDENCE:.0%} percentile bootstrap over speakers "
    f"({metrics.BOOTSTRAP_RESAMPLES} resamples; retrieval and matching redraw their galleries and "
    "distractors from each resample's speakers)",
    "by_group": "every figure over the clips of one group of the dataset's own labels (sex, age "
    "band, ...)",
}


def evaluate(
    workdir: str,
    data_dir: str,
    out_dir: str | None = None,
    split: str = "test",
    gallery_size: int = 100,
    vgg_face_weights: str | None = None,
    train_limit: int | None = None,
    log=print,
    galleries: str = "random",
) -> dict:
    """Computes the figures and writes metrics.json, faces.png and report.html to `out_dir`, in
    float32 whatever the global mixed-precision policy. galleries: "random" (a gallery per query)
    or "blocks" (SF2F's fixed blocks of `gallery_size` identities)."""
    with float32_policy():
        return _evaluate(
            workdir,
            data_dir,
            out_dir,
            split,
            gallery_size,
            vgg_face_weights,
            train_limit,
            log,
            galleries,
        )


def _evaluate(
    workdir: str,
    data_dir: str,
    out_dir: str | None,
    split: str,
    gallery_size: int,
    vgg_face_weights: str | None,
    train_limit: int | None,
    log,
    galleries: str,
) -> dict:
    if split not in contract.SPLITS:
        raise ValueError(f"--split must be one of {', '.join(contract.SPLITS)}, got {split!r}")
    if gallery_size < 2:
        raise ValueError(f"--gallery_size must be at least 2, got {gallery_size}")
    if galleries not in protocols.GALLERIES:
        raise ValueError(
            f"--galleries must be one of {', '.join(protocols.GALLERIES)}, got {galleries!r}"
        )
    out_dir = out_dir or Workdir(workdir).eval_dir
    info = DatasetInfo.read(data_dir)
    models = _Models(workdir, vgg_face_weights)
    long = models.config.audio.clip_samples
    short = max(models.config.audio.min_samples, long // 2)
    lengths = [long, short]
    log(
        f"evaluate: {split} split of {data_dir}, inputs of {contract.seconds(long):g} s and "
        f"{contract.seconds(short):g} s"
    )
    held = _held_out(models, data_dir, split, info, lengths, gallery_size, galleries)
    report = {
        "workdir": workdir,
        "data": data_dir,
        "split": split,
        "clips": int(len(held.speakers)),
        "speakers": int(len(np.unique(held.speakers))),
        "config": models.config.name,
        "protocol": protocols.DEFAULT,
        "galleries": galleries,
        "definitions": DEFINITIONS,
        "dataset": {
            "source": info.source,
            "counts": info.counts,
            "speaker_counts": info.speaker_counts,
            "attribute_names": info.attribute_names,
            "attribute_classes": held.classes,
            "decoder_target": info.decoder_target,
        },
        "inputs": {},
    }
    if info.attribute_names and "train" in info.shards and len(held.data["attributes"]):
        held.set_judge(_train_judge(models, data_dir, info, long, held.classes, train_limit, log))
    from_true, f2f_landmarks = models.decode_faces(held.data["v_f"])  # [N, S, S, 3], [N, K, 2]
    report["face_to_face"] = _face_to_face_figures(models, held, from_true, log)
    voice_faces = {}
    for n in lengths:
        key = f"{contract.seconds(n):g}s"
        entry, voice_faces[n] = _voice_figures(models, held, held.data[f"v_s_{n}"], f2f_landmarks)
        report["inputs"][key] = entry
        _log_voice_figures(key, entry, log)
    png = _faces_png(held.data, from_true, voice_faces[long])
    report["outputs"] = _write_outputs(out_dir, report, png)
    return report


@dataclasses.dataclass
class _HeldOut:
    """The evaluated split's clips (`_collect`'s arrays) and what every figure of them needs."""

    data: dict
    speakers: np.ndarray  # [N] data["speaker"]
    references: dict  # what decoded faces' sharpness is relative to
    gallery_size: int
    classes: dict  # attribute name -> class names, or None (continuous)
    labels: np.ndarray  # [N, A] the clips' true attribute values
    groupings: dict  # what figures are broken down by (`metrics.groupings`)
    sex: np.ndarray | None  # [N], for same-sex matching
    galleries: str = "random"  # random | blocks (protocols.GALLERIES)
    canonical: np.ndarray | None = None  # [N, D] each clip's identity's canonical face feature
    judge: Any = None  # the attribute classifier's predict(images), where the data has attributes
    true_reading: dict | None = None  # its reading of the clips' true faces

    def set_judge(self, judge) -> None:
        self.judge, self.true_reading = judge, judge(self.data["images"])

    def fidelity(self, models, decoded: np.ndarray, per_query: dict, intervals: dict) -> dict:
        """fidelity_figures of faces `decoded` for these held-out clips ([N, S, S, 3] 0..255)."""
        return fidelity_figures(
            models,
            decoded,
            self.data,
            self.references,
            self.gallery_size,
            per_query,
            intervals,
            self.galleries,
        )

    def add_attributes(self, entry: dict, per_query: dict, decoded: np.ndarray) -> None:
        """The judge's reading of `decoded` faces against its reading of the true ones."""
        if self.judge is None:
            return
        reading = self.judge(decoded)
        entry["attributes"] = metrics.attribute_figures(
            self.classes, self.true_reading, reading, _labels(self.classes, self.labels)
        )
        per_query.update(metrics.agreements(self.classes, self.true_reading, reading))

    def summarise(self, entry: dict, per_query: dict, intervals: dict) -> None:
        """Intervals: the gallery bootstrap's (`intervals`), and for every other per-query figure
        the bootstrap of its mean over speakers; by_group: every per-query figure per group."""
        rest = {k: v for k, v in per_query.items() if k not in intervals}
        entry["confidence_intervals"] = metrics.mean_intervals(rest, self.speakers) | intervals
        entry["by_group"] = metrics.group_breakdown(per_query, self.speakers, self.groupings)


def _held_out(
    models: _Models,
    data_dir: str,
    split: str,
    info: DatasetInfo,
    lengths: list[int],
    gallery_size: int,
    galleries: str = "random",
) -> _HeldOut:
    """The split's clips through the models, at every input length; at least 2 speakers. Where the
    decoder's targets are the identities' canonical faces, their features stand for the identities
    in the identity_face protocol."""
    test = _collect(models, data_dir, split, info, lengths[0], lengths, None, with_voice=True)
    speakers = test["speaker"]
    n_speakers = len(np.unique(speakers))
    if n_speakers < 2:
        raise ValueError(
            f"the {split} split of {data_dir} has {n_speakers} speaker(s): retrieval and matching "
            "need at least 2"
        )
    classes = attribute_classes(info)
    labels = test["attributes"] if len(test["attributes"]) else np.zeros((len(speakers), 0))
    names = info.attribute_names
    return _HeldOut(
        data=test,
        speakers=speakers,
        references={"targets": test["targets"], "input_faces": test["images"]},
        gallery_size=gallery_size,
        classes=classes,
        labels=labels,
        groupings=metrics.groupings(classes, names, labels),
        sex=labels[:, names.index("sex")] if "sex" in names else None,
        galleries=galleries,
        canonical=models.encode_images(test["targets"])
        if info.decoder_target == "canonical" and len(test["targets"])
        else None,
    )


def _train_judge(
    models: _Models,
    data_dir: str,
    info: DatasetInfo,
    samples: int,
    classes: dict,
    train_limit: int | None,
    log,
):
    """The attribute classifier, trained on the training split's true faces (at most
    `train_limit`, default JUDGE_IMAGES within JUDGE_IMAGE_BYTES)."""
    size = models.config.face_encoder.image_size
    train_limit = train_limit or max(
        1000, min(JUDGE_IMAGES, JUDGE_IMAGE_BYTES // (size * size * 3))
    )
    train = _collect(
        models, data_dir, "train", info, samples, [], train_limit, with_voice=False, features=False
    )  # the attribute judge needs images and labels only
    log(f"  training the attribute classifier on {len(train['images'])} true training faces")
    return train_attribute_classifier(train["images"], train["attributes"], classes)


def _face_to_face_figures(models: _Models, held: _HeldOut, from_true: np.ndarray, log) -> dict:
    """What faces decoded from the true feature ([N, S, S, 3] 0..255) keep: the decoder's ceiling."""
    per_query: dict = {}
    intervals: dict = {}
    f2f = held.fidelity(models, from_true, per_query, intervals)
    held.add_attributes(f2f, per_query, from_true)
    held.summarise(f2f, per_query, intervals)
    log(
        f"  face to face (decoded from the true feature): image-space R@1 "
        f"{100 * f2f['image_retrieval']['cosine']['R@1']:.1f}% {protocols.DEFAULT} (same_clip "
        f"{100 * f2f['image_retrieval_same_clip']['cosine']['R@1']:.1f}%; chance "
        f"{100 * f2f['image_retrieval']['chance']['R@1']:.1f}%), sharpness "
        f"{f2f['sharpness']['relative_to_targets']:.2f} of the targets'"
    )
    return f2f


def _voice_figures(
    models: _Models, held: _HeldOut, v_s: np.ndarray, f2f_landmarks: np.ndarray
) -> tuple[dict, np.ndarray]:
    """The figures of the voice's features v_s [N, D] at one input length, and the faces decoded
    from them [N, S, S, 3] (0..255)."""
    v_f, speakers = held.data["v_f"], held.speakers
    decoded, landmarks = models.decode_faces(v_s)  # [N, S, S, 3] 0..255
    per_query: dict = {}
    intervals: dict = {}
    entry, reference = protocol_entry(v_s, held, per_query, intervals)  # reference [N, D]
    angle = per_query["angle_degrees"] = metrics.angles(v_s, reference)  # NaN: no reference
    other = np.roll(np.arange(len(speakers)), len(speakers) // 2)  # a clip half the list away ...
    apart = speakers[other] != speakers  # ... of another speaker
    entry["angles"] = {
        "own_face": metrics.histogram(angle),
        "other_speakers_faces": metrics.histogram(metrics.angles(v_s[apart], v_f[other[apart]])),
    }
    entry.update(held.fidelity(models, decoded, per_query, intervals))
    if landmarks.shape[1] == metrics.CRANIOFACIAL_LANDMARKS:
        entry["craniofacial"] = metrics.craniofacial_figures(f2f_landmarks, landmarks, speakers)
    held.add_attributes(entry, per_query, decoded)
    held.summarise(entry, per_query, intervals)
    return entry, decoded


def _log_voice_figures(key: str, entry: dict, log) -> None:
    r, same = entry["retrieval"], entry["protocols"]["same_clip"]
    log(
        f"  {key} ({entry['protocol']}): angle "
        f"{entry['similarity']['cosine_angle_degrees']['mean']:.1f} deg, "
        f"cosine R@1 {100 * r['cosine']['R@1']:.1f}% (chance {100 * r['chance']['R@1']:.1f}%, "
        f"gallery {r['gallery_size']}), 1:2 matching "
        f"{100 * entry['matching']['unconstrained']['accuracy']:.1f}%; same_clip R@1 "
        f"{100 * same['retrieval']['cosine']['R@1']:.1f}%, 1:2 "
        f"{100 * same['matching']['unconstrained']['accuracy']:.1f}%"
        + (
            f", sex agreement {100 * entry['attributes']['sex']['agreement']:.0f}%"
            if "sex" in entry.get("attributes", {})
            else ""
        )
    )


def _write_outputs(out_dir: str, report: dict, png: bytes) -> dict:
    """metrics.json, faces.png and report.html into `out_dir`, each whole; returns their paths."""
    outputs = {
        "metrics.json": json.dumps(report, indent=2).encode(),
        "faces.png": png,
        "report.html": render_report(report, png).encode(),
    }
    tf.io.gfile.makedirs(out_dir)
    for name, content in outputs.items():  # each file whole or not at all
        write_atomic(os.path.join(out_dir, name), content)
    return {k: os.path.join(out_dir, k) for k in outputs}


def _labels(classes: dict, values: np.ndarray) -> dict:
    return {name: values[:, j] for j, name in enumerate(classes)}
