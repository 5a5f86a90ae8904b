// What the agent remembers about its enrollment: the host id the coordinator
// gave it and the highest epoch it has obeyed (fencing), in <state>/agent.json.
import { readFile, rename, writeFile } from 'node:fs/promises'
import { join } from 'node:path'

export class AgentState {
  hostId: string | null = null
  epoch = 0

  private constructor (private readonly file: string) {}

  static async load (stateDir: string): Promise<AgentState> {
    const s = new AgentState(join(stateDir, 'agent.json'))
    try {
      const saved = JSON.parse(await readFile(s.file, 'utf8')) as { hostId?: unknown, epoch?: unknown }
      if (typeof saved.hostId === 'string') s.hostId = saved.hostId
      if (typeof saved.epoch === 'number' && Number.isInteger(saved.epoch)) s.epoch = saved.epoch
    } catch {}
    return s
  }

  async save (next: { hostId: string, epoch: number }): Promise<void> {
    this.hostId = next.hostId
    this.epoch = Math.max(this.epoch, next.epoch)
    await writeFile(`${this.file}.tmp`, JSON.stringify({ hostId: this.hostId, epoch: this.epoch }) + '\n', { mode: 0o600 })
    await rename(`${this.file}.tmp`, this.file)
  }
}
