/**
 * The node's local HTTP API: a policy decision point for external tools.
 *   GET  /healthz       liveness
 *   POST /v1/decide     a decision request → the decision (and one audit record)
 *   POST /v1/explain    the same, with every rule's verdict (no audit record: it decides nothing)
 *   GET  /v1/policy     the active policy's version and digest
 * Other parts of the node add routes (for example GET /metrics) with `route`.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { decisionRecord } from '../audit/decision.js';
import type { AuditLog } from '../audit/record.js';
import type { PolicyHolder } from '../policy/engine.js';
import { parseDecisionRequest } from '../policy/request-schema.js';
import type { Decision, DecisionRequest } from '../policy/types.js';

const MAX_BODY = 256 * 1024;

export type RouteHandler = (request: IncomingMessage, response: ServerResponse, body: Buffer) => void | Promise<void>;

export interface ApiOptions {
  holder: PolicyHolder & { loadedAt: string; source: string };
  audit: AuditLog;
  node: string;
  /** Called after each decision, for metrics. */
  onDecision?: (decision: Decision) => void;
}

export interface Api {
  server: Server;
  url: string;
  route(method: string, path: string, handler: RouteHandler): void;
  close(): Promise<void>;
}

export function sendJson(response: ServerResponse, status: number, value: unknown): void {
  const body = JSON.stringify(value);
  response.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body), 'cache-control': 'no-store' });
  response.end(body);
}

function sendError(response: ServerResponse, status: number, code: string, message: string): void {
  sendJson(response, status, { error: { code, message } });
}

/**
 * DNS-rebinding protection: a browser page on evil.example that rebinds its name to 127.0.0.1 sends
 * `Host: evil.example`. Only loopback names and the address we listen on are accepted.
 */
function hostAllowed(host: string | undefined, listenHost: string): boolean {
  if (!host) return false;
  const name = host.startsWith('[') ? host.slice(0, host.indexOf(']') + 1) : host.split(':')[0] ?? '';
  return name === 'localhost' || name === '127.0.0.1' || name === '[::1]' || name === listenHost || name === `[${listenHost}]`;
}

function readBody(request: IncomingMessage): Promise<Buffer | undefined> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    request.on('data', (chunk: Buffer) => {
      size += chunk.length;
      if (size > MAX_BODY) {
        resolve(undefined);
        request.destroy();
        return;
      }
      chunks.push(chunk);
    });
    request.on('end', () => resolve(Buffer.concat(chunks)));
    request.on('error', reject);
  });
}

export function splitListen(listen: string): { host: string; port: number } {
  const colon = listen.lastIndexOf(':');
  let host = listen.slice(0, colon);
  if (host.startsWith('[')) host = host.slice(1, -1);
  return { host, port: Number(listen.slice(colon + 1)) };
}

export async function startApi(listen: string, options: ApiOptions): Promise<Api> {
  const routes = new Map<string, RouteHandler>();
  const { host, port } = splitListen(listen);

  /** The body as a decision request, or undefined once a 400 has been sent saying what is wrong. */
  const requestFrom = (response: ServerResponse, body: Buffer): DecisionRequest | undefined => {
    let value: unknown;
    try {
      value = JSON.parse(body.toString('utf8'));
    } catch {
      sendError(response, 400, 'invalid_json', 'the request body is not valid JSON');
      return undefined;
    }
    const parsed = parseDecisionRequest(value);
    if ('error' in parsed) {
      sendError(response, 400, 'invalid_request', parsed.error);
      return undefined;
    }
    return parsed.request;
  };

  const decide: RouteHandler = async (_request, response, body) => {
    const request = requestFrom(response, body);
    if (!request) return;
    const engine = options.holder.current;
    const decision = engine.decide(request);
    // Fail closed: a decision that cannot be recorded is not given out as an allow.
    try {
      await options.audit.append(decisionRecord(request, decision, { node: options.node, policy: { version: engine.version, digest: engine.digest } }));
    } catch (error) {
      sendError(response, 503, 'audit_unavailable', `the decision could not be recorded (${(error as Error).message}); denying`);
      return;
    }
    options.onDecision?.(decision);
    sendJson(response, 200, decision);
  };

  routes.set('GET /healthz', (_request, response) => sendJson(response, 200, { status: 'ok' }));
  routes.set('POST /v1/decide', decide);
  routes.set('POST /v1/explain', (_request, response, body) => {
    const request = requestFrom(response, body);
    if (request) sendJson(response, 200, options.holder.current.explain(request));
  });
  routes.set('GET /v1/policy', (_request, response) => {
    const engine = options.holder.current;
    sendJson(response, 200, { version: engine.version, digest: engine.digest, rules: engine.ruleCount, source: options.holder.source, loadedAt: options.holder.loadedAt });
  });

  const server = createServer(async (request, response) => {
    if (!hostAllowed(request.headers.host, host)) {
      sendError(response, 403, 'host_not_allowed', 'the Host header is not a loopback name; the API refuses it (DNS-rebinding protection)');
      return;
    }
    const path = (request.url ?? '/').split('?')[0] ?? '/';
    const handler = routes.get(`${request.method} ${path}`);
    if (!handler) {
      const known = [...routes.keys()].some((key) => key.endsWith(` ${path}`));
      sendError(response, known ? 405 : 404, known ? 'method_not_allowed' : 'not_found', known ? `${request.method} is not allowed on ${path}` : `no such endpoint: ${path}`);
      return;
    }
    try {
      const body = request.method === 'POST' ? await readBody(request) : Buffer.alloc(0);
      if (body === undefined) {
        sendError(response, 413, 'too_large', `the request body is larger than ${MAX_BODY} bytes`);
        return;
      }
      await handler(request, response, body);
    } catch (error) {
      if (!response.headersSent) sendError(response, 500, 'internal', (error as Error).message);
    }
  });
  server.headersTimeout = 10_000;
  server.requestTimeout = 30_000;

  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  const address = server.address() as AddressInfo;
  const shownHost = address.family === 'IPv6' ? `[${address.address}]` : address.address;
  return {
    server,
    url: `http://${shownHost}:${address.port}`,
    route: (method, path, handler) => routes.set(`${method} ${path}`, handler),
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}
