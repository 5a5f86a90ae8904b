// How API resources look to people. Scripts use --json, which prints the
// resources exactly as the API sent them, so nothing here is a contract.
import type { Event, Host, HostGpu, Placement, Pool, Team, TokenInfo, Workload } from '../protocol/api.js'
import { renderFacts } from '../common/render-facts.js'
import { table } from '../common/table.js'

/** Placement states that no longer hold GPUs. */
const FINISHED = new Set(['exited', 'failed', 'stopped', 'lost'])

export const shortId = (id: string): string => id.slice(0, 8)

export function json(value: unknown): string {
  return `${JSON.stringify(value, null, 2)}\n`
}

export function truncate(s: string, max: number): string {
  const one = s.replace(/\s+/g, ' ')
  return one.length <= max ? one : `${one.slice(0, max - 1)}…`
}

/** "42s", "5m", "3h", "12d": how long ago `iso` was, relative to `now`. */
export function ago(iso: string, now = Date.now()): string {
  const s = Math.max(0, Math.round((now - Date.parse(iso)) / 1000))
  if (Number.isNaN(s)) return '?'
  if (s < 120) return `${s}s`
  if (s < 7200) return `${Math.floor(s / 60)}m`
  if (s < 2 * 86400) return `${Math.floor(s / 3600)}h`
  return `${Math.floor(s / 86400)}d`
}

/** An ISO timestamp to the second, UTC ("2025-01-31 12:00:00Z"). */
export function when(iso: string): string {
  const d = new Date(iso)
  return Number.isNaN(d.getTime())
    ? iso
    : d
        .toISOString()
        .replace('T', ' ')
        .replace(/\.\d+Z$/, 'Z')
}

const gpuIndices = (gpus: number[]): string => (gpus.length === 0 ? '-' : gpus.join(','))

function withBlock(text: string, body: string): string {
  return `${text}\n${body
    .split('\n')
    .map((l) => (l === '' ? l : `  ${l}`))
    .join('\n')}`
}

function fields(rows: Array<[string, string | number | null]>): string {
  const width = Math.max(...rows.map(([k]) => k.length)) + 2
  return rows.map(([k, v]) => `${`${k}:`.padEnd(width)}${v === null || v === '' ? '-' : v}`).join('\n')
}

export function hostsTable(hosts: Host[], now = Date.now()): string {
  return `${table(
    ['ID', 'NAME', 'POOL', 'STATE', 'GPUS FREE', 'GPU HEALTH', 'AGENT', 'LAST SEEN'],
    hosts.map((h) => [
      shortId(h.id),
      h.name,
      h.pool,
      h.state,
      `${h.freeGpus.length}/${h.gpuCount}`,
      gpuHealthSummary(h.gpus),
      h.agentVersion,
      `${ago(h.lastSeenAt, now)} ago`
    ])
  )}\n`
}

export function hostDetail(h: Host, now = Date.now()): string {
  const head = fields([
    ['ID', h.id],
    ['Name', h.name],
    ['Peer', h.peerId],
    ['Pool', h.pool],
    ['State', h.stateReason === null ? h.state : `${h.state} (${h.stateReason})`],
    ['Conditions', h.conditions.length === 0 ? null : h.conditions.map((c) => `${c.type} (${c.detail})`).join('; ')],
    ['GPUs free', `${h.freeGpus.length}/${h.gpuCount}${h.freeGpus.length === 0 ? '' : ` [${gpuIndices(h.freeGpus)}]`}`],
    ['Agent', h.agentVersion],
    ['Registered', when(h.registeredAt)],
    ['Last seen', `${when(h.lastSeenAt)} (${ago(h.lastSeenAt, now)} ago)`]
  ])
  const gpus = h.gpus.length === 0 ? '' : `${withBlock('GPUs', gpuTable(h.gpus))}\n`
  return `${head}\n\n${gpus}${withBlock('Facts', renderFacts(h.facts))}`
}

/** "ok", or which GPUs are failed or degraded ("failed 3; degraded 1,5"); "-" before any agent reported. */
export function gpuHealthSummary(gpus: HostGpu[]): string {
  if (gpus.every((g) => g.health === null)) return '-'
  const of = (state: string) => gpus.filter((g) => g.health?.state === state).map((g) => g.index)
  const parts = (['failed', 'degraded'] as const).flatMap((s) => {
    const list = of(s)
    return list.length === 0 ? [] : [`${s} ${list.join(',')}`]
  })
  return parts.length === 0 ? 'ok' : parts.join('; ')
}

const num = (v: number | null | undefined, unit: string, digits = 0): string =>
  v === null || v === undefined ? '-' : `${v.toFixed(digits)}${unit}`

function gpuTable(gpus: HostGpu[]): string {
  return table(
    ['GPU', 'MODEL', 'HEALTH', 'REASONS', 'UTIL', 'MEM USED', 'TEMP', 'POWER'],
    gpus.map((g) => [
      g.index,
      g.model,
      g.health?.state ?? '-',
      g.health === null || g.health.reasons.length === 0 ? '-' : g.health.reasons.join(','),
      num(g.usage?.utilizationPct, '%'),
      num(g.usage?.memoryUsedMiB, ' MiB'),
      num(g.usage?.temperatureC, ' C'),
      num(g.usage?.powerW, ' W', 1)
    ])
  )
}

function labels(l: Record<string, string>): string | null {
  const entries = Object.entries(l)
  return entries.length === 0 ? null : entries.map(([k, v]) => `${k}=${v}`).join(',')
}

export function poolsTable(pools: Pool[]): string {
  return `${table(
    ['KEY', 'KIND', 'HOSTS', 'READY', 'GPUS FREE/TOTAL', 'LARGEST FREE BLOCK', 'LABELS'],
    pools.map((p) => [
      p.key,
      p.kind,
      p.hostCount,
      p.readyHosts,
      `${p.gpus.free}/${p.gpus.total}`,
      p.largestFreeBlock,
      labels(p.labels)
    ])
  )}\n`
}

export function poolDetail(p: Pool): string {
  const head = fields([
    ['Key', p.key],
    ['Kind', p.kind],
    ['Labels', labels(p.labels)],
    ['Hosts', `${p.hostCount} (${p.readyHosts} ready)`],
    ['GPUs free', `${p.gpus.free}/${p.gpus.total}`],
    ['Largest free block', `${p.largestFreeBlock} GPU${p.largestFreeBlock === 1 ? '' : 's'} on one host`]
  ])
  const hosts = p.hosts ?? []
  const list =
    hosts.length === 0
      ? '  none'
      : table(
          ['ID', 'NAME', 'STATE', 'GPUS FREE', 'FREE INDICES'],
          hosts.map((h) => [
            shortId(h.id),
            h.name,
            h.state,
            `${h.freeGpus.length}/${h.gpuCount}`,
            gpuIndices(h.freeGpus)
          ])
        )
  return `${head}\n\n${hosts.length === 0 ? `Hosts\n${list}` : withBlock('Hosts', list)}\n`
}

/** Placements the spec asks for: replicas, gang hosts, or the one session. */
export function desiredPlacements(w: Workload): number {
  const s = w.spec
  return s.kind === 'endpoint' ? s.replicas : s.kind === 'recipe' ? s.hosts : 1
}

function placementCount(w: Workload): string {
  const active = w.placements.filter((p) => !FINISHED.has(p.state)).length
  return `${active}/${desiredPlacements(w)}`
}

export function workloadsTable(workloads: Workload[], now = Date.now()): string {
  return `${table(
    ['ID', 'NAME', 'KIND', 'STATE', 'PLACEMENTS', 'AGE', 'REASON'],
    workloads.map((w) => [
      shortId(w.id),
      w.name,
      w.kind,
      w.state,
      placementCount(w),
      ago(w.createdAt, now),
      w.reason === null ? null : truncate(w.reason, 80)
    ])
  )}\n`
}

function rolloutLine(w: Workload): string | null {
  const r = w.rollout
  if (r === null) return null
  return `to generation ${r.generation}: ${r.state}${r.reason === null ? '' : ` (${r.reason})`}`
}

export function workloadDetail(w: Workload, now = Date.now()): string {
  const s = w.spec
  const where = s.kind === 'endpoint' ? s.pools.join(', ') : s.pool
  const shape =
    s.kind === 'endpoint'
      ? `${s.replicas} replica${s.replicas === 1 ? '' : 's'} × ${s.gpus} GPU${s.gpus === 1 ? '' : 's'}`
      : s.kind === 'recipe'
        ? `${s.hosts} host${s.hosts === 1 ? '' : 's'} × ${s.gpus} GPU${s.gpus === 1 ? '' : 's'} (all or nothing)`
        : `${s.gpus} GPU${s.gpus === 1 ? '' : 's'} on one host`
  const head = fields([
    ['ID', w.id],
    ['Name', w.name],
    ['Kind', w.kind],
    ['State', w.state],
    ['Reason', w.reason],
    [s.kind === 'endpoint' ? 'Pools' : 'Pool', where],
    ['Shape', shape],
    [
      'Run',
      `${s.run.driver}${s.run.image === undefined ? '' : ` ${s.run.image}`}: ${truncate(s.run.command.join(' '), 100)}`
    ],
    ['Generation', String(w.generation)],
    ['Rollout', rolloutLine(w)],
    ['Created', `${when(w.createdAt)} (${ago(w.createdAt, now)} ago)`],
    ['Updated', when(w.updatedAt)]
  ])
  const list =
    w.placements.length === 0
      ? 'Placements\n  none'
      : withBlock('Placements', placementRows(w.placements, null, s.kind === 'endpoint'))
  return `${head}\n\n${list}\n`
}

/** READY: whether an endpoint replica serves (its probe passes, or it runs when it has none); `-` for other work. */
const readiness = (p: Placement): string | null => (p.port === null ? null : p.ready ? 'yes' : 'no')

function placementRows(placements: Placement[], workloadNames: Map<string, string> | null, ports: boolean): string {
  const head = [
    'ID',
    ...(workloadNames === null ? [] : ['WORKLOAD']),
    'REPLICA',
    'HOST',
    'GPUS',
    ...(ports ? ['PORT'] : []),
    'STATE',
    'READY',
    'EXIT',
    'REASON'
  ]
  return table(
    head,
    placements.map((p) => [
      shortId(p.id),
      ...(workloadNames === null ? [] : [workloadNames.get(p.workloadId) ?? shortId(p.workloadId)]),
      p.replica,
      p.hostName,
      gpuIndices(p.gpus),
      ...(ports ? [p.port] : []),
      p.state,
      readiness(p),
      p.exitCode,
      p.reason === null ? null : truncate(p.reason, 60)
    ])
  )
}

export function placementsTable(placements: Placement[], workloadNames: Map<string, string>): string {
  return `${placementRows(placements, workloadNames, false)}\n`
}

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i

/** The event's data in one short line: `key=value ...`, ids shortened like the tables'. */
export function shortData(data: Record<string, unknown>, max = 100): string {
  const parts = Object.entries(data).map(
    ([k, v]) => `${k}=${typeof v === 'string' ? (UUID.test(v) ? shortId(v) : v) : JSON.stringify(v)}`
  )
  return parts.length === 0 ? '-' : truncate(parts.join(' '), max)
}

/**
 * Events arrive one at a time, so their columns are padded to fixed widths
 * rather than measured like a table's.
 */
const EVENT_COLUMNS = [8, 22, 22, 30] as const

function eventColumns(cells: [string, string, string, string, string]): string {
  return `${cells
    .map((c, i) => (i < EVENT_COLUMNS.length ? c.padEnd((EVENT_COLUMNS[i] ?? 0) - 2) : c))
    .join('  ')
    .trimEnd()}\n`
}

export function eventHeader(): string {
  return eventColumns(['ID', 'TIME', 'TYPE', 'SUBJECT', 'DATA'])
}

export function eventLine(e: Event): string {
  const subjectId = UUID.test(e.subject.id) ? shortId(e.subject.id) : e.subject.id
  return eventColumns([String(e.id), when(e.at), e.type, `${e.subject.kind}/${subjectId}`, shortData(e.data)])
}

export function teamsTable(teams: Team[], now = Date.now()): string {
  return `${table(
    ['ID', 'NAME', 'CREATED'],
    teams.map((t) => [shortId(t.id), t.name, `${ago(t.createdAt, now)} ago`])
  )}\n`
}

export function tokensTable(tokens: TokenInfo[], now = Date.now()): string {
  return `${table(
    ['ID', 'NAME', 'ROLE', 'TEAM', 'ENDPOINTS', 'CREATED', 'LAST USED', 'REVOKED'],
    tokens.map((t) => [
      shortId(t.id),
      t.name,
      t.role,
      t.team ?? '-',
      t.endpoints === null ? '-' : t.endpoints.join(','),
      `${ago(t.createdAt, now)} ago`,
      t.lastUsedAt === null ? 'never' : `${ago(t.lastUsedAt, now)} ago`,
      t.revokedAt === null ? '-' : when(t.revokedAt)
    ])
  )}\n`
}
