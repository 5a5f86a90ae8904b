// NVIDIA driver XID lines in kernel messages, and the one spelling of a GPU's
// PCI address that joins them to nvidia-smi's. The driver prints
//   NVRM: Xid (PCI:0000:2b:00): 79, pid=..., name=..., GPU has fallen off the bus.
// and older drivers the same without `PCI:` (NVRM: Xid (0000:03:00): 14, ...);
// both without the function number, lower or upper case, while nvidia-smi
// prints 00000000:2B:00.0. Sources of the forms: test/fixtures/kmsg/README.md.

export interface XidEvent {
  /** busKey() of the GPU named in the line. */
  bus: string
  code: number
  /** The rest of the line: pid, process name, description. */
  detail: string
}

const XID = /NVRM: Xid \((?:PCI:)?([0-9a-fA-F:.]+)\): (\d{1,5})(?:,\s*(.*))?$/

/**
 * domain:bus:device as `0000:2b:00` (domain 4 hex digits, lower case, no
 * function) from any of `00000000:2B:00.0`, `0000:2b:00`, `2b:00`; null if
 * it is not a PCI address.
 */
export function busKey(address: string): string | null {
  const m = /^(?:([0-9a-f]{1,8}):)?([0-9a-f]{1,2}):([0-9a-f]{1,2})(?:\.[0-7])?$/i.exec(address.trim())
  if (m === null) return null
  const domain = Number.parseInt(m[1] ?? '0', 16)
  if (domain > 0xffff) return null
  const hex = (v: string | number, width: number) =>
    (typeof v === 'number' ? v.toString(16) : v).toLowerCase().padStart(width, '0')
  return `${hex(domain, 4)}:${hex(m[2] as string, 2)}:${hex(m[3] as string, 2)}`
}

export function parseXid(message: string): XidEvent | null {
  const m = XID.exec(message)
  if (m === null) return null
  const bus = busKey(m[1] as string)
  if (bus === null) return null
  return { bus, code: Number(m[2]), detail: (m[3] ?? '').trim() }
}
