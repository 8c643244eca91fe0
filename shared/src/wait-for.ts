// Waiting on a condition with a deadline: the one way code and tests here wait for things that
// happen outside the process (a socket appearing, a console line, a process exiting). The interval
// only bounds how often the condition is checked; the deadline is what fails loudly.

export interface WaitOptions {
  timeoutMs: number;
  /** How often to check; small, because the check is cheap and latency matters. */
  intervalMs?: number;
  /** What is awaited, for the error message: "QMP socket /x to appear". */
  what: string;
}

export async function waitFor<T>(
  condition: () => T | undefined | false | null | Promise<T | undefined | false | null>,
  options: WaitOptions,
): Promise<T> {
  const deadline = Date.now() + options.timeoutMs;
  const interval = options.intervalMs ?? 50;
  let lastError: unknown;
  for (;;) {
    try {
      const value = await condition();
      if (value !== undefined && value !== false && value !== null) return value;
    } catch (err) {
      lastError = err;
    }
    if (Date.now() >= deadline) {
      const reason = lastError instanceof Error ? ` (last error: ${lastError.message})` : "";
      throw new Error(`timed out after ${options.timeoutMs} ms waiting for ${options.what}${reason}`);
    }
    await new Promise((r) => setTimeout(r, interval));
  }
}
