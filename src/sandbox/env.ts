/**
 * The sandbox's environment: the host's environment scrubbed to an allowlist, plus the placeholders the
 * secrets broker hands out and the proxy variables that point at the bridge. Nothing else crosses, so
 * tokens in the parent's environment (GITHUB_TOKEN, AWS_*, SSH_AUTH_SOCK...) never reach the program.
 */

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
