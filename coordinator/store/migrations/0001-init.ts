// Initial schema. Allocation safety lives here: a GPU is held by at most one
// active placement (gpu_allocations_one_active), whatever the coordinators do.
export default String.raw`
create table pools (
  key         text primary key,
  kind        text not null default 'static' check (kind in ('static', 'inference', 'training')),
  labels      jsonb not null default '{}',
  created_at  timestamptz not null default now(),
  updated_at  timestamptz not null default now()
);

create table hosts (
  id            uuid primary key default gen_random_uuid(),
  peer_id       text not null unique,
  name          text not null,
  pool_key      text not null references pools (key),
  state         text not null default 'ready'
                check (state in ('ready', 'suspect', 'down', 'draining', 'cordoned', 'quarantined')),
  state_reason  text,
  gpu_count     integer not null check (gpu_count >= 0),
  facts         jsonb not null,
  agent_version text,
  registered_at timestamptz not null default now(),
  last_seen_at  timestamptz not null default now(),
  updated_at    timestamptz not null default now()
);
create index hosts_pool_key on hosts (pool_key);
create index hosts_state on hosts (state);

create table workloads (
  id          uuid primary key default gen_random_uuid(),
  name        text not null,
  kind        text not null check (kind in ('endpoint', 'recipe', 'session')),
  spec        jsonb not null,
  state       text not null default 'pending'
              check (state in ('pending', 'placed', 'completed', 'failed', 'deleted')),
  reason      text,
  created_at  timestamptz not null default now(),
  updated_at  timestamptz not null default now()
);
-- Names are unique among workloads that are not deleted.
create unique index workloads_live_name on workloads (name) where state <> 'deleted';
create index workloads_pending on workloads (created_at, id) where state = 'pending';

create table placements (
  id           uuid primary key default gen_random_uuid(),
  workload_id  uuid not null references workloads (id),
  host_id      uuid not null references hosts (id),
  replica      integer not null check (replica >= 0),
  gpus         integer[] not null,
  state        text not null default 'assigned'
               check (state in ('assigned', 'starting', 'running', 'stopping', 'exited', 'failed', 'stopped', 'lost')),
  exit_code    integer,
  reason       text,
  created_at   timestamptz not null default now(),
  updated_at   timestamptz not null default now()
);
-- A replica (or rank) of a workload is placed at most once at a time.
create unique index placements_one_active_replica on placements (workload_id, replica)
  where state in ('assigned', 'starting', 'running', 'stopping');
create index placements_workload on placements (workload_id);
create index placements_host on placements (host_id);

create table gpu_allocations (
  host_id       uuid not null references hosts (id),
  gpu_index     integer not null check (gpu_index >= 0),
  placement_id  uuid not null references placements (id),
  active        boolean not null default true,
  created_at    timestamptz not null default now(),
  released_at   timestamptz
);
-- No double booking: at most one active allocation per (host, GPU).
create unique index gpu_allocations_one_active on gpu_allocations (host_id, gpu_index) where active;
create index gpu_allocations_placement on gpu_allocations (placement_id);

-- Outbox: one row per state change, written in the same transaction. Writers
-- take an advisory transaction lock before inserting so ids follow commit order
-- (see coordinator/events/outbox.ts); readers can then resume from an id.
create table events (
  id            bigserial primary key,
  type          text not null,
  subject_kind  text not null,
  subject_id    text not null,
  data          jsonb not null default '{}',
  created_at    timestamptz not null default now()
);
create function gpumesh_notify_event() returns trigger language plpgsql as $$
begin
  perform pg_notify('gpumesh_events', new.id::text);
  return null;
end $$;
create trigger events_notify after insert on events for each row execute function gpumesh_notify_event();

create table api_tokens (
  id            uuid primary key default gen_random_uuid(),
  name          text not null,
  role          text not null check (role in ('admin', 'operator', 'viewer')),
  token_hash    bytea not null unique,
  created_at    timestamptz not null default now(),
  last_used_at  timestamptz,
  revoked_at    timestamptz
);

create table join_tokens (
  id            uuid primary key default gen_random_uuid(),
  pool_key      text,
  token_hash    bytea not null unique,
  expires_at    timestamptz not null,
  created_at    timestamptz not null default now(),
  used_at       timestamptz,
  used_by_peer  text
);

-- Where the Redis relay has got to in the outbox.
create table relay_cursors (
  name     text primary key,
  last_id  bigint not null
);
`
