// The offline bundle and install.sh, as an operator meets them: the real
// tarball (`npm run bundle`: production node_modules and Node.js 24 from
// the npm registry) installed into a temporary root with a systemctl test
// double, run twice, uninstalled; and the bundle's own Node 24 running a
// local cluster end to end.
import { execFileSync, spawnSync } from 'node:child_process'
import {
  chmodSync,
  copyFileSync,
  existsSync,
  lstatSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  readlinkSync,
  rmSync,
  statSync,
  symlinkSync,
  writeFileSync
} from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { execa } from 'execa'
import t, { type Test } from 'tap'
import { AGENT_NODE_FLAGS } from '../agent/node-flags.js'
import { cleanEnv } from './helpers/agent.js'
import { eventually } from './helpers/coordinator.js'
import { bundleFor, type Bundle } from './helpers/bundle.js'
import { MACHINES, NVIDIA_SMI_DOUBLE, ROOT } from './helpers/fixtures.js'
import { exerciseUp } from './helpers/up.js'

// Building the bundle (npm ci, Node.js from the registry) and two clusters take minutes, not tap's default.
t.setTimeout(900_000)

const INSTALL = join(ROOT, 'install.sh')
const DOUBLES = join(ROOT, 'test/doubles')
const CLUSTER_KEY = `/key/swarm/psk/1.0.0/\n/base16/\n${'ab'.repeat(32)}\n`
const uid = process.getuid?.() ?? 0
const gid = process.getgid?.() ?? 0

interface Install {
  root: string
  log: string
  env: Record<string, string>
}

/** A temporary root, a systemctl double and the installer's settings. */
function installEnv(t: Test, b: Bundle, extra: Record<string, string> = {}): Install {
  const root = mkdtempSync(join(tmpdir(), 'gpumesh-install-'))
  t.teardown(() => rmSync(root, { recursive: true, force: true }))
  const scratch = mkdtempSync(join(tmpdir(), 'gpumesh-install-scratch-'))
  t.teardown(() => rmSync(scratch, { recursive: true, force: true }))
  // systemctl from the doubles; no nvidia-smi on PATH unless a test adds one.
  const bin = join(scratch, 'bin')
  mkdirSync(bin)
  symlinkSync(join(DOUBLES, 'systemctl'), join(bin, 'systemctl'))
  const keyFile = join(scratch, 'cluster.key')
  writeFileSync(keyFile, CLUSTER_KEY, { mode: 0o600 })
  const log = join(scratch, 'systemctl.log')
  writeFileSync(log, '')
  return {
    root,
    log,
    env: {
      ...cleanEnv(),
      PATH: `${bin}:/usr/sbin:/usr/bin:/sbin:/bin`,
      SYSTEMCTL_DOUBLE_LOG: log,
      SYSTEMCTL_DOUBLE_STATE: join(scratch, 'systemctl-state'),
      GPUMESH_INSTALL_ROOT: root,
      GPUMESH_INSTALL_TARBALL: b.tarball,
      GPUMESH_COORDINATOR: '/ip4/10.0.0.1/tcp/7471/p2p/12D3KooWLpQg4a8Xmv8cFpfbWn5RjnR8Lq5hQwR1cdz9aSCKbFMf',
      GPUMESH_JOIN_TOKEN: 'gmj_test-join-token-0123456789',
      GPUMESH_CLUSTER_KEY_FILE: keyFile,
      ...extra
    }
  }
}

async function install(i: Install, args: string[] = [], env: Record<string, string> = {}) {
  return await execa('/bin/sh', [INSTALL, ...args], {
    env: { ...i.env, ...env },
    extendEnv: false,
    reject: false,
    all: true,
    timeout: 300_000
  })
}

const calls = (i: Install) =>
  readFileSync(i.log, 'utf8')
    .split('\n')
    .filter((l) => l !== '')

interface Entry {
  path: string
  type: 'file' | 'dir' | 'link'
  mode: number
  uid: number
  gid: number
  size: number
  mtimeMs: number
  target?: string
}

/** Every file under the root (the bundle's own tree summarised by its top folder). */
function snapshot(root: string, dir = root, out: Entry[] = []): Entry[] {
  for (const name of readdirSync(dir).sort()) {
    const full = join(dir, name)
    const st = lstatSync(full)
    const path = full.slice(root.length)
    const type = st.isSymbolicLink() ? 'link' : st.isDirectory() ? 'dir' : 'file'
    out.push({
      path,
      type,
      mode: st.mode & 0o7777,
      uid: st.uid,
      gid: st.gid,
      size: st.size,
      mtimeMs: st.mtimeMs,
      ...(type === 'link' ? { target: readlinkSync(full) } : {})
    })
    if (type === 'dir' && !/^\/usr\/local\/lib\/gpumesh\/[^/]+\/(app|node)$/.test(path)) snapshot(root, full, out)
  }
  return out
}

function mode(path: string): string {
  return (statSync(path).mode & 0o777).toString(8)
}

t.test('install.sh and the bundle', async (t) => {
  const b = await bundleFor(t)
  const version = b.version
  const lib = `/usr/local/lib/gpumesh/${version}`

  await t.test('the bundle: Node 24, production modules, units, installer, checksum', async (t) => {
    const sums = readFileSync(b.sums, 'utf8')
    t.match(sums, new RegExp(`^[0-9a-f]{64}  ${b.name}\\.tar\\.gz\\n$`), 'SHA256SUMS names the tarball')
    t.equal(
      execFileSync('sha256sum', [b.tarball], { encoding: 'utf8' }).split(' ')[0],
      sums.split(' ')[0],
      'and its checksum is right'
    )
    const list = execFileSync('tar', ['-tzf', b.tarball], { encoding: 'utf8', maxBuffer: 64 * 1024 * 1024 }).split('\n')
    const wanted = [
      'node/bin/node',
      'app/dist/agent/main.js',
      'app/dist/coordinator/main.js',
      'app/dist/cli/main.js',
      'systemd/gpumesh-agent.service',
      'systemd/gpumesh-coordinator.service',
      'install.sh',
      'app/share/nvidia-smi-replay',
      'app/share/machines/h100-8x-nv18-nics/topo-m.txt'
    ]
    t.same(
      wanted.filter((f) => !list.includes(`${b.name}/${f}`)),
      [],
      'it has the runtime, the three programs, the units, the installer and the simulated machines'
    )
    t.notOk(
      list.some((f) => f.includes('/node_modules/tap/') || f.includes('/node_modules/typescript/')),
      'no dev dependencies'
    )
    t.notOk(
      list.some((f) => f.startsWith(`${b.name}/app/dist/test/`) || f.startsWith(`${b.name}/app/dist/bench/`)),
      'no compiled tests or benches'
    )
    t.notOk(
      list.some((f) => f.startsWith(`${b.name}/node/lib/node_modules/npm/`)),
      'no npm in the runtime'
    )
  })

  await t.test('installs the agent: files, modes, owners, env file, unit, systemctl calls', async (t) => {
    const i = installEnv(t, b)
    const r = await install(i)
    t.equal(r.exitCode, 0, `install.sh succeeds\n${String(r.all)}`)
    const out = String(r.all)
    t.match(out, /bundle gpumesh-.* verified \(sha256 [0-9a-f]{64}\)/, 'the checksum is verified')
    t.match(out, /warning: nvidia-smi not found/, 'no nvidia-smi here: a warning, not a stop')
    t.notMatch(out, /gmj_test-join-token/, 'the join token never reaches the output')

    const root = i.root
    t.ok(existsSync(join(root, lib, 'node/bin/node')), 'the bundle is unpacked under /usr/local/lib/gpumesh/<version>')
    t.equal(readlinkSync(join(root, '/usr/local/lib/gpumesh/current')), version, 'current points at it')
    t.equal(
      execFileSync(join(root, lib, 'node/bin/node'), ['--version'], { encoding: 'utf8' })
        .trim()
        .split('.')[0],
      'v24',
      'its Node.js is 24'
    )
    const commands = ['gpumesh-agent', 'gpumesh-coordinator', 'gpumesh', 'gpumesh-uninstall.sh']
    t.same(
      commands.map((cmd) => mode(join(root, '/usr/local/bin', cmd))),
      commands.map(() => '755'),
      `${commands.join(', ')} are 0755`
    )
    const wrapper = (cmd: string) => readFileSync(join(root, '/usr/local/bin', cmd), 'utf8')
    t.match(
      wrapper('gpumesh-agent'),
      `exec "/usr/local/lib/gpumesh/current/node/bin/node" ${AGENT_NODE_FLAGS.join(' ')} "/usr/local/lib/gpumesh/current/app/dist/agent/main.js" "$@"`,
      'the agent runs on the bundled Node with the V8 flags of agent/node-flags.ts'
    )
    t.match(
      wrapper('gpumesh-coordinator'),
      'exec "/usr/local/lib/gpumesh/current/node/bin/node" "/usr/local/lib/gpumesh/current/app/dist/coordinator/main.js" "$@"',
      'the coordinator runs on the bundled Node with default flags'
    )

    const envFile = join(root, '/etc/gpumesh/agent.env')
    t.equal(mode(envFile), '600', 'agent.env is 0600 (it holds the join token)')
    const settings = readFileSync(envFile, 'utf8')
    t.match(settings, /^GPUMESH_COORDINATOR=\/ip4\/10\.0\.0\.1\/tcp\/7471\/p2p\/12D3KooW/m, 'the coordinator address')
    t.match(settings, /^GPUMESH_JOIN_TOKEN=gmj_test-join-token-0123456789$/m, 'the join token')
    t.match(settings, /^GPUMESH_CLUSTER_KEY_FILE=\/etc\/gpumesh\/cluster\.key$/m, 'the cluster key path, as installed')
    t.notMatch(settings, /GPUMESH_INSTALL_/, 'no installer knobs')
    t.equal(readFileSync(join(root, '/etc/gpumesh/cluster.key'), 'utf8'), CLUSTER_KEY, 'the cluster key is copied')
    t.equal(mode(join(root, '/etc/gpumesh/cluster.key')), '600', 'cluster.key is 0600')

    const unit = join(root, '/etc/systemd/system/gpumesh-agent.service')
    t.equal(
      readFileSync(unit, 'utf8'),
      readFileSync(join(ROOT, 'systemd/gpumesh-agent.service'), 'utf8'),
      'the unit as shipped'
    )
    t.equal(mode(unit), '644', 'the unit is 0644')
    t.notOk(existsSync(join(root, '/etc/systemd/system/gpumesh-coordinator.service')), 'no coordinator unit')
    t.notOk(existsSync(join(root, '/etc/passwd')), 'the agent runs as root: no user created')

    const files = snapshot(root).filter((e) => e.type !== 'link')
    t.same(
      files.filter((e) => e.uid !== uid || e.gid !== gid).map((e) => e.path),
      [],
      `every file belongs to ${uid}:${gid}`
    )
    t.same(
      calls(i),
      [
        'daemon-reload',
        'is-enabled --quiet gpumesh-agent.service',
        'enable gpumesh-agent.service',
        'restart gpumesh-agent.service'
      ],
      'systemctl: reload, enable, (re)start'
    )
  })

  await t.test('a second run changes nothing: no write, no daemon-reload, no restart', async (t) => {
    const i = installEnv(t, b)
    t.equal((await install(i)).exitCode, 0)
    const before = snapshot(i.root)
    writeFileSync(i.log, '')
    const again = await install(i)
    t.equal(again.exitCode, 0, String(again.all))
    t.match(String(again.all), /already installed/, 'it says the bundle is there')
    t.match(String(again.all), /no change detected: gpumesh-agent.service left as it is/, 'and that nothing changed')
    t.same(snapshot(i.root), before, 'every file as it was (content, mode, owner, mtime)')
    t.same(
      calls(i),
      ['is-enabled --quiet gpumesh-agent.service', 'start gpumesh-agent.service'],
      'systemctl: only a start (a no-op for a running service)'
    )

    // A new join token: the env file changes, so a restart, but the unit did not: no daemon-reload.
    writeFileSync(i.log, '')
    const changed = await install(i, [], { GPUMESH_JOIN_TOKEN: 'gmj_another-token-9876543210' })
    t.equal(changed.exitCode, 0)
    t.match(
      readFileSync(join(i.root, '/etc/gpumesh/agent.env'), 'utf8'),
      /^GPUMESH_JOIN_TOKEN=gmj_another-token-9876543210$/m
    )
    t.same(
      calls(i),
      ['is-enabled --quiet gpumesh-agent.service', 'restart gpumesh-agent.service'],
      'a changed setting restarts without daemon-reload'
    )

    // A unit edited by hand (or an older one): put back, with daemon-reload and a restart.
    const unit = join(i.root, '/etc/systemd/system/gpumesh-agent.service')
    writeFileSync(unit, readFileSync(unit, 'utf8').replace('WatchdogSec=60s', 'WatchdogSec=5s'))
    writeFileSync(i.log, '')
    t.equal((await install(i, [], { GPUMESH_JOIN_TOKEN: 'gmj_another-token-9876543210' })).exitCode, 0)
    t.equal(
      readFileSync(unit, 'utf8'),
      readFileSync(join(ROOT, 'systemd/gpumesh-agent.service'), 'utf8'),
      'the unit is restored'
    )
    t.same(
      calls(i),
      ['daemon-reload', 'is-enabled --quiet gpumesh-agent.service', 'restart gpumesh-agent.service'],
      'a changed unit: daemon-reload and restart'
    )

    writeFileSync(i.log, '')
    t.equal(
      (
        await install(i, [], {
          GPUMESH_JOIN_TOKEN: 'gmj_another-token-9876543210',
          GPUMESH_INSTALL_FORCE_RESTART: 'true'
        })
      ).exitCode,
      0
    )
    t.same(
      calls(i),
      ['is-enabled --quiet gpumesh-agent.service', 'restart gpumesh-agent.service'],
      'FORCE_RESTART restarts an unchanged install'
    )
  })

  await t.test('knobs: SKIP_ENABLE, SKIP_START, BIN_DIR, SYSTEMD_DIR', async (t) => {
    const i = installEnv(t, b, {
      GPUMESH_INSTALL_SKIP_ENABLE: 'true',
      GPUMESH_INSTALL_SKIP_START: 'true',
      GPUMESH_INSTALL_BIN_DIR: '/opt/bin',
      GPUMESH_INSTALL_SYSTEMD_DIR: '/usr/lib/systemd/system'
    })
    const r = await install(i)
    t.equal(r.exitCode, 0, String(r.all))
    t.ok(existsSync(join(i.root, '/opt/bin/gpumesh-agent')), 'commands in BIN_DIR')
    t.notOk(existsSync(join(i.root, '/usr/local/bin/gpumesh-agent')), 'not in /usr/local/bin')
    t.match(
      readFileSync(join(i.root, '/usr/lib/systemd/system/gpumesh-agent.service'), 'utf8'),
      /^ExecStart=\/opt\/bin\/gpumesh-agent run$/m,
      'the unit in SYSTEMD_DIR runs the command from BIN_DIR'
    )
    t.same(calls(i), ['daemon-reload'], 'neither enabled nor started')
  })

  await t.test('--dry-run writes nothing and says what it would do', async (t) => {
    const i = installEnv(t, b)
    const r = await install(i, ['--dry-run'])
    t.equal(r.exitCode, 0, String(r.all))
    t.same(readdirSync(i.root), [], 'the root stays empty')
    t.match(String(r.all), /would write \/etc\/gpumesh\/agent\.env \(mode 600\)/)
    t.match(String(r.all), /would run: systemctl daemon-reload/, 'the reload is shown')
    t.same(
      calls(i).filter((c) => !c.startsWith('is-enabled')),
      [],
      'systemctl changed nothing'
    )
  })

  await t.test('the coordinator: its user, env file and unit', async (t) => {
    const i = installEnv(t, b, { GPUMESH_JOIN_TOKEN: '', GPUMESH_COORDINATOR: '' })
    const r = await install(i, ['--coordinator'])
    t.equal(r.exitCode, 0, String(r.all))
    t.match(
      readFileSync(join(i.root, '/etc/passwd'), 'utf8'),
      /^gpumesh:x:\d+:\d+:gpumesh coordinator:\/var\/lib\/gpumesh:\/usr\/sbin\/nologin$/m,
      'a system user'
    )
    t.equal(mode(join(i.root, '/etc/gpumesh/coordinator.env')), '600')
    t.equal(
      readFileSync(join(i.root, '/etc/systemd/system/gpumesh-coordinator.service'), 'utf8'),
      readFileSync(join(ROOT, 'systemd/gpumesh-coordinator.service'), 'utf8')
    )
    t.notMatch(String(r.all), /nvidia-smi/, 'no GPU preflight for the coordinator')
    t.same(calls(i), [
      'daemon-reload',
      'is-enabled --quiet gpumesh-coordinator.service',
      'enable gpumesh-coordinator.service',
      'restart gpumesh-coordinator.service'
    ])
  })

  await t.test('preflight: an A100 host gets a warning', async (t) => {
    const i = installEnv(t, b, { GPUMESH_SMI_FIXTURE: join(MACHINES, 'a100-8x-nv12') })
    symlinkSync(NVIDIA_SMI_DOUBLE, join(i.env.PATH?.split(':')[0] as string, 'nvidia-smi'))
    const r = await install(i)
    t.equal(r.exitCode, 0)
    t.match(String(r.all), /warning: A100 GPUs found/)
    t.notMatch(String(r.all), /nvidia-smi not found/)
  })

  await t.test('refusals: bad checksum, no systemctl, unsupported architecture, unknown option', async (t) => {
    const i = installEnv(t, b)
    const scratch = mkdtempSync(join(tmpdir(), 'gpumesh-install-bad-'))
    t.teardown(() => rmSync(scratch, { recursive: true, force: true }))
    const tampered = join(scratch, `${b.name}.tar.gz`)
    copyFileSync(b.tarball, tampered)
    writeFileSync(tampered, Buffer.from('x'), { flag: 'a' })
    copyFileSync(b.sums, join(scratch, 'SHA256SUMS'))
    const bad = await install(i, [], { GPUMESH_INSTALL_TARBALL: tampered })
    t.equal(bad.exitCode, 1)
    t.match(
      String(bad.all),
      /error: checksum mismatch for gpumesh-.*: expected [0-9a-f]{64}, got [0-9a-f]{64} \(corrupt or tampered bundle\)/
    )
    t.same(readdirSync(i.root), [], 'nothing installed')

    const noSums = await install(i, [], { GPUMESH_INSTALL_SHA256SUMS: join(scratch, 'missing') })
    t.match(String(noSums.all), /error: .*missing not found: the bundle's checksum is required/)

    // A PATH with uname but no systemctl.
    const bare = join(scratch, 'bare')
    mkdirSync(bare)
    for (const tool of ['uname'])
      symlinkSync(spawnSync('sh', ['-c', `command -v ${tool}`], { encoding: 'utf8' }).stdout.trim(), join(bare, tool))
    const noSystemd = await install(i, [], { PATH: bare })
    t.equal(noSystemd.exitCode, 1)
    t.match(String(noSystemd.all), /error: systemctl not found: gpumesh installs as a systemd service/)

    const arm = join(scratch, 'arm')
    mkdirSync(arm)
    writeFileSync(join(arm, 'uname'), '#!/bin/sh\necho riscv64\n')
    chmodSync(join(arm, 'uname'), 0o755)
    const wrongArch = await install(i, [], { PATH: `${arm}:${i.env.PATH ?? ''}` })
    t.equal(wrongArch.exitCode, 1)
    t.match(String(wrongArch.all), /error: unsupported architecture riscv64/)

    const unknown = await install(i, ['--frobnicate'])
    t.equal(unknown.exitCode, 1)
    t.match(String(unknown.all), /error: unknown option --frobnicate/)
    t.same(readdirSync(i.root), [], 'still nothing installed')
  })

  await t.test('gpumesh-uninstall.sh removes what was installed; state and settings stay unless --purge', async (t) => {
    const i = installEnv(t, b)
    t.equal((await install(i)).exitCode, 0)
    // The installed agent writes its own state (its peer key first of all), as under systemd, with paths under the root.
    const state = join(i.root, '/var/lib/gpumesh/agent')
    const agent = execa(
      join(i.root, lib, 'node/bin/node'),
      [...AGENT_NODE_FLAGS, join(i.root, lib, 'app/dist/agent/main.js'), 'run'],
      {
        env: {
          ...i.env,
          GPUMESH_STATE_DIR: state,
          GPUMESH_CLUSTER_KEY_FILE: join(i.root, '/etc/gpumesh/cluster.key'),
          GPUMESH_LISTEN: '/ip4/127.0.0.1/tcp/0',
          GPUMESH_NO_MDNS: '1'
        },
        extendEnv: false,
        reject: false,
        all: true
      }
    )
    t.teardown(() => {
      agent.kill('SIGKILL')
    })
    await eventually(
      () => {
        if (agent.exitCode !== undefined && agent.exitCode !== null)
          throw new Error(`the agent exited ${agent.exitCode}`)
        return existsSync(join(state, 'peer.key')) ? true : undefined
      },
      60_000,
      'the agent to write its peer key'
    )
    // Gone before the files are looked at (how it stops is systemd.test.ts's business: this may be mid-start).
    agent.kill('SIGKILL')
    await agent
    const owner = (path: string) => `${statSync(path).uid}:${statSync(path).gid}`
    t.same(
      { key: mode(join(state, 'peer.key')), dir: mode(state), owner: owner(join(state, 'peer.key')) },
      { key: '600', dir: '700', owner: `${uid}:${gid}` },
      "the peer key is 0600, the agent's own, in a 0700 state folder"
    )
    const stateBefore = snapshot(i.root, state)
    const key = readFileSync(join(state, 'peer.key'))
    const uninstaller = join(i.root, '/usr/local/bin/gpumesh-uninstall.sh')
    t.equal(
      spawnSync('shellcheck', [uninstaller], { encoding: 'utf8' }).status,
      0,
      'the uninstaller passes shellcheck too'
    )
    writeFileSync(i.log, '')
    const r = await execa('sh', [uninstaller], { env: i.env, extendEnv: false, reject: false, all: true })
    t.equal(r.exitCode, 0, String(r.all))
    t.same(calls(i), ['disable --now gpumesh-agent.service', 'daemon-reload'], 'the service is stopped and disabled')
    t.same(
      snapshot(i.root)
        .map((e) => e.path)
        .filter((p) => !p.startsWith('/var/lib/gpumesh/agent/')),
      [
        '/etc',
        '/etc/gpumesh',
        '/etc/gpumesh/agent.env',
        '/etc/gpumesh/cluster.key',
        '/etc/systemd',
        '/etc/systemd/system',
        '/usr',
        '/usr/local',
        '/usr/local/bin',
        '/usr/local/lib',
        '/var',
        '/var/lib',
        '/var/lib/gpumesh',
        '/var/lib/gpumesh/agent'
      ],
      'only settings and state are left'
    )
    t.same(snapshot(i.root, state), stateBefore, "the agent's state is untouched (content, mode, owner, mtime)")
    t.same(readFileSync(join(state, 'peer.key')), key, 'the same peer key: the host keeps its identity')

    t.equal((await install(i)).exitCode, 0, 'installs again')
    const purge = await execa('sh', [uninstaller, '--purge'], {
      env: i.env,
      extendEnv: false,
      reject: false,
      all: true
    })
    t.equal(purge.exitCode, 0)
    t.same(
      snapshot(i.root)
        .filter((e) => e.type !== 'dir')
        .map((e) => e.path),
      [],
      '--purge leaves no file'
    )
  })

  await t.test("the bundle's Node 24 runs a local cluster end to end", async (t) => {
    const dir = mkdtempSync(join(tmpdir(), 'gpumesh-bundle-run-'))
    t.teardown(() => rmSync(dir, { recursive: true, force: true }))
    execFileSync('tar', ['-xzf', b.tarball, '-C', dir, '--strip-components=1'])
    // Installed, it lives in /usr/local/lib (0755): as root, embedded PostgreSQL runs as the postgres user, who must reach its binaries.
    chmodSync(dir, 0o755)
    const node = join(dir, 'node/bin/node')
    t.match(execFileSync(node, ['--version'], { encoding: 'utf8' }), /^v24\./, 'Node.js 24')
    await exerciseUp(t, node, join(dir, 'app/dist/cli/main.js'))
  })
})

t.test('shellcheck install.sh is clean', async (t) => {
  const r = spawnSync('shellcheck', [INSTALL], { encoding: 'utf8' })
  if (r.error !== undefined)
    throw new Error(`shellcheck is not installed (Debian: apt-get install shellcheck): ${r.error.message}`)
  t.equal(r.status, 0, 'exit 0')
  t.equal(r.stdout + r.stderr, '', 'no findings')
})
