// gpumesh workloads: endpoints, recipe runs and sessions.
import { isDeepStrictEqual } from 'node:util'
import type { Command } from 'commander'
import type { Workload, WorkloadPatch } from '../../protocol/api.js'
import { CliError } from '../client.js'
import { contextOf, listAction, positiveInt, show } from '../config.js'
import { shortId, workloadDetail, workloadsTable } from '../render.js'
import { resolveId } from '../resolve.js'
import { parseSpec, readSpecText } from '../spec.js'

const workloadPath = (id: string) => `/v1/workloads/${encodeURIComponent(id)}`

/** PATCHes an endpoint and says what changed: replicas, the spec fields rolled, the generation. */
async function patchAndShow(cmd: Command, ref: string, patch: WorkloadPatch): Promise<void> {
  const { client } = contextOf(cmd)
  const id = await resolveId<Workload>(client, 'workload', '/v1/workloads', ref, (w) => w.name)
  const before = await client.get<Workload>(workloadPath(id))
  const after = await client.request<Workload>('PATCH', workloadPath(id), patch)
  await show(cmd, after, (w) => `workload ${w.name} (${shortId(w.id)}): ${changes(before, w).join('; ')}\n`)
}

function changes(before: Workload, after: Workload): string[] {
  const out: string[] = []
  const replicas = (w: Workload) => (w.spec.kind === 'endpoint' ? w.spec.replicas : 1)
  if (replicas(before) !== replicas(after)) out.push(`replicas ${replicas(before)} -> ${replicas(after)}`)
  const rolled = (['run', 'serve'] as const).filter(
    (k) => !isDeepStrictEqual((before.spec as Record<string, unknown>)[k], (after.spec as Record<string, unknown>)[k])
  )
  if (after.generation !== before.generation)
    out.push(`${rolled.join(' and ')} changed: rolling from generation ${before.generation} to ${after.generation}`)
  return out.length === 0 ? ['unchanged'] : out
}

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
    .command('scale')
    .description('set the replicas of an endpoint: missing ones are placed, extra ones drained and stopped')
    .argument('<workload>', 'workload id, id prefix or name')
    .argument('<replicas>', 'replicas wanted', positiveInt)
    .action(async (ref: string, replicas: number, _o: unknown, cmd: Command) => {
      await patchAndShow(cmd, ref, { replicas })
    })

  workloads
    .command('update')
    .description('roll an endpoint to a new run and/or serve: one new replica, ready, then one old one stopped')
    .requiredOption(
      '-f, --file <file>',
      'JSON or YAML holding run and/or serve (other fields are not read); - reads standard input'
    )
    .argument('<workload>', 'workload id, id prefix or name')
    .action(async (ref: string, o: { file: string }, cmd: Command) => {
      const { text, source } = await readSpecText(o.file)
      const spec = parseSpec(text, source)
      const patch = {
        ...(spec.run === undefined ? {} : { run: spec.run }),
        ...(spec.serve === undefined ? {} : { serve: spec.serve })
      } as WorkloadPatch
      if (patch.run === undefined && patch.serve === undefined)
        throw new CliError(`${source}: holds neither run nor serve; nothing to update`)
      await patchAndShow(cmd, ref, patch)
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
