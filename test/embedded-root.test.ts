// As root, the README's own example — a state dir inside a clone under a
// 0700 folder such as /root — must start: embedded PostgreSQL runs as the
// postgres user, who cannot reach that folder.
import { chmodSync, lstatSync, mkdirSync, mkdtempSync, realpathSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import t from 'tap'
import { call, spawnCoordinator } from './helpers/coordinator-process.js'

t.test('as root, a state dir under a 0700 parent starts, keeps its data and stops cleanly', async (t) => {
  if (process.getuid?.() !== 0)
    throw new Error('this test needs root (CI runs as root): embedded PostgreSQL as root is what it checks')
  const home = mkdtempSync(join(tmpdir(), 'gpumesh-home-'))
  chmodSync(home, 0o700)
  const stateDir = join(home, 'clone', '.state', 'coordinator')
  mkdirSync(stateDir, { recursive: true })
  let dataDir: string | null = null
  t.teardown(() => {
    rmSync(home, { recursive: true, force: true })
    if (dataDir !== null) rmSync(dataDir, { recursive: true, force: true })
  })

  const first = await spawnCoordinator(t, {}, stateDir)
  dataDir = realpathSync(join(stateDir, 'postgres'))
  const token = await call(first.api, 'POST', '/v1/tokens', { role: 'viewer', name: 'kept' })
  const firstExit = new Promise<number | null>((resolve) => first.child.once('exit', (code) => resolve(code)))
  first.child.kill('SIGTERM')
  const firstCode = await firstExit

  const second = await spawnCoordinator(t, {}, stateDir)
  const withToken = await fetch(`${second.api}/v1/pools`, {
    headers: { authorization: `Bearer ${token.body?.token as string}` }
  })
  const secondExit = new Promise<number | null>((resolve) => second.child.once('exit', (code) => resolve(code)))
  second.child.kill('SIGTERM')
  t.same(
    {
      tokenCreated: token.status,
      firstExit: firstCode,
      linked: lstatSync(join(stateDir, 'postgres')).isSymbolicLink(),
      tokenWorksAfterRestart: withToken.status,
      secondExit: await secondExit
    },
    { tokenCreated: 201, firstExit: 0, linked: true, tokenWorksAfterRestart: 200, secondExit: 0 }
  )
})
