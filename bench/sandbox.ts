/**
 * bench/sandbox: what the sandbox costs, against baselines measured in the same run.
 *
 *   start-up:   `gatehouse run -- true`  vs  bare `bwrap (same namespaces) true`  vs  `node -e 0`
 *               target: gatehouse run ≤ 3× node -e 0
 *   throughput: a download through the bridge (sandbox → 127.0.0.1:3128 → mux → proxy socket)
 *               vs the same download straight through the proxy socket from the host
 *
 *   node dist/bench/sandbox.js [--runs 15] [--megabytes 64]
 */
import { spawn, spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer as createHttpServer } from 'node:http';
import { connect, createServer as createNetServer, type AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { launchBubblewrap } from '../src/sandbox/bubblewrap.js';

const argument = (name: string, fallback: number): number => {
  const index = process.argv.indexOf(`--${name}`);
  return index >= 0 ? Number(process.argv[index + 1]) : fallback;
};
const RUNS = argument('runs', 15);
const MEGABYTES = argument('megabytes', 64);
const main = fileURLToPath(new URL('../src/cli/main.js', import.meta.url));

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)]!;
}

/** Median wall time of a command over RUNS runs (after one warm-up), in milliseconds; `best` is the fastest. */
const best = new Map<string, number>();
function time(command: string, args: string[], env: NodeJS.ProcessEnv = process.env, cwd = process.cwd()): number {
  const samples: number[] = [];
  for (let run = 0; run <= RUNS; run++) {
    const started = process.hrtime.bigint();
    const result = spawnSync(command, args, { env, cwd, stdio: ['ignore', 'ignore', 'pipe'], encoding: 'utf8' });
    const elapsed = Number(process.hrtime.bigint() - started) / 1e6;
    if (result.status !== 0) throw new Error(`${command} ${args.join(' ')} failed: ${result.stderr}`);
    if (run > 0) samples.push(elapsed);
  }
  best.set([command, ...args].join(' '), Math.min(...samples));
  return median(samples);
}

function startup(): void {
  const dir = mkdtempSync(join(tmpdir(), 'gh-bench-sandbox-'));
  try {
    // The config lives in the data dir: `gatehouse run` refuses one inside the writable workspace.
    mkdirSync(join(dir, 'data'), { mode: 0o700 });
    writeFileSync(join(dir, 'data', 'gatehouse.yaml'), 'version: 1\npolicy:\n  filesystem:\n    - id: workspace\n      allow: { paths: ["./"], access: rw }\n');
    const env = { ...process.env, GATEHOUSE_HOME: join(dir, 'data') };
    const node = time(process.execPath, ['-e', '0']);
    const bwrap = time('bwrap', ['--unshare-user', '--unshare-pid', '--unshare-net', '--unshare-ipc', '--unshare-uts', '--die-with-parent', '--new-session', '--ro-bind', '/', '/', '--proc', '/proc', '--dev', '/dev', 'true']);
    const run = time(process.execPath, [main, 'run', '--', 'true'], env, dir);
    const dryRun = time(process.execPath, [main, 'run', '--dry-run', '--', 'true'], env, dir);
    console.log(`start-up (median of ${RUNS})`);
    console.log(`  node -e 0                 ${node.toFixed(1)} ms`);
    console.log(`  bwrap ... true            ${bwrap.toFixed(1)} ms`);
    console.log(`  gatehouse run --dry-run   ${dryRun.toFixed(1)} ms   (CLI, config and policy only)`);
    console.log(`  gatehouse run -- true     ${run.toFixed(1)} ms   = ${(run / node).toFixed(2)}× node -e 0 (target ≤ 3×), +${(run - bwrap).toFixed(1)} ms over bare bwrap`);
    const fastest = (args: string[]) => best.get([process.execPath, ...args].join(' '))!;
    console.log(`  fastest runs: gatehouse run -- true ${fastest([main, 'run', '--', 'true']).toFixed(1)} ms vs node -e 0 ${fastest(['-e', '0']).toFixed(1)} ms = ${(fastest([main, 'run', '--', 'true']) / fastest(['-e', '0'])).toFixed(2)}×`);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/** A client that CONNECTs through a proxy and reads `bytes` of a download; prints MB/s. Runs inside and out. */
const CLIENT = `
const net = require('node:net');
const [target, host, port, bytes] = [process.argv[1], process.argv[2], Number(process.argv[3]), Number(process.argv[4])];
const socket = target.startsWith('/') ? net.connect(target) : net.connect(Number(target), '127.0.0.1');
let stage = 0, received = 0, started = 0, head = '';
socket.write('CONNECT ' + host + ':' + port + ' HTTP/1.1\\r\\nhost: ' + host + ':' + port + '\\r\\n\\r\\n');
socket.on('data', (chunk) => {
  if (stage === 0) {
    head += chunk.toString('latin1');
    if (!head.includes('\\r\\n\\r\\n')) return;
    stage = 1; started = process.hrtime.bigint();
    socket.write('GET /blob HTTP/1.1\\r\\nhost: x\\r\\nconnection: close\\r\\n\\r\\n');
    return;
  }
  received += chunk.length;
  if (received >= bytes) {
    const seconds = Number(process.hrtime.bigint() - started) / 1e9;
    console.log((received / 1e6 / seconds).toFixed(1));
    process.exit(0);
  }
});
setTimeout(() => { console.error('timed out'); process.exit(1); }, 30000).unref();
`;

async function throughput(): Promise<void> {
  const blob = Buffer.alloc(MEGABYTES * 1024 * 1024, 7);
  const origin = createHttpServer((_, response) => {
    response.writeHead(200, { 'content-length': blob.length });
    response.end(blob);
  });
  await new Promise<void>((resolve) => origin.listen(0, '127.0.0.1', resolve));
  const originPort = (origin.address() as AddressInfo).port;
  const dir = mkdtempSync(join(tmpdir(), 'gh-bench-proxy-'));
  const socketPath = join(dir, 'session.sock');
  // A minimal CONNECT proxy on a Unix socket (the shape of the egress proxy's session socket).
  const proxy = createNetServer((client) => {
    client.once('data', (request: Buffer) => {
      const match = /^CONNECT [^:]+:(\d+) /.exec(request.toString('latin1'));
      if (!match) return client.destroy();
      const upstream = connect(Number(match[1]), '127.0.0.1', () => {
        client.write('HTTP/1.1 200 Connection Established\r\n\r\n');
        client.pipe(upstream).pipe(client);
      });
      upstream.on('error', () => client.destroy());
      client.on('error', () => upstream.destroy());
    });
  });
  await new Promise<void>((resolve) => proxy.listen(socketPath, resolve));
  try {
    const args = (target: string) => ['-e', CLIENT, target, 'origin.test', String(originPort), String(blob.length)];
    const directRates: number[] = [];
    const bridgeRates: number[] = [];
    for (let round = 0; round < 3; round++) {
      directRates.push(Number(await output(process.execPath, args(socketPath))));
      const sandbox = await launchBubblewrap({
        command: [process.execPath, ...args('3128')],
        view: { allow: [], deny: [], unmountable: [] },
        home: dir,
        cwd: dir,
        stdio: 'pipe',
        proxySocket: socketPath,
      });
      let text = '';
      sandbox.stdout!.on('data', (chunk: Buffer) => (text += chunk.toString()));
      // The exit can be reported before the last of the output is read: wait for the pipe's end too.
      const drained = new Promise((resolve) => sandbox.stdout!.once('close', resolve));
      sandbox.stdin!.end();
      await Promise.all([sandbox.exited, drained]);
      bridgeRates.push(Number(text.trim()));
    }
    const direct = median(directRates);
    const bridged = median(bridgeRates);
    console.log(`throughput (${MEGABYTES} MiB download through a CONNECT tunnel, median of 3)`);
    console.log(`  host → proxy socket                 ${direct.toFixed(0)} MB/s`);
    console.log(`  sandbox → bridge → mux → proxy      ${bridged.toFixed(0)} MB/s   = ${((bridged / direct) * 100).toFixed(0)}% of direct`);
  } finally {
    proxy.close();
    origin.close();
    rmSync(dir, { recursive: true, force: true });
  }
}

function output(command: string, args: string[]): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, { stdio: ['ignore', 'pipe', 'inherit'] });
    let text = '';
    child.stdout.on('data', (chunk: Buffer) => (text += chunk.toString()));
    child.on('close', (code) => (code === 0 ? resolve(text.trim()) : reject(new Error(`${command} exited ${code}`))));
  });
}

startup();
await throughput();
