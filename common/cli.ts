// What the daemons' command lines share: exit codes systemd understands and
// option parsers with clear messages.
import { InvalidArgumentError } from 'commander'

/** sysexits.h EX_CONFIG: bad configuration; systemd's RestartPreventExitStatus names it. */
export const EXIT_CONFIG = 78
/** sysexits.h EX_SOFTWARE: internal software error. */
export const EXIT_SOFTWARE = 70

export function positiveInt(value: string): number {
  const n = Number(value)
  if (!Number.isInteger(n) || n <= 0) throw new InvalidArgumentError('must be a positive integer')
  return n
}

export function nonNegativeInt(value: string): number {
  const n = Number(value)
  if (!Number.isInteger(n) || n < 0) throw new InvalidArgumentError('must be a whole number >= 0')
  return n
}

/** Comma-separated libp2p multiaddrs. */
export function multiaddrs(value: string): string[] {
  const list = value
    .split(',')
    .map((s) => s.trim())
    .filter((s) => s !== '')
  if (list.length === 0 || list.some((a) => !a.startsWith('/')))
    throw new InvalidArgumentError('must be comma-separated multiaddrs, e.g. /ip4/0.0.0.0/tcp/7471')
  return list
}
