/**
 * Stdio MCP servers in sandboxes: the launcher the gateway plugs in (`launch` in gateway options). Each
 * server runs under its own principal, `mcp-server:<name>`, so policy rules scoped with
 * `agents: ["mcp-server:fs"]` give that server (and only it) its filesystem and network.
 *
 *   const launch = mcpServerLauncher({ policy: holder, audit, settings: config.sandbox, dataDir,
 *     egressSessionFor: (principal) => egress.openSession(principal) });
 *   startGateway({ ..., launch });
 */
import type { SandboxSettings } from '../config/schema.js';
import type { AuditLog } from '../audit/record.js';
import type { PolicyHolder } from '../policy/engine.js';
import type { Principal } from '../policy/types.js';
import { homedir } from 'node:os';
import { GatehouseError } from '../util/errors.js';
import { configExposure } from './config-guard.js';
import { launchSandboxed, type Launched } from './launch.js';

/** What the gateway knows about a stdio upstream (structurally its `ChildCommand`). */
export interface ServerCommand {
  command: string;
  args: string[];
  env: Record<string, string>;
  cwd?: string;
}

export interface McpServerLauncherOptions {
  policy: PolicyHolder;
  audit: AuditLog;
  node?: string;
  settings?: Partial<SandboxSettings>;
  dataDir?: string;
  /** The server's principal; default `{ agent: "mcp-server:<name>" }`. */
  principalFor?: (server: string) => Principal;
  /** An egress session for the server, closed when it exits; without one the server has no network at all. */
  egressSessionFor?: (principal: Principal, server: string) => Promise<{ socketPath: string; close(): Promise<void> } | undefined>;
  allowWeaker?: boolean;
  /** Run servers as this host user (a root-run node dropping privileges). */
  user?: { uid: number; gid: number };
  /**
   * The node's config and the files it names (`configFiles`): a server whose policy lets it write one is not
   * started, since it could rewrite the policy the node reloads; the config itself is kept read-only inside.
   * Asked per launch, so it follows reloads.
   */
  config?: () => { path: string; files: string[] };
}

export function serverPrincipal(server: string): Principal {
  return { agent: `mcp-server:${server}` };
}

export function mcpServerLauncher(options: McpServerLauncherOptions): (server: string, command: ServerCommand) => Promise<Launched> {
  return async (server, command) => {
    const principal = options.principalFor?.(server) ?? serverPrincipal(server);
    // Read per launch: a reloaded policy applies to the next server started.
    const policy = options.policy.current;
    const config = options.config?.();
    if (config) {
      const exposure = configExposure({
        files: config.files,
        configPath: config.path,
        view: policy.filesystemView(principal),
        home: homedir(),
        cwd: command.cwd ?? process.cwd(),
        ...(options.dataDir ? { dataDir: options.dataDir } : {}),
        permits: (path, access) => policy.decide({ surface: 'filesystem', ...principal, path, access }).effect === 'allow',
      });
      if (exposure) throw new GatehouseError('config_writable', `MCP server "${server}" (principal ${principal.agent ?? 'unnamed'}): ${exposure}`, { exitCode: 2 });
    }
    const session = await options.egressSessionFor?.(principal, server);
    const proxySocket = session?.socketPath;
    let launched: Launched;
    try {
      launched = await launchSandboxed({
        command: [command.command, ...command.args],
        principal,
        policy,
        audit: options.audit,
        stdio: 'pipe',
        server,
        // The upstream's configured environment is added on top of the scrub (the gateway resolved it).
        envAdd: command.env,
        ...(command.cwd ? { cwd: command.cwd } : {}),
        ...(options.node ? { node: options.node } : {}),
        ...(options.settings ? { settings: options.settings } : {}),
        ...(options.dataDir ? { dataDir: options.dataDir } : {}),
        ...(proxySocket ? { proxySocket } : {}),
        ...(options.allowWeaker ? { allowWeaker: true } : {}),
        ...(options.user ? { user: options.user } : {}),
        ...(config ? { protect: [config.path] } : {}),
      });
    } catch (error) {
      await session?.close();
      throw error;
    }
    // Each launch gets a session of its own; a restarted server gets a new one, so none outlives its server.
    if (session) void launched.exited.finally(() => session.close());
    return launched;
  };
}
