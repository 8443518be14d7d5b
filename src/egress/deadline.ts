/**
 * Slowloris: a client must finish each request's headers within a deadline, counted from connecting or from
 * the previous response. Node's own headersTimeout only runs for servers that listen themselves; the proxy's
 * HTTP engines are fed sockets by its listeners (and by TLS interception), so the deadline is kept here.
 */
import type { Duplex } from 'node:stream';

export class HeaderDeadlines {
  private readonly timers = new WeakMap<object, NodeJS.Timeout>();

  constructor(
    private readonly timeoutMs: number,
    private readonly onExpire: (socket: Duplex) => void,
  ) {}

  /**
   * Starts (or restarts) the deadline for the next request on `socket`. A socket whose sending side has
   * ended (the response said `Connection: close`) gets no next request, so it needs no deadline.
   */
  arm(socket: Duplex): void {
    if (socket.destroyed || socket.writableEnded) return;
    this.clear(socket);
    const timer = setTimeout(() => {
      this.timers.delete(socket);
      this.onExpire(socket);
    }, this.timeoutMs);
    timer.unref();
    this.timers.set(socket, timer);
  }

  /** Headers arrived (or the socket is gone). */
  clear(socket: Duplex): void {
    const timer = this.timers.get(socket);
    if (timer) {
      clearTimeout(timer);
      this.timers.delete(socket);
    }
  }

  /** Arms the first deadline and clears it when the socket closes. */
  watch(socket: Duplex): void {
    socket.once('close', () => this.clear(socket));
    this.arm(socket);
  }
}
