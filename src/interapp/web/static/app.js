// interapp web UI: the live parts of the server-rendered pages. No framework, no build step.
//
// The page is a client of the agent's local API (docs/agent.md): every call goes to
// /agent/v1/... on this server, which adds the agent's token and forwards it; the session
// cookie and the CSRF token (X-CSRF-Token) are what the page itself holds. One WebSocket,
// /agent/v1/events, brings the agent's events, each with an increasing `seq`; after a dropped
// connection the page resumes with ?since=<last seq> and loses nothing. The server-rendered
// fragments /fragments/targets and /fragments/buddies are fetched again when events say they
// changed (and the targets every few seconds, for changes made outside any client).
// Outgoing chat messages wait in localStorage (the outbox) with a client_msg_id until the
// agent has taken them, so nothing typed is lost when a connection drops, and a message
// posted twice is still delivered once.

const csrf = document.querySelector('meta[name="csrf-token"]')?.content ?? "";
const $ = (id) => document.getElementById(id);
const API = "/agent/v1";
const OUTBOX = "interapp.outbox";
const PAGE_CHECK_MS = 3000;
const PAGE = 30;
const enc = encodeURIComponent;

// --- small helpers --------------------------------------------------------------------------

async function api(method, path, body) {
  const res = await fetch(API + path, {
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
const lastHtml = {};

function refresh(id) {
  clearTimeout(timers[id]);
  timers[id] = setTimeout(() => swap(id), 80);
}

async function swap(id) {
  const box = $(id);
  if (!box) return false;
  let res;
  try { res = await fetch(box.dataset.fragment, { headers: { Accept: "text/html" } }); } catch { return false; }
  if (!res.ok) return false;
  const html = await res.text();
  if (lastHtml[id] === html) return false; // unchanged: the DOM (and the focus) stay
  lastHtml[id] = html;
  const focused = box.contains(document.activeElement) ? document.activeElement.dataset.key : null;
  box.innerHTML = html; // server-rendered, autoescaped by Jinja2
  if (focused) box.querySelector(`[data-key="${CSS.escape(focused)}"]`)?.focus();
  if (id === "buddies") {
    if (chat?.person) { // merged or split meanwhile: the conversation follows the person
      const row = box.querySelector(`.buddy.person[data-person="${CSS.escape(chat.person)}"]`);
      if (row) chat.accounts = new Set(personAccounts(row).map((a) => `${a.target}/${a.user}`));
    }
    decorateBuddies();
  }
  if (id === "invites") $("invites-panel").hidden = !box.querySelector(".invite-card");
  return true;
}

async function checkTargets() { // changes made outside any client (a hand edit, the vault)
  if (await swap("targets")) refresh("buddies");
}

// --- targets: connect / re-link ---------------------------------------------------------------

function outcome(target, res) {
  const d = res.data ?? {};
  if (res.ok && d.connected) notice(`connected to ${target} as ${d.connected.account}`, "ok");
  else if (res.ok && d.prompt) addPrompt(d.prompt);
  else if (res.ok && d.pending) notice(`${target}: still connecting…`);
  else if (!res.ok) notice(`${target}: ${d.message ?? `failed (${res.status})`}`, "error");
  refresh("targets");
  refresh("buddies");
}

$("targets")?.addEventListener("click", async (event) => {
  const button = event.target.closest('[data-action="connect"]');
  if (!button) return;
  const target = button.dataset.target;
  button.disabled = true;
  button.textContent = "Connecting…";
  try {
    // reconnect: the flow runs again (Re-link repairs the same link); can: this page can
    // open the target's own sign-in page (the browser way), where the target offers one
    outcome(target, await api("POST", `/targets/${enc(target)}/connect`, { reconnect: true, can: ["browser"] }));
  } catch {
    notice("the interapp UI server does not answer", "error");
    refresh("targets");
  }
});

// --- prompts ----------------------------------------------------------------------------------

const prompts = [];
let shown = null;
let waiting = null; // the open_url prompt whose sign-in runs in another window
const typed = new Map(); // target -> what was typed in non-secret fields (kept for a re-prompt)

function addPrompt(prompt) {
  if (!prompts.some((p) => p.id === prompt.id)) prompts.push(prompt);
  showPrompt();
}

function closePrompt(id) {
  const at = prompts.findIndex((p) => p.id === id);
  if (at >= 0) prompts.splice(at, 1);
  if (shown?.id === id) {
    if (waiting === id) return; // its window is still open: the answer says how it ended
    shown = null;
    if ($("prompt").open) $("prompt").close();
  }
  showPrompt();
}

async function syncPrompts() { // the prompts open now (any client may answer them)
  let res;
  try { res = await api("GET", "/state"); } catch { return null; }
  if (!res.ok) return null;
  const open = res.data.prompts ?? [];
  for (const p of [...prompts]) if (!open.some((q) => q.id === p.id)) closePrompt(p.id);
  open.forEach(addPrompt);
  return res.data;
}

function showPrompt() {
  const dialog = $("prompt");
  if (!dialog || shown || prompts.length === 0) return;
  shown = prompts[0];
  $("prompt-target").textContent = shown.target;
  $("prompt-reason").textContent = shown.reason;
  $("prompt-reason").setAttribute("role", shown.attempt > 1 ? "alert" : "none");
  $("prompt-reason").className = shown.attempt > 1 ? "problem" : "";
  const said = /attempt \d+ of \d+/i.test(shown.reason); // the reason may say it already
  $("prompt-attempt").textContent = shown.max_attempts > 1 && !said ? `Attempt ${shown.attempt} of ${shown.max_attempts}` : "";
  $("prompt-error").textContent = "";
  const fields = $("prompt-fields");
  fields.replaceChildren();
  const page = shown.kind === "open_url";
  $("prompt-hint").textContent = page
    ? `You sign in on ${shown.target}'s own page; interapp on this computer never sees your password there, and stores the link only when the sign-in succeeds.`
    : `What you type goes only to interapp on this computer, which signs in to ${shown.target} with it. Nothing is stored unless the sign-in succeeds.`;
  if (page) {
    fields.append(el("p", { id: "prompt-page", text: `${shown.target}'s sign-in page opens in a new window. Sign in there; this finishes by itself when you are back.` }));
  }
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
  (first ?? $("prompt-ok")).focus();
}

function setPromptBusy(busy) {
  $("prompt-ok").disabled = busy;
  $("prompt-cancel").disabled = busy;
  const page = shown?.kind === "open_url";
  $("prompt-ok").textContent = busy
    ? (page ? "Waiting for the sign-in…" : "Checking…")
    : (page ? `Open ${shown.target}'s sign-in page` : "Sign in");
}

async function signInOnThePage() { // the browser way: the target's page, in a new window
  if (!shown) return;
  const { id, url } = shown;
  if (!/^https?:\/\//i.test(url ?? "")) {
    $("prompt-error").textContent = "The sign-in page's address is not a web address.";
    return;
  }
  window.open(url, "_blank", "noopener"); // in the click: no popup blocker
  waiting = id;
  try {
    await answerPrompt({ answers: {} }); // returns once the target's page sent the user back
  } finally {
    if (waiting === id) waiting = null;
    closePrompt(id);
  }
}

async function answerPrompt(body) {
  if (!shown) return;
  const { id, target } = shown;
  setPromptBusy(true);
  let res;
  try {
    // the agent answers with what came of it: connected, the next attempt's prompt, or why not
    res = await api("POST", `/prompts/${enc(id)}`, body);
  } catch {
    setPromptBusy(false);
    $("prompt-error").textContent = "The interapp UI server does not answer; try again.";
    return;
  }
  if (res.status === 400 && shown?.id === id) { // not taken (a field missing): still open
    setPromptBusy(false);
    $("prompt-error").textContent = res.data?.message ?? "Not accepted";
    return;
  }
  if (waiting === id) waiting = null;
  closePrompt(id);
  if (res.status === 404) { refresh("targets"); return; } // answered elsewhere, or timed out
  outcome(target, res);
}

$("prompt-form")?.addEventListener("submit", (event) => {
  event.preventDefault();
  if (shown?.kind === "open_url") { signInOnThePage(); return; }
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
let chat = null; // { target, user, name, nextBefore, oldest, ids: Set, loaded, partial, early: [], loading }

function buddyButton(target, user) {
  return document.querySelector(`.buddy[data-target="${CSS.escape(target)}"][data-user="${CSS.escape(user)}"]`);
}

function personAccounts(button) { // the accounts a person row lists: [{target, user}]
  return [...button.querySelectorAll(".acct")].map((a) => ({ target: a.dataset.target, user: a.dataset.user }));
}

function decorateBuddies() {
  for (const button of document.querySelectorAll(".buddy.person")) {
    const count = personAccounts(button).reduce((n, a) => n + (unread.get(`${a.target}/${a.user}`) ?? 0), 0);
    const badge = button.querySelector(":scope > .unread");
    badge.hidden = count === 0;
    badge.textContent = count ? `${count} new` : "";
    if (chat?.person === button.dataset.person) button.setAttribute("aria-current", "true");
    else button.removeAttribute("aria-current");
  }
  for (const button of document.querySelectorAll(".buddy:not(.person)")) {
    const key = `${button.dataset.target}/${button.dataset.user}`;
    const count = unread.get(key) ?? 0;
    const badge = button.querySelector(".unread");
    badge.hidden = count === 0;
    badge.textContent = count ? `${count} new` : "";
    const current = chat && !chat.person && chat.target === button.dataset.target && chat.user === button.dataset.user;
    if (current) button.setAttribute("aria-current", "true");
    else button.removeAttribute("aria-current");
  }
}

function onPresence(ev) {
  const button = buddyButton(ev.target, ev.username);
  if (!button) { refresh("buddies"); return; }
  button.dataset.presence = ev.state;
  button.querySelector(".presence").textContent = ev.state;
  button.querySelector(".status").textContent = ev.status_text ?? "";
}

function onCameOnline(ev) {
  const name = buddyButton(ev.target, ev.username)?.dataset.name || ev.username;
  const status = ev.status_text ? ` (${ev.status_text})` : "";
  notice(`${name} came online on ${ev.target}${status}`, "ok");
}

$("buddies")?.addEventListener("click", (event) => {
  const person = event.target.closest(".buddy.person");
  if (person) { openPersonChat(person.dataset.person, person.dataset.name, personAccounts(person)); return; }
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
    const res = await api("PUT", "/presence", { state, status_text: text });
    if (!res.ok) { out.textContent = res.data?.message ?? `failed (${res.status})`; return; }
    const on = res.data.targets.length ? res.data.targets.join(", ") : "no connected app";
    const failed = Object.entries(res.data.errors).map(([t, m]) => `${t}: ${m}`).join("; ");
    out.textContent = `${state}${text ? ` — ${text}` : ""} on ${on}${failed ? `; not on ${failed}` : ""}`;
  } catch {
    out.textContent = "the interapp UI server does not answer";
  }
});

// --- invites (rich presence) ------------------------------------------------------------------
//
// A buddy's invite arrives as an `invite` event; the card (server-rendered from the agent's
// GET /invites) offers Join — accept, then open the join link in a new window — and Decline.

$("invites")?.addEventListener("click", async (event) => {
  const button = event.target.closest("[data-answer]");
  const card = button?.closest(".invite-card");
  if (!card) return;
  const { target, invite, url } = card.dataset;
  const accept = button.dataset.answer === "accept";
  for (const b of card.querySelectorAll("button")) b.disabled = true;
  let res;
  try {
    res = await api("POST", `/invites/${enc(target)}/${enc(invite)}/${accept ? "accept" : "decline"}`);
  } catch {
    notice("the interapp UI server does not answer", "error");
    for (const b of card.querySelectorAll("button")) b.disabled = false;
    return;
  }
  if (res.ok && accept && url) window.open(url, "_blank", "noopener,noreferrer");
  if (!res.ok) notice(`${target}: ${res.data?.message ?? `failed (${res.status})`}`, "error");
  refresh("invites");
});

function onInviteAnswer(invite) {
  refresh("invites");
  if (invite.outgoing && invite.state !== "pending") {
    notice(`${invite.to} ${invite.state === "expired" ? "did not answer" : invite.state} your invite on ${invite.target}`,
      invite.state === "accepted" ? "ok" : "info");
  }
}

// --- chat -------------------------------------------------------------------------------------
//
// Messages are shown once each (by id) and in time order, whatever order they arrive in:
// the history pages, live events (which may come before or after the history they belong
// to) and the answers to our own sends. A live message older than the oldest one shown, while
// older pages remain, is left to the scroll-back, which brings it in its place.

function when(m) {
  const t = Date.parse(m.sent_at);
  return Number.isNaN(t) ? 0 : t;
}

function msgKey(m) { // a person's chat spans targets, whose ids may be alike
  return m.id && chat.person ? `${m.target}/${m.id}` : m.id;
}

function messageItem(m, pending) {
  const mine = chat.person ? (m.own ?? !chat.accounts.has(`${m.target}/${m.sender}`)) : m.sender !== chat.user;
  const on = chat.person && m.target ? ` · ${m.target}` : "";
  const item = el("li", {
    class: `msg ${mine ? "mine" : "theirs"}${pending ? " pending" : ""}`,
    "data-id": msgKey(m) || undefined, "data-target": chat.person ? m.target : undefined, "data-cmid": m.client_msg_id || undefined,
    "data-at": pending ? undefined : String(when(m)),
  });
  item.append(
    el("span", { class: "from", text: mine ? "You" : (chat.name || m.sender) }),
    el("p", { class: "body", text: m.body }),
    el("span", { class: "meta", text: pending ? (m.failed ? `not sent: ${m.failed}` : "waiting to send…") : clock(m.sent_at) + on }),
  );
  return item;
}

function inChat(m) {
  if (chat?.person) return chat.accounts.has(`${m.target}/${m.sender}`) || chat.accounts.has(`${m.target}/${m.recipient}`);
  return chat && m.target === chat.target && (m.sender === chat.user || m.recipient === chat.user);
}

function place(m, { older = false } = {}) { // true when it was added
  const list = $("messages");
  const waiting = m.client_msg_id ? list.querySelector(`.pending[data-cmid="${CSS.escape(m.client_msg_id)}"]`) : null;
  const key = msgKey(m);
  if (key && chat.ids.has(key)) { waiting?.remove(); return false; }
  const at = when(m);
  if (!waiting && !older && chat.nextBefore && chat.oldest !== null && at < chat.oldest) return false;
  waiting?.remove();
  if (key) chat.ids.add(key);
  const item = messageItem(m, false);
  const later = [...list.querySelectorAll(".msg:not(.pending)")].find((li) => Number(li.dataset.at) > at);
  list.insertBefore(item, later ?? list.querySelector(".pending"));
  if (chat.oldest === null || at < chat.oldest) chat.oldest = at;
  return true;
}

function showLive(m) {
  const list = $("messages");
  const atBottom = list.scrollHeight - list.scrollTop - list.clientHeight < 120;
  if (place(m) && (atBottom || m.sender !== chat.user)) list.scrollTop = list.scrollHeight;
}

function showOutbox() {
  const list = $("messages");
  for (const item of readOutbox()) {
    if (!chat || (chat.person ? item.person !== chat.person : (item.person || item.target !== chat.target || item.to !== chat.user))) continue;
    if (list.querySelector(`[data-cmid="${CSS.escape(item.id)}"]`)) continue;
    list.append(messageItem({ sender: "", recipient: item.to, body: item.body, client_msg_id: item.id, own: true }, true));
  }
  list.scrollTop = list.scrollHeight;
}

async function loadHistory(before) {
  if (!chat || chat.loading) return;
  const current = chat;
  current.loading = true;
  const params = new URLSearchParams({ limit: String(PAGE + 1) });
  if (before) params.set("before", before);
  let res;
  if (current.person) params.set("limit", "100"); // one merged page: no scroll-back
  try {
    res = await api("GET", current.person
      ? `/people/${enc(current.person)}/history?${params}`
      : `/history/${enc(current.target)}/${enc(current.user)}?${params}`);
  } catch {
    current.loading = false;
    return;
  }
  current.loading = false;
  if (chat !== current) return;
  if (!res.ok) {
    notice(res.data?.message ?? "could not load the conversation", "error");
    if (!before && !current.loaded) { // show what comes live meanwhile; load it again later
      current.loaded = current.partial = true;
      for (const m of current.early.splice(0)) place(m);
    }
    return;
  }
  const found = res.data.messages;
  const page = current.person ? found : found.slice(-PAGE);
  const next = !current.person && found.length > PAGE && page.length ? page[0].id : null;
  for (const [t, p] of Object.entries(res.data.problems ?? {})) notice(`${t}: ${p.message}`, "error");
  const list = $("messages");
  if (before) {
    const height = list.scrollHeight;
    current.nextBefore = next;
    for (const m of page) place(m, { older: true });
    list.scrollTop += list.scrollHeight - height; // keep what the user was reading in place
  } else {
    if (!current.loaded || current.partial) current.nextBefore = next;
    current.loaded = true;
    current.partial = false;
    for (const m of page) place(m, { older: true });
    for (const m of current.early.splice(0)) place(m); // what came live while this loaded
    $("older").hidden = !current.nextBefore; // before scrolling: it takes room from the list
    list.scrollTop = list.scrollHeight;
  }
  $("older").hidden = !current.nextBefore;
}

function openChat(target, user, name) {
  chat = {
    target, user, name: name || user, nextBefore: null, oldest: null, ids: new Set(),
    loaded: false, partial: false, early: [], loading: false,
  };
  unread.delete(`${target}/${user}`);
  $("via-row").hidden = true;
  showChat(`Chat with ${chat.name} (@${user}) on ${target}`);
}

// A merged person: one conversation across their accounts (GET /people/{id}/history); a
// message goes where they were last active (POST /people/{id}/messages), or on the target
// chosen under "Send on".
function openPersonChat(person, name, accounts) {
  chat = {
    person, name, target: null, user: null, accounts: new Set(accounts.map((a) => `${a.target}/${a.user}`)),
    nextBefore: null, oldest: null, ids: new Set(), loaded: false, partial: false, early: [], loading: false,
  };
  for (const a of accounts) unread.delete(`${a.target}/${a.user}`);
  const via = $("send-via");
  via.replaceChildren(el("option", { value: "", text: "where they were last active" }),
    ...accounts.map((a) => el("option", { value: a.target, text: `${a.target} (@${a.user})` })));
  $("via-row").hidden = false;
  showChat(`Chat with ${name} (${accounts.map((a) => `${a.target}: @${a.user}`).join(", ")})`);
}

function showChat(heading) {
  decorateBuddies();
  $("chat-empty").hidden = true;
  $("chat-body").hidden = false;
  $("chat-h").textContent = heading;
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
  if (event.target.scrollTop === 0 && chat?.loaded && chat.nextBefore) loadHistory(chat.nextBefore);
});

function onMessage(m) {
  if (inChat(m)) {
    if (chat.loaded) showLive(m);
    else chat.early.push(m);
    return;
  }
  if (m.own) return;
  const key = `${m.target}/${m.sender}`;
  unread.set(key, (unread.get(key) ?? 0) + 1);
  decorateBuddies();
  notice(`${m.sender} on ${m.target}: ${m.body.slice(0, 80)}`);
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

// kept for later: the target cannot take it now (5xx), needs a sign-in first (409), or the
// session was lost (401/403); anything else is the message's own fault and is not retried
const KEEP = (status) => status >= 500 || status === 409 || status === 401 || status === 403;

async function flush() {
  if (flushing) return;
  flushing = true;
  const blocked = new Set(); // targets that cannot take messages right now
  try {
    for (const item of readOutbox()) {
      const lane = item.person ? `person:${item.person}` : item.target;
      if (blocked.has(lane)) continue;
      let res;
      try {
        res = item.person
          ? await api("POST", `/people/${enc(item.person)}/messages`, { body: item.body, target: item.target || undefined, client_msg_id: item.id })
          : await api("POST", "/messages", { target: item.target, to: item.to, body: item.body, client_msg_id: item.id });
      } catch {
        flushLater(); // the UI server is out of reach: keep everything
        return;
      }
      if (res.ok) {
        dropFromOutbox(item.id);
        if (inChat(res.data)) showLive(res.data); // in its place, whatever else is loaded
      } else if (KEEP(res.status)) {
        blocked.add(lane);
        flushLater();
      } else {
        dropFromOutbox(item.id);
        const waiting = document.querySelector(`[data-cmid="${CSS.escape(item.id)}"] .meta`);
        const why = res.data?.message ?? `error ${res.status}`;
        if (waiting) waiting.textContent = `not sent: ${why}`;
        notice(item.person ? `not sent to ${item.name ?? item.person}: ${why}` : `not sent to ${item.to} on ${item.target}: ${why}`, "error");
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
  const item = chat.person
    ? { id: newId(), person: chat.person, name: chat.name, target: $("send-via").value || null, body, at: Date.now() }
    : { id: newId(), target: chat.target, to: chat.user, body, at: Date.now() };
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

// --- the agent's events -----------------------------------------------------------------------------

let delay = 500;
let lastSeq = null; // the newest event handled: a reconnect resumes after it

function setLive(state, text) {
  const live = $("live");
  if (!live) return;
  live.dataset.state = state;
  live.textContent = text;
}

function resync() { // the agent's log no longer reaches back far enough: reload what is shown
  syncPrompts();
  refresh("targets");
  refresh("buddies");
  refresh("invites");
  if (chat) loadHistory(null);
}

function handle(ev) {
  if (ev.type === "cursor_reset") {
    if (ev.target === "*") resync();
    else notice(`${ev.target} no longer knew where this app left off (its data may have been reset): events in between may be missing`, "error");
    if (typeof ev.seq === "number") lastSeq = ev.seq;
    return;
  }
  if (typeof ev.seq === "number") {
    if (lastSeq !== null && ev.seq <= lastSeq) return; // seen already
    lastSeq = ev.seq;
  }
  switch (ev.type) {
    case "message": onMessage(ev.message); break;
    case "presence": if (!ev.own) onPresence(ev); break;
    case "came_online": onCameOnline(ev); break;
    case "contact_request":
      notice(`${ev.username} asks to be your buddy on ${ev.target} (interapp contacts accept ${ev.target} ${ev.username})`);
      break;
    case "contact_added": case "contact_removed": case "people_changed": refresh("buddies"); break;
    case "activity": if (!ev.own) refresh("buddies"); break;
    case "invite":
      refresh("invites");
      if (!ev.invite?.outgoing) notice(`${ev.invite?.from} invites you on ${ev.target}`, "ok");
      break;
    case "invite_answer": onInviteAnswer(ev.invite ?? {}); break;
    case "link_needs_reauth": notice(`${ev.target}: ${ev.reason}`, "error"); refresh("targets"); refresh("buddies"); break;
    case "target_connected":
      if (chat?.loaded && (chat.person ? [...chat.accounts].some((k) => k.startsWith(`${ev.target}/`))
        : chat.target === ev.target)) loadHistory(null); // what it missed
      refresh("targets"); refresh("buddies");
      break;
    case "target_degraded": refresh("targets"); refresh("buddies"); break;
    case "prompt": addPrompt(ev.prompt); refresh("targets"); break;
    case "prompt_closed": closePrompt(ev.id); refresh("targets"); break;
    case "events_dropped": resync(); break;
    default: break;
  }
}

function connectLive() {
  const since = lastSeq === null ? "" : `?since=${lastSeq}`;
  const ws = new WebSocket(`${location.protocol === "https:" ? "wss" : "ws"}://${location.host}${API}/events${since}`);
  ws.addEventListener("open", () => {
    delay = 500;
    setLive("up", "Live");
    syncPrompts();
    refresh("targets");
    refresh("buddies");
    refresh("invites");
    if (chat?.loaded) loadHistory(null); // catch up on what arrived while the link was down
    flush();
  });
  ws.addEventListener("message", (event) => handle(JSON.parse(event.data)));
  ws.addEventListener("close", () => {
    setLive("down", "Reconnecting…");
    setTimeout(connectLive, delay);
    delay = Math.min(delay * 2, 10000);
  });
}

async function start() {
  if (!$("live")) return; // not signed in: nothing live on this page
  const state = await syncPrompts();
  if (state) lastSeq = state.agent.last_seq; // the page shows everything up to here
  connectLive();
  flushLater();
  setInterval(checkTargets, PAGE_CHECK_MS);
  setInterval(() => { // "12 min" grows; invites expire
    if (document.querySelector(".buddy .activity")) refresh("buddies");
    if (document.querySelector(".invite-card")) refresh("invites");
  }, 60000);
}

start();
