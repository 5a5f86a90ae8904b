// A real PostgreSQL for tests: TEST_DATABASE_URL when set (an external
// server), else one embedded PostgreSQL per test file in a temporary folder.
// Each test gets its own database, dropped at teardown.
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import pg from 'pg'
import type { Test } from 'tap'
import { createLogger } from '../../common/log.js'
import { withDatabase } from '../../coordinator/store/db.js'
import { startEmbeddedPostgres, type EmbeddedDatabase } from '../../coordinator/store/embedded.js'

let server: Promise<{ url: string; stop: () => Promise<void> }> | null = null
let counter = 0

async function start(t: Test): Promise<{ url: string; stop: () => Promise<void> }> {
  const external = process.env.TEST_DATABASE_URL
  if (external !== undefined && external !== '') return { url: external, stop: async () => {} }
  const dir = mkdtempSync(join(tmpdir(), 'gpumesh-pg-'))
  const db: EmbeddedDatabase = await startEmbeddedPostgres(
    dir,
    createLogger('test-postgres', { level: 'warn', stream: 'stderr' })
  )
  // Cleaned up when the whole file ends (tap's root test).
  t.teardown(async () => {
    await db.stop()
    rmSync(dir, { recursive: true, force: true })
  })
  return { url: db.url, stop: db.stop }
}

/** A URL to an empty database of its own, dropped when `t` ends. */
export async function freshDatabase(t: Test): Promise<string> {
  let root: Test = t
  while (root.parent !== undefined && root.parent !== null) root = root.parent as Test
  server ??= start(root)
  const { url } = await server
  const name = `t_${process.pid}_${++counter}`
  const admin = new pg.Client({ connectionString: url })
  await admin.connect()
  await admin.query(`create database ${name}`)
  await admin.end()
  t.teardown(async () => {
    const c = new pg.Client({ connectionString: url })
    await c.connect()
    await c.query(`drop database if exists ${name} with (force)`)
    await c.end()
  })
  return withDatabase(url, name)
}
