// Request validation with two Ajv instances: query strings, params and
// headers are text, so numbers in them are coerced; bodies are JSON, where a
// "4" for 4 is a client bug and is refused. Unknown properties are refused
// everywhere (additionalProperties: false in protocol/), never dropped. A
// body that is a tagged union is checked against its tag's schema alone.
// Every string of every part is checked first for what no schema says and
// PostgreSQL refuses (NUL, lone surrogates: protocol/text.ts).
import { Ajv, type ErrorObject, type Options, type ValidateFunction } from 'ajv'
import addFormats from 'ajv-formats'
import type { FastifyInstance } from 'fastify'
import { findBadText } from '../../protocol/text.js'
import { compileTaggedUnion, taggedUnion } from './tagged-union.js'

type Validator = ((data: unknown, context?: Parameters<ValidateFunction>[1]) => boolean) & {
  errors?: ErrorObject[] | null
  schemaEnv?: unknown
}

/** `validate`, after a check of every string in the data. */
function textChecked(validate: Validator): Validator {
  const checked: Validator = (data, context) => {
    const bad = findBadText(data)
    if (bad !== null) {
      checked.errors = [{ instancePath: bad.path, schemaPath: '#', keyword: 'text', params: {}, message: bad.problem }]
      return false
    }
    const ok = validate(data, context)
    checked.errors = validate.errors ?? null
    return ok
  }
  // Fastify passes the parent object only to Ajv's own functions (so coercion can replace a root value).
  if (validate.schemaEnv !== undefined) checked.schemaEnv = validate.schemaEnv
  return checked
}

function ajv(options: Options): Ajv {
  const a = new Ajv({ removeAdditional: false, useDefaults: false, allErrors: false, strict: false, ...options })
  addFormats.default(a)
  return a
}

export function installValidation(app: FastifyInstance): void {
  const body = ajv({ coerceTypes: false })
  const text = ajv({ coerceTypes: 'array' })
  app.setValidatorCompiler(({ schema, httpPart }) => {
    if (httpPart !== 'body') return textChecked(text.compile(schema))
    const union = taggedUnion(schema)
    return textChecked(union === null ? body.compile(schema) : compileTaggedUnion(body, union))
  })
}
