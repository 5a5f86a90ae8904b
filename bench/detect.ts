// Wall time and peak RSS of `gpumesh-agent detect --json` on a fixture
// machine (nvidia-smi replayed by the test double), median of 10 runs.
import { spawnSync } from 'node:child_process'
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { cpus, tmpdir } from 'node:os'
import { join } from 'node:path'
import { AGENT, MACHINES, NVIDIA_SMI_DOUBLE } from '../test/helpers/fixtures.js'

const TIME = '/usr/bin/time'

export async function run(args: string[]): Promise<Record<string, unknown>> {
  const machine = args[0] ?? 'h100-8x-nv18-nics'
  const runs = Number(args[1] ?? 10)
  if (!existsSync(TIME)) throw new Error(`${TIME} is needed for peak RSS (Debian package "time")`)
  const dir = mkdtempSync(join(tmpdir(), 'gpumesh-bench-'))
  const walls: number[] = []
  const rss: number[] = []
  try {
    for (let i = 0; i < runs; i++) {
      const out = join(dir, `rss-${i}`)
      const started = process.hrtime.bigint()
      const r = spawnSync(TIME, ['-f', '%M', '-o', out, process.execPath, AGENT, 'detect', '--json'], {
        env: { ...process.env, GPUMESH_NVIDIA_SMI: NVIDIA_SMI_DOUBLE, GPUMESH_SMI_FIXTURE: join(MACHINES, machine) },
        encoding: 'utf8'
      })
      walls.push(Number(process.hrtime.bigint() - started) / 1e6)
      if (r.status !== 0) throw new Error(`detect exited ${r.status}: ${r.stderr}`)
      const facts = JSON.parse(r.stdout) as { gpus: unknown[] }
      if (i === 0) process.stderr.write(`machine ${machine}: ${facts.gpus.length} GPUs\n`)
      rss.push(Number(readFileSync(out, 'utf8').trim().split('\n').pop()) / 1024)
    }
  } finally {
    rmSync(dir, { recursive: true, force: true })
  }
  walls.sort((a, b) => a - b)
  return {
    bench: 'detect',
    machine,
    runs,
    detect_wall_ms_p50: Math.round(median(walls)),
    detect_wall_ms_max: Math.round(walls[walls.length - 1] as number),
    detect_rss_mb_max: Math.round(Math.max(...rss) * 10) / 10,
    cpu: `${cpus().length}x ${cpus()[0]?.model ?? 'unknown'}`,
    node: process.version
  }
}

function median(xs: number[]): number {
  const m = Math.floor(xs.length / 2)
  return xs.length % 2 === 1 ? (xs[m] as number) : ((xs[m - 1] as number) + (xs[m] as number)) / 2
}
