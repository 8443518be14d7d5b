/**
 * The Linux driver: runs a program under bubblewrap with the mount plan, new namespaces (user, PID, net,
 * IPC, UTS, cgroup), the seccomp filter, a scrubbed environment, rlimits, and the network bridge.
 *
 * Process tree:  gatehouse ─ bwrap ─ (sandbox pid 1: bwrap's init) ─ node bridge.js ─ [prlimit ─] program
 * The bridge holds the channel to Gatehouse, and the program runs as the same user beside it. So the bridge
 * is started through an execute-only copy of node's ELF loader (`ld.so node bridge.js`): the kernel marks a
 * process that executed a file it cannot read as not dumpable, which closes its /proc/<pid>/mem and fds to
 * the program (seccomp already refuses ptrace and pidfd_getfd). The program's own exec makes it dumpable again.
 * The bridge is the program's parent inside, so signals sent by Gatehouse (as SIGNAL frames) reach the
 * program, and its exit status comes back as an EXIT frame. bwrap runs in its own session (`detached`), so a
 * terminal's Ctrl-C reaches Gatehouse, which forwards it, rather than killing bwrap outright.
 */
import { once } from 'node:events';
import { spawn, type ChildProcess } from 'node:child_process';
import { closeSync, existsSync, openSync, readSync } from 'node:fs';
import { connect, type Socket } from 'node:net';
import { constants } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Readable, Writable } from 'node:stream';
import { GatehouseError } from '../util/errors.js';
import { CA_INSIDE, ensureCaBundle, gatewayEnv, sandboxEnv, trustEnv } from './env.js';
import { bwrapMountArgs, computeMountPlan, isWithin, type MountPlan } from './mount-plan.js';
import { FRAME, LISTENER, Mux } from './mux.js';
import { SYSTEM_PATH, which } from './host.js';
import { openFilterFd } from './seccomp.js';
import type { ExitStatus, SandboxProcess, SandboxSpec } from './types.js';

const here = dirname(fileURLToPath(import.meta.url));
/** Where the bridge files appear inside the sandbox (under the otherwise empty /run). */
const INSIDE = '/run/gatehouse';
export const DEFAULT_PROXY_PORT = 3128;
/**
 * Where the MCP gateway answers inside the sandbox (when a node's gateway serves its HTTP socket): the
 * gateway's own default port, free in the sandbox's network namespace.
 */
export const GATEWAY_PORT_INSIDE = 7401;
/** The execute-only copy of node's ELF loader the bridge is started through. */
const LOADER_INSIDE = `${INSIDE}/ld.so`;

export function bridgeFiles(): { source: string; dest: string }[] {
  return [
    { source: join(here, 'bridge-inside.js'), dest: `${INSIDE}/bridge.js` },
    { source: join(here, 'mux.js'), dest: `${INSIDE}/mux.js` },
    // Marks the two files as ES modules for node inside.
    { source: join(here, '..', '..', '..', 'package.json'), dest: `${INSIDE}/package.json` },
  ];
}

/** rlimits as `prlimit` arguments (soft = hard). */
export function prlimitArgs(limits: SandboxSpec['rlimits']): string[] | undefined {
  if (!limits) return undefined;
  const args: string[] = [];
  if (limits.memoryBytes !== undefined) args.push(`--data=${limits.memoryBytes}`);
  if (limits.processes !== undefined) args.push(`--nproc=${limits.processes}`);
  if (limits.openFiles !== undefined) args.push(`--nofile=${limits.openFiles}`);
  if (limits.cpuSeconds !== undefined) args.push(`--cpu=${limits.cpuSeconds}`);
  return args.length > 0 ? args : undefined;
}

export interface BwrapInvocation {
  plan: MountPlan;
  args: string[];
  env: Record<string, string>;
}

/**
 * The ELF program interpreter (`ld-linux...so`) a dynamically linked executable names in its PT_INTERP
 * header; undefined for a static executable or one that cannot be read.
 */
export function elfInterpreter(executable: string): string | undefined {
  // Only the headers are read: node's binary is large (over 100 MB with debug information).
  let fd: number | undefined;
  try {
    fd = openSync(executable, 'r');
    const read = (position: number, length: number): Buffer => {
      const buffer = Buffer.alloc(length);
      const got = readSync(fd!, buffer, 0, length, position);
      return buffer.subarray(0, got);
    };
    const header = read(0, 64);
    // ELF64 little-endian only (x86-64 and aarch64, the two architectures the seccomp filter admits).
    if (header.length < 64 || header.readUInt32BE(0) !== 0x7f454c46 || header[4] !== 2 || header[5] !== 1) return undefined;
    const entrySize = header.readUInt16LE(0x36);
    const count = header.readUInt16LE(0x38);
    if (entrySize < 56 || count > 512) return undefined;
    const table = read(Number(header.readBigUInt64LE(0x20)), entrySize * count);
    for (let index = 0; index < count; index++) {
      const entry = index * entrySize;
      if (entry + 56 > table.length) return undefined;
      if (table.readUInt32LE(entry) !== 3 /* PT_INTERP */) continue;
      const size = Number(table.readBigUInt64LE(entry + 32));
      if (size > 4096) return undefined;
      const path = read(Number(table.readBigUInt64LE(entry + 8)), size).toString('latin1').replace(/\0+$/, '');
      return path.startsWith('/') ? path : undefined;
    }
    return undefined;
  } catch {
    return undefined;
  } finally {
    if (fd !== undefined) closeSync(fd);
  }
}

let nodeInterpreter: string | null | undefined;
/** Node's ELF loader, read once per process (null: node is static, and the bridge runs as plain node). */
export function nodeLoader(): string | undefined {
  nodeInterpreter ??= elfInterpreter(process.execPath) ?? null;
  return nodeInterpreter ?? undefined;
}

/**
 * What every driver derives from a spec: the mount plan (with the driver's own files, and the inspection CA
 * when there is one), the bridge's port, and the scrubbed environment. `system`: the host directories bound
 * read-only for programs to run at all (the default set; none for a container, whose image has its own).
 */
export function sandboxLayout(
  spec: SandboxSpec,
  extras: { source: string; dest: string }[],
  options: { system?: string[] } = {},
): { plan: MountPlan; port: number; gatewayPort: number | undefined; env: ReturnType<typeof sandboxEnv> } {
  const files = [...extras];
  if (spec.caCertificate) {
    files.push({ source: spec.caCertificate, dest: CA_INSIDE.certificate }, { source: ensureCaBundle(spec.caCertificate), dest: CA_INSIDE.bundle });
  }
  const plan = computeMountPlan({
    view: spec.view,
    home: spec.home,
    cwd: spec.cwd,
    extras: files,
    ...(options.system ? { system: options.system } : {}),
    ...(spec.dataDir ? { dataDir: spec.dataDir } : {}),
    ...(spec.extraSensitive ? { extraSensitive: spec.extraSensitive } : {}),
    ...(spec.protect ? { protect: spec.protect } : {}),
    ...(spec.permits ? { permits: spec.permits } : {}),
  });
  const port = spec.proxyPort ?? DEFAULT_PROXY_PORT;
  const gatewayPort = spec.gatewaySocket !== undefined ? GATEWAY_PORT_INSIDE : undefined;
  const env = sandboxEnv({
    home: spec.home,
    proxyPort: port,
    ...(spec.envSource ? { source: spec.envSource } : {}),
    ...(spec.envAllow ? { allow: spec.envAllow } : {}),
    add: { ...(spec.caCertificate ? trustEnv() : {}), ...(gatewayPort !== undefined ? gatewayEnv(gatewayPort) : {}), ...spec.envAdd },
  });
  return { plan, port, gatewayPort, env };
}

/**
 * The whole bwrap command line for a spec, with the seccomp filter expected on `seccompFd` and node's ELF
 * loader (copied in execute-only) on `loaderFd`.
 */
export function bwrapInvocation(spec: SandboxSpec, seccompFd: number, loaderFd = seccompFd + 1): BwrapInvocation {
  if (spec.command.length === 0) throw new GatehouseError('sandbox_no_command', 'no command to run: give one after `--`.');
  const extras = bridgeFiles();
  if (!isWithin(process.execPath, '/usr') && !isWithin(process.execPath, '/opt')) {
    extras.push({ source: process.execPath, dest: process.execPath });
  }
  const { plan, port, gatewayPort, env } = sandboxLayout(spec, extras);
  // An absolute, system path: a `prlimit` planted earlier in a writable PATH entry must not be the one run.
  const limits = prlimitArgs(spec.rlimits);
  const prlimitPath = limits ? which('prlimit', SYSTEM_PATH) : undefined;
  if (limits && !prlimitPath) throw new GatehouseError('sandbox_no_prlimit', 'rlimits are configured but prlimit is not installed (install util-linux).');
  const prlimit = limits && prlimitPath ? [prlimitPath, ...limits] : undefined;
  const settings = { port, ...(gatewayPort !== undefined ? { gatewayPort } : {}), command: spec.command, ...(prlimit ? { prlimit } : {}) };
  const args = [
    '--die-with-parent',
    '--new-session',
    '--unshare-user',
    '--unshare-pid',
    '--unshare-net',
    '--unshare-ipc',
    '--unshare-uts',
    '--unshare-cgroup-try',
    // bwrap keeps every capability (in the new user namespace) for a uid-0 sandbox unless told otherwise.
    '--cap-drop', 'ALL',
    '--hostname', 'sandbox',
    '--seccomp', String(seccompFd),
    ...bwrapMountArgs(plan),
    ...(nodeLoader() ? ['--perms', '0111', '--ro-bind-data', String(loaderFd), LOADER_INSIDE] : []),
    '--chdir', plan.cwd,
    '--',
    ...(nodeLoader() ? [LOADER_INSIDE] : []),
    process.execPath, `${INSIDE}/bridge.js`, JSON.stringify(settings),
  ];
  return { plan, args, env };
}

/**
 * How long to wait, once the sandbox (bwrap, or the engine's CLI) has exited, for its channel to close and so
 * deliver the bridge's EXIT frame. Every process inside is gone by then, so the channel closes at once; the
 * bound only keeps a wedged peer from hanging the run.
 */
const CHANNEL_CLOSE_WAIT_MS = 5000;

/**
 * Gatehouse's end of the bridge's channel, for either driver: each connection the bridge accepts becomes one
 * connection to the egress proxy's session socket, or, from the gateway listener, to the MCP gateway's local
 * socket (or is refused and reported), and the bridge's EXIT frame is the program's status. `kill` tears the
 * sandbox down when the channel breaks (a hostile peer). `ended` takes the sandbox's own exit, which can be
 * seen before the EXIT frame is read off the channel, so it waits (bounded) for the channel to close first.
 */
export function bridgeChannel(channel: Socket, spec: SandboxSpec, kill: () => void): { mux: Mux; ended: (sandbox: { code: number | null; signal: NodeJS.Signals | null }) => Promise<ExitStatus> } {
  let reported: ExitStatus | undefined;
  let brokenReason: string | undefined;
  const refuse = (id: number, reason: string): void => {
    spec.onConnectionDenied?.({ stream: id, reason });
    mux.close(id, reason);
  };
  const mux: Mux = new Mux(channel, {
    onOpen: (id, listener) => {
      // The inside names the listener; only the two it was given are honoured.
      if (listener === LISTENER.gateway) {
        if (!spec.gatewaySocket) return refuse(id, 'no MCP gateway for this sandbox');
        const gateway = connect({ path: spec.gatewaySocket, allowHalfOpen: true });
        gateway.once('error', (error) => spec.onConnectionDenied?.({ stream: id, reason: `MCP gateway unreachable: ${error.message}` }));
        mux.attach(id, gateway);
        return;
      }
      if (listener !== LISTENER.proxy) return refuse(id, 'unknown bridge listener');
      if (!spec.proxySocket || !existsSync(spec.proxySocket)) return refuse(id, 'no egress proxy for this session');
      const upstream = connect({ path: spec.proxySocket, allowHalfOpen: true });
      upstream.once('error', (error) => spec.onConnectionDenied?.({ stream: id, reason: `egress proxy unreachable: ${error.message}` }));
      mux.attach(id, upstream);
    },
    onExit: (status) => {
      reported = { code: status.code, signal: status.signal as NodeJS.Signals | null };
    },
    onBroken: (error) => {
      // After the EXIT frame the bridge is leaving: a write that fails then (EPIPE) breaks nothing.
      if (reported) return;
      brokenReason = error.message;
      kill();
    },
  });
  return {
    mux,
    // Without the bridge's report the program never ran, or the sandbox was killed: the sandbox's own status.
    ended: async (sandbox) => {
      if (!channel.closed) await Promise.race([once(channel, 'close'), new Promise((settle) => setTimeout(settle, CHANNEL_CLOSE_WAIT_MS).unref())]);
      mux.closeAll();
      const error = brokenReason ? { error: brokenReason } : {};
      if (reported) return { ...reported, ...error };
      const why = brokenReason ?? `the sandbox ended (${sandbox.signal ?? `exit ${sandbox.code}`}) without the bridge reporting how the program ended; its channel was ${channel.closed ? 'closed' : 'still open'}`;
      return { ...sandbox, setupFailed: true, error: why };
    },
  };
}

/**
 * Starts the program in the sandbox. Resolves once bwrap is spawned; `exited` settles when the program
 * ends (its own code or signal, as the bridge reported it).
 */
export async function launchBubblewrap(spec: SandboxSpec): Promise<SandboxProcess> {
  const filterFd = await openFilterFd();
  const loader = nodeLoader();
  let loaderFd: number | undefined;
  let invocation: BwrapInvocation;
  let child: ChildProcess;
  try {
    if (loader) loaderFd = openSync(loader, 'r');
    invocation = bwrapInvocation(spec, 4, 5);
    const stdio = spec.stdio ?? 'inherit';
    const bwrap = which(spec.bwrapPath ?? 'bwrap');
    if (!bwrap) throw new GatehouseError('sandbox_unavailable', 'bwrap is not installed: install the bubblewrap package (run `gatehouse doctor`).');
    child = spawn(bwrap, invocation.args, {
      env: invocation.env,
      stdio: [stdio, stdio, stdio, 'pipe', filterFd, ...(loaderFd !== undefined ? [loaderFd] : [])],
      detached: true,
      ...(spec.user ? { uid: spec.user.uid, gid: spec.user.gid } : {}),
    });
  } finally {
    closeSync(filterFd);
    if (loaderFd !== undefined) closeSync(loaderFd);
  }
  const channel = child.stdio[3] as Socket;
  const bridge = bridgeChannel(channel, spec, () => child.kill('SIGKILL'));
  const mux = bridge.mux;

  const exited = new Promise<ExitStatus>((resolve, reject) => {
    child.once('error', (error: NodeJS.ErrnoException) => {
      reject(
        error.code === 'ENOENT'
          ? new GatehouseError('sandbox_unavailable', 'bwrap is not installed: install the bubblewrap package (run `gatehouse doctor`).')
          : error,
      );
    });
    // bwrap's own status matters only when it failed (namespaces refused...) or was killed.
    child.once('exit', (code, signal) => void bridge.ended({ code, signal }).then(resolve));
  });

  const start = (): void => mux.send(FRAME.START, 0);
  if (!spec.deferStart) start();
  return {
    start,
    pid: child.pid,
    plan: invocation.plan,
    stdin: child.stdin as Writable | null,
    stdout: child.stdout as Readable | null,
    stderr: child.stderr as Readable | null,
    exited,
    kill(signal: NodeJS.Signals = 'SIGTERM') {
      if (signal === 'SIGKILL') {
        child.kill('SIGKILL');
        // Also end the channel: the bridge stops the program when it loses Gatehouse, even if bwrap was
        // killed before its die-with-parent chain was in place.
        channel.destroy();
        return;
      }
      if (signal in constants.signals) mux.send(FRAME.SIGNAL, 0, Buffer.from(signal, 'latin1'));
    },
  };
}
