// gpumesh workloads: endpoints, recipe runs and sessions.
import type { Command } from 'commander'
import type { Workload } from '../../protocol/api.js'
import { contextOf, listAction, show } from '../config.js'
import { shortId, workloadDetail, workloadsTable } from '../render.js'
import { resolveId } from '../resolve.js'
import { parseSpec, readSpecText } from '../spec.js'

const workloadPath = (id: string) => `/v1/workloads/${encodeURIComponent(id)}`

export function workloadCommands(program: Command): void {
  const workloads = program
    .command('workloads')
    .description('list workloads: kind, state, placements (active/wanted), why pending')
    .action(listAction<Workload>('/v1/workloads', workloadsTable))

  workloads
    .command('get')
    .description('one workload with its spec and placements')
    .argument('<id>', 'workload id, id prefix or name')
    .action(async (ref: string, _o: unknown, cmd: Command) => {
      const { client } = contextOf(cmd)
      const id = await resolveId<Workload>(client, 'workload', '/v1/workloads', ref, (w) => w.name)
      const w = await client.get<Workload>(workloadPath(id))
      await show(cmd, w, workloadDetail)
    })

  workloads
    .command('create')
    .description('create a workload from a spec file (JSON or YAML, one spec per file)')
    .requiredOption('-f, --file <file>', 'the spec; - reads standard input')
    .addHelpText(
      'after',
      `
Spec examples (docs/api.md "Workload bodies"; gpus is per replica or per host):
  {"name":"chat","kind":"endpoint","replicas":2,"gpus":4,"pools":["h100-80gb-8x-nvlink"],"run":{"driver":"process","command":["python3","serve.py"]}}
  {"name":"sft","kind":"recipe","pool":"h100-80gb-8x-nvlink","hosts":2,"gpus":8,"run":{"driver":"process","command":["torchrun","train.py"]}}
  {"name":"dev","kind":"session","pool":"l40s-48gb-4x-pcie","gpus":1,"run":{"driver":"process","command":["bash"]}}`
    )
    .action(async (o: { file: string }, cmd: Command) => {
      // Parse before resolving the token, so a broken file is reported whatever the setup.
      const { text, source } = await readSpecText(o.file)
      const spec = parseSpec(text, source)
      const { client } = contextOf(cmd)
      const w = await client.request<Workload>('POST', '/v1/workloads', spec)
      await show(
        cmd,
        w,
        (w) => `workload ${w.name} created (id ${w.id}): ${w.state}${w.reason === null ? '' : ` (${w.reason})`}\n`
      )
    })

  workloads
    .command('delete')
    .description('delete a workload; its placements stop and release their GPUs')
    .argument('<id>', 'workload id, id prefix or name')
    .action(async (ref: string, _o: unknown, cmd: Command) => {
      const { client } = contextOf(cmd)
      const id = await resolveId<Workload>(client, 'workload', '/v1/workloads', ref, (w) => w.name)
      const w = await client.request<Workload>('DELETE', workloadPath(id))
      await show(cmd, w, (w) => `workload ${w.name} (${shortId(w.id)}) deleted\n`)
    })
}
