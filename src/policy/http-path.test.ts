import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { seededRandom } from '../dlp/samples.js';
import { normaliseHttpPath } from './http-path.js';

/** A random path from characters that each matter to the normaliser. */
function randomPath(random: () => number): string {
  const pieces = ['a', 'B', '0', '-', '~', '.', '..', '/', '//', ';', ';x=1', '%61', '%2F', '%2e', '?', '#', 'é', ' '];
  let path = '/';
  const length = 1 + Math.floor(random() * 8);
  for (let i = 0; i < length; i++) path += pieces[Math.floor(random() * pieces.length)];
  return path;
}

describe('normaliseHttpPath', () => {
  it('hands an already normal path back unchanged, and reads it as the full steps do', () => {
    for (const path of ['/', '/a', '/repos/acme/app', '/a-b/c~d/é', '/v1/x.json', '/a/b.c']) {
      assert.equal(normaliseHttpPath(path), path);
      // "/x/.." forces every step; the answer must be the same.
      assert.equal(normaliseHttpPath(`/x/..${path === '/' ? '' : path}`), path);
    }
  });

  it('gives the same answer whether or not a path takes the shortcut', () => {
    const random = seededRandom(20261125);
    for (let i = 0; i < 20_000; i++) {
      const path = randomPath(random);
      const direct = normaliseHttpPath(path);
      // The same path behind a segment that dot-dot removes never takes the shortcut.
      const viaFullSteps = normaliseHttpPath(`/zz/..${path}`);
      assert.equal(direct, viaFullSteps, `path ${JSON.stringify(path)}`);
    }
  });

  it('still normalises what is not already normal', () => {
    assert.equal(normaliseHttpPath('/%61dmin/'), '/admin');
    assert.equal(normaliseHttpPath('//admin//x'), '/admin/x');
    assert.equal(normaliseHttpPath('/.well-known/./x'), '/.well-known/x');
    assert.equal(normaliseHttpPath('/admin;jsessionid=1/x'), '/admin/x');
    assert.equal(normaliseHttpPath('/a?b=/../c'), '/a');
    assert.equal(normaliseHttpPath('relative'), undefined);
  });
});
