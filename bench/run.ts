// `npm run bench -- <name>` runs bench/<name>.ts (compiled) and prints its
// JSON figures as the last line.
import { readdirSync } from 'node:fs'
import { dirname } from 'node:path'
import { fileURLToPath } from 'node:url'

const here = dirname(fileURLToPath(import.meta.url))
const available = readdirSync(here)
  .filter((f) => f.endsWith('.js') && f !== 'run.js')
  .map((f) => f.slice(0, -3))
const name = process.argv[2]
if (name === undefined || !available.includes(name)) {
  process.stderr.write(`usage: npm run bench -- <name>\nbenchmarks: ${available.join(', ')}\n`)
  process.exit(2)
}
const { run } = (await import(`./${name}.js`)) as { run: (args: string[]) => Promise<Record<string, unknown>> }
const figures = await run(process.argv.slice(3))
process.stdout.write(`${JSON.stringify(figures)}\n`)
