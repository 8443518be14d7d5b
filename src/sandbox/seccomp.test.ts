import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { closeSync } from 'node:fs';
import {
  AARCH64, AUDIT_ARCH_AARCH64, AUDIT_ARCH_X86_64, EACCES, ENOSYS, EPERM, X86_64,
  encodeProgram, openFilterFd, seccompProgram, simulate,
} from './seccomp.js';

const program = seccompProgram();

test('kills a process calling in through an architecture without a table (i386 compat)', () => {
  assert.deepEqual(simulate(program, { arch: 0x40000003, nr: 1 }), { action: 'kill' });
  assert.deepEqual(simulate(program, { arch: 0, nr: 0 }), { action: 'kill' });
});

for (const table of [X86_64, AARCH64]) {
  const arch = table.auditArch;
  const n = table.numbers;
  test(`${table.arch}: refuses AF_UNIX sockets but allows AF_INET and AF_INET6`, () => {
    assert.deepEqual(simulate(program, { arch, nr: n.socket, args: [1, 1, 0] }), { action: 'errno', errno: EACCES });
    assert.deepEqual(simulate(program, { arch, nr: n.socket, args: [2, 1, 0] }), { action: 'allow' });
    assert.deepEqual(simulate(program, { arch, nr: n.socket, args: [10, 1, 0] }), { action: 'allow' });
  });
  test(`${table.arch}: refuses ptrace, mount, keyctl, bpf, userfaultfd, perf_event_open, kexec`, () => {
    for (const name of ['ptrace', 'mount', 'umount2', 'keyctl', 'add_key', 'request_key', 'bpf', 'userfaultfd', 'perf_event_open', 'kexec_load', 'kexec_file_load', 'fsopen', 'open_tree', 'unshare', 'setns', 'process_vm_readv'] as const) {
      assert.deepEqual(simulate(program, { arch, nr: n[name] }), { action: 'errno', errno: EPERM }, name);
    }
  });
  test(`${table.arch}: io_uring and clone3 look unsupported (ENOSYS) so runtimes fall back`, () => {
    for (const name of ['io_uring_setup', 'io_uring_enter', 'io_uring_register', 'clone3'] as const) {
      assert.deepEqual(simulate(program, { arch, nr: n[name] }), { action: 'errno', errno: ENOSYS }, name);
    }
  });
  test(`${table.arch}: refuses the TIOCSTI and TIOCLINUX ioctls only`, () => {
    assert.deepEqual(simulate(program, { arch, nr: n.ioctl, args: [0, 0x5412] }), { action: 'errno', errno: EPERM });
    assert.deepEqual(simulate(program, { arch, nr: n.ioctl, args: [0, 0x541c] }), { action: 'errno', errno: EPERM });
    assert.deepEqual(simulate(program, { arch, nr: n.ioctl, args: [0, 0x5401] }), { action: 'allow' }); // TCGETS
  });
  test(`${table.arch}: allows plain fork-style clone but not clone into a new namespace`, () => {
    assert.deepEqual(simulate(program, { arch, nr: n.clone, args: [0x01200011] }), { action: 'allow' });
    assert.deepEqual(simulate(program, { arch, nr: n.clone, args: [0x10000000 | 17] }), { action: 'errno', errno: EPERM });
  });
}

test('refuses pidfd_getfd (438) and process_madvise (440) on both architectures', () => {
  // Literal numbers from the kernel tables (syscall_64.tbl, asm-generic/unistd.h), not from our own table.
  for (const arch of [X86_64.auditArch, AARCH64.auditArch]) {
    for (const nr of [438, 440]) assert.deepEqual(simulate(program, { arch, nr }), { action: 'errno', errno: EPERM }, `${arch.toString(16)} ${nr}`);
  }
});

test('x86-64: refuses every x32 call and leaves ordinary calls alone', () => {
  assert.deepEqual(simulate(program, { arch: AUDIT_ARCH_X86_64, nr: 0x40000000 + 41, args: [2] }), { action: 'errno', errno: ENOSYS });
  assert.deepEqual(simulate(program, { arch: AUDIT_ARCH_X86_64, nr: 0 }), { action: 'allow' });
  // aarch64's socket number is an innocent call on x86-64 and vice versa: the tables must not leak.
  assert.deepEqual(simulate(program, { arch: AUDIT_ARCH_X86_64, nr: 198, args: [1] }), { action: 'allow' });
  assert.deepEqual(simulate(program, { arch: AUDIT_ARCH_AARCH64, nr: 53, args: [1] }), { action: 'allow' }); // fchmodat there, socket on x86-64
});

test('encodes 8 bytes per instruction, little-endian', () => {
  const bytes = encodeProgram(program);
  assert.equal(bytes.length, program.length * 8);
  assert.equal(bytes.readUInt16LE(0), 0x20);
  assert.equal(bytes.readUInt32LE(4), 4);
});

const bwrap = spawnSync('bwrap', ['--version']).status === 0;
const requireSandbox = process.env.GATEHOUSE_REQUIRE_SANDBOX === '1';

test('the kernel accepts the filter through bwrap, and it bites: AF_UNIX fails, TCP sockets work', { skip: !bwrap && !requireSandbox ? 'bwrap is not installed' : false }, async () => {
  assert.ok(bwrap, 'bwrap is required (GATEHOUSE_REQUIRE_SANDBOX=1): apt-get install bubblewrap');
  const script = `
    const net = require('node:net');
    const unix = net.connect('/nonexistent.sock');
    unix.on('error', (e) => {
      console.log('unix:' + e.code);
      const tcp = net.connect(9, '127.0.0.1');
      tcp.on('error', (e2) => console.log('tcp:' + e2.code));
    });`;
  const filterFd = await openFilterFd();
  const result = spawnSync(
    'bwrap',
    ['--ro-bind', '/', '/', '--dev', '/dev', '--proc', '/proc', '--unshare-all', '--die-with-parent', '--seccomp', '3', process.execPath, '-e', script],
    { stdio: ['ignore', 'pipe', 'pipe', filterFd], encoding: 'utf8', timeout: 20000 },
  );
  closeSync(filterFd);
  assert.equal(result.status, 0, result.stderr);
  // AF_UNIX creation fails before any path lookup; TCP gets as far as the (empty) network.
  assert.match(result.stdout, /unix:EACCES/);
  assert.match(result.stdout, /tcp:ECONNREFUSED/);
});
