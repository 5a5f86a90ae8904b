// A server-sent events parser (WHATWG HTML "event stream interpretation"):
// text arrives in arbitrary chunks, so a line, even a CRLF pair, may be split
// across two of them.

export interface SseMessage {
  /** The last `id:` seen so far (it carries over to later messages, per the spec). */
  id: string | null
  event: string
  data: string
}

export class SseParser {
  #buffer = ''
  #started = false
  /** A CR ended the previous chunk: an LF opening the next one belongs to it. */
  #pendingCr = false
  #data: string[] = []
  #event = ''
  #lastId: string | null = null
  /** Reconnection delay the server asked for with `retry:`, in ms. */
  retryMs: number | null = null

  get lastEventId(): string | null {
    return this.#lastId
  }

  /** Feeds decoded text; returns the messages it completed. */
  push(chunk: string): SseMessage[] {
    let text = chunk
    if (this.#pendingCr && text.startsWith('\n')) text = text.slice(1)
    this.#pendingCr = false
    if (!this.#started && text !== '') {
      this.#started = true
      if (text.startsWith('\uFEFF')) text = text.slice(1)
    }
    this.#buffer += text
    const out: SseMessage[] = []
    for (;;) {
      const m = /\r\n|\r|\n/.exec(this.#buffer)
      if (m === null) break
      // A lone CR at the very end may be the first half of a CRLF.
      if (m[0] === '\r' && m.index === this.#buffer.length - 1) {
        this.#pendingCr = true
        const line = this.#buffer.slice(0, m.index)
        this.#buffer = ''
        const msg = this.#line(line)
        if (msg !== null) out.push(msg)
        break
      }
      const line = this.#buffer.slice(0, m.index)
      this.#buffer = this.#buffer.slice(m.index + m[0].length)
      const msg = this.#line(line)
      if (msg !== null) out.push(msg)
    }
    return out
  }

  #line(line: string): SseMessage | null {
    if (line === '') return this.#dispatch()
    if (line.startsWith(':')) return null
    const colon = line.indexOf(':')
    const field = colon === -1 ? line : line.slice(0, colon)
    let value = colon === -1 ? '' : line.slice(colon + 1)
    if (value.startsWith(' ')) value = value.slice(1)
    switch (field) {
      case 'data':
        this.#data.push(value)
        break
      case 'event':
        this.#event = value
        break
      case 'id':
        if (!value.includes('\0')) this.#lastId = value
        break
      case 'retry':
        if (/^\d+$/.test(value)) this.retryMs = Number(value)
        break
      default:
        break // unknown fields are ignored
    }
    return null
  }

  #dispatch(): SseMessage | null {
    const data = this.#data
    const event = this.#event
    this.#data = []
    this.#event = ''
    if (data.length === 0) return null
    return { id: this.#lastId, event: event === '' ? 'message' : event, data: data.join('\n') }
  }
}
