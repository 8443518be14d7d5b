/**
 * Escapes a security review found (issue #7), each reproduced the way the reviewer did it and required to
 * fail: real bwrap, a real compiled policy, run as root and as an unprivileged user. Most take two runs:
 * the first plants something, the second must not be fooled by it.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, lstatSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { cleanup, hasBwrap, identities, mkdirOwned, runSandboxed, scratch, skipWithoutBwrap, writeOwned, assertCheckoutReadable } from './sandbox-helpers.js';
import { policySchema } from '../src/config/policy-schema.js';
import { compilePolicy } from '../src/policy/compile.js';
import type { PolicyEngine } from '../src/policy/engine.js';
import type { SandboxSpec } from '../src/sandbox/types.js';

/** The spec fields a launch derives from the policy: its filesystem view and its decision for one path. */
function fromPolicy(engine: PolicyEngine): Pick<SandboxSpec, 'view' | 'permits'> {
  return {
    view: engine.filesystemView({}),
    permits: (path, access) => engine.decide({ surface: 'filesystem', path, access }).effect === 'allow',
  };
}

for (const identity of identities()) {
  describe(`review escapes as ${identity.name}`, { skip: skipWithoutBwrap }, () => {
    let home: string;
    let work: string;
    const as = identity.user ? { user: identity.user } : {};

    before(() => {
      assertCheckoutReadable(identity);
      assert.ok(hasBwrap, 'bwrap is required (GATEHOUSE_REQUIRE_SANDBOX=1): apt-get install bubblewrap');
      home = scratch(identity, 'review-home');
      work = join(home, 'work');
      mkdirOwned(identity, join(home, '.ssh'));
      writeOwned(identity, join(home, '.ssh', 'id_ed25519'), '-----BEGIN OPENSSH PRIVATE KEY-----\nplanted\n');
      mkdirOwned(identity, work);
    });
    after(() => cleanup(home));

    test("cannot take the bridge's channel to Gatehouse and forge the program's exit (pidfd_getfd, /proc/<pid>/mem)", async () => {
      // The reviewer's attack, in perl: copy the bridge's fd 3 (the channel) with pidfd_getfd, write an EXIT
      // frame saying 0, then exit 42. Also try the bridge's memory and its fd through /proc.
      const pidfdOpen = 434;
      const pidfdGetfd = 438;
      const script = `
        my $bridge = getppid();
        my $pidfd = syscall(${pidfdOpen}, $bridge, 0);
        my $fd = syscall(${pidfdGetfd}, $pidfd, 3, 0);
        if ($fd >= 0) {
          my $payload = '{"code":0,"signal":null}';
          open(my $out, '>&=', $fd);
          syswrite($out, pack('CNN', 7, 0, length $payload) . $payload);
          print "getfd stolen\n";
        } else { print "getfd refused: $!\n" }
        if (open(my $mem, '+<', "/proc/$bridge/mem")) { print "mem opened\n" } else { print "mem refused\n" }
        if (open(my $channel, '+<', "/proc/$bridge/fd/3")) { print "fd opened\n" } else { print "fd refused\n" }
        exit 42;`;
      const result = await runSandboxed({ view: { allow: [], deny: [], unmountable: [] }, home, cwd: work, ...as, command: ['perl', '-e', script] });
      assert.match(result.stdout, /getfd refused: Operation not permitted/, result.stderr);
      assert.match(result.stdout, /mem refused/);
      assert.match(result.stdout, /fd refused/);
      assert.equal(result.code, 42, 'the program\'s own exit code is what Gatehouse reports');
    });

    test('a symlink planted at an allowed path that does not exist yet does not expose ~/.ssh on the next run (C2)', async () => {
      // The workspace is writable and a build cache inside it is allowed too; `.cache` does not exist yet.
      const engine = compilePolicy(
        policySchema.parse({
          filesystem: [
            { id: 'workspace', allow: { paths: ['./'], access: 'rw' } },
            { id: 'build-cache', allow: { paths: ['./.cache'], access: 'rw' } },
          ],
        }),
        { home, workspace: work },
      );
      const run = (command: string) => runSandboxed({ ...fromPolicy(engine), home, cwd: work, ...as, command: ['sh', '-c', command] });

      const first = await run(`ln -s ${join(home, '.ssh')} .cache && echo planted`);
      assert.match(first.stdout, /planted/, first.stderr);
      assert.ok(lstatSync(join(work, '.cache')).isSymbolicLink());

      const second = await run('cat .cache/id_ed25519; cat ~/.ssh/id_ed25519; echo evil > .cache/authorized_keys; echo evil > ~/.ssh/authorized_keys; echo done');
      assert.match(second.stdout, /done/, second.stderr);
      assert.doesNotMatch(second.stdout, /PRIVATE KEY/);
      assert.equal(existsSync(join(home, '.ssh', 'authorized_keys')), false);
      assert.equal(readFileSync(join(home, '.ssh', 'id_ed25519'), 'utf8'), '-----BEGIN OPENSSH PRIVATE KEY-----\nplanted\n');
    });
  });
}
