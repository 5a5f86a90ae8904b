// What the store refuses, in its own words: a stable code and a sentence.
// The store knows nothing of HTTP; http/problem.ts maps each code to the
// API's error catalog (protocol/errors.ts).
import { CodedError } from '../../common/coded-error.js'

export type StoreErrorCode =
  | 'not-found'
  | 'invalid-cursor'
  | 'name-taken'
  | 'unknown-pool'
  | 'pool-kind'
  | 'not-enough-gpus'
  | 'not-an-endpoint'
  | 'unknown-team'

export class StoreError extends CodedError<StoreErrorCode> {}
