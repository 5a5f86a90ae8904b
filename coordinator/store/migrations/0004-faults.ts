// Faults (docs/mesh.md "Faults"). Restart backoff per replica: how many
// times in a row a replica ended soon after it was placed, and when it may be
// placed again (a row outlives the replica's placements, which are pruned).
// Host conditions an agent reports (disk-full), by type.
export default String.raw`
create table replica_restarts (
  workload_id  uuid not null references workloads (id),
  replica      integer not null check (replica >= 0),
  failures     integer not null check (failures >= 1),
  not_before   timestamptz not null,
  last_reason  text,
  updated_at   timestamptz not null default now(),
  primary key (workload_id, replica)
);

alter table hosts add column conditions jsonb not null default '{}';
`
