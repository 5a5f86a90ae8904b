// What a workload's `run` must satisfy beyond its schema's shape: rules that
// join fields (the docker driver needs an image) or that the agent must be
// able to rely on before anything reaches a command line. The API refuses a
// spec that breaks them (400) and the agent refuses an assignment that does,
// so nothing is accepted that can never run.
import type { Run } from './workload.js'

/** A rule `run` breaks: the JSON pointer below `run` and what is wrong there. */
export interface RunProblem {
  path: string
  message: string
}

export function runProblem(run: Run): RunProblem | null {
  if (run.driver !== 'docker') return null
  const image = run.image
  if (image === undefined || image === '') return { path: '/image', message: 'is required by the docker driver' }
  // docker would read "--privileged" or "-v/:/host" as an option, and "a b" as an image and a command.
  if (image.startsWith('-') || /\s/.test(image))
    return { path: '/image', message: `must not start with "-" or contain white space: ${JSON.stringify(image)}` }
  return null
}

/** The problem as the agent reports it: `run.image is required by the docker driver`. */
export const describeRunProblem = (p: RunProblem): string => `run${p.path.replace(/\//g, '.')} ${p.message}`
