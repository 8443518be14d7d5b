/**
 * `audit report`: what each agent reached, drawn from the audit index. Per agent: network destinations,
 * filesystem paths, credentials used and MCP tools called, each with how often it was allowed, denied, or
 * would have been denied (observe mode).
 */
import type { SummaryRow } from './indexer.js';

export interface Tally {
  count: number;
  allowed: number;
  denied: number;
  /** Would have been denied; let through because the surface is in observe mode. */
  observedDenied: number;
  firstSeen: string;
  lastSeen: string;
}

export interface AgentReport {
  agent: string;
  decisions: number;
  network: (Tally & { host: string; port: number | null })[];
  filesystem: (Tally & { path: string; access: string })[];
  credentials: (Tally & { secret: string; host: string | null; server: string | null })[];
  mcp: (Tally & { server: string; tool: string | null })[];
}

export interface Report {
  since?: string;
  until?: string;
  agents: AgentReport[];
}

/** Agent name used for records without one (anonymous or unidentified callers). */
export const UNKNOWN_AGENT = '(unknown)';

/** A filesystem record's access: `details.access` when recorded, else guessed from its action (`write`, `open`, ...). */
export function accessOf(access: string | null, action: string): 'read' | 'write' {
  return /write|create|delete|rename|mkdir|rw/i.test(access ?? action) ? 'write' : 'read';
}

function add(tally: Tally, row: SummaryRow): void {
  const { effect, count } = row;
  tally.count += count;
  if (tally.firstSeen === '' || row.first < tally.firstSeen) tally.firstSeen = row.first;
  if (row.last > tally.lastSeen) tally.lastSeen = row.last;
  if (effect === 'deny') tally.denied += count;
  else if (effect === 'observed-deny') tally.observedDenied += count;
  else tally.allowed += count;
}

const empty = (): Tally => ({ count: 0, allowed: 0, denied: 0, observedDenied: 0, firstSeen: '', lastSeen: '' });

export function buildReport(rows: readonly SummaryRow[], window: { since?: string; until?: string } = {}): Report {
  const agents = new Map<string, { report: AgentReport; entries: Map<string, Tally> }>();
  for (const row of rows) {
    const name = row.agent ?? UNKNOWN_AGENT;
    let agent = agents.get(name);
    if (!agent) {
      agent = { report: { agent: name, decisions: 0, network: [], filesystem: [], credentials: [], mcp: [] }, entries: new Map() };
      agents.set(name, agent);
    }
    agent.report.decisions += row.count;
    let key: string;
    let create: () => Tally;
    const report = agent.report;
    switch (row.surface) {
      case 'network': {
        const host = row.host ?? '(unknown host)';
        key = `n|${host}|${row.port}`;
        create = () => {
          const entry = { host, port: row.port, ...empty() };
          report.network.push(entry);
          return entry;
        };
        break;
      }
      case 'filesystem': {
        const path = row.target ?? '(unknown path)';
        const access = accessOf(row.access, row.action);
        key = `f|${path}|${access}`;
        create = () => {
          const entry = { path, access, ...empty() };
          report.filesystem.push(entry);
          return entry;
        };
        break;
      }
      case 'credentials': {
        const secret = row.target ?? '(unknown secret)';
        key = `c|${secret}|${row.host}|${row.server}`;
        create = () => {
          const entry = { secret, host: row.host, server: row.server, ...empty() };
          report.credentials.push(entry);
          return entry;
        };
        break;
      }
      case 'mcp': {
        const server = row.server ?? '(unknown server)';
        key = `m|${server}|${row.tool}`;
        create = () => {
          const entry = { server, tool: row.tool, ...empty() };
          report.mcp.push(entry);
          return entry;
        };
        break;
      }
      default:
        continue;
    }
    let tally = agent.entries.get(key);
    if (!tally) {
      tally = create();
      agent.entries.set(key, tally);
    }
    add(tally, row);
  }
  const byCount = (a: Tally, b: Tally) => b.count - a.count;
  const out = [...agents.values()].map(({ report }) => {
    report.network.sort(byCount);
    report.filesystem.sort(byCount);
    report.credentials.sort(byCount);
    report.mcp.sort(byCount);
    return report;
  });
  out.sort((a, b) => a.agent.localeCompare(b.agent));
  return { ...(window.since ? { since: window.since } : {}), ...(window.until ? { until: window.until } : {}), agents: out };
}

function verdicts(t: Tally): string {
  const parts = [`${t.allowed} allowed`, `${t.denied} denied`];
  if (t.observedDenied) parts.push(`${t.observedDenied} observed-deny`);
  return parts.join(', ');
}

/** The report as readable text: one block per agent, one line per destination. */
export function formatReport(report: Report): string {
  if (report.agents.length === 0) return 'No decisions recorded in this window.\n';
  let out = report.since ? `Since ${report.since}\n\n` : '';
  for (const agent of report.agents) {
    out += `Agent ${agent.agent} — ${agent.decisions} decisions\n`;
    const section = (title: string, lines: string[]) => {
      if (lines.length === 0) return;
      out += `  ${title}\n`;
      for (const line of lines) out += `    ${line}\n`;
    };
    section(
      'Network destinations',
      agent.network.map((n) => `${`${n.host}${n.port ? `:${n.port}` : ''}`.padEnd(40)} ${String(n.count).padStart(6)}  ${verdicts(n)}`),
    );
    section('Filesystem', agent.filesystem.map((f) => `${f.access.padEnd(6)} ${f.path.padEnd(48)} ${String(f.count).padStart(6)}  ${verdicts(f)}`));
    section(
      'Credentials',
      agent.credentials.map((c) => `${c.secret.padEnd(24)} → ${(c.host ?? (c.server ? `server ${c.server}` : '-')).padEnd(28)} ${String(c.count).padStart(6)}  ${verdicts(c)}`),
    );
    section('MCP tools', agent.mcp.map((m) => `${`${m.server}/${m.tool ?? '*'}`.padEnd(40)} ${String(m.count).padStart(6)}  ${verdicts(m)}`));
    out += '\n';
  }
  return out;
}
