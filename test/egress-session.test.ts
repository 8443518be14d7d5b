/**
 * Session sockets and the proxy's lifecycle, with real Unix and TCP sockets: a session's connections end with
 * the session, session ids cannot escape the socket directory, a silent client is dropped at the header
 * deadline, and the CA and upstream CAs come from the data dir and config files.
 */
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { connect, createServer, type AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { CertificateAuthority } from '../src/egress/ca.js';
import { curl, startTestProxy, startTlsEchoServer } from './egress-helpers.js';

describe('egress sessions and lifecycle', () => {
  it('ends a session’s open tunnels when the session closes, and removes its socket', async () => {
    const quiet = createServer((socket) => socket.on('error', () => undefined));
    await new Promise<void>((resolve) => quiet.listen(0, '127.0.0.1', resolve));
    const port = (quiet.address() as AddressInfo).port;
    const gate = await startTestProxy('network:\n  - id: lo\n    allow: [127.0.0.1]\n');
    try {
      const session = await gate.proxy.openSession({ agent: 'alice' }, 'sess-end');
      assert.ok(existsSync(session.socketPath));
      assert.equal(statSync(join(session.socketPath, '..')).mode & 0o777, 0o700, 'the socket directory is private');
      const tunnel = connect(session.socketPath);
      await new Promise<void>((resolve) => {
        tunnel.once('connect', () => tunnel.write(`CONNECT 127.0.0.1:${port} HTTP/1.1\r\nHost: x\r\n\r\n`));
        tunnel.once('data', (chunk: Buffer) => {
          assert.match(chunk.toString(), /^HTTP\/1\.1 200 /);
          resolve();
        });
      });
      const closed = new Promise((resolve) => tunnel.once('close', resolve));
      tunnel.on('error', () => undefined);
      await session.close();
      await closed;
      assert.equal(existsSync(session.socketPath), false);
    } finally {
      await gate.close();
      quiet.close();
    }
  });

  it('refuses session ids that are not plain names', async () => {
    const gate = await startTestProxy('network: []\n');
    try {
      await assert.rejects(gate.proxy.openSession({ agent: 'a' }, '../escape'), /not a session id/);
    } finally {
      await gate.close();
    }
  });

  it('drops a client that connects and never sends anything', async () => {
    const gate = await startTestProxy('network: []\n', { settings: { limits: { headerTimeoutMs: 300 } } });
    try {
      const started = Date.now();
      const socket = connect(gate.proxy.address.port, '127.0.0.1');
      await new Promise((resolve) => socket.once('close', resolve));
      assert.ok(Date.now() - started < 3_000);
    } finally {
      await gate.close();
    }
  });

  it('creates the inspection CA in the data dir and trusts upstream CAs named by file in the config', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'gatehouse-egress-config-'));
    const publicCa = await CertificateAuthority.create('public');
    const upstream = await startTlsEchoServer(publicCa, 'api.test');
    writeFileSync(join(dir, 'upstream-ca.pem'), publicCa.certificatePem);
    const gate = await startTestProxy('network:\n  - id: api\n    allow: [api.test]\n    inspect: true\n  - id: lo\n    allow: [127.0.0.1]\n', {
      dataDir: join(dir, 'data'),
      settings: { resolve: { 'api.test': ['127.0.0.1'] }, upstreamCa: [join(dir, 'upstream-ca.pem')] },
    });
    try {
      const caFile = join(dir, 'data', 'egress-ca', 'ca.pem');
      assert.ok(existsSync(caFile));
      const result = await curl(['--cacert', caFile, '-x', gate.url, '-U', 'a:key-alice', `https://api.test:${upstream.port}/from-config`]);
      assert.equal(result.status, 200, result.stderr + result.body);
    } finally {
      await gate.close();
      await upstream.close();
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('says which address is taken when it cannot listen', async () => {
    const first = await startTestProxy('network: []\n');
    try {
      await assert.rejects(startTestProxy('network: []\n', { settings: { listen: `127.0.0.1:${first.proxy.address.port}` } }), /cannot listen on 127\.0\.0\.1:\d+ \(EADDRINUSE\); change egress\.listen/);
    } finally {
      await first.close();
    }
  });

  it('refuses to start when an upstream CA file cannot be read', async () => {
    const dataDir = mkdtempSync(join(tmpdir(), 'gatehouse-egress-bad-'));
    try {
      await assert.rejects(startTestProxy('network: []\n', { dataDir, settings: { upstreamCa: ['/nonexistent/ca.pem'] } }), /egress.upstreamCa: cannot read \/nonexistent\/ca.pem/);
    } finally {
      rmSync(dataDir, { recursive: true, force: true });
    }
  });
});
