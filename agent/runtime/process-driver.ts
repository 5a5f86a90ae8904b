// The `process` driver: runs `run.command` on the host with the placement's
// environment. The docker driver reuses the launcher below for the docker
// client.
//
// A placement must outlive the agent (an agent restart or upgrade does not
// stop workloads), so the process is
//   - started in a session and process group of its own (`detached`): a
//     signal for the agent's group or terminal does not reach it, and stop
//     signals the whole group, grandchildren included;
//   - not tied to the agent: execa's `cleanup` (kill on parent exit) is off,
//     its stdin is /dev/null and its output goes straight to the log files
//     (file descriptors, no pipe through the agent that would break when the
//     agent goes away);
//   - run by a small POSIX sh wrapper that records its exit status in a file,
//     so a restarted agent, no longer its parent, can still learn the exit
//     code.
// (systemd: the agent's unit must use KillMode=process, or placements go
// with the agent's cgroup when the unit stops.)
import { constants, openSync, closeSync } from 'node:fs'
import { access, stat } from 'node:fs/promises'
import { delimiter, join, resolve } from 'node:path'
import { execa, type ResultPromise } from 'execa'
import type { Driver } from './driver.js'
import { placementEnv } from './env.js'
import { identify, signalGroup, type ProcessIdentity } from './proc.js'
import { EXIT_FILE, PID_FILE, STDERR_FILE, STDOUT_FILE } from './state.js'

/**
 * The wrapper, run as `sh -c WRAPPER gpumesh-<placementId> <logMaxBytes> <command...>`:
 * - writes its own pid first (found again even if the agent stopped before
 *   recording it);
 * - gives the command's stdout and stderr to two log keepers (below) through
 *   pipes, made as FIFOs that are removed once open;
 * - then (a stop during the set-up simply ends it, by the signal) traps HUP
 *   INT QUIT TERM with a no-op: a stop signals the whole group, so
 *   the command gets the signal directly; the wrapper, rather than dying
 *   with it, waits for the command and records 128+signal. A trapped (not
 *   ignored) signal is reset to its default in the command when it is
 *   exec'd, so the command sees the signals as usual;
 * - runs "$@" as a simple command: sh forks once and the child execs the
 *   command itself (no shell in between), quoting intact whatever the
 *   arguments hold; it cannot `exec` the command in its own place, since
 *   something has to outlive the command to write its status;
 * - exits with the command's status. SIGKILL (the end of a stop's grace)
 *   kills the wrapper too, and then nothing is written: the runtime that
 *   sent it knows.
 * `gpumesh-<id>` is the wrapper's $0: `ps` shows which placement it is, and
 * it tells a pid of ours from a reused one.
 *
 * A log keeper (`keep`, a subshell of the wrapper, so in its process group
 * and independent of the agent) is GNU `split -b <max>` reading its pipe:
 * each <max> bytes go to a new `cat >> stdout.log` (stderr.log), which first
 * makes a full stdout.log the previous one (stdout.log.1, replacing the one
 * before). split writes what it reads at once (logs stay live) and cuts the
 * stream at exactly <max> bytes. The command writes into a pipe, so however
 * fast it writes it waits for the keeper: a placement's logs never take more
 * than twice <max> per stream. Keepers ignore the stop signals (the command
 * may log on its way out) and end when the pipe closes. A write that fails
 * (a full disk) loses the rest of that chunk, never the command. Without
 * FIFOs (mkfifo failed) the command writes to the files the agent opened,
 * uncapped, as before. The tools are found in the system's PATH, whatever
 * PATH the placement sets.
 */
const OUT_FIFO = '.stdout.pipe'
const ERR_FIFO = '.stderr.pipe'
const ROTATE = `[ -s "$L" ] && mv -f "$L" "$L.1"; exec cat >> "$L"`
export const WRAPPER = [
  `echo $$ > ${PID_FILE}; m=$1; shift; o=''`,
  `keep () { trap '' HUP INT QUIT TERM; umask 027; exec /usr/bin/env L="$1" SHELL=/bin/sh PATH=/usr/bin:/bin split -b "$m" --filter='${ROTATE}' -; }`,
  `if command -p rm -f ${OUT_FIFO} ${ERR_FIFO} && command -p mkfifo -m 600 ${OUT_FIFO} ${ERR_FIFO}; then`,
  `keep ${STDOUT_FILE} < ${OUT_FIFO} & keep ${STDERR_FILE} < ${ERR_FIFO} &`,
  `exec 3> ${OUT_FIFO} 4> ${ERR_FIFO}; command -p rm -f ${OUT_FIFO} ${ERR_FIFO}; o=1; fi`,
  `trap : HUP INT QUIT TERM`,
  `if [ -n "$o" ]; then "$@" >&3 2>&4 3>&- 4>&-; else "$@"; fi; c=$?; exec 3>&- 4>&-; echo $c > ${EXIT_FILE}; exit $c`
].join('\n')
export const SH = '/bin/sh'
/** GPUMESH_PLACEMENT_LOG_MAX_BYTES: where stdout.log and stderr.log rotate. */
export const DEFAULT_LOG_MAX_BYTES = 64 * 1024 * 1024
export const wrapperName = (placementId: string) => `gpumesh-${placementId}`

// execa's types list file descriptors 3-9 only (literals for `stdio`
// arrays); any open descriptor works, it goes to spawn() as it is.
type Fd = 3
const spawnOptions = (dir: string, env: Record<string, string>, stdout: Fd, stderr: Fd) =>
  ({
    cwd: dir,
    env,
    extendEnv: false,
    detached: true,
    cleanup: false,
    stdin: 'ignore',
    stdout,
    stderr,
    reject: false,
    buffer: false
  }) as const

export interface Launched {
  subprocess: ResultPromise<ReturnType<typeof spawnOptions>>
  identity: ProcessIdentity
}

export class LaunchError extends Error {}

/**
 * Starts `argv` under the wrapper in `dir`; its pid is also its process group. Its two streams share
 * `logMaxBytes`: each file rotates at half of it, one previous file kept, so the placement's logs take at
 * most twice `logMaxBytes` in all.
 */
export function launch(
  dir: string,
  placementId: string,
  argv: string[],
  env: Record<string, string>,
  logMaxBytes: number = DEFAULT_LOG_MAX_BYTES
): Launched {
  const out = openSync(join(dir, STDOUT_FILE), constants.O_WRONLY | constants.O_APPEND | constants.O_CREAT, 0o640)
  let err: number
  try {
    err = openSync(join(dir, STDERR_FILE), constants.O_WRONLY | constants.O_APPEND | constants.O_CREAT, 0o640)
  } catch (e) {
    closeSync(out)
    throw e
  }
  let subprocess: Launched['subprocess']
  try {
    subprocess = execa(
      SH,
      ['-c', WRAPPER, wrapperName(placementId), String(Math.max(1, Math.floor(logMaxBytes / 2))), ...argv],
      spawnOptions(dir, env, out as Fd, err as Fd)
    )
  } finally {
    // spawn() has dup'ed them into the child (synchronously); ours are not needed.
    closeSync(out)
    closeSync(err)
  }
  const pid = subprocess.pid
  if (pid === undefined) {
    // spawn failed (no /bin/sh, out of processes): the promise holds the reason.
    throw new LaunchError('could not start /bin/sh')
  }
  // The start time is read right away: the pid cannot be reused before we
  // reap it, so even a command that exited already is still this pid.
  const identity = identify(pid) ?? { pid, startTime: -1, bootId: null }
  return { subprocess, identity }
}

/** What sh searches when the environment has no PATH. */
const DEFAULT_PATH = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin'

/**
 * Where `command` would be found, the way sh finds it: a name with a "/" is a
 * path (relative to `cwd`), anything else is looked up in PATH. Throws with
 * a clear reason when there is no executable to run (ENOENT, EACCES), which
 * the wrapper would otherwise only report as exit 127/126.
 */
export async function resolveExecutable(command: string, path: string | undefined, cwd: string): Promise<string> {
  const check = async (file: string): Promise<'ok' | 'missing' | 'directory' | 'not-executable'> => {
    try {
      const s = await stat(file)
      if (s.isDirectory()) return 'directory'
      await access(file, constants.X_OK)
      return 'ok'
    } catch (err) {
      return (err as NodeJS.ErrnoException).code === 'EACCES' ? 'not-executable' : 'missing'
    }
  }
  if (command.includes('/')) {
    const file = resolve(cwd, command)
    const r = await check(file)
    if (r === 'ok') return file
    if (r === 'missing') throw new LaunchError(`executable not found: ${command} (ENOENT)`)
    if (r === 'directory') throw new LaunchError(`cannot execute ${command}: is a directory (EACCES)`)
    throw new LaunchError(`cannot execute ${command}: permission denied (EACCES)`)
  }
  let denied: string | null = null
  for (const d of (path ?? DEFAULT_PATH).split(delimiter)) {
    const file = resolve(cwd, d === '' ? '.' : d, command)
    const r = await check(file)
    if (r === 'ok') return file
    if (r === 'not-executable' && denied === null) denied = file
  }
  if (denied !== null) throw new LaunchError(`cannot execute ${command}: permission denied on ${denied} (EACCES)`)
  throw new LaunchError(`executable not found: ${command} is not in PATH (${path ?? DEFAULT_PATH}) (ENOENT)`)
}

/** Settles true when `p` settles within `ms`, false otherwise. */
export async function within(p: Promise<unknown>, ms: number): Promise<boolean> {
  let timer: NodeJS.Timeout | undefined
  const r = await Promise.race([
    p.then(
      () => true,
      () => true
    ),
    new Promise<boolean>((resolve) => {
      timer = setTimeout(() => resolve(false), Math.max(0, ms))
    })
  ])
  clearTimeout(timer)
  return r
}

/**
 * Stops a process placement: SIGTERM to its group, SIGKILL to the group if
 * it has not ended after `graceMs`. Returns once `ended` settles or the
 * SIGKILL is sent.
 */
export async function stopProcessGroup(pgid: number, graceMs: number, ended: Promise<unknown>): Promise<void> {
  signalGroup(pgid, 'SIGTERM')
  if (await within(ended, graceMs)) return
  signalGroup(pgid, 'SIGKILL')
}

/** The `process` driver; placements get `agentEnv` (the agent's environment, minus its GPUMESH_* settings) under their variables. */
export function processDriver(agentEnv: NodeJS.ProcessEnv): Driver {
  return {
    command: async (a, dir) => {
      const env = placementEnv(a, agentEnv, 'process')
      const [command, ...args] = a.run.command
      // The wrapper runs the file found here, by path: what was checked is what
      // runs, and a name sh knows as a builtin (exec, exit, trap...) cannot
      // turn into one. The program's argv[0] is that path.
      const file = await resolveExecutable(command as string, env.PATH, dir)
      return { argv: [file, ...args], env }
    },
    stop: async (target, graceMs, ended) => {
      if (target.pgid !== null) await stopProcessGroup(target.pgid, graceMs, ended)
    },
    readopt: async () => null // a process that is gone is gone
  }
}
