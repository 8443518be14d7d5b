/**
 * Ed25519 key pairs (node:crypto): the node's identity for signed policy bundles and audit checkpoints.
 * Private keys are PKCS#8 PEM files with mode 0600; public keys are SPKI PEM.
 */
import { createPrivateKey, createPublicKey, generateKeyPairSync, sign, verify, createHash, type KeyObject } from 'node:crypto';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { GatehouseError } from './errors.js';
import { ensurePrivateDir } from './paths.js';

export interface KeyPair {
  privateKey: KeyObject;
  publicKey: KeyObject;
  /** Short id: the first 16 hex digits of the SHA-256 of the public key's DER. */
  keyId: string;
}

export function keyIdOf(publicKey: KeyObject): string {
  return createHash('sha256').update(publicKey.export({ type: 'spki', format: 'der' })).digest('hex').slice(0, 16);
}

export function generateKeyPair(): KeyPair {
  const { privateKey, publicKey } = generateKeyPairSync('ed25519');
  return { privateKey, publicKey, keyId: keyIdOf(publicKey) };
}

export function keyPaths(dir: string, name = 'node'): { privatePath: string; publicPath: string } {
  return { privatePath: join(dir, `${name}.key`), publicPath: join(dir, `${name}.pub`) };
}

/** Writes a new pair into `dir`; refuses to overwrite an existing key unless `force`. */
export function writeKeyPair(dir: string, name = 'node', force = false): KeyPair & { privatePath: string; publicPath: string } {
  ensurePrivateDir(dir);
  const paths = keyPaths(dir, name);
  if (!force && existsSync(paths.privatePath)) {
    throw new GatehouseError('key_exists', `a key already exists at ${paths.privatePath}; pass --force to replace it`);
  }
  const pair = generateKeyPair();
  writeFileSync(paths.privatePath, pair.privateKey.export({ type: 'pkcs8', format: 'pem' }), { mode: 0o600 });
  writeFileSync(paths.publicPath, pair.publicKey.export({ type: 'spki', format: 'pem' }), { mode: 0o644 });
  return { ...pair, ...paths };
}

export function loadPrivateKey(path: string): KeyPair {
  let pem: string;
  try {
    pem = readFileSync(path, 'utf8');
  } catch {
    throw new GatehouseError('key_missing', `no private key at ${path}; create one with "gatehouse keys generate"`);
  }
  try {
    const privateKey = createPrivateKey(pem);
    if (privateKey.asymmetricKeyType !== 'ed25519') throw new Error('not ed25519');
    const publicKey = createPublicKey(privateKey);
    return { privateKey, publicKey, keyId: keyIdOf(publicKey) };
  } catch {
    throw new GatehouseError('key_invalid', `${path} is not an Ed25519 private key in PEM form`);
  }
}

/** Accepts a PEM file path or inline PEM text. */
export function loadPublicKey(pathOrPem: string): KeyObject {
  const text = pathOrPem.includes('-----BEGIN') ? pathOrPem : readPublicKeyFile(pathOrPem);
  try {
    const key = createPublicKey(text);
    if (key.asymmetricKeyType !== 'ed25519') throw new Error('not ed25519');
    return key;
  } catch {
    throw new GatehouseError('key_invalid', `${pathOrPem.includes('-----BEGIN') ? 'an inline trusted key' : pathOrPem} is not an Ed25519 public key in PEM form`);
  }
}

function readPublicKeyFile(path: string): string {
  try {
    return readFileSync(path, 'utf8');
  } catch {
    throw new GatehouseError('key_missing', `no public key at ${path}`);
  }
}

/** Loads the node's key pair from `<dataDir>/keys`, generating it on first use. */
export function ensureNodeKeys(dataDir: string): KeyPair {
  const dir = join(dataDir, 'keys');
  const { privatePath } = keyPaths(dir);
  if (existsSync(privatePath)) return loadPrivateKey(privatePath);
  return writeKeyPair(dir);
}

export function signBytes(privateKey: KeyObject, data: Uint8Array): Buffer {
  return sign(null, data, privateKey);
}

export function verifyBytes(publicKey: KeyObject, data: Uint8Array, signature: Uint8Array): boolean {
  try {
    return verify(null, data, publicKey, signature);
  } catch {
    return false;
  }
}
