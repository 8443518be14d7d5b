/**
 * The sandboxed process as a whole: signals forwarded to the program, rlimits applied to it, exit statuses
 * reported exactly, and setup failures told apart from the program's own exit. Real bwrap and prlimit.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { launchBubblewrap } from '../src/sandbox/bubblewrap.js';
import { launchSandboxed } from '../src/sandbox/launch.js';
import { JsonlAuditLog } from '../src/audit/jsonl.js';
import { existsSync } from 'node:fs';
import type { FilesystemView } from '../src/policy/engine.js';
import { createServer, type Socket } from 'node:net';
import { cleanup, hasBwrap, identities, runSandboxed, scratch, skipWithoutBwrap, assertCheckoutReadable, startUnixProxy } from './sandbox-helpers.js';

for (const identity of identities()) {
  describe(`the sandboxed process as ${identity.name}`, { skip: skipWithoutBwrap }, () => {
    let home: string;
    let view: FilesystemView;
    const base = () => ({ home, cwd: home, view, ...(identity.user ? { user: identity.user } : {}) });
    before(() => {
      assertCheckoutReadable(identity);
      assert.ok(hasBwrap, 'bwrap is required (GATEHOUSE_REQUIRE_SANDBOX=1): apt-get install bubblewrap');
      home = scratch(identity, 'process');
      view = { allow: [{ path: home, access: 'rw', ruleId: 'home' }], deny: [], unmountable: [] };
    });
    after(() => cleanup(home));

    test('a signal sent to the sandbox reaches the program, which can handle it', async () => {
      const sandbox = await launchBubblewrap({
        ...base(),
        stdio: 'pipe',
        command: ['sh', '-c', 'trap "echo got-term; exit 42" TERM; echo ready; while :; do sleep 0.05; done'],
      });
      let output = '';
      sandbox.stdout!.setEncoding('utf8').on('data', (chunk: string) => {
        output += chunk;
        if (chunk.includes('ready')) sandbox.kill('SIGTERM');
      });
      sandbox.stdin!.end();
      const status = await sandbox.exited;
      assert.match(output, /got-term/);
      assert.equal(status.code, 42);
    });

    test('reports a program killed by a signal as that signal', async () => {
      const result = await runSandboxed({ ...base(), command: ['sh', '-c', 'kill -KILL $$'] });
      assert.equal(result.signal, 'SIGKILL');
      assert.equal(result.setupFailed, undefined);
    });

    test('a program that exits while its proxied download still streams in reports its own exit, every time', async () => {
      // The race this guards: Gatehouse still writing the download into the bridge's channel when the program
      // has exited and the bridge with it, so the write failed and the EXIT frame went unread.
      const streaming = new Set<Socket>();
      const origin = createServer((socket) => {
        streaming.add(socket);
        socket.on('error', () => undefined);
        socket.on('close', () => streaming.delete(socket));
        const chunk = Buffer.alloc(64 * 1024, 120);
        const pump = (): void => {
          while (!socket.destroyed && socket.write(chunk));
          if (!socket.destroyed) socket.once('drain', pump);
        };
        socket.once('data', () => pump());
      });
      await new Promise<void>((resolve) => origin.listen(0, '127.0.0.1', resolve));
      const port = (origin.address() as { port: number }).port;
      const proxyDir = scratch({ name: 'host' }, 'proxy');
      const proxySocket = join(proxyDir, 'session.sock');
      const proxy = await startUnixProxy(proxySocket, ['stream.test']);
      // Inside: CONNECT through the bridge, ask for the endless stream, and exit at its first bytes.
      const program = `const net = require('net'); const proxy = new URL(process.env.HTTP_PROXY);
        const s = net.connect(Number(proxy.port), proxy.hostname, () => s.write('CONNECT stream.test:${port} HTTP/1.1\\r\\nhost: stream.test:${port}\\r\\n\\r\\n'));
        let seen = 0; s.on('data', (d) => { seen += d.length; if (seen === d.length) s.write('go'); else if (seen > 256 * 1024) process.exit(7); });`;
      try {
        for (let run = 0; run < 12; run += 1) {
          const result = await runSandboxed({ ...base(), proxySocket, command: [process.execPath, '-e', program] });
          assert.equal(result.setupFailed, undefined, `run ${run}: ${result.error ?? ''} ${result.stderr}`);
          assert.equal(result.code, 7, `run ${run}: ${result.stderr}`);
        }
      } finally {
        for (const socket of streaming) socket.destroy();
        await proxy.close();
        await new Promise((resolve) => origin.close(resolve));
        cleanup(proxyDir);
      }
    });

    test('applies rlimits to the program: open files, processes, memory and CPU time', async () => {
      const result = await runSandboxed({
        ...base(),
        rlimits: { openFiles: 77, processes: 300, memoryBytes: 512 * 1024 * 1024, cpuSeconds: 30 },
        command: ['cat', '/proc/self/limits'],
      });
      assert.equal(result.code, 0, result.stderr);
      const limit = (name: string) => new RegExp(`^${name}\\s+(\\S+)\\s+(\\S+)`, 'm').exec(result.stdout)?.slice(1, 3);
      assert.deepEqual(limit('Max open files'), ['77', '77']);
      assert.deepEqual(limit('Max processes'), ['300', '300']);
      assert.deepEqual(limit('Max data size'), [String(512 * 1024 * 1024), String(512 * 1024 * 1024)]);
      assert.deepEqual(limit('Max cpu time'), ['30', '30']);
    });

    test('a memory limit stops a program that allocates past it', async () => {
      const result = await runSandboxed({
        ...base(),
        rlimits: { memoryBytes: 64 * 1024 * 1024 },
        command: ['perl', '-e', '$x = "a" x (256 * 1024 * 1024); print "allocated\\n"'],
      });
      assert.notEqual(result.code, 0);
      assert.doesNotMatch(result.stdout, /allocated/);
    });

    test('a CPU-time limit ends a spinning program with SIGXCPU or SIGKILL', async () => {
      const result = await runSandboxed({ ...base(), rlimits: { cpuSeconds: 1 }, command: ['sh', '-c', 'while :; do :; done'] });
      assert.ok(result.signal === 'SIGXCPU' || result.signal === 'SIGKILL', `ended by ${result.signal} / ${result.code}`);
    });

    test('a program that does not exist exits 127, not as a sandbox failure', async () => {
      const result = await runSandboxed({ ...base(), command: ['no-such-program-here'] });
      assert.equal(result.code, 127);
      assert.match(result.stderr, /not found in the sandbox/);
    });

    test('a missing bwrap is reported with how to install it', async () => {
      const result = await runSandboxed({ ...base(), command: ['true'], bwrapPath: join(home, 'not-bwrap') }).catch((error: Error) => error);
      assert.ok(result instanceof Error && /bwrap is not installed/.test(result.message));
    });

    test('a launch that cannot be recorded never runs the program', async () => {
      // A real log on a device that is always full: every append fails with ENOSPC.
      const audit = new JsonlAuditLog('/dev/full');
      const marker = join(home, 'ran-without-audit');
      await assert.rejects(
        launchSandboxed({
          command: ['sh', '-c', `touch ${marker}`],
          principal: { agent: 'a' },
          policy: { version: 'test', digest: 'sha256:0', filesystemView: () => view },
          audit,
          stdio: 'pipe',
          home,
          cwd: home,
          ...(identity.user ? { user: identity.user } : {}),
        }),
        /ENOSPC|no space/i,
      );
      await new Promise((resolve) => setTimeout(resolve, 300));
      assert.equal(existsSync(marker), false);
    });
  });
}
