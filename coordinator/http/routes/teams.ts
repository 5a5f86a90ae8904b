// Teams (docs/api.md "Teams"): admins create them; a team's token sees its
// own team only.
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import { Page, Team, TeamCreate } from '../../../protocol/api.js'
import type { Pool } from '../../store/db.js'
import { createTeam, listTeams } from '../../store/teams.js'
import { scopeOf } from '../auth.js'
import { responses } from '../schemas.js'

export const teamRoutes =
  (pool: Pool): FastifyPluginAsyncTypebox =>
  async (app) => {
    app.post(
      '/v1/teams',
      {
        config: { role: 'admin' },
        schema: {
          operationId: 'createTeam',
          tags: ['teams'],
          summary: 'Create a team; tokens created with its name see and change its workloads only',
          body: TeamCreate,
          response: responses({ 201: Team }, 409, 413, 415)
        }
      },
      async (req, reply) => reply.code(201).send(await createTeam(pool, req.body.name))
    )

    app.get(
      '/v1/teams',
      {
        schema: {
          operationId: 'listTeams',
          tags: ['teams'],
          summary: "Teams by name (a team's token sees its own)",
          response: responses({ 200: Page(Team) })
        }
      },
      // Teams are few: one page.
      async (req) => ({ items: await listTeams(pool, scopeOf(req).teamId), nextCursor: null })
    )
  }
