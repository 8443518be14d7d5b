/**
 * git over HTTPS through the proxy with TLS inspection: a real `git` client, and git's own smart-HTTP
 * backend (`git http-backend`, run as CGI) behind a small HTTPS server on loopback. Clone is allowed; push
 * is denied by a path rule that only inspection can apply.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer as createHttpsServer, type Server } from 'node:https';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { createScanner } from '../src/dlp/index.js';
import { checksummedToken, seededRandom } from '../src/dlp/samples.js';
import { CertificateAuthority } from '../src/egress/ca.js';
import { PlaceholderRegistry } from '../src/secrets/placeholders.js';
import { bridgeToSession, startTestProxy, type TestProxy } from './egress-helpers.js';
import { relayCgi, spawnGitBackend } from './cgi.js';

const POLICY = `
network:
  - id: git-host
    allow: [git.test, mirror.test]
    inspect: true
  - id: loopback-targets
    allow: [127.0.0.1]
  - id: no-push
    deny: [git.test]
    paths: ["/**/git-receive-pack"]
credentials:
  - id: git-token
    secret: git-token
    hosts: [git.test]
`;

/** Runs git without blocking the event loop (the proxy under test lives in this process). */
function git(args: string[], cwd: string): Promise<{ status: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const child = spawn('git', args, {
      cwd,
      env: { PATH: process.env.PATH ?? '/usr/bin:/bin', HOME: cwd, GIT_CONFIG_NOSYSTEM: '1', GIT_TERMINAL_PROMPT: '0' },
    });
    let stdout = '';
    let stderr = '';
    const timer = setTimeout(() => child.kill('SIGKILL'), 20_000);
    child.stdout.on('data', (chunk: Buffer) => (stdout += chunk.toString()));
    child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
    child.on('close', (status) => {
      clearTimeout(timer);
      resolve({ status, stdout, stderr });
    });
  });
}

/**
 * An HTTPS server that runs `git http-backend` as a CGI program for every request. With `password`, it
 * demands HTTP Basic auth first (as a forge does for a private repository) and lists what it was sent.
 */
async function startGitServer(
  root: string,
  pair: { certificate: string; key: string },
  password?: string,
): Promise<{ server: Server; port: number; authorizations: string[] }> {
  const authorizations: string[] = [];
  const server = createHttpsServer({ cert: pair.certificate, key: pair.key }, (request, response) => {
    if (password !== undefined) {
      const authorization = request.headers.authorization;
      if (authorization) authorizations.push(authorization);
      const [scheme, encoded] = (authorization ?? '').split(' ');
      const password_ = scheme === 'Basic' ? Buffer.from(encoded ?? '', 'base64').toString('utf8').split(':').slice(1).join(':') : undefined;
      if (password_ !== password) {
        request.resume();
        response.writeHead(401, { 'www-authenticate': 'Basic realm="repo"', 'content-length': '0' });
        response.end();
        return;
      }
    }
    const backend = spawnGitBackend(root, request, 'tester');
    relayCgi(backend, response);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return { server, port: (server.address() as AddressInfo).port, authorizations };
}

describe('git over HTTPS through the egress proxy', () => {
  const dir = mkdtempSync(join(tmpdir(), 'gatehouse-git-'));
  let gate: TestProxy;
  let gitServer: { server: Server; port: number };
  let privateServer: Awaited<ReturnType<typeof startGitServer>>;
  let mirrorServer: Awaited<ReturnType<typeof startGitServer>>;
  let bridge: Awaited<ReturnType<typeof bridgeToSession>>;
  const proxyCaFile = join(dir, 'proxy-ca.pem');
  const placeholders = new PlaceholderRegistry();
  const realToken = checksummedToken('ghp_', seededRandom(404));
  let placeholderToken: string;

  before(async () => {
    const root = join(dir, 'srv');
    const seed = join(dir, 'seed');
    assert.equal((await git(['init', '-q', '--bare', join(root, 'repo.git')], dir)).status, 0);
    await git(['config', 'http.receivepack', 'true'], join(root, 'repo.git'));
    assert.equal((await git(['init', '-q', seed], dir)).status, 0);
    writeFileSync(join(seed, 'README'), 'hello from loopback\n');
    await git(['add', 'README'], seed);
    await git(['-c', 'user.name=t', '-c', 'user.email=t@t', 'commit', '-q', '-m', 'first'], seed);
    assert.equal((await git(['push', '-q', join(root, 'repo.git'), 'HEAD:refs/heads/main'], seed)).status, 0);
    await git(['symbolic-ref', 'HEAD', 'refs/heads/main'], join(root, 'repo.git'));

    const publicCa = await CertificateAuthority.create('Test public CA');
    const proxyCa = await CertificateAuthority.create('Test proxy CA');
    writeFileSync(proxyCaFile, proxyCa.certificatePem);
    gitServer = await startGitServer(root, await publicCa.issue('git.test'));
    privateServer = await startGitServer(root, await publicCa.issue('git.test'), realToken);
    mirrorServer = await startGitServer(root, await publicCa.issue('mirror.test'), realToken);
    gate = await startTestProxy(POLICY, {
      ca: proxyCa,
      upstreamCa: [publicCa.certificatePem],
      scanner: createScanner(),
      placeholders,
      settings: { resolve: { 'git.test': ['127.0.0.1'], 'mirror.test': ['127.0.0.1'] } },
    });
    const grant = gate.holder.current.grants({ agent: 'alice' }).find((g) => g.secret === 'git-token');
    assert.ok(grant);
    placeholderToken = placeholders.issue('sess-git', grant, realToken).value;
    bridge = await bridgeToSession((await gate.proxy.openSession({ agent: 'alice' }, 'sess-git')).socketPath);
  });
  after(async () => {
    await bridge.close();
    await gate.close();
    for (const server of [gitServer, privateServer, mirrorServer]) {
      server.server.closeAllConnections();
      server.server.close();
    }
    rmSync(dir, { recursive: true, force: true });
  });

  const viaProxy = (args: string[], cwd: string): ReturnType<typeof git> =>
    git(['-c', `http.proxy=http://alice:key-alice@127.0.0.1:${gate.proxy.address.port}`, '-c', `http.sslCAInfo=${proxyCaFile}`, ...args], cwd);

  it('clones through the inspecting proxy, and each smart-HTTP request is recorded', async () => {
    const clone = await viaProxy(['clone', '-q', `https://git.test:${gitServer.port}/repo.git`, join(dir, 'clone')], dir);
    assert.equal(clone.status, 0, clone.stderr);
    assert.equal(readFileSync(join(dir, 'clone', 'README'), 'utf8'), 'hello from loopback\n');
    const paths = gate.audit.records.filter((r) => r.action === 'request' && r.effect === 'allow').map((r) => r.details?.path);
    assert.ok(paths.includes('/repo.git/info/refs'));
    assert.ok(paths.includes('/repo.git/git-upload-pack'));
  });

  it('refuses a push that a path rule denies, and git reports the 403', async () => {
    const work = join(dir, 'clone');
    writeFileSync(join(work, 'NEW'), 'change\n');
    await git(['add', 'NEW'], work);
    await git(['-c', 'user.name=t', '-c', 'user.email=t@t', 'commit', '-q', '-m', 'second'], work);
    const push = await viaProxy(['push', '-q', 'origin', 'HEAD:main'], work);
    assert.notEqual(push.status, 0);
    assert.match(push.stderr, /403/);
    const denied = gate.audit.records.find((r) => r.effect === 'deny' && r.rules.includes('no-push'));
    assert.ok(denied, 'the denied push is recorded with its rule');
  });

  // The sandbox's view: the agent holds only the placeholder (say as GITHUB_TOKEN) and reaches the proxy
  // through its session; git sends the token as the password of HTTP Basic auth.
  const viaSession = (args: string[], cwd: string): ReturnType<typeof git> =>
    git(['-c', `http.proxy=http://127.0.0.1:${bridge.port}`, '-c', `http.sslCAInfo=${proxyCaFile}`, ...args], cwd);

  it('swaps a placeholder git sends as a Basic-auth password (credential helper) for the real token at the granted host', async () => {
    const helper = `!f() { echo username=x-access-token; echo password=${placeholderToken}; }; f`;
    const clone = await viaSession(['-c', `credential.helper=${helper}`, 'clone', '-q', `https://git.test:${privateServer.port}/repo.git`, join(dir, 'private')], dir);
    assert.equal(clone.status, 0, clone.stderr);
    assert.equal(readFileSync(join(dir, 'private', 'README'), 'utf8'), 'hello from loopback\n');
    const expected = `Basic ${Buffer.from(`x-access-token:${realToken}`).toString('base64')}`;
    assert.ok(privateServer.authorizations.includes(expected), 'the server received the real token');
    assert.ok(!privateServer.authorizations.some((value) => Buffer.from(value.slice(6), 'base64').toString().includes(placeholderToken)), 'never the placeholder');
    assert.ok(!JSON.stringify(gate.audit.records).includes(realToken), 'the real token is in no record');
  });

  it('blocks the same placeholder in a clone URL heading to a host outside its grant, as attempted exfiltration', async () => {
    const url = `https://x-access-token:${placeholderToken}@mirror.test:${mirrorServer.port}/repo.git`;
    const clone = await viaSession(['clone', '-q', url, join(dir, 'mirror')], dir);
    assert.notEqual(clone.status, 0);
    assert.match(clone.stderr, /403/);
    assert.deepEqual(mirrorServer.authorizations, [], 'no credential reached the other host');
    const record = gate.audit.records.find((r) => r.details?.reasonCode === 'placeholder-exfiltration');
    assert.equal(record?.resource.startsWith(`https://mirror.test:${mirrorServer.port}/`), true, record?.resource);
    assert.equal(record?.principal.session, 'sess-git');
    assert.deepEqual(record?.details?.attemptedExfiltration, { secret: 'git-token', rule: 'git-token', session: 'sess-git' });
  });
});
