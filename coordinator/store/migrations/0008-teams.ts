// Teams (docs/api.md "Teams"): a token of a team sees and changes only its
// team's workloads; a token without one is the cluster's. A workload belongs
// to the team of the token that created it, for good.
export default String.raw`
create table teams (
  id          uuid primary key default gen_random_uuid(),
  name        text not null unique,
  created_at  timestamptz not null default now()
);
alter table api_tokens add column team_id uuid references teams (id);
alter table workloads add column team_id uuid references teams (id);
create index workloads_team on workloads (team_id, created_at, id) where state <> 'deleted';
`
