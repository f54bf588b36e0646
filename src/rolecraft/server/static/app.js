// rolecraft's chat page: plain JS over the server's own API (nothing is fetched from elsewhere).
"use strict";

const $ = (id) => document.getElementById(id);
const state = { character: null, characters: new Map(), session: null, fresh: true, busy: false };

// -- API --------------------------------------------------------------------------------------------
function headers() {
  const h = { "Content-Type": "application/json" };
  const key = localStorage.getItem("rolecraft.key");
  if (key) h.Authorization = `Bearer ${key}`;
  return h;
}

async function api(path, options = {}) {
  const response = await fetch(path, { ...options, headers: headers() });
  if (!response.ok) {
    let message = `${response.status}`;
    try { message = (await response.json()).error.message; } catch (_) { /* not JSON */ }
    if (response.status === 401) $("settings").open = true;
    throw new Error(message);
  }
  return response;
}

const getJSON = async (path) => (await api(path)).json();
const postJSON = async (path, body) => (await api(path, { method: "POST", body: JSON.stringify(body) })).json();

function status(text) { $("status").textContent = text || ""; }

function newSessionId() {
  if (window.crypto && crypto.randomUUID) return crypto.randomUUID();
  return Array.from({ length: 4 }, () => Math.random().toString(16).slice(2, 10)).join("");
}

// -- rendering --------------------------------------------------------------------------------------
function characterName() {
  const c = state.characters.get(state.character);
  return c ? c.rolecraft.name : state.character;
}

function fillMacros(text) {
  return text.replaceAll("{{user}}", "You").replaceAll("{{char}}", characterName());
}

function addMessage(kind, who, text) {
  const el = document.createElement("div");
  el.className = `msg ${kind}`;
  const label = document.createElement("span");
  label.className = "who";
  label.textContent = who;
  const body = document.createElement("span");
  body.className = "text";
  body.textContent = text;
  el.append(label, body);
  $("log").append(el);
  el.scrollIntoView({ block: "end" });
  return el;
}

function showFaithfulness(msg, report) {
  let box = msg.querySelector(".faith");
  if (!box) { box = document.createElement("div"); msg.append(box); }
  box.className = "faith";
  box.replaceChildren();
  const summary = document.createElement("div");
  summary.className = "summary";
  const total = document.createElement("span");
  total.className = "total";
  total.textContent = `APC ${report.total.toFixed(2)}`;
  summary.append(total, ` / ${report.statements} statements · ${report.active} active · `
    + `${report.entailed} entailed · ${report.contradicted} contradicted`);
  box.append(summary);
  const showAll = $("show-all").checked;
  const rows = report.rows
    .filter((r) => showAll || r.active || r.p_contradicted > 0.5)
    .sort((a, b) => (b.active - a.active) || (b.p_relevant - a.p_relevant));
  const list = document.createElement("ul");
  for (const r of rows) {
    const item = document.createElement("li");
    item.className = r.p_contradicted > 0.5 ? "contradicted" : r.p_entailed > 0.5 ? "entailed" : "neutral";
    if (r.active) item.classList.add("active");
    item.title = `relevant ${pct(r.p_relevant)} · entailed ${pct(r.p_entailed)} · `
      + `contradicted ${pct(r.p_contradicted)} · contribution ${r.contribution.toFixed(2)}`;
    item.textContent = r.statement;
    const p = document.createElement("span");
    p.className = "p";
    // the mark says what the reply does with the statement; the full numbers are in the tooltip
    p.textContent = r.p_contradicted > 0.5 ? `✗ ${pct(r.p_contradicted)}`
      : r.p_entailed > 0.5 ? `✓ ${pct(r.p_entailed)}` : "–";
    item.append(p);
    list.append(item);
  }
  if (!rows.length) {
    const none = document.createElement("li");
    none.textContent = "no active statements for this message";
    list.append(none);
  }
  box.append(list);
}

const pct = (p) => `${Math.round(p * 100)}%`;

async function scoreTurn(msg, session, turn) {
  const box = document.createElement("div");
  box.className = "faith pending";
  box.textContent = "scoring faithfulness…";
  msg.append(box);
  try {
    showFaithfulness(msg, await postJSON("/v1/faithfulness", { session_id: session, turn }));
  } catch (err) {
    box.textContent = `faithfulness unavailable: ${err.message}`;
  }
}

// -- characters and sessions ------------------------------------------------------------------------
async function loadCharacters() {
  const models = await getJSON("/v1/models");
  const select = $("character");
  select.replaceChildren();
  state.characters.clear();
  for (const m of models.data) {
    if (!m.rolecraft || m.rolecraft.kind !== "character") continue;
    state.characters.set(m.id, m);
    const option = document.createElement("option");
    option.value = m.id;
    option.textContent = `${m.rolecraft.name} (${m.id})`;
    select.append(option);
  }
  const wanted = localStorage.getItem("rolecraft.character");
  if (wanted && state.characters.has(wanted)) select.value = wanted;
  await pickCharacter(select.value);
}

async function pickCharacter(id) {
  state.character = id;
  localStorage.setItem("rolecraft.character", id);
  $("title").textContent = id ? characterName() : "No characters";
  newChat();
  await loadSessions();
}

async function loadSessions() {
  if (!state.character) return;
  const list = $("sessions");
  const sessions = await getJSON(`/v1/sessions?character=${encodeURIComponent(state.character)}`);
  list.replaceChildren();
  for (const s of sessions.data) {
    const item = document.createElement("li");
    item.dataset.id = s.id;
    if (s.id === state.session) item.classList.add("current");
    item.textContent = s.title || "(empty)";
    const meta = document.createElement("small");
    meta.textContent = `${s.turns} turn${s.turns === 1 ? "" : "s"} · ${new Date(s.updated * 1000).toLocaleString()}`;
    item.append(meta);
    item.addEventListener("click", () => openSession(s.id).catch((e) => status(e.message)));
    list.append(item);
  }
}

function newChat() {
  state.session = newSessionId();
  state.fresh = true;
  $("log").replaceChildren();
  const c = state.characters.get(state.character);
  if (c && c.rolecraft.greeting) addMessage("greeting", characterName(), fillMacros(c.rolecraft.greeting));
  for (const li of $("sessions").children) li.classList.remove("current");
}

async function openSession(id) {
  const session = await getJSON(`/v1/sessions/${encodeURIComponent(id)}`);
  state.session = id;
  state.fresh = false;
  $("log").replaceChildren();
  if (session.summary) addMessage("greeting", "Summary so far", session.summary);
  for (const t of session.turns) {
    addMessage("user", "You", t.user);
    const msg = addMessage("assistant", characterName(), t.reply);
    if (t.faithfulness) showFaithfulness(msg, t.faithfulness);
    else scoreTurn(msg, id, t.index);
  }
  for (const li of $("sessions").children) li.classList.toggle("current", li.dataset.id === id);
}

// -- sending ----------------------------------------------------------------------------------------
async function send(text) {
  const messages = [];
  const c = state.characters.get(state.character);
  // A new session starts from the greeting the page showed, so the character knows it said it.
  if (state.fresh && c && c.rolecraft.greeting) messages.push({ role: "assistant", content: fillMacros(c.rolecraft.greeting) });
  messages.push({ role: "user", content: text });
  addMessage("user", "You", text);
  const msg = addMessage("assistant streaming", characterName(), "");
  const body = {
    model: state.character, messages, stream: true, session_id: state.session,
    max_tokens: Number($("max-tokens").value) || 80,
  };
  const response = await api("/v1/chat/completions", { method: "POST", body: JSON.stringify(body) });
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "", info = null;
  const textEl = msg.querySelector(".text");
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += decoder.decode(value, { stream: true });
    let cut;
    while ((cut = buffer.indexOf("\n\n")) >= 0) {
      const event = buffer.slice(0, cut);
      buffer = buffer.slice(cut + 2);
      for (const line of event.split("\n")) {
        if (!line.startsWith("data: ")) continue;
        const data = line.slice(6);
        if (data === "[DONE]") continue;
        const chunk = JSON.parse(data);
        if (chunk.error) throw new Error(chunk.error.message);
        const choice = chunk.choices && chunk.choices[0];
        if (choice && choice.delta && choice.delta.content) {
          textEl.textContent += choice.delta.content;
          msg.scrollIntoView({ block: "end" });
        }
        if (chunk.rolecraft) info = chunk.rolecraft;
      }
    }
  }
  msg.classList.remove("streaming");
  if (!info) throw new Error("the reply ended early");
  textEl.textContent = info.reply;  // the stored, cleaned reply
  state.fresh = false;
  loadSessions().catch(() => {});
  await scoreTurn(msg, info.session_id, info.turn);
}

$("composer").addEventListener("submit", async (event) => {
  event.preventDefault();
  const text = $("input").value.trim();
  if (!text || state.busy || !state.character) return;
  state.busy = true;
  $("send").disabled = true;
  $("input").value = "";
  status("");
  try {
    await send(text);
  } catch (err) {
    addMessage("assistant error", "Error", err.message);
    for (const el of document.querySelectorAll(".msg.streaming")) el.classList.remove("streaming");
  } finally {
    state.busy = false;
    $("send").disabled = false;
    $("input").focus();
  }
});

$("input").addEventListener("keydown", (event) => {
  if (event.key === "Enter" && !event.shiftKey) {
    event.preventDefault();
    $("composer").requestSubmit();
  }
});
$("character").addEventListener("change", (e) => pickCharacter(e.target.value).catch((err) => status(err.message)));
$("new-chat").addEventListener("click", newChat);
$("api-key").value = localStorage.getItem("rolecraft.key") || "";
$("api-key").addEventListener("change", (e) => {
  localStorage.setItem("rolecraft.key", e.target.value.trim());
  loadCharacters().then(() => status("")).catch((err) => status(err.message));
});

loadCharacters().catch((err) => status(`Could not load characters: ${err.message}`));
