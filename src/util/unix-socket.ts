/**
 * A Unix socket a node serves at a fixed place in its data dir (`node.sock`, `mcp.sock`). A socket path must
 * fit in `sun_path` (108 bytes on Linux, with its NUL); a data dir deep enough to overflow it gets the socket
 * in a private temp dir and a symlink at the fixed place, which clients follow as they would the socket.
 */
import { chmodSync, mkdtempSync, rmSync, symlinkSync } from 'node:fs';
import { createServer, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { basename, join } from 'node:path';

const MAX_SOCKET_PATH = 100;

export interface UnixListener {
  /** Where clients connect: the fixed place, which may be a symlink to the socket. */
  path: string;
  /** Stops listening, drops every connection, and removes the socket and its link. */
  close(): Promise<void>;
}

/**
 * Listens at `path` with mode 0600, replacing whatever a crashed process left there: the caller holds the
 * lock that makes it the only process serving this data dir.
 */
export async function listenUnix(path: string, onConnection: ((socket: Socket) => void) | Server): Promise<UnixListener> {
  rmSync(path, { force: true });
  let ownDir: string | undefined;
  let socketPath = path;
  if (path.length > MAX_SOCKET_PATH) {
    ownDir = mkdtempSync(join(tmpdir(), 'gatehouse-sock-'));
    socketPath = join(ownDir, basename(path));
  }
  const connections = new Set<Socket>();
  // A server of its own (an HTTP server), or a plain one for the handler.
  const server: Server = typeof onConnection === 'function' ? createServer(onConnection) : onConnection;
  server.on('connection', (socket: Socket) => {
    connections.add(socket);
    socket.once('close', () => connections.delete(socket));
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(socketPath, () => resolve());
  });
  chmodSync(socketPath, 0o600);
  if (ownDir) symlinkSync(socketPath, path);
  return {
    path,
    close: async () => {
      const closed = new Promise<void>((resolve) => server.close(() => resolve()));
      for (const socket of connections) socket.destroy();
      await closed;
      rmSync(path, { force: true });
      if (ownDir) rmSync(ownDir, { recursive: true, force: true });
    },
  };
}
