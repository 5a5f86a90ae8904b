// Tables show short ids and names, so commands accept them back: a full id is
// used as is, anything else must match exactly one name or id prefix.
import type { ApiClient } from './client.js'
import { CliError } from './client.js'
import { shortId } from './render.js'

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i

export async function resolveId<T extends { id: string }>(
  client: ApiClient,
  what: string,
  listPath: string,
  ref: string,
  nameOf: (item: T) => string
): Promise<string> {
  if (UUID.test(ref)) return ref.toLowerCase()
  const items = await client.list<T>(listPath)
  const byName = items.filter((i) => nameOf(i) === ref)
  const prefix = ref.toLowerCase()
  const matches =
    byName.length > 0 ? byName : /^[0-9a-f-]+$/.test(prefix) ? items.filter((i) => i.id.startsWith(prefix)) : []
  const [first, ...rest] = matches
  if (first === undefined) throw new CliError(`no ${what} has the id or name ${JSON.stringify(ref)}`)
  if (rest.length > 0) {
    const listed = matches
      .slice(0, 5)
      .map((i) => `${nameOf(i)} (${shortId(i.id)})`)
      .join(', ')
    throw new CliError(
      `${JSON.stringify(ref)} matches ${matches.length} ${what}s: ${listed}${matches.length > 5 ? ', ...' : ''}; give the full id`
    )
  }
  return first.id
}
