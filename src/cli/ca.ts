/**
 * `gatehouse ca`: the local CA the egress proxy uses for TLS inspection. `export` prints its certificate
 * (creating the CA on first use) so it can be installed into trust stores.
 */
import type { Command } from 'commander';
import { examples, globalOptions, printJson } from './common.js';

export function registerCaCommands(program: Command): void {
  const ca = program.command('ca').description('the local CA for TLS inspection by the egress proxy');
  examples(
    ca
      .command('export')
      .description('print the CA certificate (PEM), creating the CA in the data dir on first use')
      .option('-o, --out <file>', 'write the PEM to this file instead of stdout')
      .option('--json', 'print the path and PEM as JSON')
      .action(async (options: { out?: string; json?: boolean }, command: Command) => {
        const { writeFileSync } = await import('node:fs');
        const { join } = await import('node:path');
        const { commandContext } = await import('./context.js');
        const { CertificateAuthority } = await import('../egress/ca.js');
        const { dataDir } = commandContext(globalOptions(command), { requireConfig: false });
        const authority = await CertificateAuthority.loadOrCreate(dataDir);
        if (options.out) writeFileSync(options.out, authority.certificatePem, { mode: 0o644 });
        if (options.json) printJson({ path: join(dataDir, 'egress-ca', 'ca.pem'), pem: authority.certificatePem });
        else if (!options.out) process.stdout.write(authority.certificatePem);
      }),
    [
      'gatehouse ca export > gatehouse-ca.pem',
      'gatehouse ca export --out /usr/local/share/ca-certificates/gatehouse.crt && sudo update-ca-certificates',
      'NODE_EXTRA_CA_CERTS=$(gatehouse ca export --json | jq -r .path) node app.js',
    ],
  );
}
