/**
 * Keeps the audit index caught up from a worker thread, so a busy node's `audit query` finds little left to
 * read and the node's event loop never waits on SQLite. Started by `openNodeAudit`; stops on "stop".
 */
import { parentPort, workerData } from 'node:worker_threads';
import { closeStores, openStore } from '../store/index.js';
import { AuditIndex } from './indexer.js';

const { dataDir, auditDir, intervalMs } = workerData as { dataDir: string; auditDir: string; intervalMs: number };
let index: AuditIndex | undefined;

function tick(): void {
  try {
    index ??= new AuditIndex(openStore(dataDir), auditDir);
    const added = index.catchUp();
    parentPort?.postMessage({ added });
  } catch (error) {
    // Retried on the next tick (a busy store, or a migration another process is applying).
    parentPort?.postMessage({ error: error instanceof Error ? error.message : String(error) });
  }
}

const timer = setInterval(tick, intervalMs);
tick();
parentPort?.on('message', (message) => {
  if (message !== 'stop') return;
  clearInterval(timer);
  tick();
  closeStores();
  parentPort?.close();
});
