// Join tokens good for several hosts (a fleet rollout with one token): how
// many enrollments a token allows and how many it has had. used_at,
// used_by_peer and used_by_host now record the latest use.
export default String.raw`
alter table join_tokens add column uses integer not null default 1 check (uses between 1 and 100000);
alter table join_tokens add column used integer not null default 0;
update join_tokens set used = 1 where used_at is not null;
alter table join_tokens add constraint join_tokens_used_within_uses check (used between 0 and uses);
`
