/**
 * Reading a whole HTTP request body under a size limit (what clients send the gateway).
 */
import type { IncomingMessage } from 'node:http';

/**
 * The whole body, or `too-large` as soon as it (or its declared length) passes `limit` bytes; the rest is
 * left unread, for the caller to drain (to answer 413) or to cut off. Rejects if the connection fails first.
 */
export function readBody(message: IncomingMessage, limit: number): Promise<Buffer | 'too-large'> {
  const declared = Number(message.headers['content-length']);
  if (Number.isFinite(declared) && declared > limit) return Promise.resolve('too-large');
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    const collect = (chunk: Buffer): void => {
      size += chunk.length;
      if (size <= limit) return void chunks.push(chunk);
      message.off('data', collect);
      message.pause();
      resolve('too-large');
    };
    message.on('data', collect);
    message.once('end', () => resolve(Buffer.concat(chunks)));
    message.once('error', reject);
    // Only a body cut short needs the error (an Error's stack costs more than the rest of a small read).
    message.once('close', () => {
      if (!message.complete) reject(new Error('the connection closed before the whole body arrived'));
    });
  });
}
