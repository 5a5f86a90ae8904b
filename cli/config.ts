// Where the CLI finds the API and its token. On the coordinator's own machine
// an operator needs neither flag: the bootstrap admin token is in the state
// folder the coordinator wrote it to.
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { InvalidArgumentError, type Command } from 'commander'
import { ApiClient, CliError } from './client.js'
import { json } from './render.js'

export const DEFAULT_API = 'http://127.0.0.1:7470'
export const DEFAULT_STATE_DIR = '/var/lib/gpumesh/coordinator'

export interface GlobalFlags {
  api: string
  token?: string
  json?: boolean
  pageSize?: number
}

/** commander parser for --api / GPUMESH_API. */
export function apiUrl(value: string): string {
  let url: URL
  try {
    url = new URL(value)
  } catch {
    throw new InvalidArgumentError('expected an http(s) URL such as http://127.0.0.1:7470')
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:')
    throw new InvalidArgumentError('expected an http(s) URL such as http://127.0.0.1:7470')
  if (url.username !== '' || url.password !== '')
    throw new InvalidArgumentError('put the token in --token or GPUMESH_TOKEN, not in the URL')
  return value.replace(/\/+$/, '')
}

export function positiveInt(value: string): number {
  const n = Number(value)
  if (!/^\d+$/.test(value) || !Number.isSafeInteger(n) || n <= 0)
    throw new InvalidArgumentError('must be a positive integer')
  return n
}

export function adminTokenFile(env: NodeJS.ProcessEnv = process.env): string {
  const dir = env.GPUMESH_STATE_DIR
  return join(dir === undefined || dir === '' ? DEFAULT_STATE_DIR : dir, 'admin.token')
}

/** Tokens this process has seen, so that no error message can echo one. */
const secrets = new Set<string>()

export function redact(text: string): string {
  let out = text
  for (const s of secrets) if (s.length >= 4) out = out.split(s).join('<token>')
  return out
}

/** --token / GPUMESH_TOKEN, else the coordinator's bootstrap token file when this user may read it. */
export function resolveToken(flag: string | undefined, env: NodeJS.ProcessEnv = process.env): string {
  if (flag !== undefined && flag.trim() !== '') {
    secrets.add(flag.trim())
    return flag.trim()
  }
  const file = adminTokenFile(env)
  let token = ''
  let why = ''
  try {
    token = readFileSync(file, 'utf8').trim()
    if (token === '') why = 'it is empty'
  } catch (err) {
    why =
      (err as NodeJS.ErrnoException).code === 'ENOENT'
        ? 'it does not exist'
        : `cannot read it: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`
  }
  if (token !== '') {
    secrets.add(token)
    return token
  }
  throw new CliError(
    `no API token: pass --token or set GPUMESH_TOKEN (the coordinator's bootstrap admin token was looked for in ${file}, but ${why}; set GPUMESH_STATE_DIR if the coordinator keeps its state elsewhere)`
  )
}

export function clientFor(flags: GlobalFlags): ApiClient {
  return new ApiClient({
    api: flags.api,
    token: resolveToken(flags.token),
    ...(flags.pageSize === undefined ? {} : { pageSize: flags.pageSize })
  })
}

export interface Context {
  flags: GlobalFlags
  client: ApiClient
}

/** The global flags (wherever they were typed) and an API client made from them. */
export function contextOf(cmd: Command): Context {
  const flags = cmd.optsWithGlobals<GlobalFlags>()
  return { flags, client: clientFor(flags) }
}

/** Writes to stdout, waiting when the pipe is full (long lists and event streams). */
export async function write(text: string): Promise<void> {
  if (!process.stdout.write(text)) await new Promise<void>((resolve) => process.stdout.once('drain', resolve))
}

/** Prints `value` as JSON with --json, else as `human` renders it for people. */
export async function show<T>(cmd: Command, value: T, human: (value: T) => string): Promise<void> {
  await write(cmd.optsWithGlobals<GlobalFlags>().json === true ? json(value) : human(value))
}

/** The action of a listing command: every item of `path`, as a table or JSON. */
export function listAction<T>(
  path: string,
  table: (items: T[]) => string
): (_o: unknown, cmd: Command) => Promise<void> {
  return async (_o, cmd) => {
    await show(cmd, await contextOf(cmd).client.list<T>(path), table)
  }
}
