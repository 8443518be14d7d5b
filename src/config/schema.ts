/**
 * gatehouse.yaml: one validated model for a node's settings and its policy. Unknown keys are errors.
 * Each data plane owns one section here; the section is validated at the edge so the inside trusts its types.
 */
import { z } from 'zod';
import { policySchema } from './policy-schema.js';

/** "127.0.0.1:7400", "[::1]:7400" or "localhost:7400". */
export const listenSchema = z
  .string()
  .regex(/^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+):\d{1,5}$/, 'a listen address like "127.0.0.1:7400"');

const nodeSchema = z.strictObject({
  /** Names this node in audit records; defaults to the host name. */
  name: z.string().min(1).optional(),
  /** Rules scoped with `labels` apply only where all of them match these. */
  labels: z.record(z.string(), z.string()).default({}),
  dataDir: z.string().min(1).optional(),
  /** Directory that `./` in filesystem rules means; defaults to the directory `gatehouse` was started in. */
  workspace: z.string().min(1).optional(),
  api: z.strictObject({ listen: listenSchema.default('127.0.0.1:7400') }).default({ listen: '127.0.0.1:7400' }),
  /** Load the policy from this signed bundle instead of the `policy:` section. */
  policyBundle: z.string().min(1).optional(),
  /** Public keys (PEM files or inline PEM) whose signatures this node accepts on policy bundles. */
  trustedKeys: z.array(z.string().min(1)).default([]),
  /** Refuse any policy that does not arrive as a bundle signed by a trusted key. */
  requireSignedPolicy: z.boolean().default(false),
  /** Watch the config file (and bundle) and reload on change. */
  watch: z.boolean().default(true),
});

const agentSchema = z.strictObject({
  teams: z.array(z.string().min(1)).default([]),
  description: z.string().optional(),
});

/** "250ms", "30s", "15m", "12h", "7d", or a number of milliseconds. */
const durationSchema = z
  .union([z.number().int().nonnegative(), z.string().regex(/^\d+(ms|s|m|h|d)$/, 'a duration like "30s", "15m", "12h" or "7d"')])
  .transform((value) => {
    if (typeof value === 'number') return value;
    const [, amount, unit] = /^(\d+)(ms|s|m|h|d)$/.exec(value) as unknown as [string, string, string];
    return Number(amount) * { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 }[unit as 'ms'];
  });

/** "512KiB", "64MiB", "10GiB" (or KB/MB/GB, powers of 1000), or a number of bytes. */
const sizeSchema = z
  .union([z.number().int().positive(), z.string().regex(/^\d+(B|KB|MB|GB|KiB|MiB|GiB)$/, 'a size like "512KiB", "64MiB" or "10GiB"')])
  .transform((value) => {
    if (typeof value === 'number') return value;
    const [, amount, unit] = /^(\d+)(\w+)$/.exec(value) as unknown as [string, string, string];
    const factor = { B: 1, KB: 1e3, MB: 1e6, GB: 1e9, KiB: 1024, MiB: 1024 ** 2, GiB: 1024 ** 3 }[unit as 'B'];
    return Number(amount) * factor;
  });

const sinkName = z.string().regex(/^[A-Za-z0-9][A-Za-z0-9_-]{0,62}$/, 'a sink name: letters, digits, "_" or "-"');
/** Every sink spools on disk while its receiver is away; the oldest spooled records go first past this size. */
const sinkCommon = { name: sinkName.optional(), spoolMaxBytes: sizeSchema.optional() };
const httpUrl = z.string().regex(/^https?:\/\/[^\s]+$/, 'an http:// or https:// URL');

const auditSinkSchema = z.discriminatedUnion('type', [
  /** OpenTelemetry logs over OTLP/HTTP (JSON), e.g. to a Collector's http://host:4318/v1/logs. */
  z.strictObject({ type: z.literal('otlp'), url: httpUrl, headers: z.record(z.string(), z.string()).default({}), ...sinkCommon }),
  /** Batched JSON POSTs signed with HMAC-SHA256 of `<timestamp>.<body>` in `X-Gatehouse-Signature`. */
  z.strictObject({ type: z.literal('webhook'), url: httpUrl, secret: z.string().min(16, 'a webhook secret of at least 16 characters'), headers: z.record(z.string(), z.string()).default({}), ...sinkCommon }),
  /** RFC 5424 messages over TCP (octet-counted framing, RFC 6587) or TLS (RFC 5425). */
  z.strictObject({
    type: z.literal('syslog'),
    host: z.string().min(1),
    port: z.number().int().min(1).max(65535),
    tls: z.strictObject({ ca: z.string().min(1).optional(), serverName: z.string().min(1).optional() }).optional(),
    appName: z.string().regex(/^[!-~]{1,48}$/, 'an RFC 5424 APP-NAME: up to 48 printable ASCII characters').default('gatehouse'),
    facility: z.number().int().min(0).max(23).default(13),
    ...sinkCommon,
  }),
  /** A Splunk HTTP Event Collector (or a compatible endpoint): `<url>/services/collector/event`. */
  z.strictObject({ type: z.literal('splunk'), url: httpUrl, token: z.string().min(1), index: z.string().min(1).optional(), sourcetype: z.string().min(1).default('gatehouse:audit'), ...sinkCommon }),
]);

export const auditDefaults = {
  mode: 'batch' as const,
  recordValues: false,
  maxRecordBytes: 64 * 1024,
  segment: { maxBytes: 64 * 1024 * 1024, maxAge: 86_400_000 },
  retention: {},
  checkpoint: { every: 1000, interval: 60_000 },
  sinks: [],
  spool: { maxBytes: 256 * 1024 * 1024 },
};

const auditSchema = z.strictObject({
  /** `sync`: fsync before a decision takes effect. `batch`: group commit, at most every 50 ms. */
  mode: z.enum(['sync', 'batch']).default('batch'),
  /** Record argument values and bodies (otherwise only digests). */
  recordValues: z.boolean().default(false),
  /** Larger records keep their decision facts and lose their details (replaced by a digest). */
  maxRecordBytes: sizeSchema.default(auditDefaults.maxRecordBytes),
  /** A segment is closed (and signed) once it reaches either limit. */
  segment: z
    .strictObject({ maxBytes: sizeSchema.default(auditDefaults.segment.maxBytes), maxAge: durationSchema.default(auditDefaults.segment.maxAge) })
    .default(auditDefaults.segment),
  /** Closed segments are removed past either limit; unset keeps everything. */
  retention: z.strictObject({ maxBytes: sizeSchema.optional(), maxAge: durationSchema.optional() }).default(auditDefaults.retention),
  /** A signed checkpoint every `every` records or `interval`, whichever comes first. */
  checkpoint: z
    .strictObject({ every: z.number().int().min(1).default(1000), interval: durationSchema.default(auditDefaults.checkpoint.interval) })
    .default(auditDefaults.checkpoint),
  /** Where records are forwarded besides the local log. */
  sinks: z
    .array(auditSinkSchema)
    .default([])
    .superRefine((sinks, ctx) => {
      const seen = new Set<string>();
      sinks.forEach((sink, index) => {
        const name = sink.name ?? sink.type;
        if (seen.has(name)) ctx.addIssue({ code: 'custom', path: [index, 'name'], message: `two sinks are named "${name}"; give each a distinct "name"` });
        seen.add(name);
      });
    }),
  /** Default spool bound for every sink. */
  spool: z.strictObject({ maxBytes: sizeSchema.default(auditDefaults.spool.maxBytes) }).default(auditDefaults.spool),
});

export type AuditSettings = z.output<typeof auditSchema>;
export type AuditSinkSettings = z.output<typeof auditSinkSchema>;

/** A name an upstream MCP server is known by: its namespace prefix and its `server` in MCP rules. */
const upstreamName = z
  .string()
  .regex(/^[A-Za-z0-9][A-Za-z0-9-]{0,62}$/, 'an upstream name: letters, digits and "-", starting with a letter or digit');

const upstreamTimeouts = z.strictObject({
  /** How long a call may go without a response or a progress notification. */
  callMs: z.number().int().positive().optional(),
  /**
   * The absolute limit for one call, progress or not; for a remote upstream also the longest one HTTP exchange
   * may wait for its answer, or pause within it.
   */
  maxCallMs: z.number().int().positive().optional(),
  /** How long starting and initialising an upstream may take; for a remote one also each new connection to it. */
  connectMs: z.number().int().positive().optional(),
  /** Stop an upstream nobody has used for this long (0: keep it running). */
  idleMs: z.number().int().min(0).optional(),
  /**
   * How long a call parked for a 2026-07-28 client's answers (sampling, elicitation, roots) waits for each
   * before it is cancelled upstream; `callMs` and `maxCallMs` still bound the call as a whole.
   */
  inputMs: z.number().int().positive().optional(),
});

/** What a stdio upstream must be before it may run; a mismatch refuses the launch. */
const upstreamPin = z.strictObject({
  /** SHA-256 (hex) of the executable or script the command runs. */
  sha256: z.string().regex(/^(sha256:)?[0-9a-f]{64}$/, 'a SHA-256 as 64 hex digits').optional(),
  /** The file `sha256` covers; defaults to the first argument when it is a file, else the command. */
  file: z.string().min(1).optional(),
  /** An npm package the command comes from, checked against what is installed before launch. */
  npm: z
    .strictObject({
      package: z.string().min(1),
      version: z.string().min(1),
      /** Registry integrity, "sha512-<base64>". */
      integrity: z.string().regex(/^sha(256|384|512)-[A-Za-z0-9+/=]+$/, 'an npm integrity like "sha512-..."').optional(),
    })
    .optional(),
  /**
   * A container image digest plus its cosign signature (`cosign sign --key … --output-payload P
   * --output-signature S`), verified against these public keys before launch. The command must run the
   * image by this digest (`name@sha256:…`).
   */
  image: z
    .strictObject({
      digest: z.string().regex(/^sha256:[0-9a-f]{64}$/, 'an image digest "sha256:<64 hex>"'),
      /** PEM public keys (files or inline PEM); a signature by any one of them is enough. */
      publicKeys: z.array(z.string().min(1)).min(1, 'at least one public key to verify the signature with'),
      /** The signed simple-signing payload (a file). */
      payload: z.string().min(1),
      /** The base64 signature over the payload (a file). */
      signature: z.string().min(1),
    })
    .optional(),
});

const upstreamSchema = z
  .strictObject({
    description: z.string().optional(),
    /** A stdio server: the program to launch. */
    command: z.string().min(1).optional(),
    args: z.array(z.string()).default([]),
    /** Extra environment for a stdio server (the rest of the environment is not passed on). */
    env: z.record(z.string(), z.string()).default({}),
    cwd: z.string().min(1).optional(),
    /** A remote server: its Streamable HTTP (or legacy SSE) URL. */
    url: z.string().url('an http(s) URL').optional(),
    transport: z.enum(['streamable-http', 'sse']).default('streamable-http'),
    /**
     * Protocol era toward this upstream: `auto` probes with \`server/discover\` and falls back to the 2025
     * handshake; `legacy` skips the probe; `2026-07-28` insists on the modern era. Default: `auto` for
     * remote servers, `legacy` for stdio (most stdio servers are 2025-era, and the probe costs a timeout).
     */
    protocol: z.enum(['auto', 'legacy', '2026-07-28']).optional(),
    /** Headers sent to a remote server (values may use ${env:...} / ${file:...}). */
    headers: z.record(z.string(), z.string()).default({}),
    /**
     * Secrets this upstream receives from the vault or a provider: in an environment variable (stdio) or a
     * header (remote). Each needs a `credentials` rule in the policy that grants it to this server.
     */
    credentials: z
      .array(
        z
          .strictObject({
            secret: z.string().min(1),
            env: z.string().regex(/^[A-Za-z_][A-Za-z0-9_]*$/, 'an environment variable name').optional(),
            header: z.string().regex(/^[A-Za-z0-9-]+:\s?.*\{secret\}.*$/, 'a header like "Authorization: Bearer {secret}"').optional(),
          })
          .refine((c) => (c.env === undefined) !== (c.header === undefined), 'a credential goes either in "env" (stdio) or in "header" (remote)'),
      )
      .default([]),
    /** Names this upstream's tools, prompts and resources get in front of them; defaults to the upstream name. */
    prefix: z.string().regex(/^[A-Za-z0-9_-]{0,64}$/, 'a prefix of letters, digits, "_" or "-"').optional(),
    timeouts: upstreamTimeouts.optional(),
    pin: upstreamPin.optional(),
    /**
     * `shared`: one connection serves every client session (cheap; a sampling, elicitation or roots request
     * from the server is relayed only while a single session has calls in flight). `session`: each client
     * session gets its own connection (its own process for stdio), so such requests always reach the right one.
     */
    isolation: z.enum(['shared', 'session']).default('shared'),
    /** Allow a remote URL that resolves to a private, loopback or metadata address. */
    allowPrivateAddress: z.boolean().default(false),
    enabled: z.boolean().default(true),
  })
  .superRefine((upstream, ctx) => {
    if ((upstream.command === undefined) === (upstream.url === undefined)) {
      ctx.addIssue({ code: 'custom', message: 'an upstream needs exactly one of "command" (stdio) or "url" (remote)' });
    }
    if (upstream.url !== undefined && !/^https?:\/\//i.test(upstream.url)) {
      ctx.addIssue({ code: 'custom', path: ['url'], message: 'an upstream URL must start with http:// or https://' });
    }
  });

const gatewayAuthSchema = z.strictObject({
  /** Accept agent API keys (`gatehouse agent add`) as `Authorization: Bearer <key>` or `X-Gatehouse-Key`. */
  apiKeys: z.boolean().default(true),
  /** Accept OAuth 2.1 bearer JWTs from this issuer. */
  oauth: z
    .strictObject({
      issuer: z.string().url('the issuer URL'),
      /** The issuer's JWKS; defaults to "<issuer>/.well-known/jwks.json". */
      jwksUri: z.string().url('the JWKS URL').optional(),
      /** The audience tokens must carry: this gateway's resource URL. */
      audience: z.string().min(1),
      algorithms: z.array(z.string().min(1)).default(['RS256', 'ES256', 'EdDSA']),
      /** Claims that name the agent, the user and the teams. */
      agentClaim: z.string().default('azp'),
      userClaim: z.string().default('sub'),
      teamsClaim: z.string().default('groups'),
    })
    .optional(),
  /** Let requests without credentials in when they come from a loopback address (as agent "anonymous"). */
  allowAnonymousLoopback: z.boolean().default(false),
});

export const gatewayDefaults = {
  callMs: 60_000,
  maxCallMs: 600_000,
  connectMs: 30_000,
  idleMs: 600_000,
  inputMs: 300_000,
  maxMessageBytes: 4 * 1024 * 1024,
  maxUnreadBytesPerAgent: 256 * 1024 * 1024,
} as const;

const gatewaySchema = z.strictObject({
  enabled: z.boolean().default(true),
  listen: listenSchema.default('127.0.0.1:7401'),
  /** The URL clients reach the gateway at, when it differs from the listen address (behind a proxy). */
  publicUrl: z.string().url().optional(),
  /** Origins a browser-based client may call from; requests from any other Origin are refused. */
  allowedOrigins: z.array(z.string().min(1)).default([]),
  /** Extra Host header values accepted besides the listen address and localhost. */
  allowedHosts: z.array(z.string().min(1)).default([]),
  /** `github__create_issue` by default. */
  separator: z.string().regex(/^[A-Za-z0-9_.-]{1,4}$/, 'a separator of 1-4 characters from letters, digits, "_", "." or "-"').default('__'),
  timeouts: upstreamTimeouts.default({}),
  maxMessageBytes: z.number().int().positive().default(gatewayDefaults.maxMessageBytes),
  /**
   * Open sessions one agent (one identity) may hold, so a single key cannot take every session; for a
   * 2026-07-28 client, which has no sessions, the calls it may leave parked waiting for its answers.
   */
  maxSessionsPerAgent: z.number().int().positive().default(100),
  /** Calls one agent (one identity) may have running at once, across all its sessions. */
  maxCallsPerAgent: z.number().int().positive().default(256),
  /**
   * Output one agent may leave unread across all its responses, streams and connections; a write that takes
   * it past this cuts off the response or connection written to (one alone is cut off at 64 MB).
   */
  maxUnreadBytesPerAgent: z.number().int().positive().default(gatewayDefaults.maxUnreadBytesPerAgent),
  auth: gatewayAuthSchema.default({ apiKeys: true, allowAnonymousLoopback: false }),
  upstreams: z.record(upstreamName, upstreamSchema).default({}),
}).superRefine((gateway, ctx) => {
  // Exposed names are <prefix><separator><name>. A prefix holding the separator, or two upstreams with the
  // same prefix, would let one server's tools take another's names. (An empty prefix is fine: the gateway
  // gives prefixed servers their names first.)
  const seen = new Map<string, string>();
  for (const name of Object.keys(gateway.upstreams)) {
    const prefix = gateway.upstreams[name]?.prefix ?? name;
    const path = ['upstreams', name, 'prefix'];
    if (prefix.includes(gateway.separator)) {
      ctx.addIssue({ code: 'custom', path, message: `the prefix "${prefix}" contains the separator "${gateway.separator}", so its tools could take another server's names` });
    }
    const other = seen.get(prefix);
    if (other !== undefined) ctx.addIssue({ code: 'custom', path, message: `the prefix "${prefix}" is already used by upstream "${other}"` });
    else seen.set(prefix, name);
  }
});

/** Defaults of the egress proxy's limits; also what `startEgressProxy` uses when given no settings. */
export const egressDefaults = {
  connectionsPerSecond: 50,
  requestsPerSecond: 200,
  maxTunnelsPerAgent: 128,
  maxInspectedBytes: 10 * 1024 * 1024,
  idleTimeoutMs: 120_000,
  totalTimeoutMs: 3_600_000,
  headerTimeoutMs: 10_000,
  maxHeaderBytes: 16 * 1024,
} as const;

const egressLimitsSchema = z.strictObject({
  /** New connections (and plain-HTTP requests) per second per agent, with a burst of the same size. */
  connectionsPerSecond: z.number().positive().default(egressDefaults.connectionsPerSecond),
  /**
   * Tunnels (CONNECT and SOCKS5) and plain-HTTP requests one agent may hold open at once. A streaming tunnel
   * buffers up to a few megabytes, and a request up to its body, so this bounds what one agent can make the
   * proxy hold.
   */
  maxTunnelsPerAgent: z.number().int().positive().default(egressDefaults.maxTunnelsPerAgent),
  /** Requests per second per agent on inspected connections, with a burst of the same size. */
  requestsPerSecond: z.number().positive().default(egressDefaults.requestsPerSecond),
  /** Bodies up to this size are held and scanned; above it the policy's `dlp.onTooLarge` decides (block or pass uninspected). */
  maxInspectedBytes: z.number().int().positive().default(egressDefaults.maxInspectedBytes),
  /** Close a connection that moves no bytes for this long. */
  idleTimeoutMs: z.number().int().positive().default(egressDefaults.idleTimeoutMs),
  /** Close any connection after this long, busy or not. */
  totalTimeoutMs: z.number().int().positive().default(egressDefaults.totalTimeoutMs),
  /** A client must finish sending request headers within this time (slowloris). */
  headerTimeoutMs: z.number().int().positive().default(egressDefaults.headerTimeoutMs),
  maxHeaderBytes: z.number().int().min(1024).max(1024 * 1024).default(egressDefaults.maxHeaderBytes),
});

const egressSchema = z.strictObject({
  enabled: z.boolean().default(true),
  /** The HTTP proxy (absolute-URI requests and CONNECT); SOCKS5 is also understood here. */
  listen: listenSchema.default('127.0.0.1:7402'),
  /** An extra SOCKS5-only listener, for tools that want a dedicated port. */
  socks: z.strictObject({ listen: listenSchema }).optional(),
  /** Fixed answers for host names, like curl's --resolve: `{ "api.test": ["127.0.0.1"] }`. Checked like any answer. */
  resolve: z.record(z.string().min(1), z.array(z.string().min(1)).min(1)).default({}),
  /** Host patterns whose TLS is never inspected even when a rule asks (certificate pinning, mTLS). */
  passThrough: z.array(z.string().min(1)).default([]),
  /** Extra CA certificates (PEM files) trusted for upstream servers, besides the system's. */
  upstreamCa: z.array(z.string().min(1)).default([]),
  limits: egressLimitsSchema.default({ ...egressDefaults }),
});

/** Where a named secret comes from when it is not in the vault. Exactly one of env, file or command. */
const secretProviderSchema = z
  .strictObject({
    /** An environment variable of the node process. */
    env: z.string().regex(/^[A-Za-z_][A-Za-z0-9_]*$/, 'an environment variable name').optional(),
    /** A file whose contents (without the trailing newline) are the value. */
    file: z.string().min(1).optional(),
    /** A command and its arguments (no shell), e.g. ["op", "read", "op://prod/github/token"]; stdout is the value. */
    command: z.array(z.string().min(1)).min(1).optional(),
    /** For `command`: kill it after this long. */
    timeoutMs: z.number().int().positive().max(120_000).default(5000),
    /** For `command` and `file`: reuse a value for this long (0: ask every time). */
    cacheTtlSeconds: z.number().int().min(0).max(86_400).default(300),
  })
  .superRefine((provider, ctx) => {
    const kinds = [provider.env, provider.file, provider.command].filter((v) => v !== undefined).length;
    if (kinds !== 1) ctx.addIssue({ code: 'custom', message: 'a secret provider needs exactly one of "env", "file" or "command"' });
  });

const secretsSchema = z.strictObject({
  /** A file (mode 0600) holding the vault's master key. Default: GATEHOUSE_MASTER_KEY, else <dataDir>/master.key. */
  masterKeyFile: z.string().min(1).optional(),
  /** Secrets resolved from outside the vault, by name (the name policy credentials rules use). */
  providers: z.record(z.string().regex(/^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$/, 'a secret name'), secretProviderSchema).default({}),
  /** Also treat credential-looking environment variables of the node as known secrets for leak detection. */
  scanEnvironment: z.boolean().default(true),
});

export const sandboxDefaults = { driver: 'auto', proxyPort: 3128, env: [], rlimits: {}, agents: {}, onWeaker: 'refuse' } as const;

const envNameSchema = z.string().regex(/^[A-Za-z_][A-Za-z0-9_]*\*?$/, 'an environment variable name, or a prefix ending in "*"');

const sandboxRlimitsSchema = z.strictObject({
  /** Private writable memory (RLIMIT_DATA). */
  memory: sizeSchema.optional(),
  /** Processes and threads (RLIMIT_NPROC). */
  processes: z.number().int().positive().optional(),
  openFiles: z.number().int().positive().optional(),
  /** CPU time (RLIMIT_CPU), e.g. "10m". */
  cpuTime: durationSchema.optional(),
});

const sandboxSchema = z.strictObject({
  /** `auto`: bubblewrap where the host allows it, else a container engine (Docker or Podman). */
  driver: z.enum(['auto', 'bubblewrap', 'container']).default('auto'),
  /** Path to bwrap (default: found in /usr/local/bin, /usr/bin or /bin; never the user's PATH). */
  bwrap: z.string().min(1).optional(),
  /** Port the bridge listens on inside the sandbox (its own network namespace, so any port is free). */
  proxyPort: z.number().int().min(1).max(65535).default(3128),
  /** Extra environment variables (or `PREFIX*`) let through the scrub, on top of PATH, HOME, TERM, LANG... */
  env: z.array(envNameSchema).default([]),
  /** Limits on the sandboxed program (rlimits; soft and hard). */
  rlimits: sandboxRlimitsSchema.default({}),
  /** Per-agent overrides: an agent's rlimits replace the defaults field by field; its env names add to them. */
  agents: z
    .record(z.string().min(1), z.strictObject({ rlimits: sandboxRlimitsSchema.optional(), env: z.array(envNameSchema).optional() }))
    .default({}),
  /** When the host cannot give the isolation the policy asks for: `refuse` (exit 2) unless `--allow-weaker`. */
  onWeaker: z.enum(['refuse', 'warn']).default('refuse'),
  /** The container driver: engine CLI and the image programs run in. */
  container: z
    .strictObject({
      engine: z.enum(['auto', 'docker', 'podman']).default('auto'),
      /** Needs node (the bridge runs on it) and the tools the agent uses. */
      image: z.string().min(1).default('node:20-bookworm-slim'),
    })
    .default({ engine: 'auto', image: 'node:20-bookworm-slim' }),
});

export const configSchema = z.strictObject({
  version: z.literal(1, { error: 'the config version: this Gatehouse reads version 1' }),
  node: nodeSchema.default({ labels: {}, api: { listen: '127.0.0.1:7400' }, trustedKeys: [], requireSignedPolicy: false, watch: true }),
  /** Agents this node knows, with the teams that policy scope can name. */
  agents: z.record(z.string(), agentSchema).default({}),
  audit: auditSchema.default(auditDefaults),
  /** The MCP gateway: one governed endpoint in front of every MCP server. */
  gateway: gatewaySchema.default({
    enabled: true,
    listen: '127.0.0.1:7401',
    allowedOrigins: [],
    allowedHosts: [],
    separator: '__',
    timeouts: {},
    maxMessageBytes: gatewayDefaults.maxMessageBytes,
    maxSessionsPerAgent: 100,
    maxCallsPerAgent: 256,
    maxUnreadBytesPerAgent: gatewayDefaults.maxUnreadBytesPerAgent,
    auth: { apiKeys: true, allowAnonymousLoopback: false },
    upstreams: {},
  }),
  /** The egress proxy every outbound connection from agents and their tools goes through. */
  egress: egressSchema.default({
    enabled: true,
    listen: '127.0.0.1:7402',
    resolve: {},
    passThrough: [],
    upstreamCa: [],
    limits: { ...egressDefaults },
  }),
  /** The vault's master key, and secrets that come from elsewhere (env, files, commands). */
  secrets: secretsSchema.default({ providers: {}, scanEnvironment: true }),
  /** How `gatehouse run` and the gateway's stdio servers are isolated. */
  sandbox: sandboxSchema.default({ ...sandboxDefaults, env: [], rlimits: {}, agents: {}, container: { engine: 'auto', image: 'node:20-bookworm-slim' } }),
  policy: policySchema.default({
    network: [],
    filesystem: [],
    credentials: [],
    mcp: [],
    dlp: { action: 'block', maxBytes: 10 * 1024 * 1024, onTooLarge: 'block' },
    modes: {},
  }),
});

export type Config = z.output<typeof configSchema>;
export type NodeSettings = Config['node'];
export type SandboxSettings = Config['sandbox'];
export type SecretsSettings = Config['secrets'];
export type SecretProviderSettings = SecretsSettings['providers'][string];
export type EgressSettings = Config['egress'];
export type GatewaySettings = Config['gateway'];
export type UpstreamSettings = GatewaySettings['upstreams'][string];
