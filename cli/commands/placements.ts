// gpumesh placements: which workload holds which GPUs on which host.
import type { Command } from 'commander'
import type { Placement, Workload } from '../../protocol/api.js'
import { contextOf, write } from '../config.js'
import { json, placementsTable } from '../render.js'

export function placementCommands(program: Command): void {
  program
    .command('placements')
    .description('list placements: workload, replica, host, GPU indices, state')
    .action(async (_o: unknown, cmd: Command) => {
      const { flags, client } = contextOf(cmd)
      if (flags.json === true) {
        await write(json(await client.list<Placement>('/v1/placements')))
        return
      }
      // Placements name their workload by id only; people want its name.
      const [placements, workloads] = await Promise.all([
        client.list<Placement>('/v1/placements'),
        client.list<Workload>('/v1/workloads')
      ])
      await write(placementsTable(placements, new Map(workloads.map((w) => [w.id, w.name]))))
    })
}
