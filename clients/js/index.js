// interapp-agent: a small client for the local API of `interapp agent` (docs/agent.md).
//
// One class, Agent: state, connecting a target (the prompt answered by your callback), buddies,
// messages, history, presence, and the events as an async iterator that resumes by itself
// (from the last `seq` it handed you) when the connection drops or the agent restarts.
// Node >= 20: fetch is built in; the WebSocket is Node's own where it has one (the token then
// travels as a subprotocol, since the standard API cannot set headers), else the `ws` package.

/** @typedef {import("./index.d.ts").State} State */
/** @typedef {import("./index.d.ts").Prompt} Prompt */
/** @typedef {import("./index.d.ts").AgentEvent} AgentEvent */

const PREFIX = "/agent/v1";
const SUBPROTOCOL = "interapp.agent.v1";

/** An error the agent answered with: `code` (stable) and `message` (one line). */
export class AgentError extends Error {
  /**
   * @param {string} code
   * @param {string} message
   * @param {number} status
   * @param {string | null} [target]
   */
  constructor(code, message, status, target = null) {
    super(message);
    this.name = "AgentError";
    this.code = code;
    this.status = status;
    this.target = target;
  }
}

async function openSocket(url, token) {
  if (typeof globalThis.WebSocket === "function") {
    return new globalThis.WebSocket(url, [SUBPROTOCOL, `bearer.${token}`]);
  }
  const { default: WebSocket } = await import("ws");
  return new WebSocket(url, [SUBPROTOCOL], { headers: { Authorization: `Bearer ${token}` } });
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

export class Agent {
  /**
   * @param {string} url the agent's address, e.g. http://127.0.0.1:8471 (`interapp agent --port`)
   * @param {string} token a token from `interapp agent token create NAME`
   */
  constructor(url, token) {
    this.url = url.replace(/\/+$/, "");
    this.token = token;
  }

  /**
   * Check the address and the token (one `state` call) and return a ready client.
   * @param {{url: string, token: string}} options
   * @returns {Promise<Agent>}
   */
  static async connect({ url, token }) {
    const agent = new Agent(url, token);
    await agent.state();
    return agent;
  }

  /** @private */
  async call(method, path, body) {
    const res = await fetch(this.url + PREFIX + path, {
      method,
      headers: {
        Authorization: `Bearer ${this.token}`,
        ...(body === undefined ? {} : { "Content-Type": "application/json" }),
      },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const text = await res.text();
    const data = text ? JSON.parse(text) : null;
    if (!res.ok) {
      throw new AgentError(data?.error ?? "http_error", data?.message ?? `HTTP ${res.status}`,
        res.status, data?.target ?? null);
    }
    return data;
  }

  /** The agent, the local application, who is signed in, the targets and open prompts.
   * @returns {Promise<State>} */
  state() {
    return this.call("GET", "/state");
  }

  /**
   * Connect a target (claim 1). When the target needs the user's account there, `onPrompt`
   * is called with the prompt (fields, reason, attempt of max_attempts) and returns the
   * answers — `{field: value}` — or null to decline. Resolves with the connection.
   * @param {string} name
   * @param {{onPrompt?: (prompt: Prompt) => Promise<Record<string,string>|null> | Record<string,string> | null, account?: string, reconnect?: boolean}} [options]
   */
  async connectTarget(name, { onPrompt, account, reconnect = false } = {}) {
    let out = await this.call("POST", `/targets/${encodeURIComponent(name)}/connect`,
      { account: account ?? null, reconnect });
    while (out.prompt) {
      const prompt = out.prompt;
      const answers = onPrompt ? await onPrompt(prompt) : null;
      const body = answers ? { answers } : { decline: true };
      out = await this.call("POST", `/prompts/${encodeURIComponent(prompt.id)}`, body);
      if (out.declined) throw new AgentError("prompt_declined", `${name}: the prompt was declined`, 409, name);
    }
    if (out.pending) throw new AgentError("pending", out.pending.message, 202, name);
    return out.connected;
  }

  /** The buddy list of one target, or across the connected ones. */
  async buddies(target) {
    const query = target ? `?target=${encodeURIComponent(target)}` : "";
    return (await this.call("GET", `/buddies${query}`)).buddies;
  }

  /** Ask `user` on `target` to become a buddy. */
  addBuddy(target, user) {
    return this.call("POST", "/buddies", { target, user });
  }

  /** Accept `user`'s buddy request on `target`. */
  acceptBuddy(target, user) {
    return this.call("POST", "/buddies/accept", { target, user });
  }

  /** Remove `user` from the buddies on `target`. */
  removeBuddy(target, user) {
    return this.call("DELETE", `/buddies/${encodeURIComponent(target)}/${encodeURIComponent(user)}`);
  }

  /**
   * Send `body` to `to` on `target`; the same `clientMsgId` is delivered once however often
   * you retry (one is made up when you give none).
   */
  send(target, to, body, { clientMsgId } = {}) {
    return this.call("POST", "/messages", {
      target, to, body, client_msg_id: clientMsgId ?? globalThis.crypto.randomUUID(),
    });
  }

  /** The conversation with `user` on `target`, newest last. */
  async history(target, user, { limit = 50, before } = {}) {
    const query = new URLSearchParams({ limit: String(limit) });
    if (before) query.set("before", before);
    const path = `/history/${encodeURIComponent(target)}/${encodeURIComponent(user)}?${query}`;
    return (await this.call("GET", path)).messages;
  }

  /** Set presence (online, away, busy, offline) everywhere; the agent holds it. */
  setPresence(state, statusText = "") {
    return this.call("PUT", "/presence", { state, status_text: statusText });
  }

  /** Answer (or, with null, decline) a prompt that arrived as an event. */
  answerPrompt(id, answers) {
    return this.call("POST", `/prompts/${encodeURIComponent(id)}`,
      answers ? { answers } : { decline: true });
  }

  /**
   * The agent's events, as an async iterator: `for await (const event of agent.events())`.
   * Starts after `since` (a seq you saw last; default: from now) and, when the connection
   * drops, connects again from the last seq it gave you, so nothing is lost or repeated.
   * @param {{since?: number}} [options]
   * @returns {EventStream}
   */
  events({ since } = {}) {
    return new EventStream(this, since);
  }
}

/** The event stream of {@link Agent#events} (an async iterable; `close()` to leave). */
export class EventStream {
  constructor(agent, since) {
    this.agent = agent;
    /** The seq of the last event handed out. */
    this.since = since;
    this.socket = null;
    this.closed = false;
    this.queue = [];
    this.wake = null;
  }

  async open() {
    const base = this.agent.url.replace(/^http/, "ws");
    const query = this.since === undefined ? "" : `?since=${this.since}`;
    const socket = await openSocket(`${base}${PREFIX}/events${query}`, this.agent.token);
    this.socket = socket;
    const poke = () => { const w = this.wake; this.wake = null; w?.(); };
    socket.onmessage = (msg) => {
      const text = typeof msg.data === "string" ? msg.data : msg.data.toString();
      this.queue.push(JSON.parse(text));
      poke();
    };
    socket.onclose = () => { if (this.socket === socket) this.socket = null; poke(); };
    socket.onerror = () => {};
  }

  async next() {
    let delay = 200;
    while (!this.closed) {
      while (this.queue.length) {
        const event = this.queue.shift();
        if (this.since !== undefined && event.seq <= this.since) continue; // already seen
        this.since = event.seq;
        return { value: event, done: false };
      }
      if (!this.socket) {
        try {
          await this.open();
          delay = 200;
        } catch {
          await sleep(delay);
          delay = Math.min(delay * 2, 5000);
          continue;
        }
      }
      await new Promise((resolve) => { this.wake = resolve; });
    }
    return { value: undefined, done: true };
  }

  /** Leave the stream. */
  async return() {
    this.close();
    return { value: undefined, done: true };
  }

  close() {
    this.closed = true;
    this.socket?.close();
    const w = this.wake; this.wake = null; w?.();
  }

  [Symbol.asyncIterator]() {
    return this;
  }
}
