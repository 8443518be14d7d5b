/**
 * The node's control socket, `<data-dir>/node.sock`: how `gatehouse run` works while a node runs. Only one
 * process may write the audit log, and the node's egress proxy, vault and placeholders already run, so a
 * run hands both jobs to the node instead of starting its own.
 *
 * The protocol is one JSON object per line, each request answered in order by `{ id, ok, ... }`:
 *   { id, op: "open", principal, policy: { version, digest }, egress: true }
 *     → { node, policy, egress: { socketPath, env, caCertificate } | null, gateway: { socketPath } | null }
 *     (`gateway`: the MCP gateway's HTTP endpoint on a socket of the run's own, which the run carries into
 *     its sandbox; a request on it without credentials is the run's agent, as the egress session socket is)
 *   { id, op: "audit", record } → acknowledged once the record is as durable as the audit mode demands
 *   { id, op: "secrets", record } → a `gatehouse secret` change: recorded, then the node's leak scanners
 *     learn the vault's values anew
 * One connection is one run: when it closes, the run's egress session, placeholders and gateway socket end
 * with it.
 *
 * The socket sits in the private data dir (0700) and is itself 0600: whoever reaches it owns the node's
 * keys and vault anyway, so it is trusted with the run's principal. What a run may write to the audit
 * log is still narrowed to the records a sandbox makes, stamped with this node's name.
 */
import type { Socket } from 'node:net';
import { join } from 'node:path';
import type { AuditLog, AuditRecord } from '../audit/record.js';
import type { EgressProxy, EgressSession } from '../egress/index.js';
import type { PolicyHolder } from '../policy/engine.js';
import type { Principal } from '../policy/types.js';
import type { PlaceholderRegistry } from '../secrets/index.js';
import { errorMessage } from '../util/errors.js';
import { listenUnix } from '../util/unix-socket.js';

/** Longest line a run may send: audit records are small. */
const MAX_LINE = 256 * 1024;

export const CONTROL_SOCKET = 'node.sock';

export interface ControlOptions {
  dataDir: string;
  node: string;
  policy: PolicyHolder;
  audit: AuditLog;
  egress: EgressProxy | undefined;
  /** The MCP gateway's HTTP endpoint for one run, on a socket of its own whose callers are the run's agent. */
  gatewayFor?: (principal: Principal) => Promise<{ socketPath: string; close(): Promise<void> }>;
  placeholders: PlaceholderRegistry;
  resolveSecret: (name: string) => Promise<string>;
  /** The vault changed (a `gatehouse secret` command): rebuild what depends on its values. */
  onSecretsChanged?: () => Promise<void>;
}

export interface ControlServer {
  path: string;
  close(): Promise<void>;
}

/** Records a sandbox launch writes (launch.ts); anything else from a run is refused. */
const RUN_ACTIONS = new Map<string, AuditRecord['surface']>([
  ['sandbox.launch', 'system'],
  ['sandbox.exit', 'system'],
  ['connect', 'network'],
]);
/** Records `gatehouse secret` writes (cli/secret.ts). */
export const SECRET_ACTIONS = new Map<string, AuditRecord['surface']>([
  ['secret.set', 'credentials'],
  ['secret.rotate', 'credentials'],
  ['secret.rm', 'credentials'],
  ['secret.rekey', 'credentials'],
]);

export async function startControlServer(options: ControlOptions): Promise<ControlServer> {
  return listenUnix(join(options.dataDir, CONTROL_SOCKET), (socket) => serveRun(socket, options));
}

interface Request {
  id: number;
  op: string;
  [key: string]: unknown;
}

function serveRun(socket: Socket, options: ControlOptions): void {
  let session: EgressSession | undefined;
  let sessionId: string | undefined;
  let runGateway: { close(): Promise<void> } | undefined;
  let opened = false;
  let buffered = '';
  // Requests are answered strictly in order, one at a time.
  let queue: Promise<void> = Promise.resolve();

  const reply = (id: unknown, body: Record<string, unknown>): void => {
    if (!socket.destroyed) socket.write(`${JSON.stringify({ id, ...body })}\n`);
  };
  const handle = async (request: Request): Promise<Record<string, unknown>> => {
    if (request.op === 'open') {
      if (opened) throw new Error('this connection already opened its run');
      opened = true;
      const { session: _ignored, ...principal } = principalOf(request.principal);
      const engine = options.policy.current;
      const wanted = request.policy as { version?: unknown; digest?: unknown } | undefined;
      if (wanted?.digest !== engine.digest) {
        throw new Error(
          `the node enforces policy ${engine.version} (digest ${engine.digest.slice(0, 12)}), but this run loaded ${String(wanted?.version)} (digest ${String(wanted?.digest).slice(0, 12)}); run with the node's config, or wait for the node to reload it`,
        );
      }
      let egress: Record<string, unknown> | null = null;
      if (request.egress === true && options.egress) {
        session = await options.egress.openSession(principal);
        sessionId = session.id;
        const grants = engine.grants(principal).filter((grant) => grant.env !== undefined);
        const { env } = await options.placeholders.issueForSession(session.id, grants, options.resolveSecret);
        egress = { socketPath: session.socketPath, session: session.id, env, caCertificate: join(options.dataDir, 'egress-ca', 'ca.pem') };
      }
      let gateway: Record<string, unknown> | null = null;
      if (options.gatewayFor) {
        const forRun = await options.gatewayFor(principal);
        runGateway = forRun;
        gateway = { socketPath: forRun.socketPath };
      }
      return { node: options.node, policy: { version: engine.version, digest: engine.digest }, egress, gateway };
    }
    if (request.op === 'audit') {
      if (!opened) throw new Error('open the run before sending audit records');
      await options.audit.append(checkedRecord(request.record, options.node, RUN_ACTIONS, 'a run'));
      return {};
    }
    if (request.op === 'secrets') {
      await options.audit.append(checkedRecord(request.record, options.node, SECRET_ACTIONS, '"gatehouse secret"'));
      await options.onSecretsChanged?.();
      return {};
    }
    throw new Error(`unknown operation "${String(request.op)}"`);
  };

  socket.setEncoding('utf8');
  socket.on('data', (chunk: string) => {
    buffered += chunk;
    if (buffered.length > MAX_LINE && !buffered.includes('\n')) {
      reply(null, { ok: false, error: `a control request is longer than ${MAX_LINE} bytes` });
      socket.destroy();
      return;
    }
    let newline: number;
    while ((newline = buffered.indexOf('\n')) >= 0) {
      const line = buffered.slice(0, newline);
      buffered = buffered.slice(newline + 1);
      let request: Request;
      try {
        request = JSON.parse(line) as Request;
        if (typeof request !== 'object' || request === null || typeof request.id !== 'number') throw new Error('not an object with a numeric id');
      } catch (error) {
        reply(null, { ok: false, error: `a control request is not valid JSON: ${errorMessage(error)}` });
        socket.destroy();
        return;
      }
      queue = queue.then(async () => {
        try {
          reply(request.id, { ok: true, ...(await handle(request)) });
        } catch (error) {
          reply(request.id, { ok: false, error: errorMessage(error) });
        }
      });
    }
  });
  socket.on('error', () => undefined);
  socket.once('close', () => {
    // The run is over (or its process died): its egress session, placeholders and gateway socket end with it.
    void queue.then(async () => {
      if (sessionId) options.placeholders.revokeSession(sessionId);
      await session?.close();
      await runGateway?.close();
    });
  });
}

/** The agent, user and (in records) session a run names; nothing else is taken from it. */
function principalOf(value: unknown): Principal & { session?: string } {
  if (typeof value !== 'object' || value === null) throw new Error('"principal" must be an object');
  const fields = value as Record<string, unknown>;
  const principal: Principal & { session?: string } = {};
  for (const key of ['agent', 'user', 'session'] as const) {
    const field = fields[key];
    if (field === undefined) continue;
    if (typeof field !== 'string') throw new Error(`"principal.${key}" must be a string`);
    principal[key] = field;
  }
  return principal;
}

/** A record checked to be one of `actions` (those its sender makes), and stamped with this node's name. */
function checkedRecord(value: unknown, node: string, actions: Map<string, AuditRecord['surface']>, sender: string): AuditRecord {
  if (typeof value !== 'object' || value === null) throw new Error('"record" must be an audit record object');
  const record = value as Partial<AuditRecord>;
  const surface = typeof record.action === 'string' ? actions.get(record.action) : undefined;
  if (!surface || record.surface !== surface) throw new Error(`${sender} may not record "${String(record.surface)}/${String(record.action)}"`);
  for (const key of ['time', 'resource', 'reason', 'correlationId'] as const) {
    if (typeof record[key] !== 'string') throw new Error(`"record.${key}" must be a string`);
  }
  if (!['info', 'error', 'deny'].includes(record.effect as string)) throw new Error(`"record.effect" may not be "${String(record.effect)}"`);
  const { seq: _seq, prev: _prev, ...fields } = record;
  return { ...fields, v: 1, node, principal: principalOf(record.principal), rules: [], latencyUs: Number(record.latencyUs) || 0 } as AuditRecord;
}
