// `gpumesh up`: the one-command local cluster, run as a person runs it.
import t from 'tap'
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { execa } from 'execa'
import { cleanEnv } from './helpers/agent.js'
import { eventually } from './helpers/coordinator.js'
import { ROOT } from './helpers/fixtures.js'
import { exerciseUp, processesWith, startUp } from './helpers/up.js'

const CLI = join(ROOT, 'dist/cli/main.js')

t.test('up --simulate 2: a cluster, a workload through the CLI, Ctrl-C', async (t) => {
  await exerciseUp(t, process.execPath, CLI)
})

t.test('an unknown simulated machine is a configuration error', async (t) => {
  await t.rejects(
    startUp(t, process.execPath, CLI, ['--simulate', '1', '--machines', 'h100-8x-nv18,dgx-9000']),
    /exited 78:[\s\S]*unknown simulated machine dgx-9000; available: .*h100-8x-nv18/
  )
})

t.test(
  'Ctrl-C with its output gone (up | tee, tee died first): workloads, agents, coordinator and PostgreSQL are still stopped',
  async (t) => {
    const up = await startUp(t, process.execPath, CLI, ['--simulate', '1', '--no-local-agent'])
    const env = { ...cleanEnv(), GPUMESH_API: up.api, GPUMESH_TOKEN: up.adminToken }
    const pool = up.pools[0]?.key as string
    const spec = {
      name: 'lives',
      kind: 'endpoint',
      replicas: 1,
      gpus: 1,
      pools: [pool],
      run: { driver: 'process', command: ['sleep', '600'] }
    }
    const created = await execa(process.execPath, [CLI, 'workloads', 'create', '-f', '-'], {
      env,
      extendEnv: false,
      reject: false,
      input: JSON.stringify(spec)
    })
    t.equal(created.exitCode, 0, `gpumesh workloads create: ${String(created.stderr)}`)
    const placement = await eventually(
      async () => {
        const got = await execa(process.execPath, [CLI, 'workloads', 'get', 'lives', '--json'], {
          env,
          extendEnv: false,
          reject: false
        })
        const p = (
          JSON.parse(String(got.stdout)) as { placements: Array<{ id: string; hostName: string; state: string }> }
        ).placements[0]
        return p?.state === 'running' ? p : undefined
      },
      60_000,
      'the workload to run'
    )
    const record = JSON.parse(
      readFileSync(
        join(up.stateDir, 'agents', placement.hostName, 'placements', placement.id, 'placement.json'),
        'utf8'
      )
    ) as { pid: number }

    up.closeOutput()
    t.equal(await up.interrupt(), 0, 'Ctrl-C: a clean exit, though its stderr is gone')
    const log = readFileSync(join(up.stateDir, 'gpumesh.log'), 'utf8')
    t.match(log, /stderr is gone/, 'the log says its output was lost')
    t.match(log, /"msg":"stopped"/, 'and that it stopped')
    t.throws(() => process.kill(record.pid, 0), { code: 'ESRCH' }, "the workload's process is gone")
    t.same(
      processesWith(up.stateDir),
      [],
      "nothing runs from the state folder any more (agents' workloads, PostgreSQL)"
    )
  }
)
