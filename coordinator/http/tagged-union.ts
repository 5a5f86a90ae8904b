// Bodies that are one of several kinds (a workload spec: endpoint, recipe or
// session) are checked against the schema their tag names, so one wrong
// field reads as one error of that kind, not the anyOf noise of every kind.
// A missing or unknown tag is one error that lists the kinds.
import type { Ajv, ErrorObject, ValidateFunction } from 'ajv'

interface TaggedUnion {
  tag: string
  members: Map<string, object>
}

/** The tag property and each member by its tag value, when `schema` is an anyOf/oneOf of objects that all carry a const tag. */
export function taggedUnion(schema: unknown): TaggedUnion | null {
  const s = schema as { anyOf?: unknown[]; oneOf?: unknown[] }
  const variants = s.anyOf ?? s.oneOf
  if (!Array.isArray(variants) || variants.length < 2) return null
  const first = variants[0] as { properties?: Record<string, { const?: unknown }> }
  for (const tag of Object.keys(first.properties ?? {})) {
    const members = new Map<string, object>()
    for (const v of variants as Array<{ type?: unknown; properties?: Record<string, { const?: unknown }> }>) {
      const value = v.properties?.[tag]?.const
      if (v.type !== 'object' || typeof value !== 'string' || members.has(value)) break
      members.set(value, v)
    }
    if (members.size === variants.length) return { tag, members }
  }
  return null
}

type Validator = ((data: unknown) => boolean) & { errors?: ErrorObject[] | null }

const schemaError = (
  instancePath: string,
  keyword: string,
  message: string,
  params: Record<string, unknown> = {}
): ErrorObject => ({ instancePath, schemaPath: '#', keyword, params, message })

/** A validator for a tagged union: the tag picks the one schema whose errors are reported. */
export function compileTaggedUnion(ajv: Ajv, union: TaggedUnion): Validator {
  const compiled = new Map<string, ValidateFunction>(
    [...union.members].map(([value, schema]) => [value, ajv.compile(schema)])
  )
  const kinds = [...compiled.keys()]
  const validate: Validator = (data) => {
    validate.errors = null
    if (typeof data !== 'object' || data === null || Array.isArray(data)) {
      validate.errors = [schemaError('', 'type', 'must be object', { type: 'object' })]
      return false
    }
    const value = (data as Record<string, unknown>)[union.tag]
    const member = typeof value === 'string' ? compiled.get(value) : undefined
    if (member === undefined) {
      const allowed = kinds.join(', ')
      validate.errors = [
        value === undefined
          ? schemaError('', 'required', `must have required property '${union.tag}' (one of ${allowed})`, {
              missingProperty: union.tag
            })
          : schemaError(`/${union.tag}`, 'enum', `must be one of ${allowed}`, { allowedValues: kinds })
      ]
      return false
    }
    const ok = member(data)
    validate.errors = ok ? null : (member.errors ?? null)
    return ok
  }
  return validate
}
