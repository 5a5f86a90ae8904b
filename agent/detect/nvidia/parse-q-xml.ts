// Parser for `nvidia-smi -q -x`. GPUs come in nvidia-smi order (PCI bus
// order); the XML has no index, so records carry their UUID and bus id and
// are matched on those.
import { XMLParser, XMLValidator } from 'fast-xml-parser'
import type { MigDevice } from '../../../protocol/host-facts.js'
import { migMode, type GpuInventory, type GpuRecord } from './inventory.js'
import { ParseError, mib, present, type Parsed } from './text.js'

const parser = new XMLParser({
  ignoreAttributes: false,
  attributeNamePrefix: '@',
  parseTagValue: false,
  processEntities: false,
  isArray: (name) => name === 'gpu' || name === 'mig_device'
})

type Node = Record<string, unknown>
const node = (v: unknown): Node => (typeof v === 'object' && v !== null ? (v as Node) : {})
const text = (v: unknown): string | null => (typeof v === 'string' ? present(v) : null)

export function parseQueryXml(output: string): Parsed<GpuInventory> {
  const problems: string[] = []
  if (output.trim() === '') throw new ParseError('empty output')
  const valid = XMLValidator.validate(output)
  if (valid !== true) throw new ParseError(`not XML: ${valid.err.msg} (line ${valid.err.line})`)
  const log = node(node(parser.parse(output)).nvidia_smi_log)
  const list = Array.isArray(log.gpu) ? (log.gpu as unknown[]) : []
  if (list.length === 0) throw new ParseError('no <nvidia_smi_log><gpu> elements')
  const attached = Number(text(log.attached_gpus))
  if (Number.isInteger(attached) && attached > list.length)
    problems.push(`${attached} GPUs attached but ${list.length} described (output limited with -i?)`)
  const gpus: GpuRecord[] = list.map((raw) => {
    const g = node(raw)
    const mig = node(g.mig_mode)
    const devices = node(g.mig_devices).mig_device
    const record: GpuRecord = {
      index: null,
      uuid: text(g.uuid),
      name: text(g.product_name),
      memoryMiB: mib(text(node(g.fb_memory_usage).total)),
      pciBusId: text(node(g.pci).pci_bus_id) ?? text(g['@id']),
      migMode: migMode(text(mig.current_mig))
    }
    if (Array.isArray(devices))
      record.migDevices = devices.map(
        (d, i): MigDevice => ({ index: Number(text(node(d).index) ?? i), profile: null, uuid: text(node(d).uuid) })
      )
    return record
  })
  return { value: { gpus, driverVersion: text(log.driver_version), cudaVersion: text(log.cuda_version) }, problems }
}
