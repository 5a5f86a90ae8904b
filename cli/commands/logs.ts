// gpumesh logs <workload|placement>: a placement's output, read from its
// host through the coordinator (GET /v1/placements/:id/logs). For a workload,
// the latest placement of each replica; with several, each line is prefixed
// by its replica (`chat-0 | ...`), as `docker compose logs` does. -f keeps
// following until the placements end (or Ctrl-C).
import { type Command, InvalidArgumentError } from 'commander'
import type { Placement, Workload } from '../../protocol/api.js'
import type { LogStream } from '../../protocol/logs.js'
import { type ApiClient, CliError, networkReason } from '../client.js'
import { contextOf, write } from '../config.js'
import { shortId } from '../render.js'

interface LogsOptions {
  follow?: boolean
  replica?: number
  tail?: number
  stderr?: boolean
  both?: boolean
}

interface Target {
  placement: Placement
  /** Line prefix (several replicas), or null (one placement: its bytes as they are). */
  label: string | null
}

function wholeNumber(value: string): number {
  const n = Number(value)
  if (!/^\d+$/.test(value) || !Number.isSafeInteger(n)) throw new InvalidArgumentError('must be a whole number')
  return n
}

export function logCommands(program: Command): void {
  program
    .command('logs <workload-or-placement>')
    .description(
      "a workload's or placement's output (id, id prefix or name); for a workload, the latest placement of each replica"
    )
    .option('-f, --follow', 'keep printing new output until the placements end (Ctrl-C stops)')
    .option('--replica <n>', "only this replica's placement (0, 1, ...)", wholeNumber)
    .option('--tail <lines>', 'only the last N lines (per placement and stream)', wholeNumber)
    .option('--stderr', 'stderr instead of stdout')
    .option('--both', 'stdout and stderr, interleaved line by line')
    .action(async (ref: string, o: LogsOptions, cmd: Command) => {
      const { client } = contextOf(cmd)
      if (o.stderr === true && o.both === true) throw new CliError('give --stderr or --both, not both')
      const stream: LogStream = o.both === true ? 'both' : o.stderr === true ? 'stderr' : 'stdout'
      const query = new URLSearchParams({ stream, follow: String(o.follow === true) })
      if (o.tail !== undefined) query.set('tail', String(o.tail))
      const targets = await targetsOf(client, ref, o.replica)
      // One log that fails ends the others: the command reports it and exits.
      const all = new AbortController()
      try {
        await Promise.all(targets.map((t) => print(client, t, query, all.signal)))
      } catch (err) {
        all.abort()
        throw err
      }
    })
}

/** The placements `ref` names: one placement, or a workload's latest of each replica. */
async function targetsOf(client: ApiClient, ref: string, replica: number | undefined): Promise<Target[]> {
  const workloads = await client.list<Workload>('/v1/workloads')
  const w = unique(workloads, ref, (x) => x.name, 'workload')
  if (w === undefined) {
    const p = unique(await client.list<Placement>('/v1/placements'), ref, () => null, 'placement')
    if (p === undefined) throw new CliError(`no workload or placement has the id or name ${JSON.stringify(ref)}`)
    return [{ placement: p, label: null }]
  }
  const latest = new Map<number, Placement>()
  for (const p of w.placements)
    if (replica === undefined || p.replica === replica) {
      const seen = latest.get(p.replica)
      if (seen === undefined || seen.createdAt < p.createdAt) latest.set(p.replica, p)
    }
  const chosen = [...latest.values()].sort((a, b) => a.replica - b.replica)
  if (chosen.length === 0)
    throw new CliError(
      replica === undefined
        ? `${w.name} has no placements yet (${w.reason ?? w.state})`
        : `${w.name} has no replica ${replica}`
    )
  return chosen.map((p) => ({ placement: p, label: chosen.length > 1 ? `${w.name}-${p.replica}` : null }))
}

/** The one item whose name or id is `ref`, or whose id starts with it; undefined when none; an error when several. */
function unique<T extends { id: string }>(
  items: T[],
  ref: string,
  nameOf: (item: T) => string | null,
  what: string
): T | undefined {
  const exact = items.filter((i) => i.id === ref.toLowerCase() || nameOf(i) === ref)
  const matches =
    exact.length > 0 ? exact : /^[0-9a-f-]+$/i.test(ref) ? items.filter((i) => i.id.startsWith(ref.toLowerCase())) : []
  if (matches.length > 1)
    throw new CliError(
      `${JSON.stringify(ref)} matches ${matches.length} ${what}s (${matches
        .slice(0, 5)
        .map((i) => shortId(i.id))
        .join(', ')}); give the full id`
    )
  return matches[0]
}

/** Copies one placement's log to stdout, each line prefixed when it has a label. */
async function print(client: ApiClient, t: Target, query: URLSearchParams, signal: AbortSignal): Promise<void> {
  const path = `/v1/placements/${t.placement.id}/logs?${query.toString()}`
  // No deadline: a followed log lasts as long as the placement.
  const res = await client.fetch(path, { headers: { accept: 'text/plain' }, signal })
  if (!res.ok) throw await client.errorFrom(res)
  if (res.body === null) return
  const decoder = new TextDecoder()
  let partial = ''
  const prefix = (text: string) => text.replace(/^/gm, `${t.label} | `)
  try {
    for await (const chunk of res.body) {
      if (t.label === null) {
        await writeBytes(chunk)
        continue
      }
      const text = partial + decoder.decode(chunk, { stream: true })
      const end = text.lastIndexOf('\n') + 1
      partial = text.slice(end)
      if (end > 0) await write(`${prefix(text.slice(0, end - 1))}\n`)
    }
  } catch (err) {
    throw new CliError(`the log of placement ${shortId(t.placement.id)} ended early (${networkReason(err)})`)
  }
  const rest = partial + decoder.decode()
  if (t.label !== null && rest !== '') await write(`${prefix(rest)}\n`)
}

/** Writes bytes as they came (a log is not always UTF-8), waiting when the pipe is full. */
async function writeBytes(chunk: Uint8Array): Promise<void> {
  if (!process.stdout.write(chunk)) await new Promise<void>((resolve) => process.stdout.once('drain', resolve))
}
