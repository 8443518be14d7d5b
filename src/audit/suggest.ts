/**
 * `policy suggest`: turns what agents were seen doing into the smallest policy that lets them keep doing it,
 * as a gatehouse.yaml commented with counts. Traffic that was allowed or only observed (observe mode's
 * `observed-deny`) becomes allow rules scoped to the agents seen; traffic that was denied while enforcing is
 * listed in comments and never allowed. The output is validated against the config schema before it is shown.
 */
import { stringify } from 'yaml';
import { parseYaml } from '../config/load.js';
import { configSchema } from '../config/schema.js';
import { GatehouseError } from '../util/errors.js';
import { UNKNOWN_AGENT, type Report, type Tally } from './report.js';

interface Use extends Tally {
  agents: Set<string>;
}

function use(): Use {
  return { count: 0, allowed: 0, denied: 0, observedDenied: 0, firstSeen: '', lastSeen: '', agents: new Set() };
}

function merge(into: Use, from: Tally, agent: string): void {
  into.count += from.count;
  into.allowed += from.allowed;
  into.denied += from.denied;
  into.observedDenied += from.observedDenied;
  if (from.allowed + from.observedDenied > 0) into.agents.add(agent);
}

/** Wanted: let through (allowed, or only observed as a would-be denial). */
const wanted = (u: Tally) => u.allowed + u.observedDenied > 0;

function scalar(value: string | number): string {
  return typeof value === 'number' ? String(value) : stringify(value).trimEnd();
}

function flow(values: readonly (string | number)[]): string {
  return `[${values.map(scalar).join(', ')}]`;
}

function counts(u: Tally, noun: string): string {
  const parts = [];
  if (u.allowed) parts.push(`${u.allowed} allowed`);
  if (u.observedDenied) parts.push(`${u.observedDenied} observed-deny`);
  if (u.denied) parts.push(`${u.denied} denied`);
  return `${u.count} ${noun}${u.count === 1 ? '' : 's'} (${parts.join(', ')})`;
}

/** Agents scope for a rule: the agents seen, or none when some traffic came from an unidentified caller. */
function agentsLine(agents: Set<string>, indent: string): string {
  if (agents.size === 0 || agents.has(UNKNOWN_AGENT)) return '';
  return `${indent}agents: ${flow([...agents].sort())}\n`;
}

function ruleId(prefix: string, name: string, taken: Set<string>): string {
  const base = `${prefix}-${name.replace(/[^A-Za-z0-9_.:-]+/g, '-').replace(/^-+|-+$/g, '')}`.slice(0, 120) || prefix;
  let id = base;
  for (let n = 2; taken.has(id); n += 1) id = `${base}-${n}`;
  taken.add(id);
  return id;
}

function comment(text: string): string {
  return text.replace(/[\r\n]+/g, ' ');
}

export function suggestPolicy(report: Report): { text: string; rules: number } {
  const network = new Map<string, Use & { host: string; ports: Set<number> }>();
  const files = new Map<string, Use & { path: string; write: boolean }>();
  const secrets = new Map<string, Use & { secret: string; hosts: Set<string>; servers: Set<string> }>();
  const tools = new Map<string, Map<string, Use>>();

  for (const agent of report.agents) {
    for (const n of agent.network) {
      let entry = network.get(n.host);
      if (!entry) network.set(n.host, (entry = { ...use(), host: n.host, ports: new Set() }));
      merge(entry, n, agent.agent);
      if (wanted(n) && n.port) entry.ports.add(n.port);
    }
    for (const f of agent.filesystem) {
      let entry = files.get(f.path);
      if (!entry) files.set(f.path, (entry = { ...use(), path: f.path, write: false }));
      merge(entry, f, agent.agent);
      if (wanted(f) && f.access === 'write') entry.write = true;
    }
    for (const c of agent.credentials) {
      let entry = secrets.get(c.secret);
      if (!entry) secrets.set(c.secret, (entry = { ...use(), secret: c.secret, hosts: new Set(), servers: new Set() }));
      merge(entry, c, agent.agent);
      if (wanted(c) && c.host) entry.hosts.add(c.host);
      if (wanted(c) && c.server) entry.servers.add(c.server);
    }
    for (const m of agent.mcp) {
      let server = tools.get(m.server);
      if (!server) tools.set(m.server, (server = new Map()));
      const name = m.tool ?? '*';
      let entry = server.get(name);
      if (!entry) server.set(name, (entry = use()));
      merge(entry, m, agent.agent);
    }
  }

  const taken = new Set<string>();
  const refused: string[] = [];
  let rules = 0;
  let out = '# Suggested by "gatehouse policy suggest" from the audit trail';
  out += report.since ? ` since ${report.since}.\n` : '.\n';
  out += '# Every rule allows only what was seen, scoped to the agents seen. Review it, then enforce it.\n';
  out += 'version: 1\npolicy:\n';

  // Hosts seen on the same ports by the same agents share one rule; each host keeps its own count.
  let section = '';
  const hostGroups = new Map<string, (Use & { host: string; ports: Set<number> })[]>();
  for (const entry of [...network.values()].sort((a, b) => b.count - a.count)) {
    if (!wanted(entry)) {
      refused.push(`network ${entry.host}: ${counts(entry, 'connection')}`);
      continue;
    }
    const key = `${[...entry.ports].sort((a, b) => a - b).join(',')}|${[...entry.agents].sort().join(',')}`;
    hostGroups.set(key, [...(hostGroups.get(key) ?? []), entry]);
  }
  for (const entries of hostGroups.values()) {
    const first = entries[0]!;
    const ports = [...first.ports].sort((a, b) => a - b);
    const scoped = first.agents.size > 0 && !first.agents.has(UNKNOWN_AGENT) ? [...first.agents].sort() : [];
    const name = `${scoped.join('-') || 'all'}-${ports.join('-') || 'any-port'}`;
    section += `    - id: ${ruleId('net', name, taken)}\n      allow:\n`;
    for (const entry of entries) section += `        - ${scalar(entry.host)}  # ${counts(entry, 'connection')}\n`;
    if (ports.length > 0) section += `      ports: ${flow(ports)}\n`;
    section += agentsLine(first.agents, '      ');
    rules += 1;
  }
  out += section ? `  network:\n${section}` : '  network: []\n';

  // Paths are grouped into one rule per access and set of agents.
  const groups = new Map<string, (Use & { path: string; write: boolean })[]>();
  for (const entry of [...files.values()].sort((a, b) => a.path.localeCompare(b.path))) {
    if (!wanted(entry)) {
      refused.push(`filesystem ${entry.path}: ${counts(entry, 'access')}`);
      continue;
    }
    const key = `${entry.write ? 'rw' : 'ro'}|${[...entry.agents].sort().join(',')}`;
    groups.set(key, [...(groups.get(key) ?? []), entry]);
  }
  section = '';
  for (const [key, entries] of groups) {
    const access = key.slice(0, 2);
    section += `    - id: ${ruleId('fs', access === 'rw' ? 'read-write' : 'read', taken)}\n      allow:\n        access: ${access}\n        paths:\n`;
    for (const entry of entries) section += `          - ${scalar(entry.path)}  # ${counts(entry, 'access')}\n`;
    const agents = new Set(entries.flatMap((e) => [...e.agents]));
    section += agentsLine(agents, '      ');
    rules += 1;
  }
  out += section ? `  filesystem:\n${section}` : '  filesystem: []\n';

  section = '';
  for (const entry of [...secrets.values()].sort((a, b) => b.count - a.count)) {
    if (!wanted(entry) || entry.hosts.size + entry.servers.size === 0) {
      refused.push(`credentials ${entry.secret}: ${counts(entry, 'use')}${wanted(entry) ? ' (no destination recorded)' : ''}`);
      continue;
    }
    section += `    # ${comment(entry.secret)}: ${counts(entry, 'use')}\n`;
    section += `    - id: ${ruleId('cred', entry.secret, taken)}\n      secret: ${scalar(entry.secret)}\n`;
    if (entry.hosts.size) section += `      hosts: ${flow([...entry.hosts].sort())}\n`;
    if (entry.servers.size) section += `      servers: ${flow([...entry.servers].sort())}\n`;
    section += agentsLine(entry.agents, '      ');
    rules += 1;
  }
  out += section ? `  credentials:\n${section}` : '  credentials: []\n';

  section = '';
  for (const [server, byTool] of [...tools.entries()].sort((a, b) => a[0].localeCompare(b[0]))) {
    const kept = [...byTool.entries()].filter(([tool, u]) => {
      if (!wanted(u)) refused.push(`mcp ${server}/${tool}: ${counts(u, 'call')}`);
      return wanted(u);
    });
    if (kept.length === 0) continue;
    kept.sort((a, b) => b[1].count - a[1].count);
    section += `    - id: ${ruleId('mcp', server, taken)}\n      allow:\n        server: ${scalar(server)}\n        tools:\n`;
    for (const [tool, u] of kept) section += `          - ${scalar(tool)}  # ${counts(u, 'call')}\n`;
    section += agentsLine(new Set(kept.flatMap(([, u]) => [...u.agents])), '      ');
    rules += 1;
  }
  out += section ? `  mcp:\n${section}` : '  mcp: []\n';

  if (refused.length > 0) {
    out += '\n# Denied while enforcing, and not allowed here:\n';
    for (const line of refused) out += `#   ${comment(line)}\n`;
  }

  try {
    parseYaml(out, '<suggested policy>', configSchema);
  } catch (error) {
    throw new GatehouseError('suggest_invalid', `the suggested policy did not validate (${(error as Error).message}); please report this`, { exitCode: 2 });
  }
  return { text: out, rules };
}
