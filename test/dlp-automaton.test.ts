/**
 * The keyword automaton against the obvious algorithm (indexOf for every keyword): the same matches, for
 * random keyword sets with heavy overlap (shared prefixes, keywords inside keywords).
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { buildAutomaton } from '../src/dlp/automaton.js';
import { pick, seededRandom } from '../src/dlp/samples.js';

function automatonMatches(keywords: string[], text: string): string[] {
  const a = buildAutomaton(keywords);
  const found: string[] = [];
  let state = 0;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    state = a.delta[state + (c < 128 ? a.column[c]! : 0)]!;
    if (state >= a.acceptFrom) {
      const index = state / a.columns;
      for (let o = a.outputStart[index]!; o < a.outputStart[index + 1]!; o++) found.push(`${i + 1 - a.lengths[a.outputs[o]!]!}:${a.outputs[o]}`);
    }
  }
  return found.sort();
}

function naiveMatches(keywords: string[], text: string): string[] {
  const found: string[] = [];
  keywords.forEach((keyword, id) => {
    for (let at = text.indexOf(keyword); at >= 0; at = text.indexOf(keyword, at + 1)) found.push(`${at}:${id}`);
  });
  return found.sort();
}

test('the automaton reports exactly the keyword occurrences that indexOf finds', () => {
  const random = seededRandom(11);
  for (let round = 0; round < 200; round++) {
    const alphabet = 'abc_-'.slice(0, 2 + (round % 4));
    const keywords = [...new Set(Array.from({ length: 1 + (round % 12) }, () => pick(random, alphabet, 1 + Math.floor(random() * 5))))];
    const text = pick(random, alphabet + 'xyz€', 300);
    assert.deepEqual(automatonMatches(keywords, text), naiveMatches(keywords, text), `keywords ${JSON.stringify(keywords)}`);
  }
});

test('characters in no keyword, and non-ASCII characters, reset the match', () => {
  assert.deepEqual(automatonMatches(['ghp_'], 'gh€p_ ghp_ g hp_'), ['6:0']);
  assert.throws(() => buildAutomaton(['café']), /not ASCII/);
});
