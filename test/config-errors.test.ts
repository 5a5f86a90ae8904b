// A configuration error exits 78 (EX_CONFIG: systemd's RestartPreventExitStatus)
// from each of the three binaries, with a message that says what is wrong.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { execa } from 'execa'
import t from 'tap'
import { createClusterKey } from '../common/mesh/cluster-key.js'
import { cleanEnv } from './helpers/agent.js'
import { AGENT, ROOT } from './helpers/fixtures.js'
import { freshDatabase } from './helpers/postgres.js'
import { Mismatches } from './helpers/mismatches.js'

const COORDINATOR = join(ROOT, 'dist/coordinator/main.js')
const CLI = join(ROOT, 'dist/cli/main.js')

t.test('configuration errors exit 78 from the agent, the coordinator and gpumesh up', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'gpumesh-config-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  const notAKey = join(dir, 'not-a-key')
  writeFileSync(notAKey, 'hello\n')
  const key = join(dir, 'cluster.key')
  await createClusterKey(key)
  const corruptState = join(dir, 'agent-corrupt')
  await createClusterKey(join(corruptState, 'unused.key'))
  writeFileSync(join(corruptState, 'agent.json'), '{"hostId": "1b4e28ba-2fa1-11d2-883f-0016d3cca427", "epo')
  const databaseUrl = await freshDatabase(t)
  const coordinator = ['/ip4/127.0.0.1/tcp/1/p2p/12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN']

  const cases: Array<{ name: string; argv: string[]; env?: Record<string, string>; says: RegExp }> = [
    {
      name: 'agent: no coordinator, no cluster key',
      argv: [AGENT, 'run'],
      env: { GPUMESH_STATE_DIR: join(dir, 'agent-none') },
      says: /GPUMESH_COORDINATOR.*GPUMESH_CLUSTER_KEY_FILE/
    },
    {
      name: 'agent: a file that is not a cluster key',
      argv: [AGENT, 'run', '--coordinator', coordinator[0] as string, '--cluster-key-file', notAKey],
      env: { GPUMESH_STATE_DIR: join(dir, 'agent-badkey') },
      says: /is not a cluster key/
    },
    {
      name: 'agent: a corrupt agent.json',
      argv: [AGENT, 'run', '--coordinator', coordinator[0] as string, '--cluster-key-file', key],
      env: { GPUMESH_STATE_DIR: corruptState },
      says: /agent\.json is corrupt.*Move it aside/
    },
    { name: 'agent: an unknown option', argv: [AGENT, 'run', '--no-such-option'], says: /unknown option/ },
    // Without the peer id, the agent would talk to whoever answers at that address.
    {
      name: 'agent: a coordinator address without /p2p/<peer id>',
      argv: [AGENT, 'run', '--coordinator', '/ip4/127.0.0.1/tcp/7471', '--cluster-key-file', key],
      env: { GPUMESH_STATE_DIR: join(dir, 'agent-nopeer') },
      says: /\/ip4\/127\.0\.0\.1\/tcp\/7471 must end in \/p2p\/<peer id>/
    },
    {
      name: 'agent: a coordinator peer id that is not one',
      argv: [AGENT, 'run', '--coordinator', '/ip4/127.0.0.1/tcp/7471/p2p/notapeer', '--cluster-key-file', key],
      env: { GPUMESH_STATE_DIR: join(dir, 'agent-badpeer') },
      says: /notapeer is not a peer id/
    },
    {
      name: 'agent: a coordinator address over an unsupported transport',
      argv: [
        AGENT,
        'run',
        '--coordinator',
        coordinator[0]?.replace('/tcp/1/', '/udp/1/quic-v1/') as string,
        '--cluster-key-file',
        key
      ],
      env: { GPUMESH_STATE_DIR: join(dir, 'agent-quic') },
      says: /transport.*tcp/
    },
    {
      name: 'agent: GPUMESH_COORDINATOR without /p2p/<peer id>',
      argv: [AGENT, 'run', '--cluster-key-file', key],
      env: {
        GPUMESH_STATE_DIR: join(dir, 'agent-nopeer-env'),
        GPUMESH_COORDINATOR: '/dns4/coordinator.example/tcp/7471'
      },
      says: /must end in \/p2p\/<peer id>/
    },
    {
      name: 'agent: a pool label longer than 63 characters',
      argv: [AGENT, 'detect', '--pool-label', 'x'.repeat(64)],
      says: /--pool-label.*at most 63 characters/
    },
    {
      name: 'coordinator: a file that is not a cluster key',
      argv: [
        COORDINATOR,
        '--database-url',
        databaseUrl,
        '--api-listen',
        '127.0.0.1:0',
        '--listen',
        '/ip4/127.0.0.1/tcp/0',
        '--cluster-key-file',
        notAKey
      ],
      env: { GPUMESH_STATE_DIR: join(dir, 'coordinator-badkey') },
      says: /is not a cluster key/
    },
    {
      name: 'coordinator: a TLS certificate without its key',
      argv: [COORDINATOR, '--tls-cert', notAKey],
      env: { GPUMESH_STATE_DIR: join(dir, 'coordinator-tls') },
      says: /set both --tls-cert and --tls-key/
    },
    {
      name: 'coordinator: an API address that is not host:port',
      argv: [COORDINATOR, '--api-listen', 'nowhere'],
      says: /must be host:port/
    },
    {
      name: 'gpumesh up: an unknown simulated machine',
      argv: [CLI, 'up', '--state-dir', join(dir, 'up-machine'), '--simulate', '1', '--machines', 'dgx-9000'],
      says: /unknown simulated machine dgx-9000/
    },
    {
      name: 'gpumesh up: an API address that is not host:port',
      argv: [CLI, 'up', '--state-dir', join(dir, 'up-listen'), '--api-listen', 'nowhere', '--no-local-agent'],
      says: /must be host:port/
    }
  ]
  const m = new Mismatches()
  for (const c of cases) {
    const r = await execa(process.execPath, c.argv, {
      env: cleanEnv({ GPUMESH_NVIDIA_SMI: '/nonexistent', ...c.env }),
      extendEnv: false,
      reject: false,
      timeout: 60_000
    })
    const output = `${String(r.stdout)}\n${String(r.stderr)}`
    // What it said stands in the diff when it is not what was expected.
    const said = c.says.test(output) || output.trim().slice(-400)
    m.check(c.name, `exit 78, says ${String(c.says)}`, { exit: r.exitCode, said }, { exit: 78, said: true })
  }
  t.same(m.list, [], 'each configuration error: exit 78 and what is wrong')
})
