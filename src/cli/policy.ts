import type { Command } from 'commander';
import { examples, fail, globalOptions, printJson, usageError } from './common.js';

export function registerPolicyCommands(program: Command): void {
  const policy = program.command('policy').description('check, explain, test, sign and verify policy');

  examples(
    policy
      .command('check')
      .description('validate the configuration and its policy; print a summary')
      .option('--json', 'print JSON')
      .action(async (options: { json?: boolean }, command: Command) => {
        const { commandContext } = await import('./context.js');
        const { loadPolicy } = await import('../node/policy-source.js');
        const context = commandContext(globalOptions(command), { requireConfig: true });
        const { engine, source } = loadPolicy(context.loaded!.config, context.configPath);
        const document = engine.document;
        const summary = {
          ok: true,
          config: context.configPath,
          source,
          version: engine.version,
          digest: engine.digest,
          rules: {
            network: document.network.length,
            filesystem: document.filesystem.length,
            credentials: document.credentials.length,
            mcp: document.mcp.length,
          },
          modes: { network: engine.mode('network'), filesystem: engine.mode('filesystem'), credentials: engine.mode('credentials'), mcp: engine.mode('mcp') },
        };
        if (options.json) return printJson(summary);
        process.stdout.write(`ok: ${context.configPath}\n  policy ${engine.version} (${engine.digest})\n`);
        for (const [surface, count] of Object.entries(summary.rules)) {
          process.stdout.write(`  ${surface.padEnd(12)} ${String(count).padStart(4)} rule${count === 1 ? '' : 's'}  ${summary.modes[surface as keyof typeof summary.modes]}\n`);
        }
      }),
    ['gatehouse policy check', 'gatehouse --config team.yaml policy check --json'],
  );

  examples(
    policy
      .command('explain')
      .description('decide one request and show every rule that matched, and why (exit 1 when denied)')
      .requiredOption('-r, --request <json>', 'the request as JSON, @FILE to read a file, or - for stdin')
      .option('--json', 'print JSON')
      .action(async (options: { request: string; json?: boolean }, command: Command) => {
        const { commandContext } = await import('./context.js');
        const { loadPolicy } = await import('../node/policy-source.js');
        const { parseDecisionRequest } = await import('../policy/request-schema.js');
        const context = commandContext(globalOptions(command), { requireConfig: true });
        const { engine } = loadPolicy(context.loaded!.config, context.configPath);
        const parsed = parseDecisionRequest(await readJsonArgument(options.request));
        if ('error' in parsed) throw usageError(`--request: ${parsed.error}`);
        const explanation = engine.explain(parsed.request);
        if (options.json) printJson(explanation);
        else {
          const { decision } = explanation;
          process.stdout.write(`${decision.effect.toUpperCase()}  ${decision.reason}\n`);
          if (decision.requireApproval) process.stdout.write('  needs approval by a person before it runs\n');
          if (decision.needsInspection) process.stdout.write('  holds only if the HTTP request is inspected (method/path rules apply)\n');
          process.stdout.write(`  request as seen: ${JSON.stringify(explanation.normalised)}\n`);
          process.stdout.write(`  policy ${engine.version}\n`);
          for (const trace of explanation.rules) process.stdout.write(`  ${trace.matched ? '✓' : '·'} ${trace.id} (${trace.effect}): ${trace.why}\n`);
          if (explanation.rules.length === 0) process.stdout.write(`  (no ${parsed.request.surface} rules in this policy)\n`);
        }
        if (explanation.decision.effect === 'deny') fail(1);
      }),
    [
      `gatehouse policy explain --request '{"surface":"network","agent":"ci-bot","host":"api.github.com","port":443}'`,
      `gatehouse policy explain --request '{"surface":"filesystem","agent":"dev","path":"~/.ssh/id_rsa","access":"read"}'`,
      `echo '{"surface":"mcp","agent":"dev","server":"github","tool":"delete_repo","args":{}}' | gatehouse policy explain -r -`,
    ],
  );

  examples(
    policy
      .command('test')
      .description('run policy test cases; exit 1 if any case fails')
      .argument('<cases>', 'a YAML file of cases (see examples/team.cases.yaml)')
      .option('--json', 'print JSON')
      .action(async (file: string, options: { json?: boolean }, command: Command) => {
        const { readFileSync } = await import('node:fs');
        const { dirname, resolve } = await import('node:path');
        const { parseCases, runCases } = await import('../policy/cases.js');
        const { commandContext } = await import('./context.js');
        const { loadPolicy } = await import('../node/policy-source.js');
        const path = resolve(file);
        let text: string;
        try {
          text = readFileSync(path, 'utf8');
        } catch {
          throw usageError(`cannot read the cases file ${path}`);
        }
        const cases = parseCases(text, path, dirname(path));
        const globals = globalOptions(command);
        const context = commandContext(cases.config && !globals.config ? { ...globals, config: resolve(dirname(path), cases.config) } : globals, { requireConfig: true });
        const { engine } = loadPolicy(context.loaded!.config, context.configPath);
        const results = runCases(engine, cases.cases);
        const failed = results.filter((r) => !r.passed).length;
        if (options.json) printJson({ passed: results.length - failed, failed, policy: { version: engine.version, digest: engine.digest }, results });
        else {
          for (const result of results) {
            process.stdout.write(`${result.passed ? '✓' : '✗'} ${result.name}\n`);
            if (!result.passed) {
              process.stdout.write(`    request   ${JSON.stringify(result.request)}\n`);
              for (const line of result.diff) process.stdout.write(`  ${line}\n`);
            }
          }
          process.stdout.write(`\n${results.length - failed} passed, ${failed} failed (policy ${engine.version})\n`);
        }
        if (failed > 0) fail(1);
      }),
    ['gatehouse --config examples/team.yaml policy test examples/team.cases.yaml', 'gatehouse policy test cases.yaml --json'],
  );

  examples(
    policy
      .command('bundle')
      .description('write the policy as a versioned bundle signed with an Ed25519 key')
      .option('--bundle-version <label>', 'the bundle version (default: a UTC timestamp)')
      .option('-o, --out <file>', 'where to write it (default: ./policy-<version>.bundle.json)')
      .option('-k, --key <file>', 'private key (default: <data-dir>/keys/node.key)')
      .option('--json', 'print JSON')
      .action(async (options: { bundleVersion?: string; out?: string; key?: string; json?: boolean }, command: Command) => {
        const { writeFileSync } = await import('node:fs');
        const { join, resolve } = await import('node:path');
        const { commandContext } = await import('./context.js');
        const { compilePolicy } = await import('../policy/compile.js');
        const { createBundle } = await import('../policy/bundle.js');
        const { loadPrivateKey } = await import('../util/keys.js');
        const context = commandContext(globalOptions(command), { requireConfig: true });
        const config = context.loaded!.config;
        if (config.node.policyBundle !== undefined) {
          throw usageError(`${context.configPath} takes its policy from the bundle ${config.node.policyBundle}; bundle a config that has the policy: section instead`);
        }
        const document = config.policy;
        compilePolicy(document); // refuse to sign a policy that would not compile
        const key = loadPrivateKey(options.key ? resolve(options.key) : join(context.dataDir, 'keys', 'node.key'));
        const version = options.bundleVersion ?? new Date().toISOString().replace(/[-:]/g, '').replace(/\.\d+Z$/, 'Z');
        const { text, address } = createBundle(document, version, key);
        const out = resolve(options.out ?? `policy-${version}.bundle.json`);
        writeFileSync(out, text, { mode: 0o644 });
        if (options.json) printJson({ path: out, version, address, keyId: key.keyId });
        else process.stdout.write(`wrote ${out}\n  version ${version}\n  address ${address}\n  signed by ${key.keyId}\n`);
      }),
    ['gatehouse keys generate && gatehouse policy bundle --bundle-version 2026.11.1', 'gatehouse policy bundle --key release.key --out dist/policy.bundle.json'],
  );

  examples(
    policy
      .command('verify')
      .description('check a bundle: intact, and signed by a trusted key (exit 1 if not)')
      .argument('<bundle>', 'the bundle file')
      .option('-k, --key <file...>', 'trusted public keys (default: node.trustedKeys, else <data-dir>/keys/node.pub)')
      .option('--json', 'print JSON')
      .action(async (file: string, options: { key?: string[]; json?: boolean }, command: Command) => {
        const { existsSync, readFileSync } = await import('node:fs');
        const { dirname, join, resolve } = await import('node:path');
        const { commandContext } = await import('./context.js');
        const { verifyBundle } = await import('../policy/bundle.js');
        const { loadPublicKey } = await import('../util/keys.js');
        const context = commandContext(globalOptions(command), { requireConfig: false });
        let keys = options.key?.map((k) => resolve(k));
        if (!keys && context.loaded && context.loaded.config.node.trustedKeys.length > 0) {
          keys = context.loaded.config.node.trustedKeys.map((k) => (k.includes('-----BEGIN') ? k : resolve(dirname(context.configPath!), k)));
        }
        if (!keys) {
          const own = join(context.dataDir, 'keys', 'node.pub');
          if (!existsSync(own)) throw usageError('no trusted keys: pass --key FILE, set node.trustedKeys, or run "gatehouse keys generate"');
          keys = [own];
        }
        const path = resolve(file);
        let text: string;
        try {
          text = readFileSync(path, 'utf8');
        } catch {
          throw usageError(`cannot read the bundle ${path}`);
        }
        const verified = verifyBundle(text, keys.map(loadPublicKey), path);
        const summary = { ok: true, path, version: verified.statement.version, address: verified.address, digest: verified.statement.digest, signedBy: verified.keyId, createdAt: verified.statement.createdAt };
        if (options.json) printJson(summary);
        else process.stdout.write(`ok: ${path}\n  version ${summary.version}, signed by ${summary.signedBy} at ${summary.createdAt}\n  address ${summary.address}\n`);
      }),
    ['gatehouse policy verify policy-2026.11.1.bundle.json', 'gatehouse policy verify bundle.json --key release.pub --json'],
  );
}

async function readJsonArgument(argument: string): Promise<unknown> {
  let text = argument;
  if (argument === '-') {
    const chunks: Buffer[] = [];
    for await (const chunk of process.stdin) chunks.push(chunk as Buffer);
    text = Buffer.concat(chunks).toString('utf8');
  } else if (argument.startsWith('@')) {
    const { readFileSync } = await import('node:fs');
    try {
      text = readFileSync(argument.slice(1), 'utf8');
    } catch {
      throw usageError(`cannot read ${argument.slice(1)}`);
    }
  }
  try {
    return JSON.parse(text);
  } catch {
    throw usageError('--request is not valid JSON');
  }
}
