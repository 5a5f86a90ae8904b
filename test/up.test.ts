// `gpumesh up`: the one-command local cluster, run as a person runs it.
import t from 'tap'
import { join } from 'node:path'
import { ROOT } from './helpers/fixtures.js'
import { exerciseUp, startUp } from './helpers/up.js'

const CLI = join(ROOT, 'dist/cli/main.js')

t.test('up --simulate 2: a cluster, a workload through the CLI, Ctrl-C', async (t) => {
  await exerciseUp(t, process.execPath, CLI)
})

t.test('an unknown simulated machine is a configuration error', async (t) => {
  await t.rejects(startUp(t, process.execPath, CLI, ['--simulate', '1', '--machines', 'h100-8x-nv18,dgx-9000']), /exited 78:[\s\S]*unknown simulated machine dgx-9000; available: .*h100-8x-nv18/)
})
