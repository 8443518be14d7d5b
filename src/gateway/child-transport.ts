/**
 * An MCP transport over a child process's stdin/stdout, one JSON-RPC message per line.
 * The child runs in its own process group so that closing kills it and everything it started.
 * Lines that are not JSON-RPC are reported through `ongarbage` and skipped: one bad line from an upstream
 * never ends its session. A line longer than `maxLineBytes` is dropped whole.
 */
import { spawn } from 'node:child_process';
import type { Readable, Writable } from 'node:stream';
import type { JSONRPCMessage, Transport } from '@modelcontextprotocol/client';
import { isJsonRpcMessage } from './jsonrpc.js';
import { BLANK, LineSplitter, parseJsonLine } from '../util/lines.js';

export interface ChildCommand {
  command: string;
  args: string[];
  env: Record<string, string>;
  cwd?: string;
}

/** A started upstream process: the shape both a plain child and the sandbox launcher's process have. */
export interface UpstreamProcess {
  pid: number | undefined;
  stdin: Writable | null;
  stdout: Readable | null;
  stderr: Readable | null;
  /** Resolves when the process (or its sandbox) has ended. */
  exited: Promise<unknown>;
  /** Ends the process and everything it started. */
  kill(signal: NodeJS.Signals): void;
}

/** Starts an upstream's process; the sandbox launcher plugs in here. */
export type ProcessLauncher = (command: ChildCommand) => Promise<UpstreamProcess>;

/** The default launcher: a plain child in its own process group, signalled as a group. */
export const spawnInGroup: ProcessLauncher = (spec) =>
  new Promise((resolve, reject) => {
    const child = spawn(spec.command, spec.args, {
      cwd: spec.cwd,
      env: spec.env,
      stdio: ['pipe', 'pipe', 'pipe'],
      detached: true, // its own process group, so closing can signal the whole group
      windowsHide: true,
    });
    const exited = new Promise<void>((done) => child.once('exit', () => done()));
    const kill = (signal: NodeJS.Signals): void => {
      if (child.pid === undefined) return;
      try {
        process.kill(-child.pid, signal);
      } catch {
        // The group is already gone.
      }
    };
    child.once('error', reject);
    child.once('spawn', () => {
      // After the process has ended, anything left in its group goes too.
      void exited.then(() => kill('SIGKILL'));
      resolve({ pid: child.pid, stdin: child.stdin, stdout: child.stdout, stderr: child.stderr, exited, kill });
    });
  });

export class ChildProcessTransport implements Transport {
  onclose?: () => void;
  onerror?: (error: Error) => void;
  onmessage?: (message: JSONRPCMessage) => void;
  /** A line on stdout that is not a JSON-RPC message (already cut to 200 characters). */
  ongarbage?: (line: string) => void;
  /** The last lines the child wrote to stderr, for status and error messages. */
  readonly stderrTail: string[] = [];

  private child: UpstreamProcess | undefined;
  private exitedFlag = false;
  private readonly lines: LineSplitter;
  private closed = false;
  private corked = false;

  constructor(
    private readonly spec: ChildCommand,
    private readonly maxLineBytes: number,
    private readonly launch: ProcessLauncher = spawnInGroup,
  ) {
    this.lines = new LineSplitter(
      maxLineBytes,
      (line) => this.deliver(line),
      () => this.onerror?.(new Error(`the upstream wrote a message over ${maxLineBytes} bytes; it was dropped`)),
    );
  }

  get pid(): number | undefined {
    return this.child?.pid;
  }

  async start(): Promise<void> {
    let child: UpstreamProcess;
    try {
      child = await this.launch(this.spec);
    } catch (error) {
      this.onerror?.(error instanceof Error ? error : new Error(String(error)));
      this.finish();
      throw error;
    }
    this.child = child;
    void child.exited.then(() => {
      this.exitedFlag = true;
      this.finish();
    });
    child.stdout?.on('data', (chunk: Buffer) => this.lines.push(chunk));
    child.stderr?.on('data', (chunk: Buffer) => {
      for (const line of chunk.toString('utf8').split('\n')) {
        if (line.trim() === '') continue;
        this.stderrTail.push(line.slice(0, 500));
        if (this.stderrTail.length > 20) this.stderrTail.shift();
      }
    });
    // A child that dies while we write must not take the gateway with it.
    child.stdin?.on('error', (error) => this.onerror?.(error));
  }

  private deliver(line: Buffer): void {
    const message = parseJsonLine(line);
    if (message === BLANK) return;
    // The envelope only: the SDK client checks what a result or request holds against its method's schema.
    if (!isJsonRpcMessage(message)) {
      this.ongarbage?.(line.toString('utf8').trim().slice(0, 200));
      return;
    }
    // One microtask per message: the SDK runs notification handlers a microtask after delivery but
    // responses at once, so a progress notification read together with its result must not be overtaken.
    queueMicrotask(() => this.onmessage?.(message as JSONRPCMessage));
  }

  /**
   * Messages sent in one turn of the event loop (many sessions' calls to a shared server, read from their
   * sockets in one poll) go out in one write: each write to a pipe is a system call and a wake-up of the
   * server, which under load cost the gateway more than the rest of a call's way through it.
   */
  send(message: JSONRPCMessage): Promise<void> {
    return new Promise((resolve, reject) => {
      const stdin = this.child?.stdin;
      if (!stdin || this.closed || stdin.destroyed) return reject(new Error('the upstream process is not running'));
      if (!this.corked) {
        this.corked = true;
        stdin.cork();
        setImmediate(() => {
          this.corked = false;
          stdin.uncork();
        });
      }
      stdin.write(JSON.stringify(message) + '\n', (error) => (error ? reject(error) : resolve()));
    });
  }

  async close(): Promise<void> {
    const child = this.child;
    if (!child || this.exitedFlag) return this.finish();
    child.stdin?.end();
    child.kill('SIGTERM');
    const timer = setTimeout(() => child.kill('SIGKILL'), 2000);
    await child.exited;
    clearTimeout(timer);
    this.finish();
  }

  private finish(): void {
    if (this.closed) return;
    this.closed = true;
    this.child?.kill('SIGKILL');
    this.onclose?.();
  }
}
