// Teams: a name that tokens and workloads belong to (docs/api.md "Teams").
import type { Team } from '../../protocol/api.js'
import { StoreError } from './errors.js'
import { appendEvents } from './outbox.js'
import { transaction, type Client, type Pool } from './db.js'

interface TeamRow {
  id: string
  name: string
  created_at: Date
}

const toTeam = (r: TeamRow): Team => ({ id: r.id, name: r.name, createdAt: r.created_at.toISOString() })

export async function createTeam(pool: Pool, name: string): Promise<Team> {
  return await transaction(pool, async (c) => {
    const { rows } = await c.query<TeamRow>(
      'insert into teams (name) values ($1) on conflict (name) do nothing returning *',
      [name]
    )
    const row = rows[0]
    if (row === undefined) throw new StoreError('name-taken', `a team is already named ${name}`)
    await appendEvents(c, [{ type: 'team.created', subjectKind: 'team', subjectId: row.id, data: { name } }])
    return toTeam(row)
  })
}

/** Every team, by name; a team's own token sees only its team. */
export async function listTeams(pool: Pool, teamId: string | null): Promise<Team[]> {
  const { rows } = await pool.query<TeamRow>('select * from teams where ($1::uuid is null or id = $1) order by name', [
    teamId
  ])
  return rows.map(toTeam)
}

/** The id of the team named `name`; a name no team has is the caller's mistake. */
export async function teamIdOf(db: Pool | Client, name: string): Promise<string> {
  const { rows } = await db.query<{ id: string }>('select id from teams where name = $1', [name])
  const row = rows[0]
  if (row === undefined) throw new StoreError('unknown-team', `no team is named ${name} (gpumesh teams create ${name})`)
  return row.id
}
