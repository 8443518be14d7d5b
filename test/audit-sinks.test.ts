import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { createHmac } from 'node:crypto';
import { existsSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { createServer as createTcpServer, connect } from 'node:net';
import { join } from 'node:path';
import { auditDefaults, type AuditSettings, type AuditSinkSettings } from '../src/config/schema.js';
import { openNodeAudit, type NodeAudit } from '../src/audit/index.js';
import type { AuditRecord } from '../src/audit/record.js';
import { decisionRecord, tempDataDir, type TempDataDir } from './audit-fixtures.js';

const fastRetry = { minBackoffMs: 20, maxBackoffMs: 100 };
const quick = { runner: fastRetry, closeDrainMs: 200 };

function settingsWith(sinks: AuditSinkSettings[], extra: Partial<AuditSettings> = {}): AuditSettings {
  return { ...auditDefaults, sinks, ...extra } as AuditSettings;
}

function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const server = createTcpServer().listen(0, '127.0.0.1', () => {
      const { port } = server.address() as { port: number };
      server.close(() => resolve(port));
    });
  });
}

async function body(request: IncomingMessage): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const chunk of request) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks).toString('utf8');
}

/** A plain HTTP receiver on loopback; `handle` returns the status and body to answer with. */
async function httpReceiver(port: number, handle: (request: IncomingMessage, text: string) => { status: number; body?: string }): Promise<Server> {
  const server = createServer((request: IncomingMessage, response: ServerResponse) => {
    void body(request).then((text) => {
      const answer = handle(request, text);
      response.writeHead(answer.status, { 'content-type': 'application/json' }).end(answer.body ?? '{}');
    });
  });
  await new Promise<void>((resolve) => server.listen(port, '127.0.0.1', resolve));
  return server;
}

function closeServer(server: Server): Promise<void> {
  server.closeAllConnections();
  return new Promise((resolve) => server.close(() => resolve()));
}

async function appendDecisions(audit: NodeAudit, from: number, count: number): Promise<AuditRecord[]> {
  const records: AuditRecord[] = [];
  for (let i = from; i < from + count; i += 1) {
    const record = decisionRecord(i, { correlationId: `rec-${i}` });
    await audit.append(record);
    records.push(record);
  }
  return records;
}

const SECRET = 'a-webhook-secret-of-some-length';

function webhookAccepts(received: string[]) {
  return (request: IncomingMessage, text: string) => {
    const timestamp = String(request.headers['x-gatehouse-timestamp']);
    const expected = `sha256=${createHmac('sha256', SECRET).update(`${timestamp}.${text}`).digest('hex')}`;
    if (request.headers['x-gatehouse-signature'] !== expected) return { status: 401 };
    for (const record of (JSON.parse(text) as { records: AuditRecord[] }).records) received.push(record.correlationId);
    return { status: 204 };
  };
}

test('webhook sink posts batched, HMAC-signed JSON that a receiver can check', async () => {
  const tmp = tempDataDir();
  const port = await freePort();
  const received: string[] = [];
  const server = await httpReceiver(port, webhookAccepts(received));
  const audit = openNodeAudit(tmp.dataDir, 'n1', settingsWith([{ type: 'webhook', url: `http://127.0.0.1:${port}/hook`, secret: SECRET, headers: {} }]), quick);
  try {
    const records = await appendDecisions(audit, 0, 30);
    assert.equal(await audit.drainSinks(5000), true);
    assert.deepEqual(received, records.map((r) => r.correlationId));
  } finally {
    await audit.close();
    await closeServer(server);
    tmp.cleanup();
  }
});

test('a sink that is down loses nothing, never blocks appends, and its spool drains in order when it returns (across a restart)', async () => {
  const tmp = tempDataDir();
  const port = await freePort();
  const sinks: AuditSinkSettings[] = [{ type: 'webhook', url: `http://127.0.0.1:${port}/hook`, secret: SECRET, headers: {} }];
  let audit = openNodeAudit(tmp.dataDir, 'n1', settingsWith(sinks), quick);
  const expected: string[] = [];
  try {
    // Nothing listens on the port: every delivery fails.
    const started = performance.now();
    expected.push(...(await appendDecisions(audit, 0, 200)).map((r) => r.correlationId));
    const perAppendMs = (performance.now() - started) / 200;
    assert.ok(perAppendMs < 5, `appends are not held up by the dead sink (${perAppendMs.toFixed(2)} ms each)`);
    await new Promise((r) => setTimeout(r, 150));
    const [down] = audit.sinks();
    assert.ok(down!.spoolBytes > 0, 'the records wait in the spool');
    assert.ok(down!.lagRecords >= 200);
    assert.match(down!.lastError ?? '', /fetch failed|ECONNREFUSED/);
    assert.match(audit.metrics.render(), /gatehouse_audit_sink_up\{sink="webhook"\} 0/);
    await audit.close();

    // The node restarts while the receiver is still down, and more records arrive.
    audit = openNodeAudit(tmp.dataDir, 'n1', settingsWith(sinks), quick);
    expected.push(...(await appendDecisions(audit, 200, 50)).map((r) => r.correlationId));

    // The receiver comes back (first refusing a few batches with 503).
    const received: string[] = [];
    let refusals = 3;
    const accept = webhookAccepts(received);
    const server = await httpReceiver(port, (request, text) => (refusals-- > 0 ? { status: 503 } : accept(request, text)));
    try {
      assert.equal(await audit.drainSinks(10_000), true, 'the spool drained');
      const decisions = received.filter((id) => id.startsWith('rec-'));
      assert.deepEqual(decisions, expected, 'every record arrived, once, in order');
      assert.equal(audit.sinks()[0]!.dropped, 0);
    } finally {
      await audit.close();
      await closeServer(server);
    }
  } finally {
    tmp.cleanup();
  }
});

test('a spool that fell behind the log (crash between write and spool) is refilled from the log on restart', async () => {
  const tmp = tempDataDir();
  const port = await freePort();
  const sinks: AuditSinkSettings[] = [{ type: 'webhook', url: `http://127.0.0.1:${port}/hook`, secret: SECRET, headers: {} }];
  let audit = openNodeAudit(tmp.dataDir, 'n1', settingsWith(sinks), quick);
  try {
    const expected = (await appendDecisions(audit, 0, 20)).map((r) => r.correlationId);
    await audit.close();
    // Cut the spool back as if the process died right after the log write.
    const spoolDir = join(tmp.auditDir, 'spool', 'webhook');
    const file = join(spoolDir, readdirSync(spoolDir).find((n) => n.startsWith('spool-'))!);
    const lines = readFileSync(file, 'utf8').split('\n').filter(Boolean);
    writeFileSync(file, lines.slice(0, 8).join('\n') + '\n');
    const received: string[] = [];
    const server = await httpReceiver(port, webhookAccepts(received));
    audit = openNodeAudit(tmp.dataDir, 'n1', settingsWith(sinks), quick);
    try {
      assert.equal(await audit.drainSinks(5000), true);
      assert.deepEqual(received.filter((id) => id.startsWith('rec-')), expected);
    } finally {
      await audit.close();
      await closeServer(server);
    }
  } finally {
    tmp.cleanup();
  }
});

test('a spool past its bound drops the oldest records and counts them', async () => {
  const tmp = tempDataDir();
  const port = await freePort();
  const audit = openNodeAudit(
    tmp.dataDir,
    'n1',
    settingsWith([{ type: 'webhook', url: `http://127.0.0.1:${port}/hook`, secret: SECRET, headers: {}, spoolMaxBytes: 1024 * 1024 }]),
    quick,
  );
  try {
    for (let i = 0; i < 3000; i += 1) await audit.append(decisionRecord(i, { details: { pad: 'p'.repeat(600) } }));
    const [status] = audit.sinks();
    assert.ok(status!.dropped > 0, 'records were dropped');
    assert.ok(status!.spoolBytes <= 2 * 1024 * 1024, `the spool stays bounded (${status!.spoolBytes} bytes)`);
    assert.match(audit.metrics.render(), new RegExp(`gatehouse_audit_sink_dropped_total\\{sink="webhook"\\} ${status!.dropped}`));
  } finally {
    await audit.close();
    tmp.cleanup();
  }
});

test('Splunk HEC sink sends events with the token to /services/collector/event', async () => {
  const tmp = tempDataDir();
  const port = await freePort();
  const events: { event: AuditRecord; sourcetype: string; time: number; host: string }[] = [];
  let refused = false;
  const server = await httpReceiver(port, (request, text) => {
    if (request.url !== '/services/collector/event') return { status: 404, body: '{"text":"Not found","code":404}' };
    if (request.headers.authorization !== 'Splunk 0000-hec-token') return { status: 403, body: '{"text":"Invalid token","code":4}' };
    if (!refused) {
      refused = true;
      return { status: 503, body: '{"text":"Server is busy","code":9}' };
    }
    for (const line of text.split('\n').filter(Boolean)) events.push(JSON.parse(line) as (typeof events)[number]);
    return { status: 200, body: '{"text":"Success","code":0}' };
  });
  const audit = openNodeAudit(tmp.dataDir, 'n1', settingsWith([{ type: 'splunk', url: `http://127.0.0.1:${port}`, token: '0000-hec-token', sourcetype: 'gatehouse:audit' }]), quick);
  try {
    const records = await appendDecisions(audit, 0, 10);
    assert.equal(await audit.drainSinks(5000), true);
    assert.deepEqual(events.map((e) => e.event.correlationId), records.map((r) => r.correlationId));
    assert.equal(events[0]!.sourcetype, 'gatehouse:audit');
    assert.equal(events[0]!.time, Date.parse(records[0]!.time) / 1000);
    assert.equal(events[0]!.host, 'test-node');
  } finally {
    await audit.close();
    await closeServer(server);
    tmp.cleanup();
  }
});

// Not the OpenTelemetry Collector (it cannot be installed here): a small receiver that decodes the real
// OTLP/HTTP JSON protocol (ExportLogsServiceRequest) as the exporter sends it.
test('OTLP sink exports log records over OTLP/HTTP that a protocol-decoding receiver reads back', async () => {
  const tmp = tempDataDir();
  const port = await freePort();
  const logs: { body: string; severity: string; attributes: Record<string, unknown>; service: unknown }[] = [];
  const server = await httpReceiver(port, (request, text) => {
    if (request.url !== '/v1/logs' || !String(request.headers['content-type']).startsWith('application/json')) return { status: 415 };
    const decoded = JSON.parse(text) as {
      resourceLogs: {
        resource: { attributes: { key: string; value: { stringValue?: string } }[] };
        scopeLogs: { scope: { name: string }; logRecords: { body: { stringValue: string }; severityText: string; attributes: { key: string; value: Record<string, unknown> }[] }[] }[];
      }[];
    };
    for (const resourceLog of decoded.resourceLogs) {
      const service = resourceLog.resource.attributes.find((a) => a.key === 'service.name')?.value.stringValue;
      for (const scopeLog of resourceLog.scopeLogs) {
        for (const log of scopeLog.logRecords) {
          logs.push({
            body: log.body.stringValue,
            severity: log.severityText,
            attributes: Object.fromEntries(log.attributes.map((a) => [a.key, Object.values(a.value)[0]])),
            service,
          });
        }
      }
    }
    return { status: 200, body: '{}' };
  });
  const audit = openNodeAudit(tmp.dataDir, 'n1', settingsWith([{ type: 'otlp', url: `http://127.0.0.1:${port}/v1/logs`, headers: {} }]), quick);
  try {
    const records = await appendDecisions(audit, 0, 10);
    assert.equal(await audit.drainSinks(8000), true);
    const decisions = logs.filter((l) => (JSON.parse(l.body) as AuditRecord).surface !== 'system');
    assert.deepEqual(decisions.map((l) => (JSON.parse(l.body) as AuditRecord).correlationId), records.map((r) => r.correlationId));
    const deny = decisions.find((l) => l.attributes['gatehouse.effect'] === 'deny')!;
    assert.equal(deny.severity, 'WARN');
    assert.equal(deny.service, 'gatehouse');
    assert.equal(typeof deny.attributes['gatehouse.surface'], 'string');
  } finally {
    await audit.close();
    await closeServer(server);
    tmp.cleanup();
  }
});

const rsyslogd = ['/usr/sbin/rsyslogd', '/sbin/rsyslogd'].find((p) => existsSync(p));
const requireAll = process.env.GATEHOUSE_REQUIRE_SANDBOX === '1';

interface Rsyslog {
  port: number;
  output: string;
  stop(): Promise<void>;
}

/** rsyslogd from Debian, unprivileged config in a temp dir, listening on a loopback port. */
async function startRsyslog(tmp: TempDataDir, tls: boolean): Promise<Rsyslog> {
  const dir = join(tmp.dataDir, 'rsyslog');
  spawnSync('mkdir', ['-p', dir]);
  const port = await freePort();
  const output = join(dir, 'out.log');
  const tlsGlobals = tls
    ? `DefaultNetstreamDriver="ossl" DefaultNetstreamDriverCAFile="${dir}/cert.pem" DefaultNetstreamDriverCertFile="${dir}/cert.pem" DefaultNetstreamDriverKeyFile="${dir}/key.pem"`
    : '';
  if (tls) {
    const made = spawnSync('openssl', [
      'req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-keyout', `${dir}/key.pem`, '-out', `${dir}/cert.pem`,
      '-days', '1', '-subj', '/CN=localhost', '-addext', 'subjectAltName=DNS:localhost,IP:127.0.0.1',
    ]);
    assert.equal(made.status, 0, 'openssl made a test certificate');
  }
  writeFileSync(
    join(dir, 'rsyslog.conf'),
    `global(workDirectory="${dir}" maxMessageSize="128k" ${tlsGlobals})
module(load="imtcp"${tls ? ' StreamDriver.Name="ossl" StreamDriver.Mode="1" StreamDriver.AuthMode="anon"' : ''})
input(type="imtcp" address="127.0.0.1" port="${port}")
template(name="gatehouse" type="string" string="%pri%|%timereported:::date-rfc3339%|%hostname%|%app-name%|%msgid%|%structured-data%|%msg%\\n")
action(type="omfile" file="${output}" template="gatehouse")
`,
  );
  const child: ChildProcess = spawn(rsyslogd!, ['-n', '-f', join(dir, 'rsyslog.conf'), '-i', join(dir, 'rsyslogd.pid')], { stdio: 'ignore' });
  const deadline = Date.now() + 10_000;
  for (;;) {
    const up = await new Promise<boolean>((resolve) => {
      const socket = connect(port, '127.0.0.1', () => {
        socket.destroy();
        resolve(true);
      });
      socket.on('error', () => resolve(false));
    });
    if (up) break;
    if (Date.now() > deadline || child.exitCode !== null) {
      child.kill('SIGKILL');
      throw new Error('rsyslogd did not start listening');
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  return {
    port,
    output,
    stop: () =>
      new Promise<void>((resolve) => {
        if (child.exitCode !== null) return resolve();
        child.once('exit', () => resolve());
        child.kill('SIGTERM');
      }),
  };
}

async function waitForLines(path: string, count: number, timeoutMs = 10_000): Promise<string[]> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const lines = existsSync(path) ? readFileSync(path, 'utf8').split('\n').filter(Boolean) : [];
    if (lines.length >= count || Date.now() > deadline) return lines;
    await new Promise((r) => setTimeout(r, 50));
  }
}

for (const tls of [false, true]) {
  test(
    `syslog sink delivers RFC 5424 messages to rsyslog over ${tls ? 'TLS' : 'TCP'}, spooling while it is down`,
    { skip: !rsyslogd && !requireAll ? 'needs rsyslog (Debian packages rsyslog and rsyslog-openssl)' : false },
    async () => {
      assert.ok(rsyslogd, 'rsyslogd is installed (apt-get install rsyslog rsyslog-openssl)');
      const tmp = tempDataDir();
      let rsyslog = await startRsyslog(tmp, tls);
      const sink: AuditSinkSettings = {
        type: 'syslog',
        host: '127.0.0.1',
        port: rsyslog.port,
        appName: 'gatehouse',
        facility: 13,
        ...(tls ? { tls: { ca: join(tmp.dataDir, 'rsyslog', 'cert.pem'), serverName: 'localhost' } } : {}),
      };
      const audit = openNodeAudit(tmp.dataDir, 'n1', settingsWith([sink]), quick);
      try {
        const first = await appendDecisions(audit, 0, 10);
        assert.equal(await audit.drainSinks(5000), true);
        let lines = await waitForLines(rsyslog.output, 10);
        const fields = lines[0]!.split('|');
        assert.equal(fields[3], 'gatehouse');
        assert.equal(fields[4], 'network');
        assert.match(fields[5]!, /^\[gatehouse@32473 seq="1" surface="network" effect="deny" agent="coder"\]$/);
        assert.equal(fields[0], String(13 * 8 + 4), 'a deny is sent with severity warning');
        const messages = (all: string[]) => all.map((l) => JSON.parse(l.split('|').slice(6).join('|')) as AuditRecord);
        assert.deepEqual(messages(lines).map((r) => r.correlationId), first.map((r) => r.correlationId));

        // rsyslog goes away; records keep being accepted and wait in the spool, then arrive when it is back.
        await rsyslog.stop();
        const port = rsyslog.port;
        const during = await appendDecisions(audit, 10, 15);
        await new Promise((r) => setTimeout(r, 200));
        assert.ok(audit.sinks()[0]!.spoolBytes > 0 || audit.sinks()[0]!.lagRecords > 0 || audit.sinks()[0]!.lastError);
        rsyslog = await restartOnPort(tmp, tls, port);
        assert.equal(await audit.drainSinks(8000), true);
        lines = await waitForLines(rsyslog.output, 25);
        const ids = messages(lines).map((r) => r.correlationId);
        for (const record of during) assert.ok(ids.includes(record.correlationId), `${record.correlationId} arrived after the outage`);
      } finally {
        await audit.close();
        await rsyslog.stop();
        tmp.cleanup();
      }
    },
  );
}

/** Starts rsyslog again on the same port (the sink's address), keeping the certificate. */
async function restartOnPort(tmp: TempDataDir, tls: boolean, port: number): Promise<Rsyslog> {
  const dir = join(tmp.dataDir, 'rsyslog');
  const conf = readFileSync(join(dir, 'rsyslog.conf'), 'utf8').replace(/port="\d+"/, `port="${port}"`);
  writeFileSync(join(dir, 'rsyslog.conf'), conf);
  const child: ChildProcess = spawn(rsyslogd!, ['-n', '-f', join(dir, 'rsyslog.conf'), '-i', join(dir, 'rsyslogd.pid')], { stdio: 'ignore' });
  const deadline = Date.now() + 10_000;
  for (;;) {
    const up = await new Promise<boolean>((resolve) => {
      const socket = connect(port, '127.0.0.1', () => {
        socket.destroy();
        resolve(true);
      });
      socket.on('error', () => resolve(false));
    });
    if (up) break;
    if (Date.now() > deadline) {
      child.kill('SIGKILL');
      throw new Error('rsyslogd did not come back');
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  void tls;
  return {
    port,
    output: join(dir, 'out.log'),
    stop: () =>
      new Promise<void>((resolve) => {
        if (child.exitCode !== null) return resolve();
        child.once('exit', () => resolve());
        child.kill('SIGTERM');
      }),
  };
}
