/**
 * The first process inside the sandbox. It listens on 127.0.0.1:<port> in the sandbox's own network
 * namespace (the only address the proxy variables name), carries each accepted connection over the
 * inherited socketpair (fd 3) to Gatehouse outside, starts the program, forwards signals to it, and reports
 * how it ended. It runs under the same seccomp filter and rlimits as the program, so it must stay small:
 * node built-ins and ./mux.js only.
 *
 * In a container (no socketpair can be passed in), `channelPath` names a Unix socket Gatehouse listens on,
 * mounted into the container: the bridge dials it before the program exists, and the same frames flow.
 *
 * With `gatewayPort`, it also listens on 127.0.0.1:<gatewayPort>, whose connections Gatehouse carries to the
 * MCP gateway's HTTP endpoint (on its Unix socket) instead (OPEN frames say which listener a stream came in on). The program
 * cannot reach that socket itself: the seccomp filter refuses every AF_UNIX socket.
 *
 * argv: node bridge.js <json settings>  — { port, gatewayPort?, command: [...], prlimit?: [...], channelPath? }
 */
import { spawn } from 'node:child_process';
import { closeSync, readdirSync, readFileSync } from 'node:fs';
import { connect, createServer, Socket } from 'node:net';
import { constants } from 'node:os';
import { FRAME, LISTENER, Mux } from './mux.js';

interface Settings {
  port: number;
  gatewayPort?: number;
  command: string[];
  /** `prlimit` (absolute path first) and the arguments that put the rlimits on the program, not on this bridge. */
  prlimit?: string[];
  channelPath?: string;
}

closeInheritedDescriptors();

const settings = JSON.parse(process.argv[2] ?? '{}') as Settings;
const channel = settings.channelPath ? connect({ path: settings.channelPath }) : new Socket({ fd: 3, readable: true, writable: true });
let child: ReturnType<typeof spawn> | undefined;
let nextId = 1;
// The program starts once the bridge listens and Gatehouse says so (after it has recorded the launch), so
// the bridge's own start-up overlaps Gatehouse's.
let listening = 0;
let startRequested = false;
// The program has ended and its status is on its way out.
let finished = false;

const mux = new Mux(channel, {
  onStart: () => {
    startRequested = true;
    startProgram();
  },
  onSignal: (name) => {
    if (child && name in constants.signals) child.kill(name as NodeJS.Signals);
  },
  // Losing Gatehouse outside means losing the audit trail: stop the program.
  onBroken: () => child?.kill('SIGKILL'),
});
// Gatehouse gone: before it said start, the program never runs; after, it is stopped (no audit trail).
channel.on('close', () => {
  if (finished) return;
  if (child) child.kill('SIGKILL');
  else process.exit(125);
});

function listen(port: number, listener: string): ReturnType<typeof createServer> {
  const server = createServer({ allowHalfOpen: true, noDelay: true }, (socket) => {
    const id = nextId++;
    mux.send(FRAME.OPEN, id, listener ? Buffer.from(listener, 'latin1') : undefined);
    mux.attach(id, socket);
  });
  server.on('error', (error) => {
    process.stderr.write(`gatehouse bridge: cannot listen on 127.0.0.1:${port}: ${error.message}\n`);
    process.exit(125);
  });
  server.listen(port, '127.0.0.1', () => {
    listening += 1;
    startProgram();
  });
  return server;
}

const servers = [listen(settings.port, LISTENER.proxy), ...(settings.gatewayPort !== undefined ? [listen(settings.gatewayPort, LISTENER.gateway)] : [])];

for (const name of ['SIGINT', 'SIGTERM', 'SIGHUP', 'SIGQUIT', 'SIGUSR1', 'SIGUSR2', 'SIGWINCH'] as const) {
  process.on(name, () => child?.kill(name));
}

function startProgram(): void {
  if (child || listening < servers.length || !startRequested) return;
  const argv = settings.prlimit ? [...settings.prlimit, '--', ...settings.command] : settings.command;
  child = spawn(argv[0]!, argv.slice(1), { stdio: 'inherit' });
  child.on('error', (error: NodeJS.ErrnoException) => {
    process.stderr.write(`gatehouse: cannot start ${argv[0]}: ${error.code === 'ENOENT' ? 'not found in the sandbox' : error.message}\n`);
    finish(error.code === 'ENOENT' ? 127 : 126, null);
  });
  child.on('exit', (code, signal) => finish(code, signal));
}

function finish(code: number | null, signal: NodeJS.Signals | null): void {
  if (finished) return;
  finished = true;
  for (const server of servers) server.close();
  const status = code ?? 128 + (signal ? (constants.signals[signal] ?? 0) : 0);
  mux.closeAll();
  mux.send(FRAME.EXIT, 0, Buffer.from(JSON.stringify({ code, signal })));
  // Exit once Gatehouse has closed its side too: until it has read the EXIT frame it may still be writing
  // (a download still streaming in), and a write to a channel whose last holder is gone fails outside,
  // where the unread EXIT frame would then be lost and the run reported as a sandbox that never started.
  channel.once('close', () => process.exit(status));
  channel.end();
  // Outside may already be gone, or wedged; do not hang on a half-closed channel.
  setTimeout(() => process.exit(status), 1000).unref();
}

/**
 * Descriptors Gatehouse's own parent left open (a shell's, an IDE's) pass through bwrap untouched. The
 * program must not inherit them: close every descriptor above 3 that is not close-on-exec (node's own
 * descriptors all are, so they survive).
 */
function closeInheritedDescriptors(): void {
  const O_CLOEXEC = 0o2000000;
  for (const name of readdirSync('/proc/self/fd')) {
    const fd = Number(name);
    if (!Number.isInteger(fd) || fd <= 3) continue;
    try {
      const flags = /^flags:\s*([0-7]+)/m.exec(readFileSync(`/proc/self/fdinfo/${fd}`, 'latin1'));
      if (flags && (parseInt(flags[1]!, 8) & O_CLOEXEC) === 0) closeSync(fd);
    } catch {
      // Gone already (the directory listing's own descriptor).
    }
  }
}
