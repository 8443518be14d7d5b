/**
 * Filesystem path patterns in a trie. A pattern names a file or directory and covers everything below it.
 * Segments may be literal, a glob within the segment (`*.pem`), or `**` (any number of segments).
 * A lookup walks the request path's segments once, whatever the number of patterns.
 */
import { compileNameGlob, type Glob } from './globs.js';

interface TrieNode<T> {
  children: Map<string, TrieNode<T>>;
  globs: { glob: Glob; node: TrieNode<T> }[];
  /** The node reached through `**`: it loops on any segment. */
  star: TrieNode<T> | undefined;
  isStar: boolean;
  values: T[];
}

function newNode<T>(isStar = false): TrieNode<T> {
  return { children: new Map(), globs: [], star: undefined, isStar, values: [] };
}

export function splitPath(path: string): string[] {
  return path.split('/').filter((segment) => segment !== '');
}

export function hasGlob(segment: string): boolean {
  return /[*?[]/.test(segment);
}

export class PathTrie<T> {
  private readonly root = newNode<T>();

  /** `pattern` is absolute and normalised. */
  add(pattern: string, value: T): void {
    let node = this.root;
    for (const segment of splitPath(pattern)) {
      if (segment === '**') {
        node.star ??= newNode<T>(true);
        node = node.star;
      } else if (hasGlob(segment)) {
        let entry = node.globs.find((g) => g.glob.text === segment);
        if (!entry) {
          entry = { glob: compileNameGlob(segment), node: newNode<T>() };
          node.globs.push(entry);
        }
        node = entry.node;
      } else {
        let child = node.children.get(segment);
        if (!child) {
          child = newNode<T>();
          node.children.set(segment, child);
        }
        node = child;
      }
    }
    node.values.push(value);
  }

  /** Calls `visit` for every pattern that covers `path` (absolute, normalised). */
  lookup(path: string, visit: (value: T) => void): void {
    let active: TrieNode<T>[] = [];
    addWithStar(active, this.root);
    visitValues(active, visit);
    for (const segment of splitPath(path)) {
      const next: TrieNode<T>[] = [];
      for (const node of active) {
        if (node.isStar) addWithStar(next, node);
        const child = node.children.get(segment);
        if (child) addWithStar(next, child);
        for (const { glob, node: target } of node.globs) if (glob.test(segment)) addWithStar(next, target);
      }
      if (next.length === 0) return;
      visitValues(next, visit);
      active = next;
    }
  }
}

function addWithStar<T>(list: TrieNode<T>[], node: TrieNode<T>): void {
  if (!list.includes(node)) list.push(node);
  if (node.star && !list.includes(node.star)) list.push(node.star);
}

function visitValues<T>(nodes: TrieNode<T>[], visit: (value: T) => void): void {
  for (const node of nodes) for (const value of node.values) visit(value);
}

/** The longest leading part of a pattern without wildcards: what a sandbox can bind-mount. */
export function literalPrefix(pattern: string): string {
  const out: string[] = [];
  for (const segment of splitPath(pattern)) {
    if (segment === '**' || hasGlob(segment)) break;
    out.push(segment);
  }
  return '/' + out.join('/');
}
