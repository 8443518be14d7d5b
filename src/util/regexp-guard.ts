/**
 * Regular expressions Gatehouse did not write run on input Gatehouse does not control: a `pattern` in an MCP
 * server's inputSchema checked against an agent's arguments, a `matches()` in a policy condition. One that
 * backtracks catastrophically (\`^(a+)+$\` against "aaaa…!") would stall the single thread every session and
 * connection shares. V8 can switch such a match to its linear-time engine once it backtracks too much; the
 * answer is the same, only the time bound changes. Set once per process, before any untrusted pattern runs.
 */
import { setFlagsFromString } from 'node:v8';

let guarded = false;

export function guardRegexps(): void {
  if (guarded) return;
  guarded = true;
  setFlagsFromString('--enable-experimental-regexp-engine-on-excessive-backtracks');
}
