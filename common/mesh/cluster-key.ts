// The cluster's private-network key (the go-ipfs/kubo swarm.key format):
// without it a peer cannot even complete a handshake with the mesh.
import { randomBytes } from 'node:crypto'
import { mkdir, readFile, writeFile } from 'node:fs/promises'
import { dirname } from 'node:path'
import { ConfigError } from '../config-error.js'

const HEADER = '/key/swarm/psk/1.0.0/\n/base16/\n'

/** The file's bytes, after checking they are a swarm.key (never logs the key); a ConfigError otherwise. */
export async function readClusterKey(path: string): Promise<Uint8Array> {
  let text: string
  try {
    text = await readFile(path, 'utf8')
  } catch (err) {
    throw new ConfigError(`cannot read the cluster key ${path}: ${(err as NodeJS.ErrnoException).code ?? 'error'}`)
  }
  if (!/^\/key\/swarm\/psk\/1\.0\.0\/\r?\n\/base16\/\r?\n[0-9a-fA-F]{64}\s*$/.test(text)) {
    throw new ConfigError(
      `${path} is not a cluster key (swarm.key format: /key/swarm/psk/1.0.0/, /base16/, 64 hex digits)`
    )
  }
  return new TextEncoder().encode(text)
}

/** Creates a new key file (0600) unless one exists; returns its bytes. */
export async function createClusterKey(path: string): Promise<Uint8Array> {
  await mkdir(dirname(path), { recursive: true, mode: 0o700 })
  await writeFile(path, `${HEADER}${randomBytes(32).toString('hex')}\n`, { mode: 0o600, flag: 'wx' }).catch(
    (err: NodeJS.ErrnoException) => {
      if (err.code !== 'EEXIST') throw err
    }
  )
  return await readClusterKey(path)
}
