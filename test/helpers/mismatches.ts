// A table of cases counts as one assertion: each cell that differs is
// collected with where it is, and the test asserts the list is empty, so a
// failure shows every wrong cell at once in one readable diff.
import { isDeepStrictEqual } from 'node:util'

export interface Mismatch {
  case: string
  check: string
  got: unknown
  want: unknown
}

export class Mismatches {
  readonly list: Mismatch[] = []

  /** Records a mismatch unless `got` deep-equals `want` (strictly: null is not undefined). */
  check(kase: string, check: string, got: unknown, want: unknown): void {
    if (!isDeepStrictEqual(got, want)) this.list.push({ case: kase, check, got, want })
  }
}
