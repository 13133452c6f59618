// The csd-sr page: choose an image, upscale it through POST /v1/upscale, compare and download.
// Plain browser JavaScript (no framework, no build step); every request goes to this server only.

const $ = (id) => document.getElementById(id);

const KEY_STORE = "csd-sr-api-key"; // sessionStorage: the key lives as long as the tab
const POLL_IDLE_MS = 3000;
const POLL_BUSY_MS = 1000; // faster while a request of ours is in flight, for the queue counts

// X-Width-Reason codes (service/scheduling/policy.py), for people. A rung is a width at a precision (fp32 or int8).
const REASONS = {
  idle: "a worker was free, so the best rung",
  headroom: "the best rung still meets the latency target despite the work ahead",
  load: "a cheaper rung because the server is busy: the work ahead of it, or the requests queued behind",
  size: "a cheaper rung: a better one would miss the target for this size even on an idle server",
  deadline: "a cheaper rung to meet the request's deadline",
  best_effort: "too big for the target at any rung, so the cheapest",
  forced: "the width you chose",
  fixed: "the server runs one fixed rung",
};

// Error codes of {"error", "detail"} bodies (service/errors.py), as headings.
const ERROR_TITLES = {
  body_too_large: "The file is larger than this server accepts",
  too_many_pixels: "The image has more pixels than this server accepts",
  unsupported_media_type: "This type of file is not supported",
  bad_image: "The server could not read this image",
  bad_request: "The server could not read the request",
  invalid_option: "An option was refused",
  exceeds_timeout: "This image would take too long at this width",
  overloaded: "The server is busy",
  timeout: "The server did not finish in time",
  not_ready: "The server is still starting",
  cancelled: "The server stopped the request (it is shutting down)",
  unauthorized: "The API key is missing or wrong",
  internal_error: "The server failed (the error is in its log)",
};

// What a person can do about some of them.
const ERROR_HINTS = {
  body_too_large: "Choose a smaller file.",
  too_many_pixels: "Choose a smaller image.",
  unsupported_media_type: "Choose a PNG, JPEG, WebP, BMP, TIFF or GIF image.",
  bad_image: "The file may be damaged or truncated.",
  exceeds_timeout: "Choose auto or a narrower width, or a smaller image.",
};

const OUTPUT_EXT = { "image/png": "png", "image/jpeg": "jpg", "image/webp": "webp" };

const state = {
  model: null, // the last /v1/model answer
  models: null, // the /v1/models answer: scales and noise levels served
  file: null,
  input: null, // {img, w, h} when the browser can decode the file, else null
  inputUrl: null,
  outputUrl: null,
  xhr: null,
  job: null, // the status of the job in flight (POST /v1/jobs), if the image went as one
  keyNeeded: false,
  pollTimer: 0,
  polling: false,
  ticker: 0,
  countdown: 0,
  out: null, // {w, h} of the shown result
};

// ---- formatting ----------------------------------------------------------------------------------

const int = (n) => Math.round(n).toLocaleString("en-US");

function bytes(n) {
  if (n < 1024) return `${n} B`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(1)} KiB`;
  return `${(n / 1024 / 1024).toFixed(1)} MiB`;
}

function seconds(s) {
  return s < 10 ? `${s.toFixed(1)} s` : `${Math.round(s)} s`;
}

// An estimate: milliseconds below a second, so that small images do not all read "0.0 s".
function duration(s) {
  return s < 1 ? `${Math.max(1, Math.round(s * 1000))} ms` : seconds(s);
}

const NOISE_LABELS = {
  none: "none (clean model)",
  jpeg: "jpeg (compression artifacts)",
  real: "real (JPEG, blur, sensor noise)",
};
const widthLabel = (w) => String(w); // 0.25 -> "0.25", 1 -> "1": as X-Width writes it

function fact(list, term, value) {
  const row = document.createElement("div");
  const dt = document.createElement("dt");
  const dd = document.createElement("dd");
  dt.textContent = term;
  dd.textContent = value;
  row.append(dt, dd);
  list.append(row);
}

// ---- the API key ---------------------------------------------------------------------------------

function authHeaders() {
  const key = sessionStorage.getItem(KEY_STORE);
  return key ? { Authorization: `Bearer ${key}` } : {};
}

function askForKey(message) {
  state.keyNeeded = true;
  $("key-message").textContent = message;
  $("key-panel").hidden = false;
  updateGo();
}

$("key-form").addEventListener("submit", (event) => {
  event.preventDefault();
  sessionStorage.setItem(KEY_STORE, $("key-input").value.trim());
  $("key-input").value = "";
  poll();
});

// ---- /v1/model: limits, the width ladder, the live panel -----------------------------------------

async function poll() {
  if (state.polling) return;
  state.polling = true;
  clearTimeout(state.pollTimer);
  let model = null;
  try {
    const r = await fetch("/v1/model", { headers: authHeaders(), cache: "no-store" });
    if (r.status === 401) {
      const sent = Boolean(sessionStorage.getItem(KEY_STORE));
      sessionStorage.removeItem(KEY_STORE);
      askForKey(sent ? "The server refused that key. Enter the right one." : "This server needs an API key.");
      $("live-state").textContent = "needs an API key";
      return; // no polling until a key is given: each try would be another 401
    }
    if (!r.ok) throw new Error(`HTTP ${r.status}`);
    model = await r.json();
  } catch (err) {
    $("live-state").textContent = `no answer (${err.message})`;
  } finally {
    state.polling = false;
  }
  if (model) {
    state.keyNeeded = false;
    $("key-panel").hidden = true;
    applyModel(model);
  }
  schedulePoll();
}

function schedulePoll() {
  clearTimeout(state.pollTimer);
  if (document.hidden || state.keyNeeded) return; // a hidden tab asks nothing; visibilitychange resumes
  state.pollTimer = setTimeout(poll, state.xhr ? POLL_BUSY_MS : POLL_IDLE_MS);
}

document.addEventListener("visibilitychange", () => {
  if (!document.hidden) poll();
});

function applyModel(model) {
  const first = state.model === null;
  state.model = model;
  if (first) {
    buildWidths(model);
    renderWidthQuality();
    loadModels();
  }
  const p = model.policy;
  $("live-state").textContent = model.ready ? `ready, ×${model.scale}` : "warming up";
  $("limits").textContent =
    `Limits: ${int(model.max_pixels)} pixels (at ×4) and ${bytes(model.max_body_bytes)} per request; larger ` +
    `images, up to ${int(model.max_job_pixels)} pixels, run as jobs; larger than ${model.tile_size}×` +
    `${model.tile_size} runs in tiles.`;
  if (p) {
    $("live-running").textContent = `${p.running} (of ${p.workers} workers)`;
    $("live-queued").textContent = `${p.queued} (at most ${p.max_queue})`;
    $("live-wait").textContent = seconds(p.predicted_wait_s);
    $("live-width-label").textContent = `Rung for a ${p.reference_input} image now`;
    $("live-width").textContent = p.rung === null ? `none (${p.reason})` : `${p.rung} (${p.reason})`;
  }
  renderWidthCosts();
  renderFile();
}

// ---- /v1/models: the scales and noise levels served -----------------------------------------------

async function loadModels() {
  try {
    const r = await fetch("/v1/models", { headers: authHeaders(), cache: "no-store" });
    if (!r.ok) return; // the page still works at the default model
    state.models = await r.json();
  } catch {
    return;
  }
  // the native scales, and factors between them served by the next native model and a downscale
  const natives = state.models.scales;
  const factors = [...new Set([...natives, ...FRACTIONAL])].filter((f) => f <= Math.max(...natives));
  $("scale").replaceChildren(
    ...factors
      .sort((a, b) => a - b)
      .map((f) => {
        const label = natives.includes(f) ? `×${f}` : `×${f} (×${nativeScale(f)} + downscale)`;
        return new Option(label, String(f), false, f === state.model.scale);
      }),
  );
  renderNoise();
}

// Factors offered besides the native scales (any in (1, 4] is served; these are the usual ones).
const FRACTIONAL = [1.5, 2.5, 3];

function chosenScale() {
  return Number($("scale").value) || state.model?.scale || 4;
}

// The native scale whose model serves a factor: the smallest at or above it.
function nativeScale(factor) {
  const natives = state.models?.scales ?? [state.model?.scale ?? 4];
  return Math.min(...natives.filter((s) => s >= factor));
}

// The native scale serving the chosen factor: its model's noise levels, costs and limits apply.
function chosenNative() {
  return nativeScale(chosenScale());
}

// The styles served at the chosen factor: the page offers sharp first (the look people expect of an upscaler),
// the API's default stays faithful; with style sharp, the sharpness steps served (the strongest first).
function renderStyle() {
  const styles = state.models?.styles?.[String(chosenNative())] ?? ["faithful"];
  const style = $("style");
  $("style-row").hidden = !styles.includes("sharp");
  if (!styles.includes(style.value)) style.value = styles.includes("sharp") ? "sharp" : "faithful";
  const steps = [...(state.models?.sharpness_steps?.[String(chosenNative())] ?? [])].reverse();
  const sharpness = $("sharpness");
  const kept = sharpness.value;
  sharpness.replaceChildren(...steps.map((s) => new Option(s === 1 ? "1 (strongest)" : String(s), String(s))));
  sharpness.value = steps.map(String).includes(kept) ? kept : String(steps[0] ?? 1);
  $("sharpness-row").hidden = style.value !== "sharp" || steps.length < 2;
  renderWidthQuality();
}

function sharpChosen() {
  return !$("style-row").hidden && $("style").value === "sharp";
}

// What each width box expects, from the card of the model the chosen style (and sharpness) runs: Set5 PSNR for
// faithful, Set5 sharpness (% of the luma's spectral power above a quarter of Nyquist) for sharp.
function renderWidthQuality() {
  const sharp = sharpChosen();
  const step = Number($("sharpness").value || 1);
  const pick = (m) => m.style === "sharp" && m.sharpness === step && m.scale === chosenNative();
  const model = (sharp && state.models?.models.find(pick)) || state.model;
  const bicubic = model.card?.metrics?.Set5?.bicubic;
  const figure = (q) => (sharp ? `Set5 sharpness ${q.sharpness.toFixed(2)} %` : `Set5 ${q.psnr.toFixed(2)} dB`);
  $("widths-hint").textContent =
    (sharp ? "Expected sharpness on Set5 from the model card" : "Expected quality: PSNR on Set5 from the model card") +
    (bicubic ? ` (bicubic: ${figure(bicubic).replace("Set5 ", "")})` : "") +
    ". Cost: compute time relative to the full width, measured by the server.";
  for (const row of model.per_width) {
    const el = document.querySelector(`.quality[data-width="${widthLabel(row.width)}"]`);
    const q = row.quality?.Set5;
    if (el) el.textContent = q && (sharp ? q.sharpness : q.psnr) !== undefined ? `, ${figure(q)}` : "";
  }
}

function renderNoise() {
  renderStyle();
  const levels = state.models?.noise_levels[String(chosenNative())] ?? ["none"];
  const noise = $("noise");
  const kept = noise.value;
  noise.replaceChildren(
    new Option("auto (from the file)", "auto"),
    ...levels.map((l) => new Option(NOISE_LABELS[l] ?? l, l)),
  );
  noise.value = ["auto", ...levels].includes(kept) ? kept : "auto";
  renderFile();
  renderWidthCosts();
}
$("scale").addEventListener("change", renderNoise);
$("style").addEventListener("change", renderStyle);
$("sharpness").addEventListener("change", renderWidthQuality);

function buildWidths(model) {
  const box = $("widths");
  const options = [{ value: "auto", title: "auto", info: "the server picks the best rung that meets its target" }];
  for (const row of model.per_width) {
    options.push({ value: widthLabel(row.width), title: widthLabel(row.width), info: `${row.channels} channels` });
  }
  for (const opt of options) {
    const id = `width-${opt.value}`;
    const wrap = document.createElement("div");
    wrap.className = "choice";
    const input = document.createElement("input");
    Object.assign(input, { type: "radio", name: "width", id, value: opt.value, checked: opt.value === "auto" });
    const label = document.createElement("label");
    label.htmlFor = id;
    const title = document.createElement("strong");
    title.textContent = opt.title;
    const info = document.createElement("span");
    info.className = "hint";
    info.textContent = ` ${opt.info}`;
    const quality = document.createElement("span");
    quality.className = "quality";
    quality.dataset.width = opt.value;
    const cost = document.createElement("span");
    cost.className = "cost";
    cost.dataset.width = opt.value;
    label.append(title, info, quality, cost);
    wrap.append(input, label);
    box.append(wrap);
  }
}

// LR pixels the network runs for an h x w input, tile margins included (service/inference/tiles.py: work_pixels).
function workPixels(h, w) {
  const { tile_size: tile, tile_overlap: margin } = state.model;
  const span = (n) => {
    let total = 0;
    for (let start = 0; start < n; start += tile) total += Math.min(start + tile + margin, n) - Math.max(start - margin, 0);
    return total;
  };
  return span(h) * span(w);
}

function renderWidthCosts() {
  const model = state.model;
  // the costs of the chosen scale's model (each model's own measured seconds per megapixel)
  const native = chosenNative();
  const scaled = state.models?.models.find((m) => m.scale === native && m.noise === "none");
  const rows = (scaled ?? model).per_width;
  const full = rows[rows.length - 1];
  for (const row of rows) {
    const el = document.querySelector(`.cost[data-width="${widthLabel(row.width)}"]`);
    const measured = row.cost && full.cost;
    const rel = measured
      ? row.cost.s_per_megapixel / full.cost.s_per_megapixel
      : row.macs_per_lr_megapixel / full.macs_per_lr_megapixel;
    let text = `, cost ${rel.toFixed(2)}×`;
    if (measured && state.input) {
      const s = row.cost.overhead_s + (row.cost.s_per_megapixel * workPixels(state.input.h, state.input.w)) / 1e6;
      text += `, about ${duration(s)} for this image on an idle server`;
    }
    el.textContent = text;
  }
  const auto = document.querySelector('.cost[data-width="auto"]');
  const p = model.policy;
  auto.textContent =
    p && p.rung !== null
      ? ` (target ${seconds(p.latency_target_s)}; now ${p.rung} for a ${p.reference_input} image)`
      : "";
}

// ---- choosing a file -----------------------------------------------------------------------------

function decode(url) {
  return new Promise((resolve) => {
    const img = new Image();
    img.onload = () => resolve({ img, w: img.naturalWidth, h: img.naturalHeight });
    img.onerror = () => resolve(null); // TIFF, or not an image: the server decides
    img.src = url;
  });
}

async function choose(file) {
  if (!file) return;
  abortRequest();
  clearResult();
  hideError();
  $("progress").hidden = true;
  if (state.inputUrl) URL.revokeObjectURL(state.inputUrl);
  state.file = file;
  state.inputUrl = URL.createObjectURL(file);
  state.input = await decode(state.inputUrl);
  renderFile();
  if (state.model) renderWidthCosts();
}

// Input pixels /v1/upscale takes at a native scale: MAX_PIXELS at x4, more at lower scales (the output is
// the limit: service/upscaling/options.py input_limit). Larger images go as jobs (POST /v1/jobs).
function interactiveLimit(scale) {
  return Math.floor((state.model.max_pixels * 16) / (scale * scale));
}

function jobLimit(scale) {
  return Math.min(state.model.max_job_pixels, Math.floor(state.model.max_job_output_pixels / (scale * scale)));
}

// Whether the chosen file goes as a job: over the interactive limits, within the jobs' ones.
function asJob() {
  const model = state.model;
  if (!model || !state.file) return false;
  const pixels = state.input ? state.input.w * state.input.h : 0;
  return state.file.size > model.max_body_bytes || pixels > interactiveLimit(chosenNative());
}

// Why the server would refuse the chosen file, known before sending it; null when it may go.
function refusal() {
  const model = state.model;
  if (!model || !state.file) return null;
  if (state.file.size > model.max_job_body_bytes) {
    return `${bytes(state.file.size)} is over this server's limit of ${bytes(model.max_job_body_bytes)} per image.`;
  }
  const scale = chosenScale();
  const native = nativeScale(scale);
  if (state.input && state.input.w * state.input.h > jobLimit(native)) {
    const { w, h } = state.input;
    return `${w}×${h} = ${int(w * h)} pixels is over this server's limit of ${int(jobLimit(native))} pixels at ×${native}.`;
  }
  if (asJob() && $("format").value !== "png") {
    return "Images this large are upscaled as jobs, written as PNG while they run: choose PNG.";
  }
  if (asJob() && scale !== native) {
    return `Images this large are upscaled as jobs, written as they run at a native scale: choose ×${native}.`;
  }
  return null;
}

function goLabel() {
  return `Upscale ×${chosenScale()}${asJob() ? " as a job" : ""}`;
}

function renderFile() {
  const file = state.file;
  if (!file) return;
  $("chosen").hidden = false;
  const facts = $("facts");
  facts.replaceChildren();
  fact(facts, "File", `${file.name || "pasted image"} (${file.type || "unknown type"}, ${bytes(file.size)})`);
  const thumb = $("thumb");
  thumb.hidden = !state.input;
  const warning = $("file-warning");
  warning.hidden = true;
  if (state.input) {
    if (thumb.src !== state.inputUrl) thumb.src = state.inputUrl;
    const { w, h } = state.input;
    fact(facts, "Size", `${w}×${h} (${int(w * h)} pixels)`);
    if (state.model) {
      const { tile_size: tile, tile_overlap: margin } = state.model;
      const scale = chosenScale();
      fact(facts, "Output", `${Math.round(w * scale)}×${Math.round(h * scale)}`);
      const tiles = Math.ceil(w / tile) * Math.ceil(h / tile);
      fact(
        facts,
        "Tiles",
        tiles === 1
          ? "none: one pass over the whole image"
          : `${tiles} tiles of ${tile}×${tile} pixels, each read with ${margin} pixels of context`,
      );
    }
  } else {
    warning.hidden = false;
    warning.textContent = file.type.startsWith("image/")
      ? "Your browser cannot show this format, so its size is checked by the server."
      : `This does not look like an image (${file.type || "unknown type"}); the server will say what it makes of it.`;
  }
  const refused = refusal();
  if (refused) {
    warning.hidden = false;
    warning.textContent = refused.startsWith("Images this large")
      ? refused
      : `Too large: ${refused} Choose a smaller image.`;
  } else if (asJob()) {
    warning.hidden = false;
    warning.textContent =
      `Over the ${int(interactiveLimit(chosenNative()))} pixels of one request at ×${chosenScale()}: it runs as a ` +
      "job, with its progress shown here (interactive requests go first).";
  }
  $("go").textContent = goLabel();
  updateGo();
}

function updateGo() {
  $("go").disabled =
    !state.model || !state.file || Boolean(refusal()) || state.keyNeeded || Boolean(state.xhr) || Boolean(state.job);
}

$("file").addEventListener("change", (event) => choose(event.target.files[0]));

const drop = $("drop");
for (const type of ["dragenter", "dragover"]) {
  drop.addEventListener(type, (event) => {
    event.preventDefault();
    drop.classList.add("over");
  });
}
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", (event) => {
  event.preventDefault();
  drop.classList.remove("over");
  choose(event.dataTransfer.files[0]);
});
// A file dropped next to the zone would otherwise replace the page with the image.
for (const type of ["dragover", "drop"]) document.addEventListener(type, (event) => event.preventDefault());

document.addEventListener("paste", (event) => {
  const file = [...(event.clipboardData?.files ?? [])].find((f) => f.type.startsWith("image/"));
  if (file) {
    event.preventDefault();
    choose(file);
  }
});

// ---- options -------------------------------------------------------------------------------------

function renderFormat() {
  const fmt = $("format").value;
  $("lossless-row").hidden = fmt !== "webp";
  $("quality-row").hidden = fmt === "png" || (fmt === "webp" && $("lossless").checked);
  $("quality").disabled = $("quality-row").hidden; // a hidden, invalid value must not block the form
}
$("format").addEventListener("change", () => {
  renderFormat();
  renderFile();
});
$("lossless").addEventListener("change", renderFormat);

function query() {
  const params = new URLSearchParams();
  params.set("scale", String(chosenScale()));
  params.set("noise", $("noise").value);
  if (!$("style-row").hidden) params.set("style", $("style").value);
  if (!$("sharpness-row").hidden) params.set("sharpness", $("sharpness").value);
  params.set("width", document.querySelector('input[name="width"]:checked')?.value ?? "auto");
  const fmt = $("format").value;
  params.set("format", fmt);
  if (!$("quality-row").hidden) params.set("quality", $("quality").value);
  return params;
}

// ---- the request ---------------------------------------------------------------------------------

$("options").addEventListener("submit", (event) => {
  event.preventDefault();
  upscale();
});
$("cancel").addEventListener("click", () => abortRequest());
$("retry").addEventListener("click", () => upscale());

function upscale() {
  if (!state.file || state.xhr || state.job) return;
  if (asJob()) {
    submitJob();
    return;
  }
  hideError();
  clearResult();
  const started = performance.now();
  let uploadedAt = 0;
  const xhr = new XMLHttpRequest();
  state.xhr = xhr;
  xhr.open("POST", `/v1/upscale?${query()}`);
  xhr.responseType = "blob";
  for (const [name, value] of Object.entries(authHeaders())) xhr.setRequestHeader(name, value);
  // The raw body: the server sniffs application/octet-stream, and answers 415 for a type it does not read.
  xhr.setRequestHeader("Content-Type", state.file.type || "application/octet-stream");

  $("progress").hidden = false;
  $("cancel").hidden = false;
  const bar = $("upload-bar");
  bar.value = 0;
  $("progress-label").textContent = "Upload";
  $("phase").textContent = `Uploading ${bytes(state.file.size)}…`;
  xhr.upload.addEventListener("progress", (event) => {
    if (event.lengthComputable) bar.value = event.loaded / event.total;
  });
  xhr.upload.addEventListener("load", () => {
    uploadedAt = performance.now();
    bar.value = 1;
    // The service has no per-request status: after the upload the page only knows it is waiting.
    $("phase").textContent = "Uploaded; waiting for the server (queued or running).";
  });
  state.ticker = setInterval(() => {
    const now = performance.now();
    const total = (now - started) / 1000;
    const p = state.model?.policy;
    $("elapsed").textContent = uploadedAt
      ? `${seconds(total)} so far, ${seconds((now - uploadedAt) / 1000)} waiting. ` +
        (p ? `The server has ${p.running} running and ${p.queued} queued, all clients together.` : "")
      : `${seconds(total)} so far`;
  }, 100);
  const done = () => {
    clearInterval(state.ticker);
    $("elapsed").textContent = "";
    state.xhr = null;
    $("cancel").hidden = true;
    updateGo();
    schedulePoll();
  };
  xhr.addEventListener("load", async () => {
    const total = (performance.now() - started) / 1000;
    done();
    if (xhr.status === 200) {
      $("phase").textContent = `Done in ${seconds(total)}.`;
      await showResult(xhr, total);
    } else {
      $("phase").textContent = `Failed after ${seconds(total)}.`;
      await showError(xhr);
    }
  });
  xhr.addEventListener("error", () => {
    done();
    $("phase").textContent = "";
    showMessage("Could not reach the server", "The connection failed or was closed. Check the server and retry.");
    $("retry").hidden = false;
  });
  xhr.addEventListener("abort", () => {
    done();
    $("phase").textContent = uploadedAt
      ? "Cancelled. The connection is closed: the server drops the request if it was queued, " +
        "or stops it at its next tile."
      : "Upload cancelled.";
  });
  xhr.send(state.file);
  updateGo();
  schedulePoll();
}

function abortRequest() {
  if (state.xhr) state.xhr.abort();
  if (state.job) cancelJob();
}

// ---- a job: POST /v1/jobs, then its status until done, then its result -----------------------------

function request(method, url, body) {
  return new Promise((resolve) => {
    const xhr = new XMLHttpRequest();
    xhr.open(method, url);
    xhr.responseType = "blob";
    for (const [name, value] of Object.entries(authHeaders())) xhr.setRequestHeader(name, value);
    if (body) xhr.setRequestHeader("Content-Type", state.file.type || "application/octet-stream");
    xhr.addEventListener("loadend", () => resolve(xhr));
    if (body) {
      xhr.upload.addEventListener("progress", (event) => {
        if (event.lengthComputable) $("upload-bar").value = event.loaded / event.total;
      });
    }
    state.xhr = body ? xhr : state.xhr;
    xhr.send(body ?? null);
  });
}

async function submitJob() {
  hideError();
  clearResult();
  const started = performance.now();
  $("progress").hidden = false;
  $("cancel").hidden = false;
  $("upload-bar").value = 0;
  $("progress-label").textContent = "Upload";
  $("phase").textContent = `Uploading ${bytes(state.file.size)} as a job…`;
  updateGo();
  const xhr = await request("POST", `/v1/jobs?${query()}`, state.file);
  state.xhr = null;
  if (xhr.status !== 202) {
    $("cancel").hidden = true;
    $("phase").textContent = xhr.status ? "The job was refused." : "";
    if (xhr.status) await showError(xhr);
    else showMessage("Could not reach the server", "The connection failed or was closed. Check the server and retry.");
    updateGo();
    return;
  }
  state.job = JSON.parse(await xhr.response.text());
  $("progress-label").textContent = "Tiles";
  updateGo();
  while (state.job && !["done", "failed", "cancelled"].includes(state.job.state)) {
    showJob(state.job);
    await new Promise((resolve) => setTimeout(resolve, 500));
    if (!state.job) return; // cancelled meanwhile
    const r = await request("GET", `/v1/jobs/${state.job.id}`);
    if (r.status === 200) state.job = JSON.parse(await r.response.text());
  }
  const job = state.job;
  if (!job) return;
  $("cancel").hidden = true;
  const total = (performance.now() - started) / 1000;
  if (job.state === "done") {
    showJob(job);
    const result = await request("GET", job.result);
    state.job = null;
    updateGo();
    $("phase").textContent = `Done in ${seconds(total)} (a job: ${job.progress.tiles_total} tiles).`;
    if (result.status === 200) await showResult(result, total);
    else await showError(result);
    request("DELETE", `/v1/jobs/${job.id}`); // the page has the result: the server need not keep it
    return;
  }
  state.job = null;
  updateGo();
  $("phase").textContent = `The job ${job.state} after ${seconds(total)}.`;
  if (job.error) showMessage(`The job ${job.state} (${job.error.error})`, job.error.detail ?? "");
}

function showJob(job) {
  const { tiles_done: done, tiles_total: total, fraction } = job.progress;
  $("upload-bar").value = fraction;
  const eta = job.eta_s === null ? "" : `, about ${duration(job.eta_s)} left`;
  $("phase").textContent =
    job.state === "queued"
      ? `Queued: ${job.queue_position} job${job.queue_position === 1 ? "" : "s"} ahead${eta}.`
      : `Running at rung ${job.rung}: ${int(done)} of ${int(total)} tiles${eta}.`;
}

async function cancelJob() {
  const job = state.job;
  state.job = null;
  await request("DELETE", `/v1/jobs/${job.id}`);
  $("cancel").hidden = true;
  $("phase").textContent = "Cancelled: the job is removed (a running one stops at its next tile).";
  updateGo();
}

// ---- errors --------------------------------------------------------------------------------------

function hideError() {
  clearInterval(state.countdown);
  $("error").hidden = true;
  Object.assign($("retry"), { hidden: true, disabled: false, textContent: "Retry" });
}

function showMessage(title, detail) {
  $("error-title").textContent = title;
  $("error-detail").textContent = detail;
  $("error-hint").textContent = "";
  $("error").hidden = false;
}

async function showError(xhr) {
  let code = "";
  let detail = "";
  try {
    ({ error: code, detail } = JSON.parse(await xhr.response.text()));
  } catch {
    detail = `HTTP ${xhr.status} without an error body.`;
  }
  showMessage(`${ERROR_TITLES[code] ?? "The request failed"} (HTTP ${xhr.status}${code ? `, ${code}` : ""})`, detail);
  $("error-hint").textContent = ERROR_HINTS[code] ?? "";
  if (code === "unauthorized") {
    sessionStorage.removeItem(KEY_STORE);
    askForKey("The server refused the request: enter its API key, then upscale again.");
    $("key-input").focus();
  }
  const retryAfter = Number.parseInt(xhr.getResponseHeader("Retry-After") ?? "", 10);
  if (xhr.status === 503 && Number.isFinite(retryAfter)) retryIn(Math.max(retryAfter, 1));
}

function retryIn(wait) {
  const retry = $("retry");
  retry.hidden = false;
  retry.disabled = true;
  let left = wait;
  const tick = () => {
    if (left <= 0) {
      clearInterval(state.countdown);
      retry.disabled = false;
      retry.textContent = "Retry now";
      return;
    }
    retry.textContent = `Retry in ${left} s`;
    left -= 1;
  };
  tick();
  state.countdown = setInterval(tick, 1000);
}

// ---- the result ----------------------------------------------------------------------------------

function clearResult() {
  $("result").hidden = true;
  if (state.outputUrl) URL.revokeObjectURL(state.outputUrl);
  state.outputUrl = null;
  state.out = null;
}

async function showResult(xhr, total) {
  const blob = xhr.response;
  const header = (name) => xhr.getResponseHeader(name) ?? "";
  state.outputUrl = URL.createObjectURL(blob);
  const after = $("after");
  after.src = state.outputUrl;
  let shown = true;
  try {
    await after.decode();
  } catch {
    shown = false;
    showMessage("Your browser cannot show the result", "Download it to open it with another program.");
  }
  const w = after.naturalWidth;
  const h = after.naturalHeight;

  const width = header("X-Width");
  const reason = header("X-Width-Reason");
  $("res-scale").textContent = `×${header("X-Scale")}`;
  const step = header("X-Sharpness");
  $("res-style").textContent = (header("X-Style") || "faithful") + (step && step !== "1" ? `, sharpness ${step}` : "");
  $("res-noise").textContent = header("X-Noise"); // "real; jpeg q~75 < 96": the level and why
  $("res-width").textContent = width;
  const row = state.model.per_width.find((r) => widthLabel(r.width) === width);
  $("res-channels").textContent = row ? `(${row.channels} channels)` : "";
  $("res-precision").textContent = header("X-Precision");
  // "Set5=31.29; Set14=27.96", or for a JPEG "jpeg75: Set5=28.90; Set14=26.31" (the card's nearest JPEG quality);
  // a sharp rung reports its sharpness instead (% of spectral power above a quarter of Nyquist)
  const sharp = header("X-Style") === "sharp";
  const expected = header(sharp ? "X-Expected-Sharpness" : "X-Expected-PSNR");
  $("res-psnr-label").textContent = sharp ? "Expected sharpness" : "Expected PSNR";
  const [under, values] = expected.includes(": ") ? expected.split(": ") : ["", expected];
  const psnr = values.split("; ").filter(Boolean).map((s) => `${s.replace("=", " ")}${sharp ? " %" : " dB"}`);
  $("res-psnr").textContent = psnr.length
    ? psnr.join(", ") + (under ? ` (inputs like ${under})` : "")
    : "not in the model card";
  $("res-reason").textContent = reason;
  $("res-reason-text").textContent = REASONS[reason] ?? "";
  $("res-wait").textContent = `${header("X-Queue-Wait-Ms")} ms`;
  $("res-model").textContent = `${header("X-Inference-Ms")} ms`;
  $("res-total").textContent = `${seconds(total)} (upload, queue, model, encoding, download)`;
  const type = blob.type || "image/png";
  const ext = OUTPUT_EXT[type] ?? "png";
  const size = shown ? `${w}×${h} ` : "";
  $("res-output").textContent = `${size}${ext.toUpperCase()}, ${bytes(blob.size)}, ${header("X-Bit-Depth")}-bit`;

  const stem = (state.file.name || "pasted").replace(/\.[^.]*$/, "") || "image";
  const factor = (header("X-Scale") || String(state.model.scale)).split(" ")[0]; // "1.5 (x2 + lanczos)": 1.5
  const name = `${stem}-x${factor}.${ext}`;
  const link = $("download");
  link.href = state.outputUrl;
  link.download = name;
  link.textContent = `Download ${name}`;

  $("result").hidden = false;
  $("viewer").hidden = !shown;
  if (shown) showComparison(w, h);
  $("result").scrollIntoView({ behavior: "smooth", block: "start" });
}

// Before (the input, enlarged by the canvas) over after (the output), split by the slider.
function showComparison(w, h) {
  state.out = { w, h };
  const canvas = $("before");
  const comparable = Boolean(state.input);
  canvas.hidden = !comparable;
  $("divider").hidden = !comparable;
  $("tag-before").hidden = !comparable;
  $("split-row").hidden = !comparable;
  $("compare-note").textContent = comparable
    ? "Left of the line: the input enlarged by your browser's own smoothing (canvas, quality “high”; " +
      "close to bicubic, no model). Right: the model's output."
    : "Your browser cannot show the input's format, so there is no before/after: the model's output only.";
  if (comparable) {
    canvas.width = w;
    canvas.height = h;
    const ctx = canvas.getContext("2d");
    ctx.imageSmoothingEnabled = true;
    ctx.imageSmoothingQuality = "high";
    ctx.drawImage(state.input.img, 0, 0, w, h);
  }
  $("stage").style.aspectRatio = `${w} / ${h}`;
  setSplit($("split").value);
  layoutStage();
}

function setSplit(percent) {
  $("stage").style.setProperty("--split", `${percent}%`);
  $("split").value = percent;
}
$("split").addEventListener("input", (event) => setSplit(event.target.value));

// Dragging on the image moves the line too (mouse and pen; a finger scrolls the zoomed image).
const stage = $("stage");
function splitAt(event) {
  const rect = stage.getBoundingClientRect();
  setSplit(Math.round(Math.min(Math.max((event.clientX - rect.left) / rect.width, 0), 1) * 100));
}
stage.addEventListener("pointerdown", (event) => {
  if (event.pointerType === "touch" || $("before").hidden) return;
  stage.setPointerCapture(event.pointerId);
  splitAt(event);
});
stage.addEventListener("pointermove", (event) => {
  if (stage.hasPointerCapture(event.pointerId)) splitAt(event);
});

function zoom() {
  return Number(document.querySelector('input[name="zoom"]:checked').value);
}

// Fit: as large as the viewport allows; 1, 2, 4: that many screen pixels per output pixel, unsmoothed.
function layoutStage() {
  if (!state.out) return;
  const { w, h } = state.out;
  const z = zoom();
  const viewport = $("viewport");
  viewport.classList.toggle("zoomed", z > 0);
  if (z > 0) {
    stage.style.width = `${w * z}px`;
  } else {
    const maxHeight = window.innerHeight * 0.75;
    stage.style.width = `${Math.min(viewport.clientWidth, (maxHeight * w) / h)}px`;
  }
}
for (const radio of document.querySelectorAll('input[name="zoom"]')) radio.addEventListener("change", layoutStage);
window.addEventListener("resize", layoutStage);

renderFormat();
poll();
