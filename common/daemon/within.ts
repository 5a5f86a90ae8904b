// A bound on waiting for something that may hang (a connection attempt to a
// server that is gone): probes answer in time whatever the dependency does.

/** `p`, or a rejection after `ms` (the work behind `p` goes on; only the wait ends). */
export async function within<T>(p: Promise<T>, ms: number): Promise<T> {
  let timer: NodeJS.Timeout | undefined
  try {
    return await Promise.race([
      p,
      new Promise<never>((_resolve, reject) => {
        timer = setTimeout(() => reject(new Error(`no answer in ${ms} ms`)), ms)
      })
    ])
  } finally {
    clearTimeout(timer)
  }
}
