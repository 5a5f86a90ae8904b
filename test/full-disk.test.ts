// A chatty placement on a small disk: its logs rotate while it runs, so it
// cannot fill the agent's state directory. On a real tmpfs (needs root, as
// CI is), unmounted at the end.
import { execFileSync } from 'node:child_process'
import { randomUUID } from 'node:crypto'
import { existsSync, mkdtempSync, rmSync, statSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import t, { type Test } from 'tap'
import { createRuntime } from '../agent/runtime/runtime.js'
import type { RunningPlacement } from '../protocol/control.js'

/** A tmpfs of `size` mounted on a new folder, unmounted (and removed) in teardown. */
function smallDisk(t: Test, size: string): string {
  if (process.getuid?.() !== 0) throw new Error('this test mounts a tmpfs: run it as root (CI does)')
  const dir = mkdtempSync(join(tmpdir(), 'gpumesh-full-disk-'))
  execFileSync('mount', ['-t', 'tmpfs', '-o', `size=${size}`, 'tmpfs', dir])
  t.teardown(() => {
    execFileSync('umount', ['-l', dir])
    rmSync(dir, { recursive: true, force: true })
  })
  return dir
}

const MiB = 1024 * 1024

t.test('placement logs rotate while the process writes: 50 MB of output on a 20 MB disk', async (t) => {
  const disk = smallDisk(t, '20m')
  const cap = MiB
  const rt = createRuntime({ stateDir: join(disk, 'agent'), logMaxBytes: cap, stopGraceMs: 1000 })
  t.teardown(async () => await rt.close())
  const ended = new Map<string, RunningPlacement>()
  const waiters: Array<() => void> = []
  rt.on('status', (s: RunningPlacement) => {
    if (['exited', 'failed', 'lost', 'stopped'].includes(s.state)) ended.set(s.placementId, s)
    for (const w of waiters) w()
  })
  const until = async (id: string) =>
    await new Promise<RunningPlacement>((resolve) => {
      const check = () => {
        const s = ended.get(id)
        if (s !== undefined) resolve(s)
      }
      waiters.push(check)
      check()
    })
  const total = 50_000_000
  const id = randomUUID()
  await rt.start({
    placementId: id,
    workloadId: randomUUID(),
    workloadName: 'chatty',
    replica: 0,
    gpus: [],
    // As fast as it can, on both streams; head fails (exit 1) on a write error.
    run: {
      driver: 'process',
      command: ['sh', '-c', `head -c ${total} /dev/zero & p=$!; head -c ${total} /dev/zero >&2 || exit 1; wait $p`]
    },
    env: {}
  })
  const end = await until(id)
  t.match(end, { state: 'exited', exitCode: 0 }, 'every write succeeded: the disk never filled')
  const dir = join(disk, 'agent', 'placements', id)
  const size = (f: string) => (existsSync(join(dir, f)) ? statSync(join(dir, f)).size : 0)
  const last = total % cap === 0 ? cap : total % cap
  t.same(
    {
      'stdout.log': size('stdout.log'),
      'stdout.log.1': size('stdout.log.1'),
      'stderr.log': size('stderr.log'),
      'stderr.log.1': size('stderr.log.1')
    },
    { 'stdout.log': last, 'stdout.log.1': cap, 'stderr.log': last, 'stderr.log.1': cap },
    'each stream: the current file and one full previous one, nothing lost in between'
  )
})
