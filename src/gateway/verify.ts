/**
 * Verify before running: an upstream declaration may pin what it launches, and an artifact that does not
 * match is not started. Checked on every start, so a binary swapped between restarts is caught too.
 * - `sha256`: the executable or script (`file`, else the first argument when it is a file, else the command);
 * - `npm`: the installed package's name, version and registry integrity, from npm's lockfile in the
 *   `node_modules` the server would load from;
 * - `image`: the image must be run by its pinned digest, with a cosign signature over that digest that
 *   verifies against a configured public key (image-signature.ts).
 */
import { createHash } from 'node:crypto';
import { createReadStream, existsSync, readFileSync, statSync } from 'node:fs';
import { delimiter, dirname, isAbsolute, join, resolve } from 'node:path';
import type { UpstreamSettings } from '../config/schema.js';
import { verifyImageSignature } from './image-signature.js';

async function sha256File(path: string): Promise<string> {
  const hash = createHash('sha256');
  for await (const chunk of createReadStream(path)) hash.update(chunk as Buffer);
  return hash.digest('hex');
}

function isFile(path: string): boolean {
  try {
    return statSync(path).isFile();
  } catch {
    return false;
  }
}

/** The command as the OS would find it: a path as given, else the first match on PATH. */
export function resolveCommand(command: string, cwd: string, path = process.env.PATH ?? ''): string | undefined {
  if (command.includes('/')) {
    const absolute = resolve(cwd, command);
    return isFile(absolute) ? absolute : undefined;
  }
  for (const dir of path.split(delimiter)) {
    if (dir === '') continue;
    const candidate = join(dir, command);
    if (isFile(candidate)) return candidate;
  }
  return undefined;
}

/** Why this upstream must not start, or undefined when every pin it declares matches. */
export async function verifyUpstream(settings: UpstreamSettings): Promise<string | undefined> {
  const pin = settings.pin;
  if (!pin || settings.command === undefined) return undefined;
  const cwd = settings.cwd ?? process.cwd();
  if (pin.image) {
    const refusal = verifyImageSignature(pin.image, settings.args, cwd);
    if (refusal) return refusal;
  }
  if (pin.sha256) {
    const firstArgument = settings.args[0] !== undefined ? resolve(cwd, settings.args[0]) : undefined;
    const target = pin.file !== undefined ? resolve(cwd, pin.file) : firstArgument !== undefined && isFile(firstArgument) ? firstArgument : resolveCommand(settings.command, cwd);
    if (target === undefined || !isFile(target)) return `the pinned file ${pin.file ?? settings.command} was not found`;
    const actual = await sha256File(target);
    const expected = pin.sha256.replace(/^sha256:/, '');
    if (actual !== expected) return `${target} has SHA-256 ${actual}, not the pinned ${expected}`;
  }
  if (pin.npm) {
    const found = findInstalledPackage(pin.npm.package, cwd);
    if (!found) return `the pinned npm package ${pin.npm.package} is not installed under ${cwd}`;
    if (found.version !== pin.npm.version) return `${pin.npm.package} is installed at version ${found.version ?? '?'}, not the pinned ${pin.npm.version}`;
    if (pin.npm.integrity !== undefined && found.integrity !== pin.npm.integrity) {
      return `${pin.npm.package}@${found.version} has registry integrity ${found.integrity ?? '(none recorded)'}, not the pinned ${pin.npm.integrity}`;
    }
  }
  return undefined;
}

/** Looks for `node_modules/<name>` from `cwd` upwards, and its entry in npm's hidden lockfile. */
function findInstalledPackage(name: string, cwd: string): { version?: string; integrity?: string } | undefined {
  for (let dir = isAbsolute(cwd) ? cwd : resolve(cwd); ; dir = dirname(dir)) {
    const manifest = join(dir, 'node_modules', name, 'package.json');
    if (existsSync(manifest)) {
      const { version } = JSON.parse(readFileSync(manifest, 'utf8')) as { version?: string };
      let integrity: string | undefined;
      for (const lockfile of [join(dir, 'node_modules', '.package-lock.json'), join(dir, 'package-lock.json')]) {
        if (!existsSync(lockfile)) continue;
        const entry = (JSON.parse(readFileSync(lockfile, 'utf8')) as { packages?: Record<string, { version?: string; integrity?: string }> }).packages?.[`node_modules/${name}`];
        if (entry?.integrity !== undefined && entry.version === version) {
          integrity = entry.integrity;
          break;
        }
      }
      return { ...(version !== undefined ? { version } : {}), ...(integrity !== undefined ? { integrity } : {}) };
    }
    if (dirname(dir) === dir) return undefined;
  }
}
