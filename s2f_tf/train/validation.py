"""Validation while training: held-out loss terms and one cheap figure, and the best weights.

Every `train.validate_every` steps (and at the last step) the chief runs the stage on a fixed set of
validation clips (the validation split's first `train.validation_clips` in file order, read once,
centre-cropped, so every pass and every run sees the same clips) and writes to TensorBoard under validation/:
  validation/loss/<term>   the stage's loss terms in inference mode (not for the face encoder: its
                           softmax is over training identities, which the validation speakers are not)
  validation/<figure>      the stage's held-out figure (higher is better; needs 2+ speakers):
    face_encoder   clip_R@1          each clip's nearest other clip (cosine) is of its own speaker
    face_decoder   image_space_R@1   the face decoded from the true feature, re-encoded by the
                                     frozen face encoder, finds its own face (gallery of up to 100)
    voice_encoder  feature_R@1       v_s finds its own face's feature (gallery of up to 100)
Every pass goes into <stage>/validation.json, so a restarted run's result.json has the whole history.
With `train.keep_best` the weights at the best validation so far are kept in <stage>/best/ (with
best.json: step, what was compared and its value), and the stage's output weights come from there;
result.json says which step they are from. "Best" is the highest figure, or for a stage whose
`keep_best_by` names a loss term the lowest held-out loss. The face decoder's is loss/fidelity (its
total without the critic's terms, which measure a game, not the faces): on a few dozen speakers
the decoder's image-space R@1 sits near 1 and moves by a clip or two, and once picked step 500 of
1000 although every held-out loss term was lower at 1000 (and the faces blurrier).
Other workers go on to the next step and wait there for the chief (the pass is a few seconds: a
few hundred clips in inference mode).
"""

from __future__ import annotations

import dataclasses
import json
import os
import time

import numpy as np
import tensorflow as tf

from s2f_tf import metrics
from s2f_tf.files import write_atomic
from s2f_tf.workdir import Workdir, save_weights_atomic

GALLERY = 100


def nearest_other_clip_hits(features: np.ndarray, speakers: np.ndarray) -> np.ndarray:
    """Per clip [N] (NaN where its speaker has no other clip): is its nearest other clip (cosine)
    one of its own speaker's?"""
    unit = features / np.maximum(np.linalg.norm(features, axis=1, keepdims=True), 1e-12)
    sim = unit @ unit.T
    np.fill_diagonal(sim, -np.inf)
    same = speakers[None, :] == speakers[:, None]
    has_other = same.sum(axis=1) > 1
    return np.where(has_other, same[np.arange(len(speakers)), np.argmax(sim, axis=1)], np.nan)


def _figure(stage_name: str, outputs: dict, speakers: np.ndarray) -> tuple[str, float]:
    if stage_name == "face_encoder":
        hits = nearest_other_clip_hits(outputs["feature"], speakers)
        return "clip_R@1", float(np.nanmean(hits)) if np.isfinite(hits).any() else float("nan")
    query = outputs["reencoded"] if stage_name == "face_decoder" else outputs["voice"]
    figures = metrics.retrieval_figures(query, outputs["feature"], speakers, GALLERY)
    return ("image_space_R@1" if stage_name == "face_decoder" else "feature_R@1"), figures[
        "cosine"
    ]["R@1"]


def _better(name: str, value: float, than: float) -> bool:
    """Figures are better higher, loss terms ("loss/...") lower."""
    return value < than if name.startswith("loss/") else value > than


class Validator:
    """Chief-only: run(step) at the steps due(step) says; finish() loads the best weights back."""

    def __init__(
        self, stage, config, info, data_dir: str, input_options, log=print, resumed_at: int = 0
    ):
        self.stage, self.log = stage, log
        self.every = config.train.validate_every
        self.keep_best = config.train.keep_best
        self.layout = Workdir(stage.workdir)
        self.batches: list[dict] = []
        self.best: dict | None = None
        self.history: list[dict] = []
        if self.every <= 0 or not info.shards.get("validation"):
            if self.every > 0:
                log(f"[{stage.name}] no validation split: validation while training is off")
            self.every = 0
            return
        options = dataclasses.replace(
            input_options,
            batch_size=min(64, config.train.validation_clips),
            training=False,
            repeat=False,
            drop_remainder=False,
            start=(0, 0),
            deterministic=True,
            fields=tuple(dict.fromkeys(stage.fields + ("speaker",))),
        )
        count = 0
        for batch in stage.dataset(data_dir, "validation", options):
            batch = {k: v[: config.train.validation_clips - count] for k, v in batch.items()}
            self.batches.append(batch)
            count += int(batch["speaker"].shape[0])
            if count >= config.train.validation_clips:
                break
        self.speakers = np.concatenate([b["speaker"].numpy() for b in self.batches])
        self.figure_ok = len(np.unique(self.speakers)) >= 2
        if not self.figure_ok:
            log(
                f"[{stage.name}] the validation split has 1 speaker: validation reports losses only, "
                "and the weights come from the last step"
            )
        self._losses = tf.function(lambda b: stage.compute_loss(b, training=False))
        self._outputs = tf.function(stage.validation_outputs)
        self.log(
            f"[{stage.name}] validating every {self.every} steps on {count} clips of "
            f"{len(np.unique(self.speakers))} validation speakers"
        )
        self._resume(resumed_at)

    def _resume(self, step: int) -> None:
        """A restarted run's best so far and its history up to the checkpoint it resumed at `step`
        (later passes are run again, on the same weights)."""
        path = self.layout.best_record(self.stage.name)
        if self.keep_best and tf.io.gfile.exists(path):
            with tf.io.gfile.GFile(path) as f:
                self.best = json.load(f)
        path = self.layout.validation_history(self.stage.name)
        if step and tf.io.gfile.exists(path):
            with tf.io.gfile.GFile(path) as f:
                self.history = [e for e in json.load(f) if e["step"] <= step]

    def due(self, step: int, total_steps: int) -> bool:
        return self.every > 0 and (step % self.every == 0 or step == total_steps)

    def run(self, step: int) -> dict:
        """Validation figures at `step`, written as TensorBoard scalars (the caller's writer)."""
        started = time.time()
        sums: dict[str, float] = {}
        outputs: dict[str, list] = {}
        for batch in self.batches:
            if self.stage.validation_losses:
                for k, v in self._losses(batch).items():
                    sums[k] = sums.get(k, 0.0) + float(tf.reduce_sum(v))
            for k, v in self._outputs(batch).items():
                outputs.setdefault(k, []).append(v.numpy())
        n = len(self.speakers)
        entry = {"step": step, **{f"loss/{k}": v / n for k, v in sums.items()}}
        if self.figure_ok:
            name, value = _figure(
                self.stage.name, {k: np.concatenate(v) for k, v in outputs.items()}, self.speakers
            )
            entry["figure"], entry["value"] = name, value
            tf.summary.scalar(f"validation/{name}", value, step=step)
        for k, v in sums.items():
            tf.summary.scalar(f"validation/loss/{k}", v / n, step=step)
        entry["seconds"] = round(time.time() - started, 2)
        self.history.append(entry)
        write_atomic(self.layout.validation_history(self.stage.name), json.dumps(self.history))
        by = self.stage.keep_best_by
        compared = (
            (entry.get("figure"), entry.get("value")) if by == "figure" else (by, entry.get(by))
        )
        if (
            self.keep_best
            and compared[1] is not None
            and np.isfinite(compared[1])
            and (
                self.best is None
                or self.best["step"] > step
                or self.best.get("figure") != compared[0]
                or _better(*compared, self.best["value"])
            )
        ):  # (a best.json of another measure)
            self.best = {"step": step, "figure": compared[0], "value": compared[1]}
            tf.io.gfile.makedirs(os.path.dirname(self.layout.best_record(self.stage.name)))
            save_weights_atomic(
                getattr(self.stage, self.stage.name), self.layout.best_weights(self.stage.name)
            )
            write_atomic(self.layout.best_record(self.stage.name), json.dumps(self.best))
        return entry

    def finish(self, final_step: int) -> dict | None:
        """Loads the best weights into the stage's model (keep_best); returns result.json's entry."""
        if self.every <= 0:
            return None
        last = self.history[-1] if self.history else {}
        out = {
            "every": self.every,
            "clips": int(len(self.speakers)),
            "speakers": int(len(np.unique(self.speakers))),
            "final": last,
            "weights_from_step": final_step,
            "history": self.history,
        }
        if self.best is not None and self.best["step"] <= final_step:
            out["best"] = self.best
            if self.best["step"] != final_step:
                getattr(self.stage, self.stage.name).load_weights(
                    self.layout.best_weights(self.stage.name)
                )
                out["weights_from_step"] = self.best["step"]
        return out
