// The Studio: datasets, training, runs and results through the gateway's /studio/api, signed in
// with the same project key as the playground. Everything a tenant wrote (file names, columns,
// rows, replies, log lines, card text) goes into the page as text, never as HTML. What the
// playground shares with this page (the key, the API client, sign-in) is in common.js.

import { $, apiError, clearError, element, getJson, row, setOptions, showError,
         showSignedIn, state, useKey, wireSignIn } from "./common.js";

const API = "/studio/api";
const SVG = "http://www.w3.org/2000/svg";
Object.assign(state, { options: null, datasets: [], trainings: [], openDataset: null,
                       openRun: null, timer: null, estimates: 0 });

const api = (path, options = {}) => getJson(API + path, options);
const guarded = (fn) => async (...args) => {
  clearError();
  try { await fn(...args); } catch (error) { showError(error); }
};

function fill(tbody, rows) { tbody.replaceChildren(...rows); }
const when = (seconds) => seconds ? new Date(seconds * 1000).toLocaleString() : "";

function svgNode(tag, attributes, text = "") {
  const node = document.createElementNS(SVG, tag);
  for (const [name, value] of Object.entries(attributes)) node.setAttribute(name, value);
  node.textContent = text;
  return node;
}

// -- pages -------------------------------------------------------------------------------------
function showPage(name) {
  for (const button of document.querySelectorAll("nav button")) {
    button.classList.toggle("active", button.dataset.page === name);
  }
  for (const page of document.querySelectorAll(".page")) page.hidden = page.id !== `page-${name}`;
  ({ datasets: loadDatasets, train: loadTrain, runs: loadRuns, results: loadResults,
     documents: loadDocuments, monitor: loadMonitor }[name])().catch(showError);
}

// -- datasets ----------------------------------------------------------------------------------
async function loadDatasets() {
  state.datasets = (await api("/datasets")).data;
  fill($("#datasets tbody"), state.datasets.map((d) => {
    const link = element("a", d.label);
    link.href = "#";
    link.addEventListener("click", guarded(async (event) => {
      event.preventDefault();
      await openDataset(d.id);
    }));
    return row([link, d.kind, d.rows_kept, d.quarantined,
                d.needs_mapping ? "needs column mapping" : "ready", when(d.created_at)]);
  }));
}

function upload(path, file, bar) {
  // XMLHttpRequest, not fetch: only it reports upload progress
  return new Promise((resolve, reject) => {
    const request = new XMLHttpRequest();
    request.open("POST", `${API}${path}`);
    request.setRequestHeader("authorization", `Bearer ${state.key}`);
    bar.hidden = false;
    bar.value = 0;
    request.upload.addEventListener("progress", (event) => {
      if (event.lengthComputable) bar.value = event.loaded / event.total;
    });
    request.addEventListener("load", () => {
      bar.hidden = true;
      if (request.status >= 400) {
        reject(apiError(request.status, request.statusText, request.responseText,
                        request.getResponseHeader("retry-after")));
        return;
      }
      try { resolve(JSON.parse(request.responseText)); } catch { resolve({}); }
    });
    request.addEventListener("error", () => {
      bar.hidden = true;
      reject(new Error("the upload did not reach the gateway"));
    });
    request.send(file);
  });
}

async function openDataset(id) {
  const meta = await api(`/datasets/${encodeURIComponent(id)}`);
  state.openDataset = meta;
  const report = meta.report;
  $("#report").hidden = false;
  $("#report-title").textContent = `${meta.label}: ${report.rows_kept} of ${report.rows_in} rows kept`;
  const counts = {
    "rows in": report.rows_in, "kept": report.rows_kept, "train / val / test":
      `${report.splits.train} / ${report.splits.val} / ${report.splits.test}`,
    "quarantined": report.quarantined, "duplicates removed": report.duplicates,
    "PII scrubbed": Object.entries(report.pii_scrubbed).map(([k, n]) => `${k}: ${n}`).join(", ")
      || "none found",
    "columns": report.columns.join(", "),
  };
  $("#report-counts").replaceChildren(...Object.entries(counts).flatMap(([term, value]) =>
    [element("dt", term), element("dd", String(value))]));
  fill($("#rejections tbody"), report.rejections.map((r) =>
    row([r.file, r.row, r.field, r.reason, r.detail, r.fix])));
  $("#preview").replaceChildren(...report.preview.map((example) =>
    element("pre", exampleText(example), "example")));
  drawHistogram(report.token_histogram, report.tokenizer);
  const mapping = $("#mapping-form");
  mapping.hidden = !report.needs_mapping;
  $("#mapping-fields").replaceChildren(...report.mappable.map((field) => {
    const label = element("label", `${field} ← `);
    const select = document.createElement("select");
    select.name = field;
    setOptions(select, report.columns.map((c) => [c, c]));
    label.append(select);
    return label;
  }));
}

// one normalised row as people read a conversation: a line per turn, then any rated reply
function exampleText(example) {
  const turns = (example.messages ?? []).map((m) => `${m.role}: ${m.content}`);
  for (const field of ["chosen", "rejected", "completion", "label", "text"]) {
    if (field in example) turns.push(`${field}: ${example[field]}`);
  }
  return turns.join("\n");
}

function drawHistogram(histogram, tokenizer) {
  const svg = $("#histogram");
  const { counts, edges } = histogram;
  $("#histogram-note").textContent = counts.length
    ? `Tokens per example with ${tokenizer}'s tokenizer (its context: ${histogram.max_tokens}).`
    : "Token lengths appear once a base model has been built.";
  if (!counts.length) {
    svg.replaceChildren();
    return;
  }
  const top = Math.max(...counts), width = 500 / counts.length;
  svg.replaceChildren(...counts.flatMap((n, i) => {
    const height = top ? (n / top) * 120 : 0;
    return [svgNode("rect", { x: 10 + i * width, y: 130 - height, width: width - 2, height,
                              class: "bar" }, ""),
            svgNode("text", { x: 10 + i * width, y: 148, class: "tick" }, String(edges[i]))];
  }));
}

// -- train -------------------------------------------------------------------------------------
async function loadTrain() {
  state.options ??= await api("/options");
  const o = state.options;
  await loadDatasets();
  setOptions($("#train-dataset"), state.datasets.filter((d) => !d.needs_mapping)
    .map((d) => [d.id, `${d.label} (${d.rows_kept} rows)`]));
  setOptions($("#train-base"), o.base_models.map((m) => [m, m]));
  setOptions($("#train-task"), Object.entries(o.tasks).map(([name, t]) => [name, t.label]));
  setOptions($("#train-objective"), Object.entries(o.objectives)
    .map(([name, x]) => [name, `${name}: ${x.description}`]));
  setOptions($("#train-effort"), Object.keys(o.efforts).map((p) => [p, p]));
  $("#hp-max_steps").max = o.bounds.max_steps;
  await applyEffort();
}

async function applyEffort() {
  const effort = state.options.efforts[$("#train-effort").value];
  for (const [name, value] of Object.entries(effort)) {
    const input = $(`#hp-${name}`);
    if (input) input.value = value;
  }
  await estimate();
}

function hyperparameters() {
  const effort = state.options.efforts[$("#train-effort").value];
  const out = { ...effort };
  for (const name of ["max_steps", "learning_rate", "lora_r", "micro_batch_size"]) {
    out[name] = Number($(`#hp-${name}`).value);
  }
  return out;
}

async function estimate() {
  const hp = hyperparameters();
  const data = state.datasets.find((d) => d.id === $("#train-dataset").value);
  const examples = hp.max_steps * hp.micro_batch_size;
  let text = `${hp.max_steps} steps x ${hp.micro_batch_size} examples = ${examples} examples seen`;
  if (data) text += ` (${(examples / Math.max(1, data.rows_kept)).toFixed(1)} passes over ${data.rows_kept} rows)`;
  $("#pattern-box").hidden = !state.options.tasks[$("#train-task").value]?.pattern;
  const query = new URLSearchParams({ base_model: $("#train-base").value, steps: hp.max_steps });
  const asked = ++state.estimates;  // answers may come back out of order: the last one wins
  const { estimate: time } = await api(`/estimate?${query}`).catch(() => ({ estimate: null }));
  if (asked !== state.estimates) return;
  $("#estimate").textContent = text + (time
    ? `; training about ${time.seconds} s (scaled from run ${time.run_id.slice(0, 8)}: `
      + `${time.measured_steps} steps in ${time.measured_seconds} s).`
    : "; no time estimate before this project's first training on this base model.");
}

async function launch(event) {
  event.preventDefault();
  const body = {
    name: $("#train-name").value, dataset: $("#train-dataset").value,
    base_model: $("#train-base").value, task: $("#train-task").value,
    objective: $("#train-objective").value, effort: $("#train-effort").value,
    hyperparameters: hyperparameters(),
  };
  if (!$("#pattern-box").hidden && $("#train-pattern").value) {
    body.answer_pattern = $("#train-pattern").value;
  }
  const button = $("#launch");
  button.disabled = true;
  button.textContent = "Launching: checking the config, loading it into Dagster…";
  let launched;
  try {
    launched = await api("/trainings", { method: "POST", body: JSON.stringify(body) });
  } finally {
    button.disabled = false;
    button.textContent = "Launch";
  }
  showPage("runs");
  await openRun(launched.run_id);
}

// -- runs --------------------------------------------------------------------------------------
// `openRunInFlight`: the open run's own status, read before the list; a run that ended between
// the two reads must be read once more, or its page keeps the old status for good.
async function loadRuns(openRunInFlight = false) {
  const runs = (await api("/runs")).data;
  fill($("#runs tbody"), runs.map((r) => {
    const link = element("a", r.id.slice(0, 8));
    link.href = "#";
    link.addEventListener("click", guarded(async (event) => {
      event.preventDefault();
      await openRun(r.id);
    }));
    const done = r.steps.filter((s) => s.status === "SUCCESS").length;
    return row([link, r.subject, r.kind, element("span", r.status, `status ${r.status}`),
                `${done} of ${r.steps.length || r.assets.length}`]);
  }));
  schedule(openRunInFlight || runs.some((r) => r.in_flight));
}

function schedule(again) {
  clearTimeout(state.timer);
  if (again) state.timer = setTimeout(guarded(refreshRuns), 3000);
}

async function refreshRuns() {
  if ($("#page-runs").hidden) return;
  try {
    if (state.openRun) await openRun(state.openRun); else await loadRuns();
  } catch (error) {
    schedule(true);  // a busy Dagster answers late now and then: keep following the run
    throw error;
  }
}

async function openRun(id) {
  state.openRun = id;
  const detail = await api(`/runs/${encodeURIComponent(id)}`);
  const run = detail.run;
  $("#run").hidden = false;
  $("#run-title").textContent = `Run ${run.id.slice(0, 8)} (${run.subject}, ${run.kind}): ${run.status}`;
  $("#run-steps").replaceChildren(...(run.steps.length ? run.steps.map((s) =>
    element("li", `${s.stepKey}: ${s.status}`, `status ${s.status}`))
    : run.assets.map((a) => element("li", `${a}: waiting`))));
  const failures = detail.log.filter((m) => m.level === "ERROR");
  $("#run-log").textContent = detail.log.map((m) => `${m.step ?? ""} ${m.message}`).join("\n");
  if (failures.length) $("#run-log").textContent += `\n\nFAILED: ${failures.at(-1).message}`;
  $("#run-log").scrollTop = $("#run-log").scrollHeight;  // the newest lines in view
  drawLoss(detail.loss);
  $("#cancel-run").hidden = !run.in_flight;
  await loadRuns(run.in_flight);
}

function drawLoss(logged) {
  // reinforcement: the reward is what moves (GRPO's loss stays near zero), drawn in its place
  const rewarded = logged.reward?.length > 0;
  const loss = rewarded ? { train: logged.reward, eval: [] } : logged;
  const svg = $("#loss");
  const all = [...loss.train, ...loss.eval];
  if (!all.length) {
    svg.replaceChildren(svgNode("text", { x: 10, y: 30 }, "No loss logged yet."));
    $("#loss-legend").textContent = "";
    return;
  }
  const maxX = Math.max(...all.map((p) => p[0])), maxY = Math.max(...all.map((p) => p[1]));
  const minY = Math.min(...all.map((p) => p[1]));
  const x = (v) => 40 + (v / Math.max(1, maxX)) * 460;
  const y = (v) => 160 - ((v - minY) / Math.max(1e-9, maxY - minY)) * 140;
  const line = (points, cls) => svgNode("polyline", {
    points: points.map((p) => `${x(p[0])},${y(p[1])}`).join(" "), class: cls });
  svg.replaceChildren(line(loss.train, "train"), line(loss.eval, "eval"),
    svgNode("text", { x: 2, y: 20, class: "tick" }, maxY.toFixed(2)),
    svgNode("text", { x: 2, y: 160, class: "tick" }, minY.toFixed(2)));
  const [, last, spread, kl, length] = loss.train.at(-1) ?? [];
  const shown = (v, digits) => (v === null || v === undefined ? "-" : v.toFixed(digits));
  $("#loss-legend").textContent = rewarded
    ? `mean reward of the sampled replies (blue): ${loss.train.length} points, last `
      + `${last} (spread ${shown(spread, 3)}, KL to the start ${shown(kl, 4)}, `
      + `${shown(length, 1)} reply tokens)`
    : `train loss (blue): ${loss.train.length} points, last `
      + `${loss.train.at(-1)?.[1] ?? "-"}; eval loss (orange): ${loss.eval.length} points`;
}

// -- monitor: this project's requests, window by window ----------------------------------------
const SERIES = [
  ["requests", (w) => w.requests, null],
  ["p95 latency (ms)", (w) => w.latency_ms?.p95 ?? null, "latency_p99_ms"],
  ["error rate", (w) => w.error_rate, "error_rate"],
  ["mean rating", (w) => w.mean_score, "min_feedback_score"],
];

async function loadMonitor() {
  const query = new URLSearchParams({ hours: $("#monitor-hours").value,
                                      window: $("#monitor-window").value });
  const read = await api(`/monitor?${query}`);
  const models = Object.entries(read.models).filter(([model]) => model !== "-");
  $("#monitor-empty").hidden = models.length > 0;
  $("#monitor-models").replaceChildren(...models.map(([model, windows]) => {
    const box = element("article", "", "monitor-model");
    box.dataset.model = model;
    const total = windows.reduce((n, w) => n + w.requests, 0);
    box.append(element("h3", `${model}: ${total} requests`));
    const limits = read.thresholds[model] ?? {};
    for (const [title, value, limit] of SERIES) {
      box.append(drawSeries(title, windows, value, limit ? limits[limit] : undefined,
                            read.since, read.until));
    }
    return box;
  }));
}

// one series as a line over the time shown, its threshold dashed when there is one
function drawSeries(title, windows, value, threshold, since, until) {
  const figure = element("figure", "", "series");
  const svg = svgNode("svg", { width: 260, height: 120, class: "chart", role: "img",
                               "aria-label": title });
  const points = windows.map((w) => [w.start, value(w)]).filter((p) => p[1] !== null);
  const values = points.map((p) => p[1]).concat(threshold ?? []);
  const peak = Math.max(0, ...values);
  const top = peak || 1;  // all zero: a flat line at the bottom
  const x = (t) => 30 + ((t - since) / Math.max(1, until - since)) * 220;
  const y = (v) => 105 - (v / top) * 90;
  svg.append(svgNode("text", { x: 2, y: 14, class: "tick" }, peak ? peak.toPrecision(3) : "0"),
             svgNode("polyline", { class: "train", points: points.map(
               (p) => `${x(p[0])},${y(p[1])}`).join(" ") }));
  for (const p of points) svg.append(svgNode("circle", { cx: x(p[0]), cy: y(p[1]), r: 2 }));
  if (threshold !== undefined) {
    svg.append(svgNode("line", { x1: 30, x2: 250, y1: y(threshold), y2: y(threshold),
                                 class: "threshold" }));
  }
  figure.append(svg, element("figcaption", `${title}: last ${points.at(-1)?.[1] ?? "-"}`));
  return figure;
}

// -- results -----------------------------------------------------------------------------------
async function loadResults() {
  state.trainings = (await api("/trainings")).data;
  const select = $("#results-training");
  const chosen = select.value;
  setOptions(select, state.trainings.map((t) => [t.name, `${t.name} (${t.model})`]));
  if (chosen) select.value = chosen;
  if (select.value) await openResults(select.value);
}

async function openResults(name) {
  const result = await api(`/trainings/${encodeURIComponent(name)}`);
  const evaluation = result.evaluation;
  $("#results").hidden = !evaluation;
  $("#results-pending").hidden = !!evaluation;
  if (!evaluation) return;
  const who = Object.keys(evaluation.scores);
  const metrics = [...new Set(who.flatMap((w) => Object.keys(evaluation.scores[w])))];
  $("#scores thead").replaceChildren(row(["", ...metrics]));
  fill($("#scores tbody"), who.map((w) => row([w, ...metrics.map((m) =>
    evaluation.scores[w][m] === undefined ? "" : Number(evaluation.scores[w][m]).toFixed(3))])));
  $("#gate").textContent = evaluation.gate_passed
    ? `Gate passed on ${evaluation.primary}: ready to promote.`
    : `Gate not passed on ${evaluation.primary}: the champion keeps serving.`;
  $("#gate-reasons").replaceChildren(...evaluation.decision.reasons.map((r) => element("li", r)));
  $("#promote").disabled = !evaluation.gate_passed;
  $("#champion").textContent = result.champion
    ? `Serving champion: version ${result.champion}.` : "No champion yet: nothing of it is served.";
  $("#open-playground").href = `index.html#model=${encodeURIComponent(result.training.model)}`;
  const models = Object.keys(evaluation.samples);
  $("#samples thead").replaceChildren(row(["question", "expected", ...models]));
  const count = Math.max(0, ...models.map((m) => evaluation.samples[m].length));
  fill($("#samples tbody"), [...Array(count).keys()].map((i) => {
    const first = evaluation.samples[models[0]][i] ?? {};
    return row([first.question, first.target, ...models.map((m) =>
      evaluation.samples[m][i]?.output ?? "")]);
  }));
  $("#model-card").textContent = result.card ?? "No model card yet (written at evaluation).";
}

async function promote() {
  const name = $("#results-training").value;
  const promoted = await api(`/trainings/${encodeURIComponent(name)}/promote`, { method: "POST" });
  showPage("runs");
  await openRun(promoted.run_id);
}

// -- documents ---------------------------------------------------------------------------------
async function loadDocuments() {
  const collections = (await api("/collections")).data;
  const select = $("#document-collection");
  const chosen = select.value;
  setOptions(select, collections.map((c) => [c.id,
                                          c.uploads ? c.id : `${c.id} (read-only)`]));
  if (chosen) select.value = chosen;
  const collection = select.value;
  $("#ask-documents").href = `index.html#tab=documents&collection=${encodeURIComponent(collection)}`;
  if (!collection) {
    fill($("#documents tbody"), []);
    return;
  }
  const docs = (await api(`/collections/${encodeURIComponent(collection)}/documents`)).data;
  fill($("#documents tbody"), docs.map((d) => {
    const remove = element("button", "Delete", "danger");
    remove.addEventListener("click", guarded(async () => {
      await api(`/collections/${encodeURIComponent(collection)}/documents/${d.id}`,
                { method: "DELETE" });
      await loadDocuments();
    }));
    return row([d.label, d.source, d.chunks, d.created_by, remove]);
  }));
}

// -- sign in -----------------------------------------------------------------------------------
async function signIn(key) {
  state.options = await useKey(key, () => api("/options"));
  showSignedIn($("#studio"));
  $("#whoami").hidden = false;
  $("#whoami").textContent = `key ${key.slice(0, 10)}…`;
  // a link may name the page to open (/studio#monitor); anything else opens the datasets
  const asked = location.hash.slice(1);
  const known = [...document.querySelectorAll("nav button")].some((b) => b.dataset.page === asked);
  showPage(known ? asked : "datasets");
}

for (const button of document.querySelectorAll("nav button")) {
  button.addEventListener("click", guarded(async () => showPage(button.dataset.page)));
}
$("#upload-form").addEventListener("submit", guarded(async (event) => {
  event.preventDefault();
  const file = $("#upload-file").files[0];
  const query = new URLSearchParams({ filename: file.name, kind: $("#upload-kind").value });
  const meta = await upload(`/datasets?${query}`, file, $("#upload-progress"));
  await loadDatasets();
  await openDataset(meta.id);
}));
$("#feedback-preview").addEventListener("click", guarded(async () => {
  const kind = $("#feedback-kind").value;
  const preview = await api(`/datasets/from-feedback?kind=${encodeURIComponent(kind)}`);
  $("#feedback-counts").textContent =
    `${preview.rows} row(s) from ${preview.feedback} piece(s) of feedback`;
  $("#feedback-examples").replaceChildren(...preview.examples.map((example) =>
    element("pre", exampleText(example), "example")));
}));
$("#feedback-form").addEventListener("submit", guarded(async (event) => {
  event.preventDefault();
  const meta = await api("/datasets/from-feedback", {
    method: "POST", body: JSON.stringify({ kind: $("#feedback-kind").value }) });
  await loadDatasets();
  await openDataset(meta.id);
}));
$("#mapping-form").addEventListener("submit", guarded(async (event) => {
  event.preventDefault();
  const mapping = Object.fromEntries([...$("#mapping-fields").querySelectorAll("select")]
    .map((s) => [s.name, s.value]));
  await api(`/datasets/${state.openDataset.id}/mapping`,
            { method: "PUT", body: JSON.stringify({ mapping }) });
  await loadDatasets();
  await openDataset(state.openDataset.id);
}));
$("#delete-dataset").addEventListener("click", guarded(async () => {
  await api(`/datasets/${state.openDataset.id}`, { method: "DELETE" });
  $("#report").hidden = true;
  await loadDatasets();
}));
$("#train-effort").addEventListener("change", guarded(applyEffort));
for (const id of ["#monitor-hours", "#monitor-window"]) {
  $(id).addEventListener("change", guarded(loadMonitor));
}
$("#document-collection").addEventListener("change", guarded(loadDocuments));
$("#document-form").addEventListener("submit", guarded(async (event) => {
  event.preventDefault();
  const file = $("#document-file").files[0];
  const collection = encodeURIComponent($("#document-collection").value);
  const query = new URLSearchParams({ filename: file.name });
  await upload(`/collections/${collection}/documents?${query}`, file, $("#document-progress"));
  await loadDocuments();
}));
for (const id of ["#train-dataset", "#train-task", "#train-base", "#hp-max_steps",
                  "#hp-micro_batch_size"]) {
  $(id).addEventListener("change", guarded(estimate));
}
$("#train-form").addEventListener("submit", guarded(launch));
$("#cancel-run").addEventListener("click", guarded(async () => {
  await api(`/runs/${state.openRun}/cancel`, { method: "POST" });
  await openRun(state.openRun);
}));
$("#results-training").addEventListener("change", guarded(async () =>
  openResults($("#results-training").value)));
$("#promote").addEventListener("click", guarded(promote));

wireSignIn(signIn);
