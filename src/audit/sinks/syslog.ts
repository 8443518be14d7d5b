/**
 * syslog (RFC 5424) over TCP or TLS (RFC 5425), with octet-counting framing (RFC 6587 3.4.1), so a record
 * may hold any bytes, newlines included. One connection is kept open and reopened after an error.
 *
 * TCP gives no application-level acknowledgement: a batch counts as delivered once the kernel has taken
 * it. Bytes still in flight when a connection breaks can be lost; a receiver that must never lose a record
 * should be fed by the webhook, HEC or OTLP sink instead.
 */
import { readFileSync } from 'node:fs';
import { connect as connectTcp, type Socket } from 'node:net';
import { connect as connectTls } from 'node:tls';
import type { AuditRecord } from '../record.js';
import type { Sink } from './types.js';

export interface SyslogOptions {
  host: string;
  port: number;
  /** TLS with the server's certificate checked against `ca` (PEM file or inline PEM), else system roots. */
  tls?: { ca?: string; serverName?: string };
  appName: string;
  facility: number;
}

/** The SD-ID for Gatehouse's structured data; 32473 is the private enterprise number RFC 5612 sets aside for examples. */
const SD_ID = 'gatehouse@32473';
const CONNECT_TIMEOUT_MS = 5000;

function severityOf(effect: string): number {
  if (effect === 'error') return 3;
  if (effect === 'deny') return 4;
  if (effect === 'observed-deny') return 5;
  return 6;
}

/** PRINTUSASCII without spaces, at most `max` characters; "-" when empty. */
function header(value: string | undefined, max: number): string {
  const clean = (value ?? '').replace(/[^!-~]/g, '_').slice(0, max);
  return clean === '' ? '-' : clean;
}

function paramValue(value: string): string {
  return value.replace(/[\\"\]]/g, (c) => `\\${c}`);
}

/** One RFC 5424 message for a record line. The message part is the record's JSON, unchanged. */
export function formatSyslog(line: string, options: Pick<SyslogOptions, 'appName' | 'facility'>): string {
  const record = JSON.parse(line) as AuditRecord;
  const pri = options.facility * 8 + severityOf(record.effect);
  const params = [
    `seq="${record.seq ?? 0}"`,
    `surface="${paramValue(record.surface)}"`,
    `effect="${paramValue(record.effect)}"`,
    ...(record.principal?.agent ? [`agent="${paramValue(record.principal.agent)}"`] : []),
  ];
  return `<${pri}>1 ${record.time} ${header(record.node, 255)} ${header(options.appName, 48)} - ${header(record.surface, 32)} [${SD_ID} ${params.join(' ')}] ${line}`;
}

export class SyslogSink implements Sink {
  private socket: Socket | undefined;
  private readonly ca: string | undefined;

  constructor(
    readonly name: string,
    private readonly options: SyslogOptions,
  ) {
    const ca = options.tls?.ca;
    this.ca = ca === undefined ? undefined : ca.includes('-----BEGIN') ? ca : readFileSync(ca, 'utf8');
  }

  private connect(): Promise<Socket> {
    if (this.socket && !this.socket.destroyed) return Promise.resolve(this.socket);
    return new Promise((resolve, reject) => {
      const { host, port, tls } = this.options;
      const socket = tls
        ? connectTls({ host, port, servername: tls.serverName ?? host, ...(this.ca ? { ca: this.ca } : {}) })
        : connectTcp({ host, port });
      const timer = setTimeout(() => socket.destroy(new Error(`no connection to syslog at ${host}:${port} within ${CONNECT_TIMEOUT_MS} ms`)), CONNECT_TIMEOUT_MS);
      const ready = () => {
        clearTimeout(timer);
        socket.off('error', failed);
        socket.on('error', () => socket.destroy());
        // The receiver never speaks; reading keeps a closed connection from going unnoticed.
        socket.on('data', () => {});
        socket.on('close', () => {
          if (this.socket === socket) this.socket = undefined;
        });
        this.socket = socket;
        resolve(socket);
      };
      const failed = (error: Error) => {
        clearTimeout(timer);
        socket.destroy();
        reject(error);
      };
      socket.once(tls ? 'secureConnect' : 'connect', ready);
      socket.once('error', failed);
    });
  }

  async send(lines: readonly string[]): Promise<void> {
    const socket = await this.connect();
    let frames = '';
    for (const line of lines) {
      const message = formatSyslog(line, this.options);
      frames += `${Buffer.byteLength(message)} ${message}`;
    }
    await new Promise<void>((resolve, reject) => {
      socket.write(frames, (error) => {
        if (error) {
          socket.destroy();
          reject(error);
        } else resolve();
      });
    });
  }

  async close(): Promise<void> {
    const socket = this.socket;
    this.socket = undefined;
    if (!socket) return;
    await new Promise<void>((resolve) => {
      socket.end(() => resolve());
      setTimeout(resolve, 1000).unref();
    });
    socket.destroy();
  }
}
