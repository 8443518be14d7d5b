/**
 * bench/policy: decision cost per surface at 10, 1,000 and 10,000 rules, indexed (`decide`) against a naive
 * linear scan of the same rules (`decideLinear`, the same per-rule check applied to every rule), measured in
 * the same run. Targets (DESIGN.md): at 10,000 rules ≥ 10× faster than the scan, and p50 ≤ 2 µs.
 *
 *   node dist/bench/policy.js [--sizes 10,1000,10000] [--seconds 0.3]
 */
import { policySchema, type PolicyDocument } from '../src/config/policy-schema.js';
import { compilePolicy } from '../src/policy/compile.js';
import type { DecisionRequest } from '../src/policy/types.js';

type Surface = 'network' | 'filesystem' | 'mcp' | 'credentials';

function argument(name: string, fallback: string): string {
  const index = process.argv.indexOf(`--${name}`);
  return index >= 0 ? (process.argv[index + 1] ?? fallback) : fallback;
}

const sizes = argument('sizes', '10,1000,10000').split(',').map(Number);
const seconds = Number(argument('seconds', '0.3'));

let seed = 7;
function random(n: number): number {
  seed = (seed * 1103515245 + 12345) & 0x7fffffff;
  return seed % n;
}

/** A policy of `n` rules on one surface, shaped like real ones, and requests that hit and miss it. */
function workload(surface: Surface, n: number): { document: PolicyDocument; requests: DecisionRequest[] } {
  const rules: Record<string, unknown>[] = [];
  const requests: DecisionRequest[] = [];
  for (let i = 0; i < n; i += 1) {
    const id = `${surface}-${i}`;
    const deny = i % 10 === 9;
    switch (surface) {
      case 'network': {
        const kind = i % 4;
        const target = kind === 0 ? `svc${i}.team${i % 50}.example.com` : kind === 1 ? `*.zone${i}.example.net` : kind === 2 ? `**.corp${i}.example.org` : `10.${(i >> 8) & 255}.${i & 255}.0/24`;
        rules.push({ id, [deny ? 'deny' : 'allow']: [target], ports: [443, '8000-8100'], ...(i % 7 === 0 ? { agents: ['ci-bot'] } : {}) });
        break;
      }
      case 'filesystem':
        rules.push(deny ? { id, deny: { paths: [`/srv/project${i}/secrets`] } } : { id, allow: { paths: [`/srv/project${i}`], access: i % 2 ? 'rw' : 'ro' } });
        break;
      case 'mcp':
        rules.push({
          id,
          [deny ? 'deny' : 'allow']: { server: `server${i % 100}`, tools: [`tool${i}`, `tool${i}_*`] },
          ...(i % 10 === 3 ? { when: `has(args.owner) && args.owner == 'org${i % 5}'` } : {}),
        });
        break;
      case 'credentials':
        rules.push({ id, secret: `secret${i}`, hosts: [`api${i}.example.com`] });
        break;
    }
  }
  for (let k = 0; k < 4096; k += 1) {
    const i = random(Math.max(n, 1));
    const miss = random(4) === 0;
    switch (surface) {
      case 'network': {
        const kind = i % 4;
        const host = miss ? `unknown${k}.example.io` : kind === 0 ? `svc${i}.team${i % 50}.example.com` : kind === 1 ? `api.zone${i}.example.net` : kind === 2 ? `a.b.corp${i}.example.org` : `10.${(i >> 8) & 255}.${i & 255}.${random(250) + 1}`;
        requests.push({ surface: 'network', agent: random(2) ? 'dev' : 'ci-bot', host, port: 443 });
        break;
      }
      case 'filesystem':
        requests.push({ surface: 'filesystem', agent: 'dev', path: miss ? `/home/dev/file${k}` : `/srv/project${i}/src/module${k % 20}/index.ts`, access: random(2) ? 'read' : 'write' });
        break;
      case 'mcp':
        requests.push({ surface: 'mcp', agent: 'dev', server: `server${i % 100}`, tool: miss ? `other${k}` : `tool${i}`, args: { owner: `org${random(5)}` }, annotations: { readOnlyHint: true } });
        break;
      case 'credentials':
        requests.push({ surface: 'credentials', agent: 'dev', secret: `secret${i}`, host: miss ? 'evil.example' : `api${i}.example.com` });
        break;
    }
  }
  return { document: policySchema.parse({ [surface]: rules }) as PolicyDocument, requests };
}

interface Measure {
  p50: number;
  p99: number;
  mean: number;
}

/** Per-call latency distribution (hrtime around each call) and the bulk mean, over `seconds`. */
function measure(decide: (request: DecisionRequest) => unknown, requests: DecisionRequest[], budget: number): Measure {
  for (let i = 0; i < 2000; i += 1) decide(requests[i % requests.length]!); // warm up the JIT
  const samples: number[] = [];
  const deadline = performance.now() + budget * 500;
  let i = 0;
  while (performance.now() < deadline && samples.length < 200_000) {
    const request = requests[i++ % requests.length]!;
    const start = process.hrtime.bigint();
    decide(request);
    samples.push(Number(process.hrtime.bigint() - start));
  }
  samples.sort((a, b) => a - b);
  let calls = 0;
  const bulkStart = performance.now();
  const bulkDeadline = bulkStart + budget * 500;
  while (performance.now() < bulkDeadline) {
    for (let j = 0; j < 256; j += 1) decide(requests[(calls + j) % requests.length]!);
    calls += 256;
  }
  const mean = ((performance.now() - bulkStart) * 1e6) / calls;
  return { p50: samples[Math.floor(samples.length * 0.5)]!, p99: samples[Math.floor(samples.length * 0.99)]!, mean };
}

const fmt = (ns: number): string => (ns >= 10_000 ? `${(ns / 1000).toFixed(0)} µs` : ns >= 1000 ? `${(ns / 1000).toFixed(2)} µs` : `${ns.toFixed(0)} ns`);

console.log(`bench/policy — ns per decision; indexed = compiled indexes, linear = every rule checked in order (same run)`);
console.log(`node ${process.version}, ${seconds}s per measurement\n`);
console.log(['surface'.padEnd(12), 'rules'.padStart(6), 'p50'.padStart(10), 'p99'.padStart(10), 'mean'.padStart(10), 'linear mean'.padStart(12), 'speed-up'.padStart(9)].join(' '));
const verdicts: string[] = [];
for (const surface of ['network', 'filesystem', 'mcp', 'credentials'] as const) {
  for (const size of sizes) {
    const { document, requests } = workload(surface, size);
    // Kept network decisions off: this times the indexes, and the workload repeats its 4,096 requests.
    const engine = compilePolicy(document, { resolveSymlinks: false, home: '/home/dev', workspace: '/srv', keepNetworkDecisions: false });
    const indexed = measure((r) => engine.decide(r), requests, seconds);
    const linear = measure((r) => engine.decideLinear(r), requests, seconds);
    const ratio = linear.mean / indexed.mean;
    console.log([surface.padEnd(12), String(size).padStart(6), fmt(indexed.p50).padStart(10), fmt(indexed.p99).padStart(10), fmt(indexed.mean).padStart(10), fmt(linear.mean).padStart(12), `${ratio.toFixed(1)}×`.padStart(9)].join(' '));
    if (size === 10_000) {
      const ok = ratio >= 10 && indexed.p50 <= 2000;
      verdicts.push(`${ok ? 'meets' : 'MISSES'} target at 10,000 ${surface} rules: ${ratio.toFixed(1)}× the linear scan (≥ 10×), p50 ${fmt(indexed.p50)} (≤ 2 µs)`);
    }
  }
}
console.log('');
for (const line of verdicts) console.log(line);
