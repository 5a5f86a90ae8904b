// Response schema sets shared by routes: each route lists its success
// response and the problem+json statuses it can return.
import type { TSchema } from '@sinclair/typebox'
import { Problem } from '../../protocol/api.js'

const ALWAYS = [400, 401, 403, 500, 503] as const

export function responses(success: Record<number, TSchema>, ...extra: number[]): Record<number, TSchema> {
  const out: Record<number, TSchema> = { ...success }
  for (const status of [...ALWAYS, ...extra]) out[status] = Problem
  return out
}
