/**
 * What a caller asks of a sandbox and what it gets back. The same spec drives the bubblewrap driver and
 * the container driver; `gatehouse run` and the MCP gateway both build one.
 */
import type { Readable, Writable } from 'node:stream';
import type { FilesystemView } from '../policy/engine.js';
import type { MountPlan } from './mount-plan.js';

export interface Rlimits {
  /** RLIMIT_DATA: private writable memory (heap and anonymous mappings), in bytes. */
  memoryBytes?: number;
  /** RLIMIT_NPROC: processes and threads of this user. */
  processes?: number;
  /** RLIMIT_NOFILE. */
  openFiles?: number;
  /** RLIMIT_CPU, in seconds of CPU time. */
  cpuSeconds?: number;
}

export interface SandboxSpec {
  command: string[];
  /** What the policy lets this principal see (`PolicyEngine.filesystemView`). */
  view: FilesystemView;
  home: string;
  cwd: string;
  /** Gatehouse's data directory: always hidden. */
  dataDir?: string;
  extraSensitive?: string[];
  /** Files kept read-only inside (the config the policy came from, so a program cannot rewrite its next policy). */
  protect?: string[];
  /** The policy's decision for one path: an allow that leads through a symlink is bound only if it permits (see mount-plan.ts). */
  permits?: (path: string, access: 'read' | 'write') => boolean;
  /** The environment to scrub (default: this process's). */
  envSource?: NodeJS.ProcessEnv;
  /** Extra variable names (or `PREFIX*`) allowed through. */
  envAllow?: string[];
  /** Placeholders for granted secrets, from the secrets broker. */
  envAdd?: Record<string, string>;
  /** The egress proxy's per-session Unix socket (HTTP proxy: absolute-URI and CONNECT). None: no network. */
  proxySocket?: string;
  /**
   * The MCP gateway's HTTP endpoint on a socket of this run's own (the node's `listenForRun`). The bridge
   * then also listens on 127.0.0.1:7401 inside and carries those connections to it, so
   * `http://127.0.0.1:7401/mcp` (GATEHOUSE_GATEWAY_URL) is the gateway inside as outside. A request on it
   * without credentials is the run's agent; none is anonymous.
   */
  gatewaySocket?: string;
  /** Port the bridge listens on inside the sandbox (its own network namespace, so any port is free). */
  proxyPort?: number;
  rlimits?: Rlimits;
  /** The egress proxy's TLS-inspection CA (PEM file): trusted inside, next to the system's roots. */
  caCertificate?: string;
  /** `inherit` for an interactive program; `pipe` for an MCP server spoken to over stdio. */
  stdio?: 'inherit' | 'pipe';
  bwrapPath?: string;
  /** Run the sandbox as this host user (Gatehouse must be root to switch); default: the current user. */
  user?: { uid: number; gid: number };
  /** Spawn the sandbox but hold the program until `start()` (the launcher records the launch meanwhile). */
  deferStart?: boolean;
  /** A connection the bridge could not deliver (no proxy for this session, or the proxy is gone). */
  onConnectionDenied?: (event: { stream: number; reason: string }) => void;
}

export interface ExitStatus {
  code: number | null;
  signal: NodeJS.Signals | null;
  /** The sandbox never reported the program's end: bwrap failed to set up, or the sandbox was killed. */
  setupFailed?: boolean;
  error?: string;
}

/** A running sandboxed program, shaped like the parts of a ChildProcess callers use. */
export interface SandboxProcess {
  pid: number | undefined;
  plan: MountPlan;
  stdin: Writable | null;
  stdout: Readable | null;
  stderr: Readable | null;
  exited: Promise<ExitStatus>;
  /** Delivers a signal to the program inside (SIGKILL tears the whole sandbox down). */
  kill(signal?: NodeJS.Signals): void;
  /** Lets a sandbox spawned with `deferStart` run its program (a no-op otherwise). */
  start?(): void;
}
