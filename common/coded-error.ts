// Errors that callers branch on carry a stable `code` (js-libp2p's typed
// errors): messages are for people and may change, codes may not.
export class CodedError<Code extends string> extends Error {
  constructor(
    readonly code: Code,
    message: string
  ) {
    super(message)
    this.name = new.target.name
  }
}
