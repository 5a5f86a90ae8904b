// Opaque keyset-pagination cursors: base64url JSON of the last row's sort key.
import { StoreError } from './errors.js'

const notIssued = (): StoreError => new StoreError('invalid-cursor', 'The pagination cursor is not one this API issued')

export function encodeCursor(key: Array<string | number>): string {
  return Buffer.from(JSON.stringify(key)).toString('base64url')
}

/** The sort key in a cursor this API issued, checked against the expected shape. */
export function decodeCursor(
  cursor: string | undefined,
  shape: Array<'string' | 'number'>
): Array<string | number> | null {
  if (cursor === undefined) return null
  let key: unknown
  try {
    key = JSON.parse(Buffer.from(cursor, 'base64url').toString('utf8'))
  } catch {
    throw notIssued()
  }
  if (!Array.isArray(key) || key.length !== shape.length || key.some((v, i) => typeof v !== shape[i])) throw notIssued()
  return key as Array<string | number>
}

/** Items of one page and the cursor for the next, from rows fetched with limit + 1. */
export function page<R, T>(
  rows: R[],
  limit: number,
  toItem: (r: R) => T,
  key: (r: R) => Array<string | number>
): { items: T[]; nextCursor: string | null } {
  const more = rows.length > limit
  const kept = more ? rows.slice(0, limit) : rows
  const last = kept[kept.length - 1]
  return { items: kept.map(toItem), nextCursor: more && last !== undefined ? encodeCursor(key(last)) : null }
}
