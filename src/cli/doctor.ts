/**
 * `gatehouse doctor`: what this host can enforce (user namespaces, AppArmor's restriction on them, bwrap,
 * seccomp), proven by starting one real sandbox, and how to fix each gap. Exit 1 when the sandbox cannot run.
 */
import type { Command } from 'commander';
import { examples, printJson } from './common.js';

export function registerDoctorCommands(program: Command): void {
  const doctor = program
    .command('doctor')
    .description('Check what isolation this host can give sandboxed agents, and how to fix each gap')
    .option('--json', 'print the report as JSON')
    .option('--bwrap <path>', 'the bwrap to check (default: bwrap on PATH)')
    .action(async (options: { json?: boolean; bwrap?: string }) => {
      const { probeHost } = await import('../sandbox/host.js');
      const report = await probeHost(options.bwrap ? { bwrapPath: options.bwrap } : {});
      if (options.json) printJson(report);
      else {
        for (const check of report.checks) {
          const mark = check.ok ? 'ok  ' : check.optional ? 'note' : 'FAIL';
          process.stdout.write(`${mark}  ${check.id.padEnd(14)} ${check.detail}\n`);
          if (!check.ok && check.fix) process.stdout.write(`      ${''.padEnd(14)} fix: ${check.fix}\n`);
        }
        process.stdout.write(
          report.bubblewrapUsable
            ? '\nThis host can run the bubblewrap sandbox with full isolation.\n'
            : `\nThis host cannot run the bubblewrap sandbox with full isolation${report.container ? `; the container driver (${report.container.engine}) is available` : ''}.\n`,
        );
      }
      if (!report.bubblewrapUsable) process.exitCode = 1;
    });
  examples(doctor, ['gatehouse doctor', 'gatehouse doctor --json']);
}
