/**
 * `gatehouse run` and `gatehouse doctor` as a user meets them: the real CLI, real bwrap, a real terminal
 * (through `script`), the real audit log on disk. Runs as root and as the unprivileged test user.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync, type SpawnSyncReturns } from 'node:child_process';
import { readdirSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { cleanup, hasBwrap, identities, mkdirOwned, scratch, skipWithoutBwrap, writeOwned, assertCheckoutReadable } from './sandbox-helpers.js';

const main = new URL('../src/cli/main.js', import.meta.url).pathname;

interface AuditLine {
  action: string;
  effect: string;
  surface: string;
  resource: string;
  reason: string;
  principal: { agent?: string };
  policy?: { version: string };
  details?: Record<string, unknown>;
}

for (const identity of identities()) {
  describe(`gatehouse run as ${identity.name}`, { skip: skipWithoutBwrap }, () => {
    let dir: string;
    before(() => {
      assertCheckoutReadable(identity);
      assert.ok(hasBwrap, 'bwrap is required (GATEHOUSE_REQUIRE_SANDBOX=1): apt-get install bubblewrap');
      dir = scratch(identity, 'cli');
      // The configs live in the data directory (GATEHOUSE_HOME), which the sandbox always hides: never in
      // the writable workspace, where `gatehouse run` refuses them.
      mkdirOwned(identity, join(dir, 'data'));
      // HOME apart from the workspace, as for a real user.
      mkdirOwned(identity, join(dir, 'home'));
      writeOwned(
        identity,
        join(dir, 'data', 'gatehouse.yaml'),
        ['version: 1', 'agents:', '  coder: {}', 'policy:', '  filesystem:', '    - id: workspace', '      allow: { paths: ["./"], access: rw }', ''].join('\n'),
        0o644,
      );
    });
    after(() => cleanup(dir));

    /** Runs the CLI as this identity, in the scratch directory, with its own data dir. */
    function gatehouse(args: string[], options: { input?: string; config?: string } = {}): SpawnSyncReturns<string> {
      const env = { PATH: process.env.PATH ?? '/usr/bin:/bin', HOME: join(dir, 'home'), GATEHOUSE_HOME: join(dir, 'data'), LANG: 'C.UTF-8' };
      const argv = [main, ...(options.config ? ['--config', options.config] : []), ...args];
      const [command, commandArgs] = identity.user
        ? ['setpriv', ['--reuid', String(identity.user.uid), '--regid', String(identity.user.gid), '--clear-groups', '--', process.execPath, ...argv]]
        : [process.execPath, argv];
      return spawnSync(command as string, commandArgs as string[], { cwd: dir, env, input: options.input ?? '', encoding: 'utf8', timeout: 30000 });
    }

    function auditRecords(): AuditLine[] {
      const auditDir = join(dir, 'data', 'audit');
      return readdirSync(auditDir)
        .filter((name) => name.endsWith('.jsonl'))
        .sort()
        .flatMap((name) => readFileSync(join(auditDir, name), 'utf8').split('\n').filter(Boolean).map((line) => JSON.parse(line) as AuditLine));
    }

    test("passes the program's exit code through", () => {
      const result = gatehouse(['run', '--', 'sh', '-c', 'echo inside; exit 7']);
      assert.equal(result.stdout, 'inside\n', result.stderr);
      assert.equal(result.status, 7);
    });

    test('dies by the same signal as the program', () => {
      const result = gatehouse(['run', '--', 'sh', '-c', 'kill -TERM $$']);
      assert.equal(result.signal, 'SIGTERM');
    });

    test('records the launch (command, agent, policy version, driver) and the exit', () => {
      const result = gatehouse(['run', '--agent', 'coder', '--', 'sh', '-c', 'exit 3']);
      assert.equal(result.status, 3, result.stderr);
      const records = auditRecords();
      const launch = records.findLast((record) => record.action === 'sandbox.launch');
      const exit = records.findLast((record) => record.action === 'sandbox.exit');
      assert.ok(launch && exit);
      assert.equal(launch.resource, 'sh -c exit 3');
      assert.equal(launch.principal.agent, 'coder');
      assert.match(launch.policy?.version ?? '', /^local-/);
      assert.equal(launch.details?.driver, 'bubblewrap');
      assert.equal(exit.details?.code, 3);
    });

    test('records a connection the sandbox tried when the policy lets nothing out', () => {
      const result = gatehouse(['run', '--', 'curl', '-sS', '--max-time', '5', 'http://example.test/']);
      assert.notEqual(result.status, 0);
      const denied = auditRecords().filter((record) => record.surface === 'network' && record.effect === 'deny');
      assert.ok(denied.length > 0, 'a denied connection was recorded');
      assert.match(denied.at(-1)!.reason, /no egress proxy/);
    });

    test('refuses with exit 2 when the host cannot give the isolation, and starts loudly with --allow-weaker', () => {
      const config = join(dir, 'data', 'weak.yaml');
      writeOwned(identity, config, readFileSync(join(dir, 'data', 'gatehouse.yaml'), 'utf8') + 'sandbox:\n  driver: bubblewrap\n  bwrap: /nonexistent/bwrap\n', 0o644);
      const refused = gatehouse(['run', '--', 'sh', '-c', 'echo should-not-run'], { config });
      assert.equal(refused.status, 2);
      assert.doesNotMatch(refused.stdout, /should-not-run/);
      assert.match(refused.stderr, /refusing to start: bwrap is not installed.*--allow-weaker/);
      const weaker = gatehouse(['run', '--allow-weaker', '--', 'sh', '-c', 'echo ran-anyway'], { config });
      assert.equal(weaker.status, 0, weaker.stderr);
      assert.match(weaker.stdout, /ran-anyway/);
      assert.match(weaker.stderr, /WARNING: running with weaker isolation/);
      const launches = auditRecords().filter((record) => record.action === 'sandbox.launch');
      assert.equal(launches.at(-2)?.effect, 'deny');
      assert.deepEqual(launches.at(-1)?.details?.weaker, ['bwrap is not installed (apt-get install bubblewrap)']);
    });

    test('a host that refuses namespaces stops the run with exit 2, and --allow-weaker falls back, recorded', () => {
      // A test double for bwrap on purpose: a host refusing user namespaces cannot be produced here without
      // changing sysctls that every other test on this machine depends on. It fails the way bwrap does.
      const fake = join(dir, 'data', 'refusing-bwrap');
      writeOwned(identity, fake, '#!/bin/sh\necho "bwrap: setting up uid map: Permission denied" >&2\nexit 1\n', 0o755);
      const config = join(dir, 'data', 'refusing.yaml');
      writeOwned(identity, config, readFileSync(join(dir, 'data', 'gatehouse.yaml'), 'utf8') + `sandbox:\n  driver: bubblewrap\n  bwrap: ${fake}\n`, 0o644);
      const refused = gatehouse(['run', '--', 'sh', '-c', 'echo should-not-run'], { config });
      assert.equal(refused.status, 2);
      assert.doesNotMatch(refused.stdout, /should-not-run/);
      assert.match(refused.stderr, /sandbox could not start.*gatehouse doctor/);
      const weaker = gatehouse(['run', '--allow-weaker', '--', 'sh', '-c', 'echo ran-anyway'], { config });
      assert.equal(weaker.status, 0, weaker.stderr);
      assert.match(weaker.stdout, /ran-anyway/);
      assert.match(weaker.stderr, /bwrap cannot create a sandbox here: setting up uid map: Permission denied/);
      const launch = auditRecords().findLast((record) => record.action === 'sandbox.launch');
      assert.deepEqual(launch?.details?.weaker, ['bwrap cannot create a sandbox here: setting up uid map: Permission denied']);
    });

    test('an interactive program works through a real terminal, and cannot push input with TIOCSTI', () => {
      const inner = `${process.execPath} ${main} run -- sh -c 'test -t 0 && test -t 1 && echo has-a-tty; read line; echo "got:$line"; perl -e "my \\$c = q(x); print ioctl(STDIN, 0x5412, \\$c) ? qq(pushed\\n) : qq(refused\\n)"'`;
      const [command, args] = identity.user
        ? ['setpriv', ['--reuid', String(identity.user.uid), '--regid', String(identity.user.gid), '--clear-groups', '--', 'script', '-qefc', inner, '/dev/null']]
        : ['script', ['-qefc', inner, '/dev/null']];
      const result = spawnSync(command as string, args as string[], {
        cwd: dir,
        env: { PATH: process.env.PATH ?? '/usr/bin:/bin', HOME: join(dir, 'home'), GATEHOUSE_HOME: join(dir, 'data'), TERM: 'xterm' },
        input: 'hello-terminal\n',
        encoding: 'utf8',
        timeout: 30000,
      });
      assert.equal(result.status, 0, result.stdout + result.stderr);
      assert.match(result.stdout, /has-a-tty/);
      assert.match(result.stdout, /got:hello-terminal/);
      assert.match(result.stdout, /refused/);
      assert.doesNotMatch(result.stdout, /pushed/);
    });

    test('picks up a changed policy on the very next run (the start-up cache follows the config text)', () => {
      const config = join(dir, 'data', 'changing.yaml');
      const allow = ['version: 1', 'policy:', '  filesystem:', '    - id: workspace', '      allow: { paths: ["./"], access: rw }', ''].join('\n');
      writeOwned(identity, config, allow, 0o644);
      assert.equal(gatehouse(['run', '--', 'sh', '-c', 'echo one > cached-write'], { config }).status, 0);
      assert.equal(gatehouse(['run', '--', 'sh', '-c', 'echo two > cached-write'], { config }).status, 0);
      assert.equal(readFileSync(join(dir, 'cached-write'), 'utf8'), 'two\n');
      writeOwned(identity, config, allow + '    - id: read-only\n      deny: { paths: ["./cached-write"], access: write }\n', 0o644);
      const denied = gatehouse(['run', '--', 'sh', '-c', 'echo three > cached-write'], { config });
      assert.notEqual(denied.status, 0);
      assert.equal(readFileSync(join(dir, 'cached-write'), 'utf8'), 'two\n');
    });

    test("applies the agent's own rlimits from the sandbox section", () => {
      const config = join(dir, 'data', 'limits.yaml');
      writeOwned(identity, config, readFileSync(join(dir, 'data', 'gatehouse.yaml'), 'utf8') + 'sandbox:\n  rlimits: { openFiles: 512 }\n  agents:\n    coder: { rlimits: { openFiles: 99 } }\n', 0o644);
      assert.equal(gatehouse(['run', '--agent', 'coder', '--', 'sh', '-c', 'ulimit -n'], { config }).stdout.trim(), '99');
      assert.equal(gatehouse(['run', '--', 'sh', '-c', 'ulimit -n'], { config }).stdout.trim(), '512');
    });

    test('the program cannot rewrite the gatehouse.yaml its next run would read', () => {
      const config = join(dir, 'data', 'gatehouse.yaml');
      const before = readFileSync(config, 'utf8');
      const result = gatehouse(['run', '--', 'sh', '-c', `printf "version: 1\\npolicy: {}\\n" > ${config}; echo more >> ${config}`]);
      assert.notEqual(result.status, 0);
      assert.equal(readFileSync(config, 'utf8'), before);
    });

    test('a gatehouse.yaml the program plants in its workspace makes the next run refuse, not obey it (review: config)', () => {
      // ./gatehouse.yaml is read before <data-dir>/gatehouse.yaml: the program writes one opening everything.
      const planted = ['version: 1', 'policy:', '  filesystem:', '    - id: everything', '      allow: { paths: ["/"], access: rw }', ''].join('\\n');
      const plant = gatehouse(['run', '--', 'sh', '-c', `printf '${planted}' > gatehouse.yaml && echo planted`]);
      assert.match(plant.stdout, /planted/, plant.stderr);
      try {
        const next = gatehouse(['run', '--', 'sh', '-c', 'echo ran-under-planted-policy']);
        assert.equal(next.status, 2);
        assert.doesNotMatch(next.stdout, /ran-under-planted-policy/);
        assert.match(next.stderr, /^gatehouse: refusing to run: the config file .*\/gatehouse\.yaml lies where the policy of .*\/data\/gatehouse\.yaml lets a program write.*move the config .*node\.requireSignedPolicy\n$/);
      } finally {
        rmSync(join(dir, 'gatehouse.yaml'), { force: true });
      }
    });

    test('refuses a config kept in the writable workspace itself, saying to move it', () => {
      const config = join(dir, 'in-workspace.yaml');
      writeOwned(identity, config, readFileSync(join(dir, 'data', 'gatehouse.yaml'), 'utf8'), 0o644);
      try {
        const result = gatehouse(['run', '--', 'sh', '-c', 'echo should-not-run'], { config });
        assert.equal(result.status, 2);
        assert.doesNotMatch(result.stdout, /should-not-run/);
        assert.match(result.stderr, /refusing to run: the config file .*in-workspace\.yaml lies where the policy lets the program write.*move the config/);
      } finally {
        rmSync(config, { force: true });
      }
    });

    test('refuses a config that names a file the program may write (here the bwrap to run)', () => {
      const config = join(dir, 'data', 'planted-bwrap.yaml');
      writeOwned(identity, config, readFileSync(join(dir, 'data', 'gatehouse.yaml'), 'utf8') + `sandbox:\n  bwrap: ${join(dir, 'bwrap')}\n`, 0o644);
      const result = gatehouse(['run', '--', 'sh', '-c', 'echo should-not-run'], { config });
      assert.equal(result.status, 2);
      assert.match(result.stderr, new RegExp(`refusing to run: ${join(dir, 'bwrap')}, which the config file .*planted-bwrap\\.yaml uses, lies where the policy lets the program write`));
    });

    test('--dry-run shows the mounts, masks and bwrap arguments without running anything', () => {
      const result = gatehouse(['run', '--dry-run', '--json', '--', 'sh', '-c', 'touch ran']);
      assert.equal(result.status, 0, result.stderr);
      const plan = JSON.parse(result.stdout) as { bwrap: string[]; env: string[] };
      assert.ok(plan.bwrap.includes('--unshare-net'));
      assert.ok(plan.env.includes('HTTPS_PROXY'));
      assert.throws(() => readFileSync(join(dir, 'ran')));
    });
  });
}

describe('gatehouse doctor', { skip: skipWithoutBwrap }, () => {
  test('reports each check and that this host can run the sandbox', () => {
    const result = spawnSync(process.execPath, [main, 'doctor', '--json'], { encoding: 'utf8', timeout: 30000 });
    assert.equal(result.status, 0, result.stdout);
    const report = JSON.parse(result.stdout) as { checks: { id: string; ok: boolean }[]; bubblewrapUsable: boolean };
    assert.equal(report.bubblewrapUsable, true);
    for (const id of ['platform', 'bwrap', 'userns', 'apparmor', 'seccomp', 'sandbox-start']) {
      assert.ok(report.checks.some((check) => check.id === id && check.ok), id);
    }
  });

  test('names a missing bwrap and how to install it, with exit code 1', () => {
    const result = spawnSync(process.execPath, [main, 'doctor', '--bwrap', '/nonexistent/bwrap'], { encoding: 'utf8', timeout: 30000 });
    assert.equal(result.status, 1);
    assert.match(result.stdout, /FAIL\s+bwrap/);
    assert.match(result.stdout, /apt-get install bubblewrap/);
  });
});
