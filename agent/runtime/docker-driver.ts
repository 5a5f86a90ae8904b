// The `docker` driver: `docker run --rm --name gpumesh-<id> --gpus
// '"device=<i,j>"' [-p 127.0.0.1:$PORT:<port>] -e K ... <image> <command...>` in the foreground, under
// the same wrapper, process group and log files as the process driver (see
// process-driver.ts): the client's exit status is the container's, and its
// output is the container's output. Stop is `docker stop -t <grace>`;
// recovery asks docker about the container by name.
import { execa } from 'execa'
import type { Driver } from './driver.js'
import { describeRunProblem, runProblem } from '../../protocol/workload-rules.js'
import { agentEnvWithoutSettings, placementVariables } from './env.js'
import { LaunchError, resolveExecutable, stopProcessGroup, within } from './process-driver.js'
import { signalGroup } from './proc.js'
import type { Assignment } from './types.js'

export const containerName = (placementId: string) => `gpumesh-${placementId}`

/** The docker executable: the agent's --docker (GPUMESH_DOCKER), else `docker` from PATH. */
export function dockerCommand(option: string | undefined): string {
  return option !== undefined && option !== '' ? option : 'docker'
}

/**
 * Variables the docker client reads for itself: given to it as the
 * container's, they would move its daemon, configuration or credential
 * helpers. They go on the command line as `-e K=V` (paths and addresses).
 */
const CLIENT_VARIABLE = /^(DOCKER_.*|PATH|HOME|XDG_CONFIG_HOME)$/

/**
 * How a placement's variables reach `docker run`: `-e K` arguments, and the
 * values in the client's environment (docker copies them into the
 * container). Any local user reads a command line (`ps`,
 * /proc/<pid>/cmdline); only root and the agent's user read its environment.
 */
export function dockerEnv(a: Assignment): { args: string[]; clientEnv: Record<string, string> } {
  const args: string[] = []
  const values: Array<[string, string]> = []
  for (const [k, v] of Object.entries(placementVariables(a, 'docker'))) {
    if (CLIENT_VARIABLE.test(k)) args.push('-e', `${k}=${v}`)
    else {
      args.push('-e', k)
      values.push([k, v])
    }
  }
  // fromEntries, not assignment: "__proto__" is a variable name like any other.
  return { args, clientEnv: Object.fromEntries(values) }
}

/** The arguments of `docker` that run this placement; throws LaunchError when it cannot run. */
export function dockerRunArgs(a: Assignment): string[] {
  // An "image" that docker would read as an option (--privileged, -v/:/host) must never get that far.
  const problem = runProblem(a.run)
  if (problem !== null) throw new LaunchError(describeRunProblem(problem))
  const args = ['run', '--rm', '--name', containerName(a.placementId)]
  // A list of devices must reach docker in double quotes ("device=0,1"),
  // otherwise the comma separates --gpus options rather than devices.
  if (a.gpus.length > 0) args.push('--gpus', `"device=${a.gpus.join(',')}"`)
  // An endpoint replica's port, on loopback only: the agent's probe and the gateway's mesh stream reach it there.
  if (a.port !== undefined) args.push('-p', `127.0.0.1:${a.port}:${a.serve?.containerPort ?? a.port}`)
  // Only the placement's variables: the agent's own environment (PATH, HOME...)
  // would override the image's.
  args.push(...dockerEnv(a).args, a.run.image as string, ...a.run.command)
  return args
}

const opts = (env: Record<string, string>) =>
  ({ env, extendEnv: false, reject: false, stdin: 'ignore', timeout: 60_000 }) as const

/** Whether docker says the container runs: true/false, or an error text when docker could not tell. */
export async function containerRunning(
  docker: string,
  name: string,
  env: Record<string, string>
): Promise<boolean | string> {
  const r = await execa(docker, ['inspect', '--type', 'container', '--format', '{{.State.Running}}', name], opts(env))
  if (r.exitCode === 0) return String(r.stdout).trim() === 'true'
  const err = String(r.stderr)
  if (/no such (object|container)/i.test(err)) return false
  return `docker inspect failed: ${err.trim().slice(0, 300) || (r.shortMessage ?? 'unknown error')}`
}

/**
 * Watches a container whose client is gone (re-adopted after an agent
 * restart): `docker wait` prints its exit code when it ends. Not detached:
 * a watcher ends with the agent, and the next agent starts another.
 */
export function waitContainer(docker: string, name: string, env: Record<string, string>) {
  return execa(docker, ['wait', name], { env, extendEnv: false, reject: false, stdin: 'ignore', stderr: 'ignore' })
}

/** Parses `docker wait`'s answer: the exit code, or null. */
export function waitExitCode(stdout: unknown): number | null {
  const t = String(stdout).trim()
  return /^-?\d+$/.test(t) ? Number(t) : null
}

/**
 * Stops a docker placement: `docker stop -t <grace s>` (SIGTERM in the
 * container, SIGKILL after the grace). When docker cannot (daemon gone,
 * no such container) or the client does not end, falls back to the client
 * itself: SIGTERM to its group (`docker run` forwards it to the container),
 * then `docker kill` and SIGKILL to the group after the grace.
 * `pgid` is null for a container watched without its client.
 */
export async function stopContainer(
  docker: string,
  name: string,
  pgid: number | null,
  graceMs: number,
  ended: Promise<unknown>,
  env: Record<string, string>
): Promise<void> {
  const seconds = Math.max(0, Math.ceil(graceMs / 1000))
  const stopped = await execa(docker, ['stop', '-t', String(seconds), name], {
    ...opts(env),
    timeout: seconds * 1000 + 30_000
  })
  if (stopped.exitCode === 0 && (await within(ended, 10_000))) return
  if (pgid !== null) {
    signalGroup(pgid, 'SIGTERM')
    if (await within(ended, graceMs)) return
  }
  await execa(docker, ['kill', name], opts(env))
  if (pgid !== null) signalGroup(pgid, 'SIGKILL')
}

/** The `docker` driver: the client `docker` runs with the agent's environment minus its GPUMESH_* settings. */
export function dockerDriver(docker: string, agentEnv: NodeJS.ProcessEnv): Driver {
  const env = () => agentEnvWithoutSettings(agentEnv)
  return {
    command: async (a, dir) => {
      // In a session, the container gets a terminal of its own (-t) and its input (-i).
      const args = a.session === undefined ? dockerRunArgs(a) : ['run', '-i', '-t', ...dockerRunArgs(a).slice(1)]
      const clientEnv = env()
      let file: string
      try {
        file = await resolveExecutable(docker, clientEnv.PATH, dir)
      } catch (err) {
        throw new LaunchError(`docker driver: ${(err as Error).message}`)
      }
      return { argv: [file, ...args], env: { ...clientEnv, ...dockerEnv(a).clientEnv } }
    },
    stop: async (target, graceMs, ended) => {
      if (target.container !== null) await stopContainer(docker, target.container, target.pgid, graceMs, ended, env())
      else if (target.pgid !== null) await stopProcessGroup(target.pgid, graceMs, ended)
    },
    readopt: async (target) => {
      if (target.container === null) return null
      // The docker client is gone but the container may not be.
      const running = await containerRunning(docker, target.container, env())
      if (running !== true) return running === false ? null : running
      const watcher = waitContainer(docker, target.container, env())
      return { watcher, exitCode: watcher.then((w) => waitExitCode(w.stdout)) }
    }
  }
}
