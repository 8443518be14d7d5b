/**
 * The seccomp filter every sandboxed process runs under, generated here as classic BPF (no native build).
 * bwrap reads the raw `struct sock_filter[]` bytes from a file descriptor (`--seccomp FD`) and installs the
 * filter just before it executes the command, so bwrap's own set-up is unaffected.
 *
 * The filter first checks the audit architecture: x86-64 and aarch64 have tables below; any other
 * architecture (including 32-bit compat entry on a 64-bit kernel) kills the process, because syscall
 * numbers mean different things there. On x86-64 the x32 ABI (numbers with bit 30 set) is refused.
 *
 * Numbers are from the kernel's uapi headers: arch/x86/entry/syscalls/syscall_64.tbl for x86-64 and
 * include/uapi/asm-generic/unistd.h for aarch64 (calls from 424 on share one numbering across arches).
 */

// struct seccomp_data: int nr; __u32 arch; __u64 instruction_pointer; __u64 args[6];
const OFFSET_NR = 0;
const OFFSET_ARCH = 4;
/** Low 32 bits of args[i] (both supported arches are little-endian). */
const argLow = (index: number): number => 16 + 8 * index;

// Classic BPF opcodes (linux/filter.h, linux/bpf_common.h).
const LD_W_ABS = 0x20;
const JMP_JEQ_K = 0x15;
const JMP_JGE_K = 0x35;
const JMP_JSET_K = 0x45;
const RET_K = 0x06;

// linux/seccomp.h return actions.
const RET_KILL_PROCESS = 0x80000000;
const RET_ERRNO = 0x00050000;
const RET_ALLOW = 0x7fff0000;

export const AUDIT_ARCH_X86_64 = 0xc000003e;
export const AUDIT_ARCH_AARCH64 = 0xc00000b7;
const X32_SYSCALL_BIT = 0x40000000;

export const EPERM = 1;
export const EACCES = 13;
export const ENOSYS = 38;

const AF_UNIX = 1;
const TIOCSTI = 0x5412;
/** TIOCLINUX can also inject input (console selection paste); it has no business in a sandbox. */
const TIOCLINUX = 0x541c;
/** CLONE_NEWNS | NEWCGROUP | NEWUTS | NEWIPC | NEWUSER | NEWPID | NEWNET: no nested namespaces. */
const CLONE_NAMESPACE_FLAGS = 0x00020000 | 0x02000000 | 0x04000000 | 0x08000000 | 0x10000000 | 0x20000000 | 0x40000000;

type SyscallName =
  | 'socket' | 'ptrace' | 'process_vm_readv' | 'process_vm_writev' | 'pidfd_getfd' | 'process_madvise'
  | 'mount' | 'umount2' | 'pivot_root' | 'chroot' | 'open_tree' | 'move_mount' | 'fsopen' | 'fsconfig' | 'fsmount'
  | 'fspick' | 'mount_setattr' | 'open_tree_attr'
  | 'keyctl' | 'add_key' | 'request_key' | 'bpf' | 'userfaultfd' | 'perf_event_open' | 'kexec_load' | 'kexec_file_load'
  | 'io_uring_setup' | 'io_uring_enter' | 'io_uring_register' | 'ioctl' | 'unshare' | 'setns' | 'clone' | 'clone3';

export interface SyscallTable {
  arch: 'x86_64' | 'aarch64';
  auditArch: number;
  numbers: Record<SyscallName, number>;
}

/** Calls from 424 on are numbered the same on every architecture. */
const UNIFIED = {
  io_uring_setup: 425, io_uring_enter: 426, io_uring_register: 427,
  open_tree: 428, move_mount: 429, fsopen: 430, fsconfig: 431, fsmount: 432, fspick: 433,
  clone3: 435, pidfd_getfd: 438, process_madvise: 440, mount_setattr: 442, open_tree_attr: 467,
} as const;

export const X86_64: SyscallTable = {
  arch: 'x86_64',
  auditArch: AUDIT_ARCH_X86_64,
  numbers: {
    ...UNIFIED,
    ioctl: 16, socket: 41, clone: 56, ptrace: 101, pivot_root: 155, chroot: 161, mount: 165, umount2: 166,
    kexec_load: 246, add_key: 248, request_key: 249, keyctl: 250, unshare: 272, perf_event_open: 298,
    setns: 308, process_vm_readv: 310, process_vm_writev: 311, kexec_file_load: 320, bpf: 321, userfaultfd: 323,
  },
};

export const AARCH64: SyscallTable = {
  arch: 'aarch64',
  auditArch: AUDIT_ARCH_AARCH64,
  numbers: {
    ...UNIFIED,
    ioctl: 29, umount2: 39, mount: 40, pivot_root: 41, chroot: 51, unshare: 97, kexec_load: 104, ptrace: 117,
    socket: 198, add_key: 217, request_key: 218, keyctl: 219, clone: 220, perf_event_open: 241, setns: 268,
    process_vm_readv: 270, process_vm_writev: 271, bpf: 280, userfaultfd: 282, kexec_file_load: 294,
  },
};

/** One rule: a syscall, optionally narrowed to an argument test, and the errno it fails with. */
interface Rule {
  name: SyscallName;
  errno: number;
  /** Deny only when the argument's low 32 bits equal `equals` (or share a bit with `anyBit`). */
  arg?: { index: number; equals?: number; anyBit?: number };
}

/**
 * What the sandbox refuses. `socketpair` stays allowed: it makes an anonymous connected pair and cannot
 * reach any host socket, and Node's child_process needs it for stdio pipes (libuv), so denying it would
 * break every Node-based agent CLI. Reaching a host socket needs `socket(AF_UNIX)`, which is denied.
 * io_uring and clone3 fail with ENOSYS so that libuv and glibc fall back to the classic calls.
 */
export const RULES: readonly Rule[] = [
  { name: 'socket', errno: EACCES, arg: { index: 0, equals: AF_UNIX } },
  { name: 'ioctl', errno: EPERM, arg: { index: 1, equals: TIOCSTI } },
  { name: 'ioctl', errno: EPERM, arg: { index: 1, equals: TIOCLINUX } },
  { name: 'clone', errno: EPERM, arg: { index: 0, anyBit: CLONE_NAMESPACE_FLAGS } },
  { name: 'clone3', errno: ENOSYS },
  { name: 'ptrace', errno: EPERM },
  { name: 'process_vm_readv', errno: EPERM },
  { name: 'process_vm_writev', errno: EPERM },
  // Copies a descriptor out of another process (the bridge's channel to Gatehouse), or acts on its memory.
  { name: 'pidfd_getfd', errno: EPERM },
  { name: 'process_madvise', errno: EPERM },
  { name: 'mount', errno: EPERM },
  { name: 'umount2', errno: EPERM },
  { name: 'pivot_root', errno: EPERM },
  { name: 'chroot', errno: EPERM },
  { name: 'open_tree', errno: EPERM },
  { name: 'open_tree_attr', errno: EPERM },
  { name: 'move_mount', errno: EPERM },
  { name: 'fsopen', errno: EPERM },
  { name: 'fsconfig', errno: EPERM },
  { name: 'fsmount', errno: EPERM },
  { name: 'fspick', errno: EPERM },
  { name: 'mount_setattr', errno: EPERM },
  { name: 'unshare', errno: EPERM },
  { name: 'setns', errno: EPERM },
  { name: 'keyctl', errno: EPERM },
  { name: 'add_key', errno: EPERM },
  { name: 'request_key', errno: EPERM },
  { name: 'bpf', errno: EPERM },
  { name: 'userfaultfd', errno: EPERM },
  { name: 'perf_event_open', errno: EPERM },
  { name: 'kexec_load', errno: EPERM },
  { name: 'kexec_file_load', errno: EPERM },
  { name: 'io_uring_setup', errno: ENOSYS },
  { name: 'io_uring_enter', errno: ENOSYS },
  { name: 'io_uring_register', errno: ENOSYS },
];

export interface Instruction {
  code: number;
  jt: number;
  jf: number;
  k: number;
}

const load = (offset: number): Instruction => ({ code: LD_W_ABS, jt: 0, jf: 0, k: offset });
const ret = (k: number): Instruction => ({ code: RET_K, jt: 0, jf: 0, k: k >>> 0 });
const jump = (code: number, k: number, jt: number, jf: number): Instruction => ({ code, jt, jf, k: k >>> 0 });

/** The instructions for one architecture, entered with the syscall number not yet loaded. */
function archBlock(table: SyscallTable): Instruction[] {
  const out: Instruction[] = [load(OFFSET_NR)];
  if (table.arch === 'x86_64') {
    // x32 calls share the 64-bit audit arch but use numbers with bit 30 set; refuse them all.
    out.push(jump(JMP_JGE_K, X32_SYSCALL_BIT, 0, 1), ret(RET_ERRNO | ENOSYS));
  }
  for (const rule of RULES) {
    const nr = table.numbers[rule.name];
    if (!rule.arg) {
      out.push(jump(JMP_JEQ_K, nr, 0, 1), ret(RET_ERRNO | rule.errno));
      continue;
    }
    // jeq nr → [ld arg; test → ret errno; ld nr]; otherwise skip those four.
    const test =
      rule.arg.anyBit !== undefined
        ? jump(JMP_JSET_K, rule.arg.anyBit, 0, 1)
        : jump(JMP_JEQ_K, rule.arg.equals ?? 0, 0, 1);
    out.push(jump(JMP_JEQ_K, nr, 0, 4), load(argLow(rule.arg.index)), test, ret(RET_ERRNO | rule.errno), load(OFFSET_NR));
  }
  out.push(ret(RET_ALLOW));
  return out;
}

/** The whole filter: dispatch on the audit architecture, kill on anything unknown. */
export function seccompProgram(tables: readonly SyscallTable[] = [X86_64, AARCH64]): Instruction[] {
  const blocks = tables.map(archBlock);
  const program: Instruction[] = [load(OFFSET_ARCH)];
  // Dispatch: one jeq per architecture; each jumps over the remaining dispatch and earlier blocks.
  const dispatchLength = tables.length + 1; // the jeqs plus the kill
  let blockStart = dispatchLength;
  tables.forEach((table, index) => {
    const distance = blockStart - (index + 1); // from the instruction after this jeq
    if (distance > 255) throw new Error('seccomp: architecture block too far for a BPF jump');
    program.push(jump(JMP_JEQ_K, table.auditArch, distance, 0));
    blockStart += blocks[index]!.length;
  });
  program.push(ret(RET_KILL_PROCESS));
  for (const block of blocks) program.push(...block);
  if (program.length > 4096) throw new Error('seccomp: program longer than BPF_MAXINSNS');
  return program;
}

/** `struct sock_filter[]` as bwrap reads it: 8 bytes each, native (little) endian. */
export function encodeProgram(program: readonly Instruction[]): Buffer {
  const bytes = Buffer.alloc(program.length * 8);
  program.forEach((instruction, index) => {
    const at = index * 8;
    bytes.writeUInt16LE(instruction.code, at);
    bytes.writeUInt8(instruction.jt, at + 2);
    bytes.writeUInt8(instruction.jf, at + 3);
    bytes.writeUInt32LE(instruction.k >>> 0, at + 4);
  });
  return bytes;
}

let cached: Buffer | undefined;
/** The encoded default filter (computed once per process). */
export function seccompFilterBytes(): Buffer {
  cached ??= encodeProgram(seccompProgram());
  return cached;
}

/** What a filter decides for one call, as the kernel would evaluate it. Used by tests and `doctor`. */
export interface SimulatedCall {
  arch: number;
  nr: number;
  args?: number[];
}

export type Verdict = { action: 'allow' } | { action: 'errno'; errno: number } | { action: 'kill' };

/** A small classic-BPF interpreter for the instructions this module emits. */
export function simulate(program: readonly Instruction[], call: SimulatedCall): Verdict {
  const word = (offset: number): number => {
    if (offset === OFFSET_NR) return call.nr >>> 0;
    if (offset === OFFSET_ARCH) return call.arch >>> 0;
    const index = (offset - 16) / 8;
    return (call.args?.[index] ?? 0) >>> 0;
  };
  let accumulator = 0;
  for (let pc = 0; pc < program.length; pc++) {
    const { code, jt, jf, k } = program[pc]!;
    switch (code) {
      case LD_W_ABS:
        accumulator = word(k);
        break;
      case JMP_JEQ_K:
        pc += accumulator === k ? jt : jf;
        break;
      case JMP_JGE_K:
        pc += accumulator >= k ? jt : jf;
        break;
      case JMP_JSET_K:
        pc += (accumulator & k) !== 0 ? jt : jf;
        break;
      case RET_K: {
        const action = k & 0xffff0000;
        if (k >>> 0 === RET_ALLOW) return { action: 'allow' };
        if (action >>> 0 === RET_ERRNO) return { action: 'errno', errno: k & 0xffff };
        return { action: 'kill' };
      }
      default:
        throw new Error(`seccomp: unknown opcode ${code} at ${pc}`);
    }
  }
  return { action: 'kill' };
}

/**
 * Opens a read-only descriptor on the encoded filter for `--seccomp FD`: written to a private temporary
 * file that is unlinked at once, so nothing is left behind and no other process can swap it.
 */
export async function openFilterFd(bytes: Buffer = seccompFilterBytes()): Promise<number> {
  const { openSync, writeFileSync, unlinkSync } = await import('node:fs');
  const { tmpdir } = await import('node:os');
  const { join } = await import('node:path');
  const { randomBytes } = await import('node:crypto');
  const path = join(tmpdir(), `gatehouse-seccomp-${process.pid}-${randomBytes(6).toString('hex')}`);
  writeFileSync(path, bytes, { mode: 0o600, flag: 'wx' });
  try {
    return openSync(path, 'r');
  } finally {
    unlinkSync(path);
  }
}
