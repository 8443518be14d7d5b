/**
 * bench/egress: what the egress proxy costs, against baselines measured in the same run.
 *
 *   node dist/bench/egress.js [--mb 256] [--seconds 3] [--connects 400] [--only tunnel|rate|connect|inspected]
 *
 * - tunnel throughput: an N MB download through a CONNECT tunnel vs the same download direct, and through
 *   socat (from Debian, installed by the bench) as a reference relay;
 * - plain-HTTP request rate: small requests through Gatehouse vs direct vs tinyproxy and squid (from Debian,
 *   installed with apt-get if missing) with an equivalent one-host allowlist;
 * - added connect latency: CONNECT + first byte through Gatehouse vs a direct TCP connect + first byte, p50/p99;
 * - inspected throughput: an N MB HTTPS download with TLS inspection on vs the same HTTPS download direct.
 * Targets: tunnel >= 90% of direct; request rate >= 1x tinyproxy; added connect p50 <= 1 ms; inspected >= 50%.
 *
 * The proxy runs in its own process, as it does in `gatehouse node`, and with what the node gives it: the node's
 * audit, a secret scanner over everything it reads, placeholders and the vault (see runProxyChild). Clients and
 * servers share this process.
 * Profile it: BENCH_EGRESS_NODE_ARGS="--cpu-prof --cpu-prof-dir=/tmp/prof" node dist/bench/egress.js
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { Agent as HttpAgent, createServer as createHttpServer, request as httpRequest } from 'node:http';
import { createServer as createHttpsServer, request as httpsRequest } from 'node:https';
import { connect, createServer as createNetServer, type AddressInfo, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect as tlsConnect } from 'node:tls';
import { fileURLToPath } from 'node:url';
import { parse as parseYaml } from 'yaml';

const args = process.argv.slice(2);
const option = (name: string, fallback: number): number => {
  const at = args.indexOf(`--${name}`);
  return at >= 0 ? Number(args[at + 1]) : fallback;
};
const only = args.includes('--only') ? args[args.indexOf('--only') + 1] : undefined;
/** Whether to run a part: all of them, or the one `--only` names. */
const runs = (part: 'tunnel' | 'rate' | 'connect' | 'inspected'): boolean => only === undefined || only === part;

const POLICY = `
network:
  - id: bench-host
    allow: [bench.test]
  - id: loopback-targets
    allow: [127.0.0.1]
  - id: inspected
    allow: [secure.test]
    inspect: true
`;

/** A node's vault holds a few secrets, which its scanner looks for in everything the proxy reads. */
const VAULT = {
  'github-token': 'ghp_bench0000000000000000000000000000000',
  'stripe-key': 'sk_live_bench00000000000000000000',
  'db-password': 'correct horse battery staple bench',
};

/**
 * The proxy process: a real startEgressProxy with what `gatehouse node` gives it (see node/daemon.ts), printing
 * its port: the node's audit (hash-chained log in batch mode, metrics, the index worker), a secret scanner that
 * knows the vault's values and reports each scan to /metrics, a placeholder registry and the vault.
 */
async function runProxyChild(): Promise<void> {
  const { startEgressProxy } = await import('../src/egress/index.js');
  const { CertificateAuthority } = await import('../src/egress/ca.js');
  const { openNodeAudit } = await import('../src/audit/index.js');
  const { configSchema } = await import('../src/config/schema.js');
  const { compilePolicy } = await import('../src/policy/index.js');
  const { policySchema } = await import('../src/config/policy-schema.js');
  const { openSecrets, PlaceholderRegistry } = await import('../src/secrets/index.js');
  const settings = JSON.parse(process.env.BENCH_EGRESS ?? '{}') as { dir: string; upstreamCa: string };
  const engine = compilePolicy(policySchema.parse(parseYaml(POLICY)));
  const audit = openNodeAudit(settings.dir, 'bench', configSchema.parse({ version: 1 }).audit);
  const secrets = openSecrets({ dataDir: settings.dir });
  for (const [name, value] of Object.entries(VAULT)) secrets.vault.set(name, value);
  const scanner = await secrets.createScanner(engine.dlp);
  scanner.onScan = (microseconds) => audit.metrics.observeScan(microseconds, 'network');
  const proxy = await startEgressProxy({
    policy: { current: engine },
    audit,
    scanner,
    placeholders: new PlaceholderRegistry(),
    resolveSecret: (name) => secrets.resolveSecret(name),
    authenticate: (key) => (key === 'bench-key' ? { agent: 'bench' } : undefined),
    ca: await CertificateAuthority.loadOrCreate(settings.dir),
    upstreamCa: [settings.upstreamCa],
    settings: {
      listen: '127.0.0.1:0',
      resolve: { 'bench.test': ['127.0.0.1'], 'secure.test': ['127.0.0.1'] },
      limits: { connectionsPerSecond: 1e9, requestsPerSecond: 1e9 },
    },
  });
  process.stdout.write(JSON.stringify({ port: proxy.address.port }) + '\n');
  process.on('SIGTERM', () => void proxy.close().then(() => process.exit(0)));
}

async function main(): Promise<void> {
  const megabytes = option('mb', 256);
  const seconds = option('seconds', 3);
  const connects = option('connects', 400);
  const dir = mkdtempSync(join(tmpdir(), 'gatehouse-bench-egress-'));
  const children: ChildProcess[] = [];
  const servers: { close(): void }[] = [];
  // Killed or interrupted, the bench still stops what it started (tinyproxy, squid and socat would live on).
  const stopChildren = (): void => {
    for (const child of children) if (child.exitCode === null) child.kill('SIGTERM');
  };
  process.once('exit', stopChildren);
  for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
    process.once(signal, () => {
      stopChildren();
      rmSync(dir, { recursive: true, force: true });
      process.exit(1);
    });
  }
  try {
    const { CertificateAuthority } = await import('../src/egress/ca.js');
    const publicCa = await CertificateAuthority.create('Bench public CA');
    const upstreamCaPath = join(dir, 'public-ca.pem');
    writeFileSync(upstreamCaPath, publicCa.certificatePem);

    // Servers: a raw byte source, a TCP echo, a small-response HTTP server, and an HTTPS byte source.
    const bytes = megabytes * 1024 * 1024;
    const chunk = Buffer.alloc(256 * 1024, 0x61);
    const source = await listen(createNetServer((socket) => socket.once('data', () => sendBytes(socket, bytes, chunk))));
    const echo = await listen(createNetServer((socket) => socket.pipe(socket).on('error', () => undefined)));
    const small = await listen(createHttpServer({ keepAliveTimeout: 30_000 }, (_request, response) => response.end('ok\n')));
    const pair = await publicCa.issue('secure.test');
    const secure = await listen(createHttpsServer({ cert: pair.certificate, key: pair.key }, (_request, response) => {
      response.writeHead(200, { 'content-length': bytes });
      sendBytes(response, bytes, chunk);
    }));
    servers.push(source.server, echo.server, small.server, secure.server);

    const proxy = await startChild(process.execPath, [...(process.env.BENCH_EGRESS_NODE_ARGS?.split(' ').filter(Boolean) ?? []), fileURLToPath(import.meta.url), '--child-proxy'], { BENCH_EGRESS: JSON.stringify({ dir, upstreamCa: publicCa.certificatePem }) }, children);
    const proxyPort = proxy.port;
    const proxyCaPem = (await CertificateAuthority.loadOrCreate(dir)).certificatePem;
    const auth = `Basic ${Buffer.from('bench:bench-key').toString('base64')}`;

    console.log(`egress bench: ${megabytes} MB downloads, ${seconds} s request runs, ${connects} connects`);

    // 1. Tunnel throughput.
    if (runs('tunnel')) {
      // socat, a C relay copying through 1 MB buffers with no policy, audit or CONNECT, shows what any relay
      // that copies through user space reaches on this machine. The three alternate, so drift in the machine's
      // load reaches each alike; each keeps its best run.
      const socatPort = await startSocat(source.port, children);
      const contenders: [string, () => Promise<Socket>][] = [
        ['direct', () => connectDirect(source.port)],
        ['tunnel', () => connectTunnel(proxyPort, `bench.test:${source.port}`, auth)],
        ...(socatPort === undefined ? [] : [['socat', () => connectDirect(socatPort)] as [string, () => Promise<Socket>]]),
      ];
      const top = new Map<string, number>();
      for (let round = 0; round < 3; round++) {
        for (const [name, open] of contenders) top.set(name, Math.max(top.get(name) ?? 0, await download(open, bytes)));
      }
      const direct = top.get('direct') as number;
      const tunnelled = top.get('tunnel') as number;
      const relayed = top.get('socat');
      const tunnelRatio = tunnelled / direct;
      const socatText = relayed === undefined ? '' : `; socat relay ${mbps(relayed)} (${((relayed / direct) * 100).toFixed(0)}% of direct)`;
      line('tunnel throughput', `${mbps(direct)} direct, ${mbps(tunnelled)} via CONNECT${socatText}`, tunnelRatio, tunnelRatio >= 0.9, '>= 90% of direct');
      stopReferences(children);
    }

    // 2. Plain-HTTP request rate: direct, Gatehouse, tinyproxy and squid, with a kept-alive client connection and
    // with a new one per request. tinyproxy closes the client connection after each request, so the comparison with
    // it uses a new connection per request for both proxies; squid keeps them, so both compare like for like. All
    // take turns (see requestRates), so that load from elsewhere falls on each alike.
    if (runs('rate')) {
      const gatehouseTarget = { port: proxyPort, path: `http://bench.test:${small.port}/`, headers: { 'proxy-authorization': auth, host: `bench.test:${small.port}` } };
      const directTarget = { port: small.port, path: '/' };
      const viaReference = (port: number) => ({ port, path: `http://127.0.0.1:${small.port}/`, headers: { host: `127.0.0.1:${small.port}` } });
      const tinyproxyPort = await startTinyproxy(dir, children);
      const squidPort = await startSquid(dir, children);
      const rates = await requestRates(
        [
          { name: 'direct', target: directTarget, keepAlive: true },
          { name: 'Gatehouse', target: gatehouseTarget, keepAlive: true },
          { name: 'direct', target: directTarget, keepAlive: false },
          { name: 'Gatehouse', target: gatehouseTarget, keepAlive: false },
          ...(tinyproxyPort === undefined ? [] : [{ name: 'tinyproxy', target: viaReference(tinyproxyPort), keepAlive: false }]),
          ...(squidPort === undefined ? [] : [{ name: 'squid', target: viaReference(squidPort), keepAlive: false }, { name: 'squid', target: viaReference(squidPort), keepAlive: true }]),
        ],
        seconds,
      );
      const rate = (name: string, keepAlive: boolean): Rate | undefined => rates.get(`${name}${keepAlive ? '' : ' fresh'}`);
      const directRate = rate('direct', true)!.perSecond;
      const gatehouseRate = rate('Gatehouse', true)!.perSecond;
      const directFresh = rate('direct', false)!;
      const gatehouseFresh = rate('Gatehouse', false)!;
      const tinyFresh = rate('tinyproxy', false);
      console.log(`  request rate, keep-alive: direct ${Math.round(directRate)}/s, Gatehouse ${Math.round(gatehouseRate)}/s (${((gatehouseRate / directRate) * 100).toFixed(0)}% of direct)`);
      const failures = (rate: Rate): string => (rate.failed > 0 ? ` (${rate.failed} failed)` : '');
      const tinyText = tinyFresh === undefined ? 'n/a' : `${Math.round(tinyFresh.perSecond)}/s, ${tinyFresh.failed} failed`;
      console.log(`  request rate, connection per request: direct ${Math.round(directFresh.perSecond)}/s${failures(directFresh)}, Gatehouse ${Math.round(gatehouseFresh.perSecond)}/s${failures(gatehouseFresh)}, tinyproxy ${tinyText}`);
      const tinyRate = tinyFresh?.perSecond ?? Number.NaN;
      const rateRatio = gatehouseFresh.perSecond / tinyRate;
      line('request rate vs tinyproxy, same client behaviour', `${Math.round(gatehouseFresh.perSecond)}/s vs ${Math.round(tinyRate)}/s`, rateRatio, rateRatio >= 1, '>= 1x tinyproxy');
      // tinyproxy cannot keep a client connection open, so its best is a connection per request.
      const gatehouseBest = Math.max(gatehouseRate, gatehouseFresh.perSecond);
      const bestRatio = gatehouseBest / tinyRate;
      line('request rate vs tinyproxy, each at its best', `${Math.round(gatehouseBest)}/s vs ${Math.round(tinyRate)}/s`, bestRatio, bestRatio >= 1, '>= 1x tinyproxy');
      const squidFresh = rate('squid', false);
      const squidKept = rate('squid', true);
      if (squidFresh !== undefined && squidKept !== undefined) {
        const freshRatio = gatehouseFresh.perSecond / squidFresh.perSecond;
        const keptRatio = gatehouseRate / squidKept.perSecond;
        line('request rate vs squid, connection per request', `${Math.round(gatehouseFresh.perSecond)}/s vs ${Math.round(squidFresh.perSecond)}/s`, freshRatio, freshRatio >= 1, '>= 1x squid');
        line('request rate vs squid, keep-alive', `${Math.round(gatehouseRate)}/s vs ${Math.round(squidKept.perSecond)}/s`, keptRatio, keptRatio >= 1, '>= 1x squid');
      }
      stopReferences(children);
      // The node's index worker catches up with the log every 5 s, beside the proxy on these two cores. The
      // tens of thousands of records the request runs wrote are indexed now, before the next part is timed.
      if (runs('connect') || runs('inspected')) await new Promise((resolve) => setTimeout(resolve, INDEX_CATCH_UP_MS));
    }

    // 3. Added connect latency (connect + one echoed byte).
    if (runs('connect')) {
      const directTimes = await timeConnects(connects, () => connectDirect(echo.port));
      const proxiedTimes = await timeConnects(connects, () => connectTunnel(proxyPort, `bench.test:${echo.port}`, auth));
      const added50 = percentile(proxiedTimes, 0.5) - percentile(directTimes, 0.5);
      const added99 = percentile(proxiedTimes, 0.99) - percentile(directTimes, 0.99);
      console.log(`  connect: direct p50 ${ms(percentile(directTimes, 0.5))} p99 ${ms(percentile(directTimes, 0.99))}; via proxy p50 ${ms(percentile(proxiedTimes, 0.5))} p99 ${ms(percentile(proxiedTimes, 0.99))}`);
      line('added connect latency', `p50 +${ms(added50)}, p99 +${ms(added99)}`, undefined, added50 <= 1, 'added p50 <= 1 ms');
    }

    // 4. Inspected HTTPS throughput.
    if (runs('inspected')) {
      // Alternating, as the tunnel's contenders do; each keeps its best of three.
      let directTls = 0;
      let inspected = 0;
      for (let round = 0; round < 3; round++) {
        directTls = Math.max(directTls, await httpsDownload({ port: secure.port, ca: publicCa.certificatePem }, bytes));
        inspected = Math.max(inspected, await httpsDownload({ port: secure.port, ca: proxyCaPem, proxy: { port: proxyPort, auth } }, bytes));
      }
      const inspectedRatio = inspected / directTls;
      line('inspected throughput', `${mbps(directTls)} direct TLS, ${mbps(inspected)} inspected`, inspectedRatio, inspectedRatio >= 0.5, '>= 50% of direct');
    }
  } finally {
    for (const child of children) child.kill('SIGTERM');
    for (const server of servers) server.close();
    rmSync(dir, { recursive: true, force: true });
  }
}

/**
 * Stops the reference programs a part started (socat, tinyproxy, squid), so that idle as they are, they take
 * nothing from the parts after it. The proxy, started first, stays.
 */
function stopReferences(children: ChildProcess[]): void {
  for (const child of children.splice(1)) child.kill('SIGTERM');
}

function line(name: string, figures: string, ratio: number | undefined, ok: boolean, target: string): void {
  const ratioText = ratio === undefined ? '' : ` ratio ${Number.isNaN(ratio) ? 'n/a' : ratio.toFixed(2)}`;
  console.log(`  ${name}: ${figures};${ratioText} [target ${target}: ${ok ? 'met' : 'MISSED'}]`);
}

const mbps = (bytesPerSecond: number): string => `${(bytesPerSecond / 1048576).toFixed(0)} MB/s`;
const ms = (value: number): string => `${value.toFixed(3)} ms`;

function percentile(values: number[], p: number): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.floor(p * sorted.length))] ?? Number.NaN;
}

function sendBytes(stream: NodeJS.WritableStream & { on(event: 'error', listener: () => void): unknown }, total: number, chunk: Buffer): void {
  let sent = 0;
  stream.on('error', () => undefined);
  const pump = (): void => {
    while (sent < total) {
      const piece = total - sent >= chunk.length ? chunk : chunk.subarray(0, total - sent);
      sent += piece.length;
      if (!stream.write(piece)) {
        stream.once('drain', pump);
        return;
      }
    }
    stream.end();
  };
  pump();
}

async function listen<T extends { listen(port: number, host: string, cb: () => void): unknown; address(): unknown; close(): unknown }>(server: T): Promise<{ server: T; port: number }> {
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return { server, port: (server.address() as AddressInfo).port };
}

function connectDirect(port: number): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const socket = connect({ port, host: '127.0.0.1', noDelay: true }, () => resolve(socket));
    socket.once('error', reject);
  });
}

function connectTunnel(proxyPort: number, target: string, auth: string): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const socket = connect({ port: proxyPort, host: '127.0.0.1', noDelay: true }, () => {
      socket.write(`CONNECT ${target} HTTP/1.1\r\nHost: ${target}\r\nProxy-Authorization: ${auth}\r\n\r\n`);
    });
    socket.once('error', reject);
    socket.once('data', (chunk: Buffer) => {
      const text = chunk.toString('latin1');
      const end = text.indexOf('\r\n\r\n');
      if (!text.startsWith('HTTP/1.1 200') || end < 0) return reject(new Error(`CONNECT failed: ${text.split('\r\n')[0]}`));
      socket.pause();
      if (chunk.length > end + 4) socket.unshift(chunk.subarray(end + 4));
      resolve(socket);
    });
  });
}

/** Asks the byte source for `bytes` and returns bytes per second. */
async function download(open: () => Promise<Socket>, bytes: number): Promise<number> {
  const started = process.hrtime.bigint();
  const socket = await open();
  let received = 0;
  await new Promise<void>((resolve, reject) => {
    socket.on('data', (data: Buffer) => (received += data.length));
    socket.once('end', resolve);
    socket.once('error', reject);
    socket.resume();
    socket.write('go\n');
  });
  socket.destroy();
  if (received !== bytes) throw new Error(`received ${received} of ${bytes} bytes`);
  return bytes / (Number(process.hrtime.bigint() - started) / 1e9);
}

async function timeConnects(count: number, open: () => Promise<Socket>): Promise<number[]> {
  const times: number[] = [];
  for (let i = 0; i < count; i++) {
    const started = process.hrtime.bigint();
    const socket = await open();
    await new Promise<void>((resolve) => {
      socket.once('data', () => resolve());
      socket.resume();
      // A first byte the proxy judges at once: a letter could begin an HTTP method, and the proxy would wait
      // for the rest of the request line before sending anything on (see first-bytes.ts).
      socket.write('\0');
    });
    times.push(Number(process.hrtime.bigint() - started) / 1e6);
    socket.destroy();
  }
  return times;
}

/** Longer than the node's index interval (audit/index.ts, 5 s), plus the time to index a request run's records. */
const INDEX_CATCH_UP_MS = 7_000;

/** Concurrent clients for the request-rate runs. */
const CLIENTS = 8;

interface Rate {
  perSecond: number;
  failed: number;
}

/**
 * Small GETs from CLIENTS concurrent clients for `seconds`: completed requests per second, and how many failed.
 * Without keep-alive each request really has a connection of its own: an agent with a finite maxSockets
 * would mark requests keep-alive and hand a freed socket to a queued request, and a proxy that closes after
 * one response (tinyproxy) then resets the second request, which reached it before its close.
 */
async function requestRate(name: string, target: { port: number; path: string; headers?: Record<string, string> }, seconds: number, keepAlive = true): Promise<Rate> {
  const agent = keepAlive ? new HttpAgent({ keepAlive, maxSockets: CLIENTS }) : new HttpAgent({ keepAlive: false });
  const deadline = Date.now() + seconds * 1000;
  let done = 0;
  let failed = 0;
  let firstError: string | undefined;
  const worker = async (): Promise<void> => {
    while (Date.now() < deadline) {
      const ok = await new Promise<boolean>((resolve) => {
        const request = httpRequest({ host: '127.0.0.1', port: target.port, path: target.path, headers: target.headers ?? {}, agent }, (response) => {
          response.resume();
          if (response.statusCode !== 200) firstError ??= `HTTP ${response.statusCode}`;
          response.once('end', () => resolve(response.statusCode === 200));
        });
        request.once('error', (error: NodeJS.ErrnoException) => {
          firstError ??= error.code ?? error.message;
          resolve(false);
        });
        request.end();
      });
      if (ok) done += 1;
      else failed += 1;
    }
  };
  const started = Date.now();
  await Promise.all(Array.from({ length: CLIENTS }, worker));
  agent.destroy();
  if (failed > 0) console.log(`  (warning: ${failed} of ${failed + done} requests failed for ${name}, first: ${firstError})`);
  return { perSecond: done / ((Date.now() - started) / 1000), failed };
}

/** Turns for request rates: each contender runs `seconds / ROUNDS` at a time, ROUNDS times over, in order. */
const RATE_ROUNDS = 3;

/**
 * The request rate of each contender, measured in turns: a third of the time each, three times over. One after
 * the other, a contender measured while something else loaded the machine came out slower than the one after it.
 * Keyed by name, plus " fresh" for a new connection per request.
 */
async function requestRates(contenders: { name: string; target: Parameters<typeof requestRate>[1]; keepAlive: boolean }[], seconds: number): Promise<Map<string, Rate>> {
  const totals = new Map<string, { perSecond: number; failed: number }>();
  for (let round = 0; round < RATE_ROUNDS; round++) {
    for (const { name, target, keepAlive } of contenders) {
      const key = `${name}${keepAlive ? '' : ' fresh'}`;
      const { perSecond, failed } = await requestRate(key, target, seconds / RATE_ROUNDS, keepAlive);
      const total = totals.get(key) ?? { perSecond: 0, failed: 0 };
      totals.set(key, { perSecond: total.perSecond + perSecond / RATE_ROUNDS, failed: total.failed + failed });
    }
  }
  return totals;
}

async function httpsDownload(options: { port: number; ca: string; proxy?: { port: number; auth: string } }, bytes: number): Promise<number> {
  const started = process.hrtime.bigint();
  const socket = options.proxy ? await connectTunnel(options.proxy.port, `secure.test:${options.port}`, options.proxy.auth) : await connectDirect(options.port);
  const tls = tlsConnect({ socket, servername: 'secure.test', ca: options.ca });
  await new Promise<void>((resolve, reject) => {
    tls.once('secureConnect', resolve);
    tls.once('error', reject);
  });
  const received = await new Promise<number>((resolve, reject) => {
    const request = httpsRequest({ host: 'secure.test', port: options.port, path: '/', createConnection: () => tls }, (response) => {
      if (response.statusCode !== 200) {
        reject(new Error(`HTTPS download answered ${response.statusCode} ${String(response.headers['x-gatehouse-reason'] ?? '')}`));
        return;
      }
      let count = 0;
      response.on('data', (data: Buffer) => (count += data.length));
      response.once('end', () => resolve(count));
    });
    request.once('error', reject);
    request.end();
  });
  tls.destroy();
  if (received !== bytes) throw new Error(`received ${received} of ${bytes} bytes over TLS`);
  return bytes / (Number(process.hrtime.bigint() - started) / 1e9);
}

function startChild(command: string, argv: string[], env: Record<string, string>, children: ChildProcess[]): Promise<{ port: number }> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, argv, { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'inherit'] });
    children.push(child);
    let out = '';
    child.stdout?.on('data', (data: Buffer) => {
      out += data.toString();
      const newline = out.indexOf('\n');
      if (newline >= 0) resolve(JSON.parse(out.slice(0, newline)) as { port: number });
    });
    child.once('exit', (code) => reject(new Error(`proxy process exited (${code})`)));
  });
}

/** Whether a Debian package's program is here, installing the package with apt-get if it is missing. */
function ensureProgram(path: string, debianPackage: string): boolean {
  if (existsSync(path)) return true;
  console.log(`  installing ${debianPackage} (apt-get install -y ${debianPackage}) ...`);
  spawnSync('sh', ['-c', `flock /tmp/gatehouse-apt.lock apt-get install -y ${debianPackage} >/dev/null 2>&1`], { stdio: 'inherit', timeout: 120_000 });
  if (existsSync(path)) return true;
  console.log(`  ${debianPackage} is not available; its comparison is skipped`);
  return false;
}

function freePort(): Promise<number> {
  return new Promise<number>((resolve) => {
    const probe = createNetServer().listen(0, '127.0.0.1', () => {
      const { port: free } = probe.address() as AddressInfo;
      probe.close(() => resolve(free));
    });
  });
}

/** Waits until something accepts connections on a loopback port; false after 5 s. */
async function accepting(port: number): Promise<boolean> {
  for (let i = 0; i < 50; i++) {
    const up = await new Promise<boolean>((resolve) => {
      const socket = connect(port, '127.0.0.1', () => {
        socket.destroy();
        resolve(true);
      });
      socket.once('error', () => resolve(false));
    });
    if (up) return true;
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  return false;
}

/** Starts socat relaying a loopback port to `target` through 1 MB buffers; undefined if unavailable. */
async function startSocat(target: number, children: ChildProcess[]): Promise<number | undefined> {
  if (!ensureProgram('/usr/bin/socat', 'socat')) return undefined;
  const port = await freePort();
  const child = spawn('/usr/bin/socat', ['-b', String(1024 * 1024), `TCP-LISTEN:${port},bind=127.0.0.1,reuseaddr,fork`, `TCP:127.0.0.1:${target}`], { stdio: 'ignore' });
  children.push(child);
  if (await accepting(port)) return port;
  console.log('  socat did not start; its comparison is skipped');
  return undefined;
}

/**
 * Starts squid (installing it with apt-get if missing) as a forward proxy allowing only 127.0.0.1, with no
 * cache and no access log (as tinyproxy runs here); undefined if unavailable.
 */
async function startSquid(dir: string, children: ChildProcess[]): Promise<number | undefined> {
  if (!ensureProgram('/usr/sbin/squid', 'squid')) return undefined;
  const port = await freePort();
  const config = join(dir, 'squid.conf');
  writeFileSync(
    config,
    [
      `http_port 127.0.0.1:${port}`,
      'acl target dst 127.0.0.1',
      'acl clients src 127.0.0.1',
      'http_access allow clients target',
      'http_access deny all',
      'cache deny all',
      'cache_mem 0 MB',
      'access_log none',
      'cache_log /dev/null',
      'pid_filename none',
      'coredump_dir none',
      'via off',
      'forwarded_for delete',
      'shutdown_lifetime 0 seconds',
      // As root squid drops to a user of its own, as it would in production.
      ...(process.getuid?.() === 0 ? ['cache_effective_user proxy'] : []),
      '',
    ].join('\n'),
  );
  const child = spawn('/usr/sbin/squid', ['-N', '-f', config], { stdio: 'ignore' });
  children.push(child);
  if (await accepting(port)) return port;
  console.log('  squid did not start; its comparison is skipped');
  return undefined;
}

/** Starts tinyproxy (installing it with apt-get if missing) allowing only 127.0.0.1; undefined if unavailable. */
async function startTinyproxy(dir: string, children: ChildProcess[]): Promise<number | undefined> {
  if (!ensureProgram('/usr/bin/tinyproxy', 'tinyproxy')) return undefined;
  const port = await freePort();
  const filter = join(dir, 'tinyproxy.filter');
  writeFileSync(filter, '^127\\.0\\.0\\.1$\n');
  const config = join(dir, 'tinyproxy.conf');
  // As an operator would run it for this job (tinyproxy.conf(5)): a one-host allowlist (an ERE filter, deny by
  // default), clients from loopback only, room for far more clients than the bench opens, and logging only
  // what is critical, so it spends nothing on a per-request log line that Gatehouse's audit record matches.
  writeFileSync(
    config,
    [`Port ${port}`, 'Listen 127.0.0.1', 'Timeout 60', 'MaxClients 256', 'Allow 127.0.0.1', `Filter "${filter}"`, 'FilterDefaultDeny Yes', 'FilterType ere', 'LogLevel Critical', `PidFile "${join(dir, 'tinyproxy.pid')}"`, 'DisableViaHeader Yes', ''].join('\n'),
  );
  const child = spawn('/usr/bin/tinyproxy', ['-d', '-c', config], { stdio: 'ignore' });
  children.push(child);
  if (await accepting(port)) return port;
  console.log('  tinyproxy did not start; its comparison is skipped');
  return undefined;
}

if (args[0] === '--child-proxy') await runProxyChild();
else await main();
