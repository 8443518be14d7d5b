/**
 * The gateway's core, free of transports: it aggregates the upstreams into one catalog, asks the policy
 * about every list entry and every call through the same decision function, relays calls, and records
 * one audit record per list, call, read, get and approval.
 *
 * A caller never sees what it cannot call: lists are filtered with the same decision (without arguments)
 * that guards the call, and a call to a hidden name gets exactly the error of a call to a missing one.
 */
import { randomBytes } from 'node:crypto';
import { inputRequired } from '@modelcontextprotocol/server';
import {
  ProtocolError,
  UriTemplate,
  type CallToolResult,
  type GetPromptResult,
  type Prompt,
  type ReadResourceResult,
  type Resource,
  type ResourceTemplateType,
  type Result,
  type Tool,
} from '@modelcontextprotocol/client';
import type { AuditLog, AuditRecord } from '../audit/record.js';
import { newCorrelationId } from '../audit/record.js';
import type { GatewaySettings } from '../config/schema.js';
import { dlpVerdict, findingsForAudit, type DlpVerdict, type Scanner } from '../dlp/index.js';
import type { PolicyHolder } from '../policy/engine.js';
import type { Decision, McpRequest, Principal } from '../policy/types.js';
import { isAllowed, principalBinding, principalKey } from '../policy/types.js';
import { canonicalJson, digestOf } from './canonical.js';
import type { ChildCommand, UpstreamProcess } from './child-transport.js';
import { InputRelay, StateSigner } from './input-relay.js';
import { InputSchemas, type ArgumentChecker } from './input-schema.js';
import type { PinStore } from './pins.js';
import { createdTaskId, isTaskAugmented, isTerminalStatus, renameTask, TaskTable, taskNotFound, type ServerTask } from './tasks.js';
import { Upstream, type CallBinding, type UpstreamStatus } from './upstream.js';

/** Who is calling, on which client session. */
export interface Caller extends Principal {
  session: string;
  /** The way to this caller's client outside any call (requests and notifications not tied to one). */
  client?: CallBinding;
  /** A 2026-07-28 request: one request, no session that could own a connection. */
  stateless?: boolean;
}

/**
 * The caller of one request on a session: the session's caller with the claims of the token this request
 * carries. The front lets a request onto a session only with the agent, user and teams that opened it, but the
 * token may be another (refreshed, or narrower than the one that opened the session): the policy judges what
 * each request presents.
 */
export function requestCaller(session: Caller, presented: Principal | undefined): Caller {
  if (presented === undefined || presented.claims === session.claims) return session;
  const { claims: _opened, ...rest } = session;
  return presented.claims === undefined ? rest : { ...rest, claims: presented.claims };
}

export interface GatewayCoreOptions {
  settings: GatewaySettings;
  policy: PolicyHolder;
  audit: AuditLog;
  /** Names this node in audit records. */
  node: string;
  version: string;
  /** Record argument values, not only their digest. */
  recordValues?: boolean;
  /** Secret scanning of arguments, results, resource contents and prompt messages; none when absent. */
  scanner?: Scanner;
  /** Tool pins; without it nothing is pinned or held. */
  pins?: PinStore;
  /** Reply only once the audit record is durable (audit `sync` mode). Otherwise a failed append stops later requests. */
  awaitAudit?: boolean;
  /** The real value of a secret (the vault, then configured providers), for upstream credentials. */
  resolveSecret?: (name: string) => Promise<string>;
  /** Starts stdio upstreams, normally in a sandbox (`launchSandboxed`); a plain process group otherwise. */
  launch?: (upstream: string, command: ChildCommand) => Promise<UpstreamProcess>;
}

/** What scanning did to one piece of content. */
interface Screened<T> {
  value: T;
  verdict: DlpVerdict | undefined;
}

interface Entry<T> {
  upstream: Upstream;
  /** The name the upstream knows it by. */
  original: string;
  /** The upstream's definition, renamed for clients. */
  exposed: T;
  /** Checks a call's arguments against the tool's inputSchema; compiled on the first call. */
  checker?: ArgumentChecker;
  /** The definition as lists show it under the policy with this digest (see screenListed). */
  listed?: { digest: string; shown: T | false };
}

interface Catalog {
  tools: Map<string, Entry<Tool>>;
  prompts: Map<string, Entry<Prompt>>;
  resources: Map<string, Entry<Resource>>;
  templates: Entry<ResourceTemplateType>[];
  /** Names that clashed and the name each later one got instead. */
  collisions: { kind: string; name: string; upstream: string; renamedTo: string }[];
  /** Upstreams whose lists could not be fetched, with why. */
  unavailable: { upstream: string; error: string }[];
  /** Filtered lists per principal and policy, built from this catalog's entries. */
  views: Map<string, View>;
  /** Tools held out because their definition changed or steers the model, until approved. */
  held: { upstream: string; tool: string; reason: string; flags: string[] }[];
}

type Kind = 'tools' | 'prompts' | 'resources';

interface View {
  tools?: Tool[];
  /** The catalog's definitions of the tools listed (a listed one may be a redacted copy): the tools the caller may call. */
  toolSet?: Set<Tool>;
  prompts?: Prompt[];
  promptSet?: Set<Prompt>;
  resources?: Resource[];
  templates?: ResourceTemplateType[];
  /** Entries left out of each list because their definition holds a secret. */
  withheld?: Partial<Record<ListKind, number>>;
}

type ListKind = 'tools' | 'prompts' | 'resources' | 'templates';

/** Who owns a task: the principal that created it (any of its sessions may fetch it), and the session told of its status. */
interface TaskOwner {
  principal: string;
  session: string;
}

const APPROVAL_KEY = 'gatehouse-approval';
type ElicitAnswer = { action?: string; content?: { approve?: unknown } };
const APPROVAL_TTL_MS = 10 * 60 * 1000;
/** Pages of an upstream's `tasks/list` read for one client request: a runaway cursor cannot loop forever. */
const MAX_TASK_LIST_PAGES = 100;

/** Findings in a server's notifications recorded one by one per exchange (a call, a session's own way). */
const NOTICE_RECORDS = 10;

/**
 * Whether the nth finding in a server's notifications is recorded: the first NOTICE_RECORDS are, then one more
 * (`last`) that says the rest are not, so a server sending as often as it likes cannot flood the audit log.
 */
function noticeRecording(nth: number): { record: boolean; last: boolean } {
  return { record: nth <= NOTICE_RECORDS + 1, last: nth === NOTICE_RECORDS + 1 };
}

/**
 * After telling clients a list changed, the gateway waits this long before telling them again (one notice
 * then covers every change meanwhile).
 */
const LIST_CHANGED_MS = 200;

/** Resource subscriptions one session may hold at once: each holds one upstream's subscription until it ends. */
const MAX_SUBSCRIPTIONS_PER_SESSION = 1000;

/** The purpose named in the request state of a parked call, which tells its retry from a new call. */
const PARKED_STATE = 'parked';

/** The requests during which an upstream may ask the client something (multi round-trip requests). */
type RelayedMethod = 'tools/call' | 'prompts/get' | 'resources/read';

/** How a client is told to start over when the request state it echoed is refused. */
const START_OVER: Record<RelayedMethod, string> = {
  'tools/call': 'call the tool again without it',
  'prompts/get': 'get the prompt again without it',
  'resources/read': 'read the resource again without it',
};

/**
 * A tools/call, prompts/get or resources/read of a 2026-07-28 client whose upstream asked the client
 * something: parked between the client's requests until it answers (see input-relay.ts), or cancelled
 * upstream when it does not in time.
 */
interface ParkedCall {
  relay: InputRelay;
  caller: Caller;
  /** The caller's identity as a key, to count what one identity has parked. */
  owner: string;
  /** Names the call's audit records; its request state is bound to it, so it resumes no other method. */
  method: RelayedMethod;
  /** The tool's or prompt's name as the client calls it, or the resource's URI. */
  name: string;
  resource: string;
  argsDigest: string;
  decision: Decision;
  details: Record<string, unknown>;
  started: bigint;
  correlationId: string;
  /** How long the client may take to answer, each round. */
  waitMs: number;
  rounds: number;
  timer?: NodeJS.Timeout;
}

/** What a request's audit records carry (see screenOutbound and failed). */
interface RecordedRequest {
  caller: Caller;
  method: string;
  resource: string;
  started: bigint;
  correlationId: string;
  details: Record<string, unknown>;
  decision?: Decision;
}

/** A call that may be relayed, before it is: what becomes a ParkedCall once its upstream asks the client something. */
type RelayStart = Omit<ParkedCall, 'relay' | 'owner' | 'rounds' | 'timer'>;

/** Error for a name the caller cannot see, identical whether it exists or not. */
function unknown(kind: 'tool' | 'prompt' | 'resource', name: string): ProtocolError {
  const label = kind === 'resource' ? 'Resource' : kind === 'tool' ? 'Tool' : 'Prompt';
  return new ProtocolError(-32602, `${label} ${name} not found`);
}

export class GatewayCore {
  readonly upstreams = new Map<string, Upstream>();
  private catalog: Promise<Catalog> | undefined;
  private catalogVersion = 0;
  private readonly listeners = new Set<(kind: Kind) => void>();
  /** Connections of `isolation: session` upstreams, one per client session: `<upstream>\n<session>`. */
  private readonly sessionConnections = new Map<string, Upstream>();
  /** The session each of those connections belongs to. */
  private readonly connectionSession = new WeakMap<Upstream, string>();
  /**
   * Resource subscriptions, by connection and URI (see subscriptionKey) → the sessions subscribed, each with its
   * way to be told.
   */
  private readonly subscriptions = new Map<string, Map<string, (uri: string) => void>>();
  /** Each session's subscriptions (keys of `subscriptions`), to bound and end them without a walk of every one. */
  private readonly subscribedBy = new Map<string, Set<string>>();
  /** Per kind of list: when sessions were last told it changed, and the notice due next, if one is. */
  private readonly told = new Map<Kind, { at: number; due?: NodeJS.Timeout }>();
  private readonly separator: string;
  private pinVersion = -1;
  /** Signs the request states of `input_required` results (approvals, parked calls); new at every start. */
  private readonly states = new StateSigner(randomBytes(32));
  /** Nonces of approval states already used, each until its state expires. */
  private readonly spentApprovals = new Map<string, number>();
  /** Calls waiting for a 2026-07-28 client's answers, by the nonce of the request state it must echo. */
  private readonly parked = new Map<string, ParkedCall>();
  /** Calls running now, by identity (principalKey), for gateway.maxCallsPerAgent. */
  private readonly running = new Map<string, number>();
  private readonly inputSchemas = new InputSchemas();
  /** Tasks clients created on upstreams, under ids of the gateway's own. */
  private readonly tasks = new TaskTable<Upstream, TaskOwner>(
    (owner) => owner.principal,
    (task) => this.silence(task),
  );
  private auditFailure: unknown;

  constructor(private readonly options: GatewayCoreOptions) {
    this.separator = options.settings.separator;
    const names = Object.keys(options.settings.upstreams).sort();
    for (const name of names) {
      const settings = options.settings.upstreams[name]!;
      if (!settings.enabled) continue;
      const upstream = new Upstream(
        name,
        settings,
        options.settings.timeouts,
        {
          listChanged: (_upstream, kind) => this.invalidate(kind),
          event: (upstream, kind, message) => void this.recordEvent(upstream.name, kind, message),
          resourceUpdated: (upstream, uri) => this.resourceUpdated(upstream, uri),
          taskNotification: (upstream, upstreamId, notification) => this.taskNotification(upstream, upstreamId, notification),
          task: (upstream, upstreamId) => {
            const task = this.tasks.ofUpstream(upstream, upstreamId);
            return task && { id: task.id, session: task.owner.session };
          },
        },
        {
          maxMessageBytes: options.settings.maxMessageBytes,
          version: options.version,
          credentials: (upstream) => this.credentialsFor(upstream),
          ...(options.launch ? { launch: (upstream: Upstream, command: ChildCommand) => options.launch!(upstream.name, command) } : {}),
        },
      );
      this.upstreams.set(name, upstream);
    }
  }

  /**
   * The credentials an upstream is started with. Each must be granted to this server by a `credentials`
   * rule; a missing grant or an unresolvable secret refuses the start (fail closed).
   */
  private async credentialsFor(upstream: Upstream): Promise<{ env: Record<string, string>; headers: Record<string, string> }> {
    const out = { env: {} as Record<string, string>, headers: {} as Record<string, string> };
    for (const credential of upstream.settings.credentials) {
      const decision = this.options.policy.current.decide({ surface: 'credentials', secret: credential.secret, server: upstream.name });
      void this.recordEvent(upstream.name, 'credential', `${isAllowed(decision) ? 'granted' : 'refused'} secret "${credential.secret}" to upstream "${upstream.name}": ${decision.reason}`, isAllowed(decision) ? 'allow' : 'deny', {
        secret: credential.secret,
        rules: decision.rules,
      });
      if (!isAllowed(decision)) {
        throw new ProtocolError(-32603, `upstream "${upstream.name}" needs secret "${credential.secret}", which no credentials rule grants to server "${upstream.name}"`);
      }
      if (!this.options.resolveSecret) throw new ProtocolError(-32603, `upstream "${upstream.name}" needs secret "${credential.secret}" and this gateway has no secrets store`);
      let value: string;
      try {
        value = await this.options.resolveSecret(credential.secret);
      } catch (error) {
        throw new ProtocolError(-32603, `upstream "${upstream.name}" needs secret "${credential.secret}": ${describeError(error)}`);
      }
      if (credential.env !== undefined) out.env[credential.env] = value;
      if (credential.header !== undefined) {
        const colon = credential.header.indexOf(':');
        out.headers[credential.header.slice(0, colon).trim()] = credential.header.slice(colon + 1).trim().replaceAll('{secret}', value);
      }
    }
    return out;
  }

  /** Listens for list changes a client should hear about (`notifications/<kind>/list_changed`). */
  onListChanged(listener: (kind: Kind) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  invalidate(kind: Kind): void {
    this.catalog = undefined;
    this.catalogVersion += 1;
    this.tell(kind);
  }

  /**
   * Tells every session that a list changed: at once, then at most once per LIST_CHANGED_MS while changes keep
   * coming. Each notice sends every client back to list, and each list to the upstreams: a server announcing
   * changes in a loop must not make the gateway an amplifier aimed at every session and every upstream.
   */
  private tell(kind: Kind): void {
    const last = this.told.get(kind);
    if (last?.due) return;
    const notify = (): void => {
      this.told.set(kind, { at: Date.now() });
      for (const listener of this.listeners) listener(kind);
    };
    const wait = last ? last.at + LIST_CHANGED_MS - Date.now() : 0;
    if (wait <= 0) return notify();
    const due = setTimeout(notify, wait);
    due.unref();
    this.told.set(kind, { at: last!.at, due });
  }

  status(): { upstreams: UpstreamStatus[] } {
    return { upstreams: [...this.upstreams.values()].map((upstream) => upstream.status()) };
  }

  /** Collisions and held tools from the current catalog (empty before the first list). */
  async catalogReport(): Promise<{ collisions: Catalog['collisions']; held: Catalog['held']; unavailable: Catalog['unavailable'] }> {
    const catalog = await this.loadCatalog();
    return { collisions: catalog.collisions, held: catalog.held, unavailable: catalog.unavailable };
  }

  async close(): Promise<void> {
    for (const { due } of this.told.values()) clearTimeout(due);
    for (const call of this.parked.values()) {
      clearTimeout(call.timer);
      call.relay.cancel('the gateway is stopping');
    }
    this.parked.clear();
    await Promise.all([...this.upstreams.values(), ...this.sessionConnections.values()].map((upstream) => upstream.stop('stopped')));
  }

  private exposedName(upstream: Upstream, name: string): string {
    const prefix = upstream.settings.prefix ?? upstream.name;
    return prefix === '' ? name : `${prefix}${this.separator}${name}`;
  }

  private loadCatalog(): Promise<Catalog> {
    // An approval made by `gatehouse mcp pins approve` (another connection) shows in the next list.
    const pins = this.options.pins;
    if (pins && this.catalog && pins.version() !== this.pinVersion) this.invalidate('tools');
    if (this.catalog) return this.catalog;
    if (pins) this.pinVersion = pins.version();
    const version = this.catalogVersion;
    const building = this.buildCatalog();
    this.catalog = building;
    building.catch(() => {
      if (this.catalog === building && this.catalogVersion === version) this.catalog = undefined;
    });
    return building;
  }

  private async buildCatalog(): Promise<Catalog> {
    const catalog: Catalog = { tools: new Map(), prompts: new Map(), resources: new Map(), templates: [], collisions: [], unavailable: [], views: new Map(), held: [] };
    const upstreams = [...this.upstreams.values()];
    const fetched = await Promise.all(
      upstreams.map(async (upstream) => {
        try {
          const [tools, prompts, resources, templates] = await Promise.all([
            upstream.listTools(),
            upstream.listPrompts(),
            upstream.listResources(),
            upstream.listResourceTemplates(),
          ]);
          return { upstream, tools, prompts, resources, templates };
        } catch (error) {
          catalog.unavailable.push({ upstream: upstream.name, error: error instanceof Error ? error.message : String(error) });
          return undefined;
        }
      }),
    );
    // Upstreams are in name order, so which name wins a clash never depends on timing; those without a
    // prefix come last, so their tools can never take a name in another server's namespace.
    const unprefixedLast = fetched.filter((l) => l && this.exposedName(l.upstream, '') !== '').concat(fetched.filter((l) => l && this.exposedName(l.upstream, '') === ''));
    const pins = this.options.pins;
    if (pins) pins.batch(() => this.fillCatalog(catalog, unprefixedLast));
    else this.fillCatalog(catalog, unprefixedLast);
    return catalog;
  }

  private fillCatalog(catalog: Catalog, fetched: ({ upstream: Upstream; tools: Tool[]; prompts: Prompt[]; resources: Resource[]; templates: ResourceTemplateType[] } | undefined)[]): void {
    for (const lists of fetched) {
      if (!lists) continue;
      const { upstream } = lists;
      for (const tool of lists.tools) {
        if (!this.pinAllows(catalog, upstream, tool)) continue;
        const name = this.claim(catalog, 'tool', catalog.tools, this.exposedName(upstream, tool.name), upstream);
        catalog.tools.set(name, { upstream, original: tool.name, exposed: deepFreeze({ ...tool, name }) });
      }
      for (const prompt of lists.prompts) {
        const name = this.claim(catalog, 'prompt', catalog.prompts, this.exposedName(upstream, prompt.name), upstream);
        catalog.prompts.set(name, { upstream, original: prompt.name, exposed: { ...prompt, name } });
      }
      for (const resource of lists.resources) {
        // URIs are not renamed: a clash keeps the first upstream's resource and reports the rest.
        if (catalog.resources.has(resource.uri)) {
          catalog.collisions.push({ kind: 'resource', name: resource.uri, upstream: upstream.name, renamedTo: '' });
          continue;
        }
        catalog.resources.set(resource.uri, { upstream, original: resource.uri, exposed: resource });
      }
      for (const template of lists.templates) catalog.templates.push({ upstream, original: template.uriTemplate, exposed: template });
    }
  }

  /** Checks a tool against its pin; a held tool stays out of the catalog, so it can be neither listed nor called. */
  private pinAllows(catalog: Catalog, upstream: Upstream, tool: Tool): boolean {
    const pins = this.options.pins;
    if (!pins) return true;
    const check = pins.check(upstream.name, tool, upstream.instructions());
    if (check.state === 'pinned') {
      if (check.news) void this.recordEvent(upstream.name, 'pin.first-seen', `pinned ${upstream.name}/${tool.name} on first sight`, 'info', { tool: tool.name });
      return true;
    }
    catalog.held.push({ upstream: upstream.name, tool: tool.name, reason: check.reason ?? 'changed', flags: check.flags });
    if (check.news) {
      const why =
        check.reason === 'flagged'
          ? `its description steers the model (${check.flags.join(', ')})`
          : `its definition changed since it was pinned${check.flags.length ? ` and now steers the model (${check.flags.join(', ')})` : ''}`;
      void this.recordEvent(upstream.name, 'pin.held', `held ${upstream.name}/${tool.name}: ${why}; approve with "gatehouse mcp pins approve ${upstream.name} ${tool.name}"`, 'deny', {
        tool: tool.name,
        flags: check.flags,
      });
    }
    return false;
  }

  private claim<T>(catalog: Catalog, kind: string, taken: Map<string, T>, wanted: string, upstream: Upstream): string {
    if (!taken.has(wanted)) return wanted;
    let n = 2;
    while (taken.has(`${wanted}${this.separator}${n}`)) n += 1;
    const renamedTo = `${wanted}${this.separator}${n}`;
    catalog.collisions.push({ kind, name: wanted, upstream: upstream.name, renamedTo });
    return renamedTo;
  }

  private decide(caller: Caller, target: Omit<McpRequest, 'surface' | keyof Principal>): Decision {
    // Fail closed: once the audit log cannot be written, nothing is decided.
    if (this.auditFailure !== undefined) {
      throw new ProtocolError(-32603, `the audit log cannot be written (${describeError(this.auditFailure)}); requests are refused until it can`);
    }
    const request: McpRequest = { surface: 'mcp', ...target };
    if (caller.agent !== undefined) request.agent = caller.agent;
    if (caller.teams !== undefined) request.teams = caller.teams;
    if (caller.user !== undefined) request.user = caller.user;
    if (caller.claims !== undefined) request.claims = caller.claims;
    return this.options.policy.current.decide(request);
  }

  /**
   * Whether a list shows this entry. A list has no arguments, so conditions on `args` cannot be judged yet:
   * an allow that depends on them may still grant the call, and a deny that depends on them may not apply.
   * Such an entry is listed, and its calls are decided with their arguments. Anything else is decided exactly
   * as a call would be: one decision function for both.
   */
  /** Whether the caller may see this entry in a list: the engine's own listing decision (see PolicyEngine.listable). */
  private listable(caller: Caller, target: Omit<McpRequest, 'surface' | keyof Principal>): boolean {
    const request: McpRequest = { surface: 'mcp', ...target };
    if (caller.agent !== undefined) request.agent = caller.agent;
    if (caller.teams !== undefined) request.teams = caller.teams;
    if (caller.user !== undefined) request.user = caller.user;
    if (caller.claims !== undefined) request.claims = caller.claims;
    return isAllowed(this.options.policy.current.listable(request));
  }

  private viewKey(caller: Caller): string {
    const engine = this.options.policy.current;
    return JSON.stringify([engine.digest, caller.agent, caller.teams, caller.user, caller.claims]);
  }

  private view(caller: Caller, catalog: Catalog): View {
    const key = this.viewKey(caller);
    let view = catalog.views.get(key);
    if (!view) {
      if (catalog.views.size > 1000) catalog.views.clear();
      view = {};
      catalog.views.set(key, view);
    }
    return view;
  }

  // ---- lists -------------------------------------------------------------------------------------

  /** The caller's view with its tool list, made on first use: looked up once per list or call. */
  private toolView(caller: Caller, catalog: Catalog): View & { tools: Tool[]; toolSet: Set<Tool> } {
    const view = this.view(caller, catalog);
    if (!view.tools || !view.toolSet) {
      view.tools = [];
      view.toolSet = new Set();
      for (const entry of catalog.tools.values()) {
        const listed = this.listable(caller, {
          server: entry.upstream.name,
          tool: entry.original,
          ...(entry.exposed.annotations ? { annotations: entry.exposed.annotations as Record<string, unknown> } : {}),
        });
        const shown = listed && this.screenListed(view, 'tools', entry);
        if (!shown) continue;
        view.tools.push(shown);
        view.toolSet.add(entry.exposed);
      }
      // Frozen, with frozen tools: the session transport may then keep the list's JSON with it.
      Object.freeze(view.tools);
    }
    return view as View & { tools: Tool[]; toolSet: Set<Tool> };
  }

  /** The caller's view with its prompt list, made on first use. */
  private promptView(caller: Caller, catalog: Catalog): View & { prompts: Prompt[]; promptSet: Set<Prompt> } {
    const view = this.view(caller, catalog);
    if (!view.prompts || !view.promptSet) {
      view.prompts = [];
      view.promptSet = new Set();
      for (const entry of catalog.prompts.values()) {
        const shown = this.listable(caller, { server: entry.upstream.name, prompt: entry.original }) && this.screenListed(view, 'prompts', entry);
        if (!shown) continue;
        view.prompts.push(shown);
        view.promptSet.add(entry.exposed);
      }
    }
    return view as View & { prompts: Prompt[]; promptSet: Set<Prompt> };
  }

  private canSeeTool(caller: Caller, catalog: Catalog, tool: Tool): boolean {
    return this.toolView(caller, catalog).toolSet.has(tool);
  }

  private canSeePrompt(caller: Caller, catalog: Catalog, prompt: Prompt): boolean {
    return this.promptView(caller, catalog).promptSet.has(prompt);
  }

  async listTools(caller: Caller): Promise<Tool[]> {
    const started = process.hrtime.bigint();
    const catalog = await this.loadCatalog();
    const { tools, withheld } = this.toolView(caller, catalog);
    await this.recordList(caller, 'tools/list', started, tools.length, catalog.tools.size, catalog, withheld?.tools);
    return tools;
  }

  async listPrompts(caller: Caller): Promise<Prompt[]> {
    const started = process.hrtime.bigint();
    const catalog = await this.loadCatalog();
    const { prompts, withheld } = this.promptView(caller, catalog);
    await this.recordList(caller, 'prompts/list', started, prompts.length, catalog.prompts.size, catalog, withheld?.prompts);
    return prompts;
  }

  async listResources(caller: Caller): Promise<Resource[]> {
    const started = process.hrtime.bigint();
    const catalog = await this.loadCatalog();
    const view = this.view(caller, catalog);
    view.resources ??= [...catalog.resources.values()].flatMap((entry) => {
      const shown = this.listable(caller, { server: entry.upstream.name, resource: entry.original }) && this.screenListed(view, 'resources', entry);
      return shown ? [shown] : [];
    });
    await this.recordList(caller, 'resources/list', started, view.resources.length, catalog.resources.size, catalog, view.withheld?.resources);
    return view.resources;
  }

  async listResourceTemplates(caller: Caller): Promise<ResourceTemplateType[]> {
    const started = process.hrtime.bigint();
    const catalog = await this.loadCatalog();
    const view = this.view(caller, catalog);
    view.templates ??= catalog.templates.flatMap((entry) => {
      const shown = this.listable(caller, { server: entry.upstream.name, resource: entry.original }) && this.screenListed(view, 'templates', entry);
      return shown ? [shown] : [];
    });
    await this.recordList(caller, 'resources/templates/list', started, view.templates.length, catalog.templates.length, catalog, view.withheld?.templates);
    return view.templates;
  }

  /**
   * An entry as a list shows it: an upstream's definition (a tool's description, a resource's name) reaches the
   * client's model as a result does, so it is scanned like one. One that holds a secret is left out, and then
   * cannot be called either, or shown redacted; false when left out. Scanned once per catalog and policy, not
   * once per caller.
   */
  private screenListed<T>(view: View, kind: ListKind, entry: Entry<T>): T | false {
    const digest = this.options.policy.current.digest;
    if (entry.listed?.digest !== digest) {
      const screened = this.screen(entry.exposed);
      // Frozen like the catalog's own definitions (see toolView).
      entry.listed = { digest, shown: screened.verdict?.effect === 'deny' ? false : screened.value === entry.exposed ? entry.exposed : deepFreeze(screened.value) };
    }
    if (entry.listed.shown === false) view.withheld = { ...view.withheld, [kind]: (view.withheld?.[kind] ?? 0) + 1 };
    return entry.listed.shown;
  }

  // ---- calls -------------------------------------------------------------------------------------

  async callTool(
    caller: Caller,
    name: string,
    args: Record<string, unknown> | undefined,
    binding: CallBinding | undefined,
    options: { signal?: AbortSignal; progressToken?: string | number; meta?: Record<string, unknown>; task?: Record<string, unknown> } = {},
  ): Promise<CallToolResult> {
    const started = process.hrtime.bigint();
    const correlationId = newCorrelationId();
    const catalog = await this.loadCatalog();
    const entry = catalog.tools.get(name);
    const visible = entry !== undefined && this.canSeeTool(caller, catalog, entry.exposed);
    if (!entry || !visible) {
      await this.record(caller, 'tools/call', `${entry?.upstream.name ?? '?'}/${name}`, 'deny', [], 'no such tool for this caller', started, correlationId, {
        argsDigest: digestOf(args ?? {}),
        ...(entry ? { hidden: true } : {}),
      });
      throw unknown('tool', name);
    }
    const server = entry.upstream.name;
    const resource = `${server}/${entry.original}`;
    const argsDigest = digestOf(args ?? {});
    const details: Record<string, unknown> = { argsDigest, tool: name };
    if (this.options.recordValues) details.args = args ?? {};
    // The policy judges only arguments of the types the tool declares (see input-schema.ts).
    entry.checker ??= this.inputSchemas.checkerFor(entry.exposed.inputSchema, (reason) => {
      void this.recordEvent(server, 'schema-unusable', `tool ${server}/${entry.original}: ${reason}; conditions on its arguments fail closed`, 'info', { tool: entry.original });
    });
    const checked = entry.checker(args ?? {});
    if (checked.ok === false) {
      await this.record(caller, 'tools/call', resource, 'deny', ['input-schema'], `the arguments do not match the tool's inputSchema: ${checked.problem}`, started, correlationId, details);
      throw new ProtocolError(-32602, `Invalid arguments for tool ${name}: ${checked.problem}`);
    }
    if (checked.ok === 'unchecked') details.argsUnchecked = checked.reason;
    const unchecked = checked.ok === 'unchecked' ? ` (the tool's ${checked.reason.replace(/^its /, '')}, so conditions on its arguments fail closed)` : '';
    const decision = this.decide(caller, {
      server,
      tool: entry.original,
      args: args ?? {},
      ...(checked.ok === 'unchecked' ? { argsUnchecked: true } : {}),
      ...(entry.exposed.annotations ? { annotations: entry.exposed.annotations as Record<string, unknown> } : {}),
    });
    if (!isAllowed(decision)) {
      await this.record(caller, 'tools/call', resource, 'deny', decision.rules, decision.reason, started, correlationId, details, decision);
      return {
        isError: true,
        content: [{ type: 'text', text: `Denied by Gatehouse policy${decision.rules.length ? ` (${decision.rules.join(', ')})` : ''}: ${decision.reason}${unchecked}` }],
      };
    }
    const refuse = async (reason: string): Promise<CallToolResult> => {
      await this.record(caller, 'tools/call', resource, 'deny', ['limit'], reason, started, correlationId, details, decision);
      return { isError: true, content: [{ type: 'text', text: `Refused by Gatehouse: ${reason}` }] };
    };
    // The retry of a parked call carries its answers: the call goes on upstream, it is not sent again.
    const state = binding?.multiRound?.requestState;
    if (binding && caller.stateless && state?.startsWith(`${PARKED_STATE}.`)) {
      return this.asRunningCall(caller, refuse, async () => (await this.resumeCall(caller, 'tools/call', name, argsDigest, state, binding, options.signal)) as CallToolResult);
    }
    if (decision.requireApproval) {
      const approved = await this.askApproval(caller, name, args ?? {}, argsDigest, binding, correlationId);
      if (approved.ok === 'ask') return approved.result;
      if (!approved.ok) {
        await this.record(caller, 'tools/call', resource, 'deny', decision.rules, approved.reason, started, correlationId, details, decision);
        return { isError: true, content: [{ type: 'text', text: `Not run: ${approved.reason}` }] };
      }
    }
    const screenedArgs = this.screen(args ?? {});
    if (screenedArgs.verdict && screenedArgs.verdict.action !== 'none') details.argsDlp = dlpDetails(screenedArgs.verdict);
    if (screenedArgs.verdict?.effect === 'deny') {
      await this.record(caller, 'tools/call', resource, 'deny', ['dlp'], `arguments ${screenedArgs.verdict.reason}`, started, correlationId, details, decision);
      return { isError: true, content: [{ type: 'text', text: `Blocked by Gatehouse: the arguments contain a secret (${screenedArgs.verdict.reason}).` }] };
    }
    // The call's _meta and task reach the upstream as surely as its arguments.
    const meta = stripProgressToken(options.meta);
    const extras = meta || options.task ? this.screen({ ...(meta ? { _meta: meta } : {}), ...(options.task ? { task: options.task } : {}) }) : undefined;
    if (extras?.verdict && extras.verdict.action !== 'none') details.metaDlp = dlpDetails(extras.verdict);
    if (extras?.verdict?.effect === 'deny') {
      await this.record(caller, 'tools/call', resource, 'deny', ['dlp'], `the call's _meta or task ${extras.verdict.reason}`, started, correlationId, details, decision);
      return { isError: true, content: [{ type: 'text', text: `Blocked by Gatehouse: the call's _meta or task contains a secret (${extras.verdict.reason}).` }] };
    }
    const params: Record<string, unknown> = { name: entry.original, arguments: screenedArgs.value };
    if (extras?.value._meta) params._meta = extras.value._meta;
    const connection = this.connectionFor(entry.upstream, caller);
    if (binding?.multiRound) {
      const call = { caller, method: 'tools/call' as const, name, resource, argsDigest, decision, details, started, correlationId, waitMs: entry.upstream.timeouts.inputMs };
      return this.asRunningCall(caller, refuse, async () => (await this.startRelayed(call, connection, params, binding, options)) as CallToolResult);
    }
    // Tasks are relayed for 2025-era callers only; a 2026-07-28 call above runs as a plain call.
    if (extras?.value.task) params.task = extras.value.task;
    return this.asRunningCall(caller, refuse, async () => {
      let result: CallToolResult;
      try {
        const relay = binding && this.clientRelay(binding, caller, resource, decision.rules, correlationId);
        result = (await connection.request('tools/call', params, relay, options)) as CallToolResult;
      } catch (error) {
        throw await this.failed({ caller, method: 'tools/call', resource, started, correlationId, details, decision }, decision.rules, error);
      }
      if (options.task) result = this.adoptTask(caller, connection, entry, name, decision.rules, details, result);
      return this.finishCall(caller, resource, decision, details, started, correlationId, result);
    });
  }

  /**
   * Runs one of the caller's calls (a prompt get and a resource read count as calls here). Each running call
   * holds upstream work and memory: one identity may run only gateway.maxCallsPerAgent at once, so it cannot
   * crowd out every other session of the shared servers. A 2026-07-28 call runs while one of its client's
   * requests is served; parked between them, it counts against maxSessionsPerAgent instead (see startRelayed).
   */
  private async asRunningCall<T>(caller: Caller, refuse: (reason: string) => Promise<T>, run: () => Promise<T>): Promise<T> {
    const runner = principalKey(caller);
    const running = this.running.get(runner) ?? 0;
    const limit = this.options.settings.maxCallsPerAgent;
    if (running >= limit) return refuse(`this agent already has ${running} calls running (gateway.maxCallsPerAgent is ${limit}); wait for one to finish`);
    this.running.set(runner, running + 1);
    try {
      return await run();
    } finally {
      const left = (this.running.get(runner) ?? 1) - 1;
      if (left > 0) this.running.set(runner, left);
      else this.running.delete(runner);
    }
  }

  /** Scans a call's result and records the call's outcome once. */
  private async finishCall(
    caller: Caller,
    resource: string,
    decision: Decision,
    details: Record<string, unknown>,
    started: bigint,
    correlationId: string,
    result: CallToolResult,
  ): Promise<CallToolResult> {
    const screened = this.screen(result);
    if (screened.verdict && screened.verdict.action !== 'none') details.resultDlp = dlpDetails(screened.verdict);
    if (result.isError) details.toolError = true;
    if (screened.verdict?.effect === 'deny') {
      await this.record(caller, 'tools/call', resource, 'deny', ['dlp'], `result ${screened.verdict.reason}`, started, correlationId, details, decision);
      return { isError: true, content: [{ type: 'text', text: `Withheld by Gatehouse: the result contained a secret (${screened.verdict.reason}).` }] };
    }
    await this.record(caller, 'tools/call', resource, decision.effect, decision.rules, decision.reason, started, correlationId, details, decision);
    return screened.value;
  }

  // ---- tasks -------------------------------------------------------------------------------------

  /**
   * A call the upstream runs as a task (it answered a CreateTaskResult): the caller gets an id of ours,
   * which only it can use, in place of the upstream's. Any other result is returned as it is.
   */
  private adoptTask<T extends Result>(caller: Caller, connection: Upstream, entry: Entry<Tool>, name: string, rules: string[], details: Record<string, unknown>, result: T): T {
    const upstreamId = createdTaskId(result);
    if (upstreamId === undefined) return result;
    const task = this.tasks.add(
      { connection, upstreamId, owner: this.taskOwner(caller), ...(caller.client ? { notify: caller.client.notify } : {}), server: entry.upstream.name, tool: entry.original, exposed: name, rules },
      (result as unknown as { task: { ttl?: unknown } }).task.ttl,
    );
    details.task = task.id;
    return renameTask(result, upstreamId, task.id);
  }

  /**
   * The way back to the client for a request served upstream: screened both ways, recording client-side task
   * operations, and with the way to the same session, screened and recorded alike, for once the request ended.
   */
  private clientRelay(binding: CallBinding, caller: Caller, resource: string, rules: string[], correlationId: string): CallBinding {
    const relay = this.recordingClientTasks(this.screeningRelay(binding, caller, 'tools/call', resource, correlationId), caller, resource, rules, correlationId);
    const client = caller.client;
    if (client) relay.afterCall = () => this.recordingClientTasks(this.screeningRelay(client, caller, 'tools/call', resource, correlationId), caller, resource, rules, correlationId);
    return relay;
  }

  /**
   * The call's way back to its client, recording every client-side task operation the upstream makes through
   * it: a request the client is asked to run as a task, and the upstream's polls of that task.
   */
  private recordingClientTasks(binding: CallBinding, caller: Caller, resource: string, rules: string[], correlationId: string): CallBinding {
    return {
      ...binding,
      send: async (request) => {
        if (!request.method.startsWith('tasks/') && !isTaskAugmented(request.params)) return binding.send(request);
        const started = process.hrtime.bigint();
        const action = `client.${request.method}`;
        try {
          const result = await binding.send(request);
          const task = typeof request.params?.taskId === 'string' ? request.params.taskId : createdTaskId(result);
          await this.record(caller, action, resource, 'allow', rules, 'asked of the calling client by the upstream', started, correlationId, task ? { clientTask: task } : {});
          return result;
        } catch (error) {
          await this.record(caller, action, resource, 'error', rules, this.forRecord(describeError(error)), started, correlationId, {});
          throw error;
        }
      },
    };
  }

  /**
   * The call's way back to its client, scanned both ways like the call itself: the server's question (a
   * sampling request's messages, an elicitation's message) on its way to the client, and (unless `answers`
   * is false: a 2026-07-28 client's answers are scanned in `resumeCall`) the client's answer (a sampling
   * result, an elicitation's content, its roots) on its way up. What the policy blocks is withheld and the
   * server gets an error; what it redacts goes on redacted.
   */
  private screeningRelay(binding: CallBinding, caller: Caller, action: RelayedMethod | 'completion/complete' | 'upstream', resource: string, correlationId: string, answers = true): CallBinding {
    const notices = { findings: 0 };
    return {
      ...binding,
      send: async (request) => {
        const params = request.params && (await this.screenRelayed(caller, action, resource, correlationId, request.method, 'question', request.params));
        let answer: Result;
        try {
          answer = await binding.send(params ? { ...request, params } : request);
        } catch (error) {
          if (!answers) throw error;
          // A refusal is an answer too: its message and data go to the server as the client wrote them.
          const refusal = asProtocolError(error);
          const screened = await this.screenRelayed(caller, action, resource, correlationId, request.method, 'answer', { message: refusal.message, data: refusal.data });
          throw new ProtocolError(refusal.code, screened.message, screened.data);
        }
        return answers ? this.screenRelayed(caller, action, resource, correlationId, request.method, 'answer', answer) : answer;
      },
      // Progress messages and log lines reach the client (and may reach its model) too: a withheld one is dropped.
      // The server sends these as often as it likes, so only the first few findings are recorded one by one.
      notify: async (notification) => {
        let params = notification.params;
        if (params) {
          try {
            params = await this.screenRelayed(caller, action, resource, correlationId, notification.method, 'notice', params, notices);
          } catch {
            return;
          }
        }
        return binding.notify(params ? { ...notification, params } : notification);
      },
    };
  }

  private async screenRelayed<T>(
    caller: Caller,
    action: RelayedMethod | 'completion/complete' | 'upstream',
    resource: string,
    correlationId: string,
    method: string,
    side: 'question' | 'answer' | 'notice',
    value: T,
    /** Counts findings where only the first few are recorded (a server's notifications). */
    budget?: { findings: number },
  ): Promise<T> {
    const started = process.hrtime.bigint();
    const screened = this.screen(value);
    if (!screened.verdict || screened.verdict.action === 'none') return screened.value as T;
    const withheld = screened.verdict.effect === 'deny';
    const what = side === 'answer' ? `the client's answer to ${method}` : side === 'notice' ? `the server's ${method}` : `the server's ${method} request`;
    const kind = side === 'answer' ? 'client-answer' : side === 'notice' ? 'server-notice' : 'server-question';
    const recording = budget ? noticeRecording((budget.findings += 1)) : { record: true, last: false };
    const more = recording.last ? '; further findings in this exchange are acted on but not recorded one by one' : '';
    if (recording.record) {
      await this.record(caller, `${action}.${kind}`, resource, withheld ? 'deny' : 'allow', ['dlp'], `${what} ${screened.verdict.reason}${more}`, started, correlationId, {
        method,
        dlp: dlpDetails(screened.verdict),
      });
    }
    if (withheld) throw new ProtocolError(-32603, `Withheld by Gatehouse: ${what} contained a secret (${screened.verdict.reason})`);
    return screened.value as T;
  }

  /** The tasks capability clients are offered: what at least one upstream offers, and nothing more. */
  async taskCapability(): Promise<Record<string, unknown> | undefined> {
    const offered = await Promise.all(
      [...this.upstreams.values()].map(async (upstream) => {
        try {
          return (await upstream.connection()).getServerCapabilities()?.tasks as Record<string, unknown> | undefined;
        } catch {
          return undefined; // an upstream that cannot start offers nothing
        }
      }),
    );
    const capability: Record<string, unknown> = {};
    for (const tasks of offered) {
      if (!tasks) continue;
      if (tasks.list) capability.list = {};
      if (tasks.cancel) capability.cancel = {};
      if ((tasks.requests as { tools?: { call?: unknown } } | undefined)?.tools?.call) capability.requests = { tools: { call: {} } };
    }
    return Object.keys(capability).length > 0 ? capability : undefined;
  }

  private taskOwner(caller: Caller): TaskOwner {
    return { principal: principalKey(caller), session: caller.session };
  }

  private owns(caller: Caller): (owner: TaskOwner) => boolean {
    const principal = this.taskOwner(caller).principal;
    return (owner) => owner.principal === principal;
  }

  /**
   * `tasks/get`, `tasks/result` and `tasks/cancel`: sent to the upstream that runs the task, for its owner
   * only. A result is screened like a call's, and only while the caller may still call the tool (a tool
   * held by its pin, or no longer allowed, gives no more results).
   */
  async taskRequest(caller: Caller, method: 'tasks/get' | 'tasks/result' | 'tasks/cancel', params: Record<string, unknown>, binding: CallBinding | undefined): Promise<Result> {
    const started = process.hrtime.bigint();
    const correlationId = newCorrelationId();
    const task = this.tasks.owned(params.taskId, this.owns(caller));
    if (!task) {
      await this.record(caller, method, '?', 'deny', [], 'no such task for this caller', started, correlationId, {});
      throw taskNotFound(params.taskId);
    }
    const resource = `${task.server}/${task.tool}`;
    const details: Record<string, unknown> = { task: task.id, tool: task.exposed };
    if (method === 'tasks/result') {
      // The same view that lists the tool: a call whose tool was since held or hidden gives no result.
      const catalog = await this.loadCatalog();
      const entry = catalog.tools.get(task.exposed);
      if (!entry || entry.upstream.name !== task.server || entry.original !== task.tool || !this.canSeeTool(caller, catalog, entry.exposed)) {
        const reason = 'the tool is no longer available to this caller (held by its pin, or no longer allowed)';
        await this.record(caller, method, resource, 'deny', task.rules, reason, started, correlationId, details);
        throw new ProtocolError(-32603, `Withheld by Gatehouse: ${reason}`);
      }
    }
    // Whatever else the client sent with the id (its _meta) reaches the upstream too.
    const { taskId: _taskId, ...rest } = params;
    const request = { caller, method, resource, started, correlationId, details };
    const sent = await this.screenOutbound(request, 'the request', rest);
    let result: Result;
    try {
      // What the upstream asks meanwhile (a task in input_required asks now) is screened as within the call.
      result = await task.connection.request(method, { ...sent, taskId: task.upstreamId }, binding && this.clientRelay(binding, caller, resource, task.rules, correlationId));
    } catch (error) {
      throw await this.failed(request, task.rules, error);
    }
    // A task that has ended takes no more notifications (its progress must stop there).
    if (method === 'tasks/result' || isTerminalStatus((result as { status?: unknown }).status)) this.silence(task);
    const screened = this.screen(renameTask(result, task.upstreamId, task.id));
    if (screened.verdict && screened.verdict.action !== 'none') details.resultDlp = dlpDetails(screened.verdict);
    if (screened.verdict?.effect === 'deny') {
      await this.record(caller, method, resource, 'deny', ['dlp'], `result ${screened.verdict.reason}`, started, correlationId, details);
      if (method !== 'tasks/result') throw new ProtocolError(-32603, `Withheld by Gatehouse: the task's status contained a secret (${screened.verdict.reason})`);
      return { isError: true, content: [{ type: 'text', text: `Withheld by Gatehouse: the result contained a secret (${screened.verdict.reason}).` }] };
    }
    await this.record(caller, method, resource, 'allow', task.rules, 'the task\'s owner', started, correlationId, details);
    return screened.value;
  }

  /** `tasks/list`: the caller's own tasks, as each upstream that runs some of them reports them now. */
  async listTasks(caller: Caller): Promise<Result> {
    const started = process.hrtime.bigint();
    const mine = this.tasks.ownedBy(this.owns(caller));
    const listed: Record<string, unknown>[] = [];
    for (const connection of new Set(mine.map((task) => task.connection))) {
      try {
        if (!(await connection.connection()).getServerCapabilities()?.tasks?.list) continue;
        // Every page the upstream has (bounded), filtered to the caller's tasks and given back as one page.
        let cursor: unknown;
        for (let page = 0; page < MAX_TASK_LIST_PAGES; page++) {
          const reported = (await connection.request('tasks/list', typeof cursor === 'string' ? { cursor } : {}, undefined)) as { tasks?: unknown; nextCursor?: unknown };
          for (const entry of Array.isArray(reported.tasks) ? reported.tasks : []) {
            const task = mine.find((own) => own.connection === connection && own.upstreamId === (entry as { taskId?: unknown }).taskId);
            if (task) listed.push(renameTask(entry as Record<string, unknown>, task.upstreamId, task.id));
          }
          cursor = reported.nextCursor;
          if (typeof cursor !== 'string' || cursor === '') break;
        }
      } catch (error) {
        throw this.screenError(error);
      }
    }
    const screened = this.screen({ tasks: listed });
    if (screened.verdict?.effect === 'deny') throw new ProtocolError(-32603, `Withheld by Gatehouse: the task list contained a secret (${screened.verdict.reason})`);
    await this.record(caller, 'tasks/list', '*', 'allow', [], `${listed.length} tasks shown`, started, newCorrelationId(), { shown: listed.length });
    return screened.value;
  }

  /**
   * A notification an upstream sends about one of its tasks (its status, its progress, a log message naming
   * it), relayed to the session that created the task with the task named by our id, screened like the task's
   * results, for as long as the task runs and that session lasts. Returns whether the task takes more.
   */
  private taskNotification(upstream: Upstream, upstreamId: string, notification: { method: string; params: Record<string, unknown> }): boolean {
    const task = this.tasks.ofUpstream(upstream, upstreamId);
    const notify = task?.notify;
    if (!task || !notify) return false;
    const screened = this.screen(renameTask(notification.params, upstreamId, task.id));
    if (screened.verdict?.effect === 'deny') {
      // The upstream sends these as often as it likes: the first few are recorded one by one.
      task.withheld = (task.withheld ?? 0) + 1;
      const recording = noticeRecording(task.withheld);
      const more = recording.last ? '; further ones of this task are withheld but not recorded one by one' : '';
      if (recording.record) {
        void this.recordEvent(task.server, 'relay-refused', `withheld ${notification.method} of task ${task.id}: it ${screened.verdict.reason}${more}`, 'deny', {
          task: task.id,
          dlp: dlpDetails(screened.verdict),
        });
      }
    } else {
      void notify({ method: notification.method, params: screened.value }).catch(() => undefined);
    }
    if (notification.method === 'notifications/tasks/status' && isTerminalStatus(notification.params.status)) this.silence(task);
    return task.notify !== undefined;
  }

  /** Nothing more about this task is relayed: it ended (so must its progress), or the session told of it did. */
  private silence(task: ServerTask<Upstream, TaskOwner>): void {
    delete task.notify;
    task.connection.forgetTaskProgress(task.upstreamId);
  }

  /**
   * Starts a 2026-07-28 client's request upstream with an InputRelay in the client's place: such a client
   * cannot be sent the upstream's requests, so they are asked through `input_required` while the upstream
   * request stays parked (serveRound). Each parked call holds an upstream request open, so one identity may
   * leave only so many waiting, whatever their method.
   */
  private async startRelayed(
    call: RelayStart,
    connection: Upstream,
    params: Record<string, unknown>,
    round: CallBinding,
    options: { signal?: AbortSignal; progressToken?: string | number },
  ): Promise<Result> {
    const owner = principalKey(call.caller);
    const waiting = this.parkedCallsOf(owner);
    const cap = this.options.settings.maxSessionsPerAgent;
    if (waiting >= cap) {
      const reason = `this agent already has ${waiting} ${waiting === 1 ? 'request' : 'requests'} waiting for its answers (gateway.maxSessionsPerAgent is ${cap}); answer or abandon one first`;
      await this.record(call.caller, call.method, call.resource, 'deny', ['limit'], reason, call.started, call.correlationId, call.details, call.decision);
      // A tool reports its refusals as a result the model can read; a prompt or a resource has no such result.
      if (call.method === 'tools/call') return { isError: true, content: [{ type: 'text', text: `Refused by Gatehouse: ${reason}` }] };
      throw new ProtocolError(-32603, `Refused by Gatehouse: ${reason}`);
    }
    const relay = new InputRelay(call.caller.session);
    const progress = options.progressToken !== undefined ? { progressToken: options.progressToken } : {};
    // Its questions are scanned on their way into input_required here; its answers when they come (resumeCall).
    const questions = this.screeningRelay(relay.binding, call.caller, call.method, call.resource, call.correlationId, false);
    relay.follow(connection.request(call.method, params, questions, { signal: relay.signal, ...progress }));
    return this.serveRound({ ...call, relay, owner, rounds: 0 }, round, options.signal);
  }

  /**
   * Serves one client request of a relayed call: its final result, or `input_required` with the upstream's
   * questions while the call stays parked, its request state bound to this caller, method, name (or URI) and
   * argument digest.
   */
  private async serveRound(call: ParkedCall, round: CallBinding, signal: AbortSignal | undefined): Promise<Result> {
    const step = await call.relay.next(round, signal);
    if (step.kind === 'failed') throw await this.failed(call, call.decision.rules, step.error);
    if (step.kind === 'done') {
      // The final result is screened and recorded exactly as the method's unrelayed result would be.
      if (call.method === 'tools/call') return this.finishCall(call.caller, call.resource, call.decision, call.details, call.started, call.correlationId, step.result as CallToolResult);
      return this.finishForward(call, step.result);
    }
    call.rounds += 1;
    call.details.inputRounds = call.rounds;
    const nonce = randomBytes(16).toString('base64url');
    this.parked.set(nonce, call);
    call.timer = setTimeout(() => void this.abandon(nonce, call), call.waitMs);
    call.timer.unref();
    const methods = Object.values(step.requests).map((request) => request.method);
    await this.record(call.caller, `${call.method}.input-required`, call.resource, 'info', [], `the upstream asks the client: ${methods.join(', ')}`, process.hrtime.bigint(), call.correlationId, {
      argsDigest: call.argsDigest,
      round: call.rounds,
      requests: methods,
    });
    return inputRequired({
      inputRequests: step.requests as Parameters<typeof inputRequired>[0]['inputRequests'],
      requestState: this.states.sign(PARKED_STATE, this.parkedBinding(call.caller, call.method, call.name, call.argsDigest), Date.now() + call.waitMs, nonce),
    }) as unknown as Result;
  }

  /**
   * A retry of a parked call: its state must be genuine, unexpired, unused and bound to this caller, method,
   * name (or URI) and argument digest; any other state gets one error, so a forged, replayed or someone else's
   * state tells nothing. The client's answers are scanned like any other content bound upstream.
   */
  private async resumeCall(
    caller: Caller,
    method: RelayedMethod,
    name: string,
    argsDigest: string,
    state: string,
    binding: CallBinding,
    signal: AbortSignal | undefined,
  ): Promise<Result> {
    const started = process.hrtime.bigint();
    const checked = this.states.check(PARKED_STATE, state, this.parkedBinding(caller, method, name, argsDigest));
    const call = checked && this.parked.get(checked.nonce);
    if (!checked || !call) {
      await this.record(caller, method, `?/${name}`, 'deny', [], 'a retry whose request state is unknown, expired, used, or not this caller\'s', started, newCorrelationId(), { argsDigest });
      throw new ProtocolError(-32602, `Invalid requestState: it is unknown, expired or already used; ${START_OVER[method]}`);
    }
    this.parked.delete(checked.nonce);
    clearTimeout(call.timer);
    const answered: string[] = [];
    const dlp: Record<string, unknown>[] = [];
    let withheld = false;
    for (const answer of call.relay.answers((key) => binding.multiRound?.response(key))) {
      answered.push(answer.method);
      const screened = this.screen(answer.value);
      if (screened.verdict && screened.verdict.action !== 'none') dlp.push({ method: answer.method, ...dlpDetails(screened.verdict) });
      if (screened.verdict?.effect === 'deny') {
        withheld = true;
        call.relay.refuse(answer.key, new ProtocolError(-32603, `Withheld by Gatehouse: the client's answer contained a secret (${screened.verdict.reason})`));
      } else {
        call.relay.reply(answer.key, screened.value as Result);
      }
    }
    const reason = withheld ? 'an answer of the client was withheld from the upstream: it contained a secret' : `the client answered: ${answered.join(', ') || 'nothing'}`;
    await this.record(caller, `${method}.input-response`, call.resource, withheld ? 'deny' : 'allow', withheld ? ['dlp'] : [], reason, started, call.correlationId, {
      argsDigest,
      round: call.rounds,
      answered,
      ...(dlp.length > 0 ? { dlp } : {}),
    });
    return this.serveRound(call, binding, signal);
  }

  /** A parked call whose client never came back: cancelled upstream, and recorded. */
  private async abandon(nonce: string, call: ParkedCall): Promise<void> {
    if (this.parked.get(nonce) !== call) return;
    this.parked.delete(nonce);
    const reason = `the client did not answer the upstream's questions within ${call.waitMs} ms; the call was cancelled upstream`;
    call.relay.cancel(reason);
    await this.record(call.caller, call.method, call.resource, 'error', call.decision.rules, reason, call.started, call.correlationId, { ...call.details, abandoned: true }, call.decision);
  }

  private parkedCallsOf(owner: string): number {
    let count = 0;
    for (const call of this.parked.values()) if (call.owner === owner) count += 1;
    return count;
  }

  /** What a parked call's request state is bound to: the principal, the method, the name or URI, and the argument digest. */
  private parkedBinding(caller: Caller, method: RelayedMethod, name: string, argsDigest: string): unknown[] {
    return [...principalBinding(caller), method, name, argsDigest];
  }

  /**
   * Asks a person to approve this exact call. A 2025-era client is sent `elicitation/create` within the call
   * on its own session. A 2026-07-28 request is answered `input_required`, and the retry must echo a request
   * state that binds the answer to this caller, tool and argument digest (see approvalState).
   */
  private async askApproval(
    caller: Caller,
    name: string,
    args: Record<string, unknown>,
    argsDigest: string,
    binding: CallBinding | undefined,
    correlationId: string,
  ): Promise<{ ok: true } | { ok: false; reason: string } | { ok: 'ask'; result: CallToolResult }> {
    const started = process.hrtime.bigint();
    if (!binding) return { ok: false, reason: 'this call needs a person\'s approval and the client cannot be asked' };
    const message = `Gatehouse: approve the call to ${name} with these arguments?\n${JSON.stringify(args, null, 2).slice(0, 4000)}\n(${argsDigest})`;
    const requestedSchema = {
      type: 'object' as const,
      properties: { approve: { type: 'boolean' as const, title: `Run ${name} with exactly these arguments` } },
      required: ['approve'],
    };
    let answer: ElicitAnswer | undefined;
    let outcome: { ok: true } | { ok: false; reason: string };
    if (binding.multiRound) {
      const response = binding.multiRound.response(APPROVAL_KEY) as ElicitAnswer | undefined;
      const state = binding.multiRound.requestState;
      if (response === undefined || !this.spendApprovalState(state, caller, name, argsDigest)) {
        if (response !== undefined) {
          await this.record(caller, 'approval', name, 'deny', [], 'the approval given was already used, expired, or was asked for another call or caller', started, correlationId, { argsDigest });
        }
        return {
          ok: 'ask',
          result: inputRequired({
            inputRequests: { [APPROVAL_KEY]: inputRequired.elicit({ message, requestedSchema }) },
            requestState: this.states.sign('approval', this.approvalBinding(caller, name, argsDigest), Date.now() + APPROVAL_TTL_MS, randomBytes(16).toString('base64url')),
          }) as unknown as CallToolResult,
        };
      }
      answer = response;
    }
    try {
      answer ??= (await binding.send({ method: 'elicitation/create', params: { mode: 'form', message, requestedSchema } })) as ElicitAnswer;
      outcome = answer?.action === 'accept' && answer.content?.approve === true ? { ok: true } : { ok: false, reason: 'a person declined the call' };
    } catch (error) {
      outcome = { ok: false, reason: `this call needs a person's approval and the client could not be asked (${this.forRecord(describeError(error))})` };
    }
    await this.record(caller, 'approval', name, outcome.ok ? 'allow' : 'deny', [], outcome.ok ? 'approved by a person' : outcome.reason, started, correlationId, {
      argsDigest,
    });
    return outcome;
  }

  /**
   * What an approval's request state is bound to: the principal (agent, user, teams), the session when the
   * caller has one (a 2026-07-28 request has none: each request stands alone), the tool and the argument
   * digest. Its nonce is spent on first use, so one person's answer runs one call, once, for the caller it
   * was asked for.
   */
  private approvalBinding(caller: Caller, name: string, argsDigest: string): unknown[] {
    return [...principalBinding(caller), caller.stateless ? null : caller.session, name, argsDigest];
  }

  /** Whether a retry's state approves this call for this caller; a valid state is spent, so it approves once. */
  private spendApprovalState(state: string | undefined, caller: Caller, name: string, argsDigest: string): boolean {
    const checked = this.states.check('approval', state, this.approvalBinding(caller, name, argsDigest));
    if (!checked) return false;
    const { nonce, expires } = checked;
    const now = Date.now();
    // Spent nonces are kept until their state expires; they were spent in about the order they expire.
    for (const [spent, until] of this.spentApprovals) {
      if (until >= now) break;
      this.spentApprovals.delete(spent);
    }
    if (this.spentApprovals.has(nonce)) return false;
    this.spentApprovals.set(nonce, expires);
    return true;
  }

  async getPrompt(
    caller: Caller,
    name: string,
    args: Record<string, string> | undefined,
    binding: CallBinding | undefined,
    options: { signal?: AbortSignal } = {},
  ): Promise<GetPromptResult> {
    const started = process.hrtime.bigint();
    const correlationId = newCorrelationId();
    const catalog = await this.loadCatalog();
    const entry = catalog.prompts.get(name);
    const visible = entry !== undefined && this.canSeePrompt(caller, catalog, entry.exposed);
    if (!entry || !visible) {
      await this.record(caller, 'prompts/get', `?/${name}`, 'deny', [], 'no such prompt for this caller', started, correlationId, { argsDigest: digestOf(args ?? {}) });
      throw unknown('prompt', name);
    }
    const server = entry.upstream.name;
    const resource = `${server}/${entry.original}`;
    const decision = this.decide(caller, { server, prompt: entry.original, args: args ?? {} });
    const argsDigest = digestOf(args ?? {});
    const details: Record<string, unknown> = { argsDigest };
    if (!isAllowed(decision)) {
      await this.record(caller, 'prompts/get', resource, 'deny', decision.rules, decision.reason, started, correlationId, details, decision);
      throw new ProtocolError(-32602, `Denied by Gatehouse policy: ${decision.reason}`);
    }
    const call = { caller, method: 'prompts/get' as const, name, resource, argsDigest, decision, details, started, correlationId, waitMs: entry.upstream.timeouts.inputMs };
    const sent = args && (await this.screenOutbound(call, 'the prompt\'s arguments', args));
    const params = { name: entry.original, ...(sent ? { arguments: sent } : {}) };
    return (await this.forward(call, this.connectionFor(entry.upstream, caller), params, binding, options.signal)) as GetPromptResult;
  }

  /** The upstream that serves a URI: a listed resource, else the first template (in name order) that matches. */
  private async owner(uri: string): Promise<{ upstream: Upstream; rule: string } | undefined> {
    const catalog = await this.loadCatalog();
    const listed = catalog.resources.get(uri);
    if (listed) return { upstream: listed.upstream, rule: uri };
    for (const template of catalog.templates) {
      try {
        if (new UriTemplate(template.original).match(uri)) return { upstream: template.upstream, rule: template.original };
      } catch {
        // A template the SDK cannot parse matches nothing.
      }
    }
    return undefined;
  }

  async readResource(caller: Caller, uri: string, binding: CallBinding | undefined, options: { signal?: AbortSignal } = {}): Promise<ReadResourceResult> {
    const started = process.hrtime.bigint();
    const correlationId = newCorrelationId();
    const owner = await this.owner(uri);
    const decision = owner ? this.decide(caller, { server: owner.upstream.name, resource: uri }) : undefined;
    const recorded = this.forRecord(uri);
    if (!owner || !decision || !isAllowed(decision)) {
      await this.record(caller, 'resources/read', recorded, 'deny', decision?.rules ?? [], decision?.reason ?? 'no such resource for this caller', started, correlationId, {}, decision);
      throw unknown('resource', uri);
    }
    // A read has no arguments: its request state is bound to the URI (as the client names it) and the digest
    // of none.
    const call = {
      caller,
      method: 'resources/read' as const,
      name: uri,
      resource: `${owner.upstream.name}/${recorded}`,
      argsDigest: digestOf({}),
      decision,
      details: {},
      started,
      correlationId,
      waitMs: owner.upstream.timeouts.inputMs,
    };
    // A template's URI carries what the client filled in: a secret there leaves as surely as in arguments.
    const sent = await this.screenOutbound(call, 'the resource URI', { uri }, false);
    return (await this.forward(call, this.connectionFor(owner.upstream, caller), sent, binding, options.signal)) as ReadResourceResult;
  }

  /**
   * Sends a get or read upstream, scans what comes back, and records the outcome once. The upstream's
   * questions to the client are relayed as within a tools/call: through `input_required` to a 2026-07-28
   * caller (whose retry resumes the parked request), on the client's own request to anyone else, and
   * scanned both ways either way.
   */
  private async forward(call: RelayStart, connection: Upstream, params: Record<string, unknown>, binding: CallBinding | undefined, signal: AbortSignal | undefined): Promise<Result> {
    // A get or a read holds upstream work as a call does, and takes a place among the agent's running calls.
    const refuse = async (reason: string): Promise<Result> => {
      await this.record(call.caller, call.method, call.resource, 'deny', ['limit'], reason, call.started, call.correlationId, call.details, call.decision);
      throw new ProtocolError(-32603, `Refused by Gatehouse: ${reason}`);
    };
    return this.asRunningCall(call.caller, refuse, async () => {
      const state = binding?.multiRound?.requestState;
      if (binding && call.caller.stateless && state?.startsWith(`${PARKED_STATE}.`)) return this.resumeCall(call.caller, call.method, call.name, call.argsDigest, state, binding, signal);
      if (binding?.multiRound) return this.startRelayed(call, connection, params, binding, signal ? { signal } : {});
      let result: Result;
      try {
        const relay = binding && this.screeningRelay(binding, call.caller, call.method, call.resource, call.correlationId);
        result = await connection.request(call.method, params, relay, signal ? { signal } : {});
      } catch (error) {
        throw await this.failed(call, call.decision.rules, error);
      }
      return this.finishForward(call, result);
    });
  }

  /** Scans a get's or read's result and records its outcome once. */
  private async finishForward(call: RelayStart, result: Result): Promise<Result> {
    const { caller, method, resource, decision, details, started, correlationId } = call;
    const what = method === 'prompts/get' ? 'prompt' : 'resource';
    const screened = this.screen(result);
    const recorded = screened.verdict && screened.verdict.action !== 'none' ? { ...details, dlp: dlpDetails(screened.verdict) } : details;
    if (screened.verdict?.effect === 'deny') {
      await this.record(caller, method, resource, 'deny', ['dlp'], `${what} ${screened.verdict.reason}`, started, correlationId, recorded, decision);
      throw new ProtocolError(-32603, `Withheld by Gatehouse: the ${what} contained a secret (${screened.verdict.reason})`);
    }
    await this.record(caller, method, resource, decision.effect, decision.rules, decision.reason, started, correlationId, recorded, decision);
    return screened.value;
  }

  /**
   * Subscribes a session to a resource it may read. The upstream is subscribed once per URI, however many
   * sessions ask; it is unsubscribed when the last one goes.
   */
  async subscribe(caller: Caller, uri: string, notify: (uri: string) => void): Promise<void> {
    const started = process.hrtime.bigint();
    const correlationId = newCorrelationId();
    const owner = await this.owner(uri);
    const decision = owner ? this.decide(caller, { server: owner.upstream.name, resource: uri }) : undefined;
    const recorded = this.forRecord(uri);
    if (!owner || !decision || !isAllowed(decision)) {
      await this.record(caller, 'resources/subscribe', recorded, 'deny', decision?.rules ?? [], decision?.reason ?? 'no such resource for this caller', started, correlationId, {}, decision);
      throw unknown('resource', uri);
    }
    const request = { caller, method: 'resources/subscribe', resource: `${owner.upstream.name}/${recorded}`, started, correlationId, details: {}, decision };
    const sent = await this.screenOutbound(request, 'the resource URI', { uri }, false);
    // A session's own connection (isolation: session) holds its subscriptions, and its updates go to it alone.
    const connection = this.connectionFor(owner.upstream, caller);
    const key = this.subscriptionKey(connection, uri);
    let mine = this.subscribedBy.get(caller.session);
    if (!mine) this.subscribedBy.set(caller.session, (mine = new Set()));
    if (!mine.has(key) && mine.size >= MAX_SUBSCRIPTIONS_PER_SESSION) {
      const reason = `this session already holds ${MAX_SUBSCRIPTIONS_PER_SESSION} subscriptions; unsubscribe from one first`;
      await this.record(caller, 'resources/subscribe', request.resource, 'deny', ['limit'], reason, started, correlationId, request.details, decision);
      throw new ProtocolError(-32603, `Refused by Gatehouse: ${reason}`);
    }
    // Counted from now: subscriptions asked for at once cannot slip past the limit together.
    mine.add(key);
    let sessions = this.subscriptions.get(key);
    if (!sessions) {
      sessions = new Map();
      this.subscriptions.set(key, sessions);
      try {
        await connection.request('resources/subscribe', sent, undefined);
      } catch (error) {
        this.subscriptions.delete(key);
        mine.delete(key);
        throw this.screenError(error);
      }
    }
    sessions.set(caller.session, notify);
    await this.record(caller, 'resources/subscribe', request.resource, decision.effect, decision.rules, decision.reason, started, correlationId, request.details, decision);
  }

  async unsubscribe(caller: Caller, uri: string): Promise<void> {
    const mine = this.subscribedBy.get(caller.session);
    for (const upstream of this.upstreams.values()) {
      // Over the shared connection, or the session's own; one that has stopped is not started again.
      const own = this.sessionConnections.get(`${upstream.name}\n${caller.session}`);
      const ways: [string, Upstream | undefined][] = [
        [`${upstream.name}\n${uri}`, upstream],
        [`${upstream.name}@${caller.session}\n${uri}`, own],
      ];
      for (const [key, connection] of ways) {
        mine?.delete(key);
        const sessions = this.subscriptions.get(key);
        if (!sessions || !sessions.delete(caller.session) || sessions.size > 0) continue;
        this.subscriptions.delete(key);
        await connection?.request('resources/unsubscribe', { uri }, undefined).catch(() => undefined);
      }
    }
    if (mine?.size === 0) this.subscribedBy.delete(caller.session);
  }

  /**
   * A subscription's key: `<upstream>\n<uri>` over the shared connection (one upstream subscription serves every
   * session), `<upstream>@<session>\n<uri>` over a session's own. Upstream names hold no "@" or newline.
   */
  private subscriptionKey(connection: Upstream, uri: string): string {
    const session = this.connectionSession.get(connection);
    return `${connection.name}${session === undefined ? '' : `@${session}`}\n${uri}`;
  }

  /**
   * The connection a caller's request goes over: the shared one, or for an `isolation: session` upstream the
   * caller's own (started on first use, stopped when the session ends). Lists always come from the shared one.
   */
  private connectionFor(upstream: Upstream, caller: Caller): Upstream {
    // A stateless request has no session end at which its own connection could be stopped.
    if (upstream.settings.isolation !== 'session' || caller.stateless) return upstream;
    const key = `${upstream.name}\n${caller.session}`;
    let own = this.sessionConnections.get(key);
    if (!own) {
      if (!caller.client) return upstream;
      // What the server asks the session outside a call is screened both ways, as within one.
      own = upstream.sibling(this.screeningRelay(caller.client, caller, 'upstream', upstream.name, newCorrelationId()));
      this.sessionConnections.set(key, own);
      this.connectionSession.set(own, caller.session);
    }
    return own;
  }

  /** The client's roots changed: its own upstream connections hear it (shared ones never see roots). */
  async rootsChanged(caller: Caller): Promise<void> {
    for (const [key, own] of this.sessionConnections) {
      if (key.endsWith(`\n${caller.session}`)) await own.notify('notifications/roots/list_changed');
    }
  }

  /** Drops every subscription and own connection of a session that has ended, and what it was told or asked about tasks. */
  async endSession(session: string): Promise<void> {
    for (const task of this.tasks.ownedBy((owner) => owner.session === session)) this.silence(task);
    for (const upstream of this.upstreams.values()) upstream.forgetSession(session);
    for (const [key, own] of this.sessionConnections) {
      if (!key.endsWith(`\n${session}`)) continue;
      this.sessionConnections.delete(key);
      await own.stop('stopped');
    }
    for (const key of [...(this.subscribedBy.get(session) ?? [])]) await this.unsubscribe({ session }, key.slice(key.indexOf('\n') + 1));
    this.subscribedBy.delete(session);
  }

  private resourceUpdated(upstream: Upstream, uri: string): void {
    const sessions = this.subscriptions.get(this.subscriptionKey(upstream, uri));
    if (!sessions) return;
    for (const notify of sessions.values()) notify(uri);
  }

  async complete(caller: Caller, params: Record<string, unknown>, binding: CallBinding | undefined): Promise<Result> {
    const started = process.hrtime.bigint();
    const correlationId = newCorrelationId();
    const ref = params.ref as { type?: string; name?: string; uri?: string } | undefined;
    // A completion names a prompt or template: one the caller may not see is refused, and recorded, as a get or read of it is.
    const refuse = async (kind: 'prompt' | 'resource', name: string, hidden: boolean): Promise<never> => {
      await this.record(caller, 'completion/complete', `?/${this.forRecord(name)}`, 'deny', [], `no such ${kind} for this caller`, started, correlationId, hidden ? { hidden } : {});
      throw unknown(kind, name);
    };
    let target: { upstream: Upstream; resource: string; ref: Record<string, unknown> };
    if (ref?.type === 'ref/prompt' && typeof ref.name === 'string') {
      const catalog = await this.loadCatalog();
      const entry = catalog.prompts.get(ref.name);
      if (!entry || !this.canSeePrompt(caller, catalog, entry.exposed)) return refuse('prompt', ref.name, entry !== undefined);
      target = { upstream: entry.upstream, resource: `${entry.upstream.name}/${entry.original}`, ref: { ...ref, name: entry.original } };
    } else if (ref?.type === 'ref/resource' && typeof ref.uri === 'string') {
      const catalog = await this.loadCatalog();
      const template = catalog.templates.find((t) => t.original === ref.uri);
      if (!template || !isAllowed(this.decide(caller, { server: template.upstream.name, resource: template.original }))) {
        return refuse('resource', ref.uri, template !== undefined);
      }
      target = { upstream: template.upstream, resource: `${template.upstream.name}/${template.original}`, ref };
    } else {
      throw new ProtocolError(-32602, 'completion/complete needs a ref of type ref/prompt or ref/resource');
    }
    let capabilities;
    try {
      capabilities = (await target.upstream.connection()).getServerCapabilities();
    } catch (error) {
      throw this.screenError(error);
    }
    if (!capabilities?.completions) return { completion: { values: [], hasMore: false } };
    const request = { caller, method: 'completion/complete', resource: target.resource, started, correlationId, details: {} };
    // What the client has typed so far, the arguments it already gave and anything else it sent (its _meta).
    const { ref: _ref, ...rest } = params;
    const sent = await this.screenOutbound(request, 'the text to complete', rest);
    // The upstream's own requests to the client while it completes are scanned both ways, as within a call.
    const relay = binding && this.screeningRelay(binding, caller, 'completion/complete', request.resource, request.correlationId);
    let result: Result;
    try {
      result = await this.connectionFor(target.upstream, caller).request('completion/complete', { ...sent, ref: target.ref }, relay);
    } catch (error) {
      throw this.screenError(error);
    }
    // The values offered are the upstream's words, and reach the client's model as a result's do.
    const screened = this.screen(result);
    if (!screened.verdict || screened.verdict.action === 'none') return result;
    const withheld = screened.verdict.effect === 'deny';
    await this.record(caller, 'completion/complete', request.resource, withheld ? 'deny' : 'allow', ['dlp'], `completion ${screened.verdict.reason}`, request.started, request.correlationId, {
      resultDlp: dlpDetails(screened.verdict),
    });
    if (withheld) throw new ProtocolError(-32603, `Withheld by Gatehouse: the completion contained a secret (${screened.verdict.reason})`);
    return screened.value;
  }

  // ---- content defence ---------------------------------------------------------------------------

  /**
   * Scans what a get, read or completion sends upstream (a prompt's arguments, a URI, the text being
   * completed), as a tool's arguments are scanned: `deny` refuses the request and records it, `redact` sends
   * the redacted copy. `what` names it in the error, e.g. "the resource URI".
   */
  private async screenOutbound<T>(
    request: RecordedRequest,
    what: string,
    value: T,
    redactable = true,
  ): Promise<T> {
    const screened = this.screen(value);
    if (!screened.verdict || screened.verdict.action === 'none') return value;
    request.details.requestDlp = dlpDetails(screened.verdict);
    // A redacted URI names another resource: reading or watching that instead would surprise everyone.
    const refused = screened.verdict.effect === 'deny' || (screened.verdict.effect === 'redact' && !redactable);
    if (refused) {
      const { caller, method, resource, started, correlationId, details, decision } = request;
      const unredactable = screened.verdict.effect === 'redact' ? `, and ${what} cannot be redacted` : '';
      await this.record(caller, method, resource, 'deny', ['dlp'], `${what}: ${screened.verdict.reason}${unredactable}`, started, correlationId, details, decision);
      throw new ProtocolError(-32602, `Blocked by Gatehouse: ${what} holds a secret (${screened.verdict.reason})${unredactable}`);
    }
    return screened.value;
  }

  /**
   * A request the upstream failed: recorded once (its error text redacted, what the scan found in it noted),
   * and the error to give the client, screened (see screenError).
   */
  private async failed(request: RecordedRequest, rules: string[], error: unknown): Promise<ProtocolError> {
    const failure = this.screenError(error, request.details);
    await this.record(request.caller, request.method, request.resource, 'error', rules, this.forRecord(describeError(error)), request.started, request.correlationId, request.details, request.decision);
    return failure;
  }

  /**
   * An upstream's error on its way to the client: its message and data are the upstream's words (a failed
   * connection string, a token it was refused with) and reach the client's model as a result's do, so they
   * are scanned like one. A secret is withheld (the error then says only that) or redacted.
   */
  private screenError(error: unknown, details?: Record<string, unknown>): ProtocolError {
    const relayed = asProtocolError(error);
    const screened = this.screen({ message: relayed.message, data: relayed.data });
    // What was found goes into the request's record, whatever the action (the record's text is redacted anyway).
    if (details && screened.verdict && screened.verdict.action !== 'none') details.errorDlp = dlpDetails(screened.verdict);
    if (!screened.verdict || screened.verdict.effect === 'allow') return relayed;
    if (screened.verdict.effect === 'deny') return new ProtocolError(relayed.code, `Withheld by Gatehouse: the upstream's error contained a secret (${screened.verdict.reason})`);
    return new ProtocolError(relayed.code, screened.value.message, screened.value.data);
  }

  /** Text for an audit record (a resource, an error): any secret in it redacted, whatever the policy's action. */
  private forRecord(text: string): string {
    const scanner = this.options.scanner;
    if (!scanner) return text;
    const outcome = scanner.check(text);
    return outcome.findings.length > 0 ? scanner.redact(text, outcome.findings) : text;
  }

  /** Scans content against the policy's DLP settings: `deny` stops it, `redact` returns a redacted copy. */
  private screen<T>(value: T): Screened<T> {
    const scanner = this.options.scanner;
    if (!scanner || value === undefined) return { value, verdict: undefined };
    const verdict = dlpVerdict(scanner.checkJson(value), this.options.policy.current.dlp, 'mcp');
    // The scan's own findings: no second scan (nor a second scan-latency observation) of the same value.
    if (verdict.effect === 'redact') return { value: scanner.redactJson(value, verdict.findings), verdict };
    return { value, verdict };
  }

  // ---- audit -------------------------------------------------------------------------------------

  private async recordList(caller: Caller, action: string, started: bigint, shown: number, total: number, catalog: Catalog, withheld = 0): Promise<void> {
    const details: Record<string, unknown> = { shown, hidden: total - shown };
    // Left out of the list because their definitions hold a secret (counted among the hidden too).
    if (withheld > 0) details.withheld = withheld;
    if (catalog.unavailable.length > 0) details.unavailable = catalog.unavailable;
    if (catalog.collisions.length > 0) details.collisions = catalog.collisions.length;
    await this.record(caller, action, '*', 'allow', [], `${shown} of ${total} shown`, started, newCorrelationId(), details);
  }

  private async record(
    caller: Caller,
    action: string,
    resource: string,
    effect: AuditRecord['effect'],
    rules: string[],
    reason: string,
    started: bigint,
    correlationId: string,
    details: Record<string, unknown>,
    decision?: Decision,
  ): Promise<void> {
    const engine = this.options.policy.current;
    const principal: AuditRecord['principal'] = { session: caller.session };
    if (caller.agent !== undefined) principal.agent = caller.agent;
    if (caller.teams !== undefined) principal.teams = caller.teams;
    if (caller.user !== undefined) principal.user = caller.user;
    const record: AuditRecord = {
      v: 1,
      time: new Date().toISOString(),
      node: this.options.node,
      principal,
      surface: 'mcp',
      action,
      resource,
      effect,
      rules,
      reason,
      latencyUs: Number((process.hrtime.bigint() - started) / 1000n),
      correlationId,
      policy: { version: engine.version, digest: engine.digest },
      details: decision ? { ...details, decisionUs: decision.latencyUs } : details,
    };
    const appended = this.options.audit.append(record);
    if (!this.options.awaitAudit) {
      // The reply does not wait for the group commit; a failed append stops every later request instead.
      appended.catch((error: unknown) => {
        this.auditFailure ??= error;
      });
      return;
    }
    try {
      await appended;
    } catch (error) {
      this.auditFailure ??= error;
      throw new ProtocolError(-32603, `the audit log cannot be written (${describeError(error)}); the request was refused`);
    }
  }

  /** Records an event that is not a decision (a crash, garbage from an upstream, a refused relay). */
  async recordEvent(server: string, kind: string, message: string, effect?: AuditRecord['effect'], details?: Record<string, unknown>): Promise<void> {
    const engine = this.options.policy.current;
    await this.options.audit
      .append({
        v: 1,
        time: new Date().toISOString(),
        node: this.options.node,
        principal: {},
        surface: 'mcp',
        action: kind.startsWith('pin.') ? kind : kind === 'refused' ? 'pin.refused' : kind === 'credential' ? 'credential.inject' : `upstream.${kind}`,
        resource: server,
        effect: effect ?? (kind === 'refused' ? 'deny' : kind === 'garbage' || kind === 'crash' || kind === 'relay-refused' ? 'error' : 'info'),
        rules: [],
        // An upstream's own words (a garbage line, its last stderr line) may hold a secret.
        reason: this.forRecord(message),
        latencyUs: 0,
        correlationId: newCorrelationId(),
        policy: { version: engine.version, digest: engine.digest },
        ...(details ? { details } : {}),
      })
      .catch(() => undefined);
  }
}

function dlpDetails(verdict: DlpVerdict): Record<string, unknown> {
  return { action: verdict.action, reason: verdict.reason, findings: findingsForAudit(verdict.findings) };
}

function stripProgressToken(meta: Record<string, unknown> | undefined): Record<string, unknown> | undefined {
  if (!meta) return undefined;
  const { progressToken: _dropped, ...rest } = meta;
  return Object.keys(rest).length > 0 ? rest : undefined;
}

/** Freezes a value and everything in it: a tool definition, once in the catalog, never changes. */
function deepFreeze<T>(value: T): T {
  if (typeof value === 'object' && value !== null && !Object.isFrozen(value)) {
    Object.freeze(value);
    for (const inner of Object.values(value)) deepFreeze(inner);
  }
  return value;
}

export function describeError(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

/** Upstream failures reach the client as JSON-RPC errors with the upstream's code when it gave one. */
function asProtocolError(error: unknown): ProtocolError {
  if (error instanceof ProtocolError) return error;
  const code = typeof (error as { code?: unknown })?.code === 'number' ? ((error as { code: number }).code) : -32603;
  return new ProtocolError(code >= -32768 && code <= -32000 ? code : -32603, describeError(error));
}
