// The gateway's token lookups, one statement per turn of the event loop: the
// calls that arrive in one turn are looked up together (token_hash =
// any($1)), so a busy gateway makes one round trip to PostgreSQL where it
// made one per call (most of PostgreSQL's and the pg client's time per call).
// Each call is still looked up in the table after it arrived, by a statement
// of its own turn, and nothing is kept after: a token revoked before a call
// arrives is not found for that call. There is no cache.
import type { Pool } from './db.js'
import type { Principal } from './tokens.js'

/** A turn's lookups in one statement at most; more go in another at once. */
const MAX_BATCH = 256

interface Waiter {
  resolve: (p: Principal | null) => void
  reject: (err: Error) => void
}

type Row = Principal & { token_hash: Buffer }

export class TokenLookups {
  /** This turn's lookups, by token hash (latin1: one char a byte). */
  private pending = new Map<string, { hash: Buffer; waiters: Waiter[] }>()
  private scheduled = false

  constructor(private readonly pool: Pool) {}

  /** The live (unrevoked) token with this hash, read after this call. */
  lookup(hash: Buffer): Promise<Principal | null> {
    return new Promise((resolve, reject) => {
      const key = hash.toString('latin1')
      const entry = this.pending.get(key)
      if (entry === undefined) this.pending.set(key, { hash, waiters: [{ resolve, reject }] })
      else entry.waiters.push({ resolve, reject })
      if (this.pending.size >= MAX_BATCH) this.flush()
      else if (!this.scheduled) {
        this.scheduled = true
        // After this turn's I/O callbacks: the calls read in this turn go together.
        setImmediate(this.onTurnEnd)
      }
    })
  }

  private readonly onTurnEnd = () => {
    this.scheduled = false
    this.flush()
  }

  private flush(): void {
    if (this.pending.size === 0) return
    const batch = this.pending
    this.pending = new Map()
    // A named statement: PostgreSQL plans it once per connection.
    this.pool
      .query<Row>({
        name: 'gpumesh-authenticate-batch',
        text: 'select token_hash, id, name, role, endpoints, team_id as "teamId" from api_tokens where token_hash = any($1::bytea[]) and revoked_at is null',
        values: [[...batch.values()].map((e) => e.hash)]
      })
      .then(
        ({ rows }) => {
          const found = new Map<string, Principal>()
          for (const r of rows)
            found.set(r.token_hash.toString('latin1'), {
              id: r.id,
              name: r.name,
              role: r.role,
              endpoints: r.endpoints,
              teamId: r.teamId
            })
          for (const [key, e] of batch) for (const w of e.waiters) w.resolve(found.get(key) ?? null)
        },
        (err: Error) => {
          for (const e of batch.values()) for (const w of e.waiters) w.reject(err)
        }
      )
  }
}

const lookups = new WeakMap<Pool, TokenLookups>()

/** The batched lookups of a pool (one per pool, made on first use). */
export function tokenLookups(pool: Pool): TokenLookups {
  let l = lookups.get(pool)
  if (l === undefined) {
    l = new TokenLookups(pool)
    lookups.set(pool, l)
  }
  return l
}
