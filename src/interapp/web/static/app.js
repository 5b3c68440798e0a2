// interapp web UI: the live parts of the server-rendered pages. No framework, no build step.
//
// One WebSocket (/ws) brings updates: "targets"/"buddies" (fetch the server-rendered fragment
// again), "presence", "message", "prompt"/"prompt_closed" and "notice". Everything the page
// changes goes through fetch() with the session's CSRF token in the X-CSRF-Token header.
// Outgoing chat messages wait in localStorage (the outbox) with a client_msg_id until the
// server has taken them, so nothing typed is lost when a connection drops, and a message
// posted twice is still delivered once.

const csrf = document.querySelector('meta[name="csrf-token"]')?.content ?? "";
const $ = (id) => document.getElementById(id);
const OUTBOX = "interapp.outbox";
const PAGE_CHECK_MS = 3000;

// --- small helpers --------------------------------------------------------------------------

async function api(method, path, body) {
  const res = await fetch(path, {
    method,
    credentials: "same-origin",
    headers: { "X-CSRF-Token": csrf, "Content-Type": "application/json", Accept: "application/json" },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  let data = null;
  try { data = await res.json(); } catch { data = null; }
  return { ok: res.ok, status: res.status, data };
}

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = value;
    else if (value !== undefined && value !== null && value !== false) node.setAttribute(key, value);
  }
  node.append(...children);
  return node;
}

function newId() {
  const bytes = new Uint8Array(16);
  crypto.getRandomValues(bytes);
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

function notice(text, level = "info") {
  const box = $("notices");
  if (!box) return;
  const item = el("p", { class: `notice notice-${level}`, text });
  box.append(item);
  while (box.children.length > 4) box.firstElementChild.remove();
  setTimeout(() => item.remove(), level === "error" ? 15000 : 10000);
}

function clock(iso) {
  const when = new Date(iso);
  if (Number.isNaN(when.getTime())) return "";
  return when.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
}

// --- server-rendered fragments ----------------------------------------------------------------

const timers = {};

function refresh(id) {
  clearTimeout(timers[id]);
  timers[id] = setTimeout(() => swap(id), 80);
}

async function swap(id) {
  const box = $(id);
  if (!box) return;
  let res;
  try { res = await fetch(box.dataset.fragment, { headers: { Accept: "text/html" } }); } catch { return; }
  if (!res.ok) return;
  const html = await res.text();
  const focused = box.contains(document.activeElement) ? document.activeElement.dataset.key : null;
  box.innerHTML = html; // server-rendered, autoescaped by Jinja2
  if (focused) box.querySelector(`[data-key="${CSS.escape(focused)}"]`)?.focus();
  if (id === "buddies") decorateBuddies();
}

// --- targets: connect / re-link ---------------------------------------------------------------

$("targets")?.addEventListener("click", async (event) => {
  const button = event.target.closest('[data-action="connect"]');
  if (!button) return;
  button.disabled = true;
  button.textContent = "Connecting…";
  try {
    const res = await api("POST", `/api/targets/${encodeURIComponent(button.dataset.target)}/connect`);
    if (!res.ok) notice(res.data?.message ?? `could not connect (${res.status})`, "error");
  } catch {
    notice("the interapp UI server does not answer", "error");
  }
  refresh("targets");
});

// --- prompts ----------------------------------------------------------------------------------

const prompts = [];
let shown = null;
const typed = new Map(); // target -> what was typed in non-secret fields (kept for a re-prompt)

function addPrompt(prompt) {
  if (!prompts.some((p) => p.id === prompt.id)) prompts.push(prompt);
  showPrompt();
}

function closePrompt(id) {
  const at = prompts.findIndex((p) => p.id === id);
  if (at >= 0) prompts.splice(at, 1);
  if (shown?.id === id) {
    shown = null;
    if ($("prompt").open) $("prompt").close();
  }
  showPrompt();
}

function showPrompt() {
  const dialog = $("prompt");
  if (!dialog || shown || prompts.length === 0) return;
  shown = prompts[0];
  $("prompt-target").textContent = shown.target;
  $("prompt-target-2").textContent = shown.target;
  $("prompt-reason").textContent = shown.reason;
  $("prompt-reason").setAttribute("role", shown.attempt > 1 ? "alert" : "none");
  $("prompt-reason").className = shown.attempt > 1 ? "problem" : "";
  const said = /attempt \d+ of \d+/i.test(shown.reason); // the reason may say it already
  $("prompt-attempt").textContent = shown.max_attempts > 1 && !said ? `Attempt ${shown.attempt} of ${shown.max_attempts}` : "";
  $("prompt-error").textContent = "";
  const fields = $("prompt-fields");
  fields.replaceChildren();
  for (const f of shown.fields) {
    const id = `prompt-field-${f.name}`;
    fields.append(
      el("label", { for: id, text: f.label }),
      el("input", {
        id, name: f.name, type: f.secret ? "password" : "text", required: "required",
        autocomplete: f.secret ? "current-password" : (f.name === "username" ? "username" : "off"),
        value: f.value || (f.secret ? undefined : typed.get(shown.target)?.[f.name]),
        spellcheck: "false", autocapitalize: "off",
      }),
    );
  }
  setPromptBusy(false);
  dialog.showModal();
  const first = [...fields.querySelectorAll("input")].find((i) => !i.value) ?? fields.querySelector("input");
  first?.focus();
}

function setPromptBusy(busy) {
  $("prompt-ok").disabled = busy;
  $("prompt-cancel").disabled = busy;
  $("prompt-ok").textContent = busy ? "Checking…" : "Sign in";
}

async function answerPrompt(body) {
  if (!shown) return;
  const id = shown.id;
  setPromptBusy(true);
  let res;
  try {
    res = await api("POST", `/api/prompts/${encodeURIComponent(id)}`, body);
  } catch {
    setPromptBusy(false);
    $("prompt-error").textContent = "The interapp UI server does not answer; try again.";
    return;
  }
  if (res.status === 404) { closePrompt(id); return; }
  if (!res.ok) {
    setPromptBusy(false);
    $("prompt-error").textContent = res.data?.message ?? `Not accepted (${res.status})`;
  }
  // on success the server closes the prompt ("prompt_closed"), and asks again if it was refused
}

$("prompt-form")?.addEventListener("submit", (event) => {
  event.preventDefault();
  const answers = {};
  const plain = {};
  for (const input of $("prompt-fields").querySelectorAll("input")) {
    answers[input.name] = input.value;
    if (input.type !== "password") plain[input.name] = input.value;
  }
  if (shown) typed.set(shown.target, plain);
  answerPrompt({ answers });
});
$("prompt-cancel")?.addEventListener("click", () => answerPrompt({ decline: true }));
$("prompt")?.addEventListener("cancel", (event) => { // Escape
  event.preventDefault();
  answerPrompt({ decline: true });
});

// --- buddies and presence ------------------------------------------------------------------------

const unread = new Map(); // "target/user" -> count
let chat = null; // { target, user, name, nextBefore, ids: Set, loading }

function buddyButton(target, user) {
  return document.querySelector(`.buddy[data-target="${CSS.escape(target)}"][data-user="${CSS.escape(user)}"]`);
}

function decorateBuddies() {
  for (const button of document.querySelectorAll(".buddy")) {
    const key = `${button.dataset.target}/${button.dataset.user}`;
    const count = unread.get(key) ?? 0;
    const badge = button.querySelector(".unread");
    badge.hidden = count === 0;
    badge.textContent = count ? `${count} new` : "";
    const current = chat && chat.target === button.dataset.target && chat.user === button.dataset.user;
    if (current) button.setAttribute("aria-current", "true");
    else button.removeAttribute("aria-current");
  }
}

function onPresence(update) {
  const b = update.buddy;
  const button = buddyButton(b.target, b.username);
  if (button) {
    button.dataset.presence = b.presence;
    button.querySelector(".presence").textContent = b.presence;
    button.querySelector(".status").textContent = b.status_text;
  } else {
    refresh("buddies");
  }
  if (update.came_online) {
    const status = b.status_text ? ` (${b.status_text})` : "";
    notice(`${b.display_name} came online on ${b.target}${status}`, "ok");
  }
}

$("buddies")?.addEventListener("click", (event) => {
  const button = event.target.closest(".buddy");
  if (button) openChat(button.dataset.target, button.dataset.user, button.dataset.name);
});

$("presence-form")?.addEventListener("submit", async (event) => {
  event.preventDefault();
  const out = $("presence-result");
  const state = $("presence-state").value;
  const text = $("presence-text").value;
  out.textContent = "Setting…";
  try {
    const res = await api("POST", "/api/presence", { state, status_text: text });
    if (!res.ok) { out.textContent = res.data?.message ?? `failed (${res.status})`; return; }
    const on = res.data.targets.length ? res.data.targets.join(", ") : "no connected app";
    const failed = Object.entries(res.data.errors).map(([t, m]) => `${t}: ${m}`).join("; ");
    out.textContent = `${state}${text ? ` — ${text}` : ""} on ${on}${failed ? `; not on ${failed}` : ""}`;
  } catch {
    out.textContent = "the interapp UI server does not answer";
  }
});

// --- chat -------------------------------------------------------------------------------------

function messageItem(m, pending) {
  const mine = m.from !== chat.user;
  const item = el("li", {
    class: `msg ${mine ? "mine" : "theirs"}${pending ? " pending" : ""}`,
    "data-id": m.id || undefined, "data-cmid": m.client_msg_id || undefined,
  });
  item.append(
    el("span", { class: "from", text: mine ? "You" : (chat.name || m.from) }),
    el("p", { class: "body", text: m.body }),
    el("span", { class: "meta", text: pending ? (m.failed ? `not sent: ${m.failed}` : "waiting to send…") : clock(m.sent_at) }),
  );
  return item;
}

function inChat(m) {
  return chat && m.target === chat.target && (m.from === chat.user || m.to === chat.user);
}

function showMessage(m) {
  const list = $("messages");
  if (m.client_msg_id) {
    const waiting = list.querySelector(`[data-cmid="${CSS.escape(m.client_msg_id)}"]`);
    if (waiting) {
      if (m.id) chat.ids.add(m.id);
      waiting.replaceWith(messageItem(m, false));
      return;
    }
  }
  if (m.id && chat.ids.has(m.id)) return;
  if (m.id) chat.ids.add(m.id);
  const atBottom = list.scrollHeight - list.scrollTop - list.clientHeight < 120;
  const firstPending = list.querySelector(".pending");
  list.insertBefore(messageItem(m, false), firstPending);
  if (atBottom || m.from !== chat.user) list.scrollTop = list.scrollHeight;
}

function showOutbox() {
  const list = $("messages");
  for (const item of readOutbox()) {
    if (!chat || item.target !== chat.target || item.to !== chat.user) continue;
    if (list.querySelector(`[data-cmid="${CSS.escape(item.id)}"]`)) continue;
    list.append(messageItem({ from: "", to: item.to, body: item.body, client_msg_id: item.id }, true));
  }
  list.scrollTop = list.scrollHeight;
}

async function loadHistory(before) {
  if (!chat || chat.loading) return;
  const current = chat;
  current.loading = true;
  const params = new URLSearchParams({ target: current.target, user: current.user });
  if (before) params.set("before", before);
  let res;
  try {
    res = await api("GET", `/api/history?${params}`);
  } catch {
    current.loading = false;
    return;
  }
  current.loading = false;
  if (chat !== current) return;
  if (!res.ok) { notice(res.data?.message ?? "could not load the conversation", "error"); return; }
  const list = $("messages");
  if (before) {
    const height = list.scrollHeight;
    const fresh = res.data.messages.filter((m) => !current.ids.has(m.id));
    fresh.forEach((m) => current.ids.add(m.id));
    list.prepend(...fresh.map((m) => messageItem(m, false)));
    list.scrollTop += list.scrollHeight - height; // keep what the user was reading in place
    current.nextBefore = res.data.next_before;
  } else {
    for (const m of res.data.messages) showMessage(m);
    if (current.nextBefore === undefined) current.nextBefore = res.data.next_before;
    $("older").hidden = !current.nextBefore; // before scrolling: it takes room from the list
    list.scrollTop = list.scrollHeight;
  }
  $("older").hidden = !current.nextBefore;
}

function openChat(target, user, name) {
  chat = { target, user, name: name || user, nextBefore: undefined, ids: new Set(), loading: false };
  unread.delete(`${target}/${user}`);
  decorateBuddies();
  $("chat-empty").hidden = true;
  $("chat-body").hidden = false;
  $("chat-h").textContent = `Chat with ${chat.name} (@${user}) on ${target}`;
  $("compose-label").textContent = `Message to ${chat.name}`;
  $("messages").replaceChildren();
  $("older").hidden = true;
  showOutbox();
  loadHistory(null);
  if (window.matchMedia("(max-width: 720px)").matches) $("chat").scrollIntoView({ block: "start" });
  $("compose").focus();
}

$("older")?.addEventListener("click", () => chat?.nextBefore && loadHistory(chat.nextBefore));
$("messages")?.addEventListener("scroll", (event) => {
  if (event.target.scrollTop === 0 && chat?.nextBefore) loadHistory(chat.nextBefore);
});

function onMessage(m) {
  if (inChat(m)) { showMessage(m); return; }
  const other = m.from === myName(m.target) ? m.to : m.from;
  if (m.from === other) {
    const key = `${m.target}/${other}`;
    unread.set(key, (unread.get(key) ?? 0) + 1);
    decorateBuddies();
    notice(`${other} on ${m.target}: ${m.body.slice(0, 80)}`);
  }
}

function myName(target) {
  return document.querySelector(`.group[data-target="${CSS.escape(target)}"]`)?.dataset.account ?? "";
}

// --- the outbox ---------------------------------------------------------------------------------

function readOutbox() {
  try { return JSON.parse(localStorage.getItem(OUTBOX) || "[]"); } catch { return []; }
}

function writeOutbox(items) {
  localStorage.setItem(OUTBOX, JSON.stringify(items));
}

function dropFromOutbox(id) {
  writeOutbox(readOutbox().filter((item) => item.id !== id));
}

let flushing = false;
let retryTimer = null;

function flushLater() {
  if (retryTimer === null) retryTimer = setTimeout(() => { retryTimer = null; flush(); }, PAGE_CHECK_MS);
}

async function flush() {
  if (flushing) return;
  flushing = true;
  const blocked = new Set(); // targets that cannot take messages right now
  try {
    for (const item of readOutbox()) {
      if (blocked.has(item.target)) continue;
      let res;
      try {
        res = await api("POST", "/api/messages", { target: item.target, to: item.to, body: item.body, client_msg_id: item.id });
      } catch {
        flushLater(); // the UI server is out of reach: keep everything
        return;
      }
      if (res.ok) {
        dropFromOutbox(item.id);
        if (inChat(res.data)) showMessage(res.data);
      } else if (res.status === 503 || res.status >= 500 || res.status === 401 || res.status === 403) {
        blocked.add(item.target);
        flushLater();
      } else {
        dropFromOutbox(item.id);
        const waiting = document.querySelector(`[data-cmid="${CSS.escape(item.id)}"] .meta`);
        const why = res.data?.message ?? `error ${res.status}`;
        if (waiting) waiting.textContent = `not sent: ${why}`;
        notice(`not sent to ${item.to} on ${item.target}: ${why}`, "error");
      }
    }
  } finally {
    flushing = false;
  }
}

function send() {
  const box = $("compose");
  const body = box.value;
  if (!chat || !body.trim()) return;
  const item = { id: newId(), target: chat.target, to: chat.user, body, at: Date.now() };
  writeOutbox([...readOutbox(), item]);
  box.value = "";
  showOutbox();
  flush();
}

$("compose-form")?.addEventListener("submit", (event) => { event.preventDefault(); send(); });
$("compose")?.addEventListener("keydown", (event) => {
  if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
    event.preventDefault();
    send();
  }
});
window.addEventListener("online", () => flush());

// --- the live connection --------------------------------------------------------------------------

let delay = 500;

function setLive(state, text) {
  const live = $("live");
  if (!live) return;
  live.dataset.state = state;
  live.textContent = text;
}

function handle(update) {
  switch (update.type) {
    case "hello":
      for (const p of [...prompts]) if (!update.prompts.some((q) => q.id === p.id)) closePrompt(p.id);
      update.prompts.forEach(addPrompt);
      break;
    case "prompt": addPrompt(update.prompt); break;
    case "prompt_closed": closePrompt(update.id); break;
    case "targets": refresh("targets"); break;
    case "buddies": refresh("buddies"); break;
    case "presence": onPresence(update); break;
    case "self_presence": break;
    case "message": onMessage(update.message); break;
    case "notice": notice(update.text, update.level); break;
    default: break;
  }
}

function connectLive() {
  if (!$("live")) return; // not signed in: nothing live on this page
  const ws = new WebSocket(`${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/ws`);
  ws.addEventListener("open", () => {
    delay = 500;
    setLive("up", "Live");
    refresh("targets");
    refresh("buddies");
    if (chat) loadHistory(null); // catch up on what arrived while the link was down
    flush();
  });
  ws.addEventListener("message", (event) => handle(JSON.parse(event.data)));
  ws.addEventListener("close", () => {
    setLive("down", "Reconnecting…");
    setTimeout(connectLive, delay);
    delay = Math.min(delay * 2, 10000);
  });
}

connectLive();
if ($("live")) flushLater();
