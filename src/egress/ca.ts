/**
 * The local certificate authority for TLS inspection. Generated once into `<dataDir>/egress-ca/` (the key
 * readable only by its owner); `gatehouse ca export` prints the certificate for trust stores. Leaf
 * certificates are issued per host on first use, all with one leaf key pair, and cached.
 */
import 'reflect-metadata';
import * as x509 from '@peculiar/x509';
import { randomBytes, webcrypto } from 'node:crypto';

type CryptoKey = webcrypto.CryptoKey;
type CryptoKeyPair = webcrypto.CryptoKeyPair;
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { isIP } from 'node:net';
import { join } from 'node:path';
import { createSecureContext, type SecureContext } from 'node:tls';
import { ensurePrivateDir } from '../util/paths.js';

x509.cryptoProvider.set(webcrypto as unknown as Parameters<typeof x509.cryptoProvider.set>[0]);

const ALGORITHM = { name: 'ECDSA', namedCurve: 'P-256', hash: 'SHA-256' } as const;
const LEAF_DAYS = 30;
const CA_YEARS = 10;
const CACHE_LIMIT = 1_000;

export interface PemPair {
  certificate: string;
  key: string;
}

export class CertificateAuthority {
  private readonly leaves = new Map<string, Promise<PemPair>>();
  private readonly contexts = new Map<string, Promise<SecureContext>>();
  private leafKeys: Promise<CryptoKeyPair> | undefined;

  readonly certificatePem: string;

  private constructor(
    certificatePem: string,
    private readonly certificate: x509.X509Certificate,
    private readonly privateKey: CryptoKey,
  ) {
    this.certificatePem = certificatePem.endsWith('\n') ? certificatePem : certificatePem + '\n';
  }

  /** Loads the CA from `<dataDir>/egress-ca/`, creating it on first use. */
  static async loadOrCreate(dataDir: string, name = 'Gatehouse egress inspection CA'): Promise<CertificateAuthority> {
    const dir = ensurePrivateDir(join(dataDir, 'egress-ca'));
    const certificatePath = join(dir, 'ca.pem');
    const keyPath = join(dir, 'ca.key');
    if (existsSync(certificatePath) && existsSync(keyPath)) {
      return CertificateAuthority.fromPem({ certificate: readFileSync(certificatePath, 'utf8'), key: readFileSync(keyPath, 'utf8') });
    }
    const ca = await CertificateAuthority.create(name);
    writeFileSync(keyPath, await ca.privateKeyPem(), { mode: 0o600 });
    writeFileSync(certificatePath, ca.certificatePem, { mode: 0o644 });
    return ca;
  }

  /** A new CA kept in memory (tests use one to stand in for a public CA in front of their upstream servers). */
  static async create(name: string): Promise<CertificateAuthority> {
    const keys = await webcrypto.subtle.generateKey(ALGORITHM, true, ['sign', 'verify']);
    const now = Date.now();
    const certificate = await x509.X509CertificateGenerator.createSelfSigned({
      serialNumber: serial(),
      name: `CN=${escapeDn(name)}, O=Gatehouse`,
      notBefore: new Date(now - 3_600_000),
      notAfter: new Date(now + CA_YEARS * 365 * 86_400_000),
      signingAlgorithm: ALGORITHM,
      keys,
      extensions: [
        new x509.BasicConstraintsExtension(true, 0, true),
        new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true),
        await x509.SubjectKeyIdentifierExtension.create(keys.publicKey),
      ],
    });
    return new CertificateAuthority(certificate.toString('pem'), certificate, keys.privateKey);
  }

  static async fromPem(pair: PemPair): Promise<CertificateAuthority> {
    const certificate = new x509.X509Certificate(pair.certificate);
    const der = x509.PemConverter.decodeFirst(pair.key);
    const privateKey = await webcrypto.subtle.importKey('pkcs8', der, ALGORITHM, true, ['sign']);
    return new CertificateAuthority(certificate.toString('pem'), certificate, privateKey);
  }

  /** A certificate and key for `host` (a DNS name or an IP address), signed by this CA. Cached per host. */
  issue(host: string): Promise<PemPair> {
    let leaf = this.leaves.get(host);
    if (!leaf) {
      leaf = this.createLeaf(host);
      leaf.catch(() => this.leaves.delete(host));
      remember(this.leaves, host, leaf);
    }
    return leaf;
  }

  /** A TLS server context presenting `host`'s leaf certificate. Cached per host. */
  secureContext(host: string): Promise<SecureContext> {
    let context = this.contexts.get(host);
    if (!context) {
      context = this.issue(host).then((pair) => createSecureContext({ cert: pair.certificate, key: pair.key, minVersion: 'TLSv1.2' }));
      context.catch(() => this.contexts.delete(host));
      remember(this.contexts, host, context);
    }
    return context;
  }

  private async createLeaf(host: string): Promise<PemPair> {
    this.leafKeys ??= webcrypto.subtle.generateKey(ALGORITHM, true, ['sign', 'verify']);
    const keys = await this.leafKeys;
    const now = Date.now();
    const certificate = await x509.X509CertificateGenerator.create({
      serialNumber: serial(),
      subject: `CN=${escapeDn(host)}`,
      issuer: this.certificate.subject,
      notBefore: new Date(now - 3_600_000),
      notAfter: new Date(now + LEAF_DAYS * 86_400_000),
      signingAlgorithm: ALGORITHM,
      publicKey: keys.publicKey,
      signingKey: this.privateKey,
      extensions: [
        new x509.BasicConstraintsExtension(false, undefined, true),
        new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature, true),
        new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.serverAuth]),
        new x509.SubjectAlternativeNameExtension([{ type: isIP(host) ? 'ip' : 'dns', value: host }]),
        await x509.AuthorityKeyIdentifierExtension.create(this.certificate.publicKey),
        await x509.SubjectKeyIdentifierExtension.create(keys.publicKey),
      ],
    });
    return { certificate: certificate.toString('pem'), key: await toPkcs8Pem(keys.privateKey) };
  }

  private privateKeyPem(): Promise<string> {
    return toPkcs8Pem(this.privateKey);
  }
}

async function toPkcs8Pem(key: CryptoKey): Promise<string> {
  const der = await webcrypto.subtle.exportKey('pkcs8', key);
  return x509.PemConverter.encode(der, 'PRIVATE KEY');
}

/** Positive 128-bit serial (the top bit cleared so DER does not read it as negative). */
function serial(): string {
  const bytes = randomBytes(16);
  bytes[0] = (bytes[0] ?? 0) & 0x7f;
  return bytes.toString('hex');
}

function escapeDn(value: string): string {
  return value.replace(/[,+"\\<>;=]/g, (c) => `\\${c}`);
}

/** Keeps a bounded cache: the oldest entry goes when the limit is reached. */
function remember<T>(map: Map<string, T>, key: string, value: T): void {
  if (map.size >= CACHE_LIMIT) {
    const oldest = map.keys().next().value;
    if (oldest !== undefined) map.delete(oldest);
  }
  map.set(key, value);
}
