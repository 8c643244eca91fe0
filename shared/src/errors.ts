// One error type for the whole project. Errors carry their origin (which part of shadowvm raised
// them) and a machine-readable code, so the CLI can print one clear line and services can count
// errors by type, while the message itself says what was wrong and what was expected.

export class ShadowvmError extends Error {
  /** Which part raised it: "qmp", "qemu", "config", "capture-store", ... */
  readonly origin: string;
  /** Stable, machine-readable reason, e.g. "unreachable", "timeout", "invalid". */
  readonly code: string;

  constructor(origin: string, code: string, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = "ShadowvmError";
    this.origin = origin;
    this.code = code;
  }

  /** `[qemu] cannot connect ...`: the form used in logs and CLI error lines. */
  override toString(): string {
    return `[${this.origin}] ${this.message}`;
  }
}

export function createError(
  origin: string,
  code: string,
  message: string,
  options?: { cause?: unknown },
): ShadowvmError {
  return new ShadowvmError(origin, code, message, options);
}

/** The one line a CLI prints for an error: origin and message, never a stack trace. */
export function describeError(err: unknown): string {
  if (err instanceof ShadowvmError) return err.toString();
  if (err instanceof Error) return err.message;
  return String(err);
}
