// Restart backoff per replica (docs/mesh.md "Crash loops"): how many times in
// a row a replica ended soon after it was placed, and when it may be placed
// again. A row outlives the replica's placements, which are pruned.
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
`
