// A real redis-server for tests: REDIS_URL when set, else one started on a
// free port in a temporary folder (Debian package redis-server; .ci/run
// installs it). Missing redis-server fails the test loudly.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process'
import { mkdtempSync, rmSync } from 'node:fs'
import { createServer } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import type { Test } from 'tap'

export interface RedisServer {
  url: string
  port: number
  /** Stops the server (SIGTERM) and waits for it to exit. */
  stop: () => Promise<void>
  /** Starts it again on the same port and folder (data persists with appendonly). */
  start: () => Promise<void>
}

export async function freePort(): Promise<number> {
  return await new Promise((resolve, reject) => {
    const s = createServer()
    s.listen(0, '127.0.0.1', () => {
      const addr = s.address()
      s.close(() => {
        typeof addr === 'object' && addr !== null ? resolve(addr.port) : reject(new Error('no port'))
      })
    })
  })
}

export async function startRedis(t: Test, options: { persistent?: boolean } = {}): Promise<RedisServer> {
  const which = spawnSync('redis-server', ['--version'])
  if (which.error !== undefined || which.status !== 0) {
    throw new Error(
      'redis-server is not installed: these tests need a real Redis (Debian: apt-get install redis-server; .ci/run does it)'
    )
  }
  const dir = mkdtempSync(join(tmpdir(), 'gpumesh-redis-'))
  const port = await freePort()
  let child: ChildProcess | null = null
  const start = async () => {
    child = spawn(
      'redis-server',
      [
        '--port',
        String(port),
        '--bind',
        '127.0.0.1',
        '--dir',
        dir,
        '--save',
        '',
        '--appendonly',
        options.persistent === true ? 'yes' : 'no',
        '--loglevel',
        'warning'
      ],
      { stdio: 'ignore' }
    )
    for (let i = 0; i < 100; i++) {
      const ping = spawnSync('redis-cli', ['-p', String(port), 'ping'], { encoding: 'utf8' })
      if (ping.stdout?.trim() === 'PONG') return
      await new Promise((resolve) => setTimeout(resolve, 50))
    }
    throw new Error(`redis-server did not answer on port ${port}`)
  }
  const stop = async () => {
    const c = child
    child = null
    if (c === null || c.exitCode !== null) return
    const exited = new Promise((resolve) => c.once('exit', resolve))
    c.kill('SIGTERM')
    await exited
  }
  await start()
  t.teardown(async () => {
    await stop()
    rmSync(dir, { recursive: true, force: true })
  })
  return { url: `redis://127.0.0.1:${port}`, port, stop, start }
}
