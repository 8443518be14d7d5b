import { test } from 'node:test';
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { pino } from 'pino';
import { AuditMetrics } from '../src/audit/metrics.js';
import { startNode } from '../src/node/daemon.js';
import { tempDataDir } from './audit-fixtures.js';

test('renders counters, cumulative histogram buckets and collected gauges in Prometheus text format', () => {
  const metrics = new AuditMetrics();
  metrics.observeRecord({ surface: 'network', effect: 'deny', latencyUs: 3 });
  metrics.observeRecord({ surface: 'network', effect: 'deny', latencyUs: 40 });
  metrics.observeRecord({ surface: 'mcp', effect: 'allow', latencyUs: 1 });
  metrics.observeRecord({ surface: 'system', effect: 'info', latencyUs: 0 });
  metrics.observeScan(80);
  metrics.observeScan(3, 'network');
  metrics.observeScan(2000, 'network');
  metrics.queueDepth.collect = () => [{ labels: {}, value: 7 }];
  metrics.sinkLag.collect = () => [{ labels: { sink: 'we"bhook' }, value: 12 }];
  const text = metrics.render();
  assert.match(text, /^# HELP gatehouse_decisions_total .+\n# TYPE gatehouse_decisions_total counter\n/m);
  assert.match(text, /^gatehouse_decisions_total\{effect="deny",surface="network"\} 2$/m);
  assert.match(text, /^gatehouse_decisions_total\{effect="allow",surface="mcp"\} 1$/m);
  assert.doesNotMatch(text, /surface="system"/, 'system records are not decisions');
  // Buckets are cumulative: 3 us falls in le=5e-6 and every larger bucket.
  assert.match(text, /^gatehouse_decision_latency_seconds_bucket\{le="0.000005",surface="network"\} 1$/m);
  assert.match(text, /^gatehouse_decision_latency_seconds_bucket\{le="0.00005",surface="network"\} 2$/m);
  assert.match(text, /^gatehouse_decision_latency_seconds_bucket\{le="\+Inf",surface="network"\} 2$/m);
  assert.match(text, /^gatehouse_decision_latency_seconds_count\{surface="network"\} 2$/m);
  assert.match(text, /^gatehouse_scan_latency_seconds_count\{surface="mcp"\} 1$/m);
  // Each surface is a series of its own, however often it is observed.
  assert.match(text, /^gatehouse_scan_latency_seconds_count\{surface="network"\} 2$/m);
  assert.match(text, /^gatehouse_scan_latency_seconds_bucket\{le="0.000005",surface="network"\} 1$/m);
  assert.match(text, /^gatehouse_scan_latency_seconds_bucket\{le="0.0025",surface="network"\} 2$/m);
  assert.match(text, /^gatehouse_audit_queue_depth 7$/m);
  assert.match(text, /^gatehouse_audit_sink_lag_records\{sink="we\\"bhook"\} 12$/m, 'label values are escaped');
});

test('the node serves GET /metrics with decisions counted by surface and effect', async () => {
  const tmp = tempDataDir();
  const configPath = join(tmp.dataDir, 'gatehouse.yaml');
  writeFileSync(configPath, 'version: 1\nnode:\n  name: metrics-node\npolicy:\n  network:\n    - id: github\n      allow: [api.github.com]\n      ports: [443]\n');
  const node = await startNode({ configPath, dataDir: join(tmp.dataDir, 'data'), logger: pino({ level: 'silent' }), apiListen: '127.0.0.1:0' });
  try {
    const decide = (host: string) =>
      fetch(`${node.api.url}/v1/decide`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ surface: 'network', agent: 'a', host, port: 443 }) });
    assert.equal((await decide('api.github.com')).status, 200);
    assert.equal((await decide('evil.example')).status, 200);
    assert.equal((await decide('evil.example')).status, 200);
    const response = await fetch(`${node.api.url}/metrics`);
    assert.equal(response.status, 200);
    assert.match(response.headers.get('content-type') ?? '', /^text\/plain; version=0\.0\.4/);
    const text = await response.text();
    assert.match(text, /^gatehouse_decisions_total\{effect="allow",surface="network"\} 1$/m);
    assert.match(text, /^gatehouse_decisions_total\{effect="deny",surface="network"\} 2$/m);
    assert.match(text, /^gatehouse_decision_latency_seconds_count\{surface="network"\} 3$/m);
  } finally {
    await node.close();
    tmp.cleanup();
  }
});
