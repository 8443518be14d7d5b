import { test } from 'node:test';
import assert from 'node:assert/strict';
import { invalidEnvPattern, sandboxEnv } from './env.js';

const source = {
  PATH: '/usr/bin',
  HOME: '/root',
  TERM: 'xterm',
  LC_ALL: 'C',
  GITHUB_TOKEN: 'ghp_real',
  AWS_SECRET_ACCESS_KEY: 'real',
  SSH_AUTH_SOCK: '/run/user/0/agent',
  https_proxy: 'http://corp-proxy:8080',
  MY_TOOL_MODE: 'fast',
};

test('only allowlisted variables cross; tokens, agent sockets and the host proxy do not', () => {
  const env = sandboxEnv({ source, home: '/home/dev', proxyPort: 3128 });
  assert.equal(env.TERM, 'xterm');
  assert.equal(env.LC_ALL, 'C');
  assert.equal(env.HOME, '/home/dev');
  for (const name of ['GITHUB_TOKEN', 'AWS_SECRET_ACCESS_KEY', 'SSH_AUTH_SOCK', 'MY_TOOL_MODE']) assert.equal(env[name], undefined, name);
  assert.equal(env.https_proxy, 'http://127.0.0.1:3128');
});

test('sets all proxy variables, in both cases, to the bridge', () => {
  const env = sandboxEnv({ source: {}, home: '/h', proxyPort: 4000 });
  for (const name of ['HTTP_PROXY', 'HTTPS_PROXY', 'ALL_PROXY', 'http_proxy', 'https_proxy', 'all_proxy']) assert.equal(env[name], 'http://127.0.0.1:4000');
  assert.equal(env.NO_PROXY, 'localhost,127.0.0.1,::1');
  assert.equal(env.no_proxy, env.NO_PROXY);
});

test('extra names and prefixes from config pass, and placeholders win over the source', () => {
  const env = sandboxEnv({ source, home: '/h', allow: ['MY_TOOL_*'], add: { GITHUB_TOKEN: 'ghp_placeholder' } });
  assert.equal(env.MY_TOOL_MODE, 'fast');
  assert.equal(env.GITHUB_TOKEN, 'ghp_placeholder');
});

test('rejects allowlist entries that are not variable names', () => {
  assert.equal(invalidEnvPattern(['FOO', 'BAR_*']), undefined);
  assert.equal(invalidEnvPattern(['FOO', 'a b']), 'a b');
  assert.equal(invalidEnvPattern(['*']), '*');
});
