// Ended placements kept on disk: the last KEEP_ENDED_PLACEMENTS (protocol/control.ts) of each replica (their
// logs are what an operator reads after a failure). A crash loop must not
// fill the state directory with folders. Safe to forget: the coordinator has
// placed that replica three times since, so it never sends these ids again.
import { type Entry, isFinal } from './entry.js'
import { KEEP_ENDED_PLACEMENTS } from '../../protocol/control.js'

/** Ended placements beyond the last KEEP_ENDED_PLACEMENTS of their replica (by creation time). */
export function endedToPrune(entries: Iterable<Entry>, keep = KEEP_ENDED_PLACEMENTS): Entry[] {
  const byReplica = new Map<string, Entry[]>()
  for (const e of entries) {
    const a = e.record?.assignment
    if (a === undefined || e.dir === null || !isFinal(e.status.state)) continue
    const key = `${a.workloadId}/${a.replica}`
    const list = byReplica.get(key) ?? []
    list.push(e)
    byReplica.set(key, list)
  }
  const out: Entry[] = []
  for (const list of byReplica.values()) {
    list.sort((x, y) => (y.record?.createdAt ?? '').localeCompare(x.record?.createdAt ?? ''))
    out.push(...list.slice(keep))
  }
  return out
}
