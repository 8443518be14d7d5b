import { mkdirSync, chmodSync, statSync } from 'node:fs';
import { homedir } from 'node:os';
import { isAbsolute, join, resolve } from 'node:path';

/** Expands a leading `~` or `~/` to the home directory. `~user` is not supported and is left alone. */
export function expandHome(path: string, home: string = homedir()): string {
  if (path === '~') return home;
  if (path.startsWith('~/')) return join(home, path.slice(2));
  return path;
}

/** Expands `~` and makes the path absolute against `base`. */
export function absolutePath(path: string, base: string, home: string = homedir()): string {
  const expanded = expandHome(path, home);
  return isAbsolute(expanded) ? resolve(expanded) : resolve(base, expanded);
}

/**
 * Where Gatehouse keeps its state: `--data-dir`, else `GATEHOUSE_HOME`, else the config's `node.dataDir`,
 * else `~/.gatehouse`.
 */
export function resolveDataDir(flag?: string, fromConfig?: string): string {
  const chosen = flag ?? process.env.GATEHOUSE_HOME ?? fromConfig ?? '~/.gatehouse';
  return absolutePath(chosen, process.cwd());
}

/** Creates the directory (and parents) if needed, and makes sure it is private to this user (0700). */
export function ensurePrivateDir(path: string): string {
  mkdirSync(path, { recursive: true, mode: 0o700 });
  if ((statSync(path).mode & 0o777) !== 0o700) chmodSync(path, 0o700);
  return path;
}
