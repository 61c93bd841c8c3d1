// Every error ispy reports carries a stable code from this one table. Codes are never
// reused or renamed: scripts and plugins match on them. docs/errors.md documents each.

export const ERROR_CODES = {
  ISPY_ERR_BAD_FRAME: 'A frame from the peer was not valid JSON or did not match the protocol.',
  ISPY_ERR_FRAME_TOO_LARGE: 'A frame exceeded the configured maximum frame size.',
  ISPY_ERR_PROTOCOL_VERSION: 'Client and agent speak different protocol versions.',
  ISPY_ERR_NOT_READY: 'A call arrived before the hello/welcome exchange finished.',
  ISPY_ERR_DUPLICATE_ID: 'A call reused the id of a call that is still running.',
  ISPY_ERR_TOO_MANY_CALLS: 'The connection has too many calls running at once.',
  ISPY_ERR_UNKNOWN_PLUGIN: 'No plugin with that name is loaded.',
  ISPY_ERR_UNKNOWN_COMMAND: 'The plugin has no command with that name.',
  ISPY_ERR_BAD_ARGS: 'The arguments did not match the command declaration.',
  ISPY_ERR_PLUGIN_FAILED: 'A plugin command threw an unexpected error (its stack is kept).',
  ISPY_ERR_PLUGIN_LOAD: 'A plugin could not be loaded or its setup failed.',
  ISPY_ERR_SETUP_TIMEOUT: 'A plugin setup did not finish within its time limit.',
  ISPY_ERR_MAIN_BUSY: 'The main thread did not answer in time: it is busy running JavaScript or blocked.',
  ISPY_ERR_MAIN_BLOCKED: 'The main thread is blocked outside JavaScript (native code, a synchronous call).',
  ISPY_ERR_INSPECTOR: 'An inspector call failed or timed out.',
  ISPY_ERR_CANCELLED: 'The call was cancelled by the client or by a disconnect.',
  ISPY_ERR_UNAVAILABLE: 'The feature is not available in this process or configuration.',
  ISPY_ERR_NOT_FOUND: 'The thing named by the command (a request, a trace, a file) does not exist.',
  ISPY_ERR_CONFIG: 'The agent configuration is invalid.',
  ISPY_ERR_SOCKET: 'The socket path cannot be used safely.',
  ISPY_ERR_SOCKET_IN_USE: 'The socket path is held by a live agent.',
  ISPY_ERR_AGENT_STOPPED: 'The agent is stopping or stopped.',
  ISPY_ERR_CONNECT: 'The client could not connect to the agent.',
  ISPY_ERR_DISCONNECTED: 'The connection to the agent closed before the call finished.',
  ISPY_ERR_TIMEOUT: 'The call did not finish within the client timeout.',
  ISPY_ERR_USAGE: 'A command line given to the client could not be parsed.',
  ISPY_ERR_AUDIT: 'The audit log could not be written, so a command that changes the app was not run.',
} as const;

export type ErrorCode = keyof typeof ERROR_CODES;

const BRAND = Symbol.for('ispy.error');

/** The one error class of ispy. Branded with Symbol.for so the check survives two copies of the library. */
export class IspyError extends Error {
  readonly code: ErrorCode;
  readonly details?: Record<string, unknown>;
  readonly [BRAND] = true;

  constructor(code: ErrorCode, message: string, options?: { cause?: unknown; details?: Record<string, unknown> }) {
    super(message, options?.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'IspyError';
    this.code = code;
    if (options?.details) this.details = options.details;
  }

  /**
   * `err instanceof IspyError` by the brand, so it holds across two copies of the library:
   * a plugin resolving `ispy/plugin` from the app's node_modules while the agent was loaded
   * from elsewhere (`ispy attach`), or a plugin package with its own install. Subclasses
   * keep the ordinary prototype check.
   */
  static override [Symbol.hasInstance](value: unknown): boolean {
    return this === IspyError ? isIspyError(value) : Function.prototype[Symbol.hasInstance].call(this, value);
  }
}

export function isIspyError(value: unknown): value is IspyError {
  return typeof value === 'object' && value !== null && (value as Record<symbol, unknown>)[BRAND] === true;
}

export function isErrorCode(value: unknown): value is ErrorCode {
  return typeof value === 'string' && Object.prototype.hasOwnProperty.call(ERROR_CODES, value);
}

/** What an error looks like on the wire. */
export interface WireError {
  code: ErrorCode;
  message: string;
  /** Kept for unexpected plugin failures so the author can find the bug. */
  stack?: string;
  details?: Record<string, unknown>;
}

/** Turns anything thrown into a wire error. A non-ispy error becomes ISPY_ERR_PLUGIN_FAILED with its stack. */
export function toWireError(err: unknown, context?: string): WireError {
  if (isIspyError(err)) {
    const wire: WireError = { code: err.code, message: err.message };
    if (err.details) wire.details = err.details;
    // An error that crossed a thread or the wire keeps the stack it started with.
    const remote = (err as { remoteStack?: string }).remoteStack;
    if (remote) wire.stack = remote;
    return wire;
  }
  const message = err instanceof Error ? err.message : String(err);
  const wire: WireError = {
    code: 'ISPY_ERR_PLUGIN_FAILED',
    message: context ? `${context}: ${message}` : message,
  };
  if (err instanceof Error && err.stack) wire.stack = err.stack;
  return wire;
}

export function fromWireError(wire: WireError): IspyError {
  const code = isErrorCode(wire.code) ? wire.code : 'ISPY_ERR_PLUGIN_FAILED';
  const err = new IspyError(code, wire.message, wire.details ? { details: wire.details } : undefined);
  if (wire.stack) (err as { remoteStack?: string }).remoteStack = wire.stack;
  return err;
}
