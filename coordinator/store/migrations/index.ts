// Migrations in order. Add a file NNNN-name.ts and list it here; never edit
// one that has shipped.
import init from './0001-init.js'
import mesh from './0002-mesh.js'
import joinTokenUses from './0003-join-token-uses.js'
import faults from './0004-faults.js'
import serving from './0005-serving.js'
import rollout from './0006-rollout.js'
import gpuHealth from './0007-gpu-health.js'
import teams from './0008-teams.js'

export interface Migration {
  id: number
  name: string
  sql: string
}

export const MIGRATIONS: Migration[] = [
  { id: 1, name: 'init', sql: init },
  { id: 2, name: 'mesh', sql: mesh },
  { id: 3, name: 'join-token-uses', sql: joinTokenUses },
  { id: 4, name: 'faults', sql: faults },
  { id: 5, name: 'serving', sql: serving },
  { id: 6, name: 'rollout', sql: rollout },
  { id: 7, name: 'gpu-health', sql: gpuHealth },
  { id: 8, name: 'teams', sql: teams }
]
