/**
 * Signed policy bundles: a versioned, content-addressed JSON file carrying a policy and Ed25519 signatures.
 *
 * The file is exactly the canonical JSON of its content plus a newline. Verification re-serialises what it
 * parsed and compares bytes, so any changed byte (even in whitespace) is rejected, not only changes that
 * alter the policy. Signatures cover the canonical JSON of the statement (format, version, createdAt,
 * digest, policy); `digest` is the policy's own digest, and the bundle's address is the SHA-256 of the
 * statement.
 */
import { createHash, type KeyObject } from 'node:crypto';
import { policySchema, type PolicyDocument } from '../config/policy-schema.js';
import { GatehouseError } from '../util/errors.js';
import { keyIdOf, signBytes, verifyBytes, type KeyPair } from '../util/keys.js';
import { canonicalJson, policyDigest } from './compile.js';

export const BUNDLE_FORMAT = 'gatehouse.policy-bundle/v1';

export interface BundleStatement {
  format: typeof BUNDLE_FORMAT;
  version: string;
  createdAt: string;
  /** `sha256:` digest of the canonical policy. */
  digest: string;
  policy: PolicyDocument;
}

export interface BundleSignature {
  keyId: string;
  algorithm: 'ed25519';
  signature: string;
}

export interface Bundle extends BundleStatement {
  signatures: BundleSignature[];
}

export interface VerifiedBundle {
  statement: BundleStatement;
  /** `sha256:` over the canonical statement: the bundle's content address. */
  address: string;
  keyId: string;
}

function bundleError(message: string): GatehouseError {
  return new GatehouseError('bundle_invalid', message, { exitCode: 1 });
}

export function bundleAddress(statement: BundleStatement): string {
  return 'sha256:' + createHash('sha256').update(canonicalJson(statement)).digest('hex');
}

/** Builds and signs a bundle; returns the exact file text and its address. */
export function createBundle(policy: PolicyDocument, version: string, key: KeyPair, createdAt = new Date()): { text: string; address: string; statement: BundleStatement } {
  if (!/^[A-Za-z0-9][A-Za-z0-9._+-]{0,63}$/.test(version)) {
    throw new GatehouseError('usage', `the bundle version "${version}" must be 1-64 letters, digits, ".", "_", "+" or "-"`);
  }
  const statement: BundleStatement = { format: BUNDLE_FORMAT, version, createdAt: createdAt.toISOString(), digest: policyDigest(policy), policy };
  const signature = signBytes(key.privateKey, Buffer.from(canonicalJson(statement)));
  const bundle: Bundle = { ...statement, signatures: [{ keyId: key.keyId, algorithm: 'ed25519', signature: signature.toString('base64') }] };
  return { text: canonicalJson(bundle) + '\n', address: bundleAddress(statement), statement };
}

/**
 * Verifies a bundle's bytes against trusted public keys. Throws a GatehouseError (exit 1) saying what is
 * wrong; returns the statement only when every check passes.
 */
export function verifyBundle(text: string, trusted: KeyObject[], source = 'the bundle'): VerifiedBundle {
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch {
    throw bundleError(`${source} is not valid JSON; it was damaged or is not a policy bundle`);
  }
  if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) throw bundleError(`${source} is not a policy bundle`);
  if (canonicalJson(parsed) + '\n' !== text) throw bundleError(`${source} has been modified: its bytes are not the canonical form that was signed`);
  const { signatures, ...rest } = parsed as Bundle;
  if (rest.format !== BUNDLE_FORMAT) throw bundleError(`${source} has format "${String(rest.format)}", expected "${BUNDLE_FORMAT}"`);
  const keys = Object.keys(rest).sort().join(',');
  if (keys !== 'createdAt,digest,format,policy,version') throw bundleError(`${source} has unexpected fields (${keys})`);
  if (!Array.isArray(signatures) || signatures.length === 0) throw bundleError(`${source} is not signed`);

  const result = policySchema.safeParse(rest.policy);
  if (!result.success) throw bundleError(`${source} carries an invalid policy: ${result.error.issues[0]?.message ?? 'schema error'}`);
  // The signed policy must be exactly what the schema yields: no defaults silently filled in after signing.
  if (canonicalJson(result.data) !== canonicalJson(rest.policy)) throw bundleError(`${source} carries a policy that is not in normalised form`);
  if (policyDigest(result.data) !== rest.digest) throw bundleError(`${source}'s policy does not match its digest ${String(rest.digest)}`);

  const statement = rest as BundleStatement;
  const message = Buffer.from(canonicalJson(statement));
  const byId = new Map(trusted.map((key) => [keyIdOf(key), key]));
  let trustedBy: string | undefined;
  for (const entry of signatures) {
    if (entry === null || typeof entry !== 'object' || entry.algorithm !== 'ed25519' || typeof entry.signature !== 'string' || typeof entry.keyId !== 'string') {
      throw bundleError(`${source} has a malformed signature entry`);
    }
    const key = byId.get(entry.keyId);
    if (!key) continue;
    const signature = Buffer.from(entry.signature, 'base64');
    if (signature.toString('base64') !== entry.signature || !verifyBytes(key, message, signature)) {
      throw bundleError(`${source}'s signature by key ${entry.keyId} does not verify: the bundle was modified after signing`);
    }
    trustedBy ??= entry.keyId;
  }
  if (!trustedBy) {
    const ids = signatures.map((s) => s.keyId).join(', ');
    throw bundleError(`${source} is signed by ${ids}, none of which is a trusted key${trusted.length === 0 ? ' (no trusted keys are configured)' : ''}`);
  }
  return { statement, address: bundleAddress(statement), keyId: trustedBy };
}
