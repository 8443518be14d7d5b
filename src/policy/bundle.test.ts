import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { policySchema } from '../config/policy-schema.js';
import { generateKeyPair } from '../util/keys.js';
import { createBundle, verifyBundle } from './bundle.js';

const document = policySchema.parse({
  network: [{ id: 'gh', allow: ['api.github.com'], ports: [443] }],
  mcp: [{ id: 'read', allow: { server: 'fs', tools: ['read_*'] } }],
});

describe('signed policy bundles', () => {
  const key = generateKeyPair();
  const { text, address } = createBundle(document, '2026.11.1', key, new Date('2026-11-24T00:00:00Z'));

  it('verifies a bundle signed by a trusted key', () => {
    const verified = verifyBundle(text, [key.publicKey]);
    assert.equal(verified.statement.version, '2026.11.1');
    assert.equal(verified.address, address);
    assert.equal(verified.keyId, key.keyId);
    assert.deepEqual(verified.statement.policy, document);
  });

  it('is content-addressed: the same content gives the same address', () => {
    assert.equal(createBundle(document, '2026.11.1', key, new Date('2026-11-24T00:00:00Z')).address, address);
    assert.notEqual(createBundle(document, '2026.11.2', key, new Date('2026-11-24T00:00:00Z')).address, address);
  });

  it('rejects the bundle when any single byte is flipped', () => {
    const bytes = Buffer.from(text);
    let accepted = 0;
    for (let i = 0; i < bytes.length; i += 1) {
      const copy = Buffer.from(bytes);
      copy[i] = copy[i]! ^ 0x01;
      try {
        verifyBundle(copy.toString('latin1'), [key.publicKey]);
        accepted += 1;
      } catch {
        // rejected, as it must be
      }
    }
    assert.equal(accepted, 0, `${accepted} of ${bytes.length} single-byte changes were accepted`);
  });

  it('rejects a bundle signed by a key that is not trusted', () => {
    const other = generateKeyPair();
    assert.throws(() => verifyBundle(text, [other.publicKey]), /none of which is a trusted key/);
  });

  it('rejects a re-signed bundle whose policy was changed without updating the digest', () => {
    const parsed = JSON.parse(text);
    parsed.policy.network[0].allow = ['evil.example'];
    assert.throws(() => verifyBundle(JSON.stringify(parsed), [key.publicKey]), /modified|digest/);
  });
});
