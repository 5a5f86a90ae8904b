// The one way a test waits: poll for the state that proves a thing, never a
// fixed sleep. Kept apart from the coordinator helper so that tests of
// agent parts can wait without loading the coordinator.

/**
 * Deadlines are failure bounds, never measurements: a CI machine running two
 * test files at once, each starting agents, coordinators and PostgreSQL, can
 * be several times slower than a quiet one, so every deadline is stretched
 * by this factor (GPUMESH_TEST_DEADLINE_SCALE, default 3).
 */
const SCALE = Math.max(1, Number(process.env.GPUMESH_TEST_DEADLINE_SCALE ?? 3) || 3)

/** Polls until `check` returns a value (not undefined, not false), or fails after `ms` (times SCALE). */
export async function eventually<T>(
  check: () => T | undefined | false | Promise<T | undefined | false>,
  ms = 10_000,
  what = 'condition'
): Promise<T> {
  const limit = ms * SCALE
  const deadline = Date.now() + limit
  for (;;) {
    const v = await check()
    if (v !== undefined && v !== false) return v
    if (Date.now() > deadline) throw new Error(`timed out after ${limit} ms waiting for ${what}`)
    await new Promise((resolve) => setTimeout(resolve, 25))
  }
}
