// Where a JSON text stops being JSON. JSON.parse says so only in some Node
// versions ("at position N") and not for every error, so this small scanner
// (RFC 8259 grammar) finds the offset and says what was expected there. It
// runs only after JSON.parse has failed.

export interface JsonSyntaxProblem {
  offset: number
  message: string
}

class Stop extends Error {
  constructor(
    readonly offset: number,
    message: string
  ) {
    super(message)
  }
}

const LITERALS = ['true', 'false', 'null'] as const
const NUMBER = /-?(?:0|[1-9]\d*)(?:\.\d+)?(?:[eE][+-]?\d+)?/y

export function jsonSyntaxProblem(text: string): JsonSyntaxProblem | null {
  let i = 0
  const found = () => (i >= text.length ? 'the end of the text' : JSON.stringify(text[i]))
  const stop = (expected: string): never => {
    throw new Stop(i, `expected ${expected}, found ${found()}`)
  }
  const ws = () => {
    while (i < text.length && ' \t\n\r'.includes(text[i] as string)) i++
  }

  const string = () => {
    i++ // the opening quote
    for (;;) {
      if (i >= text.length) throw new Stop(i, 'the string is not closed (a missing ")')
      const ch = text[i] as string
      if (ch === '"') {
        i++
        return
      }
      if (ch === '\\') {
        const next = text[i + 1] ?? ''
        if ('"\\/bfnrt'.includes(next) && next !== '') i += 2
        else if (next === 'u' && /^[0-9a-fA-F]{4}$/.test(text.slice(i + 2, i + 6))) i += 6
        else throw new Stop(i, 'invalid escape sequence in a string')
      } else if (ch < ' ')
        throw new Stop(i, 'a raw control character (a line break or tab) in a string; write it as \\n or \\t')
      else i++
    }
  }

  const value = (): void => {
    ws()
    const ch = text[i]
    if (ch === '{') {
      i++
      ws()
      if (text[i] === '}') {
        i++
        return
      }
      for (;;) {
        ws()
        if (text[i] !== '"') stop('a property name in double quotes')
        string()
        ws()
        if (text[i] !== ':') stop('":" after the property name')
        i++
        value()
        ws()
        if (text[i] === ',') {
          i++
          continue
        }
        if (text[i] === '}') {
          i++
          return
        }
        stop('"," or "}" after a property value')
      }
    }
    if (ch === '[') {
      i++
      ws()
      if (text[i] === ']') {
        i++
        return
      }
      for (;;) {
        value()
        ws()
        if (text[i] === ',') {
          i++
          continue
        }
        if (text[i] === ']') {
          i++
          return
        }
        stop('"," or "]" after an array element')
      }
    }
    if (ch === '"') {
      string()
      return
    }
    if (ch === '-' || (ch !== undefined && ch >= '0' && ch <= '9')) {
      NUMBER.lastIndex = i
      const m = NUMBER.exec(text)
      if (m === null) stop('a number')
      else i += m[0].length
      return
    }
    const literal = LITERALS.find((l) => text.startsWith(l, i))
    if (literal !== undefined) {
      i += literal.length
      return
    }
    stop('a value (an object, array, string, number, true, false or null)')
  }

  try {
    value()
    ws()
    if (i < text.length) stop('the end of the text after the JSON value')
    return null
  } catch (err) {
    // Anything else is nesting deeper than the stack; JSON.parse's own message will do.
    return err instanceof Stop ? { offset: err.offset, message: err.message } : null
  }
}
