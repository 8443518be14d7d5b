/**
 * The container driver, for hosts with Docker or Podman (and for macOS and Windows, through their VMs).
 * The same spec becomes `docker run` / `podman run` arguments: no network (`--network none`) except the
 * bridge, a read-only root, every capability dropped, no-new-privileges, the mount plan's binds and masks,
 * and limits. The image provides /usr and the rest of the system, so host system binds are left out.
 *
 * The bridge differs from bubblewrap's: an engine cannot pass a socketpair in, so the egress proxy's
 * session socket is bind-mounted at /run/gatehouse/proxy.sock and the bridge dials it per connection. That
 * socket is the only Unix socket in the container (/run is empty, no host sockets are mounted), so the
 * program reaching it directly gains nothing over the bridge. Docker's default seccomp profile applies.
 *
 * Verified here: the generated command lines (test/sandbox-container.test.ts). Running them needs an engine,
 * which CI machines do not have.
 */
import { spawn } from 'node:child_process';
import type { Readable, Writable } from 'node:stream';
import { GatehouseError } from '../util/errors.js';
import { bridgeFiles, sandboxLayout } from './bubblewrap.js';
import type { MountPlan } from './mount-plan.js';
import type { ExitStatus, SandboxProcess, SandboxSpec } from './types.js';

export type ContainerEngine = 'docker' | 'podman';

export interface ContainerInvocation {
  engine: ContainerEngine;
  plan: MountPlan;
  args: string[];
  /** Values for the `--env NAME` arguments, given to the engine CLI's own environment (never in argv). */
  env: Record<string, string>;
}

const PROXY_SOCKET_INSIDE = '/run/gatehouse/proxy.sock';

function mountArgs(plan: MountPlan): string[] {
  const args: string[] = [];
  for (const step of plan.steps) {
    // The image supplies the system; /proc, /dev and /tmp come from the engine and the flags below.
    if (step.why === 'system' || step.dest === '/proc/sys' || step.kind === 'proc' || step.kind === 'dev' || step.kind === 'dir' || step.kind === 'symlink') continue;
    if (step.kind === 'tmpfs' && (step.dest === '/tmp' || step.dest === '/run')) continue;
    switch (step.kind) {
      case 'ro-bind':
        args.push('--mount', `type=bind,source=${escapeMount(step.source)},target=${escapeMount(step.dest)},readonly`);
        break;
      case 'bind':
        args.push('--mount', `type=bind,source=${escapeMount(step.source)},target=${escapeMount(step.dest)}`);
        break;
      case 'tmpfs':
        // A mask over a denied directory: an empty, read-only tmpfs.
        args.push('--tmpfs', `${step.dest}:ro,nosuid,nodev,noexec,size=64k`);
        break;
      case 'mask-file':
        args.push('--mount', `type=bind,source=/dev/null,target=${escapeMount(step.dest)},readonly`);
        break;
      case 'remount-ro':
        break;
    }
  }
  return args;
}

/** `--mount` values are comma-separated; a path with a comma or quote cannot be expressed safely. */
function escapeMount(path: string): string {
  if (/[,"\n]/.test(path)) throw new GatehouseError('sandbox_mount_path', `the path ${JSON.stringify(path)} cannot be mounted into a container (it contains a comma or quote); rename it or use the bubblewrap driver`);
  return path;
}

export function containerInvocation(spec: SandboxSpec, options: { engine: ContainerEngine; image: string; tty?: boolean; name?: string }): ContainerInvocation {
  if (spec.command.length === 0) throw new GatehouseError('sandbox_no_command', 'no command to run: give one after `--`.');
  const { plan, port, env } = sandboxLayout(spec, bridgeFiles());
  // The image has its own PATH layout; the host's would point at directories that do not exist there.
  delete env.PATH;

  const limits: string[] = [];
  const rlimits = spec.rlimits ?? {};
  if (rlimits.memoryBytes !== undefined) limits.push('--memory', String(rlimits.memoryBytes));
  if (rlimits.processes !== undefined) limits.push('--pids-limit', String(rlimits.processes));
  if (rlimits.openFiles !== undefined) limits.push('--ulimit', `nofile=${rlimits.openFiles}:${rlimits.openFiles}`);
  if (rlimits.cpuSeconds !== undefined) limits.push('--ulimit', `cpu=${rlimits.cpuSeconds}:${rlimits.cpuSeconds}`);

  const user = spec.user ?? { uid: process.getuid?.() ?? 0, gid: process.getgid?.() ?? 0 };
  const identity = options.engine === 'podman' ? ['--userns=keep-id'] : ['--user', `${user.uid}:${user.gid}`];
  const settings = { port, command: spec.command, proxySocketPath: spec.proxySocket ? PROXY_SOCKET_INSIDE : undefined };

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
    ...identity,
    ...limits,
    '--tmpfs', '/tmp:rw,nosuid,nodev,size=1g',
    '--tmpfs', '/run:rw,nosuid,nodev,size=1m',
    ...mountArgs(plan),
    ...(spec.proxySocket ? ['--mount', `type=bind,source=${escapeMount(spec.proxySocket)},target=${PROXY_SOCKET_INSIDE}`] : []),
    '--workdir', plan.cwd,
    ...Object.keys(env).sort().flatMap((name) => ['--env', name]),
    options.image,
    'node', '/run/gatehouse/bridge.js', JSON.stringify(settings),
  ];
  return { engine: options.engine, plan, args, env };
}

/** Runs the invocation through the engine's CLI. Exit codes pass through (`docker run` returns the program's). */
export function launchContainer(spec: SandboxSpec, options: { engine: ContainerEngine; enginePath?: string; image: string }): SandboxProcess {
  const stdio = spec.stdio ?? 'inherit';
  const name = `gatehouse-${process.pid}-${Date.now().toString(36)}`;
  const invocation = containerInvocation(spec, { ...options, tty: stdio === 'inherit' && process.stdin.isTTY === true, name });
  const child = spawn(options.enginePath ?? options.engine, invocation.args, {
    // The engine CLI needs its own environment (DOCKER_HOST, XDG_RUNTIME_DIR...) plus the values for --env.
    env: { ...process.env, ...invocation.env },
    stdio,
  });
  const exited = new Promise<ExitStatus>((resolve, reject) => {
    child.once('error', (error: NodeJS.ErrnoException) =>
      reject(error.code === 'ENOENT' ? new GatehouseError('sandbox_unavailable', `${options.engine} is not installed; run \`gatehouse doctor\``) : error),
    );
    // 125: the engine itself failed (no daemon, no image); the program never ran.
    child.once('exit', (code, signal) => resolve({ code, signal, ...(code === 125 ? { setupFailed: true } : {}) }));
  });
  return {
    pid: child.pid,
    plan: invocation.plan,
    stdin: child.stdin as Writable | null,
    stdout: child.stdout as Readable | null,
    stderr: child.stderr as Readable | null,
    exited,
    kill(signal: NodeJS.Signals = 'SIGTERM') {
      spawn(options.enginePath ?? options.engine, ['kill', '--signal', signal, name], { stdio: 'ignore' }).on('error', () => undefined);
    },
  };
}
