// s2f page: speech from the microphone or a file -> 16 kHz mono -> the model server's REST predict
// API (TF Serving's request body) -> the face and its landmarks, with how long it took.
//
// The steps follow `s2f predict` for one speaker: windows of exactly the export's clip length, half
// a clip apart, spread evenly over the recording (a recording shorter than a clip is tiled to one,
// as training tiles short clips), so a server that batches (TF Serving with serving/batching.config)
// can merge them with anyone's; every window through serving_default; with more than one window,
// their features combined (the mean of unit vectors at the mean norm) and drawn by the
// decode_feature signature. The clip length and the minimum come from the model itself: the
// metadata the REST API answers with (the export's model_info signature). Served by `s2f serve` at
// http://127.0.0.1:8501/, which also writes web/config.json (the model's name). Behind another
// server (TF Serving with a proxy that serves these files on the same origin) the URL names the
// model: ?model=s2f.

const RATE = 16000;                       // what every s2f export takes (contract.SAMPLE_RATE)
const MAX_BATCH = 8;                      // windows per request
const HERE = import.meta.url;
const $ = (id) => document.getElementById(id);

const page = {config: null, recorder: null, last: null};
window.s2f = page;                        // for tests and the curious: page.last holds the last run

class ShownError extends Error {}         // a message for the user, shown as it is

// -- the model and its limits
async function loadConfig() {
  let found = {};
  try {
    const r = await fetch(new URL("config.json", HERE), {cache: "no-store"});
    if (r.ok) found = await r.json();
  } catch (e) { /* not served by s2f serve: the URL's parameters and the defaults below */ }
  const model = new URLSearchParams(location.search).get("model") || found.model || "s2f";
  return {model, ...(await modelInfo(model))};
}

async function modelInfo(model) {         // the model_info signature's input defaults, from metadata
  const r = await fetch(`v1/models/${encodeURIComponent(model)}/metadata`, {cache: "no-store"});
  const body = await r.json().catch(() => ({}));
  if (!r.ok) throw new ShownError(`model ${model}: ${body.error || r.statusText}`);
  const sigs = ((body.metadata || {}).signature_def || {}).signature_def || {};
  const defaults = (sigs.model_info || {}).defaults || {};
  const value = (name) => Number(((defaults[name] || {}).int64_val || [])[0]);
  const info = {clip: value("clip_samples"), min: value("min_samples")};
  if (!(info.clip > 0 && info.min > 0)) {
    throw new ShownError(`model ${model} does not say its clip length (no model_info signature in its metadata): export it again with this s2f`);
  }
  return info;
}

function tile(x, length) {                // repeated from the start to `length` (contract.tile)
  if (x.length >= length) return x.subarray(0, length);
  const out = new Float32Array(length);
  for (let at = 0; at < length; at += x.length) out.set(x.subarray(0, Math.min(x.length, length - at)), at);
  return out;
}

async function showModel() {
  const c = page.config;
  const r = await fetch(`v1/models/${encodeURIComponent(c.model)}`, {cache: "no-store"});
  const body = await r.json().catch(() => ({}));
  if (!r.ok) throw new ShownError(`model ${c.model}: ${body.error || r.statusText}`);
  const ready = (body.model_version_status || []).filter((v) => v.state === "AVAILABLE").map((v) => v.version);
  $("model").textContent = `model ${c.model}, version ${ready.join(", ") || "none available yet"}; ` +
    `windows of ${(c.clip / RATE).toFixed(1)} s, at least ${(c.min / RATE).toFixed(1)} s of audio`;
}

// -- audio: everything becomes 16 kHz mono through the browser's own decoder and resampler
async function toModelRate(bytes) {
  const context = new OfflineAudioContext(1, 1, RATE);    // decodeAudioData resamples to RATE
  let buffer;
  try {
    buffer = await context.decodeAudioData(bytes);
  } catch (e) {
    throw new ShownError("this browser cannot decode that file as audio");
  }
  const out = new Float32Array(buffer.length);
  for (let c = 0; c < buffer.numberOfChannels; c++) {
    const channel = buffer.getChannelData(c);
    for (let i = 0; i < out.length; i++) out[i] += channel[i] / buffer.numberOfChannels;
  }
  return out;
}

function wavBytes(samples, rate) {        // float [-1, 1] mono -> a 16-bit PCM WAV file's bytes
  const view = new DataView(new ArrayBuffer(44 + 2 * samples.length));
  const text = (at, s) => [...s].forEach((ch, i) => view.setUint8(at + i, ch.charCodeAt(0)));
  text(0, "RIFF"); view.setUint32(4, 36 + 2 * samples.length, true); text(8, "WAVEfmt ");
  view.setUint32(16, 16, true); view.setUint16(20, 1, true); view.setUint16(22, 1, true);
  view.setUint32(24, rate, true); view.setUint32(28, 2 * rate, true); view.setUint16(32, 2, true);
  view.setUint16(34, 16, true); text(36, "data"); view.setUint32(40, 2 * samples.length, true);
  samples.forEach((x, i) => view.setInt16(44 + 2 * i, Math.max(-32768, Math.min(32767, Math.round(x * 32768))), true));
  return view.buffer;
}

// -- windows and features, as `s2f predict` has them (s2f_tf/media/speech.py, s2f_tf/recording.py)
function windowStarts(length, window, hop) {
  if (length <= window) return [0];
  const count = Math.ceil((length - window) / hop) + 1;
  return Array.from({length: count}, (_, i) => Math.round(i * (length - window) / (count - 1)));
}

function combine(features) {              // [W][D] -> [D]: mean of unit vectors, at the mean norm
  const norm = (v) => Math.sqrt(v.reduce((s, x) => s + x * x, 0));
  const norms = features.map(norm);
  const mean = features[0].map((_, d) => features.reduce((s, f, w) => s + f[d] / Math.max(norms[w], 1e-12), 0) / features.length);
  const scale = norms.reduce((s, n) => s + n, 0) / norms.length / Math.max(norm(mean), 1e-12);
  return mean.map((x) => x * scale);
}

// -- the REST predict API (TF Serving's columnar format)
async function predict(signature, input, rows) {
  const r = await fetch(`v1/models/${encodeURIComponent(page.config.model)}:predict`, {
    method: "POST", headers: {"Content-Type": "application/json"},
    body: JSON.stringify({signature_name: signature, inputs: {[input]: rows}}),
  }).catch(() => { throw new ShownError("the model server does not answer (is s2f serve still running?)"); });
  const body = await r.json().catch(() => ({}));
  if (!r.ok) throw new ShownError(`the model server refused the request: ${body.error || r.status + " " + r.statusText}`);
  return body.outputs;
}

async function faceFrom(samples) {
  const c = page.config;
  if (samples.length < c.min) {
    throw new ShownError(`${(samples.length / RATE).toFixed(2)} s of audio is too short: the model needs ` +
      `at least ${(c.min / RATE).toFixed(1)} s`);
  }
  let peak = 0;
  for (const x of samples) peak = Math.max(peak, Math.abs(x));
  if (peak < 1e-3) throw new ShownError("the audio is silent: nothing to hear (check the microphone or the file)");
  const window = c.clip;
  const rows = windowStarts(samples.length, window, Math.max(1, Math.floor(window / 2)))
    .map((s) => Array.from(tile(samples.subarray(s, s + window), window), (x) => Math.round(x * 1e6) / 1e6));   // 6 decimals: short JSON
  const started = performance.now();
  let features = [], face = null, calls = 0;
  for (let i = 0; i < rows.length; i += MAX_BATCH) {
    const out = await predict("serving_default", "waveform", rows.slice(i, i + MAX_BATCH));
    calls += 1;
    features = features.concat(out.face_feature);
    if (rows.length === 1) face = {face_image: out.face_image[0], landmarks: out.landmarks[0]};
  }
  const feature = rows.length === 1 ? features[0] : combine(features);
  if (!face) {
    const out = await predict("decode_feature", "face_feature", [feature]);
    calls += 1;
    face = {face_image: out.face_image[0], landmarks: out.landmarks[0]};
  }
  return {rows, feature, ...face, calls, request_ms: performance.now() - started};
}

// -- drawing
function draw(result) {
  const image = result.face_image, size = image.length;
  const face = $("face");
  face.width = face.height = size;
  const pixels = new ImageData(size, size);
  for (let y = 0; y < size; y++) {
    for (let x = 0; x < size; x++) {
      const p = 4 * (y * size + x);
      pixels.data.set(image[y][x], p);
      pixels.data[p + 3] = 255;
    }
  }
  face.getContext("2d").putImageData(pixels, 0, 0);
  drawLandmarks();
}

function drawLandmarks() {
  const overlay = $("overlay"), g = overlay.getContext("2d");
  g.clearRect(0, 0, overlay.width, overlay.height);
  if (!page.last || !$("show_landmarks").checked) return;
  g.fillStyle = "#3cf";
  for (const [x, y] of page.last.landmarks) {
    g.beginPath();
    g.arc(x * overlay.width, y * overlay.height, 2.5, 0, 2 * Math.PI);
    g.fill();
  }
}

function figures(result) {
  const rows = [
    ["audio", `${(result.samples / RATE).toFixed(2)} s at 16 kHz (${result.source})`],
    ["windows", `${result.rows.length} of ${(result.rows[0].length / RATE).toFixed(2)} s`],
    ["request", `${result.request_ms.toFixed(0)} ms (${result.calls} call${result.calls > 1 ? "s" : ""} to the model server)`],
    [result.source === "microphone" ? "end of recording to face" : "file to face", `${result.total_ms.toFixed(0)} ms`],
  ];
  $("figures").replaceChildren(...rows.flatMap(([k, v]) => {
    const dt = document.createElement("dt"), dd = document.createElement("dd");
    dt.textContent = k; dd.textContent = v; dd.dataset.figure = k;
    return [dt, dd];
  }));
}

// -- one run: bytes of any audio file -> face
async function run(bytes, source, since) {
  showError(null);
  setStatus("working\u2026");
  try {
    const samples = await toModelRate(bytes);
    const result = await faceFrom(samples);
    page.last = Object.assign(result, {samples: samples.length, source});
    draw(result);
    result.total_ms = performance.now() - since;
    $("result").hidden = false;
    figures(result);
    setStatus("done");
  } catch (e) {
    showError(e instanceof ShownError ? e.message : `something went wrong in the page: ${e}`);
    setStatus("");
  }
}

function setStatus(text) { $("status").textContent = text; document.body.dataset.state = text === "working\u2026" ? "busy" : "idle"; }

function showError(message) {
  $("error").hidden = !message;
  $("error").textContent = message || "";
}

// -- the microphone
async function startRecording() {
  showError(null);
  let stream;
  try {
    stream = await navigator.mediaDevices.getUserMedia(
      {audio: {channelCount: 1, echoCancellation: false, noiseSuppression: false, autoGainControl: false}});
  } catch (e) {
    showError(`no microphone: ${e.message || e.name} (allow this page to use it, or drop a file instead)`);
    return;
  }
  const context = new AudioContext();
  await context.audioWorklet.addModule(new URL("capture.js", HERE));
  const node = new AudioWorkletNode(context, "s2f-capture", {numberOfInputs: 1, numberOfOutputs: 0});
  const chunks = [];
  node.port.onmessage = (event) => chunks.push(event.data);
  context.createMediaStreamSource(stream).connect(node);
  const limit = Math.max(1, Math.min(30, Number($("seconds").value) || 5));
  const started = performance.now();
  const rec = {context, stream, chunks, started};
  rec.timer = setInterval(() => {
    const t = (performance.now() - started) / 1000;
    $("clock").textContent = `${t.toFixed(1)} s`;
    if (t >= limit) stopRecording();
  }, 50);
  page.recorder = rec;
  $("record").textContent = "Stop";
  setStatus("recording\u2026");
}

async function stopRecording() {
  const rec = page.recorder;
  if (!rec) return;
  page.recorder = null;
  const ended = performance.now();
  clearInterval(rec.timer);
  rec.stream.getTracks().forEach((t) => t.stop());
  const rate = rec.context.sampleRate;
  await rec.context.close();
  $("record").textContent = "Record";
  const samples = new Float32Array(rec.chunks.reduce((n, c) => n + c.length, 0));
  rec.chunks.reduce((at, c) => (samples.set(c, at), at + c.length), 0);
  await run(wavBytes(samples, rate), "microphone", ended);
}

// -- wiring
function takeFile(file) {
  if (file) file.arrayBuffer().then((bytes) => run(bytes, file.name, performance.now()));
}

async function main() {
  try {
    page.config = await loadConfig();
    await showModel();
    $("record").disabled = false;
  } catch (e) {
    showError(e instanceof ShownError ? e.message : `cannot reach the model server: ${e}`);
  }
  $("record").addEventListener("click", () => (page.recorder ? stopRecording() : startRecording()));
  $("file").addEventListener("change", (e) => takeFile(e.target.files[0]));
  $("show_landmarks").addEventListener("change", drawLandmarks);
  const drop = $("drop");
  drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => { e.preventDefault(); drop.classList.remove("over"); takeFile(e.dataTransfer.files[0]); });
  document.body.dataset.ready = "1";
}

main();
