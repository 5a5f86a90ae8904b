// libp2p 3 calls Promise.withResolvers (Node >= 22) at run time; Node 20
// lacks it. Imported first by every entry point that builds a libp2p node.
interface Resolvers<T> {
  promise: Promise<T>
  resolve: (v: T | PromiseLike<T>) => void
  reject: (e?: unknown) => void
}

const P = Promise as unknown as { withResolvers?: <T>() => Resolvers<T> }
if (typeof P.withResolvers !== 'function') {
  Object.defineProperty(Promise, 'withResolvers', {
    configurable: true,
    writable: true,
    value: function withResolvers<T>(this: PromiseConstructor): Resolvers<T> {
      let resolve!: Resolvers<T>['resolve']
      let reject!: Resolvers<T>['reject']
      const promise = new this<T>((res, rej) => {
        resolve = res
        reject = rej
      })
      return { promise, resolve, reject }
    }
  })
}

/** Start-up check: libp2p fails in obscure places without it. */
export function assertPromiseWithResolvers(): void {
  if (typeof (Promise as unknown as { withResolvers?: unknown }).withResolvers !== 'function') {
    throw new Error('Promise.withResolvers is missing: import common/polyfill.js before libp2p')
  }
}
