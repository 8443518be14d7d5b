/**
 * Secret-scan throughput. Inputs: a 10 KB JSON tool result and ~1 MB of real source code (this repo's
 * dependencies), each clean and with secrets sprinkled in. Baseline, in the same run: every rule's regex
 * run separately (global flag) over the same input, the way a naive scanner does it.
 *
 *   node dist/bench/dlp.js [--mb 1] [--seconds 0.5]
 */
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createScanner, RULES } from '../src/dlp/index.js';
import { SAMPLES, seededRandom } from '../src/dlp/samples.js';
import { PlaceholderRegistry } from '../src/secrets/index.js';

const args = process.argv.slice(2);
const option = (name: string, fallback: number): number => {
  const at = args.indexOf(`--${name}`);
  return at >= 0 ? Number(args[at + 1]) : fallback;
};
const targetBytes = Math.round(option('mb', 1) * 1024 * 1024);
const seconds = option('seconds', 0.5);

const random = seededRandom(1);
const scanner = createScanner();
const separate = RULES.map((rule) => new RegExp(rule.pattern, `g${rule.flags ?? ''}`));

function sourceCode(bytes: number): string {
  const modules = fileURLToPath(new URL('../../node_modules/', import.meta.url));
  const roots = ['zod', 'yaml', 'commander', 'pino', 'jose', 'tldts'].map((name) => join(modules, name));
  const parts: string[] = [];
  let size = 0;
  const walk = (dir: string): void => {
    for (const name of readdirSync(dir).sort()) {
      if (size >= bytes) return;
      const path = join(dir, name);
      if (statSync(path).isDirectory()) {
        // Test suites are left out: zod's string tests hold 1,387 zero-width characters (measured separately).
        if (name !== 'node_modules' && name !== 'tests') walk(path);
      } else if (/\.(js|cjs|mjs|ts|md)$/.test(name)) {
        const text = readFileSync(path, 'utf8');
        parts.push(text);
        size += text.length;
      }
    }
  };
  for (const root of roots) walk(root);
  // Round-trip through a Buffer so the input is a flat string, like a decoded request body.
  return Buffer.from(parts.join('\n').slice(0, bytes)).toString();
}

function toolResult(bytes: number): string {
  const rows: unknown[] = [];
  let i = 0;
  while (JSON.stringify(rows).length < bytes) {
    rows.push({ id: i, name: `item-${i}`, path: `/srv/app/src/module${i}/index.ts`, updated: '2026-11-24T05:00:00Z', sha: 'f'.repeat(40), ok: i % 3 === 0 });
    i++;
  }
  return JSON.stringify({ jsonrpc: '2.0', id: 7, result: { content: [{ type: 'text', text: JSON.stringify(rows, null, 1) }] } });
}

/** Puts `count` secrets from different rules at spread-out line breaks. */
function withSecrets(text: string, count: number): string {
  const lines = text.split('\n');
  for (let i = 0; i < count; i++) {
    const rule = RULES[i % RULES.length]!;
    const at = Math.floor(((i + 1) * lines.length) / (count + 1));
    lines.splice(at, 0, `const leaked${i} = ${JSON.stringify(SAMPLES[rule.id]!(random))};`);
  }
  return lines.join('\n');
}

function measure(run: () => void): number {
  // Warm up (let the JIT settle), then time whole iterations for about `seconds`.
  const warm = process.hrtime.bigint();
  while (Number(process.hrtime.bigint() - warm) / 1e9 < seconds / 2) run();
  let iterations = 0;
  const start = process.hrtime.bigint();
  let elapsed = 0;
  do {
    run();
    iterations++;
    elapsed = Number(process.hrtime.bigint() - start) / 1e9;
  } while (elapsed < seconds);
  return elapsed / iterations;
}

function baseline(text: string): number {
  let found = 0;
  for (const regex of separate) {
    regex.lastIndex = 0;
    while (regex.exec(text) !== null) found++;
  }
  return found;
}

const code = sourceCode(targetBytes);
const json = toolResult(10 * 1024);
const inputs: [string, string][] = [
  ['10 KB JSON tool result, clean', json],
  ['10 KB JSON tool result, 3 secrets', withSecrets(json, 3)],
  [`${(code.length / 1e6).toFixed(1)} MB source code, clean`, code],
  [`${(code.length / 1e6).toFixed(1)} MB source code, ${RULES.length} secrets`, withSecrets(code, RULES.length)],
  // Worst case: many invisible characters make the scanner look again with them removed.
  [`${(code.length / 1e6).toFixed(1)} MB source, 1000 zero-width chars`, sprinkle(code, '\u200b', 1000)],
];

function sprinkle(text: string, char: string, count: number): string {
  const step = Math.floor(text.length / count);
  const parts: string[] = [];
  for (let i = 0; i < count; i++) parts.push(text.slice(i * step, (i + 1) * step), char);
  parts.push(text.slice(count * step));
  return parts.join('');
}

console.log(`dlp bench: ${RULES.length} rules, one pass vs each rule's regex separately (node ${process.version})`);
console.log('input'.padEnd(44) + 'scanner MB/s'.padStart(14) + 'per call'.padStart(12) + 'regex MB/s'.padStart(12) + 'ratio'.padStart(8) + 'findings'.padStart(10));
for (const [name, text] of inputs) {
  const findings = scanner.scan(text).length;
  const ours = measure(() => scanner.scan(text));
  const theirs = measure(() => baseline(text));
  const mb = text.length / 1e6;
  const perCall = ours < 1e-3 ? `${(ours * 1e6).toFixed(1)} µs` : `${(ours * 1e3).toFixed(2)} ms`;
  console.log(
    name.padEnd(44) +
      (mb / ours).toFixed(0).padStart(14) +
      perCall.padStart(12) +
      (mb / theirs).toFixed(0).padStart(12) +
      `${(theirs / ours).toFixed(1)}x`.padStart(8) +
      String(findings).padStart(10),
  );
}
const parsed = JSON.parse(json) as unknown;
const jsonTime = measure(() => scanner.scanJson(parsed));
console.log(`scanJson over the parsed 10 KB result: ${(jsonTime * 1e6).toFixed(1)} µs per call`);
const chunks = Array.from({ length: Math.ceil(code.length / 16384) }, (_, i) => Buffer.from(code.slice(i * 16384, (i + 1) * 16384), 'latin1'));
const streamTime = measure(() => {
  const stream = scanner.stream({ redact: true });
  for (const chunk of chunks) stream.push(chunk);
  stream.end();
});
console.log(`stream (16 KB chunks, redacting) over the clean source: ${(code.length / 1e6 / streamTime).toFixed(0)} MB/s`);

// Placeholders: is any live placeholder of any session in a 1 MB body? Baseline: indexOf for each one.
const registry = new PlaceholderRegistry();
const live: string[] = [];
for (let session = 0; session < 200; session++) {
  for (const ruleId of ['github-pat', 'openai-api-key', 'slack-bot-token', 'npm-token', 'aws-access-key-id']) {
    const grant = { ruleId, secret: ruleId, hosts: ['api.example.com'], servers: [] };
    live.push(registry.issue(`s${session}`, grant, SAMPLES[ruleId]!(random)).value);
  }
}
const body = Buffer.from(code);
const oursPh = measure(() => registry.containsAny(body));
const naivePh = measure(() => live.some((value) => body.includes(value)));
console.log(
  `placeholder check over ${(body.length / 1e6).toFixed(1)} MB with ${live.length} live placeholders: ` +
    `${(body.length / 1e6 / oursPh).toFixed(0)} MB/s vs ${(body.length / 1e6 / naivePh).toFixed(0)} MB/s checking each (${(naivePh / oursPh).toFixed(0)}x)`,
);
