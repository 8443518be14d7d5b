/**
 * One node: its config, policy, audit log and local API, plus a watcher that reloads the policy when the
 * config file (or the bundle it names) changes. An invalid new policy is refused and the old one stays;
 * both outcomes are logged and audited.
 */
import { createHash } from 'node:crypto';
import { readFileSync, watch, type FSWatcher } from 'node:fs';
import { homedir, hostname } from 'node:os';
import { basename, dirname, resolve } from 'node:path';
import type { Logger } from 'pino';
import { openNodeAudit } from '../audit/index.js';
import { AuditMetrics, METRICS_CONTENT_TYPE } from '../audit/metrics.js';
import { newCorrelationId, type AuditLog, type AuditRecord } from '../audit/record.js';
import { loadConfigFile } from '../config/load.js';
import { startNodeGateway, type RunningGateway } from '../gateway/index.js';
import type { Scanner } from '../dlp/index.js';
import { openSecrets, PlaceholderRegistry } from '../secrets/index.js';
import { startEgressProxy, type EgressProxy } from '../egress/index.js';
import { openAgentRegistry } from '../agents/index.js';
import { configFiles } from '../sandbox/config-guard.js';
import { mcpServerLauncher } from '../sandbox/mcp.js';
import type { Config } from '../config/schema.js';
import type { PolicyEngine } from '../policy/engine.js';
import type { Decision, Principal } from '../policy/types.js';
import { errorMessage } from '../util/errors.js';
import { guardRegexps } from '../util/regexp-guard.js';
import { ensureNodeKeys, type KeyPair } from '../util/keys.js';
import { ensurePrivateDir, expandHome } from '../util/paths.js';
import { startApi, type Api } from './api.js';
import { startControlServer, type ControlServer } from './control.js';
import { loadPolicy } from './policy-source.js';

export interface NodeOptions {
  configPath: string;
  dataDir: string;
  logger: Logger;
  /** Overrides `node.api.listen` (tests use port 0). */
  apiListen?: string;
  /** Overrides `gateway.listen`. */
  gatewayListen?: string;
  /** Overrides `egress.listen`. */
  egressListen?: string;
  audit?: AuditLog;
}

export interface PolicyState {
  current: PolicyEngine;
  loadedAt: string;
  source: string;
}

export interface ReloadResult {
  ok: boolean;
  changed: boolean;
  version: string;
  error?: string;
}

export interface RunningNode {
  name: string;
  config: Config;
  dataDir: string;
  keys: KeyPair;
  holder: PolicyState;
  audit: AuditLog;
  api: Api;
  gateway: RunningGateway | undefined;
  egress: EgressProxy | undefined;
  /** Issues and swaps the session placeholders that stand in for secrets (shared by egress and sandboxes). */
  placeholders: PlaceholderRegistry;
  /** Re-reads the config and swaps the policy if it is valid. */
  reload(): Promise<ReloadResult>;
  close(): Promise<void>;
}

function systemRecord(node: string, action: string, effect: AuditRecord['effect'], reason: string, engine: PolicyEngine, details?: Record<string, unknown>): AuditRecord {
  const record: AuditRecord = {
    v: 1,
    time: new Date().toISOString(),
    node,
    principal: {},
    surface: 'system',
    action,
    resource: 'policy',
    effect,
    rules: [],
    reason,
    latencyUs: 0,
    correlationId: newCorrelationId(),
    policy: { version: engine.version, digest: engine.digest },
  };
  if (details) record.details = details;
  return record;
}

export async function startNode(options: NodeOptions): Promise<RunningNode> {
  const { logger } = options;
  guardRegexps();
  const configPath = resolve(options.configPath);
  let loaded = loadConfigFile(configPath);
  const config = loaded.config;
  const dataDir = ensurePrivateDir(options.dataDir);
  const keys = ensureNodeKeys(dataDir);
  const name = config.node.name ?? hostname();
  const nodeAudit = options.audit ? undefined : openNodeAudit(dataDir, name, config.audit);
  const audit: AuditLog = options.audit ?? nodeAudit!;

  const initial = loadPolicy(config, configPath);
  const holder: PolicyState = { current: initial.engine, loadedAt: new Date().toISOString(), source: initial.source };
  await audit.append(systemRecord(name, 'policy.load', 'info', `loaded policy ${initial.engine.version} from ${initial.source}`, initial.engine));
  logger.info({ version: initial.engine.version, digest: initial.engine.digest, source: initial.source }, 'policy loaded');

  // The node's audit log counts every record it takes; an injected log (tests, embedding) gets its own counter.
  const metrics = nodeAudit?.metrics ?? new AuditMetrics();
  const api = await startApi(options.apiListen ?? config.node.api.listen, {
    holder,
    audit,
    node: name,
    ...(nodeAudit ? {} : { onDecision: (decision: Decision) => metrics.observeRecord(decision) }),
  });
  api.route('GET', '/metrics', (_request, response) => {
    response.writeHead(200, { 'content-type': METRICS_CONTENT_TYPE, 'cache-control': 'no-store' });
    response.end(metrics.render());
  });

  // The data planes. Both authenticate agents by the keys in the store and take secrets from the vault and
  // the configured providers; neither ever sees the other. The proxy starts first: sandboxed MCP servers
  // reach the network only through their own session on it.
  const secrets = openSecrets({ dataDir, settings: config.secrets, baseDir: dirname(configPath) });
  const resolveSecret = (secret: string): Promise<string> => secrets.resolveSecret(secret);
  const placeholders = new PlaceholderRegistry();
  // One scanner per data plane (vault values and credential-like environment variables included), each
  // reporting its scan times under its own surface in /metrics.
  const scanners: Scanner[] = [];
  const meteredScanner = async (surface: 'network' | 'mcp'): Promise<Scanner> => {
    const scanner = await secrets.createScanner(initial.engine.dlp);
    scanner.onScan = (microseconds) => metrics.observeScan(microseconds, surface);
    scanners.push(scanner);
    return scanner;
  };
  // After a reload (the policy's dlp settings) or a vault change (the values it knows), the scanners the data
  // planes hold take on the new settings and values in place.
  const refreshScanners = async (): Promise<void> => {
    for (const scanner of scanners) scanner.adopt(await secrets.createScanner(holder.current.dlp));
  };
  let gateway: RunningGateway | undefined;
  let egress: EgressProxy | undefined;
  let control: ControlServer | undefined;
  try {
    if (config.egress.enabled) {
      const agents = openAgentRegistry(dataDir);
      egress = await startEgressProxy({
        policy: holder,
        audit,
        authenticate: (key) => agents.authenticateAgentKey(key),
        node: name,
        settings: options.egressListen ? { ...config.egress, listen: options.egressListen } : config.egress,
        dataDir,
        scanner: await meteredScanner('network'),
        placeholders,
        resolveSecret,
        // In sync mode no byte flows before the connection's record is on disk.
        awaitAudit: config.audit.mode === 'sync',
      });
    }
    if (config.gateway.enabled) {
      const proxy = egress;
      gateway = await startNodeGateway({
        config: options.gatewayListen ? { ...config, gateway: { ...config.gateway, listen: options.gatewayListen } } : config,
        dataDir,
        policy: holder,
        audit,
        node: name,
        scanner: await meteredScanner('mcp'),
        resolveSecret,
        // Every stdio MCP server runs in its own sandbox as principal `mcp-server:<name>`, with the policy's
        // filesystem view for that principal and, when the proxy runs, its own egress session.
        launch: mcpServerLauncher({
          policy: holder,
          config: () => ({ path: configPath, files: configFiles(loaded.config, configPath, loaded.text, homedir()) }),
          audit,
          node: name,
          settings: config.sandbox,
          dataDir,
          ...(proxy ? { egressSessionFor: (principal) => proxy.openSession(principal) } : {}),
        }),
      });
    }
    // `gatehouse run` on this data dir hands its audit records and egress session to this node.
    control = await startControlServer({
      dataDir,
      node: name,
      policy: holder,
      audit,
      egress,
      // A run carries the gateway's HTTP endpoint (on a socket of its own) into its sandbox, for the agent's MCP client.
      ...(gateway ? { gatewayFor: (principal: Principal) => gateway!.listenForRun(principal) } : {}),
      placeholders,
      resolveSecret,
      onSecretsChanged: refreshScanners,
    });
  } catch (error) {
    await gateway?.close();
    await egress?.close();
    await api.close();
    await audit.close();
    throw error;
  }

  const fingerprint = (): string => {
    const hash = createHash('sha256');
    hash.update(readFileSync(configPath));
    const bundle = loaded.config.node.policyBundle;
    if (bundle) {
      try {
        hash.update(readFileSync(resolve(dirname(configPath), expandHome(bundle))));
      } catch {
        hash.update('missing bundle');
      }
    }
    return hash.digest('hex');
  };
  let lastFingerprint = fingerprint();

  const reload = async (): Promise<ReloadResult> => {
    const previous = holder.current;
    let print: string;
    try {
      print = fingerprint();
    } catch (error) {
      print = `unreadable: ${errorMessage(error)}`;
    }
    if (print === lastFingerprint) return { ok: true, changed: false, version: previous.version };
    lastFingerprint = print;
    try {
      const next = loadConfigFile(configPath);
      const policy = loadPolicy(next.config, configPath);
      loaded = next;
      holder.current = policy.engine;
      holder.loadedAt = new Date().toISOString();
      holder.source = policy.source;
      await refreshScanners().catch((error: unknown) => logger.error({ error: errorMessage(error) }, 'could not rebuild the secret scanners; they keep the previous settings'));
      const reason = `reloaded policy ${previous.version} -> ${policy.engine.version}`;
      logger.info({ from: previous.version, to: policy.engine.version }, 'policy reloaded');
      await audit.append(systemRecord(name, 'policy.reload', 'info', reason, policy.engine, { previous: { version: previous.version, digest: previous.digest } }));
      return { ok: true, changed: true, version: policy.engine.version };
    } catch (error) {
      const message = errorMessage(error);
      logger.error({ error: message, keeping: previous.version }, 'policy reload refused; keeping the active policy');
      await audit.append(systemRecord(name, 'policy.reload', 'error', `refused the new policy, keeping ${previous.version}: ${message}`, previous)).catch(() => undefined);
      return { ok: false, changed: false, version: previous.version, error: message };
    }
  };

  // Watch directories, not files: editors replace a file by renaming over it, which ends a file watch.
  const watchers: FSWatcher[] = [];
  let timer: NodeJS.Timeout | undefined;
  if (config.node.watch) {
    const targets = new Map<string, Set<string>>();
    const add = (path: string): void => {
      const dir = dirname(path);
      if (!targets.has(dir)) targets.set(dir, new Set());
      targets.get(dir)!.add(basename(path));
    };
    add(configPath);
    if (config.node.policyBundle) add(resolve(dirname(configPath), expandHome(config.node.policyBundle)));
    for (const [dir, names] of targets) {
      const watcher = watch(dir, (_event, file) => {
        if (file !== null && !names.has(file.toString())) return;
        clearTimeout(timer);
        timer = setTimeout(() => void reload(), 100);
      });
      watcher.on('error', (error) => logger.warn({ error: error.message, dir }, 'config watch failed; reload on change is off'));
      watchers.push(watcher);
    }
  }

  return {
    name,
    config,
    dataDir,
    keys,
    holder,
    audit,
    api,
    gateway,
    egress,
    placeholders,
    reload,
    async close() {
      clearTimeout(timer);
      for (const watcher of watchers) watcher.close();
      await control?.close();
      await egress?.close();
      await gateway?.close();
      await api.close();
      await audit.close();
    },
  };
}
