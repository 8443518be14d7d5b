import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { policySchema, type PolicyDocument } from '../config/policy-schema.js';
import { compilePolicy, type CompileOptions } from './compile.js';
import type { DecisionRequest, McpRequest } from './types.js';

function policy(spec: Record<string, unknown>, options: CompileOptions = {}) {
  return compilePolicy(policySchema.parse(spec) as PolicyDocument, { home: '/home/dev', workspace: '/work/repo', resolveSymlinks: false, ...options });
}

const net = (host: string, port = 443, extra: Partial<DecisionRequest> = {}): DecisionRequest => ({ surface: 'network', agent: 'dev', host, port, ...extra }) as DecisionRequest;

describe('network: IP literals in every encoding', () => {
  const engine = policy({
    network: [
      { id: 'everything', allow: ['*'] },
      { id: 'no-loopback', deny: ['127.0.0.0/8'] },
    ],
  });
  const encodings = [
    '127.0.0.1',
    '2130706433', // decimal
    '0177.0.0.1', // octal
    '0x7f.1', // hex, short form
    '0x7f000001',
    '127.1', // short
    '127.000.000.001',
    '127.0.0.1.', // trailing dot
    '[::ffff:127.0.0.1]', // IPv4-mapped, bracketed
    '::ffff:7f00:1',
    '::127.0.0.1', // IPv4-compatible
    '64:ff9b::7f00:1', // NAT64
    '2002:7f00:1::', // 6to4
    '[::ffff:127.0.0.1%25eth0]', // zone id, URL-encoded
    '::ffff:127.0.0.1%eth0',
    '１２７.０.０.１', // full-width digits and dots
  ];
  for (const host of encodings) {
    it(`denies ${host} as loopback`, () => {
      const decision = engine.decide(net(host, 80));
      assert.equal(decision.effect, 'deny', decision.reason);
      assert.deepEqual(decision.rules, ['no-loopback']);
    });
  }
  it('reads a dotted IPv6 tail as the OS does (::1.2.3.4 is IPv4-compatible, not mapped)', () => {
    const one = policy({ network: [{ id: 'one-address', allow: ['1.2.3.4'] }] });
    assert.equal(one.decide(net('::ffff:1.2.3.4', 80)).effect, 'allow', 'the mapped form is the same address');
    assert.equal(one.decide(net('::1.2.3.4', 80)).effect, 'deny', 'the IPv4-compatible form is another address');
  });
  it('still allows an address outside the denied range', () => {
    assert.equal(engine.decide(net('0x08.8.8.8', 80)).effect, 'allow');
  });
  it('denies a host name that resolved to a loopback address', () => {
    const decision = engine.decide(net('rebind.example', 80, { addresses: ['93.184.216.34', '127.0.0.1'] } as Partial<DecisionRequest>));
    assert.equal(decision.effect, 'deny');
    assert.deepEqual(decision.rules, ['no-loopback']);
  });
  it('denies an IPv6 loopback by an IPv6 CIDR, and a zone id does not change the address', () => {
    const v6 = policy({ network: [{ id: 'all', allow: ['*'] }, { id: 'v6-loop', deny: ['::1/128', 'fe80::/10'] }] });
    assert.equal(v6.decide(net('[::1]')).effect, 'deny');
    assert.equal(v6.decide(net('fe80::1%eth0')).effect, 'deny');
    assert.equal(v6.decide(net('2001:db8::1')).effect, 'allow');
  });
});

describe('network: host names and patterns', () => {
  const engine = policy({
    network: [
      { id: 'exact', allow: ['api.github.com'], ports: [443] },
      { id: 'one-label', allow: ['*.githubusercontent.com'] },
      { id: 'any-depth', allow: ['**.npmjs.org'] },
      { id: 'idn', allow: ['bücher.example'] },
      { id: 'paste', deny: ['**.pastebin.com'] },
      { id: 'web', allow: ['*'], ports: ['8000-8100'], schemes: ['http'] },
    ],
  });
  it('matches an exact host regardless of case and a trailing dot', () => {
    assert.deepEqual(engine.decide(net('API.GitHub.COM.')).rules, ['exact']);
  });
  it('matches "*." one label deep only', () => {
    assert.equal(engine.decide(net('raw.githubusercontent.com')).effect, 'allow');
    assert.equal(engine.decide(net('githubusercontent.com')).effect, 'deny');
    assert.equal(engine.decide(net('a.b.githubusercontent.com')).effect, 'deny');
  });
  it('matches "**." at the domain itself and at any depth', () => {
    for (const host of ['npmjs.org', 'registry.npmjs.org', 'a.b.c.npmjs.org']) assert.equal(engine.decide(net(host)).effect, 'allow', host);
    assert.equal(engine.decide(net('evilnpmjs.org')).effect, 'deny');
  });
  it('normalises IDN to punycode on both sides', () => {
    assert.deepEqual(engine.decide(net('BÜCHER.example')).rules, ['idn']);
    assert.deepEqual(engine.decide(net('xn--bcher-kva.example')).rules, ['idn']);
  });
  it('checks ports and port ranges', () => {
    assert.equal(engine.decide(net('api.github.com', 80)).effect, 'deny');
    assert.equal(engine.decide(net('example.org', 8050, { scheme: 'http' } as Partial<DecisionRequest>)).effect, 'allow');
    assert.equal(engine.decide(net('example.org', 8101, { scheme: 'http' } as Partial<DecisionRequest>)).effect, 'deny');
  });
  it('checks schemes', () => {
    assert.equal(engine.decide(net('example.org', 8050, { scheme: 'HTTP' } as Partial<DecisionRequest>)).effect, 'allow');
    assert.equal(engine.decide(net('example.org', 8050, { scheme: 'https' } as Partial<DecisionRequest>)).effect, 'deny');
  });
  it('lets a matching deny beat any allow', () => {
    const decision = engine.decide(net('www.pastebin.com', 8080, { scheme: 'http' } as Partial<DecisionRequest>));
    assert.equal(decision.effect, 'deny');
    assert.deepEqual(decision.rules, ['paste']);
  });
  it('denies by default with a reason naming what was asked', () => {
    const decision = engine.decide(net('example.com', 443));
    assert.equal(decision.effect, 'deny');
    assert.deepEqual(decision.rules, []);
    assert.match(decision.reason, /no rule allows network access to example\.com:443/);
  });
  it('refuses malformed host names', () => {
    for (const host of ['a..b', 'exa mple.com', '-bad.com', '', '999.1.1.1.1', '0x1g.1']) {
      const decision = engine.decide(net(host));
      assert.equal(decision.effect, 'deny', host);
      assert.match(decision.reason, /invalid request/, host);
    }
  });
});

describe('network: methods and paths', () => {
  const engine = policy({
    network: [
      { id: 'gh-read', allow: ['api.github.com'], methods: ['GET'], paths: ['/repos/**'] },
      { id: 'gh-admin', deny: ['api.github.com'], paths: ['/admin/**'] },
    ],
  });
  const http = (method: string, path: string) => net('api.github.com', 443, { method, path } as Partial<DecisionRequest>);
  it('allows a matching method and path', () => {
    assert.deepEqual(engine.decide(http('get', '/repos/acme/app/issues?state=open')).rules, ['gh-read']);
    assert.equal(engine.decide(http('GET', '/repos')).effect, 'allow');
  });
  it('denies another method or path', () => {
    assert.equal(engine.decide(http('DELETE', '/repos/acme/app')).effect, 'deny');
    assert.equal(engine.decide(http('GET', '/user')).effect, 'deny');
  });
  it('normalises paths before matching: encoding, dot segments and repeated slashes', () => {
    for (const path of ['/%61dmin/x', '/repos/../admin/x', '//admin//x', '/repos/%2e%2e/admin/x', '/repos/..;/admin/x', '/admin;jsessionid=1/x', '/admin/']) {
      const decision = engine.decide(http('GET', path));
      assert.equal(decision.effect, 'deny', path);
      assert.deepEqual(decision.rules, ['gh-admin'], path);
    }
  });
  it('requires inspection when a method or path deny on the host cannot be judged yet', () => {
    const mixed = policy({
      network: [
        { id: 'gh', allow: ['api.github.com'] },
        { id: 'no-delete', deny: ['api.github.com'], methods: ['DELETE'] },
      ],
    });
    const tunnel = mixed.decide(net('api.github.com', 443));
    assert.equal(tunnel.effect, 'allow');
    assert.equal(tunnel.needsInspection, true, 'a blind tunnel would let DELETE through');
    assert.equal(mixed.decide(net('api.github.com', 443, { method: 'DELETE', path: '/repos/x' } as Partial<DecisionRequest>)).effect, 'deny');
    assert.equal(mixed.decide(net('other.example', 443)).needsInspection, undefined);
  });
  it('allows the connection on condition of inspection when the request is not visible', () => {
    const decision = engine.decide(net('api.github.com', 443));
    assert.equal(decision.effect, 'allow');
    assert.equal(decision.needsInspection, true);
  });
});

describe('network: CIDRs and resolved addresses', () => {
  const engine = policy({
    network: [
      { id: 'internal', allow: ['10.20.0.0/16', 'fd00:20::/32'], ports: [5432], agents: ['ci-bot'] },
      { id: 'named', allow: ['db.internal'] },
    ],
  });
  it('allows an address inside an allowed CIDR, only for the scoped agent', () => {
    assert.equal(engine.decide({ surface: 'network', agent: 'ci-bot', host: '10.20.3.4', port: 5432 }).effect, 'allow');
    assert.equal(engine.decide({ surface: 'network', agent: 'dev', host: '10.20.3.4', port: 5432 }).effect, 'deny');
    assert.equal(engine.decide({ surface: 'network', agent: 'ci-bot', host: '10.21.0.1', port: 5432 }).effect, 'deny');
    assert.equal(engine.decide({ surface: 'network', agent: 'ci-bot', host: 'fd00:20::5', port: 5432 }).effect, 'allow');
  });
  it('allows a name by CIDR only when every resolved address is inside it', () => {
    const ask = (addresses: string[]) => engine.decide({ surface: 'network', agent: 'ci-bot', host: 'pg.example', port: 5432, addresses });
    assert.equal(ask(['10.20.1.1', '10.20.9.9']).effect, 'allow');
    assert.equal(ask(['10.20.1.1', '8.8.8.8']).effect, 'deny');
  });
});

describe('network: decisions kept and given again', () => {
  const known: CompileOptions = { agents: { dev: { teams: ['eng'] } } };
  const spec = {
    network: [
      { id: 'api', allow: ['api.test'], ports: [443] },
      { id: 'eng-only', allow: ['eng.test'], teams: ['eng'] },
      { id: 'gold-only', allow: ['gold.test'], when: "claims.tier == 'gold'" },
    ],
  };
  const engine = policy(spec, known);

  it('gives the same answer again, with a latency of its own, and no caller can change the next answer', () => {
    const first = engine.decide(net('api.test'));
    const second = engine.decide(net('api.test'));
    assert.deepEqual({ ...second, latencyUs: 0 }, { ...first, latencyUs: 0 });
    assert.equal(second.effect, 'allow');
    assert.equal(typeof second.latencyUs, 'number');
    assert.throws(() => second.rules.push('forged'), TypeError, 'the rules of a kept decision cannot be changed');
    first.effect = 'deny';
    first.reason = 'changed by a caller';
    const third = engine.decide(net('api.test'));
    assert.equal(third.effect, 'allow');
    assert.deepEqual(third.rules, ['api']);
    assert.notEqual(third.reason, 'changed by a caller');
  });

  it('decides every field anew: port, agent, team, addresses and a value of the wrong type', () => {
    assert.equal(engine.decide(net('api.test')).effect, 'allow');
    assert.equal(engine.decide(net('api.test', 8443)).effect, 'deny');
    assert.equal(engine.decide({ surface: 'network', agent: 'dev', host: 'api.test', port: '443' } as unknown as DecisionRequest).effect, 'deny');
    assert.equal(engine.decide(net('api.test\u0000')).effect, 'deny');
    assert.equal(engine.decide(net('eng.test')).effect, 'allow', 'dev is in team eng');
    assert.equal(engine.decide(net('eng.test', 443, { agent: 'ops' })).effect, 'deny');
    assert.equal(engine.decide(net('eng.test', 443, { agent: 'ops', teams: ['eng'] })).effect, 'allow');
    assert.equal(engine.decide(net('api.test', 443, { addresses: ['10.0.0.1'] })).effect, 'allow');
  });

  it('is not changed by a later change to the agents it was compiled with', () => {
    const agents = { dev: { teams: ['eng'] } };
    const engine = policy(spec, { agents });
    assert.equal(engine.decide(net('eng.test')).effect, 'allow');
    agents.dev.teams = [];
    assert.equal(engine.decide(net('eng.test', 443, { agent: 'dev', teams: [] })).effect, 'allow', 'dev is still in team eng for this policy');
  });

  it('never keeps a decision a condition took part in: the claims are asked each time', () => {
    const ask = (tier: string) => engine.decide(net('gold.test', 443, { claims: { tier } })).effect;
    assert.equal(ask('gold'), 'allow');
    assert.equal(ask('silver'), 'deny', 'the first answer was not kept for a request its condition rejects');
    assert.equal(ask('gold'), 'allow');
  });

  it('decides the same without kept decisions', () => {
    const fresh = policy(spec, { ...known, keepNetworkDecisions: false });
    for (const request of [net('api.test'), net('api.test'), net('eng.test', 443, { agent: 'ops' }), net('gold.test', 443, { claims: { tier: 'gold' } })]) {
      assert.deepEqual({ ...fresh.decide(request), latencyUs: 0 }, { ...engine.decide(request), latencyUs: 0 });
    }
  });
});

describe('filesystem', () => {
  const engine = policy({
    filesystem: [
      { id: 'workspace', allow: { paths: ['./'], access: 'rw' } },
      { id: 'system', allow: { paths: ['/usr', '/etc'] } },
      { id: 'keys', deny: { paths: ['~/.ssh', '~/.aws'] } },
      { id: 'env-files', deny: { paths: ['/work/repo/**/.env'] } },
      { id: 'lockfile', deny: { paths: ['./package-lock.json'], access: 'write' } },
      { id: 'home', allow: { paths: ['~'] } },
      { id: 'pem', deny: { paths: ['~/certs/*.pem'] } },
    ],
  });
  const fs = (path: string, access: 'read' | 'write' = 'read', cwd?: string): DecisionRequest => ({ surface: 'filesystem', agent: 'dev', path, access, ...(cwd ? { cwd } : {}) });
  it('expands ~ in rules and requests', () => {
    assert.deepEqual(engine.decide(fs('~/.ssh/id_rsa')).rules, ['keys']);
    assert.deepEqual(engine.decide(fs('/home/dev/.aws/credentials')).rules, ['keys']);
  });
  it('normalises .. and repeated slashes before matching', () => {
    assert.deepEqual(engine.decide(fs('/work/repo/../../home/dev//.ssh/./id_rsa')).rules, ['keys']);
    assert.deepEqual(engine.decide(fs('src/../../../home/dev/.ssh/id_rsa', 'read', '/work/repo')).rules, ['keys']);
  });
  it('gives read-only rules read access and no write access', () => {
    assert.equal(engine.decide(fs('/etc/hosts')).effect, 'allow');
    assert.equal(engine.decide(fs('/etc/hosts', 'write')).effect, 'deny');
  });
  it('gives read-write rules both', () => {
    assert.equal(engine.decide(fs('/work/repo/src/index.ts', 'write')).effect, 'allow');
  });
  it('denies writing only where the deny says write', () => {
    assert.equal(engine.decide(fs('/work/repo/package-lock.json')).effect, 'allow');
    assert.deepEqual(engine.decide(fs('/work/repo/package-lock.json', 'write')).rules, ['lockfile']);
  });
  it('matches ** and segment globs', () => {
    assert.deepEqual(engine.decide(fs('/work/repo/.env')).rules, ['env-files']);
    assert.deepEqual(engine.decide(fs('/work/repo/a/b/.env')).rules, ['env-files']);
    assert.deepEqual(engine.decide(fs('/home/dev/certs/server.pem')).rules, ['pem']);
    assert.equal(engine.decide(fs('/home/dev/certs/server.crt')).effect, 'allow');
  });
  it('does not treat a sibling with a common prefix as inside', () => {
    assert.equal(engine.decide(fs('/home/dev/.sshx')).effect, 'allow');
    assert.equal(engine.decide(fs('/work/repository/x')).effect, 'deny');
  });
  it('resolves symlinks when enforcing: a link into a denied directory is denied', () => {
    const root = mkdtempSync(join(tmpdir(), 'gh-fs-'));
    mkdirSync(join(root, 'home', '.ssh'), { recursive: true });
    writeFileSync(join(root, 'home', '.ssh', 'id_rsa'), 'key');
    mkdirSync(join(root, 'work'));
    symlinkSync(join(root, 'home', '.ssh'), join(root, 'work', 'innocent'));
    const real = policy(
      { filesystem: [{ id: 'ws', allow: { paths: ['./'], access: 'rw' } }, { id: 'keys', deny: { paths: ['~/.ssh'] } }] },
      { home: join(root, 'home'), workspace: join(root, 'work'), resolveSymlinks: true },
    );
    const viaLink = real.decide(fs(join(root, 'work', 'innocent', 'id_rsa')));
    assert.equal(viaLink.effect, 'deny');
    assert.deepEqual(viaLink.rules, ['keys']);
    // A new file under the link is judged by where it would really land.
    assert.equal(real.decide(fs(join(root, 'work', 'innocent', 'new'), 'write')).effect, 'deny');
    assert.equal(real.decide(fs(join(root, 'work', 'ok.txt'), 'write')).effect, 'allow');
  });
  it('gives sandboxes a mountable view', () => {
    const view = engine.filesystemView({ agent: 'dev' });
    assert.deepEqual(view.allow.find((a) => a.ruleId === 'workspace'), { path: '/work/repo', access: 'rw', ruleId: 'workspace' });
    assert.ok(view.deny.some((d) => d.path === '/home/dev/.ssh' && d.access === 'all'));
    assert.ok(view.unmountable.some((u) => u.ruleId === 'env-files' && u.prefix === '/work/repo'));
  });
});

describe('mcp', () => {
  const engine = policy({
    mcp: [
      { id: 'fs-read', allow: { server: 'fs', tools: ['read_*', 'list_directory'] } },
      { id: 'no-destructive', deny: { tools: ['*'], annotations: { destructiveHint: true } } },
      { id: 'acme-only', allow: { server: 'github', tools: ['*'], when: "args.owner == 'acme'" } },
      { id: 'big-writes', deny: { server: 'github', tools: ['create_*'] }, when: 'args.count > 100' },
      { id: 'prompts', allow: { server: 'docs', prompts: ['summarise'] } },
      { id: 'approve', allow: { server: 'deploy', tools: ['release'] }, requireApproval: true, teams: ['release-managers'] },
    ],
  });
  const mcp = (server: string, tool: string, args: Record<string, unknown> = {}, annotations: Record<string, unknown> = { readOnlyHint: true }, agent = 'dev'): DecisionRequest => ({ surface: 'mcp', agent, server, tool, args, annotations });
  it('allows tools by server and tool globs', () => {
    assert.deepEqual(engine.decide(mcp('fs', 'read_text_file')).rules, ['fs-read']);
    assert.equal(engine.decide(mcp('fs', 'write_file', {}, { readOnlyHint: true })).effect, 'deny');
    assert.equal(engine.decide(mcp('other', 'read_text_file')).effect, 'deny');
  });
  it('treats an unannotated tool as destructive, as the MCP spec defaults say', () => {
    assert.deepEqual(engine.decide(mcp('fs', 'read_text_file', {}, {})).rules, ['no-destructive']);
    assert.equal(engine.decide(mcp('fs', 'read_text_file', {}, { destructiveHint: false })).effect, 'allow');
  });
  it('evaluates CEL conditions on arguments', () => {
    assert.equal(engine.decide(mcp('github', 'list_issues', { owner: 'acme' })).effect, 'allow');
    assert.equal(engine.decide(mcp('github', 'list_issues', { owner: 'evil' })).effect, 'deny');
  });
  it('fails closed when a condition cannot be evaluated', () => {
    // acme-only cannot grant without args.owner ...
    assert.equal(engine.decide(mcp('github', 'list_issues', {})).effect, 'deny');
    // ... and big-writes denies when args.count is missing rather than letting the call through.
    const decision = engine.decide(mcp('github', 'create_issue', { owner: 'acme' }));
    assert.deepEqual(decision.rules, ['big-writes']);
    assert.equal(engine.decide(mcp('github', 'create_issue', { owner: 'acme', count: 5 })).effect, 'allow');
  });
  it('lets a deny stand when an argument has a type its condition cannot work on', () => {
    const paths = policy({
      mcp: [
        { id: 'fs', allow: { server: 'fs', tools: ['*'] } },
        { id: 'no-etc', deny: { server: 'fs', tools: ['read_text_file'] }, when: "args.path.startsWith('/etc')" },
      ],
    });
    const read = (path: unknown) => paths.decide(mcp('fs', 'read_text_file', { path })).effect;
    assert.equal(read('/home/dev/notes'), 'allow');
    assert.equal(read('/etc/passwd'), 'deny');
    // An array, a map or a number has no startsWith: the condition errors, and an erroring deny applies.
    assert.equal(read(['/etc/passwd']), 'deny');
    assert.equal(read({ 0: '/etc/passwd' }), 'deny');
    assert.equal(read(7), 'deny');
  });
  it('judges conditions on arguments the tool schema could not check as unevaluable', () => {
    // Unchecked, "true" might mean true to the server; big-writes stands and acme-only cannot grant.
    const unchecked = (tool: string, args: Record<string, unknown>) => engine.decide({ ...(mcp('github', tool, args) as McpRequest), argsUnchecked: true });
    assert.deepEqual(unchecked('create_issue', { owner: 'acme', count: 5 }).rules, ['big-writes']);
    assert.equal(unchecked('list_issues', { owner: 'acme' }).effect, 'deny');
    // Rules without conditions on arguments decide as always.
    assert.equal(engine.decide({ ...(mcp('fs', 'read_text_file') as McpRequest), argsUnchecked: true }).effect, 'allow');
    // The arguments reached through `request`, under a name spelled at run time, count as arguments too.
    const spelled = policy({ mcp: [{ id: 'open', allow: { server: 'gh', tools: ['*'], when: "request['a' + 'rgs'].owner == 'acme'" } }] });
    const call = { ...(mcp('gh', 'list_issues', { owner: 'acme' }) as McpRequest) };
    assert.equal(spelled.decide(call).effect, 'allow');
    assert.equal(spelled.decide({ ...call, argsUnchecked: true }).effect, 'deny');
  });
  it('lists a tool whose allow depends on arguments, and decides each call by its own arguments', () => {
    const listing = { surface: 'mcp' as const, agent: 'dev', server: 'github', tool: 'list_issues', annotations: { readOnlyHint: true } };
    const listed = engine.listable(listing);
    assert.equal(listed.effect, 'allow');
    assert.deepEqual(listed.rules, ['acme-only']);
    // A deny that depends on arguments does not hide the tool; a deny that does not, does.
    assert.equal(engine.listable({ ...listing, tool: 'create_issue' }).effect, 'allow');
    assert.equal(engine.listable({ ...listing, tool: 'delete_repo', annotations: {} }).effect, 'deny');
    // Not listed on a server no rule allows.
    assert.equal(engine.listable({ ...listing, server: 'other' }).effect, 'deny');
    // The call itself is still judged with its arguments.
    assert.equal(engine.decide({ ...listing, args: { owner: 'evil' } }).effect, 'deny');
  });
  it('matches prompts separately from tools', () => {
    assert.equal(engine.decide({ surface: 'mcp', agent: 'dev', server: 'docs', prompt: 'summarise' }).effect, 'allow');
    assert.equal(engine.decide(mcp('docs', 'summarise')).effect, 'deny');
  });
  it('marks calls that need a person to approve them, for the scoped team only', () => {
    const member = compileWithAgents();
    const decision = member.decide(mcp('deploy', 'release', {}, { readOnlyHint: true }, 'alice'));
    assert.equal(decision.effect, 'allow');
    assert.equal(decision.requireApproval, true);
    assert.equal(member.decide(mcp('deploy', 'release', {}, { readOnlyHint: true }, 'bob')).effect, 'deny');
  });
  function compileWithAgents() {
    return policy(
      { mcp: [{ id: 'approve', allow: { server: 'deploy', tools: ['release'] }, requireApproval: true, teams: ['release-managers'] }] },
      { agents: { alice: { teams: ['release-managers'] } } },
    );
  }
});

describe('credentials', () => {
  const engine = policy({
    credentials: [
      { id: 'gh', secret: 'github-token', env: 'GITHUB_TOKEN', hosts: ['api.github.com'], header: 'Authorization: Bearer {secret}' },
      { id: 'slack', secret: 'slack-token', servers: ['slack'], agents: ['ops-bot'] },
      { id: 'never-paste', deny: { secrets: ['*'], hosts: ['**.pastebin.com'] } },
    ],
  });
  it('lets a secret go only to its hosts', () => {
    assert.equal(engine.decide({ surface: 'credentials', agent: 'dev', secret: 'github-token', host: 'api.github.com' }).effect, 'allow');
    assert.equal(engine.decide({ surface: 'credentials', agent: 'dev', secret: 'github-token', host: 'evil.com' }).effect, 'deny');
  });
  it('binds secrets to MCP servers and scopes', () => {
    assert.equal(engine.decide({ surface: 'credentials', agent: 'ops-bot', secret: 'slack-token', server: 'slack' }).effect, 'allow');
    assert.equal(engine.decide({ surface: 'credentials', agent: 'dev', secret: 'slack-token', server: 'slack' }).effect, 'deny');
  });
  it('lists the grants a principal holds, with the header template', () => {
    const grants = engine.grants({ agent: 'dev' });
    assert.deepEqual(grants.map((g) => g.secret), ['github-token']);
    assert.deepEqual(grants[0]?.header, { name: 'Authorization', template: 'Bearer {secret}' });
    assert.equal(grants[0]?.env, 'GITHUB_TOKEN');
  });
});

describe('modes, labels and errors', () => {
  it('records a would-be denial as observed-deny in observe mode', () => {
    const engine = policy({ network: [], modes: { network: 'observe' } });
    const decision = engine.decide(net('example.com'));
    assert.equal(decision.effect, 'observed-deny');
    assert.equal(decision.mode, 'observe');
    assert.match(decision.reason, /^observe mode, would deny/);
    assert.equal(engine.decide({ surface: 'filesystem', path: '/x', access: 'read' }).effect, 'deny');
  });
  it('applies rules scoped by node labels only on matching nodes', () => {
    const spec = { network: [{ id: 'ci-only', allow: ['ci.example'], labels: { env: 'ci' } }] };
    assert.equal(policy(spec, { nodeLabels: { env: 'ci' } }).decide(net('ci.example')).effect, 'allow');
    const laptop = policy(spec, { nodeLabels: { env: 'laptop' } });
    assert.equal(laptop.decide(net('ci.example')).effect, 'deny');
    assert.match(laptop.explain(net('ci.example')).rules[0]?.why ?? '', /not active on this node/);
  });
  it('rejects a policy with a duplicate rule id, naming it', () => {
    assert.throws(() => policy({ network: [{ id: 'x', allow: ['a.com'] }], mcp: [{ id: 'x', allow: { server: 'a' } }] }), /rule "x".*already used/);
  });
  it('rejects wildcards in the middle of a host', () => {
    assert.throws(() => policy({ network: [{ id: 'bad', allow: ['api.*.com'] }] }), /policy\.network rule "bad".*wildcard/);
  });
  it('denies a request for an unknown surface or with a bad shape', () => {
    const engine = policy({ network: [{ id: 'all', allow: ['*'] }] });
    assert.equal(engine.decide({ surface: 'bogus' } as unknown as DecisionRequest).effect, 'deny');
    assert.equal(engine.decide({ surface: 'network', host: 'a.com', port: 70000 } as DecisionRequest).effect, 'deny');
  });
});

describe('indexes agree with a linear scan', () => {
  it('gives the same decision as checking every rule, on random policies and requests', () => {
    let seed = 42;
    const random = (n: number): number => {
      seed = (seed * 1103515245 + 12345) & 0x7fffffff;
      return seed % n;
    };
    const labels = ['a', 'b', 'c', 'dev', 'api'];
    const domain = (): string => `${labels[random(5)]}.${labels[random(5)]}.test`;
    const network = Array.from({ length: 300 }, (_, i) => {
      const kind = random(5);
      const target = kind === 0 ? domain() : kind === 1 ? `*.${labels[random(5)]}.test` : kind === 2 ? `**.${labels[random(5)]}.test` : kind === 3 ? `10.${random(4)}.0.0/16` : `10.${random(4)}.${random(4)}.${random(4)}`;
      return { id: `n${i}`, [random(3) === 0 ? 'deny' : 'allow']: [target], ...(random(2) ? { ports: [80 + random(3)] } : {}) };
    });
    const engine = policy({ network: network as never });
    for (let i = 0; i < 2000; i += 1) {
      const host = random(2) ? domain() : `10.${random(4)}.${random(4)}.${random(4)}`;
      const request = net(host, 80 + random(3));
      const indexed = engine.decide(request);
      const linear = engine.decideLinear(request);
      assert.equal(indexed.effect, linear.effect, host);
      assert.deepEqual(indexed.rules, linear.rules, host);
    }
  });
});
