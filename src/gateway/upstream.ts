/**
 * One upstream MCP server: how to reach it, its connection's life (lazy start, idle stop, restart with
 * backoff after a crash), its cached lists, and the routing of what it asks back (sampling, elicitation,
 * roots, logging) to the client session whose call it is serving.
 *
 * An upstream connection is shared by every client session. A server→client request carries no link to
 * the call it belongs to on stdio, so it is routed only when every call in flight on this upstream comes
 * from one session; otherwise it is refused (fail closed) rather than guessed.
 */
import { lookup } from 'node:dns/promises';
import ipaddr from 'ipaddr.js';
import {
  Client,
  ProtocolError,
  SdkError,
  SdkErrorCode,
  SdkHttpError,
  type Prompt,
  type Resource,
  type ResourceTemplateType,
  type RequestOptions,
  type Result,
  type Tool,
  type Transport,
} from '@modelcontextprotocol/client';
import type { UpstreamSettings } from '../config/schema.js';
import { gatewayDefaults } from '../config/schema.js';
import { ChildProcessTransport, type ChildCommand, type UpstreamProcess } from './child-transport.js';
import { upstreamDialer } from './dial.js';
import { HttpUpstreamTransport, SseUpstreamTransport } from './http-upstream.js';
import { createdTaskId, isTaskAugmented, newTaskId, RELAYED_RESULT, relatedTaskId, renameTask, taskNotFound } from './tasks.js';
import { verifyUpstream } from './verify.js';

export type UpstreamState = 'idle' | 'starting' | 'ready' | 'crashed' | 'refused' | 'stopped';

/** The client session a call came from, with the way back to it. */
export interface CallBinding {
  session: string;
  /** Sends a request to the client, related to the call being served. */
  send(request: { method: string; params?: Record<string, unknown> }): Promise<Result>;
  /** Sends a notification to the client, related to the call being served. */
  notify(notification: { method: string; params?: Record<string, unknown> }): Promise<void>;
  /**
   * The way to the same session once the call has ended, screened and recorded like the call: for what
   * outlives it, the polls of a task the client runs for the upstream.
   */
  afterCall?(): CallBinding;
  /**
   * Set on a 2026-07-28 request, which cannot send requests to the client: what the client answered to an
   * earlier `input_required` result (its `inputResponses` and the echoed `requestState`).
   */
  multiRound?: { response(key: string): unknown; requestState: string | undefined; capabilities: Record<string, unknown> | undefined };
}

export interface UpstreamEvents {
  /** The upstream said one of its lists changed (`tools`, `prompts`, `resources`). */
  listChanged(upstream: Upstream, kind: 'tools' | 'prompts' | 'resources'): void;
  /** Something notable happened: a crash, a refused relay, garbage on stdout. */
  event(upstream: Upstream, kind: string, message: string): void;
  /** The upstream says a subscribed resource changed. */
  resourceUpdated?(upstream: Upstream, uri: string): void;
  /**
   * A notification about one of this upstream's tasks after it was created: its status, its progress, a log
   * message naming it. Returns false when the task takes no more (it ended, or its session did).
   */
  taskNotification?(upstream: Upstream, upstreamId: string, notification: { method: string; params: Record<string, unknown> }): boolean;
  /** The gateway's id and owning session of a task this upstream runs, by the upstream's id. */
  task?(upstream: Upstream, upstreamId: string): { id: string; session: string } | undefined;
}

export interface UpstreamStatus {
  name: string;
  kind: 'stdio' | 'http' | 'sse';
  state: UpstreamState;
  pid?: number;
  tools?: number;
  restarts: number;
  lastError?: string;
  garbageLines: number;
  inFlight: number;
  protocol?: string;
}

export interface Timeouts {
  callMs: number;
  maxCallMs: number;
  connectMs: number;
  idleMs: number;
  /** How long a call waits for a 2026-07-28 client to answer the upstream's questions (see input-relay.ts). */
  inputMs: number;
}

const MAX_BACKOFF_MS = 30_000;
/** Client-side tasks remembered per connection; an upstream that never fetches its results cannot grow it further. */
const MAX_CLIENT_TASKS = 1000;
/** Progress routes of task-augmented calls kept per connection, for the same reason. */
const MAX_TASK_PROGRESS = 1000;
/** Starts the progress tokens the gateway gives task-augmented calls; the SDK's own tokens are numbers. */
const TASK_PROGRESS_PREFIX = 'gatehouse-task-';
const PROGRESS_SETTLE_MS = 3;
/** A connection that stayed up this long resets the crash backoff. */
const STABLE_MS = 30_000;
/** Events an upstream causes as often as it likes (garbage, refused relays) recorded one by one, per kind and window. */
const FLOOD_RECORDS = 10;
const FLOOD_WINDOW_MS = 60_000;

export class Upstream {
  state: UpstreamState = 'idle';
  restarts = 0;
  lastError: string | undefined;
  garbageLines = 0;

  private client: Client | undefined;
  private transport: Transport | undefined;
  private connecting: Promise<Client> | undefined;
  private consecutiveFailures = 0;
  private nextAttemptAt = 0;
  private connectedAt = 0;
  private idleTimer: NodeJS.Timeout | undefined;
  private readonly inFlight = new Set<CallBinding>();
  private cache: {
    tools?: Promise<Tool[]>;
    prompts?: Promise<Prompt[]>;
    resources?: Promise<Resource[]>;
    templates?: Promise<ResourceTemplateType[]>;
  } = {};
  private toolCount: number | undefined;
  /** Tasks a client runs for this upstream (client-side tasks): our id → the client's session and id, and the call that created it. */
  private readonly clientTasks = new Map<string, { session: string; taskId: string; call: CallBinding }>();
  /**
   * Progress of task-augmented calls, by the token the gateway gave the upstream. The token stays valid for
   * the task's whole life (2025-11-25), so its progress outlives the call: while the call runs it goes back on
   * the call; once the upstream has answered with a task, to the gateway (`taskNotification`), as the task's.
   */
  private readonly taskProgress = new Map<string, TaskProgress>();
  /** The progress token of an upstream task, by the upstream's task id. */
  private readonly progressOfTask = new Map<string, string>();
  private progressSerial = 0;
  /** How many events of each kind were noted in the current window (see `note`). */
  private noted = { since: 0, counts: new Map<string, number>() };
  /** Why the last start was refused by verify-before-run, if it was. */
  refusal: string | undefined;

  readonly timeouts: Timeouts;
  readonly kind: 'stdio' | 'http' | 'sse';

  constructor(
    readonly name: string,
    readonly settings: UpstreamSettings,
    defaults: Partial<Timeouts>,
    private readonly events: UpstreamEvents,
    private readonly options: {
      maxMessageBytes: number;
      version: string;
      baseEnv?: Record<string, string>;
      /** Real values of this upstream's credentials, after the policy granted them; throws to refuse. */
      credentials?: (upstream: Upstream) => Promise<{ env: Record<string, string>; headers: Record<string, string> }>;
      /** Starts a stdio upstream's process (the sandbox launcher); a plain process group by default. */
      launch?: (upstream: Upstream, command: ChildCommand) => Promise<UpstreamProcess>;
    },
  ) {
    const pick = (key: keyof Timeouts): number => settings.timeouts?.[key] ?? defaults[key] ?? gatewayDefaults[key];
    this.timeouts = { callMs: pick('callMs'), maxCallMs: pick('maxCallMs'), connectMs: pick('connectMs'), idleMs: pick('idleMs'), inputMs: pick('inputMs') };
    this.kind = settings.command !== undefined ? 'stdio' : settings.transport === 'sse' ? 'sse' : 'http';
  }

  /** Another connection to the same upstream, with the same settings, for one client session. */
  sibling(owner: CallBinding): Upstream {
    const own = new Upstream(this.name, this.settings, this.timeouts, this.events, this.options);
    own.owner = owner;
    return own;
  }

  /**
   * For a connection that belongs to one client session: the way to that session outside any call (the
   * gateway hands it over screened, see connectionFor).
   */
  private owner: CallBinding | undefined;

  /** Tells the upstream something changed on the client's side (for example its roots). */
  async notify(method: string): Promise<void> {
    await this.client?.notification({ method } as never).catch(() => undefined);
  }

  status(): UpstreamStatus {
    const pid = this.transport instanceof ChildProcessTransport ? this.transport.pid : undefined;
    return {
      name: this.name,
      kind: this.kind,
      state: this.state,
      ...(pid !== undefined && this.state === 'ready' ? { pid } : {}),
      ...(this.toolCount !== undefined ? { tools: this.toolCount } : {}),
      restarts: this.restarts,
      ...(this.lastError !== undefined ? { lastError: this.lastError } : {}),
      garbageLines: this.garbageLines,
      inFlight: this.inFlight.size,
      ...(this.client?.getNegotiatedProtocolVersion() ? { protocol: this.client.getNegotiatedProtocolVersion()! } : {}),
    };
  }

  /** The server's instructions, once connected. */
  instructions(): string | undefined {
    return this.client?.getInstructions();
  }

  /** The live connection, starting the upstream if needed. */
  connection(): Promise<Client> {
    if (this.client && this.state === 'ready') return Promise.resolve(this.client);
    this.connecting ??= this.connect().finally(() => {
      this.connecting = undefined;
    });
    return this.connecting;
  }

  private async connect(): Promise<Client> {
    // Verify before running, on every start: an artifact swapped between restarts is caught too.
    this.refusal = await verifyUpstream(this.settings);
    if (this.refusal !== undefined) {
      this.state = 'refused';
      this.lastError = `not started: ${this.refusal}`;
      this.events.event(this, 'refused', `upstream "${this.name}" was not started: ${this.refusal}`);
      throw new ProtocolError(-32603, `upstream "${this.name}" was not started: ${this.refusal}`);
    }
    const wait = this.nextAttemptAt - Date.now();
    if (wait > 0) {
      if (wait > this.timeouts.connectMs) {
        throw new ProtocolError(-32603, `upstream "${this.name}" is restarting after a crash; try again in ${Math.ceil(wait / 1000)} s`);
      }
      await new Promise((resolve) => setTimeout(resolve, wait));
    }
    this.state = 'starting';
    let transport: Transport;
    try {
      transport = await this.makeTransport();
    } catch (error) {
      this.failed(error instanceof Error ? error.message : String(error));
      throw error instanceof ProtocolError ? error : new ProtocolError(-32603, `upstream "${this.name}" could not be started: ${this.lastError}`);
    }
    const client = new Client(
      { name: 'gatehouse-gateway', version: this.options.version },
      {
        capabilities: {
          sampling: {},
          elicitation: { form: {}, url: {} },
          roots: { listChanged: true },
          // Relayed to clients that run them as tasks; a client that cannot is asked to answer at once.
          tasks: { cancel: {}, requests: { sampling: { createMessage: {} }, elicitation: { create: {} } } },
        },
        versionNegotiation: { mode: this.protocolMode() },
      },
    );
    this.installHandlers(client);
    const timer = setTimeout(() => void transport.close(), this.timeouts.connectMs);
    try {
      await client.connect(transport);
    } catch (error) {
      clearTimeout(timer);
      await transport.close().catch(() => undefined);
      this.failed(error instanceof Error ? error.message : String(error));
      throw new ProtocolError(-32603, `upstream "${this.name}" could not be started: ${this.lastError}`);
    } finally {
      clearTimeout(timer);
    }
    this.interceptInbound(transport);
    this.client = client;
    this.transport = transport;
    this.cache = {};
    this.connectedAt = Date.now();
    this.state = 'ready';
    client.onclose = () => this.closed(client);
    this.touch();
    return client;
  }

  private protocolMode(): 'auto' | 'legacy' | { pin: string } {
    const protocol = this.settings.protocol ?? (this.kind === 'stdio' ? 'legacy' : 'auto');
    return protocol === '2026-07-28' ? { pin: protocol } : protocol;
  }

  /** The protocol version agreed with the upstream, once connected. */
  protocolVersion(): string | undefined {
    return this.client?.getNegotiatedProtocolVersion();
  }

  private async makeTransport(): Promise<Transport> {
    const settings = this.settings;
    const injected = this.options.credentials ? await this.options.credentials(this) : { env: {}, headers: {} };
    if (settings.command !== undefined) {
      const transport = new ChildProcessTransport(
        {
          command: settings.command,
          args: settings.args,
          // Only what the declaration names reaches the server: no ambient secrets from the gateway's env.
          env: { ...(this.options.baseEnv ?? minimalEnv()), ...settings.env, ...injected.env },
          ...(settings.cwd !== undefined ? { cwd: settings.cwd } : {}),
        },
        this.options.maxMessageBytes,
        this.options.launch ? (command) => this.options.launch!(this, command) : undefined,
      );
      transport.ongarbage = (line) => {
        this.garbageLines += 1;
        this.note('garbage', `upstream "${this.name}" wrote a line that is not JSON-RPC: ${line}`);
      };
      return transport;
    }
    const url = new URL(settings.url!);
    if (!settings.allowPrivateAddress) await refusePrivate(this.name, url);
    const headers = { ...settings.headers, ...injected.headers };
    const requestInit: RequestInit = { headers };
    // Unless private addresses are allowed, every new connection re-checks what the name resolves to. Either
    // way the SDK's fetch is the dialer's too: the global fetch costs several times more per call, and leaves
    // an abort listener on the transport's long-lived signal per request until garbage collection.
    const dialer = upstreamDialer(settings.allowPrivateAddress, {
      connectMs: this.timeouts.connectMs,
      exchangeMs: this.timeouts.maxCallMs,
      maxBytes: this.options.maxMessageBytes,
    });
    if (settings.transport === 'sse') return new SseUpstreamTransport(url, { requestInit }, dialer);
    return new HttpUpstreamTransport(url, { requestInit }, dialer, headers, this.options.maxMessageBytes);
  }

  private installHandlers(client: Client): void {
    for (const method of ['sampling/createMessage', 'elicitation/create', 'roots/list'] as const) {
      client.setRequestHandler(method, async (request) => (await this.relayToClient(method, request.params as Record<string, unknown> | undefined)) as never);
    }
    // The client's side of client-side tasks: the upstream polls the task it asked the client to run.
    for (const method of ['tasks/get', 'tasks/result', 'tasks/cancel']) {
      client.setRequestHandler(method as never, (async (request: { params?: Record<string, unknown> }) => {
        const id = request.params?.taskId;
        const task = typeof id === 'string' ? this.clientTasks.get(id) : undefined;
        // Only the session that runs the task is asked about it, and only by this connection.
        const target = task && this.clientTaskRoute(task.call);
        if (!task || !target) throw taskNotFound(id);
        const result = await target.send({ method, params: { ...request.params, taskId: task.taskId } });
        if (method === 'tasks/result') this.clientTasks.delete(id as string);
        return renameTask(result, task.taskId, id as string);
      }) as never);
    }
    client.setNotificationHandler('notifications/tools/list_changed', () => this.changed('tools'));
    client.setNotificationHandler('notifications/prompts/list_changed', () => this.changed('prompts'));
    client.setNotificationHandler('notifications/resources/list_changed', () => this.changed('resources'));
    client.setNotificationHandler('notifications/message', async (notification) => {
      // Log messages may carry call data: only the one session whose calls are in flight gets them.
      await this.routeTarget()?.notify({ method: notification.method, params: notification.params as Record<string, unknown> });
    });
    client.setNotificationHandler('notifications/resources/updated', (notification) => {
      const uri = (notification.params as { uri?: unknown } | undefined)?.uri;
      if (typeof uri === 'string') this.events.resourceUpdated?.(this, uri);
    });
    client.onerror = (error) => {
      this.lastError = error.message;
    };
  }

  /**
   * Relays a request the upstream sends to the client whose call it serves. A request about one of the
   * upstream's tasks goes only to the session that owns the task, with the gateway's id for it; a request
   * the client runs as a task comes back with an id of ours, which the upstream then polls (see above).
   */
  private async relayToClient(method: string, params: Record<string, unknown> | undefined): Promise<Result> {
    const target = this.routeTarget();
    // Outside a call (servers often ask at start-up) no client's roots may be shown: the answer is none.
    if (!target && method === 'roots/list' && this.inFlight.size === 0) return { roots: [] };
    const related = relatedTaskId(params);
    const task = related === undefined ? undefined : this.events.task?.(this, related);
    if (!target || (task && task.session !== target.session)) {
      const message = `upstream "${this.name}" sent ${method} while calls from several sessions (or none) were in flight; refused because it cannot be tied to one client`;
      this.note('relay-refused', message);
      throw new ProtocolError(-32603, message);
    }
    const result = await target.send({ method, ...(params ? { params: task ? renameTask(params, related!, task.id) : params } : {}) });
    const clientTaskId = isTaskAugmented(params) ? createdTaskId(result) : undefined;
    if (clientTaskId === undefined) return result;
    const id = newTaskId();
    if (this.clientTasks.size >= MAX_CLIENT_TASKS) this.clientTasks.delete(this.clientTasks.keys().next().value!);
    this.clientTasks.set(id, { session: target.session, taskId: clientTaskId, call: target });
    return renameTask(result, clientTaskId, id);
  }

  /**
   * Takes three kinds of message off the transport before the SDK sees them. Answers to the calls a remote
   * upstream's transport sent itself go back to those calls (see HttpUpstreamTransport.request). The SDK
   * client checks that a sampling or elicitation handler returns a sampling or elicitation result, but a client
   * running the request as a task answers a CreateTaskResult: such requests are answered here. And notifications about the
   * upstream's tasks are relayed here, in the order they came: the SDK would hand them over a tick late, after
   * the progress of task-augmented calls, whose tokens it does not know (see `taskProgress`), so a task's
   * progress could overtake the status that ended it.
   */
  private interceptInbound(transport: Transport): void {
    const deliver = transport.onmessage;
    transport.onmessage = (message, extra) => {
      if (transport instanceof HttpUpstreamTransport && transport.answered(message)) return;
      const request = message as { id?: string | number; method?: string; params?: Record<string, unknown> };
      if (request.id === undefined && request.method !== undefined && this.relayTaskNotification(request.method, request.params)) return;
      const augmented = (request.method === 'sampling/createMessage' || request.method === 'elicitation/create') && request.id !== undefined && isTaskAugmented(request.params);
      if (!augmented) return deliver?.(message, extra);
      const id = request.id!;
      this.relayToClient(request.method!, request.params).then(
        (result) => transport.send({ jsonrpc: '2.0', id, result } as never),
        (error: unknown) => {
          const code = typeof (error as { code?: unknown }).code === 'number' ? (error as { code: number }).code : -32603;
          return transport.send({ jsonrpc: '2.0', id, error: { code, message: error instanceof Error ? error.message : String(error) } } as never);
        },
      ).catch(() => undefined);
    };
  }

  /**
   * Relays a notification about one of the upstream's tasks: its status, a log message naming it (only to the
   * task's session, or nowhere), or the progress of a task-augmented call. Returns false for anything else,
   * which the SDK handles.
   */
  private relayTaskNotification(method: string, params: Record<string, unknown> | undefined): boolean {
    switch (method) {
      case 'notifications/progress':
        return this.relayTaskProgress(params);
      case 'notifications/tasks/status':
        return this.relayToTask(params?.taskId, method, params);
      case 'notifications/message': {
        // A log message naming a task the gateway does not know is routed like any other.
        const related = relatedTaskId(params);
        return related !== undefined && this.events.task?.(this, related) !== undefined && this.relayToTask(related, method, params);
      }
      default:
        return false;
    }
  }

  private relayToTask(taskId: unknown, method: string, params: Record<string, unknown> | undefined): boolean {
    if (typeof taskId !== 'string') return false;
    this.events.taskNotification?.(this, taskId, { method, params: params! });
    return true;
  }

  /**
   * Relays the progress of a task-augmented call, as the call's while it runs and as its task's afterwards.
   * Returns false for a token that is not the gateway's: the SDK relays that progress. A token of ours whose
   * route is gone (its task ended, or the route was dropped) is dropped too: nothing is kept for it.
   */
  private relayTaskProgress(params: Record<string, unknown> | undefined): boolean {
    const token = params?.progressToken;
    if (typeof token !== 'string' || !token.startsWith(TASK_PROGRESS_PREFIX)) return false;
    const route = this.taskProgress.get(token);
    if (!route) return true;
    const progress = { ...params, progressToken: route.clientToken };
    if (route.call) {
      const call = route.call;
      route.idle?.refresh();
      route.relayed = route.relayed.then(() => call.notify({ method: 'notifications/progress', params: progress })).catch(() => undefined);
    } else if (!this.events.taskNotification?.(this, route.upstreamTaskId!, { method: 'notifications/progress', params: progress })) {
      this.forgetTaskProgress(route.upstreamTaskId!);
    }
    return true;
  }

  /** Stops relaying the progress of an upstream task: it ended, or nobody is left to tell. */
  forgetTaskProgress(upstreamTaskId: string): void {
    const token = this.progressOfTask.get(upstreamTaskId);
    if (token === undefined) return;
    this.progressOfTask.delete(upstreamTaskId);
    this.taskProgress.delete(token);
  }

  /**
   * The way to the client that runs a client-side task, for the task's life and whoever else is calling: the
   * call that created it while that call runs, its session outside any call once the call has ended.
   */
  private clientTaskRoute(call: CallBinding): CallBinding | undefined {
    return this.inFlight.has(call) || call === this.owner ? call : call.afterCall?.();
  }

  /** Forgets what a client session that has ended was running for this upstream. */
  forgetSession(session: string): void {
    for (const [id, task] of this.clientTasks) if (task.session === session) this.clientTasks.delete(id);
  }

  private changed(kind: 'tools' | 'prompts' | 'resources'): void {
    if (kind === 'tools') this.cache.tools = undefined;
    if (kind === 'prompts') this.cache.prompts = undefined;
    if (kind === 'resources') {
      this.cache.resources = undefined;
      this.cache.templates = undefined;
    }
    this.events.listChanged(this, kind);
  }

  /**
   * Reports an event the upstream can cause as often as it likes: the first few of each kind in a window are
   * reported one by one, then one that says the rest are not, so a server cannot flood the audit log.
   */
  private note(kind: 'garbage' | 'relay-refused', message: string): void {
    const now = Date.now();
    if (now - this.noted.since > FLOOD_WINDOW_MS) this.noted = { since: now, counts: new Map() };
    const nth = (this.noted.counts.get(kind) ?? 0) + 1;
    this.noted.counts.set(kind, nth);
    if (nth <= FLOOD_RECORDS) this.events.event(this, kind, message);
    else if (nth === FLOOD_RECORDS + 1) this.events.event(this, kind, `${message}; further ones within a minute are not recorded one by one`);
  }

  private routeTarget(): CallBinding | undefined {
    let target: CallBinding | undefined;
    for (const binding of this.inFlight) {
      if (target && target.session !== binding.session) return undefined;
      target = binding; // the most recent call of that session
    }
    // A session's own connection answers to that session outside a call too. Within one, the call's own way
    // back goes first: it is screened and recorded as the call's.
    return target ?? this.owner;
  }

  private failed(message: string): void {
    this.lastError = message;
    this.state = 'crashed';
    this.consecutiveFailures += 1;
    const backoff = Math.min(MAX_BACKOFF_MS, 250 * 2 ** (this.consecutiveFailures - 1));
    this.nextAttemptAt = Date.now() + backoff;
  }

  private closed(client: Client): void {
    if (this.client !== client) return;
    this.client = undefined;
    const transport = this.transport;
    this.transport = undefined;
    if (this.state === 'stopped' || this.state === 'idle') return;
    // An exit we did not ask for is a crash: back off before the next start.
    if (Date.now() - this.connectedAt > STABLE_MS) this.consecutiveFailures = 0;
    this.restarts += 1;
    const tail = transport instanceof ChildProcessTransport ? transport.stderrTail.at(-1) : undefined;
    this.failed(`the upstream connection closed unexpectedly${tail ? ` (last stderr: ${tail})` : ''}`);
    this.events.event(this, 'crash', `upstream "${this.name}" ${this.lastError}`);
  }

  private touch(): void {
    if (this.idleTimer) clearTimeout(this.idleTimer);
    this.idleTimer = undefined;
    if (this.timeouts.idleMs > 0 && this.inFlight.size === 0) {
      this.idleTimer = setTimeout(() => void this.stop('idle'), this.timeouts.idleMs);
      this.idleTimer.unref();
    }
  }

  /** Sends a request upstream on behalf of a call, relaying progress and cancellation. */
  async request(
    method: string,
    params: Record<string, unknown> | undefined,
    binding: CallBinding | undefined,
    options: { signal?: AbortSignal; progressToken?: string | number } = {},
  ): Promise<Result> {
    try {
      return await this.requestOnce(method, params, binding, options);
    } catch (error) {
      // A remote server that forgot our session (it restarted, or expired the session) never ran the request:
      // start a new session and send it once more.
      if (this.kind === 'stdio' || !sessionExpired(error)) throw error;
      this.events.event(this, 'reinitialise', `upstream "${this.name}" no longer knows our session; starting a new one`);
      await this.stop('idle');
      return this.requestOnce(method, params, binding, options);
    }
  }

  private async requestOnce(
    method: string,
    params: Record<string, unknown> | undefined,
    binding: CallBinding | undefined,
    options: { signal?: AbortSignal; progressToken?: string | number },
  ): Promise<Result> {
    const client = await this.connection();
    if (binding) this.inFlight.add(binding);
    if (this.idleTimer) clearTimeout(this.idleTimer);
    // Progress goes out in order, and all of it before the result.
    let relayed: Promise<void> = Promise.resolve();
    let lastProgressAt = 0;
    const progressToken = options.progressToken;
    const taskRoute = progressToken !== undefined && binding && isTaskAugmented(params) ? this.routeTaskProgress(progressToken, binding) : undefined;
    try {
      const sent = taskRoute ? { ...params, _meta: { ...(params?._meta as Record<string, unknown> | undefined), progressToken: taskRoute.token } } : params;
      const message = { method, ...(sent ? { params: sent } : {}) } as never;
      // The bulk of a remote upstream's traffic: a call with no progress to relay needs nothing of the SDK
      // client's request pipeline that the transport does not do itself (see HttpUpstreamTransport.request).
      const transport = this.transport;
      if (method === 'tools/call' && progressToken === undefined && transport instanceof HttpUpstreamTransport && transport.carries(message)) {
        return await transport.request(message, { timeoutMs: this.timeouts.callMs, ...(options.signal ? { signal: options.signal } : {}) });
      }
      const cancelled = options.signal && withoutReason(options.signal);
      const signal = taskRoute ? (cancelled ? AbortSignal.any([cancelled, taskRoute.idle]) : taskRoute.idle) : cancelled;
      const requestOptions = {
        // A task-augmented call's idle time is measured in `routeTaskProgress`.
        timeout: taskRoute ? this.timeouts.maxCallMs : this.timeouts.callMs,
        maxTotalTimeout: this.timeouts.maxCallMs,
        resetTimeoutOnProgress: true,
        ...(signal ? { signal } : {}),
        ...(progressToken !== undefined && binding && !taskRoute
          ? {
              onprogress: (progress) => {
                lastProgressAt = performance.now();
                relayed = relayed
                  .then(() => binding.notify({ method: 'notifications/progress', params: { ...progress, progressToken } }))
                  .catch(() => undefined);
              },
            }
          : {}),
      } satisfies RequestOptions;
      // Task methods have no result schema in the SDK (it offers no task runtime); the front checks their shape.
      const anyObject = method === 'tools/call' || method.startsWith('tasks/');
      const result = anyObject ? await client.request(message, RELAYED_RESULT, requestOptions) : await client.request(message, requestOptions);
      await relayed;
      if (taskRoute) {
        let sentSoFar: Promise<void>;
        do await (sentSoFar = taskRoute.route.relayed);
        while (sentSoFar !== taskRoute.route.relayed);
        // From here on its progress is the task's: no I/O comes between this and the gateway adopting the task.
        const upstreamTaskId = createdTaskId(result);
        if (upstreamTaskId !== undefined) taskRoute.adopt(upstreamTaskId);
      }
      // The SDK client dispatches notifications a tick later than responses: a progress notification
      // that shares a network read with the result would reach it after the call has ended, and be lost.
      if (lastProgressAt !== 0 && performance.now() - lastProgressAt < PROGRESS_SETTLE_MS) {
        await new Promise((resolve) => setTimeout(resolve, PROGRESS_SETTLE_MS));
      }
      return result as Result;
    } finally {
      taskRoute?.end();
      if (binding) this.inFlight.delete(binding);
      this.touch();
    }
  }

  /**
   * The route of a task-augmented call's progress, under a token of the gateway's (the SDK would forget its own
   * once the call is answered). The SDK keeps a call alive while progress comes only for progress it relays
   * itself, so this call's idle time is measured here: `callMs` without progress cancels it as the SDK would.
   */
  private routeTaskProgress(clientToken: string | number, call: CallBinding): { token: string; route: TaskProgress; idle: AbortSignal; adopt(upstreamTaskId: string): void; end(): void } {
    const token = `${TASK_PROGRESS_PREFIX}${(this.progressSerial += 1)}`;
    const timedOut = new AbortController();
    const idle = setTimeout(() => timedOut.abort(new SdkError(SdkErrorCode.RequestTimeout, 'Request timed out', { timeout: this.timeouts.callMs })), this.timeouts.callMs);
    const route: TaskProgress = { clientToken, call, relayed: Promise.resolve(), idle };
    if (this.taskProgress.size >= MAX_TASK_PROGRESS) {
      const [oldest, dropped] = this.taskProgress.entries().next().value!;
      this.taskProgress.delete(oldest);
      if (dropped.upstreamTaskId !== undefined) this.progressOfTask.delete(dropped.upstreamTaskId);
    }
    this.taskProgress.set(token, route);
    return {
      token,
      route,
      idle: timedOut.signal,
      adopt: (upstreamTaskId) => {
        if (this.taskProgress.get(token) !== route) return; // dropped to make room
        route.upstreamTaskId = upstreamTaskId;
        this.progressOfTask.set(upstreamTaskId, token);
      },
      end: () => {
        clearTimeout(idle);
        route.call = undefined;
        route.idle = undefined;
        if (route.upstreamTaskId === undefined) this.taskProgress.delete(token);
      },
    };
  }

  listTools(): Promise<Tool[]> {
    this.cache.tools ??= this.fetchList(async (client) => {
      const tools = client.getServerCapabilities()?.tools ? (await client.listTools()).tools : [];
      this.toolCount = tools.length;
      return tools;
    });
    return this.cache.tools;
  }

  listPrompts(): Promise<Prompt[]> {
    this.cache.prompts ??= this.fetchList(async (client) => (client.getServerCapabilities()?.prompts ? (await client.listPrompts()).prompts : []));
    return this.cache.prompts;
  }

  listResources(): Promise<Resource[]> {
    this.cache.resources ??= this.fetchList(async (client) =>
      client.getServerCapabilities()?.resources ? (await client.listResources()).resources : [],
    );
    return this.cache.resources;
  }

  listResourceTemplates(): Promise<ResourceTemplateType[]> {
    this.cache.templates ??= this.fetchList(async (client) =>
      client.getServerCapabilities()?.resources ? (await client.listResourceTemplates()).resourceTemplates : [],
    );
    return this.cache.templates;
  }

  private fetchList<T>(fetch: (client: Client) => Promise<T[]>): Promise<T[]> {
    const attempt = (async () => {
      const client = await this.connection();
      try {
        return await fetch(client);
      } finally {
        this.touch();
      }
    })();
    // A failed fetch is not cached: the next list tries again.
    attempt.catch(() => {
      if (this.cache.tools === (attempt as unknown)) this.cache.tools = undefined;
      if (this.cache.prompts === (attempt as unknown)) this.cache.prompts = undefined;
      if (this.cache.resources === (attempt as unknown)) this.cache.resources = undefined;
      if (this.cache.templates === (attempt as unknown)) this.cache.templates = undefined;
    });
    return attempt;
  }

  /** Stops the upstream. `idle`: it starts again on next use; `stopped`: for good. */
  async stop(reason: 'idle' | 'stopped' = 'stopped'): Promise<void> {
    if (this.idleTimer) clearTimeout(this.idleTimer);
    if (reason === 'idle' && this.inFlight.size > 0) return;
    this.state = reason;
    const client = this.client;
    this.client = undefined;
    const transport = this.transport;
    this.transport = undefined;
    this.clientTasks.clear();
    this.taskProgress.clear();
    this.progressOfTask.clear();
    await client?.close().catch(() => undefined);
    await transport?.close().catch(() => undefined);
  }
}

/** Where the progress of one task-augmented call goes. */
interface TaskProgress {
  /** The token the client gave the call. */
  clientToken: string | number;
  /** The call, while it runs. */
  call: CallBinding | undefined;
  /** Progress relayed on the call so far, in order. */
  relayed: Promise<void>;
  /** Cancels the call after `callMs` without progress; refreshed by each progress. */
  idle: NodeJS.Timeout | undefined;
  /** The upstream's id of the task the call created, once it has. */
  upstreamTaskId?: string;
}

/**
 * A signal that aborts when `signal` does, with a reason of the gateway's: the SDK tells the upstream the
 * signal's reason, and a client's cancellation gives its own words there, which would reach the server unscanned.
 */
function withoutReason(signal: AbortSignal): AbortSignal {
  const reason = 'the request was cancelled';
  if (signal.aborted) return AbortSignal.abort(reason);
  const controller = new AbortController();
  signal.addEventListener('abort', () => controller.abort(reason), { once: true });
  return controller.signal;
}

/** Whether an error says the remote server does not know our session (HTTP 404 on a session request). */
function sessionExpired(error: unknown): boolean {
  // Only the transport's own HTTP error counts: a JSON-RPC error that mentions a session came from a request
  // that ran. The spec says 404; servers built on the 2025 SDK examples answer 400 "No valid session ID".
  if (!(error instanceof SdkHttpError)) return false;
  return error.status === 404 || (error.status === 400 && /session/i.test(error.message));
}

/** PATH and locale only: a stdio server gets what its declaration gives it, not the gateway's secrets. */
function minimalEnv(): Record<string, string> {
  const env: Record<string, string> = {};
  for (const key of ['PATH', 'HOME', 'LANG', 'LC_ALL', 'TMPDIR', 'NODE_OPTIONS'] as const) {
    const value = process.env[key];
    if (value !== undefined && key !== 'NODE_OPTIONS') env[key] = value;
  }
  return env;
}

/** Refuses a remote upstream whose host is, or resolves to, a non-public address. */
async function refusePrivate(name: string, url: URL): Promise<void> {
  const host = url.hostname.replace(/^\[|\]$/g, '');
  const addresses = ipaddr.isValid(host) ? [host] : (await lookup(host, { all: true })).map((entry) => entry.address);
  for (const address of addresses) {
    const parsed = ipaddr.process(address);
    if (parsed.range() !== 'unicast') {
      throw new ProtocolError(
        -32603,
        `upstream "${name}" resolves to ${address} (${parsed.range()}), which is not a public address; set allowPrivateAddress: true on it if that is intended`,
      );
    }
  }
}
