// vidiff studio: the page's logic. Every action is a call to the studio's JSON API; long ones return a
// job that is polled until it is done. No library, nothing loaded from outside.
"use strict";
const $ = (id) => document.getElementById(id);
const state = { info: null, runs: [], details: {} };

function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") e.className = v; else if (k === "text") e.textContent = v; else e.setAttribute(k, v);
  }
  for (const c of children) e.append(c);
  return e;
}

async function api(path, body, headers) {
  const opts = body === undefined ? {} : { method: "POST", body,
    headers: headers || { "Content-Type": "application/json" } };
  let response;
  try { response = await fetch(path, opts); } catch (e) { throw new Error(`the studio cannot be reached (${e.message})`); }
  const data = await response.json().catch(() => ({ error: `HTTP ${response.status}` }));
  if (!response.ok) throw new Error(data.error || `HTTP ${response.status}`);
  return data;
}

function say(prefix, text, ok = false) {
  const box = $(`${prefix}-message`);
  box.hidden = !text; box.textContent = text || ""; box.classList.toggle("ok", ok);
}

function fmt(x, digits = 4) { return x === null || x === undefined ? "–" : Number(x).toPrecision(digits); }

// ---- tabs --------------------------------------------------------------------------------------
function showTab(name) {
  document.querySelectorAll(".tab").forEach((t) => t.classList.toggle("active", t.dataset.tab === name));
  document.querySelectorAll(".panel").forEach((p) => p.classList.toggle("active", p.id === name));
  if (name === "runs") loadRuns();
  if (name === "evaluate") loadOutputs();
}
document.querySelectorAll(".tab").forEach((t) => t.addEventListener("click", () => showTab(t.dataset.tab)));
document.querySelectorAll("button.copy").forEach((b) => b.addEventListener("click", () =>
  navigator.clipboard && navigator.clipboard.writeText($(b.dataset.for).textContent)));

// ---- jobs --------------------------------------------------------------------------------------
async function runJob(prefix, path, request) {
  const go = $(`${prefix}-go`);
  say(prefix, ""); go.disabled = true;
  try {
    let job = await api(path, JSON.stringify(request));
    $(`${prefix}-command`).textContent = job.command; $(`${prefix}-command-box`).hidden = false;
    $(`${prefix}-job`).hidden = false;
    while (job.status === "queued" || job.status === "running") {
      showProgress(prefix, job);
      await new Promise((r) => setTimeout(r, 400));
      job = await api(`/api/jobs/${job.id}`);
    }
    showProgress(prefix, job);
    if (job.status === "error") throw new Error(job.error);
    return job.result;
  } catch (e) {
    say(prefix, e.message); return null;
  } finally { go.disabled = false; }
}

function showProgress(prefix, job) {
  const bar = $(`${prefix}-progress`);
  if (job.progress === null || job.progress === undefined) bar.removeAttribute("value"); else bar.value = job.progress;
  if (job.status === "done") bar.value = 1;
  const where = job.status === "queued" ? `queued (${job.queued_ahead} job(s) ahead)` :
    job.status === "running" ? `${job.stage || "running"} ${job.total ? `${job.done}/${job.total}` : job.done || ""}` :
    job.status;
  $(`${prefix}-status`).textContent = `${where} · ${job.seconds}s`;
}

// ---- runs and their forms ----------------------------------------------------------------------
async function details(name) {
  if (!state.details[name]) state.details[name] = await api(`/api/run?name=${encodeURIComponent(name)}`);
  return state.details[name];
}

function fillSelect(select, values, labels) {
  const keep = select.value;
  select.replaceChildren(...values.map((v, i) => el("option", { value: v, text: labels ? labels[i] : v })));
  if (values.includes(keep)) select.value = keep;
}

async function loadRunLists() {
  state.runs = await api("/api/runs");
  const names = state.runs.filter((r) => !r.error).map((r) => r.name);
  document.querySelectorAll(".run-select").forEach((s) => {
    const none = s.classList.contains("with-none");
    fillSelect(s, none ? ["", ...names] : names, none ? ["(none)", ...names] : names);
  });
  if (!names.length) say("gen", `no runs in ${state.info.runs_folder} yet: train one with \`vidiff train --out ${state.info.runs_folder}/NAME\``);
  await Promise.all([onRun("gen"), onRun("cond")]);
}

async function onRun(prefix) {
  const name = $(`${prefix}-run`).value;
  if (!name) return;
  const d = await details(name);
  fillSelect($(`${prefix}-checkpoint`), ["latest", ...d.checkpoint_names.slice().reverse()]);
  const s = d.sample || {};
  fillSelect($(`${prefix}-sampler`), ["", ...state.info.samplers.map((x) => x.name)],
    [`model's (${s.sampler})`, ...state.info.samplers.map((x) => x.name)]);
  $(`${prefix}-steps`).placeholder = `${s.steps}`;
  if (prefix === "gen") {
    document.querySelectorAll("#generate .cond-text").forEach((e) => { e.hidden = d.conditioning !== "text"; });
    document.querySelectorAll("#generate .cond-class").forEach((e) => { e.hidden = d.conditioning !== "class"; });
    document.querySelectorAll("#generate .cond-guided").forEach((e) => { e.hidden = d.conditioning === "none"; });
    fillSelect($("gen-class"), d.classes.map((c, i) => String(i)), d.classes);
    $("gen-guidance").placeholder = `${s.guidance}`;
    $("gen-frames").placeholder = `${d.frames} (as trained)`;
  } else {
    $("cond-wr").placeholder = `${s.reconstruction_weight} (model's)`;
    const clips = await api(`/api/clips?run=${encodeURIComponent(name)}`);
    fillSelect($("cond-clip"), ["", ...clips], ["(upload instead)", ...clips]);
  }
}

// ---- generate ----------------------------------------------------------------------------------
$("gen-run").addEventListener("change", () => onRun("gen"));
$("gen-go").addEventListener("click", async () => {
  const d = await details($("gen-run").value).catch(() => null);
  const req = { run: $("gen-run").value, checkpoint: $("gen-checkpoint").value, seed: $("gen-seed").value,
    num: $("gen-num").value, frames: $("gen-frames").value, sampler: $("gen-sampler").value,
    steps: $("gen-steps").value };
  if (d && d.conditioning === "text") req.prompt = $("gen-prompt").value;
  if (d && d.conditioning === "class") req.class_label = $("gen-class").value;
  if (d && d.conditioning !== "none") req.guidance = $("gen-guidance").value;
  const result = await runJob("gen", "/api/generate", req);
  if (!result) return;
  const cards = result.videos.map((v, i) => el("div", { class: "card" },
    el("video", { src: v.view, autoplay: "", loop: "", muted: "", playsinline: "", controls: "", class: "sample" }),
    el("div", { class: "links" }, el("span", { text: `seed ${Number(req.seed) + i} ` }),
      el("a", { href: v.mp4, download: "", text: "MP4" }), el("a", { href: v.gif, download: "", text: "GIF" }))));
  cards.forEach((c) => { c.querySelector("video").muted = true; });
  $("gen-results").replaceChildren(...cards, el("div", { class: "card" },
    el("img", { src: result.frames_png, class: "grid", alt: "every frame" }),
    el("div", { class: "links", text: `${result.shape.join(" × ")} (c f h w) · saved in ${result.output}` })));
});

// ---- condition ---------------------------------------------------------------------------------
let upload = null;
$("cond-run").addEventListener("change", () => onRun("cond"));
$("cond-task").addEventListener("change", () => {
  const task = $("cond-task").value;
  document.querySelectorAll("#condition [class*='task-']").forEach((e) => {
    e.hidden = !e.className.split(" ").includes(`task-${task}`);
  });
});
$("cond-file").addEventListener("change", async () => {
  const file = $("cond-file").files[0];
  upload = null; $("cond-upload-info").textContent = ""; say("cond", "");
  if (!file) return;
  const ext = file.name.includes(".") ? file.name.slice(file.name.lastIndexOf(".")).toLowerCase() : "";
  if (!state.info.video_extensions.includes(ext)) return say("cond", `${file.name}: not a video file; upload one of ${state.info.video_extensions.join(" ")}`);
  if (file.size > state.info.max_upload_bytes) return say("cond", `${file.name}: the file is too large (${(file.size / 2 ** 20).toFixed(1)} MiB); the studio takes up to ${state.info.max_upload_bytes / 2 ** 20} MiB`);
  $("cond-upload-info").textContent = `uploading ${file.name}…`;
  try {
    upload = await api("/api/upload", file, { "X-Filename": encodeURIComponent(file.name) });
    $("cond-upload-info").textContent = `uploaded ${upload.name}: ${upload.frames} frames, ${upload.width}×${upload.height}, ${upload.fps.toFixed(1)} fps`;
    $("cond-clip").value = "";
  } catch (e) { $("cond-upload-info").textContent = ""; say("cond", e.message); }
});
$("cond-go").addEventListener("click", async () => {
  const req = { run: $("cond-run").value, checkpoint: $("cond-checkpoint").value, task: $("cond-task").value,
    method: $("cond-method").value, reconstruction_weight: $("cond-wr").value, seed: $("cond-seed").value,
    num: $("cond-num").value, sampler: $("cond-sampler").value, steps: $("cond-steps").value,
    context: $("cond-context").value, total_frames: $("cond-total").value, length: $("cond-length").value,
    overlap: $("cond-overlap").value, factor: $("cond-factor").value, max_frames: $("cond-maxframes").value };
  if ($("cond-clip").value) req.clip = $("cond-clip").value; else if (upload) req.upload = upload.upload;
  else return say("cond", "choose a clip: upload one, or pick one of the run's data");
  const r = await runJob("cond", "/api/condition", req);
  if (!r) return;
  const given = r.known.filter((k) => k).length;
  $("cond-results").replaceChildren(el("div", { class: "side" },
    el("figure", { class: "card" }, el("video", { src: r.input, autoplay: "", loop: "", muted: "", playsinline: "", controls: "", class: "input" }),
      el("figcaption", { text: "input clip" })),
    ...r.outputs.map((src, i) => el("figure", { class: "card" },
      el("video", { src, autoplay: "", loop: "", muted: "", playsinline: "", controls: "", class: "output" }),
      el("figcaption", {}, `${r.task} · sample ${i} `, el("a", { href: r.mp4[i], download: "", text: "MP4" }))))),
  el("figure", { class: "card filmstrip" }, el("img", { src: r.filmstrip, id: "cond-filmstrip", alt: "frames, known ones marked" }),
    el("figcaption", { class: "legend" }, el("span", { class: "known" }),
      ` given frames (${given} of ${r.known.length}: ${r.known.map((k, i) => (k ? i : null)).filter((i) => i !== null).join(", ") || "none; every frame is generated"}), the others generated`)));
  document.querySelectorAll("#cond-results video").forEach((v) => { v.muted = true; });
});

// ---- runs --------------------------------------------------------------------------------------
async function loadRuns() {
  state.details = {};
  await loadRunLists();
  $("runs-table").tBodies[0].replaceChildren(...state.runs.map((r) => {
    const row = el("tr", { "data-run": r.name }, ...(r.error ? [el("td", { text: r.name }), el("td", { colspan: 7, text: r.error })] :
      [r.name, r.preset, `${r.steps}${r.target_steps ? ` / ${r.target_steps}` : ""}`, fmt(r.loss), fmt(r.fvd), r.checkpoints,
        r.conditioning, r.state].map((x) => el("td", { text: String(x) }))));
    row.addEventListener("click", () => { $("runs-a").value = r.name; showRun("a"); });
    return row;
  }));
  showRun("a"); showRun("b");
}

async function showRun(which) {
  const name = $(`runs-${which}`).value, view = $(`run-${which}`);
  if (!name) return view.replaceChildren();
  try {
    const d = await details(name);
    const plots = el("div", { class: "plots" });
    plots.innerHTML = d.plots.loss + d.plots.fvd;  // SVG the studio drew, labels escaped there
    view.replaceChildren(
      el("h3", { text: `${d.name} · ${d.preset} · step ${d.steps} · loss ${fmt(d.loss)} · FVD ${fmt(d.fvd)}` }), plots,
      el("h3", { text: "samples over training (seed 0)" }),
      el("div", { class: "grids" }, ...(d.grids.length ? d.grids.map((g) => el("figure", {},
        el("img", { src: `/files/runs/${g.path}`, alt: `step ${g.step}` }), el("figcaption", { text: `step ${g.step}` })))
        : [el("span", { class: "muted", text: "no sample grids yet" })])),
      el("details", {}, el("summary", { text: "configuration" }), el("pre", { class: "config", text: JSON.stringify(d.config, null, 2) })));
  } catch (e) { view.replaceChildren(el("div", { class: "message", text: e.message })); }
}
$("runs-a").addEventListener("change", () => showRun("a"));
$("runs-b").addEventListener("change", () => showRun("b"));

// ---- evaluate ----------------------------------------------------------------------------------
async function loadOutputs() {
  const outs = await api("/api/outputs");
  fillSelect($("eval-fake"), outs.map((o) => o.id),
    outs.map((o) => `${o.id} (${o.run || "?"}: ${o.videos} videos × ${o.frames} frames)`));
  if (!outs.length) say("eval", "no samples yet: generate some in the Generate tab (9 frames or more for FVD)");
}
$("eval-go").addEventListener("click", async () => {
  const metrics = [...document.querySelectorAll("#eval-metrics input:checked")].map((c) => c.value);
  const req = { fake: $("eval-fake").value, real: $("eval-real").value, metrics, num_frames: $("eval-frames").value,
    num: $("eval-num").value, inception_weights: $("eval-inception").value };
  const r = await runJob("eval", "/api/evaluate", req);
  if (!r) return;
  const rows = state.info.metrics.filter((m) => r.report[m] !== undefined).map((m) => el("tr", {},
    el("td", { text: m.toUpperCase() }), el("td", { class: "value", text: fmt(r.report[m], 5) }),
    el("td", { text: r.report[`${m}_std`] !== undefined ? `± ${fmt(r.report[`${m}_std`], 3)}` : "" })));
  $("eval-results").replaceChildren(el("table", { class: "metrics-table" }, ...rows),
    el("div", {}, el("h3", { text: "full report (how it was computed)" }), el("pre", { class: "report", id: "eval-report", text: JSON.stringify(r.report, null, 2) }),
      el("a", { href: r.report_url, download: "report.json", text: "report.json" })));
});

// ---- start -------------------------------------------------------------------------------------
(async () => {
  try {
    state.info = await api("/api/info");
    $("runs-folder").textContent = `runs: ${state.info.runs_folder}`;
    fillSelect($("cond-task"), state.info.tasks);
    fillSelect($("cond-method"), state.info.methods);
    $("eval-metrics").replaceChildren(...state.info.metrics.map((m) => el("label", { class: "check" },
      Object.assign(el("input", { type: "checkbox", value: m }), { checked: m === "fvd" }), m.toUpperCase())));
    await loadRunLists();
  } catch (e) { say("gen", e.message); }
})();
