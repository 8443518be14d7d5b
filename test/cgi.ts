/** Test helper: relays a CGI program's output (headers, a blank line, then the body) as an HTTP response. */
import type { ChildProcess } from 'node:child_process';
import type { ServerResponse } from 'node:http';

export function relayCgi(backend: ChildProcess, response: ServerResponse): void {
  let head = Buffer.alloc(0);
  let headersDone = false;
  backend.stdout!.on('data', (chunk: Buffer) => {
    if (headersDone) {
      response.write(chunk);
      return;
    }
    head = Buffer.concat([head, chunk]);
    const end = head.indexOf('\r\n\r\n');
    if (end < 0) return;
    headersDone = true;
    let status = 200;
    for (const line of head.subarray(0, end).toString('latin1').split('\r\n')) {
      const colon = line.indexOf(':');
      const name = line.slice(0, colon).trim();
      const value = line.slice(colon + 1).trim();
      if (name.toLowerCase() === 'status') status = Number(value.split(' ')[0]);
      else response.setHeader(name, value);
    }
    response.writeHead(status);
    response.write(head.subarray(end + 4));
  });
  backend.on('close', () => response.end());
}
