/**
 * What every listener and step of one proxy shares: the policy holder, the recorder, the resolver, the
 * limits. Built once by `startEgressProxy`; steps read `policy.current` per connection so reloads apply.
 */
import { PerCallerPools } from './pools.js';
import type { Dispatcher } from './upstream.js';
import type { EgressSettings } from '../config/schema.js';
import type { PolicyHolder } from '../policy/engine.js';
import type { Authenticate, Client } from './authenticate.js';
import type { RateLimiter } from './limits.js';
import type { Recorder } from './record.js';
import type { Resolver } from './resolver.js';
import type { RequestInspector } from './inspect.js';
import type { ContentTools } from './content.js';

export interface Runtime {
  policy: PolicyHolder;
  recorder: Recorder;
  resolver: Resolver;
  authenticate: Authenticate;
  limits: EgressSettings['limits'];
  connections: RateLimiter;
  requests: RateLimiter;
  /** Open tunnels per agent (see `occupyTunnel`). */
  tunnels: Map<string, number>;
  /** Upstream clients for plain HTTP, one per caller (see upstream.ts). */
  upstreams: PerCallerPools<Dispatcher>;
  /** Who is behind each client socket (set by the listener that accepted it). */
  clients: WeakMap<object, Client>;
  /**
   * The HTTP engine for tunnels whose requests the proxy reads (see intercept.ts); it inspects TLS only
   * with a CA (`decrypts`). Set once the proxy has started.
   */
  inspector: RequestInspector;
  /** Scanner, placeholder registry and vault for the requests the proxy can read. */
  content: ContentTools;
  /** Hosts whose TLS is tunnelled even when a rule asks for inspection. */
  isPassThrough(host: string): boolean;
}
