// Serving endpoints (docs/design.md "Serving endpoints").
// - An endpoint replica's host port (one per live replica of a host, see
//   SERVE_PORTS) and readiness, as its agent reports it.
// - A workload's spec generation: a rolling update raises it, and each
//   placement keeps the spec it was started with, so old and new replicas
//   run side by side until the roll is done.
// - invoke tokens: the endpoints they may call through the gateway.
export default String.raw`
alter table placements add column port integer check (port between 1 and 65535);
alter table placements add column ready boolean not null default false;
alter table placements add column spec jsonb;
alter table placements add column generation integer not null default 1;
create unique index placements_one_port on placements (host_id, port)
  where port is not null and state in ('assigned', 'starting', 'running', 'stopping');

alter table workloads add column generation integer not null default 1;

alter table api_tokens drop constraint api_tokens_role_check;
alter table api_tokens add constraint api_tokens_role_check check (role in ('admin', 'operator', 'viewer', 'invoke'));
alter table api_tokens add column endpoints text[];
`
