/**
 * The authenticate step. A caller on a session socket is the session's principal: the socket is the
 * identity, and nothing the caller says changes it. Anyone else shows an agent key, in Proxy-Authorization
 * (`Basic` with the key as the password, or `Bearer <key>`) or as the SOCKS5 password.
 */
import type { Principal } from '../policy/types.js';
import { rememberedByText } from '../util/memo.js';
import { Refusal } from './refusal.js';

/** Turns an agent key into its principal; undefined for an unknown or revoked key. */
export type Authenticate = (key: string) => Principal | undefined | Promise<Principal | undefined>;

/** Who is on the other end of a client socket, as far as the listener knows before any request. */
export interface Client {
  listener: 'tcp' | 'session' | 'socks';
  /** Set for session sockets: the principal the session was opened for. */
  principal?: Principal;
  session?: string;
}

export interface Caller {
  principal: Principal;
  session: string | undefined;
}

/**
 * Who the caller is, or why not. Synchronous when `authenticate` is (the node's key lookup is): a request
 * pays for no promise it does not need.
 */
export function authenticateCaller(client: Client, key: string | undefined, authenticate: Authenticate): Caller | Refusal | Promise<Caller | Refusal> {
  if (client.principal) return { principal: client.principal, session: client.session };
  if (key === undefined || key === '') {
    return new Refusal(407, 'auth-required', 'send your agent key in Proxy-Authorization (for example http://agent:<key>@127.0.0.1:7402)');
  }
  let found: ReturnType<Authenticate>;
  try {
    found = authenticate(key);
  } catch {
    return callerWith(undefined);
  }
  // Anything with a `then` is an answer still to come, never a principal (a thenable taken for one would let
  // any key in).
  if (typeof (found as PromiseLike<unknown> | undefined)?.then === 'function') return Promise.resolve(found).then(callerWith, () => callerWith(undefined));
  return callerWith(found as Principal | undefined);
}

function callerWith(principal: Principal | undefined): Caller | Refusal {
  if (!principal) return new Refusal(407, 'auth-required', 'the agent key in Proxy-Authorization is not valid');
  return { principal, session: undefined };
}

/** The key in a Proxy-Authorization header: the Basic password (or user, when the password is empty), or a Bearer token. */
export function keyFromProxyAuthorization(header: string | undefined): string | undefined {
  return header === undefined ? undefined : keyFromHeader(header);
}

/** A client sends the same header on every request: its key is decoded once (see util/memo.ts). */
const keyFromHeader = rememberedByText(readKey, { entries: 1024, textLength: 1024 });

function readKey(header: string): string | undefined {
  const space = header.indexOf(' ');
  if (space < 0) return undefined;
  const scheme = header.slice(0, space).toLowerCase();
  const value = header.slice(space + 1).trim();
  if (scheme === 'bearer') return value;
  if (scheme !== 'basic') return undefined;
  const decoded = Buffer.from(value, 'base64').toString('utf8');
  const colon = decoded.indexOf(':');
  if (colon < 0) return decoded;
  const password = decoded.slice(colon + 1);
  return password === '' ? decoded.slice(0, colon) : password;
}

const UNKNOWN_CLIENT: Client = { listener: 'tcp' };

/** Who is behind a socket, as its listener recorded it. */
export function clientOf(clients: WeakMap<object, Client>, socket: object): Client {
  return clients.get(socket) ?? UNKNOWN_CLIENT;
}
