/**
 * Shared pieces for the sandbox tests: who to run as (root and an unprivileged user), a real HTTP proxy on
 * a Unix socket (absolute-URI and CONNECT, like the egress proxy's session socket), and a one-call runner.
 */
import assert from 'node:assert/strict';
import { spawnSync, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { chownSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer as createHttpServer, request as httpRequest, type Server } from 'node:http';
import { connect, createServer as createNetServer, type Server as NetServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { AddressInfo } from 'node:net';
import { launchBubblewrap } from '../src/sandbox/bubblewrap.js';
import type { ExitStatus, SandboxSpec } from '../src/sandbox/types.js';
import { relayCgi, spawnGitBackend } from './cgi.js';

export const requireSandbox = process.env.GATEHOUSE_REQUIRE_SANDBOX === '1';
export const hasBwrap = spawnSync('bwrap', ['--version']).status === 0;
/** Skip reason when bwrap is missing; when the sandbox is required, the tests run and fail instead. */
export const skipWithoutBwrap: string | false = !hasBwrap && !requireSandbox ? 'bwrap is not installed (set GATEHOUSE_REQUIRE_SANDBOX=1 to fail instead)' : false;

export const TEST_USER = process.env.GATEHOUSE_TEST_USER ?? 'gatehouse-test';

export interface Identity {
  name: string;
  user?: { uid: number; gid: number };
}

/** Files the sandbox needs from this checkout at run time: the bridge (bound in) and the CLI (run as the user). */
const checkoutFiles = ['../src/sandbox/bridge-inside.js', '../src/sandbox/mux.js', '../../package.json', '../src/cli/main.js'].map(
  (relative) => new URL(relative, import.meta.url).pathname,
);

/**
 * Why this identity cannot use the compiled checkout, if it cannot: CI may clone into a directory only root
 * can enter (mktemp -d is 0700), and then every sandbox started as the unprivileged user fails in bwrap.
 */
export function checkoutUnreadable(identity: Identity): string | undefined {
  if (!identity.user) return undefined;
  const unreadable = checkoutFiles.filter((file) => spawnSync('test', ['-r', file], { uid: identity.user!.uid, gid: identity.user!.gid }).status !== 0);
  if (unreadable.length === 0) return undefined;
  return (
    `${identity.name} (uid ${identity.user.uid}) cannot read ${unreadable[0]}: the checkout or one of its parent directories ` +
    'is closed to other users; give them traverse permission (chmod o+x on each parent) or run the suite from a readable place'
  );
}

/** For a suite's `before`: stops every test of an identity at once, with the reason, when it cannot use the checkout. */
export function assertCheckoutReadable(identity: Identity): void {
  const reason = checkoutUnreadable(identity);
  assert.equal(reason, undefined, reason);
}

function lookupUser(name: string): { uid: number; gid: number } | undefined {
  const result = spawnSync('id', ['-u', name], { encoding: 'utf8' });
  if (result.status !== 0) return undefined;
  const gid = spawnSync('id', ['-g', name], { encoding: 'utf8' });
  return { uid: Number(result.stdout.trim()), gid: Number(gid.stdout.trim()) };
}

/**
 * The identities to run each escape test as. As root: root, and the unprivileged test user (created with
 * useradd if missing). As anyone else: just that user.
 */
export function identities(): Identity[] {
  if (process.getuid?.() !== 0) return [{ name: `uid ${process.getuid?.()}` }];
  let user = lookupUser(TEST_USER);
  if (!user) {
    spawnSync('useradd', ['--create-home', '--shell', '/bin/sh', TEST_USER]);
    user = lookupUser(TEST_USER);
  }
  if (!user) {
    if (requireSandbox) throw new Error(`the unprivileged test user ${TEST_USER} does not exist and useradd failed`);
    return [{ name: 'root' }];
  }
  return [{ name: 'root' }, { name: TEST_USER, user }];
}

/** A private directory owned by the identity (so an unprivileged sandbox can use it). */
export function scratch(identity: Identity, label: string): string {
  const dir = mkdtempSync(join(tmpdir(), `gh-sandbox-${label}-`));
  if (identity.user) chownSync(dir, identity.user.uid, identity.user.gid);
  return dir;
}

export function writeOwned(identity: Identity, path: string, content: string, mode = 0o600): void {
  writeFileSync(path, content, { mode });
  if (identity.user) chownSync(path, identity.user.uid, identity.user.gid);
}

export function mkdirOwned(identity: Identity, path: string): void {
  mkdirSync(path, { recursive: true, mode: 0o700 });
  if (identity.user) chownSync(path, identity.user.uid, identity.user.gid);
}

export function cleanup(...dirs: string[]): void {
  for (const dir of dirs) rmSync(dir, { recursive: true, force: true });
}

/** What a child printed and how it ended; it is killed after `timeoutMs`. Its stdin is closed at once. */
export function collectOutput(child: ChildProcessWithoutNullStreams, timeoutMs = 30000): Promise<{ status: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    child.stdin.end();
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (chunk: string) => (stdout += chunk));
    child.stderr.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.on('close', (status) => {
      clearTimeout(timer);
      resolve({ status, stdout, stderr });
    });
  });
}

export interface RunResult extends ExitStatus {
  stdout: string;
  stderr: string;
}

/** Runs a command in the sandbox with piped stdio and collects its output (bounded by `timeoutMs`). */
export async function runSandboxed(spec: Partial<SandboxSpec> & Pick<SandboxSpec, 'command' | 'home' | 'cwd' | 'view'>, input = '', timeoutMs = 20000): Promise<RunResult> {
  const sandbox = await launchBubblewrap({ stdio: 'pipe', ...spec });
  let stdout = '';
  let stderr = '';
  sandbox.stdout!.setEncoding('utf8').on('data', (chunk: string) => (stdout += chunk));
  sandbox.stderr!.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
  sandbox.stdin!.end(input);
  const timer = setTimeout(() => sandbox.kill('SIGKILL'), timeoutMs);
  try {
    const status = await sandbox.exited;
    // Let the pipes drain.
    await new Promise((resolve) => setImmediate(resolve));
    return { ...status, stdout, stderr };
  } finally {
    clearTimeout(timer);
  }
}

/** A plain HTTP server on 127.0.0.1 that answers every request with `hello from <path>`. */
export async function startOrigin(): Promise<{ server: Server; port: number; close: () => Promise<void> }> {
  const server = createHttpServer((request, response) => {
    response.setHeader('content-type', 'text/plain');
    response.end(`hello from ${request.url}`);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as AddressInfo).port;
  return { server, port, close: () => new Promise((resolve) => server.close(() => resolve())) };
}

/** A raw TCP listener on the host's 127.0.0.1 that counts connections. */
export async function startTcpListener(): Promise<{ port: number; accepted: () => number; close: () => Promise<void> }> {
  let count = 0;
  const server: NetServer = createNetServer((socket) => {
    count += 1;
    socket.end('host listener\n');
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as AddressInfo).port;
  return { port, accepted: () => count, close: () => new Promise((resolve) => server.close(() => resolve())) };
}

/**
 * A small real HTTP proxy on a Unix socket: absolute-URI requests and CONNECT to the `allowed` names,
 * each of which it sends to 127.0.0.1; anything else gets 403 and no traffic. It stands in for the egress proxy's session socket in driver tests.
 */
export async function startUnixProxy(socketPath: string, allowed: string[] = ['origin.test']): Promise<{ seen: string[]; close: () => Promise<void> }> {
  const seen: string[] = [];
  const server = createHttpServer((request, response) => {
    const url = new URL(request.url ?? '');
    seen.push(`${request.method} ${url.host}`);
    if (!allowed.includes(url.hostname)) {
      response.writeHead(403).end('denied by test proxy');
      return;
    }
    const upstream = httpRequest({ host: '127.0.0.1', port: url.port, path: url.pathname + url.search, method: request.method, headers: request.headers }, (reply) => {
      response.writeHead(reply.statusCode ?? 502, reply.headers);
      reply.pipe(response);
    });
    upstream.on('error', () => response.writeHead(502).end());
    request.pipe(upstream);
  });
  server.on('connect', (request, socket, head) => {
    const [host, port] = (request.url ?? '').split(':');
    seen.push(`CONNECT ${request.url}`);
    if (!host || !allowed.includes(host)) {
      socket.end('HTTP/1.1 403 Forbidden\r\ncontent-length: 0\r\n\r\n');
      return;
    }
    const upstream = connect(Number(port), '127.0.0.1', () => {
      socket.write('HTTP/1.1 200 Connection Established\r\n\r\n');
      if (head.length > 0) upstream.write(head);
      upstream.pipe(socket);
      socket.pipe(upstream);
    });
    upstream.on('error', () => socket.destroy());
    socket.on('error', () => upstream.destroy());
  });
  await new Promise<void>((resolve) => server.listen(socketPath, resolve));
  return {
    seen,
    close: () =>
      new Promise((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

/** Host processes whose command line contains `marker` (to prove nothing outlives its sandbox). */
export function processesWith(marker: string): number[] {
  const found: number[] = [];
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    try {
      if (readFileSync(`/proc/${name}/cmdline`, 'latin1').includes(marker)) found.push(Number(name));
    } catch {
      // exited meanwhile
    }
  }
  return found;
}

/**
 * An HTTPS git server on 127.0.0.1: git's own smart-HTTP backend (`git http-backend`) run as CGI for every
 * request, serving the bare repositories under `root`.
 */
export async function startGitHttpsServer(root: string, pair: { certificate: string; key: string }): Promise<{ port: number; close: () => Promise<void> }> {
  const { createServer: createHttpsServer } = await import('node:https');
  const server = createHttpsServer({ cert: pair.certificate, key: pair.key }, (request, response) => {
    const backend = spawnGitBackend(root, request);
    relayCgi(backend, response);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    port: (server.address() as AddressInfo).port,
    close: () =>
      new Promise((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}
