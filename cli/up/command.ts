// gpumesh up: a local cluster in one command (coordinator, embedded
// PostgreSQL, an agent for this machine, simulated GPU hosts), printed as the
// token, API address, pools and hosts a person needs to start using it.
// Runs in the foreground; Ctrl-C (or SIGTERM) stops everything it started.
import { homedir } from 'node:os'
import { join } from 'node:path'
import { Option, type Command } from 'commander'
import { EXIT_CONFIG, nonNegativeInt } from '../../common/cli.js'
import { createLogger } from '../../common/log.js'
import type { LocalCluster } from './cluster.js'
import { availableMachines } from './machines.js'
import { hostsTable, poolsTable } from '../render.js'

/** Root can keep it under /var/lib (reachable by the postgres user embedded PostgreSQL runs as). */
export function defaultUpDir (env: NodeJS.ProcessEnv = process.env): string {
  if (process.getuid?.() === 0) return '/var/lib/gpumesh/up'
  const state = env.XDG_STATE_HOME !== undefined && env.XDG_STATE_HOME !== '' ? env.XDG_STATE_HOME : join(homedir(), '.local/state')
  return join(state, 'gpumesh/up')
}

interface UpOptions { simulate: number, machines?: string, stateDir?: string, apiListen: string, localAgent: boolean, databaseUrl?: string, json?: boolean }

export function upCommand (program: Command): void {
  program.command('up')
    .description('start a whole cluster on this machine: coordinator (embedded PostgreSQL), an agent for this host, and --simulate N hosts with GPUs from real captured machines; Ctrl-C stops it')
    .addOption(new Option('--simulate <n>', 'simulated GPU hosts to add').default(0).argParser(nonNegativeInt))
    .option('--machines <list>', `their machines, in turn (comma-separated): ${availableMachines().join(', ')}`)
    .addOption(new Option('--state-dir <dir>', 'where the cluster keeps its state (default: /var/lib/gpumesh/up as root, else ~/.local/state/gpumesh/up)').env('GPUMESH_UP_DIR'))
    .addOption(new Option('--api-listen <host:port>', 'admin API address').default('127.0.0.1:7470'))
    .option('--no-local-agent', 'no agent for this machine (simulated hosts only)')
    .addOption(new Option('--database-url <url>', 'external PostgreSQL instead of the embedded one').env('DATABASE_URL'))
    .action(async (o: UpOptions, cmd: Command) => {
      const json = cmd.optsWithGlobals<{ json?: boolean }>().json === true
      const stateDir = o.stateDir ?? defaultUpDir()
      const logFile = join(stateDir, 'gpumesh.log')
      const log = createLogger('gpumesh-up', { file: logFile })
      const say = (line: string) => { process.stderr.write(`${line}\n`) }
      const progress = ticker(say)
      let cluster: LocalCluster
      try {
        // Loaded here: the whole coordinator and agent would slow every other CLI command's start.
        const { startLocalCluster } = await import('./cluster.js')
        cluster = await startLocalCluster({
          stateDir,
          apiListen: o.apiListen,
          simulate: o.simulate,
          ...(o.machines === undefined ? {} : { machines: o.machines.split(',').map((m) => m.trim()).filter((m) => m !== '') }),
          localAgent: o.localAgent,
          ...(o.databaseUrl === undefined || o.databaseUrl === '' ? {} : { databaseUrl: o.databaseUrl }),
          log,
          progress: progress.step
        })
      } catch (err) {
        progress.done()
        say(`error: ${(err as Error).message} (log: ${logFile})`)
        process.exitCode = /unknown simulated machine|must be host:port/.test((err as Error).message) ? EXIT_CONFIG : 1
        return
      }
      progress.done()
      const { hosts, pools } = await cluster.snapshot()
      const env = `export GPUMESH_API=${cluster.api} GPUMESH_TOKEN=${cluster.adminToken}`
      if (json) {
        process.stdout.write(JSON.stringify({ api: cluster.api, adminToken: cluster.adminToken, stateDir, logFile, pools, hosts }) + '\n')
      } else {
        process.stdout.write([
          `gpumesh is up: ${hosts.length} host${hosts.length === 1 ? '' : 's'} in ${pools.length} pool${pools.length === 1 ? '' : 's'}`,
          '',
          `  API          ${cluster.api}`,
          `  admin token  ${cluster.adminToken}`,
          `  state        ${stateDir}`,
          `  log          ${logFile}`,
          '',
          poolsTable(pools).trimEnd(),
          '',
          hostsTable(hosts).trimEnd(),
          '',
          'In another terminal:',
          `  ${env}`,
          `  echo '${JSON.stringify({ name: 'hello', kind: 'endpoint', replicas: 1, gpus: 1, pools: [pools.find((p) => p.key !== 'cpu')?.key ?? pools[0]?.key ?? 'cpu'], run: { driver: 'process', command: ['sh', '-c', 'echo GPUs $CUDA_VISIBLE_DEVICES; exec sleep 3600'] } })}' | gpumesh workloads create -f -`,
          '  gpumesh workloads get hello',
          '',
          'Ctrl-C stops the cluster and its workloads.',
          ''
        ].join('\n'))
      }
      await new Promise<void>((resolve) => {
        let stopping = false
        const stop = (signal: NodeJS.Signals) => {
          // A second Ctrl-C must not kill the process halfway: workloads and PostgreSQL would be left behind.
          if (stopping) { say(`${signal}: already stopping`); return }
          stopping = true
          say(`${signal}: stopping workloads, agents, coordinator and PostgreSQL...`)
          cluster.stop().then(() => { say('stopped'); resolve() }, (err: Error) => { say(`stop failed: ${err.message}`); process.exitCode = 1; resolve() })
            .finally(() => { process.removeListener('SIGINT', stop); process.removeListener('SIGTERM', stop) })
        }
        process.on('SIGINT', stop)
        process.on('SIGTERM', stop)
      })
    })
}

/** Progress lines; on a terminal, a step that takes a while shows its elapsed seconds. */
function ticker (say: (line: string) => void): { step: (s: string) => void, done: () => void } {
  const tty = process.stderr.isTTY
  let current = ''
  let started = 0
  let timer: NodeJS.Timeout | undefined
  const finish = () => {
    if (current === '') return
    if (tty) process.stderr.write(`\r\x1b[K${current}: ${((Date.now() - started) / 1000).toFixed(1)} s\n`)
    current = ''
  }
  return {
    step: (s) => {
      finish()
      current = s
      started = Date.now()
      if (!tty) { say(`${s}...`); return }
      process.stderr.write(`${s}...`)
      clearInterval(timer)
      timer = setInterval(() => { process.stderr.write(`\r\x1b[K${current}... ${Math.floor((Date.now() - started) / 1000)} s`) }, 1000)
      timer.unref()
    },
    done: () => { clearInterval(timer); finish() }
  }
}
