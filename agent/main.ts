#!/usr/bin/env node
// gpumesh-agent: `detect` prints this host's facts; `run` (the default) is
// the daemon. Every flag has a GPUMESH_* environment variable.
import { Command, InvalidArgumentError, Option } from 'commander'
import { HostFacts } from '../protocol/host-facts.js'
import { schemaErrors } from '../protocol/validate.js'
import { VERSION } from '../common/version.js'
import { detect, type DetectOptions } from './detect/detect.js'

/** sysexits.h: bad configuration; systemd's RestartPreventExitStatus names it. */
export const EXIT_CONFIG = 78
/** sysexits.h: internal software error. */
export const EXIT_SOFTWARE = 70

function positiveInt (value: string): number {
  const n = Number(value)
  if (!Number.isInteger(n) || n <= 0) throw new InvalidArgumentError('must be a positive integer')
  return n
}

interface DetectFlags { nvidiaSmi?: string, smiTimeout: number, poolLabel?: string, json?: boolean }

const detectOptions = (cmd: Command) => cmd
  .addOption(new Option('--nvidia-smi <path>', 'nvidia-smi to run (default: from PATH)').env('GPUMESH_NVIDIA_SMI'))
  .addOption(new Option('--smi-timeout <ms>', 'deadline for each nvidia-smi call').env('GPUMESH_NVIDIA_SMI_TIMEOUT_MS').argParser(positiveInt).default(10_000))
  .addOption(new Option('--pool-label <label>', 'operator label appended to the pool key').env('GPUMESH_POOL_LABEL'))

const toDetectOptions = (o: DetectFlags): DetectOptions => ({
  agentVersion: VERSION,
  timeoutMs: o.smiTimeout,
  ...(o.nvidiaSmi === undefined ? {} : { nvidiaSmi: o.nvidiaSmi }),
  ...(o.poolLabel === undefined ? {} : { poolLabel: o.poolLabel })
})

const program = new Command('gpumesh-agent')
  .description('gpumesh host agent: detects GPUs, joins the mesh, runs placements')
  .version(VERSION)
  .showHelpAfterError()
  .exitOverride((err) => { process.exit(err.exitCode === 0 ? 0 : EXIT_CONFIG) })

detectOptions(program.command('detect'))
  .description("print this host's facts (GPUs, topology, NICs, disks, pool key, warnings) and exit; exits 0 even without a GPU driver")
  .option('--json', 'print the HostFacts document instead of the summary')
  .action(async (o: DetectFlags) => {
    const facts = await detect(toDetectOptions(o))
    const errors = schemaErrors(HostFacts, facts)
    if (errors.length > 0) {
      process.stderr.write(`gpumesh-agent: detected facts do not match the HostFacts schema (a bug):\n  ${errors.join('\n  ')}\n`)
      process.exitCode = EXIT_SOFTWARE
      return
    }
    // Loaded only when used: `detect` is short-lived and its memory is a budget.
    const { renderFacts } = o.json === true ? { renderFacts: null } : await import('./detect/render.js')
    process.stdout.write(renderFacts === null ? JSON.stringify(facts, null, 2) + '\n' : renderFacts(facts))
  })

detectOptions(program.command('run', { isDefault: true }))
  .description('run the agent daemon in the foreground until SIGTERM/SIGINT (re-detects the host periodically)')
  .addOption(new Option('--detect-interval <seconds>', 're-detect period').env('GPUMESH_DETECT_INTERVAL').argParser(positiveInt).default(60))
  .action(async (o: DetectFlags & { detectInterval: number }) => {
    const { createLogger } = await import('../common/log.js')
    const log = createLogger('gpumesh-agent')
    let timer: NodeJS.Timeout | undefined
    let stopping = false
    const once = async () => {
      const facts = await detect(toDetectOptions(o))
      log.info({ pool: facts.pool.key, gpus: facts.gpus.length, warnings: facts.warnings.map((w) => w.code) }, 'host detected')
      for (const w of facts.warnings) log.warn({ code: w.code, source: w.source }, w.message)
      if (!stopping) timer = setTimeout(() => { void once() }, o.detectInterval * 1000)
    }
    const stop = (signal: string) => {
      stopping = true
      clearTimeout(timer)
      log.info({ signal }, 'stopping')
    }
    process.once('SIGTERM', () => stop('SIGTERM'))
    process.once('SIGINT', () => stop('SIGINT'))
    log.info({ version: VERSION }, 'gpumesh-agent starting')
    await once()
  })

await program.parseAsync(process.argv)
