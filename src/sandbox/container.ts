/**
 * The container driver, for hosts with Docker or Podman (and for macOS and Windows, through their VMs).
 * The same spec becomes `docker run` / `podman run` arguments: no network (`--network none`) except the
 * bridge, a read-only root, every capability dropped, no-new-privileges, the mount plan's binds and masks,
 * and limits. The image provides /usr and the rest of the system, so host system binds are left out.
 *
 * The bridge is bubblewrap's, on a different wire: an engine cannot pass a socketpair in, so Gatehouse
 * listens on a Unix socket of its own, mounted at /run/gatehouse/channel.sock, and takes exactly one
 * connection: the bridge's, made before the program exists. The same frames then carry connections to the
 * egress proxy (refusals recorded), signals, the start and the exit status; and when Gatehouse dies the
 * channel closes and the bridge stops the program, which an engine's container would otherwise outlive.
 * The engine's default seccomp profile applies.
 *
 * Verified here: the generated command lines (test/sandbox-container.test.ts), and `gatehouse run` under
 * Podman with runc, rootful and rootless (test/sandbox-podman.test.ts). Docker is not run anywhere here.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { chownSync, mkdtempSync, rmSync } from 'node:fs';
import { createServer, type Socket } from 'node:net';
import { constants, tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Readable, Writable } from 'node:stream';
import { GatehouseError } from '../util/errors.js';
import { bridgeChannel, bridgeFiles, sandboxLayout } from './bubblewrap.js';
import { FRAME } from './mux.js';
import { gatewayEnv, trustEnv } from './env.js';
import { isWithin, type MountPlan } from './mount-plan.js';
import type { ExitStatus, SandboxProcess, SandboxSpec } from './types.js';

export type ContainerEngine = 'docker' | 'podman';

export interface ContainerInvocation {
  engine: ContainerEngine;
  plan: MountPlan;
  args: string[];
  /**
   * Values for the `--env NAME` arguments, given to the engine CLI's own environment (never in argv): what
   * comes from the user's environment or the secrets broker.
   */
  env: Record<string, string>;
}

const CHANNEL_INSIDE = '/run/gatehouse/channel.sock';

/** The variables whose values Gatehouse itself sets in every sandbox (env.ts). */
const GATEHOUSE_SET = new Set([
  'HOME', 'TMPDIR', 'HTTP_PROXY', 'HTTPS_PROXY', 'ALL_PROXY', 'NO_PROXY', 'http_proxy', 'https_proxy', 'all_proxy', 'no_proxy',
  ...Object.keys(trustEnv()),
  ...Object.keys(gatewayEnv(0)),
]);

/** One mount as the engine receives it: the plan's last word on one destination. */
type ContainerMount =
  | { kind: 'bind'; source: string; dest: string; readonly: boolean }
  | { kind: 'tmpfs'; dest: string; readonly: boolean }
  | { kind: 'mask-file'; dest: string };

/**
 * The plan as the mounts an engine can take. bwrap mounts in order, so a later mount hides what it covers;
 * an engine rejects two mounts at one destination and sorts the rest parents first, so a mask given after
 * a deeper bind would no longer hide it. Hence each step here drops every earlier mount it covers, and the
 * survivors mean the same in any parent-first order.
 */
function containerMounts(plan: MountPlan): ContainerMount[] {
  let mounts: ContainerMount[] = [];
  for (const step of plan.steps) {
    // /proc and /dev come from the engine, which also keeps /proc/sys read-only.
    if (isWithin(step.dest, '/proc') || isWithin(step.dest, '/dev')) continue;
    if (step.kind === 'proc' || step.kind === 'dev' || step.kind === 'dir' || step.kind === 'symlink') continue;
    if (step.kind === 'remount-ro') {
      mounts = mounts.map((mount) => (mount.dest === step.dest && mount.kind === 'tmpfs' ? { ...mount, readonly: true } : mount));
      continue;
    }
    mounts = mounts.filter((mount) => !isWithin(mount.dest, step.dest));
    if (step.kind === 'tmpfs') mounts.push({ kind: 'tmpfs', dest: step.dest, readonly: false });
    else if (step.kind === 'mask-file') mounts.push({ kind: 'mask-file', dest: step.dest });
    else mounts.push({ kind: 'bind', source: step.source, dest: step.dest, readonly: step.kind === 'ro-bind' });
  }
  return mounts;
}

function mountArgs(plan: MountPlan, engine: ContainerEngine): string[] {
  // Podman fills a tmpfs with what lies beneath it ("tmpcopyup"), which would copy a masked ~/.ssh into its
  // mask; and runc gives it the mode of the directory it covers, so a 0700 mask owned by root would keep a
  // non-root program from the allows reopened inside it: `U` gives it to the program's user, as bwrap does.
  const empty = engine === 'podman' ? ',notmpcopyup,U' : '';
  return containerMounts(plan).flatMap((mount) => {
    switch (mount.kind) {
      case 'bind':
        return ['--mount', `type=bind,source=${escapeMount(mount.source)},target=${escapeMount(mount.dest)}${mount.readonly ? ',readonly' : ''}`];
      case 'tmpfs': {
        // Private scratch (/tmp) is roomy; a mask over a denied directory is small, empty and read-only.
        const options = mount.readonly ? 'ro,nosuid,nodev,noexec,size=64k' : `rw,nosuid,nodev,size=${mount.dest === '/tmp' ? '1g' : '1m'}`;
        return ['--tmpfs', `${escapeMount(mount.dest)}:${options}${empty}`];
      }
      case 'mask-file':
        return ['--mount', `type=bind,source=/dev/null,target=${escapeMount(mount.dest)},readonly`];
    }
  });
}

/** `--mount` values are comma-separated; a path with a comma or quote cannot be expressed safely. */
function escapeMount(path: string): string {
  if (/[,"\n]/.test(path)) throw new GatehouseError('sandbox_mount_path', `the path ${JSON.stringify(path)} cannot be mounted into a container (it contains a comma or quote); rename it or use the bubblewrap driver`);
  return path;
}

export function containerInvocation(
  spec: SandboxSpec,
  options: { engine: ContainerEngine; image: string; channel: string; tty?: boolean; name?: string },
): ContainerInvocation {
  if (spec.command.length === 0) throw new GatehouseError('sandbox_no_command', 'no command to run: give one after `--`.');
  const { plan, port, gatewayPort, env } = sandboxLayout(spec, bridgeFiles(), { system: [] });
  // The image has its own PATH layout; the host's would point at directories that do not exist there.
  delete env.PATH;
  // What Gatehouse sets itself (paths and the bridge's address, never a secret) goes in argv: in the engine
  // CLI's environment, HTTPS_PROXY would send Podman's image pulls to the bridge's port on the host, and
  // SSL_CERT_FILE, HOME and TMPDIR would point it at places that exist only inside.
  const inArgv = Object.keys(env).filter((name) => GATEHOUSE_SET.has(name) && spec.envAdd?.[name] === undefined).sort();
  const literal = inArgv.flatMap((name) => ['--env', `${name}=${env[name]}`]);
  for (const name of inArgv) delete env[name];

  // The cgroup limits (--memory, --pids-limit) are silently ignored by rootless Podman on cgroup v1, so the
  // rlimits the bubblewrap driver sets (RLIMIT_DATA, RLIMIT_NPROC) are set as well.
  const limits: string[] = [];
  const rlimits = spec.rlimits ?? {};
  if (rlimits.memoryBytes !== undefined) limits.push('--memory', String(rlimits.memoryBytes), '--ulimit', `data=${rlimits.memoryBytes}:${rlimits.memoryBytes}`);
  if (rlimits.processes !== undefined) limits.push('--pids-limit', String(rlimits.processes), '--ulimit', `nproc=${rlimits.processes}:${rlimits.processes}`);
  if (rlimits.openFiles !== undefined) limits.push('--ulimit', `nofile=${rlimits.openFiles}:${rlimits.openFiles}`);
  if (rlimits.cpuSeconds !== undefined) limits.push('--ulimit', `cpu=${rlimits.cpuSeconds}:${rlimits.cpuSeconds}`);

  const user = spec.user ?? { uid: process.getuid?.() ?? 0, gid: process.getgid?.() ?? 0 };
  // Rootless Podman maps the caller's own id into the container with keep-id, which rootful Podman refuses
  // ("keep-id is only supported in rootless mode"); as root, the id is given like Docker's.
  const rootless = options.engine === 'podman' && process.getuid?.() !== 0;
  const identity = rootless ? ['--userns=keep-id'] : ['--user', `${user.uid}:${user.gid}`];
  const settings = { port, ...(gatewayPort !== undefined ? { gatewayPort } : {}), command: spec.command, channelPath: CHANNEL_INSIDE };

  const args = [
    'run',
    '--rm',
    '--interactive',
    ...(options.tty ? ['--tty'] : []),
    ...(options.name ? ['--name', options.name] : []),
    '--network', 'none',
    '--read-only',
    '--cap-drop', 'ALL',
    '--security-opt', 'no-new-privileges',
    '--ipc', 'none',
    '--init',
    // Podman copies the CLI's own proxy variables (FTP_PROXY too, credentials and all) into the container.
    ...(options.engine === 'podman' ? ['--http-proxy=false'] : []),
    ...identity,
    ...limits,
    ...mountArgs(plan, options.engine),
    '--mount', `type=bind,source=${escapeMount(options.channel)},target=${CHANNEL_INSIDE}`,
    '--workdir', plan.cwd,
    ...literal,
    ...Object.keys(env).sort().flatMap((name) => ['--env', name]),
    options.image,
    'node', '/run/gatehouse/bridge.js', JSON.stringify(settings),
  ];
  return { engine: options.engine, plan, args, env };
}

/**
 * Runs the program through the engine's CLI. Resolves once the engine is spawned; `exited` settles with the
 * program's code or signal as the bridge reported it, or, when it never reported, the engine's status as a
 * failed setup (no image, no node in it, a limit the engine cannot set).
 */
export async function launchContainer(spec: SandboxSpec, options: { engine: ContainerEngine; enginePath?: string; image: string }): Promise<SandboxProcess> {
  const stdio = spec.stdio ?? 'inherit';
  const name = `gatehouse-${process.pid}-${Date.now().toString(36)}`;
  const engine = options.enginePath ?? options.engine;
  const engineKill = (signal: NodeJS.Signals) => spawn(engine, ['kill', '--signal', signal, name], { stdio: 'ignore' }).on('error', () => undefined);

  // In a private directory, so no other local user can take the one connection before the bridge does.
  const directory = mkdtempSync(join(tmpdir(), 'gatehouse-channel-'));
  const channelPath = join(directory, 'channel.sock');
  const server = createServer();
  await new Promise<void>((resolve, reject) => server.once('error', reject).listen(channelPath, resolve));
  if (spec.user) chownSync(channelPath, spec.user.uid, spec.user.gid);
  const removeChannel = () => rmSync(directory, { recursive: true, force: true });

  let invocation: ContainerInvocation;
  let child: ChildProcess;
  try {
    invocation = containerInvocation(spec, { ...options, channel: channelPath, tty: stdio === 'inherit' && process.stdin.isTTY === true, name });
    child = spawn(engine, invocation.args, {
      // The engine CLI needs its own environment (DOCKER_HOST, XDG_RUNTIME_DIR...) plus the values for --env.
      env: { ...process.env, ...invocation.env },
      stdio,
    });
  } catch (error) {
    server.close();
    removeChannel();
    throw error;
  }

  let started = spec.deferStart !== true;
  let connected: { socket: Socket; channel: ReturnType<typeof bridgeChannel> } | undefined;
  server.once('connection', (socket) => {
    // The first connection is the bridge's (the program does not exist yet); nobody else gets one.
    server.close();
    removeChannel();
    connected = { socket, channel: bridgeChannel(socket, spec, () => engineKill('SIGKILL')) };
    if (started) connected.channel.mux.send(FRAME.START, 0);
  });

  const exited = new Promise<ExitStatus>((resolve, reject) => {
    child.once('error', (error: NodeJS.ErrnoException) => {
      server.close();
      removeChannel();
      reject(error.code === 'ENOENT' ? new GatehouseError('sandbox_unavailable', `${options.engine} is not installed; run \`gatehouse doctor\``) : error);
    });
    child.once('exit', (code, signal) => {
      server.close();
      removeChannel();
      if (!connected) return resolve({ code, signal, setupFailed: true });
      void connected.channel.ended({ code, signal }).then(resolve);
    });
  });

  return {
    start() {
      started = true;
      connected?.channel.mux.send(FRAME.START, 0);
    },
    pid: child.pid,
    plan: invocation.plan,
    stdin: child.stdin as Writable | null,
    stdout: child.stdout as Readable | null,
    stderr: child.stderr as Readable | null,
    exited,
    kill(signal: NodeJS.Signals = 'SIGTERM') {
      if (signal === 'SIGKILL' || !connected) {
        engineKill(signal);
        // Losing the channel makes the bridge stop the program, whatever the engine does.
        if (signal === 'SIGKILL') connected?.socket.destroy();
        return;
      }
      if (signal in constants.signals) connected.channel.mux.send(FRAME.SIGNAL, 0, Buffer.from(signal, 'latin1'));
    },
  };
}
