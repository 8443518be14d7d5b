/**
 * What this host can enforce: the facts behind `gatehouse doctor`, and the quick check `gatehouse run`
 * makes before launching. Each gap comes with how to fix it.
 */
import { spawnSync } from 'node:child_process';
import { accessSync, constants, readFileSync } from 'node:fs';
import { delimiter, join } from 'node:path';

export interface HostCheck {
  id: 'platform' | 'bwrap' | 'userns' | 'apparmor' | 'seccomp' | 'sandbox-start' | 'prlimit' | 'container';
  ok: boolean;
  /** What was found. */
  detail: string;
  /** How to fix it, when not ok. */
  fix?: string;
  /** A missing optional part (the container engine) does not stop the sandbox. */
  optional?: boolean;
}

export interface HostReport {
  platform: string;
  arch: string;
  bwrap?: { path: string; version: string };
  container?: { engine: 'docker' | 'podman'; path: string };
  checks: HostCheck[];
  /** The bubblewrap driver can give full isolation here. */
  bubblewrapUsable: boolean;
}

function readText(path: string): string | undefined {
  try {
    return readFileSync(path, 'utf8').trim();
  } catch {
    return undefined;
  }
}

/**
 * Where the tools the sandbox relies on (bwrap, prlimit, docker, podman) are looked up: system directories
 * only, never the user's PATH. A sandboxed program with a writable HOME could otherwise plant a fake
 * `~/.local/bin/bwrap` that the next `gatehouse run` would use to start it unconfined.
 */
export const SYSTEM_PATH = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';

/** Finds an executable (by default in the system directories), without spawning anything. */
export function which(name: string, path = SYSTEM_PATH): string | undefined {
  if (name.includes('/')) return isExecutable(name) ? name : undefined;
  for (const dir of path.split(delimiter)) {
    if (!dir) continue;
    const candidate = join(dir, name);
    if (isExecutable(candidate)) return candidate;
  }
  return undefined;
}

function isExecutable(path: string): boolean {
  try {
    accessSync(path, constants.X_OK);
    return true;
  } catch {
    return false;
  }
}

export const SUPPORTED_ARCHES = ['x64', 'arm64'];

/**
 * The cheap check before every launch: Linux, a seccomp table for this CPU, and bwrap on PATH. Namespaces
 * refused at run time show up as bwrap failing to start, which `run` reports with a pointer to `doctor`.
 */
export function quickGaps(bwrapPath = 'bwrap'): string[] {
  const gaps: string[] = [];
  if (process.platform !== 'linux') gaps.push(`this is ${process.platform}; the bubblewrap sandbox needs Linux`);
  else if (!SUPPORTED_ARCHES.includes(process.arch)) gaps.push(`no seccomp table for ${process.arch} (x86-64 and aarch64 only)`);
  if (process.platform === 'linux' && !which(bwrapPath)) gaps.push('bwrap is not installed (apt-get install bubblewrap)');
  return gaps;
}

/** The full probe, including starting a real sandbox once. */
export async function probeHost(options: { bwrapPath?: string } = {}): Promise<HostReport> {
  const checks: HostCheck[] = [];
  const linux = process.platform === 'linux';
  const platformOk = linux && SUPPORTED_ARCHES.includes(process.arch);
  checks.push({
    id: 'platform',
    ok: platformOk,
    detail: `${process.platform}/${process.arch}`,
    ...(platformOk ? {} : { fix: linux ? 'run on x86-64 or aarch64; other CPUs have no seccomp table' : 'use the container driver (Docker or Podman) on this platform' }),
  });

  const bwrapPath = which(options.bwrapPath ?? 'bwrap');
  let bwrap: HostReport['bwrap'];
  if (bwrapPath) {
    const version = spawnSync(bwrapPath, ['--version'], { encoding: 'utf8', timeout: 5000 }).stdout.trim().replace(/^bubblewrap\s+/, '');
    bwrap = { path: bwrapPath, version };
    const [major = 0, minor = 0] = version.split('.').map(Number);
    const recentEnough = major > 0 || minor >= 5;
    checks.push({
      id: 'bwrap',
      ok: recentEnough,
      detail: `bubblewrap ${version} at ${bwrapPath}`,
      ...(recentEnough ? {} : { fix: 'install bubblewrap 0.5 or later' }),
    });
  } else {
    checks.push({ id: 'bwrap', ok: false, detail: 'bwrap not found on PATH', fix: 'install it: apt-get install bubblewrap (Debian/Ubuntu), dnf install bubblewrap (Fedora)' });
  }

  const maxUserNamespaces = Number(readText('/proc/sys/user/max_user_namespaces') ?? '0');
  const debianClone = readText('/proc/sys/kernel/unprivileged_userns_clone');
  const root = process.getuid?.() === 0;
  const usernsOk = maxUserNamespaces > 0 && (root || debianClone === undefined || debianClone === '1');
  checks.push({
    id: 'userns',
    ok: usernsOk,
    detail: `max_user_namespaces=${maxUserNamespaces}${debianClone !== undefined ? `, unprivileged_userns_clone=${debianClone}` : ''}`,
    ...(usernsOk ? {} : { fix: 'allow user namespaces: sysctl -w user.max_user_namespaces=15000 kernel.unprivileged_userns_clone=1 (persist in /etc/sysctl.d/)' }),
  });

  const apparmor = readText('/proc/sys/kernel/apparmor_restrict_unprivileged_userns');
  const restricted = apparmor === '1' && !root;
  checks.push({
    id: 'apparmor',
    ok: !restricted,
    detail: apparmor === undefined ? 'no AppArmor user-namespace restriction' : `apparmor_restrict_unprivileged_userns=${apparmor}`,
    ...(restricted
      ? {
          fix:
            'AppArmor restricts unprivileged user namespaces (Ubuntu 24.04+): give bwrap a profile that allows them (Ubuntu ships one as /etc/apparmor.d/bwrap-userns-restrict; load it with apparmor_parser -r), or set kernel.apparmor_restrict_unprivileged_userns=0',
        }
      : {}),
  });

  const status = readText('/proc/self/status') ?? '';
  const seccomp = /^Seccomp:/m.test(status);
  checks.push({
    id: 'seccomp',
    ok: seccomp,
    detail: seccomp ? 'seccomp filters supported' : 'the kernel reports no seccomp support',
    ...(seccomp ? {} : { fix: 'use a kernel built with CONFIG_SECCOMP_FILTER' }),
  });

  const prlimit = which('prlimit', SYSTEM_PATH);
  checks.push({
    id: 'prlimit',
    ok: prlimit !== undefined,
    detail: prlimit ?? 'prlimit not found (needed only when rlimits are configured)',
    ...(prlimit ? {} : { fix: 'install util-linux' }),
    optional: true,
  });

  let started = false;
  if (bwrapPath && linux && SUPPORTED_ARCHES.includes(process.arch)) {
    const { openFilterFd } = await import('./seccomp.js');
    const { closeSync } = await import('node:fs');
    const fd = await openFilterFd();
    const result = spawnSync(
      bwrapPath,
      ['--unshare-user', '--unshare-pid', '--unshare-net', '--unshare-ipc', '--unshare-uts', '--die-with-parent', '--new-session',
        '--ro-bind', '/', '/', '--proc', '/proc', '--dev', '/dev', '--seccomp', '3', 'true'],
      { stdio: ['ignore', 'ignore', 'pipe', fd], encoding: 'utf8', timeout: 10000 },
    );
    closeSync(fd);
    started = result.status === 0;
    checks.push({
      id: 'sandbox-start',
      ok: started,
      detail: started ? 'started a sandbox with new user, PID and network namespaces and the seccomp filter' : `bwrap failed: ${(result.stderr ?? '').trim() || `exit ${result.status}`}`,
      ...(started ? {} : { fix: 'fix the gaps above; on a container host, run Gatehouse with --privileged or use the container driver' }),
    });
  }

  let container: HostReport['container'];
  for (const engine of ['podman', 'docker'] as const) {
    const path = which(engine);
    if (path) {
      container = { engine, path };
      break;
    }
  }
  checks.push({
    id: 'container',
    ok: container !== undefined,
    detail: container ? `${container.engine} CLI at ${container.path}` : 'no Docker or Podman CLI',
    ...(container ? {} : { fix: 'install Docker or Podman to use the container driver' }),
    optional: true,
  });

  return {
    platform: process.platform,
    arch: process.arch,
    ...(bwrap ? { bwrap } : {}),
    ...(container ? { container } : {}),
    checks,
    bubblewrapUsable: started && checks.filter((check) => !check.optional).every((check) => check.ok),
  };
}
