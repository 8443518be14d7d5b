/**
 * The inspection CA: `gatehouse ca export` creates it once in the data dir and prints the same certificate
 * every time; the key stays private to its owner; leaf certificates chain to it and name their host.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, statSync } from 'node:fs';
import { X509Certificate } from 'node:crypto';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { CertificateAuthority } from '../src/egress/ca.js';

const cli = join(process.cwd(), 'dist', 'src', 'cli', 'main.js');

describe('gatehouse ca export', () => {
  it('creates the CA on first use, prints the same PEM every time, and keeps the key 0600', () => {
    const dataDir = mkdtempSync(join(tmpdir(), 'gatehouse-ca-'));
    try {
      const first = spawnSync(process.execPath, [cli, '--data-dir', dataDir, 'ca', 'export'], { encoding: 'utf8', timeout: 30_000 });
      assert.equal(first.status, 0, first.stderr);
      assert.match(first.stdout, /^-----BEGIN CERTIFICATE-----\n[\s\S]+-----END CERTIFICATE-----\n$/);
      const second = spawnSync(process.execPath, [cli, '--data-dir', dataDir, 'ca', 'export'], { encoding: 'utf8', timeout: 30_000 });
      assert.equal(second.stdout, first.stdout);
      const certificate = new X509Certificate(first.stdout);
      assert.equal(certificate.ca, true);
      assert.equal(statSync(join(dataDir, 'egress-ca', 'ca.key')).mode & 0o777, 0o600);
    } finally {
      rmSync(dataDir, { recursive: true, force: true });
    }
  });

  it('issues leaf certificates that chain to the CA and name exactly their host, cached per host', async () => {
    const authority = await CertificateAuthority.create('test');
    const issuer = new X509Certificate(authority.certificatePem);
    const leaf = new X509Certificate((await authority.issue('api.example.test')).certificate);
    assert.ok(leaf.checkIssued(issuer) && leaf.verify(issuer.publicKey));
    assert.equal(leaf.checkHost('api.example.test'), 'api.example.test');
    assert.equal(leaf.checkHost('other.example.test'), undefined);
    assert.equal(leaf.ca, false);
    const ip = new X509Certificate((await authority.issue('127.0.0.1')).certificate);
    assert.equal(ip.checkIP('127.0.0.1'), '127.0.0.1');
    assert.equal(await authority.issue('api.example.test'), await authority.issue('api.example.test'));
  });
});
