// Reverse-proxy header hygiene (RFC 9110 §7.6.1): hop-by-hop fields are the
// business of one connection and never cross the gateway, either way.
// Requests also lose Authorization (a gpumesh token, not the replica's
// business) and gain x-forwarded-for/-proto/-host and a request id.
import { randomUUID } from 'node:crypto'
import type { IncomingHttpHeaders } from 'node:http'

/** Always hop-by-hop, whatever Connection says (Proxy-* by prefix). */
const HOP_BY_HOP = new Set([
  'connection',
  'keep-alive',
  'te',
  'trailer',
  'transfer-encoding',
  'upgrade',
  'proxy-connection',
  'proxy-authorization',
  'proxy-authenticate'
])
/** Dropped from requests besides: the token, the 100-continue dance (the gateway answers it), the host (set anew). */
const REQUEST_ONLY = new Set(['authorization', 'expect', 'host'])

/** A request id we pass on unchanged: visible ASCII, of a sane length. */
const REQUEST_ID = /^[\x21-\x7e]{1,200}$/

/** The fields Connection names (its tokens), lower case. */
function namedByConnection(connection: string | string[] | undefined): Set<string> {
  const named = new Set<string>()
  if (connection === undefined) return named
  for (const value of Array.isArray(connection) ? connection : [connection])
    for (const token of value.split(',')) {
      const t = token.trim().toLowerCase()
      if (t !== '') named.add(t)
    }
  return named
}

/**
 * Copies raw header pairs (name, value, name, value...: as received, case
 * kept) without the hop-by-hop ones and those in `drop`.
 */
function endToEnd(raw: string[], connection: string | string[] | undefined, drop?: Set<string>): string[] {
  const named = namedByConnection(connection)
  const out: string[] = []
  for (let i = 0; i + 1 < raw.length; i += 2) {
    const name = (raw[i] as string).toLowerCase()
    if (HOP_BY_HOP.has(name) || name.startsWith('proxy-') || named.has(name) || drop?.has(name)) continue
    out.push(raw[i] as string, raw[i + 1] as string)
  }
  return out
}

export interface Forwarded {
  clientAddress: string
  secure: boolean
  /** What the replica's socket is to the gateway (its Host). */
  upstreamHost: string
}

/** The request id of a call: the client's when it sent a usable one, else a new one. */
export function requestIdOf(headers: IncomingHttpHeaders): string {
  const given = headers['x-request-id']
  return typeof given === 'string' && REQUEST_ID.test(given) ? given : randomUUID()
}

/** Headers (a flat name/value list) for the replica's request. */
export function upstreamRequestHeaders(
  raw: string[],
  headers: IncomingHttpHeaders,
  requestId: string,
  f: Forwarded
): string[] {
  const out = endToEnd(
    raw,
    headers.connection,
    new Set([...REQUEST_ONLY, 'x-request-id', 'x-forwarded-for', 'x-forwarded-proto', 'x-forwarded-host'])
  )
  const prior = headers['x-forwarded-for']
  const chain = prior === undefined ? '' : `${Array.isArray(prior) ? prior.join(', ') : prior}, `
  out.push(
    'host',
    f.upstreamHost,
    'x-forwarded-for',
    chain + f.clientAddress,
    'x-forwarded-proto',
    f.secure ? 'https' : 'http',
    'x-request-id',
    requestId
  )
  if (typeof headers.host === 'string') out.push('x-forwarded-host', headers.host)
  return out
}

/** Headers (a flat name/value list) for the client's response from the replica's. */
export function downstreamResponseHeaders(raw: string[], headers: IncomingHttpHeaders): string[] {
  return endToEnd(raw, headers.connection)
}

/** A headers object as a flat name/value list (for callers that have no raw list). */
export function flatten(headers: IncomingHttpHeaders): string[] {
  const out: string[] = []
  for (const [name, value] of Object.entries(headers)) {
    if (value === undefined) continue
    if (Array.isArray(value)) for (const v of value) out.push(name, v)
    else out.push(name, value)
  }
  return out
}
