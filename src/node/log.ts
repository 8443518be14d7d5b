import { pino, type Logger } from 'pino';

/** Operational logs: JSON lines on stderr. The audit trail is separate and never goes here. */
export function createLogger(level = process.env.GATEHOUSE_LOG_LEVEL ?? 'info'): Logger {
  return pino({ name: 'gatehouse', level }, pino.destination(2));
}
