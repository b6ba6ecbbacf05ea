"""`s2f demo` (what `make demo` runs): the whole stack end to end on the embedded synthetic corpus.

  [1] prepare the synthetic corpus (Apache Beam; speaker-disjoint splits)     -> <demo_dir>/data
  [2-4] train face encoder, face decoder, voice encoder                        -> <demo_dir>/run
  [5] evaluate on held-out speakers         -> <demo_dir>/metrics.json, faces.png, report.html
  [6] export a SavedModel                   -> <demo_dir>/export/s2f/<version>
  [7] serve it on 127.0.0.1, predict faces for held-out voices over gRPC, stop the server
                                            -> <demo_dir>/served/<speaker>.png|.wav, served_faces.png
Re-running continues where it stopped: prepared shards and finished stages are reused.
"""

from __future__ import annotations

import json
import os
import time

import numpy as np

from s2f_tf import contract

# The bars the demo must clear on held-out speakers (issue: do not lower them), judged since issue 36
# on the identity-level figures (evaluate's default protocol, SF2F's identity-mean faces).
# The demo corpus (also `s2f prepare synthetic`'s default).
IDENTITIES = 600
CLIPS_PER_IDENTITY = 8
R1_OVER_CHANCE = 5.0
SEX_AGREEMENT = 0.90
FACE_TO_FACE_R1 = 0.90  # faces decoded from the true feature find their speaker (gallery 70)
FACE_TO_FACE_SHARPNESS = 0.5  # ... and keep half the canonical targets' fine detail
FACE_TO_FACE_SEX = 0.95  # ... and the true face's sex as the attribute judge reads it (issue 37),
FACE_TO_FACE_SEX_EACH_CLASS = 0.90  # among the clips of each sex too


def _served_predictions(
    out_dir: str, model_base_path: str, data_dir: str, config, count: int, log
) -> dict:
    """Starts the development server, sends held-out voices through the gRPC client, saves faces."""
    import soundfile
    from PIL import Image

    from s2f_tf.data.dataset import InputOptions, make_dataset
    from s2f_tf.predict import save_face
    from serving.batching import SHIPPED, read_batching_parameters
    from serving.client import GrpcClient
    from serving.server import AUTO_PORT, DevServer

    served_dir = os.path.join(out_dir, "served")
    os.makedirs(served_dir, exist_ok=True)
    options = InputOptions(
        batch_size=64,
        clip_samples=config.audio.clip_samples,
        training=False,
        fields=("pcm", "image", "speaker", "clip_id"),
        drop_remainder=False,
        repeat=False,
    )
    picks, seen = [], set()
    for batch in make_dataset(data_dir, "test", options):
        for pcm, image, speaker, clip in zip(
            batch["pcm"].numpy(),
            batch["image"].numpy(),
            batch["speaker"].numpy(),
            batch["clip_id"].numpy(),
        ):
            if int(speaker) not in seen:
                seen.add(int(speaker))
                picks.append((clip.decode().split("/")[0], pcm, image))
        if len(picks) >= count:
            break
    picks = picks[:count]
    rows = []
    batching = read_batching_parameters(SHIPPED)  # what production runs (serving/Dockerfile)
    with DevServer(
        model_base_path, "s2f", port=AUTO_PORT, rest_api_port=0, batching=batching
    ) as server:
        log(
            f"   development server on {server.grpc_target} (gRPC), model versions "
            f"{server.versions()}, batching as serving/batching.config"
        )
        client = GrpcClient(server.grpc_target, "s2f", timeout_seconds=30)
        client.wait_until_available(60)
        started = time.time()
        for speaker, pcm, image in picks:
            wave = contract.pcm_to_float(pcm)[None, :]
            out = client.predict(wave)
            face = out["face_image"][0]
            save_face(face, os.path.join(served_dir, f"{speaker}.png"))
            soundfile.write(
                os.path.join(served_dir, f"{speaker}.wav"), pcm, config.audio.sample_rate
            )
            rows.append(np.concatenate([face, image], axis=1))
        seconds = time.time() - started
    grid = np.concatenate(rows, axis=0)  # per row: predicted | true
    picture = Image.fromarray(grid)
    picture = picture.resize((picture.width * 2, picture.height * 2), Image.NEAREST)
    picture.save(os.path.join(out_dir, "served_faces.png"))
    return {
        "speakers": [p[0] for p in picks],
        "requests": len(picks),
        "seconds": round(seconds, 2),
        "dir": served_dir,
        "grid": os.path.join(out_dir, "served_faces.png"),
    }


def run_demo(
    out_dir: str,
    config,
    identities: int = IDENTITIES,
    clips_per_identity: int = CLIPS_PER_IDENTITY,
    seed: int = 0,
    log=print,
) -> dict:
    """Runs steps [1]-[7] into `out_dir`, logs the headline figures against the bars and returns the
    summary it writes to <out_dir>/summary.json."""
    from s2f_tf.evaluate import evaluate
    from s2f_tf.export import export_workdir

    started = time.time()
    os.makedirs(out_dir, exist_ok=True)
    times: dict = {}
    summary: dict = {"config": config.name}

    def stage(name):
        times[name] = round(time.time() - stage.t0, 1)
        stage.t0 = time.time()

    stage.t0 = time.time()

    log("== [1] prepare the synthetic corpus (Apache Beam, speaker-disjoint splits)")
    data_dir = os.path.join(out_dir, "data")
    summary["data"] = _prepare(data_dir, config, identities, clips_per_identity, seed, log)
    stage("prepare")

    workdir = os.path.join(out_dir, "run")
    summary["training"] = _train_stages(config, workdir, data_dir, log, stage)

    log("== [5] evaluate on held-out speakers")
    metrics = evaluate(workdir, data_dir, out_dir=out_dir, log=log)
    stage("evaluate")

    log("== [6] export a SavedModel for TF Serving")
    export_base = os.path.join(out_dir, "export")
    version_dir = export_workdir(workdir, export_base, "s2f")
    log(f"   {version_dir}")
    stage("export")

    log("== [7] serve it on 127.0.0.1 and predict faces for held-out voices over gRPC")
    summary["served"] = _served_predictions(
        out_dir, os.path.join(export_base, "s2f"), data_dir, config, 8, log
    )
    stage("serve_predict")

    summary["headline"] = _headline(metrics)
    tensorboard = os.path.join(out_dir, "tensorboard")
    if not os.path.exists(tensorboard):
        os.symlink(os.path.join("run", "tensorboard"), tensorboard)
    summary["times_seconds"] = times
    summary["wall_seconds"] = round(time.time() - started, 1)
    with open(os.path.join(out_dir, "summary.json"), "w") as f:
        json.dump(summary, f, indent=2)
    _log_headline(summary, out_dir, version_dir, tensorboard, log)
    return summary


def _prepare(
    data_dir: str, config, identities: int, clips_per_identity: int, seed: int, log
) -> dict:
    """[1] The synthetic corpus into `data_dir` (reused when already there); its summary entry."""
    from pipelines.common import run_prepare
    from pipelines.synthetic import SyntheticSource
    from s2f_tf import factory

    size = config.face_encoder.image_size
    info = run_prepare(
        SyntheticSource(identities, clips_per_identity, size, seed),
        data_dir,
        arguments={
            "identities": identities,
            "clips_per_identity": clips_per_identity,
            "image_size": size,
            "seed": seed,
        },
        log=log,
        texture_warp=factory.texture_warp(config),
    )
    return {"dir": data_dir, "clips": info.counts, "speakers": info.speaker_counts}


def _train_stages(config, workdir: str, data_dir: str, log, stage) -> dict:
    """[2-4] Trains each stage in turn (`stage(name)` after each); their steps and final losses."""
    from s2f_tf.train.loop import TrainOptions, train
    from s2f_tf.workdir import STAGES

    results = {}
    for i, name in enumerate(STAGES, start=2):
        log(
            f"== [{i}] train the {name.replace('_', ' ')} ({getattr(config.train, f'{name}_steps')} steps)"
        )
        results[name] = train(
            config,
            TrainOptions(stage=name, workdir=workdir, data_dir=data_dir, jit_compile=False),
            log=log,
        )
        log(
            f"   {results[name]['examples_per_second']:.0f} examples/s, final losses "
            + ", ".join(f"{k} {v:.3g}" for k, v in results[name]["losses"].items())
        )
        stage(name)
    return {k: {"steps": v["steps"], "losses": v["losses"]} for k, v in results.items()}


def _headline(metrics: dict) -> dict:
    """The figures the demo is judged by (first input of metrics.json), and whether each clears its
    bar."""
    key = next(iter(metrics["inputs"]))
    entry = metrics["inputs"][key]
    retrieval = entry["retrieval"]
    r1, chance = retrieval["cosine"]["R@1"], retrieval["chance"]["R@1"]
    sex = entry.get("attributes", {}).get("sex", {}).get("agreement")
    f2f = metrics["face_to_face"]
    f2f_r1 = f2f["image_retrieval"]["cosine"]["R@1"]
    f2f_sharpness = f2f["sharpness"]["relative_to_targets"]
    same_clip = entry.get("protocols", {}).get("same_clip", {})
    f2f_attributes = _face_to_face_attributes(f2f)
    f2f_sex, f2f_sex_by_class = f2f_attributes["sex_agreement"], f2f_attributes["sex_by_class"]
    return {
        "input": key,
        "protocol": entry.get("protocol", "same_clip"),
        "same_clip": {  # for comparison only: each voice against its own clip's face (optimistic)
            "cosine_R@1": same_clip.get("retrieval", {}).get("cosine", {}).get("R@1"),
            "matching_1:2": same_clip.get("matching", {}).get("unconstrained", {}).get("accuracy"),
            "face_to_face_image_R@1": f2f.get("image_retrieval_same_clip", {})
            .get("cosine", {})
            .get("R@1"),
        },
        "gallery_size": retrieval["gallery_size"],
        "cosine_R@1": r1,
        "chance_R@1": chance,
        "R@1_over_chance": round(r1 / chance, 2),
        "sex_agreement": sex,
        "cosine_angle_degrees": entry["similarity"]["cosine_angle_degrees"]["mean"],
        "face_to_face_image_R@1": f2f_r1,
        "face_to_face_sharpness": f2f_sharpness,
        "face_to_face_attributes": f2f_attributes,
        "confidence_intervals": entry.get("confidence_intervals", {}),
        "matching_1:2": {k: v["accuracy"] for k, v in entry.get("matching", {}).items()},
        "bars": {
            "R@1_over_chance >= 5": r1 / chance >= R1_OVER_CHANCE,
            "sex_agreement >= 0.90": sex is not None and sex >= SEX_AGREEMENT,
            "face_to_face_image_R@1 >= 0.90": f2f_r1 >= FACE_TO_FACE_R1,
            "face_to_face_sharpness >= 0.5": f2f_sharpness >= FACE_TO_FACE_SHARPNESS,
            "face_to_face_sex_agreement >= 0.95": f2f_sex is not None
            and f2f_sex >= FACE_TO_FACE_SEX,
            "face_to_face_sex_agreement of each sex >= 0.90": bool(f2f_sex_by_class)
            and min(f2f_sex_by_class.values()) >= FACE_TO_FACE_SEX_EACH_CLASS,
        },
    }


def _face_to_face_attributes(f2f: dict) -> dict:
    """Faces decoded from the true feature against the true faces, as the attribute judge reads
    them: sex agreement overall and among each sex's clips (the data's labels), age-band agreement
    (None where the data has no such attribute)."""
    ci, by_sex = f2f.get("confidence_intervals", {}), f2f.get("by_group", {}).get("sex", {})
    return {
        "sex_agreement": ci.get("sex_agreement", {}).get("value"),
        "sex_by_class": {
            c: v["sex_agreement"]["value"] for c, v in by_sex.items() if "sex_agreement" in v
        },
        "age_band_agreement": ci.get("age_band_agreement", {}).get("value"),
    }


def _log_face_to_face_attributes(h: dict, log) -> None:
    a, bars = h["face_to_face_attributes"], h["bars"]
    if a["sex_agreement"] is None:
        return
    met = bars["face_to_face_sex_agreement of each sex >= 0.90"]
    log(
        f"   face to face, sex as the attribute judge reads it: {100 * a['sex_agreement']:.1f}%"
        f" [bar: 95%] {'met' if bars['face_to_face_sex_agreement >= 0.95'] else 'NOT MET'}; "
        + ", ".join(f"{c} {100 * v:.1f}%" for c, v in a["sex_by_class"].items())
        + f" [bar: 90% each] {'met' if met else 'NOT MET'}"
        + (
            f"; age band {100 * a['age_band_agreement']:.1f}%"
            if a["age_band_agreement"] is not None
            else ""
        )
    )


def _log_headline(summary: dict, out_dir: str, version_dir: str, tensorboard: str, log) -> None:
    """The closing lines: headline figures against their bars, then where everything went."""
    h = summary["headline"]
    key, r1, chance, sex = h["input"], h["cosine_R@1"], h["chance_R@1"], h["sex_agreement"]
    f2f_r1, f2f_sharpness = h["face_to_face_image_R@1"], h["face_to_face_sharpness"]
    log(
        f"== done in {summary['wall_seconds']:.0f} s. Held-out speakers"
        f" ({key} input, gallery {h['gallery_size']}; protocol {h['protocol']}: each voice against"
        " its identity's faces, never its own clip's):"
    )
    log(
        f"   retrieval R@1 (cosine) {100 * r1:.1f}% = {h['R@1_over_chance']:.1f}x chance"
        f" ({100 * chance:.1f}%)"
        f"  [bar: 5x] {'met' if h['bars']['R@1_over_chance >= 5'] else 'NOT MET'}"
    )
    ci = h["confidence_intervals"]

    def interval(name: str) -> str:
        return (
            f" [95% {100 * ci[name]['low']:.1f}-{100 * ci[name]['high']:.1f}]" if name in ci else ""
        )

    log(
        f"   retrieval R@1{interval('retrieval_R@1')}; 1:2 matching "
        + ", ".join(
            f"{label} {100 * h['matching_1:2'][k]:.1f}%{interval(name)}"
            for k, label, name in (
                ("unconstrained", "any distractor", "matching_1:2"),
                ("same_sex", "same-sex distractor", "matching_1:2_same_sex"),
            )
            if k in h["matching_1:2"]
        )
        + " (chance 50%)"
    )
    if sex is not None:
        log(
            f"   sex agreement, voice-predicted vs true face: {100 * sex:.0f}%"
            f"{interval('sex_agreement')}  [bar: 90%] "
            f"{'met' if h['bars']['sex_agreement >= 0.90'] else 'NOT MET'}"
        )
    log(
        f"   face to face (decoded from the true feature, re-encoded): image-space R@1 {100 * f2f_r1:.1f}% "
        f"[bar: 90%] {'met' if h['bars']['face_to_face_image_R@1 >= 0.90'] else 'NOT MET'}; sharpness "
        f"{f2f_sharpness:.2f} of the canonical targets' [bar: 0.5] "
        f"{'met' if h['bars']['face_to_face_sharpness >= 0.5'] else 'NOT MET'}"
    )
    _log_face_to_face_attributes(h, log)
    same = h.get("same_clip", {})
    if same.get("cosine_R@1") is not None:
        log(
            f"   for comparison, same clip (each voice against its own clip's face; optimistic, no bar):"
            f" R@1 {100 * same['cosine_R@1']:.1f}%, 1:2 matching {100 * same['matching_1:2']:.1f}%,"
            f" face to face image-space R@1 {100 * same['face_to_face_image_R@1']:.1f}%"
        )
    log(
        f"   faces: {out_dir}/faces.png (clip's face | target | from the true feature | from the voice), "
        f"{out_dir}/served_faces.png (served over gRPC: predicted | true)"
    )
    log(
        f"   report: {out_dir}/report.html   metrics: {out_dir}/metrics.json"
        f"   summary: {out_dir}/summary.json"
    )
    log(f"   SavedModel: {version_dir}   TensorBoard: tensorboard --logdir {tensorboard}")
    return summary
