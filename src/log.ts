import { destination, pino, type Logger } from 'pino';

export type { Logger };

/** JSON logs on stderr, so stdout stays free for command output. */
export function createLogger(level = 'info'): Logger {
  return pino({ level, base: { app: 'kpr' } }, destination({ fd: 2, sync: true }));
}
