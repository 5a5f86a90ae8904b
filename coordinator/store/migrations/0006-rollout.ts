// Scaling and rolling updates of endpoints (docs/serving.md "Scaling and
// rolling updates"). A roll's state lives here, not in the leader's memory,
// so a new leader picks it up where the old one left it:
// - workloads.surge: replicas wanted on top of spec.replicas (1 while a roll
//   waits for its new replica); the scheduler places replicas + surge.
// - rollouts: one row per endpoint, the last roll: the generation it rolls
//   to, the ready replicas it must keep (ready_before), when its current
//   step (one new replica, then one old one stopped) began, since when its
//   new replicas have all been ready (an old one is drained only once every
//   coordinator's gateway has had time to hear of them), and how it ended.
export default String.raw`
alter table workloads add column surge integer not null default 0 check (surge between 0 and 1);

create table rollouts (
  workload_id      uuid primary key references workloads (id),
  generation       integer not null,
  state            text not null check (state in ('rolling', 'completed', 'stopped')),
  ready_before     integer not null check (ready_before >= 0),
  step_started_at  timestamptz not null default now(),
  new_ready_since  timestamptz,
  reason           text,
  started_at       timestamptz not null default now(),
  updated_at       timestamptz not null default now()
);
create index rollouts_rolling on rollouts (workload_id) where state = 'rolling';
`
