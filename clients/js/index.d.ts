// Types of interapp-agent (the shapes of /agent/v1; the OpenAPI document is the reference).

export type PresenceState = "online" | "away" | "busy" | "offline";

export interface TargetRow {
  name: string;
  plugin: string;
  server: string;
  account_system: "shared" | "separate";
  state: "idle" | "connecting" | "connected" | "degraded" | "needs_reauth" | "failed";
  link_state: string | null;
  remote_account: string | null;
  account: string | null;
  branch: string | null;
  problem: string;
  problem_code: string;
  prompt: string | null;
}

export interface PromptField {
  name: string;
  label: string;
  secret: boolean;
  value: string;
}

export interface Prompt {
  id: string;
  target: string;
  fields: PromptField[];
  reason: string;
  reason_code: "no_link" | "reauth" | "retry";
  cause: string;
  attempt: number;
  max_attempts: number;
  expected_account: string | null;
}

export interface State {
  agent: { version: string; pid: number; started_at: string; last_seq: number };
  local: { server: string; issuer: string; client_id: string; username: string | null } | null;
  user: string | null;
  presence: { state: PresenceState; status_text: string; held: boolean };
  targets: TargetRow[];
  prompts: Prompt[];
}

export interface Connected {
  target: string;
  branch: "same-account-system" | "stored-link" | "prompt" | "reauth";
  account: string;
  account_id: string;
  display_name: string;
  link: Record<string, unknown> | null;
  explain: string;
}

export interface Buddy {
  target: string;
  id: string;
  username: string;
  display_name: string;
  presence: PresenceState;
  status_text: string;
  groups: string[];
  subscription: string;
}

export interface Message {
  target: string;
  id: string;
  sender: string;
  recipient: string;
  body: string;
  sent_at: string;
  client_msg_id: string | null;
  own: boolean;
}

export interface PresenceResult {
  state: PresenceState;
  status_text: string;
  targets: string[];
  errors: Record<string, string>;
}

/** One event of the stream: `seq` grows across the agent's life (and restarts). */
export type AgentEvent = { seq: number; type: string; target: string; at?: string } & (
  | { type: "message"; message: Message }
  | { type: "presence"; username: string; state: PresenceState; status_text: string; previous: PresenceState; own: boolean }
  | { type: "came_online"; username: string; state: PresenceState; status_text: string }
  | { type: "contact_request" | "contact_added" | "contact_removed"; username: string }
  | { type: "prompt"; prompt: Prompt }
  | { type: "prompt_closed"; id: string; outcome: string }
  | { type: "cursor_reset"; message: string }
  | { type: "target_connected"; branch: string; account: string }
  | { type: "target_degraded"; reason: string; retry_in: number }
  | { type: "link_needs_reauth"; account: string | null; reason: string; code: string }
  | { type: string; [key: string]: unknown }
);

export class AgentError extends Error {
  code: string;
  status: number;
  target: string | null;
  constructor(code: string, message: string, status: number, target?: string | null);
}

export type PromptAnswer = Record<string, string> | null;

export class EventStream implements AsyncIterableIterator<AgentEvent> {
  since: number | undefined;
  next(): Promise<IteratorResult<AgentEvent>>;
  return(): Promise<IteratorResult<AgentEvent>>;
  close(): void;
  [Symbol.asyncIterator](): EventStream;
}

export class Agent {
  constructor(url: string, token: string);
  readonly url: string;
  static connect(options: { url: string; token: string }): Promise<Agent>;
  state(): Promise<State>;
  connectTarget(name: string, options?: {
    onPrompt?: (prompt: Prompt) => PromptAnswer | Promise<PromptAnswer>;
    account?: string;
    reconnect?: boolean;
  }): Promise<Connected>;
  buddies(target?: string): Promise<Buddy[]>;
  addBuddy(target: string, user: string): Promise<unknown>;
  acceptBuddy(target: string, user: string): Promise<unknown>;
  removeBuddy(target: string, user: string): Promise<unknown>;
  send(target: string, to: string, body: string, options?: { clientMsgId?: string }): Promise<Message>;
  history(target: string, user: string, options?: { limit?: number; before?: string }): Promise<Message[]>;
  setPresence(state: PresenceState, statusText?: string): Promise<PresenceResult>;
  answerPrompt(id: string, answers: PromptAnswer): Promise<unknown>;
  events(options?: { since?: number }): EventStream;
}
