/** `gatehouse scan [FILE|-]...`: secret-leak detection for files and stdin (pre-commit hooks, CI). */
import type { Command } from 'commander';
import { dirname } from 'node:path';
import { examples, fail, globalOptions, printJson, usageError } from './common.js';

interface ScanOptions {
  json?: boolean;
  listRules?: boolean;
  known?: boolean;
  maxBytes?: string;
  severity?: string;
}

const SEVERITIES = ['low', 'medium', 'high'];

async function readInput(source: string): Promise<Buffer> {
  if (source === '-') {
    const chunks: Buffer[] = [];
    for await (const chunk of process.stdin) chunks.push(chunk as Buffer);
    return Buffer.concat(chunks);
  }
  const { readFile } = await import('node:fs/promises');
  try {
    return await readFile(source);
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    throw usageError(`cannot read ${source}${code === 'ENOENT' ? ': no such file' : ''}`);
  }
}

/** The files to scan: each argument, with directories walked (except .git and node_modules). */
async function expandSources(sources: string[]): Promise<string[]> {
  const { readdir, stat } = await import('node:fs/promises');
  const { join } = await import('node:path');
  const out: string[] = [];
  const walk = async (dir: string): Promise<void> => {
    for (const entry of (await readdir(dir, { withFileTypes: true })).sort((a, b) => a.name.localeCompare(b.name))) {
      const path = join(dir, entry.name);
      if (entry.isDirectory()) {
        if (entry.name !== '.git' && entry.name !== 'node_modules') await walk(path);
      } else if (entry.isFile()) {
        out.push(path);
      }
    }
  };
  for (const source of sources) {
    if (source !== '-' && (await stat(source).catch(() => undefined))?.isDirectory()) await walk(source);
    else out.push(source);
  }
  return out;
}

/** 1-based line and column (in bytes) of a byte offset. */
function position(bytes: Buffer, offset: number): { line: number; column: number } {
  let line = 1;
  let lineStart = 0;
  for (let at = bytes.indexOf(10); at >= 0 && at < offset; at = bytes.indexOf(10, at + 1)) {
    line++;
    lineStart = at + 1;
  }
  return { line, column: offset - lineStart + 1 };
}

export function registerScanCommands(program: Command): void {
  examples(
    program
      .command('scan')
      .argument('[files...]', 'files or directories to scan (.git and node_modules are skipped); "-" or nothing reads stdin')
      .description('find secrets (API keys, tokens, private keys, passwords) in files or stdin; exits 1 if any are found')
      .option('--json', 'print findings as JSON')
      .option('--known', 'also look for the values of vault secrets and credential environment variables, in any encoding')
      .option('--severity <level>', 'report only findings at or above this severity: low (includes published example keys), medium or high', 'medium')
      .option('--list-rules', 'list the detection rules (ids for policy.dlp.disabledRules) and exit')
      .option('--max-bytes <n>', 'largest input to scan (default: policy.dlp.maxBytes, else 10 MiB); larger input fails the check')
      .action(async (files: string[], options: ScanOptions, command: Command) => {
        if (options.listRules) {
          const { RULES } = await import('../dlp/index.js');
          const rules = RULES.map((rule) => ({ id: rule.id, severity: rule.severity, title: rule.title }));
          if (options.json) return printJson(rules);
          for (const rule of rules) process.stdout.write(`${rule.id.padEnd(34)} ${rule.severity.padEnd(7)} ${rule.title}\n`);
          return;
        }
        const minimum = SEVERITIES.indexOf(options.severity ?? 'medium');
        if (minimum < 0) throw usageError(`--severity must be low, medium or high, not "${options.severity}"`);
        const { commandContext } = await import('./context.js');
        const context = commandContext(globalOptions(command), { requireConfig: false });
        let maxBytes = context.loaded?.config.policy.dlp.maxBytes ?? 10 * 1024 * 1024;
        if (options.maxBytes !== undefined) {
          maxBytes = Number(options.maxBytes);
          if (!Number.isInteger(maxBytes) || maxBytes <= 0) throw usageError(`--max-bytes must be a positive whole number, not "${options.maxBytes}"`);
        }
        const { createScanner } = await import('../dlp/index.js');
        let knownSecrets: { name: string; value: string }[] = [];
        if (options.known) {
          const { openSecrets } = await import('../secrets/index.js');
          const secrets = openSecrets({ dataDir: context.dataDir, ...(context.loaded && context.configPath ? { settings: context.loaded.config.secrets, baseDir: dirname(context.configPath) } : {}) });
          knownSecrets = await secrets.knownSecrets();
        }
        const scanner = createScanner({ knownSecrets, maxBytes });

        const sources = await expandSources(files.length === 0 ? ['-'] : files);
        const report: { file: string; line: number; column: number; rule: string; severity: string; confidence: string; preview: string; secret?: string }[] = [];
        const tooLarge: string[] = [];
        for (const source of sources) {
          const bytes = await readInput(source);
          const outcome = scanner.check(bytes);
          if (outcome.status === 'too_large') {
            tooLarge.push(source);
            continue;
          }
          for (const finding of outcome.findings) {
            if (SEVERITIES.indexOf(finding.severity) < minimum) continue;
            report.push({
              file: source === '-' ? '<stdin>' : source,
              ...position(bytes, finding.start),
              rule: finding.ruleId,
              severity: finding.severity,
              confidence: finding.confidence,
              preview: finding.preview,
              ...(finding.secretName ? { secret: finding.secretName } : {}),
            });
          }
        }
        if (options.json) {
          printJson({ findings: report, tooLarge });
        } else {
          for (const r of report) {
            process.stdout.write(`${`${r.file}:${r.line}:${r.column}`.padEnd(32)} ${r.rule.padEnd(30)} ${r.severity.padEnd(7)} ${r.confidence.padEnd(7)} ${r.preview}\n`);
          }
          for (const source of tooLarge) process.stderr.write(`gatehouse: ${source} is over ${maxBytes} bytes and was not scanned (raise --max-bytes)\n`);
          if (report.length === 0 && tooLarge.length === 0) process.stderr.write('No secrets found.\n');
          else if (report.length > 0) process.stderr.write(`${report.length} secret${report.length === 1 ? '' : 's'} found.\n`);
        }
        // An input that could not be scanned fails the check too: never a silent pass.
        if (report.length > 0 || tooLarge.length > 0) fail(1);
      }),
    [
      'gatehouse scan .env config/settings.json',
      'gatehouse scan .',
      'git diff --cached | gatehouse scan -',
      'gatehouse scan --json --known build/output.log',
      'gatehouse scan --list-rules',
    ],
  );
}
