/**
 * Glob patterns compiled once into anchored regular expressions.
 * For names (tools, servers, prompts, resources, secrets) `*` matches any run of characters.
 * For slash-separated paths `*` stays inside one segment and `**` crosses segments.
 */

const SPECIAL = /[\\^$.+()|{}[\]]/g;

export interface Glob {
  text: string;
  /** True when the pattern has no wildcard: callers can index it by its text. */
  literal: boolean;
  test(value: string): boolean;
}

export function compileNameGlob(text: string): Glob {
  if (!/[*?]/.test(text)) return { text, literal: true, test: (value) => value === text };
  if (text === '*') return { text, literal: false, test: () => true };
  const source = text.replace(SPECIAL, '\\$&').replace(/\*/g, '.*').replace(/\?/g, '.');
  const regex = new RegExp(`^${source}$`, 's');
  return { text, literal: false, test: (value) => regex.test(value) };
}

/** `/repos/**` matches `/repos` and everything below it; `/api/*\/items` one segment in the middle. */
export function compilePathGlob(text: string): Glob {
  if (!/[*?]/.test(text)) return { text, literal: true, test: (value) => value === text };
  let source = '';
  for (let i = 0; i < text.length; i += 1) {
    const ch = text[i]!;
    if (ch === '*' && text[i + 1] === '*') {
      // "/**" at a segment boundary also matches the parent itself ("/repos/**" matches "/repos").
      if (source.endsWith('/') && (i + 2 === text.length || text[i + 2] === '/')) {
        source = source.slice(0, -1) + '(?:/.*)?';
        i += 2;
        if (text[i] === '/') source += '/';
        continue;
      }
      source += '.*';
      i += 1;
    } else if (ch === '*') source += '[^/]*';
    else if (ch === '?') source += '[^/]';
    else source += ch.replace(SPECIAL, '\\$&');
  }
  const regex = new RegExp(`^${source}$`, 's');
  return { text, literal: false, test: (value) => regex.test(value) };
}

export function matchesAny(globs: readonly Glob[], value: string): boolean {
  for (const glob of globs) if (glob.test(value)) return true;
  return false;
}
