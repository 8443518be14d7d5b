/**
 * Errors are values with codes. A user sees `message` (one sentence: what, where, how to fix) and the
 * process exits with `exitCode`; details go to the operational log, never a stack trace on the terminal.
 */
export type ExitCode = 0 | 1 | 2;

export class GatehouseError extends Error {
  readonly code: string;
  readonly exitCode: ExitCode;
  readonly details: Record<string, unknown> | undefined;

  constructor(code: string, message: string, options: { exitCode?: ExitCode; details?: Record<string, unknown>; cause?: unknown } = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'GatehouseError';
    this.code = code;
    this.exitCode = options.exitCode ?? 2;
    this.details = options.details;
  }
}

/** A configuration or usage problem: exit code 2. */
export function configError(code: string, message: string, details?: Record<string, unknown>): GatehouseError {
  return new GatehouseError(code, message, { exitCode: 2, ...(details ? { details } : {}) });
}

export function isGatehouseError(value: unknown): value is GatehouseError {
  return value instanceof GatehouseError;
}

export function errorMessage(value: unknown): string {
  return value instanceof Error ? value.message : String(value);
}
