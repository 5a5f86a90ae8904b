// What the process benches share: a folder of their own, an embedded
// PostgreSQL with a database per phase, a stack of cleanup steps run in
// reverse at the end or on SIGINT/SIGTERM, and the machine's description in
// the figures.
import { mkdtempSync, rmSync } from 'node:fs'
import { cpus, tmpdir } from 'node:os'
import { join } from 'node:path'
import pg from 'pg'
import { createLogger } from '../../common/log.js'
import { withDatabase } from '../../coordinator/store/db.js'
import { startEmbeddedPostgres } from '../../coordinator/store/embedded.js'

/** Where the figures were taken, and how long the bench ran since `started` (performance.now()). */
export function runFigures(started: number): { machine: string; node: string; wall_s: number } {
  return {
    machine: `${cpus().length}x ${cpus()[0]?.model ?? 'unknown'}`,
    node: process.version,
    wall_s: Math.round((performance.now() - started) / 1000)
  }
}

export interface Harness {
  dir: string
  /** Steps run in reverse when the bench ends, however it ends. */
  cleanup: Array<() => Promise<void>>
  /** A new database of that name on the embedded PostgreSQL. */
  databaseUrl: (name: string) => Promise<string>
}

export async function withHarness(
  o: {
    name: string
    log: (line: string) => void
    /** Synchronous last resort when the process exits (children, folders). */
    onExit: (dir: string) => void
  },
  body: (h: Harness) => Promise<Record<string, unknown>>
): Promise<Record<string, unknown>> {
  const dir = mkdtempSync(join(tmpdir(), `gpumesh-bench-${o.name}-`))
  const onExit = () => {
    o.onExit(dir)
    rmSync(dir, { recursive: true, force: true })
  }
  const cleanup: Array<() => Promise<void>> = []
  const onSignal = (signal: NodeJS.Signals) => {
    o.log(`${signal}: cleaning up`)
    setTimeout(() => process.exit(130), 20_000).unref()
    void (async () => {
      for (const step of cleanup.splice(0).reverse()) await step().catch(() => {})
    })().finally(() => process.exit(130))
  }
  process.once('exit', onExit)
  process.once('SIGINT', onSignal)
  process.once('SIGTERM', onSignal)
  const started = performance.now()
  try {
    // A folder of its own: as root, PostgreSQL runs as the postgres user, who must reach it (the bench's folder is 0700).
    const pgDir = mkdtempSync(join(tmpdir(), `gpumesh-bench-${o.name}-pg-`))
    cleanup.push(async () => {
      rmSync(pgDir, { recursive: true, force: true })
    })
    const db = await startEmbeddedPostgres(pgDir, createLogger('bench', { level: 'silent' }))
    cleanup.push(async () => {
      await db.stop()
    })
    const databaseUrl = async (name: string) => {
      const admin = new pg.Client({ connectionString: db.url })
      await admin.connect()
      await admin.query(`create database ${name}`)
      await admin.end()
      return withDatabase(db.url, name)
    }
    return { ...(await body({ dir, cleanup, databaseUrl })), ...runFigures(started) }
  } finally {
    for (const step of cleanup.reverse()) await step().catch((err: Error) => o.log(`cleanup: ${err.message}`))
    onExit()
    process.removeListener('exit', onExit)
    process.removeListener('SIGINT', onSignal)
    process.removeListener('SIGTERM', onSignal)
  }
}
