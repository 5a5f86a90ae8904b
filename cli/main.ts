#!/usr/bin/env node
// gpumesh: the admin CLI. Tables for people, --json for scripts; every
// command is one call (or one paginated walk) of the admin HTTP API.
// Exit status: 0 done, 1 the API or the network said no, 2 bad usage,
// 78 bad configuration (gpumesh up).
import { Command, type CommanderError, Option } from 'commander'
import { EXIT_CONFIG } from '../common/cli.js'
import { isConfigError } from '../common/config-error.js'
import { survivingLostOutput } from '../common/daemon/stdio.js'
import { VERSION } from '../common/version.js'
import { CliError } from './client.js'
import { DEFAULT_API, apiUrl, positiveInt, redact } from './config.js'
import { attachCommands } from './commands/attach.js'
import { eventCommands } from './commands/events.js'
import { hostCommands } from './commands/hosts.js'
import { logCommands } from './commands/logs.js'
import { placementCommands } from './commands/placements.js'
import { poolCommands } from './commands/pools.js'
import { tokenCommands } from './commands/tokens.js'
import { upCommand } from './up/command.js'
import { workloadCommands } from './commands/workloads.js'

const EXIT_FAILED = 1
const EXIT_USAGE = 2

// `gpumesh events | head` closes the pipe early; that is a normal end. Not for
// `gpumesh up`, which must go on stopping what it started (see surviveLostOutput).
process.stdout.on('error', (err: NodeJS.ErrnoException) => {
  if (survivingLostOutput()) return
  if (err.code === 'EPIPE') process.exit(0)
  throw err
})

const program = new Command('gpumesh')
  .description('gpumesh admin CLI: hosts, pools, workloads, placements, events and tokens of a gpumesh coordinator')
  .version(VERSION)
  .addOption(
    new Option('--api <url>', 'admin API of the coordinator').env('GPUMESH_API').default(DEFAULT_API).argParser(apiUrl)
  )
  .addOption(
    new Option(
      '--token <token>',
      "API bearer token (default: the coordinator's admin.token in $GPUMESH_STATE_DIR or /var/lib/gpumesh/coordinator, when readable)"
    ).env('GPUMESH_TOKEN')
  )
  .option('--json', 'print API resources as JSON (lists: every item, all pages) instead of tables')
  // For tests and for APIs behind proxies with small response limits.
  .addOption(new Option('--page-size <n>', 'items per list request').argParser(positiveInt).hideHelp())
  .configureHelp({ showGlobalOptions: true })
  .showHelpAfterError('(add --help for usage)')
  // Settings above are inherited by the subcommands defined below.
  .exitOverride((err: CommanderError) => {
    process.exit(err.exitCode === 0 ? 0 : EXIT_USAGE)
  })

hostCommands(program)
poolCommands(program)
workloadCommands(program)
placementCommands(program)
eventCommands(program)
tokenCommands(program)
upCommand(program)
attachCommands(program)
logCommands(program)

try {
  await program.parseAsync(process.argv)
} catch (err) {
  if (err instanceof CliError) {
    process.stderr.write(`${redact(`error: ${err.message}`)}\n`)
  } else {
    const e = err as Error
    process.stderr.write(`${redact(`error: ${e.message ?? String(err)}`)}\n`)
    if (process.env.GPUMESH_DEBUG !== undefined && e.stack !== undefined) process.stderr.write(`${redact(e.stack)}\n`)
  }
  process.exitCode = isConfigError(err) ? EXIT_CONFIG : EXIT_FAILED
}
