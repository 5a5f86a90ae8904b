// Strings that JSON can carry but PostgreSQL text and execve() cannot: a NUL
// character, and a lone UTF-16 surrogate (half of a character, which has no
// UTF-8 form). Every request is checked with this, in one place, before a
// route sees it.

const LONE_SURROGATE = /[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/

/** What is wrong with this string, or null. */
export function textProblem(s: string): string | null {
  if (s.includes('\0')) return 'contains a NUL character (U+0000)'
  if (LONE_SURROGATE.test(s)) return 'contains a lone surrogate (half of a UTF-16 character)'
  return null
}

/**
 * The first string in `value` (property names included) that PostgreSQL or
 * execve() could not take: its JSON pointer and what is wrong, or null.
 */
export function findBadText(value: unknown, path = ''): { path: string; problem: string } | null {
  if (typeof value === 'string') {
    const problem = textProblem(value)
    return problem === null ? null : { path, problem }
  }
  if (Array.isArray(value)) {
    for (let i = 0; i < value.length; i++) {
      const found = findBadText(value[i], `${path}/${i}`)
      if (found !== null) return found
    }
    return null
  }
  if (value !== null && typeof value === 'object') {
    for (const [k, v] of Object.entries(value)) {
      const keyProblem = textProblem(k)
      // The name itself cannot be printed safely: the pointer stops at its object.
      if (keyProblem !== null) return { path, problem: `has a property name that ${keyProblem}` }
      const found = findBadText(v, `${path}/${k.replace(/~/g, '~0').replace(/\//g, '~1')}`)
      if (found !== null) return found
    }
  }
  return null
}
