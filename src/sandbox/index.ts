/**
 * sandbox/: runs agents and stdio MCP servers inside boundaries the operating system enforces.
 *
 * - mcp.ts: the launcher the MCP gateway plugs in for stdio servers (one principal per server).
 * - launch.ts: the launcher (`launchSandboxed`): policy → mount plan, scrubbed environment with placeholders,
 *   network bridge to the egress proxy's session socket, rlimits; audits launch, exit and denied connections.
 * - bubblewrap.ts: the Linux driver (bwrap with new user, PID, network, IPC and UTS namespaces).
 * - container.ts: the Docker/Podman driver (command lines from the same plan).
 * - mount-plan.ts, env.ts, seccomp.ts: the plan, the environment scrub, the BPF filter.
 * - mux.ts, bridge-inside.ts: the wire between the bridge inside the sandbox and Gatehouse outside (the egress
 *   proxy's port, and the MCP gateway's when a node's gateway is handed in).
 * - host.ts: what this host can enforce (`gatehouse doctor`).
 *
 * May import: config (types), policy (types), audit (record and log interface), util. Knows nothing of
 * the gateway or the egress proxy beyond the socket paths it is handed (egress session, the gateway's HTTP socket).
 */
export { launchSandboxed, rlimitsFrom, chooseDriver, type LaunchRequest, type Launched } from './launch.js';
export { mcpServerLauncher, serverPrincipal, type McpServerLauncherOptions, type ServerCommand } from './mcp.js';
export { containerInvocation, launchContainer, type ContainerEngine } from './container.js';
export { launchBubblewrap, bwrapInvocation, DEFAULT_PROXY_PORT } from './bubblewrap.js';
export { computeMountPlan, bwrapMountArgs, SENSITIVE_IN_HOME, type MountPlan, type MountStep } from './mount-plan.js';
export { sandboxEnv, DEFAULT_ENV_ALLOW } from './env.js';
export { probeHost, quickGaps, type HostReport, type HostCheck } from './host.js';
export type { ExitStatus, Rlimits, SandboxProcess, SandboxSpec } from './types.js';
