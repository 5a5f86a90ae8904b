// gpumesh tokens / join-token: secrets the API shows exactly once, so they
// go to stdout alone on their line, easy to copy and easy to capture.
import { Option, type Command } from 'commander'
import {
  MAX_JOIN_TOKEN_USES,
  type JoinToken,
  type Role,
  type Team,
  type Token,
  type TokenInfo
} from '../../protocol/api.js'
import { contextOf, listAction, positiveInt, write } from '../config.js'
import { json, teamsTable, tokensTable, when } from '../render.js'
import { resolveId } from '../resolve.js'

const ROLES: Role[] = ['admin', 'operator', 'viewer', 'invoke']
const collect = (value: string, previous: string[] = []): string[] => [...previous, value]

export function tokenCommands(program: Command): void {
  const tokens = program.command('tokens').description('API tokens for people and scripts')
  tokens
    .command('create')
    .description('create an API token; it is printed once and cannot be shown again')
    .addOption(
      new Option(
        '--role <role>',
        'admin (everything), operator (workloads, hosts, pools), viewer (read only) or invoke (call the --endpoint ones through the gateway)'
      )
        .choices(ROLES)
        .makeOptionMandatory()
    )
    .requiredOption('--name <name>', 'who or what uses it, e.g. ci')
    .option('--endpoint <name>', 'invoke tokens: an endpoint it may call (repeat for more)', collect)
    .option('--team <name>', "operator and viewer tokens: see and change only this team's workloads")
    .action(async (o: { role: Role; name: string; endpoint?: string[]; team?: string }, cmd: Command) => {
      const { flags, client } = contextOf(cmd)
      const t = await client.request<Token>('POST', '/v1/tokens', {
        role: o.role,
        name: o.name,
        ...(o.endpoint === undefined ? {} : { endpoints: o.endpoint }),
        ...(o.team === undefined ? {} : { team: o.team })
      })
      const may = `${t.endpoints === null ? '' : ` for ${t.endpoints.join(', ')}`}${t.team === null ? '' : ` of team ${t.team}`}`
      await write(
        flags.json === true
          ? json(t)
          : `Created ${t.role} token ${JSON.stringify(t.name)}${may} (id ${t.id}).\nCopy it now; it is not shown again:\n\n    ${t.token}\n\nUse it with: GPUMESH_TOKEN=<token> gpumesh ...\n`
      )
    })
  tokens
    .command('list')
    .description('list API tokens, revoked ones included, newest first (never their secrets)')
    .action(listAction<TokenInfo>('/v1/tokens', tokensTable))
  tokens
    .command('revoke')
    .description(
      "revoke an API token: its next request is refused; give its id (or a unique id prefix or name from 'tokens list')"
    )
    .argument('<token>', 'id, id prefix or name')
    .action(async (ref: string, _o: unknown, cmd: Command) => {
      const { client } = contextOf(cmd)
      const id = await resolveId<TokenInfo>(client, 'token', '/v1/tokens', ref, (t) => t.name)
      await client.fetch(`/v1/tokens/${id}`, { method: 'DELETE' }).then(async (res) => {
        if (!res.ok) throw await client.errorFrom(res)
      })
      await write(`Revoked token ${id}.\n`)
    })

  const teams = program.command('teams').description("teams: a team's tokens see and change its workloads only")
  teams
    .command('create')
    .description('create a team (admin); then: gpumesh tokens create --team <name> ...')
    .argument('<name>', 'lowercase letters, digits and dashes')
    .action(async (name: string, _o: unknown, cmd: Command) => {
      const { flags, client } = contextOf(cmd)
      const team = await client.request<Team>('POST', '/v1/teams', { name })
      await write(flags.json === true ? json(team) : `Created team ${team.name} (id ${team.id}).\n`)
    })
  teams
    .command('ls')
    .alias('list')
    .description("list teams (a team's token sees its own)")
    .action(listAction<Team>('/v1/teams', teamsTable))

  const join = program.command('join-token').description('tokens that let new agents join the cluster')
  join
    .command('create')
    .description('create a join token; it is printed once and cannot be shown again')
    .option('--pool <key>', 'bind the joining host to this pool')
    .option('--ttl <seconds>', 'how long it stays valid (60 to 2592000; default 86400)', positiveInt)
    .option('--uses <n>', `how many hosts may enroll with it (1 to ${MAX_JOIN_TOKEN_USES}; default 1)`, positiveInt)
    .action(async (o: { pool?: string; ttl?: number; uses?: number }, cmd: Command) => {
      const { flags, client } = contextOf(cmd)
      const body = {
        ...(o.pool === undefined ? {} : { pool: o.pool }),
        ...(o.ttl === undefined ? {} : { ttlSeconds: o.ttl }),
        ...(o.uses === undefined ? {} : { uses: o.uses })
      }
      const t = await client.request<JoinToken>('POST', '/v1/join-tokens', body)
      await write(
        flags.json === true
          ? json(t)
          : `Created join token ${t.id}${t.pool === null ? '' : ` for pool ${t.pool}`}${t.uses === 1 ? '' : ` (good for ${t.uses} hosts)`}, valid until ${when(t.expiresAt)}.\nCopy it now; it is not shown again:\n\n    ${t.token}\n\nOn the new host: GPUMESH_JOIN_TOKEN=<token> gpumesh-agent\n`
      )
    })
}
