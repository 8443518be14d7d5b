/** Digests over a canonical JSON form (keys sorted at every level), for argument digests and tool pins. */
import { createHash } from 'node:crypto';
import { canonicalJson } from '../policy/index.js';

export { canonicalJson };

export function digestOf(value: unknown): string {
  return 'sha256:' + createHash('sha256').update(canonicalJson(value ?? null)).digest('hex');
}
