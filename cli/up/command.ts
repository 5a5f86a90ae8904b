// gpumesh up: a local cluster in one command (coordinator, embedded
// PostgreSQL, an agent for this machine, simulated GPU hosts), printed as the
// token, API address, pools and hosts a person needs to start using it.
// Runs in the foreground; Ctrl-C (or SIGTERM) stops everything it started.
import { homedir } from 'node:os'
import { join } from 'node:path'
import { Option, type Command } from 'commander'
import { nonNegativeInt } from '../../common/cli.js'
import { exitCodeFor } from '../../common/config-error.js'
import { stopOnSignals } from '../../common/daemon/shutdown.js'
import { surviveLostOutput, writeIfOpen } from '../../common/daemon/stdio.js'
import { createLogger, loggerSettings } from '../../common/log.js'
import type { LocalCluster } from './cluster.js'
import { availableMachines } from './machines.js'
import { hostsTable, poolsTable } from '../render.js'

/** Root can keep it under /var/lib (reachable by the postgres user embedded PostgreSQL runs as). */
export function defaultUpDir(env: NodeJS.ProcessEnv): string {
  if (process.getuid?.() === 0) return '/var/lib/gpumesh/up'
  const state =
    env.XDG_STATE_HOME !== undefined && env.XDG_STATE_HOME !== '' ? env.XDG_STATE_HOME : join(homedir(), '.local/state')
  return join(state, 'gpumesh/up')
}

interface UpOptions {
  simulate: number
  machines?: string
  stateDir?: string
  apiListen: string
  gatewayListen: string
  localAgent: boolean
  databaseUrl?: string
  docker?: string
  json?: boolean
}

export function upCommand(program: Command): void {
  program
    .command('up')
    .description(
      'start a whole cluster on this machine: coordinator (embedded PostgreSQL), an agent for this host, and --simulate N hosts with GPUs from real captured machines; Ctrl-C stops it'
    )
    .addOption(new Option('--simulate <n>', 'simulated GPU hosts to add').default(0).argParser(nonNegativeInt))
    .option('--machines <list>', `their machines, in turn (comma-separated): ${availableMachines().join(', ')}`)
    .addOption(
      new Option(
        '--state-dir <dir>',
        'where the cluster keeps its state (default: /var/lib/gpumesh/up as root, else ~/.local/state/gpumesh/up)'
      ).env('GPUMESH_UP_DIR')
    )
    .addOption(new Option('--api-listen <host:port>', 'admin API address').default('127.0.0.1:7470'))
    .addOption(
      new Option('--gateway-listen <host:port>', 'gateway address (calls to endpoints)').default('127.0.0.1:7480')
    )
    .option('--no-local-agent', 'no agent for this machine (simulated hosts only)')
    .addOption(
      new Option('--database-url <url>', 'external PostgreSQL instead of the embedded one').env('DATABASE_URL')
    )
    .addOption(
      new Option('--docker <path>', "docker client for the agents' docker placements").env('GPUMESH_DOCKER').hideHelp()
    )
    .action(async (o: UpOptions, cmd: Command) => {
      const json = cmd.optsWithGlobals<{ json?: boolean }>().json === true
      const stateDir = o.stateDir ?? defaultUpDir(process.env)
      const logFile = join(stateDir, 'gpumesh.log')
      const log = createLogger('gpumesh-up', { file: logFile, ...loggerSettings(process.env), journal: false })
      // Piped into tee and stopped with Ctrl-C, the terminal's output is gone before the cluster is: stopping goes on.
      surviveLostOutput((stream, err) => {
        log.warn({ stream, err: err.message }, `${stream} is gone; progress goes to this log only`)
      })
      const say = (line: string) => {
        log.info(line)
        writeIfOpen(process.stderr, `${line}\n`)
      }
      const progress = ticker(say)
      let cluster: LocalCluster
      try {
        // Loaded here: the whole coordinator and agent would slow every other CLI command's start.
        const { startLocalCluster } = await import('./cluster.js')
        cluster = await startLocalCluster({
          stateDir,
          apiListen: o.apiListen,
          gatewayListen: o.gatewayListen,
          simulate: o.simulate,
          ...(o.machines === undefined
            ? {}
            : {
                machines: o.machines
                  .split(',')
                  .map((m) => m.trim())
                  .filter((m) => m !== '')
              }),
          localAgent: o.localAgent,
          ...(o.docker === undefined || o.docker === '' ? {} : { docker: o.docker }),
          ...(o.databaseUrl === undefined || o.databaseUrl === '' ? {} : { databaseUrl: o.databaseUrl }),
          log,
          progress: progress.step
        })
      } catch (err) {
        progress.done()
        say(`error: ${(err as Error).message} (log: ${logFile})`)
        process.exitCode = exitCodeFor(err)
        return
      }
      progress.done()
      const { hosts, pools } = await cluster.snapshot()
      const env = `export GPUMESH_API=${cluster.api} GPUMESH_TOKEN=${cluster.adminToken}`
      if (json) {
        writeIfOpen(
          process.stdout,
          `${JSON.stringify({ api: cluster.api, adminToken: cluster.adminToken, stateDir, logFile, pools, hosts })}\n`
        )
      } else {
        writeIfOpen(
          process.stdout,
          [
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
          ].join('\n')
        )
      }
      await stopOnSignals({
        stop: cluster.stop,
        stopping: (signal) => {
          say(`${signal}: stopping workloads, agents, coordinator and PostgreSQL...`)
        },
        // A second Ctrl-C must not kill the process halfway: workloads and PostgreSQL would be left behind.
        repeated: (signal) => {
          say(`${signal}: already stopping`)
        },
        stopped: (err) => {
          say(err === undefined ? 'stopped' : `stop failed: ${err.message}`)
        }
      })
    })
}

/** Progress lines; on a terminal, a step that takes a while shows its elapsed seconds. */
function ticker(say: (line: string) => void): { step: (s: string) => void; done: () => void } {
  const tty = process.stderr.isTTY
  let current = ''
  let started = 0
  let timer: NodeJS.Timeout | undefined
  const finish = () => {
    if (current === '') return
    if (tty) writeIfOpen(process.stderr, `\r\x1b[K${current}: ${((Date.now() - started) / 1000).toFixed(1)} s\n`)
    current = ''
  }
  return {
    step: (s) => {
      finish()
      current = s
      started = Date.now()
      if (!tty) {
        say(`${s}...`)
        return
      }
      writeIfOpen(process.stderr, `${s}...`)
      clearInterval(timer)
      timer = setInterval(() => {
        writeIfOpen(process.stderr, `\r\x1b[K${current}... ${Math.floor((Date.now() - started) / 1000)} s`)
      }, 1000)
      timer.unref()
    },
    done: () => {
      clearInterval(timer)
      finish()
    }
  }
}
