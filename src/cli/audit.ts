/** `gatehouse audit verify|tail|query|export|report` and `gatehouse policy suggest`: reading the audit trail. */
import type { Command } from 'commander';
import type { AuditRecord } from '../audit/record.js';
import { examples, fail, globalOptions, printJson, usageError } from './common.js';

interface FilterOptions {
  since?: string;
  until?: string;
  agent?: string;
  surface?: string;
  effect?: string;
  action?: string;
  host?: string;
  server?: string;
  tool?: string;
  limit?: string;
}

async function locate(command: Command): Promise<{ dataDir: string; auditDir: string }> {
  const { commandContext } = await import('./context.js');
  const { auditDir } = await import('../audit/format.js');
  const { dataDir } = commandContext(globalOptions(command), { requireConfig: false });
  return { dataDir, auditDir: auditDir(dataDir) };
}

/** The per-agent summary behind `audit report` and `policy suggest`. */
async function summarise(command: Command, options: { since?: string; until?: string; agent?: string }) {
  const filter = await filterFrom({ ...options }, undefined);
  const { buildReport } = await import('../audit/report.js');
  const index = await openIndex(command);
  return buildReport(index.summary(filter), filter);
}

/** Opens the index and brings it up to date with the segments. */
async function openIndex(command: Command) {
  const { openStore } = await import('../store/index.js');
  const { AuditIndex } = await import('../audit/indexer.js');
  const { dataDir, auditDir } = await locate(command);
  const index = new AuditIndex(openStore(dataDir), auditDir);
  index.catchUp();
  return index;
}

function withFilters(command: Command): Command {
  return command
    .option('--since <when>', 'only records at or after this time: "7d", "12h", "30m" ago, or an ISO date/time')
    .option('--until <when>', 'only records at or before this time')
    .option('--agent <name>', 'only this agent')
    .option('--surface <surface>', 'network, filesystem, credentials, mcp or system')
    .option('--effect <effect>', 'allow, deny, observed-deny, info or error')
    .option('--action <action>', 'connect, request, tools/call, launch, ...')
    .option('--host <host>', 'only this destination host ("*" matches any characters)')
    .option('--server <name>', 'only this MCP server')
    .option('--tool <name>', 'only this MCP tool ("*" matches any characters)');
}

async function filterFrom(options: FilterOptions, defaultLimit: number | undefined) {
  const { parseTimeBound } = await import('../audit/reader.js');
  const { SURFACES } = await import('../policy/types.js');
  const bound = (value: string | undefined, flag: string) => {
    if (value === undefined) return undefined;
    const parsed = parseTimeBound(value);
    if (!parsed) throw usageError(`${flag} "${value}" is not a time: use "7d", "12h", "30m", "45s" or an ISO date like 2026-11-24T06:00:00Z`);
    return parsed;
  };
  if (options.surface && ![...SURFACES, 'system'].includes(options.surface as never)) {
    throw usageError(`--surface "${options.surface}" is not a surface: use network, filesystem, credentials, mcp or system`);
  }
  if (options.effect && !['allow', 'deny', 'observed-deny', 'info', 'error'].includes(options.effect)) {
    throw usageError(`--effect "${options.effect}" is not an effect: use allow, deny, observed-deny, info or error`);
  }
  let limit = defaultLimit;
  if (options.limit !== undefined) {
    limit = Number(options.limit);
    if (!Number.isInteger(limit) || limit < 1) throw usageError(`--limit "${options.limit}" is not a positive whole number`);
  }
  const since = bound(options.since, '--since');
  const until = bound(options.until, '--until');
  return {
    ...(since ? { since } : {}),
    ...(until ? { until } : {}),
    ...(options.agent ? { agent: options.agent } : {}),
    ...(options.surface ? { surface: options.surface } : {}),
    ...(options.effect ? { effect: options.effect } : {}),
    ...(options.action ? { action: options.action } : {}),
    ...(options.host ? { host: options.host } : {}),
    ...(options.server ? { server: options.server } : {}),
    ...(options.tool ? { tool: options.tool } : {}),
    ...(limit !== undefined ? { limit } : {}),
  };
}

export function registerAuditCommands(program: Command): void {
  const audit = program.command('audit').description('verify, read, search and export the audit trail');

  examples(
    audit
      .command('verify')
      .description('check the hash chain and checkpoint signatures; name the first altered, missing or moved record')
      .option('--key <file...>', "public keys trusted to sign checkpoints, several across a key rotation (default: <data-dir>/keys/node.pub)")
      .option('--json', 'print JSON')
      .action(async (options: { key?: string[]; json?: boolean }, command: Command) => {
        const { verifyLog } = await import('../audit/verify.js');
        const { loadPublicKey } = await import('../util/keys.js');
        const { join } = await import('node:path');
        const { dataDir, auditDir } = await locate(command);
        const publicKeys = (options.key ?? [join(dataDir, 'keys', 'node.pub')]).map((path) => loadPublicKey(path));
        const result = verifyLog(auditDir, { publicKeys });
        // The chain cannot show records cut off its end; the index remembers how far the log once reached.
        const { openStore } = await import('../store/index.js');
        const { AuditIndex } = await import('../audit/indexer.js');
        const indexed = new AuditIndex(openStore(dataDir), auditDir).maxSeq();
        if (result.ok && indexed > result.lastSeq) {
          const last = (await import('../audit/format.js')).listSegments(auditDir).at(-1)?.name ?? 'the log';
          result.ok = false;
          result.problem = {
            kind: 'missing',
            seq: result.lastSeq + 1,
            segment: last,
            line: 0,
            message: `records ${result.lastSeq + 1}-${indexed} are missing from the end of the log (the index saw them earlier)`,
          };
        }
        if (!result.ok) fail(1);
        if (options.json) return printJson(result);
        if (result.problem) {
          process.stdout.write(`FAILED: ${result.problem.message}\n`);
          process.stdout.write(`(${result.records} records before it verified; ${result.checkpoints} signed checkpoints)\n`);
          return;
        }
        if (result.records === 0) return void process.stdout.write(`No audit records in ${auditDir}.\n`);
        process.stdout.write(
          `OK: ${result.records} records (${result.firstSeq}-${result.lastSeq}) in ${result.segments} segment(s); ` +
            `${result.checkpoints} signed checkpoints verified` +
            (result.unsignedTail > 0 ? `; the last ${result.unsignedTail} records are chained but not yet covered by a checkpoint` : '') +
            '.\n',
        );
      }),
    ['gatehouse audit verify', 'gatehouse audit verify --key ./node.pub --json'],
  );

  examples(
    audit
      .command('tail')
      .description('print the latest records; -f keeps printing new ones as they are written')
      .option('-n, --lines <count>', 'how many records to show first', '20')
      .option('-f, --follow', 'keep following the log (across rotation) until interrupted')
      .option('--agent <name>', 'only this agent')
      .option('--surface <surface>', 'only this surface')
      .option('--effect <effect>', 'only this effect (deny, observed-deny, ...)')
      .option('--json', 'print each record as one JSON line')
      .action(async (options: { lines: string; follow?: boolean; json?: boolean; agent?: string; surface?: string; effect?: string }, command: Command) => {
        const { lastLines, followLines, formatRecordLine, logEnd } = await import('../audit/reader.js');
        const { auditDir } = await locate(command);
        const count = Number(options.lines);
        if (!Number.isInteger(count) || count < 0) throw usageError(`--lines "${options.lines}" is not a whole number`);
        const filtered = options.agent !== undefined || options.surface !== undefined || options.effect !== undefined;
        const matches = (record: AuditRecord) =>
          (options.agent === undefined || record.principal?.agent === options.agent) &&
          (options.surface === undefined || record.surface === options.surface) &&
          (options.effect === undefined || record.effect === options.effect);
        const show = (line: string) => {
          let record: AuditRecord;
          try {
            record = JSON.parse(line) as AuditRecord;
          } catch {
            if (!filtered) process.stdout.write(`(unreadable line) ${line.slice(0, 200)}\n`);
            return;
          }
          if (!matches(record)) return;
          process.stdout.write((options.json ? line : formatRecordLine(record)) + '\n');
        };
        // Everything after this point is followed; everything before it is the tail shown first.
        const end = logEnd(auditDir);
        const keep = (line: string) => {
          try {
            return matches(JSON.parse(line) as AuditRecord);
          } catch {
            return !filtered;
          }
        };
        for (const line of lastLines(auditDir, count, end, keep)) show(line);
        if (!options.follow) return;
        const follower = followLines(auditDir, show, end);
        await new Promise<void>((resolve) => {
          const stop = () => {
            follower.stop();
            resolve();
          };
          process.once('SIGINT', stop);
          process.once('SIGTERM', stop);
        });
      }),
    ['gatehouse audit tail', 'gatehouse audit tail -f --effect deny', 'gatehouse audit tail -n 100 --json'],
  );

  examples(
    withFilters(
      audit
        .command('query')
        .description('search the audit trail (backed by an SQLite index that catches up with the log first)')
        .option('--limit <count>', 'show at most this many (the most recent)', '100')
        .option('--json', 'print a JSON array'),
    ).action(async (options: FilterOptions & { json?: boolean }, command: Command) => {
      const filter = await filterFrom(options, 100);
      const { formatRecordLine } = await import('../audit/reader.js');
      const index = await openIndex(command);
      const records = [...index.records(index.find(filter))];
      if (options.json) return printJson(records);
      if (records.length === 0) return void process.stdout.write('No matching audit records.\n');
      for (const record of records) process.stdout.write(formatRecordLine(record) + '\n');
    }),
    [
      'gatehouse audit query --since 24h --effect deny',
      'gatehouse audit query --agent claude-code --surface network --host "*.github.com"',
      'gatehouse audit query --server github --tool delete_repo --json',
    ],
  );

  examples(
    withFilters(
      audit
        .command('export')
        .description('write matching records as JSONL (default) or CSV')
        .option('--format <format>', 'jsonl or csv', 'jsonl')
        .option('--limit <count>', 'at most this many (the most recent)')
        .option('-o, --output <file>', 'write to this file instead of standard output'),
    ).action(async (options: FilterOptions & { format: string; output?: string }, command: Command) => {
      if (options.format !== 'jsonl' && options.format !== 'csv') throw usageError(`--format "${options.format}" is not supported: use jsonl or csv`);
      const filter = await filterFrom(options, undefined);
      const { csvHeader, csvRow } = await import('../audit/reader.js');
      const { createWriteStream } = await import('node:fs');
      const index = await openIndex(command);
      const file = options.output ? createWriteStream(options.output, { mode: 0o600 }) : undefined;
      const out: NodeJS.WritableStream = file ?? process.stdout;
      let count = 0;
      if (options.format === 'csv') out.write(csvHeader() + '\n');
      for (const record of index.records(index.find(filter))) {
        out.write((options.format === 'csv' ? csvRow(record) : JSON.stringify(record)) + '\n');
        count += 1;
      }
      if (file) {
        await new Promise<void>((resolve, reject) => {
          file.on('error', reject);
          file.end(() => resolve());
        });
        process.stderr.write(`Exported ${count} records to ${options.output}.\n`);
      }
    }),
    ['gatehouse audit export --since 7d > audit.jsonl', 'gatehouse audit export --format csv --effect deny -o denies.csv'],
  );

  examples(
    audit
      .command('report')
      .description('what each agent reached: network destinations, filesystem paths, credentials and MCP tools, with verdicts')
      .option('--since <when>', 'only this recent: "7d", "24h", or an ISO date/time', '7d')
      .option('--until <when>', 'only up to this time')
      .option('--agent <name>', 'only this agent')
      .option('--json', 'print JSON')
      .action(async (options: { since?: string; until?: string; agent?: string; json?: boolean }, command: Command) => {
        const { formatReport } = await import('../audit/report.js');
        const report = await summarise(command, options);
        if (options.json) return printJson(report);
        process.stdout.write(formatReport(report));
      }),
    ['gatehouse audit report', 'gatehouse audit report --since 30d --agent claude-code', 'gatehouse audit report --json > reach.json'],
  );

  // `policy suggest` reads the audit trail, so it lives here; the policy group itself is the lead's.
  const policy = program.commands.find((c) => c.name() === 'policy');
  if (policy) {
    examples(
      policy
        .command('suggest')
        .description('write a minimal policy that allows what agents were seen doing (observe mode first, then this)')
        .option('--since <when>', 'learn from this recent traffic: "7d", "24h", or an ISO date/time', '7d')
        .option('--agent <name>', 'only this agent')
        .option('-o, --output <file>', 'write the policy here instead of standard output')
        .option('--json', 'print the suggested configuration as JSON (with the number of rules) instead of YAML')
        .action(async (options: { since?: string; agent?: string; output?: string; json?: boolean }, command: Command) => {
          const { suggestPolicy } = await import('../audit/suggest.js');
          const report = await summarise(command, options);
          const { text, rules } = suggestPolicy(report);
          if (options.json && !options.output) {
            const { parse } = await import('yaml');
            return printJson({ rules, config: parse(text) });
          }
          if (!options.output) return void process.stdout.write(text);
          const { writeFileSync } = await import('node:fs');
          writeFileSync(options.output, text, { mode: 0o600 });
          process.stderr.write(`Wrote ${rules} rules to ${options.output}; check it with "gatehouse --config ${options.output} policy check".\n`);
        }),
      ['gatehouse policy suggest --since 7d > suggested.yaml', 'gatehouse policy suggest --agent ci-bot -o ci-bot.yaml'],
    );
  }
}
