// The daemons under systemd: Type=notify readiness and watchdog through a
// real NOTIFY_SOCKET, journald priority prefixes, and the unit files as
// `systemd-analyze verify` sees them (any output is a failure: it exits 0 on
// unknown keys).
import { spawnSync } from 'node:child_process'
import { chmodSync, cpSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { execa, type ResultPromise } from 'execa'
import t, { type Test } from 'tap'
import { journalPrefix } from '../common/log.js'
import { systemdNotifier } from '../common/systemd.js'
import { cleanEnv } from './helpers/agent.js'
import { eventually, startTestCoordinator } from './helpers/coordinator.js'
import { AGENT_RUN, ROOT } from './helpers/fixtures.js'
import { agentProcessEnv } from './helpers/mesh.js'
import { notifySocket } from './helpers/notify-socket.js'
import { freshDatabase } from './helpers/postgres.js'
import { Mismatches } from './helpers/mismatches.js'

const UNITS = ['gpumesh-agent.service', 'gpumesh-coordinator.service']
const LEVEL_TO_PRIORITY: Record<number, number> = { 60: 2, 50: 3, 40: 4, 30: 6, 20: 7, 10: 7 }

/** stdout lines as journald gets them: `<priority>{pino JSON}`, each priority matching its level. */
function checkJournalLines(t: Test, output: string): void {
  const lines = output.split('\n').filter((l) => l !== '')
  t.ok(lines.length > 0, 'it logged')
  const wrong = lines.filter((l) => {
    const m = /^<(\d)>(\{.*\})$/.exec(l)
    if (m === null) return true
    const level = (JSON.parse(m[2] as string) as { level: number }).level
    return LEVEL_TO_PRIORITY[level] !== Number(m[1])
  })
  t.same(wrong, [], 'every line carries the syslog priority of its level')
}

async function stopped(t: Test, child: ResultPromise): Promise<void> {
  child.kill('SIGTERM')
  const r = await child
  t.equal(r.exitCode, 0, 'exits 0 on SIGTERM')
}

/** A daemon process with exactly `env`; its stdout collected, killed if the test ends first. */
function runDaemon(
  t: Test,
  args: string[],
  env: Record<string, string>
): { child: ResultPromise; output: () => string } {
  const child = execa(process.execPath, args, { env, extendEnv: false, reject: false, timeout: 60_000 })
  let output = ''
  child.stdout?.on('data', (d: Buffer) => {
    output += d.toString()
  })
  t.teardown(() => {
    child.kill('SIGKILL')
  })
  return { child, output: () => output }
}

t.test('the agent tells systemd it is ready, pings the watchdog and says when it stops', async (t) => {
  const c = await startTestCoordinator(t)
  const notify = await notifySocket(t)
  const stateDir = mkdtempSync(join(tmpdir(), 'gpumesh-notify-agent-'))
  t.teardown(() => rmSync(stateDir, { recursive: true, force: true }))
  const daemon = runDaemon(
    t,
    AGENT_RUN,
    await agentProcessEnv(c, stateDir, 'l40s-1x', {
      NOTIFY_SOCKET: notify.path,
      // What systemd sets for WatchdogSec=1s; pings go every half period.
      WATCHDOG_USEC: '1000000',
      JOURNAL_STREAM: '8:12345'
    })
  )
  t.match(await notify.next(/READY=1/), /^READY=1\|STATUS=serving as 12D3KooW\w+/, 'READY=1 with a status')
  // Pings keep coming, paced by the half-period timer (never in bursts: a late one is not made up for).
  const pings = () =>
    notify
      .received()
      .filter((r) => r.message === 'WATCHDOG=1')
      .map((r) => r.at)
  const at = await eventually(() => (pings().length >= 5 ? pings() : undefined), 60_000, 'five watchdog pings')
  const gaps = at.slice(1).map((ms, i) => Math.round(ms - (at[i] as number)))
  t.same(
    gaps.filter((ms) => ms < 250),
    [],
    `no two pings closer than a quarter of the period (gaps: ${gaps.join(', ')} ms)`
  )
  await stopped(t, daemon.child)
  t.ok(notify.messages().includes('STOPPING=1'), 'STOPPING=1 on SIGTERM')
  t.ok(
    notify.messages().indexOf('STOPPING=1') > notify.messages().findIndex((m) => m.startsWith('READY=1')),
    'after READY'
  )
  checkJournalLines(t, daemon.output())
})

t.test('the coordinator is ready once its API serves, and pings the watchdog', async (t) => {
  const notify = await notifySocket(t)
  const stateDir = mkdtempSync(join(tmpdir(), 'gpumesh-notify-coord-'))
  t.teardown(() => rmSync(stateDir, { recursive: true, force: true }))
  const daemon = runDaemon(
    t,
    [join(ROOT, 'dist/coordinator/main.js'), 'run'],
    cleanEnv({
      NOTIFY_SOCKET: notify.path,
      WATCHDOG_USEC: '1000000',
      JOURNAL_STREAM: '8:12345',
      DATABASE_URL: await freshDatabase(t),
      GPUMESH_STATE_DIR: stateDir,
      GPUMESH_API_LISTEN: '127.0.0.1:0',
      GPUMESH_GATEWAY_LISTEN: '127.0.0.1:0',
      GPUMESH_LISTEN: '/ip4/127.0.0.1/tcp/0'
    })
  )
  const ready = await notify.next(/READY=1/)
  const api = /STATUS=API on (http:\/\/127\.0\.0\.1:\d+)/.exec(ready)?.[1]
  t.ok(api, `READY=1 names the API (${ready})`)
  const live = await fetch(`${api ?? ''}/livez`)
  t.equal(live.status, 200, 'and the API answers by then')
  await notify.next(/WATCHDOG=1/)
  await stopped(t, daemon.child)
  t.ok(notify.messages().includes('STOPPING=1'), 'STOPPING=1 on SIGTERM')
  checkJournalLines(t, daemon.output())
})

t.test('no watchdog ping while the daemon is not healthy', async (t) => {
  const notify = await notifySocket(t)
  const pings = () => notify.messages().filter((m) => m === 'WATCHDOG=1').length
  let healthy = true
  let sentHealthy = 0
  let unhealthyTicks = 0
  const n = systemdNotifier({ NOTIFY_SOCKET: notify.path, WATCHDOG_USEC: '200000', PATH: process.env.PATH ?? '' })
  t.teardown(() => {
    n.close()
  })
  n.watchdog(() => {
    if (healthy) sentHealthy++
    else unhealthyTicks++
    return healthy
  })
  await notify.next(/WATCHDOG=1/, 15_000)
  healthy = false
  await eventually(() => unhealthyTicks >= 3, 10_000, 'three watchdog ticks while unhealthy')
  // A marker sent after those ticks: a ping sent for any of them would be queued on the socket before it.
  n.ready('marker')
  await notify.next(/STATUS=marker/, 10_000)
  await eventually(() => pings() >= sentHealthy, 10_000, 'the pings sent while healthy')
  t.equal(
    pings(),
    sentHealthy,
    `one ping per healthy tick, none for the ${unhealthyTicks} unhealthy ones (systemd would restart the daemon)`
  )
  const before = pings()
  healthy = true
  await eventually(() => pings() > before, 10_000, 'a ping once healthy again')
  t.pass('pings again once healthy')
  n.close()
})

t.test('without NOTIFY_SOCKET nothing is sent', async (t) => {
  // systemd-notify behind a wrapper that records each call: the one call expected is the marker, sent with a socket.
  const dir = mkdtempSync(join(tmpdir(), 'gpumesh-notify-calls-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  const calls = join(dir, 'calls')
  const wrapper = join(dir, 'systemd-notify')
  writeFileSync(wrapper, `#!/bin/sh\necho "$*" >> ${calls}\nexec systemd-notify "$@"\n`)
  chmodSync(wrapper, 0o755)
  const none = systemdNotifier({ PATH: process.env.PATH ?? '', WATCHDOG_USEC: '200000' }, wrapper)
  none.ready('x')
  let ticks = 0
  none.watchdog(() => {
    ticks++
    return true
  })
  await eventually(() => ticks >= 3, 10_000, 'three healthy watchdog ticks')
  none.stopping()
  const notify = await notifySocket(t)
  systemdNotifier({ NOTIFY_SOCKET: notify.path, PATH: process.env.PATH ?? '' }, wrapper).ready('marker')
  await notify.next(/STATUS=marker/, 10_000)
  t.same(
    readFileSync(calls, 'utf8')
      .split('\n')
      .filter((l) => l !== ''),
    ['--ready --status=marker'],
    'only the call made with a socket'
  )
})

t.test('journald prefixes map pino levels to syslog priorities', async (t) => {
  const cases: Array<[string, string, string]> = [
    ['error -> err', '{"level":50,"msg":"x"}', '<3>{"level":50,"msg":"x"}'],
    ['warn -> warning', '{"level":40}', '<4>{"level":40}'],
    ['info', '{"level":30}', '<6>{"level":30}'],
    ['fatal -> crit', '{"level":60}', '<2>{"level":60}'],
    ['debug', '{"level":20}', '<7>{"level":20}']
  ]
  const m = new Mismatches()
  for (const [what, line, prefixed] of cases) m.check(what, 'prefixed line', journalPrefix(line), prefixed)
  t.same(m.list, [], 'each level: its priority')
})

t.test('the unit files', async (t) => {
  const m = new Mismatches()
  for (const name of UNITS) {
    const lines = readFileSync(join(ROOT, 'systemd', name), 'utf8').split('\n')
    const role = name.replace(/^gpumesh-|\.service$/g, '')
    for (const line of [
      'Type=notify',
      'NotifyAccess=all',
      'Restart=on-failure',
      'RestartPreventExitStatus=78',
      `EnvironmentFile=-/etc/gpumesh/${role}.env`,
      `StateDirectory=gpumesh/${role}`,
      `ExecStart=/usr/local/bin/gpumesh-${role} run`
    ])
      m.check(name, line, lines.includes(line), true)
    m.check(
      name,
      'WatchdogSec=<n>s',
      lines.some((l) => /^WatchdogSec=\d+s$/.test(l)),
      true
    )
  }
  t.same(m.list, [], 'each unit has each line it needs')
  const agent = readFileSync(join(ROOT, 'systemd/gpumesh-agent.service'), 'utf8')
  t.notMatch(agent, /^PrivateDevices=/m, 'the agent keeps /dev/nvidia* visible')
  t.match(agent, /^KillMode=process$/m, 'an agent restart leaves its workloads running')
})

t.test('systemd-analyze verify: no output for either unit', async (t) => {
  const probe = spawnSync('systemd-analyze', ['--version'], { encoding: 'utf8' })
  if (probe.error !== undefined)
    throw new Error(`systemd-analyze is not installed (Debian: apt-get install systemd): ${probe.error.message}`)
  // A root holding systemd's own units (for the targets ours depend on), our units, and the commands they run.
  const root = mkdtempSync(join(tmpdir(), 'gpumesh-verify-'))
  t.teardown(() => rmSync(root, { recursive: true, force: true }))
  cpSync('/usr/lib/systemd/system', join(root, 'usr/lib/systemd/system'), { recursive: true, verbatimSymlinks: true })
  mkdirSync(join(root, 'etc/systemd/system'), { recursive: true })
  mkdirSync(join(root, 'usr/local/bin'), { recursive: true })
  for (const name of UNITS) {
    cpSync(join(ROOT, 'systemd', name), join(root, 'etc/systemd/system', name))
    const cmd = join(root, 'usr/local/bin', name.replace(/\.service$/, ''))
    writeFileSync(cmd, '#!/bin/sh\n')
    chmodSync(cmd, 0o755)
  }
  const verify = () => spawnSync('systemd-analyze', ['verify', `--root=${root}`, ...UNITS], { encoding: 'utf8' })
  const r = verify()
  t.equal(r.stdout + r.stderr, '', 'nothing to say')
  t.equal(r.status, 0)
  // The check can fail: an unknown key is reported (while the exit status stays 0).
  writeFileSync(
    join(root, 'etc/systemd/system/gpumesh-agent.service'),
    readFileSync(join(ROOT, 'systemd/gpumesh-agent.service'), 'utf8').replace('[Service]', '[Service]\nPrivateGPUs=yes')
  )
  const bad = verify()
  t.match(bad.stdout + bad.stderr, /Unknown key 'PrivateGPUs'/, 'an unknown key is reported')
})
