// gpumesh hosts: list, inspect, and take hosts in and out of scheduling.
import type { Command } from 'commander'
import type { Host } from '../../protocol/api.js'
import { contextOf, listAction, show } from '../config.js'
import { hostDetail, hostsTable, shortId } from '../render.js'
import { resolveId } from '../resolve.js'

const ACTIONS = {
  cordon: 'stop placing new work on a host (running placements stay)',
  uncordon: 'make a cordoned or drained host schedulable again',
  drain: 'stop placing new work on a host and move its placements elsewhere'
} as const

const hostId = async (cmd: Command, ref: string): Promise<string> =>
  await resolveId<Host>(contextOf(cmd).client, 'host', '/v1/hosts', ref, (h) => h.name)

export function hostCommands(program: Command): void {
  const hosts = program
    .command('hosts')
    .description('list hosts (GPU servers): pool, state, free GPUs; subcommands act on one')
    .action(listAction<Host>('/v1/hosts', hostsTable))

  hosts
    .command('get')
    .description('one host with its facts (GPUs, links, NICs, disks)')
    .argument('<id>', 'host id, id prefix or name')
    .action(async (ref: string, _o: unknown, cmd: Command) => {
      const { client } = contextOf(cmd)
      const host = await client.get<Host>(`/v1/hosts/${encodeURIComponent(await hostId(cmd, ref))}`)
      await show(cmd, host, hostDetail)
    })

  for (const [action, description] of Object.entries(ACTIONS)) {
    hosts
      .command(action)
      .description(description)
      .argument('<id>', 'host id, id prefix or name')
      .option('--reason <text>', 'why, for the event log and `hosts get`')
      .action(async (ref: string, o: { reason?: string }, cmd: Command) => {
        const { client } = contextOf(cmd)
        const id = await hostId(cmd, ref)
        const host = await client.request<Host>(
          'POST',
          `/v1/hosts/${encodeURIComponent(id)}/${action}`,
          o.reason === undefined ? {} : { reason: o.reason }
        )
        await show(
          cmd,
          host,
          (host) =>
            `host ${host.name} (${shortId(host.id)}) is now ${host.state}${host.stateReason === null ? '' : `: ${host.stateReason}`}\n`
        )
      })
  }
}
