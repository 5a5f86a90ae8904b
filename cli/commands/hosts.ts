// gpumesh hosts: list, inspect, and take hosts in and out of scheduling.
import type { Command } from 'commander'
import type { Host, HostGpu } from '../../protocol/api.js'
import { CliError } from '../client.js'
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
    .description('list hosts (GPU servers): pool, state, free GPUs, failed or degraded GPUs; subcommands act on one')
    .action(listAction<Host>('/v1/hosts', hostsTable))

  hosts
    .command('get')
    .description('one host: its GPUs with health and live usage, and its facts (links, NICs, disks)')
    .argument('<id>', 'host id, id prefix or name')
    .action(async (ref: string, _o: unknown, cmd: Command) => {
      const { client } = contextOf(cmd)
      const host = await client.get<Host>(`/v1/hosts/${encodeURIComponent(await hostId(cmd, ref))}`)
      await show(cmd, host, hostDetail)
    })

  hosts
    .command('clear-health')
    .description("clear a GPU's failed health after repair (admin): logged XIDs and ECC errors stop failing it")
    .argument('<host>', 'host id, id prefix or name')
    .argument('<gpu>', 'GPU index')
    .action(async (ref: string, gpu: string, _o: unknown, cmd: Command) => {
      if (!/^\d{1,4}$/.test(gpu))
        throw new CliError(`<gpu> must be a GPU index (0, 1, ...), not ${JSON.stringify(gpu)}`)
      const { client } = contextOf(cmd)
      const id = await hostId(cmd, ref)
      const after = await client.request<HostGpu>(
        'POST',
        `/v1/hosts/${encodeURIComponent(id)}/gpus/${gpu}/clear-health`
      )
      await show(cmd, after, (g) => {
        const health = g.health === null ? 'unknown' : g.health.state
        const reasons = g.health === null || g.health.reasons.length === 0 ? '' : ` (${g.health.reasons.join(', ')})`
        return `GPU ${g.index} of host ${ref} cleared: now ${health}${reasons}\n`
      })
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
