/**
 * Who is calling the gateway: an agent API key, an OAuth 2.1 bearer JWT from the configured issuer, or
 * (only when config allows it) an anonymous caller on a loopback address. Anything else is refused.
 * The caller's credential stays here: nothing in it is forwarded to an upstream.
 */
import type { IncomingHttpHeaders } from 'node:http';
import ipaddr from 'ipaddr.js';
import { createRemoteJWKSet, jwtVerify, type JWTPayload } from 'jose';
import type { GatewaySettings } from '../config/schema.js';
import type { Principal } from '../policy/types.js';

export interface KeyAuthenticator {
  authenticateAgentKey(key: string): Principal | undefined;
}

export type AuthOutcome = { ok: true; principal: Principal; via: 'api-key' | 'oauth' | 'anonymous' | 'run' } | { ok: false; message: string; invalidToken: boolean };

export interface AuthenticatorOptions {
  auth: GatewaySettings['auth'];
  agents?: KeyAuthenticator;
  /** Teams from the config's `agents:` section, added to those an identity carries. */
  configTeams?: (agent: string) => string[];
}

export class Authenticator {
  private readonly jwks;

  constructor(private readonly options: AuthenticatorOptions) {
    const oauth = options.auth.oauth;
    this.jwks = oauth
      ? createRemoteJWKSet(new URL(oauth.jwksUri ?? new URL('.well-known/jwks.json', oauth.issuer.endsWith('/') ? oauth.issuer : oauth.issuer + '/').href), {
          timeoutDuration: 5000,
          cooldownDuration: 30_000,
        })
      : undefined;
  }

  /**
   * Who sent the request. `run`, for a request that came through a `gatehouse run` sandbox's own socket, is
   * that run's agent: the socket is the identity, as the egress proxy's session sockets are, so a program in
   * the sandbox needs no key. Credentials it does send are checked as always.
   */
  async authenticate(headers: IncomingHttpHeaders, remoteAddress: string | undefined, run?: Principal): Promise<AuthOutcome> {
    const token = bearerToken(headers);
    if (token === undefined && run?.agent !== undefined) return { ok: true, principal: this.withConfigTeams(run), via: 'run' };
    if (token === undefined) {
      if (this.options.auth.allowAnonymousLoopback && isLoopback(remoteAddress)) {
        return { ok: true, principal: this.withConfigTeams({ agent: 'anonymous' }), via: 'anonymous' };
      }
      return { ok: false, message: 'this gateway needs credentials: an agent API key or an OAuth bearer token', invalidToken: false };
    }
    if (token.startsWith('ghk_')) {
      const principal = this.options.auth.apiKeys ? this.options.agents?.authenticateAgentKey(token) : undefined;
      if (principal) return { ok: true, principal: this.withConfigTeams(principal), via: 'api-key' };
      return { ok: false, message: 'the agent API key is not valid (unknown, removed or mistyped)', invalidToken: true };
    }
    const oauth = this.options.auth.oauth;
    if (!oauth || !this.jwks) return { ok: false, message: 'the bearer token is not an agent API key and OAuth is not configured', invalidToken: true };
    let payload: JWTPayload;
    try {
      ({ payload } = await jwtVerify(token, this.jwks, {
        issuer: oauth.issuer,
        audience: oauth.audience,
        algorithms: oauth.algorithms,
        requiredClaims: ['exp'],
      }));
    } catch (error) {
      return { ok: false, message: `the bearer token was rejected: ${error instanceof Error ? error.message : String(error)}`, invalidToken: true };
    }
    const principal: Principal = { claims: payload as Record<string, unknown> };
    const agent = payload[oauth.agentClaim] ?? payload.client_id;
    if (typeof agent === 'string') principal.agent = agent;
    const user = payload[oauth.userClaim];
    if (typeof user === 'string') principal.user = user;
    const teams = payload[oauth.teamsClaim];
    if (Array.isArray(teams)) principal.teams = teams.filter((team): team is string => typeof team === 'string');
    return { ok: true, principal: this.withConfigTeams(principal), via: 'oauth' };
  }

  private withConfigTeams(principal: Principal): Principal {
    const extra = principal.agent !== undefined ? (this.options.configTeams?.(principal.agent) ?? []) : [];
    if (extra.length === 0) return principal;
    return { ...principal, teams: [...new Set([...(principal.teams ?? []), ...extra])].sort() };
  }
}

/** `Authorization: Bearer <token>`, else `X-Gatehouse-Key: <key>`. */
function bearerToken(headers: IncomingHttpHeaders): string | undefined {
  const authorization = headers.authorization;
  if (typeof authorization === 'string') {
    const match = /^Bearer[ \t]+([^\s]+)\s*$/i.exec(authorization);
    if (match) return match[1];
    return ''; // present but not a bearer token: never anonymous
  }
  const key = headers['x-gatehouse-key'];
  return typeof key === 'string' ? key.trim() : undefined;
}

export function isLoopback(address: string | undefined): boolean {
  if (!address || !ipaddr.isValid(address)) return false;
  return ipaddr.process(address).range() === 'loopback';
}
