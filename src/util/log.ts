// One pino logger for every long-running knet command. JSON lines on stderr, so stdout stays
// free for command output (rule dumps, CNI results).
import pino from 'pino';

export type Logger = pino.Logger;

export function makeLogger(name: string, level = process.env.KNET_LOG_LEVEL ?? 'info'): Logger {
  return pino({ name, level, base: { pid: process.pid } }, pino.destination(2));
}
