/**
 * Compiles a policy document once into indexed matchers: host-suffix maps and CIDR tables (network), a
 * path trie (filesystem), per-server and per-tool maps (MCP), per-secret maps (credentials). A decision
 * asks the index for candidate rules, checks each with rules.ts's `mismatch`, and combines:
 * a matching deny beats any allow; with no matching allow, every surface denies.
 */
import { homedir } from 'node:os';
import { createHash } from 'node:crypto';
import { isAbsolute, resolve } from 'node:path';
import type { CredentialRuleSpec, FilesystemRuleSpec, McpRuleSpec, NetworkRuleSpec, PolicyDocument } from '../config/policy-schema.js';
import { GatehouseError } from '../util/errors.js';
import { expandHome } from '../util/paths.js';
import { compileCondition, type CelContext, type Condition } from './cel.js';
import type { CredentialGrant, FilesystemView, PolicyEngine } from './engine.js';
import { compileNameGlob, compilePathGlob, type Glob } from './globs.js';
import { HostIndex, normaliseHost, parseHostPattern, type HostPattern } from './hosts.js';
import { normaliseHttpPath } from './http-path.js';
import { CidrTable, parseCidr, parseIpLiteral, type Cidr, type NormalisedIp } from './ip.js';
import { hasGlob, literalPrefix, PathTrie, splitPath } from './paths.js';
import {
  AWAITS_REQUEST,
  effectiveAnnotations,
  fileAccessLabel,
  filesystemPaths,
  mismatch,
  scopeMismatch,
  type CompiledRule,
  type CredentialRule,
  type Facts,
  type FilesystemRule,
  type McpRule,
  type NetworkFacts,
  type NetworkRule,
  type NormalisedPrincipal,
} from './rules.js';
import type { Decision, DecisionRequest, Explanation, McpRequest, Mode, NetworkRequest, Principal, RuleTrace, Surface } from './types.js';

export interface CompileOptions {
  /** Home directory for `~` in filesystem rules (default: the current user's). */
  home?: string;
  /** What `./` in filesystem rules means (default: the current directory). */
  workspace?: string;
  /** This node's labels: rules scoped with `labels` apply only when all of them match. */
  nodeLabels?: Record<string, string>;
  /** Teams of known agents, merged into the principal of every request. */
  agents?: Record<string, { teams: string[] }>;
  /** A label for this policy (a bundle's version); defaults to `local-<digest prefix>`. */
  version?: string;
  /** Resolve symlinks in filesystem requests (default true). */
  resolveSymlinks?: boolean;
  /** Clock for CEL's `now` (tests). */
  now?: () => Date;
  /**
   * Keep network decisions made without a condition and give them again (default true; see `decide`).
   * bench/policy turns it off to time the indexes themselves.
   */
  keepNetworkDecisions?: boolean;
}

// ---- canonical form and digest --------------------------------------------------------------------------

/** JSON with object keys sorted at every level: equal policies give equal bytes. */
export function canonicalJson(value: unknown): string {
  if (Array.isArray(value)) return `[${value.map(canonicalJson).join(',')}]`;
  if (value !== null && typeof value === 'object') {
    const entries = Object.entries(value as Record<string, unknown>)
      .filter(([, v]) => v !== undefined)
      .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
    return `{${entries.map(([k, v]) => `${JSON.stringify(k)}:${canonicalJson(v)}`).join(',')}}`;
  }
  return JSON.stringify(value);
}

export function policyDigest(document: PolicyDocument): string {
  return 'sha256:' + createHash('sha256').update(canonicalJson(document)).digest('hex');
}

// ---- rule compilation ------------------------------------------------------------------------------------

function invalidRule(surface: Surface, id: string, message: string): GatehouseError {
  return new GatehouseError('policy_invalid', `policy.${surface} rule "${id}": ${message}`, { exitCode: 2 });
}

function labelsApply(labels: Record<string, string> | undefined, nodeLabels: Record<string, string>): boolean {
  if (!labels) return true;
  for (const [key, value] of Object.entries(labels)) if (nodeLabels[key] !== value) return false;
  return true;
}

interface Common {
  id: string;
  agents?: string[] | undefined;
  teams?: string[] | undefined;
  when?: string | undefined;
}

function base<S extends Surface>(surface: S, spec: Common, effect: 'allow' | 'deny', order: number, when: string | undefined) {
  let condition: Condition | undefined;
  if (when !== undefined) {
    try {
      condition = compileCondition(when);
    } catch (error) {
      throw invalidRule(surface, spec.id, `the condition "${when}" is not valid CEL (${(error as Error).message.split('\n')[0]})`);
    }
  }
  return {
    id: spec.id,
    surface,
    effect,
    order,
    agents: spec.agents ? new Set(spec.agents) : undefined,
    teams: spec.teams ? new Set(spec.teams) : undefined,
    when: condition,
    // A textual test is enough: a false positive only defers a rule to call time, where it is judged fully.
    // `request` holds the arguments too (`request['a' + 'rgs']`), so a condition naming it counts as reading them.
    whenReadsArgs: when !== undefined && /\b(?:args|request)\b/.test(when),
    stamp: 0,
  };
}

function oneCondition(surface: Surface, spec: Common, inner: string | undefined): string | undefined {
  if (spec.when !== undefined && inner !== undefined) throw invalidRule(surface, spec.id, 'has "when" twice (on the rule and inside its match); keep one');
  return spec.when ?? inner;
}

function hostPatternOrThrow(surface: Surface, id: string, text: string): HostPattern {
  const pattern = parseHostPattern(text);
  if (typeof pattern === 'string') throw invalidRule(surface, id, pattern);
  return pattern;
}

function compileNetworkRule(spec: NetworkRuleSpec, order: number): NetworkRule {
  const effect = spec.allow ? 'allow' : 'deny';
  const hosts: HostPattern[] = [];
  const cidrs: Cidr[] = [];
  for (const target of (spec.allow ?? spec.deny)!) {
    const cidr = target.includes('/') || parseIpLiteral(target) ? parseCidr(target) : undefined;
    if (cidr) cidrs.push(cidr);
    else if (target.includes('/')) throw invalidRule('network', spec.id, `"${target}" is not a valid CIDR`);
    else hosts.push(hostPatternOrThrow('network', spec.id, target));
  }
  const ports = spec.ports?.map((port): [number, number] => {
    if (typeof port === 'number') return [port, port];
    const [low, high = low] = port.split('-').map(Number) as [number, number?];
    if (!(low >= 1 && high <= 65535 && low <= high)) throw invalidRule('network', spec.id, `the port range "${port}" is not within 1-65535 with its low end first`);
    return [low, high];
  });
  return {
    ...base('network', spec, effect, order, spec.when),
    hosts,
    cidrs,
    ports,
    schemes: spec.schemes ? new Set(spec.schemes.map((s) => s.toLowerCase())) : undefined,
    methods: spec.methods ? new Set(spec.methods.map((m) => m.toUpperCase())) : undefined,
    paths: spec.paths?.map(compilePathGlob),
    inspect: spec.inspect === true,
  };
}

/** Whole-path matcher for one filesystem pattern: the pattern and everything below it. */
function pathMatcher(pattern: string): RegExp {
  let source = '';
  for (const segment of splitPath(pattern)) {
    if (segment === '**') source += '(?:/[^/]+)*';
    else if (hasGlob(segment)) source += '/' + segment.replace(/[\\^$.+()|{}\]]/g, '\\$&').replace(/\[/g, '\\[').replace(/\*/g, '[^/]*').replace(/\?/g, '[^/]');
    else source += '/' + segment.replace(/[\\^$.*+?()|{}[\]]/g, '\\$&');
  }
  return new RegExp(`^${source}(?:/.*)?$`, 's');
}

function absolutePattern(text: string, home: string, workspace: string): string {
  const expanded = expandHome(text, home);
  // path.resolve normalises `..`, `.` and repeated slashes; globs pass through untouched.
  return isAbsolute(expanded) ? resolve(expanded) : resolve(workspace, expanded);
}

function compileFilesystemRule(spec: FilesystemRuleSpec, order: number, home: string, workspace: string): FilesystemRule {
  const effect = spec.allow ? 'allow' : 'deny';
  const match = (spec.allow ?? spec.deny)!;
  const patterns = match.paths.map((p) => absolutePattern(p, home, workspace));
  const access = spec.allow ? spec.allow.access : spec.deny?.access === 'write' ? 'write' : 'all';
  return {
    ...base('filesystem', spec, effect, order, oneCondition('filesystem', spec, match.when)),
    patterns,
    matchers: patterns.map(pathMatcher),
    access,
  };
}

function compileMcpRule(spec: McpRuleSpec, order: number): McpRule {
  const effect = spec.allow ? 'allow' : 'deny';
  const match = (spec.allow ?? spec.deny)!;
  if (spec.requireApproval && effect === 'deny') throw invalidRule('mcp', spec.id, '"requireApproval" only makes sense on an allow rule');
  return {
    ...base('mcp', spec, effect, order, oneCondition('mcp', spec, match.when)),
    servers: match.server?.map(compileNameGlob),
    tools: match.tools?.map(compileNameGlob),
    prompts: match.prompts?.map(compileNameGlob),
    resources: match.resources?.map(compileNameGlob),
    annotations: match.annotations ? Object.entries(match.annotations) : undefined,
    requireApproval: spec.requireApproval === true,
  };
}

function compileCredentialRule(spec: CredentialRuleSpec, order: number): CredentialRule {
  const effect = spec.deny ? 'deny' : 'allow';
  const hosts = spec.deny ? spec.deny.hosts : spec.hosts;
  const servers = spec.deny ? spec.deny.servers : spec.servers;
  let header: CredentialRule['header'];
  if (spec.header) {
    const colon = spec.header.indexOf(':');
    header = { name: spec.header.slice(0, colon).trim(), template: spec.header.slice(colon + 1).trim() };
  }
  return {
    ...base('credentials', spec, effect, order, spec.when),
    secret: spec.secret,
    secrets: spec.deny?.secrets.map(compileNameGlob),
    env: spec.env,
    hosts: hosts?.map((h) => hostPatternOrThrow('credentials', spec.id, h)),
    servers: servers?.map(compileNameGlob),
    header,
  };
}

// ---- indexes ---------------------------------------------------------------------------------------------

interface NameIndex {
  exact: Map<string, McpRule[]>;
  /** `prefix*` globs, by prefix; `prefixLengths` says which name prefixes are worth a probe. */
  prefixes: Map<string, McpRule[]>;
  prefixLengths: number[];
  /** Rules that name this kind with another glob, or do not restrict names at all. */
  other: McpRule[];
}

interface KindIndex {
  tool: NameIndex;
  prompt: NameIndex;
  resource: NameIndex;
}

function newKindIndex(): KindIndex {
  const fresh = (): NameIndex => ({ exact: new Map(), prefixes: new Map(), prefixLengths: [], other: [] });
  return { tool: fresh(), prompt: fresh(), resource: fresh() };
}

function indexNames(index: NameIndex, names: Glob[] | undefined, rule: McpRule, unrestricted: boolean): void {
  if (unrestricted) {
    index.other.push(rule);
    return;
  }
  for (const glob of names ?? []) {
    const prefix = /^[^*?]+\*$/.test(glob.text) ? glob.text.slice(0, -1) : undefined;
    if (glob.literal) addTo(index.exact, glob.text, rule);
    else if (prefix !== undefined) {
      addTo(index.prefixes, prefix, rule);
      if (!index.prefixLengths.includes(prefix.length)) index.prefixLengths.push(prefix.length);
    } else if (!index.other.includes(rule)) index.other.push(rule);
  }
}

function addTo(map: Map<string, McpRule[]>, key: string, rule: McpRule): void {
  const list = map.get(key);
  if (!list) map.set(key, [rule]);
  else if (!list.includes(rule)) list.push(rule);
}

class McpIndex {
  private readonly byServer = new Map<string, KindIndex>();
  private readonly globServers: { glob: Glob | undefined; kinds: KindIndex }[] = [];

  add(rule: McpRule): void {
    const targets: KindIndex[] = [];
    for (const glob of rule.servers ?? [undefined]) {
      if (glob?.literal) {
        let kinds = this.byServer.get(glob.text);
        if (!kinds) this.byServer.set(glob.text, (kinds = newKindIndex()));
        targets.push(kinds);
      } else {
        const kinds = newKindIndex();
        this.globServers.push({ glob, kinds });
        targets.push(kinds);
      }
    }
    const unrestricted = rule.tools === undefined && rule.prompts === undefined && rule.resources === undefined;
    for (const kinds of targets) {
      indexNames(kinds.tool, rule.tools, rule, unrestricted);
      indexNames(kinds.prompt, rule.prompts, rule, unrestricted);
      indexNames(kinds.resource, rule.resources, rule, unrestricted);
    }
  }

  lookup(server: string, kind: 'tool' | 'prompt' | 'resource' | undefined, name: string, visit: (rule: McpRule) => void): void {
    const fromKinds = (kinds: KindIndex): void => {
      for (const k of kind ? [kind] : (['tool', 'prompt', 'resource'] as const)) {
        const index = kinds[k];
        if (kind) {
          const exact = index.exact.get(name);
          if (exact) for (const rule of exact) visit(rule);
          for (const length of index.prefixLengths) {
            if (length > name.length) continue;
            const found = index.prefixes.get(name.slice(0, length));
            if (found) for (const rule of found) visit(rule);
          }
        } else {
          for (const list of index.exact.values()) for (const rule of list) visit(rule);
          for (const list of index.prefixes.values()) for (const rule of list) visit(rule);
        }
        for (const rule of index.other) visit(rule);
      }
    };
    const exact = this.byServer.get(server);
    if (exact) fromKinds(exact);
    for (const { glob, kinds } of this.globServers) if (!glob || glob.test(server)) fromKinds(kinds);
  }
}

// ---- the engine ------------------------------------------------------------------------------------------

const CEL_EMPTY_TEAMS: string[] = [];

class CompiledPolicy implements PolicyEngine {
  readonly version: string;
  readonly digest: string;
  readonly ruleCount: number;
  readonly dlp;

  /** Every active rule per surface, in policy order: for explain and the linear scan. */
  readonly rules: { network: NetworkRule[]; filesystem: FilesystemRule[]; credentials: CredentialRule[]; mcp: McpRule[] } = {
    network: [],
    filesystem: [],
    credentials: [],
    mcp: [],
  };
  /** Rules left out because this node's labels do not match theirs. */
  readonly inactive: { id: string; surface: Surface; labels: Record<string, string> }[] = [];

  private readonly networkHosts = new HostIndex<NetworkRule>();
  private readonly networkCidrs = new CidrTable<NetworkRule>();
  private readonly inspectHosts = new HostIndex<NetworkRule>();
  private readonly filesystemTrie = new PathTrie<FilesystemRule>();
  private readonly mcpIndex = new McpIndex();
  private readonly credentialGrants = new Map<string, CredentialRule[]>();
  private readonly credentialDenies: CredentialRule[] = [];

  private decisionNumber = 0;
  /** Network decisions already made, by the fields they were made from (see networkDecisionKey). */
  private readonly networkDecisions = new Map<string, Decision>();
  private readonly keepNetworkDecisions: boolean;
  private readonly home: string;
  private readonly workspace: string;
  private readonly agents: Record<string, { teams: string[] }>;
  private readonly resolveSymlinks: boolean;
  private readonly now: () => Date;

  constructor(readonly document: PolicyDocument, options: CompileOptions) {
    this.home = options.home ?? homedir();
    this.workspace = resolve(options.workspace ?? process.cwd());
    // A copy: decisions are kept (see decide), so what they are made from must not change under them.
    this.agents = Object.fromEntries(Object.entries(options.agents ?? {}).map(([name, agent]) => [name, { teams: [...agent.teams] }]));
    this.resolveSymlinks = options.resolveSymlinks ?? true;
    this.now = options.now ?? (() => new Date());
    this.keepNetworkDecisions = options.keepNetworkDecisions ?? true;
    this.dlp = document.dlp;
    this.digest = policyDigest(document);
    this.version = options.version ?? `local-${this.digest.slice(7, 19)}`;
    const nodeLabels = options.nodeLabels ?? {};

    const seen = new Map<string, Surface>();
    let order = 0;
    const admit = <T extends { id: string; labels?: Record<string, string> | undefined }>(surface: Surface, spec: T): boolean => {
      const previous = seen.get(spec.id);
      if (previous) throw invalidRule(surface, spec.id, `the id is already used by a rule in policy.${previous}; rule ids must be unique`);
      seen.set(spec.id, surface);
      if (labelsApply(spec.labels, nodeLabels)) return true;
      this.inactive.push({ id: spec.id, surface, labels: spec.labels ?? {} });
      return false;
    };

    for (const spec of document.network) {
      if (!admit('network', spec)) continue;
      const rule = compileNetworkRule(spec, order++);
      this.rules.network.push(rule);
      for (const host of rule.hosts) {
        this.networkHosts.add(host, rule);
        if (rule.inspect) this.inspectHosts.add(host, rule);
      }
      for (const cidr of rule.cidrs) this.networkCidrs.add(cidr, rule);
    }
    for (const spec of document.filesystem) {
      if (!admit('filesystem', spec)) continue;
      const rule = compileFilesystemRule(spec, order++, this.home, this.workspace);
      this.rules.filesystem.push(rule);
      for (const pattern of rule.patterns) this.filesystemTrie.add(pattern, rule);
    }
    for (const spec of document.mcp) {
      if (!admit('mcp', spec)) continue;
      const rule = compileMcpRule(spec, order++);
      this.rules.mcp.push(rule);
      this.mcpIndex.add(rule);
    }
    for (const spec of document.credentials) {
      if (!admit('credentials', spec)) continue;
      const rule = compileCredentialRule(spec, order++);
      this.rules.credentials.push(rule);
      if (rule.secret !== undefined) {
        const list = this.credentialGrants.get(rule.secret);
        if (list) list.push(rule);
        else this.credentialGrants.set(rule.secret, [rule]);
      } else this.credentialDenies.push(rule);
    }
    this.ruleCount = order;
  }

  mode(surface: Surface): Mode {
    return this.document.modes[surface] ?? 'enforce';
  }

  // ---- normalisation ----

  private principal(request: Principal): NormalisedPrincipal {
    const agent = typeof request.agent === 'string' && request.agent !== '' ? request.agent : undefined;
    const known = agent !== undefined ? this.agents[agent]?.teams : undefined;
    const given = Array.isArray(request.teams) ? request.teams.filter((t): t is string => typeof t === 'string') : [];
    const teams = known ? [...new Set([...given, ...known])] : given;
    return { agent, teams, raw: request };
  }

  /** Turns a request into facts, or a reason it is malformed (which denies). */
  normalise(request: DecisionRequest): Facts | string {
    if (request === null || typeof request !== 'object') return 'the request is not an object';
    const principal = this.principal(request);
    switch (request.surface) {
      case 'network': {
        if (typeof request.host !== 'string') return 'the request has no host';
        if (!Number.isInteger(request.port) || request.port < 1 || request.port > 65535) return 'the request port is not between 1 and 65535';
        const host = normaliseHost(request.host);
        if (host.kind === 'invalid') return host.reason;
        const addresses: NormalisedIp[] = [];
        for (const text of request.addresses ?? []) {
          const ip = typeof text === 'string' ? parseIpLiteral(text) : undefined;
          if (!ip) return `the resolved address "${String(text)}" is not an IP address`;
          addresses.push(ip);
        }
        let path: string | undefined;
        if (request.path !== undefined) {
          path = typeof request.path === 'string' ? normaliseHttpPath(request.path) : undefined;
          if (path === undefined) return 'the request path is not a valid HTTP path';
        }
        return {
          surface: 'network',
          principal,
          host,
          port: request.port,
          scheme: typeof request.scheme === 'string' ? request.scheme.toLowerCase() : undefined,
          method: typeof request.method === 'string' ? request.method.toUpperCase() : undefined,
          path,
          addresses,
        };
      }
      case 'filesystem': {
        if (typeof request.path !== 'string' || request.path === '') return 'the request has no path';
        if (request.path.includes('\0')) return 'the request path contains a NUL byte';
        if (request.access !== 'read' && request.access !== 'write') return 'the request access is neither "read" nor "write"';
        const base = typeof request.cwd === 'string' ? resolve(this.workspace, expandHome(request.cwd, this.home)) : this.workspace;
        const absolute = resolve(base, expandHome(request.path, this.home));
        return { surface: 'filesystem', principal, paths: filesystemPaths(absolute, this.resolveSymlinks), access: request.access };
      }
      case 'mcp': {
        if (typeof request.server !== 'string' || request.server === '') return 'the request has no server';
        const named = (['tool', 'prompt', 'resource'] as const).filter((k) => request[k] !== undefined);
        if (named.length > 1) return 'the request names more than one of tool, prompt and resource';
        const kind = named[0];
        const name = kind ? request[kind] : '';
        if (typeof name !== 'string') return `the request ${kind} is not a string`;
        const args = request.args !== null && typeof request.args === 'object' && !Array.isArray(request.args) ? request.args : {};
        const annotations = request.annotations !== null && typeof request.annotations === 'object' ? request.annotations : undefined;
        return { surface: 'mcp', principal, server: request.server, kind, name, args, annotations: effectiveAnnotations(annotations), argsUnknown: false, argsUnchecked: request.argsUnchecked === true };
      }
      case 'credentials': {
        if (typeof request.secret !== 'string' || request.secret === '') return 'the request has no secret';
        let host;
        if (request.host !== undefined) {
          host = typeof request.host === 'string' ? normaliseHost(request.host) : undefined;
          if (!host || host.kind === 'invalid') return host?.reason ?? 'the request host is not a string';
        }
        return { surface: 'credentials', principal, secret: request.secret, host, server: typeof request.server === 'string' ? request.server : undefined };
      }
      default:
        return `the request surface "${String((request as { surface?: unknown }).surface)}" is not one of network, filesystem, credentials, mcp`;
    }
  }

  private celContext(facts: Facts): CelContext {
    const p = facts.principal;
    const context: CelContext = {
      agent: p.agent ?? '',
      teams: p.teams.length ? p.teams : CEL_EMPTY_TEAMS,
      user: p.raw.user ?? '',
      claims: p.raw.claims ?? {},
      now: this.now(),
      request: p.raw,
      host: '', port: 0, scheme: '', method: '', path: '', access: '',
      server: '', tool: '', prompt: '', resource: '', args: {}, annotations: {}, secret: '',
    };
    switch (facts.surface) {
      case 'network':
        context.host = facts.host.kind === 'name' ? facts.host.name : facts.host.kind === 'ip' ? facts.host.ip.text : '';
        context.port = facts.port;
        context.scheme = facts.scheme ?? '';
        context.method = facts.method ?? '';
        context.path = facts.path ?? '';
        break;
      case 'filesystem':
        context.path = facts.paths[0] ?? '';
        context.access = facts.access;
        break;
      case 'mcp':
        context.server = facts.server;
        if (facts.kind) context[facts.kind] = facts.name;
        context.args = facts.args;
        context.annotations = facts.annotations;
        break;
      case 'credentials':
        context.secret = facts.secret;
        context.host = facts.host?.kind === 'name' ? facts.host.name : '';
        context.server = facts.server ?? '';
        break;
    }
    return context;
  }

  // ---- candidates ----

  /** Rules the indexes say may apply; each is visited once per decision. */
  private candidates(facts: Facts, visit: (rule: CompiledRule) => void): void {
    const stamp = ++this.decisionNumber;
    const once = (rule: CompiledRule): void => {
      if (rule.stamp === stamp) return;
      rule.stamp = stamp;
      visit(rule);
    };
    switch (facts.surface) {
      case 'network': {
        const lookupIp = (ip: NormalisedIp): void => {
          this.networkCidrs.lookup(ip.address, once);
          for (const embedded of ip.embedded) this.networkCidrs.lookup(embedded, once);
        };
        if (facts.host.kind === 'name') this.networkHosts.lookup(facts.host.name, once);
        else if (facts.host.kind === 'ip') {
          lookupIp(facts.host.ip);
          this.networkHosts.wildcards(once);
        }
        for (const address of facts.addresses) lookupIp(address);
        return;
      }
      case 'filesystem':
        this.filesystemTrie.lookup(facts.paths[0] ?? '/', once);
        return;
      case 'mcp':
        this.mcpIndex.lookup(facts.server, facts.kind, facts.name, once);
        return;
      case 'credentials': {
        for (const rule of this.credentialGrants.get(facts.secret) ?? []) once(rule);
        for (const rule of this.credentialDenies) once(rule);
        return;
      }
    }
  }

  // ---- deciding ----

  /**
   * A network decision is a pure function of the request's agent, teams, host, port, scheme, method, path and
   * addresses, unless a rule with a condition was weighed (a condition may read the time, the user or the
   * claims). Decisions no condition took part in are kept, by those fields, and given again: a proxy asks the
   * same few questions for every request. Each is kept frozen, so no caller can change the answer the next
   * one gets; each caller gets a copy with its own latency.
   */
  decide(request: DecisionRequest): Decision {
    const key = this.keepNetworkDecisions && request?.surface === 'network' ? networkDecisionKey(request) : undefined;
    if (key === undefined) return this.run(request, false);
    const started = performance.now();
    const known = this.networkDecisions.get(key);
    if (known) return { ...known, latencyUs: elapsedUs(started) };
    const weighed = { conditions: false };
    const decision = this.run(request, false, weighed);
    if (!weighed.conditions) {
      if (this.networkDecisions.size >= NETWORK_DECISIONS_KEPT) this.networkDecisions.clear();
      this.networkDecisions.set(key, Object.freeze({ ...decision, rules: Object.freeze([...decision.rules]) as string[] }));
    }
    return decision;
  }

  listable(request: McpRequest): Decision {
    const started = performance.now();
    const facts = this.normalise({ ...request, surface: 'mcp' });
    if (typeof facts === 'string') return this.finish('mcp', [], [], `invalid request: ${facts}`, started, false);
    if (facts.surface !== 'mcp') return this.finish('mcp', [], [], 'invalid request: not an MCP request', started, false);
    const { denies, allows, conditional } = this.evaluate({ ...facts, argsUnknown: true }, false);
    return this.finish('mcp', denies, allows, undefined, started, conditional, facts);
  }

  /** The same decision by checking every rule in order, without indexes: the benchmark's baseline. */
  decideLinear(request: DecisionRequest): Decision {
    return this.run(request, true);
  }

  /** `weighed.conditions` is set when a rule with a condition (`when`) was among those weighed. */
  private run(request: DecisionRequest, linear: boolean, weighed?: { conditions: boolean }): Decision {
    const started = performance.now();
    const facts = this.normalise(request);
    const surface = (typeof facts === 'string' ? request?.surface : facts.surface) as Surface;
    if (typeof facts === 'string') return this.finish(SURFACE_SET.has(surface) ? surface : 'network', [], [], `invalid request: ${facts}`, started, false);
    if (facts.surface === 'filesystem' && facts.paths.length > 1) return this.decideFilesystemPaths(facts, linear, started);
    const { denies, allows, conditional } = this.evaluate(facts, linear, weighed);
    return this.finish(facts.surface, denies, allows, undefined, started, conditional, facts);
  }

  private evaluate(facts: Facts, linear: boolean, weighed?: { conditions: boolean }): { denies: CompiledRule[]; allows: CompiledRule[]; conditional: boolean } {
    const denies: CompiledRule[] = [];
    const allows: CompiledRule[] = [];
    let context: CelContext | undefined;
    const lazyContext = (): CelContext => (context ??= this.celContext(facts));
    let conditional = false;
    const check = (rule: CompiledRule): void => {
      if (rule.when && weighed) weighed.conditions = true;
      const why = mismatch(rule, facts, lazyContext);
      if (why === AWAITS_REQUEST) conditional = true;
      if (why !== null) return;
      (rule.effect === 'deny' ? denies : allows).push(rule);
      if (rule.surface === 'network' && (rule.methods || rule.paths)) conditional = true;
    };
    if (linear) for (const rule of this.rules[facts.surface] as CompiledRule[]) check(rule);
    else this.candidates(facts, check);
    return { denies, allows, conditional };
  }

  /** The asked path and its real path must both pass: a deny on either denies. */
  private decideFilesystemPaths(facts: Facts & { surface: 'filesystem' }, linear: boolean, started: number): Decision {
    const denies = new Set<CompiledRule>();
    const allows = new Set<CompiledRule>();
    let everyPathAllowed = true;
    for (const path of facts.paths) {
      const result = this.evaluate({ ...facts, paths: [path] }, linear);
      for (const rule of result.denies) denies.add(rule);
      for (const rule of result.allows) allows.add(rule);
      if (result.allows.length === 0) everyPathAllowed = false;
    }
    const why = !everyPathAllowed && denies.size === 0 ? `no rule allows ${facts.access} access to ${facts.paths[1]} (the real path of ${facts.paths[0]})` : undefined;
    return this.finish('filesystem', [...denies], everyPathAllowed ? [...allows] : [], why, started, false, facts);
  }

  private finish(
    surface: Surface,
    denies: CompiledRule[],
    allows: CompiledRule[],
    invalid: string | undefined,
    started: number,
    conditional: boolean,
    facts?: Facts,
  ): Decision {
    const mode = this.mode(surface);
    let effect: Decision['effect'];
    let rules: string[];
    let reason: string;
    let requireApproval = false;
    let needsInspection = false;
    if (invalid !== undefined) {
      effect = 'deny';
      rules = [];
      reason = invalid;
    } else if (denies.length > 0) {
      denies.sort(byOrder);
      effect = 'deny';
      rules = denies.map((r) => r.id);
      reason = `denied by ${ruleList(rules)}`;
    } else if (allows.length > 0) {
      allows.sort(byOrder);
      effect = 'allow';
      rules = allows.map((r) => r.id);
      reason = `allowed by ${ruleList(rules)}`;
      for (const rule of allows) if (rule.surface === 'mcp' && rule.requireApproval) requireApproval = true;
      // If method or path rules were waiting for the HTTP request, the proxy must look inside.
      if (conditional && facts?.surface === 'network' && facts.method === undefined && facts.path === undefined) needsInspection = true;
    } else {
      effect = 'deny';
      rules = [];
      reason = facts ? `no rule allows ${describe(facts)} (every surface denies by default)` : 'no rule allows this request';
    }
    if (effect === 'deny' && mode === 'observe') {
      effect = 'observed-deny';
      reason = `observe mode, would deny: ${reason}`;
    }
    const decision: Decision = { surface, effect, rules, reason, mode, latencyUs: elapsedUs(started) };
    if (requireApproval) decision.requireApproval = true;
    if (needsInspection) decision.needsInspection = true;
    return decision;
  }

  // ---- explain ----

  explain(request: DecisionRequest): Explanation {
    const decision = this.decide(request);
    const facts = this.normalise(request);
    const traces: RuleTrace[] = [];
    if (typeof facts !== 'string') {
      const paths: (string | undefined)[] = facts.surface === 'filesystem' ? facts.paths : [undefined];
      for (const path of paths) {
        const subject: Facts = path !== undefined && facts.surface === 'filesystem' ? { ...facts, paths: [path] } : facts;
        let context: CelContext | undefined;
        for (const rule of this.rules[facts.surface] as CompiledRule[]) {
          const why = mismatch(rule, subject, () => (context ??= this.celContext(subject)));
          const where = path !== undefined && paths.length > 1 ? ` (for ${path})` : '';
          traces.push({
            id: rule.id,
            effect: rule.effect,
            matched: why === null,
            why: (why === null ? matchedBecause(rule, subject) : `does not apply: ${why}`) + where,
          });
        }
      }
      for (const rule of this.inactive) {
        if (rule.surface !== facts.surface) continue;
        traces.push({ id: rule.id, effect: 'allow', matched: false, why: `not active on this node: its labels ${JSON.stringify(rule.labels)} do not all match` });
      }
    }
    return { decision, request, normalised: typeof facts === 'string' ? { error: facts } : describeFacts(facts), rules: traces };
  }

  // ---- views for data planes ----

  grants(principal: Principal): CredentialGrant[] {
    const normalised = this.principal(principal);
    const out: CredentialGrant[] = [];
    for (const rule of this.rules.credentials) {
      if (rule.effect !== 'allow' || rule.secret === undefined) continue;
      const facts: Facts = { surface: 'credentials', principal: normalised, secret: rule.secret, host: undefined, server: undefined };
      if (mismatch(rule, facts, () => this.celContext(facts)) !== null) continue;
      // A grant the policy also denies outright for this principal is no grant.
      if (this.credentialDenies.some((deny) => mismatch(deny, facts, () => this.celContext(facts)) === null)) continue;
      const grant: CredentialGrant = {
        ruleId: rule.id,
        secret: rule.secret,
        hosts: rule.hosts?.map((h) => h.text) ?? [],
        servers: rule.servers?.map((s) => s.text) ?? [],
      };
      if (rule.env !== undefined) grant.env = rule.env;
      if (rule.header) grant.header = rule.header;
      out.push(grant);
    }
    return out;
  }

  filesystemView(principal: Principal): FilesystemView {
    const normalised = this.principal(principal);
    const view: FilesystemView = { allow: [], deny: [], unmountable: [] };
    for (const rule of this.rules.filesystem) {
      // Scope only: the path part is what the sandbox mounts.
      if (scopeMismatch(rule, normalised) !== null) continue;
      for (const pattern of rule.patterns) {
        const literal = !splitPath(pattern).some((s) => s === '**' || hasGlob(s));
        // A condition or a glob cannot be expressed as a mount: allows are left out (fail closed), and
        // the sandbox is told about denies it cannot mask exactly.
        if (!literal || rule.when) {
          view.unmountable.push({ pattern, ruleId: rule.id, effect: rule.effect, prefix: literalPrefix(pattern) });
          if (rule.effect === 'allow' || !literal) continue;
        }
        if (rule.effect === 'allow') view.allow.push({ path: pattern, access: rule.access === 'rw' ? 'rw' : 'ro', ruleId: rule.id });
        else view.deny.push({ path: pattern, access: rule.access === 'write' ? 'write' : 'all', ruleId: rule.id });
      }
    }
    return view;
  }

  mayAllowByAddress(principal: Principal, port: number): boolean {
    const p = this.principal(principal);
    return this.rules.network.some(
      (rule) =>
        rule.effect === 'allow' &&
        rule.cidrs.length > 0 &&
        scopeMismatch(rule, p) === null &&
        (!rule.ports || rule.ports.some(([low, high]) => port >= low && port <= high)),
    );
  }

  inspects(host: string, principal: Principal): boolean {
    const normalised = normaliseHost(host);
    if (normalised.kind !== 'name') return false;
    const p = this.principal(principal);
    let found = false;
    this.inspectHosts.lookup(normalised.name, (rule) => {
      if (!found && scopeMismatch(rule, p) === null) found = true;
    });
    return found;
  }
}

const SURFACE_SET = new Set<string>(['network', 'filesystem', 'credentials', 'mcp']);

/** Microseconds since `started` (a performance.now() reading), to two decimals. */
function elapsedUs(started: number): number {
  return Math.round((performance.now() - started) * 100_000) / 100;
}

/** How many network decisions an engine keeps; it forgets them all when full (a new policy starts afresh). */
const NETWORK_DECISIONS_KEPT = 4096;
/** A longer key (a long path, many addresses) is decided every time rather than kept. */
const NETWORK_KEY_MAX = 1024;

/**
 * The fields a network decision is made from, as one text that no other request shares (JSON of typed
 * values); undefined when a field has a type `normalise` might read otherwise, or the text is too long.
 */
function networkDecisionKey(request: NetworkRequest): string | undefined {
  const { agent, teams, host, port, scheme, method, path, addresses } = request;
  if (typeof host !== 'string' || typeof port !== 'number') return undefined;
  if (!optionalText(agent) || !optionalText(scheme) || !optionalText(method) || !optionalText(path)) return undefined;
  if (!optionalTexts(teams) || !optionalTexts(addresses)) return undefined;
  const key = JSON.stringify([agent, teams, host, port, scheme, method, path, addresses]);
  return key.length <= NETWORK_KEY_MAX ? key : undefined;
}

function optionalText(value: unknown): boolean {
  return value === undefined || typeof value === 'string';
}

function optionalTexts(value: unknown): boolean {
  return value === undefined || (Array.isArray(value) && value.every((item) => typeof item === 'string'));
}

function byOrder(a: CompiledRule, b: CompiledRule): number {
  return a.order - b.order;
}

function ruleList(ids: string[]): string {
  return ids.length === 1 ? `rule "${ids[0]}"` : `rules ${ids.map((id) => `"${id}"`).join(', ')}`;
}

function hostText(host: NetworkFacts['host']): string {
  return host.kind === 'name' ? host.name : host.kind === 'ip' ? host.ip.text : '(invalid host)';
}

function describe(facts: Facts): string {
  switch (facts.surface) {
    case 'network': {
      const what = facts.method ? `${facts.method} ${facts.path ?? '/'} on ` : '';
      return `network access to ${what}${hostText(facts.host)}:${facts.port}`;
    }
    case 'filesystem':
      return `${facts.access} access to ${facts.paths[0]}`;
    case 'mcp':
      return facts.kind ? `the ${facts.kind} "${facts.name}" on MCP server "${facts.server}"` : `MCP server "${facts.server}"`;
    case 'credentials': {
      const where = facts.host ? ` to ${facts.host.kind === 'name' ? facts.host.name : 'that address'}` : facts.server ? ` to MCP server "${facts.server}"` : '';
      return `the secret "${facts.secret}"${where}`;
    }
  }
}

function describeFacts(facts: Facts): Record<string, unknown> {
  const principal = { agent: facts.principal.agent, teams: facts.principal.teams };
  switch (facts.surface) {
    case 'network':
      return {
        ...principal,
        host: hostText(facts.host),
        hostKind: facts.host.kind,
        embeddedIpv4: facts.host.kind === 'ip' ? facts.host.ip.embedded.map(String) : undefined,
        port: facts.port,
        scheme: facts.scheme,
        method: facts.method,
        path: facts.path,
        addresses: facts.addresses.map((a) => a.text),
      };
    case 'filesystem':
      return { ...principal, path: facts.paths[0], realPath: facts.paths[1], access: facts.access };
    case 'mcp':
      return { ...principal, server: facts.server, [facts.kind ?? 'target']: facts.name, annotations: facts.annotations };
    case 'credentials':
      return { ...principal, secret: facts.secret, host: facts.host ? (facts.host.kind === 'name' ? facts.host.name : '') : undefined, server: facts.server };
  }
}

function matchedBecause(rule: CompiledRule, facts: Facts): string {
  const cond = rule.when ? ` and its condition "${rule.when.source}" holds` : '';
  switch (rule.surface) {
    case 'network': {
      const targets = [...rule.hosts.map((h) => h.text), ...rule.cidrs.map((c) => `${c.address.toString()}/${c.prefix}`)];
      const pending = (rule.methods || rule.paths) && facts.surface === 'network' && facts.method === undefined && facts.path === undefined ? ' (its method and path rules apply once the HTTP request is visible)' : '';
      return `${rule.effect === 'allow' ? 'allows' : 'denies'} ${targets.join(', ')}${rule.ports ? ` on ports ${rule.ports.map(([a, b]) => (a === b ? a : `${a}-${b}`)).join(', ')}` : ''}${cond}${pending}`;
    }
    case 'filesystem':
      return `${rule.effect === 'allow' ? 'allows' : 'denies'} ${fileAccessLabel(rule.access)} under ${rule.patterns.join(', ')}${cond}`;
    case 'mcp': {
      const parts = [rule.servers ? `server ${rule.servers.map((g) => g.text).join(', ')}` : 'any server'];
      if (rule.tools) parts.push(`tools ${rule.tools.map((g) => g.text).join(', ')}`);
      if (rule.annotations) parts.push(`annotations ${JSON.stringify(Object.fromEntries(rule.annotations))}`);
      return `${rule.effect === 'allow' ? 'allows' : 'denies'} ${parts.join(', ')}${rule.requireApproval ? ' (with approval)' : ''}${cond}`;
    }
    case 'credentials':
      return rule.secret !== undefined
        ? `grants "${rule.secret}" for ${[...(rule.hosts?.map((h) => h.text) ?? []), ...(rule.servers?.map((s) => `server ${s.text}`) ?? [])].join(', ')}${cond}`
        : `denies ${rule.secrets?.map((s) => s.text).join(', ')}${cond}`;
  }
}

export type { CompiledPolicy };

/** Compiles a validated policy document. Throws a GatehouseError (exit 2) naming the rule for bad rules. */
export function compilePolicy(document: PolicyDocument, options: CompileOptions = {}): CompiledPolicy {
  return new CompiledPolicy(document, options);
}

/** The node's default CompileOptions: its labels, agents and workspace from config. */
export function nodeCompileOptions(settings: { labels: Record<string, string>; workspace?: string | undefined }, agents: Record<string, { teams: string[] }>): CompileOptions {
  const options: CompileOptions = { nodeLabels: settings.labels, agents, home: homedir() };
  if (settings.workspace !== undefined) options.workspace = settings.workspace;
  return options;
}
