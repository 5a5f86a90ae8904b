// One place where protocol schemas are checked, so every boundary reports
// errors the same way.
import { FormatRegistry, type TSchema, type Static } from '@sinclair/typebox'
import { TypeCompiler, type TypeCheck } from '@sinclair/typebox/compiler'

const DATE_TIME = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$/
export const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i
if (!FormatRegistry.Has('date-time'))
  FormatRegistry.Set('date-time', (v) => DATE_TIME.test(v) && !Number.isNaN(Date.parse(v)))
if (!FormatRegistry.Has('uuid')) FormatRegistry.Set('uuid', (v) => UUID.test(v))

const compiled = new WeakMap<TSchema, TypeCheck<TSchema>>()

function checker<T extends TSchema>(schema: T): TypeCheck<T> {
  let c = compiled.get(schema)
  if (c === undefined) {
    c = TypeCompiler.Compile(schema)
    compiled.set(schema, c)
  }
  return c as TypeCheck<T>
}

/** Problems found in `value` against `schema`, as `path: message` lines (at most `limit`). */
export function schemaErrors(schema: TSchema, value: unknown, limit = 10): string[] {
  const out: string[] = []
  for (const e of checker(schema).Errors(value)) {
    out.push(`${e.path === '' ? '/' : e.path}: ${e.message}`)
    if (out.length >= limit) break
  }
  return out
}

export function isValid<T extends TSchema>(schema: T, value: unknown): value is Static<T> {
  return checker(schema).Check(value)
}
