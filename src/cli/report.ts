// How the CLI words failures, in one place so the shell, `run`, `ps` and `bridge` say
// the same thing the same way, and exit statuses follow one rule:
//   0 everything answered, 1 something failed, 2 something was typed wrong.

import type { Client } from '../client/index';
import { EVICTED_CLOSE, isIspyError, type ErrorCode } from '../protocol/index';
import { errorUsage } from './line';
import type { Style } from './style';

export const EXIT_OK = 0;
export const EXIT_FAILED = 1;
export const EXIT_USAGE = 2;

/** Errors about what was typed, found before anything reached an agent. */
const USAGE_CODES: ReadonlySet<ErrorCode> = new Set(['ISPY_ERR_USAGE', 'ISPY_ERR_BAD_ARGS', 'ISPY_ERR_UNKNOWN_PLUGIN', 'ISPY_ERR_UNKNOWN_COMMAND']);

const CLIENT_CODES: ReadonlySet<ErrorCode> = new Set(['ISPY_ERR_CONNECT', 'ISPY_ERR_DISCONNECTED', 'ISPY_ERR_TIMEOUT', 'ISPY_ERR_CANCELLED']);

export function isUsageError(err: unknown): boolean {
  return isIspyError(err) && USAGE_CODES.has(err.code);
}

/** `error: <message>` and, for a bad flag, `usage: <the command's usage>` beneath it. */
export function errorLines(err: unknown, s: Style): string[] {
  const message = err instanceof Error ? err.message : String(err);
  // The code helps look up an agent's error in docs/errors.md; the client's own errors
  // (typos, connecting, timeouts) read better without it.
  const code = isIspyError(err) && !USAGE_CODES.has(err.code) && !CLIENT_CODES.has(err.code) ? s.dim(` (${err.code})`) : '';
  const out = [`${s.bad('error:')} ${message}${code}`];
  const usage = errorUsage(err);
  if (usage) out.push(`${s.dim('usage:')} ${usage}`);
  return out;
}

/** Why the connection ended, as a person would put it. */
export function goneReason(client: Client): string {
  const reason = client.closeReason;
  if (!reason || reason === 'the agent went away') return 'the connection dropped without a goodbye: the process exited, was killed, or its agent stopped';
  return reason;
}

export function goneMessage(client: Client): string {
  // Not gone: it made room for another client while this one sat idle at its limit.
  if (client.closeReason === EVICTED_CLOSE.reason) {
    return `agent ${client.welcome.pid} closed this connection after it sat idle, to make room for another client (the agent is at its connection limit); connect again to go on`;
  }
  return `agent ${client.welcome.pid} went away (${goneReason(client)})`;
}

/** The JSON form of an error in --json output. */
export function errorJson(err: unknown): { code: string; message: string } {
  if (isIspyError(err)) return { code: err.code, message: err.message };
  return { code: 'ISPY_ERR_PLUGIN_FAILED', message: err instanceof Error ? err.message : String(err) };
}
