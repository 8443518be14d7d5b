/**
 * The node's audit log: hash-chained, checkpointed, segmented and durable.
 *
 * Durability (what "acknowledged" means when `append` resolves):
 * - `sync`: the record has been written and fdatasync'd. Appends that arrive while a sync is in flight are
 *   committed together by the next one (group commit), so throughput grows with concurrency.
 * - `batch`: the record has been written to the operating system (it survives the process being killed,
 *   SIGKILL included) and is fdatasync'd within 50 ms. The loss window is a power failure or kernel crash:
 *   at most the last 50 ms of acknowledged records. A record appended with `deferred` (nobody waits for it:
 *   the egress proxy's records of finished connections) may wait up to DEFERRED_WRITE_MS to share one write
 *   with others; it is acknowledged, as every record is, only once written. Deferred records still queued
 *   when the process exits (an uncaught exception included) are written by an exit hook.
 *
 * A write that fails (disk full, I/O error) rejects the appends it carried, cuts any partial line off the
 * segment and rolls the chain back, so the log stays valid and the caller fails closed; the next append tries
 * again. Only one process may write a log directory at a time (`writer.lock`).
 */
import { closeSync, fdatasync, fstatSync, fsyncSync, ftruncateSync, openSync, readFileSync, readSync, statSync, truncateSync, unlinkSync, writeSync, writeFileSync, constants } from 'node:fs';
import { join } from 'node:path';
import { GatehouseError, errorMessage } from '../util/errors.js';
import { signBytes, type KeyPair } from '../util/keys.js';
import { ensurePrivateDir } from '../util/paths.js';
import {
  CHECKPOINT_ACTION,
  GENESIS_HASH,
  REPAIR_ACTION,
  RETENTION_ACTION,
  checkpointMessage,
  hashLine,
  listSegments,
  parsePrefix,
  segmentName,
  serializeRecord,
} from './format.js';
import { boundRecord, withRedactedValues, withoutValues, type ValueRedactor } from './privacy.js';
import { newCorrelationId, type AppendOptions, type AuditLog, type AuditRecord } from './record.js';

export type DurabilityMode = 'sync' | 'batch';

/** Longest time a `batch`-mode record waits for fdatasync after it was acknowledged. */
export const BATCH_SYNC_MS = 50;

/**
 * Longest time a `deferred` record waits to be placed in the chain and written, in batch mode. Placed and
 * written in groups, records cost the egress proxy much less than one at a time between requests (bench/egress,
 * a new connection per request: about 15% more requests per second at 5 ms; 1-2 ms gained little).
 */
export const DEFERRED_WRITE_MS = 5;

/** More deferred records than this are placed and written at once, whatever their age. */
const DEFERRED_MAX = 1024;

/** Each log's writer of its deferred records, while it holds any: one exit hook runs them all. */
const holdingDeferred = new Set<() => void>();
let exitHook = false;

function holdUntilExit(write: () => void): void {
  holdingDeferred.add(write);
  if (exitHook) return;
  exitHook = true;
  process.on('exit', () => {
    for (const writeDeferred of holdingDeferred) writeDeferred();
  });
}

export interface ChainedLogOptions {
  /** The log directory, normally `<dataDir>/audit`. */
  dir: string;
  /** Names the node in the records the log writes itself and in checkpoint signatures. */
  node: string;
  /** The node's Ed25519 key pair; checkpoints are signed with it. */
  keys: KeyPair;
  mode?: DurabilityMode;
  segmentMaxBytes?: number;
  segmentMaxAgeMs?: number;
  /** Oldest segments are removed while the closed segments together exceed this. */
  retentionMaxBytes?: number;
  /** Closed segments whose last record is older than this are removed. */
  retentionMaxAgeMs?: number;
  checkpointEvery?: number;
  checkpointIntervalMs?: number;
  /** How long a `deferred` record may wait in batch mode (DEFERRED_WRITE_MS). */
  deferredWriteMs?: number;
  maxRecordBytes?: number;
  /**
   * Keep argument values and bodies in `details`, passed through `redactValues` so secrets inside them are
   * replaced by redacted previews. Without a redactor, values are digested even when this is on.
   */
  recordValues?: boolean;
  redactValues?: ValueRedactor;
  /** Called with each group of records once it is acknowledged, in order (sinks, index, metrics). */
  onWritten?: (records: readonly WrittenRecord[]) => void;
}

export interface WrittenRecord {
  seq: number;
  /** The exact line in the segment, without its newline. */
  line: string;
}

export interface ChainHead {
  seq: number;
  hash: string;
}

interface Ack {
  resolve: () => void;
  reject: (error: Error) => void;
}

interface Item extends ChainHead {
  line: string;
  /** The line and its newline as UTF-8, encoded once for its size, its hash and the write. */
  bytes: Buffer;
  ack?: Ack;
  /** Start a new segment before writing this item. */
  rotateBefore: boolean;
  /** Runs once the item is on disk (retention deletes segments only after saying so). */
  afterWrite?: () => void;
}

const DEFAULTS = {
  segmentMaxBytes: 64 * 1024 * 1024,
  segmentMaxAgeMs: 24 * 3600_000,
  checkpointEvery: 1000,
  checkpointIntervalMs: 60_000,
  maxRecordBytes: 64 * 1024,
  deferredWriteMs: DEFERRED_WRITE_MS,
};

export class ChainedAuditLog implements AuditLog {
  readonly dir: string;
  readonly mode: DurabilityMode;
  private readonly options: ChainedLogOptions;
  private readonly settings: typeof DEFAULTS;

  private fd = -1;
  private segment = '';
  private segmentBytes = 0;
  private segmentOpenedAt = 0;
  /** Bytes headed for the current (or next planned) segment, written or pending: decides rotation. */
  private plannedBytes = 0;
  private plannedOpenedAt = 0;
  private rotateNext = false;

  /** Last record assigned a place in the chain (pending included). */
  private head: ChainHead;
  /** Last record written to disk. */
  private written: ChainHead;
  private pending: Item[] = [];
  /** Batch mode: `deferred` appends not yet placed in the chain, in arrival order. */
  private deferred: { record: AuditRecord; ack: Ack }[] = [];
  private deferredTimer: NodeJS.Timeout | undefined;
  /** Places and writes what is still deferred when the process exits without closing the log. */
  private readonly writeDeferredAtExit = (): void => {
    if (this.closed) return;
    this.flush();
  };
  private sinceCheckpoint = 0;

  private flushScheduled = false;
  private syncing = false;
  private fsyncTimer: NodeJS.Timeout | undefined;
  private fsyncInFlight = false;
  /** Batch mode: bytes written since the last fdatasync started. */
  private unsynced = false;
  private retiredFds: number[] = [];
  private checkpointTimer: NodeJS.Timeout | undefined;
  private broken: Error | undefined;
  private closed = false;
  private drained: (() => void)[] = [];
  private readonly lockPath: string;

  private constructor(options: ChainedLogOptions, head: ChainHead) {
    this.options = options;
    this.dir = options.dir;
    this.mode = options.mode ?? 'batch';
    this.settings = {
      segmentMaxBytes: options.segmentMaxBytes ?? DEFAULTS.segmentMaxBytes,
      segmentMaxAgeMs: options.segmentMaxAgeMs ?? DEFAULTS.segmentMaxAgeMs,
      checkpointEvery: options.checkpointEvery ?? DEFAULTS.checkpointEvery,
      checkpointIntervalMs: options.checkpointIntervalMs ?? DEFAULTS.checkpointIntervalMs,
      maxRecordBytes: options.maxRecordBytes ?? DEFAULTS.maxRecordBytes,
      deferredWriteMs: options.deferredWriteMs ?? DEFAULTS.deferredWriteMs,
    };
    this.head = head;
    this.written = head;
    this.lockPath = join(this.dir, 'writer.lock');
  }

  /**
   * Opens (or creates) the log in `options.dir` and resumes its chain. A final line cut short by a crash is
   * removed and a record saying so is appended.
   */
  static open(options: ChainedLogOptions): ChainedAuditLog {
    ensurePrivateDir(options.dir);
    acquireLock(join(options.dir, 'writer.lock'));
    try {
      const recovered = recoverHead(options.dir);
      const log = new ChainedAuditLog(options, recovered.head);
      log.openSegment(recovered.segment ?? segmentName(recovered.head.seq + 1), recovered.segment === undefined);
      log.plannedBytes = log.segmentBytes;
      log.plannedOpenedAt = log.segmentOpenedAt;
      if (recovered.repair) {
        const { segment, truncatedBytes } = recovered.repair;
        log.enqueue(
          () =>
            log.systemRecord(REPAIR_ACTION, 'error', `removed a torn final record (${truncatedBytes} bytes) from ${segment} after an unclean shutdown`, {
              segment,
              truncatedBytes,
            }),
          undefined,
        );
        log.scheduleFlush();
      }
      log.checkpointTimer = setInterval(() => log.timedCheckpoint(), log.settings.checkpointIntervalMs);
      log.checkpointTimer.unref();
      return log;
    } catch (error) {
      releaseLock(join(options.dir, 'writer.lock'));
      throw error;
    }
  }

  /** The chain's head: the last record acknowledged or waiting to be. */
  get headSeq(): number {
    return this.head.seq;
  }

  /** Records waiting to be written (or, in sync mode, synced). */
  get queueDepth(): number {
    return this.pending.length + this.deferred.length;
  }

  get currentSegment(): string {
    return this.segment;
  }

  append(record: AuditRecord, options?: AppendOptions): Promise<void> {
    if (this.closed) return Promise.reject(new GatehouseError('audit_closed', 'the audit log is closed', { exitCode: 1 }));
    if (this.broken) return Promise.reject(this.broken);
    return new Promise<void>((resolve, reject) => {
      if (options?.deferred && this.mode === 'batch') {
        if (this.deferred.push({ record, ack: { resolve, reject } }) === 1) holdUntilExit(this.writeDeferredAtExit);
        if (this.deferred.length >= DEFERRED_MAX) this.scheduleFlush();
        else this.deferredTimer ??= setTimeout(() => this.flush(), this.settings.deferredWriteMs);
        return;
      }
      // Records deferred before this one keep their place ahead of it.
      this.placeDeferred();
      this.place(record, { resolve, reject });
      this.scheduleFlush();
    });
  }

  /** Gives a record its place in the chain (values digested or redacted first), with a checkpoint when due. */
  private place(record: AuditRecord, ack: Ack): void {
    const { recordValues, redactValues } = this.options;
    const kept = recordValues && redactValues ? withRedactedValues(record, redactValues) : withoutValues(record);
    this.planRotation();
    this.enqueue(() => kept, ack);
    if (++this.sinceCheckpoint >= this.settings.checkpointEvery) this.enqueueCheckpoint();
  }

  /** Places every deferred record, in arrival order. */
  private placeDeferred(): void {
    clearTimeout(this.deferredTimer);
    this.deferredTimer = undefined;
    if (this.deferred.length === 0) return;
    holdingDeferred.delete(this.writeDeferredAtExit);
    const deferred = this.deferred;
    this.deferred = [];
    for (const { record, ack } of deferred) this.place(record, ack);
  }

  /** Writes a final checkpoint, waits for everything queued to be durable, and releases the log. */
  async close(): Promise<void> {
    if (this.closed) return;
    clearInterval(this.checkpointTimer);
    this.placeDeferred();
    if (!this.broken && this.sinceCheckpoint > 0) {
      this.enqueueCheckpoint();
      this.scheduleFlush();
    }
    this.closed = true;
    await this.whenDrained();
    clearTimeout(this.fsyncTimer);
    try {
      if (!this.broken) fsyncSync(this.fd);
    } catch {
      // Nothing can be done about a failing disk at shutdown; the acknowledgements already given stand.
    }
    this.retire(this.fd);
    this.fd = -1;
    releaseLock(this.lockPath);
  }

  private whenDrained(): Promise<void> {
    if (this.pending.length === 0 && !this.syncing && !this.fsyncInFlight) return Promise.resolve();
    return new Promise((resolve) => this.drained.push(resolve));
  }

  private notifyDrained(): void {
    if (this.pending.length > 0 || this.syncing || this.fsyncInFlight) return;
    const waiting = this.drained;
    this.drained = [];
    for (const resolve of waiting) resolve();
  }

  private systemRecord(action: string, effect: 'info' | 'error', reason: string, details: Record<string, unknown>): AuditRecord {
    return {
      v: 1,
      time: new Date().toISOString(),
      node: this.options.node,
      principal: {},
      surface: 'system',
      action,
      resource: 'audit',
      effect,
      rules: [],
      reason,
      latencyUs: 0,
      correlationId: newCorrelationId(),
      details,
    };
  }

  /** Gives the next record its place in the chain. `build` sees the sequence number and previous hash. */
  private enqueue(build: (seq: number, prev: string) => AuditRecord, ack: Ack | undefined, afterWrite?: () => void): void {
    const seq = this.head.seq + 1;
    const prev = this.head.hash;
    let record = build(seq, prev);
    let line = serializeRecord(record, seq, prev);
    let bytes = Buffer.from(line + '\n', 'utf8');
    if (bytes.length - 1 > this.settings.maxRecordBytes) {
      record = boundRecord(record, bytes.length - 1, this.settings.maxRecordBytes);
      line = serializeRecord(record, seq, prev);
      bytes = Buffer.from(line + '\n', 'utf8');
    }
    const hash = hashLine(bytes.subarray(0, bytes.length - 1));
    const item: Item = { seq, hash, line, bytes, rotateBefore: this.rotateNext };
    if (ack) item.ack = ack;
    if (afterWrite) item.afterWrite = afterWrite;
    this.rotateNext = false;
    this.pending.push(item);
    this.head = { seq, hash };
    this.plannedBytes += bytes.length;
  }

  private enqueueCheckpoint(): void {
    const { node, keys } = this.options;
    this.enqueue((seq, prev) => {
      const signature = signBytes(keys.privateKey, checkpointMessage(node, seq, prev)).toString('base64');
      return this.systemRecord(CHECKPOINT_ACTION, 'info', `signed checkpoint over records 1-${seq - 1}`, {
        covers: seq - 1,
        head: prev,
        keyId: keys.keyId,
        signature,
      });
    }, undefined);
    this.sinceCheckpoint = 0;
  }

  private timedCheckpoint(): void {
    if (this.closed || this.broken) return;
    this.placeDeferred();
    if (this.sinceCheckpoint === 0) return;
    this.enqueueCheckpoint();
    this.scheduleFlush();
  }

  /** Decides, before a record is placed, whether it starts a new segment; the old one ends signed. */
  private planRotation(): void {
    if (this.plannedBytes === 0) return;
    const tooBig = this.plannedBytes >= this.settings.segmentMaxBytes;
    const tooOld = Date.now() - this.plannedOpenedAt >= this.settings.segmentMaxAgeMs;
    if (!tooBig && !tooOld) return;
    this.enqueueCheckpoint();
    this.rotateNext = true;
    this.plannedBytes = 0;
    this.plannedOpenedAt = Date.now();
  }

  private scheduleFlush(): void {
    if (this.flushScheduled) return;
    this.flushScheduled = true;
    setImmediate(() => this.flush());
  }

  private flush(): void {
    this.flushScheduled = false;
    this.placeDeferred();
    if (this.broken && this.pending.length > 0) {
      // Nothing more may be written after a failed sync or an unremovable partial line.
      const broken = this.broken;
      for (const item of this.pending.splice(0)) item.ack?.reject(broken);
      this.head = this.written;
    }
    if (this.syncing || this.pending.length === 0) {
      this.notifyDrained();
      return;
    }
    const batch = this.pending;
    this.pending = [];
    const done: Item[] = [];
    let failure: Error | undefined;
    let index = 0;
    try {
      while (index < batch.length) {
        const first = batch[index] as Item;
        if (first.rotateBefore) this.rotate(first.seq);
        let end = index + 1;
        while (end < batch.length && !(batch[end] as Item).rotateBefore) end += 1;
        const chunk = batch.slice(index, end);
        this.writeChunk(chunk);
        for (const item of chunk) {
          done.push(item);
          this.written = { seq: item.seq, hash: item.hash };
          item.afterWrite?.();
        }
        index = end;
      }
    } catch (error) {
      failure = this.writeFailure(error);
    }
    if (failure) {
      // Everything not on disk is dropped from the chain and its appends fail: the caller fails closed.
      const lost = [...batch.slice(index), ...this.pending];
      this.pending = [];
      this.head = this.written;
      this.plannedBytes = this.segmentBytes;
      this.rotateNext = false;
      for (const item of lost) item.ack?.reject(failure);
    }
    if (done.length === 0) {
      this.notifyDrained();
      return;
    }
    if (this.mode === 'batch') {
      this.acknowledge(done);
      this.scheduleFsync();
      if (this.pending.length > 0) this.scheduleFlush();
      else this.notifyDrained();
      return;
    }
    this.syncing = true;
    fdatasync(this.fd, (error) => {
      this.syncing = false;
      if (error) {
        this.broken = this.writeFailure(error);
        for (const item of done) item.ack?.reject(this.broken);
      } else {
        this.acknowledge(done);
      }
      if (this.pending.length > 0) this.flush();
      else this.notifyDrained();
    });
  }

  private acknowledge(items: Item[]): void {
    for (const item of items) item.ack?.resolve();
    if (this.options.onWritten) {
      try {
        this.options.onWritten(items.map((item) => ({ seq: item.seq, line: item.line })));
      } catch {
        // A sink or index problem must never undo or block an acknowledged audit record.
      }
    }
  }

  private writeChunk(chunk: Item[]): void {
    const buffer = chunk.length === 1 ? (chunk[0] as Item).bytes : Buffer.concat(chunk.map((item) => item.bytes));
    let offset = 0;
    try {
      while (offset < buffer.length) offset += writeSync(this.fd, buffer, offset, buffer.length - offset);
    } catch (error) {
      if (offset > 0) {
        try {
          ftruncateSync(this.fd, this.segmentBytes);
        } catch (truncateError) {
          // The segment now ends in a partial line we cannot remove; stop writing until a restart repairs it.
          this.broken = this.writeFailure(truncateError);
        }
      }
      throw error;
    }
    this.segmentBytes += buffer.length;
  }

  private scheduleFsync(): void {
    this.unsynced = true;
    if (this.fsyncTimer || this.fsyncInFlight) return;
    this.fsyncTimer = setTimeout(() => {
      this.fsyncTimer = undefined;
      this.fsyncInFlight = true;
      this.unsynced = false;
      fdatasync(this.fd, (error) => {
        this.fsyncInFlight = false;
        for (const fd of this.retiredFds.splice(0)) closeQuietly(fd);
        // After a failed fsync the kernel may have dropped the dirty pages: nothing further can be trusted.
        if (error) this.broken = this.writeFailure(error);
        // Writes that landed while this sync ran get the next one.
        else if (this.unsynced && this.fd >= 0) this.scheduleFsync();
        this.notifyDrained();
      });
    }, BATCH_SYNC_MS);
  }

  private writeFailure(error: unknown): GatehouseError {
    if (error instanceof GatehouseError) return error;
    const code = (error as NodeJS.ErrnoException).code;
    const why = code === 'ENOSPC' ? 'the disk is full' : code === 'EDQUOT' ? 'the disk quota is exceeded' : code === 'EFBIG' ? 'the file size limit is reached' : errorMessage(error);
    return new GatehouseError(
      'audit_write_failed',
      `the audit log cannot be written to ${join(this.dir, this.segment)} (${why}); decisions are denied until it can be`,
      { exitCode: 1, details: code ? { code } : {}, cause: error },
    );
  }

  private openSegment(name: string, created: boolean): void {
    const path = join(this.dir, name);
    const fd = openSync(path, constants.O_WRONLY | constants.O_APPEND | constants.O_CREAT | constants.O_NOFOLLOW, 0o600);
    const stat = fstatSync(fd);
    this.fd = fd;
    this.segment = name;
    this.segmentBytes = stat.size;
    this.segmentOpenedAt = created || stat.size === 0 ? Date.now() : stat.birthtimeMs > 0 ? stat.birthtimeMs : stat.mtimeMs;
    if (created) syncDirectory(this.dir);
  }

  /** Closes the current segment (synced) and opens the next one, named by its first sequence number. */
  private rotate(firstSeq: number): void {
    fsyncSync(this.fd);
    // Open the new segment before letting go of the old one: if the open fails, the log keeps a valid fd.
    const previous = this.fd;
    this.openSegment(segmentName(firstSeq), true);
    this.retire(previous);
    this.applyRetention();
  }

  private retire(fd: number): void {
    if (fd < 0) return;
    if (this.fsyncInFlight) this.retiredFds.push(fd);
    else closeQuietly(fd);
  }

  /**
   * Removes the oldest closed segments beyond the retention limits. The record announcing the removal is
   * written first, so `audit verify` can tell retention from deletion.
   */
  private applyRetention(): void {
    const { retentionMaxBytes, retentionMaxAgeMs } = this.options;
    if (retentionMaxBytes === undefined && retentionMaxAgeMs === undefined) return;
    const closed = listSegments(this.dir).filter((s) => s.name !== this.segment);
    const sizes = closed.map((s) => statSync(join(this.dir, s.name)));
    let total = sizes.reduce((sum, stat) => sum + stat.size, 0);
    const victims: string[] = [];
    let removedThroughSeq = 0;
    const now = Date.now();
    for (let i = 0; i < closed.length; i += 1) {
      const stat = sizes[i]!;
      const overSize = retentionMaxBytes !== undefined && total > retentionMaxBytes;
      const overAge = retentionMaxAgeMs !== undefined && now - stat.mtimeMs > retentionMaxAgeMs;
      if (!overSize && !overAge) break;
      victims.push(closed[i]!.name);
      total -= stat.size;
      const next = closed[i + 1];
      removedThroughSeq = (next ? next.firstSeq : segmentFirstSeq(this.segment)) - 1;
    }
    if (victims.length === 0) return;
    this.enqueue(
      () =>
        this.systemRecord(RETENTION_ACTION, 'info', `retention removed ${victims.length} segment(s) holding records up to ${removedThroughSeq}`, {
          removedThroughSeq,
          segments: victims,
        }),
      undefined,
      () => {
        fsyncSync(this.fd);
        for (const name of victims) unlinkSync(join(this.dir, name));
      },
    );
    this.scheduleFlush();
  }
}

function segmentFirstSeq(name: string): number {
  return Number(name.slice('segment-'.length, 'segment-'.length + 16));
}

function closeQuietly(fd: number): void {
  try {
    closeSync(fd);
  } catch {
    // Already closed.
  }
}

function syncDirectory(dir: string): void {
  let fd = -1;
  try {
    fd = openSync(dir, 'r');
    fsyncSync(fd);
  } catch {
    // Some file systems cannot sync a directory; the file's own sync still holds its data.
  } finally {
    if (fd >= 0) closeQuietly(fd);
  }
}

function acquireLock(path: string): void {
  try {
    writeFileSync(path, String(process.pid), { flag: 'wx', mode: 0o600 });
    return;
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error;
  }
  const owner = Number(readFileSync(path, 'utf8').trim());
  if (Number.isInteger(owner) && owner > 0 && processAlive(owner)) {
    throw new GatehouseError('audit_locked', `another Gatehouse process (pid ${owner}) is writing the audit log in ${path.replace(/\/writer\.lock$/, '')}`, {
      exitCode: 2,
    });
  }
  // The previous writer is gone (crashed or killed): take the lock over.
  writeFileSync(path, String(process.pid), { mode: 0o600 });
}

function releaseLock(path: string): void {
  try {
    if (readFileSync(path, 'utf8').trim() === String(process.pid)) unlinkSync(path);
  } catch {
    // Nothing to release.
  }
}

function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'EPERM';
  }
}

interface Recovered {
  head: ChainHead;
  /** The segment to keep appending to; undefined when the log is empty. */
  segment?: string;
  repair?: { segment: string; truncatedBytes: number };
}

/** Finds the chain's head from the end of the newest segments, cutting off a torn final line. */
function recoverHead(dir: string): Recovered {
  const segments = listSegments(dir);
  const last = segments[segments.length - 1];
  if (!last) return { head: { seq: 0, hash: GENESIS_HASH } };
  const result: Recovered = { head: { seq: 0, hash: GENESIS_HASH }, segment: last.name };
  for (let i = segments.length - 1; i >= 0; i -= 1) {
    const name = segments[i]!.name;
    const path = join(dir, name);
    const tail = readLastLine(path);
    if (i === segments.length - 1 && tail.validSize < tail.size) {
      truncateSync(path, tail.validSize);
      result.repair = { segment: name, truncatedBytes: tail.size - tail.validSize };
    }
    if (tail.line === undefined) continue;
    const prefix = parsePrefix(tail.line);
    if (!prefix) {
      throw new GatehouseError(
        'audit_unreadable',
        `the last record in ${path} is not one the audit log wrote; run "gatehouse audit verify" to find where the log was altered`,
        { exitCode: 2 },
      );
    }
    result.head = { seq: prefix.seq, hash: hashLine(tail.line) };
    return result;
  }
  return result;
}

/** The last complete line of a file, and the size the file has up to and including its last newline. */
function readLastLine(path: string): { line?: string; validSize: number; size: number } {
  const fd = openSync(path, 'r');
  try {
    const size = fstatSync(fd).size;
    let window = Math.min(size, 64 * 1024);
    for (;;) {
      const start = size - window;
      const buffer = Buffer.alloc(window);
      readSync(fd, buffer, 0, window, start);
      const lastNewline = buffer.lastIndexOf(10);
      if (lastNewline >= 0) {
        const previousNewline = lastNewline === 0 ? -1 : buffer.lastIndexOf(10, lastNewline - 1);
        if (previousNewline >= 0 || start === 0) {
          const line = buffer.subarray(previousNewline + 1, lastNewline).toString('utf8');
          return { line, validSize: start + lastNewline + 1, size };
        }
      } else if (start === 0) {
        return { validSize: 0, size };
      }
      window = Math.min(size, window * 4);
    }
  } finally {
    closeSync(fd);
  }
}
