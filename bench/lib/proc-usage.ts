// CPU and memory of a running process from /proc, for the benches: CPU is
// % of one core (utime + stime from /proc/<pid>/stat over the window; with
// children: those it has waited for), RSS is VmRSS from /proc/<pid>/status,
// the largest of one sample a second.
import { spawnSync } from 'node:child_process'
import { readFileSync } from 'node:fs'
import { sleep } from '../../common/daemon/sleep.js'

export const CLK_TCK = Number(spawnSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).stdout?.trim()) || 100

export function cpuTicks(pid: number): { self: number; children: number } {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
  // Fields after "(comm)": state is field 3, utime 14, stime 15, cutime 16, cstime 17.
  const f = stat
    .slice(stat.lastIndexOf(')') + 2)
    .split(' ')
    .map(Number)
  return { self: (f[11] ?? 0) + (f[12] ?? 0), children: (f[13] ?? 0) + (f[14] ?? 0) }
}

export function rssMb(pid: number): number {
  const m = /^VmRSS:\s+(\d+) kB/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))
  return Number(m?.[1] ?? NaN) / 1024
}

export interface Usage {
  cpuPct: number
  cpuPctWithChildren: number
  rssMbMax: number
  rssMbMean: number
}

/** CPU (% of one core) and RSS of a process over `seconds`. */
export async function measure(pid: number, seconds: number): Promise<Usage> {
  const t0 = performance.now()
  const c0 = cpuTicks(pid)
  const rss: number[] = [rssMb(pid)]
  for (let i = 0; i < seconds; i++) {
    await sleep(t0 + (i + 1) * 1000 - performance.now())
    rss.push(rssMb(pid))
  }
  const c1 = cpuTicks(pid)
  const elapsed = (performance.now() - t0) / 1000
  const round = (x: number) => Math.round(x * 10) / 10
  return {
    cpuPct: round(((c1.self - c0.self) / CLK_TCK / elapsed) * 100),
    cpuPctWithChildren: round(((c1.self + c1.children - c0.self - c0.children) / CLK_TCK / elapsed) * 100),
    rssMbMax: round(Math.max(...rss)),
    rssMbMean: round(rss.reduce((a, b) => a + b, 0) / rss.length)
  }
}
