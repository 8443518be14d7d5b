/**
 * The mount plan: what the sandboxed program sees of the host's files, computed from the policy's
 * filesystem view. The plan is data (a list of mount steps in order) so it can be tested, shown by
 * `gatehouse run --dry-run`, and turned into bwrap arguments or container mounts.
 *
 * Order matters, because a later mount hides whatever it covers:
 *   1. the system (read-only /usr, /etc, /lib...), so programs can run at all;
 *   2. the policy's allows, parents before children;
 *   3. private /proc, /dev, /tmp and an empty /run (no docker.sock, D-Bus or ssh-agent);
 *   4. the policy's allows under /tmp;
 *   5. masks: the policy's denies, the default sensitive set, Gatehouse's own data directory;
 *   6. explicit allows inside a masked sensitive directory (`~/.ssh/known_hosts`), then the mask goes read-only.
 * Paths are resolved through symlinks first, so a deny on a symlink masks what it points to. An allow that
 * leads through a symlink is bound only when the policy also allows where it leads (`permits`): a program
 * with a writable workspace can plant a symlink at a path an allow names before it exists.
 */
import { lstatSync, readdirSync, realpathSync, statSync, type Dirent } from 'node:fs';
import { dirname, join, resolve, sep } from 'node:path';
import type { FilesystemView } from '../policy/engine.js';

export type MountStep =
  | { kind: 'ro-bind'; source: string; dest: string; why: string }
  | { kind: 'bind'; source: string; dest: string; why: string }
  | { kind: 'symlink'; target: string; dest: string; why: string }
  /** An empty directory mount: a private tmpfs, or a mask over a denied directory. */
  | { kind: 'tmpfs'; dest: string; why: string }
  | { kind: 'remount-ro'; dest: string; why: string }
  /** A mask over a denied file: `/dev/null` bound read-only on top. */
  | { kind: 'mask-file'; dest: string; why: string }
  | { kind: 'proc'; dest: string; why: string }
  | { kind: 'dev'; dest: string; why: string }
  | { kind: 'dir'; dest: string; why: string };

export interface MountPlan {
  steps: MountStep[];
  /** Paths hidden from the program (resolved), for `--dry-run` and the launch audit record. */
  masked: string[];
  /**
   * Denies a mount cannot express (glob patterns, such as every *.pem file under a tree) over a tree the program can see. The
   * launcher refuses to start with gaps unless the user accepts weaker isolation.
   */
  gaps: string[];
  /** Where the program starts: the working directory if it is visible, else HOME. */
  cwd: string;
  home: string;
}

export interface MountPlanInput {
  view: FilesystemView;
  home: string;
  cwd: string;
  /** Gatehouse's state (keys, vault, audit): always masked. */
  dataDir?: string;
  /** Extra read-only files placed in the sandbox (the bridge script), `source → dest`. */
  extras?: { source: string; dest: string }[];
  /** Read-only system directories; the defaults cover Debian, Ubuntu, Fedora and Alpine layouts. */
  system?: string[];
  /** Mask these too (tests use this to plant files). */
  extraSensitive?: string[];
  /** Keep these read-only wherever they are visible (the config file the policy came from). */
  protect?: string[];
  /**
   * The policy's own decision for one path (`engine.decide` for the filesystem surface, which requires both
   * the path as asked and its real path to pass). Without it, an allow that leads through a symlink is not
   * mounted.
   */
  permits?: (path: string, access: 'read' | 'write') => boolean;
}

export const DEFAULT_SYSTEM = ['/usr', '/bin', '/sbin', '/lib', '/lib32', '/lib64', '/libx32', '/etc', '/opt'];

/** Credentials and histories under HOME that are masked unless a rule allows that exact place. */
export const SENSITIVE_IN_HOME = [
  '.ssh', '.aws', '.config/gcloud', '.azure', '.kube', '.docker', '.npmrc', '.pypirc', '.netrc', '.git-credentials',
  '.gnupg', '.config/gh', '.pgpass', '.password-store', '.local/share/keyrings', '.cargo/credentials.toml',
  '.terraform.d/credentials.tfrc.json', '.vault-token',
  // Podman's registry logins (auth.json) and the containers.conf that shapes every rootless container.
  '.config/containers',
  // Shell and REPL histories: they hold pasted tokens and passwords.
  '.bash_history', '.zsh_history', '.histfile', '.sh_history', '.local/share/fish/fish_history', '.python_history',
  '.node_repl_history', '.psql_history', '.mysql_history', '.sqlite_history', '.lesshst', '.rediscli_history',
];

/**
 * Files that run code outside the sandbox later (shell start-up files, git's global config and hooks,
 * autostart entries): kept read-only under a writable HOME unless a rule allows that exact place, so a
 * steered agent cannot plant something that runs after it has exited.
 */
export const PERSISTENCE_IN_HOME = [
  '.bashrc', '.bash_profile', '.bash_login', '.bash_logout', '.profile', '.zshrc', '.zprofile', '.zshenv', '.zlogin',
  '.config/fish', '.gitconfig', '.config/git', '.config/autostart', '.config/systemd', '.config/environment.d', '.pam_environment',
  // Rootless Podman's images: the next container launch runs what is there.
  '.local/share/containers',
];

/** Host secrets a root-run sandbox could otherwise read through its owner bits. */
export const SENSITIVE_SYSTEM = [
  '/etc/shadow', '/etc/gshadow', '/etc/shadow-', '/etc/gshadow-', '/etc/sudoers', '/etc/sudoers.d', '/etc/ssh', '/etc/security/opasswd',
  '/etc/ssl/private', '/etc/letsencrypt', '/etc/krb5.keytab', '/etc/wireguard', '/etc/NetworkManager/system-connections',
  '/etc/docker', '/etc/containers/auth.json', '/etc/rancher', '/etc/kubernetes',
];

/** Places the sandbox always makes private or hides, so policy binds never land there. */
const PRIVATE_ROOTS = ['/proc', '/dev', '/run', '/var/run', '/sys'];

type Kind = 'dir' | 'file' | undefined;

function resolved(path: string): { path: string; kind: Kind } {
  try {
    const real = realpathSync.native(path);
    return { path: real, kind: statSync(real).isDirectory() ? 'dir' : 'file' };
  } catch {
    return { path, kind: undefined };
  }
}

/** Whether any allow in the view leads through a symlink (and so needs the policy's decision to be bound). */
export function followsSymlinks(view: FilesystemView): boolean {
  return view.allow.some((entry) => {
    const real = resolved(entry.path);
    return real.kind !== undefined && real.path !== resolve(entry.path);
  });
}

export function isWithin(path: string, root: string): boolean {
  return path === root || root === '/' || path.startsWith(root.endsWith(sep) ? root : root + sep);
}

const depth = (path: string): number => (path === '/' ? 0 : path.split('/').length - 1);

export function computeMountPlan(input: MountPlanInput): MountPlan {
  const steps: MountStep[] = [];
  const masked: string[] = [];
  /** Everything bound so far (resolved), to know whether a mask has anything to cover. */
  const visible: string[] = [];

  // 1. The system, read-only. On merged-/usr systems /bin and /lib are symlinks; keep them symlinks.
  for (const path of input.system ?? DEFAULT_SYSTEM) {
    let link: string | undefined;
    try {
      if (lstatSync(path).isSymbolicLink()) link = realpathSync.native(path);
    } catch {
      continue;
    }
    if (link !== undefined) steps.push({ kind: 'symlink', target: link, dest: path, why: 'system' });
    else {
      steps.push({ kind: 'ro-bind', source: path, dest: path, why: 'system' });
      visible.push(path);
    }
  }

  // 2. The policy's allows, parents first; rw before ro at the same place is irrelevant (one wins).
  //    `written` is the path as the rule names it, `path` where it really leads (what gets bound).
  const gaps: string[] = [];
  const allows = input.view.allow
    .map((entry) => ({ ...entry, written: resolve(entry.path), ...resolved(entry.path) }))
    .filter((entry) => entry.kind !== undefined && !PRIVATE_ROOTS.some((root) => isWithin(entry.path, root) && root !== '/'))
    .filter((entry) => {
      if (entry.path === entry.written) return true;
      if (input.permits?.(entry.written, entry.access === 'rw' ? 'write' : 'read') === true) return true;
      gaps.push(`rule ${entry.ruleId} allows ${entry.written}, which leads through a symlink to ${entry.path}, which the policy does not allow: not mounted`);
      return false;
    })
    .sort((a, b) => depth(a.path) - depth(b.path));
  const underTmp = (path: string): boolean => isWithin(path, '/tmp');
  const bindAllow = (entry: (typeof allows)[number]): void => {
    steps.push({
      kind: entry.access === 'rw' ? 'bind' : 'ro-bind',
      source: entry.path,
      dest: entry.path,
      why: `allow ${entry.access} (rule ${entry.ruleId})`,
    });
    visible.push(entry.path);
  };

  // What the masks of step 5 protect, gathered now because protecting it also shapes the binds (below).
  // `guardMissing`: if it does not exist, the program must not be able to create it either.
  const denies: { path: string; access: 'all' | 'write'; why: string; sensitive?: boolean; guardMissing?: boolean }[] = [];
  for (const entry of input.view.deny) denies.push({ path: entry.path, access: entry.access, why: `deny (rule ${entry.ruleId})`, guardMissing: true });
  for (const relative of SENSITIVE_IN_HOME) {
    denies.push({ path: join(input.home, relative), access: 'all', why: 'default sensitive path', sensitive: true, guardMissing: true });
  }
  const allowedRw = (path: string): boolean => allows.some((allow) => allow.access === 'rw' && isWithin(allow.written, path));
  for (const relative of PERSISTENCE_IN_HOME) {
    const path = join(input.home, relative);
    if (!allowedRw(path)) denies.push({ path, access: 'write', why: 'runs outside the sandbox later', guardMissing: true });
  }
  // In a writable workspace, git's config and hooks and direnv's .envrc run code on the host at the next
  // `git status` or `cd`. A missing .envrc is left alone (direnv asks before it runs a new one); missing
  // git files are guarded only where .git exists (a program that makes a new repository is not caught).
  // Workspaces: each writable allow, and the working directory wherever it is writable.
  const workspaces = new Set(allows.filter((allow) => allow.access === 'rw' && allow.kind === 'dir').map((allow) => allow.path));
  const start = resolved(input.cwd);
  if (start.kind === 'dir' && allows.some((allow) => allow.access === 'rw' && isWithin(start.path, allow.path))) workspaces.add(start.path);
  for (const workspace of workspaces) {
    const envrc = join(workspace, '.envrc');
    if (!allowedRw(envrc)) denies.push({ path: envrc, access: 'write', why: 'runs outside the sandbox later (direnv)' });
    if (resolved(join(workspace, '.git')).kind !== 'dir') continue;
    for (const relative of ['.git/config', '.git/hooks']) {
      const path = join(workspace, relative);
      if (!allowedRw(path)) denies.push({ path, access: 'write', why: 'runs outside the sandbox later (git)', guardMissing: true });
    }
  }
  for (const path of input.protect ?? []) denies.push({ path, access: 'write', why: 'Gatehouse configuration', guardMissing: true });
  if (input.dataDir) denies.push({ path: input.dataDir, access: 'all', why: "Gatehouse's data directory" });

  // Where the program can write, a protected path must stay where the masks will be next time too:
  //  - every directory between a writable allow and a protected path is bound onto itself, so it is a mount
  //    point and cannot be renamed (EBUSY), which would carry the protected path away from its mask;
  //  - a protected path that does not exist cannot be masked without creating it on the host, so the
  //    nearest directory that does exist is kept read-only ("frozen"), with each entry already in it bound
  //    writable again: the program can change what is there but not add a name, so it cannot create it.
  const allowedExactly = (written: string): boolean => allows.some((allow) => allow.written === written);
  /** The writable allow that finally decides `path` (the deepest one covering it), if the deepest is writable. */
  const writableRoot = (path: string): string | undefined => {
    let deepest: (typeof allows)[number] | undefined;
    for (const allow of allows) if (isWithin(path, allow.path) && (!deepest || depth(allow.path) >= depth(deepest.path))) deepest = allow;
    // Under the private /tmp only allows bound on top of it are seen; the host's /tmp is not.
    if (deepest && underTmp(path) && !underTmp(deepest.path)) return undefined;
    return deepest?.access === 'rw' ? deepest.path : undefined;
  };
  const pinned = new Set<string>();
  const frozen = new Set<string>();
  const pinBetween = (root: string, path: string): void => {
    for (let directory = dirname(path); directory !== root && isWithin(directory, root) && directory !== '/'; directory = dirname(directory)) pinned.add(directory);
  };
  for (const entry of denies) {
    if (entry.sensitive && allowedExactly(resolve(entry.path))) continue;
    const target = resolved(entry.path);
    if (target.kind !== undefined) {
      const root = writableRoot(target.path);
      if (root !== undefined && root !== target.path) pinBetween(root, target.path);
      continue;
    }
    if (!entry.guardMissing) continue;
    let ancestor = dirname(resolve(entry.path));
    while (ancestor !== '/' && resolved(ancestor).kind === undefined) ancestor = dirname(ancestor);
    const existing = resolved(ancestor);
    if (existing.kind !== 'dir') continue;
    const root = writableRoot(existing.path);
    if (root === undefined) continue;
    frozen.add(existing.path);
    pinBetween(root, existing.path);
  }
  /** Entries a frozen directory bound again: already mount points, so they need no pin. */
  const reboundInFrozen = new Set<string>();
  const freeze = (directory: string): void => {
    steps.push({ kind: 'ro-bind', source: directory, dest: directory, why: 'no new names here: a protected path in it does not exist yet' });
    let names: Dirent[] = [];
    try {
      names = readdirSync(directory, { withFileTypes: true });
    } catch {
      // Unreadable: it stays read-only as a whole, which fails closed.
    }
    // Symlinks and special files need no bind: the read-only directory keeps them as they are.
    for (const name of names) {
      if (!name.isDirectory() && !name.isFile()) continue;
      const path = join(directory, name.name);
      steps.push({ kind: 'bind', source: path, dest: path, why: 'writable, in a directory kept read-only' });
      reboundInFrozen.add(path);
    }
  };
  type Bind = { order: number; path: string; emit: () => void };
  const binds: Bind[] = [
    ...allows.map((entry) => ({ order: 0, path: entry.path, emit: () => bindAllow(entry) })),
    ...[...pinned].filter((path) => !frozen.has(path)).map((path) => ({
      order: 1,
      path,
      emit: () => {
        if (!reboundInFrozen.has(path)) steps.push({ kind: 'bind', source: path, dest: path, why: 'pinned: holds a protected path, so it cannot be renamed' });
      },
    })),
    ...[...frozen].map((path) => ({ order: 2, path, emit: () => freeze(path) })),
  ].sort((a, b) => depth(a.path) - depth(b.path) || a.order - b.order);
  for (const bind of binds) if (!underTmp(bind.path)) bind.emit();

  // 3. Private kernel views and scratch space; /run is an empty tmpfs so host sockets there vanish.
  steps.push({ kind: 'proc', dest: '/proc', why: 'private /proc (new PID namespace)' });
  // A root-run sandbox is uid 0 on the host too: keep it from writing global sysctls (core_pattern...).
  steps.push({ kind: 'ro-bind', source: '/proc/sys', dest: '/proc/sys', why: 'kernel settings read-only' });
  steps.push({ kind: 'dev', dest: '/dev', why: 'private /dev' });
  steps.push({ kind: 'tmpfs', dest: '/tmp', why: 'private /tmp' });
  steps.push({ kind: 'tmpfs', dest: '/run', why: 'hide /run (docker.sock, D-Bus, ssh-agent)' });
  if (visible.some((path) => isWithin('/var', path))) {
    // /var/run is usually a symlink to /run; if /var is bound, the bound /var/run leads to the empty /run.
    const varRun = resolved('/var/run');
    if (varRun.kind === 'dir' && varRun.path !== '/run') steps.push({ kind: 'tmpfs', dest: '/var/run', why: 'hide /var/run' });
  }

  // 4. Allows (and their pinned and frozen directories) under /tmp, on top of the private /tmp.
  for (const bind of binds) if (underTmp(bind.path)) bind.emit();
  const covered = (path: string): boolean => visible.some((root) => isWithin(path, root));

  // 5. Masks. A deny beats any allow, so masks come after every bind they might cover.

  for (const path of SENSITIVE_SYSTEM) denies.push({ path, access: 'all', why: 'host secret' });
  for (const path of input.extraSensitive ?? []) denies.push({ path, access: 'all', why: 'sensitive' });
  // Glob denies: mask the literal prefix when it lies strictly inside what is visible (hiding more than
  // asked, which fails closed); when masking it would hide a whole allowed or system tree, it is a gap.
  const roots = [...visible];
  for (const entry of input.view.unmountable ?? []) {
    if (entry.effect !== 'deny') continue;
    const prefix = resolved(entry.prefix).path;
    if (!roots.some((root) => isWithin(prefix, root) || isWithin(root, prefix))) continue;
    if (roots.some((root) => isWithin(root, prefix))) {
      gaps.push(`rule ${entry.ruleId} denies "${entry.pattern}", which a mount cannot express without hiding all of ${prefix}`);
    } else {
      denies.push({ path: prefix, access: 'all', why: `deny "${entry.pattern}" (rule ${entry.ruleId}), masked whole` });
    }
  }
  const resolvedDenies = denies
    .map((entry) => ({ ...entry, written: resolve(entry.path), ...resolved(entry.path) }))
    .filter((entry) => entry.kind !== undefined && covered(entry.path))
    .sort((a, b) => depth(a.path) - depth(b.path) || (a.access === 'all' ? 1 : 0) - (b.access === 'all' ? 1 : 0));
  const fullyMasked: string[] = [];
  /** Masked sensitive directories whose explicitly allowed children are bound again on top. */
  const reopened: { mask: string; children: typeof allows }[] = [];
  // Both as written (allowedExactly): an allow that only leads to a sensitive place (a planted symlink) never unmasks it.
  for (const entry of resolvedDenies) {
    // Inside a directory that is already masked there is nothing left to hide or to make read-only.
    if (fullyMasked.some((root) => isWithin(entry.path, root))) continue;
    if (entry.sensitive && entry.path === entry.written && allowedExactly(entry.written)) continue;
    if (entry.access === 'write') {
      steps.push({ kind: 'ro-bind', source: entry.path, dest: entry.path, why: `${entry.why}: read-only` });
      continue;
    }
    masked.push(entry.path);
    if (entry.kind === 'file') {
      steps.push({ kind: 'mask-file', dest: entry.path, why: `mask: ${entry.why}` });
      continue;
    }
    steps.push({ kind: 'tmpfs', dest: entry.path, why: `mask: ${entry.why}` });
    fullyMasked.push(entry.path);
    const children = entry.sensitive ? allows.filter((allow) => isWithin(allow.path, entry.path)) : [];
    if (children.length > 0) reopened.push({ mask: entry.path, children });
    else steps.push({ kind: 'remount-ro', dest: entry.path, why: 'masks are read-only' });
  }

  // 6. Explicit allows inside masked sensitive directories, unless a policy deny also covers them.
  const policyDenied = (path: string): boolean =>
    input.view.deny.some((deny) => deny.access === 'all' && isWithin(path, resolved(deny.path).path));
  for (const { mask, children } of reopened) {
    for (const child of children) if (!policyDenied(child.path)) bindAllow(child);
    steps.push({ kind: 'remount-ro', dest: mask, why: 'masks are read-only' });
  }

  for (const extra of input.extras ?? []) steps.push({ kind: 'ro-bind', source: extra.source, dest: extra.dest, why: 'gatehouse bridge' });

  const home = input.home;
  if (!covered(home)) steps.push({ kind: 'dir', dest: home, why: 'empty HOME' });
  const cwd = covered(resolved(input.cwd).path) ? resolved(input.cwd).path : home;
  return { steps, masked, gaps, cwd, home };
}

/** The plan as bwrap arguments, in order. */
export function bwrapMountArgs(plan: MountPlan): string[] {
  const args: string[] = [];
  for (const step of plan.steps) {
    switch (step.kind) {
      case 'ro-bind':
        args.push('--ro-bind', step.source, step.dest);
        break;
      case 'bind':
        args.push('--bind', step.source, step.dest);
        break;
      case 'symlink':
        args.push('--symlink', step.target, step.dest);
        break;
      case 'tmpfs':
        args.push('--tmpfs', step.dest);
        break;
      case 'remount-ro':
        args.push('--remount-ro', step.dest);
        break;
      case 'mask-file':
        args.push('--ro-bind', '/dev/null', step.dest);
        break;
      case 'proc':
        args.push('--proc', step.dest);
        break;
      case 'dev':
        args.push('--dev', step.dest);
        break;
      case 'dir':
        args.push('--dir', step.dest);
        break;
    }
  }
  return args;
}

/**
 * Whether the program can change the host file at `path` through this plan: the mount that finally covers
 * it (the last step whose destination contains it) is a writable bind of a host path. Private tmpfs
 * (/tmp) and masks do not count: what is written there never reaches the host.
 */
export function writableInside(plan: MountPlan, path: string): boolean {
  let state: 'rw' | 'ro' | 'private' | undefined;
  let dest: string | undefined;
  for (const step of plan.steps) {
    if (!isWithin(path, step.dest)) continue;
    if (step.kind === 'dir') continue;
    if (step.kind === 'remount-ro') {
      if (step.dest === dest) state = 'ro';
      continue;
    }
    dest = step.dest;
    state = step.kind === 'bind' ? 'rw' : step.kind === 'tmpfs' ? 'private' : 'ro';
  }
  return state === 'rw';
}
