/** Digests over a canonical JSON form (keys sorted at every level), for argument digests and tool pins. */
import { hash } from 'node:crypto';
import { canonicalJson } from '../policy/index.js';

export { canonicalJson };

export function digestOf(value: unknown): string {
  // One-shot, as audit lines are hashed (see hashLine): a call's arguments are digested on every call.
  return 'sha256:' + hash('sha256', canonicalJson(value ?? null), 'hex');
}
