// The JavaScript client against a real `interapp agent` and real interapp servers.
//
// Run by tests/agent/test_js_client.py (so by `make test`), which starts arena and chatter,
// configures the host with chatter *not* linked, starts `interapp agent --port 0`, makes a
// token, and passes: AGENT_URL, AGENT_TOKEN, CHATTER_URL, BOB_TOKEN (bob at chatter, who
// talks to chatter directly over HTTP) and ALICE_PASSWORD (alice's chatter password).
import { test } from "node:test";
import assert from "node:assert/strict";

import { Agent, AgentError } from "../index.js";

const env = process.env;
for (const name of ["AGENT_URL", "AGENT_TOKEN", "CHATTER_URL", "BOB_TOKEN", "ALICE_PASSWORD"]) {
  assert.ok(env[name], `${name} must be set (run through tests/agent/test_js_client.py)`);
}

async function bob(method, path, body) {
  const res = await fetch(env.CHATTER_URL + path, {
    method,
    headers: { Authorization: `Bearer ${env.BOB_TOKEN}`, "Content-Type": "application/json" },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  assert.ok(res.ok, `bob ${method} ${path}: ${res.status}`);
  return res.json();
}

// the stream's next() by hand: `break` out of `for await` would close it (as it should)
async function until(stream, match, ms = 20000) {
  const deadline = Date.now() + ms;
  while (Date.now() < deadline) {
    let timer;
    const late = new Promise((resolve) => { timer = setTimeout(() => resolve(null), deadline - Date.now()); });
    const next = await Promise.race([stream.next(), late]);
    clearTimeout(timer);
    if (!next || next.done) break;
    if (match(next.value)) return next.value;
  }
  throw new Error("no such event in time");
}

const agent = await Agent.connect({ url: env.AGENT_URL, token: env.AGENT_TOKEN });
const start = await agent.state();
const stream = agent.events({ since: start.agent.last_seq });

test("a wrong token is refused with the agent's error", async () => {
  const wrong = new Agent(env.AGENT_URL, "iat_not-a-token");
  await assert.rejects(wrong.state(), (err) => err instanceof AgentError && err.status === 401
    && err.code === "unauthorized");
});

test("state names the signed-in user and the unlinked target", () => {
  assert.equal(start.user, "alice");
  const chatter = start.targets.find((t) => t.name === "chatter");
  assert.equal(chatter.link_state, null);
  assert.notEqual(chatter.state, "connected");
});

test("links chatter through the prompt, answered by a callback", async () => {
  const seen = [];
  const connected = await agent.connectTarget("chatter", {
    onPrompt: (prompt) => {
      seen.push(prompt);
      const password = prompt.attempt === 1 ? "not-the-password" : env.ALICE_PASSWORD;
      return { username: "alice", password };
    },
  });
  assert.deepEqual(seen.map((p) => [p.target, p.attempt, p.max_attempts]),
    [["chatter", 1, 3], ["chatter", 2, 3]]);
  assert.deepEqual(seen[0].fields.map((f) => [f.name, f.secret]),
    [["username", false], ["password", true]]);
  assert.match(seen[1].reason, /invalid username or password/);
  assert.equal(connected.branch, "prompt");
  assert.equal(connected.account, "alice");
  const row = (await agent.state()).targets.find((t) => t.name === "chatter");
  assert.equal(row.link_state, "linked");
});

test("sees a buddy come online", async () => {
  await bob("PUT", "/v1/presence", { state: "offline", status_text: "" });
  await bob("PUT", "/v1/presence", { state: "online", status_text: "in the lobby" });
  const event = await until(stream, (e) => e.type === "came_online" && e.username === "bob");
  assert.equal(event.target, "chatter");
  assert.equal(event.status_text, "in the lobby");
  const buddies = await agent.buddies();
  const found = buddies.find((b) => b.username === "bob");
  assert.equal(found.presence, "online");
});

test("chats: send, bob answers live, history has both", async () => {
  const sent = await agent.send("chatter", "bob", "hi bob, game tonight?", { clientMsgId: "js-1" });
  const again = await agent.send("chatter", "bob", "hi bob, game tonight?", { clientMsgId: "js-1" });
  assert.equal(again.id, sent.id); // sent once, however often retried
  const theirs = await bob("GET", "/v1/conversations/alice/messages");
  assert.equal(theirs.messages.filter((m) => m.body === "hi bob, game tonight?").length, 1);
  await bob("POST", "/v1/messages", { to: "alice", body: "sure, 9pm!", client_msg_id: "bob-js-1" });
  const event = await until(stream, (e) => e.type === "message" && !e.message.own);
  assert.equal(event.message.body, "sure, 9pm!");
  const history = await agent.history("chatter", "bob", { limit: 2 });
  assert.deepEqual(history.map((m) => m.body), ["hi bob, game tonight?", "sure, 9pm!"]);
});

test("presence set through the agent reaches bob", async () => {
  const result = await agent.setPresence("busy", "in a match");
  assert.deepEqual(result.targets, ["chatter"]);
  const contacts = await bob("GET", "/v1/contacts");
  const alice = contacts.contacts.find((c) => c.username === "alice");
  assert.deepEqual([alice.presence, alice.status_text], ["busy", "in a match"]);
});

test("the event stream resumes by itself after a dropped connection", async () => {
  const before = stream.since;
  stream.socket.close(); // the connection drops (as when the agent restarts)
  await bob("POST", "/v1/messages", { to: "alice", body: "while you were away", client_msg_id: "bob-js-2" });
  const event = await until(stream, (e) => e.type === "message" && e.message.body === "while you were away");
  assert.ok(event.seq > before);
  stream.close();
});
