// A test's handle on something it may stop in more than one way (stop, or
// crash) and more than once (by hand, then at teardown): the first way asked
// for runs, every later call waits for that one.

/** Returns `once(how)`: runs `how` on the first call only; each call resolves when that first stop has. */
export function stopOnce(): (how: () => Promise<void>) => Promise<void> {
  let stopping: Promise<void> | undefined
  return async (how) => {
    stopping ??= how()
    await stopping
  }
}
