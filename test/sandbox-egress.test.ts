/**
 * `gatehouse run` with the real egress proxy as the sandbox's only way out: allowed hosts are reachable
 * through the bridge, denied ones get the proxy's refusal, and a secret granted to a host reaches that host
 * over HTTPS while the program only ever holds a placeholder. Real CLI, bwrap, curl, TLS and audit log.
 */
import { SAMPLES, seededRandom } from '../src/dlp/samples.js';
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { CertificateAuthority } from '../src/egress/ca.js';
import { startTlsEchoServer } from './egress-helpers.js';
import { cleanup, collectOutput, hasBwrap, identities, scratch, skipWithoutBwrap, startGitHttpsServer, startOrigin, writeOwned, mkdirOwned, assertCheckoutReadable, type Identity } from './sandbox-helpers.js';
import { spawnSync } from 'node:child_process';

const main = new URL('../src/cli/main.js', import.meta.url).pathname;
const REAL_TOKEN = 'ghp_' + 'R3alT0kenValue0123456789abcdefABCDEF'.slice(0, 36);

function spawnAs(identity: Identity, dir: string, args: string[]): ChildProcessWithoutNullStreams {
  const env = { PATH: process.env.PATH ?? '/usr/bin:/bin', HOME: join(dir, 'home'), GATEHOUSE_HOME: join(dir, 'data'), LANG: 'C.UTF-8' };
  const [command, commandArgs] = identity.user
    ? ['setpriv', ['--reuid', String(identity.user.uid), '--regid', String(identity.user.gid), '--clear-groups', '--', process.execPath, main, ...args]]
    : [process.execPath, [main, ...args]];
  return spawn(command as string, commandArgs as string[], { cwd: dir, env, stdio: 'pipe' });
}

function run(identity: Identity, dir: string, args: string[]): Promise<{ status: number | null; stdout: string; stderr: string }> {
  // Asynchronous: the origin servers answer from this very process.
  return collectOutput(spawnAs(identity, dir, args));
}

for (const identity of identities()) {
  describe(`gatehouse run through the egress proxy as ${identity.name}`, { skip: skipWithoutBwrap }, () => {
    let dir: string;
    let origin: Awaited<ReturnType<typeof startOrigin>>;
    let api: Awaited<ReturnType<typeof startTlsEchoServer>>;
    let gitServer: Awaited<ReturnType<typeof startGitHttpsServer>>;
    let repositories: string;

    before(async () => {
      assertCheckoutReadable(identity);
      assert.ok(hasBwrap, 'bwrap is required (GATEHOUSE_REQUIRE_SANDBOX=1): apt-get install bubblewrap');
      dir = scratch(identity, 'egress');
      // The config and the files it names live in the data directory (hidden from the sandbox):
      // `gatehouse run` refuses a config the program may write.
      mkdirOwned(identity, join(dir, 'data'));
      // HOME apart from the workspace, as for a real user.
      mkdirOwned(identity, join(dir, 'home'));
      origin = await startOrigin();
      // api.test presents a certificate from a "public" CA the egress proxy trusts upstream.
      const publicCa = await CertificateAuthority.create('test public CA');
      api = await startTlsEchoServer(publicCa, 'api.test');
      writeOwned(identity, join(dir, 'data', 'public-ca.pem'), publicCa.certificatePem, 0o644);
      writeOwned(identity, join(dir, 'data', 'token.txt'), REAL_TOKEN + '\n');
      // A bare repository with one commit, served over HTTPS as git.test.
      repositories = scratch({ name: 'host' }, 'git-repos');
      const git = (args: string[], cwd: string) => spawnSync('git', args, { cwd, encoding: 'utf8', env: { PATH: process.env.PATH ?? '/usr/bin:/bin', HOME: repositories, GIT_CONFIG_NOSYSTEM: '1' } });
      git(['init', '-q', '-b', 'main', 'source'], repositories);
      spawnSync('sh', ['-c', 'echo "sandboxed clone works" > README'], { cwd: join(repositories, 'source') });
      git(['add', 'README'], join(repositories, 'source'));
      git(['-c', 'user.name=t', '-c', 'user.email=t@t', 'commit', '-qm', 'first'], join(repositories, 'source'));
      git(['clone', '-q', '--bare', 'source', 'project.git'], repositories);
      gitServer = await startGitHttpsServer(repositories, await publicCa.issue('git.test'));
      const config = `version: 1
egress:
  resolve: { origin.test: ["127.0.0.1"], api.test: ["127.0.0.1"], git.test: ["127.0.0.1"] }
  upstreamCa: ["${join(dir, 'data', 'public-ca.pem')}"]
secrets:
  providers:
    github-token: { file: "${join(dir, 'data', 'token.txt')}" }
policy:
  filesystem:
    - id: workspace
      allow: { paths: ["./"], access: rw }
  network:
    - id: origin
      allow: [origin.test]
    - id: api
      allow: [api.test]
      inspect: true
    - id: git-host
      allow: [git.test]
      inspect: true
    - id: loopback-targets
      allow: [127.0.0.1]
    - id: paste-site
      deny: [denied.test]
  credentials:
    - id: github-token
      secret: github-token
      env: GITHUB_TOKEN
      hosts: [api.test]
`;
      writeOwned(identity, join(dir, 'data', 'gatehouse.yaml'), config, 0o644);
    });
    after(async () => {
      await origin.close();
      await api.close();
      await gitServer.close();
      cleanup(dir, repositories);
    });

    test('reaches an allowed host through the bridge and the proxy; a denied host gets the refusal, recorded', async () => {
      const script = `curl -sS --max-time 10 http://origin.test:${origin.port}/allowed; echo; curl -s -o /dev/null -w '%{http_code}' --max-time 10 http://denied.test/`;
      const result = await run(identity, dir, ['run', '--', 'sh', '-c', script]);
      assert.equal(result.status, 0, result.stderr);
      assert.match(result.stdout, /hello from \/allowed/);
      assert.match(result.stdout, /403$/);
      const auditDir = join(dir, 'data', 'audit');
      const records = readdirSync(auditDir)
        .filter((name) => name.endsWith('.jsonl'))
        .flatMap((name) => readFileSync(join(auditDir, name), 'utf8').split('\n').filter(Boolean).map((line) => JSON.parse(line) as { surface: string; effect: string; resource: string }));
      assert.ok(records.some((record) => record.surface === 'network' && record.effect === 'deny' && record.resource.includes('denied.test')), 'the denied connection is in the audit log');
    });

    test('a program that floods a denied host and then dies by a signal leaves its first refusals and a summary counting the rest', async () => {
      const script = `for i in $(seq 30); do curl -s -o /dev/null --max-time 5 http://denied.test/flood-then-signal; done; kill -TERM $$`;
      const result = await run(identity, dir, ['run', '--', 'sh', '-c', script]);
      assert.equal(result.status, null, result.stderr);
      const auditDir = join(dir, 'data', 'audit');
      const records = readdirSync(auditDir)
        .filter((name) => name.endsWith('.jsonl'))
        .flatMap((name) => readFileSync(join(auditDir, name), 'utf8').split('\n').filter(Boolean).map((line) => JSON.parse(line) as { action: string; effect: string; resource: string; principal: { session?: string }; details?: { suppressed?: number } }));
      const session = records.findLast((record) => record.action === 'sandbox.launch' && record.resource.includes('flood-then-signal'))?.principal.session;
      assert.ok(session, 'the launch names its egress session');
      const ofRun = records.filter((record) => record.principal.session === session);
      const full = ofRun.filter((record) => record.effect === 'deny' && record.resource.includes('denied.test'));
      const summaries = ofRun.filter((record) => record.action === 'refusals.suppressed');
      assert.ok(full.length > 0 && full.length < 30, `${full.length} of 30 refusals recorded one by one`);
      assert.equal(summaries.length, 1, 'the proxy wrote its summary before the audit log closed');
      assert.equal(full.length + (summaries[0]?.details?.suppressed ?? 0), 30);
    });

    test('a granted secret reaches its host over HTTPS while the program only holds a placeholder', async () => {
      const script = `printf 'inside:%s\\n' "$GITHUB_TOKEN"; curl -sS --max-time 10 -H "Authorization: Bearer $GITHUB_TOKEN" https://api.test:${api.port}/user`;
      const result = await run(identity, dir, ['run', '--', 'sh', '-c', script]);
      assert.equal(result.status, 0, result.stderr + result.stdout);
      const inside = /inside:(\S*)/.exec(result.stdout)?.[1] ?? '';
      assert.ok(inside.length > 0, 'a placeholder is set');
      assert.notEqual(inside, REAL_TOKEN);
      // (The echo server reflects the header it received, so only the variable itself is checked here.)
      const seen = api.requests.at(-1);
      assert.equal(seen?.headers.authorization, `Bearer ${REAL_TOKEN}`);
    });

    test('a secret the program sends to an inspected host is blocked before it leaves', async () => {
      const leaked = SAMPLES['stripe-secret-key']!(seededRandom(7));
      const before = api.requests.length;
      const script = `curl -s -o /dev/null -w '%{http_code}' --max-time 10 -X POST --data 'key=${leaked}' https://api.test:${api.port}/upload`;
      const result = await run(identity, dir, ['run', '--', 'sh', '-c', script]);
      assert.equal(result.stdout, '403', result.stderr + result.stdout);
      assert.equal(api.requests.length, before, 'the server never received the request');
    });

    test('while a node runs, a run goes through its proxy and writes to its audit log; a run on another policy is refused', async () => {
      const node = spawnAs(identity, dir, ['node', '--api', '127.0.0.1:0', '--gateway', '127.0.0.1:0', '--egress', '127.0.0.1:0']);
      let nodeOutput = '';
      node.stdout.setEncoding('utf8').on('data', (chunk: string) => (nodeOutput += chunk));
      node.stderr.setEncoding('utf8').on('data', (chunk: string) => (nodeOutput += chunk));
      const nodeExited = new Promise((resolve) => node.once('exit', resolve));
      try {
        const deadline = Date.now() + 20000;
        while (!existsSync(join(dir, 'data', 'node.sock'))) {
          assert.ok(Date.now() < deadline && node.exitCode === null, `the node did not start: ${nodeOutput}`);
          await new Promise((resolve) => setTimeout(resolve, 50));
        }
        const script = `curl -sS --max-time 10 http://origin.test:${origin.port}/with-node; echo; curl -s -o /dev/null -w '%{http_code}\\n' --max-time 10 http://denied.test/; printf 'inside:%s\\n' "$GITHUB_TOKEN"; curl -sS --max-time 10 -H "Authorization: Bearer $GITHUB_TOKEN" https://api.test:${api.port}/user`;
        const result = await run(identity, dir, ['run', '--', 'sh', '-c', script]);
        assert.equal(result.status, 0, result.stderr + result.stdout + nodeOutput);
        assert.match(result.stdout, /hello from \/with-node/);
        assert.match(result.stdout, /^403$/m);
        const inside = /inside:(\S*)/.exec(result.stdout)?.[1] ?? '';
        assert.ok(inside.length > 0 && inside !== REAL_TOKEN, 'the program holds a placeholder, not the secret');
        assert.equal(api.requests.at(-1)?.headers.authorization, `Bearer ${REAL_TOKEN}`, 'the node swapped it on the way to its host');

        // Another config in the same data dir is another policy: the node refuses the run rather than mix them.
        writeOwned(identity, join(dir, 'data', 'other.yaml'), 'version: 1\npolicy:\n  filesystem:\n    - id: workspace\n      allow: { paths: ["./"], access: rw }\n', 0o644);
        const other = await run(identity, dir, ['--config', join(dir, 'data', 'other.yaml'), 'run', '--', 'true']);
        assert.equal(other.status, 2, other.stderr);
        assert.match(other.stderr, /node running for this data dir refused the run: the node enforces policy .* but this run loaded/);
      } finally {
        node.kill('SIGTERM');
        await nodeExited;
      }
      assert.ok(!existsSync(join(dir, 'data', 'node.sock')), 'the node removes its control socket when it stops');

      // One chained log, written by the node alone, holds the run's launch, its connections and its exit.
      const verify = await run(identity, dir, ['audit', 'verify']);
      assert.equal(verify.status, 0, verify.stdout + verify.stderr);
      const auditDir = join(dir, 'data', 'audit');
      const records = readdirSync(auditDir)
        .filter((name) => name.endsWith('.jsonl'))
        .flatMap((name) => readFileSync(join(auditDir, name), 'utf8').split('\n').filter(Boolean).map((line) => JSON.parse(line) as { action: string; effect: string; resource: string; principal: { session?: string } }));
      const launch = records.findLast((record) => record.action === 'sandbox.launch' && record.resource.includes('/with-node'));
      assert.ok(launch, 'the launch is in the node\'s log');
      assert.ok(records.some((record) => record.action === 'sandbox.exit' && record.resource === launch.resource), 'and the exit');
      const session = launch.principal.session;
      assert.ok(session, 'the launch names its egress session');
      assert.ok(records.some((record) => record.principal.session === session && record.effect === 'deny' && record.resource.includes('denied.test')), 'the denied connection joins the launch by session');
    });

    test('git clone over HTTPS from a local server works through the proxy', async () => {
      const result = await run(identity, dir, ['run', '--', 'sh', '-c', `git -c http.sslVerify=true clone -q https://git.test:${gitServer.port}/project.git cloned && cat cloned/README`]);
      assert.equal(result.status, 0, result.stderr + result.stdout);
      assert.match(result.stdout, /sandboxed clone works/);
    });
  });
}
