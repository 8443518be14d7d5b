/**
 * Reads the server name (SNI) from a TLS ClientHello, so a tunnel the proxy does not inspect can still
 * refuse a client whose TLS names a different host than its CONNECT (domain fronting). Formats from RFC 8446
 * §4.1.2 and RFC 6066 §3. Only the first handshake record is read; nothing is decrypted.
 */

export type ClientHelloSni =
  | { kind: 'sni'; name: string }
  /** A ClientHello without the server_name extension. */
  | { kind: 'none' }
  /** More bytes are needed to see the whole first record. */
  | { kind: 'incomplete' }
  /** Not TLS (or not a ClientHello): the tunnel carries something else. */
  | { kind: 'not-tls' };

const RECORD_HEADER = 5;
const MAX_RECORD = 16_384 + 2_048;

export function readClientHelloSni(data: Buffer): ClientHelloSni {
  if (data.length < 1) return { kind: 'incomplete' };
  if (data[0] !== 0x16) return { kind: 'not-tls' };
  if (data.length < RECORD_HEADER) return { kind: 'incomplete' };
  if (data[1] !== 0x03) return { kind: 'not-tls' };
  const recordLength = data.readUInt16BE(3);
  if (recordLength > MAX_RECORD) return { kind: 'not-tls' };
  if (data.length < RECORD_HEADER + recordLength) return { kind: 'incomplete' };
  const body = data.subarray(RECORD_HEADER, RECORD_HEADER + recordLength);
  try {
    return parseHello(body);
  } catch {
    return { kind: 'not-tls' };
  }
}

/** A cursor that throws on any read past the end, so a truncated or lying length is never trusted. */
class Reader {
  private at = 0;
  constructor(private readonly data: Buffer) {}
  u8(): number {
    this.need(1);
    return this.data[this.at++] as number;
  }
  u16(): number {
    this.need(2);
    const value = this.data.readUInt16BE(this.at);
    this.at += 2;
    return value;
  }
  u24(): number {
    return (this.u8() << 16) | this.u16();
  }
  bytes(length: number): Buffer {
    this.need(length);
    const out = this.data.subarray(this.at, this.at + length);
    this.at += length;
    return out;
  }
  get remaining(): number {
    return this.data.length - this.at;
  }
  private need(length: number): void {
    if (this.at + length > this.data.length) throw new RangeError('truncated');
  }
}

function parseHello(record: Buffer): ClientHelloSni {
  const reader = new Reader(record);
  if (reader.u8() !== 0x01) return { kind: 'not-tls' }; // handshake type client_hello
  const length = reader.u24();
  // A ClientHello split over several records is left alone (incomplete): clients do not do this in practice.
  if (length > reader.remaining) return { kind: 'incomplete' };
  const hello = new Reader(reader.bytes(length));
  hello.bytes(2 + 32); // legacy_version, random
  hello.bytes(hello.u8()); // legacy_session_id
  hello.bytes(hello.u16()); // cipher_suites
  hello.bytes(hello.u8()); // legacy_compression_methods
  if (hello.remaining === 0) return { kind: 'none' };
  const extensions = new Reader(hello.bytes(hello.u16()));
  while (extensions.remaining > 0) {
    const type = extensions.u16();
    const data = extensions.bytes(extensions.u16());
    if (type !== 0x0000) continue;
    const list = new Reader(data);
    const names = new Reader(list.bytes(list.u16()));
    while (names.remaining > 0) {
      const nameType = names.u8();
      const name = names.bytes(names.u16());
      if (nameType === 0) return { kind: 'sni', name: name.toString('latin1') };
    }
    return { kind: 'none' };
  }
  return { kind: 'none' };
}
