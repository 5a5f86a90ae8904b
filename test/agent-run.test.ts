// The agent daemon in the foreground: logs JSON lines, re-detects on its
// period, and stops cleanly on SIGTERM.
import { execa } from 'execa'
import t from 'tap'
import { cleanEnv, machine } from './helpers/agent.js'
import { AGENT, NVIDIA_SMI_DOUBLE } from './helpers/fixtures.js'

t.test('run: detects, logs, re-detects, stops on SIGTERM', async (t) => {
  const child = execa(process.execPath, [AGENT], {
    env: cleanEnv({ GPUMESH_NVIDIA_SMI: NVIDIA_SMI_DOUBLE, GPUMESH_SMI_FIXTURE: machine('h100-8x-nv18-nics'), GPUMESH_DETECT_INTERVAL: '1' }),
    extendEnv: false,
    reject: false,
    timeout: 30_000
  })
  const lines: Array<Record<string, unknown>> = []
  let detections = 0
  await new Promise<void>((resolve) => {
    let buffered = ''
    child.stdout?.on('data', (chunk: Buffer) => {
      buffered += chunk.toString()
      const parts = buffered.split('\n')
      buffered = parts.pop() ?? ''
      for (const l of parts) {
        const line = JSON.parse(l) as Record<string, unknown>
        lines.push(line)
        if (line.msg === 'host detected' && ++detections === 2) resolve()
      }
    })
    child.on('exit', () => resolve())
  })
  child.kill('SIGTERM')
  const r = await child
  t.equal(r.exitCode, 0, 'exits 0 on SIGTERM')
  t.equal(detections, 2, 'detected twice (no subcommand runs the daemon)')
  const detected = lines.find((l) => l.msg === 'host detected')
  t.equal(detected?.pool, 'h100-80gb-8x-nvlink')
  t.equal(detected?.gpus, 8)
  t.ok(lines.some((l) => l.msg === 'stopping' && l.signal === 'SIGTERM'), 'says why it stops')
  t.ok(lines.every((l) => typeof l.level === 'number' && typeof l.time === 'number'), 'every line is a pino record')
})

t.test('--version and --help', async (t) => {
  const version = await execa(process.execPath, [AGENT, '--version'])
  t.match(version.stdout, /^\d+\.\d+\.\d+/)
  for (const args of [['--help'], ['detect', '--help'], ['run', '--help']]) {
    const help = await execa(process.execPath, [AGENT, ...args])
    t.match(help.stdout, /Usage: gpumesh-agent/, `${args.join(' ')} prints usage`)
  }
})
