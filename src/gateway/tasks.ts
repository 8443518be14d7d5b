/**
 * MCP tasks (SEP-1686, protocol 2025-11-25) as the gateway relays them. A task id crosses the gateway
 * only as an id the gateway made: random, so no caller can guess another's, and mapped back to the
 * upstream's (or the client's) own id on the way through. An id the caller does not own gets the same
 * error as an id that never existed.
 */
import { randomBytes } from 'node:crypto';
import { ProtocolError, type Result, type StandardSchemaV1 } from '@modelcontextprotocol/client';

export const RELATED_TASK = 'io.modelcontextprotocol/related-task';

/**
 * What a tools/call result, or a task's answer, must be on its way through: an object. The front checks every
 * tools/call result before it leaves (direct-calls.ts on a session, the SDK server on the other paths), so the
 * SDK client's own check in upstream.ts was a second full pass; and without a schema the client also runs a probe validation of
 * `undefined` on every request, which fails and formats a zod error each time.
 */
export const RELAYED_RESULT: StandardSchemaV1<unknown, Result> = {
  '~standard': {
    version: 1,
    vendor: 'gatehouse',
    validate: (value) =>
      typeof value === 'object' && value !== null && !Array.isArray(value) ? { value: value as Result } : { issues: [{ message: 'the result is not an object' }] },
  },
};

/** A new task id: 128 random bits. */
export function newTaskId(): string {
  return `task-${randomBytes(16).toString('base64url')}`;
}

/** The error for a task id the caller may not see, identical whether the task exists or not. */
export function taskNotFound(taskId: unknown): ProtocolError {
  return new ProtocolError(-32602, `Task not found: ${typeof taskId === 'string' ? taskId.slice(0, 100) : ''}`);
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/** Whether request params ask for the request to run as a task. */
export function isTaskAugmented(params: Record<string, unknown> | undefined): boolean {
  return isObject(params?.task);
}

/** The task id in a CreateTaskResult, or undefined when the receiver ran the request at once. */
export function createdTaskId(result: unknown): string | undefined {
  const task = isObject(result) ? result.task : undefined;
  return isObject(task) && typeof task.taskId === 'string' ? task.taskId : undefined;
}

/** Whether a task status is one a task never leaves. */
export function isTerminalStatus(status: unknown): boolean {
  return status === 'completed' || status === 'failed' || status === 'cancelled';
}

/** The upstream task a message says it belongs to (`_meta` related-task), if any. */
export function relatedTaskId(params: Record<string, unknown> | undefined): string | undefined {
  const related = isObject(params?._meta) ? params._meta[RELATED_TASK] : undefined;
  return isObject(related) && typeof related.taskId === 'string' ? related.taskId : undefined;
}

/**
 * A copy of a task message (a Task, a CreateTaskResult, a task status notification's params, a result or
 * request with related-task metadata) in which the task id `from` reads `to`. Nothing else changes.
 */
export function renameTask<T>(value: T, from: string, to: string): T {
  if (!isObject(value)) return value;
  const out: Record<string, unknown> = { ...value };
  if (out.taskId === from) out.taskId = to;
  if (isObject(out.task) && out.task.taskId === from) out.task = { ...out.task, taskId: to };
  if (relatedTaskId(out) === from) {
    const meta = out._meta as Record<string, unknown>;
    out._meta = { ...meta, [RELATED_TASK]: { ...(meta[RELATED_TASK] as Record<string, unknown>), taskId: to } };
  }
  return out as T;
}

/** A task a client created through the gateway on an upstream (a task-augmented tools/call). */
export interface ServerTask<Connection, Owner> {
  id: string;
  connection: Connection;
  upstreamId: string;
  /** Who may see and touch it. */
  owner: Owner;
  /** Where its notifications (status, progress, log messages naming it) go, until it ends or its session does. */
  notify?: (notification: { method: string; params?: Record<string, unknown> }) => Promise<void>;
  /** Its notifications withheld for holding a secret: only the first few are recorded one by one. */
  withheld?: number;
  server: string;
  /** The tool's name at the upstream and as the client called it. */
  tool: string;
  exposed: string;
  /** The rules that allowed the call that created it. */
  rules: string[];
  expiresAt: number;
}

/** Tasks kept this long past their ttl (or from creation when the upstream gave none). */
const KEEP_MS = 60 * 60 * 1000;
/** Tasks kept per owner: past this its oldest is forgotten, as if expired, so no caller grows the table without bound. */
const MAX_TASKS_PER_OWNER = 1000;

/** The gateway's ids for upstream tasks, with their owners. */
export class TaskTable<Connection, Owner> {
  private readonly byId = new Map<string, ServerTask<Connection, Owner>>();
  private readonly byUpstream = new Map<Connection, Map<string, string>>();
  /** Each owner's task ids, oldest first. */
  private readonly byOwner = new Map<string, Set<string>>();

  constructor(
    /** Names an owner: its tasks count against one MAX_TASKS_PER_OWNER. */
    private readonly ownerKey: (owner: Owner) => string,
    /** Hears of a task forgotten (expired, or its owner's oldest past the limit): nothing more is relayed for it. */
    private readonly forgotten: (task: ServerTask<Connection, Owner>) => void,
  ) {}

  /** Records a task an upstream created and returns it with its gateway id. */
  add(task: Omit<ServerTask<Connection, Owner>, 'id' | 'expiresAt'>, ttl: unknown): ServerTask<Connection, Owner> {
    this.sweep();
    const entry = { ...task, id: newTaskId(), expiresAt: Date.now() + KEEP_MS + (typeof ttl === 'number' && ttl > 0 ? Math.min(ttl, 7 * 24 * KEEP_MS) : 0) };
    const key = this.ownerKey(task.owner);
    let owned = this.byOwner.get(key);
    if (!owned) this.byOwner.set(key, (owned = new Set()));
    if (owned.size >= MAX_TASKS_PER_OWNER) this.forget(this.byId.get(owned.values().next().value!)!);
    owned.add(entry.id);
    this.byId.set(entry.id, entry);
    let ids = this.byUpstream.get(task.connection);
    if (!ids) this.byUpstream.set(task.connection, (ids = new Map()));
    ids.set(task.upstreamId, entry.id);
    return entry;
  }

  /** The task with this gateway id if `owns` says its owner is the caller; else undefined, as for no task. */
  owned(id: unknown, owns: (owner: Owner) => boolean): ServerTask<Connection, Owner> | undefined {
    const entry = typeof id === 'string' ? this.byId.get(id) : undefined;
    return entry && entry.expiresAt > Date.now() && owns(entry.owner) ? entry : undefined;
  }

  /** The live task an upstream knows by `upstreamId`. */
  ofUpstream(connection: Connection, upstreamId: string): ServerTask<Connection, Owner> | undefined {
    const id = this.byUpstream.get(connection)?.get(upstreamId);
    const entry = id === undefined ? undefined : this.byId.get(id);
    return entry && entry.expiresAt > Date.now() ? entry : undefined;
  }

  /** Every live task of one owner. */
  ownedBy(owns: (owner: Owner) => boolean): ServerTask<Connection, Owner>[] {
    return [...this.byId.values()].filter((entry) => entry.expiresAt > Date.now() && owns(entry.owner));
  }

  private sweep(): void {
    const now = Date.now();
    for (const entry of this.byId.values()) if (entry.expiresAt <= now) this.forget(entry);
  }

  private forget(entry: ServerTask<Connection, Owner>): void {
    this.byId.delete(entry.id);
    const ids = this.byUpstream.get(entry.connection);
    if (ids?.get(entry.upstreamId) === entry.id) ids.delete(entry.upstreamId);
    const key = this.ownerKey(entry.owner);
    const owned = this.byOwner.get(key);
    owned?.delete(entry.id);
    if (owned?.size === 0) this.byOwner.delete(key);
    this.forgotten(entry);
  }
}

/**
 * Sends a server→client request to one client session through the SDK server `server`. A task-augmented
 * request loses its `task` for a client that does not run that request as a task (any receiver may answer
 * such a request at once, and requestors must accept that). A task-shaped answer has no SDK result schema,
 * so it goes through `sendAny`, which checks only that it is an object.
 */
export function relayRequest(
  server: { getClientCapabilities(): { tasks?: { requests?: Record<string, unknown> } } | undefined },
  request: { method: string; params?: Record<string, unknown> },
  send: (request: never) => Promise<unknown>,
  sendAny: (request: never, schema: typeof RELAYED_RESULT) => Promise<unknown>,
): Promise<never> {
  if (request.method.startsWith('tasks/')) return sendAny(request as never, RELAYED_RESULT) as Promise<never>;
  if (!isTaskAugmented(request.params)) return send(request as never) as Promise<never>;
  const [family, action] = request.method.split('/') as [string, string];
  const runs = server.getClientCapabilities()?.tasks?.requests?.[family] as Record<string, unknown> | undefined;
  if (runs?.[action] !== undefined) return sendAny(request as never, RELAYED_RESULT) as Promise<never>;
  const { task: _dropped, ...params } = request.params!;
  return send({ method: request.method, params } as never) as Promise<never>;
}
