// The one way a test waits: poll for the state that proves a thing, never a
// fixed sleep. Kept apart from the coordinator helper so that tests of
// agent parts can wait without loading the coordinator.

/** Polls until `check` returns a value (not undefined, not false), or fails after `ms`. */
export async function eventually<T>(
  check: () => T | undefined | false | Promise<T | undefined | false>,
  ms = 10_000,
  what = 'condition'
): Promise<T> {
  const deadline = Date.now() + ms
  for (;;) {
    const v = await check()
    if (v !== undefined && v !== false) return v
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${what}`)
    await new Promise((resolve) => setTimeout(resolve, 25))
  }
}
