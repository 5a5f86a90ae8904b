// The admin API from the CLI's side: bearer auth, problem+json errors turned
// into one-line messages, cursor pagination followed to the end, and network
// failures told apart from API errors (they need a different fix).
import type { Problem } from '../protocol/api.js'

/** An error the CLI reports as one `error: ...` line and exit status 1. */
export class CliError extends Error {
  override name = 'CliError'
}

/** The API answered with a problem+json document. */
export class ProblemError extends CliError {
  constructor(readonly problem: Problem) {
    // The API repeats the title as the detail when it has nothing to add.
    const detail =
      problem.detail === undefined || problem.detail === '' || problem.detail === problem.title
        ? ''
        : `: ${problem.detail}`
    super(`${problem.title}${detail} [${problem.code}]`)
    this.name = 'ProblemError'
  }
}

/** An HTTP error without a problem+json body (a proxy, or not the coordinator at all). */
export class HttpError extends CliError {
  constructor(
    readonly status: number,
    message: string
  ) {
    super(message)
    this.name = 'HttpError'
  }
}

/** No HTTP answer at all: the address is wrong or the coordinator is down. */
export class UnreachableError extends CliError {
  constructor(
    readonly api: string,
    readonly reason: string
  ) {
    super(`cannot reach the coordinator at ${api} (${reason}); is gpumesh-coordinator running? set GPUMESH_API`)
    this.name = 'UnreachableError'
  }
}

export interface Page<T> {
  items: T[]
  nextCursor: string | null
}

export interface ClientOptions {
  api: string
  token: string
  /** Items per request when listing; the server's default when unset. */
  pageSize?: number
  /** Deadline for one request/response (not for event streams). */
  timeoutMs?: number
}

const DEFAULT_TIMEOUT_MS = 30_000

/** Why fetch failed, from undici's wrapped cause (ECONNREFUSED, ENOTFOUND, ...). */
export function networkReason(err: unknown): string {
  if (err instanceof Error && err.name === 'TimeoutError') return 'no answer in time'
  const cause = err instanceof Error ? (err as Error & { cause?: unknown }).cause : undefined
  const c = (cause ?? err) as { code?: unknown; message?: unknown; errors?: unknown }
  // Happy-eyeballs connects (localhost → ::1 and 127.0.0.1) fail as an AggregateError with an empty message.
  const first = Array.isArray(c.errors) ? (c.errors[0] as { message?: unknown } | undefined) : undefined
  const message =
    typeof c.message === 'string' && c.message !== ''
      ? c.message
      : typeof first?.message === 'string'
        ? first.message
        : ''
  if (message !== '') return message
  return typeof c.code === 'string' ? c.code : String(err)
}

function isProblem(v: unknown): v is Problem {
  const p = v as Partial<Problem> | null
  return typeof p === 'object' && p !== null && typeof p.title === 'string' && typeof p.code === 'string'
}

export class ApiClient {
  readonly api: string
  readonly #token: string
  readonly #pageSize: number | undefined
  readonly #timeoutMs: number

  constructor(options: ClientOptions) {
    this.api = options.api.replace(/\/+$/, '')
    this.#token = options.token
    this.#pageSize = options.pageSize
    this.#timeoutMs = options.timeoutMs ?? DEFAULT_TIMEOUT_MS
  }

  /** fetch with the bearer token; network failures become UnreachableError, HTTP errors stay responses. */
  async fetch(
    path: string,
    init: { method?: string; body?: unknown; headers?: Record<string, string>; signal?: AbortSignal } = {}
  ): Promise<Response> {
    const headers: Record<string, string> = {
      accept: 'application/json',
      ...init.headers,
      authorization: `Bearer ${this.#token}`
    }
    if (init.body !== undefined) headers['content-type'] = 'application/json'
    try {
      return await fetch(this.api + path, {
        method: init.method ?? 'GET',
        headers,
        signal: init.signal ?? AbortSignal.timeout(this.#timeoutMs),
        ...(init.body === undefined ? {} : { body: JSON.stringify(init.body) })
      })
    } catch (err) {
      // A caller's own abort (Ctrl-C, end of a stream) is not a connectivity problem.
      if (init.signal?.aborted === true) throw err
      throw new UnreachableError(this.api, networkReason(err))
    }
  }

  /** The error an unsuccessful response stands for: its problem+json, or the status and a bit of the body. */
  async errorFrom(res: Response): Promise<CliError> {
    const text = await res.text().catch(() => '')
    let body: unknown
    try {
      body = JSON.parse(text)
    } catch {}
    if (isProblem(body)) return new ProblemError(body)
    const snippet = text.replace(/\s+/g, ' ').trim().slice(0, 200)
    return new HttpError(
      res.status,
      `HTTP ${res.status} ${res.statusText} from ${this.api}${snippet === '' ? '' : `: ${snippet}`} (is GPUMESH_API the coordinator's admin API?)`
    )
  }

  async request<T>(method: string, path: string, body?: unknown): Promise<T> {
    const res = await this.fetch(path, { method, body })
    if (!res.ok) throw await this.errorFrom(res)
    try {
      return (await res.json()) as T
    } catch (err) {
      if (err instanceof Error && err.name === 'TimeoutError') throw new UnreachableError(this.api, networkReason(err))
      throw new CliError(
        `the answer to ${method} ${path} from ${this.api} is not JSON (is GPUMESH_API the coordinator's admin API?)`
      )
    }
  }

  get<T>(path: string): Promise<T> {
    return this.request<T>('GET', path)
  }

  /** Every item of a paginated list, following nextCursor through all pages. */
  async list<T>(path: string): Promise<T[]> {
    const items: T[] = []
    const seen = new Set<string>()
    let cursor: string | null = null
    for (;;) {
      const query = new URLSearchParams()
      if (this.#pageSize !== undefined) query.set('limit', String(this.#pageSize))
      if (cursor !== null) query.set('cursor', cursor)
      const qs = query.toString()
      const page = await this.get<Page<T>>(qs === '' ? path : `${path}?${qs}`)
      items.push(...page.items)
      if (page.nextCursor === null || page.nextCursor === undefined) return items
      // A server that hands back a cursor twice would loop forever.
      if (seen.has(page.nextCursor)) throw new CliError(`${path}: the API returned the same page cursor twice`)
      seen.add(page.nextCursor)
      cursor = page.nextCursor
    }
  }
}

/** Whether trying again later may succeed: no answer, or the server's own trouble (5xx). */
export function isTransient(err: unknown): boolean {
  if (err instanceof UnreachableError) return true
  if (err instanceof ProblemError) return err.problem.status >= 500
  if (err instanceof HttpError) return err.status >= 500
  return false
}
