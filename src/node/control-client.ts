/**
 * `gatehouse run`'s side of the node's control socket (control.ts): when a node runs for the data dir,
 * the run takes its egress session from the node and writes its audit records through it.
 *
 *   const link = await connectToNode(dataDir);              // undefined when no node runs there
 *   const opened = await link.open(principal, policy, true); // egress session, placeholders, CA, gateway socket
 *   await link.audit.append(record);                         // acknowledged by the node's audit log
 *   await link.close();                                      // ends the session
 *
 * Kept to node:net and node:fs so a run stays quick to start.
 */
import { existsSync, realpathSync } from 'node:fs';
import { connect, type Socket } from 'node:net';
import { join } from 'node:path';
import type { AuditLog, AuditRecord } from '../audit/record.js';
import type { Principal } from '../policy/types.js';
import { GatehouseError } from '../util/errors.js';

export interface OpenedRun {
  node: string;
  policy: { version: string; digest: string };
  egress: { socketPath: string; session: string; env: Record<string, string>; caCertificate: string } | null;
  /** The MCP gateway's HTTP endpoint on a Unix socket, when the node's gateway serves one. */
  gateway: { socketPath: string } | null;
}

export interface NodeLink {
  open(principal: Principal, policy: { version: string; digest: string }, egress: boolean): Promise<OpenedRun>;
  /** The node's audit log, reached through the link; `close` waits for what is still unacknowledged. */
  audit: AuditLog;
  /** Records a `gatehouse secret` change in the node's log, and has the node's scanners learn the vault anew. */
  secretsChanged(record: AuditRecord): Promise<void>;
  close(): Promise<void>;
}

/** Connects to the node serving `dataDir`, or returns undefined when none runs (no socket, or a stale one). */
export async function connectToNode(dataDir: string): Promise<NodeLink | undefined> {
  const link = join(dataDir, 'node.sock');
  if (!existsSync(link)) return undefined;
  let socket: Socket;
  try {
    const path = realpathSync(link);
    socket = await new Promise<Socket>((resolve, reject) => {
      const attempt = connect(path, () => resolve(attempt));
      attempt.once('error', reject);
    });
  } catch {
    // ENOENT or ECONNREFUSED: the node that left it is gone, and the run goes on alone.
    return undefined;
  }
  return new ControlLink(socket);
}

class ControlLink implements NodeLink {
  private nextId = 1;
  private readonly pending = new Map<number, { resolve: (value: Record<string, unknown>) => void; reject: (error: Error) => void }>();
  private buffered = '';
  private lost: Error | undefined;
  private readonly inflight = new Set<Promise<unknown>>();
  readonly audit: AuditLog;

  constructor(private readonly socket: Socket) {
    socket.setEncoding('utf8');
    socket.on('data', (chunk: string) => this.receive(chunk));
    socket.on('error', (error) => this.fail(error));
    socket.once('close', () => this.fail(new Error('the node closed the control connection')));
    // The run's process may end while the link is idle: the link alone must not keep it alive.
    socket.unref();
    this.audit = {
      append: async (record: AuditRecord) => {
        await this.request({ op: 'audit', record });
      },
      close: async () => undefined,
    };
  }

  async open(principal: Principal, policy: { version: string; digest: string }, egress: boolean): Promise<OpenedRun> {
    try {
      return (await this.request({ op: 'open', principal, policy, egress })) as unknown as OpenedRun;
    } catch (error) {
      throw new GatehouseError('node_refused_run', `the Gatehouse node running for this data dir refused the run: ${(error as Error).message}`, { exitCode: 2 });
    }
  }

  async secretsChanged(record: AuditRecord): Promise<void> {
    await this.request({ op: 'secrets', record });
  }

  async close(): Promise<void> {
    await Promise.allSettled(this.inflight);
    this.socket.end();
  }

  private request(body: Record<string, unknown>): Promise<Record<string, unknown>> {
    if (this.lost) return Promise.reject(this.lost);
    const id = this.nextId++;
    this.socket.ref();
    const answered = new Promise<Record<string, unknown>>((resolve, reject) => {
      this.pending.set(id, { resolve, reject });
      this.socket.write(`${JSON.stringify({ id, ...body })}\n`);
    });
    this.inflight.add(answered);
    void answered.catch(() => undefined).finally(() => this.inflight.delete(answered));
    return answered;
  }

  private receive(chunk: string): void {
    this.buffered += chunk;
    let newline: number;
    while ((newline = this.buffered.indexOf('\n')) >= 0) {
      const line = this.buffered.slice(0, newline);
      this.buffered = this.buffered.slice(newline + 1);
      let reply: { id?: unknown; ok?: unknown; error?: unknown };
      try {
        reply = JSON.parse(line) as typeof reply;
      } catch {
        this.fail(new Error('the node sent a control reply that is not JSON'));
        return;
      }
      const waiter = typeof reply.id === 'number' ? this.pending.get(reply.id) : undefined;
      if (!waiter) {
        this.fail(new Error(typeof reply.error === 'string' ? reply.error : 'the node sent a control reply to no request'));
        return;
      }
      this.pending.delete(reply.id as number);
      if (this.pending.size === 0) this.socket.unref();
      if (reply.ok === true) waiter.resolve(reply as Record<string, unknown>);
      else waiter.reject(new Error(typeof reply.error === 'string' ? reply.error : 'the node refused the request'));
    }
  }

  private fail(error: Error): void {
    this.lost ??= error;
    for (const { reject } of this.pending.values()) reject(this.lost);
    this.pending.clear();
    this.socket.destroy();
  }
}
