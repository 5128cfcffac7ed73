/** Bulk transfers of the lab's pod server and probe (port POD_BULK_PORT). */
import type { Socket } from 'node:net';

/**
 * Write `bytes` bytes of `fill` to the socket in 64 KB chunks, waiting for
 * 'drain' when the socket's buffer is full; then call `done`.
 */
export function sendBytes(sock: Socket, bytes: number, fill: number, done: () => void = () => {}): void {
  const chunk = Buffer.alloc(64 << 10, fill);
  let left = bytes;
  const pump = () => {
    while (left > 0) {
      const n = Math.min(left, chunk.length);
      left -= n;
      if (!sock.write(n === chunk.length ? chunk : chunk.subarray(0, n))) return void sock.once('drain', pump);
    }
    done();
  };
  pump();
}
