/**
 * The container driver against a real engine: `gatehouse run` with `sandbox.driver: container` under Podman,
 * as root (rootful Podman, `--user`) and as the unprivileged test user (rootless Podman, keep-id). No registry
 * is reachable, so the image is built here: node, its libraries and a shell from the host, imported with
 * `podman import`. What the program inside must find: only what the policy allows, no capabilities, no
 * network but the bridge to the egress proxy, and its exit code passed through.
 */
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { appendFileSync, existsSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { assertCheckoutReadable, cleanup, identities, mkdirOwned, requireSandbox, scratch, startOrigin, writeOwned, type Identity } from './sandbox-helpers.js';

const main = new URL('../src/cli/main.js', import.meta.url).pathname;
const IMAGE = 'localhost/gatehouse-sandbox-test:latest';
const hasPodman = spawnSync('podman', ['--version']).status === 0;
const skipWithoutPodman: string | false = !hasPodman && !requireSandbox ? 'podman is not installed (set GATEHOUSE_REQUIRE_SANDBOX=1 to fail instead)' : false;

/** Runs a command as the identity, with HOME in the scratch directory (rootless Podman keeps its images there). */
function asIdentity(
  identity: Identity,
  dir: string,
  command: string,
  args: string[],
  options: { input?: Buffer; env?: Record<string, string> } = {},
): Promise<{ status: number | null; signal: NodeJS.Signals | null; stdout: string; stderr: string }> & { child: ChildProcess } {
  const env = { PATH: process.env.PATH ?? '/usr/bin:/bin', HOME: join(dir, 'home'), GATEHOUSE_HOME: join(dir, 'data'), LANG: 'C.UTF-8', ...options.env };
  const [program, programArgs] = identity.user
    ? ['setpriv', ['--reuid', String(identity.user.uid), '--regid', String(identity.user.gid), '--clear-groups', '--', command, ...args]]
    : [command, args];
  // Asynchronous: the origin server answers from this very process.
  const child = spawn(program as string, programArgs as string[], { cwd: join(dir, 'work'), env, stdio: ['pipe', 'pipe', 'pipe'] });
  const result = new Promise<{ status: number | null; signal: NodeJS.Signals | null; stdout: string; stderr: string }>((resolve) => {
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (chunk: string) => (stdout += chunk));
    child.stderr.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
    child.stdin.end(options.input);
    const timer = setTimeout(() => child.kill('SIGKILL'), 60000);
    child.on('close', (status, signal) => {
      clearTimeout(timer);
      resolve({ status, signal, stdout, stderr });
    });
  });
  return Object.assign(result, { child });
}

/** node, the libraries it loads and a shell, as a tar stream: the smallest image the bridge can run in. */
function imageTarball(): Buffer {
  const libraries = (spawnSync('ldd', [process.execPath], { encoding: 'utf8' }).stdout.match(/\/\S+/g) ?? []).filter((path) => path !== process.execPath);
  const files = [process.execPath, '/bin/sh', ...libraries].map((path) => path.slice(1));
  const tar = spawnSync('tar', ['-c', '--dereference', '-C', '/', ...files], { maxBuffer: 1024 ** 3 });
  assert.equal(tar.status, 0, tar.stderr?.toString());
  return tar.stdout;
}

/**
 * Rootless Podman maps the container's other ids onto the user's subordinate ids. useradd grants them only
 * when /etc/subuid already exists, which a user made before the uidmap package came may lack.
 */
function ensureSubordinateIds(identity: Identity): void {
  if (!identity.user || process.getuid?.() !== 0) return;
  const name = spawnSync('id', ['-nu', String(identity.user.uid)], { encoding: 'utf8' }).stdout.trim();
  for (const file of ['/etc/subuid', '/etc/subgid']) {
    const lines = existsSync(file) ? readFileSync(file, 'utf8').split('\n').filter(Boolean) : [];
    if (lines.some((line) => line.startsWith(`${name}:`))) continue;
    const start = Math.max(100000, ...lines.map((line) => Number(line.split(':')[1]) + Number(line.split(':')[2])));
    appendFileSync(file, `${name}:${start}:65536\n`);
  }
}

for (const identity of identities()) {
  describe(`gatehouse run under Podman as ${identity.name}`, { skip: skipWithoutPodman }, () => {
    let dir: string;
    let origin: Awaited<ReturnType<typeof startOrigin>>;
    const gatehouse = (args: string[]) => asIdentity(identity, dir, process.execPath, [main, ...args]);
    /** Runs a node script in the container; its last stdout line is JSON. */
    const probe = async (script: string) => {
      const result = await gatehouse(['run', '--', 'node', '-e', script]);
      assert.equal(result.status, 0, result.stderr + result.stdout);
      return JSON.parse(result.stdout.trim().split('\n').at(-1)!) as Record<string, unknown>;
    };

    const auditRecords = () =>
      readdirSync(join(dir, 'data', 'audit'))
        .filter((name) => name.endsWith('.jsonl'))
        .flatMap((name) => readFileSync(join(dir, 'data', 'audit', name), 'utf8').split('\n').filter(Boolean))
        .map((line) => JSON.parse(line) as { action: string; surface: string; effect: string; reason: string; details?: Record<string, unknown> });

    before(async () => {
      assertCheckoutReadable(identity);
      assert.ok(hasPodman, 'podman is required (GATEHOUSE_REQUIRE_SANDBOX=1): apt-get install podman runc catatonit uidmap');
      ensureSubordinateIds(identity);
      dir = scratch(identity, 'podman');
      for (const sub of ['data', 'home', 'home/.ssh', 'work', 'work/secret', 'work/secret/pub']) mkdirOwned(identity, join(dir, sub));
      writeOwned(identity, join(dir, 'home', '.ssh', 'id_rsa'), 'PRIVATE KEY');
      writeOwned(identity, join(dir, 'home', '.ssh', 'known_hosts'), 'known hosts');
      writeOwned(identity, join(dir, 'work', 'secret', 'pub', 'note'), 'inside a denied directory');
      writeOwned(identity, join(dir, 'work', 'hello.txt'), 'workspace file');
      origin = await startOrigin();
      writeOwned(
        identity,
        join(dir, 'data', 'gatehouse.yaml'),
        `version: 1
egress:
  resolve: { origin.test: ["127.0.0.1"] }
sandbox:
  driver: container
  container: { engine: podman, image: "${IMAGE}" }
  rlimits: { memory: 1GiB, processes: 512, openFiles: 1024, cpuTime: 10m }
policy:
  filesystem:
    - id: workspace
      allow: { paths: ["./"], access: rw }
    - id: home
      allow: { paths: ["~"], access: ro }
    - id: known-hosts
      allow: { paths: ["~/.ssh/known_hosts"], access: ro }
    - id: published
      allow: { paths: ["./secret/pub"], access: ro }
    - id: secret
      deny: { paths: ["./secret"] }
  network:
    - id: origin
      allow: [origin.test]
    - id: loopback-targets
      allow: [127.0.0.1]
    - id: paste-site
      deny: [denied.test]
`,
        0o644,
      );
      const imported = await asIdentity(identity, dir, 'podman', ['import', '-', IMAGE], { input: imageTarball() });
      assert.equal(imported.status, 0, `podman import failed: ${imported.stderr}`);
    });
    after(async () => {
      await origin?.close();
      if (dir) {
        await asIdentity(identity, dir, 'podman', ['rmi', '--force', IMAGE]);
        // Rootless storage holds files owned by subordinate ids, which only `podman unshare` can remove.
        if (identity.user) await asIdentity(identity, dir, 'podman', ['unshare', 'rm', '-rf', join(dir, 'home', '.local')]);
        cleanup(dir);
      }
    });

    test("passes the program's exit code through and records the container driver", async () => {
      const result = await gatehouse(['run', '--', 'sh', '-c', 'echo inside; exit 7']);
      assert.equal(result.stdout, 'inside\n', result.stderr);
      assert.equal(result.status, 7);
      const records = auditRecords();
      assert.equal(records.findLast((record) => record.action === 'sandbox.launch')?.details?.driver, 'container');
      assert.equal(records.findLast((record) => record.action === 'sandbox.exit')?.details?.code, 7);
    });

    test('dies by the same signal as the program', async () => {
      const result = await gatehouse(['run', '--', 'sh', '-c', 'kill -TERM $$']);
      assert.equal(result.signal, 'SIGTERM', result.stderr);
    });

    test('the program does not outlive a killed Gatehouse', async () => {
      // The program keeps touching a file in the workspace; once Gatehouse is killed (no chance to clean up),
      // an engine's container would run on, attached to nobody.
      const heartbeat = join(dir, 'work', 'heartbeat');
      const running = asIdentity(identity, dir, process.execPath, [main, 'run', '--', 'node', '-e', `setInterval(() => require('fs').writeFileSync('heartbeat', String(Date.now())), 100)`]);
      const beating = async () => {
        const first = existsSync(heartbeat) ? readFileSync(heartbeat, 'utf8') : '';
        await new Promise((resolve) => setTimeout(resolve, 1000));
        return existsSync(heartbeat) && readFileSync(heartbeat, 'utf8') !== first;
      };
      for (let tries = 0; tries < 20 && !(await beating()); tries++);
      assert.ok(await beating(), 'the program started');
      running.child.kill('SIGKILL');
      await new Promise((resolve) => setTimeout(resolve, 3000));
      assert.equal(await beating(), false, 'the program still runs after Gatehouse was killed');
      await running;
    });

    test('the program sees only what the policy allows', async () => {
      const seen = await probe(`
        const fs = require('fs');
        const read = (path) => { try { return fs.readFileSync(path, 'utf8'); } catch (error) { return error.code; } };
        const write = (path) => { try { fs.writeFileSync(path, 'x'); return 'written'; } catch (error) { return error.code; } };
        const list = (path) => { try { return fs.readdirSync(path); } catch (error) { return error.code; } };
        console.log(JSON.stringify({
          workspace: read('hello.txt'), workspaceWrite: write('new.txt'), homeWrite: write(process.env.HOME + '/planted'),
          sshKey: read(process.env.HOME + '/.ssh/id_rsa'), denied: list('secret'), deeperAllow: read('secret/pub/note'),
          config: read('${join(dir, 'data', 'gatehouse.yaml')}'), rootWrite: write('/planted'), run: list('/run'),
          knownHosts: read(process.env.HOME + '/.ssh/known_hosts'), scratch: write('/tmp/scratch'),
        }));`);
      assert.equal(seen.workspace, 'workspace file');
      assert.equal(seen.workspaceWrite, 'written');
      assert.equal(seen.homeWrite, 'EROFS', 'HOME is read-only');
      assert.notEqual(seen.sshKey, 'PRIVATE KEY', '~/.ssh is masked');
      assert.deepEqual(seen.denied, [], 'a denied directory is an empty mask');
      // The engine mounts parents first; a deny must still hide an allow beneath it.
      assert.notEqual(seen.deeperAllow, 'inside a denied directory', 'a deny beats a deeper allow');
      assert.equal(seen.config, 'ENOENT', "Gatehouse's data directory is not there");
      assert.equal(seen.rootWrite, 'EROFS', 'the root filesystem is read-only');
      assert.equal(seen.scratch, 'written', '/tmp is private and writable');
      assert.equal(seen.knownHosts, 'known hosts', 'an allow of that exact place reopens a masked directory');
      // No docker.sock, D-Bus or ssh-agent: only the bridge and the engine's init.
      assert.deepEqual(seen.run, ['gatehouse', 'podman-init'], '/run holds only the bridge');
    });

    test('runs with no capabilities, no new privileges, as the caller', async () => {
      const seen = await probe(`
        const status = require('fs').readFileSync('/proc/self/status', 'utf8');
        const field = (name) => new RegExp('^' + name + ':\\\\s*(\\\\S+)', 'm').exec(status)[1];
        const limits = require('fs').readFileSync('/proc/self/limits', 'utf8');
        const limit = (name) => new RegExp('^' + name + '\\\\s+(\\\\S+)', 'm').exec(limits)[1];
        console.log(JSON.stringify({
          uid: process.getuid(), effective: field('CapEff'), bounding: field('CapBnd'), noNewPrivs: field('NoNewPrivs'),
          limits: [limit('Max data size'), limit('Max processes'), limit('Max open files'), limit('Max cpu time')],
        }));`);
      assert.equal(seen.uid, identity.user?.uid ?? 0);
      assert.equal(seen.effective, '0000000000000000');
      assert.equal(seen.bounding, '0000000000000000');
      assert.equal(seen.noNewPrivs, '1');
      // The policy's rlimits, as the bubblewrap driver sets them (cgroup limits alone are ignored by rootless Podman on cgroup v1).
      assert.deepEqual(seen.limits, [String(1024 ** 3), '512', '1024', '600']);
    });

    test("the user's own proxy settings stay with the engine; the program gets only the bridge", async () => {
      const corporate = 'http://user:hunter2@proxy.corp.test:8080';
      const result = await asIdentity(identity, dir, process.execPath, [main, 'run', '--', 'node', '-e', 'console.log(JSON.stringify([process.env.HTTPS_PROXY, process.env.FTP_PROXY ?? null, process.env.TMPDIR]))'], {
        env: { HTTPS_PROXY: corporate, FTP_PROXY: corporate, TMPDIR: join(dir, 'home') },
      });
      assert.equal(result.status, 0, result.stderr);
      assert.deepEqual(JSON.parse(result.stdout), ['http://127.0.0.1:3128', null, '/tmp']);
    });

    test('with nothing allowed out there is no proxy, and no connection leaves', async () => {
      const offline = join(dir, 'data', 'offline.yaml');
      writeOwned(identity, offline, readFileSync(join(dir, 'data', 'gatehouse.yaml'), 'utf8').replace(/\n {2}network:[^]*$/, '\n'), 0o644);
      const script = `
        const http = require('http'), net = require('net');
        const proxy = new URL(process.env.HTTP_PROXY);
        const socket = net.connect(${origin.port}, '127.0.0.1').on('error', (direct) => {
          http.get({ host: proxy.hostname, port: proxy.port, path: 'http://origin.test/', headers: { host: 'origin.test' } }, () => console.log('reached'))
            .on('error', (error) => console.log(direct.code + ' ' + (error.code ? 'refused' : error.message)));
        });`;
      const result = await gatehouse(['--config', offline, 'run', '--', 'node', '-e', script]);
      assert.equal(result.status, 0, result.stderr);
      assert.equal(result.stdout.trim(), 'ECONNREFUSED refused');
      const denied = auditRecords().filter((record) => record.surface === 'network' && record.effect === 'deny');
      assert.match(denied.at(-1)?.reason ?? '', /no egress proxy/, 'the refused connection is recorded');
    });

    test('a program with a writable HOME cannot reconfigure the engine for the next launch', async () => {
      // ~/.config/containers/containers.conf can give every later container a host directory (or a runtime to
      // exec on the host); ~/.local/share/containers holds the images the next launch runs.
      const homeWritable = join(dir, 'data', 'home-rw.yaml');
      writeOwned(identity, homeWritable, readFileSync(join(dir, 'data', 'gatehouse.yaml'), 'utf8').replace('paths: ["~"], access: ro', 'paths: ["~"], access: rw'), 0o644);
      // A user who has ever configured Podman has the directory.
      for (const sub of ['.config', '.config/containers']) mkdirOwned(identity, join(dir, 'home', sub));
      const planted = join(dir, 'home', '.config', 'containers', 'containers.conf');
      try {
        const plant = await gatehouse(['--config', homeWritable, 'run', '--', 'node', '-e', `
          const fs = require('fs'), attempts = {};
          const attempt = (name, action) => { try { action(); attempts[name] = 'done'; } catch (error) { attempts[name] = error.code; } };
          attempt('config', () => {
            fs.mkdirSync(process.env.HOME + '/.config/containers', { recursive: true });
            fs.writeFileSync(process.env.HOME + '/.config/containers/containers.conf', '[containers]\\nvolumes = ["/etc:/host-etc:ro"]\\n');
          });
          attempt('storage', () => fs.writeFileSync(process.env.HOME + '/.local/share/containers/planted', 'x'));
          console.log(JSON.stringify(attempts));`]);
        assert.equal(plant.status, 0, plant.stderr);
        const attempts = JSON.parse(plant.stdout) as Record<string, string>;
        assert.notEqual(attempts.config, 'done', 'containers.conf could be written');
        assert.notEqual(attempts.storage, 'done', "the engine's storage could be written");
        const next = await gatehouse(['run', '--', 'node', '-e', 'console.log(require("fs").existsSync("/host-etc/passwd"))']);
        assert.equal(next.stdout.trim(), 'false', next.stderr);
      } finally {
        rmSync(planted, { force: true });
      }
    });

    test('has no network but the bridge to the egress proxy', async () => {
      const seen = await probe(`
        const net = require('net'), http = require('http'), dns = require('dns');
        const attempt = (options) => new Promise((resolve) => {
          const socket = net.connect(options, () => { socket.destroy(); resolve('connected'); });
          socket.on('error', (error) => resolve(error.code));
        });
        const viaProxy = (host) => new Promise((resolve) => {
          const proxy = new URL(process.env.HTTP_PROXY);
          http.get({ host: proxy.hostname, port: proxy.port, path: 'http://' + host + '/through-proxy', headers: { host } }, (response) => {
            let body = '';
            response.on('data', (chunk) => (body += chunk)).on('end', () => resolve(response.statusCode + ' ' + body));
          }).on('error', (error) => resolve(error.code));
        });
        (async () => console.log(JSON.stringify({
          hostLoopback: await attempt({ host: '127.0.0.1', port: ${origin.port} }),
          dns: await new Promise((resolve) => dns.lookup('origin.test', (error) => resolve(error ? 'failed' : 'resolved'))),
          allowed: await viaProxy('origin.test:${origin.port}'),
          denied: await viaProxy('denied.test'),
        })))();`);
      assert.equal(seen.hostLoopback, 'ECONNREFUSED', "the host's 127.0.0.1 is not reachable");
      assert.equal(seen.dns, 'failed');
      assert.equal(seen.allowed, '200 hello from /through-proxy');
      assert.match(String(seen.denied), /^403 /);
    });

    test("while a node serves the MCP gateway, the program reaches it at http://127.0.0.1:7401/mcp, and must give an agent key", async () => {
      const added = await gatehouse(['agent', 'add', 'podman-agent', '--json']);
      assert.equal(added.status, 0, added.stderr);
      const key = (JSON.parse(added.stdout) as { key: string }).key;
      const node = gatehouse(['node', '--api', '127.0.0.1:0', '--gateway', '127.0.0.1:0', '--egress', '127.0.0.1:0']);
      try {
        const deadline = Date.now() + 20000;
        while (!existsSync(join(dir, 'data', 'node.sock')) || !existsSync(join(dir, 'data', 'mcp.sock'))) {
          assert.ok(Date.now() < deadline && node.child.exitCode === null, 'the node did not start');
          await new Promise((resolve) => setTimeout(resolve, 50));
        }
        // The answer comes from the gateway itself: the connection crossed the channel to its HTTP socket.
        const seen = await probe(`
          const initialize = async (authorization) => {
            const headers = { 'content-type': 'application/json', accept: 'application/json, text/event-stream' };
            if (authorization) headers.authorization = authorization;
            const body = JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'initialize', params: { protocolVersion: '2025-11-25', capabilities: {}, clientInfo: { name: 'probe', version: '1' } } });
            try {
              const response = await fetch(process.env.GATEHOUSE_GATEWAY_URL, { method: 'POST', headers, body });
              const answer = await response.json();
              return response.status + ' ' + (answer.error?.message ?? answer.result?.serverInfo?.name);
            } catch (error) {
              return error.cause?.code ?? error.message;
            }
          };
          (async () => console.log(JSON.stringify({
            url: process.env.GATEHOUSE_GATEWAY_URL,
            withKey: await initialize('Bearer ${key}'),
            withoutKey: await initialize(''),
          })))();`);
        assert.equal(seen.url, 'http://127.0.0.1:7401/mcp');
        assert.equal(seen.withKey, '200 gatehouse');
        assert.match(String(seen.withoutKey), /^401 /);
      } finally {
        node.child.kill('SIGTERM');
        await node;
      }
    });
  });
}
