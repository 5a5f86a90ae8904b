// Request validation with two Ajv instances: query strings, params and
// headers are text, so numbers in them are coerced; bodies are JSON, where a
// "4" for 4 is a client bug and is refused. Unknown properties are refused
// everywhere (additionalProperties: false in protocol/), never dropped. A
// body that is a tagged union is checked against its tag's schema alone.
import { Ajv, type Options } from 'ajv'
import addFormats from 'ajv-formats'
import type { FastifyInstance } from 'fastify'
import { compileTaggedUnion, taggedUnion } from './tagged-union.js'

function ajv(options: Options): Ajv {
  const a = new Ajv({ removeAdditional: false, useDefaults: false, allErrors: false, strict: false, ...options })
  addFormats.default(a)
  return a
}

export function installValidation(app: FastifyInstance): void {
  const body = ajv({ coerceTypes: false })
  const text = ajv({ coerceTypes: 'array' })
  app.setValidatorCompiler(({ schema, httpPart }) => {
    if (httpPart !== 'body') return text.compile(schema)
    const union = taggedUnion(schema)
    return union === null ? body.compile(schema) : compileTaggedUnion(body, union)
  })
}
