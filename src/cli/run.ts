/**
 * `gatehouse run [--agent NAME] -- CMD ARGS...`: runs a program in the sandbox under the policy for that
 * agent, with the egress proxy as its only way out. The program's exit code (or signal) becomes ours.
 * Everything heavy is imported inside the action, so `gatehouse run -- true` starts fast.
 */
import type { Command } from 'commander';
import type { Config } from '../config/schema.js';
import type { PolicyEngine } from '../policy/engine.js';
import type { Principal } from '../policy/types.js';
import type { CachedLaunch } from '../sandbox/run-cache.js';
import { examples, globalOptions, printJson } from './common.js';

interface RunOptions {
  agent?: string;
  allowWeaker?: boolean;
  dryRun?: boolean;
  json?: boolean;
}

const FORWARDED_SIGNALS = ['SIGINT', 'SIGTERM', 'SIGHUP', 'SIGQUIT', 'SIGUSR1', 'SIGUSR2', 'SIGWINCH'] as const;

export function registerRunCommands(program: Command): void {
  const run = program
    .command('run')
    .description('Run a program (an agent CLI, a script, an MCP server) in a sandbox bound by the policy')
    .argument('<command...>', 'the program and its arguments (put them after --)')
    .option('-a, --agent <name>', 'the agent whose policy applies')
    .option('--allow-weaker', 'start even if this host cannot give the isolation the policy asks for (recorded)')
    .option('--dry-run', 'print the sandbox plan (mounts, environment names, bwrap arguments) and exit')
    .option('--json', 'with --dry-run: print the plan as JSON')
    .action(async (command: string[], options: RunOptions, self: Command) => {
      process.exitCode = await runAction(command, options, self);
    });
  examples(run, [
    'gatehouse run --agent claude -- claude',
    'gatehouse run --agent ci-bot -- npm test',
    'gatehouse run -- curl -sS https://api.github.com/zen',
    'gatehouse run --dry-run --json -- bash',
  ]);
}

async function runAction(command: string[], options: RunOptions, self: Command): Promise<number> {
  const globals = globalOptions(self);
  const { homedir, hostname } = await import('node:os');
  const { resolveDataDir } = await import('../util/paths.js');
  const { cachePath, readCachedLaunch, writeCachedLaunch } = await import('../sandbox/run-cache.js');
  const principal = { ...(options.agent ? { agent: options.agent } : {}), ...(process.env.USER ? { user: process.env.USER } : {}) };
  const provisionalDataDir = resolveDataDir(globals.dataDir);
  const cacheFile = options.dryRun
    ? undefined
    : cachePath({ configFlag: globals.config, provisionalDataDir, cwd: process.cwd(), home: homedir(), agent: options.agent, user: process.env.USER });
  // A ./gatehouse.yaml read instead of <data-dir>/gatehouse.yaml is also judged by the policy it shadows,
  // under which a program may have planted it (config-guard.ts); that takes the full path.
  const { existsSync } = await import('node:fs');
  const { join, resolve } = await import('node:path');
  const shadowed =
    !options.dryRun && globals.config === undefined && existsSync(resolve('gatehouse.yaml')) && existsSync(join(provisionalDataDir, 'gatehouse.yaml'))
      ? join(provisionalDataDir, 'gatehouse.yaml')
      : undefined;

  // Fast path: a cached derivation of this exact config, and no egress proxy to start.
  let prepared = cacheFile && !shadowed ? readCachedLaunch(cacheFile) : undefined;
  let loaded: { config: Config; engine: PolicyEngine } | undefined;
  // An allow that leads through a symlink needs the policy's own decision on where it leads (mount-plan.ts).
  if (!prepared || prepared.needsEgress || (await import('../sandbox/mount-plan.js')).followsSymlinks(prepared.view)) {
    const { commandContext } = await import('./context.js');
    const { loadPolicy } = await import('../node/policy-source.js');
    const context = commandContext(globals, { requireConfig: false });
    const config = context.loaded?.config ?? (await import('../config/schema.js')).configSchema.parse({ version: 1 });
    const { engine } = loadPolicy(config, context.configPath);
    const { configFiles } = await import('../sandbox/config-guard.js');
    loaded = { config, engine };
    prepared = {
      v: 1,
      dataDir: context.dataDir,
      configPath: context.configPath,
      node: config.node.name ?? hostname(),
      audit: config.audit,
      sandbox: config.sandbox,
      policy: { version: engine.version, digest: engine.digest },
      view: engine.filesystemView(principal),
      needsEgress: config.egress.enabled && config.policy.network.some((rule) => 'allow' in rule),
      configFiles: context.configPath && context.loaded ? configFiles(config, context.configPath, context.loaded.text, homedir()) : [],
    };
    if (!options.dryRun) {
      await guardConfig(prepared, engine, principal);
      if (shadowed && context.configPath) await guardShadowingConfig(context.configPath, shadowed, prepared, principal);
    }
    if (cacheFile) writeCachedLaunch(cacheFile, prepared);
  } else {
    await guardConfig(prepared, undefined, principal);
  }

  if (options.dryRun) return dryRun(command, prepared, options.agent, options.json === true, loaded?.engine, principal);

  const { launchSandboxed } = await import('../sandbox/launch.js');
  // A node running for this data dir owns the audit log and the egress proxy: the run goes through it.
  const { connectToNode } = await import('../node/control-client.js');
  const node = await connectToNode(prepared.dataDir);
  // Otherwise the log is opened on first use: for a bubblewrap launch that is after bwrap is spawned, so
  // the two overlap.
  const audit = node ? node.audit : lazyAuditLog(() => openAuditLog(prepared));
  const view = prepared.view;
  const policy = loaded?.engine ?? { ...prepared.policy, filesystemView: () => view };
  let egress: { close(): Promise<void> } | undefined = node;
  try {
    // The egress proxy runs for the session when the policy lets anything out at all (in the node, or
    // else in this process); otherwise the bridge refuses (and records) every connection.
    let proxySocket: string | undefined;
    let envAdd: Record<string, string> | undefined;
    let caCertificate: string | undefined;
    // The node's MCP gateway, carried into the sandbox for the agent's MCP client (`gatehouse mcp`).
    let gatewaySocket: string | undefined;
    // The egress session's id, so the launch and exit records join the connections made in it.
    let session: string | undefined;
    if (node) {
      const opened = await node.open(principal, prepared.policy, prepared.needsEgress);
      if (opened.egress) {
        proxySocket = opened.egress.socketPath;
        if (Object.keys(opened.egress.env).length > 0) envAdd = opened.egress.env;
        caCertificate = opened.egress.caCertificate;
        session = opened.egress.session;
      }
      // Only ever dialled (never mounted), so nothing else of the data dir reaches the sandbox through it.
      if (typeof opened.gateway?.socketPath === 'string') gatewaySocket = opened.gateway.socketPath;
    } else if (prepared.needsEgress && loaded) {
      const started = await startSessionEgress(loaded.config, prepared.dataDir, loaded.engine, audit, principal, prepared.node);
      egress = started.proxy;
      proxySocket = started.socketPath;
      envAdd = started.envAdd;
      caCertificate = started.caCertificate;
      session = started.session;
    }

    const child = await launchSandboxed({
      command,
      principal: session ? { ...principal, session } : principal,
      policy,
      audit,
      node: prepared.node,
      settings: prepared.sandbox,
      dataDir: prepared.dataDir,
      // The program must not rewrite the policy its next run will get.
      ...(prepared.configPath ? { protect: [prepared.configPath] } : {}),
      stdio: 'inherit',
      ...(options.allowWeaker ? { allowWeaker: true } : {}),
      ...(proxySocket ? { proxySocket } : {}),
      ...(envAdd ? { envAdd } : {}),
      ...(caCertificate ? { caCertificate } : {}),
      ...(gatewaySocket ? { gatewaySocket } : {}),
    });
    if (child.weaker.length > 0) {
      process.stderr.write(`gatehouse: WARNING: running with weaker isolation (recorded in the audit log):\n${child.weaker.map((gap) => `  - ${gap}`).join('\n')}\n`);
    }
    const forward = (signal: NodeJS.Signals) => child.kill(signal);
    for (const signal of FORWARDED_SIGNALS) process.on(signal, forward);
    const status = await child.exited;
    for (const signal of FORWARDED_SIGNALS) process.off(signal, forward);

    if (status.setupFailed) {
      if (status.error) process.stderr.write(`gatehouse: ${status.error}\n`);
      process.stderr.write('gatehouse: the sandbox could not start (see the message above); `gatehouse doctor` says what this host lacks\n');
      return 2;
    }
    if (status.signal) {
      // The proxy first: closing it writes its last records (the summary of refusals it only counted).
      await egress?.close();
      egress = undefined;
      await audit.close();
      // Die the same way, so a shell sees the signal; fall back to 128+N if it is caught or ignored.
      process.kill(process.pid, status.signal);
      const { constants } = await import('node:os');
      return 128 + (constants.signals[status.signal] ?? 0);
    }
    return status.code ?? 1;
  } finally {
    await egress?.close();
    await audit.close();
  }
}

type Permits = (path: string, access: 'read' | 'write') => boolean;

function permitsOf(engine: PolicyEngine, principal: Principal): Permits {
  return (path, access) => engine.decide({ surface: 'filesystem', ...principal, path, access }).effect === 'allow';
}

async function refuse(exposure: string | undefined): Promise<void> {
  if (!exposure) return;
  const { GatehouseError } = await import('../util/errors.js');
  throw new GatehouseError('config_writable', exposure, { exitCode: 2 });
}

/** Refuses (exit 2) when the program may write the config this run read, or a file it names. */
async function guardConfig(prepared: CachedLaunch, engine: PolicyEngine | undefined, principal: Principal): Promise<void> {
  const { configExposure } = await import('../sandbox/config-guard.js');
  const { homedir } = await import('node:os');
  await refuse(
    configExposure({
      files: prepared.configFiles ?? (prepared.configPath ? [prepared.configPath] : []),
      configPath: prepared.configPath,
      view: prepared.view,
      home: homedir(),
      cwd: process.cwd(),
      dataDir: prepared.dataDir,
      ...(engine ? { permits: permitsOf(engine, principal) } : {}),
    }),
  );
}

/**
 * Refuses (exit 2) when `configPath` (a ./gatehouse.yaml) lies where the policy of the config it shadows
 * lets a program write. A shadowed config that does not load cannot be judged, and is left alone.
 */
async function guardShadowingConfig(configPath: string, shadowed: string, prepared: CachedLaunch, principal: Principal): Promise<void> {
  const { configExposure } = await import('../sandbox/config-guard.js');
  const { loadConfigFile } = await import('../config/load.js');
  const { loadPolicy } = await import('../node/policy-source.js');
  const { homedir } = await import('node:os');
  let engine: PolicyEngine;
  try {
    engine = loadPolicy(loadConfigFile(shadowed).config, shadowed).engine;
  } catch {
    return;
  }
  await refuse(
    configExposure({
      files: [configPath],
      configPath,
      view: engine.filesystemView(principal),
      home: homedir(),
      cwd: process.cwd(),
      dataDir: prepared.dataDir,
      permits: permitsOf(engine, principal),
      policyOf: shadowed,
    }),
  );
}

async function dryRun(
  command: string[],
  prepared: CachedLaunch,
  agent: string | undefined,
  json: boolean,
  engine: PolicyEngine | undefined,
  principal: Principal,
): Promise<number> {
  const { bwrapInvocation } = await import('../sandbox/bubblewrap.js');
  const { rlimitsFrom, settingsFor } = await import('../sandbox/launch.js');
  const { homedir } = await import('node:os');
  const settings = settingsFor(prepared.sandbox, agent) ?? prepared.sandbox;
  const rlimits = rlimitsFrom(settings);
  const invocation = bwrapInvocation(
    {
      command,
      view: prepared.view,
      home: homedir(),
      cwd: process.cwd(),
      dataDir: prepared.dataDir,
      ...(prepared.configPath ? { protect: [prepared.configPath] } : {}),
      ...(engine ? { permits: permitsOf(engine, principal) } : {}),
      envAllow: settings.env ?? [],
      proxyPort: prepared.sandbox.proxyPort,
      ...(rlimits ? { rlimits } : {}),
    },
    3,
  );
  const plan = { policy: prepared.policy.version, ...(rlimits ? { rlimits } : {}), mounts: invocation.plan.steps, masked: invocation.plan.masked, gaps: invocation.plan.gaps, env: Object.keys(invocation.env).sort(), bwrap: invocation.args };
  if (json) printJson(plan);
  else {
    for (const step of plan.mounts) process.stdout.write(`${step.kind.padEnd(10)} ${'source' in step ? `${step.source} -> ` : ''}${step.dest}  (${step.why})\n`);
    process.stdout.write(`environment: ${plan.env.join(' ')}\n`);
    for (const gap of plan.gaps) process.stdout.write(`gap: ${gap}\n`);
  }
  return 0;
}

function lazyAuditLog(open: () => Promise<import('../audit/record.js').AuditLog>): import('../audit/record.js').AuditLog {
  let opened: Promise<import('../audit/record.js').AuditLog> | undefined;
  return {
    append: async (record, options) => (await (opened ??= open())).append(record, options),
    close: async () => {
      if (opened) await (await opened).close();
    },
  };
}

/** The node's chained audit log; from audit/node-log.js, which does not load the sinks (start-up cost). */
async function openAuditLog(prepared: CachedLaunch): Promise<import('../audit/record.js').AuditLog> {
  const { openNodeAuditLog } = await import('../audit/node-log.js');
  return openNodeAuditLog(prepared.dataDir, prepared.node, prepared.audit);
}

/** Starts an egress proxy in this process with one session for the sandbox, plus placeholders for grants. */
async function startSessionEgress(
  config: import('../config/schema.js').Config,
  dataDir: string,
  engine: import('../policy/engine.js').PolicyEngine,
  audit: import('../audit/record.js').AuditLog,
  principal: import('../policy/types.js').Principal,
  node: string,
): Promise<{ proxy: { close(): Promise<void> }; socketPath: string; session: string; envAdd: Record<string, string> | undefined; caCertificate: string | undefined }> {
  const { startEgressProxy } = await import('../egress/index.js');
  const grants = engine.grants(principal).filter((grant) => grant.env !== undefined);
  let placeholders: import('../secrets/index.js').PlaceholderRegistry | undefined;
  let resolveSecret: ((name: string) => Promise<string>) | undefined;
  let envAdd: Record<string, string> | undefined;
  const session = `run-${process.pid}`;
  if (grants.length > 0) {
    const { PlaceholderRegistry, openSecrets } = await import('../secrets/index.js');
    const secrets = openSecrets({ dataDir, settings: config.secrets });
    placeholders = new PlaceholderRegistry();
    resolveSecret = (name) => secrets.resolveSecret(name);
    envAdd = (await placeholders.issueForSession(session, grants, resolveSecret)).env;
  }
  // TLS inspection (and with it placeholder swaps in HTTPS) needs the node's CA, trusted inside the sandbox.
  const inspects = grants.length > 0 || config.policy.network.some((rule) => 'inspect' in rule && rule.inspect === true);
  // What the proxy can see (inspected requests) is scanned for secrets, the vault's included; without
  // inspection there is nothing to scan, and the vault is not opened (start-up stays lean).
  let scanner: import('../dlp/index.js').Scanner | undefined;
  if (inspects) {
    const { openSecrets } = await import('../secrets/index.js');
    scanner = await openSecrets({ dataDir, settings: config.secrets }).createScanner(engine.dlp);
  }
  const { join } = await import('node:path');
  const proxy = await startEgressProxy({
    policy: { current: engine },
    audit,
    authenticate: () => undefined,
    node,
    settings: { ...config.egress, listen: '127.0.0.1:0', socks: undefined },
    ...(inspects ? { dataDir } : {}),
    ...(placeholders ? { placeholders } : {}),
    ...(resolveSecret ? { resolveSecret } : {}),
    ...(scanner ? { scanner } : {}),
    // In sync mode no byte flows before the connection's record is on disk.
    awaitAudit: config.audit.mode === 'sync',
  });
  const egressSession = await proxy.openSession(principal, session);
  return {
    proxy,
    socketPath: egressSession.socketPath,
    session,
    envAdd,
    caCertificate: inspects ? join(dataDir, 'egress-ca', 'ca.pem') : undefined,
  };
}
