/**
 * The launcher: policy in, a running sandboxed program out, with its launch, exit and denied connections
 * in the audit trail. `gatehouse run` and the MCP gateway's stdio upstreams both come through here.
 *
 *   const child = await launchSandboxed({ command: ['npx', 'server-filesystem', '/work'], principal: { agent },
 *     policy: holder.current, audit, stdio: 'pipe', server: 'fs', proxySocket: session.socketPath });
 *   child.stdout.pipe(...); child.stdin.write(...); const { code, signal } = await child.exited;
 */
import { spawn, spawnSync } from 'node:child_process';
import { homedir } from 'node:os';
import type { Readable, Writable } from 'node:stream';
import type { SandboxSettings } from '../config/schema.js';
import { newCorrelationId, type AuditLog, type AuditRecord } from '../audit/record.js';
import type { PolicyEngine } from '../policy/engine.js';
import type { Principal } from '../policy/types.js';
import { GatehouseError } from '../util/errors.js';
import { DEFAULT_PROXY_PORT, launchBubblewrap } from './bubblewrap.js';
import { sandboxEnv } from './env.js';
import { quickGaps, SYSTEM_PATH, which } from './host.js';
import { computeMountPlan } from './mount-plan.js';
import type { ExitStatus, Rlimits, SandboxProcess, SandboxSpec } from './types.js';

export interface LaunchRequest {
  command: string[];
  principal: Principal & { session?: string };
  /**
   * The policy: its filesystem view and identity, and `decide` to judge an allow that leads through a
   * symlink (without it, such an allow is not mounted).
   */
  policy: Pick<PolicyEngine, 'version' | 'digest' | 'filesystemView'> & Partial<Pick<PolicyEngine, 'decide'>>;
  audit: AuditLog;
  /** Names this node in audit records. */
  node?: string;
  settings?: Partial<SandboxSettings>;
  home?: string;
  cwd?: string;
  dataDir?: string;
  /** Placeholders for the secrets the policy grants (from the secrets broker). */
  envAdd?: Record<string, string>;
  envSource?: NodeJS.ProcessEnv;
  /** The egress proxy's per-session Unix socket. Without one, every connection is refused and recorded. */
  proxySocket?: string;
  /** The egress proxy's TLS-inspection CA (PEM file), trusted inside the sandbox. */
  caCertificate?: string;
  /** The MCP gateway's HTTP endpoint on a socket of this run's own, reachable from inside (SandboxSpec.gatewaySocket). */
  gatewaySocket?: string;
  stdio?: 'inherit' | 'pipe';
  /** Start even when the host cannot give the isolation the policy asks for (recorded as such). */
  allowWeaker?: boolean;
  /** Files kept read-only inside: the config file the policy came from. */
  protect?: string[];
  /** The MCP server this sandbox runs, for the audit trail. */
  server?: string;
  user?: SandboxSpec['user'];
}

export interface Launched extends SandboxProcess {
  correlationId: string;
  driver: 'bubblewrap' | 'container' | 'none';
  /** Isolation this launch does without (empty for a full sandbox). */
  weaker: string[];
}

export function rlimitsFrom(settings: Partial<SandboxSettings> | undefined): Rlimits | undefined {
  const limits = settings?.rlimits;
  if (!limits) return undefined;
  const out: Rlimits = {};
  if (limits.memory !== undefined) out.memoryBytes = limits.memory;
  if (limits.processes !== undefined) out.processes = limits.processes;
  if (limits.openFiles !== undefined) out.openFiles = limits.openFiles;
  if (limits.cpuTime !== undefined) out.cpuSeconds = Math.max(1, Math.ceil(limits.cpuTime / 1000));
  return Object.keys(out).length > 0 ? out : undefined;
}

/** The sandbox settings for one agent: its own rlimits replace the defaults field by field; env names add up. */
export function settingsFor(settings: Partial<SandboxSettings> | undefined, agent: string | undefined): Partial<SandboxSettings> | undefined {
  const own = agent !== undefined ? settings?.agents?.[agent] : undefined;
  if (!settings || !own) return settings;
  return {
    ...settings,
    rlimits: { ...settings.rlimits, ...own.rlimits },
    env: [...(settings.env ?? []), ...(own.env ?? [])],
  };
}

export async function launchSandboxed(request: LaunchRequest): Promise<Launched> {
  request = { ...request, settings: settingsFor(request.settings, request.principal.agent) };
  const started = Date.now();
  const correlationId = newCorrelationId();
  const home = request.home ?? homedir();
  const cwd = request.cwd ?? process.cwd();
  const view = request.policy.filesystemView(request.principal);
  const decide = request.policy.decide?.bind(request.policy);
  const { session: _session, ...who } = request.principal;
  const permits = decide
    ? (path: string, access: 'read' | 'write'): boolean => decide({ surface: 'filesystem', ...who, path, access }).effect === 'allow'
    : undefined;
  const bwrapPath = request.settings?.bwrap ?? 'bwrap';
  const rlimits = rlimitsFrom(request.settings);

  let choice = chooseDriver(request.settings, bwrapPath, rlimits !== undefined);
  // With weaker isolation allowed, find out now whether bwrap can really start here (user namespaces may
  // be refused), so the launch falls back instead of failing. Without it, a refusal ends the run (exit 2).
  if (request.allowWeaker && choice.driver === 'bubblewrap') {
    const refused = bwrapRefused(bwrapPath);
    if (refused) choice = { driver: 'none', gaps: [`bwrap cannot create a sandbox here: ${refused}`] };
  }
  const hostGaps = choice.gaps;
  const planGaps = computeMountPlan({ view, home, cwd, ...(request.dataDir ? { dataDir: request.dataDir } : {}), ...(permits ? { permits } : {}) }).gaps;
  const weaker = [...hostGaps, ...planGaps];
  const driver: Launched['driver'] = choice.driver;

  const record = (fields: Pick<AuditRecord, 'action' | 'effect' | 'reason'> & Partial<AuditRecord>): AuditRecord => ({
    v: 1,
    time: new Date().toISOString(),
    node: request.node ?? 'local',
    principal: request.principal,
    surface: 'system',
    resource: request.server ? `mcp-server:${request.server}` : request.command.join(' '),
    rules: [],
    latencyUs: 0,
    correlationId,
    policy: { version: request.policy.version, digest: request.policy.digest },
    ...fields,
  });
  const facts = {
    driver,
    argv: request.command,
    cwd,
    network: request.proxySocket ? 'egress proxy' : 'none',
    ...(request.gatewaySocket ? { mcpGateway: 'http://127.0.0.1:7401/mcp' } : {}),
    ...(request.server ? { server: request.server } : {}),
    ...(rlimits ? { rlimits } : {}),
  };

  const onWeaker = request.settings?.onWeaker ?? 'refuse';
  if (weaker.length > 0 && !request.allowWeaker && onWeaker === 'refuse') {
    await request.audit.append(
      record({ action: 'sandbox.launch', effect: 'deny', reason: `refused: the host cannot give the isolation the policy asks for: ${weaker.join('; ')}`, details: { ...facts, weaker } }),
    );
    throw new GatehouseError('sandbox_weaker', `refusing to start: ${weaker[0]}${weaker.length > 1 ? ` (and ${weaker.length - 1} more)` : ''}; run \`gatehouse doctor\`, or pass --allow-weaker to start anyway`, {
      exitCode: 2,
      details: { weaker },
    });
  }

  const spec: SandboxSpec = {
    command: request.command,
    view,
    home,
    cwd,
    stdio: request.stdio ?? 'inherit',
    proxyPort: request.settings?.proxyPort ?? DEFAULT_PROXY_PORT,
    bwrapPath,
    ...(request.dataDir ? { dataDir: request.dataDir } : {}),
    ...(request.protect ? { protect: request.protect } : {}),
    ...(permits ? { permits } : {}),
    ...(request.envSource ? { envSource: request.envSource } : {}),
    ...(request.settings?.env ? { envAllow: request.settings.env } : {}),
    ...(request.envAdd ? { envAdd: request.envAdd } : {}),
    ...(request.proxySocket ? { proxySocket: request.proxySocket } : {}),
    ...(request.caCertificate ? { caCertificate: request.caCertificate } : {}),
    ...(request.gatewaySocket ? { gatewaySocket: request.gatewaySocket } : {}),
    ...(rlimits ? { rlimits } : {}),
    ...(request.user ? { user: request.user } : {}),
    onConnectionDenied: (event) => {
      void request.audit
        .append(
          record({
            surface: 'network',
            action: 'connect',
            resource: `sandbox bridge stream ${event.stream}`,
            effect: 'deny',
            reason: event.reason,
            details: { driver, ...(request.server ? { server: request.server } : {}) },
          }),
        )
        .catch(() => undefined);
    },
  };

  const recordLaunch = (): Promise<void> =>
    request.audit.append(
      record({
        action: 'sandbox.launch',
        effect: 'info',
        reason: weaker.length > 0 ? `started with weaker isolation: ${weaker.join('; ')}` : `started in a ${driver} sandbox`,
        details: { ...facts, ...(weaker.length > 0 ? { weaker } : {}) },
      }),
    );
  let child: SandboxProcess;
  if (driver === 'bubblewrap' || driver === 'container') {
    // The sandbox and the bridge start while the launch is recorded; the program itself waits for `start()`.
    const image = request.settings?.container?.image ?? 'node:20-bookworm-slim';
    child =
      driver === 'bubblewrap'
        ? await launchBubblewrap({ ...spec, deferStart: true })
        : await (await import('./container.js')).launchContainer({ ...spec, deferStart: true }, { engine: choice.engine!, enginePath: choice.enginePath!, image });
    try {
      await recordLaunch();
    } catch (error) {
      // Durable before the program runs: a launch that cannot be recorded does not happen.
      child.kill('SIGKILL');
      for (const stream of [child.stdin, child.stdout, child.stderr]) stream?.destroy();
      throw error;
    }
    child.start?.();
  } else {
    await recordLaunch();
    child = launchDirect(spec);
  }
  const exited = child.exited.then(async (status: ExitStatus) => {
    await request.audit
      .append(
        record({
          action: 'sandbox.exit',
          effect: status.setupFailed ? 'error' : 'info',
          reason: status.setupFailed
            ? `the sandbox did not start or was killed (${driver === 'container' ? 'engine' : 'bwrap'} exit ${status.code ?? status.signal})`
            : status.signal
              ? `ended by ${status.signal}`
              : `exited with code ${status.code}`,
          details: { driver, code: status.code, signal: status.signal, durationMs: Date.now() - started },
        }),
      )
      .catch(() => undefined);
    return status;
  });
  return { ...child, exited, kill: child.kill.bind(child), correlationId, driver, weaker };
}

/** Starts the smallest sandbox with the namespaces every launch uses; the reason it failed, if it did. */
function bwrapRefused(bwrapPath: string): string | undefined {
  const result = spawnSync(bwrapPath, ['--unshare-user', '--unshare-pid', '--unshare-net', '--die-with-parent', '--ro-bind', '/', '/', 'true'], {
    stdio: ['ignore', 'ignore', 'pipe'],
    encoding: 'utf8',
    timeout: 10000,
  });
  if (result.status === 0) return undefined;
  return (result.stderr ?? '').trim().replace(/^bwrap: /, '') || `exit ${result.status ?? result.signal}`;
}

/**
 * Which driver runs this launch: `auto` takes bubblewrap when the host has it, else a container engine.
 * `gaps` lists what the chosen driver cannot give (driver `none`: no sandbox at all).
 */
export function chooseDriver(
  settings: Partial<SandboxSettings> | undefined,
  bwrapPath: string,
  needsRlimits: boolean,
): { driver: Launched['driver']; gaps: string[]; engine?: 'docker' | 'podman'; enginePath?: string } {
  const wanted = settings?.driver ?? 'auto';
  if (wanted !== 'container') {
    const gaps = quickGaps(bwrapPath);
    if (gaps.length === 0 && needsRlimits && !which('prlimit', SYSTEM_PATH)) gaps.push('prlimit is not installed, so rlimits cannot be applied (install util-linux)');
    if (gaps.length === 0 || wanted === 'bubblewrap') return { driver: gaps.length === 0 ? 'bubblewrap' : 'none', gaps };
  }
  const preferred = settings?.container?.engine ?? 'auto';
  for (const engine of preferred === 'auto' ? (['podman', 'docker'] as const) : [preferred]) {
    const enginePath = which(engine);
    if (enginePath) return { driver: 'container', gaps: [], engine, enginePath };
  }
  const bubblewrapGaps = wanted === 'auto' ? quickGaps(bwrapPath) : [];
  return { driver: 'none', gaps: [...bubblewrapGaps, wanted === 'container' && preferred !== 'auto' ? `${preferred} is not installed` : 'no Docker or Podman CLI for the container driver'] };
}

/**
 * Weaker isolation, chosen explicitly: the program runs unsandboxed with the scrubbed environment and
 * placeholders only. No proxy variables: without a network namespace they would be advice, not a boundary.
 * The gateway is reachable as it is on the host (gateway.listen, or `gatehouse mcp`'s own search).
 */
function launchDirect(spec: SandboxSpec): SandboxProcess {
  const add = { ...spec.envAdd };
  const env = sandboxEnv({ home: spec.home, ...(spec.envSource ? { source: spec.envSource } : {}), ...(spec.envAllow ? { allow: spec.envAllow } : {}), add });
  const stdio = spec.stdio ?? 'inherit';
  const child = spawn(spec.command[0]!, spec.command.slice(1), { env, cwd: spec.cwd, stdio });
  const exited = new Promise<ExitStatus>((resolve) => {
    child.once('error', (error: NodeJS.ErrnoException) => {
      process.stderr.write(`gatehouse: cannot start ${spec.command[0]}: ${error.message}\n`);
      resolve({ code: error.code === 'ENOENT' ? 127 : 126, signal: null });
    });
    child.once('exit', (code, signal) => resolve({ code, signal }));
  });
  return {
    pid: child.pid,
    plan: { steps: [], masked: [], gaps: [], cwd: spec.cwd, home: spec.home },
    stdin: child.stdin as Writable | null,
    stdout: child.stdout as Readable | null,
    stderr: child.stderr as Readable | null,
    exited,
    kill: (signal = 'SIGTERM') => void child.kill(signal),
  };
}
