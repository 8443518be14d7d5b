/**
 * The sandbox's environment: the host's environment scrubbed to an allowlist, plus the placeholders the
 * secrets broker hands out and the proxy variables that point at the bridge. Nothing else crosses, so
 * tokens in the parent's environment (GITHUB_TOKEN, AWS_*, SSH_AUTH_SOCK...) never reach the program.
 */
import * as fsSync from 'node:fs';

/** Variables a program needs to behave normally in a terminal; none of them carries a credential. */
export const DEFAULT_ENV_ALLOW = [
  'PATH', 'HOME', 'USER', 'LOGNAME', 'SHELL', 'TERM', 'COLORTERM', 'TERM_PROGRAM', 'LANG', 'LANGUAGE', 'LC_*', 'TZ',
  'EDITOR', 'VISUAL', 'PAGER', 'NO_COLOR', 'FORCE_COLOR', 'CLICOLOR', 'COLUMNS', 'LINES',
];

const VALID_NAME = /^[A-Za-z_][A-Za-z0-9_]*\*?$/;

/** Checks allowlist entries (`NAME` or a `PREFIX*`); returns the first bad one, if any. */
export function invalidEnvPattern(patterns: readonly string[]): string | undefined {
  return patterns.find((pattern) => !VALID_NAME.test(pattern));
}

function matches(name: string, patterns: readonly string[]): boolean {
  return patterns.some((pattern) => (pattern.endsWith('*') ? name.startsWith(pattern.slice(0, -1)) : name === pattern));
}

export interface SandboxEnvInput {
  /** The environment to scrub (default: this process's). */
  source?: NodeJS.ProcessEnv;
  /** Names or `PREFIX*` patterns allowed through, on top of DEFAULT_ENV_ALLOW. */
  allow?: readonly string[];
  /** Added last (placeholders for granted secrets); they win over the source. */
  add?: Readonly<Record<string, string>>;
  /** The bridge's port inside the sandbox; sets the proxy variables in both cases. */
  proxyPort?: number;
  home: string;
}

export function sandboxEnv(input: SandboxEnvInput): Record<string, string> {
  const source = input.source ?? process.env;
  const patterns = [...DEFAULT_ENV_ALLOW, ...(input.allow ?? [])];
  const env: Record<string, string> = {};
  for (const [name, value] of Object.entries(source)) {
    if (value !== undefined && matches(name, patterns)) env[name] = value;
  }
  env.HOME = input.home;
  env.TMPDIR = '/tmp';
  env.PATH ??= '/usr/local/bin:/usr/bin:/bin';
  // Proxy variables, whatever the source said: the bridge is the only way out.
  for (const name of Object.keys(env)) if (/_proxy$/i.test(name)) delete env[name];
  if (input.proxyPort !== undefined) {
    const url = `http://127.0.0.1:${input.proxyPort}`;
    for (const name of ['HTTP_PROXY', 'HTTPS_PROXY', 'ALL_PROXY']) {
      env[name] = url;
      env[name.toLowerCase()] = url;
    }
    env.NO_PROXY = env.no_proxy = 'localhost,127.0.0.1,::1';
  }
  for (const [name, value] of Object.entries(input.add ?? {})) env[name] = value;
  return env;
}

/** Where the CA files appear inside the sandbox. */
export const CA_INSIDE = { certificate: '/run/gatehouse/ca.pem', bundle: '/run/gatehouse/ca-bundle.pem' };

/**
 * Variables that make common clients trust the inspection CA: node adds to its roots; OpenSSL-based tools
 * (curl, git, python, ruby) replace theirs, so they get a bundle of the system's roots plus the CA.
 */
export function trustEnv(): Record<string, string> {
  return {
    NODE_EXTRA_CA_CERTS: CA_INSIDE.certificate,
    SSL_CERT_FILE: CA_INSIDE.bundle,
    CURL_CA_BUNDLE: CA_INSIDE.bundle,
    GIT_SSL_CAINFO: CA_INSIDE.bundle,
    REQUESTS_CA_BUNDLE: CA_INSIDE.bundle,
  };
}

/**
 * Where an MCP client inside finds the gateway: the bridge's gateway port, carried to the gateway's HTTP
 * endpoint, so the URL is the one the gateway has outside by default (`gatehouse mcp` reads it too).
 * NO_PROXY already keeps clients from sending it to the egress proxy.
 */
export function gatewayEnv(port: number): Record<string, string> {
  return { GATEHOUSE_GATEWAY_URL: `http://127.0.0.1:${port}/mcp` };
}

const SYSTEM_ROOTS = ['/etc/ssl/certs/ca-certificates.crt', '/etc/pki/tls/certs/ca-bundle.crt', '/etc/ssl/cert.pem'];

/** Writes `<ca>.bundle.pem` (system roots + the CA) next to the CA when missing or older; returns its path. */
export function ensureCaBundle(caCertificate: string): string {
  const { existsSync, readFileSync, renameSync, statSync, writeFileSync } = fsSync;
  const bundle = caCertificate.replace(/\.pem$/, '') + '.bundle.pem';
  const fresh = existsSync(bundle) && statSync(bundle).mtimeMs >= statSync(caCertificate).mtimeMs;
  if (!fresh) {
    const system = SYSTEM_ROOTS.find((path) => existsSync(path));
    const text = (system ? readFileSync(system, 'utf8').trimEnd() + '\n' : '') + readFileSync(caCertificate, 'utf8');
    const temporary = `${bundle}.${process.pid}.tmp`;
    writeFileSync(temporary, text, { mode: 0o644 });
    renameSync(temporary, bundle);
  }
  return bundle;
}
