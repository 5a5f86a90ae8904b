// Per-GPU health (docs/health.md "Coordinator"): one row per GPU of a host as
// its agent last reported it, so the scheduler (which may run on another
// coordinator than the host's session) and `GET /v1/hosts/:id` see it, and a
// coordinator restart does not forget a failed GPU before its agent reports
// again. History is in the outbox (gpu.health-changed events).
export default String.raw`
create table gpu_health (
  host_id     uuid not null references hosts (id),
  gpu_index   integer not null check (gpu_index >= 0),
  uuid        text,
  pci_bus_id  text,
  state       text not null check (state in ('healthy', 'degraded', 'failed')),
  reasons     text[] not null default '{}',
  since       timestamptz not null,
  updated_at  timestamptz not null default now(),
  primary key (host_id, gpu_index)
);
create index gpu_health_unhealthy on gpu_health (host_id) where state <> 'healthy';
`
