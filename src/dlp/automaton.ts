/**
 * An Aho-Corasick automaton over ASCII keywords, compiled into one dense transition table. Scanning costs
 * one table lookup per character whatever the number of keywords; characters that occur in no keyword
 * share one column, and accepting states are numbered last so the hot loop tests acceptance with a single
 * comparison. Built once per scanner; never per call.
 */

export interface Automaton {
  /** `delta[state + column]` is the next state; states are pre-multiplied by `columns`. */
  readonly delta: Int32Array;
  /** Column of each ASCII character (0 for characters in no keyword). */
  readonly column: Uint8Array;
  readonly columns: number;
  /** Pre-multiplied states `>= acceptFrom` end at least one keyword. */
  readonly acceptFrom: number;
  /** For accepting state `s / columns`: keyword ids in `outputs[outputStart[i] .. outputStart[i + 1])`. */
  readonly outputStart: Int32Array;
  readonly outputs: Int32Array;
  /** Length of each keyword, by id. */
  readonly lengths: Int32Array;
  /** The longest keyword. */
  readonly longest: number;
}

/** Builds the automaton; keyword `i` is reported as id `i`. Keywords must be non-empty ASCII. */
export function buildAutomaton(keywords: readonly string[]): Automaton {
  const column = new Uint8Array(128);
  let columns = 1;
  for (const keyword of keywords) {
    if (keyword.length === 0) throw new Error('empty keyword');
    for (let i = 0; i < keyword.length; i++) {
      const c = keyword.charCodeAt(i);
      if (c >= 128) throw new Error(`keyword is not ASCII: ${JSON.stringify(keyword)}`);
      if (column[c] === 0) column[c] = columns++;
    }
  }
  if (columns > 255) throw new Error('too many distinct keyword characters');

  // Trie, as arrays of per-state child maps.
  const children: Map<number, number>[] = [new Map()];
  const own: number[][] = [[]];
  keywords.forEach((keyword, id) => {
    let state = 0;
    for (let i = 0; i < keyword.length; i++) {
      const col = column[keyword.charCodeAt(i)]!;
      let next = children[state]!.get(col);
      if (next === undefined) {
        next = children.length;
        children.push(new Map());
        own.push([]);
        children[state]!.set(col, next);
      }
      state = next;
    }
    own[state]!.push(id);
  });

  // Breadth-first: failure links, full transitions and inherited outputs.
  const count = children.length;
  const fail = new Int32Array(count);
  const next = new Int32Array(count * columns);
  const outputsOf: number[][] = own.map((ids) => ids.slice());
  const queue: number[] = [];
  for (let col = 0; col < columns; col++) {
    const child = children[0]!.get(col);
    next[col] = child ?? 0;
    if (child !== undefined) queue.push(child);
  }
  for (let head = 0; head < queue.length; head++) {
    const state = queue[head]!;
    const inherited = outputsOf[fail[state]!]!;
    if (inherited.length > 0) outputsOf[state]!.push(...inherited);
    for (let col = 0; col < columns; col++) {
      const child = children[state]!.get(col);
      if (child === undefined) {
        next[state * columns + col] = next[fail[state]! * columns + col]!;
      } else {
        fail[child] = next[fail[state]! * columns + col]!;
        next[state * columns + col] = child;
        queue.push(child);
      }
    }
  }

  // Renumber: non-accepting states first (the root stays 0), accepting states last.
  const order: number[] = [];
  for (let s = 0; s < count; s++) if (outputsOf[s]!.length === 0) order.push(s);
  const acceptIndex = order.length;
  for (let s = 0; s < count; s++) if (outputsOf[s]!.length > 0) order.push(s);
  const renamed = new Int32Array(count);
  order.forEach((old, index) => (renamed[old] = index));

  const delta = new Int32Array(count * columns);
  const outputStart = new Int32Array(count + 1);
  const flat: number[] = [];
  order.forEach((old, index) => {
    for (let col = 0; col < columns; col++) delta[index * columns + col] = renamed[next[old * columns + col]!]! * columns;
    outputStart[index] = flat.length;
    flat.push(...outputsOf[old]!);
  });
  outputStart[count] = flat.length;

  return {
    delta,
    column,
    columns,
    acceptFrom: acceptIndex * columns,
    outputStart,
    outputs: Int32Array.from(flat),
    lengths: Int32Array.from(keywords, (k) => k.length),
    longest: keywords.reduce((max, k) => Math.max(max, k.length), 0),
  };
}
