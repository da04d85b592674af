// The playground: chat, compare, ask documents and transcribe speech through the gateway's own
// API, signed in with a project key. Plain modern JS modules (no build step, no CDN), served by
// the gateway; what the Studio shares with this page is in common.js. When the project keeps
// chats (its capture policy), each reply can be rated and corrected, compare mode says which
// side is better, and conversations are kept server-side (Sessions).

import { $, ApiError, api, clearError, element, getJson, row, setOptions, showError,
         showSignedIn, state, useKey, wireSignIn } from "./common.js";

Object.assign(state, { models: [], conversation: [], controller: null, audio: null,
                       recorder: null, session: newSession() });

// a conversation's id: every turn is stored with metadata {session} (the Sessions tab)
const KEPT_HEADER = "x-adapter-factory-kept";

function newSession() {
  return `pg-${crypto.randomUUID()}`;
}

function settings() {
  const system = $("#system").value.trim();
  return {
    system: system ? [{ role: "system", content: system }] : [],
    temperature: Number($("#temperature").value),
    max_tokens: Number($("#max-tokens").value),
  };
}

// One streamed chat completion: calls onText with the answer so far; returns the answer, its
// usage, citations and the passages left out, and the timings people compare models by.
async function streamChat(model, messages, extra, onText, signal) {
  const { system, temperature, max_tokens } = settings();
  const started = performance.now();
  const response = await api("/v1/chat/completions", {
    method: "POST", signal,
    body: JSON.stringify({ model, messages: [...system, ...messages], temperature, max_tokens,
                           stream: true, stream_options: { include_usage: true },
                           store: true, ...extra }),
  });
  // kept (the project's capture policy allows it): the reply can be rated and corrected
  const kept = response.headers.get(KEPT_HEADER) === "1";
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "", text = "", first = null, usage = null, citations = null, leftOut = null;
  let id = null;
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += value;
    const events = buffer.split("\n\n");
    buffer = events.pop();
    for (const line of events.flatMap((e) => e.split("\n"))) {
      if (!line.startsWith("data: ") || line === "data: [DONE]") continue;
      const chunk = JSON.parse(line.slice(6));
      if (chunk.error) throw new ApiError(chunk.error.code ?? "stream", chunk.error.message);
      id ??= chunk.id;
      citations = chunk.citations ?? citations;
      leftOut = chunk.left_out ?? leftOut;
      usage = chunk.usage ?? usage;
      const delta = chunk.choices?.[0]?.delta?.content;
      if (delta) {
        first ??= performance.now();
        text += delta;
        onText(text);
      }
    }
  }
  const ended = performance.now();
  const tokens = usage?.completion_tokens ?? 0;
  return { id, kept, text, usage, citations, leftOut, tokens,
           ttft: first === null ? null : (first - started) / 1000,
           tokensPerSecond: first === null || ended === first ? null
             : tokens / ((ended - first) / 1000) };
}

function statsLine(result) {
  const parts = [`${result.tokens} tokens`];
  if (result.ttft !== null) parts.push(`TTFT ${result.ttft.toFixed(2)} s`);
  if (result.tokensPerSecond !== null) parts.push(`${result.tokensPerSecond.toFixed(1)} tokens/s`);
  return parts.join(" · ");
}

// -- model cards: a small Markdown subset, escaped first ---------------------------------------
const escape = (s) => s.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
const inline = (s) => escape(s).replace(/\*\*(.+?)\*\*/g, "<strong>$1</strong>")
  .replace(/`([^`]+)`/g, "<code>$1</code>");

function renderMarkdown(markdown) {
  let body = markdown;
  let html = "";
  const front = markdown.match(/^---\n([\s\S]*?)\n---\n/);
  if (front) {
    html += `<details><summary>metadata</summary><pre>${escape(front[1])}</pre></details>`;
    body = markdown.slice(front[0].length);
  }
  let table = [];
  const flush = () => {
    if (!table.length) return;
    const rows = table.filter((r) => !/^\|[\s|:]*-[\s|:-]*\|$/.test(r))  // not the |---| line
      .map((r) => r.slice(1, -1).split("|").map((c) => c.trim()));
    html += "<table>" + rows.map((cells, i) => "<tr>" + cells.map((c) =>
      i === 0 ? `<th>${inline(c)}</th>` : `<td>${inline(c)}</td>`).join("") + "</tr>").join("")
      + "</table>";
    table = [];
  };
  for (const line of body.split("\n")) {
    if (line.startsWith("|")) { table.push(line.trim()); continue; }
    flush();
    const heading = line.match(/^(#{1,3}) (.*)/);
    const level = heading ? heading[1].length + 2 : 0;
    if (heading) html += `<h${level}>${inline(heading[2])}</h${level}>`;
    else if (line.trim()) html += `<p>${inline(line)}</p>`;
  }
  flush();
  return html;
}

async function showCard(model) {
  const box = $("#card");
  box.textContent = "Loading…";
  try {
    const card = await getJson(`/v1/models/${encodeURIComponent(model)}/card`);
    box.innerHTML = renderMarkdown(card.markdown);
  } catch (error) {
    box.textContent = error instanceof ApiError && error.status === 404
      ? `No model card: ${error.message}` : `Could not load the card: ${error.message}`;
  }
}

// -- feedback on kept replies ------------------------------------------------------------------
async function giveFeedback(id, body) {
  return getJson(`/v1/chat/completions/${encodeURIComponent(id)}/feedback`, {
    method: "POST", body: JSON.stringify(body) });
}

// Good / Bad / Correct under a reply the project kept; what was said shows beside them.
function feedbackBar(id, reply) {
  const bar = element("div", "", "feedback");
  const said = element("span", "", "said");
  const say = (body, text) => giveFeedback(id, body)
    .then(() => { said.textContent = text; }).catch(showError);
  const good = element("button", "Good");
  const bad = element("button", "Bad");
  const correct = element("button", "Correct");
  good.type = bad.type = correct.type = "button";
  good.addEventListener("click", () => say({ rating: "up" }, "rated good"));
  bad.addEventListener("click", () => say({ rating: "down" }, "rated bad"));
  correct.addEventListener("click", () => {
    const editor = element("textarea", "", "correction");
    editor.value = reply;
    editor.rows = 3;
    const save = element("button", "Save correction");
    save.type = "button";
    save.addEventListener("click", () => {
      const text = editor.value.trim();
      if (!text) return;
      say({ correction: text }, "correction saved").then(() => { editor.remove(); save.remove(); });
    });
    bar.append(editor, save);
    editor.focus();
  });
  bar.append(good, bad, correct, said);
  return bar;
}

// -- usage -------------------------------------------------------------------------------------
async function refreshUsage() {
  const today = new Date().toISOString().slice(0, 10);
  const usage = await getJson(`/v1/usage?day=${today}`);
  $("#whoami").textContent = `project ${usage.project}`;
  $("#whoami").hidden = false;
  const mine = usage.data.filter((row) => row.key_id === usage.key_id);
  const sum = (rows, field) => rows.reduce((total, row) => total + row[field], 0);
  const rows = [["", "this key", "project"],
    ["requests", sum(mine, "requests"), sum(usage.data, "requests")],
    ["prompt tokens", sum(mine, "prompt_tokens"), sum(usage.data, "prompt_tokens")],
    ["completion tokens", sum(mine, "completion_tokens"), sum(usage.data, "completion_tokens")],
    ["audio seconds", sum(mine, "audio_seconds").toFixed(1),
     sum(usage.data, "audio_seconds").toFixed(1)]];
  $("#usage tbody").replaceChildren(...rows.map((cells) => row(cells.map(String))));
}

// the audit log is written in batches: read usage again once this request has landed
const usageSoon = () => setTimeout(() => refreshUsage().catch(showError), 1500);

// -- sign in -----------------------------------------------------------------------------------
async function signIn(key) {
  const models = await useKey(key, () => getJson("/v1/models"));
  // chat models only: an embedding model cannot answer a chat (/v1/models says which is which)
  state.models = models.data.filter((m) => m.type === "chat").map((m) => m.id);
  const speechModels = models.data.filter((m) => m.type === "speech").map((m) => m.id);
  setOptions($("#speech-model"), speechModels.map((id) => [id, id]));
  $("#no-speech").hidden = speechModels.length > 0;
  setOptions($("#model"), state.models.map((id) => [id, id]));
  $("#compare-models").replaceChildren(...state.models.map((id, i) => {
    const label = element("label");
    const box = document.createElement("input");
    Object.assign(box, { type: "checkbox", value: id, checked: i < 2 });
    label.append(box, ` ${id}`);
    return label;
  }));
  const collections = await getJson("/v1/collections");
  setOptions($("#collection"), collections.data.map((c) => [c.id, c.id]));
  showSignedIn($("#app"));
  // the Studio links here with #model=<adapter>, or #tab=documents&collection=<name>
  const wanted = new URLSearchParams(location.hash.slice(1));
  if (state.models.includes(wanted.get("model"))) $("#model").value = wanted.get("model");
  if ([...$("#collection").options].some((o) => o.value === wanted.get("collection"))) {
    $("#collection").value = wanted.get("collection");
  }
  const tab = wanted.get("tab");
  selectTab(["chat", "compare", "documents", "speech", "sessions"].includes(tab) ? tab : "chat");
  await refreshUsage();
}

// -- chat --------------------------------------------------------------------------------------
function addMessage(role, text) {
  const node = element("div", text, `message ${role}`);
  $("#conversation").append(node);
  return node;
}

async function chat(event) {
  event.preventDefault();
  clearError();
  const input = $("#chat-input");
  const content = input.value.trim();
  if (!content) return;
  input.value = "";
  state.conversation.push({ role: "user", content });
  addMessage("user", content);
  const bubble = addMessage("assistant", "");
  const stats = element("div", "", "stats");
  bubble.after(stats);
  state.controller = new AbortController();
  $("#stop").disabled = false;
  $("#send").disabled = true;
  try {
    const result = await streamChat($("#model").value, state.conversation,
                                    { metadata: { session: state.session } },
                                    (text) => { bubble.textContent = text; },
                                    state.controller.signal);
    state.conversation.push({ role: "assistant", content: result.text });
    stats.textContent = statsLine(result);
    if (result.kept && result.id) stats.after(feedbackBar(result.id, result.text));
  } catch (error) {
    if (error.name === "AbortError") stats.textContent = "stopped";
    else { bubble.remove(); state.conversation.pop(); showError(error); }
  } finally {
    $("#stop").disabled = true;
    $("#send").disabled = false;
    usageSoon();
  }
}

// -- compare: one message, up to three models, streamed side by side ---------------------------
async function compare(event) {
  event.preventDefault();
  clearError();
  const chosen = [...document.querySelectorAll("#compare-models input:checked")]
    .map((box) => box.value);
  if (chosen.length < 2 || chosen.length > 3) {
    showError(new Error("choose two or three models to compare"));
    return;
  }
  const messages = [{ role: "user", content: $("#compare-input").value.trim() }];
  const columns = chosen.map((model) => {
    const column = element("div", "", "column");
    column.dataset.model = model;
    const answer = element("div", "", "answer");
    const stats = element("div", "…", "stats");
    column.append(element("h3", model), answer, stats);
    return { model, column, answer, stats };
  });
  $("#compare-answers").replaceChildren(...columns.map((c) => c.column));
  await Promise.all(columns.map(async (c) => {
    try {
      const result = await streamChat(c.model, messages, {},
                                      (text) => { c.answer.textContent = text; });
      c.stats.textContent = statsLine(result);
      c.id = result.kept ? result.id : null;
    } catch (error) {
      c.stats.textContent = error instanceof ApiError ? `${error.status}: ${error.message}`
        : String(error);
    }
  }));
  const answered = columns.filter((c) => c.id);
  if (answered.length > 1) {
    for (const c of answered) c.column.append(betterButton(c, answered));
  }
  usageSoon();
}

// "This side is better": one preference against each other answer to the same message
function betterButton(chosen, answered) {
  const button = element("button", "This side is better", "better");
  button.type = "button";
  button.addEventListener("click", async () => {
    try {
      for (const other of answered.filter((c) => c !== chosen)) {
        await giveFeedback(chosen.id, { better_than: other.id });
      }
      for (const c of answered) c.column.querySelector(".better").disabled = true;
      chosen.column.append(element("div", "preferred", "said"));
    } catch (error) { showError(error); }
  });
  return button;
}

// -- sessions: conversations kept server-side, reopened and continued, shared -----------------
async function listSessions() {
  const sessions = await getJson("/v1/chat/sessions");
  $("#no-capture").hidden = sessions.capture !== "off";
  $("#sessions-empty").hidden = sessions.data.length > 0 || sessions.capture === "off";
  $("#sessions tbody").replaceChildren(...sessions.data.map((s) => {
    const open = element("button", "Open");
    open.type = "button";
    open.addEventListener("click", () => openSession(s.id).catch(showError));
    const actions = element("span");
    actions.append(open);
    if (!s.shared) {
      const share = element("button", "Share with the project");
      share.type = "button";
      share.addEventListener("click", () => getJson(
        `/v1/chat/sessions/${encodeURIComponent(s.id)}/share`, { method: "POST" })
        .then(listSessions).catch(showError));
      actions.append(share);
    }
    return row([s.title, String(s.turns), new Date(s.updated * 1000).toLocaleString(), s.user,
                s.shared ? "shared" : "not shared", actions]);
  }));
}

async function openSession(id) {
  const turns = await getJson(`/v1/chat/completions?metadata[session]=${encodeURIComponent(id)}`
                              + "&order=desc&limit=1");
  const [last] = turns.data;
  if (!last) return;
  state.session = id;
  state.conversation = [...last.messages.filter((m) => m.role !== "system"),
                        { role: "assistant", content: last.choices[0].message.content }];
  $("#conversation").replaceChildren(...state.conversation.map((m) =>
    element("div", m.content, `message ${m.role}`)));
  selectTab("chat");
}

// -- documents: retrieval through the gateway, numbered citations that open the passage -------
async function askDocuments(event) {
  event.preventDefault();
  clearError();
  const answer = $("#documents-answer");
  const list = $("#citations");
  const leftOut = $("#left-out");
  answer.textContent = "";
  list.replaceChildren();
  leftOut.hidden = true;
  const messages = [{ role: "user", content: $("#documents-input").value.trim() }];
  try {
    const result = await streamChat($("#model").value, messages,
                                    { rag: { collection: $("#collection").value, top_k: 4 } },
                                    (text) => { answer.textContent = text; });
    list.replaceChildren(...(result.citations ?? []).map((c) => {
      const item = element("li", "", "citation");
      const details = document.createElement("details");
      const summary = element("summary", `[${c.index}] ${c.source} · characters `
        + `${c.start}–${c.end} · score ${Number(c.score).toFixed(3)}`);
      details.append(summary, element("div", c.text, "passage"));
      item.append(details);
      return item;
    }));
    // retrieved, but the model's context window had no room for them
    const dropped = result.leftOut ?? [];
    leftOut.textContent = "Left out: "
      + dropped.map((c) => `${c.source} (rank ${c.rank}, ${c.reason})`).join("; ");
    leftOut.hidden = !dropped.length;
  } catch (error) {
    showError(error);
  } finally {
    usageSoon();
  }
}

// -- speech: a file or the microphone, transcribed by /v1/audio/transcriptions ----------------
function chooseAudio(blob, name) {
  state.audio = { blob, name };
  const preview = $("#audio-preview");
  if (preview.src) URL.revokeObjectURL(preview.src);
  preview.src = URL.createObjectURL(blob);
  preview.hidden = false;
  $("#audio-chosen").textContent = `${name} · ${(blob.size / 1024).toFixed(1)} KiB`;
  $("#transcribe").disabled = !$("#speech-model").value;
}

// MediaRecorder's container differs by browser: Chromium records WebM, Firefox Ogg (both Opus)
const RECORDING_TYPES = [["audio/webm;codecs=opus", "webm"], ["audio/ogg;codecs=opus", "ogg"]];

async function toggleRecording() {
  clearError();
  const button = $("#record");
  if (state.recorder) {
    state.recorder.stop();
    return;
  }
  const found = RECORDING_TYPES.find(([type]) => MediaRecorder.isTypeSupported(type));
  if (!found) throw new Error("this browser records no format the gateway accepts (WebM or Ogg)");
  const [mimeType, extension] = found;
  const stream = await navigator.mediaDevices.getUserMedia({ audio: true });
  const recorder = new MediaRecorder(stream, { mimeType });
  const chunks = [];
  recorder.addEventListener("dataavailable", (event) => chunks.push(event.data));
  recorder.addEventListener("stop", () => {
    for (const track of stream.getTracks()) track.stop();
    state.recorder = null;
    button.textContent = "Record";
    button.classList.remove("recording");
    chooseAudio(new Blob(chunks, { type: mimeType }), `recording.${extension}`);
  });
  recorder.start();
  state.recorder = recorder;
  button.textContent = "Stop recording";
  button.classList.add("recording");
}

const clock = (seconds) => new Date(seconds * 1000).toISOString().slice(11, 19);

async function transcribe() {
  clearError();
  const button = $("#transcribe");
  const form = new FormData();
  form.append("file", state.audio.blob, state.audio.name);
  form.append("model", $("#speech-model").value);
  form.append("response_format", "verbose_json");
  const language = $("#speech-language").value.trim();
  if (language) form.append("language", language);
  button.disabled = true;
  $("#transcript-stats").textContent = "transcribing…";
  const started = performance.now();
  try {
    const result = await (await api("/v1/audio/transcriptions",
                                    { method: "POST", body: form })).json();
    const wall = (performance.now() - started) / 1000;
    const transcript = $("#transcript");
    transcript.textContent = result.text;
    transcript.hidden = false;
    $("#segments").replaceChildren(...(result.segments ?? []).map((segment) => {
      const item = element("li", "", "segment");
      item.append(element("span", clock(segment.start), "at"), segment.text.trim());
      return item;
    }));
    $("#transcript-stats").textContent = `${result.duration.toFixed(1)} s of audio in `
      + `${wall.toFixed(1)} s (${(result.duration / wall).toFixed(1)}× real time)`;
    $("#to-chat").disabled = !result.text.trim();
  } catch (error) {
    $("#transcript-stats").textContent = "";
    showError(error);
  } finally {
    button.disabled = false;
    usageSoon();
  }
}

function sendTranscriptToChat() {
  $("#chat-input").value = $("#transcript").textContent.trim();
  selectTab("chat");
  $("#chat-input").focus();
}

// -- wiring ------------------------------------------------------------------------------------
function selectTab(name) {
  for (const button of document.querySelectorAll("nav button")) {
    button.classList.toggle("active", button.dataset.tab === name);
  }
  for (const tab of document.querySelectorAll(".tab")) tab.hidden = tab.id !== `tab-${name}`;
  // chat settings mean nothing to a speech model; its card (word error rates) says more
  $("#settings").hidden = name === "speech";
  const shown = name === "speech" ? $("#speech-model").value : $("#model").value;
  if (shown) showCard(shown).catch(showError);
  if (name === "sessions") listSessions().catch(showError);
}

// Every listener is added once, here at load: one added on each tab switch would run once per
// switch (a click on Record would start as many recordings).
$("#model").addEventListener("change", () => showCard($("#model").value));
$("#speech-model").addEventListener("change", () => showCard($("#speech-model").value));
$("#chat-form").addEventListener("submit", chat);
$("#stop").addEventListener("click", () => state.controller?.abort());
$("#clear").addEventListener("click", () => {
  state.conversation = [];
  state.session = newSession();
  $("#conversation").replaceChildren();
});
$("#compare-form").addEventListener("submit", compare);
$("#documents-form").addEventListener("submit", askDocuments);
$("#audio-file").addEventListener("change", (event) => {
  const [file] = event.target.files;
  if (file) chooseAudio(file, file.name);
});
$("#record").addEventListener("click", () => toggleRecording().catch(showError));
$("#transcribe").addEventListener("click", transcribe);
$("#to-chat").addEventListener("click", sendTranscriptToChat);
for (const button of document.querySelectorAll("nav button")) {
  button.addEventListener("click", () => selectTab(button.dataset.tab));
}
wireSignIn(signIn);
