/**
 * The container driver's command lines, engine by engine: every isolation flag, mounts, masks, limits, no
 * secret in argv. No Docker engine runs on CI machines; Podman does, in sandbox-podman.test.ts.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { containerInvocation } from '../src/sandbox/container.js';
import type { SandboxSpec } from '../src/sandbox/types.js';
import { cleanup, scratch } from './sandbox-helpers.js';

const root = { name: 'host' };
const CHANNEL = '/tmp/gatehouse-channel-test/channel.sock';

function fixture(): { home: string; work: string; spec: SandboxSpec } {
  const home = scratch(root, 'container-home');
  const work = join(home, 'work');
  mkdirSync(join(home, '.ssh'), { recursive: true });
  writeFileSync(join(home, '.ssh', 'id_rsa'), 'key');
  mkdirSync(join(work, 'docs'), { recursive: true });
  return {
    home,
    work,
    spec: {
      command: ['claude', '--print', 'hi'],
      view: { allow: [{ path: home, access: 'rw', ruleId: 'home' }, { path: '/usr/share/doc', access: 'ro', ruleId: 'docs' }], deny: [], unmountable: [] },
      home,
      cwd: work,
      envSource: { TERM: 'xterm', GITHUB_TOKEN: 'ghp_real_value_never_in_argv', PATH: '/usr/bin' },
      envAdd: { GITHUB_TOKEN: 'ghp_placeholder_value' },
      proxySocket: '/tmp/gatehouse-egress/session.sock',
      rlimits: { memoryBytes: 2 * 1024 ** 3, processes: 256, openFiles: 1024, cpuSeconds: 600 },
      user: { uid: 1000, gid: 1000 },
    },
  };
}

test('docker: no network, read-only root, no capabilities, no new privileges, an init', () => {
  const { home, spec } = fixture();
  try {
    const { args } = containerInvocation(spec, { engine: 'docker', image: 'node:20-bookworm-slim', channel: CHANNEL });
    const pairs = args.map((arg, index) => `${arg} ${args[index + 1]}`);
    for (const pair of ['--network none', '--cap-drop ALL', '--security-opt no-new-privileges', '--ipc none', '--user 1000:1000']) assert.ok(pairs.includes(pair), pair);
    for (const flag of ['--read-only', '--init', '--rm', '--interactive']) assert.ok(args.includes(flag), flag);
    assert.deepEqual(args.slice(args.indexOf('node:20-bookworm-slim'), args.indexOf('node:20-bookworm-slim') + 3), ['node:20-bookworm-slim', 'node', '/run/gatehouse/bridge.js']);
    const settings = JSON.parse(args.at(-1)!) as { command: string[]; channelPath: string };
    assert.deepEqual(settings.command, ['claude', '--print', 'hi']);
    assert.equal(settings.channelPath, '/run/gatehouse/channel.sock');
  } finally {
    cleanup(home);
  }
});

test("docker: binds what the policy allows, masks the sensitive set, mounts Gatehouse's channel and not the proxy", () => {
  const { home, spec } = fixture();
  try {
    const { args } = containerInvocation(spec, { engine: 'docker', image: 'img', channel: CHANNEL });
    const mounts = args.filter((_, index) => args[index - 1] === '--mount');
    const tmpfs = args.filter((_, index) => args[index - 1] === '--tmpfs');
    // HOME itself is kept read-only (a protected path in it does not exist yet); what is in it stays writable.
    assert.ok(mounts.includes(`type=bind,source=${home},target=${home},readonly`));
    assert.ok(mounts.includes(`type=bind,source=${join(home, 'work')},target=${join(home, 'work')}`), 'the workspace is writable');
    assert.ok(mounts.includes('type=bind,source=/usr/share/doc,target=/usr/share/doc,readonly'));
    assert.ok(tmpfs.some((value) => value.startsWith(`${join(home, '.ssh')}:ro`)), '~/.ssh is masked read-only');
    assert.ok(mounts.includes(`type=bind,source=${CHANNEL},target=/run/gatehouse/channel.sock`));
    // Connections reach the egress proxy through Gatehouse, which records the refused ones.
    assert.ok(!mounts.some((value) => value.includes('session.sock')));
    // The host's system directories are not mounted: the image provides its own.
    assert.ok(!mounts.some((value) => value.includes('source=/usr,')));
  } finally {
    cleanup(home);
  }
});

test('docker: limits become --memory, --pids-limit and --ulimit', () => {
  const { home, spec } = fixture();
  try {
    const { args } = containerInvocation(spec, { engine: 'docker', image: 'img', channel: CHANNEL });
    const pairs = args.map((arg, index) => `${arg} ${args[index + 1]}`);
    for (const pair of [`--memory ${2 * 1024 ** 3}`, '--pids-limit 256', '--ulimit nofile=1024:1024', '--ulimit cpu=600:600']) assert.ok(pairs.includes(pair), pair);
  } finally {
    cleanup(home);
  }
});

test('environment values never appear on the command line; only names, with placeholders for secrets', () => {
  const { home, spec } = fixture();
  try {
    const { args, env } = containerInvocation(spec, { engine: 'docker', image: 'img', channel: CHANNEL });
    assert.ok(!args.some((arg) => arg.includes('ghp_')), 'no token value in argv');
    assert.ok(args.includes('GITHUB_TOKEN'));
    assert.equal(env.GITHUB_TOKEN, 'ghp_placeholder_value');
    assert.equal(env.PATH, undefined, "the host's PATH does not go into the image");
    // What Gatehouse sets itself is given in argv, so the engine CLI keeps its own proxy and HOME (its pulls
    // must not go to the bridge's port on the host).
    assert.ok(args.includes('HTTPS_PROXY=http://127.0.0.1:3128'));
    assert.ok(args.includes(`HOME=${home}`));
    assert.equal(env.HTTPS_PROXY, undefined);
    assert.equal(env.HOME, undefined);
  } finally {
    cleanup(home);
  }
});

test('podman keeps the user id: keep-id when rootless, --user as root (where keep-id is refused)', () => {
  const { home, spec } = fixture();
  try {
    const { args } = containerInvocation(spec, { engine: 'podman', image: 'img', channel: CHANNEL });
    if (process.getuid?.() === 0) {
      assert.equal(args[args.indexOf('--user') + 1], '1000:1000');
      assert.ok(!args.includes('--userns=keep-id'));
    } else {
      assert.ok(args.includes('--userns=keep-id'));
      assert.ok(!args.includes('--user'));
    }
  } finally {
    cleanup(home);
  }
});

test('each destination is mounted once, and a deny still hides an allow beneath it', () => {
  // Engines refuse two mounts at one place and mount parents first, whatever order they are given in.
  const { home, work, spec } = fixture();
  try {
    mkdirSync(join(work, 'secret', 'pub'), { recursive: true });
    const view = {
      allow: [...spec.view.allow, { path: join(work, 'secret', 'pub'), access: 'ro' as const, ruleId: 'pub' }],
      deny: [{ path: join(work, 'secret'), access: 'all' as const, ruleId: 'secret' }],
      unmountable: [],
    };
    const { args } = containerInvocation({ ...spec, view }, { engine: 'podman', image: 'img', channel: CHANNEL });
    const targets = args
      .map((arg, index) => (args[index - 1] === '--mount' ? /target=([^,]+)/.exec(arg)![1] : args[index - 1] === '--tmpfs' ? arg.split(':')[0] : undefined))
      .filter((target) => target !== undefined);
    assert.equal(new Set(targets).size, targets.length, `a destination mounted twice: ${targets.join(' ')}`);
    assert.ok(!targets.includes(join(work, 'secret', 'pub')), 'the allow inside the denied directory is not mounted');
    assert.ok(args.includes(`${join(work, 'secret')}:ro,nosuid,nodev,noexec,size=64k,notmpcopyup,U`), 'the mask is empty under Podman too');
  } finally {
    cleanup(home);
  }
});

test('refuses a path a --mount value cannot carry', () => {
  const { home, spec } = fixture();
  try {
    const odd = join(home, 'a,b');
    mkdirSync(odd);
    assert.throws(() => containerInvocation({ ...spec, view: { ...spec.view, allow: [{ path: odd, access: 'ro', ruleId: 'odd' }] } }, { engine: 'docker', image: 'img', channel: CHANNEL }), /cannot be mounted into a container/);
  } finally {
    cleanup(home);
  }
});
