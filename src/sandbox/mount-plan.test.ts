import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { bwrapMountArgs, computeMountPlan, type MountStep } from './mount-plan.js';

function fixture(): { root: string; home: string; done: () => void } {
  const root = mkdtempSync(join(tmpdir(), 'gh-plan-'));
  const home = join(root, 'home');
  for (const dir of ['.ssh', '.aws', 'work/src', 'work/secrets', 'shared']) mkdirSync(join(home, dir), { recursive: true });
  writeFileSync(join(home, '.ssh', 'id_rsa'), 'key');
  writeFileSync(join(home, '.ssh', 'known_hosts'), 'hosts');
  writeFileSync(join(home, '.npmrc'), '//registry:_authToken=x');
  writeFileSync(join(home, 'work', '.env'), 'TOKEN=x');
  return { root, home, done: () => rmSync(root, { recursive: true, force: true }) };
}

const at = (steps: MountStep[], dest: string): MountStep[] => steps.filter((step) => step.dest === dest);
const indexOf = (steps: MountStep[], kind: MountStep['kind'], dest: string): number => steps.findIndex((step) => step.kind === kind && step.dest === dest);
const lastIndexOf = (steps: MountStep[], kind: MountStep['kind'], dest: string): number => steps.findLastIndex((step) => step.kind === kind && step.dest === dest);

test('masks the default sensitive set under an allowed home, after the home bind, read-only', () => {
  const { home, done } = fixture();
  try {
    const plan = computeMountPlan({ view: { allow: [{ path: home, access: 'rw', ruleId: 'home' }], deny: [], unmountable: [] }, home, cwd: home });
    const bind = indexOf(plan.steps, 'bind', home);
    const sshMask = indexOf(plan.steps, 'tmpfs', join(home, '.ssh'));
    assert.ok(bind >= 0 && sshMask > bind);
    assert.ok(indexOf(plan.steps, 'remount-ro', join(home, '.ssh')) > sshMask);
    assert.ok(indexOf(plan.steps, 'mask-file', join(home, '.npmrc')) > bind);
    assert.deepEqual(plan.masked.filter((path) => path.startsWith(home)).sort(), [join(home, '.aws'), join(home, '.npmrc'), join(home, '.ssh')].sort());
  } finally {
    done();
  }
});

test('an explicit allow inside a sensitive directory is bound on top of its mask; the rest stays hidden', () => {
  const { home, done } = fixture();
  try {
    const knownHosts = join(home, '.ssh', 'known_hosts');
    const plan = computeMountPlan({
      view: { allow: [{ path: home, access: 'rw', ruleId: 'home' }, { path: knownHosts, access: 'ro', ruleId: 'kh' }], deny: [], unmountable: [] },
      home,
      cwd: home,
    });
    const mask = indexOf(plan.steps, 'tmpfs', join(home, '.ssh'));
    const rebind = lastIndexOf(plan.steps, 'ro-bind', knownHosts);
    assert.ok(mask >= 0 && rebind > mask, 'known_hosts is bound after the mask');
    assert.ok(indexOf(plan.steps, 'remount-ro', join(home, '.ssh')) > rebind);
    assert.equal(at(plan.steps, join(home, '.ssh', 'id_rsa')).length, 0);
  } finally {
    done();
  }
});

test('allowing a sensitive directory itself leaves it unmasked', () => {
  const { home, done } = fixture();
  try {
    const plan = computeMountPlan({ view: { allow: [{ path: home, access: 'rw', ruleId: 'home' }, { path: join(home, '.aws'), access: 'ro', ruleId: 'aws' }], deny: [], unmountable: [] }, home, cwd: home });
    assert.equal(indexOf(plan.steps, 'tmpfs', join(home, '.aws')), -1);
    assert.ok(!plan.masked.includes(join(home, '.aws')));
  } finally {
    done();
  }
});

test('a deny beats an allow below it, and a write-deny makes a subtree read-only', () => {
  const { home, done } = fixture();
  try {
    const work = join(home, 'work');
    const plan = computeMountPlan({
      view: {
        allow: [{ path: work, access: 'rw', ruleId: 'ws' }, { path: join(work, 'secrets'), access: 'rw', ruleId: 'secrets-rw' }],
        deny: [{ path: join(work, 'secrets'), access: 'all', ruleId: 'no-secrets' }, { path: join(work, 'src'), access: 'write', ruleId: 'src-ro' }, { path: join(work, '.env'), access: 'all', ruleId: 'env' }],
        unmountable: [],
      },
      home,
      cwd: work,
    });
    assert.ok(indexOf(plan.steps, 'tmpfs', join(work, 'secrets')) > indexOf(plan.steps, 'bind', join(work, 'secrets')));
    assert.ok(indexOf(plan.steps, 'ro-bind', join(work, 'src')) > indexOf(plan.steps, 'bind', work));
    assert.ok(indexOf(plan.steps, 'mask-file', join(work, '.env')) >= 0);
    assert.equal(plan.cwd, work);
  } finally {
    done();
  }
});

test('a deny on a symlink masks what it points to', () => {
  const { root, home, done } = fixture();
  try {
    const real = join(root, 'real-secrets');
    mkdirSync(real);
    symlinkSync(real, join(home, 'work', 'link'));
    const plan = computeMountPlan({
      view: { allow: [{ path: home, access: 'rw', ruleId: 'home' }, { path: real, access: 'ro', ruleId: 'real' }], deny: [{ path: join(home, 'work', 'link'), access: 'all', ruleId: 'link' }], unmountable: [] },
      home,
      cwd: home,
    });
    assert.ok(indexOf(plan.steps, 'tmpfs', real) > indexOf(plan.steps, 'ro-bind', real));
  } finally {
    done();
  }
});

test('/tmp stays private and /run is emptied even when the policy allows the whole filesystem', () => {
  const { home, done } = fixture();
  try {
    const plan = computeMountPlan({ view: { allow: [{ path: '/', access: 'ro', ruleId: 'everything' }], deny: [], unmountable: [] }, home, cwd: home });
    const rootBind = indexOf(plan.steps, 'ro-bind', '/');
    assert.ok(indexOf(plan.steps, 'tmpfs', '/tmp') > rootBind);
    assert.ok(indexOf(plan.steps, 'tmpfs', '/run') > rootBind);
    assert.ok(indexOf(plan.steps, 'mask-file', '/etc/shadow') > rootBind);
  } finally {
    done();
  }
});

test('allows under /proc, /dev and /run are ignored; the data directory is always masked', () => {
  const { home, root, done } = fixture();
  try {
    const dataDir = join(home, '.gatehouse');
    mkdirSync(dataDir);
    const plan = computeMountPlan({ view: { allow: [{ path: home, access: 'rw', ruleId: 'home' }, { path: '/run', access: 'rw', ruleId: 'run' }, { path: '/proc/1', access: 'rw', ruleId: 'p' }], deny: [], unmountable: [] }, home, cwd: root, dataDir });
    assert.equal(indexOf(plan.steps, 'bind', '/run'), -1);
    assert.equal(indexOf(plan.steps, 'bind', '/proc/1'), -1);
    assert.ok(plan.masked.includes(dataDir));
    assert.equal(plan.cwd, home, 'an invisible working directory falls back to HOME');
  } finally {
    done();
  }
});

test('a glob deny inside an allowed tree masks its literal prefix; one over the whole tree is a gap', () => {
  const { home, done } = fixture();
  try {
    const work = join(home, 'work');
    const view = {
      allow: [{ path: work, access: 'rw' as const, ruleId: 'ws' }],
      deny: [],
      unmountable: [
        { pattern: `${work}/secrets/*.pem`, ruleId: 'pems', effect: 'deny' as const, prefix: join(work, 'secrets') },
        { pattern: `${work}/**/*.key`, ruleId: 'keys', effect: 'deny' as const, prefix: work },
      ],
    };
    const plan = computeMountPlan({ view, home, cwd: work });
    assert.ok(plan.masked.includes(join(work, 'secrets')));
    assert.equal(plan.gaps.length, 1);
    assert.match(plan.gaps[0]!, /rule keys/);
  } finally {
    done();
  }
});

test('turns steps into bwrap arguments in order', () => {
  const args = bwrapMountArgs({
    steps: [
      { kind: 'ro-bind', source: '/usr', dest: '/usr', why: '' },
      { kind: 'tmpfs', dest: '/x', why: '' },
      { kind: 'mask-file', dest: '/y', why: '' },
      { kind: 'remount-ro', dest: '/x', why: '' },
    ],
    masked: [],
    gaps: [],
    cwd: '/',
    home: '/',
  });
  assert.deepEqual(args, ['--ro-bind', '/usr', '/usr', '--tmpfs', '/x', '--ro-bind', '/dev/null', '/y', '--remount-ro', '/x']);
});

test('shell start-up files and git config stay read-only under a writable HOME unless a rule allows them', () => {
  const { home, done } = fixture();
  try {
    writeFileSync(join(home, '.bashrc'), '# rc');
    writeFileSync(join(home, '.gitconfig'), '[user]');
    const plan = computeMountPlan({
      view: { allow: [{ path: home, access: 'rw', ruleId: 'home' }, { path: join(home, '.gitconfig'), access: 'rw', ruleId: 'git' }], deny: [], unmountable: [] },
      home,
      cwd: home,
    });
    assert.ok(lastIndexOf(plan.steps, 'ro-bind', join(home, '.bashrc')) > indexOf(plan.steps, 'bind', home));
    assert.equal(lastIndexOf(plan.steps, 'ro-bind', join(home, '.gitconfig')), -1);
  } finally {
    done();
  }
});

test('an allow that leads through a symlink is bound only when the policy allows where it leads, and never unmasks a sensitive path', () => {
  const { home, done } = fixture();
  try {
    const cache = join(home, 'work', '.cache');
    symlinkSync(join(home, '.ssh'), cache);
    const view = { allow: [{ path: join(home, 'work'), access: 'rw' as const, ruleId: 'ws' }, { path: cache, access: 'rw' as const, ruleId: 'cache' }], deny: [], unmountable: [] };
    const asked: string[] = [];
    const refused = computeMountPlan({ view, home, cwd: home, permits: (path) => (asked.push(path), false) });
    assert.deepEqual(asked, [cache], 'the policy is asked about the path as written');
    assert.equal(at(refused.steps, join(home, '.ssh')).some((step) => step.kind === 'bind'), false);
    assert.match(refused.gaps.join('\n'), /rule cache allows .*\.cache, which leads through a symlink to .*\.ssh/);
    // Without a policy to ask, the same allow is dropped too (fail closed).
    assert.equal(computeMountPlan({ view, home, cwd: home }).gaps.length, 1);

    // The policy allows ~/.ssh as well: bound, but the default mask still applies, because only an allow of
    // ~/.ssh as written lifts it.
    const permitted = computeMountPlan({ view, home, cwd: home, permits: () => true });
    assert.equal(permitted.gaps.length, 0);
    const bind = indexOf(permitted.steps, 'bind', join(home, '.ssh'));
    assert.ok(bind >= 0 && indexOf(permitted.steps, 'tmpfs', join(home, '.ssh')) > bind);
  } finally {
    done();
  }
});

test('directories between a writable allow and a denied path are bound onto themselves (pinned), before the mask', () => {
  const { home, done } = fixture();
  try {
    const deep = join(home, 'work', 'src', 'keys');
    mkdirSync(deep);
    const view = { allow: [{ path: join(home, 'work'), access: 'rw' as const, ruleId: 'ws' }], deny: [{ path: deep, access: 'all' as const, ruleId: 'keys' }], unmountable: [] };
    const plan = computeMountPlan({ view, home, cwd: home });
    const root = indexOf(plan.steps, 'bind', join(home, 'work'));
    const pin = indexOf(plan.steps, 'bind', join(home, 'work', 'src'));
    const mask = indexOf(plan.steps, 'tmpfs', deep);
    assert.ok(root >= 0 && pin > root && mask > pin, JSON.stringify(plan.steps.slice(root, mask + 1)));
  } finally {
    done();
  }
});

test('a protected path missing under a writable HOME: HOME is kept read-only with each existing entry writable, and nothing is created', () => {
  const { home, done } = fixture();
  try {
    const plan = computeMountPlan({ view: { allow: [{ path: home, access: 'rw', ruleId: 'home' }], deny: [], unmountable: [] }, home, cwd: home });
    const bind = indexOf(plan.steps, 'bind', home);
    const freeze = indexOf(plan.steps, 'ro-bind', home);
    assert.ok(bind >= 0 && freeze > bind);
    assert.ok(indexOf(plan.steps, 'bind', join(home, 'work')) > freeze, 'existing entries are writable again');
    assert.equal(at(plan.steps, join(home, '.bash_profile')).length, 0, 'no mount point (no stray file) for a missing path');
    // The mask of an existing sensitive entry still comes after its writable re-bind.
    assert.ok(indexOf(plan.steps, 'tmpfs', join(home, '.ssh')) > indexOf(plan.steps, 'bind', join(home, '.ssh')));
  } finally {
    done();
  }
});

test('a working directory inside a writable HOME is a workspace too: its .git/config and .git/hooks are read-only', () => {
  const { home, done } = fixture();
  try {
    const repo = join(home, 'work');
    mkdirSync(join(repo, '.git', 'hooks'), { recursive: true });
    writeFileSync(join(repo, '.git', 'config'), '[core]\n');
    const plan = computeMountPlan({ view: { allow: [{ path: home, access: 'rw', ruleId: 'home' }], deny: [], unmountable: [] }, home, cwd: repo });
    assert.ok(lastIndexOf(plan.steps, 'ro-bind', join(repo, '.git', 'config')) > indexOf(plan.steps, 'bind', home));
    assert.ok(lastIndexOf(plan.steps, 'ro-bind', join(repo, '.git', 'hooks')) > indexOf(plan.steps, 'bind', home));
  } finally {
    done();
  }
});
