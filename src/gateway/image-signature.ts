/**
 * Cosign-compatible verification of a container image signature, offline, with the sigstore JS libraries:
 * the simple-signing payload must name the pinned digest, and its signature must verify against one of
 * the configured public keys. Key-based signatures need no transparency log or certificate authority, so
 * the trust material holds only the keys.
 */
import { createHash, createPublicKey, type KeyObject } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { bundleFromJSON } from '@sigstore/bundle';
import { Verifier, toSignedEntity, toTrustMaterial } from '@sigstore/verify';

export interface ImagePin {
  digest: string;
  publicKeys: string[];
  payload: string;
  signature: string;
}

function readText(value: string, cwd: string): string {
  if (value.includes('-----BEGIN')) return value;
  return readFileSync(value.startsWith('/') ? value : `${cwd}/${value}`, 'utf8');
}

/** Why the image must not run, or undefined when its signature verifies and names the pinned digest. */
export function verifyImageSignature(pin: ImagePin, args: readonly string[], cwd: string): string | undefined {
  if (!args.some((arg) => arg.endsWith(`@${pin.digest}`))) {
    return `the command does not run the image by its pinned digest (expected an argument ending in "@${pin.digest}")`;
  }
  let payload: Buffer;
  let signature: Buffer;
  try {
    payload = Buffer.from(readText(pin.payload, cwd), 'utf8');
    signature = Buffer.from(readText(pin.signature, cwd).trim(), 'base64');
  } catch (error) {
    return `the image signature files cannot be read (${error instanceof Error ? error.message : String(error)})`;
  }
  let claims: { critical?: { type?: unknown; image?: { 'docker-manifest-digest'?: unknown } } };
  try {
    claims = JSON.parse(payload.toString('utf8')) as typeof claims;
  } catch {
    return 'the signed payload is not the JSON of a cosign signature';
  }
  if (claims.critical?.type !== 'cosign container image signature') return 'the signed payload is not a cosign container image signature';
  const signedDigest = claims.critical.image?.['docker-manifest-digest'];
  if (signedDigest !== pin.digest) return `the signature is for image ${String(signedDigest)}, not the pinned ${pin.digest}`;

  const keys: KeyObject[] = [];
  for (const key of pin.publicKeys) {
    try {
      keys.push(createPublicKey(readText(key, cwd)));
    } catch {
      return `the public key ${key.includes('-----BEGIN') ? '(inline PEM)' : key} cannot be read`;
    }
  }
  const bundle = bundleFromJSON({
    mediaType: 'application/vnd.dev.sigstore.bundle.v0.3+json',
    verificationMaterial: { publicKey: { hint: 'pinned-key' }, tlogEntries: [], timestampVerificationData: { rfc3161Timestamps: [] } },
    messageSignature: {
      messageDigest: { algorithm: 'SHA2_256', digest: createHash('sha256').update(payload).digest('base64') },
      signature: signature.toString('base64'),
    },
  });
  for (const key of keys) {
    const trust = toTrustMaterial({ certificateAuthorities: [], timestampAuthorities: [], tlogs: [], ctlogs: [] } as never, () => ({
      publicKey: key,
      validFor: () => true,
    }));
    try {
      new Verifier(trust, { tlogThreshold: 0, ctlogThreshold: 0, tsaThreshold: 0 }).verify(toSignedEntity(bundle, payload));
      return undefined;
    } catch {
      // Not this key; try the next.
    }
  }
  return `the image signature does not verify against any of the ${keys.length} configured public key${keys.length === 1 ? '' : 's'}`;
}
