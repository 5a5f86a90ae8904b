// What the agent remembers about its enrollment: the host id the coordinator
// gave it and the highest epoch it has obeyed (fencing), in <state>/agent.json,
// and whether the host was revoked (then the agent does not start again).
// A file that cannot be read is a configuration error, never a fresh start:
// starting again from epoch 0 would obey a coordinator that fenced this host.
import { readFile, rename, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { ConfigError } from '../../common/config-error.js'

export class AgentState {
  hostId: string | null = null
  epoch = 0
  /** The coordinator's word when it revoked this host. */
  revoked: string | null = null

  private constructor(private readonly file: string) {}

  static async load(stateDir: string): Promise<AgentState> {
    const s = new AgentState(join(stateDir, 'agent.json'))
    let text: string
    try {
      text = await readFile(s.file, 'utf8')
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return s // never enrolled
      throw new ConfigError(
        `cannot read the agent state file ${s.file}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`,
        { cause: err }
      )
    }
    let saved: { hostId?: unknown; epoch?: unknown; revoked?: unknown }
    try {
      saved = JSON.parse(text) as typeof saved
      if (saved === null || typeof saved !== 'object') throw new Error('not a JSON object')
      if (saved.hostId !== undefined && typeof saved.hostId !== 'string') throw new Error('hostId is not a string')
      if (
        saved.epoch !== undefined &&
        !(typeof saved.epoch === 'number' && Number.isInteger(saved.epoch) && saved.epoch >= 0)
      )
        throw new Error('epoch is not a whole number')
      if (saved.revoked !== undefined && typeof saved.revoked !== 'string') throw new Error('revoked is not a string')
    } catch (err) {
      throw new ConfigError(
        `the agent state file ${s.file} is corrupt (${(err as Error).message}); it holds this host's enrollment and fencing epoch. ` +
          `Move it aside (mv ${s.file} ${s.file}.corrupt) and start the agent again: the coordinator sends the current epoch when the host rejoins (with a new join token if the coordinator no longer knows this host)`,
        { code: 'ERR_AGENT_STATE', cause: err }
      )
    }
    if (typeof saved.hostId === 'string') s.hostId = saved.hostId
    if (typeof saved.epoch === 'number') s.epoch = saved.epoch
    if (typeof saved.revoked === 'string')
      throw new ConfigError(
        `${saved.revoked} (recorded in ${s.file}; this agent will not start again with this state directory)`,
        { code: 'ERR_REVOKED' }
      )
    return s
  }

  async save(next: { hostId: string; epoch: number }): Promise<void> {
    this.hostId = next.hostId
    this.epoch = Math.max(this.epoch, next.epoch)
    await this.write()
  }

  async revoke(message: string): Promise<void> {
    this.revoked = message
    await this.write()
  }

  private async write(): Promise<void> {
    const saved = {
      hostId: this.hostId,
      epoch: this.epoch,
      ...(this.revoked === null ? {} : { revoked: this.revoked })
    }
    await writeFile(`${this.file}.tmp`, `${JSON.stringify(saved)}\n`, { mode: 0o600 })
    await rename(`${this.file}.tmp`, this.file)
  }
}
