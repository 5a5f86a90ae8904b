// The agent runtime (agent/runtime/) with real processes: environment and
// logs, exit codes, stop (SIGTERM, SIGKILL after the grace, the whole process
// group), start failures, refused assignments, re-adoption after an agent
// restart or crash, and the docker driver through test/doubles/docker.
import { randomUUID } from 'node:crypto'
import {
  chmodSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  writeFileSync
} from 'node:fs'
import { createServer, type AddressInfo } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { execa } from 'execa'
import t, { type Test } from 'tap'
import { placementEnv, placementVariables } from '../agent/runtime/env.js'
import { readProcStat } from '../agent/runtime/proc.js'
import { createRuntime } from '../agent/runtime/runtime.js'
import type { Assignment, Runtime, RuntimeOptions, RunningPlacement } from '../agent/runtime/types.js'
import { eventually } from './helpers/eventually.js'
import { ROOT } from './helpers/fixtures.js'
import { alive } from './helpers/process.js'

const DOCKER_DOUBLE = join(ROOT, 'test/doubles/docker')
const RUNTIME_JS = join(ROOT, 'dist/agent/runtime/runtime.js')
const FINAL = new Set(['exited', 'failed', 'stopped', 'lost'])

// ------------------------------------------------------------------ helpers

function scratch(t: Test, prefix = 'gpumesh-runtime-'): string {
  const dir = mkdtempSync(join(tmpdir(), prefix))
  t.teardown(() => {
    killLeftovers(dir)
    rmSync(dir, { recursive: true, force: true })
  })
  return dir
}

/** Teardown: SIGKILL the groups of the placements this test started (checked to be our wrappers) and of the docker double's containers. */
function killLeftovers(dir: string): void {
  const groups: number[] = []
  const placements = join(dir, 'placements')
  if (existsSync(placements)) {
    for (const id of readdirSync(placements)) {
      for (const f of ['pid', 'placement.json']) {
        try {
          const text = readFileSync(join(placements, id, f), 'utf8')
          const pid = f === 'pid' ? Number(text.trim()) : (JSON.parse(text) as { pid: number | null }).pid
          if (
            typeof pid === 'number' &&
            pid > 1 &&
            readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes(`gpumesh-${id}`)
          )
            groups.push(pid)
        } catch {}
      }
    }
  }
  const docker = join(dir, 'docker')
  if (existsSync(docker)) {
    for (const f of readdirSync(docker).filter((n) => n.endsWith('.pid'))) {
      const pid = Number(readFileSync(join(docker, f), 'utf8').trim())
      if (pid > 1) groups.push(pid)
    }
  }
  for (const g of groups) {
    try {
      process.kill(-g, 'SIGKILL')
    } catch {}
  }
}

let serial = 0
function assignment(over: Partial<Assignment> & { command?: string[] } = {}): Assignment {
  const { command, ...rest } = over
  return {
    placementId: randomUUID(),
    workloadId: randomUUID(),
    workloadName: `test-${++serial}`,
    replica: 0,
    gpus: [],
    run: { driver: 'process', command: command ?? ['true'] },
    env: {},
    ...rest
  }
}

const sh = (script: string) => ['sh', '-c', script]
/** A command that ignores SIGTERM (only SIGKILL ends it), once it has written `ready`. */
const IGNORES_TERM = sh('trap "" TERM; echo $$ > ready; while :; do sleep 0.05; done')
/** An assignment run in a container of `image` by the docker driver. */
const inContainer = (command: string[], image = 'img') => assignment({ run: { driver: 'docker', image, command } })

interface Tracked {
  rt: Runtime
  states: (id: string) => string[]
  statuses: (id: string) => RunningPlacement[]
  /** The first status of `id` (already seen or to come) matching `pred`; default: a final one. */
  until: (id: string, pred?: (s: RunningPlacement) => boolean, timeoutMs?: number) => Promise<RunningPlacement>
}

function runtime(t: Test, options: RuntimeOptions): Tracked {
  const rt = createRuntime(options)
  t.teardown(async () => await rt.close())
  const seen = new Map<string, RunningPlacement[]>()
  const waiters = new Set<() => void>()
  rt.on('status', (s: RunningPlacement) => {
    seen.set(s.placementId, [...(seen.get(s.placementId) ?? []), s])
    for (const w of waiters) w()
  })
  const statuses = (id: string) => seen.get(id) ?? []
  const until = async (id: string, pred = (s: RunningPlacement) => FINAL.has(s.state), timeoutMs = 10_000) =>
    await new Promise<RunningPlacement>((resolve, reject) => {
      const check = () => {
        const hit = statuses(id).find(pred)
        if (hit === undefined) return
        cleanup()
        resolve(hit)
      }
      const timer = setTimeout(() => {
        cleanup()
        reject(new Error(`placement ${id}: no such status within ${timeoutMs} ms; saw ${JSON.stringify(statuses(id))}`))
      }, timeoutMs)
      const cleanup = () => {
        clearTimeout(timer)
        waiters.delete(check)
      }
      waiters.add(check)
      check()
    })
  return { rt, statuses, states: (id) => statuses(id).map((s) => s.state), until }
}

/** A stop that SIGTERM was enough for: started, ran, then stopped with the command's own exit 0 and `reason`. */
async function stoppedByTerm(t: Test, r: Pick<Tracked, 'until' | 'states'>, id: string, reason: string): Promise<void> {
  t.same(await r.until(id), { placementId: id, state: 'stopped', exitCode: 0, reason })
  t.same(r.states(id), ['starting', 'running', 'stopped'])
}

const pdir = (stateDir: string, id: string) => join(stateDir, 'placements', id)
const readLog = (stateDir: string, id: string, file = 'stdout.log') =>
  readFileSync(join(pdir(stateDir, id), file), 'utf8')
interface RecordJson {
  pid: number
  startTime: number
  state: string
  exitCode: number | null
  reason: string | null
  startedAt: string | null
  endedAt: string | null
  stopRequested: unknown
  assignment: Assignment
}
const readRecordJson = (stateDir: string, id: string) =>
  JSON.parse(readFileSync(join(pdir(stateDir, id), 'placement.json'), 'utf8')) as RecordJson
/** Rewrites a record the runtime wrote, as an agent that died at some step would have left it. */
const writeRecordJson = (stateDir: string, id: string, record: Record<string, unknown>) =>
  writeFileSync(join(pdir(stateDir, id), 'placement.json'), JSON.stringify(record))

/** `sh -c 'echo $$ > ready; ...'` style commands write files in their folder: waits for one. */
const fileIn = async (stateDir: string, id: string, name: string) =>
  await eventually(
    // Not yet written counts as not there: the shell creates the file before it writes.
    () => (existsSync(join(pdir(stateDir, id), name)) && readFileSync(join(pdir(stateDir, id), name), 'utf8')) || false,
    10_000,
    `${name} in placement ${id}`
  )

/** The docker double's containers below print "up" first: waits for it. */
const containerUp = async (stateDir: string, id: string) =>
  await eventually(() => readLog(stateDir, id) === 'up\n', 10_000, 'the container to be up')

// Agent settings in the agent's own environment must not reach workloads.
process.env.GPUMESH_JOIN_TOKEN = 'secret-join-token'
process.env.GPUMESH_STATE_DIR = '/should/not/leak'
process.env.RUNTIME_TEST_INHERITED = 'from-agent'

// ------------------------------------------------------------------ environment

t.test('placement environment: layering, GPU variables win, agent settings dropped', async (t) => {
  const a = assignment({
    gpus: [2, 5],
    run: {
      driver: 'process',
      command: ['x'],
      env: {
        CUDA_VISIBLE_DEVICES: '0,1,2,3',
        NVIDIA_VISIBLE_DEVICES: 'all',
        CUDA_DEVICE_ORDER: 'FASTEST_FIRST',
        FOO: 'run',
        BAR: 'run',
        GPUMESH_WORKLOAD: 'renamed'
      }
    },
    env: { BAR: 'assignment', GPUMESH_RANK: '1', CUDA_VISIBLE_DEVICES: '7' }
  })
  const env = placementEnv(
    a,
    { PATH: '/bin', FOO: 'agent', GPUMESH_JOIN_TOKEN: 'x', CUDA_VISIBLE_DEVICES: '0' },
    'process'
  )
  t.same(env, {
    PATH: '/bin',
    FOO: 'run',
    CUDA_VISIBLE_DEVICES: '2,5',
    NVIDIA_VISIBLE_DEVICES: '2,5',
    CUDA_DEVICE_ORDER: 'PCI_BUS_ID',
    GPUMESH_WORKLOAD: 'renamed',
    GPUMESH_PLACEMENT_ID: a.placementId,
    BAR: 'assignment',
    GPUMESH_RANK: '1'
  })
  t.equal(placementEnv(assignment(), {}).CUDA_VISIBLE_DEVICES, '', 'no GPUs: empty, not unset')
  const docker = placementVariables({ ...a, run: { ...a.run, driver: 'docker' } })
  t.equal(docker.CUDA_VISIBLE_DEVICES, '0,1', 'in a container the GPUs are renumbered from 0')
  t.equal(docker.NVIDIA_VISIBLE_DEVICES, '2,5', 'the container runtime gets host indices')
  t.equal(docker.PATH, undefined, "a container does not get the agent's environment")
  const proto = placementVariables(assignment({ env: JSON.parse('{"__proto__":"x"}') as Record<string, string> }))
  t.equal(Object.getOwnPropertyDescriptor(proto, '__proto__')?.value, 'x', '__proto__ is a plain variable name')
})

t.test('process: env and logs reach the workload, starting -> running -> exited(0), record on disk', async (t) => {
  const stateDir = scratch(t)
  const { rt, states, until } = runtime(t, { stateDir })
  const script =
    'echo $CUDA_VISIBLE_DEVICES $NVIDIA_VISIBLE_DEVICES $GPUMESH_WORKLOAD $GPUMESH_PLACEMENT_ID $GPUMESH_RANK; ' +
    // biome-ignore lint/suspicious/noTemplateCurlyInString: a shell command, expanded by sh
    'echo "${GPUMESH_JOIN_TOKEN-unset} ${GPUMESH_STATE_DIR-unset} $RUNTIME_TEST_INHERITED $FOO $CUDA_DEVICE_ORDER"; pwd; echo oops >&2'
  const a = assignment({
    gpus: [0, 3],
    run: { driver: 'process', command: sh(script), env: { FOO: 'foo bar', CUDA_VISIBLE_DEVICES: '1' } },
    env: { GPUMESH_RANK: '1', GPUMESH_WORLD_SIZE: '2', MASTER_ADDR: '10.0.0.1', MASTER_PORT: '29500' }
  })
  await rt.start(a)
  const end = await until(a.placementId)
  t.same(end, { placementId: a.placementId, state: 'exited', exitCode: 0, reason: null })
  t.same(states(a.placementId), ['starting', 'running', 'exited'])
  const dir = pdir(stateDir, a.placementId)
  t.equal(
    readLog(stateDir, a.placementId),
    `0,3 0,3 ${a.workloadName} ${a.placementId} 1\nunset unset from-agent foo bar PCI_BUS_ID\n${dir}\n`,
    'exact values; cwd is the placement folder'
  )
  t.equal(readLog(stateDir, a.placementId, 'stderr.log'), 'oops\n')
  const rec = readRecordJson(stateDir, a.placementId)
  t.match(rec, { state: 'exited', exitCode: 0, reason: null, assignment: a })
  t.ok(rec.pid > 1 && rec.startTime > 0, 'pid and start time recorded')
  t.ok(rec.startedAt !== null && rec.endedAt !== null && rec.endedAt >= rec.startedAt)
  t.equal(readFileSync(join(dir, 'exit-code'), 'utf8'), '0\n', 'the wrapper wrote the exit code')
  t.same(rt.list(), [end])

  const none = assignment({ command: sh('echo "[$CUDA_VISIBLE_DEVICES] [$NVIDIA_VISIBLE_DEVICES]"') })
  await rt.start(none)
  await until(none.placementId)
  t.equal(readLog(stateDir, none.placementId), '[] []\n', 'no GPUs: empty strings')
})

t.test('process: exit codes are reported as they are; logs are appended; arguments keep their quoting', async (t) => {
  const stateDir = scratch(t)
  const { rt, states, until } = runtime(t, { stateDir })
  const a = assignment({
    command: ['sh', '-c', 'printf "%s|" "$@"; echo; exit 3', 'arg0', "it's", 'two words', '$HOME', '"q"']
  })
  await rt.start(a)
  t.same(await until(a.placementId), { placementId: a.placementId, state: 'exited', exitCode: 3, reason: null })
  t.same(states(a.placementId), ['starting', 'running', 'exited'])
  t.equal(readLog(stateDir, a.placementId), 'it\'s|two words|$HOME|"q"|\n')
  const killed = assignment({ command: sh('kill -9 $$') })
  await rt.start(killed)
  t.match(await until(killed.placementId), { state: 'exited', exitCode: 137 }, 'killed by a signal: 128+signal')
})

// ------------------------------------------------------------------ stop

t.test('stop: SIGTERM to the workload, reported stopped', async (t) => {
  const stateDir = scratch(t)
  const { rt, states, until } = runtime(t, { stateDir, stopGraceMs: 5_000 })
  const a = assignment({
    command: sh('trap "echo term > got-term; exit 0" TERM; echo $$ > ready; while :; do sleep 0.05; done')
  })
  await rt.start(a)
  await fileIn(stateDir, a.placementId, 'ready')
  const began = Date.now()
  await rt.stop(a.placementId, 'workload deleted')
  t.ok(Date.now() - began < 4_000, 'did not need the SIGKILL')
  t.equal(readFileSync(join(pdir(stateDir, a.placementId), 'got-term'), 'utf8'), 'term\n', 'the command got SIGTERM')
  await stoppedByTerm(t, { until, states }, a.placementId, 'workload deleted')
  t.equal(readRecordJson(stateDir, a.placementId).state, 'stopped')
  await rt.stop(a.placementId, 'again')
  await rt.stop(randomUUID(), 'unknown')
  t.pass('stopping a stopped or unknown placement resolves')
})

t.test(
  'stop: a command ignoring SIGTERM is SIGKILLed after the grace; the wrapper records 143 on SIGTERM',
  async (t) => {
    const stateDir = scratch(t)
    const grace = 400
    const { rt, until } = runtime(t, { stateDir, stopGraceMs: grace })
    const a = assignment({ command: IGNORES_TERM })
    await rt.start(a)
    const pid = Number(await fileIn(stateDir, a.placementId, 'ready'))
    const began = Date.now()
    await rt.stop(a.placementId, 'drain')
    const took = Date.now() - began
    t.ok(took >= grace - 20, `waited the grace (${took} ms)`)
    t.ok(took < grace + 3_000, `then killed it (${took} ms)`)
    // SIGKILL took the wrapper too, so it wrote nothing; its parent (this runtime) saw the signal.
    t.match(await until(a.placementId), { state: 'stopped', reason: 'drain', exitCode: 137 }, 'SIGKILLed: 128 + 9')
    t.notOk(existsSync(join(pdir(stateDir, a.placementId), 'exit-code')), 'no exit code file')
    t.notOk(alive(pid), 'the command is gone')

    const plain = assignment({ command: ['sleep', '30'] })
    await rt.start(plain)
    await rt.stop(plain.placementId, 'scale down')
    t.same(
      await until(plain.placementId),
      { placementId: plain.placementId, state: 'stopped', exitCode: 143, reason: 'scale down' },
      '128 + SIGTERM'
    )
  }
)

t.test(
  'stop as failed (a replica given up on): ends failed with the reason, also when a restart finishes it',
  async (t) => {
    const stateDir = scratch(t)
    const first = runtime(t, { stateDir, stopGraceMs: 60_000 })
    const quick = assignment({ command: sh('echo $$ > ready; while :; do sleep 0.05; done') })
    const stubborn = assignment({ command: IGNORES_TERM })
    for (const a of [quick, stubborn]) {
      await first.rt.start(a)
      await fileIn(stateDir, a.placementId, 'ready')
    }
    await first.rt.stop(quick.placementId, 'not ready after 5 s: GET /health answered 503', 'failed')
    const stopping = first.rt.stop(stubborn.placementId, 'not ready after 5 s: connection refused', 'failed')
    await eventually(
      () => readRecordJson(stateDir, stubborn.placementId).stopRequested !== null,
      10_000,
      'the stop to be recorded'
    )
    await first.rt.close()
    await stopping
    const second = runtime(t, { stateDir, stopGraceMs: 300 })
    await second.rt.recover()
    t.same(
      {
        quick: first.statuses(quick.placementId).at(-1),
        stubborn: await second.until(stubborn.placementId),
        record: readRecordJson(stateDir, stubborn.placementId).state
      },
      {
        quick: {
          placementId: quick.placementId,
          state: 'failed',
          exitCode: 143,
          reason: 'not ready after 5 s: GET /health answered 503'
        },
        stubborn: {
          placementId: stubborn.placementId,
          state: 'failed',
          exitCode: null,
          reason: 'not ready after 5 s: connection refused'
        },
        record: 'failed'
      }
    )
  }
)

t.test('stop: the whole process group dies, grandchildren too; a natural end takes leftovers with it', async (t) => {
  const stateDir = scratch(t)
  const { rt, until } = runtime(t, { stateDir, stopGraceMs: 500 })
  const a = assignment({
    command: sh('sleep 60 & echo $! > grandchild; sh -c "trap \\"\\" TERM; sleep 60" & echo $! > stubborn; wait')
  })
  await rt.start(a)
  const grandchild = Number(await fileIn(stateDir, a.placementId, 'grandchild'))
  const stubborn = Number(await fileIn(stateDir, a.placementId, 'stubborn'))
  const wrapper = readRecordJson(stateDir, a.placementId).pid
  t.ok(alive(grandchild) && alive(stubborn))
  await rt.stop(a.placementId, 'stop')
  t.match(await until(a.placementId), { state: 'stopped' })
  t.notOk(alive(grandchild), 'grandchild gone')
  t.notOk(alive(stubborn), 'a grandchild ignoring SIGTERM is SIGKILLed too')
  t.notOk(alive(wrapper), 'wrapper gone')

  const leaves = assignment({ command: sh('sleep 60 & echo $! > grandchild; exit 0') })
  await rt.start(leaves)
  t.match(await until(leaves.placementId), { state: 'exited', exitCode: 0 })
  const left = Number(await fileIn(stateDir, leaves.placementId, 'grandchild'))
  t.notOk(alive(left), 'what the command left behind is killed before the end is reported (the GPUs are free then)')
})

// ------------------------------------------------------------------ failures and bad input

t.test('start failures: missing or non-executable command -> failed with the reason', async (t) => {
  const stateDir = scratch(t)
  const { rt, states, until } = runtime(t, { stateDir })
  const missing = assignment({ command: ['gpumesh-no-such-command', '--flag'] })
  await rt.start(missing)
  const m = await until(missing.placementId)
  t.match(m, {
    state: 'failed',
    exitCode: null,
    reason: /executable not found: gpumesh-no-such-command is not in PATH .*ENOENT/
  })
  t.same(states(missing.placementId), ['starting', 'failed'])
  t.equal(readRecordJson(stateDir, missing.placementId).state, 'failed', 'recorded')

  const path = assignment({ command: ['/nonexistent/bin/serve'] })
  await rt.start(path)
  t.match(await until(path.placementId), { state: 'failed', reason: /executable not found: \/nonexistent\/bin\/serve/ })

  const file = join(stateDir, 'not-executable.sh')
  writeFileSync(file, '#!/bin/sh\necho hi\n')
  chmodSync(file, 0o644)
  const denied = assignment({ command: [file] })
  await rt.start(denied)
  // root may execute a file with any x bit; this one has none, so root is refused too
  t.match(await until(denied.placementId), { state: 'failed', reason: /permission denied.*EACCES/ })
  t.notOk(existsSync(join(pdir(stateDir, denied.placementId), 'pid')), 'nothing ran')
})

t.test('an endpoint replica whose port another process holds fails at launch, never run', async (t) => {
  const stateDir = scratch(t)
  const { rt, states, until } = runtime(t, { stateDir })
  const holder = createServer()
  await new Promise<void>((resolve) => holder.listen(0, '0.0.0.0', resolve))
  t.teardown(() => holder.close())
  const port = (holder.address() as AddressInfo).port
  const a = assignment({ command: sh('echo ran > ran'), port, serve: { readiness: { path: '/health' } } })
  await rt.start(a)
  t.same(
    {
      end: await until(a.placementId),
      states: states(a.placementId),
      ran: existsSync(join(pdir(stateDir, a.placementId), 'ran'))
    },
    {
      end: {
        placementId: a.placementId,
        state: 'failed',
        exitCode: null,
        reason: `port ${port} is in use on this host by another process`
      },
      states: ['starting', 'failed'],
      ran: false
    }
  )
})

t.test('bad input: a non-uuid id or an empty command is refused, never run; a known id is a no-op', async (t) => {
  const stateDir = scratch(t)
  const { rt, states, statuses, until } = runtime(t, { stateDir })
  const marker = join(stateDir, 'ran')
  const evil = assignment({ placementId: '../../escape', command: sh(`touch ${marker}`) })
  await rt.start(evil)
  t.match(await until('../../escape'), { state: 'failed', reason: /placementId "..\/..\/escape" is not a uuid/ })
  t.notOk(existsSync(marker), 'not run')
  t.notOk(existsSync(join(stateDir, 'escape')) || existsSync(join(stateDir, 'placements')), 'nothing written for it')

  const empty = assignment({ command: [] })
  await rt.start(empty)
  t.match(await until(empty.placementId), { state: 'failed', reason: /run.command is empty/ })
  t.same(states(empty.placementId), ['failed'])

  const blankArg = assignment({ command: ['sh', ''] })
  await rt.start(blankArg)
  t.match(await until(blankArg.placementId), { state: 'failed', reason: /empty or non-string argument/ })

  const badEnv = assignment({ command: sh(`touch ${marker}`), env: { 'A=B': 'x' } })
  await rt.start(badEnv)
  t.match(await until(badEnv.placementId), { state: 'failed', reason: /env name "A=B"/ })
  t.notOk(existsSync(marker), 'not run')

  const once = assignment({ command: sh('echo run >> count') })
  await Promise.all([rt.start(once), rt.start(once)])
  await until(once.placementId)
  await rt.start(once)
  t.equal(readFileSync(join(pdir(stateDir, once.placementId), 'count'), 'utf8'), 'run\n', 'ran once')
  t.same(states(once.placementId), ['starting', 'running', 'exited'], 'no status for the repeats')

  // Known on disk from an earlier agent, not recovered into this one: still not run twice.
  const { rt: other } = runtime(t, { stateDir })
  await other.start(once)
  t.equal(readFileSync(join(pdir(stateDir, once.placementId), 'count'), 'utf8'), 'run\n')
  t.equal(statuses(once.placementId).length, 3)
})

// ------------------------------------------------------------------ restart and recovery

t.test(
  'restart: close() leaves the workload running; a new runtime re-adopts it, sees it exit with its code',
  async (t) => {
    const stateDir = scratch(t)
    const first = runtime(t, { stateDir })
    const a = assignment({ command: sh('echo $$ > ready; while [ ! -e go ]; do sleep 0.05; done; exit 3') })
    await first.rt.start(a)
    await fileIn(stateDir, a.placementId, 'ready')
    await first.rt.close()
    const pid = readRecordJson(stateDir, a.placementId).pid
    // Alive now, and (below) it exits later with its own code 3: close() did not end it.
    t.ok(alive(pid), 'still running after close()')
    t.equal(readRecordJson(stateDir, a.placementId).state, 'running')

    const second = runtime(t, { stateDir })
    const recovered = await second.rt.recover()
    t.same(
      recovered,
      [{ placementId: a.placementId, state: 'running', exitCode: null, reason: null }],
      're-adopted as running'
    )
    t.same(second.rt.list(), recovered)
    t.same(await second.rt.recover(), recovered, 'recover() again: the same answer, nothing adopted twice')
    writeFileSync(join(pdir(stateDir, a.placementId), 'go'), '')
    t.same(await second.until(a.placementId), {
      placementId: a.placementId,
      state: 'exited',
      exitCode: 3,
      reason: null
    })
    t.same(second.states(a.placementId), ['exited'])
    t.same(first.states(a.placementId), ['starting', 'running'], 'the closed runtime reported nothing more')
    t.equal(readRecordJson(stateDir, a.placementId).state, 'exited')

    // A third agent finds it ended and reported: known, not run again.
    const third = runtime(t, { stateDir })
    t.same(await third.rt.recover(), [{ placementId: a.placementId, state: 'exited', exitCode: 3, reason: null }])
    await third.rt.start(a)
    t.same(third.states(a.placementId), [], 'no status, no second run')
  }
)

t.test(
  'crash: the agent process is SIGKILLed; the workload lives on and is re-adopted, stopped or seen exiting',
  async (t) => {
    const stateDir = scratch(t)
    const a = assignment({ command: sh('echo $$ > ready; while [ ! -e go ]; do sleep 0.05; done; exit 4') })
    const b = assignment({
      command: sh('trap "echo term > got-term; exit 9" TERM; echo $$ > ready; while :; do sleep 0.05; done')
    })
    // The agent: another node process, the workloads' parent until it dies.
    const code = `
    const { createRuntime } = await import(process.argv[1])
    const rt = createRuntime({ stateDir: process.argv[2] })
    for (const a of JSON.parse(process.argv[3])) await rt.start(a)
    console.log(JSON.stringify(rt.list()))
    setInterval(() => {}, 60_000)`
    const agent = execa(
      process.execPath,
      ['--input-type=module', '-e', code, RUNTIME_JS, stateDir, JSON.stringify([a, b])],
      { reject: false, stdin: 'ignore' }
    )
    const started = await eventually(
      () => agent.pid !== undefined && existsSync(join(pdir(stateDir, b.placementId), 'ready')),
      10_000,
      'the agent to start both placements'
    )
    t.ok(started)
    await eventually(
      () => readRecordJson(stateDir, b.placementId).state === 'running',
      10_000,
      'the agent to report them running'
    )
    agent.kill('SIGKILL')
    const r = await agent
    t.equal(r.signal, 'SIGKILL', 'the agent is gone')
    const pidA = readRecordJson(stateDir, a.placementId).pid
    const pidB = readRecordJson(stateDir, b.placementId).pid
    t.ok(alive(pidA) && alive(pidB), 'the workloads outlived it')
    t.not(readProcStat(pidA)?.pgrp, readProcStat(process.pid)?.pgrp, 'in a process group of its own')

    const { rt, until, states } = runtime(t, { stateDir, stopGraceMs: 3_000 })
    const recovered = await rt.recover()
    t.same(
      recovered.map((s) => s.state),
      ['running', 'running']
    )
    await rt.stop(b.placementId, 'fenced')
    t.same(
      await until(b.placementId),
      { placementId: b.placementId, state: 'stopped', exitCode: 9, reason: 'fenced' },
      'stop works on a process we are not the parent of'
    )
    t.equal(readFileSync(join(pdir(stateDir, b.placementId), 'got-term'), 'utf8'), 'term\n')
    writeFileSync(join(pdir(stateDir, a.placementId), 'go'), '')
    t.same(
      await until(a.placementId),
      { placementId: a.placementId, state: 'exited', exitCode: 4, reason: null },
      "its exit code, read from the wrapper's file"
    )
    t.same(states(a.placementId), ['exited'])
  }
)

t.test(
  'recovery: ended while no runtime watched -> exited with its code, or lost without one; a reused pid is not adopted',
  async (t) => {
    const stateDir = scratch(t)
    const first = runtime(t, { stateDir })
    const ends = assignment({ command: sh('echo $$ > ready; while [ ! -e go ]; do sleep 0.05; done; exit 5') })
    const killed = assignment({ command: ['sleep', '60'] })
    const reused = assignment({ command: ['sleep', '60'] })
    const running = assignment({ command: ['sleep', '60'] })
    for (const a of [ends, killed, reused, running]) await first.rt.start(a)
    await fileIn(stateDir, ends.placementId, 'ready')
    await first.rt.close()

    writeFileSync(join(pdir(stateDir, ends.placementId), 'go'), '')
    await fileIn(stateDir, ends.placementId, 'exit-code')
    for (const a of [killed, reused]) {
      const pid = readRecordJson(stateDir, a.placementId).pid
      process.kill(-pid, 'SIGKILL') // no exit code can be written
      await eventually(() => !alive(pid), 10_000, `${pid} to die`)
    }
    // The reused pid: a live process that is not ours (the test's own, unrelated).
    const stranger = execa('sleep', ['60'], { reject: false, detached: true, stdin: 'ignore' })
    t.teardown(() => {
      stranger.kill('SIGKILL')
    })
    const strangerPid = stranger.pid as number
    writeRecordJson(stateDir, reused.placementId, { ...readRecordJson(stateDir, reused.placementId), pid: strangerPid })

    const second = runtime(t, { stateDir })
    const recovered = await second.rt.recover()
    const byId = new Map(recovered.map((s) => [s.placementId, s]))
    t.same(byId.get(ends.placementId), { placementId: ends.placementId, state: 'exited', exitCode: 5, reason: null })
    t.match(byId.get(killed.placementId), {
      state: 'lost',
      exitCode: null,
      reason: /is gone and no exit code was recorded/
    })
    t.match(byId.get(reused.placementId), {
      state: 'lost',
      exitCode: null,
      reason: new RegExp(`pid ${strangerPid} now belongs to another process`)
    })
    t.same(byId.get(running.placementId), {
      placementId: running.placementId,
      state: 'running',
      exitCode: null,
      reason: null
    })
    t.ok(alive(strangerPid), 'the stranger was neither adopted nor signalled')
    t.same(second.states(ends.placementId), ['exited'], 'ends found at recovery are emitted as status too')
    t.same(second.states(running.placementId), [], 'still running: nothing changed')
    t.equal(readRecordJson(stateDir, killed.placementId).state, 'lost', 'recorded')

    await second.rt.stop(running.placementId, 'done')
    t.match(await second.until(running.placementId), { state: 'stopped', exitCode: 143 })
  }
)

t.test(
  'recovery: a stop cut short by a restart is finished; a placement recorded as starting is found by its wrapper',
  async (t) => {
    const stateDir = scratch(t)
    const first = runtime(t, { stateDir, stopGraceMs: 60_000 })
    const stubborn = assignment({ command: IGNORES_TERM })
    const unrecorded = assignment({ command: sh('echo $$ > ready; while [ ! -e go ]; do sleep 0.05; done; exit 6') })
    await first.rt.start(stubborn)
    await first.rt.start(unrecorded)
    await fileIn(stateDir, stubborn.placementId, 'ready')
    await fileIn(stateDir, unrecorded.placementId, 'ready')
    const stopping = first.rt.stop(stubborn.placementId, 'fenced')
    await eventually(
      () => readRecordJson(stateDir, stubborn.placementId).stopRequested !== null,
      10_000,
      'the stop to be recorded'
    )
    await first.rt.close()
    await stopping // abandoned by close(), resolves
    const pid = readRecordJson(stateDir, stubborn.placementId).pid
    t.ok(alive(pid), 'the closed runtime did not SIGKILL it')
    // As if the agent had died between starting the process and recording its pid.
    const rec = readRecordJson(stateDir, unrecorded.placementId)
    writeRecordJson(stateDir, unrecorded.placementId, {
      ...rec,
      state: 'starting',
      pid: null,
      startTime: null,
      bootId: null,
      startedAt: null
    })

    const second = runtime(t, { stateDir, stopGraceMs: 300 })
    const recovered = await second.rt.recover()
    t.same(
      recovered.find((s) => s.placementId === unrecorded.placementId)?.state,
      'running',
      'found through its pid file and $0'
    )
    t.same(second.states(unrecorded.placementId), ['running'])
    t.equal(readRecordJson(stateDir, unrecorded.placementId).pid, rec.pid)
    t.match(await second.until(stubborn.placementId), { state: 'stopped', reason: 'fenced' }, 'the stop was finished')
    t.notOk(alive(pid))
    writeFileSync(join(pdir(stateDir, unrecorded.placementId), 'go'), '')
    t.match(await second.until(unrecorded.placementId), { state: 'exited', exitCode: 6 })
  }
)

t.test('recovery: an unreadable record is reported lost; a record that never got a process is failed', async (t) => {
  const stateDir = scratch(t)
  const broken = randomUUID()
  mkdirSync(pdir(stateDir, broken), { recursive: true })
  writeFileSync(join(pdir(stateDir, broken), 'placement.json'), '{"version":')
  // As if the agent had died right after recording a placement, before starting anything: the record
  // of a refused placement (no process ever), as the runtime wrote it, turned back into a starting one.
  const never = assignment({ command: [] })
  const first = runtime(t, { stateDir })
  await first.rt.start(never)
  await first.until(never.placementId)
  await first.rt.close()
  const rec = readRecordJson(stateDir, never.placementId)
  t.match(rec, { pid: null, startedAt: null }, 'the refused placement never got a process')
  writeRecordJson(stateDir, never.placementId, {
    ...rec,
    state: 'starting',
    exitCode: null,
    reason: null,
    endedAt: null
  })
  mkdirSync(join(stateDir, 'placements', 'not-a-placement'))
  const { rt } = runtime(t, { stateDir })
  const recovered = await rt.recover()
  t.match(
    recovered.find((s) => s.placementId === broken),
    { state: 'lost', reason: /unreadable placement.json/ }
  )
  t.match(
    recovered.find((s) => s.placementId === never.placementId),
    { state: 'failed', reason: /never ran/ }
  )
  t.equal(recovered.length, 2)
})

// ------------------------------------------------------------------ docker

/** Parses one line of the double's log: shell-quoted arguments. */
function parseQuoted(line: string): string[] {
  const out: string[] = []
  let cur: string | null = null
  for (let i = 0; i < line.length; i++) {
    const c = line[i]
    if (c === "'") {
      const end = line.indexOf("'", i + 1)
      cur = (cur ?? '') + line.slice(i + 1, end)
      i = end
    } else if (c === '\\') {
      cur = (cur ?? '') + line[++i]
    } else if (c === ' ') {
      if (cur !== null) out.push(cur)
      cur = null
    } else {
      cur = (cur ?? '') + c
    }
  }
  if (cur !== null) out.push(cur)
  return out
}

function dockerDouble(t: Test, stateDir: string) {
  const state = join(stateDir, 'docker')
  mkdirSync(state)
  const log = join(stateDir, 'docker.log')
  process.env.DOCKER_DOUBLE_STATE = state
  process.env.DOCKER_DOUBLE_LOG = log
  t.teardown(() => {
    delete process.env.DOCKER_DOUBLE_STATE
    delete process.env.DOCKER_DOUBLE_LOG
  })
  return { calls: () => (existsSync(log) ? readFileSync(log, 'utf8').split('\n').slice(0, -1).map(parseQuoted) : []) }
}

t.test('docker: exact docker run argv with variable names only, values in the container, exit code', async (t) => {
  const stateDir = scratch(t)
  const docker = dockerDouble(t, stateDir)
  const { rt, states, until } = runtime(t, { stateDir, docker: DOCKER_DOUBLE })
  const a = assignment({
    gpus: [2, 3],
    run: {
      driver: 'docker',
      image: 'registry.example/llm:1.2',
      command: ['sh', '-c', 'env | sort; exit 4'],
      env: { HF_HOME: '/data/hf', QUOTED: 'it\'s "x"', HF_TOKEN: 'hf_secret-value' }
    },
    env: { GPUMESH_RANK: '0', GPUMESH_WORLD_SIZE: '2', MASTER_ADDR: '10.0.0.1', MASTER_PORT: '29500' }
  })
  await rt.start(a)
  t.same(
    await until(a.placementId),
    { placementId: a.placementId, state: 'exited', exitCode: 4, reason: null },
    "the container's exit code"
  )
  t.same(states(a.placementId), ['starting', 'running', 'exited'])
  const names = [
    'CUDA_VISIBLE_DEVICES',
    'NVIDIA_VISIBLE_DEVICES',
    'CUDA_DEVICE_ORDER',
    'GPUMESH_WORKLOAD',
    'GPUMESH_PLACEMENT_ID',
    'HF_HOME',
    'QUOTED',
    'HF_TOKEN',
    'GPUMESH_RANK',
    'GPUMESH_WORLD_SIZE',
    'MASTER_ADDR',
    'MASTER_PORT'
  ]
  // Any local user reads a command line (ps, /proc/<pid>/cmdline): values reach docker through its environment.
  t.same(
    docker.calls(),
    [
      [
        'run',
        '--rm',
        '--name',
        `gpumesh-${a.placementId}`,
        '--gpus',
        '"device=2,3"',
        ...names.flatMap((n) => ['-e', n]),
        'registry.example/llm:1.2',
        'sh',
        '-c',
        'env | sort; exit 4'
      ]
    ],
    'docker run argv: --gpus in double quotes, -e with names and no values'
  )
  const env = readLog(stateDir, a.placementId)
    .split('\n')
    .filter((l) => l !== '' && !l.startsWith('PWD=') && !l.startsWith('PATH='))
  t.same(
    env,
    [
      'CUDA_DEVICE_ORDER=PCI_BUS_ID',
      'CUDA_VISIBLE_DEVICES=0,1',
      `GPUMESH_PLACEMENT_ID=${a.placementId}`,
      'GPUMESH_RANK=0',
      `GPUMESH_WORKLOAD=${a.workloadName}`,
      'GPUMESH_WORLD_SIZE=2',
      'HF_HOME=/data/hf',
      'HF_TOKEN=hf_secret-value',
      'MASTER_ADDR=10.0.0.1',
      'MASTER_PORT=29500',
      'NVIDIA_VISIBLE_DEVICES=2,3',
      'QUOTED=it\'s "x"'
    ],
    "the container's environment: the placement's variables, nothing of the agent's"
  )
})

t.test("docker: no GPUs -> no --gpus; docker from the options (the agent's --docker / GPUMESH_DOCKER)", async (t) => {
  const stateDir = scratch(t)
  const docker = dockerDouble(t, stateDir)
  const { rt, until } = runtime(t, { stateDir, docker: DOCKER_DOUBLE })
  const a = inContainer(sh('echo "[$CUDA_VISIBLE_DEVICES] [$NVIDIA_VISIBLE_DEVICES]"'), 'alpine:3')
  await rt.start(a)
  t.match(await until(a.placementId), { state: 'exited', exitCode: 0 })
  const [call] = docker.calls()
  t.notOk(call?.includes('--gpus'), 'no --gpus without GPUs')
  t.same(call?.slice(0, 4), ['run', '--rm', '--name', `gpumesh-${a.placementId}`])
  t.equal(readLog(stateDir, a.placementId), '[] []\n')
})

/** A port nothing listens on now (the kernel's pick): a fixed one may be any other process's. */
async function freePort(): Promise<number> {
  const s = createServer()
  await new Promise<void>((resolve) => s.listen(0, '127.0.0.1', resolve))
  const { port } = s.address() as AddressInfo
  await new Promise((resolve) => s.close(resolve))
  return port
}

t.test('docker: an endpoint replica publishes its port on 127.0.0.1 (the container port, else the same)', async (t) => {
  const stateDir = scratch(t)
  const docker = dockerDouble(t, stateDir)
  const { rt, until } = runtime(t, { stateDir, docker: DOCKER_DOUBLE })
  const serve = { readiness: { path: '/health' } }
  const [p1, p2] = [await freePort(), await freePort()]
  const mapped = assignment({
    run: { driver: 'docker', image: 'vllm', command: sh('echo "PORT=$PORT"') },
    port: p1,
    serve: { ...serve, containerPort: 8000 }
  })
  const same = assignment({ run: { driver: 'docker', image: 'vllm', command: sh('true') }, port: p2, serve })
  for (const a of [mapped, same]) {
    await rt.start(a)
    await until(a.placementId)
  }
  const published = docker.calls().map((c) => c.slice(c.indexOf('-p'), c.indexOf('-p') + 2))
  t.same(
    { published, env: readLog(stateDir, mapped.placementId) },
    {
      published: [
        ['-p', `127.0.0.1:${p1}:8000`],
        ['-p', `127.0.0.1:${p2}:${p2}`]
      ],
      env: `PORT=${p1}\n`
    }
  )
})

t.test('docker: stop is docker stop -t <grace s>; a missing image or docker fails with the reason', async (t) => {
  const stateDir = scratch(t)
  const docker = dockerDouble(t, stateDir)
  const { rt, states, until } = runtime(t, { stateDir, docker: DOCKER_DOUBLE, stopGraceMs: 1_000 })
  const a = inContainer(sh('trap "echo term; exit 0" TERM; echo up; while :; do sleep 0.05; done'))
  await rt.start(a)
  await containerUp(stateDir, a.placementId)
  await rt.stop(a.placementId, 'workload deleted')
  await stoppedByTerm(t, { until, states }, a.placementId, 'workload deleted')
  t.same(docker.calls().slice(1), [['stop', '-t', '1', `gpumesh-${a.placementId}`]])
  t.equal(readLog(stateDir, a.placementId), 'up\nterm\n', 'the container got SIGTERM')

  const before = docker.calls().length
  const noImage = assignment({ run: { driver: 'docker', command: ['serve'] } })
  await rt.start(noImage)
  t.match(await until(noImage.placementId), {
    state: 'failed',
    exitCode: null,
    reason: /run\.image is required by the docker driver/
  })
  const optionImage = assignment({ run: { driver: 'docker', image: '--privileged', command: ['serve'] } })
  await rt.start(optionImage)
  t.match(await until(optionImage.placementId), { state: 'failed', reason: /run\.image must not start with "-"/ })
  t.equal(docker.calls().length, before, 'docker never called')

  const { rt: noDocker, until: untilNoDocker } = runtime(t, { stateDir, docker: join(stateDir, 'no-docker-here') })
  const b = inContainer(['serve'])
  await noDocker.start(b)
  t.match(await untilNoDocker(b.placementId), { state: 'failed', reason: /docker driver: executable not found/ })
})

t.test('docker: stop falls back to the client when docker stop fails', async (t) => {
  const stateDir = scratch(t)
  dockerDouble(t, stateDir)
  const { rt, until } = runtime(t, { stateDir, docker: DOCKER_DOUBLE, stopGraceMs: 1_000 })
  const a = inContainer(sh('echo up; while :; do sleep 0.05; done'))
  await rt.start(a)
  await containerUp(stateDir, a.placementId)
  // The daemon "forgets" the container: docker stop says no such container.
  const pidFile = join(stateDir, 'docker', `gpumesh-${a.placementId}.pid`)
  const container = readFileSync(pidFile, 'utf8')
  rmSync(pidFile)
  t.teardown(() => {
    try {
      process.kill(-Number(container), 'SIGKILL')
    } catch {}
  })
  await rt.stop(a.placementId, 'drain')
  t.match(await until(a.placementId), { state: 'stopped', reason: 'drain' })
  t.notOk(alive(Number(readRecordJson(stateDir, a.placementId).pid)), 'the client is gone')
})

t.test('docker: after a restart, a container whose client died is watched through docker wait', async (t) => {
  const stateDir = scratch(t)
  const docker = dockerDouble(t, stateDir)
  const first = runtime(t, { stateDir, docker: DOCKER_DOUBLE })
  const go = join(stateDir, 'go')
  const a = inContainer(sh(`echo up; while [ ! -e ${go} ]; do sleep 0.05; done; exit 7`))
  const live = inContainer(['sleep', '60'])
  await first.rt.start(a)
  await first.rt.start(live)
  await containerUp(stateDir, a.placementId)
  await first.rt.close()
  const client = readRecordJson(stateDir, a.placementId).pid
  process.kill(-client, 'SIGKILL') // the client dies; the container (its own session) does not
  await eventually(() => !alive(client), 10_000, 'the client to die')

  const second = runtime(t, { stateDir, docker: DOCKER_DOUBLE, stopGraceMs: 1_000 })
  const recovered = await second.rt.recover()
  t.same(
    recovered.map((s) => s.state),
    ['running', 'running']
  )
  t.ok(
    docker.calls().some((c) => c[0] === 'inspect' && c.includes(`gpumesh-${a.placementId}`)),
    'asked docker about the container'
  )
  t.notOk(
    docker.calls().some((c) => c[0] === 'inspect' && c.includes(`gpumesh-${live.placementId}`)),
    'not about the one whose client lives'
  )
  t.ok(
    await eventually(
      () => docker.calls().some((c) => c[0] === 'wait' && c[1] === `gpumesh-${a.placementId}`),
      10_000,
      'docker wait'
    ),
    'watching it with docker wait'
  )
  writeFileSync(go, '')
  t.same(await second.until(a.placementId), { placementId: a.placementId, state: 'exited', exitCode: 7, reason: null })
  await second.rt.stop(live.placementId, 'bye')
  t.match(
    await second.until(live.placementId),
    { state: 'stopped', exitCode: 143, reason: 'bye' },
    'a re-adopted client is stopped with docker stop'
  )
})
