"""`s2f evaluate`: honest quality figures on held-out (speaker-disjoint) data.

For each input length (the preset's clip length and half of it; paper: 6 s and 3 s):
  feature similarity between v_s (from the voice) and v_f (the true face's feature):
    angle = degrees between them; L2 / L1 = || v_s/|v_s| - v_f/|v_f| || (unit-normalised features,
    so the figures do not depend on the feature scale); mean and std over clips
  retrieval (speech -> face): each query's gallery holds its own clip's true face and one face of
    each of up to G-1 OTHER test speakers; recall@1/2/5/10 by cosine, L1 and L2, with the gallery
    size G and chance (K / G) reported next to every number
  attributes (where the data has them): a small CNN attribute classifier trained on the TRUE face
    images of the training split (standing in for the face-attribute service the paper used)
    labels the true face and the face decoded from the voice; agreement for binary attributes
    (sex), Pearson r for continuous ones, and the classifier's own accuracy on true faces
  fidelity of decoded faces, for faces decoded from the voice and from the TRUE feature ("face to
    face": the decoder's ceiling): image-space retrieval (decode, re-encode with the frozen face
    encoder, recall@K among the same galleries of true faces) and sharpness (mean squared
    Laplacian of the grey image relative to the decoder's targets and to the input faces);
    face to face also gets the attribute agreement
Writes metrics.json, faces.png (per row: the clip's face | the decoder's target | decoded from the
true feature | decoded from the voice) and report.html.
"""

from __future__ import annotations

import base64
import datetime
import html
import io
import json
import os

import numpy as np
import tensorflow as tf

from s2f_tf import contract
from s2f_tf.metrics import KS, retrieval_figures, sharpness_figures, similarity_figures
from s2f_tf.data.dataset import InputOptions, make_dataset
from s2f_tf.data.schema import DatasetInfo
from s2f_tf.workdir import Workdir, load_frozen_face_encoder, load_trained_model

JUDGE_IMAGES = 4000                  # true training faces the attribute judge learns from, at most ...
JUDGE_IMAGE_BYTES = 256 * 2 ** 20    # ... and no more than this much uint8 image memory (224 px: ~1,700)
BINARY_ATTRIBUTES = ("sex",)


def train_attribute_classifier(images: np.ndarray, values: np.ndarray, names, steps: int = 1500,
                               batch_size: int = 64, seed: int = 0):
  """A small CNN: face images uint8 [N, S, S, 3] -> attributes [N, A] (binary ones as probabilities).

  Trained on true faces only; NaN (unknown) attributes are masked out of the loss.
  Returns predict(images [M, S, S, 3] uint8 or float in [0, 255]) -> [M, A].
  """
  import keras
  binary = np.array([n in BINARY_ATTRIBUTES for n in names])
  finite = np.isfinite(values)
  mu = np.where(binary, 0.0, np.nanmean(np.where(finite, values, np.nan), axis=0))
  sd = np.where(binary, 1.0, np.nanstd(np.where(finite, values, np.nan), axis=0) + 1e-6)
  target = np.where(finite, (values - mu) / sd, 0.0).astype(np.float32)
  keras.utils.set_random_seed(seed)
  model = keras.Sequential([
      keras.layers.Input(images.shape[1:]),
      keras.layers.Rescaling(1.0 / 255.0),
      keras.layers.Conv2D(16, 3, strides=2, padding="same", activation="relu"),
      keras.layers.Conv2D(32, 3, strides=2, padding="same", activation="relu"),
      keras.layers.Conv2D(64, 3, strides=2, padding="same", activation="relu"),
      keras.layers.Conv2D(64, 3, strides=2, padding="same", activation="relu"),
      keras.layers.GlobalAveragePooling2D(),
      keras.layers.Dense(64, activation="relu"),
      keras.layers.Dense(len(names))], name="attribute_classifier")
  optimizer = keras.optimizers.Adam(2e-3)
  bin_mask = tf.constant(binary, tf.bool)

  @tf.function
  def step(x, y, ok):
    with tf.GradientTape() as tape:
      out = model(tf.cast(x, tf.float32), training=True)
      bce = tf.nn.sigmoid_cross_entropy_with_logits(labels=y, logits=out)
      loss = tf.where(bin_mask[None], bce, tf.square(out - y))
      loss = tf.reduce_sum(tf.where(ok, loss, 0.0)) / tf.maximum(tf.reduce_sum(tf.cast(ok, tf.float32)), 1.0)
    grads = tape.gradient(loss, model.trainable_variables)
    optimizer.apply(grads, model.trainable_variables)
    return loss

  rng = np.random.default_rng(seed)
  for _ in range(steps):
    idx = rng.integers(0, len(images), batch_size)
    step(images[idx], target[idx], finite[idx])

  def predict(x):
    out = model.predict(np.asarray(x, np.float32), batch_size=256, verbose=0)
    return np.where(binary, 1.0 / (1.0 + np.exp(-out)), out * sd + mu)
  return predict


def attribute_figures(names, predict, true_images, voice_images, true_values) -> dict:
  """Agreement / correlation between the classifier's reading of true and voice-decoded faces."""
  p_true, p_voice = predict(true_images), predict(voice_images)
  out = {}
  for j, name in enumerate(names):
    known = np.isfinite(true_values[:, j])
    if name in BINARY_ATTRIBUTES:
      out[name] = {"agreement": float(np.mean((p_true[:, j] > 0.5) == (p_voice[:, j] > 0.5))),
                   "classifier_accuracy_on_true_faces":
                       float(np.mean((p_true[known, j] > 0.5) == (true_values[known, j] > 0.5)))}
    else:
      r = (np.corrcoef(p_true[:, j], p_voice[:, j])[0, 1]
           if np.std(p_voice[:, j]) > 0 and np.std(p_true[:, j]) > 0 else 0.0)
      ceiling = (np.corrcoef(p_true[known, j], true_values[known, j])[0, 1]
                 if known.sum() > 2 and np.std(p_true[known, j]) > 0 else 0.0)
      out[name] = {"pearson_r": float(r), "classifier_r_on_true_faces": float(ceiling)}
  return out


class _Models:
  def __init__(self, workdir: str, vgg_face_weights: str | None):
    self.s2f, self.config = load_trained_model(workdir)
    self.face_encoder = load_frozen_face_encoder(self.config, workdir, vgg_face_weights)
    self.encode_faces = tf.function(lambda im: self.face_encoder(tf.cast(im, tf.float32), training=False)["feature"])
    self.encode_voice = tf.function(lambda w: self.s2f.encode(w, training=False))
    self.decode = tf.function(lambda v: self.s2f.face_decoder(v, training=False)["image"])

  def decode_faces(self, features: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """Features [N, D] -> decoded faces float32 [N, S, S, 3] in [0, 255]."""
    return np.concatenate([np.clip(self.decode(features[i:i + batch_size]).numpy(), 0.0, 1.0) * 255.0
                           for i in range(0, len(features), batch_size)])

  def encode_images(self, images: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """Faces [N, S, S, 3] in [0, 255] -> face-encoder features [N, D]."""
    return np.concatenate([self.encode_faces(images[i:i + batch_size]).numpy()
                           for i in range(0, len(images), batch_size)])


def _collect(models: _Models, data_dir: str, split: str, info: DatasetInfo, samples: int,
             lengths: list[int], limit: int | None, with_voice: bool, images: bool = True,
             features: bool = True) -> dict:
  fields = ["image", "speaker", "clip_id"] + (["pcm", "target_image"] if with_voice else [])
  if info.attribute_names:
    fields.append("attributes")
  opts = InputOptions(batch_size=32, clip_samples=samples, training=False, fields=tuple(fields),
                      drop_remainder=False, repeat=False)
  out: dict = {"v_f": [], "speaker": [], "attributes": [], "images": [], "clip_id": [], "targets": []}
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
  return {k: (np.concatenate(v) if v and not isinstance(v[0], str) else v) for k, v in out.items()}


def _faces_png(models: _Models, data: dict, length: int, rows: int = 8) -> bytes:
  """Per row (one test speaker): the clip's face, the decoder's target, the face decoded from the
  true feature and the face decoded from the voice."""
  from PIL import Image, ImageDraw
  speakers = data["speaker"]
  picks = [int(np.flatnonzero(speakers == s)[0]) for s in np.unique(speakers)][:rows]
  columns = [("clip's face", data["images"][picks].astype(np.float32))]
  if len(data["targets"]):
    columns.append(("decoder's target", data["targets"][picks].astype(np.float32)))
  columns += [("from true feature", models.decode_faces(data["v_f"][picks])),
              ("from the voice", models.decode_faces(data[f"v_s_{length}"][picks]))]
  size = columns[0][1].shape[1]
  scale = max(1, 128 // size)
  header = 18
  grid = np.concatenate([np.concatenate(row, axis=1) for row in zip(*(images for _, images in columns))], 0)
  image = Image.fromarray(np.uint8(np.clip(np.round(grid), 0, 255))).resize(
      (grid.shape[1] * scale, grid.shape[0] * scale), Image.NEAREST)
  canvas = Image.new("RGB", (image.width, image.height + header), "white")
  canvas.paste(image, (0, header))
  draw = ImageDraw.Draw(canvas)
  for i, (label, _) in enumerate(columns):
    draw.text((i * size * scale + 4, 3), label, fill="black")
  buf = io.BytesIO()
  canvas.save(buf, format="PNG")
  return buf.getvalue()


def fidelity_figures(models: _Models, decoded: np.ndarray, test: dict, references: dict,
                     gallery_size: int) -> dict:
  """What decoded faces [N, S, S, 3] (0..255) keep: image-space retrieval (re-encoded by the frozen
  face encoder, among the gallery's true faces) and sharpness relative to `references`."""
  return {"image_retrieval": retrieval_figures(models.encode_images(decoded), test["v_f"], test["speaker"],
                                               gallery_size),
          "sharpness": sharpness_figures(decoded, {k: v for k, v in references.items() if len(v)})}


def evaluate(workdir: str, data_dir: str, out_dir: str | None = None, split: str = "test",
             gallery_size: int = 100, vgg_face_weights: str | None = None, train_limit: int | None = None,
             log=print) -> dict:
  """Computes the figures and writes metrics.json, faces.png and report.html to `out_dir`."""
  if split not in contract.SPLITS:
    raise ValueError(f"--split must be one of {', '.join(contract.SPLITS)}, got {split!r}")
  out_dir = out_dir or Workdir(workdir).eval_dir
  tf.io.gfile.makedirs(out_dir)
  info = DatasetInfo.read(data_dir)
  models = _Models(workdir, vgg_face_weights)
  config = models.config
  long = config.audio.clip_samples
  short = max(config.audio.min_samples, long // 2)
  lengths = [long, short]
  log(f"evaluate: {split} split of {data_dir}, inputs of {contract.seconds(long):g} s and "
      f"{contract.seconds(short):g} s")
  test = _collect(models, data_dir, split, info, long, lengths, None, with_voice=True)
  n_speakers = len(np.unique(test["speaker"]))
  metrics: dict = {"workdir": workdir, "data": data_dir, "split": split, "clips": int(len(test["v_f"])),
                   "speakers": int(n_speakers), "config": config.name,
                   "definitions": {"l2/l1": "distance between unit-normalised features",
                                   "gallery": "own clip's face + one face of each of G-1 other speakers",
                                   "attributes": "CNN attribute classifier trained on true face images "
                                                 "(train split), applied to true and decoded faces",
                                   "image_retrieval": "decoded face re-encoded by the frozen face encoder, "
                                                      "ranked among the gallery's true-face features",
                                   "sharpness": "mean squared Laplacian of the grey decoded face relative "
                                                "to the decoder's targets / the input faces",
                                   "face_to_face": "faces decoded from the true face's feature"},
                   "inputs": {}}
  predict_attributes = None
  if info.attribute_names and "train" in info.shards and len(test["attributes"]):
    size = config.face_encoder.image_size
    train_limit = train_limit or max(1000, min(JUDGE_IMAGES, JUDGE_IMAGE_BYTES // (size * size * 3)))
    train = _collect(models, data_dir, "train", info, long, [], train_limit, with_voice=False,
                     features=False)        # the attribute judge needs images and labels only
    log(f"  training the attribute classifier on {len(train['images'])} true training faces")
    predict_attributes = train_attribute_classifier(train["images"], train["attributes"], info.attribute_names)
  references = {"targets": test["targets"], "input_faces": test["images"]}
  from_true = models.decode_faces(test["v_f"])                                # [N, S, S, 3] 0..255
  metrics["face_to_face"] = fidelity_figures(models, from_true, test, references, gallery_size)
  if predict_attributes is not None:
    metrics["face_to_face"]["attributes"] = attribute_figures(
        info.attribute_names, predict_attributes, test["images"], from_true, test["attributes"])
  f2f = metrics["face_to_face"]
  log(f"  face to face (decoded from the true feature): image-space R@1 "
      f"{100 * f2f['image_retrieval']['cosine']['R@1']:.1f}% (chance "
      f"{100 * f2f['image_retrieval']['chance']['R@1']:.1f}%), sharpness "
      f"{f2f['sharpness']['relative_to_targets']:.2f} of the targets'")
  for n in lengths:
    key = f"{contract.seconds(n):g}s"
    v_s = test[f"v_s_{n}"]
    decoded = models.decode_faces(v_s)                                          # [N, S, S, 3] 0..255
    entry = {"similarity": similarity_figures(v_s, test["v_f"]),
             "retrieval": retrieval_figures(v_s, test["v_f"], test["speaker"], gallery_size),
             **fidelity_figures(models, decoded, test, references, gallery_size)}
    if predict_attributes is not None:
      entry["attributes"] = attribute_figures(info.attribute_names, predict_attributes, test["images"],
                                              decoded, test["attributes"])
    metrics["inputs"][key] = entry
    r = entry["retrieval"]
    log(f"  {key}: angle {entry['similarity']['cosine_angle_degrees']['mean']:.1f} deg, "
        f"cosine R@1 {100 * r['cosine']['R@1']:.1f}% (chance {100 * r['chance']['R@1']:.1f}%, "
        f"gallery {r['gallery_size']})"
        + (f", sex agreement {100 * entry['attributes']['sex']['agreement']:.0f}%"
           if "sex" in entry.get("attributes", {}) else ""))
  png = _faces_png(models, test, long)
  with tf.io.gfile.GFile(os.path.join(out_dir, "faces.png"), "wb") as f:
    f.write(png)
  with tf.io.gfile.GFile(os.path.join(out_dir, "metrics.json"), "w") as f:
    f.write(json.dumps(metrics, indent=2))
  with tf.io.gfile.GFile(os.path.join(out_dir, "report.html"), "w") as f:
    f.write(render_report(metrics, png))
  metrics["outputs"] = {k: os.path.join(out_dir, k) for k in ("metrics.json", "faces.png", "report.html")}
  return metrics


def render_report(metrics: dict, png: bytes) -> str:
  rows = []
  for key, entry in metrics["inputs"].items():
    r, s = entry["retrieval"], entry["similarity"]
    for metric in ("cosine", "l2", "l1"):
      rows.append(f"<tr><td>{key}</td><td>{metric}</td>" + "".join(
          f"<td>{100 * r[metric][f'R@{k}']:.1f}</td>" for k in KS) + "</tr>")
    rows.append(f"<tr><td>{key}</td><td>chance (G={r['gallery_size']})</td>" + "".join(
        f"<td>{100 * r['chance'][f'R@{k}']:.1f}</td>" for k in KS) + "</tr>")
    rows.append(f"<tr><td>{key}</td><td colspan=5>angle {s['cosine_angle_degrees']['mean']:.2f} ± "
                f"{s['cosine_angle_degrees']['std']:.2f}°, L2 {s['l2']['mean']:.3f} ± {s['l2']['std']:.3f}, "
                f"L1 {s['l1']['mean']:.2f} ± {s['l1']['std']:.2f}; attributes: "
                f"{html.escape(json.dumps(entry.get('attributes', {})))}</td></tr>")
  fidelity = []
  sources = [("face to face (true feature)", metrics.get("face_to_face"))]
  sources += [(f"from the voice, {key}", entry) for key, entry in metrics["inputs"].items()]
  for label, entry in sources:
    if not entry or "image_retrieval" not in entry:
      continue
    r, sh = entry["image_retrieval"], entry["sharpness"]
    sex = entry.get("attributes", {}).get("sex", {}).get("agreement")
    fidelity.append(f"<tr><td>{html.escape(label)}</td>" + "".join(
        f"<td>{100 * r['cosine'][f'R@{k}']:.1f} <small>({100 * r['chance'][f'R@{k}']:.0f})</small></td>"
        for k in (1, 5, 10))
        + f"<td>{sh.get('relative_to_targets', float('nan')):.2f}</td>"
        + f"<td>{sh.get('relative_to_input_faces', float('nan')):.2f}</td>"
        + f"<td>{'' if sex is None else f'{100 * sex:.0f}'}</td></tr>")
  gallery = metrics.get("face_to_face", {}).get("image_retrieval", {}).get("gallery_size", "")
  image = base64.b64encode(png).decode()
  return f"""<!doctype html><html><head><meta charset="utf-8"><title>s2f evaluation</title>
<style>body{{font-family:sans-serif;margin:2em}}td,th{{padding:2px 8px;border-bottom:1px solid #ddd}}</style>
</head><body><h1>Speech2Face evaluation</h1>
<p>{metrics['clips']} held-out clips from {metrics['speakers']} speakers never seen in training
(split <code>{html.escape(metrics['split'])}</code>, config <code>{html.escape(metrics['config'])}</code>),
{datetime.date.today().isoformat()}.</p>
<h2>Speech-to-face retrieval, recall@K (%)</h2>
<table><tr><th>input</th><th>metric</th>{''.join(f'<th>R@{k}</th>' for k in KS)}</tr>{''.join(rows)}</table>
<h2>Decoded faces: what they keep</h2><p>Image-space retrieval: each decoded face, re-encoded by the
frozen face encoder, ranked among the gallery's true faces (G={gallery}; chance in brackets).
Sharpness: the decoded faces' fine-detail energy (mean squared Laplacian) relative to the decoder's
targets and to the clips' faces.</p>
<table><tr><th>decoded from</th><th>R@1</th><th>R@5</th><th>R@10</th><th>sharpness vs targets</th>
<th>vs clips' faces</th><th>sex agreement (%)</th></tr>{''.join(fidelity)}</table>
<h2>Faces</h2><p>Per row: the clip's face, the decoder's target, the face decoded from the true face
feature, and the face predicted from the voice alone.</p><img src="data:image/png;base64,{image}" alt="faces">
</body></html>"""
