// API tokens (bearer, with a role) and agent join tokens. Only SHA-256 hashes
// are stored; the token itself is shown once, at creation.
import { createHash, randomBytes } from 'node:crypto'
import { readFile, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import type { JoinToken, Role, Token, TokenInfo } from '../../protocol/api.js'
import { decodeCursor, page } from './cursor.js'
import { StoreError } from './errors.js'
import { sortTs } from './sql.js'
import { appendEvents, type NewEvent } from './outbox.js'
import { transaction, type Client, type Pool } from './db.js'
import { tokenLookups } from './token-lookups.js'
import { teamIdOf } from './teams.js'

export interface Principal {
  id: string
  name: string
  role: Role
  /** invoke tokens: the endpoints they may call; null for the other roles. */
  endpoints: string[] | null
  /** A team token's team (its id, for scoping); null for the cluster's tokens. */
  teamId: string | null
}

export const hashToken = (token: string): Buffer => createHash('sha256').update(token, 'utf8').digest()
const newToken = (prefix: string): string => `${prefix}_${randomBytes(32).toString('base64url')}`

export async function createApiToken(
  pool: Pool,
  role: Role,
  name: string,
  endpoints: string[] | null = null,
  team: string | null = null
): Promise<Token> {
  const token = newToken('gmt')
  const id = await transaction(pool, async (c) => {
    const teamId = team === null ? null : await teamIdOf(c, team)
    const { rows } = await c.query<{ id: string }>(
      'insert into api_tokens (name, role, token_hash, endpoints, team_id) values ($1, $2, $3, $4, $5) returning id',
      [name, role, hashToken(token), endpoints, teamId]
    )
    const id = (rows[0] as { id: string }).id
    await appendEvents(c, [
      {
        type: 'token.created',
        subjectKind: 'token',
        subjectId: id,
        data: { name, role, ...(endpoints === null ? {} : { endpoints }), ...(team === null ? {} : { team }) }
      }
    ])
    return id
  })
  return { id, name, role, endpoints, team, token }
}

interface TokenRow {
  id: string
  name: string
  role: Role
  endpoints: string[] | null
  team: string | null
  created_at: Date
  last_used_at: Date | null
  revoked_at: Date | null
  sort_ts: string
}

const iso = (d: Date | null): string | null => (d === null ? null : d.toISOString())

/** API tokens, revoked ones included, newest first; never their hashes. */
export async function listApiTokens(
  pool: Pool,
  limit: number,
  cursor?: string
): Promise<{ items: TokenInfo[]; nextCursor: string | null }> {
  const after = decodeCursor(cursor, ['string', 'string'])
  const { rows } = await pool.query<TokenRow>(
    `select k.id, k.name, k.role, k.endpoints, t.name as team, k.created_at, k.last_used_at, k.revoked_at,
       ${sortTs('k.created_at')} from api_tokens k left join teams t on t.id = k.team_id
     where ($1::timestamptz is null or (k.created_at, k.id) < ($1::timestamptz, $2::uuid))
     order by k.created_at desc, k.id desc limit $3`,
    [after?.[0] ?? null, after?.[1] ?? null, limit + 1]
  )
  return page(
    rows,
    limit,
    (r) => ({
      id: r.id,
      name: r.name,
      role: r.role,
      endpoints: r.endpoints,
      team: r.team,
      createdAt: r.created_at.toISOString(),
      lastUsedAt: iso(r.last_used_at),
      revokedAt: iso(r.revoked_at)
    }),
    (r) => [r.sort_ts, r.id]
  )
}

/**
 * Revokes an API token: its next request is refused (every request looks
 * the token up). Revoking a revoked token changes nothing and is no error.
 */
export async function revokeApiToken(pool: Pool, id: string): Promise<void> {
  await transaction(pool, async (c) => {
    const { rows } = await c.query<{ name: string; role: Role; revoked: boolean }>(
      `with target as (select id, revoked_at is not null as revoked from api_tokens where id = $1 for update)
       update api_tokens t set revoked_at = coalesce(t.revoked_at, now()) from target
       where t.id = target.id returning t.name, t.role, target.revoked`,
      [id]
    )
    const row = rows[0]
    if (row === undefined) throw new StoreError('not-found', `no API token has the id ${id}`)
    if (row.revoked) return
    await appendEvents(c, [
      { type: 'token.revoked', subjectKind: 'token', subjectId: id, data: { name: row.name, role: row.role } }
    ])
  })
}

const LAST_USED_EVERY_MS = 60_000
const lastUsedWritten = new Map<string, number>()

/** The principal a bearer token stands for, or null (unknown or revoked). */
export async function authenticate(pool: Pool, token: string): Promise<Principal | null> {
  // A named statement: every API request and every gateway call runs it, and PostgreSQL then plans it once per connection.
  const { rows } = await pool.query<Principal>({
    name: 'gpumesh-authenticate',
    text: 'select id, name, role, endpoints, team_id as "teamId" from api_tokens where token_hash = $1 and revoked_at is null',
    values: [hashToken(token)]
  })
  return noteUse(pool, rows[0] ?? null)
}

/** Passes `principal` through, its last_used_at written at most once a minute. */
function noteUse(pool: Pool, principal: Principal | null): Principal | null {
  // last_used_at is for people auditing tokens: a minute's precision spares a write per request.
  if (principal !== null && Date.now() - (lastUsedWritten.get(principal.id) ?? 0) > LAST_USED_EVERY_MS) {
    lastUsedWritten.set(principal.id, Date.now())
    pool.query('update api_tokens set last_used_at = now() where id = $1', [principal.id]).catch(() => {})
  }
  return principal
}

/** Roles that may call every endpoint through the gateway. */
const CALLS_ANY_ENDPOINT: readonly Role[] = ['admin', 'operator']

export type CallAuthorization =
  | { ok: true; principal: Principal }
  | { ok: false; status: 401 | 403 | 404; detail: string }

/** Whether a team's token may see endpoint of team `owner` at all (a cluster token sees every one). */
export const sees = (p: Principal, owner: string | null | undefined): boolean => p.teamId === null || p.teamId === owner

/**
 * Whether a principal may call an endpoint (owned by team `owner`) through the
 * gateway: a team's operator only its team's endpoints.
 */
export const mayCall = (p: Principal, endpoint: string, owner: string | null | undefined): boolean =>
  (CALLS_ANY_ENDPOINT.includes(p.role) && sees(p, owner)) ||
  (p.role === 'invoke' && (p.endpoints ?? []).includes(endpoint))

/**
 * The gateway's check, made on every call: one lookup of the token's hash
 * (unique index), never a cache, so a revoked token's next call is refused.
 * The calls of one event-loop turn share the statement (token-lookups.ts).
 */
export async function authorizeCall(
  pool: Pool,
  token: string | null,
  endpoint: string,
  owner: string | null | undefined
): Promise<CallAuthorization> {
  if (token === null) return { ok: false, status: 401, detail: 'send "Authorization: Bearer <token>"' }
  const principal = noteUse(pool, await tokenLookups(pool).lookup(hashToken(token)))
  if (principal === null) return { ok: false, status: 401, detail: 'unknown or revoked token' }
  // Another team's endpoint does not exist for this token, as on the API.
  if (!sees(principal, owner)) return { ok: false, status: 404, detail: `no endpoint named ${endpoint}` }
  if (!mayCall(principal, endpoint, owner))
    return {
      ok: false,
      status: 403,
      detail: `token ${principal.name} (${principal.role}) may not call endpoint ${endpoint}`
    }
  return { ok: true, principal }
}

/**
 * The hash of the bootstrap token this coordinator applied last. Kept per
 * coordinator (not per database): coordinators sharing a database each have
 * their own, and one must not revoke another's.
 */
const APPLIED_FILE = 'bootstrap-token.sha256'

/**
 * The bootstrap admin token: GPUMESH_ADMIN_TOKEN when set, else the one in
 * <state>/admin.token, generated (0600) on first start. When it differs from
 * the one this coordinator applied before, that one is revoked: changing
 * GPUMESH_ADMIN_TOKEN (a leaked token) takes the old one away.
 */
export async function ensureBootstrapToken(
  pool: Pool,
  stateDir: string,
  fromEnv: string | undefined
): Promise<{ token: string; file: string | null }> {
  let token = fromEnv
  let file: string | null = null
  if (token === undefined || token === '') {
    file = join(stateDir, 'admin.token')
    try {
      token = (await readFile(file, 'utf8')).trim()
    } catch {
      token = newToken('gmt')
      await writeFile(file, `${token}\n`, { mode: 0o600, flag: 'wx' })
    }
  }
  const hash = hashToken(token)
  const appliedFile = join(stateDir, APPLIED_FILE)
  const applied = await readFile(appliedFile, 'utf8').then(
    (text) => text.trim(),
    () => null
  )
  await transaction(pool, async (c) => {
    // The configured token is valid even when it was revoked before (a change undone).
    await c.query(
      `insert into api_tokens (name, role, token_hash) values ('bootstrap', 'admin', $1)
       on conflict (token_hash) do update set revoked_at = null where api_tokens.name = 'bootstrap'`,
      [hash]
    )
    if (applied === null || applied === hash.toString('hex')) return
    const { rows } = await c.query<{ id: string }>(
      `update api_tokens set revoked_at = now() where token_hash = $1 and name = 'bootstrap' and revoked_at is null returning id`,
      [Buffer.from(applied, 'hex')]
    )
    await appendEvents(
      c,
      rows.map((r) => ({
        type: 'token.revoked',
        subjectKind: 'token',
        subjectId: r.id,
        data: { name: 'bootstrap', reason: 'the configured bootstrap token changed' }
      }))
    )
  })
  await writeFile(appliedFile, `${hash.toString('hex')}\n`, { mode: 0o600 })
  return { token, file }
}

export async function createJoinToken(
  pool: Pool,
  poolKey: string | null,
  ttlSeconds: number,
  uses = 1
): Promise<JoinToken> {
  const token = newToken('gmj')
  const row = await transaction(pool, async (c) => {
    const { rows } = await c.query<{ id: string; expires_at: Date }>(
      `insert into join_tokens (pool_key, token_hash, expires_at, uses) values ($1, $2, now() + make_interval(secs => $3), $4) returning id, expires_at`,
      [poolKey, hashToken(token), ttlSeconds, uses]
    )
    const r = rows[0] as { id: string; expires_at: Date }
    await appendEvents(c, [
      {
        type: 'join-token.created',
        subjectKind: 'join-token',
        subjectId: r.id,
        data: { pool: poolKey, expiresAt: r.expires_at.toISOString(), uses }
      }
    ])
    return r
  })
  return { id: row.id, token, expiresAt: row.expires_at.toISOString(), pool: poolKey, uses }
}

export interface JoinTokenUse {
  id: string
  poolKey: string | null
  usesLeft: number
}

/**
 * Takes one use of a join token inside the enrolling transaction, or returns
 * null (unknown, expired or used up). One conditional update: of agents
 * racing for a token's last use, exactly one gets it; a rollback gives it back.
 */
export async function takeJoinTokenUse(c: Client, token: string, peerId: string): Promise<JoinTokenUse | null> {
  const { rows } = await c.query<{ id: string; pool_key: string | null; left: number }>(
    `update join_tokens set used = used + 1, used_at = now(), used_by_peer = $2
     where token_hash = $1 and used < uses and expires_at > now()
     returning id, pool_key, uses - used as left`,
    [hashToken(token), peerId]
  )
  const r = rows[0]
  return r === undefined ? null : { id: r.id, poolKey: r.pool_key, usesLeft: r.left }
}

/** Records which host the use enrolled; the caller appends the returned event. */
export async function joinTokenUsed(c: Client, use: JoinTokenUse, hostId: string, peerId: string): Promise<NewEvent> {
  await c.query('update join_tokens set used_by_host = $2 where id = $1', [use.id, hostId])
  return {
    type: 'join-token.used',
    subjectKind: 'join-token',
    subjectId: use.id,
    data: { host: hostId, peer: peerId, usesLeft: use.usesLeft }
  }
}
