/**
 * Secret providers named in config: an environment variable, a file, or an external command (a password
 * manager's or Vault's CLI). Commands run without a shell, are killed at their timeout, and their output is
 * cached for `cacheTtlSeconds`; concurrent requests for the same secret share one run.
 */
import { spawn } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import type { SecretProviderSettings } from '../config/schema.js';
import { GatehouseError } from '../util/errors.js';
import { absolutePath } from '../util/paths.js';

const MAX_OUTPUT_BYTES = 64 * 1024;

/** Drops one trailing newline (CLIs print one); other whitespace may be part of the value. */
function chompNewline(text: string): string {
  return text.endsWith('\r\n') ? text.slice(0, -2) : text.endsWith('\n') ? text.slice(0, -1) : text;
}

function providerError(name: string, message: string): GatehouseError {
  return new GatehouseError('secret_provider_failed', `secret "${name}": ${message}`, { exitCode: 1 });
}

/** Runs `argv` and resolves with its stdout; rejects on a non-zero exit, a timeout or oversized output. */
export function runCommand(name: string, argv: readonly string[], timeoutMs: number): Promise<string> {
  return new Promise((resolve, reject) => {
    const [file, ...args] = argv;
    // The command gets the node's environment (password managers need HOME, sessions, agents), minus the
    // vault's master key, which no other program needs.
    const { GATEHOUSE_MASTER_KEY: _masterKey, ...env } = process.env;
    const child = spawn(file!, args, { stdio: ['ignore', 'pipe', 'pipe'], shell: false, env });
    const out: Buffer[] = [];
    let outBytes = 0;
    let errText = '';
    let settled = false;
    const finish = (error: GatehouseError | undefined, value?: string): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      if (error) reject(error);
      else resolve(value!);
    };
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      finish(providerError(name, `the command "${file}" did not finish within ${timeoutMs} ms (secrets.providers.${name}.timeoutMs)`));
    }, timeoutMs);
    child.stdout.on('data', (chunk: Buffer) => {
      outBytes += chunk.length;
      if (outBytes > MAX_OUTPUT_BYTES) {
        child.kill('SIGKILL');
        finish(providerError(name, `the command "${file}" printed more than ${MAX_OUTPUT_BYTES} bytes`));
        return;
      }
      out.push(chunk);
    });
    // Keep only the start of stderr, for the message; it is a diagnostic, not the value.
    child.stderr.on('data', (chunk: Buffer) => {
      if (errText.length < 300) errText += chunk.toString('utf8');
    });
    child.on('error', (error: NodeJS.ErrnoException) => {
      finish(providerError(name, error.code === 'ENOENT' ? `the command "${file}" was not found` : `the command "${file}" could not run (${error.message})`));
    });
    child.on('close', (code, signal) => {
      if (code === 0) {
        const value = chompNewline(Buffer.concat(out).toString('utf8'));
        if (value === '') finish(providerError(name, `the command "${file}" printed nothing`));
        else finish(undefined, value);
        return;
      }
      const detail = errText.split('\n')[0]?.trim().slice(0, 200);
      finish(providerError(name, `the command "${file}" failed (${signal ? `signal ${signal}` : `exit code ${code}`})${detail ? `: ${detail}` : ''}`));
    });
  });
}

interface CacheEntry {
  value: Promise<string>;
  expires: number;
}

export class ProviderSet {
  private readonly cache = new Map<string, CacheEntry>();

  constructor(
    private readonly providers: Readonly<Record<string, SecretProviderSettings>>,
    private readonly env: NodeJS.ProcessEnv = process.env,
    private readonly now: () => number = Date.now,
    /** What relative `file` paths are relative to: the config file's directory. */
    private readonly baseDir: string = process.cwd(),
  ) {}

  has(name: string): boolean {
    return Object.hasOwn(this.providers, name);
  }

  names(): string[] {
    return Object.keys(this.providers);
  }

  /** Describes where a secret comes from, for `secret ls`. Never the value. */
  describe(name: string): string {
    const provider = this.providers[name]!;
    if (provider.env !== undefined) return `env:${provider.env}`;
    if (provider.file !== undefined) return `file:${provider.file}`;
    return `command:${provider.command![0]}`;
  }

  async resolve(name: string): Promise<string> {
    const provider = this.providers[name];
    if (!provider) throw new GatehouseError('secret_not_found', `no provider is configured for secret "${name}"`, { exitCode: 1 });
    if (provider.env !== undefined) {
      const value = this.env[provider.env];
      if (value === undefined || value === '') throw providerError(name, `the environment variable ${provider.env} is not set`);
      return value;
    }
    const cached = this.cache.get(name);
    if (cached && cached.expires > this.now()) return cached.value;
    const pending =
      provider.file !== undefined
        ? readFile(absolutePath(provider.file, this.baseDir), 'utf8').then(chompNewline, () => {
            throw providerError(name, `the file ${provider.file} cannot be read`);
          })
        : runCommand(name, provider.command!, provider.timeoutMs);
    const ttl = provider.cacheTtlSeconds * 1000;
    this.cache.set(name, { value: pending, expires: ttl > 0 ? this.now() + ttl : Number.POSITIVE_INFINITY });
    try {
      const value = await pending;
      if (ttl === 0) this.cache.delete(name);
      return value;
    } catch (error) {
      // Failures are not cached: the next request tries again.
      this.cache.delete(name);
      throw error;
    }
  }

  /** Forgets cached values (on rotation or reload). */
  clear(name?: string): void {
    if (name === undefined) this.cache.clear();
    else this.cache.delete(name);
  }
}
