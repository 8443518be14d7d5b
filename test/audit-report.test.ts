import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { ChainedAuditLog } from '../src/audit/chain.js';
import type { AuditRecord } from '../src/audit/record.js';
import type { Report } from '../src/audit/report.js';
import { OTHER_HOSTS } from '../src/audit/indexer.js';
import type { RefusalSummary } from '../src/egress/flood.js';
import { buildSummaryRecord } from '../src/egress/record.js';
import { decisionRecord as recordOf } from '../src/audit/decision.js';
import type { DecisionRequest, Effect } from '../src/policy/types.js';
import { decisionRecord, tempDataDir } from './audit-fixtures.js';

const cli = resolve(import.meta.dirname, '../src/cli/main.js');

function gatehouse(args: string[], cwd?: string): { status: number | null; stdout: string; stderr: string } {
  const run = spawnSync(process.execPath, [cli, ...args], { encoding: 'utf8', timeout: 20000, ...(cwd ? { cwd } : {}) });
  return { status: run.status, stdout: run.stdout, stderr: run.stderr };
}

/** An hour of traffic, partly in observe mode, for two agents, as the data planes record it (decision.ts). */
function traffic(): AuditRecord[] {
  const now = Date.now();
  let i = 0;
  const records: AuditRecord[] = [];
  const repeat = (n: number, request: DecisionRequest, effect: Effect, rules: string[], details?: Record<string, unknown>) => {
    for (let k = 0; k < n; k += 1) {
      const record = recordOf(request, { surface: request.surface, effect, rules, reason: 'test', mode: effect === 'observed-deny' ? 'observe' : 'enforce', latencyUs: 2 }, {
        node: 'n1',
        policy: { version: 'v1', digest: 'sha256:00' },
        ...(details ? { details } : {}),
      });
      records.push({ ...record, time: new Date(now - 3600_000 + (i += 1) * 1000).toISOString() });
    }
  };
  repeat(5, { surface: 'network', agent: 'coder', host: 'api.github.com', port: 443 }, 'allow', ['github']);
  repeat(3, { surface: 'network', agent: 'coder', host: 'registry.npmjs.org', port: 443, method: 'GET', path: '/left-pad' }, 'observed-deny', []);
  repeat(2, { surface: 'network', agent: 'ci-bot', host: 'registry.npmjs.org', port: 443 }, 'observed-deny', []);
  repeat(4, { surface: 'network', agent: 'coder', host: 'pastebin.com', port: 443 }, 'deny', ['paste-sites']);
  repeat(6, { surface: 'filesystem', agent: 'coder', path: '/work/project/src/index.ts', access: 'read' }, 'allow', ['workspace'], { access: 'read' });
  repeat(2, { surface: 'filesystem', agent: 'coder', path: '/work/project/dist/out.js', access: 'write' }, 'observed-deny', [], { access: 'write' });
  repeat(1, { surface: 'filesystem', agent: 'coder', path: '/root/.ssh/id_ed25519', access: 'read' }, 'deny', ['keys'], { access: 'read' });
  repeat(3, { surface: 'credentials', agent: 'coder', secret: 'github-token', host: 'api.github.com' }, 'allow', ['gh']);
  repeat(7, { surface: 'mcp', agent: 'coder', server: 'github', tool: 'get_issue' }, 'observed-deny', []);
  repeat(1, { surface: 'mcp', agent: 'coder', server: 'github', tool: 'delete_repo' }, 'deny', ['no-destructive']);
  return records;
}

test('audit report summarises per agent what it reached, with allowed, denied and observed-deny counts', async () => {
  const tmp = tempDataDir();
  try {
    const log = ChainedAuditLog.open({ dir: tmp.auditDir, node: 'n1', keys: tmp.keys });
    for (const record of traffic()) await log.append(record);
    // Old traffic outside the window is left out.
    await log.append(decisionRecord(1, { time: '2020-01-01T00:00:00.000Z', principal: { agent: 'coder' }, resource: 'old.example.com:443' }));
    await log.close();

    const json = gatehouse(['--data-dir', tmp.dataDir, 'audit', 'report', '--since', '7d', '--json']);
    assert.equal(json.status, 0, json.stderr);
    const report = JSON.parse(json.stdout) as Report;
    assert.deepEqual(report.agents.map((a) => a.agent), ['ci-bot', 'coder']);
    const coder = report.agents.find((a) => a.agent === 'coder')!;
    assert.deepEqual(
      coder.network.map((n) => [n.host, n.port, n.count, n.allowed, n.denied, n.observedDenied]),
      [
        ['api.github.com', 443, 5, 5, 0, 0],
        ['pastebin.com', 443, 4, 0, 4, 0],
        ['registry.npmjs.org', 443, 3, 0, 0, 3],
      ],
    );
    assert.deepEqual(
      coder.filesystem.map((f) => [f.access, f.path, f.count]),
      [
        ['read', '/work/project/src/index.ts', 6],
        ['write', '/work/project/dist/out.js', 2],
        ['read', '/root/.ssh/id_ed25519', 1],
      ],
    );
    assert.deepEqual(coder.credentials.map((c) => [c.secret, c.host, c.count]), [['github-token', 'api.github.com', 3]]);
    const github = coder.network[0]!;
    assert.ok(github.firstSeen < github.lastSeen, 'each destination says when it was first and last reached');
    assert.deepEqual(coder.mcp.map((m) => [m.server, m.tool, m.count, m.denied]), [
      ['github', 'get_issue', 7, 0],
      ['github', 'delete_repo', 1, 1],
    ]);

    const onlyCi = JSON.parse(gatehouse(['--data-dir', tmp.dataDir, 'audit', 'report', '--agent', 'ci-bot', '--json']).stdout) as Report;
    assert.deepEqual(onlyCi.agents.map((a) => a.agent), ['ci-bot']);

    const table = gatehouse(['--data-dir', tmp.dataDir, 'audit', 'report']);
    assert.match(table.stdout, /Agent coder — 32 decisions/, table.stderr);
    assert.match(table.stdout, /pastebin\.com:443\s+4\s+0 allowed, 4 denied/);
    assert.match(table.stdout, /github\/get_issue\s+7\s+0 allowed, 0 denied, 7 observed-deny/);
  } finally {
    tmp.cleanup();
  }
});

test('policy suggest writes a minimal commented policy that validates and allows exactly what was wanted', async () => {
  const tmp = tempDataDir();
  try {
    const log = ChainedAuditLog.open({ dir: tmp.auditDir, node: 'n1', keys: tmp.keys });
    for (const record of traffic()) await log.append(record);
    await log.close();
    const policyPath = join(tmp.dataDir, 'suggested.yaml');
    const run = gatehouse(['--data-dir', tmp.dataDir, 'policy', 'suggest', '--since', '7d', '-o', policyPath]);
    assert.equal(run.status, 0, run.stderr);
    const text = readFileSync(policyPath, 'utf8');
    assert.match(text, /- registry\.npmjs\.org {2}# 5 connections \(5 observed-deny\)/);
    assert.match(text, /- api\.github\.com {2}# 5 connections \(5 allowed\)/);
    assert.match(text, /- github-token\b|secret: github-token/);
    assert.match(text, /- get_issue {2}# 7 calls \(7 observed-deny\)/);
    assert.match(text, /# Denied while enforcing, and not allowed here:\n#\s+network pastebin\.com: 4 connections \(4 denied\)/);
    assert.doesNotMatch(text, /allow: pastebin\.com/);

    const check = gatehouse(['--data-dir', tmp.dataDir, '--config', policyPath, 'policy', 'check', '--json']);
    assert.equal(check.status, 0, check.stdout + check.stderr);

    const json = gatehouse(['--data-dir', tmp.dataDir, 'policy', 'suggest', '--since', '7d', '--json']);
    assert.equal(json.status, 0, json.stderr);
    const suggested = JSON.parse(json.stdout) as { rules: number; config: { policy: { network: { allow?: string[] }[] } } };
    assert.ok(suggested.rules > 0);
    assert.ok(suggested.config.policy.network.some((rule) => rule.allow?.includes('api.github.com')), 'the JSON carries the same policy');

    const cases = join(tmp.dataDir, 'cases.yaml');
    writeFileSync(
      cases,
      `config: suggested.yaml
cases:
  - name: the GitHub API stays reachable for coder
    request: { surface: network, agent: coder, host: api.github.com, port: 443 }
    expect: allow
  - name: the registry observed in observe mode is allowed for both agents
    request: { surface: network, agent: ci-bot, host: registry.npmjs.org, port: 443 }
    expect: allow
  - name: ci-bot never reached GitHub, so it may not
    request: { surface: network, agent: ci-bot, host: api.github.com, port: 443 }
    expect: deny
  - name: a denied paste site stays denied
    request: { surface: network, agent: coder, host: pastebin.com, port: 443 }
    expect: deny
  - name: a port never used is not opened
    request: { surface: network, agent: coder, host: api.github.com, port: 80 }
    expect: deny
  - name: the source file is readable
    request: { surface: filesystem, agent: coder, path: /work/project/src/index.ts, access: read }
    expect: allow
  - name: the build output is writable
    request: { surface: filesystem, agent: coder, path: /work/project/dist/out.js, access: write }
    expect: allow
  - name: the SSH key denied while enforcing stays denied
    request: { surface: filesystem, agent: coder, path: /root/.ssh/id_ed25519, access: read }
    expect: deny
  - name: the observed MCP tool is allowed
    request: { surface: mcp, agent: coder, server: github, tool: get_issue }
    expect: allow
  - name: the denied MCP tool stays denied
    request: { surface: mcp, agent: coder, server: github, tool: delete_repo }
    expect: deny
`,
    );
    const tested = gatehouse(['--data-dir', tmp.dataDir, 'policy', 'test', cases]);
    assert.equal(tested.status, 0, tested.stdout + tested.stderr);
    assert.match(tested.stdout, /10 passed, 0 failed/);
  } finally {
    tmp.cleanup();
  }
});

test('audit report counts the refusals a flood summary stands for, at the hosts it names', async () => {
  const tmp = tempDataDir();
  try {
    const log = ChainedAuditLog.open({ dir: tmp.auditDir, node: 'n1', keys: tmp.keys });
    for (const record of traffic()) await log.append(record);
    const until = Date.now() - 60_000;
    // What the egress proxy writes after a refusal flood: 1 200 refusals counted in one record.
    await log.append(
      buildSummaryRecord('n1', {
        principal: { agent: 'coder' },
        since: until - 60_000,
        until,
        suppressed: 1200,
        engine: { version: 'v1', digest: 'sha256:00' },
        byReason: { 'policy-denied': 1200 },
        byHost: [
          { reasonCode: 'policy-denied', host: 'pastebin.com', count: 1000 },
          { reasonCode: 'policy-denied', host: 'evil.test', count: 150 },
        ],
        otherHosts: 50,
      } as RefusalSummary),
    );
    await log.close();
    const report = JSON.parse(gatehouse(['--data-dir', tmp.dataDir, 'audit', 'report', '--since', '7d', '--json']).stdout) as Report;
    const coder = report.agents.find((a) => a.agent === 'coder')!;
    const denied = (host: string) => coder.network.filter((n) => n.host === host).reduce((sum, n) => sum + n.denied, 0);
    assert.equal(denied('pastebin.com'), 4 + 1000, 'the recorded refusals and the counted ones');
    assert.equal(denied('evil.test'), 150);
    assert.equal(denied(OTHER_HOSTS), 50);
    assert.equal(coder.decisions, 32 + 1200);
    assert.ok(!coder.network.some((n) => n.host === '-'), 'no host "-"');
  } finally {
    tmp.cleanup();
  }
});
