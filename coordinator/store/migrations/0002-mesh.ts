// The mesh: where an agent was last reached, its registration epoch (fencing),
// revocation, and when placements started and ended.
export default String.raw`
alter table hosts add column epoch bigint not null default 0;
alter table hosts add column address text;
alter table hosts add column revoked_at timestamptz;
create index hosts_live on hosts (pool_key) where revoked_at is null;

alter table placements add column started_at timestamptz;
alter table placements add column ended_at timestamptz;

alter table join_tokens add column used_by_host uuid references hosts (id);
`
