// `gpumesh-agent run` processes for the benches that need real agents (the
// nvidia-smi replay double stands in for the GPUs), and the placements they
// leave behind: placements outlive their agents by design.
import { spawn, type ChildProcess } from 'node:child_process'
import { readdirSync, readFileSync } from 'node:fs'
import { join } from 'node:path'
import { AGENT_RUN } from '../test/helpers/fixtures.js'

export interface AgentProc {
  child: ChildProcess
  output: () => string
}

/** `nodeArgs`: Node's own, before the agent's (a bench's --cpu-prof). */
export function startAgent(env: Record<string, string>, nodeArgs: string[] = []): AgentProc {
  const child = spawn(process.execPath, [...nodeArgs, ...AGENT_RUN], { env, stdio: ['ignore', 'pipe', 'pipe'] })
  let output = ''
  child.stdout?.setEncoding('utf8').on('data', (d: string) => {
    output += d
  })
  child.stderr?.setEncoding('utf8').on('data', (d: string) => {
    output += d
  })
  return { child, output: () => output }
}

export async function stopAgent(a: AgentProc): Promise<void> {
  if (a.child.exitCode !== null || a.child.signalCode !== null) return
  const exited = new Promise((resolve) => a.child.once('exit', resolve))
  a.child.kill('SIGTERM')
  const timer = setTimeout(() => a.child.kill('SIGKILL'), 10_000)
  await exited
  clearTimeout(timer)
}

/** Placements outlive their agents by design: kill what is left of them (process groups, from the pid files). */
export function killPlacements(agentState: string): void {
  let ids: string[] = []
  try {
    ids = readdirSync(join(agentState, 'placements'))
  } catch {
    return
  }
  for (const id of ids) {
    try {
      const pgid = Number(readFileSync(join(agentState, 'placements', id, 'pid'), 'utf8').trim())
      if (Number.isInteger(pgid) && pgid > 1) process.kill(-pgid, 'SIGKILL')
    } catch {}
  }
}
