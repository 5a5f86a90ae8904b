// gpumesh pools: capacity per pool, and the operator's settings (kind, labels).
import { InvalidArgumentError, Option, type Command } from 'commander'
import type { Pool, PoolKind, PoolPatch } from '../../protocol/api.js'
import { contextOf, listAction, show } from '../config.js'
import { poolDetail, poolsTable } from '../render.js'

const KINDS: PoolKind[] = ['static', 'inference', 'training']

/** `k=v` sets a label, `k-` removes it (kubectl's spelling). */
type LabelEdit = { key: string; value: string | null }

function labelEdit(value: string, previous: LabelEdit[] = []): LabelEdit[] {
  const set = /^([^=\s]+)=(.*)$/s.exec(value)
  const remove = /^([^=\s]+)-$/.exec(value)
  if (set !== null) return [...previous, { key: set[1] as string, value: set[2] as string }]
  if (remove !== null) return [...previous, { key: remove[1] as string, value: null }]
  throw new InvalidArgumentError('expected key=value (set) or key- (remove)')
}

const poolPath = (key: string) => `/v1/pools/${encodeURIComponent(key)}`

export function poolCommands(program: Command): void {
  const pools = program
    .command('pools')
    .description('list pools: kind, hosts, ready hosts, free/total GPUs, largest free block on one host')
    .action(listAction<Pool>('/v1/pools', poolsTable))

  pools
    .command('get')
    .description('one pool with its hosts')
    .argument('<key>', 'pool key, e.g. h100-80gb-8x-nvlink')
    .action(async (key: string, _o: unknown, cmd: Command) => {
      const { client } = contextOf(cmd)
      const pool = await client.get<Pool>(poolPath(key))
      await show(cmd, pool, poolDetail)
    })

  pools
    .command('set')
    .description("set a pool's kind (which workloads it runs) or labels; other labels are kept")
    .argument('<key>', 'pool key')
    .addOption(
      new Option(
        '--kind <kind>',
        'static (anything), inference (endpoints, sessions) or training (recipes, sessions)'
      ).choices(KINDS)
    )
    .option('--label <key=value>', 'set a label (repeatable); key- removes it', labelEdit)
    .action(async (key: string, o: { kind?: PoolKind; label?: LabelEdit[] }, cmd: Command) => {
      if (o.kind === undefined && o.label === undefined)
        cmd.error('error: nothing to set: give --kind and/or --label', { exitCode: 2, code: 'gpumesh.nothingToSet' })
      const { client } = contextOf(cmd)
      const patch: PoolPatch = {}
      if (o.kind !== undefined) patch.kind = o.kind
      if (o.label !== undefined) {
        // The API replaces the whole label map; merge so that one --label does not wipe the others.
        const labels = { ...(await client.get<Pool>(poolPath(key))).labels }
        for (const e of o.label) {
          if (e.value === null) delete labels[e.key]
          else labels[e.key] = e.value
        }
        patch.labels = labels
      }
      const pool = await client.request<Pool>('PATCH', poolPath(key), patch)
      await show(cmd, pool, poolDetail)
    })
}
