import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parseYaml } from '../src/config/load.js';
import { configSchema } from '../src/config/schema.js';

test('the audit section reads sizes and durations with units and fills in defaults', () => {
  const config = parseYaml(
    `version: 1
audit:
  mode: sync
  maxRecordBytes: 16KiB
  segment: { maxBytes: 8MiB, maxAge: 12h }
  retention: { maxAge: 30d, maxBytes: 1GB }
  checkpoint: { every: 500, interval: 30s }
  sinks:
    - { type: webhook, url: "http://127.0.0.1:9000/hook", secret: "0123456789abcdef" }
    - { type: syslog, name: siem, host: 127.0.0.1, port: 6514, tls: {} }
`,
    'gatehouse.yaml',
    configSchema,
  );
  const audit = config.audit;
  assert.equal(audit.mode, 'sync');
  assert.equal(audit.maxRecordBytes, 16 * 1024);
  assert.deepEqual(audit.segment, { maxBytes: 8 * 1024 * 1024, maxAge: 12 * 3_600_000 });
  assert.deepEqual(audit.retention, { maxAge: 30 * 86_400_000, maxBytes: 1e9 });
  assert.deepEqual(audit.checkpoint, { every: 500, interval: 30_000 });
  assert.equal(audit.spool.maxBytes, 256 * 1024 * 1024);
  const syslog = audit.sinks[1]!;
  assert.equal(syslog.type === 'syslog' && syslog.appName, 'gatehouse');

  const defaults = parseYaml('version: 1\n', 'gatehouse.yaml', configSchema).audit;
  assert.equal(defaults.mode, 'batch');
  assert.equal(defaults.recordValues, false);
  assert.deepEqual(defaults.checkpoint, { every: 1000, interval: 60_000 });
});

test('a bad duration, a short webhook secret and two sinks with one name are reported where they are', () => {
  const problems = (text: string) => {
    try {
      parseYaml(text, 'gatehouse.yaml', configSchema);
    } catch (error) {
      return (error as Error).message;
    }
    return 'no error';
  };
  assert.match(problems('version: 1\naudit:\n  segment: { maxAge: 1 day }\n'), /^gatehouse\.yaml:3:\d+: audit\.segment\.maxAge: .*a duration like "30s"/);
  assert.match(
    problems('version: 1\naudit:\n  sinks:\n    - { type: webhook, url: "http://127.0.0.1/x", secret: short }\n'),
    /gatehouse\.yaml:4:\d+: audit\.sinks\[0\]\.secret: a webhook secret of at least 16 characters/,
  );
  assert.match(
    problems('version: 1\naudit:\n  sinks:\n    - { type: splunk, url: "http://127.0.0.1:8088", token: t }\n    - { type: splunk, url: "http://127.0.0.1:8089", token: t }\n'),
    /two sinks are named "splunk"; give each a distinct "name"/,
  );
  assert.match(problems('version: 1\naudit:\n  sinks:\n    - { type: kafka }\n'), /audit\.sinks\[0\]/);
});
