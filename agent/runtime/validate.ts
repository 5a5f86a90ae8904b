// Assignments are checked before anything touches the disk or runs: the
// placement id becomes a folder name (a non-uuid could be "../../etc") and
// the command an execve() call.
import { Assignment } from '../../protocol/control.js'
import { schemaErrors, UUID } from '../../protocol/validate.js'
import { describeRunProblem, runProblem } from '../../protocol/workload-rules.js'

export const isUuid = (v: unknown): v is string => typeof v === 'string' && UUID.test(v)

/** Why this assignment cannot run, or null when it can. */
export function assignmentProblem(a: unknown): string | null {
  if (a === null || typeof a !== 'object') return 'invalid assignment: not an object'
  const o = a as Record<string, unknown>
  if (!isUuid(o.placementId)) return `invalid assignment: placementId ${JSON.stringify(o.placementId)} is not a uuid`
  const run = o.run as Record<string, unknown> | undefined
  const command = run?.command
  if (!Array.isArray(command) || command.length === 0) return 'invalid assignment: run.command is empty'
  if (command.some((c) => typeof c !== 'string' || c === ''))
    return 'invalid assignment: run.command has an empty or non-string argument'
  const errors = schemaErrors(Assignment, a, 3)
  if (errors.length > 0) return `invalid assignment: ${errors.join('; ')}`
  const rule = runProblem((a as Assignment).run)
  if (rule !== null) return `invalid assignment: ${describeRunProblem(rule)}`
  // execve() takes C strings: a NUL cannot be passed, and would cut a value short.
  const strings = [
    ...(command as string[]),
    ...Object.entries(run?.env ?? {}).flat(),
    ...Object.entries(o.env as Record<string, string>).flat()
  ]
  if (strings.some((s) => s.includes('\0')))
    return 'invalid assignment: a command argument or environment variable contains a NUL character'
  const badName = Object.keys(o.env as Record<string, string>).find((k) => !/^[A-Za-z_][A-Za-z0-9_]*$/.test(k))
  if (badName !== undefined)
    return `invalid assignment: env name ${JSON.stringify(badName)} is not a valid variable name`
  return null
}
