// A self-signed certificate for 127.0.0.1 (openssl, as an operator makes one
// for a test install), removed at the end of the test.
import { mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { execa } from 'execa'
import type { Test } from 'tap'

export interface TestCert {
  certFile: string
  keyFile: string
  /** The certificate itself: the client's trusted CA. */
  ca: Buffer
}

export async function selfSignedCert(t: Test): Promise<TestCert> {
  const dir = mkdtempSync(join(tmpdir(), 'gpumesh-tls-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  const certFile = join(dir, 'cert.pem')
  const keyFile = join(dir, 'key.pem')
  await execa('openssl', [
    'req',
    '-x509',
    '-newkey',
    'ec',
    '-pkeyopt',
    'ec_paramgen_curve:prime256v1',
    '-nodes',
    '-days',
    '1',
    '-subj',
    '/CN=gpumesh-test',
    '-addext',
    'subjectAltName=IP:127.0.0.1',
    '-keyout',
    keyFile,
    '-out',
    certFile
  ])
  return { certFile, keyFile, ca: readFileSync(certFile) }
}
