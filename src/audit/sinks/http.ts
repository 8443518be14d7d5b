/**
 * Sinks that POST batches over HTTP: a generic webhook (JSON, HMAC-signed) and a Splunk HTTP Event
 * Collector. Each `send` resolves only on a 2xx answer (and, for HEC, `code: 0`); anything else throws, so the
 * runner keeps the batch spooled and retries it.
 */
import { createHmac } from 'node:crypto';
import type { Sink } from './types.js';

const TIMEOUT_MS = 10_000;

async function post(url: string, body: string, headers: Record<string, string>): Promise<Response> {
  const response = await fetch(url, { method: 'POST', body, headers, signal: AbortSignal.timeout(TIMEOUT_MS), redirect: 'error' });
  return response;
}

/** `sha256=<hex>` over `<timestamp>.<body>`: what a receiver recomputes to trust a webhook delivery. */
export function webhookSignature(secret: string, timestamp: string, body: string): string {
  return `sha256=${createHmac('sha256', secret).update(`${timestamp}.${body}`).digest('hex')}`;
}

export class WebhookSink implements Sink {
  constructor(
    readonly name: string,
    private readonly url: string,
    private readonly secret: string,
    private readonly headers: Record<string, string> = {},
  ) {}

  async send(lines: readonly string[]): Promise<void> {
    // The lines are the records exactly as chained in the log; joining them keeps them byte-for-byte.
    const body = `{"records":[${lines.join(',')}]}`;
    const timestamp = String(Math.floor(Date.now() / 1000));
    const response = await post(this.url, body, {
      ...this.headers,
      'content-type': 'application/json',
      'x-gatehouse-timestamp': timestamp,
      'x-gatehouse-signature': webhookSignature(this.secret, timestamp, body),
    });
    await response.arrayBuffer();
    if (!response.ok) throw new Error(`${this.url} answered HTTP ${response.status}`);
  }

  async close(): Promise<void> {}
}

export class SplunkHecSink implements Sink {
  private readonly endpoint: string;

  constructor(
    readonly name: string,
    url: string,
    private readonly token: string,
    private readonly options: { index?: string; sourcetype: string },
  ) {
    this.endpoint = /\/services\/collector(\/event)?\/?$/.test(url) ? url : `${url.replace(/\/$/, '')}/services/collector/event`;
  }

  async send(lines: readonly string[]): Promise<void> {
    let body = '';
    for (const line of lines) {
      const record = JSON.parse(line) as { time?: string; node?: string };
      const time = record.time ? Date.parse(record.time) / 1000 : Date.now() / 1000;
      body += JSON.stringify({
        time,
        host: record.node,
        source: 'gatehouse',
        sourcetype: this.options.sourcetype,
        ...(this.options.index ? { index: this.options.index } : {}),
        event: record,
      });
      body += '\n';
    }
    const response = await post(this.endpoint, body, { authorization: `Splunk ${this.token}`, 'content-type': 'application/json' });
    const text = await response.text();
    if (!response.ok) throw new Error(`${this.endpoint} answered HTTP ${response.status}: ${text.slice(0, 200)}`);
    let answer: { code?: number; text?: string } = {};
    try {
      answer = JSON.parse(text) as typeof answer;
    } catch {
      throw new Error(`${this.endpoint} did not answer as a Splunk HEC does`);
    }
    if (answer.code !== 0) throw new Error(`${this.endpoint} refused the events: ${answer.text ?? `code ${answer.code}`}`);
  }

  async close(): Promise<void> {}
}
