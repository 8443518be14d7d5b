/**
 * gateway/: the MCP gateway, one governed endpoint in front of every MCP server.
 * `startGateway` wires the pieces: upstreams and aggregation (gateway.ts, upstream.ts; a remote one's HTTP in
 * http-upstream.ts, over the checked connections of dial.ts), authentication (auth.ts), the Streamable HTTP
 * front with sessions (front.ts) and its local sockets (local-socket.ts), the bound on what each agent leaves
 * unread across them (unread.ts), and `gatehouse mcp`, the stdio bridge to them (bridge.ts).
 * Imports config/, policy/ (the engine interface), audit/, agents/ (keys) and util/; never a data plane.
 */
import { createRequire } from 'node:module';
import { guardRegexps } from '../util/regexp-guard.js';
import { hostname } from 'node:os';
import type { AuditLog } from '../audit/record.js';
import type { Config, GatewaySettings } from '../config/schema.js';
import { createScanner, type KnownSecret, type Scanner } from '../dlp/index.js';
import type { PolicyHolder } from '../policy/engine.js';
import type { Principal } from '../policy/types.js';
import { Authenticator, type KeyAuthenticator } from './auth.js';
import { GatewayFront } from './front.js';
import { GatewayCore } from './gateway.js';
import type { ChildCommand, UpstreamProcess } from './child-transport.js';
import type { PinStore } from './pins.js';
import type { UpstreamStatus } from './upstream.js';

export { Authenticator, isLoopback, type KeyAuthenticator } from './auth.js';
export { GatewayCore, type Caller } from './gateway.js';
export { canonicalJson, digestOf } from './canonical.js';
export { PinStore, steeringFlags, type PinRow } from './pins.js';
export type { UpstreamStatus } from './upstream.js';
export { spawnInGroup, type ChildCommand, type ProcessLauncher, type UpstreamProcess } from './child-transport.js';

export interface GatewayOptions {
  settings: GatewaySettings;
  policy: PolicyHolder;
  audit: AuditLog;
  /** Agent API keys (`openAgentRegistry(dataDir)`); without it only OAuth or anonymous loopback work. */
  agents?: KeyAuthenticator;
  /** Teams from the config's `agents:` section. */
  agentTeams?: Record<string, { teams: string[] }>;
  /** Names this node in audit records; defaults to the host name. */
  node?: string;
  recordValues?: boolean;
  /** The secret scanner (with the vault's known secrets); defaults to the built-in rules only. */
  scanner?: Scanner;
  /** Where tool pins live (the node's store); without it tools are not pinned. */
  pins?: PinStore;
  /** Reply only after each audit record is durable (set it when audit.mode is `sync`). */
  awaitAudit?: boolean;
  /** The real value of a secret, for upstream credentials: `openSecrets(...).resolveSecret`. */
  resolveSecret?: (name: string) => Promise<string>;
  /**
   * Starts each stdio upstream. Pass one built on the sandbox launcher (`launchSandboxed` with
   * `stdio: 'pipe'`, `server: name`, `envAdd: command.env`) to run every MCP server in its own sandbox;
   * without it a server runs as a plain process in its own process group.
   */
  launch?: (upstream: string, command: ChildCommand) => Promise<UpstreamProcess>;
  /** Also serve the local socket `<localSocketDir>/mcp.sock` (local-socket.ts), which `gatehouse mcp` prefers. */
  localSocketDir?: string;
}

export interface RunningGateway {
  /** The Streamable HTTP endpoint, `http://127.0.0.1:7401/mcp`. */
  url: string;
  /** The local socket's path (stdio framing, for `gatehouse mcp`), when it is served. */
  socketPath?: string;
  /** The HTTP endpoint for one `gatehouse run`, on a socket of its own whose callers are its agent. */
  listenForRun(principal: Principal): Promise<{ socketPath: string; close(): Promise<void> }>;
  core: GatewayCore;
  status(): { url: string; sessions: number; upstreams: UpstreamStatus[] };
  close(): Promise<void>;
}

export const GATEWAY_VERSION: string = (createRequire(import.meta.url)('../../../package.json') as { version: string }).version;

/** What a node has at hand when it starts its gateway from gatehouse.yaml. */
export interface NodeGatewayInput {
  config: Config;
  dataDir: string;
  policy: PolicyHolder;
  audit: AuditLog;
  node?: string;
  /** Vault values and credential env vars, so the scanner finds them in any encoding (`secrets.knownSecrets()`). */
  knownSecrets?: readonly KnownSecret[];
  resolveSecret?: (name: string) => Promise<string>;
  launch?: GatewayOptions['launch'];
  /** The secret scanner; by default one built from the built-in rules and `knownSecrets`. */
  scanner?: Scanner;
}

/**
 * Starts the gateway a node runs: settings, agents' teams and audit choices from the config; agent keys and
 * tool pins from the node's store in `dataDir`. What `gatehouse node` and `gatehouse up` call.
 */
export async function startNodeGateway(input: NodeGatewayInput): Promise<RunningGateway> {
  const { openAgentRegistry } = await import('../agents/index.js');
  const { openStore } = await import('../store/index.js');
  const { PinStore } = await import('./pins.js');
  return startGateway({
    settings: input.config.gateway,
    policy: input.policy,
    audit: input.audit,
    agents: openAgentRegistry(input.dataDir),
    agentTeams: input.config.agents,
    pins: new PinStore(openStore(input.dataDir)),
    scanner: input.scanner ?? createScanner({ maxBytes: input.policy.current.dlp.maxBytes, ...(input.knownSecrets ? { knownSecrets: input.knownSecrets } : {}) }),
    awaitAudit: input.config.audit.mode === 'sync',
    recordValues: input.config.audit.recordValues,
    ...(input.node !== undefined ? { node: input.node } : {}),
    ...(input.resolveSecret ? { resolveSecret: input.resolveSecret } : {}),
    ...(input.launch ? { launch: input.launch } : {}),
    localSocketDir: input.dataDir,
  });
}

export async function startGateway(options: GatewayOptions): Promise<RunningGateway> {
  // Servers' schemas carry patterns that run on agents' arguments.
  guardRegexps();
  const node = options.node ?? hostname();
  const core = new GatewayCore({
    settings: options.settings,
    policy: options.policy,
    audit: options.audit,
    node,
    version: GATEWAY_VERSION,
    ...(options.recordValues !== undefined ? { recordValues: options.recordValues } : {}),
    scanner: options.scanner ?? createScanner({ maxBytes: options.policy.current.dlp.maxBytes }),
    ...(options.pins ? { pins: options.pins } : {}),
    ...(options.awaitAudit !== undefined ? { awaitAudit: options.awaitAudit } : {}),
    ...(options.resolveSecret ? { resolveSecret: options.resolveSecret } : {}),
    ...(options.launch ? { launch: options.launch } : {}),
  });
  const authenticator = new Authenticator({
    auth: options.settings.auth,
    ...(options.agents ? { agents: options.agents } : {}),
    configTeams: (agent) => options.agentTeams?.[agent]?.teams ?? [],
  });
  const status = async () => ({ url: front.url, sessions: front.sessionCount(), ...core.status(), catalog: await core.catalogReport().catch(() => undefined) });
  const front = new GatewayFront({
    status,
    settings: options.settings,
    core,
    authenticator,
    audit: options.audit,
    policy: options.policy,
    node,
    version: GATEWAY_VERSION,
  });
  const url = await front.listen();
  let local: string | undefined;
  try {
    if (options.localSocketDir !== undefined) local = await front.listenLocal(options.localSocketDir);
  } catch (error) {
    await front.close();
    await core.close();
    throw error;
  }
  return {
    url,
    ...(local !== undefined ? { socketPath: local } : {}),
    listenForRun: (principal) => front.listenForRun(principal),
    core,
    status: () => ({ url, sessions: front.sessionCount(), ...core.status() }),
    close: async () => {
      await front.close();
      await core.close();
    },
  };
}
